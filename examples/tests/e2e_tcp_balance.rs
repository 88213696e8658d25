//! Opaque TCP through the mesh is balanced by the balancer core with real outcomes: a TCP
//! endpoint that refuses connections accrues failures and stops being picked, and every later
//! connection reaches the endpoint that works.

mod support;

use std::time::Duration;

use mesh_balance::EndpointStatus;
use support::{Mesh, id};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A server that greets every connection with `hi\n`.
async fn greeter() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = tcp.write_all(b"hi\n").await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    addr
}

/// Whether a connection to `port` was greeted (a connection whose endpoint refused is closed
/// with nothing).
async fn greeted(port: std::net::SocketAddr) -> bool {
    let mut tcp = TcpStream::connect(port).await.expect("connect");
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut got)).await;
    read.is_ok() && got == b"hi\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_tcp_endpoint_is_avoided() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let mesh = Mesh::new("tcp-balance");
        let app = greeter().await;
        let sections = format!(
            "[inbound]\nlisten = \"127.0.0.1:0\"\napp = \"127.0.0.1:9\"\nopaque_app = \"{app}\"\n\
             authorize = [{:?}]\n",
            id("client").as_str()
        );
        let server = mesh.proxy("greeter", &sections).await;
        let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let refused = closed.local_addr().expect("addr");
        drop(closed);
        let sections = format!(
            "[outbound]\nlisten = \"127.0.0.1:0\"\n\n\
             [[outbound.tcp]]\nlisten = \"127.0.0.1:0\"\nservice = \"greeter\"\n\n\
             [[service]]\nname = \"greeter\"\nidentity = {:?}\nendpoints = [\"{}\", \"{refused}\"]\n",
            id("greeter").as_str(),
            server.inbound.expect("inbound"),
        );
        let client = mesh.proxy("client", &sections).await;
        let port = client.tcp[0];

        let failures = || {
            let all = client.endpoints();
            let tcp = all
                .iter()
                .find(|s| s.protocol == "tcp")
                .expect("the TCP balancer");
            let e = tcp
                .endpoints
                .iter()
                .find(|e| e.addr == refused)
                .expect("the refusing endpoint");
            (e.status, e.consecutive_failures)
        };
        // Until the refusing endpoint has been tried (an unmeasured endpoint takes its share at
        // once, so this is a few connections; bounded all the same).
        let mut failed_early = 0;
        for _ in 0..200 {
            failed_early += usize::from(!greeted(port).await);
            let (status, in_a_row) = failures();
            if status == EndpointStatus::Ejected || in_a_row >= 1 {
                break;
            }
        }
        let (status, in_a_row) = failures();
        assert!(failed_early >= 1, "no connection went to the refusing endpoint");
        assert!(
            status == EndpointStatus::Ejected || in_a_row >= 1,
            "the refusals were not recorded: {status:?}, {in_a_row} in a row"
        );
        // From now on every connection is greeted: the refusing endpoint is not picked.
        for i in 0..30 {
            assert!(greeted(port).await, "connection {i} after {failed_early} early failures");
        }
        let (_, in_a_row_after) = failures();
        assert_eq!(in_a_row_after, in_a_row, "the refusing endpoint was tried again");
    })
    .await
    .expect("in time");
}
