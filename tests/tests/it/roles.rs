//! The reference cluster split across processes' roles: a node process joining a control plane
//! over HTTPS, and two control planes sharing a real 3-member etcd cluster where the standby takes
//! over scheduling and reconciling when the leader dies, with nothing done twice.

use crate::kubectl::{KillContainers, Kubectl, etcd_available, kubectl_binary};
use bosun_core::Api;
use bosun_core::k8s_openapi::api::apps::v1::ReplicaSet;
use bosun_core::k8s_openapi::api::coordination::v1::Lease;
use bosun_core::k8s_openapi::api::core::v1::{Event, Pod};
use bosun_examples::{Cluster, ClusterConfig, Role, StoreChoice};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(90);

fn any() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn control_plane(dir: &Path, store: StoreChoice, identity: &str) -> ClusterConfig {
    ClusterConfig {
        data_dir: dir.join(identity),
        store,
        listen: any(),
        kubeconfig: dir.join(format!("{identity}.kubeconfig")),
        role: Role::ControlPlane,
        identity: Some(identity.to_owned()),
        ..ClusterConfig::default()
    }
}

fn node(dir: &Path, server: &str, kubeconfig: &Path, prefix: &str) -> ClusterConfig {
    ClusterConfig {
        data_dir: dir.join(prefix),
        listen: any(),
        kubeconfig: kubeconfig.to_owned(),
        dns: any(),
        ingress: any(),
        role: Role::Node,
        server: Some(server.to_owned()),
        node_prefix: prefix.to_owned(),
        lease_renew: Duration::from_secs(2),
        ..ClusterConfig::default()
    }
}

