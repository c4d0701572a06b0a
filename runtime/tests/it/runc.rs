//! The runc backend for real: the conformance suite on a busybox image, pod-to-pod networking over
//! the CNI bridge, cgroup limits and OOM kills. Needs root, runc, busybox-static and the CNI
//! plugins (CI has them; elsewhere the tests skip loudly).

use crate::support::require_components;
use bosun_runtime::conformance::{self, Scenario, Subject};
use bosun_runtime::cri::{ContainerConfig, ContainerResources, ImageRef, SandboxConfig};
use bosun_runtime::runc::busybox_rootfs;
use bosun_runtime::{ContainerRuntime, ContainerState, ImageStore, LocalImageStore, RuncRuntime};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn available(test: &str) -> bool {
    if RuncRuntime::available() {
        return true;
    }
    assert!(!require_components(), "{test}: runc, the CNI plugins and root are required");
    eprintln!("SKIPPED {test}: runc, CNI plugins or root missing");
    false
}

async fn busybox(dir: &std::path::Path) -> (LocalImageStore, ImageRef) {
    let images = LocalImageStore::open(dir.join("images")).expect("image store");
    let src = busybox_rootfs(&dir.join("busybox-src")).await.expect("busybox rootfs");
    images.import_dir("busybox", &src, vec!["/bin/sh".into()]).await.expect("import");
    let image = images.ensure("busybox").await.expect("image");
    (images, image)
}

fn runtime(dir: &std::path::Path, bridge: &str, subnet: &str) -> RuncRuntime {
    RuncRuntime::builder(dir.join("runc-state")).bridge(bridge).subnet(subnet).build().expect("runc runtime")
}

fn sandbox(name: &str, logs: &std::path::Path) -> SandboxConfig {
    let uid = format!("{:016x}", fastrand::u64(..));
    SandboxConfig {
        name: name.into(),
        namespace: "default".into(),
        uid: uid.clone(),
        hostname: name.into(),
        log_directory: logs.join(uid),
        ..SandboxConfig::default()
    }
}

fn sh(name: &str, image: &ImageRef, script: &str) -> ContainerConfig {
    ContainerConfig {
        name: name.into(),
        image: image.clone(),
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        ..ContainerConfig::default()
    }
}

struct Runc {
    dir: tempfile::TempDir,
    image: ImageRef,
    rt: Arc<dyn ContainerRuntime>,
}

