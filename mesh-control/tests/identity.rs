//! The identity API against a real kube-apiserver: tokens from the TokenRequest API, proven by
//! TokenReview, certificates signed for exactly the token's service account, renewed under
//! load.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use mesh_api::identity::CertifyRequest;
use mesh_api::identity::identity_client::IdentityClient;
use mesh_control::identity::DEFAULT_AUDIENCE;
use mesh_control::test_util::{KubeFixture, run};
use mesh_core::Identity;
use mesh_tls::control::{Certifier, CertifyConfig, CertifyError};
use mesh_tls::{CredentialStore, MeshEndpoint, TlsAcceptor, TlsConnector, TlsSettings};
use support::{Control, LIMIT, TRUST_DOMAIN, id, token_file};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn account(ns: &str, sa: &str) -> Identity {
    id(&format!("spiffe://{TRUST_DOMAIN}/ns/{ns}/sa/{sa}"))
}

/// An mTLS echo server presenting `store`'s certificate.
async fn echo_server(store: CredentialStore) -> std::net::SocketAddr {
    let acceptor = Arc::new(TlsAcceptor::new(store, TlsSettings::default()).expect("acceptor"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = Arc::clone(&acceptor);
            tokio::spawn(async move {
                let Ok(accepted) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut io = accepted.io;
                let mut buf = [0u8; 64];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// One round trip over an established TLS stream.
async fn ping<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    io: &mut S,
) -> std::io::Result<()> {
    io.write_all(b"ping").await?;
    let mut back = [0u8; 4];
    io.read_exact(&mut back).await?;
    if &back != b"ping" {
        return Err(std::io::Error::other("echo mismatch"));
    }
    Ok(())
}

/// A certifier asking for `ns`'s web identity with a real token for the web account.
async fn web_certifier(fixture: &KubeFixture, control: &Control, ns: &str) -> Certifier {
    let token = fixture.token(ns, "web", DEFAULT_AUDIENCE, 600).await;
    let config = CertifyConfig::new(
        account(ns, "web"),
        token_file(fixture, &format!("{ns}-web"), &token),
        control.running.roots_pem().as_bytes().to_vec(),
    );
    Certifier::new(control.plane().channel(None).expect("channel"), config)
}

#[test]
fn a_token_for_web_gets_webs_identity_and_the_inbound_serves_mtls_with_it() {
    run(async {
        let fixture = KubeFixture::shared().await;
        let control = Control::start(fixture, |_| {}).await;
        let ns = fixture.namespace("app", &["web", "client"]).await;
        let web = account(&ns, "web");
        let mut certifier = web_certifier(fixture, &control, &ns).await;
        let (credentials, valid_until) = tokio::time::timeout(LIMIT, certifier.certify())
            .await
            .expect("in time")
            .expect("certified");
        assert_eq!(credentials.identity(), &web);
        let left = valid_until
            .duration_since(SystemTime::now())
            .expect("in the future");
        assert!(
            left > Duration::from_secs(23 * 3600) && left <= Duration::from_secs(24 * 3600),
            "{left:?}"
        );

        // The inbound serves mTLS with it: a client of the same trust domain verifies it as web.
        let server = echo_server(CredentialStore::new(credentials)).await;
        let client_creds = control
            .ca
            .issue(&account(&ns, "client"), Duration::from_secs(600))
            .expect("issue")
            .credentials()
            .expect("credentials");
        let connector =
            TlsConnector::new(CredentialStore::new(client_creds), TlsSettings::default());
        let mut tls = connector
            .connect_to(&MeshEndpoint {
                addr: server,
                identity: web.clone(),
            })
            .await
            .expect("mTLS to web");
        ping(&mut tls).await.expect("echo");
    })
}

#[test]
fn refusals_are_typed_and_say_why() {
    run(async {
        let fixture = KubeFixture::shared().await;
        let control = Control::start(fixture, |_| {}).await;
        let ns = fixture.namespace("refuse", &["web", "other"]).await;
        let web = account(&ns, "web");
        let roots = control.running.roots_pem().as_bytes().to_vec();
        let channel = control.plane().channel(None).expect("channel");
        let refusal = |token: String, name: &'static str| {
            let config = CertifyConfig::new(
                web.clone(),
                token_file(fixture, &format!("{ns}-{name}"), &token),
                roots.clone(),
            );
            let mut certifier = Certifier::new(channel.clone(), config);
            async move {
                match tokio::time::timeout(LIMIT, certifier.certify())
                    .await
                    .expect("in time")
                {
                    Err(CertifyError::Refused { code, reason }) => (code, reason),
                    other => panic!("{name}: expected a refusal, got {other:?}"),
                }
            }
        };

        // A token for another account asking for web.
        let (code, reason) = refusal(
            fixture.token(&ns, "other", DEFAULT_AUDIENCE, 600).await,
            "other",
        )
        .await;
        assert_eq!(code, tonic::Code::PermissionDenied, "{reason}");
        assert!(
            reason.contains("sa/other") && reason.contains("sa/web"),
            "{reason}"
        );

        // A token for web, for another audience.
        let (code, reason) = refusal(
            fixture.token(&ns, "web", "someone-else", 600).await,
            "audience",
        )
        .await;
        assert_eq!(code, tonic::Code::Unauthenticated, "{reason}");
        assert!(reason.contains("audience"), "{reason}");

        // A token for web that has expired (signed with the API server's own key).
        let (code, reason) = refusal(
            fixture.expired_token(&ns, "web", DEFAULT_AUDIENCE).await,
            "expired",
        )
        .await;
        assert_eq!(code, tonic::Code::Unauthenticated, "{reason}");
        assert!(reason.contains("expired"), "{reason}");

        // Garbage instead of a token.
        let (code, _) = refusal("not.a.jwt".into(), "garbage").await;
        assert_eq!(code, tonic::Code::Unauthenticated);

        // A valid token for web, with a CSR that also asks for a DNS name.
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["evil.example".to_owned()]).expect("params");
        params.subject_alt_names.insert(
            0,
            rcgen::SanType::URI(web.as_str().try_into().expect("uri")),
        );
        let csr = params.serialize_request(&key).expect("csr");
        let token = fixture.token(&ns, "web", DEFAULT_AUDIENCE, 600).await;
        let status = IdentityClient::new(channel.clone())
            .certify(CertifyRequest {
                identity: web.to_string(),
                token: token.into_bytes(),
                certificate_signing_request: csr.der().to_vec(),
            })
            .await
            .expect_err("refused");
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{}",
            status.message()
        );
        assert!(
            status.message().contains("evil.example"),
            "{}",
            status.message()
        );
    })
}

#[test]
fn a_sixty_second_certificate_renews_under_load_without_a_failed_request() {
    run(async {
        let fixture = KubeFixture::shared().await;
        let control = Control::start(fixture, |config| {
            config.identity.lifetime = Duration::from_secs(60)
        })
        .await;
        let ns = fixture.namespace("renew", &["web", "client"]).await;
        let web = account(&ns, "web");
        let mut certifier = web_certifier(fixture, &control, &ns).await;
        let report = certifier.report();
        let (credentials, valid_until) = certifier.certify().await.expect("certified");
        let first_serial = mesh_tls::serial_of(credentials.leaf()).expect("serial");
        let store = CredentialStore::new(credentials);
        let renewal = certifier.spawn_renewal(store.clone(), valid_until);
        let server = echo_server(store.clone()).await;

        let client_creds = control
            .ca
            .issue(&account(&ns, "client"), Duration::from_secs(600))
            .expect("issue")
            .credentials()
            .expect("credentials");
        let connector = Arc::new(TlsConnector::new(
            CredentialStore::new(client_creds),
            TlsSettings::default(),
        ));
        let endpoint = MeshEndpoint {
            addr: server,
            identity: web.clone(),
        };
        // A connection opened before the renewal, used after it.
        let mut long_lived = connector.connect_to(&endpoint).await.expect("connect");

        // Load: four clients each opening a fresh mTLS connection (a full handshake verifying
        // web's certificate) and echoing over it, until the certificate has been renewed and
        // a while after.
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut clients = Vec::new();
        for _ in 0..4 {
            let (connector, endpoint, done, ok, failed) = (
                Arc::clone(&connector),
                endpoint.clone(),
                Arc::clone(&done),
                Arc::clone(&ok),
                Arc::clone(&failed),
            );
            clients.push(tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    let result = async {
                        let mut tls = connector
                            .connect_to(&endpoint)
                            .await
                            .map_err(std::io::Error::other)?;
                        ping(&mut tls).await
                    }
                    .await;
                    match result {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }));
        }
        // 70% of 60 s is 42 s; allow for a slow machine.
        let started = Instant::now();
        while store.rotations() == 0 && started.elapsed() < Duration::from_secs(75) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        done.store(true, Ordering::Relaxed);
        for client in clients {
            client.await.expect("client task");
        }
        renewal.abort();

        assert!(
            store.rotations() >= 1,
            "renewed within 75 s: {:?}",
            report.last_error()
        );
        assert_ne!(
            mesh_tls::serial_of(store.current().leaf()).expect("serial"),
            first_serial
        );
        assert!(report.certified() >= 2);
        assert_eq!(
            failed.load(Ordering::Relaxed),
            0,
            "failed requests during renewal"
        );
        assert!(
            ok.load(Ordering::Relaxed) > 100,
            "load ran: {}",
            ok.load(Ordering::Relaxed)
        );
        ping(&mut long_lived)
            .await
            .expect("the connection from before the renewal still works");
    })
}

