//! DefaultPreemption (PostFilter): when no node fits, find nodes where evicting lower-priority
//! pods makes room, respecting PodDisruptionBudgets where possible, pick the least disruptive,
//! delete its victims asynchronously and nominate the node.

use crate::framework::{
    Code, CycleState, Framework, Handle, NodeStatuses, PdbInfo, Plugin, PostFilterContext, PostFilterPlugin, Status, SummaryJudge,
};
use crate::node_info::NodeInfo;
use crate::node_info::NodeSummary;
use crate::pod_info::PodInfo;
use crate::snapshot::Snapshot;
use bosun_core::DeleteParams;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The message for nodes where evictions would not help.
pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
/// The message for nodes without suitable victims.
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

/// Priority-based preemption.
#[derive(Debug, Clone)]
pub struct DefaultPreemption {
    /// Candidates to look for, as a share of all nodes (kube default 10 %).
    pub min_candidate_nodes_percentage: usize,
    /// ...and at least this many (kube default 100).
    pub min_candidate_nodes_absolute: usize,
    /// The last preemptor's dry runs, for the next equivalent one.
    memo: Arc<Mutex<Option<DryRunMemo>>>,
}

impl Default for DefaultPreemption {
    fn default() -> Self {
        Self { min_candidate_nodes_percentage: 10, min_candidate_nodes_absolute: 100, memo: Arc::default() }
    }
}

impl DefaultPreemption {
    /// Preemption looking for `percentage` % of the nodes as candidates, and at least `absolute`.
    pub fn with_candidates(percentage: usize, absolute: usize) -> Self {
        Self { min_candidate_nodes_percentage: percentage, min_candidate_nodes_absolute: absolute, ..Self::default() }
    }
}

/// One node's dry run for a class of preemptors.
#[derive(Debug, Clone, Copy)]
enum DryRun {
    /// Not run since the node last changed.
    Unknown,
    /// A candidate, with what [`DefaultPreemption::pick_one`] compares.
    Candidate(CandidateKey),
    /// No candidate, and why.
    Not(&'static str),
}

/// The dry runs of the last preemptor, per node, kept for the next equivalent preemptor (a
/// Deployment's pods preempting in a batch re-run only the nodes changed since, typically the
/// ones the previous preemptors were nominated to). Valid under the same framework, node-local
/// filter plan ([`Framework::node_local_plan`]), disruption budgets and snapshot change log.
#[derive(Debug)]
struct DryRunMemo {
    framework: usize,
    template: Arc<bosun_core::k8s_openapi::api::core::v1::Pod>,
    plan: Vec<usize>,
    pdb_generation: u64,
    epoch: u64,
    synced: usize,
    per_node: Vec<DryRun>,
}

/// A node where preemption would work, with its victims.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The node.
    pub node: String,
    /// Pods to evict, most important first.
    pub victims: Vec<Arc<PodInfo>>,
    /// How many of them a disruption budget protects.
    pub pdb_violations: usize,
}

impl Plugin for DefaultPreemption {
    fn name(&self) -> &'static str {
        "DefaultPreemption"
    }
    fn as_post_filter(self: Arc<Self>) -> Option<Arc<dyn PostFilterPlugin>> {
        Some(self)
    }
}

/// Whether `a` is more important than `b`: higher priority, then earlier start.
fn more_important(a: &PodInfo, b: &PodInfo) -> std::cmp::Ordering {
    b.priority.cmp(&a.priority).then_with(|| a.start_time().cmp(&b.start_time()))
}

/// Which victims (most important first) a disruption budget protects: evicting them would take
/// a budget below zero. Each dry run starts from the same allowance: budgets a candidate would
/// consume are not shared with other candidates.
fn pdb_protected<'a>(victims: impl Iterator<Item = &'a PodInfo>, pdb_allowance: &[(PdbInfo, i32)]) -> Vec<bool> {
    let mut allowance: Vec<i32> = pdb_allowance.iter().map(|(_, left)| *left).collect();
    victims
        .map(|v| {
            let mut violates = false;
            for ((pdb, _), left) in pdb_allowance.iter().zip(allowance.iter_mut()) {
                if pdb.namespace != v.namespace || pdb.selector.is_empty() || !pdb.selector.matches(v.labels()) {
                    continue;
                }
                if pdb.disrupted_pods.contains(&v.name) {
                    continue;
                }
                *left -= 1;
                if *left < 0 {
                    violates = true;
                }
            }
            violates
        })
        .collect()
}

