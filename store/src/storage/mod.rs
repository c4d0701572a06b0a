//! The `Storage` trait: a revisioned key-value store shaped like etcd's v3 API, and its backends.
//!
//! Storage knows nothing about Kubernetes: it stores bytes under string keys. One global revision
//! is bumped once per write (a transaction that changes at least one key); every key carries its
//! create revision, mod revision and version (the number of writes since it was created). Reads may
//! ask for a past revision until it is compacted; watches deliver every change after a revision, in
//! order, with none lost or duplicated.
//!
//! Backends:
//! - [`MemoryStorage`]: MVCC in memory, for tests and embedding.
//! - [`DurableStorage`]: the same MVCC with a write-ahead log, group-committed fsyncs and
//!   snapshots, which survives `kill -9` without losing an acknowledged write.
//! - `EtcdStorage` (feature `etcd`): a real etcd cluster through `etcd-client`.
//!
//! Every backend passes the same conformance suite (`conformance`, feature `testing`).

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use futures::stream::BoxStream;
use tokio::io::{AsyncRead, AsyncWrite};

#[cfg(feature = "testing")]
pub mod conformance;
pub mod durable;
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(all(feature = "etcd", feature = "testing"))]
pub mod etcd_server;
pub mod memory;
mod mvcc;
mod snapshot;
mod watch;

pub use durable::{DurableOptions, DurableStorage};
#[cfg(feature = "etcd")]
pub use etcd::EtcdStorage;
pub use memory::MemoryStorage;

/// A store revision: one global counter, bumped once per write. `0` means "no revision".
pub type Revision = i64;

/// The id of a lease granted by [`Storage::lease_grant`].
pub type LeaseId = i64;

/// The result type of storage operations.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// One key with its value and revisions.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Arc<str>,
    /// The value (cheap to clone: shared bytes).
    pub value: Bytes,
    /// The revision at which the key was created (last created, if it was deleted and recreated).
    pub create_revision: Revision,
    /// The revision of the last write to the key.
    pub mod_revision: Revision,
    /// The number of writes since creation: 1 right after creation.
    pub version: i64,
    /// The lease the key is attached to, if any.
    pub lease: Option<LeaseId>,
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &self.key)
            .field("value_len", &self.value.len())
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .field("version", &self.version)
            .field("lease", &self.lease)
            .finish()
    }
}

/// Which keys a [`Storage::range`] reads, and how.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct RangeRequest {
    /// The key prefix (or the exact key when `exact` is set). An empty prefix reads every key.
    pub prefix: String,
    /// Read only the key equal to `prefix`.
    pub exact: bool,
    /// Continue after this key (exclusive): the last key of the previous page.
    pub start_after: Option<String>,
    /// At most this many keys; `0` means no limit.
    pub limit: usize,
    /// Read at this past revision instead of the current one; `0` means current.
    pub revision: Revision,
    /// Return only the count, no keys.
    pub count_only: bool,
    /// Stop at the end of the page instead of walking the rest of the range to count it: `count`
    /// is then only a lower bound (the keys returned, plus one when `more`). A paged read of N keys
    /// costs O(N) in all instead of O(N) per page. Backends that count anyway (etcd) may ignore it.
    pub without_total: bool,
}

impl RangeRequest {
    /// Every key that starts with `prefix`.
    pub fn prefix(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into(), ..Self::default() }
    }

    /// Exactly one key.
    pub fn key(key: impl Into<String>) -> Self {
        Self { prefix: key.into(), exact: true, ..Self::default() }
    }

    /// At most `limit` keys (default: no limit; `0` also means no limit).
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Continue after `key`, exclusive (default: from the first key).
    pub fn start_after(mut self, key: impl Into<String>) -> Self {
        self.start_after = Some(key.into());
        self
    }

    /// Read at a past revision (default: the current revision).
    pub fn at_revision(mut self, revision: Revision) -> Self {
        self.revision = revision;
        self
    }

    /// Return only the count (default: keys and count).
    pub fn count_only(mut self) -> Self {
        self.count_only = true;
        self
    }

    /// Do not count the keys past the page (see [`RangeRequest::without_total`](Self#structfield.without_total)).
    pub fn without_total(mut self) -> Self {
        self.without_total = true;
        self
    }

    /// Whether `key` lies in this range (ignoring `start_after`).
    pub fn contains(&self, key: &str) -> bool {
        if self.exact { key == self.prefix } else { key.starts_with(&self.prefix) }
    }
}

