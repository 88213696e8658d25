//! The reference proxy, assembled from the mesh crates' public layers: this module is wiring
//! and configuration only. Run it with `cargo run --release --example mesh-proxy -- --config
//! FILE`; [`Proxy::start`] runs one in-process (the demo and the tests do).
//!
//! - Outbound (the app's requests): protocol detection; HTTP routed by authority to a service
//!   whose stack is metrics and tap, a response deadline, retries within a budget, and the
//!   P2C peak-EWMA balancer with failure accrual, over pooled mTLS connections to each
//!   endpoint (HTTP/2 between proxies); opaque TCP to a service's endpoints over mTLS.
//! - Inbound (from the mesh): TLS detection, mTLS termination, authorization by peer
//!   identity, metrics and tap, and the app called with the peer's identity in a header.
//! - Admin: `/metrics`, `/ready`, `/live`, `/tap`, `/endpoints`, `/config`.
//! - Identity: certificate files (reloaded when they change), the SPIFFE Workload API (a
//!   SPIRE agent), or the control plane's identity API.
//!
//! ```
//! use std::path::Path;
//! use examples::proxy::Config;
//!
//! let text = r#"
//! [identity]
//! dir = "certs/web"
//!
//! [admin]
//! listen = "127.0.0.1:4191"
//!
//! [inbound]
//! listen = "127.0.0.1:4143"
//! app = "127.0.0.1:8080"
//! authorize = ["spiffe://mesh.local/ns/default/sa/*"]
//! detect_timeout = "1 fortnight"
//! "#;
//! // Mistakes are reported by file, line and key.
//! let err = Config::parse(text, Path::new("web.toml")).expect_err("a bad duration");
//! assert_eq!((err.line, err.key.as_deref()), (Some(12), Some("inbound.detect_timeout")));
//! assert!(err.to_string().starts_with("web.toml:12: key `inbound.detect_timeout`: "));
//!
//! let config = Config::parse(&text.replace("1 fortnight", "500ms"), Path::new("web.toml"))?;
//! assert_eq!(config.inbound.expect("inbound").detect_timeout.0.as_millis(), 500);
//! # Ok::<(), examples::proxy::ConfigError>(())
//! ```

mod admin;
pub mod config;
mod control;
mod discovery;
mod edge;
mod endpoint;
mod identity;
mod inbound;
mod outbound;
mod resolve;
mod serve;
mod tcp;
mod transparent;
mod upgrade;
mod values;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_core::classify::{AutoClassify, Classify, ClassifyResponse};
use mesh_metrics::{ConstLabels, HttpLabels, HttpMetrics, Registry, Tap, TcpMetrics};
use mesh_tls::{CredentialStore, Mode, TlsAcceptor, TlsConnector, TlsSettings};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use self::config::{Config, ConfigError};
pub use self::discovery::DiscoveryError;
pub use self::values::{Addr, Dur, Id, Parsed};
use mesh_core::drain::Drain;
pub use mesh_core::serve::Workers;

/// What every part of a proxy shares; cheap to clone.
#[derive(Clone)]
pub(crate) struct Shared {
    metrics: HttpMetrics<HttpLabels>,
    tcp_metrics: TcpMetrics<HttpLabels>,
    tap: Tap,
    tls: TlsConnector,
    egress_refused: transparent::EgressRefused,
}

