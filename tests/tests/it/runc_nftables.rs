//! The quick start on `--runtime runc --proxy nftables` (root): the quick-start app's busybox pods
//! in their own network namespaces on a CNI bridge, the Service's ClusterIP programmed as nftables
//! DNAT rules and reached from the host, from inside a pod and from inside one of its own pods (the
//! hairpin: DNAT back to the sender, masqueraded through the node), names resolved by the cluster DNS
//! that pods' resolv.conf points at, the Ingress by host name; scale, rolling update, rollback,
//! logs and delete with the real kubectl.

use crate::kubectl::{Kubectl, kubectl_binary};
use crate::quickstart::QuickStart;
use bosun_examples::{Cluster, ClusterConfig, ProxyChoice, RuntimeChoice, StoreChoice};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(120);
const SERVICE_CIDR: &str = "10.97.0.0/16";

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
        // The proxy's table (`bosun`, or `bosun-alt` after an alternating full sync), any family.
        let tables = Command::new("nft").args(["list", "tables"]).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        for line in tables.unwrap_or_default().lines() {
            if let ["table", family, name @ ("bosun" | "bosun-alt")] = line.split_whitespace().collect::<Vec<_>>().as_slice() {
                let _ = Command::new("nft").args(["delete", "table", family, name]).status();
            }
        }
        let _ = Command::new("ip").args(["route", "del", SERVICE_CIDR]).status();
    }
}

/// An HTTP GET through `nc` inside pod `probe` (Debian's busybox-static `wget` segfaults, even on
/// the host): the page, once the answer is a 200 containing `want`.
async fn get_in_pod(k: &Kubectl, target: &str, want: &str) -> String {
    let script = format!("printf 'GET / HTTP/1.0\\r\\nHost: web\\r\\n\\r\\n' | nc -w 3 {target} 80");
    let args = ["-n", "quickstart", "exec", "probe", "--", "sh", "-c", &script];
    let out = k.eventually(&args, Duration::from_secs(30), |out| out.starts_with("HTTP/1.1 200") && out.contains(want)).await;
    out.lines().last().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_runs_on_runc_and_nftables() {
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
    let pod_dns = cluster.pod_dns_addr().unwrap_or_else(|| panic!("runc nodes get a DNS that pods reach"));
    assert_eq!(pod_dns, SocketAddr::from(([10, 88, 0, 1], 53)), "the DNS for pods listens on the bridge's gateway");
    let k = Kubectl::new(binary, &dir.path().join("kubeconfig"), &dir.path().join("cache"));
    k.eventually(&["get", "nodes"], WAIT, |out| out.contains("runc-1") && out.contains(" Ready ")).await;

    // Traffic to the service range that no rule rewrote stays on this machine (the bridge).
    let route = Command::new("ip").args(["route", "replace", SERVICE_CIDR, "dev", "bosun0"]).status();
    assert!(route.is_ok_and(|s| s.success()), "route the service range to the bridge");

    // Apply, rollout, and the Service from the host through the DNAT rules: every replica answers.
    let app = QuickStart::deploy(&k).await;
    let ips = k.run(&["-n", "quickstart", "get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].status.podIP}"]);
    assert!(ips.split_whitespace().count() == 3 && ips.split_whitespace().all(|ip| ip.starts_with("10.88.")), "bridge pod IPs: {ips}");
    let cluster_ip = app.service.trim_end_matches(":80").to_owned();
    assert!(cluster_ip.starts_with("10.97."), "ClusterIP from the configured range: {cluster_ip}");
    let rules = Command::new("nft").args(["list", "ruleset"]).output().unwrap_or_else(|e| panic!("nft: {e}"));
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(rules.contains(&format!("{cluster_ip} . ")), "the ClusterIP is in the proxy's maps:\n{rules}");

    // From inside a pod (not one of the Service's): its resolv.conf names the cluster DNS and the
    // namespace's search path; the Service by ClusterIP, by full name and by short name.
    k.run(&["-n", "quickstart", "run", "probe", "--image=busybox", "--restart=Never", "--", "sleep", "600"]);
    k.run(&["-n", "quickstart", "wait", "--for=condition=Ready", "pod/probe", "--timeout=60s"]);
    let resolv = k.run(&["-n", "quickstart", "exec", "probe", "--", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 10.88.0.1\n"), "{resolv}");
    assert!(resolv.contains("search quickstart.svc.cluster.local svc.cluster.local cluster.local\n"), "{resolv}");
    assert!(resolv.contains("options ndots:5"), "{resolv}");
    let lookup = k.run(&["-n", "quickstart", "exec", "probe", "--", "nslookup", "web.quickstart.svc.cluster.local"]);
    assert!(lookup.contains(&format!("Address: {cluster_ip}")), "{lookup}");
    let (found, _, _) = k.try_run(&["-n", "quickstart", "exec", "probe", "--", "nslookup", "nothing-here.quickstart.svc.cluster.local."]);
    assert!(!found, "a Service that does not exist does not resolve");
    for target in [cluster_ip.as_str(), "web.quickstart.svc.cluster.local", "web"] {
        let page = get_in_pod(&k, target, "hello from bosun (v1)").await;
        assert!(page.contains("token has 6 characters"), "{target}: {page}");
    }

    // From inside one of the Service's own pods, every try in a row: a third of them come back to the
    // pod itself (hairpin), which only completes when the node masquerades them.
    let web = k.run(&["-n", "quickstart", "get", "pods", "-l", "app=web", "-o", "jsonpath={.items[0].metadata.name}"]);
    let web = web.trim();
    let tries = 24;
    let script = format!(
        "for i in $(seq 1 {tries}); do printf 'GET / HTTP/1.0\\r\\nHost: web\\r\\n\\r\\n' | nc -w 3 {cluster_ip} 80 | tail -n 1; echo; done"
    );
    let out = k.run(&["-n", "quickstart", "exec", web, "--", "sh", "-c", &script]);
    let answers: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(answers.len(), tries, "every try from pod {web} to its own Service answered:\n{out}");
    assert!(answers.iter().all(|a| a.contains("hello from bosun (v1)")), "{out}");
    assert!(answers.iter().any(|a| a.contains(&format!("from {web},"))), "some tries came back to pod {web} itself:\n{out}");

    // The Ingress (on the host) by host name, to the pods on the bridge.
    app.ingress(cluster.ingress_addr()).await;

    app.scale(5).await;
    app.update_and_undo().await;
    app.logs("10.88.");
    get_in_pod(&k, "web", "hello from bosun (v1)").await;
    k.run(&["-n", "quickstart", "delete", "pod", "probe", "--grace-period=1"]);

    // Scaled to zero, the endpoints leave the rules (terminating pods serve until they are gone)
    // and the ClusterIP rejects connections rather than leaving them hanging.
    k.run(&["-n", "quickstart", "scale", "deploy/web", "--replicas=0"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let connect = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(&app.service)).await;
        if matches!(connect, Ok(Err(_))) {
            break;
        }
        assert!(Instant::now() < deadline, "{} does not reject connections with no endpoints: {connect:?}", app.service);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    app.delete();
    cluster.shutdown().await;
}