/// The answer of a [`Storage::range`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResponse {
    /// The keys, in ascending key order (empty with `count_only`).
    pub kvs: Vec<KeyValue>,
    /// Whether keys remain after the last one returned (the limit cut the answer).
    pub more: bool,
    /// How many keys the range holds after `start_after`, ignoring the limit (with
    /// `without_total`, only a lower bound).
    pub count: u64,
    /// The revision the read was served at.
    pub revision: Revision,
}

/// What a [`Compare`] looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    /// The key's mod revision (`0` when the key does not exist).
    ModRevision(Revision),
    /// The key's create revision (`0` when the key does not exist).
    CreateRevision(Revision),
    /// The key's version (`0` when the key does not exist).
    Version(i64),
    /// The key's value; a compare on a missing key's value is false.
    Value(Bytes),
}

/// How a [`Compare`] compares the key's field to the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    /// Equal to the target.
    Equal,
    /// Not equal to the target.
    NotEqual,
    /// Greater than the target.
    Greater,
    /// Less than the target.
    Less,
}

/// One condition of a [`Txn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    /// The key compared.
    pub key: String,
    /// The comparison.
    pub op: CompareOp,
    /// The field and the value it is compared to.
    pub target: CompareTarget,
}

impl Compare {
    /// The key's mod revision compared to `revision`.
    pub fn mod_revision(key: impl Into<String>, op: CompareOp, revision: Revision) -> Self {
        Self { key: key.into(), op, target: CompareTarget::ModRevision(revision) }
    }

    /// The key's create revision compared to `revision`.
    pub fn create_revision(key: impl Into<String>, op: CompareOp, revision: Revision) -> Self {
        Self { key: key.into(), op, target: CompareTarget::CreateRevision(revision) }
    }

    /// The key's version compared to `version`.
    pub fn version(key: impl Into<String>, op: CompareOp, version: i64) -> Self {
        Self { key: key.into(), op, target: CompareTarget::Version(version) }
    }

    /// The key's value compared to `value`.
    pub fn value(key: impl Into<String>, op: CompareOp, value: impl Into<Bytes>) -> Self {
        Self { key: key.into(), op, target: CompareTarget::Value(value.into()) }
    }

    /// The key does not exist.
    pub fn absent(key: impl Into<String>) -> Self {
        Self::mod_revision(key, CompareOp::Equal, 0)
    }

    /// The key exists.
    pub fn exists(key: impl Into<String>) -> Self {
        Self::mod_revision(key, CompareOp::Greater, 0)
    }

    /// Evaluates the compare against the key's current state.
    pub fn evaluate(&self, current: Option<&KeyValue>) -> bool {
        use std::cmp::Ordering;
        let ord = match (&self.target, current) {
            (CompareTarget::ModRevision(r), kv) => kv.map_or(0, |kv| kv.mod_revision).cmp(r),
            (CompareTarget::CreateRevision(r), kv) => kv.map_or(0, |kv| kv.create_revision).cmp(r),
            (CompareTarget::Version(v), kv) => kv.map_or(0, |kv| kv.version).cmp(v),
            (CompareTarget::Value(_), None) => return false,
            (CompareTarget::Value(v), Some(kv)) => kv.value.as_ref().cmp(v.as_ref()),
        };
        match self.op {
            CompareOp::Equal => ord == Ordering::Equal,
            CompareOp::NotEqual => ord != Ordering::Equal,
            CompareOp::Greater => ord == Ordering::Greater,
            CompareOp::Less => ord == Ordering::Less,
        }
    }
}

/// One operation of a [`Txn`] branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    /// Read one key.
    Get(String),
    /// Write one key (create or replace), optionally attached to a lease.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: Bytes,
        /// The lease to attach the key to (`None` detaches it).
        lease: Option<LeaseId>,
    },
    /// Delete one key (no effect if it does not exist).
    Delete(String),
}

impl TxnOp {
    /// A put without a lease.
    pub fn put(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self::Put { key: key.into(), value: value.into(), lease: None }
    }

    /// A get.
    pub fn get(key: impl Into<String>) -> Self {
        Self::Get(key.into())
    }

    /// A delete.
    pub fn delete(key: impl Into<String>) -> Self {
        Self::Delete(key.into())
    }

    /// The key the operation touches.
    pub fn key(&self) -> &str {
        match self {
            Self::Get(k) | Self::Delete(k) => k,
            Self::Put { key, .. } => key,
        }
    }
}