/// Splits victims (most important first) into those whose eviction would break a disruption
/// budget and the rest, both in importance order.
fn split_by_pdb(victims: Vec<Arc<PodInfo>>, pdb_allowance: &[(PdbInfo, i32)]) -> (Vec<Arc<PodInfo>>, Vec<Arc<PodInfo>>) {
    if pdb_allowance.is_empty() {
        return (Vec::new(), victims);
    }
    let protected = pdb_protected(victims.iter().map(|v| &**v), pdb_allowance);
    let (mut violating, mut ok) = (Vec::new(), Vec::new());
    for (v, p) in victims.into_iter().zip(protected) {
        if p { violating.push(v) } else { ok.push(v) }
    }
    (violating, ok)
}

/// What [`DefaultPreemption::pick_one`] compares (the smallest wins): PDB violations, the highest
/// victim priority, the sum of victim priorities, the number of victims, and the earliest start
/// among the highest-priority victims (reversed: a later start is better).
type CandidateKey = (usize, i32, i64, usize, std::cmp::Reverse<Option<bosun_core::k8s_openapi::jiff::Timestamp>>);

fn candidate_key<'a>(victims: impl Iterator<Item = &'a PodInfo> + Clone, pdb_violations: usize) -> CandidateKey {
    let high = victims.clone().map(|v| v.priority).max().unwrap_or(i32::MIN);
    let (mut sum, mut count, mut earliest) = (0i64, 0usize, None);
    for v in victims {
        sum += i64::from(v.priority) + i64::from(i32::MAX) + 1;
        count += 1;
        if v.priority == high
            && let Some(t) = v.start_time()
        {
            earliest = Some(earliest.map_or(t, |e: bosun_core::k8s_openapi::jiff::Timestamp| e.min(t)));
        }
    }
    (pdb_violations, high, sum, count, std::cmp::Reverse(earliest))
}

/// `summary` as if `pod` left the node (`sign` -1) or came back (+1): the figures
/// [`NodeInfo::add_pod`]/[`NodeInfo::remove_pod`] change, for a pod without host ports, extended
/// resources or affinity terms (whose flags the summary could not update).
fn shift(summary: &mut NodeSummary, pod: &PodInfo, sign: i64) {
    summary.requested_milli_cpu += sign * pod.requests.milli_cpu;
    summary.requested_memory += sign * pod.requests.memory;
    summary.requested_ephemeral_storage += sign * pod.requests.ephemeral_storage;
    summary.pods += sign;
    summary.non_zero_milli_cpu += sign * pod.non_zero.0;
    summary.non_zero_memory += sign * pod.non_zero.1;
}

impl DefaultPreemption {
    fn num_candidates(&self, all: usize) -> usize {
        (all * self.min_candidate_nodes_percentage / 100).max(self.min_candidate_nodes_absolute).min(all)
    }

