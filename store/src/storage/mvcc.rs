//! The in-memory multi-version state machine shared by the memory and durable backends.
//!
//! Every key keeps its versions since the compaction point; a log keeps one batch of events per
//! revision so that watches can replay history. Applying a transaction validates everything
//! first, so a failing transaction changes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::{
    KeyValue, LeaseId, RangeRequest, RangeResponse, Result, Revision, StorageError, Txn, TxnOp, TxnOpResult, TxnResponse, WatchEvent,
};

/// One logged write of a batch: `Some` puts the value with its lease, `None` deletes.
pub(crate) type LoggedWrite = (Arc<str>, Option<(Bytes, Option<LeaseId>)>);

/// The events of one revision.
#[derive(Debug)]
pub(crate) struct Batch {
    pub revision: Revision,
    pub events: Vec<WatchEvent>,
}

/// One version of a key: its value, or a tombstone at `revision`.
#[derive(Clone, Debug)]
struct Version {
    revision: Revision,
    kv: Option<KeyValue>,
}

/// A lease and the keys attached to it.
#[derive(Clone, Debug)]
pub(crate) struct LeaseEntry {
    pub ttl: Duration,
    pub deadline: Instant,
    pub keys: BTreeSet<Arc<str>>,
}

/// The portable content of a snapshot: the newest value of every key, and the leases.
#[derive(Clone, Debug, Default)]
pub(crate) struct SnapshotData {
    pub revision: Revision,
    pub compacted: Revision,
    pub next_lease: LeaseId,
    pub kvs: Vec<KeyValue>,
    pub leases: Vec<(LeaseId, Duration)>,
}

/// The multi-version store.
#[derive(Debug)]
pub(crate) struct Mvcc {
    /// The revision of the last applied write.
    pub revision: Revision,
    /// History at and before this revision is gone.
    pub compacted: Revision,
    keys: BTreeMap<Arc<str>, Vec<Version>>,
    /// One batch per revision in `compacted + 1 ..= revision`.
    log: VecDeque<Arc<Batch>>,
    pub leases: HashMap<LeaseId, LeaseEntry>,
    pub next_lease: LeaseId,
}

impl Default for Mvcc {
    fn default() -> Self {
        Self { revision: 0, compacted: 0, keys: BTreeMap::new(), log: VecDeque::new(), leases: HashMap::new(), next_lease: 1 }
    }
}

fn value_at(versions: &[Version], revision: Revision) -> Option<&KeyValue> {
    let idx = versions.partition_point(|v| v.revision <= revision);
    if idx == 0 { None } else { versions[idx - 1].kv.as_ref() }
}

impl Mvcc {
    /// The newest value of a key.
    pub fn latest(&self, key: &str) -> Option<&KeyValue> {
        self.keys.get(key).and_then(|v| v.last()).and_then(|v| v.kv.as_ref())
    }

    /// Checks that `revision` can be read when `visible` is the newest readable revision.
    pub fn check_readable(&self, revision: Revision, visible: Revision) -> Result<()> {
        if revision > visible {
            return Err(StorageError::FutureRevision { requested: revision, current: visible });
        }
        if revision < self.compacted {
            return Err(StorageError::Compacted { requested: revision, compacted: self.compacted });
        }
        Ok(())
    }

    /// Serves a range read at `visible` (or the request's older revision).
    pub fn range(&self, req: &RangeRequest, visible: Revision) -> Result<RangeResponse> {
        let at = if req.revision > 0 { req.revision } else { visible };
        self.check_readable(at, visible)?;
        let mut resp = RangeResponse { revision: at, ..RangeResponse::default() };
        if req.exact {
            let after = req.start_after.as_deref().is_some_and(|s| s >= req.prefix.as_str());
            if !after && let Some(kv) = self.keys.get(req.prefix.as_str()).and_then(|v| value_at(v, at)) {
                resp.count = 1;
                if !req.count_only {
                    resp.kvs.push(kv.clone());
                }
            }
            return Ok(resp);
        }
        let lower = match &req.start_after {
            Some(s) if s.as_str() >= req.prefix.as_str() => Bound::Excluded(s.as_str()),
            _ => Bound::Included(req.prefix.as_str()),
        };
        for (key, versions) in self.keys.range::<str, _>((lower, Bound::Unbounded)) {
            if !key.starts_with(req.prefix.as_str()) {
                break;
            }
            let Some(kv) = value_at(versions, at) else { continue };
            resp.count += 1;
            if req.count_only {
                continue;
            }
            if req.limit > 0 && resp.kvs.len() >= req.limit {
                resp.more = true;
                if req.without_total {
                    break;
                }
            } else {
                resp.kvs.push(kv.clone());
            }
        }
        Ok(resp)
    }