impl Subject for Runc {
    fn runtime(&self) -> Arc<dyn ContainerRuntime> {
        self.rt.clone()
    }
    fn container(&self, name: &str, scenario: &Scenario) -> ContainerConfig {
        // The shell is PID 1 in its PID namespace, which ignores signals it has no handler for.
        let script = match scenario {
            Scenario::Sleep => "trap 'exit 143' TERM; while :; do sleep 0.05; done".to_string(),
            Scenario::Exit(code) => format!("exit {code}"),
            Scenario::Print => "echo out-1; sleep 0.05; echo err-1 >&2; sleep 0.05; echo out-2; exec sleep 1000".to_string(),
            Scenario::IgnoreTerm => "trap '' TERM; while :; do sleep 0.1; done".to_string(),
            Scenario::Echo => conformance::ECHO_SCRIPT.to_string(),
        };
        sh(name, &self.image, &script)
    }
    fn sandbox(&self, name: &str) -> SandboxConfig {
        sandbox(name, &self.dir.path().join("pods"))
    }
    fn real_exec(&self) -> bool {
        true
    }
    fn reopen(&self) -> Option<Arc<dyn ContainerRuntime>> {
        Some(Arc::new(runtime(self.dir.path(), "bosuntst0", "10.89.0.0/24")))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runc_runtime_conforms() {
    if !available("runc_runtime_conforms") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_images, image) = busybox(dir.path()).await;
    let rt: Arc<dyn ContainerRuntime> = Arc::new(runtime(dir.path(), "bosuntst0", "10.89.0.0/24"));
    rt.recover().await.expect("recover");
    conformance::run_all(&Runc { dir, image, rt }).await;
}

async fn wait_running(rt: &RuncRuntime, id: &bosun_runtime::ContainerId) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while rt.container_status(id).await.expect("status").state != ContainerState::Running {
        assert!(Instant::now() < deadline, "container did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_reach_each_other_over_the_bridge_and_limits_apply() {
    if !available("pods_reach_each_other_over_the_bridge_and_limits_apply") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_images, image) = busybox(dir.path()).await;
    let rt = runtime(dir.path(), "bosuntst1", "10.89.1.0/24");
    // Whatever an earlier, killed run of this test left on its bridge goes first.
    rt.recover().await.expect("recover");
    let logs = dir.path().join("pods");
    let a = rt.run_sandbox(&sandbox("server", &logs)).await.expect("sandbox a");
    let b = rt.run_sandbox(&sandbox("client", &logs)).await.expect("sandbox b");
    let ip_a = rt.sandbox_status(&a).await.expect("status").ip.expect("pod ip");
    let ip_b = rt.sandbox_status(&b).await.expect("status").ip.expect("pod ip");
    assert_ne!(ip_a, ip_b);
    assert!(ip_a.to_string().starts_with("10.89.1."), "host-local hands out the subnet: {ip_a}");
    let mut server = sh("web", &image, "mkdir -p /tmp/www && echo pong > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www");
    server.resources =
        ContainerResources { cpu_request_millis: Some(250), cpu_limit_millis: Some(500), memory_limit_bytes: Some(64 << 20) };
    let web = rt.create_container(&a, &server).await.expect("create server");
    rt.start_container(&web).await.expect("start server");
    let client = rt.create_container(&b, &sh("client", &image, "exec sleep 1000")).await.expect("create client");
    rt.start_container(&client).await.expect("start client");
    wait_running(&rt, &web).await;
    wait_running(&rt, &client).await;
    let url = format!("http://{ip_a}:8080/index.html");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = rt.exec_sync(&client, &["wget".into(), "-qO-".into(), url.clone()], Duration::from_secs(3)).await.expect("exec");
        if r.exit_code == 0 {
            assert_eq!(String::from_utf8_lossy(&r.stdout), "pong\n", "pod b reached pod a");
            break;
        }
        assert!(Instant::now() < deadline, "pod b cannot reach pod a: {}", String::from_utf8_lossy(&r.stderr));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    crate::support::check_exec_tty(&rt, &client, false).await;
    let r = rt.exec_sync(&web, &["hostname".into()], Duration::from_secs(3)).await.expect("exec");
    assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), "server", "each pod has its own UTS namespace");
    // The limits landed in the container's cgroup (v1 or v2).
    let v1 = std::fs::read_to_string(format!("/sys/fs/cgroup/memory/bosun/{}/memory.limit_in_bytes", web.0));
    let v2 = std::fs::read_to_string(format!("/sys/fs/cgroup/bosun/{}/memory.max", web.0));
    let limit = v1.or(v2).expect("memory cgroup of the container");
    assert_eq!(limit.trim(), (64u64 << 20).to_string());
    let stats = rt.stats(&web).await.expect("stats");
    assert!(stats.memory_working_set_bytes > 0);
    rt.remove_sandbox(&a).await.expect("remove a");
    rt.remove_sandbox(&b).await.expect("remove b");
    assert!(!std::path::Path::new(&format!("/var/run/netns/bosun-{}", a.0)).exists(), "the network namespace is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runc_container_runs_as_its_user_group_and_supplemental_groups() {
    if !available("a_runc_container_runs_as_its_user_group_and_supplemental_groups") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_images, image) = busybox(dir.path()).await;
    let rt = runtime(dir.path(), "bosuntst5", "10.89.5.0/24");
    rt.recover().await.expect("recover");
    let sb = rt.run_sandbox(&sandbox("ids", &dir.path().join("pods"))).await.expect("sandbox");
    let mut cfg = sh("ids", &image, "echo ids $(id -u) $(id -g) $(id -G)");
    cfg.run_as_user = Some(1000);
    cfg.run_as_group = Some(2000);
    cfg.supplemental_groups = vec![3000, 4000];
    let id = rt.create_container(&sb, &cfg).await.expect("create");
    rt.start_container(&id).await.expect("start");
    let log = crate::conformance::exited_log(&rt, &id).await;
    assert!(log.contains("ids 1000 2000 2000 3000 4000"), "{log}");
    rt.remove_sandbox(&sb).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_kill_is_reported_as_oom_killed() {
    if !available("an_oom_kill_is_reported_as_oom_killed") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_images, image) = busybox(dir.path()).await;
    let rt = runtime(dir.path(), "bosuntst2", "10.89.2.0/24");
    // Whatever an earlier, killed run of this test left on its bridge goes first.
    rt.recover().await.expect("recover");
    let sb = rt.run_sandbox(&sandbox("hungry", &dir.path().join("pods"))).await.expect("sandbox");
    let mut cfg = sh("eat", &image, "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived ${#x}");
    cfg.resources.memory_limit_bytes = Some(32 << 20);
    cfg.read_only_rootfs = true;
    let id = rt.create_container(&sb, &cfg).await.expect("create");
    rt.start_container(&id).await.expect("start");
    let deadline = Instant::now() + Duration::from_secs(30);
    let st = loop {
        let st = rt.container_status(&id).await.expect("status");
        if st.state == ContainerState::Exited {
            break st;
        }
        assert!(Instant::now() < deadline, "the hungry container did not end");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if st.exit_code != Some(137) {
        let log = std::fs::read_to_string(st.log_path.clone().unwrap_or_default()).unwrap_or_default();
        panic!("expected an OOM kill: {st:?}\nlog: {log}");
    }
    assert_eq!(st.reason.as_deref(), Some("OOMKilled"));
    rt.remove_sandbox(&sb).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_agent_runs_a_pod_on_runc() {
    use crate::support::*;
    if !available("the_node_agent_runs_a_pod_on_runc") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (images, _image) = busybox(dir.path()).await;
    let rt = runtime(dir.path(), "bosuntst3", "10.89.3.0/24");
    let client = api_server();
    let config = bosun_runtime::NodeAgentConfig::new("runc-node", dir.path().join("agent")).measure_pressure(false);
    let node = bosun_runtime::NodeAgent::new(client.clone(), rt, images, config).start().await.expect("agent");
    let p = pod(
        "boxed",
        "runc-node",
        serde_json::json!({
            "terminationGracePeriodSeconds": 1,
            "volumes": [{ "name": "scratch", "emptyDir": {} }],
            "containers": [{ "name": "app", "image": "busybox", "command": ["sh", "-c", "echo hi > /data/hello; exec sleep 1000"],
                "volumeMounts": [{ "name": "scratch", "mountPath": "/data" }],
                "resources": { "limits": { "memory": "64Mi", "cpu": "500m" } } }]
        }),
    );
    create(&client, &p).await;
    let running =
        wait_pod(&client, "boxed", Duration::from_secs(20), Duration::from_millis(50), "running", |p| phase(p) == "Running").await;
    let ip = running.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("pod ip");
    assert!(ip.starts_with("10.89.3."), "a CNI address: {ip}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r =
            node.exec_sync("default", "boxed", None, &["cat".into(), "/data/hello".into()], Duration::from_secs(3)).await.expect("exec");
        if r.exit_code == 0 {
            assert_eq!(String::from_utf8_lossy(&r.stdout), "hi\n");
            break;
        }
        assert!(Instant::now() < deadline, "the emptyDir is mounted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let api = bosun_core::Api::<bosun_core::k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), "default");
    api.delete("boxed", &Default::default()).await.expect("delete");
    let deadline = Instant::now() + Duration::from_secs(40);
    while api.get_opt("boxed").await.expect("get").is_some() {
        assert!(Instant::now() < deadline, "the pod is removed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The processes in a named network namespace.
fn netns_pids(netns: &str) -> Vec<i32> {
    let out = std::process::Command::new("ip").args(["netns", "pids", netns]).output().expect("ip netns pids");
    String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect()
}

fn mounted_under(dir: &std::path::Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|mp| mp.starts_with(&prefix))
        .collect()
}

/// A sandbox with a running container; returns the sandbox, its network namespace and its IP.
async fn running_pod(rt: &RuncRuntime, image: &ImageRef, logs: &std::path::Path) -> (bosun_runtime::SandboxId, String, std::net::IpAddr) {
    let sb = rt.run_sandbox(&sandbox("left", logs)).await.expect("sandbox");
    let ip = rt.sandbox_status(&sb).await.expect("status").ip.expect("pod ip");
    let c = rt.create_container(&sb, &sh("app", image, "exec sleep 1000")).await.expect("create");
    rt.start_container(&c).await.expect("start");
    wait_running(rt, &c).await;
    let netns = format!("bosun-{}", sb.0);
    assert!(!netns_pids(&netns).is_empty(), "the container runs in {netns}");
    (sb, netns, ip)
}

/// What a killed runtime leaves (a network namespace with a live container and its veth on the
/// bridge, an IPAM reservation, an overlay mount) is swept by the next runtime's `recover`: one
/// over the same state directory when the records were never written, and one over another
/// state directory on the same bridge; the next sandbox then gets the freed address and works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_runtime_sweeps_what_a_killed_one_left() {
    if !available("a_new_runtime_sweeps_what_a_killed_one_left") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_images, image) = busybox(dir.path()).await;
    let logs = dir.path().join("pods");
    let (bridge, subnet) = ("bosuntst4", "10.89.4.0/24");
    let state_a = dir.path().join("state-a");
    let open = |state: &std::path::Path| RuncRuntime::builder(state).bridge(bridge).subnet(subnet).build().expect("runc runtime");
    let reservations = |state: &std::path::Path| {
        std::fs::read_dir(state.join("ipam/bosun"))
            .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("10.")).count())
            .unwrap_or(0)
    };

    // 1. Killed before its records were written: the same state directory, nothing to adopt.
    let first = open(&state_a);
    first.recover().await.expect("recover an empty state");
    let (_, netns, _) = running_pod(&first, &image, &logs).await;
    let pids = netns_pids(&netns);
    drop(first);
    for sub in ["sandboxes", "containers"] {
        for e in std::fs::read_dir(state_a.join(sub)).expect("state dir").flatten() {
            if e.path().extension().is_some_and(|x| x == "json") {
                std::fs::remove_file(e.path()).expect("drop record");
            }
        }
    }
    assert_eq!(reservations(&state_a), 1);
    assert!(!mounted_under(&state_a.join("bundles")).is_empty(), "the overlay is still mounted");
    let second = open(&state_a);
    second.recover().await.expect("recover");
    assert!(!cni_netns_exists(&netns), "{netns} is gone");
    assert!(pids.iter().all(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()), "the old container is dead");
    assert_eq!(reservations(&state_a), 0, "the IPAM reservation is released");
    assert!(mounted_under(&state_a.join("bundles")).is_empty(), "the overlay is unmounted");
    assert_eq!(std::fs::read_dir(state_a.join("bundles")).expect("bundles").count(), 0, "no bundle left");

    let (sb, _, _) = running_pod(&second, &image, &logs).await;
    second.remove_sandbox(&sb).await.expect("remove");

    // 2. Killed with its records intact, and the next runtime has another state directory on
    // the same bridge (a new data directory): the old pods still hold their addresses there, one
    // of them even after the name of its namespace was deleted (its container keeps it alive).
    let state_c = dir.path().join("state-c");
    let other = open(&state_c);
    let (_, netns2, ip2) = running_pod(&other, &image, &logs).await;
    let (_, unnamed, _) = running_pod(&other, &image, &logs).await;
    let pids2: Vec<i32> = netns_pids(&netns2).into_iter().chain(netns_pids(&unnamed)).collect();
    drop(other);
    assert!(std::process::Command::new("ip").args(["netns", "delete", &unnamed]).status().is_ok_and(|s| s.success()));
    assert_eq!(reservations(&state_c), 2);
    let state_b = dir.path().join("state-b");
    let third = open(&state_b);
    third.recover().await.expect("recover");
    assert!(!cni_netns_exists(&netns2), "{netns2} on {bridge} is gone");
    assert!(pids2.iter().all(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()), "the old containers are dead");
    assert_eq!(reservations(&state_c), 0, "the other runtime's reservations are released");
    assert!(mounted_under(&state_c.join("bundles")).is_empty(), "the other runtime's overlays are unmounted");
    let ports = std::fs::read_dir(format!("/sys/class/net/{bridge}/brif")).expect("bridge ports").count();
    assert_eq!(ports, 0, "no veth of the old pods is left on {bridge}");

    // The new runtime's first sandbox gets the same first address, without a collision.
    let sb = third.run_sandbox(&sandbox("fresh", &logs)).await.expect("sandbox");
    assert_eq!(third.sandbox_status(&sb).await.expect("status").ip, Some(ip2), "the old pod's address, now free");
    let c = third.create_container(&sb, &sh("app", &image, "exec sleep 1000")).await.expect("create");
    third.start_container(&c).await.expect("start");
    wait_running(&third, &c).await;
    let gateway = "10.89.4.1";
    let r = third.exec_sync(&c, &["ping".into(), "-c1".into(), "-W2".into(), gateway.into()], Duration::from_secs(5)).await.expect("exec");
    assert_eq!(r.exit_code, 0, "the new pod reaches the bridge: {}", String::from_utf8_lossy(&r.stdout));
    third.remove_sandbox(&sb).await.expect("remove");
}

fn cni_netns_exists(name: &str) -> bool {
    std::path::Path::new("/var/run/netns").join(name).exists()
}
