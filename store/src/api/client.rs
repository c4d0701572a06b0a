//! `bosun_core::Client` for [`ApiServer`]: each call resolves its kind, then goes to reads,
//! writes, deletes or subresources.

use super::ApiServer;
use super::write::{Change, Create};
use async_trait::async_trait;
use bosun_core::{
    Client, DeleteParams, Deleted, DynamicObject, Error, ListParams, ObjectList, Patch, PatchParams, PostParams, Result, Target,
    WatchParams, WatchStream,
};
use tracing::Instrument;

pub(super) fn verb(target: &Target<'_>, verb: &str) -> Result<()> {
    if target.resource.verbs.is_empty() || target.resource.supports(verb) {
        Ok(())
    } else {
        Err(Error::method_not_allowed(format!("{verb} is not supported on resources of kind \"{}\"", target.resource.plural)))
    }
}

#[async_trait]
impl Client for ApiServer {
    async fn get(&self, target: Target<'_>, name: &str) -> Result<DynamicObject> {
        self.ready().await?;
        if super::metrics::is_metrics(target.resource) {
            return self.metrics_get(target, name).await;
        }
        if super::hpa_v1::is_v1(target.resource) {
            return self.hpa_v1_get(target, name).await;
        }
        let kind = self.registry.resolve(target.resource)?;
        Ok(self.get_object(&kind, target.namespace, name).await?.0)
    }

    async fn list(&self, target: Target<'_>, params: &ListParams) -> Result<ObjectList<DynamicObject>> {
        self.ready().await?;
        if super::metrics::is_metrics(target.resource) {
            return self.metrics_list(target, params).await;
        }
        if super::hpa_v1::is_v1(target.resource) {
            return self.hpa_v1_list(target, params).await;
        }
        let kind = self.registry.resolve(target.resource)?;
        self.list_objects(&kind, target.namespace, params).await
    }

    async fn create(&self, target: Target<'_>, obj: &DynamicObject, params: &PostParams) -> Result<DynamicObject> {
        self.ready().await?;
        verb(&target, "create")?;
        if super::hpa_v1::is_v1(target.resource) {
            return self.hpa_v1_create(target, obj, params).await;
        }
        let kind = self.registry.resolve(target.resource)?;
        let span =
            tracing::debug_span!("create", resource = %kind.resource.plural, object.name = obj.metadata.name.as_deref().unwrap_or(""));
        self.create_object(&kind, target.namespace, obj.clone(), &Create::from_post(params)).instrument(span).await
    }

