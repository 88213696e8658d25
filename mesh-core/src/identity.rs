//! Workload identities: SPIFFE IDs and DNS names.
//!
//! An [`Identity`] is parsed and validated once, then shared cheaply (cloning bumps a reference
//! count). [`PeerIdentity`] is the request extension that the TLS layer inserts and every other
//! layer reads.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

/// The longest SPIFFE ID the SPIFFE specification allows, in bytes.
const MAX_SPIFFE_LEN: usize = 2048;
/// The longest trust domain the SPIFFE specification allows, in bytes.
const MAX_TRUST_DOMAIN_LEN: usize = 255;
/// The longest DNS name (without a trailing dot), in bytes (RFC 1035).
const MAX_DNS_LEN: usize = 253;
/// The longest DNS label, in bytes (RFC 1035).
const MAX_DNS_LABEL_LEN: usize = 63;

const SPIFFE_SCHEME: &str = "spiffe://";

/// Which form an [`Identity`] takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdentityKind {
    /// A SPIFFE ID such as `spiffe://mesh.local/ns/web/sa/api`, carried in a certificate's URI SAN.
    Spiffe,
    /// A DNS name such as `api.web.svc.cluster.local`, carried in a certificate's DNS SAN.
    Dns,
}

/// A validated workload identity.
///
/// SPIFFE IDs follow the SPIFFE-ID specification (lower-case trust domain, no port, user info,
/// query or fragment, no empty, `.` or `..` path segments). DNS names follow RFC 1123 and are
/// normalised to lower case, since DNS names compare case-insensitively. IP addresses are not
/// identities.
///
/// ```
/// use mesh_core::{Identity, IdentityKind};
///
/// let id: Identity = "spiffe://mesh.local/ns/web/sa/api".parse()?;
/// assert_eq!(id.kind(), IdentityKind::Spiffe);
/// assert_eq!(id.trust_domain(), Some("mesh.local"));
///
/// let dns = Identity::parse("API.Web.svc")?;
/// assert_eq!(dns.as_str(), "api.web.svc");
/// assert!(Identity::parse("spiffe://mesh.local/ns//web").is_err());
/// # Ok::<(), mesh_core::IdentityError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    text: Arc<str>,
    kind: IdentityKind,
}

impl Identity {
    /// Parses and validates an identity: a `spiffe://` URI, or else a DNS name.
    pub fn parse(input: &str) -> Result<Self, IdentityError> {
        let fail = |reason| Err(IdentityError::new(input, reason));
        if input.is_empty() {
            return fail(InvalidIdentity::Empty);
        }
        if let Some(rest) = strip_prefix_ignore_case(input, SPIFFE_SCHEME) {
            if !input.starts_with(SPIFFE_SCHEME) {
                return fail(InvalidIdentity::SchemeNotLowercase);
            }
            return match validate_spiffe(input, rest) {
                Ok(()) => Ok(Self {
                    text: Arc::from(input),
                    kind: IdentityKind::Spiffe,
                }),
                Err(reason) => fail(reason),
            };
        }
        if input.contains("://") {
            return fail(InvalidIdentity::UnsupportedScheme);
        }
        match validate_dns(input) {
            Ok(normalised) => Ok(Self {
                text: Arc::from(normalised.as_str()),
                kind: IdentityKind::Dns,
            }),
            Err(reason) => fail(reason),
        }
    }

    /// The identity as text (normalised for DNS names).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether this is a SPIFFE ID or a DNS name.
    pub fn kind(&self) -> IdentityKind {
        self.kind
    }

    /// The trust domain of a SPIFFE ID (`mesh.local` in `spiffe://mesh.local/ns/web`), or
    /// `None` for a DNS name.
    pub fn trust_domain(&self) -> Option<&str> {
        match self.kind {
            IdentityKind::Dns => None,
            IdentityKind::Spiffe => {
                let rest = &self.text[SPIFFE_SCHEME.len()..];
                Some(rest.split('/').next().unwrap_or(rest))
            }
        }
    }

    /// The path of a SPIFFE ID (`/ns/web` in `spiffe://mesh.local/ns/web`; empty for a bare trust
    /// domain), or `None` for a DNS name.
    pub fn path(&self) -> Option<&str> {
        match self.kind {
            IdentityKind::Dns => None,
            IdentityKind::Spiffe => {
                let rest = &self.text[SPIFFE_SCHEME.len()..];
                Some(rest.find('/').map_or("", |at| &rest[at..]))
            }
        }
    }
}

impl FromStr for Identity {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for Identity {
    type Error = IdentityError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({:?})", &*self.text)
    }
}

