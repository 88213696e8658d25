//! A small HTTP/1.1 GET for admin ports and Prometheus' API: one connection per request, a
//! deadline on the whole exchange, and a bound on the body, so that a slow or huge answer costs
//! at most the deadline and the bound.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The address is not `host:port` or `http://host:port`.
    #[error("not an address: {0:?} (want host:port or http://host:port)")]
    Address(String),
    /// Nothing answered at the address.
    #[error("cannot connect: {0}")]
    Unreachable(std::io::Error),
    /// No whole answer within the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The exchange broke (not HTTP, or cut short).
    #[error("not an HTTP answer: {0}")]
    Http(String),
    /// An answer, but not a 200.
    #[error("answered {0}")]
    Status(StatusCode),
    /// The body is larger than the bound.
    #[error("the answer is over {0} bytes")]
    TooLarge(usize),
}

/// `host:port` of an address given as `host:port` or `http://host:port[/...]`.
pub(crate) fn authority_of(addr: &str) -> Result<String, FetchError> {
    let rest = addr.strip_prefix("http://").unwrap_or(addr);
    let authority = rest.split('/').next().unwrap_or_default();
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(authority.to_owned())
        }
        _ => Err(FetchError::Address(addr.chars().take(200).collect())),
    }
}

/// GETs `path_and_query` from `authority`, within `deadline`, reading at most `limit` bytes.
pub(crate) async fn get(
    authority: &str,
    path_and_query: &str,
    deadline: Duration,
    limit: usize,
) -> Result<Bytes, FetchError> {
    tokio::time::timeout(deadline, exchange(authority, path_and_query, limit))
        .await
        .map_err(|_| FetchError::Timeout(deadline))?
}

async fn exchange(authority: &str, path: &str, limit: usize) -> Result<Bytes, FetchError> {
    let rsp = open(authority, path).await?;
    if rsp.status() != StatusCode::OK {
        return Err(FetchError::Status(rsp.status()));
    }
    match Limited::new(rsp.into_body(), limit).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(FetchError::TooLarge(limit)),
        Err(e) => Err(FetchError::Http(e.to_string())),
    }
}

/// Sends the GET and returns the response head with its body still to read (for streams:
/// tap), on a connection driven in a task of its own that ends with the response.
pub(crate) async fn open(
    authority: &str,
    path: &str,
) -> Result<http::Response<hyper::body::Incoming>, FetchError> {
    let tcp = TcpStream::connect(authority)
        .await
        .map_err(FetchError::Unreachable)?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| FetchError::Http(e.to_string()))?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header(http::header::HOST, authority)
        .body(Empty::<Bytes>::new())
        .map_err(|e| FetchError::Http(e.to_string()))?;
    sender
        .send_request(req)
        .await
        .map_err(|e| FetchError::Http(e.to_string()))
}

/// Percent-encodes everything but RFC 3986's unreserved characters, for a query value.
pub(crate) fn percent_encode(s: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(percent_encode("up{a=\"b c\"}"), "up%7Ba%3D%22b%20c%22%7D");
    }

    #[test]
    fn addresses_are_host_and_port() {
        assert_eq!(
            authority_of("127.0.0.1:9990").expect("ok"),
            "127.0.0.1:9990"
        );
        assert_eq!(authority_of("http://[::1]:80/x").expect("ok"), "[::1]:80");
        for bad in ["", "host", "http://host:", ":80", "host:99999"] {
            assert!(authority_of(bad).is_err(), "{bad:?}");
        }
    }
}
