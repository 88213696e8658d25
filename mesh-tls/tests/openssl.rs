//! Interoperability with a TLS stack that is not rustls: Debian's `openssl s_client` (installed
//! by `.ci/run`) against our acceptor, with and without a client certificate.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use mesh_tls::{DevCa, TlsSettings};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

struct Run {
    stdout: String,
    stderr: String,
}

/// `openssl s_client` to `port` with `args`, sending one HTTP/1.1 request and reading until
/// the server closes.
async fn s_client(port: u16, args: &[&str]) -> Run {
    let mut child = Command::new("openssl")
        .arg("s_client")
        .args([
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-ign_eof",
            "-brief",
        ])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl runs: install Debian's `openssl` package (.ci/run does)");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(b"GET / HTTP/1.1\r\nhost: api\r\nconnection: close\r\n\r\n")
        .await
        .expect("write request");
    drop(stdin);
    let out = child.wait_with_output().await.expect("openssl finishes");
    Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn scratch_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    std::env::temp_dir().join(format!("mesh-tls-openssl-{}-{nanos}", std::process::id()))
}

fn path(dir: &Path, file: &str) -> String {
    dir.join(file).display().to_string()
}

#[tokio::test]
async fn openssl_s_client_is_accepted_with_a_certificate_and_refused_without() {
    tokio::time::timeout(LIMIT, async {
        let ca = DevCa::new("mesh.local").expect("ca");
        let acceptor = acceptor(&ca, &api(), TlsSettings::default());
        let mut server = MeshedServer::start(acceptor, None).await;
        let port = server.addr.port();
        let dir = scratch_dir();
        ca.issue(&web(), HOUR)
            .expect("issue")
            .write(&dir)
            .expect("write");
        let (cert, key, roots) = (
            path(&dir, "cert.pem"),
            path(&dir, "key.pem"),
            path(&dir, "roots.pem"),
        );
        let verify = ["-CAfile", roots.as_str(), "-verify_return_error"];

        // With our workload certificate: verified both ways, served, and the server saw who.
        let with_cert = s_client(
            port,
            &[
                &verify[..],
                &["-tls1_3", "-alpn", "http/1.1", "-cert", &cert, "-key", &key],
            ]
            .concat(),
        )
        .await;
        assert!(
            with_cert.stdout.contains("HTTP/1.1 200"),
            "{}\n{}",
            with_cert.stdout,
            with_cert.stderr
        );
        assert!(
            with_cert.stdout.contains(web().as_str()),
            "{}",
            with_cert.stdout
        );
        assert!(
            with_cert.stderr.contains("Verification: OK"),
            "{}",
            with_cert.stderr
        );
        assert!(with_cert.stderr.contains("TLSv1.3"), "{}", with_cert.stderr);

        // Without a certificate: the handshake is refused, nothing is served.
        let without = s_client(
            port,
            &[&verify[..], &["-tls1_3", "-alpn", "http/1.1"]].concat(),
        )
        .await;
        assert!(!without.stdout.contains("HTTP/1.1"), "{}", without.stdout);
        assert!(
            without
                .stderr
                .to_lowercase()
                .contains("certificate required"),
            "{}",
            without.stderr
        );
        assert_eq!(server.next_error().await, "no_client_cert");

        // TLS 1.2, with a certificate: refused, since only TLS 1.3 is allowed by default.
        let tls12 = s_client(
            port,
            &[&verify[..], &["-tls1_2", "-cert", &cert, "-key", &key]].concat(),
        )
        .await;
        assert!(!tls12.stdout.contains("HTTP/1.1"), "{}", tls12.stdout);
        assert_eq!(server.next_error().await, "protocol_version");
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
    .expect("in time");
}
