//! Request bodies that can be sent again: recorded up to a cap while the first try sends them.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project::pin_project;

use crate::error::BoxError;

/// The request body each try of a [`Retry`](super::Retry) sends.
///
/// The first try reads the original body and records what it reads (data and trailers) up to
/// the policy's cap; a retry replays the recording and, if the first try stopped early, goes on
/// reading the original body from where it stopped. A body that outgrows the cap is still sent
/// in full, but its request can no longer be retried.
#[pin_project]
#[derive(Debug)]
pub struct ReplayBody<B> {
    #[pin]
    kind: Kind<B>,
}

#[pin_project(project = KindProj)]
#[derive(Debug)]
enum Kind<B> {
    /// Nothing to send, on any try.
    Empty,
    /// Not replayable (too large from the start, or the request cannot be retried): the
    /// original body, untouched.
    Passthrough(#[pin] B),
    /// One try's view of the shared recording.
    Replay(Cursor<B>),
}

/// Where one try is in the shared recording.
#[derive(Debug)]
struct Cursor<B> {
    shared: Arc<Mutex<Recording<B>>>,
    /// Data frames this try has sent.
    frames: usize,
    /// Bytes this try has sent.
    sent: u64,
    trailers_sent: bool,
}

/// The original body and what has been read from it so far. Only the try being sent polls it,
/// so the lock is uncontended: it serialises a try with its predecessor's late polls.
#[derive(Debug)]
pub(super) struct Recording<B> {
    rest: Option<B>,
    chunks: Chunks,
    recorded: usize,
    cap: usize,
    /// Data frames read from the original body (as many as were recorded, unless overflowed).
    frames_read: usize,
    overflowed: bool,
    failed: bool,
    trailers: Option<HeaderMap>,
    hint: SizeHint,
}

/// The recorded data frames. Most request bodies are one frame, which is kept inline so that
/// recording it allocates nothing beyond the shared recording itself.
#[derive(Debug, Default)]
struct Chunks {
    first: Option<Bytes>,
    more: Vec<Bytes>,
}

impl Chunks {
    fn get(&self, index: usize) -> Option<&Bytes> {
        match index {
            0 => self.first.as_ref(),
            n => self.more.get(n - 1),
        }
    }

