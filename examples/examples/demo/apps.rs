//! The demo's applications. A sends HTTP requests to B and C; B and C answer A by asking each
//! other over gRPC. Each app serves HTTP and gRPC on one port, and reaches the others only
//! through its own outbound proxy.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use examples::grpc::stock_client::StockClient;
use examples::grpc::stock_server::{Stock, StockServer};
use examples::grpc::{CheckReply, CheckRequest};
use futures_util::Stream;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tower::ServiceExt;

type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, tonic::Status>;

/// How a replica behaves: its name, extra latency, and the share of requests it fails.
#[derive(Clone, Debug)]
pub(crate) struct Behaviour {
    pub(crate) pod: &'static str,
    pub(crate) delay: Duration,
    /// Fails this many requests in every ten.
    pub(crate) fail_per_ten: u64,
}

/// One app instance: its behaviour, the peer it asks over gRPC (known once its proxy runs),
/// and a request counter.
pub(crate) struct App {
    behaviour: Behaviour,
    peer_name: &'static str,
    peer: OnceLock<StockClient<Channel>>,
    seen: AtomicU64,
}

impl App {
    /// Sends the app's gRPC calls through the outbound proxy at `outbound`.
    pub(crate) fn connect_peer(
        &self,
        outbound: SocketAddr,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{outbound}"))?
            .origin(format!("http://{}", self.peer_name).parse()?)
            .timeout(Duration::from_secs(5))
            .connect_lazy();
        let _ = self.peer.set(StockClient::new(channel));
        Ok(())
    }
}

impl App {
    /// Whether this request is one of the failing share (spread evenly, deterministic).
    async fn misbehave(&self) -> bool {
        tokio::time::sleep(self.behaviour.delay).await;
        let n = self.seen.fetch_add(1, Ordering::Relaxed);
        n % 10 < self.behaviour.fail_per_ten
    }
}

/// The app's gRPC face.
#[derive(Clone)]
struct StockApi(Arc<App>);

#[tonic::async_trait]
impl Stock for StockApi {
    async fn check(
        &self,
        req: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckReply>, tonic::Status> {
        if self.0.misbehave().await {
            return Err(tonic::Status::unavailable(format!(
                "{} is having a bad day",
                self.0.behaviour.pod
            )));
        }
        let item = req.into_inner().item;
        Ok(tonic::Response::new(CheckReply {
            count: (item.len() as u32) * 7,
            item,
            served_by: self.0.behaviour.pod.into(),
        }))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<CheckReply, tonic::Status>> + Send>>;

    async fn watch(
        &self,
        _req: tonic::Request<tonic::Streaming<CheckRequest>>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("the demo only checks"))
    }
}

/// Starts an app on 127.0.0.1 that answers A's HTTP requests by asking `peer` over gRPC
/// (once [`App::connect_peer`] says through which proxy), and answers gRPC itself.
pub(crate) async fn start(
    behaviour: Behaviour,
    peer: &'static str,
) -> std::io::Result<(SocketAddr, Arc<App>)> {
    let app = Arc::new(App {
        behaviour,
        peer_name: peer,
        peer: OnceLock::new(),
        seen: AtomicU64::new(0),
    });
    let handle = Arc::clone(&app);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let grpc = StockServer::new(StockApi(Arc::clone(&app)));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (app, grpc) = (Arc::clone(&app), grpc.clone());
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (app, grpc) = (Arc::clone(&app), grpc.clone());
                async move { Ok::<_, Infallible>(answer(app, grpc, req).await) }
            });
            tokio::spawn(serve(tcp, service));
        }
    });
    Ok((addr, handle))
}

async fn answer(
    app: Arc<App>,
    grpc: StockServer<StockApi>,
    req: Request<Incoming>,
) -> Response<BoxBody> {
    if mesh_core::grpc::is_grpc(req.headers()) {
        return match grpc.oneshot(req).await {
            Ok(rsp) => rsp.map(|b| b.boxed_unsync()),
            Err(never) => match never {},
        };
    }
    if app.misbehave().await {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{} is having a bad day\n", app.behaviour.pod),
        );
    }
    let item = req
        .uri()
        .path()
        .rsplit('/')
        .next()
        .unwrap_or("thing")
        .to_owned();
    let Some(mut peer) = app.peer.get().cloned() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not connected yet\n".into(),
        );
    };
    match peer.check(CheckRequest { item: item.clone() }).await {
        Ok(reply) => {
            let reply = reply.into_inner();
            text(
                StatusCode::OK,
                format!(
                    "{}: {} in stock (asked {} over gRPC)\n",
                    item, reply.count, reply.served_by
                ),
            )
        }
        Err(status) => text(
            StatusCode::BAD_GATEWAY,
            format!("the peer failed: {}\n", status.message()),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<BoxBody> {
    let mut rsp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *rsp.status_mut() = status;
    rsp
}

/// App A: a plain HTTP server (its inbound side has nothing to serve in this demo) on
/// 127.0.0.1.
pub(crate) async fn start_frontend() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let service = hyper::service::service_fn(|_req: Request<Incoming>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"a\n"))))
            });
            tokio::spawn(serve(tcp, service));
        }
    });
    Ok(addr)
}

/// A's traffic: `workers` loops, each sending a request every `pause`, alternating between B
/// and C, through A's outbound proxy. Runs until aborted.
pub(crate) fn generate_load(
    outbound: SocketAddr,
    workers: usize,
    pause: Duration,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    (0..workers)
        .map(|worker| {
            let client = client.clone();
            tokio::spawn(async move {
                for n in 0u64.. {
                    let (host, path) = if (n + worker as u64) % 2 == 0 {
                        ("b", "items")
                    } else {
                        ("c", "prices")
                    };
                    let req = Request::builder()
                        .uri(format!(
                            "http://{outbound}/{path}/{}",
                            ["apples", "pears", "figs"][(n % 3) as usize]
                        ))
                        .header(http::header::HOST, host)
                        .body(Empty::new());
                    if let Ok(req) = req
                        && let Ok(rsp) = client.request(req).await
                    {
                        let _ = rsp.into_body().collect().await;
                    }
                    tokio::time::sleep(pause).await;
                }
            })
        })
        .collect()
}

/// Serves one connection, HTTP/1 or HTTP/2.
async fn serve<S, B>(tcp: tokio::net::TcpStream, service: S)
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Without this, a gRPC answer's separate writes (headers, data, trailers) meet Nagle's
    // algorithm and the peer's delayed ACK: 40 ms stalls.
    let _ = tcp.set_nodelay(true);
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tcp), service)
        .await;
}
