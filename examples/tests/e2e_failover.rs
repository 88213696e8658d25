//! A replica killed under load (SIGKILL to its proxy process): requests keep succeeding,
//! retried within budget onto the other replica, and after failure accrual the dead endpoint
//! gets no more picks.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use mesh_core::test_util::{HttpVersion, TestBody, TestClient, TestServer, full};
use support::{Mesh, admin_get, get, sample, spawn_proxy};

/// An app that answers with its name and counts what it served.
async fn replica(name: &'static str) -> (TestServer, Arc<AtomicUsize>) {
    let served = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&served);
    let app = TestServer::start(move |_req: Request<Incoming>| {
        let counter = Arc::clone(&counter);
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(2)).await;
            Response::<TestBody>::new(full(name))
        }
    })
    .await
    .expect("app");
    (app, served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_costs_no_request_and_gets_no_more_picks() {
    let mesh = Mesh::new("failover");
    let (app1, served1) = replica("one").await;
    let (app2, served2) = replica("two").await;
    let proxy1 = mesh.server("api", app1.addr(), &["client"]).await;
    // The replica that dies is a real process, killed with SIGKILL: its connections just end.
    let config2 = mesh.dir.join("replica2.toml");
    std::fs::write(
        &config2,
        mesh.config_text("api", &Mesh::server_sections(app2.addr(), &["client"])),
    )
    .expect("write config");
    let mut proxy2 = spawn_proxy(&config2).await;
    let inbound2 = proxy2.inbound.expect("inbound");
    let client = mesh
        .client(
            "client",
            "api",
            "api",
            &[proxy1.inbound.expect("inbound"), inbound2],
            "",
        )
        .await;
    let outbound = client.outbound.expect("outbound");

    let (callers, per_caller, kill_after) = (4, 150, 200);
    let sent = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (sent, killed) = (Arc::clone(&sent), Arc::clone(&killed));
        tasks.push(tokio::spawn(async move {
            let mut conn = TestClient::connect(outbound, HttpVersion::Http1)
                .await
                .expect("connect");
            let mut failures = Vec::new();
            for _ in 0..per_caller {
                let (status, body) = get(&mut conn, "api", "/work").await;
                if status != 200 {
                    failures.push(format!("{status} {body}"));
                }
                if sent.fetch_add(1, Ordering::SeqCst) + 1 == kill_after {
                    killed.notify_one();
                }
            }
            failures
        }));
    }
    killed.notified().await;
    proxy2.child.start_kill().expect("kill the replica");
    let _ = proxy2.child.wait().await;
    let at_kill = served2.load(Ordering::SeqCst);

    let mut failures = Vec::new();
    for task in tasks {
        failures.extend(task.await.expect("caller"));
    }
    assert!(
        failures.is_empty(),
        "requests failed after the kill: {failures:?}"
    );
    let total = callers * per_caller;
    assert!(served1.load(Ordering::SeqCst) + served2.load(Ordering::SeqCst) >= total);
    assert!(
        at_kill > 0,
        "the second replica took traffic before it died"
    );

    // The failures were accrued against the dead endpoint: with its failure penalty (and,
    // after seven in a row, ejection) it loses every comparison and gets no more picks.
    let endpoints = admin_get(client.admin, "/endpoints").await;
    let json: serde_json::Value = serde_json::from_str(&endpoints).expect("JSON");
    let dead = json["services"][0]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["addr"] == inbound2.to_string())
        .cloned()
        .expect("the dead endpoint is listed");
    let accrued = dead["consecutive_failures"].as_u64().expect("count");
    assert!(accrued >= 1, "{endpoints}");
    assert!(
        dead["status"] == "ejected" || dead["ewma_ms"].as_f64().expect("ewma") >= 500.0,
        "{endpoints}"
    );
    let before = sample(
        &admin_get(client.admin, "/metrics").await,
        "mesh_http_requests_total",
        &[("direction", "outbound")],
    );
    let mut conn = TestClient::connect(outbound, HttpVersion::Http1)
        .await
        .expect("connect");
    for _ in 0..50 {
        assert_eq!(get(&mut conn, "api", "/more").await.0, 200);
    }
    let json: serde_json::Value =
        serde_json::from_str(&admin_get(client.admin, "/endpoints").await).expect("JSON");
    let dead_now = json["services"][0]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["addr"] == inbound2.to_string())
        .cloned()
        .expect("listed");
    // No failure was added: nothing was sent its way (a probe would have counted one more).
    assert_eq!(
        dead_now["consecutive_failures"],
        dead["consecutive_failures"]
    );
    let after = sample(
        &admin_get(client.admin, "/metrics").await,
        "mesh_http_requests_total",
        &[("direction", "outbound")],
    );
    assert_eq!(after - before, 50);
}
