//! The reconcile loop: a [`Controller`] watches a kind (and what it owns or maps from), feeds a
//! [`WorkQueue`] of object keys, and calls a reconciler for each key with bounded concurrency.

use super::metrics::{ControllerMetrics, Metrics};
use super::queue::{Outcome, QueueConfig, WorkQueue};
use bosun_core::meta::controller_of;
use bosun_core::watch::{Change, Informer, Informers, ReflectorState, Store};
use bosun_core::{Api, Object, ObjectKey};
use futures::future::BoxFuture;
use futures::stream::{BoxStream, FuturesUnordered};
use futures::{FutureExt, StreamExt};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument;

/// What a reconciler (or an error policy) asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Action {
    kind: ActionKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ActionKind {
    Requeue(Duration),
    AwaitChange,
    Backoff,
}

impl Action {
    /// Run again after `after`, even without a change.
    pub fn requeue(after: Duration) -> Self {
        Self { kind: ActionKind::Requeue(after) }
    }

    /// Run again only when the object (or something it owns or watches) changes.
    pub fn await_change() -> Self {
        Self { kind: ActionKind::AwaitChange }
    }

    /// Retry with the queue's per-key exponential backoff (5 ms doubling to 1000 s); the natural
    /// answer of an error policy.
    pub fn backoff() -> Self {
        Self { kind: ActionKind::Backoff }
    }

    /// The requeue delay, if this action asks for one.
    pub fn requeue_after(&self) -> Option<Duration> {
        match self.kind {
            ActionKind::Requeue(d) => Some(d),
            _ => None,
        }
    }

    fn on_success(self) -> Outcome {
        match self.kind {
            ActionKind::Requeue(d) => Outcome::Success(Some(d)),
            ActionKind::AwaitChange => Outcome::Success(None),
            ActionKind::Backoff => Outcome::Backoff,
        }
    }

    fn on_error(self) -> Outcome {
        match self.kind {
            ActionKind::Requeue(d) => Outcome::RetryAfter(d),
            ActionKind::AwaitChange => Outcome::AwaitChange,
            ActionKind::Backoff => Outcome::Backoff,
        }
    }
}

/// The error policy most controllers want: retry with per-key exponential backoff.
pub fn backoff_policy<K, E, Ctx>(_obj: Arc<K>, _error: &E, _ctx: Arc<Ctx>) -> Action {
    Action::backoff()
}

/// What a trigger source yields.
enum Trigger {
    Keys(Vec<ObjectKey>),
    All,
}

struct Source {
    resource: String,
    state: Box<dyn Fn() -> ReflectorState + Send + Sync>,
    ready: BoxFuture<'static, ()>,
    triggers: BoxStream<'static, Trigger>,
}

type SourceFn = Box<dyn FnOnce(&Informers) -> Source + Send>;

fn source_of<C: Object>(informer: Informer<C>, map: impl Fn(&C) -> Vec<ObjectKey> + Send + Sync + 'static) -> Source {
    let state_informer = informer.clone();
    let ready_informer = informer.clone();
    let triggers = informer
        .subscribe()
        .map(move |change| match change {
            Change::Applied(obj) | Change::Deleted(obj) => Trigger::Keys(map(&obj)),
            Change::Resync => Trigger::All,
        })
        .boxed();
    Source {
        resource: String::new(),
        state: Box::new(move || state_informer.state()),
        ready: async move { ready_informer.wait_ready().await }.boxed(),
        triggers,
    }
}

/// A controller of kind `K` under construction; [`run`](Self::run) starts it.
///
/// ```no_run
/// # use bosun_controllers::runtime::{Action, Controller, backoff_policy};
/// # use bosun_core::{Api, k8s_openapi::api::{apps::v1::ReplicaSet, core::v1::Pod}};
/// # use std::sync::Arc;
/// # async fn example(client: Arc<dyn bosun_core::Client>) {
/// async fn reconcile(rs: Arc<ReplicaSet>, _ctx: Arc<()>) -> Result<Action, bosun_core::Error> {
///     Ok(Action::await_change())
/// }
/// Controller::new(Api::<ReplicaSet>::all(client.clone()))
///     .owns(Api::<Pod>::all(client))
///     .run(reconcile, backoff_policy, Arc::new(()))
///     .await;
/// # }
/// ```
#[must_use = "a controller does nothing until it is run"]
pub struct Controller<K: Object> {
    api: Api<K>,
    informers: Informers,
    metrics: Metrics,
    name: String,
    concurrency: usize,
    queue: QueueConfig,
    sources: Vec<SourceFn>,
    shutdown: BoxFuture<'static, ()>,
}

