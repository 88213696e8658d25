//! A fixed list of endpoints.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use mesh_core::Endpoint;
use tower::discover::Change;

/// Reports each endpoint once, then stays open without further changes (a stream that ended
/// would read as "discovery is gone").
#[derive(Debug)]
pub struct Fixed {
    endpoints: std::vec::IntoIter<Endpoint>,
}

/// A fixed set of endpoints.
pub fn fixed(endpoints: impl IntoIterator<Item = Endpoint>) -> Fixed {
    Fixed {
        endpoints: endpoints.into_iter().collect::<Vec<_>>().into_iter(),
    }
}

impl Stream for Fixed {
    type Item = Result<Change<SocketAddr, Endpoint>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.endpoints.next() {
            Some(e) => Poll::Ready(Some(Ok(Change::Insert(e.addr, e)))),
            None => Poll::Pending,
        }
    }
}
