//! The garbage collector: deletes objects whose owners are all gone (Background), deletes the
//! dependents of owners in foreground deletion before releasing them (honouring
//! `blockOwnerDeletion`), and orphans the dependents of owners deleted with `Orphan`.

use super::Shared;
use crate::runtime::queue::{Outcome, QueueConfig, WorkQueue};
use bosun_core::meta::{has_finalizer, is_deleting};
use bosun_core::resource::builtin_for;
use bosun_core::watch::{Change, INDEX_OWNER, Informer};
use bosun_core::{ApiResource, DeleteParams, DynamicObject, Error, Object, ObjectKey, Patch, PatchParams, Target};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use std::sync::Arc;

/// The finalizer the API server sets for `propagationPolicy: Orphan`.
pub const ORPHAN_FINALIZER: &str = "orphan";
/// The finalizer the API server sets for `propagationPolicy: Foreground`.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// The kinds the collector watches by default: the ones whose objects carry owner references.
pub fn default_resources() -> Vec<ApiResource> {
    [
        ("v1", "Pod"),
        ("v1", "Service"),
        ("v1", "ConfigMap"),
        ("v1", "Secret"),
        ("v1", "Endpoints"),
        ("v1", "PersistentVolumeClaim"),
        ("v1", "ServiceAccount"),
        ("apps/v1", "ReplicaSet"),
        ("apps/v1", "Deployment"),
        ("apps/v1", "StatefulSet"),
        ("apps/v1", "DaemonSet"),
        ("apps/v1", "ControllerRevision"),
        ("batch/v1", "Job"),
        ("batch/v1", "CronJob"),
        ("discovery.k8s.io/v1", "EndpointSlice"),
    ]
    .iter()
    .filter_map(|(v, k)| builtin_for(v, k).cloned())
    .collect()
}

type Key = (usize, ObjectKey);

struct Gc {
    shared: Shared,
    resources: Vec<ApiResource>,
    informers: Vec<Informer<DynamicObject>>,
}

/// Runs the garbage collector over `resources` until dropped.
pub async fn run(shared: Shared, resources: Vec<ApiResource>, concurrency: usize) {
    let informers: Vec<Informer<DynamicObject>> = resources.iter().map(|r| shared.informers.dynamic(r.clone(), None)).collect();
    let metrics = shared.metrics.controller("garbagecollector");
    let queue = Arc::new(WorkQueue::<Key>::new(QueueConfig::default()));
    let probe = queue.clone();
    metrics.set_queue(move || probe.stats());
    for (r, i) in resources.iter().zip(&informers) {
        let i = i.clone();
        metrics.add_watch(r.group_resource(), move || i.state());
    }
    let gc = Arc::new(Gc { shared, resources, informers });
    let mut changes = futures::stream::select_all(gc.informers.iter().enumerate().map(|(idx, i)| i.subscribe().map(move |c| (idx, c))));
    futures::future::join_all(gc.informers.iter().map(Informer::wait_ready)).await;
    for idx in 0..gc.informers.len() {
        for obj in gc.informers[idx].store().list() {
            gc.enqueue_for(idx, &obj, false, &queue);
        }
    }
    let mut inflight = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            Some((key, outcome, took, failed)) = inflight.next(), if !inflight.is_empty() => {
                metrics.observe(took, failed);
                queue.done(&key, outcome);
            }
            Some((idx, change)) = changes.next() => match change {
                Change::Applied(obj) => gc.enqueue_for(idx, &obj, false, &queue),
                Change::Deleted(obj) => gc.enqueue_for(idx, &obj, true, &queue),
                Change::Resync => {
                    for (i, inf) in gc.informers.iter().enumerate() {
                        for obj in inf.store().list() {
                            gc.enqueue_for(i, &obj, false, &queue);
                        }
                    }
                }
            },
            key = queue.next(), if inflight.len() < concurrency => {
                let gc = gc.clone();
                inflight.push(async move {
                    let start = tokio::time::Instant::now();
                    let result = gc.process(&key).await;
                    let outcome = match &result {
                        Ok(()) => Outcome::Success(None),
                        Err(error) => {
                            tracing::warn!(%error, object.ref = %key.1, "garbage collection failed");
                            Outcome::Backoff
                        }
                    };
                    (key, outcome, start.elapsed(), result.is_err())
                });
            }
        }
    }
}

impl Gc {
    fn enqueue_for(&self, idx: usize, obj: &DynamicObject, deleted: bool, queue: &WorkQueue<Key>) {
        let meta = obj.meta();
        if !deleted && (meta.owner_references.as_ref().is_some_and(|r| !r.is_empty()) || is_deleting(meta)) {
            queue.add((idx, ObjectKey::of(obj)));
        }
        if deleted {
            // An owner in foreground deletion may have been waiting for this one.
            for r in meta.owner_references.iter().flatten() {
                if let Some(i) = self.resources.iter().position(|res| res.matches_type(&r.api_version, &r.kind)) {
                    let ns = if self.resources[i].namespaced { obj.namespace() } else { None };
                    queue.add((i, ObjectKey::new(ns, r.name.clone())));
                }
            }
        }
        if deleted || is_deleting(meta) {
            for (i, inf) in self.informers.iter().enumerate() {
                for dep in inf.store().by_index(INDEX_OWNER, obj.uid()) {
                    queue.add((i, ObjectKey::of(&*dep)));
                }
            }
        }
    }

    fn dependents(&self, uid: &str) -> Vec<(usize, Arc<DynamicObject>)> {
        let mut out = Vec::new();
        for (i, inf) in self.informers.iter().enumerate() {
            for dep in inf.store().by_index(INDEX_OWNER, uid) {
                out.push((i, dep));
            }
        }
        out
    }

