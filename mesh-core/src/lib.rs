//! mesh-core: the shared vocabulary of the mesh and its reliability layers.
//!
//! Every other mesh crate meets here:
//!
//! - [`Identity`] and [`PeerIdentity`]: who a workload is (a SPIFFE ID or a DNS name), and who
//!   the peer of a request turned out to be.
//! - [`classify`]: the outcome of a request ([`Class`]), decided once per request by a
//!   protocol-aware strategy (HTTP status, gRPC status in headers or trailers, transport errors)
//!   and shared by metrics, failure accrual and retries, which join that one classification.
//! - [`timeout`]: a response-headers deadline and a whole-request deadline, with a typed error.
//! - [`error`]: the typed errors layers return, and [`error_response`], the one place that turns
//!   them into 502/503/504 responses (or trailers-only gRPC responses).
//! - [`detect`]: telling HTTP/1, HTTP/2 and opaque TCP apart on an accepted connection,
//!   replaying the bytes read.
//! - [`grpc`]: the bits of the gRPC wire protocol the mesh needs.
//!
//! - [`retry`]: retries within a budget, with replayable request bodies and backoff.
//! - [`random`]: the one injectable source of randomness (balancer picks, backoff jitter).
//! - What a proxy is made of, for any program that forwards requests: [`orig_proto`] (HTTP/1
//!   over HTTP/2 between proxies), [`headers`] (hop-by-hop), [`route`] (by authority; route
//!   names by path), the [`ErrorResponseLayer`](error::ErrorResponseLayer), [`drain`] (graceful
//!   shutdown), [`handshake`] (how a TLS acceptor reports outcomes); with the `client` feature
//!   `client` (a pooled HTTP/1 + HTTP/2 client), with `server` `serve` (a connection served
//!   until drained, with head and idle deadlines, HTTP/2 stream and flood bounds, and a
//!   connection bound per listener).
//!
//! - [`Endpoint`]: one instance of a service as discovery reports it (address, expected
//!   identity, weight, labels). The discovery sources themselves (static, file, DNS) live in
//!   mesh-balance, which consumes them.
//!
//! # Example
//!
//! A service with a whole-request deadline whose outcomes are classified, gRPC-aware:
//!
//! ```
//! use std::time::Duration;
//! use http_body_util::{BodyExt, Full};
//! use mesh_core::classify::{AutoClassify, Class, ClassHandle, ClassifyLayer, PublishClass};
//! use mesh_core::timeout::TimeoutLayer;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build()?.block_on(async {
//! let svc = ServiceBuilder::new()
//!     .layer(ClassifyLayer::new(AutoClassify::new(), PublishClass))
//!     .layer(TimeoutLayer::new().request(Duration::from_secs(5)))
//!     .service_fn(|_req: http::Request<()>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(bytes::Bytes::from("hi"))))
//!     });
//!
//! let rsp = svc.oneshot(http::Request::new(())).await?;
//! let class = rsp.extensions().get::<ClassHandle>().cloned().expect("published");
//! let body = rsp.into_body().collect().await?.to_bytes();
//! assert_eq!(body, "hi");
//! assert_eq!(class.get(), Some(Class::Success));
//! # Ok::<(), mesh_core::BoxError>(())
//! # })?;
//! # Ok::<(), mesh_core::BoxError>(())
//! ```

pub mod classify;
#[cfg(feature = "client")]
pub mod client;
pub mod detect;
pub mod drain;
mod endpoint;
pub mod error;
pub mod grpc;
pub mod handshake;
pub mod headers;
mod identity;
#[cfg(feature = "transparent")]
pub mod orig_dst;
pub mod orig_proto;
pub mod random;
pub mod retry;
pub mod rewrite;
pub mod route;
#[cfg(feature = "server")]
pub mod serve;
pub mod timeout;

pub use self::classify::{Class, Classify, FailureReason};
pub use self::endpoint::Endpoint;
pub use self::error::{BoxError, ErrorKind, error_response};
pub use self::identity::{Identity, IdentityError, IdentityKind, InvalidIdentity, PeerIdentity};
pub use self::timeout::{TimeoutError, TimeoutLayer};

#[cfg(feature = "test-util")]
pub mod test_util;
