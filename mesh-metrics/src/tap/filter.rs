//! Which requests a tap listener wants to see.

use http::Method;

/// Matches requests by authority, path prefix and method; an unset field matches anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TapFilter {
    /// The exact authority (`host:port` or `host`, compared case-insensitively).
    pub authority: Option<String>,
    /// A prefix of the path.
    pub path_prefix: Option<String>,
    /// The method.
    pub method: Option<Method>,
}

impl TapFilter {
    /// Matches every request.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only requests to this authority.
    pub fn authority(mut self, authority: impl Into<String>) -> Self {
        self.authority = Some(authority.into());
        self
    }

    /// Only requests whose path starts with `prefix`.
    pub fn path_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.path_prefix = Some(prefix.into());
        self
    }

    /// Only requests with this method.
    pub fn method(mut self, method: Method) -> Self {
        self.method = Some(method);
        self
    }

    /// Whether a request with this method, authority and path matches.
    pub fn matches(&self, method: &Method, authority: Option<&str>, path: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method)
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
            && self
                .authority
                .as_deref()
                .is_none_or(|a| authority.is_some_and(|b| a.eq_ignore_ascii_case(b)))
    }

    /// Reads a filter from a URL query: `authority=`, `path_prefix=`, `method=`, each at most
    /// once, percent-decoded. `limit` is left for the caller (see [`super::serve_tap`]).
    pub fn from_query(query: &str) -> Result<(Self, Option<u64>), TapQueryError> {
        let mut filter = Self::default();
        let mut limit = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(raw).ok_or_else(|| TapQueryError::Encoding(key.into()))?;
            let duplicate = match key {
                "authority" => filter.authority.replace(value).is_some(),
                "path_prefix" => filter.path_prefix.replace(value).is_some(),
                "method" => {
                    let method = Method::from_bytes(value.as_bytes())
                        .map_err(|_| TapQueryError::Value(key.into(), value))?;
                    filter.method.replace(method).is_some()
                }
                "limit" => {
                    let n = value
                        .parse()
                        .map_err(|_| TapQueryError::Value(key.into(), value))?;
                    limit.replace(n).is_some()
                }
                other => return Err(TapQueryError::UnknownKey(other.chars().take(64).collect())),
            };
            if duplicate {
                return Err(TapQueryError::Duplicate(key.into()));
            }
        }
        Ok((filter, limit))
    }
}

/// A tap query that cannot be understood.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TapQueryError {
    /// A key other than `authority`, `path_prefix`, `method` and `limit`.
    #[error("unknown tap filter {0:?}: use authority, path_prefix, method or limit")]
    UnknownKey(String),
    /// A key given twice.
    #[error("tap filter {0:?} given twice")]
    Duplicate(String),
    /// A value that is not valid percent-encoded UTF-8.
    #[error("tap filter {0:?} is not valid percent-encoded UTF-8")]
    Encoding(String),
    /// A value that does not parse (a method, a limit).
    #[error("tap filter {0:?} has an invalid value {1:?}")]
    Value(String, String),
}

/// Decodes `%XX` escapes and `+` (a space in query strings).
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hi = (bytes.next()? as char).to_digit(16)?;
                let lo = (bytes.next()? as char).to_digit(16)?;
                out.push((hi * 16 + lo) as u8);
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_by_each_field() {
        let f = TapFilter::all()
            .authority("Web:80")
            .path_prefix("/api/")
            .method(Method::GET);
        assert!(f.matches(&Method::GET, Some("web:80"), "/api/users"));
        assert!(!f.matches(&Method::POST, Some("web:80"), "/api/users"));
        assert!(!f.matches(&Method::GET, Some("db:80"), "/api/users"));
        assert!(!f.matches(&Method::GET, None, "/api/users"));
        assert!(!f.matches(&Method::GET, Some("web:80"), "/health"));
        assert!(TapFilter::all().matches(&Method::PUT, None, "/"));
    }

    #[test]
    fn queries_parse_or_say_why_not() {
        let (f, limit) =
            TapFilter::from_query("authority=web%3A80&path_prefix=/a%20b&method=GET&limit=5")
                .expect("valid");
        assert_eq!(f.authority.as_deref(), Some("web:80"));
        assert_eq!(f.path_prefix.as_deref(), Some("/a b"));
        assert_eq!(f.method, Some(Method::GET));
        assert_eq!(limit, Some(5));
        assert!(
            matches!(TapFilter::from_query("pod=x"), Err(TapQueryError::UnknownKey(k)) if k == "pod")
        );
        assert!(matches!(
            TapFilter::from_query("method=a&method=b"),
            Err(TapQueryError::Duplicate(_))
        ));
        assert!(matches!(
            TapFilter::from_query("path_prefix=%zz"),
            Err(TapQueryError::Encoding(_))
        ));
        assert!(matches!(
            TapFilter::from_query("limit=x"),
            Err(TapQueryError::Value(..))
        ));
    }
}
