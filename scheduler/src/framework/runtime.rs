//! `Profile` (which plugins, which weights) and `Framework` (running them for one pod).

use super::*;
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Nodes below which filtering and scoring stay on the calling thread.
const PARALLEL_THRESHOLD: usize = 512;
/// Nodes per parallel work item.
const CHUNK: usize = 128;
/// kube-scheduler's floor on the number of feasible nodes to find.
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// kube-scheduler's floor on the adaptive percentage.
const MIN_FEASIBLE_PERCENTAGE: usize = 5;

/// What one parallel filter chunk found: feasible nodes, the other verdicts, and how far it got.
type ChunkResult = (Vec<usize>, Vec<(usize, Verdict)>, usize);

use crate::node_info::NodeSummary;

/// One node's filter outcome in a scan.
enum Verdict {
    Pass,
    /// Ruled out by a PreFilter in advance (its status is in the cycle state).
    Excluded,
    Fail(Status),
}

/// A scheduling profile: a scheduler name and the plugins it runs, with score weights.
#[derive(Clone)]
pub struct Profile {
    scheduler_name: String,
    plugins: Vec<(Arc<dyn Plugin>, i64)>,
    disabled: Vec<String>,
    percentage_of_nodes_to_score: Option<u32>,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.plugins.iter().map(|(p, _)| p.name()).collect();
        f.debug_struct("Profile").field("scheduler_name", &self.scheduler_name).field("plugins", &names).finish()
    }
}

impl Profile {
    /// A profile with no plugins, answering pods whose `schedulerName` is `scheduler_name`.
    pub fn new(scheduler_name: impl Into<String>) -> Self {
        Self { scheduler_name: scheduler_name.into(), plugins: Vec::new(), disabled: Vec::new(), percentage_of_nodes_to_score: None }
    }

    /// kube-scheduler's default plugins and weights under `scheduler_name`.
    pub fn defaults(scheduler_name: impl Into<String>) -> Self {
        crate::plugins::default_plugins().into_iter().fold(Self::new(scheduler_name), |p, (plugin, w)| p.weighted_arc(plugin, w))
    }

    /// Enables a plugin at every extension point it serves (score weight 1). Replaces a plugin of the same name.
    #[must_use]
    pub fn plugin(self, plugin: impl Plugin) -> Self {
        self.weighted_arc(Arc::new(plugin), 1)
    }

    /// Enables a plugin with a score weight. Replaces a plugin of the same name.
    #[must_use]
    pub fn weighted(self, plugin: impl Plugin, weight: i64) -> Self {
        self.weighted_arc(Arc::new(plugin), weight)
    }

    /// Enables a shared plugin with a score weight. Replaces a plugin of the same name.
    #[must_use]
    pub fn weighted_arc(mut self, plugin: Arc<dyn Plugin>, weight: i64) -> Self {
        let name = plugin.name();
        match self.plugins.iter_mut().find(|(p, _)| p.name() == name) {
            Some(slot) => *slot = (plugin, weight),
            None => self.plugins.push((plugin, weight)),
        }
        self.disabled.retain(|d| d != name);
        self
    }

    /// Disables a plugin by name (`*` disables all registered so far).
    #[must_use]
    pub fn disable(mut self, name: &str) -> Self {
        if name == "*" {
            self.plugins.clear();
        } else {
            self.disabled.push(name.to_owned());
        }
        self
    }

    /// Changes a plugin's score weight.
    #[must_use]
    pub fn weight(mut self, name: &str, weight: i64) -> Self {
        if let Some(slot) = self.plugins.iter_mut().find(|(p, _)| p.name() == name) {
            slot.1 = weight;
        }
        self
    }

    /// The share of nodes to score, 1–100 (default: kube-scheduler's adaptive `50 - nodes/125`, at least 5 %).
    #[must_use]
    pub fn percentage_of_nodes_to_score(mut self, percent: u32) -> Self {
        self.percentage_of_nodes_to_score = Some(percent.clamp(1, 100));
        self
    }

    /// The scheduler name.
    pub fn scheduler_name(&self) -> &str {
        &self.scheduler_name
    }

    /// Builds the runtime; fails without exactly one QueueSort or without a Bind plugin.
    pub fn build(self) -> Result<Framework, crate::Error> {
        let plugins: Vec<(Arc<dyn Plugin>, i64)> =
            self.plugins.into_iter().filter(|(p, _)| !self.disabled.iter().any(|d| d == p.name())).collect();
        let mut f = Framework {
            name: self.scheduler_name,
            pre_enqueue: Vec::new(),
            queue_sort: None,
            pre_filter: Vec::new(),
            filter: Vec::new(),
            post_filter: Vec::new(),
            pre_score: Vec::new(),
            score: Vec::new(),
            reserve: Vec::new(),
            permit: Vec::new(),
            pre_bind: Vec::new(),
            bind: Vec::new(),
            post_bind: Vec::new(),
            events: Vec::new(),
            percentage_of_nodes_to_score: self.percentage_of_nodes_to_score,
            next_start: AtomicUsize::new(0),
            fail_memo: std::sync::Mutex::new(None),
        };
        for (p, weight) in plugins {
            let name = p.name();
            let mut rejects = false;
            if let Some(x) = p.clone().as_pre_enqueue() {
                f.pre_enqueue.push(x);
                rejects = true;
            }
            if let Some(x) = p.clone().as_queue_sort() {
                if f.queue_sort.is_some() {
                    return Err(crate::Error::InvalidProfile(format!("{}: more than one QueueSort plugin", f.name)));
                }
                f.queue_sort = Some(x);
            }
            if let Some(x) = p.clone().as_pre_filter() {
                f.pre_filter.push(x);
                rejects = true;
            }
            if let Some(x) = p.clone().as_filter() {
                f.filter.push(x);
                rejects = true;
            }
            if let Some(x) = p.clone().as_post_filter() {
                f.post_filter.push(x);
            }
            if let Some(x) = p.clone().as_pre_score() {
                f.pre_score.push(x);
            }
            if let Some(x) = p.clone().as_score() {
                if weight <= 0 {
                    return Err(crate::Error::InvalidProfile(format!("{}: score plugin {name} needs a positive weight", f.name)));
                }
                f.score.push((x, weight));
            }
            if let Some(x) = p.clone().as_reserve() {
                f.reserve.push(x);
                rejects = true;
            }
            if let Some(x) = p.clone().as_permit() {
                f.permit.push(x);
                rejects = true;
            }
            if let Some(x) = p.clone().as_pre_bind() {
                f.pre_bind.push(x);
                rejects = true;
            }
            if let Some(x) = p.clone().as_bind() {
                f.bind.push(x);
            }
            if let Some(x) = p.clone().as_post_bind() {
                f.post_bind.push(x);
            }
            if rejects {
                for e in p.events_to_register() {
                    f.events.push((name, e));
                }
            }
        }
        if f.queue_sort.is_none() {
            return Err(crate::Error::InvalidProfile(format!("{}: no QueueSort plugin", f.name)));
        }
        if f.bind.is_empty() {
            return Err(crate::Error::InvalidProfile(format!("{}: no Bind plugin", f.name)));
        }
        Ok(f)
    }
}

