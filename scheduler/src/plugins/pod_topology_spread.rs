//! PodTopologySpread (PreFilter, Filter, PreScore, Score; weight 2): hard constraints
//! (`DoNotSchedule`) filter by skew with `minDomains`, `nodeAffinityPolicy` and
//! `nodeTaintsPolicy`; soft ones (`ScheduleAnyway`) score, as kube-scheduler does.

use crate::framework::{
    ActionType, ClusterEventWithHint, CycleState, EventResource, FilterPlugin, Handle, MAX_NODE_SCORE, NodeScore, Plugin, PreFilterPlugin,
    PreFilterResult, PreScorePlugin, ScorePlugin, Status, SummaryFilter,
};
use crate::node_info::NodeInfo;
use crate::pod_info::{PodInfo, SpreadConstraint, WhenUnsatisfiable, tolerates};
use crate::snapshot::Snapshot;
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The reason when the skew would be too large.
pub const REASON_CONSTRAINTS: &str = "node(s) didn't match pod topology spread constraints";
/// The reason when the node lacks a topology label.
pub const REASON_LABEL: &str = "node(s) didn't match pod topology spread constraints (missing required label)";
const HOSTNAME: &str = "kubernetes.io/hostname";

/// Topology spread.
#[derive(Debug, Clone, Default)]
pub struct PodTopologySpread;

#[derive(Debug, Clone)]
struct FilterState {
    constraints: Vec<SpreadConstraint>,
    counts: Vec<HashMap<String, i64>>,
    min: Vec<i64>,
}

#[derive(Debug, Clone)]
struct ScoreState {
    constraints: Vec<SpreadConstraint>,
    counts: Vec<HashMap<String, i64>>,
    weights: Vec<f64>,
    ignored: HashSet<usize>,
    require_all: bool,
}

