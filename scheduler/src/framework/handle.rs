//! `Handle`: what plugins may reach beyond the snapshot: the API client, namespace labels,
//! disruption budgets, nominated pods and pods waiting in Permit.

use super::status::Status;
use crate::pod_info::PodInfo;
use crate::queue::Nominator;
use bosun_core::{Client, LabelSelector};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::oneshot;

/// A PodDisruptionBudget as preemption reads it.
#[derive(Debug, Clone)]
pub struct PdbInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The pods it covers.
    pub selector: LabelSelector,
    /// `status.disruptionsAllowed`.
    pub disruptions_allowed: i32,
    /// `status.disruptedPods` names (already counted).
    pub disrupted_pods: Vec<String>,
}

/// A Service's name and selector.
type ServiceSelector = (String, BTreeMap<String, String>);

struct Waiting {
    pod: Arc<PodInfo>,
    pending: Vec<String>,
    tx: Option<oneshot::Sender<Status>>,
}

/// Pods held at Permit (`Wait`), which plugins approve or reject by UID.
#[derive(Default, Clone)]
pub struct WaitingPods {
    inner: Arc<Mutex<HashMap<String, Waiting>>>,
}

impl std::fmt::Debug for WaitingPods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitingPods").field("len", &self.lock().len()).finish()
    }
}

impl WaitingPods {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiting>> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Holds a pod until every listed plugin allows it; the receiver gets the verdict.
    pub(crate) fn register(&self, pod: Arc<PodInfo>, plugins: Vec<String>) -> oneshot::Receiver<Status> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(pod.uid.clone(), Waiting { pod, pending: plugins, tx: Some(tx) });
        rx
    }

    pub(crate) fn forget(&self, uid: &str) {
        self.lock().remove(uid);
    }

    /// A plugin approves a waiting pod; it proceeds once all plugins have.
    pub fn allow(&self, uid: &str, plugin: &str) {
        let mut map = self.lock();
        let Some(w) = map.get_mut(uid) else { return };
        w.pending.retain(|p| p != plugin);
        if w.pending.is_empty() {
            if let Some(tx) = w.tx.take() {
                let _ = tx.send(Status::success());
            }
            map.remove(uid);
        }
    }

    /// A plugin rejects a waiting pod.
    pub fn reject(&self, uid: &str, plugin: &str, message: &str) {
        if let Some(mut w) = self.lock().remove(uid)
            && let Some(tx) = w.tx.take()
        {
            let _ = tx.send(Status::unschedulable(message.to_owned()).with_plugin(plugin.to_owned()));
        }
    }

    /// The pods waiting now.
    pub fn pods(&self) -> Vec<Arc<PodInfo>> {
        self.lock().values().map(|w| w.pod.clone()).collect()
    }
}

struct Inner {
    client: Option<Arc<dyn Client>>,
    namespaces: RwLock<HashMap<String, Arc<BTreeMap<String, String>>>>,
    pdbs: RwLock<Vec<PdbInfo>>,
    /// Changes with every budget change; unique in the process (see [`Handle::pdb_generation`]).
    pdb_generation: std::sync::atomic::AtomicU64,
    services: RwLock<HashMap<String, Vec<ServiceSelector>>>,
    nominator: Arc<Nominator>,
    waiting: WaitingPods,
    victim_grace_period: Option<u32>,
    /// Preemption victims whose deletion was asked for and not yet seen.
    victims: Mutex<std::collections::HashSet<String>>,
    runtime: std::sync::OnceLock<tokio::runtime::Handle>,
    informers: std::sync::OnceLock<bosun_core::watch::Informers>,
}

/// Cluster access for plugins. Cheap to clone.
#[derive(Clone)]
pub struct Handle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").field("client", &self.inner.client.is_some()).finish()
    }
}

impl Default for Handle {
    fn default() -> Self {
        Self::new(None, Arc::new(Nominator::default()), None, None)
    }
}

