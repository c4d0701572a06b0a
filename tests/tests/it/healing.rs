//! Self-healing across nodes on the reference cluster with two node agents and the real kubectl:
//! a node agent that stops heartbeating loses its pods to the other node once the grace period
//! and the pods' unreachable toleration run out; `kubectl drain` moves pods off a node without
//! breaking their PodDisruptionBudget.

use crate::kubectl::{KillContainers, Kubectl, kubectl_binary};
use bosun_core::Api;
use bosun_core::k8s_openapi::api::core::v1::Pod;
use bosun_examples::{Cluster, ClusterConfig, StoreChoice};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(90);

fn config(dir: &Path) -> ClusterConfig {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    ClusterConfig {
        data_dir: dir.join("data"),
        store: StoreChoice::Memory,
        listen: any,
        kubeconfig: dir.join("kubeconfig"),
        dns: any,
        ingress: any,
        nodes: 2,
        lease_renew: Duration::from_secs(1),
        node_grace_period: Some(Duration::from_secs(4)),
        ..ClusterConfig::default()
    }
}

/// Live (not terminating) pods of `app` by node.
async fn placement(client: &std::sync::Arc<dyn bosun_core::Client>, app: &str) -> Vec<(String, String)> {
    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    let list = pods.list(&bosun_core::ListParams::default().labels(format!("app={app}"))).await.map(|l| l.items).unwrap_or_default();
    let mut out: Vec<(String, String)> = list
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let node = p.spec.and_then(|s| s.node_name).unwrap_or_default();
            let phase = p.status.and_then(|s| s.phase).unwrap_or_default();
            (node, phase)
        })
        .collect();
    out.sort();
    out
}

async fn eventually_placed(client: &std::sync::Arc<dyn bosun_core::Client>, app: &str, want: &[(&str, &str)], timeout: Duration) {
    let want: Vec<(String, String)> = want.iter().map(|(n, p)| ((*n).to_owned(), (*p).to_owned())).collect();
    let deadline = Instant::now() + timeout;
    loop {
        let now = placement(client, app).await;
        if now == want {
            return;
        }
        assert!(Instant::now() < deadline, "pods of {app} are {now:?}, not {want:?}, after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A cluster of two nodes running `manifest` (Deployment `deployment` rolled out) on node-1 only:
/// node-2 is cordoned while it starts.
async fn start_on_node_1(dir: &Path, binary: std::path::PathBuf, deployment: &str, manifest: &str) -> (Cluster, Kubectl) {
    let cluster = Cluster::start(config(dir)).await.unwrap_or_else(|e| panic!("start cluster: {e}"));
    let k = Kubectl::new(binary, &dir.join("kubeconfig"), &dir.join("cache"));
    k.eventually(&["get", "nodes"], WAIT, |out| out.matches(" Ready ").count() == 2).await;
    k.run(&["cordon", "node-2"]);
    let path = dir.join("app.yaml");
    std::fs::write(&path, manifest).unwrap_or_else(|e| panic!("write manifest: {e}"));
    k.run(&["apply", "-f", path.to_str().unwrap_or_default()]);
    k.run(&["rollout", "status", &format!("deploy/{deployment}"), "--timeout=90s"]);
    (cluster, k)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_loses_its_pods_to_the_other_node() {
    let Some(binary) = kubectl_binary() else { return };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let _cleanup = KillContainers(dir.path().join("data"));
    // Everything starts on node-1 (node-2 cordoned), with a 2 s toleration of unreachability.
    let (cluster, k) = start_on_node_1(
        dir.path(),
        binary,
        "sleeper",
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: sleeper, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: sleeper}}
  template:
    metadata: {labels: {app: sleeper}}
    spec:
      terminationGracePeriodSeconds: 1
      tolerations: [{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}]
      containers: [{name: main, image: busybox, command: [sleep, "3600"]}]
"#,
    )
    .await;
    let client = cluster.client();
    eventually_placed(&client, "sleeper", &[("node-1", "Running"), ("node-1", "Running")], WAIT).await;
    k.run(&["uncordon", "node-2"]);

    // node-1's agent stops: no more heartbeats (its containers are left running, as after a crash).
    let stopped = Instant::now();
    cluster.nodes()[0].shutdown();
    k.eventually(&["get", "node", "node-1", "-o", "jsonpath={.spec.taints[*].key}"], WAIT, |t| {
        t.contains("node.kubernetes.io/unreachable")
    })
    .await;
    let ready = k.run(&["get", "node", "node-1", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"]);
    assert_eq!(ready, "Unknown", "a silent node's Ready condition is Unknown");
    eventually_placed(&client, "sleeper", &[("node-2", "Running"), ("node-2", "Running")], WAIT).await;
    let took = stopped.elapsed();
    // 4 s grace + 2 s toleration + scheduling and start: well under the 5 minutes of the defaults.
    assert!(took < Duration::from_secs(60), "replacement took {took:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drain_moves_pods_within_their_disruption_budget() {
    let Some(binary) = kubectl_binary() else { return };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let _cleanup = KillContainers(dir.path().join("data"));
    let (cluster, k) = start_on_node_1(
        dir.path(),
        binary,
        "web",
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{name: main, image: busybox, command: [sleep, "3600"]}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web, namespace: default}
spec:
  minAvailable: 2
  selector: {matchLabels: {app: web}}
"#,
    )
    .await;
    let client = cluster.client();
    eventually_placed(&client, "web", &[("node-1", "Running"), ("node-1", "Running"), ("node-1", "Running")], WAIT).await;
    k.eventually(&["get", "pdb", "web", "-o", "jsonpath={.status.disruptionsAllowed}"], WAIT, |n| n == "1").await;
    k.run(&["uncordon", "node-2"]);

    // Watch the budget through the drain: never fewer than 2 Running pods.
    let watch_client = client.clone();
    let low = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX));
    let low_w = low.clone();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done_w = done.clone();
    let monitor = tokio::spawn(async move {
        while !done_w.load(std::sync::atomic::Ordering::SeqCst) {
            let running = placement(&watch_client, "web").await.iter().filter(|(_, phase)| phase == "Running").count();
            low_w.fetch_min(running, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let drained = k.run(&["drain", "node-1", "--ignore-daemonsets", "--timeout=120s"]);
    assert!(drained.contains("node/node-1 drained"), "{drained}");
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = monitor.await;
    assert!(low.load(std::sync::atomic::Ordering::SeqCst) >= 2, "the drain broke the budget (minAvailable 2)");
    let unschedulable = k.run(&["get", "node", "node-1", "-o", "jsonpath={.spec.unschedulable}"]);
    assert_eq!(unschedulable, "true", "drain cordons the node");
    eventually_placed(&client, "web", &[("node-2", "Running"), ("node-2", "Running"), ("node-2", "Running")], WAIT).await;
    cluster.shutdown().await;
}
