//! `kubectl exec`, `kubectl cp` and `kubectl attach` against the reference cluster with the real
//! kubectl (WebSocket `v5.channel.k8s.io`, no SPDY): output streams, exit codes, stdin, clear
//! errors for a missing container or pod.

use crate::kubectl::{KillContainers, Kubectl, kubectl_binary, one_node_in_memory};
use bosun_examples::Cluster;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

/// Runs kubectl; returns (exit code, stdout, stderr).
fn kubectl_status(k: &Kubectl, args: &[&str]) -> (Option<i32>, String, String) {
    let out = k.command(args).stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("run kubectl {args:?}: {e}"));
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_cp_and_attach_work() {
    let Some(binary) = kubectl_binary() else { return };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let _cleanup = KillContainers(dir.path().join("data"));
    let cluster = Cluster::start(one_node_in_memory(dir.path())).await.unwrap_or_else(|e| panic!("start cluster: {e}"));
    let k = Kubectl::new(binary, &dir.path().join("kubeconfig"), &dir.path().join("cache"));

    k.eventually(&["get", "nodes"], WAIT, |out| out.contains("node-1") && out.contains(" Ready ")).await;
    k.run(&["run", "shell", "--image=busybox", "--restart=Never", "--command", "--", "sleep", "3600"]);
    k.eventually(&["get", "pod", "shell"], WAIT, |out| out.contains("Running")).await;

    // Both output streams and the exit code.
    let (code, stdout, stderr) = kubectl_status(&k, &["exec", "shell", "--", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(code, Some(3), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stdout, "out\n");
    assert!(stderr.starts_with("err\n") && stderr.contains("command terminated with exit code 3"), "{stderr}");

    // Success, with arguments passed through as they are.
    let (code, stdout, stderr) = kubectl_status(&k, &["exec", "shell", "-c", "shell", "--", "echo", "a  b", "$HOME"]);
    assert_eq!((code, stdout.as_str()), (Some(0), "a  b $HOME\n"), "{stderr}");

    // Standard input, closed when kubectl's input ends (the v5 close signal).
    let echoed = k.output_with_stdin(&["exec", "-i", "shell", "--", "cat"], Some(b"hi\n"));
    assert!(echoed.status.success(), "{}", String::from_utf8_lossy(&echoed.stderr));
    assert_eq!(echoed.stdout, b"hi\n");
    let big: Vec<u8> = (0..200_000u32).flat_map(|i| format!("{i}\n").into_bytes()).collect();
    let counted = k.output_with_stdin(&["exec", "-i", "shell", "--", "wc", "-c"], Some(&big));
    assert_eq!(String::from_utf8_lossy(&counted.stdout).trim(), big.len().to_string(), "{}", String::from_utf8_lossy(&counted.stderr));

    // A terminal (`-t`), when kubectl itself runs in one: util-linux `script` gives it one here.
    // The command's stdin is a terminal of kubectl's size.
    let kubectl_tty = format!(
        "stty rows 30 cols 100; {} --kubeconfig {} --cache-dir {} exec -it shell -- sh -c 'test -t 0 && tty; stty size; exit 4'",
        k.binary.display(),
        k.kubeconfig.display(),
        k.cache.display()
    );
    let out = Command::new("script")
        .args(["--quiet", "--return", "--command", &kubectl_tty, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run script: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/") && text.contains("30 100"), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(4), "{text}");
    // Resizing kubectl's terminal resizes the command's: once the command has printed its first
    // size (and made `sized`), kubectl's terminal becomes 40x120 and kubectl (on SIGWINCH) sends
    // the new size, which the command sees within 20 s.
    let sized = dir.path().join("sized").display().to_string();
    let resized = format!(
        "(i=0; while [ ! -e {sized} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; stty rows 40 cols 120) </dev/tty & {}; wait",
        kubectl_tty.replace(
            "sh -c 'test -t 0 && tty; stty size; exit 4'",
            &format!(
                "sh -c 'stty size; touch {sized}; i=0; while [ \"$(stty size)\" = \"30 100\" ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done; echo now $(stty size)'"
            )
        )
    );
    let out = Command::new("script")
        .args(["--quiet", "--return", "--command", &resized, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run script: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("30 100") && text.contains("now 40 120"), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{text}");
    // An interactive shell: keystrokes (Enter is a carriage return in raw mode) reach it through
    // the terminal's line discipline.
    let shell = kubectl_tty.replace("sh -c 'test -t 0 && tty; stty size; exit 4'", "sh");
    let mut typing = Command::new("script")
        .args(["--quiet", "--return", "--command", &shell, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run script: {e}"));
    if let Some(mut keys) = typing.stdin.take() {
        keys.write_all(b"echo hi-$((1+2))\rexit 7\r").unwrap_or_else(|e| panic!("type: {e}"));
    }
    let out = typing.wait_with_output().unwrap_or_else(|e| panic!("wait for script: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("hi-3"), "{text}");
    assert_eq!(out.status.code(), Some(7), "{text}");

    // Clear errors for a container or pod that is not there.
    let (code, _, stderr) = kubectl_status(&k, &["exec", "shell", "-c", "nope", "--", "true"]);
    assert_ne!(code, Some(0));
    // Refused before the upgrade, so kubectl's SPDY fallback gets the same Status.
    assert!(stderr.contains("Error from server (BadRequest): container nope is not valid for pod shell"), "{stderr}");
    let (code, _, stderr) = kubectl_status(&k, &["exec", "ghost", "--", "true"]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("NotFound") || stderr.contains("not found"), "{stderr}");
    // A command that cannot start is reported, not hung on.
    let (code, _, stderr) = kubectl_status(&k, &["exec", "shell", "--", "/no/such/binary"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("No such file or directory"), "{stderr}");

    // kubectl cp is exec of tar, both ways.
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap_or_else(|e| panic!("mkdir: {e}"));
    let files = files.to_str().unwrap_or_default().to_owned();
    let source = format!("{files}/in-pod.txt");
    k.run(&["exec", "shell", "--", "sh", "-c", &format!("printf 'from the pod\\n' > {source}")]);
    let copied = dir.path().join("copied.txt");
    let copied_arg = copied.to_str().unwrap_or_default().to_owned();
    let (code, stdout, stderr) = kubectl_status(&k, &["cp", &format!("shell:{source}"), &copied_arg]);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(std::fs::read_to_string(&copied).unwrap_or_default(), "from the pod\n");
    let upload = dir.path().join("upload.txt");
    std::fs::write(&upload, "to the pod\n").unwrap_or_else(|e| panic!("write: {e}"));
    let target = format!("{files}/uploaded.txt");
    let (code, stdout, stderr) = kubectl_status(&k, &["cp", upload.to_str().unwrap_or_default(), &format!("shell:{target}")]);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(k.run(&["exec", "shell", "--", "cat", &target]), "to the pod\n");

    // Attach follows the container's output until it exits: the container ticks until the test
    // has seen a tick through attach, then is told to stop.
    let stop = format!("{files}/stop-ticking");
    let script = format!("i=0; while [ ! -f {stop} ] && [ $i -lt 600 ]; do echo tick $i; i=$((i+1)); sleep 0.2; done; echo stopped");
    k.run(&["run", "ticker", "--image=busybox", "--restart=Never", "--command", "--", "sh", "-c", &script]);
    k.eventually(&["get", "pod", "ticker"], WAIT, |out| out.contains("Running")).await;
    let attached_out = dir.path().join("attach.out");
    let attach = k
        .command(&["attach", "ticker"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&attached_out).unwrap_or_else(|e| panic!("create: {e}")))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run kubectl attach: {e}"));
    let deadline = std::time::Instant::now() + WAIT;
    while !std::fs::read_to_string(&attached_out).unwrap_or_default().contains("tick") {
        assert!(std::time::Instant::now() < deadline, "kubectl attach never showed a tick");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::write(&stop, "").unwrap_or_else(|e| panic!("write: {e}"));
    let attached = attach.wait_with_output().unwrap_or_else(|e| panic!("wait for kubectl attach: {e}"));
    let stdout = std::fs::read_to_string(&attached_out).unwrap_or_default();
    assert!(attached.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&attached.stderr));
    assert!(stdout.contains("stopped"), "attach ends with the container's last words: {stdout}");

    cluster.shutdown().await;
}
