//! NodeResourcesFit (PreFilter, Filter, Score; weight 1): requests must fit the node's free
//! allocatable (CPU, memory, ephemeral storage, pods, extended resources); scoring by
//! LeastAllocated (default), MostAllocated or RequestedToCapacityRatio.

use crate::framework::{
    ActionType, ClusterEventWithHint, CycleState, EventResource, FilterPlugin, Handle, MAX_NODE_SCORE, Plugin, PreFilterPlugin,
    PreFilterResult, QueueingHint, ScorePlugin, Status, SummaryFilter, SummaryScore,
};
use crate::node_info::{NodeInfo, NodeSummary};
use crate::pod_info::PodInfo;
use crate::resources::{CPU, MEMORY};
use crate::snapshot::Snapshot;
use std::borrow::Cow;
use std::sync::Arc;

/// How nodes are scored.
#[derive(Debug, Clone, PartialEq)]
pub enum ScoringStrategy {
    /// Prefer nodes with more free resources (spreading). The default.
    LeastAllocated,
    /// Prefer nodes with fewer free resources (bin packing).
    MostAllocated,
    /// A piecewise-linear function of utilisation: points (utilisation 0–100, score 0–10).
    RequestedToCapacityRatio(Vec<(i64, i64)>),
}

/// Resource requests against allocatable.
#[derive(Debug, Clone)]
pub struct NodeResourcesFit {
    strategy: ScoringStrategy,
    /// Resources scored, with weights (default cpu 1, memory 1).
    resources: Vec<(String, i64)>,
}

impl Default for NodeResourcesFit {
    fn default() -> Self {
        Self::new(ScoringStrategy::LeastAllocated)
    }
}

impl NodeResourcesFit {
    /// With a scoring strategy over cpu and memory (weight 1 each).
    pub fn new(strategy: ScoringStrategy) -> Self {
        Self { strategy, resources: vec![(CPU.to_owned(), 1), (MEMORY.to_owned(), 1)] }
    }

    /// Scores these resources with these weights instead.
    #[must_use]
    pub fn scored_resources(mut self, resources: Vec<(String, i64)>) -> Self {
        self.resources = resources;
        self
    }
}

impl Plugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        vec![
            ClusterEventWithHint::with_hint(
                EventResource::AssignedPod,
                ActionType::DELETE.or(ActionType::UPDATE_POD_SCALE_DOWN),
                |_, old, _| match old.and_then(|o| o.pod()) {
                    Some(o) if o.requests.is_zero() => QueueingHint::QueueSkip,
                    _ => QueueingHint::Queue,
                },
            ),
            ClusterEventWithHint::with_hint(EventResource::Node, ActionType::ADD.or(ActionType::UPDATE_NODE_ALLOCATABLE), |pod, _, new| {
                match new.and_then(|n| n.node()) {
                    Some(n) if insufficient(pod, &NodeInfo::with_pods(n.clone(), [])).is_empty() => QueueingHint::Queue,
                    _ => QueueingHint::QueueSkip,
                }
            }),
            ClusterEventWithHint::always(EventResource::UnscheduledPod, ActionType::UPDATE_POD_SCALE_DOWN),
        ]
    }
    fn as_pre_filter(self: Arc<Self>) -> Option<Arc<dyn PreFilterPlugin>> {
        Some(self)
    }
    fn as_filter(self: Arc<Self>) -> Option<Arc<dyn FilterPlugin>> {
        Some(self)
    }
    fn as_score(self: Arc<Self>) -> Option<Arc<dyn ScorePlugin>> {
        Some(self)
    }
}

/// The standard resources (pods, CPU, memory, ephemeral storage) a pod lacks: `(allocatable,
/// in use)` of each, in that order.
fn insufficient_standard(r: &crate::resources::Resource, have: [(i64, i64); 4], out: &mut Vec<Cow<'static, str>>) {
    let [pods, cpu, memory, ephemeral] = have;
    if pods.1.saturating_add(1) > pods.0 {
        out.push(Cow::Borrowed("Too many pods"));
    }
    if r.milli_cpu > 0 && r.milli_cpu > cpu.0 - cpu.1 {
        out.push(Cow::Borrowed("Insufficient cpu"));
    }
    if r.memory > 0 && r.memory > memory.0 - memory.1 {
        out.push(Cow::Borrowed("Insufficient memory"));
    }
    if r.ephemeral_storage > 0 && r.ephemeral_storage > ephemeral.0 - ephemeral.1 {
        out.push(Cow::Borrowed("Insufficient ephemeral-storage"));
    }
}