/// Deployment `sleeper` in `default`: `replicas` pods sleeping, with a short grace period.
fn create_sleepers(k: &Kubectl, replicas: usize) {
    let manifest = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: sleeper, namespace: default}}\nspec:\n  replicas: {replicas}\n  \
         selector: {{matchLabels: {{app: sleeper}}}}\n  template:\n    metadata: {{labels: {{app: sleeper}}}}\n    spec:\n      \
         terminationGracePeriodSeconds: 2\n      containers: [{{name: sleep, image: busybox, command: [sleep, \"300\"]}}]\n"
    );
    let out = k.output_with_stdin(&["apply", "-f", "-"], Some(manifest.as_bytes()));
    assert!(out.status.success(), "apply sleeper: {}", String::from_utf8_lossy(&out.stderr));
}

async fn holder(client: &std::sync::Arc<dyn bosun_core::Client>, lease: &str) -> Option<String> {
    let leases = Api::<Lease>::namespaced(client.clone(), "kube-system");
    leases.get_opt(lease).await.ok().flatten().and_then(|l| l.spec).and_then(|s| s.holder_identity)
}

async fn wait_for_holder(client: &std::sync::Arc<dyn bosun_core::Client>, lease: &str, identity: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let now = holder(client, lease).await;
        if now.as_deref() == Some(identity) {
            return;
        }
        assert!(Instant::now() < deadline, "lease {lease} is held by {now:?}, not {identity}, after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_process_joins_the_control_plane_over_https() {
    let Some(binary) = kubectl_binary() else { return };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let _cleanup = KillContainers(dir.path().join("worker"));
    let cp =
        Cluster::start(control_plane(dir.path(), StoreChoice::Memory, "cp")).await.unwrap_or_else(|e| panic!("start control plane: {e}"));
    assert!(cp.nodes().is_empty(), "a control-plane process runs no node agents");
    let kubeconfig = dir.path().join("cp.kubeconfig");
    let worker =
        Cluster::start(node(dir.path(), &cp.url(), &kubeconfig, "worker")).await.unwrap_or_else(|e| panic!("start node process: {e}"));
    assert!(worker.api_server().is_none(), "a node process serves no API");

    let k = Kubectl::new(binary, &kubeconfig, &dir.path().join("cache"));
    k.eventually(&["get", "nodes"], WAIT, |out| out.contains("worker-1") && out.contains(" Ready ")).await;
    k.run(&["create", "deployment", "sleeper", "--image=busybox", "--replicas=2", "--", "sleep", "300"]);
    k.run(&["rollout", "status", "deploy/sleeper", "--timeout=90s"]);
    let pods = k.run(&["get", "pods", "-l", "app=sleeper", "-o", "custom-columns=NODE:.spec.nodeName,PHASE:.status.phase", "--no-headers"]);
    assert_eq!(pods.lines().filter(|l| l.contains("worker-1") && l.contains("Running")).count(), 2, "{pods}");

    // The control plane's scheduler and controllers did it, under their leases.
    let client = cp.client();
    assert_eq!(holder(&client, "bosun-scheduler").await.as_deref(), Some("cp"));
    assert_eq!(holder(&client, "bosun-controller-manager").await.as_deref(), Some("cp"));

    k.run(&["delete", "deployment", "sleeper"]);
    k.eventually(&["get", "pods", "-l", "app=sleeper", "-o", "name"], WAIT, str::is_empty).await;
    worker.shutdown().await;
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_control_plane_takes_over_on_shared_etcd() {
    let Some(binary) = kubectl_binary() else { return };
    if !etcd_available() {
        return;
    }
    let mut etcd = bosun_store::storage::etcd_server::EtcdCluster::start(3).await.unwrap_or_else(|e| panic!("start etcd: {e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let _cleanup = KillContainers(dir.path().join("worker"));
    let store = StoreChoice::Etcd(etcd.endpoints());

    let a = Cluster::start(control_plane(dir.path(), store.clone(), "cp-a")).await.unwrap_or_else(|e| panic!("start cp-a: {e}"));
    wait_for_holder(&a.client(), "bosun-scheduler", "cp-a", WAIT).await;
    wait_for_holder(&a.client(), "bosun-controller-manager", "cp-a", WAIT).await;
    let b = Cluster::start(control_plane(dir.path(), store, "cp-b")).await.unwrap_or_else(|e| panic!("start cp-b: {e}"));
    // The node joins the standby's API server, which outlives the leader.
    let kubeconfig = dir.path().join("cp-b.kubeconfig");
    let worker =
        Cluster::start(node(dir.path(), &b.url(), &kubeconfig, "worker")).await.unwrap_or_else(|e| panic!("start node process: {e}"));
    let k = Kubectl::new(binary, &kubeconfig, &dir.path().join("cache"));
    k.eventually(&["get", "nodes"], WAIT, |out| out.contains("worker-1") && out.contains(" Ready ")).await;

    create_sleepers(&k, 3);
    k.run(&["rollout", "status", "deploy/sleeper", "--timeout=90s"]);
    // Still the leader's work: the standby only campaigns.
    assert_eq!(holder(&b.client(), "bosun-scheduler").await.as_deref(), Some("cp-a"));

    // The leader dies without releasing its leases, and an etcd member with it.
    a.shutdown().await;
    etcd.stop_member(0);
    let died = Instant::now();
    k.run(&["scale", "deployment", "sleeper", "--replicas=5"]);
    wait_for_holder(&b.client(), "bosun-controller-manager", "cp-b", Duration::from_secs(60)).await;
    wait_for_holder(&b.client(), "bosun-scheduler", "cp-b", Duration::from_secs(60)).await;
    let took = died.elapsed();
    // A 15 s lease, retried every 2 s: the standby leads within the lease duration plus a retry or two.
    assert!(took < Duration::from_secs(25), "take-over took {took:?}");
    k.run(&["rollout", "status", "deploy/sleeper", "--timeout=90s"]);

    // Nothing was done twice: one ReplicaSet, exactly five pods, each bound once to the node.
    let client = b.client();
    let replicasets = Api::<ReplicaSet>::namespaced(client.clone(), "default")
        .list_all(&Default::default())
        .await
        .unwrap_or_else(|e| panic!("list: {e}"))
        .items;
    assert_eq!(replicasets.len(), 1, "one ReplicaSet for one template");
    let pods = Api::<Pod>::namespaced(client, "default").list_all(&Default::default()).await.unwrap_or_else(|e| panic!("list: {e}")).items;
    let live: Vec<_> = pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    assert_eq!(live.len(), 5, "exactly the desired pods: {:?}", live.iter().map(|p| &p.metadata.name).collect::<Vec<_>>());
    assert!(live.iter().all(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("worker-1")));
    // The scheduler's Events (best effort: one may be lost while etcd elects a new leader): no pod
    // beyond these five was ever scheduled, none was scheduled twice, no binding failed.
    let events = Api::<Event>::namespaced(b.client(), "default")
        .list_all(&Default::default())
        .await
        .unwrap_or_else(|e| panic!("list events: {e}"))
        .items;
    let uids: std::collections::HashSet<_> = live.iter().filter_map(|p| p.metadata.uid.clone()).collect();
    let mut scheduled = std::collections::HashMap::new();
    for event in events.iter().filter(|e| e.involved_object.kind.as_deref() == Some("Pod")) {
        let uid = event.involved_object.uid.clone().unwrap_or_default();
        match event.reason.as_deref() {
            Some("Scheduled") => *scheduled.entry(uid).or_insert(0) += event.count.unwrap_or(1),
            Some("FailedScheduling") => panic!("a scheduling attempt failed: {:?}", event.message),
            _ => {}
        }
    }
    assert!(scheduled.len() >= 3, "the scheduler records its bindings: {scheduled:?}");
    assert!(scheduled.iter().all(|(uid, n)| uids.contains(uid) && *n == 1), "each live pod scheduled once, no other: {scheduled:?}");

    k.run(&["delete", "deployment", "sleeper"]);
    k.eventually(&["get", "pods", "-l", "app=sleeper", "-o", "name"], WAIT, str::is_empty).await;
    worker.shutdown().await;
    b.shutdown().await;
}
