//! The CronJob controller, on the virtual clock (Jobs are finished by the test, not by pods).

use crate::support::*;
use bosun_controllers::builtin::cronjob::{SCHEDULED_TIMESTAMP_ANNOTATION, job_name};
use bosun_controllers::builtin::job::finished_condition;
use bosun_controllers::{Harness, ManagerConfig, clock};
use bosun_core::{Api, ListParams, Patch, PatchParams, PostParams};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use std::time::Duration;

type Res = Result<(), Box<dyn std::error::Error>>;

fn cronjob(name: &str, schedule: &str, policy: &str) -> CronJob {
    let mut template = template(name, "cron:1");
    if let Some(spec) = template.spec.as_mut() {
        spec.restart_policy = Some("Never".into());
    }
    CronJob {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some("default".into()), ..ObjectMeta::default() },
        spec: CronJobSpec {
            schedule: schedule.into(),
            concurrency_policy: Some(policy.into()),
            job_template: JobTemplateSpec { metadata: None, spec: Some(JobSpec { template, ..JobSpec::default() }) },
            ..CronJobSpec::default()
        },
        status: None,
    }
}

/// The CronJob's Jobs that are not being deleted, oldest first.
async fn jobs_of(api: &Api<Job>, cronjob: &str) -> Result<Vec<Job>, bosun_core::Error> {
    let mut out: Vec<Job> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .filter(|j| j.metadata.owner_references.iter().flatten().any(|r| r.kind == "CronJob" && r.name == cronjob))
        .collect();
    out.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    Ok(out)
}

/// Marks a Job finished (`Complete` or `Failed`) as the Job controller would.
async fn finish(api: &Api<Job>, job: &Job, type_: &str) -> Result<(), bosun_core::Error> {
    let now = clock::now_time();
    let mut status = serde_json::json!({
        "startTime": job.metadata.creation_timestamp,
        "conditions": [{"type": type_, "status": "True", "lastTransitionTime": now}],
    });
    if type_ == "Complete" {
        status["completionTime"] = serde_json::json!(now);
    }
    let name = job.metadata.name.as_deref().unwrap_or_default();
    api.patch_status(name, &Patch::Merge(serde_json::json!({ "status": status })), &PatchParams::default()).await?;
    Ok(())
}

async fn events(h: &Harness, reason: &str) -> Result<Vec<Event>, bosun_core::Error> {
    let api = Api::<Event>::namespaced(h.client(), "default");
    Ok(api.list(&ListParams::default()).await?.items.into_iter().filter(|e| e.reason.as_deref() == Some(reason)).collect())
}

fn note(e: &Event) -> String {
    e.note.clone().unwrap_or_default()
}

/// The start of the minute `t` is in.
fn minute_of(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second().div_euclid(60) * 60).unwrap_or(t)
}

/// Sleeps until the virtual clock is `at` seconds past a minute.
async fn align(at: i64) {
    let s = clock::now().as_second().rem_euclid(60);
    let wait = (at - s).rem_euclid(60);
    tokio::time::sleep(Duration::from_secs(u64::try_from(wait).unwrap_or(0))).await;
}

