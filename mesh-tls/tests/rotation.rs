//! Certificate rotation under load: the server's files are replaced while clients keep
//! sending; nothing fails, established connections carry on, new ones see the new certificate,
//! and a broken replacement leaves the working one in force.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_tls::{
    CredentialFiles, CredentialStore, DevCa, TlsAcceptor, TlsConnector, TlsSettings, serial_of,
};
use support::*;
use tokio::net::TcpStream;

/// A directory of its own under the system's temporary directory.
fn scratch_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    std::env::temp_dir().join(format!("mesh-tls-{name}-{}-{nanos}", std::process::id()))
}

/// A new connection, one request over it; the serial of the certificate the server presented.
async fn fresh_request(
    connector: &TlsConnector,
    addr: std::net::SocketAddr,
) -> Result<String, mesh_core::BoxError> {
    let tcp = TcpStream::connect(addr).await?;
    let tls = connector.connect(tcp, &api()).await?;
    let serial = serial_of(
        &tls.get_ref()
            .1
            .peer_certificates()
            .ok_or("no certificate")?[0],
    )?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let rsp = sender
        .send_request(
            Request::get("/")
                .header("host", "api")
                .body(Empty::<Bytes>::new())?,
        )
        .await?;
    if rsp.status() != 200 {
        return Err(format!("status {}", rsp.status()).into());
    }
    rsp.into_body().collect().await?;
    Ok(serial)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_fails_nothing_and_new_connections_see_the_new_certificate() {
    tokio::time::timeout(LIMIT, async {
        let ca = DevCa::new("mesh.local").expect("ca");
        let dir = scratch_dir("rotation");
        let first = ca.issue(&api(), HOUR).expect("issue");
        first.write(&dir).expect("write");
        let files = CredentialFiles::in_dir(&dir);
        let server_store = CredentialStore::from_files(&files).expect("load");
        let watcher = server_store.watch(files.clone(), Duration::from_millis(20));
        let acceptor =
            TlsAcceptor::new(server_store.clone(), TlsSettings::default()).expect("acceptor");
        let server = MeshedServer::start(acceptor, None).await;
        let addr = server.addr;
        let old_serial = serial_of(server_store.current().leaf()).expect("serial");

        let client_store = store(&ca, &web());
        // Fresh connections speak HTTP/1.1 (one request each); the long-lived one HTTP/2.
        let connector = TlsConnector::new(
            client_store.clone(),
            TlsSettings::default().alpn(["http/1.1"]),
        );
        let h2 = TlsConnector::new(client_store, TlsSettings::default().alpn(["h2"]));
        // One HTTP/2 connection made before the rotation, used throughout.
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let tls = h2.connect(tcp, &api()).await.expect("handshake");
        let (long_lived, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);

        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicU64::new(0));
        let load = {
            let (stop, failures, connector) = (stop.clone(), failures.clone(), connector.clone());
            tokio::spawn(async move {
                let mut serials = Vec::new();
                let mut long_lived = long_lived;
                while !stop.load(Ordering::Relaxed) {
                    match fresh_request(&connector, addr).await {
                        Ok(serial) => serials.push(serial),
                        Err(err) => {
                            eprintln!("fresh connection failed: {err}");
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    let req = Request::get("http://api/")
                        .body(Empty::<Bytes>::new())
                        .expect("request");
                    let ok = match long_lived.send_request(req).await {
                        Ok(rsp) => rsp.status() == 200 && rsp.into_body().collect().await.is_ok(),
                        Err(_) => false,
                    };
                    if !ok {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                serials
            })
        };

        tokio::time::sleep(Duration::from_millis(150)).await;
        let second = ca.issue(&api(), HOUR).expect("reissue");
        second.write(&dir).expect("replace files");
        while server_store.rotations() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let new_serial = serial_of(server_store.current().leaf()).expect("serial");
        assert_ne!(new_serial, old_serial);
        tokio::time::sleep(Duration::from_millis(150)).await;

        // A broken replacement: the key file is garbage. Reported, and the working material
        // stays in force.
        std::fs::write(
            dir.join("key.pem"),
            "-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n",
        )
        .expect("break key");
        while server_store.last_error().is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let reported = server_store.last_error().unwrap_or_default();
        assert!(reported.contains("key.pem"), "{reported}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.store(true, Ordering::Relaxed);
        let serials = load.await.expect("load task");
        watcher.abort();

        assert_eq!(failures.load(Ordering::Relaxed), 0);
        assert_eq!(server_store.rotations(), 1);
        let first_new = serials
            .iter()
            .position(|s| *s == new_serial)
            .expect("the new certificate was seen");
        assert!(
            first_new > 0 && serials[0] == old_serial,
            "the old certificate was seen first"
        );
        assert!(
            serials[first_new..].iter().all(|s| *s == new_serial),
            "after the rotation, only the new certificate: {serials:?}"
        );
        assert_eq!(
            fresh_request(&connector, addr).await.expect("still served"),
            new_serial
        );
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn reload_on_demand_reports_a_broken_file_by_name() {
    let ca = DevCa::new("mesh.local").expect("ca");
    let dir = scratch_dir("reload");
    ca.issue(&api(), HOUR)
        .expect("issue")
        .write(&dir)
        .expect("write");
    let files = CredentialFiles::in_dir(&dir);
    let store = CredentialStore::from_files(&files).expect("load");
    let before = serial_of(store.current().leaf()).expect("serial");

    std::fs::write(&files.chain, "garbage").expect("break");
    let err = store.reload(&files).expect_err("broken");
    assert!(err.to_string().contains("cert.pem"), "{err}");
    assert_eq!(serial_of(store.current().leaf()).expect("serial"), before);

    std::fs::remove_file(&files.roots).expect("remove");
    let err = store.reload(&files).expect_err("missing");
    assert!(err.to_string().contains("roots.pem"), "{err}");

    ca.issue(&api(), HOUR)
        .expect("issue")
        .write(&dir)
        .expect("write");
    store.reload(&files).expect("fixed");
    assert_ne!(serial_of(store.current().leaf()).expect("serial"), before);
    assert_eq!((store.rotations(), store.last_error()), (1, None));
    let _ = std::fs::remove_dir_all(&dir);
}
