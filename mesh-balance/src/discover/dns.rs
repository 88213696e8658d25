//! Endpoints from DNS: A/AAAA records of a name (with a fixed port), or SRV records (each
//! target's addresses with the record's port and weight), re-resolved when their TTL runs out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, Record};
use mesh_core::Endpoint;

use super::updates::{Updates, apply, channel};

/// What to resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsTarget {
    /// The A and AAAA records of `name`, each address with `port`.
    Host {
        /// The name.
        name: String,
        /// The port of every endpoint.
        port: u16,
    },
    /// The SRV records of `name` (such as `_http._tcp.web.default.svc.cluster.local`): of the
    /// lowest priority, each target's addresses with the record's port and weight.
    Srv {
        /// The SRV name.
        name: String,
    },
}

/// A DNS target that is neither `host:port` nor `srv:NAME`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("DNS target {0:?} is neither host:port nor srv:NAME")]
pub struct BadDnsTarget(pub String);

impl std::str::FromStr for DnsTarget {
    type Err = BadDnsTarget;

    /// `host:port` (A and AAAA records, every address with that port) or `srv:NAME` (SRV
    /// records).
    fn from_str(s: &str) -> Result<Self, BadDnsTarget> {
        let bad = || BadDnsTarget(s.to_owned());
        if let Some(name) = s.strip_prefix("srv:") {
            if name.is_empty() {
                return Err(bad());
            }
            return Ok(Self::Srv {
                name: name.to_owned(),
            });
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port = port.parse().map_err(|_| bad())?;
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Self::Host {
            name: host.to_owned(),
            port,
        })
    }
}

/// How to resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// Name servers to ask (UDP); empty means the system's configuration.
    pub servers: Vec<SocketAddr>,
    /// Re-resolve no sooner than this after a success, whatever the TTL (default 1 s).
    pub min_ttl: Duration,
    /// Re-resolve no later than this after a success (default 5 min).
    pub max_ttl: Duration,
    /// After a failed resolution, try again after this (default 5 s); the endpoints stay.
    pub retry: Duration,
    /// How long one query may take (default 2 s).
    pub timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(300),
            retry: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
        }
    }
}

/// A resolver that cannot be set up (no system configuration, say).
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the DNS resolver: {0}")]
pub struct DnsSetupError(String);

/// What the resolutions found, for an admin page or a test.
#[derive(Clone, Debug, Default)]
pub struct DnsReport {
    inner: Arc<Mutex<ReportInner>>,
}

#[derive(Debug, Default)]
struct ReportInner {
    resolutions: u64,
    last_error: Option<String>,
    last_ttl: Option<Duration>,
}

impl DnsReport {
    /// Successful resolutions so far (an authoritative "no such records" counts).
    pub fn resolutions(&self) -> u64 {
        self.lock().resolutions
    }