/// Where a pod goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleResult {
    /// The chosen node.
    pub suggested_host: String,
    /// Nodes filtered.
    pub evaluated_nodes: usize,
    /// Nodes found feasible.
    pub feasible_nodes: usize,
}

/// Why no node fits: the status of every node that was evaluated and what PreFilter/PostFilter said.
#[derive(Debug, Clone, Default)]
pub struct Diagnosis {
    /// Number of nodes in the snapshot.
    pub num_all_nodes: usize,
    /// Failed nodes (snapshot index) with their status.
    pub node_statuses: NodeStatuses,
    /// A status shared by every node not listed (PreFilter rejection or restriction).
    pub absent_status: Option<Status>,
    /// Plugins that rejected the pod (for queueing hints).
    pub unschedulable_plugins: Vec<String>,
    /// Plugins that answered `Pending`.
    pub pending_plugins: Vec<String>,
    /// What PostFilter (preemption) said.
    pub post_filter_msg: Option<String>,
    /// An internal error, if that is why.
    pub error: Option<String>,
}

impl Diagnosis {
    fn add_plugin(list: &mut Vec<String>, status: &Status) {
        if let Some(p) = status.plugin()
            && !list.iter().any(|x| x == p)
        {
            list.push(p.to_owned());
        }
    }

    fn record(&mut self, index: usize, status: Status) {
        if status.code() == Code::Pending {
            Self::add_plugin(&mut self.pending_plugins, &status);
        } else {
            Self::add_plugin(&mut self.unschedulable_plugins, &status);
        }
        self.node_statuses.insert(index, status);
    }

    /// kube-scheduler's summary: `0/3 nodes are available: 1 node(s) had untolerated taint {a: b}, 2 Insufficient cpu.`
    /// followed by the preemption message.
    pub fn message(&self) -> String {
        if let Some(e) = &self.error {
            return e.clone();
        }
        if self.num_all_nodes == 0 {
            return "no nodes available to schedule pods".to_owned();
        }
        // Borrowed keys: thousands of failed nodes share a handful of reasons.
        let mut histogram: BTreeMap<&str, usize> = BTreeMap::new();
        for (s, n) in self.node_statuses.counts() {
            for r in s.reasons() {
                *histogram.entry(r.as_ref()).or_default() += n;
            }
        }
        if let Some(s) = &self.absent_status {
            let absent = self.num_all_nodes.saturating_sub(self.node_statuses.len());
            if absent > 0 {
                for r in s.reasons() {
                    *histogram.entry(r.as_ref()).or_default() += absent;
                }
            }
        }
        let mut reasons: Vec<String> = histogram.into_iter().map(|(r, n)| format!("{n} {r}")).collect();
        reasons.sort();
        let mut msg = format!("0/{} nodes are available:", self.num_all_nodes);
        if !reasons.is_empty() {
            msg.push_str(&format!(" {}.", reasons.join(", ")));
        }
        if let Some(p) = &self.post_filter_msg {
            msg.push_str(&format!(" {p}"));
        }
        msg
    }
}

/// Why a scheduling attempt failed.
#[derive(Debug, Clone)]
pub enum ScheduleError {
    /// No node fits.
    Fit(Box<Diagnosis>),
    /// A plugin failed internally.
    Internal(Status),
}