    /// The dry run on one node: evict every lower-priority pod, check the pod fits, then reprieve
    /// as many victims as possible, PDB-protected ones first.
    pub fn select_victims(
        &self,
        fw: &Framework,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        handle: &Handle,
        pdb_allowance: &[(PdbInfo, i32)],
    ) -> Result<Candidate, &'static str> {
        let mut lower: Vec<Arc<PodInfo>> = node.pods.iter().filter(|p| p.priority < pod.priority).cloned().collect();
        if lower.is_empty() {
            return Err(NO_VICTIMS);
        }
        let mut state = state.clone();
        let mut ni = node.clone();
        for v in &lower {
            ni.remove_pod(&v.uid);
            if !fw.run_pre_filter_remove_pod(&mut state, pod, v, &ni, handle).is_success() {
                return Err(NOT_HELPFUL);
            }
        }
        if !fw.run_filter_with_nominated_pods(&state, pod, &ni, handle).is_success() {
            return Err(NOT_HELPFUL);
        }
        lower.sort_by(|a, b| more_important(a, b));
        let (violating, ok) = split_by_pdb(lower, pdb_allowance);
        let mut victims = Vec::new();
        let mut pdb_violations = 0;
        let mut reprieve = |v: Arc<PodInfo>, protected: bool, state: &mut CycleState, ni: &mut NodeInfo| {
            ni.add_pod(v.clone());
            let added = fw.run_pre_filter_add_pod(state, pod, &v, ni, handle).is_success();
            if added && fw.run_filter_with_nominated_pods(state, pod, ni, handle).is_success() {
                return;
            }
            ni.remove_pod(&v.uid);
            let _ = fw.run_pre_filter_remove_pod(state, pod, &v, ni, handle);
            if protected {
                pdb_violations += 1;
            }
            victims.push(v);
        };
        for v in violating {
            reprieve(v, true, &mut state, &mut ni);
        }
        for v in ok {
            reprieve(v, false, &mut state, &mut ni);
        }
        if victims.is_empty() {
            return Err(NO_VICTIMS);
        }
        victims.sort_by(|a, b| more_important(a, b));
        Ok(Candidate { node: node.name.to_string(), victims, pdb_violations })
    }

    /// [`DefaultPreemption::select_victims`] computed from the node's summary: the victims'
    /// requests are subtracted and added back instead of running every Filter on a copied node.
    /// Gives the same answer as the full dry run; `None` when it cannot (a victim the summary
    /// cannot follow, or a plugin that needs its own `filter` for this node): the caller then runs
    /// the full dry run.
    pub fn select_victims_by_summary(
        &self,
        judge: &SummaryJudge<'_>,
        pod: &PodInfo,
        snapshot: &Snapshot,
        idx: usize,
        pdb_allowance: &[(PdbInfo, i32)],
    ) -> Option<Result<Candidate, &'static str>> {
        let (mut lower, mut victims) = (Vec::new(), Vec::new());
        let r = self.dry_run_by_summary(judge, pod, snapshot, idx, pdb_allowance, &mut lower, &mut victims)?;
        Some(r.map(|pdb_violations| Self::candidate(&snapshot.nodes()[idx], &victims, pdb_violations)))
    }

    /// A candidate from a dry run's victims (any order).
    fn candidate(node: &NodeInfo, victims: &[&Arc<PodInfo>], pdb_violations: usize) -> Candidate {
        let mut victims: Vec<Arc<PodInfo>> = victims.iter().map(|v| Arc::clone(v)).collect();
        victims.sort_by(|a, b| more_important(a, b));
        Candidate { node: node.name.to_string(), victims, pdb_violations }
    }

    /// The summary dry run in caller-owned scratch space (thousands of nodes per preemptor: no
    /// allocation per node): on success `victims` holds the victims and the answer is how many
    /// of them a disruption budget protects. `None` as [`DefaultPreemption::select_victims_by_summary`].
    #[allow(clippy::too_many_arguments)]
    fn dry_run_by_summary<'s>(
        &self,
        judge: &SummaryJudge<'_>,
        pod: &PodInfo,
        snapshot: &'s Snapshot,
        idx: usize,
        pdb_allowance: &[(PdbInfo, i32)],
        lower: &mut Vec<&'s Arc<PodInfo>>,
        victims: &mut Vec<&'s Arc<PodInfo>>,
    ) -> Option<Result<usize, &'static str>> {
        let (node, summary) = (snapshot.nodes().get(idx)?, snapshot.summaries().get(idx)?);
        let profile = snapshot.priority_profiles().get(idx);
        // Most nodes are ruled out from the profile alone, without visiting their pods.
        if let Some(profile) = profile {
            if profile.bottom >= pod.priority {
                return Some(Err(NO_VICTIMS));
            }
            if let Some(without) = profile.without_lower(summary, pod.priority)
                && !judge.judge(idx, &without)?.is_success()
            {
                return Some(Err(NOT_HELPFUL));
            }
        }
        lower.clear();
        lower.extend(node.pods.iter().filter(|p| p.priority < pod.priority));
        if lower.is_empty() {
            return Some(Err(NO_VICTIMS));
        }
        if !lower.iter().all(|v| v.is_plain()) {
            return None;
        }
        let mut s = *summary;
        for v in lower.iter() {
            shift(&mut s, v, -1);
        }
        if !judge.judge(idx, &s)?.is_success() {
            return Some(Err(NOT_HELPFUL));
        }
        lower.sort_by(|a, b| more_important(a, b));
        // Budget-protected victims are reprieved first, both groups in importance order.
        let mut protected = 0;
        if !pdb_allowance.is_empty() {
            let flags = pdb_protected(lower.iter().map(|v| &***v), pdb_allowance);
            let (violating, ok): (Vec<_>, Vec<_>) = lower.iter().zip(flags).partition(|(_, f)| *f);
            protected = violating.len();
            let order: Vec<&'s Arc<PodInfo>> = violating.into_iter().chain(ok).map(|(v, _)| *v).collect();
            *lower = order;
        }
        victims.clear();
        let mut pdb_violations = 0;
        for (i, v) in lower.iter().enumerate() {
            let mut back = s;
            shift(&mut back, v, 1);
            if judge.judge(idx, &back)?.is_success() {
                s = back;
                continue;
            }
            if i < protected {
                pdb_violations += 1;
            }
            victims.push(v);
        }
        if victims.is_empty() {
            return Some(Err(NO_VICTIMS));
        }
        Some(Ok(pdb_violations))
    }

    /// kube-scheduler's `pickOneNodeForPreemption`: fewest PDB violations, lowest highest-victim
    /// priority, lowest priority sum, fewest victims, latest start of the most important victims.
    pub fn pick_one(candidates: &[Candidate]) -> Option<&Candidate> {
        // Each candidate's key once (hundreds of candidates per preemptor), then the smallest
        // (the first of equals).
        candidates
            .iter()
            .map(|c| (candidate_key(c.victims.iter().map(|v| &**v), c.pdb_violations), c))
            .min_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, c)| c)
    }

    fn evict(&self, pod: &PodInfo, candidate: &Candidate, handle: &Handle) {
        for v in &candidate.victims {
            if handle.waiting_pods().pods().iter().any(|w| w.uid == v.uid) {
                handle.waiting_pods().reject(&v.uid, self.name(), "preempted");
                continue;
            }
            let Some(client) = handle.client().cloned() else { continue };
            let (ns, name) = (v.namespace.clone(), v.name.clone());
            let mut params = DeleteParams::default();
            if let Some(g) = handle.victim_grace_period() {
                params = params.grace_period(g);
            }
            let preemptor = pod.key();
            handle.victim_deleting(&v.uid);
            let (h, uid) = (handle.clone(), v.uid.clone());
            handle.spawn(async move {
                if let Err(error) = crate::writes::delete_pod(&*client, &ns, &name, &params).await {
                    // Gone already, or not deletable: it no longer holds its preemptor back.
                    h.victim_gone(&uid);
                    if !error.is_not_found() {
                        tracing::warn!(%error, victim = %format!("{ns}/{name}"), %preemptor, "preemption could not delete a victim");
                    }
                }
            });
        }
        // Lower-priority pods nominated to the node lose their nomination.
        for other in handle.nominator().pods_for_node(&candidate.node) {
            if other.priority < pod.priority {
                handle.nominator().remove(&other.uid);
                let Some(client) = handle.client().cloned() else { continue };
                let (ns, name) = (other.namespace.clone(), other.name.clone());
                handle.spawn(async move {
                    let patch = bosun_core::Patch::Merge(serde_json::json!({"status": {"nominatedNodeName": null}}));
                    if let Err(error) = crate::writes::patch_pod_status(&*client, &ns, &name, &patch).await {
                        tracing::debug!(%error, "clearing a nomination failed");
                    }
                });
            }
        }
    }
}

