//! The scheduler: informers feed the cache and the queue; one thread runs scheduling cycles
//! serially on incremental snapshots; binding cycles run concurrently on the tokio runtime.

use crate::cache::Cache;
use crate::framework::{
    ActionType, ClusterEvent, Code, CycleState, EventObject, EventResource, Framework, Handle, PdbInfo, Profile, ScheduleError, Status,
};
use crate::node_info::NodeStatic;
use crate::pod_info::PodInfo;
use crate::queue::{QueuedPodInfo, SchedulingQueue, default_clock};
use crate::snapshot::Snapshot;
use bosun_core::k8s_openapi::api::core::v1::{Event as CoreEvent, Namespace, Node, ObjectReference, Pod, PodCondition, Service};
use bosun_core::k8s_openapi::api::policy::v1::PodDisruptionBudget;
use bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use bosun_core::watch::{Change, Informer, Informers};
use bosun_core::{Client, LabelSelector, Patch};
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Counters of what the scheduler did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    /// Scheduling cycles run.
    pub attempts: u64,
    /// Pods bound.
    pub scheduled: u64,
    /// Cycles that found no node.
    pub unschedulable: u64,
    /// Cycles that failed for an internal reason.
    pub errors: u64,
    /// Preemptions that nominated a node.
    pub nominations: u64,
    /// Bindings that failed.
    pub bind_failures: u64,
}

#[derive(Default)]
struct Counters {
    attempts: AtomicU64,
    scheduled: AtomicU64,
    unschedulable: AtomicU64,
    errors: AtomicU64,
    nominations: AtomicU64,
    bind_failures: AtomicU64,
}

/// Builds a [`Scheduler`].
#[must_use]
pub struct SchedulerBuilder {
    client: Arc<dyn Client>,
    informers: Option<Informers>,
    profiles: Vec<Profile>,
    victim_grace_period: Option<u32>,
    success_events: bool,
}

impl SchedulerBuilder {
    /// Adds a profile (default: one profile of the default plugins, `default-scheduler`).
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profiles.push(profile);
        self
    }

    /// Shares an informer factory with other components (default: a private one).
    pub fn informers(mut self, informers: Informers) -> Self {
        self.informers = Some(informers);
        self
    }

    /// Deletes preemption victims with this grace period (default: the pod's own).
    pub fn victim_grace_period(mut self, seconds: u32) -> Self {
        self.victim_grace_period = Some(seconds);
        self
    }

    /// Records a `Scheduled` event for every bound pod, as kube-scheduler does (default: on).
    pub fn success_events(mut self, on: bool) -> Self {
        self.success_events = on;
        self
    }

    /// Builds the scheduler (not yet running).
    pub fn build(self) -> crate::Result<Scheduler> {
        let profiles = if self.profiles.is_empty() { vec![Profile::defaults(crate::DEFAULT_SCHEDULER_NAME)] } else { self.profiles };
        let mut frameworks = Vec::new();
        let mut names = HashSet::new();
        for p in profiles {
            if !names.insert(p.scheduler_name().to_owned()) {
                return Err(crate::Error::InvalidProfile(format!("two profiles named {}", p.scheduler_name())));
            }
            frameworks.push(Arc::new(p.build()?));
        }
        let nominator = Arc::default();
        let queue = Arc::new(SchedulingQueue::new(&frameworks, Arc::clone(&nominator), default_clock())?);
        let handle =
            Handle::new(Some(self.client.clone()), nominator, self.victim_grace_period, tokio::runtime::Handle::try_current().ok());
        let inner = Arc::new(Inner {
            informers: self.informers.unwrap_or_else(|| Informers::new(self.client.clone())),
            client: self.client,
            frameworks: frameworks.into_iter().map(|f| (f.name().to_owned(), f)).collect(),
            queue,
            cache: Mutex::new(Cache::new()),
            handle,
            counters: Counters::default(),
            success_events: self.success_events,
            progress: Progress::new(),
        });
        // Snapshots carry each node's nominated pods: the cache follows the nominator.
        let weak = Arc::downgrade(&inner);
        inner.queue.nominator().set_observer(Arc::new(move |pod, from, to| {
            if let Some(inner) = weak.upgrade() {
                lock(&inner.cache).nominate(pod, from, to);
            }
        }));
        Ok(Scheduler { inner })
    }
}

struct Inner {
    client: Arc<dyn Client>,
    informers: Informers,
    frameworks: HashMap<String, Arc<Framework>>,
    queue: Arc<SchedulingQueue>,
    cache: Mutex<Cache>,
    handle: Handle,
    counters: Counters,
    success_events: bool,
    progress: Progress,
}

/// Waiters for a number of bound pods. A waiter is woken once, when the count reaches its target
/// (a wake per bound pod cost ~7% of the bench's CPU: the waiting thread was unparked per pod).
struct Progress {
    waiters: Mutex<Vec<(u64, tokio::sync::oneshot::Sender<()>)>>,
    /// The smallest target among the waiters (`u64::MAX`: none).
    next: AtomicU64,
}

impl Progress {
    fn new() -> Self {
        Self { waiters: Mutex::new(Vec::new()), next: AtomicU64::new(u64::MAX) }
    }

    /// The count is now `n`: wakes the waiters it satisfies.
    fn reached(&self, n: u64) {
        let mut waiters = self.waiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = u64::MAX;
        let mut i = 0;
        while i < waiters.len() {
            if waiters[i].0 <= n {
                let _ = waiters.swap_remove(i).1.send(());
            } else {
                next = next.min(waiters[i].0);
                i += 1;
            }
        }
        self.next.store(next, Ordering::SeqCst);
    }
}

/// The scheduler. Cheap to clone; [`Scheduler::start`] runs it.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").field("profiles", &self.inner.frameworks.keys().collect::<Vec<_>>()).finish()
    }
}