#[test]
fn a_new_issuer_in_the_secret_signs_the_next_certificate_without_a_restart() {
    run(async {
        let fixture = KubeFixture::shared().await;
        let control = Control::start(fixture, |_| {}).await;
        let ns = fixture.namespace("rotate", &["web"]).await;
        let issuer_of = |credentials: &mesh_tls::Credentials| {
            let (_, cert) = x509_parser::parse_x509_certificate(credentials.leaf()).expect("leaf");
            cert.issuer().to_string()
        };
        let mut certifier = web_certifier(fixture, &control, &ns).await;
        let (first, _) = certifier.certify().await.expect("certified");
        assert!(
            issuer_of(&first).contains("mesh.local"),
            "{}",
            issuer_of(&first)
        );

        // The operator replaces the issuer Secret with a new CA.
        let next = mesh_tls::DevCa::new("rotated.local").expect("ca");
        let secret =
            mesh_control::identity::issuer_secret(&next, &control.namespace, "mesh-issuer");
        let client = fixture.client().await.expect("client");
        kube::api::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(
            client,
            &control.namespace,
        )
        .replace("mesh-issuer", &kube::api::PostParams::default(), &secret)
        .await
        .expect("replace the issuer");
        let started = std::time::Instant::now();
        loop {
            // The proxy's roots do not matter to the issuer; ask until the new one signs.
            let (credentials, _) = certifier.certify().await.expect("certified");
            if issuer_of(&credentials).contains("rotated.local") {
                break;
            }
            assert!(started.elapsed() < LIMIT, "the new issuer never signed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

#[test]
fn a_certificate_that_expires_before_renewal_succeeds_is_withdrawn_until_the_next_one() {
    run(async {
        let fixture = KubeFixture::shared().await;
        let control = Control::start(fixture, |config| {
            config.identity.lifetime = Duration::from_secs(15)
        })
        .await;
        let ns = fixture.namespace("expire", &["web"]).await;
        let token = fixture.token(&ns, "web", DEFAULT_AUDIENCE, 600).await;
        let file = token_file(fixture, &format!("{ns}-web"), &token);
        let mut config = CertifyConfig::new(
            account(&ns, "web"),
            &file,
            control.running.roots_pem().as_bytes().to_vec(),
        );
        config.max_backoff = Duration::from_secs(1);
        let mut certifier = Certifier::new(control.plane().channel(None).expect("channel"), config);
        let report = certifier.report();
        let (credentials, valid_until) = certifier.certify().await.expect("certified");
        let store = CredentialStore::new(credentials);
        // Every renewal is refused from now on: the token is garbage.
        std::fs::write(&file, "not-a-token").expect("spoil the token");
        let renewal = certifier.spawn_renewal(store.clone(), valid_until);

        let deadline = Instant::now() + Duration::from_secs(40);
        while store.withdrawn().is_none() {
            assert!(Instant::now() < deadline, "not withdrawn at expiry");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            SystemTime::now() >= valid_until,
            "withdrawn before the certificate expired"
        );
        let reason = store.withdrawn().expect("a reason");
        assert!(
            reason.contains("expired") && reason.contains("last error"),
            "{reason}"
        );
        assert!(report.failures() >= 1);
        // Handshakes now fail saying why.
        let connector = TlsConnector::new(store.clone(), TlsSettings::default());
        let refused = connector
            .connect(tokio::io::duplex(1024).0, &account(&ns, "web"))
            .await
            .expect_err("no identity to present");
        assert!(
            matches!(refused, mesh_tls::HandshakeError::Withdrawn(_)),
            "{refused}"
        );

        // A good token again: the next attempt succeeds and ends the withdrawal.
        std::fs::write(&file, &token).expect("restore the token");
        let deadline = Instant::now() + Duration::from_secs(20);
        while store.withdrawn().is_some() {
            assert!(
                Instant::now() < deadline,
                "still withdrawn: {:?}",
                report.last_error()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(store.rotations() >= 1);
        renewal.abort();
    })
}
