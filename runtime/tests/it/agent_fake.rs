//! The node agent over the fake runtime on paused tokio time: registration and lease, crash-loop
//! backoff, probes, init containers, phases, graceful deletion.

use crate::support::*;
use bosun_core::k8s_openapi::api::coordination::v1::Lease;
use bosun_core::k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use bosun_core::{Api, Client, DeleteParams, PostParams};
use bosun_runtime::agent::backoff::DoublingBackoff;
use bosun_runtime::{FakeRuntime, HostImages, NodeAgent, NodeAgentConfig, NodeHandle};
use std::sync::Arc;
use std::time::Duration;

async fn start_node(client: &Arc<dyn Client>, name: &str, fake: &FakeRuntime, dir: &std::path::Path) -> NodeHandle {
    let config = NodeAgentConfig::new(name, dir.join(name)).measure_pressure(false).record_events(true);
    NodeAgent::new(client.clone(), fake.clone(), HostImages, config).start().await.expect("start agent")
}

fn script(s: serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "fake.bosun.dev/script": s.to_string() })
}

#[tokio::test(start_paused = true)]
async fn node_registers_with_capacity_and_renews_its_lease() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = api_server();
    let fake = FakeRuntime::new();
    let _node = start_node(&client, "n1", &fake, dir.path()).await;
    let node = Api::<Node>::all(client.clone()).get("n1").await.expect("node registered");
    let labels = node.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("kubernetes.io/hostname").map(String::as_str), Some("n1"));
    assert_eq!(labels.get("kubernetes.io/os").map(String::as_str), Some("linux"));
    let status = node.status.expect("node status");
    let cap = status.capacity.expect("capacity");
    for r in ["cpu", "memory", "pods", "ephemeral-storage"] {
        assert!(cap.contains_key(r), "capacity has {r}");
        assert!(status.allocatable.as_ref().is_some_and(|a| a.contains_key(r)), "allocatable has {r}");
    }
    assert_eq!(cap.get("pods").map(|q| q.0.as_str()), Some("110"));
    let conds = status.conditions.expect("conditions");
    assert!(conds.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    for t in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert!(conds.iter().any(|c| c.type_ == t && c.status == "False"), "{t} is False");
    }
    assert!(status.node_info.is_some_and(|i| i.container_runtime_version.starts_with("fake://")));
    let leases = Api::<Lease>::namespaced(client.clone(), "kube-node-lease");
    let first = leases.get("n1").await.expect("lease").spec.expect("spec");
    assert_eq!(first.holder_identity.as_deref(), Some("n1"));
    assert_eq!(first.lease_duration_seconds, Some(40));
    tokio::time::sleep(Duration::from_secs(11)).await;
    let second = leases.get("n1").await.expect("lease").spec.expect("spec");
    assert!(second.renew_time.expect("renewed").0 > first.renew_time.expect("renew time").0, "the lease is renewed every 10 s");
}

#[tokio::test(start_paused = true)]
async fn a_crashing_container_backs_off_10s_doubling() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = api_server();
    let fake = FakeRuntime::new();
    let _node = start_node(&client, "n1", &fake, dir.path()).await;
    let mut p = pod("crasher", "n1", serde_json::json!({ "containers": [{ "name": "app", "image": "busybox" }] }));
    p.metadata.annotations = serde_json::from_value(script(serde_json::json!({ "exitAfterMs": 1000, "exitCode": 2 }))).ok();
    create(&client, &p).await;
    // Record when each restart happens (virtual seconds since creation).
    let api = Api::<Pod>::namespaced(client.clone(), "default");
    let start = tokio::time::Instant::now();
    let mut restarts_at: Vec<f64> = Vec::new();
    let mut saw_backoff = false;
    let mut last = 0;
    while restarts_at.len() < 5 && start.elapsed() < Duration::from_secs(400) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let pod = api.get("crasher").await.expect("pod");
        let Some(cs) = container(&pod, "app") else { continue };
        if cs.restart_count > last {
            last = cs.restart_count;
            restarts_at.push(start.elapsed().as_secs_f64());
        }
        if waiting_reason(&pod, "app").as_deref() == Some("CrashLoopBackOff") {
            saw_backoff = true;
            let w = cs.state.as_ref().and_then(|s| s.waiting.as_ref()).and_then(|w| w.message.clone()).unwrap_or_default();
            assert!(w.starts_with("back-off ") && w.contains("restarting failed container=app"), "kubelet-style message: {w}");
            let last_exit = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()).map(|t| t.exit_code);
            assert_eq!(last_exit, Some(2), "lastState shows the crash");
            assert_ne!(phase(&pod), "Failed");
        }
    }
    assert!(saw_backoff, "the pod showed CrashLoopBackOff");
    assert_eq!(restarts_at.len(), 5, "five restarts within 400 s: {restarts_at:?}");
    // Each instance runs 1 s; then restart 1 is at once and the next wait 10, 20, 40, 80 s.
    let gaps: Vec<f64> = restarts_at.windows(2).map(|w| w[1] - w[0]).collect();
    let expected = [11.0, 21.0, 41.0, 81.0];
    for (gap, want) in gaps.iter().zip(expected) {
        assert!((gap - want).abs() < 1.5, "gaps {gaps:?} follow 10 s doubling (+1 s of running)");
    }
    assert!(restarts_at[0] < 3.0, "the first restart comes at once: {restarts_at:?}");
}

