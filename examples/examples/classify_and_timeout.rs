//! Linking mesh layers into your own service: a hyper server whose app is wrapped in mesh-core's
//! classification and timeout layers, with errors answered by `error_response`.
//!
//! Run: `cargo run -p examples --example classify_and_timeout`. It starts the server on
//! 127.0.0.1, sends it three requests (fast, failing, too slow), prints what the client saw and
//! how the mesh classified each request, and exits.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use mesh_core::classify::{AutoClassify, Class, ClassifyLayer, NewOnClass};
use mesh_core::timeout::TimeoutLayer;
use mesh_core::{BoxError, error_response, grpc};
use tokio::net::{TcpListener, TcpStream};
use tower::{ServiceBuilder, ServiceExt};

/// Prints every request's outcome with its path and duration, once the response body ended.
#[derive(Clone, Copy)]
struct LogClass;

impl<B> NewOnClass<B> for LogClass {
    type OnClass = Box<dyn FnOnce(Class) + Send>;

    fn new_on_class(&mut self, req: &Request<B>) -> Self::OnClass {
        let what = format!("{} {}", req.method(), req.uri().path());
        let start = Instant::now();
        Box::new(move |class| println!("  mesh: {what} -> {class} after {:?}", start.elapsed()))
    }
}

/// The application: fast answers, failures and slow answers by path.
async fn app(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let rsp = match req.uri().path() {
        "/fail" => Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body(Full::from("overloaded\n")),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Response::builder().body(Full::from("finally\n"))
        }
        _ => Response::builder().body(Full::from("hello\n")),
    };
    Ok(rsp.unwrap_or_else(|_| Response::new(Full::default())))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;

    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            // The mesh layers around the app; errors become 504/503/502 (or gRPC statuses).
            let svc = ServiceBuilder::new()
                .layer(ClassifyLayer::new(AutoClassify::new(), LogClass))
                .layer(TimeoutLayer::new().response_headers(Duration::from_millis(500)))
                .service_fn(app);
            let svc = tower::service_fn(move |req: Request<Incoming>| {
                let grpc = grpc::is_grpc(req.headers());
                let call = svc.clone().oneshot(req);
                async move {
                    Ok::<_, Infallible>(match call.await {
                        Ok(rsp) => rsp.map(Either::Left),
                        Err(err) => error_response::<Full<Bytes>>(&*err, grpc).map(Either::Right),
                    })
                }
            });
            tokio::spawn(async move {
                let io = TokioIo::new(stream);
                let svc = TowerToHyperService::new(svc);
                if let Err(err) = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(io, svc)
                    .await
                {
                    eprintln!("connection failed: {err}");
                }
            });
        }
    });

    let stream = TcpStream::connect(addr).await?;
    let (mut client, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    for path in ["/hello", "/fail", "/slow"] {
        let req = Request::get(path)
            .header(http::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())?;
        client.ready().await?;
        let rsp = client.send_request(req).await?;
        let status = rsp.status();
        let body = rsp.into_body().collect().await?.to_bytes();
        println!(
            "GET {path}: {status} {}",
            String::from_utf8_lossy(&body).trim_end()
        );
        // Give the server's classification a moment to print before the next request.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
