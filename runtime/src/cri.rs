//! The CRI-shaped [`ContainerRuntime`] trait every backend implements, with its request and status types.

use crate::error::Result;
use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// Identifies a pod sandbox within one runtime.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SandboxId(pub String);

/// Identifies a container within one runtime.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContainerId(pub String);

impl fmt::Display for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a backend supports, so the agent can refuse early and explain why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Capabilities {
    /// `exec_sync` and `exec` work.
    pub exec: bool,
    /// Containers can be signalled.
    pub signals: bool,
    /// Volumes can be mounted at their `mountPath`.
    pub mounts: bool,
    /// Each pod gets its own network namespace (a real, routable IP).
    pub network_namespace: bool,
    /// CPU and memory limits are enforced.
    pub resource_limits: bool,
    /// Images are real root file systems (otherwise the image name is only a label).
    pub images: bool,
    /// [`ContainerRuntime::attach`] reaches a running container's main process (its stdin when
    /// created with [`ContainerConfig::stdin`], its output, its terminal).
    pub attach: bool,
}

/// Everything a sandbox (the pod-level environment: network, IP, log directory) is made from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SandboxConfig {
    /// The pod's name.
    pub name: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's UID.
    pub uid: String,
    /// How many sandboxes this pod had before this one.
    pub attempt: u32,
    /// The pod's host name.
    pub hostname: String,
    /// Use the node's network instead of a namespace of its own.
    pub host_network: bool,
    /// Directory for the pod's container logs.
    pub log_directory: PathBuf,
    /// Labels kept with the sandbox (the agent stores the pod's identity here).
    pub labels: BTreeMap<String, String>,
    /// The pod's annotations (the fake runtime reads its script here).
    pub annotations: BTreeMap<String, String>,
    /// The pod's `/etc/resolv.conf` (CRI's `DNSConfig`); `None` leaves the image's (or the host's).
    #[serde(default)]
    pub dns: Option<DnsConfig>,
}

/// A pod's resolver configuration, as the kubelet computes it from `dnsPolicy` and `dnsConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConfig {
    /// Name servers, in order.
    pub servers: Vec<String>,
    /// Search domains, in order.
    pub searches: Vec<String>,
    /// Resolver options (`ndots:5`).
    pub options: Vec<String>,
}

impl DnsConfig {
    /// The `resolv.conf` text.
    pub fn resolv_conf(&self) -> String {
        let mut out = String::new();
        for server in &self.servers {
            out.push_str(&format!("nameserver {server}\n"));
        }
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

/// The state of a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxState {
    /// Network and environment are up.
    Ready,
    /// Stopped (containers killed, network torn down) but not removed.
    NotReady,
}

/// What [`ContainerRuntime::sandbox_status`] reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxStatus {
    /// The sandbox.
    pub id: SandboxId,
    /// The configuration it was created from.
    pub config: SandboxConfig,
    /// Its state.
    pub state: SandboxState,
    /// The pod IP, if it has one of its own.
    pub ip: Option<IpAddr>,
    /// When it was created.
    pub created_at: Timestamp,
}

/// A bind mount into a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// The directory or file on the host.
    pub host_path: PathBuf,
    /// Where it appears in the container.
    pub container_path: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Resource limits of a container, already converted from quantities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerResources {
    /// CPU request in millicores (sets CPU shares).
    pub cpu_request_millis: Option<u64>,
    /// CPU limit in millicores (sets the CFS quota).
    pub cpu_limit_millis: Option<u64>,
    /// Memory limit in bytes.
    pub memory_limit_bytes: Option<u64>,
}

/// The image a container runs, as the image store resolved it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ImageRef {
    /// The name the pod asked for.
    pub name: String,
    /// The root file system, when the store has one (the process runtime has none).
    pub rootfs: Option<PathBuf>,
    /// Entrypoint from the image configuration.
    pub entrypoint: Vec<String>,
    /// Default arguments from the image configuration.
    pub cmd: Vec<String>,
    /// Environment from the image configuration.
    pub env: Vec<(String, String)>,
    /// Working directory from the image configuration.
    pub working_dir: Option<String>,
}

