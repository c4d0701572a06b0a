//! The Job controller.

use crate::support::*;
use bosun_controllers::builtin::job::JOB_NAME_LABEL;
use bosun_controllers::builtin::pod_is_active;
use bosun_core::{Api, ListParams, Patch, PatchParams, PostParams};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

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

async fn active_of(pods: &Api<Pod>, job: &str) -> Result<Vec<Pod>, bosun_core::Error> {
    let lp = ListParams::default().labels(format!("{JOB_NAME_LABEL}={job}"));
    Ok(pods.list(&lp).await?.items.into_iter().filter(pod_is_active).collect())
}

async fn finish(pods: &Api<Pod>, pod: &Pod, phase: &str) -> Result<(), bosun_core::Error> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    pods.patch_status(name, &Patch::Merge(serde_json::json!({"status": {"phase": phase}})), &PatchParams::default()).await.map(drop)
}

fn condition(j: &Job) -> Option<(String, Option<String>)> {
    j.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.status == "True").map(|c| (c.type_.clone(), c.reason.clone()))
}

#[tokio::test(start_paused = true)]
async fn a_job_runs_parallel_pods_until_its_completions_succeed() -> Res {
    let h = harness(&["job"]);
    let jobs = Api::<Job>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    jobs.create(&job("calc", 5, 2, 3), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
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
        h.run_until_quiescent().await?;
        let j = jobs.get("calc").await?;
        let s = j.status.clone().unwrap_or_default();
        if condition(&j).is_none() {
            assert_eq!(s.active, Some(i32::try_from(active_of(&pods, "calc").await?.len())?));
        }
    }
    let j = jobs.get("calc").await?;
    let s = j.status.clone().unwrap_or_default();
    assert_eq!((s.active, s.succeeded, s.failed), (Some(0), Some(5), Some(1)));
    assert_eq!(condition(&j), Some(("Complete".into(), Some("CompletionsReached".into()))));
    assert!(s.start_time.is_some() && s.completion_time.is_some());
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_job_fails_past_its_backoff_limit_and_stops_its_pods() -> Res {
    let h = harness(&["job"]);
    let jobs = Api::<Job>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    jobs.create(&job("flaky", 4, 2, 1), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    // One failure is within the limit: it is replaced.
    let active = active_of(&pods, "flaky").await?;
    finish(&pods, &active[0], "Failed").await?;
    h.run_until_quiescent().await?;
    assert_eq!(active_of(&pods, "flaky").await?.len(), 2);
    assert_eq!(condition(&jobs.get("flaky").await?), None);
    // A second one exceeds backoffLimit 1.
    let active = active_of(&pods, "flaky").await?;
    finish(&pods, &active[0], "Failed").await?;
    h.run_until_quiescent().await?;
    let j = jobs.get("flaky").await?;
    assert_eq!(condition(&j), Some(("Failed".into(), Some("BackoffLimitExceeded".into()))));
    let s = j.status.clone().unwrap_or_default();
    assert_eq!((s.active, s.failed), (Some(0), Some(2)));
    assert!(active_of(&pods, "flaky").await?.is_empty(), "the remaining pod is deleted");
    assert!(s.completion_time.is_none());
    Ok(())
}
