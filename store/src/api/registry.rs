//! The registry of served kinds: every built-in kind, plus the custom resources of established
//! CustomResourceDefinitions.

use super::strategy::Kind;
use bosun_core::{ApiResource, Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

type Gvr = (String, String, String);

/// The kinds a server serves, by group, version and plural.
pub(crate) struct Registry {
    kinds: RwLock<HashMap<Gvr, Arc<Kind>>>,
    /// Served resources in a stable order (built-ins first, then custom ones by registration).
    order: RwLock<Vec<Gvr>>,
    /// The served list as handed out, rebuilt on change.
    snapshot: RwLock<Arc<[ApiResource]>>,
    /// Resources listed in discovery and routed, but served by the API layer without storage (the
    /// metrics API): they have no kind, so `resolve` answers 404 for them.
    unstored: RwLock<Vec<ApiResource>>,
}

fn gvr(r: &ApiResource) -> Gvr {
    (r.group.to_string(), r.version.to_string(), r.plural.to_string())
}

impl Registry {
    /// A registry of every built-in kind.
    pub(crate) fn builtin() -> Self {
        let reg = Self {
            kinds: RwLock::default(),
            order: RwLock::default(),
            snapshot: RwLock::new(Arc::from(Vec::new())),
            unstored: RwLock::default(),
        };
        reg.register(bosun_core::resource::builtin_resources().iter().cloned().map(Kind::builtin).collect());
        reg
    }

    /// Serves these kinds (replacing any with the same group, version and plural).
    pub(crate) fn register(&self, kinds: Vec<Kind>) {
        {
            let mut map = self.kinds.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut order = self.order.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            for k in kinds {
                let id = gvr(&k.resource);
                if map.insert(id.clone(), Arc::new(k)).is_none() {
                    order.push(id);
                }
            }
        }
        self.refresh();
    }

    /// Lists these resources (after the stored kinds) without a kind behind them.
    pub(crate) fn serve_without_storage(&self, resources: Vec<ApiResource>) {
        self.unstored.write().unwrap_or_else(std::sync::PoisonError::into_inner).extend(resources);
        self.refresh();
    }

    /// Stops serving every version of a group and plural.
    pub(crate) fn unregister(&self, group: &str, plural: &str) {
        {
            let mut map = self.kinds.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut order = self.order.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            map.retain(|(g, _, p), _| !(g == group && p == plural));
            order.retain(|(g, _, p)| !(g == group && p == plural));
        }
        self.refresh();
    }

    fn refresh(&self) {
        let map = self.kinds.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let order = self.order.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut list: Vec<ApiResource> = order.iter().filter_map(|id| map.get(id)).map(|k| k.resource.clone()).collect();
        list.extend(self.unstored.read().unwrap_or_else(std::sync::PoisonError::into_inner).iter().cloned());
        *self.snapshot.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::from(list);
    }

    /// The kind a request's resource names; 404 when it is not served.
    pub(crate) fn resolve(&self, r: &ApiResource) -> Result<Arc<Kind>> {
        let map = self.kinds.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Fast path without allocating: compare by reference to the key strings.
        let found = map.iter().find(|((g, v, p), _)| *g == *r.group && *v == *r.version && *p == *r.plural).map(|(_, k)| k.clone());
        found.ok_or_else(|| {
            Error::not_found(&r.group, &r.plural, "")
                .with_message(format!("the server could not find the requested resource ({}.{}/{})", r.plural, r.group, r.version))
        })
    }

    /// A kind by group, version and plural.
    pub(crate) fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<Kind>> {
        let map = self.kinds.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(&(group.to_owned(), version.to_owned(), plural.to_owned())).cloned()
    }

    /// Every served resource.
    pub(crate) fn resources(&self) -> Arc<[ApiResource]> {
        self.snapshot.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// Rewording an error's message.
trait WithMessage {
    fn with_message(self, message: String) -> Self;
}

impl WithMessage for Error {
    fn with_message(self, message: String) -> Self {
        let details = self.body().and_then(|b| b.details.clone());
        Error::NotFound(Box::new(bosun_core::ErrorBody { message, details }))
    }
}
