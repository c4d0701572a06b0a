//! The StatefulSet controller: ordered and parallel pod management, rolling updates with
//! partitions, OnDelete, revisions and rollback, claims and their retention policy.

use crate::support::*;
use bosun_controllers::Harness;
use bosun_controllers::builtin::statefulset::{REVISION_LABEL, running_and_ready};
use bosun_controllers::harness::kubelet;
use bosun_core::{Api, Client, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{
    ControllerRevision, RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PersistentVolumeClaimSpec, Pod, VolumeResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Res = Result<(), Box<dyn std::error::Error>>;

fn statefulset(name: &str, replicas: i32) -> StatefulSet {
    StatefulSet {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some("default".into()), ..ObjectMeta::default() },
        spec: StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(format!("{name}-headless")),
            selector: LabelSelector { match_labels: Some(labels(name)), ..LabelSelector::default() },
            template: template(name, "web:1"),
            ..StatefulSetSpec::default()
        },
        status: None,
    }
}

fn with_claims(mut set: StatefulSet, when_deleted: &str, when_scaled: &str) -> StatefulSet {
    set.spec.volume_claim_templates = Some(vec![PersistentVolumeClaim {
        metadata: ObjectMeta { name: Some("data".into()), ..ObjectMeta::default() },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some([("storage".to_owned(), Quantity("1Gi".into()))].into()),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }]);
    set.spec.persistent_volume_claim_retention_policy = Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
        when_deleted: Some(when_deleted.into()),
        when_scaled: Some(when_scaled.into()),
    });
    set
}

fn image_patch(image: &str) -> Patch {
    Patch::Strategic(serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": image}]}}}}))
}

fn image(pod: &Pod) -> String {
    pod.spec.as_ref().and_then(|s| s.containers.first()).and_then(|c| c.image.clone()).unwrap_or_default()
}

/// Every pod event of the namespace, in order, from before the test acts.
#[derive(Clone, Default)]
struct PodLog {
    events: Arc<Mutex<Vec<(&'static str, Pod)>>>,
}

impl PodLog {
    async fn start(client: Arc<dyn Client>) -> Result<(Self, tokio::task::JoinHandle<()>), bosun_core::Error> {
        let log = Self::default();
        let mut stream = Api::<Pod>::namespaced(client, "default").watch(&WatchParams::default()).await?;
        let events = log.events.clone();
        let task = tokio::spawn(async move {
            while let Some(Ok(event)) = stream.next().await {
                let entry = match event {
                    WatchEvent::Added(p) => ("added", p),
                    WatchEvent::Modified(p) => ("modified", p),
                    WatchEvent::Deleted(p) => ("deleted", p),
                    _ => continue,
                };
                events.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(entry);
            }
        });
        Ok((log, task))
    }

    /// Replays the events: `check(event, pod, state after the event)` for each one.
    fn replay(&self, mut check: impl FnMut(&str, &Pod, &BTreeMap<String, Pod>)) {
        let events = self.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let mut state: BTreeMap<String, Pod> = BTreeMap::new();
        for (kind, pod) in &events {
            let name = pod.metadata.name.clone().unwrap_or_default();
            if *kind == "deleted" {
                state.remove(&name);
            } else {
                state.insert(name, pod.clone());
            }
            check(kind, pod, &state);
        }
    }

    /// The pods in the order they began to be deleted.
    fn deletion_order(&self) -> Vec<String> {
        let mut order: Vec<String> = Vec::new();
        self.replay(|kind, pod, _| {
            let name = pod.metadata.name.clone().unwrap_or_default();
            if (kind == "deleted" || pod.metadata.deletion_timestamp.is_some()) && order.last() != Some(&name) && !order.contains(&name) {
                order.push(name);
            }
        });
        order
    }

    fn clear(&self) {
        self.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }
}

/// A kubelet that takes `delay` of virtual time to make each new pod ready, and removes
/// terminating pods at once.
fn slow_kubelet(client: Arc<dyn Client>, delay: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let api = Api::<Pod>::namespaced(client, "default");
        let Ok(mut stream) = api.watch(&WatchParams::default()).await else { return };
        let mut ip = 1;
        while let Some(Ok(event)) = stream.next().await {
            let (WatchEvent::Added(pod) | WatchEvent::Modified(pod)) = event else { continue };
            let name = pod.metadata.name.clone().unwrap_or_default();
            let api = api.clone();
            if pod.metadata.deletion_timestamp.is_some() {
                let _ = api.delete(&name, &DeleteParams::default().grace_period(0)).await;
            } else if !kubelet::is_ready(&pod) && pod.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Running") {
                ip += 1;
                let status = kubelet::ready_status(ip);
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = api.patch_status(&name, &Patch::Merge(status), &PatchParams::default()).await;
                });
            }
        }
    })
}

