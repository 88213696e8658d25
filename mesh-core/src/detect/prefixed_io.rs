//! An IO stream that first replays bytes already read from it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use pin_project::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection whose first bytes were read for detection: reads return those bytes first,
/// then continue from the connection; writes go straight to it. Nothing read is lost.
#[pin_project]
#[derive(Debug)]
pub struct PrefixedIo<I> {
    prefix: Bytes,
    #[pin]
    io: I,
}

impl<I> PrefixedIo<I> {
    /// `io`, with `prefix` to be read before anything else.
    pub fn new(prefix: impl Into<Bytes>, io: I) -> Self {
        Self {
            prefix: prefix.into(),
            io,
        }
    }

    /// The bytes not yet replayed.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The underlying connection.
    pub fn get_ref(&self) -> &I {
        &self.io
    }

    /// The underlying connection, mutably. Reading from it directly skips the prefix.
    pub fn get_mut(&mut self) -> &mut I {
        &mut self.io
    }

    /// The bytes not yet replayed and the connection.
    pub fn into_parts(self) -> (Bytes, I) {
        (self.prefix, self.io)
    }
}

impl<I: AsyncRead> AsyncRead for PrefixedIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if this.prefix.is_empty() {
            return this.io.poll_read(cx, buf);
        }
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix[..n]);
        this.prefix.advance(n);
        if this.prefix.is_empty() {
            // An empty slice of the detection buffer would keep all of it (8 KiB by default)
            // alive for as long as the connection lasts.
            *this.prefix = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite> AsyncWrite for PrefixedIo<I> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn replays_the_prefix_then_reads_on() {
        let (mut near, far) = tokio::io::duplex(64);
        near.write_all(b" world").await.expect("write");
        drop(near);
        let mut io = PrefixedIo::new(Bytes::from_static(b"hello"), far);
        let mut small = [0u8; 3];
        io.read_exact(&mut small).await.expect("read");
        assert_eq!(&small, b"hel");
        assert_eq!(io.prefix(), b"lo");
        let mut rest = Vec::new();
        io.read_to_end(&mut rest).await.expect("read");
        assert_eq!(rest, b"lo world");
    }
}
