//! Real mTLS handshakes on 127.0.0.1 with certificates minted in the test: who gets in, who
//! does not, and what the server learns.

mod support;

use std::time::Duration;

use mesh_tls::{DevCa, HandshakeError, Mode, TlsSettings};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn mtls_over_http1_and_http2_hands_the_server_the_clients_identity() {
    tokio::time::timeout(LIMIT, async {
        let ca = DevCa::new("mesh.local").expect("ca");
        let acceptor = acceptor(&ca, &api(), TlsSettings::default());
        let server = MeshedServer::start(acceptor, None).await;
        for (alpn, version) in [("h2", "HTTP/2.0"), ("http/1.1", "HTTP/1.1")] {
            let settings = TlsSettings::default().alpn([alpn]);
            let client = client(store(&ca, &web()), settings, server.addr, api());
            let (status, peer, seen) = get(&client).await.expect("request");
            assert_eq!(status, 200);
            assert_eq!(peer, web().as_str());
            assert_eq!(seen, version, "ALPN {alpn}");
        }
        assert_eq!(
            server
                .acceptor
                .stats()
                .expect("its own counters")
                .counts()
                .tls,
            2
        );
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    tokio::time::timeout(LIMIT, async {
        let ca = DevCa::new("mesh.local").expect("ca");
        let rogue = DevCa::new("mesh.local").expect("rogue ca");
        let acceptor = acceptor(&ca, &api(), TlsSettings::default());
        let mut server = MeshedServer::start(acceptor, None).await;
        // The rogue workload trusts the real CA (so it accepts the server), but its own
        // certificate comes from the rogue CA.
        let issued = rogue.issue(&web(), HOUR).expect("issue");
        let creds = mesh_tls::Credentials::from_pem(
            issued.cert_pem.as_bytes(),
            issued.key_pem.as_bytes(),
            ca.root_pem().as_bytes(),
        )
        .expect("credentials");
        let client = client_with(creds, server.addr, api());
        assert!(get(&client).await.is_err());
        assert_eq!(server.next_error().await, "unknown_ca");
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused() {
    tokio::time::timeout(LIMIT, async {
        let ca = DevCa::new("mesh.local").expect("ca");
        let acceptor = acceptor(&ca, &api(), TlsSettings::default());
        let mut server = MeshedServer::start(acceptor, None).await;
        let creds = expired(&ca, &web()).credentials().expect("credentials");
        let client = client_with(creds, server.addr, api());
        assert!(get(&client).await.is_err());
        assert_eq!(server.next_error().await, "expired_cert");
    })
    .await
    .expect("in time");
}

/// A rustls client that verifies the server by DNS name (the server's identity is a DNS name
/// here) and presents `client_cert` if given, speaking only `versions`.
fn plain_rustls_client(
    ca: &DevCa,
    client_cert: Option<&mesh_tls::Issued>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> tokio_rustls_connector::Connector {
    tokio_rustls_connector::Connector::new(ca, client_cert, versions)
}

mod tokio_rustls_connector {
    //! A stock rustls client, not ours, for the cases our connector would never produce.
    use std::sync::Arc;

    use rustls::ClientConfig;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

    pub(crate) struct Connector(Arc<ClientConfig>);

    impl Connector {
        pub(crate) fn new(
            ca: &mesh_tls::DevCa,
            cert: Option<&mesh_tls::Issued>,
            versions: &[&'static rustls::SupportedProtocolVersion],
        ) -> Self {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(ca.root_pem().as_bytes()).expect("root"))
                .expect("add root");
            let builder = ClientConfig::builder_with_provider(mesh_tls::default_provider())
                .with_protocol_versions(versions)
                .expect("versions")
                .with_root_certificates(roots);
            let config = match cert {
                Some(issued) => builder
                    .with_client_auth_cert(
                        vec![
                            CertificateDer::from_pem_slice(issued.cert_pem.as_bytes())
                                .expect("cert"),
                        ],
                        PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).expect("key"),
                    )
                    .expect("client auth"),
                None => builder.with_no_client_auth(),
            };
            Self(Arc::new(config))
        }

        /// Handshakes, then writes a request and reads what comes back: a failed handshake on
        /// the server shows up as an error or an empty answer.
        pub(crate) async fn exchange(
            &self,
            addr: std::net::SocketAddr,
        ) -> Result<String, std::io::Error> {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = ServerName::try_from("api.mesh.local").expect("name");
            let mut tls = tokio_rustls::TlsConnector::from(self.0.clone())
                .connect(name, tcp)
                .await?;
            tls.write_all(b"GET / HTTP/1.1\r\nhost: api\r\nconnection: close\r\n\r\n")
                .await?;
            let mut out = Vec::new();
            tls.read_to_end(&mut out).await?;
            Ok(String::from_utf8_lossy(&out).into_owned())
        }
    }
}

#[tokio::test]
async fn no_client_certificate_in_strict_mode_is_refused() {
    tokio::time::timeout(LIMIT, async {
        let ca = DevCa::new("mesh.local").expect("ca");
        let dns_api = id("api.mesh.local");
        let acceptor = acceptor(&ca, &dns_api, TlsSettings::default());
        let mut server = MeshedServer::start(acceptor, None).await;
        let client = plain_rustls_client(&ca, None, &[&rustls::version::TLS13]);
        let answer = client.exchange(server.addr).await;
        assert!(
            !answer.as_deref().unwrap_or("").contains("200"),
            "{answer:?}"
        );
        assert_eq!(server.next_error().await, "no_client_cert");
        // The same stock client with a certificate gets through, so the refusal was about it.
        let issued = ca.issue(&web(), HOUR).expect("issue");
        let with_cert = plain_rustls_client(&ca, Some(&issued), &[&rustls::version::TLS13]);
        let answer = with_cert.exchange(server.addr).await.expect("exchange");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn tls12_is_refused_unless_allowed() {
    tokio::time::timeout(LIMIT, async {
        let ca = DevCa::new("mesh.local").expect("ca");
        let dns_api = id("api.mesh.local");
        let issued = ca.issue(&web(), HOUR).expect("issue");
        let tls12_client = plain_rustls_client(&ca, Some(&issued), &[&rustls::version::TLS12]);

        let strict = acceptor(&ca, &dns_api, TlsSettings::default());
        let mut server = MeshedServer::start(strict, None).await;
        assert!(tls12_client.exchange(server.addr).await.is_err());
        assert_eq!(server.next_error().await, "protocol_version");

        let lenient = TlsSettings::default().allow_tls12(true);
        let acceptor = acceptor(&ca, &dns_api, lenient);
        let server = MeshedServer::start(acceptor, None).await;
        let answer = tls12_client
            .exchange(server.addr)
            .await
            .expect("TLS 1.2 allowed");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains(web().as_str()), "{answer}");
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_server_with_another_identity_is_refused_by_name() {
    tokio::time::timeout(LIMIT, async {
        let ca = DevCa::new("mesh.local").expect("ca");
        let db = id("spiffe://mesh.local/ns/default/sa/db");
        // A valid certificate from the same CA, but for db, where api was expected.
        let acceptor = acceptor(&ca, &db, TlsSettings::default());
        let server = MeshedServer::start(acceptor, None).await;
        let connector = mesh_tls::TlsConnector::new(store(&ca, &web()), TlsSettings::default());
        let tcp = TcpStream::connect(server.addr).await.expect("connect");
        let err = connector.connect(tcp, &api()).await.expect_err("refused");
        let HandshakeError::IdentityMismatch(mismatch) = &err else {
            panic!("not a mismatch: {err:?}");
        };
        assert_eq!(mismatch.expected, api());
        assert_eq!(mismatch.presented, db.as_str());
        let message = err.to_string();
        assert!(
            message.contains(api().as_str()) && message.contains(db.as_str()),
            "{message}"
        );
        // Through hyper-util's client the request fails too, with the same error inside.
        let client = client(
            store(&ca, &web()),
            TlsSettings::default(),
            server.addr,
            api(),
        );
        let err = get(&client).await.expect_err("refused");
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&*err);
        let mut found = false;
        while let Some(e) = source {
            found |= e
                .downcast_ref::<HandshakeError>()
                .is_some_and(|c| matches!(c, HandshakeError::IdentityMismatch(_)));
            source = e.source();
        }
        assert!(found, "{err:?}");
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn permissive_mode_lets_plaintext_through_unauthenticated_and_still_verifies_tls() {
    tokio::time::timeout(LIMIT, async {
        let ca = DevCa::new("mesh.local").expect("ca");
        let settings = TlsSettings::default().mode(Mode::Permissive);
        let acceptor = acceptor(&ca, &api(), settings);
        let mut server = MeshedServer::start(acceptor, None).await;

        let mut plain = mesh_core::test_util::TestClient::connect(
            server.addr,
            mesh_core::test_util::HttpVersion::Http1,
        )
        .await
        .expect("plaintext connect");
        let rsp = plain.get("/").await.expect("plaintext request");
        assert_eq!(rsp.status(), 200);
        assert_eq!(rsp.headers()["x-peer"], "unauthenticated");

        let client = client(
            store(&ca, &web()),
            TlsSettings::default(),
            server.addr,
            api(),
        );
        let (status, peer, _) = get(&client).await.expect("mTLS request");
        assert_eq!((status, peer.as_str()), (200, web().as_str()));

        let creds = expired(&ca, &web()).credentials().expect("credentials");
        let bad = client_with(creds, server.addr, api());
        assert!(get(&bad).await.is_err());
        assert_eq!(server.next_error().await, "expired_cert");
        let counts = server.acceptor.stats().expect("its own counters").counts();
        assert_eq!(
            (counts.plaintext, counts.tls, counts.handshake_failures),
            (1, 1, 1)
        );
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn garbage_and_silence_are_closed_cleanly_at_the_deadline() {
    tokio::time::timeout(LIMIT, async {
        let ca = DevCa::new("mesh.local").expect("ca");
        let settings = TlsSettings::default()
            .detect_timeout(Duration::from_millis(200))
            .handshake_timeout(Duration::from_millis(300));
        let acceptor = acceptor(&ca, &api(), settings);
        let mut server = MeshedServer::start(acceptor, None).await;

        let mut garbage = TcpStream::connect(server.addr).await.expect("connect");
        garbage
            .write_all(b"\x00\xffnot tls at all\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 64];
        // The server closes without a word.
        let n = garbage.read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0);
        assert_eq!(server.next_error().await, "not_tls");

        // Plaintext HTTP is garbage too, in strict mode.
        let mut http = TcpStream::connect(server.addr).await.expect("connect");
        http.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        assert_eq!(http.read(&mut buf).await.unwrap_or(0), 0);
        assert_eq!(server.next_error().await, "not_tls");

        let mut silent = TcpStream::connect(server.addr).await.expect("connect");
        let started = tokio::time::Instant::now();
        assert_eq!(silent.read(&mut buf).await.unwrap_or(0), 0);
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(server.next_error().await, "detect_timeout");

        // The start of a ClientHello, then silence: the handshake deadline holds too.
        let mut stalled = TcpStream::connect(server.addr).await.expect("connect");
        stalled
            .write_all(&[0x16, 0x03, 0x01, 0x00])
            .await
            .expect("write");
        assert_eq!(stalled.read(&mut buf).await.unwrap_or(0), 0);
        assert_eq!(server.next_error().await, "handshake_timeout");

        let counts = server.acceptor.stats().expect("its own counters").counts();
        assert_eq!(
            (counts.rejected_not_tls, counts.timeouts, counts.tls),
            (2, 2, 0)
        );
    })
    .await
    .expect("in time");
}
