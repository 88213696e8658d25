//! Transparent interception with real network namespaces: two "pods" (namespaces joined by veth
//! pairs to a bridge in a third, the network), each with an app and a proxy running as its own
//! UID, and the iptables rules `mesh-init` installs. The apps are unchanged: the client calls
//! the server pod's IP and port, and the mesh carries it over mTLS.
//!
//! Needs root, iproute2, iptables (both backends) and util-linux's `setpriv` (`.ci/run`
//! installs what is missing). Every namespace is removed when the test process exits.

mod support;

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use examples::grpc::stock_client::StockClient;
use examples::grpc::stock_server::{Stock, StockServer};
use examples::grpc::{CheckReply, CheckRequest};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use mesh_core::test_util::{TestBody, TestServer, full};
use support::{ProxyProcess, id, sample, spawn_proxy_command};

/// The UID the proxies run as (their traffic is never redirected).
const PROXY_UID: u32 = 2102;
const SERVER_IP: &str = "10.77.0.3";
const CLIENT_IP: &str = "10.77.0.2";
/// The network's own address: a host outside the mesh.
const OUTSIDE_IP: &str = "10.77.0.9";
/// The server pod's IPv6 address.
const SERVER_IP6: &str = "fd77::3";

/// Namespaces, removed (with their veths) when the test process exits, however it exits.
struct Namespaces {
    net: String,
    client: String,
    server: String,
    _reaper: (Child, ChildStdin),
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Namespaces {
    fn create(tag: &str) -> Self {
        let n = std::process::id() % 100_000;
        let [net, client, server] = ["net", "a", "b"].map(|role| format!("mt{tag}-{role}-{n}"));
        for ns in [&net, &client, &server] {
            ip(&["netns", "add", ns]);
        }
        let mut reaper = Command::new("bash")
            .arg("-c")
            .arg(r#"read -r _; for ns in "$@"; do ip netns del "$ns"; done"#)
            .arg("reaper")
            .args([&net, &client, &server])
            .stdin(Stdio::piped())
            .spawn()
            .expect("reaper");
        let stdin = reaper.stdin.take().expect("stdin");
        for ns in [&net, &client, &server] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&["-n", &net, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &net, "link", "set", "br0", "up"]);
        ip(&[
            "-n",
            &net,
            "addr",
            "add",
            &format!("{OUTSIDE_IP}/24"),
            "dev",
            "br0",
        ]);
        for (pod, addr, addr6, port) in [
            (&client, CLIENT_IP, "fd77::2", "pa"),
            (&server, SERVER_IP, SERVER_IP6, "pb"),
        ] {
            let port = format!("{port}{n}");
            ip(&[
                "-n", &net, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                pod,
            ]);
            ip(&["-n", &net, "link", "set", &port, "master", "br0", "up"]);
            ip(&[
                "-n",
                pod,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&[
                "-n",
                pod,
                "addr",
                "add",
                &format!("{addr6}/64"),
                "dev",
                "eth0",
                "nodad",
            ]);
            ip(&["-n", pod, "link", "set", "eth0", "up"]);
        }
        Self {
            net,
            client,
            server,
            _reaper: (reaper, stdin),
        }
    }
}

/// Runs `f` on a thread moved into `ns`: sockets it makes live there.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("the namespace");
        rustix::thread::move_into_link_name_space(
            file.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .expect("setns");
        f()
    })
    .join()
    .expect("the namespace thread")
}

fn listen_in(ns: &str, addr: &str) -> tokio::net::TcpListener {
    let addr: SocketAddr = addr.parse().expect("addr");
    let listener = in_ns(ns, move || std::net::TcpListener::bind(addr).expect("bind"));
    listener.set_nonblocking(true).expect("nonblocking");
    tokio::net::TcpListener::from_std(listener).expect("tokio listener")
}

fn connect_in(ns: &str, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let stream = in_ns(ns, move || std::net::TcpStream::connect(addr))?;
    stream.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(stream)
}

/// `ip netns exec <ns> <program> <args>`, bounded in time: (status, stdout, stderr).
async fn exec(ns: &str, program: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend(args);
    support::run("ip", &all).await
}

