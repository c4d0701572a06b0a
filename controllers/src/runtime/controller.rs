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
        let store = main.store().clone();
        let name = self.name;
        let concurrency = self.concurrency;
        let mut shutdown = self.shutdown;
        async move {
            let mut triggers = futures::stream::select_all(streams);
            tokio::select! {
                () = futures::future::join_all(readies).map(drop) => {}
                () = &mut shutdown => return,
            }
            tracing::debug!(controller = %name, objects = store.len(), "watches synced; reconciling");
            for key in store.keys() {
                queue.add(key);
            }
            let mut inflight = FuturesUnordered::new();
            let mut stopping = false;
            loop {
                if stopping && inflight.is_empty() {
                    break;
                }
                tokio::select! {
                    biased;
                    () = &mut shutdown, if !stopping => stopping = true,
                    Some((key, obj, ctx, result, span)) = inflight.next(), if !inflight.is_empty() => {
                        let outcome = match result {
                            Ok(action) => Action::on_success(action),
                            Err(error) => {
                                let _enter = tracing::Span::enter(&span);
                                tracing::warn!(%error, "reconcile failed");
                                error_policy(obj, &error, ctx).on_error()
                            }
                        };
                        queue.done(&key, outcome);
                    }
                    Some(trigger) = triggers.next(), if !stopping => match trigger {
                        Trigger::Keys(keys) => keys.into_iter().for_each(|k| queue.add(k)),
                        Trigger::All => store.keys().into_iter().for_each(|k| queue.add(k)),
                    },
                    key = queue.next(), if !stopping && inflight.len() < concurrency => {
                        let Some(obj) = store.get(&key) else {
                            queue.done(&key, Outcome::Forget);
                            continue;
                        };
                        let span = tracing::debug_span!("reconcile", controller = %name, object.ref = %key);
                        let fut = reconcile(obj.clone(), ctx.clone()).instrument(span.clone());
                        let m = metrics.clone();
                        let ctx = ctx.clone();
                        let start = Instant::now();
                        inflight.push(async move {
                            let result = fut.await;
                            m.observe(start.elapsed(), result.is_err());
                            (key, obj, ctx, result, span)
                        });
                    }
                }
            }
        }
    }
}
