//! The runtime_layer example's `ImageAllowlist` in front of a runtime under a real node agent: an
//! allowed image runs; a refused one never reaches the runtime and its pod shows kubelet's
//! `CreateContainerError` with the policy's message.

use bosun_core::k8s_openapi::api::core::v1::Pod;
use bosun_core::{Api, Client, PostParams};
use bosun_examples::image_policy::ImageAllowlist;
use bosun_runtime::{ContainerRuntime, FakeRuntime, HostImages, NodeAgent, NodeAgentConfig};
use std::sync::Arc;
use std::time::Duration;

fn pod(name: &str, image: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": "policed", "terminationGracePeriodSeconds": 0, "containers": [{"name": "app", "image": image}]}
    }))
    .expect("pod")
}

/// The first container's waiting reason and message, if it waits.
fn waiting(p: &Pod) -> Option<(String, String)> {
    let s = p.status.as_ref()?.container_statuses.as_ref()?.first()?.state.as_ref()?.waiting.as_ref()?;
    Some((s.reason.clone().unwrap_or_default(), s.message.clone().unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_images_never_reach_the_runtime_and_their_pods_say_why() {
    let client: Arc<dyn Client> = bosun_store::ApiServer::in_memory();
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeRuntime::new();
    let runtime = Arc::new(ImageAllowlist::new(["registry.internal/"]).wrap(fake.clone()));
    let config = NodeAgentConfig::new("policed", dir.path()).measure_pressure(false).record_events(false);
    let node = NodeAgent::with_runtime(client.clone(), runtime.clone() as Arc<dyn ContainerRuntime>, Arc::new(HostImages), config)
        .start()
        .await
        .expect("agent");
    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    pods.create(&pod("ours", "registry.internal/web:1"), &PostParams::default()).await.expect("create");
    pods.create(&pod("theirs", "docker.io/library/nginx:latest"), &PostParams::default()).await.expect("create");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (ours, theirs) = loop {
        let ours = pods.get("ours").await.expect("get");
        let theirs = pods.get("theirs").await.expect("get");
        let running = ours.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        if (running && waiting(&theirs).is_some()) || tokio::time::Instant::now() >= deadline {
            break (ours, theirs);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ours.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Running"), "the allowed image runs");
    let (reason, message) = waiting(&theirs).expect("the refused pod's container waits");
    assert_eq!(reason, "CreateContainerError");
    assert!(message.contains("not from an allowed registry"), "{message}");
    assert_eq!(theirs.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Pending"));
    assert_eq!(fake.running(), 1, "only the allowed container reached the runtime");
    assert!(runtime.layer().refused() >= 1);
    node.shutdown();
}
