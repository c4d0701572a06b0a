//! Keeping the service table current by watch, and handing each backend what changed.

use crate::backend::ProxyBackend;
use crate::table::{NodeContext, ServiceTable, TableDiff, build_service};
use bosun_core::ObjectKey;
use bosun_core::k8s_openapi::api::core::v1::Service;
use bosun_core::k8s_openapi::api::discovery::v1::EndpointSlice;
use bosun_core::watch::{Change, Informer, Informers};
use futures::{FutureExt, StreamExt};
use std::collections::BTreeSet;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;
use tokio::sync::watch;

/// The label an EndpointSlice names its Service with.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const INDEX_SERVICE: &str = "netproxy.service";

/// A shared, versioned service table: backends, DNS and ingress read the same one.
#[derive(Clone)]
pub struct TableHandle {
    table: Arc<RwLock<ServiceTable>>,
    version: Arc<watch::Sender<u64>>,
}

impl Default for TableHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl TableHandle {
    /// An empty table.
    pub fn new() -> Self {
        Self { table: Arc::default(), version: Arc::new(watch::channel(0).0) }
    }

    /// Reads the table (do not hold the guard across an await).
    pub fn read(&self) -> RwLockReadGuard<'_, ServiceTable> {
        self.table.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Changes the table and tells watchers.
    pub fn update<R>(&self, f: impl FnOnce(&mut ServiceTable) -> R) -> R {
        let r = {
            let mut t = self.table.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut t)
        };
        self.version.send_modify(|v| *v += 1);
        r
    }

    /// A receiver that changes on every update.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Waits until `pred` holds on the table.
    pub async fn wait_for(&self, pred: impl Fn(&ServiceTable) -> bool) {
        let mut rx = self.subscribe();
        loop {
            if pred(&self.read()) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

/// Watches Services and EndpointSlices, keeps a [`TableHandle`] current and drives backends with diffs.
#[must_use = "a ServiceProxy does nothing until run or spawned"]
pub struct ServiceProxy {
    informers: Informers,
    node: NodeContext,
    backends: Vec<Arc<dyn ProxyBackend>>,
    table: TableHandle,
    retry: Duration,
}

impl ServiceProxy {
    /// A proxy driver over shared informers, for one node.
    pub fn new(informers: Informers, node: NodeContext) -> Self {
        Self { informers, node, backends: Vec::new(), table: TableHandle::new(), retry: Duration::from_secs(1) }
    }

    /// Adds a backend (default: none; the table alone still serves DNS and ingress).
    pub fn backend(mut self, backend: impl ProxyBackend) -> Self {
        self.backends.push(Arc::new(backend));
        self
    }

    /// Adds a shared backend.
    pub fn backend_arc(mut self, backend: Arc<dyn ProxyBackend>) -> Self {
        self.backends.push(backend);
        self
    }

    /// How long to wait before a full resync after a backend failed (default 1 s).
    pub fn retry_after(mut self, retry: Duration) -> Self {
        self.retry = retry;
        self
    }

    /// The table this driver keeps.
    pub fn table(&self) -> TableHandle {
        self.table.clone()
    }

    /// Runs the driver on a task of its own.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    /// Runs until the informers stop.
    pub async fn run(self) {
        let services: Informer<Service> = self.informers.all();
        let slices: Informer<EndpointSlice> = self.informers.all();
        slices.store().add_index(
            INDEX_SERVICE,
            Arc::new(|s: &EndpointSlice| {
                let svc = s.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL));
                svc.map(|n| vec![format!("{}/{n}", s.metadata.namespace.as_deref().unwrap_or(""))]).unwrap_or_default()
            }),
        );
        let mut svc_changes = services.subscribe();
        let mut slice_changes = slices.subscribe();
        services.wait_ready().await;
        slices.wait_ready().await;

        let mut dirty: BTreeSet<ObjectKey> = services.store().keys().into_iter().collect();
        let mut needs_full = vec![true; self.backends.len()];
        let mut pending = TableDiff::default();
        loop {
            pending.merge(self.rebuild(&services, &slices, std::mem::take(&mut dirty)));
            let failed = self.push(&pending, &mut needs_full).await;
            pending = TableDiff::default();
            let retry = async {
                if failed {
                    tokio::time::sleep(self.retry).await;
                } else {
                    futures::future::pending::<()>().await;
                }
            };
            // Wait for one change, then take whatever else is already queued, so bursts apply as one diff.
            tokio::select! {
                c = svc_changes.next() => match c {
                    Some(c) => self.note_service(c, &services, &mut dirty),
                    None => return,
                },
                c = slice_changes.next() => match c {
                    Some(c) => self.note_slice(c, &services, &mut dirty),
                    None => return,
                },
                () = retry => {}
            }
            loop {
                if let Some(Some(c)) = svc_changes.next().now_or_never() {
                    self.note_service(c, &services, &mut dirty);
                } else if let Some(Some(c)) = slice_changes.next().now_or_never() {
                    self.note_slice(c, &services, &mut dirty);
                } else {
                    break;
                }
            }
        }
    }

    fn note_service(&self, change: Change<Service>, services: &Informer<Service>, dirty: &mut BTreeSet<ObjectKey>) {
        match change {
            Change::Applied(s) | Change::Deleted(s) => {
                dirty.insert(ObjectKey::new(s.metadata.namespace.as_deref(), s.metadata.name.clone().unwrap_or_default()));
            }
            Change::Resync => self.everything(services, dirty),
        }
    }

    fn note_slice(&self, change: Change<EndpointSlice>, services: &Informer<Service>, dirty: &mut BTreeSet<ObjectKey>) {
        match change {
            Change::Applied(s) | Change::Deleted(s) => {
                if let Some(name) = s.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) {
                    dirty.insert(ObjectKey::new(s.metadata.namespace.as_deref(), name.clone()));
                }
            }
            Change::Resync => self.everything(services, dirty),
        }
    }

    fn everything(&self, services: &Informer<Service>, dirty: &mut BTreeSet<ObjectKey>) {
        dirty.extend(services.store().keys());
        dirty.extend(self.table.read().services().map(|s| s.key.clone()));
    }

    fn rebuild(&self, services: &Informer<Service>, slices: &Informer<EndpointSlice>, dirty: BTreeSet<ObjectKey>) -> TableDiff {
        let mut diff = TableDiff::default();
        for key in dirty {
            let entry = services.store().get(&key).and_then(|svc| {
                let index = format!("{}/{}", key.namespace.as_deref().unwrap_or(""), key.name);
                let mut own = slices.store().by_index(INDEX_SERVICE, &index);
                own.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
                build_service(&svc, &own, &self.node)
            });
            diff.merge(self.table.update(|t| t.set_service(&key, entry)));
        }
        diff
    }

    /// Applies a diff to every backend; returns whether any failed (those get a full resync next time).
    async fn push(&self, diff: &TableDiff, needs_full: &mut [bool]) -> bool {
        let mut failed = false;
        for (backend, full) in self.backends.iter().zip(needs_full.iter_mut()) {
            let result = if *full {
                let all = self.table.read().full_diff();
                backend.apply(&all).await
            } else if diff.is_empty() {
                continue;
            } else {
                backend.apply(diff).await
            };
            match result {
                Ok(()) => *full = false,
                Err(error) => {
                    tracing::warn!(backend = backend.name(), %error, "proxy backend apply failed; full resync follows");
                    *full = true;
                    failed = true;
                }
            }
        }
        failed
    }
}
