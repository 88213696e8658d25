//! An HTTP/2 response body read in the caller's task ([`Http2Body`]), and the task that
//! streams a request body out ([`pipe`]).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http::header::CONTENT_LENGTH;
use http_body::{Body, Frame, SizeHint};

use crate::error::BoxError;

/// The body of a response from an [`Http2Pool`](super::Http2Pool): the stream's data (each
/// chunk's room given back to the server as it is read), then its trailers.
#[derive(Debug)]
pub struct Http2Body {
    recv: h2::RecvStream,
    data_done: bool,
    /// What `Content-Length` said is still to come.
    remaining: Option<u64>,
}

impl Http2Body {
    pub(super) fn new(recv: h2::RecvStream, headers: &HeaderMap) -> Self {
        let remaining = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Self {
            recv,
            data_done: false,
            remaining,
        }
    }
}

impl Body for Http2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Read: the server may send as much again (the stream and connection
                    // windows); an error here is the stream's, and the next poll reports it.
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    if let Some(left) = self.remaining.as_mut() {
                        *left = left.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => self.data_done = true,
            }
        }
        Poll::Ready(match ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Some(Ok(Frame::trailers(trailers))),
            Ok(None) => None,
            Err(error) => Some(Err(error)),
        })
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            _ if self.recv.is_end_stream() => SizeHint::with_exact(0),
            Some(left) => SizeHint::with_exact(left),
            None => SizeHint::default(),
        }
    }
}

/// Streams `body` into `send` within the stream's flow control, then its trailers or the end
/// of the stream. Stops when the server resets the stream; an error of the body resets it
/// (`CANCEL`), so the server never takes a cut body for a whole one.
pub(super) async fn pipe<B>(mut body: B, mut send: h2::SendStream<Bytes>)
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    loop {
        let frame = std::future::poll_fn(|cx| {
            // Woken by a reset too, while the body is waited for.
            if let Poll::Ready(reason) = send.poll_reset(cx) {
                return Poll::Ready(Err(reason.ok()));
            }
            Pin::new(&mut body)
                .poll_frame(cx)
                .map(|frame| Ok(frame.map(|f| f.map_err(Into::<BoxError>::into))))
        })
        .await;
        let frame = match frame {
            Ok(Some(Ok(frame))) => frame,
            Ok(None) => {
                let _ = send.send_data(Bytes::new(), true);
                return;
            }
            Ok(Some(Err(error))) => {
                tracing::debug!(%error, "request body failed; resetting its stream");
                send.send_reset(h2::Reason::CANCEL);
                return;
            }
            Err(reason) => {
                tracing::debug!(
                    ?reason,
                    "the server reset a stream whose body was being sent"
                );
                return;
            }
        };
        match frame.into_data() {
            Ok(data) => {
                let end = body.is_end_stream();
                if send_within_window(&mut send, data, end).await.is_err() || end {
                    return;
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    let _ = send.send_trailers(trailers);
                    return;
                }
            }
        }
    }
}

/// Sends `data` as the stream's window allows, in as many frames as that takes.
async fn send_within_window(
    send: &mut h2::SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
) -> Result<(), h2::Error> {
    if data.is_empty() {
        return send.send_data(data, end);
    }
    while data.has_remaining() {
        send.reserve_capacity(data.len());
        let room = std::future::poll_fn(|cx| send.poll_capacity(cx)).await;
        let room = match room {
            Some(room) => room?,
            // No longer sendable: finished or reset.
            None => return Err(h2::Error::from(h2::Reason::CANCEL)),
        };
        if room == 0 {
            continue;
        }
        let chunk = data.split_to(room.min(data.len()));
        send.send_data(chunk, end && data.is_empty())?;
    }
    Ok(())
}
