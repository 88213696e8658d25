//! Each request is classified exactly once on each side of the mesh: the outbound proxy's
//! metrics, retries and balancer share the balancer's one classification, and the inbound's
//! metrics join the one made above authorization. Counted with a strategy that wraps the
//! mesh's default and counts every decision it is asked for, through real proxies (outbound ->
//! mTLS -> inbound) in front of a real HTTP app and a real tonic gRPC app.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use examples::grpc::stock_client::StockClient;
use examples::grpc::stock_server::{Stock, StockServer};
use examples::grpc::{CheckReply, CheckRequest};
use examples::proxy::{Config, Proxy, Running};
use http::{HeaderMap, Request, Response};
use mesh_core::Class;
use mesh_core::classify::{
    AutoClassify, AutoEos, AutoResponse, Classify, ClassifyEos, ClassifyResponse,
};
use mesh_core::test_util::{HttpVersion, TestClient, TestServer, full};
use support::Mesh;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

/// How often each decision was asked for.
#[derive(Debug, Default)]
struct Counts {
    requests: AtomicU64,
    heads: AtomicU64,
    ends: AtomicU64,
    head_reads: AtomicU64,
}

impl Counts {
    fn get(&self) -> [u64; 4] {
        [
            self.requests.load(Relaxed),
            self.heads.load(Relaxed),
            self.ends.load(Relaxed),
            self.head_reads.load(Relaxed),
        ]
    }
}

/// The mesh's default rules, counted.
#[derive(Clone, Debug, Default)]
struct Counting(Arc<Counts>);

struct CountingResponse(AutoResponse, Arc<Counts>);

struct CountingEos(AutoEos, Arc<Counts>);

impl Classify for Counting {
    type Response = CountingResponse;

    fn classify_request<B>(&self, req: &Request<B>) -> CountingResponse {
        self.0.requests.fetch_add(1, Relaxed);
        CountingResponse(
            AutoClassify::new().classify_request(req),
            Arc::clone(&self.0),
        )
    }
}

impl ClassifyResponse for CountingResponse {
    type Eos = CountingEos;

    fn classify_response<B>(self, rsp: &Response<B>) -> CountingEos {
        self.1.heads.fetch_add(1, Relaxed);
        CountingEos(self.0.classify_response(rsp), self.1)
    }
}

impl ClassifyEos for CountingEos {
    fn classify_eos(self, trailers: Option<&HeaderMap>) -> Class {
        self.1.ends.fetch_add(1, Relaxed);
        self.0.classify_eos(trailers)
    }

