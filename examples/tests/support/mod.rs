//! Shared fixtures of the end-to-end tests: a development CA minting workload certificates
//! into a temporary directory, and proxies started in-process from TOML written here.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use examples::proxy::{Config, Proxy, Running};
use mesh_core::Identity;
use mesh_tls::DevCa;

/// The trust domain of every test certificate.
pub const DOMAIN: &str = "mesh.local";

/// The identity of workload `name`.
pub fn id(name: &str) -> Identity {
    Identity::parse(&format!("spiffe://{DOMAIN}/ns/test/sa/{name}")).expect("valid identity")
}

/// A CA and a scratch directory for one test.
pub struct Mesh {
    pub ca: DevCa,
    pub dir: PathBuf,
}

impl Mesh {
    pub fn new(test: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("mesh-e2e-{test}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self {
            ca: DevCa::new(DOMAIN).expect("CA"),
            dir,
        }
    }

    /// Writes `name`'s credentials and returns their directory.
    pub fn creds(&self, name: &str) -> PathBuf {
        let dir = self.dir.join(name);
        self.ca
            .issue(&id(name), Duration::from_secs(3600))
            .expect("issue")
            .write(&dir)
            .expect("write credentials");
        dir
    }

    /// A proxy for workload `name` from the TOML `sections`, with the identity and admin
    /// sections filled in.
    pub async fn proxy(&self, name: &str, sections: &str) -> Running {
        let text = format!(
            "[workload]\nnamespace = \"test\"\ndeployment = \"{name}\"\npod = \"{name}-0\"\n\n\
             [identity]\ndir = {dir:?}\nreload_interval = \"1s\"\n\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\n{sections}",
            dir = self.creds(name),
        );
        let config = Config::parse(&text, Path::new("test.toml")).expect("test config");
        Proxy::start(config).await.expect("proxy starts")
    }

    /// A proxy in front of `app` for workload `name`, admitting the identities `allow`.
    pub async fn server(&self, name: &str, app: SocketAddr, allow: &[&str]) -> Running {
        let allow: Vec<String> = allow
            .iter()
            .map(|a| format!("{:?}", id(a).as_str()))
            .collect();
        let sections = format!(
            "[inbound]\nlisten = \"127.0.0.1:0\"\napp = \"{app}\"\nauthorize = [{}]\n",
            allow.join(", ")
        );
        self.proxy(name, &sections).await
    }

    /// A proxy for workload `name` whose outbound side knows `service` at `endpoints`, whose
    /// identity is `server`'s, plus any `extra` TOML for that service.
    pub async fn client(
        &self,
        name: &str,
        service: &str,
        server: &str,
        endpoints: &[SocketAddr],
        extra: &str,
    ) -> Running {
        let endpoints: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
        let sections = format!(
            "[outbound]\nlisten = \"127.0.0.1:0\"\n\n\
             [[service]]\nname = \"{service}\"\nauthorities = [\"{service}\"]\nidentity = {identity:?}\n\
             endpoints = [{endpoints}]\n{extra}\n",
            identity = id(server).as_str(),
            endpoints = endpoints.join(", "),
        );
        self.proxy(name, &sections).await
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `program` with `args`, bounded in time, and returns (status, stdout, stderr).
pub async fn run(program: &str, args: &[&str]) -> (i32, String, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(program)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("command finished in time")
    .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A GET to a proxy's admin listener, with curl; returns the body.
pub async fn admin_get(admin: SocketAddr, path: &str) -> String {
    let (code, body, stderr) = run(
        "curl",
        &["-sS", "--max-time", "10", &format!("http://{admin}{path}")],
    )
    .await;
    assert_eq!(code, 0, "GET {path}: {stderr}");
    body
}

/// The sum of the Prometheus samples of `name` whose labels include all of `labels`.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let rest = series.strip_prefix(name)?;
            if !(rest.is_empty() || rest.starts_with('{')) {
                return None;
            }
            labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .map(|v| v as u64)
        .sum()
}

/// Sends `GET path` with `Host: host` over `client` and reads the whole response.
pub async fn get(
    client: &mut mesh_core::test_util::TestClient,
    host: &str,
    path: &str,
) -> (u16, String) {
    use http_body_util::BodyExt;
    let req = http::Request::builder()
        .uri(path)
        .header(http::header::HOST, host)
        .body(mesh_core::test_util::empty())
        .expect("request");
    let rsp = tokio::time::timeout(Duration::from_secs(10), client.send(req))
        .await
        .expect("response in time")
        .expect("response");
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}
