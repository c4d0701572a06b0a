//! `EtcdStorage`: the [`Storage`] trait over a real etcd cluster through `etcd-client`.
//!
//! The trait is etcd's v3 API, so operations map one-to-one: ranges, transactions, watches (with
//! `prev_kv` and progress requests), leases and compaction. Keys live under a namespace prefix
//! so that several stores can share a cluster. Watches survive the loss of the member they are
//! connected to: they reconnect to another member and resume after the last revision delivered.
//! Snapshot and restore use the portable bosun format (so backups move between backends);
//! restore rewrites the namespace and then compacts at the new revision, etcd's
//! `--mark-compacted`, and ends this store's open watches with `Compacted`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client as ec;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};

use super::mvcc::SnapshotData;
use super::{
    Compare, CompareOp, CompareTarget, KeyValue, LeaseId, RangeRequest, RangeResponse, Result, Revision, SnapshotInfo, Storage,
    StorageError, Txn, TxnOp, TxnOpResult, TxnResponse, WatchEvent, WatchOptions, WatchStream, snapshot,
};

/// How many operations go into one transaction when restoring (etcd's default cap is 128).
const RESTORE_OPS: usize = 64;
/// The largest response accepted (a range of many large values).
const MAX_RESPONSE: usize = 1 << 30;
/// How many keys one page of a snapshot reads.
const SNAPSHOT_PAGE: i64 = 1000;
/// How long a watch keeps trying to reconnect before it fails with `Unavailable`.
const WATCH_RECONNECT: Duration = Duration::from_secs(30);
/// How long a request is retried while the cluster is unreachable (for example while the
/// client moves off a member that stopped).
const RETRY_FOR: Duration = Duration::from_secs(15);
/// How many failed attempts of a request are retried at once, before retries wait 100 ms each.
const IMMEDIATE_RETRIES: u32 = 4;

/// Whether an `Unavailable` error means the request never reached a server, so that even a
/// write can be sent again.
fn never_sent(message: &str) -> bool {
    ["tcp connect error", "Connection refused", "error trying to connect"].iter().any(|m| message.contains(m))
}

/// Runs `f` again while it fails with `Unavailable`: always when `idempotent`, otherwise only
/// when the request never left the client.
async fn retry<T, F, Fut>(idempotent: bool, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let deadline = tokio::time::Instant::now() + RETRY_FOR;
    let mut failures = 0u32;
    loop {
        match f().await {
            Err(StorageError::Unavailable(msg)) if (idempotent || never_sent(&msg)) && tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %msg, failures, "etcd unavailable; retrying");
                // The client balances requests over the members, so with one member down about
                // one request in three lands on it; the next attempt most likely goes to a live
                // member. Only when attempts keep failing is the cluster itself away: then wait.
                failures += 1;
                if failures > IMMEDIATE_RETRIES {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            other => return other,
        }
    }
}

/// A [`Storage`] over an etcd cluster. Cloning shares the connection.
#[derive(Clone)]
pub struct EtcdStorage {
    client: ec::Client,
    namespace: Arc<str>,
    /// Bumped by `restore`: open watches end with `Compacted`.
    epoch: watch::Sender<Revision>,
}

impl std::fmt::Debug for EtcdStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStorage").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

fn map_err(e: ec::Error) -> StorageError {
    match e {
        ec::Error::GRpcStatus(status) => {
            let msg = status.message();
            if msg.contains("required revision has been compacted") {
                StorageError::Compacted { requested: 0, compacted: 0 }
            } else if msg.contains("required revision is a future revision") {
                StorageError::FutureRevision { requested: 0, current: 0 }
            } else if msg.contains("requested lease not found") {
                StorageError::LeaseNotFound(0)
            } else if ["duplicate key", "too many operations", "request is too large", "value size"].iter().any(|m| msg.contains(m)) {
                StorageError::InvalidArgument(msg.to_owned())
            } else {
                StorageError::Unavailable(format!("etcd: {msg} ({:?})", status.code()))
            }
        }
        ec::Error::TransportError(e) => StorageError::Unavailable(format!("etcd transport: {e}")),
        ec::Error::IoError(e) => StorageError::Io(e),
        ec::Error::LeaseKeepAliveError(msg) if msg.contains("lease not found") => StorageError::LeaseNotFound(0),
        other => StorageError::Backend(Box::new(other)),
    }
}

