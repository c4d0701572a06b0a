//! End to end: the node agent with the process runtime against the in-memory API server, in real
//! time (short backoff curves keep it fast).

use crate::support::*;
use bosun_core::k8s_openapi::api::core::v1::{ConfigMap, Event};
use bosun_core::{Api, Client, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use bosun_runtime::agent::backoff::DoublingBackoff;
use bosun_runtime::sys::MountSupport;
use bosun_runtime::{HostImages, NodeAgent, NodeAgentConfig, NodeHandle, ProcessRuntime};
use futures::StreamExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn fast_backoff() -> DoublingBackoff {
    DoublingBackoff { initial: Duration::from_millis(500), max: Duration::from_secs(8), reset_after: Duration::from_secs(600) }
}

async fn start(client: &Arc<dyn Client>, dir: &Path, mounts: Option<MountSupport>) -> NodeHandle {
    let mut builder = ProcessRuntime::builder(dir.join("runtime"));
    if let Some(m) = mounts {
        builder = builder.mount_support(m);
    }
    let runtime = builder.build().expect("runtime");
    let config = NodeAgentConfig::new("proc-node", dir.join("agent")).backoff(fast_backoff()).volume_resync(Duration::from_millis(300));
    NodeAgent::new(client.clone(), runtime, HostImages, config).start().await.expect("start agent")
}

/// Stops the agent and removes every sandbox it left, so that no test process outlives its test.
async fn cleanup(node: &NodeHandle) {
    node.shutdown();
    for sb in node.runtime().list_sandboxes().await.unwrap_or_default() {
        let _ = node.runtime().remove_sandbox(&sb.id).await;
    }
}

const SECOND: Duration = Duration::from_secs(1);
const TICK: Duration = Duration::from_millis(50);

async fn create_cm(client: &Arc<dyn Client>, name: &str, data: serde_json::Value) {
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({ "metadata": { "name": name }, "data": data })).expect("cm");
    Api::<ConfigMap>::namespaced(client.clone(), "default").create(&cm, &PostParams::default()).await.expect("create cm");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_runs_with_its_env_pod_ip_logs_and_exec() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = api_server();
    let node = start(&client, dir.path(), None).await;
    create_cm(&client, "settings", serde_json::json!({ "mode": "fast" })).await;
    let p = pod(
        "web",
        "proc-node",
        serde_json::json!({ "containers": [{
            "name": "app", "image": "host",
            "command": ["/bin/sh", "-c", "echo started $(GREETING); exec sleep 1000"],
            "env": [
                { "name": "WHO", "value": "world" },
                { "name": "GREETING", "value": "hello-$(WHO)" },
                { "name": "MODE", "valueFrom": { "configMapKeyRef": { "name": "settings", "key": "mode" } } },
                { "name": "MY_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                { "name": "MY_IP", "valueFrom": { "fieldRef": { "fieldPath": "status.podIP" } } }
            ],
            "readinessProbe": { "exec": { "command": ["true"] }, "periodSeconds": 1 }
        }] }),
    );
    create(&client, &p).await;
    let running = wait_pod(&client, "web", 10 * SECOND, TICK, "running and ready", |p| phase(p) == "Running" && is_ready(p)).await;
    let ip = running.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("pod ip");
    assert!(ip.starts_with("127."), "a loopback pod IP: {ip}");
    assert_eq!(running.status.as_ref().and_then(|s| s.host_ip.as_deref()), Some("127.0.0.1"));
    assert!(running.status.as_ref().and_then(|s| s.start_time.as_ref()).is_some());
    let cmd: Vec<String> = ["sh", "-c", "echo $POD_IP $GREETING $MODE $MY_NAME $MY_IP"].iter().map(|s| s.to_string()).collect();
    let out = node.exec_sync("default", "web", None, &cmd, 5 * SECOND).await.expect("exec");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("{ip} hello-world fast web {ip}"));
    let mut logs = node.logs("default", "web", &LogParams::default()).await.expect("logs");
    let mut text = Vec::new();
    while let Some(chunk) = logs.next().await {
        text.extend_from_slice(&chunk.expect("chunk"));
    }
    assert_eq!(String::from_utf8_lossy(&text), "started hello-world\n", "command args get $(VAR) expansion");
    let err = node.logs("default", "web", &LogParams { container: Some("nope".into()), ..LogParams::default() }).await.err();
    assert_eq!(err.map(|e| e.code()), Some(400), "an unknown container is a bad request");
    cleanup(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_pod_shows_crash_loop_backoff_with_growing_delays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = api_server();
    let node = start(&client, dir.path(), None).await;
    let p = pod(
        "crash",
        "proc-node",
        serde_json::json!({ "containers": [{ "name": "app", "image": "host", "command": ["/bin/sh", "-c", "echo boom; exit 3"] }] }),
    );
    create(&client, &p).await;
    let api = bosun_core::Api::<bosun_core::k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), "default");
    let t0 = Instant::now();
    let mut restarts: Vec<Duration> = Vec::new();
    let mut saw_backoff = false;
    let mut last = 0;
    while restarts.len() < 4 && t0.elapsed() < Duration::from_secs(25) {
        let pod = api.get("crash").await.expect("pod");
        if let Some(c) = container(&pod, "app")
            && c.restart_count > last
        {
            last = c.restart_count;
            restarts.push(t0.elapsed());
        }
        saw_backoff |= waiting_reason(&pod, "app").as_deref() == Some("CrashLoopBackOff");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_backoff, "CrashLoopBackOff was shown");
    assert_eq!(restarts.len(), 4, "restarts: {restarts:?}");
    let gaps: Vec<Duration> = restarts.windows(2).map(|w| w[1] - w[0]).collect();
    // 0.5 s, 1 s, 2 s of backoff between restarts 1→2, 2→3, 3→4.
    assert!(
        gaps[0] >= Duration::from_millis(450) && gaps[1] >= Duration::from_millis(950) && gaps[2] >= Duration::from_millis(1900),
        "gaps {gaps:?}"
    );
    assert!(gaps[1] > gaps[0] && gaps[2] > gaps[1], "delays grow: {gaps:?}");
    let pod = api.get("crash").await.expect("pod");
    let last_exit = container(&pod, "app").and_then(|c| c.last_state.clone()).and_then(|s| s.terminated).expect("lastState");
    assert_eq!((last_exit.exit_code, last_exit.reason.as_deref()), (3, Some("Error")));
    let mut logs = node.logs("default", "crash", &LogParams { previous: true, ..LogParams::default() }).await.expect("previous logs");
    let mut text = Vec::new();
    while let Some(chunk) = logs.next().await {
        text.extend_from_slice(&chunk.expect("chunk"));
    }
    assert_eq!(String::from_utf8_lossy(&text), "boom\n");
    let events = Api::<Event>::namespaced(client.clone(), "default").list(&ListParams::default()).await.expect("events");
    assert!(events.items.iter().any(|e| e.reason.as_deref() == Some("BackOff")), "a BackOff event is recorded");
    cleanup(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_liveness_probe_restarts_the_container() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = api_server();
    let node = start(&client, dir.path(), None).await;
    let p = pod(
        "sick",
        "proc-node",
        serde_json::json!({ "terminationGracePeriodSeconds": 2, "containers": [{
            "name": "app", "image": "host", "command": ["sleep", "1000"],
            "livenessProbe": { "exec": { "command": ["sh", "-c", "exit 1"] }, "periodSeconds": 1, "failureThreshold": 2 }
        }] }),
    );
    create(&client, &p).await;
    let pod = wait_pod(&client, "sick", 15 * SECOND, TICK, "restarted by liveness", |p| {
        container(p, "app").is_some_and(|c| c.restart_count >= 1)
    })
    .await;
    let last = container(&pod, "app").and_then(|c| c.last_state.clone()).and_then(|s| s.terminated).expect("lastState");
    assert_eq!(last.exit_code, 143, "stopped with SIGTERM");
    let events = Api::<Event>::namespaced(client.clone(), "default").list(&ListParams::default()).await.expect("events");
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Unhealthy") && e.message.as_deref().is_some_and(|m| m.contains("Liveness")))
    );
    assert!(events.items.iter().any(|e| e.reason.as_deref() == Some("Killing")));
    cleanup(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_map_change_reaches_the_mounted_file() {
    let support = MountSupport::detect();
    if support == MountSupport::Unavailable {
        assert!(!require_components(), "mount namespaces are required (run as root)");
        eprintln!("SKIPPED a_config_map_change_reaches_the_mounted_file: no mount namespaces here (needs root or user namespaces)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let client = api_server();
    let node = start(&client, dir.path(), None).await;
    create_cm(&client, "site", serde_json::json!({ "greeting": "hello" })).await;
    let mount = dir.path().join("mnt/config").to_string_lossy().into_owned();
    let p = pod(
        "reader",
        "proc-node",
        serde_json::json!({
            "volumes": [{ "name": "cfg", "configMap": { "name": "site" } }, { "name": "scratch", "emptyDir": {} }],
            "containers": [{ "name": "app", "image": "host", "command": ["sleep", "1000"],
                "volumeMounts": [{ "name": "cfg", "mountPath": mount }, { "name": "scratch", "mountPath": format!("{mount}-scratch") }] }]
        }),
    );
    create(&client, &p).await;
    wait_pod(&client, "reader", 10 * SECOND, TICK, "running", |p| phase(p) == "Running").await;
    let cat: Vec<String> = vec!["cat".into(), format!("{mount}/greeting")];
    let read = || async {
        node.exec_sync("default", "reader", None, &cat, 5 * SECOND).await.map(|r| String::from_utf8_lossy(&r.stdout).into_owned())
    };
    assert_eq!(read().await.expect("cat").as_str(), "hello");
    assert!(!Path::new(&format!("{mount}/greeting")).exists(), "the mount lives only in the container's mount namespace");
    let patch = Patch::Merge(serde_json::json!({ "data": { "greeting": "bonjour" } }));
    Api::<ConfigMap>::namespaced(client.clone(), "default").patch("site", &patch, &PatchParams::default()).await.expect("update cm");
    let deadline = Instant::now() + 10 * SECOND;
    loop {
        let got = read().await.expect("cat");
        if got == "bonjour" {
            break;
        }
        assert!(Instant::now() < deadline, "the update did not reach the file: {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cleanup(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_mount_namespaces_the_pod_fails_naming_the_mount() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = api_server();
    let node = start(&client, dir.path(), Some(MountSupport::Unavailable)).await;
    let p = pod(
        "needs-mount",
        "proc-node",
        serde_json::json!({
            "volumes": [{ "name": "scratch", "emptyDir": {} }],
            "containers": [{ "name": "app", "image": "host", "command": ["sleep", "1000"], "volumeMounts": [{ "name": "scratch", "mountPath": "/data/scratch" }] }]
        }),
    );
    create(&client, &p).await;
    let pod = wait_pod(&client, "needs-mount", 10 * SECOND, TICK, "CreateContainerError", |p| {
        waiting_reason(p, "app").as_deref() == Some("CreateContainerError")
    })
    .await;
    let msg = container(&pod, "app").and_then(|c| c.state.clone()).and_then(|s| s.waiting).and_then(|w| w.message).unwrap_or_default();
    assert!(msg.contains("/data/scratch"), "the waiting message names the mount: {msg}");
    let deadline = Instant::now() + 5 * SECOND;
    loop {
        let events = Api::<Event>::namespaced(client.clone(), "default").list(&ListParams::default()).await.expect("events");
        if events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("FailedMount") && e.message.as_deref().is_some_and(|m| m.contains("/data/scratch")))
        {
            break;
        }
        assert!(Instant::now() < deadline, "a FailedMount event names the mount");
        tokio::time::sleep(TICK).await;
    }
    cleanup(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_reattaches_to_running_containers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = api_server();
    let first = start(&client, dir.path(), None).await;
    let p = pod(
        "survivor",
        "proc-node",
        serde_json::json!({ "terminationGracePeriodSeconds": 5, "containers": [{ "name": "app", "image": "host", "command": ["sleep", "1000"] }] }),
    );
    create(&client, &p).await;
    let before = wait_pod(&client, "survivor", 10 * SECOND, TICK, "running", |p| phase(p) == "Running").await;
    let id = container_id(&before, "app").expect("id");
    first.shutdown();
    let second = start(&client, dir.path(), None).await;
    tokio::time::sleep(SECOND).await;
    let after = wait_pod(&client, "survivor", 5 * SECOND, TICK, "still running", |p| phase(p) == "Running").await;
    assert_eq!(container_id(&after, "app"), Some(id.clone()), "the same container, not a new one");
    assert_eq!(container(&after, "app").map(|c| c.restart_count), Some(0));
    assert_eq!(
        second.runtime().container_status(&id).await.expect("status").state,
        bosun_runtime::ContainerState::Running,
        "the new agent's runtime tracks it"
    );
    let api = Api::<bosun_core::k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), "default");
    api.delete("survivor", &DeleteParams::default()).await.expect("delete");
    let deadline = Instant::now() + 15 * SECOND;
    while api.get_opt("survivor").await.expect("get").is_some() {
        assert!(Instant::now() < deadline, "the re-attached pod is terminated on delete");
        tokio::time::sleep(TICK).await;
    }
    // The sandbox goes right after the pod object.
    let deadline = Instant::now() + 5 * SECOND;
    loop {
        let st = second.runtime().list_containers(&Default::default()).await.expect("list");
        if st.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "its containers are removed: {st:?}");
        tokio::time::sleep(TICK).await;
    }
    cleanup(&second).await;
}