impl<K: Object> Controller<K> {
    /// A controller of the objects `api` sees, with its own informers and metrics registry.
    pub fn new(api: Api<K>) -> Self {
        let informers = Informers::new(api.client().clone());
        let name = api.resource().kind.to_lowercase();
        Self {
            api,
            informers,
            metrics: Metrics::new(),
            name,
            concurrency: 16,
            queue: QueueConfig::default(),
            sources: Vec::new(),
            shutdown: futures::future::pending().boxed(),
        }
    }

    /// Shares reflectors with other controllers through this factory (default: a private one).
    /// Set it before `owns`/`watches`/`store` so that they use it.
    pub fn informers(mut self, informers: &Informers) -> Self {
        self.informers = informers.clone();
        self
    }

    /// Reports into this metrics registry (default: a private one).
    pub fn metrics(mut self, metrics: &Metrics) -> Self {
        self.metrics = metrics.clone();
        self
    }

    /// Names the controller in metrics and spans (default: the kind, lower-cased).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Runs at most this many reconciles at once (default 16; at least 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Sets the work queue's backoff and retry rate limit (default: [`QueueConfig::default`]).
    pub fn queue_config(mut self, config: QueueConfig) -> Self {
        self.queue = config;
        self
    }

    /// Stops taking new keys when `signal` completes; `run` returns once in-flight reconciles end
    /// (default: never).
    pub fn graceful_shutdown_on(mut self, signal: impl Future<Output = ()> + Send + 'static) -> Self {
        self.shutdown = signal.boxed();
        self
    }

    /// The client the controller's watches use.
    pub fn client(&self) -> Arc<dyn bosun_core::Client> {
        self.api.client().clone()
    }

    /// The informers factory the controller's watches come from.
    pub fn informers_factory(&self) -> &Informers {
        &self.informers
    }

    /// The informer of the controlled kind (shared through the informers factory).
    pub fn informer(&self) -> Informer<K> {
        self.informers.get(self.api.clone(), None, None)
    }

    /// The cache of the controlled kind.
    pub fn store(&self) -> Store<K> {
        self.informer().store().clone()
    }

    /// The metrics of this controller.
    pub fn controller_metrics(&self) -> Arc<ControllerMetrics> {
        self.metrics.controller(&self.name)
    }

    /// Reconciles the controlling owner (of kind `K`) when an object of `api` changes.
    pub fn owns<C: Object>(mut self, api: Api<C>) -> Self {
        let owner = self.api.resource().clone();
        let resource = api.resource().group_resource();
        self.sources.push(Box::new(move |informers: &Informers| {
            let informer = informers.get(api, None, None);
            let mut source = source_of(informer, move |child: &C| {
                controller_of(child.meta())
                    .filter(|r| r.kind == owner.kind.as_ref() && r.api_version == owner.api_version())
                    .map(|r| vec![ObjectKey::new(child.namespace(), r.name.clone())])
                    .unwrap_or_default()
            });
            source.resource = resource;
            source
        }));
        self
    }

    /// Reconciles the keys `mapper` returns when an object of `api` changes (also on delete, with
    /// its last state).
    pub fn watches<C, I, F>(mut self, api: Api<C>, mapper: F) -> Self
    where
        C: Object,
        I: IntoIterator<Item = ObjectKey>,
        F: Fn(&C) -> I + Send + Sync + 'static,
    {
        let resource = api.resource().group_resource();
        self.sources.push(Box::new(move |informers: &Informers| {
            let informer = informers.get(api, None, None);
            let mut source = source_of(informer, move |obj: &C| mapper(obj).into_iter().collect());
            source.resource = resource;
            source
        }));
        self
    }

