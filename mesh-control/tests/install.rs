//! `install` against a real kube-apiserver: the printed manifests apply cleanly (server-side
//! apply), mesh-control runs with exactly the RBAC they grant, `check` passes, and a broken
//! issuer Secret makes `check` say so.

use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::{Scope, pinned_kind};
use mesh_control::ControlConfig;
use mesh_control::check::{CheckConfig, run as check};
use mesh_control::install::{InstallConfig, manifests, to_yaml};
use mesh_control::test_util::{KubeFixture, run};

/// Server-side applies one manifest, as `kubectl apply --server-side` would.
async fn apply(client: &kube::Client, manifest: &serde_json::Value) {
    let object: DynamicObject = serde_json::from_value(manifest.clone()).expect("object");
    let types = object.types.clone().expect("apiVersion and kind");
    let gvk = GroupVersionKind::try_from(&types).expect("gvk");
    let (resource, caps) = pinned_kind(client, &gvk).await.expect("a served kind");
    let name = object.metadata.name.clone().expect("name");
    let api: Api<DynamicObject> = match (caps.scope, &object.metadata.namespace) {
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource),
        _ => Api::all_with(client.clone(), &resource),
    };
    api.patch(
        &name,
        &PatchParams::apply("mesh-install").force(),
        &Patch::Apply(&object),
    )
    .await
    .unwrap_or_else(|e| panic!("applying {} {name}: {e}", gvk.kind));
}

async fn failures(client: &kube::Client) -> Vec<String> {
    check(client, &CheckConfig::default())
        .await
        .into_iter()
        .filter(|f| !f.ok)
        .map(|f| f.to_string())
        .collect()
}

#[test]
fn install_applies_mesh_control_runs_with_its_rbac_and_check_finds_what_is_broken() {
    run(async {
        let fixture = KubeFixture::shared().await;
        let admin = fixture.client().await.expect("client");
        let docs = manifests(InstallConfig::default()).expect("manifests");
        // What `install` prints is a YAML stream of the same objects.
        let yaml = to_yaml(&docs).expect("yaml");
        assert_eq!(yaml.matches("\n---\n").count() + 1, docs.len());
        for doc in &docs {
            apply(&admin, doc).await;
        }
        // Applying again changes nothing and fails nothing.
        for doc in &docs {
            apply(&admin, doc).await;
        }

        // Installed, but nothing runs it (no kubelet here): check says exactly that.
        let failed = failures(&admin).await;
        assert_eq!(failed.len(), 1, "{failed:#?}");
        assert!(failed[0].contains("control plane running"), "{failed:#?}");

        // The RBAC grants what mesh-control does and nothing more (asked of the API server's
        // own authorizer).
        let account_user = "system:serviceaccount:mesh-system:mesh-control";
        for (verb, group, resource, namespace, name, allowed) in [
            ("watch", "", "services", "", "", true),
            ("list", "", "pods", "", "", true),
            ("watch", "discovery.k8s.io", "endpointslices", "", "", true),
            (
                "list",
                "policy.mesh.dev",
                "meshauthorizations",
                "",
                "",
                true,
            ),
            (
                "create",
                "authentication.k8s.io",
                "tokenreviews",
                "",
                "",
                true,
            ),
            ("get", "", "namespaces", "", "shop", true),
            ("watch", "", "secrets", "mesh-system", "mesh-issuer", true),
            (
                "patch",
                "coordination.k8s.io",
                "leases",
                "mesh-system",
                "mesh-control-heartbeat",
                true,
            ),
            ("list", "", "secrets", "mesh-system", "", false),
            ("get", "", "secrets", "default", "anything", false),
            ("update", "", "services", "", "", false),
            ("create", "", "pods", "default", "", false),
            (
                "patch",
                "coordination.k8s.io",
                "leases",
                "mesh-system",
                "someone-else",
                false,
            ),
        ] {
            let review: SubjectAccessReview = serde_json::from_value(serde_json::json!({
                "spec": {
                    "user": account_user,
                    "resourceAttributes": {
                        "verb": verb, "group": group, "resource": resource,
                        "namespace": namespace, "name": name
                    }
                }
            }))
            .expect("review");
            let answer = Api::<SubjectAccessReview>::all(admin.clone())
                .create(&PostParams::default(), &review)
                .await
                .expect("SubjectAccessReview");
            let got = answer.status.map(|s| s.allowed).unwrap_or(false);
            assert_eq!(got, allowed, "{verb} {group}/{resource} {namespace}/{name}");
        }

        // mesh-control as its own service account: everything it does, RBAC allows.
        let account = fixture
            .client_as("system:serviceaccount:mesh-system:mesh-control")
            .await
            .expect("impersonating client");
        let mut config = ControlConfig::new("mesh.local");
        config.listen = "127.0.0.1:0".parse().expect("addr");
        let running = mesh_control::start(account, config)
            .await
            .expect("mesh-control starts with its RBAC");
        tokio::time::timeout(Duration::from_secs(30), running.synced())
            .await
            .expect("its watchers list everything they need");
        let started = Instant::now();
        loop {
            let failed = failures(&admin).await;
            if failed.is_empty() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "check still fails: {failed:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // A broken issuer Secret: check names the Secret and the key.
        let secrets: Api<Secret> = Api::namespaced(admin.clone(), "mesh-system");
        let broken = serde_json::json!({ "stringData": { "tls.key": "not a key" } });
        secrets
            .patch(
                "mesh-issuer",
                &PatchParams::default(),
                &Patch::Merge(&broken),
            )
            .await
            .expect("break the issuer");
        let failed = failures(&admin).await;
        assert_eq!(failed.len(), 1, "{failed:#?}");
        assert!(
            failed[0].contains("issuer certificate") && failed[0].contains("tls.key"),
            "{failed:#?}"
        );
        running.stop().await;
    })
}
