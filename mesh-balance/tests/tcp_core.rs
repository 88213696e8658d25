//! The protocol-agnostic core balancing opaque TCP connections over real sockets: each pick is a
//! connection attempt whose outcome it records, so an endpoint that refuses connections accrues
//! failures and stops being picked. No HTTP anywhere.

use std::net::SocketAddr;
use std::time::Duration;

use mesh_balance::discover::fixed;
use mesh_balance::{AccrualConfig, BalanceConfig, Balancer, EndpointStatus};
use mesh_core::error::ConnectError;
use mesh_core::{Class, Endpoint};
use tokio::net::{TcpListener, TcpStream};

/// A listener that accepts (and keeps) every connection, and a port where nothing listens.
async fn endpoints() -> (SocketAddr, SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let good = listener.local_addr().expect("addr");
    let accept = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let refused = closed.local_addr().expect("addr");
    drop(closed);
    (good, refused, accept)
}

/// Makes `n` connections through `balancer`, recording each attempt; returns how many went to
/// `addr`.
async fn connect_many(balancer: &Balancer<SocketAddr>, n: usize, addr: SocketAddr) -> usize {
    let mut to_addr = 0;
    for _ in 0..n {
        let pick = balancer.pick_ready().await.expect("an endpoint is ready");
        let target = pick.target;
        to_addr += usize::from(target == addr);
        let mut outcome = pick.outcome;
        match TcpStream::connect(target).await {
            Ok(_tcp) => {
                outcome.responded(false);
                outcome.record(Class::Success);
            }
            Err(e) => outcome.record(Class::of_error(&ConnectError::new(target, e))),
        }
    }
    to_addr
}

fn status(balancer: &Balancer<SocketAddr>, addr: SocketAddr) -> (EndpointStatus, u32) {
    let snapshot = balancer.snapshot();
    let e = snapshot
        .iter()
        .find(|e| e.addr == addr)
        .expect("endpoint known");
    (e.status, e.consecutive_failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_endpoint_stops_being_picked() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let (good, refused, _accept) = endpoints().await;
        let balancer = Balancer::new(
            fixed([Endpoint::new(good), Endpoint::new(refused)]),
            |e: &Endpoint| e.addr,
            BalanceConfig::default(),
        );
        // Its first refusal costs it the failure penalty: it loses every comparison after.
        let first = connect_many(&balancer, 20, refused).await;
        assert!(first >= 1, "the refusing endpoint was never tried");
        let (_, failures) = status(&balancer, refused);
        assert!(failures >= 1, "refusals accrue: {failures}");
        let later = connect_many(&balancer, 200, refused).await;
        assert_eq!(later, 0, "the refusing endpoint still got connections");
    })
    .await
    .expect("in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_accrual_alone_ejects_a_refusing_endpoint() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let (good, refused, _accept) = endpoints().await;
        // No latency penalty (a refusal is fast, so the refusing endpoint even looks cheap):
        // only failure accrual can keep it out.
        let config = BalanceConfig {
            failure_penalty: Duration::ZERO,
            accrual: AccrualConfig {
                consecutive_failures: 3,
                success_rate: None,
                backoff: Duration::from_secs(30),
                ..AccrualConfig::default()
            },
            ..BalanceConfig::default()
        };
        let balancer = Balancer::new(
            fixed([Endpoint::new(good), Endpoint::new(refused)]),
            |e: &Endpoint| e.addr,
            config,
        );
        let mut tried = 0;
        for _ in 0..50 {
            tried += connect_many(&balancer, 10, refused).await;
            if status(&balancer, refused).0 == EndpointStatus::Ejected {
                break;
            }
        }
        assert_eq!(status(&balancer, refused).0, EndpointStatus::Ejected);
        assert!(tried >= 3, "ejected after {tried} refusals");
        assert_eq!(balancer.ejected(), 1);
        // Ejected, and its probe 30 s away: no connection goes there.
        assert_eq!(connect_many(&balancer, 100, refused).await, 0);
    })
    .await
    .expect("in time");
}
