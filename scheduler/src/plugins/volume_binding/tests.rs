use super::*;
use crate::framework::Code;
use crate::node_info::NodeStatic;
use crate::plugins::testutil::pod;
use bosun_core::k8s_openapi::api::core::v1::{
    HostPathVolumeSource, Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PersistentVolumeSpec, Pod, Volume, VolumeNodeAffinity, VolumeResourceRequirements,
};
use bosun_core::k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;
use bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use bosun_core::{Client, PostParams};

fn node(name: &str) -> NodeInfo {
    let mut n = Node::default();
    n.metadata.name = Some(name.into());
    n.metadata.labels = Some([("kubernetes.io/hostname".to_owned(), name.to_owned())].into());
    NodeInfo::with_pods(NodeStatic::new(Arc::new(n)), [])
}

fn with_claim(claim: &str) -> impl FnOnce(&mut Pod) {
    let claim = claim.to_owned();
    move |p: &mut Pod| {
        if let Some(spec) = p.spec.as_mut() {
            spec.volumes = Some(vec![Volume {
                name: "data".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource { claim_name: claim, read_only: None }),
                ..Volume::default()
            }]);
        }
    }
}

fn claim(name: &str, class: &str, volume: Option<&str>) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some("default".into()), ..ObjectMeta::default() },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements { requests: Some([("storage".to_owned(), Q("1Gi".into()))].into()), limits: None }),
            storage_class_name: Some(class.into()),
            volume_name: volume.map(str::to_owned),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

fn local_volume(name: &str, class: &str, on: &str) -> PersistentVolume {
    PersistentVolume {
        metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() },
        spec: Some(PersistentVolumeSpec {
            capacity: Some([("storage".to_owned(), Q("5Gi".into()))].into()),
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: Some(class.into()),
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
            ..PersistentVolumeSpec::default()
        }),
        status: None,
    }
}

fn class(name: &str, provisioner: &str, mode: &str) -> StorageClass {
    StorageClass {
        metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() },
        provisioner: provisioner.into(),
        volume_binding_mode: Some(mode.into()),
        ..StorageClass::default()
    }
}

/// A handle whose informers read an in-process API server holding `pvcs`, `pvs` and `classes`.
async fn handle_with(pvcs: Vec<PersistentVolumeClaim>, pvs: Vec<PersistentVolume>, classes: Vec<StorageClass>) -> Handle {
    let client: Arc<dyn Client> = bosun_store::ApiServer::in_memory();
    let pp = PostParams::default();
    for c in pvcs {
        Api::<PersistentVolumeClaim>::namespaced(client.clone(), "default").create(&c, &pp).await.expect("create claim");
    }
    for v in pvs {
        Api::<PersistentVolume>::all(client.clone()).create(&v, &pp).await.expect("create volume");
    }
    for c in classes {
        Api::<StorageClass>::all(client.clone()).create(&c, &pp).await.expect("create class");
    }
    let informers = Informers::new(client.clone());
    let (a, b, c) = (informers.all::<PersistentVolumeClaim>(), informers.all::<PersistentVolume>(), informers.all::<StorageClass>());
    a.wait_ready().await;
    b.wait_ready().await;
    c.wait_ready().await;
    let handle = Handle::new(Some(client), Arc::default(), None, None);
    handle.set_informers(informers);
    handle
}

fn run(handle: &Handle, claim: &str, nodes: &[&str]) -> (Status, Vec<(String, Code)>) {
    let p = pod("p").with(with_claim(claim)).info();
    let mut state = CycleState::new();
    let (_, s) = VolumeBinding.pre_filter(&mut state, &p, &Snapshot::default(), handle);
    let per_node = nodes.iter().map(|n| ((*n).to_owned(), VolumeBinding.filter(&state, &p, &node(n)).code())).collect();
    (s, per_node)
}

#[tokio::test]
async fn a_missing_claim_or_an_unbound_immediate_one_makes_the_pod_unschedulable() {
    let h = handle_with(vec![claim("waiting", "fast", None)], vec![], vec![class("fast", "example.com/csi", "Immediate")]).await;
    let (s, _) = run(&h, "nope", &[]);
    assert_eq!(s.code(), Code::UnschedulableAndUnresolvable);
    assert_eq!(s.message(), "persistentvolumeclaim \"nope\" not found");
    let (s, _) = run(&h, "waiting", &[]);
    assert_eq!(s.code(), Code::UnschedulableAndUnresolvable);
    assert_eq!(s.message(), "pod has unbound immediate PersistentVolumeClaims");
}

#[tokio::test]
async fn a_claim_bound_to_a_local_volume_keeps_the_pod_on_that_node() {
    let h = handle_with(vec![claim("data", "", Some("pv-b"))], vec![local_volume("pv-b", "", "node-b")], vec![]).await;
    let (s, nodes) = run(&h, "data", &["node-a", "node-b"]);
    assert!(s.is_success(), "{s}");
    assert_eq!(nodes, [("node-a".to_owned(), Code::UnschedulableAndUnresolvable), ("node-b".to_owned(), Code::Success)]);
}

#[tokio::test]
async fn a_delayed_claim_fits_where_its_class_can_provide_a_volume() {
    let h = handle_with(
        vec![claim("dyn", "local-path", None), claim("static", "local-disks", None)],
        vec![local_volume("disk-c", "local-disks", "node-c")],
        vec![
            class("local-path", "bosun.io/local-path", "WaitForFirstConsumer"),
            class("local-disks", NO_PROVISIONER, "WaitForFirstConsumer"),
        ],
    )
    .await;
    let (s, nodes) = run(&h, "dyn", &["node-a", "node-c"]);
    assert!(s.is_success(), "{s}");
    assert!(nodes.iter().all(|(_, c)| *c == Code::Success), "a provisioner can serve any node: {nodes:?}");
    let (s, nodes) = run(&h, "static", &["node-a", "node-c"]);
    assert!(s.is_success(), "{s}");
    assert_eq!(nodes, [("node-a".to_owned(), Code::Unschedulable), ("node-c".to_owned(), Code::Success)], "only node-c has a free disk");
}

#[tokio::test]
async fn pods_without_claims_skip_the_plugin_and_unmountable_sources_are_refused() {
    let h = Handle::default();
    let p = pod("p").info();
    let (_, s) = VolumeBinding.pre_filter(&mut CycleState::new(), &p, &Snapshot::default(), &h);
    assert!(s.is_skip());
    let nfs = pod("p")
        .with(|p: &mut Pod| {
            if let Some(spec) = p.spec.as_mut() {
                spec.volumes = Some(vec![Volume {
                    name: "remote".into(),
                    nfs: Some(bosun_core::k8s_openapi::api::core::v1::NFSVolumeSource {
                        path: "/".into(),
                        server: "nfs".into(),
                        read_only: None,
                    }),
                    ..Volume::default()
                }]);
            }
        })
        .info();
    let (_, s) = VolumeBinding.pre_filter(&mut CycleState::new(), &nfs, &Snapshot::default(), &h);
    assert_eq!(s.code(), Code::UnschedulableAndUnresolvable);
}
