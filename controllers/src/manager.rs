//! The controller manager: starts every built-in controller on one client, sharing one reflector
//! per kind, optionally behind leader election.

use crate::builtin::{self, Shared};
use crate::runtime::{LeaderElector, Metrics, backoff_policy};
use bosun_core::Client;
use bosun_core::watch::Informers;
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// The built-in controllers.
pub const BUILTINS: &[&str] = &[
    "replicaset",
    "deployment",
    "garbagecollector",
    "endpointslice",
    "namespace",
    "nodelifecycle",
    "daemonset",
    "job",
    "cronjob",
    "statefulset",
    "persistentvolume",
    "disruption",
    "horizontalpodautoscaler",
];

/// Which controllers run and how.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// The controllers to run (default: all of [`BUILTINS`]).
    pub controllers: BTreeSet<String>,
    /// Reconciles at once per controller (default 16).
    pub concurrency: usize,
    /// Elect a leader on this Lease (`namespace`, `name`, `identity`) before starting (default: none).
    pub leader_election: Option<(String, String, String)>,
    /// The node lifecycle controller's settings (grace period...).
    pub node_lifecycle: builtin::nodelifecycle::NodeLifecycleConfig,
    /// The local-path provisioner's settings (base directory, default class, data removal).
    pub local_path: builtin::persistentvolume::LocalPathConfig,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            controllers: BUILTINS.iter().map(|s| (*s).to_owned()).collect(),
            concurrency: 16,
            leader_election: None,
            node_lifecycle: Default::default(),
            local_path: Default::default(),
        }
    }
}

impl ManagerConfig {
    /// Runs only these controllers.
    #[must_use]
    pub fn only(mut self, names: &[&str]) -> Self {
        self.controllers = names.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Sets the per-controller concurrency (default 16).
    #[must_use]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Sets the node lifecycle controller's settings (default: 50 s grace period).
    #[must_use]
    pub fn node_lifecycle(mut self, config: builtin::nodelifecycle::NodeLifecycleConfig) -> Self {
        self.node_lifecycle = config;
        self
    }

    /// Sets the local-path provisioner's settings (default: `/var/lib/bosun/local-path`).
    #[must_use]
    pub fn local_path(mut self, config: builtin::persistentvolume::LocalPathConfig) -> Self {
        self.local_path = config;
        self
    }

    /// Runs only while holding Lease `name` in `namespace` as `identity` (default: always run).
    #[must_use]
    pub fn leader_election(mut self, namespace: &str, name: &str, identity: &str) -> Self {
        self.leader_election = Some((namespace.to_owned(), name.to_owned(), identity.to_owned()));
        self
    }
}

/// Starts the built-in controllers on one client.
///
/// ```no_run
/// # async fn example(client: std::sync::Arc<dyn bosun_core::Client>) {
/// use bosun_controllers::{ControllerManager, ManagerConfig};
/// let manager = ControllerManager::new(client)
///     .config(ManagerConfig::default().leader_election("kube-system", "bosun-controller-manager", "node-1"));
/// let metrics = manager.metrics_registry().clone(); // serve `metrics.render()`, check `metrics.not_ready()`
/// manager.run().await;
/// # }
/// ```
#[must_use = "a manager does nothing until spawned or run"]
pub struct ControllerManager {
    client: Arc<dyn Client>,
    informers: Informers,
    metrics: Metrics,
    config: ManagerConfig,
}

impl ControllerManager {
    /// A manager over `client` with its own informers and metrics.
    pub fn new(client: Arc<dyn Client>) -> Self {
        Self { informers: Informers::new(client.clone()), client, metrics: Metrics::new(), config: ManagerConfig::default() }
    }

    /// Shares these informers (default: its own).
    pub fn informers(mut self, informers: &Informers) -> Self {
        self.informers = informers.clone();
        self
    }

    /// Reports into this metrics registry (default: its own).
    pub fn metrics(mut self, metrics: &Metrics) -> Self {
        self.metrics = metrics.clone();
        self
    }

