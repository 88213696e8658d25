//! The meshed demo: `cargo run --release --example demo`.
//!
//! Four apps on loopback, each with its own proxy (inbound and outbound sides): A calls B and
//! C over HTTP; B and C answer by calling each other over gRPC. B has two replicas, and b-1 is
//! slower and fails 30 % of its requests. All traffic between proxies is mTLS, with
//! certificates minted at start by the development CA. Every few seconds the demo prints
//! golden metrics per deployment, per pod and per edge (read from the proxies' `/metrics` by
//! mesh-viz, the same code as `mesh-viz stat` and `edges`), and what A's balancer thinks of
//! B's replicas: watch it steer around b-1, and retries (within their budget) keep A's success
//! rate high. It serves mesh-viz's dashboard for the running demo and says where.
//!
//! Options: `--duration 60s` (default: until Ctrl-C), `--interval 5s`, `--tap` (print A's
//! requests live), `--rps 100` (A's request rate), `--dashboard 127.0.0.1:8084`.

mod apps;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use examples::proxy::{Config, Proxy, Running};
use mesh_core::Identity;
use mesh_metrics::tap::TapFilter;
use mesh_tls::DevCa;
use mesh_viz::{Reading, Resource, StatQuery, Target, edges, outcomes, scrape_all, stat, view};

use apps::Behaviour;

/// The mesh demo: four meshed apps on loopback and their golden metrics.
#[derive(Debug, Parser)]
#[command(name = "demo")]
struct Args {
    /// Stop after this long (e.g. 30s, 2m); without it, run until Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// How often to print the tables.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    interval: Duration,
    /// Print A's requests as they complete (from the proxy's tap).
    #[arg(long)]
    tap: bool,
    /// A's requests per second, in all.
    #[arg(long, default_value_t = 100)]
    rps: u32,
    /// Where to serve the dashboard (another free port if this one is taken).
    #[arg(long, default_value = "127.0.0.1:8084")]
    dashboard: std::net::SocketAddr,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 0.001)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1.0)
    } else if let Some(m) = text.strip_suffix('m') {
        (m, 60.0)
    } else {
        return Err(format!(
            "{text:?}: write a duration with a unit, like 30s or 2m"
        ));
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration"))?;
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("{text:?}: {e}"))
}

const DOMAIN: &str = "mesh.local";

