//! Destination against a real kube-apiserver: EndpointSlice changes reach a real balancer
//! sending real HTTP requests, with nothing failed, and the last set survives mesh-control.

mod support;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};
use mesh_api::destination::GetDestination;
use mesh_api::destination::destination_client::DestinationClient;
use mesh_balance::discover::destination::{DestinationConfig, watch};
use mesh_balance::{Balance, BalanceConfig};
use mesh_control::test_util::{KubeFixture, pod_ip, run};
use mesh_core::Endpoint;
use mesh_core::test_util::{ConnectService, HttpVersion, full, serve_connection};
use support::{Control, LIMIT};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// An app on `ip:port` counting requests; `/slow` takes 1.5 s.
async fn app(ip: IpAddr, port: u16, served: Arc<AtomicU64>) -> std::io::Result<()> {
    let listener = TcpListener::bind(SocketAddr::new(ip, port)).await?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let served = Arc::clone(&served);
            tokio::spawn(serve_connection(tcp, move |req| {
                served.fetch_add(1, Ordering::Relaxed);
                async move {
                    if req.uri().path() == "/slow" {
                        tokio::time::sleep(Duration::from_millis(1500)).await;
                    }
                    Response::new(full("ok"))
                }
            }));
        }
    });
    Ok(())
}

/// Four apps on 10.244.0.2-5, one port for all (an EndpointSlice port is per slice).
async fn apps() -> (u16, Vec<(IpAddr, Arc<AtomicU64>)>) {
    'port: for _ in 0..20 {
        let port = TcpListener::bind((pod_ip(2), 0))
            .await
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let mut apps = Vec::new();
        for last in 2..=5u8 {
            let ip = pod_ip(last);
            let served = Arc::new(AtomicU64::new(0));
            if app(ip, port, Arc::clone(&served)).await.is_err() {
                continue 'port;
            }
            apps.push((ip, served));
        }
        return (port, apps);
    }
    panic!("no port free on 10.244.0.2-5");
}

fn json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("object")
}

fn service(ns: &str, port: u16) -> Service {
    json(serde_json::json!({
        "metadata": { "name": "web", "namespace": ns },
        "spec": { "ports": [{ "name": "http", "port": 80, "targetPort": port }] }
    }))
}

fn pod(ns: &str, name: &str) -> Pod {
    json(serde_json::json!({
        "metadata": {
            "name": name, "namespace": ns,
            "labels": { "app": "web", "mesh.dev/proxy": "enabled", "pod-template-hash": "5d8f7" },
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d8f7",
                "uid": "00000000-0000-0000-0000-000000000001", "controller": true
            }]
        },
        "spec": { "serviceAccountName": "web", "containers": [{ "name": "app", "image": "app" }] }
    }))
}

/// An endpoint: ready, or terminating (still serving).
fn endpoint(ip: IpAddr, pod: &str, terminating: bool) -> serde_json::Value {
    serde_json::json!({
        "addresses": [ip.to_string()],
        "conditions": { "ready": !terminating, "serving": true, "terminating": terminating },
        "targetRef": { "kind": "Pod", "name": pod }
    })
}

fn slice(ns: &str, port: u16, endpoints: Vec<serde_json::Value>) -> EndpointSlice {
    json(serde_json::json!({
        "metadata": { "name": "web-abc", "namespace": ns, "labels": { "kubernetes.io/service-name": "web" } },
        "addressType": "IPv4",
        "ports": [{ "name": "http", "port": port, "protocol": "TCP" }],
        "endpoints": endpoints
    }))
}

async fn replace(api: &Api<EndpointSlice>, new: EndpointSlice) {
    let mut new = new;
    let current = api.get("web-abc").await.expect("slice");
    new.metadata.resource_version = current.metadata.resource_version;
    api.replace("web-abc", &PostParams::default(), &new)
        .await
        .expect("replace slice");
}

fn counts(apps: &[(IpAddr, Arc<AtomicU64>)]) -> Vec<u64> {
    apps.iter()
        .map(|(_, c)| c.load(Ordering::Relaxed))
        .collect()
}