/// The first key after every key that starts with `prefix` (etcd's `range_end` for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every key: etcd's "\0" range end means "to the end".
    vec![0]
}

fn ec_op(op: CompareOp) -> ec::CompareOp {
    match op {
        CompareOp::Equal => ec::CompareOp::Equal,
        CompareOp::NotEqual => ec::CompareOp::NotEqual,
        CompareOp::Greater => ec::CompareOp::Greater,
        CompareOp::Less => ec::CompareOp::Less,
    }
}

impl EtcdStorage {
    /// Connects to etcd at `endpoints` (such as `http://127.0.0.1:2379`), storing keys under
    /// `namespace` (for example `/bosun`; empty for the whole key space).
    pub async fn connect(endpoints: &[impl AsRef<str>], namespace: &str) -> Result<Self> {
        let options = ec::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(10))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
        let client = ec::Client::connect(endpoints, Some(options)).await.map_err(map_err)?;
        Ok(Self::from_client(client, namespace))
    }

    /// Wraps a connected client.
    pub fn from_client(client: ec::Client, namespace: &str) -> Self {
        let (epoch, _) = watch::channel(0);
        Self { client, namespace: namespace.into(), epoch }
    }

    fn full(&self, key: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.namespace.len() + key.len());
        k.extend_from_slice(self.namespace.as_bytes());
        k.extend_from_slice(key.as_bytes());
        k
    }

    /// The full key, or `"\0"` in place of the empty key (which etcd refuses).
    fn nonempty(&self, key: &str) -> Vec<u8> {
        let k = self.full(key);
        if k.is_empty() { vec![0] } else { k }
    }

    fn strip(&self, key: &[u8]) -> Result<Arc<str>> {
        let rest = key.strip_prefix(self.namespace.as_bytes()).unwrap_or(key);
        std::str::from_utf8(rest).map(Arc::from).map_err(|_| StorageError::Corrupt("etcd key is not UTF-8".into()))
    }

    fn kv(&self, kv: &ec::KeyValue) -> Result<KeyValue> {
        Ok(KeyValue {
            key: self.strip(kv.key())?,
            value: Bytes::copy_from_slice(kv.value()),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            version: kv.version(),
            lease: Some(kv.lease()).filter(|l| *l != 0),
        })
    }

    fn compare(&self, c: &Compare) -> ec::Compare {
        let key = self.full(&c.key);
        let op = ec_op(c.op);
        match &c.target {
            CompareTarget::ModRevision(r) => ec::Compare::mod_revision(key, op, *r),
            CompareTarget::CreateRevision(r) => ec::Compare::create_revision(key, op, *r),
            CompareTarget::Version(v) => ec::Compare::version(key, op, *v),
            CompareTarget::Value(v) => ec::Compare::value(key, op, v.to_vec()),
        }
    }

    fn op(&self, op: &TxnOp) -> ec::TxnOp {
        match op {
            TxnOp::Get(key) => ec::TxnOp::get(self.full(key), None),
            TxnOp::Put { key, value, lease } => {
                let mut opts = ec::PutOptions::new().with_prev_key();
                if let Some(l) = lease {
                    opts = opts.with_lease(*l);
                }
                ec::TxnOp::put(self.full(key), value.to_vec(), Some(opts))
            }
            TxnOp::Delete(key) => ec::TxnOp::delete(self.full(key), Some(ec::DeleteOptions::new().with_prev_key())),
        }
    }

    async fn header_revision(&self) -> Result<Revision> {
        retry(true, || async {
            let resp =
                self.client.kv_client().get(self.nonempty(""), Some(ec::GetOptions::new().with_count_only())).await.map_err(map_err)?;
            Ok(resp.header().map_or(0, |h| h.revision()))
        })
        .await
    }

    async fn leases_snapshot(&self) -> Result<Vec<(LeaseId, Duration)>> {
        let mut lc = self.client.lease_client();
        let list = lc.leases().await.map_err(map_err)?;
        let mut out = Vec::new();
        for l in list.leases() {
            let ttl = lc.time_to_live(l.id(), None).await.map_err(map_err)?;
            if ttl.ttl() > 0 {
                out.push((l.id(), Duration::from_secs(u64::try_from(ttl.granted_ttl()).unwrap_or(1))));
            }
        }
        out.sort_unstable();
        Ok(out)
    }
}

