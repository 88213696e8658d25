//! `DualClient` over HTTP/2 against a server that turns requests away unprocessed: a stream
//! reset with `REFUSED_STREAM`, or a `GOAWAY` whose last stream is below the request's.

use std::time::Duration;

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Version};
use mesh_core::ErrorKind;
use mesh_core::client::{DualClient, FixedConnector, UriAuthority};
use mesh_core::test_util::{
    H2Act, INTERNAL_ERROR, REFUSED_STREAM, RefusingH2Server, TestBody, empty, full,
};
use tower::ServiceExt;

/// Sends an HTTP/2 request with `body` through a new client; the response's status, or the
/// error's kind.
async fn send(server: &RefusingH2Server, body: TestBody) -> Result<u16, ErrorKind> {
    let to = FixedConnector(server.addr());
    let client = DualClient::new(to, to, UriAuthority::Fixed(Authority::from_static("app")));
    let req = Request::post("/")
        .version(Version::HTTP_2)
        .body(body)
        .expect("request");
    let sent = tokio::time::timeout(Duration::from_secs(10), client.oneshot(req))
        .await
        .expect("an answer within 10 s");
    sent.map(|rsp| rsp.status().as_u16())
        .map_err(|e| ErrorKind::of(&*e))
}

async fn server(plan: Vec<H2Act>) -> RefusingH2Server {
    RefusingH2Server::start(plan).await.expect("server")
}

#[tokio::test]
async fn a_refused_stream_is_sent_again() {
    let server = server(vec![H2Act::Reset(REFUSED_STREAM), H2Act::Answer]).await;
    assert_eq!(send(&server, empty()).await, Ok(200));
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    // The connection is still good: the next stream on it.
    assert_eq!(seen[0].conn, seen[1].conn);
    assert!(seen[1].stream > seen[0].stream);
}

#[tokio::test]
async fn a_request_above_a_goaway_is_sent_again_on_a_new_connection() {
    // A GOAWAY that closes the connection, and one that keeps it for older streams.
    for goaway in [H2Act::GoAway, H2Act::GoAwayOpen] {
        let server = server(vec![goaway, H2Act::Answer]).await;
        assert_eq!(send(&server, empty()).await, Ok(200), "{goaway:?}");
        let seen = server.seen();
        assert_eq!(seen.len(), 2, "{goaway:?}: {seen:?}");
        assert_ne!(seen[0].conn, seen[1].conn, "{goaway:?}");
    }
}

#[tokio::test]
async fn a_request_is_sent_again_only_once() {
    let server = server(vec![H2Act::Reset(REFUSED_STREAM)]).await;
    assert_eq!(send(&server, empty()).await, Err(ErrorKind::Refused));
    assert_eq!(server.seen().len(), 2);
}

#[tokio::test]
async fn a_refused_request_with_a_body_fails_as_refused_for_a_retry_layer() {
    let server = server(vec![H2Act::Reset(REFUSED_STREAM), H2Act::Answer]).await;
    let body = full(Bytes::from_static(b"a body hyper has taken"));
    assert_eq!(send(&server, body).await, Err(ErrorKind::Refused));
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn other_resets_are_not_sent_again() {
    let server = server(vec![H2Act::Reset(INTERNAL_ERROR), H2Act::Answer]).await;
    assert_eq!(send(&server, empty()).await, Err(ErrorKind::Other));
    assert_eq!(server.seen().len(), 1);
}
