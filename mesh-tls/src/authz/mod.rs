//! Authorization by peer identity: a layer that answers 403 (or gRPC PERMISSION_DENIED) to
//! peers its policy does not admit, forwarding nothing.

mod policy;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use mesh_core::PeerIdentity;
use mesh_core::grpc::{self, GrpcCode};
use pin_project::pin_project;
use tower::{Layer, Service};

pub use self::policy::{AuthzPolicy, IdentityPattern, PatternError};

/// Admits requests whose [`PeerIdentity`] the policy permits; answers the others itself:
/// 403 Forbidden, or for gRPC requests a trailers-only response with `PERMISSION_DENIED` (7).
/// Unauthenticated peers (plaintext in permissive mode) and requests without a peer are never
/// admitted.
///
/// ```
/// use http_body_util::Empty;
/// use mesh_core::{Identity, PeerIdentity};
/// use mesh_tls::authz::{AuthorizeLayer, AuthzPolicy};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// let policy = AuthzPolicy::allow(["spiffe://mesh.local/ns/*/sa/web"])?;
/// let svc = ServiceBuilder::new()
///     .layer(AuthorizeLayer::new(policy))
///     .service_fn(|_req: http::Request<()>| async {
///         Ok::<_, std::convert::Infallible>(http::Response::new(Empty::<bytes::Bytes>::new()))
///     });
/// let mut req = http::Request::new(());
/// let peer = Identity::parse("spiffe://mesh.local/ns/shop/sa/db")?;
/// req.extensions_mut().insert(PeerIdentity::Authenticated(peer));
/// let rsp = svc.oneshot(req).await?;
/// assert_eq!(rsp.status(), 403);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct AuthorizeLayer {
    policy: SharedPolicy,
}

impl AuthorizeLayer {
    /// Enforces `policy`.
    pub fn new(policy: AuthzPolicy) -> Self {
        Self {
            policy: SharedPolicy::new(policy),
        }
    }

    /// Enforces whatever `policy` holds when each request arrives: a policy streamed from a
    /// control plane applies to the next request, without a restart.
    pub fn shared(policy: SharedPolicy) -> Self {
        Self { policy }
    }
}

/// A policy that can be replaced while services enforce it. Reading it costs an atomic load
/// (arc-swap), no lock.
#[derive(Clone, Debug, Default)]
pub struct SharedPolicy(Arc<ArcSwap<AuthzPolicy>>);

impl SharedPolicy {
    /// Holds `policy` to begin with.
    pub fn new(policy: AuthzPolicy) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(policy)))
    }

    /// Replaces it; requests arriving from now on are decided by `policy`.
    pub fn replace(&self, policy: AuthzPolicy) {
        self.0.store(Arc::new(policy));
    }

    /// The policy now.
    pub fn current(&self) -> Arc<AuthzPolicy> {
        self.0.load_full()
    }
}

impl<S> Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// The service made by [`AuthorizeLayer`].
#[derive(Clone, Debug)]
pub struct Authorize<S> {
    inner: S,
    policy: SharedPolicy,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Authorize<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    type Response = Response<AuthzBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let peer = PeerIdentity::of(&req);
        if self.policy.0.load().permits(peer) {
            return ResponseFuture::Inner(self.inner.call(req));
        }
        let who = peer.map_or_else(|| "no peer".to_owned(), ToString::to_string);
        let message = format!("peer {who} is not authorized");
        tracing::debug!(%who, path = req.uri().path(), "request refused");
        let rsp = if grpc::is_grpc(req.headers()) {
            grpc::trailers_only(GrpcCode::PERMISSION_DENIED, &message)
        } else {
            let mut rsp = Response::new(AuthzBody::from(Bytes::from(message + "\n")));
            *rsp.status_mut() = StatusCode::FORBIDDEN;
            rsp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            rsp
        };
        ResponseFuture::Denied(Some(rsp))
    }
}

/// The response future of [`Authorize`].
#[pin_project(project = FutureProj)]
#[derive(Debug)]
pub enum ResponseFuture<F, B> {
    /// Admitted: the inner service's response.
    Inner(#[pin] F),
    /// Refused: the answer, handed out once.
    Denied(Option<Response<AuthzBody<B>>>),
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<AuthzBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            FutureProj::Inner(f) => f.poll(cx).map_ok(|rsp| rsp.map(AuthzBody::Inner)),
            // Polled again after completion: answer with an empty refusal rather than panic.
            FutureProj::Denied(rsp) => Poll::Ready(Ok(rsp.take().unwrap_or_else(|| {
                let mut rsp = Response::new(AuthzBody::Error(None));
                *rsp.status_mut() = StatusCode::FORBIDDEN;
                rsp
            }))),
        }
    }
}

/// The body of an authorized response, or of the refusal (the refusal's text is mesh-core's
/// `Error` variant: the mesh's own answer).
pub type AuthzBody<B> = mesh_core::error::ErrorResponseBody<B>;
