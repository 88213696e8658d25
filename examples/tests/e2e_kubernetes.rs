//! The reference proxy in Kubernetes mode against a real kube-apiserver and mesh-control:
//! every proxy gets its certificate from the identity API with a token from the TokenRequest
//! API, the outbound resolves `web.<ns>.svc.cluster.local` through the destination API (no
//! `[[service]]`), and the inbound's policy comes from MeshAuthorization objects.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use examples::proxy::{Config, Proxy, Running};
use http::Response;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use kube::core::DynamicObject;
use mesh_control::identity::DEFAULT_AUDIENCE;
use mesh_control::policy::crd::api_resource;
use mesh_control::test_util::{Control, KubeFixture, TRUST_DOMAIN, ensure_crd, pod_ip, run};
use mesh_core::test_util::{HttpVersion, TestClient, full, serve_connection};
use tokio::net::TcpListener;

const INBOUND_PORT: u16 = 4143;
const APP_PORT: u16 = 8080;

fn json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("object")
}

/// An app answering with its name, recording the caller identity header it was given.
async fn app(addr: SocketAddr, name: &'static str, callers: Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind(addr).await.expect("bind app");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let callers = Arc::clone(&callers);
            tokio::spawn(serve_connection(tcp, move |req| {
                let caller = req
                    .headers()
                    .get("mesh-client-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none")
                    .to_owned();
                callers.lock().expect("callers").push(caller);
                async move { Response::new(full(name)) }
            }));
        }
    });
}

/// The TOML of a proxy in Kubernetes mode.
fn config(
    control: &Control,
    dir: &Path,
    ns: &str,
    pod: &str,
    account: &str,
    sections: &str,
) -> Config {
    let roots = dir.join("roots.pem");
    std::fs::write(&roots, control.running.roots_pem()).expect("roots");
    let text = format!(
        "[workload]\nnamespace = {ns:?}\ndeployment = \"{account}\"\npod = {pod:?}\n\n\
         [identity]\nname = \"spiffe://{TRUST_DOMAIN}/ns/{ns}/sa/{account}\"\n\n\
         [control]\naddr = \"{addr}\"\nidentity = \"{identity}\"\nroots = {roots:?}\ntoken = {token:?}\ntimeout = \"5s\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n{sections}",
        addr = control.running.addr(),
        identity = control.running.identity(),
        token = dir.join(format!("{pod}.token")),
    );
    Config::parse(&text, Path::new("k8s.toml")).expect("config")
}

async fn get(outbound: SocketAddr, host: &str) -> (u16, String) {
    let mut client = TestClient::connect(outbound, HttpVersion::Http1)
        .await
        .expect("connect");
    support::get(&mut client, host, "/").await
}

