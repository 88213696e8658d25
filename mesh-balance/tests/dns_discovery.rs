//! DNS discovery against a real DNS server on 127.0.0.1, started by the test: a small UDP
//! responder built on hickory-proto's message types, whose records the test changes.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_core::Stream;
use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, SRV};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use mesh_balance::discover::dns::{self, DnsConfig, DnsTarget};
use mesh_balance::discover::{EndpointChange, Updates};
use tokio::net::UdpSocket;
use tower::discover::Change;

/// Record data by (name, type).
type Records = HashMap<(String, RecordType), Vec<RData>>;

/// The records served, and the TTL of every answer.
#[derive(Clone, Default)]
struct Zone {
    records: Arc<Mutex<Records>>,
    ttl: u32,
}

impl Zone {
    fn set(&self, name: &str, rtype: RecordType, data: Vec<RData>) {
        self.records
            .lock()
            .expect("lock")
            .insert((name.to_owned(), rtype), data);
    }
}

/// Answers queries from `zone`: NXDOMAIN for names it does not have at all.
async fn dns_server(zone: Zone) -> SocketAddr {
    dns_server_task(zone).await.0
}

async fn dns_server_task(zone: Zone) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut rsp = Message::new(
                query.metadata.id,
                MessageType::Response,
                query.metadata.op_code,
            );
            rsp.metadata.authoritative = true;
            rsp.metadata.recursion_desired = query.metadata.recursion_desired;
            rsp.metadata.recursion_available = true;
            let records = zone.records.lock().expect("lock").clone();
            for q in &query.queries {
                rsp.add_query(q.clone());
                let name = q.name().to_ascii();
                let known = records.keys().any(|(n, _)| *n == name);
                if !known {
                    rsp.metadata.response_code = ResponseCode::NXDomain;
                }
                for data in records.get(&(name, q.query_type())).into_iter().flatten() {
                    rsp.add_answer(Record::from_rdata(q.name().clone(), zone.ttl, data.clone()));
                }
            }
            if let Ok(bytes) = rsp.to_vec() {
                let _ = socket.send_to(&bytes, from).await;
            }
        }
    });
    (addr, task)
}

/// `web.mesh.test` with one A record, 127.0.0.`last`, and a TTL of one second.
fn web_zone(last: u8) -> Zone {
    let zone = Zone {
        ttl: 1,
        ..Zone::default()
    };
    zone.set("web.mesh.test.", RecordType::A, vec![a([127, 0, 0, last])]);
    zone.set("web.mesh.test.", RecordType::AAAA, vec![]);
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
    let zone = Zone {
        ttl: 1,
        ..Zone::default()
    };
    zone.set(
        "web.mesh.test.",
        RecordType::A,
        vec![a([127, 0, 0, 10]), a([127, 0, 0, 11])],
    );
    zone.set("web.mesh.test.", RecordType::AAAA, vec![]);
    let server = dns_server(zone.clone()).await;
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
    let zone = Zone {
        ttl: 30,
        ..Zone::default()
    };
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
    let server = dns_server(zone).await;
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
    let server = dns_server(zone.clone()).await;
    let target = DnsTarget::Host {
        name: "web.mesh.test".into(),
        port: 80,
    };
    let mut config = config(server);
    config.timeout = Duration::from_millis(200);
    let (mut updates, report) = dns::watch(target, config).expect("resolver");
    assert_eq!(changes(&mut updates, 1).await, ["+127.0.0.30:80 w1"]);
    // The name vanishes: an authoritative NXDOMAIN empties the set.
    zone.records.lock().expect("lock").clear();
    assert_eq!(changes(&mut updates, 1).await, ["-127.0.0.30:80"]);
    assert!(report.last_error().is_none());
}

#[tokio::test]
async fn an_unreachable_server_keeps_the_endpoints_and_reports() {
    let zone = web_zone(40);
    let (server, task) = dns_server_task(zone).await;
    let target = DnsTarget::Host {
        name: "web.mesh.test".into(),
        port: 80,
    };
    let mut config = config(server);
    config.timeout = Duration::from_millis(200);
    let (mut updates, report) = dns::watch(target, config).expect("resolver");
    assert_eq!(changes(&mut updates, 1).await, ["+127.0.0.40:80 w1"]);
    task.abort();
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
}