/// The status for the standard resources from a node's figures: a fixed one (no allocation) for
/// a single missing resource, the most common failure in a scan.
fn standard_status(r: &crate::resources::Resource, have: [(i64, i64); 4]) -> Status {
    static SINGLE: [[Cow<'static, str>; 1]; 4] = [
        [Cow::Borrowed("Too many pods")],
        [Cow::Borrowed("Insufficient cpu")],
        [Cow::Borrowed("Insufficient memory")],
        [Cow::Borrowed("Insufficient ephemeral-storage")],
    ];
    let [pods, cpu, memory, ephemeral] = have;
    let lacks = [
        pods.1.saturating_add(1) > pods.0,
        r.milli_cpu > 0 && r.milli_cpu > cpu.0 - cpu.1,
        r.memory > 0 && r.memory > memory.0 - memory.1,
        r.ephemeral_storage > 0 && r.ephemeral_storage > ephemeral.0 - ephemeral.1,
    ];
    match lacks.iter().filter(|l| **l).count() {
        0 => Status::success(),
        1 => {
            let i = lacks.iter().position(|l| *l).unwrap_or(0);
            Status::fixed(crate::framework::Code::Unschedulable, &SINGLE[i])
        }
        _ => {
            let mut out = Vec::new();
            insufficient_standard(r, have, &mut out);
            status_of(out)
        }
    }
}

fn status_of(reasons: Vec<Cow<'static, str>>) -> Status {
    let mut reasons = reasons.into_iter();
    match reasons.next() {
        None => Status::success(),
        Some(first) => reasons.fold(Status::unschedulable(first), Status::with_reason),
    }
}

/// The resources a pod lacks on a node, as kube-scheduler's reasons (`Too many pods`, `Insufficient cpu`...).
pub fn insufficient(pod: &PodInfo, node: &NodeInfo) -> Vec<Cow<'static, str>> {
    let mut out = Vec::new();
    let Some(n) = &node.node else { return vec![Cow::Borrowed("node not found")] };
    let alloc = &n.allocatable;
    let r = &pod.requests;
    let used = &node.requested;
    let pods = i64::try_from(node.pods.len()).unwrap_or(i64::MAX);
    insufficient_standard(
        r,
        [
            (alloc.allowed_pod_number, pods),
            (alloc.milli_cpu, used.milli_cpu),
            (alloc.memory, used.memory),
            (alloc.ephemeral_storage, used.ephemeral_storage),
        ],
        &mut out,
    );
    for (name, v) in &r.scalar {
        if *v > 0 && *v > alloc.scalar(name) - used.scalar(name) {
            out.push(Cow::Owned(format!("Insufficient {name}")));
        }
    }
    out
}

impl PreFilterPlugin for NodeResourcesFit {
    fn pre_filter(&self, _: &mut CycleState, _: &PodInfo, _: &Snapshot, _: &Handle) -> (Option<PreFilterResult>, Status) {
        // Requests are precomputed in PodInfo; nothing to keep per cycle.
        (None, Status::success())
    }
}

impl FilterPlugin for NodeResourcesFit {
    fn node_local(&self, _: &CycleState, _: &PodInfo) -> bool {
        true
    }

    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        status_of(insufficient(pod, node))
    }

    fn summary_filter<'a>(&'a self, _: &'a CycleState, pod: &'a PodInfo, _: &'a Snapshot) -> SummaryFilter<'a> {
        // Extended resources are not in the summary.
        if pod.requests.scalar.iter().any(|(_, v)| *v > 0) {
            return SummaryFilter::Full;
        }
        SummaryFilter::Check(Box::new(move |_, n: &NodeSummary| {
            if n.has(NodeSummary::NO_NODE) {
                return None;
            }
            Some(standard_status(
                &pod.requests,
                [
                    (n.alloc_pods, n.pods),
                    (n.alloc_milli_cpu, n.requested_milli_cpu),
                    (n.alloc_memory, n.requested_memory),
                    (n.alloc_ephemeral_storage, n.requested_ephemeral_storage),
                ],
            ))
        }))
    }
}

fn shape_score(points: &[(i64, i64)], utilization: i64) -> i64 {
    // Scores in the shape are 0–10; scale to 0–100.
    let Some(first) = points.first() else { return 0 };
    if utilization <= first.0 {
        return first.1 * 10;
    }
    for w in points.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        if utilization <= x1 {
            if x1 == x0 {
                return y1 * 10;
            }
            return (y0 * 10) + (y1 - y0) * 10 * (utilization - x0) / (x1 - x0);
        }
    }
    points.last().map_or(0, |p| p.1 * 10)
}

