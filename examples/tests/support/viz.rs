//! A small meshed topology for mesh-viz's tests: deployment `web` (one proxy, outbound) calling
//! deployment `api` (two replicas, each an app behind an inbound proxy), mTLS between them.

use std::path::Path;
use std::time::Duration;

use examples::proxy::{Config, Proxy, Running};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use mesh_core::test_util::{TestBody, TestServer, full};
use mesh_viz::Target;

use super::Mesh;

/// How long the app takes for a fast path: inside one latency bucket (10 to 25 ms) with room
/// for the proxies' own time on a busy machine (debug builds, tests in parallel).
pub const FAST: Duration = Duration::from_millis(12);
/// How long `/slow` takes: inside the 100 to 250 ms bucket, likewise.
pub const SLOW: Duration = Duration::from_millis(120);

/// The api app: a path ending in `missing` is 404, in `fail` 500; one ending in `slow` takes
/// [`SLOW`], the rest [`FAST`].
pub async fn api_app(req: Request<Incoming>) -> Response<TestBody> {
    let path = req.uri().path().to_owned();
    tokio::time::sleep(if path.ends_with("slow") { SLOW } else { FAST }).await;
    let mut rsp = Response::new(full("api"));
    *rsp.status_mut() = if path.ends_with("missing") {
        StatusCode::NOT_FOUND
    } else if path.ends_with("fail") {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    rsp
}

/// The running topology.
pub struct Topology {
    pub mesh: Mesh,
    pub apps: Vec<TestServer>,
    pub api: Vec<Running>,
    pub web: Running,
}

impl Topology {
    pub async fn start(test: &str) -> Self {
        let mesh = Mesh::new(test);
        let mut apps = Vec::new();
        let mut api = Vec::new();
        for replica in 0..2 {
            let app = TestServer::start(api_app).await.expect("app");
            let text = mesh
                .config_text("api", &Mesh::server_sections(app.addr(), &["web"]))
                .replace("pod = \"api-0\"", &format!("pod = \"api-{replica}\""));
            let config = Config::parse(&text, Path::new("api.toml")).expect("config");
            api.push(Proxy::start(config).await.expect("api proxy"));
            apps.push(app);
        }
        let inbounds: Vec<_> = api.iter().map(|p| p.inbound.expect("inbound")).collect();
        let web = mesh.client("web", "api", "api", &inbounds, "").await;
        Self {
            mesh,
            apps,
            api,
            web,
        }
    }

    /// Every proxy's admin address, as mesh-viz takes them.
    pub fn targets(&self) -> Vec<Target> {
        std::iter::once(&self.web)
            .chain(&self.api)
            .map(|p| Target(p.admin.to_string()))
            .collect()
    }
}
