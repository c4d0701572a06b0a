//! The Job controller.

use crate::support::*;
use bosun_controllers::builtin::job::{COMPLETION_INDEX_ANNOTATION, COMPLETION_INDEX_ENV, JOB_NAME_LABEL, TRACKING_FINALIZER};
use bosun_controllers::builtin::pod_is_active;
use bosun_core::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;
use std::time::Duration;

type Res = Result<(), Box<dyn std::error::Error>>;

fn job(name: &str, completions: i32, parallelism: i32, backoff_limit: i32) -> Job {
    let mut template = template(name, "batch:1");
    if let Some(spec) = template.spec.as_mut() {
        spec.restart_policy = Some("Never".into());
    }
    Job {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some("default".into()), ..ObjectMeta::default() },
        spec: Some(JobSpec {
            completions: Some(completions),
            parallelism: Some(parallelism),
            backoff_limit: Some(backoff_limit),
            template,
            ..JobSpec::default()
        }),
        status: None,
    }
}

fn spec_mut(j: &mut Job) -> &mut JobSpec {
    j.spec.get_or_insert_with(JobSpec::default)
}

async fn pods_of(pods: &Api<Pod>, job: &str) -> Result<Vec<Pod>, bosun_core::Error> {
    let lp = ListParams::default().labels(format!("{JOB_NAME_LABEL}={job}"));
    Ok(pods.list(&lp).await?.items)
}

async fn active_of(pods: &Api<Pod>, job: &str) -> Result<Vec<Pod>, bosun_core::Error> {
    Ok(pods_of(pods, job).await?.into_iter().filter(pod_is_active).collect())
}

fn name(p: &Pod) -> &str {
    p.metadata.name.as_deref().unwrap_or_default()
}

/// Ends a pod: `phase` with its container exited `exit` and, optionally, a `True` pod condition.
async fn end(pods: &Api<Pod>, pod: &Pod, phase: &str, exit: i32, condition: Option<&str>) -> Result<(), bosun_core::Error> {
    let mut status = serde_json::json!({
        "phase": phase,
        "containerStatuses": [{
            "name": "main", "image": "batch:1", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": exit}},
        }],
    });
    if let Some(c) = condition {
        // Ready stays, or the simulated kubelet would make the pod run again.
        status["conditions"] = serde_json::json!([{"type": c, "status": "True"}, {"type": "Ready", "status": "True"}]);
    }
    pods.patch_status(name(pod), &Patch::Merge(serde_json::json!({ "status": status })), &PatchParams::default()).await.map(drop)
}

async fn finish(pods: &Api<Pod>, pod: &Pod, phase: &str) -> Result<(), bosun_core::Error> {
    end(pods, pod, phase, if phase == "Succeeded" { 0 } else { 1 }, None).await
}

/// The `True` conditions of a Job, as (type, reason).
fn conditions(j: &Job) -> Vec<(String, String)> {
    let list = j.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    list.into_iter().filter(|c| c.status == "True").map(|c| (c.type_, c.reason.unwrap_or_default())).collect()
}

fn has(j: &Job, type_: &str, reason: &str) -> bool {
    conditions(j).iter().any(|(t, r)| t == type_ && r == reason)
}

fn counts(j: &Job) -> (Option<i32>, Option<i32>, Option<i32>) {
    let s = j.status.clone().unwrap_or_default();
    (s.active, s.succeeded, s.failed)
}

