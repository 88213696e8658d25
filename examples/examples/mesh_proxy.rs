//! The reference proxy: `cargo run --release --example mesh-proxy -- --config FILE`.
//!
//! Exit codes: 0 after a clean shutdown (SIGTERM or Ctrl-C, in-flight requests drained), 2
//! for a configuration mistake (the message names file, line and key), 1 when the proxy
//! cannot start (a port taken, credentials unreadable).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use examples::proxy::{Config, Proxy};

/// The mesh's reference sidecar proxy.
#[derive(Debug, Parser)]
#[command(name = "mesh-proxy", version)]
struct Args {
    /// The TOML configuration (see examples/mesh-proxy.toml for every setting).
    #[arg(long, short, required_unless_present = "config_env")]
    config: Option<PathBuf>,
    /// Read the configuration from this environment variable instead (as the injector
    /// writes it). `MESH_POD_NAME` and `MESH_POD_NAMESPACE`, when set, fill `[workload]`.
    #[arg(long, conflicts_with = "config")]
    config_env: Option<String>,
    /// Only check the configuration, then exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    examples::cli::init_logging();
    let (loaded, source) = match (&args.config, &args.config_env) {
        (Some(path), _) => (Config::load(path), path.display().to_string()),
        (None, Some(var)) => {
            let text = std::env::var(var).unwrap_or_default();
            (
                Config::parse(&text, std::path::Path::new(&format!("${var}"))),
                format!("${var}"),
            )
        }
        (None, None) => {
            eprintln!("mesh-proxy: give --config FILE or --config-env VAR");
            return ExitCode::from(2);
        }
    };
    let mut config = match loaded {
        Ok(config) => config,
        Err(e) => {
            eprintln!("mesh-proxy: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    // The downward API's pod name and namespace (a pod's name is not known when it is
    // injected).
    if let Ok(pod) = std::env::var("MESH_POD_NAME") {
        config.workload.pod = pod;
    }
    if let Ok(namespace) = std::env::var("MESH_POD_NAMESPACE") {
        config.workload.namespace = namespace;
    }
    if args.check {
        println!("{source}: ok");
        return ExitCode::SUCCESS;
    }
    let runtime = match config.runtime.build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("mesh-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config))
}

async fn run(config: Config) -> ExitCode {
    let running = match Proxy::start(config).await {
        Ok(running) => running,
        Err(e) => {
            eprintln!("mesh-proxy: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    // One line a supervisor (or a test) can wait for.
    let show = |addr: Option<std::net::SocketAddr>| addr.map_or("-".to_owned(), |a| a.to_string());
    println!(
        "mesh-proxy ready: admin={} inbound={} outbound={}",
        running.admin,
        show(running.inbound),
        show(running.outbound)
    );
    let signal = shutdown_signal().await;
    tracing::info!(%signal, "draining");
    if running.shutdown().await {
        tracing::info!("drained; exiting");
    } else {
        tracing::warn!("the drain deadline passed with work in flight; exiting");
    }
    ExitCode::SUCCESS
}

/// Waits for SIGTERM or Ctrl-C (SIGINT), and says which.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            return tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "Ctrl-C",
            };
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    "Ctrl-C"
}
