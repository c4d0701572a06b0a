//! The Job controller: runs pods until `completions` succeed (NonIndexed, or Indexed with one
//! success per completion index and `JOB_COMPLETION_INDEX`), at most `parallelism` at once.
//!
//! It follows Kubernetes v1.32: failed pods are replaced after an exponential delay (10 s doubling,
//! capped at six minutes) until `backoffLimit` (or `backoffLimitPerIndex`) is passed;
//! `podFailurePolicy` rules may fail the Job, ignore a failure or fail an index;
//! `activeDeadlineSeconds` fails it (`DeadlineExceeded`); `suspend` deletes its running pods until
//! resumed. Success or failure is first recorded as `SuccessCriteriaMet` / `FailureTarget`, and
//! `Complete` / `Failed` follow once no pod is left running or terminating. Pods carry the
//! `batch.kubernetes.io/job-tracking` finalizer until their outcome is in the Job's status
//! (through `uncountedTerminatedPods`), so deleting a finished pod never loses a count. A finished
//! Job with `ttlSecondsAfterFinished` is deleted (foreground, so its pods go too) when that expires.

pub mod indexes;
pub mod policy;

pub use indexes::IndexSet;
pub use policy::{FailureAction, POD_BACKOFF_BASE, POD_BACKOFF_MAX, PolicyMatch, match_policy, pod_backoff};

use super::{Shared, ignore_not_found, pod_is_ready};
use crate::clock;
use crate::runtime::{Action, Controller, EventData, events::object_reference};
use bosun_core::meta::{controller_of, controller_ref, find_condition, has_finalizer, is_deleting, set_condition};
use bosun_core::watch::{INDEX_OWNER, Store};
use bosun_core::{Api, DeleteParams, Error, Object, ObjectKey, Patch, PatchParams, PostParams, Preconditions};
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The label naming a Job's pods' Job.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// The label carrying the uid of a Job's pods' Job.
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// The finalizer that keeps a Job's pod until its outcome is counted in the Job's status.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// The annotation (and label) carrying an Indexed Job pod's completion index.
pub const COMPLETION_INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";
/// The annotation counting the earlier failures of an index (with `backoffLimitPerIndex`).
pub const INDEX_FAILURE_COUNT_ANNOTATION: &str = "batch.kubernetes.io/job-index-failure-count";
/// The environment variable an Indexed Job pod reads its completion index from.
pub const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// The default `backoffLimit`.
pub const DEFAULT_BACKOFF_LIMIT: i32 = 6;
/// The `spec.managedBy` value of Jobs this controller manages (also when unset).
pub const MANAGED_BY: &str = "kubernetes.io/job-controller";

/// What the controller remembers about one Job between reconciles, to read past a lagging cache.
#[derive(Default)]
struct Memory {
    /// Pods created and not yet seen in the cache (names).
    pending: HashSet<String>,
    /// Pods this controller deleted that the cache still shows running (uids).
    deleted: HashSet<String>,
    /// Pods whose finalizer this controller removed that the cache still shows with it (uids).
    released: HashSet<String>,
    /// Failures counted since the last success, and when the last was counted.
    failures: u32,
    last_failure: Option<Timestamp>,
}

/// The Job controller's state.
pub struct JobCtx {
    shared: Shared,
    pods: Store<Pod>,
    memory: Mutex<HashMap<String, Memory>>,
}

impl JobCtx {
    fn memory<T>(&self, uid: &str, f: impl FnOnce(&mut Memory) -> T) -> T {
        let mut map = self.memory.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(map.entry(uid.to_owned()).or_default())
    }

    fn forget(&self, uid: &str) {
        self.memory.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(uid);
    }
}

/// Builds the Job controller on `shared`'s informers.
pub fn controller(shared: &Shared) -> (Controller<Job>, Arc<JobCtx>) {
    let client = shared.client.clone();
    let pods = shared.informers.all::<Pod>();
    let c = shared.controller(Api::<Job>::all(client.clone()), "job").owns(Api::<Pod>::all(client));
    let ctx = Arc::new(JobCtx { shared: shared.clone(), pods: pods.store().clone(), memory: Mutex::default() });
    (c, ctx)
}

/// The state of the controller that releases orphaned Job pods.
pub struct OrphanCtx {
    shared: Shared,
    jobs: Store<Job>,
}

