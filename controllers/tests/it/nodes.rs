//! The node lifecycle controller: heartbeats through Leases, unreachable taints, evictions.

use crate::support::*;
use bosun_controllers::builtin::nodelifecycle::{LEASE_NAMESPACE, NodeLifecycleConfig, UNREACHABLE_TAINT};
use bosun_controllers::builtin::pod_is_active;
use bosun_controllers::{Harness, ManagerConfig, clock};
use bosun_core::{Api, ListParams, Patch, PatchParams, PostParams};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

type Res = Result<(), Box<dyn std::error::Error>>;

async fn add_node(h: &Harness, name: &str) -> Result<(), bosun_core::Error> {
    let nodes = Api::<Node>::all(h.client());
    let node = Node { metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() }, ..Node::default() };
    nodes.create(&node, &PostParams::default()).await?;
    let now = clock::now_time();
    let status = serde_json::json!({"status": {"conditions": [
        {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastTransitionTime": now, "lastHeartbeatTime": now}
    ]}});
    nodes.patch_status(name, &Patch::Merge(status), &PatchParams::default()).await?;
    renew(h, name).await
}

/// Creates or renews the node's heartbeat Lease, as the node agent does.
async fn renew(h: &Harness, name: &str) -> Result<(), bosun_core::Error> {
    let leases = Api::<Lease>::namespaced(h.client(), LEASE_NAMESPACE);
    let lease = Lease {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some(LEASE_NAMESPACE.into()), ..ObjectMeta::default() },
        spec: Some(LeaseSpec {
            holder_identity: Some(name.into()),
            lease_duration_seconds: Some(40),
            renew_time: Some(clock::now_micro()),
            ..LeaseSpec::default()
        }),
    };
    match leases.get_opt(name).await? {
        None => leases.create(&lease, &PostParams::default()).await.map(drop),
        Some(_) => {
            let patch = serde_json::json!({"spec": {"renewTime": clock::now_micro()}});
            leases.patch(name, &Patch::Merge(patch), &PatchParams::default()).await.map(drop)
        }
    }
}

/// Node agents that renew their leases every 10 s while their flag is up.
fn heartbeats(h: &Harness, nodes: Vec<(String, Arc<AtomicBool>)>) -> tokio::task::JoinHandle<()> {
    let client = h.client();
    tokio::spawn(async move {
        let leases = Api::<Lease>::namespaced(client, LEASE_NAMESPACE);
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            for (name, alive) in &nodes {
                if alive.load(Ordering::SeqCst) {
                    let patch = serde_json::json!({"spec": {"renewTime": clock::now_micro()}});
                    let _ = leases.patch(name, &Patch::Merge(patch), &PatchParams::default()).await;
                }
            }
        }
    })
}

fn unreachable(node: &Node) -> bool {
    node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default().iter().any(|t| t.key == UNREACHABLE_TAINT)
}

/// A minimal scheduler: binds unassigned pods round-robin to nodes without the unreachable taint.
fn binder(h: &Harness) -> tokio::task::JoinHandle<()> {
    let client = h.client();
    tokio::spawn(async move {
        let pods = Api::<Pod>::all(client.clone());
        let nodes = Api::<Node>::all(client.clone());
        let mut turn = 0usize;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (Ok(pl), Ok(nl)) = (pods.list(&ListParams::default()).await, nodes.list(&ListParams::default()).await) else { continue };
            let healthy: Vec<String> = nl.items.iter().filter(|n| !unreachable(n)).filter_map(|n| n.metadata.name.clone()).collect();
            if healthy.is_empty() {
                continue;
            }
            for p in pl.items.iter().filter(|p| pod_is_active(p) && node_name(p).is_none()) {
                let ns = p.metadata.namespace.as_deref().unwrap_or("default");
                let node = &healthy[turn % healthy.len()];
                turn += 1;
                let _ = Api::<Pod>::namespaced(client.clone(), ns).bind(p.metadata.name.as_deref().unwrap_or_default(), node).await;
            }
        }
    })
}

fn node_name(p: &Pod) -> Option<String> {
    p.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty())
}

/// Active pods per node (unbound under "").
async fn placement(api: &Api<Pod>) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in api.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default().into_iter().filter(pod_is_active) {
        out.entry(node_name(&p).unwrap_or_default()).or_default().insert(p.metadata.name.clone().unwrap_or_default());
    }
    out
}

async fn setup(config: NodeLifecycleConfig) -> Result<(Harness, Arc<AtomicBool>, Vec<tokio::task::JoinHandle<()>>), bosun_core::Error> {
    let mut h = Harness::new(server());
    let ns = Namespace { metadata: ObjectMeta { name: Some(LEASE_NAMESPACE.into()), ..ObjectMeta::default() }, ..Namespace::default() };
    match Api::<Namespace>::all(h.client()).create(&ns, &PostParams::default()).await {
        Err(e) if e.reason() != "AlreadyExists" => return Err(e),
        _ => {}
    }
    add_node(&h, "node-a").await?;
    add_node(&h, "node-b").await?;
    h.start_builtins(ManagerConfig::default().only(&["replicaset", "deployment", "nodelifecycle"]).node_lifecycle(config));
    h.start_kubelet();
    let b_alive = Arc::new(AtomicBool::new(true));
    let tasks =
        vec![heartbeats(&h, vec![("node-a".into(), Arc::new(AtomicBool::new(true))), ("node-b".into(), b_alive.clone())]), binder(&h)];
    Ok((h, b_alive, tasks))
}

