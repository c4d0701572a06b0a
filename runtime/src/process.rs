//! [`ProcessRuntime`]: each container is a host process in its own process group, with its env,
//! working directory, log file and a loopback pod IP (127.x.y.z); needs no privileges unless a pod
//! mounts volumes (then a private mount namespace per container, as root or in a user namespace).

use crate::attach::AttachPoint;
use crate::cri::*;
use crate::error::{Result, RuntimeError};
use crate::logs;
use crate::sys::{self, MountSupport};
use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::process::Command;
use tokio::sync::{broadcast, watch};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Builds a [`ProcessRuntime`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ProcessRuntimeBuilder {
    root: PathBuf,
    first_ip: Option<Ipv4Addr>,
    mounts: Option<MountSupport>,
}

impl ProcessRuntimeBuilder {
    /// The first pod IP handed out (default: `127.<n>.0.1` with `n` derived from the state
    /// directory, so that several runtimes on one machine rarely overlap).
    pub fn first_ip(mut self, ip: Ipv4Addr) -> Self {
        self.first_ip = Some(ip);
        self
    }

    /// Overrides mount-namespace detection (default: probe with `unshare`).
    pub fn mount_support(mut self, support: MountSupport) -> Self {
        self.mounts = Some(support);
        self
    }

    /// Opens the runtime over its state directory (created if missing). Call
    /// [`ContainerRuntime::recover`] to pick up what a previous instance left there.
    pub fn build(self) -> Result<ProcessRuntime> {
        for sub in ["sandboxes", "containers", "logs"] {
            let dir = self.root.join(sub);
            std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::io(format!("create {}", dir.display()), e))?;
        }
        let first_ip = self.first_ip.unwrap_or_else(|| {
            let hash = self.root.to_string_lossy().bytes().fold(17u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
            Ipv4Addr::new(127, 20 + u8::try_from(hash % 200).unwrap_or(0), 0, 1)
        });
        let (events, _) = broadcast::channel(4096);
        Ok(ProcessRuntime {
            inner: Arc::new(Inner {
                root: self.root,
                first_ip: u32::from(first_ip),
                mounts: self.mounts.unwrap_or_else(MountSupport::detect),
                state: Mutex::new(State::default()),
                events,
            }),
        })
    }
}

/// Runs containers as plain host processes. Cheap to clone (a handle).
#[derive(Debug, Clone)]
pub struct ProcessRuntime {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    first_ip: u32,
    mounts: MountSupport,
    state: Mutex<State>,
    events: broadcast::Sender<RuntimeEvent>,
}

#[derive(Debug, Default)]
struct State {
    sandboxes: HashMap<SandboxId, SandboxStatus>,
    containers: HashMap<ContainerId, Container>,
    used_ips: BTreeSet<u32>,
    next_ip: u32,
    seq: u64,
}

#[derive(Debug)]
struct Container {
    record: ContainerRecord,
    exited: watch::Sender<bool>,
    /// The main process's stdio for attach sessions, while it runs (not after a recovery).
    attach: Option<Arc<AttachPoint>>,
}

/// What is persisted per container so that a new agent can re-attach.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ContainerRecord {
    status: ContainerStatus,
    config: ContainerConfig,
    pid: Option<i32>,
    start_ticks: Option<u64>,
}

impl ProcessRuntime {
    /// A builder over a state directory.
    pub fn builder(root: impl Into<PathBuf>) -> ProcessRuntimeBuilder {
        ProcessRuntimeBuilder { root: root.into(), first_ip: None, mounts: None }
    }

