//! What the dashboard shows: the latest reading's tables, and a short history per deployment
//! for the sparklines.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use crate::edges::{Edge, edges};
use crate::stat::{ProxyReading, Reading, Resource, StatQuery, StatRow, stat};

/// The page's data at one moment (`/api/state`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Snapshot {
    /// The stat table, by deployment.
    pub stat: Vec<StatRow>,
    /// Who calls whom, counted since the proxies started.
    pub edges: Vec<Edge>,
    /// Every proxy, answering or not.
    pub proxies: Vec<ProxyReading>,
    /// Per deployment: recent RPS and success rates, oldest first.
    pub history: BTreeMap<String, History>,
    /// How many readings were taken.
    pub readings: u64,
}

/// A deployment's recent figures, one per reading.
#[derive(Clone, Debug, Default, Serialize)]
pub struct History {
    /// Requests per second.
    pub rps: VecDeque<f64>,
    /// Success rate (0 to 1), `null` without requests.
    pub success: VecDeque<Option<f64>>,
}

pub(super) struct State {
    snapshot: Snapshot,
    keep: usize,
}

impl State {
    pub(super) fn new(keep: usize) -> Self {
        Self {
            snapshot: Snapshot::default(),
            keep: keep.max(2),
        }
    }

    /// The first reading (totals since each proxy started): tables only, no rates yet.
    pub(super) fn first(&mut self, totals: &Reading) {
        self.tables(totals, totals);
    }

    /// A reading over the last interval (the stat table, a point of history) and the totals
    /// since the proxies started (the edges).
    pub(super) fn update(&mut self, reading: &Reading, totals: &Reading) {
        self.tables(reading, totals);
        for row in &self.snapshot.stat {
            let h = self.snapshot.history.entry(row.name.clone()).or_default();
            h.rps.push_back(row.rps);
            h.success.push_back(row.success_rate);
            while h.rps.len() > self.keep {
                h.rps.pop_front();
                h.success.pop_front();
            }
        }
    }

    fn tables(&mut self, reading: &Reading, totals: &Reading) {
        let query = StatQuery {
            by: Resource::Deployment,
            ..StatQuery::default()
        };
        self.snapshot.stat = stat(reading, &query);
        self.snapshot.edges = edges(totals, Resource::Deployment);
        self.snapshot.proxies = reading.proxies.clone();
        self.snapshot.readings += 1;
    }

    pub(super) fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }
}
