//! `kubectl debug` (ephemeral containers) against the reference cluster with the real kubectl:
//! the debugger is added through `pods/ephemeralcontainers`, runs in the pod's sandbox once, never
//! restarts, is reported in `status.ephemeralContainerStatuses`, and is reached by logs and attach.

use crate::kubectl::{OneNode, kubectl_binary};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_debug_runs_an_ephemeral_container_in_a_running_pod() {
    let Some(binary) = kubectl_binary() else { return };
    let node = OneNode::ready(binary).await;
    let k = &node.k;
    k.run(&["run", "target", "--image=busybox", "--restart=Never", "--command", "--", "sleep", "3600"]);
    k.eventually(&["get", "pod", "target"], WAIT, |out| out.contains("Running")).await;

    // Non-interactive: kubectl adds the container and returns.
    let (ok, stdout, stderr) =
        k.try_run(&["debug", "pod/target", "--image=busybox", "-c", "dbg", "--", "sh", "-c", "echo from the debugger"]);
    assert!(ok, "kubectl debug failed:\nstdout: {stdout}\nstderr: {stderr}");
    let spec = k.run(&["get", "pod", "target", "-o", "jsonpath={.spec.ephemeralContainers[*].name}"]);
    assert_eq!(spec.trim(), "dbg", "the ephemeral container is in the pod's spec");

    // It runs once and ends: terminated with exit code 0, never restarted, never ready; the pod
    // stays Running and Ready (the debugger counts for neither).
    let jsonpath = "jsonpath={.status.ephemeralContainerStatuses[?(@.name==\"dbg\")].state.terminated.exitCode}";
    k.eventually(&["get", "pod", "target", "-o", jsonpath], WAIT, |out| out.trim() == "0").await;
    let statuses = k.run(&["get", "pod", "target", "-o", "jsonpath={.status.ephemeralContainerStatuses[0]}"]);
    let status: serde_json::Value = serde_json::from_str(&statuses).unwrap_or_else(|e| panic!("status {statuses}: {e}"));
    assert_eq!(status["restartCount"], 0, "{status}");
    assert_eq!(status["ready"], false, "{status}");
    let logs = k.run(&["logs", "target", "-c", "dbg"]);
    assert_eq!(logs, "from the debugger\n");
    let phase = k.run(&["get", "pod", "target", "-o", "jsonpath={.status.phase} {.status.containerStatuses[0].ready}"]);
    assert_eq!(phase.trim(), "Running true");
    // A second look a while later: still terminated once, not restarted.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = k.run(&["get", "pod", "target", "-o", "jsonpath={.status.ephemeralContainerStatuses[0].restartCount}"]);
    assert_eq!(again.trim(), "0");

    // The same name again: refused (names are unique across the pod's containers).
    let (ok, _, stderr) = k.try_run(&["debug", "pod/target", "--image=busybox", "-c", "target", "--", "true"]);
    assert!(!ok && stderr.contains("Duplicate value"), "a name taken by a container is refused: {stderr}");

    // Interactive: kubectl waits for the debugger to run, attaches to its stdin and prints what
    // it answers. (kubectl sets `stdin` but not `stdinOnce`: the container's stdin stays open
    // after kubectl's ends, as on a kubelet, so the command reads one line and exits.)
    let out = k.output_with_stdin(
        &["debug", "-i", "pod/target", "--image=busybox", "-c", "dbg2", "--", "sh", "-c", "read l; echo got:$l"],
        Some(b"hi\n"),
    );
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("got:hi"), "the debugger read kubectl's stdin: {stdout}\nstderr: {stderr}");
    let names = k.run(&["get", "pod", "target", "-o", "jsonpath={.spec.ephemeralContainers[*].name}"]);
    assert_eq!(names.trim(), "dbg dbg2");
}
