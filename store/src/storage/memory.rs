//! `MemoryStorage`: the multi-version store in memory, for tests and embedding.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::mvcc::{Batch, Mvcc};
use super::watch::Hub;
use super::{
    LeaseId, RangeRequest, RangeResponse, Result, Revision, SnapshotInfo, Storage, StorageError, Txn, TxnResponse, WatchOptions,
    WatchStream, snapshot,
};

/// How many committed revisions a watcher may fall behind before it is cut off, by default.
pub(crate) const DEFAULT_WATCH_CAPACITY: usize = 65_536;

/// How often expired leases are looked for.
const LEASE_CHECK: Duration = Duration::from_millis(100);

/// A [`Storage`] in memory: multi-version, with watches, leases and compaction, and nothing
/// persisted. Cloning shares the store.
#[derive(Clone, Debug)]
pub struct MemoryStorage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    mvcc: RwLock<Mvcc>,
    hub: Arc<Hub>,
    lease_task: std::sync::Once,
}

impl Default for MemoryStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStorage {
    /// An empty store at revision 0.
    pub fn new() -> Self {
        Self::with_watch_capacity(DEFAULT_WATCH_CAPACITY)
    }

    /// An empty store whose watchers may fall `capacity` revisions behind the writers before
    /// they are cut off with [`StorageError::WatchLagged`] (default 65,536).
    pub fn with_watch_capacity(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                mvcc: RwLock::new(Mvcc::default()),
                hub: Arc::new(Hub::new(capacity, 0)),
                lease_task: std::sync::Once::new(),
            }),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Mvcc> {
        self.inner.mvcc.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Mvcc> {
        self.inner.mvcc.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a change and publishes its batch while still holding the write lock, so that
    /// watchers see batches in revision order.
    fn commit<T>(&self, f: impl FnOnce(&mut Mvcc) -> Result<(T, Option<Arc<Batch>>)>) -> Result<T> {
        let mut m = self.write();
        let (out, batch) = f(&mut m)?;
        if let Some(b) = batch {
            let g = self.inner.hub.lock();
            self.inner.hub.publish(&g, [b], m.revision);
        }
        Ok(out)
    }

    fn start_lease_expiry(&self) {
        let weak = Arc::downgrade(&self.inner);
        self.inner.lease_task.call_once(|| {
            tokio::spawn(expire_leases(weak));
        });
    }
}

async fn expire_leases(weak: Weak<Inner>) {
    let mut tick = tokio::time::interval(LEASE_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        let store = MemoryStorage { inner };
        let expired = store.read().expired_leases(Instant::now());
        for id in expired {
            tracing::debug!(lease.id = id, "lease expired");
            // A lease revoked meanwhile is fine.
            let _ = store.commit(|m| Ok(((), m.revoke_lease(id)?)));
        }
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        let m = self.read();
        m.range(&request, m.revision)
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.commit(|m| m.apply_txn(&txn))
    }

    async fn watch(&self, prefix: &str, after_revision: Revision, options: WatchOptions) -> Result<WatchStream> {
        let m = self.read();
        let hub = &self.inner.hub;
        let g = hub.lock();
        let history = m.history(after_revision, hub.visible())?;
        Ok(hub.subscribe(&g, prefix, after_revision, history, &options))
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.read().revision)
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        if ttl.is_zero() {
            return Err(StorageError::InvalidArgument("a lease needs a positive TTL".into()));
        }
        self.start_lease_expiry();
        let mut m = self.write();
        let id = m.next_lease;
        m.grant_lease(id, ttl, Instant::now());
        Ok(id)
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        self.write().keep_alive(lease, Instant::now())
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.commit(|m| Ok(((), m.revoke_lease(lease)?)))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let mut m = self.write();
        if revision > m.revision {
            return Err(StorageError::FutureRevision { requested: revision, current: m.revision });
        }
        if revision <= m.compacted {
            return Err(StorageError::Compacted { requested: revision, compacted: m.compacted });
        }
        m.compact(revision);
        Ok(())
    }

    async fn snapshot(&self, writer: &mut (dyn AsyncWrite + Send + Unpin)) -> Result<SnapshotInfo> {
        let data = {
            let m = self.read();
            m.snapshot(m.revision)
        };
        snapshot::write_async(&data, writer).await
    }

    async fn restore(&self, reader: &mut (dyn AsyncRead + Send + Unpin)) -> Result<Revision> {
        let data = snapshot::read_async(reader).await?;
        self.start_lease_expiry();
        let mut m = self.write();
        let revision = m.revision.max(data.revision) + 1;
        *m = Mvcc::from_snapshot(data, revision, Instant::now());
        let g = self.inner.hub.lock();
        self.inner.hub.reset(&g, revision);
        Ok(revision)
    }
}
