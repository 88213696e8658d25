//! Routing: requests to services by authority ([`Router`]), and route names for metrics by
//! path prefix ([`RouteTable`]).

mod error;
mod future;
mod table;

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use tower::{Service, ServiceExt};

pub use self::error::NoRouteError;
pub use self::future::RouteFuture;
pub use self::table::RouteTable;
use crate::error::BoxError;

/// Sends each request to the service of its authority (the URI's, or else the `Host` header's),
/// matched with its port or by host alone, ignoring case. A request for an authority no service
/// has fails with [`NoRouteError`], which [`error_response`](crate::error_response) answers
/// with 404 (gRPC `UNIMPLEMENTED`), or 400 for an HTTP/1 absolute-form target (the mesh is
/// not a forward proxy). Looking up allocates nothing unless the authority has
/// upper-case letters. Cheap to clone (shared).
///
/// ```
/// use mesh_core::route::Router;
/// use tower::ServiceExt;
///
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// let answer = |name: &'static str| {
///     tower::service_fn(move |_req: http::Request<()>| async move {
///         Ok::<_, std::convert::Infallible>(http::Response::new(name))
///     })
/// };
/// let router = Router::new([("web", answer("web")), ("api:8080", answer("api"))]);
/// let req = http::Request::builder().header("host", "WEB:80").body(())?;
/// assert_eq!(*router.clone().oneshot(req).await?.body(), "web");
/// let req = http::Request::builder().uri("http://nowhere/").body(())?;
/// let err = router.oneshot(req).await.expect_err("no such service");
/// assert!(err.to_string().contains("\"nowhere\""));
/// # Ok::<(), mesh_core::BoxError>(())
/// # })?;
/// # Ok::<(), mesh_core::BoxError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Router<S> {
    routes: Arc<HashMap<String, S>>,
    /// The configured authorities, listed for the error.
    known: Arc<str>,
}

impl<S> Router<S> {
    /// Routes each authority to its service; an authority given twice keeps the first.
    pub fn new<A: AsRef<str>>(routes: impl IntoIterator<Item = (A, S)>) -> Self {
        let mut table = HashMap::new();
        for (authority, service) in routes {
            table
                .entry(authority.as_ref().to_ascii_lowercase())
                .or_insert(service);
        }
        let mut known: Vec<&str> = table.keys().map(String::as_str).collect();
        known.sort_unstable();
        let known = if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        };
        Self {
            routes: Arc::new(table),
            known: known.into(),
        }
    }

    /// The service of `authority`, with its port or by host alone, ignoring case.
    pub fn lookup(&self, authority: &str) -> Option<&S> {
        if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            let lower = authority.to_ascii_lowercase();
            let host = lower.rsplit_once(':').map_or(lower.as_str(), |(h, _)| h);
            return self.routes.get(&lower).or_else(|| self.routes.get(host));
        }
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        self.routes.get(authority).or_else(|| self.routes.get(host))
    }
}

/// The authority a request names: its URI's, or else its `Host` header's.
fn authority_of<B>(req: &Request<B>) -> &str {
    req.uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(http::header::HOST)?.to_str().ok())
        .unwrap_or_default()
}

/// An HTTP/1 request whose target was absolute-form (HTTP/2 requests always carry a scheme
/// and authority in their URI).
pub fn is_absolute_form<B>(req: &Request<B>) -> bool {
    req.version() < http::Version::HTTP_2 && req.uri().scheme().is_some()
}

impl<S, B> Service<Request<B>> for Router<S>
where
    S: Service<Request<B>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = RouteFuture<S, Request<B>>;

    /// Always ready: each request readies its own route's service.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let authority = authority_of(&req);
        match self.lookup(authority) {
            Some(service) => RouteFuture::Routed(service.clone().oneshot(req)),
            None => {
                let error = NoRouteError::new(authority, &self.known);
                let error = if is_absolute_form(&req) {
                    error.absolute_form()
                } else {
                    error
                };
                RouteFuture::NoRoute(Some(error))
            }
        }
    }
}
