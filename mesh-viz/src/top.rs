//! `top`: the busiest paths, live, from tap events: counts, successes and latency per
//! (direction, authority, method, path), as `linkerd viz top` shows them.

use std::collections::HashMap;

use serde::Serialize;

use crate::tap::TapEvent;

/// One row of `top`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TopRow {
    /// Inbound or outbound.
    pub direction: String,
    /// The authority.
    pub authority: String,
    /// The method.
    pub method: String,
    /// The path.
    pub path: String,
    /// Requests seen.
    pub count: u64,
    /// Of which succeeded.
    pub successes: u64,
    /// The fastest, milliseconds.
    pub best_ms: f64,
    /// The slowest, milliseconds.
    pub worst_ms: f64,
    /// The mean, milliseconds.
    pub mean_ms: f64,
}

/// The tally behind `top`, bounded: past `max_paths` distinct paths, new ones are counted
/// only in `others` (a scan of unique paths cannot grow it without bound).
#[derive(Debug)]
pub struct Top {
    rows: HashMap<(String, String, String, String), TopRow>,
    max_paths: usize,
    /// Events past the bound on paths.
    pub others: u64,
}

impl Top {
    /// A tally of at most `max_paths` paths.
    pub fn new(max_paths: usize) -> Self {
        Self {
            rows: HashMap::new(),
            max_paths,
            others: 0,
        }
    }

    /// Counts one event.
    pub fn add(&mut self, e: &TapEvent) {
        let key = (
            e.direction.clone(),
            e.authority.clone().unwrap_or_default(),
            e.method.clone(),
            e.path.clone(),
        );
        if !self.rows.contains_key(&key) && self.rows.len() >= self.max_paths {
            self.others += 1;
            return;
        }
        let ms = e.total_latency_us as f64 / 1e3;
        let row = self.rows.entry(key).or_insert_with_key(|k| TopRow {
            direction: k.0.clone(),
            authority: k.1.clone(),
            method: k.2.clone(),
            path: k.3.clone(),
            best_ms: ms,
            worst_ms: ms,
            ..TopRow::default()
        });
        row.mean_ms = (row.mean_ms * row.count as f64 + ms) / (row.count + 1) as f64;
        row.count += 1;
        if e.outcome == "success" {
            row.successes += 1;
        }
        row.best_ms = row.best_ms.min(ms);
        row.worst_ms = row.worst_ms.max(ms);
    }

    /// The `n` busiest rows, busiest first (ties by path).
    pub fn busiest(&self, n: usize) -> Vec<TopRow> {
        let mut rows: Vec<TopRow> = self.rows.values().cloned().collect();
        rows.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.path.cmp(&b.path)));
        rows.truncate(n);
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(path: &str, us: u64, outcome: &str) -> TapEvent {
        TapEvent {
            direction: "outbound".into(),
            method: "GET".into(),
            authority: Some("api".into()),
            path: path.into(),
            peer: None,
            status: Some(200),
            grpc_status: None,
            outcome: outcome.into(),
            headers_latency_us: Some(us),
            total_latency_us: us,
        }
    }

    #[test]
    fn the_busiest_come_first_and_paths_are_bounded() {
        let mut top = Top::new(2);
        for _ in 0..3 {
            top.add(&event("/a", 2000, "success"));
        }
        top.add(&event("/b", 1000, "failure (HTTP 503)"));
        top.add(&event("/c", 1000, "success"));
        let rows = top.busiest(10);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].path.as_str(), rows[0].count, rows[0].successes),
            ("/a", 3, 3)
        );
        assert_eq!((rows[1].path.as_str(), rows[1].successes), ("/b", 0));
        assert_eq!(top.others, 1);
        assert_eq!(rows[0].mean_ms, 2.0);
    }
}
