//! The proxy's configuration: one TOML file, read strictly (an unknown key is an error), with
//! every mistake reported by file, line and key. `examples/mesh-proxy.toml` is the annotated
//! example of every setting.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::values::{Addr, Dur, Id, Parsed};

/// The whole file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Who this proxy speaks for; these labels go on every metric.
    #[serde(default)]
    pub workload: Workload,
    /// Where this workload's certificate, key and trust roots are, or (with `[control]`) the
    /// identity to ask the control plane for.
    pub identity: IdentityConfig,
    /// The control plane: with it, the certificate comes from its identity API, outbound
    /// authorities without a `[[service]]` are resolved through its destination API, and the
    /// inbound policy comes from its policy API.
    pub control: Option<Control>,
    /// The admin listener.
    pub admin: Admin,
    /// The listener the mesh sends to, in front of the local app.
    pub inbound: Option<Inbound>,
    /// The listener the local app sends its requests to.
    pub outbound: Option<Outbound>,
    /// The services the outbound side can send to.
    #[serde(default, rename = "service")]
    pub services: Vec<Service>,
    /// Graceful shutdown.
    #[serde(default)]
    pub shutdown: Shutdown,
    /// The async runtime the proxy runs on.
    #[serde(default)]
    pub runtime: Runtime,
}

/// The async runtime: how many threads serve connections, and how they share the work.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    /// Worker threads. 1 runs everything on the main thread (tokio's current-thread
    /// scheduler: no work stealing, no wake-ups across threads, the cheapest per request for a
    /// sidecar given one core); more runs that many, as `scheduler` says; 0 (the default) one
    /// per core the process may use.
    #[serde(default)]
    pub workers: usize,
    /// How more than one worker share the work.
    #[serde(default)]
    pub scheduler: Scheduler,
}

/// How the workers of a runtime with more than one share the work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheduler {
    /// One pool of threads that steal each other's tasks (tokio's multi-thread runtime): every
    /// core stays busy whatever the traffic's shape, even one HTTP/2 connection carrying
    /// most of it, at the cost of wake-ups across threads per request.
    #[default]
    WorkStealing,
    /// A current-thread runtime per worker, each accepting from the same listeners
    /// ([`Workers`](mesh_core::serve::Workers)): a connection and its requests stay on the
    /// thread that accepted it, as in nginx and HAProxy; the cheapest per request with many
    /// connections, and no help to one busy connection.
    PerCore,
}

impl Runtime {
    /// Worker threads, 0 resolved to the cores this process may use.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }

    /// The threads to start beside the main one, each with a current-thread runtime of its
    /// own (see [`Workers`](mesh_core::serve::Workers)): none unless `scheduler` is
    /// `per-core`.
    pub fn per_core_threads(&self) -> usize {
        match self.scheduler {
            Scheduler::PerCore => self.worker_count() - 1,
            Scheduler::WorkStealing => 0,
        }
    }

    /// A builder for the main thread's runtime as configured, with every driver enabled (the
    /// binary adds its own hooks, such as what a worker does before it parks, then builds it):
    /// current-thread with one worker or with `per-core` (whose other workers' runtimes come
    /// from [`Runtime::per_core_builder`]), otherwise a work-stealing pool.
    pub fn builder(&self) -> tokio::runtime::Builder {
        let workers = self.worker_count();
        if workers == 1 || self.scheduler == Scheduler::PerCore {
            return Self::per_core_builder();
        }
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder.enable_all();
        builder
    }

    /// A builder for one `per-core` worker's runtime: current-thread, every driver enabled.
    pub fn per_core_builder() -> tokio::runtime::Builder {
        let mut builder = tokio::runtime::Builder::new_current_thread();
        builder.enable_all();
        builder
    }
}

/// The workload's labels.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Namespace label.
    #[serde(default)]
    pub namespace: String,
    /// Deployment label.
    #[serde(default)]
    pub deployment: String,
    /// Pod label.
    #[serde(default)]
    pub pod: String,
}

