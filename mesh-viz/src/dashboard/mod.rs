//! The dashboard: a small web page served locally, with no build step and no external assets
//! (one HTML file with its script and styles inline, compiled into the binary). It shows the
//! topology as a graph (deployments and the edges between them, mTLS marked), the stat table per
//! deployment with sparklines of RPS and success rate, the proxies that do not answer, and a
//! live tap view fed by server-sent events.
//!
//! The server scrapes every proxy each `refresh` (each scrape bounded by `deadline`), keeps the
//! latest reading and a short history in memory, and taps every proxy continuously, fanning the
//! events out to the pages open (a slow page loses events, counted in the stream; it never
//! slows the taps). Each event stream ends after `tap_stream` and the page reconnects: no
//! connection lives forever, and a proxy or load balancer in between never sees one.

mod state;

use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::broadcast;

use crate::scrape::Target;
use crate::tap::{TapFilter, TapItem};

pub use state::Snapshot;

/// The page, whole.
const INDEX: &str = include_str!("index.html");

/// How the dashboard reads the mesh.
#[derive(Clone, Debug)]
pub struct DashboardConfig {
    /// The proxies' admin addresses.
    pub targets: Vec<Target>,
    /// How often to scrape (default 2 s).
    pub refresh: Duration,
    /// Each scrape's deadline (default 1 s).
    pub deadline: Duration,
    /// How long one event stream lasts before the page reconnects (default 30 s).
    pub tap_stream: Duration,
    /// How many readings the sparklines keep (default 60).
    pub history: usize,
}

impl DashboardConfig {
    /// The defaults for `targets`.
    pub fn new(targets: Vec<Target>) -> Self {
        Self {
            targets,
            refresh: Duration::from_secs(2),
            deadline: Duration::from_secs(1),
            tap_stream: Duration::from_secs(30),
            history: 60,
        }
    }
}

type Body = BoxBody<Bytes, Infallible>;

struct Shared {
    config: DashboardConfig,
    state: Mutex<state::State>,
    events: broadcast::Sender<Arc<str>>,
}

/// Serves the dashboard on `listener` until the task is dropped: scrapes, taps, and answers
/// `/` (the page), `/api/state` (the latest reading as JSON) and `/api/tap` (server-sent events).
/// It never returns: a failed accept is waited out.
pub async fn serve(listener: TcpListener, config: DashboardConfig) {
    let (events, _) = broadcast::channel(1024);
    let shared = Arc::new(Shared {
        state: Mutex::new(state::State::new(config.history)),
        config,
        events,
    });
    let refresher = tokio::spawn(refresh(Arc::clone(&shared)));
    let _stop_refreshing = AbortOnDrop(refresher);
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            // Out of file descriptors, or a connection reset before it was accepted: the
            // dashboard goes on (a pause, so that a lasting error does not spin).
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(answer(&shared, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Scrapes every `refresh`, and starts a tap of each proxy once its workload is known.
async fn refresh(shared: Arc<Shared>) {
    let mut previous: Option<(Vec<_>, tokio::time::Instant)> = None;
    let mut tapping = std::collections::HashSet::new();
    let mut taps = Vec::new();
    loop {
        let started = tokio::time::Instant::now();
        let scrapes = crate::scrape_all(&shared.config.targets, shared.config.deadline).await;
        let now = crate::outcomes(&scrapes);
        // Edges from everything counted since the proxies started (the topology does not
        // blink out when a pair is quiet for one interval); rates over the last interval.
        let totals = crate::Reading::between(&[], &now, Duration::ZERO);
        match &previous {
            Some((before, at)) => {
                let interval = started.duration_since(*at);
                let reading = crate::Reading::between(before, &now, interval);
                lock(&shared.state).update(&reading, &totals);
            }
            None => lock(&shared.state).first(&totals),
        }
        for (target, result) in &now {
            if let (Ok(metrics), true) = (result, !tapping.contains(target)) {
                tapping.insert(target.clone());
                let job = tap_forever(
                    target.clone(),
                    metrics.workload.clone(),
                    shared.events.clone(),
                    shared.config.deadline,
                );
                taps.push(AbortOnDrop(tokio::spawn(job)));
            }
        }
        previous = Some((now, started));
        tokio::time::sleep_until(started + shared.config.refresh).await;
    }
}

/// Taps one proxy, again and again: a proxy restarting or not answering for a while is tapped
/// again when it is back.
async fn tap_forever(
    target: Target,
    workload: crate::Workload,
    events: broadcast::Sender<Arc<str>>,
    deadline: Duration,
) {
    loop {
        let mut rx = crate::tap::tap(
            vec![(target.clone(), Some(workload.clone()))],
            TapFilter::default(),
            256,
            deadline,
        );
        while let Some(item) = rx.recv().await {
            let failed = matches!(item, TapItem::Failed { .. });
            if let Ok(json) = serde_json::to_string(&item) {
                // Nobody watching is fine: the send only fails then.
                let _ = events.send(json.into());
            }
            if failed {
                break;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn answer(shared: &Shared, req: &Request<Incoming>) -> Response<Body> {
    match req.uri().path() {
        "/" | "/index.html" => respond(StatusCode::OK, "text/html; charset=utf-8", INDEX.into()),
        "/api/state" => {
            let json = serde_json::to_string(&lock(&shared.state).snapshot())
                .unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()));
            respond(StatusCode::OK, "application/json", json)
        }
        "/api/tap" => events(shared),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// A server-sent event stream of tap items for `tap_stream`, then its end (the page
/// reconnects after the `retry` it was told).
fn events(shared: &Shared) -> Response<Body> {
    let mut rx = shared.events.subscribe();
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(16);
    let lasts = shared.config.tap_stream;
    tokio::spawn(async move {
        let end = tokio::time::sleep(lasts);
        tokio::pin!(end);
        if tx
            .send_data(Bytes::from_static(b"retry: 2000\n\n"))
            .await
            .is_err()
        {
            return;
        }
        loop {
            let line = tokio::select! {
                _ = &mut end => return,
                got = rx.recv() => match got {
                    Ok(json) => format!("data: {json}\n\n"),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        format!("data: {{\"kind\":\"lagged\",\"dropped\":{n}}}\n\n")
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            if tx.send_data(line.into()).await.is_err() {
                return;
            }
        }
    });
    let mut rsp = Response::new(body.boxed());
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    rsp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    rsp
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut rsp = Response::new(Full::new(Bytes::from(body)).boxed());
    *rsp.status_mut() = status;
    rsp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    rsp
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