fn identity(deployment: &str) -> Identity {
    Identity::parse(&format!("spiffe://{DOMAIN}/ns/demo/sa/{deployment}"))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// One meshed pod: its names and its proxy.
struct Pod {
    pod: &'static str,
    proxy: Running,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("mesh-demo-{}", std::process::id()));
    let result = run(&args, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run(args: &Args, dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let ca = DevCa::new(DOMAIN)?;
    for deployment in ["a", "b", "c"] {
        ca.issue(&identity(deployment), Duration::from_secs(24 * 3600))?
            .write(dir.join("certs").join(deployment))?;
    }

    // The apps first (their proxies forward to them), then the proxies.
    let frontend = apps::start_frontend().await?;
    let healthy = |pod| Behaviour {
        pod,
        delay: Duration::from_millis(1),
        fail_per_ten: 0,
    };
    let (b0, b0_app) = apps::start(healthy("b-0"), "c").await?;
    let (b1, b1_app) = apps::start(
        Behaviour {
            pod: "b-1",
            delay: Duration::from_millis(40),
            fail_per_ten: 3,
        },
        "c",
    )
    .await?;
    let (c0, c0_app) = apps::start(healthy("c-0"), "b").await?;

    // Each service's endpoints are in a file the proxies watch; it is written once the
    // inbound ports are known (discovery picks it up live).
    let endpoints = |service: &str| dir.join(format!("{service}.endpoints"));
    let a = start_pod(
        dir,
        "a",
        "a-0",
        frontend,
        &[],
        &[("b", &endpoints("b")), ("c", &endpoints("c"))],
    )
    .await?;
    let b_0 = start_pod(dir, "b", "b-0", b0, &["a", "c"], &[("c", &endpoints("c"))]).await?;
    let b_1 = start_pod(dir, "b", "b-1", b1, &["a", "c"], &[("c", &endpoints("c"))]).await?;
    let c_0 = start_pod(dir, "c", "c-0", c0, &["a", "b"], &[("b", &endpoints("b"))]).await?;
    let inbound = |pod: &Pod| pod.proxy.inbound.map(|a| a.to_string()).unwrap_or_default();
    std::fs::write(
        endpoints("b"),
        format!("{}\n{}\n", inbound(&b_0), inbound(&b_1)),
    )?;
    std::fs::write(endpoints("c"), format!("{}\n", inbound(&c_0)))?;
    b0_app.connect_peer(outbound(&b_0)?)?;
    b1_app.connect_peer(outbound(&b_1)?)?;
    c0_app.connect_peer(outbound(&c_0)?)?;
    let pods = vec![a, b_0, b_1, c_0];

    println!(
        "mesh demo: A calls B and C over HTTP; B and C call each other over gRPC; all through"
    );
    println!(
        "their proxies, with mTLS between proxies (certificates from a development CA in {}).",
        dir.display()
    );
    println!("b-1 is slow (+40 ms) and fails 30 % of its requests. Admin pages:");
    for pod in &pods {
        println!(
            "  {:<4} http://{}/metrics  /endpoints  /tap",
            pod.pod, pod.proxy.admin
        );
    }
    let targets: Vec<Target> = pods
        .iter()
        .map(|p| Target(p.proxy.admin.to_string()))
        .collect();
    let list = dir.join("proxies.txt");
    let addrs: Vec<&str> = targets.iter().map(|t| t.0.as_str()).collect();
    std::fs::write(&list, addrs.join("\n") + "\n")?;
    let dashboard = match tokio::net::TcpListener::bind(args.dashboard).await {
        Ok(listener) => listener,
        Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0").await?,
    };
    println!(
        "Dashboard: open http://{}/ (the topology, the stat table, live requests).",
        dashboard.local_addr()?
    );
    println!("Or from another terminal, with the same aggregation:");
    println!(
        "  cargo run --release --example mesh-viz -- --proxies-file {} stat deploy   (or: edges, tap, top)",
        list.display()
    );
    let dashboard = tokio::spawn(mesh_viz::dashboard::serve(
        dashboard,
        mesh_viz::dashboard::DashboardConfig::new(targets.clone()),
    ));
    println!("Press Ctrl-C to stop.\n");
    // Give discovery a moment to read the endpoint files.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let workers = 8;
    let pause = Duration::from_secs_f64(workers as f64 / f64::from(args.rps.max(1)));
    let load = apps::generate_load(outbound(&pods[0])?, workers, pause);
    let tap = args.tap.then(|| spawn_tap(&pods[0].proxy));

    let stop = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    tokio::pin!(stop);
    let started = tokio::time::Instant::now();
    let mut ticker = tokio::time::interval_at(started + args.interval, args.interval);
    let mut before = (
        outcomes(&scrape_all(&targets, SCRAPE_DEADLINE).await),
        started,
    );
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let now = outcomes(&scrape_all(&targets, SCRAPE_DEADLINE).await);
                let reading = Reading::between(&before.0, &now, before.1.elapsed());
                before = (now, tokio::time::Instant::now());
                print_tables(&pods, &reading, started.elapsed());
            }
            () = &mut stop => break,
            _ = tokio::signal::ctrl_c(), if args.duration.is_some() => break,
        }
    }
    dashboard.abort();

    println!("stopping: draining the proxies");
    for task in load {
        task.abort();
    }
    if let Some(tap) = tap {
        tap.abort();
    }
    for pod in pods {
        pod.proxy.shutdown().await;
    }
    Ok(())
}

fn outbound(pod: &Pod) -> Result<std::net::SocketAddr, &'static str> {
    pod.proxy.outbound.ok_or("the pod has no outbound listener")
}

