//! mesh-viz against real proxies: `stat` counts exactly what was sent (summed over two
//! replicas, percentiles within their bucket), a real Prometheus scraping the same proxies gives
//! the same numbers, `edges` names both identities, `tap` across two proxies sees one request on
//! both sides and filters, and proxies that are unreachable, answer garbage or answer slowly are
//! marked while the rest are shown.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_core::test_util::{HttpVersion, TestClient};
use mesh_viz::{
    Prometheus, Reading, Resource, ResourceRef, StatQuery, StatRow, TapFilter, TapItem, Target,
    edges, outcomes, scrape_all, stat,
};
use support::viz::{FAST, SLOW, Topology};
use support::{example_binary, get, id};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEADLINE: Duration = Duration::from_secs(2);

/// What the tests send: (path, times, status).
const TRAFFIC: [(&str, usize, u16); 4] = [
    ("/ok", 90, 200),
    ("/slow", 10, 200),
    ("/missing", 6, 404),
    ("/fail", 4, 500),
];

/// Sends [`TRAFFIC`] through `web`'s outbound listener over four connections at once.
async fn send_traffic(topology: &Topology) {
    let outbound = topology.web.outbound.expect("outbound");
    let mut tasks = Vec::new();
    for lane in 0..4 {
        tasks.push(tokio::spawn(async move {
            let mut conn = TestClient::connect(outbound, HttpVersion::Http1)
                .await
                .expect("connect");
            for (path, times, status) in TRAFFIC {
                for i in 0..times {
                    if i % 4 == lane {
                        assert_eq!(get(&mut conn, "api", path).await.0, status, "{path}");
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("traffic");
    }
}

fn total() -> u64 {
    TRAFFIC.iter().map(|t| t.1 as u64).sum()
}

fn row<'a>(rows: &'a [StatRow], name: &str) -> &'a StatRow {
    rows.iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no row {name} in {rows:#?}"))
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A real Prometheus server scraping `targets` every second.
struct PrometheusServer {
    child: tokio::process::Child,
    url: String,
    _dir: PathBuf,
}

impl PrometheusServer {
    async fn start(dir: &Path, targets: &[Target]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = dir.join("prometheus");
        std::fs::create_dir_all(&dir).expect("dir");
        let list: Vec<String> = targets.iter().map(|t| format!("'{}'", t.0)).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n\
             scrape_configs:\n  - job_name: mesh\n    static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        );
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config).expect("config");
        let child = tokio::process::Command::new("prometheus")
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("prometheus starts (Debian's `prometheus` package)");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    fn api(&self) -> Prometheus {
        Prometheus::new(&self.url, DEADLINE).expect("url")
    }

    /// Waits until every target has been scraped (successfully) after `after` (Unix seconds).
    async fn scraped_after(&self, after: f64, targets: usize) {
        let api = self.api();
        tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                // `timestamp(up)`: when each target was last scraped; `up`: whether it worked.
                let now = unix_now();
                if let (Ok(at), Ok(up)) = (
                    api.query("timestamp(up)", now).await,
                    api.query("up", now).await,
                ) {
                    if at.len() == targets
                        && at.iter().all(|s| s.value > after)
                        && up.iter().all(|s| s.value == 1.0)
                    {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await
        .expect("Prometheus scrapes every proxy");
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_counts_what_was_sent_and_prometheus_gives_the_same_numbers() {
    let topology = Topology::start("viz-stat").await;
    let targets = topology.targets();
    let prometheus = PrometheusServer::start(&topology.mesh.dir, &targets).await;
    prometheus.scraped_after(0.0, targets.len()).await;

    let before = scrape_all(&targets, DEADLINE).await;
    let t0 = unix_now();
    let started = tokio::time::Instant::now();
    send_traffic(&topology).await;
    let after = scrape_all(&targets, DEADLINE).await;
    let reading = Reading::between(&outcomes(&before), &outcomes(&after), started.elapsed());
    assert!(
        reading.proxies.iter().all(|p| p.error.is_none()),
        "{reading:#?}"
    );

    // By deployment: the two api replicas summed, web receiving nothing.
    let rows = stat(&reading, &StatQuery::default());
    let api = row(&rows, "test/api");
    assert_eq!(api.requests, total());
    assert_eq!((api.proxies_answering, api.proxies), (2, 2));
    assert_eq!(api.counts.successes, total() - 4, "only the 500s fail");
    assert_eq!(api.success_rate, Some(106.0 / 110.0));
    assert_eq!(api.meshed, Some(1.0), "every call came over mTLS");
    let codes: Vec<(&str, u64)> = api
        .counts
        .status_codes
        .iter()
        .map(|(c, n)| (c.as_str(), *n))
        .collect();
    assert_eq!(codes, [("200", 100), ("404", 6), ("500", 4)]);
    assert_eq!(row(&rows, "test/web").requests, 0);
    // Percentiles within the bucket of what the app took: 100 fast requests, 10 slow ones.
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let p50 = api.p50_ms.expect("p50");
    assert!(
        (10.0..=25.0).contains(&p50) && p50 >= ms(FAST) - 2.0,
        "{p50}"
    );
    for p in [api.p95_ms, api.p99_ms] {
        let p = p.expect("percentile");
        assert!((100.0..=250.0).contains(&p) && p >= ms(SLOW) - 20.0, "{p}");
    }

    // By pod: both replicas served, and their rows add up.
    let pods = stat(
        &reading,
        &StatQuery {
            by: Resource::Pod,
            ..StatQuery::default()
        },
    );
    let (a, b) = (row(&pods, "test/api-0"), row(&pods, "test/api-1"));
    assert!(a.requests > 0 && b.requests > 0, "{pods:#?}");
    assert_eq!(a.requests + b.requests, total());

    // --to and --from: the caller's and the callee's view of the same calls.
    let to = stat(
        &reading,
        &StatQuery {
            to: Some(ResourceRef::parse("api")),
            ..StatQuery::default()
        },
    );
    assert_eq!(row(&to, "test/web").requests, total());
    assert_eq!(row(&to, "test/api").requests, 0);
    let from = stat(
        &reading,
        &StatQuery {
            from: Some(ResourceRef::parse("deploy/test/web")),
            ..StatQuery::default()
        },
    );
    assert_eq!(row(&from, "test/api").requests, total());

    // Edges: web calls api, both identities known, over mTLS.
    let found = edges(&reading, Resource::Deployment);
    assert_eq!(found.len(), 1, "{found:#?}");
    let edge = &found[0];
    assert_eq!(
        (edge.src.as_str(), edge.dst.as_str()),
        ("test/web", "test/api")
    );
    assert_eq!(edge.client_id.as_deref(), Some(id("web").as_str()));
    assert_eq!(edge.server_id.as_deref(), Some(id("api").as_str()));
    assert!(edge.mtls);
    assert_eq!(edge.requests, total());

    // The same window through Prometheus: it scraped before the traffic and after.
    let t_done = unix_now();
    prometheus.scraped_after(t_done, targets.len()).await;
    let t1 = unix_now();
    let api_prom = prometheus.api();
    let from_prom = Reading::between(
        &api_prom.metrics_at(t0).await.expect("query"),
        &api_prom.metrics_at(t1).await.expect("query"),
        Duration::from_secs_f64(t1 - t0),
    );
    let prom_rows = stat(&from_prom, &StatQuery::default());
    for name in ["test/api", "test/web"] {
        let (direct, prom) = (row(&rows, name), row(&prom_rows, name));
        assert_eq!(direct.counts, prom.counts, "{name}");
        assert_eq!(
            (
                direct.p50_ms,
                direct.p95_ms,
                direct.p99_ms,
                direct.meshed,
                direct.success_rate
            ),
            (
                prom.p50_ms,
                prom.p95_ms,
                prom.p99_ms,
                prom.meshed,
                prom.success_rate
            ),
            "{name}"
        );
    }
    assert_eq!(edges(&from_prom, Resource::Deployment), found);

    // The command line, both ways.
    let viz = example_binary("mesh-viz");
    let list: Vec<&str> = targets.iter().map(|t| t.0.as_str()).collect();
    let (code, out, err) = support::run(
        viz.to_str().expect("path"),
        &[
            "--proxies",
            &list.join(","),
            "stat",
            "deploy",
            "--interval",
            "100ms",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let header = out.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("NAME") && header.contains("SUCCESS") && header.contains("P99"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("test/api") && l.contains("2/2")),
        "{out}"
    );
    let (code, out, err) = support::run(
        viz.to_str().expect("path"),
        &[
            "--prometheus",
            &prometheus.url,
            "-o",
            "json",
            "stat",
            "deploy",
            "--start",
            &format!("{t0:.3}"),
            "--end",
            &format!("{t1:.3}"),
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let api_json = json["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["name"] == "test/api")
        .expect("api row");
    assert_eq!(api_json["requests"], total());
    // (serde_json reads floats back to within an ulp or two.)
    let p99 = api_json["p99_ms"].as_f64().expect("p99");
    assert!((p99 - api.p99_ms.expect("p99")).abs() < 1e-9, "{p99}");
    let (code, out, err) = support::run(
        viz.to_str().expect("path"),
        &["--proxies", &list.join(","), "edges"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("test/web") && l.contains("test/api") && l.contains("yes")),
        "{out}"
    );
}

/// Waits until each of `proxies` has a tap listener.
async fn tapping(proxies: &[&examples::proxy::Running]) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !proxies.iter().all(|p| p.tap().is_listening()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the taps subscribe");
}

/// The next `n` tap events from `rx`.
async fn events(
    rx: &mut tokio::sync::mpsc::Receiver<TapItem>,
    n: usize,
) -> Vec<(String, mesh_viz::TapEvent)> {
    let mut out = Vec::new();
    while out.len() < n {
        let item = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an event in time")
            .expect("the tap goes on");
        match item {
            TapItem::Event {
                workload, event, ..
            } => {
                out.push((workload.expect("workload").pod, *event));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tap_across_two_proxies_sees_a_request_on_both_sides_and_filters() {
    let topology = Topology::start("viz-tap").await;
    let scrapes = scrape_all(&topology.targets(), DEADLINE).await;
    let labelled: Vec<_> = scrapes
        .iter()
        .map(|s| {
            (
                s.target.clone(),
                s.result.as_ref().ok().map(|m| m.workload.clone()),
            )
        })
        .collect();
    let by_prefix = TapFilter {
        path_prefix: Some("/tapped".into()),
        ..TapFilter::default()
    };
    let mut all = mesh_viz::tap::tap(labelled.clone(), by_prefix.clone(), 64, DEADLINE);
    let mut not_found = mesh_viz::tap::tap(
        labelled.clone(),
        TapFilter {
            status: Some(404),
            ..by_prefix
        },
        64,
        DEADLINE,
    );
    // A reader that never reads: the proxies must not wait for it.
    let stalled = mesh_viz::tap::tap(labelled, TapFilter::default(), 1, DEADLINE);
    tapping(&[&topology.web, &topology.api[0], &topology.api[1]]).await;

    let outbound = topology.web.outbound.expect("outbound");
    let mut conn = TestClient::connect(outbound, HttpVersion::Http1)
        .await
        .expect("connect");
    assert_eq!(get(&mut conn, "api", "/other").await.0, 200);
    assert_eq!(get(&mut conn, "api", "/tapped").await.0, 200);
    assert_eq!(get(&mut conn, "api", "/tapped-missing").await.0, 404);

    let seen = events(&mut all, 4).await;
    let mut sides: Vec<(String, String, String, Option<u16>)> = seen
        .iter()
        .map(|(pod, e)| (pod.clone(), e.direction.clone(), e.path.clone(), e.status))
        .collect();
    sides.sort();
    // Each request once at web's outbound and once at the api replica that served it.
    let web_side: Vec<_> = sides.iter().filter(|s| s.0 == "web-0").collect();
    assert_eq!(web_side.len(), 2, "{sides:?}");
    assert!(web_side.iter().all(|s| s.1 == "outbound"));
    let api_side: Vec<_> = sides.iter().filter(|s| s.0.starts_with("api-")).collect();
    assert_eq!(api_side.len(), 2, "{sides:?}");
    assert!(api_side.iter().all(|s| s.1 == "inbound"));
    for (_, e) in &seen {
        if e.direction == "inbound" {
            assert_eq!(
                e.peer.as_deref(),
                Some(id("web").as_str()),
                "the client's identity"
            );
        }
    }
    let missing = events(&mut not_found, 2).await;
    assert!(
        missing
            .iter()
            .all(|(_, e)| e.path == "/tapped-missing" && e.status == Some(404)),
        "{missing:?}"
    );

    // Hundreds of requests while the stalled reader reads nothing: all served.
    for _ in 0..500 {
        assert_eq!(get(&mut conn, "api", "/ok").await.0, 200);
    }
    drop(stalled);

    // `top` over the live stream, from the command line.
    let list: Vec<String> = topology.targets().into_iter().map(|t| t.0).collect();
    let viz = example_binary("mesh-viz");
    let top = tokio::spawn({
        let viz = viz.clone();
        let list = list.join(",");
        async move {
            support::run(
                viz.to_str().expect("path"),
                &[
                    "--proxies",
                    &list,
                    "-o",
                    "json",
                    "top",
                    "--refresh",
                    "1s",
                    "--iterations",
                    "3",
                ],
            )
            .await
        }
    });
    let traffic = tokio::spawn(async move {
        for _ in 0..40 {
            let _ = get(&mut conn, "api", "/top-path").await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let (code, out, err) = top.await.expect("top");
    traffic.await.expect("traffic");
    assert_eq!(code, 0, "{err}");
    let last: serde_json::Value =
        serde_json::from_str(out.lines().last().unwrap_or_default()).expect("JSON rows");
    assert!(
        last.as_array()
            .expect("rows")
            .iter()
            .any(|r| r["path"] == "/top-path" && r["count"].as_u64() > Some(0)),
        "{out}"
    );
}

/// A server that answers every connection with `answer` after `delay` (forever: never).
async fn fake_admin(answer: &'static [u8], delay: Option<Duration>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = tcp.read(&mut buf).await;
                match delay {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending::<()>().await,
                }
                let _ = tcp.write_all(answer).await;
            });
        }
    });
    addr.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_garbage_and_slow_proxies_are_marked_and_the_rest_shown() {
    let topology = Topology::start("viz-faulty").await;
    send_traffic(&topology).await;
    let closed = mesh_core::test_util::closed_port()
        .await
        .expect("port")
        .to_string();
    let garbage = fake_admin(
        b"HTTP/1.1 200 OK\r\ncontent-length: 31\r\n\r\n<html>this is not metrics</html>",
        Some(Duration::ZERO),
    )
    .await;
    let slow = fake_admin(b"", None).await;
    let mut targets = topology.targets();
    for bad in [&closed, &garbage, &slow] {
        targets.push(Target(bad.clone()));
    }

    let scrapes = scrape_all(&targets, Duration::from_secs(1)).await;
    let kinds: Vec<&str> = scrapes
        .iter()
        .map(|s| s.result.as_ref().map_or_else(|e| e.kind(), |_| "ok"))
        .collect();
    assert_eq!(
        kinds,
        ["ok", "ok", "ok", "unreachable", "garbage", "timeout"]
    );
    let reading = Reading::between(&[], &outcomes(&scrapes), Duration::ZERO);
    let rows = stat(&reading, &StatQuery::default());
    assert_eq!(
        row(&rows, "test/api").requests,
        total(),
        "the rest are all there"
    );
    assert_eq!(
        reading.proxies.iter().filter(|p| p.error.is_some()).count(),
        3
    );

    let list: Vec<String> = targets.iter().map(|t| t.0.clone()).collect();
    let viz = example_binary("mesh-viz");
    let (code, out, err) = support::run(
        viz.to_str().expect("path"),
        &[
            "--proxies",
            &list.join(","),
            "--deadline",
            "1s",
            "stat",
            "--interval",
            "100ms",
        ],
    )
    .await;
    assert_eq!(code, 3, "some proxies did not answer: {out}{err}");
    assert!(out.lines().any(|l| l.starts_with("test/api")), "{out}");
    for (addr, kind) in [
        (&closed, "unreachable"),
        (&garbage, "garbage"),
        (&slow, "timeout"),
    ] {
        assert!(
            err.lines().any(|l| l.contains(addr.as_str())
                && l.contains("not answering")
                && l.contains(kind)),
            "{addr} {kind}: {err}"
        );
    }
}
