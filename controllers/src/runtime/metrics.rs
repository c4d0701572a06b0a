//! Metrics and readiness: reconcile counts, errors and durations, queue depth and age, and the
//! state of every watch a controller depends on, rendered as Prometheus text.

use super::queue::QueueStats;
use bosun_core::watch::ReflectorState;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds (seconds) of the reconcile duration histogram buckets.
pub const DURATION_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

type QueueProbe = Arc<dyn Fn() -> QueueStats + Send + Sync>;
type WatchProbe = Arc<dyn Fn() -> ReflectorState + Send + Sync>;

/// The counters of one controller.
#[derive(Default)]
pub struct ControllerMetrics {
    reconciles: AtomicU64,
    errors: AtomicU64,
    duration_micros: AtomicU64,
    buckets: [AtomicU64; DURATION_BUCKETS.len()],
    queue: Mutex<Option<QueueProbe>>,
    watches: Mutex<Vec<(String, WatchProbe)>>,
}

impl std::fmt::Debug for ControllerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerMetrics").field("reconciles", &self.reconciles()).field("errors", &self.errors()).finish()
    }
}

impl ControllerMetrics {
    /// Records one reconcile.
    pub fn observe(&self, took: Duration, failed: bool) {
        self.reconciles.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.duration_micros.fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
        let secs = took.as_secs_f64();
        for (bound, bucket) in DURATION_BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Reconciles run so far.
    pub fn reconciles(&self) -> u64 {
        self.reconciles.load(Ordering::Relaxed)
    }

    /// Reconciles that failed.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Total time spent reconciling.
    pub fn duration_total(&self) -> Duration {
        Duration::from_micros(self.duration_micros.load(Ordering::Relaxed))
    }

    /// The controller's queue counters (default when it has no queue yet).
    pub fn queue(&self) -> QueueStats {
        let probe = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        probe.map(|p| p()).unwrap_or_default()
    }

    /// The state of each watch the controller depends on, by resource.
    pub fn watches(&self) -> Vec<(String, ReflectorState)> {
        let probes = self.watches.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        probes.iter().map(|(name, p)| (name.clone(), p())).collect()
    }

    /// Whether every watch is synced.
    pub fn is_ready(&self) -> bool {
        self.watches().iter().all(|(_, s)| *s == ReflectorState::Ready)
    }

    /// Attaches the queue whose counters this reports.
    pub fn set_queue(&self, probe: impl Fn() -> QueueStats + Send + Sync + 'static) {
        *self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(probe));
    }

    /// Attaches a watch whose state this reports.
    pub fn add_watch(&self, resource: impl Into<String>, probe: impl Fn() -> ReflectorState + Send + Sync + 'static) {
        self.watches.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((resource.into(), Arc::new(probe)));
    }
}

