//! bosun-scheduler: kube-scheduler's scheduling framework as a library: one trait per extension
//! point, the default plugins with Kubernetes' semantics and weights, the scheduling queue, the
//! cache with assumed pods and incremental snapshots, preemption, and binding through
//! [`bosun_core::Client`].
//!
//! Start with [`Scheduler::builder`] (profiles, then `run`), then [`framework`] to write a plugin.

pub mod cache;
pub mod error;
pub mod framework;
pub mod node_info;
pub mod plugins;
pub mod pod_info;
pub mod queue;
pub mod resources;
pub mod scheduler;
pub mod snapshot;
mod writes;

pub use error::{Error, Result};
pub use framework::{Framework, Profile, Status};
pub use node_info::NodeInfo;
pub use pod_info::PodInfo;
pub use scheduler::{Running, Scheduler, SchedulerBuilder, SchedulerStats};
pub use snapshot::Snapshot;

/// The `schedulerName` of pods that name none.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";