/// Builds the controller that removes the tracking finalizer from pods whose Job is gone (deleted
/// without waiting for its pods), so that they can be deleted.
pub fn orphan_controller(shared: &Shared) -> (Controller<Pod>, Arc<OrphanCtx>) {
    let jobs = shared.informers.all::<Job>().store().clone();
    let c = shared.controller(Api::<Pod>::all(shared.client.clone()), "job-orphans");
    (c, Arc::new(OrphanCtx { shared: shared.clone(), jobs }))
}

/// Releases one pod if it carries the tracking finalizer and its Job no longer exists.
pub async fn reconcile_orphan(pod: Arc<Pod>, ctx: Arc<OrphanCtx>) -> Result<Action, Error> {
    if !has_finalizer(pod.meta(), TRACKING_FINALIZER) {
        return Ok(Action::await_change());
    }
    let owner = controller_of(pod.meta()).filter(|r| r.kind == "Job" && r.api_version == "batch/v1");
    let alive = owner.is_some_and(|r| {
        ctx.jobs.get(&ObjectKey::new(pod.namespace(), r.name.clone())).is_some_and(|j| j.uid() == r.uid && !job_is_gone(&j))
    });
    if !alive {
        let api = Api::<Pod>::namespaced(ctx.shared.client.clone(), pod.namespace().unwrap_or("default"));
        ignore_not_found(api.patch(pod.name(), &release_patch(), &PatchParams::default()).await)?;
    }
    Ok(Action::await_change())
}

/// A deleting Job without finalizers left will vanish: its pods are orphans already.
fn job_is_gone(job: &Job) -> bool {
    is_deleting(job.meta()) && job.meta().finalizers.as_deref().is_none_or(<[String]>::is_empty)
}

fn release_patch() -> Patch {
    Patch::Strategic(serde_json::json!({"metadata": {"$deleteFromPrimitiveList/finalizers": [TRACKING_FINALIZER]}}))
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), Some("Succeeded" | "Failed"))
}

/// A pod's outcome: `Some(true)` succeeded, `Some(false)` failed (also a pod deleted by someone
/// else before it finished), `None` not finished.
fn outcome(pod: &Pod) -> Option<bool> {
    match phase(pod) {
        Some("Succeeded") => Some(true),
        Some("Failed") => Some(false),
        _ if is_deleting(pod.meta()) && has_finalizer(pod.meta(), TRACKING_FINALIZER) => Some(false),
        _ => None,
    }
}

/// The completion index of an Indexed Job's pod.
pub fn completion_index(pod: &Pod) -> Option<i32> {
    pod.metadata.annotations.as_ref()?.get(COMPLETION_INDEX_ANNOTATION)?.parse().ok().filter(|i| *i >= 0)
}

fn index_failures(pod: &Pod) -> i32 {
    pod.metadata.annotations.as_ref().and_then(|a| a.get(INDEX_FAILURE_COUNT_ANNOTATION)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn condition_true<'a>(status: &'a JobStatus, type_: &str) -> Option<&'a JobCondition> {
    find_condition(status.conditions.as_deref().unwrap_or_default(), type_).filter(|c| c.status == "True")
}

/// The Job's terminal condition (`Complete` or `Failed`), if it has finished.
pub fn finished_condition(job: &Job) -> Option<&JobCondition> {
    let status = job.status.as_ref()?;
    condition_true(status, "Complete").or_else(|| condition_true(status, "Failed"))
}

/// When the Job finished (its `completionTime`, else when it failed).
pub fn finish_time(job: &Job) -> Option<Timestamp> {
    let c = finished_condition(job)?;
    let status = job.status.as_ref()?;
    status.completion_time.as_ref().or(c.last_transition_time.as_ref()).map(|t| t.0)
}

fn condition(type_: &str, status: &str, reason: &str, message: &str, now: &Time) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    }
}

