//! The scheduling framework: one trait per extension point, the typed per-cycle state, statuses,
//! cluster events with queueing hints, and [`Framework`], the runtime that runs a profile's plugins.
//!
//! A plugin is a struct implementing [`Plugin`] plus the extension-point traits it serves; its
//! `as_*` methods tell the framework which ones (return `Some(self)`), so that one registration
//! enables the plugin at every point it implements, as kube-scheduler's `multiPoint` does.

mod cycle_state;
mod events;
mod handle;
mod runtime;
mod status;

pub use cycle_state::{CycleState, StateData};
pub use events::{ActionType, ClusterEvent, ClusterEventWithHint, EventObject, EventResource, QueueingHint, QueueingHintFn};
pub use handle::{Handle, PdbInfo, WaitingPods};
pub use runtime::{Diagnosis, Framework, Profile, ScheduleError, ScheduleResult, SummaryJudge};
pub use status::{Code, Status};

use crate::node_info::{NodeInfo, NodeSummary};
use crate::pod_info::PodInfo;
use crate::queue::QueuedPodInfo;
use crate::snapshot::Snapshot;
use async_trait::async_trait;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// The highest score a Score plugin may give after normalisation.
pub const MAX_NODE_SCORE: i64 = 100;
/// The lowest score.
pub const MIN_NODE_SCORE: i64 = 0;

/// The nodes a PreFilter plugin restricts the pod to (`None` in the plugin answer: all nodes).
pub type PreFilterResult = HashSet<String>;

/// One node's score: its index in the snapshot and the score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeScore {
    /// Index of the node in the snapshot.
    pub index: usize,
    /// The score.
    pub score: i64,
}

/// The part of every plugin: a name, the events that can make a pod it rejected schedulable, and
/// which extension points it serves.
#[allow(unused_variables)]
pub trait Plugin: Send + Sync + 'static {
    /// The plugin's name, as profiles refer to it.
    fn name(&self) -> &'static str;

    /// Cluster events after which a pod this plugin rejected may fit (with hints). The default,
    /// every event, is always correct but requeues more than needed.
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        vec![ClusterEventWithHint::always(EventResource::WildCard, ActionType::ALL)]
    }

    /// Serves PreEnqueue.
    fn as_pre_enqueue(self: Arc<Self>) -> Option<Arc<dyn PreEnqueuePlugin>> {
        None
    }
    /// Serves QueueSort.
    fn as_queue_sort(self: Arc<Self>) -> Option<Arc<dyn QueueSortPlugin>> {
        None
    }
    /// Serves PreFilter.
    fn as_pre_filter(self: Arc<Self>) -> Option<Arc<dyn PreFilterPlugin>> {
        None
    }
    /// Serves Filter.
    fn as_filter(self: Arc<Self>) -> Option<Arc<dyn FilterPlugin>> {
        None
    }
    /// Serves PostFilter.
    fn as_post_filter(self: Arc<Self>) -> Option<Arc<dyn PostFilterPlugin>> {
        None
    }
    /// Serves PreScore.
    fn as_pre_score(self: Arc<Self>) -> Option<Arc<dyn PreScorePlugin>> {
        None
    }
    /// Serves Score (and NormalizeScore).
    fn as_score(self: Arc<Self>) -> Option<Arc<dyn ScorePlugin>> {
        None
    }
    /// Serves Reserve/Unreserve.
    fn as_reserve(self: Arc<Self>) -> Option<Arc<dyn ReservePlugin>> {
        None
    }
    /// Serves Permit.
    fn as_permit(self: Arc<Self>) -> Option<Arc<dyn PermitPlugin>> {
        None
    }
    /// Serves PreBind.
    fn as_pre_bind(self: Arc<Self>) -> Option<Arc<dyn PreBindPlugin>> {
        None
    }
    /// Serves Bind.
    fn as_bind(self: Arc<Self>) -> Option<Arc<dyn BindPlugin>> {
        None
    }
    /// Serves PostBind.
    fn as_post_bind(self: Arc<Self>) -> Option<Arc<dyn PostBindPlugin>> {
        None
    }
}

/// PreEnqueue: may keep a pod out of the active queue (scheduling gates) without marking it unschedulable.
pub trait PreEnqueuePlugin: Plugin {
    /// `Success` lets the pod in; anything else keeps it gated.
    fn pre_enqueue(&self, pod: &PodInfo) -> Status;
}

/// QueueSort: the order of the active queue. One per scheduler; every profile must agree.
pub trait QueueSortPlugin: Plugin {
    /// Whether `a` goes before `b`.
    fn less(&self, a: &QueuedPodInfo, b: &QueuedPodInfo) -> bool;
}

