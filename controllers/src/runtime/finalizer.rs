//! The finalizer helper: adds a finalizer to live objects, runs cleanup once they are being
//! deleted, and removes the finalizer when cleanup succeeds, so the object can go.

use super::controller::Action;
use bosun_core::meta::{has_finalizer, is_deleting};
use bosun_core::{Api, Object, Patch, PatchParams};
use std::future::Future;
use std::sync::Arc;

/// What the finalizer helper asks the caller to do.
#[derive(Debug)]
pub enum FinalizerEvent<K> {
    /// The object is live (and carries the finalizer): reconcile it.
    Apply(Arc<K>),
    /// The object is being deleted: release what it holds; on success the finalizer is removed.
    Cleanup(Arc<K>),
}

/// Why the finalizer helper failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FinalizerError<E: std::error::Error + 'static> {
    /// The apply or cleanup callback failed.
    #[error("{0}")]
    Callback(#[source] E),
    /// Adding the finalizer failed.
    #[error("add finalizer: {0}")]
    Add(#[source] bosun_core::Error),
    /// Removing the finalizer failed.
    #[error("remove finalizer: {0}")]
    Remove(#[source] bosun_core::Error),
    /// The object has no name.
    #[error("object has no name")]
    Unnamed,
}

/// Runs `callback` under finalizer `name`: adds it to live objects first (the change re-triggers
/// the reconcile), calls [`FinalizerEvent::Cleanup`] for deleting objects that still carry it and
/// then removes it. Deleting objects without it are left alone.
///
/// Adding is a merge patch guarded by the resourceVersion, removing a JSON patch guarded by a
/// `test` of the entry, so a concurrent change turns into a conflict and a retry, not a lost update.
pub async fn finalizer<K, E, F, Fut>(api: &Api<K>, name: &str, obj: Arc<K>, callback: F) -> Result<Action, FinalizerError<E>>
where
    K: Object,
    E: std::error::Error + 'static,
    F: FnOnce(FinalizerEvent<K>) -> Fut,
    Fut: Future<Output = Result<Action, E>>,
{
    let meta = obj.meta();
    let object_name = meta.name.clone().ok_or(FinalizerError::Unnamed)?;
    let present = has_finalizer(meta, name);
    let api = api.in_namespace(obj.namespace().unwrap_or_default());
    match (is_deleting(meta), present) {
        (false, true) => callback(FinalizerEvent::Apply(obj)).await.map_err(FinalizerError::Callback),
        (false, false) => {
            // A merge patch guarded by the resourceVersion: a concurrent change is a 409 and a retry.
            let mut list = meta.finalizers.clone().unwrap_or_default();
            list.push(name.to_owned());
            let patch = serde_json::json!({"metadata": {"finalizers": list, "resourceVersion": meta.resource_version}});
            api.patch(&object_name, &Patch::Merge(patch), &PatchParams::default()).await.map_err(FinalizerError::Add)?;
            Ok(Action::await_change())
        }
        (true, true) => {
            let action = callback(FinalizerEvent::Cleanup(obj.clone())).await.map_err(FinalizerError::Callback)?;
            let list = meta.finalizers.clone().unwrap_or_default();
            let Some(index) = list.iter().position(|f| f == name) else { return Ok(action) };
            let patch = serde_json::json!([
                {"op": "test", "path": format!("/metadata/finalizers/{index}"), "value": name},
                {"op": "remove", "path": format!("/metadata/finalizers/{index}")},
            ]);
            match api.patch(&object_name, &Patch::Json(patch), &PatchParams::default()).await {
                Ok(_) => Ok(Action::await_change()),
                Err(e) if e.is_not_found() => Ok(Action::await_change()),
                Err(e) => Err(FinalizerError::Remove(e)),
            }
        }
        (true, false) => Ok(Action::await_change()),
    }
}