/// Where the credentials are, and how often to look for new ones.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// A directory holding `cert.pem`, `key.pem` and `roots.pem`, relative to the config file.
    /// One of the three identity sources (with `spiffe_socket` and `[control]`).
    pub dir: Option<PathBuf>,
    /// The SPIFFE Workload API (a SPIRE agent): `unix:///run/spire/agent.sock`, or `"env"` for
    /// the `SPIFFE_ENDPOINT_SOCKET` variable. The SVIDs it streams are this proxy's identity.
    pub spiffe_socket: Option<String>,
    /// With `[control]`: the identity to ask for (`spiffe://<trust domain>/ns/<ns>/sa/<sa>`),
    /// which the token must prove. With `spiffe_socket`: the identity the SVID must carry (an
    /// SVID for another is refused); without it, the agent's default SVID is used.
    pub name: Option<Id>,
    /// How often the files are checked for rotation (default 5 s).
    #[serde(default = "five_seconds")]
    pub reload_interval: Dur,
}

/// The control plane (mesh-control) and how this proxy proves itself to it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    /// Its gRPC address.
    pub addr: Addr,
    /// The identity it must present.
    pub identity: Id,
    /// A file of the trust roots (PEM) its certificate and every peer's chain to; relative to
    /// the config file. Give this or `roots_pem`.
    pub roots: Option<PathBuf>,
    /// The trust roots themselves, PEM (as the injector writes them).
    pub roots_pem: Option<String>,
    /// The projected ServiceAccount token (re-read at each renewal); relative to the config
    /// file.
    pub token: PathBuf,
    /// The response deadline of services resolved through it (default 10 s).
    #[serde(default = "ten_seconds")]
    pub timeout: Dur,
    /// Retries for services resolved through it.
    #[serde(default)]
    pub retry: Retry,
}

/// The admin listener.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Where `/metrics`, `/ready`, `/live`, `/tap`, `/endpoints` and `/config` are served.
    pub listen: Addr,
    /// Deadlines and the connection bound of this listener.
    #[serde(default)]
    pub limits: Limits,
}

/// What one listener's clients may take: a deadline for each request head, an idle deadline,
/// and a bound on the connections open at once (`[inbound.limits]`, `[outbound.limits]`,
/// `[admin.limits]`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// A request head must arrive whole within this of its first byte, and a new connection's
    /// first request within this of the connection (default 10 s); a slow or silent client is
    /// closed then. On the inbound side the TLS handshake must finish within it too.
    #[serde(default = "ten_seconds")]
    pub header_timeout: Dur,
    /// A connection with no request in flight for this long is closed (default 60 s).
    #[serde(default = "sixty_seconds")]
    pub idle_timeout: Dur,
    /// Connections open at once (default 10,000); more are closed at once, and counted
    /// (`mesh_listener_refused_total`).
    #[serde(default = "ten_thousand")]
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: ten_seconds(),
            idle_timeout: sixty_seconds(),
            max_connections: ten_thousand(),
        }
    }
}

impl Limits {
    /// How this listener's connections are served.
    pub(crate) fn serve_config(&self) -> mesh_core::serve::ServeConfig {
        mesh_core::serve::ServeConfig::default()
            .header_timeout(self.header_timeout.0)
            .idle_timeout(self.idle_timeout.0)
    }
}