/// Starts the proxy of one pod: inbound in front of `app` admitting `callers`, outbound to
/// `services` (name, endpoints file).
async fn start_pod(
    dir: &Path,
    deployment: &'static str,
    pod: &'static str,
    app: std::net::SocketAddr,
    callers: &[&str],
    services: &[(&str, &PathBuf)],
) -> Result<Pod, Box<dyn std::error::Error>> {
    let allow: Vec<String> = callers
        .iter()
        .map(|c| format!("{:?}", identity(c).as_str()))
        .collect();
    let mut text = format!(
        "[workload]\nnamespace = \"demo\"\ndeployment = \"{deployment}\"\npod = \"{pod}\"\n\n\
         [identity]\ndir = {certs:?}\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [inbound]\nlisten = \"127.0.0.1:0\"\napp = \"{app}\"\nauthorize = [{allow}]\n\n\
         [outbound]\nlisten = \"127.0.0.1:0\"\n",
        certs = dir.join("certs").join(deployment),
        allow = allow.join(", "),
    );
    for (service, file) in services {
        text.push_str(&format!(
            "\n[[service]]\nname = \"{service}\"\nauthorities = [\"{service}\"]\nidentity = {:?}\n\
             endpoints_file = {file:?}\ntimeout = \"5s\"\n[service.retry]\nattempts = 3\nbudget_ratio = 0.2\n",
            identity(service).as_str(),
        ));
    }
    let file = dir.join(format!("{pod}.toml"));
    std::fs::write(&file, &text)?;
    let config = Config::load(&file)?;
    let proxy = Proxy::start(config).await?;
    Ok(Pod { pod, proxy })
}

/// How long the demo waits for one proxy's `/metrics`.
const SCRAPE_DEADLINE: Duration = Duration::from_secs(1);

/// The tables of one interval, from mesh-viz: per deployment and per pod (what the inbound
/// proxies served), the edges (who called whom, mTLS), and A's balancer's view of B.
fn print_tables(pods: &[Pod], reading: &Reading, elapsed: Duration) {
    let mut out = format!(
        "── after {:.0}s, the last {:.0}s ──────────────────────────────────────────────\n",
        elapsed.as_secs_f64(),
        reading.interval.as_secs_f64()
    );
    for by in [Resource::Deployment, Resource::Pod] {
        let query = StatQuery {
            by,
            ..StatQuery::default()
        };
        out.push_str(&view::stat_table(&stat(reading, &query)));
        out.push('\n');
    }
    out.push_str(&view::edges_table(&edges(reading, Resource::Deployment)));
    out.push_str(&view::missing_proxies(reading));
    out.push('\n');
    out.push_str("A's balancer for b:\n");
    for service in pods[0].proxy.endpoints() {
        if service.service != "b" {
            continue;
        }
        for e in service.endpoints {
            let name = pods
                .iter()
                .find(|p| p.proxy.inbound == Some(e.addr))
                .map_or("?", |p| p.pod);
            out.push_str(&format!(
                "  {name:<4} {:<16} {:<8} latency estimate {:>7.1}ms  in flight {:>2}  failures in a row {}\n",
                e.addr.to_string(),
                format!("{:?}", e.status).to_lowercase(),
                e.ewma.as_secs_f64() * 1e3,
                e.outstanding,
                e.consecutive_failures,
            ));
        }
    }
    println!("{out}");
}

/// Prints A's requests as they complete.
fn spawn_tap(proxy: &Running) -> tokio::task::JoinHandle<()> {
    let mut listener = proxy.tap().subscribe(TapFilter::all(), 1024);
    tokio::spawn(async move {
        while let Some(event) = std::future::poll_fn(|cx| listener.poll_recv(cx)).await {
            let status = event
                .status
                .map_or("-".to_owned(), |s| s.as_u16().to_string());
            println!(
                "tap {:<8} {} {}{} -> {} in {:.1}ms ({:?})",
                event.direction.as_str(),
                event.method,
                event.authority.as_deref().unwrap_or("-"),
                event.path,
                status,
                event.total_latency.as_secs_f64() * 1e3,
                event.outcome,
            );
        }
    })
}
