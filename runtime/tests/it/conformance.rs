//! The shared `ContainerRuntime` conformance suite, run against each backend.

use bosun_runtime::conformance::{self, Scenario, Subject};
use bosun_runtime::cri::{ContainerConfig, ImageRef, SandboxConfig};
use bosun_runtime::{ContainerRuntime, FakeRuntime, FakeScript, ProcessRuntime};
use std::collections::BTreeMap;
use std::sync::Arc;

fn sandbox_config(name: &str, logs: &std::path::Path) -> SandboxConfig {
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

fn shell(name: &str, scenario: &Scenario, image: ImageRef) -> ContainerConfig {
    let script = match scenario {
        Scenario::Sleep => "exec sleep 1000".to_string(),
        Scenario::Exit(code) => format!("exit {code}"),
        Scenario::Print => "echo out-1; sleep 0.05; echo err-1 >&2; sleep 0.05; echo out-2; exec sleep 1000".to_string(),
        Scenario::IgnoreTerm => "trap '' TERM; while true; do sleep 0.1; done".to_string(),
        Scenario::Echo => conformance::ECHO_SCRIPT.to_string(),
    };
    ContainerConfig { name: name.into(), image, command: vec!["/bin/sh".into(), "-c".into(), script], ..ContainerConfig::default() }
}

struct Process {
    dir: tempfile::TempDir,
    rt: Arc<dyn ContainerRuntime>,
}

impl Subject for Process {
    fn runtime(&self) -> Arc<dyn ContainerRuntime> {
        self.rt.clone()
    }
    fn container(&self, name: &str, scenario: &Scenario) -> ContainerConfig {
        shell(name, scenario, ImageRef { name: "host".into(), ..ImageRef::default() })
    }
    fn sandbox(&self, name: &str) -> SandboxConfig {
        sandbox_config(name, &self.dir.path().join("pods"))
    }
    fn real_exec(&self) -> bool {
        true
    }
    fn reopen(&self) -> Option<Arc<dyn ContainerRuntime>> {
        Some(Arc::new(ProcessRuntime::new(self.dir.path().join("state")).expect("reopen")))
    }
}

#[tokio::test]
async fn process_runtime_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Arc::new(ProcessRuntime::new(dir.path().join("state")).expect("runtime"));
    conformance::run_all(&Process { dir, rt }).await;
}

struct Fake {
    dir: tempfile::TempDir,
    rt: Arc<dyn ContainerRuntime>,
}

impl Subject for Fake {
    fn runtime(&self) -> Arc<dyn ContainerRuntime> {
        self.rt.clone()
    }
    fn container(&self, name: &str, scenario: &Scenario) -> ContainerConfig {
        let script = match scenario {
            Scenario::Sleep => FakeScript::default(),
            Scenario::Exit(code) => FakeScript { exit_after_ms: Some(10), exit_code: *code, ..FakeScript::default() },
            Scenario::Print => FakeScript { log: vec!["out-1".into(), "err-1".into(), "out-2".into()], ..FakeScript::default() },
            Scenario::IgnoreTerm => FakeScript { ignore_sigterm: true, ..FakeScript::default() },
            Scenario::Echo => FakeScript::default(),
        };
        let annotations =
            BTreeMap::from([(bosun_runtime::fake::SCRIPT_ANNOTATION.to_string(), serde_json::to_string(&script).expect("script json"))]);
        ContainerConfig { name: name.into(), annotations, ..ContainerConfig::default() }
    }
    fn sandbox(&self, name: &str) -> SandboxConfig {
        sandbox_config(name, self.dir.path())
    }
    fn real_exec(&self) -> bool {
        false
    }
    fn reopen(&self) -> Option<Arc<dyn ContainerRuntime>> {
        None
    }
}

#[tokio::test]
async fn fake_runtime_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    conformance::run_all(&Fake { dir, rt: Arc::new(FakeRuntime::new()) }).await;
}