/// The inbound side.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Inbound {
    /// Where the mesh connects.
    pub listen: Addr,
    /// A second, IPv6-only listener with the same role: where `mesh-init --ipv6` redirects
    /// IPv6 connections for the pod (`[::]:<port>`). Optional.
    pub listen_ipv6: Option<Addr>,
    /// The local app's HTTP port.
    pub app: Addr,
    /// Where opaque TCP goes (default: `app`).
    pub opaque_app: Option<Addr>,
    /// `strict` (mTLS only, the default) or `permissive` (plaintext accepted as unauthenticated).
    #[serde(default)]
    pub mode: TlsMode,
    /// Identities allowed to call the app; `*` matches one path segment or DNS label. Empty:
    /// nobody (secure by default).
    #[serde(default)]
    pub authorize: Vec<Spanned<Parsed<mesh_tls::authz::IdentityPattern>>>,
    /// Also admit clients without a mesh identity (plaintext, so only with `mode =
    /// "permissive"`): for moving a workload onto the mesh. Default false.
    #[serde(default)]
    pub allow_unauthenticated: bool,
    /// The header that tells the app who called (any such header from the client is removed
    /// first).
    #[serde(default = "default_identity_header")]
    pub identity_header: Parsed<http::HeaderName>,
    /// How long to wait for a client's first bytes (default 1 s).
    #[serde(default = "one_second")]
    pub detect_timeout: Dur,
    /// Route names for metrics, by path prefix.
    #[serde(default, rename = "route")]
    pub routes: Vec<Route>,
    /// Connections arrive redirected by `mesh-init` (default false): each goes to the app on
    /// `app`'s address with the connection's original port (`SO_ORIGINAL_DST`), so one
    /// inbound listener serves every port of the app. A connection whose original destination
    /// cannot be read is closed.
    #[serde(default)]
    pub transparent: bool,
    /// Deadlines and the connection bound of this listener.
    #[serde(default)]
    pub limits: Limits,
}

/// TLS on the inbound side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Only mTLS.
    #[default]
    Strict,
    /// mTLS, or plaintext as an unauthenticated peer.
    Permissive,
}

/// The outbound side.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Outbound {
    /// Where the local app sends HTTP (and anything else, detected).
    pub listen: Addr,
    /// A second, IPv6-only listener with the same role: where `mesh-init --ipv6` redirects the
    /// app's IPv6 connections (`[::1]:<port>`). Optional.
    pub listen_ipv6: Option<Addr>,
    /// How long to wait for the app's first bytes before treating the connection as opaque
    /// TCP (default 1 s): a server-speaks-first protocol has a silent client.
    #[serde(default = "one_second")]
    pub detect_timeout: Dur,
    /// The service that opaque (non-HTTP) connections on `listen` go to; without it they are
    /// closed.
    pub opaque_service: Option<Spanned<String>>,
    /// Ports that are opaque TCP to one service, without detection.
    #[serde(default, rename = "tcp")]
    pub tcp: Vec<TcpListener>,
    /// Connections arrive redirected by `mesh-init` (default false): each is routed by its
    /// original destination (`SO_ORIGINAL_DST`), not its `Host`. An address that is an
    /// endpoint of a `[[service]]` is meshed (that service's stack, mTLS, its identity);
    /// anything else is egress. A connection whose original destination cannot be read is
    /// closed.
    #[serde(default)]
    pub transparent: bool,
    /// With `transparent`: what happens to connections for addresses outside the mesh:
    /// `allow` (the default: passed through as plain TCP, counted) or `deny` (closed, counted).
    #[serde(default)]
    pub egress: Egress,
    /// Deadlines and the connection bound of this listener (and of the `[[outbound.tcp]]`
    /// ports, each bounded on its own).
    #[serde(default)]
    pub limits: Limits,
}

/// The egress policy of a transparent outbound side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Egress {
    /// Passed through as plain TCP, with metrics.
    #[default]
    Allow,
    /// Refused: closed at once, with metrics.
    Deny,
}

/// An opaque TCP port.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TcpListener {
    /// Where the app connects.
    pub listen: Addr,
    /// The service whose endpoints the bytes go to, over mTLS.
    pub service: Spanned<String>,
}

/// A service the app can call.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Its name, for metrics, `/endpoints` and `tcp.service`.
    pub name: Spanned<String>,
    /// The authorities (`Host` or `:authority`, with or without port) that mean this service.
    #[serde(default)]
    pub authorities: Vec<Spanned<String>>,
    /// The identity its endpoints must prove (an endpoint file line's `identity=` overrides).
    pub identity: Option<Id>,
    /// A fixed list of endpoints (`ip:port`, usually their proxies' inbound ports).
    pub endpoints: Option<Vec<Addr>>,
    /// A file of endpoints, one `ip:port [weight=N] [identity=ID]` per line, watched for changes;
    /// relative to the config file.
    pub endpoints_file: Option<PathBuf>,
    /// A DNS name to resolve: `host:port` (A/AAAA) or `srv:_name._tcp.domain` (SRV).
    pub dns: Option<String>,
    /// DNS servers to ask (default: the system's).
    #[serde(default)]
    pub dns_servers: Vec<Addr>,
    /// Bound on a whole request, all tries included (default 10 s).
    #[serde(default = "ten_seconds")]
    pub timeout: Dur,
    /// Retries.
    #[serde(default)]
    pub retry: Retry,
    /// Route names for metrics, by path prefix.
    #[serde(default, rename = "route")]
    pub routes: Vec<Route>,
}

