//! mTLS on the inbound side: a client without a mesh certificate is refused before anything
//! reaches the app (openssl s_client, plaintext curl); a meshed client outside the
//! authorization policy gets 403 and the app sees nothing; a forged identity header is
//! replaced by the proven identity.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{Request, Response};
use hyper::body::Incoming;
use mesh_core::test_util::{TestServer, full};
use support::{Mesh, id, run, s_client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_authorized_mesh_identities_reach_the_app() {
    let mesh = Mesh::new("security");
    let seen = Arc::new(AtomicUsize::new(0));
    let app = {
        let seen = Arc::clone(&seen);
        TestServer::start(move |req: Request<Incoming>| {
            let seen = Arc::clone(&seen);
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                let caller = req
                    .headers()
                    .get("mesh-client-id")
                    .and_then(|v| v.to_str().ok());
                Response::new(full(format!("caller={}", caller.unwrap_or("-"))))
            }
        })
        .await
        .expect("app")
    };
    let server = mesh.server("web", app.addr(), &["client"]).await;
    let port = server.inbound.expect("inbound").port();
    let request = "GET / HTTP/1.1\r\nhost: web\r\nmesh-client-id: spiffe://mesh.local/ns/evil/sa/mallory\r\nconnection: close\r\n\r\n";
    let roots = mesh.dir.join("web/roots.pem").display().to_string();

    // No client certificate: refused in the handshake; the app sees nothing.
    let (stdout, stderr) = s_client(
        port,
        &["-brief", "-CAfile", &roots, "-alpn", "http/1.1"],
        request,
    )
    .await;
    assert!(!stdout.contains("HTTP/1.1"), "{stdout}");
    assert!(
        stderr.to_lowercase().contains("certificate required"),
        "{stderr}"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 0);

    // Plaintext: strict mode closes it; the app sees nothing.
    let url = format!("http://127.0.0.1:{port}/");
    let (code, _, _) = run(
        "curl",
        &["-sS", "--max-time", "10", "-H", "Host: web", &url],
    )
    .await;
    assert_ne!(code, 0, "plaintext must not be served");
    assert_eq!(seen.load(Ordering::SeqCst), 0);

    // A mesh certificate of an authorized identity, from a TLS stack that is not ours: served,
    // and the forged header is replaced by the identity the certificate proves.
    let creds = mesh.creds("client");
    let (cert, key) = (
        creds.join("cert.pem").display().to_string(),
        creds.join("key.pem").display().to_string(),
    );
    let (stdout, stderr) = s_client(
        port,
        &[
            "-brief",
            "-CAfile",
            &roots,
            "-verify_return_error",
            "-alpn",
            "http/1.1",
            "-cert",
            &cert,
            "-key",
            &key,
        ],
        request,
    )
    .await;
    assert!(stdout.contains("HTTP/1.1 200"), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("caller={}", id("client").as_str())),
        "{stdout}"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 1);

    // A meshed client whose identity the policy does not name: 403 from the proxy.
    let intruder = mesh.client_of("intruder", "web", &server, "").await;
    let url = format!("http://{}/", intruder.outbound.expect("outbound"));
    let (status, body) = support::curl(&url, "web", &[]).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "a refused request never reaches the app"
    );

    // The proxy counted the refused handshakes by reason.
    let metrics = support::admin_get(server.admin, "/metrics").await;
    assert!(metrics.contains("no_client_cert"), "{metrics}");
    assert!(metrics.contains("not_tls"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_mode_admits_plaintext_only_when_told_and_never_with_an_identity() {
    let mesh = Mesh::new("permissive");
    let app = TestServer::start(|req: Request<Incoming>| async move {
        let caller = req
            .headers()
            .get("mesh-client-id")
            .and_then(|v| v.to_str().ok());
        Response::new(full(format!("caller={}", caller.unwrap_or("-"))))
    })
    .await
    .expect("app");
    let inbound = |extra: &str| {
        format!(
            "[inbound]\nlisten = \"127.0.0.1:0\"\napp = \"{}\"\nmode = \"permissive\"\n\
             authorize = [{:?}]\n{extra}",
            app.addr(),
            id("client").as_str()
        )
    };
    let closed = mesh.proxy("web", &inbound("")).await;
    let open = mesh
        .proxy("web", &inbound("allow_unauthenticated = true\n"))
        .await;
    for (proxy, expected) in [(&closed, 403), (&open, 200)] {
        let url = format!("http://{}/", proxy.inbound.expect("inbound"));
        let spoof = "mesh-client-id: spiffe://mesh.local/ns/evil/sa/mallory";
        let (status, body) = support::curl(&url, "web", &[spoof]).await;
        assert_eq!(status, expected, "{body}");
        if expected == 200 {
            // A plaintext client has no identity, and cannot claim one.
            assert_eq!(body, "caller=-");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_with_another_identity_is_never_sent_the_request() {
    let mesh = Mesh::new("mismatch");
    let app = TestServer::start(|_req: Request<Incoming>| async { Response::new(full("secret")) })
        .await
        .expect("app");
    let server = mesh.server("impostor", app.addr(), &["client"]).await;
    // The client expects `web` at this address; `impostor` answers there.
    let client = mesh
        .client_of("client", "web", &server, "[service.retry]\nattempts = 1\n")
        .await;
    let url = format!("http://{}/", client.outbound.expect("outbound"));
    let (status, body) = support::curl(&url, "web", &[]).await;
    assert_eq!(status, 502, "{body}");
    assert!(!body.contains("secret"), "{body}");
    assert!(
        body.contains(id("web").as_str()) && body.contains(id("impostor").as_str()),
        "{body}"
    );
}
