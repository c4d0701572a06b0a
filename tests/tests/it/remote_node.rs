//! Logs, exec, attach, cp and metrics of pods on a node in another process: the control plane's
//! API server forwards them to the node process's endpoint (kubelet's :10250) over TLS with the
//! cluster's token, with the real kubectl talking only to the API server.

use crate::kubectl::{KillContainers, Kubectl, kubectl_binary};
use bosun_core::Api;
use bosun_core::k8s_openapi::api::core::v1::Node;
use bosun_examples::{Cluster, ClusterConfig, Role, StoreChoice};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(90);

fn any() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn control_plane(dir: &Path) -> ClusterConfig {
    ClusterConfig {
        data_dir: dir.join("cp"),
        store: StoreChoice::Memory,
        listen: any(),
        kubeconfig: dir.join("cp.kubeconfig"),
        role: Role::ControlPlane,
        identity: Some("cp".to_owned()),
        ..ClusterConfig::default()
    }
}

fn worker(dir: &Path, server: &str) -> ClusterConfig {
    ClusterConfig {
        data_dir: dir.join("worker"),
        listen: any(),
        kubeconfig: dir.join("cp.kubeconfig"),
        dns: any(),
        ingress: any(),
        role: Role::Node,
        server: Some(server.to_owned()),
        node_prefix: "worker".to_owned(),
        lease_renew: Duration::from_secs(2),
        // An explicit address, as `--node-listen` gives it.
        node_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..ClusterConfig::default()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reaches_pods_on_a_node_in_another_process() {
    let Some(binary) = kubectl_binary() else { return };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let _cleanup = KillContainers(dir.path().join("worker"));
    let cp = Cluster::start(control_plane(dir.path())).await.unwrap_or_else(|e| panic!("start control plane: {e}"));
    assert!(cp.nodes().is_empty() && cp.node_endpoint_addr().is_none(), "the control plane runs no nodes");
    let worker = Cluster::start(worker(dir.path(), &cp.url())).await.unwrap_or_else(|e| panic!("start node process: {e}"));
    let endpoint = worker.node_endpoint_addr().unwrap_or_else(|| panic!("the node process serves a node endpoint"));

    // The Node publishes the endpoint as kubelet does.
    let node = Api::<Node>::all(cp.client()).get("worker-1").await.unwrap_or_else(|e| panic!("get node: {e}"));
    let status = node.status.unwrap_or_default();
    let port = status.daemon_endpoints.and_then(|d| d.kubelet_endpoint).map(|e| e.port);
    assert_eq!(port, Some(i32::from(endpoint.port())));
    let internal = status.addresses.unwrap_or_default().into_iter().find(|a| a.type_ == "InternalIP").map(|a| a.address);
    assert_eq!(internal.as_deref(), Some("127.0.0.1"));

    let k = Kubectl::new(binary, &dir.path().join("cp.kubeconfig"), &dir.path().join("cache"));
    k.eventually(&["get", "nodes"], WAIT, |out| out.contains("worker-1") && out.contains(" Ready ")).await;
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap_or_else(|e| panic!("mkdir: {e}"));
    let files = files.to_str().unwrap_or_default().to_owned();
    let stop = format!("{files}/stop");
    let script = format!(
        "echo first; echo hello from worker; i=0; while [ ! -f {stop} ] && [ $i -lt 600 ]; do i=$((i+1)); sleep 0.2; done; echo stopped; sleep 3600"
    );
    k.run(&["run", "shell", "--image=busybox", "--restart=Never", "--command", "--", "sh", "-c", &script]);
    k.eventually(&["get", "pod", "shell", "-o", "wide"], WAIT, |out| out.contains("Running") && out.contains("worker-1")).await;

    // Logs: whole, tail, and followed until a line that comes later.
    k.eventually(&["logs", "shell"], WAIT, |out| out == "first\nhello from worker\n").await;
    assert_eq!(k.run(&["logs", "shell", "--tail=1"]), "hello from worker\n");
    let stamped = k.run(&["logs", "shell", "--timestamps", "--limit-bytes=200"]);
    assert!(stamped.lines().next().is_some_and(|l| l.ends_with(" first") && l.starts_with("20")), "{stamped}");
    let follow_out = dir.path().join("follow.out");
    let mut follow = k
        .command(&["logs", "-f", "shell"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&follow_out).unwrap_or_else(|e| panic!("create: {e}")))
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("run kubectl logs -f: {e}"));
    let deadline = Instant::now() + WAIT;
    while !std::fs::read_to_string(&follow_out).unwrap_or_default().contains("hello from worker") {
        assert!(Instant::now() < deadline, "kubectl logs -f showed nothing");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::write(&stop, "").unwrap_or_else(|e| panic!("write: {e}"));
    let deadline = Instant::now() + WAIT;
    while !std::fs::read_to_string(&follow_out).unwrap_or_default().contains("stopped") {
        assert!(Instant::now() < deadline, "kubectl logs -f never showed the later line");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Still following (the container runs on): bounded by the test, which ends it.
    assert!(follow.try_wait().ok().flatten().is_none(), "kubectl logs -f ended while the container runs");
    let _ = follow.kill();
    let _ = follow.wait();

    // Exec: output, exit codes, stdin (small and large), through the API server to the node.
    let out = k.output_with_stdin(&["exec", "shell", "--", "echo", "hello", "a  b"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello a  b\n");
    let out = k.output_with_stdin(&["exec", "shell", "--", "sh", "-c", "echo out; echo err >&2; exit 3"], None);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).starts_with("err\n"), "{}", text(&out.stderr));
    let out = k.output_with_stdin(&["exec", "-i", "shell", "--", "cat"], Some(b"through two hops\n"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout, b"through two hops\n");
    let big: Vec<u8> = (0..200_000u32).flat_map(|i| format!("{i}\n").into_bytes()).collect();
    let out = k.output_with_stdin(&["exec", "-i", "shell", "--", "wc", "-c"], Some(&big));
    assert_eq!(text(&out.stdout).trim(), big.len().to_string(), "{}", text(&out.stderr));
    // A missing container is refused before the upgrade, as for a local node.
    let out = k.output_with_stdin(&["exec", "shell", "-c", "nope", "--", "true"], None);
    assert!(text(&out.stderr).contains("container nope is not valid for pod shell"), "{}", text(&out.stderr));

    // kubectl cp is exec of tar.
    let source = format!("{files}/in-pod.txt");
    k.run(&["exec", "shell", "--", "sh", "-c", &format!("printf 'from the remote pod\\n' > {source}")]);
    let copied = dir.path().join("copied.txt");
    let out = k.output_with_stdin(&["cp", &format!("shell:{source}"), copied.to_str().unwrap_or_default()], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&copied).unwrap_or_default(), "from the remote pod\n");

    // Attach follows a container's output until it exits.
    let done = format!("{files}/stop-ticking");
    let ticker = format!("i=0; while [ ! -f {done} ] && [ $i -lt 600 ]; do echo tick $i; i=$((i+1)); sleep 0.2; done; echo ticked");
    k.run(&["run", "ticker", "--image=busybox", "--restart=Never", "--command", "--", "sh", "-c", &ticker]);
    k.eventually(&["get", "pod", "ticker"], WAIT, |out| out.contains("Running")).await;
    let attach_out = dir.path().join("attach.out");
    let attach = k
        .command(&["attach", "ticker"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&attach_out).unwrap_or_else(|e| panic!("create: {e}")))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run kubectl attach: {e}"));
    let deadline = Instant::now() + WAIT;
    while !std::fs::read_to_string(&attach_out).unwrap_or_default().contains("tick") {
        assert!(Instant::now() < deadline, "kubectl attach never showed a tick");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::write(&done, "").unwrap_or_else(|e| panic!("write: {e}"));
    let attached = attach.wait_with_output().unwrap_or_else(|e| panic!("wait for kubectl attach: {e}"));
    let stdout = std::fs::read_to_string(&attach_out).unwrap_or_default();
    assert!(attached.status.success(), "stdout: {stdout}\nstderr: {}", text(&attached.stderr));
    assert!(stdout.contains("ticked"), "attach ends with the container's last words: {stdout}");

    // Port forwarding: the API server speaks kubectl's protocol and relays each connection
    // through the node's endpoint to the pod.
    let port = crate::port_forward::echo_pod(&k, "echo").await;
    let (mut forward, local) = crate::port_forward::port_forward(&k, "echo", port, true).await;
    let here = std::net::IpAddr::from([127, 0, 0, 1]);
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let (small, large) = tokio::join!(
        crate::port_forward::echo_through(here, local, b"to the worker"),
        crate::port_forward::echo_through(here, local, &big)
    );
    assert_eq!(small.unwrap_or_else(|e| panic!("forwarded connection: {e}")), b"to the worker");
    assert!(large.unwrap_or_else(|e| panic!("forwarded connection: {e}")) == big, "100 kB came back changed");
    let _ = forward.kill().await;

    // Metrics: the node process's usage samples reach metrics.k8s.io (sampled every 15 s).
    let top = k.eventually(&["top", "pod", "shell", "--no-headers"], WAIT, |out| out.starts_with("shell ")).await;
    assert!(top.contains('m') && top.contains("Mi"), "{top}");
    let top = k.eventually(&["top", "node", "--no-headers"], WAIT, |out| out.contains("worker-1")).await;
    assert!(top.contains('%'), "{top}");

    // A node that cannot be reached is named in a clear error.
    worker.shutdown().await;
    let out = k.output_with_stdin(&["logs", "shell"], None);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("ServiceUnavailable") && stderr.contains("\"worker-1\"") && stderr.contains("cannot be reached"), "{stderr}");
    let out = k.output_with_stdin(&["exec", "shell", "--", "true"], None);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("ServiceUnavailable") && stderr.contains("\"worker-1\""), "{stderr}");
    cp.shutdown().await;
}
