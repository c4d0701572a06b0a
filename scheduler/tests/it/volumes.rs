//! VolumeBinding end to end: delayed binding through the selected-node annotation, and pods kept
//! to the node of their claim's local volume.

use crate::harness::{api_server, node, pod};
use bosun_core::k8s_openapi::api::core::v1::{
    HostPathVolumeSource, Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference, PersistentVolume,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, PersistentVolumeSpec, Pod, Volume,
    VolumeNodeAffinity, VolumeResourceRequirements,
};
use bosun_core::k8s_openapi::api::storage::v1::StorageClass;
use bosun_core::k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use bosun_core::{Api, Client, Patch, PatchParams, PostParams};
use bosun_scheduler::Scheduler;
use bosun_scheduler::plugins::volume_binding::ANN_SELECTED_NODE;
use std::sync::Arc;
use std::time::Duration;

async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

async fn node_of(client: &Arc<dyn Client>, name: &str) -> Option<String> {
    let p = Api::<Pod>::namespaced(client.clone(), "default").get(name).await.ok()?;
    p.spec.and_then(|s| s.node_name)
}

fn pod_with_claim(name: &str, claim: &str) -> Pod {
    let mut p = pod(name, "100m", "100Mi");
    if let Some(spec) = p.spec.as_mut() {
        spec.volumes = Some(vec![Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource { claim_name: claim.into(), read_only: None }),
            ..Volume::default()
        }]);
    }
    p
}

fn claim(name: &str, class: &str, volume: Option<&str>) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some("default".into()), ..ObjectMeta::default() },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some([("storage".to_owned(), Quantity("1Gi".into()))].into()),
                limits: None,
            }),
            storage_class_name: Some(class.into()),
            volume_name: volume.map(str::to_owned),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

fn local_volume(name: &str, on: &str, claim: Option<&PersistentVolumeClaim>) -> PersistentVolume {
    PersistentVolume {
        metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() },
        spec: Some(PersistentVolumeSpec {
            capacity: Some([("storage".to_owned(), Quantity("1Gi".into()))].into()),
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            host_path: Some(HostPathVolumeSource { path: format!("/tmp/{name}"), type_: None }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: "kubernetes.io/hostname".into(),
                            operator: "In".into(),
                            values: Some(vec![on.into()]),
                        }]),
                        match_fields: None,
                    }],
                }),
            }),
            claim_ref: claim.map(|c| ObjectReference {
                name: c.metadata.name.clone(),
                namespace: c.metadata.namespace.clone(),
                uid: c.metadata.uid.clone(),
                ..ObjectReference::default()
            }),
            ..PersistentVolumeSpec::default()
        }),
        status: None,
    }
}

/// What the PersistentVolume controller does for a claim: a volume on `node`, and the claim bound to it.
async fn bind_claim(client: &Arc<dyn Client>, name: &str, node: &str) {
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), "default");
    let c = ok(claims.get(name).await);
    let volume = format!("pv-{name}");
    ok(Api::<PersistentVolume>::all(client.clone()).create(&local_volume(&volume, node, Some(&c)), &PostParams::default()).await);
    ok(claims.patch(name, &Patch::Merge(serde_json::json!({"spec": {"volumeName": volume}})), &PatchParams::default()).await);
    ok(claims.patch_status(name, &Patch::Merge(serde_json::json!({"status": {"phase": "Bound"}})), &PatchParams::default()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_with_a_wait_for_first_consumer_claim_selects_a_node_and_binds_once_the_claim_is_bound() {
    let client = api_server();
    for n in ["node-a", "node-b", "node-c"] {
        ok(Api::<Node>::all(client.clone()).create(&node(n, "z"), &PostParams::default()).await);
    }
    let class = StorageClass {
        metadata: ObjectMeta { name: Some("local-path".into()), ..ObjectMeta::default() },
        provisioner: "bosun.io/local-path".into(),
        volume_binding_mode: Some("WaitForFirstConsumer".into()),
        ..StorageClass::default()
    };
    ok(Api::<StorageClass>::all(client.clone()).create(&class, &PostParams::default()).await);
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), "default");
    ok(claims.create(&claim("data", "local-path", None), &PostParams::default()).await);
    let scheduler = ok(Scheduler::builder(client.clone()).build());
    let _running = scheduler.start().await;
    ok(Api::<Pod>::namespaced(client.clone(), "default").create(&pod_with_claim("app", "data"), &PostParams::default()).await);
    let selected = eventually("the selected-node annotation", || async {
        let c = claims.get("data").await.ok()?;
        c.metadata.annotations.and_then(|a| a.get(ANN_SELECTED_NODE).cloned())
    })
    .await;
    // PreBind waits for the claim: the pod is not bound yet.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(node_of(&client, "app").await, None, "the pod waits for its claim to be bound");
    bind_claim(&client, "data", &selected).await;
    let n = eventually("the pod's binding", || node_of(&client, "app")).await;
    assert_eq!(n, selected, "the pod lands where its volume was provisioned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_whose_claim_is_bound_to_a_local_volume_land_on_its_node_and_a_missing_claim_waits() {
    let client = api_server();
    for n in ["node-a", "node-b", "node-c"] {
        ok(Api::<Node>::all(client.clone()).create(&node(n, "z"), &PostParams::default()).await);
    }
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), "default");
    ok(claims.create(&claim("db", "", None), &PostParams::default()).await);
    bind_claim(&client, "db", "node-b").await;
    let scheduler = ok(Scheduler::builder(client.clone()).build());
    let _running = scheduler.start().await;
    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    for i in 0..4 {
        ok(pods.create(&pod_with_claim(&format!("db-{i}"), "db"), &PostParams::default()).await);
    }
    ok(pods.create(&pod_with_claim("late", "later"), &PostParams::default()).await);
    for i in 0..4 {
        let name = format!("db-{i}");
        assert_eq!(eventually("binding", || node_of(&client, &name)).await, "node-b");
    }
    let message = eventually("the FailedScheduling condition", || async {
        let p = pods.get("late").await.ok()?;
        let c = p.status?.conditions?.into_iter().find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
        c.message
    })
    .await;
    assert!(message.contains("persistentvolumeclaim \"later\" not found"), "{message}");
    // The claim appears, bound to a volume on node-c: the pod is retried and follows it.
    ok(claims.create(&claim("later", "", None), &PostParams::default()).await);
    bind_claim(&client, "later", "node-c").await;
    assert_eq!(eventually("the late pod's binding", || node_of(&client, "late")).await, "node-c");
}