    /// Opens a runtime with defaults over a state directory.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        Self::builder(root).build()
    }

    /// How this runtime makes mounts.
    pub fn mount_support(&self) -> MountSupport {
        self.inner.mounts
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, kind: EventKind, sandbox_id: &SandboxId, container_id: &ContainerId) {
        let _ = self.inner.events.send(RuntimeEvent { kind, sandbox_id: sandbox_id.clone(), container_id: container_id.clone() });
    }

    fn sandbox_file(&self, id: &SandboxId) -> PathBuf {
        self.inner.root.join("sandboxes").join(format!("{id}.json"))
    }

    fn container_file(&self, id: &ContainerId) -> PathBuf {
        self.inner.root.join("containers").join(format!("{id}.json"))
    }

    fn persist<T: Serialize>(path: &Path, value: &T) {
        let tmp = path.with_extension("tmp");
        let written = serde_json::to_vec(value)
            .map_err(std::io::Error::other)
            .and_then(|data| std::fs::write(&tmp, data))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(error) = written {
            tracing::warn!(%error, path = %path.display(), "cannot persist runtime state");
        }
    }

    fn allocate_ip(state: &mut State, first: u32) -> Ipv4Addr {
        loop {
            let candidate = first.wrapping_add(state.next_ip);
            state.next_ip = state.next_ip.wrapping_add(1);
            let last = candidate & 0xff;
            if last == 0 || last == 255 || state.used_ips.contains(&candidate) {
                continue;
            }
            state.used_ips.insert(candidate);
            return Ipv4Addr::from(candidate);
        }
    }

    /// Watches a spawned child (or, after recovery, a re-attached pid) until it exits.
    fn track_exit(
        &self,
        id: ContainerId,
        pgid: i32,
        exit: impl std::future::Future<Output = (i32, Option<i32>, Option<String>)> + Send + 'static,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            let (code, signal, reason) = exit.await;
            // Whatever the main process left in its group goes with it.
            let _ = sys::signal_group(pgid, rustix::process::Signal::KILL.as_raw());
            let sandbox = {
                let mut state = this.state();
                let Some(c) = state.containers.get_mut(&id) else { return };
                let st = &mut c.record.status;
                st.state = ContainerState::Exited;
                st.finished_at = Some(Timestamp::now());
                st.exit_code = Some(code);
                st.signal = signal;
                st.reason = Some(reason.unwrap_or_else(|| ContainerStatus::exit_reason(code, false).to_string()));
                if let Some(point) = c.attach.take() {
                    point.close();
                }
                Self::persist(&this.container_file(&id), &c.record);
                let _ = c.exited.send(true);
                c.record.status.sandbox_id.clone()
            };
            this.emit(EventKind::Exited, &sandbox, &id);
        });
    }

    /// Wraps the argv in `unshare` + bind mounts when the container has volumes.
    fn command_for(&self, config: &ContainerConfig, argv: &[String]) -> Result<Command> {
        if config.mounts.is_empty() {
            let mut cmd = Command::new(&argv[0]);
            cmd.args(&argv[1..]);
            let dir = config.working_dir.as_deref().unwrap_or("/");
            cmd.current_dir(dir);
            return Ok(cmd);
        }
        let userns = match self.inner.mounts {
            MountSupport::Root => false,
            MountSupport::UserNamespace => true,
            MountSupport::Unavailable => {
                let m = &config.mounts[0];
                return Err(RuntimeError::Mount {
                    mount_path: m.container_path.clone(),
                    reason: "the process runtime needs root or unprivileged user namespaces to make a private mount namespace".into(),
                });
            }
        };
        let mut script = String::from("set -e\n");
        for m in &config.mounts {
            let target = sys::shell_quote(&m.container_path);
            let source = sys::shell_quote(&m.host_path.to_string_lossy());
            if sys::is_dir(&m.host_path) {
                script.push_str(&format!("mkdir -p {target}\n"));
            } else {
                script.push_str(&format!("mkdir -p \"$(dirname {target})\"; [ -e {target} ] || : > {target}\n"));
            }
            script.push_str(&format!("mount --bind {source} {target}\n"));
            if m.read_only {
                script.push_str(&format!("mount -o remount,bind,ro {target}\n"));
            }
        }
        let dir = config.working_dir.as_deref().unwrap_or("/");
        script.push_str(&format!("cd {}\nexec \"$@\"\n", sys::shell_quote(dir)));
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private"]);
        if userns {
            cmd.arg("--map-root-user");
        }
        cmd.arg("--").arg("/bin/sh").arg("-c").arg(script).arg("sh").args(argv);
        Ok(cmd)
    }

    fn env_for(&self, config: &ContainerConfig, sandbox: &SandboxStatus) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> =
            vec![("PATH".into(), DEFAULT_PATH.into()), ("HOSTNAME".into(), sandbox.config.hostname.clone())];
        if let Some(ip) = sandbox.ip {
            env.push(("POD_IP".into(), ip.to_string()));
        }
        env.extend(config.image.env.iter().cloned());
        env.extend(config.env.iter().cloned());
        env
    }

    fn lookup(&self, id: &ContainerId) -> Result<ContainerRecord> {
        self.state().containers.get(id).map(|c| c.record.clone()).ok_or_else(|| RuntimeError::not_found("container", &id.0))
    }

    async fn wait_exited(&self, id: &ContainerId, limit: Duration) -> bool {
        let rx = self.state().containers.get(id).map(|c| c.exited.subscribe());
        let Some(mut rx) = rx else { return true };
        tokio::time::timeout(limit, rx.wait_for(|e| *e)).await.is_ok()
    }
}

