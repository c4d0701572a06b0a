//! Subresources (binding, scale, eviction), Service allocations and custom resources through the
//! in-process API server.

use crate::api::{TestResult, client, deployment, pod};
use bosun_core::k8s_openapi::api::apps::v1::Deployment;
use bosun_core::k8s_openapi::api::core::v1::{Pod, Service};
use bosun_core::k8s_openapi::api::policy::v1::PodDisruptionBudget;
use bosun_core::{
    Api, ApiResource, Client, DeleteParams, DynamicObject, FieldValidation, ListParams, Patch, PatchParams, PostParams, Target,
};
use bosun_store::{ApiServer, MemoryStorage, Storage};
use futures::StreamExt;
use serde_json::json;
use std::sync::Arc;

#[tokio::test]
async fn binding_assigns_a_pod_once() -> TestResult {
    let pods = Api::<Pod>::namespaced(client(), "default");
    pods.create(&pod("p"), &PostParams::default()).await?;
    pods.bind("p", "node-1").await?;
    let bound = pods.get("p").await?;
    assert_eq!(bound.spec.as_ref().and_then(|s| s.node_name.as_deref()), Some("node-1"));
    let conditions = bound.status.and_then(|s| s.conditions).unwrap_or_default();
    assert!(conditions.iter().any(|c| c.type_ == "PodScheduled" && c.status == "True"));
    let err = pods.bind("p", "node-2").await.err().ok_or("bound twice")?;
    assert_eq!(err.code(), 409);
    let err = pods.bind("missing", "node-1").await.err().ok_or("bound a missing pod")?;
    assert!(err.is_not_found());
    Ok(())
}

#[tokio::test]
async fn scale_reads_and_writes_replicas() -> TestResult {
    let deployments = Api::<Deployment>::namespaced(client(), "default");
    deployments.create(&deployment("web", 2), &PostParams::default()).await?;
    let scale = deployments.get_scale("web").await?;
    assert_eq!(scale.spec.as_ref().and_then(|s| s.replicas), Some(2));
    assert_eq!(scale.status.as_ref().map(|s| s.selector.as_deref()), Some(Some("app=web")));
    let scaled = deployments.patch_scale("web", &Patch::Merge(json!({"spec": {"replicas": 5}})), &PatchParams::default()).await?;
    assert_eq!(scaled.spec.and_then(|s| s.replicas), Some(5));
    let d = deployments.get("web").await?;
    assert_eq!(d.spec.replicas, Some(5));
    assert_eq!(d.metadata.generation, Some(2));
    let err = deployments
        .patch_scale("web", &Patch::Merge(json!({"spec": {"replicas": -1}})), &PatchParams::default())
        .await
        .err()
        .ok_or("negative")?;
    assert_eq!(err.code(), 422);
    Ok(())
}

#[tokio::test]
async fn eviction_respects_disruption_budgets() -> TestResult {
    let c = client();
    let pods = Api::<Pod>::namespaced(c.clone(), "default");
    for name in ["a", "b"] {
        pods.create(&pod(name), &PostParams::default()).await?;
    }
    let pdbs = Api::<PodDisruptionBudget>::namespaced(c.clone(), "default");
    let pdb: PodDisruptionBudget = serde_json::from_value(
        json!({"metadata": {"name": "web"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}}),
    )?;
    pdbs.create(&pdb, &PostParams::default()).await?;
    pdbs.patch_status(
        "web",
        &Patch::Merge(json!({"status": {"disruptionsAllowed": 1, "currentHealthy": 2, "desiredHealthy": 1, "expectedPods": 2}})),
        &PatchParams::default(),
    )
    .await?;
    pods.evict("a", &DeleteParams::default()).await?;
    assert!(pods.get_opt("a").await?.is_none());
    let err = pods.evict("b", &DeleteParams::default()).await.err().ok_or("evicted past the budget")?;
    assert_eq!(err.code(), 429);
    assert!(pods.get_opt("b").await?.is_some());
    Ok(())
}

fn service(name: &str, spec: serde_json::Value) -> Result<Service, serde_json::Error> {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec}))
}

