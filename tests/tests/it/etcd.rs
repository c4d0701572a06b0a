//! The quick start on `--etcd`: the reference cluster keeping its state in a real 3-member etcd
//! cluster, one member of which is killed mid-test; every later step goes through the other two.

use crate::kubectl::{KillContainers, Kubectl, etcd_available, kubectl_binary};
use crate::quickstart::{QuickStart, WAIT};
use bosun_examples::{Cluster, ClusterConfig, StoreChoice};
use bosun_store::storage::etcd_server::EtcdCluster;
use std::net::SocketAddr;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_runs_on_etcd_through_a_member_failure() {
    let Some(binary) = kubectl_binary() else { return };
    if !etcd_available() {
        return;
    }
    let mut etcd = EtcdCluster::start(3).await.unwrap_or_else(|e| panic!("start etcd: {e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let _cleanup = KillContainers(dir.path().join("data"));
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let config = ClusterConfig {
        data_dir: dir.path().join("data"),
        store: StoreChoice::Etcd(etcd.endpoints()),
        listen: any,
        kubeconfig: dir.path().join("kubeconfig"),
        dns: any,
        ingress: any,
        lease_renew: Duration::from_secs(2),
        ..ClusterConfig::default()
    };
    let cluster = Cluster::start(config).await.unwrap_or_else(|e| panic!("start cluster: {e}"));
    let k = Kubectl::new(binary, &dir.path().join("kubeconfig"), &dir.path().join("cache"));
    k.eventually(&["get", "nodes"], WAIT, |out| out.contains("node-1") && out.contains(" Ready ")).await;

    let app = QuickStart::deploy(&k).await;
    let uid = k.run(&["-n", "quickstart", "get", "deploy", "web", "-o", "jsonpath={.metadata.uid}"]);

    // A member dies (SIGKILL, as a crash would); the store carries on through the other two.
    etcd.stop_member(0);
    assert_eq!(etcd.endpoints().len(), 2);
    app.ingress(cluster.ingress_addr()).await;
    app.scale(5).await;
    app.update_and_undo().await;
    app.logs("127.");
    assert_eq!(k.run(&["-n", "quickstart", "get", "deploy", "web", "-o", "jsonpath={.metadata.uid}"]), uid, "the same Deployment");
    let ready = k.run(&["get", "--raw", "/readyz"]);
    assert_eq!(ready.trim(), "ok");

    // Self-healing: a pod deleted by hand is replaced.
    let victim = k.run(&["-n", "quickstart", "get", "pods", "-o", "jsonpath={.items[0].metadata.name}"]);
    k.run(&["-n", "quickstart", "delete", "pod", &victim, "--wait=true"]);
    k.eventually(&["-n", "quickstart", "get", "deploy", "web"], WAIT, |out| out.contains(" 5/5 ")).await;
    let pods = k.run(&["-n", "quickstart", "get", "pods", "-o", "name"]);
    assert!(!pods.contains(&victim), "{pods}");

    app.delete();
    cluster.shutdown().await;
}
