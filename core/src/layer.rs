//! Client layers: behaviour around every call of any [`Client`] (timing, counting, fault injection,
//! rate limits) written once, as one [`Layer::call`], instead of a delegating implementation of
//! all of `Client`'s methods per wrapper.
//!
//! ```
//! use bosun_core::layer::{Call, Layer, Layered};
//! use bosun_core::Result;
//! use futures::future::BoxFuture;
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! /// Counts the writes made through it.
//! #[derive(Default)]
//! struct CountWrites(AtomicU64);
//!
//! impl Layer for CountWrites {
//!     fn call<'a, T: Send + 'a>(&'a self, call: Call<'a>, next: BoxFuture<'a, Result<T>>) -> BoxFuture<'a, Result<T>> {
//!         if call.verb.is_write() {
//!             self.0.fetch_add(1, Ordering::Relaxed);
//!         }
//!         next
//!     }
//! }
//! # fn wrap(inner: std::sync::Arc<dyn bosun_core::Client>) -> Layered<CountWrites> {
//! Layered::new(inner, CountWrites::default())
//! # }
//! ```

use crate::client::{Deleted, LogStream, WatchStream};
use crate::{
    Client, DeleteParams, DynamicObject, ListParams, LogParams, ObjectList, Patch, PatchParams, PostParams, Result, Target, WatchParams,
};
use async_trait::async_trait;
use futures::future::BoxFuture;
use std::sync::Arc;

/// What kind of call a [`Call`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Verb {
    /// `get`, `get_subresource`.
    Get,
    /// `list`.
    List,
    /// `create`, `create_subresource` (bindings, evictions).
    Create,
    /// `update`, `update_subresource`.
    Update,
    /// `patch`, `patch_subresource`.
    Patch,
    /// `delete`.
    Delete,
    /// `delete_collection`.
    DeleteCollection,
    /// `watch`.
    Watch,
    /// `logs` (a `get` of `pods/log`).
    Logs,
}

impl Verb {
    /// Whether the call writes: create, update, patch, delete, deletecollection.
    pub fn is_write(self) -> bool {
        matches!(self, Self::Create | Self::Update | Self::Patch | Self::Delete | Self::DeleteCollection)
    }

    /// The Kubernetes name of the verb (`get`, `list`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`, `watch`; logs are a `get`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get | Self::Logs => "get",
            Self::List => "list",
            Self::Create => "create",
            Self::Update => "update",
            Self::Patch => "patch",
            Self::Delete => "delete",
            Self::DeleteCollection => "deletecollection",
            Self::Watch => "watch",
        }
    }
}

/// One call through a [`Layered`] client, as its [`Layer`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// What kind of call.
    pub verb: Verb,
    /// The resource's API group (empty for the core group).
    pub group: &'a str,
    /// The resource's plural (`pods`).
    pub plural: &'a str,
    /// The namespace, for namespaced calls.
    pub namespace: Option<&'a str>,
    /// The object's name, for calls on one object.
    pub name: Option<&'a str>,
    /// The subresource (`status`, `scale`, `binding`, `eviction`, `log`).
    pub subresource: Option<&'a str>,
}

impl<'a> Call<'a> {
    fn new(verb: Verb, target: &Target<'a>, name: Option<&'a str>, subresource: Option<&'a str>) -> Self {
        let resource = target.resource;
        Self { verb, group: &resource.group, plural: &resource.plural, namespace: target.namespace, name, subresource }
    }
}

/// Behaviour around every call of a wrapped client; see the [module docs](self).
pub trait Layer: Send + Sync + 'static {
    /// Runs one call. `next` is the wrapped client's call, not yet started: a layer may act before
    /// and after awaiting it, or answer without it (an injected error). The default runs it as is.
    fn call<'a, T: Send + 'a>(&'a self, call: Call<'a>, next: BoxFuture<'a, Result<T>>) -> BoxFuture<'a, Result<T>> {
        let _ = call;
        next
    }

    /// Wraps the event stream of a watch that started (the default passes it on as is).
    fn watch_stream(&self, call: Call<'_>, stream: WatchStream) -> WatchStream {
        let _ = call;
        stream
    }
}

/// A [`Client`] that runs every call of another one through a [`Layer`].
pub struct Layered<L> {
    inner: Arc<dyn Client>,
    layer: L,
}

impl<L: Layer> Layered<L> {
    /// Wraps `inner` in `layer`.
    pub fn new(inner: Arc<dyn Client>, layer: L) -> Self {
        Self { inner, layer }
    }