    /// Sets the configuration (default: [`ManagerConfig::default`]).
    pub fn config(mut self, config: ManagerConfig) -> Self {
        self.config = config;
        self
    }

    /// The metrics registry (reconciles, queues, readiness of every controller).
    pub fn metrics_registry(&self) -> &Metrics {
        &self.metrics
    }

    /// Spawns every configured controller now (leader election is ignored here); the tasks run
    /// until aborted.
    pub fn spawn_all(&self) -> Vec<JoinHandle<()>> {
        let shared = Shared::new(self.client.clone(), self.informers.clone(), self.metrics.clone());
        let on = |name: &str| self.config.controllers.contains(name);
        let n = self.config.concurrency;
        let mut tasks = Vec::new();
        if on("replicaset") {
            let (c, ctx) = builtin::replicaset::controller(&shared);
            tasks.push(tokio::spawn(c.concurrency(n).run(builtin::replicaset::reconcile, backoff_policy, ctx)));
        }
        if on("deployment") {
            let (c, ctx) = builtin::deployment::controller(&shared);
            tasks.push(tokio::spawn(c.concurrency(n).run(builtin::deployment::reconcile, backoff_policy, ctx)));
        }
        if on("endpointslice") {
            let (c, ctx) = builtin::endpoints::controller(&shared);
            tasks.push(tokio::spawn(c.concurrency(n).run(builtin::endpoints::reconcile, backoff_policy, ctx)));
        }
        if on("namespace") {
            let (c, ctx) = builtin::namespace::controller(&shared);
            tasks.push(tokio::spawn(c.concurrency(n).run(builtin::namespace::reconcile, backoff_policy, ctx)));
        }
        if on("nodelifecycle") {
            let (c, ctx) = builtin::nodelifecycle::controller_with(&shared, self.config.node_lifecycle.clone());
            tasks.push(tokio::spawn(c.concurrency(n).run(builtin::nodelifecycle::reconcile, backoff_policy, ctx)));
        }
        if on("daemonset") {
            let (c, ctx) = builtin::daemonset::controller(&shared);
            tasks.push(tokio::spawn(c.concurrency(n).run(builtin::daemonset::reconcile, backoff_policy, ctx)));
        }
        if on("statefulset") {
            let (c, ctx) = builtin::statefulset::controller(&shared);
            tasks.push(tokio::spawn(c.concurrency(n).run(builtin::statefulset::reconcile, backoff_policy, ctx)));
        }
        if on("job") {
            let (c, ctx) = builtin::job::controller(&shared);
            tasks.push(tokio::spawn(c.concurrency(n).run(builtin::job::reconcile, backoff_policy, ctx)));
            let (c, ctx) = builtin::job::orphan_controller(&shared);
            tasks.push(tokio::spawn(c.concurrency(n).run(builtin::job::reconcile_orphan, backoff_policy, ctx)));
        }
        if on("cronjob") {
            let (c, ctx) = builtin::cronjob::controller(&shared);
            tasks.push(tokio::spawn(c.concurrency(n).run(builtin::cronjob::reconcile, backoff_policy, ctx)));
        }
        if on("persistentvolume") {
            tasks.push(tokio::spawn(builtin::persistentvolume::run(shared.clone(), n, self.config.local_path.clone())));
        }
        if on("disruption") {
            let (c, ctx) = builtin::disruption::controller(&shared);
            tasks.push(tokio::spawn(c.concurrency(n).run(builtin::disruption::reconcile, backoff_policy, ctx)));
        }
        if on("horizontalpodautoscaler") {
            let (c, ctx) = builtin::hpa::controller(&shared);
            tasks.push(tokio::spawn(c.concurrency(n).run(builtin::hpa::reconcile, backoff_policy, ctx)));
        }
        if on("garbagecollector") {
            tasks.push(tokio::spawn(builtin::gc::run(shared.clone(), builtin::gc::default_resources(), n)));
        }
        tasks
    }

