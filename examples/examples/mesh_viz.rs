//! `mesh-viz`: the mesh as a person sees it: `stat`, `edges`, `tap`, `top` and a live
//! `dashboard` across every proxy. `cargo run --release --example mesh-viz -- --proxies
//! 127.0.0.1:4191,127.0.0.1:4192 stat deploy`.
//!
//! The work is `mesh_viz`'s; this is its command line. Exit codes: 0 when every proxy answered,
//! 3 when some did not (their rows say so, the rest are shown), 2 for a usage mistake, 1 when
//! nothing could be read at all.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand, ValueEnum};
use examples::proxy::Dur;
use mesh_viz::{
    Prometheus, Reading, Resource, ResourceRef, StatQuery, TapFilter, TapItem, Target, Top, edges,
    outcomes, scrape_all, stat, view,
};

/// Seeing the mesh: golden metrics, edges and live requests across every proxy.
#[derive(Debug, Parser)]
#[command(name = "mesh-viz", version)]
struct Args {
    /// The proxies' admin addresses (`host:port`), separated by commas.
    #[arg(long, global = true, value_delimiter = ',')]
    proxies: Vec<String>,
    /// A file of admin addresses, one or more per line (`#` comments).
    #[arg(long, global = true)]
    proxies_file: Option<std::path::PathBuf>,
    /// Find the proxies in Kubernetes: the meshed pods (as mesh-control's injector labels them)
    /// and their admin ports, through the API server of the kubeconfig (`KUBECONFIG`) or the
    /// pod's service account.
    #[arg(long, global = true)]
    kubernetes: bool,
    /// With --kubernetes: only pods in this namespace.
    #[arg(long, global = true, requires = "kubernetes")]
    kube_namespace: Option<String>,
    /// Read the counters from this Prometheus server (`http://host:port`) instead of
    /// scraping the proxies; it must scrape them.
    #[arg(long, global = true)]
    prometheus: Option<String>,
    /// Each proxy's (or Prometheus') deadline.
    #[arg(long, global = true, default_value = "1s")]
    deadline: Dur,
    /// Output: aligned tables, or JSON for programs.
    #[arg(short, long, global = true, value_enum, default_value = "table")]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Success rate, RPS, latency percentiles and meshed share per resource.
    Stat {
        /// Rows by `ns`, `deploy` or `pod`.
        #[arg(default_value = "deploy", value_parser = resource)]
        resource: Resource,
        /// Only calls to this resource: `deploy/NAME` (or just `NAME`), `pod/NAME`, `ns/NAME`;
        /// a name may carry its namespace (`deploy/shop/web`).
        #[arg(long)]
        to: Option<String>,
        /// Only calls from this resource.
        #[arg(long, conflicts_with = "to")]
        from: Option<String>,
        /// Only rows in this namespace.
        #[arg(short, long)]
        namespace: Option<String>,
        /// Between the two scrapes (or, with --prometheus, the window ending now).
        #[arg(long, default_value = "2s")]
        interval: Dur,
        /// With --prometheus: the window's start and end (Unix seconds) instead of the last
        /// `interval`.
        #[arg(long, requires = "end")]
        start: Option<f64>,
        /// With --prometheus: the window's end (Unix seconds).
        #[arg(long, requires = "start")]
        end: Option<f64>,
    },
    /// Who calls whom, with identities and mTLS, since the proxies started.
    Edges {
        /// Between `ns`, `deploy` or `pod`.
        #[arg(default_value = "deploy", value_parser = resource)]
        resource: Resource,
    },
    /// The live request stream across the proxies.
    Tap {
        #[command(flatten)]
        filter: Filter,
        /// Stop after this many requests.
        #[arg(long)]
        limit: Option<u64>,
        /// Stop after this long.
        #[arg(long = "for")]
        duration: Option<Dur>,
    },
    /// The busiest paths, live, refreshing in the terminal.
    Top {
        #[command(flatten)]
        filter: Filter,
        /// How often the table is redrawn.
        #[arg(long, default_value = "1s")]
        refresh: Dur,
        /// Stop after this many redraws (default: never).
        #[arg(long)]
        iterations: Option<u64>,
        /// Rows shown.
        #[arg(long, default_value_t = 20)]
        rows: usize,
    },
    /// A live web page: the topology, the stat table with sparklines, and live requests.
    Dashboard {
        /// Where to serve it.
        #[arg(long, default_value = "127.0.0.1:8084")]
        listen: std::net::SocketAddr,
        /// How often the proxies are scraped.
        #[arg(long, default_value = "2s")]
        refresh: Dur,
        /// How long one live-request stream lasts before the page reconnects.
        #[arg(long, default_value = "30s")]
        tap_stream: Dur,
    },
}