    /// The layer (for what it recorded).
    pub fn layer(&self) -> &L {
        &self.layer
    }

    /// The wrapped client.
    pub fn inner(&self) -> &Arc<dyn Client> {
        &self.inner
    }
}

impl<L: std::fmt::Debug> std::fmt::Debug for Layered<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layered").field("layer", &self.layer).finish_non_exhaustive()
    }
}

#[async_trait]
impl<L: Layer> Client for Layered<L> {
    async fn get(&self, target: Target<'_>, name: &str) -> Result<DynamicObject> {
        self.layer.call(Call::new(Verb::Get, &target, Some(name), None), self.inner.get(target, name)).await
    }

    async fn list(&self, target: Target<'_>, params: &ListParams) -> Result<ObjectList<DynamicObject>> {
        self.layer.call(Call::new(Verb::List, &target, None, None), self.inner.list(target, params)).await
    }

    async fn create(&self, target: Target<'_>, obj: &DynamicObject, params: &PostParams) -> Result<DynamicObject> {
        let name = obj.metadata.name.as_deref();
        self.layer.call(Call::new(Verb::Create, &target, name, None), self.inner.create(target, obj, params)).await
    }

    async fn update(&self, target: Target<'_>, obj: &DynamicObject, params: &PostParams) -> Result<DynamicObject> {
        let name = obj.metadata.name.as_deref();
        self.layer.call(Call::new(Verb::Update, &target, name, None), self.inner.update(target, obj, params)).await
    }

    async fn patch(&self, target: Target<'_>, name: &str, patch: &Patch, params: &PatchParams) -> Result<DynamicObject> {
        self.layer.call(Call::new(Verb::Patch, &target, Some(name), None), self.inner.patch(target, name, patch, params)).await
    }

    async fn delete(&self, target: Target<'_>, name: &str, params: &DeleteParams) -> Result<Deleted<DynamicObject>> {
        self.layer.call(Call::new(Verb::Delete, &target, Some(name), None), self.inner.delete(target, name, params)).await
    }

    async fn delete_collection(&self, target: Target<'_>, list: &ListParams, params: &DeleteParams) -> Result<ObjectList<DynamicObject>> {
        let call = Call::new(Verb::DeleteCollection, &target, None, None);
        self.layer.call(call, self.inner.delete_collection(target, list, params)).await
    }

    async fn watch(&self, target: Target<'_>, params: &WatchParams) -> Result<WatchStream> {
        let call = Call::new(Verb::Watch, &target, None, None);
        let stream = self.layer.call(call, self.inner.watch(target, params)).await?;
        Ok(self.layer.watch_stream(call, stream))
    }

    async fn get_subresource(&self, target: Target<'_>, name: &str, subresource: &str) -> Result<DynamicObject> {
        let call = Call::new(Verb::Get, &target, Some(name), Some(subresource));
        self.layer.call(call, self.inner.get_subresource(target, name, subresource)).await
    }

    async fn update_subresource(
        &self,
        target: Target<'_>,
        name: &str,
        subresource: &str,
        obj: &DynamicObject,
        params: &PostParams,
    ) -> Result<DynamicObject> {
        let call = Call::new(Verb::Update, &target, Some(name), Some(subresource));
        self.layer.call(call, self.inner.update_subresource(target, name, subresource, obj, params)).await
    }

    async fn patch_subresource(
        &self,
        target: Target<'_>,
        name: &str,
        subresource: &str,
        patch: &Patch,
        params: &PatchParams,
    ) -> Result<DynamicObject> {
        let call = Call::new(Verb::Patch, &target, Some(name), Some(subresource));
        self.layer.call(call, self.inner.patch_subresource(target, name, subresource, patch, params)).await
    }

    async fn create_subresource(
        &self,
        target: Target<'_>,
        name: &str,
        subresource: &str,
        body: &serde_json::Value,
        params: &PostParams,
    ) -> Result<serde_json::Value> {
        let call = Call::new(Verb::Create, &target, Some(name), Some(subresource));
        self.layer.call(call, self.inner.create_subresource(target, name, subresource, body, params)).await
    }

