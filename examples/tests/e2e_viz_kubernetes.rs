//! mesh-viz in Kubernetes mode against a real kube-apiserver: it finds the proxies as the
//! meshed pods (the injector's label) and their `mesh-admin` ports, scrapes them, and reports
//! a meshed pod that has no IP yet instead of leaving it out silently.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use mesh_control::test_util::{KubeFixture, run};
use mesh_core::test_util::{HttpVersion, TestClient};
use support::viz::Topology;
use support::{example_binary, get};

/// A meshed pod whose proxy's admin listener is on `port`.
fn pod(name: &str, port: u16) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "labels": { "app": name, "mesh.dev/proxy": "enabled" } },
        "spec": { "containers": [
            { "name": "app", "image": "app" },
            { "name": "mesh-proxy", "image": "mesh-proxy",
              "ports": [{ "name": "mesh-admin", "containerPort": port }] }
        ]}
    }))
    .expect("pod")
}

#[test]
fn proxies_are_found_as_meshed_pods() {
    run(async {
        let fixture = KubeFixture::shared().await;
        let client = fixture.client().await.expect("client");
        let ns = fixture.namespace("viz", &[]).await;
        let topology = Topology::start("viz-kube").await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let proxies = [
            ("web-0", &topology.web),
            ("api-0", &topology.api[0]),
            ("api-1", &topology.api[1]),
        ];
        for (name, proxy) in proxies {
            pods.create(&PostParams::default(), &pod(name, proxy.admin.port()))
                .await
                .expect("create pod");
            // No kubelet here: the pod's status (its IP) is what one would report. The
            // proxies listen on loopback, which is where this "pod" is.
            let status = serde_json::json!({
                "status": { "phase": "Running", "podIP": proxy.admin.ip().to_string(),
                            "podIPs": [{ "ip": proxy.admin.ip().to_string() }] }
            });
            pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .expect("pod status");
        }
        pods.create(&PostParams::default(), &pod("api-2", 4191))
            .await
            .expect("create the pending pod");

        let outbound = topology.web.outbound.expect("outbound");
        let mut conn = TestClient::connect(outbound, HttpVersion::Http1)
            .await
            .expect("connect");
        for _ in 0..25 {
            assert_eq!(get(&mut conn, "api", "/ok").await.0, 200);
        }

        let viz = example_binary("mesh-viz");
        let output = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::process::Command::new(&viz)
                .args([
                    "--kubernetes",
                    "--kube-namespace",
                    &ns,
                    "-o",
                    "json",
                    "edges",
                ])
                .env("KUBECONFIG", fixture.kubeconfig())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("in time")
        .expect("mesh-viz runs");
        let (out, err) = (
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        assert!(output.status.success(), "{out}{err}");
        let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        let scraped: Vec<&str> = json["proxies"]
            .as_array()
            .expect("proxies")
            .iter()
            .filter(|p| p["error"].is_null())
            .filter_map(|p| p["workload"]["pod"].as_str())
            .collect();
        assert_eq!(scraped, ["api-0", "api-1", "web-0"], "{out}");
        let edge = &json["edges"][0];
        assert_eq!(
            (edge["src"].as_str(), edge["dst"].as_str()),
            (Some("test/web"), Some("test/api")),
            "{out}"
        );
        assert_eq!(edge["requests"], 25);
        assert!(
            err.contains(&format!("pod {ns}/api-2 (Pending) has no IP yet"))
                || err.contains(&format!("pod {ns}/api-2 (Unknown) has no IP yet")),
            "{err}"
        );
    });
}
