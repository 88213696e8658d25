//! Authorization by peer identity behind real mTLS: the admitted identity reaches the app;
//! another identity and plaintext get 403 (or gRPC PERMISSION_DENIED) and nothing is forwarded.

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use mesh_core::test_util::{HttpVersion, TestClient};
use mesh_tls::authz::AuthzPolicy;
use mesh_tls::{DevCa, Mode, TlsSettings};
use support::*;

#[tokio::test]
async fn only_admitted_identities_reach_the_app() {
    tokio::time::timeout(LIMIT, async {
        let ca = DevCa::new("mesh.local").expect("ca");
        let settings = TlsSettings::default().mode(Mode::Permissive);
        let acceptor = acceptor(&ca, &api(), settings);
        let policy = AuthzPolicy::allow(["spiffe://mesh.local/ns/*/sa/web"]).expect("policy");
        let server = MeshedServer::start(acceptor, Some(policy)).await;

        let allowed = client(
            store(&ca, &web()),
            TlsSettings::default(),
            server.addr,
            api(),
        );
        let (status, peer, _) = get(&allowed).await.expect("request");
        assert_eq!((status, peer.as_str()), (200, web().as_str()));

        let db = id("spiffe://mesh.local/ns/default/sa/db");
        let refused = client(store(&ca, &db), TlsSettings::default(), server.addr, api());
        let (status, peer, body) = get(&refused).await.expect("request");
        // The app would have set x-peer; the refusal comes from the layer.
        assert_eq!((status, peer.as_str()), (403, ""));
        assert!(body.contains(db.as_str()), "{body}");

        // gRPC: a trailers-only PERMISSION_DENIED instead of a 403.
        let req = Request::post("http://api.mesh.test/pkg.Svc/Call")
            .header("content-type", "application/grpc")
            .body(http_body_util::Empty::<Bytes>::new())
            .expect("request");
        let rsp = refused.request(req).await.expect("response");
        assert_eq!(rsp.status(), 200);
        assert_eq!(rsp.headers()["grpc-status"], "7");
        assert!(rsp.headers().get("x-peer").is_none());

        // Plaintext (allowed on the connection by permissive mode) is unauthenticated: refused.
        let mut plain = TestClient::connect(server.addr, HttpVersion::Http1)
            .await
            .expect("connect");
        let req = plain
            .request("/")
            .body(Full::new(Bytes::new()).map_err(Into::into).boxed())
            .expect("request");
        let rsp = plain.send(req).await.expect("response");
        assert_eq!(rsp.status(), 403);
        assert!(rsp.headers().get("x-peer").is_none());
        let text = rsp.into_body().collect().await.expect("body").to_bytes();
        assert!(String::from_utf8_lossy(&text).contains("unauthenticated"));
    })
    .await
    .expect("in time");
}
