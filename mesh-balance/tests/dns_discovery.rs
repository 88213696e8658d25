//! DNS discovery against a real DNS server on 127.0.0.1, started by the test: a small UDP
//! responder built on hickory-proto's message types, whose records the test changes.

use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

use futures_core::Stream;
use hickory_resolver::proto::rr::rdata::{A, SRV};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use mesh_balance::discover::dns::{self, DnsConfig, DnsTarget};
use mesh_balance::discover::{EndpointChange, Updates};
use mesh_balance::test_util::{DnsServer, Zone};
use tower::discover::Change;

/// `web.mesh.test` with one A record, 127.0.0.`last`, and a TTL of one second.
fn web_zone(last: u8) -> Zone {
    let zone = Zone::new(1);
    zone.set_a("web.mesh.test.", Ipv4Addr::new(127, 0, 0, last));
    zone
}

fn a(ip: [u8; 4]) -> RData {
    RData::A(A(Ipv4Addr::from(ip)))
}

async fn next(updates: &mut Updates) -> EndpointChange {
    tokio::time::timeout(
        Duration::from_secs(10),
        std::future::poll_fn(|cx| Pin::new(&mut *updates).poll_next(cx)),
    )
    .await
    .expect("a change in time")
    .expect("stream open")
    .unwrap_or_else(|never| match never {})
}

async fn changes(updates: &mut Updates, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(match next(updates).await {
            Change::Insert(addr, e) => format!("+{addr} w{}", e.weight),
            Change::Remove(addr) => format!("-{addr}"),
        });
    }
    out.sort();
    out
}

fn config(server: SocketAddr) -> DnsConfig {
    DnsConfig {
        servers: vec![server],
        min_ttl: Duration::from_millis(200),
        retry: Duration::from_millis(200),
        ..DnsConfig::default()
    }
}

#[tokio::test]
async fn a_records_are_re_resolved_when_their_ttl_runs_out() {
    let zone = Zone::new(1);
    zone.set(
        "web.mesh.test.",
        RecordType::A,
        vec![a([127, 0, 0, 10]), a([127, 0, 0, 11])],
    );
    zone.set("web.mesh.test.", RecordType::AAAA, vec![]);
    let dns = DnsServer::start(zone.clone()).await.expect("dns server");
    let server = dns.addr();
    let target = DnsTarget::Host {
        name: "web.mesh.test".into(),
        port: 8080,
    };
    let (mut updates, report) = dns::watch(target, config(server)).expect("resolver");
    assert_eq!(
        changes(&mut updates, 2).await,
        ["+127.0.0.10:8080 w1", "+127.0.0.11:8080 w1"]
    );
    assert_eq!(report.last_ttl(), Some(Duration::from_secs(1)));

    // The records change; within the TTL of one second the change arrives.
    let started = tokio::time::Instant::now();
    zone.set(
        "web.mesh.test.",
        RecordType::A,
        vec![a([127, 0, 0, 11]), a([127, 0, 0, 12])],
    );
    assert_eq!(
        changes(&mut updates, 2).await,
        ["+127.0.0.12:8080 w1", "-127.0.0.10:8080"]
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(report.resolutions() >= 2);
}

#[tokio::test]
async fn srv_records_give_ports_and_weights_of_the_best_priority() {
    let zone = Zone::new(30);
    let name = |s: &str| Name::from_ascii(s).expect("name");
    zone.set(
        "_http._tcp.web.mesh.test.",
        RecordType::SRV,
        vec![
            RData::SRV(SRV::new(10, 3, 9001, name("a.mesh.test."))),
            RData::SRV(SRV::new(10, 1, 9002, name("b.mesh.test."))),
            RData::SRV(SRV::new(20, 5, 9003, name("backup.mesh.test."))),
        ],
    );
    for (host, ip) in [
        ("a.mesh.test.", 20),
        ("b.mesh.test.", 21),
        ("backup.mesh.test.", 22),
    ] {
        zone.set(host, RecordType::A, vec![a([127, 0, 0, ip])]);
        zone.set(host, RecordType::AAAA, vec![]);
    }
    let dns = DnsServer::start(zone).await.expect("dns server");
    let server = dns.addr();
    let target = DnsTarget::Srv {
        name: "_http._tcp.web.mesh.test".into(),
    };
    let (mut updates, _report) = dns::watch(target, config(server)).expect("resolver");
    assert_eq!(
        changes(&mut updates, 2).await,
        ["+127.0.0.20:9001 w3", "+127.0.0.21:9002 w1"]
    );
}

#[tokio::test]
async fn a_vanished_name_empties_the_set() {
    let zone = web_zone(30);
    let dns = DnsServer::start(zone.clone()).await.expect("dns server");
    let server = dns.addr();
    let target = DnsTarget::Host {
        name: "web.mesh.test".into(),
        port: 80,
    };
    let mut config = config(server);
    config.timeout = Duration::from_millis(200);
    let (mut updates, report) = dns::watch(target, config).expect("resolver");
    assert_eq!(changes(&mut updates, 1).await, ["+127.0.0.30:80 w1"]);
    // The name vanishes: an authoritative NXDOMAIN empties the set.
    zone.clear();
    assert_eq!(changes(&mut updates, 1).await, ["-127.0.0.30:80"]);
    assert!(report.last_error().is_none());
}

#[tokio::test]
async fn an_unreachable_server_keeps_the_endpoints_reports_and_recovers_when_it_returns() {
    let zone = web_zone(40);
    let dns = DnsServer::start(zone).await.expect("dns server");
    let server = dns.addr();
    let target = DnsTarget::Host {
        name: "web.mesh.test".into(),
        port: 80,
    };
    let mut config = config(server);
    config.timeout = Duration::from_millis(200);
    let (mut updates, report) = dns::watch(target, config).expect("resolver");
    assert_eq!(changes(&mut updates, 1).await, ["+127.0.0.40:80 w1"]);
    dns.stop();
    // Resolutions now fail: reported, and the endpoint stays.
    tokio::time::timeout(Duration::from_secs(10), async {
        while report.last_error().is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the failure is reported");
    let quiet = tokio::time::timeout(
        Duration::from_millis(500),
        std::future::poll_fn(|cx| Pin::new(&mut updates).poll_next(cx)),
    )
    .await;
    assert!(quiet.is_err(), "no change while DNS is down");

    // The server returns, on the same address, with a new answer: it applies.
    let zone = web_zone(41);
    let _back = DnsServer::start_on(server, zone)
        .await
        .expect("dns server again");
    let mut now = changes(&mut updates, 2).await;
    now.sort();
    assert_eq!(now, ["+127.0.0.41:80 w1", "-127.0.0.40:80"]);
    tokio::time::timeout(Duration::from_secs(10), async {
        while report.last_error().is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the error is cleared once DNS answers again");
}
