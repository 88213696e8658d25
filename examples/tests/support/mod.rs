//! Shared fixtures of the end-to-end tests: a development CA minting workload certificates
//! into a temporary directory, and proxies started in-process from TOML written here.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use examples::proxy::{Config, Proxy, Running};
use mesh_core::Identity;
use mesh_tls::DevCa;

pub mod h2raw;
pub mod viz;

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

    /// The TOML of a proxy for workload `name`: the workload, identity and admin sections,
    /// then `sections`.
    pub fn config_text(&self, name: &str, sections: &str) -> String {
        format!(
            "[workload]\nnamespace = \"test\"\ndeployment = \"{name}\"\npod = \"{name}-0\"\n\n\
             [identity]\ndir = {dir:?}\nreload_interval = \"1s\"\n\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\n{sections}",
            dir = self.creds(name),
        )
    }

    /// A proxy for workload `name` from the TOML `sections`, in this process.
    pub async fn proxy(&self, name: &str, sections: &str) -> Running {
        let text = self.config_text(name, sections);
        let config = Config::parse(&text, Path::new("test.toml")).expect("test config");
        Proxy::start(config).await.expect("proxy starts")
    }

    /// The inbound sections of a proxy in front of `app`, admitting the identities `allow`.
    pub fn server_sections(app: SocketAddr, allow: &[&str]) -> String {
        let allow: Vec<String> = allow
            .iter()
            .map(|a| format!("{:?}", id(a).as_str()))
            .collect();
        format!(
            "[inbound]\nlisten = \"127.0.0.1:0\"\napp = \"{app}\"\nauthorize = [{}]\n",
            allow.join(", ")
        )
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

impl Mesh {
    /// A proxy for workload `name` whose outbound side knows `service`, the workload of that
    /// name behind `server`'s inbound listener, plus any `extra` TOML for that service.
    pub async fn client_of(
        &self,
        name: &str,
        service: &str,
        server: &Running,
        extra: &str,
    ) -> Running {
        let inbound = server
            .inbound
            .expect("the server proxy has an inbound listener");
        self.client(name, service, service, &[inbound], extra).await
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A tonic channel to the outbound proxy at `outbound`, its requests for `origin`'s authority.
pub async fn grpc_channel(outbound: SocketAddr, origin: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{outbound}"))
        .expect("endpoint")
        .origin(origin.parse().expect("origin"))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect to the outbound proxy")
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

/// The `mesh-proxy` example binary.
pub fn proxy_binary() -> PathBuf {
    example_binary("mesh-proxy")
}

/// An example binary of this package, built next to this test (by `cargo test --workspace`,
/// or here, with the same profile, when only this test target was built).
pub fn example_binary(name: &str) -> PathBuf {
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join("examples").join(name);
    let _one_build_at_a_time = BUILD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = std::process::Command::new(cargo);
        build.args(["build", "-p", "examples", "--example", name]);
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building {name} failed");
    }
    bin
}

/// A `mesh-proxy` process and the addresses it printed when ready.
pub struct ProxyProcess {
    pub child: tokio::process::Child,
    pub admin: SocketAddr,
    pub inbound: Option<SocketAddr>,
    pub outbound: Option<SocketAddr>,
}

/// Starts `mesh-proxy --config FILE` and waits for its "ready" line.
pub async fn spawn_proxy(config: &Path) -> ProxyProcess {
    spawn_proxy_from(&proxy_binary(), config).await
}

/// Starts the `mesh-proxy` binary at `binary` (a copy, say, which SPIRE's `unix` attestor tells
/// apart by its path) with `--config FILE`, and waits for its "ready" line.
pub async fn spawn_proxy_from(binary: &Path, config: &Path) -> ProxyProcess {
    let mut command = tokio::process::Command::new(binary);
    command.arg("--config").arg(config);
    spawn_proxy_command(command).await
}

/// Starts a `mesh-proxy` command line (under `ip netns exec` and `setpriv`, say) and waits for
/// its "ready" line.
pub async fn spawn_proxy_command(mut command: tokio::process::Command) -> ProxyProcess {
    use tokio::io::AsyncBufReadExt;
    let mut child = command
        .env(
            "MESH_LOG",
            std::env::var("MESH_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("mesh-proxy starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("ready in time")
        .expect("read stdout")
        .expect("a ready line");
    // Keep reading (and dropping) whatever else it prints, so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let field = |name: &str| -> Option<SocketAddr> {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
    };
    ProxyProcess {
        admin: field("admin").unwrap_or_else(|| panic!("admin address in {line:?}")),
        inbound: field("inbound"),
        outbound: field("outbound"),
        child,
    }
}

/// `curl` GET of `url` with `Host: host` and the `headers` (`Name: value`); returns (HTTP
/// status, body).
pub async fn curl(url: &str, host: &str, headers: &[&str]) -> (u16, String) {
    let host = format!("Host: {host}");
    let mut args = vec![
        "-sS",
        "--max-time",
        "10",
        "-w",
        "\n%{http_code}",
        "-H",
        &host,
    ];
    for header in headers {
        args.extend(["-H", header]);
    }
    args.push(url);
    let (code, out, stderr) = run("curl", &args).await;
    assert_eq!(code, 0, "curl {url}: {stderr}");
    let (body, status) = out.rsplit_once('\n').unwrap_or(("", &out));
    (status.parse().unwrap_or(0), body.to_owned())
}

/// `openssl s_client` (TLS 1.3) to 127.0.0.1:`port` with `args`, sending `request` and reading
/// until the server closes; returns (stdout, stderr).
pub async fn s_client<A: AsRef<std::ffi::OsStr>>(
    port: u16,
    args: &[A],
    request: &str,
) -> (String, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("openssl")
        .arg("s_client")
        .args([
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-ign_eof",
            "-tls1_3",
        ])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl runs: install Debian's `openssl` package (.ci/run does)");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("openssl finishes in time")
        .expect("openssl output");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The inbound proxy of workload `web` in front of `app` (admitting `client`) and an outbound
/// proxy of `client` that knows service `web` at it, as processes; `[inbound.limits]` and
/// `[outbound.limits]` are both `limits`, and `service` is more TOML for the `web` service.
pub async fn spawn_pair(
    mesh: &Mesh,
    app: SocketAddr,
    limits: &str,
    service: &str,
) -> (ProxyProcess, ProxyProcess) {
    let sections = format!(
        "{}\n[inbound.limits]\n{limits}",
        Mesh::server_sections(app, &["client"])
    );
    let file = mesh.dir.join("web.toml");
    std::fs::write(&file, mesh.config_text("web", &sections)).expect("write");
    let server = spawn_proxy(&file).await;
    let sections = format!(
        "[outbound]\nlisten = \"127.0.0.1:0\"\n\n[outbound.limits]\n{limits}\n\
         [[service]]\nname = \"web\"\nauthorities = [\"web\"]\nidentity = {:?}\n\
         endpoints = [\"{}\"]\n{service}\n",
        id("web").as_str(),
        server.inbound.expect("inbound"),
    );
    let file = mesh.dir.join("client.toml");
    std::fs::write(&file, mesh.config_text("client", &sections)).expect("write");
    (server, spawn_proxy(&file).await)
}

/// The resident set of process `pid`, in bytes.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// `openssl s_client` arguments presenting workload `name`'s certificate and trusting its roots.
pub fn tls_client_args(mesh: &Mesh, name: &str) -> Vec<String> {
    let creds = mesh.dir.join(name);
    let path = |file: &str| creds.join(file).display().to_string();
    [
        "-cert",
        &path("cert.pem"),
        "-key",
        &path("key.pem"),
        "-CAfile",
        &path("roots.pem"),
    ]
    .map(String::from)
    .to_vec()
}
