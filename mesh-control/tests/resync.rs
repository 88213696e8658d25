//! mesh-control resyncs after its watches break: the API server is killed and restarted (etcd
//! keeps the data), and a change made afterwards still reaches a proxy's stream.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use mesh_api::destination::GetDestination;
use mesh_api::destination::destination_client::DestinationClient;
use mesh_control::test_util::{Control, KubeFixture, pod_ip, run};

fn json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("object")
}

fn slice(ns: &str, hosts: &[u8]) -> EndpointSlice {
    let endpoints: Vec<_> = hosts
        .iter()
        .map(|h| serde_json::json!({ "addresses": [pod_ip(*h).to_string()], "conditions": { "ready": true } }))
        .collect();
    json(serde_json::json!({
        "metadata": { "name": "web-abc", "namespace": ns, "labels": { "kubernetes.io/service-name": "web" } },
        "addressType": "IPv4",
        "ports": [{ "name": "http", "port": 8080 }],
        "endpoints": endpoints
    }))
}

#[test]
fn a_change_after_the_api_server_restarts_reaches_the_stream() {
    run(async {
        // A fixture of this test's own: restarting a shared one would break other tests.
        let fixture = KubeFixture::start().await.expect("fixture");
        let control = Control::start(&fixture, |_| {}).await;
        let ns = fixture.namespace("resync", &[]).await;
        let client = fixture.client().await.expect("client");
        let service: Service = json(serde_json::json!({
            "metadata": { "name": "web", "namespace": ns },
            "spec": { "ports": [{ "name": "http", "port": 80, "targetPort": 8080 }] }
        }));
        Api::<Service>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &service)
            .await
            .expect("service");
        Api::<EndpointSlice>::namespaced(client, &ns)
            .create(&PostParams::default(), &slice(&ns, &[2]))
            .await
            .expect("slice");

        let mut destination =
            DestinationClient::new(control.plane().channel(None).expect("channel"));
        let started = Instant::now();
        let mut stream = loop {
            // Until mesh-control's watch has seen the new Service, it answers NOT_FOUND: when
            // the stream is asked for, or as its first message.
            let asked = destination
                .get(GetDestination {
                    authority: format!("web.{ns}:80"),
                    ..Default::default()
                })
                .await;
            let first = match asked {
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    stream.message().await.map(|first| (first, stream))
                }
                Err(status) => Err(status),
            };
            match first {
                Ok((Some(first), stream)) if first.endpoints.len() == 1 => break stream,
                Ok(_) => {}
                Err(status) if status.code() == tonic::Code::NotFound => {}
                Err(status) => panic!("stream: {status}"),
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the first endpoint never showed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };

        // Every watch breaks; mesh-control keeps serving what it has meanwhile.
        fixture
            .restart_apiserver(Duration::from_secs(2))
            .await
            .expect("the API server restarts");

        let client = fixture.client().await.expect("client after the restart");
        let slices = Api::<EndpointSlice>::namespaced(client, &ns);
        let mut next = slice(&ns, &[2, 3]);
        next.metadata.resource_version = slices
            .get("web-abc")
            .await
            .expect("slice")
            .metadata
            .resource_version;
        let changed = Instant::now();
        slices
            .replace("web-abc", &PostParams::default(), &next)
            .await
            .expect("replace");
        let set = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let set = stream
                    .message()
                    .await
                    .expect("the stream outlived the restart")
                    .expect("set");
                if set.endpoints.len() == 2 {
                    return set;
                }
            }
        })
        .await
        .expect("the change after the restart arrived");
        assert!(
            set.endpoints
                .iter()
                .any(|e| e.address == format!("{}:8080", pod_ip(3)))
        );
        println!(
            "change after the restart arrived in {:?}",
            changed.elapsed()
        );
    })
}
