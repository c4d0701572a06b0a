//! The CronJob controller: creates a Job from `jobTemplate` at each time of `schedule` (read in
//! `timeZone`, UTC when unset), named `<cronjob>-<scheduled minutes since the epoch>`, as the
//! Kubernetes v1.32 controller does: only the most recent missed time is started (more than 100
//! missed gives a `TooManyMissedTimes` warning), not later than `startingDeadlineSeconds`;
//! `concurrencyPolicy` Allow, Forbid (skip while one runs) or Replace (delete the running ones);
//! finished Jobs beyond `successfulJobsHistoryLimit` / `failedJobsHistoryLimit` are deleted;
//! `suspend` stops new runs. Status: `active`, `lastScheduleTime`, `lastSuccessfulTime`. The
//! controller requeues itself for the next scheduled time.

pub mod schedule;

pub use schedule::{ParseScheduleError, Schedule};

use super::job::finished_condition;
use super::{Shared, ignore_not_found};
use crate::clock;
use crate::runtime::{Action, Controller, EventData, events::object_reference};
use bosun_core::meta::{controller_of, controller_ref, is_deleting};
use bosun_core::watch::{INDEX_OWNER, Store};
use bosun_core::{Api, DeleteParams, Error, Object, PostParams};
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use std::sync::Arc;
use std::time::Duration;

/// The annotation on a CronJob's Job carrying its scheduled time (RFC 3339, in the time zone).
pub const SCHEDULED_TIMESTAMP_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// More missed start times than this gives a `TooManyMissedTimes` warning.
pub const MANY_MISSED: i64 = 100;
/// How far past a scheduled time the controller wakes up, so that the clock has surely reached it.
const NEXT_DELTA: Duration = Duration::from_millis(100);

/// Why a CronJob cannot be scheduled (reported as a Warning event; the controller waits for a
/// change of the CronJob).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CronJobError {
    /// `spec.schedule` does not parse.
    #[error("invalid schedule: {spec} : {source}")]
    InvalidSchedule {
        /// The schedule.
        spec: String,
        /// Why.
        #[source]
        source: ParseScheduleError,
    },
    /// `spec.timeZone` names no known time zone.
    #[error("invalid timeZone: {zone:?}: {message}")]
    UnknownTimeZone {
        /// The zone.
        zone: String,
        /// Why.
        message: String,
    },
}

impl CronJobError {
    fn reason(&self) -> &'static str {
        match self {
            Self::InvalidSchedule { .. } => "InvalidSchedule",
            Self::UnknownTimeZone { .. } => "UnknownTimeZone",
        }
    }
}

/// The parsed schedule and time zone of a CronJob.
pub fn schedule_of(cj: &CronJob) -> Result<(Schedule, TimeZone), CronJobError> {
    let schedule =
        Schedule::parse(&cj.spec.schedule).map_err(|source| CronJobError::InvalidSchedule { spec: cj.spec.schedule.clone(), source })?;
    let tz = match cj.spec.time_zone.as_deref() {
        None | Some("") => TimeZone::UTC,
        Some(zone) => TimeZone::get(zone).map_err(|e| CronJobError::UnknownTimeZone { zone: zone.to_owned(), message: e.to_string() })?,
    };
    Ok((schedule, tz))
}

/// The name of the Job a CronJob starts for `scheduled`.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

/// The most recent scheduled time not yet started (after `lastScheduleTime`, else the creation
/// time, and within `startingDeadlineSeconds` when `with_deadline`), and an estimate of how many
/// were missed; bounded work however long the controller was away.
pub fn most_recent_schedule(
    cj: &CronJob,
    now: Timestamp,
    schedule: &Schedule,
    tz: &TimeZone,
    with_deadline: bool,
) -> (Option<Timestamp>, i64) {
    let created = cj.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
    let mut earliest = cj.status.as_ref().and_then(|s| s.last_schedule_time.as_ref()).map_or(created, |t| t.0);
    if with_deadline && let Some(sds) = cj.spec.starting_deadline_seconds {
        let deadline = now - SignedDuration::from_secs(sds);
        earliest = earliest.max(deadline);
    }
    let Some(t1) = schedule.next_after(earliest, tz) else { return (None, 0) };
    if now < t1 {
        return (None, 0);
    }
    let Some(t2) = schedule.next_after(t1, tz) else { return (Some(t1), 1) };
    if now < t2 {
        return (Some(t1), 1);
    }
    let gap = t2.duration_since(t1).as_secs().max(1);
    let missed = now.duration_since(t1).as_secs() / gap + 1;
    // Start a little before the estimated last one; irregular schedules (weekdays only) may need
    // to look further back.
    let mut back = 2;
    loop {
        let start = (t1 + SignedDuration::from_secs((missed - back).max(0) * gap)).min(now);
        let mut recent = None;
        let mut t = schedule.next_after(start, tz);
        while let Some(at) = t.filter(|at| *at <= now) {
            recent = Some(at);
            t = schedule.next_after(at, tz);
        }
        if recent.is_some() || missed - back <= 0 {
            return (recent.or(Some(t1)), missed);
        }
        back *= 2;
    }
}