#[async_trait]
impl ContainerRuntime for ProcessRuntime {
    fn version(&self) -> RuntimeVersion {
        RuntimeVersion { name: "process".into(), version: env!("CARGO_PKG_VERSION").into() }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            exec: true,
            signals: true,
            mounts: self.inner.mounts != MountSupport::Unavailable,
            network_namespace: false,
            resource_limits: false,
            images: false,
            attach: true,
        }
    }

    async fn run_sandbox(&self, config: &SandboxConfig) -> Result<SandboxId> {
        let status = {
            let mut state = self.state();
            state.seq += 1;
            let id = SandboxId(format!("sb-{}-{}-{}", short(&config.uid), config.attempt, state.seq));
            let ip = (!config.host_network).then(|| IpAddr::V4(Self::allocate_ip(&mut state, self.inner.first_ip)));
            let status =
                SandboxStatus { id: id.clone(), config: config.clone(), state: SandboxState::Ready, ip, created_at: Timestamp::now() };
            state.sandboxes.insert(id, status.clone());
            status
        };
        Self::persist(&self.sandbox_file(&status.id), &status);
        Ok(status.id)
    }

    async fn stop_sandbox(&self, id: &SandboxId) -> Result<()> {
        let running: Vec<ContainerId> = self
            .state()
            .containers
            .iter()
            .filter(|(_, c)| &c.record.status.sandbox_id == id && c.record.status.state == ContainerState::Running)
            .map(|(k, _)| k.clone())
            .collect();
        for c in running {
            self.stop_container(&c, Duration::ZERO).await?;
        }
        let mut state = self.state();
        if let Some(sb) = state.sandboxes.get_mut(id) {
            sb.state = SandboxState::NotReady;
            let snapshot = sb.clone();
            drop(state);
            Self::persist(&self.sandbox_file(id), &snapshot);
        }
        Ok(())
    }

    async fn remove_sandbox(&self, id: &SandboxId) -> Result<()> {
        self.stop_sandbox(id).await?;
        let ids: Vec<ContainerId> =
            self.state().containers.iter().filter(|(_, c)| &c.record.status.sandbox_id == id).map(|(k, _)| k.clone()).collect();
        for c in ids {
            self.remove_container(&c).await?;
        }
        let removed = self.state().sandboxes.remove(id);
        if let Some(sb) = removed {
            if let Some(IpAddr::V4(ip)) = sb.ip {
                self.state().used_ips.remove(&u32::from(ip));
            }
            let _ = std::fs::remove_file(self.sandbox_file(id));
        }
        Ok(())
    }

    async fn sandbox_status(&self, id: &SandboxId) -> Result<SandboxStatus> {
        self.state().sandboxes.get(id).cloned().ok_or_else(|| RuntimeError::not_found("sandbox", &id.0))
    }

    async fn list_sandboxes(&self) -> Result<Vec<SandboxStatus>> {
        Ok(self.state().sandboxes.values().cloned().collect())
    }

    async fn create_container(&self, sandbox: &SandboxId, config: &ContainerConfig) -> Result<ContainerId> {
        let (id, record) = {
            let mut state = self.state();
            let sb = state.sandboxes.get(sandbox).ok_or_else(|| RuntimeError::not_found("sandbox", &sandbox.0))?;
            if sb.state != SandboxState::Ready {
                return Err(RuntimeError::Invalid(format!("sandbox {sandbox} is not ready")));
            }
            if let (Some(m), MountSupport::Unavailable) = (config.mounts.first(), self.inner.mounts) {
                return Err(RuntimeError::Mount {
                    mount_path: m.container_path.clone(),
                    reason: "the process runtime needs root or unprivileged user namespaces to make a private mount namespace".into(),
                });
            }
            let log_dir = if sb.config.log_directory.as_os_str().is_empty() {
                self.inner.root.join("logs").join(&sandbox.0)
            } else {
                sb.config.log_directory.clone()
            };
            state.seq += 1;
            let id = ContainerId(format!("c-{}-{}-{}", config.name, config.attempt, state.seq));
            let log_path = log_dir.join(&config.name).join(format!("{}.log", config.attempt));
            let status = ContainerStatus {
                id: id.clone(),
                sandbox_id: sandbox.clone(),
                name: config.name.clone(),
                attempt: config.attempt,
                image: config.image.name.clone(),
                state: ContainerState::Created,
                created_at: Timestamp::now(),
                started_at: None,
                finished_at: None,
                exit_code: None,
                signal: None,
                reason: None,
                message: None,
                log_path: Some(log_path),
                labels: config.labels.clone(),
            };
            let record = ContainerRecord { status, config: config.clone(), pid: None, start_ticks: None };
            let (exited, _) = watch::channel(false);
            state.containers.insert(id.clone(), Container { record: record.clone(), exited, attach: None });
            (id, record)
        };
        if let Some(dir) = record.status.log_path.as_deref().and_then(Path::parent) {
            std::fs::create_dir_all(dir).map_err(|e| RuntimeError::io(format!("create {}", dir.display()), e))?;
        }
        Self::persist(&self.container_file(&id), &record);
        self.emit(EventKind::Created, sandbox, &id);
        Ok(id)
    }

    async fn start_container(&self, id: &ContainerId) -> Result<()> {
        let record = self.lookup(id)?;
        if record.status.state != ContainerState::Created {
            return Err(RuntimeError::Invalid(format!("container {id} is not in the created state")));
        }
        let sandbox = self.sandbox_status(&record.status.sandbox_id).await?;
        let mut argv = record.config.argv();
        if argv.is_empty() {
            argv.push(record.config.image.name.clone());
        }
        let argv = [identity_prefix(&record.config), argv].concat();
        let mut cmd = self.command_for(&record.config, &argv)?;
        let config = &record.config;
        // With `tty` the container's standard streams are a terminal of its own: `setsid --ctty`
        // makes it the controlling terminal of a new session that the container leads (so its
        // pid still names its process group).
        let pty = if config.tty {
            let (master, slave) = sys::open_pty(None)?;
            cmd = sys::on_terminal(&cmd, &slave)?;
            Some(master)
        } else {
            let stdin = if config.stdin { std::process::Stdio::piped() } else { std::process::Stdio::null() };
            cmd.stdin(stdin).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).process_group(0);
            None
        };
        cmd.env_clear().envs(self.env_for(&record.config, &sandbox));
        if config.tty && !config.env.iter().chain(&config.image.env).any(|(k, _)| k == "TERM") {
            cmd.env("TERM", "xterm");
        }
        let log_path = record.status.log_path.clone().unwrap_or_default();
        let spawned = cmd.spawn();
        // Only the container may hold the terminal's slave side: its reader ends when the container does.
        drop(cmd);
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                // Like a container whose entrypoint is missing: it exits at once with 128.
                let msg = format!("cannot start {:?}: {e}", argv[0]);
                let _ = logs::append_record(&log_path, "stderr", &msg);
                let sandbox_id = {
                    let mut state = self.state();
                    let c = state.containers.get_mut(id).ok_or_else(|| RuntimeError::not_found("container", &id.0))?;
                    let now = Timestamp::now();
                    let st = &mut c.record.status;
                    st.state = ContainerState::Exited;
                    st.started_at = Some(now);
                    st.finished_at = Some(now);
                    st.exit_code = Some(128);
                    st.reason = Some("StartError".into());
                    st.message = Some(msg.clone());
                    Self::persist(&self.container_file(id), &c.record);
                    let _ = c.exited.send(true);
                    c.record.status.sandbox_id.clone()
                };
                self.emit(EventKind::Exited, &sandbox_id, id);
                return Err(RuntimeError::Invalid(msg));
            }
        };
        let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        if !record.config.mounts.is_empty() {
            // Running means mounted: wait until the container's mount namespace shows its volumes
            // (or the wrapper has exec'd the container's own argv, or it ended). The argv alone is
            // not enough: a command that execs another at once never shows it for long.
            let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while tokio::time::Instant::now() < deadline && sys::alive(pid) {
                if sys::mounts_visible(pid, &record.config.mounts) || std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want)
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let (point, pumps) = match pty {
            Some(master) => {
                let (reader, writer) = sys::pty_streams(master)?;
                let fd = writer.fd();
                let resize: Resize = Arc::new(move |size| sys::set_terminal_size(fd.get_ref(), size));
                let stdin = config.stdin.then(|| -> std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>> { Box::pin(writer) });
                let point = AttachPoint::new(stdin, config.stdin_once, true, Some(resize));
                let out = point.tee(reader, false);
                (point, (Some(tokio::spawn(logs::pump(out, "stdout", log_path.clone()))), None))
            }
            None => {
                let stdin = child.stdin.take().map(|w| -> std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>> { Box::pin(w) });
                let point = AttachPoint::new(stdin, config.stdin_once, false, None);
                let stdout = child.stdout.take().map(|s| point.tee(s, false));
                let stderr = child.stderr.take().map(|s| point.tee(s, true));
                let (a, b) = (log_path.clone(), log_path.clone());
                let h1 = stdout.map(|s| tokio::spawn(logs::pump(s, "stdout", a)));
                let h2 = stderr.map(|s| tokio::spawn(logs::pump(s, "stderr", b)));
                (point, (h1, h2))
            }
        };
        {
            let mut state = self.state();
            if let Some(c) = state.containers.get_mut(id) {
                c.attach = Some(point);
                c.record.pid = Some(pid);
                c.record.start_ticks = sys::start_ticks(pid);
                c.record.status.state = ContainerState::Running;
                c.record.status.started_at = Some(Timestamp::now());
                Self::persist(&self.container_file(id), &c.record);
            }
        }
        self.emit(EventKind::Started, &record.status.sandbox_id, id);
        self.track_exit(id.clone(), pid, async move {
            let status = child.wait().await;
            // The log is complete only once both pipes are drained.
            if let Some(h) = pumps.0 {
                let _ = tokio::time::timeout(Duration::from_secs(2), h).await;
            }
            if let Some(h) = pumps.1 {
                let _ = tokio::time::timeout(Duration::from_secs(2), h).await;
            }
            match status {
                Ok(s) => {
                    use std::os::unix::process::ExitStatusExt;
                    (sys::exit_code_of(s), s.signal(), None)
                }
                Err(_) => (137, None, Some("ContainerStatusUnknown".to_string())),
            }
        });
        Ok(())
    }

    async fn stop_container(&self, id: &ContainerId, grace: Duration) -> Result<()> {
        let record = self.lookup(id)?;
        let Some(pid) = record.pid.filter(|_| record.status.state == ContainerState::Running) else {
            return Ok(());
        };
        if !grace.is_zero() {
            sys::signal_group(pid, rustix::process::Signal::TERM.as_raw())?;
            if self.wait_exited(id, grace).await {
                return Ok(());
            }
        }
        sys::signal_group(pid, rustix::process::Signal::KILL.as_raw())?;
        self.wait_exited(id, Duration::from_secs(10)).await;
        Ok(())
    }

    async fn signal_container(&self, id: &ContainerId, signal: i32) -> Result<()> {
        let record = self.lookup(id)?;
        match record.pid.filter(|_| record.status.state == ContainerState::Running) {
            Some(pid) => sys::signal_group(pid, signal),
            None => Err(RuntimeError::Invalid(format!("container {id} is not running"))),
        }
    }

    async fn remove_container(&self, id: &ContainerId) -> Result<()> {
        let Ok(record) = self.lookup(id) else { return Ok(()) };
        if record.status.state == ContainerState::Running {
            self.stop_container(id, Duration::ZERO).await?;
        }
        self.state().containers.remove(id);
        let _ = std::fs::remove_file(self.container_file(id));
        if let Some(log) = &record.status.log_path {
            let _ = std::fs::remove_file(log);
        }
        self.emit(EventKind::Removed, &record.status.sandbox_id, id);
        Ok(())
    }

    async fn container_status(&self, id: &ContainerId) -> Result<ContainerStatus> {
        self.lookup(id).map(|r| r.status)
    }

    async fn list_containers(&self, filter: &ContainerFilter) -> Result<Vec<ContainerStatus>> {
        Ok(self.state().containers.values().map(|c| &c.record.status).filter(|s| filter.matches(s)).cloned().collect())
    }

    fn events(&self) -> BoxStream<'static, RuntimeEvent> {
        broadcast_events(self.inner.events.subscribe())
    }

    async fn exec_sync(&self, id: &ContainerId, cmd: &[String], timeout: Duration) -> Result<ExecResult> {
        let mut command = self.exec_command(id, cmd).await?;
        sys::exec_with_timeout(&mut command, timeout).await
    }

    async fn exec(&self, id: &ContainerId, cmd: &[String]) -> Result<ExecSession> {
        let mut command = self.exec_command(id, cmd).await?;
        command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| RuntimeError::io("spawn exec", e))?;
        let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take()) else {
            return Err(RuntimeError::Invalid("exec pipes missing".into()));
        };
        Ok(ExecSession {
            stdin: Box::pin(stdin),
            stdout: Box::pin(stdout),
            stderr: Box::pin(stderr),
            exit: Box::pin(async move { child.wait().await.map(sys::exit_code_of).map_err(|e| RuntimeError::io("wait exec", e)) }),
            resize: None,
        })
    }

    async fn exec_tty(&self, id: &ContainerId, cmd: &[String], size: Option<TerminalSize>) -> Result<ExecSession> {
        let (argv, mut env, dir) = self.exec_parts(id, cmd).await?;
        if !env.iter().any(|(k, _)| k == "TERM") {
            env.push(("TERM".into(), "xterm".into()));
        }
        let (master, slave) = sys::open_pty(size)?;
        let stdio = sys::terminal_stdio;
        // `setsid --ctty` (util-linux) makes the terminal the command's controlling terminal in a
        // session of its own (the command leads it, so ^C reaches its process group); it forks
        // only when it already leads a group, which a child of the agent does not.
        let mut command = Command::new("setsid");
        command
            .arg("--ctty")
            .args(&argv)
            .current_dir(dir)
            .env_clear()
            .envs(env)
            .stdin(stdio(&slave)?)
            .stdout(stdio(&slave)?)
            .stderr(stdio(&slave)?)
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| RuntimeError::io("spawn exec", e))?;
        // Only the command may hold the slave side: the reader ends when the command's session does.
        drop(command);
        drop(slave);
        let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        tty_session(
            master,
            pid,
            Box::pin(async move { child.wait().await.map(sys::exit_code_of).map_err(|e| RuntimeError::io("wait exec", e)) }),
        )
    }

    async fn attach(&self, id: &ContainerId, size: Option<TerminalSize>) -> Result<AttachSession> {
        attach_to(self.state().containers.get(id).map(|c| (c.record.status.state, c.attach.clone())), id, size)
    }

    async fn logs(&self, id: &ContainerId, options: &LogOptions) -> Result<LogByteStream> {
        let record = self.lookup(id)?;
        let path = record.status.log_path.clone().ok_or_else(|| RuntimeError::not_found("log", &id.0))?;
        let rx = self.state().containers.get(id).map(|c| c.exited.subscribe());
        let finished: Arc<dyn Fn() -> bool + Send + Sync> = match rx {
            Some(rx) => Arc::new(move || *rx.borrow()),
            None => Arc::new(|| true),
        };
        Ok(logs::read(path, options.clone(), finished))
    }

    async fn stats(&self, id: &ContainerId) -> Result<ContainerStats> {
        let record = self.lookup(id)?;
        match record.pid.filter(|_| record.status.state == ContainerState::Running) {
            Some(pid) => Ok(sys::group_stats(pid)),
            None => Ok(ContainerStats::default()),
        }
    }

    async fn recover(&self) -> Result<Vec<ContainerStatus>> {
        let read_dir = |sub: &str| -> Vec<PathBuf> {
            std::fs::read_dir(self.inner.root.join(sub))
                .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect())
                .unwrap_or_default()
        };
        for path in read_dir("sandboxes") {
            let Ok(sb) = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|d| serde_json::from_slice::<SandboxStatus>(&d).map_err(|e| e.to_string()))
            else {
                continue;
            };
            let mut state = self.state();
            if let Some(IpAddr::V4(ip)) = sb.ip {
                state.used_ips.insert(u32::from(ip));
            }
            state.seq = state.seq.max(seq_of(&sb.id.0));
            state.sandboxes.insert(sb.id.clone(), sb);
        }
        let mut found = Vec::new();
        for path in read_dir("containers") {
            let Ok(mut record) = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|d| serde_json::from_slice::<ContainerRecord>(&d).map_err(|e| e.to_string()))
            else {
                continue;
            };
            let id = record.status.id.clone();
            if self.state().containers.contains_key(&id) {
                continue;
            }
            let mut still_running = record.status.state == ContainerState::Running
                && record.pid.is_some_and(|pid| sys::alive(pid) && sys::start_ticks(pid) == record.start_ticks);
            if still_running && let Some(pid) = record.pid.filter(|pid| output_orphaned(*pid)) {
                // Its stdout pipe was read by an agent process that is gone: the next write would
                // fail (EPIPE), so the container cannot be re-adopted safely. Stop it; the agent
                // restarts it under its restart policy.
                tracing::info!(container.id = %id, pid, "output pipe orphaned by a previous agent; stopping the container");
                let _ = sys::signal_group(pid, 9);
                for _ in 0..50 {
                    if !sys::alive(pid) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                still_running = false;
            }
            if record.status.state == ContainerState::Running && !still_running {
                // It ended while nobody watched; its exit code is lost.
                record.status.state = ContainerState::Exited;
                record.status.finished_at = Some(Timestamp::now());
                record.status.exit_code = Some(137);
                record.status.reason = Some("ContainerStatusUnknown".into());
                record.status.message = Some("the container ended while the runtime was not watching".into());
                Self::persist(&path, &record);
            }
            let (exited, _) = watch::channel(record.status.state == ContainerState::Exited);
            {
                let mut state = self.state();
                state.seq = state.seq.max(seq_of(&id.0));
                state.containers.insert(id.clone(), Container { record: record.clone(), exited, attach: None });
            }
            if still_running && let Some(pid) = record.pid {
                self.track_exit(id.clone(), pid, async move {
                    while sys::alive(pid) {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    (137, None, Some("ContainerStatusUnknown".to_string()))
                });
            }
            found.push(record.status);
        }
        Ok(found)
    }
}

