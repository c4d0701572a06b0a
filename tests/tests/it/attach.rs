//! `kubectl run -it` and `kubectl attach -i` against the reference cluster with the real kubectl:
//! the container's main process keeps a stdin (a terminal with `tty`) that attach sessions write
//! to; `stdinOnce` closes it when the first session detaches.

use crate::kubectl::{KillContainers, Kubectl, kubectl_binary, one_node_in_memory};
use bosun_examples::Cluster;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

/// A pod whose main process reads its stdin (kept open across sessions, no terminal) and answers
/// each line until `quit`.
const READER: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: reader
spec:
  restartPolicy: Never
  containers:
  - name: reader
    image: busybox
    stdin: true
    command: ["sh", "-c", "while read l; do echo \"got:$l\"; [ \"$l\" = quit ] && exit 0; done; echo eof"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_run_it_and_attach_reach_the_containers_stdin() {
    let Some(binary) = kubectl_binary() else { return };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let _cleanup = KillContainers(dir.path().join("data"));
    let cluster = Cluster::start(one_node_in_memory(dir.path())).await.unwrap_or_else(|e| panic!("start cluster: {e}"));
    let k = Kubectl::new(binary, &dir.path().join("kubeconfig"), &dir.path().join("cache"));
    k.eventually(&["get", "nodes"], WAIT, |out| out.contains("node-1") && out.contains(" Ready ")).await;

    // `kubectl run -it --rm`: a shell on a terminal (stdin, stdinOnce, tty) fed commands on
    // kubectl's stdin, which is no terminal here (kubectl says so and attaches without one); the
    // shell's answer comes back, its exit ends the session and the pod is deleted.
    let out = k.output_with_stdin(
        &["run", "-it", "--rm", "--restart=Never", "shell", "--image=busybox", "--", "sh"],
        Some(b"echo answer-$((6*7))\nexit\n"),
    );
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("answer-42"), "the shell ran the command typed on stdin: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("pod \"shell\" deleted") || stderr.contains("pod \"shell\" deleted"), "{stdout}\n{stderr}");
    let (found, _, _) = k.try_run(&["get", "pod", "shell"]);
    assert!(!found, "--rm deleted the pod");

    // `kubectl run -i` without a terminal and a command that fails: the input reaches it, and
    // kubectl reports the container's exit code from the pod's status.
    let out = k.output_with_stdin(
        &["run", "-i", "--restart=Never", "counter", "--image=busybox", "--", "sh", "-c", "wc -l; exit 3"],
        Some(b"a\nb\n"),
    );
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains('2'), "wc counted the two lines sent: {stdout}\nstderr: {stderr}");
    assert!(!out.status.success(), "the container's exit code fails kubectl run: {stdout}\n{stderr}");
    k.eventually(&["get", "pod", "counter"], WAIT, |out| out.contains("Error")).await;

    // `kubectl attach -i` to a running pod with stdin: lines typed reach its main process,
    // which answers on the session and exits at `quit`, which ends the session.
    let applied = k.output_with_stdin(&["apply", "-f", "-"], Some(READER.as_bytes()));
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    k.eventually(&["get", "pod", "reader"], WAIT, |out| out.contains("Running")).await;
    let out = k.output_with_stdin(&["attach", "-i", "reader"], Some(b"one\ntwo\nquit\n"));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("got:one") && stdout.contains("got:two") && stdout.contains("got:quit"), "{stdout}\nstderr: {stderr}");
    k.eventually(&["get", "pod", "reader"], WAIT, |out| out.contains("Completed")).await;
    let logs = k.run(&["logs", "reader"]);
    assert!(logs.contains("got:one") && !logs.contains("eof"), "the process saw no end of its stdin: {logs}");

    cluster.shutdown().await;
}
