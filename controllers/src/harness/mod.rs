//! The deterministic test harness: controllers against any `Client` (typically the in-process
//! store) on tokio's paused clock, with fault injection and [`Harness::run_until_quiescent`].
//!
//! Use it from `#[tokio::test(start_paused = true)]`: virtual time then jumps over every sleep,
//! backoff and requeue, so a test of minutes of controller time takes milliseconds.

pub mod fault;
pub mod kubelet;

pub use fault::{Faults, FaultyClient, Verb};

use crate::runtime::{Controller, Metrics};
use bosun_core::watch::Informers;
use bosun_core::{Api, Client, Object};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The harness did not settle in time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("controllers still busy after {waited:?} of virtual time: {busy}")]
pub struct NotQuiescentError {
    /// How long it waited.
    pub waited: Duration,
    /// What was still busy.
    pub busy: String,
}

/// Controllers under test, sharing one fault-injecting client, informers and metrics.
pub struct Harness {
    client: Arc<dyn Client>,
    faults: Faults,
    informers: Informers,
    metrics: Metrics,
    tasks: Vec<JoinHandle<()>>,
    /// Keys due further out than this do not count as pending work (default 1 s).
    horizon: Duration,
}

impl Drop for Harness {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Harness {
    /// A harness over `inner` (wrapped in a [`FaultyClient`]).
    pub fn new(inner: Arc<dyn Client>) -> Self {
        let (client, faults) = Faults::wrap(inner);
        let client: Arc<dyn Client> = client;
        Self {
            informers: Informers::new(client.clone()),
            client,
            faults,
            metrics: Metrics::new(),
            tasks: Vec::new(),
            horizon: Duration::from_secs(1),
        }
    }

    /// Sets how far ahead a scheduled requeue still counts as pending work (default 1 s).
    #[must_use]
    pub fn horizon(mut self, horizon: Duration) -> Self {
        self.horizon = horizon;
        self
    }

    /// The fault-injecting client controllers should use.
    pub fn client(&self) -> Arc<dyn Client> {
        self.client.clone()
    }

    /// The fault script.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The shared informers.
    pub fn informers(&self) -> &Informers {
        &self.informers
    }

    /// The shared metrics registry (quiescence reads its queues).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// A controller wired to the harness's informers and metrics.
    pub fn controller<K: Object>(&self, api: Api<K>) -> Controller<K> {
        Controller::new(api).informers(&self.informers).metrics(&self.metrics)
    }

    /// Runs a task (a controller's `run` future) until the harness is dropped.
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push(tokio::spawn(task));
    }

    /// Starts the built-in controllers on the harness's client.
    pub fn start_builtins(&mut self, config: crate::manager::ManagerConfig) {
        let manager =
            crate::manager::ControllerManager::new(self.client.clone()).informers(&self.informers).metrics(&self.metrics).config(config);
        self.tasks.extend(manager.spawn_all());
    }

    /// Starts the simulated kubelet (pods become running and ready with an IP; terminating pods go).
    pub fn start_kubelet(&mut self) {
        let run = kubelet::simulated(self.controller(Api::all(self.client.clone())));
        self.spawn(run);
    }

    /// Runs until every watch is synced, no controller has work due within the horizon and no
    /// request is in flight, for three consecutive checks; fails after ten minutes of virtual time
    /// (naming what was still busy). Needs paused time to be deterministic.
    pub async fn run_until_quiescent(&self) -> Result<Duration, NotQuiescentError> {
        self.run_until_quiescent_within(Duration::from_secs(600)).await
    }

    /// [`run_until_quiescent`](Self::run_until_quiescent) with a virtual-time limit.
    pub async fn run_until_quiescent_within(&self, limit: Duration) -> Result<Duration, NotQuiescentError> {
        let start = Instant::now();
        let mut calm = 0;
        while calm < 3 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let synced = self.metrics.not_ready().is_empty();
            if synced && self.faults.in_flight() == 0 && self.metrics.is_idle(self.horizon) {
                calm += 1;
            } else {
                calm = 0;
            }
            if start.elapsed() > limit {
                return Err(NotQuiescentError { waited: start.elapsed(), busy: self.busy() });
            }
        }
        Ok(start.elapsed())
    }

    /// Runs until `done` holds, checking every millisecond of virtual time; fails after `limit`.
    pub async fn run_until(&self, limit: Duration, mut done: impl FnMut() -> bool) -> Result<Duration, NotQuiescentError> {
        let start = Instant::now();
        while !done() {
            if start.elapsed() > limit {
                return Err(NotQuiescentError { waited: start.elapsed(), busy: self.busy() });
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(start.elapsed())
    }

    fn busy(&self) -> String {
        let mut parts = Vec::new();
        for name in self.metrics.names() {
            let q = self.metrics.controller(&name).queue();
            if q.running > 0 || q.next_due.is_some_and(|d| d <= self.horizon) {
                parts.push(format!("{name}: {} running, {} queued", q.running, q.queued));
            }
        }
        for (c, r, s) in self.metrics.not_ready() {
            parts.push(format!("{c} watch {r}: {s:?}"));
        }
        if self.faults.in_flight() > 0 {
            parts.push(format!("{} requests in flight", self.faults.in_flight()));
        }
        parts.join("; ")
    }
}
