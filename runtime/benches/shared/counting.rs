//! A `Client` that counts the calls made through it, by verb and resource, so that the bench can
//! say how many API writes the node agents make per pod.

use async_trait::async_trait;
use bosun_core::{
    Client, DeleteParams, Deleted, DynamicObject, ListParams, LogParams, LogStream, ObjectList, Patch, PatchParams, PostParams, Result,
    Target, WatchParams, WatchStream,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Counts calls by `"<verb> <plural>[/<subresource>]"`.
pub struct Counting {
    inner: Arc<dyn Client>,
    counts: Mutex<BTreeMap<String, u64>>,
}

impl Counting {
    pub fn new(inner: Arc<dyn Client>) -> Arc<Self> {
        Arc::new(Self { inner, counts: Mutex::new(BTreeMap::new()) })
    }

    fn count(&self, verb: &str, target: &Target<'_>, sub: Option<&str>) {
        let key = match sub {
            Some(s) => format!("{verb} {}/{s}", target.resource.plural),
            None => format!("{verb} {}", target.resource.plural),
        };
        *self.counts.lock().unwrap_or_else(|p| p.into_inner()).entry(key).or_default() += 1;
    }

    /// Forgets what was counted so far.
    pub fn reset(&self) {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The counts so far.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[async_trait]
impl Client for Counting {
    async fn get(&self, target: Target<'_>, name: &str) -> Result<DynamicObject> {
        self.count("get", &target, None);
        self.inner.get(target, name).await
    }
    async fn list(&self, target: Target<'_>, params: &ListParams) -> Result<ObjectList<DynamicObject>> {
        self.count("list", &target, None);
        self.inner.list(target, params).await
    }
    async fn create(&self, target: Target<'_>, obj: &DynamicObject, params: &PostParams) -> Result<DynamicObject> {
        self.count("create", &target, None);
        self.inner.create(target, obj, params).await
    }
    async fn update(&self, target: Target<'_>, obj: &DynamicObject, params: &PostParams) -> Result<DynamicObject> {
        self.count("update", &target, None);
        self.inner.update(target, obj, params).await
    }
    async fn patch(&self, target: Target<'_>, name: &str, patch: &Patch, params: &PatchParams) -> Result<DynamicObject> {
        self.count("patch", &target, None);
        self.inner.patch(target, name, patch, params).await
    }
    async fn delete(&self, target: Target<'_>, name: &str, params: &DeleteParams) -> Result<Deleted<DynamicObject>> {
        self.count("delete", &target, None);
        self.inner.delete(target, name, params).await
    }
    async fn delete_collection(&self, target: Target<'_>, list: &ListParams, params: &DeleteParams) -> Result<ObjectList<DynamicObject>> {
        self.count("deletecollection", &target, None);
        self.inner.delete_collection(target, list, params).await
    }
    async fn watch(&self, target: Target<'_>, params: &WatchParams) -> Result<WatchStream> {
        self.count("watch", &target, None);
        self.inner.watch(target, params).await
    }
    async fn get_subresource(&self, target: Target<'_>, name: &str, subresource: &str) -> Result<DynamicObject> {
        self.count("get", &target, Some(subresource));
        self.inner.get_subresource(target, name, subresource).await
    }
    async fn update_subresource(
        &self,
        target: Target<'_>,
        name: &str,
        subresource: &str,
        obj: &DynamicObject,
        params: &PostParams,
    ) -> Result<DynamicObject> {
        self.count("update", &target, Some(subresource));
        self.inner.update_subresource(target, name, subresource, obj, params).await
    }
    async fn patch_subresource(
        &self,
        target: Target<'_>,
        name: &str,
        subresource: &str,
        patch: &Patch,
        params: &PatchParams,
    ) -> Result<DynamicObject> {
        self.count("patch", &target, Some(subresource));
        self.inner.patch_subresource(target, name, subresource, patch, params).await
    }
    async fn create_subresource(
        &self,
        target: Target<'_>,
        name: &str,
        subresource: &str,
        body: &serde_json::Value,
        params: &PostParams,
    ) -> Result<serde_json::Value> {
        self.count("create", &target, Some(subresource));
        self.inner.create_subresource(target, name, subresource, body, params).await
    }
    async fn logs(&self, namespace: &str, pod: &str, params: &LogParams) -> Result<LogStream> {
        self.inner.logs(namespace, pod, params).await
    }
}
