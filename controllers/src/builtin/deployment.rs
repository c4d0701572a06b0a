//! The Deployment controller: one ReplicaSet per pod template (named by its hash), rolling
//! updates within maxSurge and maxUnavailable, Recreate, revisions for `kubectl rollout undo`,
//! pause, history cleanup, and the status and conditions `kubectl rollout status` reads.

use super::{Shared, ignore_not_found, selector_of};
use crate::clock;
use crate::runtime::{Action, Controller};
use bosun_core::meta::{controller_of, controller_ref, is_deleting};
use bosun_core::watch::Store;
use bosun_core::{Api, DeleteParams, Error, Object, Patch, PatchParams, PostParams};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector as ApiSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The label that ties a ReplicaSet and its pods to one pod template.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// The revision annotation on Deployments and ReplicaSets (`kubectl rollout history/undo`).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a reused ReplicaSet had.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's replicas when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// Replicas plus maxSurge when the ReplicaSet was last scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// The Deployment controller's state.
pub struct DeploymentCtx {
    shared: Shared,
    sets: Store<ReplicaSet>,
    /// The resourceVersion of our last write per ReplicaSet UID, per Deployment UID: until the
    /// cache has it, the cache is stale and decisions wait. Keyed by owner first, so that a
    /// reconcile touches its own entries only, not every Deployment's.
    written: Mutex<HashMap<String, HashMap<String, u64>>>,
}

/// Builds the Deployment controller on `shared`'s informers.
pub fn controller(shared: &Shared) -> (Controller<Deployment>, Arc<DeploymentCtx>) {
    let client = shared.client.clone();
    let sets = shared.informers.all::<ReplicaSet>();
    let c = shared.controller(Api::<Deployment>::all(client.clone()), "deployment").owns(Api::<ReplicaSet>::all(client));
    let ctx = Arc::new(DeploymentCtx { shared: shared.clone(), sets: sets.store().clone(), written: Mutex::default() });
    (c, ctx)
}

/// The pod-template hash: FNV-1a over the template (and the collision count), spelled in the
/// vowel-free alphabet Kubernetes uses.
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(serde_json::to_string(template).unwrap_or_default().as_bytes());
    if let Some(c) = collision_count {
        feed(c.to_string().as_bytes());
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string().bytes().map(|b| char::from(ALPHABET[usize::from(b) % ALPHABET.len()])).collect()
}

/// Whether two templates are equal once the `pod-template-hash` label is ignored.
pub fn equal_ignoring_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            labels.remove(POD_TEMPLATE_HASH);
        }
        if let Some(m) = t.metadata.as_mut()
            && m.labels.as_ref().is_some_and(|l| l.is_empty())
        {
            m.labels = None;
        }
        t
    };
    strip(a) == strip(b)
}

/// Resolves an absolute or percent value against `total`, rounding percents up or down.
pub fn resolve(value: Option<&IntOrString>, total: i32, round_up: bool, default: &str) -> i32 {
    let s = match value {
        Some(IntOrString::Int(i)) => return (*i).max(0),
        Some(IntOrString::String(s)) => s.as_str(),
        None => default,
    };
    let Some(pct) = s.strip_suffix('%').and_then(|p| p.trim().parse::<i64>().ok()) else {
        return s.parse::<i32>().unwrap_or(0).max(0);
    };
    let scaled = i64::from(total) * pct;
    let v = if round_up { (scaled + 99) / 100 } else { scaled / 100 };
    i32::try_from(v.max(0)).unwrap_or(i32::MAX)
}

/// maxSurge and maxUnavailable of a deployment; both zero becomes unavailable 1, as Kubernetes.
pub fn surge_and_unavailable(d: &Deployment) -> (i32, i32) {
    let replicas = d.spec.replicas.unwrap_or(1);
    let strategy = d.spec.strategy.as_ref();
    if strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate") {
        return (0, replicas);
    }
    let rolling = strategy.and_then(|s| s.rolling_update.as_ref());
    let surge = resolve(rolling.and_then(|r| r.max_surge.as_ref()), replicas, true, "25%");
    let unavailable = resolve(rolling.and_then(|r| r.max_unavailable.as_ref()), replicas, false, "25%").min(replicas);
    if surge == 0 && unavailable == 0 { (0, 1) } else { (surge, unavailable) }
}

