//! Hostile clients against real `mesh-proxy` processes (an outbound and an inbound, mTLS
//! between): stalled and trickled request heads, idle connections, a listener at its bound,
//! a thousand silent connections, HTTP/2 floods (raw frames), malformed and smuggling HTTP/1,
//! and TLS garbage. Each is closed or refused at its deadline and counted in `/metrics`; the
//! app never sees what the client did not send; others are served all the while.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use mesh_core::test_util::{HttpVersion, TestBody, TestClient, TestServer, full};
use support::h2raw::{self, Event, RawH2, frame, request_block};
use support::{
    Mesh, ProxyProcess, admin_get, get, rss, s_client, sample, spawn_pair, tls_client_args,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Short deadlines, so that the tests wait seconds, not the defaults' minutes.
const LIMITS: &str = "header_timeout = \"1s\"\nidle_timeout = \"2s\"\nmax_connections = 3000\n";

/// An app that records each request's path; `/slow` answers after 3 s.
async fn app() -> (TestServer, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let server = TestServer::start(move |req: Request<Incoming>| {
        record
            .lock()
            .expect("lock")
            .push(req.uri().path().to_owned());
        async move {
            if req.uri().path() == "/slow" {
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            Response::<TestBody>::new(full("ok"))
        }
    })
    .await
    .expect("app");
    (server, seen)
}

/// The inbound proxy of `web` before `app` and an outbound proxy of `client`, both listeners
/// with `limits`.
async fn pair(mesh: &Mesh, app: SocketAddr, limits: &str) -> (ProxyProcess, ProxyProcess) {
    spawn_pair(mesh, app, limits, "timeout = \"5s\"").await
}

/// Reads until the peer closes (EOF or reset) and returns what came, or panics after `within`.
async fn read_until_closed(tcp: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not closed within {within:?}; read {out:?}"));
    out
}

/// `s_client` arguments for an authorized client (`client`) speaking HTTP/1.1, and `flag`.
fn client_tls(mesh: &Mesh, flag: &str) -> Vec<String> {
    let mut args = tls_client_args(mesh, "client");
    args.extend([flag, "-alpn", "http/1.1"].map(String::from));
    args
}

async fn metric(proxy: &ProxyProcess, name: &str, labels: &[(&str, &str)]) -> u64 {
    sample(&admin_get(proxy.admin, "/metrics").await, name, labels)
}

async fn one_request(outbound: SocketAddr, version: HttpVersion, path: &str) -> u16 {
    let mut client = TestClient::connect(outbound, version)
        .await
        .expect("connect");
    get(&mut client, "web", path).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_trickled_request_heads_are_closed_at_the_header_deadline() {
    let mesh = Mesh::new("slow-heads");
    let (app, seen) = app().await;
    let (server, client) = pair(&mesh, app.addr(), LIMITS).await;
    let outbound = client.outbound.expect("outbound");

    // Half a head, then nothing: the report that started this (held for 70 s before).
    let mut stalled = TcpStream::connect(outbound).await.expect("connect");
    stalled
        .write_all(b"GET / HTTP/1.1\r\nHost: web\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let answer = read_until_closed(&mut stalled, Duration::from_secs(8)).await;
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the deadline"
    );

    // A byte every 100 ms keeps the connection busy but never finishes the head.
    let mut trickle = TcpStream::connect(outbound).await.expect("connect");
    trickle
        .write_all(b"GET / HTTP/1.1\r\nHost: web\r\nX-Slow: ")
        .await
        .expect("write");
    let closed = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if trickle.write_all(b"a").await.is_err() {
                return;
            }
            let mut probe = [0u8; 1];
            if let Ok(Ok(0)) =
                tokio::time::timeout(Duration::from_millis(1), trickle.read(&mut probe)).await
            {
                return;
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "a trickled head held the connection for 8 s"
    );

    // The same over mTLS to the inbound listener, as an authorized client.
    let port = server.inbound.expect("inbound").port();
    let started = Instant::now();
    let (stdout, _) = s_client(
        port,
        &client_tls(&mesh, "-brief"),
        "GET / HTTP/1.1\r\nhost: web\r\n",
    )
    .await;
    assert!(!stdout.contains("HTTP/1.1"), "{stdout}");
    assert!(started.elapsed() < Duration::from_secs(15));

    let closes = [("reason", "header_timeout")];
    let out = [("listener", "outbound"), closes[0]];
    assert!(metric(&client, "mesh_listener_closed_total", &out).await >= 2);
    let inb = [("listener", "inbound"), closes[0]];
    assert!(metric(&server, "mesh_listener_closed_total", &inb).await >= 1);
    assert!(
        seen.lock().expect("lock").is_empty(),
        "half requests reached the app"
    );
    // And the proxy still serves.
    assert_eq!(one_request(outbound, HttpVersion::Http1, "/").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_busy_ones_are_not() {
    let mesh = Mesh::new("idle");
    let (app, _) = app().await;
    let (_server, client) = pair(&mesh, app.addr(), LIMITS).await;
    let outbound = client.outbound.expect("outbound");

    // HTTP/1: a request answered, then silence: closed after the idle deadline (2 s).
    let mut idle = TcpStream::connect(outbound).await.expect("connect");
    idle.write_all(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
        .await
        .expect("write");
    let answer = read_until_closed(&mut idle, Duration::from_secs(10)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A request that takes longer than the idle deadline is not cut: in flight is not idle.
    let mut slow = TestClient::connect(outbound, HttpVersion::Http1)
        .await
        .expect("connect");
    assert_eq!(get(&mut slow, "web", "/slow").await.0, 200);

    // HTTP/2: a stream answered, then none: a GOAWAY (no error), and the connection closes.
    let mut h2 = RawH2::settled(outbound).await;
    let block = request_block("GET", "web", &[]);
    let flags = h2raw::END_HEADERS | h2raw::END_STREAM;
    assert!(h2.send(&frame(h2raw::HEADERS, flags, 1, &block)).await);
    h2.until(|e| {
        matches!(
            e,
            Event::Frame {
                kind: h2raw::DATA,
                flags: h2raw::END_STREAM,
                ..
            }
        )
    })
    .await
    .expect("the answer");
    assert_eq!(h2.closed().await, Some(0), "GOAWAY with NO_ERROR");
    // A connection that never sends a request: a GOAWAY at the head deadline (1 s).
    let mut h2 = RawH2::settled(outbound).await;
    assert_eq!(h2.closed().await, Some(0), "GOAWAY with NO_ERROR");

    let idle = [("listener", "outbound"), ("reason", "idle_timeout")];
    assert!(metric(&client, "mesh_listener_closed_total", &idle).await >= 2);
    let head = [("listener", "outbound"), ("reason", "header_timeout")];
    assert!(metric(&client, "mesh_listener_closed_total", &head).await >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_at_its_bound_refuses_counts_and_serves_again_when_one_closes() {
    let mesh = Mesh::new("bound");
    let (app, _) = app().await;
    let limits = "max_connections = 3\n";
    let (_server, client) = pair(&mesh, app.addr(), limits).await;
    let outbound = client.outbound.expect("outbound");

    let mut held = Vec::new();
    for _ in 0..3 {
        let mut conn = TestClient::connect(outbound, HttpVersion::Http1)
            .await
            .expect("connect");
        assert_eq!(get(&mut conn, "web", "/").await.0, 200);
        held.push(conn);
    }
    let open = [("listener", "outbound")];
    assert_eq!(
        metric(&client, "mesh_listener_connections_open", &open).await,
        3
    );
    // The fourth is reset at once (the reset may even beat the end of `connect`): no answer,
    // no wait.
    if let Ok(mut fourth) = TcpStream::connect(outbound).await {
        let _ = fourth
            .write_all(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
            .await;
        let answer = read_until_closed(&mut fourth, Duration::from_secs(5)).await;
        assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    }
    let refused = [("listener", "outbound"), ("reason", "connection_limit")];
    assert_eq!(
        metric(&client, "mesh_listener_refused_total", &refused).await,
        1
    );

    // One goes away; a new connection is served.
    held.pop();
    let mut served = false;
    for _ in 0..50 {
        if metric(&client, "mesh_listener_connections_open", &open).await < 3 {
            served = one_request(outbound, HttpVersion::Http1, "/").await == 200;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "no room made when a connection closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_silent_connections_do_not_stop_others_from_being_served() {
    let mesh = Mesh::new("silent");
    let (app, seen) = app().await;
    let (server, client) = pair(&mesh, app.addr(), LIMITS).await;
    let outbound = client.outbound.expect("outbound");
    let inbound = server.inbound.expect("inbound");

    let mut silent = Vec::new();
    for i in 0..2000 {
        let to = if i % 2 == 0 { outbound } else { inbound };
        silent.push(TcpStream::connect(to).await.expect("connect"));
    }
    // Served meanwhile, over both listeners (the outbound's request crosses the inbound).
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let served =
            tokio::time::timeout(Duration::from_secs(5), one_request(outbound, version, "/"))
                .await
                .expect("served in time while 2,000 connections say nothing");
        assert_eq!(served, 200);
    }
    // Every silent one is closed at its deadline.
    for conn in &mut silent {
        read_until_closed(conn, Duration::from_secs(15)).await;
    }
    assert_eq!(seen.lock().expect("lock").len(), 2);
    let open = [("listener", "outbound")];
    let mut settled = false;
    for _ in 0..50 {
        let outbound_open = metric(&client, "mesh_listener_connections_open", &open).await;
        let inbound_open = metric(
            &server,
            "mesh_listener_connections_open",
            &[("listener", "inbound")],
        )
        .await;
        // The outbound's own pooled connection to the inbound may stay.
        if outbound_open == 0 && inbound_open <= 2 {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        settled,
        "connections left open after the silent ones were closed"
    );
}

/// An HTTP/2 connection that floods `frames` (a unit repeated) is closed, whatever happened
/// first: the proxy's guard or the HTTP/2 library's own limit.
async fn flood(outbound: SocketAddr, unit: &[u8], times: usize) {
    let mut conn = RawH2::connect(outbound).await;
    let batch: Vec<u8> = unit.repeat(times);
    for chunk in batch.chunks(64 * 1024) {
        if !conn.send(chunk).await {
            break;
        }
    }
    conn.closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_floods_and_abuse_close_or_refuse_and_others_are_served() {
    let mesh = Mesh::new("h2-abuse");
    let (app, seen) = app().await;
    let (_server, client) = pair(&mesh, app.addr(), LIMITS).await;
    let outbound = client.outbound.expect("outbound");
    let pid = client.child.id().expect("pid");
    // Warm up: pools, buffers, the allocator's first arenas.
    for _ in 0..20 {
        assert_eq!(one_request(outbound, HttpVersion::Http2, "/").await, 200);
    }
    let before = rss(pid);

    // A well-behaved client keeps sending the whole time.
    let failures = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bystander = {
        let (failures, stop) = (Arc::clone(&failures), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut sent = 0;
            while !stop.load(Relaxed) {
                if one_request(outbound, HttpVersion::Http2, "/bystander").await != 200 {
                    failures.fetch_add(1, Relaxed);
                }
                sent += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sent
        })
    };

    // Rapid reset (CVE-2023-44487): a stream opened and reset, 20,000 times.
    let block = request_block("GET", "web", &[]);
    let mut unit = Vec::new();
    let mut rapid = Vec::new();
    for i in 0..20_000u32 {
        let stream = 2 * i + 1;
        rapid.extend(frame(
            h2raw::HEADERS,
            h2raw::END_HEADERS | h2raw::END_STREAM,
            stream,
            &block,
        ));
        rapid.extend(frame(
            h2raw::RST_STREAM,
            0,
            stream,
            &h2raw::CANCEL.to_be_bytes(),
        ));
    }
    flood(outbound, &rapid, 1).await;
    // CONTINUATION flood: one header block in endless empty CONTINUATION frames.
    unit.extend(frame(h2raw::HEADERS, 0, 1, &block));
    unit.extend(frame(h2raw::CONTINUATION, 0, 1, &[]).repeat(100_000));
    flood(outbound, &unit, 1).await;
    // SETTINGS and PING floods: each owes an acknowledgement.
    flood(outbound, &frame(h2raw::SETTINGS, 0, 0, &[]), 100_000).await;
    flood(outbound, &frame(h2raw::PING, 0, 0, &[7; 8]), 100_000).await;

    // Too many concurrent streams: past the advertised 100, streams are refused, and the
    // connection goes on.
    let mut conn = RawH2::settled(outbound).await;
    let post = request_block("POST", "web", &[]);
    let mut opened = Vec::new();
    for i in 0..150u32 {
        opened.extend(frame(h2raw::HEADERS, h2raw::END_HEADERS, 2 * i + 1, &post));
    }
    assert!(conn.send(&opened).await);
    let mut refused = 0;
    while refused < 50 {
        let event = conn
            .until(|e| {
                matches!(
                    e,
                    Event::Frame {
                        kind: h2raw::RST_STREAM,
                        ..
                    }
                )
            })
            .await
            .expect("streams refused, connection open");
        if let Event::Frame { payload, .. } = event {
            if payload == h2raw::REFUSED_STREAM.to_be_bytes() {
                refused += 1;
            }
        }
    }
    conn.send(&frame(h2raw::PING, 0, 0, &[2; 8])).await;
    assert!(
        conn.until(|e| matches!(
            e,
            Event::Frame {
                kind: h2raw::PING,
                flags: h2raw::ACK,
                ..
            }
        ))
        .await
        .is_some(),
        "the connection went on after refusing streams"
    );
    drop(conn);

    // A header list over the 64 KiB bound: that stream gets no 200 (refused, 431, or the
    // connection closed), and nothing of it reaches the app.
    let mut conn = RawH2::settled(outbound).await;
    let huge = vec![b'x'; 100 * 1024];
    let block = request_block("GET", "web", &[("x-huge", &huge)]);
    let mut frames = Vec::new();
    let mut pieces = block.chunks(16 * 1024).peekable();
    let mut first = true;
    while let Some(piece) = pieces.next() {
        let last = pieces.peek().is_none();
        let flags =
            if last { h2raw::END_HEADERS } else { 0 } | if first { h2raw::END_STREAM } else { 0 };
        let kind = if first {
            h2raw::HEADERS
        } else {
            h2raw::CONTINUATION
        };
        frames.extend(frame(kind, flags, 1, piece));
        first = false;
    }
    conn.send(&frames).await;
    let answer = conn
        .until(|e| {
            matches!(
                e,
                Event::Frame {
                    kind: h2raw::RST_STREAM | h2raw::HEADERS | h2raw::GOAWAY,
                    ..
                }
            )
        })
        .await;
    if let Some(Event::Frame {
        kind: h2raw::HEADERS,
        payload,
        ..
    }) = &answer
    {
        // `:status: 200` is the static table's index 8.
        assert_ne!(
            payload.first(),
            Some(&0x88),
            "a 200 for a 100 KiB header list"
        );
    }
    drop(conn);

    stop.store(true, Relaxed);
    let sent = bystander.await.expect("bystander");
    assert!(sent > 0);
    assert_eq!(
        failures.load(Relaxed),
        0,
        "a well-behaved client failed during the floods"
    );

    let paths = seen.lock().expect("lock").clone();
    let flooded = paths.iter().filter(|p| *p == "/").count();
    assert!(
        flooded < 1000,
        "{flooded} of 20,000 reset streams reached the app"
    );
    let grown = rss(pid).saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "the proxy grew by {grown} bytes under the floods"
    );

    let closed = |reason| [("listener", "outbound"), ("reason", reason)];
    let text = admin_get(client.admin, "/metrics").await;
    assert!(
        sample(
            &text,
            "mesh_listener_closed_total",
            &closed("h2_control_flood")
        ) >= 2
    );
    assert!(
        sample(
            &text,
            "mesh_listener_closed_total",
            &closed("h2_continuation_flood")
        ) >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_smuggling_http1_gets_400_and_nothing_extra_reaches_the_app() {
    let mesh = Mesh::new("malformed");
    let (app, seen) = app().await;
    let (server, client) = pair(&mesh, app.addr(), LIMITS).await;
    let outbound = client.outbound.expect("outbound");

    let bad: [&[u8]; 7] = [
        b"GET / HTTP/1.1 extra\r\nHost: web\r\n\r\n",
        b"GET /\x01 HTTP/1.1\r\nHost: web\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST / HTTP/1.1\r\nHost: web\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        b"GET / HTTP/1.1\r\nHost: web\r\nX-Bad: a\x01b\r\n\r\n",
        b"GET http://unknown.example/ HTTP/1.1\r\nHost: web\r\n\r\n",
    ];
    for request in bad {
        let mut tcp = TcpStream::connect(outbound).await.expect("connect");
        tcp.write_all(request).await.expect("write");
        let answer = read_until_closed(&mut tcp, Duration::from_secs(5)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{:?} got {answer:?}",
            String::from_utf8_lossy(request)
        );
    }
    assert!(
        seen.lock().expect("lock").is_empty(),
        "a malformed request was forwarded"
    );

    // Transfer-Encoding with Content-Length: the chunked body wins (RFC 9112 6.3), the
    // connection is closed after the answer, and what follows the body is never a request.
    let smuggle = b"POST /one HTTP/1.1\r\nHost: web\r\nContent-Length: 40\r\n\
        Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: web\r\n\r\n";
    let mut tcp = TcpStream::connect(outbound).await.expect("connect");
    tcp.write_all(smuggle).await.expect("write");
    let answer = read_until_closed(&mut tcp, Duration::from_secs(5)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The same straight to the inbound, over mTLS.
    let port = server.inbound.expect("inbound").port();
    let (stdout, _) = s_client(
        port,
        &client_tls(&mesh, "-quiet"),
        std::str::from_utf8(smuggle).expect("ascii"),
    )
    .await;
    assert_eq!(stdout.matches("HTTP/1.1 ").count(), 1, "{stdout}");
    assert_eq!(
        *seen.lock().expect("lock"),
        ["/one", "/one"],
        "the app saw other requests than the clients sent"
    );
}

/// The first flight of a real TLS client: a ClientHello.
fn client_hello() -> Vec<u8> {
    use tokio_rustls::rustls;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("web").expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).expect("hello");
    hello
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_garbage_truncated_trickled_and_silent_clients_are_closed_and_counted() {
    let mesh = Mesh::new("tls-hostile");
    let (app, seen) = app().await;
    let (server, client) = pair(&mesh, app.addr(), LIMITS).await;
    let inbound = server.inbound.expect("inbound");
    let hello = client_hello();

    let mut garbage = TcpStream::connect(inbound).await.expect("connect");
    garbage.write_all(&[0xde; 512]).await.expect("write");
    read_until_closed(&mut garbage, Duration::from_secs(5)).await;

    let mut truncated = TcpStream::connect(inbound).await.expect("connect");
    truncated
        .write_all(&hello[..hello.len() / 2])
        .await
        .expect("write");
    read_until_closed(&mut truncated, Duration::from_secs(8)).await;

    let mut trickled = TcpStream::connect(inbound).await.expect("connect");
    let trickling = tokio::time::timeout(Duration::from_secs(10), async {
        for byte in &hello {
            if trickled.write_all(&[*byte]).await.is_err() {
                return;
            }
            let mut probe = [0u8; 64];
            let read = tokio::time::timeout(Duration::from_secs(1), trickled.read(&mut probe));
            if let Ok(Ok(0) | Err(_)) = read.await {
                return;
            }
        }
    })
    .await;
    assert!(
        trickling.is_ok(),
        "a trickled ClientHello held the connection for 10 s"
    );

    let mut silent = TcpStream::connect(inbound).await.expect("connect");
    read_until_closed(&mut silent, Duration::from_secs(5)).await;

    let text = admin_get(server.admin, "/metrics").await;
    let failed = |reason| {
        sample(
            &text,
            "mesh_tcp_tls_handshake_failures_total",
            &[("reason", reason)],
        )
    };
    assert!(failed("not_tls") >= 1, "{text}");
    assert!(failed("handshake_timeout") >= 1, "{text}");
    assert!(failed("detect_timeout") >= 2, "{text}");
    assert!(seen.lock().expect("lock").is_empty());
    // The mesh is served all the same.
    let outbound = client.outbound.expect("outbound");
    assert_eq!(one_request(outbound, HttpVersion::Http1, "/").await, 200);
}
