//! [`FakeRuntime`]: containers that "run" without processes, scripted per container (start delay,
//! exit code, usage, probe answers), so that thousands of hollow nodes fit in one process.
//!
//! A container's [`FakeScript`] comes from the behaviour function given to
//! [`FakeRuntime::with_behavior`], else from the JSON annotation `fake.bosun.dev/<container-name>`
//! or `fake.bosun.dev/script` on the pod, else the default (runs forever, healthy).

use crate::attach::AttachPoint;
use crate::cri::*;
use crate::error::{Result, RuntimeError};
use crate::logs::format_time;
use crate::process::short;
use crate::table::{self, Exit, InMemory, Table};
use async_trait::async_trait;
use futures::stream::BoxStream;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Runtime events buffered per fake runtime. A broadcast channel allocates its whole buffer up
/// front, and a hollow node has one runtime each: 16k slots were 1.4 MB per node (7 GB for 5000
/// nodes). A subscriber that falls further behind gets a resync, which the node agent handles.
const EVENT_CAPACITY: usize = 256;

/// The annotation prefix the fake reads scripts from.
pub const SCRIPT_ANNOTATION: &str = "fake.bosun.dev/script";

/// How one fake container behaves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FakeScript {
    /// Time from start to running, in milliseconds.
    pub start_delay_ms: u64,
    /// Exit this long after starting (`None`: run until stopped).
    pub exit_after_ms: Option<u64>,
    /// The exit code when it exits by itself.
    pub exit_code: i32,
    /// CPU usage in millicores.
    pub cpu_millis: u64,
    /// Memory working set in bytes.
    pub memory_bytes: u64,
    /// HTTP and TCP probes succeed.
    pub probe_ok: bool,
    /// Exit code of every exec (exec probes included).
    pub exec_exit_code: i32,
    /// Ignore SIGTERM (only SIGKILL after the grace period ends it).
    pub ignore_sigterm: bool,
    /// Lines written to stdout at start.
    pub log: Vec<String>,
}

impl Default for FakeScript {
    fn default() -> Self {
        Self {
            start_delay_ms: 0,
            exit_after_ms: None,
            exit_code: 0,
            cpu_millis: 10,
            memory_bytes: 16 << 20,
            probe_ok: true,
            exec_exit_code: 0,
            ignore_sigterm: false,
            log: Vec::new(),
        }
    }
}

/// Chooses a script for a container.
pub type Behavior = Arc<dyn Fn(&SandboxConfig, &ContainerConfig) -> FakeScript + Send + Sync>;

/// A runtime for scale simulation. Cheap to clone (a handle); time follows tokio's clock, so
/// paused-time tests drive it.
#[derive(Clone)]
pub struct FakeRuntime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FakeRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeRuntime").finish_non_exhaustive()
    }
}

struct Inner {
    behavior: Option<Behavior>,
    table: Table<SandboxStatus, FakeContainer, (), InMemory>,
    ip_prefix: u32,
}

#[derive(Debug, Clone)]
struct FakeContainer {
    status: ContainerStatus,
    script: FakeScript,
    started: Option<Instant>,
    /// CPU nanoseconds used before the current rate began (`set_usage` changes the rate).
    cpu_before: u64,
    /// When the current CPU rate began (the start, or the last `set_usage`).
    rate_since: Option<Instant>,
    log: Vec<(Timestamp, String, &'static str)>,
    /// `stdin`, `stdinOnce` and `tty` of the config. With `stdin` or `tty`, while it runs, its
    /// entry's attach point is what attach sessions reach (stdin echoed to stdout).
    stdio: (bool, bool, bool),
}

table::container_entry!(FakeContainer);

impl FakeContainer {
    /// CPU nanoseconds used since start: what ran at earlier rates plus the current rate since it began.
    fn cpu_used(&self) -> u64 {
        let elapsed = self.rate_since.map(|s| s.elapsed()).unwrap_or_default();
        self.cpu_before.saturating_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX).saturating_mul(self.script.cpu_millis) / 1000)
    }
}

