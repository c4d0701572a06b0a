//! The DaemonSet controller: one pod per eligible node (node selector, required node affinity,
//! taints against tolerations), placed with `spec.nodeName`; new nodes get one, pods on removed or
//! no longer eligible nodes go, and a changed template rolls out node by node within
//! `maxUnavailable`, or beside them first within `maxSurge` (RollingUpdate), or waits for pods to be deleted (OnDelete).

use super::{Shared, ignore_not_found, pod_is_active, pod_is_available, pod_is_ready};
use crate::runtime::{Action, Controller};
use bosun_core::meta::controller_ref;
use bosun_core::watch::{INDEX_OWNER, Store};
use bosun_core::{Api, DeleteParams, Error, Object, ObjectKey, Patch, PatchParams, PostParams};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The label carrying the hash of the template a pod was made from.
pub const TEMPLATE_HASH: &str = "controller-revision-hash";

/// The DaemonSet controller's state.
pub struct DaemonSetCtx {
    shared: Shared,
    pods: Store<Pod>,
    nodes: Store<Node>,
    /// Pods the rollout deleted that the cache still shows active, per DaemonSet: they count as
    /// unavailable so that a lagging cache never lets a rollout exceed `maxUnavailable`.
    rolled: Mutex<HashMap<ObjectKey, HashSet<String>>>,
    /// Pods created per DaemonSet that the cache does not show yet, by node (pod name, when): a
    /// lagging cache never makes a second pod for a node.
    expected: Mutex<HashMap<ObjectKey, Expected>>,
}

/// Pods created but not yet seen, by node: (pod name, created at).
type Expected = HashMap<String, (String, Instant)>;

/// How long a created pod the cache never showed keeps its node from getting another.
const EXPECTATION_TTL: Duration = Duration::from_secs(30);

/// Creates one pod per listed node in slow-start batches (1, 2, 4...), as Kubernetes' controllers
/// do, so that a failing create costs one call rather than one per node. Returns the created
/// pods by node and the first error.
async fn create_on(api: &Api<Pod>, ds: &DaemonSet, nodes: &[&str], hash: &str) -> (Vec<(String, String)>, Option<Error>) {
    let mut created = Vec::new();
    let mut batch = 1;
    let mut rest = nodes;
    while !rest.is_empty() {
        let (now, later) = rest.split_at(batch.min(rest.len()));
        rest = later;
        let results = futures::future::join_all(now.iter().map(|node| async move {
            api.create(&pod_for(ds, node, hash), &PostParams::default()).await.map(|p| ((*node).to_owned(), p.name().to_owned()))
        }))
        .await;
        let mut failed = None;
        for r in results {
            match r {
                Ok(pair) => created.push(pair),
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        if failed.is_some() {
            return (created, failed);
        }
        batch = (batch * 2).min(512);
    }
    (created, None)
}

/// Builds the DaemonSet controller on `shared`'s informers.
pub fn controller(shared: &Shared) -> (Controller<DaemonSet>, Arc<DaemonSetCtx>) {
    let client = shared.client.clone();
    let pods = shared.informers.all::<Pod>();
    let nodes = shared.informers.all::<Node>();
    let sets = shared.informers.all::<DaemonSet>().store().clone();
    let c = shared
        .controller(Api::<DaemonSet>::all(client.clone()), "daemonset")
        .owns(Api::<Pod>::all(client.clone()))
        .watches(Api::<Node>::all(client), move |_n: &Node| sets.list().iter().map(|d| ObjectKey::of(&**d)).collect::<Vec<_>>());
    let ctx = Arc::new(DaemonSetCtx {
        shared: shared.clone(),
        pods: pods.store().clone(),
        nodes: nodes.store().clone(),
        rolled: Mutex::default(),
        expected: Mutex::default(),
    });
    (c, ctx)
}

/// The tolerations every DaemonSet pod gets besides its template's.
pub fn standard_tolerations() -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        toleration_seconds: None,
        value: None,
    };
    vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ]
}

fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect.as_deref().is_some_and(|e| !e.is_empty() && e != taint.effect) {
        return false;
    }
    match t.key.as_deref() {
        None | Some("") => t.operator.as_deref() == Some("Exists"),
        Some(k) if k != taint.key => false,
        Some(_) => t.operator.as_deref() == Some("Exists") || t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
    }
}