/// curl in `ns` (no proxy settings): (HTTP status, body); status 0 when the connection failed.
async fn curl_in(ns: &str, url: &str) -> (u16, String) {
    let (_, out, _) = exec(
        ns,
        "curl",
        &[
            "-sS",
            "--noproxy",
            "*",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
            url,
        ],
    )
    .await;
    let (body, status) = out.rsplit_once('\n').unwrap_or(("", &out));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

/// A scratch directory anyone may read (the proxies run as another UID).
fn scratch() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("mesh-transparent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// Credentials for `name`, owned by the proxies' UID.
fn creds(mesh: &support::Mesh, dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    mesh.ca
        .issue(&id(name), Duration::from_secs(3600))
        .expect("issue")
        .write(&out)
        .expect("write");
    for entry in std::fs::read_dir(&out).expect("creds").flatten() {
        std::os::unix::fs::chown(entry.path(), Some(PROXY_UID), Some(PROXY_UID)).expect("chown");
    }
    std::os::unix::fs::chown(&out, Some(PROXY_UID), Some(PROXY_UID)).expect("chown");
    out
}

/// The proxy binary, copied where the proxies' UID can run it.
fn proxy_copy(dir: &Path) -> PathBuf {
    let bin = dir.join("mesh-proxy");
    if !bin.exists() {
        std::fs::copy(support::proxy_binary(), &bin).expect("copy the proxy");
    }
    bin
}

/// `mesh-init` in `ns` with `args`.
async fn init(ns: &str, args: &[&str]) -> (i32, String, String) {
    let bin = support::example_binary("mesh-init");
    exec(ns, bin.to_str().expect("path"), args).await
}

/// The proxy for pod `name` in `ns`, as the proxies' UID, from `sections`.
async fn proxy(
    ns: &str,
    dir: &Path,
    mesh: &support::Mesh,
    name: &str,
    sections: &str,
) -> ProxyProcess {
    let text = format!(
        "[workload]\nnamespace = \"test\"\ndeployment = \"{name}\"\npod = \"{name}-0\"\n\n\
         [identity]\ndir = {creds:?}\n\n[admin]\nlisten = \"0.0.0.0:4191\"\n\n{sections}",
        creds = creds(mesh, dir, name),
    );
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, text).expect("config");
    let mut command = tokio::process::Command::new("ip");
    command
        .args(["netns", "exec", ns, "setpriv"])
        .arg(format!("--reuid={PROXY_UID}"))
        .arg(format!("--regid={PROXY_UID}"))
        .args(["--clear-groups", "--"])
        .arg(proxy_copy(dir))
        .arg("--config")
        .arg(&file);
    spawn_proxy_command(command).await
}

/// The admin page `path` of the proxy in pod `ns`, fetched from the network namespace.
async fn admin(nets: &Namespaces, pod_ip: &str, path: &str) -> (u16, String) {
    curl_in(&nets.net, &format!("http://{pod_ip}:4191{path}")).await
}

struct Letters;

#[tonic::async_trait]
impl Stock for Letters {
    async fn check(
        &self,
        req: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckReply>, tonic::Status> {
        let caller = req
            .metadata()
            .get("mesh-client-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let item = req.into_inner().item;
        Ok(tonic::Response::new(CheckReply {
            count: item.len() as u32,
            item,
            served_by: caller,
        }))
    }

    type WatchStream = std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<CheckReply, tonic::Status>> + Send>,
    >;

    async fn watch(
        &self,
        _req: tonic::Request<tonic::Streaming<CheckRequest>>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this test"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_is_idempotent_uninstall_removes_everything_and_both_backends_work() {
    let nets = Namespaces::create("i");
    let ns = &nets.client;
    for backend in ["nft", "legacy"] {
        let list = |ns: &str| {
            let ns = ns.to_owned();
            async move {
                let (code, out, err) =
                    exec(&ns, &format!("iptables-{backend}"), &["-t", "nat", "-S"]).await;
                assert_eq!(code, 0, "{err}");
                out
            }
        };
        let before = list(ns).await;
        let args = [
            "--proxy-uid",
            "2102",
            "--backend",
            backend,
            "--skip-outbound-ports",
            "53,8086",
            "--skip-outbound-cidrs",
            "10.96.0.0/12",
            "--skip-inbound-ports",
            "22",
        ];
        let (code, out, err) = init(ns, &args).await;
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("rules installed"), "{out}");
        let once = list(ns).await;
        for rule in [
            "-A PREROUTING -p tcp -j MESH_INBOUND",
            "-A OUTPUT -p tcp -j MESH_OUTPUT",
            "-A MESH_INBOUND -p tcp -m tcp --dport 4191 -j RETURN",
            "-A MESH_INBOUND -p tcp -m tcp --dport 22 -j RETURN",
            "-A MESH_INBOUND -p tcp -j REDIRECT --to-ports 4143",
            "-A MESH_OUTPUT -m owner --uid-owner 2102 -j RETURN",
            "-A MESH_OUTPUT -o lo -j RETURN",
            "-A MESH_OUTPUT -p tcp -m tcp --dport 53 -j RETURN",
            "-A MESH_OUTPUT -d 10.96.0.0/12 -j RETURN",
            "-A MESH_OUTPUT -p tcp -j REDIRECT --to-ports 4140",
        ] {
            assert!(once.contains(rule), "{backend}: no `{rule}` in\n{once}");
        }
        let (code, _, err) = init(ns, &args).await;
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            list(ns).await,
            once,
            "{backend}: a second run changed the rules"
        );
        let (code, out, err) = init(ns, &["--uninstall", "--backend", backend]).await;
        assert_eq!(code, 0, "{out}{err}");
        assert_eq!(
            list(ns).await,
            before,
            "{backend}: uninstall left rules behind"
        );
    }
    // Mistakes are refused before anything is touched.
    let (code, _, err) = init(ns, &["--backend", "nft"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--proxy-uid"), "{err}");
    let (code, _, err) = init(
        ns,
        &["--proxy-uid", "1", "--skip-outbound-cidrs", "ten.0.0.0/8"],
    )
    .await;
    assert_eq!(code, 2, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmodified_client_reaches_an_unmodified_server_over_mtls() {
    let nets = Namespaces::create("t");
    let mesh = support::Mesh::new("transparent");
    let dir = scratch();

    // The server pod: an HTTP app telling who called, and a gRPC app, on loopback only.
    let http_app = TestServer::start_on(
        listen_in(&nets.server, "127.0.0.1:8080"),
        |req: Request<Incoming>| async move {
            let caller = req
                .headers()
                .get("mesh-client-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned();
            Response::<TestBody>::new(full(caller))
        },
    )
    .expect("http app");
    let grpc_listener = listen_in(&nets.server, "127.0.0.1:9090");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(StockServer::new(Letters))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(
                grpc_listener,
            )),
    );
    // A host outside the mesh, on the network itself.
    let outside = TestServer::start_on(
        listen_in(&nets.net, &format!("{OUTSIDE_IP}:9000")),
        |_req: Request<Incoming>| async { Response::<TestBody>::new(full("outside")) },
    )
    .expect("outside");

    for ns in [&nets.client, &nets.server] {
        let (code, out, err) = init(ns, &["--proxy-uid", "2102", "--ipv6"]).await;
        assert_eq!(code, 0, "{out}{err}");
    }
    let client_id = id("client");
    let server = proxy(
        &nets.server,
        &dir,
        &mesh,
        "server",
        &format!(
            "[inbound]\nlisten = \"0.0.0.0:4143\"\nlisten_ipv6 = \"[::]:4143\"\napp = \"127.0.0.1:8080\"\ntransparent = true\n\
             authorize = [{:?}]\n",
            client_id.as_str()
        ),
    )
    .await;
    let client_sections = |egress: &str| {
        format!(
            "[outbound]\nlisten = \"127.0.0.1:4140\"\nlisten_ipv6 = \"[::1]:4140\"\ntransparent = true\negress = \"{egress}\"\n\n\
             [[service]]\nname = \"web\"\nidentity = {server:?}\n\
             endpoints = [\"{SERVER_IP}:8080\", \"[{SERVER_IP6}]:8080\"]\n\n\
             [[service]]\nname = \"stock\"\nidentity = {server:?}\nendpoints = [\"{SERVER_IP}:9090\"]\n",
            server = id("server").as_str(),
        )
    };
    let client = proxy(
        &nets.client,
        &dir,
        &mesh,
        "client",
        &client_sections("allow"),
    )
    .await;

    // curl in the client pod calls the server pod as it would without a mesh; the server app
    // sees the client's proven identity.
    let (status, body) = curl_in(&nets.client, &format!("http://{SERVER_IP}:8080/hello")).await;
    assert_eq!((status, body.as_str()), (200, client_id.as_str()));

    // Over IPv6 likewise (the rules from ip6tables, the original destination from
    // IP6T_SO_ORIGINAL_DST, the proxies' IPv6 listeners).
    let (status, body) = curl_in(&nets.client, &format!("http://[{SERVER_IP6}]:8080/six")).await;
    assert_eq!((status, body.as_str()), (200, client_id.as_str()));

    // A gRPC client likewise.
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{SERVER_IP}:9090"))
        .expect("endpoint");
    let client_ns = nets.client.clone();
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |uri: http::Uri| {
            let ns = client_ns.clone();
            async move {
                let host = uri.host().unwrap_or_default().to_owned();
                let addr: SocketAddr = format!("{host}:{}", uri.port_u16().unwrap_or(80))
                    .parse()
                    .map_err(std::io::Error::other)?;
                connect_in(&ns, addr).map(TokioIo::new)
            }
        }))
        .await
        .expect("gRPC channel");
    let reply = StockClient::new(channel)
        .check(CheckRequest {
            item: "widgets".into(),
        })
        .await
        .expect("gRPC through the mesh")
        .into_inner();
    assert_eq!(
        (reply.count, reply.served_by.as_str()),
        (7, client_id.as_str())
    );

    // Both proxies counted the requests; the server's side of the wire was mTLS.
    let (_, server_metrics) = admin(&nets, SERVER_IP, "/metrics").await;
    let (_, client_metrics) = admin(&nets, CLIENT_IP, "/metrics").await;
    assert!(
        sample(
            &server_metrics,
            "mesh_http_requests_total",
            &[("direction", "inbound"), ("peer_id", client_id.as_str())]
        ) >= 2,
        "{server_metrics}"
    );
    assert!(
        sample(
            &client_metrics,
            "mesh_http_requests_total",
            &[("direction", "outbound")]
        ) >= 2,
        "{client_metrics}"
    );
    assert!(
        sample(
            &server_metrics,
            "mesh_tcp_tls_handshakes_total",
            &[("direction", "inbound")]
        ) >= 1,
        "{server_metrics}"
    );

    // No loop: the outbound listener accepted the app's three connections (curl over IPv4 and
    // IPv6, the gRPC channel) and nothing else; the proxy's own connections to the server pod
    // were not redirected back into it.
    assert_eq!(
        sample(
            &client_metrics,
            "mesh_tcp_connections_opened_total",
            &[("direction", "outbound")]
        ),
        3,
        "{client_metrics}"
    );

    // The admin port is not redirected (the proxies' admin pages were just read over the
    // network); a loop would have hung the calls above: the proxies' own connections go out
    // as they are.
    assert_eq!(admin(&nets, SERVER_IP, "/ready").await.0, 200);

    // A destination outside the mesh: passed through as plain TCP, counted per destination.
    let (status, body) = curl_in(&nets.client, &format!("http://{OUTSIDE_IP}:9000/")).await;
    assert_eq!((status, body.as_str()), (200, "outside"));
    let (_, client_metrics) = admin(&nets, CLIENT_IP, "/metrics").await;
    let egress = format!("{OUTSIDE_IP}:9000");
    assert!(
        sample(
            &client_metrics,
            "mesh_tcp_connections_opened_total",
            &[("endpoint", egress.as_str())]
        ) >= 1,
        "{client_metrics}"
    );

    // A connection made to the outbound listener itself was not redirected: the app
    // addressed the proxy, which routes it by authority as without interception (no service
    // is named 127.0.0.1:4140: a typed 404, and no loop).
    let (status, _) = curl_in(&nets.client, "http://127.0.0.1:4140/").await;
    assert_eq!(status, 404);

    // Where the kernel cannot tell a connection's original destination (no connection
    // tracking in the network namespace, which has no rules), it is closed, never forwarded.
    let lost = proxy(
        &nets.net,
        &dir,
        &mesh,
        "lost",
        &format!("[outbound]\nlisten = \"{OUTSIDE_IP}:4140\"\ntransparent = true\n"),
    )
    .await;
    let (status, _) = curl_in(&nets.net, &format!("http://{OUTSIDE_IP}:4140/")).await;
    assert_eq!(
        status, 0,
        "a connection with no original destination must be closed"
    );
    drop(lost);

    // With `egress = "deny"`, the outside host is refused, and counted.
    drop(client);
    let client = proxy(
        &nets.client,
        &dir,
        &mesh,
        "client",
        &client_sections("deny"),
    )
    .await;
    let (status, _) = curl_in(&nets.client, &format!("http://{OUTSIDE_IP}:9000/")).await;
    assert_eq!(status, 0, "egress must be refused");
    let (_, client_metrics) = admin(&nets, CLIENT_IP, "/metrics").await;
    assert_eq!(
        sample(&client_metrics, "mesh_egress_refused_total", &[]),
        1,
        "{client_metrics}"
    );
    // The mesh still works.
    let (status, _) = curl_in(&nets.client, &format!("http://{SERVER_IP}:8080/")).await;
    assert_eq!(status, 200);
    drop((client, server, http_app, outside));
    let _ = std::fs::remove_dir_all(&dir);
}
