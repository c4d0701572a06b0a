//! `Api<K>`: the typed facade over [`Client`] for one kind in one namespace (or all).

use crate::client::{
    Client, DeleteParams, Deleted, ListParams, LogParams, LogStream, Patch, PatchParams, PostParams, Target, WatchEvent, WatchParams,
};
use crate::error::{Error, Result};
use crate::object::{DynamicObject, Object, ObjectList, TypedObject};
use crate::resource::ApiResource;
use futures::{StreamExt, TryStreamExt};
use std::marker::PhantomData;
use std::sync::Arc;

/// A handle on one kind, in one namespace or across all: `get`, `list`, `create`... on typed objects.
pub struct Api<K> {
    client: Arc<dyn Client>,
    resource: Arc<ApiResource>,
    namespace: Option<String>,
    _kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Api<K> {
    fn clone(&self) -> Self {
        Self { client: self.client.clone(), resource: self.resource.clone(), namespace: self.namespace.clone(), _kind: PhantomData }
    }
}

impl<K> std::fmt::Debug for Api<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").field("resource", &self.resource.group_resource()).field("namespace", &self.namespace).finish()
    }
}

impl<K: TypedObject> Api<K> {
    /// Objects of `K` in every namespace (or the cluster-scoped kind).
    pub fn all(client: Arc<dyn Client>) -> Self {
        Self::with_resource(client, K::api_resource(), None)
    }

    /// Objects of `K` in one namespace.
    pub fn namespaced(client: Arc<dyn Client>, namespace: &str) -> Self {
        Self::with_resource(client, K::api_resource(), Some(namespace))
    }
}

impl Api<DynamicObject> {
    /// Objects of any resource, described at run time.
    pub fn dynamic(client: Arc<dyn Client>, resource: ApiResource, namespace: Option<&str>) -> Self {
        Self::with_resource(client, resource, namespace)
    }
}

impl<K: Object> Api<K> {
    /// An `Api` with an explicit descriptor.
    pub fn with_resource(client: Arc<dyn Client>, resource: ApiResource, namespace: Option<&str>) -> Self {
        let namespace = namespace.filter(|_| resource.namespaced).map(str::to_owned);
        Self { client, resource: Arc::new(resource), namespace, _kind: PhantomData }
    }

    /// The same kind in another namespace.
    #[must_use]
    pub fn in_namespace(&self, namespace: &str) -> Self {
        Self { namespace: Some(namespace.to_owned()).filter(|_| self.resource.namespaced), ..self.clone() }
    }

    /// The descriptor of the kind.
    pub fn resource(&self) -> &ApiResource {
        &self.resource
    }

    /// The namespace this handle is bound to.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The client underneath.
    pub fn client(&self) -> &Arc<dyn Client> {
        &self.client
    }