    /// The last failure, cleared by the next success.
    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    /// The TTL the last success asked for.
    pub fn last_ttl(&self) -> Option<Duration> {
        self.lock().last_ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReportInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn resolver(config: &DnsConfig) -> Result<TokioResolver, DnsSetupError> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = if config.servers.is_empty() {
        TokioResolver::builder(provider).map_err(|e| DnsSetupError(e.to_string()))?
    } else {
        let servers = config
            .servers
            .iter()
            .map(|addr| {
                let mut server = NameServerConfig::udp(addr.ip());
                for connection in &mut server.connections {
                    connection.port = addr.port();
                }
                server
            })
            .collect();
        TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
    };
    let options: &mut ResolverOpts = builder.options_mut();
    options.timeout = config.timeout;
    options.attempts = 2;
    options.use_hosts_file = ResolveHosts::Never;
    // We re-resolve on the TTL ourselves; a cache would only hide changes.
    options.cache_size = 0;
    builder.build().map_err(|e| DnsSetupError(e.to_string()))
}

/// Fully qualified, so that search domains are not tried.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

fn min_ttl(records: &[Record]) -> Option<Duration> {
    records
        .iter()
        .map(|r| Duration::from_secs(u64::from(r.ttl)))
        .min()
}

/// Resolves once: the endpoints and the TTL to wait, or `Ok(None)`-like empty set when the
/// name authoritatively has no such records.
async fn resolve_once(
    resolver: &TokioResolver,
    target: &DnsTarget,
) -> Result<(Vec<Endpoint>, Option<Duration>), hickory_resolver::net::NetError> {
    match target {
        DnsTarget::Host { name, port } => {
            let found = resolver.lookup_ip(fqdn(name)).await?;
            let endpoints = found
                .iter()
                .map(|ip| Endpoint::new(SocketAddr::new(ip, *port)))
                .collect();
            Ok((endpoints, min_ttl(found.as_lookup().answers())))
        }
        DnsTarget::Srv { name } => {
            let found = resolver.srv_lookup(fqdn(name)).await?;
            let srvs: Vec<_> = found
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::SRV(srv) => Some(srv.clone()),
                    _ => None,
                })
                .collect();
            let best = srvs.iter().map(|s| s.priority).min();
            let mut ttl = min_ttl(found.answers());
            let mut endpoints = Vec::new();
            for srv in srvs.iter().filter(|s| Some(s.priority) == best) {
                let ips = resolver.lookup_ip(srv.target.clone()).await?;
                ttl = ttl.min(min_ttl(ips.as_lookup().answers())).or(ttl);
                // SRV weight 0 means "rarely"; ours 0 would mean "never".
                let weight = u32::from(srv.weight).max(1);
                endpoints
                    .extend(ips.iter().map(|ip| {
                        Endpoint::new(SocketAddr::new(ip, srv.port)).with_weight(weight)
                    }));
            }
            Ok((endpoints, ttl))
        }
    }
}

/// Resolves `target` now and again whenever the answer's TTL (bounded by the config) runs
/// out, reporting the differences. A failed resolution keeps the current endpoints and is
/// retried; an authoritative "no such name / no records" empties the set.
///
/// Must be called within a tokio runtime; the resolving task ends with the stream.
pub fn watch(target: DnsTarget, config: DnsConfig) -> Result<(Updates, DnsReport), DnsSetupError> {
    let resolver = resolver(&config)?;
    let report = DnsReport::default();
    let (sender, updates) = channel();
    let task_report = report.clone();
    let task = tokio::spawn(async move {
        let mut current: HashMap<SocketAddr, Endpoint> = HashMap::new();
        loop {
            let wait = match resolve_once(&resolver, &target).await {
                Ok((endpoints, ttl)) => {
                    let ttl = ttl
                        .unwrap_or(config.min_ttl)
                        .clamp(config.min_ttl, config.max_ttl);
                    {
                        let mut report = task_report.lock();
                        report.resolutions += 1;
                        report.last_error = None;
                        report.last_ttl = Some(ttl);
                    }
                    if !apply(&mut current, endpoints, false, &sender) {
                        return;
                    }
                    ttl
                }
                Err(err) if err.is_no_records_found() || err.is_nx_domain() => {
                    task_report.lock().resolutions += 1;
                    if !apply(&mut current, Vec::new(), false, &sender) {
                        return;
                    }
                    config.retry
                }
                Err(err) => {
                    tracing::warn!(?target, error = %err, "DNS resolution failed; keeping the current endpoints");
                    task_report.lock().last_error = Some(err.to_string());
                    config.retry
                }
            };
            tokio::time::sleep(wait).await;
        }
    });
    Ok((updates.with_task(task), report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_or_say_why_not() {
        assert_eq!(
            "web.default:8080".parse(),
            Ok(DnsTarget::Host {
                name: "web.default".into(),
                port: 8080
            })
        );
        assert_eq!(
            "srv:_http._tcp.web".parse(),
            Ok(DnsTarget::Srv {
                name: "_http._tcp.web".into()
            })
        );
        for bad in ["web", "web:http", ":80", "srv:", "web:70000"] {
            assert_eq!(
                bad.parse::<DnsTarget>(),
                Err(BadDnsTarget(bad.into())),
                "{bad}"
            );
        }
    }
}