/// The CronJob controller's state.
pub struct CronJobCtx {
    shared: Shared,
    jobs: Store<Job>,
}

/// Builds the CronJob controller on `shared`'s informers.
pub fn controller(shared: &Shared) -> (Controller<CronJob>, Arc<CronJobCtx>) {
    let client = shared.client.clone();
    let jobs = shared.informers.all::<Job>();
    let c = shared.controller(Api::<CronJob>::all(client.clone()), "cronjob").owns(Api::<Job>::all(client));
    (c, Arc::new(CronJobCtx { shared: shared.clone(), jobs: jobs.store().clone() }))
}

fn rfc3339(t: Timestamp, tz: &TimeZone) -> String {
    let z = t.to_zoned(tz.clone());
    if z.offset().seconds() == 0 { z.strftime("%Y-%m-%dT%H:%M:%SZ").to_string() } else { z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string() }
}

fn rfc1123z(t: Timestamp) -> String {
    t.to_zoned(TimeZone::UTC).strftime("%a, %d %b %Y %H:%M:%S %z").to_string()
}

/// The Job a CronJob starts for `scheduled`.
fn job_for(cj: &CronJob, scheduled: Timestamp, tz: &TimeZone) -> Job {
    let template = cj.spec.job_template.clone();
    let tmeta = template.metadata.unwrap_or_default();
    let mut annotations = tmeta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP_ANNOTATION.into(), rfc3339(scheduled, tz));
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(cj.name(), scheduled)),
            namespace: cj.metadata.namespace.clone(),
            labels: tmeta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(cj)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

fn start_time(j: &Job) -> Option<Timestamp> {
    j.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0)
}

