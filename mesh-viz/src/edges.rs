//! `edges`: who calls whom, with both sides' identities and whether the calls were mTLS, read
//! from the servers' inbound series (each knows its authenticated client) and the clients'
//! outbound ones (each knows its server's identity, and what it called without mTLS). The
//! counts are the caller's where its proxy is read (what the caller saw), else the server's.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::Direction;
use crate::stat::{Reading, Resource};

/// One edge: calls from `src` to `dst` over the interval.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Edge {
    /// The caller (`namespace/deployment`, or its identity when no proxy here carries it, or
    /// `unknown` for a caller without mTLS).
    pub src: String,
    /// The callee (likewise; an unmeshed destination is named by its authority).
    pub dst: String,
    /// The caller's identity, as the server's proxy authenticated it.
    pub client_id: Option<String>,
    /// The server's identity, as the client's proxy verified it.
    pub server_id: Option<String>,
    /// Whether the calls were mTLS (an identity was verified on either side).
    pub mtls: bool,
    /// Requests over the interval: what the caller's proxy counted (each request once, retries
    /// inside it), else what the server's counted (each try).
    pub requests: u64,
    /// Successes over decided requests, from the same side as `requests`: with a caller's
    /// proxy, the success the caller saw (after retries).
    pub success_rate: Option<f64>,
}

/// The edges between resources of kind `by` (deployments, typically), sorted.
pub fn edges(reading: &Reading, by: Resource) -> Vec<Edge> {
    let identities = reading.identities();
    let name_of_id = |id: &str| -> String {
        match identities.get(id).and_then(|ws| ws.first()) {
            Some(w) => by.name_of(w),
            None => id.to_owned(),
        }
    };
    // (src, dst) -> both identities, and the counts each side kept.
    #[derive(Default)]
    struct Sides {
        client_id: Option<String>,
        server_id: Option<String>,
        mtls: bool,
        inbound: (u64, u64, u64),
        outbound: (u64, u64, u64),
    }
    let mut found: BTreeMap<(String, String), Sides> = BTreeMap::new();
    for p in &reading.proxies {
        let (Some(workload), Some(delta)) = (&p.workload, &p.delta) else {
            continue;
        };
        let me = by.name_of(workload);
        for (key, counts) in &delta.series {
            if counts.requests == 0 {
                continue;
            }
            let tally = (counts.requests, counts.successes, counts.failures);
            match key.direction {
                Direction::Inbound => {
                    let src = key
                        .peer
                        .as_deref()
                        .map_or_else(|| "unknown".to_owned(), name_of_id);
                    let sides = found.entry((src, me.clone())).or_default();
                    sides.client_id = sides.client_id.take().or(key.peer.clone());
                    sides.server_id = sides.server_id.take().or(p.identity.clone());
                    sides.mtls |= key.peer.is_some();
                    add(&mut sides.inbound, tally);
                }
                Direction::Outbound => {
                    let dst = match key.peer.as_deref() {
                        Some(id) => name_of_id(id),
                        None => key.authority.clone().unwrap_or_else(|| "unknown".into()),
                    };
                    let sides = found.entry((me.clone(), dst)).or_default();
                    sides.server_id = sides.server_id.take().or(key.peer.clone());
                    if key.peer.is_some() {
                        sides.client_id = sides.client_id.take().or(p.identity.clone());
                    }
                    sides.mtls |= key.peer.is_some();
                    add(&mut sides.outbound, tally);
                }
            }
        }
    }
    found
        .into_iter()
        .map(|((src, dst), s)| {
            let (requests, ok, failed) = if s.inbound.0 > 0 {
                s.inbound
            } else {
                s.outbound
            };
            Edge {
                src,
                dst,
                mtls: s.mtls,
                client_id: s.client_id,
                server_id: s.server_id,
                requests,
                success_rate: (ok + failed > 0).then(|| ok as f64 / (ok + failed) as f64),
            }
        })
        .collect()
}

fn add(into: &mut (u64, u64, u64), n: (u64, u64, u64)) {
    into.0 += n.0;
    into.1 += n.1;
    into.2 += n.2;
}
