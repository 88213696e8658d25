//! The endpoint set changes while traffic flows (clock paused): readiness is driven in the
//! background, inserts take traffic at once, removals drain without redirecting anything.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use mesh_balance::discover::channel;
use mesh_balance::{Balance, BalanceConfig, EndpointStatus};
use mesh_core::Endpoint;
use mesh_core::random::SplitMix;
use tokio::time::{Instant, Sleep};
use tower::{Service, ServiceExt};

/// Becomes ready at `ready_at` (as if connecting), then answers after `latency`, echoing its
/// port in `x-port`.
#[derive(Clone)]
struct Slow {
    port: u16,
    ready_at: Instant,
    latency: Duration,
    wait: Option<Arc<std::sync::Mutex<Pin<Box<Sleep>>>>>,
    served: Arc<AtomicU64>,
}

impl Slow {
    fn new(port: u16, ready_in: Duration, latency: Duration) -> Self {
        Self {
            port,
            ready_at: Instant::now() + ready_in,
            latency,
            wait: None,
            served: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Service<Request<()>> for Slow {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if Instant::now() >= self.ready_at {
            return Poll::Ready(Ok(()));
        }
        let ready_at = self.ready_at;
        let wait = self.wait.get_or_insert_with(|| {
            Arc::new(std::sync::Mutex::new(Box::pin(tokio::time::sleep_until(
                ready_at,
            ))))
        });
        let mut sleep = wait.lock().expect("lock");
        sleep.as_mut().poll(cx).map(Ok)
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        self.served.fetch_add(1, Relaxed);
        let (latency, port) = (self.latency, self.port);
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            let mut rsp = Response::new(Full::new(Bytes::from_static(b"x")));
            rsp.headers_mut().insert("x-port", port.into());
            Ok(rsp)
        })
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn status(balance: &Balance<Slow, ()>, port: u16) -> Option<EndpointStatus> {
    balance
        .snapshot()
        .iter()
        .find(|e| e.addr == addr(port))
        .map(|e| e.status)
}

#[tokio::test(start_paused = true)]
async fn endpoints_are_made_ready_in_the_background_and_removals_drain() {
    let (updates_tx, updates) = channel();
    let services: Arc<std::sync::Mutex<Vec<Slow>>> = Arc::default();
    let made = services.clone();
    let balance = Balance::with_random(
        updates,
        move |e: &Endpoint| {
            // Port 1 connects in 100 ms, port 2 in 10 ms; both answer in 50 ms.
            let ready_in = Duration::from_millis(if e.addr.port() == 1 { 100 } else { 10 });
            let s = Slow::new(e.addr.port(), ready_in, Duration::from_millis(50));
            made.lock().expect("lock").push(s.clone());
            s
        },
        BalanceConfig::default(),
        Arc::new(SplitMix::seeded(1)),
    );
    updates_tx.insert(Endpoint::new(addr(1)));
    updates_tx.insert(Endpoint::new(addr(2)));

    // No request is made, yet both become ready on their own.
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(status(&balance, 1), Some(EndpointStatus::Pending));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(status(&balance, 1), Some(EndpointStatus::Ready));
    assert_eq!(status(&balance, 2), Some(EndpointStatus::Ready));

    // A request in flight on the endpoint that is then removed still finishes there.
    let mut in_flight = Vec::new();
    for _ in 0..8 {
        in_flight.push(tokio::spawn(balance.clone().oneshot(Request::new(()))));
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let outstanding_on_1 = balance
        .snapshot()
        .iter()
        .find(|e| e.addr == addr(1))
        .map_or(0, |e| e.outstanding);
    assert!(outstanding_on_1 > 0, "some requests went to port 1");
    updates_tx.remove(addr(1));
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(status(&balance, 1), Some(EndpointStatus::Draining));
    let mut ports = Vec::new();
    for task in in_flight {
        let rsp = task
            .await
            .expect("task")
            .expect("every in-flight request succeeds");
        ports.push(rsp.headers()["x-port"].to_str().expect("port").to_owned());
        rsp.into_body().collect().await.expect("body");
    }
    let on_1 = ports.iter().filter(|p| *p == "1").count() as u64;
    assert_eq!(on_1, outstanding_on_1, "each went where it was picked");
    // Drained: gone from the snapshot; new requests only go to port 2.
    assert_eq!(status(&balance, 1), None);
    let served_1 = services.lock().expect("lock")[0].served.load(Relaxed);
    for _ in 0..20 {
        let rsp = balance
            .clone()
            .oneshot(Request::new(()))
            .await
            .expect("response");
        assert_eq!(rsp.headers()["x-port"], "2");
    }
    assert_eq!(
        services.lock().expect("lock")[0].served.load(Relaxed),
        served_1
    );

    // An insert takes traffic as soon as it is ready.
    updates_tx.insert(Endpoint::new(addr(3)));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut seen_3 = 0;
    for _ in 0..40 {
        let rsp = balance
            .clone()
            .oneshot(Request::new(()))
            .await
            .expect("response");
        seen_3 += usize::from(rsp.headers()["x-port"] == "3");
    }
    assert!(seen_3 > 5, "the new endpoint took {seen_3} of 40");
}