impl AsRef<str> for Identity {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

/// Why a string is not a valid [`Identity`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidIdentity {
    /// The input is empty.
    Empty,
    /// The input is longer than the specification allows.
    TooLong {
        /// The limit, in bytes.
        max: usize,
    },
    /// A URI with a scheme other than `spiffe`.
    UnsupportedScheme,
    /// The `spiffe` scheme must be written in lower case.
    SchemeNotLowercase,
    /// `spiffe://` with nothing after it, or a path straight after the scheme.
    EmptyTrustDomain,
    /// A character a trust domain may not contain (only `a-z`, `0-9`, `.`, `-`, `_`).
    TrustDomainCharacter {
        /// The offending character.
        found: char,
    },
    /// A port number or user info in the trust domain.
    PortOrUserInfo,
    /// A query (`?`) or fragment (`#`).
    QueryOrFragment,
    /// Two slashes in a row, or a trailing slash.
    EmptyPathSegment,
    /// A `.` or `..` path segment.
    DotPathSegment,
    /// A character a path segment may not contain (only `a-z`, `A-Z`, `0-9`, `.`, `-`, `_`).
    PathCharacter {
        /// The offending character.
        found: char,
    },
    /// An IP address; identities are names, not addresses.
    IpAddress,
    /// A DNS label that is empty (as in `a..b`).
    EmptyDnsLabel,
    /// A DNS label longer than 63 bytes.
    DnsLabelTooLong,
    /// A DNS label that starts or ends with `-`.
    DnsLabelHyphen,
    /// A character a DNS name may not contain (only letters, digits, `-` and `.`).
    DnsCharacter {
        /// The offending character.
        found: char,
    },
}

impl fmt::Display for InvalidIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("it is empty"),
            Self::TooLong { max } => write!(f, "it is longer than {max} bytes"),
            Self::UnsupportedScheme => {
                f.write_str("only spiffe:// URIs and DNS names are identities")
            }
            Self::SchemeNotLowercase => {
                f.write_str("the scheme must be written as lower-case `spiffe://`")
            }
            Self::EmptyTrustDomain => f.write_str("the SPIFFE ID has no trust domain"),
            Self::TrustDomainCharacter { found } => write!(
                f,
                "the trust domain contains {found:?}; only a-z, 0-9, '.', '-' and '_' are allowed"
            ),
            Self::PortOrUserInfo => {
                f.write_str("a SPIFFE trust domain may not carry a port or user info")
            }
            Self::QueryOrFragment => f.write_str("a SPIFFE ID may not carry a query or fragment"),
            Self::EmptyPathSegment => {
                f.write_str("the SPIFFE path has an empty segment or a trailing '/'")
            }
            Self::DotPathSegment => f.write_str("the SPIFFE path has a '.' or '..' segment"),
            Self::PathCharacter { found } => write!(
                f,
                "the SPIFFE path contains {found:?}; only letters, digits, '.', '-' and '_' are allowed"
            ),
            Self::IpAddress => f.write_str("an IP address is not a workload identity"),
            Self::EmptyDnsLabel => f.write_str("the DNS name has an empty label"),
            Self::DnsLabelTooLong => {
                write!(f, "a DNS label is longer than {MAX_DNS_LABEL_LEN} bytes")
            }
            Self::DnsLabelHyphen => f.write_str("a DNS label starts or ends with '-'"),
            Self::DnsCharacter { found } => write!(
                f,
                "the DNS name contains {found:?}; only letters, digits, '-' and '.' are allowed"
            ),
        }
    }
}

/// The error for a string that is not a valid [`Identity`]: it names the input and the reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid identity {input:?}: {reason}")]
pub struct IdentityError {
    input: String,
    reason: InvalidIdentity,
}

impl IdentityError {
    /// The longest prefix of the rejected input kept in the error, so that a hostile input
    /// cannot make error messages arbitrarily large.
    const MAX_ECHO: usize = 256;

    fn new(input: &str, reason: InvalidIdentity) -> Self {
        let mut end = input.len().min(Self::MAX_ECHO);
        while !input.is_char_boundary(end) {
            end -= 1;
        }
        Self {
            input: input[..end].to_owned(),
            reason,
        }
    }

    /// The rejected input (truncated to 256 bytes).
    pub fn input(&self) -> &str {
        &self.input
    }

    /// Why it was rejected.
    pub fn reason(&self) -> InvalidIdentity {
        self.reason
    }
}

fn strip_prefix_ignore_case<'a>(input: &'a str, prefix: &str) -> Option<&'a str> {
    let head = input.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &input[prefix.len()..])
}

