//! Route names for metrics, by path prefix.

use std::sync::Arc;

/// Route names for metrics: the first path prefix that matches names the route, so labels stay
/// bounded however many distinct paths arrive. Cheap to clone (shared).
///
/// ```
/// use mesh_core::route::RouteTable;
///
/// let table = RouteTable::new([("/api/checkout", "checkout"), ("/api", "api")]);
/// assert_eq!(table.name("/api/checkout/1").as_deref(), Some("checkout"));
/// assert_eq!(table.name("/api/cart").as_deref(), Some("api"));
/// assert_eq!(table.name("/"), None);
/// ```
#[derive(Clone, Debug, Default)]
pub struct RouteTable(Arc<[(String, Arc<str>)]>);

impl RouteTable {
    /// The table of `(path prefix, route name)` pairs, matched in this order.
    pub fn new<P: Into<String>, N: AsRef<str>>(routes: impl IntoIterator<Item = (P, N)>) -> Self {
        Self(
            routes
                .into_iter()
                .map(|(prefix, name)| (prefix.into(), Arc::from(name.as_ref())))
                .collect(),
        )
    }

    /// The name of the route `path` is on, if any.
    pub fn name(&self, path: &str) -> Option<Arc<str>> {
        self.0
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix.as_str()))
            .map(|(_, name)| Arc::clone(name))
    }
}