impl Plugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        "PodTopologySpread"
    }
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        vec![
            ClusterEventWithHint::always(
                EventResource::AssignedPod,
                ActionType::ADD.or(ActionType::DELETE).or(ActionType::UPDATE_POD_LABEL),
            ),
            ClusterEventWithHint::always(
                EventResource::Node,
                ActionType::ADD.or(ActionType::DELETE).or(ActionType::UPDATE_NODE_LABEL).or(ActionType::UPDATE_NODE_TAINT),
            ),
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

/// kube-scheduler's system default constraints (`defaultingType: System`), soft, for pods that
/// declare none, over the pods the Services selecting the pod select.
fn system_defaults(selector: bosun_core::LabelSelector) -> Vec<SpreadConstraint> {
    [(3, HOSTNAME), (5, "topology.kubernetes.io/zone")]
        .into_iter()
        .map(|(max_skew, key)| SpreadConstraint {
            max_skew,
            topology_key: key.to_owned(),
            when_unsatisfiable: WhenUnsatisfiable::ScheduleAnyway,
            selector: selector.clone(),
            min_domains: None,
            honor_node_affinity: true,
            honor_node_taints: false,
        })
        .collect()
}

fn has_all_keys(node: &NodeInfo, constraints: &[SpreadConstraint]) -> bool {
    let l = node.labels();
    constraints.iter().all(|c| l.contains_key(&c.topology_key))
}

fn counts_for(c: &SpreadConstraint, pod: &PodInfo, node: &NodeInfo) -> bool {
    if c.honor_node_affinity && !pod.required_node_affinity.is_empty() && !pod.required_node_affinity.matches(node.labels(), &node.name) {
        return false;
    }
    if c.honor_node_taints {
        let blocked = node
            .taints()
            .iter()
            .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
            .any(|t| !pod.tolerations.iter().any(|tol| tolerates(tol, t)));
        if blocked {
            return false;
        }
    }
    true
}

fn matching(c: &SpreadConstraint, ns: &str, node: &NodeInfo) -> i64 {
    node.pods.iter().filter(|p| p.namespace == ns && !p.is_terminating() && c.selector.matches(p.labels())).count() as i64
}

fn min_of(counts: &HashMap<String, i64>) -> i64 {
    counts.values().copied().min().unwrap_or(i64::from(i32::MAX))
}

/// Counts matching pods per domain over `nodes`; `only_domains` restricts to known domains (scoring).
fn count_domains(
    constraints: &[SpreadConstraint],
    pod: &PodInfo,
    snapshot: &Snapshot,
    only: Option<&[HashMap<String, i64>]>,
    require_all: bool,
) -> Vec<HashMap<String, i64>> {
    let nodes = snapshot.nodes();
    let columns: Vec<_> = constraints.iter().map(|c| snapshot.topology_column(&c.topology_key)).collect();
    let one = |range: std::ops::Range<usize>| -> Vec<HashMap<String, i64>> {
        let mut out = vec![HashMap::new(); constraints.len()];
        for idx in range {
            if require_all && columns.iter().any(|col| col[idx].is_none()) {
                continue;
            }
            let n = &nodes[idx];
            for (i, c) in constraints.iter().enumerate() {
                if only.is_some() && c.topology_key == HOSTNAME {
                    continue;
                }
                let Some(v) = columns[i][idx].as_deref() else { continue };
                if let Some(known) = only
                    && !known[i].contains_key(v)
                {
                    continue;
                }
                if !counts_for(c, pod, n) {
                    continue;
                }
                let k = if n.pods.is_empty() { 0 } else { matching(c, &pod.namespace, n) };
                match out[i].get_mut(v) {
                    Some(x) => *x += k,
                    None => {
                        out[i].insert(v.to_owned(), k);
                    }
                }
            }
        }
        out
    };
    if nodes.len() < 1024 {
        return one(0..nodes.len());
    }
    let chunks: Vec<std::ops::Range<usize>> = (0..nodes.len()).step_by(512).map(|s| s..(s + 512).min(nodes.len())).collect();
    chunks.into_par_iter().map(one).reduce(
        || vec![HashMap::new(); constraints.len()],
        |mut a, b| {
            for (ai, bi) in a.iter_mut().zip(b) {
                for (k, v) in bi {
                    *ai.entry(k).or_default() += v;
                }
            }
            a
        },
    )
}

/// Whether which nodes count for a constraint does not depend on the incoming pod (its node
/// affinity or tolerations), so that the counts can be shared by every pod with the constraint.
fn pod_independent(c: &SpreadConstraint, pod: &PodInfo) -> bool {
    !c.honor_node_taints && (!c.honor_node_affinity || pod.required_node_affinity.is_empty())
}

/// PreFilter's counts from the snapshot's incrementally maintained per-node counts: a full scan
/// once per snapshot rebuild, then only the nodes that changed since the previous cycle.
fn cached_counts(constraints: &[SpreadConstraint], pod: &PodInfo, snapshot: &Snapshot) -> Vec<HashMap<String, i64>> {
    let columns: Vec<_> = constraints.iter().map(|c| snapshot.topology_column(&c.topology_key)).collect();
    let all_keys: Vec<&str> = constraints.iter().map(|c| c.topology_key.as_str()).collect();
    let all_keys = all_keys.join("\u{1}");
    let qualifies = |idx: usize| columns.iter().all(|col| col[idx].is_some());
    constraints
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let key = format!("spread\0{}\0{}\0{}\0{all_keys}", pod.namespace, c.topology_key, c.selector);
            let count = |n: &NodeInfo| if n.pods.is_empty() { 0 } else { matching(c, &pod.namespace, n) };
            snapshot.node_counts(&key, &columns[i], &qualifies, &count).by_domain.as_ref().clone()
        })
        .collect()
}

