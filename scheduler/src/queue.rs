//! The scheduling queue: active (QueueSort order: priority, then FIFO), backoff (1 s doubling to
//! 10 s), and unschedulable (left after 5 minutes, or moved out early by cluster events that the
//! rejecting plugins' queueing hints deem relevant); PreEnqueue gates; and the nominator.

use crate::framework::{ClusterEvent, EventObject, Framework, QueueSortPlugin};
use crate::pod_info::PodInfo;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The first backoff of a pod (kube-scheduler's `podInitialBackoffSeconds`).
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// The longest backoff (`podMaxBackoffSeconds`).
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long an unschedulable pod waits before it is retried regardless of events.
pub const UNSCHEDULABLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Events kept per scheduling cycle for the in-flight check.
const MAX_IN_FLIGHT_EVENTS: usize = 4096;

/// A clock, so that tests can drive time.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// The default clock: tokio's (paused in tests), or the system's outside a runtime.
pub fn default_clock() -> Clock {
    Arc::new(|| tokio::time::Instant::now().into_std())
}

/// A pod in the queue, with its scheduling history.
#[derive(Debug, Clone)]
pub struct QueuedPodInfo {
    /// The pod.
    pub pod: Arc<PodInfo>,
    /// When it was added or last failed (FIFO order, backoff start).
    pub timestamp: Instant,
    /// When it was first added.
    pub initial_attempt: Instant,
    /// Scheduling attempts so far.
    pub attempts: u32,
    /// Plugins that rejected it in the last attempt.
    pub unschedulable_plugins: Vec<String>,
    /// Plugins that answered `Pending` in the last attempt.
    pub pending_plugins: Vec<String>,
    /// Held by a PreEnqueue plugin.
    pub gated: bool,
    /// In backoff because an event may have helped it (not after an error): it may leave early
    /// when the active queue is empty, as kube-scheduler's `SchedulerPopFromBackoffQ`.
    early: bool,
    seq: u64,
}

impl QueuedPodInfo {
    /// When its backoff ends.
    pub fn backoff_expiry(&self) -> Instant {
        let mut d = INITIAL_BACKOFF;
        for _ in 1..self.attempts {
            d = (d * 2).min(MAX_BACKOFF);
            if d == MAX_BACKOFF {
                break;
            }
        }
        self.timestamp + d
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Location {
    Active(u64),
    Backoff(u64),
    Unschedulable,
    InFlight,
}

/// Told of every nomination change: the pod, the node it leaves, the node it goes to.
pub type NominationObserver = Arc<dyn Fn(&Arc<PodInfo>, Option<&str>, Option<&str>) + Send + Sync>;

/// The pods nominated to nodes by preemption, so that others do not take their room.
#[derive(Default)]
pub struct Nominator {
    inner: Mutex<NominatorInner>,
    count: AtomicUsize,
    observer: std::sync::OnceLock<NominationObserver>,
}

impl std::fmt::Debug for Nominator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nominator").field("count", &self.count.load(Ordering::Relaxed)).finish()
    }
}

#[derive(Debug, Default)]
struct NominatorInner {
    by_node: HashMap<String, Vec<Arc<PodInfo>>>,
    node_of: HashMap<String, String>,
}

impl Nominator {
    fn lock(&self) -> MutexGuard<'_, NominatorInner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets the observer told of every change (once; later calls are ignored). It runs under the
    /// nominator's lock, so that it sees changes in order.
    pub fn set_observer(&self, observer: NominationObserver) {
        let _ = self.observer.set(observer);
    }

    /// Nominates a pod to a node (replacing an earlier nomination).
    pub fn add(&self, pod: Arc<PodInfo>, node: &str) {
        let mut inner = self.lock();
        let old = Self::remove_locked(&mut inner, &pod.uid);
        inner.node_of.insert(pod.uid.clone(), node.to_owned());
        inner.by_node.entry(node.to_owned()).or_default().push(pod.clone());
        self.count.store(inner.node_of.len(), Ordering::Relaxed);
        if let Some(o) = self.observer.get() {
            o(&pod, old.as_ref().map(|(n, _)| n.as_str()), Some(node));
        }
    }

    fn remove_locked(inner: &mut NominatorInner, uid: &str) -> Option<(String, Arc<PodInfo>)> {
        let node = inner.node_of.remove(uid)?;
        let list = inner.by_node.get_mut(&node)?;
        let pod = list.iter().position(|p| p.uid == uid).map(|i| list.remove(i));
        if list.is_empty() {
            inner.by_node.remove(&node);
        }
        pod.map(|p| (node, p))
    }

    /// Drops a pod's nomination.
    pub fn remove(&self, uid: &str) {
        let mut inner = self.lock();
        let old = Self::remove_locked(&mut inner, uid);
        self.count.store(inner.node_of.len(), Ordering::Relaxed);
        if let (Some(o), Some((node, pod))) = (self.observer.get(), old) {
            o(&pod, Some(&node), None);
        }
    }

    /// The pods nominated to a node.
    pub fn pods_for_node(&self, node: &str) -> Vec<Arc<PodInfo>> {
        self.lock().by_node.get(node).cloned().unwrap_or_default()
    }

    /// The pods nominated to each node that a pod of this priority must leave room for (equal or
    /// higher priority, other than `uid`).
    pub fn pods_at_or_above(&self, priority: i32, uid: &str) -> HashMap<String, Vec<Arc<PodInfo>>> {
        let inner = self.lock();
        let mut out = HashMap::new();
        for (node, pods) in &inner.by_node {
            let v: Vec<Arc<PodInfo>> = pods.iter().filter(|p| p.priority >= priority && p.uid != uid).cloned().collect();
            if !v.is_empty() {
                out.insert(node.clone(), v);
            }
        }
        out
    }

    /// The node a pod is nominated to.
    pub fn node_of(&self, uid: &str) -> Option<String> {
        self.lock().node_of.get(uid).cloned()
    }

    /// True when no pod is nominated (a lock-free fast path).
    pub fn is_empty(&self) -> bool {
        self.count.load(Ordering::Relaxed) == 0
    }
}

struct Inner {
    active: Vec<QueuedPodInfo>,
    backoff: BinaryHeap<Reverse<(Instant, u64)>>,
    backoff_items: HashMap<u64, QueuedPodInfo>,
    unschedulable: HashMap<String, QueuedPodInfo>,
    location: HashMap<String, Location>,
    /// The resourceVersion last seen of each queued pod, to drop repeated notifications cheaply.
    versions: HashMap<String, String>,
    /// Threads blocked in `pop`.
    waiters: usize,
    in_flight: HashMap<String, QueuedPodInfo>,
    scheduling_cycle: u64,
    /// Events since the current scheduling cycle began, replayed against the pod's rejecting
    /// plugins' hints if it fails (kube-scheduler's in-flight events).
    in_flight_events: Vec<(ClusterEvent, Option<EventObject>, Option<EventObject>)>,
    /// More events arrived during the cycle than are kept: treat as relevant.
    in_flight_overflow: bool,
    seq: u64,
    closed: bool,
}

/// The scheduling queue. Thread-safe; `pop` blocks.
pub struct SchedulingQueue {
    inner: Mutex<Inner>,
    ready: Condvar,
    less: Arc<dyn QueueSortPlugin>,
    profiles: HashMap<String, Arc<Framework>>,
    nominator: Arc<Nominator>,
    clock: Clock,
}

impl std::fmt::Debug for SchedulingQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (a, b, u) = self.lens();
        f.debug_struct("SchedulingQueue").field("active", &a).field("backoff", &b).field("unschedulable", &u).finish()
    }
}

