//! Tap over HTTP: newline-delimited JSON, for an admin port.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body::{Body, Frame};

use super::{Tap, TapFilter, TapListener};

/// How many events a tap stream may fall behind before it loses some.
const QUEUE: usize = 1024;

/// Answers a tap request: subscribes with the filter in the request's query (`authority`,
/// `path_prefix`, `method`, and `limit` to end after that many events) and streams one JSON
/// object per line (`application/x-ndjson`). When the reader falls behind, a line
/// `{"dropped":N}` says how many events it has lost so far. A query that cannot be read gets a
/// 400 naming the problem.
pub fn serve_tap<B>(tap: &Tap, req: &Request<B>) -> Response<NdjsonBody> {
    let (filter, limit) = match TapFilter::from_query(req.uri().query().unwrap_or("")) {
        Ok(parsed) => parsed,
        Err(err) => {
            let mut rsp = Response::new(NdjsonBody::message(format!("{err}\n")));
            *rsp.status_mut() = StatusCode::BAD_REQUEST;
            rsp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            return rsp;
        }
    };
    let listener = tap.subscribe(filter, QUEUE);
    let mut rsp = Response::new(NdjsonBody {
        listener: Some(listener),
        remaining: limit,
        reported_dropped: 0,
        message: None,
    });
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-ndjson"),
    );
    rsp
}

/// The body of [`serve_tap`]: tap events as JSON lines, until the limit or the client leaves.
#[derive(Debug)]
pub struct NdjsonBody {
    listener: Option<TapListener>,
    remaining: Option<u64>,
    reported_dropped: u64,
    message: Option<Bytes>,
}

impl NdjsonBody {
    fn message(text: String) -> Self {
        Self {
            listener: None,
            remaining: None,
            reported_dropped: 0,
            message: Some(Bytes::from(text)),
        }
    }
}

impl Body for NdjsonBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if let Some(message) = this.message.take() {
            return Poll::Ready(Some(Ok(Frame::data(message))));
        }
        if this.remaining == Some(0) {
            this.listener = None;
            return Poll::Ready(None);
        }
        let Some(listener) = this.listener.as_mut() else {
            return Poll::Ready(None);
        };
        let dropped = listener.dropped();
        if dropped > this.reported_dropped {
            this.reported_dropped = dropped;
            let line = format!("{{\"dropped\":{dropped}}}\n");
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(line)))));
        }
        match listener.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.listener = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(event)) => {
                if let Some(n) = this.remaining.as_mut() {
                    *n -= 1;
                }
                let mut line = event.to_json();
                line.push('\n');
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(line)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.message.is_none() && (self.listener.is_none() || self.remaining == Some(0))
    }
}