impl PreFilterPlugin for PodTopologySpread {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snapshot: &Snapshot, _: &Handle) -> (Option<PreFilterResult>, Status) {
        let constraints: Vec<SpreadConstraint> =
            pod.spread_constraints.iter().filter(|c| c.when_unsatisfiable == WhenUnsatisfiable::DoNotSchedule).cloned().collect();
        if constraints.is_empty() {
            return (None, Status::skip());
        }
        let counts = if constraints.iter().all(|c| pod_independent(c, pod)) {
            cached_counts(&constraints, pod, snapshot)
        } else {
            count_domains(&constraints, pod, snapshot, None, true)
        };
        let min = counts.iter().map(min_of).collect();
        state.insert(FilterState { constraints, counts, min });
        (None, Status::success())
    }

    fn has_extensions(&self) -> bool {
        true
    }

    fn add_pod(&self, state: &mut CycleState, pod: &PodInfo, to_add: &Arc<PodInfo>, node: &NodeInfo, _: &Handle) -> Status {
        update(state, pod, to_add, node, 1);
        Status::success()
    }

    fn remove_pod(&self, state: &mut CycleState, pod: &PodInfo, to_remove: &Arc<PodInfo>, node: &NodeInfo, _: &Handle) -> Status {
        update(state, pod, to_remove, node, -1);
        Status::success()
    }
}

fn update(state: &mut CycleState, pod: &PodInfo, other: &PodInfo, node: &NodeInfo, delta: i64) {
    let Some(s) = state.get_mut::<FilterState>() else { return };
    if other.namespace != pod.namespace || !has_all_keys(node, &s.constraints) {
        return;
    }
    for i in 0..s.constraints.len() {
        let c = &s.constraints[i];
        if !counts_for(c, pod, node) || !c.selector.matches(other.labels()) {
            continue;
        }
        if let Some(v) = node.labels().get(&c.topology_key) {
            *s.counts[i].entry(v.clone()).or_default() += delta;
            s.min[i] = min_of(&s.counts[i]);
        }
    }
}

/// Domains per constraint up to which the filter decides every domain once per cycle instead of
/// looking each node's domain up.
const PRECOMPUTED_DOMAINS: usize = 256;

impl FilterPlugin for PodTopologySpread {
    fn summary_filter<'a>(&'a self, state: &'a CycleState, pod: &'a PodInfo, snapshot: &'a Snapshot) -> SummaryFilter<'a> {
        let Some(s) = state.get::<FilterState>() else { return SummaryFilter::Pass };
        // Per constraint: every node's domain, and what placing the pod in each domain gives
        // (true: within the skew), decided up front for a few domains.
        let mut rules = Vec::with_capacity(s.constraints.len());
        for (i, c) in s.constraints.iter().enumerate() {
            let ids = snapshot.domain_ids(&c.topology_key);
            let mut min = s.min[i];
            if let Some(md) = c.min_domains
                && (s.counts[i].len() as i64) < md
            {
                min = 0;
            }
            let self_match = i64::from(c.selector.matches(pod.labels()));
            let fits = move |count: i64| count + self_match - min <= c.max_skew;
            let decided: Option<Vec<bool>> = (ids.values.len() <= PRECOMPUTED_DOMAINS)
                .then(|| ids.values.iter().map(|v| fits(s.counts[i].get(&**v).copied().unwrap_or(0))).collect());
            rules.push((ids, decided, fits));
        }
        SummaryFilter::Check(Box::new(move |idx, _| {
            for (i, (ids, decided, fits)) in rules.iter().enumerate() {
                let id = *ids.ids.get(idx)?;
                if id == crate::snapshot::DomainIds::NONE {
                    return Some(Status::unresolvable(REASON_LABEL));
                }
                let ok = match decided {
                    Some(d) => *d.get(id as usize)?,
                    None => fits(s.counts[i].get(&*ids.values[id as usize]).copied().unwrap_or(0)),
                };
                if !ok {
                    return Some(Status::unschedulable(REASON_CONSTRAINTS));
                }
            }
            Some(Status::success())
        }))
    }

    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(s) = state.get::<FilterState>() else { return Status::success() };
        for (i, c) in s.constraints.iter().enumerate() {
            let Some(v) = node.labels().get(&c.topology_key) else { return Status::unresolvable(REASON_LABEL) };
            let mut min = s.min[i];
            if let Some(md) = c.min_domains
                && (s.counts[i].len() as i64) < md
            {
                min = 0;
            }
            let self_match = i64::from(c.selector.matches(pod.labels()));
            let count = s.counts[i].get(v.as_str()).copied().unwrap_or(0);
            if count + self_match - min > c.max_skew {
                return Status::unschedulable(REASON_CONSTRAINTS);
            }
        }
        Status::success()
    }
}

