//! Which resources the server serves: the catalog that discovery, OpenAPI and routing read.

use bosun_core::ApiResource;
use std::sync::Arc;

/// The resources an HTTP server serves. Read on every request, so that custom resources
/// registered at run time appear in discovery and routing without a restart.
pub trait ResourceCatalog: Send + Sync + 'static {
    /// Every served resource (built-ins and custom ones).
    fn resources(&self) -> Arc<[ApiResource]>;

    /// The OpenAPI v3 schema of a resource's objects, for kinds the server cannot derive a schema
    /// for itself (custom resources). Default: none, which serves a schema preserving unknown fields.
    fn schema(&self, resource: &ApiResource) -> Option<serde_json::Value> {
        let _ = resource;
        None
    }

    /// The warning every request to this resource's version gets, when the version is
    /// deprecated (a custom resource version marked `deprecated`). Default: none.
    fn deprecation(&self, resource: &ApiResource) -> Option<String> {
        let _ = resource;
        None
    }
}

/// A fixed list of resources; [`StaticCatalog::builtin`] serves every built-in kind.
#[derive(Debug, Clone)]
pub struct StaticCatalog {
    resources: Arc<[ApiResource]>,
}

impl StaticCatalog {
    /// Serves exactly these resources.
    pub fn new(resources: impl IntoIterator<Item = ApiResource>) -> Self {
        Self { resources: resources.into_iter().collect() }
    }

    /// Serves [`bosun_core::resource::builtin_resources`].
    pub fn builtin() -> Self {
        Self::new(bosun_core::resource::builtin_resources().iter().cloned())
    }
}

impl ResourceCatalog for StaticCatalog {
    fn resources(&self) -> Arc<[ApiResource]> {
        self.resources.clone()
    }
}

impl<T: ResourceCatalog> ResourceCatalog for Arc<T> {
    fn resources(&self) -> Arc<[ApiResource]> {
        (**self).resources()
    }

    fn schema(&self, resource: &ApiResource) -> Option<serde_json::Value> {
        (**self).schema(resource)
    }

    fn deprecation(&self, resource: &ApiResource) -> Option<String> {
        (**self).deprecation(resource)
    }
}

/// A catalog read from a function on every request.
pub struct FnCatalog<F>(pub F);

impl<F> ResourceCatalog for FnCatalog<F>
where
    F: Fn() -> Vec<ApiResource> + Send + Sync + 'static,
{
    fn resources(&self) -> Arc<[ApiResource]> {
        (self.0)().into()
    }
}
