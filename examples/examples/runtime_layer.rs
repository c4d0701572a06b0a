//! A runtime layer: `ImageAllowlist` (in `examples/src/image_policy.rs`) wraps a container runtime
//! and refuses images outside the allowed registries, whatever the runtime behind it (here the
//! fake one, so that nothing needs privileges). A layer implements one method,
//! `bosun_runtime::layer::RuntimeLayer::call`; `LayeredRuntime` implements `ContainerRuntime`
//! around it, so the node agent takes it like any runtime.
//!
//! One node agent, two pods: `ours` (from `registry.internal/`) runs; `theirs` (from Docker Hub)
//! stays Pending with kubelet's `CreateContainerError` and the policy's message.
//!
//! `cargo run -p bosun-examples --example runtime_layer`

use bosun_core::k8s_openapi::api::core::v1::Pod;
use bosun_core::{Api, Client, PostParams};
use bosun_examples::image_policy::ImageAllowlist;
use bosun_runtime::{FakeRuntime, HostImages, NodeAgent, NodeAgentConfig};
use std::sync::Arc;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client: Arc<dyn Client> = bosun_store::ApiServer::in_memory();
    let dir = tempfile::tempdir()?;
    let runtime = ImageAllowlist::new(["registry.internal/"]).wrap(FakeRuntime::new());
    let config = NodeAgentConfig::new("policed", dir.path()).measure_pressure(false);
    let node = NodeAgent::new(client.clone(), runtime, HostImages, config).start().await?;

    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    for (name, image) in [("ours", "registry.internal/web:1"), ("theirs", "docker.io/library/nginx:latest")] {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"nodeName": "policed", "containers": [{"name": "app", "image": image}]}
        }))?;
        pods.create(&pod, &PostParams::default()).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for name in ["ours", "theirs"] {
        let pod = pods.get(name).await?;
        let status = pod.status.unwrap_or_default();
        let waiting =
            status.container_statuses.as_ref().and_then(|c| c.first()).and_then(|c| c.state.as_ref()).and_then(|s| s.waiting.clone());
        match waiting {
            Some(w) => println!(
                "{name:7} {}: {} ({})",
                status.phase.unwrap_or_default(),
                w.reason.unwrap_or_default(),
                w.message.unwrap_or_default()
            ),
            None => println!("{name:7} {}", status.phase.unwrap_or_default()),
        }
    }
    node.shutdown();
    Ok(())
}
