//! Helpers shared by the node-agent tests.

use bosun_core::k8s_openapi::api::core::v1::Pod;
use bosun_core::{Api, Client, PostParams};
use std::sync::Arc;
use std::time::Duration;

/// An in-memory API server as a client.
pub fn api_server() -> Arc<dyn Client> {
    bosun_store::ApiServer::in_memory()
}

/// A pod bound to `node` from a JSON spec.
pub fn pod(name: &str, node: &str, spec: serde_json::Value) -> Pod {
    let mut spec = spec;
    spec["nodeName"] = serde_json::json!(node);
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": "default" },
        "spec": spec,
    }))
    .expect("pod json")
}

/// Creates a pod.
pub async fn create(client: &Arc<dyn Client>, pod: &Pod) -> Pod {
    Api::<Pod>::namespaced(client.clone(), "default").create(pod, &PostParams::default()).await.expect("create pod")
}

/// Polls a pod every `step` until `check` passes or `limit` passes (then panics with the last state).
pub async fn wait_pod(
    client: &Arc<dyn Client>,
    name: &str,
    limit: Duration,
    step: Duration,
    what: &str,
    check: impl Fn(&Pod) -> bool,
) -> Pod {
    let api = Api::<Pod>::namespaced(client.clone(), "default");
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let last = api.get_opt(name).await.expect("get pod");
        if let Some(p) = &last
            && check(p)
        {
            return p.clone();
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "pod {name}: {what} not reached within {limit:?}; last: {}",
                serde_json::to_string_pretty(&last.map(|p| p.status)).unwrap_or_default()
            );
        }
        tokio::time::sleep(step).await;
    }
}

/// The phase of a pod.
pub fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// The status of a named app container.
pub fn container<'a>(p: &'a Pod, name: &str) -> Option<&'a bosun_core::k8s_openapi::api::core::v1::ContainerStatus> {
    p.status.as_ref()?.container_statuses.as_ref()?.iter().find(|c| c.name == name)
}

/// The waiting reason of a named app container.
pub fn waiting_reason(p: &Pod, name: &str) -> Option<String> {
    container(p, name)?.state.as_ref()?.waiting.as_ref()?.reason.clone()
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The runtime id (without the `runtime://` prefix) of a named container.
pub fn container_id(p: &Pod, name: &str) -> Option<bosun_runtime::ContainerId> {
    let uri = container(p, name)?.container_id.clone()?;
    Some(bosun_runtime::ContainerId(uri.split_once("://").map_or(uri.clone(), |(_, id)| id.to_string())))
}

/// Whether components must be present (CI) rather than skipped.
pub fn require_components() -> bool {
    std::env::var("BOSUN_REQUIRE_COMPONENTS").is_ok_and(|v| v == "1")
}

/// Reads a terminal session's output until it contains `want` (panics after 10 s with what came).
pub async fn read_until(out: &mut (impl tokio::io::AsyncRead + Unpin), seen: &mut String, want: &str) {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 1024];
    while !seen.contains(want) {
        let n = tokio::time::timeout_at(deadline, out.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {want:?} on the terminal; it showed {seen:?}"))
            .expect("read the terminal");
        assert!(n > 0, "the terminal closed before {want:?}; it showed {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

/// `exec_tty` in a running container: the command has a terminal of the asked size as its
/// controlling terminal (stty, tty), a resize reaches it, ^C interrupts its foreground process
/// group, and the exit code comes back. `sized_from_start`: the terminal has its size before the
/// command starts (runc sizes the container's own terminal just after it starts the command, as
/// containerd does, so a very early `stty size` may see none there).
pub async fn check_exec_tty(rt: &dyn bosun_runtime::ContainerRuntime, id: &bosun_runtime::ContainerId, sized_from_start: bool) {
    use bosun_runtime::cri::TerminalSize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let script = "stty size; tty; echo term=$TERM; while read line && [ \"$line\" != done ]; do stty size; done; \
                  trap 'sleep 0.5; echo interrupted; exit 5' INT; echo waiting; read never; echo not-interrupted";
    let cmd = vec!["sh".to_string(), "-c".into(), script.into()];
    let mut session = rt.exec_tty(id, &cmd, Some(TerminalSize { width: 80, height: 24 })).await.expect("exec with a terminal");
    let mut seen = String::new();
    if sized_from_start {
        read_until(&mut session.stdout, &mut seen, "24 80").await;
    }
    read_until(&mut session.stdout, &mut seen, "term=xterm").await;
    assert!(seen.contains("/dev/pts/"), "the command's stdin is a terminal: {seen:?}");
    let resize = session.resize.clone().expect("a terminal session can be resized");
    resize(TerminalSize { width: 132, height: 43 }).expect("resize");
    // A resize reaches the command's terminal a moment later (runc relays it on SIGWINCH).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains("43 132") {
        assert!(tokio::time::Instant::now() < deadline, "the resize never showed; the terminal showed {seen:?}");
        session.stdin.write_all(b"size\n").await.expect("type");
        let mut buf = [0u8; 1024];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), session.stdout.read(&mut buf)).await {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    session.stdin.write_all(b"done\n").await.expect("type");
    read_until(&mut session.stdout, &mut seen, "waiting").await;
    // ^C makes the line discipline signal the foreground group and then flush the terminal's
    // queues; the trap waits a moment so its echo is not written before that flush and lost.
    session.stdin.write_all(&[0x03]).await.expect("type ^C");
    read_until(&mut session.stdout, &mut seen, "interrupted").await;
    let code = tokio::time::timeout(Duration::from_secs(10), session.exit).await.expect("the command ends").expect("exit code");
    assert_eq!(code, 5, "the trap's exit code; the terminal showed {seen:?}");
}
