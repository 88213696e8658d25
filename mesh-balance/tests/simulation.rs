//! Simulations with tokio's clock paused: fast, deterministic (seeded randomness), and exact
//! about time. Endpoints are in-memory services that take a set time to answer.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use mesh_balance::discover::fixed;
use mesh_balance::{Balance, BalanceConfig, EndpointStatus};
use mesh_core::Endpoint;
use mesh_core::random::SplitMix;
use tower::{Service, ServiceExt};

/// An endpoint: answers after `latency`, with 503 while `failing`.
#[derive(Clone)]
struct Sim {
    latency: Duration,
    failing: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
}

impl Sim {
    fn new(latency: Duration) -> Self {
        Self {
            latency,
            failing: Arc::new(AtomicBool::new(false)),
            served: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Service<Request<()>> for Sim {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        self.served.fetch_add(1, Relaxed);
        let (latency, failing) = (self.latency, self.failing.load(Relaxed));
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            let status = if failing { 503 } else { 200 };
            Ok(Response::builder()
                .status(status)
                .body(Full::new(Bytes::from_static(b"x")))
                .unwrap_or_default())
        })
    }
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16))
}

/// A balancer over `sims`, seeded; endpoint `i` at `addr(i)` with weight `weights[i]`.
fn balancer(sims: &[Sim], weights: &[u32], config: BalanceConfig) -> Balance<Sim, ()> {
    let endpoints: Vec<Endpoint> = (0..sims.len())
        .map(|i| Endpoint::new(addr(i)).with_weight(weights.get(i).copied().unwrap_or(1)))
        .collect();
    let sims = sims.to_vec();
    Balance::with_random(
        fixed(endpoints),
        move |e: &Endpoint| sims[usize::from(e.addr.port() - 10_000)].clone(),
        config,
        Arc::new(SplitMix::seeded(42)),
    )
}