/// PreFilter: per-pod precomputation into the cycle state; may reject the pod or narrow the nodes.
#[allow(unused_variables)]
pub trait PreFilterPlugin: Plugin {
    /// Runs once per cycle. `Skip` skips this plugin's Filter.
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snapshot: &Snapshot, handle: &Handle) -> (Option<PreFilterResult>, Status);

    /// Whether `add_pod`/`remove_pod` do anything (preemption dry runs call them).
    fn has_extensions(&self) -> bool {
        false
    }

    /// Updates the state as if `to_add` ran on `node`.
    fn add_pod(&self, state: &mut CycleState, pod: &PodInfo, to_add: &Arc<PodInfo>, node: &NodeInfo, handle: &Handle) -> Status {
        Status::success()
    }

    /// Updates the state as if `to_remove` left `node`.
    fn remove_pod(&self, state: &mut CycleState, pod: &PodInfo, to_remove: &Arc<PodInfo>, node: &NodeInfo, handle: &Handle) -> Status {
        Status::success()
    }
}

/// Filter: whether the pod may run on one node. Called in parallel across nodes.
#[allow(unused_variables)]
pub trait FilterPlugin: Plugin {
    /// `Success` when the node fits.
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status;

    /// How this cycle's scan may judge snapshot nodes from their [`NodeSummary`] (and index)
    /// instead of calling [`FilterPlugin::filter`]: asked once per cycle, after PreFilter. Every
    /// answer it gives must equal what `filter` would answer for that node (default: always call
    /// `filter`). Preemption dry runs and nodes with nominated pods always call `filter`.
    fn summary_filter<'a>(&'a self, state: &'a CycleState, pod: &'a PodInfo, snapshot: &'a Snapshot) -> SummaryFilter<'a> {
        SummaryFilter::Full
    }

    /// Whether, in this cycle, the verdict on a node depends only on the pod's spec, labels and
    /// namespace and on that node's own [`NodeInfo`] (its description, pods and nominated pods):
    /// not on other nodes, cluster-wide PreFilter state, the handle or the pod's identity. A scan
    /// may then reuse a failed verdict given to an equivalent pod on a node that has not changed
    /// since (see [`Framework`]'s failed-scan memo). Default: false (always judged afresh).
    fn node_local(&self, state: &CycleState, pod: &PodInfo) -> bool {
        false
    }
}

/// A per-node check from a node's snapshot index and summary: `Some` is the verdict, `None`
/// defers to the plugin's `filter`.
pub type SummaryCheck<'a> = Box<dyn Fn(usize, &NodeSummary) -> Option<Status> + Send + Sync + 'a>;

/// A per-node score from a node's snapshot index and summary: `Some` is the raw score, `None`
/// defers to the plugin's `score`.
pub type SummaryScorer<'a> = Box<dyn Fn(usize, &NodeSummary) -> Option<i64> + Send + Sync + 'a>;

/// How a Filter plugin judges the snapshot's nodes in one cycle (see [`FilterPlugin::summary_filter`]).
pub enum SummaryFilter<'a> {
    /// Call `filter` on every node.
    Full,
    /// Every node that reaches the filter chain passes (the plugin has nothing to check for this pod).
    Pass,
    /// Nodes whose summary has none of these [`NodeSummary`] flags pass; the others go to `filter`.
    PassUnless(u32),
    /// A check per node.
    Check(SummaryCheck<'a>),
}

/// How a Score plugin scores the feasible nodes in one cycle (see [`ScorePlugin::summary_score`]).
pub enum SummaryScore<'a> {
    /// Call `score` on every node.
    Full,
    /// Nodes whose summary has none of these [`NodeSummary`] flags score 0; the others go to `score`.
    ZeroUnless(u32),
    /// A score per node.
    Check(SummaryScorer<'a>),
}

/// What a PostFilter plugin may use: the profile's framework (to run filters in dry runs), the
/// snapshot and the handle.
pub struct PostFilterContext<'a> {
    /// The running profile.
    pub framework: &'a Framework,
    /// This cycle's snapshot.
    pub snapshot: &'a Snapshot,
    /// Cluster access.
    pub handle: &'a Handle,
}

/// The filter outcome of every failed node, as PostFilter sees it. Thousands of nodes share a
/// few distinct statuses ("Insufficient cpu"): each is kept once, with the nodes that got it.
#[derive(Debug, Clone, Default)]
pub struct NodeStatuses {
    distinct: Vec<Status>,
    /// (snapshot index, index into `distinct`), in the order recorded.
    nodes: Vec<(usize, u32)>,
}

impl NodeStatuses {
    /// How far back `insert` looks for an equal status before keeping a new one.
    const LOOK_BACK: usize = 8;

    /// Statuses from their distinct values and, per node, (snapshot index, index into `distinct`).
    pub(crate) fn from_parts(distinct: Vec<Status>, nodes: Vec<(usize, u32)>) -> Self {
        Self { distinct, nodes }
    }

