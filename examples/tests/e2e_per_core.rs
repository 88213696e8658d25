//! `[runtime] scheduler = "per-core"`: every listener is served by each worker's own
//! current-thread runtime. In-process: connections are spread evenly over two workers
//! whichever accepted them, and are served (HTTP/1.1 and HTTP/2) where they land. The real
//! binary starts its worker threads, serves, and counts every worker's tasks.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use examples::proxy::config::Runtime;
use examples::proxy::{Config, Proxy, Workers};
use mesh_core::classify::AutoClassify;
use mesh_core::test_util::{HttpVersion, TestClient, TestServer, full};
use support::Mesh;

/// An HTTP/1.1 GET of `/` with `Host: app` on a new blocking connection (so that it needs no
/// runtime of the test's): the status line.
fn blocking_get(addr: SocketAddr) -> String {
    let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n")
        .expect("write");
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).expect("an answer in time");
    answer.lines().next().unwrap_or_default().to_owned()
}

/// `count` connections to `addr` that send nothing.
async fn connect_silently(addr: SocketAddr, count: usize) -> Vec<tokio::net::TcpStream> {
    let mut connections = Vec::with_capacity(count);
    for _ in 0..count {
        connections.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    connections
}

#[test]
fn connections_are_spread_over_the_workers_and_served_wherever_they_land() {
    let mesh = Mesh::new("per-core");
    // The app runs on a runtime of its own.
    let app_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("app runtime");
    let app = app_runtime
        .block_on(TestServer::start(|_req| async {
            http::Response::new(full("from the app"))
        }))
        .expect("app");

    let first = Runtime::per_core_builder().build().expect("first runtime");
    let workers = Workers::start(first.handle().clone(), 1, || {
        Runtime::per_core_builder().build()
    })
    .expect("workers");
    let workers = Arc::new(workers);
    let sections = format!(
        "[inbound]\nlisten = \"127.0.0.1:0\"\napp = \"{}\"\nmode = \"permissive\"\n\
         allow_unauthenticated = true\ndetect_timeout = \"10s\"\n\n\
         [runtime]\nworkers = 2\nscheduler = \"per-core\"\n",
        app.addr()
    );
    let text = mesh.config_text("web", &sections);
    let config = Config::parse(&text, Path::new("test.toml")).expect("config");
    assert_eq!(config.runtime.per_core_threads(), 1);
    let running = first
        .block_on(Proxy::start_on(
            config,
            AutoClassify::new(),
            Arc::clone(&workers),
        ))
        .expect("proxy starts");
    let inbound = running.inbound.expect("inbound");

    first.block_on(async {
        // 20 connections that say nothing yet: whichever worker accepts each, it is served by
        // the one with fewer, so two workers end up with 10 each.
        let idle = connect_silently(inbound, 20).await;
        let mut loads = workers.loads();
        for _ in 0..250 {
            if loads.iter().sum::<usize>() == 20 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            loads = workers.loads();
        }
        assert_eq!(loads, vec![10, 10], "connections per worker");

        // Each connection handed to a worker is served there: HTTP/1.1 on new connections
        // (alternating between the workers), HTTP/2 on the 20 idle ones.
        for _ in 0..10 {
            let status = tokio::task::spawn_blocking(move || blocking_get(inbound))
                .await
                .expect("client");
            assert_eq!(status, "HTTP/1.1 200 OK");
        }
        for tcp in idle {
            let mut client = TestClient::handshake(tcp, inbound, HttpVersion::Http2)
                .await
                .expect("h2 handshake");
            let req = client
                .request("/")
                .header("host", "app")
                .body(mesh_core::test_util::empty())
                .expect("request");
            let status = client.send(req).await.expect("h2 answer").status();
            assert_eq!(status, http::StatusCode::OK);
        }
    });

    assert!(first.block_on(running.shutdown()), "drained in time");
    drop(app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_starts_a_thread_per_worker_and_serves_on_them() {
    let mesh = Mesh::new("per-core-binary");
    let app = TestServer::start(|_req| async { http::Response::new(full("from the app")) })
        .await
        .expect("app");
    let sections = format!(
        "[inbound]\nlisten = \"127.0.0.1:0\"\napp = \"{}\"\nmode = \"permissive\"\n\
         allow_unauthenticated = true\n\n[runtime]\nworkers = 3\nscheduler = \"per-core\"\n",
        app.addr()
    );
    let path = mesh.dir.join("per-core.toml");
    std::fs::write(&path, mesh.config_text("web", &sections)).expect("config file");
    let proxy = support::spawn_proxy(&path).await;
    let pid = proxy.child.id().expect("pid");
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect();
    for worker in ["mesh-worker-1", "mesh-worker-2"] {
        assert!(
            threads.iter().any(|t| t == worker),
            "{worker} in {threads:?}"
        );
    }
    let inbound = proxy.inbound.expect("inbound");
    for _ in 0..20 {
        let status = tokio::task::spawn_blocking(move || blocking_get(inbound))
            .await
            .expect("client");
        assert_eq!(status, "HTTP/1.1 200 OK");
    }
    // The tasks gauge counts every worker's runtime: with 30 idle connections open, at least
    // 30 tasks, wherever they were accepted.
    let _idle = connect_silently(inbound, 30).await;
    let mut tasks = 0;
    for _ in 0..50 {
        let metrics = support::admin_get(proxy.admin, "/metrics").await;
        tasks = support::sample(&metrics, "mesh_process_tasks", &[]);
        if tasks >= 30 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        tasks >= 30,
        "mesh_process_tasks {tasks} with 30 connections open"
    );
}