/// `total` requests from `workers` concurrent callers; returns how many failed.
async fn load(balance: &Balance<Sim, ()>, workers: usize, total: usize) -> usize {
    let failures = Arc::new(AtomicU64::new(0));
    let per_worker = total / workers;
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (mut balance, failures) = (balance.clone(), failures.clone());
            tokio::spawn(async move {
                for _ in 0..per_worker {
                    let ok = match balance
                        .ready()
                        .await
                        .expect("ready")
                        .call(Request::new(()))
                        .await
                    {
                        Ok(rsp) => {
                            let ok = rsp.status() == 200;
                            rsp.into_body().collect().await.is_ok() && ok
                        }
                        Err(_) => false,
                    };
                    if !ok {
                        failures.fetch_add(1, Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("worker");
    }
    failures.load(Relaxed) as usize
}

/// Lets the driver apply discovery and ready the endpoints.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_ten_times_slower_endpoint_gets_under_five_percent() {
    let mut sims: Vec<Sim> = (0..9).map(|_| Sim::new(Duration::from_millis(1))).collect();
    sims.push(Sim::new(Duration::from_millis(10)));
    let balance = balancer(&sims, &[], BalanceConfig::default());
    settle().await;
    assert_eq!(load(&balance, 8, 20_000).await, 0);
    let total: u64 = sims.iter().map(|s| s.served.load(Relaxed)).sum();
    let slow = sims[9].served.load(Relaxed);
    let share = slow as f64 / total as f64;
    assert!(
        share < 0.05,
        "the slow endpoint got {:.2}% ({slow} of {total})",
        share * 100.0
    );
    let snap = balance.snapshot();
    assert_eq!(snap.len(), 10);
    assert!(
        snap.iter()
            .all(|e| e.status == EndpointStatus::Ready && e.outstanding == 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_endpoint_is_ejected_after_n_failures_and_readmitted_when_it_recovers() {
    let sims: Vec<Sim> = (0..5).map(|_| Sim::new(Duration::from_millis(1))).collect();
    sims[2].failing.store(true, Relaxed);
    let mut config = BalanceConfig::default();
    // Consecutive failures alone, so the count is exact; and no latency penalty, which would
    // otherwise steer traffic away before accrual has seen N failures (see the next test).
    config.accrual.success_rate = None;
    config.failure_penalty = Duration::ZERO;
    let balance = balancer(&sims, &[], config);
    settle().await;

    let failures = load(&balance, 1, 400).await;
    let status = |b: &Balance<Sim, ()>| {
        b.snapshot()
            .iter()
            .find(|e| e.addr == addr(2))
            .map(|e| e.status)
    };
    assert_eq!(status(&balance), Some(EndpointStatus::Ejected));
    // Exactly N failures reached the caller before the ejection; no request went to it after.
    assert_eq!(failures, 7);
    assert_eq!(sims[2].served.load(Relaxed), 7);
    assert_eq!(balance.ejected(), 1);

    // Still failing: a probe after the backoff fails and ejects it again, for longer.
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    let failures = load(&balance, 1, 200).await;
    assert_eq!(failures, 1, "one failed probe");
    assert_eq!(sims[2].served.load(Relaxed), 8);
    assert_eq!(status(&balance), Some(EndpointStatus::Ejected));

    // It recovers: the next probe (after at most 2 s x 1.5) succeeds and readmits it.
    sims[2].failing.store(false, Relaxed);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(load(&balance, 1, 400).await, 0);
    assert_eq!(status(&balance), Some(EndpointStatus::Ready));
    assert_eq!(balance.ejected(), 0);
    assert!(
        sims[2].served.load(Relaxed) > 8 + 20,
        "it takes traffic again"
    );
}

#[tokio::test(start_paused = true)]
async fn a_fast_failure_does_not_make_an_endpoint_look_cheap() {
    // Nine endpoints answer in 5 ms; one answers 503 at once. Without the failure penalty it
    // would look like the cheapest endpoint and draw traffic until accrual ejects it.
    let mut sims: Vec<Sim> = (0..9).map(|_| Sim::new(Duration::from_millis(5))).collect();
    let fast_failing = Sim::new(Duration::ZERO);
    fast_failing.failing.store(true, Relaxed);
    sims.push(fast_failing);
    let mut config = BalanceConfig::default();
    config.accrual.consecutive_failures = 0;
    config.accrual.success_rate = None;
    let balance = balancer(&sims, &[], config);
    settle().await;
    let failures = load(&balance, 4, 4_000).await;
    assert!(
        failures <= 10,
        "{failures} requests went to the failing endpoint"
    );
    assert_eq!(failures as u64, sims[9].served.load(Relaxed));
}

#[tokio::test(start_paused = true)]
async fn ejections_never_exceed_the_cap() {
    let sims: Vec<Sim> = (0..10)
        .map(|_| Sim::new(Duration::from_millis(1)))
        .collect();
    for s in &sims[..8] {
        s.failing.store(true, Relaxed);
    }
    let balance = balancer(&sims, &[], BalanceConfig::default());
    settle().await;
    for _ in 0..50 {
        load(&balance, 4, 40).await;
        assert!(
            balance.ejected() <= 5,
            "{} ejected of 10",
            balance.ejected()
        );
    }
    assert_eq!(balance.ejected(), 5);
}

#[tokio::test(start_paused = true)]
async fn success_rate_ejects_a_flaky_endpoint_but_not_an_idle_one() {
    // Consecutive failures are off: only the success-rate policy acts.
    let mut config = BalanceConfig::default();
    config.accrual.consecutive_failures = 0;
    config.failure_penalty = Duration::ZERO;
    let sims: Vec<Sim> = (0..4).map(|_| Sim::new(Duration::from_millis(1))).collect();
    sims[1].failing.store(true, Relaxed);
    let balance = balancer(&sims, &[], config);
    settle().await;
    // Two failures: below the minimum volume, no ejection.
    load(&balance, 1, 6).await;
    assert!(sims[1].served.load(Relaxed) >= 1);
    assert_eq!(balance.ejected(), 0);
    load(&balance, 2, 400).await;
    assert_eq!(balance.ejected(), 1);
    let served = sims[1].served.load(Relaxed);
    assert!(
        (20..40).contains(&served),
        "ejected after about 20 requests, got {served}"
    );
}

#[tokio::test(start_paused = true)]
async fn weights_set_traffic_shares_when_loads_are_equal() {
    // Instant answers with the clock paused: no time passes, every estimate stays at the
    // default, and with one caller at a time nothing is outstanding: equal loads.
    let sims: Vec<Sim> = (0..3).map(|_| Sim::new(Duration::ZERO)).collect();
    let balance = balancer(&sims, &[1, 3, 6], BalanceConfig::default());
    settle().await;
    assert_eq!(load(&balance, 1, 10_000).await, 0);
    let served: Vec<f64> = sims
        .iter()
        .map(|s| s.served.load(Relaxed) as f64 / 10_000.0)
        .collect();
    for (share, expected) in served.iter().zip([0.1, 0.3, 0.6]) {
        assert!((share - expected).abs() < 0.03, "{served:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn with_no_endpoint_a_request_waits_its_bound_then_gets_503() {
    let balance = balancer(&[], &[], BalanceConfig::default());
    let started = tokio::time::Instant::now();
    let err = balance
        .clone()
        .oneshot(Request::new(()))
        .await
        .expect_err("nothing to send to");
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    let rsp = mesh_core::error_response::<Full<Bytes>>(&*err, false);
    assert_eq!(rsp.status(), 503);
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_that_stalls_past_the_callers_deadline_is_avoided() {
    // One endpoint never answers in time; callers give up after 100 ms. No response ever comes
    // back from it, yet the time waited counts, so it stops being picked.
    let mut sims: Vec<Sim> = (0..5).map(|_| Sim::new(Duration::from_millis(2))).collect();
    sims.push(Sim::new(Duration::from_secs(10)));
    let balance = balancer(&sims, &[], BalanceConfig::default());
    settle().await;
    let mut timed_out = 0;
    for _ in 0..500 {
        let call = balance.clone().oneshot(Request::new(()));
        if tokio::time::timeout(Duration::from_millis(100), call)
            .await
            .is_err()
        {
            timed_out += 1;
        }
    }
    assert!(
        timed_out <= 2,
        "{timed_out} requests went to the stalling endpoint"
    );
    assert_eq!(timed_out as u64, sims[5].served.load(Relaxed));
}