impl PreScorePlugin for PodTopologySpread {
    fn pre_score(&self, state: &mut CycleState, pod: &PodInfo, nodes: &[&NodeInfo], snapshot: &Snapshot, handle: &Handle) -> Status {
        let (constraints, require_all) = if pod.spread_constraints.is_empty() {
            match handle.default_spread_selector(pod) {
                Some(selector) => (system_defaults(selector), false),
                None => return Status::skip(),
            }
        } else {
            let soft: Vec<SpreadConstraint> =
                pod.spread_constraints.iter().filter(|c| c.when_unsatisfiable == WhenUnsatisfiable::ScheduleAnyway).cloned().collect();
            (soft, true)
        };
        if constraints.is_empty() {
            return Status::skip();
        }
        let mut ignored = HashSet::new();
        let mut known = vec![HashMap::new(); constraints.len()];
        let mut hostnames = 0usize;
        for n in nodes {
            if require_all && !has_all_keys(n, &constraints) {
                if let Some(i) = snapshot.index_of(&n.name) {
                    ignored.insert(i);
                }
                continue;
            }
            hostnames += 1;
            for (i, c) in constraints.iter().enumerate() {
                if c.topology_key != HOSTNAME
                    && let Some(v) = n.labels().get(&c.topology_key)
                {
                    known[i].entry(v.clone()).or_insert(0i64);
                }
            }
        }
        let counts = count_domains(&constraints, pod, snapshot, Some(&known), require_all);
        let counts: Vec<HashMap<String, i64>> = known
            .into_iter()
            .zip(counts)
            .map(|(mut k, c)| {
                for (d, n) in c {
                    k.insert(d, n);
                }
                k
            })
            .collect();
        let weights = constraints
            .iter()
            .zip(&counts)
            .map(|(c, m)| {
                let size = if c.topology_key == HOSTNAME { hostnames } else { m.len() };
                ((size + 2) as f64).ln()
            })
            .collect();
        state.insert(ScoreState { constraints, counts, weights, ignored, require_all });
        Status::success()
    }
}

impl ScorePlugin for PodTopologySpread {
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(s) = state.get::<ScoreState>() else { return Ok(0) };
        if s.require_all && !has_all_keys(node, &s.constraints) {
            return Ok(0);
        }
        let mut score = 0.0;
        for (i, c) in s.constraints.iter().enumerate() {
            let Some(v) = node.labels().get(&c.topology_key) else { continue };
            let cnt = if c.topology_key == HOSTNAME {
                matching(c, &pod.namespace, node)
            } else {
                s.counts[i].get(v.as_str()).copied().unwrap_or(0)
            };
            score += cnt as f64 * s.weights[i] + (c.max_skew - 1) as f64;
        }
        Ok(score.round() as i64)
    }

    fn normalize_score(&self, state: &CycleState, _: &PodInfo, scores: &mut [NodeScore]) -> Status {
        let Some(s) = state.get::<ScoreState>() else { return Status::success() };
        let live = || scores.iter().filter(|x| !s.ignored.contains(&x.index)).map(|x| x.score);
        let min = live().min().unwrap_or(0);
        let max = live().max().unwrap_or(0);
        for x in scores.iter_mut() {
            if s.ignored.contains(&x.index) {
                x.score = 0;
            } else if max == 0 {
                x.score = MAX_NODE_SCORE;
            } else {
                x.score = MAX_NODE_SCORE * (max + min - x.score) / max;
            }
        }
        Status::success()
    }
}

#[cfg(test)]
mod tests;