/// An atomic transaction: if every compare holds, run `success`, else `failure`.
///
/// A transaction that writes bumps the revision once; all its writes share that revision. A key
/// may be written at most once per branch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct Txn {
    /// The conditions, all of which must hold.
    pub compare: Vec<Compare>,
    /// Run when every compare holds.
    pub success: Vec<TxnOp>,
    /// Run otherwise.
    pub failure: Vec<TxnOp>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds conditions (default: none, so `success` runs).
    pub fn when(mut self, compare: impl IntoIterator<Item = Compare>) -> Self {
        self.compare.extend(compare);
        self
    }

    /// Adds operations to the success branch (default: none).
    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.success.extend(ops);
        self
    }

    /// Adds operations to the failure branch (default: none).
    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.failure.extend(ops);
        self
    }
}

/// The result of one [`TxnOp`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOpResult {
    /// The key read by a `Get`, if it exists.
    Get(Option<KeyValue>),
    /// A `Put` happened; `prev` is the key's value before it.
    Put {
        /// The value before the put, if the key existed.
        prev: Option<KeyValue>,
    },
    /// A `Delete` happened; `prev` is the deleted value, `None` if the key did not exist.
    Delete {
        /// The deleted value.
        prev: Option<KeyValue>,
    },
}

/// The answer of a [`Storage::txn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether the compares held (so `success` ran).
    pub succeeded: bool,
    /// The store revision after the transaction (its writes' mod revision, if it wrote).
    pub revision: Revision,
    /// One result per operation of the branch that ran.
    pub results: Vec<TxnOpResult>,
}

/// A change delivered by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was created or updated.
    Put {
        /// The key after the write.
        kv: KeyValue,
        /// The key before the write, `None` on creation.
        prev: Option<KeyValue>,
    },
    /// A key was deleted.
    Delete {
        /// The deleted key.
        key: Arc<str>,
        /// The revision of the deletion.
        revision: Revision,
        /// The key's last value (`None` only if a backend could not provide it).
        prev: Option<KeyValue>,
    },
    /// Every event up to `revision` has been delivered on this stream.
    Progress {
        /// The revision.
        revision: Revision,
    },
}

impl WatchEvent {
    /// The revision of the event (for progress: the revision reached).
    pub fn revision(&self) -> Revision {
        match self {
            Self::Put { kv, .. } => kv.mod_revision,
            Self::Delete { revision, .. } | Self::Progress { revision } => *revision,
        }
    }

    /// The key changed, `None` for progress.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Put { kv, .. } => Some(&kv.key),
            Self::Delete { key, .. } => Some(key),
            Self::Progress { .. } => None,
        }
    }
}

/// Options of a [`Storage::watch`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct WatchOptions {
    /// Send a [`WatchEvent::Progress`] at this interval while the stream is idle (default: never).
    pub progress_interval: Option<Duration>,
    /// Watch exactly the key `prefix` instead of a prefix (default: prefix).
    pub exact: bool,
}

impl WatchOptions {
    /// Sends progress notifications at this interval (default: never).
    pub fn progress_interval(mut self, interval: Duration) -> Self {
        self.progress_interval = Some(interval);
        self
    }
}

/// A function that asks a watch stream for a progress notification.
pub type ProgressRequester = Arc<dyn Fn() + Send + Sync>;

/// The stream of a [`Storage::watch`]: events in revision order, then at most one error, after
/// which it ends.
///
/// Errors end the stream: [`StorageError::Compacted`] (the start revision is gone: relist),
/// [`StorageError::WatchLagged`] (this watcher fell too far behind the writers and was cut off
/// rather than silently dropping events: resume from the last revision seen), or a backend error.
pub struct WatchStream {
    inner: BoxStream<'static, Result<WatchEvent>>,
    progress: Option<ProgressRequester>,
}

impl WatchStream {
    /// Wraps a backend's stream and its progress requester.
    pub fn new(inner: BoxStream<'static, Result<WatchEvent>>, progress: Option<ProgressRequester>) -> Self {
        Self { inner, progress }
    }

    /// Asks for a [`WatchEvent::Progress`] carrying the revision up to which every event has been
    /// delivered; it comes after any event already due.
    pub fn request_progress(&self) {
        if let Some(p) = &self.progress {
            p();
        }
    }
}

impl fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchStream").finish_non_exhaustive()
    }
}

impl Stream for WatchStream {
    type Item = Result<WatchEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// What a [`Storage::snapshot`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The revision of the snapshot.
    pub revision: Revision,
    /// The number of keys.
    pub keys: u64,
    /// The number of bytes written.
    pub bytes: u64,
}