/// Everything a container is created from. Env, command and mounts are fully resolved by the agent.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// The container's name in its pod.
    pub name: String,
    /// How many times this container was started before (the restart count).
    pub attempt: u32,
    /// The image.
    pub image: ImageRef,
    /// The entrypoint; empty uses the image's.
    pub command: Vec<String>,
    /// Arguments; empty (with empty `command`) uses the image's.
    pub args: Vec<String>,
    /// Environment variables in order.
    pub env: Vec<(String, String)>,
    /// Working directory; `None` uses the image's (or the runtime's) default.
    pub working_dir: Option<String>,
    /// Volume mounts.
    pub mounts: Vec<Mount>,
    /// CPU and memory limits.
    pub resources: ContainerResources,
    /// Mount the root file system read-only.
    pub read_only_rootfs: bool,
    /// User id to run as (`None`: the runtime's default).
    pub run_as_user: Option<u32>,
    /// Group id to run as (`runAsGroup`; `None`: the runtime's default).
    #[serde(default)]
    pub run_as_group: Option<u32>,
    /// Additional groups of the process (`supplementalGroups`, plus the pod's `fsGroup`).
    #[serde(default)]
    pub supplemental_groups: Vec<u32>,
    /// Keep a standard input open for attach sessions (the container's `stdin`); otherwise it
    /// reads end-of-file.
    #[serde(default)]
    pub stdin: bool,
    /// Close that standard input once the first attach session that used it detaches (`stdinOnce`).
    #[serde(default)]
    pub stdin_once: bool,
    /// Give the main process a terminal as its standard streams (`tty`); its output is one
    /// stream, logged as stdout.
    #[serde(default)]
    pub tty: bool,
    /// Labels kept with the container.
    pub labels: BTreeMap<String, String>,
    /// Annotations (the fake runtime reads its script here).
    pub annotations: BTreeMap<String, String>,
}

impl ContainerConfig {
    /// The program and arguments to run, following Kubernetes' rules for `command`, `args` and
    /// the image's entrypoint and cmd.
    pub fn argv(&self) -> Vec<String> {
        match (self.command.is_empty(), self.args.is_empty()) {
            (false, _) => self.command.iter().chain(&self.args).cloned().collect(),
            (true, false) => self.image.entrypoint.iter().chain(&self.args).cloned().collect(),
            (true, true) => self.image.entrypoint.iter().chain(&self.image.cmd).cloned().collect(),
        }
    }
}

/// The lifecycle state of a container (CRI's CREATED/RUNNING/EXITED/UNKNOWN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    /// Created, not started.
    Created,
    /// Its process runs.
    Running,
    /// Its process ended.
    Exited,
    /// The runtime lost track of it.
    Unknown,
}

/// What [`ContainerRuntime::container_status`] reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerStatus {
    /// The container.
    pub id: ContainerId,
    /// Its sandbox.
    pub sandbox_id: SandboxId,
    /// Its name in the pod.
    pub name: String,
    /// Its attempt (restart count when it was created).
    pub attempt: u32,
    /// The image name.
    pub image: String,
    /// Its state.
    pub state: ContainerState,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it started.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// Exit code once exited (128 + signal when a signal ended it).
    pub exit_code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// `Completed`, `Error`, `OOMKilled` or `ContainerStatusUnknown` once exited.
    pub reason: Option<String>,
    /// A human-readable detail.
    pub message: Option<String>,
    /// The log file, when the backend writes one.
    pub log_path: Option<PathBuf>,
    /// Labels from the config.
    pub labels: BTreeMap<String, String>,
}

impl ContainerStatus {
    /// The reason Kubernetes shows for an exit code.
    pub fn exit_reason(code: i32, oom: bool) -> &'static str {
        if oom {
            "OOMKilled"
        } else if code == 0 {
            "Completed"
        } else {
            "Error"
        }
    }
}

/// Filter for [`ContainerRuntime::list_containers`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerFilter {
    /// Only containers of this sandbox.
    pub sandbox_id: Option<SandboxId>,
    /// Only containers in this state.
    pub state: Option<ContainerState>,
}

impl ContainerFilter {
    /// Whether a container passes the filter; every backend's `list_containers` uses it.
    pub fn matches(&self, status: &ContainerStatus) -> bool {
        self.sandbox_id.as_ref().is_none_or(|sb| &status.sandbox_id == sb) && self.state.is_none_or(|st| status.state == st)
    }
}

/// What changed, in a [`RuntimeEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A container was created.
    Created,
    /// A container started.
    Started,
    /// A container's process ended.
    Exited,
    /// A container was removed.
    Removed,
    /// Events were lost (a slow reader): re-read the state of everything.
    Resync,
}

/// One change of container state, from [`ContainerRuntime::events`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeEvent {
    /// What happened.
    pub kind: EventKind,
    /// The sandbox of the container (empty for `Resync`).
    pub sandbox_id: SandboxId,
    /// The container (empty for `Resync`).
    pub container_id: ContainerId,
}

