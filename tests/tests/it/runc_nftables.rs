//! The reference cluster on `--runtime runc --proxy nftables` (root): busybox pods in their own
//! network namespaces on a CNI bridge, a Service's ClusterIP programmed as nftables DNAT rules,
//! reached from the host; scale, self-healing and delete with the real kubectl.

use crate::kubectl::{Kubectl, kubectl_binary};
use bosun_examples::{Cluster, ClusterConfig, ProxyChoice, RuntimeChoice, StoreChoice};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(120);
const SERVICE_CIDR: &str = "10.97.0.0/16";

const MANIFEST: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: hello, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: busybox
        command: ["sh", "-c", "mkdir -p /www && echo hello from $(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www"]
        readinessProbe:
          httpGet: {path: /, port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: hello, namespace: default}
spec:
  selector: {app: hello}
  ports: [{port: 80, targetPort: 8080}]
"#;

fn root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn available() -> bool {
    let runc = Command::new("runc").arg("--version").output().is_ok_and(|o| o.status.success());
    let nft = Command::new("nft").arg("--version").output().is_ok_and(|o| o.status.success());
    let cni = std::path::Path::new("/usr/lib/cni/bridge").exists();
    let busybox = ["/bin/busybox", "/usr/bin/busybox"].iter().any(|p| std::path::Path::new(p).exists());
    if root() && runc && nft && cni && busybox {
        return true;
    }
    assert!(
        std::env::var("BOSUN_REQUIRE_COMPONENTS").as_deref() != Ok("1"),
        "root, runc, nft, the CNI plugins and busybox-static are required (BOSUN_REQUIRE_COMPONENTS=1)"
    );
    eprintln!(
        "\n!!! SKIPPING the runc/nftables end-to-end test: needs root, runc, nftables, containernetworking-plugins, busybox-static !!!\n"
    );
    false
}

/// The pod network namespaces on this machine (the runc runtime names them `bosun-rsb-...`).
fn pod_netns() -> std::collections::BTreeSet<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    out.unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("bosun-rsb-"))
        .map(str::to_owned)
        .collect()
}

/// Removes what the test left behind: runc containers, their network namespaces (a later run
/// reuses the same pod addresses on the bridge), the nftables table and the service route.
struct Cleanup(std::path::PathBuf, std::collections::BTreeSet<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let state = self.0.join("nodes/runc-1/runtime/runc");
        let state = state.to_string_lossy();
        if let Ok(out) = Command::new("runc").args(["--root", &state, "list", "-q"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("runc").args(["--root", &state, "delete", "-f", id]).status();
            }
        }
        for ns in pod_netns().difference(&self.1) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = Command::new("nft").args(["delete", "table", "ip", "bosun"]).status();
        let _ = Command::new("ip").args(["route", "del", SERVICE_CIDR]).status();
    }
}

/// One HTTP GET from the host to a ClusterIP (DNAT in the nftables output hook).
fn get(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let addr: SocketAddr = addr.parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: hello\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    // busybox httpd answers HTTP/1.1 whatever the request said.
    body.lines().next().is_some_and(|status| status.starts_with("HTTP/1.") && status.contains(" 200 ")).then_some(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_runs_on_runc_and_nftables() {
    let Some(binary) = kubectl_binary() else { return };
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let _cleanup = Cleanup(dir.path().join("data"), pod_netns());
    let config = ClusterConfig {
        data_dir: dir.path().join("data"),
        store: StoreChoice::Memory,
        listen: any,
        kubeconfig: dir.path().join("kubeconfig"),
        dns: any,
        ingress: any,
        service_cidr: SERVICE_CIDR.into(),
        runtime: RuntimeChoice::Runc,
        proxy: ProxyChoice::Nftables,
        node_prefix: "runc".into(),
        lease_renew: Duration::from_secs(2),
        ..ClusterConfig::default()
    };
    let cluster = Cluster::start(config).await.unwrap_or_else(|e| panic!("start cluster: {e}"));
    let k = Kubectl::new(binary, &dir.path().join("kubeconfig"), &dir.path().join("cache"));
    k.eventually(&["get", "nodes"], WAIT, |out| out.contains("runc-1") && out.contains(" Ready ")).await;

    let manifest = dir.path().join("hello.yaml");
    std::fs::write(&manifest, MANIFEST).unwrap_or_else(|e| panic!("write manifest: {e}"));
    k.run(&["apply", "-f", manifest.to_str().unwrap_or_default()]);
    k.run(&["rollout", "status", "deploy/hello", "--timeout=120s"]);
    let ips = k.run(&["get", "pods", "-l", "app=hello", "-o", "jsonpath={.items[*].status.podIP}"]);
    assert!(ips.split_whitespace().count() == 2 && ips.split_whitespace().all(|ip| ip.starts_with("10.88.")), "bridge pod IPs: {ips}");

    // Traffic to the service range that no rule rewrote stays on this machine (the bridge).
    let route = Command::new("ip").args(["route", "replace", SERVICE_CIDR, "dev", "bosun0"]).status();
    assert!(route.is_ok_and(|s| s.success()), "route the service range to the bridge");
    let cluster_ip = k.run(&["get", "svc", "hello", "-o", "jsonpath={.spec.clusterIP}"]);
    assert!(cluster_ip.starts_with("10.97."), "ClusterIP from the configured range: {cluster_ip}");
    let target = format!("{cluster_ip}:80");

    // Both replicas answer through the DNAT rules.
    let deadline = Instant::now() + WAIT;
    let mut answered = std::collections::BTreeSet::new();
    while answered.len() < 2 {
        if let Some(body) = get(&target)
            && let Some(line) = body.lines().find(|l| l.starts_with("hello from "))
        {
            answered.insert(line.to_owned());
        }
        assert!(Instant::now() < deadline, "{target} never reached both replicas: {answered:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rules = Command::new("nft").args(["list", "table", "ip", "bosun"]).output().unwrap_or_else(|e| panic!("nft: {e}"));
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(rules.contains(cluster_ip.as_str()), "the ClusterIP is in the ruleset:\n{rules}");

    // Scale to zero: the endpoints leave the rules and nothing answers; scale back: served again.
    k.run(&["scale", "deploy/hello", "--replicas=0"]);
    k.eventually(&["get", "pods", "-l", "app=hello", "-o", "name"], WAIT, str::is_empty).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&target).is_some() {
        assert!(Instant::now() < deadline, "{target} still answers with no endpoints");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    k.run(&["scale", "deploy/hello", "--replicas=1"]);
    k.run(&["rollout", "status", "deploy/hello", "--timeout=120s"]);
    let deadline = Instant::now() + WAIT;
    while get(&target).is_none() {
        assert!(Instant::now() < deadline, "{target} does not answer after scaling back up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    k.run(&["delete", "-f", manifest.to_str().unwrap_or_default()]);
    k.eventually(&["get", "pods", "-l", "app=hello", "-o", "name"], WAIT, str::is_empty).await;
    cluster.shutdown().await;
}
