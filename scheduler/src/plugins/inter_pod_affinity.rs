//! InterPodAffinity (PreFilter, Filter, PreScore, Score; weight 2): required pod affinity and
//! anti-affinity, including the symmetry rule (existing pods' anti-affinity repels the new pod),
//! namespace selectors, and preferred terms for scoring.

use crate::framework::{
    ActionType, ClusterEventWithHint, CycleState, EventResource, FilterPlugin, Handle, MAX_NODE_SCORE, NodeScore, Plugin, PreFilterPlugin,
    PreFilterResult, PreScorePlugin, ScorePlugin, Status, SummaryFilter,
};
use crate::node_info::NodeInfo;
use crate::pod_info::{AffinityTerm, PodInfo};
use crate::snapshot::Snapshot;
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The reason when required affinity is not met.
pub const REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";
/// The reason when the pod's anti-affinity is violated.
pub const REASON_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
/// The reason when an existing pod's anti-affinity is violated.
pub const REASON_EXISTING_ANTI_AFFINITY: &str = "node(s) didn't satisfy existing pods anti-affinity rules";

/// Inter-pod affinity.
#[derive(Debug, Clone)]
pub struct InterPodAffinity {
    /// Score weight existing pods' required affinity terms give to nodes (kube's `hardPodAffinityWeight`, 1).
    pub hard_pod_affinity_weight: i64,
}

impl Default for InterPodAffinity {
    fn default() -> Self {
        Self { hard_pod_affinity_weight: 1 }
    }
}

/// Counts by topology key, then value.
type Counts = HashMap<String, HashMap<String, i64>>;

#[derive(Debug, Clone, Default)]
struct FilterState {
    /// Topology pairs where existing pods' anti-affinity terms match the incoming pod.
    existing_anti: Counts,
    /// Topology pairs with pods matching all the incoming pod's affinity terms.
    affinity: Counts,
    /// Topology pairs with pods matching the incoming pod's anti-affinity terms.
    anti: Counts,
    ns_labels: Option<Arc<BTreeMap<String, String>>>,
    /// Hostname labels are unique: anti-affinity terms on the hostname key are checked against
    /// the node's own pods in Filter instead of counted over the cluster in PreFilter.
    by_node: bool,
    /// PreFilter excluded every snapshot node those per-node checks reject (both the pod's own
    /// hostname terms and existing pods' hostname terms against it).
    exclusion_complete: bool,
}

#[derive(Debug, Clone, Default)]
struct ScoreState {
    scores: HashMap<String, HashMap<String, i64>>,
}

impl Plugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        "InterPodAffinity"
    }
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        vec![
            ClusterEventWithHint::always(
                EventResource::AssignedPod,
                ActionType::ADD.or(ActionType::DELETE).or(ActionType::UPDATE_POD_LABEL),
            ),
            ClusterEventWithHint::always(EventResource::Node, ActionType::ADD.or(ActionType::UPDATE_NODE_LABEL)),
            ClusterEventWithHint::always(EventResource::Namespace, ActionType::ADD.or(ActionType::UPDATE)),
        ]
    }
    fn as_pre_filter(self: Arc<Self>) -> Option<Arc<dyn PreFilterPlugin>> {
        Some(self)
    }
    fn as_filter(self: Arc<Self>) -> Option<Arc<dyn FilterPlugin>> {
        Some(self)
    }
    fn as_pre_score(self: Arc<Self>) -> Option<Arc<dyn PreScorePlugin>> {
        Some(self)
    }
    fn as_score(self: Arc<Self>) -> Option<Arc<dyn ScorePlugin>> {
        Some(self)
    }
}

const HOSTNAME: &str = crate::snapshot::HOSTNAME_LABEL;

/// Whether a term is left to the per-node check.
fn per_node(s: &FilterState, term: &AffinityTerm) -> bool {
    s.by_node && term.topology_key == HOSTNAME
}

fn term_matches(term: &AffinityTerm, pod: &PodInfo, handle: &Handle) -> bool {
    term.matches(pod, || handle.namespace_labels(&pod.namespace))
}

fn bump(counts: &mut Counts, key: &str, node: &NodeInfo, delta: i64) {
    let Some(v) = node.labels().get(key) else { return };
    let by_value = match counts.get_mut(key) {
        Some(m) => m,
        None => counts.entry(key.to_owned()).or_default(),
    };
    match by_value.get_mut(v.as_str()) {
        Some(n) => *n += delta,
        None => {
            by_value.insert(v.clone(), delta);
        }
    }
}