    /// The distinct statuses and, per recorded node, (snapshot index, index into the first).
    pub(crate) fn parts(&self) -> (&[Status], &[(usize, u32)]) {
        (&self.distinct, &self.nodes)
    }

    /// Records a node's status (each node once).
    pub fn insert(&mut self, index: usize, status: Status) {
        let from = self.distinct.len().saturating_sub(Self::LOOK_BACK);
        let k = match self.distinct[from..].iter().rposition(|s| *s == status) {
            Some(k) => from + k,
            None => {
                self.distinct.push(status);
                self.distinct.len() - 1
            }
        };
        self.nodes.push((index, u32::try_from(k).unwrap_or(u32::MAX)));
    }

    /// Every recorded node (snapshot index) with its status.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Status)> + '_ {
        self.nodes.iter().filter_map(|(i, k)| self.distinct.get(*k as usize).map(|s| (*i, s)))
    }

    /// A node's status (a linear search).
    pub fn get(&self, index: usize) -> Option<&Status> {
        self.iter().find(|(i, _)| *i == index).map(|(_, s)| s)
    }

    /// Every distinct status with the number of nodes that got it.
    pub fn counts(&self) -> Vec<(&Status, usize)> {
        let mut n = vec![0usize; self.distinct.len()];
        for (_, k) in &self.nodes {
            if let Some(c) = n.get_mut(*k as usize) {
                *c += 1;
            }
        }
        self.distinct.iter().zip(n).filter(|(_, c)| *c > 0).collect()
    }

    /// How many nodes are recorded.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// PostFilter: runs when no node fits (preemption).
pub trait PostFilterPlugin: Plugin {
    /// Returns the nominated node, if any, and a status (`Success` when something was done).
    fn post_filter(
        &self,
        state: &CycleState,
        pod: &Arc<PodInfo>,
        statuses: &NodeStatuses,
        ctx: &PostFilterContext<'_>,
    ) -> (Option<String>, Status);
}

/// PreScore: per-pod precomputation for Score over the feasible nodes.
pub trait PreScorePlugin: Plugin {
    /// `Skip` skips this plugin's Score.
    fn pre_score(&self, state: &mut CycleState, pod: &PodInfo, nodes: &[&NodeInfo], snapshot: &Snapshot, handle: &Handle) -> Status;
}

/// Score: ranks a feasible node; NormalizeScore brings scores into 0..=100 afterwards.
#[allow(unused_variables)]
pub trait ScorePlugin: Plugin {
    /// The raw score of one node.
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status>;

    /// Normalises the raw scores in place (default: leave them).
    fn normalize_score(&self, state: &CycleState, pod: &PodInfo, scores: &mut [NodeScore]) -> Status {
        Status::success()
    }

    /// How this cycle may score snapshot nodes from their [`NodeSummary`] (and index) instead
    /// of calling [`ScorePlugin::score`]: asked once per cycle, after PreScore. Every score it
    /// gives must equal what `score` would give (default: always call `score`).
    fn summary_score<'a>(&'a self, state: &'a CycleState, pod: &'a PodInfo, snapshot: &'a Snapshot) -> SummaryScore<'a> {
        SummaryScore::Full
    }
}

/// Reserve/Unreserve: commit or roll back plugin state for the assumed pod.
pub trait ReservePlugin: Plugin {
    /// Called once the node is chosen; a failure unreserves and fails the cycle.
    fn reserve(&self, state: &mut CycleState, pod: &Arc<PodInfo>, node: &str) -> Status;
    /// Undoes `reserve`; must be idempotent.
    fn unreserve(&self, state: &CycleState, pod: &Arc<PodInfo>, node: &str);
}

/// Permit: approve, deny, or make the pod wait (with a timeout) before binding.
pub trait PermitPlugin: Plugin {
    /// `Success`, a rejection, or `Wait` with the longest wait allowed.
    fn permit(&self, state: &CycleState, pod: &Arc<PodInfo>, node: &str) -> (Status, Duration);
}

/// PreBind: work that must finish before the binding (volumes).
#[async_trait]
pub trait PreBindPlugin: Plugin {
    /// A failure unreserves and retries the pod.
    async fn pre_bind(&self, state: &CycleState, pod: &Arc<PodInfo>, node: &str, handle: &Handle) -> Status;
}

/// Bind: makes the binding; `Skip` hands over to the next binder.
#[async_trait]
pub trait BindPlugin: Plugin {
    /// Binds the pod to the node.
    async fn bind(&self, state: &CycleState, pod: &Arc<PodInfo>, node: &str, handle: &Handle) -> Status;
}

/// PostBind: informational, after a successful bind.
#[async_trait]
pub trait PostBindPlugin: Plugin {
    /// Called after the bind.
    async fn post_bind(&self, state: &CycleState, pod: &Arc<PodInfo>, node: &str, handle: &Handle);
}
