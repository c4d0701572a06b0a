//! The claim loop: retroactive default class, binding, local-path provisioning, claim phases.

use super::matching::{best_match, claim_class, refers_to, requested, satisfies};
use super::{
    ANN_BIND_COMPLETED, ANN_BOUND_BY_CONTROLLER, ANN_PROVISIONED_BY, ANN_SELECTED_NODE, ANN_STORAGE_PROVISIONER, LOCAL_PATH_PROVISIONER,
    PvCtx,
};
use crate::builtin::ignore_not_found;
use crate::runtime::events::object_reference;
use crate::runtime::{Action, EventData};
use bosun_core::meta::is_deleting;
use bosun_core::{Api, Error, Object, ObjectKey, Patch, PatchParams, PostParams};
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference, PersistentVolume,
    PersistentVolumeClaim, PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::sync::Arc;

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref().and_then(|a| a.get(key)).map(String::as_str)
}

fn claims_api(ctx: &PvCtx, pvc: &PersistentVolumeClaim) -> Api<PersistentVolumeClaim> {
    Api::namespaced(ctx.shared.client.clone(), pvc.namespace().unwrap_or("default"))
}

async fn event(ctx: &PvCtx, pvc: &PersistentVolumeClaim, data: EventData) {
    if let Err(error) = ctx.shared.recorder.publish(&object_reference(pvc), &data).await {
        tracing::debug!(%error, "event not recorded");
    }
}

/// Sets the claim's phase when it differs.
async fn set_phase(ctx: &PvCtx, pvc: &PersistentVolumeClaim, phase: &str) -> Result<(), Error> {
    if pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(phase) {
        return Ok(());
    }
    let patch = Patch::Merge(serde_json::json!({"status": {"phase": phase}}));
    ignore_not_found(claims_api(ctx, pvc).patch_status(pvc.name(), &patch, &PatchParams::default()).await).map(drop)
}

/// Reconciles one claim.
pub async fn reconcile_claim(pvc: Arc<PersistentVolumeClaim>, ctx: Arc<PvCtx>) -> Result<Action, Error> {
    if is_deleting(pvc.meta()) {
        return Ok(Action::await_change());
    }
    let volume_name = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|v| !v.is_empty());
    match volume_name {
        None => sync_unbound(&pvc, &ctx).await?,
        Some(v) => sync_named(&pvc, &v, &ctx).await?,
    }
    Ok(Action::await_change())
}

/// A claim that names a volume: finish the binding, or report it Pending/Lost.
async fn sync_named(pvc: &PersistentVolumeClaim, volume: &str, ctx: &PvCtx) -> Result<(), Error> {
    let was_bound = annotation(pvc.meta(), ANN_BIND_COMPLETED).is_some();
    let Some(pv) = ctx.volumes.get(&ObjectKey::new(None, volume)) else {
        return set_phase(ctx, pvc, if was_bound { "Lost" } else { "Pending" }).await;
    };
    let free = pv.spec.as_ref().is_none_or(|s| s.claim_ref.is_none());
    if refers_to(&pv, pvc) || (free && satisfies(&pv, pvc)) {
        return bind(ctx, &pv, pvc).await;
    }
    if free {
        event(ctx, pvc, EventData::warning("VolumeMismatch", "Binding", format!("Cannot bind to requested volume {volume:?}"))).await;
    }
    set_phase(ctx, pvc, if was_bound { "Lost" } else { "Pending" }).await
}

