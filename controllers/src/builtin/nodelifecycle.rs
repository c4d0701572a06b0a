//! The node lifecycle controller: watches the node heartbeats (Leases in `kube-node-lease`, renewed
//! by the node agent). A node whose lease is not renewed within the grace period gets its `Ready`
//! condition set to `Unknown` and the `node.kubernetes.io/unreachable` taints (NoSchedule and
//! NoExecute); they go when it heartbeats again. Pods on an unreachable node are deleted once their
//! toleration of `node.kubernetes.io/unreachable:NoExecute` runs out (at once without one; the API
//! server's defaulting gives pods 300 s), so their controllers replace them elsewhere.

use super::{Shared, ignore_not_found, pod_is_active};
use crate::clock;
use crate::runtime::{Action, Controller};
use bosun_core::watch::Store;
use bosun_core::{Api, DeleteParams, Error, Object, ObjectKey, Patch, PatchParams};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use k8s_openapi::jiff::Timestamp;
use std::sync::Arc;
use std::time::Duration;

/// The namespace of the node heartbeat Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The taint key of a node whose heartbeats stopped.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
/// The default grace period before a silent node is marked unreachable.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(50);
/// How often a healthy node is looked at again (besides on every lease change).
pub const DEFAULT_MONITOR_PERIOD: Duration = Duration::from_secs(5);

const POD_NODE_INDEX: &str = "spec.nodeName";

/// The node lifecycle controller's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLifecycleConfig {
    /// How long a node may go without renewing its lease (default 50 s).
    pub grace_period: Duration,
    /// How often nodes are checked at most between lease changes (default 5 s).
    pub monitor_period: Duration,
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        Self { grace_period: DEFAULT_GRACE_PERIOD, monitor_period: DEFAULT_MONITOR_PERIOD }
    }
}

impl NodeLifecycleConfig {
    /// Sets the grace period (default 50 s).
    #[must_use]
    pub fn grace_period(mut self, d: Duration) -> Self {
        self.grace_period = d;
        self
    }

    /// Sets the monitor period (default 5 s).
    #[must_use]
    pub fn monitor_period(mut self, d: Duration) -> Self {
        self.monitor_period = d.max(Duration::from_millis(10));
        self
    }
}

/// The node lifecycle controller's state.
pub struct NodeLifecycleCtx {
    shared: Shared,
    config: NodeLifecycleConfig,
    leases: Store<Lease>,
    pods: Store<Pod>,
}

/// Builds the node lifecycle controller with the default settings.
pub fn controller(shared: &Shared) -> (Controller<Node>, Arc<NodeLifecycleCtx>) {
    controller_with(shared, NodeLifecycleConfig::default())
}

/// Builds the node lifecycle controller with `config`.
pub fn controller_with(shared: &Shared, config: NodeLifecycleConfig) -> (Controller<Node>, Arc<NodeLifecycleCtx>) {
    let client = shared.client.clone();
    let leases = shared.informers.namespaced::<Lease>(LEASE_NAMESPACE);
    let pods = shared.informers.all::<Pod>();
    pods.store().add_index(POD_NODE_INDEX, Arc::new(|p: &Pod| node_of(p).map(|n| vec![n.to_owned()]).unwrap_or_default()));
    let c = shared
        .controller(Api::<Node>::all(client.clone()), "nodelifecycle")
        .watches(Api::<Lease>::namespaced(client.clone(), LEASE_NAMESPACE), |l: &Lease| vec![ObjectKey::new(None, l.name().to_owned())])
        .watches(Api::<Pod>::all(client), |p: &Pod| node_of(p).map(|n| ObjectKey::new(None, n.to_owned())));
    let ctx = Arc::new(NodeLifecycleCtx { shared: shared.clone(), config, leases: leases.store().clone(), pods: pods.store().clone() });
    (c, ctx)
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty())
}

/// When the node last showed signs of life: its lease's renew time, else the node's creation.
fn last_heartbeat(node: &Node, lease: Option<&Lease>) -> Option<Timestamp> {
    let renewed = lease.and_then(|l| l.spec.as_ref()).and_then(|s| s.renew_time.as_ref().or(s.acquire_time.as_ref())).map(|t| t.0);
    renewed.or_else(|| node.meta().creation_timestamp.as_ref().map(|t| t.0))
}

