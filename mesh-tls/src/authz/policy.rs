//! Which peer identities a policy admits: exact names and `*` globs per segment.

use std::fmt;
use std::str::FromStr;

use mesh_core::{Identity, PeerIdentity};

/// One segment of a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Exact(String),
    /// `*`: any one segment.
    Any,
}

/// A pattern of identities: a SPIFFE ID whose path segments (and trust domain) may be `*`
/// (`spiffe://mesh.local/ns/*/sa/web`), or a DNS name whose labels may be `*`
/// (`*.web.svc.cluster.local`). A `*` stands for exactly one whole segment; it never spans a
/// `/` or a `.`, so `spiffe://mesh.local/ns/*` does not admit `spiffe://mesh.local/ns/a/sa/b`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityPattern {
    spiffe: bool,
    segments: Vec<Segment>,
    text: String,
}

/// A pattern that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid identity pattern {pattern:?}: {reason}")]
pub struct PatternError {
    /// The pattern as given (at most 256 bytes of it).
    pub pattern: String,
    /// What is wrong.
    pub reason: &'static str,
}

/// Whether `name` is a SPIFFE ID, and its segments: the trust domain and path segments, or
/// the DNS labels.
fn split(name: &str) -> (bool, std::str::Split<'_, char>) {
    match name.strip_prefix("spiffe://") {
        Some(rest) => (true, rest.split('/')),
        None => (false, name.split('.')),
    }
}

impl FromStr for IdentityPattern {
    type Err = PatternError;

    fn from_str(pattern: &str) -> Result<Self, PatternError> {
        let error = |reason| PatternError {
            pattern: pattern.chars().take(256).collect(),
            reason,
        };
        if pattern.is_empty() {
            return Err(error("empty"));
        }
        let (spiffe, parts) = split(pattern);
        let mut segments = Vec::new();
        for part in parts {
            segments.push(match part {
                "" => return Err(error("empty segment")),
                "*" => Segment::Any,
                p if p.contains('*') => return Err(error("`*` must be a whole segment")),
                p => Segment::Exact(p.to_ascii_lowercase()),
            });
        }
        // An exact pattern must be a valid identity, so that typos fail here, not silently.
        if segments.iter().all(|s| *s != Segment::Any) {
            Identity::parse(pattern).map_err(|_| error("not a valid SPIFFE ID or DNS name"))?;
        }
        Ok(Self {
            spiffe,
            segments,
            text: pattern.to_owned(),
        })
    }
}

impl fmt::Display for IdentityPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl IdentityPattern {
    /// Whether `identity` matches.
    pub fn matches(&self, identity: &Identity) -> bool {
        let (spiffe, mut parts) = split(identity.as_str());
        if spiffe != self.spiffe {
            return false;
        }
        let mut segments = self.segments.iter();
        loop {
            match (segments.next(), parts.next()) {
                (None, None) => return true,
                (Some(Segment::Any), Some(_)) => {}
                (Some(Segment::Exact(want)), Some(got)) if want == got => {}
                _ => return false,
            }
        }
    }
}

/// The identities admitted. Empty admits nobody: secure by default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthzPolicy {
    allow: Vec<IdentityPattern>,
    unauthenticated: bool,
}

impl AuthzPolicy {
    /// Admits identities matching any of `patterns`.
    pub fn allow<S: AsRef<str>>(
        patterns: impl IntoIterator<Item = S>,
    ) -> Result<Self, PatternError> {
        let allow: Vec<IdentityPattern> = patterns
            .into_iter()
            .map(|p| p.as_ref().parse())
            .collect::<Result<_, _>>()?;
        Ok(Self::from_patterns(allow))
    }

    /// Admits identities matching any of `patterns`, already parsed.
    pub fn from_patterns(patterns: impl IntoIterator<Item = IdentityPattern>) -> Self {
        Self {
            allow: patterns.into_iter().collect(),
            unauthenticated: false,
        }
    }

    /// Also admits peers without an identity (plaintext clients of a permissive acceptor), as
    /// while a workload moves onto the mesh. Off by default; requests with no peer recorded at
    /// all are still refused.
    pub fn allow_unauthenticated(mut self, allow: bool) -> Self {
        self.unauthenticated = allow;
        self
    }

    /// Whether `peer` is admitted: authenticated with an identity some pattern matches, or
    /// unauthenticated if [`allow_unauthenticated`](Self::allow_unauthenticated) said so.
    pub fn permits(&self, peer: Option<&PeerIdentity>) -> bool {
        match peer {
            Some(PeerIdentity::Authenticated(identity)) => {
                self.allow.iter().any(|p| p.matches(identity))
            }
            Some(PeerIdentity::Unauthenticated) => self.unauthenticated,
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Identity {
        Identity::parse(s).expect("identity")
    }

    #[test]
    fn globs_match_whole_segments() {
        let p: IdentityPattern = "spiffe://mesh.local/ns/*/sa/web".parse().expect("pattern");
        assert!(p.matches(&id("spiffe://mesh.local/ns/prod/sa/web")));
        assert!(!p.matches(&id("spiffe://mesh.local/ns/prod/sa/api")));
        assert!(!p.matches(&id("spiffe://mesh.local/ns/a/b/sa/web")));
        assert!(!p.matches(&id("spiffe://other.local/ns/prod/sa/web")));
        let any_domain: IdentityPattern = "spiffe://*/ns/a/sa/b".parse().expect("pattern");
        assert!(any_domain.matches(&id("spiffe://x.y/ns/a/sa/b")));
        let dns: IdentityPattern = "*.web.svc".parse().expect("pattern");
        assert!(dns.matches(&id("api.web.svc")));
        assert!(!dns.matches(&id("a.b.web.svc")));
        assert!(!dns.matches(&id("spiffe://web.svc/x")));
        let exact: IdentityPattern = "spiffe://mesh.local/ns/a/sa/b".parse().expect("pattern");
        assert!(exact.matches(&id("spiffe://mesh.local/ns/a/sa/b")));
        assert!(!exact.matches(&id("spiffe://mesh.local/ns/a/sa/c")));
    }

    #[test]
    fn bad_patterns_say_why() {
        for (bad, why) in [
            ("", "empty"),
            ("spiffe://mesh.local/ns//sa", "empty segment"),
            (
                "spiffe://mesh.local/ns/web-*",
                "`*` must be a whole segment",
            ),
            ("spiffe://Mesh Local/x", "not a valid SPIFFE ID or DNS name"),
        ] {
            let err = bad.parse::<IdentityPattern>().expect_err(bad);
            assert_eq!(err.reason, why, "{bad}");
        }
    }

    #[test]
    fn unauthenticated_and_unknown_peers_are_refused() {
        let policy = AuthzPolicy::allow(["spiffe://mesh.local/ns/*/sa/web"]).expect("policy");
        let web = PeerIdentity::Authenticated(id("spiffe://mesh.local/ns/a/sa/web"));
        let db = PeerIdentity::Authenticated(id("spiffe://mesh.local/ns/a/sa/db"));
        assert!(policy.permits(Some(&web)));
        assert!(!policy.permits(Some(&db)));
        assert!(!policy.permits(Some(&PeerIdentity::Unauthenticated)));
        assert!(!policy.permits(None));
        assert!(!AuthzPolicy::default().permits(Some(&web)));

        // Admitting plaintext peers, on request, changes nothing for the others.
        let open = policy.allow_unauthenticated(true);
        assert!(open.permits(Some(&PeerIdentity::Unauthenticated)));
        assert!(open.permits(Some(&web)));
        assert!(!open.permits(Some(&db)));
        assert!(!open.permits(None));
    }
}