fn validate_spiffe(whole: &str, rest: &str) -> Result<(), InvalidIdentity> {
    if whole.len() > MAX_SPIFFE_LEN {
        return Err(InvalidIdentity::TooLong {
            max: MAX_SPIFFE_LEN,
        });
    }
    if rest.contains(['?', '#']) {
        return Err(InvalidIdentity::QueryOrFragment);
    }
    let (trust_domain, path) = rest.find('/').map_or((rest, ""), |at| rest.split_at(at));
    if trust_domain.is_empty() {
        return Err(InvalidIdentity::EmptyTrustDomain);
    }
    if trust_domain.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(InvalidIdentity::TooLong {
            max: MAX_TRUST_DOMAIN_LEN,
        });
    }
    for c in trust_domain.chars() {
        match c {
            'a'..='z' | '0'..='9' | '.' | '-' | '_' => {}
            ':' | '@' => return Err(InvalidIdentity::PortOrUserInfo),
            found => return Err(InvalidIdentity::TrustDomainCharacter { found }),
        }
    }
    if path.is_empty() {
        return Ok(());
    }
    // `path` starts with '/', so the first split item is the empty string before it.
    for segment in path.split('/').skip(1) {
        if segment.is_empty() {
            return Err(InvalidIdentity::EmptyPathSegment);
        }
        if segment == "." || segment == ".." {
            return Err(InvalidIdentity::DotPathSegment);
        }
        if let Some(found) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
        {
            return Err(InvalidIdentity::PathCharacter { found });
        }
    }
    Ok(())
}

/// Validates a DNS name and returns it in lower case without a trailing dot.
fn validate_dns(input: &str) -> Result<String, InvalidIdentity> {
    let name = input.strip_suffix('.').unwrap_or(input);
    if name.is_empty() {
        return Err(InvalidIdentity::EmptyDnsLabel);
    }
    if name.len() > MAX_DNS_LEN {
        return Err(InvalidIdentity::TooLong { max: MAX_DNS_LEN });
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err(InvalidIdentity::IpAddress);
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(InvalidIdentity::EmptyDnsLabel);
        }
        if label.len() > MAX_DNS_LABEL_LEN {
            return Err(InvalidIdentity::DnsLabelTooLong);
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(InvalidIdentity::DnsLabelHyphen);
        }
        if let Some(found) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(InvalidIdentity::DnsCharacter { found });
        }
    }
    Ok(name.to_ascii_lowercase())
}

/// What the mesh knows about the peer of a request: the request extension that mesh-tls inserts
/// on every request of a connection, and that authorization, metrics and tap read.
///
/// ```
/// use mesh_core::{Identity, PeerIdentity};
///
/// let mut req = http::Request::new(());
/// let id = Identity::parse("spiffe://mesh.local/ns/web/sa/api")?;
/// req.extensions_mut().insert(PeerIdentity::Authenticated(id.clone()));
/// assert_eq!(PeerIdentity::of(&req).and_then(PeerIdentity::identity), Some(&id));
/// # Ok::<(), mesh_core::IdentityError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PeerIdentity {
    /// The peer presented a certificate that was verified against the trust roots and carries
    /// this identity.
    Authenticated(Identity),
    /// The connection was accepted without an authenticated identity (plaintext in permissive
    /// mode).
    Unauthenticated,
}

impl PeerIdentity {
    /// The peer identity recorded on a request, if any layer recorded one.
    pub fn of<B>(req: &http::Request<B>) -> Option<&Self> {
        req.extensions().get::<Self>()
    }

    /// The authenticated identity, or `None` for an unauthenticated peer.
    pub fn identity(&self) -> Option<&Identity> {
        match self {
            Self::Authenticated(id) => Some(id),
            Self::Unauthenticated => None,
        }
    }