    fn push(&mut self, chunk: Bytes) {
        if self.first.is_none() {
            self.first = Some(chunk);
        } else {
            self.more.push(chunk);
        }
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// Makes the bodies of later tries, and says whether there can be any.
#[derive(Debug)]
pub(super) enum ReplaySource<B> {
    Empty,
    Replay(Arc<Mutex<Recording<B>>>),
}

impl<B: Body + Unpin> ReplayBody<B> {
    /// A body for a request that will not be retried.
    pub(super) fn passthrough(body: B) -> Self {
        Self {
            kind: Kind::Passthrough(body),
        }
    }

    /// The first try's body, and the source of later tries' bodies unless the body is known to
    /// be larger than `cap` already.
    pub(super) fn record(body: B, cap: usize) -> (Self, Option<ReplaySource<B>>) {
        if body.is_end_stream() {
            return (Self { kind: Kind::Empty }, Some(ReplaySource::Empty));
        }
        let hint = body.size_hint();
        if hint.lower() > cap as u64 {
            return (Self::passthrough(body), None);
        }
        let shared = Arc::new(Mutex::new(Recording {
            rest: Some(body),
            chunks: Chunks::default(),
            recorded: 0,
            cap,
            frames_read: 0,
            overflowed: false,
            failed: false,
            trailers: None,
            hint,
        }));
        let first = Self::cursor(shared.clone());
        (first, Some(ReplaySource::Replay(shared)))
    }

    fn cursor(shared: Arc<Mutex<Recording<B>>>) -> Self {
        Self {
            kind: Kind::Replay(Cursor {
                shared,
                frames: 0,
                sent: 0,
                trailers_sent: false,
            }),
        }
    }
}

impl<B: Body + Unpin> ReplaySource<B> {
    /// Whether another try could send the whole body again.
    pub(super) fn is_replayable(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Replay(shared) => {
                let recording = lock(shared);
                !recording.overflowed && !recording.failed
            }
        }
    }

    /// The body for another try.
    pub(super) fn next_try(&self) -> ReplayBody<B> {
        match self {
            Self::Empty => ReplayBody { kind: Kind::Empty },
            Self::Replay(shared) => ReplayBody::cursor(shared.clone()),
        }
    }
}

fn lock<B>(shared: &Mutex<Recording<B>>) -> MutexGuard<'_, Recording<B>> {
    // A panic while holding the lock cannot leave the recording half-updated in a way that
    // matters more than failing the body, so a poisoned lock is used as is.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<B> Body for ReplayBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Empty => Poll::Ready(None),
            KindProj::Passthrough(body) => body.poll_frame(cx).map(|frame| {
                frame.map(|result| match result {
                    Ok(frame) => {
                        Ok(frame.map_data(|mut data| data.copy_to_bytes(data.remaining())))
                    }
                    Err(err) => Err(err.into()),
                })
            }),
            KindProj::Replay(cursor) => cursor.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Passthrough(body) => body.is_end_stream(),
            Kind::Replay(cursor) => {
                let recording = lock(&cursor.shared);
                recording.rest.is_none()
                    && !recording.failed
                    && cursor.frames == recording.frames_read
                    && (recording.trailers.is_none() || cursor.trailers_sent)
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Passthrough(body) => body.size_hint(),
            Kind::Replay(cursor) => {
                // Every try sends the same bytes: the original hint, less what this try sent.
                let hint = lock(&cursor.shared).hint;
                let mut remaining = SizeHint::new();
                remaining.set_lower(hint.lower().saturating_sub(cursor.sent));
                if let Some(upper) = hint.upper() {
                    remaining.set_upper(upper.saturating_sub(cursor.sent));
                }
                remaining
            }
        }
    }
}