    /// Runs the controller until the shutdown signal: waits for its watches to sync, then
    /// reconciles every object and every change. Errors go through `error_policy`.
    pub fn run<Ctx, E, Fut, R, P>(self, reconcile: R, error_policy: P, ctx: Arc<Ctx>) -> impl Future<Output = ()> + Send + 'static
    where
        Ctx: Send + Sync + 'static,
        E: std::fmt::Display + Send + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
        R: Fn(Arc<K>, Arc<Ctx>) -> Fut + Send + Sync + 'static,
        P: Fn(Arc<K>, &E, Arc<Ctx>) -> Action + Send + Sync + 'static,
    {
        let metrics = self.controller_metrics();
        let main = self.informer();
        let mut main_source = source_of(main.clone(), |obj: &K| vec![ObjectKey::of(obj)]);
        main_source.resource = self.api.resource().group_resource();
        let mut sources = vec![main_source];
        for make in self.sources {
            sources.push(make(&self.informers));
        }
        let queue = Arc::new(WorkQueue::<ObjectKey>::new(self.queue));
        let probe = queue.clone();
        metrics.set_queue(move || probe.stats());
        let mut readies = Vec::new();
        let mut streams = Vec::new();
        for s in sources {
            metrics.add_watch(s.resource, s.state);
            readies.push(s.ready);
            streams.push(s.triggers);
        }
        let worker = Worker { queue, store: main.store().clone(), name: self.name, concurrency: self.concurrency, metrics };
        let mut shutdown = self.shutdown;
        async move {
            let triggers = futures::stream::select_all(streams);
            tokio::select! {
                () = futures::future::join_all(readies).map(drop) => {}
                () = &mut shutdown => return,
            }
            tracing::debug!(controller = %worker.name, objects = worker.store.len(), "watches synced; reconciling");
            for key in worker.store.keys() {
                worker.queue.add(key);
            }
            worker.run(triggers, shutdown, reconcile, error_policy, ctx).await;
        }
    }
}

/// The most buffered triggers one turn of the loop takes (the coop budget, 128, usually ends a
/// turn's draining first).
const TRIGGER_BATCH: usize = 1024;

/// How many triggers the loop takes, while more keep coming, before it starts due work anyway.
/// Work waits for the trigger channel to empty, so that a burst of changes to one key (10,000
/// pods of one ReplicaSet) coalesces into few runs; this bounds that wait under a flood that never
/// empties the channel.
const TRIGGER_CAP: usize = 4096;

/// What a finished reconcile hands back to the loop.
type Finished<K, Ctx, E> = (ObjectKey, Arc<K>, Arc<Ctx>, Result<Action, E>, tracing::Span);

/// The loop's state: the queue it feeds, the cache it reads objects from, and its limits.
struct Worker<K> {
    queue: Arc<WorkQueue<ObjectKey>>,
    store: Store<K>,
    name: String,
    concurrency: usize,
    metrics: Arc<ControllerMetrics>,
}