/// The runtime of one profile: its plugins per extension point, ready to run.
pub struct Framework {
    name: String,
    pre_enqueue: Vec<Arc<dyn PreEnqueuePlugin>>,
    queue_sort: Option<Arc<dyn QueueSortPlugin>>,
    pre_filter: Vec<Arc<dyn PreFilterPlugin>>,
    filter: Vec<Arc<dyn FilterPlugin>>,
    post_filter: Vec<Arc<dyn PostFilterPlugin>>,
    pre_score: Vec<Arc<dyn PreScorePlugin>>,
    score: Vec<(Arc<dyn ScorePlugin>, i64)>,
    reserve: Vec<Arc<dyn ReservePlugin>>,
    permit: Vec<Arc<dyn PermitPlugin>>,
    pre_bind: Vec<Arc<dyn PreBindPlugin>>,
    bind: Vec<Arc<dyn BindPlugin>>,
    post_bind: Vec<Arc<dyn PostBindPlugin>>,
    events: Vec<(&'static str, ClusterEventWithHint)>,
    percentage_of_nodes_to_score: Option<u32>,
    next_start: AtomicUsize,
    fail_memo: std::sync::Mutex<Option<FailMemo>>,
}

/// The verdicts of the last scan that found no node, kept so that the next equivalent pod (same
/// spec, labels and namespace: a ReplicaSet's pods, a batch of preemptors) re-judges only the
/// nodes changed since instead of every node. Valid while the snapshot's change log runs on
/// (same epoch), and only for scans whose every active Filter is node-local
/// ([`FilterPlugin::node_local`]) and that nothing else shaped: no PreFilter node subset or
/// exclusions, no PreFilter extensions, the pod itself nominated to no node (a node does not
/// keep room against the pod nominated to it).
struct FailMemo {
    /// The pod the verdicts were given to (its class: see [`PodInfo::equivalent`]).
    template: Arc<bosun_core::k8s_openapi::api::core::v1::Pod>,
    /// The Filter plugins (by position) that judged, after PreFilter skips and summary passes.
    plan: Vec<usize>,
    /// The snapshot's epoch and how much of its change log the verdicts cover.
    epoch: u64,
    synced: usize,
    /// Distinct statuses, and per snapshot index the one the node got.
    distinct: Vec<Status>,
    per_node: Vec<u32>,
}

/// Distinct statuses a memo keeps before it is dropped (they only grow as changed nodes are re-judged).
const MAX_MEMO_STATUSES: usize = 256;

impl std::fmt::Debug for Framework {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Framework").field("name", &self.name).finish()
    }
}

impl Framework {
    /// The scheduler name of the profile.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The QueueSort plugin.
    pub fn queue_sort(&self) -> Option<&Arc<dyn QueueSortPlugin>> {
        self.queue_sort.as_ref()
    }

    /// The events each rejecting plugin registered: (plugin, event with hint).
    pub fn events(&self) -> &[(&'static str, ClusterEventWithHint)] {
        &self.events
    }

    /// Whether the profile has PostFilter plugins.
    pub fn has_post_filter(&self) -> bool {
        !self.post_filter.is_empty()
    }

    /// Runs PreEnqueue; the first non-success keeps the pod gated.
    pub fn run_pre_enqueue(&self, pod: &PodInfo) -> Status {
        for p in &self.pre_enqueue {
            let s = p.pre_enqueue(pod);
            if !s.is_success() {
                return s.with_plugin(p.name());
            }
        }
        Status::success()
    }

    /// Runs PreFilter; merges the node subsets plugins return (intersection).
    pub fn run_pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
        handle: &Handle,
    ) -> (Option<PreFilterResult>, Status) {
        let mut result: Option<PreFilterResult> = None;
        let mut restricting: Vec<&'static str> = Vec::new();
        for p in &self.pre_filter {
            let (r, s) = p.pre_filter(state, pod, snapshot, handle);
            if s.is_skip() {
                state.skip_filter.push(p.name());
                continue;
            }
            if !s.is_success() {
                return (None, s.with_plugin(p.name()));
            }
            if let Some(r) = r {
                restricting.push(p.name());
                result = Some(match result {
                    None => r,
                    Some(prev) => prev.intersection(&r).cloned().collect(),
                });
                if result.as_ref().is_some_and(HashSet::is_empty) {
                    let msg = format!("node(s) didn't satisfy plugin(s) [{}] simultaneously", restricting.join(", "));
                    return (result, Status::unresolvable(msg).with_plugin(p.name()));
                }
            }
        }
        state.restricted_by = restricting;
        // Resolve skipped Filter plugins to a bit mask once, instead of name compares per node.
        state.filter_skip_mask = 0;
        for (i, f) in self.filter.iter().enumerate().take(64) {
            if state.skip_filter.contains(&f.name()) {
                state.filter_skip_mask |= 1 << i;
            }
        }
        (result, Status::success())
    }

