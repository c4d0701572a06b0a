//! End-to-end scheduling through the API: binding, failure reporting, event-driven retries,
//! preemption, gates and profiles.

use crate::harness::{api_server, create_nodes, node, pod};
use bosun_core::k8s_openapi::api::core::v1::{Event, Node, Pod, PodSchedulingGate};
use bosun_core::{Api, Client, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use bosun_scheduler::Scheduler;
use std::sync::Arc;
use std::time::Duration;

async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn node_of(client: &Arc<dyn Client>, name: &str) -> Option<String> {
    let p = Api::<Pod>::namespaced(client.clone(), "default").get(name).await.ok()?;
    p.spec.and_then(|s| s.node_name)
}

async fn create(client: &Arc<dyn Client>, p: &Pod) {
    Api::<Pod>::namespaced(client.clone(), "default").create(p, &PostParams::default()).await.unwrap_or_else(|e| panic!("create pod: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_bound_through_the_api_and_spread_by_least_allocated() {
    let client = api_server();
    create_nodes(&client, "n", 3, 1).await.unwrap_or_else(|e| panic!("{e}"));
    let scheduler = Scheduler::builder(client.clone()).build().unwrap_or_else(|e| panic!("{e}"));
    let _running = scheduler.start().await;
    for i in 0..9 {
        create(&client, &pod(&format!("p{i}"), "1", "1Gi")).await;
    }
    let mut per_node = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..9 {
        let name = format!("p{i}");
        let n = eventually("binding", || node_of(&client, &name)).await;
        *per_node.entry(n).or_default() += 1;
    }
    // 3 CPU-heavy pods per 4-CPU node: LeastAllocated spreads them evenly.
    assert_eq!(per_node.values().copied().collect::<Vec<_>>(), [3, 3, 3]);
    let bound = Api::<Pod>::namespaced(client.clone(), "default").get("p0").await.unwrap_or_else(|e| panic!("{e}"));
    let conds = bound.status.and_then(|s| s.conditions).unwrap_or_default();
    assert!(conds.iter().any(|c| c.type_ == "PodScheduled" && c.status == "True"));
    let events = eventually("a Scheduled event", || async {
        let list = Api::<Event>::namespaced(client.clone(), "default").list(&ListParams::default()).await.ok()?;
        let n = list.items.iter().filter(|e| e.reason.as_deref() == Some("Scheduled")).count();
        (n == 9).then_some(list.items)
    })
    .await;
    assert!(events.iter().any(|e| e.message.as_deref().is_some_and(|m| m.starts_with("Successfully assigned default/"))));
    assert_eq!(scheduler.stats().scheduled, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unschedulable_pod_gets_the_kube_summary_and_is_retried_when_a_node_fits() {
    let client = api_server();
    let nodes = Api::<Node>::all(client.clone());
    nodes.create(&node("small", "z"), &PostParams::default()).await.unwrap_or_else(|e| panic!("{e}"));
    let mut tainted = node("tainted", "z");
    tainted.spec = Some(bosun_core::k8s_openapi::api::core::v1::NodeSpec {
        taints: Some(vec![bosun_core::k8s_openapi::api::core::v1::Taint {
            key: "dedicated".into(),
            value: Some("gpu".into()),
            effect: "NoSchedule".into(),
            ..Default::default()
        }]),
        ..Default::default()
    });
    nodes.create(&tainted, &PostParams::default()).await.unwrap_or_else(|e| panic!("{e}"));
    let scheduler = Scheduler::builder(client.clone()).build().unwrap_or_else(|e| panic!("{e}"));
    let _running = scheduler.start().await;
    create(&client, &pod("big", "8", "1Gi")).await;
    let api = Api::<Pod>::namespaced(client.clone(), "default");
    let message = eventually("a PodScheduled=False condition", || async {
        let p = api.get("big").await.ok()?;
        let c = p.status?.conditions?.into_iter().find(|c| c.type_ == "PodScheduled")?;
        (c.status == "False").then_some((c.reason, c.message))
    })
    .await;
    assert_eq!(message.0.as_deref(), Some("Unschedulable"));
    assert_eq!(
        message.1.as_deref(),
        Some(
            "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {dedicated: gpu}. \
             preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, \
             1 Preemption is not helpful for scheduling."
        )
    );
    let failed = eventually("a FailedScheduling event", || async {
        let list = Api::<Event>::namespaced(client.clone(), "default").list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| e.reason.as_deref() == Some("FailedScheduling"))
    })
    .await;
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    // A node big enough arrives: the NodeAdd event moves the pod at once (no 5-minute wait).
    let mut big = node("big-node", "z");
    if let Some(a) = big.status.as_mut().and_then(|s| s.allocatable.as_mut()) {
        a.insert("cpu".into(), bosun_core::k8s_openapi::apimachinery::pkg::api::resource::Quantity("16".into()));
    }
    nodes.create(&big, &PostParams::default()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(eventually("binding", || node_of(&client, "big")).await, "big-node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_priority_pod_preempts_and_lands_on_the_nominated_node() {
    let client = api_server();
    create_nodes(&client, "n", 1, 1).await.unwrap_or_else(|e| panic!("{e}"));
    let mut low = pod("low", "3", "1Gi");
    if let Some(s) = low.spec.as_mut() {
        s.priority = Some(1);
        s.node_name = Some("n-0".into());
    }
    create(&client, &low).await;
    let mut same = pod("same", "500m", "1Gi");
    if let Some(s) = same.spec.as_mut() {
        s.priority = Some(100);
        s.node_name = Some("n-0".into());
    }
    create(&client, &same).await;
    let scheduler = Scheduler::builder(client.clone()).victim_grace_period(0).build().unwrap_or_else(|e| panic!("{e}"));
    let _running = scheduler.start().await;
    let mut high = pod("high", "2", "1Gi");
    if let Some(s) = high.spec.as_mut() {
        s.priority = Some(100);
    }
    create(&client, &high).await;
    assert_eq!(eventually("binding after preemption", || node_of(&client, "high")).await, "n-0");
    let api = Api::<Pod>::namespaced(client.clone(), "default");
    assert!(api.get_opt("low").await.unwrap_or_else(|e| panic!("{e}")).is_none(), "the low-priority victim is gone");
    assert!(api.get_opt("same").await.unwrap_or_else(|e| panic!("{e}")).is_some(), "an equal-priority pod is never a victim");
    assert!(scheduler.stats().nominations >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gated_pods_wait_and_foreign_scheduler_names_are_left_alone() {
    let client = api_server();
    create_nodes(&client, "n", 1, 1).await.unwrap_or_else(|e| panic!("{e}"));
    let scheduler = Scheduler::builder(client.clone()).build().unwrap_or_else(|e| panic!("{e}"));
    let _running = scheduler.start().await;
    let mut gated = pod("gated", "100m", "500Mi");
    if let Some(s) = gated.spec.as_mut() {
        s.scheduling_gates = Some(vec![PodSchedulingGate { name: "example.com/hold".into() }]);
    }
    create(&client, &gated).await;
    let mut foreign = pod("foreign", "100m", "500Mi");
    if let Some(s) = foreign.spec.as_mut() {
        s.scheduler_name = Some("someone-else".into());
    }
    create(&client, &foreign).await;
    create(&client, &pod("plain", "100m", "500Mi")).await;
    eventually("the plain pod", || node_of(&client, "plain")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(node_of(&client, "gated").await, None);
    assert_eq!(node_of(&client, "foreign").await, None);
    let api = Api::<Pod>::namespaced(client.clone(), "default");
    let p = api.get("gated").await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        p.status.and_then(|s| s.conditions).unwrap_or_default().iter().all(|c| c.type_ != "PodScheduled" || c.status != "False"),
        "gated pods get no Unschedulable condition"
    );
    api.patch("gated", &Patch::Merge(serde_json::json!({"spec": {"schedulingGates": null}})), &PatchParams::default())
        .await
        .unwrap_or_else(|e| panic!("remove gates: {e}"));
    assert_eq!(eventually("the ungated pod", || node_of(&client, "gated")).await, "n-0");
    // Deleting a pending pod removes it from the queue.
    api.delete("foreign", &DeleteParams::default()).await.unwrap_or_else(|e| panic!("{e}"));
}