    fn target<'a>(&self, resource: &'a ApiResource, ns: Option<&'a str>) -> Target<'a> {
        Target::new(resource, ns)
    }

    async fn process(&self, (idx, key): &Key) -> Result<(), Error> {
        let Some(obj) = self.informers[*idx].store().get(key) else { return Ok(()) };
        let resource = &self.resources[*idx];
        let meta = obj.meta();
        if is_deleting(meta) && has_finalizer(meta, ORPHAN_FINALIZER) {
            for (i, dep) in self.dependents(obj.uid()) {
                let refs: Vec<_> = dep.meta().owner_references.iter().flatten().filter(|r| r.uid != obj.uid()).cloned().collect();
                let patch = serde_json::json!({"metadata": {"ownerReferences": refs, "resourceVersion": dep.resource_version()}});
                let r = &self.resources[i];
                let res = self
                    .shared
                    .client
                    .patch(self.target(r, dep.namespace()), dep.name(), &Patch::Merge(patch), &PatchParams::default())
                    .await;
                super::ignore_not_found(res)?;
            }
            return self.remove_finalizer(resource, &obj, ORPHAN_FINALIZER).await;
        }
        if is_deleting(meta) && has_finalizer(meta, FOREGROUND_FINALIZER) {
            let mut blocking = 0;
            for (i, dep) in self.dependents(obj.uid()) {
                let blocks =
                    dep.meta().owner_references.iter().flatten().any(|r| r.uid == obj.uid() && r.block_owner_deletion == Some(true));
                if blocks {
                    blocking += 1;
                }
                if !is_deleting(dep.meta()) {
                    let r = &self.resources[i];
                    let res = self.shared.client.delete(self.target(r, dep.namespace()), dep.name(), &DeleteParams::foreground()).await;
                    super::ignore_not_found(res)?;
                }
            }
            if blocking == 0 {
                return self.remove_finalizer(resource, &obj, FOREGROUND_FINALIZER).await;
            }
            return Ok(());
        }
        let refs = meta.owner_references.clone().unwrap_or_default();
        if refs.is_empty() || is_deleting(meta) {
            return Ok(());
        }
        let mut solid = 0;
        let mut waiting = 0;
        let mut dangling = Vec::new();
        for r in &refs {
            match self.owner_state(r, obj.namespace()).await? {
                OwnerState::Present => solid += 1,
                OwnerState::Deleting => waiting += 1,
                OwnerState::Absent => dangling.push(r.uid.clone()),
            }
        }
        if solid > 0 {
            if !dangling.is_empty() {
                let keep: Vec<_> = refs.iter().filter(|r| !dangling.contains(&r.uid)).cloned().collect();
                let patch = serde_json::json!({"metadata": {"ownerReferences": keep, "resourceVersion": obj.resource_version()}});
                let res = self
                    .shared
                    .client
                    .patch(self.target(resource, obj.namespace()), obj.name(), &Patch::Merge(patch), &PatchParams::default())
                    .await;
                super::ignore_not_found(res)?;
            }
            return Ok(());
        }
        let params = if waiting > 0 { DeleteParams::foreground() } else { DeleteParams::background() };
        tracing::debug!(object.ref = %key, "deleting an object whose owners are gone");
        let precondition = bosun_core::Preconditions { uid: Some(obj.uid().to_owned()), resource_version: None };
        let params = DeleteParams { preconditions: Some(precondition), ..params };
        let res = self.shared.client.delete(self.target(resource, obj.namespace()), obj.name(), &params).await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn owner_state(
        &self,
        r: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
        ns: Option<&str>,
    ) -> Result<OwnerState, Error> {
        let resource = match self.resources.iter().position(|res| res.matches_type(&r.api_version, &r.kind)) {
            Some(i) => {
                let ns_key = if self.resources[i].namespaced { ns } else { None };
                if let Some(owner) = self.informers[i].store().get(&ObjectKey::new(ns_key, r.name.clone()))
                    && owner.uid() == r.uid
                {
                    return Ok(state_of(&owner));
                }
                self.resources[i].clone()
            }
            None => match builtin_for(&r.api_version, &r.kind) {
                Some(res) => res.clone(),
                // An owner kind we cannot look up (a CRD): never delete on a guess.
                None => return Ok(OwnerState::Present),
            },
        };
        // The cache may lag: confirm absence with a live read before deleting anything.
        let ns = if resource.namespaced { ns } else { None };
        match self.shared.client.get(Target::new(&resource, ns), &r.name).await {
            Ok(owner) if owner.uid() == r.uid => Ok(state_of(&owner)),
            Ok(_) => Ok(OwnerState::Absent),
            Err(e) if e.is_not_found() => Ok(OwnerState::Absent),
            Err(e) => Err(e),
        }
    }

    async fn remove_finalizer(&self, resource: &ApiResource, obj: &DynamicObject, finalizer: &str) -> Result<(), Error> {
        let list = obj.meta().finalizers.clone().unwrap_or_default();
        let Some(index) = list.iter().position(|f| f == finalizer) else { return Ok(()) };
        let patch = serde_json::json!([
            {"op": "test", "path": format!("/metadata/finalizers/{index}"), "value": finalizer},
            {"op": "remove", "path": format!("/metadata/finalizers/{index}")},
        ]);
        let res = self
            .shared
            .client
            .patch(self.target(resource, obj.namespace()), obj.name(), &Patch::Json(patch), &PatchParams::default())
            .await;
        super::ignore_not_found(res).map(drop)
    }
}

enum OwnerState {
    Present,
    Deleting,
    Absent,
}

fn state_of(owner: &DynamicObject) -> OwnerState {
    if is_deleting(owner.meta()) && has_finalizer(owner.meta(), FOREGROUND_FINALIZER) { OwnerState::Deleting } else { OwnerState::Present }
}
