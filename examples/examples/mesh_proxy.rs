//! The reference proxy: `cargo run --release --example mesh-proxy -- --config FILE`.
//!
//! Exit codes: 0 after a clean shutdown (SIGTERM or Ctrl-C, in-flight requests drained), 2
//! for a configuration mistake (the message names file, line and key), 1 when the proxy
//! cannot start (a port taken, credentials unreadable).

use std::cell::Cell;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use examples::proxy::{Config, Proxy, Workers};
use mesh_core::classify::AutoClassify;

/// mimalloc, not glibc's malloc: a sidecar's memory is mostly connections that come and go,
/// and glibc keeps the heap they fragmented (measured: 40 MB resident a minute after 1,000 idle
/// connections closed, from 10 MB before); mimalloc returns freed pages to the system and
/// packs each connection's buffers tighter. Called through `examples::alloc`, which keeps
/// allocations over 1 KiB on mimalloc's fast path.
#[global_allocator]
static ALLOCATOR: examples::alloc::Mimalloc = examples::alloc::Mimalloc;

/// How often a worker about to park gives its freed memory back.
const RELEASE_EVERY: Duration = Duration::from_secs(5);

/// Runs on a worker thread just before it parks (nothing left to run). mimalloc frees a page
/// only from within its own calls on the thread that owns it, and returns it to the system
/// only at a later such call (a second after it was freed): a proxy that falls quiet after a
/// burst would keep the burst's pages until traffic came back. So an idle worker collects,
/// at most every [`RELEASE_EVERY`]: a clock read per park, a heap walk every few seconds.
fn release_freed_memory() {
    thread_local! {
        static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    let now = Instant::now();
    let due = LAST.with(|last| match last.get() {
        Some(at) if now.duration_since(at) < RELEASE_EVERY => false,
        _ => {
            last.set(Some(now));
            true
        }
    });
    if due {
        // The one unsafe call in the proxy: `mi_collect` has no preconditions (it walks the
        // calling thread's heap and purges what expired), it is only foreign.
        #[allow(unsafe_code)]
        // SAFETY: no pointers or state cross the call; any thread may make it at any time.
        unsafe {
            libmimalloc_sys::mi_collect(false);
        }
    }
}

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
    let runtime = match config
        .runtime
        .builder()
        .on_thread_park(release_freed_memory)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("mesh-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // With `scheduler = "per-core"`, the other workers' runtimes, each on a thread of its own
    // and giving memory back the same way.
    let extra = config.runtime.per_core_threads();
    let workers = Workers::start(runtime.handle().clone(), extra, || {
        examples::proxy::config::Runtime::per_core_builder()
            .on_thread_park(release_freed_memory)
            .build()
    });
    let workers = match workers {
        Ok(workers) => workers,
        Err(e) => {
            eprintln!("mesh-proxy: cannot start the worker threads: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config, std::sync::Arc::new(workers)))
}

async fn run(config: Config, workers: std::sync::Arc<Workers>) -> ExitCode {
    let running = match Proxy::start_on(config, AutoClassify::new(), workers).await {
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