/// A registry of controller metrics, shared by a manager's controllers; cheap to clone.
#[derive(Clone, Default)]
pub struct Metrics {
    controllers: Arc<Mutex<BTreeMap<String, Arc<ControllerMetrics>>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("controllers", &self.names()).finish()
    }
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counters of a controller, created on first use.
    pub fn controller(&self, name: &str) -> Arc<ControllerMetrics> {
        let mut map = self.controllers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(name.to_owned()).or_default().clone()
    }

    /// The registered controllers' names.
    pub fn names(&self) -> Vec<String> {
        self.controllers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).keys().cloned().collect()
    }

    fn all(&self) -> Vec<(String, Arc<ControllerMetrics>)> {
        self.controllers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Whether no controller runs a key or has one due within `horizon`.
    pub fn is_idle(&self, horizon: Duration) -> bool {
        self.all().iter().all(|(_, m)| {
            let q = m.queue();
            q.running == 0 && q.next_due.is_none_or(|d| d > horizon)
        })
    }

    /// Every watch that is not synced, as `(controller, resource, state)`: what a readiness probe reports.
    pub fn not_ready(&self) -> Vec<(String, String, ReflectorState)> {
        let mut out = Vec::new();
        for (name, m) in self.all() {
            for (resource, state) in m.watches() {
                if state != ReflectorState::Ready {
                    out.push((name.clone(), resource, state));
                }
            }
        }
        out
    }

    /// The metrics in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let all = self.all();
        let _ = writeln!(out, "# TYPE bosun_controller_reconcile_total counter");
        for (name, m) in &all {
            let _ = writeln!(out, "bosun_controller_reconcile_total{{controller=\"{name}\"}} {}", m.reconciles());
        }
        let _ = writeln!(out, "# TYPE bosun_controller_reconcile_errors_total counter");
        for (name, m) in &all {
            let _ = writeln!(out, "bosun_controller_reconcile_errors_total{{controller=\"{name}\"}} {}", m.errors());
        }
        let _ = writeln!(out, "# TYPE bosun_controller_reconcile_duration_seconds histogram");
        for (name, m) in &all {
            for (bound, bucket) in DURATION_BUCKETS.iter().zip(&m.buckets) {
                let _ = writeln!(
                    out,
                    "bosun_controller_reconcile_duration_seconds_bucket{{controller=\"{name}\",le=\"{bound}\"}} {}",
                    bucket.load(Ordering::Relaxed)
                );
            }
            let _ =
                writeln!(out, "bosun_controller_reconcile_duration_seconds_bucket{{controller=\"{name}\",le=\"+Inf\"}} {}", m.reconciles());
            let _ = writeln!(
                out,
                "bosun_controller_reconcile_duration_seconds_sum{{controller=\"{name}\"}} {}",
                m.duration_total().as_secs_f64()
            );
            let _ = writeln!(out, "bosun_controller_reconcile_duration_seconds_count{{controller=\"{name}\"}} {}", m.reconciles());
        }
        let _ = writeln!(out, "# TYPE bosun_workqueue_depth gauge");
        for (name, m) in &all {
            let _ = writeln!(out, "bosun_workqueue_depth{{controller=\"{name}\"}} {}", m.queue().queued);
        }
        let _ = writeln!(out, "# TYPE bosun_workqueue_oldest_seconds gauge");
        for (name, m) in &all {
            let _ = writeln!(out, "bosun_workqueue_oldest_seconds{{controller=\"{name}\"}} {}", m.queue().oldest.as_secs_f64());
        }
        let _ = writeln!(out, "# TYPE bosun_workqueue_retrying gauge");
        for (name, m) in &all {
            let _ = writeln!(out, "bosun_workqueue_retrying{{controller=\"{name}\"}} {}", m.queue().retrying);
        }
        let _ = writeln!(out, "# TYPE bosun_controller_watch_ready gauge");
        for (name, m) in &all {
            for (resource, state) in m.watches() {
                let ready = u8::from(state == ReflectorState::Ready);
                let _ = writeln!(
                    out,
                    "bosun_controller_watch_ready{{controller=\"{name}\",resource=\"{resource}\",state=\"{state:?}\"}} {ready}"
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_feed_counters_and_the_histogram() {
        let metrics = Metrics::new();
        let m = metrics.controller("web");
        m.observe(Duration::from_millis(2), false);
        m.observe(Duration::from_millis(200), true);
        assert_eq!((m.reconciles(), m.errors()), (2, 1));
        let text = metrics.render();
        assert!(text.contains("bosun_controller_reconcile_total{controller=\"web\"} 2"), "{text}");
        assert!(text.contains("bosun_controller_reconcile_errors_total{controller=\"web\"} 1"));
        assert!(text.contains("le=\"0.005\"} 1"));
        assert!(text.contains("le=\"0.25\"} 2"));
    }

    #[test]
    fn readiness_names_the_watch_that_is_not_synced() {
        let metrics = Metrics::new();
        let m = metrics.controller("web");
        m.add_watch("apps/deployments", || ReflectorState::Ready);
        m.add_watch("example.com/widgets", || ReflectorState::KindMissing { message: "no such kind".into() });
        assert!(!m.is_ready());
        let missing = metrics.not_ready();
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].1, "example.com/widgets");
    }
}