/// The pod an Indexed (`index`) or NonIndexed Job runs.
fn pod_for(job: &Job, index: Option<i32>, failures: i32) -> Pod {
    let template = job.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let mut labels = tmeta.labels.unwrap_or_default();
    labels.insert(JOB_NAME_LABEL.into(), job.name().to_owned());
    labels.insert(CONTROLLER_UID_LABEL.into(), job.uid().to_owned());
    let mut annotations = tmeta.annotations.unwrap_or_default();
    let mut spec = template.spec;
    let mut generate_name = format!("{}-", job.name());
    if let Some(i) = index {
        generate_name = format!("{}-{i}-", job.name());
        labels.insert(COMPLETION_INDEX_ANNOTATION.into(), i.to_string());
        annotations.insert(COMPLETION_INDEX_ANNOTATION.into(), i.to_string());
        if job.spec.as_ref().is_some_and(|s| s.backoff_limit_per_index.is_some()) {
            annotations.insert(INDEX_FAILURE_COUNT_ANNOTATION.into(), failures.to_string());
        }
        if let Some(spec) = spec.as_mut() {
            let env = EnvVar {
                name: COMPLETION_INDEX_ENV.into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: Some("v1".into()),
                        field_path: format!("metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"),
                    }),
                    ..EnvVarSource::default()
                }),
            };
            for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
                let list = c.env.get_or_insert_with(Vec::new);
                if !list.iter().any(|e| e.name == COMPLETION_INDEX_ENV) {
                    list.push(env.clone());
                }
            }
            if spec.hostname.is_none() {
                spec.hostname = Some(format!("{}-{i}", job.name()));
            }
        }
    }
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: job.meta().namespace.clone(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![controller_ref(job)]),
            finalizers: Some(vec![TRACKING_FINALIZER.into()]),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    }
}

fn to_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn restarts(pod: &Pod) -> i32 {
    let Some(s) = pod.status.as_ref() else { return 0 };
    s.container_statuses.iter().flatten().chain(s.init_container_statuses.iter().flatten()).map(|c| c.restart_count).sum()
}

/// `uncountedTerminatedPods` as Kubernetes writes it: empty lists left out.
fn uncounted_status(succeeded: &BTreeSet<String>, failed: &BTreeSet<String>) -> UncountedTerminatedPods {
    let list = |s: &BTreeSet<String>| (!s.is_empty()).then(|| s.iter().cloned().collect());
    UncountedTerminatedPods { succeeded: list(succeeded), failed: list(failed) }
}

/// What one reconcile decided to write.
struct Plan {
    status: JobStatus,
    events: Vec<EventData>,
    requeue: Option<Duration>,
}

impl Plan {
    fn requeue_in(&mut self, d: Duration) {
        self.requeue = Some(self.requeue.map_or(d, |r| r.min(d)));
    }
}

