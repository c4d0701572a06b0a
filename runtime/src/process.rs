//! [`ProcessRuntime`]: each container is a host process in its own process group, with its env,
//! working directory, log file and a loopback pod IP (127.x.y.z); needs no privileges unless a pod
//! mounts volumes (then a private mount namespace per container, as root or in a user namespace).

use crate::cri::*;
use crate::error::{Result, RuntimeError};
use crate::launch::{self, container_env};
use crate::logs;
use crate::sys::{self, MountSupport};
use crate::table::{self, Exit, JsonFiles, Table};
use async_trait::async_trait;
use futures::stream::BoxStream;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::process::Command;

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
        Ok(ProcessRuntime {
            inner: Arc::new(Inner {
                table: Table::new(JsonFiles::new(self.root.clone()), 4096),
                root: self.root,
                first_ip: u32::from(first_ip),
                mounts: self.mounts.unwrap_or_else(MountSupport::detect),
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
    table: Table<SandboxStatus, ContainerRecord, IpPool, JsonFiles>,
}

/// The pod IPs in use and where the search for a free one resumes (offsets from the first IP).
#[derive(Debug, Default)]
struct IpPool {
    used: BTreeSet<u32>,
    next: u32,
}

impl IpPool {
    /// A free address from `first` on (skipping `.0` and `.255`), now in use.
    fn allocate(&mut self, first: u32) -> Ipv4Addr {
        loop {
            let candidate = first.wrapping_add(self.next);
            self.next = self.next.wrapping_add(1);
            let last = candidate & 0xff;
            if last == 0 || last == 255 || self.used.contains(&candidate) {
                continue;
            }
            self.used.insert(candidate);
            return Ipv4Addr::from(candidate);
        }
    }
}

/// What is persisted per container so that a new agent can re-attach.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ContainerRecord {
    status: ContainerStatus,
    config: ContainerConfig,
    pid: Option<i32>,
    start_ticks: Option<u64>,
}

table::container_entry!(ContainerRecord);

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
            let reason = reason.unwrap_or_else(|| ContainerStatus::exit_reason(code, false).to_string());
            this.inner.table.mark_exited(&id, |_| Some(Exit { code, signal, reason, message: None }));
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
            let mut records = self.inner.table.lock();
            let id = SandboxId(format!("sb-{}-{}-{}", short(&config.uid), config.attempt, records.next_seq()));
            let ip = (!config.host_network).then(|| IpAddr::V4(records.extra.allocate(self.inner.first_ip)));
            let status =
                SandboxStatus { id: id.clone(), config: config.clone(), state: SandboxState::Ready, ip, created_at: Timestamp::now() };
            records.sandboxes.insert(id, status.clone());
            status
        };
        self.inner.table.save_sandbox(&status);
        Ok(status.id)
    }

    async fn stop_sandbox(&self, id: &SandboxId) -> Result<()> {
        for c in self.inner.table.running_in(id) {
            self.stop_container(&c, Duration::ZERO).await?;
        }
        self.inner.table.update_sandbox(id, |sb| sb.state = SandboxState::NotReady);
        Ok(())
    }

    async fn remove_sandbox(&self, id: &SandboxId) -> Result<()> {
        self.stop_sandbox(id).await?;
        for c in self.inner.table.containers_in(id) {
            self.remove_container(&c).await?;
        }
        if let Some(IpAddr::V4(ip)) = self.inner.table.remove_sandbox(id).and_then(|sb| sb.ip) {
            self.inner.table.lock().extra.used.remove(&u32::from(ip));
        }
        Ok(())
    }

    async fn sandbox_status(&self, id: &SandboxId) -> Result<SandboxStatus> {
        self.inner.table.sandbox_status(id)
    }

    async fn list_sandboxes(&self) -> Result<Vec<SandboxStatus>> {
        Ok(self.inner.table.list_sandboxes())
    }

    async fn create_container(&self, sandbox: &SandboxId, config: &ContainerConfig) -> Result<ContainerId> {
        let (id, record) = {
            let mut records = self.inner.table.lock();
            let sb = records.sandboxes.get(sandbox).ok_or_else(|| RuntimeError::not_found("sandbox", &sandbox.0))?;
            if sb.state != SandboxState::Ready {
                return Err(RuntimeError::Invalid(format!("sandbox {sandbox} is not ready")));
            }
            if let (Some(m), MountSupport::Unavailable) = (config.mounts.first(), self.inner.mounts) {
                return Err(RuntimeError::Mount {
                    mount_path: m.container_path.clone(),
                    reason: "the process runtime needs root or unprivileged user namespaces to make a private mount namespace".into(),
                });
            }
            let log_path = table::log_path(&self.inner.root, sb, config);
            let id = ContainerId(format!("c-{}-{}-{}", config.name, config.attempt, records.next_seq()));
            let status = table::created_status(&id, sandbox, config, Some(log_path));
            let record = ContainerRecord { status, config: config.clone(), pid: None, start_ticks: None };
            records.insert(id.clone(), record.clone());
            (id, record)
        };
        if let Some(dir) = record.status.log_path.as_deref().and_then(Path::parent) {
            std::fs::create_dir_all(dir).map_err(|e| RuntimeError::io(format!("create {}", dir.display()), e))?;
        }
        self.inner.table.save_container(&record);
        self.inner.table.emit(EventKind::Created, sandbox, &id);
        Ok(id)
    }

    async fn start_container(&self, id: &ContainerId) -> Result<()> {
        let record = self.inner.table.created(id)?;
        let sandbox = self.inner.table.sandbox_status(&record.status.sandbox_id)?;
        let mut argv = record.config.argv();
        if argv.is_empty() {
            argv.push(record.config.image.name.clone());
        }
        let argv = [identity_prefix(&record.config), argv].concat();
        let config = &record.config;
        // With `tty` the container's standard streams are a terminal of its own.
        let (mut cmd, pty) = launch::main_stdio(self.command_for(config, &argv)?, config, None)?;
        cmd.env_clear().envs(container_env(config, &sandbox));
        if config.tty && !launch::names_term(config.env.iter().chain(&config.image.env)) {
            cmd.env(launch::DEFAULT_TERM.0, launch::DEFAULT_TERM.1);
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
                let marked = self.inner.table.mark_exited(id, |r| {
                    r.status.started_at = Some(Timestamp::now());
                    Some(Exit { code: 128, signal: None, reason: "StartError".into(), message: Some(msg.clone()) })
                });
                if !marked {
                    return Err(RuntimeError::not_found("container", &id.0));
                }
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
        let (point, pumps) = launch::wire_output(config, pty, &mut child, &log_path)?;
        self.inner.table.mark_running(id, &record.status.sandbox_id, point, |r| {
            r.pid = Some(pid);
            r.start_ticks = sys::start_ticks(pid);
        });
        self.track_exit(id.clone(), pid, async move {
            let status = child.wait().await;
            launch::drain(pumps).await;
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
        let Some(pid) = self.inner.table.with_container(id, running_pid)? else {
            return Ok(());
        };
        if !grace.is_zero() {
            sys::signal_group(pid, rustix::process::Signal::TERM.as_raw())?;
            if self.inner.table.wait_exited(id, grace).await {
                return Ok(());
            }
        }
        sys::signal_group(pid, rustix::process::Signal::KILL.as_raw())?;
        self.inner.table.wait_exited(id, Duration::from_secs(10)).await;
        Ok(())
    }

    async fn signal_container(&self, id: &ContainerId, signal: i32) -> Result<()> {
        match self.inner.table.with_container(id, running_pid)? {
            Some(pid) => sys::signal_group(pid, signal),
            None => Err(RuntimeError::Invalid(format!("container {id} is not running"))),
        }
    }

    async fn remove_container(&self, id: &ContainerId) -> Result<()> {
        let Ok(state) = self.inner.table.with_container(id, |r| r.status.state) else { return Ok(()) };
        if state == ContainerState::Running {
            self.stop_container(id, Duration::ZERO).await?;
        }
        self.inner.table.remove_container(id);
        Ok(())
    }

    async fn container_status(&self, id: &ContainerId) -> Result<ContainerStatus> {
        self.inner.table.container_status(id)
    }

    async fn list_containers(&self, filter: &ContainerFilter) -> Result<Vec<ContainerStatus>> {
        Ok(self.inner.table.list_containers(filter))
    }

    fn events(&self) -> BoxStream<'static, RuntimeEvent> {
        self.inner.table.events()
    }

    async fn exec_sync(&self, id: &ContainerId, cmd: &[String], timeout: Duration) -> Result<ExecResult> {
        let mut command = self.exec_command(id, cmd).await?;
        sys::exec_with_timeout(&mut command, timeout).await
    }

    async fn exec(&self, id: &ContainerId, cmd: &[String]) -> Result<ExecSession> {
        let mut command = self.exec_command(id, cmd).await?;
        command.process_group(0);
        launch::piped_exec(command, "spawn exec")
    }

    async fn exec_tty(&self, id: &ContainerId, cmd: &[String], size: Option<TerminalSize>) -> Result<ExecSession> {
        let (argv, mut env, dir) = self.exec_parts(id, cmd).await?;
        if !launch::names_term(&env) {
            env.push((launch::DEFAULT_TERM.0.into(), launch::DEFAULT_TERM.1.into()));
        }
        let mut command = Command::new("setsid");
        command.arg("--ctty").args(&argv).current_dir(dir).env_clear().envs(env);
        launch::terminal_exec(command, size, "spawn exec")
    }

    async fn attach(&self, id: &ContainerId, size: Option<TerminalSize>) -> Result<AttachSession> {
        self.inner.table.attach(id, size)
    }

    async fn logs(&self, id: &ContainerId, options: &LogOptions) -> Result<LogByteStream> {
        self.inner.table.logs(id, options)
    }

    async fn stats(&self, id: &ContainerId) -> Result<ContainerStats> {
        match self.inner.table.with_container(id, running_pid)? {
            Some(pid) => Ok(sys::group_stats(pid)),
            None => Ok(ContainerStats::default()),
        }
    }

    async fn recover(&self) -> Result<Vec<ContainerStatus>> {
        let table = &self.inner.table;
        for (_, sb) in table.store().load::<SandboxStatus>("sandboxes") {
            let mut records = table.lock();
            if let Some(IpAddr::V4(ip)) = sb.ip {
                records.extra.used.insert(u32::from(ip));
            }
            records.saw_id(&sb.id.0);
            records.sandboxes.insert(sb.id.clone(), sb);
        }
        // A process group is still the container's while its leader lives with the start time
        // recorded (a reused pid has another). One whose output pipe a previous agent read is
        // stopped: see `output_orphaned`.
        let alive = |record: &ContainerRecord| {
            let id = record.status.id.clone();
            let pid = record.pid.filter(|pid| sys::alive(*pid) && sys::start_ticks(*pid) == record.start_ticks);
            async move {
                let Some(pid) = pid else { return false };
                if !output_orphaned(pid) {
                    return true;
                }
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
                false
            }
        };
        let lost = |record: &mut ContainerRecord| {
            record.status.message = Some("the container ended while the runtime was not watching".into());
        };
        let watch = |id: &ContainerId, record: &ContainerRecord| {
            let Some(pid) = record.pid else { return };
            self.track_exit(id.clone(), pid, async move {
                while sys::alive(pid) {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                (137, None, Some("ContainerStatusUnknown".to_string()))
            });
        };
        Ok(table.recover_containers(table::Known::Skipped, alive, lost, watch).await)
    }
}

impl ProcessRuntime {
    /// The argv, environment and working directory of an exec in a running container (through
    /// `nsenter` into its mount namespace when it has volumes).
    async fn exec_parts(&self, id: &ContainerId, cmd: &[String]) -> Result<(Vec<String>, Vec<(String, String)>, String)> {
        let record = self.inner.table.record(id)?;
        let (Some(pid), ContainerState::Running) = (record.pid, record.status.state) else {
            return Err(RuntimeError::Invalid(format!("container {id} is not running")));
        };
        if cmd.is_empty() {
            return Err(RuntimeError::Invalid("empty exec command".into()));
        }
        let sandbox = self.inner.table.sandbox_status(&record.status.sandbox_id)?;
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
        Ok((argv, container_env(&record.config, &sandbox), dir))
    }

    async fn exec_command(&self, id: &ContainerId, cmd: &[String]) -> Result<Command> {
        let (argv, env, dir) = self.exec_parts(id, cmd).await?;
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]).current_dir(dir).env_clear().envs(env);
        Ok(command)
    }
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

/// The pid of a running container's main process (`None` when it is not running).
fn running_pid(record: &ContainerRecord) -> Option<i32> {
    record.pid.filter(|_| record.status.state == ContainerState::Running)
}

/// The first characters of a UID, enough to tell pods apart in ids.
pub(crate) fn short(uid: &str) -> &str {
    uid.get(..8).unwrap_or(uid)
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
