//! The admin listener after real traffic through two proxies: `/metrics` passes `promtool
//! check metrics` and counts exactly the requests sent, by direction, authority, peer identity
//! and workload; `/ready`, `/live`, `/endpoints`, `/config` and `/tap` answer.

mod support;

use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use mesh_core::test_util::{HttpVersion, TestBody, TestClient, TestServer, full};
use support::{Mesh, admin_get, get, id, run, sample};

async fn app(req: Request<Incoming>) -> Response<TestBody> {
    let mut rsp = Response::new(full("answer"));
    if req.uri().path() == "/fail" {
        *rsp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    }
    rsp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_traffic_and_pass_promtool() {
    let mesh = Mesh::new("metrics");
    let app = TestServer::start(app).await.expect("app");
    let server = mesh.server("web", app.addr(), &["client"]).await;
    let routes = "[[service.route]]\nname = \"failing\"\npath_prefix = \"/fail\"\n";
    let client = mesh.client_of("client", "web", &server, routes).await;
    let outbound = client.outbound.expect("outbound");

    // A tap listener, started before the traffic: it sees the next request to /fail.
    let tap_url = format!("http://{}/tap?path_prefix=/fail&limit=1", client.admin);
    let tap =
        tokio::spawn(
            async move { run("curl", &["-sS", "--max-time", "20", "-N", &tap_url]).await },
        );
    tokio::time::timeout(Duration::from_secs(10), async {
        while !client.tap().is_listening() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the tap listener subscribes");

    let (ok, failed) = (30, 7);
    let mut conn = TestClient::connect(outbound, HttpVersion::Http1)
        .await
        .expect("connect");
    for _ in 0..ok {
        assert_eq!(get(&mut conn, "web", "/ok").await.0, 200);
    }
    for _ in 0..failed {
        assert_eq!(get(&mut conn, "web", "/fail").await.0, 500);
    }

    let (code, tapped, stderr) = tap.await.expect("tap task");
    assert_eq!(code, 0, "{stderr}");
    let line = tapped.lines().next().unwrap_or_default();
    assert!(line.contains("\"path\":\"/fail\""), "{tapped}");
    assert!(line.contains("\"status\":500"), "{tapped}");

    let server_text = admin_get(server.admin, "/metrics").await;
    let client_text = admin_get(client.admin, "/metrics").await;
    for text in [&server_text, &client_text] {
        let file = mesh.dir.join("metrics.txt");
        std::fs::write(&file, text).expect("write metrics");
        let (code, stdout, stderr) = run(
            "sh",
            &[
                "-c",
                &format!("promtool check metrics < {}", file.display()),
            ],
        )
        .await;
        assert_eq!(code, 0, "promtool: {stdout}{stderr}\n{text}");
    }

    let total = (ok + failed) as u64;
    let client_id = id("client");
    let server_id = id("web");
    let inbound = [
        ("direction", "inbound"),
        ("authority", "web"),
        ("peer_id", client_id.as_str()),
        ("deployment", "web"),
        ("namespace", "test"),
    ];
    assert_eq!(
        sample(&server_text, "mesh_http_requests_total", &inbound),
        total,
        "{server_text}"
    );
    let with = |extra: (&'static str, &'static str)| [&inbound[..], &[extra]].concat();
    assert_eq!(
        sample(
            &server_text,
            "mesh_http_outcomes_total",
            &with(("outcome", "success"))
        ),
        ok as u64
    );
    assert_eq!(
        sample(
            &server_text,
            "mesh_http_outcomes_total",
            &with(("outcome", "failure"))
        ),
        failed as u64
    );
    assert_eq!(
        sample(
            &server_text,
            "mesh_http_responses_total",
            &with(("status_class", "5xx"))
        ),
        failed as u64
    );
    assert_eq!(
        sample(
            &server_text,
            "mesh_http_response_headers_seconds_count",
            &inbound
        ),
        total
    );

    let outbound_labels = [
        ("direction", "outbound"),
        ("authority", "web"),
        ("peer_id", server_id.as_str()),
        ("deployment", "client"),
        ("pod", "client-0"),
    ];
    assert_eq!(
        sample(&client_text, "mesh_http_requests_total", &outbound_labels),
        total,
        "{client_text}"
    );
    let failing_route = [&outbound_labels[..], &[("route", "failing")]].concat();
    assert_eq!(
        sample(&client_text, "mesh_http_requests_total", &failing_route),
        failed as u64
    );
    // Every request of this test went over one meshed connection pool: handshakes happened.
    assert!(
        sample(
            &server_text,
            "mesh_tcp_tls_handshakes_total",
            &[("direction", "inbound")]
        ) >= 1,
        "{server_text}"
    );

    assert_eq!(admin_get(client.admin, "/ready").await, "ready\n");
    assert_eq!(admin_get(client.admin, "/live").await, "live\n");
    let endpoints = admin_get(client.admin, "/endpoints").await;
    let json: serde_json::Value = serde_json::from_str(&endpoints).expect("JSON");
    let first = &json["services"][0];
    assert_eq!(first["service"], "web");
    assert_eq!(
        first["endpoints"][0]["addr"],
        server.inbound.expect("inbound").to_string()
    );
    assert_eq!(first["endpoints"][0]["status"], "ready");
    let config: serde_json::Value =
        serde_json::from_str(&admin_get(client.admin, "/config").await).expect("JSON");
    assert_eq!(config["service"][0]["authorities"][0], "web");
}
