//! The `mesh-proxy` binary as an operator meets it: configuration mistakes name the file, line
//! and key and exit with code 2; SIGTERM lets a long request finish, then the process exits 0.

mod support;

use std::path::Path;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use mesh_core::test_util::{HttpVersion, TestBody, TestClient, TestServer, full};
use support::{Mesh, get, proxy_binary, spawn_proxy};

/// A valid file, into which each case below writes one mistake.
const BASE: &str = r#"[workload]
namespace = "test"

[identity]
dir = "certs"

[admin]
listen = "127.0.0.1:0"

[outbound]
listen = "127.0.0.1:0"

[[service]]
name = "web"
authorities = ["web"]
identity = "spiffe://mesh.local/ns/test/sa/web"
endpoints = ["127.0.0.1:4143"]
timeout = "5s"

[service.retry]
attempts = 3
"#;

/// Runs the proxy on `text` and returns (exit code, stderr).
async fn run_with(dir: &Path, case: &str, text: &str) -> (i32, String, String) {
    let file = dir.join(format!("{case}.toml"));
    std::fs::write(&file, text).expect("write config");
    let file = file.display().to_string();
    let (code, _, stderr) =
        support::run(proxy_binary().to_str().expect("path"), &["--config", &file]).await;
    (code, stderr, file)
}

/// The 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .expect("needle present")
        + 1
}

#[tokio::test]
async fn each_kind_of_config_mistake_names_file_line_and_key_and_exits_2() {
    let mesh = Mesh::new("config");
    let cases: [(&str, String, &str, &str, &str); 10] = [
        // (case, file text, line marker, key, words of the message)
        (
            "unknown-key",
            BASE.replace("timeout = \"5s\"", "timout = \"5s\""),
            "timout",
            "service.timout",
            "unknown field",
        ),
        (
            "bad-duration",
            BASE.replace("\"5s\"", "\"5 parsecs\""),
            "parsecs",
            "service.timeout",
            "unknown unit",
        ),
        (
            "bad-address",
            BASE.replace(
                "listen = \"127.0.0.1:0\"\n\n[outbound]",
                "listen = \"localhost\"\n\n[outbound]",
            ),
            "localhost",
            "admin.listen",
            "ip:port",
        ),
        (
            "wrong-type",
            BASE.replace("attempts = 3", "attempts = \"three\""),
            "three",
            "service.retry.attempts",
            "invalid type",
        ),
        (
            "missing-key",
            BASE.replace("[admin]\nlisten = \"127.0.0.1:0\"\n", "[admin]\n"),
            "[admin]",
            "admin.listen",
            "missing field",
        ),
        (
            "bad-identity",
            BASE.replace("spiffe://mesh.local/ns/test/sa/web", "spiffe:/nope"),
            "spiffe:/nope",
            "service.identity",
            "not a workload identity",
        ),
        (
            "unknown-service",
            format!("{BASE}\n[[outbound.tcp]]\nlisten = \"127.0.0.1:0\"\nservice = \"db\"\n"),
            "service = \"db\"",
            "outbound.tcp.service",
            "no service is named \"db\"",
        ),
        (
            "duplicate-service",
            format!(
                "{BASE}\n[[service]]\nname = \"web\"\nidentity = \"spiffe://mesh.local/ns/test/sa/web\"\nendpoints = []\n"
            ),
            "name = \"web\"\nidentity",
            "service.name",
            "already defined",
        ),
        (
            "two-sources",
            BASE.replace("timeout = \"5s\"", "dns = \"web.internal:4143\""),
            "name = \"web\"",
            "service.endpoints",
            "exactly one of",
        ),
        (
            "syntax",
            BASE.replace("[admin]", "[admin"),
            "[admin",
            "admin",
            "unclosed table",
        ),
    ];
    for (case, text, marker, key, words) in cases {
        let (code, stderr, file) = run_with(&mesh.dir, case, &text).await;
        assert_eq!(code, 2, "{case}: exit code; stderr: {stderr}");
        // The duplicate's marker spans two lines: find the second definition's name line.
        let line = if case == "duplicate-service" {
            text.lines()
                .enumerate()
                .filter(|(_, l)| l.contains("name = \"web\""))
                .nth(1)
                .expect("second")
                .0
                + 1
        } else {
            line_of(&text, marker.lines().next().expect("marker"))
        };
        let place = format!("{file}:{line}: key `{key}`");
        assert!(
            stderr.contains(&place),
            "{case}: expected {place:?} in: {stderr}"
        );
        assert!(
            stderr.contains(words),
            "{case}: expected {words:?} in: {stderr}"
        );
    }

    // A file that is not there: named, exit 2.
    let missing = mesh.dir.join("absent.toml").display().to_string();
    let (code, _, stderr) = support::run(
        proxy_binary().to_str().expect("path"),
        &["--config", &missing],
    )
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&missing) && stderr.contains("cannot read"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_long_request_finish_then_exits_0() {
    let mesh = Mesh::new("sigterm");
    // The app says when the slow request has reached it, so that SIGTERM comes mid-request.
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::channel::<()>(1);
    let app = TestServer::start(move |req: Request<Incoming>| {
        let arrived_tx = arrived_tx.clone();
        async move {
            if req.uri().path() == "/slow" {
                let _ = arrived_tx.send(()).await;
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
            Response::<TestBody>::new(full("done"))
        }
    })
    .await
    .expect("app");
    let server = mesh.server("web", app.addr(), &["client"]).await;
    let sections = format!(
        "[outbound]\nlisten = \"127.0.0.1:0\"\n\n[[service]]\nname = \"web\"\nauthorities = [\"web\"]\n\
         identity = {:?}\nendpoints = [\"{}\"]\n\n[shutdown]\ndrain_timeout = \"20s\"\n",
        support::id("web").as_str(),
        server.inbound.expect("inbound"),
    );
    let config = mesh.dir.join("client.toml");
    std::fs::write(&config, mesh.config_text("client", &sections)).expect("write config");
    let mut proxy = spawn_proxy(&config).await;
    let outbound = proxy.outbound.expect("outbound");

    let mut conn = TestClient::connect(outbound, HttpVersion::Http1)
        .await
        .expect("connect");
    let slow = tokio::spawn(async move { get(&mut conn, "web", "/slow").await });
    tokio::time::timeout(Duration::from_secs(10), arrived.recv())
        .await
        .expect("the slow request reaches the app");
    let pid = proxy.child.id().expect("pid").to_string();
    let (code, _, _) = support::run("kill", &["-TERM", &pid]).await;
    assert_eq!(code, 0);

    // The request in flight completes.
    let (status, body) = slow.await.expect("slow request");
    assert_eq!((status, body.as_str()), (200, "done"));
    // New connections are refused once draining began.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        TestClient::connect(outbound, HttpVersion::Http1)
            .await
            .is_err()
    );
    // And the process exits 0.
    let status = tokio::time::timeout(Duration::from_secs(20), proxy.child.wait())
        .await
        .expect("exits in time")
        .expect("exit status");
    assert_eq!(status.code(), Some(0));
}
