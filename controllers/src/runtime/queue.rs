//! The work queue: deduplicated keys, never the same key twice at once, per-key exponential
//! backoff on errors, a global retry rate limit, and the counters metrics read.
//!
//! Invariants: a key is either idle, queued (with a due time), running, or running and dirty (a
//! change arrived while it ran; it is queued again when the run ends). Triggers that arrive while a
//! key waits out its backoff are coalesced into the pending retry and never count as failures.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Settings of a [`WorkQueue`].
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// First retry delay after an error (default 5 ms); it doubles with each consecutive failure.
    pub backoff_base: Duration,
    /// The longest retry delay (default 1000 s).
    pub backoff_max: Duration,
    /// Retries allowed per second across all keys (default 10).
    pub retry_qps: f64,
    /// Retries allowed in a burst (default 100).
    pub retry_burst: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self { backoff_base: Duration::from_millis(5), backoff_max: Duration::from_secs(1000), retry_qps: 10.0, retry_burst: 100 }
    }
}

impl QueueConfig {
    /// The per-key delay after `failures` consecutive failures: base doubling, capped.
    pub fn backoff(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 1u64.checked_shl(failures.saturating_sub(1).min(63)).unwrap_or(u64::MAX);
        let nanos = (self.backoff_base.as_nanos() as u64).saturating_mul(factor);
        Duration::from_nanos(nanos).min(self.backoff_max)
    }
}

/// How a run of a key ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Success: forget the key's failures; run again after this delay if set.
    Success(Option<Duration>),
    /// Failure retried after the per-key exponential backoff (and the global rate limit).
    Backoff,
    /// Failure retried after exactly this delay (failures still count for later backoffs).
    RetryAfter(Duration),
    /// Failure not retried until the next change (which waits out the backoff).
    AwaitChange,
    /// The object is gone: forget the key entirely.
    Forget,
}

/// A snapshot of a queue's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Keys waiting to run (due now or later).
    pub queued: usize,
    /// Keys due now and not running.
    pub due: usize,
    /// Keys running.
    pub running: usize,
    /// Keys retrying after a failure.
    pub retrying: usize,
    /// How long the oldest queued key has waited since it was first queued.
    pub oldest: Duration,
    /// The earliest due time of a queued key, from now (zero when one is due).
    pub next_due: Option<Duration>,
}

#[derive(Debug, Default)]
struct Entry {
    /// The due time and sequence number while queued.
    slot: Option<(Instant, u64)>,
    running: bool,
    dirty: bool,
    failures: u32,
    not_before: Option<Instant>,
    queued_since: Option<Instant>,
}

struct Inner<T> {
    entries: HashMap<T, Entry>,
    schedule: BTreeMap<(Instant, u64), T>,
    seq: u64,
    running: usize,
    tokens: f64,
    refilled: Instant,
}

/// A deduplicating, rate-limited work queue of keys (see the module documentation).
pub struct WorkQueue<T> {
    inner: Mutex<Inner<T>>,
    notify: Notify,
    config: QueueConfig,
}

