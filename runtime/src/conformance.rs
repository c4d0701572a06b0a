//! The conformance suite every [`ContainerRuntime`] backend passes: one set of behaviours (sandbox
//! and container lifecycles, events, grace periods, exec with timeouts, logs, stats, recovery),
//! run against each backend from the crate's integration tests. Failures panic with a message.

use crate::cri::*;
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A scripted container behaviour that each backend expresses its own way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scenario {
    /// Runs until stopped.
    Sleep,
    /// Exits at once with this code.
    Exit(i32),
    /// Prints `out-1` on stdout, `err-1` on stderr, `out-2` on stdout, then sleeps.
    Print,
    /// Ignores SIGTERM and runs until killed.
    IgnoreTerm,
    /// Echoes each line of its stdin (a real shell prints `got:<line>`, and for the line `size`
    /// its terminal's size as `stty size` does) and exits 0 at the end of its stdin.
    Echo,
}

/// The shell script of [`Scenario::Echo`] for backends that run real commands.
pub const ECHO_SCRIPT: &str = "while read l; do if [ \"$l\" = size ]; then stty size; else echo \"got:$l\"; fi; done; echo bye";

/// A backend under test.
pub trait Subject: Send + Sync {
    /// The runtime.
    fn runtime(&self) -> Arc<dyn ContainerRuntime>;
    /// A container configuration for a scenario.
    fn container(&self, name: &str, scenario: &Scenario) -> ContainerConfig;
    /// A sandbox configuration (fresh uid per call).
    fn sandbox(&self, name: &str) -> SandboxConfig;
    /// Whether exec runs real commands (`echo`, `sh -c 'exit 7'`, `sleep`).
    fn real_exec(&self) -> bool;
    /// A new runtime instance over the same state, as after an agent restart (`None`: not supported).
    fn reopen(&self) -> Option<Arc<dyn ContainerRuntime>>;
}

/// Runs every check against a subject.
pub async fn run_all(subject: &dyn Subject) {
    sandbox_lifecycle_is_idempotent(subject).await;
    exit_codes_and_events_are_reported(subject).await;
    stop_uses_sigterm_then_sigkill_after_grace(subject).await;
    exec_collects_output_and_kills_on_timeout(subject).await;
    logs_support_tail_and_timestamps(subject).await;
    stats_and_listing_work(subject).await;
    recover_reattaches_to_running_containers(subject).await;
    attach_shares_stdin_and_stdin_once_closes_it(subject).await;
    if subject.real_exec() {
        attach_reaches_the_terminal_of_a_tty_container(subject).await;
    }
}

