//! Certificate rotation without a restart: new credentials written into the proxy's identity
//! directory are picked up within the reload interval, and the next handshake presents them
//! while traffic goes on.

mod support;

use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use mesh_core::test_util::{HttpVersion, TestBody, TestClient, TestServer, full};
use support::{Mesh, get, s_client};

/// The leaf certificate (first PEM block) of a `cert.pem`.
fn leaf(pem: &str) -> String {
    let end = "-----END CERTIFICATE-----";
    let stop = pem.find(end).expect("a certificate") + end.len();
    pem[..stop].trim().to_owned()
}

/// The certificate the server at `port` presents to a client with `creds`.
async fn presented(port: u16, creds: &std::path::Path) -> String {
    let arg = |f: &str| creds.join(f).display().to_string();
    let (roots, cert, key) = (arg("roots.pem"), arg("cert.pem"), arg("key.pem"));
    let args = [
        "-alpn", "http/1.1", "-CAfile", &roots, "-cert", &cert, "-key", &key,
    ];
    let (text, _) = s_client(
        port,
        &args,
        "GET / HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n",
    )
    .await;
    let start = text
        .find("-----BEGIN CERTIFICATE-----")
        .unwrap_or_else(|| panic!("no certificate in: {text}"));
    leaf(&text[start..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_certificates_are_used_without_a_restart() {
    let mesh = Mesh::new("rotation");
    let app = TestServer::start(|_req: Request<Incoming>| async {
        Response::<TestBody>::new(full("ok"))
    })
    .await
    .expect("app");
    let server = mesh.server("web", app.addr(), &["client"]).await;
    let port = server.inbound.expect("inbound").port();
    let client = mesh.client_of("client", "web", &server, "").await;
    let mut conn = TestClient::connect(client.outbound.expect("outbound"), HttpVersion::Http1)
        .await
        .expect("connect");
    assert_eq!(get(&mut conn, "web", "/").await.0, 200);

    let creds = mesh.dir.join("client");
    let old = std::fs::read_to_string(mesh.dir.join("web/cert.pem")).expect("old cert");
    assert_eq!(presented(port, &creds).await, leaf(&old));

    // A new certificate for the same identity (the reload interval is 1 s in these tests).
    mesh.creds("web");
    let new = std::fs::read_to_string(mesh.dir.join("web/cert.pem")).expect("new cert");
    assert_ne!(leaf(&new), leaf(&old));
    tokio::time::timeout(Duration::from_secs(15), async {
        while server.credentials().rotations() == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the proxy picks the new files up");

    assert_eq!(
        presented(port, &creds).await,
        leaf(&new),
        "new handshakes present the new certificate"
    );
    // Traffic through the mesh goes on, on the connections it had and on new ones.
    assert_eq!(get(&mut conn, "web", "/").await.0, 200);
    let mut fresh = TestClient::connect(client.outbound.expect("outbound"), HttpVersion::Http2)
        .await
        .expect("connect");
    let req = Request::builder()
        .uri("http://web/")
        .version(http::Version::HTTP_2)
        .body(mesh_core::test_util::empty())
        .expect("request");
    assert_eq!(fresh.send(req).await.expect("response").status(), 200);
}
