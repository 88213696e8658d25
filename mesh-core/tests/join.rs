//! Layers joining one classification instead of making their own: what a listener that joins
//! further out is told, whatever happens between it and the classifier.

use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use mesh_core::classify::{
    AutoClassify, Class, ClassHandle, Classified, ClassifyLayer, FailureReason, JoinClassLayer,
    PublishClass,
};
use mesh_core::test_util::{TestBody, full, stalled_after};
use mesh_core::{ErrorKind, TimeoutLayer};
use tower::{Layer, ServiceBuilder, ServiceExt};

#[tokio::test(start_paused = true)]
async fn a_request_deadline_mid_body_reaches_joined_listeners_as_a_timeout() {
    // The classifier sits inside the deadline, the listener outside: the body stalls after its
    // first frame, and the deadline fails it.
    let svc = ServiceBuilder::new()
        .layer(JoinClassLayer::new(PublishClass))
        .layer(TimeoutLayer::new().request(Duration::from_millis(100)))
        .layer(ClassifyLayer::new(AutoClassify::new(), ()))
        .service_fn(|_req: Request<()>| async {
            let body = stalled_after(b"partial", Duration::from_secs(3600));
            Ok::<_, std::convert::Infallible>(http::Response::new(body))
        });
    let rsp = svc.oneshot(Request::new(())).await.expect("response");
    let handle = rsp
        .extensions()
        .get::<ClassHandle>()
        .cloned()
        .expect("published");
    let err = rsp
        .into_body()
        .collect()
        .await
        .expect_err("the deadline passes");
    assert_eq!(ErrorKind::of(&*err), ErrorKind::Timeout);
    assert_eq!(
        handle.get(),
        Some(Class::Failure(FailureReason::Error(ErrorKind::Timeout))),
        "told the deadline, not a caller gone"
    );
}

#[tokio::test]
async fn a_listener_joining_after_the_decision_still_hears_it() {
    let svc = ClassifyLayer::new(AutoClassify::new(), ()).layer(tower::service_fn(
        |_req: Request<()>| async {
            let rsp = http::Response::builder().status(503).body(full("down"))?;
            Ok::<_, http::Error>(rsp)
        },
    ));
    let rsp = svc.oneshot(Request::new(())).await.expect("response");
    let mut body = rsp.into_body();
    assert_eq!(
        body.head_class(),
        Some(Class::Failure(FailureReason::Status(
            http::StatusCode::SERVICE_UNAVAILABLE
        )))
    );
    while body.frame().await.is_some() {}
    let decided = body.class().expect("decided at the end");
    let late = ClassHandle::new();
    let _joined = body.join(late.clone());
    assert_eq!(late.get(), Some(decided));
}

#[tokio::test]
async fn every_joined_listener_hears_the_one_decision() {
    let svc = ClassifyLayer::new(AutoClassify::new(), PublishClass).layer(tower::service_fn(
        |_req: Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(full("fine")))
        },
    ));
    let rsp = svc.oneshot(Request::new(())).await.expect("response");
    let first = rsp
        .extensions()
        .get::<ClassHandle>()
        .cloned()
        .expect("published");
    let second = ClassHandle::new();
    let body: TestBody = rsp.into_body().join(second.clone()).boxed();
    assert_eq!((first.get(), second.get()), (None, None));
    body.collect().await.expect("body");
    assert_eq!(
        (first.get(), second.get()),
        (Some(Class::Success), Some(Class::Success))
    );
}