    /// Runs PreFilter's AddPod extensions.
    pub fn run_pre_filter_add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        to_add: &Arc<PodInfo>,
        node: &NodeInfo,
        handle: &Handle,
    ) -> Status {
        for p in &self.pre_filter {
            if !p.has_extensions() || state.skips_filter(p.name()) {
                continue;
            }
            let s = p.add_pod(state, pod, to_add, node, handle);
            if !s.is_success() {
                return s.with_plugin(p.name());
            }
        }
        Status::success()
    }

    /// Runs PreFilter's RemovePod extensions.
    pub fn run_pre_filter_remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        to_remove: &Arc<PodInfo>,
        node: &NodeInfo,
        handle: &Handle,
    ) -> Status {
        for p in &self.pre_filter {
            if !p.has_extensions() || state.skips_filter(p.name()) {
                continue;
            }
            let s = p.remove_pod(state, pod, to_remove, node, handle);
            if !s.is_success() {
                return s.with_plugin(p.name());
            }
        }
        Status::success()
    }

    /// The Filter plugins this cycle runs, with their positions: the first 64 skipped by the
    /// state's mask, later ones by name.
    fn active_filters<'s>(&'s self, state: &'s CycleState) -> impl Iterator<Item = (usize, &'s Arc<dyn FilterPlugin>)> + 's {
        self.filter
            .iter()
            .enumerate()
            .filter(move |(i, p)| !((*i < 64 && state.filter_skip_mask & (1 << i) != 0) || (*i >= 64 && state.skips_filter(p.name()))))
    }

    /// Whether a PreFilter plugin with AddPod/RemovePod extensions is active this cycle.
    fn extensions_active(&self, state: &CycleState) -> bool {
        self.pre_filter.iter().any(|p| p.has_extensions() && !state.skips_filter(p.name()))
    }

    /// Runs every Filter on one node; the first failure wins.
    pub fn run_filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        for (_, p) in self.active_filters(state) {
            let s = p.filter(state, pod, node);
            if !s.is_success() {
                return s.with_plugin(p.name());
            }
        }
        Status::success()
    }

    /// Runs Filter twice when pods of at least equal priority are nominated to the node: once as
    /// if they ran there, once without, so that a nominated pod's room is kept and its absence
    /// does not break affinity. As kube-scheduler's `RunFilterPluginsWithNominatedPods`. The
    /// nominated pods are the node's own ([`NodeInfo::nominated`], which the scheduler's cache
    /// keeps from the nominator), or the cycle state's when it names them.
    pub fn run_filter_with_nominated_pods(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo, handle: &Handle) -> Status {
        let counts = |p: &&Arc<PodInfo>| p.priority >= pod.priority && p.uid != pod.uid;
        let nominated: Vec<Arc<PodInfo>> = match &state.nominated {
            Some(map) => match map.get(&*node.name) {
                None => return self.run_filter(state, pod, node),
                Some(v) => v.clone(),
            },
            None if !node.nominated.iter().any(|p| counts(&p)) => return self.run_filter(state, pod, node),
            None => node.nominated.iter().filter(counts).cloned().collect(),
        };
        if nominated.is_empty() {
            return self.run_filter(state, pod, node);
        }
        let mut state2 = state.clone();
        let mut node2 = node.clone();
        for p in nominated {
            node2.add_pod(p.clone());
            let s = self.run_pre_filter_add_pod(&mut state2, pod, &p, &node2, handle);
            if !s.is_success() {
                return s;
            }
        }
        let s = self.run_filter(&state2, pod, &node2);
        if !s.is_success() {
            return s;
        }
        self.run_filter(state, pod, node)
    }

    /// A judge of nodes from their summaries alone, for preemption's dry runs: `None` unless every
    /// active Filter plugin can judge this pod from a [`NodeSummary`] (no `Full` rule), the
    /// snapshot carries summaries, and no PreFilter plugin with AddPod/RemovePod extensions is
    /// active for the pod (its state would change as victims leave, which a summary cannot show).
    pub fn summary_judge<'a>(&'a self, state: &'a CycleState, pod: &'a PodInfo, snapshot: &'a Snapshot) -> Option<SummaryJudge<'a>> {
        if snapshot.summaries().len() != snapshot.len() || state.nominated.is_some() || state.excluded.is_some() {
            return None;
        }
        if self.extensions_active(state) {
            return None;
        }
        let mut plan = Vec::new();
        for (_, p) in self.active_filters(state) {
            match p.summary_filter(state, pod, snapshot) {
                SummaryFilter::Full => return None,
                SummaryFilter::Pass => {}
                rule => plan.push((p, rule)),
            }
        }
        Some(SummaryJudge { plan, priority: pod.priority, own: NodeSummary::uid_bit(&pod.uid) })
    }

    /// The Filter plugins (by position) that judge this cycle's pod, when every verdict on a node
    /// depends on that node alone: each is node-local ([`FilterPlugin::node_local`]), no
    /// PreFilter extension is active, the state lists no nominated pods or exclusions, and no
    /// node lists the pod itself as nominated. A result kept per node for an equivalent pod
    /// ([`PodInfo::equivalent`]) under the same plan holds until that node changes. `None`
    /// otherwise.
    pub fn node_local_plan(&self, state: &CycleState, pod: &PodInfo, snapshot: &Snapshot) -> Option<Vec<usize>> {
        let judging = self.active_filters(state).filter(|(_, p)| !matches!(p.summary_filter(state, pod, snapshot), SummaryFilter::Pass));
        self.local_plan(state, pod, snapshot, judging)
    }

    /// The indexes of the `judging` Filter plugins when nothing but the nodes themselves shapes
    /// their verdicts for `pod` (every one node-local; no nominated pods, exclusions or PreFilter
    /// extensions in play; a snapshot with summaries): what the failed-scan and dry-run memos
    /// key on. `None` otherwise.
    fn local_plan<'a>(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
        judging: impl Iterator<Item = (usize, &'a Arc<dyn FilterPlugin>)>,
    ) -> Option<Vec<usize>> {
        if state.nominated.is_some() || state.excluded.is_some() || snapshot.epoch == 0 || snapshot.summaries().len() != snapshot.len() {
            return None;
        }
        if self.extensions_active(state) {
            return None;
        }
        let mut plan = Vec::new();
        for (i, p) in judging {
            if !p.node_local(state, pod) {
                return None;
            }
            plan.push(i);
        }
        (!snapshot.nominates(&pod.uid)).then_some(plan)
    }

    /// How many feasible nodes to look for among `all` (kube-scheduler's `numFeasibleNodesToFind`).
    pub fn num_feasible_nodes_to_find(&self, all: usize) -> usize {
        let pct = self.percentage_of_nodes_to_score.map(|p| p as usize);
        if all < MIN_FEASIBLE_NODES_TO_FIND || pct.is_some_and(|p| p >= 100) {
            return all;
        }
        let adaptive = pct.unwrap_or_else(|| 50usize.saturating_sub(all / 125).max(MIN_FEASIBLE_PERCENTAGE));
        (all * adaptive / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
    }

    /// Filters nodes from a round-robin start until enough are feasible. `candidates` limits the
    /// nodes (snapshot indexes) considered; `None` means all. Each node is judged from its
    /// summary where the plugins can (see [`SummaryFilter`]), by `filter` otherwise; failures
    /// go into `diagnosis` only when no node is feasible (nobody reads them otherwise).
    fn find_feasible(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
        handle: &Handle,
        candidates: Option<&[usize]>,
        diagnosis: &mut Diagnosis,
    ) -> (Vec<usize>, usize) {
        let n = candidates.map_or(snapshot.len(), <[usize]>::len);
        if n == 0 {
            return (Vec::new(), 0);
        }
        let want = self.num_feasible_nodes_to_find(n);
        let start = self.next_start.load(Ordering::Relaxed) % n;
        let node_at = |i: usize| -> usize {
            let j = (start + i) % n;
            candidates.map_or(j, |c| c[j])
        };
        // This cycle's plan: the active Filter plugins with how each judges summaries.
        let plan: Vec<(usize, &Arc<dyn FilterPlugin>, SummaryFilter<'_>)> = self
            .active_filters(state)
            .map(|(i, p)| (i, p, p.summary_filter(state, pod, snapshot)))
            .filter(|(_, _, f)| !matches!(f, SummaryFilter::Pass))
            .collect();
        let heavy = plan.iter().any(|(_, _, f)| matches!(f, SummaryFilter::Full));
        // Nodes with nominated pods to leave room for: by the state's list (every such node takes
        // the full path) or by the summaries' nominated figures.
        let listed: Option<HashSet<usize>> =
            state.nominated.as_ref().map(|map| map.keys().filter_map(|name| snapshot.index_of(name)).collect());
        // Nominated pods change what a plugin with AddPod extensions sees: only the full path knows.
        let extensions = self.extensions_active(state);
        let own = NodeSummary::uid_bit(&pod.uid);
        let summaries = snapshot.summaries();
        // The plan on one summary; `None` when a plugin needs its full filter and `node` is not given.
        let run_plan = |idx: usize, summary: &NodeSummary, node: Option<&NodeInfo>| -> Option<Status> {
            for (_, p, rule) in &plan {
                let decided = match rule {
                    SummaryFilter::Full => None,
                    SummaryFilter::Pass => continue,
                    SummaryFilter::PassUnless(flags) => (!summary.has(*flags)).then(Status::success),
                    SummaryFilter::Check(c) => c(idx, summary),
                };
                let s = match (decided, node) {
                    (Some(s), _) => s,
                    (None, Some(node)) => p.filter(state, pod, node),
                    (None, None) => return None,
                };
                if !s.is_success() {
                    return Some(s.with_plugin(p.name()));
                }
            }
            Some(Status::success())
        };
        let check = |idx: usize| -> Verdict {
            if state.excluded(idx).is_some() {
                return Verdict::Excluded;
            }
            let node = &snapshot.nodes()[idx];
            let verdict = |s: Status| if s.is_success() { Verdict::Pass } else { Verdict::Fail(s) };
            let full = || verdict(self.run_filter_with_nominated_pods(state, pod, node, handle));
            if summaries.len() != snapshot.len() || listed.as_ref().is_some_and(|l| l.contains(&idx)) {
                return full();
            }
            let summary = &summaries[idx];
            if listed.is_none() && summary.has(NodeSummary::NOMINATED) && summary.nominated_max_priority >= pod.priority {
                // Every nominated pod counts (or it is the full path): once with them, then without.
                if extensions
                    || summary.has(NodeSummary::NOMINATED_OTHER)
                    || summary.nominated_min_priority < pod.priority
                    || summary.nominated_uids & own != 0
                {
                    return full();
                }
                match run_plan(idx, &summary.with_nominated(), None) {
                    None => return full(),
                    Some(s) if !s.is_success() => return Verdict::Fail(s),
                    Some(_) => {}
                }
            }
            verdict(run_plan(idx, summary, Some(node)).unwrap_or_else(Status::success))
        };
        // The failed-scan memo applies when every judging plugin is node-local and nothing but
        // the nodes themselves shaped the verdicts.
        let signature = match candidates {
            None => self.local_plan(state, pod, snapshot, plan.iter().map(|(i, p, _)| (*i, *p))),
            Some(_) => None,
        };
        if let Some(signature) = &signature
            && self.replay_failed_scan(pod, signature, snapshot, &check, diagnosis)
        {
            return (Vec::new(), n);
        }
        let mut feasible = Vec::with_capacity(want.min(n));
        let mut failed: Vec<(usize, Status)> = Vec::new();
        let mut excluded: Vec<usize> = Vec::new();
        let processed;
        if !heavy || n < PARALLEL_THRESHOLD || rayon::current_num_threads() < 2 {
            let mut i = 0;
            while i < n && feasible.len() < want {
                let idx = node_at(i);
                match check(idx) {
                    Verdict::Pass => feasible.push(idx),
                    Verdict::Excluded => excluded.push(idx),
                    Verdict::Fail(s) if s.code() == Code::Error => {
                        diagnosis.error = Some(s.message());
                        return (Vec::new(), i);
                    }
                    Verdict::Fail(s) => failed.push((idx, s)),
                }
                i += 1;
            }
            processed = i;
        } else {
            let found = AtomicUsize::new(0);
            let chunks: Vec<ChunkResult> = (0..n.div_ceil(CHUNK))
                .into_par_iter()
                .map(|c| {
                    let mut ok = Vec::new();
                    let mut failed = Vec::new();
                    let mut last = 0;
                    for i in c * CHUNK..((c + 1) * CHUNK).min(n) {
                        if found.load(Ordering::Relaxed) >= want {
                            break;
                        }
                        let idx = node_at(i);
                        match check(idx) {
                            Verdict::Pass => {
                                ok.push(idx);
                                found.fetch_add(1, Ordering::Relaxed);
                            }
                            v => failed.push((idx, v)),
                        }
                        last = i + 1;
                    }
                    (ok, failed, last)
                })
                .collect();
            let mut last_seen = 0;
            for (ok, chunk_failed, last) in chunks {
                if feasible.len() >= want {
                    break;
                }
                for (idx, v) in chunk_failed {
                    match v {
                        Verdict::Fail(s) if s.code() == Code::Error => {
                            diagnosis.error = Some(s.message());
                            return (Vec::new(), n);
                        }
                        Verdict::Fail(s) => failed.push((idx, s)),
                        Verdict::Excluded => excluded.push(idx),
                        Verdict::Pass => {}
                    }
                }
                feasible.extend(ok);
                last_seen = last_seen.max(last);
            }
            feasible.truncate(want);
            processed = last_seen.max(1);
        }
        self.next_start.store((start + processed) % n, Ordering::Relaxed);
        if feasible.is_empty() {
            let complete = excluded.is_empty() && failed.len() == n;
            for idx in excluded {
                if let Some(s) = state.excluded(idx) {
                    diagnosis.record(idx, s.clone());
                }
            }
            for (idx, s) in failed {
                diagnosis.record(idx, s);
            }
            if let Some(signature) = signature.filter(|_| complete) {
                self.remember_failed_scan(pod, signature, snapshot, &diagnosis.node_statuses);
            }
        }
        (feasible, processed)
    }

    /// Answers a scan from the failed-scan memo: when the last failed scan was for an equivalent
    /// pod under the same plan, re-judges only the nodes changed since; if all still fail, fills
    /// `diagnosis` as a full scan would and returns true. Any node that now passes (or errs) drops
    /// the memo: the caller scans as usual.
    fn replay_failed_scan(
        &self,
        pod: &PodInfo,
        plan: &[usize],
        snapshot: &Snapshot,
        check: &dyn Fn(usize) -> Verdict,
        diagnosis: &mut Diagnosis,
    ) -> bool {
        let mut slot = self.fail_memo.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(memo) = slot.as_mut() else { return false };
        if memo.epoch != snapshot.epoch
            || memo.synced > snapshot.changes.len()
            || memo.per_node.len() != snapshot.len()
            || memo.plan != plan
            || !crate::pod_info::same_class(&memo.template, &pod.pod)
        {
            return false;
        }
        for &idx in &snapshot.changes[memo.synced..] {
            let status = match check(idx) {
                Verdict::Fail(s) if s.code() != Code::Error => s,
                _ => {
                    *slot = None;
                    return false;
                }
            };
            let k = match memo.distinct.iter().position(|d| *d == status) {
                Some(k) => k,
                None if memo.distinct.len() < MAX_MEMO_STATUSES => {
                    memo.distinct.push(status);
                    memo.distinct.len() - 1
                }
                None => {
                    *slot = None;
                    return false;
                }
            };
            memo.per_node[idx] = u32::try_from(k).unwrap_or(u32::MAX);
        }
        memo.synced = snapshot.changes.len();
        let mut used = vec![false; memo.distinct.len()];
        let nodes: Vec<(usize, u32)> = memo
            .per_node
            .iter()
            .enumerate()
            .map(|(i, k)| {
                if let Some(u) = used.get_mut(*k as usize) {
                    *u = true;
                }
                (i, *k)
            })
            .collect();
        for (s, _) in memo.distinct.iter().zip(&used).filter(|(_, u)| **u) {
            if s.code() == Code::Pending {
                Diagnosis::add_plugin(&mut diagnosis.pending_plugins, s);
            } else {
                Diagnosis::add_plugin(&mut diagnosis.unschedulable_plugins, s);
            }
        }
        diagnosis.node_statuses = NodeStatuses::from_parts(memo.distinct.clone(), nodes);
        true
    }

    /// Keeps a complete failed scan (every node judged and failed) for the next equivalent pod.
    fn remember_failed_scan(&self, pod: &PodInfo, plan: Vec<usize>, snapshot: &Snapshot, statuses: &NodeStatuses) {
        let (distinct, nodes) = statuses.parts();
        let mut per_node = vec![u32::MAX; snapshot.len()];
        for (idx, k) in nodes {
            if let Some(slot) = per_node.get_mut(*idx) {
                *slot = *k;
            }
        }
        let memo = (per_node.iter().all(|k| *k != u32::MAX) && distinct.len() <= MAX_MEMO_STATUSES).then(|| FailMemo {
            template: pod.pod.clone(),
            plan,
            epoch: snapshot.epoch,
            synced: snapshot.changes.len(),
            distinct: distinct.to_vec(),
            per_node,
        });
        *self.fail_memo.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = memo;
    }

    /// Runs PreScore, Score and NormalizeScore over the feasible nodes and weights the scores.
    pub fn prioritize(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        feasible: &[usize],
        snapshot: &Snapshot,
        handle: &Handle,
    ) -> Result<Vec<NodeScore>, Status> {
        let nodes: Vec<&NodeInfo> = feasible.iter().map(|i| &*snapshot.nodes()[*i]).collect();
        for p in &self.pre_score {
            let s = p.pre_score(state, pod, &nodes, snapshot, handle);
            if s.is_skip() {
                state.skip_score.push(p.name());
            } else if !s.is_success() {
                return Err(s.with_plugin(p.name()));
            }
        }
        let mut total: Vec<NodeScore> = feasible.iter().map(|i| NodeScore { index: *i, score: 0 }).collect();
        let state: &CycleState = state;
        let summaries = snapshot.summaries();
        let by_summary = summaries.len() == snapshot.len();
        let active: Vec<(&Arc<dyn ScorePlugin>, i64, SummaryScore<'_>)> = self
            .score
            .iter()
            .filter(|(p, _)| !state.skips_score(p.name()))
            .map(|(p, w)| (p, *w, if by_summary { p.summary_score(state, pod, snapshot) } else { SummaryScore::Full }))
            .collect();
        let heavy = active.iter().any(|(_, _, r)| matches!(r, SummaryScore::Full));
        let score_one = |(p, _, rule): &(&Arc<dyn ScorePlugin>, i64, SummaryScore<'_>)| -> Result<Vec<NodeScore>, Status> {
            let mut scores = Vec::with_capacity(nodes.len());
            for (i, n) in nodes.iter().enumerate() {
                let idx = feasible[i];
                let decided = match rule {
                    SummaryScore::Full => None,
                    SummaryScore::ZeroUnless(flags) => (!summaries[idx].has(*flags)).then_some(0),
                    SummaryScore::Check(c) => c(idx, &summaries[idx]),
                };
                let s = match decided {
                    Some(s) => s,
                    None => p.score(state, pod, n).map_err(|s| s.with_plugin(p.name()))?,
                };
                scores.push(NodeScore { index: idx, score: s });
            }
            let s = p.normalize_score(state, pod, &mut scores);
            if !s.is_success() {
                return Err(s.with_plugin(p.name()));
            }
            Ok(scores)
        };
        let per_plugin: Vec<Result<Vec<NodeScore>, Status>> = if heavy && nodes.len() * active.len() >= PARALLEL_THRESHOLD {
            active.par_iter().map(score_one).collect()
        } else {
            active.iter().map(score_one).collect()
        };
        for (scores, (p, w, _)) in per_plugin.into_iter().zip(&active) {
            let scores = scores?;
            for (t, s) in total.iter_mut().zip(scores) {
                if !(MIN_NODE_SCORE..=MAX_NODE_SCORE).contains(&s.score) {
                    return Err(Status::error(format!("plugin {} returned an invalid score {}", p.name(), s.score)));
                }
                t.score += s.score * w;
            }
        }
        Ok(total)
    }

    /// Picks the highest total; ties are broken at random (reservoir sampling), as kube-scheduler.
    pub fn select_host(scores: &[NodeScore]) -> Option<usize> {
        let mut best: Option<usize> = None;
        let mut best_score = i64::MIN;
        let mut ties = 0u32;
        for s in scores {
            if s.score > best_score {
                best_score = s.score;
                best = Some(s.index);
                ties = 1;
            } else if s.score == best_score {
                ties += 1;
                if fastrand::u32(0..ties) == 0 {
                    best = Some(s.index);
                }
            }
        }
        best
    }

    /// The scheduling algorithm: PreFilter, Filter (the nominated node first), Score, select.
    pub fn schedule_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
        handle: &Handle,
    ) -> Result<ScheduleResult, ScheduleError> {
        let mut diagnosis = Diagnosis { num_all_nodes: snapshot.len(), ..Diagnosis::default() };
        if snapshot.is_empty() {
            return Err(ScheduleError::Fit(Box::new(diagnosis)));
        }
        if let Some(e) = &pod.parse_error {
            diagnosis.absent_status = Some(Status::unresolvable(format!("pod spec cannot be parsed: {e}")));
            return Err(ScheduleError::Fit(Box::new(diagnosis)));
        }
        let (result, s) = self.run_pre_filter(state, pod, snapshot, handle);
        if !s.is_success() {
            if s.code() == Code::Error {
                return Err(ScheduleError::Internal(s));
            }
            Diagnosis::add_plugin(&mut diagnosis.unschedulable_plugins, &s);
            diagnosis.absent_status = Some(s);
            return Err(ScheduleError::Fit(Box::new(diagnosis)));
        }
        // A pod nominated by an earlier preemption tries its node first (the nominator knows a
        // nomination made in an earlier cycle before the pod's status does).
        let nominated = handle.nominator().node_of(&pod.uid).or_else(|| pod.nominated_node_name.clone());
        if let Some(nnn) = &nominated
            && let Some(idx) = snapshot.index_of(nnn)
            && result.as_ref().is_none_or(|r| r.contains(nnn.as_str()))
        {
            let s = self.run_filter_with_nominated_pods(state, pod, &snapshot.nodes()[idx], handle);
            if s.is_success() {
                return Ok(ScheduleResult { suggested_host: nnn.clone(), evaluated_nodes: 1, feasible_nodes: 1 });
            }
        }
        let candidates: Option<Vec<usize>> = result.as_ref().map(|r| {
            let mut v: Vec<usize> = r.iter().filter_map(|n| snapshot.index_of(n)).collect();
            v.sort_unstable();
            v
        });
        if let Some(c) = &candidates
            && c.len() < snapshot.len()
        {
            let msg = format!("node(s) didn't satisfy plugin(s) [{}]", state.restricted_by.join(", "));
            diagnosis.absent_status = Some(Status::unresolvable(msg));
        }
        let (feasible, processed) = self.find_feasible(state, pod, snapshot, handle, candidates.as_deref(), &mut diagnosis);
        if let Some(e) = diagnosis.error.take() {
            return Err(ScheduleError::Internal(Status::error(e)));
        }
        if feasible.is_empty() {
            return Err(ScheduleError::Fit(Box::new(diagnosis)));
        }
        let host = if feasible.len() == 1 {
            feasible[0]
        } else {
            let scores = self.prioritize(state, pod, &feasible, snapshot, handle).map_err(ScheduleError::Internal)?;
            Self::select_host(&scores).unwrap_or(feasible[0])
        };
        Ok(ScheduleResult {
            suggested_host: snapshot.nodes()[host].name.to_string(),
            evaluated_nodes: processed,
            feasible_nodes: feasible.len(),
        })
    }

    /// Runs PostFilter plugins until one succeeds; returns the nominated node and the message.
    pub fn run_post_filter(
        &self,
        state: &CycleState,
        pod: &Arc<PodInfo>,
        diagnosis: &Diagnosis,
        snapshot: &Snapshot,
        handle: &Handle,
    ) -> (Option<String>, Status) {
        let ctx = PostFilterContext { framework: self, snapshot, handle };
        let mut last = Status::unschedulable("no PostFilter plugin");
        for p in &self.post_filter {
            let (nominated, s) = p.post_filter(state, pod, &diagnosis.node_statuses, &ctx);
            if s.is_success() {
                return (nominated, s.with_plugin(p.name()));
            }
            if s.code() == Code::Error {
                return (None, s.with_plugin(p.name()));
            }
            last = s.with_plugin(p.name());
        }
        (None, last)
    }

    /// Runs Reserve; on failure the caller must run Unreserve.
    pub fn run_reserve(&self, state: &mut CycleState, pod: &Arc<PodInfo>, node: &str) -> Status {
        for p in &self.reserve {
            let s = p.reserve(state, pod, node);
            if !s.is_success() {
                return s.with_plugin(p.name());
            }
        }
        Status::success()
    }

    /// Runs Unreserve in reverse order.
    pub fn run_unreserve(&self, state: &CycleState, pod: &Arc<PodInfo>, node: &str) {
        for p in self.reserve.iter().rev() {
            p.unreserve(state, pod, node);
        }
    }

    /// Runs Permit; returns `Wait` with the plugins to wait for and the shortest timeout.
    pub fn run_permit(&self, state: &CycleState, pod: &Arc<PodInfo>, node: &str) -> (Status, Vec<String>, Duration) {
        let mut waiting = Vec::new();
        let mut timeout = Duration::MAX;
        for p in &self.permit {
            let (s, t) = p.permit(state, pod, node);
            match s.code() {
                Code::Success => {}
                Code::Wait => {
                    waiting.push(p.name().to_owned());
                    timeout = timeout.min(t);
                }
                _ => return (s.with_plugin(p.name()), Vec::new(), Duration::ZERO),
            }
        }
        if waiting.is_empty() { (Status::success(), waiting, Duration::ZERO) } else { (Status::wait(), waiting, timeout) }
    }

    /// Runs PreBind.
    pub async fn run_pre_bind(&self, state: &CycleState, pod: &Arc<PodInfo>, node: &str, handle: &Handle) -> Status {
        for p in &self.pre_bind {
            let s = p.pre_bind(state, pod, node, handle).await;
            if !s.is_success() {
                return s.with_plugin(p.name());
            }
        }
        Status::success()
    }

    /// Runs Bind plugins until one does not `Skip`.
    pub async fn run_bind(&self, state: &CycleState, pod: &Arc<PodInfo>, node: &str, handle: &Handle) -> Status {
        for p in &self.bind {
            let s = p.bind(state, pod, node, handle).await;
            if s.is_skip() {
                continue;
            }
            return if s.is_success() { s } else { s.with_plugin(p.name()) };
        }
        Status::error("every Bind plugin skipped the pod")
    }

    /// Runs PostBind.
    pub async fn run_post_bind(&self, state: &CycleState, pod: &Arc<PodInfo>, node: &str, handle: &Handle) {
        for p in &self.post_bind {
            p.post_bind(state, pod, node, handle).await;
        }
    }

    /// Which registered plugins care about an event, and whether their hints say to retry `pod`
    /// that `rejectors` turned away. Pods rejected by no known plugin are always retried.
    pub fn hints_say_queue(
        &self,
        pod: &PodInfo,
        rejectors: &[String],
        event: &ClusterEvent,
        old: Option<&EventObject>,
        new: Option<&EventObject>,
    ) -> bool {
        if rejectors.is_empty() {
            return true;
        }
        let mut cache: HashMap<&str, bool> = HashMap::new();
        for (plugin, reg) in &self.events {
            if !rejectors.iter().any(|r| r == plugin) || !event.matches(&reg.event) {
                continue;
            }
            if *cache.get(plugin).unwrap_or(&false) {
                continue;
            }
            let q = reg.hint.as_ref().is_none_or(|h| h(pod, old, new) == QueueingHint::Queue);
            if q {
                return true;
            }
            cache.insert(plugin, false);
        }
        false
    }
}

/// Judges one pod against node summaries that may differ from the snapshot's (preemption's dry
/// runs remove and reprieve victims on a copy of the summary). Built by [`Framework::summary_judge`].
pub struct SummaryJudge<'a> {
    plan: Vec<(&'a Arc<dyn FilterPlugin>, SummaryFilter<'a>)>,
    priority: i32,
    own: u64,
}