impl Default for FakeRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeRuntime {
    /// A fake runtime reading scripts from annotations. Pod IPs come from 10.x addresses that are
    /// never routed (nothing connects to them: network probes are answered by the script).
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                behavior: None,
                table: Table::new(InMemory, EVENT_CAPACITY),
                ip_prefix: u32::from(Ipv4Addr::new(10, 0, 0, 0)) + (fastrand::u32(0..=255) << 16),
            }),
        }
    }

    /// A fake runtime whose containers follow `behavior` instead of annotations.
    pub fn with_behavior(behavior: impl Fn(&SandboxConfig, &ContainerConfig) -> FakeScript + Send + Sync + 'static) -> Self {
        let mut this = Self::new();
        if let Some(inner) = Arc::get_mut(&mut this.inner) {
            inner.behavior = Some(Arc::new(behavior));
        }
        this
    }

    fn script_for(&self, sandbox: &SandboxConfig, config: &ContainerConfig) -> FakeScript {
        if let Some(b) = &self.inner.behavior {
            return b(sandbox, config);
        }
        let key = format!("fake.bosun.dev/{}", config.name);
        [
            config.annotations.get(&key),
            sandbox.annotations.get(&key),
            config.annotations.get(SCRIPT_ANNOTATION),
            sandbox.annotations.get(SCRIPT_ANNOTATION),
        ]
        .into_iter()
        .flatten()
        .find_map(|json| serde_json::from_str(json).ok())
        .unwrap_or_default()
    }

    /// Makes a running container exit now with `code` (a test's crash).
    pub fn exit(&self, id: &ContainerId, code: i32) {
        self.finish(id, code, None);
    }

    /// Changes whether a container's network probes and execs succeed.
    pub fn set_healthy(&self, id: &ContainerId, healthy: bool) {
        if let Some(c) = self.inner.table.lock().containers.get_mut(id) {
            c.record.script.probe_ok = healthy;
            c.record.script.exec_exit_code = if healthy { 0 } else { 1 };
        }
    }

    /// Sets the CPU (millicores) and memory working set (bytes) that the running containers named
    /// `container` of pod `namespace/pod` use from now on (the CPU already used is kept, so the
    /// node agent's next rate sample shows the new rate). Returns how many containers matched.
    pub fn set_usage(&self, namespace: &str, pod: &str, container: &str, cpu_millis: u64, memory_bytes: u64) -> usize {
        let mut records = self.inner.table.lock();
        let table::Records { sandboxes, containers, .. } = &mut *records;
        let mut matched = 0;
        for c in containers.values_mut().map(|c| &mut c.record) {
            let Some(sb) = sandboxes.get(&c.status.sandbox_id) else { continue };
            if sb.config.namespace != namespace || sb.config.name != pod || c.status.name != container {
                continue;
            }
            if c.status.state == ContainerState::Running {
                c.cpu_before = c.cpu_used();
                c.rate_since = Some(Instant::now());
            }
            c.script.cpu_millis = cpu_millis;
            c.script.memory_bytes = memory_bytes;
            matched += 1;
        }
        matched
    }

    /// How many containers are running.
    pub fn running(&self) -> usize {
        self.inner.table.lock().containers.values().filter(|c| c.record.status.state == ContainerState::Running).count()
    }

    /// Ends a running container (nothing for one that is not running).
    fn finish(&self, id: &ContainerId, code: i32, signal: Option<i32>) {
        self.inner.table.mark_exited(id, |c| {
            let reason = || ContainerStatus::exit_reason(code, false).into();
            (c.status.state == ContainerState::Running).then(|| Exit { code, signal, reason: reason(), message: None })
        });
    }
}