#[tokio::test(start_paused = true)]
async fn the_backoff_curve_is_pluggable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = api_server();
    let fake = FakeRuntime::new();
    let config = NodeAgentConfig::new("n1", dir.path().join("n1")).measure_pressure(false).backoff(DoublingBackoff::fast());
    let _node = NodeAgent::new(client.clone(), fake.clone(), HostImages, config).start().await.expect("start");
    let mut p = pod("crasher", "n1", serde_json::json!({ "containers": [{ "name": "app", "image": "x" }] }));
    p.metadata.annotations = serde_json::from_value(script(serde_json::json!({ "exitAfterMs": 100, "exitCode": 1 }))).ok();
    create(&client, &p).await;
    // 1 s doubling: restarts after 0, 1, 2, 4 s, so four restarts well inside 12 s.
    wait_pod(&client, "crasher", Duration::from_secs(12), Duration::from_millis(100), "4 restarts", |p| {
        container(p, "app").is_some_and(|c| c.restart_count >= 4)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn probes_drive_readiness_and_liveness_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = api_server();
    let fake = FakeRuntime::new();
    let _node = start_node(&client, "n1", &fake, dir.path()).await;
    let p = pod(
        "probed",
        "n1",
        serde_json::json!({ "containers": [{
            "name": "app", "image": "x",
            "readinessProbe": { "httpGet": { "port": 8080, "path": "/ready" }, "periodSeconds": 1, "failureThreshold": 1 },
            "livenessProbe": { "tcpSocket": { "port": 8080 }, "initialDelaySeconds": 5, "periodSeconds": 2, "failureThreshold": 3 }
        }] }),
    );
    create(&client, &p).await;
    let running =
        wait_pod(&client, "probed", Duration::from_secs(10), Duration::from_millis(200), "ready", |p| phase(p) == "Running" && is_ready(p))
            .await;
    assert_eq!(running.status.as_ref().and_then(|s| s.qos_class.as_deref()), Some("BestEffort"));
    assert!(running.status.as_ref().and_then(|s| s.pod_ip.clone()).is_some(), "a pod IP is reported");
    let id = container_id(&running, "app").expect("container id");
    fake.set_healthy(&id, false);
    // Readiness fails at once (threshold 1); liveness after 3 failures 2 s apart, then a restart.
    let unready = wait_pod(&client, "probed", Duration::from_secs(3), Duration::from_millis(200), "unready", |p| !is_ready(p)).await;
    assert_eq!(container(&unready, "app").map(|c| c.restart_count), Some(0));
    let restarted = wait_pod(&client, "probed", Duration::from_secs(20), Duration::from_millis(200), "restarted and ready", |p| {
        container(p, "app").is_some_and(|c| c.restart_count == 1) && is_ready(p)
    })
    .await;
    let last = container(&restarted, "app").and_then(|c| c.last_state.clone()).and_then(|s| s.terminated).expect("last state");
    assert_eq!(last.exit_code, 143, "the unhealthy container was stopped with SIGTERM");
}

#[tokio::test(start_paused = true)]
async fn a_startup_probe_holds_liveness_until_it_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = api_server();
    let fake = FakeRuntime::new();
    let _node = start_node(&client, "n1", &fake, dir.path()).await;
    let mut p = pod(
        "slow",
        "n1",
        serde_json::json!({ "containers": [{
            "name": "app", "image": "x",
            "startupProbe": { "exec": { "command": ["check"] }, "periodSeconds": 1, "failureThreshold": 5 }
        }] }),
    );
    p.metadata.annotations = serde_json::from_value(script(serde_json::json!({ "execExitCode": 1 }))).ok();
    create(&client, &p).await;
    // Never started: after 5 failed startup probes the container is restarted.
    let pod = wait_pod(&client, "slow", Duration::from_secs(20), Duration::from_millis(250), "restart after startup failure", |p| {
        container(p, "app").is_some_and(|c| c.restart_count >= 1)
    })
    .await;
    assert_eq!(container(&pod, "app").and_then(|c| c.started), Some(false));
    assert!(!is_ready(&pod));
}

