//! Outbound routing in Kubernetes mode: configured services first; any other authority is
//! resolved through the control plane's destination API the first time it is asked for, and
//! its stack (the same layers as a configured service's) is kept for the next requests.
//!
//! Looking up a known authority is one atomic load and one hash lookup (arc-swap, no lock);
//! only the first request for a new authority takes a lock, to build its stack once. That first
//! request waits (at most the service's deadline) for the control plane's first answer, so an
//! unknown authority is a clear 404 ("no such service"), not a wait for a timeout.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use mesh_api::destination::destination_client::DestinationClient;
use mesh_balance::discover::destination::{DestinationConfig, DestinationReport, watch};
use mesh_core::BoxError;
use mesh_core::route::{NoRouteError, Router};
use tower::{Service, ServiceExt};

use super::outbound::ServiceStack;
use super::serve::ProxyBody;

/// Builds the stack of a discovered authority from its endpoint updates.
pub(crate) type MakeStack =
    Arc<dyn Fn(&str, mesh_balance::discover::Updates) -> ServiceStack + Send + Sync>;

/// A discovered authority.
#[derive(Clone)]
struct Discovered {
    /// The authority, for the "no such service" error (shared, so requests copy no text).
    authority: Arc<str>,
    stack: ServiceStack,
    report: DestinationReport,
}

/// How discovered authorities are made.
#[derive(Clone)]
pub(crate) struct Resolver {
    client: DestinationClient<tonic::transport::Channel>,
    make: MakeStack,
    namespace: String,
    first_answer: std::time::Duration,
}

impl Resolver {
    /// Resolves over `channel`, building stacks with `make`.
    pub(crate) fn new(
        channel: tonic::transport::Channel,
        make: MakeStack,
        namespace: String,
        first_answer: std::time::Duration,
    ) -> Self {
        Self {
            client: DestinationClient::new(channel),
            make,
            namespace,
            first_answer,
        }
    }
}

/// The outbound router: configured routes, then (with a resolver) discovered ones.
#[derive(Clone)]
pub(crate) struct OutboundRoutes {
    configured: Router<ServiceStack>,
    resolver: Option<Resolver>,
    discovered: Arc<ArcSwap<HashMap<String, Discovered>>>,
    building: Arc<Mutex<()>>,
}

impl OutboundRoutes {
    /// Routes to `configured`, and through `resolver` for anything else.
    pub(crate) fn new(configured: Router<ServiceStack>, resolver: Option<Resolver>) -> Self {
        Self {
            configured,
            resolver,
            discovered: Arc::default(),
            building: Arc::default(),
        }
    }

    /// The discovered authorities and how many endpoints each has, for `/endpoints`.
    pub(crate) fn discovered(&self) -> Vec<(String, usize)> {
        let mut list: Vec<_> = self
            .discovered
            .load()
            .iter()
            .map(|(a, d)| (a.clone(), d.report.endpoints()))
            .collect();
        list.sort();
        list
    }

    /// The stack of the service the destination API knows at `addr` (a ClusterIP and port),
    /// for a transparently intercepted connection: `None` when there is no control plane, it
    /// knows no such service, or it has not answered within its first-answer deadline (the
    /// connection is then egress, not a guess).
    pub(crate) async fn by_address(&self, addr: std::net::SocketAddr) -> Option<ServiceStack> {
        let resolver = self.resolver.as_ref()?;
        let discovered = self.discovered_for(resolver, &addr.to_string());
        if !discovered.report.has_received() {
            let _ = tokio::time::timeout(resolver.first_answer, discovered.report.answered()).await;
        }
        if !discovered.report.has_received() || discovered.report.no_such_service().is_some() {
            return None;
        }
        Some(discovered.stack)
    }

    fn discovered_for(&self, resolver: &Resolver, authority: &str) -> Discovered {
        if let Some(found) = self.discovered.load().get(authority) {
            return found.clone();
        }
        let _building = self.building.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = self.discovered.load().get(authority) {
            return found.clone();
        }
        let config = DestinationConfig {
            context_namespace: resolver.namespace.clone(),
            ..DestinationConfig::default()
        };
        let (updates, report) = watch(resolver.client.clone(), authority, config);
        let made = Discovered {
            authority: Arc::from(authority),
            stack: (resolver.make)(authority, updates),
            report,
        };
        let mut next = HashMap::clone(&self.discovered.load());
        next.insert(authority.to_owned(), made.clone());
        self.discovered.store(Arc::new(next));
        made
    }
}

/// The authority a request names: its URI's, or else its `Host` header's.
fn raw_authority<B>(req: &Request<B>) -> &str {
    req.uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(http::header::HOST)?.to_str().ok())
        .unwrap_or_default()
}

/// `raw` in lower case with the default port when it has none (so that `web` and `web:80` are
/// one service); borrowed when it already is (the usual case: no allocation).
fn normalized(raw: &str) -> Cow<'_, str> {
    let has_port = raw
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok());
    match (raw.bytes().any(|b| b.is_ascii_uppercase()), has_port) {
        (false, true) => Cow::Borrowed(raw),
        (_, true) => Cow::Owned(raw.to_ascii_lowercase()),
        (_, false) => Cow::Owned(format!("{}:80", raw.to_ascii_lowercase())),
    }
}

type RouteFuture = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, BoxError>> + Send>>;

impl Service<Request<Incoming>> for OutboundRoutes {
    type Response = Response<ProxyBody>;
    type Error = BoxError;
    type Future = RouteFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let discovered = match &self.resolver {
            None => None,
            Some(resolver) => {
                let raw = raw_authority(&req);
                // Configured services first (the router matches with or without the port, in
                // any case); an empty authority is the router's 404 to give.
                if raw.is_empty() || self.configured.lookup(raw).is_some() {
                    None
                } else {
                    let wait = resolver.first_answer;
                    Some((self.discovered_for(resolver, &normalized(raw)), wait))
                }
            }
        };
        let Some((discovered, wait)) = discovered else {
            return Box::pin(self.configured.clone().oneshot(req));
        };
        Box::pin(async move {
            if !discovered.report.has_received() {
                let _ = tokio::time::timeout(wait, discovered.report.answered()).await;
            }
            if let Some(reason) = discovered.report.no_such_service() {
                return Err(NoRouteError::unknown(&discovered.authority, &reason).into());
            }
            discovered.stack.oneshot(req).await
        })
    }
}
