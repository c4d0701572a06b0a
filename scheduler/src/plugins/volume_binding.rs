//! VolumeBinding (PreFilter, Filter, PreBind): a pod's PersistentVolumeClaims must exist; a claim
//! bound to a volume with node affinity keeps the pod to the nodes that volume admits; an unbound
//! claim of an `Immediate` class keeps the pod pending until the PersistentVolume controller binds
//! it; an unbound claim of a `WaitForFirstConsumer` class fits any node its class can provision on
//! (or, for `kubernetes.io/no-provisioner`, any node with a free matching volume), and at PreBind
//! the claim is annotated `volume.kubernetes.io/selected-node` with the chosen node and the pod is
//! bound only once the claim is (within [`BIND_TIMEOUT`]). Other volume sources need no binding
//! when the node runtime can mount them (emptyDir, hostPath, configMap, secret, projected,
//! downwardAPI); any other source makes the pod unschedulable.
//!
//! Claims, volumes and classes come from the scheduler's informers ([`Handle::informers`]);
//! [`watch_volumes`] turns their changes into queue events so that rejected pods are retried.

use crate::framework::{
    ActionType, ClusterEvent, ClusterEventWithHint, CycleState, EventObject, EventResource, FilterPlugin, Handle, Plugin, PreBindPlugin,
    PreFilterPlugin, PreFilterResult, Status,
};
use crate::node_info::NodeInfo;
use crate::pod_info::{NodeTerm, PodInfo};
use crate::queue::SchedulingQueue;
use crate::snapshot::Snapshot;
use async_trait::async_trait;
use bosun_core::k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use bosun_core::k8s_openapi::api::storage::v1::StorageClass;
use bosun_core::watch::{Change, Informers, Store};
use bosun_core::{Api, ObjectKey, Patch, PatchParams, Quantity};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The annotation naming the node the scheduler chose for a delayed-binding claim.
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// How long PreBind waits for the claims it annotated to be bound (kube-scheduler's
/// `bindTimeoutSeconds` is 600; a local provisioner answers in well under a second).
pub const BIND_TIMEOUT: Duration = Duration::from_secs(120);
/// The provisioner name of classes whose volumes are all created ahead by an admin.
const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";
const NAME: &str = "VolumeBinding";

/// Binds the pod's PersistentVolumeClaims and checks its other volumes need no binding.
#[derive(Debug, Clone, Copy, Default)]
pub struct VolumeBinding;

/// A delayed-binding claim and its class.
#[derive(Clone)]
struct Delayed {
    claim: Arc<PersistentVolumeClaim>,
    class: Arc<StorageClass>,
    /// For `kubernetes.io/no-provisioner` classes: the free volumes that satisfy the claim.
    candidates: Vec<Arc<PersistentVolume>>,
}

/// What PreFilter found, for Filter and PreBind.
#[derive(Clone, Default)]
struct VolumeState {
    /// The node terms of the volumes bound claims use (each volume: ORed terms).
    bound: Vec<(String, Vec<NodeTerm>)>,
    /// Claims waiting for their first consumer.
    delayed: Vec<Delayed>,
}

impl Plugin for VolumeBinding {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        let update = ActionType::ADD.or(ActionType::UPDATE);
        vec![
            ClusterEventWithHint::always(EventResource::UnscheduledPod, ActionType::UPDATE),
            ClusterEventWithHint::always(EventResource::PersistentVolumeClaim, update),
            ClusterEventWithHint::always(EventResource::PersistentVolume, update),
            ClusterEventWithHint::always(EventResource::Node, ActionType::ADD.or(ActionType::UPDATE_NODE_LABEL)),
        ]
    }
    fn as_pre_filter(self: Arc<Self>) -> Option<Arc<dyn PreFilterPlugin>> {
        Some(self)
    }
    fn as_filter(self: Arc<Self>) -> Option<Arc<dyn FilterPlugin>> {
        Some(self)
    }
    fn as_pre_bind(self: Arc<Self>) -> Option<Arc<dyn PreBindPlugin>> {
        Some(self)
    }
}