/// Adds (delta 1) or removes (-1) the contribution of `existing` on `node` for the incoming `pod`.
fn account(s: &mut FilterState, pod: &PodInfo, existing: &PodInfo, node: &NodeInfo, handle: &Handle, delta: i64) {
    // Symmetry: the existing pod's anti-affinity terms that match the incoming pod.
    for t in &existing.required_anti_affinity {
        if !per_node(s, t) && t.matches(pod, || s.ns_labels.clone()) {
            bump(&mut s.existing_anti, &t.topology_key, node, delta);
        }
    }
    if !pod.required_affinity.is_empty() && pod.required_affinity.iter().all(|t| term_matches(t, existing, handle)) {
        for t in &pod.required_affinity {
            bump(&mut s.affinity, &t.topology_key, node, delta);
        }
    }
    for t in &pod.required_anti_affinity {
        if !per_node(s, t) && term_matches(t, existing, handle) {
            bump(&mut s.anti, &t.topology_key, node, delta);
        }
    }
}

fn merge(mut a: Counts, b: Counts) -> Counts {
    for (k, m) in b {
        let into = a.entry(k).or_default();
        for (v, n) in m {
            *into.entry(v).or_default() += n;
        }
    }
    a
}

impl PreFilterPlugin for InterPodAffinity {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snapshot: &Snapshot, handle: &Handle) -> (Option<PreFilterResult>, Status) {
        let own = !pod.required_affinity.is_empty() || !pod.required_anti_affinity.is_empty();
        if !own && snapshot.with_required_anti_affinity.is_empty() {
            return (None, Status::skip());
        }
        let ns_labels = handle.namespace_labels(&pod.namespace);
        // Per-node checks need no namespace labels of other pods: not for terms with a namespace selector.
        let by_node = snapshot.hostnames_unique()
            && !pod
                .required_anti_affinity
                .iter()
                .any(|t| t.topology_key == HOSTNAME && t.namespace_selector.as_ref().is_some_and(|s| !s.is_empty()));
        let mut s = FilterState { ns_labels: ns_labels.clone(), by_node, ..FilterState::default() };
        // With hostname terms checked per node, the nodes they rule out are known here already:
        // the framework then skips the whole filter chain on them (the per-node check in Filter
        // stays for preemption's dry runs). Not with required affinity, whose reason comes first.
        let exclude = by_node && pod.required_affinity.is_empty();
        let mut excluded: Vec<u8> = Vec::new();
        let hostnames = snapshot.topology_column(HOSTNAME);
        if exclude {
            for t in pod.required_anti_affinity.iter().filter(|t| t.topology_key == HOSTNAME) {
                let key = format!("anti\0{:?}\0{}\0{}", t.namespaces, t.namespace_selector.is_some(), t.selector);
                let count = |n: &NodeInfo| n.pods.iter().filter(|e| t.matches(e, || None)).count() as i64;
                let counts = snapshot.node_counts(&key, &hostnames, &|i| hostnames[i].is_some(), &count);
                if counts.per_node.iter().any(|c| *c > 0) {
                    excluded.resize(snapshot.len(), 0);
                    for (i, c) in counts.per_node.iter().enumerate() {
                        if *c > 0 {
                            excluded[i] = 1;
                        }
                    }
                }
            }
        }
        if exclude {
            // Existing pods' hostname anti-affinity against the incoming pod, counted per node
            // once and then kept up to date from the nodes that change. The key names all the
            // count depends on: the pod's namespace, labels and its namespace's labels.
            let key = format!("repels\0{}\0{:?}\0{:?}", pod.namespace, pod.labels(), ns_labels);
            let count = |n: &NodeInfo| {
                if n.pods_with_required_anti_affinity == 0 {
                    return 0;
                }
                let repels = |e: &&Arc<PodInfo>| {
                    e.required_anti_affinity.iter().any(|t| t.topology_key == HOSTNAME && t.matches(pod, || ns_labels.clone()))
                };
                n.pods.iter().filter(|e| e.has_required_anti_affinity()).filter(repels).count() as i64
            };
            let counts = snapshot.node_counts(&key, &hostnames, &|i| hostnames[i].is_some(), &count);
            if counts.per_node.iter().any(|c| *c > 0) {
                excluded.resize(snapshot.len(), 0);
                for (i, c) in counts.per_node.iter().enumerate() {
                    if *c > 0 && excluded[i] == 0 {
                        excluded[i] = 2;
                    }
                }
            }
        }
        // Existing pods' other anti-affinity terms against the incoming pod: only nodes that have
        // such terms (with the hostname terms counted above, nodes whose pods have other terms).
        let others: Vec<usize> = if exclude {
            let count = |n: &NodeInfo| {
                if n.pods_with_required_anti_affinity == 0 {
                    return 0;
                }
                n.pods.iter().flat_map(|e| e.required_anti_affinity.iter()).filter(|t| t.topology_key != HOSTNAME).count() as i64
            };
            let counts = snapshot.node_counts("anti-not-hostname", &hostnames, &|_| true, &count);
            counts.per_node.iter().enumerate().filter(|(_, c)| **c > 0).map(|(i, _)| i).collect()
        } else {
            snapshot.with_required_anti_affinity.clone()
        };
        for &idx in &others {
            let n = &snapshot.nodes()[idx];
            for e in n.pods.iter().filter(|p| p.has_required_anti_affinity()) {
                for t in &e.required_anti_affinity {
                    // Hostname terms are checked per node in Filter, or were counted above.
                    if !(by_node && t.topology_key == HOSTNAME) && t.matches(pod, || ns_labels.clone()) {
                        bump(&mut s.existing_anti, &t.topology_key, n, 1);
                    }
                }
            }
        }
        s.exclusion_complete = exclude;
        if excluded.iter().any(|x| *x != 0) {
            state.excluded = Some((
                Arc::new(excluded),
                vec![
                    Status::unschedulable(REASON_ANTI_AFFINITY).with_plugin(self.name()),
                    Status::unschedulable(REASON_EXISTING_ANTI_AFFINITY).with_plugin(self.name()),
                ],
            ));
        }
        let cluster_wide =
            !pod.required_affinity.is_empty() || pod.required_anti_affinity.iter().any(|t| !(by_node && t.topology_key == HOSTNAME));
        if own && cluster_wide {
            let scan = |nodes: &[Arc<NodeInfo>]| -> (Counts, Counts) {
                let mut aff = Counts::new();
                let mut anti = Counts::new();
                for n in nodes {
                    for e in &n.pods {
                        if !pod.required_affinity.is_empty() && pod.required_affinity.iter().all(|t| term_matches(t, e, handle)) {
                            for t in &pod.required_affinity {
                                bump(&mut aff, &t.topology_key, n, 1);
                            }
                        }
                        for t in &pod.required_anti_affinity {
                            if !(by_node && t.topology_key == HOSTNAME) && term_matches(t, e, handle) {
                                bump(&mut anti, &t.topology_key, n, 1);
                            }
                        }
                    }
                }
                (aff, anti)
            };
            let nodes = snapshot.nodes();
            let (aff, anti) = if nodes.len() >= 1024 {
                nodes.par_chunks(512).map(scan).reduce(|| (Counts::new(), Counts::new()), |a, b| (merge(a.0, b.0), merge(a.1, b.1)))
            } else {
                scan(nodes)
            };
            s.affinity = aff;
            s.anti = anti;
        }
        state.insert(s);
        (None, Status::success())
    }

    fn has_extensions(&self) -> bool {
        true
    }

    fn add_pod(&self, state: &mut CycleState, pod: &PodInfo, to_add: &Arc<PodInfo>, node: &NodeInfo, handle: &Handle) -> Status {
        if let Some(s) = state.get_mut::<FilterState>() {
            account(s, pod, to_add, node, handle, 1);
        }
        Status::success()
    }

    fn remove_pod(&self, state: &mut CycleState, pod: &PodInfo, to_remove: &Arc<PodInfo>, node: &NodeInfo, handle: &Handle) -> Status {
        if let Some(s) = state.get_mut::<FilterState>() {
            account(s, pod, to_remove, node, handle, -1);
        }
        Status::success()
    }
}