impl<B> Cursor<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut recording = lock(&self.shared);
        // Replay what earlier tries read.
        if let Some(chunk) = recording.chunks.get(self.frames).cloned() {
            self.frames += 1;
            self.sent += chunk.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if self.frames < recording.frames_read {
            return Poll::Ready(Some(Err(
                "request body outgrew the retry buffer and cannot be sent again".into(),
            )));
        }
        if recording.failed {
            return Poll::Ready(Some(
                Err("the request body failed on an earlier try".into()),
            ));
        }
        let Some(rest) = recording.rest.as_mut() else {
            // The original body has ended: only the trailers may be left to replay.
            return match (&recording.trailers, self.trailers_sent) {
                (Some(trailers), false) => {
                    self.trailers_sent = true;
                    Poll::Ready(Some(Ok(Frame::trailers(trailers.clone()))))
                }
                _ => Poll::Ready(None),
            };
        };
        // This try is at the front: read on from the original body, recording as we go.
        let frame = match Pin::new(rest).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                recording.rest = None;
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Err(err))) => {
                recording.failed = true;
                recording.rest = None;
                return Poll::Ready(Some(Err(err.into())));
            }
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        match frame.into_data() {
            Ok(mut data) => {
                let chunk = data.copy_to_bytes(data.remaining());
                recording.frames_read += 1;
                if !recording.overflowed && recording.recorded + chunk.len() <= recording.cap {
                    recording.recorded += chunk.len();
                    recording.chunks.push(chunk.clone());
                } else if !recording.overflowed {
                    // Too large to replay: stop recording and free what was kept.
                    recording.overflowed = true;
                    recording.chunks.clear();
                }
                self.frames = recording.frames_read;
                self.sent += chunk.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Err(frame) => match frame.into_trailers() {
                Ok(trailers) => {
                    // Trailers end the body.
                    recording.trailers = Some(trailers.clone());
                    recording.rest = None;
                    self.trailers_sent = true;
                    Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                }
                // A frame kind http-body may add later: pass it on, but it cannot be replayed.
                Err(_unknown) => {
                    recording.overflowed = true;
                    Poll::Ready(Some(Err("request body frame of an unknown kind".into())))
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::channel::Channel;
    use http_body_util::{BodyExt, Full};

    async fn collect(
        body: ReplayBody<impl Body<Error = impl Into<BoxError>> + Unpin>,
    ) -> (Bytes, Option<HeaderMap>) {
        let collected = body.collect().await.expect("body");
        let trailers = collected.trailers().cloned();
        (collected.to_bytes(), trailers)
    }

    fn trailers() -> HeaderMap {
        let mut t = HeaderMap::new();
        t.insert("checksum", http::HeaderValue::from_static("abc"));
        t
    }

    /// A body of these chunks, then the trailers if any, then its end.
    fn chunked(parts: &[&'static str], trailers: Option<HeaderMap>) -> Channel<Bytes, BoxError> {
        let (mut tx, body) = Channel::new(parts.len() + 1);
        for part in parts {
            tx.try_send(Frame::data(Bytes::from_static(part.as_bytes())))
                .expect("room");
        }
        if let Some(t) = trailers {
            tx.try_send(Frame::trailers(t)).expect("room");
        }
        body
    }

    #[tokio::test]
    async fn retries_replay_data_and_trailers_exactly() {
        let (first, source) =
            ReplayBody::record(chunked(&["ab", "cd", "ef"], Some(trailers())), 1024);
        let source = source.expect("replayable");
        assert_eq!(
            collect(first).await,
            (Bytes::from("abcdef"), Some(trailers()))
        );
        assert!(source.is_replayable());
        for _ in 0..2 {
            assert_eq!(
                collect(source.next_try()).await,
                (Bytes::from("abcdef"), Some(trailers()))
            );
        }
    }

    #[tokio::test]
    async fn a_retry_goes_on_where_an_unfinished_try_stopped() {
        let (mut first, source) = ReplayBody::record(chunked(&["ab", "cd", "ef"], None), 1024);
        let source = source.expect("replayable");
        let frame = first.frame().await.expect("frame").expect("data");
        assert_eq!(frame.into_data().expect("data"), "ab");
        drop(first);
        assert_eq!(collect(source.next_try()).await.0, "abcdef");
    }

    #[tokio::test]
    async fn bodies_over_the_cap_are_sent_whole_but_not_replayable() {
        let (first, source) = ReplayBody::record(chunked(&["abcd", "efgh", "ij"], None), 6);
        let source = source.expect("size unknown up front");
        assert_eq!(collect(first).await.0, "abcdefghij");
        assert!(!source.is_replayable());
        let err = source
            .next_try()
            .collect()
            .await
            .expect_err("not replayable");
        assert!(err.to_string().contains("outgrew"), "{err}");

        let (first, source) = ReplayBody::record(Full::new(Bytes::from(vec![7u8; 100])), 10);
        assert!(source.is_none(), "known to be too large: not even recorded");
        assert_eq!(collect(first).await.0.len(), 100);
    }

    #[tokio::test]
    async fn the_size_hint_is_kept_for_every_try() {
        let (first, source) = ReplayBody::record(Full::new(Bytes::from_static(b"hello")), 64);
        assert_eq!(first.size_hint().exact(), Some(5));
        let source = source.expect("replayable");
        collect(first).await;
        let retry = source.next_try();
        assert_eq!(retry.size_hint().exact(), Some(5));
        assert!(!retry.is_end_stream());
        let (empty, source) = ReplayBody::record(Full::new(Bytes::new()), 64);
        assert!(empty.is_end_stream());
        assert!(source.expect("empty").next_try().is_end_stream());
    }
}