impl ProcessRuntime {
    /// The argv, environment and working directory of an exec in a running container (through
    /// `nsenter` into its mount namespace when it has volumes).
    async fn exec_parts(&self, id: &ContainerId, cmd: &[String]) -> Result<(Vec<String>, Vec<(String, String)>, String)> {
        let record = self.lookup(id)?;
        let (Some(pid), ContainerState::Running) = (record.pid, record.status.state) else {
            return Err(RuntimeError::Invalid(format!("container {id} is not running")));
        };
        if cmd.is_empty() {
            return Err(RuntimeError::Invalid("empty exec command".into()));
        }
        let sandbox = self.sandbox_status(&record.status.sandbox_id).await?;
        let dir = record.config.working_dir.clone().unwrap_or_else(|| "/".into());
        let cmd = [identity_prefix(&record.config), cmd.to_vec()].concat();
        let argv = if record.config.mounts.is_empty() {
            cmd
        } else {
            // Join the container's mount namespace so that volumes look the same.
            let mut argv = vec!["nsenter".to_string(), "-t".into(), pid.to_string(), "-m".into()];
            if self.inner.mounts == MountSupport::UserNamespace {
                argv.extend(["-U".into(), "--preserve-credentials".into()]);
            }
            argv.push(format!("--wd={dir}"));
            argv.push("--".into());
            argv.extend(cmd.iter().cloned());
            argv
        };
        Ok((argv, self.env_for(&record.config, &sandbox), dir))
    }

