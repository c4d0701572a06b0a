//! The StatefulSet controller: pods with stable ordinal names (`web-0`, `web-1`...), hostnames
//! under the governing Service and one PersistentVolumeClaim per volume claim template and
//! ordinal; created in order, each Running and Ready before the next, and removed in reverse
//! (OrderedReady), or all at once (Parallel); template changes recorded as ControllerRevisions and
//! rolled out from the highest ordinal down to `partition` within `maxUnavailable`
//! (RollingUpdate) or left for the user to delete pods (OnDelete).

pub mod history;
pub mod identity;

use super::deployment::resolve;
use super::{Shared, ignore_not_found, pod_is_available, pod_is_ready, selector_of};
use crate::runtime::events::object_reference;
use crate::runtime::{Action, Controller, EventData};
use bosun_core::meta::{controller_of, controller_ref, is_deleting};
use bosun_core::watch::{INDEX_NAMESPACE, Store};
use bosun_core::{Api, DeleteParams, Error, LabelSelector, Object, ObjectKey, Patch, PatchParams, PostParams};
use history::Revisions;
use identity::{POD_INDEX_LABEL, POD_NAME_LABEL};
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodTemplateSpec};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

pub use history::REVISION_HASH_LABEL;
pub use identity::REVISION_LABEL;

/// Unmet expectations are dropped after this long (a lost watch event must not wedge a set).
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(60);

/// Status writes per sync before a run of 409s fails it.
const STATUS_ATTEMPTS: u32 = 3;

/// Pod writes of one set that its pod cache has not shown yet.
#[derive(Debug, Default)]
struct Expectations {
    /// Pod name -> UID of the pod we created.
    creates: HashMap<String, String>,
    /// Pod name -> UID of the pod we deleted.
    deletes: HashMap<String, String>,
    at: Option<Instant>,
}

/// The StatefulSet controller's state.
pub struct StatefulSetCtx {
    shared: Shared,
    pods: Store<Pod>,
    claims: Store<PersistentVolumeClaim>,
    revisions: Store<ControllerRevision>,
    expectations: Mutex<HashMap<ObjectKey, Expectations>>,
}