/// Why a proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The credentials could not be read.
    #[error("identity: {0}")]
    Credentials(#[from] mesh_tls::CredentialsError),
    /// The TLS settings were refused.
    #[error("TLS settings: {0}")]
    Tls(#[from] tokio_rustls::rustls::Error),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A service's discovery could not be set up.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// A retry budget was refused.
    #[error("service {0}: retry budget: {1}")]
    Retry(String, mesh_core::retry::BudgetError),
    /// The workload labels were refused.
    #[error("workload labels: {0}")]
    Labels(String),
    /// The control plane settings cannot be used.
    #[error("control plane: {0}")]
    Control(String),
    /// The identity source cannot be used (a malformed SPIFFE endpoint, say).
    #[error("identity: {0}")]
    Identity(String),
}

/// A proxy, configured; [`Proxy::start`] binds and runs it.
#[derive(Debug)]
pub struct Proxy;

/// A running proxy: its bound addresses, its metrics, and the way to stop it.
pub struct Running {
    /// The admin listener's address.
    pub admin: SocketAddr,
    /// The inbound listener's address, if configured.
    pub inbound: Option<SocketAddr>,
    /// The outbound listener's address, if configured.
    pub outbound: Option<SocketAddr>,
    /// The opaque TCP ports' addresses, in configured order.
    pub tcp: Vec<SocketAddr>,
    metrics: HttpMetrics<HttpLabels>,
    tap: Tap,
    store: CredentialStore,
    snapshots: Vec<(String, &'static str, outbound::SnapshotFn)>,
    drain: Arc<Drain>,
    drain_timeout: Duration,
    tasks: Vec<JoinHandle<()>>,
    /// The runtimes serving the listeners beside the caller's; their threads end with this.
    _workers: Arc<Workers>,
}

/// One balancer's view of its endpoints, as [`Running::endpoints`] gives it.
#[derive(Clone, Debug)]
pub struct ServiceEndpoints {
    /// The service's name.
    pub service: String,
    /// `http` or `tcp`.
    pub protocol: &'static str,
    /// Each endpoint's state.
    pub endpoints: Vec<mesh_balance::EndpointSnapshot>,
}

/// What a proxy's classification strategy must be: the one strategy that decides each request's
/// outcome, for metrics, retries and the balancer alike.
pub trait ProxyClassify:
    Classify<Response: ClassifyResponse<Eos: Send + Sync + 'static> + Send + Sync + 'static>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> ProxyClassify for T where
    T: Classify<Response: ClassifyResponse<Eos: Send + Sync + 'static> + Send + Sync + 'static>
        + Clone
        + Send
        + Sync
        + 'static
{
}

impl Proxy {
    /// Binds the admin listener, gets the identity (waiting for a SPIFFE agent or the control
    /// plane as long as it takes, `/ready` saying why meanwhile), then binds every other
    /// listener and starts serving. Listeners configured on port 0 get a free port; [`Running`]
    /// says which. Outcomes are classified by the mesh's gRPC-aware default rules.
    pub async fn start(config: Config) -> Result<Running, StartError> {
        Self::start_with_classify(config, AutoClassify::new()).await
    }

    /// Like [`Proxy::start`], classifying outcomes with `classify` (on both sides: the
    /// outbound's balancers and the inbound's one classification).
    pub async fn start_with_classify<C: ProxyClassify>(
        config: Config,
        classify: C,
    ) -> Result<Running, StartError> {
        let workers = Workers::single(tokio::runtime::Handle::current());
        Self::start_on(config, classify, Arc::new(workers)).await
    }

    /// Like [`Proxy::start_with_classify`], with every listener served by each of `workers`
    /// (a current-thread runtime per thread, each accepting from the same sockets: see
    /// [`Workers`]); the admin listener, discovery and the identity's renewal run on the
    /// runtime this is called on. Each accepted connection is served by the worker with
    /// fewer connections of two ([`Workers::spawn_connection`]). The proxy keeps the workers
    /// until it is dropped.
    pub async fn start_on<C: ProxyClassify>(
        config: Config,
        classify: C,
        workers: Arc<Workers>,
    ) -> Result<Running, StartError> {
        // The admin listener comes first, so that `/ready` can say why the proxy is not ready
        // while it waits for its identity; nothing else is bound until there is one.
        let mut tasks = Tasks::default();
        let (source, identity) = identity::Source::start(&config, &mut tasks.0)?;
        let admin_listener = bind("admin", config.admin.listen.0).await?;
        let admin_addr = local_addr(&admin_listener, config.admin.listen.0);
        let slot = Arc::new(admin::Slot::new(identity.clone()));
        let listeners = serve::Listeners::new(Arc::clone(&workers));
        tasks.push(tokio::spawn(admin::serve(
            admin_listener,
            Arc::clone(&slot),
            listeners.add("admin", &config.admin.limits),
        )));
        let identity::Loaded { store, task, link } = source.load().await?;
        tasks.0.extend(task);
        let consts = ConstLabels::new([
            ("namespace", config.workload.namespace.as_str()),
            ("deployment", config.workload.deployment.as_str()),
            ("pod", config.workload.pod.as_str()),
        ])
        .map_err(|e| StartError::Labels(e.to_string()))?;
        let shared = Shared {
            metrics: HttpMetrics::new(),
            tcp_metrics: TcpMetrics::new(),
            tap: Tap::default(),
            tls: TlsConnector::new(store.clone(), TlsSettings::default()),
            egress_refused: transparent::EgressRefused::default(),
        };
        let (drain, _first) = Drain::new();
        let drain = Arc::new(drain);

        let services = outbound::services(&config, &shared, &classify)?;
        let resolver = match (&link, &config.control) {
            (Some(link), Some(control)) => Some(resolver(control, link, &shared, &classify)?),
            _ => None,
        };
        let routes = resolve::OutboundRoutes::new(services.router.clone(), resolver);
        let mut running_outbound = None;
        let mut tcp_addrs = Vec::new();
        if let Some(out) = &config.outbound {
            let listener = bind("outbound", out.listen.0).await?;
            running_outbound = Some(local_addr(&listener, out.listen.0));
            let opaque = out
                .opaque_service
                .as_ref()
                .and_then(|name| services.tcp.get(name.get_ref()).cloned());
            let meshed = Arc::new(services.by_addr.clone());
            let mut sockets = vec![listener];
            if let Some(six) = &out.listen_ipv6 {
                sockets.push(bind_ipv6_only("outbound (IPv6)", six.0)?);
            }
            // IPv4 and IPv6 listeners of one role share one bound.
            let bounds = listeners.add("outbound", &out.limits);
            for listener in sockets {
                let side = outbound::OutboundSide {
                    outbound: out.clone(),
                    router: routes.clone(),
                    opaque: opaque.clone(),
                    meshed: Arc::clone(&meshed),
                    shared: shared.clone(),
                    bounds: bounds.clone(),
                };
                tasks.spawn_on_each(&workers, "outbound", listener, |listener| {
                    outbound::serve(listener, side.clone(), drain.watch())
                })?;
            }
            for port in &out.tcp {
                let listener = bind("outbound tcp", port.listen.0).await?;
                tcp_addrs.push(local_addr(&listener, port.listen.0));
                let name = port.service.get_ref().clone();
                if let Some(balance) = services.tcp.get(&name).cloned() {
                    let bounds = listeners.add(&format!("tcp {}", port.listen.0), &out.limits);
                    tasks.spawn_on_each(&workers, "outbound tcp", listener, |listener| {
                        outbound::serve_tcp(
                            listener,
                            balance.clone(),
                            shared.clone(),
                            name.clone(),
                            bounds.clone(),
                            drain.watch(),
                        )
                    })?;
                }
            }
        }
        let mut running_inbound = None;
        if let Some(inb) = &config.inbound {
            let mode = match inb.mode {
                config::TlsMode::Strict => Mode::Strict,
                config::TlsMode::Permissive => Mode::Permissive,
            };
            let settings = TlsSettings::default()
                .mode(mode)
                .detect_timeout(inb.detect_timeout.0)
                // A ClientHello is a request head too: trickled or cut short, it is closed at
                // the same deadline.
                .handshake_timeout(inb.limits.header_timeout.0)
                .alpn([&b"h2"[..], b"http/1.1", mesh_tls::OPAQUE_ALPN]);
            let acceptor = TlsAcceptor::new(store.clone(), settings)?;
            let policy = match &link {
                Some(link) => {
                    // Nobody is admitted until the control plane's first answer.
                    let policy = mesh_tls::authz::SharedPolicy::default();
                    let follow = mesh_tls::control::PolicyConfig::new(
                        &config.workload.namespace,
                        &config.workload.pod,
                        inb.app.0.port(),
                    );
                    let (task, _report) = mesh_tls::control::follow_policy(
                        link.channel.clone(),
                        follow,
                        policy.clone(),
                    );
                    tasks.push(task);
                    Some(policy)
                }
                None => None,
            };
            let inbound = inbound::Inbound::new(inb, acceptor, shared.clone(), classify, policy)?;
            let listener = bind("inbound", inb.listen.0).await?;
            running_inbound = Some(local_addr(&listener, inb.listen.0));
            let bounds = listeners.add("inbound", &inb.limits);
            if let Some(six) = &inb.listen_ipv6 {
                let listener = bind_ipv6_only("inbound (IPv6)", six.0)?;
                tasks.spawn_on_each(&workers, "inbound (IPv6)", listener, |listener| {
                    inbound
                        .clone()
                        .serve(listener, bounds.clone(), drain.watch())
                })?;
            }
            tasks.spawn_on_each(&workers, "inbound", listener, |listener| {
                inbound
                    .clone()
                    .serve(listener, bounds.clone(), drain.watch())
            })?;
        }
        let mut registry = Registry::new(consts)
            .with(shared.metrics.clone())
            .with(shared.tcp_metrics.clone())
            .with(shared.egress_refused.clone())
            .with(listeners)
            .with(serve::ProxyInfo(store.clone()));
        if let identity::Status::Spiffe(report) = &identity {
            registry = registry.with(identity::SpiffeMetrics(report.clone()));
        }
        let drain_timeout = config.shutdown.drain_timeout.0;
        slot.started(admin::Admin {
            registry,
            shared: shared.clone(),
            snapshots: services.snapshots.clone(),
            config,
            drain: Arc::clone(&drain),
            routes: routes.clone(),
            store: store.clone(),
        });
        Ok(Running {
            admin: admin_addr,
            inbound: running_inbound,
            outbound: running_outbound,
            tcp: tcp_addrs,
            metrics: shared.metrics,
            tap: shared.tap,
            store,
            snapshots: services.snapshots,
            drain,
            drain_timeout,
            tasks: tasks.into_vec(),
            _workers: workers,
        })
    }
}

/// The tasks a starting proxy has spawned: aborted should the start fail half way (a port
/// taken), handed to [`Running`] when it succeeds.
#[derive(Default)]
struct Tasks(Vec<JoinHandle<()>>);

impl Tasks {
    /// Serves `listener` on every worker: `serve` makes each worker's accept loop over the
    /// socket registered with that worker's runtime.
    fn spawn_on_each<F, S>(
        &mut self,
        workers: &Workers,
        what: &'static str,
        listener: TcpListener,
        mut serve: S,
    ) -> Result<(), StartError>
    where
        S: FnMut(TcpListener) -> F,
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let addr = local_addr(&listener, SocketAddr::from(([0, 0, 0, 0], 0)));
        let shared =
            workers
                .share(listener)
                .map_err(|source| StartError::Bind { what, addr, source })?;
        for (handle, listener) in workers.handles().zip(shared) {
            self.push(handle.spawn(serve(listener)));
        }
        Ok(())
    }

    fn push(&mut self, task: JoinHandle<()>) {
        self.0.push(task);
    }

    fn into_vec(mut self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut self.0)
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl Running {
    /// The HTTP metrics of both directions, for programs (the demo's tables).
    pub fn metrics(&self) -> &HttpMetrics<HttpLabels> {
        &self.metrics
    }

    /// The tap of both directions.
    pub fn tap(&self) -> &Tap {
        &self.tap
    }

    /// Every balancer's view of its endpoints (what `/endpoints` shows).
    pub fn endpoints(&self) -> Vec<ServiceEndpoints> {
        self.snapshots
            .iter()
            .map(|(service, protocol, snapshot)| ServiceEndpoints {
                service: service.clone(),
                protocol,
                endpoints: snapshot(),
            })
            .collect()
    }

    /// The credentials in force (rotations are counted there).
    pub fn credentials(&self) -> &CredentialStore {
        &self.store
    }

    /// Stops accepting, lets in-flight requests and connections finish within the configured
    /// drain deadline, then stops everything. Returns whether all finished in time.
    pub async fn shutdown(self) -> bool {
        let drained = self.drain.drain(self.drain_timeout).await;
        for task in &self.tasks {
            task.abort();
        }
        drained
    }
}

/// The resolver of authorities no `[[service]]` names, through the destination API, each
/// with the same stack as a configured service.
fn resolver<C: ProxyClassify>(
    control: &config::Control,
    link: &control::ControlLink,
    shared: &Shared,
    classify: &C,
) -> Result<resolve::Resolver, StartError> {
    control
        .retry
        .budget()
        .map_err(|e| StartError::Retry("control.retry".into(), e))?;
    let template = config::Service {
        name: toml::Spanned::new(0..0, String::new()),
        authorities: Vec::new(),
        identity: None,
        endpoints: None,
        endpoints_file: None,
        dns: None,
        dns_servers: Vec::new(),
        timeout: control.timeout,
        retry: control.retry.clone(),
        routes: Vec::new(),
    };
    let (shared, classify) = (shared.clone(), classify.clone());
    let make: resolve::MakeStack = Arc::new(move |authority: &str, updates| {
        let mut service = template.clone();
        service.name = toml::Spanned::new(0..0, authority.to_owned());
        match outbound::http_service(&service, updates, &shared, classify.clone()) {
            Ok((stack, _balance)) => stack,
            // The budget was checked above; should it fail anyway, the service says why.
            Err(error) => {
                let message = error.to_string();
                tower::util::BoxCloneSyncService::new(tower::service_fn(move |_req| {
                    let message = message.clone();
                    async move {
                        Err::<http::Response<serve::ProxyBody>, _>(mesh_core::BoxError::from(
                            message,
                        ))
                    }
                }))
            }
        }
    });
    Ok(resolve::Resolver::new(
        link.channel.clone(),
        make,
        String::new(),
        control.timeout.0,
    ))
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}

/// A listener on an IPv6 address that takes IPv6 only (`IPV6_V6ONLY`), so that `[::]:port`
/// and `0.0.0.0:port` can both be bound: each family's original destination is read its own
/// way.
fn bind_ipv6_only(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    use socket2::{Domain, Socket, Type};
    let error = |source| StartError::Bind { what, addr, source };
    if !addr.is_ipv6() {
        return Err(error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not an IPv6 address",
        )));
    }
    let socket = Socket::new(Domain::IPV6, Type::STREAM, None).map_err(error)?;
    socket.set_only_v6(true).map_err(error)?;
    socket.set_reuse_address(true).map_err(error)?;
    socket.set_nonblocking(true).map_err(error)?;
    socket.bind(&addr.into()).map_err(error)?;
    socket.listen(1024).map_err(error)?;
    TcpListener::from_std(socket.into()).map_err(error)
}

fn local_addr(listener: &TcpListener, configured: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(configured)
}