/// Reads `from` until what was read contains `want` (10 s at most); returns everything read.
async fn read_until(from: &mut (dyn tokio::io::AsyncRead + Send + Unpin), seen: &mut String, want: &str) {
    use tokio::io::AsyncReadExt as _;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    while !seen.contains(want) {
        let n = tokio::time::timeout_at(deadline, from.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{want:?} never came; read {seen:?}"))
            .expect("read attach output");
        assert!(n > 0, "output ended before {want:?}; read {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

/// Attach: sessions share the container's stdin (it stays open across sessions), see its output
/// from when they attach and end when it exits; with `stdinOnce` the first session's detach
/// closes stdin (the container reads end-of-file); an exited container cannot be attached to.
pub async fn attach_shares_stdin_and_stdin_once_closes_it(s: &dyn Subject) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let rt = s.runtime();
    if !rt.capabilities().attach {
        return;
    }
    let sb = rt.run_sandbox(&s.sandbox("attach")).await.expect("run sandbox");
    let mut cfg = s.container("echo", &Scenario::Echo);
    cfg.stdin = true;
    let id = start(&rt, &sb, &cfg).await;
    let mut first = rt.attach(&id, None).await.expect("attach");
    assert!(!first.tty);
    first.stdin.as_mut().expect("a container with stdin can be written to").write_all(b"one\n").await.expect("write");
    let mut seen = String::new();
    read_until(&mut first.stdout, &mut seen, "one").await;
    drop(first);
    let mut second = rt.attach(&id, None).await.expect("attach again");
    second.stdin.as_mut().expect("stdin stays open without stdinOnce").write_all(b"two\n").await.expect("write");
    let mut seen = String::new();
    read_until(&mut second.stdout, &mut seen, "two").await;
    assert!(!seen.contains("one"), "a session sees output from when it attached: {seen:?}");
    rt.stop_container(&id, Duration::ZERO).await.expect("stop");
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), second.stdout.read_to_end(&mut rest))
        .await
        .expect("a session ends when its container exits")
        .expect("read");
    assert!(rt.attach(&id, None).await.is_err(), "an exited container cannot be attached to");

    let mut cfg = s.container("once", &Scenario::Echo);
    cfg.stdin = true;
    cfg.stdin_once = true;
    let id = start(&rt, &sb, &cfg).await;
    let mut session = rt.attach(&id, None).await.expect("attach");
    let mut stdin = session.stdin.take().expect("stdin");
    stdin.write_all(b"last\n").await.expect("write");
    let mut seen = String::new();
    read_until(&mut session.stdout, &mut seen, "last").await;
    stdin.shutdown().await.expect("detach");
    drop(stdin);
    let st = wait_state(&rt, &id, ContainerState::Exited, Duration::from_secs(10)).await;
    assert_eq!(st.exit_code, Some(0), "stdinOnce: the container read end-of-file after the session detached");

    let plain = start(&rt, &sb, &s.container("plain", &Scenario::Sleep)).await;
    let session = rt.attach(&plain, None).await.expect("attach without stdin");
    assert!(session.stdin.is_none(), "a container without stdin takes no input");
    rt.remove_sandbox(&sb).await.expect("remove sandbox");
}

/// Attach to a container with `tty`: its stdin and stdout are one terminal, started at the
/// session's size and resized by it.
pub async fn attach_reaches_the_terminal_of_a_tty_container(s: &dyn Subject) {
    use tokio::io::AsyncWriteExt as _;
    let rt = s.runtime();
    if !rt.capabilities().attach {
        return;
    }
    let sb = rt.run_sandbox(&s.sandbox("attach-tty")).await.expect("run sandbox");
    let mut cfg = s.container("tty", &Scenario::Echo);
    cfg.stdin = true;
    cfg.tty = true;
    let id = start(&rt, &sb, &cfg).await;
    wait_state(&rt, &id, ContainerState::Running, Duration::from_secs(10)).await;
    let mut session = rt.attach(&id, Some(TerminalSize { width: 100, height: 30 })).await.expect("attach");
    assert!(session.tty);
    let resize = session.resize.clone().expect("a terminal can be resized");
    let mut stdin = session.stdin.take().expect("stdin");
    let mut seen = String::new();
    // A resize reaches a container's terminal a moment later (runc relays it on SIGWINCH).
    for (size, want) in [(None, "30 100"), (Some(TerminalSize { width: 120, height: 40 }), "40 120")] {
        if let Some(size) = size {
            resize(size).expect("resize");
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !seen.contains(want) {
            assert!(tokio::time::Instant::now() < deadline, "the terminal never showed {want:?}: {seen:?}");
            stdin.write_all(b"size\n").await.expect("type");
            let mut buf = [0u8; 1024];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(300), tokio::io::AsyncReadExt::read(&mut session.stdout, &mut buf)).await
            {
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    }
    stdin.write_all(b"hello\n").await.expect("type");
    read_until(&mut session.stdout, &mut seen, "got:hello").await;
    // The terminal's output is the container's log (as stdout).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut log = String::new();
        let mut chunks = rt.logs(&id, &LogOptions::default()).await.expect("logs");
        while let Some(chunk) = chunks.next().await {
            log.push_str(&String::from_utf8_lossy(&chunk.expect("log chunk")));
        }
        if log.contains("got:hello") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the terminal's output is not in the log: {log:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rt.remove_sandbox(&sb).await.expect("remove sandbox");
}

async fn wait_state(rt: &Arc<dyn ContainerRuntime>, id: &ContainerId, state: ContainerState, limit: Duration) -> ContainerStatus {
    let deadline = Instant::now() + limit;
    loop {
        let st = rt.container_status(id).await.expect("container status");
        if st.state == state {
            return st;
        }
        assert!(Instant::now() < deadline, "container {id} did not reach {state:?} within {limit:?}: {st:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start(rt: &Arc<dyn ContainerRuntime>, sb: &SandboxId, cfg: &ContainerConfig) -> ContainerId {
    let id = rt.create_container(sb, cfg).await.expect("create container");
    assert_eq!(rt.container_status(&id).await.expect("status").state, ContainerState::Created);
    rt.start_container(&id).await.expect("start container");
    id
}

/// Sandboxes: ready with an IP, stop and remove may repeat, then they are gone.
pub async fn sandbox_lifecycle_is_idempotent(s: &dyn Subject) {
    let rt = s.runtime();
    let sb = rt.run_sandbox(&s.sandbox("lifecycle")).await.expect("run sandbox");
    let st = rt.sandbox_status(&sb).await.expect("sandbox status");
    assert_eq!(st.state, SandboxState::Ready);
    assert!(st.ip.is_some(), "a pod network sandbox has an IP");
    let sb2 = rt.run_sandbox(&s.sandbox("lifecycle-2")).await.expect("second sandbox");
    assert_ne!(rt.sandbox_status(&sb2).await.expect("status").ip, st.ip, "pods get distinct IPs");
    assert!(rt.list_sandboxes().await.expect("list").iter().any(|x| x.id == sb));
    let c = start(&rt, &sb, &s.container("main", &Scenario::Sleep)).await;
    rt.stop_sandbox(&sb).await.expect("stop sandbox");
    rt.stop_sandbox(&sb).await.expect("stop sandbox again");
    assert_eq!(rt.sandbox_status(&sb).await.expect("status").state, SandboxState::NotReady);
    assert_eq!(rt.container_status(&c).await.expect("status").state, ContainerState::Exited, "stopping a sandbox stops its containers");
    rt.remove_sandbox(&sb).await.expect("remove sandbox");
    rt.remove_sandbox(&sb).await.expect("remove sandbox again");
    assert!(rt.sandbox_status(&sb).await.expect_err("gone").is_not_found());
    assert!(rt.container_status(&c).await.expect_err("gone").is_not_found(), "removing a sandbox removes its containers");
    rt.remove_sandbox(&sb2).await.expect("remove second");
}

/// Exit codes, reasons and the created/started/exited events.
pub async fn exit_codes_and_events_are_reported(s: &dyn Subject) {
    let rt = s.runtime();
    let mut events = rt.events();
    let sb = rt.run_sandbox(&s.sandbox("exits")).await.expect("run sandbox");
    let failing = start(&rt, &sb, &s.container("fails", &Scenario::Exit(3))).await;
    let ok = start(&rt, &sb, &s.container("succeeds", &Scenario::Exit(0))).await;
    let st = wait_state(&rt, &failing, ContainerState::Exited, Duration::from_secs(10)).await;
    assert_eq!(st.exit_code, Some(3));
    assert_eq!(st.reason.as_deref(), Some("Error"));
    assert!(st.started_at.is_some() && st.finished_at.is_some());
    let st = wait_state(&rt, &ok, ContainerState::Exited, Duration::from_secs(10)).await;
    assert_eq!(st.exit_code, Some(0));
    assert_eq!(st.reason.as_deref(), Some("Completed"));
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.iter().filter(|(k, id)| *k == EventKind::Exited && (*id == failing || *id == ok)).count() < 2 {
        let ev = tokio::time::timeout_at(deadline, events.next()).await.expect("events arrive in time").expect("event stream open");
        seen.push((ev.kind, ev.container_id));
    }
    for id in [&failing, &ok] {
        let kinds: Vec<EventKind> = seen.iter().filter(|(_, c)| c == id).map(|(k, _)| *k).collect();
        assert_eq!(kinds, vec![EventKind::Created, EventKind::Started, EventKind::Exited], "events of {id}");
        // Following the log of a container that exited (nobody waiting on it then) ends.
        read_log(&rt, id, LogOptions { follow: true, ..LogOptions::default() }).await;
    }
    rt.remove_container(&failing).await.expect("remove");
    rt.remove_container(&failing).await.expect("remove again");
    assert!(rt.container_status(&failing).await.expect_err("gone").is_not_found());
    rt.remove_sandbox(&sb).await.expect("remove sandbox");
}

/// `stop_container` sends SIGTERM and waits up to the grace period before SIGKILL.
pub async fn stop_uses_sigterm_then_sigkill_after_grace(s: &dyn Subject) {
    let rt = s.runtime();
    let sb = rt.run_sandbox(&s.sandbox("stops")).await.expect("run sandbox");
    let polite = start(&rt, &sb, &s.container("polite", &Scenario::Sleep)).await;
    let stubborn = start(&rt, &sb, &s.container("stubborn", &Scenario::IgnoreTerm)).await;
    wait_state(&rt, &stubborn, ContainerState::Running, Duration::from_secs(10)).await;
    // Give the shell time to install its trap.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    rt.stop_container(&polite, Duration::from_secs(20)).await.expect("stop");
    assert!(t.elapsed() < Duration::from_secs(5), "a process that obeys SIGTERM stops before its grace ends");
    let st = rt.container_status(&polite).await.expect("status");
    assert_eq!(st.state, ContainerState::Exited);
    assert_eq!(st.exit_code, Some(143), "killed by SIGTERM: 128 + 15");
    let t = Instant::now();
    rt.stop_container(&stubborn, Duration::from_millis(700)).await.expect("stop");
    assert!(t.elapsed() >= Duration::from_millis(650), "the grace period is honoured");
    let st = rt.container_status(&stubborn).await.expect("status");
    assert_eq!(st.exit_code, Some(137), "killed by SIGKILL after the grace: 128 + 9");
    rt.stop_container(&stubborn, Duration::from_secs(1)).await.expect("stopping a stopped container is fine");
    rt.remove_sandbox(&sb).await.expect("remove sandbox");
}

/// `exec_sync` returns output and exit codes and kills commands that overrun their timeout.
pub async fn exec_collects_output_and_kills_on_timeout(s: &dyn Subject) {
    let rt = s.runtime();
    let sb = rt.run_sandbox(&s.sandbox("exec")).await.expect("run sandbox");
    let c = start(&rt, &sb, &s.container("main", &Scenario::Sleep)).await;
    wait_state(&rt, &c, ContainerState::Running, Duration::from_secs(10)).await;
    let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let r = rt.exec_sync(&c, &argv(&["echo", "hello"]), Duration::from_secs(10)).await.expect("exec");
    assert_eq!(r.exit_code, 0);
    assert_eq!(r.stdout, b"hello\n");
    if s.real_exec() {
        let r = rt.exec_sync(&c, &argv(&["sh", "-c", "echo oops >&2; exit 7"]), Duration::from_secs(10)).await.expect("exec");
        assert_eq!(r.exit_code, 7);
        assert_eq!(r.stderr, b"oops\n");
        let r = rt.exec_sync(&c, &argv(&["sh", "-c", "echo $POD_IP $HOSTNAME"]), Duration::from_secs(10)).await.expect("exec");
        assert_eq!(r.exit_code, 0);
        let t = Instant::now();
        let r = rt.exec_sync(&c, &argv(&["sleep", "30"]), Duration::from_millis(500)).await.expect("exec");
        assert!(r.timed_out, "the command overran its timeout");
        assert!(t.elapsed() < Duration::from_secs(10), "and was killed");
    }
    rt.stop_container(&c, Duration::ZERO).await.expect("stop");
    assert!(rt.exec_sync(&c, &argv(&["echo"]), Duration::from_secs(1)).await.is_err(), "no exec in a stopped container");
    rt.remove_sandbox(&sb).await.expect("remove sandbox");
}

async fn read_log(rt: &Arc<dyn ContainerRuntime>, id: &ContainerId, options: LogOptions) -> String {
    let mut stream = rt.logs(id, &options).await.expect("logs");
    let mut out = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.expect("log chunk in time") {
        out.extend_from_slice(&chunk.expect("chunk"));
    }
    String::from_utf8(out).expect("utf8 log")
}

/// Logs keep both streams in order, with tail and timestamps.
pub async fn logs_support_tail_and_timestamps(s: &dyn Subject) {
    let rt = s.runtime();
    let sb = rt.run_sandbox(&s.sandbox("logs")).await.expect("run sandbox");
    let c = start(&rt, &sb, &s.container("main", &Scenario::Print)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let all = loop {
        let all = read_log(&rt, &c, LogOptions::default()).await;
        if all.lines().count() >= 3 || Instant::now() > deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let lines: Vec<&str> = all.lines().collect();
    assert!(lines.contains(&"out-1") && lines.contains(&"err-1") && lines.contains(&"out-2"), "log: {all:?}");
    assert_eq!(lines.last(), Some(&"out-2"));
    let tail = read_log(&rt, &c, LogOptions { tail_lines: Some(1), ..LogOptions::default() }).await;
    assert_eq!(tail, "out-2\n");
    let stamped = read_log(&rt, &c, LogOptions { tail_lines: Some(1), timestamps: true, ..LogOptions::default() }).await;
    let (ts, rest) = stamped.split_once(' ').expect("timestamped line");
    assert!(ts.parse::<jiff::Timestamp>().is_ok(), "timestamp {ts:?}");
    assert_eq!(rest, "out-2\n");
    rt.remove_sandbox(&sb).await.expect("remove sandbox");
}

/// Stats of a running container and list filters.
pub async fn stats_and_listing_work(s: &dyn Subject) {
    let rt = s.runtime();
    let sb = rt.run_sandbox(&s.sandbox("stats")).await.expect("run sandbox");
    let c = start(&rt, &sb, &s.container("main", &Scenario::Sleep)).await;
    let done = start(&rt, &sb, &s.container("done", &Scenario::Exit(0))).await;
    wait_state(&rt, &done, ContainerState::Exited, Duration::from_secs(10)).await;
    wait_state(&rt, &c, ContainerState::Running, Duration::from_secs(10)).await;
    let stats = rt.stats(&c).await.expect("stats");
    assert!(stats.memory_working_set_bytes > 0, "a running container uses memory: {stats:?}");
    let in_sb = rt.list_containers(&ContainerFilter { sandbox_id: Some(sb.clone()), state: None }).await.expect("list");
    assert_eq!(in_sb.len(), 2);
    let running =
        rt.list_containers(&ContainerFilter { sandbox_id: Some(sb.clone()), state: Some(ContainerState::Running) }).await.expect("list");
    assert_eq!(running.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), vec![c.clone()]);
    assert!(rt.capabilities().exec);
    assert!(!rt.version().name.is_empty());
    rt.remove_sandbox(&sb).await.expect("remove sandbox");
}

/// A new instance over the same state finds running containers and can still stop them.
pub async fn recover_reattaches_to_running_containers(s: &dyn Subject) {
    let rt = s.runtime();
    let sb = rt.run_sandbox(&s.sandbox("recover")).await.expect("run sandbox");
    let c = start(&rt, &sb, &s.container("main", &Scenario::Sleep)).await;
    let exited = start(&rt, &sb, &s.container("exited", &Scenario::Exit(4))).await;
    wait_state(&rt, &exited, ContainerState::Exited, Duration::from_secs(10)).await;
    wait_state(&rt, &c, ContainerState::Running, Duration::from_secs(10)).await;
    let Some(again) = s.reopen() else {
        rt.remove_sandbox(&sb).await.expect("remove sandbox");
        return;
    };
    let found = again.recover().await.expect("recover");
    let main = found.iter().find(|st| st.id == c).expect("the running container is found");
    assert_eq!(main.state, ContainerState::Running);
    let old = found.iter().find(|st| st.id == exited).expect("the exited container is found");
    assert_eq!(old.exit_code, Some(4));
    assert_eq!(again.sandbox_status(&sb).await.expect("sandbox recovered").state, SandboxState::Ready);
    let mut events = again.events();
    again.stop_container(&c, Duration::from_secs(5)).await.expect("stop recovered");
    assert_eq!(again.container_status(&c).await.expect("status").state, ContainerState::Exited);
    let ev = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.next().await {
                Some(ev) if ev.container_id == c && ev.kind == EventKind::Exited => break ev,
                Some(_) => continue,
                None => panic!("event stream ended"),
            }
        }
    })
    .await
    .expect("exit event of a recovered container");
    assert_eq!(ev.sandbox_id, sb);
    again.remove_sandbox(&sb).await.expect("remove sandbox");
}