fn positive(counts: &Counts, key: &str, value: &str) -> bool {
    counts.get(key).and_then(|m| m.get(value)).is_some_and(|n| *n > 0)
}

impl FilterPlugin for InterPodAffinity {
    fn summary_filter<'a>(&'a self, state: &'a CycleState, pod: &'a PodInfo, _: &'a Snapshot) -> SummaryFilter<'a> {
        let Some(s) = state.get::<FilterState>() else { return SummaryFilter::Pass };
        let none = |c: &Counts| c.values().all(|m| m.values().all(|n| *n <= 0));
        // Every per-node rejection is already an exclusion and nothing is counted over domains:
        // the nodes that reach Filter pass.
        if s.exclusion_complete && pod.required_affinity.is_empty() && none(&s.anti) && none(&s.existing_anti) {
            SummaryFilter::Pass
        } else {
            SummaryFilter::Full
        }
    }

    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(s) = state.get::<FilterState>() else { return Status::success() };
        let labels = node.labels();
        // Required affinity: every term's domain on this node must hold a matching pod...
        if !pod.required_affinity.is_empty() {
            let mut exists = true;
            for t in &pod.required_affinity {
                match labels.get(&t.topology_key) {
                    Some(v) if positive(&s.affinity, &t.topology_key, v) => {}
                    _ => exists = false,
                }
            }
            if !exists {
                // ...unless no pod matches anywhere and the pod matches its own terms (the first of a group).
                let all_keys = pod.required_affinity.iter().all(|t| labels.contains_key(&t.topology_key));
                let first = s.affinity.values().flat_map(HashMap::values).all(|n| *n <= 0)
                    && all_keys
                    && pod.required_affinity.iter().all(|t| t.matches(pod, || s.ns_labels.clone()));
                if !first {
                    return Status::unresolvable(REASON_AFFINITY);
                }
            }
        }
        for t in &pod.required_anti_affinity {
            let Some(v) = labels.get(&t.topology_key) else { continue };
            let hit = if per_node(s, t) {
                // Terms with a namespace selector are never per node (see PreFilter): no labels needed.
                node.pods.iter().any(|e| t.matches(e, || None))
            } else {
                positive(&s.anti, &t.topology_key, v)
            };
            if hit {
                return Status::unschedulable(REASON_ANTI_AFFINITY);
            }
        }
        if s.by_node && node.pods_with_required_anti_affinity > 0 && labels.contains_key(HOSTNAME) {
            let repelled = node
                .pods
                .iter()
                .filter(|e| e.has_required_anti_affinity())
                .any(|e| e.required_anti_affinity.iter().any(|t| t.topology_key == HOSTNAME && t.matches(pod, || s.ns_labels.clone())));
            if repelled {
                return Status::unschedulable(REASON_EXISTING_ANTI_AFFINITY);
            }
        }
        for (k, m) in &s.existing_anti {
            if let Some(v) = labels.get(k)
                && m.get(v).is_some_and(|n| *n > 0)
            {
                return Status::unschedulable(REASON_EXISTING_ANTI_AFFINITY);
            }
        }
        Status::success()
    }
}