#[tokio::test(start_paused = true)]
async fn init_containers_run_in_order_and_phases_follow_restart_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = api_server();
    let fake = FakeRuntime::new();
    let _node = start_node(&client, "n1", &fake, dir.path()).await;
    let ann = serde_json::json!({
        "fake.bosun.dev/init-1": serde_json::json!({ "exitAfterMs": 2000 }).to_string(),
        "fake.bosun.dev/init-2": serde_json::json!({ "exitAfterMs": 2000 }).to_string(),
        "fake.bosun.dev/main": serde_json::json!({ "exitAfterMs": 2000 }).to_string(),
        "fake.bosun.dev/bad": serde_json::json!({ "exitAfterMs": 500, "exitCode": 3 }).to_string(),
    });
    let mut ok = pod(
        "job",
        "n1",
        serde_json::json!({ "restartPolicy": "Never",
            "initContainers": [{ "name": "init-1", "image": "x" }, { "name": "init-2", "image": "x" }],
            "containers": [{ "name": "main", "image": "x" }] }),
    );
    ok.metadata.annotations = serde_json::from_value(ann.clone()).ok();
    create(&client, &ok).await;
    let initializing = wait_pod(&client, "job", Duration::from_secs(5), Duration::from_millis(100), "initializing", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.init_container_statuses.as_ref())
            .is_some_and(|i| i.iter().any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some())))
    })
    .await;
    assert_eq!(phase(&initializing), "Pending");
    assert_eq!(waiting_reason(&initializing, "main").as_deref(), Some("PodInitializing"));
    let inits = initializing.status.as_ref().and_then(|s| s.init_container_statuses.clone()).unwrap_or_default();
    assert!(inits[0].state.as_ref().is_some_and(|s| s.running.is_some()), "init-1 runs first");
    assert!(inits[1].state.as_ref().is_some_and(|s| s.waiting.is_some()), "init-2 waits for it");
    let done =
        wait_pod(&client, "job", Duration::from_secs(20), Duration::from_millis(200), "Succeeded", |p| phase(p) == "Succeeded").await;
    let main = container(&done, "main").and_then(|c| c.state.clone()).and_then(|s| s.terminated).expect("terminated");
    assert_eq!((main.exit_code, main.reason.as_deref()), (0, Some("Completed")));

    let mut bad = pod(
        "bad-init",
        "n1",
        serde_json::json!({ "restartPolicy": "Never",
            "initContainers": [{ "name": "bad", "image": "x" }],
            "containers": [{ "name": "main", "image": "x" }] }),
    );
    bad.metadata.annotations = serde_json::from_value(ann.clone()).ok();
    create(&client, &bad).await;
    wait_pod(&client, "bad-init", Duration::from_secs(10), Duration::from_millis(200), "Failed", |p| phase(p) == "Failed").await;

    let mut on_failure =
        pod("retry", "n1", serde_json::json!({ "restartPolicy": "OnFailure", "containers": [{ "name": "bad", "image": "x" }] }));
    on_failure.metadata.annotations = serde_json::from_value(ann).ok();
    create(&client, &on_failure).await;
    let p = wait_pod(&client, "retry", Duration::from_secs(30), Duration::from_millis(200), "restarted", |p| {
        container(p, "bad").is_some_and(|c| c.restart_count >= 2)
    })
    .await;
    assert_ne!(phase(&p), "Failed", "OnFailure keeps restarting a failing container");
}

