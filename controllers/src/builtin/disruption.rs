//! The disruption controller: keeps each PodDisruptionBudget's status (`currentHealthy`,
//! `desiredHealthy`, `expectedPods`, `disruptionsAllowed`, `disruptedPods`, `observedGeneration`
//! and the `DisruptionAllowed` condition) in step with its pods, which the eviction subresource
//! reads to refuse evictions (429) that would break the budget.
//!
//! `minAvailable` as a number needs only the pods; `maxUnavailable` and percentages are resolved
//! against the summed scale (the `scale` subresource) of the pods' controllers, a ReplicaSet
//! counting as its Deployment. Pods an eviction recorded in `disruptedPods` count as unhealthy
//! until they are deleted or [`DELETION_TIMEOUT`] passes, so a status computed from a cache that
//! has not yet seen an eviction's deletion never hands the same disruption out twice. The status
//! write carries the budget's resourceVersion: an eviction that landed in between wins.

use super::{Shared, pod_is_ready};
use crate::clock;
use crate::runtime::{Action, Controller};
use bosun_core::meta::{controller_of, is_deleting, set_condition};
use bosun_core::watch::Store;
use bosun_core::{Api, Error, LabelSelector, Object, ObjectKey, PostParams};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// How long a pod an eviction recorded in `disruptedPods` counts as unhealthy while it is not yet
/// being deleted (kube-controller-manager's `DeletionTimeout`).
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

/// The disruption controller's state.
pub struct DisruptionCtx {
    shared: Shared,
    pods: Store<Pod>,
}

fn needs_scale(pdb: &PodDisruptionBudget) -> bool {
    let spec = pdb.spec.as_ref();
    spec.is_some_and(|s| s.max_unavailable.is_some() || matches!(s.min_available, Some(IntOrString::String(_))))
}

fn selector(pdb: &PodDisruptionBudget) -> Option<LabelSelector> {
    pdb.spec.as_ref()?.selector.as_ref().and_then(|s| LabelSelector::from_api(s).ok())
}

/// Builds the disruption controller on `shared`'s informers.
pub fn controller(shared: &Shared) -> (Controller<PodDisruptionBudget>, Arc<DisruptionCtx>) {
    let client = shared.client.clone();
    let pods = shared.informers.all::<Pod>().store().clone();
    let pdbs = shared.informers.all::<PodDisruptionBudget>().store().clone();
    let covering = pdbs.clone();
    let scaled = move |ns: Option<&str>| {
        pdbs.list().iter().filter(|p| p.namespace() == ns && needs_scale(p)).map(|p| ObjectKey::of(&**p)).collect::<Vec<_>>()
    };
    let (s1, s2, s3) = (scaled.clone(), scaled.clone(), scaled);
    let c = shared
        .controller(Api::<PodDisruptionBudget>::all(client.clone()), "disruption")
        .watches(Api::<Pod>::all(client.clone()), move |pod: &Pod| {
            let labels = pod.meta().labels.clone().unwrap_or_default();
            covering
                .list()
                .iter()
                .filter(|p| p.namespace() == pod.namespace() && selector(p).is_some_and(|s| s.matches(&labels)))
                .map(|p| ObjectKey::of(&**p))
                .collect::<Vec<_>>()
        })
        .watches(Api::<ReplicaSet>::all(client.clone()), move |o: &ReplicaSet| s1(o.namespace()))
        .watches(Api::<Deployment>::all(client.clone()), move |o: &Deployment| s2(o.namespace()))
        .watches(Api::<StatefulSet>::all(client), move |o: &StatefulSet| s3(o.namespace()));
    (c, Arc::new(DisruptionCtx { shared: shared.clone(), pods }))
}