fn annotation<'a>(claim: &'a PersistentVolumeClaim, key: &str) -> Option<&'a str> {
    claim.metadata.annotations.as_ref().and_then(|a| a.get(key)).map(String::as_str)
}

fn volume_name(claim: &PersistentVolumeClaim) -> Option<&str> {
    claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()).filter(|v| !v.is_empty())
}

fn claim_class(claim: &PersistentVolumeClaim) -> &str {
    claim.spec.as_ref().and_then(|s| s.storage_class_name.as_deref()).unwrap_or("")
}

fn node_terms(pv: &PersistentVolume) -> Option<Vec<NodeTerm>> {
    let required = pv.spec.as_ref()?.node_affinity.as_ref()?.required.as_ref()?;
    Some(required.node_selector_terms.iter().map(NodeTerm::parse).collect())
}

fn admits(terms: &[NodeTerm], labels: &BTreeMap<String, String>, name: &str) -> bool {
    terms.iter().any(|t| t.matches(labels, name))
}

/// Whether a free volume satisfies a claim: class, access modes, capacity, not claimed by another.
fn static_fit(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let (Some(vs), Some(cs)) = (pv.spec.as_ref(), claim.spec.as_ref()) else { return false };
    let free = vs.claim_ref.as_ref().is_none_or(|r| {
        r.name.as_deref() == claim.metadata.name.as_deref() && r.namespace.as_deref() == claim.metadata.namespace.as_deref()
    });
    let phase_ok = !matches!(pv.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Released" | "Failed"));
    let offered = vs.access_modes.as_deref().unwrap_or_default();
    let quantity =
        |q: Option<&bosun_core::k8s_openapi::apimachinery::pkg::api::resource::Quantity>| q.and_then(|q| Quantity::parse(&q.0).ok());
    let want = quantity(cs.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get("storage")));
    let have = quantity(vs.capacity.as_ref().and_then(|c| c.get("storage")));
    free && phase_ok
        && pv.metadata.deletion_timestamp.is_none()
        && vs.storage_class_name.as_deref().unwrap_or("") == claim_class(claim)
        && cs.access_modes.as_deref().unwrap_or_default().iter().all(|m| offered.contains(m))
        && match (want, have) {
            (Some(w), Some(h)) => h >= w,
            (Some(_), None) => false,
            (None, _) => true,
        }
}

/// Whether a class's `allowedTopologies` admit a node (none: every node).
fn class_admits(class: &StorageClass, labels: &BTreeMap<String, String>) -> bool {
    let Some(terms) = class.allowed_topologies.as_ref().filter(|t| !t.is_empty()) else { return true };
    terms
        .iter()
        .any(|t| t.match_label_expressions.iter().flatten().all(|r| labels.get(&r.key).is_some_and(|v| r.values.iter().any(|x| x == v))))
}

fn unsupported(v: &bosun_core::k8s_openapi::api::core::v1::Volume) -> bool {
    !(v.empty_dir.is_some()
        || v.host_path.is_some()
        || v.config_map.is_some()
        || v.secret.is_some()
        || v.projected.is_some()
        || v.downward_api.is_some()
        || v.persistent_volume_claim.is_some())
}