impl EtcdStorage {
    async fn range_once(&self, req: &RangeRequest) -> Result<RangeResponse> {
        let mut opts = ec::GetOptions::new();
        let key = if req.exact {
            if req.start_after.as_deref().is_some_and(|s| s >= req.prefix.as_str()) {
                // Nothing after the only key: read nothing but still report the revision.
                let revision = if req.revision > 0 { req.revision } else { self.header_revision().await? };
                return Ok(RangeResponse { revision, ..RangeResponse::default() });
            }
            self.nonempty(&req.prefix)
        } else {
            let full_prefix = self.full(&req.prefix);
            opts = opts.with_range(prefix_end(&full_prefix));
            match &req.start_after {
                Some(after) if after.as_str() >= req.prefix.as_str() => {
                    let mut k = self.full(after);
                    k.push(0);
                    k
                }
                _ if full_prefix.is_empty() => vec![0],
                _ => full_prefix,
            }
        };
        if req.limit > 0 {
            opts = opts.with_limit(i64::try_from(req.limit).unwrap_or(i64::MAX));
        }
        if req.revision > 0 {
            opts = opts.with_revision(req.revision);
        }
        if req.count_only {
            opts = opts.with_count_only();
        }
        let resp =
            self.client.kv_client().max_decoding_message_size(MAX_RESPONSE).get(key, Some(opts)).await.map_err(|e| match map_err(e) {
                StorageError::Compacted { .. } => StorageError::Compacted { requested: req.revision, compacted: 0 },
                StorageError::FutureRevision { .. } => StorageError::FutureRevision { requested: req.revision, current: 0 },
                other => other,
            })?;
        let kvs = resp.kvs().iter().map(|kv| self.kv(kv)).collect::<Result<Vec<_>>>()?;
        let header = resp.header().map_or(0, |h| h.revision());
        Ok(RangeResponse {
            kvs,
            more: resp.more(),
            count: u64::try_from(resp.count()).unwrap_or(0),
            revision: if req.revision > 0 { req.revision } else { header },
        })
    }

    async fn txn_once(&self, txn: &Txn) -> Result<TxnResponse> {
        let ops = |ops: &[TxnOp]| ops.iter().map(|o| self.op(o)).collect::<Vec<_>>();
        let etxn = ec::Txn::new()
            .when(txn.compare.iter().map(|c| self.compare(c)).collect::<Vec<_>>())
            .and_then(ops(&txn.success))
            .or_else(ops(&txn.failure));
        let resp = self.client.kv_client().max_decoding_message_size(MAX_RESPONSE).txn(etxn).await.map_err(|e| match map_err(e) {
            StorageError::LeaseNotFound(_) => {
                let lease = txn.success.iter().chain(&txn.failure).find_map(|o| match o {
                    TxnOp::Put { lease: Some(l), .. } => Some(*l),
                    _ => None,
                });
                StorageError::LeaseNotFound(lease.unwrap_or(0))
            }
            other => other,
        })?;
        let mut results = Vec::new();
        for r in resp.op_responses() {
            results.push(match r {
                ec::TxnOpResponse::Get(g) => TxnOpResult::Get(g.kvs().first().map(|kv| self.kv(kv)).transpose()?),
                ec::TxnOpResponse::Put(p) => TxnOpResult::Put { prev: p.prev_key().map(|kv| self.kv(kv)).transpose()? },
                ec::TxnOpResponse::Delete(d) => TxnOpResult::Delete { prev: d.prev_kvs().first().map(|kv| self.kv(kv)).transpose()? },
                ec::TxnOpResponse::Txn(_) => return Err(StorageError::Corrupt("unexpected nested transaction".into())),
            });
        }
        Ok(TxnResponse { succeeded: resp.succeeded(), revision: resp.header().map_or(0, |h| h.revision()), results })
    }

