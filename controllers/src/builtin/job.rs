//! The Job controller (NonIndexed): keeps up to `parallelism` pods running until `completions`
//! pods have succeeded (condition `Complete`), or more than `backoffLimit` have failed (condition
//! `Failed`, reason `BackoffLimitExceeded`, remaining pods deleted); reports `active`,
//! `succeeded`, `failed`, `startTime` and `completionTime`.

use super::{Shared, ignore_not_found};
use crate::clock;
use crate::runtime::{Action, Controller};
use bosun_core::meta::{controller_ref, is_deleting};
use bosun_core::watch::{INDEX_OWNER, Store};
use bosun_core::{Api, DeleteParams, Error, Object, ObjectKey, Patch, PatchParams, PostParams};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// The label naming a Job's pods' Job.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// The default `backoffLimit`.
pub const DEFAULT_BACKOFF_LIMIT: i32 = 6;

/// The Job controller's state.
pub struct JobCtx {
    shared: Shared,
    pods: Store<Pod>,
    /// Pods created and not yet seen in the cache, per Job (so a lagging cache never overshoots).
    pending: Mutex<HashMap<ObjectKey, HashSet<String>>>,
}

/// Builds the Job controller on `shared`'s informers.
pub fn controller(shared: &Shared) -> (Controller<Job>, Arc<JobCtx>) {
    let client = shared.client.clone();
    let pods = shared.informers.all::<Pod>();
    let c = shared.controller(Api::<Job>::all(client.clone()), "job").owns(Api::<Pod>::all(client));
    let ctx = Arc::new(JobCtx { shared: shared.clone(), pods: pods.store().clone(), pending: Mutex::default() });
    (c, ctx)
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}

fn finished_condition(job: &Job) -> Option<String> {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.type_.clone())
}

fn pod_for(job: &Job) -> Pod {
    let template = job.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let mut labels = tmeta.labels.unwrap_or_default();
    labels.insert(JOB_NAME_LABEL.into(), job.name().to_owned());
    labels.insert("job-name".into(), job.name().to_owned());
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", job.name())),
            namespace: job.meta().namespace.clone(),
            labels: Some(labels),
            annotations: tmeta.annotations,
            owner_references: Some(vec![controller_ref(job)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// Reconciles one Job.
pub async fn reconcile(job: Arc<Job>, ctx: Arc<JobCtx>) -> Result<Action, Error> {
    let ns = job.namespace().unwrap_or("default").to_owned();
    let key = ObjectKey::of(&*job);
    let pods_api = Api::<Pod>::namespaced(ctx.shared.client.clone(), &ns);
    let spec = job.spec.clone().unwrap_or_default();
    let completions = spec.completions.unwrap_or(1).max(0);
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let backoff_limit = spec.backoff_limit.unwrap_or(DEFAULT_BACKOFF_LIMIT).max(0);
    let owned: Vec<Arc<Pod>> =
        ctx.pods.by_index(INDEX_OWNER, job.uid()).into_iter().filter(|p| p.namespace() == Some(ns.as_str())).collect();
    let pending: usize = {
        let mut map = ctx.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let set = map.entry(key.clone()).or_default();
        set.retain(|name| ctx.pods.get(&ObjectKey::new(Some(&ns), name.clone())).is_none());
        set.len()
    };
    let succeeded = owned.iter().filter(|p| phase(p) == Some("Succeeded")).count();
    let failed = owned.iter().filter(|p| phase(p) == Some("Failed")).count();
    let active: Vec<&Arc<Pod>> =
        owned.iter().filter(|p| !is_deleting(p.meta()) && !matches!(phase(p), Some("Succeeded" | "Failed"))).collect();
    let to_i32 = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let mut finished = finished_condition(&job);
    let mut new_condition = None;
    if finished.is_none() && !is_deleting(job.meta()) {
        if to_i32(failed) > backoff_limit {
            new_condition = Some(("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"));
        } else if to_i32(succeeded) >= completions {
            new_condition = Some(("Complete", "CompletionsReached", "Reached expected number of succeeded pods"));
        }
        finished = new_condition.map(|c| c.0.to_owned());
    }
    let mut still_active = active.len();
    if finished.is_some() {
        for p in &active {
            ignore_not_found(pods_api.delete(p.name(), &DeleteParams::default()).await)?;
        }
        still_active = 0;
    } else if pending == 0 && !is_deleting(job.meta()) {
        let remaining = usize::try_from((completions - to_i32(succeeded)).max(0)).unwrap_or(0);
        let want = usize::try_from(parallelism).unwrap_or(0).min(remaining);
        if active.len() < want {
            let pod = pod_for(&job);
            for _ in active.len()..want {
                let created = pods_api.create(&pod, &PostParams::default()).await?;
                ctx.pending
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .entry(key.clone())
                    .or_default()
                    .insert(created.name().to_owned());
                still_active += 1;
            }
        } else if active.len() > want {
            for p in active.iter().skip(want) {
                ignore_not_found(pods_api.delete(p.name(), &DeleteParams::default()).await)?;
                still_active -= 1;
            }
        }
    }
    // Status.
    let status = job.status.clone().unwrap_or_default();
    let now = clock::now_time();
    let mut patch = serde_json::json!({
        "active": to_i32(still_active),
        "succeeded": to_i32(succeeded),
        "failed": to_i32(failed),
    });
    if status.start_time.is_none() {
        patch["startTime"] = serde_json::to_value(&now).unwrap_or_default();
    }
    if let Some((type_, reason, message)) = new_condition {
        let mut conditions = serde_json::to_value(status.conditions.clone().unwrap_or_default()).unwrap_or_default();
        if let Some(list) = conditions.as_array_mut() {
            list.push(serde_json::json!({
                "type": type_, "status": "True", "reason": reason, "message": message,
                "lastProbeTime": now, "lastTransitionTime": now,
            }));
        }
        patch["conditions"] = conditions;
        if type_ == "Complete" {
            patch["completionTime"] = serde_json::to_value(&now).unwrap_or_default();
        }
    }
    let changed = new_condition.is_some()
        || status.start_time.is_none()
        || (status.active, status.succeeded, status.failed) != (Some(to_i32(still_active)), Some(to_i32(succeeded)), Some(to_i32(failed)));
    if changed {
        let api = Api::<Job>::namespaced(ctx.shared.client.clone(), &ns);
        ignore_not_found(api.patch_status(job.name(), &Patch::Merge(serde_json::json!({"status": patch})), &PatchParams::default()).await)?;
    }
    Ok(Action::await_change())
}