/// A claim without a volume: pick one, provision one, or wait.
async fn sync_unbound(pvc: &PersistentVolumeClaim, ctx: &PvCtx) -> Result<(), Error> {
    // Retroactive default class: a claim created before any default class existed gets it now.
    if pvc.spec.as_ref().is_some_and(|s| s.storage_class_name.is_none())
        && let Some(default) = ctx.default_class()
    {
        let name = default.metadata.name.clone().unwrap_or_default();
        let patch = Patch::Merge(serde_json::json!({"spec": {"storageClassName": name}}));
        ignore_not_found(claims_api(ctx, pvc).patch(pvc.name(), &patch, &PatchParams::default()).await)?;
        return Ok(());
    }
    let class_name = claim_class(pvc);
    let class: Option<Arc<StorageClass>> = (!class_name.is_empty()).then(|| ctx.classes.get(&ObjectKey::new(None, class_name))).flatten();
    let delayed = class.as_ref().is_some_and(|c| c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"));
    let selected = annotation(pvc.meta(), ANN_SELECTED_NODE).filter(|n| !n.is_empty());
    if delayed && selected.is_none() {
        // The scheduler picks the node when a pod using the claim is scheduled.
        return set_phase(ctx, pvc, "Pending").await;
    }
    let node: Option<Arc<Node>> = selected.and_then(|n| ctx.nodes.get(&ObjectKey::new(None, n)));
    let volumes = ctx.volumes.list();
    // A delayed claim takes only a volume its node can reach; until the node is in the cache, none.
    let found = match (delayed, node.as_deref()) {
        (false, _) => best_match(pvc, &volumes, None),
        (true, Some(n)) => best_match(pvc, &volumes, Some(n)),
        (true, None) => volumes.iter().find(|pv| refers_to(pv, pvc) && satisfies(pv, pvc)).cloned(),
    };
    if let Some(pv) = found {
        return bind(ctx, &pv, pvc).await;
    }
    match class.as_deref() {
        Some(c) if c.provisioner == LOCAL_PATH_PROVISIONER => match selected {
            Some(node_name) => provision(ctx, pvc, c, node_name, node.as_deref()).await?,
            None => {
                let note = "the local-path provisioner needs volumeBindingMode WaitForFirstConsumer to know the node";
                event(ctx, pvc, EventData::warning("ProvisioningFailed", "Provision", note)).await;
            }
        },
        // Left to an external provisioner, which looks for this annotation.
        Some(c)
            if c.provisioner != "kubernetes.io/no-provisioner"
                && annotation(pvc.meta(), ANN_STORAGE_PROVISIONER) != Some(c.provisioner.as_str()) =>
        {
            let patch = Patch::Merge(serde_json::json!({"metadata": {"annotations": {ANN_STORAGE_PROVISIONER: c.provisioner}}}));
            ignore_not_found(claims_api(ctx, pvc).patch(pvc.name(), &patch, &PatchParams::default()).await)?;
        }
        _ => {}
    }
    set_phase(ctx, pvc, "Pending").await
}

/// The name of the volume provisioned for a claim.
pub fn provisioned_name(pvc: &PersistentVolumeClaim) -> String {
    format!("pvc-{}", pvc.uid())
}

/// Creates a local-path volume for `pvc` on `node_name`, pre-bound to the claim (the next sync
/// binds it).
async fn provision(
    ctx: &PvCtx,
    pvc: &PersistentVolumeClaim,
    class: &StorageClass,
    node_name: &str,
    node: Option<&Node>,
) -> Result<(), Error> {
    let name = provisioned_name(pvc);
    let spec = pvc.spec.clone().unwrap_or_default();
    let size = requested(pvc).map_or_else(|| "1Gi".to_owned(), |q| q.to_string());
    let access_modes = spec.access_modes.clone().filter(|m| !m.is_empty()).unwrap_or_else(|| vec!["ReadWriteOnce".into()]);
    // Pin to the node by its hostname label when it has one (what most tools read), else by name.
    let hostname = node.and_then(|n| n.metadata.labels.as_ref()).and_then(|l| l.get("kubernetes.io/hostname")).cloned();
    let term = match hostname {
        Some(h) => NodeSelectorTerm {
            match_expressions: Some(vec![NodeSelectorRequirement {
                key: "kubernetes.io/hostname".into(),
                operator: "In".into(),
                values: Some(vec![h]),
            }]),
            match_fields: None,
        },
        None => NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node_name.to_owned()]),
            }]),
        },
    };
    let path = ctx.config.base_dir.join(&name);
    let pv = PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            annotations: Some(
                [
                    (ANN_PROVISIONED_BY.to_owned(), LOCAL_PATH_PROVISIONER.to_owned()),
                    (ANN_BOUND_BY_CONTROLLER.to_owned(), "yes".to_owned()),
                    (ANN_SELECTED_NODE.to_owned(), node_name.to_owned()),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some([("storage".to_owned(), k8s_openapi::apimachinery::pkg::api::resource::Quantity(size))].into()),
            access_modes: Some(access_modes),
            persistent_volume_reclaim_policy: Some(class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into())),
            storage_class_name: class.metadata.name.clone(),
            volume_mode: spec.volume_mode.clone(),
            mount_options: class.mount_options.clone(),
            host_path: Some(HostPathVolumeSource { path: path.to_string_lossy().into_owned(), type_: Some("DirectoryOrCreate".into()) }),
            node_affinity: Some(VolumeNodeAffinity { required: Some(NodeSelector { node_selector_terms: vec![term] }) }),
            claim_ref: Some(claim_reference(pvc)),
            ..PersistentVolumeSpec::default()
        }),
        status: None,
    };
    match Api::<PersistentVolume>::all(ctx.shared.client.clone()).create(&pv, &PostParams::default()).await {
        Ok(_) => {
            let note = format!("Successfully provisioned volume {name} on node {node_name}");
            event(ctx, pvc, EventData::normal("ProvisioningSucceeded", "Provision", note)).await;
            Ok(())
        }
        // Made by an earlier sync the cache has not shown yet.
        Err(Error::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

fn claim_reference(pvc: &PersistentVolumeClaim) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        name: pvc.metadata.name.clone(),
        namespace: pvc.metadata.namespace.clone(),
        uid: pvc.metadata.uid.clone(),
        resource_version: pvc.metadata.resource_version.clone(),
        field_path: None,
    }
}