    /// Whether the peer was authenticated.
    pub fn is_authenticated(&self) -> bool {
        matches!(self, Self::Authenticated(_))
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Authenticated(id) => id.fmt(f),
            Self::Unauthenticated => f.write_str("unauthenticated"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(input: &str) -> InvalidIdentity {
        match Identity::parse(input) {
            Ok(id) => panic!("{input:?} was accepted as {id:?}"),
            Err(e) => e.reason(),
        }
    }

    #[test]
    fn spiffe_ids_parse_with_their_parts() {
        let id = Identity::parse("spiffe://mesh.local/ns/web/sa/api-1_x.y").expect("valid");
        assert_eq!(id.kind(), IdentityKind::Spiffe);
        assert_eq!(id.trust_domain(), Some("mesh.local"));
        assert_eq!(id.path(), Some("/ns/web/sa/api-1_x.y"));
        assert_eq!(id.to_string(), "spiffe://mesh.local/ns/web/sa/api-1_x.y");

        let bare = Identity::parse("spiffe://mesh.local").expect("valid");
        assert_eq!(bare.trust_domain(), Some("mesh.local"));
        assert_eq!(bare.path(), Some(""));
    }

    #[test]
    fn malformed_spiffe_ids_are_rejected_with_the_reason() {
        assert_eq!(reason(""), InvalidIdentity::Empty);
        assert_eq!(reason("spiffe://"), InvalidIdentity::EmptyTrustDomain);
        assert_eq!(
            reason("spiffe:///ns/web"),
            InvalidIdentity::EmptyTrustDomain
        );
        assert_eq!(
            reason("SPIFFE://mesh.local/a"),
            InvalidIdentity::SchemeNotLowercase
        );
        assert_eq!(
            reason("https://mesh.local/a"),
            InvalidIdentity::UnsupportedScheme
        );
        assert_eq!(
            reason("spiffe://Mesh.local/a"),
            InvalidIdentity::TrustDomainCharacter { found: 'M' }
        );
        assert_eq!(
            reason("spiffe://mesh.local:8080/a"),
            InvalidIdentity::PortOrUserInfo
        );
        assert_eq!(
            reason("spiffe://user@mesh.local/a"),
            InvalidIdentity::PortOrUserInfo
        );
        assert_eq!(
            reason("spiffe://mesh.local/a?b=c"),
            InvalidIdentity::QueryOrFragment
        );
        assert_eq!(
            reason("spiffe://mesh.local/a#frag"),
            InvalidIdentity::QueryOrFragment
        );
        assert_eq!(
            reason("spiffe://mesh.local/ns//web"),
            InvalidIdentity::EmptyPathSegment
        );
        assert_eq!(
            reason("spiffe://mesh.local/ns/web/"),
            InvalidIdentity::EmptyPathSegment
        );
        assert_eq!(
            reason("spiffe://mesh.local/ns/../web"),
            InvalidIdentity::DotPathSegment
        );
        assert_eq!(
            reason("spiffe://mesh.local/ns/./web"),
            InvalidIdentity::DotPathSegment
        );
        assert_eq!(
            reason("spiffe://mesh.local/ns/w%20b"),
            InvalidIdentity::PathCharacter { found: '%' }
        );
        let long = format!("spiffe://mesh.local/{}", "a".repeat(MAX_SPIFFE_LEN));
        assert_eq!(
            reason(&long),
            InvalidIdentity::TooLong {
                max: MAX_SPIFFE_LEN
            }
        );
    }

    #[test]
    fn dns_names_are_normalised_and_validated() {
        let id = Identity::parse("API.web-1.svc.Cluster.Local.").expect("valid");
        assert_eq!(id.kind(), IdentityKind::Dns);
        assert_eq!(id.as_str(), "api.web-1.svc.cluster.local");
        assert_eq!(id.trust_domain(), None);
        assert_eq!(
            id,
            Identity::parse("api.web-1.svc.cluster.local").expect("valid")
        );

        assert_eq!(reason("a..b"), InvalidIdentity::EmptyDnsLabel);
        assert_eq!(reason("."), InvalidIdentity::EmptyDnsLabel);
        assert_eq!(reason("-web.svc"), InvalidIdentity::DnsLabelHyphen);
        assert_eq!(reason("web-.svc"), InvalidIdentity::DnsLabelHyphen);
        assert_eq!(
            reason("web_1.svc"),
            InvalidIdentity::DnsCharacter { found: '_' }
        );
        assert_eq!(
            reason("wéb.svc"),
            InvalidIdentity::DnsCharacter { found: 'é' }
        );
        assert_eq!(reason("10.0.0.1"), InvalidIdentity::IpAddress);
        assert_eq!(reason("::1"), InvalidIdentity::IpAddress);
        assert_eq!(reason(&"a".repeat(64)), InvalidIdentity::DnsLabelTooLong);
        let long = vec!["abcdefgh"; 30].join(".");
        assert_eq!(reason(&long), InvalidIdentity::TooLong { max: MAX_DNS_LEN });
    }

    #[test]
    fn errors_name_the_input_and_stay_bounded() {
        let err = Identity::parse("spiffe://mesh.local//x").expect_err("invalid");
        let text = err.to_string();
        assert!(text.contains("\"spiffe://mesh.local//x\""), "{text}");
        assert!(text.contains("empty segment"), "{text}");

        let huge = "é".repeat(10_000);
        let err = Identity::parse(&huge).expect_err("invalid");
        assert!(err.input().len() <= IdentityError::MAX_ECHO);
    }

    #[test]
    fn peer_identity_reads_from_request_extensions() {
        let mut req = http::Request::new(());
        assert_eq!(PeerIdentity::of(&req), None);
        req.extensions_mut().insert(PeerIdentity::Unauthenticated);
        let peer = PeerIdentity::of(&req).expect("inserted");
        assert!(!peer.is_authenticated());
        assert_eq!(peer.identity(), None);
        assert_eq!(peer.to_string(), "unauthenticated");
    }
}
