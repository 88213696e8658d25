//! The injector as a webhook the real API server calls: pods in annotated namespaces (or
//! annotated pods) are stored with the proxy as a native sidecar; others are untouched; with
//! the webhook down, `failurePolicy: Ignore` lets pods through uninjected.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use mesh_control::WebhookSettings;
use mesh_control::inject::PROXY_CONTAINER;
use mesh_control::install::webhook_configuration;
use mesh_control::test_util::{Control, KubeFixture, run};

fn pod(name: &str, annotations: BTreeMap<&str, &str>) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "annotations": annotations },
        "spec": { "containers": [{ "name": "app", "image": "app:1", "ports": [{ "containerPort": 8080 }] }] }
    }))
    .expect("pod")
}

async fn create(client: &kube::Client, ns: &str, pod: Pod) -> Pod {
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
        .expect("pod created")
}

fn sidecar(pod: &Pod) -> Option<serde_json::Value> {
    let spec = pod.spec.as_ref()?;
    let init = spec
        .init_containers
        .as_ref()?
        .iter()
        .find(|c| c.name == PROXY_CONTAINER)?;
    serde_json::to_value(init).ok()
}

#[test]
fn the_api_server_calls_the_injector_for_annotated_namespaces_and_pods_only() {
    run(async {
        let fixture = KubeFixture::shared().await;
        let client = fixture.client().await.expect("client");
        let control = Control::start(fixture, |config| {
            config.webhook = Some(WebhookSettings {
                listen: "127.0.0.1:0".parse().expect("addr"),
                names: vec!["localhost".into()],
                proxy_image: "proxy:test".into(),
                control_addr: "mesh-control.mesh-system.svc:8086".into(),
                native_sidecar: None,
            });
        })
        .await;
        let port = control.running.webhook_addr().expect("webhook").port();
        let webhook = webhook_configuration(
            &control.namespace,
            serde_json::json!({ "url": format!("https://localhost:{port}/inject") }),
            control.running.roots_pem(),
        );
        let webhook: MutatingWebhookConfiguration =
            serde_json::from_value(webhook).expect("webhook");
        Api::<MutatingWebhookConfiguration>::all(client.clone())
            .patch(
                "mesh-injector",
                &PatchParams::apply("test").force(),
                &Patch::Apply(&webhook),
            )
            .await
            .expect("register the webhook");

        let meshed = fixture.namespace("meshed", &[]).await;
        let label =
            serde_json::json!({ "metadata": { "labels": { "mesh.dev/inject": "enabled" } } });
        Api::<Namespace>::all(client.clone())
            .patch(&meshed, &PatchParams::default(), &Patch::Merge(&label))
            .await
            .expect("label the namespace");
        let plain = fixture.namespace("plain", &[]).await;

        // In the annotated namespace: stored with the proxy, a native sidecar (1.37 has them).
        let stored = create(&client, &meshed, pod("web", BTreeMap::new())).await;
        let proxy = sidecar(&stored).expect("the proxy was injected");
        assert_eq!(proxy["restartPolicy"], "Always");
        assert_eq!(proxy["image"], "proxy:test");
        let config = proxy["env"][0]["value"].as_str().expect("config");
        assert!(
            config.contains(&format!("spiffe://mesh.local/ns/{meshed}/sa/default")),
            "{config}"
        );
        assert!(config.contains("app = \"127.0.0.1:8080\""), "{config}");
        assert_eq!(
            stored
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("mesh.dev/proxy"))
                .map(String::as_str),
            Some("enabled")
        );
        let volumes = stored
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .expect("volumes");
        assert!(volumes.iter().any(|v| v.name == "mesh-token"));

        // Elsewhere: untouched, unless the pod itself asks.
        let untouched = create(&client, &plain, pod("web", BTreeMap::new())).await;
        assert!(sidecar(&untouched).is_none());
        assert!(
            untouched
                .spec
                .as_ref()
                .is_some_and(|s| s.containers.len() == 1)
        );
        let asked = create(
            &client,
            &plain,
            pod("asks", BTreeMap::from([("mesh.dev/inject", "enabled")])),
        )
        .await;
        assert!(sidecar(&asked).is_some());
        // And a pod may opt out of its namespace's injection.
        let declines = create(
            &client,
            &meshed,
            pod(
                "declines",
                BTreeMap::from([("mesh.dev/inject", "disabled")]),
            ),
        )
        .await;
        assert!(sidecar(&declines).is_none());

        // The injector down: the pod is created, uninjected (failurePolicy: Ignore).
        control.running.stop().await;
        let while_down = create(&client, &meshed, pod("while-down", BTreeMap::new())).await;
        assert!(sidecar(&while_down).is_none());
    })
}