    fn watch_impl(&self, prefix: &str, after_revision: Revision, options: WatchOptions) -> WatchStream {
        let (tx, rx) = mpsc::channel::<Result<WatchEvent>>(1024);
        let (progress_tx, progress_rx) = mpsc::unbounded_channel::<()>();
        let task = EtcdWatch {
            storage: self.clone(),
            prefix: prefix.to_owned(),
            exact: options.exact,
            last: after_revision,
            interval: options.progress_interval,
            epoch: self.epoch.subscribe(),
            tx,
            progress: progress_rx,
            healthy: false,
            progress_pending: false,
        };
        tokio::spawn(task.run());
        let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        WatchStream::new(
            stream.boxed(),
            Some(Arc::new(move || {
                let _ = progress_tx.send(());
            })),
        )
    }

    async fn keep_alive_once(&self, lease: LeaseId) -> Result<Duration> {
        let not_found = |e| match map_err(e) {
            StorageError::LeaseNotFound(_) => StorageError::LeaseNotFound(lease),
            other => other,
        };
        let (mut keeper, mut stream) = self.client.lease_client().keep_alive(lease).await.map_err(not_found)?;
        keeper.keep_alive().await.map_err(not_found)?;
        match stream.message().await.map_err(not_found)? {
            Some(resp) if resp.ttl() > 0 => Ok(Duration::from_secs(u64::try_from(resp.ttl()).unwrap_or(0))),
            _ => Err(StorageError::LeaseNotFound(lease)),
        }
    }
}

