//! Runtime layers: behaviour around the calls of any [`ContainerRuntime`] (an admission policy,
//! metrics, fault injection) written once, as one [`RuntimeLayer::call`], instead of a delegating
//! implementation of every method per wrapper. The runtime counterpart of `bosun_core::layer`.
//!
//! ```
//! use bosun_runtime::layer::{LayeredRuntime, RuntimeCall, RuntimeLayer};
//! use bosun_runtime::{FakeRuntime, Result, RuntimeError};
//! use futures::future::BoxFuture;
//!
//! /// Refuses privileged work on Sundays.
//! struct NoSundays;
//!
//! impl RuntimeLayer for NoSundays {
//!     fn call<'a, T: Send + 'a>(&'a self, call: RuntimeCall<'a>, next: BoxFuture<'a, Result<T>>) -> BoxFuture<'a, Result<T>> {
//!         let sunday = false; // a real layer would look at the clock
//!         match call {
//!             RuntimeCall::CreateContainer { .. } if sunday => Box::pin(async { Err(RuntimeError::Invalid("closed on Sundays".into())) }),
//!             _ => next,
//!         }
//!     }
//! }
//! let runtime = LayeredRuntime::new(FakeRuntime::new(), NoSundays);
//! # let _ = runtime;
//! ```

use crate::Result;
use crate::cri::{
    AttachSession, Capabilities, ContainerConfig, ContainerFilter, ContainerId, ContainerRuntime, ContainerStats, ContainerStatus,
    ExecResult, ExecSession, LogByteStream, LogOptions, RuntimeEvent, RuntimeVersion, SandboxConfig, SandboxId, SandboxStatus,
    TerminalSize,
};
use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use std::time::Duration;

