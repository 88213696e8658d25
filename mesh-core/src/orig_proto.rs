//! The wire contract between proxies for HTTP/1: between proxies every request travels over
//! HTTP/2 (multiplexed on one connection), and [`ORIG_PROTO`] records that the app spoke
//! HTTP/1, so that the receiving proxy speaks HTTP/1 to its app again. As linkerd2-proxy does
//! it: [`OrigProtoUpgradeLayer`] on the sending side, [`OrigProtoDowngradeLayer`] on the
//! receiving side (both [`RewriteLayer`]s). Upgrades (WebSocket) cannot travel as HTTP/2 and stay HTTP/1 end to end.
//!
//! Both also drop the hop-by-hop headers, which describe one connection, not the request.
//!
//! ```
//! use http::{Request, Version};
//! use mesh_core::orig_proto::{ORIG_PROTO, OrigProtoDowngradeLayer, OrigProtoUpgradeLayer};
//! use tower::{Layer, ServiceBuilder, ServiceExt};
//!
//! # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
//! // The receiving proxy's app sees HTTP/1 again; the sender put HTTP/2 on the wire.
//! let app = tower::service_fn(|req: Request<()>| async move {
//!     assert_eq!(req.version(), Version::HTTP_11);
//!     assert!(req.headers().get(ORIG_PROTO).is_none());
//!     Ok::<_, std::convert::Infallible>(http::Response::new(()))
//! });
//! let wire = tower::service_fn(move |req: Request<()>| {
//!     assert_eq!(req.version(), Version::HTTP_2);
//!     OrigProtoDowngradeLayer::default().layer(app).oneshot(req)
//! });
//! let client = ServiceBuilder::new().layer(OrigProtoUpgradeLayer::default()).service(wire);
//! let req = Request::builder().version(Version::HTTP_11).body(())?;
//! client.oneshot(req).await?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use http::header::{HeaderName, HeaderValue};
use http::{Request, Version};

use crate::headers::{is_upgrade, strip_hop_by_hop};
use crate::rewrite::{RewriteLayer, RewriteRequest};

/// Marks a request that the app sent as HTTP/1.
pub const ORIG_PROTO: HeaderName = HeaderName::from_static("mesh-orig-proto");

/// The value of [`ORIG_PROTO`] for HTTP/1.
const HTTP1: HeaderValue = HeaderValue::from_static("HTTP/1.1");

/// The sending side: HTTP/1 requests leave as HTTP/2 marked with [`ORIG_PROTO`]; upgrades stay
/// HTTP/1; hop-by-hop headers are dropped. A client further in picks its connection by the
/// request's version.
pub type OrigProtoUpgradeLayer = RewriteLayer<Upgrade>;

/// The receiving side: a request marked with [`ORIG_PROTO`] (or that came as HTTP/1) goes on
/// as HTTP/1, any other as HTTP/2; the mark and the hop-by-hop headers are dropped.
pub type OrigProtoDowngradeLayer = RewriteLayer<Downgrade>;

/// The rewrite of [`OrigProtoUpgradeLayer`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Upgrade;

/// The rewrite of [`OrigProtoDowngradeLayer`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Downgrade;

impl RewriteRequest for Upgrade {
    fn rewrite<B>(&self, req: &mut Request<B>) {
        let upgrade = is_upgrade(req);
        let from_http1 = req.version() < Version::HTTP_2;
        strip_hop_by_hop(req.headers_mut(), upgrade);
        if from_http1 && !upgrade {
            req.headers_mut().insert(ORIG_PROTO, HTTP1);
        } else {
            // Only a proxy says what the app spoke.
            req.headers_mut().remove(ORIG_PROTO);
        }
        *req.version_mut() = if upgrade {
            Version::HTTP_11
        } else {
            Version::HTTP_2
        };
    }
}

impl RewriteRequest for Downgrade {
    fn rewrite<B>(&self, req: &mut Request<B>) {
        let upgrade = is_upgrade(req);
        let marked = req.headers_mut().remove(ORIG_PROTO).is_some();
        let http1 = marked || req.version() < Version::HTTP_2;
        strip_hop_by_hop(req.headers_mut(), upgrade);
        *req.version_mut() = if http1 {
            Version::HTTP_11
        } else {
            Version::HTTP_2
        };
    }
}