/// Reconciles one CronJob.
pub async fn reconcile(cj: Arc<CronJob>, ctx: Arc<CronJobCtx>) -> Result<Action, Error> {
    if is_deleting(cj.meta()) {
        return Ok(Action::await_change());
    }
    let ns = cj.namespace().unwrap_or("default").to_owned();
    let jobs_api = Api::<Job>::namespaced(ctx.shared.client.clone(), &ns);
    let reference = object_reference(&*cj);
    let now = clock::now();
    let mut events: Vec<EventData> = Vec::new();
    let owned: Vec<Arc<Job>> =
        ctx.jobs.by_index(INDEX_OWNER, cj.uid()).into_iter().filter(|j| j.namespace() == Some(ns.as_str())).collect();
    let in_active = |active: &[ObjectReference], uid: &str| active.iter().any(|r| r.uid.as_deref() == Some(uid));
    // A running Job missing from the active list is most likely one this controller just made,
    // with the status update not yet in the cache: read the CronJob afresh before judging.
    let listed = cj.status.as_ref().and_then(|s| s.active.clone()).unwrap_or_default();
    let cj = if owned.iter().any(|j| finished_condition(j).is_none() && !is_deleting(j.meta()) && !in_active(&listed, j.uid())) {
        let api = Api::<CronJob>::namespaced(ctx.shared.client.clone(), &ns);
        match ignore_not_found(api.get(cj.name()).await)? {
            Some(fresh) if fresh.uid() == cj.uid() => Arc::new(fresh),
            _ => return Ok(Action::await_change()),
        }
    } else {
        cj
    };
    let mut status = cj.status.clone().unwrap_or_default();
    let mut active: Vec<ObjectReference> = status.active.clone().unwrap_or_default();

    // 1. The active list follows the Jobs: finished ones leave it, vanished ones too.
    for j in &owned {
        let finished = finished_condition(j).map(|c| c.type_.clone());
        let listed = in_active(&active, j.uid());
        match finished {
            None if !listed && !is_deleting(j.meta()) => events.push(EventData::warning(
                "UnexpectedJob",
                "Adopt",
                format!("Saw a job that the controller did not create or forgot: {}", j.name()),
            )),
            Some(ref condition) if listed => {
                active.retain(|r| r.uid.as_deref() != Some(j.uid()));
                events.push(EventData::normal(
                    "SawCompletedJob",
                    "Observe",
                    format!("Saw completed job: {}, condition: {condition}", j.name()),
                ));
            }
            _ => {}
        }
        if finished.as_deref() == Some("Complete")
            && let Some(done) = j.status.as_ref().and_then(|s| s.completion_time.clone())
            && status.last_successful_time.as_ref().is_none_or(|t| t.0 < done.0)
        {
            status.last_successful_time = Some(done);
        }
    }
    let missing: Vec<ObjectReference> =
        active.iter().filter(|r| !owned.iter().any(|j| Some(j.uid()) == r.uid.as_deref())).cloned().collect();
    for r in missing {
        // The cache may lag: ask the API server before forgetting an active Job.
        let name = r.name.clone().unwrap_or_default();
        let live = ignore_not_found(jobs_api.get(&name).await)?;
        if live.is_none_or(|j| r.uid.as_deref() != Some(j.uid())) {
            active.retain(|a| a.uid != r.uid);
            events.push(EventData::normal("MissingJob", "Observe", format!("Active job went missing: {name}")));
        }
    }

    // 2. History: the oldest finished Jobs beyond the limits go.
    let mut deleted: Vec<String> = Vec::new();
    for (kind, limit) in [("Complete", cj.spec.successful_jobs_history_limit), ("Failed", cj.spec.failed_jobs_history_limit)] {
        let Some(limit) = limit else { continue };
        let mut done: Vec<&Arc<Job>> =
            owned.iter().filter(|j| !is_deleting(j.meta()) && finished_condition(j).is_some_and(|c| c.type_ == kind)).collect();
        let keep = usize::try_from(limit.max(0)).unwrap_or(0);
        if done.len() <= keep {
            continue;
        }
        done.sort_by(|a, b| match (start_time(a), start_time(b)) {
            (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.name().cmp(b.name())),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.name().cmp(b.name()),
        });
        for j in &done[..done.len() - keep] {
            ignore_not_found(jobs_api.delete(j.name(), &DeleteParams::background()).await)?;
            deleted.push(j.uid().to_owned());
            events.push(EventData::normal("SuccessfulDelete", "Delete", format!("Deleted job {}", j.name())));
        }
    }

    // 3. Scheduling.
    let mut requeue = None;
    match schedule_of(&cj) {
        Err(error) => events.push(EventData::warning(error.reason(), "Schedule", error.to_string())),
        Ok(_) if cj.spec.suspend == Some(true) => {}
        Ok((schedule, tz)) => {
            requeue =
                schedule.next_after(now, &tz).map(|next| Duration::try_from(next.duration_since(now)).unwrap_or_default() + NEXT_DELTA);
            let mut view = (*cj).clone();
            view.status = Some(status.clone());
            let (scheduled, missed) = most_recent_schedule(&view, now, &schedule, &tz, true);
            if missed > MANY_MISSED {
                events.push(EventData::warning(
                    "TooManyMissedTimes",
                    "Schedule",
                    format!("too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"),
                ));
            }
            if let Some(scheduled) = scheduled {
                let name = job_name(cj.name(), scheduled);
                let too_late = cj.spec.starting_deadline_seconds.is_some_and(|s| scheduled + SignedDuration::from_secs(s) < now);
                let done_already = active.iter().any(|r| r.name.as_deref() == Some(name.as_str()))
                    || status.last_schedule_time.as_ref().is_some_and(|t| t.0 == scheduled);
                let running = active.len()
                    + owned
                        .iter()
                        .filter(|j| finished_condition(j).is_none() && !in_active(&active, j.uid()) && !is_deleting(j.meta()))
                        .count();
                let policy = cj.spec.concurrency_policy.as_deref().unwrap_or("Allow");
                if too_late {
                    events.push(EventData::warning(
                        "MissSchedule",
                        "Schedule",
                        format!("Missed scheduled time to start a job: {}", rfc1123z(scheduled)),
                    ));
                } else if done_already {
                } else if policy == "Forbid" && running > 0 {
                    events.push(EventData::normal(
                        "JobAlreadyActive",
                        "Schedule",
                        "Not starting job because prior execution is running and concurrency policy is Forbid",
                    ));
                } else {
                    if policy == "Replace" {
                        for r in std::mem::take(&mut active) {
                            let old = r.name.clone().unwrap_or_default();
                            ignore_not_found(jobs_api.delete(&old, &DeleteParams::background()).await)?;
                            events.push(EventData::normal("SuccessfulDelete", "Delete", format!("Deleted job {old}")));
                        }
                    }
                    let job = job_for(&cj, scheduled, &tz);
                    let created = match jobs_api.create(&job, &PostParams::default()).await {
                        Ok(j) => {
                            events.push(EventData::normal("SuccessfulCreate", "Create", format!("Created job {}", j.name())));
                            Some(j)
                        }
                        Err(Error::AlreadyExists(_)) => {
                            // Created before (the status update was lost): adopt it if it is ours.
                            let existing = jobs_api.get(&name).await?;
                            controller_of(existing.meta()).is_some_and(|r| r.uid == cj.uid()).then_some(existing)
                        }
                        Err(e) => {
                            events.push(EventData::warning("FailedCreate", "Create", format!("Error creating job: {e}")));
                            publish(&ctx, &reference, &events).await;
                            return Err(e);
                        }
                    };
                    if let Some(j) = created {
                        if !in_active(&active, j.uid()) {
                            active.push(object_reference(&j));
                        }
                        status.last_schedule_time = Some(Time(scheduled));
                    }
                }
            }
        }
    }

    // 4. Status, then events.
    active.retain(|r| !deleted.iter().any(|d| r.uid.as_deref() == Some(d.as_str())));
    status.active = (!active.is_empty()).then_some(active);
    if Some(&status) != cj.status.as_ref() && !(cj.status.is_none() && status == CronJobStatus::default()) {
        let api = Api::<CronJob>::namespaced(ctx.shared.client.clone(), &ns);
        let mut updated = (*cj).clone();
        updated.status = Some(status);
        ignore_not_found(api.replace_status(&updated, &PostParams::default()).await)?;
    }
    publish(&ctx, &reference, &events).await;
    Ok(match requeue {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

async fn publish(ctx: &CronJobCtx, reference: &ObjectReference, events: &[EventData]) {
    for event in events {
        if let Err(error) = ctx.shared.recorder.publish(reference, event).await {
            tracing::debug!(%error, "cannot publish a cronjob event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::civil::date;

    fn utc(y: i16, mo: i8, d: i8, h: i8, mi: i8) -> Timestamp {
        date(y, mo, d).at(h, mi, 0, 0).to_zoned(TimeZone::UTC).map(|z| z.timestamp()).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn cronjob(schedule: &str, created: Timestamp, last: Option<Timestamp>, deadline: Option<i64>) -> CronJob {
        let mut cj = CronJob::default();
        cj.metadata.creation_timestamp = Some(Time(created));
        cj.spec.schedule = schedule.into();
        cj.spec.starting_deadline_seconds = deadline;
        cj.status = Some(CronJobStatus { last_schedule_time: last.map(Time), ..CronJobStatus::default() });
        cj
    }

    fn recent(cj: &CronJob, now: Timestamp) -> (Option<Timestamp>, i64) {
        let schedule = Schedule::parse(&cj.spec.schedule).ok();
        schedule.map(|s| most_recent_schedule(cj, now, &s, &TimeZone::UTC, true)).unwrap_or_default()
    }

    #[test]
    fn nothing_is_due_before_the_first_time() {
        let cj = cronjob("0 * * * *", utc(2025, 1, 1, 10, 5), None, None);
        assert_eq!(recent(&cj, utc(2025, 1, 1, 10, 59)), (None, 0));
        assert_eq!(recent(&cj, utc(2025, 1, 1, 11, 0)), (Some(utc(2025, 1, 1, 11, 0)), 1));
    }

    #[test]
    fn after_downtime_only_the_latest_missed_time_is_due() {
        let cj = cronjob("* * * * *", utc(2025, 1, 1, 0, 0), Some(utc(2025, 1, 1, 0, 0)), None);
        let (t, missed) = recent(&cj, utc(2025, 1, 1, 3, 0) + SignedDuration::from_secs(30));
        assert_eq!(t, Some(utc(2025, 1, 1, 3, 0)));
        assert_eq!(missed, 180);
        // Irregular gaps (weekdays only) still find the latest.
        let cj = cronjob("0 9 * * 1-5", utc(2025, 5, 1, 0, 0), None, None);
        assert_eq!(recent(&cj, utc(2025, 5, 25, 12, 0)).0, Some(utc(2025, 5, 23, 9, 0)));
    }

    #[test]
    fn the_starting_deadline_bounds_how_far_back_to_look() {
        let cj = cronjob("0 * * * *", utc(2025, 1, 1, 0, 0), None, Some(600));
        assert_eq!(recent(&cj, utc(2025, 1, 1, 5, 30)).0, None, "05:00 is older than ten minutes");
        assert_eq!(recent(&cj, utc(2025, 1, 1, 5, 5)).0, Some(utc(2025, 1, 1, 5, 0)));
    }

    #[test]
    fn job_names_count_minutes_since_the_epoch() {
        assert_eq!(job_name("hello", utc(2025, 1, 1, 0, 0)), "hello-28928160");
        let ny = TimeZone::get("America/New_York").unwrap_or(TimeZone::UTC);
        assert_eq!(rfc3339(utc(2025, 1, 1, 14, 30), &ny), "2025-01-01T09:30:00-05:00");
        assert_eq!(rfc3339(utc(2025, 1, 1, 14, 30), &TimeZone::UTC), "2025-01-01T14:30:00Z");
        assert_eq!(rfc1123z(utc(2025, 1, 1, 14, 30)), "Wed, 01 Jan 2025 14:30:00 +0000");
    }
}