impl<K: Object> Worker<K> {
    /// Runs until `shutdown` completes and the reconciles in flight have ended.
    ///
    /// Every turn takes finished runs, then the triggers already buffered (at most
    /// [`TRIGGER_BATCH`]); once the trigger channel is empty, or [`TRIGGER_CAP`] triggers were taken
    /// since work last started, it starts as much due work as the concurrency allows; only then
    /// does it wait for the next of these. Taking triggers first lets repeated changes of a key
    /// coalesce before it runs; the cap means a flood of triggers (each of which spends the task's
    /// coop budget, so that a loop waiting for an empty channel would never reach the queue)
    /// cannot starve due keys.
    async fn run<Ctx, E, Fut, R, P>(
        self,
        mut triggers: impl futures::Stream<Item = Trigger> + Unpin,
        mut shutdown: BoxFuture<'static, ()>,
        reconcile: R,
        error_policy: P,
        ctx: Arc<Ctx>,
    ) where
        Ctx: Send + Sync + 'static,
        E: std::fmt::Display + Send + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
        R: Fn(Arc<K>, Arc<Ctx>) -> Fut,
        P: Fn(Arc<K>, &E, Arc<Ctx>) -> Action,
    {
        let mut inflight = FuturesUnordered::new();
        let mut stopping = false;
        // Triggers taken since work last started.
        let mut taken = 0usize;
        loop {
            if !stopping && (&mut shutdown).now_or_never().is_some() {
                stopping = true;
            }
            while let Some(Some(finished)) = inflight.next().now_or_never() {
                self.finish(finished, &error_policy);
            }
            if stopping && inflight.is_empty() {
                break;
            }
            if !stopping {
                let mut drained = false;
                for _ in 0..TRIGGER_BATCH {
                    match triggers.next().now_or_never() {
                        Some(Some(trigger)) => {
                            self.trigger(trigger);
                            taken += 1;
                        }
                        Some(None) => {
                            drained = true;
                            break;
                        }
                        // Pending: the channel is empty, unless the budget ran out first.
                        None => {
                            drained = tokio::task::coop::has_budget_remaining();
                            break;
                        }
                    }
                }
                if drained || taken >= TRIGGER_CAP {
                    taken = 0;
                    while inflight.len() < self.concurrency {
                        let Some(key) = self.queue.try_next() else { break };
                        inflight.extend(self.start(key, &reconcile, &ctx));
                    }
                }
            }
            // Wait for the next thing to do. With the coop budget spent this returns at once
            // (tokio's `select!` answers Pending and reschedules the task): the next turn starts
            // on a fresh budget with the runs in flight.
            tokio::select! {
                biased;
                () = &mut shutdown, if !stopping => stopping = true,
                Some(finished) = inflight.next(), if !inflight.is_empty() => self.finish(finished, &error_policy),
                Some(trigger) = triggers.next(), if !stopping => {
                    self.trigger(trigger);
                    taken += 1;
                }
                key = self.queue.next(), if !stopping && inflight.len() < self.concurrency => {
                    taken = 0;
                    inflight.extend(self.start(key, &reconcile, &ctx));
                }
            }
        }
    }

    fn trigger(&self, trigger: Trigger) {
        match trigger {
            Trigger::Keys(keys) => keys.into_iter().for_each(|k| self.queue.add(k)),
            Trigger::All => self.store.keys().into_iter().for_each(|k| self.queue.add(k)),
        }
    }

    /// Starts a run of `key`, or forgets the key when its object is gone from the cache.
    fn start<Ctx, E, Fut, R>(
        &self,
        key: ObjectKey,
        reconcile: &R,
        ctx: &Arc<Ctx>,
    ) -> Option<impl Future<Output = Finished<K, Ctx, E>> + use<K, Ctx, E, Fut, R>>
    where
        Ctx: Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
        R: Fn(Arc<K>, Arc<Ctx>) -> Fut,
    {
        let Some(obj) = self.store.get(&key) else {
            self.queue.done(&key, Outcome::Forget);
            return None;
        };
        let span = tracing::debug_span!("reconcile", controller = %self.name, object.ref = %key);
        let fut = reconcile(obj.clone(), ctx.clone()).instrument(span.clone());
        let m = self.metrics.clone();
        let ctx = ctx.clone();
        let start = Instant::now();
        Some(async move {
            let result = fut.await;
            m.observe(start.elapsed(), result.is_err());
            (key, obj, ctx, result, span)
        })
    }

    fn finish<Ctx, E, P>(&self, (key, obj, ctx, result, span): Finished<K, Ctx, E>, error_policy: &P)
    where
        E: std::fmt::Display,
        P: Fn(Arc<K>, &E, Arc<Ctx>) -> Action,
    {
        let outcome = match result {
            Ok(action) => Action::on_success(action),
            Err(error) => {
                let _enter = span.enter();
                tracing::warn!(%error, "reconcile failed");
                error_policy(obj, &error, ctx).on_error()
            }
        };
        self.queue.done(&key, outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::super::metrics::Metrics;
    use super::*;
    use bosun_core::watch::Event;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn config_map(i: usize) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta { name: Some(format!("cm-{i}")), namespace: Some("default".into()), ..ObjectMeta::default() },
            ..ConfigMap::default()
        }
    }

