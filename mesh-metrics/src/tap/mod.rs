//! Tap: a live stream of request and response metadata.
//!
//! A [`Tap`] is shared by the layers that feed it and the listeners that read it. While nobody
//! listens, a request costs it one atomic load. A listener subscribes with a [`TapFilter`] and
//! a bounded queue; events are offered with `try_send`, so a listener that reads slowly (or
//! never) loses events, which its [`TapListener::dropped`] counter tells, and never holds up a
//! request.

mod event;
mod filter;
mod ndjson;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use http::header::{AUTHORIZATION, COOKIE, HOST, PROXY_AUTHORIZATION, SET_COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use mesh_core::grpc::GrpcCode;
use mesh_core::{Class, PeerIdentity};
use tokio::sync::mpsc;

pub use self::event::TapEvent;
pub use self::filter::{TapFilter, TapQueryError};
pub use self::ndjson::{NdjsonBody, serve_tap};

use crate::Direction;

/// Headers never shown by tap, whatever the configuration says.
const SENSITIVE: [HeaderName; 4] = [AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE, SET_COOKIE];

/// Which headers tap shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum HeaderSelection {
    /// Every header except the sensitive ones (`authorization`, `proxy-authorization`,
    /// `cookie`, `set-cookie`, and any value marked sensitive).
    #[default]
    AllButSensitive,
    /// Only these headers, still never the sensitive ones.
    Only(Vec<HeaderName>),
    /// None.
    None,
}

impl HeaderSelection {
    fn select(&self, headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
        let keep = |name: &HeaderName, value: &HeaderValue| {
            !value.is_sensitive()
                && !SENSITIVE.contains(name)
                && match self {
                    Self::AllButSensitive => true,
                    Self::Only(names) => names.contains(name),
                    Self::None => false,
                }
        };
        headers
            .iter()
            .filter(|(n, v)| keep(n, v))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect()
    }
}

struct Listener {
    filter: TapFilter,
    tx: mpsc::Sender<Arc<TapEvent>>,
    dropped: Arc<AtomicU64>,
}

struct Shared {
    listeners: RwLock<Vec<Listener>>,
    /// Listeners subscribed, read on every request; the lock is only taken when non-zero.
    listening: AtomicUsize,
    next_id: AtomicU64,
    headers: HeaderSelection,
}

/// The tap hub: fed by metrics layers, read by listeners. Cheap to clone (shared).
#[derive(Clone)]
pub struct Tap {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap")
            .field("listening", &self.shared.listening.load(Relaxed))
            .finish_non_exhaustive()
    }
}

impl Default for Tap {
    fn default() -> Self {
        Self::new(HeaderSelection::default())
    }
}

impl Tap {
    /// A tap showing the `headers` selected.
    pub fn new(headers: HeaderSelection) -> Self {
        Self {
            shared: Arc::new(Shared {
                listeners: RwLock::new(Vec::new()),
                listening: AtomicUsize::new(0),
                next_id: AtomicU64::new(0),
                headers,
            }),
        }
    }

    /// Subscribes to the events matching `filter`, queueing up to `capacity` (at least 1) of
    /// them; past that, events for this listener are dropped and counted.
    pub fn subscribe(&self, filter: TapFilter, capacity: usize) -> TapListener {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let mut listeners = self.write();
        listeners.push(Listener {
            filter,
            tx,
            dropped: Arc::clone(&dropped),
        });
        self.shared.listening.store(listeners.len(), Relaxed);
        TapListener { rx, dropped }
    }

    /// Whether anyone listens.
    #[inline]
    pub fn is_listening(&self) -> bool {
        self.shared.listening.load(Relaxed) > 0
    }

    /// Starts tapping `req` if a listener wants it: captures the request's metadata.
    #[inline]
    pub fn start<B>(&self, direction: Direction, req: &Request<B>) -> Option<TapRequest> {
        if !self.is_listening() {
            return None;
        }
        self.start_slow(direction, req)
    }

