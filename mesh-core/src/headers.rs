//! The headers a proxy must not pass on (RFC 9110, section 7.6.1), and telling an HTTP/1
//! upgrade request apart.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Version};

/// Headers that describe one hop's connection, not the request (RFC 9110, section 7.6.1).
/// In this order for [`hop_by_hop_index`].
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::TE,
    header::UPGRADE,
];

/// `Connection` options naming headers that [`strip_hop_by_hop`] removes whatever the options
/// say (`TE` and `Upgrade` are kept in some cases, so they are not here).
const ALWAYS_REMOVED: [&str; 4] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
];

/// Where `name` is in [`HOP_BY_HOP`], if it is: a match on the name's text, which mostly stops
/// at its length (comparing `HeaderName`s one by one cost several times more).
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    match name.as_str() {
        "connection" => Some(0),
        "keep-alive" => Some(1),
        "proxy-connection" => Some(2),
        "transfer-encoding" => Some(3),
        "te" => Some(4),
        "upgrade" => Some(5),
        _ => None,
    }
}

/// Whether `req` asks to switch protocols on its HTTP/1 connection (WebSocket, say).
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() <= Version::HTTP_11 && req.headers().contains_key(header::UPGRADE)
}

/// Removes hop-by-hop headers, and those the `Connection` header names. An upgrade keeps
/// `Connection: upgrade` and `Upgrade`, which the next hop needs to switch protocols too.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // One pass over the few names present says which of the six are there: most messages carry
    // none, or only `Connection: keep-alive`, and a hashed lookup for each absent one cost more
    // than the rest of this (it runs at least once per request and response, per hop).
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = hop_by_hop_index(name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        if upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        return;
    }
    // Bit 0 is `Connection`, which may name more.
    if present & 1 != 0 {
        // Only the options that are not removed below anyway are parsed as names (most often
        // there are none, and nothing is allocated).
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|option| {
                !ALWAYS_REMOVED
                    .iter()
                    .any(|r| option.eq_ignore_ascii_case(r))
            })
            .filter_map(|option| HeaderName::from_bytes(option.as_bytes()).ok())
            .filter(|name| !(upgrade && name == header::UPGRADE))
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) == 0
            || upgrade && (*name == header::UPGRADE || *name == header::CONNECTION)
        {
            continue;
        }
        // `TE: trailers` is how gRPC says it understands trailers; it is allowed in HTTP/2.
        if *name == header::TE && headers.get(name).is_some_and(|v| v == "trailers") {
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
    fn the_index_of_each_hop_by_hop_header_is_its_place() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(i), "{name}");
        }
        assert_eq!(hop_by_hop_index(&header::HOST), None);
        assert_eq!(
            hop_by_hop_index(&HeaderName::from_static("x-connection")),
            None
        );
    }

    #[test]
    fn connection_options_are_read_whatever_their_case_and_te_goes_when_named() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("Keep-Alive, TE"),
        );
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert("x-app", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut headers, false);
        let names: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-app"]);

        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("close, x-hop"));
        headers.insert("x-hop", HeaderValue::from_static("1"));
        headers.insert("close", HeaderValue::from_static("named too"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut headers, false);
        let names: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["content-type"]);
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