impl PreFilterPlugin for VolumeBinding {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, _: &Snapshot, handle: &Handle) -> (Option<PreFilterResult>, Status) {
        let volumes = pod.pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
        let Some(volumes) = volumes.filter(|v| !v.is_empty()) else { return (None, Status::skip()) };
        if let Some(v) = volumes.iter().find(|v| unsupported(v)) {
            return (None, Status::unresolvable(format!("volume \"{}\" has a source the node runtime cannot mount", v.name)));
        }
        let claims: Vec<&str> = volumes.iter().filter_map(|v| v.persistent_volume_claim.as_ref()).map(|c| c.claim_name.as_str()).collect();
        if claims.is_empty() {
            return (None, Status::skip());
        }
        let Some(informers) = handle.informers() else {
            return (None, Status::unresolvable("no volume informers: persistentvolumeclaims cannot be bound"));
        };
        let (pvcs, pvs, classes) = stores(informers);
        if !(pvcs.is_ready() && pvs.is_ready() && classes.is_ready()) {
            return (None, Status::unschedulable("waiting for the volume caches to sync"));
        }
        let mut out = VolumeState::default();
        let mut immediate = false;
        for name in claims {
            let Some(claim) = pvcs.get(&ObjectKey::new(Some(&pod.namespace), name)) else {
                return (None, Status::unresolvable(format!("persistentvolumeclaim \"{name}\" not found")));
            };
            if claim.metadata.deletion_timestamp.is_some() {
                return (None, Status::unresolvable(format!("persistentvolumeclaim \"{name}\" is being deleted")));
            }
            if let Some(volume) = volume_name(&claim) {
                let Some(pv) = pvs.get(&ObjectKey::new(None, volume)) else {
                    return (
                        None,
                        Status::unschedulable(format!(
                            "persistentvolumeclaim \"{name}\" bound to non-existent persistentvolume \"{volume}\""
                        )),
                    );
                };
                if let Some(terms) = node_terms(&pv) {
                    out.bound.push((volume.to_owned(), terms));
                }
                continue;
            }
            let class = Some(claim_class(&claim)).filter(|c| !c.is_empty()).and_then(|c| classes.get(&ObjectKey::new(None, c)));
            match class {
                Some(class) if class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer") => {
                    let candidates = if class.provisioner == NO_PROVISIONER {
                        pvs.list().into_iter().filter(|pv| static_fit(pv, &claim)).collect()
                    } else {
                        Vec::new()
                    };
                    out.delayed.push(Delayed { claim, class, candidates });
                }
                _ => immediate = true,
            }
        }
        if immediate {
            return (None, Status::unresolvable("pod has unbound immediate PersistentVolumeClaims"));
        }
        if out.bound.is_empty() && out.delayed.is_empty() {
            return (None, Status::skip());
        }
        state.insert(out);
        (None, Status::success())
    }
}

impl FilterPlugin for VolumeBinding {
    fn filter(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(s) = state.get::<VolumeState>() else { return Status::success() };
        let Some(n) = node.node.as_ref() else { return Status::unresolvable("node not found") };
        let labels = n.labels();
        if s.bound.iter().any(|(_, terms)| !admits(terms, labels, &n.name)) {
            return Status::unresolvable("node(s) had volume node affinity conflict");
        }
        for d in &s.delayed {
            if d.class.provisioner == NO_PROVISIONER {
                if !d.candidates.iter().any(|pv| node_terms(pv).is_none_or(|t| admits(&t, labels, &n.name))) {
                    return Status::unschedulable("node(s) didn't find available persistent volumes to bind");
                }
            } else if !class_admits(&d.class, labels) {
                return Status::unresolvable("node(s) did not satisfy the storage class's allowed topologies");
            }
        }
        Status::success()
    }
}

