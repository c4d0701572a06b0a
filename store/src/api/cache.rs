//! The watch cache: one storage watch per kind, kept in memory, serving lists and fanning every
//! change out to the kind's watchers, each behind a bounded queue.

use super::codec;
use super::strategy::{Kind, Rules};
use crate::storage::{RangeRequest, Revision, Storage, WatchEvent as StorageEvent, WatchOptions};
use bosun_core::client::Bookmark;
use bosun_core::{DynamicObject, Error, FieldSelector, LabelSelector, Result, WatchEvent};
use bytes::Bytes;
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, watch};

/// Tuning of the watch cache.
#[derive(Debug, Clone)]
pub(crate) struct CacheOptions {
    /// Events kept per kind for watches that resume from an older version.
    pub history: usize,
    /// Events queued per watcher before it is ended as too slow.
    pub watcher_queue: usize,
    /// How often watchers that asked for bookmarks get one.
    pub bookmark_interval: Duration,
    /// How long a read waits for the cache to reach a version before giving up.
    pub wait_timeout: Duration,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self { history: 100_000, watcher_queue: 4096, bookmark_interval: Duration::from_secs(30), wait_timeout: Duration::from_secs(3) }
    }
}

/// What a list or watch selects objects by: the namespace, the labels and the kind's selectable
/// fields of one version, kept beside its stored bytes so that a version need not stay decoded.
#[derive(Debug, Default)]
pub(crate) struct Attrs {
    namespace: Option<Box<str>>,
    /// `metadata.deletionTimestamp` is set.
    deleting: bool,
    labels: Option<BTreeMap<String, String>>,
    /// `metadata.name` and the kind's selectable fields, each with the value a field selector
    /// compares (the kind's defaults filled in); empty values are left out.
    fields: Box<[(&'static str, Box<str>)]>,
}

impl Attrs {
    /// The selectable attributes of an object of this kind.
    pub(crate) fn of(kind: &Kind, obj: &DynamicObject) -> Self {
        let fields = std::iter::once("metadata.name")
            .chain(kind.selectable_fields().iter().copied())
            .filter_map(|f| kind.field_value(obj, f).filter(|v| !v.is_empty()).map(|v| (f, Box::from(v.as_ref()))))
            .collect();
        Self {
            namespace: obj.metadata.namespace.as_deref().map(Box::from),
            deleting: obj.metadata.deletion_timestamp.is_some(),
            labels: obj.metadata.labels.clone(),
            fields,
        }
    }

    /// A field's value ("" when empty or not selectable).
    fn field(&self, field: &str) -> &str {
        if field == "metadata.namespace" {
            return self.namespace.as_deref().unwrap_or("");
        }
        self.fields.iter().find(|(f, _)| *f == field).map_or("", |(_, v)| v)
    }
}

/// One version of an object as the cache holds it: the bytes storage holds for it (shared with
/// the storage that handed them out, not copied), its revision and what filters select it by.
/// A decoded object takes several times the memory of its JSON (a pod ~20 KB against ~3 KB), so
/// the object is decoded only when a reader takes it.
#[derive(Debug)]
pub struct Cached {
    /// The storage key.
    pub(crate) key: Arc<str>,
    /// The revision this version was written at.
    pub(crate) revision: Revision,
    /// The bytes storage holds for this version (without `resourceVersion`).
    stored: Bytes,
    attrs: Attrs,
}

impl Cached {
    /// A cache entry for a stored version with its selectable attributes.
    pub(crate) fn stored(key: Arc<str>, bytes: Bytes, revision: Revision, attrs: Attrs) -> Self {
        Self { key, revision, stored: bytes, attrs }
    }

    /// A cache entry for a stored version, decoded once for its attributes.
    pub(crate) fn decode(kind: &Kind, key: Arc<str>, bytes: Bytes, revision: Revision) -> Result<(Self, DynamicObject)> {
        let obj = codec::decode(&bytes, revision)?;
        let attrs = Attrs::of(kind, &obj);
        Ok((Self::stored(key, bytes, revision, attrs), obj))
    }

    /// The object, decoded from its stored bytes, `metadata.resourceVersion` set.
    pub fn object(&self) -> Result<DynamicObject> {
        codec::decode(&self.stored, self.revision)
    }

    /// The object's JSON as clients see it: the stored bytes with `resourceVersion` spliced in.
    pub fn encoded(&self) -> Result<Bytes> {
        codec::shown(&self.stored, self.revision)
    }

    /// Whether the object is being deleted (`metadata.deletionTimestamp` is set).
    pub(crate) fn deleting(&self) -> bool {
        self.attrs.deleting
    }

    /// The value of a selectable field ("" when empty).
    pub(crate) fn field(&self, field: &str) -> &str {
        self.attrs.field(field)
    }

    fn node(&self) -> Option<&str> {
        Some(self.attrs.field("spec.nodeName")).filter(|n| !n.is_empty())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Added,
    Modified,
    Deleted,
}

/// A change as it is dispatched to the watchers. For a deletion `obj` is the last version.
#[derive(Debug)]
struct CacheEvent {
    revision: Revision,
    change: Change,
    obj: Arc<Cached>,
    prev: Option<Arc<Cached>>,
}

/// A change as the history keeps it: stored bytes only (shared with storage while it keeps the
/// version), decoded again when a watch resumes from before it. A decoded object takes several
/// times the memory of its JSON, and the history holds up to 100,000 changes per kind.
#[derive(Debug, Clone)]
pub(crate) struct Past {
    revision: Revision,
    change: Change,
    key: Arc<str>,
    /// The object after the change (`None` for a deletion: then `prev` is its last version).
    obj: Option<Bytes>,
    /// The object before the change.
    prev: Option<Bytes>,
}

/// One change's object as every watcher that receives it shares it: decoded at most once, by the
/// first watcher that takes it, and dropped with the last queue that holds it (the cache and its
/// history keep only bytes). A watcher that is the last holder takes the decoded object without
/// a copy.
#[derive(Debug)]
pub(crate) struct Delivery {
    cached: Arc<Cached>,
    /// The version the object is shown with: its own, or the deletion's for a deletion.
    stamp: Revision,
    decoded: OnceLock<std::result::Result<DynamicObject, Error>>,
    /// The object's JSON at `stamp`, made once for every watcher that is sent bytes.
    encoded: OnceLock<std::result::Result<Bytes, Error>>,
}

impl Delivery {
    fn new(cached: Arc<Cached>, stamp: Revision) -> Arc<Self> {
        Arc::new(Self { cached, stamp, decoded: OnceLock::new(), encoded: OnceLock::new() })
    }

    /// The object's JSON as clients see it, spliced from the stored bytes once per change.
    fn encoded(&self) -> Result<Bytes> {
        self.encoded.get_or_init(|| codec::shown(&self.cached.stored, self.stamp)).clone()
    }

    fn decode(&self) -> Result<DynamicObject> {
        codec::decode(&self.cached.stored, self.stamp)
    }

    /// The object: moved out when this is the last holder, else a copy of the shared decoding.
    fn take(self: Arc<Self>) -> Result<DynamicObject> {
        match Arc::try_unwrap(self) {
            Ok(mut only) => only.decoded.take().unwrap_or_else(|| only.decode()),
            Err(shared) => shared.decoded.get_or_init(|| shared.decode()).clone(),
        }
    }
}

/// One event waiting for a watcher: the change's shared delivery, decoded only when a watcher
/// takes it, so that a queue holds pointers, not objects.
#[derive(Debug)]
pub(crate) enum Queued {
    /// A change.
    Object(Change, Arc<Delivery>),
    /// A bookmark at a revision.
    Bookmark(Revision),
}

impl Queued {
    /// The watch event, the object decoded from the cache's bytes (once per change, however
    /// many watchers receive it).
    pub(crate) fn into_event(self) -> WatchEvent<DynamicObject> {
        match self {
            Self::Object(change, delivery) => {
                let obj = match delivery.take() {
                    Ok(obj) => obj,
                    Err(error) => return WatchEvent::Error(error.to_status()),
                };
                match change {
                    Change::Added => WatchEvent::Added(obj),
                    Change::Modified => WatchEvent::Modified(obj),
                    Change::Deleted => WatchEvent::Deleted(obj),
                }
            }
            Self::Bookmark(revision) => {
                WatchEvent::Bookmark(Bookmark { resource_version: revision.to_string(), annotations: BTreeMap::new() })
            }
        }
    }
}

impl Change {
    /// The watch event's `type`.
    pub(crate) fn type_name(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

impl Queued {
    /// The change as the line a JSON watch sends, `{"type":…,"object":…}` and a newline, with
    /// the object's JSON made once and shared by every watcher of the change (kube-apiserver's
    /// caching of serialized objects). `None` for a bookmark, and for a custom resource stored
    /// in another version than `api_version`, the one it is watched in.
    pub(crate) fn shared_line(&self, api_version: Option<&str>) -> Option<Result<Bytes>> {
        let Self::Object(change, delivery) = self else { return None };
        match delivery.encoded() {
            Ok(json) if api_version.is_some_and(|v| !codec::has_api_version(&json, v)) => None,
            Ok(json) => Some(Ok(codec::watch_line(change.type_name(), &json))),
            Err(e) => Some(Err(e)),
        }
    }
}

/// An event a new watcher starts with: an object of the current state, or a past change, decoded
/// (and filtered) when the watcher reaches it, so that a watch starting with 150,000 objects or
/// resuming far back does not decode them all at once.
pub(crate) enum Initial {
    /// An object of the current state, as `ADDED` (a pointer until the watcher reaches it).
    Current(Arc<Cached>),
    /// A change from the history, with the cache's current version of the object when it is the
    /// version the change wrote (nothing to decode then).
    Replay(Arc<Filter>, Past, Option<Arc<Cached>>),
}

impl Initial {
    /// The event, if the watcher's filter selects it.
    pub(crate) fn resolve(self) -> Option<Queued> {
        match self {
            Self::Current(c) => {
                let revision = c.revision;
                Some(Queued::Object(Change::Added, Delivery::new(c, revision)))
            }
            Self::Replay(filter, past, current) => replay(&filter, past, current),
        }
    }
}

/// What a list or watch selects.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    pub(crate) namespace: Option<String>,
    pub(crate) labels: LabelSelector,
    pub(crate) fields: FieldSelector,
    pub(crate) kind: Arc<Kind>,
}

impl Filter {
    /// Whether the filter selects by labels or fields (else only by namespace).
    fn selective(&self) -> bool {
        !self.labels.is_empty() || !self.fields.is_empty()
    }

    pub(crate) fn matches(&self, obj: &DynamicObject) -> bool {
        if let Some(ns) = self.namespace.as_deref()
            && obj.metadata.namespace.as_deref() != Some(ns)
        {
            return false;
        }
        self.labels.matches_opt(obj.metadata.labels.as_ref())
            && (self.fields.is_empty() || self.fields.matches(|f| self.kind.field_value(obj, f)))
    }

    /// Whether the filter selects a cached version.
    fn selects(&self, c: &Cached) -> bool {
        if let Some(ns) = self.namespace.as_deref()
            && c.attrs.namespace.as_deref() != Some(ns)
        {
            return false;
        }
        self.labels.matches_opt(c.attrs.labels.as_ref())
            && (self.fields.is_empty() || self.fields.matches(|f| Some(std::borrow::Cow::Borrowed(c.attrs.field(f)))))
    }
}

struct Watcher {
    filter: Arc<Filter>,
    tx: mpsc::Sender<Queued>,
    bookmarks: bool,
    overflow: Arc<AtomicBool>,
}

#[derive(Default)]
struct State {
    ready: bool,
    /// Every change up to this revision is applied.
    revision: Revision,
    /// History holds every change after this revision.
    oldest: Revision,
    /// The revision of the last change to this kind.
    last_change: Revision,
    items: BTreeMap<Arc<str>, Arc<Cached>>,
    history: VecDeque<Past>,
    /// Pods by `spec.nodeName`.
    by_node: HashMap<String, BTreeSet<Arc<str>>>,
}

/// A page of a list served from the cache.
pub(crate) struct Page {
    pub(crate) revision: Revision,
    pub(crate) items: Vec<Arc<Cached>>,
    pub(crate) more: bool,
    /// The revision of the last change, to tell whether a later page may come from the cache too.
    pub(crate) last_change: Revision,
}

/// Where a watch starts.
pub(crate) enum Start {
    /// The current state as `ADDED` events, then changes.
    Now,
    /// Changes after this revision.
    After(Revision),
}

/// The receiving half of a registered watch.
pub(crate) struct Registration {
    pub(crate) initial: Vec<Initial>,
    pub(crate) revision: Revision,
    pub(crate) rx: mpsc::Receiver<Queued>,
    pub(crate) overflow: Arc<AtomicBool>,
}

/// The cache of one kind (one storage prefix).
pub(crate) struct KindCache {
    prefix: String,
    kind: Arc<Kind>,
    options: CacheOptions,
    state: RwLock<State>,
    revision: watch::Sender<Revision>,
    want_progress: Notify,
    task: OnceLock<tokio::task::AbortHandle>,
    /// The attributes of objects this server just wrote, by key: the feed takes them instead of
    /// decoding the stored bytes again (matched by revision).
    written: std::sync::Mutex<HashMap<Arc<str>, (Revision, Attrs)>>,
    /// The watchers. Lock order: `state`, then `watchers`; events are dispatched holding only
    /// `watchers`, which a registration takes before it lets go of `state`, so that a watcher
    /// sees each event once (from the history or from dispatch).
    watchers: std::sync::Mutex<Vec<Watcher>>,
}

/// At most this many written objects wait for the feed; beyond it they are dropped (and decoded).
const MAX_WRITTEN: usize = 16_384;

impl Drop for KindCache {
    fn drop(&mut self) {
        self.stop();
    }
}

impl KindCache {
    /// Stops the task that follows the storage watch (it holds the cache and the storage while it runs).
    pub(crate) fn stop(&self) {
        if let Some(t) = self.task.get() {
            t.abort();
        }
    }
}

impl KindCache {
    /// A cache for a kind's prefix; [`KindCache::start`] begins feeding it.
    pub(crate) fn new(prefix: String, kind: Arc<Kind>, options: CacheOptions) -> Arc<Self> {
        Arc::new(Self {
            prefix,
            kind,
            options,
            state: RwLock::new(State::default()),
            revision: watch::channel(0).0,
            want_progress: Notify::new(),
            task: OnceLock::new(),
            written: std::sync::Mutex::new(HashMap::new()),
            watchers: std::sync::Mutex::new(Vec::new()),
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Spawns the task that lists the prefix, then follows its storage watch (relisting when it breaks).
    pub(crate) fn start(self: &Arc<Self>, storage: Arc<dyn Storage>) {
        let weak = Arc::downgrade(self);
        let handle = tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                let Some(cache) = weak.upgrade() else { return };
                match cache.follow(&storage).await {
                    Ok(()) => failures = 0,
                    Err(error) => {
                        failures += 1;
                        tracing::warn!(prefix = %cache.prefix, %error, "watch cache relists");
                    }
                }
                drop(cache);
                tokio::time::sleep(Duration::from_millis(50u64 << failures.min(6))).await;
            }
        });
        let _ = self.task.set(handle.abort_handle());
    }

    async fn follow(&self, storage: &Arc<dyn Storage>) -> std::result::Result<(), crate::storage::StorageError> {
        let listed = storage.range(RangeRequest::prefix(self.prefix.clone())).await?;
        let mut items = BTreeMap::new();
        let mut by_node: HashMap<String, BTreeSet<Arc<str>>> = HashMap::new();
        for kv in &listed.kvs {
            match Cached::decode(&self.kind, kv.key.clone(), kv.value.clone(), kv.mod_revision) {
                Ok((cached, _)) => {
                    if self.kind.rules == Rules::Pod
                        && let Some(n) = cached.node()
                    {
                        by_node.entry(n.to_owned()).or_default().insert(kv.key.clone());
                    }
                    items.insert(kv.key.clone(), Arc::new(cached));
                }
                Err(error) => tracing::warn!(key = %kv.key, %error, "undecodable object skipped"),
            }
        }
        let mut stream = storage.watch(&self.prefix, listed.revision, WatchOptions::default()).await?;
        {
            let mut st = self.write();
            let restarted = st.ready;
            st.items = items;
            st.by_node = by_node;
            st.history.clear();
            st.revision = listed.revision;
            st.oldest = listed.revision;
            st.last_change = listed.revision;
            st.ready = true;
            if restarted {
                // Watchers cannot be told what changed while the storage watch was down: they relist.
                for w in self.lock_watchers().drain(..) {
                    w.overflow.store(true, Ordering::SeqCst);
                }
            }
        }
        self.revision.send_replace(listed.revision);
        let mut ticker = tokio::time::interval(self.options.bookmark_interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                ev = stream.next() => match ev {
                    Some(Ok(ev)) => self.apply(ev),
                    // A lagging or ended storage watch resumes where the cache is; only a
                    // compacted one makes the cache list again.
                    Some(Err(crate::storage::StorageError::WatchLagged { .. })) | None => {
                        let from = self.read().revision;
                        tracing::debug!(prefix = %self.prefix, from, "watch cache resumes its storage watch");
                        stream = storage.watch(&self.prefix, from, WatchOptions::default()).await?;
                    }
                    Some(Err(e)) => return Err(e),
                },
                () = self.want_progress.notified() => stream.request_progress(),
                _ = ticker.tick() => self.bookmark_all(),
            }
        }
    }

    fn lock_watchers(&self) -> std::sync::MutexGuard<'_, Vec<Watcher>> {
        self.watchers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn apply(&self, ev: StorageEvent) {
        // Decode before taking the lock, so that readers are not held up by it.
        let put = match &ev {
            StorageEvent::Put { kv, .. } => {
                let handed = self.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&kv.key);
                let cached = match handed {
                    Some((rev, attrs)) if rev == kv.mod_revision => Cached::stored(kv.key.clone(), kv.value.clone(), rev, attrs),
                    _ => match Cached::decode(&self.kind, kv.key.clone(), kv.value.clone(), kv.mod_revision) {
                        Ok((c, _)) => c,
                        Err(error) => {
                            tracing::warn!(key = %kv.key, %error, "undecodable object skipped");
                            return;
                        }
                    },
                };
                Some(Arc::new(cached))
            }
            _ => None,
        };
        let mut st = self.write();
        let event = match ev {
            StorageEvent::Progress { revision } => {
                if revision > st.revision {
                    st.revision = revision;
                    drop(st);
                    self.revision.send_replace(revision);
                }
                return;
            }
            StorageEvent::Put { kv, .. } => {
                let Some(cached) = put else { return };
                let prev = st.items.insert(kv.key.clone(), cached.clone());
                let change = if prev.is_some() { Change::Modified } else { Change::Added };
                CacheEvent { revision: kv.mod_revision, change, obj: cached, prev }
            }
            StorageEvent::Delete { key, revision, .. } => {
                let Some(prev) = st.items.remove(&key) else { return };
                CacheEvent { revision, change: Change::Deleted, obj: prev.clone(), prev: Some(prev) }
            }
        };
        if self.kind.rules == Rules::Pod {
            let old_node = event.prev.as_ref().and_then(|p| p.node()).map(str::to_owned);
            let new_node = if event.change == Change::Deleted { None } else { event.obj.node().map(str::to_owned) };
            if old_node != new_node {
                if let Some(n) = old_node
                    && let Some(set) = st.by_node.get_mut(&n)
                {
                    set.remove(&event.obj.key);
                    if set.is_empty() {
                        st.by_node.remove(&n);
                    }
                }
                if let Some(n) = new_node {
                    st.by_node.entry(n).or_default().insert(event.obj.key.clone());
                }
            }
        }
        let revision = event.revision;
        st.history.push_back(Past {
            revision,
            change: event.change,
            key: event.obj.key.clone(),
            obj: (event.change != Change::Deleted).then(|| event.obj.stored.clone()),
            prev: event.prev.as_ref().map(|p| p.stored.clone()),
        });
        while st.history.len() > self.options.history {
            if let Some(e) = st.history.pop_front() {
                st.oldest = e.revision;
            }
        }
        st.revision = st.revision.max(revision);
        st.last_change = revision;
        let mut watchers = self.lock_watchers();
        drop(st);
        let mut delivery = None;
        watchers.retain(|w| dispatch(w, &event, &mut delivery));
        drop(watchers);
        self.revision.send_replace(revision);
    }

    fn bookmark_all(&self) {
        let st = self.read();
        let revision = st.revision;
        let mut watchers = self.lock_watchers();
        drop(st);
        watchers.retain(|w| {
            if !w.bookmarks {
                return !w.tx.is_closed();
            }
            send(w, Queued::Bookmark(revision))
        });
    }

    /// Waits until the cache has applied every change up to `revision`; false on timeout.
    pub(crate) async fn wait_for(&self, revision: Revision) -> bool {
        let mut rx = self.revision.subscribe();
        if *rx.borrow_and_update() >= revision && self.read().ready {
            return true;
        }
        let wait = async {
            loop {
                if *rx.borrow_and_update() >= revision && self.read().ready {
                    return true;
                }
                self.want_progress.notify_one();
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { return false },
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
        };
        tokio::time::timeout(self.options.wait_timeout, wait).await.unwrap_or(false)
    }

    /// Hands the feed what filters select an object this server just wrote at `revision` by, so
    /// that the feed need not decode it.
    pub(crate) fn written(&self, key: &str, revision: Revision, obj: &DynamicObject) {
        if self.read().revision >= revision {
            return;
        }
        let mut written = self.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if written.len() >= MAX_WRITTEN {
            written.clear();
        }
        written.insert(Arc::from(key), (revision, Attrs::of(&self.kind, obj)));
        drop(written);
        // The feed may have passed this revision meanwhile: then nobody will take it.
        if self.read().revision >= revision {
            self.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(key);
        }
    }

    /// The revision of the last change to this kind.
    pub(crate) fn last_change(&self) -> Revision {
        self.read().last_change
    }

    /// One object by key.
    pub(crate) fn get(&self, key: &str) -> Option<Arc<Cached>> {
        self.read().items.get(key).cloned()
    }

    /// A page of the objects the filter selects, after `start_after`, at the cache's revision.
    pub(crate) fn list(&self, filter: &Filter, start_after: Option<&str>, limit: usize) -> Page {
        let st = self.read();
        let prefix = match filter.namespace.as_deref() {
            Some(ns) => format!("{}{ns}/", self.prefix),
            None => self.prefix.clone(),
        };
        let limit = if limit == 0 { usize::MAX } else { limit };
        let mut items = Vec::new();
        let mut more = false;
        let mut take = |c: &Arc<Cached>| -> bool {
            if !c.key.starts_with(prefix.as_str()) || !filter.selects(c) {
                return true;
            }
            if items.len() == limit {
                more = true;
                return false;
            }
            items.push(c.clone());
            true
        };
        let node = if self.kind.rules == Rules::Pod { filter.fields.required_value("spec.nodeName") } else { None };
        if let Some(node) = node.filter(|n| !n.is_empty()) {
            let keys = st.by_node.get(node);
            let lower = start_after.map_or(Bound::Unbounded, |s| Bound::Excluded(Arc::<str>::from(s)));
            for key in keys.into_iter().flat_map(|k| k.range((lower.clone(), Bound::Unbounded))) {
                if let Some(c) = st.items.get(key)
                    && !take(c)
                {
                    break;
                }
            }
        } else {
            let lower: Arc<str> = match start_after {
                Some(s) if s >= prefix.as_str() => Arc::from(s),
                _ => Arc::from(prefix.as_str()),
            };
            let bound = if start_after.is_some_and(|s| s >= prefix.as_str()) { Bound::Excluded(lower) } else { Bound::Included(lower) };
            for (k, c) in st.items.range((bound, Bound::Unbounded)) {
                if !k.starts_with(prefix.as_str()) {
                    break;
                }
                if !take(c) {
                    break;
                }
            }
        }
        Page { revision: st.revision, items, more, last_change: st.last_change }
    }

    /// Registers a watcher; fails with 410 when `After` is older than the history.
    pub(crate) fn watch(&self, filter: Arc<Filter>, start: Start, bookmarks: bool) -> Result<Registration> {
        let (tx, rx) = mpsc::channel(self.options.watcher_queue);
        let overflow = Arc::new(AtomicBool::new(false));
        let st = self.read();
        let initial = match start {
            Start::Now => {
                let prefix = match filter.namespace.as_deref() {
                    Some(ns) => format!("{}{ns}/", self.prefix),
                    None => self.prefix.clone(),
                };
                st.items
                    .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
                    .take_while(|(k, _)| k.starts_with(prefix.as_str()))
                    .filter(|(_, c)| filter.selects(c))
                    .map(|(_, c)| Initial::Current(c.clone()))
                    .collect()
            }
            Start::After(rv) => {
                if rv < st.oldest {
                    return Err(Error::expired(format!("too old resource version: {rv} ({})", st.oldest)));
                }
                let from = st.history.partition_point(|e| e.revision <= rv);
                let prefix = match filter.namespace.as_deref() {
                    Some(ns) => format!("{}{ns}/", self.prefix),
                    None => self.prefix.clone(),
                };
                st.history
                    .range(from..)
                    .filter(|e| e.key.starts_with(prefix.as_str()))
                    .map(|e| {
                        let current = st.items.get(&e.key).filter(|c| c.revision == e.revision && e.change != Change::Deleted).cloned();
                        Initial::Replay(filter.clone(), e.clone(), current)
                    })
                    .collect()
            }
        };
        let revision = st.revision;
        let mut watchers = self.lock_watchers();
        drop(st);
        watchers.push(Watcher { filter, tx, bookmarks, overflow: overflow.clone() });
        Ok(Registration { initial, revision, rx, overflow })
    }

    /// The number of open watchers.
    pub(crate) fn watcher_count(&self) -> usize {
        self.lock_watchers().iter().filter(|w| !w.tx.is_closed()).count()
    }
}

/// The change a watcher with this filter sees, if any: objects entering the selection are
/// `ADDED`, objects leaving it `DELETED`. Every watcher is shown the same version of the object
/// (the changed one, or the last one of a deletion, at the change's revision).
fn translate(filter: &Filter, e: &CacheEvent) -> Option<Change> {
    let now = e.change != Change::Deleted && filter.selects(&e.obj);
    let before = e.prev.as_ref().is_some_and(|p| filter.selects(p));
    match (e.change, before, now) {
        (Change::Deleted, true, _) | (_, true, false) => Some(Change::Deleted),
        (_, true, true) => Some(Change::Modified),
        (_, false, true) => Some(Change::Added),
        _ => None,
    }
}

/// A past change as the event a watcher with this filter sees, decoding what it must.
fn replay(filter: &Filter, past: Past, current: Option<Arc<Cached>>) -> Option<Queued> {
    let decode = |bytes: &Bytes, revision: Revision| match Cached::decode(&filter.kind, past.key.clone(), bytes.clone(), revision) {
        Ok((c, _)) => Some(Arc::new(c)),
        Err(error) => {
            tracing::warn!(key = %past.key, %error, "undecodable object in the watch history skipped");
            None
        }
    };
    let obj = match (past.change, current) {
        (Change::Deleted, _) => decode(past.prev.as_ref()?, past.revision)?,
        (_, Some(c)) => c,
        (_, None) => decode(past.obj.as_ref()?, past.revision)?,
    };
    // The key already matched the namespace; without label or field selectors the previous
    // version matched too, and need not be decoded.
    let prev = if filter.selective() {
        match past.prev.as_ref() {
            Some(_) if past.change == Change::Deleted => Some(obj.clone()),
            Some(bytes) => Some(decode(bytes, 0)?),
            None => None,
        }
    } else {
        past.prev.as_ref().map(|_| obj.clone())
    };
    let event = CacheEvent { revision: past.revision, change: past.change, obj, prev };
    translate(filter, &event).map(|change| Queued::Object(change, Delivery::new(event.obj, event.revision)))
}

/// Sends to a watcher; false when the watcher is gone or too slow (then it is ended).
fn send(w: &Watcher, ev: Queued) -> bool {
    match w.tx.try_send(ev) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Closed(_)) => false,
        Err(mpsc::error::TrySendError::Full(_)) => {
            w.overflow.store(true, Ordering::SeqCst);
            false
        }
    }
}

/// Queues a change for a watcher if its filter selects it, sharing `delivery` (made on first
/// use) with every other watcher of the change; false when the watcher is to be dropped.
fn dispatch(w: &Watcher, e: &CacheEvent, delivery: &mut Option<Arc<Delivery>>) -> bool {
    match translate(&w.filter, e) {
        Some(change) => {
            let d = delivery.get_or_insert_with(|| Delivery::new(e.obj.clone(), e.revision));
            send(w, Queued::Object(change, d.clone()))
        }
        None => !w.tx.is_closed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::KeyValue;

    fn pods() -> Arc<Kind> {
        let resource = bosun_core::resource::builtin("", "v1", "Pod").cloned().expect("pods are built in");
        Arc::new(Kind::builtin(resource))
    }

    fn put(cache: &KindCache, name: &str, node: &str, revision: Revision) {
        let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]}});
        let bytes = Bytes::from(serde_json::to_vec(&pod).expect("encodes"));
        let key: Arc<str> = Arc::from(format!("/registry/core/pods/default/{name}"));
        let kv = KeyValue { key, value: bytes, create_revision: revision, mod_revision: revision, version: 1, lease: None };
        cache.apply(StorageEvent::Put { kv, prev: None });
    }

    fn filter(kind: &Arc<Kind>, fields: &str) -> Arc<Filter> {
        let fields = if fields.is_empty() { FieldSelector::everything() } else { FieldSelector::parse(fields).expect("parses") };
        Arc::new(Filter { namespace: None, labels: LabelSelector::everything(), fields, kind: kind.clone() })
    }

    fn delivery(q: Queued) -> Arc<Delivery> {
        match q {
            Queued::Object(_, d) => d,
            Queued::Bookmark(r) => panic!("bookmark {r} where an object was expected"),
        }
    }

    #[tokio::test]
    async fn the_watchers_of_a_change_share_one_decoding_that_ends_with_the_last_of_them() {
        let kind = pods();
        let cache = KindCache::new("/registry/core/pods/".into(), kind.clone(), CacheOptions::default());
        let mut everything = cache.watch(filter(&kind, ""), Start::Now, false).expect("registers");
        let mut on_a = cache.watch(filter(&kind, "spec.nodeName=a"), Start::Now, false).expect("registers");
        let mut on_b = cache.watch(filter(&kind, "spec.nodeName=b"), Start::Now, false).expect("registers");
        put(&cache, "p", "a", 5);
        let first = delivery(everything.rx.try_recv().expect("queued"));
        let second = delivery(on_a.rx.try_recv().expect("queued"));
        assert!(on_b.rx.try_recv().is_err(), "the watcher of node b does not see a pod of node a");
        assert!(Arc::ptr_eq(&first, &second), "both queues hold the same delivery");
        assert!(first.decoded.get().is_none(), "nothing is decoded before a watcher takes it");
        let ev = Queued::Object(Change::Added, first).into_event();
        // The first taker decoded into the shared cell; the last holder moves it out.
        assert!(second.decoded.get().is_some_and(Result::is_ok));
        let only = Arc::try_unwrap(second).expect("the last holder");
        let moved = only.decoded.into_inner().expect("decoded").expect("ok");
        let WatchEvent::Added(taken) = ev else { panic!("{ev:?}") };
        assert_eq!(taken, moved);
        assert_eq!(taken.metadata.resource_version.as_deref(), Some("5"));
        assert_eq!(taken.path_str("spec.nodeName").as_deref(), Some("a"));
    }

    #[tokio::test]
    async fn the_watchers_of_a_change_share_one_encoding_and_nothing_is_decoded() {
        let kind = pods();
        let cache = KindCache::new("/registry/core/pods/".into(), kind.clone(), CacheOptions::default());
        put(&cache, "p", "a", 5);
        let mut watchers: Vec<_> = ["", "spec.nodeName=a", ""]
            .into_iter()
            .map(|f| cache.watch(filter(&kind, f), Start::After(5), false).expect("registers"))
            .collect();
        // Moving the pod to node b: a MODIFIED for the unfiltered watchers, a DELETED for node a's.
        put(&cache, "p", "b", 7);
        let queued: Vec<Queued> = watchers.iter_mut().map(|w| w.rx.try_recv().expect("queued")).collect();
        let lines: Vec<Bytes> = queued.iter().map(|q| q.shared_line(None).expect("an object").expect("encodes")).collect();
        let shared: Vec<Arc<Delivery>> = queued.into_iter().map(delivery).collect();
        assert!(shared[0].decoded.get().is_none(), "encoding needs no decoded object");
        let json = shared[0].encoded().expect("encodes");
        for d in &shared[1..] {
            assert!(Arc::ptr_eq(d, &shared[0]));
            assert_eq!(d.encoded().expect("encodes").as_ptr(), json.as_ptr(), "one encoding, shared");
        }
        assert_eq!(lines[0], lines[2]);
        let events: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_slice(l).expect("a JSON line")).collect();
        assert!(lines.iter().all(|l| l.ends_with(b"}\n") && l.iter().filter(|&&b| b == b'\n').count() == 1));
        assert_eq!((events[0]["type"].as_str(), events[1]["type"].as_str()), (Some("MODIFIED"), Some("DELETED")));
        for e in &events {
            assert_eq!(e["object"]["metadata"]["resourceVersion"], "7");
            assert_eq!(e["object"]["spec"]["nodeName"], "b");
            assert_eq!(e["object"]["kind"], "Pod");
        }
        assert!(Queued::Bookmark(7).shared_line(None).is_none());
    }

    #[tokio::test]
    async fn a_deletion_shows_every_watcher_the_last_version_at_the_deletion_revision() {
        let kind = pods();
        let cache = KindCache::new("/registry/core/pods/".into(), kind.clone(), CacheOptions::default());
        put(&cache, "p", "a", 5);
        let mut one = cache.watch(filter(&kind, ""), Start::After(5), false).expect("registers");
        let mut two = cache.watch(filter(&kind, "spec.nodeName=a"), Start::After(5), false).expect("registers");
        cache.apply(StorageEvent::Delete { key: Arc::from("/registry/core/pods/default/p"), revision: 9, prev: None });
        for reg in [&mut one, &mut two] {
            let ev = reg.rx.try_recv().expect("queued").into_event();
            let WatchEvent::Deleted(obj) = ev else { panic!("{ev:?}") };
            assert_eq!(obj.metadata.resource_version.as_deref(), Some("9"));
            assert_eq!(obj.metadata.name.as_deref(), Some("p"));
        }
    }
}