/// Retry settings of a service.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Tries in all, the first included (1 turns retries off; default 3).
    #[serde(default = "three")]
    pub attempts: u32,
    /// Retries allowed as a share of requests (default 0.2).
    #[serde(default = "one_fifth")]
    pub budget_ratio: f64,
    /// Retries per second allowed regardless of traffic (default 10).
    #[serde(default = "ten")]
    pub min_per_second: u32,
    /// Bound on each try's wait for response headers.
    pub per_try_timeout: Option<Dur>,
    /// HTTP statuses retried (default 502, 503, 504).
    pub statuses: Option<Vec<u16>>,
    /// Request bodies up to this many bytes are kept for a retry (default 64 KiB).
    #[serde(default = "sixty_four_kib")]
    pub body_cap: usize,
    /// Also retry methods that are not idempotent (POST, PATCH).
    #[serde(default)]
    pub non_idempotent: bool,
    /// Retry a request whose connection broke after it was sent (a replica crashing), for the
    /// methods retried at all (default true).
    #[serde(default = "yes")]
    pub on_reset: bool,
}

impl Retry {
    /// The retry budget these settings describe; its builder is what checks them.
    pub fn budget(&self) -> Result<mesh_core::retry::RetryBudget, mesh_core::retry::BudgetError> {
        mesh_core::retry::RetryBudget::builder()
            .ratio(self.budget_ratio)
            .min_per_second(self.min_per_second)
            .build()
    }
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: three(),
            budget_ratio: one_fifth(),
            min_per_second: ten(),
            per_try_timeout: None,
            statuses: None,
            body_cap: sixty_four_kib(),
            non_idempotent: false,
            on_reset: true,
        }
    }
}

/// A named route: requests whose path starts with `path_prefix` are labelled `name`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The label.
    pub name: String,
    /// The path prefix.
    pub path_prefix: String,
}

/// Graceful shutdown.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Shutdown {
    /// How long in-flight requests get to finish after SIGTERM or Ctrl-C (default 30 s).
    #[serde(default = "thirty_seconds")]
    pub drain_timeout: Dur,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            drain_timeout: thirty_seconds(),
        }
    }
}

fn five_seconds() -> Dur {
    Dur(std::time::Duration::from_secs(5))
}
fn one_second() -> Dur {
    Dur(std::time::Duration::from_secs(1))
}
fn ten_seconds() -> Dur {
    Dur(std::time::Duration::from_secs(10))
}
fn sixty_seconds() -> Dur {
    Dur(std::time::Duration::from_secs(60))
}
fn ten_thousand() -> usize {
    10_000
}
fn thirty_seconds() -> Dur {
    Dur(std::time::Duration::from_secs(30))
}
fn yes() -> bool {
    true
}
fn three() -> u32 {
    3
}
fn ten() -> u32 {
    10
}
fn one_fifth() -> f64 {
    0.2
}
fn sixty_four_kib() -> usize {
    64 * 1024
}
fn default_identity_header() -> Parsed<http::HeaderName> {
    Parsed(http::HeaderName::from_static("mesh-client-id"))
}