#[async_trait]
impl ContainerRuntime for FakeRuntime {
    fn version(&self) -> RuntimeVersion {
        RuntimeVersion { name: "fake".into(), version: env!("CARGO_PKG_VERSION").into() }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            exec: true,
            signals: true,
            mounts: true,
            network_namespace: true,
            resource_limits: true,
            images: false,
            attach: true,
        }
    }

    async fn run_sandbox(&self, config: &SandboxConfig) -> Result<SandboxId> {
        let mut records = self.inner.table.lock();
        let seq = records.next_seq();
        let id = SandboxId(format!("fsb-{}-{}", short(&config.uid), seq));
        let offset = u32::try_from(seq % 65_000).unwrap_or(1) + 1;
        let ip = (!config.host_network).then(|| IpAddr::V4(Ipv4Addr::from(self.inner.ip_prefix + offset)));
        records.sandboxes.insert(
            id.clone(),
            SandboxStatus { id: id.clone(), config: config.clone(), state: SandboxState::Ready, ip, created_at: Timestamp::now() },
        );
        Ok(id)
    }

    async fn stop_sandbox(&self, id: &SandboxId) -> Result<()> {
        for c in self.inner.table.running_in(id) {
            self.finish(&c, 137, Some(9));
        }
        self.inner.table.update_sandbox(id, |sb| sb.state = SandboxState::NotReady);
        Ok(())
    }

    async fn remove_sandbox(&self, id: &SandboxId) -> Result<()> {
        self.stop_sandbox(id).await?;
        for c in self.inner.table.containers_in(id) {
            self.remove_container(&c).await?;
        }
        self.inner.table.remove_sandbox(id);
        Ok(())
    }

    async fn sandbox_status(&self, id: &SandboxId) -> Result<SandboxStatus> {
        self.inner.table.sandbox_status(id)
    }

    async fn list_sandboxes(&self) -> Result<Vec<SandboxStatus>> {
        Ok(self.inner.table.list_sandboxes())
    }

    async fn create_container(&self, sandbox: &SandboxId, config: &ContainerConfig) -> Result<ContainerId> {
        let id = {
            let mut records = self.inner.table.lock();
            let sb = records.sandboxes.get(sandbox).ok_or_else(|| RuntimeError::not_found("sandbox", &sandbox.0))?;
            if sb.state != SandboxState::Ready {
                return Err(RuntimeError::Invalid(format!("sandbox {sandbox} is not ready")));
            }
            let script = self.script_for(&sb.config, config);
            let id = ContainerId(format!("fc-{}-{}-{}", config.name, config.attempt, records.next_seq()));
            let status = table::created_status(&id, sandbox, config, None);
            let stdio = (config.stdin, config.stdin_once, config.tty);
            let container = FakeContainer { status, script, started: None, cpu_before: 0, rate_since: None, log: Vec::new(), stdio };
            records.insert(id.clone(), container);
            id
        };
        self.inner.table.emit(EventKind::Created, sandbox, &id);
        Ok(id)
    }

    async fn start_container(&self, id: &ContainerId) -> Result<()> {
        let script = self.inner.table.with_created(id, |c| c.script.clone())?;
        if script.start_delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(script.start_delay_ms)).await;
        }
        // Unlike the process and runc backends (whose `mark_running` tells of the start whatever
        // happened meanwhile), a container removed during its start delay is an error here, and
        // no `Started` follows; and only one with stdin or a terminal gets an attach point.
        let started = self.inner.table.set_running(id, |c| {
            c.started = Some(Instant::now());
            c.rate_since = c.started;
            let now = Timestamp::now();
            c.log.extend(script.log.iter().map(|l| (now, l.clone(), "stdout")));
            let (stdin, stdin_once, tty) = c.stdio;
            if !(stdin || tty) {
                return None;
            }
            // The fake's main process echoes its stdin, like `cat`.
            let (writer, reader) = tokio::io::duplex(64 * 1024);
            let point = AttachPoint::new(
                stdin.then(|| -> std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>> { Box::pin(writer) }),
                stdin_once,
                tty,
                None,
            );
            let mut echo = point.tee(reader, false);
            let (this, id) = (self.clone(), id.clone());
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut echo, &mut tokio::io::sink()).await;
                // Like `cat`, it exits at the end of its stdin.
                if stdin {
                    this.finish(&id, 0, None);
                }
            });
            Some(point)
        });
        let sandbox = started.ok_or_else(|| RuntimeError::not_found("container", &id.0))?;
        self.inner.table.emit(EventKind::Started, &sandbox, id);
        if let Some(after) = script.exit_after_ms {
            let this = self.clone();
            let id = id.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(after)).await;
                this.finish(&id, script.exit_code, None);
            });
        }
        Ok(())
    }

    async fn stop_container(&self, id: &ContainerId, grace: Duration) -> Result<()> {
        let (state, ignores_term) = self.inner.table.with_container(id, |c| (c.status.state, c.script.ignore_sigterm))?;
        if state != ContainerState::Running {
            return Ok(());
        }
        if !grace.is_zero() {
            if !ignores_term {
                self.finish(id, 143, Some(15));
                return Ok(());
            }
            if self.inner.table.wait_exited(id, grace).await {
                return Ok(());
            }
        }
        self.finish(id, 137, Some(9));
        Ok(())
    }

    async fn signal_container(&self, id: &ContainerId, signal: i32) -> Result<()> {
        let ignores_term = self.inner.table.with_running(id, |c| c.script.ignore_sigterm)?;
        if signal == 9 || (signal == 15 && !ignores_term) {
            self.finish(id, 128 + signal, Some(signal));
        }
        Ok(())
    }

    async fn remove_container(&self, id: &ContainerId) -> Result<()> {
        self.inner.table.remove_container(id);
        Ok(())
    }

    async fn attach(&self, id: &ContainerId, size: Option<TerminalSize>) -> Result<AttachSession> {
        let (state, point, mut exited) = {
            let records = self.inner.table.lock();
            let c = records.containers.get(id).ok_or_else(|| RuntimeError::not_found("container", &id.0))?;
            (c.record.status.state, c.attach.clone(), c.exited.subscribe())
        };
        if state != ContainerState::Running {
            return Err(RuntimeError::Invalid(format!("container {id} is not running")));
        }
        if let Some(point) = point {
            return Ok(point.session(size));
        }
        // No stdin and no terminal: the fake prints nothing; the session ends with the container.
        let (writer, stdout) = tokio::io::duplex(64);
        tokio::spawn(async move {
            let _ = exited.wait_for(|e| *e).await;
            drop(writer);
        });
        Ok(AttachSession { stdin: None, stdout: Box::pin(stdout), stderr: Box::pin(tokio::io::empty()), tty: false, resize: None })
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

    async fn exec_sync(&self, id: &ContainerId, cmd: &[String], _timeout: Duration) -> Result<ExecResult> {
        let records = self.inner.table.lock();
        let c = &records.containers.get(id).ok_or_else(|| RuntimeError::not_found("container", &id.0))?.record;
        if c.status.state != ContainerState::Running {
            return Err(RuntimeError::Invalid(format!("container {id} is not running")));
        }
        let stdout = match cmd.first().map(String::as_str) {
            Some("echo") => format!("{}\n", cmd[1..].join(" ")).into_bytes(),
            _ => Vec::new(),
        };
        Ok(ExecResult { exit_code: c.script.exec_exit_code, stdout, stderr: Vec::new(), timed_out: false })
    }

    async fn logs(&self, id: &ContainerId, options: &LogOptions) -> Result<LogByteStream> {
        let lines = {
            let records = self.inner.table.lock();
            let c = records.containers.get(id).ok_or_else(|| RuntimeError::not_found("container", &id.0))?;
            c.record.log.clone()
        };
        let mut lines: Vec<_> = lines.into_iter().filter(|(t, _, _)| options.since.is_none_or(|s| *t >= s)).collect();
        if let Some(tail) = options.tail_lines {
            let skip = lines.len().saturating_sub(usize::try_from(tail).unwrap_or(usize::MAX));
            lines.drain(..skip);
        }
        let mut out = String::new();
        for (t, line, _) in lines {
            if options.timestamps {
                out.push_str(&format_time(t));
                out.push(' ');
            }
            out.push_str(&line);
            out.push('\n');
        }
        if let Some(limit) = options.limit_bytes {
            let mut cut = usize::try_from(limit).unwrap_or(usize::MAX).min(out.len());
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
        }
        Ok(Box::pin(futures::stream::iter([Ok(bytes::Bytes::from(out))])))
    }

    async fn stats(&self, id: &ContainerId) -> Result<ContainerStats> {
        let records = self.inner.table.lock();
        let c = &records.containers.get(id).ok_or_else(|| RuntimeError::not_found("container", &id.0))?.record;
        if c.status.state != ContainerState::Running {
            return Ok(ContainerStats::default());
        }
        Ok(ContainerStats { cpu_usage_nanos: c.cpu_used(), memory_working_set_bytes: c.script.memory_bytes })
    }

    async fn recover(&self) -> Result<Vec<ContainerStatus>> {
        Ok(self.inner.table.list_containers(&ContainerFilter::default()))
    }

    async fn probe_network(&self, id: &ContainerId, _port: u16) -> Option<bool> {
        Some(
            self.inner
                .table
                .lock()
                .containers
                .get(id)
                .is_some_and(|c| c.record.status.state == ContainerState::Running && c.record.script.probe_ok),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn set_usage_changes_the_cpu_rate_from_now_on_and_the_memory_at_once() -> Result<()> {
        let rt = FakeRuntime::new();
        let sandbox = SandboxConfig { name: "web-1".into(), namespace: "shop".into(), uid: "u1".into(), ..SandboxConfig::default() };
        let sb = rt.run_sandbox(&sandbox).await?;
        let id = rt.create_container(&sb, &ContainerConfig { name: "main".into(), ..ContainerConfig::default() }).await?;
        rt.start_container(&id).await?;
        tokio::time::sleep(Duration::from_secs(10)).await;
        // The default script: 10 millicores for 10 s is 0.1 s of CPU.
        let before = rt.stats(&id).await?.cpu_usage_nanos;
        assert_eq!(before, 100_000_000);
        assert_eq!(rt.set_usage("shop", "web-1", "main", 500, 64 << 20), 1);
        assert_eq!(rt.set_usage("shop", "web-2", "main", 500, 64 << 20), 0);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let stats = rt.stats(&id).await?;
        assert_eq!(stats.cpu_usage_nanos - before, 1_000_000_000, "half a core for 2 s");
        assert_eq!(stats.memory_working_set_bytes, 64 << 20);
        Ok(())
    }
}