/// One call through a [`LayeredRuntime`], with what it was asked.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum RuntimeCall<'a> {
    /// `run_sandbox`.
    RunSandbox(&'a SandboxConfig),
    /// `stop_sandbox`.
    StopSandbox(&'a SandboxId),
    /// `remove_sandbox`.
    RemoveSandbox(&'a SandboxId),
    /// `sandbox_status`.
    SandboxStatus(&'a SandboxId),
    /// `list_sandboxes`.
    ListSandboxes,
    /// `create_container`.
    CreateContainer {
        /// The sandbox.
        sandbox: &'a SandboxId,
        /// The container's configuration (image, command, mounts...).
        config: &'a ContainerConfig,
    },
    /// `start_container`.
    StartContainer(&'a ContainerId),
    /// `stop_container` with its grace period.
    StopContainer(&'a ContainerId, Duration),
    /// `signal_container` with the signal.
    SignalContainer(&'a ContainerId, i32),
    /// `remove_container`.
    RemoveContainer(&'a ContainerId),
    /// `container_status`.
    ContainerStatus(&'a ContainerId),
    /// `list_containers`.
    ListContainers(&'a ContainerFilter),
    /// `exec_sync`, `exec` and `exec_tty`, with the command.
    Exec(&'a ContainerId, &'a [String]),
    /// `attach`.
    Attach(&'a ContainerId),
    /// `logs`.
    Logs(&'a ContainerId),
    /// `stats`.
    Stats(&'a ContainerId),
    /// `recover`.
    Recover,
}

impl RuntimeCall<'_> {
    /// The method's name (`create_container`; `exec` for all three exec calls).
    pub fn name(&self) -> &'static str {
        match self {
            Self::RunSandbox(_) => "run_sandbox",
            Self::StopSandbox(_) => "stop_sandbox",
            Self::RemoveSandbox(_) => "remove_sandbox",
            Self::SandboxStatus(_) => "sandbox_status",
            Self::ListSandboxes => "list_sandboxes",
            Self::CreateContainer { .. } => "create_container",
            Self::StartContainer(_) => "start_container",
            Self::StopContainer(..) => "stop_container",
            Self::SignalContainer(..) => "signal_container",
            Self::RemoveContainer(_) => "remove_container",
            Self::ContainerStatus(_) => "container_status",
            Self::ListContainers(_) => "list_containers",
            Self::Exec(..) => "exec",
            Self::Attach(_) => "attach",
            Self::Logs(_) => "logs",
            Self::Stats(_) => "stats",
            Self::Recover => "recover",
        }
    }
}

/// Behaviour around the calls of a wrapped runtime; see the [module docs](self).
pub trait RuntimeLayer: Send + Sync + 'static {
    /// Runs one call. `next` is the wrapped runtime's call, not yet started: a layer may act
    /// before and after awaiting it, or answer without it. The default runs it as is.
    /// (`version`, `capabilities`, `events` and `probe_network` pass through unlayered.)
    fn call<'a, T: Send + 'a>(&'a self, call: RuntimeCall<'a>, next: BoxFuture<'a, Result<T>>) -> BoxFuture<'a, Result<T>> {
        let _ = call;
        next
    }
}

/// A [`ContainerRuntime`] that runs every call of another one through a [`RuntimeLayer`].
pub struct LayeredRuntime<R, L> {
    inner: R,
    layer: L,
}

impl<R: ContainerRuntime, L: RuntimeLayer> LayeredRuntime<R, L> {
    /// Wraps `inner` in `layer`.
    pub fn new(inner: R, layer: L) -> Self {
        Self { inner, layer }
    }

    /// The layer (for what it recorded).
    pub fn layer(&self) -> &L {
        &self.layer
    }

    /// The wrapped runtime.
    pub fn inner(&self) -> &R {
        &self.inner
    }
}

#[async_trait]
impl<R: ContainerRuntime, L: RuntimeLayer> ContainerRuntime for LayeredRuntime<R, L> {
    fn version(&self) -> RuntimeVersion {
        self.inner.version()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn run_sandbox(&self, config: &SandboxConfig) -> Result<SandboxId> {
        self.layer.call(RuntimeCall::RunSandbox(config), self.inner.run_sandbox(config)).await
    }

    async fn stop_sandbox(&self, id: &SandboxId) -> Result<()> {
        self.layer.call(RuntimeCall::StopSandbox(id), self.inner.stop_sandbox(id)).await
    }

    async fn remove_sandbox(&self, id: &SandboxId) -> Result<()> {
        self.layer.call(RuntimeCall::RemoveSandbox(id), self.inner.remove_sandbox(id)).await
    }

    async fn sandbox_status(&self, id: &SandboxId) -> Result<SandboxStatus> {
        self.layer.call(RuntimeCall::SandboxStatus(id), self.inner.sandbox_status(id)).await
    }

    async fn list_sandboxes(&self) -> Result<Vec<SandboxStatus>> {
        self.layer.call(RuntimeCall::ListSandboxes, self.inner.list_sandboxes()).await
    }

    async fn create_container(&self, sandbox: &SandboxId, config: &ContainerConfig) -> Result<ContainerId> {
        self.layer.call(RuntimeCall::CreateContainer { sandbox, config }, self.inner.create_container(sandbox, config)).await
    }

    async fn start_container(&self, id: &ContainerId) -> Result<()> {
        self.layer.call(RuntimeCall::StartContainer(id), self.inner.start_container(id)).await
    }

    async fn stop_container(&self, id: &ContainerId, grace: Duration) -> Result<()> {
        self.layer.call(RuntimeCall::StopContainer(id, grace), self.inner.stop_container(id, grace)).await
    }

    async fn signal_container(&self, id: &ContainerId, signal: i32) -> Result<()> {
        self.layer.call(RuntimeCall::SignalContainer(id, signal), self.inner.signal_container(id, signal)).await
    }

    async fn remove_container(&self, id: &ContainerId) -> Result<()> {
        self.layer.call(RuntimeCall::RemoveContainer(id), self.inner.remove_container(id)).await
    }

    async fn container_status(&self, id: &ContainerId) -> Result<ContainerStatus> {
        self.layer.call(RuntimeCall::ContainerStatus(id), self.inner.container_status(id)).await
    }

    async fn list_containers(&self, filter: &ContainerFilter) -> Result<Vec<ContainerStatus>> {
        self.layer.call(RuntimeCall::ListContainers(filter), self.inner.list_containers(filter)).await
    }

    fn events(&self) -> BoxStream<'static, RuntimeEvent> {
        self.inner.events()
    }

    async fn exec_sync(&self, id: &ContainerId, cmd: &[String], timeout: Duration) -> Result<ExecResult> {
        self.layer.call(RuntimeCall::Exec(id, cmd), self.inner.exec_sync(id, cmd, timeout)).await
    }

    async fn exec(&self, id: &ContainerId, cmd: &[String]) -> Result<ExecSession> {
        self.layer.call(RuntimeCall::Exec(id, cmd), self.inner.exec(id, cmd)).await
    }

    async fn exec_tty(&self, id: &ContainerId, cmd: &[String], size: Option<TerminalSize>) -> Result<ExecSession> {
        self.layer.call(RuntimeCall::Exec(id, cmd), self.inner.exec_tty(id, cmd, size)).await
    }

    async fn attach(&self, id: &ContainerId, size: Option<TerminalSize>) -> Result<AttachSession> {
        self.layer.call(RuntimeCall::Attach(id), self.inner.attach(id, size)).await
    }

    async fn logs(&self, id: &ContainerId, options: &LogOptions) -> Result<LogByteStream> {
        self.layer.call(RuntimeCall::Logs(id), self.inner.logs(id, options)).await
    }

    async fn stats(&self, id: &ContainerId) -> Result<ContainerStats> {
        self.layer.call(RuntimeCall::Stats(id), self.inner.stats(id)).await
    }

    async fn recover(&self) -> Result<Vec<ContainerStatus>> {
        self.layer.call(RuntimeCall::Recover, self.inner.recover()).await
    }

    async fn probe_network(&self, id: &ContainerId, port: u16) -> Option<bool> {
        self.inner.probe_network(id, port).await
    }
}