#[tokio::test(start_paused = true)]
async fn sidecars_start_before_app_containers_and_stop_with_the_pod() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = api_server();
    let fake = FakeRuntime::new();
    let _node = start_node(&client, "n1", &fake, dir.path()).await;
    let mut p = pod(
        "with-sidecar",
        "n1",
        serde_json::json!({ "restartPolicy": "Never",
            "initContainers": [{ "name": "proxy", "image": "x", "restartPolicy": "Always" }],
            "containers": [{ "name": "main", "image": "x" }] }),
    );
    p.metadata.annotations = serde_json::from_value(serde_json::json!({
        "fake.bosun.dev/main": serde_json::json!({ "exitAfterMs": 3000 }).to_string()
    }))
    .ok();
    create(&client, &p).await;
    let running =
        wait_pod(&client, "with-sidecar", Duration::from_secs(5), Duration::from_millis(100), "running", |p| phase(p) == "Running").await;
    let proxy = running.status.as_ref().and_then(|s| s.init_container_statuses.clone()).unwrap_or_default();
    assert!(proxy[0].state.as_ref().is_some_and(|s| s.running.is_some()), "the sidecar runs beside the app");
    assert_eq!(proxy[0].started, Some(true));
    let done =
        wait_pod(&client, "with-sidecar", Duration::from_secs(20), Duration::from_millis(200), "Succeeded", |p| phase(p) == "Succeeded")
            .await;
    let proxy = done.status.as_ref().and_then(|s| s.init_container_statuses.clone()).unwrap_or_default();
    assert!(proxy[0].state.as_ref().is_some_and(|s| s.terminated.is_some()), "the sidecar is stopped once the app is done");
    assert_eq!(fake.running(), 0);
}

