//! The cost of recording golden metrics, alone and through the layer, single-threaded and with
//! two threads on the same label set; and the cost of writing the exposition of 10,000 label
//! sets. prometheus-client, recording the same events into the same kinds of metrics, is the
//! baseline.
//!
//! Run: `cargo bench -p benches --bench metrics`.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use benches::{bare, requests, runtime};
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, StatusCode};
use mesh_core::Class;
use mesh_core::classify::{AutoClassify, Classifier, ClassifyLayer};
use mesh_metrics::{Direction, HttpLabels, HttpMetrics, HttpSeries, MetricsLayer, Registry, Tap};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use tower::Layer;

const HEADERS: Duration = Duration::from_micros(1_700);
const TOTAL: Duration = Duration::from_micros(2_300);

/// The same latency buckets as ours, in seconds.
const BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

fn labels(route: &str) -> HttpLabels {
    HttpLabels::new(Direction::Inbound).with_route(route)
}

/// prometheus-client's equivalent of our label set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PcLabels {
    direction: &'static str,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PcStatus {
    direction: &'static str,
    route: String,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PcOutcome {
    direction: &'static str,
    route: String,
    outcome: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn new_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The same five metrics as ours, as a prometheus-client user would lay them out.
struct Pc {
    requests: Family<PcLabels, Counter>,
    responses: Family<PcStatus, Counter>,
    outcomes: Family<PcOutcome, Counter>,
    headers: HistogramFamily<PcLabels>,
    total: HistogramFamily<PcLabels>,
}

impl Pc {
    fn new() -> Self {
        Self {
            requests: Family::default(),
            responses: Family::default(),
            outcomes: Family::default(),
            headers: Family::new_with_constructor(new_histogram as fn() -> Histogram),
            total: Family::new_with_constructor(new_histogram as fn() -> Histogram),
        }
    }

    /// One request's events, looking each metric up by its labels.
    fn record(&self, l: &PcLabels, s: &PcStatus, o: &PcOutcome) {
        self.requests.get_or_create(l).inc();
        self.responses.get_or_create(s).inc();
        self.headers.get_or_create(l).observe(HEADERS.as_secs_f64());
        self.outcomes.get_or_create(o).inc();
        self.total.get_or_create(l).observe(TOTAL.as_secs_f64());
    }

    fn registry(self) -> prometheus_client::registry::Registry {
        let mut r = prometheus_client::registry::Registry::default();
        r.register("requests", "Requests.", self.requests);
        r.register("responses", "Responses.", self.responses);
        r.register("outcomes", "Outcomes.", self.outcomes);
        r.register("response_headers_seconds", "Headers.", self.headers);
        r.register("request_duration_seconds", "Duration.", self.total);
        r
    }
}

/// Handles already looked up, as with our pre-resolved series.
#[derive(Clone)]
struct PcBound {
    requests: Counter,
    responses: Counter,
    outcomes: Counter,
    headers: Histogram,
    total: Histogram,
}

impl PcBound {
    fn new() -> Self {
        Self {
            requests: Counter::default(),
            responses: Counter::default(),
            outcomes: Counter::default(),
            headers: new_histogram(),
            total: new_histogram(),
        }
    }

    fn record(&self) {
        self.requests.inc();
        self.responses.inc();
        self.headers.observe(HEADERS.as_secs_f64());
        self.outcomes.inc();
        self.total.observe(TOTAL.as_secs_f64());
    }
}

fn pc_labels(route: &str) -> (PcLabels, PcStatus, PcOutcome) {
    let l = PcLabels {
        direction: "inbound",
        route: route.to_owned(),
    };
    let s = PcStatus {
        direction: "inbound",
        route: route.to_owned(),
        status_class: "2xx",
    };
    let o = PcOutcome {
        direction: "inbound",
        route: route.to_owned(),
        outcome: "success",
    };
    (l, s, o)
}

fn record_one(series: &HttpSeries) {
    series.record(Some(StatusCode::OK), HEADERS, Class::Success, TOTAL);
}

fn lookup_and_record(metrics: &HttpMetrics<HttpLabels>, labels: &HttpLabels) {
    metrics.record(labels, Some(StatusCode::OK), HEADERS, Class::Success, TOTAL);
}

fn recording(c: &mut Criterion) {
    let mut group = c.benchmark_group("metrics_record");
    let metrics = HttpMetrics::new();
    let l = labels("/users/{id}");
    let series = metrics.series(&l);
    group.bench_function("mesh_series", |b| b.iter(|| record_one(black_box(&series))));
    group.bench_function("mesh_lookup_and_record", |b| {
        b.iter(|| lookup_and_record(&metrics, black_box(&l)))
    });
    let bound = PcBound::new();
    group.bench_function("prometheus_client_bound", |b| {
        b.iter(|| black_box(&bound).record())
    });
    let pc = Pc::new();
    let (pl, ps, po) = pc_labels("/users/{id}");
    group.bench_function("prometheus_client_lookup", |b| {
        b.iter(|| pc.record(black_box(&pl), &ps, &po))
    });
    group.finish();
}

/// `threads` threads each record `iters` requests with `record`; the wall time of the slowest,
/// so that with no contention two threads take as long as one.
fn in_parallel(threads: usize, iters: u64, record: Arc<dyn Fn() + Send + Sync>) -> Duration {
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (barrier, record) = (barrier.clone(), record.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                for _ in 0..iters {
                    record();
                }
                start.elapsed()
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .max()
        .unwrap_or_default()
}

fn contention(c: &mut Criterion) {
    let mut group = c.benchmark_group("metrics_threads_same_labels");
    let metrics = HttpMetrics::new();
    let series = metrics.series(&labels("/users/{id}"));
    let bound = PcBound::new();
    let pc_family = Arc::new(Pc::new());
    for threads in [1, 2] {
        let s = series.clone();
        let mesh: Arc<dyn Fn() + Send + Sync> = Arc::new(move || record_one(&s));
        group.bench_function(format!("mesh_series/{threads}"), |b| {
            b.iter_custom(|iters| in_parallel(threads, iters, mesh.clone()))
        });
        let m = metrics.clone();
        let l = labels("/users/{id}");
        let mesh_lookup: Arc<dyn Fn() + Send + Sync> = Arc::new(move || lookup_and_record(&m, &l));
        group.bench_function(format!("mesh_lookup_and_record/{threads}"), |b| {
            b.iter_custom(|iters| in_parallel(threads, iters, mesh_lookup.clone()))
        });
        let p = bound.clone();
        let pc: Arc<dyn Fn() + Send + Sync> = Arc::new(move || p.record());
        group.bench_function(format!("prometheus_client_bound/{threads}"), |b| {
            b.iter_custom(|iters| in_parallel(threads, iters, pc.clone()))
        });
        let (family, (pl, ps, po)) = (pc_family.clone(), pc_labels("/users/{id}"));
        let pc_lookup: Arc<dyn Fn() + Send + Sync> = Arc::new(move || family.record(&pl, &ps, &po));
        group.bench_function(format!("prometheus_client_lookup/{threads}"), |b| {
            b.iter_custom(|iters| in_parallel(threads, iters, pc_lookup.clone()))
        });
    }
    group.finish();
}

/// `svc` with the one classification the metrics layer joins (it classified by itself before).
fn classified<S>(svc: S) -> Classifier<S, AutoClassify, ()> {
    ClassifyLayer::new(AutoClassify::new(), ()).layer(svc)
}

fn layer(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("metrics_layer");
    group.bench_function("bare", |b| {
        b.to_async(&rt).iter_custom(|iters| requests(bare(), iters))
    });
    // Standalone (the metrics layer classifies, as it did before the one classification):
    // `MetricsLayer::classifying`, a ClassifyLayer with the recorder as its listener.
    let metrics = HttpMetrics::new();
    let fixed =
        MetricsLayer::fixed(metrics.series(&labels("/fixed"))).classifying(AutoClassify::new());
    group.bench_function("mesh_fixed_series", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| requests(fixed.layer(bare()), iters))
    });
    // A tap nobody listens to: one atomic load per request.
    let tapped = MetricsLayer::fixed(metrics.series(&labels("/tapped")))
        .with_tap(Tap::default(), Direction::Inbound)
        .classifying(AutoClassify::new());
    group.bench_function("mesh_fixed_series_idle_tap", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| requests(tapped.layer(bare()), iters))
    });
    let route: Arc<str> = "/by-labels".into();
    let by_labels = MetricsLayer::new(metrics.clone(), move |_: &Request<()>| HttpLabels {
        route: Some(route.clone()),
        ..HttpLabels::new(Direction::Inbound)
    })
    .classifying(AutoClassify::new());
    group.bench_function("mesh_by_labels", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| requests(by_labels.layer(bare()), iters))
    });
    // Joining a classification made further in (as over a balancer).
    let joined = MetricsLayer::fixed(metrics.series(&labels("/joined")));
    group.bench_function("mesh_fixed_series_joined", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| requests(joined.layer(classified(bare())), iters))
    });
    group.finish();
}

fn exposition(c: &mut Criterion) {
    let mut group = c.benchmark_group("metrics_exposition_10k_label_sets");
    group.sample_size(10);
    let metrics = HttpMetrics::new();
    let pc = Pc::new();
    for i in 0..10_000 {
        let route = format!("/route/{i}");
        let series = metrics.series(&labels(&route));
        let (l, s, o) = pc_labels(&route);
        for _ in 0..3 {
            record_one(&series);
            pc.record(&l, &s, &o);
        }
    }
    let registry = Registry::default().with(metrics);
    let pc = pc.registry();
    group.bench_function("mesh", |b| b.iter(|| black_box(registry.encode().len())));
    group.bench_function("prometheus_client", |b| {
        b.iter(|| {
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, &pc).expect("encode");
            black_box(out.len())
        })
    });
    println!(
        "exposition sizes: mesh {} bytes, prometheus-client {} bytes",
        registry.encode().len(),
        {
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, &pc).expect("encode");
            out.len()
        }
    );
    group.finish();
}

criterion_group!(benches, recording, contention, layer, exposition);
criterion_main!(benches);