/// Binds `pv` and `pvc` to each other, writing only what is missing: the volume's `claimRef` and
/// `Bound` phase, then the claim's `volumeName`, annotations and `Bound` status. Writes carry the
/// cached resourceVersion, so two claims racing for one volume cannot both win.
async fn bind(ctx: &PvCtx, pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> Result<(), Error> {
    let volumes = Api::<PersistentVolume>::all(ctx.shared.client.clone());
    let pv_name = pv.name().to_owned();
    let claimed = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_some_and(|r| r.uid.as_deref() == Some(pvc.uid()));
    let mut pv = pv.clone();
    if !claimed {
        let by_controller = pv.spec.as_ref().is_none_or(|s| s.claim_ref.is_none());
        if let Some(spec) = pv.spec.as_mut() {
            spec.claim_ref = Some(claim_reference(pvc));
        }
        if by_controller {
            pv.metadata.annotations.get_or_insert_with(Default::default).insert(ANN_BOUND_BY_CONTROLLER.into(), "yes".into());
        }
        pv.status = None;
        pv = volumes.replace(&pv, &PostParams::default()).await?;
        tracing::debug!(volume = %pv_name, claim = %ObjectKey::of(pvc), "volume claimed");
    }
    if pv.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") {
        let patch = Patch::Merge(serde_json::json!({"status": {"phase": "Bound", "message": null, "reason": null}}));
        volumes.patch_status(&pv_name, &patch, &PatchParams::default()).await?;
    }
    let api = claims_api(ctx, pvc);
    let named = pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref()) == Some(pv_name.as_str());
    let mut pvc = pvc.clone();
    if !named || annotation(&pvc.metadata, ANN_BIND_COMPLETED).is_none() {
        let annotations = pvc.metadata.annotations.get_or_insert_with(Default::default);
        annotations.insert(ANN_BIND_COMPLETED.into(), "yes".into());
        if !named {
            annotations.insert(ANN_BOUND_BY_CONTROLLER.into(), "yes".into());
        }
        pvc.spec.get_or_insert_with(Default::default).volume_name = Some(pv_name.clone());
        pvc.status = None;
        pvc = match api.replace(&pvc, &PostParams::default()).await {
            Ok(p) => p,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
    }
    let spec = pv.spec.clone().unwrap_or_default();
    let status = pvc.status.clone().unwrap_or_default();
    if status.phase.as_deref() != Some("Bound") || status.capacity != spec.capacity || status.access_modes != spec.access_modes {
        let patch = Patch::Merge(serde_json::json!({"status": {
            "phase": "Bound",
            "capacity": spec.capacity,
            "accessModes": spec.access_modes,
        }}));
        ignore_not_found(api.patch_status(pvc.name(), &patch, &PatchParams::default()).await)?;
    }
    Ok(())
}