#[tokio::test(start_paused = true)]
async fn deletion_waits_for_the_grace_period_then_removes_the_pod() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = api_server();
    let fake = FakeRuntime::new();
    let _node = start_node(&client, "n1", &fake, dir.path()).await;
    let mut p =
        pod("stubborn", "n1", serde_json::json!({ "terminationGracePeriodSeconds": 20, "containers": [{ "name": "app", "image": "x" }] }));
    p.metadata.annotations = serde_json::from_value(script(serde_json::json!({ "ignoreSigterm": true }))).ok();
    create(&client, &p).await;
    wait_pod(&client, "stubborn", Duration::from_secs(5), Duration::from_millis(100), "running", |p| phase(p) == "Running").await;
    let api = Api::<Pod>::namespaced(client.clone(), "default");
    let t = tokio::time::Instant::now();
    api.delete("stubborn", &DeleteParams::default()).await.expect("delete");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(api.get_opt("stubborn").await.expect("get").is_some(), "the pod waits out its grace period");
    assert_eq!(fake.running(), 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while api.get_opt("stubborn").await.expect("get").is_some() {
        assert!(tokio::time::Instant::now() < deadline, "the pod is removed after its grace period");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(t.elapsed() >= Duration::from_secs(19), "SIGKILL came only after the grace period: {:?}", t.elapsed());
    assert_eq!(fake.running(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_missing_config_map_holds_the_container_until_it_appears() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = api_server();
    let fake = FakeRuntime::new();
    let _node = start_node(&client, "n1", &fake, dir.path()).await;
    let p = pod(
        "configured",
        "n1",
        serde_json::json!({ "containers": [{ "name": "app", "image": "x",
            "env": [{ "name": "MODE", "valueFrom": { "configMapKeyRef": { "name": "settings", "key": "mode" } } }] }] }),
    );
    create(&client, &p).await;
    let waiting = wait_pod(&client, "configured", Duration::from_secs(5), Duration::from_millis(100), "config error", |p| {
        waiting_reason(p, "app").as_deref() == Some("CreateContainerConfigError")
    })
    .await;
    let msg = container(&waiting, "app").and_then(|c| c.state.clone()).and_then(|s| s.waiting).and_then(|w| w.message).unwrap_or_default();
    assert!(msg.contains("settings"), "the message names the ConfigMap: {msg}");
    let cm: ConfigMap =
        serde_json::from_value(serde_json::json!({ "metadata": { "name": "settings" }, "data": { "mode": "fast" } })).expect("cm");
    Api::<ConfigMap>::namespaced(client.clone(), "default").create(&cm, &PostParams::default()).await.expect("create cm");
    wait_pod(&client, "configured", Duration::from_secs(10), Duration::from_millis(200), "running", |p| {
        phase(p) == "Running" && is_ready(p)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn env_sources_and_generated_volumes_are_resolved() {
    use bosun_core::k8s_openapi::api::core::v1::Secret;
    let dir = tempfile::tempdir().expect("tempdir");
    let client = api_server();
    let seen: Arc<std::sync::Mutex<Vec<(String, String)>>> = Arc::default();
    let mounts: Arc<std::sync::Mutex<Vec<bosun_runtime::Mount>>> = Arc::default();
    let fake = {
        let (seen, mounts) = (seen.clone(), mounts.clone());
        FakeRuntime::with_behavior(move |_, cfg| {
            *seen.lock().expect("lock") = cfg.env.clone();
            *mounts.lock().expect("lock") = cfg.mounts.clone();
            bosun_runtime::FakeScript::default()
        })
    };
    let _node = start_node(&client, "n1", &fake, dir.path()).await;
    let cm: ConfigMap =
        serde_json::from_value(serde_json::json!({ "metadata": { "name": "app-config" }, "data": { "A": "1", "B": "2" } })).expect("cm");
    Api::<ConfigMap>::namespaced(client.clone(), "default").create(&cm, &PostParams::default()).await.expect("cm");
    let secret: Secret =
        serde_json::from_value(serde_json::json!({ "metadata": { "name": "creds" }, "data": { "password": "aHVudGVyMg==" } }))
            .expect("secret");
    Api::<Secret>::namespaced(client.clone(), "default").create(&secret, &PostParams::default()).await.expect("secret");
    let mut p = pod(
        "envy",
        "n1",
        serde_json::json!({
            "volumes": [
                { "name": "info", "downwardAPI": { "items": [{ "path": "labels", "fieldRef": { "fieldPath": "metadata.labels" } }] } },
                { "name": "secret", "secret": { "secretName": "creds" } },
                { "name": "both", "projected": { "sources": [{ "configMap": { "name": "app-config", "items": [{ "key": "A", "path": "a.txt" }] } }, { "secret": { "name": "creds" } }] } }
            ],
            "containers": [{ "name": "app", "image": "x",
                "resources": { "limits": { "cpu": "1500m", "memory": "64Mi" } },
                "envFrom": [{ "configMapRef": { "name": "app-config" }, "prefix": "CFG_" }],
                "env": [
                    { "name": "PASSWORD", "valueFrom": { "secretKeyRef": { "name": "creds", "key": "password" } } },
                    { "name": "NODE", "valueFrom": { "fieldRef": { "fieldPath": "spec.nodeName" } } },
                    { "name": "APP", "valueFrom": { "fieldRef": { "fieldPath": "metadata.labels['app']" } } },
                    { "name": "CPUS", "valueFrom": { "resourceFieldRef": { "resource": "limits.cpu" } } },
                    { "name": "MEM_MI", "valueFrom": { "resourceFieldRef": { "resource": "limits.memory", "divisor": "1Mi" } } },
                    { "name": "OPTIONAL", "valueFrom": { "configMapKeyRef": { "name": "absent", "key": "x", "optional": true } } },
                    { "name": "CFG_A", "value": "overridden" }
                ],
                "volumeMounts": [{ "name": "info", "mountPath": "/etc/info" }, { "name": "secret", "mountPath": "/etc/secret", "readOnly": true }, { "name": "both", "mountPath": "/etc/both" }]
            }]
        }),
    );
    p.metadata.labels = Some([("app".to_string(), "envy".to_string())].into());
    create(&client, &p).await;
    let running = wait_pod(&client, "envy", Duration::from_secs(5), Duration::from_millis(100), "running", |p| phase(p) == "Running").await;
    assert_eq!(running.status.as_ref().and_then(|s| s.qos_class.as_deref()), Some("Guaranteed"), "limits alone make requests");
    let env: std::collections::BTreeMap<String, String> = seen.lock().expect("lock").iter().cloned().collect();
    assert_eq!(env.get("CFG_A").map(String::as_str), Some("overridden"), "env overrides envFrom");
    assert_eq!(env.get("CFG_B").map(String::as_str), Some("2"));
    assert_eq!(env.get("PASSWORD").map(String::as_str), Some("hunter2"));
    assert_eq!(env.get("NODE").map(String::as_str), Some("n1"));
    assert_eq!(env.get("APP").map(String::as_str), Some("envy"));
    assert_eq!(env.get("CPUS").map(String::as_str), Some("2"), "cpu rounds up to whole cores");
    assert_eq!(env.get("MEM_MI").map(String::as_str), Some("64"));
    assert!(!env.contains_key("OPTIONAL"), "a missing optional key is left out");
    let mounts = mounts.lock().expect("lock").clone();
    let host = |c: &str| mounts.iter().find(|m| m.container_path == c).expect("mount").host_path.clone();
    assert_eq!(std::fs::read_to_string(host("/etc/info").join("labels")).expect("labels"), "app=\"envy\"");
    assert_eq!(std::fs::read_to_string(host("/etc/secret").join("password")).expect("password"), "hunter2");
    assert!(mounts.iter().any(|m| m.container_path == "/etc/secret" && m.read_only));
    assert_eq!(std::fs::read_to_string(host("/etc/both").join("a.txt")).expect("a.txt"), "1");
    assert_eq!(std::fs::read_to_string(host("/etc/both").join("password")).expect("password"), "hunter2");
}

#[tokio::test(start_paused = true)]
async fn usage_is_sampled_for_the_metrics_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = api_server();
    let fake = FakeRuntime::new();
    let config = NodeAgentConfig::new("n1", dir.path().join("n1")).measure_pressure(false).usage_interval(Duration::from_secs(1));
    let node = NodeAgent::new(client.clone(), fake.clone(), HostImages, config).start().await.expect("start");
    let mut p = pod("busy", "n1", serde_json::json!({ "containers": [{ "name": "app", "image": "x" }] }));
    p.metadata.annotations = serde_json::from_value(script(serde_json::json!({ "cpuMillis": 250, "memoryBytes": 1048576 }))).ok();
    create(&client, &p).await;
    wait_pod(&client, "busy", Duration::from_secs(5), Duration::from_millis(100), "running", |p| phase(p) == "Running").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let usage = node.usage();
    let pod = usage.pods.iter().find(|p| p.name == "busy").expect("pod usage");
    let c = &pod.containers[0];
    assert_eq!(c.memory_bytes, 1 << 20);
    assert!((240_000_000..=260_000_000).contains(&c.cpu_nanocores), "250m of CPU: {}", c.cpu_nanocores);
    assert_eq!(usage.memory_bytes, 1 << 20);
}

#[tokio::test(start_paused = true)]
async fn a_claim_bound_to_a_host_path_volume_is_mounted() {
    use bosun_core::k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    let dir = tempfile::tempdir().expect("tempdir");
    let client = api_server();
    let mounts: Arc<std::sync::Mutex<Vec<bosun_runtime::Mount>>> = Arc::default();
    let fake = {
        let mounts = mounts.clone();
        FakeRuntime::with_behavior(move |_, cfg| {
            *mounts.lock().expect("lock") = cfg.mounts.clone();
            bosun_runtime::FakeScript::default()
        })
    };
    let _node = start_node(&client, "n1", &fake, dir.path()).await;
    let data = dir.path().join("pv-data");
    let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "local-pv" },
        "spec": { "capacity": { "storage": "1Gi" }, "accessModes": ["ReadWriteOnce"], "hostPath": { "path": data } }
    }))
    .expect("pv");
    Api::<PersistentVolume>::all(client.clone()).create(&pv, &PostParams::default()).await.expect("create pv");
    let pvc: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "claim" },
        "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "1Gi" } }, "volumeName": "local-pv" }
    }))
    .expect("pvc");
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), "default").create(&pvc, &PostParams::default()).await.expect("create pvc");
    let p = pod(
        "stateful",
        "n1",
        serde_json::json!({
            "volumes": [{ "name": "data", "persistentVolumeClaim": { "claimName": "claim" } }],
            "containers": [{ "name": "app", "image": "x", "volumeMounts": [{ "name": "data", "mountPath": "/var/data" }] }]
        }),
    );
    create(&client, &p).await;
    wait_pod(&client, "stateful", Duration::from_secs(5), Duration::from_millis(100), "running", |p| phase(p) == "Running").await;
    let mounts = mounts.lock().expect("lock").clone();
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].host_path, data, "the claim resolves to the volume's host path");
    assert_eq!(mounts[0].container_path, "/var/data");
    assert!(data.is_dir(), "the host path is created");
}

