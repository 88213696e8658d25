//! Typed label sets, and how they are written in the Prometheus text format.

use std::fmt::{self, Display, Write};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

use http::Request;
use http::uri::Authority;
use mesh_core::{Identity, PeerIdentity};

use crate::batched_hash::Batched;

/// A set of labels a caller chooses to break metrics down by: a plain struct, compared and
/// hashed as a whole, written out by [`Labels::encode`].
///
/// ```
/// use mesh_metrics::{LabelEncoder, Labels};
///
/// #[derive(Clone, PartialEq, Eq, Hash)]
/// struct ByRoute {
///     route: &'static str,
/// }
///
/// impl Labels for ByRoute {
///     fn encode(&self, enc: &mut LabelEncoder<'_>) {
///         enc.label("route", self.route);
///     }
/// }
/// ```
pub trait Labels: Clone + Eq + Hash + Send + Sync + 'static {
    /// Writes each label with [`LabelEncoder::label`].
    fn encode(&self, enc: &mut LabelEncoder<'_>);
}

impl Labels for () {
    fn encode(&self, _: &mut LabelEncoder<'_>) {}
}

/// Writes `name="value"` pairs, escaping values as the text format requires.
#[derive(Debug)]
pub struct LabelEncoder<'a> {
    out: &'a mut String,
    empty: bool,
}

impl<'a> LabelEncoder<'a> {
    /// Appends labels to `out`, comma-separated.
    pub(crate) fn new(out: &'a mut String) -> Self {
        let empty = out.is_empty();
        Self { out, empty }
    }

    /// Writes one label. `name` must be a valid Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`),
    /// which is why it is a `&'static str` chosen by code; the value may be anything and is
    /// escaped.
    pub fn label(&mut self, name: &'static str, value: impl Display) {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        self.out.push_str(name);
        self.out.push_str("=\"");
        // Writing into a String cannot fail.
        let _ = write!(Escaped(self.out), "{value}");
        self.out.push('"');
    }
}

/// Escapes a label value on its way into a string: `\`, `"` and newlines.
struct Escaped<'a>(&'a mut String);

impl Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            match c {
                '\\' => self.0.push_str("\\\\"),
                '"' => self.0.push_str("\\\""),
                '\n' => self.0.push_str("\\n"),
                c => self.0.push(c),
            }
        }
        Ok(())
    }
}

/// Which way a request travels through this workload's proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the mesh into the local application.
    Inbound,
    /// From the local application out to the mesh.
    Outbound,
}

impl Direction {
    /// `"inbound"` or `"outbound"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

impl Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Labels for Direction {
    fn encode(&self, enc: &mut LabelEncoder<'_>) {
        enc.label("direction", self);
    }
}

/// The mesh's usual breakdown of HTTP traffic: direction, authority, route, peer identity and
/// endpoint. Unset fields are left out of the exposition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpLabels {
    /// Inbound or outbound.
    pub direction: Direction,
    /// The request's authority (`:authority` or `Host`).
    pub authority: Option<Authority>,
    /// The route that matched, as named by the route table (not the raw path, which would be
    /// unbounded).
    pub route: Option<Arc<str>>,
    /// The authenticated identity of the peer (the client inbound, the server outbound).
    pub peer: Option<Identity>,
    /// The endpoint the request was sent to (outbound).
    pub endpoint: Option<SocketAddr>,
}

impl HttpLabels {
    /// Labels with only the direction set.
    pub fn new(direction: Direction) -> Self {
        Self {
            direction,
            authority: None,
            route: None,
            peer: None,
            endpoint: None,
        }
    }

    /// The direction, plus the authority and authenticated peer read from `req`.
    ///
    /// The authority comes from the URI (HTTP/2, absolute-form HTTP/1) at the cost of a
    /// reference count, or from the `Host` header, which has to be copied.
    pub fn from_request<B>(direction: Direction, req: &Request<B>) -> Self {
        let authority = req.uri().authority().cloned().or_else(|| {
            let host = req.headers().get(http::header::HOST)?;
            Authority::try_from(host.as_bytes()).ok()
        });
        let peer = PeerIdentity::of(req)
            .and_then(PeerIdentity::identity)
            .cloned();
        Self {
            direction,
            authority,
            route: None,
            peer,
            endpoint: None,
        }
    }

    /// Sets the route name.
    pub fn with_route(mut self, route: impl Into<Arc<str>>) -> Self {
        self.route = Some(route.into());
        self
    }

    /// Sets the endpoint.
    pub fn with_endpoint(mut self, endpoint: SocketAddr) -> Self {
        self.endpoint = Some(endpoint);
        self
    }
}

// Hashed once per request to find the series. `Authority`'s own `Hash` feeds the hasher one
// lowercased byte at a time, a call each; here the same lowercased bytes go in a few slices,
// and all of it reaches the family's SipHash in one or two writes (`Batched`). Equal
// authorities differ only in case, so they still hash alike.
impl Hash for HttpLabels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let state = &mut Batched::new(state);
        self.direction.hash(state);
        match &self.authority {
            None => state.write_u8(0),
            Some(authority) => {
                state.write_u8(1);
                hash_lowercase(authority.as_str().as_bytes(), state);
            }
        }
        self.route.hash(state);
        self.peer.hash(state);
        self.endpoint.hash(state);
    }
}