/// Errors of storage operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The key does not exist.
    #[error("key {key:?} not found")]
    NotFound {
        /// The key.
        key: String,
    },
    /// A create found the key already present.
    #[error("key {key:?} already exists")]
    AlreadyExists {
        /// The key.
        key: String,
        /// Its current value.
        current: Box<KeyValue>,
    },
    /// A compare-and-swap found another mod revision.
    #[error("key {key:?} was modified: expected mod revision {expected}")]
    Conflict {
        /// The key.
        key: String,
        /// The mod revision the caller expected.
        expected: Revision,
        /// The current value, `None` if the key no longer exists.
        current: Option<Box<KeyValue>>,
    },
    /// The revision asked for has been compacted away.
    #[error("revision {requested} has been compacted (compacted up to {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The compaction point (`0` if the backend does not know it).
        compacted: Revision,
    },
    /// The revision asked for is newer than the store's.
    #[error("revision {requested} is in the future (current {current})")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The current revision.
        current: Revision,
    },
    /// The lease does not exist (never granted, revoked, or expired).
    #[error("lease {0} not found")]
    LeaseNotFound(LeaseId),
    /// A watcher fell too far behind the writers and was cut off; resume from `last_revision`.
    #[error("watcher fell behind the writers; resume after revision {last_revision}")]
    WatchLagged {
        /// The revision of the last event delivered on the stream.
        last_revision: Revision,
    },
    /// The request is malformed (for example a key written twice in one transaction).
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// The backend cannot serve requests now (etcd unreachable, no quorum); retrying may work.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The storage was closed, or failed earlier and refuses writes to stay consistent.
    #[error("storage closed: {0}")]
    Closed(String),
    /// Stored data (a log, a snapshot) failed validation.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// An I/O error.
    #[error("i/o error")]
    Io(
        #[from]
        #[source]
        std::io::Error,
    ),
    /// Any other backend error.
    #[error("backend error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StorageError {
    /// Whether this is [`StorageError::Compacted`].
    pub fn is_compacted(&self) -> bool {
        matches!(self, Self::Compacted { .. })
    }

    /// Whether this is [`StorageError::Conflict`].
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }

    /// Whether this is [`StorageError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// Whether this is [`StorageError::AlreadyExists`].
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Self::AlreadyExists { .. })
    }
}