/// Whether a pod of `ds` belongs on `node`: node selector, required node affinity, and every
/// NoSchedule/NoExecute taint tolerated (with the standard DaemonSet tolerations).
pub fn eligible(ds: &DaemonSet, node: &Node) -> bool {
    let spec = ds.spec.template.spec.as_ref();
    let labels = node.meta().labels.clone().unwrap_or_default();
    if let Some(sel) = spec.and_then(|s| s.node_selector.as_ref())
        && !sel.iter().all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    let required = spec
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref());
    if required.is_some_and(|req| !super::node_selector_admits(req, node)) {
        return false;
    }
    let mut tolerations = spec.and_then(|s| s.tolerations.clone()).unwrap_or_default();
    tolerations.extend(standard_tolerations());
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default();
    taints.iter().filter(|t| t.effect != "PreferNoSchedule").all(|taint| tolerations.iter().any(|t| tolerates(t, taint)))
}

/// A hash of the DaemonSet's pod template.
pub fn template_hash(ds: &DaemonSet) -> String {
    let template = serde_json::to_string(&ds.spec.template).unwrap_or_default();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    template.hash(&mut h);
    format!("{:x}", h.finish() & 0x00ff_ffff_ffff)
}

fn pod_for(ds: &DaemonSet, node: &str, hash: &str) -> Pod {
    let template = ds.spec.template.clone();
    let tmeta = template.metadata.unwrap_or_default();
    let mut labels = tmeta.labels.unwrap_or_default();
    labels.insert(TEMPLATE_HASH.into(), hash.into());
    let mut spec = template.spec.unwrap_or_default();
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for t in standard_tolerations() {
        if !tolerations.contains(&t) {
            tolerations.push(t);
        }
    }
    spec.node_name = Some(node.into());
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", ds.name())),
            namespace: ds.meta().namespace.clone(),
            labels: Some(labels),
            annotations: tmeta.annotations,
            owner_references: Some(vec![controller_ref(ds)]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty())
}

fn is_updated(pod: &Pod, hash: &str) -> bool {
    pod.meta().labels.as_ref().and_then(|l| l.get(TEMPLATE_HASH)).is_some_and(|h| h == hash)
}