    async fn exec_command(&self, id: &ContainerId, cmd: &[String]) -> Result<Command> {
        let (argv, env, dir) = self.exec_parts(id, cmd).await?;
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]).current_dir(dir).env_clear().envs(env);
        Ok(command)
    }
}

/// An exec session over a pseudo-terminal's master side whose command leads session `pid`: when
/// the command ends, what it left in its session goes too (it would hold the terminal open).
pub(crate) fn tty_session(
    master: std::os::fd::OwnedFd,
    pid: i32,
    exit: futures::future::BoxFuture<'static, Result<i32>>,
) -> Result<ExecSession> {
    let (reader, writer) = sys::pty_streams(master)?;
    let fd = writer.fd();
    let resize: Resize = Arc::new(move |size| sys::set_terminal_size(fd.get_ref(), size));
    Ok(ExecSession {
        stdin: Box::pin(writer),
        stdout: Box::pin(reader),
        stderr: Box::pin(tokio::io::empty()),
        exit: Box::pin(async move {
            let code = exit.await;
            if pid > 0 {
                let _ = sys::signal_group(pid, rustix::process::Signal::HUP.as_raw());
            }
            code
        }),
        resize: Some(resize),
    })
}

/// What runs a container's command as its user, group and supplemental groups (`runAsUser`,
/// `runAsGroup`, `supplementalGroups` and `fsGroup`): util-linux `setpriv`, inside the mount
/// wrapper so that mounts are made first. Only where privileges allow (the agent runs as root);
/// otherwise commands run as the agent's own user.
fn identity_prefix(config: &ContainerConfig) -> Vec<String> {
    if config.run_as_user.is_none() && config.run_as_group.is_none() && config.supplemental_groups.is_empty() {
        return Vec::new();
    }
    if !rustix::process::geteuid().is_root() {
        tracing::debug!(container = %config.name, "not root: the container runs as the agent's user, not its runAsUser/runAsGroup");
        return Vec::new();
    }
    let uid = config.run_as_user.unwrap_or(0);
    let gid = config.run_as_group.unwrap_or(uid);
    let mut argv = vec!["setpriv".to_string(), format!("--reuid={uid}"), format!("--regid={gid}")];
    if config.supplemental_groups.is_empty() {
        argv.push("--clear-groups".into());
    } else {
        let groups: Vec<String> = config.supplemental_groups.iter().map(u32::to_string).collect();
        argv.push(format!("--groups={}", groups.join(",")));
    }
    argv.push("--".into());
    argv
}

