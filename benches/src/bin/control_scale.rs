//! The destination service at scale, against a real kube-apiserver: `cargo run --release -p
//! benches --bin control-scale [-- SERVICES ENDPOINTS_PER_SERVICE SUBSCRIBERS_PER_SERVICE
//! CHANGES [pods]]` (default 500 20 2 100: 10,000 endpoints and 1,000 streams; with `pods`,
//! every endpoint is a meshed Pod too, so sets carry identities and owner labels).
//!
//! It starts etcd and kube-apiserver (the test fixture's), creates the services and
//! EndpointSlices, runs mesh-control in a child process (this binary with `--serve`, so its
//! RSS and CPU are its own), opens the subscriber streams over 10 TLS channels, then changes
//! one EndpointSlice at a time (an endpoint added or removed) and times, from just before the
//! API call, until every subscriber of that service has the new set. Prints p50/p99/max of
//! that, mesh-control's RSS after the sets are served and after the changes, and its CPU time
//! per change.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use mesh_api::destination::GetDestination;
use mesh_api::destination::destination_client::DestinationClient;
use mesh_control::identity::issuer_secret;
use mesh_control::test_util::KubeFixture;
use mesh_tls::DevCa;
use mesh_tls::control::ControlPlane;
use tokio::sync::mpsc;

const NAMESPACE: &str = "scale";

fn json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    match serde_json::from_value(value) {
        Ok(v) => v,
        Err(e) => panic!("object: {e}"),
    }
}

fn slice(service: usize, endpoints: usize) -> EndpointSlice {
    let list: Vec<_> = (0..endpoints)
        .map(|i| {
            serde_json::json!({
                "addresses": [format!("10.{}.{}.{}", 100 + service / 250, service % 250, i + 1)],
                "conditions": { "ready": true },
                // Harmless without pods: an endpoint whose pod is unknown has no identity.
                "targetRef": { "kind": "Pod", "name": format!("svc-{service}-5d8f7-{i}") }
            })
        })
        .collect();
    json(serde_json::json!({
        "metadata": { "name": format!("svc-{service}-a"),
                      "labels": { "kubernetes.io/service-name": format!("svc-{service}") } },
        "addressType": "IPv4",
        "ports": [{ "name": "http", "port": 8080 }],
        "endpoints": list
    }))
}

/// RSS in KiB and CPU time (user + system) of `pid`.
fn usage(pid: u32) -> (u64, Duration) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which is in parentheses and may hold spaces).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    // Linux reports in USER_HZ, 100 on every architecture we run on.
    (rss, Duration::from_millis(ticks * 10))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve") {
        return serve(&args[2..]);
    }
    let number =
        |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (services, per_service, subscribers, changes) =
        (number(1, 500), number(2, 20), number(3, 2), number(4, 100));
    let with_pods = args.get(5).map(String::as_str) == Some("pods");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => panic!("runtime: {e}"),
    };
    runtime.block_on(bench(
        services,
        per_service,
        subscribers,
        changes,
        with_pods,
    ));
}

/// The child: mesh-control, serving until killed.
fn serve(args: &[String]) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => panic!("runtime: {e}"),
    };
    runtime.block_on(async {
        let client = match kube::Client::try_default().await {
            Ok(client) => client,
            Err(e) => panic!("client: {e}"),
        };
        let mut config = mesh_control::ControlConfig::new("mesh.local");
        config.namespace = args.first().cloned().unwrap_or_else(|| NAMESPACE.into());
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.heartbeat = false;
        let running = match mesh_control::start(client, config).await {
            Ok(running) => running,
            Err(e) => panic!("mesh-control: {e}"),
        };
        running.synced().await;
        println!("{} {}", running.addr(), running.identity());
        std::future::pending::<()>().await;
    });
}

