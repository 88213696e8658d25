//! Balancing quality under a heterogeneous latency mix, on tokio's paused clock (exact,
//! repeatable, fast): the same open-loop offered load through three strategies side by side:
//! round robin, tower's P2C over PeakEwma (behind a `Buffer`, as it must be shared), and ours.
//!
//! Endpoints: nine answer in 1 ms, one in 20 ms, and one answers in 1 ms but stalls for 1 s on
//! every 10th request it gets. Load: one request every 250 µs (4,000/s) for 20 s, each with a
//! 500 ms deadline (a request past it counts as failed).
//!
//! Run: `cargo bench -p mesh-balance --bench quality`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use mesh_balance::discover::fixed;
use mesh_balance::{Balance, BalanceConfig};
use mesh_core::random::SplitMix;
use mesh_core::{BoxError, Endpoint};
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwmaDiscover};
use tower::{Service, ServiceExt};

const INTERVAL: Duration = Duration::from_micros(250);
const REQUESTS: u64 = 80_000;
const DEADLINE: Duration = Duration::from_millis(500);

#[derive(Clone)]
struct Sim {
    latency: Duration,
    stall_every: Option<u64>,
    received: Arc<AtomicU64>,
}

impl Sim {
    fn new(latency: Duration, stall_every: Option<u64>) -> Self {
        Self {
            latency,
            stall_every,
            received: Arc::new(AtomicU64::new(0)),
        }
    }
}

type SimFuture = Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send>>;

impl Service<Request<()>> for Sim {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = SimFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<()>) -> SimFuture {
        let n = self.received.fetch_add(1, Relaxed);
        let stalls = self.stall_every.is_some_and(|k| n % k == k - 1);
        let delay = if stalls {
            Duration::from_secs(1)
        } else {
            self.latency
        };
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
        })
    }
}

fn endpoints() -> Vec<Sim> {
    let mut sims: Vec<Sim> = (0..9)
        .map(|_| Sim::new(Duration::from_millis(1), None))
        .collect();
    sims.push(Sim::new(Duration::from_millis(20), None));
    sims.push(Sim::new(Duration::from_millis(1), Some(10)));
    sims
}

/// Round robin over clones of the endpoint services.
#[derive(Clone)]
struct RoundRobin {
    sims: Arc<Vec<Sim>>,
    next: Arc<AtomicUsize>,
}

impl Service<Request<()>> for RoundRobin {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = SimFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<()>) -> SimFuture {
        let i = self.next.fetch_add(1, Relaxed) % self.sims.len();
        self.sims[i].clone().call(req)
    }
}

struct Outcome {
    latencies: Histogram<u64>,
    failures: u64,
    shares: Vec<f64>,
}

/// Offers the load through `svc`; latencies in microseconds.
async fn run<S, B>(svc: S, sims: &[Sim]) -> Outcome
where
    S: Service<Request<()>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let latencies = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
    ));
    let failures = Arc::new(AtomicU64::new(0));
    let mut ticks = tokio::time::interval(INTERVAL);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..REQUESTS {
        ticks.tick().await;
        let (svc, latencies, failures) = (svc.clone(), latencies.clone(), failures.clone());
        tasks.spawn(async move {
            let start = tokio::time::Instant::now();
            let done = tokio::time::timeout(DEADLINE, async {
                let rsp = svc.oneshot(Request::new(())).await.map_err(Into::into)?;
                rsp.into_body()
                    .collect()
                    .await
                    .map_err(|_| BoxError::from("body"))?;
                Ok::<_, BoxError>(())
            })
            .await;
            match done {
                Ok(Ok(())) => {
                    let us = start.elapsed().as_micros() as u64;
                    latencies.lock().expect("lock").saturating_record(us.max(1));
                }
                _ => {
                    failures.fetch_add(1, Relaxed);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let total: u64 = sims.iter().map(|s| s.received.load(Relaxed)).sum();
    let shares = sims
        .iter()
        .map(|s| s.received.load(Relaxed) as f64 / total.max(1) as f64)
        .collect();
    let latencies = latencies.lock().expect("lock").clone();
    Outcome {
        latencies,
        failures: failures.load(Relaxed),
        shares,
    }
}

fn report(name: &str, o: &Outcome) {
    let ms = |q: f64| o.latencies.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "| {name:<28} | {:>8.2} | {:>8.2} | {:>9.2} | {:>8} | {:>6.2}% | {:>6.2}% |",
        ms(0.5),
        ms(0.99),
        ms(0.999),
        o.failures,
        o.shares[9] * 100.0,
        o.shares[10] * 100.0
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
}

fn main() {
    // `cargo bench` passes flags such as `--bench`; this harness has no options.
    println!("{REQUESTS} requests, one every {INTERVAL:?}, deadline {DEADLINE:?}; latency in ms");
    println!(
        "| strategy                     |      p50 |      p99 |     p99.9 | failures | to 20ms | to staller |"
    );
    println!("|---|---|---|---|---|---|---|");

    let sims = endpoints();
    let rr = RoundRobin {
        sims: Arc::new(sims.clone()),
        next: Arc::new(AtomicUsize::new(0)),
    };
    report("round robin", &runtime().block_on(run(rr, &sims)));

    let sims = endpoints();
    let outcome = runtime().block_on(async {
        let discover = PeakEwmaDiscover::new(
            ServiceList::new::<Request<()>>(sims.clone()),
            Duration::from_millis(30),
            Duration::from_secs(10),
            CompleteOnResponse::default(),
        );
        let balance = tower::balance::p2c::Balance::new(discover);
        let shared = tower::buffer::Buffer::new(balance, 100_000);
        run(shared, &sims).await
    });
    report("tower p2c PeakEwma (Buffer)", &outcome);

    let sims = endpoints();
    let outcome = runtime().block_on(async {
        let addrs: Vec<Endpoint> = (0..sims.len())
            .map(|i| {
                Endpoint::new(std::net::SocketAddr::from((
                    [127, 0, 0, 1],
                    1000 + i as u16,
                )))
            })
            .collect();
        let made = sims.clone();
        let balance = Balance::with_random(
            fixed(addrs),
            move |e: &Endpoint| made[usize::from(e.addr.port() - 1000)].clone(),
            BalanceConfig::default(),
            Arc::new(SplitMix::seeded(7)),
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
        run(balance, &sims).await
    });
    report("mesh-balance", &outcome);
}