#[tokio::test(start_paused = true)]
async fn forbid_never_runs_two_jobs_at_once() -> Res {
    let h = harness(&["cronjob"]);
    let crons = Api::<CronJob>::namespaced(h.client(), "default");
    let jobs = Api::<Job>::namespaced(h.client(), "default");
    crons.create(&cronjob("single", "* * * * *", "Forbid"), &PostParams::default()).await?;
    let mut started: std::collections::HashMap<String, tokio::time::Instant> = Default::default();
    for _ in 0..48 {
        tokio::time::sleep(Duration::from_secs(15)).await;
        h.run_until_quiescent().await?;
        let all = jobs_of(&jobs, "single").await?;
        let running: Vec<&Job> = all.iter().filter(|j| finished_condition(j).is_none()).collect();
        assert!(running.len() <= 1, "two jobs at once: {:?}", running.iter().map(|j| j.metadata.name.clone()).collect::<Vec<_>>());
        let active = crons.get("single").await?.status.and_then(|s| s.active).unwrap_or_default();
        assert!(active.len() <= 1);
        for j in running {
            let name = j.metadata.name.clone().unwrap_or_default();
            let since = *started.entry(name).or_insert_with(tokio::time::Instant::now);
            // Each run takes about two and a half minutes: it overlaps the next two times.
            if since.elapsed() >= Duration::from_secs(150) {
                finish(&jobs, j, "Complete").await?;
            }
        }
    }
    // Twelve minutes of schedule: a run every three minutes or so, never one a minute.
    assert!((3..=5).contains(&started.len()), "{} runs", started.len());
    assert!(!events(&h, "JobAlreadyActive").await?.is_empty(), "skipped times are reported");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn replace_deletes_the_running_job_for_the_next() -> Res {
    let h = harness(&["cronjob"]);
    let crons = Api::<CronJob>::namespaced(h.client(), "default");
    let jobs = Api::<Job>::namespaced(h.client(), "default");
    align(30).await;
    crons.create(&cronjob("fresh", "* * * * *", "Replace"), &PostParams::default()).await?;
    let mut names = Vec::new();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(60)).await;
        h.run_until_quiescent().await?;
        let live = jobs_of(&jobs, "fresh").await?;
        assert_eq!(live.len(), 1, "only the latest run is left");
        let name = live[0].metadata.name.clone().unwrap_or_default();
        assert_eq!(name, job_name("fresh", minute_of(clock::now())));
        let active = crons.get("fresh").await?.status.and_then(|s| s.active).unwrap_or_default();
        assert_eq!(active.iter().map(|r| r.name.clone().unwrap_or_default()).collect::<Vec<_>>(), vec![name.clone()]);
        names.push(name);
    }
    names.dedup();
    assert_eq!(names.len(), 4, "a new job each minute");
    assert!(events(&h, "SuccessfulDelete").await?.len() >= 3);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn after_a_long_downtime_only_the_latest_missed_run_starts() -> Res {
    // The virtual clock starts at its first reading: before the downtime.
    let _ = clock::now();
    let mut h = Harness::new(server());
    let crons = Api::<CronJob>::namespaced(h.client(), "default");
    let jobs = Api::<Job>::namespaced(h.client(), "default");
    crons.create(&cronjob("nightly", "* * * * *", "Allow"), &PostParams::default()).await?;
    // Three hours without a controller: 180 missed times.
    tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
    align(30).await;
    h.start_builtins(ManagerConfig::default().only(&["cronjob"]));
    h.run_until_quiescent().await?;
    let live = jobs_of(&jobs, "nightly").await?;
    let expected = minute_of(clock::now());
    assert_eq!(live.iter().map(|j| j.metadata.name.clone().unwrap_or_default()).collect::<Vec<_>>(), vec![job_name("nightly", expected)]);
    let warnings = events(&h, "TooManyMissedTimes").await?;
    assert_eq!(warnings.len(), 1);
    assert!(note(&warnings[0]).starts_with("too many missed start times: 18"), "{}", note(&warnings[0]));
    let status = crons.get("nightly").await?.status.unwrap_or_default();
    assert_eq!(status.last_schedule_time.map(|t| t.0), Some(expected));
    // Back on schedule: the next minute starts one more, without a warning.
    tokio::time::sleep(Duration::from_secs(60)).await;
    h.run_until_quiescent().await?;
    assert_eq!(jobs_of(&jobs, "nightly").await?.len(), 2);
    assert_eq!(events(&h, "TooManyMissedTimes").await?.len(), 1);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_missed_time_past_the_starting_deadline_is_skipped() -> Res {
    let mut h = Harness::new(server());
    let crons = Api::<CronJob>::namespaced(h.client(), "default");
    let jobs = Api::<Job>::namespaced(h.client(), "default");
    align(10).await;
    let mut cj = cronjob("strict", "* * * * *", "Allow");
    cj.spec.starting_deadline_seconds = Some(20);
    crons.create(&cj, &PostParams::default()).await?;
    // Down from before the first time until 40 s after it.
    tokio::time::sleep(Duration::from_secs(90)).await;
    h.start_builtins(ManagerConfig::default().only(&["cronjob"]));
    h.run_until_quiescent().await?;
    assert!(jobs_of(&jobs, "strict").await?.is_empty(), "too late to start");
    tokio::time::sleep(Duration::from_secs(30)).await;
    h.run_until_quiescent().await?;
    assert_eq!(jobs_of(&jobs, "strict").await?.len(), 1, "the next time runs");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn finished_jobs_beyond_the_history_limits_are_deleted() -> Res {
    let h = harness(&["cronjob"]);
    let crons = Api::<CronJob>::namespaced(h.client(), "default");
    let jobs = Api::<Job>::namespaced(h.client(), "default");
    align(30).await;
    let mut cj = cronjob("hist", "* * * * *", "Allow");
    cj.spec.successful_jobs_history_limit = Some(2);
    cj.spec.failed_jobs_history_limit = Some(1);
    crons.create(&cj, &PostParams::default()).await?;
    // Outcomes in the order the runs started. (The store stamps creation with the real clock,
    // which the virtual one has left behind: the first minute may bring two runs.)
    let mut outcomes = vec!["Complete", "Failed", "Complete", "Complete", "Failed", "Complete"].into_iter();
    let mut last_ok = None;
    let mut left = outcomes.len();
    for _ in 0..10 {
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
        h.run_until_quiescent().await?;
        for job in jobs_of(&jobs, "hist").await?.into_iter().filter(|j| finished_condition(j).is_none()) {
            let Some(outcome) = outcomes.next() else { break };
            left -= 1;
            finish(&jobs, &job, outcome).await?;
            if outcome == "Complete" {
                last_ok = jobs.get(job.metadata.name.as_deref().unwrap_or_default()).await?.status.and_then(|s| s.completion_time);
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        h.run_until_quiescent().await?;
    }
    assert_eq!(left, 0);
    let live = jobs_of(&jobs, "hist").await?;
    let kinds: Vec<String> = live.iter().filter_map(|j| finished_condition(j).map(|c| c.type_.clone())).collect();
    assert_eq!(kinds.iter().filter(|k| *k == "Complete").count(), 2, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| *k == "Failed").count(), 1, "{kinds:?}");
    // The newest of each kind are the ones kept.
    assert_eq!(kinds, vec!["Complete", "Failed", "Complete"]);
    let status = crons.get("hist").await?.status.unwrap_or_default();
    assert_eq!(status.last_successful_time, last_ok);
    let active = status.active.unwrap_or_default();
    assert!(
        active.is_empty(),
        "{active:?} of {:?}",
        live.iter().map(|j| (j.metadata.name.clone(), finished_condition(j).map(|c| c.type_.clone()))).collect::<Vec<_>>()
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_time_zone_schedule_fires_at_the_right_utc_instant() -> Res {
    let h = harness(&["cronjob"]);
    let crons = Api::<CronJob>::namespaced(h.client(), "default");
    let jobs = Api::<Job>::namespaced(h.client(), "default");
    let mut cj = cronjob("ny", "30 9 * * *", "Allow");
    cj.spec.time_zone = Some("America/New_York".into());
    crons.create(&cj, &PostParams::default()).await?;
    // The next 09:30 in New York, computed independently of the controller.
    let tz = TimeZone::get("America/New_York")?;
    let now = clock::now();
    let today = now.to_zoned(tz.clone()).date().at(9, 30, 0, 0).to_zoned(tz.clone())?.timestamp();
    let target =
        if today > now { today } else { now.to_zoned(tz.clone()).date().tomorrow()?.at(9, 30, 0, 0).to_zoned(tz.clone())?.timestamp() };
    let wait = target.duration_since(now) - SignedDuration::from_secs(60);
    tokio::time::sleep(Duration::try_from(wait)?).await;
    h.run_until_quiescent().await?;
    assert!(jobs_of(&jobs, "ny").await?.is_empty(), "a minute early: nothing yet");
    tokio::time::sleep(Duration::from_secs(90)).await;
    h.run_until_quiescent().await?;
    let live = jobs_of(&jobs, "ny").await?;
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].metadata.name.clone(), Some(job_name("ny", target)));
    let stamp = live[0].metadata.annotations.clone().unwrap_or_default().get(SCHEDULED_TIMESTAMP_ANNOTATION).cloned().unwrap_or_default();
    assert!(stamp.ends_with("T09:30:00-04:00") || stamp.ends_with("T09:30:00-05:00"), "{stamp}");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_suspended_cronjob_starts_nothing_until_resumed() -> Res {
    let h = harness(&["cronjob"]);
    let crons = Api::<CronJob>::namespaced(h.client(), "default");
    let jobs = Api::<Job>::namespaced(h.client(), "default");
    let mut cj = cronjob("held", "* * * * *", "Allow");
    cj.spec.suspend = Some(true);
    crons.create(&cj, &PostParams::default()).await?;
    tokio::time::sleep(Duration::from_secs(300)).await;
    h.run_until_quiescent().await?;
    assert!(jobs_of(&jobs, "held").await?.is_empty());
    crons.patch("held", &Patch::Merge(serde_json::json!({"spec": {"suspend": false}})), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    assert_eq!(jobs_of(&jobs, "held").await?.len(), 1, "the latest missed time runs on resume");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn an_invalid_schedule_or_time_zone_is_reported() -> Res {
    let h = harness(&["cronjob"]);
    let crons = Api::<CronJob>::namespaced(h.client(), "default");
    crons.create(&cronjob("bad", "61 * * * *", "Allow"), &PostParams::default()).await?;
    let mut cj = cronjob("lost", "* * * * *", "Allow");
    cj.spec.time_zone = Some("Mars/Olympus_Mons".into());
    crons.create(&cj, &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    let bad = events(&h, "InvalidSchedule").await?;
    assert_eq!(bad.len(), 1);
    assert_eq!(note(&bad[0]), "invalid schedule: 61 * * * * : minute field: end of range (61) above maximum (59): 61");
    let lost = events(&h, "UnknownTimeZone").await?;
    assert_eq!(lost.len(), 1);
    assert!(note(&lost[0]).starts_with("invalid timeZone: \"Mars/Olympus_Mons\""), "{}", note(&lost[0]));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn scheduled_jobs_run_their_pods_and_old_ones_go_with_them() -> Res {
    use k8s_openapi::api::core::v1::Pod;
    let h = harness(&["cronjob", "job", "garbagecollector"]);
    let crons = Api::<CronJob>::namespaced(h.client(), "default");
    let jobs = Api::<Job>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    let mut cj = cronjob("tick", "* * * * *", "Forbid");
    cj.spec.successful_jobs_history_limit = Some(1);
    crons.create(&cj, &PostParams::default()).await?;
    let mut ran = Vec::new();
    // Four minutes, then a last pass without the 1 s pause: the store stamps creationTimestamp from
    // the wall clock while the controllers run on the virtual one, so depending on the second the
    // test starts at, a schedule can fall in the last pause and leave a Job running at the end.
    for round in 0..5 {
        if round < 4 {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        h.run_until_quiescent().await?;
        // The kubelet runs the new Job's pod; it succeeds.
        for p in pods.list(&ListParams::default()).await?.items {
            let phase = p.status.as_ref().and_then(|s| s.phase.clone());
            if !matches!(phase.as_deref(), Some("Succeeded" | "Failed")) && p.metadata.deletion_timestamp.is_none() {
                let name = p.metadata.name.clone().unwrap_or_default();
                ran.push(name.clone());
                // Ready stays true, so that the simulated kubelet leaves the pod alone.
                let status = serde_json::json!({"status": {"phase": "Succeeded", "conditions": [{"type": "Ready", "status": "True"}]}});
                pods.patch_status(&name, &Patch::Merge(status), &PatchParams::default()).await?;
            }
        }
        if round < 4 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        h.run_until_quiescent().await?;
    }
    assert!(ran.len() >= 3, "a pod a minute: {ran:?}");
    let live = jobs_of(&jobs, "tick").await?;
    assert_eq!(live.len(), 1, "one successful job is kept");
    assert!(finished_condition(&live[0]).is_some_and(|c| c.type_ == "Complete"));
    let left: Vec<String> = pods.list(&ListParams::default()).await?.items.into_iter().filter_map(|p| p.metadata.name).collect();
    assert_eq!(left.len(), 1, "the deleted jobs' pods are gone: {left:?}");
    let status = crons.get("tick").await?.status.unwrap_or_default();
    assert_eq!(status.last_successful_time, live[0].status.as_ref().and_then(|s| s.completion_time.clone()));
    Ok(())
}
