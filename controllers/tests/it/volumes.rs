//! The PersistentVolume controller: binding by class, access modes, capacity and pre-binding;
//! reclaim policies; the default class and the local-path provisioner.

use crate::support::*;
use bosun_controllers::builtin::persistentvolume::{
    ANN_BIND_COMPLETED, ANN_BOUND_BY_CONTROLLER, ANN_DEFAULT_CLASS, ANN_SELECTED_NODE, DEFAULT_CLASS_NAME, LOCAL_PATH_PROVISIONER,
    LocalPathConfig,
};
use bosun_controllers::{Harness, ManagerConfig};
use bosun_core::{Api, DeleteParams, Patch, PatchParams, PostParams};
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PersistentVolumeSpec, Pod, Volume, VolumeResourceRequirements,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::path::PathBuf;

type Res = Result<(), Box<dyn std::error::Error>>;

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("bosun-local-path-{}-{:x}", std::process::id(), fastrand_u64()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    h.finish()
}

fn volumes_harness(base: &TempDir) -> Harness {
    let mut h = Harness::new(server());
    let config = ManagerConfig::default().only(&["persistentvolume"]).local_path(LocalPathConfig::default().base_dir(&base.0));
    h.start_builtins(config);
    h
}

fn pv(name: &str, size: &str, modes: &[&str], class: &str, policy: &str) -> PersistentVolume {
    PersistentVolume {
        metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() },
        spec: Some(PersistentVolumeSpec {
            capacity: Some([("storage".to_owned(), Quantity(size.into()))].into()),
            access_modes: Some(modes.iter().map(|m| (*m).to_owned()).collect()),
            storage_class_name: Some(class.into()),
            persistent_volume_reclaim_policy: Some(policy.into()),
            host_path: Some(HostPathVolumeSource { path: format!("/tmp/bosun-static/{name}"), type_: None }),
            ..PersistentVolumeSpec::default()
        }),
        status: None,
    }
}

fn pvc(name: &str, size: &str, modes: &[&str], class: Option<&str>) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some("default".into()), ..ObjectMeta::default() },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(modes.iter().map(|m| (*m).to_owned()).collect()),
            resources: Some(VolumeResourceRequirements {
                requests: Some([("storage".to_owned(), Quantity(size.into()))].into()),
                limits: None,
            }),
            storage_class_name: class.map(str::to_owned),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

fn claim_phase(c: &PersistentVolumeClaim) -> Option<&str> {
    c.status.as_ref().and_then(|s| s.phase.as_deref())
}

fn volume_phase(v: &PersistentVolume) -> Option<&str> {
    v.status.as_ref().and_then(|s| s.phase.as_deref())
}

fn volume_of(c: &PersistentVolumeClaim) -> Option<&str> {
    c.spec.as_ref().and_then(|s| s.volume_name.as_deref())
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref().and_then(|a| a.get(key)).map(String::as_str)
}

