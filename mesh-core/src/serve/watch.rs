//! One IO wrapper for the server's looks at what a client sends: each read's new bytes go to a
//! [`OnRead`] (the head deadline's marker for HTTP/1, the flood guard for HTTP/2), which may end
//! the connection with an error.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Sees the bytes a connection reads.
pub(crate) trait OnRead {
    /// The bytes one read added; an error ends the connection, and those bytes are not handed
    /// on.
    fn on_read(&mut self, bytes: &[u8]) -> io::Result<()>;

    /// Before each read: an error here ends the connection before it reads more.
    fn before_read(&self) -> io::Result<()> {
        Ok(())
    }
}

/// A connection whose reads pass through `watch`; writes go straight through.
#[pin_project]
#[derive(Debug)]
pub(crate) struct ReadWatch<I, W> {
    #[pin]
    io: I,
    watch: W,
}

impl<I, W> ReadWatch<I, W> {
    pub(crate) fn new(io: I, watch: W) -> Self {
        Self { io, watch }
    }
}

impl<I: AsyncRead, W: OnRead> AsyncRead for ReadWatch<I, W> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        this.watch.before_read()?;
        let before = buf.filled().len();
        std::task::ready!(this.io.poll_read(cx, buf))?;
        if buf.filled().len() > before {
            if let Err(error) = this.watch.on_read(&buf.filled()[before..]) {
                buf.set_filled(before);
                return Poll::Ready(Err(error));
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite, W> AsyncWrite for ReadWatch<I, W> {
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