    /// An informer whose channel is never empty: a change of one of `keys` (round robin) is always
    /// ready, and each spends a unit of the coop budget as a broadcast receive does. Ends after
    /// `limit` changes (then stays silent), so a loop that waits for the flood to end fails the
    /// test instead of hanging it.
    fn flood(keys: Vec<ObjectKey>, limit: usize, taken: Arc<AtomicUsize>) -> BoxStream<'static, Trigger> {
        futures::stream::unfold(0usize, move |i| {
            let key = keys[i % keys.len()].clone();
            let taken = taken.clone();
            async move {
                if i >= limit {
                    futures::future::pending::<()>().await;
                }
                tokio::task::consume_budget().await;
                taken.fetch_add(1, Ordering::Relaxed);
                Some((Trigger::Keys(vec![key]), i + 1))
            }
        })
        .boxed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_triggers_does_not_starve_due_keys() {
        const KEYS: usize = 100;
        const FLOOD: usize = 300_000;
        let store = Store::<ConfigMap>::new();
        for i in 0..KEYS {
            let _ = store.apply(Event::Apply(config_map(i)));
        }
        let keys = store.keys();
        let queue = Arc::new(WorkQueue::new(QueueConfig::default()));
        keys.iter().for_each(|k| queue.add(k.clone()));
        let taken = Arc::new(AtomicUsize::new(0));
        // Per key: how many triggers the loop had taken when the key first ran.
        let first_runs = Arc::new(Mutex::new(HashMap::<ObjectKey, usize>::new()));
        let all_ran = Arc::new(tokio::sync::Notify::new());
        let reconcile = {
            let (taken, first_runs, all_ran) = (taken.clone(), first_runs.clone(), all_ran.clone());
            move |cm: Arc<ConfigMap>, _ctx: Arc<()>| {
                let at = taken.load(Ordering::Relaxed);
                let mut runs = first_runs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                runs.entry(ObjectKey::of(&*cm)).or_insert(at);
                if runs.len() == KEYS {
                    all_ran.notify_one();
                }
                drop(runs);
                async { Ok::<_, std::convert::Infallible>(Action::await_change()) }
            }
        };
        let worker = Worker { queue, store, name: "flood".into(), concurrency: 4, metrics: Metrics::new().controller("flood") };
        let shutdown = async move { all_ran.notified().await }.boxed();
        let start = Instant::now();
        worker.run(flood(keys, FLOOD, taken.clone()), shutdown, reconcile, |_, _, _| Action::backoff(), Arc::new(())).await;

        let runs = first_runs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        assert_eq!(runs.len(), KEYS, "every due key ran");
        let latest = runs.values().copied().max().unwrap_or(usize::MAX);
        // 100 keys, 4 at a time: work starts 25 times, each after at most the cap and one coop
        // budget (128) of triggers. A loop that waits for an empty channel runs nothing until the
        // flood ends.
        assert!(latest <= 25 * (TRIGGER_CAP + 128), "the last key first ran after {latest} of {FLOOD} triggers");
        assert_eq!(start.elapsed(), Duration::ZERO, "no virtual time passed: nothing waited on a timer");
    }

    #[tokio::test(start_paused = true)]
    async fn triggers_that_arrive_together_coalesce_into_one_run() {
        let store = Store::<ConfigMap>::new();
        let _ = store.apply(Event::Apply(config_map(0)));
        let key = ObjectKey::of(&config_map(0));
        let queue = Arc::new(WorkQueue::new(QueueConfig::default()));
        let (tx, rx) = futures::channel::mpsc::unbounded();
        for _ in 0..50 {
            let _ = tx.unbounded_send(Trigger::Keys(vec![key.clone()]));
        }
        let runs = Arc::new(AtomicUsize::new(0));
        let reconcile = {
            let runs = runs.clone();
            move |_: Arc<ConfigMap>, _: Arc<()>| {
                runs.fetch_add(1, Ordering::Relaxed);
                async { Ok::<_, std::convert::Infallible>(Action::await_change()) }
            }
        };
        let worker = Worker { queue, store, name: "burst".into(), concurrency: 4, metrics: Metrics::new().controller("burst") };
        let shutdown = tokio::time::sleep(Duration::from_secs(1)).boxed();
        worker.run(rx, shutdown, reconcile, |_, _, _| Action::backoff(), Arc::new(())).await;
        drop(tx);
        assert_eq!(runs.load(Ordering::Relaxed), 1, "50 buffered triggers of one key ran it once");
    }
}