/// A running scheduler; dropping it (or [`Running::stop`]) stops it.
#[derive(Debug)]
pub struct Running {
    scheduler: Scheduler,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// The scheduler.
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// Stops the scheduling loop and the event handlers.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.scheduler.inner.queue.close();
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn lock(cache: &Mutex<Cache>) -> MutexGuard<'_, Cache> {
    cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// After a [`Change::Resync`], drops the changes already waiting: the store they were applied to
/// is re-read next, so they are stale. Without this the subscriber stays at the very edge of the
/// informer's buffer (a lagging receiver resumes at the oldest change kept), any change arriving
/// during the resync's full pass makes it lag again, and it resyncs in a loop (seen: a full pass
/// over 25k pods every 0.4 s for the whole preemption bench). True when the stream has ended.
async fn skip_ready<K>(changes: &mut bosun_core::watch::ChangeStream<K>) -> bool {
    use futures::FutureExt;
    // Unconstrained: tokio's cooperative budget would otherwise end the drain after 128 items.
    tokio::task::unconstrained(async {
        loop {
            match changes.next().now_or_never() {
                Some(Some(_)) => {}
                Some(None) => return true,
                None => return false,
            }
        }
    })
    .await
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

fn now() -> Time {
    use bosun_core::k8s_openapi::jiff::Timestamp;
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(d.as_secs()).unwrap_or(0);
    let nanos = i32::try_from(d.subsec_nanos()).unwrap_or(0);
    Time(Timestamp::new(secs, nanos).unwrap_or(Timestamp::UNIX_EPOCH))
}

impl Scheduler {
    /// A builder over a client.
    pub fn builder(client: Arc<dyn Client>) -> SchedulerBuilder {
        SchedulerBuilder { client, informers: None, profiles: Vec::new(), victim_grace_period: None, success_events: true }
    }

    /// What the scheduler did so far.
    pub fn stats(&self) -> SchedulerStats {
        let c = &self.inner.counters;
        SchedulerStats {
            attempts: c.attempts.load(Ordering::Relaxed),
            scheduled: c.scheduled.load(Ordering::Relaxed),
            unschedulable: c.unschedulable.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            nominations: c.nominations.load(Ordering::Relaxed),
            bind_failures: c.bind_failures.load(Ordering::Relaxed),
        }
    }

    /// Waits until at least `n` pods have been bound in total.
    pub async fn wait_scheduled(&self, n: u64) {
        let progress = &self.inner.progress;
        let (tx, rx) = tokio::sync::oneshot::channel();
        progress.waiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((n, tx));
        progress.next.fetch_min(n, Ordering::SeqCst);
        // A binding that counted before the target was published did not look at it.
        let done = self.inner.counters.scheduled.load(Ordering::SeqCst);
        if done >= n {
            progress.reached(done);
        }
        let _ = rx.await;
    }

    /// The queue.
    pub fn queue(&self) -> &Arc<SchedulingQueue> {
        &self.inner.queue
    }

    /// The plugin handle (namespaces, PDBs, nominator, waiting pods).
    pub fn handle(&self) -> &Handle {
        &self.inner.handle
    }

    /// The number of pods the cache accounts (bound and assumed).
    pub fn cached_pods(&self) -> usize {
        lock(&self.inner.cache).pod_count()
    }

    /// Starts informers, event handlers, the queue's flush timers and the scheduling thread on the
    /// current tokio runtime; returns once pods and nodes are synced.
    pub async fn start(&self) -> Running {
        self.inner.handle.set_runtime(tokio::runtime::Handle::current());
        let inf = &self.inner.informers;
        self.inner.handle.set_informers(inf.clone());
        let pods: Informer<Pod> = inf.all();
        let nodes: Informer<Node> = inf.all();
        let namespaces: Informer<Namespace> = inf.all();
        let pdbs: Informer<PodDisruptionBudget> = inf.all();
        let services: Informer<Service> = inf.all();
        let mut tasks = Vec::new();
        tasks.extend(crate::plugins::volume_binding::watch_volumes(inf, &self.inner.queue));
        let pod_changes = pods.subscribe();
        let node_changes = nodes.subscribe();
        let ns_changes = namespaces.subscribe();
        let pdb_changes = pdbs.subscribe();
        let service_changes = services.subscribe();
        {
            let me = self.clone();
            let inf = nodes.clone();
            tasks.push(tokio::spawn(async move { me.node_loop(inf, node_changes).await }));
        }
        {
            let me = self.clone();
            let inf = pods.clone();
            tasks.push(tokio::spawn(async move { me.pod_loop(inf, pod_changes).await }));
        }
        {
            let me = self.clone();
            tasks.push(tokio::spawn(async move {
                let mut s = ns_changes;
                for n in namespaces.store().list() {
                    me.on_namespace(&n, false);
                }
                while let Some(c) = s.next().await {
                    match c {
                        Change::Applied(n) => me.on_namespace(&n, false),
                        Change::Deleted(n) => me.on_namespace(&n, true),
                        Change::Resync => namespaces.store().list().iter().for_each(|n| me.on_namespace(n, false)),
                    }
                }
            }));
        }
        {
            let me = self.clone();
            tasks.push(tokio::spawn(async move {
                let mut s = pdb_changes;
                for p in pdbs.store().list() {
                    me.on_pdb(&p, false);
                }
                while let Some(c) = s.next().await {
                    match c {
                        Change::Applied(p) => me.on_pdb(&p, false),
                        Change::Deleted(p) => me.on_pdb(&p, true),
                        Change::Resync => pdbs.store().list().iter().for_each(|p| me.on_pdb(p, false)),
                    }
                }
            }));
        }
        {
            let me = self.clone();
            tasks.push(tokio::spawn(async move {
                let mut s = service_changes;
                let apply = |svc: &Service, deleted: bool| {
                    let (Some(ns), Some(name)) = (svc.metadata.namespace.as_deref(), svc.metadata.name.as_deref()) else { return };
                    let selector = svc.spec.as_ref().and_then(|s| s.selector.clone());
                    me.inner.handle.set_service(ns, name, if deleted { None } else { selector });
                };
                for svc in services.store().list() {
                    apply(&svc, false);
                }
                while let Some(c) = s.next().await {
                    match c {
                        Change::Applied(svc) => apply(&svc, false),
                        Change::Deleted(svc) => apply(&svc, true),
                        Change::Resync => services.store().list().iter().for_each(|svc| apply(svc, false)),
                    }
                }
            }));
        }
        {
            let q = self.inner.queue.clone();
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                let mut n = 0u64;
                loop {
                    tick.tick().await;
                    q.flush_backoff_completed();
                    n += 1;
                    if n.is_multiple_of(30) {
                        q.flush_unschedulable_leftover();
                    }
                }
            }));
        }
        pods.wait_ready().await;
        nodes.wait_ready().await;
        // Let the event loops apply the initial state before the first cycle.
        tokio::task::yield_now().await;
        let me = self.clone();
        let rt = tokio::runtime::Handle::current();
        let thread = std::thread::Builder::new()
            .name("bosun-scheduler".into())
            .spawn(move || {
                let _guard = rt.enter();
                let mut snapshot = Snapshot::default();
                while let Some(q) = me.inner.queue.pop() {
                    me.schedule_one_guarded(q, &mut snapshot, &rt);
                }
            })
            .ok();
        Running { scheduler: self.clone(), tasks, thread }
    }

    async fn node_loop(self, inf: Informer<Node>, mut changes: bosun_core::watch::ChangeStream<Node>) {
        inf.wait_ready().await;
        for n in inf.store().list() {
            self.on_node(n, false);
        }
        while let Some(c) = changes.next().await {
            match c {
                Change::Applied(n) => self.on_node(n, false),
                Change::Deleted(n) => self.on_node(n, true),
                Change::Resync => {
                    if skip_ready(&mut changes).await {
                        return;
                    }
                    self.resync_nodes(inf.store().list());
                }
            }
        }
    }

    async fn pod_loop(self, inf: Informer<Pod>, mut changes: bosun_core::watch::ChangeStream<Pod>) {
        inf.wait_ready().await;
        for p in inf.store().list() {
            self.on_pod(p, false);
        }
        while let Some(c) = changes.next().await {
            match c {
                Change::Applied(p) => self.on_pod(p, false),
                Change::Deleted(p) => self.on_pod(p, true),
                Change::Resync => {
                    if skip_ready(&mut changes).await {
                        return;
                    }
                    self.resync_pods(inf.store().list());
                }
            }
        }
    }

    /// The node informer's subscriber missed changes: drop the nodes that are gone (their delete
    /// was missed) and re-apply the rest. Reads the cache's own node list: the snapshot the
    /// scheduling thread keeps must not be touched from here.
    fn resync_nodes(&self, live: Vec<Arc<Node>>) {
        let names: HashSet<&str> = live.iter().filter_map(|n| n.metadata.name.as_deref()).collect();
        let known = lock(&self.inner.cache).node_names();
        for gone in known.iter().filter(|n| !names.contains(&***n)) {
            lock(&self.inner.cache).remove_node(gone);
            self.inner.queue.on_event(&ClusterEvent::new(EventResource::Node, ActionType::DELETE), None, None);
        }
        for n in live {
            self.on_node(n, false);
        }
    }

    /// The pod informer's subscriber missed changes: forget the pods that are gone (their delete
    /// was missed), then re-apply the rest.
    fn resync_pods(&self, live: Vec<Arc<Pod>>) {
        let uids: HashSet<&str> = live.iter().filter_map(|p| p.metadata.uid.as_deref()).collect();
        let queued = self.inner.queue.uids();
        for gone in queued.iter().filter(|u| !uids.contains(u.as_str())) {
            self.inner.queue.delete(gone);
        }
        let bound = lock(&self.inner.cache).bound_pod_uids();
        for gone in bound.iter().filter(|u| !uids.contains(u.as_str())) {
            let old = lock(&self.inner.cache).remove_pod(gone);
            if let Some(old) = old {
                let ev = ClusterEvent::new(EventResource::AssignedPod, ActionType::DELETE);
                self.inner.queue.on_event(&ev, Some(&EventObject::Pod(old)), None);
            }
        }
        for p in live {
            self.on_pod(p, false);
        }
    }

    fn on_namespace(&self, ns: &Namespace, deleted: bool) {
        let Some(name) = ns.metadata.name.as_deref() else { return };
        self.inner.handle.set_namespace(name, (!deleted).then(|| ns.metadata.labels.clone().unwrap_or_default()));
        if !deleted {
            self.inner.queue.on_event(&ClusterEvent::new(EventResource::Namespace, ActionType::UPDATE), None, None);
        }
    }

    fn on_pdb(&self, pdb: &PodDisruptionBudget, deleted: bool) {
        let selector = pdb.spec.as_ref().and_then(|s| s.selector.as_ref()).and_then(|s| LabelSelector::from_api(s).ok());
        let status = pdb.status.as_ref();
        self.inner.handle.set_pdb(PdbInfo {
            namespace: pdb.metadata.namespace.clone().unwrap_or_default(),
            name: pdb.metadata.name.clone().unwrap_or_default(),
            selector: selector.unwrap_or_default(),
            disruptions_allowed: if deleted { -1 } else { status.and_then(|s| s.disruptions_allowed).unwrap_or(0) },
            disrupted_pods: status.and_then(|s| s.disrupted_pods.as_ref()).map(|m| m.keys().cloned().collect()).unwrap_or_default(),
        });
    }

    fn on_node(&self, node: Arc<Node>, deleted: bool) {
        let Some(name) = node.metadata.name.clone() else { return };
        let q = &self.inner.queue;
        if deleted {
            lock(&self.inner.cache).remove_node(&name);
            q.on_event(&ClusterEvent::new(EventResource::Node, ActionType::DELETE), None, None);
            return;
        }
        let new = NodeStatic::new(node);
        let old = {
            let mut cache = lock(&self.inner.cache);
            let existing = cache.node_info(&name).and_then(|n| n.node.clone());
            if let Some(o) = &existing
                && o.same_for_scheduling(&new)
                && conditions(&o.node) == conditions(&new.node)
            {
                return;
            }
            cache.add_or_update_node(new.clone());
            existing
        };
        let action = match &old {
            None => ActionType::ADD,
            Some(o) => {
                let mut a = ActionType(0);
                if o.allocatable != new.allocatable {
                    a = a.or(ActionType::UPDATE_NODE_ALLOCATABLE);
                }
                if o.labels() != new.labels() {
                    a = a.or(ActionType::UPDATE_NODE_LABEL);
                }
                if o.taints != new.taints || o.unschedulable != new.unschedulable {
                    a = a.or(ActionType::UPDATE_NODE_TAINT);
                }
                if conditions(&o.node) != conditions(&new.node) {
                    a = a.or(ActionType::UPDATE_NODE_CONDITION);
                }
                if o.images != new.images {
                    a = a.or(ActionType::UPDATE_NODE_OTHER);
                }
                a
            }
        };
        let old = old.map(EventObject::Node);
        q.on_event(&ClusterEvent::new(EventResource::Node, action), old.as_ref(), Some(&EventObject::Node(new)));
    }

    fn on_pod(&self, pod: Arc<Pod>, deleted: bool) {
        // Repeated notifications (a relist, the initial list and its replay) cost a lookup, not a parse.
        if !deleted {
            let uid = pod.metadata.uid.as_deref().unwrap_or_default();
            let rv = pod.metadata.resource_version.as_deref().unwrap_or_default();
            let bound = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
            let seen = if bound {
                let cache = lock(&self.inner.cache);
                !rv.is_empty()
                    && !cache.is_assumed(uid)
                    && cache.pod(uid).is_some_and(|p| p.pod.metadata.resource_version.as_deref() == Some(rv))
            } else {
                self.inner.queue.has_version(uid, rv)
            };
            if seen {
                return;
            }
        }
        let q = &self.inner.queue;
        if !deleted && !is_terminal(&pod) {
            // The bound version of a pod this scheduler assumed (every successful binding comes
            // back this way): confirmed without parsing it again or touching its node.
            let confirmed = lock(&self.inner.cache).confirm_assumed(&pod);
            if let Some((assumed, confirmed)) = confirmed {
                q.delete(&confirmed.uid);
                let ev = ClusterEvent::new(EventResource::AssignedPod, ActionType::ADD);
                q.on_event(&ev, Some(&EventObject::Pod(assumed)), Some(&EventObject::Pod(confirmed)));
                return;
            }
        }
        let info = PodInfo::new(pod);
        if deleted || (is_terminal(&info.pod) && info.node_name.is_some()) {
            self.inner.handle.victim_gone(&info.uid);
            q.delete(&info.uid);
            let old = lock(&self.inner.cache).remove_pod(&info.uid);
            if let Some(old) = old {
                let ev = ClusterEvent::new(EventResource::AssignedPod, ActionType::DELETE);
                q.on_event(&ev, Some(&EventObject::Pod(old)), None);
            }
            return;
        }
        if info.node_name.is_some() {
            q.delete(&info.uid);
            let (old, was_assumed) = {
                let mut cache = lock(&self.inner.cache);
                let old = cache.pod(&info.uid);
                let assumed = cache.is_assumed(&info.uid);
                cache.add_or_update_pod(info.clone());
                (old, assumed)
            };
            let action = match &old {
                None => ActionType::ADD,
                Some(_) if was_assumed => ActionType::ADD,
                Some(o) => {
                    let mut a = ActionType(0);
                    if o.labels() != info.labels() {
                        a = a.or(ActionType::UPDATE_POD_LABEL);
                    }
                    if o.requests.milli_cpu > info.requests.milli_cpu || o.requests.memory > info.requests.memory {
                        a = a.or(ActionType::UPDATE_POD_SCALE_DOWN);
                    }
                    a
                }
            };
            if action.0 != 0 {
                let ev = ClusterEvent::new(EventResource::AssignedPod, action);
                q.on_event(&ev, old.map(EventObject::Pod).as_ref(), Some(&EventObject::Pod(info)));
            }
            return;
        }
        if !self.inner.frameworks.contains_key(&info.scheduler_name) || is_terminal(&info.pod) {
            return;
        }
        if lock(&self.inner.cache).pod(&info.uid).is_some() {
            // Assumed (its binding is in flight or done: the bound version will follow) or already
            // bound (a stale notification). Keep the newest version for a binding that fails.
            q.update_in_flight(info);
            return;
        }
        q.add(info);
    }

    /// One scheduling cycle that cannot take the scheduling thread down: a panicking plugin fails
    /// this pod's attempt (retried after backoff) instead of stopping scheduling for every pod.
    fn schedule_one_guarded(&self, q: QueuedPodInfo, snapshot: &mut Snapshot, rt: &tokio::runtime::Handle) {
        let entry = q.clone();
        let cycle = self.inner.queue.scheduling_cycle();
        let run = std::panic::AssertUnwindSafe(|| self.schedule_one(q, snapshot, rt));
        let Err(panic) = std::panic::catch_unwind(run) else { return };
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        tracing::error!(pod = %entry.pod.key(), panic = %what, "scheduling cycle panicked");
        self.inner.counters.errors.fetch_add(1, Ordering::Relaxed);
        // The snapshot may be half-updated: rebuild it next cycle. An assumption made before the
        // panic is dropped unless its binding already started.
        *snapshot = Snapshot::default();
        {
            let mut cache = lock(&self.inner.cache);
            cache.invalidate_snapshot();
            // Spawning the binding is the cycle's last step, so no binding owns this assumption.
            let _ = cache.forget_pod(&entry.pod.uid);
        }
        let mut entry = entry;
        entry.unschedulable_plugins.clear();
        entry.pending_plugins.clear();
        self.inner.queue.add_unschedulable(entry, cycle);
    }

    /// One scheduling cycle for one pod.
    fn schedule_one(&self, q: QueuedPodInfo, snapshot: &mut Snapshot, rt: &tokio::runtime::Handle) {
        let pod = q.pod.clone();
        let queue = &self.inner.queue;
        let Some(fw) = self.inner.frameworks.get(&pod.scheduler_name).cloned() else {
            queue.done(&pod.uid);
            return;
        };
        if pod.is_terminating() {
            queue.done(&pod.uid);
            return;
        }
        let cycle = queue.scheduling_cycle();
        self.inner.counters.attempts.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.cache).update_snapshot(snapshot);
        let span = tracing::debug_span!("schedule", pod = %pod.key());
        let _enter = span.enter();
        let handle = &self.inner.handle;
        let mut state = CycleState::new();
        let result = fw.schedule_pod(&mut state, &pod, snapshot, handle);
        let result = match result {
            Ok(r) => r,
            Err(ScheduleError::Fit(mut diagnosis)) => {
                let mut nominated = None;
                if fw.has_post_filter() && !snapshot.is_empty() && diagnosis.absent_status.is_none() {
                    let (n, s) = fw.run_post_filter(&state, &pod, &diagnosis, snapshot, handle);
                    if s.code() == Code::Error {
                        tracing::warn!(error = %s, "preemption failed");
                    }
                    if !s.is_success() && !s.message().is_empty() {
                        diagnosis.post_filter_msg = Some(s.message());
                    }
                    nominated = n;
                }
                self.inner.counters.unschedulable.fetch_add(1, Ordering::Relaxed);
                if nominated.is_some() {
                    self.inner.counters.nominations.fetch_add(1, Ordering::Relaxed);
                }
                let message = diagnosis.message();
                let mut q = q;
                q.unschedulable_plugins = diagnosis.unschedulable_plugins.clone();
                q.pending_plugins = diagnosis.pending_plugins.clone();
                self.fail(q, cycle, "Unschedulable", message, nominated);
                return;
            }
            Err(ScheduleError::Internal(s)) => {
                self.inner.counters.errors.fetch_add(1, Ordering::Relaxed);
                let mut q = q;
                q.unschedulable_plugins.clear();
                self.fail(q, cycle, "SchedulerError", s.message(), None);
                return;
            }
        };
        let host = result.suggested_host;
        if let Err(e) = lock(&self.inner.cache).assume_pod(pod.clone(), &host) {
            tracing::warn!(error = %e, "assume failed");
            queue.done(&pod.uid);
            return;
        }
        let s = fw.run_reserve(&mut state, &pod, &host);
        if !s.is_success() {
            self.undo(&fw, &state, &pod, &host);
            self.fail_status(q, cycle, s);
            return;
        }
        let (permit, waiting_on, timeout) = fw.run_permit(&state, &pod, &host);
        if permit.is_rejected() || permit.code() == Code::Error {
            self.undo(&fw, &state, &pod, &host);
            self.fail_status(q, cycle, permit);
            return;
        }
        let wait = (permit.code() == Code::Wait).then(|| (handle.waiting_pods().register(pod.clone(), waiting_on), timeout));
        // As kube-scheduler's assume: the pod's nomination (made by this scheduler, known before
        // its status says so) no longer holds room once the pod itself is assumed.
        if !handle.nominator().is_empty() {
            handle.nominator().remove(&pod.uid);
        }
        let me = self.clone();
        let entry = q.clone();
        rt.spawn(async move {
            use futures::FutureExt;
            let binding = std::panic::AssertUnwindSafe(me.clone().binding_cycle(fw, state, q, host, cycle, wait));
            if binding.catch_unwind().await.is_err() {
                // A panicking PreBind/Bind plugin: the pod must not stay assumed and in flight forever.
                tracing::error!(pod = %entry.pod.key(), "binding cycle panicked");
                me.inner.counters.errors.fetch_add(1, Ordering::Relaxed);
                let _ = lock(&me.inner.cache).forget_pod(&entry.pod.uid);
                let mut entry = entry;
                entry.unschedulable_plugins.clear();
                entry.pending_plugins.clear();
                me.inner.queue.add_unschedulable(entry, cycle);
            }
        });
    }

    fn undo(&self, fw: &Framework, state: &CycleState, pod: &Arc<PodInfo>, host: &str) {
        fw.run_unreserve(state, pod, host);
        let _ = lock(&self.inner.cache).forget_pod(&pod.uid);
    }

    fn fail_status(&self, mut q: QueuedPodInfo, cycle: u64, s: Status) {
        if s.is_rejected() {
            q.unschedulable_plugins = s.plugin().map(|p| vec![p.to_owned()]).unwrap_or_default();
            self.inner.counters.unschedulable.fetch_add(1, Ordering::Relaxed);
            self.fail(q, cycle, "Unschedulable", s.message(), None);
        } else {
            q.unschedulable_plugins.clear();
            self.inner.counters.errors.fetch_add(1, Ordering::Relaxed);
            self.fail(q, cycle, "SchedulerError", s.message(), None);
        }
    }

    async fn binding_cycle(
        self,
        fw: Arc<Framework>,
        state: CycleState,
        q: QueuedPodInfo,
        host: String,
        cycle: u64,
        wait: Option<(tokio::sync::oneshot::Receiver<Status>, Duration)>,
    ) {
        let pod = q.pod.clone();
        let handle = &self.inner.handle;
        let mut status = Status::success();
        if let Some((rx, timeout)) = wait {
            status = match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(s)) => s,
                Ok(Err(_)) => Status::error("permit wait abandoned"),
                Err(_) => {
                    handle.waiting_pods().forget(&pod.uid);
                    Status::unschedulable("rejected due to timeout after waiting at permit")
                }
            };
        }
        if status.is_success() {
            status = fw.run_pre_bind(&state, &pod, &host, handle).await;
        }
        if status.is_success() {
            status = fw.run_bind(&state, &pod, &host, handle).await;
        }
        if status.is_success() {
            lock(&self.inner.cache).finish_binding(&pod.uid);
            self.inner.queue.done(&pod.uid);
            let n = self.inner.counters.scheduled.fetch_add(1, Ordering::SeqCst) + 1;
            if n >= self.inner.progress.next.load(Ordering::SeqCst) {
                self.inner.progress.reached(n);
            }
            if self.inner.success_events {
                self.record_event(&pod, "Normal", "Scheduled", format!("Successfully assigned {} to {host}", pod.key()));
            }
            fw.run_post_bind(&state, &pod, &host, handle).await;
            return;
        }
        self.inner.counters.bind_failures.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(pod = %pod.key(), node = %host, %status, "binding failed");
        fw.run_unreserve(&state, &pod, &host);
        let _ = lock(&self.inner.cache).forget_pod(&pod.uid);
        // The freed room may help others.
        self.inner.queue.on_event(
            &ClusterEvent::new(EventResource::AssignedPod, ActionType::DELETE),
            Some(&EventObject::Pod(pod.clone())),
            None,
        );
        if status.message().contains("not found") {
            self.inner.queue.delete(&pod.uid);
            return;
        }
        self.fail_status(q, cycle, status);
    }

    /// Records a failed attempt: back into the queue, nominate, and report through a
    /// `PodScheduled=False` condition and a `FailedScheduling` event.
    fn fail(&self, q: QueuedPodInfo, cycle: u64, reason: &'static str, message: String, nominated: Option<String>) {
        let pod = q.pod.clone();
        let queue = &self.inner.queue;
        if let Some(n) = &nominated {
            queue.nominator().add(pod.clone(), n);
        }
        queue.add_unschedulable(q, cycle);
        tracing::debug!(pod = %pod.key(), %message, "unschedulable");
        self.record_event(&pod, "Warning", "FailedScheduling", message.clone());
        let client = self.inner.client.clone();
        let mut conditions: Vec<PodCondition> = pod.pod.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        let changed = bosun_core::meta::set_condition(
            &mut conditions,
            PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some(reason.into()),
                message: Some(message),
                ..Default::default()
            },
            now(),
        );
        let nominated_changed = nominated.is_some() && nominated != pod.nominated_node_name;
        if !changed && !nominated_changed {
            return;
        }
        self.inner.handle.spawn(async move {
            let mut status = serde_json::json!({ "conditions": conditions });
            if let Some(n) = nominated {
                status["nominatedNodeName"] = serde_json::Value::String(n);
            }
            let patch = Patch::Merge(serde_json::json!({ "status": status }));
            if let Err(error) = crate::writes::patch_pod_status(&*client, &pod.namespace, &pod.name, &patch).await {
                tracing::debug!(%error, pod = %pod.key(), "could not update the pod's status");
            }
        });
    }

    fn record_event(&self, pod: &Arc<PodInfo>, type_: &str, reason: &str, message: String) {
        let client = self.inner.client.clone();
        let mut ev = CoreEvent::default();
        ev.metadata.name = Some(format!("{}.{:016x}", pod.name, fastrand::u64(..)));
        ev.metadata.namespace = Some(pod.namespace.clone());
        ev.involved_object = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            uid: Some(pod.uid.clone()),
            ..Default::default()
        };
        ev.reason = Some(reason.into());
        ev.message = Some(message);
        ev.type_ = Some(type_.into());
        ev.count = Some(1);
        ev.first_timestamp = Some(now());
        ev.last_timestamp = Some(now());
        ev.reporting_component = Some("default-scheduler".into());
        ev.source = Some(bosun_core::k8s_openapi::api::core::v1::EventSource { component: Some("default-scheduler".into()), host: None });
        let ns = pod.namespace.clone();
        self.inner.handle.spawn(async move {
            if let Err(error) = crate::writes::create_event(&*client, &ns, &ev).await {
                tracing::debug!(%error, "could not record an event");
            }
        });
    }
}

