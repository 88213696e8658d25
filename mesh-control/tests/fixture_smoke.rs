//! The fixture itself: a real API server answers, RBAC is on, TokenRequest works.
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use mesh_control::test_util::{KubeFixture, run};

#[test]
fn the_api_server_serves_namespaces() {
    run(async {
        let fixture = KubeFixture::shared().await;
        let client = fixture.client().await.expect("client");
        let ns = fixture.namespace("smoke", &["web"]).await;
        let namespaces: Api<Namespace> = Api::all(client);
        let got = namespaces.get(&ns).await.expect("namespace");
        assert_eq!(got.metadata.name.as_deref(), Some(ns.as_str()));
    })
}
