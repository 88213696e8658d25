//! Test fixtures shared by the mesh crates (feature `test-util`): real hyper servers and clients
//! on 127.0.0.1, a raw HTTP/2 server that refuses requests ([`RefusingH2Server`]), bodies that
//! stream, stall or carry trailers, and child processes that cannot
//! outlive the test ([`Supervised`], for the fixtures' etcd, kube-apiserver and SPIRE).
//!
//! Not for production use: errors are reported, but the helpers favour brevity.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::channel::{Channel, Sender};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::error::BoxError;

mod process;
mod refusing_h2;

pub use self::process::{Supervised, free_port};
pub use self::refusing_h2::{
    H2Act, INTERNAL_ERROR, REFUSED_STREAM, RefusingH2Server, SeenRequest, h2_frame,
};

/// The body type of test requests and responses.
pub type TestBody = BoxBody<Bytes, BoxError>;

/// A body with these bytes.
pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> TestBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A body fed frame by frame through the returned sender (data, then trailers); dropping the
/// sender ends it, and `Sender::abort` fails it.
pub fn streaming() -> (Sender<Bytes, BoxError>, TestBody) {
    let (tx, body) = Channel::new(4);
    (tx, body.boxed())
}

/// A body that sends `first`, then nothing for `stall`, then ends: a server stalled mid-body.
pub fn stalled_after(first: &'static [u8], stall: std::time::Duration) -> TestBody {
    let (mut tx, body) = streaming();
    tokio::spawn(async move {
        if tx.send_data(Bytes::from_static(first)).await.is_ok() {
            tokio::time::sleep(stall).await;
        }
    });
    body
}

/// A body that sends `first`, then fails after `after`: the server resets the stream (HTTP/2)
/// or closes the connection (HTTP/1.1).
pub fn failing_after(first: &'static [u8], after: std::time::Duration) -> TestBody {
    let (mut tx, body) = streaming();
    tokio::spawn(async move {
        if tx.send_data(Bytes::from_static(first)).await.is_ok() {
            tokio::time::sleep(after).await;
            tx.abort("the handler failed mid-body".into());
        }
    });
    body
}

/// A gRPC-style response: `200`, `content-type: application/grpc`, the message bytes, then
/// `trailers`.
pub fn grpc_response(message: &'static [u8], trailers: HeaderMap) -> Response<TestBody> {
    let body = Full::new(Bytes::from_static(message))
        .with_trailers(async move { Some(Ok(trailers)) })
        .map_err(|never: Infallible| match never {})
        .boxed();
    Response::builder()
        .header("content-type", "application/grpc")
        .body(body)
        .unwrap_or_else(|_| Response::new(empty()))
}

/// Trailers holding `grpc-status` (and nothing else).
pub fn grpc_trailers(status: &'static str) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert(
        crate::grpc::GRPC_STATUS,
        http::HeaderValue::from_static(status),
    );
    trailers
}

/// HTTP versions a [`TestClient`] speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpVersion {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 with prior knowledge.
    Http2,
}

/// A hyper server on 127.0.0.1 that speaks HTTP/1.1 and HTTP/2 (prior knowledge) on one port.
/// Stops accepting when dropped.
pub struct TestServer {
    addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl TestServer {
    /// Starts a server answering every request with `handler`.
    pub async fn start<H, F>(handler: H) -> io::Result<Self>
    where
        H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<TestBody>> + Send + 'static,
    {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        Self::start_on(listener, handler)
    }

    /// Like [`TestServer::start`], on a listener the test made (in a network namespace of its
    /// own, say).
    pub fn start_on<H, F>(listener: TcpListener, handler: H) -> io::Result<Self>
    where
        H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<TestBody>> + Send + 'static,
    {
        let addr = listener.local_addr()?;
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let handler = handler.clone();
                tokio::spawn(serve_connection(stream, handler));
            }
        });
        Ok(Self { addr, accept })
    }

    /// Starts a server answering every request with a clone of the tower service `svc` (for
    /// testing layers on the server side).
    pub async fn serve<S, B>(svc: S) -> io::Result<Self>
    where
        S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let svc = hyper_util::service::TowerToHyperService::new(svc.clone());
                tokio::spawn(async move {
                    let served = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                    // A test that cares about the connection's end checks it from the client.
                    drop(served);
                });
            }
        });
        Ok(Self { addr, accept })
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Serves one connection, HTTP/1.1 or HTTP/2, with `handler`; returns when the connection ends.
pub async fn serve_connection<I, H, F>(io: I, handler: H) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<TestBody>> + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let rsp = handler(req);
        async move { Ok::<_, Infallible>(rsp.await) }
    });
    auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service)
        .await
}

