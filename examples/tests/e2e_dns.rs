//! DNS discovery in the proxy: a service found by `dns = "name:port"` against a DNS server on
//! loopback; when the record moves to another replica, traffic follows within the TTL.

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use mesh_balance::test_util::{DnsServer, Zone};
use mesh_core::test_util::{HttpVersion, TestBody, TestClient, TestServer, full};
use support::{Mesh, get, id};

async fn named(name: &'static str) -> TestServer {
    TestServer::start(move |_req: Request<Incoming>| async move {
        Response::<TestBody>::new(full(name))
    })
    .await
    .expect("app")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_found_by_dns_follows_its_record() {
    let mesh = Mesh::new("dns");
    let (one, two) = (named("one").await, named("two").await);
    let first = mesh.server("web", one.addr(), &["client"]).await;
    let port = first.inbound.expect("inbound").port();
    // The second replica listens on the same port of another loopback address.
    let sections = format!(
        "[inbound]\nlisten = \"127.0.0.2:{port}\"\napp = \"{}\"\nauthorize = [{:?}]\n",
        two.addr(),
        id("client").as_str()
    );
    let _second = mesh.proxy("web", &sections).await;

    let zone = Zone::new(1);
    zone.set_a("web.mesh.test.", Ipv4Addr::new(127, 0, 0, 1));
    let dns = DnsServer::start(zone.clone()).await.expect("dns server");
    let sections = format!(
        "[outbound]\nlisten = \"127.0.0.1:0\"\n\n[[service]]\nname = \"web\"\nauthorities = [\"web\"]\n\
         identity = {:?}\ndns = \"web.mesh.test:{port}\"\ndns_servers = [\"{}\"]\n",
        id("web").as_str(),
        dns.addr()
    );
    let client = mesh.proxy("client", &sections).await;
    let mut conn = TestClient::connect(client.outbound.expect("outbound"), HttpVersion::Http1)
        .await
        .expect("connect");
    assert_eq!(get(&mut conn, "web", "/").await, (200, "one".to_owned()));

    // The record moves to the second replica: within a few TTLs, traffic follows it.
    zone.set_a("web.mesh.test.", Ipv4Addr::new(127, 0, 0, 2));
    let moved = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if get(&mut conn, "web", "/").await == (200, "two".to_owned()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(moved.is_ok(), "traffic never moved to the new record");
    for _ in 0..20 {
        assert_eq!(get(&mut conn, "web", "/").await, (200, "two".to_owned()));
    }
}