async fn pods_by_name(client: Arc<dyn Client>) -> Result<BTreeMap<String, Pod>, bosun_core::Error> {
    let list = Api::<Pod>::namespaced(client, "default").list(&ListParams::default()).await?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| (p.metadata.name.clone().unwrap_or_default(), p))
        .collect())
}

fn names(pods: &BTreeMap<String, Pod>) -> Vec<&str> {
    pods.keys().map(String::as_str).collect()
}

async fn ready_count(client: Arc<dyn Client>) -> usize {
    pods_by_name(client).await.map(|p| p.values().filter(|p| running_and_ready(p)).count()).unwrap_or(0)
}

/// Waits (in virtual time) until `n` pods of the namespace are running and ready.
async fn until_ready(h: &Harness, n: usize) -> Res {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while ready_count(h.client()).await != n {
        assert!(tokio::time::Instant::now() < deadline, "never got {n} ready pods: {:?}", names(&pods_by_name(h.client()).await?));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.run_until_quiescent().await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn ordered_ready_never_creates_a_pod_before_its_predecessor_is_ready_and_scales_down_in_reverse() -> Res {
    let mut h = Harness::new(server());
    h.start_builtins(bosun_controllers::ManagerConfig::default().only(&["statefulset"]));
    let (log, _watch) = PodLog::start(h.client()).await?;
    let _kubelet = slow_kubelet(h.client(), Duration::from_secs(5));
    let sets = Api::<StatefulSet>::namespaced(h.client(), "default");
    sets.create(&statefulset("web", 3), &PostParams::default()).await?;
    until_ready(&h, 3).await?;

    let pods = pods_by_name(h.client()).await?;
    assert_eq!(names(&pods), ["web-0", "web-1", "web-2"]);
    let web1 = &pods["web-1"];
    let spec = web1.spec.clone().unwrap_or_default();
    assert_eq!((spec.hostname.as_deref(), spec.subdomain.as_deref()), (Some("web-1"), Some("web-headless")));
    let l = web1.metadata.labels.clone().unwrap_or_default();
    assert_eq!(l.get("statefulset.kubernetes.io/pod-name").map(String::as_str), Some("web-1"));
    assert_eq!(l.get("apps.kubernetes.io/pod-index").map(String::as_str), Some("1"));
    let set = sets.get("web").await?;
    let status = set.status.clone().unwrap_or_default();
    assert_eq!(l.get(REVISION_LABEL), status.update_revision.as_ref());

    // On every observed state: a pod exists only if its predecessor is running and ready.
    let mut states = 0;
    log.replay(|_, _, state| {
        states += 1;
        for name in state.keys() {
            let n: i32 = name.trim_start_matches("web-").parse().unwrap_or(0);
            if n > 0 {
                let prev = state.get(&format!("web-{}", n - 1));
                assert!(prev.is_some_and(running_and_ready), "{name} exists while web-{} is not ready: {:?}", n - 1, state.keys());
            }
        }
    });
    assert!(states >= 6, "the log saw the creations and readiness changes ({states} events)");
    assert_eq!(
        (status.replicas, status.ready_replicas, status.available_replicas, status.current_replicas, status.updated_replicas),
        (3, Some(3), Some(3), Some(3), Some(3))
    );
    assert_eq!(status.observed_generation, set.metadata.generation);
    assert_eq!(status.current_revision, status.update_revision);

    // Scale down to 1: web-2 goes first and is gone before web-1 starts terminating.
    log.clear();
    sets.patch("web", &Patch::Merge(serde_json::json!({"spec": {"replicas": 1}})), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    assert_eq!(names(&pods_by_name(h.client()).await?), ["web-0"]);
    assert_eq!(log.deletion_order(), ["web-2", "web-1"]);
    log.replay(|_, pod, state| {
        if pod.metadata.name.as_deref() == Some("web-1") && pod.metadata.deletion_timestamp.is_some() {
            assert!(!state.contains_key("web-2"), "web-1 terminates only after web-2 is gone");
        }
    });
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn ordered_ready_waits_on_an_unready_pod_and_parallel_creates_all_at_once() -> Res {
    // No kubelet: pods never become ready.
    let mut h = Harness::new(server());
    h.start_builtins(bosun_controllers::ManagerConfig::default().only(&["statefulset"]));
    let sets = Api::<StatefulSet>::namespaced(h.client(), "default");
    sets.create(&statefulset("ordered", 3), &PostParams::default()).await?;
    let mut parallel = statefulset("par", 3);
    parallel.spec.pod_management_policy = Some("Parallel".into());
    sets.create(&parallel, &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    assert_eq!(names(&pods_by_name(h.client()).await?), ["ordered-0", "par-0", "par-1", "par-2"]);
    let status = sets.get("par").await?.status.unwrap_or_default();
    assert_eq!((status.replicas, status.ready_replicas), (3, Some(0)));

    // Parallel scale-down removes every condemned pod without waiting.
    sets.patch("par", &Patch::Merge(serde_json::json!({"spec": {"replicas": 0}})), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    let left = Api::<Pod>::namespaced(h.client(), "default").list(&ListParams::default()).await?.items;
    let par: Vec<_> = left.iter().filter(|p| p.metadata.name.as_deref().is_some_and(|n| n.starts_with("par-"))).collect();
    // Unscheduled pods may go at once; none is left running.
    assert!(par.iter().all(|p| p.metadata.deletion_timestamp.is_some()), "every parallel pod is gone or terminating");
    assert_eq!(names(&pods_by_name(h.client()).await?), ["ordered-0"], "the ordered set still waits on its first pod");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn rolling_update_with_a_partition_updates_only_the_upper_ordinals_in_reverse() -> Res {
    let h = harness(&["statefulset"]);
    let sets = Api::<StatefulSet>::namespaced(h.client(), "default");
    let mut set = statefulset("web", 4);
    set.spec.update_strategy = Some(StatefulSetUpdateStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateStatefulSetStrategy { partition: Some(2), max_unavailable: None }),
    });
    sets.create(&set, &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    let first = sets.get("web").await?.status.unwrap_or_default();
    let (log, _watch) = PodLog::start(h.client()).await?;

    sets.patch("web", &image_patch("web:2"), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    let pods = pods_by_name(h.client()).await?;
    let images: Vec<String> = pods.values().map(image).collect();
    assert_eq!(images, ["web:1", "web:1", "web:2", "web:2"]);
    assert_eq!(log.deletion_order(), ["web-3", "web-2"]);
    // maxUnavailable 1: never two of them down at once.
    let mut seen = 0;
    log.replay(|_, _, state| {
        seen += 1;
        let up = state.values().filter(|p| running_and_ready(p) && p.metadata.deletion_timestamp.is_none()).count();
        // The first four events are the initial state arriving.
        assert!(seen < 4 || up >= 3, "at most one pod unavailable: {:?}", state.keys());
    });
    let status = sets.get("web").await?.status.unwrap_or_default();
    assert_eq!((status.updated_replicas, status.current_replicas, status.ready_replicas), (Some(2), Some(2), Some(4)));
    assert_eq!(status.current_revision, first.current_revision, "a partitioned rollout leaves the current revision");
    assert_ne!(status.update_revision, status.current_revision);
    assert_eq!(pods["web-3"].metadata.labels.as_ref().and_then(|l| l.get(REVISION_LABEL)), status.update_revision.as_ref());

    // Lowering the partition finishes the rollout, still from the top down.
    log.clear();
    let patch = serde_json::json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}});
    sets.patch("web", &Patch::Merge(patch), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    assert!(pods_by_name(h.client()).await?.values().all(|p| image(p) == "web:2"));
    assert_eq!(log.deletion_order(), ["web-1", "web-0"]);
    let status = sets.get("web").await?.status.unwrap_or_default();
    assert_eq!(status.current_revision, status.update_revision, "a finished rollout makes the update revision current");
    assert_eq!((status.updated_replicas, status.current_replicas), (Some(4), Some(4)));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn max_unavailable_replaces_several_pods_at_once() -> Res {
    let h = harness(&["statefulset"]);
    let sets = Api::<StatefulSet>::namespaced(h.client(), "default");
    let mut set = statefulset("web", 4);
    set.spec.pod_management_policy = Some("Parallel".into());
    set.spec.update_strategy = Some(StatefulSetUpdateStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateStatefulSetStrategy { partition: Some(0), max_unavailable: Some(IntOrString::Int(2)) }),
    });
    sets.create(&set, &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    let (log, _watch) = PodLog::start(h.client()).await?;
    sets.patch("web", &image_patch("web:2"), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    assert!(pods_by_name(h.client()).await?.values().all(|p| image(p) == "web:2"));
    let mut lowest = usize::MAX;
    let mut seen = 0;
    log.replay(|_, _, state| {
        seen += 1;
        if seen < 4 {
            return;
        }
        let up = state.values().filter(|p| running_and_ready(p) && p.metadata.deletion_timestamp.is_none()).count();
        lowest = lowest.min(up);
    });
    assert_eq!(lowest, 2, "two pods at a time were replaced, never more");
    assert_eq!(log.deletion_order()[..2], ["web-3", "web-2"]);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn on_delete_leaves_pods_until_they_are_deleted() -> Res {
    let h = harness(&["statefulset"]);
    let sets = Api::<StatefulSet>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    let mut set = statefulset("web", 3);
    set.spec.update_strategy = Some(StatefulSetUpdateStrategy { type_: Some("OnDelete".into()), rolling_update: None });
    sets.create(&set, &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    let before = pods_by_name(h.client()).await?;
    sets.patch("web", &image_patch("web:2"), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    let after = pods_by_name(h.client()).await?;
    assert_eq!(after.values().map(image).collect::<Vec<_>>(), ["web:1", "web:1", "web:1"]);
    let uids = |m: &BTreeMap<String, Pod>| m.values().map(|p| p.metadata.uid.clone()).collect::<Vec<_>>();
    assert_eq!(uids(&before), uids(&after), "no pod was touched");
    let status = sets.get("web").await?.status.unwrap_or_default();
    assert_eq!((status.updated_replicas, status.current_replicas), (Some(0), Some(3)));

    pods.delete("web-1", &DeleteParams::default()).await?;
    h.run_until_quiescent().await?;
    let after = pods_by_name(h.client()).await?;
    assert_eq!(after.values().map(image).collect::<Vec<_>>(), ["web:1", "web:2", "web:1"]);
    let status = sets.get("web").await?.status.unwrap_or_default();
    assert_eq!((status.updated_replicas, status.current_replicas), (Some(1), Some(2)));
    Ok(())
}

async fn claims(client: Arc<dyn Client>) -> Result<BTreeMap<String, PersistentVolumeClaim>, bosun_core::Error> {
    let list = Api::<PersistentVolumeClaim>::namespaced(client, "default").list(&ListParams::default()).await?;
    Ok(list.items.into_iter().map(|c| (c.metadata.name.clone().unwrap_or_default(), c)).collect())
}

#[tokio::test(start_paused = true)]
async fn each_ordinal_gets_a_claim_that_outlives_its_pods() -> Res {
    let h = harness(&["statefulset", "garbagecollector"]);
    let sets = Api::<StatefulSet>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    sets.create(&with_claims(statefulset("db", 2), "Retain", "Retain"), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    let before = claims(h.client()).await?;
    assert_eq!(before.keys().collect::<Vec<_>>(), ["data-db-0", "data-db-1"]);
    assert!(before.values().all(|c| c.metadata.owner_references.as_ref().is_none_or(Vec::is_empty)), "Retain: no owner");
    let label = before["data-db-0"].metadata.labels.clone().unwrap_or_default();
    assert_eq!(label.get("app").map(String::as_str), Some("db"));
    let pod = pods.get("db-1").await?;
    let volume = pod.spec.and_then(|s| s.volumes).unwrap_or_default().into_iter().find(|v| v.name == "data");
    assert_eq!(volume.and_then(|v| v.persistent_volume_claim).map(|c| c.claim_name), Some("data-db-1".into()));

    // A deleted pod comes back on the same claim.
    let old_uid = pods.get("db-0").await?.metadata.uid;
    pods.delete("db-0", &DeleteParams::default()).await?;
    h.run_until_quiescent().await?;
    assert_ne!(pods.get("db-0").await?.metadata.uid, old_uid);
    let after = claims(h.client()).await?;
    assert_eq!(after["data-db-0"].metadata.uid, before["data-db-0"].metadata.uid);

    // Scaling down keeps the claims (Retain), and scaling up again reuses them.
    sets.patch("db", &Patch::Merge(serde_json::json!({"spec": {"replicas": 1}})), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    assert_eq!(names(&pods_by_name(h.client()).await?), ["db-0"]);
    assert_eq!(claims(h.client()).await?.len(), 2);
    sets.patch("db", &Patch::Merge(serde_json::json!({"spec": {"replicas": 2}})), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    assert_eq!(claims(h.client()).await?["data-db-1"].metadata.uid, before["data-db-1"].metadata.uid);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn retention_policy_delete_removes_claims_on_scale_down_and_with_the_set() -> Res {
    let h = harness(&["statefulset", "garbagecollector"]);
    let sets = Api::<StatefulSet>::namespaced(h.client(), "default");
    sets.create(&with_claims(statefulset("db", 3), "Delete", "Delete"), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    let first = claims(h.client()).await?;
    assert_eq!(first.len(), 3);
    let uid = sets.get("db").await?.metadata.uid;
    for c in first.values() {
        let owners = c.metadata.owner_references.clone().unwrap_or_default();
        assert_eq!(
            owners.iter().map(|o| (o.kind.as_str(), o.uid.clone())).collect::<Vec<_>>(),
            [("StatefulSet", uid.clone().unwrap_or_default())]
        );
    }

    sets.patch("db", &Patch::Merge(serde_json::json!({"spec": {"replicas": 1}})), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    assert_eq!(names(&pods_by_name(h.client()).await?), ["db-0"]);
    assert_eq!(claims(h.client()).await?.keys().collect::<Vec<_>>(), ["data-db-0"], "scaled-down claims went with their pods");

    // Scaling up makes fresh claims.
    sets.patch("db", &Patch::Merge(serde_json::json!({"spec": {"replicas": 2}})), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    let now = claims(h.client()).await?;
    assert_eq!(now.keys().collect::<Vec<_>>(), ["data-db-0", "data-db-1"]);
    assert_ne!(now["data-db-1"].metadata.uid, first["data-db-1"].metadata.uid);

    // whenDeleted Delete: the claims go with the set.
    sets.delete("db", &DeleteParams::background()).await?;
    h.run_until_quiescent().await?;
    assert!(claims(h.client()).await?.is_empty());
    assert!(pods_by_name(h.client()).await?.is_empty());
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn revisions_record_templates_prune_history_and_roll_back() -> Res {
    let h = harness(&["statefulset"]);
    let sets = Api::<StatefulSet>::namespaced(h.client(), "default");
    let revisions = Api::<ControllerRevision>::namespaced(h.client(), "default");
    let mut set = statefulset("web", 2);
    set.metadata.annotations = Some([("kubernetes.io/change-cause".to_owned(), "first".to_owned())].into());
    sets.create(&set, &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    sets.patch("web", &image_patch("web:2"), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    let list = revisions.list(&ListParams::default()).await?.items;
    let mut numbered: Vec<(i64, String)> =
        list.iter().map(|r| (r.revision.unwrap_or(0), r.metadata.name.clone().unwrap_or_default())).collect();
    numbered.sort();
    assert_eq!(numbered.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [1, 2]);
    let first = list.iter().find(|r| r.revision == Some(1)).cloned().ok_or("no revision 1")?;
    assert_eq!(first.metadata.annotations.as_ref().and_then(|a| a.get("kubernetes.io/change-cause")).map(String::as_str), Some("first"));
    assert_eq!(first.data.0["spec"]["template"]["$patch"], "replace");
    assert_eq!(first.data.0["spec"]["template"]["spec"]["containers"][0]["image"], "web:1");

    // What `kubectl rollout undo` does: apply the revision's data as a strategic merge patch.
    sets.patch("web", &Patch::Strategic(first.data.0.clone()), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    assert!(pods_by_name(h.client()).await?.values().all(|p| image(p) == "web:1"));
    let status = sets.get("web").await?.status.unwrap_or_default();
    assert_eq!(status.update_revision.as_deref(), first.metadata.name.as_deref(), "the old revision is reused");
    assert_eq!(status.current_revision, status.update_revision);
    assert_eq!(revisions.get(first.metadata.name.as_deref().unwrap_or_default()).await?.revision, Some(3), "and renumbered newest");

    // revisionHistoryLimit 1: one unused revision is kept besides the live one.
    sets.patch("web", &Patch::Merge(serde_json::json!({"spec": {"revisionHistoryLimit": 1}})), &PatchParams::default()).await?;
    for image in ["web:3", "web:4"] {
        sets.patch("web", &image_patch(image), &PatchParams::default()).await?;
        h.run_until_quiescent().await?;
    }
    let left: Vec<i64> = revisions.list(&ListParams::default()).await?.items.iter().map(|r| r.revision.unwrap_or(0)).collect();
    assert_eq!(left.len(), 2, "history pruned to the limit: {left:?}");
    assert!(left.contains(&5));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_conflict_on_the_status_update_is_retried() -> Res {
    let h = harness(&["statefulset"]);
    // More conflicts than one sync retries: the sync fails, backs off and succeeds later.
    h.faults().conflict_on_update(5);
    let sets = Api::<StatefulSet>::namespaced(h.client(), "default");
    sets.create(&statefulset("web", 2), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    let set = sets.get("web").await?;
    let status = set.status.clone().unwrap_or_default();
    assert_eq!((status.replicas, status.ready_replicas, status.updated_replicas), (2, Some(2), Some(2)));
    assert_eq!(status.observed_generation, set.metadata.generation);
    assert!(h.metrics().controller("statefulset").errors() >= 1, "the injected conflicts surfaced and were retried");
    assert!(h.faults().calls(bosun_controllers::harness::Verb::Update, "statefulsets") >= 4);
    Ok(())
}

/// The real kubectl, or `None` after a loud skip (a failure when components are required).
fn kubectl_binary() -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("BOSUN_REQUIRE_COMPONENTS").is_ok_and(|v| v == "1") {
            panic!("kubectl is required (BOSUN_REQUIRE_COMPONENTS=1) but is not on PATH");
        }
        eprintln!("\n!!! SKIPPING: kubectl is not on PATH !!!\n");
    }
    found
}

/// Runs kubectl against `kubeconfig` off the runtime's threads; (success, stdout + stderr).
async fn kubectl(binary: &std::path::Path, kubeconfig: &std::path::Path, args: &[&str]) -> (bool, String) {
    let mut cmd = std::process::Command::new(binary);
    cmd.arg("--kubeconfig").arg(kubeconfig).arg("--cache-dir").arg(kubeconfig.with_extension("cache")).args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output()).await;
    match out {
        Ok(Ok(o)) => (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))),
        Ok(Err(e)) => (false, e.to_string()),
        Err(e) => (false, e.to_string()),
    }
}

/// Waits (real time) until every pod of the namespace runs `image` and `n` are ready.
async fn until_image(client: Arc<dyn Client>, n: usize, image_name: &str) -> Res {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let pods = pods_by_name(client.clone()).await?;
        if pods.len() == n && pods.values().all(|p| image(p) == image_name && running_and_ready(p)) {
            return Ok(());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "pods never all ran {image_name}: {:?}",
            pods.values().map(image).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rollout_status_history_and_undo_work_on_statefulsets() -> Res {
    let Some(binary) = kubectl_binary() else { return Ok(()) };
    let api = bosun_store::ApiServer::in_memory();
    let server = bosun_store::http::serve(api.clone(), bosun_store::http::HttpConfig::for_api_server(&api)).await?;
    let dir = std::env::temp_dir().join(format!("bosun-sts-kubectl-{}-{}", std::process::id(), unique_suffix()));
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = dir.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig)?;
    let mut h = Harness::new(api);
    h.start_builtins(bosun_controllers::ManagerConfig::default().only(&["statefulset"]));
    h.start_kubelet();
    let sets = Api::<StatefulSet>::namespaced(h.client(), "default");
    sets.create(&statefulset("web", 2), &PostParams::default()).await?;

    let run = |args: &'static [&'static str]| {
        let (binary, kubeconfig) = (binary.clone(), kubeconfig.clone());
        async move { kubectl(&binary, &kubeconfig, args).await }
    };
    let (ok, out) = run(&["rollout", "status", "statefulset/web", "--timeout=60s"]).await;
    assert!(ok && out.contains("roll out complete"), "rollout status: {out}");
    let (ok, out) = run(&["set", "image", "statefulset/web", "main=web:2"]).await;
    assert!(ok, "set image: {out}");
    let (ok, out) = run(&["rollout", "status", "statefulset/web", "--timeout=60s"]).await;
    assert!(ok && out.contains("roll out complete"), "rollout status after set image: {out}");
    until_image(h.client(), 2, "web:2").await?;

    let (ok, out) = run(&["rollout", "history", "statefulset/web"]).await;
    assert!(ok && out.contains("REVISION"), "rollout history: {out}");
    let revisions: Vec<&str> = out.lines().skip(2).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(revisions, ["1", "2"], "rollout history: {out}");
    let (ok, out) = run(&["rollout", "history", "statefulset/web", "--revision=1"]).await;
    assert!(ok && out.contains("web:1"), "rollout history --revision=1: {out}");

    let (ok, out) = run(&["rollout", "undo", "statefulset/web"]).await;
    assert!(ok && out.contains("rolled back"), "rollout undo: {out}");
    until_image(h.client(), 2, "web:1").await?;
    let (ok, out) = run(&["rollout", "status", "statefulset/web", "--timeout=60s"]).await;
    assert!(ok && out.contains("roll out complete"), "rollout status after undo: {out}");
    let (ok, out) = run(&["rollout", "history", "statefulset/web"]).await;
    let revisions: Vec<&str> = out.lines().skip(2).filter_map(|l| l.split_whitespace().next()).collect();
    assert!(ok && revisions == ["2", "3"], "the rolled-back revision became 3: {out}");

    // `rollout restart` stamps the template: a new revision replaces every pod.
    let before: Vec<_> = pods_by_name(h.client()).await?.values().map(|p| p.metadata.uid.clone()).collect();
    let (ok, out) = run(&["rollout", "restart", "statefulset/web"]).await;
    assert!(ok && out.contains("restarted"), "rollout restart: {out}");
    let (ok, out) = run(&["rollout", "status", "statefulset/web", "--timeout=60s"]).await;
    assert!(ok && out.contains("roll out complete"), "rollout status after restart: {out}");
    until_image(h.client(), 2, "web:1").await?;
    let after = pods_by_name(h.client()).await?;
    assert!(after.values().all(|p| !before.contains(&p.metadata.uid)), "every pod was replaced");

    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn unique_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos().into()).unwrap_or(0)
}

fn ready_patch(ready: bool) -> Patch {
    let status = if ready { "True" } else { "False" };
    Patch::Merge(serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": status}]}}))
}

#[tokio::test(start_paused = true)]
async fn ordered_scale_down_waits_while_a_lower_ordinal_is_unhealthy() -> Res {
    let mut h = Harness::new(server());
    h.start_builtins(bosun_controllers::ManagerConfig::default().only(&["statefulset"]));
    let _kubelet = slow_kubelet(h.client(), Duration::from_secs(1));
    let sets = Api::<StatefulSet>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    sets.create(&statefulset("web", 3), &PostParams::default()).await?;
    until_ready(&h, 3).await?;

    pods.patch_status("web-0", &ready_patch(false), &PatchParams::default()).await?;
    sets.patch("web", &Patch::Merge(serde_json::json!({"spec": {"replicas": 1}})), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    assert_eq!(names(&pods_by_name(h.client()).await?), ["web-0", "web-1", "web-2"], "nothing is removed while web-0 is not ready");
    assert_eq!(sets.get("web").await?.status.unwrap_or_default().ready_replicas, Some(2));

    pods.patch_status("web-0", &ready_patch(true), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    assert_eq!(names(&pods_by_name(h.client()).await?), ["web-0"]);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_failed_pod_is_replaced_under_the_same_name() -> Res {
    let h = harness(&["statefulset"]);
    let sets = Api::<StatefulSet>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    sets.create(&statefulset("web", 2), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    let old = pods.get("web-1").await?.metadata.uid;
    pods.patch_status("web-1", &Patch::Merge(serde_json::json!({"status": {"phase": "Failed"}})), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    let new = pods.get("web-1").await?;
    assert_ne!(new.metadata.uid, old, "the failed pod was deleted and made again");
    assert!(running_and_ready(&new));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn dropped_and_gone_watches_and_slow_writes_still_converge_in_order() -> Res {
    // The log and the kubelet watch the server directly: only the controller's watches break.
    let inner = server();
    let mut h = Harness::new(inner.clone());
    h.start_builtins(bosun_controllers::ManagerConfig::default().only(&["statefulset"]));
    let (log, _watch) = PodLog::start(inner.clone()).await?;
    let _kubelet = slow_kubelet(inner, Duration::from_secs(2));
    h.faults().slow_writes(Duration::from_millis(300));
    let sets = Api::<StatefulSet>::namespaced(h.client(), "default");
    sets.create(&with_claims(statefulset("web", 4), "Retain", "Retain"), &PostParams::default()).await?;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        h.faults().drop_watches();
        h.faults().gone_on_watch(1);
    }
    until_ready(&h, 4).await?;
    sets.patch("web", &image_patch("web:2"), &PatchParams::default()).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    h.faults().drop_watches();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while !pods_by_name(h.client()).await?.values().all(|p| image(p) == "web:2" && running_and_ready(p)) {
        assert!(tokio::time::Instant::now() < deadline, "the rollout never finished");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    h.faults().clear();
    h.run_until_quiescent().await?;
    assert_eq!(names(&pods_by_name(h.client()).await?), ["web-0", "web-1", "web-2", "web-3"]);
    assert_eq!(claims(h.client()).await?.len(), 4);
    // Whenever a pod is created (first start or replacement), its predecessor is running and ready.
    let mut created = 0;
    log.replay(|kind, pod, state| {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let n: i32 = name.trim_start_matches("web-").parse().unwrap_or(0);
        if kind == "added" {
            created += 1;
            if n > 0 {
                let prev = state.get(&format!("web-{}", n - 1));
                assert!(prev.is_some_and(running_and_ready), "{name} created while web-{} is not ready: {:?}", n - 1, state.keys());
            }
        }
    });
    assert_eq!(created, 8, "four pods, each replaced once");
    let order = log.deletion_order();
    assert_eq!(order, ["web-3", "web-2", "web-1", "web-0"], "updated from the top down");
    // The controller's watches resume with backoff: the status follows once they have caught up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let status = sets.get("web").await?.status.unwrap_or_default();
        let done = status.current_revision == status.update_revision && status.ready_replicas == Some(4);
        if done && status.updated_replicas == Some(4) && status.current_replicas == Some(4) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "status never converged: {status:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn min_ready_seconds_holds_the_next_ordinal_until_the_previous_is_available() -> Res {
    let h = harness(&["statefulset"]);
    let sets = Api::<StatefulSet>::namespaced(h.client(), "default");
    let mut set = statefulset("web", 2);
    set.spec.min_ready_seconds = Some(10);
    sets.create(&set, &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    let status = sets.get("web").await?.status.unwrap_or_default();
    assert_eq!(
        (status.replicas, status.ready_replicas, status.available_replicas),
        (1, Some(1), Some(0)),
        "web-0 ready, not yet available"
    );
    // web-0 became ready at about now; web-1 follows only once it has been ready for 10 s.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(names(&pods_by_name(h.client()).await?), ["web-0"], "web-1 waits for web-0 to be available");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(names(&pods_by_name(h.client()).await?), ["web-0", "web-1"]);
    until_ready(&h, 2).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while sets.get("web").await?.status.unwrap_or_default().available_replicas != Some(2) {
        assert!(tokio::time::Instant::now() < deadline, "web-1 never became available");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_set_recreated_after_an_orphaning_delete_adopts_its_pods_and_revisions() -> Res {
    let h = harness(&["statefulset", "garbagecollector"]);
    let sets = Api::<StatefulSet>::namespaced(h.client(), "default");
    let revisions = Api::<ControllerRevision>::namespaced(h.client(), "default");
    sets.create(&statefulset("web", 2), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    sets.patch("web", &image_patch("web:2"), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    let uids = |m: &BTreeMap<String, Pod>| m.values().map(|p| p.metadata.uid.clone()).collect::<Vec<_>>();
    let before = pods_by_name(h.client()).await?;
    sets.delete("web", &DeleteParams::orphan()).await?;
    h.run_until_quiescent().await?;
    assert!(sets.get_opt("web").await?.is_none());
    assert_eq!(revisions.list(&ListParams::default()).await?.items.len(), 2, "the orphaned revisions stay");

    let mut again = statefulset("web", 2);
    again.spec.template = template("web", "web:2");
    sets.create(&again, &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    let after = pods_by_name(h.client()).await?;
    assert_eq!(uids(&before), uids(&after), "the running pods were adopted, not replaced");
    let set = sets.get("web").await?;
    let list = revisions.list(&ListParams::default()).await?.items;
    assert_eq!(list.len(), 2, "the revisions were adopted, not duplicated");
    assert!(list.iter().all(|r| r.metadata.owner_references.iter().flatten().any(|o| Some(&o.uid) == set.metadata.uid.as_ref())));
    let status = set.status.unwrap_or_default();
    assert_eq!((status.updated_replicas, status.ready_replicas), (Some(2), Some(2)));
    assert_eq!(after["web-0"].metadata.labels.as_ref().and_then(|l| l.get(REVISION_LABEL)), status.update_revision.as_ref());
    Ok(())
}