/// A revisioned key-value store shaped like etcd's v3 API; see the module docs.
///
/// Backends implement the required methods; the single-key helpers (`get`, `count`, `create`,
/// `put`, `update`, `delete`) are built on [`Storage::range`] and [`Storage::txn`].
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Reads a range of keys.
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse>;

    /// Runs an atomic transaction.
    async fn txn(&self, txn: Txn) -> Result<TxnResponse>;

    /// Streams every change to keys under `prefix` with a revision greater than `after_revision`,
    /// in revision order. Pass the current revision to watch from now. An `after_revision` below
    /// the compaction point fails with [`StorageError::Compacted`], either here or as the stream's
    /// first item.
    async fn watch(&self, prefix: &str, after_revision: Revision, options: WatchOptions) -> Result<WatchStream>;

    /// The current revision.
    async fn current_revision(&self) -> Result<Revision>;

    /// Grants a lease that expires after `ttl` unless kept alive. Backends may round the TTL up
    /// to their minimum (etcd: about 2 s) and to whole seconds.
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId>;

    /// Renews a lease for its full TTL, which it returns.
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration>;

    /// Revokes a lease, deleting every key attached to it.
    async fn lease_revoke(&self, lease: LeaseId) -> Result<()>;

    /// Forgets history at and before `revision`: reads and watches at older revisions fail with
    /// [`StorageError::Compacted`]; the newest value of every key stays.
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// Writes a consistent snapshot of every key (the portable bosun snapshot format) and
    /// returns what it wrote. Writes may go on meanwhile.
    async fn snapshot(&self, writer: &mut (dyn AsyncWrite + Send + Unpin)) -> Result<SnapshotInfo>;

    /// Replaces every key with a snapshot's, like etcd's restore with `--bump-revision
    /// --mark-compacted`: the revision jumps past both the current and the snapshot's revision,
    /// history before it is compacted, and open watches end with [`StorageError::Compacted`] so
    /// that watchers relist. Returns the new revision.
    async fn restore(&self, reader: &mut (dyn AsyncRead + Send + Unpin)) -> Result<Revision>;

    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.range(RangeRequest::key(key)).await?.kvs.pop())
    }

    /// Counts the keys under `prefix`.
    async fn count(&self, prefix: &str) -> Result<u64> {
        Ok(self.range(RangeRequest::prefix(prefix).count_only()).await?.count)
    }

    /// Creates a key; fails with [`StorageError::AlreadyExists`] if it exists.
    async fn create(&self, key: &str, value: Bytes, lease: Option<LeaseId>) -> Result<KeyValue> {
        let txn = Txn::new()
            .when([Compare::absent(key)])
            .and_then([TxnOp::Put { key: key.to_owned(), value: value.clone(), lease }])
            .or_else([TxnOp::get(key)]);
        let resp = self.txn(txn).await?;
        if !resp.succeeded {
            return match resp.results.into_iter().next() {
                Some(TxnOpResult::Get(Some(current))) => {
                    Err(StorageError::AlreadyExists { key: key.to_owned(), current: Box::new(current) })
                }
                // Deleted between the compare and the get: report the conflict the caller can retry.
                _ => Err(StorageError::Conflict { key: key.to_owned(), expected: 0, current: None }),
            };
        }
        Ok(KeyValue { key: key.into(), value, create_revision: resp.revision, mod_revision: resp.revision, version: 1, lease })
    }

    /// Writes a key unconditionally (creating or replacing it).
    async fn put(&self, key: &str, value: Bytes, lease: Option<LeaseId>) -> Result<KeyValue> {
        let resp = self.txn(Txn::new().and_then([TxnOp::Put { key: key.to_owned(), value: value.clone(), lease }])).await?;
        let prev = match resp.results.into_iter().next() {
            Some(TxnOpResult::Put { prev }) => prev,
            _ => None,
        };
        Ok(KeyValue {
            key: key.into(),
            value,
            create_revision: prev.as_ref().map_or(resp.revision, |p| p.create_revision),
            mod_revision: resp.revision,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            lease,
        })
    }

    /// Replaces a key if its mod revision is `expected`: [`StorageError::NotFound`] if it does not
    /// exist, [`StorageError::Conflict`] (with the current value) if it changed.
    async fn update(&self, key: &str, value: Bytes, expected: Revision, lease: Option<LeaseId>) -> Result<KeyValue> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
            .and_then([TxnOp::Put { key: key.to_owned(), value: value.clone(), lease }])
            .or_else([TxnOp::get(key)]);
        let resp = self.txn(txn).await?;
        if !resp.succeeded {
            return Err(cas_failure(key, expected, resp));
        }
        let prev = match resp.results.into_iter().next() {
            Some(TxnOpResult::Put { prev }) => prev,
            _ => None,
        };
        Ok(KeyValue {
            key: key.into(),
            value,
            create_revision: prev.as_ref().map_or(resp.revision, |p| p.create_revision),
            mod_revision: resp.revision,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            lease,
        })
    }

    /// Deletes a key, if its mod revision is `expected` when given; returns the deleted value.
    /// Fails with [`StorageError::NotFound`] if it does not exist and [`StorageError::Conflict`]
    /// if it changed.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        let compare = match expected {
            Some(rev) => Compare::mod_revision(key, CompareOp::Equal, rev),
            None => Compare::exists(key),
        };
        let txn = Txn::new().when([compare]).and_then([TxnOp::delete(key)]).or_else([TxnOp::get(key)]);
        let resp = self.txn(txn).await?;
        if !resp.succeeded {
            return Err(cas_failure(key, expected.unwrap_or(0), resp));
        }
        match resp.results.into_iter().next() {
            Some(TxnOpResult::Delete { prev: Some(prev) }) => Ok(prev),
            _ => Err(StorageError::NotFound { key: key.to_owned() }),
        }
    }
}

fn cas_failure(key: &str, expected: Revision, resp: TxnResponse) -> StorageError {
    match resp.results.into_iter().next() {
        Some(TxnOpResult::Get(Some(current))) => StorageError::Conflict { key: key.to_owned(), expected, current: Some(Box::new(current)) },
        _ => StorageError::NotFound { key: key.to_owned() },
    }
}

/// A shared handle to a storage is a storage.
#[async_trait]
impl<S: Storage + ?Sized> Storage for Arc<S> {
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        (**self).range(request).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        (**self).txn(txn).await
    }
    async fn watch(&self, prefix: &str, after_revision: Revision, options: WatchOptions) -> Result<WatchStream> {
        (**self).watch(prefix, after_revision, options).await
    }
    async fn current_revision(&self) -> Result<Revision> {
        (**self).current_revision().await
    }
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        (**self).lease_grant(ttl).await
    }
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        (**self).lease_keep_alive(lease).await
    }
    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        (**self).lease_revoke(lease).await
    }
    async fn compact(&self, revision: Revision) -> Result<()> {
        (**self).compact(revision).await
    }
    async fn snapshot(&self, writer: &mut (dyn AsyncWrite + Send + Unpin)) -> Result<SnapshotInfo> {
        (**self).snapshot(writer).await
    }
    async fn restore(&self, reader: &mut (dyn AsyncRead + Send + Unpin)) -> Result<Revision> {
        (**self).restore(reader).await
    }
}