    fn start_slow<B>(&self, direction: Direction, req: &Request<B>) -> Option<TapRequest> {
        let authority = req
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| req.headers().get(HOST).and_then(|h| h.to_str().ok()));
        let path = req.uri().path();
        let (wanted, closed) = {
            let listeners = self.read();
            let wanted = listeners
                .iter()
                .any(|l| !l.tx.is_closed() && l.filter.matches(req.method(), authority, path));
            (wanted, listeners.iter().any(|l| l.tx.is_closed()))
        };
        if closed {
            self.forget_closed();
        }
        if !wanted {
            return None;
        }
        let event = TapEvent {
            id: self.shared.next_id.fetch_add(1, Relaxed),
            direction,
            method: req.method().clone(),
            authority: authority.map(str::to_owned),
            path: path.to_owned(),
            peer: PeerIdentity::of(req)
                .and_then(PeerIdentity::identity)
                .cloned(),
            request_headers: self.shared.headers.select(req.headers()),
            status: None,
            response_headers: Vec::new(),
            grpc_status: None,
            outcome: Class::Success,
            headers_latency: None,
            total_latency: Duration::ZERO,
        };
        Some(TapRequest(Box::new((event, self.clone()))))
    }

    fn publish(&self, event: TapEvent) {
        let event = Arc::new(event);
        let mut closed = false;
        for l in self.read().iter() {
            if !l
                .filter
                .matches(&event.method, event.authority.as_deref(), &event.path)
            {
                continue;
            }
            match l.tx.try_send(Arc::clone(&event)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    l.dropped.fetch_add(1, Relaxed);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => closed = true,
            }
        }
        if closed {
            self.forget_closed();
        }
    }

    fn forget_closed(&self) {
        let mut listeners = self.write();
        listeners.retain(|l| !l.tx.is_closed());
        self.shared.listening.store(listeners.len(), Relaxed);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Listener>> {
        self.shared
            .listeners
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Listener>> {
        self.shared
            .listeners
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A request being tapped: its metadata so far, published when it ends. One pointer wide, so
/// that an untapped request carries only a `None` of that size.
pub struct TapRequest(Box<(TapEvent, Tap)>);

impl std::fmt::Debug for TapRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TapRequest").field(&self.0.0.id).finish()
    }
}

impl TapRequest {
    /// The response head arrived after `latency`.
    pub fn on_response<B>(&mut self, rsp: &Response<B>, latency: Duration) {
        let (event, tap) = &mut *self.0;
        event.status = Some(rsp.status());
        event.headers_latency = Some(latency);
        event.response_headers = tap.shared.headers.select(rsp.headers());
        if let Some(Ok(code)) = GrpcCode::from_headers(rsp.headers()) {
            event.grpc_status = Some(code);
        }
    }

    /// The response's trailers passed.
    pub fn on_trailers(&mut self, trailers: &HeaderMap) {
        if let Some(Ok(code)) = GrpcCode::from_headers(trailers) {
            self.0.0.grpc_status = Some(code);
        }
    }

    /// The request ended with `outcome` after `latency`: publishes the event.
    pub fn finish(self, outcome: Class, latency: Duration) {
        let (mut event, tap) = *self.0;
        event.outcome = outcome;
        event.total_latency = latency;
        tap.publish(event);
    }
}

/// One listener's end of a [`Tap`]: its events, and how many it lost by not keeping up.
#[derive(Debug)]
pub struct TapListener {
    rx: mpsc::Receiver<Arc<TapEvent>>,
    dropped: Arc<AtomicU64>,
}

impl TapListener {
    /// The next event; `None` once the tap is gone.
    pub async fn recv(&mut self) -> Option<Arc<TapEvent>> {
        self.rx.recv().await
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Option<Arc<TapEvent>> {
        self.rx.try_recv().ok()
    }

    /// Polls for the next event.
    pub fn poll_recv(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Arc<TapEvent>>> {
        self.rx.poll_recv(cx)
    }

    /// Events this listener lost because its queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_headers_never_show() {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        headers.insert(COOKIE, HeaderValue::from_static("a=b"));
        headers.insert("x-request-id", HeaderValue::from_static("7"));
        let mut secret = HeaderValue::from_static("s");
        secret.set_sensitive(true);
        headers.insert("x-token", secret);
        let names = |sel: HeaderSelection| -> Vec<String> {
            sel.select(&headers)
                .into_iter()
                .map(|(n, _)| n.to_string())
                .collect()
        };
        assert_eq!(names(HeaderSelection::AllButSensitive), ["x-request-id"]);
        assert_eq!(
            names(HeaderSelection::Only(vec![
                AUTHORIZATION,
                "x-request-id".parse().expect("name")
            ])),
            ["x-request-id"]
        );
        assert!(names(HeaderSelection::None).is_empty());
    }

    #[test]
    fn nothing_is_captured_without_a_matching_listener() {
        let tap = Tap::default();
        let req = Request::get("http://web/a").body(()).expect("request");
        assert!(tap.start(Direction::Inbound, &req).is_none());
        let listener = tap.subscribe(TapFilter::all().path_prefix("/b"), 4);
        assert!(tap.start(Direction::Inbound, &req).is_none());
        drop(listener);
        let other = tap.subscribe(TapFilter::all(), 4);
        assert!(tap.start(Direction::Inbound, &req).is_some());
        drop(other);
        // Closed listeners are forgotten, so the cheap check says nobody listens again.
        assert!(tap.start(Direction::Inbound, &req).is_none());
        assert!(!tap.is_listening());
    }
}