async fn bench(
    services: usize,
    per_service: usize,
    subscribers: usize,
    changes: usize,
    with_pods: bool,
) {
    let fixture = match KubeFixture::start().await {
        Ok(f) => f,
        Err(e) => panic!("fixture: {e}"),
    };
    let client = fixture
        .client()
        .await
        .unwrap_or_else(|e| panic!("client: {e}"));
    let ns = fixture.namespace(NAMESPACE, &["mesh-control"]).await;
    let ca = DevCa::new("mesh.local").unwrap_or_else(|e| panic!("ca: {e}"));
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &issuer_secret(&ca, &ns, "mesh-issuer"),
        )
        .await
        .unwrap_or_else(|e| panic!("secret: {e}"));

    let setup = Instant::now();
    let pod_api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns);
    let svc_api: Api<Service> = Api::namespaced(client.clone(), &ns);
    let slice_api: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
    let mut creating = tokio::task::JoinSet::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(16));
    for s in 0..services {
        let (svc_api, slice_api, pod_api, sem, ns) = (
            svc_api.clone(),
            slice_api.clone(),
            pod_api.clone(),
            Arc::clone(&sem),
            ns.clone(),
        );
        creating.spawn(async move {
            let _permit = sem.acquire().await;
            for i in 0..per_service {
                if !with_pods {
                    break;
                }
                let pod: k8s_openapi::api::core::v1::Pod = json(serde_json::json!({
                    "metadata": {
                        "name": format!("svc-{s}-5d8f7-{i}"), "namespace": ns,
                        "labels": { "app": format!("svc-{s}"), "mesh.dev/proxy": "enabled", "pod-template-hash": "5d8f7" },
                        "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("svc-{s}-5d8f7"),
                                              "uid": "00000000-0000-0000-0000-000000000001", "controller": true }]
                    },
                    "spec": { "containers": [{ "name": "app", "image": "app:1" }] }
                }));
                pod_api.create(&PostParams::default(), &pod).await.unwrap_or_else(|e| panic!("pod: {e}"));
            }
            let service: Service = json(serde_json::json!({
                "metadata": { "name": format!("svc-{s}"), "namespace": ns },
                "spec": { "clusterIP": "None", "ports": [{ "name": "http", "port": 80, "targetPort": 8080 }] }
            }));
            svc_api.create(&PostParams::default(), &service).await.unwrap_or_else(|e| panic!("service: {e}"));
            let mut slice = slice(s, per_service);
            slice.metadata.namespace = Some(ns);
            slice_api.create(&PostParams::default(), &slice).await.unwrap_or_else(|e| panic!("slice: {e}"));
        });
    }
    while creating.join_next().await.is_some() {}
    println!(
        "created {services} services with {} endpoints{} in {:.1}s",
        services * per_service,
        if with_pods {
            " (each a meshed Pod)"
        } else {
            ""
        },
        setup.elapsed().as_secs_f64()
    );

    // mesh-control in its own process.
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("exe: {e}"));
    let mut child = tokio::process::Command::new(exe)
        .arg("--serve")
        .arg(&ns)
        .env("KUBECONFIG", fixture.kubeconfig())
        .env("MESH_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("mesh-control: {e}"));
    let pid = child.id().unwrap_or(0);
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("stdout"));
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let line = lines
        .next_line()
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("mesh-control printed nothing"));
    let (addr, identity) = line.split_once(' ').unwrap_or_else(|| panic!("{line}"));
    let plane = ControlPlane::new(
        addr.parse().unwrap_or_else(|e| panic!("{e}")),
        mesh_core::Identity::parse(identity).unwrap_or_else(|e| panic!("{e}")),
        ca.root_pem().as_bytes(),
    )
    .unwrap_or_else(|e| panic!("plane: {e}"));
    let (rss_idle, _) = usage(pid);

    // The subscribers: each stream reports (service, endpoint count, when) for every set.
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, usize, Instant)>();
    let channels: Vec<_> = (0..10)
        .map(|_| plane.channel(None).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let opened = Instant::now();
    for s in 0..services {
        for k in 0..subscribers {
            let mut client =
                DestinationClient::new(channels[(s * subscribers + k) % channels.len()].clone());
            let (tx, authority) = (tx.clone(), format!("svc-{s}.{ns}.svc.cluster.local:80"));
            tokio::spawn(async move {
                let request = GetDestination {
                    authority,
                    ..Default::default()
                };
                let Ok(stream) = client.get(request).await else {
                    return;
                };
                let mut stream = stream.into_inner();
                while let Ok(Some(set)) = stream.message().await {
                    if with_pods && set.endpoints.first().is_some_and(|e| e.identity.is_empty()) {
                        panic!(
                            "a meshed pod's endpoint has no identity: {:?}",
                            set.endpoints.first()
                        );
                    }
                    let _ = tx.send((s, set.endpoints.len(), Instant::now()));
                }
            });
        }
    }
    let streams = services * subscribers;
    let mut first = 0;
    while first < streams {
        match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
            Ok(Some(_)) => first += 1,
            _ => panic!("only {first} of {streams} streams got their first set"),
        }
    }
    println!(
        "{streams} streams got their first set in {:.2}s",
        opened.elapsed().as_secs_f64()
    );
    let (rss_served, cpu_before) = usage(pid);

    // Changes: one slice at a time, alternately one endpoint fewer and back.
    let mut latencies = Vec::with_capacity(changes);
    for c in 0..changes {
        let s = (c * 7919) % services;
        let name = format!("svc-{s}-a");
        let current = slice_api.get(&name).await.unwrap_or_else(|e| panic!("{e}"));
        let now_count = current.endpoints.as_ref().map_or(0, Vec::len);
        // One endpoint fewer, or back to all of them.
        let count = if now_count == per_service {
            per_service - 1
        } else {
            per_service
        };
        let mut next = slice(s, count);
        next.metadata.namespace = Some(ns.clone());
        next.metadata.resource_version = current.metadata.resource_version;
        let started = Instant::now();
        slice_api
            .replace(&name, &PostParams::default(), &next)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut have = 0;
        let mut last = started;
        while have < subscribers {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some((service, len, at))) if service == s && len == count => {
                    have += 1;
                    last = at;
                }
                Ok(Some(_)) => {}
                _ => panic!("change {c}: only {have} of {subscribers} subscribers got it"),
            }
        }
        latencies.push(last.duration_since(started));
    }
    let (rss_after, cpu_after) = usage(pid);
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{services} services, {} endpoints, {streams} streams, {changes} changes: change -> every subscriber p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        services * per_service,
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(percentile(&latencies, 1.0)),
    );
    println!(
        "mesh-control RSS: {:.1} MB before streams, {:.1} MB serving them, {:.1} MB after the changes; CPU {:.2} ms per change",
        rss_idle as f64 / 1024.0,
        rss_served as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        ms(cpu_after.saturating_sub(cpu_before)) / changes.max(1) as f64,
    );
    let _ = child.kill().await;
}
