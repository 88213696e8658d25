//! `stat`: golden metrics per namespace, deployment or pod, over an interval, from the proxies'
//! own counters: summed across replicas, latency quantiles from the merged histograms (never
//! an average of percentiles), like `linkerd viz stat`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;

use crate::model::{Counts, Direction, ProxyMetrics, SeriesKey, Workload};
use crate::scrape::Target;

/// What rows are made of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    /// One row per namespace.
    Namespace,
    /// One row per deployment (`namespace/deployment`).
    #[default]
    Deployment,
    /// One row per pod (`namespace/pod`).
    Pod,
}

impl Resource {
    /// Reads `ns`, `namespace`, `deploy`, `deployment`, `po`, `pod` (and plurals).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim_end_matches('s') {
            "n" | "namespace" => Some(Self::Namespace),
            "deploy" | "deployment" => Some(Self::Deployment),
            "po" | "pod" => Some(Self::Pod),
            _ => None,
        }
    }

    /// The name of `w`'s row: `namespace`, `namespace/deployment` or `namespace/pod`.
    pub fn name_of(self, w: &Workload) -> String {
        match self {
            Self::Namespace => w.namespace.clone(),
            Self::Deployment => format!("{}/{}", w.namespace, w.deployment),
            Self::Pod => format!("{}/{}", w.namespace, w.pod),
        }
    }
}

/// A resource named by a person: `deploy/web`, `pod/web-0`, `ns/shop`, `shop/web` (a
/// deployment in a namespace) or `web` (a deployment, in any namespace).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceRef {
    /// Its kind.
    pub kind: Resource,
    /// Its namespace, if given (for a namespace, its name).
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
}

impl ResourceRef {
    /// Reads `kind/name`, `namespace/name` or `name` (see the type).
    pub fn parse(s: &str) -> Self {
        let (kind, rest) = match s.split_once('/') {
            Some((kind, rest)) => match Resource::parse(kind) {
                Some(kind) => (kind, rest),
                None => (Resource::Deployment, s),
            },
            None => (Resource::Deployment, s),
        };
        let (namespace, name) = match rest.split_once('/') {
            Some((ns, name)) => (Some(ns.to_owned()), name.to_owned()),
            None => (None, rest.to_owned()),
        };
        Self {
            kind,
            namespace,
            name,
        }
    }

    /// Whether workload `w` is (part of) this resource.
    pub fn matches(&self, w: &Workload) -> bool {
        let in_namespace = self.namespace.as_ref().is_none_or(|ns| *ns == w.namespace);
        match self.kind {
            Resource::Namespace => w.namespace == self.name,
            Resource::Deployment => in_namespace && w.deployment == self.name,
            Resource::Pod => in_namespace && w.pod == self.name,
        }
    }

    /// Whether an authority names this resource, for calls without an identity to go by: a
    /// deployment by the first label of the host (`web`, `web.shop.svc.cluster.local:80`), a
    /// namespace by the second.
    fn named_by(&self, authority: &str) -> bool {
        let host = authority.split(':').next().unwrap_or_default();
        let mut labels = host.split('.');
        let (first, second) = (labels.next(), labels.next());
        match self.kind {
            Resource::Deployment => {
                first == Some(self.name.as_str())
                    && self
                        .namespace
                        .as_ref()
                        .is_none_or(|ns| second.is_none_or(|s| s == ns))
            }
            Resource::Namespace => second == Some(self.name.as_str()),
            Resource::Pod => false,
        }
    }
}

/// One proxy's state in a reading: what it counted over the interval, or why it said nothing.
#[derive(Clone, Debug, Serialize)]
pub struct ProxyReading {
    /// Whom.
    pub target: Target,
    /// Its workload, if it answered (or answered before).
    pub workload: Option<Workload>,
    /// Its identity.
    pub identity: Option<String>,
    /// `None` if it answered; otherwise why not (`unreachable: ...`, `timeout: ...`, ...).
    pub error: Option<String>,
    /// What it counted over the interval (empty if it did not answer).
    #[serde(skip)]
    pub delta: Option<ProxyMetrics>,
}

/// A reading of the mesh over an interval: each proxy's counts then, and how long it was.
#[derive(Clone, Debug, Serialize)]
pub struct Reading {
    /// Every proxy, answering or not.
    pub proxies: Vec<ProxyReading>,
    /// The interval the counts cover.
    pub interval: Duration,
}

impl Reading {
    /// From two scrapes of the same targets `interval` apart (`before` may lack some).
    pub fn between(
        before: &[(Target, Result<ProxyMetrics, String>)],
        after: &[(Target, Result<ProxyMetrics, String>)],
        interval: Duration,
    ) -> Self {
        let earlier: HashMap<&Target, &ProxyMetrics> = before
            .iter()
            .filter_map(|(t, r)| r.as_ref().ok().map(|m| (t, m)))
            .collect();
        let proxies = after
            .iter()
            .map(|(target, result)| match result {
                Ok(m) => ProxyReading {
                    target: target.clone(),
                    workload: Some(m.workload.clone()),
                    identity: m.identity.clone(),
                    error: None,
                    delta: Some(m.since(earlier.get(target).copied())),
                },
                Err(e) => ProxyReading {
                    target: target.clone(),
                    workload: earlier.get(target).map(|m| m.workload.clone()),
                    identity: earlier.get(target).and_then(|m| m.identity.clone()),
                    error: Some(e.clone()),
                    delta: None,
                },
            })
            .collect();
        Self { proxies, interval }
    }

