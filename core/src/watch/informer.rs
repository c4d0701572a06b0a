//! Shared informers: one reflector (watcher + cache) per kind and selector, however many consumers.

use super::cache::{Change, Store};
use super::watcher::{WatchError, WatcherConfig, watcher};
use crate::api::Api;
use crate::client::Client;
use crate::object::{DynamicObject, Object, TypedObject};
use crate::resource::ApiResource;
use futures::StreamExt;
use futures::stream::BoxStream;
use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, watch};

/// How a reflector is doing, so that a consumer can tell a slow start from a hang.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReflectorState {
    /// The first list has not completed yet.
    Pending,
    /// The cache is synced and the watch is running.
    Ready,
    /// The last attempt failed; it will retry after a backoff.
    BackingOff {
        /// The error of the last attempt.
        error: String,
    },
    /// The API refused access (401/403); it keeps retrying in case permissions change.
    Forbidden {
        /// The server's message.
        message: String,
    },
    /// The kind does not exist on the server (404 on list), e.g. a CRD not yet installed.
    KindMissing {
        /// The server's message.
        message: String,
    },
}

const CHANNEL_CAPACITY: usize = 16_384;

struct Shared<K> {
    store: Store<K>,
    changes: broadcast::Sender<Change<K>>,
    state: watch::Receiver<ReflectorState>,
    task: tokio::task::JoinHandle<()>,
}

impl<K> Drop for Shared<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A running reflector: a watcher feeding an indexed cache, with change notifications for subscribers.
/// Clones share it; the reflector stops when the last clone is dropped.
pub struct Informer<K> {
    shared: Arc<Shared<K>>,
}

impl<K> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Self { shared: self.shared.clone() }
    }
}

impl<K: Object> Informer<K> {
    /// Starts a reflector on the current tokio runtime. Its cache keeps objects as the server sent
    /// them, `metadata.managedFields` included; see [`Informer::spawn_stripped`].
    pub fn spawn(api: Api<K>, config: WatcherConfig) -> Self {
        Self::start(api, config, false)
    }

    /// Starts a reflector whose cache drops `metadata.managedFields` from every object, as
    /// kube-controller-manager's and kube-scheduler's informers do: the server's field-ownership
    /// bookkeeping is often a third of an object and no controller reads it. Updating an object
    /// taken from this cache keeps the server's managedFields (an update without them leaves them
    /// as they were).
    pub fn spawn_stripped(api: Api<K>, config: WatcherConfig) -> Self {
        Self::start(api, config, true)
    }

    fn start(api: Api<K>, config: WatcherConfig, strip_managed_fields: bool) -> Self {
        let store = Store::new();
        let (changes, _) = broadcast::channel(CHANNEL_CAPACITY);
        let (state_tx, state) = watch::channel(ReflectorState::Pending);
        let task = tokio::spawn(run(api, config, strip_managed_fields, store.clone(), changes.clone(), state_tx));
        Self { shared: Arc::new(Shared { store, changes, state, task }) }
    }

    /// The cache.
    pub fn store(&self) -> &Store<K> {
        &self.shared.store
    }

    /// The reflector's current state.
    pub fn state(&self) -> ReflectorState {
        self.shared.state.borrow().clone()
    }

    /// A receiver that sees every state change.
    pub fn state_changes(&self) -> watch::Receiver<ReflectorState> {
        self.shared.state.clone()
    }

    /// Waits until the first list has completed.
    pub async fn wait_ready(&self) {
        let mut rx = self.shared.state.clone();
        if self.shared.store.is_ready() {
            return;
        }
        let _ = rx.wait_for(|_| self.shared.store.is_ready()).await;
    }

    /// Changes from now on. A subscriber that falls more than 16k changes behind receives
    /// [`Change::Resync`] and should re-read the store.
    pub fn subscribe(&self) -> ChangeStream<K> {
        change_stream(self.shared.changes.subscribe())
    }
}

/// The stream of one subscriber; see [`Informer::subscribe`].
fn change_stream<K: Object>(rx: broadcast::Receiver<Change<K>>) -> ChangeStream<K> {
    futures::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(change) => Some((change, rx)),
            // The store already holds every change sent so far (changes are applied before
            // they are sent), so a lagging subscriber skips to the newest one and re-reads
            // the store. Staying at the oldest retained change would replay a backlog that the
            // resync already covers, and a busy informer would refill it before the replay
            // ends: the subscriber would resync again and again.
            Err(broadcast::error::RecvError::Lagged(_)) => Some((Change::Resync, rx.resubscribe())),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    })
    .boxed()
}

/// The change notifications of an informer.
pub type ChangeStream<K> = BoxStream<'static, Change<K>>;

fn state_of(error: &WatchError) -> ReflectorState {
    let e = error.api_error();
    match e.code() {
        401 | 403 => ReflectorState::Forbidden { message: e.to_string() },
        404 if matches!(error, WatchError::List(_)) => ReflectorState::KindMissing { message: e.to_string() },
        _ => ReflectorState::BackingOff { error: error.to_string() },
    }
}

/// Drops `metadata.managedFields` from the object an event carries.
fn strip_managed_fields<K: Object>(event: &mut super::watcher::Event<K>) {
    use super::watcher::Event;
    if let Event::InitApply(obj) | Event::Apply(obj) | Event::Delete(obj) = event {
        obj.meta_mut().managed_fields = None;
    }
}

