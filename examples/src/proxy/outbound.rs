//! The outbound side: the local app's requests, routed by authority to a service, each
//! service a stack of mesh layers (metrics and tap, timeout, retry, balancer) over meshed
//! endpoints; and opaque TCP, detected or on dedicated ports, to a service's endpoints.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, Version};
use hyper::body::Incoming;
use mesh_balance::{Balance, BalanceConfig, Balancer, EndpointSnapshot};
use mesh_core::detect::{DetectConfig, Protocol, detect_protocol};
use mesh_core::drain::DrainWatch;
use mesh_core::retry::{ReplayBody, RetryLayer, RetryPolicy};
use mesh_core::route::{RouteTable, Router};
use mesh_core::serve::serve_connection_with;
use mesh_core::{BoxError, Class, Endpoint, TimeoutLayer};
use mesh_metrics::{Direction, HttpLabels, MetricsLayer};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use super::config::{self, Config};
use super::discovery;
use super::edge::edge;
use super::endpoint::{EndpointClient, TcpEndpoint, endpoint_client};
use super::resolve::OutboundRoutes;
use super::serve::{Listener, ProxyBody, accept, boxed};
use super::transparent::Redirected;
use super::{ProxyClassify, Shared, StartError, tcp};

/// What `/endpoints` shows of one balancer.
pub(crate) type SnapshotFn = Arc<dyn Fn() -> Vec<EndpointSnapshot> + Send + Sync>;

/// One service's stack, boxed: the routing table holds services of different types.
pub(crate) type ServiceStack =
    BoxCloneSyncService<Request<Incoming>, Response<ProxyBody>, BoxError>;

/// The request body the endpoints get: the app's, replayable for retries.
type OutboundBody = ReplayBody<Incoming>;

/// A service's balancer: each try's one classification is made here.
pub(crate) type OutboundBalance<C> = Balance<EndpointClient<OutboundBody>, OutboundBody, C>;

