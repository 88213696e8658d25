//! The control plane: `cargo run --example mesh-control -- <serve|install|inject|check>`.
//!
//! - `serve`: destination, identity and policy over gRPC (TLS), the injector webhook, and the
//!   heartbeat `check` reads; in a cluster, or outside one with `KUBECONFIG`.
//! - `install`: the manifests, for `kubectl apply -f -`.
//! - `inject`: the injector on YAML from stdin, offline.
//! - `check`: what is missing or broken; exits 1 if anything is.
//!
//! All the logic is in the `mesh-control` crate; this is flags and wiring.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mesh_control::check::{CheckConfig, run as run_checks};
use mesh_control::inject::{InjectConfig, inject_yaml};
use mesh_control::install::{InstallConfig, manifests, to_yaml};
use mesh_control::{ControlConfig, WebhookSettings};

/// The mesh's control plane on Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "mesh-control", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the control plane.
    Serve {
        /// Its namespace (the issuer Secret is there).
        #[arg(long, default_value = "mesh-system")]
        namespace: String,
        /// The trust domain.
        #[arg(long, default_value = "mesh.local")]
        trust_domain: String,
        /// Where the gRPC APIs listen.
        #[arg(long, default_value = "0.0.0.0:8086")]
        listen: SocketAddr,
        /// Where the injector webhook listens; `none` to not serve it.
        #[arg(long, default_value = "0.0.0.0:8443")]
        webhook_listen: String,
        /// The proxy image the injector adds.
        #[arg(long, default_value = "ghcr.io/mesh/proxy:0.1.0")]
        proxy_image: String,
    },
    /// Prints the manifests of a mesh.
    Install {
        /// The control plane's namespace.
        #[arg(long, default_value = "mesh-system")]
        namespace: String,
        /// The trust domain.
        #[arg(long, default_value = "mesh.local")]
        trust_domain: String,
        /// The issuer certificate (PEM); with `--issuer-key`, instead of minting one.
        #[arg(long, requires = "issuer_key")]
        issuer_cert: Option<PathBuf>,
        /// The issuer's private key (PEM).
        #[arg(long, requires = "issuer_cert")]
        issuer_key: Option<PathBuf>,
        /// mesh-control's image.
        #[arg(long, default_value = "ghcr.io/mesh/control:0.1.0")]
        control_image: String,
        /// The proxy image.
        #[arg(long, default_value = "ghcr.io/mesh/proxy:0.1.0")]
        proxy_image: String,
    },
    /// Adds the proxy to every pod and pod template in the YAML on stdin.
    Inject {
        /// The trust roots (PEM) the proxies get.
        #[arg(long)]
        roots: PathBuf,
        /// The control plane's namespace.
        #[arg(long, default_value = "mesh-system")]
        namespace: String,
        /// The trust domain.
        #[arg(long, default_value = "mesh.local")]
        trust_domain: String,
        /// The proxy image.
        #[arg(long, default_value = "ghcr.io/mesh/proxy:0.1.0")]
        proxy_image: String,
        /// Inject plain containers instead of native sidecars (clusters before 1.29).
        #[arg(long)]
        no_native_sidecar: bool,
    },
    /// Reports what is missing or broken in the cluster.
    Check {
        /// The control plane's namespace.
        #[arg(long, default_value = "mesh-system")]
        namespace: String,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    examples::cli::init_logging();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("mesh-control: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args.command)) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("mesh-control: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<ExitCode, String> {
    match command {
        Command::Serve {
            namespace,
            trust_domain,
            listen,
            webhook_listen,
            proxy_image,
        } => {
            let client = kube::Client::try_default()
                .await
                .map_err(|e| format!("Kubernetes client: {e}"))?;
            let mut config = ControlConfig::new(trust_domain);
            config.listen = listen;
            if webhook_listen != "none" {
                config.webhook = Some(WebhookSettings {
                    listen: webhook_listen
                        .parse()
                        .map_err(|e| format!("--webhook-listen: {e}"))?,
                    names: vec![format!("mesh-control.{namespace}.svc")],
                    proxy_image,
                    control_addr: format!(
                        "mesh-control.{namespace}.svc:{}",
                        mesh_control::install::GRPC_PORT
                    ),
                    native_sidecar: None,
                });
            }
            config.namespace = namespace;
            let running = mesh_control::start(client, config)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "mesh-control ready: grpc={} webhook={:?}",
                running.addr(),
                running.webhook_addr()
            );
            let _ = tokio::signal::ctrl_c().await;
            running.stop().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Install {
            namespace,
            trust_domain,
            issuer_cert,
            issuer_key,
            control_image,
            proxy_image,
        } => {
            let issuer = match (issuer_cert, issuer_key) {
                (Some(cert), Some(key)) => {
                    let read = |p: &PathBuf| {
                        std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))
                    };
                    Some(
                        mesh_tls::DevCa::from_pem(&read(&cert)?, &read(&key)?)
                            .map_err(|e| format!("the issuer: {e}"))?,
                    )
                }
                _ => None,
            };
            let config = InstallConfig {
                namespace,
                trust_domain,
                control_image,
                proxy_image,
                issuer,
            };
            let yaml = to_yaml(&manifests(config).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
            print!("{yaml}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Inject {
            roots,
            namespace,
            trust_domain,
            proxy_image,
            no_native_sidecar,
        } => {
            let roots =
                std::fs::read_to_string(&roots).map_err(|e| format!("{}: {e}", roots.display()))?;
            let config = InjectConfig {
                proxy_image,
                control_addr: format!(
                    "mesh-control.{namespace}.svc:{}",
                    mesh_control::install::GRPC_PORT
                ),
                control_identity: format!(
                    "spiffe://{trust_domain}/ns/{namespace}/sa/{}",
                    mesh_control::install::NAME
                ),
                trust_roots_pem: roots,
                token_audience: mesh_control::identity::DEFAULT_AUDIENCE.into(),
                trust_domain,
                native_sidecar: !no_native_sidecar,
                interception: true,
            };
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .map_err(|e| format!("stdin: {e}"))?;
            print!(
                "{}",
                inject_yaml(&input, &config).map_err(|e| e.to_string())?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { namespace } => {
            let client = kube::Client::try_default()
                .await
                .map_err(|e| format!("Kubernetes client: {e}"))?;
            let findings = run_checks(
                &client,
                &CheckConfig {
                    namespace,
                    ..CheckConfig::default()
                },
            )
            .await;
            for finding in &findings {
                println!("{finding}");
            }
            let failed = findings.iter().filter(|f| !f.ok).count();
            if failed == 0 {
                println!("all {} checks passed", findings.len());
                Ok(ExitCode::SUCCESS)
            } else {
                println!("{failed} of {} checks failed", findings.len());
                Ok(ExitCode::from(1))
            }
        }
    }
}
