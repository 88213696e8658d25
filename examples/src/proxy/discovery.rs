//! A service's endpoint source, as configured: a fixed list, a watched file, or DNS.

use std::time::Duration;

use mesh_balance::discover::{self, Updates, dns};
use mesh_core::Endpoint;

use super::config::Service;

/// How often an endpoints file is checked for changes.
const FILE_INTERVAL: Duration = Duration::from_secs(1);

/// What can go wrong setting a source up.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The DNS setting is not `host:port` or `srv:NAME`.
    #[error("service {service}: dns {value:?} is neither host:port nor srv:NAME")]
    BadDnsName {
        /// The service.
        service: String,
        /// What was written.
        value: String,
    },
    /// The resolver could not be set up.
    #[error("service {service}: {source}")]
    Dns {
        /// The service.
        service: String,
        /// Why.
        source: dns::DnsSetupError,
    },
}

/// The endpoint updates of `service`. Each call starts a source of its own (a service used
/// for both HTTP and TCP has two balancers).
pub(crate) fn updates(service: &Service) -> Result<Updates, DiscoveryError> {
    let name = service.name.get_ref();
    if let Some(endpoints) = &service.endpoints {
        let (tx, rx) = discover::channel();
        for addr in endpoints {
            tx.insert(Endpoint::new(addr.0));
        }
        return Ok(rx);
    }
    if let Some(file) = &service.endpoints_file {
        let (updates, _report) = discover::file::watch(file.clone(), FILE_INTERVAL);
        return Ok(updates);
    }
    let value = service.dns.as_deref().unwrap_or_default();
    let target: dns::DnsTarget = value.parse().map_err(|_| DiscoveryError::BadDnsName {
        service: name.clone(),
        value: value.to_owned(),
    })?;
    let config = dns::DnsConfig {
        servers: service.dns_servers.iter().map(|a| a.0).collect(),
        ..dns::DnsConfig::default()
    };
    let (updates, _report) = dns::watch(target, config).map_err(|source| DiscoveryError::Dns {
        service: name.clone(),
        source,
    })?;
    Ok(updates)
}