/// A configuration mistake: where it is and what is wrong.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// The line (1-based), when the mistake has one.
    pub line: Option<usize>,
    /// The key, as a dotted path (`service.retry.attempts`), when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and checks `path`. Relative paths inside the file are made relative to the file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            line: None,
            key: None,
            message: format!("cannot read the file: {e}"),
        })?;
        let mut config = Self::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(dir) = &mut config.identity.dir {
            *dir = base.join(&*dir);
        }
        if let Some(control) = &mut config.control {
            if let Some(roots) = &mut control.roots {
                *roots = base.join(&*roots);
            }
            control.token = base.join(&control.token);
        }
        for service in &mut config.services {
            if let Some(file) = &mut service.endpoints_file {
                *file = base.join(&*file);
            }
        }
        Ok(config)
    }

    /// Parses and checks `text`, naming `file` in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Self, ConfigError> {
        let located =
            |span: Option<std::ops::Range<usize>>, key: Option<String>, message: String| {
                let (line, found_key) = span.map_or((None, None), |s| locate(text, s.start));
                // A mistake found after parsing (no span) is still shown at its key's line.
                let line = line.or_else(|| key.as_deref().and_then(|k| line_of_key(text, k)));
                ConfigError {
                    file: file.to_owned(),
                    line,
                    key: key.or(found_key),
                    message,
                }
            };
        let config: Config = toml::from_str(text).map_err(|e| {
            let message = e.message().trim().to_owned();
            let mut error = located(e.span(), None, message);
            // A missing key is reported at its table: name the key inside it.
            if let Some(field) = missing_field(&error.message) {
                error.key = Some(match error.key.take() {
                    Some(table) => format!("{table}.{field}"),
                    None => field,
                });
            }
            error
        })?;
        config
            .check()
            .map_err(|Mistake { span, key, message }| located(span, Some(key), message))?;
        Ok(config)
    }

    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| *s.name.get_ref() == name)
    }

    /// Exactly one identity source: files, the SPIFFE Workload API, or the control plane; and
    /// `identity.name` where it means something.
    fn check_identity(&self) -> Result<(), Mistake> {
        const SOURCES: &str = "give one of `identity.dir`, `identity.spiffe_socket`, or `[control]` with `identity.name`";
        let id = &self.identity;
        let given = [
            ("identity.dir", id.dir.is_some()),
            ("identity.spiffe_socket", id.spiffe_socket.is_some()),
            ("control", self.control.is_some()),
        ];
        let mut sources = given.iter().filter(|(_, set)| *set).map(|(key, _)| *key);
        let Some(first) = sources.next() else {
            return Err(Mistake::missing("identity.dir", SOURCES));
        };
        if let Some(second) = sources.next() {
            return Err(Mistake::missing(
                second,
                &format!("not with `{first}`: one identity source only ({SOURCES})"),
            ));
        }
        match (first, &id.name) {
            ("identity.dir", Some(_)) => Err(Mistake::missing(
                "identity.name",
                "not with `identity.dir`: the name is the certificate's",
            )),
            ("control", None) => Err(Mistake::missing(
                "identity.name",
                "required with `[control]`: the identity to ask the control plane for",
            )),
            _ => Ok(()),
        }
    }

    /// Checks what one key alone cannot: references between sections, duplicates, and each
    /// service's discovery source.
    fn check(&self) -> Result<(), Mistake> {
        self.check_identity()?;
        if let Some(control) = &self.control {
            if control.roots.is_some() == control.roots_pem.is_some() {
                return Err(Mistake::missing(
                    "control.roots",
                    "give exactly one of `roots` (a file) or `roots_pem`",
                ));
            }
        }
        let mut names = HashSet::new();
        let mut authorities = HashSet::new();
        for service in &self.services {
            if !names.insert(service.name.get_ref().as_str()) {
                return Err(Mistake::at(
                    &service.name,
                    "service.name",
                    "a service of this name is already defined",
                ));
            }
            for authority in &service.authorities {
                if !authorities.insert(authority.get_ref().to_ascii_lowercase()) {
                    return Err(Mistake::at(
                        authority,
                        "service.authorities",
                        "this authority already belongs to another service",
                    ));
                }
            }
            let sources = [
                service.endpoints.is_some(),
                service.endpoints_file.is_some(),
                service.dns.is_some(),
            ];
            if sources.iter().filter(|s| **s).count() != 1 {
                return Err(Mistake::at(
                    &service.name,
                    "service.endpoints",
                    "give exactly one of `endpoints`, `endpoints_file` or `dns`",
                ));
            }
            if service.identity.is_none() && service.endpoints_file.is_none() {
                return Err(Mistake::at(
                    &service.name,
                    "service.identity",
                    "the identity the endpoints must prove is required (traffic between proxies is always mTLS)",
                ));
            }
            if service.retry.attempts == 0 {
                return Err(Mistake::at(
                    &service.name,
                    "service.retry.attempts",
                    "must be at least 1",
                ));
            }
            if let Err(e) = service.retry.budget() {
                return Err(Mistake::at(
                    &service.name,
                    "service.retry.budget_ratio",
                    &e.to_string(),
                ));
            }
        }
        let limits = [
            ("admin", Some(&self.admin.limits)),
            ("inbound", self.inbound.as_ref().map(|i| &i.limits)),
            ("outbound", self.outbound.as_ref().map(|o| &o.limits)),
        ];
        for (listener, limits) in limits {
            let Some(limits) = limits else { continue };
            for (key, zero) in [
                ("header_timeout", limits.header_timeout.0.is_zero()),
                ("idle_timeout", limits.idle_timeout.0.is_zero()),
                ("max_connections", limits.max_connections == 0),
            ] {
                if zero {
                    return Err(Mistake::missing(
                        &format!("{listener}.limits.{key}"),
                        "must be more than zero",
                    ));
                }
            }
        }
        if let Some(outbound) = &self.outbound {
            let references = outbound
                .tcp
                .iter()
                .map(|t| (&t.service, "outbound.tcp.service"));
            let opaque = outbound
                .opaque_service
                .iter()
                .map(|s| (s, "outbound.opaque_service"));
            for (name, key) in references.chain(opaque) {
                if self.service(name.get_ref()).is_none() {
                    return Err(Mistake::at(
                        name,
                        key,
                        &format!("no service is named {:?}", name.get_ref()),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A mistake found after parsing, placed by the span of the value at fault.
struct Mistake {
    span: Option<std::ops::Range<usize>>,
    key: String,
    message: String,
}

impl Mistake {
    /// A mistake that is an absence (or a combination), placed by its key alone.
    fn missing(key: &str, message: &str) -> Self {
        Self {
            span: None,
            key: key.into(),
            message: message.into(),
        }
    }

    fn at<T>(value: &Spanned<T>, key: &str, message: &str) -> Self {
        Self {
            span: Some(value.span()),
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The line of byte `offset`, and the dotted key written there: the nearest table header
/// above it, then the key on the line itself (`[service.retry]` + `attempts = 0` gives
/// `service.retry.attempts`).
fn locate(text: &str, offset: usize) -> (Option<usize>, Option<String>) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let table = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    let own = line.trim();
    let key = if own.starts_with('[') {
        Some(own.trim_matches(|c| c == '[' || c == ']').trim().to_owned())
    } else {
        let name = own
            .split('=')
            .next()
            .map(str::trim)
            .filter(|k| !k.is_empty() && own.contains('='));
        match (table, name) {
            (Some(t), Some(k)) => Some(format!("{t}.{k}")),
            (None, Some(k)) => Some(k.to_owned()),
            (t, None) => t,
        }
    };
    (Some(line_no), key)
}

/// The line where `key` (`table.name`, or a top-level `name`) is set in `text`, if it is.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let (table, name) = key.rsplit_once('.').unwrap_or(("", key));
    let mut current = "";
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('[') {
            current = line.trim_matches(|c| c == '[' || c == ']').trim();
        } else if current == table
            && line.contains('=')
            && line.split('=').next().map(str::trim) == Some(name)
        {
            return Some(i + 1);
        }
    }
    None
}

/// The field named in serde's "missing field `x`" message.
fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_annotated_example_file_is_valid_and_complete() {
        let text = include_str!("../../mesh-proxy.toml");
        let config = Config::parse(text, Path::new("mesh-proxy.toml")).expect("the example parses");
        let inbound = config.inbound.as_ref().expect("inbound");
        assert_eq!(inbound.identity_header.0, "mesh-client-id");
        assert_eq!(config.services.len(), 2);
        let api = config.service("api").expect("api");
        assert_eq!(api.retry.per_try_timeout.map(|d| d.0.as_secs()), Some(2));
        // Every setting is shown: the file's keys cover the defaults written back out.
        let shown = toml::to_string(&config).expect("serializes");
        for key in [
            "reload_interval",
            "detect_timeout",
            "allow_unauthenticated",
            "drain_timeout",
            "on_reset",
            "body_cap",
            "header_timeout",
            "idle_timeout",
            "max_connections",
            "scheduler",
        ] {
            assert!(text.contains(key) && shown.contains(key), "{key}");
        }
    }

    #[test]
    fn zero_limits_are_refused_by_key() {
        let text = "[identity]\ndir = \"certs\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
                    [outbound]\nlisten = \"127.0.0.1:0\"\n\n[outbound.limits]\n\
                    idle_timeout = \"0s\"\n";
        let error = Config::parse(text, Path::new("p.toml")).expect_err("a zero deadline");
        assert_eq!(error.key.as_deref(), Some("outbound.limits.idle_timeout"));
        assert_eq!(error.line, Some(11), "{error}");
        assert!(error.to_string().contains("more than zero"), "{error}");
        let fine = text.replace("\"0s\"", "\"5s\"");
        let config = Config::parse(&fine, Path::new("p.toml")).expect("a good deadline");
        let limits = &config.outbound.as_ref().expect("outbound").limits;
        assert_eq!(limits.idle_timeout.0.as_secs(), 5);
        assert_eq!(limits.header_timeout.0.as_secs(), 10);
        assert_eq!(limits.max_connections, 10_000);
    }

    #[test]
    fn the_scheduler_is_read_by_name_and_a_wrong_one_is_refused_by_key() {
        let parse = |runtime: &str| {
            let text = format!(
                "[identity]\ndir = \"certs\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[runtime]\n{runtime}\n"
            );
            Config::parse(&text, Path::new("p.toml"))
        };
        let default = parse("workers = 4").expect("workers alone");
        assert_eq!(default.runtime.scheduler, Scheduler::WorkStealing);
        assert_eq!(default.runtime.per_core_threads(), 0);
        let per_core = parse("workers = 4\nscheduler = \"per-core\"").expect("per-core");
        assert_eq!(per_core.runtime.scheduler, Scheduler::PerCore);
        assert_eq!(per_core.runtime.per_core_threads(), 3);
        let one = parse("workers = 1\nscheduler = \"per-core\"").expect("one worker");
        assert_eq!(one.runtime.per_core_threads(), 0);

        let wrong = parse("workers = 2\nscheduler = \"round-robin\"").expect_err("unknown");
        assert_eq!(wrong.key.as_deref(), Some("runtime.scheduler"));
        assert_eq!(wrong.line, Some(9), "{wrong}");
        assert!(wrong.to_string().contains("per-core"), "{wrong}");
    }

    #[test]
    fn exactly_one_identity_source_is_accepted() {
        let parse = |identity: &str| {
            let text = format!("[identity]\n{identity}\n\n[admin]\nlisten = \"127.0.0.1:0\"\n");
            Config::parse(&text, Path::new("p.toml"))
        };
        let spiffe =
            parse("spiffe_socket = \"unix:///run/spire/agent.sock\"").expect("SPIFFE alone");
        assert_eq!(
            spiffe.identity.spiffe_socket.as_deref(),
            Some("unix:///run/spire/agent.sock")
        );
        parse("spiffe_socket = \"env\"\nname = \"spiffe://example.org/ns/a/sa/b\"")
            .expect("SPIFFE with the identity it must carry");

        let both = parse("dir = \"certs\"\nspiffe_socket = \"env\"").expect_err("two sources");
        assert_eq!(both.key.as_deref(), Some("identity.spiffe_socket"));
        assert!(
            both.to_string().contains("not with `identity.dir`"),
            "{both}"
        );
        let none = parse("reload_interval = \"5s\"").expect_err("no source");
        assert_eq!(none.key.as_deref(), Some("identity.dir"));
        assert!(
            none.to_string().contains("identity.spiffe_socket"),
            "{none}"
        );
        let named = parse("dir = \"certs\"\nname = \"spiffe://example.org/ns/a/sa/b\"")
            .expect_err("a name with files");
        assert_eq!(named.key.as_deref(), Some("identity.name"));
    }
}