#[tokio::test(start_paused = true)]
async fn a_silent_node_is_tainted_and_its_pods_move_after_the_timeouts() -> Res {
    let (h, b_alive, _tasks) = setup(NodeLifecycleConfig::default()).await?;
    let deploys = Api::<Deployment>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    let nodes = Api::<Node>::all(h.client());
    deploys.create(&deployment("web", 4, 1, 0), &PostParams::default()).await?;
    let mut before = BTreeMap::new();
    for _ in 0..60 {
        let p = placement(&pods).await;
        before = p.clone();
        if p.get("node-a").map_or(0, BTreeSet::len) == 2 && p.get("node-b").map_or(0, BTreeSet::len) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(before.get("node-b").map(BTreeSet::len), Some(2), "pods spread over both nodes: {before:?}");
    let on_a = before.get("node-a").cloned().unwrap_or_default();

    // Two minutes of healthy heartbeats: nothing is tainted or evicted.
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(!unreachable(&nodes.get("node-a").await?) && !unreachable(&nodes.get("node-b").await?));
    assert_eq!(placement(&pods).await, before, "no eviction from healthy nodes");

    b_alive.store(false, Ordering::SeqCst);
    let stopped = tokio::time::Instant::now();
    // Within the grace period (50 s) and a heartbeat interval, node-b is tainted and not ready.
    tokio::time::sleep(Duration::from_secs(75)).await;
    let b = nodes.get("node-b").await?;
    assert!(unreachable(&b), "node-b is tainted unreachable");
    let effects: BTreeSet<String> =
        b.spec.and_then(|s| s.taints).unwrap_or_default().into_iter().filter(|t| t.key == UNREACHABLE_TAINT).map(|t| t.effect).collect();
    assert_eq!(effects, ["NoExecute".to_owned(), "NoSchedule".to_owned()].into());
    let ready = b.status.and_then(|s| s.conditions).unwrap_or_default().into_iter().find(|c| c.type_ == "Ready").map(|c| c.status);
    assert_eq!(ready.as_deref(), Some("Unknown"));
    assert!(!unreachable(&nodes.get("node-a").await?));
    // The pods tolerate the taint for the default 300 s: still there.
    assert_eq!(placement(&pods).await.get("node-b").map(BTreeSet::len), Some(2));

    tokio::time::sleep(Duration::from_secs(300)).await;
    let after = placement(&pods).await;
    let elapsed = stopped.elapsed();
    assert!(elapsed >= Duration::from_secs(350), "evicted no earlier than grace + toleration ({elapsed:?})");
    assert_eq!(after.get("node-b"), None, "node-b's pods were evicted: {after:?}");
    let now_a = after.get("node-a").cloned().unwrap_or_default();
    assert_eq!(now_a.len(), 4, "replaced on node-a: {after:?}");
    assert!(on_a.is_subset(&now_a), "node-a's own pods were never evicted");

    // Heartbeats resume: the taints go and the node is ready again.
    b_alive.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let b = nodes.get("node-b").await?;
    assert!(!unreachable(&b), "taints removed after heartbeats resume");
    let ready = b.status.and_then(|s| s.conditions).unwrap_or_default().into_iter().find(|c| c.type_ == "Ready").map(|c| c.status);
    assert_eq!(ready.as_deref(), Some("True"));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn the_grace_period_and_the_toleration_are_configurable() -> Res {
    let (h, b_alive, _tasks) = setup(NodeLifecycleConfig::default().grace_period(Duration::from_secs(15))).await?;
    let deploys = Api::<Deployment>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    let mut d = deployment("web", 2, 1, 0);
    if let Some(spec) = d.spec.template.spec.as_mut() {
        spec.tolerations = Some(vec![k8s_openapi::api::core::v1::Toleration {
            key: Some(UNREACHABLE_TAINT.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: Some(20),
            value: None,
        }]);
    }
    deploys.create(&d, &PostParams::default()).await?;
    for _ in 0..60 {
        if placement(&pods).await.get("node-b").map_or(0, BTreeSet::len) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(placement(&pods).await.get("node-b").map(BTreeSet::len), Some(1), "one pod on node-b");
    b_alive.store(false, Ordering::SeqCst);
    // Last renewal at most 10 s ago: tainted within 15 s + 10 s, evicted 20 s later.
    tokio::time::sleep(Duration::from_secs(22)).await;
    assert_eq!(placement(&pods).await.get("node-b").map(BTreeSet::len), Some(1), "still tolerated");
    tokio::time::sleep(Duration::from_secs(40)).await;
    let after = placement(&pods).await;
    assert_eq!(after.get("node-b"), None, "evicted after grace + 20 s: {after:?}");
    assert_eq!(after.get("node-a").map(BTreeSet::len), Some(2));
    Ok(())
}