impl SchedulingQueue {
    /// A queue for these profiles; the first profile's QueueSort orders it.
    pub fn new(profiles: &[Arc<Framework>], nominator: Arc<Nominator>, clock: Clock) -> Result<Self, crate::Error> {
        let less = profiles
            .first()
            .and_then(|p| p.queue_sort().cloned())
            .ok_or_else(|| crate::Error::InvalidProfile("no profile with a QueueSort plugin".into()))?;
        Ok(Self {
            inner: Mutex::new(Inner {
                active: Vec::new(),
                backoff: BinaryHeap::new(),
                backoff_items: HashMap::new(),
                unschedulable: HashMap::new(),
                location: HashMap::new(),
                versions: HashMap::new(),
                waiters: 0,
                in_flight: HashMap::new(),
                scheduling_cycle: 0,
                in_flight_events: Vec::new(),
                in_flight_overflow: false,
                seq: 0,
                closed: false,
            }),
            ready: Condvar::new(),
            less,
            profiles: profiles.iter().map(|p| (p.name().to_owned(), p.clone())).collect(),
            nominator,
            clock,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn now(&self) -> Instant {
        (self.clock)()
    }

    fn push_active(&self, inner: &mut Inner, mut q: QueuedPodInfo) {
        inner.seq += 1;
        q.seq = inner.seq;
        q.gated = false;
        inner.location.insert(q.pod.uid.clone(), Location::Active(q.seq));
        inner.active.push(q);
        if inner.waiters > 0 {
            self.ready.notify_one();
        }
        let mut i = inner.active.len() - 1;
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.less.less(&inner.active[i], &inner.active[parent]) {
                inner.active.swap(i, parent);
                i = parent;
            } else {
                break;
            }
        }
    }

    fn pop_active(&self, inner: &mut Inner) -> Option<QueuedPodInfo> {
        loop {
            if inner.active.is_empty() {
                return None;
            }
            let last = inner.active.len() - 1;
            inner.active.swap(0, last);
            let top = inner.active.pop()?;
            let n = inner.active.len();
            let mut i = 0;
            loop {
                let (l, r) = (2 * i + 1, 2 * i + 2);
                let mut m = i;
                if l < n && self.less.less(&inner.active[l], &inner.active[m]) {
                    m = l;
                }
                if r < n && self.less.less(&inner.active[r], &inner.active[m]) {
                    m = r;
                }
                if m == i {
                    break;
                }
                inner.active.swap(i, m);
                i = m;
            }
            if inner.location.get(&top.pod.uid) == Some(&Location::Active(top.seq)) {
                return Some(top);
            }
        }
    }

    fn push_backoff(&self, inner: &mut Inner, mut q: QueuedPodInfo) {
        inner.seq += 1;
        q.seq = inner.seq;
        inner.location.insert(q.pod.uid.clone(), Location::Backoff(q.seq));
        inner.backoff.push(Reverse((q.backoff_expiry(), q.seq)));
        inner.backoff_items.insert(q.seq, q);
        if inner.waiters > 0 {
            self.ready.notify_one();
        }
    }

    /// Removes a pod wherever it is and returns its queue entry.
    fn take(inner: &mut Inner, uid: &str) -> Option<QueuedPodInfo> {
        inner.versions.remove(uid);
        match inner.location.remove(uid)? {
            Location::Active(seq) => {
                // The heap entry is skipped lazily; find it for its history.
                inner.active.iter().find(|q| q.seq == seq).cloned()
            }
            Location::Backoff(seq) => inner.backoff_items.remove(&seq),
            Location::Unschedulable => inner.unschedulable.remove(uid),
            Location::InFlight => {
                let q = inner.in_flight.get(uid).cloned();
                inner.location.insert(uid.to_owned(), Location::InFlight);
                q
            }
        }
    }

    fn new_entry(&self, pod: Arc<PodInfo>) -> QueuedPodInfo {
        let now = self.now();
        QueuedPodInfo {
            pod,
            timestamp: now,
            initial_attempt: now,
            attempts: 0,
            unschedulable_plugins: Vec::new(),
            pending_plugins: Vec::new(),
            gated: false,
            early: false,
            seq: 0,
        }
    }

    fn gate(&self, pod: &PodInfo) -> Option<String> {
        let profile = self.profiles.get(&pod.scheduler_name)?;
        let s = profile.run_pre_enqueue(pod);
        (!s.is_success()).then(|| s.plugin().unwrap_or_default().to_owned())
    }

    fn enqueue(&self, inner: &mut Inner, mut q: QueuedPodInfo) {
        if let Some(plugin) = self.gate(&q.pod) {
            q.gated = true;
            q.unschedulable_plugins = vec![plugin];
            inner.location.insert(q.pod.uid.clone(), Location::Unschedulable);
            inner.unschedulable.insert(q.pod.uid.clone(), q);
        } else {
            self.push_active(inner, q);
        }
    }

    /// Adds a new pending pod (or updates it when already queued).
    pub fn add(&self, pod: Arc<PodInfo>) {
        if let Some(n) = &pod.nominated_node_name {
            self.nominator.add(pod.clone(), n);
        }
        let mut inner = self.lock();
        if inner.location.contains_key(&pod.uid) {
            drop(inner);
            self.update(pod);
            return;
        }
        inner.versions.insert(pod.uid.clone(), pod.pod.metadata.resource_version.clone().unwrap_or_default());
        let q = self.new_entry(pod);
        self.enqueue(&mut inner, q);
    }

    /// Whether the queue already holds this version of the pod (a repeated notification).
    pub fn has_version(&self, uid: &str, resource_version: &str) -> bool {
        !resource_version.is_empty() && self.lock().versions.get(uid).is_some_and(|v| v == resource_version)
    }

    /// A queued pod changed: refresh it, re-run PreEnqueue for gated pods, and retry an
    /// unschedulable pod whose spec or labels changed.
    pub fn update(&self, pod: Arc<PodInfo>) {
        match &pod.nominated_node_name {
            Some(n) => self.nominator.add(pod.clone(), n),
            None => self.nominator.remove(&pod.uid),
        }
        let mut inner = self.lock();
        let Some(loc) = inner.location.get(&pod.uid).copied() else {
            drop(inner);
            self.add(pod);
            return;
        };
        let rv = pod.pod.metadata.resource_version.clone().unwrap_or_default();
        if inner.versions.get(&pod.uid) == Some(&rv) && !rv.is_empty() {
            return;
        }
        inner.versions.insert(pod.uid.clone(), rv);
        match loc {
            Location::InFlight => {
                if let Some(q) = inner.in_flight.get_mut(&pod.uid) {
                    q.pod = pod;
                }
            }
            Location::Active(_) => {
                if let Some(mut q) = Self::take(&mut inner, &pod.uid) {
                    q.pod = pod;
                    self.push_active(&mut inner, q);
                }
            }
            Location::Backoff(seq) => {
                if let Some(q) = inner.backoff_items.get_mut(&seq) {
                    q.pod = pod;
                }
            }
            Location::Unschedulable => {
                let Some(mut q) = Self::take(&mut inner, &pod.uid) else { return };
                let changed = spec_changed(&q.pod, &pod);
                q.pod = pod;
                if q.gated {
                    self.enqueue(&mut inner, q);
                } else if changed {
                    self.requeue(&mut inner, q);
                } else {
                    inner.location.insert(q.pod.uid.clone(), Location::Unschedulable);
                    inner.unschedulable.insert(q.pod.uid.clone(), q);
                }
            }
        }
    }

    /// Removes a pod (deleted, or bound by someone else).
    pub fn delete(&self, uid: &str) {
        self.nominator.remove(uid);
        let mut inner = self.lock();
        if inner.location.get(uid) == Some(&Location::InFlight) {
            inner.location.remove(uid);
            inner.versions.remove(uid);
            inner.in_flight.remove(uid);
            return;
        }
        Self::take(&mut inner, uid);
    }

    fn requeue(&self, inner: &mut Inner, q: QueuedPodInfo) {
        if q.backoff_expiry() > self.now() {
            self.push_backoff(inner, q);
        } else {
            self.push_active(inner, q);
        }
    }

    /// Takes the next pod, waiting for one; `None` once the queue is closed.
    pub fn pop(&self) -> Option<QueuedPodInfo> {
        let mut inner = self.lock();
        loop {
            if inner.closed {
                return None;
            }
            if let Some(q) = self.start(&mut inner) {
                return Some(q);
            }
            if self.pop_backoff_early(&mut inner) {
                continue;
            }
            inner.waiters += 1;
            inner = self.ready.wait(inner).unwrap_or_else(std::sync::PoisonError::into_inner);
            inner.waiters -= 1;
        }
    }

    /// Takes the next pod if one is active now.
    pub fn try_pop(&self) -> Option<QueuedPodInfo> {
        let mut inner = self.lock();
        self.start(&mut inner)
    }

    /// Moves the backoff pod that expires first to the active queue if an event put it there.
    fn pop_backoff_early(&self, inner: &mut Inner) -> bool {
        while let Some(Reverse((_, seq))) = inner.backoff.peek().copied() {
            let Some(q) = inner.backoff_items.get(&seq) else {
                inner.backoff.pop();
                continue;
            };
            if inner.location.get(&q.pod.uid) != Some(&Location::Backoff(seq)) {
                inner.backoff.pop();
                inner.backoff_items.remove(&seq);
                continue;
            }
            if !q.early {
                return false;
            }
            inner.backoff.pop();
            if let Some(q) = inner.backoff_items.remove(&seq) {
                self.push_active(inner, q);
                return true;
            }
        }
        false
    }

    fn start(&self, inner: &mut Inner) -> Option<QueuedPodInfo> {
        let mut q = self.pop_active(inner)?;
        q.attempts += 1;
        q.early = false;
        inner.scheduling_cycle += 1;
        inner.in_flight_events.clear();
        inner.in_flight_overflow = false;
        inner.location.insert(q.pod.uid.clone(), Location::InFlight);
        inner.in_flight.insert(q.pod.uid.clone(), q.clone());
        Some(q)
    }

    /// The number of the scheduling cycle in progress.
    pub fn scheduling_cycle(&self) -> u64 {
        self.lock().scheduling_cycle
    }

    /// The pod's attempt ended (bound or given up); it leaves the queue's books.
    pub fn done(&self, uid: &str) {
        let mut inner = self.lock();
        if inner.location.get(uid) == Some(&Location::InFlight) {
            inner.location.remove(uid);
            inner.versions.remove(uid);
        }
        inner.in_flight.remove(uid);
    }

    /// Puts back a pod whose attempt failed: into backoff when an event arrived during its cycle
    /// (or it failed for an internal reason), else among the unschedulable pods.
    pub fn add_unschedulable(&self, mut q: QueuedPodInfo, pod_scheduling_cycle: u64) {
        let mut inner = self.lock();
        if inner.location.get(&q.pod.uid) != Some(&Location::InFlight) {
            // Deleted (or bound) meanwhile.
            inner.in_flight.remove(&q.pod.uid);
            return;
        }
        // The pod may have changed while it was being scheduled: the attempt judged the old
        // version, so a change that can matter makes the failure worth a retry after backoff.
        let mut updated = false;
        if let Some(latest) = inner.in_flight.remove(&q.pod.uid) {
            updated = spec_changed(&q.pod, &latest.pod);
            q.pod = latest.pod;
        }
        q.timestamp = self.now();
        let rejected = !q.unschedulable_plugins.is_empty() || !q.pending_plugins.is_empty();
        // An event during the pod's own cycle that its rejecting plugins care about: retry soon.
        let relevant = updated
            || pod_scheduling_cycle != inner.scheduling_cycle
            || inner.in_flight_overflow
            || self.profiles.get(&q.pod.scheduler_name).is_none_or(|p| {
                inner
                    .in_flight_events
                    .iter()
                    .any(|(e, o, n)| p.hints_say_queue(&q.pod, &q.unschedulable_plugins, e, o.as_ref(), n.as_ref()))
            });
        if !rejected || relevant {
            q.early = rejected;
            self.push_backoff(&mut inner, q);
        } else {
            inner.location.insert(q.pod.uid.clone(), Location::Unschedulable);
            inner.unschedulable.insert(q.pod.uid.clone(), q);
        }
    }

    /// A cluster event: moves the unschedulable pods that the rejecting plugins' hints say it may help.
    pub fn on_event(&self, event: &ClusterEvent, old: Option<&EventObject>, new: Option<&EventObject>) {
        let mut inner = self.lock();
        if inner.in_flight.is_empty() {
            // Nothing in flight needs the event later.
        } else if inner.in_flight_events.len() < MAX_IN_FLIGHT_EVENTS {
            inner.in_flight_events.push((*event, old.cloned(), new.cloned()));
        } else {
            inner.in_flight_overflow = true;
        }
        if inner.unschedulable.is_empty() {
            return;
        }
        let movable: Vec<String> = inner
            .unschedulable
            .values()
            .filter(|q| !q.gated && q.pending_plugins.is_empty())
            .filter(|q| {
                self.profiles
                    .get(&q.pod.scheduler_name)
                    .is_none_or(|p| p.hints_say_queue(&q.pod, &q.unschedulable_plugins, event, old, new))
            })
            .map(|q| q.pod.uid.clone())
            .collect();
        for uid in movable {
            if let Some(mut q) = Self::take(&mut inner, &uid) {
                q.early = true;
                self.requeue(&mut inner, q);
            }
        }
    }

    /// Moves pods whose backoff has ended to the active queue.
    pub fn flush_backoff_completed(&self) {
        let now = self.now();
        let mut inner = self.lock();
        while let Some(Reverse((expiry, seq))) = inner.backoff.peek().copied() {
            if expiry > now {
                break;
            }
            inner.backoff.pop();
            if let Some(q) = inner.backoff_items.remove(&seq)
                && inner.location.get(&q.pod.uid) == Some(&Location::Backoff(seq))
            {
                self.push_active(&mut inner, q);
            }
        }
    }

    /// Retries pods unschedulable for longer than [`UNSCHEDULABLE_TIMEOUT`].
    pub fn flush_unschedulable_leftover(&self) {
        let now = self.now();
        let mut inner = self.lock();
        let old: Vec<String> = inner
            .unschedulable
            .values()
            .filter(|q| !q.gated && now.saturating_duration_since(q.timestamp) > UNSCHEDULABLE_TIMEOUT)
            .map(|q| q.pod.uid.clone())
            .collect();
        for uid in old {
            if let Some(q) = Self::take(&mut inner, &uid) {
                self.requeue(&mut inner, q);
            }
        }
    }

    /// Pods in (active, backoff, unschedulable).
    pub fn lens(&self) -> (usize, usize, usize) {
        let inner = self.lock();
        let active = inner.location.values().filter(|l| matches!(l, Location::Active(_))).count();
        (active, inner.backoff_items.len(), inner.unschedulable.len())
    }

    /// The UIDs of every pod the queue holds (active, backoff, unschedulable, in flight).
    pub fn uids(&self) -> Vec<String> {
        self.lock().location.keys().cloned().collect()
    }

    /// Whether the queue holds a pod anywhere (active, backoff, unschedulable, in flight).
    pub fn contains(&self, uid: &str) -> bool {
        self.lock().location.contains_key(uid)
    }

    /// Refreshes the entry of a pod whose scheduling attempt is in progress (its binding may
    /// still fail and requeue it); false when the pod is not in flight.
    pub fn update_in_flight(&self, pod: Arc<PodInfo>) -> bool {
        let mut inner = self.lock();
        if inner.location.get(&pod.uid) != Some(&Location::InFlight) {
            return false;
        }
        inner.versions.insert(pod.uid.clone(), pod.pod.metadata.resource_version.clone().unwrap_or_default());
        if let Some(q) = inner.in_flight.get_mut(&pod.uid) {
            q.pod = pod;
        }
        true
    }

    /// Whether a pod is among the unschedulable (or gated) pods.
    pub fn is_unschedulable(&self, uid: &str) -> bool {
        self.lock().location.get(uid) == Some(&Location::Unschedulable)
    }

    /// Whether a pod is in the backoff queue.
    pub fn is_backing_off(&self, uid: &str) -> bool {
        matches!(self.lock().location.get(uid), Some(Location::Backoff(_)))
    }

    /// Stops the queue: `pop` returns `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// The nominator.
    pub fn nominator(&self) -> &Arc<Nominator> {
        &self.nominator
    }
}

/// Whether an update can change a scheduling outcome (anything beyond status and bookkeeping).
fn spec_changed(old: &PodInfo, new: &PodInfo) -> bool {
    old.pod.spec != new.pod.spec || old.pod.metadata.labels != new.pod.metadata.labels
}

#[cfg(test)]
mod tests;