impl StatefulSetCtx {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Expectations>> {
        self.expectations.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Ok` when the cache shows every pod write of the set; else how long until they expire.
    fn satisfied(&self, key: &ObjectKey) -> Result<(), Duration> {
        let mut map = self.lock();
        let Some(exp) = map.get_mut(key) else { return Ok(()) };
        let age = exp.at.map_or(Duration::ZERO, |t| t.elapsed());
        if age > EXPECTATIONS_TIMEOUT {
            map.remove(key);
            return Ok(());
        }
        let ns = key.namespace.as_deref();
        let cached = |name: &String| self.pods.get(&ObjectKey::new(ns, name.clone()));
        exp.creates.retain(|name, uid| cached(name).is_none_or(|p| p.uid() != uid));
        exp.deletes.retain(|name, uid| cached(name).is_some_and(|p| p.uid() == uid && !is_deleting(p.meta())));
        if exp.creates.is_empty() && exp.deletes.is_empty() {
            map.remove(key);
            return Ok(());
        }
        Err(EXPECTATIONS_TIMEOUT.saturating_sub(age).max(Duration::from_millis(1)))
    }

    fn expect_create(&self, key: &ObjectKey, pod: &Pod) {
        let mut map = self.lock();
        let exp = map.entry(key.clone()).or_default();
        exp.creates.insert(pod.name().to_owned(), pod.uid().to_owned());
        exp.at = Some(Instant::now());
    }

    fn expect_delete(&self, key: &ObjectKey, pod: &Pod) {
        let mut map = self.lock();
        let exp = map.entry(key.clone()).or_default();
        exp.deletes.insert(pod.name().to_owned(), pod.uid().to_owned());
        exp.at = Some(Instant::now());
    }

    async fn event(&self, set: &StatefulSet, data: EventData) {
        if let Err(error) = self.shared.recorder.publish(&object_reference(set), &data).await {
            tracing::debug!(%error, "event not recorded");
        }
    }
}

/// The sets in the claim's namespace whose selector matches its labels (claims carry them).
fn sets_for_claim(sets: &Store<StatefulSet>, claim: &PersistentVolumeClaim) -> Vec<ObjectKey> {
    let Some(ns) = claim.namespace() else { return Vec::new() };
    sets.by_index(INDEX_NAMESPACE, ns)
        .iter()
        .filter(|s| {
            LabelSelector::from_api(&s.spec.selector).is_ok_and(|sel| !sel.is_empty() && sel.matches_opt(claim.meta().labels.as_ref()))
        })
        .map(|s| ObjectKey::of(&**s))
        .collect()
}

/// Builds the StatefulSet controller on `shared`'s informers.
pub fn controller(shared: &Shared) -> (Controller<StatefulSet>, Arc<StatefulSetCtx>) {
    let client = shared.client.clone();
    let pods = shared.informers.all::<Pod>();
    let claims = shared.informers.all::<PersistentVolumeClaim>();
    let revisions = shared.informers.all::<ControllerRevision>();
    let sets = shared.informers.all::<StatefulSet>().store().clone();
    let c = shared
        .controller(Api::<StatefulSet>::all(client.clone()), "statefulset")
        .owns(Api::<Pod>::all(client.clone()))
        .owns(Api::<ControllerRevision>::all(client.clone()))
        .watches(Api::<PersistentVolumeClaim>::all(client), move |claim: &PersistentVolumeClaim| sets_for_claim(&sets, claim));
    let ctx = Arc::new(StatefulSetCtx {
        shared: shared.clone(),
        pods: pods.store().clone(),
        claims: claims.store().clone(),
        revisions: revisions.store().clone(),
        expectations: Mutex::default(),
    });
    (c, ctx)
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// Running with the `Ready` condition.
pub fn running_and_ready(pod: &Pod) -> bool {
    phase(pod) == Some("Running") && pod_is_ready(pod)
}

/// Running, ready for `minReadySeconds`, and not terminating.
fn healthy(pod: &Pod, min_ready: i32) -> bool {
    running_and_ready(pod) && !is_deleting(pod.meta()) && pod_is_available(pod, min_ready).is_ok()
}

/// Reconciles one StatefulSet.
pub async fn reconcile(set: Arc<StatefulSet>, ctx: Arc<StatefulSetCtx>) -> Result<Action, Error> {
    if is_deleting(set.meta()) {
        // Its pods, revisions and (per the retention policy) claims go with it through the GC.
        return Ok(Action::await_change());
    }
    let ns = set.namespace().unwrap_or("default").to_owned();
    let key = ObjectKey::of(&*set);
    let selector = selector_of(&set.spec.selector)?;
    let revisions_api = Api::<ControllerRevision>::namespaced(ctx.shared.client.clone(), &ns);
    let owned_revisions = claim_revisions(&ctx, &set, &selector, &revisions_api).await?;
    let revs = history::ensure(&revisions_api, &set, owned_revisions.clone()).await?;
    let pods = claim_pods(&ctx, &set, &selector, &ns).await?;

    let mut requeue = None;
    let mut failure = None;
    match ctx.satisfied(&key) {
        Ok(()) => match manage(&ctx, &set, &key, &revs, &pods).await {
            Ok(wait) => requeue = wait,
            Err(e) => failure = Some(e),
        },
        Err(wait) => requeue = Some(wait),
    }

    let mut live: HashSet<&str> = pods.iter().map(|p| identity::revision_of(p)).collect();
    live.insert(revs.current.name());
    live.insert(revs.update.name());
    let mut all_revisions = owned_revisions;
    all_revisions.retain(|r| r.uid() != revs.update.uid());
    history::truncate(&revisions_api, &set, &all_revisions, &live).await?;

    update_status(&ctx, &set, &revs, &pods).await?;
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// The set's pods: those it controls that still match and carry one of its ordinal names, plus
/// matching orphans with such names, which it adopts; pods that stopped matching are released.
async fn claim_pods(ctx: &StatefulSetCtx, set: &Arc<StatefulSet>, selector: &LabelSelector, ns: &str) -> Result<Vec<Arc<Pod>>, Error> {
    let api = Api::<Pod>::namespaced(ctx.shared.client.clone(), ns);
    let mut owned = Vec::new();
    for pod in super::claim_candidates(&ctx.pods, ns, set.uid(), selector) {
        let member = identity::ordinal_of(set.name(), pod.name()).is_some();
        let matches = selector.matches_opt(pod.meta().labels.as_ref());
        match controller_of(pod.meta()) {
            Some(r) if r.uid == set.uid() => {
                if matches && member {
                    owned.push(pod);
                } else if !is_deleting(pod.meta()) {
                    let refs: Vec<_> = pod.meta().owner_references.iter().flatten().filter(|r| r.uid != set.uid()).cloned().collect();
                    let patch = serde_json::json!({"metadata": {"ownerReferences": refs, "resourceVersion": pod.resource_version()}});
                    ignore_not_found(api.patch(pod.name(), &Patch::Merge(patch), &PatchParams::default()).await)?;
                }
            }
            Some(_) => {}
            None if matches && member && !selector.is_empty() && !is_deleting(pod.meta()) => {
                let mut refs = pod.meta().owner_references.clone().unwrap_or_default();
                refs.push(controller_ref(&**set));
                let patch = serde_json::json!({"metadata": {"ownerReferences": refs, "resourceVersion": pod.resource_version()}});
                if let Some(adopted) = ignore_not_found(api.patch(pod.name(), &Patch::Merge(patch), &PatchParams::default()).await)? {
                    owned.push(Arc::new(adopted));
                }
            }
            None => {}
        }
    }
    Ok(owned)
}

/// The set's revisions: those it controls, plus matching orphans (left by a set deleted with
/// `--cascade=orphan`), which it adopts so that history and pod revisions carry over.
async fn claim_revisions(
    ctx: &StatefulSetCtx,
    set: &Arc<StatefulSet>,
    selector: &LabelSelector,
    api: &Api<ControllerRevision>,
) -> Result<Vec<Arc<ControllerRevision>>, Error> {
    let ns = set.namespace().unwrap_or("default");
    let mut owned = Vec::new();
    for revision in super::claim_candidates(&ctx.revisions, ns, set.uid(), selector) {
        match controller_of(revision.meta()) {
            Some(r) if r.uid == set.uid() => owned.push(revision),
            Some(_) => {}
            None if !selector.is_empty() && !is_deleting(revision.meta()) => {
                if let Some(adopted) = history::adopt(api, set, &revision).await? {
                    owned.push(Arc::new(adopted));
                }
            }
            None => {}
        }
    }
    Ok(owned)
}

/// Creates the ordinal's missing claims. `false` when one of them is being deleted, or (for a pod
/// not created yet) still belongs to a scaled-down pod of that name: the pod must wait for it.
async fn ensure_claims(ctx: &StatefulSetCtx, set: &StatefulSet, ordinal: i32, pod: Option<&Pod>) -> Result<bool, Error> {
    let ns = set.namespace().unwrap_or("default");
    let api = Api::<PersistentVolumeClaim>::namespaced(ctx.shared.client.clone(), ns);
    let name = identity::pod_name(set, ordinal);
    let mut ready = true;
    for mut claim in identity::claims_for(set, ordinal) {
        match ctx.claims.get(&ObjectKey::new(Some(ns), claim.name().to_owned())) {
            Some(c) if is_deleting(c.meta()) => ready = false,
            Some(c) if pod.is_none() && identity::stale_pod_owner(&c, &name, None) => ready = false,
            Some(_) => {}
            None => {
                claim.metadata.owner_references = identity::creation_owners(set);
                match api.create(&claim, &PostParams::default()).await {
                    Ok(_) => {
                        let note = format!("create Claim {} Pod {name} in StatefulSet {} success", claim.name(), set.name());
                        ctx.event(set, EventData::normal("SuccessfulCreate", "Create", note)).await;
                    }
                    Err(e) if e.is_already_exists() => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(ready)
}

/// Sets the owner references of the pod's claims as the retention policy wants them.
async fn own_claims(ctx: &StatefulSetCtx, set: &StatefulSet, pod: &Pod, ordinal: i32, scaled_down: bool) -> Result<(), Error> {
    let ns = set.namespace().unwrap_or("default");
    let api = Api::<PersistentVolumeClaim>::namespaced(ctx.shared.client.clone(), ns);
    for template in identity::claims_for(set, ordinal) {
        let Some(claim) = ctx.claims.get(&ObjectKey::new(Some(ns), template.name().to_owned())) else { continue };
        if let Some(refs) = identity::claim_owners(&claim, set, pod, scaled_down) {
            let patch = serde_json::json!({"metadata": {"ownerReferences": refs, "resourceVersion": claim.resource_version()}});
            ignore_not_found(api.patch(claim.name(), &Patch::Merge(patch), &PatchParams::default()).await)?;
        }
    }
    Ok(())
}

/// Creates, fixes and deletes pods toward the spec; returns when to look again, if a wait
/// (`minReadySeconds`) needs a timer rather than a change.
async fn manage(
    ctx: &StatefulSetCtx,
    set: &StatefulSet,
    key: &ObjectKey,
    revs: &Revisions,
    pods: &[Arc<Pod>],
) -> Result<Option<Duration>, Error> {
    let ns = set.namespace().unwrap_or("default");
    let api = Api::<Pod>::namespaced(ctx.shared.client.clone(), ns);
    let start = identity::start_ordinal(set);
    let count = identity::replicas(set);
    let end = start.saturating_add(count);
    let spec = &set.spec;
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let monotonic = spec.pod_management_policy.as_deref() != Some("Parallel");
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let rolling = strategy.type_.as_deref().unwrap_or("RollingUpdate") == "RollingUpdate";
    let partition = strategy.rolling_update.as_ref().and_then(|r| r.partition);

    let mut slots: Vec<Option<&Arc<Pod>>> = vec![None; usize::try_from(count).unwrap_or(0)];
    let mut condemned: Vec<(i32, &Arc<Pod>)> = Vec::new();
    for pod in pods {
        let Some(ordinal) = identity::ordinal_of(set.name(), pod.name()) else { continue };
        if (start..end).contains(&ordinal) {
            slots[usize::try_from(ordinal - start).unwrap_or(0)] = Some(pod);
        } else {
            condemned.push((ordinal, pod));
        }
    }
    condemned.sort_by_key(|(o, _)| *o);
    // The lowest ordinal that is missing or not healthy: in OrderedReady it alone may be
    // removed by a scale-down while unhealthy.
    let first_unhealthy = slots
        .iter()
        .enumerate()
        .filter(|(_, p)| p.is_none_or(|p| !healthy(p, min_ready)))
        .map(|(i, _)| start + i32::try_from(i).unwrap_or(0))
        .chain(condemned.iter().filter(|(_, p)| !healthy(p, min_ready)).map(|(o, _)| *o))
        .min();

    let current_template: PodTemplateSpec = history::template_of(&revs.current).unwrap_or_else(|| spec.template.clone());
    let versioned = |ordinal: i32| -> Pod {
        let current_set_replicas = set.status.as_ref().and_then(|s| s.current_replicas).unwrap_or(0);
        let at_current = rolling
            && match partition {
                Some(p) => ordinal < start.saturating_add(p),
                None => ordinal < start.saturating_add(current_set_replicas),
            };
        if at_current {
            identity::pod_for(set, &current_template, ordinal, revs.current.name())
        } else {
            identity::pod_for(set, &spec.template, ordinal, revs.update.name())
        }
    };

    let mut wait: Option<Duration> = None;
    for (i, slot) in slots.iter().enumerate() {
        let ordinal = start + i32::try_from(i).unwrap_or(0);
        let Some(pod) = slot else {
            if !ensure_claims(ctx, set, ordinal, None).await? {
                if monotonic {
                    return Ok(wait);
                }
                continue;
            }
            let pod = versioned(ordinal);
            match api.create(&pod, &PostParams::default()).await {
                Ok(created) => {
                    ctx.expect_create(key, &created);
                    let note = format!("create Pod {} in StatefulSet {} successful", created.name(), set.name());
                    ctx.event(set, EventData::normal("SuccessfulCreate", "Create", note)).await;
                }
                // The cache is behind: the next change shows it.
                Err(e) if e.is_already_exists() => {}
                Err(e) => {
                    let note = format!("create Pod {} in StatefulSet {} failed error: {e}", pod.name(), set.name());
                    ctx.event(set, EventData::warning("FailedCreate", "Create", note)).await;
                    return Err(e);
                }
            }
            if monotonic {
                return Ok(wait);
            }
            continue;
        };
        let terminating = is_deleting(pod.meta());
        if matches!(phase(pod), Some("Failed" | "Succeeded")) && !terminating {
            delete_pod(ctx, set, key, &api, pod, "RecreatingTerminatedPod").await?;
            if monotonic {
                return Ok(wait);
            }
            continue;
        }
        if phase(pod) == Some("Pending") {
            ensure_claims(ctx, set, ordinal, Some(pod)).await?;
        }
        if terminating {
            if monotonic {
                return Ok(wait);
            }
            continue;
        }
        if monotonic && !running_and_ready(pod) {
            return Ok(wait);
        }
        if monotonic && let Err(left) = pod_is_available(pod, min_ready) {
            return Ok(Some(left));
        }
        if let Err(left) = pod_is_available(pod, min_ready) {
            wait = Some(wait.map_or(left, |w| w.min(left)));
        }
        if !identity::identity_matches(pod, ordinal) {
            let patch = serde_json::json!({"metadata": {"labels": {POD_NAME_LABEL: pod.name(), POD_INDEX_LABEL: ordinal.to_string()}}});
            ignore_not_found(api.patch(pod.name(), &Patch::Merge(patch), &PatchParams::default()).await)?;
        }
        if !identity::storage_matches(set, pod, ordinal) {
            ensure_claims(ctx, set, ordinal, Some(pod)).await?;
        }
        own_claims(ctx, set, pod, ordinal, false).await?;
    }

    // Scale down from the highest ordinal; in OrderedReady one at a time and only while every
    // lower pod is healthy.
    for (ordinal, pod) in condemned.iter().rev() {
        if is_deleting(pod.meta()) {
            if monotonic {
                return Ok(wait);
            }
            continue;
        }
        if monotonic && !healthy(pod, min_ready) && first_unhealthy != Some(*ordinal) {
            return Ok(wait);
        }
        own_claims(ctx, set, pod, *ordinal, true).await?;
        delete_pod(ctx, set, key, &api, pod, "SuccessfulDelete").await?;
        if monotonic {
            return Ok(wait);
        }
    }

    if !rolling {
        // OnDelete: pods pick up the new template when the user deletes them.
        return Ok(wait);
    }
    let max_unavailable =
        usize::try_from(resolve(strategy.rolling_update.as_ref().and_then(|r| r.max_unavailable.as_ref()), count, true, "1").max(1))
            .unwrap_or(1);
    let unavailable = slots.iter().filter(|p| p.is_none_or(|p| !healthy(p, min_ready))).count();
    let mut budget = max_unavailable.saturating_sub(unavailable);
    let update_min = usize::try_from(partition.unwrap_or(0).max(0)).unwrap_or(0);
    for slot in slots.iter().skip(update_min).rev() {
        if budget == 0 {
            break;
        }
        let Some(pod) = slot else { continue };
        if identity::revision_of(pod) != revs.update.name() && !is_deleting(pod.meta()) {
            delete_pod(ctx, set, key, &api, pod, "SuccessfulDelete").await?;
            budget -= 1;
        }
    }
    Ok(wait)
}

async fn delete_pod(
    ctx: &StatefulSetCtx,
    set: &StatefulSet,
    key: &ObjectKey,
    api: &Api<Pod>,
    pod: &Pod,
    reason: &str,
) -> Result<(), Error> {
    match api.delete(pod.name(), &DeleteParams::default()).await {
        Ok(_) => {
            ctx.expect_delete(key, pod);
            let note = format!("delete Pod {} in StatefulSet {} successful", pod.name(), set.name());
            ctx.event(set, EventData::normal(reason, "Delete", note)).await;
            Ok(())
        }
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

/// The status the pods show: counts, revisions, and a finished rolling update making the update
/// revision current.
pub fn status_of(set: &StatefulSet, revs: &Revisions, pods: &[Arc<Pod>]) -> StatefulSetStatus {
    let min_ready = set.spec.min_ready_seconds.unwrap_or(0);
    let to_i32 = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let live = || pods.iter().filter(|p| !is_deleting(p.meta()));
    let ready = pods.iter().filter(|p| running_and_ready(p)).count();
    let available = pods.iter().filter(|p| running_and_ready(p) && pod_is_available(p, min_ready).is_ok()).count();
    let current = live().filter(|p| identity::revision_of(p) == revs.current.name()).count();
    let updated = live().filter(|p| identity::revision_of(p) == revs.update.name()).count();
    let old = set.status.clone().unwrap_or_default();
    let mut status = StatefulSetStatus {
        observed_generation: set.meta().generation,
        replicas: to_i32(pods.len()),
        ready_replicas: Some(to_i32(ready)),
        available_replicas: Some(to_i32(available)),
        current_replicas: Some(to_i32(current)),
        updated_replicas: Some(to_i32(updated)),
        current_revision: Some(revs.current.name().to_owned()),
        update_revision: Some(revs.update.name().to_owned()),
        collision_count: revs.collision_count,
        conditions: old.conditions,
    };
    let rolling = set.spec.update_strategy.as_ref().and_then(|s| s.type_.as_deref()).unwrap_or("RollingUpdate") == "RollingUpdate";
    if rolling && updated == pods.len() && ready == pods.len() {
        status.current_replicas = status.updated_replicas;
        status.current_revision = status.update_revision.clone();
    }
    status
}

async fn update_status(ctx: &StatefulSetCtx, set: &StatefulSet, revs: &Revisions, pods: &[Arc<Pod>]) -> Result<(), Error> {
    let status = status_of(set, revs, pods);
    if set.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api = Api::<StatefulSet>::namespaced(ctx.shared.client.clone(), set.namespace().unwrap_or("default"));
    let mut updated = set.clone();
    // The cached set is often one status write behind: on a 409, write the same status onto the
    // latest set (as Kubernetes' status updater); repeated conflicts fail the sync, which backs off.
    for attempt in 1..=STATUS_ATTEMPTS {
        updated.status = Some(status.clone());
        match api.replace_status(&updated, &PostParams::default()).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) if e.is_conflict() && attempt < STATUS_ATTEMPTS => match api.get_opt(set.name()).await? {
                Some(latest) if latest.uid() == set.uid() => updated = latest,
                _ => return Ok(()),
            },
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