impl PreScorePlugin for InterPodAffinity {
    fn pre_score(&self, state: &mut CycleState, pod: &PodInfo, _: &[&NodeInfo], snapshot: &Snapshot, handle: &Handle) -> Status {
        let own = !pod.preferred_affinity.is_empty() || !pod.preferred_anti_affinity.is_empty();
        // Existing pods count only through required affinity and preferred terms: their required
        // anti-affinity never scores.
        if !own && snapshot.with_scoring_affinity.is_empty() {
            return Status::skip();
        }
        let ns_labels = handle.namespace_labels(&pod.namespace);
        let mut scores: HashMap<String, HashMap<String, i64>> = HashMap::new();
        let mut add = |key: &str, node: &NodeInfo, w: i64| {
            if let Some(v) = node.labels().get(key) {
                *scores.entry(key.to_owned()).or_default().entry(v.clone()).or_default() += w;
            }
        };
        let visit = |n: &NodeInfo, add: &mut dyn FnMut(&str, &NodeInfo, i64)| {
            for e in &n.pods {
                for w in &pod.preferred_affinity {
                    if term_matches(&w.term, e, handle) {
                        add(&w.term.topology_key, n, w.weight);
                    }
                }
                for w in &pod.preferred_anti_affinity {
                    if term_matches(&w.term, e, handle) {
                        add(&w.term.topology_key, n, -w.weight);
                    }
                }
                if !e.has_affinity() {
                    continue;
                }
                for t in &e.required_affinity {
                    if self.hard_pod_affinity_weight > 0 && t.matches(pod, || ns_labels.clone()) {
                        add(&t.topology_key, n, self.hard_pod_affinity_weight);
                    }
                }
                for w in &e.preferred_affinity {
                    if w.term.matches(pod, || ns_labels.clone()) {
                        add(&w.term.topology_key, n, w.weight);
                    }
                }
                for w in &e.preferred_anti_affinity {
                    if w.term.matches(pod, || ns_labels.clone()) {
                        add(&w.term.topology_key, n, -w.weight);
                    }
                }
            }
        };
        if own {
            for n in snapshot.nodes() {
                visit(n, &mut add);
            }
        } else {
            for n in snapshot.nodes_with_scoring_affinity() {
                visit(n, &mut add);
            }
        }
        if scores.values().all(|m| m.values().all(|v| *v == 0)) {
            return Status::skip();
        }
        state.insert(ScoreState { scores });
        Status::success()
    }
}

impl ScorePlugin for InterPodAffinity {
    fn score(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(s) = state.get::<ScoreState>() else { return Ok(0) };
        let labels = node.labels();
        Ok(s.scores.iter().filter_map(|(k, m)| labels.get(k).and_then(|v| m.get(v))).sum())
    }

    fn normalize_score(&self, state: &CycleState, _: &PodInfo, scores: &mut [NodeScore]) -> Status {
        if state.get::<ScoreState>().is_none() {
            return Status::success();
        }
        let min = scores.iter().map(|s| s.score).min().unwrap_or(0);
        let max = scores.iter().map(|s| s.score).max().unwrap_or(0);
        let diff = max - min;
        for s in scores.iter_mut() {
            s.score = if diff > 0 { MAX_NODE_SCORE * (s.score - min) / diff } else { 0 };
        }
        Status::success()
    }
}

#[cfg(test)]
mod tests;