/// Resolves an int-or-percent against `total` (percentages rounded up).
pub fn scaled_value(v: &IntOrString, total: i32) -> Result<i32, String> {
    match v {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let pct: i64 =
                s.strip_suffix('%').and_then(|p| p.parse().ok()).ok_or_else(|| format!("invalid value {s:?}: not a percentage"))?;
            let v = (pct * i64::from(total) + 99).div_euclid(100);
            i32::try_from(v).map_err(|_| format!("value {s:?} of {total} is out of range"))
        }
    }
}

/// The summed scale of the pods' controllers (each counted once; a ReplicaSet owned by a
/// Deployment counts as the Deployment).
async fn expected_scale(ctx: &DisruptionCtx, ns: &str, pods: &[Arc<Pod>]) -> Result<i32, String> {
    let mut scales: HashMap<String, i32> = HashMap::new();
    let mut looked_up: HashMap<String, ()> = HashMap::new();
    for pod in pods {
        let Some(owner) = controller_of(pod.meta()) else {
            return Err(format!("found no controller ref for pod {:?}", pod.name()));
        };
        if looked_up.insert(owner.uid.clone(), ()).is_some() {
            continue;
        }
        let (uid, scale) = scale_of(ctx, ns, owner).await?;
        scales.insert(uid, scale);
    }
    Ok(scales.values().sum())
}

async fn scale_of(ctx: &DisruptionCtx, ns: &str, owner: &OwnerReference) -> Result<(String, i32), String> {
    let client = ctx.shared.client.clone();
    let mut owner = owner.clone();
    if owner.kind == "ReplicaSet" && owner.api_version == "apps/v1" {
        let rs = Api::<ReplicaSet>::namespaced(client.clone(), ns).get(&owner.name).await.map_err(|e| e.to_string())?;
        if let Some(d) = controller_of(rs.meta()).filter(|d| d.kind == "Deployment" && d.api_version == "apps/v1") {
            owner = d.clone();
        }
    }
    let res = bosun_core::resource::builtin_for(&owner.api_version, &owner.kind)
        .ok_or_else(|| format!("unknown controller kind {}/{}", owner.api_version, owner.kind))?;
    let scale = Api::dynamic(client, res.clone(), Some(ns))
        .get_scale(&owner.name)
        .await
        .map_err(|e| format!("could not read the scale of {} {:?}: {e}", owner.kind, owner.name))?;
    Ok((owner.uid, scale.spec.and_then(|s| s.replicas).unwrap_or(0)))
}

/// What the status should say, and when to look again (a disruption entry expiring).
struct Computed {
    expected: i32,
    desired: i32,
    healthy: i32,
    disrupted: BTreeMap<String, Time>,
    recheck: Option<Duration>,
}

async fn compute(ctx: &DisruptionCtx, pdb: &PodDisruptionBudget) -> Result<Computed, String> {
    let ns = pdb.namespace().unwrap_or("default");
    let spec = pdb.spec.clone().unwrap_or_default();
    // policy/v1: an empty selector selects every pod of the namespace, a missing one none.
    let pods: Vec<Arc<Pod>> = match selector(pdb) {
        None => Vec::new(),
        Some(sel) => {
            ctx.pods.list().into_iter().filter(|p| p.namespace() == Some(ns) && sel.matches_opt(p.meta().labels.as_ref())).collect()
        }
    };
    let (expected, desired) = if let Some(max) = &spec.max_unavailable {
        let expected = expected_scale(ctx, ns, &pods).await?;
        let max = scaled_value(max, expected)?;
        (expected, (expected - max).max(0))
    } else if let Some(min) = &spec.min_available {
        match min {
            IntOrString::Int(n) => (i32::try_from(pods.len()).unwrap_or(i32::MAX), *n),
            IntOrString::String(_) => {
                let expected = expected_scale(ctx, ns, &pods).await?;
                (expected, scaled_value(min, expected)?)
            }
        }
    } else {
        (i32::try_from(pods.len()).unwrap_or(i32::MAX), 0)
    };
    let now = clock::now();
    let recorded = pdb.status.as_ref().and_then(|s| s.disrupted_pods.clone()).unwrap_or_default();
    let mut disrupted = BTreeMap::new();
    let mut recheck: Option<Duration> = None;
    let timeout = k8s_openapi::jiff::SignedDuration::try_from(DELETION_TIMEOUT).unwrap_or_default();
    for pod in &pods {
        if is_deleting(pod.meta()) {
            continue;
        }
        let Some(at) = recorded.get(pod.name()) else { continue };
        let expires = at.0.checked_add(timeout).unwrap_or(at.0);
        if expires <= now {
            tracing::debug!(pod = %pod.name(), "disruption entry expired: the eviction did not delete the pod");
            continue;
        }
        let left = Duration::try_from(now.duration_until(expires)).unwrap_or_default();
        recheck = Some(recheck.map_or(left, |r| r.min(left)));
        disrupted.insert(pod.name().to_owned(), at.clone());
    }
    let healthy = pods.iter().filter(|p| !is_deleting(p.meta()) && !disrupted.contains_key(p.name()) && pod_is_ready(p)).count();
    Ok(Computed { expected, desired, healthy: i32::try_from(healthy).unwrap_or(i32::MAX), disrupted, recheck })
}

