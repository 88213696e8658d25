//! The admin listener: `/metrics` (Prometheus text), `/ready`, `/live`, `/tap` (NDJSON, with
//! filters as query parameters), `/endpoints` (every balancer's view, as JSON) and `/config`
//! (the configuration in force, as JSON).

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use mesh_metrics::Registry;
use mesh_metrics::tap::serve_tap;
use serde_json::json;
use tokio::net::TcpListener;

use super::Shared;
use super::config::Config;
use super::identity::Status;
use super::outbound::SnapshotFn;
use mesh_core::drain::Drain;
use mesh_core::serve::serve_connection_with;

use super::serve::{Listener, ProxyBody, boxed};

/// What the admin pages read.
pub(crate) struct Admin {
    pub(crate) registry: Registry,
    pub(crate) shared: Shared,
    pub(crate) snapshots: Vec<(String, &'static str, SnapshotFn)>,
    pub(crate) config: Config,
    pub(crate) drain: Arc<Drain>,
    /// The outbound routes, for the authorities discovered through the control plane.
    pub(crate) routes: super::resolve::OutboundRoutes,
    /// The credentials in force (withdrawn ones make the proxy not ready).
    pub(crate) store: mesh_tls::CredentialStore,
}

/// What the admin listener serves: from the start, how the identity source is doing; once the
/// proxy has started, every page.
pub(crate) struct Slot {
    identity: Status,
    admin: OnceLock<Admin>,
}

impl Slot {
    /// A proxy still waiting for its identity.
    pub(crate) fn new(identity: Status) -> Self {
        Self {
            identity,
            admin: OnceLock::new(),
        }
    }

    /// The proxy has started: every page is served.
    pub(crate) fn started(&self, admin: Admin) {
        let _ = self.admin.set(admin);
    }

    fn answer(&self, req: &Request<Incoming>) -> Response<ProxyBody> {
        if req.method() != Method::GET {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET is served here\n".into(),
            );
        }
        let Some(admin) = self.admin.get() else {
            let why = self
                .identity
                .not_ready()
                .unwrap_or_else(|| "loading the identity".into());
            return match req.uri().path() {
                "/live" => text(StatusCode::OK, "live\n".into()),
                _ => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("starting: {why}\n"),
                ),
            };
        };
        if req.uri().path() == "/ready" {
            if admin.drain.is_draining() {
                return text(StatusCode::SERVICE_UNAVAILABLE, "draining\n".into());
            }
            if let Some(why) = admin
                .store
                .withdrawn()
                .or_else(|| self.identity.not_ready())
            {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("no identity: {why}\n"),
                );
            }
            return text(StatusCode::OK, "ready\n".into());
        }
        admin.answer(req, &self.identity)
    }
}

/// Serves the admin pages until the task is aborted (the admin listener outlives draining, so
/// that `/ready` can say the proxy is going away).
pub(crate) async fn serve(listener: TcpListener, admin: Arc<Slot>, bounds: Listener) {
    // Admin connections are never told to drain: their watch belongs to a drain of their own
    // that is never signalled.
    let (_never, watch) = Drain::new();
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(admission) = bounds.admit(&tcp, peer) else {
            continue;
        };
        let admin = Arc::clone(&admin);
        let service = tower::service_fn(move |req: Request<Incoming>| {
            let admin = Arc::clone(&admin);
            async move { Ok::<_, Infallible>(admin.answer(&req)) }
        });
        let (watch, serve) = (watch.clone(), bounds.serve.clone());
        tokio::spawn(async move {
            let _admission = admission;
            serve_connection_with(tcp, http::Version::HTTP_11, service, watch, serve).await;
        });
    }
}

impl Admin {
    fn answer(&self, req: &Request<Incoming>, identity: &Status) -> Response<ProxyBody> {
        match req.uri().path() {
            "/metrics" => {
                let mut rsp = text(StatusCode::OK, self.registry.encode());
                rsp.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(mesh_metrics::CONTENT_TYPE),
                );
                rsp
            }
            "/live" => text(StatusCode::OK, "live\n".into()),
            "/tap" => serve_tap(&self.shared.tap, req).map(boxed),
            "/endpoints" => json_response(&self.endpoints(identity)),
            "/config" => json_response(&serde_json::to_value(&self.config).unwrap_or_default()),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found; try /metrics, /ready, /live, /tap, /endpoints or /config\n".into(),
            ),
        }
    }

    fn endpoints(&self, identity: &Status) -> serde_json::Value {
        let services: Vec<_> = self
            .snapshots
            .iter()
            .map(|(name, protocol, snapshot)| {
                let endpoints: Vec<_> = snapshot()
                    .into_iter()
                    .map(|e| {
                        json!({
                            "addr": e.addr.to_string(),
                            "status": format!("{:?}", e.status).to_lowercase(),
                            "ewma_ms": e.ewma.as_secs_f64() * 1e3,
                            "outstanding": e.outstanding,
                            "weight": e.weight,
                            "consecutive_failures": e.consecutive_failures,
                            "probe_in_ms": e.probe_in.map(|d| d.as_millis() as u64),
                        })
                    })
                    .collect();
                json!({ "service": name, "protocol": protocol, "endpoints": endpoints })
            })
            .collect();
        let discovered: Vec<_> = self
            .routes
            .discovered()
            .into_iter()
            .map(|(authority, endpoints)| json!({ "authority": authority, "endpoints": endpoints }))
            .collect();
        json!({ "services": services, "discovered": discovered, "identity": identity.json() })
    }
}

fn text(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut rsp = Response::new(boxed(Full::new(Bytes::from(body))));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp
}

fn json_response(value: &serde_json::Value) -> Response<ProxyBody> {
    let mut body = serde_json::to_string_pretty(value).unwrap_or_default();
    body.push('\n');
    let mut rsp = text(StatusCode::OK, body);
    rsp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    rsp
}
