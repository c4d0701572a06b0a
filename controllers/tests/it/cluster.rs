//! Garbage collection, endpoints and namespace deletion.

use crate::support::*;
use bosun_controllers::builtin::endpoints::{MAX_ENDPOINTS_PER_SLICE, SERVICE_NAME_LABEL};
use bosun_controllers::builtin::pod_is_active;
use bosun_core::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Namespace, Pod, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

async fn count<K: bosun_core::TypedObject>(client: std::sync::Arc<dyn bosun_core::Client>, ns: &str) -> usize {
    Api::<K>::namespaced(client, ns).list(&ListParams::default()).await.map(|l| l.items.len()).unwrap_or(usize::MAX)
}

#[tokio::test(start_paused = true)]
async fn background_deletion_removes_replicasets_and_pods() -> Result<(), Box<dyn std::error::Error>> {
    let h = harness(&["replicaset", "deployment", "garbagecollector"]);
    let deploys = Api::<Deployment>::namespaced(h.client(), "default");
    deploys.create(&deployment("web", 3, 1, 0), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    assert_eq!(count::<Pod>(h.client(), "default").await, 3);
    deploys.delete("web", &DeleteParams::background()).await?;
    h.run_until_quiescent().await?;
    assert_eq!(count::<ReplicaSet>(h.client(), "default").await, 0);
    assert_eq!(count::<Pod>(h.client(), "default").await, 0);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn orphan_deletion_keeps_dependents_without_the_owner_reference() -> Result<(), Box<dyn std::error::Error>> {
    let h = harness(&["replicaset", "garbagecollector"]);
    let sets = Api::<ReplicaSet>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    sets.create(&replicaset("web", "web", 2), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    sets.delete("web", &DeleteParams::orphan()).await?;
    h.run_until_quiescent().await?;
    assert!(sets.get_opt("web").await?.is_none(), "the owner is gone");
    let left = pods.list(&ListParams::default()).await?.items;
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|p| p.metadata.owner_references.as_ref().is_none_or(|r| r.is_empty())));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn foreground_deletion_waits_for_blocking_dependents() -> Result<(), Box<dyn std::error::Error>> {
    let h = harness(&["garbagecollector"]);
    let cms = Api::<ConfigMap>::namespaced(h.client(), "default");
    let owner = cms
        .create(
            &ConfigMap { metadata: ObjectMeta { name: Some("owner".into()), ..ObjectMeta::default() }, ..ConfigMap::default() },
            &PostParams::default(),
        )
        .await?;
    let mut oref = bosun_core::meta::controller_ref(&owner);
    oref.block_owner_deletion = Some(true);
    // The dependent carries its own finalizer, so it lingers while "deleting".
    let dependent = ConfigMap {
        metadata: ObjectMeta {
            name: Some("dependent".into()),
            owner_references: Some(vec![oref]),
            finalizers: Some(vec!["example.com/hold".into()]),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    cms.create(&dependent, &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    cms.delete("owner", &DeleteParams::foreground()).await?;
    h.run_until_quiescent().await?;
    let o = cms.get_opt("owner").await?;
    assert!(o.is_some(), "the owner waits for its blocking dependent");
    let d = cms.get("dependent").await?;
    assert!(d.metadata.deletion_timestamp.is_some(), "the dependent is being deleted");
    cms.patch("dependent", &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    assert!(cms.get_opt("dependent").await?.is_none());
    assert!(cms.get_opt("owner").await?.is_none(), "the owner goes once its dependents are gone");
    Ok(())
}

fn service(name: &str, app: &str, target: IntOrString) -> Service {
    Service {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some("default".into()), ..ObjectMeta::default() },
        spec: Some(ServiceSpec {
            selector: Some(labels(app)),
            ports: Some(vec![ServicePort { name: Some("web".into()), port: 80, target_port: Some(target), ..ServicePort::default() }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

#[tokio::test(start_paused = true)]
async fn endpoint_slices_resolve_named_ports_and_hold_at_most_100_endpoints() -> Result<(), Box<dyn std::error::Error>> {
    let h = harness(&["replicaset", "endpointslice"]);
    let services = Api::<Service>::namespaced(h.client(), "default");
    let sets = Api::<ReplicaSet>::namespaced(h.client(), "default");
    let slices = Api::<EndpointSlice>::namespaced(h.client(), "default");
    services.create(&service("web", "web", IntOrString::String("http".into())), &PostParams::default()).await?;
    sets.create(&replicaset("web", "web", 150), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    let list = slices.list(&ListParams::default().labels(format!("{SERVICE_NAME_LABEL}=web"))).await?.items;
    let sizes: Vec<usize> = list.iter().map(|s| s.endpoints.as_ref().map_or(0, Vec::len)).collect();
    assert_eq!(sizes.iter().sum::<usize>(), 150);
    assert!(sizes.iter().all(|n| *n <= MAX_ENDPOINTS_PER_SLICE), "{sizes:?}");
    let port = list[0].ports.as_ref().and_then(|p| p.first()).and_then(|p| p.port);
    assert_eq!(port, Some(8080), "the named target port resolves to the container port");
    let ready = list
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .count();
    assert_eq!(ready, 150);
    let ep = Api::<Endpoints>::namespaced(h.client(), "default").get("web").await?;
    let addresses: usize = ep.subsets.iter().flatten().map(|s| s.addresses.as_ref().map_or(0, Vec::len)).sum();
    assert_eq!(addresses, 150);
    // Scale down: the slices follow.
    sets.patch("web", &Patch::Merge(serde_json::json!({"spec": {"replicas": 5}})), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    let list = slices.list(&ListParams::default().labels(format!("{SERVICE_NAME_LABEL}=web"))).await?.items;
    assert_eq!(list.iter().map(|s| s.endpoints.as_ref().map_or(0, Vec::len)).sum::<usize>(), 5);
    assert_eq!(list.len(), 1);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_pod_that_stops_matching_leaves_the_service() -> Result<(), Box<dyn std::error::Error>> {
    let h = harness(&["endpointslice"]);
    let services = Api::<Service>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    services.create(&service("web", "web", IntOrString::Int(9090)), &PostParams::default()).await?;
    pods.create(&bare_pod("a", "web"), &PostParams::default()).await?;
    pods.create(&bare_pod("b", "web"), &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    let total = |list: Vec<EndpointSlice>| list.iter().map(|s| s.endpoints.as_ref().map_or(0, Vec::len)).sum::<usize>();
    let slices = Api::<EndpointSlice>::namespaced(h.client(), "default");
    assert_eq!(total(slices.list(&ListParams::default()).await?.items), 2);
    pods.patch("a", &Patch::Merge(serde_json::json!({"metadata": {"labels": {"app": "other"}}})), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    assert_eq!(total(slices.list(&ListParams::default()).await?.items), 1);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn deleting_a_namespace_deletes_its_content_then_the_namespace() -> Result<(), Box<dyn std::error::Error>> {
    let h = harness(&["replicaset", "namespace", "garbagecollector"]);
    let namespaces = Api::<Namespace>::all(h.client());
    namespaces
        .create(
            &Namespace { metadata: ObjectMeta { name: Some("team".into()), ..ObjectMeta::default() }, ..Namespace::default() },
            &PostParams::default(),
        )
        .await?;
    let mut rs = replicaset("web", "web", 3);
    rs.metadata.namespace = Some("team".into());
    Api::<ReplicaSet>::namespaced(h.client(), "team").create(&rs, &PostParams::default()).await?;
    let cm = ConfigMap { metadata: ObjectMeta { name: Some("settings".into()), ..ObjectMeta::default() }, ..ConfigMap::default() };
    Api::<ConfigMap>::namespaced(h.client(), "team").create(&cm, &PostParams::default()).await?;
    h.run_until_quiescent().await?;
    assert_eq!(count::<Pod>(h.client(), "team").await, 3);
    namespaces.delete("team", &DeleteParams::default()).await?;
    h.run_until_quiescent().await?;
    assert!(namespaces.get_opt("team").await?.is_none(), "the namespace is gone");
    let pods = Api::<Pod>::all(h.client()).list(&ListParams::default()).await?.items;
    assert!(pods.iter().filter(|p| pod_is_active(p)).all(|p| p.metadata.namespace.as_deref() != Some("team")));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn named_ports_resolve_per_pod_and_not_ready_pods_are_listed_as_such() -> Result<(), Box<dyn std::error::Error>> {
    // No simulated kubelet: the test sets pod status itself.
    let mut h = bosun_controllers::Harness::new(server());
    h.start_builtins(bosun_controllers::ManagerConfig::default().only(&["endpointslice"]));
    let services = Api::<Service>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    services.create(&service("web", "web", IntOrString::String("http".into())), &PostParams::default()).await?;
    let mut b = bare_pod("b", "web");
    if let Some(port) = b.spec.as_mut().and_then(|s| s.containers[0].ports.as_mut()).and_then(|p| p.first_mut()) {
        port.container_port = 9090;
    }
    pods.create(&bare_pod("a", "web"), &PostParams::default()).await?;
    pods.create(&b, &PostParams::default()).await?;
    let status = |ip: &str, ready: &str| serde_json::json!({"status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": ready}]}});
    pods.patch_status("a", &Patch::Merge(status("10.0.0.1", "True")), &PatchParams::default()).await?;
    pods.patch_status("b", &Patch::Merge(status("10.0.0.2", "False")), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    let slices = Api::<EndpointSlice>::namespaced(h.client(), "default").list(&ListParams::default()).await?.items;
    let mut seen: Vec<(i32, String, bool)> = slices
        .iter()
        .flat_map(|s| {
            let port = s.ports.as_ref().and_then(|p| p.first()).and_then(|p| p.port).unwrap_or(0);
            s.endpoints
                .iter()
                .flatten()
                .map(move |e| (port, e.addresses[0].clone(), e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false)))
        })
        .collect();
    seen.sort();
    assert_eq!(seen, [(8080, "10.0.0.1".to_owned(), true), (9090, "10.0.0.2".to_owned(), false)]);
    let ep = Api::<Endpoints>::namespaced(h.client(), "default").get("web").await?;
    let subsets = ep.subsets.unwrap_or_default();
    assert_eq!(subsets.len(), 2);
    let not_ready: Vec<String> = subsets.iter().flat_map(|s| s.not_ready_addresses.iter().flatten()).map(|a| a.ip.clone()).collect();
    assert_eq!(not_ready, ["10.0.0.2"]);
    Ok(())
}
