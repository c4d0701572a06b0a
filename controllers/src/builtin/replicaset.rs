//! The ReplicaSet controller: creates and deletes pods to match `replicas`, adopts matching orphans,
//! releases pods that stop matching, and reports status. Expectations keep it from acting again
//! before its own writes show up in the pod cache, so it never overshoots.

use super::{Shared, pod_is_active, pod_is_available, pod_is_ready, selector_of};
use crate::clock;
use crate::runtime::{Action, Controller};
use bosun_core::meta::{controller_of, controller_ref, is_deleting};
use bosun_core::watch::Store;
use bosun_core::{Api, DeleteParams, Error, Object, ObjectKey, Patch, PatchParams, PostParams};
use futures::future::join_all;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Pod creations or deletions per sync at most (as kube-controller-manager's `burstReplicas`).
pub const BURST_REPLICAS: usize = 500;
/// Unmet expectations are dropped after this long (a lost watch event must not wedge a set).
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Default)]
struct Expectations {
    creates: HashSet<String>,
    deletes: HashSet<String>,
    at: Option<Instant>,
}

/// The ReplicaSet controller's state.
pub struct ReplicaSetCtx {
    shared: Shared,
    pods: Store<Pod>,
    expectations: Mutex<HashMap<ObjectKey, Expectations>>,
}

impl ReplicaSetCtx {
    fn satisfied(&self, key: &ObjectKey, ns: &str) -> bool {
        let mut map = self.expectations.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(exp) = map.get_mut(key) else { return true };
        if exp.at.is_some_and(|t| t.elapsed() > EXPECTATIONS_TIMEOUT) {
            map.remove(key);
            return true;
        }
        exp.creates.retain(|name| self.pods.get(&ObjectKey::new(Some(ns), name.clone())).is_none());
        exp.deletes.retain(|name| self.pods.get(&ObjectKey::new(Some(ns), name.clone())).is_some_and(|p| !is_deleting(p.meta())));
        let done = exp.creates.is_empty() && exp.deletes.is_empty();
        if done {
            map.remove(key);
        }
        done
    }

    fn expect(&self, key: ObjectKey, creates: Vec<String>, deletes: Vec<String>) {
        if creates.is_empty() && deletes.is_empty() {
            return;
        }
        let mut map = self.expectations.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let exp = map.entry(key).or_default();
        exp.creates.extend(creates);
        exp.deletes.extend(deletes);
        exp.at = Some(Instant::now());
    }
}

/// Builds the ReplicaSet controller on `shared`'s informers.
pub fn controller(shared: &Shared) -> (Controller<ReplicaSet>, Arc<ReplicaSetCtx>) {
    let client = shared.client.clone();
    let pods = shared.informers.all::<Pod>();
    let c = shared.controller(Api::<ReplicaSet>::all(client.clone()), "replicaset").owns(Api::<Pod>::all(client));
    let ctx = Arc::new(ReplicaSetCtx { shared: shared.clone(), pods: pods.store().clone(), expectations: Mutex::default() });
    (c, ctx)
}