async fn run<K: Object>(
    api: Api<K>,
    config: WatcherConfig,
    strip: bool,
    store: Store<K>,
    changes: broadcast::Sender<Change<K>>,
    state: watch::Sender<ReflectorState>,
) {
    let resource = api.resource().group_resource();
    let mut events = std::pin::pin!(watcher(api, config));
    while let Some(item) = events.next().await {
        match item {
            Ok(mut event) => {
                if strip {
                    strip_managed_fields(&mut event);
                }
                let done = matches!(event, super::watcher::Event::InitDone);
                for change in store.apply(event) {
                    let _ = changes.send(change);
                }
                if done {
                    tracing::debug!(%resource, objects = store.len(), "reflector synced");
                    state.send_replace(ReflectorState::Ready);
                } else if !matches!(*state.borrow(), ReflectorState::Ready | ReflectorState::Pending) {
                    state.send_replace(ReflectorState::Ready);
                }
            }
            Err(error) => {
                tracing::warn!(%resource, %error, "reflector error; retrying");
                state.send_replace(state_of(&error));
            }
        }
    }
}

type InformerKey = (std::any::TypeId, String, String, String, Option<String>, Option<String>, Option<String>, bool);

/// A factory that hands out one shared informer per kind, namespace and selector.
#[derive(Clone)]
pub struct Informers {
    client: Arc<dyn Client>,
    informers: Arc<Mutex<HashMap<InformerKey, Box<dyn Any + Send + Sync>>>>,
    config: WatcherConfig,
    keep_managed_fields: bool,
}

impl Informers {
    /// A factory over a client. Its informers drop `metadata.managedFields` from cached objects,
    /// as kube-controller-manager's and kube-scheduler's do (see [`Informer::spawn_stripped`]);
    /// [`Informers::keep_managed_fields`] keeps them.
    pub fn new(client: Arc<dyn Client>) -> Self {
        Self { client, informers: Arc::default(), config: WatcherConfig::default(), keep_managed_fields: false }
    }

    /// Informers started from now on keep `metadata.managedFields` in their caches (default: dropped).
    #[must_use]
    pub fn keep_managed_fields(mut self, keep: bool) -> Self {
        self.keep_managed_fields = keep;
        self
    }

    /// Sets the watcher settings of informers started from now on (default: [`WatcherConfig::default`]).
    #[must_use]
    pub fn config(mut self, config: WatcherConfig) -> Self {
        self.config = config;
        self
    }

    /// The client informers use.
    pub fn client(&self) -> &Arc<dyn Client> {
        &self.client
    }

    /// The informer of every `K` (in every namespace), starting it on first use.
    pub fn all<K: TypedObject>(&self) -> Informer<K> {
        self.get(Api::all(self.client.clone()), None, None)
    }

    /// The informer of `K` in one namespace.
    pub fn namespaced<K: TypedObject>(&self, namespace: &str) -> Informer<K> {
        self.get(Api::namespaced(self.client.clone(), namespace), None, None)
    }

    /// The informer of a resource described at run time.
    pub fn dynamic(&self, resource: ApiResource, namespace: Option<&str>) -> Informer<DynamicObject> {
        self.get(Api::dynamic(self.client.clone(), resource, namespace), None, None)
    }

    /// The informer of `api`'s kind and namespace, filtered by selectors.
    pub fn get<K: Object>(&self, api: Api<K>, labels: Option<&str>, fields: Option<&str>) -> Informer<K> {
        let r = api.resource();
        let key = (
            std::any::TypeId::of::<K>(),
            r.group.to_string(),
            r.version.to_string(),
            r.kind.to_string(),
            api.namespace().map(str::to_owned),
            labels.map(str::to_owned),
            fields.map(str::to_owned),
            self.keep_managed_fields,
        );
        let mut map = self.informers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(existing) = map.get(&key).and_then(|b| b.downcast_ref::<Informer<K>>()) {
            return existing.clone();
        }
        let mut config = self.config.clone();
        config.label_selector = labels.map(str::to_owned);
        config.field_selector = fields.map(str::to_owned);
        let informer = Informer::start(api, config, !self.keep_managed_fields);
        map.insert(key, Box::new(informer.clone()));
        informer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use std::sync::Arc;

    fn named(name: &str) -> Change<ConfigMap> {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name.into());
        Change::Applied(Arc::new(cm))
    }

    fn name(change: &Change<ConfigMap>) -> String {
        match change {
            Change::Applied(o) | Change::Deleted(o) => o.metadata.name.clone().unwrap_or_default(),
            Change::Resync => "resync".into(),
        }
    }

    #[tokio::test]
    async fn a_lagging_subscriber_resyncs_once_and_then_sees_only_new_changes() {
        let (tx, rx) = broadcast::channel(4);
        let mut changes = change_stream(rx);
        for i in 0..10 {
            tx.send(named(&format!("old-{i}"))).expect("a receiver exists");
        }
        let first = changes.next().await.expect("open");
        assert_eq!(name(&first), "resync");
        // The backlog the resync covers is skipped, not replayed.
        tx.send(named("new")).expect("a receiver exists");
        let next = changes.next().await.expect("open");
        assert_eq!(name(&next), "new");
        drop(tx);
        assert!(changes.next().await.is_none(), "the stream ends with the informer");
    }
}
