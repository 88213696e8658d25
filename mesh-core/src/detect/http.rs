//! Recognising HTTP from the first bytes of a connection, without allocating.

use super::Protocol;

/// The HTTP/2 connection preface a prior-knowledge client sends first (RFC 9113, 3.4).
pub(super) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Methods longer than this are not worth waiting for; the longest registered one is 17 bytes.
const MAX_METHOD_LEN: usize = 32;

/// Decides the protocol from the bytes read so far, or `None` if more bytes are needed.
pub(super) fn decide(buf: &[u8]) -> Option<Protocol> {
    let common = buf.len().min(H2_PREFACE.len());
    if buf[..common] == H2_PREFACE[..common] {
        return (buf.len() >= H2_PREFACE.len()).then_some(Protocol::Http2);
    }
    match request_line(buf) {
        Line::Http1 => Some(Protocol::Http1),
        Line::NotHttp => malformed_http1(buf),
        Line::Incomplete => None,
    }
}

/// The methods a malformed request line must start with to be answered as HTTP.
const METHODS: [&[u8]; 9] = [
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH",
];

/// A first line that is not a valid request line, but is one meant: a known method, a space,
/// and ` HTTP/` later on the line (`GET / HTTP/1.1 extra`, `GET /\x01 HTTP/1.1`). Such a
/// client gets hyper's 400, not a silently closed connection. Without ` HTTP/` (Redis's inline
/// `GET key`, say) the bytes stay opaque. Waits for the end of the line to tell.
fn malformed_http1(buf: &[u8]) -> Option<Protocol> {
    let space = buf.iter().position(|&b| b == b' ');
    if !space.is_some_and(|at| METHODS.contains(&&buf[..at])) {
        return Some(Protocol::Opaque);
    }
    let line_end = buf.iter().position(|&b| b == b'\n');
    let line = &buf[..line_end.unwrap_or(buf.len())];
    if line.windows(6).any(|w| w == b" HTTP/") {
        Some(Protocol::Http1)
    } else if line_end.is_some() {
        Some(Protocol::Opaque)
    } else {
        None
    }
}

enum Line {
    Http1,
    NotHttp,
    Incomplete,
}

/// Checks `method SP request-target SP HTTP/1.x CRLF` as far as the bytes go.
fn request_line(buf: &[u8]) -> Line {
    let mut at = 0;
    // The method: one or more token characters.
    while at < buf.len() && is_tchar(buf[at]) {
        at += 1;
        if at > MAX_METHOD_LEN {
            return Line::NotHttp;
        }
    }
    match buf.get(at) {
        None => return Line::Incomplete,
        Some(b' ') if at > 0 => at += 1,
        Some(_) => return Line::NotHttp,
    }
    // The request target: visible characters up to the next space.
    let target_start = at;
    while at < buf.len() && buf[at] != b' ' {
        if !is_target_byte(buf[at]) {
            return Line::NotHttp;
        }
        at += 1;
    }
    match buf.get(at) {
        None => return Line::Incomplete,
        Some(_) if at == target_start => return Line::NotHttp,
        Some(_) => at += 1,
    }
    // The version, then the line end.
    for expected in [
        &b"HTTP/1.1\r\n"[..],
        &b"HTTP/1.0\r\n"[..],
        &b"HTTP/1.1\n"[..],
        &b"HTTP/1.0\n"[..],
    ] {
        let rest = &buf[at..];
        let n = rest.len().min(expected.len());
        if rest[..n] == expected[..n] {
            return if n == expected.len() {
                Line::Http1
            } else {
                Line::Incomplete
            };
        }
    }
    Line::NotHttp
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Bytes a request target may hold: visible ASCII, and bytes above 0x7F, which some clients
/// send unencoded and HTTP servers then judge.
fn is_target_byte(b: u8) -> bool {
    b > 0x20 && b != 0x7f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_request_lines_of_http_clients_are_http_but_inline_commands_are_not() {
        assert_eq!(decide(b"GET / HTTP/1.1 extra\r\n"), Some(Protocol::Http1));
        assert_eq!(decide(b"GET /\x01 HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(decide(b"GET  / HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(decide(b"GET / HTTP/2.0\r\n"), Some(Protocol::Http1));
        assert_eq!(decide(b"GET / HTTP/1.1 \r\n"), Some(Protocol::Http1));
        assert_eq!(decide(b"GET / HTTP/1.1\rX"), Some(Protocol::Http1));
        assert_eq!(decide(b"GET /\x01 HT"), None);
        assert_eq!(decide(b"GET key\r\n"), Some(Protocol::Opaque));
        assert_eq!(decide(b"get / HTTP/1.1 x\r\n"), Some(Protocol::Opaque));
    }

    #[test]
    fn recognises_complete_request_lines() {
        assert_eq!(decide(b"GET / HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(
            decide(b"POST /a?b=c HTTP/1.0\r\nHost: x\r\n"),
            Some(Protocol::Http1)
        );
        assert_eq!(decide(b"OPTIONS * HTTP/1.1\n"), Some(Protocol::Http1));
        assert_eq!(
            decide(b"CONNECT example.com:443 HTTP/1.1\r\n"),
            Some(Protocol::Http1)
        );
        assert_eq!(decide(H2_PREFACE), Some(Protocol::Http2));
    }

    #[test]
    fn waits_for_more_while_the_bytes_could_still_be_http() {
        let full = b"GET /index.html HTTP/1.1\r\n";
        for cut in 1..full.len() {
            assert_eq!(decide(&full[..cut]), None, "cut at {cut}");
        }
        for cut in 1..H2_PREFACE.len() {
            assert_eq!(decide(&H2_PREFACE[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn rejects_what_cannot_be_http() {
        assert_eq!(decide(b"\x16\x03\x01\x02\x00"), Some(Protocol::Opaque));
        assert_eq!(decide(b"SSH-2.0-OpenSSH_9.6\r\n"), Some(Protocol::Opaque));
        assert_eq!(decide(b" GET / HTTP/1.1\r\n"), Some(Protocol::Opaque));
        assert_eq!(decide(b"GET /\r\n"), Some(Protocol::Opaque));
        assert_eq!(decide(b"PRI * HTTP/2.0\r\n\r\nXX"), Some(Protocol::Opaque));
        assert_eq!(decide(&[b'A'; 40]), Some(Protocol::Opaque));
    }
}
