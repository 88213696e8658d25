//! The load harness's baseline hop: a bare hyper reverse proxy (hyper-util's auto server and
//! pooled legacy client, HTTP/1.1), with no mesh layer at all. `benches/load/proxy.sh` runs it
//! beside `mesh-proxy`, so that the cost of the mesh's layers can be told apart from hyper's.
//!
//! Usage: `bare_hop LISTEN TARGET`, e.g. `bare_hop 127.0.0.1:18086 127.0.0.1:18080`.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

type Body = BoxBody<Bytes, hyper::Error>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(target)) = (args.next(), args.next()) else {
        return Err("usage: bare_hop LISTEN TARGET".into());
    };
    let target: SocketAddr = target.parse()?;
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build_http();
    let listener = tokio::net::TcpListener::bind(listen.as_str()).await?;
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let client = client.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                forward(client.clone(), target, req)
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .http1_only()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

async fn forward(
    client: Client<HttpConnector, Incoming>,
    target: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    match format!("http://{target}{path}").parse() {
        Ok(uri) => *req.uri_mut() = uri,
        Err(_) => return Ok(status(StatusCode::BAD_REQUEST)),
    }
    Ok(match client.request(req).await {
        Ok(rsp) => rsp.map(BodyExt::boxed),
        Err(_) => status(StatusCode::BAD_GATEWAY),
    })
}

fn status(code: StatusCode) -> Response<Body> {
    let mut rsp = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *rsp.status_mut() = code;
    rsp
}