#[derive(Debug, clap::Args)]
struct Filter {
    /// Only this authority.
    #[arg(long)]
    authority: Option<String>,
    /// Only paths starting with this.
    #[arg(long)]
    path_prefix: Option<String>,
    /// Only this method.
    #[arg(long)]
    method: Option<String>,
    /// Only responses with this HTTP status.
    #[arg(long)]
    status: Option<u16>,
}

impl From<Filter> for TapFilter {
    fn from(f: Filter) -> Self {
        Self {
            authority: f.authority,
            path_prefix: f.path_prefix,
            method: f.method,
            status: f.status,
        }
    }
}

fn resource(s: &str) -> Result<Resource, String> {
    Resource::parse(s).ok_or_else(|| format!("{s:?} is not ns, deploy or pod"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(code) => code,
        Err(message) => {
            eprintln!("mesh-viz: {message}");
            ExitCode::from(1)
        }
    }
}

async fn targets(args: &Args) -> Result<Vec<Target>, String> {
    let mut targets: Vec<Target> = args.proxies.iter().map(|p| Target(p.clone())).collect();
    if args.kubernetes {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| format!("no Kubernetes API server: {e}"))?;
        let pods = mesh_control::proxies::meshed_pods(client, args.kube_namespace.as_deref())
            .await
            .map_err(|e| format!("cannot list the meshed pods: {e}"))?;
        for pod in pods {
            match pod.admin {
                Some(admin) => targets.push(Target(admin.to_string())),
                // Reported, not left out silently: it has no address to scrape yet.
                None => eprintln!(
                    "pod {}/{} ({}) has no IP yet: not scraped",
                    pod.namespace, pod.name, pod.phase
                ),
            }
        }
    }
    if let Some(file) = &args.proxies_file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        targets.extend(Target::parse_list(&text));
    }
    Ok(targets)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Two readings of the counters `interval` apart: from the proxies, or from Prometheus.
async fn reading(
    args: &Args,
    interval: Duration,
    window: Option<(f64, f64)>,
) -> Result<Reading, String> {
    let deadline = args.deadline.0;
    if let Some(url) = &args.prometheus {
        let prom = Prometheus::new(url, deadline).map_err(|e| e.to_string())?;
        let (start, end) = window.unwrap_or_else(|| {
            let end = unix_now();
            (end - interval.as_secs_f64(), end)
        });
        let before = prom.metrics_at(start).await.map_err(|e| e.to_string())?;
        let after = prom.metrics_at(end).await.map_err(|e| e.to_string())?;
        return Ok(Reading::between(
            &before,
            &after,
            Duration::from_secs_f64((end - start).max(0.0)),
        ));
    }
    let targets = targets(args).await?;
    if targets.is_empty() {
        return Err(
            "no proxies: give --proxies, --proxies-file, --kubernetes or --prometheus".into(),
        );
    }
    let before = scrape_all(&targets, deadline).await;
    let started = tokio::time::Instant::now();
    if interval.is_zero() {
        return Ok(Reading::between(&[], &outcomes(&before), Duration::ZERO));
    }
    tokio::time::sleep(interval).await;
    let after = scrape_all(&targets, deadline).await;
    Ok(Reading::between(
        &outcomes(&before),
        &outcomes(&after),
        started.elapsed(),
    ))
}

fn exit_for(reading: &Reading) -> ExitCode {
    match reading.proxies.iter().filter(|p| p.error.is_some()).count() {
        0 => ExitCode::SUCCESS,
        n if n == reading.proxies.len() => ExitCode::from(1),
        _ => ExitCode::from(3),
    }
}

fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(json) => println!("{json}"),
        Err(e) => eprintln!("mesh-viz: {e}"),
    }
}

