//! Real hyper servers on 127.0.0.1: one is killed mid-run, another added.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use mesh_balance::discover::channel;
use mesh_balance::{Balance, BalanceConfig, EndpointStatus};
use mesh_core::Endpoint;
use mesh_core::test_util::{ConnectService, HttpVersion, TestServer, full};
use tower::ServiceExt;

/// A server counting what it serves.
async fn counting_server() -> (TestServer, Arc<AtomicU64>) {
    let served = Arc::new(AtomicU64::new(0));
    let count = served.clone();
    let server = TestServer::start(move |_req| {
        count.fetch_add(1, Relaxed);
        async {
            tokio::time::sleep(Duration::from_millis(2)).await;
            Response::new(full("ok"))
        }
    })
    .await
    .expect("server");
    (server, served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_endpoint_is_avoided_and_a_new_one_takes_traffic() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let mut servers = Vec::new();
        for _ in 0..3 {
            servers.push(counting_server().await);
        }
        let (updates_tx, updates) = channel();
        let balance = Balance::new(
            updates,
            |e: &Endpoint| ConnectService::new(e.addr, HttpVersion::Http1),
            BalanceConfig::default(),
        );
        for (server, _) in &servers {
            updates_tx.insert(Endpoint::new(server.addr()));
        }
        let dead_addr = servers[1].0.addr();

        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicU64::new(0));
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let (balance, stop, failures) = (balance.clone(), stop.clone(), failures.clone());
                tokio::spawn(async move {
                    let mut sent = 0u64;
                    while !stop.load(Relaxed) {
                        let req = Request::get("/")
                            .body(Empty::<Bytes>::new())
                            .expect("request");
                        let ok = match balance.clone().oneshot(req).await {
                            Ok(rsp) => {
                                rsp.status() == 200 && rsp.into_body().collect().await.is_ok()
                            }
                            Err(_) => false,
                        };
                        if !ok {
                            failures.fetch_add(1, Relaxed);
                        }
                        sent += 1;
                    }
                    sent
                })
            })
            .collect();

        tokio::time::sleep(Duration::from_millis(300)).await;
        let before_kill: Vec<u64> = servers.iter().map(|(_, n)| n.load(Relaxed)).collect();
        assert!(
            before_kill.iter().all(|&n| n > 0),
            "all three took traffic: {before_kill:?}"
        );
        // Kill one: it stops accepting; connections to it are refused.
        let (killed, _) = servers.remove(1);
        drop(killed);

        // Accrual (and the latency penalty) take it out: failures stop growing.
        let mut ejected = false;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let snap = balance.snapshot();
            if snap
                .iter()
                .any(|e| e.addr == dead_addr && e.status == EndpointStatus::Ejected)
            {
                ejected = true;
                break;
            }
        }
        let failures_at_ejection = failures.load(Relaxed);
        assert!(
            ejected || failures_at_ejection <= 7,
            "not ejected, {failures_at_ejection} failures"
        );
        // Every failure was a request to the dead endpoint (none in flight on the others).
        assert!(failures_at_ejection <= 7, "{failures_at_ejection} failures");
        let live_before: u64 = servers.iter().map(|(_, n)| n.load(Relaxed)).sum();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let live_after: u64 = servers.iter().map(|(_, n)| n.load(Relaxed)).sum();
        assert!(
            live_after > live_before + 50,
            "traffic goes on to the live two"
        );

        // A fourth endpoint: it takes traffic.
        let (fourth, fourth_served) = counting_server().await;
        updates_tx.insert(Endpoint::new(fourth.addr()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Relaxed);
        let mut sent = 0;
        for w in workers {
            sent += w.await.expect("worker");
        }
        assert!(
            fourth_served.load(Relaxed) > 20,
            "the new endpoint served {}",
            fourth_served.load(Relaxed)
        );
        // Nothing failed after the ejection, over hundreds of requests.
        assert_eq!(failures.load(Relaxed), failures_at_ejection);
        assert!(sent > 300, "{sent} requests in all");
    })
    .await
    .expect("in time");
}