#[async_trait]
impl Storage for EtcdStorage {
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        retry(true, || self.range_once(&req)).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        retry(false, || self.txn_once(&txn)).await
    }

    async fn watch(&self, prefix: &str, after_revision: Revision, options: WatchOptions) -> Result<WatchStream> {
        // etcd starts a watch at `after_revision + 1` even when `after_revision` itself was
        // compacted; a read at `after_revision` fails exactly when this trait's watch must.
        if after_revision > 0 {
            match self.range(RangeRequest::key(prefix).at_revision(after_revision).count_only()).await {
                Ok(_) | Err(StorageError::FutureRevision { .. }) => {}
                Err(StorageError::Compacted { .. }) => return Err(StorageError::Compacted { requested: after_revision, compacted: 0 }),
                Err(e) => return Err(e),
            }
        }
        Ok(self.watch_impl(prefix, after_revision, options))
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.header_revision().await
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        if ttl.is_zero() {
            return Err(StorageError::InvalidArgument("a lease needs a positive TTL".into()));
        }
        let secs = i64::try_from(ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).unwrap_or(i64::MAX);
        retry(false, || async { Ok(self.client.lease_client().grant(secs, None).await.map_err(map_err)?.id()) }).await
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        retry(true, || self.keep_alive_once(lease)).await
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        retry(false, || async {
            self.client.lease_client().revoke(lease).await.map_err(|e| match map_err(e) {
                StorageError::LeaseNotFound(_) => StorageError::LeaseNotFound(lease),
                other => other,
            })?;
            Ok(())
        })
        .await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        retry(false, || async {
            self.client.kv_client().compact(revision, Some(ec::CompactionOptions::new().with_physical())).await.map_err(
                |e| match map_err(e) {
                    StorageError::Compacted { .. } => StorageError::Compacted { requested: revision, compacted: 0 },
                    StorageError::FutureRevision { .. } => StorageError::FutureRevision { requested: revision, current: 0 },
                    other => other,
                },
            )?;
            Ok(())
        })
        .await
    }

    async fn snapshot(&self, writer: &mut (dyn AsyncWrite + Send + Unpin)) -> Result<SnapshotInfo> {
        let revision = self.header_revision().await?;
        let mut kvs = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut req = RangeRequest::prefix("").at_revision(revision).limit(SNAPSHOT_PAGE as usize);
            if let Some(a) = after.take() {
                req = req.start_after(a);
            }
            let page = self.range(req).await?;
            after = page.kvs.last().map(|kv| kv.key.to_string());
            kvs.extend(page.kvs);
            if !page.more {
                break;
            }
        }
        let leases = self.leases_snapshot().await?;
        let next_lease = leases.iter().map(|(id, _)| id + 1).max().unwrap_or(1);
        let data = SnapshotData { revision, compacted: 0, next_lease, kvs, leases };
        snapshot::write_async(&data, writer).await
    }

    async fn restore(&self, reader: &mut (dyn AsyncRead + Send + Unpin)) -> Result<Revision> {
        let data = snapshot::read_async(reader).await?;
        let mut lc = self.client.lease_client();
        let existing: std::collections::HashSet<LeaseId> = lc.leases().await.map_err(map_err)?.leases().iter().map(|l| l.id()).collect();
        for (id, ttl) in &data.leases {
            if !existing.contains(id) {
                let secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
                lc.grant(secs, Some(ec::LeaseGrantOptions::new().with_id(*id))).await.map_err(map_err)?;
            }
        }
        let live: std::collections::HashSet<LeaseId> = data.leases.iter().map(|(id, _)| *id).collect();
        // Delete what the snapshot does not have, then write what it has.
        let keep: std::collections::HashSet<&str> = data.kvs.iter().map(|kv| &*kv.key).collect();
        let current = self.range(RangeRequest::prefix("")).await?;
        let deletes: Vec<TxnOp> =
            current.kvs.iter().filter(|kv| !keep.contains(&*kv.key)).map(|kv| TxnOp::delete(kv.key.to_string())).collect();
        let puts: Vec<TxnOp> = data
            .kvs
            .iter()
            .map(|kv| TxnOp::Put { key: kv.key.to_string(), value: kv.value.clone(), lease: kv.lease.filter(|l| live.contains(l)) })
            .collect();
        let wrote = !deletes.is_empty() || !puts.is_empty();
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        for op in deletes.into_iter().chain(puts) {
            bytes += match &op {
                TxnOp::Put { value, key, .. } => value.len() + key.len(),
                other => other.key().len(),
            };
            batch.push(op);
            if batch.len() >= RESTORE_OPS || bytes >= 512 << 10 {
                self.txn(Txn::new().and_then(std::mem::take(&mut batch))).await?;
                bytes = 0;
            }
        }
        if !batch.is_empty() {
            self.txn(Txn::new().and_then(batch)).await?;
        }
        if !wrote {
            // An empty snapshot over an empty store: still move to a new revision.
            let marker = "\u{0}bosun-restore";
            self.put(marker, Bytes::new(), None).await?;
            self.delete(marker, None).await?;
        }
        // Mark everything before the restored state compacted.
        let revision = self.header_revision().await?;
        match self.compact(revision).await {
            Ok(()) | Err(StorageError::Compacted { .. }) => {}
            Err(e) => return Err(e),
        }
        self.epoch.send_replace(revision);
        Ok(revision)
    }
}

/// The task behind one etcd watch: converts responses, answers progress requests, and
/// reconnects after the last delivered revision when the connection breaks.
struct EtcdWatch {
    storage: EtcdStorage,
    prefix: String,
    exact: bool,
    /// Every event up to this revision has been delivered.
    last: Revision,
    interval: Option<Duration>,
    epoch: watch::Receiver<Revision>,
    tx: mpsc::Sender<Result<WatchEvent>>,
    progress: mpsc::UnboundedReceiver<()>,
    /// The current session received a response.
    healthy: bool,
    /// A progress notification was asked for and has not come yet.
    progress_pending: bool,
}

enum Step {
    Response(Option<std::result::Result<ec::WatchResponse, ec::Error>>),
    Progress,
    Restored,
    Closed,
}

impl EtcdWatch {
    async fn run(mut self) {
        let mut broken_since: Option<tokio::time::Instant> = None;
        loop {
            let result = self.session().await;
            if std::mem::take(&mut self.healthy) {
                broken_since = None;
            }
            match result {
                Ok(()) => return,
                Err(StorageError::Unavailable(reason)) => {
                    let since = *broken_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() > WATCH_RECONNECT {
                        let _ = self.tx.send(Err(StorageError::Unavailable(reason))).await;
                        return;
                    }
                    tracing::debug!(%reason, last = self.last, "etcd watch broke; resuming");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    let _ = self.tx.send(Err(e)).await;
                    return;
                }
            }
            if self.tx.is_closed() {
                return;
            }
        }
    }