    /// Which workloads carry each identity, from the proxies that said.
    pub fn identities(&self) -> HashMap<String, Vec<Workload>> {
        let mut map: HashMap<String, Vec<Workload>> = HashMap::new();
        for p in &self.proxies {
            if let (Some(id), Some(w)) = (&p.identity, &p.workload) {
                map.entry(id.clone()).or_default().push(w.clone());
            }
        }
        map
    }
}

/// What `stat` is asked.
#[derive(Clone, Debug, Default)]
pub struct StatQuery {
    /// Rows by namespace, deployment or pod.
    pub by: Resource,
    /// Only the calls these rows make to this resource (outbound, the caller's view).
    pub to: Option<ResourceRef>,
    /// Only the calls these rows receive from this resource (inbound).
    pub from: Option<ResourceRef>,
    /// Only rows in this namespace.
    pub namespace: Option<String>,
}

/// One row of `stat`.
#[derive(Clone, Debug, Serialize)]
pub struct StatRow {
    /// `namespace/deployment`, `namespace/pod` or `namespace`.
    pub name: String,
    /// Proxies of this resource answering / known.
    pub proxies_answering: usize,
    /// Proxies of this resource known.
    pub proxies: usize,
    /// Requests over the interval.
    pub requests: u64,
    /// Successes over successes and failures; `None` without any.
    pub success_rate: Option<f64>,
    /// Requests per second over the interval.
    pub rps: f64,
    /// Median latency, milliseconds.
    pub p50_ms: Option<f64>,
    /// 95th percentile, milliseconds.
    pub p95_ms: Option<f64>,
    /// 99th percentile, milliseconds.
    pub p99_ms: Option<f64>,
    /// The share of requests with an authenticated (mTLS) peer; `None` without requests.
    pub meshed: Option<f64>,
    /// All the counts, added.
    pub counts: Counts,
}

/// Which series of a proxy a query counts.
fn selected(
    query: &StatQuery,
    key: &SeriesKey,
    identities: &HashMap<String, Vec<Workload>>,
) -> bool {
    // A peer is known by its identity. Without one (no mTLS, or an identity no proxy here
    // has), a call out is known by its authority; a call in is not known at all (its
    // authority names the callee, not the caller).
    let is = |target: &ResourceRef, by_authority: bool| -> bool {
        match key.peer.as_ref().and_then(|p| identities.get(p)) {
            Some(workloads) => workloads.iter().any(|w| target.matches(w)),
            None => by_authority && key.authority.as_deref().is_some_and(|a| target.named_by(a)),
        }
    };
    match (&query.to, &query.from) {
        (Some(to), _) => key.direction == Direction::Outbound && is(to, true),
        (None, Some(from)) => key.direction == Direction::Inbound && is(from, false),
        (None, None) => key.direction == Direction::Inbound,
    }
}

/// The rows of `stat` over `reading`: one per resource with a proxy, traffic or not, sorted by
/// name; a resource some of whose proxies did not answer says so in `proxies_answering`.
pub fn stat(reading: &Reading, query: &StatQuery) -> Vec<StatRow> {
    let identities = reading.identities();
    let mut groups: BTreeMap<String, (usize, usize, Counts, u64)> = BTreeMap::new();
    for p in &reading.proxies {
        let Some(workload) = &p.workload else {
            continue;
        };
        if query
            .namespace
            .as_ref()
            .is_some_and(|ns| *ns != workload.namespace)
        {
            continue;
        }
        let group = groups.entry(query.by.name_of(workload)).or_default();
        group.1 += 1;
        let Some(delta) = &p.delta else {
            continue;
        };
        group.0 += 1;
        for (key, counts) in &delta.series {
            if selected(query, key, &identities) {
                group.2.add(counts);
                if key.peer.is_some() {
                    group.3 += counts.requests;
                }
            }
        }
    }
    let secs = reading.interval.as_secs_f64();
    groups
        .into_iter()
        .map(|(name, (answering, known, counts, meshed))| {
            let decided = counts.successes + counts.failures;
            let ms = |q| counts.latency.quantile(q).map(|s| s * 1e3);
            StatRow {
                name,
                proxies_answering: answering,
                proxies: known,
                requests: counts.requests,
                success_rate: (decided > 0).then(|| counts.successes as f64 / decided as f64),
                rps: if secs > 0.0 {
                    counts.requests as f64 / secs
                } else {
                    0.0
                },
                p50_ms: ms(0.5),
                p95_ms: ms(0.95),
                p99_ms: ms(0.99),
                meshed: (counts.requests > 0).then(|| meshed as f64 / counts.requests as f64),
                counts,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(ns: &str, deployment: &str, pod: &str) -> Workload {
        Workload {
            namespace: ns.into(),
            deployment: deployment.into(),
            pod: pod.into(),
        }
    }

    #[test]
    fn resources_are_named_as_people_name_them() {
        let w = workload("shop", "web", "web-0");
        for (s, hit) in [
            ("web", true),
            ("deploy/web", true),
            ("deploy/shop/web", true),
            ("shop/web", true),
            ("other/web", false),
            ("pod/web-0", true),
            ("po/web-1", false),
            ("ns/shop", true),
            ("api", false),
        ] {
            assert_eq!(ResourceRef::parse(s).matches(&w), hit, "{s}");
        }
        let api = ResourceRef::parse("api");
        assert!(api.named_by("api") && api.named_by("api.shop.svc.cluster.local:80"));
        assert!(!api.named_by("apis:80"));
        assert!(ResourceRef::parse("ns/shop").named_by("api.shop:80"));
    }
}
