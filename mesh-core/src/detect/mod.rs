//! Protocol detection on an accepted connection.
//!
//! [`detect_protocol`] reads the first bytes of a connection, up to a bound and within a
//! deadline, and decides between HTTP/2 (the prior-knowledge preface), HTTP/1.x (a request line)
//! and opaque TCP. The bytes read are handed back inside a [`PrefixedIo`] that replays them
//! before reading on, so whoever serves the connection sees it from its first byte.
//!
//! [`sniff`] is the general form, for other decisions on a connection's first bytes (a TLS
//! ClientHello, say).

mod http;
mod prefixed_io;

use std::fmt;
use std::io;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::{Instant, timeout_at};

pub use self::prefixed_io::PrefixedIo;

/// What a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.0 or HTTP/1.1.
    Http1,
    /// HTTP/2 with prior knowledge.
    Http2,
    /// Anything else, passed through as bytes.
    Opaque,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Http1 => "http/1",
            Self::Http2 => "h2",
            Self::Opaque => "opaque",
        })
    }
}

/// Bounds on detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DetectConfig {
    /// The most bytes read before deciding (default 8 KiB).
    pub capacity: usize,
    /// How long to wait for enough bytes (default 1 s). A client that is silent or slow until
    /// then gets the opaque verdict: server-speaks-first protocols (a database's banner) start
    /// with a silent client.
    pub timeout: Duration,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            capacity: 8 * 1024,
            timeout: Duration::from_secs(1),
        }
    }
}

impl DetectConfig {
    /// Sets the most bytes read before deciding.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Sets how long to wait for enough bytes.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// Why reading stopped without a decision from the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Undecided {
    /// The deadline passed (the client was silent, or too slow).
    Deadline,
    /// The capacity was reached with the bytes still ambiguous.
    BufferFull,
    /// The client closed its side after sending these bytes.
    Eof,
}

/// The result of [`sniff`]: the decision, or why there is none, and the connection with every
/// byte read so far ready to be replayed.
#[derive(Debug)]
pub struct Sniffed<T, I> {
    /// What the bytes showed, or why they showed nothing.
    pub verdict: Result<T, Undecided>,
    /// The connection, replaying the bytes read.
    pub io: PrefixedIo<I>,
}

/// Detection could not run to a verdict.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// The peer closed the connection without sending anything.
    #[error("connection closed before any data was sent")]
    Closed,
    /// Reading failed.
    #[error("reading the connection's first bytes failed")]
    Io(#[from] io::Error),
}

/// Reads from `io` until `decide` returns a decision, `capacity` bytes are buffered, the peer
/// closes, or `timeout` passes, whichever comes first. `decide` sees all bytes read so far and
/// returns `None` to ask for more.
pub async fn sniff<I, T>(
    mut io: I,
    config: DetectConfig,
    mut decide: impl FnMut(&[u8]) -> Option<T>,
) -> Result<Sniffed<T, I>, DetectError>
where
    I: AsyncRead + Unpin,
{
    let deadline = Instant::now() + config.timeout;
    let mut buf = BytesMut::with_capacity(config.capacity);
    let verdict = loop {
        if buf.len() >= config.capacity {
            break Err(Undecided::BufferFull);
        }
        let room = config.capacity - buf.len();
        let read = timeout_at(deadline, io.read_buf(&mut (&mut buf).limit(room))).await;
        match read {
            Err(_elapsed) => break Err(Undecided::Deadline),
            Ok(Err(err)) => return Err(DetectError::Io(err)),
            Ok(Ok(0)) if buf.is_empty() => return Err(DetectError::Closed),
            Ok(Ok(0)) => break Err(Undecided::Eof),
            Ok(Ok(_)) => {
                if let Some(decision) = decide(&buf) {
                    break Ok(decision);
                }
            }
        }
    };
    Ok(Sniffed {
        verdict,
        io: PrefixedIo::new(buf.freeze(), io),
    })
}

/// The result of [`detect_protocol`].
#[derive(Debug)]
pub struct Detected<I> {
    /// What the connection speaks; [`Protocol::Opaque`] when undecided.
    pub protocol: Protocol,
    /// Why the verdict is opaque without the bytes ruling HTTP out, if so.
    pub undecided: Option<Undecided>,
    /// The connection, replaying the bytes read.
    pub io: PrefixedIo<I>,
}

/// Decides whether a connection speaks HTTP/2 (prior knowledge), HTTP/1.x, or something else,
/// reading at most `config.capacity` bytes within `config.timeout`.
///
/// Undecided connections (silent, slow, or ambiguous to the end of the buffer) are opaque, with
/// [`Detected::undecided`] saying why; a connection closed before its first byte is
/// [`DetectError::Closed`].
///
/// ```
/// use mesh_core::detect::{DetectConfig, Protocol, detect_protocol};
/// use tokio::io::AsyncWriteExt;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build()?.block_on(async {
/// let (mut client, server) = tokio::io::duplex(1024);
/// client.write_all(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n").await?;
/// let detected = detect_protocol(server, DetectConfig::default()).await?;
/// assert_eq!(detected.protocol, Protocol::Http1);
/// assert!(detected.io.prefix().starts_with(b"GET / HTTP/1.1\r\n"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub async fn detect_protocol<I>(io: I, config: DetectConfig) -> Result<Detected<I>, DetectError>
where
    I: AsyncRead + Unpin,
{
    let sniffed = sniff(io, config, http::decide).await?;
    let (protocol, undecided) = match sniffed.verdict {
        Ok(protocol) => (protocol, None),
        Err(why) => (Protocol::Opaque, Some(why)),
    };
    Ok(Detected {
        protocol,
        undecided,
        io: sniffed.io,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn silent_clients_are_opaque_at_the_deadline() {
        let (_client, server) = tokio::io::duplex(64);
        let start = Instant::now();
        let detected = detect_protocol(server, DetectConfig::default())
            .await
            .expect("detected");
        assert_eq!(detected.protocol, Protocol::Opaque);
        assert_eq!(detected.undecided, Some(Undecided::Deadline));
        assert_eq!(start.elapsed(), DetectConfig::default().timeout);
        assert!(detected.io.prefix().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn ambiguous_bytes_stop_at_the_capacity() {
        let (mut client, server) = tokio::io::duplex(64);
        // More than the pipe holds: the writer must run beside the reader.
        let writer = tokio::spawn(async move {
            client.write_all(b"GET /").await?;
            client.write_all(&[b'a'; 100]).await?;
            Ok::<_, std::io::Error>(client)
        });
        let config = DetectConfig::default().capacity(64);
        let detected = detect_protocol(server, config).await.expect("detected");
        assert_eq!(detected.protocol, Protocol::Opaque);
        assert_eq!(detected.undecided, Some(Undecided::BufferFull));
        assert_eq!(detected.io.prefix().len(), 64);
        writer.abort();
    }

    #[tokio::test]
    async fn a_closed_connection_is_an_error_and_a_cut_one_is_opaque() {
        let (client, server) = tokio::io::duplex(64);
        drop(client);
        let err = detect_protocol(server, DetectConfig::default())
            .await
            .expect_err("closed");
        assert!(matches!(err, DetectError::Closed));

        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"GET /x HT").await.expect("write");
        drop(client);
        let detected = detect_protocol(server, DetectConfig::default())
            .await
            .expect("detected");
        assert_eq!(detected.undecided, Some(Undecided::Eof));
        assert_eq!(detected.io.prefix(), b"GET /x HT");
    }
}