/// Reconciles one Job.
pub async fn reconcile(job: Arc<Job>, ctx: Arc<JobCtx>) -> Result<Action, Error> {
    let spec = job.spec.clone().unwrap_or_default();
    if spec.managed_by.as_deref().is_some_and(|m| m != MANAGED_BY) {
        return Ok(Action::await_change());
    }
    let ns = job.namespace().unwrap_or("default").to_owned();
    let uid = job.uid().to_owned();
    let pods_api = Api::<Pod>::namespaced(ctx.shared.client.clone(), &ns);
    let jobs_api = Api::<Job>::namespaced(ctx.shared.client.clone(), &ns);
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions.map(|c| c.max(0));
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let backoff_limit = spec.backoff_limit.unwrap_or(DEFAULT_BACKOFF_LIMIT).max(0);
    let per_index = spec.backoff_limit_per_index.filter(|_| indexed);
    let now = clock::now();
    let now_t = Time(now);
    let job_deleting = is_deleting(job.meta());
    let mut current: Job = (*job).clone();
    let mut plan = Plan { status: current.status.clone().unwrap_or_default(), events: Vec::new(), requeue: None };
    let was_finished = finished_condition(&job).is_some();

    let owned: Vec<Arc<Pod>> = ctx.pods.by_index(INDEX_OWNER, &uid).into_iter().filter(|p| p.namespace() == Some(ns.as_str())).collect();
    let by_uid: HashMap<&str, &Arc<Pod>> = owned.iter().map(|p| (p.uid(), p)).collect();
    let (pending, deleted, released) = ctx.memory(&uid, |m| {
        m.pending.retain(|name| ctx.pods.get(&ObjectKey::new(Some(&ns), name.clone())).is_none());
        m.deleted.retain(|u| by_uid.get(u.as_str()).is_some_and(|p| !is_deleting(p.meta()) && !is_terminal(p)));
        m.released.retain(|u| by_uid.get(u.as_str()).is_some_and(|p| has_finalizer(p.meta(), TRACKING_FINALIZER)));
        (m.pending.len(), m.deleted.clone(), m.released.clone())
    });

    // 1. Newly finished pods go into `uncountedTerminatedPods` before their finalizer is removed.
    let uncounted = plan.status.uncounted_terminated_pods.clone().unwrap_or_default();
    let mut uncounted_ok: BTreeSet<String> = uncounted.succeeded.unwrap_or_default().into_iter().collect();
    let mut uncounted_failed: BTreeSet<String> = uncounted.failed.unwrap_or_default().into_iter().collect();
    let mut release: Vec<Arc<Pod>> = Vec::new();
    let mut fail_job: Option<String> = None;
    let mut added = false;
    for p in &owned {
        if !has_finalizer(p.meta(), TRACKING_FINALIZER) || released.contains(p.uid()) {
            continue;
        }
        match outcome(p) {
            Some(true) => added |= uncounted_ok.insert(p.uid().to_owned()),
            Some(false) if !uncounted_failed.contains(p.uid()) => {
                let matched = spec.pod_failure_policy.as_ref().and_then(|pol| match_policy(pol, p));
                match matched {
                    Some(PolicyMatch { action: FailureAction::Ignore, .. }) => release.push(p.clone()),
                    Some(PolicyMatch { action: FailureAction::FailJob, message }) => {
                        fail_job.get_or_insert(message);
                        added |= uncounted_failed.insert(p.uid().to_owned());
                    }
                    _ => added |= uncounted_failed.insert(p.uid().to_owned()),
                }
            }
            Some(false) => {}
            None if job_deleting || was_finished => release.push(p.clone()),
            None => {}
        }
    }
    let has_target = |s: &JobStatus| condition_true(s, "FailureTarget").is_some() || condition_true(s, "SuccessCriteriaMet").is_some();
    if added {
        plan.status.uncounted_terminated_pods = Some(uncounted_status(&uncounted_ok, &uncounted_failed));
        if let Some(message) = &fail_job
            && !has_target(&plan.status)
            && !was_finished
        {
            let conditions = plan.status.conditions.get_or_insert_with(Vec::new);
            set_condition(conditions, condition("FailureTarget", "True", "PodFailurePolicy", message, &now_t), now_t.clone());
        }
        current.status = Some(plan.status.clone());
        current = match jobs_api.replace_status(&current, &PostParams::default()).await {
            Ok(j) => j,
            Err(e) if e.is_not_found() => return Ok(Action::await_change()),
            Err(e) => return Err(e),
        };
    }

    // 2. Remove the finalizer of every counted (or ignored) pod.
    for u in uncounted_ok.iter().chain(uncounted_failed.iter()) {
        if let Some(p) = by_uid.get(u.as_str())
            && has_finalizer(p.meta(), TRACKING_FINALIZER)
            && !released.contains(u)
        {
            release.push((*p).clone());
        }
    }
    let mut now_released: HashSet<String> = released.clone();
    let patched = futures::future::join_all(release.iter().map(|p| {
        let api = pods_api.clone();
        async move { ignore_not_found(api.patch(p.name(), &release_patch(), &PatchParams::default()).await) }
    }))
    .await;
    let mut first_error = None;
    for (p, r) in release.iter().zip(patched) {
        match r {
            Ok(_) => {
                now_released.insert(p.uid().to_owned());
                ctx.memory(&uid, |m| m.released.insert(p.uid().to_owned()));
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }

    // 3. Released (or vanished) pods move from `uncountedTerminatedPods` into the counters.
    let gone_or_released = |u: &String| now_released.contains(u) || !by_uid.contains_key(u.as_str());
    let c = completions.unwrap_or(0);
    let mut completed = IndexSet::parse(plan.status.completed_indexes.as_deref().unwrap_or(""), c);
    let mut failed_indexes = IndexSet::parse(plan.status.failed_indexes.as_deref().unwrap_or(""), c);
    let mut succeeded = plan.status.succeeded.unwrap_or(0);
    let mut failed = plan.status.failed.unwrap_or(0);
    let moved_ok: Vec<String> = uncounted_ok.iter().filter(|u| gone_or_released(u)).cloned().collect();
    let moved_failed: Vec<String> = uncounted_failed.iter().filter(|u| gone_or_released(u)).cloned().collect();
    for u in &moved_ok {
        uncounted_ok.remove(u);
        let index = by_uid.get(u.as_str()).and_then(|p| completion_index(p));
        if !indexed {
            succeeded = succeeded.saturating_add(1);
        } else if let Some(i) = index.filter(|i| *i < c) {
            completed.insert(i);
        }
    }
    if !moved_ok.is_empty() {
        ctx.memory(&uid, |m| m.failures = 0);
    }
    for u in &moved_failed {
        uncounted_failed.remove(u);
        failed = failed.saturating_add(1);
        ctx.memory(&uid, |m| {
            m.failures = m.failures.saturating_add(1);
            m.last_failure = Some(now);
        });
        if let (Some(limit), Some(p)) = (per_index, by_uid.get(u.as_str()))
            && let Some(i) = completion_index(p).filter(|i| *i < c)
        {
            let action = spec.pod_failure_policy.as_ref().and_then(|pol| match_policy(pol, p)).map(|m| m.action);
            if action == Some(FailureAction::FailIndex) || index_failures(p) + 1 > limit {
                failed_indexes.insert(i);
            }
        }
    }
    if indexed {
        succeeded = to_i32(completed.len());
        plan.status.completed_indexes = (!completed.is_empty()).then(|| completed.to_string());
        if per_index.is_some() {
            plan.status.failed_indexes = Some(failed_indexes.to_string());
        }
    }
    plan.status.succeeded = Some(succeeded);
    plan.status.failed = Some(failed);
    plan.status.uncounted_terminated_pods = Some(uncounted_status(&uncounted_ok, &uncounted_failed));

    // 4. The pods that still run, and the Job's fate.
    let mut active: Vec<Arc<Pod>> =
        owned.iter().filter(|p| !is_deleting(p.meta()) && !is_terminal(p) && !deleted.contains(p.uid())).cloned().collect();
    let mut terminating = owned.iter().filter(|p| !is_terminal(p) && (is_deleting(p.meta()) || deleted.contains(p.uid()))).count();
    let mut to_delete: Vec<Arc<Pod>> = Vec::new();
    if !was_finished
        && !has_target(&plan.status)
        && !job_deleting
        && spec.suspend != Some(true)
        && condition_true(&plan.status, "Suspended").is_some()
    {
        let conditions = plan.status.conditions.get_or_insert_with(Vec::new);
        set_condition(conditions, condition("Suspended", "False", "JobResumed", "Job resumed", &now_t), now_t.clone());
        plan.events.push(EventData::normal("Resumed", "Resume", "Job resumed"));
        // The deadline counts from the resume.
        plan.status.start_time = Some(now_t.clone());
    }
    if !was_finished && !has_target(&plan.status) && !job_deleting {
        let start = plan.status.start_time.as_ref().map(|t| t.0);
        let suspended = spec.suspend == Some(true);
        let on_failure_restarts = spec.template.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) == Some("OnFailure");
        let restart_sum: i32 = if on_failure_restarts { active.iter().map(|p| restarts(p)).sum() } else { 0 };
        let past_restarts = on_failure_restarts && if backoff_limit == 0 { restart_sum > 0 } else { restart_sum >= backoff_limit };
        let deadline = spec.active_deadline_seconds.zip(start).filter(|_| !suspended).map(|(s, t)| t + SignedDuration::from_secs(s));
        let target = if let Some(message) = fail_job {
            Some(("FailureTarget", "PodFailurePolicy", message))
        } else if failed > backoff_limit || past_restarts {
            Some(("FailureTarget", "BackoffLimitExceeded", "Job has reached the specified backoff limit".to_owned()))
        } else if deadline.is_some_and(|d| d <= now) {
            Some(("FailureTarget", "DeadlineExceeded", "Job was active longer than specified deadline".to_owned()))
        } else if per_index.is_some() && spec.max_failed_indexes.is_some_and(|m| to_i32(failed_indexes.len()) > m) {
            Some((
                "FailureTarget",
                "MaxFailedIndexesExceeded",
                "Job has exceeded the specified maximal number of failed indexes".to_owned(),
            ))
        } else if indexed && to_i32(completed.len()) >= c {
            Some(("SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods".to_owned()))
        } else if indexed && !failed_indexes.is_empty() && to_i32(completed.len() + failed_indexes.len()) >= c {
            Some(("FailureTarget", "FailedIndexes", "Job has failed indexes".to_owned()))
        } else if !indexed
            && match completions {
                Some(c) => succeeded >= c,
                // Without completions, the first success ends the Job once the others stop.
                None => succeeded > 0 && active.is_empty() && uncounted_ok.is_empty(),
            }
        {
            Some(("SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods".to_owned()))
        } else {
            if let Some(d) = deadline {
                plan.requeue_in(Duration::try_from(d.duration_since(now)).unwrap_or_default());
            }
            None
        };
        if let Some((type_, reason, message)) = target {
            let conditions = plan.status.conditions.get_or_insert_with(Vec::new);
            set_condition(conditions, condition(type_, "True", reason, &message, &now_t), now_t.clone());
        }
    }
    if was_finished || has_target(&plan.status) || job_deleting {
        to_delete.append(&mut active);
    } else if spec.suspend == Some(true) {
        to_delete.append(&mut active);
        let conditions = plan.status.conditions.get_or_insert_with(Vec::new);
        if set_condition(conditions, condition("Suspended", "True", "JobSuspended", "Job suspended", &now_t), now_t.clone()) {
            plan.events.push(EventData::normal("Suspended", "Suspend", "Job suspended"));
        }
        // A suspended Job has not started (its template may change until it resumes).
        plan.status.start_time = None;
    } else {
        if plan.status.start_time.is_none() {
            plan.status.start_time = Some(now_t.clone());
        }
        if pending == 0 {
            let backoff = ctx.memory(&uid, |m| {
                let until = m.last_failure.map(|t| t + SignedDuration::try_from(pod_backoff(m.failures)).unwrap_or_default());
                until.filter(|u| *u > now).map(|u| Duration::try_from(u.duration_since(now)).unwrap_or_default())
            });
            let creates = if indexed {
                plan_indexed(&owned, &mut active, &mut to_delete, c, parallelism, &completed, &failed_indexes, &uncounted_ok)
            } else {
                let done = succeeded.saturating_add(to_i32(uncounted_ok.len()));
                let want = match completions {
                    Some(c) => parallelism.min((c - done).max(0)),
                    None if done > 0 => to_i32(active.len()),
                    None => parallelism,
                };
                let want = usize::try_from(want).unwrap_or(0);
                if active.len() > want {
                    to_delete.extend(active.drain(want..));
                }
                vec![None; want.saturating_sub(active.len())]
            };
            if !creates.is_empty() {
                if let Some(wait) = backoff {
                    plan.requeue_in(wait);
                } else {
                    let failures = index_failure_counts(&owned);
                    let made = futures::future::join_all(creates.iter().map(|index| {
                        let pod = pod_for(&job, *index, index.and_then(|i| failures.get(&i).copied()).unwrap_or(0));
                        let api = pods_api.clone();
                        async move { api.create(&pod, &PostParams::default()).await }
                    }))
                    .await;
                    let mut first_error = None;
                    for r in made {
                        match r {
                            Ok(p) => {
                                ctx.memory(&uid, |m| m.pending.insert(p.name().to_owned()));
                                active.push(Arc::new(p));
                            }
                            Err(e) => {
                                first_error.get_or_insert(e);
                            }
                        }
                    }
                    if let Some(e) = first_error {
                        return Err(e);
                    }
                }
            }
        }
    }

    // 5. Stop the pods that must go: first release them, so that they are not counted.
    for p in &to_delete {
        if has_finalizer(p.meta(), TRACKING_FINALIZER) && !now_released.contains(p.uid()) {
            ignore_not_found(pods_api.patch(p.name(), &release_patch(), &PatchParams::default()).await)?;
        }
        ignore_not_found(pods_api.delete(p.name(), &DeleteParams::default()).await)?;
        ctx.memory(&uid, |m| {
            m.released.insert(p.uid().to_owned());
            m.deleted.insert(p.uid().to_owned());
        });
        terminating += 1;
    }

    // 6. Once nothing runs any more, the target condition becomes terminal.
    if !was_finished && terminating == 0 && active.is_empty() && pending == 0 {
        let target = condition_true(&plan.status, "FailureTarget")
            .map(|c| ("Failed", c.clone()))
            .or_else(|| condition_true(&plan.status, "SuccessCriteriaMet").map(|c| ("Complete", c.clone())));
        if let Some((type_, from)) = target {
            let reason = from.reason.clone().unwrap_or_default();
            let message = from.message.clone().unwrap_or_default();
            let conditions = plan.status.conditions.get_or_insert_with(Vec::new);
            set_condition(conditions, condition(type_, "True", &reason, &message, &now_t), now_t.clone());
            if type_ == "Complete" {
                plan.status.completion_time = Some(now_t.clone());
                plan.events.push(EventData::normal("Completed", "Complete", "Job completed"));
            } else {
                plan.events.push(EventData::warning(reason, "Fail", message));
            }
        }
    }
    plan.status.active = Some(to_i32(active.len()));
    plan.status.ready = Some(to_i32(active.iter().filter(|p| pod_is_ready(p)).count()));
    plan.status.terminating = Some(to_i32(terminating));

    if plan.status != current.status.clone().unwrap_or_default() {
        current.status = Some(plan.status.clone());
        current = match jobs_api.replace_status(&current, &PostParams::default()).await {
            Ok(j) => j,
            Err(e) if e.is_not_found() => return Ok(Action::await_change()),
            Err(e) => return Err(e),
        };
    }
    let reference = object_reference(&current);
    for event in &plan.events {
        if let Err(error) = ctx.shared.recorder.publish(&reference, event).await {
            tracing::debug!(%error, "cannot publish a job event");
        }
    }

    // What is remembered about a Job ends with it (or with its last pod, once it finished).
    if job_deleting || (finish_time(&current).is_some() && owned.is_empty()) {
        ctx.forget(&uid);
    }
    // 7. A finished Job with a time to live is deleted when that runs out.
    if let Some(finished) = finish_time(&current)
        && let Some(ttl) = spec.ttl_seconds_after_finished.filter(|_| !job_deleting)
    {
        let expires = finished + SignedDuration::from_secs(i64::from(ttl.max(0)));
        if expires <= now {
            let params = DeleteParams {
                preconditions: Some(Preconditions { uid: Some(uid.clone()), resource_version: None }),
                ..DeleteParams::foreground()
            };
            ignore_not_found(jobs_api.delete(current.name(), &params).await)?;
            return Ok(Action::await_change());
        }
        plan.requeue_in(Duration::try_from(expires.duration_since(now)).unwrap_or_default());
    }
    Ok(match plan.requeue {
        // A little past the moment, so that the clock has surely reached it.
        Some(d) => Action::requeue(d + Duration::from_millis(100)),
        None => Action::await_change(),
    })
}

/// The index each pod of an Indexed Job would be replaced with, and its earlier failures.
fn index_failure_counts(owned: &[Arc<Pod>]) -> BTreeMap<i32, i32> {
    let mut out = BTreeMap::new();
    for p in owned.iter().filter(|p| outcome(p) == Some(false)) {
        if let Some(i) = completion_index(p) {
            let n = index_failures(p) + 1;
            let e = out.entry(i).or_insert(0);
            *e = (*e).max(n);
        }
    }
    out
}

/// Plans an Indexed Job's pods: keeps one active pod per pending index (deleting duplicates and
/// pods of finished or out-of-range indexes), and returns the lowest pending indexes without a
/// pod, up to `parallelism`.
#[allow(clippy::too_many_arguments)]
fn plan_indexed(
    owned: &[Arc<Pod>],
    active: &mut Vec<Arc<Pod>>,
    to_delete: &mut Vec<Arc<Pod>>,
    completions: i32,
    parallelism: i32,
    completed: &IndexSet,
    failed: &IndexSet,
    uncounted_ok: &BTreeSet<String>,
) -> Vec<Option<i32>> {
    let mut running: HashSet<i32> = HashSet::new();
    // Succeeded pods not yet counted hold their index.
    for p in owned.iter().filter(|p| uncounted_ok.contains(p.uid())) {
        if let Some(i) = completion_index(p) {
            running.insert(i);
        }
    }
    let mut keep = Vec::new();
    for p in active.drain(..) {
        match completion_index(&p) {
            Some(i) if i < completions && !completed.contains(i) && !failed.contains(i) && running.insert(i) => keep.push(p),
            _ => to_delete.push(p),
        }
    }
    let room = usize::try_from(parallelism).unwrap_or(0).saturating_sub(keep.len());
    if keep.len() > usize::try_from(parallelism).unwrap_or(0) {
        let excess = keep.split_off(usize::try_from(parallelism).unwrap_or(0));
        to_delete.extend(excess);
    }
    *active = keep;
    (0..completions).filter(|i| !completed.contains(*i) && !failed.contains(*i) && !running.contains(i)).take(room).map(Some).collect()
}
