//! The proxy with its identity from SPIRE: real `spire-server` and `spire-agent` (built by
//! `tests/spire/build.sh`), and the `mesh-proxy` binary copied to one path per workload, which
//! the agent's `unix` attestor tells apart (`unix:path:...`).

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use mesh_core::Identity;
use mesh_core::test_util::{TestBody, TestServer, free_port, full};
use mesh_tls::test_util::{Spire, SpireOptions};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use support::{ProxyProcess, admin_get, curl, s_client, sample, spawn_proxy_from};

/// One workload: its copy of the proxy binary, its identity and its registration.
struct Workload {
    binary: PathBuf,
    id: Identity,
    entry: String,
}

/// Copies the proxy binary for workload `name` and registers that copy as `ns/test/sa/<name>`.
async fn workload(spire: &Spire, name: &str, ttl: Duration) -> Workload {
    let dir = spire.dir().join("bin");
    std::fs::create_dir_all(&dir).expect("bin dir");
    let binary = dir.join(name);
    std::fs::copy(support::proxy_binary(), &binary).expect("copy the proxy binary");
    let id = spire.id(&format!("ns/test/sa/{name}"));
    let entry = spire
        .register(&id, &binary, ttl)
        .await
        .unwrap_or_else(|e| panic!("register {name}: {e}"));
    Workload { binary, id, entry }
}

/// The TOML of a proxy for `workload` taking its identity from `spire`'s agent, then `sections`.
fn config(spire: &Spire, workload: &Workload, admin: &str, sections: &str) -> PathBuf {
    let name = workload
        .binary
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("proxy");
    let text = format!(
        "[workload]\nnamespace = \"test\"\ndeployment = \"{name}\"\npod = \"{name}-0\"\n\n\
         [identity]\nspiffe_socket = {socket:?}\nname = {id:?}\n\n\
         [admin]\nlisten = \"{admin}\"\n\n{sections}",
        socket = spire.socket(),
        id = workload.id.as_str(),
    );
    let file = spire.dir().join(format!("{name}.toml"));
    std::fs::write(&file, text).expect("write config");
    file
}

/// The server side: inbound in front of `app`, admitting `allow`.
fn server_sections(app: std::net::SocketAddr, allow: &[&Identity]) -> String {
    let allow: Vec<String> = allow.iter().map(|a| format!("{:?}", a.as_str())).collect();
    format!(
        "[inbound]\nlisten = \"127.0.0.1:0\"\napp = \"{app}\"\nauthorize = [{}]\n",
        allow.join(", ")
    )
}

/// The client side: outbound knowing `service` at `endpoint`, expected to be `identity`.
fn client_sections(service: &str, endpoint: std::net::SocketAddr, identity: &Identity) -> String {
    format!(
        "[outbound]\nlisten = \"127.0.0.1:0\"\n\n\
         [[service]]\nname = \"{service}\"\nauthorities = [\"{service}\"]\nidentity = {id:?}\n\
         endpoints = [\"{endpoint}\"]\ntimeout = \"5s\"\n",
        id = identity.as_str(),
    )
}