    fn target(&self) -> Target<'_> {
        Target::new(&self.resource, self.namespace.as_deref())
    }

    /// A target for one object: its own namespace when this handle spans all namespaces.
    fn target_for<'a>(&'a self, obj: &'a K) -> Target<'a> {
        Target::new(&self.resource, self.namespace.as_deref().or(obj.namespace()))
    }

    fn encode(&self, obj: &K) -> Result<DynamicObject> {
        let mut dynamic = DynamicObject::from_typed(obj)?;
        if dynamic.types.is_none() {
            dynamic.types = Some(crate::object::TypeMeta::of(&self.resource));
        }
        Ok(dynamic)
    }

    /// Reads one object.
    pub async fn get(&self, name: &str) -> Result<K> {
        self.client.get(self.target(), name).await?.into_typed()
    }

    /// Reads one object, `None` if it does not exist.
    pub async fn get_opt(&self, name: &str) -> Result<Option<K>> {
        match self.get(name).await {
            Ok(k) => Ok(Some(k)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Lists one page (or everything when `limit` is unset).
    pub async fn list(&self, params: &ListParams) -> Result<ObjectList<K>> {
        let list = self.client.list(self.target(), params).await?;
        let items = list.items.into_iter().map(DynamicObject::into_typed).collect::<Result<Vec<K>>>()?;
        Ok(ObjectList { types: list.types, metadata: list.metadata, items })
    }

    /// Lists every page, following continue tokens; the result carries the first page's version.
    pub async fn list_all(&self, params: &ListParams) -> Result<ObjectList<K>> {
        let mut first = self.list(params).await?;
        let mut token = first.continue_token().map(str::to_owned);
        while let Some(t) = token {
            let page = self.list(&params.clone().continue_from(t)).await?;
            token = page.continue_token().map(str::to_owned);
            first.items.extend(page.items);
        }
        first.metadata.continue_ = None;
        Ok(first)
    }

    /// Creates an object.
    pub async fn create(&self, obj: &K, params: &PostParams) -> Result<K> {
        self.client.create(self.target_for(obj), &self.encode(obj)?, params).await?.into_typed()
    }

    /// Replaces an object (409 if its resourceVersion is stale).
    pub async fn replace(&self, obj: &K, params: &PostParams) -> Result<K> {
        self.client.update(self.target_for(obj), &self.encode(obj)?, params).await?.into_typed()
    }

    /// Patches an object.
    pub async fn patch(&self, name: &str, patch: &Patch, params: &PatchParams) -> Result<K> {
        self.client.patch(self.target(), name, patch, params).await?.into_typed()
    }

    /// Deletes an object.
    pub async fn delete(&self, name: &str, params: &DeleteParams) -> Result<Deleted<K>> {
        Ok(match self.client.delete(self.target(), name, params).await? {
            Deleted::Now(d) => Deleted::Now(d.into_typed()?),
            Deleted::Pending(d) => Deleted::Pending(d.into_typed()?),
        })
    }

    /// Deletes every object the list parameters select.
    pub async fn delete_collection(&self, list: &ListParams, params: &DeleteParams) -> Result<Vec<K>> {
        let gone = self.client.delete_collection(self.target(), list, params).await?;
        gone.items.into_iter().map(DynamicObject::into_typed).collect()
    }

    /// Watches for changes.
    pub async fn watch(&self, params: &WatchParams) -> Result<futures::stream::BoxStream<'static, Result<WatchEvent<K>>>> {
        let stream = self.client.watch(self.target(), params).await?;
        Ok(stream.and_then(|ev| futures::future::ready(ev.try_map(DynamicObject::into_typed::<K>))).boxed())
    }

    /// Reads the `status` subresource.
    pub async fn get_status(&self, name: &str) -> Result<K> {
        self.client.get_subresource(self.target(), name, "status").await?.into_typed()
    }

    /// Replaces the `status` subresource (only `.status` is taken from `obj`).
    pub async fn replace_status(&self, obj: &K, params: &PostParams) -> Result<K> {
        self.client.update_subresource(self.target_for(obj), obj.name(), "status", &self.encode(obj)?, params).await?.into_typed()
    }

    /// Patches the `status` subresource.
    pub async fn patch_status(&self, name: &str, patch: &Patch, params: &PatchParams) -> Result<K> {
        self.client.patch_subresource(self.target(), name, "status", patch, params).await?.into_typed()
    }

    /// Reads the `scale` subresource.
    pub async fn get_scale(&self, name: &str) -> Result<k8s_openapi::api::autoscaling::v1::Scale> {
        self.client.get_subresource(self.target(), name, "scale").await?.into_typed()
    }

    /// Patches the `scale` subresource, e.g. `{"spec":{"replicas":3}}` as a merge patch.
    pub async fn patch_scale(&self, name: &str, patch: &Patch, params: &PatchParams) -> Result<k8s_openapi::api::autoscaling::v1::Scale> {
        self.client.patch_subresource(self.target(), name, "scale", patch, params).await?.into_typed()
    }

    /// Posts to a subresource such as `binding` or `eviction`.
    pub async fn create_subresource(
        &self,
        name: &str,
        subresource: &str,
        body: &serde_json::Value,
        params: &PostParams,
    ) -> Result<serde_json::Value> {
        self.client.create_subresource(self.target(), name, subresource, body, params).await
    }
}

/// Binds pod `name` in `namespace` to `node` (`pods/binding`) through `client`, as
/// [`Api::<Pod>::bind`](Api::bind) does, without building an `Api` (a scheduler's hot path).
pub async fn bind_pod(client: &dyn Client, namespace: Option<&str>, name: &str, node: &str) -> Result<()> {
    static PODS: std::sync::LazyLock<ApiResource> = std::sync::LazyLock::new(k8s_openapi::api::core::v1::Pod::api_resource);
    let body = serde_json::json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": namespace},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    client.create_subresource(Target::new(&PODS, namespace), name, "binding", &body, &PostParams::default()).await.map(drop)
}

impl Api<k8s_openapi::api::core::v1::Pod> {
    /// Binds a pod to a node (`pods/binding`), as a scheduler does.
    pub async fn bind(&self, name: &str, node: &str) -> Result<()> {
        bind_pod(&*self.client, self.namespace.as_deref(), name, node).await
    }

    /// Evicts a pod (`pods/eviction`); 429 when a disruption budget forbids it.
    pub async fn evict(&self, name: &str, params: &DeleteParams) -> Result<()> {
        let mut delete_options = serde_json::Map::new();
        if let Some(g) = params.grace_period_seconds {
            delete_options.insert("gracePeriodSeconds".into(), g.into());
        }
        let body = serde_json::json!({
            "apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": name, "namespace": self.namespace},
            "deleteOptions": delete_options,
        });
        self.create_subresource(name, "eviction", &body, &PostParams::default()).await.map(drop)
    }

    /// Streams a container's log.
    pub async fn logs(&self, name: &str, params: &LogParams) -> Result<LogStream> {
        let ns = self.namespace.as_deref().ok_or_else(|| Error::bad_request("pod logs need a namespace"))?;
        self.client.logs(ns, name, params).await
    }
}
