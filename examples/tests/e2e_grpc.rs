//! A tonic gRPC client through the mesh (outbound proxy -> mTLS -> inbound proxy -> tonic
//! server): unary and streaming both ways, with statuses that travel in the trailers intact.

mod support;

use std::pin::Pin;
use std::time::Duration;

use examples::grpc::stock_client::StockClient;
use examples::grpc::stock_server::{Stock, StockServer};
use examples::grpc::{CheckReply, CheckRequest};
use futures_util::{Stream, StreamExt};
use support::Mesh;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};

/// Counts letters; "missing" is not found; a stream ends with an error after an item "boom".
struct Letters;

fn reply(item: &str) -> Result<CheckReply, Status> {
    match item {
        "missing" => Err(Status::not_found("no such item: missing")),
        _ => Ok(CheckReply {
            item: item.to_owned(),
            count: item.len() as u32,
            served_by: "letters".into(),
        }),
    }
}

#[tonic::async_trait]
impl Stock for Letters {
    async fn check(&self, req: Request<CheckRequest>) -> Result<Response<CheckReply>, Status> {
        let caller = req
            .metadata()
            .get("mesh-client-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let mut rsp = Response::new(reply(&req.into_inner().item)?);
        rsp.metadata_mut().insert(
            "caller",
            caller.parse().map_err(|_| Status::internal("caller"))?,
        );
        Ok(rsp)
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<CheckReply, Status>> + Send>>;

    async fn watch(
        &self,
        req: Request<Streaming<CheckRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let mut incoming = req.into_inner();
        let replies = async_stream(move |tx| async move {
            while let Some(next) = incoming.next().await {
                let item = match next {
                    Ok(req) => req.item,
                    Err(status) => return drop(tx.send(Err(status)).await),
                };
                let answer = if item == "boom" {
                    Err(Status::resource_exhausted("boom ends the stream"))
                } else {
                    reply(&item)
                };
                let end = answer.is_err();
                if tx.send(answer).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Response::new(replies))
    }
}

/// A stream fed by a task through a channel.
fn async_stream<F, Fut>(body: F) -> Pin<Box<dyn Stream<Item = Result<CheckReply, Status>> + Send>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<CheckReply, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(body(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_and_streaming_through_the_mesh_keep_their_trailers() {
    let mesh = Mesh::new("grpc");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let app = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(StockServer::new(Letters))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let server = mesh.server("stock", app, &["shop"]).await;
    let client = mesh.client_of("shop", "stock", &server, "").await;
    let channel = support::grpc_channel(client.outbound.expect("outbound"), "http://stock").await;
    let mut stock = StockClient::new(channel);

    // Unary, with the caller's identity passed to the app and a response header back.
    let rsp = stock
        .check(CheckRequest {
            item: "apples".into(),
        })
        .await
        .expect("unary call");
    assert_eq!(
        rsp.metadata().get("caller").expect("caller"),
        support::id("shop").as_str()
    );
    assert_eq!(rsp.into_inner().count, 6);

    // Unary failure: the status and message arrive as the app sent them.
    let status = stock
        .check(CheckRequest {
            item: "missing".into(),
        })
        .await
        .expect_err("not found");
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(status.message(), "no such item: missing");

    // Streaming both ways: each question answered as it is asked.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut replies = stock
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("stream opens")
        .into_inner();
    for item in ["a", "bb", "ccc"] {
        tx.send(CheckRequest { item: item.into() })
            .await
            .expect("send");
        let reply = tokio::time::timeout(Duration::from_secs(10), replies.message())
            .await
            .expect("reply in time")
            .expect("reply")
            .expect("not the end");
        assert_eq!(reply.count as usize, item.len(), "answer to {item}");
    }
    // The stream ends with an error status in the trailers, after data frames.
    tx.send(CheckRequest {
        item: "boom".into(),
    })
    .await
    .expect("send");
    let status = replies.message().await.expect_err("stream fails");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(status.message(), "boom ends the stream");

    // And a stream that ends well ends with OK.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut replies = stock
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("stream opens")
        .into_inner();
    tx.send(CheckRequest {
        item: "last".into(),
    })
    .await
    .expect("send");
    drop(tx);
    assert_eq!(
        replies.message().await.expect("reply").expect("one").count,
        4
    );
    assert!(replies.message().await.expect("clean end").is_none());
    drop(replies);

    // Both proxies count each call by its gRPC status (from the trailers), not just as a
    // failure: two OK, one NOT_FOUND, one RESOURCE_EXHAUSTED.
    for (proxy, direction) in [(&client, "outbound"), (&server, "inbound")] {
        let text = support::admin_get(proxy.admin, "/metrics").await;
        for (code, n) in [("OK", 2), ("NOT_FOUND", 1), ("RESOURCE_EXHAUSTED", 1)] {
            let labels = [("direction", direction), ("grpc_status", code)];
            let found = support::sample(&text, "mesh_http_grpc_responses_total", &labels);
            assert_eq!(found, n, "{direction} {code}: {text}");
        }
    }
}