/// Lets virtual time pass, then waits for the controllers to settle.
async fn pass(h: &bosun_controllers::Harness, d: Duration) -> Res {
    tokio::time::sleep(d).await;
    h.run_until_quiescent().await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_job_runs_parallel_pods_until_its_completions_succeed() -> Res {
    let h = harness(&["job"]);
    let jobs = Api::<Job>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    jobs.create(&job("calc", 5, 2, 3), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    let first = active_of(&pods, "calc").await?;
    assert!(
        first.iter().all(|p| p.metadata.finalizers.iter().flatten().any(|f| f == TRACKING_FINALIZER)),
        "pods carry the tracking finalizer"
    );
    let mut failed_one = false;
    for _ in 0..10 {
        let active = active_of(&pods, "calc").await?;
        assert!(active.len() <= 2, "never more than parallelism pods ({})", active.len());
        if active.is_empty() {
            break;
        }
        for (i, p) in active.iter().enumerate() {
            let phase = if !failed_one && i == 0 { "Failed" } else { "Succeeded" };
            failed_one = true;
            finish(&pods, p, phase).await?;
        }
        // Past the 10 s replacement delay the failure brings.
        pass(&h, Duration::from_secs(11)).await?;
        let j = jobs.get("calc").await?;
        if !has(&j, "Complete", "CompletionsReached") {
            assert_eq!(j.status.clone().unwrap_or_default().active, Some(i32::try_from(active_of(&pods, "calc").await?.len())?));
        }
    }
    let j = jobs.get("calc").await?;
    let s = j.status.clone().unwrap_or_default();
    assert_eq!(counts(&j), (Some(0), Some(5), Some(1)));
    assert_eq!(
        conditions(&j),
        vec![("SuccessCriteriaMet".into(), "CompletionsReached".into()), ("Complete".into(), "CompletionsReached".into())]
    );
    assert!(s.start_time.is_some() && s.completion_time.is_some());
    let counted = pods_of(&pods, "calc").await?;
    assert!(counted.iter().all(|p| p.metadata.finalizers.as_deref().unwrap_or_default().is_empty()), "counted pods are released");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_job_fails_past_its_backoff_limit_and_stops_its_pods() -> Res {
    let h = harness(&["job"]);
    let jobs = Api::<Job>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    jobs.create(&job("flaky", 4, 2, 1), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    // One failure is within the limit: it is replaced (after the backoff delay).
    let active = active_of(&pods, "flaky").await?;
    finish(&pods, &active[0], "Failed").await?;
    pass(&h, Duration::from_secs(11)).await?;
    assert_eq!(active_of(&pods, "flaky").await?.len(), 2);
    assert!(conditions(&jobs.get("flaky").await?).is_empty());
    // A second one exceeds backoffLimit 1.
    let active = active_of(&pods, "flaky").await?;
    finish(&pods, &active[0], "Failed").await?;
    h.run_until_quiescent().await?;
    let j = jobs.get("flaky").await?;
    assert!(has(&j, "FailureTarget", "BackoffLimitExceeded"), "{:?}", conditions(&j));
    assert!(has(&j, "Failed", "BackoffLimitExceeded"), "{:?}", conditions(&j));
    let s = j.status.clone().unwrap_or_default();
    assert_eq!((s.active, s.failed, s.terminating), (Some(0), Some(2), Some(0)));
    assert!(active_of(&pods, "flaky").await?.is_empty(), "the remaining pod is deleted");
    assert!(s.completion_time.is_none());
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn an_indexed_job_completes_each_index_once() -> Res {
    let h = harness(&["job"]);
    let jobs = Api::<Job>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    let mut j = job("idx", 4, 2, 6);
    spec_mut(&mut j).completion_mode = Some("Indexed".into());
    jobs.create(&j, &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    let mut failed_once = false;
    for _ in 0..10 {
        let active = active_of(&pods, "idx").await?;
        if active.is_empty() {
            break;
        }
        assert!(active.len() <= 2);
        let mut seen = std::collections::BTreeSet::new();
        for p in &active {
            let ann = p.metadata.annotations.clone().unwrap_or_default();
            let index = ann.get(COMPLETION_INDEX_ANNOTATION).cloned().unwrap_or_default();
            assert!(seen.insert(index.clone()), "one active pod per index");
            assert_eq!(p.metadata.labels.clone().unwrap_or_default().get(COMPLETION_INDEX_ANNOTATION), Some(&index));
            assert!(name(p).starts_with(&format!("idx-{index}-")), "{}", name(p));
            let env = p.spec.as_ref().map(|s| s.containers[0].env.clone().unwrap_or_default()).unwrap_or_default();
            assert!(env.iter().any(|e| e.name == COMPLETION_INDEX_ENV), "JOB_COMPLETION_INDEX is set");
            // Index 1 fails once and is retried under the same index.
            if index == "1" && !failed_once {
                failed_once = true;
                finish(&pods, p, "Failed").await?;
            } else {
                finish(&pods, p, "Succeeded").await?;
            }
        }
        pass(&h, Duration::from_secs(11)).await?;
    }
    let j = jobs.get("idx").await?;
    let s = j.status.clone().unwrap_or_default();
    assert_eq!(s.completed_indexes.as_deref(), Some("0-3"));
    assert_eq!((s.succeeded, s.failed), (Some(4), Some(1)));
    assert!(has(&j, "Complete", "CompletionsReached"));
    let mut per_index: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    for p in pods_of(&pods, "idx").await? {
        let index = p.metadata.annotations.clone().unwrap_or_default().get(COMPLETION_INDEX_ANNOTATION).cloned().unwrap_or_default();
        let e = per_index.entry(index).or_default();
        match p.status.and_then(|s| s.phase).as_deref() {
            Some("Succeeded") => e.0 += 1,
            Some("Failed") => e.1 += 1,
            other => panic!("pod left {other:?}"),
        }
    }
    let want: BTreeMap<String, (u32, u32)> =
        [("0", (1, 0)), ("1", (1, 1)), ("2", (1, 0)), ("3", (1, 0))].map(|(k, v)| (k.to_owned(), v)).into();
    assert_eq!(per_index, want, "each index succeeds exactly once");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn replacement_delays_double_after_each_failure() -> Res {
    let h = harness(&["job"]);
    let jobs = Api::<Job>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    jobs.create(&job("backoff", 1, 1, 10), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    let mut delays = Vec::new();
    for _ in 0..4 {
        let active = active_of(&pods, "backoff").await?;
        assert_eq!(active.len(), 1);
        let old = name(&active[0]).to_owned();
        finish(&pods, &active[0], "Failed").await?;
        let start = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = active_of(&pods, "backoff").await?;
            if now.iter().any(|p| name(p) != old) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(600), "no replacement");
        }
        delays.push(start.elapsed().as_secs());
    }
    // 10 s, 20 s, 40 s, 80 s (to the nearest second, rounding down).
    assert_eq!(delays, vec![10, 20, 40, 80]);
    let j = jobs.get("backoff").await?;
    assert_eq!(j.status.unwrap_or_default().failed, Some(4));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_job_past_its_active_deadline_fails_and_loses_its_pods() -> Res {
    let h = harness(&["job"]);
    let jobs = Api::<Job>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    let mut j = job("slow", 3, 3, 6);
    spec_mut(&mut j).active_deadline_seconds = Some(30);
    jobs.create(&j, &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    assert_eq!(active_of(&pods, "slow").await?.len(), 3);
    pass(&h, Duration::from_secs(20)).await?;
    assert!(conditions(&jobs.get("slow").await?).is_empty(), "not yet");
    pass(&h, Duration::from_secs(11)).await?;
    let j = jobs.get("slow").await?;
    assert!(has(&j, "FailureTarget", "DeadlineExceeded") && has(&j, "Failed", "DeadlineExceeded"), "{:?}", conditions(&j));
    assert!(pods_of(&pods, "slow").await?.is_empty(), "its pods are deleted");
    assert_eq!(j.status.unwrap_or_default().active, Some(0));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_finished_job_with_a_ttl_is_deleted_with_its_pods() -> Res {
    let h = harness(&["job", "garbagecollector"]);
    let jobs = Api::<Job>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    let mut j = job("short", 1, 1, 6);
    spec_mut(&mut j).ttl_seconds_after_finished = Some(60);
    jobs.create(&j, &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    let active = active_of(&pods, "short").await?;
    finish(&pods, &active[0], "Succeeded").await?;
    h.run_until_quiescent().await?;
    assert!(has(&jobs.get("short").await?, "Complete", "CompletionsReached"));
    pass(&h, Duration::from_secs(50)).await?;
    assert!(jobs.get_opt("short").await?.is_some(), "kept until the ttl runs out");
    assert_eq!(pods_of(&pods, "short").await?.len(), 1);
    pass(&h, Duration::from_secs(11)).await?;
    assert!(jobs.get_opt("short").await?.is_none(), "deleted after the ttl");
    assert!(pods_of(&pods, "short").await?.is_empty(), "its pods went with it");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_suspended_job_stops_its_pods_and_a_resumed_one_restarts_them() -> Res {
    let h = harness(&["job"]);
    let jobs = Api::<Job>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    let mut j = job("pause", 4, 2, 0);
    spec_mut(&mut j).active_deadline_seconds = Some(100);
    jobs.create(&j, &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    let started = jobs.get("pause").await?.status.unwrap_or_default().start_time;
    assert_eq!(active_of(&pods, "pause").await?.len(), 2);
    let suspend = |on: bool| Patch::Merge(serde_json::json!({"spec": {"suspend": on}}));
    jobs.patch("pause", &suspend(true), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    let j = jobs.get("pause").await?;
    assert!(has(&j, "Suspended", "JobSuspended"), "{:?}", conditions(&j));
    assert!(pods_of(&pods, "pause").await?.is_empty(), "running pods are deleted");
    assert_eq!(counts(&j), (Some(0), Some(0), Some(0)), "and not counted as failures");
    assert!(j.status.as_ref().and_then(|s| s.start_time.as_ref()).is_none(), "a suspended job has no start time");
    // A suspended Job's deadline does not run.
    pass(&h, Duration::from_secs(200)).await?;
    let j = jobs.get("pause").await?;
    assert!(!has(&j, "Failed", "DeadlineExceeded"));
    jobs.patch("pause", &suspend(false), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    let j = jobs.get("pause").await?;
    let cond = j.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|c| c.iter().find(|c| c.type_ == "Suspended")).cloned();
    assert_eq!(cond.map(|c| (c.status, c.reason)), Some(("False".into(), Some("JobResumed".into()))));
    assert_eq!(active_of(&pods, "pause").await?.len(), 2, "pods are created again");
    let restarted = j.status.unwrap_or_default().start_time;
    assert!(restarted > started, "the start time is reset on resume");
    Ok(())
}

fn rule(action: &str) -> PodFailurePolicyRule {
    PodFailurePolicyRule { action: action.into(), on_exit_codes: None, on_pod_conditions: None }
}

#[tokio::test(start_paused = true)]
async fn a_fail_job_rule_fails_the_job_on_its_exit_code() -> Res {
    let h = harness(&["job"]);
    let jobs = Api::<Job>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    let mut j = job("strict", 3, 3, 6);
    let mut fail = rule("FailJob");
    fail.on_exit_codes =
        Some(PodFailurePolicyOnExitCodesRequirement { container_name: Some("main".into()), operator: "In".into(), values: vec![42] });
    spec_mut(&mut j).pod_failure_policy = Some(PodFailurePolicy { rules: vec![fail] });
    jobs.create(&j, &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    let active = active_of(&pods, "strict").await?;
    assert_eq!(active.len(), 3);
    // Exit code 1 matches no rule: counted, within the limit.
    end(&pods, &active[0], "Failed", 1, None).await?;
    h.run_until_quiescent().await?;
    assert!(conditions(&jobs.get("strict").await?).is_empty());
    end(&pods, &active[1], "Failed", 42, None).await?;
    h.run_until_quiescent().await?;
    let j = jobs.get("strict").await?;
    assert!(has(&j, "FailureTarget", "PodFailurePolicy") && has(&j, "Failed", "PodFailurePolicy"), "{:?}", conditions(&j));
    let message = j
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Failed"))
        .and_then(|c| c.message.clone());
    let want = format!("Container main for pod default/{} failed with exit code 42 matching FailJob rule at index 0", name(&active[1]));
    assert_eq!(message, Some(want));
    assert!(active_of(&pods, "strict").await?.is_empty(), "the other pods are deleted");
    assert_eq!(j.status.unwrap_or_default().failed, Some(2));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn an_ignore_rule_does_not_count_disruptions() -> Res {
    let h = harness(&["job"]);
    let jobs = Api::<Job>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    let mut j = job("tolerant", 1, 1, 0);
    let mut ignore = rule("Ignore");
    ignore.on_pod_conditions =
        Some(vec![PodFailurePolicyOnPodConditionsPattern { type_: "DisruptionTarget".into(), status: Some("True".into()) }]);
    spec_mut(&mut j).pod_failure_policy = Some(PodFailurePolicy { rules: vec![ignore] });
    jobs.create(&j, &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    for _ in 0..3 {
        let active = active_of(&pods, "tolerant").await?;
        assert_eq!(active.len(), 1);
        end(&pods, &active[0], "Failed", 137, Some("DisruptionTarget")).await?;
        // Replaced at once: an ignored failure brings no backoff either.
        h.run_until_quiescent().await?;
    }
    let j = jobs.get("tolerant").await?;
    assert!(conditions(&j).is_empty(), "backoffLimit 0 is not reached: {:?}", conditions(&j));
    assert_eq!(counts(&j), (Some(1), Some(0), Some(0)));
    // A failure without the condition counts and passes backoffLimit 0.
    let active = active_of(&pods, "tolerant").await?;
    end(&pods, &active[0], "Failed", 1, None).await?;
    h.run_until_quiescent().await?;
    let j = jobs.get("tolerant").await?;
    assert!(has(&j, "Failed", "BackoffLimitExceeded"), "{:?}", conditions(&j));
    assert_eq!(j.status.unwrap_or_default().failed, Some(1));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn deleting_counted_pods_loses_no_counts() -> Res {
    let h = harness(&["job"]);
    let jobs = Api::<Job>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    jobs.create(&job("keep", 3, 3, 6), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    let active = active_of(&pods, "keep").await?;
    finish(&pods, &active[0], "Succeeded").await?;
    finish(&pods, &active[1], "Failed").await?;
    // Deleted right away: the finalizer holds them until they are counted.
    pods.delete(name(&active[0]), &DeleteParams::default()).await?;
    pods.delete(name(&active[1]), &DeleteParams::default()).await?;
    h.run_until_quiescent().await?;
    let j = jobs.get("keep").await?;
    let s = j.status.clone().unwrap_or_default();
    assert_eq!((s.succeeded, s.failed), (Some(1), Some(1)));
    let uncounted = s.uncounted_terminated_pods.unwrap_or_default();
    assert!(uncounted.succeeded.unwrap_or_default().is_empty() && uncounted.failed.unwrap_or_default().is_empty());
    assert!(pods.get_opt(name(&active[0])).await?.is_none(), "released pods are deleted");
    // A running pod deleted by someone else counts as failed and is replaced.
    pods.delete(name(&active[2]), &DeleteParams::default()).await?;
    pass(&h, Duration::from_secs(30)).await?;
    let s = jobs.get("keep").await?.status.unwrap_or_default();
    assert_eq!((s.succeeded, s.failed), (Some(1), Some(2)));
    assert_eq!(active_of(&pods, "keep").await?.len(), 2);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn pods_of_a_deleted_job_are_released() -> Res {
    let h = harness(&["job", "garbagecollector"]);
    let jobs = Api::<Job>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    jobs.create(&job("gone", 2, 2, 6), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    assert_eq!(active_of(&pods, "gone").await?.len(), 2);
    jobs.delete("gone", &DeleteParams::background()).await?;
    h.run_until_quiescent().await?;
    assert!(pods_of(&pods, "gone").await?.is_empty(), "the garbage collector's deletes are not held by the finalizer");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn failed_indexes_stop_retrying_and_fail_the_job_at_the_end() -> Res {
    let h = harness(&["job"]);
    let jobs = Api::<Job>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    let mut j = job("perindex", 3, 3, 6);
    let spec = spec_mut(&mut j);
    spec.completion_mode = Some("Indexed".into());
    spec.backoff_limit = None;
    spec.backoff_limit_per_index = Some(1);
    let mut fail_index = rule("FailIndex");
    fail_index.on_exit_codes =
        Some(PodFailurePolicyOnExitCodesRequirement { container_name: None, operator: "In".into(), values: vec![3] });
    spec.pod_failure_policy = Some(PodFailurePolicy { rules: vec![fail_index] });
    jobs.create(&j, &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    let index_of =
        |p: &Pod| p.metadata.annotations.clone().unwrap_or_default().get(COMPLETION_INDEX_ANNOTATION).cloned().unwrap_or_default();
    let by_index = |list: &[Pod], i: &str| list.iter().find(|p| index_of(p) == i).cloned();
    let active = active_of(&pods, "perindex").await?;
    assert_eq!(active.len(), 3);
    // Index 0 exits 3: FailIndex, no retry. Index 1 exits 1: one retry allowed. Index 2 succeeds.
    if let Some(p) = by_index(&active, "0") {
        end(&pods, &p, "Failed", 3, None).await?;
    }
    if let Some(p) = by_index(&active, "1") {
        end(&pods, &p, "Failed", 1, None).await?;
    }
    if let Some(p) = by_index(&active, "2") {
        finish(&pods, &p, "Succeeded").await?;
    }
    pass(&h, Duration::from_secs(30)).await?;
    let active = active_of(&pods, "perindex").await?;
    assert_eq!(active.iter().map(index_of).collect::<Vec<_>>(), vec!["1".to_owned()], "only index 1 is retried");
    let retry = &active[0];
    assert_eq!(
        retry.metadata.annotations.clone().unwrap_or_default().get("batch.kubernetes.io/job-index-failure-count").map(String::as_str),
        Some("1")
    );
    let s = jobs.get("perindex").await?.status.unwrap_or_default();
    assert_eq!((s.completed_indexes.as_deref(), s.failed_indexes.as_deref()), (Some("2"), Some("0")));
    end(&pods, retry, "Failed", 1, None).await?;
    pass(&h, Duration::from_secs(30)).await?;
    let j = jobs.get("perindex").await?;
    let s = j.status.clone().unwrap_or_default();
    assert_eq!((s.completed_indexes.as_deref(), s.failed_indexes.as_deref()), (Some("2"), Some("0-1")));
    assert!(has(&j, "FailureTarget", "FailedIndexes") && has(&j, "Failed", "FailedIndexes"), "{:?}", conditions(&j));
    assert!(active_of(&pods, "perindex").await?.is_empty());
    Ok(())
}