/// What [`ContainerRuntime::exec_sync`] returns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecResult {
    /// Exit code; -1 when the command was killed on its timeout.
    pub exit_code: i32,
    /// Standard output (capped at 16 MiB).
    pub stdout: Vec<u8>,
    /// Standard error (capped at 16 MiB).
    pub stderr: Vec<u8>,
    /// The timeout elapsed and the command was killed.
    pub timed_out: bool,
}

/// The most output `exec_sync` keeps per stream (CRI's cap).
pub const EXEC_OUTPUT_CAP: usize = 16 * 1024 * 1024;

/// A streaming exec session (for `kubectl exec`): pipes and the exit code.
pub struct ExecSession {
    /// The command's standard input.
    pub stdin: Pin<Box<dyn AsyncWrite + Send>>,
    /// The command's standard output.
    pub stdout: Pin<Box<dyn AsyncRead + Send>>,
    /// The command's standard error.
    pub stderr: Pin<Box<dyn AsyncRead + Send>>,
    /// Resolves to the exit code when the command ends.
    pub exit: BoxFuture<'static, Result<i32>>,
    /// Applies a terminal size, for a session with a terminal ([`ContainerRuntime::exec_tty`]);
    /// `None` for plain pipes.
    pub resize: Option<Resize>,
}

/// An attach session to a container's main process (for `kubectl attach` and `kubectl run -it`),
/// from [`ContainerRuntime::attach`]: its output from now on, ending when the container exits.
/// Several sessions may be attached at once; they share the one stdin.
pub struct AttachSession {
    /// Writes to the container's stdin; `None` when it has none (no `stdin`, or `stdinOnce` and
    /// an earlier session closed it). Shutting it down (or dropping the session) detaches:
    /// stdin stays open for later sessions unless the container has `stdinOnce`.
    pub stdin: Option<Pin<Box<dyn AsyncWrite + Send>>>,
    /// The container's stdout (its terminal, with `tty`).
    pub stdout: Pin<Box<dyn AsyncRead + Send>>,
    /// The container's stderr (empty with `tty`).
    pub stderr: Pin<Box<dyn AsyncRead + Send>>,
    /// The container has a terminal.
    pub tty: bool,
    /// Resizes the container's terminal; `None` without one.
    pub resize: Option<Resize>,
}

impl fmt::Debug for AttachSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttachSession").field("stdin", &self.stdin.is_some()).field("tty", &self.tty).finish_non_exhaustive()
    }
}

/// A terminal size in character cells, as `kubectl exec -t` sends it (channel 4 of
/// `channel.k8s.io`: `{"Width":..,"Height":..}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TerminalSize {
    /// Columns.
    pub width: u16,
    /// Rows.
    pub height: u16,
}

/// Resizes the terminal of an exec session (the command gets `SIGWINCH`).
pub type Resize = std::sync::Arc<dyn Fn(TerminalSize) -> Result<()> + Send + Sync>;

impl fmt::Debug for ExecSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecSession").finish_non_exhaustive()
    }
}

/// How to read a container's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep streaming until the container exits.
    pub follow: bool,
    /// Only the last this many lines.
    pub tail_lines: Option<u64>,
    /// Prefix each line with its RFC 3339 timestamp.
    pub timestamps: bool,
    /// Only lines at or after this time.
    pub since: Option<Timestamp>,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
}

/// A stream of log bytes.
pub type LogByteStream = BoxStream<'static, Result<bytes::Bytes>>;

/// Usage of one container, for the metrics API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerStats {
    /// CPU time used since the container started, in nanoseconds.
    pub cpu_usage_nanos: u64,
    /// Memory in use (working set), in bytes.
    pub memory_working_set_bytes: u64,
}

/// What the backend is, for the Node's `nodeInfo.containerRuntimeVersion`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuntimeVersion {
    /// Backend name (`process`, `runc`, `fake`).
    pub name: String,
    /// Its version.
    pub version: String,
}

impl fmt::Display for RuntimeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.name, self.version)
    }
}