/// The services' HTTP routes and TCP balancers, and their balancers' snapshots.
pub(crate) struct Services {
    pub(crate) router: Router<ServiceStack>,
    pub(crate) tcp: HashMap<String, TcpBalance>,
    pub(crate) snapshots: Vec<(String, &'static str, SnapshotFn)>,
    /// Transparent mode: each fixed endpoint address, and the service it belongs to.
    pub(crate) by_addr: HashMap<SocketAddr, Meshed>,
}

/// A meshed destination of a transparent outbound side: the service's HTTP stack and its TCP
/// balancer.
#[derive(Clone)]
pub(crate) struct Meshed {
    pub(crate) http: ServiceStack,
    pub(crate) tcp: TcpBalance,
}

/// A service's balancer for opaque TCP connections: the balancer core itself, each pick a
/// connection whose outcome (connected or refused) it records.
pub(crate) type TcpBalance = Balancer<TcpEndpoint>;

/// Builds every configured service.
pub(crate) fn services<C: ProxyClassify>(
    config: &Config,
    shared: &Shared,
    classify: &C,
) -> Result<Services, StartError> {
    let mut routes = Vec::new();
    let mut tcp = HashMap::new();
    let mut snapshots = Vec::new();
    let mut by_addr = HashMap::new();
    let transparent = config.outbound.as_ref().is_some_and(|o| o.transparent);
    let tcp_names: Vec<&str> = config
        .outbound
        .iter()
        .flat_map(|o| {
            o.tcp
                .iter()
                .map(|t| t.service.get_ref().as_str())
                .chain(o.opaque_service.as_ref().map(|s| s.get_ref().as_str()))
        })
        .collect();
    for service in &config.services {
        let name = service.name.get_ref().clone();
        let mut http = None;
        if !service.authorities.is_empty() || transparent {
            let updates = discovery::updates(service)?;
            let (stack, balance) = http_service(service, updates, shared, classify.clone())?;
            for authority in &service.authorities {
                routes.push((authority.get_ref().clone(), stack.clone()));
            }
            snapshots.push((
                name.clone(),
                "http",
                snapshot_fn(move || balance.snapshot()),
            ));
            http = Some(stack);
        }
        if tcp_names.contains(&name.as_str()) || transparent {
            let tls = shared.tls.clone();
            let identity = service.identity.as_ref().map(|i| i.0.clone());
            let balance = Balancer::new(
                discovery::updates(service)?,
                move |e: &Endpoint| TcpEndpoint::new(&tls, e, identity.as_ref()),
                BalanceConfig::default(),
            );
            let snapshot = balance.clone();
            snapshots.push((
                name.clone(),
                "tcp",
                snapshot_fn(move || snapshot.snapshot()),
            ));
            if let (Some(http), Some(endpoints)) = (&http, &service.endpoints) {
                for addr in endpoints {
                    let meshed = Meshed {
                        http: http.clone(),
                        tcp: balance.clone(),
                    };
                    by_addr.insert(addr.0, meshed);
                }
            }
            tcp.insert(name, balance);
        }
    }
    Ok(Services {
        router: Router::new(routes),
        tcp,
        snapshots,
        by_addr,
    })
}

fn snapshot_fn(snapshot: impl Fn() -> Vec<EndpointSnapshot> + Send + Sync + 'static) -> SnapshotFn {
    Arc::new(snapshot)
}

/// One service's stack: metrics and tap, a deadline on the response headers (all tries), retries
/// within a budget, and the balancer over its endpoints.
pub(crate) fn http_service<C: ProxyClassify>(
    service: &config::Service,
    updates: mesh_balance::discover::Updates,
    shared: &Shared,
    classify: C,
) -> Result<(ServiceStack, OutboundBalance<C>), StartError> {
    let tls = shared.tls.clone();
    let identity = service.identity.as_ref().map(|i| i.0.clone());
    let balance = Balance::new(
        updates,
        move |e: &Endpoint| endpoint_client(&tls, e, identity.as_ref()),
        BalanceConfig::default(),
    )
    .with_classify(classify);
    let retry = &service.retry;
    let mut policy = RetryPolicy::new()
        .max_attempts(retry.attempts)
        .body_cap(retry.body_cap)
        .retry_non_idempotent(retry.non_idempotent)
        .retry_resets(retry.on_reset);
    if let Some(statuses) = &retry.statuses {
        let statuses = statuses
            .iter()
            .filter_map(|s| http::StatusCode::from_u16(*s).ok());
        policy = policy.statuses(statuses);
    }
    if let Some(per_try) = retry.per_try_timeout {
        policy = policy.per_try_timeout(per_try.0);
    }
    let budget = retry
        .budget()
        .map_err(|e| StartError::Retry(service.name.get_ref().clone(), e))?;
    let routes = RouteTable::new(
        service
            .routes
            .iter()
            .map(|r| (r.path_prefix.as_str(), &r.name)),
    );
    let peer = service.identity.as_ref().map(|i| i.0.clone());
    let labeler = move |req: &Request<Incoming>| {
        let mut labels = HttpLabels::from_request(Direction::Outbound, req);
        labels.route = routes.name(req.uri().path());
        labels.peer = peer.clone();
        labels
    };
    let stack = ServiceBuilder::new()
        .layer(
            MetricsLayer::new(shared.metrics.clone(), labeler)
                .with_tap(shared.tap.clone(), Direction::Outbound),
        )
        .layer(TimeoutLayer::new().response_headers(service.timeout.0))
        .layer(RetryLayer::new(policy, Arc::new(budget)))
        .service(balance.clone());
    let stack = ServiceBuilder::new()
        .map_response(|rsp: Response<_>| rsp.map(boxed))
        .service(stack);
    Ok((BoxCloneSyncService::new(stack), balance))
}

/// What the connections of an outbound listener are served with.
#[derive(Clone)]
pub(crate) struct OutboundSide {
    pub(crate) outbound: config::Outbound,
    pub(crate) router: OutboundRoutes,
    /// Where opaque connections go, if anywhere.
    pub(crate) opaque: Option<TcpBalance>,
    /// Transparent mode: the meshed destinations by address.
    pub(crate) meshed: Arc<HashMap<SocketAddr, Meshed>>,
    pub(crate) shared: Shared,
    pub(crate) bounds: Listener,
}

/// Accepts the app's connections on the outbound listener until the proxy drains.
pub(crate) async fn serve(listener: TcpListener, side: OutboundSide, mut drain: DrainWatch) {
    let OutboundSide {
        outbound,
        router,
        opaque,
        meshed,
        shared,
        bounds,
    } = side;
    let detect = DetectConfig::default().timeout(outbound.detect_timeout.0);
    let series = shared
        .tcp_metrics
        .series(&HttpLabels::new(Direction::Outbound));
    while let Some((tcp, admission)) = accept(&listener, &mut drain, &bounds).await {
        if outbound.transparent {
            let redirected = Redirected {
                meshed: Arc::clone(&meshed),
                routes: router.clone(),
                egress: outbound.egress,
                detect,
                shared: shared.clone(),
                serve: bounds.serve.clone(),
            };
            let conn_drain = drain.clone();
            bounds.spawn(tcp, &series, move |io| async move {
                let _admission = admission;
                redirected.serve(io, conn_drain).await;
            });
            continue;
        }
        let (router, opaque, conn_drain) = (router.clone(), opaque.clone(), drain.clone());
        let serve = bounds.serve.clone();
        bounds.spawn(tcp, &series, move |io| async move {
            let _admission = admission;
            let detected = match detect_protocol(io, detect).await {
                Ok(detected) => detected,
                Err(e) => return tracing::debug!(error = %e, "outbound detection failed"),
            };
            let service = edge(router);
            match (detected.protocol, opaque) {
                (Protocol::Http1, _) => {
                    serve_connection_with(detected.io, Version::HTTP_11, service, conn_drain, serve)
                        .await
                }
                (Protocol::Http2, _) => {
                    serve_connection_with(detected.io, Version::HTTP_2, service, conn_drain, serve)
                        .await
                }
                (Protocol::Opaque, Some(balance)) => {
                    Box::pin(forward(detected.io, balance, conn_drain)).await
                }
                (Protocol::Opaque, None) => {
                    tracing::info!(
                        "closing an opaque connection: no `outbound.opaque_service` is configured"
                    );
                }
            }
        });
    }
}

/// Accepts connections on a dedicated opaque port (no detection) until the proxy drains.
pub(crate) async fn serve_tcp(
    listener: TcpListener,
    balance: TcpBalance,
    shared: Shared,
    name: String,
    bounds: Listener,
    mut drain: DrainWatch,
) {
    let mut labels = HttpLabels::new(Direction::Outbound);
    labels.authority = http::uri::Authority::try_from(name.as_str()).ok();
    let series = shared.tcp_metrics.series(&labels);
    while let Some((tcp, admission)) = accept(&listener, &mut drain, &bounds).await {
        let (balance, conn_drain) = (balance.clone(), drain.clone());
        bounds.spawn(tcp, &series, move |io| async move {
            let _admission = admission;
            forward(io, balance, conn_drain).await;
        });
    }
}

/// Sends an opaque connection's bytes to the endpoint the balancer picks, over mTLS. The
/// connection attempt is the pick's outcome: its latency feeds the load estimate, and a refused
/// or failed handshake counts toward the endpoint's failure accrual.
///
/// A task that may serve HTTP instead boxes this future: it holds a TLS client handshake
/// (about 4 KB) that every HTTP connection's task would otherwise carry too.
pub(crate) async fn forward<I>(io: I, balance: TcpBalance, drain: DrainWatch)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let pick = match balance.pick_ready().await {
        Ok(pick) => pick,
        Err(e) => return tracing::warn!(error = %e, "opaque connection: no endpoint is ready"),
    };
    let mut outcome = pick.outcome;
    match pick.target.connect().await {
        Ok(upstream) => {
            outcome.responded(false);
            outcome.record(Class::Success);
            tcp::splice(io, upstream, drain).await;
        }
        Err(e) => {
            tracing::warn!(error = %e, endpoint = %outcome.endpoint(), "opaque connection: the endpoint could not be reached");
            outcome.record(Class::of_error(&*e));
        }
    }
}
