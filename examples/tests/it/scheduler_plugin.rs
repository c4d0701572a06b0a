//! The scheduler_plugin example's plugins in a real scheduler over the in-memory API server: the
//! maintenance Filter keeps pods off a draining node unless they opt in (and says so in the pod's
//! condition), the cost Score sends pods to the cheapest node in service, and a node leaving
//! maintenance lets the pod waiting for it in (the plugin's registered node-label event).

use bosun_core::k8s_openapi::api::core::v1::{Node, Pod};
use bosun_core::{Api, Client, Patch, PatchParams, PostParams};
use bosun_examples::scheduling::{self, HOURLY_COST, MAINTENANCE, MAINTENANCE_OK, UNDER_MAINTENANCE, pod};
use bosun_scheduler::Scheduler;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_and_cost_plugins_decide_where_pods_go_beside_the_default_plugins() {
    let client: Arc<dyn Client> = bosun_store::ApiServer::in_memory();
    let nodes = Api::<Node>::all(client.clone());
    for (name, cents, draining) in [("dear", "120", false), ("mid", "60", false), ("cheap", "35", false), ("draining", "10", true)] {
        let mut labels = vec![(HOURLY_COST, cents), ("kubernetes.io/hostname", name)];
        if draining {
            labels.push((MAINTENANCE, "true"));
        }
        nodes.create(&scheduling::node(name, &labels), &PostParams::default()).await.expect("node");
    }
    let running = Scheduler::builder(client.clone()).profile(scheduling::profile()).build().expect("scheduler").start().await;
    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    for p in [
        pod("a", &[], None),
        pod("b", &[], None),
        pod("tool", &[(MAINTENANCE_OK, "true")], None),
        pod("pinned", &[], Some("draining")),
        pod("pinned-mid", &[], Some("mid")),
    ] {
        pods.create(&p, &PostParams::default()).await.expect("pod");
    }
    let names = ["a", "b", "tool", "pinned", "pinned-mid"];
    let placed = scheduling::placements(&pods, &names, Duration::from_secs(20)).await.expect("placements");
    assert_eq!(placed.len(), names.len(), "every pod placed or refused: {placed:?}");
    // Cheapest node in service; the draining one is cheaper still but refuses them.
    assert_eq!(placed["a"], Ok("cheap".to_owned()));
    assert_eq!(placed["b"], Ok("cheap".to_owned()));
    // The opted-in pod goes to the cheapest node of all, the draining one.
    assert_eq!(placed["tool"], Ok("draining".to_owned()));
    // The defaults still rule: a node selector beats cost.
    assert_eq!(placed["pinned-mid"], Ok("mid".to_owned()));
    let why = placed["pinned"].clone().expect_err("pinned to a draining node: Pending");
    assert!(why.contains(&format!("1 {UNDER_MAINTENANCE}")), "the plugin's reason is in the condition: {why}");

    // Maintenance over: the waiting pod is retried on the node-label event and lands.
    let done = serde_json::json!({"metadata": {"labels": {MAINTENANCE: null}}});
    nodes.patch("draining", &Patch::Merge(done), &PatchParams::default()).await.expect("end maintenance");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let node = loop {
        let node = pods.get("pinned").await.expect("get").spec.and_then(|s| s.node_name);
        if node.is_some() || tokio::time::Instant::now() >= deadline {
            break node;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(node.as_deref(), Some("draining"), "bound once the node left maintenance");
    running.stop();
}