/// Reconciles one DaemonSet.
pub async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<DaemonSetCtx>) -> Result<Action, Error> {
    let ns = ds.namespace().unwrap_or("default").to_owned();
    let pods_api = Api::<Pod>::namespaced(ctx.shared.client.clone(), &ns);
    let hash = template_hash(&ds);
    let spec = ds.spec.clone();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    for pod in ctx.pods.by_index(INDEX_OWNER, ds.uid()) {
        if pod.namespace() != Some(ns.as_str()) || !pod_is_active(&pod) {
            // Failed pods are removed so that a fresh one replaces them.
            let failed = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed");
            if failed && !bosun_core::meta::is_deleting(pod.meta()) {
                ignore_not_found(pods_api.delete(pod.name(), &DeleteParams::default()).await)?;
            }
            continue;
        }
        by_node.entry(node_of(&pod).unwrap_or_default().to_owned()).or_default().push(pod);
    }
    let nodes: HashMap<String, Arc<Node>> = ctx.nodes.list().into_iter().map(|n| (n.name().to_owned(), n)).collect();
    let wanted: Vec<&String> = {
        let mut v: Vec<&String> = nodes.iter().filter(|(_, n)| eligible(&ds, n)).map(|(k, _)| k).collect();
        v.sort();
        v
    };
    let deleting = bosun_core::meta::is_deleting(ds.meta());
    let key = ObjectKey::of(&*ds);
    // Nodes whose new pod the cache does not show yet.
    let pending: HashSet<String> = {
        let mut map = ctx.expected.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let e = map.entry(key.clone()).or_default();
        e.retain(|_, (name, at)| at.elapsed() < EXPECTATION_TTL && ctx.pods.get(&ObjectKey::new(Some(&ns), name.clone())).is_none());
        e.keys().cloned().collect()
    };
    let expect = |created: &[(String, String)]| {
        let mut map = ctx.expected.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let e = map.entry(key.clone()).or_default();
        for (node, name) in created {
            e.insert(node.clone(), (name.clone(), Instant::now()));
        }
    };
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let rolling = strategy.type_.as_deref().unwrap_or("RollingUpdate") == "RollingUpdate";
    let resolve = |v: Option<&IntOrString>, default: usize| match v {
        Some(IntOrString::Int(n)) => usize::try_from((*n).max(0)).unwrap_or(0),
        Some(IntOrString::String(s)) => {
            let pct: usize = s.trim_end_matches('%').parse().unwrap_or(0);
            (wanted.len() * pct).div_ceil(100)
        }
        None => default,
    };
    let ru = strategy.rolling_update.clone().unwrap_or_default();
    // maxSurge: up to this many nodes run an updated pod beside the old one until it is available.
    let max_surge = if rolling { resolve(ru.max_surge.as_ref(), 0) } else { 0 };
    let available_now = |p: &Pod| pod_is_ready(p) && pod_is_available(p, min_ready).is_ok();
    let mut misscheduled = 0;
    // Pods on nodes that are gone or no longer eligible, and extras, go.
    for (node, pods) in &by_node {
        let keep = !deleting && wanted.contains(&node);
        if !keep {
            misscheduled += i32::from(nodes.contains_key(node));
        }
        let mut sorted = pods.clone();
        sorted.sort_by_key(|p| (!is_updated(p, &hash), !pod_is_ready(p), p.name().to_owned()));
        // A surging node keeps its old ready pod until the updated one is available.
        let surging = keep
            && max_surge > 0
            && sorted.first().is_some_and(|p| is_updated(p, &hash) && !available_now(p))
            && sorted.iter().any(|p| !is_updated(p, &hash) && pod_is_ready(p));
        let mut kept_old = false;
        for p in sorted.iter().skip(usize::from(keep)) {
            if surging && !kept_old && !is_updated(p, &hash) && pod_is_ready(p) {
                kept_old = true;
                continue;
            }
            ignore_not_found(pods_api.delete(p.name(), &DeleteParams::default()).await)?;
        }
    }
    if !deleting {
        let missing: Vec<&str> = wanted
            .iter()
            .filter(|n| by_node.get(**n).is_none_or(Vec::is_empty) && !pending.contains(n.as_str()))
            .map(|n| n.as_str())
            .collect();
        let (created, failed) = create_on(&pods_api, &ds, &missing, &hash).await;
        expect(&created);
        if let Some(e) = failed {
            return Err(e);
        }
    }
    // Status, over the one kept pod of each eligible node.
    let current: Vec<&Arc<Pod>> = wanted.iter().filter_map(|n| by_node.get(*n).and_then(|v| v.first())).collect();
    let ready = current.iter().filter(|p| pod_is_ready(p)).count();
    let available = current.iter().filter(|p| pod_is_ready(p) && pod_is_available(p, min_ready).is_ok()).count();
    let updated = current.iter().filter(|p| is_updated(p, &hash)).count();
    // RollingUpdate with maxSurge: start updated pods beside outdated ones on at most maxSurge
    // nodes at once; the outdated pod goes once its replacement is available (above). Outdated
    // pods that are not ready are replaced at once: that costs no availability.
    if !deleting && max_surge > 0 {
        let surging = wanted
            .iter()
            .filter(|n| {
                pending.contains(n.as_str())
                    || by_node
                        .get(**n)
                        .is_some_and(|ps| ps.iter().any(|p| is_updated(p, &hash)) && ps.iter().any(|p| !is_updated(p, &hash)))
            })
            .count();
        let mut budget = max_surge.saturating_sub(surging);
        for node in &wanted {
            if pending.contains(node.as_str()) {
                continue;
            }
            let Some(pods) = by_node.get(*node).filter(|ps| !ps.is_empty() && ps.iter().all(|p| !is_updated(p, &hash))) else { continue };
            if pods.iter().all(|p| !pod_is_ready(p)) {
                for p in pods {
                    ignore_not_found(pods_api.delete(p.name(), &DeleteParams::default()).await)?;
                }
                continue;
            }
            if budget == 0 {
                continue;
            }
            budget -= 1;
            let created = pods_api.create(&pod_for(&ds, node, &hash), &PostParams::default()).await?;
            expect(&[((*node).clone(), created.name().to_owned())]);
        }
    }
    // RollingUpdate: replace outdated pods while no more than maxUnavailable are unavailable.
    if !deleting && rolling && max_surge == 0 {
        let max_unavailable = resolve(ru.max_unavailable.as_ref(), 1).max(1);
        let in_flight: HashSet<String> = {
            let mut map = ctx.rolled.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let set = map.entry(key.clone()).or_default();
            set.retain(|name| ctx.pods.get(&ObjectKey::new(Some(&ns), name.clone())).is_some_and(|p| pod_is_active(&p)));
            set.clone()
        };
        let counted_available =
            current.iter().filter(|p| !in_flight.contains(p.name()) && pod_is_ready(p) && pod_is_available(p, min_ready).is_ok()).count();
        let unavailable = wanted.len().saturating_sub(counted_available);
        let budget = max_unavailable.saturating_sub(unavailable);
        let mut outdated: Vec<&&Arc<Pod>> = current.iter().filter(|p| !is_updated(p, &hash)).collect();
        // Unavailable outdated pods first: replacing them costs no availability.
        outdated.sort_by_key(|p| (pod_is_ready(p), p.name().to_owned()));
        let mut spent = 0;
        for p in outdated.into_iter().filter(|p| !in_flight.contains(p.name())) {
            let free = !pod_is_ready(p);
            if !free && spent >= budget {
                break;
            }
            spent += usize::from(!free);
            ctx.rolled
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(key.clone())
                .or_default()
                .insert(p.name().to_owned());
            ignore_not_found(pods_api.delete(p.name(), &DeleteParams::default()).await)?;
        }
    }
    let generation = ds.meta().generation.unwrap_or(0);
    let to_i32 = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let status = serde_json::json!({"status": {
        "desiredNumberScheduled": to_i32(wanted.len()),
        "currentNumberScheduled": to_i32(current.len()),
        "numberMisscheduled": misscheduled,
        "numberReady": to_i32(ready),
        "updatedNumberScheduled": to_i32(updated),
        "numberAvailable": to_i32(available),
        "numberUnavailable": to_i32(wanted.len().saturating_sub(available)),
        "observedGeneration": generation,
    }});
    let old = ds.status.clone().unwrap_or_default();
    let now = (
        old.desired_number_scheduled,
        old.current_number_scheduled,
        old.number_ready,
        old.updated_number_scheduled,
        old.number_available,
        old.observed_generation,
        old.number_misscheduled,
    );
    let new = (
        to_i32(wanted.len()),
        to_i32(current.len()),
        to_i32(ready),
        Some(to_i32(updated)),
        Some(to_i32(available)),
        Some(generation),
        misscheduled,
    );
    if now != new {
        let api = Api::<DaemonSet>::namespaced(ctx.shared.client.clone(), &ns);
        ignore_not_found(api.patch_status(ds.name(), &Patch::Merge(status), &PatchParams::default()).await)?;
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSelectorRequirement;
    use k8s_openapi::api::core::v1::{Affinity, NodeAffinity, NodeSelector, NodeSelectorTerm, NodeSpec};

    fn node(name: &str, labels: &[(&str, &str)], taints: Vec<Taint>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec { taints: Some(taints), ..NodeSpec::default() }),
            status: None,
        }
    }

    fn with_affinity(terms: Vec<NodeSelectorTerm>) -> DaemonSet {
        let mut ds = DaemonSet::default();
        ds.spec.template.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector { node_selector_terms: terms }),
                    ..NodeAffinity::default()
                }),
                ..Affinity::default()
            }),
            ..Default::default()
        });
        ds
    }

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement { key: key.into(), operator: op.into(), values: Some(values.iter().map(|v| (*v).to_owned()).collect()) }
    }

    #[test]
    fn required_node_affinity_and_taints_decide_eligibility() {
        let zone_a = with_affinity(vec![NodeSelectorTerm { match_expressions: Some(vec![req("zone", "In", &["a"])]), match_fields: None }]);
        assert!(eligible(&zone_a, &node("n1", &[("zone", "a")], vec![])));
        assert!(!eligible(&zone_a, &node("n2", &[("zone", "b")], vec![])));
        assert!(!eligible(&zone_a, &node("n3", &[], vec![])));
        let big = with_affinity(vec![NodeSelectorTerm { match_expressions: Some(vec![req("cpus", "Gt", &["4"])]), match_fields: None }]);
        assert!(eligible(&big, &node("n1", &[("cpus", "8")], vec![])));
        assert!(!eligible(&big, &node("n1", &[("cpus", "2")], vec![])));
        let by_name = with_affinity(vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![req("metadata.name", "In", &["n9"])]),
        }]);
        assert!(eligible(&by_name, &node("n9", &[], vec![])));
        assert!(!eligible(&by_name, &node("n8", &[], vec![])));
        let plain = DaemonSet::default();
        let taint = |key: &str, effect: &str| Taint { key: key.into(), effect: effect.into(), value: None, time_added: None };
        assert!(eligible(&plain, &node("n", &[], vec![taint("node.kubernetes.io/unschedulable", "NoSchedule")])));
        assert!(eligible(&plain, &node("n", &[], vec![taint("whatever", "PreferNoSchedule")])));
        assert!(!eligible(&plain, &node("n", &[], vec![taint("gpu", "NoExecute")])));
    }
}