#[tokio::test]
async fn services_get_unique_cluster_ips_and_node_ports_that_survive_a_restart() -> TestResult {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let server = ApiServer::builder(storage.clone()).cluster_ip_range("10.0.0.0/29").node_port_range(30000, 30002).build()?;
    let services = Api::<Service>::namespaced(server.clone(), "default");
    let a = services.create(&service("a", json!({"ports": [{"port": 80}]}))?, &PostParams::default()).await?;
    let ip_a = a.spec.as_ref().and_then(|s| s.cluster_ip.clone()).ok_or("no ip")?;
    assert!(ip_a.starts_with("10.0.0."), "{ip_a}");
    assert_eq!(a.spec.as_ref().and_then(|s| s.cluster_ips.clone()), Some(vec![ip_a.clone()]));
    let np = services.create(&service("np", json!({"type": "NodePort", "ports": [{"port": 80}]}))?, &PostParams::default()).await?;
    let port = np.spec.as_ref().and_then(|s| s.ports.as_ref()).and_then(|p| p[0].node_port).ok_or("no node port")?;
    assert!((30000..=30002).contains(&port));
    let headless = services.create(&service("h", json!({"clusterIP": "None", "ports": [{"port": 80}]}))?, &PostParams::default()).await?;
    assert_eq!(headless.spec.and_then(|s| s.cluster_ip).as_deref(), Some("None"));
    // The same node port twice is refused.
    let dup = service("dup", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": port}]}))?;
    let err = services.create(&dup, &PostParams::default()).await.err().ok_or("double allocation")?;
    assert_eq!(err.code(), 422, "{err:?}");
    let out = service("out", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 31000}]}))?;
    assert_eq!(services.create(&out, &PostParams::default()).await.err().map(|e| e.code()), Some(422));

    // A new server over the same storage hands out the remaining IPs only (6 usable in a /29).
    let restarted = ApiServer::builder(storage.clone()).cluster_ip_range("10.0.0.0/29").node_port_range(30000, 30002).build()?;
    let services2 = Api::<Service>::namespaced(restarted.clone(), "default");
    let mut ips = vec![ip_a.clone(), np.spec.and_then(|s| s.cluster_ip).ok_or("no ip")?];
    for i in 0..4 {
        let s = services2.create(&service(&format!("s{i}"), json!({"ports": [{"port": 80}]}))?, &PostParams::default()).await?;
        ips.push(s.spec.and_then(|s| s.cluster_ip).ok_or("no ip")?);
    }
    let mut unique = ips.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 6, "{ips:?}");
    let err = services2
        .create(&service("full", json!({"ports": [{"port": 80}]}))?, &PostParams::default())
        .await
        .err()
        .ok_or("range not full")?;
    assert_eq!(err.code(), 500);
    // Deleting releases.
    services2.delete("a", &DeleteParams::default()).await?;
    let again = services2.create(&service("again", json!({"ports": [{"port": 80}]}))?, &PostParams::default()).await?;
    assert_eq!(again.spec.and_then(|s| s.cluster_ip), Some(ip_a));
    // An update that leaves the cluster IP out keeps it.
    let mut replaced = services2.get("again").await?;
    if let Some(spec) = replaced.spec.as_mut() {
        spec.cluster_ip = None;
        spec.cluster_ips = None;
    }
    let replaced = services2.replace(&replaced, &PostParams::default()).await?;
    assert!(replaced.spec.and_then(|s| s.cluster_ip).is_some());
    Ok(())
}

fn crd(scope: &str) -> serde_json::Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": scope,
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "required": ["size"], "properties": {
                        "size": {"type": "integer", "minimum": 1},
                        "replicas": {"type": "integer"},
                        "color": {"type": "string", "default": "blue"},
                    }},
                    "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}},
                }}},
            }],
        },
    })
}

#[tokio::test]
async fn custom_resource_definitions_serve_their_kind() -> TestResult {
    let server = ApiServer::in_memory();
    let c: Arc<dyn Client> = server.clone();
    let crds = bosun_core::resource::builtin("apiextensions.k8s.io", "v1", "CustomResourceDefinition").ok_or("crds")?;
    let created = c.create(Target::new(crds, None), &DynamicObject::from_value(crd("Namespaced"))?, &PostParams::default()).await?;
    let conditions = created.data["status"]["conditions"].as_array().cloned().unwrap_or_default();
    assert!(conditions.iter().any(|c| c["type"] == "Established" && c["status"] == "True"));
    let widgets: ApiResource = server.resource("example.com", "v1", "widgets").ok_or("widgets not served")?;
    assert!(widgets.namespaced && widgets.answers_to("wd") && widgets.has_subresource("scale"));
    assert!(server.resources().iter().any(|r| r.plural == "widgets"));

    let api = Api::dynamic(c.clone(), widgets.clone(), Some("default"));
    let w = DynamicObject::new(&widgets, "w1").data(json!({"spec": {"size": 2, "replicas": 1, "junk": true}}));
    let w = api.create(&w, &PostParams::default()).await?;
    assert_eq!(w.data["spec"]["color"], "blue");
    assert!(w.data["spec"].get("junk").is_none(), "unknown fields are pruned");
    let bad = DynamicObject::new(&widgets, "w2").data(json!({"spec": {"size": 0}}));
    let err = api.create(&bad, &PostParams::default()).await.err().ok_or("invalid widget created")?;
    assert_eq!(err.code(), 422);
    let strict = PostParams { field_validation: Some(FieldValidation::Strict), ..PostParams::default() };
    let unknown = DynamicObject::new(&widgets, "w3").data(json!({"spec": {"size": 1, "junk": 1}}));
    assert_eq!(api.create(&unknown, &strict).await.err().map(|e| e.code()), Some(400));
    let err = api.patch("w1", &Patch::Strategic(json!({"spec": {"size": 3}})), &PatchParams::default()).await.err().ok_or("smp on a CR")?;
    assert_eq!(err.code(), 415);
    let scale = api.get_scale("w1").await?;
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(1));
    let st =
        api.patch_status("w1", &Patch::Merge(json!({"status": {"replicas": 1}, "spec": {"size": 99}})), &PatchParams::default()).await?;
    assert_eq!(st.data["spec"]["size"], 2);
    assert_eq!(st.data["status"]["replicas"], 1);
    assert_eq!(api.list(&ListParams::default()).await?.items.len(), 1);

    // Deleting the definition stops serving the kind and removes its objects.
    c.delete(Target::new(crds, None), "widgets.example.com", &DeleteParams::default()).await?;
    assert!(server.resource("example.com", "v1", "widgets").is_none());
    assert!(api.list(&ListParams::default()).await.err().is_some_and(|e| e.is_not_found()));
    Ok(())
}