    async fn update(&self, target: Target<'_>, obj: &DynamicObject, params: &PostParams) -> Result<DynamicObject> {
        self.ready().await?;
        verb(&target, "update")?;
        if super::hpa_v1::is_v1(target.resource) {
            return self.hpa_v1_update(target, obj, params).await;
        }
        let kind = self.registry.resolve(target.resource)?;
        let name = obj
            .metadata
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Error::bad_request("metadata.name is required for update"))?;
        let ns = target.namespace.or(obj.metadata.namespace.as_deref()).filter(|_| kind.resource.namespaced).map(str::to_owned);
        let change = Change {
            subresource: None,
            dry_run: params.dry_run,
            validation: params.field_validation,
            manager: params.field_manager.as_deref(),
            applied: false,
            patched: false,
        };
        self.update_object(&kind, ns.as_deref(), &name, change, &|_| Ok(obj.clone())).await
    }

    async fn patch(&self, target: Target<'_>, name: &str, patch: &Patch, params: &PatchParams) -> Result<DynamicObject> {
        self.ready().await?;
        verb(&target, "patch")?;
        let kind = self.registry.resolve(target.resource)?;
        self.patch_object(&kind, target.namespace, name, None, patch, params, None).await
    }

    async fn delete(&self, target: Target<'_>, name: &str, params: &DeleteParams) -> Result<Deleted<DynamicObject>> {
        self.ready().await?;
        verb(&target, "delete")?;
        if super::hpa_v1::is_v1(target.resource) {
            return self.hpa_v1_delete(target, name, params).await;
        }
        let kind = self.registry.resolve(target.resource)?;
        self.delete_object(&kind, target.namespace, name, params).await
    }

    async fn delete_collection(&self, target: Target<'_>, list: &ListParams, params: &DeleteParams) -> Result<ObjectList<DynamicObject>> {
        self.ready().await?;
        verb(&target, "deletecollection")?;
        let kind = self.registry.resolve(target.resource)?;
        let mut listed =
            self.list_objects(&kind, target.namespace, &ListParams { limit: None, continue_token: None, ..list.clone() }).await?;
        let mut items = Vec::with_capacity(listed.items.len());
        for obj in &listed.items {
            let name = obj.metadata.name.clone().unwrap_or_default();
            match self.delete_object(&kind, obj.metadata.namespace.as_deref(), &name, params).await {
                Ok(d) => items.push(d.into_inner()),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        listed.items = items;
        Ok(listed)
    }

    async fn watch(&self, target: Target<'_>, params: &WatchParams) -> Result<WatchStream> {
        self.ready().await?;
        verb(&target, "watch")?;
        let kind = self.registry.resolve(target.resource)?;
        self.watch_objects(&kind, target.namespace, params).await
    }

    async fn get_subresource(&self, target: Target<'_>, name: &str, subresource: &str) -> Result<DynamicObject> {
        self.ready().await?;
        let kind = self.registry.resolve(target.resource)?;
        self.get_sub(&kind, target.namespace, name, subresource).await
    }

    async fn update_subresource(
        &self,
        target: Target<'_>,
        name: &str,
        subresource: &str,
        obj: &DynamicObject,
        params: &PostParams,
    ) -> Result<DynamicObject> {
        self.ready().await?;
        let kind = self.registry.resolve(target.resource)?;
        let ns = target.namespace.or(obj.metadata.namespace.as_deref()).filter(|_| kind.resource.namespaced).map(str::to_owned);
        self.update_sub(&kind, ns.as_deref(), name, subresource, obj, params).await
    }

    async fn patch_subresource(
        &self,
        target: Target<'_>,
        name: &str,
        subresource: &str,
        patch: &Patch,
        params: &PatchParams,
    ) -> Result<DynamicObject> {
        self.ready().await?;
        let kind = self.registry.resolve(target.resource)?;
        self.patch_sub(&kind, target.namespace, name, subresource, patch, params).await
    }

    async fn create_subresource(
        &self,
        target: Target<'_>,
        name: &str,
        subresource: &str,
        body: &serde_json::Value,
        params: &PostParams,
    ) -> Result<serde_json::Value> {
        self.ready().await?;
        let kind = self.registry.resolve(target.resource)?;
        let ns = target
            .namespace
            .or_else(|| body.get("metadata").and_then(|m| m.get("namespace")).and_then(|n| n.as_str()))
            .filter(|_| kind.resource.namespaced)
            .map(str::to_owned);
        let is_pods = kind.resource.group.is_empty() && kind.resource.plural == "pods";
        match subresource {
            "binding" if is_pods => self.bind(&kind, ns.as_deref(), name, body, params).await,
            "eviction" if is_pods => self.evict(&kind, ns.as_deref(), name, body, params).await,
            other => Err(Error::method_not_allowed(format!("create is not supported on {}/{other}", kind.resource.plural))),
        }
    }

    async fn logs(&self, namespace: &str, pod: &str, params: &bosun_core::LogParams) -> Result<bosun_core::LogStream> {
        self.ready().await?;
        let res = bosun_core::resource::builtin("", "v1", "Pod").ok_or_else(|| Error::internal("pods are not served"))?;
        let kind = self.registry.resolve(res)?;
        // The pod must exist; the node connection does the rest.
        self.get_object(&kind, Some(namespace), pod).await?;
        match self.nodes.as_ref() {
            Some(nodes) => nodes.logs(namespace, pod, params).await,
            None => Err(Error::method_not_allowed("this server has no node connection to serve pod logs")),
        }
    }
}
