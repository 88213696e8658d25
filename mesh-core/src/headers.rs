//! The headers a proxy must not pass on (RFC 9110, section 7.6.1), and telling an HTTP/1
//! upgrade request apart.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Version};

/// Headers that describe one hop's connection, not the request (RFC 9110, section 7.6.1).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::TE,
    header::UPGRADE,
];

/// Whether `req` asks to switch protocols on its HTTP/1 connection (WebSocket, say).
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() <= Version::HTTP_11 && req.headers().contains_key(header::UPGRADE)
}

/// Removes hop-by-hop headers, and those the `Connection` header names. An upgrade keeps
/// `Connection: upgrade` and `Upgrade`, which the next hop needs to switch protocols too.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Most requests carry none of them: one pass over the few names present is cheaper than a
    // hashed lookup for each of the six (this runs at least once per request, per hop).
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        if upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !(upgrade && name == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        if upgrade && (name == header::UPGRADE || name == header::CONNECTION) {
            continue;
        }
        // `TE: trailers` is how gRPC says it understands trailers; it is allowed in HTTP/2.
        if name == header::TE && headers.get(&name).is_some_and(|v| v == "trailers") {
            continue;
        }
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_upgrades_keep_theirs() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-hop"),
        );
        headers.insert("x-hop", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert("x-app", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut headers, false);
        let mut names: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["te", "x-app"]);

        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut headers, true);
        assert_eq!(headers[header::UPGRADE], "websocket");
        assert_eq!(headers[header::CONNECTION], "upgrade");
    }

    #[test]
    fn headers_without_hop_by_hop_ones_are_left_as_they_are() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("web"));
        headers.append("x-app", HeaderValue::from_static("1"));
        headers.append("x-app", HeaderValue::from_static("2"));
        let before = headers.clone();
        strip_hop_by_hop(&mut headers, false);
        assert_eq!(headers, before);

        // A request already cleaned by an earlier hop, then seen again as an upgrade.
        strip_hop_by_hop(&mut headers, true);
        assert_eq!(headers[header::CONNECTION], "upgrade");
        assert_eq!(headers.len(), before.len() + 1);
    }
}