async fn run(args: Args) -> Result<ExitCode, String> {
    match &args.command {
        Command::Stat {
            resource,
            to,
            from,
            namespace,
            interval,
            start,
            end,
        } => {
            let window = start.zip(*end);
            let reading = reading(&args, interval.0, window).await?;
            let query = StatQuery {
                by: *resource,
                to: to.as_deref().map(ResourceRef::parse),
                from: from.as_deref().map(ResourceRef::parse),
                namespace: namespace.clone(),
            };
            let rows = stat(&reading, &query);
            match args.output {
                Output::Json => print_json(&serde_json::json!({
                    "rows": rows,
                    "proxies": reading.proxies,
                    "interval_seconds": reading.interval.as_secs_f64(),
                })),
                Output::Table => {
                    print!("{}", view::stat_table(&rows));
                    eprint!("{}", view::missing_proxies(&reading));
                }
            }
            Ok(exit_for(&reading))
        }
        Command::Edges { resource } => {
            let reading = reading(&args, Duration::ZERO, None).await?;
            let edges = edges(&reading, *resource);
            match args.output {
                Output::Json => {
                    print_json(&serde_json::json!({ "edges": edges, "proxies": reading.proxies }))
                }
                Output::Table => {
                    print!("{}", view::edges_table(&edges));
                    eprint!("{}", view::missing_proxies(&reading));
                }
            }
            Ok(exit_for(&reading))
        }
        Command::Tap { .. } | Command::Top { .. } => tap_or_top(args).await,
        Command::Dashboard {
            listen,
            refresh,
            tap_stream,
        } => {
            let targets = targets(&args).await?;
            if targets.is_empty() {
                return Err("no proxies: give --proxies, --proxies-file or --kubernetes".into());
            }
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            println!("dashboard on http://{addr}/ ({} proxies)", targets.len());
            let mut config = mesh_viz::dashboard::DashboardConfig::new(targets);
            config.refresh = refresh.0;
            config.tap_stream = tap_stream.0;
            config.deadline = args.deadline.0;
            mesh_viz::dashboard::serve(listener, config).await;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn tap_or_top(args: Args) -> Result<ExitCode, String> {
    let targets = targets(&args).await?;
    if targets.is_empty() {
        return Err("no proxies: give --proxies, --proxies-file or --kubernetes".into());
    }
    // Each line names its proxy's workload: one scrape says which that is.
    let scrapes = scrape_all(&targets, args.deadline.0).await;
    let labelled = scrapes
        .iter()
        .map(|s| {
            (
                s.target.clone(),
                s.result.as_ref().ok().map(|m| m.workload.clone()),
            )
        })
        .collect();
    let json = matches!(args.output, Output::Json);
    match args.command {
        Command::Tap {
            filter,
            limit,
            duration,
        } => {
            let mut rx = mesh_viz::tap::tap(labelled, filter.into(), 1024, args.deadline.0);
            let stop = tokio::time::sleep(duration.map_or(Duration::MAX / 4, |d| d.0));
            tokio::pin!(stop);
            let mut seen = 0;
            loop {
                let item = tokio::select! {
                    _ = &mut stop => break,
                    item = rx.recv() => match item { Some(item) => item, None => break },
                };
                if json {
                    println!("{}", serde_json::to_string(&item).unwrap_or_default());
                } else {
                    println!("{}", view::tap_line(&item));
                }
                if matches!(item, TapItem::Event { .. }) {
                    seen += 1;
                    if limit.is_some_and(|l| seen >= l) {
                        break;
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Top {
            filter,
            refresh,
            iterations,
            rows,
        } => {
            let mut rx = mesh_viz::tap::tap(labelled, filter.into(), 1024, args.deadline.0);
            let mut top = Top::new(10_000);
            let mut tick = tokio::time::interval(refresh.0);
            tick.tick().await;
            let mut drawn = 0;
            let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
            // Once every proxy's stream has failed, only the redraws are left.
            let mut streaming = true;
            loop {
                tokio::select! {
                    item = rx.recv(), if streaming => match item {
                        Some(TapItem::Event { event, .. }) => top.add(&event),
                        Some(other) => eprintln!("{}", view::tap_line(&other)),
                        None => streaming = false,
                    },
                    _ = tick.tick() => {
                        let busiest = top.busiest(rows);
                        if json {
                            println!("{}", serde_json::to_string(&busiest).unwrap_or_default());
                        } else {
                            if tty {
                                // Clear the screen and go home, as `top` does.
                                print!("\x1b[2J\x1b[H");
                            }
                            print!("{}", view::top_table(&busiest));
                            if top.others > 0 {
                                println!("({} requests on paths past the first 10,000)", top.others);
                            }
                        }
                        drawn += 1;
                        if iterations.is_some_and(|n| drawn >= n) {
                            return Ok(ExitCode::SUCCESS);
                        }
                    }
                }
            }
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}
