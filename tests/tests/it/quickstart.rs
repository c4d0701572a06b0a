//! The README quick start, scripted against the reference cluster with the real kubectl:
//! apply, get, HTTP through the Service and the Ingress, scale, rolling update, rollback, logs,
//! self-healing, delete, and a restart on the same data directory.

use crate::kubectl::{KillContainers, Kubectl, http_eventually, kubectl_binary};
use bosun_examples::{Cluster, ClusterConfig, StoreChoice};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

fn manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/manifests/quickstart.yaml")
}

fn config(dir: &Path) -> ClusterConfig {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    ClusterConfig {
        data_dir: dir.join("data"),
        store: StoreChoice::Durable,
        listen: any,
        kubeconfig: dir.join("kubeconfig"),
        dns: any,
        ingress: any,
        lease_renew: Duration::from_secs(2),
        ..ClusterConfig::default()
    }
}

/// Waits for the Deployment's rollout; on failure prints what the pods say before failing.
fn rollout(k: &Kubectl) {
    let (ok, stdout, stderr) = k.try_run(&["-n", "quickstart", "rollout", "status", "deploy/web", "--timeout=120s"]);
    if !ok {
        let (_, pods, _) = k.try_run(&["-n", "quickstart", "get", "pods", "-o", "wide"]);
        let (_, describe, _) = k.try_run(&["-n", "quickstart", "describe", "pods"]);
        panic!("rollout failed:\n{stdout}\n{stderr}\n{pods}\n{describe}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_works_end_to_end() {
    let Some(binary) = kubectl_binary() else { return };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let _cleanup = KillContainers(dir.path().join("data"));
    let cluster = Cluster::start(config(dir.path())).await.unwrap_or_else(|e| panic!("start cluster: {e}"));
    let k = Kubectl::new(binary, &dir.path().join("kubeconfig"), &dir.path().join("cache"));

    k.eventually(&["get", "nodes"], WAIT, |out| out.contains("node-1") && out.contains(" Ready ")).await;
    let applied = k.run(&["apply", "-f", manifest().to_str().unwrap_or_default()]);
    for what in
        ["namespace/quickstart created", "deployment.apps/web created", "service/web created", "ingress.networking.k8s.io/web created"]
    {
        assert!(applied.contains(what), "{applied}");
    }
    rollout(&k);
    let pods = k.run(&["-n", "quickstart", "get", "pods"]);
    assert_eq!(pods.lines().filter(|l| l.contains("1/1") && l.contains("Running")).count(), 3, "{pods}");
    let deploy = k.run(&["-n", "quickstart", "get", "deploy", "web"]);
    assert!(deploy.contains("READY") && deploy.contains("3/3"), "{deploy}");

    // HTTP through the Service's ClusterIP (the userspace proxy) reaches every replica.
    let ip = k.run(&["-n", "quickstart", "get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let service = format!("{ip}:80");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..30 {
        let body = http_eventually(&service, "web", WAIT, |b| b.contains("hello from bosun (v1)")).await;
        seen.insert(body.split(" from ").nth(2).map(str::to_owned));
        if seen.len() == 3 {
            break;
        }
    }
    assert_eq!(seen.len(), 3, "round robin should reach all three replicas: {seen:?}");
    assert!(http_eventually(&service, "web", WAIT, |_| true).await.contains("token has 6 characters"), "the Secret reaches the app");

    // And through the Ingress by host name.
    let ingress = cluster.ingress_addr().map(|a| a.to_string()).unwrap_or_default();
    http_eventually(&ingress, "web.quickstart.local", WAIT, |b| b.contains("hello from bosun")).await;
    let ingress_ip = cluster.ingress_addr().map(|a| a.ip().to_string()).unwrap_or_default();
    let listed = k.eventually(&["-n", "quickstart", "get", "ingress", "web"], WAIT, |out| out.contains(&ingress_ip)).await;
    assert!(listed.contains("ADDRESS"), "kubectl shows the Ingress's address: {listed}");

    // Scale.
    k.run(&["-n", "quickstart", "scale", "deploy/web", "--replicas=5"]);
    k.eventually(&["-n", "quickstart", "get", "deploy", "web"], WAIT, |out| out.contains("5/5")).await;

    // Rolling update of the command's input, then rollback.
    k.run(&["-n", "quickstart", "set", "env", "deploy/web", "GREETING=hi from v2"]);
    rollout(&k);
    http_eventually(&service, "web", WAIT, |b| b.starts_with("hi from v2")).await;
    let history = k.run(&["-n", "quickstart", "rollout", "history", "deploy/web"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");
    k.run(&["-n", "quickstart", "rollout", "undo", "deploy/web"]);
    rollout(&k);
    http_eventually(&service, "web", WAIT, |b| b.contains("hello from bosun (v1)")).await;

    // Logs.
    let logs = k.run(&["-n", "quickstart", "logs", "deploy/web"]);
    assert!(logs.contains("serving on 127."), "{logs}");

    // Self-healing: a pod deleted by hand is replaced.
    let victim = k.run(&["-n", "quickstart", "get", "pods", "-o", "jsonpath={.items[0].metadata.name}"]);
    k.run(&["-n", "quickstart", "delete", "pod", &victim, "--wait=true"]);
    k.eventually(&["-n", "quickstart", "get", "deploy", "web"], WAIT, |out| out.contains("5/5")).await;
    let pods = k.run(&["-n", "quickstart", "get", "pods", "-o", "name"]);
    assert!(!pods.contains(&victim), "{pods}");

    // Restart on the same data directory: objects and revisions come back.
    let rv_before = k.run(&["-n", "quickstart", "get", "deploy", "web", "-o", "jsonpath={.metadata.uid}"]);
    cluster.shutdown().await;
    let cluster = Cluster::start(config(dir.path())).await.unwrap_or_else(|e| panic!("restart cluster: {e}"));
    let rv_after =
        k.eventually(&["-n", "quickstart", "get", "deploy", "web", "-o", "jsonpath={.metadata.uid}"], WAIT, |o| !o.is_empty()).await;
    assert_eq!(rv_before, rv_after, "the same Deployment object survives the restart");
    let cm = k.run(&["-n", "quickstart", "get", "configmap", "web-config", "-o", "jsonpath={.data.greeting}"]);
    assert_eq!(cm, "hello from bosun");

    // Delete everything; the namespace goes once its contents are gone.
    k.run(&["delete", "namespace", "quickstart", "--wait=true", "--timeout=90s"]);
    let (ok, _, stderr) = k.try_run(&["get", "namespace", "quickstart"]);
    assert!(!ok && stderr.contains("NotFound"), "{stderr}");
    cluster.shutdown().await;
}