/// Reconciles one PodDisruptionBudget.
pub async fn reconcile(pdb: Arc<PodDisruptionBudget>, ctx: Arc<DisruptionCtx>) -> Result<Action, Error> {
    if is_deleting(pdb.meta()) {
        return Ok(Action::await_change());
    }
    let old = pdb.status.clone().unwrap_or_default();
    let generation = pdb.meta().generation;
    let mut status = PodDisruptionBudgetStatus { observed_generation: generation, ..old.clone() };
    let mut conditions = old.conditions.clone().unwrap_or_default();
    let condition = |status: &str, reason: &str, message: String| Condition {
        type_: "DisruptionAllowed".into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: clock::now_time(),
    };
    let mut action = Action::await_change();
    match compute(&ctx, &pdb).await {
        Ok(c) => {
            let allowed = if c.expected <= 0 { 0 } else { (c.healthy - c.desired).max(0) };
            status.current_healthy = Some(c.healthy);
            status.desired_healthy = Some(c.desired);
            status.expected_pods = Some(c.expected);
            status.disruptions_allowed = Some(allowed);
            status.disrupted_pods = (!c.disrupted.is_empty()).then_some(c.disrupted);
            let cond = if allowed > 0 {
                condition("True", "SufficientPods", String::new())
            } else {
                condition("False", "InsufficientPods", String::new())
            };
            set_condition(&mut conditions, cond, clock::now_time());
            if let Some(after) = c.recheck {
                action = Action::requeue(after + Duration::from_millis(10));
            }
        }
        Err(message) => {
            // Fail safe: no disruption is allowed while the budget cannot be computed.
            tracing::debug!(pdb = %ObjectKey::of(&*pdb), %message, "disruption budget not computable");
            status.disruptions_allowed = Some(0);
            set_condition(&mut conditions, condition("False", "SyncFailed", message), clock::now_time());
        }
    }
    status.conditions = Some(conditions);
    if status != old {
        let mut next = (*pdb).clone();
        next.status = Some(status);
        let api = Api::<PodDisruptionBudget>::namespaced(ctx.shared.client.clone(), pdb.namespace().unwrap_or("default"));
        match api.replace_status(&next, &PostParams::default()).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(action)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_up_and_numbers_pass_through() {
        assert_eq!(scaled_value(&IntOrString::Int(2), 10), Ok(2));
        assert_eq!(scaled_value(&IntOrString::String("50%".into()), 5), Ok(3));
        assert_eq!(scaled_value(&IntOrString::String("20%".into()), 10), Ok(2));
        assert_eq!(scaled_value(&IntOrString::String("1%".into()), 10), Ok(1));
        assert_eq!(scaled_value(&IntOrString::String("0%".into()), 10), Ok(0));
        assert!(scaled_value(&IntOrString::String("half".into()), 10).is_err());
    }
}