/// Waits until `check` holds, at most `limit`.
async fn until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn the_first_set_carries_identities_labels_and_unknown_services_are_not_found() {
    run(async {
        let fixture = KubeFixture::shared().await;
        let control = Control::start(fixture, |_| {}).await;
        let ns = fixture.namespace("dest", &["web"]).await;
        let client = fixture.client().await.expect("client");
        Api::<Service>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &service(&ns, 8080))
            .await
            .expect("service");
        Api::<Pod>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &pod(&ns, "web-5d8f7-aaaaa"))
            .await
            .expect("pod");
        let ip = pod_ip(2);
        Api::<EndpointSlice>::namespaced(client.clone(), &ns)
            .create(
                &PostParams::default(),
                &slice(
                    &ns,
                    8080,
                    vec![
                        endpoint(ip, "web-5d8f7-aaaaa", false),
                        // Not ready and not serving: never in a set.
                        serde_json::json!({
                            "addresses": [pod_ip(3).to_string()],
                            "conditions": { "ready": false, "serving": false, "terminating": false }
                        }),
                    ],
                ),
            )
            .await
            .expect("slice");

        let mut destination =
            DestinationClient::new(control.plane().channel(None).expect("channel"));
        let deadline = Instant::now() + LIMIT;
        let set = loop {
            // Until mesh-control's watch has seen the new Service, it answers NOT_FOUND: when
            // the stream is asked for, or as its first message.
            let asked = destination
                .get(GetDestination {
                    authority: format!("web.{ns}.svc.cluster.local:80"),
                    ..Default::default()
                })
                .await;
            let first = match asked {
                Ok(stream) => stream.into_inner().message().await,
                Err(status) => Err(status),
            };
            match first {
                Ok(Some(set)) if !set.endpoints.is_empty() || Instant::now() > deadline => {
                    break set;
                }
                Ok(_) => {}
                Err(status) if status.code() == tonic::Code::NotFound => {
                    assert!(Instant::now() < deadline, "still {status}");
                }
                Err(status) => panic!("stream: {status}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(set.endpoints.len(), 1);
        let got = &set.endpoints[0];
        assert_eq!(got.address, "10.244.0.2:8080");
        assert_eq!(got.identity, format!("spiffe://mesh.local/ns/{ns}/sa/web"));
        let labels: HashMap<_, _> = got
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(labels.get("deployment"), Some(&"web"));
        assert_eq!(labels.get("pod"), Some(&"web-5d8f7-aaaaa"));
        assert_eq!(labels.get("namespace"), Some(&ns.as_str()));

        // One proxy follows many authorities over one connection: more streams than hyper's
        // default limit of 200 per connection are all served.
        let mut streams = Vec::new();
        for _ in 0..250 {
            let mut stream = destination
                .get(GetDestination {
                    authority: format!("web.{ns}:80"),
                    ..Default::default()
                })
                .await
                .expect("stream")
                .into_inner();
            let set = tokio::time::timeout(LIMIT, stream.message())
                .await
                .expect("the set in time")
                .expect("stream")
                .expect("a set");
            assert_eq!(set.endpoints.len(), 1);
            streams.push(stream);
        }

        // The ClusterIP the API server allocated names the same service.
        let cluster_ip = Api::<Service>::namespaced(client, &ns)
            .get("web")
            .await
            .expect("service")
            .spec
            .and_then(|s| s.cluster_ip)
            .expect("cluster ip");
        let mut by_ip = destination
            .get(GetDestination {
                authority: format!("{cluster_ip}:80"),
                ..Default::default()
            })
            .await
            .expect("cluster ip known")
            .into_inner();
        assert_eq!(
            by_ip
                .message()
                .await
                .expect("stream")
                .expect("set")
                .endpoints
                .len(),
            1
        );

        // Unknown names and ports answer at once, and say so.
        for unknown in [
            format!("nope.{ns}.svc.cluster.local:80"),
            format!("web.{ns}:81"),
        ] {
            let status = tokio::time::timeout(
                LIMIT,
                destination.get(GetDestination {
                    authority: unknown.clone(),
                    ..Default::default()
                }),
            )
            .await
            .expect("an answer, not a hang")
            .expect_err("not found");
            assert_eq!(status.code(), tonic::Code::NotFound, "{unknown}");
            assert!(
                status.message().contains("no such service"),
                "{}",
                status.message()
            );
        }
    })
}

#[test]
fn slice_changes_steer_live_traffic_with_no_failed_request_and_survive_mesh_control() {
    run(async {
        let fixture = KubeFixture::shared().await;
        let mut control = Control::start(fixture, |_| {}).await;
        let ns = fixture.namespace("steer", &["web"]).await;
        let client = fixture.client().await.expect("client");
        let (port, apps) = apps().await;
        let ips: Vec<IpAddr> = apps.iter().map(|(ip, _)| *ip).collect();
        let pods = ["web-5d8f7-a", "web-5d8f7-b", "web-5d8f7-c", "web-5d8f7-d"];
        Api::<Service>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &service(&ns, port))
            .await
            .expect("service");
        for name in pods {
            Api::<Pod>::namespaced(client.clone(), &ns)
                .create(&PostParams::default(), &pod(&ns, name))
                .await
                .expect("pod");
        }
        let slices = Api::<EndpointSlice>::namespaced(client.clone(), &ns);
        let three: Vec<_> = (0..3).map(|i| endpoint(ips[i], pods[i], false)).collect();
        slices
            .create(&PostParams::default(), &slice(&ns, port, three))
            .await
            .expect("slice");

        let channel = control.plane().channel(None).expect("channel");
        let (updates, report) = watch(
            DestinationClient::new(channel),
            format!("web.{ns}.svc.cluster.local:80"),
            DestinationConfig {
                max_backoff: Duration::from_millis(500),
                ..Default::default()
            },
        );
        let balance = Balance::new(
            updates,
            |e: &Endpoint| ConnectService::new(e.addr, HttpVersion::Http1),
            BalanceConfig::default(),
        );

        // Load: six workers sending GET / through the balancer, counting failures.
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicU64::new(0));
        let sent = Arc::new(AtomicU64::new(0));
        let mut workers = Vec::new();
        for _ in 0..6 {
            let (balance, stop, failed, sent) = (
                balance.clone(),
                Arc::clone(&stop),
                Arc::clone(&failed),
                Arc::clone(&sent),
            );
            workers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let req = Request::get("http://web/")
                        .body(Empty::<bytes::Bytes>::new())
                        .expect("request");
                    let ok = match balance.clone().oneshot(req).await {
                        Ok(rsp) => {
                            rsp.status().is_success() && rsp.into_body().collect().await.is_ok()
                        }
                        Err(_) => false,
                    };
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }));
        }
        until(LIMIT, "the first set", || report.has_received()).await;
        // Requests before the first set have no endpoint; count failures from here.
        until(LIMIT, "all three to get traffic", || {
            counts(&apps)[..3].iter().all(|c| *c > 20)
        })
        .await;
        failed.store(0, Ordering::Relaxed);

        // Removing one from the slice stops its traffic within 1 s.
        let two: Vec<_> = (0..2).map(|i| endpoint(ips[i], pods[i], false)).collect();
        replace(&slices, slice(&ns, port, two.clone())).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after_removal = counts(&apps)[2];
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            counts(&apps)[2],
            after_removal,
            "the removed endpoint still got traffic 1 s after the change"
        );
        assert!(counts(&apps)[..2].iter().all(|c| *c > after_removal / 2));

        // A terminating endpoint drains: slow requests already in flight on it finish; no new
        // requests reach it.
        let slow: Vec<_> = (0..8)
            .map(|_| {
                let balance = balance.clone();
                tokio::spawn(async move {
                    let req = Request::get("http://web/slow")
                        .body(Empty::<bytes::Bytes>::new())
                        .expect("request");
                    let rsp = balance.oneshot(req).await.map_err(|e| e.to_string())?;
                    rsp.into_body().collect().await.map_err(|e| e.to_string())?;
                    Ok::<_, String>(())
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let draining = vec![
            endpoint(ips[0], pods[0], false),
            endpoint(ips[1], pods[1], true),
        ];
        replace(&slices, slice(&ns, port, draining)).await;
        for request in slow {
            request
                .await
                .expect("task")
                .expect("an in-flight request on a draining endpoint finishes");
        }
        let drained = counts(&apps)[1];
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(
            counts(&apps)[1],
            drained,
            "a terminating endpoint got new requests while another was ready"
        );

        // Adding one brings it traffic.
        let with_new = vec![
            endpoint(ips[0], pods[0], false),
            endpoint(ips[3], pods[3], false),
        ];
        replace(&slices, slice(&ns, port, with_new.clone())).await;
        until(
            Duration::from_secs(5),
            "the new endpoint to get traffic",
            || counts(&apps)[3] > 20,
        )
        .await;

        // mesh-control goes away: traffic goes on over the last set; a change made meanwhile is
        // not seen.
        let listen = control.running.addr();
        let config = control.config.clone();
        control.running.stop().await;
        let during = sent.load(Ordering::Relaxed);
        let back = vec![
            endpoint(ips[0], pods[0], false),
            endpoint(ips[2], pods[2], false),
        ];
        replace(&slices, slice(&ns, port, back)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            sent.load(Ordering::Relaxed) > during + 100,
            "traffic went on without mesh-control"
        );
        assert_eq!(
            counts(&apps)[2],
            after_removal,
            "nothing could have told the balancer"
        );

        // Restarted on the same address: the change flows.
        let mut config = config;
        config.listen = listen;
        control.running = mesh_control::start(client.clone(), config)
            .await
            .expect("restart");
        until(
            Duration::from_secs(15),
            "the change made while it was away",
            || counts(&apps)[2] > after_removal + 20,
        )
        .await;

        stop.store(true, Ordering::Relaxed);
        for worker in workers {
            worker.await.expect("worker");
        }
        assert_eq!(failed.load(Ordering::Relaxed), 0, "failed requests");
        assert!(report.reconnects() >= 1);
        slices
            .delete("web-abc", &DeleteParams::default())
            .await
            .expect("delete");
    })
}