    /// One gRPC watch stream. `Ok` means the consumer went away.
    async fn session(&mut self) -> Result<()> {
        let key = self.storage.full(&self.prefix);
        let mut opts = ec::WatchOptions::new().with_prev_key().with_start_revision(self.last + 1);
        if !self.exact {
            opts = opts.with_range(prefix_end(&key));
        }
        let key = if !self.exact && key.is_empty() { vec![0] } else { key };
        let mut ws = self.storage.client.watch_client().watch(key, Some(opts)).await.map_err(map_err)?;
        let mut tick = self.interval.map(|p| tokio::time::interval_at(tokio::time::Instant::now() + p, p));
        // etcd drops a progress request while the watcher is still catching up: ask again.
        let mut retry = tokio::time::interval(Duration::from_millis(250));
        if self.progress_pending {
            ws.request_progress().await.map_err(map_err)?;
        }
        loop {
            let pending = self.progress_pending;
            let step = {
                let tick = async {
                    match tick.as_mut() {
                        Some(t) => {
                            t.tick().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    r = ws.message() => Step::Response(r.transpose()),
                    p = self.progress.recv() => if p.is_some() { Step::Progress } else { Step::Closed },
                    () = tick => Step::Progress,
                    _ = retry.tick(), if pending => Step::Progress,
                    r = self.epoch.changed() => if r.is_ok() { Step::Restored } else { Step::Closed },
                    () = self.tx.closed() => Step::Closed,
                }
            };
            match step {
                Step::Closed => return Ok(()),
                Step::Restored => {
                    let compacted = *self.epoch.borrow();
                    return Err(StorageError::Compacted { requested: self.last, compacted });
                }
                Step::Progress => {
                    self.progress_pending = true;
                    ws.request_progress().await.map_err(map_err)?;
                }
                Step::Response(None) => return Err(StorageError::Unavailable("etcd closed the watch stream".into())),
                Step::Response(Some(Err(e))) => return Err(map_err(e)),
                Step::Response(Some(Ok(resp))) => {
                    self.healthy = true;
                    if resp.compact_revision() > 0 {
                        return Err(StorageError::Compacted { requested: self.last, compacted: resp.compact_revision() });
                    }
                    if resp.canceled() {
                        return Err(StorageError::Unavailable(format!("etcd cancelled the watch: {}", resp.cancel_reason())));
                    }
                    if resp.created() && resp.events().is_empty() {
                        continue;
                    }
                    if resp.events().is_empty() {
                        let revision = resp.header().map_or(0, |h| h.revision());
                        if revision >= self.last {
                            self.last = revision;
                            self.progress_pending = false;
                            if self.tx.send(Ok(WatchEvent::Progress { revision })).await.is_err() {
                                return Ok(());
                            }
                        }
                        continue;
                    }
                    for e in resp.events() {
                        let Some(kv) = e.kv() else { continue };
                        let event = match e.event_type() {
                            ec::EventType::Put => {
                                WatchEvent::Put { kv: self.storage.kv(kv)?, prev: e.prev_kv().map(|p| self.storage.kv(p)).transpose()? }
                            }
                            ec::EventType::Delete => WatchEvent::Delete {
                                key: self.storage.strip(kv.key())?,
                                revision: kv.mod_revision(),
                                prev: e.prev_kv().map(|p| self.storage.kv(p)).transpose()?,
                            },
                        };
                        if event.revision() <= self.last {
                            continue;
                        }
                        if self.tx.send(Ok(event)).await.is_err() {
                            return Ok(());
                        }
                    }
                    if let Some(rev) = resp.events().last().and_then(|e| e.kv()).map(|kv| kv.mod_revision()) {
                        self.last = self.last.max(rev);
                    }
                }
            }
        }
    }
}
