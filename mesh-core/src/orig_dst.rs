//! The address a redirected connection was really for (feature `transparent`, Linux).
//!
//! iptables' `REDIRECT` (and `DNAT`) rewrite a connection's destination to the proxy's
//! listener; the kernel's connection tracking keeps the original, which `SO_ORIGINAL_DST`
//! (`IP6T_SO_ORIGINAL_DST` for IPv6) reads back. A proxy intercepting transparently routes by
//! it. A connection that was not redirected reports the listener's own address (or nothing,
//! without connection tracking): that is an error here, never an address to forward to, or the
//! proxy would connect to itself.

use std::net::SocketAddr;

use tokio::net::TcpStream;

/// Why a connection's original destination is not known.
#[derive(Debug, thiserror::Error)]
pub enum OrigDstError {
    /// The kernel has no original destination for it (no connection tracking entry).
    #[error("the original destination cannot be read: {0}")]
    Read(#[source] std::io::Error),
    /// The original destination is this listener itself: the connection was not redirected
    /// (someone connected to the proxy's port directly).
    #[error("the connection was not redirected: its destination {0} is the listener itself")]
    NotRedirected(SocketAddr),
    /// Not supported on this platform.
    #[error("original destinations are only known on Linux")]
    Unsupported,
}

/// The destination `tcp` had before it was redirected to this listener.
pub fn original_dst(tcp: &TcpStream) -> Result<SocketAddr, OrigDstError> {
    let local = tcp.local_addr().map_err(OrigDstError::Read)?;
    let original = read(tcp, &local)?;
    if original == local {
        return Err(OrigDstError::NotRedirected(original));
    }
    Ok(original)
}

#[cfg(target_os = "linux")]
fn read(tcp: &TcpStream, local: &SocketAddr) -> Result<SocketAddr, OrigDstError> {
    use rustix::net::sockopt::{ip_original_dst, ipv6_original_dst};
    let read = match local {
        SocketAddr::V4(_) => ip_original_dst(tcp).map(SocketAddr::V4),
        SocketAddr::V6(_) => ipv6_original_dst(tcp).map(SocketAddr::V6),
    };
    read.map_err(|e| OrigDstError::Read(e.into()))
}

#[cfg(not(target_os = "linux"))]
fn read(_: &TcpStream, _: &SocketAddr) -> Result<SocketAddr, OrigDstError> {
    Err(OrigDstError::Unsupported)
}