/// A process-runtime container with a volume (a private mount namespace through `unshare`) whose
/// command execs another program at once is Running as soon as its mount is made, not after a
/// timeout; a graceful stop reaches the program itself (not only the wrapper), and its exit is
/// observed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_container_with_a_volume_starts_at_once_and_stops_for_real() {
    use bosun_runtime::ContainerState;
    use bosun_runtime::cri::Mount;
    use bosun_runtime::sys::MountSupport;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = ProcessRuntime::new(dir.path().join("state")).expect("runtime");
    if rt.mount_support() == MountSupport::Unavailable {
        assert!(!crate::support::require_components(), "mount namespaces are required (root or user namespaces)");
        eprintln!("SKIPPED: this machine cannot make mount namespaces");
        return;
    }
    let volume = dir.path().join("volume");
    std::fs::create_dir_all(&volume).expect("volume dir");
    // The process runtime shares the host's root: the mount point is made there, the mount is not.
    let target = dir.path().join("mnt").to_string_lossy().into_owned();
    let sb = rt.run_sandbox(&sandbox_config("vol", &dir.path().join("logs"))).await.expect("sandbox");
    let mut config = ContainerConfig {
        name: "db".into(),
        command: vec!["sh".into(), "-c".into(), format!("echo started >> {target}/boots && exec sleep 3600")],
        ..ContainerConfig::default()
    };
    config.mounts = vec![Mount { host_path: volume.clone(), container_path: target.clone(), read_only: false }];
    let id = rt.create_container(&sb, &config).await.expect("create");
    let started = Instant::now();
    rt.start_container(&id).await.expect("start");
    assert!(started.elapsed() < Duration::from_secs(2), "start waited {:?} for a mount made at once", started.elapsed());
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(volume.join("boots")).unwrap_or_default() != "started\n" {
        assert!(Instant::now() < deadline, "the container wrote to its volume");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!std::path::Path::new(&target).join("boots").exists(), "the mount stays in the container's namespace");
    // The program (sleep, exec'd by the shell the wrapper exec'd) is what runs under the container's pid.
    let pid = (|| {
        let record = std::fs::read_to_string(dir.path().join(format!("state/containers/{}.json", id.0))).ok()?;
        serde_json::from_str::<serde_json::Value>(&record).ok()?.get("pid")?.as_i64()
    })()
    .expect("pid in the record");
    // The shell writes `boots` just before it execs sleep: give it that moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
        if cmdline.starts_with(b"sleep\0") {
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", String::from_utf8_lossy(&cmdline));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    crate::support::check_exec_tty(&rt, &id, true).await;
    let stopping = Instant::now();
    rt.stop_container(&id, Duration::from_secs(10)).await.expect("stop");
    assert!(stopping.elapsed() < Duration::from_secs(3), "SIGTERM reached sleep: stopped in {:?}", stopping.elapsed());
    let st = rt.container_status(&id).await.expect("status");
    assert_eq!(st.state, ContainerState::Exited);
    assert_eq!(st.exit_code, Some(143), "terminated by SIGTERM: {st:?}");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "the process is gone");
    rt.remove_sandbox(&sb).await.expect("remove");
}

/// The log of an exited container, as text.
pub async fn exited_log(rt: &dyn ContainerRuntime, id: &bosun_runtime::ContainerId) -> String {
    use futures::StreamExt as _;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while rt.container_status(id).await.expect("status").state != bosun_runtime::ContainerState::Exited {
        assert!(std::time::Instant::now() < deadline, "the container did not end");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut log = String::new();
    let mut chunks = rt.logs(id, &bosun_runtime::LogOptions::default()).await.expect("logs");
    while let Some(chunk) = chunks.next().await {
        log.push_str(&String::from_utf8_lossy(&chunk.expect("log chunk")));
    }
    log
}

/// `runAsUser`, `runAsGroup` and the supplemental groups (with `fsGroup`) reach the process
/// runtime's containers where privileges allow (root).
#[tokio::test]
async fn a_process_container_runs_as_its_user_group_and_supplemental_groups() {
    if !rustix::process::geteuid().is_root() {
        assert!(!crate::support::require_components(), "CI runs as root");
        eprintln!("SKIPPED: changing a container's user needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = ProcessRuntime::new(dir.path().join("state")).expect("runtime");
    let sb = rt.run_sandbox(&sandbox_config("ids", &dir.path().join("logs"))).await.expect("sandbox");
    let config = ContainerConfig {
        name: "ids".into(),
        command: vec!["sh".into(), "-c".into(), "echo ids $(id -u) $(id -g) $(id -G)".into()],
        run_as_user: Some(1000),
        run_as_group: Some(2000),
        supplemental_groups: vec![3000, 4000],
        ..ContainerConfig::default()
    };
    let id = rt.create_container(&sb, &config).await.expect("create");
    rt.start_container(&id).await.expect("start");
    let log = exited_log(&rt, &id).await;
    assert!(log.contains("ids 1000 2000 2000 3000 4000"), "{log}");
    rt.remove_sandbox(&sb).await.expect("remove");
}
