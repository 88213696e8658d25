//! `mesh-control check`: what is missing or broken in a cluster's mesh, each finding with
//! what was checked and, when it fails, why.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;

use crate::identity::Issuer;
use crate::install::{HEARTBEAT_LEASE, ISSUER_SECRET, NAME, WEBHOOK};
use crate::policy::crd;

/// What `check` looks at.
#[derive(Clone, Debug)]
pub struct CheckConfig {
    /// The control plane's namespace.
    pub namespace: String,
    /// The issuer certificate must be valid at least this much longer. 60 days by default.
    pub issuer_margin: Duration,
    /// mesh-control must have renewed its heartbeat within this. 30 s by default.
    pub heartbeat_age: Duration,
}

impl Default for CheckConfig {
    fn default() -> Self {
        Self {
            namespace: "mesh-system".into(),
            issuer_margin: Duration::from_secs(60 * 24 * 3600),
            heartbeat_age: Duration::from_secs(30),
        }
    }
}

/// One check's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// What was checked.
    pub check: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mark = if self.ok { "ok  " } else { "FAIL" };
        write!(f, "[{mark}] {}: {}", self.check, self.detail)
    }
}

fn finding(check: &'static str, result: Result<String, String>) -> Finding {
    match result {
        Ok(detail) => Finding {
            check,
            ok: true,
            detail,
        },
        Err(detail) => Finding {
            check,
            ok: false,
            detail,
        },
    }
}

/// Runs every check with `client`.
pub async fn run(client: &kube::Client, config: &CheckConfig) -> Vec<Finding> {
    let ns = config.namespace.as_str();
    let mut findings = Vec::new();
    let reachable = client.apiserver_version().await;
    let up = reachable.is_ok();
    findings.push(finding(
        "Kubernetes API reachable",
        reachable
            .map(|v| format!("version {}", v.git_version))
            .map_err(|e| e.to_string()),
    ));
    if !up {
        return findings;
    }
    findings.push(finding(
        "control plane namespace",
        Api::<Namespace>::all(client.clone())
            .get(ns)
            .await
            .map(|_| format!("{ns} exists"))
            .map_err(|e| format!("{ns}: {e}")),
    ));
    let crd_name = format!("{}.{}", crd::PLURAL, crd::GROUP);
    findings.push(finding(
        "MeshAuthorization CRD",
        match Api::<CustomResourceDefinition>::all(client.clone())
            .get(&crd_name)
            .await
        {
            Ok(found) => {
                if crd::is_established(&found) {
                    Ok(format!("{crd_name} established"))
                } else {
                    Err(format!("{crd_name} not established"))
                }
            }
            Err(e) => Err(format!("{crd_name}: {e}")),
        },
    ));
    let rbac = async {
        Api::<ServiceAccount>::namespaced(client.clone(), ns)
            .get(NAME)
            .await
            .map_err(|e| format!("ServiceAccount {ns}/{NAME}: {e}"))?;
        Api::<ClusterRole>::all(client.clone())
            .get(NAME)
            .await
            .map_err(|e| format!("ClusterRole {NAME}: {e}"))?;
        Api::<ClusterRoleBinding>::all(client.clone())
            .get(NAME)
            .await
            .map_err(|e| format!("ClusterRoleBinding {NAME}: {e}"))?;
        Ok::<_, String>("service account, cluster role and binding exist".to_owned())
    };
    findings.push(finding("mesh-control RBAC", rbac.await));
    findings.push(finding(
        "issuer certificate",
        match Issuer::load(client.clone(), ns, ISSUER_SECRET).await {
            Ok(issuer) => {
                let left = issuer
                    .not_after
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                let days = left.as_secs() / 86_400;
                if left.is_zero() {
                    Err("expired".to_owned())
                } else if left < config.issuer_margin {
                    Err(format!(
                        "expires in {days} days (less than {})",
                        config.issuer_margin.as_secs() / 86_400
                    ))
                } else {
                    Ok(format!("valid for {days} more days"))
                }
            }
            Err(e) => Err(e.to_string()),
        },
    ));
    findings.push(finding(
        "control plane running",
        match Api::<Lease>::namespaced(client.clone(), ns)
            .get(HEARTBEAT_LEASE)
            .await
        {
            Ok(lease) => {
                let renewed = lease.spec.and_then(|s| s.renew_time).map(|t| t.0);
                match renewed {
                    Some(at) => {
                        let age = k8s_openapi::jiff::Timestamp::now().duration_since(at);
                        let age = Duration::try_from(age).unwrap_or_default();
                        if age <= config.heartbeat_age {
                            Ok(format!("heartbeat {}s ago", age.as_secs()))
                        } else {
                            Err(format!("last heartbeat {}s ago", age.as_secs()))
                        }
                    }
                    None => Err("the heartbeat has never been renewed".into()),
                }
            }
            Err(e) => Err(format!("no heartbeat Lease {ns}/{HEARTBEAT_LEASE}: {e}")),
        },
    ));
    findings.push(finding(
        "injector webhook registered",
        match Api::<MutatingWebhookConfiguration>::all(client.clone())
            .get(WEBHOOK)
            .await
        {
            Ok(config) => {
                let hooks = config.webhooks.unwrap_or_default();
                let with_ca = hooks
                    .iter()
                    .filter(|h| {
                        h.client_config
                            .ca_bundle
                            .as_ref()
                            .is_some_and(|b| !b.0.is_empty())
                    })
                    .count();
                if hooks.is_empty() {
                    Err(format!("{WEBHOOK} has no webhooks"))
                } else if with_ca < hooks.len() {
                    Err(format!("{WEBHOOK}: a webhook has no caBundle"))
                } else {
                    Ok(format!("{WEBHOOK} with {} webhook(s)", hooks.len()))
                }
            }
            Err(e) => Err(format!("{WEBHOOK}: {e}")),
        },
    ));
    findings
}
