//! One tapped request and its response, and its JSON form.

use std::fmt::Write;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use mesh_core::grpc::GrpcCode;
use mesh_core::{Class, Identity};

use crate::Direction;

/// The metadata of one request and its response, published when the request ends.
#[derive(Clone, Debug)]
pub struct TapEvent {
    /// A number unique within this tap, in order of arrival.
    pub id: u64,
    /// Inbound or outbound.
    pub direction: Direction,
    /// The request method.
    pub method: Method,
    /// The request authority, if any.
    pub authority: Option<String>,
    /// The request path (without the query, which may carry secrets).
    pub path: String,
    /// The authenticated peer, if any.
    pub peer: Option<Identity>,
    /// Selected request headers, sensitive ones removed.
    pub request_headers: Vec<(HeaderName, HeaderValue)>,
    /// The response status, or `None` if no response came.
    pub status: Option<StatusCode>,
    /// Selected response headers, sensitive ones removed.
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    /// The gRPC status, from the response headers (trailers-only) or the trailers.
    pub grpc_status: Option<GrpcCode>,
    /// The outcome, as the mesh classified it.
    pub outcome: Class,
    /// Time to the response headers, if a response came.
    pub headers_latency: Option<Duration>,
    /// Time to the end of the response.
    pub total_latency: Duration,
}

impl TapEvent {
    /// One line of JSON (no trailing newline). Header values that are not UTF-8 are written
    /// lossily.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(256);
        let _ = write!(
            out,
            "{{\"id\":{},\"direction\":\"{}\",\"method\":",
            self.id, self.direction
        );
        json_str(&mut out, self.method.as_str());
        out.push_str(",\"authority\":");
        match &self.authority {
            Some(a) => json_str(&mut out, a),
            None => out.push_str("null"),
        }
        out.push_str(",\"path\":");
        json_str(&mut out, &self.path);
        out.push_str(",\"peer\":");
        match &self.peer {
            Some(p) => json_str(&mut out, p.as_str()),
            None => out.push_str("null"),
        }
        out.push_str(",\"status\":");
        match self.status {
            Some(s) => {
                let _ = write!(out, "{}", s.as_u16());
            }
            None => out.push_str("null"),
        }
        out.push_str(",\"grpc_status\":");
        match self.grpc_status {
            Some(c) => {
                let _ = write!(out, "{}", c.as_u16());
            }
            None => out.push_str("null"),
        }
        out.push_str(",\"outcome\":");
        json_str(&mut out, &self.outcome.to_string());
        out.push_str(",\"headers_latency_us\":");
        match self.headers_latency {
            Some(d) => {
                let _ = write!(out, "{}", d.as_micros());
            }
            None => out.push_str("null"),
        }
        let _ = write!(
            out,
            ",\"total_latency_us\":{}",
            self.total_latency.as_micros()
        );
        for (key, headers) in [
            ("request_headers", &self.request_headers),
            ("response_headers", &self.response_headers),
        ] {
            let _ = write!(out, ",\"{key}\":{{");
            for (i, (name, value)) in headers.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_str(&mut out, name.as_str());
                out.push(':');
                json_str(&mut out, &String::from_utf8_lossy(value.as_bytes()));
            }
            out.push('}');
        }
        out.push('}');
        out
    }
}

/// Writes `s` as a JSON string.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes_what_it_must() {
        let mut out = String::new();
        json_str(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
    }
}