#[tokio::test(start_paused = true)]
async fn a_pod_active_past_its_deadline_fails_with_deadline_exceeded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = api_server();
    let fake = FakeRuntime::new();
    let _node = start_node(&client, "n1", &fake, dir.path()).await;
    let p = pod(
        "bounded",
        "n1",
        serde_json::json!({ "activeDeadlineSeconds": 30, "restartPolicy": "Always", "containers": [{ "name": "app", "image": "x" }] }),
    );
    create(&client, &p).await;
    let t = tokio::time::Instant::now();
    wait_pod(&client, "bounded", Duration::from_secs(5), Duration::from_millis(100), "running", |p| phase(p) == "Running").await;
    tokio::time::sleep(Duration::from_secs(25)).await;
    let api = Api::<Pod>::namespaced(client.clone(), "default");
    assert_eq!(phase(&api.get("bounded").await.expect("pod")), "Running", "still inside its deadline");
    let failed =
        wait_pod(&client, "bounded", Duration::from_secs(10), Duration::from_millis(100), "failed", |p| phase(p) == "Failed").await;
    assert!(t.elapsed() >= Duration::from_secs(30), "not before the deadline: {:?}", t.elapsed());
    let status = failed.status.clone().expect("status");
    assert_eq!(status.reason.as_deref(), Some("DeadlineExceeded"));
    assert!(status.message.is_some_and(|m| m.contains("longer than the specified deadline")));
    assert!(container(&failed, "app").and_then(|c| c.state.as_ref()).is_some_and(|s| s.terminated.is_some()), "the container was killed");
    assert_eq!(fake.running(), 0);
    // Failed for good: nothing restarts it.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(fake.running(), 0);
    assert_eq!(phase(&api.get("bounded").await.expect("pod")), "Failed");
}