    fn classify_error(self, err: &(dyn std::error::Error + 'static)) -> Class {
        self.1.ends.fetch_add(1, Relaxed);
        self.0.classify_error(err)
    }

    fn classify_cancelled(self) -> Class {
        self.1.ends.fetch_add(1, Relaxed);
        self.0.classify_cancelled()
    }

    fn classify_head(&self) -> Option<Class> {
        self.1.head_reads.fetch_add(1, Relaxed);
        self.0.classify_head()
    }
}

async fn proxy(mesh: &Mesh, name: &str, sections: &str, classify: Counting) -> Running {
    let text = mesh.config_text(name, sections);
    let config = Config::parse(&text, Path::new("test.toml")).expect("test config");
    Proxy::start_with_classify(config, classify)
        .await
        .expect("proxy starts")
}

/// A server proxy for `service` in front of `app` and a client proxy `client` that knows it,
/// each classifying with its own counting strategy: (client, outbound counts, inbound counts).
async fn pair(
    mesh: &Mesh,
    service: &str,
    app: std::net::SocketAddr,
    client: &str,
) -> (Running, Running, Counting, Counting) {
    let (outbound_counts, inbound_counts) = (Counting::default(), Counting::default());
    let server_sections = Mesh::server_sections(app, &[client]);
    let server = proxy(mesh, service, &server_sections, inbound_counts.clone()).await;
    let sections = format!(
        "[outbound]\nlisten = \"127.0.0.1:0\"\n\n[[service]]\nname = \"{service}\"\n\
         authorities = [\"{service}\"]\nidentity = {:?}\nendpoints = [\"{}\"]\n",
        support::id(service).as_str(),
        server.inbound.expect("inbound"),
    );
    let client = proxy(mesh, client, &sections, outbound_counts.clone()).await;
    (client, server, outbound_counts, inbound_counts)
}

/// Waits (bounded) until `counts` reach `expected`, then checks they stay there.
async fn settle(counts: &Counts, expected: u64, side: &str) {
    let want = [expected; 4];
    for _ in 0..200 {
        if counts.get() == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        counts.get(),
        want,
        "{side}: [requests, response heads, ends, head reads] for {expected} requests"
    );
}

/// Answers like a plain HTTP app.
async fn hello(_req: Request<hyper::body::Incoming>) -> Response<mesh_core::test_util::TestBody> {
    Response::new(full("hello"))
}

struct Letters;

#[tonic::async_trait]
impl Stock for Letters {
    async fn check(
        &self,
        req: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckReply>, tonic::Status> {
        let item = req.into_inner().item;
        if item == "missing" {
            return Err(tonic::Status::not_found("no such item"));
        }
        Ok(tonic::Response::new(CheckReply {
            count: item.len() as u32,
            item,
            served_by: "letters".into(),
        }))
    }

    type WatchStream = std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<CheckReply, tonic::Status>> + Send>,
    >;

    async fn watch(
        &self,
        _req: tonic::Request<tonic::Streaming<CheckRequest>>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("not here"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requests_are_classified_once_on_each_side() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let mesh = Mesh::new("classify-once-http");
        let app = TestServer::start(hello).await.expect("app");
        let (client, _server, outbound_counts, inbound_counts) =
            pair(&mesh, "web", app.addr(), "client").await;
        let outbound = client.outbound.expect("outbound");
        let n = 20;
        for version in [HttpVersion::Http1, HttpVersion::Http2] {
            let mut conn = TestClient::connect(outbound, version)
                .await
                .expect("connect");
            for _ in 0..n / 2 {
                let (status, body) = support::get(&mut conn, "web", "/hello").await;
                assert_eq!((status, body.as_str()), (200, "hello"));
            }
        }
        settle(&outbound_counts.0, n, "outbound").await;
        settle(&inbound_counts.0, n, "inbound").await;
    })
    .await
    .expect("in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_with_trailers_are_classified_once_on_each_side() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let mesh = Mesh::new("classify-once-grpc");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let app = listener.local_addr().expect("addr");
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(StockServer::new(Letters))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        let (client, _server, outbound_counts, inbound_counts) =
            pair(&mesh, "stock", app, "shop").await;
        let channel =
            support::grpc_channel(client.outbound.expect("outbound"), "http://stock").await;
        let mut stock = StockClient::new(channel);
        // Successes end with `grpc-status: 0` in the trailers, after the message; a failure
        // (not found, not retryable) comes as a trailers-only response.
        for item in ["apples", "pears", "plums", "figs", "missing"] {
            let answer = stock.check(CheckRequest { item: item.into() }).await;
            match item {
                "missing" => {
                    assert_eq!(answer.expect_err("not found").code(), tonic::Code::NotFound)
                }
                _ => assert_eq!(
                    answer.expect("found").into_inner().count as usize,
                    item.len()
                ),
            }
        }
        settle(&outbound_counts.0, 5, "outbound").await;
        settle(&inbound_counts.0, 5, "inbound").await;
        // The metrics saw the same one classification: four successes, one failure.
        let text = support::admin_get(client.admin, "/metrics").await;
        let outcome = |o: &str| {
            support::sample(
                &text,
                "mesh_http_outcomes_total",
                &[("direction", "outbound"), ("outcome", o)],
            )
        };
        assert_eq!((outcome("success"), outcome("failure")), (4, 1), "{text}");
    })
    .await
    .expect("in time");
}
