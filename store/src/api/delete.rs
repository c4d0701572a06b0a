//! Deletion: preconditions, graceful deletion of pods, finalizers and propagation policies.

use super::ApiServer;
use super::admission::{Attributes, Operation};
use super::codec;
use super::strategy::{Kind, Rules};
use crate::storage::StorageError;
use bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use bosun_core::k8s_openapi::jiff::{SignedDuration, Timestamp};
use bosun_core::{DeleteParams, Deleted, DynamicObject, Error, PropagationPolicy, Result};
use serde_json::Value;
use std::sync::Arc;

/// The finalizer that keeps an owner until its dependents are gone (foreground deletion).
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
/// The finalizer that keeps an owner until its dependents are orphaned.
pub const ORPHAN_FINALIZER: &str = "orphan";

/// The grace period a pod delete uses: the request's, else the pod's own; unscheduled and
/// finished pods go at once.
fn pod_grace(obj: &DynamicObject, requested: Option<u32>) -> i64 {
    let scheduled = obj.path_str("spec.nodeName").is_some_and(|n| !n.is_empty());
    let phase = obj.path_str("status.phase");
    if !scheduled || matches!(phase.as_deref(), Some("Succeeded" | "Failed")) {
        return 0;
    }
    match requested {
        Some(g) => i64::from(g),
        None => obj.data.get("spec").and_then(|s| s.get("terminationGracePeriodSeconds")).and_then(Value::as_i64).unwrap_or(30).max(0),
    }
}

fn set_finalizers_for(policy: Option<PropagationPolicy>, finalizers: &mut Vec<String>) {
    let has = |f: &Vec<String>, n: &str| f.iter().any(|x| x == n);
    match policy {
        Some(PropagationPolicy::Foreground) => {
            finalizers.retain(|f| f != ORPHAN_FINALIZER);
            if !has(finalizers, FOREGROUND_FINALIZER) {
                finalizers.push(FOREGROUND_FINALIZER.into());
            }
        }
        Some(PropagationPolicy::Orphan) => {
            finalizers.retain(|f| f != FOREGROUND_FINALIZER);
            if !has(finalizers, ORPHAN_FINALIZER) {
                finalizers.push(ORPHAN_FINALIZER.into());
            }
        }
        Some(PropagationPolicy::Background) => finalizers.retain(|f| f != FOREGROUND_FINALIZER && f != ORPHAN_FINALIZER),
        None => {}
    }
}

impl ApiServer {
    /// Deletes an object, or begins its graceful deletion.
    pub(crate) async fn delete_object(
        &self,
        kind: &Arc<Kind>,
        namespace: Option<&str>,
        name: &str,
        params: &DeleteParams,
    ) -> Result<Deleted<DynamicObject>> {
        let ns = namespace.filter(|_| kind.resource.namespaced);
        let key = codec::key(&kind.resource, ns, name);
        for _ in 0..32 {
            let Some(kv) = self.storage.get(&key).await.map_err(codec::storage_error)? else {
                return Err(Error::not_found(&kind.resource.group, &kind.resource.plural, name));
            };
            let current = codec::decode(&kv.value, kv.mod_revision)?;
            if let Some(pre) = params.preconditions.as_ref() {
                if let Some(uid) = pre.uid.as_deref()
                    && current.metadata.uid.as_deref() != Some(uid)
                {
                    return Err(Error::conflict(format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        current.metadata.uid.as_deref().unwrap_or("")
                    )));
                }
                if let Some(rv) = pre.resource_version.as_deref()
                    && rv != kv.mod_revision.to_string()
                {
                    return Err(Error::conflict(format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        kv.mod_revision
                    )));
                }
            }
            let attrs = Attributes {
                operation: Operation::Delete,
                resource: &kind.resource,
                subresource: None,
                namespace: ns,
                name,
                dry_run: params.dry_run,
            };
            self.admit_validate(&attrs, &current, None).await?;

