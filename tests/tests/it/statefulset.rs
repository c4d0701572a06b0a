//! A StatefulSet with a volume claim template on the reference cluster, with the real kubectl:
//! the default `local-path` class provisions a volume on the node the scheduler picked, the pod
//! writes to it, the data outlives the pod, and the claims outlive a scale-down.

use crate::kubectl::{KillContainers, Kubectl, kubectl_binary};
use bosun_examples::{Cluster, ClusterConfig, StoreChoice};
use std::net::SocketAddr;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

const MANIFEST: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{port: 5432}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: default}
spec:
  serviceName: db
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: db
        image: busybox
        command: ["sh", "-c", "echo started >> /data/boots && exec sleep 3600"]
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
"#;

fn running_root() -> bool {
    std::process::Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statefulset_keeps_its_volume_across_pod_restarts() {
    let Some(binary) = kubectl_binary() else { return };
    if !running_root() {
        // The process runtime mounts volumes in a private mount namespace, which needs root here.
        assert!(std::env::var("BOSUN_REQUIRE_COMPONENTS").as_deref() != Ok("1"), "root is required (BOSUN_REQUIRE_COMPONENTS=1)");
        eprintln!("\n!!! SKIPPING the StatefulSet volume test: volume mounts on the process runtime need root !!!\n");
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let _cleanup = KillContainers(dir.path().join("data"));
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let config = ClusterConfig {
        data_dir: dir.path().join("data"),
        store: StoreChoice::Memory,
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
    let classes = k.eventually(&["get", "storageclass"], WAIT, |out| out.contains("local-path")).await;
    assert!(classes.contains("(default)") && classes.contains("WaitForFirstConsumer"), "{classes}");

    let manifest = dir.path().join("db.yaml");
    std::fs::write(&manifest, MANIFEST).unwrap_or_else(|e| panic!("write manifest: {e}"));
    k.run(&["apply", "-f", manifest.to_str().unwrap_or_default()]);
    k.run(&["rollout", "status", "statefulset/db", "--timeout=90s"]);
    let claims =
        k.run(&["get", "pvc", "-o", "custom-columns=NAME:.metadata.name,PHASE:.status.phase,CLASS:.spec.storageClassName", "--no-headers"]);
    for name in ["data-db-0", "data-db-1"] {
        assert!(claims.lines().any(|l| l.contains(name) && l.contains("Bound") && l.contains("local-path")), "{claims}");
    }

    // The volume of db-0 is a directory under the data dir, pinned to the node; the pod wrote to it.
    let volume = k.run(&["get", "pvc", "data-db-0", "-o", "jsonpath={.spec.volumeName}"]);
    let path = k.run(&["get", "pv", &volume, "-o", "jsonpath={.spec.hostPath.path}"]);
    assert!(path.starts_with(&dir.path().join("data/local-path").to_string_lossy().into_owned()), "volume path {path}");
    let boots = std::path::Path::new(&path).join("boots");
    let read = || std::fs::read_to_string(&boots).unwrap_or_default().lines().count();
    let deadline = std::time::Instant::now() + WAIT;
    while read() < 1 {
        assert!(std::time::Instant::now() < deadline, "db-0 never wrote to its volume at {path}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A new db-0 gets the same claim and sees what the old one wrote. Not `kubectl delete --wait`:
    // kubectl GETs the pod after its DELETE and then LISTs by name to watch for the deletion; the
    // node agent finishes a pod whose process exits on SIGTERM within milliseconds and the
    // StatefulSet controller recreates db-0 at once, so under load that LIST can already return
    // the new db-0, and kubectl then waits for a DELETED event that came before its watch
    // (seen with -v=8: its GET returned the old pod, its LIST right after it the new one). Waiting for
    // the old UID to disappear is what `--wait` means here.
    let old_uid = k.run(&["get", "pod", "db-0", "-o", "jsonpath={.metadata.uid}"]);
    assert!(!old_uid.is_empty());
    k.run(&["delete", "pod", "db-0", "--wait=false"]);
    k.eventually(&["get", "pods", "-o", "jsonpath={.items[*].metadata.uid}"], WAIT, |uids| !uids.contains(old_uid.as_str())).await;
    let deadline = std::time::Instant::now() + WAIT;
    while read() < 2 {
        assert!(std::time::Instant::now() < deadline, "the recreated db-0 did not append to the same volume");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_ne!(k.run(&["get", "pod", "db-0", "-o", "jsonpath={.metadata.uid}"]), old_uid, "db-0 is a new pod");
    assert_eq!(k.run(&["get", "pvc", "data-db-0", "-o", "jsonpath={.spec.volumeName}"]), volume, "same claim, same volume");

    // Scale down keeps the claims (Retain is the default retention policy).
    k.run(&["scale", "statefulset/db", "--replicas=1"]);
    k.eventually(&["get", "pods", "-o", "name"], WAIT, |out| !out.contains("db-1")).await;
    assert!(k.run(&["get", "pvc", "-o", "name"]).contains("data-db-1"));

    k.run(&["delete", "-f", manifest.to_str().unwrap_or_default()]);
    k.eventually(&["get", "pods", "-o", "name"], WAIT, str::is_empty).await;
    cluster.shutdown().await;
}