impl PostFilterPlugin for DefaultPreemption {
    fn post_filter(
        &self,
        state: &CycleState,
        pod: &Arc<PodInfo>,
        statuses: &NodeStatuses,
        ctx: &PostFilterContext<'_>,
    ) -> (Option<String>, Status) {
        let snapshot = ctx.snapshot;
        let all = snapshot.len();
        if pod.preempt_never {
            return (None, Status::unschedulable("preemption: not eligible due to preemptionPolicy=Never."));
        }
        // The nominator knows a nomination made in an earlier cycle before the pod's status does.
        let nominated = ctx.handle.nominator().node_of(&pod.uid).or_else(|| pod.nominated_node_name.clone());
        if let Some(nnn) = &nominated
            && let Some(n) = snapshot.node(nnn)
            && n.pods.iter().any(|p| p.priority < pod.priority && (p.is_terminating() || ctx.handle.is_victim_deleting(&p.uid)))
        {
            return (None, Status::unschedulable("preemption: not eligible due to a terminating pod on the nominated node."));
        }
        let mut potential: Vec<usize> = statuses.iter().filter(|(_, s)| s.code() == Code::Unschedulable).map(|(i, _)| i).collect();
        potential.sort_unstable();
        let mut histogram: BTreeMap<&'static str, usize> = BTreeMap::new();
        let unresolvable = all - potential.len();
        if unresolvable > 0 {
            *histogram.entry(NOT_HELPFUL).or_default() += unresolvable;
        }
        let mut best: Option<(CandidateKey, Candidate)> = None;
        if !potential.is_empty() {
            let want = self.num_candidates(potential.len());
            let offset = fastrand::usize(0..potential.len());
            // Read before the budgets: a change in between makes a kept result stale, not wrong.
            let pdb_generation = ctx.handle.pdb_generation();
            let allowance: Vec<(PdbInfo, i32)> = ctx
                .handle
                .pdbs()
                .into_iter()
                .map(|p| {
                    let left = p.disruptions_allowed;
                    (p, left)
                })
                .collect();
            let rotated = || (0..potential.len()).map(|k| potential[(offset + k) % potential.len()]);
            let full = |i: usize| self.select_victims(ctx.framework, state, pod, &snapshot.nodes()[i], ctx.handle, &allowance);
            match ctx.framework.summary_judge(state, pod, snapshot) {
                // Every plugin judges from summaries: dry runs on summary copies, on this thread
                // (a few hundred nanoseconds each), the full one for a node the summary cannot
                // tell. Candidates are compared as they come: only the best so far is built.
                Some(judge) => {
                    let (mut lower, mut victims) = (Vec::new(), Vec::new());
                    let mut slot = self.memo.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let mut memo = match ctx.framework.node_local_plan(state, pod, snapshot) {
                        None => None,
                        Some(plan) => {
                            let framework = std::ptr::from_ref(ctx.framework) as usize;
                            let valid = slot.as_ref().is_some_and(|m| {
                                m.framework == framework
                                    && m.epoch == snapshot.epoch
                                    && m.synced <= snapshot.changes.len()
                                    && m.per_node.len() == all
                                    && m.pdb_generation == pdb_generation
                                    && m.plan == plan
                                    && crate::pod_info::same_class(&m.template, &pod.pod)
                            });
                            match slot.as_mut() {
                                Some(m) if valid => {
                                    for &i in &snapshot.changes[m.synced..] {
                                        m.per_node[i] = DryRun::Unknown;
                                    }
                                    m.synced = snapshot.changes.len();
                                }
                                _ => {
                                    *slot = Some(DryRunMemo {
                                        framework,
                                        template: pod.pod.clone(),
                                        plan,
                                        pdb_generation,
                                        epoch: snapshot.epoch,
                                        synced: snapshot.changes.len(),
                                        per_node: vec![DryRun::Unknown; all],
                                    });
                                }
                            }
                            slot.as_mut()
                        }
                    };
                    let run = |i: usize, lower: &mut Vec<_>, victims: &mut Vec<_>| -> DryRun {
                        match self.dry_run_by_summary(&judge, pod, snapshot, i, &allowance, lower, victims) {
                            Some(Ok(violations)) => {
                                DryRun::Candidate(candidate_key(victims.iter().map(|v: &&Arc<PodInfo>| &***v), violations))
                            }
                            Some(Err(reason)) => DryRun::Not(reason),
                            None => match full(i) {
                                Ok(c) => DryRun::Candidate(candidate_key(c.victims.iter().map(|v| &**v), c.pdb_violations)),
                                Err(reason) => DryRun::Not(reason),
                            },
                        }
                    };
                    // Candidates are compared by key as they come; only the chosen one is built.
                    let mut chosen: Option<(CandidateKey, usize)> = None;
                    let mut found = 0;
                    for i in rotated() {
                        if found >= want {
                            break;
                        }
                        let r = match memo.as_ref().map_or(DryRun::Unknown, |m| m.per_node[i]) {
                            DryRun::Unknown => {
                                let r = run(i, &mut lower, &mut victims);
                                if let Some(m) = memo.as_mut() {
                                    m.per_node[i] = r;
                                }
                                r
                            }
                            r => r,
                        };
                        match r {
                            DryRun::Candidate(key) => {
                                found += 1;
                                if chosen.as_ref().is_none_or(|(k, _)| key < *k) {
                                    chosen = Some((key, i));
                                }
                            }
                            DryRun::Not(reason) => *histogram.entry(reason).or_default() += 1,
                            DryRun::Unknown => {}
                        }
                    }
                    drop(slot);
                    // The chosen node's dry run once more, for its victims (the node is the same).
                    if let Some((key, i)) = chosen {
                        let candidate = match self.dry_run_by_summary(&judge, pod, snapshot, i, &allowance, &mut lower, &mut victims) {
                            Some(Ok(violations)) => Some(Self::candidate(&snapshot.nodes()[i], &victims, violations)),
                            Some(Err(_)) => None,
                            None => full(i).ok(),
                        };
                        best = candidate.map(|c| (key, c));
                    }
                }
                // Full dry runs in parallel from a random offset until enough candidates are found.
                None => {
                    let rotated: Vec<usize> = rotated().collect();
                    let found = AtomicUsize::new(0);
                    let results: Vec<Vec<Result<Candidate, &'static str>>> = rotated
                        .par_chunks(16)
                        .map(|chunk| {
                            let mut out = Vec::new();
                            for i in chunk {
                                if found.load(Ordering::Relaxed) >= want {
                                    break;
                                }
                                let r = full(*i);
                                if r.is_ok() {
                                    found.fetch_add(1, Ordering::Relaxed);
                                }
                                out.push(r);
                            }
                            out
                        })
                        .collect();
                    let mut candidates = Vec::new();
                    for r in results.into_iter().flatten() {
                        match r {
                            Ok(c) if candidates.len() < want => candidates.push(c),
                            Ok(_) => {}
                            Err(reason) => *histogram.entry(reason).or_default() += 1,
                        }
                    }
                    if let Some(c) = Self::pick_one(&candidates) {
                        best = Some((candidate_key(c.victims.iter().map(|v| &**v), c.pdb_violations), c.clone()));
                    }
                }
            }
        }
        let Some((_, best)) = best else {
            let parts: Vec<String> = histogram.iter().map(|(r, n)| format!("{n} {r}")).collect();
            return (None, Status::unschedulable(format!("preemption: 0/{all} nodes are available: {}.", parts.join(", "))));
        };
        tracing::debug!(pod = %pod.key(), node = %best.node, victims = best.victims.len(), "preempting");
        self.evict(pod, &best, ctx.handle);
        (Some(best.node.clone()), Status::success())
    }
}

#[cfg(test)]
mod tests;
