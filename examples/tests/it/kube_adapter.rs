//! The config reloader (the kube_adapter example) driven through `KubeClient` over real HTTPS,
//! against bosun's own API server standing in for a Kubernetes cluster.

use std::sync::Arc;
use std::time::Duration;

use bosun_core::k8s_openapi::api::apps::v1::Deployment;
use bosun_core::k8s_openapi::api::core::v1::ConfigMap;
use bosun_core::kube_client::KubeClient;
use bosun_core::{Api, Client, Patch, PatchParams, PostParams};
use bosun_examples::reloader::{self, HASH, config_hash};
use bosun_store::ApiServer;
use bosun_store::http::HttpConfig;

const WAIT: Duration = Duration::from_secs(20);

fn template_hash(d: &Deployment) -> Option<String> {
    d.spec.template.metadata.as_ref()?.annotations.as_ref()?.get(HASH).cloned()
}

async fn wait_for_hash(api: &Api<Deployment>, name: &str, want: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let d = api.get(name).await.unwrap_or_else(|e| panic!("get {name}: {e}"));
        if template_hash(&d).as_deref() == Some(want) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{name} has hash {:?}, not {want}, after {WAIT:?}", template_hash(&d));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn deployment(name: &str, follows: Option<&str>) -> Deployment {
    let mut d: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
        },
    }))
    .unwrap_or_else(|e| panic!("deployment: {e}"));
    d.metadata.annotations = follows.map(reloader::follow);
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reloader_rolls_a_deployment_through_kube_client_over_https() {
    let api = ApiServer::in_memory();
    let local: Arc<dyn Client> = api.clone();
    let addr = "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("addr: {e}"));
    let server = bosun_store::http::serve(local.clone(), HttpConfig::for_api_server(&api).https(addr))
        .await
        .unwrap_or_else(|e| panic!("serve: {e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap_or_else(|e| panic!("kubeconfig: {e}"));

    // The controller sees the cluster only through HTTPS, as it would see a real one.
    let kube: Arc<dyn Client> = Arc::new(KubeClient::from_kubeconfig(&kubeconfig).await.unwrap_or_else(|e| panic!("kube client: {e}")));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let reloader = tokio::spawn(reloader::run(kube, Some("default"), async {
        let _ = stopped.await;
    }));

    let configs = Api::<ConfigMap>::namespaced(local.clone(), "default");
    let deployments = Api::<Deployment>::namespaced(local.clone(), "default");
    let mut config = ConfigMap {
        metadata: bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("app-config".into()),
            ..Default::default()
        },
        data: Some([("greeting".to_owned(), "hi".to_owned())].into()),
        ..ConfigMap::default()
    };
    configs.create(&config, &PostParams::default()).await.unwrap_or_else(|e| panic!("create configmap: {e}"));
    deployments.create(&deployment("app", Some("app-config")), &PostParams::default()).await.unwrap_or_else(|e| panic!("create: {e}"));
    deployments.create(&deployment("bystander", None), &PostParams::default()).await.unwrap_or_else(|e| panic!("create: {e}"));
    deployments.create(&deployment("early", Some("later-config")), &PostParams::default()).await.unwrap_or_else(|e| panic!("create: {e}"));
    let first = config_hash(Some(&config));
    wait_for_hash(&deployments, "app", &first).await;
    wait_for_hash(&deployments, "early", "absent").await;

    // Editing the ConfigMap rolls the Deployment that follows it.
    let patch = serde_json::json!({"data": {"greeting": "hello"}});
    config = configs.patch("app-config", &Patch::Merge(patch), &PatchParams::default()).await.unwrap_or_else(|e| panic!("edit: {e}"));
    let second = config_hash(Some(&config));
    assert_ne!(first, second);
    wait_for_hash(&deployments, "app", &second).await;
    let app = deployments.get("app").await.unwrap_or_else(|e| panic!("get: {e}"));
    assert_eq!(app.metadata.generation, Some(3), "one template change per hash: created, stamped, edited");

    // A ConfigMap that appears later reaches the Deployment waiting for it.
    config.metadata =
        bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta { name: Some("later-config".into()), ..Default::default() };
    configs.create(&config, &PostParams::default()).await.unwrap_or_else(|e| panic!("create: {e}"));
    wait_for_hash(&deployments, "early", &second).await;

    let bystander = deployments.get("bystander").await.unwrap_or_else(|e| panic!("get: {e}"));
    assert_eq!(template_hash(&bystander), None, "a Deployment without the annotation is left alone");
    assert_eq!(bystander.metadata.generation, Some(1));

    let _ = stop.send(());
    tokio::time::timeout(WAIT, reloader).await.unwrap_or_else(|e| panic!("reloader did not stop: {e}")).unwrap_or_else(|e| panic!("{e}"));
}
