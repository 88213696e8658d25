//! `tap` across proxies: each proxy's `/tap` stream read at once, its lines labelled with the
//! proxy's workload and merged. A reader slower than the traffic never slows a proxy: when
//! this side stops reading, the proxy's own tap queue fills and drops (and says how many in a
//! `{"dropped":N}` line, passed on here).

use std::time::Duration;

use bytes::BytesMut;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::fetch;
use crate::model::Workload;
use crate::scrape::Target;

/// One tapped request, as a proxy reports it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct TapEvent {
    /// Inbound or outbound.
    pub direction: String,
    /// The method.
    pub method: String,
    /// The authority.
    pub authority: Option<String>,
    /// The path.
    pub path: String,
    /// The authenticated peer.
    pub peer: Option<String>,
    /// The HTTP status, if a response came.
    pub status: Option<u16>,
    /// The gRPC status, if any.
    pub grpc_status: Option<u16>,
    /// The outcome as the mesh classified it (`success`, `failure (HTTP 503)`, ...).
    pub outcome: String,
    /// Microseconds to the response headers.
    pub headers_latency_us: Option<u64>,
    /// Microseconds to the end.
    pub total_latency_us: u64,
}

/// Which requests to see: sent to each proxy (authority, path prefix, method) and checked here
/// (status, which a proxy's filter does not know before the response).
#[derive(Clone, Debug, Default)]
pub struct TapFilter {
    /// The exact authority.
    pub authority: Option<String>,
    /// A path prefix.
    pub path_prefix: Option<String>,
    /// The method.
    pub method: Option<String>,
    /// The HTTP status.
    pub status: Option<u16>,
}

impl TapFilter {
    fn query(&self) -> String {
        let mut q = Vec::new();
        for (k, v) in [
            ("authority", &self.authority),
            ("path_prefix", &self.path_prefix),
            ("method", &self.method),
        ] {
            if let Some(v) = v {
                q.push(format!("{k}={}", fetch::percent_encode(v)));
            }
        }
        q.join("&")
    }

    /// Whether `e` passes the part of the filter checked here.
    pub fn admits(&self, e: &TapEvent) -> bool {
        self.status.is_none_or(|s| e.status == Some(s))
    }
}

/// What a tap across proxies yields.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TapItem {
    /// A request seen by a proxy.
    Event {
        /// The proxy's admin address.
        target: Target,
        /// Its workload, when known.
        workload: Option<Workload>,
        /// The request (boxed: the other items are small).
        event: Box<TapEvent>,
    },
    /// A proxy dropped events this reader was too slow for (its running total).
    Dropped {
        /// The proxy.
        target: Target,
        /// Events lost so far.
        dropped: u64,
    },
    /// A proxy's stream could not be had, or ended.
    Failed {
        /// The proxy.
        target: Target,
        /// Why.
        error: String,
    },
}

/// The longest line read from a tap stream.
const MAX_LINE: usize = 256 * 1024;

/// Taps every proxy in `targets` (with its workload, for labels) and merges their events into
/// one channel of `buffer` items; `connect` bounds each connection's wait for its head.
pub fn tap(
    targets: Vec<(Target, Option<Workload>)>,
    filter: TapFilter,
    buffer: usize,
    connect: Duration,
) -> mpsc::Receiver<TapItem> {
    let (tx, rx) = mpsc::channel(buffer.max(1));
    for (target, workload) in targets {
        let (tx, filter) = (tx.clone(), filter.clone());
        tokio::spawn(async move {
            if let Err(error) = stream(&target, workload, &filter, &tx, connect).await {
                let _ = tx.send(TapItem::Failed { target, error }).await;
            }
        });
    }
    rx
}

async fn stream(
    target: &Target,
    workload: Option<Workload>,
    filter: &TapFilter,
    tx: &mpsc::Sender<TapItem>,
    connect: Duration,
) -> Result<(), String> {
    let authority = fetch::authority_of(&target.0).map_err(|e| e.to_string())?;
    let path = format!("/tap?{}", filter.query());
    let rsp = tokio::time::timeout(connect, fetch::open(&authority, &path))
        .await
        .map_err(|_| format!("timeout: no answer within {connect:?}"))?
        .map_err(|e| e.to_string())?;
    if rsp.status() != http::StatusCode::OK {
        return Err(format!("answered {}", rsp.status()));
    }
    let mut body = rsp.into_body();
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("the stream broke: {e}"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line = buf.split_to(end + 1);
            let item = parse_line(target, &workload, &line[..end])?;
            if let Some(item) = item {
                if let TapItem::Event { event, .. } = &item {
                    if !filter.admits(event) {
                        continue;
                    }
                }
                if tx.send(item).await.is_err() {
                    return Ok(());
                }
            }
        }
        if buf.len() > MAX_LINE {
            return Err(format!("garbage: a line over {MAX_LINE} bytes"));
        }
    }
    Err("the stream ended".to_owned())
}

fn parse_line(
    target: &Target,
    workload: &Option<Workload>,
    line: &[u8],
) -> Result<Option<TapItem>, String> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| format!("garbage: {e}"))?;
    if let Some(dropped) = value.get("dropped").and_then(serde_json::Value::as_u64) {
        return Ok(Some(TapItem::Dropped {
            target: target.clone(),
            dropped,
        }));
    }
    let event: Box<TapEvent> =
        serde_json::from_value(value).map_err(|e| format!("garbage: {e}"))?;
    Ok(Some(TapItem::Event {
        target: target.clone(),
        workload: workload.clone(),
        event,
    }))
}
