//! The README quick start, scripted against the reference cluster with the real kubectl:
//! apply, get, HTTP through the Service and the Ingress, scale, rolling update, rollback, logs,
//! self-healing, delete, and a restart on the same data directory.
//!
//! [`QuickStart`] holds the steps every run of the quick-start app shares (here on the process
//! runtime, in `runc_nftables` on runc and nftables, in `etcd` on a 3-member etcd cluster).

use crate::kubectl::{KillContainers, Kubectl, http_eventually, kubectl_binary};
use bosun_examples::{Cluster, ClusterConfig, StoreChoice};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const WAIT: Duration = Duration::from_secs(90);

/// examples/manifests/quickstart.yaml.
pub fn manifest() -> PathBuf {
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

/// The quick-start app on a running cluster, one asserted step at a time.
pub struct QuickStart<'a> {
    pub k: &'a Kubectl,
    /// The Service's `ClusterIP:80`.
    pub service: String,
}

impl<'a> QuickStart<'a> {
    /// Applies the manifest and waits for the rollout: everything created, 3 pods Running and
    /// ready, and HTTP through the Service's ClusterIP (from this host) reaching every replica
    /// with the ConfigMap's greeting and the Secret's token.
    pub async fn deploy(k: &'a Kubectl) -> Self {
        let applied = k.run(&["apply", "-f", manifest().to_str().unwrap_or_default()]);
        for what in [
            "namespace/quickstart created",
            "configmap/web-config created",
            "secret/web-secret created",
            "deployment.apps/web created",
            "service/web created",
            "ingress.networking.k8s.io/web created",
        ] {
            assert!(applied.contains(what), "{applied}");
        }
        let app = Self { k, service: String::new() };
        app.rollout();
        let pods = k.run(&["-n", "quickstart", "get", "pods"]);
        assert_eq!(pods.lines().filter(|l| l.contains("1/1") && l.contains("Running")).count(), 3, "{pods}");
        let deploy = k.run(&["-n", "quickstart", "get", "deploy", "web"]);
        assert!(deploy.contains("READY") && deploy.contains("3/3"), "{deploy}");

        let ip = k.run(&["-n", "quickstart", "get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
        let app = Self { service: format!("{ip}:80"), ..app };
        let mut seen = std::collections::HashSet::new();
        for _ in 0..60 {
            let body = http_eventually(&app.service, "web", WAIT, |b| b.contains("hello from bosun (v1)")).await;
            assert!(body.contains("token has 6 characters"), "the Secret reaches the app: {body}");
            seen.insert(body.split(" from ").nth(2).map(str::to_owned));
            if seen.len() == 3 {
                break;
            }
        }
        assert_eq!(seen.len(), 3, "the Service should reach all three replicas: {seen:?}");
        app
    }

    /// Waits for the Deployment's rollout; on failure prints what the pods say before failing.
    pub fn rollout(&self) {
        let (ok, stdout, stderr) = self.k.try_run(&["-n", "quickstart", "rollout", "status", "deploy/web", "--timeout=120s"]);
        if !ok {
            let (_, pods, _) = self.k.try_run(&["-n", "quickstart", "get", "pods", "-o", "wide"]);
            let (_, describe, _) = self.k.try_run(&["-n", "quickstart", "describe", "pods"]);
            panic!("rollout failed:\n{stdout}\n{stderr}\n{pods}\n{describe}");
        }
    }

    /// HTTP through the Ingress at `addr` by host name; kubectl shows the Ingress's address.
    pub async fn ingress(&self, addr: Option<SocketAddr>) {
        let addr = addr.unwrap_or_else(|| panic!("the cluster runs no ingress"));
        http_eventually(&addr.to_string(), "web.quickstart.local", WAIT, |b| b.contains("hello from bosun (v1)")).await;
        let ip = addr.ip().to_string();
        let listed = self.k.eventually(&["-n", "quickstart", "get", "ingress", "web"], WAIT, |out| out.contains(&ip)).await;
        assert!(listed.contains("ADDRESS") && listed.contains("web.quickstart.local"), "kubectl shows the Ingress: {listed}");
    }

    /// Scales the Deployment and waits until all replicas are ready.
    pub async fn scale(&self, replicas: usize) {
        self.k.run(&["-n", "quickstart", "scale", "deploy/web", &format!("--replicas={replicas}")]);
        let ready = format!(" {replicas}/{replicas} ");
        self.k.eventually(&["-n", "quickstart", "get", "deploy", "web"], WAIT, |out| out.contains(&ready)).await;
        let running =
            self.k.run(&["-n", "quickstart", "get", "pods", "-l", "app=web", "--field-selector=status.phase=Running", "-o", "name"]);
        assert!(running.lines().count() >= replicas, "{running}");
    }

    /// A rolling update of the command's input (the Service serves the new version), the
    /// revision history, and a rollback (the old version again).
    pub async fn update_and_undo(&self) {
        self.k.run(&["-n", "quickstart", "set", "env", "deploy/web", "GREETING=hi from v2"]);
        self.rollout();
        http_eventually(&self.service, "web", WAIT, |b| b.starts_with("hi from v2")).await;
        let history = self.k.run(&["-n", "quickstart", "rollout", "history", "deploy/web"]);
        assert!(history.lines().any(|l| l.starts_with("1 ")) && history.lines().any(|l| l.starts_with("2 ")), "{history}");
        let rs = self.k.run(&["-n", "quickstart", "get", "rs", "-l", "app=web", "-o", "name"]);
        assert_eq!(rs.lines().count(), 2, "one ReplicaSet per template: {rs}");
        self.k.run(&["-n", "quickstart", "rollout", "undo", "deploy/web"]);
        self.rollout();
        http_eventually(&self.service, "web", WAIT, |b| b.contains("hello from bosun (v1)")).await;
        // The undo reuses the first template's ReplicaSet (as revision 3).
        let rs = self.k.run(&["-n", "quickstart", "get", "rs", "-l", "app=web", "-o", "name"]);
        assert_eq!(rs.lines().count(), 2, "the rollback reuses the first ReplicaSet: {rs}");
    }

    /// `kubectl logs deploy/web` shows a pod saying where it serves (`serving on <ip_prefix>...`).
    pub fn logs(&self, ip_prefix: &str) {
        let logs = self.k.run(&["-n", "quickstart", "logs", "deploy/web"]);
        assert!(logs.contains(&format!("serving on {ip_prefix}")), "{logs}");
    }

    /// Deletes the namespace; it goes once its contents are gone.
    pub fn delete(&self) {
        self.k.run(&["delete", "namespace", "quickstart", "--wait=true", "--timeout=90s"]);
        let (ok, _, stderr) = self.k.try_run(&["get", "namespace", "quickstart"]);
        assert!(!ok && stderr.contains("NotFound"), "{stderr}");
        let (_, pods, _) = self.k.try_run(&["get", "pods", "-A", "-l", "app=web", "-o", "name"]);
        assert!(pods.trim().is_empty(), "the app's pods are gone: {pods}");
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
    let app = QuickStart::deploy(&k).await;
    app.ingress(cluster.ingress_addr()).await;
    app.scale(5).await;
    app.update_and_undo().await;
    app.logs("127.");

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

    app.delete();
    cluster.shutdown().await;
}