impl NodeResourcesFit {
    /// The score from each scored resource's (weight, allocatable, requested with the pod).
    fn score_of(&self, figures: impl Iterator<Item = (i64, i64, i64)>) -> i64 {
        let mut total = 0;
        let mut weights = 0;
        for (w, alloc, requested) in figures {
            if alloc == 0 {
                continue;
            }
            let s = match &self.strategy {
                ScoringStrategy::LeastAllocated => {
                    if requested > alloc {
                        0
                    } else {
                        (alloc - requested) * MAX_NODE_SCORE / alloc
                    }
                }
                ScoringStrategy::MostAllocated => requested.min(alloc) * MAX_NODE_SCORE / alloc,
                ScoringStrategy::RequestedToCapacityRatio(points) => shape_score(points, requested.min(alloc) * MAX_NODE_SCORE / alloc),
            };
            total += s * w;
            weights += w;
        }
        if weights == 0 { 0 } else { total / weights }
    }
}

impl ScorePlugin for NodeResourcesFit {
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(n) = &node.node else { return Ok(0) };
        Ok(self.score_of(self.resources.iter().map(|(name, w)| {
            let (alloc, requested) = match name.as_str() {
                CPU => (n.allocatable.milli_cpu, node.non_zero_requested.0 + pod.non_zero.0),
                MEMORY => (n.allocatable.memory, node.non_zero_requested.1 + pod.non_zero.1),
                other => (n.allocatable.by_name(other), node.requested.by_name(other) + pod.requests.by_name(other)),
            };
            (*w, alloc, requested)
        })))
    }

    fn summary_score<'a>(&'a self, _: &'a CycleState, pod: &'a PodInfo, _: &'a Snapshot) -> SummaryScore<'a> {
        SummaryScore::Check(Box::new(move |_, n: &NodeSummary| {
            if n.has(NodeSummary::NO_NODE) {
                return Some(0);
            }
            let mut figures = [(0i64, 0i64, 0i64); 8];
            if self.resources.len() > figures.len() {
                return None;
            }
            for (slot, (name, w)) in figures.iter_mut().zip(&self.resources) {
                *slot = match name.as_str() {
                    CPU => (*w, n.alloc_milli_cpu, n.non_zero_milli_cpu + pod.non_zero.0),
                    MEMORY => (*w, n.alloc_memory, n.non_zero_memory + pod.non_zero.1),
                    other => {
                        // Extended resources are not in the summary.
                        let (alloc, requested) = n.by_name(other)?;
                        (*w, alloc, requested + pod.requests.by_name(other))
                    }
                };
            }
            Some(self.score_of(figures[..self.resources.len()].iter().copied()))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::{node, pod};

    #[test]
    fn every_missing_resource_is_a_reason() {
        let n = node("n").alloc("pods", "2").info(&[pod("x").req("3", "30Gi").node("n").info(), pod("y").node("n").info()]);
        let s = NodeResourcesFit::default().filter(&CycleState::new(), &pod("p").req("2", "4Gi").info(), &n);
        assert_eq!(s.message(), "Too many pods, Insufficient cpu, Insufficient memory");
        let roomy = node("m").info(&[]);
        assert!(NodeResourcesFit::default().filter(&CycleState::new(), &pod("p").req("2", "4Gi").info(), &roomy).is_success());
    }

    #[test]
    fn extended_resources_must_be_allocatable() {
        let gpu = node("g").alloc("example.com/gpu", "1").info(&[]);
        let plain = node("c").info(&[]);
        let p = pod("p").extended("example.com/gpu", "1").info();
        let f = NodeResourcesFit::default();
        assert!(f.filter(&CycleState::new(), &p, &gpu).is_success());
        assert_eq!(f.filter(&CycleState::new(), &p, &plain).message(), "Insufficient example.com/gpu");
    }

    #[test]
    fn least_allocated_prefers_the_emptier_node_and_most_allocated_the_fuller() {
        let empty = node("a").info(&[]);
        let half = node("b").info(&[pod("x").req("2", "16Gi").node("b").info()]);
        let p = pod("p").req("1", "4Gi").info();
        let st = CycleState::new();
        let least = NodeResourcesFit::default();
        // (4000-1000)/4000 = 75; (32-4)/32 = 87 → 81.
        assert_eq!(least.score(&st, &p, &empty).ok(), Some(81));
        assert!(least.score(&st, &p, &empty).ok() > least.score(&st, &p, &half).ok());
        let most = NodeResourcesFit::new(ScoringStrategy::MostAllocated);
        assert!(most.score(&st, &p, &half).ok() > most.score(&st, &p, &empty).ok());
        let ratio = NodeResourcesFit::new(ScoringStrategy::RequestedToCapacityRatio(vec![(0, 0), (100, 10)]));
        assert_eq!(ratio.score(&st, &p, &half).ok(), most.score(&st, &p, &half).ok());
    }

    #[test]
    fn pods_without_requests_score_with_the_non_zero_defaults() {
        let p = pod("p").info();
        assert_eq!(p.non_zero, (100, 200 * 1024 * 1024));
        assert!(p.requests.is_zero());
    }
}