impl std::fmt::Debug for SummaryJudge<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.plan.iter().map(|(p, _)| p.name()).collect();
        f.debug_struct("SummaryJudge").field("plan", &names).field("priority", &self.priority).finish()
    }
}

impl SummaryJudge<'_> {
    /// What the Filter chain would answer for snapshot node `idx` if its summary were `summary`,
    /// with the node's nominated pods of equal or higher priority counted first, as
    /// [`Framework::run_filter_with_nominated_pods`] does. `None` when only the plugins' own
    /// `filter` can tell (a deferring rule, or nominated pods the summary does not describe).
    pub fn judge(&self, idx: usize, summary: &NodeSummary) -> Option<Status> {
        if summary.has(NodeSummary::NOMINATED) && summary.nominated_max_priority >= self.priority {
            if summary.has(NodeSummary::NOMINATED_OTHER)
                || summary.nominated_min_priority < self.priority
                || summary.nominated_uids & self.own != 0
            {
                return None;
            }
            let s = self.run(idx, &summary.with_nominated())?;
            if !s.is_success() {
                return Some(s);
            }
        }
        self.run(idx, summary)
    }

    fn run(&self, idx: usize, summary: &NodeSummary) -> Option<Status> {
        for (p, rule) in &self.plan {
            let s = match rule {
                SummaryFilter::Full => return None,
                SummaryFilter::Pass => continue,
                SummaryFilter::PassUnless(flags) if summary.has(*flags) => return None,
                SummaryFilter::PassUnless(_) => continue,
                SummaryFilter::Check(c) => c(idx, summary)?,
            };
            if !s.is_success() {
                return Some(s.with_plugin(p.name()));
            }
        }
        Some(Status::success())
    }
}