    async fn logs(&self, namespace: &str, pod: &str, params: &LogParams) -> Result<LogStream> {
        let call =
            Call { verb: Verb::Logs, group: "", plural: "pods", namespace: Some(namespace), name: Some(pod), subresource: Some("log") };
        self.layer.call(call, self.inner.logs(namespace, pod, params)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use std::sync::Mutex;

    /// Records each call and fails writes to `secrets`.
    #[derive(Default)]
    struct Script(Mutex<Vec<String>>);

    impl Layer for Script {
        fn call<'a, T: Send + 'a>(&'a self, call: Call<'a>, next: BoxFuture<'a, Result<T>>) -> BoxFuture<'a, Result<T>> {
            Box::pin(async move {
                let line = format!(
                    "{} {}{} {}/{}",
                    call.verb.as_str(),
                    call.plural,
                    call.subresource.map(|s| format!("/{s}")).unwrap_or_default(),
                    call.namespace.unwrap_or("-"),
                    call.name.unwrap_or("-")
                );
                self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(line);
                if call.verb.is_write() && call.plural == "secrets" {
                    return Err(Error::forbidden("no secrets here"));
                }
                next.await
            })
        }
    }

    /// A client that answers every call with 404, naming what was asked.
    struct Nothing;

    #[async_trait]
    impl Client for Nothing {
        async fn get(&self, t: Target<'_>, name: &str) -> Result<DynamicObject> {
            Err(Error::not_found(&t.resource.group, &t.resource.plural, name))
        }
        async fn list(&self, _: Target<'_>, _: &ListParams) -> Result<ObjectList<DynamicObject>> {
            Err(Error::not_found("", "list", ""))
        }
        async fn create(&self, _: Target<'_>, _: &DynamicObject, _: &PostParams) -> Result<DynamicObject> {
            Err(Error::not_found("", "create", ""))
        }
        async fn update(&self, _: Target<'_>, _: &DynamicObject, _: &PostParams) -> Result<DynamicObject> {
            Err(Error::not_found("", "update", ""))
        }
        async fn patch(&self, _: Target<'_>, _: &str, _: &Patch, _: &PatchParams) -> Result<DynamicObject> {
            Err(Error::not_found("", "patch", ""))
        }
        async fn delete(&self, _: Target<'_>, _: &str, _: &DeleteParams) -> Result<Deleted<DynamicObject>> {
            Err(Error::not_found("", "delete", ""))
        }
        async fn delete_collection(&self, _: Target<'_>, _: &ListParams, _: &DeleteParams) -> Result<ObjectList<DynamicObject>> {
            Err(Error::not_found("", "deletecollection", ""))
        }
        async fn watch(&self, _: Target<'_>, _: &WatchParams) -> Result<WatchStream> {
            Err(Error::not_found("", "watch", ""))
        }
        async fn get_subresource(&self, _: Target<'_>, _: &str, _: &str) -> Result<DynamicObject> {
            Err(Error::not_found("", "getsub", ""))
        }
        async fn update_subresource(&self, _: Target<'_>, _: &str, _: &str, _: &DynamicObject, _: &PostParams) -> Result<DynamicObject> {
            Err(Error::not_found("", "updatesub", ""))
        }
        async fn patch_subresource(&self, _: Target<'_>, _: &str, _: &str, _: &Patch, _: &PatchParams) -> Result<DynamicObject> {
            Err(Error::not_found("", "patchsub", ""))
        }
        async fn create_subresource(
            &self,
            _: Target<'_>,
            _: &str,
            _: &str,
            _: &serde_json::Value,
            _: &PostParams,
        ) -> Result<serde_json::Value> {
            Err(Error::not_found("", "createsub", ""))
        }
    }

    #[tokio::test]
    async fn a_layer_sees_every_call_and_can_answer_without_the_inner_client() {
        let client = Layered::new(Arc::new(Nothing), Script::default());
        let pods = crate::resource::builtin("", "v1", "Pod").expect("pods").clone();
        let secrets = crate::resource::builtin("", "v1", "Secret").expect("secrets").clone();
        let err = client.get(Target::new(&pods, Some("ns")), "web").await.expect_err("inner answers 404");
        assert!(err.is_not_found(), "{err}");
        let patch = Patch::Merge(serde_json::json!({}));
        let err = client.patch_subresource(Target::new(&pods, Some("ns")), "web", "status", &patch, &PatchParams::default()).await;
        assert!(err.expect_err("inner").is_not_found());
        let err = client.delete(Target::new(&secrets, Some("ns")), "key", &DeleteParams::default()).await.expect_err("layer refuses");
        assert_eq!(err.code(), 403, "the layer answered, not the inner client: {err}");
        let err = client.logs("ns", "web", &LogParams::default()).await.map(|_| ()).expect_err("Nothing serves no logs");
        assert_eq!(err.code(), 405);
        assert_eq!(
            *client.layer().0.lock().expect("lock"),
            ["get pods ns/web", "patch pods/status ns/web", "delete secrets ns/key", "get pods/log ns/web"]
        );
    }
}