fn conditions(node: &Node) -> Vec<(String, String)> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|c| c.iter().map(|c| (c.type_.clone(), c.status.clone())).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::{node, pod};

    fn scheduler() -> Scheduler {
        let client: Arc<dyn Client> = bosun_store::ApiServer::in_memory();
        Scheduler::builder(client).build().unwrap_or_else(|e| panic!("{e}"))
    }

    fn raw_node(name: &str) -> Arc<Node> {
        Arc::new(node(name).0)
    }

    fn snapshot_names(s: &Scheduler, snap: &mut Snapshot) -> Vec<String> {
        lock(&s.inner.cache).update_snapshot(snap);
        let mut v: Vec<String> = snap.nodes().iter().map(|n| n.name.to_string()).collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn after_a_resync_the_changes_already_waiting_are_skipped_and_later_ones_kept() {
        use futures::StreamExt;
        let p = |n: &str| Change::Applied(Arc::new(pod(n).0));
        // 300 waiting (more than tokio's cooperative budget of 128), then nothing yet.
        let waiting: Vec<Change<Pod>> = (0..300).map(|i| p(&format!("w{i}"))).collect();
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let mut changes: bosun_core::watch::ChangeStream<Pod> = futures::stream::iter(waiting).chain(rx).boxed();
        assert!(!skip_ready(&mut changes).await, "the stream goes on");
        let _ = tx.unbounded_send(p("later"));
        match changes.next().await {
            Some(Change::Applied(p)) => assert_eq!(p.metadata.name.as_deref(), Some("later")),
            _ => panic!("the change sent after the skip is delivered"),
        }
        drop(tx);
        assert!(skip_ready(&mut changes).await, "an ended stream says so");
    }

    #[test]
    fn a_node_resync_leaves_the_scheduling_snapshot_to_see_every_registered_node() {
        let s = scheduler();
        let mut snap = Snapshot::default();
        s.on_node(raw_node("a"), false);
        assert_eq!(snapshot_names(&s, &mut snap), ["a"]);
        // Nodes register, then the subscriber lags and resyncs before the next scheduling cycle.
        s.on_node(raw_node("b"), false);
        s.on_node(raw_node("c"), false);
        s.resync_nodes(vec![raw_node("a"), raw_node("b")]);
        assert_eq!(snapshot_names(&s, &mut snap), ["a", "b"], "b registered, c's delete was missed");
        s.on_node(raw_node("d"), false);
        s.resync_nodes(vec![raw_node("a"), raw_node("b"), raw_node("d")]);
        assert_eq!(snapshot_names(&s, &mut snap), ["a", "b", "d"]);
    }

    #[test]
    fn nominations_reach_the_snapshot_through_the_cache() {
        use crate::node_info::NodeSummary;
        let s = scheduler();
        s.on_node(raw_node("a"), false);
        s.on_node(raw_node("b"), false);
        let mut snap = Snapshot::default();
        let p = crate::pod_info::PodInfo::new(Arc::new(pod("p").0));
        s.queue().nominator().add(p.clone(), "a");
        lock(&s.inner.cache).update_snapshot(&mut snap);
        let flagged = |snap: &Snapshot, n: &str| snap.index_of(n).is_some_and(|i| snap.summaries()[i].has(NodeSummary::NOMINATED));
        assert!(flagged(&snap, "a") && !flagged(&snap, "b"));
        s.queue().nominator().add(p.clone(), "b");
        lock(&s.inner.cache).update_snapshot(&mut snap);
        assert!(!flagged(&snap, "a") && flagged(&snap, "b"), "moved");
        s.queue().nominator().remove(&p.uid);
        lock(&s.inner.cache).update_snapshot(&mut snap);
        assert!(!flagged(&snap, "a") && !flagged(&snap, "b"), "dropped");
        assert!(snap.nodes().iter().all(|n| n.nominated.is_empty()));
    }

    #[test]
    fn a_pod_resync_forgets_pods_whose_delete_was_missed() {
        let s = scheduler();
        s.on_node(raw_node("a"), false);
        let pending = Arc::new(pod("pending").0);
        let bound = Arc::new(pod("bound").with(|p| p.spec.get_or_insert_with(Default::default).node_name = Some("a".into())).0);
        let kept = Arc::new(pod("kept").0);
        for p in [&pending, &bound, &kept] {
            s.on_pod(p.clone(), false);
        }
        assert!(s.queue().contains("uid-pending") && s.queue().contains("uid-kept"));
        assert_eq!(s.cached_pods(), 1);
        s.resync_pods(vec![kept]);
        assert!(!s.queue().contains("uid-pending"), "deleted while the subscriber lagged");
        assert!(s.queue().contains("uid-kept"));
        assert_eq!(s.cached_pods(), 0, "the bound pod's room is freed");
    }

    #[test]
    fn an_update_while_the_binding_is_in_flight_is_kept_for_a_retry_and_a_stale_one_is_not_requeued() {
        let s = scheduler();
        s.on_node(raw_node("a"), false);
        let v1 = pod("p").with(|p| p.metadata.resource_version = Some("1".into()));
        s.on_pod(Arc::new(v1.clone().0), false);
        let q = s.queue().try_pop().unwrap_or_else(|| panic!("queued"));
        let cycle = s.queue().scheduling_cycle();
        lock(&s.inner.cache).assume_pod(q.pod.clone(), "a").unwrap_or_else(|e| panic!("{e}"));
        // A label change lands while the binding is in flight.
        let v2 = v1.with(|p| {
            p.metadata.resource_version = Some("2".into());
            p.metadata.labels = Some([("tier".to_owned(), "web".to_owned())].into());
        });
        s.on_pod(Arc::new(v2.0), false);
        assert_eq!(s.queue().lens(), (0, 0, 0), "not queued a second time while in flight");
        // The binding fails: the pod is retried, judged on the newest version, without waiting for
        // an unrelated cluster event.
        let _ = lock(&s.inner.cache).forget_pod("uid-p");
        let mut q = q;
        q.unschedulable_plugins = vec!["NodeAffinity".into()];
        s.queue().add_unschedulable(q, cycle);
        assert!(s.queue().is_backing_off("uid-p"));

        // A stale unbound notification after the bound version was seen is not queued again.
        let bound = pod("b").with(|p| {
            p.metadata.resource_version = Some("5".into());
            p.spec.get_or_insert_with(Default::default).node_name = Some("a".into());
        });
        s.on_pod(Arc::new(bound.0), false);
        s.on_pod(Arc::new(pod("b").with(|p| p.metadata.resource_version = Some("4".into())).0), false);
        assert!(!s.queue().contains("uid-b"));
    }

    #[test]
    fn the_bound_version_of_an_assumed_pod_confirms_it_without_touching_its_node() {
        let s = scheduler();
        s.on_node(raw_node("a"), false);
        let v1 = pod("p").req("100m", "100Mi").with(|p| p.metadata.resource_version = Some("1".into()));
        s.on_pod(Arc::new(v1.clone().0), false);
        let q = s.queue().try_pop().unwrap_or_else(|| panic!("queued"));
        lock(&s.inner.cache).assume_pod(q.pod.clone(), "a").unwrap_or_else(|e| panic!("{e}"));
        let mut snap = Snapshot::default();
        lock(&s.inner.cache).update_snapshot(&mut snap);
        let before = snap.node("a").cloned().unwrap_or_else(|| panic!("node a"));
        let bound = v1.with(|p| {
            p.metadata.resource_version = Some("2".into());
            p.spec.get_or_insert_with(Default::default).node_name = Some("a".into());
        });
        s.on_pod(Arc::new(bound.clone().0), false);
        {
            let cache = lock(&s.inner.cache);
            assert!(!cache.is_assumed("uid-p"), "confirmed");
            let p = cache.pod("uid-p").unwrap_or_else(|| panic!("cached"));
            assert_eq!(p.node_name.as_deref(), Some("a"));
            assert_eq!(p.pod.metadata.resource_version.as_deref(), Some("2"));
            assert_eq!(p.requests.milli_cpu, 100);
        }
        assert!(!s.queue().contains("uid-p"));
        lock(&s.inner.cache).update_snapshot(&mut snap);
        let after = snap.node("a").cloned().unwrap_or_else(|| panic!("node a"));
        assert!(Arc::ptr_eq(&before, &after), "the node's accounting was already right: untouched");
        // The same notification again is a repeat: nothing changes.
        s.on_pod(Arc::new(bound.clone().0), false);
        assert_eq!(s.cached_pods(), 1);
        // A later change that matters takes the full path: the node sees the new labels.
        let relabelled = bound.with(|p| {
            p.metadata.resource_version = Some("3".into());
            p.metadata.labels = Some([("tier".to_owned(), "web".to_owned())].into());
        });
        s.on_pod(Arc::new(relabelled.0), false);
        lock(&s.inner.cache).update_snapshot(&mut snap);
        let node = snap.node("a").cloned().unwrap_or_else(|| panic!("node a"));
        assert_eq!(node.pods.len(), 1);
        assert_eq!(node.pods[0].labels().get("tier").map(String::as_str), Some("web"));
        assert_eq!(node.requested.milli_cpu, 100);
    }

    #[test]
    fn a_bound_version_that_differs_in_more_than_its_node_is_parsed_again() {
        let s = scheduler();
        s.on_node(raw_node("a"), false);
        s.on_node(raw_node("b"), false);
        let v1 = pod("p").req("100m", "100Mi").with(|p| p.metadata.resource_version = Some("1".into()));
        s.on_pod(Arc::new(v1.clone().0), false);
        let q = s.queue().try_pop().unwrap_or_else(|| panic!("queued"));
        lock(&s.inner.cache).assume_pod(q.pod.clone(), "a").unwrap_or_else(|e| panic!("{e}"));
        // Bound elsewhere (another scheduler won) with other requests.
        let other = v1.req("300m", "100Mi").with(|p| {
            p.metadata.resource_version = Some("2".into());
            p.spec.get_or_insert_with(Default::default).node_name = Some("b".into());
        });
        s.on_pod(Arc::new(other.0), false);
        let mut snap = Snapshot::default();
        lock(&s.inner.cache).update_snapshot(&mut snap);
        let on = |n: &str| snap.node(n).map(|n| (n.pods.len(), n.requested.milli_cpu));
        assert_eq!(on("a"), Some((0, 0)));
        assert_eq!(on("b"), Some((1, 300)));
        assert!(!lock(&s.inner.cache).is_assumed("uid-p"));
    }

    #[tokio::test]
    async fn waiters_for_bound_pods_wake_when_their_count_is_reached() {
        let s = scheduler();
        let (w3, w5) = (s.clone(), s.clone());
        let three = tokio::spawn(async move { w3.wait_scheduled(3).await });
        let five = tokio::spawn(async move { w5.wait_scheduled(5).await });
        tokio::task::yield_now().await;
        let bind = |s: &Scheduler| {
            let n = s.inner.counters.scheduled.fetch_add(1, Ordering::SeqCst) + 1;
            if n >= s.inner.progress.next.load(Ordering::SeqCst) {
                s.inner.progress.reached(n);
            }
        };
        for _ in 0..3 {
            bind(&s);
        }
        tokio::time::timeout(Duration::from_secs(5), three).await.unwrap_or_else(|_| panic!("3 reached")).unwrap_or_else(|e| panic!("{e}"));
        assert!(!five.is_finished());
        bind(&s);
        bind(&s);
        tokio::time::timeout(Duration::from_secs(5), five).await.unwrap_or_else(|_| panic!("5 reached")).unwrap_or_else(|e| panic!("{e}"));
        // Already reached: returns at once.
        tokio::time::timeout(Duration::from_secs(5), s.wait_scheduled(2)).await.unwrap_or_else(|_| panic!("past target"));
    }

    #[test]
    fn a_panicking_plugin_fails_one_attempt_and_the_scheduling_thread_lives_on() {
        use crate::framework::{FilterPlugin, Plugin};
        #[derive(Debug)]
        struct Boom;
        impl Plugin for Boom {
            fn name(&self) -> &'static str {
                "Boom"
            }
            fn as_filter(self: Arc<Self>) -> Option<Arc<dyn FilterPlugin>> {
                Some(self)
            }
        }
        impl FilterPlugin for Boom {
            fn filter(&self, _: &CycleState, pod: &PodInfo, _: &crate::NodeInfo) -> Status {
                assert!(pod.name != "boom", "a plugin bug");
                Status::success()
            }
        }
        let client: Arc<dyn Client> = bosun_store::ApiServer::in_memory();
        let s = Scheduler::builder(client)
            .profile(Profile::defaults(crate::DEFAULT_SCHEDULER_NAME).plugin(Boom))
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        s.on_node(raw_node("a"), false);
        s.on_pod(Arc::new(pod("boom").0), false);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| panic!("{e}"));
        let _guard = rt.enter();
        let mut snap = Snapshot::default();
        let q = s.queue().try_pop().unwrap_or_else(|| panic!("queued"));
        s.schedule_one_guarded(q, &mut snap, rt.handle());
        assert!(s.queue().is_backing_off("uid-boom"), "retried after backoff");
        assert_eq!(s.stats().errors, 1);
        assert_eq!(s.cached_pods(), 0, "nothing left assumed");
    }
}
