//! The container runtime trait with its backends, and the node agent that runs pods on a node.
//!
//! Start with [`ContainerRuntime`] (the CRI-shaped backend trait) and its backends:
//! [`ProcessRuntime`] (host processes, no privileges), [`RuncRuntime`] (OCI containers through
//! `runc` with CNI networking; root) and [`FakeRuntime`] (scripted, for scale simulation). Images
//! sit behind [`ImageStore`]. The [`agent`] module is the kubelet's job: it registers a Node,
//! heartbeats a Lease and runs the pods bound to it over any runtime, talking to the API only
//! through `bosun_core::Client`.

pub mod agent;
mod attach;
pub mod cni;
pub mod conformance;
pub mod cri;
pub mod error;
pub mod fake;
pub mod image;
mod launch;
pub mod layer;
pub mod logs;
pub mod process;
pub mod runc;
pub mod sys;
mod table;

pub use agent::{NodeAgent, NodeAgentConfig, NodeHandle};
pub use cri::{
    AttachSession, Capabilities, ContainerConfig, ContainerFilter, ContainerId, ContainerRuntime, ContainerState, ContainerStats,
    ContainerStatus, EventKind, ExecResult, ExecSession, LogOptions, Mount, RuntimeEvent, SandboxConfig, SandboxId, SandboxState,
    SandboxStatus,
};
pub use error::{Result, RuntimeError};
pub use fake::{FakeRuntime, FakeScript};
pub use image::{HostImages, ImageStore, LocalImageStore};
pub use process::ProcessRuntime;
pub use runc::RuncRuntime;