impl Handle {
    /// A handle over a client (`None` in unit tests that never reach the API).
    pub fn new(
        client: Option<Arc<dyn Client>>,
        nominator: Arc<Nominator>,
        victim_grace_period: Option<u32>,
        runtime: Option<tokio::runtime::Handle>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                namespaces: RwLock::default(),
                pdbs: RwLock::default(),
                pdb_generation: std::sync::atomic::AtomicU64::new(crate::snapshot::next_epoch()),
                services: RwLock::default(),
                nominator,
                waiting: WaitingPods::default(),
                victim_grace_period,
                victims: Mutex::default(),
                runtime: runtime.map(std::sync::OnceLock::from).unwrap_or_default(),
                informers: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The API client, if any.
    pub fn client(&self) -> Option<&Arc<dyn Client>> {
        self.inner.client.as_ref()
    }

    /// The labels of a namespace, if known.
    pub fn namespace_labels(&self, ns: &str) -> Option<Arc<BTreeMap<String, String>>> {
        self.inner.namespaces.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(ns).cloned()
    }

    /// Records a namespace's labels (`None` forgets it).
    pub fn set_namespace(&self, ns: &str, labels: Option<BTreeMap<String, String>>) {
        let mut map = self.inner.namespaces.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        match labels {
            Some(l) => map.insert(ns.to_owned(), Arc::new(l)),
            None => map.remove(ns),
        };
    }

    /// Every known namespace with its labels.
    pub fn namespaces(&self) -> Vec<(String, Arc<BTreeMap<String, String>>)> {
        let map = self.inner.namespaces.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// The disruption budgets.
    pub fn pdbs(&self) -> Vec<PdbInfo> {
        self.inner.pdbs.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Adds or replaces a disruption budget (`disruptions_allowed < 0` removes it).
    pub fn set_pdb(&self, pdb: PdbInfo) {
        let mut list = self.inner.pdbs.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        list.retain(|p| !(p.namespace == pdb.namespace && p.name == pdb.name));
        if pdb.disruptions_allowed >= 0 {
            list.push(pdb);
        }
        self.inner.pdb_generation.store(crate::snapshot::next_epoch(), std::sync::atomic::Ordering::Release);
    }

    /// Names the current set of disruption budgets: different after any change, and different
    /// between handles, so that a result computed under one set can tell it still holds.
    pub(crate) fn pdb_generation(&self) -> u64 {
        self.inner.pdb_generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Records a Service's selector (`None` forgets the Service).
    pub fn set_service(&self, ns: &str, name: &str, selector: Option<BTreeMap<String, String>>) {
        let mut map = self.inner.services.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let list = map.entry(ns.to_owned()).or_default();
        list.retain(|(n, _)| n != name);
        if let Some(s) = selector.filter(|s| !s.is_empty()) {
            list.push((name.to_owned(), s));
        }
    }

    /// The selector default topology spreading uses for a pod: the merged selectors of the
    /// Services in its namespace that select it (kube-scheduler's `DefaultSelector`, for Services).
    pub fn default_spread_selector(&self, pod: &PodInfo) -> Option<LabelSelector> {
        let map = self.inner.services.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let labels = pod.labels();
        let mut merged = BTreeMap::new();
        for (_, sel) in map.get(&pod.namespace).into_iter().flatten() {
            if sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                merged.extend(sel.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        (!merged.is_empty()).then(|| LabelSelector::from_map(&merged))
    }

    /// The nominator: pods nominated to nodes by preemption.
    pub fn nominator(&self) -> &Arc<Nominator> {
        &self.inner.nominator
    }

    /// Pods waiting at Permit.
    pub fn waiting_pods(&self) -> &WaitingPods {
        &self.inner.waiting
    }

    /// Runs a future on the scheduler's runtime (dropped when there is none, as in unit tests).
    pub fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        if let Some(rt) = self.inner.runtime.get() {
            rt.spawn(fut);
        }
    }

    /// Sets the runtime `spawn` uses, when none was given.
    pub fn set_runtime(&self, runtime: tokio::runtime::Handle) {
        let _ = self.inner.runtime.set(runtime);
    }

    /// The scheduler's shared informers, for plugins that read more cluster state than the
    /// snapshot holds (volumes); `None` until the scheduler starts, and in unit tests.
    pub fn informers(&self) -> Option<&bosun_core::watch::Informers> {
        self.inner.informers.get()
    }

    /// Sets the informers `informers` returns, when none were set.
    pub fn set_informers(&self, informers: bosun_core::watch::Informers) {
        let _ = self.inner.informers.set(informers);
    }

    /// Records that preemption asked to delete a victim: until its deletion is seen, it counts
    /// as terminating (its preemptor waits for it instead of preempting again).
    pub fn victim_deleting(&self, uid: &str) {
        self.inner.victims.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(uid.to_owned());
    }

    /// A victim's deletion was seen (or failed).
    pub fn victim_gone(&self, uid: &str) {
        let mut v = self.inner.victims.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !v.is_empty() {
            v.remove(uid);
        }
    }

    /// Whether a pod is a victim being deleted.
    pub fn is_victim_deleting(&self, uid: &str) -> bool {
        let v = self.inner.victims.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        !v.is_empty() && v.contains(uid)
    }

    /// The grace period preemption deletes victims with (`None`: the pod's own).
    pub fn victim_grace_period(&self) -> Option<u32> {
        self.inner.victim_grace_period
    }
}
