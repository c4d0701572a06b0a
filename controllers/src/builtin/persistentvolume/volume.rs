//! The volume loop: phases (Available, Bound, Released, Failed), unbinding volumes whose claim
//! went to another volume, and reclaiming volumes whose claim is gone.

use super::{ANN_BOUND_BY_CONTROLLER, ANN_PROVISIONED_BY, LOCAL_PATH_PROVISIONER, PvCtx};
use crate::builtin::ignore_not_found;
use crate::runtime::Action;
use bosun_core::meta::is_deleting;
use bosun_core::watch::INDEX_NAMESPACE;
use bosun_core::{Api, DeleteParams, Error, Object, ObjectKey, Patch, PatchParams, PostParams};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn phase(pv: &PersistentVolume) -> Option<&str> {
    pv.status.as_ref().and_then(|s| s.phase.as_deref())
}

async fn set_phase(ctx: &PvCtx, pv: &PersistentVolume, phase_: &str, message: Option<&str>) -> Result<(), Error> {
    if phase(pv) == Some(phase_) && pv.status.as_ref().and_then(|s| s.message.as_deref()) == message {
        return Ok(());
    }
    let patch = Patch::Merge(serde_json::json!({"status": {"phase": phase_, "message": message}}));
    let api = Api::<PersistentVolume>::all(ctx.shared.client.clone());
    ignore_not_found(api.patch_status(pv.name(), &patch, &PatchParams::default()).await).map(drop)
}

/// Reconciles one volume.
pub async fn reconcile_volume(pv: Arc<PersistentVolume>, ctx: Arc<PvCtx>) -> Result<Action, Error> {
    if is_deleting(pv.meta()) {
        return Ok(Action::await_change());
    }
    let Some(claim_ref) = pv.spec.as_ref().and_then(|s| s.claim_ref.clone()) else {
        set_phase(&ctx, &pv, "Available", None).await?;
        return Ok(Action::await_change());
    };
    let uid = claim_ref.uid.clone().filter(|u| !u.is_empty());
    let Some(uid) = uid else {
        // Pre-bound by the user to a claim by name: available to that claim only.
        set_phase(&ctx, &pv, "Available", None).await?;
        return Ok(Action::await_change());
    };
    let ns = claim_ref.namespace.clone().unwrap_or_default();
    let name = claim_ref.name.clone().unwrap_or_default();
    let mut claim = ctx.claims.get(&ObjectKey::new(Some(&ns), name.clone())).filter(|c| c.uid() == uid);
    if claim.is_none() {
        // Confirm with the API before releasing: the cache may not show a new claim yet.
        let live = Api::<PersistentVolumeClaim>::namespaced(ctx.shared.client.clone(), &ns).get_opt(&name).await?;
        claim = live.filter(|c| c.uid() == uid).map(Arc::new);
    }
    let Some(claim) = claim else { return release(&ctx, &pv, &ns, &name).await };
    let claim_volume = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()).filter(|v| !v.is_empty());
    match claim_volume {
        Some(v) if v == pv.name() => set_phase(&ctx, &pv, "Bound", None).await?,
        // The claim loop is finishing the binding.
        None => {}
        Some(_) => {
            // The claim went to another volume: undo our half of the binding.
            let ours = pv.meta().annotations.as_ref().and_then(|a| a.get(ANN_BOUND_BY_CONTROLLER)).is_some();
            if ours {
                let mut free = (*pv).clone();
                if let Some(spec) = free.spec.as_mut() {
                    spec.claim_ref = None;
                }
                if let Some(a) = free.metadata.annotations.as_mut() {
                    a.remove(ANN_BOUND_BY_CONTROLLER);
                }
                free.status = None;
                ignore_not_found(Api::<PersistentVolume>::all(ctx.shared.client.clone()).replace(&free, &PostParams::default()).await)?;
            }
        }
    }
    Ok(Action::await_change())
}

/// The claim is gone: `Released`, then the reclaim policy.
async fn release(ctx: &PvCtx, pv: &PersistentVolume, ns: &str, name: &str) -> Result<Action, Error> {
    let policy = pv.spec.as_ref().and_then(|s| s.persistent_volume_reclaim_policy.as_deref()).unwrap_or("Retain");
    // No claim protection finalizer here: a pod still running on the deleted claim keeps its
    // data until it ends.
    let user = if policy == "Delete" { user_of(ctx, ns, name) } else { None };
    let message = match &user {
        Some(user) => format!("claim {ns}/{name} is gone but pod {user} still uses it: deletion deferred"),
        None => format!("claim {ns}/{name} is gone"),
    };
    if phase(pv) != Some("Failed") {
        set_phase(ctx, pv, "Released", Some(&message)).await?;
    }
    match policy {
        "Retain" => Ok(Action::await_change()),
        "Delete" => {
            let provisioned =
                pv.meta().annotations.as_ref().and_then(|a| a.get(ANN_PROVISIONED_BY)).map(String::as_str) == Some(LOCAL_PATH_PROVISIONER);
            if !provisioned {
                set_phase(
                    ctx,
                    pv,
                    "Failed",
                    Some("no volume plugin can delete this volume: it was not provisioned by bosun.io/local-path"),
                )
                .await?;
                return Ok(Action::await_change());
            }
            if user.is_some() {
                return Ok(Action::requeue(Duration::from_secs(5)));
            }
            if ctx.config.remove_data
                && let Err(error) = remove_data(ctx, pv).await
            {
                tracing::warn!(volume = %pv.name(), %error, "could not remove the volume's data");
                set_phase(ctx, pv, "Failed", Some(&format!("could not remove the volume's data: {error}"))).await?;
                return Ok(Action::requeue(Duration::from_secs(30)));
            }
            let api = Api::<PersistentVolume>::all(ctx.shared.client.clone());
            ignore_not_found(api.delete(pv.name(), &DeleteParams::default()).await)?;
            tracing::debug!(volume = %pv.name(), "volume deleted after its claim");
            Ok(Action::await_change())
        }
        other => {
            set_phase(ctx, pv, "Failed", Some(&format!("reclaim policy {other:?} is not supported"))).await?;
            Ok(Action::await_change())
        }
    }
}

/// A pod that has not finished and mounts claim `ns/name`.
fn user_of(ctx: &PvCtx, ns: &str, name: &str) -> Option<String> {
    ctx.pods.by_index(INDEX_NAMESPACE, ns).into_iter().find_map(|p| {
        let finished = matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
        let uses = p
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .is_some_and(|v| v.iter().any(|v| v.persistent_volume_claim.as_ref().is_some_and(|c| c.claim_name == name)));
        (!finished && uses).then(|| p.name().to_owned())
    })
}

/// Removes a provisioned volume's directory, only when it is exactly `<base_dir>/<pv-name>`.
async fn remove_data(ctx: &PvCtx, pv: &PersistentVolume) -> std::io::Result<()> {
    let spec = pv.spec.as_ref();
    let Some(path) = spec.and_then(|s| s.host_path.as_ref().map(|h| h.path.clone()).or(s.local.as_ref().map(|l| l.path.clone()))) else {
        return Ok(());
    };
    let path = Path::new(&path);
    if path != ctx.config.base_dir.join(pv.name()) {
        tracing::warn!(volume = %pv.name(), path = %path.display(), "not removing data outside the provisioner's directory");
        return Ok(());
    }
    match tokio::fs::remove_dir_all(path).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
