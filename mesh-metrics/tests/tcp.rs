//! Connection counters over real TCP connections on 127.0.0.1.

use std::time::Duration;

use mesh_metrics::{CountingIo, Direction, TcpMetrics};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn connections_and_bytes_are_counted_exactly() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let metrics = TcpMetrics::<Direction>::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let inbound = metrics.series(&Direction::Inbound);
        // An echo server whose accepted connections are counted.
        let server = tokio::spawn(async move {
            for _ in 0..3 {
                let (stream, _) = listener.accept().await.expect("accept");
                let mut io = CountingIo::new(stream, inbound.clone());
                let mut buf = [0; 1024];
                loop {
                    let n = io.read(&mut buf).await.expect("read");
                    if n == 0 {
                        break;
                    }
                    io.write_all(&buf[..n]).await.expect("write");
                }
            }
        });
        let outbound = metrics.series(&Direction::Outbound);
        for size in [10usize, 1000, 5000] {
            let stream = TcpStream::connect(addr).await.expect("connect");
            let mut io = CountingIo::new(stream, outbound.clone());
            let sent = vec![7u8; size];
            io.write_all(&sent).await.expect("write");
            let mut back = vec![0u8; size];
            io.read_exact(&mut back).await.expect("echo");
            assert_eq!(back, sent);
            let open = metrics
                .snapshot()
                .into_iter()
                .find(|(d, _)| *d == Direction::Outbound)
                .map(|(_, s)| s.open());
            assert_eq!(open, Some(1));
        }
        server.await.expect("server");

        let snap = metrics.snapshot();
        let get = |d| {
            snap.iter()
                .find(|(l, _)| *l == d)
                .map(|(_, s)| s.clone())
                .expect("series")
        };
        let (inb, outb) = (get(Direction::Inbound), get(Direction::Outbound));
        assert_eq!((inb.opened, inb.closed, inb.open()), (3, 3, 0));
        assert_eq!((outb.opened, outb.closed), (3, 3));
        assert_eq!((inb.bytes_read, inb.bytes_written), (6010, 6010));
        assert_eq!((outb.bytes_read, outb.bytes_written), (6010, 6010));
    })
    .await
    .expect("in time");
}

#[test]
fn handshake_outcomes_are_counted_by_reason() {
    let metrics = TcpMetrics::<()>::new();
    let s = metrics.series(&());
    s.handshake_succeeded();
    s.handshake_failed("no_client_cert");
    s.handshake_failed("unknown_ca");
    s.handshake_failed("no_client_cert");
    let snap = s.snapshot();
    assert_eq!(snap.handshakes, 1);
    assert_eq!(snap.handshake_failures("no_client_cert"), 2);
    assert_eq!(snap.handshake_failures("unknown_ca"), 1);
    assert_eq!(snap.handshake_failures("timeout"), 0);
}
