//! The disruption controller: PodDisruptionBudget status for numbers and percentages, and drains
//! through the eviction subresource that never break a budget.

use crate::support::*;
use bosun_controllers::builtin::pod_is_ready;
use bosun_core::meta::is_deleting;
use bosun_core::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

type Res = Result<(), Box<dyn std::error::Error>>;

fn pdb(name: &str, app: &str, min_available: Option<IntOrString>, max_unavailable: Option<IntOrString>) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some("default".into()), ..ObjectMeta::default() },
        spec: Some(PodDisruptionBudgetSpec {
            selector: Some(LabelSelector { match_labels: Some(labels(app)), ..LabelSelector::default() }),
            min_available,
            max_unavailable,
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

/// (expectedPods, desiredHealthy, currentHealthy, disruptionsAllowed, condition status and reason).
type Numbers = (Option<i32>, Option<i32>, Option<i32>, Option<i32>, Option<(String, String)>);

async fn numbers(api: &Api<PodDisruptionBudget>, name: &str) -> Result<Numbers, bosun_core::Error> {
    let p = api.get(name).await?;
    let s = p.status.unwrap_or_default();
    let cond = s.conditions.unwrap_or_default().into_iter().find(|c| c.type_ == "DisruptionAllowed").map(|c| (c.status, c.reason));
    assert_eq!(s.observed_generation, p.metadata.generation, "observedGeneration follows the spec");
    Ok((s.expected_pods, s.desired_healthy, s.current_healthy, s.disruptions_allowed, cond))
}

fn yes() -> Option<(String, String)> {
    Some(("True".into(), "SufficientPods".into()))
}

fn no(reason: &str) -> Option<(String, String)> {
    Some(("False".into(), reason.into()))
}

#[tokio::test(start_paused = true)]
async fn budgets_count_numbers_against_pods_and_percentages_against_the_controllers_scale() -> Res {
    let h = harness(&["replicaset", "deployment", "disruption"]);
    let c = h.client();
    Api::<Deployment>::namespaced(c.clone(), "default").create(&deployment("web", 4, 1, 0), &PostParams::default()).await?;
    let pdbs = Api::<PodDisruptionBudget>::namespaced(c.clone(), "default");
    pdbs.create(&pdb("min-int", "web", Some(IntOrString::Int(3)), None), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    assert_eq!(numbers(&pdbs, "min-int").await?, (Some(4), Some(3), Some(4), Some(1), yes()));
    // Only one budget may cover a pod for evictions; the others here are only read.
    pdbs.delete("min-int", &DeleteParams::default()).await?;
    pdbs.create(&pdb("min-pct", "web", Some(IntOrString::String("50%".into())), None), &PostParams::default()).await?;
    pdbs.create(&pdb("max-pct", "web", None, Some(IntOrString::String("30%".into()))), &PostParams::default()).await?;
    pdbs.create(&pdb("max-int", "web", None, Some(IntOrString::Int(1))), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    assert_eq!(numbers(&pdbs, "min-pct").await?, (Some(4), Some(2), Some(4), Some(2), yes()));
    // 30% of 4 rounds up to 2 unavailable: 2 must stay healthy.
    assert_eq!(numbers(&pdbs, "max-pct").await?, (Some(4), Some(2), Some(4), Some(2), yes()));
    assert_eq!(numbers(&pdbs, "max-int").await?, (Some(4), Some(3), Some(4), Some(1), yes()));
    // Scaling the Deployment (through its ReplicaSet's owner) moves the expected count.
    Api::<Deployment>::namespaced(c.clone(), "default")
        .patch_scale("web", &Patch::Merge(serde_json::json!({"spec": {"replicas": 6}})), &PatchParams::default())
        .await?;
    h.run_until_quiescent().await?;
    assert_eq!(numbers(&pdbs, "max-int").await?, (Some(6), Some(5), Some(6), Some(1), yes()));
    assert_eq!(numbers(&pdbs, "min-pct").await?, (Some(6), Some(3), Some(6), Some(3), yes()));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn percentages_over_pods_without_a_controller_allow_no_disruption() -> Res {
    let h = harness(&["disruption"]);
    let c = h.client();
    let pods = Api::<Pod>::namespaced(c.clone(), "default");
    for i in 0..2 {
        pods.create(&bare_pod(&format!("solo-{i}"), "solo"), &PostParams::default()).await?;
    }
    let pdbs = Api::<PodDisruptionBudget>::namespaced(c.clone(), "default");
    pdbs.create(&pdb("solo", "solo", None, Some(IntOrString::Int(1))), &PostParams::default()).await?;
    pdbs.create(&pdb("solo-int", "other", Some(IntOrString::Int(0)), None), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    let (_, _, _, allowed, cond) = numbers(&pdbs, "solo").await?;
    assert_eq!((allowed, cond.map(|c| c.1)), (Some(0), Some("SyncFailed".to_owned())));
    let e = pods.evict("solo-0", &DeleteParams::default()).await.expect_err("the budget cannot be computed");
    assert_eq!(e.code(), 429);
    // A budget whose selector matches nothing expects no pods and allows nothing.
    assert_eq!(numbers(&pdbs, "solo-int").await?, (Some(0), Some(0), Some(0), Some(0), no("InsufficientPods")));
    Ok(())
}

async fn healthy(pods: &Api<Pod>, app: &str) -> Result<usize, bosun_core::Error> {
    let list = pods.list(&ListParams::default().labels(format!("app={app}"))).await?;
    Ok(list.items.iter().filter(|p| !is_deleting(&p.metadata) && pod_is_ready(p)).count())
}

#[tokio::test(start_paused = true)]
async fn a_drain_evicts_one_pod_after_another_and_never_breaks_the_budget() -> Res {
    let h = harness(&["replicaset", "disruption"]);
    let c = h.client();
    Api::<ReplicaSet>::namespaced(c.clone(), "default").create(&replicaset("db", "db", 3), &PostParams::default()).await?;
    let pdbs = Api::<PodDisruptionBudget>::namespaced(c.clone(), "default");
    pdbs.create(&pdb("db", "db", Some(IntOrString::Int(2)), None), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    let pods = Api::<Pod>::namespaced(c.clone(), "default");
    let originals: Vec<String> =
        pods.list(&ListParams::default().labels("app=db")).await?.items.into_iter().filter_map(|p| p.metadata.name).collect();
    assert_eq!(originals.len(), 3);
    let mut refused = 0;
    for name in &originals {
        // What `kubectl drain` does: evict, and on 429 wait and retry.
        loop {
            match pods.evict(name, &DeleteParams::default()).await {
                Ok(()) => break,
                Err(e) if e.code() == 429 => {
                    refused += 1;
                    h.run_until_quiescent().await?;
                }
                Err(e) => return Err(e.into()),
            }
            assert!(refused < 20, "the drain makes progress");
        }
        assert!(healthy(&pods, "db").await? >= 2, "an eviction never leaves fewer than minAvailable healthy pods");
        // Evicting the next pod at once would break the budget: the API refuses.
        if let Some(next) = originals.iter().skip_while(|n| *n != name).nth(1) {
            let e = pods.evict(next, &DeleteParams::default()).await.expect_err("a second eviction before the replacement is ready");
            assert_eq!(e.code(), 429, "{e}");
            assert!(healthy(&pods, "db").await? >= 2);
        }
        h.run_until_quiescent().await?;
        assert_eq!(healthy(&pods, "db").await?, 3, "the ReplicaSet replaced the evicted pod");
    }
    let left: Vec<String> =
        pods.list(&ListParams::default().labels("app=db")).await?.items.into_iter().filter_map(|p| p.metadata.name).collect();
    assert!(left.iter().all(|n| !originals.contains(n)), "every original pod was evicted: {left:?}");
    assert_eq!(numbers(&pdbs, "db").await?, (Some(3), Some(2), Some(3), Some(1), yes()));
    let status = pdbs.get("db").await?.status.unwrap_or_default();
    assert!(status.disrupted_pods.unwrap_or_default().is_empty(), "entries of deleted pods are dropped");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn an_empty_selector_covers_every_pod_of_the_namespace_for_status_and_eviction() -> Res {
    let h = harness(&["disruption"]);
    let c = h.client();
    let pods = Api::<Pod>::namespaced(c.clone(), "default");
    pods.create(&bare_pod("a", "one"), &PostParams::default()).await?;
    pods.create(&bare_pod("b", "two"), &PostParams::default()).await?;
    let pdbs = Api::<PodDisruptionBudget>::namespaced(c.clone(), "default");
    let mut all = pdb("all", "any", Some(IntOrString::Int(2)), None);
    if let Some(spec) = all.spec.as_mut() {
        spec.selector = Some(LabelSelector::default());
    }
    pdbs.create(&all, &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    assert_eq!(numbers(&pdbs, "all").await?, (Some(2), Some(2), Some(2), Some(0), no("InsufficientPods")));
    let e = pods.evict("a", &DeleteParams::default()).await.expect_err("both pods are needed");
    assert_eq!(e.code(), 429);
    pdbs.patch("all", &Patch::Merge(serde_json::json!({"spec": {"minAvailable": 1}})), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    assert_eq!(numbers(&pdbs, "all").await?, (Some(2), Some(1), Some(2), Some(1), yes()));
    pods.evict("a", &DeleteParams::default()).await?;
    let e = pods.evict("b", &DeleteParams::default()).await.expect_err("the budget is spent");
    assert_eq!(e.code(), 429);
    h.run_until_quiescent().await?;
    assert_eq!(numbers(&pdbs, "all").await?, (Some(1), Some(1), Some(1), Some(0), no("InsufficientPods")));
    Ok(())
}