/// A hyper client connection to a [`TestServer`] (or anything else on loopback).
pub struct TestClient {
    sender: Connection,
    addr: SocketAddr,
}

enum Connection {
    Http1(hyper::client::conn::http1::SendRequest<TestBody>),
    Http2(hyper::client::conn::http2::SendRequest<TestBody>),
}

impl TestClient {
    /// Connects to `addr` over TCP and completes the HTTP handshake for `version`.
    pub async fn connect(addr: SocketAddr, version: HttpVersion) -> Result<Self, BoxError> {
        let stream = TcpStream::connect(addr).await?;
        Self::handshake(stream, addr, version).await
    }

    /// Completes the HTTP handshake for `version` over an established connection to `addr`.
    pub async fn handshake<I>(
        io: I,
        addr: SocketAddr,
        version: HttpVersion,
    ) -> Result<Self, BoxError>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        let sender = match version {
            HttpVersion::Http1 => {
                let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
                tokio::spawn(conn.with_upgrades());
                Connection::Http1(sender)
            }
            HttpVersion::Http2 => {
                let (sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(conn);
                Connection::Http2(sender)
            }
        };
        Ok(Self { sender, addr })
    }

    /// A request builder for `path` with the right URI form and `Host` for this connection.
    pub fn request(&self, path: &str) -> http::request::Builder {
        let builder = Request::builder().uri(format!("http://{}{path}", self.addr));
        match self.sender {
            Connection::Http1(_) => builder.header(http::header::HOST, self.addr.to_string()),
            Connection::Http2(_) => builder.version(http::Version::HTTP_2),
        }
    }

    /// Sends `req` and waits for the response head.
    pub async fn send(&mut self, req: Request<TestBody>) -> Result<Response<Incoming>, BoxError> {
        let rsp = match &mut self.sender {
            Connection::Http1(sender) => {
                sender.ready().await?;
                sender.send_request(req).await?
            }
            Connection::Http2(sender) => {
                sender.ready().await?;
                sender.send_request(req).await?
            }
        };
        Ok(rsp)
    }

    /// Sends `GET path` with an empty body.
    pub async fn get(&mut self, path: &str) -> Result<Response<Incoming>, BoxError> {
        let req = self.request(path).body(empty())?;
        self.send(req).await
    }
}

/// A tower service sending each request over a fresh [`TestClient`] connection to `addr`, so
/// that layers can be tested against a real server.
#[derive(Clone, Copy, Debug)]
pub struct ConnectService {
    addr: SocketAddr,
    version: HttpVersion,
}

impl ConnectService {
    /// Requests go to `addr` over `version`.
    pub fn new(addr: SocketAddr, version: HttpVersion) -> Self {
        Self { addr, version }
    }
}

impl<B> tower::Service<Request<B>> for ConnectService
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Incoming>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Self { addr, version } = *self;
        let req = req.map(|body| body.map_err(Into::into).boxed());
        Box::pin(async move {
            let mut client = TestClient::connect(addr, version).await?;
            client.send(req).await
        })
    }
}

/// An address on loopback where nothing listens (bound, then released).
pub async fn closed_port() -> io::Result<SocketAddr> {
    let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
    listener.local_addr()
}
