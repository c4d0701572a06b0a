//! [`PrefixedStorage`]: a custom [`Storage`] backend that keeps one cluster's keys under a prefix
//! of a shared store, so that several bosun clusters share one etcd or one durable store.
//!
//! It is what kube-apiserver's `--etcd-prefix` and etcd's namespace proxy (`grpc-proxy
//! --namespace`) do: every key `k` is stored as `{prefix}{k}` in the inner store, and everything
//! that comes back (range answers, transaction results, watch events, `prev` values, errors built
//! from them) has the prefix taken off again. A tenant sees only its own keys; revisions, leases
//! and compaction are the shared store's.
//!
//! The contract:
//! - The prefix starts with `/` and does not end with `/` (`/clusters/prod`), and every key starts
//!   with `/` (the API server's keys are `/registry/...`). Keys are then `/clusters/prod/registry/...`,
//!   and a tenant can never reach a sibling whose name extends its own (`/clusters/prod2`): the
//!   empty prefix ("every key") is mapped to `{prefix}/`. Prefixes must not nest (`/a` and `/a/b`).
//!   A key or non-empty prefix without the leading `/` is refused with
//!   [`StorageError::InvalidArgument`].
//! - Revisions are the shared store's: one tenant's writes move every tenant's revision on, so a
//!   tenant's revisions are increasing but not gap-free.
//! - Leases are the shared store's too (as in etcd, lease ids are not namespaced); only the keys
//!   attached to them are the tenant's.
//! - [`Storage::compact`] compacts the shared store: history is store-wide.
//! - [`Storage::snapshot`] and [`Storage::restore`] are scoped to the tenant and use the portable
//!   bosun snapshot format (keys without the prefix), so a tenant can be moved out to a store of
//!   its own, or a whole store restored into a tenant. A restore is one transaction on the shared
//!   store (other tenants keep their keys, history and watches); it reads as compacted the
//!   tenant's history before it and ends the tenant's open watches with
//!   [`StorageError::Compacted`], as a restore of a whole store does (that compaction point is
//!   kept by the handle; after a restart, the shared store's own compaction takes over, and
//!   watchers resuming from before the restore replay its changes). Run it with the tenant's
//!   writers stopped, like etcd's own restore; on etcd, a tenant larger than etcd's
//!   `--max-txn-ops` (128 by default) needs that limit raised.

mod snapshot;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bosun_store::storage::{
    Compare, KeyValue, LeaseId, ProgressRequester, RangeRequest, RangeResponse, Result, Revision, SnapshotInfo, Storage, StorageError, Txn,
    TxnOp, TxnOpResult, TxnResponse, WatchEvent, WatchOptions, WatchStream,
};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How often a restore re-reads the tenant and retries when a key changed under it.
const RESTORE_ATTEMPTS: usize = 5;

/// A prefix that [`PrefixedStorage::new`] refuses.
#[derive(Debug, thiserror::Error)]
#[error("storage prefix {prefix:?} must start with '/' and must not end with '/'")]
pub struct InvalidPrefixError {
    /// The prefix given.
    pub prefix: String,
}

/// One tenant's view of a shared [`Storage`]: every key lives under a prefix; see the module docs.
pub struct PrefixedStorage<S> {
    inner: S,
    /// `/clusters/prod`: no trailing slash.
    prefix: Arc<str>,
    /// The revision of the last restore into this tenant: the tenant's history before it reads as
    /// compacted, and every change ends the watches opened before it.
    restored: tokio::sync::watch::Sender<Revision>,
    /// TTLs of the leases granted through this handle, which a snapshot records.
    lease_ttls: Mutex<HashMap<LeaseId, Duration>>,
}