/// A container runtime, shaped after the CRI `RuntimeService` plus Nomad's `RecoverTask` and
/// `Capabilities`. Lifecycle policy (restarts, probes, ordering, volumes) lives in the node agent,
/// not here. Object-safe: hold it as `Arc<dyn ContainerRuntime>`.
#[async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
    /// The backend's name and version.
    fn version(&self) -> RuntimeVersion;

    /// What this backend supports.
    fn capabilities(&self) -> Capabilities;

    /// Creates a pod sandbox and makes it ready (network, IP).
    async fn run_sandbox(&self, config: &SandboxConfig) -> Result<SandboxId>;

    /// Stops a sandbox: kills its containers and tears its network down. Idempotent.
    async fn stop_sandbox(&self, id: &SandboxId) -> Result<()>;

    /// Removes a sandbox and its containers. Idempotent: a missing sandbox is not an error.
    async fn remove_sandbox(&self, id: &SandboxId) -> Result<()>;

    /// The state of one sandbox.
    async fn sandbox_status(&self, id: &SandboxId) -> Result<SandboxStatus>;

    /// Every sandbox the runtime knows.
    async fn list_sandboxes(&self) -> Result<Vec<SandboxStatus>>;

    /// Creates a container in a sandbox without starting it.
    async fn create_container(&self, sandbox: &SandboxId, config: &ContainerConfig) -> Result<ContainerId>;

    /// Starts a created container.
    async fn start_container(&self, id: &ContainerId) -> Result<()>;

    /// Stops a container: `SIGTERM`, then `SIGKILL` once `grace` has passed (a zero grace kills at
    /// once). Returns when the container has exited. Idempotent.
    async fn stop_container(&self, id: &ContainerId, grace: Duration) -> Result<()>;

    /// Sends a signal (a Linux signal number) to a running container.
    async fn signal_container(&self, id: &ContainerId, signal: i32) -> Result<()>;

    /// Removes a stopped container and its log. Idempotent.
    async fn remove_container(&self, id: &ContainerId) -> Result<()>;

    /// The state of one container.
    async fn container_status(&self, id: &ContainerId) -> Result<ContainerStatus>;

    /// Containers matching a filter (the fallback to the event stream).
    async fn list_containers(&self, filter: &ContainerFilter) -> Result<Vec<ContainerStatus>>;

    /// A stream of container state changes. Each call subscribes anew.
    fn events(&self) -> BoxStream<'static, RuntimeEvent>;

    /// Runs a command in a running container and collects its output; kills it when `timeout` passes.
    async fn exec_sync(&self, id: &ContainerId, cmd: &[String], timeout: Duration) -> Result<ExecResult>;

    /// Runs a command in a running container with streaming stdio (for `kubectl exec`).
    async fn exec(&self, id: &ContainerId, cmd: &[String]) -> Result<ExecSession> {
        let _ = (id, cmd);
        Err(crate::RuntimeError::Unsupported("streaming exec".into()))
    }

    /// Starts a command in a running container on a new pseudo-terminal of `size` (its
    /// controlling terminal, so line editing, echo and ^C work): `stdout` reads the terminal (the
    /// command's stdout and stderr), `stdin` writes to it (shutting it down sends end-of-file,
    /// ^D), `stderr` is empty, and `resize` changes the size. `TERM` is `xterm` unless the
    /// container sets it. Dropping the session stops the command.
    async fn exec_tty(&self, id: &ContainerId, cmd: &[String], size: Option<TerminalSize>) -> Result<ExecSession> {
        let _ = (id, cmd, size);
        Err(crate::RuntimeError::Unsupported("exec with a terminal".into()))
    }

    /// Attaches to a running container's main process ([`AttachSession`]), setting its terminal
    /// (if it has one) to `size` first. Backends without it say so in
    /// [`Capabilities::attach`].
    async fn attach(&self, id: &ContainerId, size: Option<TerminalSize>) -> Result<AttachSession> {
        let _ = (id, size);
        Err(crate::RuntimeError::Unsupported("attach".into()))
    }

    /// Reads a container's log (the container may have exited but not been removed).
    async fn logs(&self, id: &ContainerId, options: &LogOptions) -> Result<LogByteStream>;

    /// CPU and memory usage of a running container.
    async fn stats(&self, id: &ContainerId) -> Result<ContainerStats>;

    /// Re-attaches to the sandboxes and containers a previous instance of the agent left behind
    /// (from the runtime's state directory); returns what it found.
    async fn recover(&self) -> Result<Vec<ContainerStatus>>;

    /// Answers a network (HTTP or TCP) probe itself instead of letting the agent connect to the
    /// pod IP; backends without real networking (the fake) override this. `None`: probe for real.
    async fn probe_network(&self, id: &ContainerId, port: u16) -> Option<bool> {
        let _ = (id, port);
        None
    }
}