/// The host directory of a pod's volume under the agent's root.
fn volume_dir(root: &std::path::Path, pod: &Pod, volume: &str) -> std::path::PathBuf {
    root.join("pods").join(pod.metadata.uid.as_deref().unwrap_or_default()).join("volumes").join(volume)
}

#[tokio::test(start_paused = true)]
async fn an_empty_dir_over_its_size_limit_gets_the_pod_evicted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = api_server();
    let fake = FakeRuntime::new();
    let _node = start_node(&client, "n1", &fake, dir.path()).await;
    let p = pod(
        "hoarder",
        "n1",
        serde_json::json!({
            "containers": [{ "name": "app", "image": "x", "volumeMounts": [{ "name": "scratch", "mountPath": "/scratch" }] }],
            "volumes": [{ "name": "scratch", "emptyDir": { "sizeLimit": "32Ki" } }],
        }),
    );
    let created = create(&client, &p).await;
    wait_pod(&client, "hoarder", Duration::from_secs(5), Duration::from_millis(100), "running", |p| phase(p) == "Running").await;
    let scratch = volume_dir(&dir.path().join("n1"), &created, "scratch");
    std::fs::write(scratch.join("small"), vec![1u8; 4096]).expect("write");
    tokio::time::sleep(Duration::from_secs(25)).await;
    let api = Api::<Pod>::namespaced(client.clone(), "default");
    assert_eq!(phase(&api.get("hoarder").await.expect("pod")), "Running", "within its limit");
    std::fs::write(scratch.join("big"), vec![1u8; 256 * 1024]).expect("write");
    let evicted =
        wait_pod(&client, "hoarder", Duration::from_secs(15), Duration::from_millis(100), "evicted", |p| phase(p) == "Failed").await;
    let status = evicted.status.clone().expect("status");
    assert_eq!(status.reason.as_deref(), Some("Evicted"));
    let message = status.message.unwrap_or_default();
    assert!(message.contains("Usage of EmptyDir volume \"scratch\" exceeds the limit \"32Ki\""), "{message}");
    assert_eq!(fake.running(), 0, "the evicted pod's containers were killed");
}

