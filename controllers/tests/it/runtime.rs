//! The runtime with user code: a custom reconciler, finalizers, readiness, leader election, events.

use crate::support::*;
use bosun_controllers::Harness;
use bosun_controllers::runtime::{Action, EventData, FinalizerEvent, LeaderElector, LeaseConfig, Recorder, backoff_policy, finalizer};
use bosun_core::watch::ReflectorState;
use bosun_core::{Api, DeleteParams, ListParams, PostParams};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

struct Ctx {
    api: Api<ConfigMap>,
    runs: AtomicUsize,
    cleanups: AtomicUsize,
    fail_first: AtomicUsize,
}

#[derive(Debug, thiserror::Error)]
enum Oops {
    #[error("injected failure")]
    Injected,
    #[error(transparent)]
    Api(#[from] bosun_core::Error),
}

async fn reconcile(cm: Arc<ConfigMap>, ctx: Arc<Ctx>) -> Result<Action, Oops> {
    ctx.runs.fetch_add(1, Ordering::SeqCst);
    if ctx.fail_first.load(Ordering::SeqCst) > 0 {
        ctx.fail_first.fetch_sub(1, Ordering::SeqCst);
        return Err(Oops::Injected);
    }
    let api = ctx.api.clone();
    let cleanups = &ctx.cleanups;
    let result = finalizer(&api, "example.com/cleanup", cm, |event| async move {
        match event {
            FinalizerEvent::Apply(_) => Ok::<_, Oops>(Action::await_change()),
            FinalizerEvent::Cleanup(_) => {
                cleanups.fetch_add(1, Ordering::SeqCst);
                Ok(Action::await_change())
            }
        }
    })
    .await;
    result.map_err(|e| match e {
        bosun_controllers::runtime::FinalizerError::Callback(e) => e,
        other => Oops::Api(bosun_core::Error::internal(other.to_string())),
    })
}

fn config_map(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some("default".into()), ..ObjectMeta::default() },
        ..ConfigMap::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_custom_controller_retries_errors_and_runs_its_finalizer() -> Result<(), Box<dyn std::error::Error>> {
    let mut h = Harness::new(server());
    let api = Api::<ConfigMap>::namespaced(h.client(), "default");
    let ctx = Arc::new(Ctx { api: api.clone(), runs: AtomicUsize::new(0), cleanups: AtomicUsize::new(0), fail_first: AtomicUsize::new(3) });
    let run = h.controller(Api::<ConfigMap>::all(h.client())).name("custom").run(reconcile, backoff_policy, ctx.clone());
    h.spawn(run);
    api.create(&config_map("a"), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    let cm = api.get("a").await?;
    assert_eq!(cm.metadata.finalizers, Some(vec!["example.com/cleanup".to_owned()]));
    let m = h.metrics().controller("custom");
    assert_eq!(m.errors(), 3, "three injected failures, each retried");
    assert!(m.reconciles() >= 5);
    api.delete("a", &DeleteParams::default()).await?;
    h.run_until_quiescent().await?;
    assert_eq!(ctx.cleanups.load(Ordering::SeqCst), 1);
    assert!(api.get_opt("a").await?.is_none(), "the finalizer was removed and the object went");
    assert!(h.metrics().render().contains("bosun_controller_reconcile_errors_total{controller=\"custom\"} 3"));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_missing_kind_shows_in_readiness_instead_of_a_silent_hang() -> Result<(), Box<dyn std::error::Error>> {
    let mut h = Harness::new(server());
    let missing = bosun_core::ApiResource::new("example.com", "v1", "Widget", "widgets", true);
    let api = Api::<bosun_core::DynamicObject>::dynamic(h.client(), missing, None);
    async fn noop(_: Arc<bosun_core::DynamicObject>, _: Arc<()>) -> Result<Action, bosun_core::Error> {
        Ok(Action::await_change())
    }
    let run = h.controller(api).name("widgets").run(noop, backoff_policy, Arc::new(()));
    h.spawn(run);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let not_ready = h.metrics().not_ready();
    assert_eq!(not_ready.len(), 1, "{not_ready:?}");
    assert!(matches!(not_ready[0].2, ReflectorState::KindMissing { .. }), "{not_ready:?}");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn one_leader_at_a_time_and_a_successor_after_the_lease_expires() -> Result<(), Box<dyn std::error::Error>> {
    let client = server();
    let a = LeaderElector::new(client.clone(), "kube-system", "bosun-controllers", "a");
    let b = LeaderElector::new(client.clone(), "kube-system", "bosun-controllers", "b");
    let ta = a.try_acquire_or_renew().await?.ok_or("a should lead")?;
    assert!(b.try_acquire_or_renew().await?.is_none(), "b must wait while a renews");
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(a.try_acquire_or_renew().await?, Some(ta.clone()), "a renews with the same token");
    assert!(b.try_acquire_or_renew().await?.is_none());
    // a stops renewing: its token lapses after the renew deadline, b takes over after the lease duration.
    tokio::time::advance(Duration::from_secs(11)).await;
    assert!(!a.check(&ta), "a deposed leader's token no longer checks out");
    assert!(b.try_acquire_or_renew().await?.is_none(), "b first observes the record");
    tokio::time::advance(LeaseConfig::default().lease_duration).await;
    let tb = b.try_acquire_or_renew().await?.ok_or("b should lead")?;
    assert!(tb > ta, "the fencing token grows with each transition");
    assert!(a.try_acquire_or_renew().await?.is_none());
    b.release().await?;
    assert!(a.try_acquire_or_renew().await?.is_some(), "a released lease is taken at once");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn repeated_events_fold_into_a_series() -> Result<(), Box<dyn std::error::Error>> {
    let client = server();
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "default");
    let cm = cms.create(&config_map("x"), &PostParams::default()).await?;
    let recorder = Recorder::new(client.clone(), "test-controller", "test-1");
    let regarding = bosun_controllers::runtime::events::object_reference(&cm);
    let data = EventData::warning("SyncFailed", "Sync", "could not sync");
    for _ in 0..4 {
        recorder.publish(&regarding, &data).await?;
    }
    recorder.publish(&regarding, &EventData::normal("Synced", "Sync", "ok")).await?;
    let events = Api::<Event>::namespaced(client, "default").list(&ListParams::default()).await?.items;
    assert_eq!(events.len(), 2);
    let failed = events.iter().find(|e| e.reason.as_deref() == Some("SyncFailed")).ok_or("no event")?;
    assert_eq!(failed.series.as_ref().map(|s| s.count), Some(4));
    assert_eq!(failed.reporting_controller.as_deref(), Some("test-controller"));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn only_the_elected_manager_runs_controllers_and_a_standby_takes_over() -> Result<(), Box<dyn std::error::Error>> {
    use bosun_controllers::{ControllerManager, ManagerConfig, Metrics};
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use k8s_openapi::api::core::v1::Pod;
    let client = server();
    let (ma, mb) = (Metrics::new(), Metrics::new());
    let config = |id: &str| ManagerConfig::default().only(&["replicaset"]).leader_election("kube-system", "bosun-controller-manager", id);
    let a = tokio::spawn(ControllerManager::new(client.clone()).metrics(&ma).config(config("a")).run());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let b = tokio::spawn(ControllerManager::new(client.clone()).metrics(&mb).config(config("b")).run());
    let sets = Api::<ReplicaSet>::namespaced(client.clone(), "default");
    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    sets.create(&replicaset("web", "web", 2), &PostParams::default()).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(pods.list(&ListParams::default()).await?.items.len(), 2);
    assert!(ma.controller("replicaset").reconciles() > 0, "the leader reconciles");
    assert_eq!(mb.controller("replicaset").reconciles(), 0, "the standby does not");
    a.abort();
    tokio::time::sleep(Duration::from_secs(40)).await;
    let scale = serde_json::json!({"spec": {"replicas": 3}});
    sets.patch("web", &bosun_core::Patch::Merge(scale), &bosun_core::PatchParams::default()).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(pods.list(&ListParams::default()).await?.items.len(), 3, "the standby took over");
    assert!(mb.controller("replicaset").reconciles() > 0);
    b.abort();
    Ok(())
}
