//! The same flows through the `kube` crate: bosun-core's `KubeClient` (the real-cluster adapter)
//! pointed at the HTTP server over HTTPS, with the written kubeconfig.

use super::http::TestResult;
use bosun_core::k8s_openapi::api::apps::v1::Deployment;
use bosun_core::k8s_openapi::api::core::v1::ConfigMap;
use bosun_core::kube_client::KubeClient;
use bosun_core::{Api, Client, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use bosun_store::ApiServer;
use bosun_store::http::{HttpConfig, serve};
use futures::StreamExt;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn kube_rs_drives_crud_patch_watch_and_scale_over_https() -> TestResult {
    let api = ApiServer::in_memory();
    let server = serve(api.clone(), HttpConfig::new().https(([127, 0, 0, 1], 0).into()).catalog(api)).await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig)?;
    let client: Arc<dyn Client> = Arc::new(KubeClient::from_kubeconfig(&kubeconfig).await?);

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "kube", "labels": {"via": "kube-rs"}}, "data": {"a": "1"}}))?;
    let created = cms.create(&cm, &PostParams::default()).await?;
    let rv = created.metadata.resource_version.clone().unwrap_or_default();
    assert!(!rv.is_empty());
    let dup = cms.create(&cm, &PostParams::default()).await.err();
    assert!(dup.is_some_and(|e| e.is_already_exists()));
    assert!(cms.get("missing").await.err().is_some_and(|e| e.is_not_found()));

    let mut events = cms.watch(&WatchParams::default().from_version(rv.clone()).timeout(10)).await?;
    cms.patch("kube", &Patch::Merge(json!({"data": {"b": "2"}})), &PatchParams::default()).await?;
    cms.patch("kube", &Patch::Strategic(json!({"data": {"c": "3"}})), &PatchParams::default()).await?;
    let applied = cms
        .patch(
            "kube",
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube"}, "data": {"d": "4"}})),
            &PatchParams::apply("kube-test").force(),
        )
        .await?;
    assert_eq!(applied.data.as_ref().and_then(|d| d.get("d")).map(String::as_str), Some("4"));
    let event = tokio::time::timeout(Duration::from_secs(5), events.next()).await?.ok_or("watch ended")??;
    match event {
        WatchEvent::Modified(cm) => assert_eq!(cm.data.as_ref().and_then(|d| d.get("b")).map(String::as_str), Some("2")),
        other => return Err(format!("unexpected {other:?}").into()),
    }

    let listed = cms.list(&ListParams::default().labels("via=kube-rs")).await?;
    assert_eq!(listed.items.len(), 1);

    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"replicas": 1,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}))?;
    deploys.create(&d, &PostParams::default()).await?;
    let scale = deploys.patch_scale("web", &Patch::Merge(json!({"spec": {"replicas": 3}})), &PatchParams::default()).await?;
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(3));
    assert_eq!(deploys.get("web").await?.spec.replicas, Some(3));

    cms.delete("kube", &DeleteParams::background()).await?;
    assert!(cms.get_opt("kube").await?.is_none());
    Ok(())
}