/// An attach session to a container in `state` with `point` (`None` when the container is unknown).
pub(crate) fn attach_to(
    found: Option<(ContainerState, Option<Arc<AttachPoint>>)>,
    id: &ContainerId,
    size: Option<TerminalSize>,
) -> Result<AttachSession> {
    match found {
        None => Err(RuntimeError::not_found("container", &id.0)),
        Some((ContainerState::Running, Some(point))) => Ok(point.session(size)),
        Some((ContainerState::Running, None)) => {
            Err(RuntimeError::Unsupported(format!("container {id} was started by a previous agent; its stdio cannot be attached to")))
        }
        Some(_) => Err(RuntimeError::Invalid(format!("container {id} is not running"))),
    }
}

/// Turns a broadcast receiver into an event stream that reports lost events as one `Resync`.
pub(crate) fn broadcast_events(rx: broadcast::Receiver<RuntimeEvent>) -> BoxStream<'static, RuntimeEvent> {
    tokio_stream::wrappers::BroadcastStream::new(rx)
        .map(|r| match r {
            Ok(ev) => ev,
            Err(_) => {
                RuntimeEvent { kind: EventKind::Resync, sandbox_id: SandboxId(String::new()), container_id: ContainerId(String::new()) }
            }
        })
        .boxed()
}

/// The first characters of a UID, enough to tell pods apart in ids.
pub(crate) fn short(uid: &str) -> &str {
    uid.get(..8).unwrap_or(uid)
}

fn seq_of(id: &str) -> u64 {
    id.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// Whether a container's stdout is a pipe that no thread of this process reads any more, i.e.
/// its reader was a previous agent process. Anything but a pipe (or an unreadable `/proc`) is not.
fn output_orphaned(pid: i32) -> bool {
    let Ok(target) = std::fs::read_link(format!("/proc/{pid}/fd/1")) else { return false };
    if !target.to_string_lossy().starts_with("pipe:") {
        return false;
    }
    let Ok(ours) = std::fs::read_dir("/proc/self/fd") else { return false };
    !ours.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == target))
}