    /// The batches after `after` up to `visible`, for a watch to replay.
    pub fn history(&self, after: Revision, visible: Revision) -> Result<Vec<Arc<Batch>>> {
        if after < self.compacted {
            return Err(StorageError::Compacted { requested: after, compacted: self.compacted });
        }
        let start = usize::try_from(after - self.compacted).unwrap_or(usize::MAX);
        let end = usize::try_from(visible - self.compacted).unwrap_or(0).min(self.log.len());
        Ok(if start >= end { Vec::new() } else { self.log.range(start..end).cloned().collect() })
    }

    fn validate(&self, ops: &[TxnOp]) -> Result<()> {
        let mut written = HashSet::new();
        for op in ops {
            match op {
                TxnOp::Get(_) => {}
                TxnOp::Put { key, lease, .. } => {
                    if !written.insert(key.as_str()) {
                        return Err(StorageError::InvalidArgument(format!("key {key:?} written twice in one transaction")));
                    }
                    if let Some(l) = lease
                        && !self.leases.contains_key(l)
                    {
                        return Err(StorageError::LeaseNotFound(*l));
                    }
                }
                TxnOp::Delete(key) => {
                    if !written.insert(key.as_str()) {
                        return Err(StorageError::InvalidArgument(format!("key {key:?} written twice in one transaction")));
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies a transaction against the newest state. Returns the response and, if it wrote,
    /// the batch of its events (already appended to the log).
    pub fn apply_txn(&mut self, txn: &Txn) -> Result<(TxnResponse, Option<Arc<Batch>>)> {
        let succeeded = txn.compare.iter().all(|c| c.evaluate(self.latest(&c.key)));
        let ops = if succeeded { &txn.success } else { &txn.failure };
        self.validate(ops)?;
        let revision = self.revision + 1;
        let mut events = Vec::new();
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                TxnOp::Get(key) => results.push(TxnOpResult::Get(self.latest(key).cloned())),
                TxnOp::Put { key, value, lease } => {
                    let (kv, prev) = self.put(Arc::from(key.as_str()), value.clone(), *lease, revision);
                    results.push(TxnOpResult::Put { prev: prev.clone() });
                    events.push(WatchEvent::Put { kv, prev });
                }
                TxnOp::Delete(key) => {
                    let prev = self.delete(key, revision);
                    results.push(TxnOpResult::Delete { prev: prev.clone() });
                    if let Some(prev) = prev {
                        events.push(WatchEvent::Delete { key: prev.key.clone(), revision, prev: Some(prev) });
                    }
                }
            }
        }
        let batch = self.finish(revision, events);
        Ok((TxnResponse { succeeded, revision: self.revision, results }, batch))
    }

    fn finish(&mut self, revision: Revision, events: Vec<WatchEvent>) -> Option<Arc<Batch>> {
        if events.is_empty() {
            return None;
        }
        self.revision = revision;
        let batch = Arc::new(Batch { revision, events });
        self.log.push_back(batch.clone());
        Some(batch)
    }

    /// Replays a logged batch of writes at `revision` (`Some(value)` puts, `None` deletes).
    pub fn replay(&mut self, revision: Revision, writes: Vec<LoggedWrite>) -> Result<()> {
        if revision != self.revision + 1 {
            return Err(StorageError::Corrupt(format!("log revision {revision} after {}: revisions must be gap-free", self.revision)));
        }
        let mut events = Vec::with_capacity(writes.len());
        for (key, write) in writes {
            match write {
                Some((value, lease)) => {
                    let lease = lease.filter(|l| self.leases.contains_key(l));
                    let (kv, prev) = self.put(key, value, lease, revision);
                    events.push(WatchEvent::Put { kv, prev });
                }
                None => {
                    if let Some(prev) = self.delete(&key, revision) {
                        events.push(WatchEvent::Delete { key, revision, prev: Some(prev) });
                    }
                }
            }
        }
        if events.is_empty() {
            // A logged batch that changed nothing cannot happen; keep the revision gap-free anyway.
            self.revision = revision;
            self.log.push_back(Arc::new(Batch { revision, events }));
        } else {
            self.finish(revision, events);
        }
        Ok(())
    }

    fn put(&mut self, key: Arc<str>, value: Bytes, lease: Option<LeaseId>, revision: Revision) -> (KeyValue, Option<KeyValue>) {
        let prev = self.latest(&key).cloned();
        if let Some(old) = prev.as_ref().and_then(|p| p.lease)
            && Some(old) != lease
            && let Some(l) = self.leases.get_mut(&old)
        {
            l.keys.remove(&key);
        }
        if let Some(l) = lease.and_then(|l| self.leases.get_mut(&l)) {
            l.keys.insert(key.clone());
        }
        let kv = KeyValue {
            key: key.clone(),
            value,
            create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
            mod_revision: revision,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            lease,
        };
        self.keys.entry(key).or_default().push(Version { revision, kv: Some(kv.clone()) });
        (kv, prev)
    }

    fn delete(&mut self, key: &str, revision: Revision) -> Option<KeyValue> {
        let prev = self.latest(key).cloned()?;
        if let Some(l) = prev.lease.and_then(|l| self.leases.get_mut(&l)) {
            l.keys.remove(key);
        }
        if let Some(v) = self.keys.get_mut(key) {
            v.push(Version { revision, kv: None });
        }
        Some(prev)
    }

    /// Forgets history at and before `revision` (which the caller checked is readable).
    pub fn compact(&mut self, revision: Revision) {
        if revision <= self.compacted {
            return;
        }
        let drop = usize::try_from(revision - self.compacted).unwrap_or(usize::MAX).min(self.log.len());
        self.log.drain(..drop);
        self.keys.retain(|_, versions| {
            let idx = versions.partition_point(|v| v.revision <= revision);
            if idx > 0 {
                let keep_from = if versions[idx - 1].kv.is_some() { idx - 1 } else { idx };
                versions.drain(..keep_from);
            }
            !versions.is_empty()
        });
        self.compacted = revision;
    }

    /// Grants a lease with a chosen id.
    pub fn grant_lease(&mut self, id: LeaseId, ttl: Duration, now: Instant) {
        self.next_lease = self.next_lease.max(id + 1);
        self.leases.insert(id, LeaseEntry { ttl, deadline: now + ttl, keys: BTreeSet::new() });
    }

    /// Renews a lease, returning its TTL.
    pub fn keep_alive(&mut self, id: LeaseId, now: Instant) -> Result<Duration> {
        let lease = self.leases.get_mut(&id).ok_or(StorageError::LeaseNotFound(id))?;
        lease.deadline = now + lease.ttl;
        Ok(lease.ttl)
    }

    /// Revokes a lease, deleting its keys in one revision.
    pub fn revoke_lease(&mut self, id: LeaseId) -> Result<Option<Arc<Batch>>> {
        let lease = self.leases.remove(&id).ok_or(StorageError::LeaseNotFound(id))?;
        let revision = self.revision + 1;
        let mut events = Vec::new();
        for key in lease.keys {
            if let Some(prev) = self.delete(&key, revision) {
                events.push(WatchEvent::Delete { key, revision, prev: Some(prev) });
            }
        }
        Ok(self.finish(revision, events))
    }

    /// The leases whose deadline has passed.
    pub fn expired_leases(&self, now: Instant) -> Vec<LeaseId> {
        let mut ids: Vec<_> = self.leases.iter().filter(|(_, l)| l.deadline <= now).map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids
    }

    /// The newest value of every key at `revision`, and the leases.
    pub fn snapshot(&self, revision: Revision) -> SnapshotData {
        let kvs = self.keys.values().filter_map(|v| value_at(v, revision)).cloned().collect();
        let mut leases: Vec<_> = self.leases.iter().map(|(id, l)| (*id, l.ttl)).collect();
        leases.sort_unstable();
        SnapshotData { revision, compacted: self.compacted.min(revision), next_lease: self.next_lease, kvs, leases }
    }

    /// Builds a store from a snapshot whose revision and compaction point are both `revision`.
    pub fn from_snapshot(data: SnapshotData, revision: Revision, now: Instant) -> Self {
        let mut mvcc = Mvcc { revision, compacted: revision, next_lease: data.next_lease.max(1), ..Mvcc::default() };
        for (id, ttl) in data.leases {
            mvcc.grant_lease(id, ttl, now);
        }
        for mut kv in data.kvs {
            match kv.lease.and_then(|l| mvcc.leases.get_mut(&l)) {
                Some(l) => {
                    l.keys.insert(kv.key.clone());
                }
                None => kv.lease = None,
            }
            mvcc.keys.insert(kv.key.clone(), vec![Version { revision: kv.mod_revision, kv: Some(kv) }]);
        }
        mvcc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Compare, CompareOp};

    fn put(m: &mut Mvcc, key: &str, value: &'static str) -> Revision {
        let (resp, _) = m.apply_txn(&Txn::new().and_then([TxnOp::put(key, value)])).expect("txn");
        resp.revision
    }

    #[test]
    fn compaction_keeps_the_newest_value_and_drops_deleted_keys() {
        let mut m = Mvcc::default();
        put(&mut m, "a", "1");
        put(&mut m, "a", "2");
        put(&mut m, "b", "1");
        m.apply_txn(&Txn::new().and_then([TxnOp::delete("b")])).expect("delete");
        m.compact(4);
        assert_eq!(m.latest("a").map(|kv| kv.value.clone()), Some(Bytes::from_static(b"2")));
        assert!(!m.keys.contains_key("b"));
        assert!(m.range(&RangeRequest::prefix("").at_revision(3), 4).is_err());
        assert_eq!(m.range(&RangeRequest::prefix(""), 4).expect("range").count, 1);
    }

    #[test]
    fn a_page_without_total_stops_at_its_end_with_the_same_keys() {
        let mut m = Mvcc::default();
        for k in ["p/a", "p/b", "p/c", "p/d", "q/a"] {
            put(&mut m, k, "1");
        }
        m.apply_txn(&Txn::new().and_then([TxnOp::delete("p/b")])).expect("delete");
        let visible = m.revision;
        let full = m.range(&RangeRequest::prefix("p/").limit(2), visible).expect("range");
        let short = m.range(&RangeRequest::prefix("p/").limit(2).without_total(), visible).expect("range");
        assert_eq!((full.kvs.len(), full.more, full.count), (2, true, 3));
        assert_eq!(
            (short.kvs, short.more, short.count),
            (full.kvs, true, 3),
            "the deleted key is skipped, the third live key ends the walk"
        );
        let last = m.range(&RangeRequest::prefix("p/").limit(2).start_after("p/c").without_total(), visible).expect("range");
        assert_eq!((last.kvs.len(), last.more, last.count), (1, false, 1));
    }

    #[test]
    fn a_failing_transaction_changes_nothing() {
        let mut m = Mvcc::default();
        put(&mut m, "a", "1");
        let txn = Txn::new().and_then([TxnOp::put("x", "1"), TxnOp::put("x", "2")]);
        assert!(m.apply_txn(&txn).is_err());
        let txn = Txn::new()
            .when([Compare::mod_revision("a", CompareOp::Equal, 1)])
            .and_then([TxnOp::put("y", "1"), TxnOp::Put { key: "z".into(), value: Bytes::new(), lease: Some(42) }]);
        assert!(matches!(m.apply_txn(&txn), Err(StorageError::LeaseNotFound(42))));
        assert_eq!(m.revision, 1);
        assert!(m.latest("x").is_none() && m.latest("y").is_none());
    }
}