impl<T: Clone + Eq + Hash + Send> WorkQueue<T> {
    /// An empty queue.
    pub fn new(config: QueueConfig) -> Self {
        let inner = Inner {
            entries: HashMap::new(),
            schedule: BTreeMap::new(),
            seq: 0,
            running: 0,
            tokens: f64::from(config.retry_burst),
            refilled: Instant::now(),
        };
        Self { inner: Mutex::new(inner), notify: Notify::new(), config }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a key now (or when its backoff ends); a key already queued earlier is left alone,
    /// a running key runs again once it finishes.
    pub fn add(&self, key: T) {
        let now = Instant::now();
        let mut inner = self.lock();
        let entry = inner.entries.entry(key.clone()).or_default();
        if entry.running {
            entry.dirty = true;
            return;
        }
        let at = entry.not_before.map_or(now, |nb| nb.max(now));
        inner.schedule_at(key, at, now);
        drop(inner);
        self.notify.notify_one();
    }

    /// Queues a key after a delay (earlier schedules win).
    pub fn add_after(&self, key: T, delay: Duration) {
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.entries.get(&key).is_some_and(|e| e.running) {
            // Runs end through `done`, which schedules; a delayed trigger mid-run is a change.
            if let Some(e) = inner.entries.get_mut(&key) {
                e.dirty = true;
            }
            return;
        }
        inner.schedule_at(key, now + delay, now);
        drop(inner);
        self.notify.notify_one();
    }

    /// Takes the next due key, waiting for one; the key counts as running until [`done`](Self::done).
    /// Cancel-safe: a key is only taken when this future completes.
    pub async fn next(&self) -> T {
        loop {
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let wake = match self.take_due(Instant::now()) {
                Ok(key) => return key,
                Err(wake) => wake,
            };
            match wake {
                Some(at) => {
                    tokio::select! {
                        () = notified => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Takes the next due key without waiting, if there is one; like [`next`](Self::next), the key
    /// counts as running until [`done`](Self::done).
    pub fn try_next(&self) -> Option<T> {
        self.take_due(Instant::now()).ok()
    }

    /// Takes the first key due at `now`, or tells when the first queued key will be due.
    fn take_due(&self, now: Instant) -> Result<T, Option<Instant>> {
        let mut inner = self.lock();
        match inner.schedule.first_key_value().map(|(k, v)| (*k, v.clone())) {
            Some(((at, seq), key)) if at <= now => {
                inner.schedule.remove(&(at, seq));
                inner.running += 1;
                if let Some(e) = inner.entries.get_mut(&key) {
                    e.slot = None;
                    e.running = true;
                    e.queued_since = None;
                }
                Ok(key)
            }
            Some(((at, _), _)) => Err(Some(at)),
            None => Err(None),
        }
    }

    /// Ends a run of `key` and schedules what comes next.
    pub fn done(&self, key: &T, outcome: Outcome) {
        let now = Instant::now();
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(entry) = inner.entries.get_mut(key) else { return };
        if entry.running {
            entry.running = false;
            inner.running = inner.running.saturating_sub(1);
        }
        let dirty = std::mem::take(&mut entry.dirty);
        let mut next = match outcome {
            Outcome::Success(after) => {
                entry.failures = 0;
                entry.not_before = None;
                after.map(|d| now + d)
            }
            Outcome::Forget => {
                entry.failures = 0;
                entry.not_before = None;
                None
            }
            Outcome::Backoff | Outcome::RetryAfter(_) | Outcome::AwaitChange => {
                entry.failures = entry.failures.saturating_add(1);
                let delay = match outcome {
                    Outcome::RetryAfter(d) => d,
                    _ => {
                        let exp = self.config.backoff(entry.failures);
                        exp.max(reserve(&mut inner.tokens, &mut inner.refilled, &self.config, now))
                    }
                };
                entry.not_before = Some(now + delay);
                (outcome != Outcome::AwaitChange).then_some(now + delay)
            }
        };
        if dirty {
            let at = entry.not_before.map_or(now, |nb| nb.max(now));
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        match next {
            Some(at) => {
                inner.schedule_at(key.clone(), at, now);
                drop(guard);
                self.notify.notify_one();
            }
            None => {
                let forget = entry.failures == 0 && entry.slot.is_none();
                if forget {
                    inner.entries.remove(key);
                }
            }
        }
    }

    /// Consecutive failures of a key.
    pub fn failures(&self, key: &T) -> u32 {
        self.lock().entries.get(key).map_or(0, |e| e.failures)
    }

    /// The queue's counters now.
    pub fn stats(&self) -> QueueStats {
        let now = Instant::now();
        let inner = self.lock();
        let mut stats = QueueStats { queued: inner.schedule.len(), running: inner.running, ..QueueStats::default() };
        stats.due = inner.schedule.range(..=(now, u64::MAX)).count();
        stats.next_due = inner.schedule.keys().next().map(|(at, _)| at.saturating_duration_since(now));
        for e in inner.entries.values() {
            if e.failures > 0 {
                stats.retrying += 1;
            }
            if let Some(since) = e.queued_since {
                stats.oldest = stats.oldest.max(now.saturating_duration_since(since));
            }
        }
        stats
    }
}

impl<T: Clone + Eq + Hash> Inner<T> {
    fn schedule_at(&mut self, key: T, at: Instant, now: Instant) {
        let seq = self.seq;
        self.seq += 1;
        let entry = self.entries.entry(key.clone()).or_default();
        match entry.slot {
            Some((old, _)) if old <= at => return,
            Some(slot) => {
                self.schedule.remove(&slot);
            }
            None => {}
        }
        entry.slot = Some((at, seq));
        entry.queued_since.get_or_insert(now);
        self.schedule.insert((at, seq), key);
    }
}

/// Takes one token from the retry bucket; returns how long the caller must wait for it.
fn reserve(tokens: &mut f64, refilled: &mut Instant, config: &QueueConfig, now: Instant) -> Duration {
    let burst = f64::from(config.retry_burst.max(1));
    let qps = if config.retry_qps > 0.0 { config.retry_qps } else { f64::INFINITY };
    *tokens = (*tokens + now.saturating_duration_since(*refilled).as_secs_f64() * qps).min(burst);
    *refilled = now;
    *tokens -= 1.0;
    if *tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-*tokens / qps) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn queue() -> Arc<WorkQueue<&'static str>> {
        Arc::new(WorkQueue::new(QueueConfig::default()))
    }

    #[test]
    fn backoff_doubles_from_five_milliseconds_until_the_cap() {
        let c = QueueConfig::default();
        assert_eq!(c.backoff(1), Duration::from_millis(5));
        assert_eq!(c.backoff(2), Duration::from_millis(10));
        assert_eq!(c.backoff(3), Duration::from_millis(20));
        assert_eq!(c.backoff(30), Duration::from_secs(1000));
        assert_eq!(c.backoff(200), Duration::from_secs(1000));
    }

    #[tokio::test(start_paused = true)]
    async fn duplicate_adds_run_once() {
        let q = queue();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.stats().queued, 2);
        let first = q.next().await;
        let second = q.next().await;
        assert_eq!((first, second), ("a", "b"));
        assert_eq!(q.stats().running, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_running_key_is_not_handed_out_again_but_reruns_after_a_change() {
        let q = queue();
        q.add("a");
        let k = q.next().await;
        q.add("a");
        assert_eq!(q.stats().queued, 0, "a change during a run waits for the run");
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.next().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        q.done(&k, Outcome::Success(None));
        assert_eq!(waiter.await.ok(), Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn errors_back_off_exponentially_and_success_resets() {
        let q = queue();
        q.add("a");
        let mut k = q.next().await;
        let mut delays = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            q.done(&k, Outcome::Backoff);
            k = q.next().await;
            delays.push((Instant::now() - t).as_millis());
        }
        assert_eq!(delays, [5, 10, 20, 40, 80]);
        q.done(&k, Outcome::Success(None));
        assert_eq!(q.failures(&"a"), 0);
        q.add("a");
        let k = q.next().await;
        let t = Instant::now();
        q.done(&k, Outcome::Backoff);
        let _ = q.next().await;
        assert_eq!(Instant::now() - t, Duration::from_millis(5), "success resets the backoff");
    }

    #[tokio::test(start_paused = true)]
    async fn changes_during_backoff_wait_and_do_not_count_as_failures() {
        let q = queue();
        q.add("a");
        let k = q.next().await;
        q.done(&k, Outcome::Backoff);
        let k = q.next().await;
        q.done(&k, Outcome::Backoff);
        assert_eq!(q.failures(&"a"), 2);
        let t = Instant::now();
        for _ in 0..5 {
            q.add("a");
        }
        assert_eq!(q.stats().queued, 1);
        let _ = q.next().await;
        assert_eq!(Instant::now() - t, Duration::from_millis(10), "the triggers wait out the pending retry");
        assert_eq!(q.failures(&"a"), 2, "triggers are not failures");
    }

    #[tokio::test(start_paused = true)]
    async fn requeue_after_success_and_earliest_schedule_wins() {
        let q = queue();
        q.add_after("a", Duration::from_secs(10));
        q.add_after("a", Duration::from_secs(3));
        q.add_after("a", Duration::from_secs(7));
        let t = Instant::now();
        let k = q.next().await;
        assert_eq!(Instant::now() - t, Duration::from_secs(3));
        q.done(&k, Outcome::Success(Some(Duration::from_secs(60))));
        assert_eq!(q.stats().next_due, Some(Duration::from_secs(60)));
        q.add("a");
        assert_eq!(q.stats().due, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_global_bucket_limits_retries_once_the_burst_is_spent() {
        let config = QueueConfig { retry_qps: 10.0, retry_burst: 2, ..QueueConfig::default() };
        let q: WorkQueue<u32> = WorkQueue::new(config);
        for i in 0..4 {
            q.add(i);
        }
        for _ in 0..4 {
            let k = q.next().await;
            q.done(&k, Outcome::Backoff);
        }
        let t = Instant::now();
        let mut times = Vec::new();
        for _ in 0..4 {
            let _ = q.next().await;
            times.push((Instant::now() - t).as_millis());
        }
        assert_eq!(times, [5, 5, 100, 200]);
    }

    #[tokio::test(start_paused = true)]
    async fn try_next_takes_only_due_keys() {
        let q = queue();
        assert_eq!(q.try_next(), None);
        q.add_after("later", Duration::from_secs(1));
        q.add("now");
        assert_eq!(q.try_next(), Some("now"));
        assert_eq!(q.try_next(), None, "the other key is not due and the taken one is running");
        q.add("now");
        assert_eq!(q.try_next(), None, "a running key is not handed out twice");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(q.try_next(), Some("later"));
        assert_eq!(q.stats().running, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn stats_report_depth_and_age() {
        let q = queue();
        q.add("a");
        tokio::time::advance(Duration::from_secs(2)).await;
        q.add("b");
        let s = q.stats();
        assert_eq!((s.queued, s.due, s.running), (2, 2, 0));
        assert_eq!(s.oldest, Duration::from_secs(2));
    }
}