#[async_trait]
impl PreBindPlugin for VolumeBinding {
    async fn pre_bind(&self, state: &CycleState, _pod: &Arc<PodInfo>, node: &str, handle: &Handle) -> Status {
        let Some(s) = state.get::<VolumeState>().filter(|s| !s.delayed.is_empty()) else { return Status::success() };
        let (Some(client), Some(informers)) = (handle.client(), handle.informers()) else {
            return Status::error("no client to bind volumes with");
        };
        for d in &s.delayed {
            let claim = &d.claim;
            if volume_name(claim).is_some() || annotation(claim, ANN_SELECTED_NODE) == Some(node) {
                continue;
            }
            let api = Api::<PersistentVolumeClaim>::namespaced(client.clone(), claim.metadata.namespace.as_deref().unwrap_or("default"));
            let patch = Patch::Merge(serde_json::json!({"metadata": {"annotations": {ANN_SELECTED_NODE: node}}}));
            if let Err(e) = api.patch(claim.metadata.name.as_deref().unwrap_or_default(), &patch, &PatchParams::default()).await {
                return Status::error(format!("binding volumes: {e}"));
            }
        }
        let (pvcs, pvs, _) = stores(informers);
        let keys: Vec<ObjectKey> = s.delayed.iter().map(|d| ObjectKey::of(&*d.claim)).collect();
        let deadline = tokio::time::Instant::now() + BIND_TIMEOUT;
        loop {
            let mut pending = 0;
            for key in &keys {
                let Some(claim) = pvcs.get(key) else { return Status::error(format!("binding volumes: claim {key} is gone")) };
                let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
                match volume_name(&claim).filter(|_| bound) {
                    None => pending += 1,
                    Some(volume) => {
                        // The claim may have been bound elsewhere meanwhile: the volume must admit the node.
                        let pv = pvs.get(&ObjectKey::new(None, volume));
                        let labels = handle_node_labels(informers, node);
                        if let (Some(pv), Some(labels)) = (pv, labels)
                            && node_terms(&pv).is_some_and(|t| !admits(&t, &labels, node))
                        {
                            return Status::unschedulable(format!("binding volumes: volume \"{volume}\" is not available on node {node}"));
                        }
                    }
                }
            }
            if pending == 0 {
                return Status::success();
            }
            if tokio::time::Instant::now() >= deadline {
                return Status::error("binding volumes: timed out waiting for the condition");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn handle_node_labels(informers: &Informers, node: &str) -> Option<BTreeMap<String, String>> {
    let nodes = informers.all::<bosun_core::k8s_openapi::api::core::v1::Node>();
    nodes.store().get(&ObjectKey::new(None, node)).map(|n| n.metadata.labels.clone().unwrap_or_default())
}

fn stores(informers: &Informers) -> (Store<PersistentVolumeClaim>, Store<PersistentVolume>, Store<StorageClass>) {
    (
        informers.all::<PersistentVolumeClaim>().store().clone(),
        informers.all::<PersistentVolume>().store().clone(),
        informers.all::<StorageClass>().store().clone(),
    )
}

/// Starts the claim, volume and class informers and turns their changes into queue events (so
/// that pods VolumeBinding rejected are retried); call once when the scheduler starts.
pub fn watch_volumes(informers: &Informers, queue: &Arc<SchedulingQueue>) -> Vec<tokio::task::JoinHandle<()>> {
    let claims = informers.all::<PersistentVolumeClaim>();
    let volumes = informers.all::<PersistentVolume>();
    let classes = informers.all::<StorageClass>();
    let changed = ActionType::ADD.or(ActionType::UPDATE_OTHER);
    let claim_changes = claims.subscribe();
    let volume_changes = volumes.subscribe();
    let class_changes = classes.subscribe();
    let mut tasks = Vec::new();
    let q = queue.clone();
    tasks.push(tokio::spawn(async move {
        // Pods tried before the caches synced were told to wait: retry them now.
        claims.wait_ready().await;
        volumes.wait_ready().await;
        classes.wait_ready().await;
        q.on_event(&ClusterEvent::new(EventResource::PersistentVolumeClaim, changed), None, Some(&EventObject::Other));
    }));
    for (resource, mut changes) in [
        (EventResource::PersistentVolumeClaim, claim_changes.map(|c| matches!(c, Change::Deleted(_))).boxed()),
        (EventResource::PersistentVolume, volume_changes.map(|c| matches!(c, Change::Deleted(_))).boxed()),
        // A new or changed class matters to claims of that class.
        (EventResource::PersistentVolumeClaim, class_changes.map(|c| matches!(c, Change::Deleted(_))).boxed()),
    ] {
        let q = queue.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(deleted) = changes.next().await {
                let action = if deleted { ActionType::DELETE } else { changed };
                q.on_event(&ClusterEvent::new(resource, action), None, Some(&EventObject::Other));
            }
        }));
    }
    tasks
}

#[cfg(test)]
mod tests;