/// Reconciles one ReplicaSet.
pub async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<ReplicaSetCtx>) -> Result<Action, Error> {
    let ns = rs.namespace().unwrap_or("default").to_owned();
    let key = ObjectKey::of(&*rs);
    let spec = rs.spec.clone();
    let selector = selector_of(&spec.selector)?;
    let pods_api = Api::<Pod>::namespaced(ctx.shared.client.clone(), &ns);
    let rs_uid = rs.uid().to_owned();
    let mut owned: Vec<Arc<Pod>> = Vec::new();
    for pod in super::claim_candidates(&ctx.pods, &ns, rs.uid(), &selector) {
        let matches = selector.matches_opt(pod.meta().labels.as_ref());
        match controller_of(pod.meta()) {
            Some(r) if r.uid == rs_uid => {
                if matches {
                    owned.push(pod);
                } else if !is_deleting(pod.meta()) {
                    release(&pods_api, &pod, &rs_uid).await?;
                }
            }
            Some(_) => {}
            None if matches && !is_deleting(rs.meta()) && !is_deleting(pod.meta()) && !selector.is_empty() => {
                if let Some(adopted) = adopt(&pods_api, &pod, &rs).await? {
                    owned.push(Arc::new(adopted));
                }
            }
            None => {}
        }
    }
    let active: Vec<&Arc<Pod>> = owned.iter().filter(|p| pod_is_active(p)).collect();
    let want = usize::try_from(spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
    let mut manage_error = None;
    if ctx.satisfied(&key, &ns) && !is_deleting(rs.meta()) {
        if active.len() < want {
            let (created, err) = create_pods(&pods_api, &rs, want - active.len()).await;
            ctx.expect(key.clone(), created, Vec::new());
            manage_error = err;
        } else if active.len() > want {
            let victims = choose_victims(&active, active.len() - want);
            let (deleted, err) = delete_pods(&pods_api, &victims).await;
            ctx.expect(key.clone(), Vec::new(), deleted);
            manage_error = err;
        }
    }
    let requeue = update_status(&ctx, &rs, &active, &spec, manage_error.as_ref()).await?;
    if let Some(e) = manage_error {
        return Err(e);
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

async fn release(api: &Api<Pod>, pod: &Pod, owner_uid: &str) -> Result<(), Error> {
    let refs: Vec<_> = pod.meta().owner_references.iter().flatten().filter(|r| r.uid != owner_uid).cloned().collect();
    let patch = serde_json::json!({"metadata": {"ownerReferences": refs, "resourceVersion": pod.resource_version()}});
    match api.patch(pod.name(), &Patch::Merge(patch), &PatchParams::default()).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

async fn adopt(api: &Api<Pod>, pod: &Pod, rs: &ReplicaSet) -> Result<Option<Pod>, Error> {
    let mut refs: Vec<_> = pod.meta().owner_references.clone().unwrap_or_default();
    refs.push(controller_ref(rs));
    let patch = serde_json::json!({"metadata": {"ownerReferences": refs, "resourceVersion": pod.resource_version()}});
    match api.patch(pod.name(), &Patch::Merge(patch), &PatchParams::default()).await {
        Ok(p) => Ok(Some(p)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// A pod for `rs` from its template.
pub fn pod_for(rs: &ReplicaSet) -> Pod {
    let template = rs.spec.template.clone().unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", rs.name())),
            namespace: rs.meta().namespace.clone(),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![controller_ref(rs)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// Creates up to `count` pods (capped by [`BURST_REPLICAS`]) in doubling batches (1, 2, 4...), so
/// that a systematic failure (quota, a terminating namespace) costs one request, not hundreds.
async fn create_pods(api: &Api<Pod>, rs: &ReplicaSet, count: usize) -> (Vec<String>, Option<Error>) {
    let mut remaining = count.min(BURST_REPLICAS);
    let mut batch = 1;
    let mut created = Vec::new();
    let pod = pod_for(rs);
    while remaining > 0 {
        let n = batch.min(remaining);
        let params = PostParams::default();
        let results = join_all((0..n).map(|_| api.create(&pod, &params))).await;
        let mut error = None;
        for r in results {
            match r {
                Ok(p) => created.push(p.name().to_owned()),
                Err(e) => error = Some(e),
            }
        }
        if let Some(e) = error {
            return (created, Some(e));
        }
        remaining -= n;
        batch *= 2;
    }
    (created, None)
}

async fn delete_pods(api: &Api<Pod>, victims: &[&Arc<Pod>]) -> (Vec<String>, Option<Error>) {
    let results =
        join_all(victims.iter().map(|p| async move { (p.name().to_owned(), api.delete(p.name(), &DeleteParams::default()).await) })).await;
    let mut deleted = Vec::new();
    let mut error = None;
    for (name, r) in results {
        match r {
            Ok(_) => deleted.push(name),
            Err(e) if e.is_not_found() => {}
            Err(e) => error = Some(e),
        }
    }
    (deleted, error)
}

/// Picks `n` pods to delete: unscheduled before scheduled, pending before running, not ready
/// before ready, newest first.
pub fn choose_victims<'a>(pods: &[&'a Arc<Pod>], n: usize) -> Vec<&'a Arc<Pod>> {
    let mut ranked: Vec<&Arc<Pod>> = pods.to_vec();
    ranked.sort_by_key(|p| {
        let assigned = p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
        let phase = match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Pending") | None => 0,
            Some("Unknown") => 1,
            _ => 2,
        };
        let created = p.meta().creation_timestamp.as_ref().map(|t| t.0.as_second()).unwrap_or(i64::MAX);
        (assigned, phase, pod_is_ready(p), std::cmp::Reverse(created), std::cmp::Reverse(p.name().to_owned()))
    });
    ranked.truncate(n);
    ranked
}

async fn update_status(
    ctx: &ReplicaSetCtx,
    rs: &ReplicaSet,
    active: &[&Arc<Pod>],
    spec: &k8s_openapi::api::apps::v1::ReplicaSetSpec,
    failure: Option<&Error>,
) -> Result<Option<Duration>, Error> {
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let template_labels = spec.template.as_ref().and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.clone()).unwrap_or_default();
    let mut ready = 0;
    let mut available = 0;
    let mut fully_labeled = 0;
    let mut soonest: Option<Duration> = None;
    for p in active {
        let labels = p.meta().labels.clone().unwrap_or_default();
        if template_labels.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            fully_labeled += 1;
        }
        if pod_is_ready(p) {
            ready += 1;
            match pod_is_available(p, min_ready) {
                Ok(()) => available += 1,
                Err(wait) => soonest = Some(soonest.map_or(wait, |s| s.min(wait))),
            }
        }
    }
    let replicas = active.len() as i32;
    let status = rs.status.clone().unwrap_or_default();
    let generation = rs.meta().generation.unwrap_or(0);
    let current = (
        status.replicas,
        status.ready_replicas.unwrap_or(0),
        status.available_replicas.unwrap_or(0),
        status.fully_labeled_replicas.unwrap_or(0),
        status.observed_generation.unwrap_or(0),
    );
    // ReplicaFailure reports a failed create or delete (quota, a terminating namespace...); it
    // clears once a sync manages the pods without error.
    let mut conditions = status.conditions.clone().unwrap_or_default();
    let had_failure = conditions.iter().any(|c| c.type_.as_deref() == Some("ReplicaFailure"));
    match failure {
        Some(e) => {
            let reason = if active.len() < usize::try_from(spec.replicas.unwrap_or(1).max(0)).unwrap_or(0) {
                "FailedCreate"
            } else {
                "FailedDelete"
            };
            let cond = ReplicaSetCondition {
                type_: Some("ReplicaFailure".into()),
                status: Some("True".into()),
                reason: Some(reason.into()),
                message: Some(e.to_string()),
                last_transition_time: Some(clock::now_time()),
            };
            match conditions.iter_mut().find(|c| c.type_.as_deref() == Some("ReplicaFailure")) {
                Some(old) if old.reason == cond.reason && old.message == cond.message => {}
                Some(old) => *old = cond,
                None => conditions.push(cond),
            }
        }
        None => conditions.retain(|c| c.type_.as_deref() != Some("ReplicaFailure")),
    }
    let conditions_changed = status.conditions.clone().unwrap_or_default() != conditions || (had_failure && failure.is_none());
    if current != (replicas, ready, available, fully_labeled, generation) || conditions_changed {
        let patch = serde_json::json!({"status": {
            "replicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": available,
            "fullyLabeledReplicas": fully_labeled,
            "observedGeneration": generation,
            "conditions": conditions,
        }});
        let api = Api::<ReplicaSet>::namespaced(ctx.shared.client.clone(), rs.namespace().unwrap_or("default"));
        match api.patch_status(rs.name(), &Patch::Merge(patch), &PatchParams::default()).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(soonest)
}
