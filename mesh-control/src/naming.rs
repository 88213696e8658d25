//! How Kubernetes names become mesh identities and back.

use mesh_core::{Identity, IdentityError};

/// The identity of a service account: `spiffe://<trust domain>/ns/<namespace>/sa/<name>`.
pub fn service_account_identity(
    trust_domain: &str,
    namespace: &str,
    service_account: &str,
) -> Result<Identity, IdentityError> {
    Identity::parse(&format!(
        "spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"
    ))
}

/// The namespace and name of a service account from the user name the API server gives its
/// tokens (`system:serviceaccount:<namespace>:<name>`).
pub fn service_account_of_user(username: &str) -> Option<(&str, &str)> {
    let rest = username.strip_prefix("system:serviceaccount:")?;
    let (namespace, name) = rest.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then_some((namespace, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_users_split_and_others_do_not() {
        assert_eq!(
            service_account_of_user("system:serviceaccount:default:web"),
            Some(("default", "web"))
        );
        assert_eq!(
            service_account_of_user("system:serviceaccount:default"),
            None
        );
        assert_eq!(service_account_of_user("admin"), None);
        assert_eq!(service_account_of_user("system:serviceaccount::web"), None);
    }

    #[test]
    fn identities_are_spiffe_ids() {
        let id = service_account_identity("mesh.local", "default", "web").expect("identity");
        assert_eq!(id.as_str(), "spiffe://mesh.local/ns/default/sa/web");
    }
}
