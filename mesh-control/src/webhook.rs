//! The injector as a mutating admission webhook, served over HTTPS to the API server.
//!
//! Each AdmissionReview for a Pod CREATE is answered: allowed always (the webhook never
//! blocks a pod), with a JSON patch adding the proxy when [`inject::wanted`] says so. A review
//! that cannot be read is answered 400; one whose pod cannot be read is allowed unchanged with
//! a warning, as `failurePolicy: Ignore` would have it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::Api;
use mesh_tls::ServerCert;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::inject::{self, InjectConfig};

/// The largest AdmissionReview read (a pod with many containers is tens of KiB).
const MAX_REVIEW: usize = 4 * 1024 * 1024;

/// Decides AdmissionReviews.
#[derive(Clone)]
pub struct Injector {
    namespaces: Api<Namespace>,
    config: Arc<InjectConfig>,
}

impl std::fmt::Debug for Injector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injector").finish_non_exhaustive()
    }
}

impl Injector {
    /// Reads namespaces with `client`; injects as `config` says.
    pub fn new(client: kube::Client, config: InjectConfig) -> Self {
        Self {
            namespaces: Api::all(client),
            config: Arc::new(config),
        }
    }

    /// The AdmissionReview answering `review`, or why it is not a review.
    pub async fn review(&self, review: &Value) -> Result<Value, String> {
        let request = review
            .get("request")
            .ok_or("no request in the AdmissionReview")?;
        let uid = request
            .get("uid")
            .and_then(Value::as_str)
            .ok_or("no request.uid")?;
        let mut response = json!({ "uid": uid, "allowed": true });
        match self.patch_for(request).await {
            Ok(Some(patch)) => {
                let encoded = base64::engine::general_purpose::STANDARD.encode(patch.to_string());
                response["patchType"] = json!("JSONPatch");
                response["patch"] = json!(encoded);
            }
            Ok(None) => {}
            Err(reason) => {
                tracing::warn!(%reason, "pod admitted without injection");
                response["warnings"] = json!([format!("mesh: not injected: {reason}")]);
            }
        }
        Ok(json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": response
        }))
    }

    async fn patch_for(&self, request: &Value) -> Result<Option<Value>, String> {
        let object = request.get("object").cloned().ok_or("no request.object")?;
        let pod: Pod = serde_json::from_value(object).map_err(|e| format!("not a pod: {e}"))?;
        let namespace = request
            .get("namespace")
            .and_then(Value::as_str)
            .or(pod.metadata.namespace.as_deref())
            .unwrap_or("default")
            .to_owned();
        let namespace_meta = match self.namespaces.get(&namespace).await {
            Ok(ns) => inject::meta_of(&ns.metadata),
            Err(error) => {
                tracing::warn!(%namespace, %error, "cannot read the namespace; deciding by the pod alone");
                BTreeMap::new()
            }
        };
        if !inject::wanted(&inject::meta_of(&pod.metadata), &namespace_meta)
            || inject::injected(&pod)
        {
            return Ok(None);
        }
        let injected = inject::inject(&pod, &namespace, &self.config).map_err(|e| e.to_string())?;
        let value = serde_json::to_value(&injected).map_err(|e| e.to_string())?;
        tracing::info!(%namespace, name = ?pod.metadata.name.or(pod.metadata.generate_name), "injecting the proxy");
        Ok(Some(json!([
            { "op": "replace", "path": "/metadata", "value": value["metadata"] },
            { "op": "replace", "path": "/spec", "value": value["spec"] }
        ])))
    }
}

/// A rustls server configuration from a certificate the issuer signed for the webhook's names.
pub fn tls_config(cert: &ServerCert) -> Result<ServerConfig, String> {
    let chain = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).map_err(|e| e.to_string())?;
    let mut config = ServerConfig::builder_with_provider(mesh_tls::default_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves `POST /inject` on `listener` over TLS until the future is dropped (with every
/// connection).
pub async fn serve(listener: TcpListener, tls: Arc<ServerConfig>, injector: Injector) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let Ok((tcp, from)) = accepted else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let (acceptor, injector) = (acceptor.clone(), injector.clone());
        connections.spawn(async move {
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp))
                    .await;
            let Ok(Ok(tls)) = handshake else {
                return tracing::debug!(%from, "webhook handshake failed");
            };
            let service = hyper::service::service_fn(move |req| {
                let injector = injector.clone();
                async move { Ok::<_, Infallible>(answer(&injector, req).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

async fn answer(injector: &Injector, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: String| {
        let mut rsp = Response::new(Full::new(Bytes::from(body)));
        *rsp.status_mut() = status;
        rsp
    };
    if req.uri().path() != "/inject" || req.method() != http::Method::POST {
        return reply(StatusCode::NOT_FOUND, "POST /inject only\n".into());
    }
    let body = match Limited::new(req.into_body(), MAX_REVIEW).collect().await {
        Ok(body) => body.to_bytes(),
        Err(error) => return reply(StatusCode::PAYLOAD_TOO_LARGE, format!("{error}\n")),
    };
    let review: Value = match serde_json::from_slice(&body) {
        Ok(review) => review,
        Err(error) => {
            return reply(
                StatusCode::BAD_REQUEST,
                format!("not an AdmissionReview: {error}\n"),
            );
        }
    };
    match injector.review(&review).await {
        Ok(answer) => {
            let mut rsp = reply(StatusCode::OK, answer.to_string());
            rsp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            rsp
        }
        Err(reason) => reply(StatusCode::BAD_REQUEST, format!("{reason}\n")),
    }
}
