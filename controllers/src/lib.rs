//! bosun-controllers: the controller runtime (work queue, reconcile loop, finalizers, events, leader
//! election, metrics), a deterministic test harness, and the built-in controllers.
//!
//! Start with [`runtime::Controller`] to write a controller; [`ControllerManager`] starts the
//! built-ins on one client; [`harness::Harness`] runs controllers on a virtual clock in tests.

pub mod builtin;
pub mod clock;
pub mod harness;
pub mod manager;
pub mod runtime;

pub use harness::Harness;
pub use manager::{ControllerManager, ManagerConfig};
pub use runtime::{Action, Controller, Metrics, QueueConfig, WorkQueue, backoff_policy};
