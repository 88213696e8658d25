//! curl through outbound proxy -> inbound proxy -> app, over HTTP/1.1 and HTTP/2, with mTLS
//! between the proxies; the app learns the caller's identity from a header the caller cannot
//! forge.

mod support;

use http::{Request, Response};
use hyper::body::Incoming;
use mesh_core::test_util::{TestBody, TestServer, full};
use support::{Mesh, id, run};

/// Echoes what the app saw: version, path, the identity header, the authority.
async fn echo(req: Request<Incoming>) -> Response<TestBody> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    let body = format!(
        "version={:?} path={} client={} host={}",
        req.version(),
        req.uri().path(),
        header("mesh-client-id"),
        req.uri()
            .authority()
            .map_or_else(|| header("host"), |a| a.to_string()),
    );
    Response::new(full(body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_reaches_the_app_through_both_proxies_over_http1_and_http2() {
    let mesh = Mesh::new("curl");
    let app = TestServer::start(echo).await.expect("app");
    let server = mesh.server("web", app.addr(), &["client"]).await;
    let inbound = server.inbound.expect("inbound");
    let client = mesh.client("client", "web", "web", &[inbound], "").await;
    let outbound = client.outbound.expect("outbound").to_string();
    let url = format!("http://{outbound}/hello");

    for (flag, version) in [
        ("--http1.1", "HTTP/1.1"),
        ("--http2-prior-knowledge", "HTTP/2.0"),
    ] {
        let (code, body, stderr) = run(
            "curl",
            &[
                "-sS",
                "--max-time",
                "10",
                flag,
                "-H",
                "Host: web",
                // A forged identity header is removed before the app sees the request.
                "-H",
                "mesh-client-id: spiffe://mesh.local/ns/evil/sa/mallory",
                &url,
            ],
        )
        .await;
        assert_eq!(code, 0, "curl {flag} failed: {stderr}");
        let expected = format!(
            "version={version} path=/hello client={} host=web",
            id("client").as_str()
        );
        assert_eq!(body, expected, "curl {flag}");
    }

    // An authority no service has: a clear 404, at once.
    let (status, body) = support::curl(&url, "nowhere", &[]).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body.contains("no service is configured for authority \"nowhere\""),
        "{body}"
    );

    // Authorities match ignoring case, with or without the port.
    for host in ["WEB", "web:80"] {
        let (status, body) = support::curl(&url, host, &[]).await;
        assert_eq!(status, 200, "{host}: {body}");
    }

    // Oversized request headers: refused with 431 by the outbound proxy, which goes on serving.
    let big = format!("x-big: {}", "a".repeat(100 * 1024));
    let (status, _) = support::curl(&url, "web", &[&big]).await;
    assert_eq!(status, 431);
    let (status, body) = support::curl(&url, "web", &[]).await;
    assert_eq!(status, 200, "{body}");
}
