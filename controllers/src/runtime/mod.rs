//! The controller runtime: the work queue, the reconcile loop and its builder, finalizers, events,
//! leader election and metrics.

pub mod controller;
pub mod events;
pub mod finalizer;
pub mod leader;
pub mod metrics;
pub mod queue;

pub use controller::{Action, Controller, backoff_policy};
pub use events::{EventData, EventType, Recorder};
pub use finalizer::{FinalizerError, FinalizerEvent, finalizer};
pub use leader::{FencingToken, LeaderElector, LeaseConfig};
pub use metrics::{ControllerMetrics, Metrics};
pub use queue::{Outcome, QueueConfig, QueueStats, WorkQueue};
