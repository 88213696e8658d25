//! Serving the control plane's gRPC APIs over TLS.
//!
//! The server presents mesh-control's certificate; a client certificate is verified when
//! presented and optional otherwise ([`mesh_tls::Mode::ClientCertOptional`]): a proxy asks for its first
//! certificate with nothing but a token. Handlers read who called from the request's
//! [`PeerIdentity`] extension. Each handshake runs in its own task under the acceptor's
//! deadlines, so a slow or silent client delays no one.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use mesh_core::PeerIdentity;
use mesh_tls::{ServerIo, TlsAcceptor};
use pin_project::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, Router};

/// Connections accepted but not yet picked up by the server.
const ACCEPT_QUEUE: usize = 128;

/// A TLS connection to the control plane, with the client's identity.
#[pin_project]
#[derive(Debug)]
pub struct ControlIo {
    #[pin]
    io: ServerIo<TcpStream>,
    peer: PeerIdentity,
}

impl Connected for ControlIo {
    type ConnectInfo = PeerIdentity;

    fn connect_info(&self) -> PeerIdentity {
        self.peer.clone()
    }
}

impl AsyncRead for ControlIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl AsyncWrite for ControlIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Accepts on `listener`, runs TLS with `acceptor`, and yields the connections that complete
/// it. Failed handshakes are counted by the acceptor and logged at debug.
pub fn tls_incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
) -> ReceiverStream<io::Result<ControlIo>> {
    let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
    let acceptor = std::sync::Arc::new(acceptor);
    tokio::spawn(async move {
        loop {
            let (tcp, from) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors and the like: wait rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = std::sync::Arc::clone(&acceptor);
            let ready = tx.clone();
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(accepted) => {
                        let _ = ready
                            .send(Ok(ControlIo {
                                io: accepted.io,
                                peer: accepted.peer,
                            }))
                            .await;
                    }
                    Err(error) => tracing::debug!(%from, %error, "control plane handshake failed"),
                }
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Serves `router` on `listener` over TLS until `shutdown` completes.
pub async fn serve_tls(
    router: Router,
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    router
        .serve_with_incoming_shutdown(tls_incoming(listener, acceptor), shutdown)
        .await
}
