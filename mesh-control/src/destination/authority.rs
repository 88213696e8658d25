//! The authorities a proxy may ask about.

use std::net::IpAddr;

/// What an authority names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// A Service by name.
    Service {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The Service port.
        port: u16,
    },
    /// A ClusterIP and port.
    ClusterIp {
        /// The address.
        ip: IpAddr,
        /// The Service port.
        port: u16,
    },
}

/// Why an authority names nothing we can look up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{authority:?} is not a service authority: {reason}")]
pub struct BadAuthority {
    /// What was asked.
    pub authority: String,
    /// Why it cannot be looked up.
    pub reason: &'static str,
}

/// Parses `name.namespace.svc.<cluster domain>[:port]`, `name.namespace.svc[:port]`,
/// `name.namespace[:port]`, or `ClusterIP[:port]` (IPv6 in brackets). The port defaults to 80.
pub fn parse(authority: &str, cluster_domain: &str) -> Result<Target, BadAuthority> {
    let bad = |reason| BadAuthority {
        authority: authority.to_owned(),
        reason,
    };
    let (host, port) = split_port(authority).ok_or_else(|| bad("the port is not a number"))?;
    if let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(Target::ClusterIp { ip, port });
    }
    let host = host.trim_end_matches('.');
    let host = host
        .strip_suffix(cluster_domain)
        .and_then(|h| h.strip_suffix('.'))
        .unwrap_or(host);
    let host = host.strip_suffix(".svc").unwrap_or(host);
    let mut labels = host.split('.');
    match (labels.next(), labels.next(), labels.next()) {
        (Some(name), Some(namespace), None) if !name.is_empty() && !namespace.is_empty() => {
            Ok(Target::Service {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                port,
            })
        }
        _ => Err(bad("expected name.namespace[.svc[.cluster domain]]")),
    }
}

fn split_port(authority: &str) -> Option<(&str, u16)> {
    // `[v6]:port`, `[v6]`, `host:port`, `host`; a bare IPv6 address has several colons.
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(port) => Some((host, port.parse().ok()?)),
            None if after.is_empty() => Some((host, 80)),
            None => None,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host, port.parse().ok()?)),
        Some(_) => Some((authority, 80)),
        None => Some((authority, 80)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ns: &str, name: &str, port: u16) -> Target {
        Target::Service {
            namespace: ns.into(),
            name: name.into(),
            port,
        }
    }

    #[test]
    fn every_service_form_names_the_same_service() {
        for authority in [
            "web.default.svc.cluster.local:80",
            "web.default.svc.cluster.local.:80",
            "web.default.svc:80",
            "web.default:80",
            "web.default",
        ] {
            assert_eq!(
                parse(authority, "cluster.local"),
                Ok(svc("default", "web", 80)),
                "{authority}"
            );
        }
        assert_eq!(
            parse("web.default:8080", "cluster.local"),
            Ok(svc("default", "web", 8080))
        );
    }

    #[test]
    fn cluster_ips_parse_in_both_families() {
        assert_eq!(
            parse("10.96.0.10:53", "cluster.local"),
            Ok(Target::ClusterIp {
                ip: "10.96.0.10".parse().unwrap_or(IpAddr::from([0; 4])),
                port: 53
            })
        );
        assert!(matches!(
            parse("[fd00::1]:80", "cluster.local"),
            Ok(Target::ClusterIp { port: 80, .. })
        ));
    }

    #[test]
    fn nonsense_is_refused_with_a_reason() {
        assert!(parse("web", "cluster.local").is_err());
        assert!(parse("a.b.c.d:80", "cluster.local").is_err());
        assert!(parse("web.default:http", "cluster.local").is_err());
    }
}
