//! Helpers shared by the node-agent tests.

use bosun_core::k8s_openapi::api::core::v1::Pod;
use bosun_core::{Api, Client, PostParams};
use std::sync::Arc;
use std::time::Duration;

/// An in-memory API server as a client.
pub fn api_server() -> Arc<dyn Client> {
    bosun_store::ApiServer::in_memory()
}

/// A pod bound to `node` from a JSON spec.
pub fn pod(name: &str, node: &str, spec: serde_json::Value) -> Pod {
    let mut spec = spec;
    spec["nodeName"] = serde_json::json!(node);
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": "default" },
        "spec": spec,
    }))
    .expect("pod json")
}

/// Creates a pod.
pub async fn create(client: &Arc<dyn Client>, pod: &Pod) -> Pod {
    Api::<Pod>::namespaced(client.clone(), "default").create(pod, &PostParams::default()).await.expect("create pod")
}

/// Polls a pod every `step` until `check` passes or `limit` passes (then panics with the last state).
pub async fn wait_pod(
    client: &Arc<dyn Client>,
    name: &str,
    limit: Duration,
    step: Duration,
    what: &str,
    check: impl Fn(&Pod) -> bool,
) -> Pod {
    let api = Api::<Pod>::namespaced(client.clone(), "default");
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let last = api.get_opt(name).await.expect("get pod");
        if let Some(p) = &last
            && check(p)
        {
            return p.clone();
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "pod {name}: {what} not reached within {limit:?}; last: {}",
                serde_json::to_string_pretty(&last.map(|p| p.status)).unwrap_or_default()
            );
        }
        tokio::time::sleep(step).await;
    }
}

/// The phase of a pod.
pub fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// The status of a named app container.
pub fn container<'a>(p: &'a Pod, name: &str) -> Option<&'a bosun_core::k8s_openapi::api::core::v1::ContainerStatus> {
    p.status.as_ref()?.container_statuses.as_ref()?.iter().find(|c| c.name == name)
}

/// The waiting reason of a named app container.
pub fn waiting_reason(p: &Pod, name: &str) -> Option<String> {
    container(p, name)?.state.as_ref()?.waiting.as_ref()?.reason.clone()
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The runtime id (without the `runtime://` prefix) of a named container.
pub fn container_id(p: &Pod, name: &str) -> Option<bosun_runtime::ContainerId> {
    let uri = container(p, name)?.container_id.clone()?;
    Some(bosun_runtime::ContainerId(uri.split_once("://").map_or(uri.clone(), |(_, id)| id.to_string())))
}

/// Whether components must be present (CI) rather than skipped.
pub fn require_components() -> bool {
    std::env::var("BOSUN_REQUIRE_COMPONENTS").is_ok_and(|v| v == "1")
}