#[test]
fn proxies_get_identity_endpoints_and_policy_from_the_control_plane() {
    run(async {
        let fixture = KubeFixture::shared().await;
        let client = fixture.client().await.expect("client");
        ensure_crd(&client).await;
        let control = Control::start(fixture, |_| {}).await;
        let ns = fixture
            .namespace("shop", &["web", "client", "intruder"])
            .await;
        let dir = fixture.scratch(&ns);

        // Three web pods, each an app behind an inbound proxy, on 10.244.0.21-23.
        let callers = Arc::new(Mutex::new(Vec::new()));
        let names = ["web-1", "web-2", "web-3"];
        let mut inbound: Vec<Running> = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let ip = pod_ip(21 + i as u8);
            app(SocketAddr::new(ip, APP_PORT), name, Arc::clone(&callers)).await;
            let token = fixture.token(&ns, "web", DEFAULT_AUDIENCE, 3600).await;
            std::fs::write(dir.join(format!("{name}.token")), token).expect("token");
            let pod: Pod = json(serde_json::json!({
                "metadata": { "name": name, "namespace": ns, "labels": { "app": "web", "mesh.dev/proxy": "enabled" } },
                "spec": { "serviceAccountName": "web", "containers": [{ "name": "app", "image": "app" }] }
            }));
            Api::<Pod>::namespaced(client.clone(), &ns)
                .create(&PostParams::default(), &pod)
                .await
                .expect("pod");
            let sections =
                format!("[inbound]\nlisten = \"{ip}:{INBOUND_PORT}\"\napp = \"{ip}:{APP_PORT}\"\n");
            let proxy = tokio::time::timeout(
                Duration::from_secs(30),
                Proxy::start(config(&control, &dir, &ns, name, "web", &sections)),
            )
            .await
            .expect("certified in time")
            .expect("inbound proxy starts");
            // Its certificate is the one the identity API signed for the token's account.
            assert_eq!(
                proxy.credentials().current().identity().as_str(),
                format!("spiffe://{TRUST_DOMAIN}/ns/{ns}/sa/web")
            );
            inbound.push(proxy);
        }
        let service: Service = json(serde_json::json!({
            "metadata": { "name": "web", "namespace": ns },
            "spec": { "ports": [{ "name": "http", "port": 80, "targetPort": INBOUND_PORT }] }
        }));
        Api::<Service>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &service)
            .await
            .expect("service");
        let endpoints: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                serde_json::json!({
                    "addresses": [pod_ip(21 + i as u8).to_string()],
                    "conditions": { "ready": true },
                    "targetRef": { "kind": "Pod", "name": name }
                })
            })
            .collect();
        let slice: EndpointSlice = json(serde_json::json!({
            "metadata": { "name": "web-1", "namespace": ns, "labels": { "kubernetes.io/service-name": "web" } },
            "addressType": "IPv4",
            "ports": [{ "name": "http", "port": INBOUND_PORT }],
            "endpoints": endpoints
        }));
        Api::<EndpointSlice>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &slice)
            .await
            .expect("slice");

        // The client's outbound proxy: no [[service]] at all.
        for (pod, account) in [("client-1", "client"), ("intruder-1", "intruder")] {
            let token = fixture.token(&ns, account, DEFAULT_AUDIENCE, 3600).await;
            std::fs::write(dir.join(format!("{pod}.token")), token).expect("token");
        }
        let outbound = Proxy::start(config(
            &control,
            &dir,
            &ns,
            "client-1",
            "client",
            "[outbound]\nlisten = \"127.0.0.1:0\"\n",
        ))
        .await
        .expect("outbound proxy starts");
        let out = outbound.outbound.expect("outbound address");
        let host = format!("web.{ns}.svc.cluster.local");

        // Every web pod gets traffic, over mTLS, and sees the client's proven identity.
        let mut served: HashMap<String, usize> = HashMap::new();
        for _ in 0..60 {
            let (status, body) = get(out, &host).await;
            assert_eq!(status, 200, "{body}");
            *served.entry(body).or_default() += 1;
        }
        assert_eq!(
            served.len(),
            3,
            "all three web pods got traffic: {served:?}"
        );
        let client_id = format!("spiffe://{TRUST_DOMAIN}/ns/{ns}/sa/client");
        assert!(
            callers
                .lock()
                .expect("callers")
                .iter()
                .all(|c| *c == client_id)
        );

        // An authority the control plane does not know: a clear 404 at once.
        let started = Instant::now();
        let (status, body) = get(out, &format!("nothing.{ns}.svc.cluster.local")).await;
        assert_eq!(status, 404, "{body}");
        assert!(body.contains("no such service"), "{body}");
        assert!(started.elapsed() < Duration::from_secs(5));

        // Policy: by default the namespace's own identities are admitted, the intruder too (same
        // namespace). A MeshAuthorization for the web pods' port admitting only the client
        // turns the intruder away with 403, within a second, with no restart.
        let intruder = Proxy::start(config(
            &control,
            &dir,
            &ns,
            "intruder-1",
            "intruder",
            "[outbound]\nlisten = \"127.0.0.1:0\"\n",
        ))
        .await
        .expect("intruder proxy starts");
        let intruder_out = intruder.outbound.expect("outbound");
        assert_eq!(get(intruder_out, &host).await.0, 200);
        let authz: DynamicObject = json(serde_json::json!({
            "apiVersion": "policy.mesh.dev/v1alpha1", "kind": "MeshAuthorization",
            "metadata": { "name": "web-from-client", "namespace": ns },
            "spec": {
                "podSelector": { "matchLabels": { "app": "web" } },
                "ports": [APP_PORT],
                "allow": { "identities": [client_id] }
            }
        }));
        // Measured from a settled control plane: the first watch of a CRD created moments
        // before (at the top of this test) can fail while the API server starts serving it,
        // and kube-runtime's watcher then retries after a backoff of about a second.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let since = Instant::now();
        Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &api_resource())
            .create(&PostParams::default(), &authz)
            .await
            .expect("MeshAuthorization");
        // Each web pod must have it: ask until six answers in a row are 403.
        let mut denied_in_a_row = 0;
        let mut first_denied = None;
        while denied_in_a_row < 6 {
            let (status, _) = get(intruder_out, &host).await;
            denied_in_a_row = if status == 403 {
                denied_in_a_row + 1
            } else {
                0
            };
            if status == 403 && first_denied.is_none() {
                first_denied = Some(since.elapsed());
            }
            assert!(
                since.elapsed() < Duration::from_secs(1),
                "the policy did not reach every pod within 1 s"
            );
        }
        println!(
            "policy: first 403 after {first_denied:?}, six in a row after {:?}",
            since.elapsed()
        );
        assert_eq!(get(out, &host).await.0, 200, "the client is still admitted");

        // mesh-control goes away: every proxy keeps its endpoints, policy and certificate.
        control.running.stop().await;
        for _ in 0..30 {
            let (status, body) = get(out, &host).await;
            assert_eq!(status, 200, "{body}");
        }
        let endpoints = support::admin_get(outbound.admin, "/endpoints").await;
        let endpoints: serde_json::Value = serde_json::from_str(&endpoints).expect("json");
        let web = endpoints["discovered"]
            .as_array()
            .and_then(|list| list.iter().find(|d| d["authority"] == format!("{host}:80")))
            .expect("the discovered service");
        assert_eq!(web["endpoints"], 3, "{endpoints}");
        assert_eq!(
            get(intruder_out, &host).await.0,
            403,
            "the policy stays in force"
        );

        for proxy in inbound.into_iter().chain([outbound, intruder]) {
            proxy.shutdown().await;
        }
    })
}