#[tokio::test(start_paused = true)]
async fn claims_bind_to_the_smallest_volume_with_their_class_modes_and_capacity() -> Res {
    let base = TempDir::new();
    let h = volumes_harness(&base);
    let c = h.client();
    let volumes = Api::<PersistentVolume>::all(c.clone());
    let claims = Api::<PersistentVolumeClaim>::namespaced(c.clone(), "default");
    for v in [
        pv("small", "1Gi", &["ReadWriteOnce"], "manual", "Retain"),
        pv("big", "10Gi", &["ReadWriteOnce"], "manual", "Retain"),
        pv("shared", "5Gi", &["ReadWriteMany"], "manual", "Retain"),
        pv("fast", "3Gi", &["ReadWriteOnce"], "fast", "Retain"),
    ] {
        volumes.create(&v, &PostParams::default()).await?;
    }
    h.run_until_quiescent().await?;
    assert!(volumes.list(&Default::default()).await?.items.iter().all(|v| volume_phase(v) == Some("Available")));
    claims.create(&pvc("db", "2Gi", &["ReadWriteOnce"], Some("manual")), &PostParams::default()).await?;
    claims.create(&pvc("files", "3Gi", &["ReadWriteMany"], Some("manual")), &PostParams::default()).await?;
    claims.create(&pvc("huge", "20Gi", &["ReadWriteOnce"], Some("manual")), &PostParams::default()).await?;
    claims.create(&pvc("quick", "1Gi", &["ReadWriteOnce"], Some("fast")), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    let db = claims.get("db").await?;
    assert_eq!((volume_of(&db), claim_phase(&db)), (Some("big"), Some("Bound")), "small is too small; shared lacks RWO");
    let status = db.status.clone().unwrap_or_default();
    assert_eq!(status.capacity.and_then(|c| c.get("storage").cloned()), Some(Quantity("10Gi".into())));
    assert_eq!(status.access_modes, Some(vec!["ReadWriteOnce".to_owned()]));
    assert_eq!(annotation(&db.metadata, ANN_BIND_COMPLETED), Some("yes"));
    assert_eq!(annotation(&db.metadata, ANN_BOUND_BY_CONTROLLER), Some("yes"));
    let big = volumes.get("big").await?;
    assert_eq!(volume_phase(&big), Some("Bound"));
    let r = big.spec.as_ref().and_then(|s| s.claim_ref.clone()).unwrap_or_default();
    assert_eq!((r.name.as_deref(), r.uid.as_deref()), (Some("db"), db.metadata.uid.as_deref()));
    assert_eq!(annotation(&big.metadata, ANN_BOUND_BY_CONTROLLER), Some("yes"));
    assert_eq!(volume_of(&claims.get("files").await?), Some("shared"));
    assert_eq!(volume_of(&claims.get("quick").await?), Some("fast"), "the class must match");
    let huge = claims.get("huge").await?;
    assert_eq!((volume_of(&huge), claim_phase(&huge)), (None, Some("Pending")));
    assert_eq!(volume_phase(&volumes.get("small").await?), Some("Available"));
    // A volume that fits arrives later: the waiting claim takes it.
    volumes.create(&pv("jumbo", "50Gi", &["ReadWriteOnce"], "manual", "Retain"), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    assert_eq!(volume_of(&claims.get("huge").await?), Some("jumbo"));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn pre_bound_volumes_and_claims_bind_only_to_each_other() -> Res {
    let base = TempDir::new();
    let h = volumes_harness(&base);
    let c = h.client();
    let volumes = Api::<PersistentVolume>::all(c.clone());
    let claims = Api::<PersistentVolumeClaim>::namespaced(c.clone(), "default");
    let mut reserved = pv("reserved", "5Gi", &["ReadWriteOnce"], "", "Retain");
    if let Some(s) = reserved.spec.as_mut() {
        s.claim_ref = Some(ObjectReference { name: Some("owner".into()), namespace: Some("default".into()), ..Default::default() });
    }
    volumes.create(&reserved, &PostParams::default()).await?;
    volumes.create(&pv("chosen", "1Gi", &["ReadWriteOnce"], "", "Retain"), &PostParams::default()).await?;
    volumes.create(&pv("decoy", "1Gi", &["ReadWriteOnce"], "", "Retain"), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    assert_eq!(volume_phase(&volumes.get("reserved").await?), Some("Available"), "pre-bound by name only: still available to its claim");
    // A claim that fits the reserved volume cannot take it.
    claims.create(&pvc("thief", "4Gi", &["ReadWriteOnce"], Some("")), &PostParams::default()).await?;
    // A claim naming its volume gets exactly that one, not the equally good decoy.
    let mut picky = pvc("picky", "1Gi", &["ReadWriteOnce"], Some(""));
    if let Some(s) = picky.spec.as_mut() {
        s.volume_name = Some("chosen".into());
    }
    claims.create(&picky, &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    let thief = claims.get("thief").await?;
    assert_eq!((volume_of(&thief), claim_phase(&thief)), (None, Some("Pending")));
    let picky = claims.get("picky").await?;
    assert_eq!((volume_of(&picky), claim_phase(&picky)), (Some("chosen"), Some("Bound")));
    assert_eq!(annotation(&picky.metadata, ANN_BOUND_BY_CONTROLLER), None, "the user chose the volume");
    assert_eq!(annotation(&picky.metadata, ANN_BIND_COMPLETED), Some("yes"));
    assert_eq!(volume_phase(&volumes.get("decoy").await?), Some("Available"));
    // The owner arrives and gets its reserved volume, smaller claims notwithstanding.
    claims.create(&pvc("owner", "1Gi", &["ReadWriteOnce"], Some("")), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    let owner = claims.get("owner").await?;
    assert_eq!((volume_of(&owner), claim_phase(&owner)), (Some("reserved"), Some("Bound")));
    let reserved = volumes.get("reserved").await?;
    assert_eq!(reserved.spec.and_then(|s| s.claim_ref).and_then(|r| r.uid), owner.metadata.uid);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_released_volume_is_kept_under_retain_and_fails_under_delete_without_a_deleter() -> Res {
    let base = TempDir::new();
    let h = volumes_harness(&base);
    let c = h.client();
    let volumes = Api::<PersistentVolume>::all(c.clone());
    let claims = Api::<PersistentVolumeClaim>::namespaced(c.clone(), "default");
    volumes.create(&pv("keep", "1Gi", &["ReadWriteOnce"], "gold", "Retain"), &PostParams::default()).await?;
    volumes.create(&pv("static", "1Gi", &["ReadWriteOnce"], "silver", "Delete"), &PostParams::default()).await?;
    claims.create(&pvc("a", "1Gi", &["ReadWriteOnce"], Some("gold")), &PostParams::default()).await?;
    claims.create(&pvc("b", "1Gi", &["ReadWriteOnce"], Some("silver")), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    assert_eq!(volume_phase(&volumes.get("keep").await?), Some("Bound"));
    claims.delete("a", &DeleteParams::default()).await?;
    claims.delete("b", &DeleteParams::default()).await?;
    h.run_until_quiescent().await?;
    let keep = volumes.get("keep").await?;
    assert_eq!(volume_phase(&keep), Some("Released"));
    assert!(keep.spec.and_then(|s| s.claim_ref).is_some(), "a released volume keeps its claimRef until an admin clears it");
    // A new claim does not get a released volume.
    claims.create(&pvc("a2", "1Gi", &["ReadWriteOnce"], Some("gold")), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    assert_eq!(claim_phase(&claims.get("a2").await?), Some("Pending"));
    let stat = volumes.get("static").await?;
    assert_eq!(volume_phase(&stat), Some("Failed"), "no deleter for a static hostPath volume: {:?}", stat.status);
    // The admin clears the claimRef: the volume is available again and the waiting claim takes it.
    volumes.patch("keep", &Patch::Merge(serde_json::json!({"spec": {"claimRef": null}})), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    assert_eq!(volume_of(&claims.get("a2").await?), Some("keep"));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn the_default_class_provisions_a_local_volume_on_the_selected_node_and_deletes_it_with_its_data() -> Res {
    let base = TempDir::new();
    let h = volumes_harness(&base);
    let c = h.client();
    h.run_until_quiescent().await?;
    let class = Api::<StorageClass>::all(c.clone()).get(DEFAULT_CLASS_NAME).await?;
    assert_eq!(annotation(&class.metadata, ANN_DEFAULT_CLASS), Some("true"));
    assert_eq!(class.provisioner, LOCAL_PATH_PROVISIONER);
    assert_eq!(class.volume_binding_mode.as_deref(), Some("WaitForFirstConsumer"));
    assert_eq!(class.reclaim_policy.as_deref(), Some("Delete"));
    let mut node = Node::default();
    node.metadata.name = Some("node-b".into());
    node.metadata.labels = Some([("kubernetes.io/hostname".to_owned(), "node-b".to_owned())].into());
    Api::<Node>::all(c.clone()).create(&node, &PostParams::default()).await?;
    let claims = Api::<PersistentVolumeClaim>::namespaced(c.clone(), "default");
    let volumes = Api::<PersistentVolume>::all(c.clone());
    claims.create(&pvc("data", "2Gi", &["ReadWriteOnce"], None), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    let data = claims.get("data").await?;
    assert_eq!(
        data.spec.as_ref().and_then(|s| s.storage_class_name.as_deref()),
        Some(DEFAULT_CLASS_NAME),
        "admission set the default class"
    );
    assert_eq!(claim_phase(&data), Some("Pending"), "WaitForFirstConsumer: no volume before a pod is scheduled");
    assert!(volumes.list(&Default::default()).await?.items.is_empty());
    // The scheduler chose node-b for a pod using the claim.
    let select = serde_json::json!({"metadata": {"annotations": {ANN_SELECTED_NODE: "node-b"}}});
    claims.patch("data", &Patch::Merge(select), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    let data = claims.get("data").await?;
    let uid = data.metadata.uid.clone().unwrap_or_default();
    let name = format!("pvc-{uid}");
    assert_eq!((volume_of(&data), claim_phase(&data)), (Some(name.as_str()), Some("Bound")));
    let v = volumes.get(&name).await?;
    assert_eq!(volume_phase(&v), Some("Bound"));
    let spec = v.spec.clone().unwrap_or_default();
    let path = base.0.join(&name);
    assert_eq!(spec.host_path.as_ref().map(|h| PathBuf::from(&h.path)), Some(path.clone()));
    assert_eq!(spec.host_path.and_then(|h| h.type_).as_deref(), Some("DirectoryOrCreate"));
    assert_eq!(spec.storage_class_name.as_deref(), Some(DEFAULT_CLASS_NAME));
    assert_eq!(spec.persistent_volume_reclaim_policy.as_deref(), Some("Delete"));
    assert_eq!(spec.capacity.and_then(|c| c.get("storage").cloned()), Some(Quantity("2Gi".into())));
    let terms = spec.node_affinity.and_then(|a| a.required).map(|r| r.node_selector_terms).unwrap_or_default();
    let expr = terms.first().and_then(|t| t.match_expressions.clone()).unwrap_or_default();
    assert_eq!(expr.len(), 1);
    assert_eq!((expr[0].key.as_str(), expr[0].operator.as_str()), ("kubernetes.io/hostname", "In"));
    assert_eq!(expr[0].values, Some(vec!["node-b".to_owned()]));
    // The node agent made the directory and the pod wrote data.
    std::fs::create_dir_all(&path)?;
    std::fs::write(path.join("table.db"), b"rows")?;
    let pods = Api::<Pod>::namespaced(c.clone(), "default");
    let mut user = bare_pod("db", "db");
    if let Some(spec) = user.spec.as_mut() {
        spec.volumes = Some(vec![Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource { claim_name: "data".into(), read_only: None }),
            ..Volume::default()
        }]);
    }
    pods.create(&user, &PostParams::default()).await?;
    // The claim goes while the pod still runs: the data stays until the pod is gone.
    claims.delete("data", &DeleteParams::default()).await?;
    h.run_until_quiescent().await?;
    assert_eq!(volume_phase(&volumes.get(&name).await?), Some("Released"));
    assert!(path.join("table.db").exists(), "a running pod's data is not deleted");
    pods.delete("db", &DeleteParams::default().grace_period(0)).await?;
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    h.run_until_quiescent().await?;
    assert!(volumes.get_opt(&name).await?.is_none(), "reclaim policy Delete removes the volume");
    assert!(!path.exists(), "and its directory");
    assert!(base.0.exists(), "but not the provisioner's base directory");
    Ok(())
}
