//! The tables people read: `stat`, `edges`, `top` and one tap line, the same for the CLI, the
//! demo and anyone else printing a reading.

use crate::edges::Edge;
use crate::stat::{Reading, StatRow};
use crate::table::{Table, millis, percent};
use crate::tap::TapItem;
use crate::top::TopRow;

/// `stat`'s table: one line per row, with the proxies that did not answer said in `MESHED`'s
/// neighbour column `PROXIES` (`1/2`).
pub fn stat_table(rows: &[StatRow]) -> String {
    let mut t = Table::new([
        "NAME", "PROXIES", "SUCCESS", "RPS", "REQUESTS", "P50", "P95", "P99", "MESHED",
    ]);
    for r in rows {
        t.row([
            r.name.clone(),
            format!("{}/{}", r.proxies_answering, r.proxies),
            percent(r.success_rate),
            format!("{:.1}", r.rps),
            r.requests.to_string(),
            millis(r.p50_ms),
            millis(r.p95_ms),
            millis(r.p99_ms),
            percent(r.meshed),
        ]);
    }
    t.render()
}

/// The proxies that did not answer, one line each (empty when all did).
pub fn missing_proxies(reading: &Reading) -> String {
    let mut out = String::new();
    for p in reading.proxies.iter().filter(|p| p.error.is_some()) {
        let who = p
            .workload
            .as_ref()
            .map_or_else(String::new, |w| format!(" ({}/{})", w.namespace, w.pod));
        out.push_str(&format!(
            "proxy {}{who} not answering: {}\n",
            p.target.0,
            p.error.as_deref().unwrap_or_default()
        ));
    }
    out
}

/// `edges`' table.
pub fn edges_table(edges: &[Edge]) -> String {
    let mut t = Table::new([
        "SRC",
        "DST",
        "CLIENT_ID",
        "SERVER_ID",
        "MTLS",
        "REQUESTS",
        "SUCCESS",
    ]);
    for e in edges {
        t.row([
            e.src.clone(),
            e.dst.clone(),
            e.client_id.clone().unwrap_or_else(|| "-".into()),
            e.server_id.clone().unwrap_or_else(|| "-".into()),
            if e.mtls { "yes" } else { "no" }.to_owned(),
            e.requests.to_string(),
            percent(e.success_rate),
        ]);
    }
    t.render()
}

/// `top`'s table.
pub fn top_table(rows: &[TopRow]) -> String {
    let mut t = Table::new([
        "DIRECTION",
        "AUTHORITY",
        "METHOD",
        "PATH",
        "COUNT",
        "SUCCESS",
        "BEST",
        "WORST",
        "MEAN",
    ]);
    for r in rows {
        t.row([
            r.direction.clone(),
            r.authority.clone(),
            r.method.clone(),
            r.path.clone(),
            r.count.to_string(),
            percent((r.count > 0).then(|| r.successes as f64 / r.count as f64)),
            millis(Some(r.best_ms)),
            millis(Some(r.worst_ms)),
            millis(Some(r.mean_ms)),
        ]);
    }
    t.render()
}

/// One tap item as a line for people: `web-0 outbound GET api/work 200 success 1.2ms`.
pub fn tap_line(item: &TapItem) -> String {
    match item {
        TapItem::Event {
            target,
            workload,
            event: e,
        } => {
            let who = workload.as_ref().map_or_else(
                || target.0.clone(),
                |w| format!("{}/{}", w.namespace, w.pod),
            );
            let status = e.status.map_or_else(|| "-".into(), |s| s.to_string());
            let grpc = e
                .grpc_status
                .map_or_else(String::new, |g| format!(" grpc-status={g}"));
            format!(
                "{who} {} {} {}{} {status}{grpc} {} {:.1}ms peer={}",
                e.direction,
                e.method,
                e.authority.as_deref().unwrap_or("-"),
                e.path,
                e.outcome,
                e.total_latency_us as f64 / 1e3,
                e.peer.as_deref().unwrap_or("-"),
            )
        }
        TapItem::Dropped { target, dropped } => {
            format!(
                "{}: {dropped} events dropped (this reader was too slow)",
                target.0
            )
        }
        TapItem::Failed { target, error } => format!("{}: tap failed: {error}", target.0),
    }
}