            let mut obj = current.clone();
            let mut finalizers = obj.metadata.finalizers.clone().unwrap_or_default();
            set_finalizers_for(params.propagation_policy, &mut finalizers);
            let grace = if kind.rules == Rules::Pod { pod_grace(&current, params.grace_period_seconds) } else { 0 };
            let namespace_waits = kind.rules == Rules::Namespace
                && obj.data.get("spec").and_then(|s| s.get("finalizers")).and_then(Value::as_array).is_some_and(|f| !f.is_empty());
            let deleting = current.metadata.deletion_timestamp.is_some();
            let pending = !finalizers.is_empty() || grace > 0 || namespace_waits;
            if !pending {
                if params.dry_run {
                    return Ok(Deleted::Now(current));
                }
                match self.storage.delete(&key, Some(kv.mod_revision)).await {
                    Ok(_) => {
                        self.on_removed(kind, &current).await;
                        let mut gone = current;
                        self.present(kind, &mut gone);
                        return Ok(Deleted::Now(gone));
                    }
                    Err(StorageError::Conflict { .. }) => continue,
                    Err(StorageError::NotFound { .. }) => return Err(Error::not_found(&kind.resource.group, &kind.resource.plural, name)),
                    Err(e) => return Err(codec::storage_error(e)),
                }
            }
            obj.metadata.finalizers = (!finalizers.is_empty()).then_some(finalizers);
            let now_ts = self.now();
            if !deleting {
                let at = if grace > 0 { Time(now_ts.0.checked_add(SignedDuration::from_secs(grace)).unwrap_or(now_ts.0)) } else { now_ts };
                obj.metadata.deletion_timestamp = Some(at);
                obj.metadata.deletion_grace_period_seconds = Some(grace);
            } else if kind.rules == Rules::Pod {
                // A second delete may only shorten the grace period.
                let current_grace = current.metadata.deletion_grace_period_seconds.unwrap_or(0);
                if grace < current_grace {
                    let at = Time(now_ts.0.checked_add(SignedDuration::from_secs(grace)).unwrap_or(now_ts.0));
                    obj.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(at.0.as_second()).unwrap_or(at.0)));
                    obj.metadata.deletion_grace_period_seconds = Some(grace);
                }
            }
            if kind.rules == Rules::Namespace
                && let Some(s) = obj
                    .data
                    .as_object_mut()
                    .map(|m| m.entry("status").or_insert_with(|| Value::Object(Default::default())))
                    .and_then(Value::as_object_mut)
            {
                s.insert("phase".into(), "Terminating".into());
            }
            // A pod whose grace period is over and that has no finalizers goes now.
            let expired =
                kind.rules == Rules::Pod && obj.metadata.deletion_grace_period_seconds == Some(0) && obj.metadata.finalizers.is_none();
            if expired {
                if params.dry_run {
                    return Ok(Deleted::Now(current));
                }
                match self.storage.delete(&key, Some(kv.mod_revision)).await {
                    Ok(_) => {
                        self.on_removed(kind, &current).await;
                        let mut gone = current;
                        self.present(kind, &mut gone);
                        return Ok(Deleted::Now(gone));
                    }
                    Err(StorageError::Conflict { .. }) => continue,
                    Err(StorageError::NotFound { .. }) => return Err(Error::not_found(&kind.resource.group, &kind.resource.plural, name)),
                    Err(e) => return Err(codec::storage_error(e)),
                }
            }
            if obj.metadata == current.metadata && obj.data == current.data {
                let mut same = current;
                self.present(kind, &mut same);
                return Ok(Deleted::Pending(same));
            }
            if params.dry_run {
                return Ok(Deleted::Pending(obj));
            }
            let bytes = codec::encode(&mut obj)?;
            match self.storage.update(&key, bytes, kv.mod_revision, None).await {
                Ok(new) => {
                    obj.metadata.resource_version = Some(new.mod_revision.to_string());
                    self.present(kind, &mut obj);
                    return Ok(Deleted::Pending(obj));
                }
                Err(StorageError::Conflict { .. }) => continue,
                Err(StorageError::NotFound { .. }) => return Err(Error::not_found(&kind.resource.group, &kind.resource.plural, name)),
                Err(e) => return Err(codec::storage_error(e)),
            }
        }
        Err(Error::conflict(format!("too many concurrent writes to {} \"{name}\"; try again", kind.resource.plural)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propagation_policies_become_finalizers() {
        let mut f = vec!["example.com/keep".to_owned()];
        set_finalizers_for(Some(PropagationPolicy::Foreground), &mut f);
        assert_eq!(f, ["example.com/keep", FOREGROUND_FINALIZER]);
        set_finalizers_for(Some(PropagationPolicy::Orphan), &mut f);
        assert_eq!(f, ["example.com/keep", ORPHAN_FINALIZER]);
        set_finalizers_for(Some(PropagationPolicy::Background), &mut f);
        assert_eq!(f, ["example.com/keep"]);
    }
}