/// Whether `t` tolerates the unreachable NoExecute taint.
fn tolerates_unreachable(t: &Toleration) -> bool {
    let key_ok = match t.key.as_deref() {
        None | Some("") => t.operator.as_deref() == Some("Exists"),
        Some(k) => k == UNREACHABLE_TAINT,
    };
    key_ok && t.effect.as_deref().is_none_or(|e| e.is_empty() || e == "NoExecute")
}

/// How long a pod may stay on an unreachable node: `None` forever, `Some(0)` not at all.
pub fn toleration_of(pod: &Pod) -> Option<Duration> {
    let matching: Vec<&Toleration> =
        pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or_default().iter().filter(|t| tolerates_unreachable(t)).collect();
    if matching.is_empty() {
        return Some(Duration::ZERO);
    }
    // The shortest limit wins; a toleration without one tolerates forever only if all do.
    matching.iter().filter_map(|t| t.toleration_seconds).min().map(|s| Duration::from_secs(u64::try_from(s.max(0)).unwrap_or(0)))
}

fn unreachable_taints(now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> [Taint; 2] {
    [
        Taint { key: UNREACHABLE_TAINT.into(), effect: "NoSchedule".into(), time_added: Some(now.clone()), value: None },
        Taint { key: UNREACHABLE_TAINT.into(), effect: "NoExecute".into(), time_added: Some(now.clone()), value: None },
    ]
}

/// Reconciles one node.
pub async fn reconcile(node: Arc<Node>, ctx: Arc<NodeLifecycleCtx>) -> Result<Action, Error> {
    let lease = ctx.leases.get(&ObjectKey::new(Some(LEASE_NAMESPACE), node.name().to_owned()));
    let Some(seen) = last_heartbeat(&node, lease.as_deref()) else {
        return Ok(Action::requeue(ctx.config.monitor_period));
    };
    let silent = clock::seconds_since(&seen).max(0.0);
    let grace = ctx.config.grace_period.as_secs_f64();
    let taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let tainted = taints.iter().any(|t| t.key == UNREACHABLE_TAINT);
    let api = Api::<Node>::all(ctx.shared.client.clone());
    if silent <= grace {
        if tainted {
            recover(&api, &node, taints).await?;
        }
        let until = Duration::from_secs_f64((grace - silent).max(0.0)) + Duration::from_millis(1);
        return Ok(Action::requeue(until.min(ctx.config.monitor_period).max(Duration::from_millis(10))));
    }
    let since = match taints.iter().find(|t| t.key == UNREACHABLE_TAINT && t.effect == "NoExecute").and_then(|t| t.time_added.clone()) {
        Some(t) if tainted => t,
        _ => mark_unreachable(&api, &node, taints).await?,
    };
    evict(&ctx, &node, &since.0).await
}

async fn mark_unreachable(
    api: &Api<Node>,
    node: &Node,
    mut taints: Vec<Taint>,
) -> Result<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time, Error> {
    let now = clock::now_time();
    tracing::info!(node = node.name(), "node lease not renewed within the grace period; marking it unreachable");
    let mut conditions = node.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let message = "Kubelet stopped posting node status.";
    match conditions.iter_mut().find(|c| c.type_ == "Ready") {
        Some(c) => {
            if c.status != "Unknown" {
                c.last_transition_time = Some(now.clone());
            }
            c.status = "Unknown".into();
            c.reason = Some("NodeStatusUnknown".into());
            c.message = Some(message.into());
        }
        None => conditions.push(k8s_openapi::api::core::v1::NodeCondition {
            type_: "Ready".into(),
            status: "Unknown".into(),
            reason: Some("NodeStatusUnknown".into()),
            message: Some(message.into()),
            last_transition_time: Some(now.clone()),
            last_heartbeat_time: None,
        }),
    }
    let patch = serde_json::json!({"status": {"conditions": conditions}});
    ignore_not_found(api.patch_status(node.name(), &Patch::Merge(patch), &PatchParams::default()).await)?;
    taints.retain(|t| t.key != UNREACHABLE_TAINT);
    taints.extend(unreachable_taints(&now));
    let patch = serde_json::json!({"metadata": {"resourceVersion": node.resource_version()}, "spec": {"taints": taints}});
    // A stale node fails with a conflict and is retried with fresh state.
    api.patch(node.name(), &Patch::Merge(patch), &PatchParams::default()).await?;
    Ok(now)
}

async fn recover(api: &Api<Node>, node: &Node, mut taints: Vec<Taint>) -> Result<(), Error> {
    tracing::info!(node = node.name(), "node heartbeats resumed; removing the unreachable taints");
    taints.retain(|t| t.key != UNREACHABLE_TAINT);
    let patch = serde_json::json!({"metadata": {"resourceVersion": node.resource_version()}, "spec": {"taints": taints}});
    api.patch(node.name(), &Patch::Merge(patch), &PatchParams::default()).await?;
    // The node agent posts its own status; with no agent status newer than ours, report it back.
    let mut conditions = node.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == "Ready" && c.reason.as_deref() == Some("NodeStatusUnknown")) {
        c.status = "True".into();
        c.reason = Some("NodeHeartbeatResumed".into());
        c.message = Some("The node lease is being renewed again.".into());
        c.last_transition_time = Some(clock::now_time());
        let patch = serde_json::json!({"status": {"conditions": conditions}});
        ignore_not_found(api.patch_status(node.name(), &Patch::Merge(patch), &PatchParams::default()).await)?;
    }
    Ok(())
}

