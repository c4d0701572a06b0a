//! The namespace lifecycle controller: when a namespace is deleted, deletes everything in it,
//! then removes the `kubernetes` finalizer so the namespace itself goes.

use super::Shared;
use crate::runtime::{Action, Controller};
use bosun_core::meta::is_deleting;
use bosun_core::resource::builtin_resources;
use bosun_core::{Api, DeleteParams, Error, ListParams, Object, PostParams, Target};
use k8s_openapi::api::core::v1::Namespace;
use std::sync::Arc;
use std::time::Duration;

/// The finalizer in `spec.finalizers` that holds a namespace until its content is gone.
pub const KUBERNETES_FINALIZER: &str = "kubernetes";

/// The namespace controller's state.
pub struct NamespaceCtx {
    shared: Shared,
}

/// Builds the namespace controller on `shared`'s informers.
pub fn controller(shared: &Shared) -> (Controller<Namespace>, Arc<NamespaceCtx>) {
    let c = shared.controller(Api::<Namespace>::all(shared.client.clone()), "namespace");
    (c, Arc::new(NamespaceCtx { shared: shared.clone() }))
}

/// Reconciles one Namespace.
pub async fn reconcile(ns: Arc<Namespace>, ctx: Arc<NamespaceCtx>) -> Result<Action, Error> {
    if !is_deleting(ns.meta()) {
        return Ok(Action::await_change());
    }
    let finalizers = ns.spec.as_ref().and_then(|s| s.finalizers.clone()).unwrap_or_default();
    if !finalizers.iter().any(|f| f == KUBERNETES_FINALIZER) {
        return Ok(Action::await_change());
    }
    let name = ns.name().to_owned();
    let mut remaining = 0usize;
    for resource in builtin_resources().iter().filter(|r| r.namespaced && r.supports("list") && r.supports("delete")) {
        let target = Target::new(resource, Some(&name));
        let list = match ctx.shared.client.list(target, &ListParams::default()).await {
            Ok(l) => l,
            Err(e) if matches!(e.code(), 404 | 405) => continue,
            Err(e) => return Err(e),
        };
        if list.items.is_empty() {
            continue;
        }
        remaining += list.items.len();
        if resource.supports("deletecollection") {
            match ctx.shared.client.delete_collection(target, &ListParams::default(), &DeleteParams::background()).await {
                Ok(_) => continue,
                Err(e) if !matches!(e.code(), 404 | 405) => return Err(e),
                Err(_) => {}
            }
        }
        for item in list.items.iter().filter(|i| !is_deleting(i.meta())) {
            match ctx.shared.client.delete(target, item.name(), &DeleteParams::background()).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
    }
    if remaining > 0 {
        tracing::debug!(namespace = %name, remaining, "namespace content remains");
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let mut done = (*ns).clone();
    if let Some(spec) = done.spec.as_mut() {
        spec.finalizers = Some(finalizers.into_iter().filter(|f| f != KUBERNETES_FINALIZER).collect());
    }
    let api = Api::<Namespace>::all(ctx.shared.client.clone());
    let body = bosun_core::DynamicObject::from_typed(&done)?;
    let resource = api.resource().clone();
    let finalize =
        ctx.shared.client.update_subresource(Target::new(&resource, None), &name, "finalize", &body, &PostParams::default()).await;
    match finalize {
        Ok(_) => {}
        Err(e) if e.is_not_found() && ctx.shared.client.get(Target::new(&resource, None), &name).await.is_err() => {}
        // A server without the finalize subresource: update the namespace instead.
        Err(e) if matches!(e.code(), 404 | 405) => {
            super::ignore_not_found(api.replace(&done, &PostParams::default()).await)?;
        }
        Err(e) => return Err(e),
    }
    Ok(Action::await_change())
}
