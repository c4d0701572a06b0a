//! Embedding the control plane in another program: an in-memory API server, the controllers and
//! the scheduler, a fake node, and a Deployment reconciled to running pods, in about 30 lines.
//!
//! Run with `cargo run -p bosun-examples --example embed`.

use bosun_core::k8s_openapi::api::apps::v1::Deployment;
use bosun_core::k8s_openapi::api::core::v1::Pod;
use bosun_core::{Api, Client, ListParams, PostParams};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let api = bosun_store::ApiServer::in_memory();
    let client: Arc<dyn Client> = api.clone();
    let informers = bosun_core::watch::Informers::new(client.clone());
    let _scheduler = bosun_scheduler::Scheduler::builder(client.clone()).informers(informers.clone()).build()?.start().await;
    tokio::spawn(bosun_controllers::ControllerManager::new(client.clone()).informers(&informers).run());
    let node = bosun_runtime::NodeAgentConfig::new("embedded-node", std::env::temp_dir().join("bosun-embed-node"));
    let _node = bosun_runtime::NodeAgent::new(client.clone(), bosun_runtime::FakeRuntime::default(), bosun_runtime::HostImages, node)
        .start()
        .await?;

    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "hello"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "hello"}},
            "template": {"metadata": {"labels": {"app": "hello"}}, "spec": {"containers": [{"name": "c", "image": "hello"}]}},
        },
    }))?;
    Api::<Deployment>::namespaced(client.clone(), "default").create(&deployment, &PostParams::default()).await?;

    let pods: Api<Pod> = Api::namespaced(client, "default");
    loop {
        let running = pods.list(&ListParams::default().labels("app=hello")).await?.items;
        let running = running.iter().filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")).count();
        println!("{running}/3 pods running");
        if running == 3 {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
