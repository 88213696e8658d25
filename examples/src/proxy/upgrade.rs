//! HTTP/1 upgrades (WebSocket and the like) passed through: once both sides have switched
//! protocols, the bytes are copied each way until either side closes.

use http::{Request, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// Takes the client's side of an upgrade from `req`, if it asks for one.
pub(crate) fn take_upgrade<B>(req: &mut Request<B>) -> Option<OnUpgrade> {
    mesh_core::headers::is_upgrade(req).then(|| hyper::upgrade::on(req))
}

/// When `rsp` accepts the upgrade (101), joins the client's side to the server's in a task.
pub(crate) fn splice<B>(client: Option<OnUpgrade>, rsp: &mut Response<B>) {
    let Some(client) = client else { return };
    if rsp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    let server = hyper::upgrade::on(rsp);
    tokio::spawn(async move {
        let (Ok(client), Ok(server)) = tokio::join!(client, server) else {
            return;
        };
        let mut client = TokioIo::new(client);
        let mut server = TokioIo::new(server);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
            tracing::debug!(error = %e, "upgraded connection ended with an error");
        }
    });
}