impl<S> std::fmt::Debug for PrefixedStorage<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefixedStorage").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl<S: Storage> PrefixedStorage<S> {
    /// The tenant `prefix` (like `/clusters/prod`) of `inner`.
    pub fn new(inner: S, prefix: impl Into<String>) -> Result<Self, InvalidPrefixError> {
        let prefix = prefix.into();
        if !prefix.starts_with('/') || prefix.ends_with('/') {
            return Err(InvalidPrefixError { prefix });
        }
        Ok(Self { inner, prefix: prefix.into(), restored: tokio::sync::watch::Sender::new(0), lease_ttls: Mutex::default() })
    }

    /// The tenant's prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The shared store underneath.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// `{prefix}{key}`, for a key that starts with `/`.
    fn key(&self, key: &str) -> Result<String> {
        if !key.starts_with('/') {
            return Err(StorageError::InvalidArgument(format!("key {key:?} of prefixed storage {} must start with '/'", self.prefix)));
        }
        Ok(format!("{}{key}", self.prefix))
    }

    /// The inner prefix of a range or watch: the empty prefix is every key of the tenant.
    fn range_prefix(&self, prefix: &str, exact: bool) -> Result<String> {
        if prefix.is_empty() && !exact { Ok(format!("{}/", self.prefix)) } else { self.key(prefix) }
    }

    fn check_history(&self, revision: Revision) -> Result<()> {
        let restored = *self.restored.borrow();
        if revision != 0 && revision < restored {
            return Err(StorageError::Compacted { requested: revision, compacted: restored });
        }
        Ok(())
    }

    fn compare(&self, c: Compare) -> Result<Compare> {
        Ok(Compare { key: self.key(&c.key)?, ..c })
    }

    fn op(&self, op: TxnOp) -> Result<TxnOp> {
        Ok(match op {
            TxnOp::Get(k) => TxnOp::Get(self.key(&k)?),
            TxnOp::Delete(k) => TxnOp::Delete(self.key(&k)?),
            TxnOp::Put { key, value, lease } => TxnOp::Put { key: self.key(&key)?, value, lease },
        })
    }

    fn lease_ttls(&self) -> std::sync::MutexGuard<'_, HashMap<LeaseId, Duration>> {
        // The map holds plain data: a panic elsewhere cannot leave it half-updated.
        self.lease_ttls.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The TTL of `lease` for a snapshot: known if it was granted here, else learnt by renewing it
    /// (which is what restoring it does anyway). `None` if it is gone.
    async fn lease_ttl(&self, lease: LeaseId) -> Result<Option<Duration>> {
        if let Some(ttl) = self.lease_ttls().get(&lease) {
            return Ok(Some(*ttl));
        }
        match self.inner.lease_keep_alive(lease).await {
            Ok(ttl) => Ok(Some(ttl)),
            Err(StorageError::LeaseNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Takes the tenant prefix off a key the inner store returned (every such key carries it).
fn strip(prefix: &str, key: &Arc<str>) -> Arc<str> {
    key.strip_prefix(prefix).map_or_else(|| key.clone(), Arc::from)
}

fn strip_kv(prefix: &str, kv: KeyValue) -> KeyValue {
    KeyValue { key: strip(prefix, &kv.key), ..kv }
}

fn strip_event(prefix: &str, event: WatchEvent) -> WatchEvent {
    match event {
        WatchEvent::Put { kv, prev } => WatchEvent::Put { kv: strip_kv(prefix, kv), prev: prev.map(|p| strip_kv(prefix, p)) },
        WatchEvent::Delete { key, revision, prev } => {
            WatchEvent::Delete { key: strip(prefix, &key), revision, prev: prev.map(|p| strip_kv(prefix, p)) }
        }
        progress @ WatchEvent::Progress { .. } => progress,
    }
}

#[async_trait]
impl<S: Storage> Storage for PrefixedStorage<S> {
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        self.check_history(request.revision)?;
        let inner = RangeRequest {
            prefix: self.range_prefix(&request.prefix, request.exact)?,
            // Concatenation keeps the order, so any continuation key maps as it is.
            start_after: request.start_after.map(|k| format!("{}{k}", self.prefix)),
            ..request
        };
        let resp = self.inner.range(inner).await?;
        Ok(RangeResponse { kvs: resp.kvs.into_iter().map(|kv| strip_kv(&self.prefix, kv)).collect(), ..resp })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let inner = Txn {
            compare: txn.compare.into_iter().map(|c| self.compare(c)).collect::<Result<_>>()?,
            success: txn.success.into_iter().map(|op| self.op(op)).collect::<Result<_>>()?,
            failure: txn.failure.into_iter().map(|op| self.op(op)).collect::<Result<_>>()?,
        };
        let resp = self.inner.txn(inner).await?;
        let p = &*self.prefix;
        let results = resp
            .results
            .into_iter()
            .map(|r| match r {
                TxnOpResult::Get(kv) => TxnOpResult::Get(kv.map(|kv| strip_kv(p, kv))),
                TxnOpResult::Put { prev } => TxnOpResult::Put { prev: prev.map(|kv| strip_kv(p, kv)) },
                TxnOpResult::Delete { prev } => TxnOpResult::Delete { prev: prev.map(|kv| strip_kv(p, kv)) },
            })
            .collect();
        Ok(TxnResponse { results, ..resp })
    }

    async fn watch(&self, prefix: &str, after_revision: Revision, options: WatchOptions) -> Result<WatchStream> {
        self.check_history(after_revision)?;
        let inner_prefix = self.range_prefix(prefix, options.exact)?;
        // Subscribed before the inner watch starts: a restore from now on ends this watch.
        let mut restored = self.restored.subscribe();
        let stream = self.inner.watch(&inner_prefix, after_revision, options).await?;
        let stream = Arc::new(Mutex::new(stream));
        let requester = stream.clone();
        let progress: ProgressRequester = Arc::new(move || {
            if let Ok(s) = requester.lock() {
                s.request_progress();
            }
        });
        let restore = Box::pin(async move {
            match restored.changed().await {
                Ok(()) => *restored.borrow_and_update(),
                // The storage is gone: nothing will restore it any more.
                Err(_) => futures::future::pending().await,
            }
        });
        let watch = TenantWatch { inner: stream, prefix: self.prefix.clone(), restore, after: after_revision, done: false };
        Ok(WatchStream::new(watch.boxed(), Some(progress)))
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.inner.current_revision().await
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        let lease = self.inner.lease_grant(ttl).await?;
        self.lease_ttls().insert(lease, ttl);
        Ok(lease)
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        self.inner.lease_keep_alive(lease).await
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.lease_ttls().remove(&lease);
        self.inner.lease_revoke(lease).await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision).await
    }

    #[tracing::instrument(name = "prefixed.snapshot", skip_all, fields(storage.prefix = %self.prefix))]
    async fn snapshot(&self, writer: &mut (dyn AsyncWrite + Send + Unpin)) -> Result<SnapshotInfo> {
        // One read at one revision: a consistent view of the tenant.
        let all = self.range(RangeRequest::prefix("")).await?;
        let mut leases = Vec::new();
        for lease in all.kvs.iter().filter_map(|kv| kv.lease).collect::<BTreeSet<_>>() {
            // A lease that expired since the read is left out: its keys restore without it.
            if let Some(ttl) = self.lease_ttl(lease).await? {
                leases.push((lease, ttl));
            }
        }
        let snap = snapshot::Snapshot {
            revision: all.revision,
            compacted: *self.restored.borrow(),
            next_lease: leases.iter().map(|(id, _)| id + 1).max().unwrap_or(1),
            leases,
            kvs: all.kvs,
        };
        let bytes = snapshot::encode(&snap)?;
        writer.write_all(&bytes).await?;
        writer.flush().await?;
        Ok(SnapshotInfo { revision: snap.revision, keys: snap.kvs.len() as u64, bytes: bytes.len() as u64 })
    }

    #[tracing::instrument(name = "prefixed.restore", skip_all, fields(storage.prefix = %self.prefix))]
    async fn restore(&self, reader: &mut (dyn AsyncRead + Send + Unpin)) -> Result<Revision> {
        let mut buf = Vec::new();
        reader.read_to_end(&mut buf).await?;
        let snap = snapshot::decode(Bytes::from(buf))?;
        // Every key is checked before anything is written.
        let mut wanted = BTreeMap::new();
        for kv in &snap.kvs {
            wanted.insert(self.key(&kv.key)?, kv);
        }
        // Lease ids are the shared store's: reuse only the leases this handle granted and that are
        // still alive (renewing them, as a restore re-grants leases for their full TTL); any other
        // lease of the snapshot is granted anew with its TTL, so the tenant never adopts a lease
        // of another tenant.
        let mut leases = HashMap::new();
        for (id, ttl) in &snap.leases {
            let own = self.lease_ttls().contains_key(id);
            let live = if own && self.inner.lease_keep_alive(*id).await.is_ok() { *id } else { self.lease_grant(*ttl).await? };
            leases.insert(*id, live);
        }
        for _ in 0..RESTORE_ATTEMPTS {
            let current = self.inner.range(RangeRequest::prefix(format!("{}/", self.prefix))).await?;
            // Everything the tenant holds must be as read, or the transaction retries.
            let compare = current
                .kvs
                .iter()
                .map(|kv| Compare::mod_revision(kv.key.to_string(), bosun_store::storage::CompareOp::Equal, kv.mod_revision));
            let deletes = current.kvs.iter().filter(|kv| !wanted.contains_key(&*kv.key)).map(|kv| TxnOp::Delete(kv.key.to_string()));
            let puts = wanted.iter().map(|(key, kv)| TxnOp::Put {
                key: key.clone(),
                value: kv.value.clone(),
                // A key whose lease the snapshot does not list is kept without one, as backends do.
                lease: kv.lease.and_then(|l| leases.get(&l).copied()),
            });
            let txn = Txn::new().when(compare).and_then(deletes.chain(puts));
            let resp = self.inner.txn(txn).await?;
            if resp.succeeded {
                self.restored.send_replace(resp.revision);
                tracing::info!(revision = resp.revision, keys = wanted.len(), "tenant restored");
                return Ok(resp.revision);
            }
        }
        Err(StorageError::Unavailable(format!("the keys under {} kept changing during the restore; stop their writers", self.prefix)))
    }
}

/// A watch of the inner store with the tenant prefix taken off, ended by a restore.
struct TenantWatch {
    /// Shared with the progress requester, which needs the inner stream while this polls it.
    inner: Arc<Mutex<WatchStream>>,
    prefix: Arc<str>,
    /// Resolves with the restore's revision when the tenant is restored.
    restore: Pin<Box<dyn Future<Output = Revision> + Send>>,
    after: Revision,
    done: bool,
}

impl Stream for TenantWatch {
    type Item = Result<WatchEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(revision) = this.restore.as_mut().poll(cx) {
            this.done = true;
            return Poll::Ready(Some(Err(StorageError::Compacted { requested: this.after, compacted: revision })));
        }
        let polled = match this.inner.lock() {
            Ok(mut inner) => inner.poll_next_unpin(cx),
            Err(_) => Poll::Ready(None),
        };
        match polled {
            Poll::Ready(Some(Ok(event))) => Poll::Ready(Some(Ok(strip_event(&this.prefix, event)))),
            Poll::Ready(other) => {
                // An error or the end: the stream is over either way.
                this.done = true;
                Poll::Ready(other)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_store::MemoryStorage;

    fn tenant(inner: &Arc<MemoryStorage>, prefix: &str) -> PrefixedStorage<Arc<MemoryStorage>> {
        PrefixedStorage::new(inner.clone(), prefix).expect("valid prefix")
    }

    #[test]
    fn a_prefix_must_start_but_not_end_with_a_slash() {
        let inner = Arc::new(MemoryStorage::new());
        assert!(PrefixedStorage::new(inner.clone(), "/clusters/a").is_ok());
        for bad in ["", "/", "clusters/a", "/clusters/a/"] {
            assert!(PrefixedStorage::new(inner.clone(), bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn keys_are_stored_under_the_prefix_and_come_back_without_it() {
        let inner = Arc::new(MemoryStorage::new());
        let a = tenant(&inner, "/clusters/a");
        let kv = a.create("/registry/x", Bytes::from_static(b"1"), None).await.expect("create");
        assert_eq!(&*kv.key, "/registry/x");
        assert!(inner.get("/clusters/a/registry/x").await.expect("inner get").is_some());
        let all = a.range(RangeRequest::prefix("")).await.expect("range");
        assert_eq!(all.kvs.iter().map(|kv| kv.key.to_string()).collect::<Vec<_>>(), ["/registry/x"]);
        let err = a.put("registry/y", Bytes::new(), None).await.expect_err("no leading slash");
        assert!(matches!(err, StorageError::InvalidArgument(_)), "{err}");
    }

    #[tokio::test]
    async fn a_sibling_whose_name_extends_the_prefix_stays_invisible() {
        let inner = Arc::new(MemoryStorage::new());
        let a = tenant(&inner, "/clusters/a");
        let ab = tenant(&inner, "/clusters/ab");
        ab.put("/k", Bytes::from_static(b"ab"), None).await.expect("put");
        assert_eq!(a.count("").await.expect("count"), 0);
        assert_eq!(ab.count("").await.expect("count"), 1);
        // A continuation key past every tenant key reads nothing, even with a sibling after it.
        let after = a.range(RangeRequest::prefix("").start_after("0")).await.expect("range");
        assert!(after.kvs.is_empty());
    }
}
