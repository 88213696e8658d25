//! The SPIFFE Workload API as a credential source, against a real SPIRE server and agent
//! (built by `tests/spire/build.sh`). The workload is this test binary, registered by its path.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_core::{Identity, PeerIdentity};
use mesh_tls::spiffe::{SpiffeConfig, SpiffeIdentity, SpiffeState, follow};
use mesh_tls::test_util::{Spire, SpireOptions};
use mesh_tls::{
    AcceptError, CredentialStore, HandshakeError, TlsAcceptor, TlsConnector, TlsSettings, serial_of,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// This test binary, as the agent's `unix` attestor sees it.
fn this_binary() -> std::path::PathBuf {
    std::env::current_exe().expect("the test binary's path")
}

async fn spire() -> Spire {
    Spire::start(SpireOptions::default())
        .await
        .unwrap_or_else(|e| panic!("SPIRE: {e}"))
}

/// Follows the agent of `spire`, expecting `expected`, with quick retries.
fn follow_agent(spire: &Spire, expected: &Identity) -> (JoinHandle<()>, SpiffeIdentity) {
    let mut config = SpiffeConfig::new(Some(spire.socket()), Some(expected.clone()));
    config.min_backoff = Duration::from_millis(100);
    config.max_backoff = Duration::from_secs(1);
    follow(config).expect("a valid endpoint")
}

async fn first_credentials(identity: &SpiffeIdentity) -> CredentialStore {
    tokio::time::timeout(Duration::from_secs(60), identity.credentials())
        .await
        .unwrap_or_else(|_| panic!("no SVID in 60 s: {:?}", identity.report().ready()))
}

/// Polls `check` every 100 ms for up to `limit`.
async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An echo server over mTLS with `store`'s credentials; each accepted connection's peer and
/// outcome go to the returned channel.
async fn echo_server(
    store: CredentialStore,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Result<PeerIdentity, String>>,
) {
    let acceptor = Arc::new(TlsAcceptor::new(store, TlsSettings::default()).expect("acceptor"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (Arc::clone(&acceptor), tx.clone());
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(accepted) => {
                        let _ = tx.send(Ok(accepted.peer.clone()));
                        let mut io = accepted.io;
                        let mut buf = [0u8; 64];
                        while let Ok(n @ 1..) = io.read(&mut buf).await {
                            if io.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                    Err(AcceptError::Withdrawn(reason)) => {
                        let _ = tx.send(Err(format!("withdrawn: {reason}")));
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// One round trip over an open TLS stream.
async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(stream: &mut S) {
    stream.write_all(b"ping").await.expect("write");
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut buf))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(&buf, b"ping");
}

async fn dial(
    connector: &TlsConnector,
    addr: std::net::SocketAddr,
    expected: &Identity,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, HandshakeError> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    connector.connect(tcp, expected).await
}

/// The serial of the certificate the server presented on `stream`.
fn server_serial(stream: &tokio_rustls::client::TlsStream<TcpStream>) -> String {
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("a server certificate");
    serial_of(leaf).expect("serial")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svids_from_the_agent_serve_mtls_and_rotate_without_dropping_connections() {
    let spire = spire().await;
    let id = spire.id("ns/test/sa/lib");
    spire
        .register(&id, &this_binary(), Duration::from_secs(30))
        .await
        .expect("register");
    let (_task, identity) = follow_agent(&spire, &id);
    let store = first_credentials(&identity).await;
    let report = identity.report();
    assert_eq!(store.current().identity(), &id);
    assert_eq!(report.state(), SpiffeState::Serving);
    assert!(report.ready().is_ok());
    let first_serial = report.serial().expect("a serial");

    // mTLS with the SVID on both sides: each side sees the other's SPIFFE ID.
    let (addr, mut accepted) = echo_server(store.clone()).await;
    let connector = TlsConnector::new(store.clone(), TlsSettings::default());
    let mut open = dial(&connector, addr, &id).await.expect("handshake");
    assert_eq!(
        accepted.recv().await.expect("accepted"),
        Ok(PeerIdentity::Authenticated(id.clone()))
    );
    assert_eq!(server_serial(&open), first_serial);
    echo(&mut open).await;

    // SPIRE rotates at half the TTL (with jitter): within about 15 s, 45 at most.
    eventually(Duration::from_secs(45), "the SVID rotates", || {
        report.serial().is_some_and(|s| s != first_serial)
    })
    .await;
    let second_serial = report.serial().expect("a serial");
    assert!(report.applied() >= 2);
    assert_eq!(store.rotations(), report.applied() - 1);

    // The connection opened before the rotation is untouched; a new one presents the new SVID.
    echo(&mut open).await;
    let mut fresh = dial(&connector, addr, &id)
        .await
        .expect("handshake after rotation");
    assert_eq!(server_serial(&fresh), second_serial);
    echo(&mut fresh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_svid_for_another_identity_is_refused_with_both_named() {
    let spire = spire().await;
    let issued = spire.id("ns/test/sa/other");
    let configured = spire.id("ns/test/sa/lib");
    spire
        .register(&issued, &this_binary(), Duration::from_secs(120))
        .await
        .expect("register");
    let (_task, identity) = follow_agent(&spire, &configured);
    let report = identity.report();
    eventually(Duration::from_secs(30), "the SVID is refused", || {
        report.refused() >= 1
    })
    .await;
    let error = report.last_error().expect("an error");
    assert!(
        error.contains(issued.as_str()) && error.contains(configured.as_str()),
        "{error}"
    );
    assert!(identity.store().is_none(), "nothing is served");
    assert_eq!(report.state(), SpiffeState::Waiting);
    assert!(report.ready().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_svid_stays_while_the_agent_is_away_and_waiting_ends_when_it_comes() {
    // The agent is not there at first: the follower waits, not ready, with nothing to serve.
    let spire = Spire::start_server(SpireOptions::default())
        .await
        .expect("server");
    let id = spire.id("ns/test/sa/lib");
    spire
        .register(&id, &this_binary(), Duration::from_secs(120))
        .await
        .expect("register");
    let (_task, identity) = follow_agent(&spire, &id);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(identity.store().is_none());
    let waiting = identity.report().ready().expect_err("not ready yet");
    assert!(waiting.contains("waiting"), "{waiting}");
    assert!(
        identity.report().errors() >= 1,
        "the failed attempts are counted"
    );

    spire.start_agent().await.expect("agent");
    let store = first_credentials(&identity).await;
    let report = identity.report();
    assert!(report.ready().is_ok());

    // The agent goes away: the loss is counted, the SVID stays in force and still handshakes.
    let (addr, mut accepted) = echo_server(store.clone()).await;
    let connector = TlsConnector::new(store.clone(), TlsSettings::default());
    spire.stop_agent();
    eventually(Duration::from_secs(30), "the loss is counted", || {
        report.losses() >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(store.withdrawn(), None);
    assert!(report.ready().is_ok());
    let mut stream = dial(&connector, addr, &id)
        .await
        .expect("handshake without the agent");
    echo(&mut stream).await;
    assert!(accepted.recv().await.expect("accepted").is_ok());

    // It comes back: the source reconnects and the identity is unchanged.
    spire.start_agent().await.expect("agent again");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(report.ready().is_ok());
    assert_eq!(report.identity(), Some(id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_svid_with_the_agent_away_is_withdrawn() {
    let spire = spire().await;
    let id = spire.id("ns/test/sa/lib");
    spire
        .register(&id, &this_binary(), Duration::from_secs(12))
        .await
        .expect("register");
    let (_task, identity) = follow_agent(&spire, &id);
    let store = first_credentials(&identity).await;
    let report = identity.report();
    spire.stop_agent();
    eventually(
        Duration::from_secs(30),
        "the SVID expires and is withdrawn",
        || store.withdrawn().is_some(),
    )
    .await;
    let reason = store.withdrawn().expect("a reason");
    assert!(reason.contains("expired"), "{reason}");
    assert_eq!(report.state(), SpiffeState::Withdrawn);
    assert!(report.ready().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_entry_withdraws_the_identity_at_once_and_handshakes_fail() {
    let spire = spire().await;
    let id = spire.id("ns/test/sa/lib");
    let entry = spire
        .register(&id, &this_binary(), Duration::from_secs(120))
        .await
        .expect("register");
    let (_task, identity) = follow_agent(&spire, &id);
    let store = first_credentials(&identity).await;
    let report = identity.report();
    let (addr, mut accepted) = echo_server(store.clone()).await;
    let connector = TlsConnector::new(store.clone(), TlsSettings::default());
    let mut open = dial(&connector, addr, &id).await.expect("handshake");
    assert!(accepted.recv().await.expect("accepted").is_ok());

    spire.unregister(&entry).await.expect("unregister");
    // The agent syncs with the server every 5 s; the SVID had two minutes left.
    eventually(Duration::from_secs(30), "the identity is withdrawn", || {
        store.withdrawn().is_some()
    })
    .await;
    let reason = store.withdrawn().expect("a reason");
    assert!(reason.contains("withdrew"), "{reason}");
    assert_eq!(report.state(), SpiffeState::Withdrawn);

    // New handshakes fail on both sides with the reason; the open connection is not cut.
    let refused = dial(&connector, addr, &id)
        .await
        .expect_err("no identity to present");
    assert!(matches!(refused, HandshakeError::Withdrawn(_)), "{refused}");
    // (The server saw that attempt closed before any ClientHello.)
    let closed = accepted.recv().await.expect("an attempt");
    assert!(closed.is_err(), "{closed:?}");
    let plain = TlsConnector::new(
        CredentialStore::new(store.current().as_ref().clone()),
        TlsSettings::default(),
    );
    let _ = dial(&plain, addr, &id).await;
    let outcome = accepted.recv().await.expect("an attempt");
    assert!(
        outcome.as_ref().is_err_and(|e| e.starts_with("withdrawn")),
        "{outcome:?}"
    );
    echo(&mut open).await;

    // Registered again, the workload gets an identity back.
    spire
        .register(&id, &this_binary(), Duration::from_secs(120))
        .await
        .expect("register again");
    eventually(Duration::from_secs(30), "the identity is back", || {
        store.withdrawn().is_none()
    })
    .await;
    assert_eq!(report.state(), SpiffeState::Serving);
}

#[tokio::test]
async fn a_missing_or_malformed_endpoint_is_an_error_at_start() {
    let err = follow(SpiffeConfig::new(Some("http://agent".into()), None))
        .expect_err("not a Workload API address");
    assert!(err.to_string().contains("http://agent"), "{err}");
}