#[tokio::test]
async fn custom_resources_are_served_again_after_a_restart() -> TestResult {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let first = ApiServer::builder(storage.clone()).build()?;
    let crds = bosun_core::resource::builtin("apiextensions.k8s.io", "v1", "CustomResourceDefinition").ok_or("crds")?;
    Client::create(&*first, Target::new(crds, None), &DynamicObject::from_value(crd("Cluster"))?, &PostParams::default()).await?;
    let second = ApiServer::builder(storage).build()?;
    let list = Client::list(&*second, Target::new(crds, None), &ListParams::default()).await?;
    assert_eq!(list.items.len(), 1);
    let widgets = second.resource("example.com", "v1", "widgets").ok_or("not served after restart")?;
    assert!(!widgets.namespaced);
    Ok(())
}

struct Stamp;

#[async_trait::async_trait]
impl bosun_store::api::AdmissionPlugin for Stamp {
    fn name(&self) -> &str {
        "Stamp"
    }

    async fn admit(
        &self,
        attrs: &bosun_store::api::Attributes<'_>,
        obj: &mut DynamicObject,
        _old: Option<&DynamicObject>,
        _server: &ApiServer,
    ) -> bosun_core::Result<()> {
        if attrs.operation == bosun_store::api::Operation::Create {
            obj.metadata.labels.get_or_insert_with(Default::default).insert("stamped".into(), "yes".into());
        }
        Ok(())
    }

    async fn validate(
        &self,
        _attrs: &bosun_store::api::Attributes<'_>,
        obj: &DynamicObject,
        _old: Option<&DynamicObject>,
        _server: &ApiServer,
    ) -> bosun_core::Result<()> {
        if obj.metadata.name.as_deref() == Some("forbidden") {
            return Err(bosun_core::Error::forbidden("admission webhook \"Stamp\" denied the request"));
        }
        Ok(())
    }
}

#[tokio::test]
async fn admission_plugins_run_in_order_on_writes() -> TestResult {
    let server = ApiServer::builder(Arc::new(MemoryStorage::new())).admission_plugin(Arc::new(Stamp)).build()?;
    let cms = Api::<bosun_core::k8s_openapi::api::core::v1::ConfigMap>::namespaced(server.clone(), "default");
    let created = cms.create(&crate::api::config_map("ok"), &PostParams::default()).await?;
    assert_eq!(created.metadata.labels.and_then(|l| l.get("stamped").cloned()).as_deref(), Some("yes"));
    let err = cms.create(&crate::api::config_map("forbidden"), &PostParams::default()).await.err().ok_or("admitted")?;
    assert_eq!(err.code(), 403);
    // The built-in chain still runs: no writes into a missing namespace.
    let elsewhere = Api::<bosun_core::k8s_openapi::api::core::v1::ConfigMap>::namespaced(server.clone(), "missing");
    assert!(elsewhere.create(&crate::api::config_map("x"), &PostParams::default()).await.err().is_some_and(|e| e.is_not_found()));
    Ok(())
}

struct EchoLogs;

#[async_trait::async_trait]
impl bosun_store::http::NodeConnector for EchoLogs {
    async fn logs(&self, namespace: &str, pod: &str, _params: &bosun_core::LogParams) -> bosun_core::Result<bosun_core::LogStream> {
        let line = bytes::Bytes::from(format!("log of {namespace}/{pod}\n"));
        Ok(futures::stream::iter([Ok(line)]).boxed())
    }
}

#[tokio::test]
async fn pod_logs_go_to_the_node_connection() -> TestResult {
    let server = ApiServer::builder(Arc::new(MemoryStorage::new())).node_connector(Arc::new(EchoLogs)).build()?;
    let pods = Api::<Pod>::namespaced(server.clone(), "default");
    pods.create(&pod("p"), &PostParams::default()).await?;
    let mut logs = pods.logs("p", &bosun_core::LogParams::default()).await?;
    let chunk = logs.next().await.ok_or("no log")??;
    assert_eq!(&chunk[..], b"log of default/p\n");
    assert!(pods.logs("missing", &bosun_core::LogParams::default()).await.err().is_some_and(|e| e.is_not_found()));
    let bare = Api::<Pod>::namespaced(client(), "default");
    bare.create(&pod("p"), &PostParams::default()).await?;
    assert_eq!(bare.logs("p", &bosun_core::LogParams::default()).await.err().map(|e| e.code()), Some(405));
    Ok(())
}
