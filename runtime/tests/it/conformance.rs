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
