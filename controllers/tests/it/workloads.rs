//! ReplicaSet and Deployment controllers.

use crate::support::*;
use bosun_controllers::builtin::deployment::{POD_TEMPLATE_HASH, REVISION};
use bosun_controllers::builtin::{pod_is_active, pod_is_ready};
use bosun_controllers::harness::Verb;
use bosun_core::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

async fn active_pods(api: &Api<Pod>) -> Vec<Pod> {
    api.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default().into_iter().filter(pod_is_active).collect()
}

#[tokio::test(start_paused = true)]
async fn a_replicaset_creates_its_pods_and_replaces_one_deleted_by_hand() -> Result<(), Box<dyn std::error::Error>> {
    let h = harness(&["replicaset"]);
    let rs_api = Api::<ReplicaSet>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    rs_api.create(&replicaset("web", "web", 3), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    let list = active_pods(&pods).await;
    assert_eq!(list.len(), 3);
    let status = rs_api.get("web").await?.status.unwrap_or_default();
    assert_eq!((status.replicas, status.ready_replicas, status.available_replicas), (3, Some(3), Some(3)));
    pods.delete(list[0].metadata.name.as_deref().unwrap_or_default(), &DeleteParams::default()).await?;
    h.run_until_quiescent().await?;
    let after = active_pods(&pods).await;
    assert_eq!(after.len(), 3, "the deleted pod is replaced");
    assert!(after.iter().all(|p| p.metadata.name != list[0].metadata.name));
    Ok(())
}

/// Watches pods and records the largest pod count and the smallest available count seen.
struct Monitor {
    max_total: Arc<AtomicUsize>,
    min_available: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl Monitor {
    async fn start(h: &bosun_controllers::Harness) -> Self {
        let informer = h.informers().all::<Pod>();
        informer.wait_ready().await;
        let max_total = Arc::new(AtomicUsize::new(0));
        let min_available = Arc::new(AtomicUsize::new(usize::MAX));
        let (mx, mn) = (max_total.clone(), min_available.clone());
        let mut changes = informer.subscribe();
        let store = informer.store().clone();
        let task = tokio::spawn(async move {
            loop {
                let pods: Vec<_> = store.list().into_iter().filter(|p| pod_is_active(p)).collect();
                let available = pods.iter().filter(|p| pod_is_ready(p)).count();
                mx.fetch_max(pods.len(), Ordering::SeqCst);
                mn.fetch_min(available, Ordering::SeqCst);
                if changes.next().await.is_none() {
                    break;
                }
            }
        });
        Self { max_total, min_available, _task: task }
    }
}

async fn set_image(api: &Api<Deployment>, name: &str, image: &str) -> Result<(), bosun_core::Error> {
    let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": image}]}}}});
    api.patch(name, &Patch::Strategic(patch), &PatchParams::default()).await.map(drop)
}

fn images(pods: &[Pod]) -> Vec<String> {
    let mut v: Vec<String> =
        pods.iter().filter_map(|p| p.spec.as_ref().and_then(|s| s.containers.first()).and_then(|c| c.image.clone())).collect();
    v.dedup();
    v
}

#[tokio::test(start_paused = true)]
async fn a_rolling_update_stays_within_max_surge_and_max_unavailable() -> Result<(), Box<dyn std::error::Error>> {
    let h = harness(&["replicaset", "deployment"]);
    let deploys = Api::<Deployment>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    deploys.create(&deployment("web", 10, 3, 2), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    assert_eq!(active_pods(&pods).await.len(), 10);
    let monitor = Monitor::start(&h).await;
    set_image(&deploys, "web", "web:2").await?;
    h.run_until_quiescent().await?;
    let max_total = monitor.max_total.load(Ordering::SeqCst);
    let min_available = monitor.min_available.load(Ordering::SeqCst);
    assert!(max_total <= 13, "at most replicas + maxSurge pods at any step, saw {max_total}");
    assert!(min_available >= 8, "at least replicas - maxUnavailable available at any step, saw {min_available}");
    assert!(max_total > 10, "the rollout surged ({max_total})");
    let now = active_pods(&pods).await;
    assert_eq!(now.len(), 10);
    assert_eq!(images(&now), ["web:2"]);
    let d = deploys.get("web").await?;
    let status = d.status.clone().unwrap_or_default();
    assert_eq!(status.observed_generation, d.metadata.generation);
    assert_eq!((status.replicas, status.updated_replicas, status.available_replicas), (Some(10), Some(10), Some(10)));
    let progressing = status.conditions.unwrap_or_default().into_iter().find(|c| c.type_.as_deref() == Some("Progressing"));
    assert_eq!(progressing.and_then(|c| c.reason).as_deref(), Some("NewReplicaSetAvailable"));
    assert_eq!(d.metadata.annotations.unwrap_or_default().get(REVISION).map(String::as_str), Some("2"));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_deployment_scaled_during_a_rollout_ends_right() -> Result<(), Box<dyn std::error::Error>> {
    let h = harness(&["replicaset", "deployment"]);
    let deploys = Api::<Deployment>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    let sets = Api::<ReplicaSet>::namespaced(h.client(), "default");
    deploys.create(&deployment("web", 10, 3, 2), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    set_image(&deploys, "web", "web:2").await?;
    // Let the rollout begin, then scale in the middle of it.
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    let scale = serde_json::json!({"spec": {"replicas": 15}});
    deploys.patch("web", &Patch::Merge(scale), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    let now = active_pods(&pods).await;
    assert_eq!(now.len(), 15);
    assert_eq!(images(&now), ["web:2"]);
    let mut replicas: Vec<i32> = sets.list(&ListParams::default()).await?.items.iter().map(|rs| rs.spec.replicas.unwrap_or(0)).collect();
    replicas.sort();
    assert_eq!(replicas, [0, 15]);
    // And down again during another rollout.
    set_image(&deploys, "web", "web:3").await?;
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    deploys.patch("web", &Patch::Merge(serde_json::json!({"spec": {"replicas": 4}})), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    let now = active_pods(&pods).await;
    assert_eq!((now.len(), images(&now)), (4, vec!["web:3".to_owned()]));
    let status = deploys.get("web").await?.status.unwrap_or_default();
    assert_eq!((status.replicas, status.updated_replicas, status.available_replicas), (Some(4), Some(4), Some(4)));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn rollback_reuses_the_old_replicaset_as_the_newest_revision() -> Result<(), Box<dyn std::error::Error>> {
    let h = harness(&["replicaset", "deployment"]);
    let deploys = Api::<Deployment>::namespaced(h.client(), "default");
    let sets = Api::<ReplicaSet>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    deploys.create(&deployment("web", 4, 1, 1), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    set_image(&deploys, "web", "web:2").await?;
    h.run_until_quiescent().await?;
    // What `kubectl rollout undo` does: copy revision 1's template (without the hash label) back.
    let all = sets.list(&ListParams::default()).await?.items;
    let first = all.iter().find(|rs| rs.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)).map(String::as_str) == Some("1"));
    let first = first.ok_or("no revision 1")?;
    let mut tmpl = first.spec.template.clone().unwrap_or_default();
    if let Some(l) = tmpl.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        l.remove(POD_TEMPLATE_HASH);
    }
    deploys.patch("web", &Patch::Merge(serde_json::json!({"spec": {"template": tmpl}})), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    let all = sets.list(&ListParams::default()).await?.items;
    assert_eq!(all.len(), 2, "no third ReplicaSet: the old one is reused");
    let reused = all.iter().find(|rs| rs.metadata.uid == first.metadata.uid).ok_or("reused set gone")?;
    let rev = reused.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)).cloned();
    assert_eq!(rev.as_deref(), Some("3"));
    assert_eq!(reused.spec.replicas, Some(4));
    assert_eq!(images(&active_pods(&pods).await), ["web:1"]);
    let d = deploys.get("web").await?;
    assert_eq!(d.metadata.annotations.unwrap_or_default().get(REVISION).map(String::as_str), Some("3"));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn slow_writes_do_not_make_a_replicaset_overshoot() -> Result<(), Box<dyn std::error::Error>> {
    let h = harness(&["replicaset"]);
    h.faults().slow_writes(std::time::Duration::from_millis(200));
    let rs_api = Api::<ReplicaSet>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    rs_api.create(&replicaset("web", "web", 7), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    assert_eq!(h.faults().calls(Verb::Create, "pods"), 7, "exactly the pods needed were created");
    assert_eq!(active_pods(&pods).await.len(), 7);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_replicaset_adopts_matching_orphans_and_releases_pods_that_stop_matching() -> Result<(), Box<dyn std::error::Error>> {
    let h = harness(&["replicaset"]);
    let rs_api = Api::<ReplicaSet>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    pods.create(&bare_pod("orphan", "web"), &PostParams::default()).await?;
    rs_api.create(&replicaset("web", "web", 2), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    let orphan = pods.get("orphan").await?;
    let owner = bosun_core::meta::controller_of(&orphan.metadata).map(|r| r.name.clone());
    assert_eq!(owner.as_deref(), Some("web"));
    assert_eq!(active_pods(&pods).await.len(), 2, "the orphan counts: one pod created, not two");
    let relabel = serde_json::json!({"metadata": {"labels": {"app": "other"}}});
    pods.patch("orphan", &Patch::Merge(relabel), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    let released = pods.get("orphan").await?;
    assert!(bosun_core::meta::controller_of(&released.metadata).is_none(), "released");
    let owned = active_pods(&pods)
        .await
        .into_iter()
        .filter(|p| p.metadata.labels.as_ref().and_then(|l| l.get("app")).map(String::as_str) == Some("web"))
        .count();
    assert_eq!(owned, 2, "a replacement was created");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn conflicts_dropped_watches_and_gone_watches_still_converge() -> Result<(), Box<dyn std::error::Error>> {
    let h = harness(&["replicaset", "deployment"]);
    let deploys = Api::<Deployment>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    deploys.create(&deployment("web", 6, 2, 1), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    h.faults().fail(Verb::Patch, Some("replicasets"), 3, bosun_core::Error::conflict("injected"));
    h.faults().conflict_on_update(2);
    set_image(&deploys, "web", "web:2").await?;
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    h.faults().gone_on_watch(2);
    h.faults().drop_watches();
    h.run_until_quiescent().await?;
    let now = active_pods(&pods).await;
    assert_eq!((now.len(), images(&now)), (6, vec!["web:2".to_owned()]));
    assert!(h.metrics().controller("deployment").errors() >= 1, "the injected conflicts surfaced as errors and were retried");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn recreate_removes_every_old_pod_before_starting_new_ones() -> Result<(), Box<dyn std::error::Error>> {
    let h = harness(&["replicaset", "deployment"]);
    let deploys = Api::<Deployment>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    let mut d = deployment("web", 4, 1, 1);
    d.spec.strategy = Some(k8s_openapi::api::apps::v1::DeploymentStrategy { type_: Some("Recreate".into()), rolling_update: None });
    deploys.create(&d, &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    let informer = h.informers().all::<Pod>();
    let store = informer.store().clone();
    let mut changes = informer.subscribe();
    let mixed = Arc::new(AtomicUsize::new(0));
    let seen = mixed.clone();
    let watcher = tokio::spawn(async move {
        while changes.next().await.is_some() {
            let live: Vec<_> = store.list().into_iter().filter(|p| pod_is_active(p)).collect();
            if images(&live.iter().map(|p| (**p).clone()).collect::<Vec<_>>()).len() > 1 {
                seen.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    set_image(&deploys, "web", "web:2").await?;
    h.run_until_quiescent().await?;
    watcher.abort();
    assert_eq!(mixed.load(Ordering::SeqCst), 0, "old and new pods never run side by side");
    let now = active_pods(&pods).await;
    assert_eq!((now.len(), images(&now)), (4, vec!["web:2".to_owned()]));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_paused_deployment_does_not_roll_out_until_resumed() -> Result<(), Box<dyn std::error::Error>> {
    let h = harness(&["replicaset", "deployment"]);
    let deploys = Api::<Deployment>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    deploys.create(&deployment("web", 3, 1, 0), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    deploys.patch("web", &Patch::Merge(serde_json::json!({"spec": {"paused": true}})), &PatchParams::default()).await?;
    set_image(&deploys, "web", "web:2").await?;
    h.run_until_quiescent().await?;
    assert_eq!(images(&active_pods(&pods).await), ["web:1"], "paused: no rollout");
    let progressing = deploys.get("web").await?.status.unwrap_or_default().conditions.unwrap_or_default();
    let reason = progressing.iter().find(|c| c.type_.as_deref() == Some("Progressing")).and_then(|c| c.reason.clone());
    assert_eq!(reason.as_deref(), Some("DeploymentPaused"));
    deploys.patch("web", &Patch::Merge(serde_json::json!({"spec": {"paused": false}})), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    let now = active_pods(&pods).await;
    assert_eq!((now.len(), images(&now)), (3, vec!["web:2".to_owned()]));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn old_replicasets_beyond_the_history_limit_are_deleted() -> Result<(), Box<dyn std::error::Error>> {
    let h = harness(&["replicaset", "deployment"]);
    let deploys = Api::<Deployment>::namespaced(h.client(), "default");
    let sets = Api::<ReplicaSet>::namespaced(h.client(), "default");
    let mut d = deployment("web", 2, 1, 0);
    d.spec.revision_history_limit = Some(2);
    deploys.create(&d, &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    for i in 2..=6 {
        set_image(&deploys, "web", &format!("web:{i}")).await?;
        h.run_until_quiescent().await?;
    }
    let mut revisions: Vec<i64> = sets
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter_map(|rs| rs.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)).and_then(|r| r.parse().ok()))
        .collect();
    revisions.sort();
    assert_eq!(revisions, [4, 5, 6], "the current revision and the two newest old ones stay");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_stuck_rollout_reports_progress_deadline_exceeded() -> Result<(), Box<dyn std::error::Error>> {
    // No kubelet: pods never become ready, so the rollout cannot finish.
    let mut h = bosun_controllers::Harness::new(server());
    h.start_builtins(bosun_controllers::ManagerConfig::default().only(&["replicaset", "deployment"]));
    let deploys = Api::<Deployment>::namespaced(h.client(), "default");
    let mut d = deployment("web", 2, 1, 0);
    d.spec.progress_deadline_seconds = Some(60);
    deploys.create(&d, &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    tokio::time::sleep(std::time::Duration::from_secs(61)).await;
    h.run_until_quiescent().await?;
    let conditions = deploys.get("web").await?.status.unwrap_or_default().conditions.unwrap_or_default();
    let p = conditions.iter().find(|c| c.type_.as_deref() == Some("Progressing")).ok_or("no Progressing condition")?;
    assert_eq!((p.status.as_deref(), p.reason.as_deref()), (Some("False"), Some("ProgressDeadlineExceeded")));
    let a = conditions.iter().find(|c| c.type_.as_deref() == Some("Available")).ok_or("no Available condition")?;
    assert_eq!(a.status.as_deref(), Some("False"));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn min_ready_seconds_delays_availability() -> Result<(), Box<dyn std::error::Error>> {
    let h = harness(&["replicaset"]);
    let rs_api = Api::<ReplicaSet>::namespaced(h.client(), "default");
    let mut rs = replicaset("web", "web", 2);
    rs.spec.min_ready_seconds = Some(30);
    rs_api.create(&rs, &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    let status = rs_api.get("web").await?.status.unwrap_or_default();
    assert_eq!((status.ready_replicas, status.available_replicas), (Some(2), Some(0)));
    tokio::time::sleep(std::time::Duration::from_secs(31)).await;
    h.run_until_quiescent().await?;
    let status = rs_api.get("web").await?.status.unwrap_or_default();
    assert_eq!(status.available_replicas, Some(2));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn failed_creates_show_as_replica_failure_until_they_succeed() -> Result<(), Box<dyn std::error::Error>> {
    let h = harness(&["replicaset"]);
    h.faults().fail(Verb::Create, Some("pods"), u32::MAX, bosun_core::Error::forbidden("exceeded quota: pods"));
    let rs_api = Api::<ReplicaSet>::namespaced(h.client(), "default");
    rs_api.create(&replicaset("web", "web", 2), &PostParams::default()).await?;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let conditions = rs_api.get("web").await?.status.unwrap_or_default().conditions.unwrap_or_default();
    let failure = conditions.iter().find(|c| c.type_.as_deref() == Some("ReplicaFailure")).ok_or("no ReplicaFailure")?;
    assert_eq!(failure.reason.as_deref(), Some("FailedCreate"));
    let before = h.faults().calls(Verb::Create, "pods");
    assert!(before < 40, "failures back off rather than hammer the server ({before} creates in 2 s)");
    h.faults().clear();
    h.run_until_quiescent().await?;
    let status = rs_api.get("web").await?.status.unwrap_or_default();
    assert_eq!(status.ready_replicas, Some(2));
    assert!(status.conditions.unwrap_or_default().iter().all(|c| c.type_.as_deref() != Some("ReplicaFailure")));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn scaling_mid_rollout_spreads_the_change_over_old_and_new_sets() -> Result<(), Box<dyn std::error::Error>> {
    let mut h = harness(&["replicaset", "deployment"]);
    let deploys = Api::<Deployment>::namespaced(h.client(), "default");
    let sets = Api::<ReplicaSet>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    deploys.create(&deployment("web", 10, 3, 2), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    // New pods never get ready while this fault holds: the rollout stalls half-way, at 8 old
    // (10 - maxUnavailable) and 5 new (13 - 8) pods.
    h.faults().fail(Verb::Patch, Some("pods"), u32::MAX, bosun_core::Error::internal("kubelet down"));
    set_image(&deploys, "web", "web:2").await?;
    h.run_until_quiescent().await?;
    let sizes = |list: Vec<ReplicaSet>| {
        let mut by_image: Vec<(String, i32)> = list
            .iter()
            .map(|rs| {
                let image = rs
                    .spec
                    .template
                    .as_ref()
                    .and_then(|t| t.spec.as_ref())
                    .and_then(|s| s.containers.first())
                    .and_then(|c| c.image.clone());
                (image.unwrap_or_default(), rs.spec.replicas.unwrap_or(0))
            })
            .collect();
        by_image.sort();
        by_image
    };
    assert_eq!(sizes(sets.list(&ListParams::default()).await?.items), [("web:1".to_owned(), 8), ("web:2".to_owned(), 5)]);
    deploys.patch("web", &Patch::Merge(serde_json::json!({"spec": {"replicas": 20}})), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    let after = sizes(sets.list(&ListParams::default()).await?.items);
    assert_eq!(after, [("web:1".to_owned(), 14), ("web:2".to_owned(), 9)], "both sets grew in proportion");
    assert!(after[0].1 + after[1].1 <= 23, "within replicas + maxSurge: {after:?}");
    h.faults().clear();
    drop(h.informers().all::<Pod>());
    h.start_kubelet();
    h.run_until_quiescent().await?;
    let now = active_pods(&pods).await;
    assert_eq!((now.len(), images(&now)), (20, vec!["web:2".to_owned()]));
    Ok(())
}
