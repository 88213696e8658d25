//! Route names for metrics: the first configured path prefix that matches names the route.
//! Labels stay bounded however many distinct paths arrive.

use std::sync::Arc;

use super::config::Route;

/// Path prefixes and their names, in configured order.
#[derive(Clone, Debug, Default)]
pub(crate) struct RouteTable(Arc<[(String, Arc<str>)]>);

impl RouteTable {
    /// The table of `routes`.
    pub(crate) fn new(routes: &[Route]) -> Self {
        Self(
            routes
                .iter()
                .map(|r| (r.path_prefix.clone(), Arc::from(r.name.as_str())))
                .collect(),
        )
    }

    /// The name of the route `path` is on, if any.
    pub(crate) fn name(&self, path: &str) -> Option<Arc<str>> {
        self.0
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix.as_str()))
            .map(|(_, name)| Arc::clone(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_prefix_names_the_route() {
        let route = |name: &str, prefix: &str| Route {
            name: name.into(),
            path_prefix: prefix.into(),
        };
        let table = RouteTable::new(&[route("checkout", "/api/checkout"), route("api", "/api")]);
        assert_eq!(table.name("/api/checkout/1").as_deref(), Some("checkout"));
        assert_eq!(table.name("/api/cart").as_deref(), Some("api"));
        assert_eq!(table.name("/"), None);
    }
}