/// Feeds `bytes`, ASCII-lowercased, and their length to `state`, a stack buffer's worth at a time.
fn hash_lowercase<H: Hasher>(bytes: &[u8], state: &mut H) {
    state.write_usize(bytes.len());
    let mut buf = [0u8; 64];
    for chunk in bytes.chunks(buf.len()) {
        let lowered = &mut buf[..chunk.len()];
        lowered.copy_from_slice(chunk);
        lowered.make_ascii_lowercase();
        state.write(lowered);
    }
}

impl Labels for HttpLabels {
    fn encode(&self, enc: &mut LabelEncoder<'_>) {
        enc.label("direction", self.direction);
        if let Some(authority) = &self.authority {
            enc.label("authority", authority);
        }
        if let Some(route) = &self.route {
            enc.label("route", route);
        }
        if let Some(peer) = &self.peer {
            enc.label("peer_id", peer);
        }
        if let Some(endpoint) = &self.endpoint {
            enc.label("endpoint", endpoint);
        }
    }
}

/// Labels added to every line a registry writes: the workload's own labels from configuration
/// (namespace, deployment, pod).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConstLabels {
    encoded: String,
}

impl ConstLabels {
    /// Checks the names and encodes the pairs once.
    pub fn new<N, V>(pairs: impl IntoIterator<Item = (N, V)>) -> Result<Self, InvalidLabelName>
    where
        N: AsRef<str>,
        V: Display,
    {
        let mut encoded = String::new();
        for (name, value) in pairs {
            let name = name.as_ref();
            if !is_label_name(name) {
                return Err(InvalidLabelName(name.chars().take(128).collect()));
            }
            if !encoded.is_empty() {
                encoded.push(',');
            }
            encoded.push_str(name);
            encoded.push_str("=\"");
            let _ = write!(Escaped(&mut encoded), "{value}");
            encoded.push('"');
        }
        Ok(Self { encoded })
    }

    /// The encoded pairs, comma-separated, without braces.
    pub(crate) fn as_str(&self) -> &str {
        &self.encoded
    }
}

/// A label name that Prometheus would reject.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid label name {0:?}: use letters, digits and underscores, not starting with a digit or \"__\""
)]
pub struct InvalidLabelName(String);

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, RandomState};

    #[test]
    fn authorities_that_differ_only_in_case_are_one_label_set() {
        let with = |authority: &str| {
            let mut labels = HttpLabels::new(Direction::Inbound);
            labels.authority = Some(authority.parse().expect("authority"));
            labels.route = Some(Arc::from("users"));
            labels
        };
        let hasher = RandomState::new();
        let (lower, mixed) = (with("web.ns.svc:8080"), with("Web.NS.svc:8080"));
        assert_eq!(lower, mixed);
        assert_eq!(hasher.hash_one(&lower), hasher.hash_one(&mixed));
        // Longer than one buffer's worth, too.
        let long = "a".repeat(70) + ".example";
        let (lower, upper) = (with(&long), with(&long.to_ascii_uppercase()));
        assert_eq!(hasher.hash_one(&lower), hasher.hash_one(&upper));

        let other = with("api.ns.svc:8080");
        assert_ne!(lower, other);
        assert_ne!(
            hasher.hash_one(with("web.ns.svc:8080")),
            hasher.hash_one(&other)
        );
        let mut without = with("web.ns.svc:8080");
        without.authority = None;
        assert_ne!(
            hasher.hash_one(&without),
            hasher.hash_one(with("web.ns.svc:8080"))
        );
    }

    #[test]
    fn values_are_escaped() {
        let mut out = String::new();
        let mut enc = LabelEncoder::new(&mut out);
        enc.label("a", "x\"y\\z\nw");
        enc.label("b", 7);
        assert_eq!(out, r#"a="x\"y\\z\nw",b="7""#);
    }

    #[test]
    fn const_label_names_are_checked() {
        let ok = ConstLabels::new([("namespace", "web"), ("pod", "web-1")]).expect("valid");
        assert_eq!(ok.as_str(), r#"namespace="web",pod="web-1""#);
        for bad in ["", "1pod", "po-d", "__name"] {
            assert!(ConstLabels::new([(bad, "x")]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn labels_come_from_the_request() {
        let mut req = Request::builder()
            .uri("/x")
            .header("host", "web.default:8080")
            .body(())
            .expect("request");
        let id = Identity::parse("spiffe://mesh.local/ns/a/sa/b").expect("identity");
        req.extensions_mut()
            .insert(PeerIdentity::Authenticated(id.clone()));
        let labels = HttpLabels::from_request(Direction::Inbound, &req).with_route("x");
        assert_eq!(
            labels.authority.as_ref().map(Authority::as_str),
            Some("web.default:8080")
        );
        assert_eq!(labels.peer, Some(id));
        let mut out = String::new();
        labels.encode(&mut LabelEncoder::new(&mut out));
        assert_eq!(
            out,
            r#"direction="inbound",authority="web.default:8080",route="x",peer_id="spiffe://mesh.local/ns/a/sa/b""#
        );
    }
}