/// An app answering with the identity the inbound proxy says the client has.
async fn app() -> TestServer {
    TestServer::start(|req: Request<Incoming>| async move {
        let client = req
            .headers()
            .get("mesh-client-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        Response::<TestBody>::new(full(client))
    })
    .await
    .expect("app")
}

async fn spire(options: SpireOptions) -> Spire {
    Spire::start(options)
        .await
        .unwrap_or_else(|e| panic!("SPIRE: {e}"))
}

/// Two workloads from SPIRE: web's proxy (outbound, knowing the service `api`) calls api's
/// proxy (inbound, admitting web), in front of the app.
struct Pair {
    web: Workload,
    api: Workload,
    server: ProxyProcess,
    client: ProxyProcess,
    _app: TestServer,
}

async fn pair(spire: &Spire, ttl: Duration) -> Pair {
    let (web, api) = (
        workload(spire, "web", ttl).await,
        workload(spire, "api", ttl).await,
    );
    let app = app().await;
    let server = spawn_proxy_from(
        &api.binary,
        &config(
            spire,
            &api,
            "127.0.0.1:0",
            &server_sections(app.addr(), &[&web.id]),
        ),
    )
    .await;
    let inbound = server.inbound.expect("inbound");
    let client = spawn_proxy_from(
        &web.binary,
        &config(
            spire,
            &web,
            "127.0.0.1:0",
            &client_sections("api", inbound, &api.id),
        ),
    )
    .await;
    Pair {
        web,
        api,
        server,
        client,
        _app: app,
    }
}

/// GET through `proxy`'s outbound with `Host: host`.
async fn through(proxy: &ProxyProcess, host: &str) -> (u16, String) {
    let outbound = proxy.outbound.expect("outbound");
    curl(&format!("http://{outbound}/"), host, &[]).await
}

/// The proxy's identity facts from `/endpoints`.
async fn identity_facts(admin: std::net::SocketAddr) -> serde_json::Value {
    let text = admin_get(admin, "/endpoints").await;
    let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    value["identity"].clone()
}

/// `/ready`'s status code and body.
async fn ready(admin: std::net::SocketAddr) -> (u16, String) {
    curl(&format!("http://{admin}/ready"), "admin", &[]).await
}

async fn eventually<F: std::future::Future<Output = bool>>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The serial (lower-case hex, no colons) of the certificate `openssl s_client` is shown by the
/// TLS server on `port`.
async fn presented_serial(port: u16) -> String {
    let (text, _) = s_client(port, &["-alpn", "http/1.1"], "").await;
    let start = text
        .find("-----BEGIN CERTIFICATE-----")
        .unwrap_or_else(|| panic!("no certificate in: {text}"));
    let cert = CertificateDer::from_pem_slice(&text.as_bytes()[start..]).expect("PEM");
    normalize(&mesh_tls::serial_of(&cert).expect("serial"))
}

fn normalize(serial: &str) -> String {
    serial.replace(':', "").to_ascii_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_with_svids_talk_mtls_the_policy_admits_one_and_the_agent_may_go_away() {
    let spire = spire(SpireOptions::default()).await;
    let long = Duration::from_secs(300);
    let Pair {
        web,
        api,
        server,
        client,
        _app,
    } = pair(&spire, long).await;
    let inbound = server.inbound.expect("inbound");
    let intruder = workload(&spire, "intruder", long).await;
    let other = spawn_proxy_from(
        &intruder.binary,
        &config(
            &spire,
            &intruder,
            "127.0.0.1:0",
            &client_sections("api", inbound, &api.id),
        ),
    )
    .await;

    // web -> api: the app sees web's SPIFFE ID, as the inbound verified it.
    let (status, body) = through(&client, "api").await;
    assert_eq!((status, body.as_str()), (200, web.id.as_str()));
    // Each proxy's identity is the one SPIRE issued to its binary.
    for (proxy, workload) in [(&client, &web), (&server, &api)] {
        let facts = identity_facts(proxy.admin).await;
        assert_eq!(facts["source"], "spiffe");
        assert_eq!(facts["identity"], workload.id.as_str());
        assert_eq!(ready(proxy.admin).await.0, 200);
    }
    let metrics = admin_get(server.admin, "/metrics").await;
    assert!(
        sample(
            &metrics,
            "mesh_http_requests_total",
            &[("peer_id", web.id.as_str())]
        ) >= 1,
        "{metrics}"
    );

    // The intruder has an SVID of its own, valid in the trust domain, but the policy admits
    // only web.
    let (status, _) = through(&other, "api").await;
    assert_eq!(status, 403);

    // web verifies api's SPIFFE ID: expecting another identity there fails the connection.
    let wrong = spawn_proxy_from(
        &web.binary,
        &config(
            &spire,
            &web,
            "127.0.0.1:0",
            &client_sections("api", inbound, &intruder.id),
        ),
    )
    .await;
    let (status, _) = through(&wrong, "api").await;
    assert_eq!(status, 502);

    // The agent goes away: traffic goes on with the SVIDs in force, the loss is counted, and
    // the proxies stay ready.
    spire.stop_agent();
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut requests = 0;
    while Instant::now() < deadline {
        let (status, body) = through(&client, "api").await;
        assert_eq!((status, body.as_str()), (200, web.id.as_str()));
        requests += 1;
    }
    assert!(requests > 10);
    for proxy in [&client, &server] {
        assert_eq!(ready(proxy.admin).await.0, 200);
        let metrics = admin_get(proxy.admin, "/metrics").await;
        assert!(
            sample(&metrics, "mesh_identity_workload_api_losses_total", &[]) >= 1,
            "{metrics}"
        );
        assert_eq!(sample(&metrics, "mesh_identity_ready", &[]), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_runs_across_svid_rotations_with_no_failed_request() {
    let spire = spire(SpireOptions::default()).await;
    // SPIRE renews at about half the TTL: every 15 s or so.
    let ttl = Duration::from_secs(30);
    let Pair {
        web,
        server,
        client,
        _app,
        ..
    } = pair(&spire, ttl).await;
    let inbound = server.inbound.expect("inbound");
    let first = identity_facts(server.admin).await["serial"]
        .as_str()
        .map(normalize)
        .expect("a serial");
    assert_eq!(presented_serial(inbound.port()).await, first);

    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut ok, mut failed) = (0u32, Vec::new());
    let rotated = loop {
        let (status, body) = through(&client, "api").await;
        if status == 200 && body == web.id.as_str() {
            ok += 1;
        } else {
            failed.push((status, body));
        }
        let now = identity_facts(server.admin).await;
        let serial = now["serial"].as_str().map(normalize);
        let client_applied = identity_facts(client.admin).await["applied"]
            .as_u64()
            .unwrap_or(0);
        if serial.as_deref().is_some_and(|s| s != first) && client_applied >= 2 {
            break serial.expect("a serial");
        }
        assert!(Instant::now() < deadline, "no rotation within 60 s: {now}");
    };
    // A little more traffic on the new SVIDs.
    for _ in 0..20 {
        let (status, body) = through(&client, "api").await;
        if status == 200 {
            ok += 1;
        } else {
            failed.push((status, body));
        }
    }
    assert!(
        failed.is_empty(),
        "failed requests across rotation: {failed:?}"
    );
    assert!(ok > 20);
    // What a TLS client sees now is the new SVID.
    assert_eq!(presented_serial(inbound.port()).await, rotated);
    let metrics = admin_get(server.admin, "/metrics").await;
    assert!(sample(&metrics, "mesh_identity_svids_applied_total", &[]) >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_started_before_the_agent_becomes_ready_when_the_agent_appears() {
    let spire = Spire::start_server(SpireOptions::default())
        .await
        .expect("server");
    let api = workload(&spire, "api", Duration::from_secs(300)).await;
    let app = app().await;
    let admin = format!("127.0.0.1:{}", free_port().expect("port"));
    let file = config(&spire, &api, &admin, &server_sections(app.addr(), &[]));
    let admin: std::net::SocketAddr = admin.parse().expect("addr");
    let waiting = tokio::spawn(async move { spawn_proxy_from(&api.binary, &file).await });

    // No agent: the admin listener says why the proxy is not ready, and nothing else is bound.
    eventually(
        Duration::from_secs(20),
        "the admin listener answers",
        || async move { tokio::net::TcpStream::connect(admin).await.is_ok() },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, body) = ready(admin).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("waiting for an SVID"), "{body}");
    assert_eq!(
        curl(&format!("http://{admin}/live"), "admin", &[]).await.0,
        200
    );
    assert!(!waiting.is_finished(), "the proxy did not finish starting");

    spire.start_agent().await.expect("agent");
    let proxy = tokio::time::timeout(Duration::from_secs(60), waiting)
        .await
        .expect("started once the agent is there")
        .expect("proxy");
    assert_eq!(proxy.admin, admin);
    let (status, body) = ready(admin).await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_entry_takes_the_identity_away_at_once() {
    let spire = spire(SpireOptions::default()).await;
    let long = Duration::from_secs(300);
    let Pair {
        api,
        server,
        client,
        _app,
        ..
    } = pair(&spire, long).await;
    let inbound = server.inbound.expect("inbound");
    assert_eq!(through(&client, "api").await.0, 200);

    spire.unregister(&api.entry).await.expect("unregister");
    // The agent learns of it at its next sync (every 5 s) and tells the workload at once,
    // although the SVID had minutes left: api is not ready and completes no new handshake.
    let admin = server.admin;
    eventually(
        Duration::from_secs(30),
        "api loses its identity",
        || async move { ready(admin).await.0 == 503 },
    )
    .await;
    let (_, body) = ready(admin).await;
    assert!(body.contains("withdrew"), "{body}");
    let facts = identity_facts(admin).await;
    assert_eq!(facts["state"], "withdrawn");
    // New connections to api fail (its pooled connection from web may still carry requests:
    // open connections are not cut).
    let (text, _) = s_client(inbound.port(), &["-alpn", "http/1.1"], "").await;
    assert!(
        !text.contains("-----BEGIN CERTIFICATE-----"),
        "api still presents a certificate: {text}"
    );
    let metrics = admin_get(admin, "/metrics").await;
    assert_eq!(sample(&metrics, "mesh_identity_ready", &[]), 0);
}
