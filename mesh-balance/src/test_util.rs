//! Test fixtures (feature `test-util`): a DNS server on 127.0.0.1 answering from a zone the
//! test can change while it runs, for testing DNS discovery without the network.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::A;
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;

/// Record data by (fully qualified name, type).
type Records = HashMap<(String, RecordType), Vec<RData>>;

/// The records a [`DnsServer`] serves, and the TTL of every answer. Cheap to clone; clones
/// share the records.
#[derive(Clone, Debug, Default)]
pub struct Zone {
    records: Arc<Mutex<Records>>,
    /// The TTL of every answer, in seconds.
    pub ttl: u32,
}

impl Zone {
    /// An empty zone whose answers carry `ttl` seconds.
    pub fn new(ttl: u32) -> Self {
        Self {
            records: Arc::default(),
            ttl,
        }
    }

    /// Serves `data` for `name` (fully qualified, with the final dot) and `rtype`.
    pub fn set(&self, name: &str, rtype: RecordType, data: Vec<RData>) {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((name.to_owned(), rtype), data);
    }

    /// Forgets every record: every name is then NXDOMAIN.
    pub fn clear(&self) {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Serves one A record, and no AAAA record, for `name`.
    pub fn set_a(&self, name: &str, ip: Ipv4Addr) {
        self.set(name, RecordType::A, vec![RData::A(A(ip))]);
        self.set(name, RecordType::AAAA, vec![]);
    }
}

/// A UDP DNS server answering from a [`Zone`]: NXDOMAIN for names it does not have at all.
/// Stops when dropped.
#[derive(Debug)]
pub struct DnsServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl DnsServer {
    /// Starts serving `zone` on 127.0.0.1.
    pub async fn start(zone: Zone) -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0".parse().map_err(std::io::Error::other)?, zone).await
    }

    /// Starts serving `zone` on `addr` (where a stopped server was, say: the server returns).
    pub async fn start_on(addr: SocketAddr, zone: Zone) -> std::io::Result<Self> {
        let socket = UdpSocket::bind(addr).await?;
        let addr = socket.local_addr()?;
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                if let Ok(bytes) = answer(&zone, &query).to_vec() {
                    let _ = socket.send_to(&bytes, from).await;
                }
            }
        });
        Ok(Self { addr, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops answering (the port stays closed): an unreachable server.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(zone: &Zone, query: &Message) -> Message {
    let mut rsp = Message::new(
        query.metadata.id,
        MessageType::Response,
        query.metadata.op_code,
    );
    rsp.metadata.authoritative = true;
    rsp.metadata.recursion_desired = query.metadata.recursion_desired;
    rsp.metadata.recursion_available = true;
    let records = zone
        .records
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    for q in &query.queries {
        rsp.add_query(q.clone());
        let name = q.name().to_ascii();
        if !records.keys().any(|(n, _)| *n == name) {
            rsp.metadata.response_code = ResponseCode::NXDomain;
        }
        for data in records.get(&(name, q.query_type())).into_iter().flatten() {
            rsp.add_answer(Record::from_rdata(q.name().clone(), zone.ttl, data.clone()));
        }
    }
    rsp
}