// Real time: the agent runs `mount`, a real process that paused time would race past.
#[tokio::test]
async fn memory_empty_dirs_are_tmpfs_and_volumes_belong_to_the_fs_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = api_server();
    let fake = FakeRuntime::new();
    let _node = start_node(&client, "n1", &fake, dir.path()).await;
    let root = rustix::process::geteuid().is_root();
    // Without root a volume can only be given to a group the agent is in.
    let fs_group = if root { 4321 } else { rustix::process::getegid().as_raw() };
    let p = pod(
        "mem",
        "n1",
        serde_json::json!({
            "securityContext": { "fsGroup": fs_group },
            "containers": [{ "name": "app", "image": "x", "resources": { "limits": { "memory": "64Mi" } },
                             "volumeMounts": [{ "name": "cache", "mountPath": "/cache" }, { "name": "data", "mountPath": "/data" }] }],
            "volumes": [{ "name": "cache", "emptyDir": { "medium": "Memory", "sizeLimit": "2Mi" } }, { "name": "data", "emptyDir": {} }],
        }),
    );
    let created = create(&client, &p).await;
    wait_pod(&client, "mem", Duration::from_secs(5), Duration::from_millis(100), "running", |p| phase(p) == "Running").await;
    let node_root = dir.path().join("n1");
    let cache = volume_dir(&node_root, &created, "cache");
    let stat = rustix::fs::statfs(&cache).expect("statfs");
    assert!(bosun_runtime::agent::volume::on_tmpfs(&cache), "a memory-backed emptyDir is on a tmpfs");
    if root && !cache.is_symlink() {
        assert_eq!(stat.f_blocks * stat.f_bsize as u64, 2 * 1024 * 1024, "the tmpfs is sized to the sizeLimit");
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    for volume in ["cache", "data"] {
        let meta = std::fs::metadata(volume_dir(&node_root, &created, volume)).expect("volume dir");
        assert_eq!(meta.gid(), fs_group, "{volume} belongs to the fsGroup");
        assert_ne!(meta.permissions().mode() & 0o2000, 0, "{volume} is setgid, so new files join the group");
        assert_eq!(meta.permissions().mode() & 0o060, 0o060, "{volume} is group-writable");
    }
    Api::<Pod>::namespaced(client.clone(), "default")
        .delete("mem", &DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() })
        .await
        .expect("delete");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while node_root.join("pods").join(created.metadata.uid.as_deref().unwrap_or_default()).exists() {
        assert!(tokio::time::Instant::now() < deadline, "the pod's directory (and its tmpfs) goes with the pod");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn status_writes_keep_the_conditions_others_own_and_the_events_kubectl_shows() {
    use bosun_core::k8s_openapi::api::core::v1::Event;
    use bosun_core::{Patch, PatchParams};
    let dir = tempfile::tempdir().expect("tempdir");
    let client = api_server();
    let fake = FakeRuntime::new();
    let p = pod("kept", "n1", serde_json::json!({ "containers": [{ "name": "app", "image": "x" }] }));
    create(&client, &p).await;
    // Conditions the scheduler and a readiness gate's controller wrote before the agent came.
    let api = Api::<Pod>::namespaced(client.clone(), "default");
    let others = serde_json::json!({ "status": { "conditions": [
        { "type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z" },
        { "type": "example.com/gate", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z" },
    ] } });
    api.patch_status("kept", &Patch::Merge(others), &PatchParams::default()).await.expect("others' conditions");
    let _node = start_node(&client, "n1", &fake, dir.path()).await;
    let running = wait_pod(&client, "kept", Duration::from_secs(5), Duration::from_millis(50), "running and ready", |p| {
        phase(p) == "Running" && is_ready(p)
    })
    .await;
    let conditions: Vec<(String, String)> =
        running.status.iter().flat_map(|s| s.conditions.iter().flatten()).map(|c| (c.type_.clone(), c.status.clone())).collect();
    for want in ["PodScheduled", "example.com/gate", "PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready"] {
        assert!(conditions.iter().any(|(t, s)| t == want && s == "True"), "{want} is True: {conditions:?}");
    }
    assert_eq!(conditions.len(), 6, "each condition once: {conditions:?}");
    let status = running.status.clone().expect("status");
    assert!(status.pod_ip.is_some() && status.pod_ips.as_ref().is_some_and(|ips| ips.len() == 1), "{:?}", status.pod_ips);
    assert!(status.start_time.is_some() && status.qos_class.as_deref() == Some("BestEffort"));
    // Nothing changes any more: the agent writes nothing more (the resourceVersion stays), also
    // when someone else's write shows it the status as the server holds it.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let later = api.get("kept").await.expect("pod");
    assert_eq!(later.metadata.resource_version, running.metadata.resource_version, "no status write without a change");
    let labelled = api
        .patch("kept", &Patch::Merge(serde_json::json!({ "metadata": { "labels": { "touched": "yes" } } })), &PatchParams::default())
        .await
        .expect("label");
    tokio::time::sleep(Duration::from_secs(30)).await;
    let later = api.get("kept").await.expect("pod");
    assert_eq!(later.metadata.resource_version, labelled.metadata.resource_version, "the server's status equals the agent's");
    // The events `kubectl describe pod` shows, once each.
    let events = Api::<Event>::namespaced(client.clone(), "default").list(&Default::default()).await.expect("events").items;
    let mut reasons: Vec<&str> =
        events.iter().filter(|e| e.involved_object.name.as_deref() == Some("kept")).filter_map(|e| e.reason.as_deref()).collect();
    reasons.sort_unstable();
    assert_eq!(reasons, ["Created", "Pulled", "Started"]);
}