/// The Deployment's annotations a ReplicaSet carries too (`kubernetes.io/change-cause`, which
/// `kubectl rollout history` shows), without the controller's own and kubectl's applied config.
fn copied_annotations(d: &Deployment) -> std::collections::BTreeMap<String, String> {
    let mut a = d.metadata.annotations.clone().unwrap_or_default();
    for k in [REVISION, REVISION_HISTORY, DESIRED_REPLICAS, MAX_REPLICAS, "kubectl.kubernetes.io/last-applied-configuration"] {
        a.remove(k);
    }
    a
}

fn annotation_i32(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.meta().annotations.as_ref().and_then(|a| a.get(key)).and_then(|v| v.parse().ok())
}

fn revision_of(rs: &ReplicaSet) -> i64 {
    rs.meta().annotations.as_ref().and_then(|a| a.get(REVISION)).and_then(|r| r.parse().ok()).unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(0)
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.clone().unwrap_or_default();
    (s.replicas, s.ready_replicas.unwrap_or(0), s.available_replicas.unwrap_or(0))
}

fn created(rs: &ReplicaSet) -> (i64, String) {
    (rs.meta().creation_timestamp.as_ref().map_or(0, |t| t.0.as_second()), rs.name().to_owned())
}

/// Reconciles one Deployment.
pub async fn reconcile(d: Arc<Deployment>, ctx: Arc<DeploymentCtx>) -> Result<Action, Error> {
    if is_deleting(d.meta()) {
        ctx.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(d.uid());
        return Ok(Action::await_change());
    }
    let ns = d.namespace().unwrap_or("default").to_owned();
    let spec = d.spec.clone();
    let selector = selector_of(&spec.selector)?;
    let uid = d.uid().to_owned();
    let mut sets: Vec<Arc<ReplicaSet>> = Vec::new();
    for rs in super::claim_candidates(&ctx.sets, &ns, d.uid(), &selector) {
        match controller_of(rs.meta()) {
            Some(r) if r.uid == uid => sets.push(rs),
            None if !selector.is_empty() && selector.matches_opt(rs.meta().labels.as_ref()) && !is_deleting(rs.meta()) => {
                // Adopt the orphan; the change brings it back through the cache.
                let mut refs = rs.meta().owner_references.clone().unwrap_or_default();
                refs.push(controller_ref(&*d));
                let patch = serde_json::json!({"metadata": {"ownerReferences": refs, "resourceVersion": rs.resource_version()}});
                let api = Api::<ReplicaSet>::namespaced(ctx.shared.client.clone(), &ns);
                ignore_not_found(api.patch(rs.name(), &Patch::Merge(patch), &PatchParams::default()).await)?;
                return Ok(Action::await_change());
            }
            _ => {}
        }
    }
    // Decisions on a cache that has not seen our own last writes could overshoot: wait for it.
    {
        let mut written = ctx.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(mine) = written.get_mut(&uid) {
            mine.retain(|rs_uid, _| sets.iter().any(|s| s.uid() == rs_uid));
            let stale =
                sets.iter().any(|rs| mine.get(rs.uid()).is_some_and(|&w| rs.resource_version().parse::<u64>().is_ok_and(|seen| seen < w)));
            if mine.is_empty() {
                written.remove(&uid);
            }
            if stale {
                return Ok(Action::requeue(Duration::from_millis(50)));
            }
        }
    }
    sets.sort_by_key(|rs| created(rs));
    let template = spec.template.clone();
    let new_rs = sets.iter().find(|rs| rs.spec.template.as_ref().is_some_and(|t| equal_ignoring_hash(t, &template))).cloned();
    let olds: Vec<Arc<ReplicaSet>> = sets.iter().filter(|rs| new_rs.as_ref().is_none_or(|n| n.uid() != rs.uid())).cloned().collect();
    let max_old_revision = olds.iter().map(|rs| revision_of(rs)).max().unwrap_or(0);
    let desired = spec.replicas.unwrap_or(1).max(0);
    let (surge, max_unavailable) = surge_and_unavailable(&d);
    let paused = spec.paused.unwrap_or(false);
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let rs_api = Api::<ReplicaSet>::namespaced(ctx.shared.client.clone(), &ns);
    let mut created_new = false;

    let new_rs = match new_rs {
        Some(rs) => {
            let mut annotations = serde_json::Map::new();
            if revision_of(&rs) <= max_old_revision {
                // A template that went back to an older ReplicaSet (rollback): it becomes the newest revision.
                let mut history: Vec<String> = rs
                    .meta()
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(REVISION_HISTORY))
                    .map(|h| h.split(',').map(str::to_owned).collect())
                    .unwrap_or_default();
                history.push(revision_of(&rs).to_string());
                annotations.insert(REVISION.into(), (max_old_revision + 1).to_string().into());
                annotations.insert(REVISION_HISTORY.into(), history.join(",").into());
            }
            let rs_annotations = rs.meta().annotations.clone().unwrap_or_default();
            for (k, v) in copied_annotations(&d) {
                if rs_annotations.get(&k) != Some(&v) {
                    annotations.insert(k, v.into());
                }
            }
            let mut spec_patch = serde_json::Map::new();
            if rs.spec.min_ready_seconds != spec.min_ready_seconds {
                spec_patch.insert("minReadySeconds".into(), spec.min_ready_seconds.unwrap_or(0).into());
            }
            if annotations.is_empty() && spec_patch.is_empty() {
                Some(rs)
            } else {
                let patch = serde_json::json!({
                    "metadata": {"annotations": annotations, "resourceVersion": rs.resource_version()},
                    "spec": spec_patch,
                });
                let updated = rs_api.patch(rs.name(), &Patch::Merge(patch), &PatchParams::default()).await?;
                ctx.note_write(&uid, &updated);
                Some(Arc::new(updated))
            }
        }
        None if paused => None,
        None => {
            let collision = d.status.as_ref().and_then(|s| s.collision_count);
            let hash = pod_template_hash(&template, collision);
            let mut tmpl = template.clone();
            tmpl.metadata
                .get_or_insert_with(ObjectMeta::default)
                .labels
                .get_or_insert_with(Default::default)
                .insert(POD_TEMPLATE_HASH.into(), hash.clone());
            let mut sel: ApiSelector = spec.selector.clone();
            sel.match_labels.get_or_insert_with(Default::default).insert(POD_TEMPLATE_HASH.into(), hash.clone());
            let old_total: i32 = olds.iter().map(|rs| spec_replicas(rs)).sum();
            let initial = if recreate {
                if old_total > 0 || olds.iter().any(|rs| status_of(rs).0 > 0) { 0 } else { desired }
            } else {
                (desired + surge - old_total).clamp(0, desired)
            };
            let mut labels = tmpl.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
            labels.insert(POD_TEMPLATE_HASH.into(), hash.clone());
            let name_of_new = format!("{}-{hash}", d.name());
            let rs = ReplicaSet {
                metadata: ObjectMeta {
                    name: Some(name_of_new.clone()),
                    namespace: Some(ns.clone()),
                    labels: Some(labels),
                    annotations: Some({
                        let mut a = copied_annotations(&d);
                        a.insert(REVISION.to_owned(), (max_old_revision + 1).to_string());
                        a.insert(DESIRED_REPLICAS.to_owned(), desired.to_string());
                        a.insert(MAX_REPLICAS.to_owned(), (desired + surge).to_string());
                        a
                    }),
                    owner_references: Some(vec![controller_ref(&*d)]),
                    ..ObjectMeta::default()
                },
                spec: ReplicaSetSpec {
                    replicas: Some(initial),
                    min_ready_seconds: spec.min_ready_seconds,
                    selector: sel,
                    template: Some(tmpl),
                },
                status: None,
            };
            match rs_api.create(&rs, &PostParams::default()).await {
                Ok(created) => {
                    ctx.note_write(&uid, &created);
                    created_new = true;
                    let note = format!("Scaled up replica set {} from 0 to {initial}", created.name());
                    let _ = ctx
                        .shared
                        .recorder
                        .publish(
                            &crate::runtime::events::object_reference(&*d),
                            &crate::runtime::EventData::normal("ScalingReplicaSet", "Scale", note),
                        )
                        .await;
                    Some(Arc::new(created))
                }
                Err(e) if e.is_already_exists() => {
                    // Our own ReplicaSet of this template that the cache has not seen yet (we
                    // created it on an earlier run): it is the new ReplicaSet, as in Kubernetes.
                    let existing = ignore_not_found(rs_api.get(&name_of_new).await)?;
                    if let Some(existing) = existing.filter(|rs| {
                        controller_of(rs.meta()).is_some_and(|r| r.uid == uid)
                            && rs.spec.template.as_ref().is_some_and(|t| equal_ignoring_hash(t, &template))
                    }) {
                        ctx.note_write(&uid, &existing);
                        Some(Arc::new(existing))
                    } else {
                        // A hash collision with a ReplicaSet of another template or owner: bump
                        // the count, retry.
                        let count = collision.unwrap_or(0) + 1;
                        let api = Api::<Deployment>::namespaced(ctx.shared.client.clone(), &ns);
                        api.patch_status(
                            d.name(),
                            &Patch::Merge(serde_json::json!({"status": {"collisionCount": count}})),
                            &PatchParams::default(),
                        )
                        .await?;
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    };

    if !paused {
        match &new_rs {
            Some(new) if recreate => {
                let old_running = olds.iter().any(|rs| spec_replicas(rs) > 0 || status_of(rs).0 > 0);
                for rs in &olds {
                    if spec_replicas(rs) > 0 {
                        ctx.scale(&rs_api, &d, rs, 0, desired, surge).await?;
                    }
                }
                if !old_running && spec_replicas(new) != desired {
                    ctx.scale(&rs_api, &d, new, desired, desired, surge).await?;
                }
            }
            Some(new) => {
                ctx.rolling(&rs_api, &d, new, &olds, desired, surge, max_unavailable).await?;
            }
            None => {}
        }
        ctx.cleanup(&rs_api, &d, &olds).await?;
    } else {
        // Paused: no rollout, but scaling still applies (proportionally across active sets).
        let mut active: Vec<&ReplicaSet> = olds.iter().map(|rs| &**rs).filter(|rs| spec_replicas(rs) > 0).collect();
        if let Some(new) = new_rs.as_deref().filter(|n| spec_replicas(n) > 0) {
            active.push(new);
        }
        match (active.len(), new_rs.as_deref()) {
            (0 | 1, Some(new)) if active.first().is_none_or(|a| a.uid() == new.uid()) && spec_replicas(new) != desired => {
                ctx.scale(&rs_api, &d, new, desired, desired, surge).await?;
            }
            (n, _) if n > 1 && active.iter().any(|rs| annotation_i32(rs, DESIRED_REPLICAS).is_some_and(|x| x != desired)) => {
                ctx.proportional(&rs_api, &d, &active, desired, surge).await?;
            }
            _ => {}
        }
    }

    ctx.sync_status(&d, new_rs.as_deref(), &sets, desired, max_unavailable, created_new, paused).await
}

impl DeploymentCtx {
    fn note_write(&self, owner: &str, rs: &ReplicaSet) {
        if let Ok(rv) = rs.resource_version().parse::<u64>() {
            let mut written = self.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            written.entry(owner.to_owned()).or_default().insert(rs.uid().to_owned(), rv);
        }
    }

    async fn scale(&self, api: &Api<ReplicaSet>, d: &Deployment, rs: &ReplicaSet, to: i32, desired: i32, surge: i32) -> Result<(), Error> {
        let from = spec_replicas(rs);
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": rs.resource_version(),
                "annotations": {DESIRED_REPLICAS: desired.to_string(), MAX_REPLICAS: (desired + surge).to_string()},
            },
            "spec": {"replicas": to},
        });
        let updated = api.patch(rs.name(), &Patch::Merge(patch), &PatchParams::default()).await?;
        self.note_write(d.uid(), &updated);
        tracing::debug!(rs = %rs.name(), from, to, "scaled replica set");
        if to != from {
            let direction = if to > from { "up" } else { "down" };
            let note = format!("Scaled {direction} replica set {} from {from} to {to}", rs.name());
            let event = crate::runtime::EventData::normal("ScalingReplicaSet", "Scale", note);
            if let Err(error) = self.shared.recorder.publish(&crate::runtime::events::object_reference(d), &event).await {
                tracing::debug!(%error, "event not recorded");
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn rolling(
        &self,
        api: &Api<ReplicaSet>,
        owner: &Deployment,
        new: &ReplicaSet,
        olds: &[Arc<ReplicaSet>],
        desired: i32,
        surge: i32,
        max_unavailable: i32,
    ) -> Result<(), Error> {
        let new_replicas = spec_replicas(new);
        let old_total: i32 = olds.iter().map(|rs| spec_replicas(rs)).sum();
        let mut active: Vec<&ReplicaSet> = olds.iter().map(|rs| &**rs).filter(|rs| spec_replicas(rs) > 0).collect();
        if new_replicas > 0 {
            active.push(new);
        }
        let scaled = active.iter().any(|rs| annotation_i32(rs, DESIRED_REPLICAS).is_some_and(|d| d != desired));
        if active.len() > 1 && scaled {
            return self.proportional(api, owner, &active, desired, surge).await;
        }
        // Scale the new ReplicaSet up within maxSurge (or down to the desired count).
        if new_replicas > desired {
            self.scale(api, owner, new, desired, desired, surge).await?;
            return Ok(());
        }
        if new_replicas < desired {
            let max_total = desired + surge;
            let total = new_replicas + old_total;
            if total < max_total {
                let up = (max_total - total).min(desired - new_replicas);
                self.scale(api, owner, new, new_replicas + up, desired, surge).await?;
                return Ok(());
            }
        }
        if old_total == 0 {
            return Ok(());
        }
        // Scale old ReplicaSets down while at least desired - maxUnavailable stay available.
        let all_total = new_replicas + old_total;
        let min_available = desired - max_unavailable;
        let (_, _, new_available) = status_of(new);
        let new_unavailable = (new_replicas - new_available).max(0);
        let mut budget = all_total - min_available - new_unavailable;
        if budget <= 0 {
            return Ok(());
        }
        let mut olds: Vec<&Arc<ReplicaSet>> = olds.iter().filter(|rs| spec_replicas(rs) > 0).collect();
        olds.sort_by_key(|rs| created(rs));
        let mut targets: HashMap<String, i32> = olds.iter().map(|rs| (rs.uid().to_owned(), spec_replicas(rs))).collect();
        // First the old pods that are not available anyway.
        for rs in &olds {
            if budget <= 0 {
                break;
            }
            let current = targets[rs.uid()];
            let unhealthy = (current - status_of(rs).2).max(0);
            let cut = unhealthy.min(budget);
            if cut > 0 {
                targets.insert(rs.uid().to_owned(), current - cut);
                budget -= cut;
            }
        }
        // Then available ones, as far as availability allows.
        let available_total: i32 = new_available + olds.iter().map(|rs| status_of(rs).2.min(targets[rs.uid()])).sum::<i32>();
        let mut can_remove = (available_total - min_available).min(budget).max(0);
        for rs in &olds {
            if can_remove <= 0 {
                break;
            }
            let current = targets[rs.uid()];
            let cut = current.min(can_remove);
            targets.insert(rs.uid().to_owned(), current - cut);
            can_remove -= cut;
        }
        for rs in olds {
            let to = targets[rs.uid()];
            if to != spec_replicas(rs) {
                self.scale(api, owner, rs, to, desired, surge).await?;
            }
        }
        Ok(())
    }

    /// A Deployment scaled in the middle of a rollout: spread the change over the active
    /// ReplicaSets in proportion to their sizes (leftovers to the largest), so that neither the
    /// old nor the new pods absorb it all, as Kubernetes does.
    async fn proportional(
        &self,
        api: &Api<ReplicaSet>,
        owner: &Deployment,
        active: &[&ReplicaSet],
        desired: i32,
        surge: i32,
    ) -> Result<(), Error> {
        let total: i32 = active.iter().map(|rs| spec_replicas(rs)).sum();
        let to_add = desired + surge - total;
        let mut order: Vec<&ReplicaSet> = active.to_vec();
        if to_add > 0 {
            order.sort_by_key(|rs| (std::cmp::Reverse(spec_replicas(rs)), std::cmp::Reverse(created(rs))));
        } else {
            order.sort_by_key(|rs| (spec_replicas(rs), created(rs)));
        }
        let mut added = 0;
        let mut sizes: Vec<i32> = Vec::with_capacity(order.len());
        for rs in &order {
            let current = spec_replicas(rs);
            let max = annotation_i32(rs, MAX_REPLICAS).unwrap_or(0);
            let fraction = if max > 0 {
                let target = (f64::from(current) * f64::from(desired + surge) / f64::from(max)).round() as i32;
                target - current
            } else {
                0
            };
            let allowed = to_add - added;
            let step = if to_add > 0 { fraction.min(allowed).max(0) } else { fraction.max(allowed).min(0) };
            added += step;
            sizes.push(current + step);
        }
        if let Some(first) = sizes.first_mut() {
            *first = (*first + to_add - added).max(0);
        }
        for (rs, to) in order.iter().zip(sizes) {
            self.scale(api, owner, rs, to, desired, surge).await?;
        }
        Ok(())
    }

    async fn cleanup(&self, api: &Api<ReplicaSet>, d: &Deployment, olds: &[Arc<ReplicaSet>]) -> Result<(), Error> {
        let limit = d.spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        let mut idle: Vec<&Arc<ReplicaSet>> =
            olds.iter().filter(|rs| spec_replicas(rs) == 0 && status_of(rs).0 == 0 && !is_deleting(rs.meta())).collect();
        if idle.len() <= limit {
            return Ok(());
        }
        idle.sort_by_key(|rs| revision_of(rs));
        let excess = idle.len() - limit;
        for rs in idle.into_iter().take(excess) {
            ignore_not_found(api.delete(rs.name(), &DeleteParams::background()).await)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn sync_status(
        &self,
        d: &Deployment,
        new: Option<&ReplicaSet>,
        sets: &[Arc<ReplicaSet>],
        desired: i32,
        max_unavailable: i32,
        created_new: bool,
        paused: bool,
    ) -> Result<Action, Error> {
        let mut replicas = 0;
        let mut ready = 0;
        let mut available = 0;
        for rs in sets {
            let (r, rd, a) = status_of(rs);
            replicas += r;
            ready += rd;
            available += a;
        }
        let updated = new.map_or(0, |n| status_of(n).0);
        let generation = d.meta().generation.unwrap_or(0);
        let old = d.status.clone().unwrap_or_default();
        let now = clock::now_time();
        let mut conditions = old.conditions.clone().unwrap_or_default();
        let cond = |type_: &str, status: &str, reason: &str, message: String| DeploymentCondition {
            type_: Some(type_.into()),
            status: Some(status.into()),
            reason: Some(reason.into()),
            message: Some(message),
            last_update_time: Some(now.clone()),
            last_transition_time: None,
        };
        let avail = if available >= desired - max_unavailable {
            cond("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.".into())
        } else {
            cond("Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.".into())
        };
        put_condition(&mut conditions, avail, &now);
        let new_name = new.map(|n| n.name().to_owned()).unwrap_or_default();
        let complete = new.is_some() && updated == desired && replicas == desired && available >= desired;
        let deadline = d.spec.progress_deadline_seconds.unwrap_or(600);
        let previous = conditions.iter().find(|c| c.type_.as_deref() == Some("Progressing")).cloned();
        let progressed = (
            old.replicas.unwrap_or(0),
            old.updated_replicas.unwrap_or(0),
            old.ready_replicas.unwrap_or(0),
            old.available_replicas.unwrap_or(0),
        ) != (replicas, updated, ready, available);
        let mut requeue = None;
        let progressing = if paused {
            Some(cond("Progressing", "Unknown", "DeploymentPaused", "Deployment is paused".into()))
        } else if complete {
            Some(cond("Progressing", "True", "NewReplicaSetAvailable", format!("ReplicaSet \"{new_name}\" has successfully progressed.")))
        } else if created_new {
            Some(cond("Progressing", "True", "NewReplicaSetCreated", format!("Created new replica set \"{new_name}\"")))
        } else if progressed
            || previous.as_ref().is_none_or(|p| matches!(p.reason.as_deref(), Some("DeploymentPaused" | "NewReplicaSetAvailable")))
        {
            requeue = Some(Duration::from_secs(u64::try_from(deadline).unwrap_or(600)));
            Some(cond("Progressing", "True", "ReplicaSetUpdated", format!("ReplicaSet \"{new_name}\" is progressing.")))
        } else {
            let last = previous.as_ref().and_then(|p| p.last_update_time.as_ref()).map_or(0.0, |t| clock::seconds_since(&t.0));
            if previous.as_ref().is_some_and(|p| p.reason.as_deref() == Some("ProgressDeadlineExceeded")) {
                None
            } else if last >= f64::from(deadline) {
                Some(cond(
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                ))
            } else {
                requeue = Some(Duration::from_secs_f64((f64::from(deadline) - last).max(0.001)));
                None
            }
        };
        if let Some(p) = progressing {
            put_condition(&mut conditions, p, &now);
        }
        let unavailable = (desired - available).max(0);
        let changed = old.observed_generation != Some(generation)
            || old.replicas.unwrap_or(0) != replicas
            || old.updated_replicas.unwrap_or(0) != updated
            || old.ready_replicas.unwrap_or(0) != ready
            || old.available_replicas.unwrap_or(0) != available
            || old.unavailable_replicas.unwrap_or(0) != unavailable
            || old.conditions.clone().unwrap_or_default() != conditions;
        let ns = d.namespace().unwrap_or("default");
        let api = Api::<Deployment>::namespaced(self.shared.client.clone(), ns);
        if changed {
            let patch = serde_json::json!({"status": {
                "observedGeneration": generation,
                "replicas": replicas,
                "updatedReplicas": updated,
                "readyReplicas": ready,
                "availableReplicas": available,
                "unavailableReplicas": unavailable,
                "conditions": conditions,
            }});
            ignore_not_found(api.patch_status(d.name(), &Patch::Merge(patch), &PatchParams::default()).await)?;
        }
        if let Some(n) = new {
            let revision = n.meta().annotations.as_ref().and_then(|a| a.get(REVISION)).cloned().unwrap_or_default();
            let current = d.meta().annotations.as_ref().and_then(|a| a.get(REVISION)).cloned();
            if !revision.is_empty() && current.as_deref() != Some(revision.as_str()) {
                let patch = serde_json::json!({"metadata": {"annotations": {REVISION: revision}}});
                ignore_not_found(api.patch(d.name(), &Patch::Merge(patch), &PatchParams::default()).await)?;
            }
        }
        Ok(requeue.map_or_else(Action::await_change, Action::requeue))
    }
}

/// Sets a deployment condition: keeps `lastTransitionTime` while the status holds, and keeps
/// `lastUpdateTime` too when nothing but the times would change.
fn put_condition(
    conditions: &mut Vec<DeploymentCondition>,
    mut new: DeploymentCondition,
    now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
                if old.reason == new.reason && old.message == new.message && new.reason.as_deref() != Some("ReplicaSetUpdated") {
                    new.last_update_time = old.last_update_time.clone();
                }
            } else {
                new.last_transition_time = Some(now.clone());
            }
            *old = new;
        }
        None => {
            new.last_transition_time = Some(now.clone());
            conditions.push(new);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_core::watch::Informers;
    use bosun_core::{Client, ListParams};
    use k8s_openapi::api::apps::v1::DeploymentSpec;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn web(replicas: i32) -> Deployment {
        let labels: std::collections::BTreeMap<String, String> = [("app".to_owned(), "web".to_owned())].into();
        Deployment {
            metadata: ObjectMeta { name: Some("web".into()), namespace: Some("default".into()), ..ObjectMeta::default() },
            spec: DeploymentSpec {
                replicas: Some(replicas),
                selector: ApiSelector { match_labels: Some(labels.clone()), ..ApiSelector::default() },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta { labels: Some(labels), ..ObjectMeta::default() }),
                    spec: Some(PodSpec {
                        containers: vec![Container { name: "main".into(), image: Some("web:1".into()), ..Container::default() }],
                        ..PodSpec::default()
                    }),
                },
                ..DeploymentSpec::default()
            },
            status: None,
        }
    }

    /// A Deployment controller whose ReplicaSet cache never hears of anything: every reconcile
    /// runs before the ReplicaSet watch delivers what the previous one created.
    fn blind_controller() -> (Arc<dyn Client>, Arc<DeploymentCtx>) {
        let client: Arc<dyn Client> = bosun_store::ApiServer::in_memory();
        let shared = Shared::new(client.clone(), Informers::new(client.clone()), crate::runtime::Metrics::new());
        (client, Arc::new(DeploymentCtx { shared, sets: Store::new(), written: Mutex::default() }))
    }

    #[tokio::test]
    async fn a_replica_set_the_cache_has_not_seen_yet_is_not_created_twice() {
        let (client, ctx) = blind_controller();
        let deployments = Api::<Deployment>::namespaced(client.clone(), "default");
        let d = deployments.create(&web(3), &PostParams::default()).await.expect("create the deployment");
        let _ = reconcile(Arc::new(d), ctx.clone()).await.expect("the first run creates the replica set");
        let d = deployments.get("web").await.expect("read the deployment");
        let again = reconcile(Arc::new(d), ctx.clone()).await;
        assert!(again.is_ok(), "the second run takes its own replica set as the new one: {:?}", again.err());
        let d = deployments.get("web").await.expect("read the deployment");
        assert_eq!(d.status.and_then(|s| s.collision_count), None, "no collision was counted");
        let sets = Api::<ReplicaSet>::namespaced(client, "default").list(&ListParams::default()).await.expect("list");
        assert_eq!(sets.items.len(), 1);
    }

    #[tokio::test]
    async fn a_name_taken_by_another_template_still_counts_a_collision() {
        let (client, ctx) = blind_controller();
        let deployments = Api::<Deployment>::namespaced(client.clone(), "default");
        let d = deployments.create(&web(3), &PostParams::default()).await.expect("create the deployment");
        let hash = pod_template_hash(&d.spec.template, None);
        let mut other = web(1).spec.template;
        other.spec.iter_mut().for_each(|p| p.containers[0].image = Some("other:1".into()));
        let squatter = ReplicaSet {
            metadata: ObjectMeta { name: Some(format!("web-{hash}")), namespace: Some("default".into()), ..ObjectMeta::default() },
            spec: ReplicaSetSpec {
                replicas: Some(0),
                selector: ApiSelector { match_labels: other.metadata.as_ref().and_then(|m| m.labels.clone()), ..ApiSelector::default() },
                template: Some(other),
                ..ReplicaSetSpec::default()
            },
            status: None,
        };
        let rs_api = Api::<ReplicaSet>::namespaced(client.clone(), "default");
        rs_api.create(&squatter, &PostParams::default()).await.expect("create the squatter");
        let result = reconcile(Arc::new(d), ctx).await;
        assert!(result.is_err_and(|e| e.is_already_exists()));
        let d = deployments.get("web").await.expect("read the deployment");
        assert_eq!(d.status.and_then(|s| s.collision_count), Some(1));
    }

    #[test]
    fn percentages_round_surge_up_and_unavailable_down() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(resolve(Some(&pct("25%")), 10, true, "25%"), 3);
        assert_eq!(resolve(Some(&pct("25%")), 10, false, "25%"), 2);
        assert_eq!(resolve(Some(&IntOrString::Int(3)), 10, true, "25%"), 3);
        assert_eq!(resolve(None, 4, false, "25%"), 1);
    }

    #[test]
    fn template_hashes_are_stable_and_ignore_nothing_but_the_collision_count() {
        let t = PodTemplateSpec {
            metadata: Some(ObjectMeta { labels: Some([("app".to_owned(), "web".to_owned())].into()), ..ObjectMeta::default() }),
            ..PodTemplateSpec::default()
        };
        let a = pod_template_hash(&t, None);
        assert_eq!(a, pod_template_hash(&t, None));
        assert_ne!(a, pod_template_hash(&t, Some(1)));
        assert!(a.bytes().all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)));
        let mut hashed = t.clone();
        hashed.metadata.as_mut().and_then(|m| m.labels.as_mut()).map(|l| l.insert(POD_TEMPLATE_HASH.into(), a.clone()));
        assert!(equal_ignoring_hash(&t, &hashed));
    }
}