/// Deletes the pods on `node` whose toleration ran out since `since`; requeues for the next one.
async fn evict(ctx: &NodeLifecycleCtx, node: &Node, since: &Timestamp) -> Result<Action, Error> {
    let tainted_for = clock::seconds_since(since).max(0.0);
    let mut next: Option<Duration> = None;
    for pod in ctx.pods.by_index(POD_NODE_INDEX, node.name()) {
        if !pod_is_active(&pod) {
            continue;
        }
        let Some(limit) = toleration_of(&pod) else { continue };
        let left = limit.as_secs_f64() - tainted_for;
        if left > 0.0 {
            let wait = Duration::from_secs_f64(left) + Duration::from_millis(1);
            next = Some(next.map_or(wait, |n| n.min(wait)));
            continue;
        }
        let ns = pod.namespace().unwrap_or("default");
        tracing::info!(node = node.name(), pod = pod.name(), namespace = ns, "evicting a pod from an unreachable node");
        let api = Api::<Pod>::namespaced(ctx.shared.client.clone(), ns);
        ignore_not_found(api.delete(pod.name(), &DeleteParams::default()).await)?;
    }
    let monitor = ctx.config.monitor_period;
    Ok(Action::requeue(next.map_or(monitor, |n| n.min(monitor))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_with(tolerations: Vec<Toleration>) -> Pod {
        Pod { spec: Some(k8s_openapi::api::core::v1::PodSpec { tolerations: Some(tolerations), ..Default::default() }), ..Pod::default() }
    }

    #[test]
    fn tolerations_decide_how_long_a_pod_stays() {
        assert_eq!(toleration_of(&pod_with(vec![])), Some(Duration::ZERO));
        let t = |key: Option<&str>, op: &str, effect: Option<&str>, secs: Option<i64>| Toleration {
            key: key.map(Into::into),
            operator: Some(op.into()),
            effect: effect.map(Into::into),
            toleration_seconds: secs,
            value: None,
        };
        assert_eq!(
            toleration_of(&pod_with(vec![t(Some(UNREACHABLE_TAINT), "Exists", Some("NoExecute"), Some(30))])),
            Some(Duration::from_secs(30))
        );
        assert_eq!(toleration_of(&pod_with(vec![t(Some(UNREACHABLE_TAINT), "Exists", None, None)])), None);
        assert_eq!(toleration_of(&pod_with(vec![t(None, "Exists", None, None)])), None);
        assert_eq!(toleration_of(&pod_with(vec![t(Some("other"), "Exists", None, None)])), Some(Duration::ZERO));
        assert_eq!(toleration_of(&pod_with(vec![t(Some(UNREACHABLE_TAINT), "Exists", Some("NoSchedule"), None)])), Some(Duration::ZERO));
    }
}