    /// Starts the reflectors the configured controllers read, so that a standby's caches are warm
    /// when it becomes the leader.
    pub fn warm(&self) {
        use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
        use k8s_openapi::api::core::v1::{Endpoints, Namespace, Pod, Service};
        use k8s_openapi::api::discovery::v1::EndpointSlice;
        let on = |name: &str| self.config.controllers.contains(name);
        if on("replicaset") || on("deployment") || on("endpointslice") {
            drop(self.informers.all::<Pod>());
            drop(self.informers.all::<ReplicaSet>());
        }
        if on("deployment") {
            drop(self.informers.all::<Deployment>());
        }
        if on("endpointslice") {
            drop(self.informers.all::<Service>());
            drop(self.informers.all::<EndpointSlice>());
            drop(self.informers.all::<Endpoints>());
        }
        if on("namespace") {
            drop(self.informers.all::<Namespace>());
        }
        if on("daemonset") {
            drop(self.informers.all::<k8s_openapi::api::apps::v1::DaemonSet>());
            drop(self.informers.all::<k8s_openapi::api::core::v1::Node>());
            drop(self.informers.all::<Pod>());
        }
        if on("statefulset") {
            drop(self.informers.all::<k8s_openapi::api::apps::v1::StatefulSet>());
            drop(self.informers.all::<k8s_openapi::api::apps::v1::ControllerRevision>());
            drop(self.informers.all::<k8s_openapi::api::core::v1::PersistentVolumeClaim>());
            drop(self.informers.all::<Pod>());
        }
        if on("job") {
            drop(self.informers.all::<k8s_openapi::api::batch::v1::Job>());
            drop(self.informers.all::<Pod>());
        }
        if on("cronjob") {
            drop(self.informers.all::<k8s_openapi::api::batch::v1::CronJob>());
            drop(self.informers.all::<k8s_openapi::api::batch::v1::Job>());
        }
        if on("nodelifecycle") {
            drop(self.informers.all::<k8s_openapi::api::core::v1::Node>());
            drop(self.informers.all::<Pod>());
            drop(self.informers.namespaced::<k8s_openapi::api::coordination::v1::Lease>(builtin::nodelifecycle::LEASE_NAMESPACE));
        }
        if on("persistentvolume") {
            use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
            drop(self.informers.all::<PersistentVolumeClaim>());
            drop(self.informers.all::<PersistentVolume>());
            drop(self.informers.all::<k8s_openapi::api::storage::v1::StorageClass>());
            drop(self.informers.all::<Node>());
        }
        if on("disruption") {
            drop(self.informers.all::<k8s_openapi::api::policy::v1::PodDisruptionBudget>());
            drop(self.informers.all::<Pod>());
            drop(self.informers.all::<ReplicaSet>());
            drop(self.informers.all::<Deployment>());
            drop(self.informers.all::<k8s_openapi::api::apps::v1::StatefulSet>());
        }
        if on("garbagecollector") {
            for r in builtin::gc::default_resources() {
                drop(self.informers.dynamic(r, None));
            }
        }
    }

    /// Runs the controllers until the process ends, behind leader election when configured:
    /// they start on acquiring the lease and stop if it is lost, then the manager campaigns again.
    /// A standby keeps its caches warm (see [`warm`](Self::warm)).
    pub async fn run(self) {
        let Some((ns, name, identity)) = self.config.leader_election.clone() else {
            // Aborting `run` (dropping this future) stops the controllers too.
            let mut guard = AbortAll(self.spawn_all());
            futures::future::join_all(guard.0.iter_mut()).await;
            return;
        };
        self.warm();
        let elector = LeaderElector::new(self.client.clone(), &ns, name, identity);
        loop {
            let result = elector
                .run(|_token| async {
                    let tasks = self.spawn_all();
                    let guard = AbortAll(tasks);
                    futures::future::pending::<()>().await;
                    drop(guard);
                })
                .await;
            if let Err(error) = result {
                tracing::warn!(%error, "controller manager lost leadership; campaigning again");
            }
        }
    }
}

struct AbortAll(Vec<JoinHandle<()>>);

impl Drop for AbortAll {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}
