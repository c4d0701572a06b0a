//! The node agent (the kubelet's job): registers its Node, heartbeats a Lease, runs the pods bound
//! to it through a [`ContainerRuntime`], reports their status, and serves logs, exec and usage
//! through [`NodeHandle`]. It talks to the API only through `bosun_core::Client`.
//!
//! ```no_run
//! # async fn demo(client: std::sync::Arc<dyn bosun_core::Client>) -> Result<(), Box<dyn std::error::Error>> {
//! use bosun_runtime::{NodeAgent, NodeAgentConfig, ProcessRuntime, HostImages};
//! let runtime = ProcessRuntime::new("/var/lib/bosun/node-1/runtime")?;
//! let config = NodeAgentConfig::new("node-1", "/var/lib/bosun/node-1");
//! let node = NodeAgent::new(client, runtime, HostImages, config).start().await?;
//! println!("{} is up", node.node_name());
//! # Ok(()) }
//! ```

pub mod backoff;
pub mod env;
pub mod events;
pub mod feed;
pub mod node;
pub mod probe;
pub mod status;
pub mod volume;
pub mod worker;

use crate::cri::{ContainerId, ContainerRuntime, ExecResult, ExecSession, LogOptions, SandboxId};
use crate::error::RuntimeError;
use crate::image::ImageStore;
use backoff::{DoublingBackoff, RestartBackoff};
use bosun_core::k8s_openapi::api::core::v1::{Pod, Taint};
use bosun_core::watch::Event;
use bosun_core::{Client, Error, LogParams, LogStream, Quantity};
use feed::{NodeWatch, PodSource};
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use worker::{Adopted, PodShared, Worker};

/// The sandbox label that ties a sandbox to its pod's UID (used to re-adopt after a restart).
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";

/// How a node agent runs.
#[derive(Clone)]
#[must_use]
pub struct NodeAgentConfig {
    /// The Node's name.
    pub node_name: String,
    /// The node's IP (`InternalIP`, each pod's `hostIP`). Default `127.0.0.1`.
    pub node_ip: String,
    /// Where pod directories (volumes) and logs live.
    pub root_dir: PathBuf,
    /// Capacity. Default: this machine's CPUs, memory and disk, and 110 pods.
    pub capacity: BTreeMap<String, Quantity>,
    /// Reserved for the system; allocatable = capacity - reserved. Default none.
    pub reserved: BTreeMap<String, Quantity>,
    /// Extra node labels.
    pub labels: BTreeMap<String, String>,
    /// Taints the Node registers with.
    pub taints: Vec<Taint>,
    /// The port the node serves logs and exec on (`daemonEndpoints`). Default 10250.
    pub port: u16,
    /// Lease renewal period. Default 10 s.
    pub lease_renew_interval: Duration,
    /// How often the node's conditions are computed. Default 10 s.
    pub status_update_interval: Duration,
    /// The node status is written when its conditions change, and at least this often (the
    /// kubelet's `nodeStatusReportFrequency`; the Lease is the heartbeat). Default 5 min.
    pub status_report_interval: Duration,
    /// How often ConfigMap, Secret and downward-API volume contents are refreshed. Default 10 s.
    pub volume_resync: Duration,
    /// How often container usage is sampled. Default 15 s.
    pub usage_interval: Duration,
    /// The crash-loop backoff curve. Default: the kubelet's 10 s doubling to 300 s.
    pub backoff: Arc<dyn RestartBackoff>,
    /// Record Kubernetes Events about pods. Default true.
    pub record_events: bool,
    /// Read memory, disk and PID pressure from this machine. Default true.
    pub measure_pressure: bool,
    /// The hard eviction threshold of the `pid.available` signal, as a fraction of the node's
    /// task capacity (`min(pid_max, threads-max)`): with fewer tasks than that left, the node
    /// reports `PIDPressure` (the kubelet's `--eviction-hard=pid.available<10%`). Default 0.1.
    pub pid_available_threshold: f64,
    /// Where the pods bound to this node come from. Default `None`: the agent's own
    /// [`NodeWatch`] (a watch of `spec.nodeName=<node>`); agents in one process may share a
    /// [`feed::SharedPodFeed`].
    pub pod_source: Option<Arc<dyn PodSource>>,
    /// The cluster DNS servers pods with `dnsPolicy: ClusterFirst` resolve through (the kubelet's
    /// `--cluster-dns`). Default none: such pods keep the image's (or the host's) resolver.
    pub cluster_dns: Vec<String>,
    /// The cluster domain of the pods' search path (the kubelet's `--cluster-domain`). Default
    /// `cluster.local`.
    pub cluster_domain: String,
}

impl std::fmt::Debug for NodeAgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeAgentConfig").field("node_name", &self.node_name).field("root_dir", &self.root_dir).finish_non_exhaustive()
    }
}

impl NodeAgentConfig {
    /// Defaults for a node named `node_name` keeping its files under `root_dir`.
    pub fn new(node_name: impl Into<String>, root_dir: impl Into<PathBuf>) -> Self {
        let root_dir = root_dir.into();
        let probe_dir = if root_dir.exists() { root_dir.clone() } else { PathBuf::from("/") };
        Self {
            node_name: node_name.into(),
            node_ip: "127.0.0.1".into(),
            capacity: node::host_capacity(&probe_dir),
            reserved: BTreeMap::new(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            port: 10250,
            lease_renew_interval: Duration::from_secs(10),
            status_update_interval: Duration::from_secs(10),
            status_report_interval: Duration::from_secs(300),
            volume_resync: Duration::from_secs(10),
            usage_interval: Duration::from_secs(15),
            backoff: Arc::new(DoublingBackoff::kubernetes()),
            record_events: true,
            measure_pressure: true,
            pid_available_threshold: 0.1,
            pod_source: None,
            cluster_dns: Vec::new(),
            cluster_domain: "cluster.local".into(),
            root_dir,
        }
    }

    /// Sets the node IP (default `127.0.0.1`).
    pub fn node_ip(mut self, ip: impl Into<String>) -> Self {
        self.node_ip = ip.into();
        self
    }

    /// Sets one capacity entry (`cpu`, `memory`, `pods`, `ephemeral-storage`; default: the machine's).
    pub fn capacity(mut self, resource: &str, quantity: Quantity) -> Self {
        self.capacity.insert(resource.to_string(), quantity);
        self
    }

    /// Reserves some of a resource for the system (default: nothing).
    pub fn reserve(mut self, resource: &str, quantity: Quantity) -> Self {
        self.reserved.insert(resource.to_string(), quantity);
        self
    }

    /// Adds a node label (default: only the standard ones).
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Adds a taint (default: none).
    pub fn taint(mut self, taint: Taint) -> Self {
        self.taints.push(taint);
        self
    }

    /// Sets the lease renewal period (default 10 s).
    pub fn lease_renew_interval(mut self, d: Duration) -> Self {
        self.lease_renew_interval = d;
        self
    }

    /// Sets how often the node's conditions are computed (default 10 s).
    pub fn status_update_interval(mut self, d: Duration) -> Self {
        self.status_update_interval = d;
        self
    }

    /// Sets how often the node status is written when nothing changed (default 5 min).
    pub fn status_report_interval(mut self, d: Duration) -> Self {
        self.status_report_interval = d;
        self
    }

    /// Sets [`cluster_dns`](Self::cluster_dns).
    pub fn cluster_dns(mut self, servers: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.cluster_dns = servers.into_iter().map(Into::into).collect();
        self
    }

    /// Sets [`cluster_domain`](Self::cluster_domain).
    pub fn cluster_domain(mut self, domain: impl Into<String>) -> Self {
        self.cluster_domain = domain.into();
        self
    }

    /// Takes this node's pods from `source` (default: a watch of `spec.nodeName=<node>`).
    pub fn pod_source(mut self, source: impl PodSource + 'static) -> Self {
        self.pod_source = Some(Arc::new(source));
        self
    }

    /// Sets the volume refresh period (default 10 s).
    pub fn volume_resync(mut self, d: Duration) -> Self {
        self.volume_resync = d;
        self
    }

    /// Sets the usage sampling period (default 15 s).
    pub fn usage_interval(mut self, d: Duration) -> Self {
        self.usage_interval = d;
        self
    }

    /// Sets the crash-loop backoff curve (default: 10 s doubling to 300 s, reset after 10 min).
    pub fn backoff(mut self, backoff: impl RestartBackoff) -> Self {
        self.backoff = Arc::new(backoff);
        self
    }

    /// Turns Event recording on or off (default on).
    pub fn record_events(mut self, on: bool) -> Self {
        self.record_events = on;
        self
    }

    /// The `pid.available` eviction threshold as a fraction of the task capacity (default 0.1).
    pub fn pid_available_threshold(mut self, fraction: f64) -> Self {
        self.pid_available_threshold = fraction;
        self
    }

    /// Turns measuring memory and disk pressure on or off (default on; off reports no pressure).
    pub fn measure_pressure(mut self, on: bool) -> Self {
        self.measure_pressure = on;
        self
    }

    /// Capacity minus reserved.
    pub fn allocatable(&self) -> BTreeMap<String, Quantity> {
        self.capacity
            .iter()
            .map(|(k, v)| {
                let left = self.reserved.get(k).and_then(|r| v.checked_sub(r)).unwrap_or(*v);
                (k.clone(), left)
            })
            .collect()
    }
}

/// What every pod worker shares.
pub struct Ctx {
    /// The API.
    pub client: Arc<dyn Client>,
    /// The runtime.
    pub runtime: Arc<dyn ContainerRuntime>,
    /// The images.
    pub images: Arc<dyn ImageStore>,
    /// The configuration.
    pub config: NodeAgentConfig,
    /// Capacity minus reserved.
    pub allocatable: BTreeMap<String, Quantity>,
    /// The runtime's name, for container ids.
    pub runtime_name: String,
    /// Where pod events go (set when the agent starts, unless events are off).
    pub events: std::sync::OnceLock<events::EventSink>,
    wakers: Mutex<HashMap<SandboxId, Arc<Notify>>>,
}

impl Ctx {
    fn register_waker(&self, sandbox: SandboxId, wake: Arc<Notify>) {
        self.wakers.lock().unwrap_or_else(|p| p.into_inner()).insert(sandbox, wake);
    }
}

struct PodEntry {
    tx: watch::Sender<Option<Arc<Pod>>>,
    wake: Arc<Notify>,
    shared: Arc<Mutex<PodShared>>,
    task: tokio::task::JoinHandle<()>,
}

/// CPU and memory use of one container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerUsage {
    /// Container name.
    pub name: String,
    /// CPU in nanocores over the last sampling window.
    pub cpu_nanocores: u64,
    /// Memory working set in bytes.
    pub memory_bytes: u64,
}

/// Usage of one pod.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodUsage {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Its containers.
    pub containers: Vec<ContainerUsage>,
}

/// Usage of the node and its pods, for the metrics API (`metrics.k8s.io` NodeMetrics and PodMetrics).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeUsage {
    /// When the sample was taken.
    pub timestamp: Option<jiff::Timestamp>,
    /// The sampling window.
    pub window: Duration,
    /// Sum of pod CPU in nanocores.
    pub cpu_nanocores: u64,
    /// Sum of pod memory in bytes.
    pub memory_bytes: u64,
    /// Per pod.
    pub pods: Vec<PodUsage>,
}

/// A node agent, before it starts.
pub struct NodeAgent {
    ctx: Arc<Ctx>,
}

impl std::fmt::Debug for NodeAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeAgent").field("node", &self.ctx.config.node_name).finish_non_exhaustive()
    }
}

impl NodeAgent {
    /// An agent over a client, a runtime and an image store.
    pub fn new(client: Arc<dyn Client>, runtime: impl ContainerRuntime, images: impl ImageStore, config: NodeAgentConfig) -> Self {
        Self::with_runtime(client, Arc::new(runtime), Arc::new(images), config)
    }

    /// An agent over shared runtime and image store handles.
    pub fn with_runtime(
        client: Arc<dyn Client>,
        runtime: Arc<dyn ContainerRuntime>,
        images: Arc<dyn ImageStore>,
        config: NodeAgentConfig,
    ) -> Self {
        let allocatable = config.allocatable();
        let runtime_name = runtime.version().name;
        Self {
            ctx: Arc::new(Ctx {
                client,
                runtime,
                images,
                config,
                allocatable,
                runtime_name,
                events: std::sync::OnceLock::new(),
                wakers: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Registers the Node, re-attaches to what the runtime still runs, and starts the lease, status,
    /// pod and usage loops. Returns once the Node is registered.
    pub async fn start(self) -> Result<NodeHandle, Error> {
        let ctx = self.ctx;
        let span = tracing::info_span!("node", node.name = %ctx.config.node_name);
        let _enter = span.enter();
        if ctx.config.record_events {
            let _ = ctx.events.set(events::EventSink::spawn(ctx.client.clone(), "kubelet", &ctx.config.node_name));
        }
        std::fs::create_dir_all(&ctx.config.root_dir)
            .map_err(|e| Error::internal(format!("create {}: {e}", ctx.config.root_dir.display())))?;
        let desired = node::desired_node(&ctx.config, &ctx.runtime.version().to_string(), &ctx.allocatable);
        let registered = node::register(&ctx.client, &desired).await?;
        let mut lease = node::LeaseRenewer::new(ctx.client.clone(), &ctx.config.node_name, registered.metadata.uid.clone());
        lease.renew().await?;
        let reported = desired.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        drop(_enter);

        // Re-attach: sandboxes by pod UID, with their containers.
        let _ = ctx.runtime.recover().await;
        let mut orphans: HashMap<String, Adopted> = HashMap::new();
        for sb in ctx.runtime.list_sandboxes().await.unwrap_or_default() {
            let Some(uid) = sb.config.labels.get(POD_UID_LABEL).cloned() else { continue };
            let containers = ctx
                .runtime
                .list_containers(&crate::cri::ContainerFilter { sandbox_id: Some(sb.id.clone()), state: None })
                .await
                .unwrap_or_default();
            if sb.state == crate::cri::SandboxState::Ready {
                orphans.insert(uid, Adopted { sandbox: sb.id, ip: sb.ip, containers });
            } else {
                let _ = ctx.runtime.remove_sandbox(&sb.id).await;
            }
        }

        let pods: Arc<Mutex<HashMap<String, PodEntry>>> = Arc::new(Mutex::new(HashMap::new()));
        let usage = Arc::new(Mutex::new(NodeUsage::default()));
        let tasks = vec![
            tokio::spawn(lease_loop(ctx.clone(), lease)),
            tokio::spawn(status_loop(ctx.clone(), reported)),
            tokio::spawn(pod_loop(ctx.clone(), pods.clone(), orphans)),
            tokio::spawn(event_router(ctx.clone(), pods.clone())),
            tokio::spawn(usage_loop(ctx.clone(), pods.clone(), usage.clone())),
        ];
        Ok(NodeHandle { inner: Arc::new(HandleInner { ctx, pods, usage, tasks: Mutex::new(tasks) }) })
    }
}

/// A random part of `period`, so that agents started together spread their periodic writes.
fn jittered(period: Duration) -> Duration {
    period.mul_f64(fastrand::f64())
}

async fn lease_loop(ctx: Arc<Ctx>, mut lease: node::LeaseRenewer) {
    tokio::time::sleep(jittered(ctx.config.lease_renew_interval)).await;
    let mut tick = tokio::time::interval(ctx.config.lease_renew_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(error) = lease.renew().await {
            tracing::warn!(%error, node.name = %ctx.config.node_name, "cannot renew lease");
        }
    }
}

async fn status_loop(ctx: Arc<Ctx>, mut reported: Vec<bosun_core::k8s_openapi::api::core::v1::NodeCondition>) {
    let mut reported_at = tokio::time::Instant::now();
    tokio::time::sleep(jittered(ctx.config.status_update_interval)).await;
    let mut tick = tokio::time::interval(ctx.config.status_update_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = jiff::Timestamp::now();
        let conditions = node::conditions(&ctx.config, now);
        if node::same_conditions(&conditions, &reported) && reported_at.elapsed() < ctx.config.status_report_interval {
            continue;
        }
        let conditions = node::carry_transitions(conditions, &reported);
        match node::update_status(&ctx.client, &ctx.config.node_name, &conditions).await {
            Ok(()) => {
                reported = conditions;
                reported_at = tokio::time::Instant::now();
            }
            Err(error) => tracing::warn!(%error, node.name = %ctx.config.node_name, "cannot update node status"),
        }
    }
}

fn is_finished(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

async fn pod_loop(ctx: Arc<Ctx>, pods: Arc<Mutex<HashMap<String, PodEntry>>>, mut orphans: HashMap<String, Adopted>) {
    let mut stream = match &ctx.config.pod_source {
        Some(source) => source.pods(&ctx.config.node_name),
        None => NodeWatch::new(ctx.client.clone()).pods(&ctx.config.node_name),
    };
    let mut listing: Option<HashSet<String>> = None;
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => listing = Some(HashSet::new()),
            Ok(Event::InitApply(p)) => {
                if let Some(seen) = listing.as_mut() {
                    seen.insert(p.metadata.uid.clone().unwrap_or_default());
                }
                apply(&ctx, &pods, p, &mut orphans);
            }
            Ok(Event::InitDone) => {
                let seen = listing.take().unwrap_or_default();
                let gone: Vec<String> =
                    pods.lock().unwrap_or_else(|e| e.into_inner()).keys().filter(|k| !seen.contains(*k)).cloned().collect();
                for uid in gone {
                    remove(&pods, &uid);
                }
                // Sandboxes of pods that no longer exist.
                for (_, a) in orphans.drain() {
                    let _ = ctx.runtime.remove_sandbox(&a.sandbox).await;
                }
            }
            Ok(Event::Apply(p)) => apply(&ctx, &pods, p, &mut orphans),
            Ok(Event::Delete(p)) => remove(&pods, p.metadata.uid.as_deref().unwrap_or_default()),
            Err(error) => tracing::warn!(%error, node.name = %ctx.config.node_name, "pod watch failed"),
        }
    }
}

fn apply(ctx: &Arc<Ctx>, pods: &Arc<Mutex<HashMap<String, PodEntry>>>, pod: Arc<Pod>, orphans: &mut HashMap<String, Adopted>) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let mut map = pods.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(entry) = map.get(&uid) {
        let _ = entry.tx.send(Some(pod));
        return;
    }
    let adopted = orphans.remove(&uid);
    if adopted.is_none() && is_finished(&pod) {
        return;
    }
    let (tx, rx) = watch::channel(Some(pod.clone()));
    let wake = Arc::new(Notify::new());
    let key = (pod.metadata.namespace.clone().unwrap_or_default(), pod.metadata.name.clone().unwrap_or_default());
    let shared = Arc::new(Mutex::new(PodShared { key, ..PodShared::default() }));
    if let Some(a) = &adopted {
        ctx.register_waker(a.sandbox.clone(), wake.clone());
    }
    let worker = Worker::new(ctx.clone(), pod, rx, wake.clone(), shared.clone(), adopted);
    let task = tokio::spawn(worker.run());
    map.insert(uid, PodEntry { tx, wake, shared, task });
}

fn remove(pods: &Arc<Mutex<HashMap<String, PodEntry>>>, uid: &str) {
    if let Some(entry) = pods.lock().unwrap_or_else(|e| e.into_inner()).remove(uid) {
        let _ = entry.tx.send(None);
    }
}

async fn event_router(ctx: Arc<Ctx>, pods: Arc<Mutex<HashMap<String, PodEntry>>>) {
    let mut events = ctx.runtime.events();
    while let Some(ev) = events.next().await {
        if ev.kind == crate::cri::EventKind::Resync {
            for e in pods.lock().unwrap_or_else(|e| e.into_inner()).values() {
                e.wake.notify_one();
            }
            continue;
        }
        let waker = ctx.wakers.lock().unwrap_or_else(|e| e.into_inner()).get(&ev.sandbox_id).cloned();
        match waker {
            Some(w) => w.notify_one(),
            None => {
                // A sandbox created a moment ago: find its worker.
                let map = pods.lock().unwrap_or_else(|e| e.into_inner());
                for e in map.values() {
                    if e.shared.lock().unwrap_or_else(|p| p.into_inner()).sandbox.as_ref() == Some(&ev.sandbox_id) {
                        ctx.register_waker(ev.sandbox_id.clone(), e.wake.clone());
                        e.wake.notify_one();
                    }
                }
            }
        }
    }
}

async fn usage_loop(ctx: Arc<Ctx>, pods: Arc<Mutex<HashMap<String, PodEntry>>>, usage: Arc<Mutex<NodeUsage>>) {
    let mut last: HashMap<ContainerId, (u64, tokio::time::Instant)> = HashMap::new();
    loop {
        let snapshot: Vec<PodShared> = pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|e| e.shared.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect();
        let now = tokio::time::Instant::now();
        let mut out = NodeUsage { timestamp: Some(jiff::Timestamp::now()), window: ctx.config.usage_interval, ..NodeUsage::default() };
        let mut seen = HashMap::new();
        for pod in snapshot {
            let mut pu = PodUsage { namespace: pod.key.0.clone(), name: pod.key.1.clone(), containers: Vec::new() };
            for (name, (current, _)) in &pod.containers {
                let Some(id) = current else { continue };
                let Ok(stats) = ctx.runtime.stats(id).await else { continue };
                let cpu = match last.get(id) {
                    Some((prev, at)) if now > *at => {
                        let dt = (now - *at).as_nanos().max(1);
                        u64::try_from(u128::from(stats.cpu_usage_nanos.saturating_sub(*prev)) * 1_000_000_000 / dt).unwrap_or(u64::MAX)
                    }
                    _ => 0,
                };
                seen.insert(id.clone(), (stats.cpu_usage_nanos, now));
                out.cpu_nanocores += cpu;
                out.memory_bytes += stats.memory_working_set_bytes;
                pu.containers.push(ContainerUsage { name: name.clone(), cpu_nanocores: cpu, memory_bytes: stats.memory_working_set_bytes });
            }
            if !pu.containers.is_empty() {
                out.pods.push(pu);
            }
        }
        last = seen;
        *usage.lock().unwrap_or_else(|e| e.into_inner()) = out;
        tokio::time::sleep(ctx.config.usage_interval).await;
    }
}

struct HandleInner {
    ctx: Arc<Ctx>,
    pods: Arc<Mutex<HashMap<String, PodEntry>>>,
    usage: Arc<Mutex<NodeUsage>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// A running node agent: serves logs, exec and usage; stops with [`NodeHandle::shutdown`].
/// Cheap to clone.
#[derive(Clone)]
pub struct NodeHandle {
    inner: Arc<HandleInner>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle").field("node", &self.inner.ctx.config.node_name).finish_non_exhaustive()
    }
}

fn api_error(e: RuntimeError) -> Error {
    match e {
        RuntimeError::NotFound { kind, id } => Error::not_found("", kind, &id),
        RuntimeError::Invalid(m) | RuntimeError::Unsupported(m) => Error::bad_request(m),
        other => Error::internal(other.to_string()),
    }
}

impl NodeHandle {
    /// The Node's name.
    pub fn node_name(&self) -> &str {
        &self.inner.ctx.config.node_name
    }

    /// The runtime this node runs on.
    pub fn runtime(&self) -> &Arc<dyn ContainerRuntime> {
        &self.inner.ctx.runtime
    }

    /// How many pods have a worker.
    pub fn pod_count(&self) -> usize {
        self.inner.pods.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn find(&self, namespace: &str, pod: &str, container: Option<&str>, previous: bool) -> Result<ContainerId, Error> {
        let pods = self.inner.pods.lock().unwrap_or_else(|e| e.into_inner());
        let shared = pods
            .values()
            .map(|e| e.shared.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .find(|s| s.key.0 == namespace && s.key.1 == pod)
            .ok_or_else(|| Error::not_found("", "pods", pod))?;
        let name = match container {
            Some(c) => c.to_string(),
            None if shared.containers.len() == 1 => shared.containers.keys().next().cloned().unwrap_or_default(),
            None => return Err(Error::bad_request(format!("a container name must be specified for pod {pod}"))),
        };
        let (current, prev) = shared
            .containers
            .get(&name)
            .cloned()
            .ok_or_else(|| Error::bad_request(format!("container {name} is not valid for pod {pod}")))?;
        let id = if previous { prev } else { current };
        id.ok_or_else(|| {
            Error::bad_request(format!(
                "{} container {name:?} in pod {pod:?} not found",
                if previous { "previous terminated" } else { "current" }
            ))
        })
    }

    /// Streams a container's log, as `pods/log` answers.
    pub async fn logs(&self, namespace: &str, pod: &str, params: &LogParams) -> Result<LogStream, Error> {
        let id = self.find(namespace, pod, params.container.as_deref(), params.previous)?;
        let since = params.since_seconds.and_then(|s| {
            let secs = i64::try_from(s).ok()?;
            jiff::Timestamp::now().checked_sub(jiff::SignedDuration::from_secs(secs)).ok()
        });
        let options = LogOptions {
            follow: params.follow,
            tail_lines: params.tail_lines,
            timestamps: params.timestamps,
            since,
            limit_bytes: params.limit_bytes,
        };
        let stream = self.inner.ctx.runtime.logs(&id, &options).await.map_err(api_error)?;
        Ok(stream.map(|r| r.map_err(api_error)).boxed())
    }

    /// Starts a streaming exec in a container, as `pods/exec` needs.
    pub async fn exec(&self, namespace: &str, pod: &str, container: Option<&str>, command: &[String]) -> Result<ExecSession, Error> {
        let id = self.find(namespace, pod, container, false)?;
        self.inner.ctx.runtime.exec(&id, command).await.map_err(api_error)
    }

    /// Starts an exec on a new terminal of `size` (`kubectl exec -t`): stdout carries the
    /// terminal, `resize` applies the client's later sizes (see [`ContainerRuntime::exec_tty`]).
    pub async fn exec_tty(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        command: &[String],
        size: Option<crate::cri::TerminalSize>,
    ) -> Result<ExecSession, Error> {
        let id = self.find(namespace, pod, container, false)?;
        self.inner.ctx.runtime.exec_tty(&id, command, size).await.map_err(api_error)
    }

    /// Attaches to a container's main process (`kubectl attach`, `kubectl run -it`), its terminal
    /// (if it has one) set to `size` first (see [`ContainerRuntime::attach`]).
    pub async fn attach(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        size: Option<crate::cri::TerminalSize>,
    ) -> Result<crate::cri::AttachSession, Error> {
        let id = self.find(namespace, pod, container, false)?;
        self.inner.ctx.runtime.attach(&id, size).await.map_err(api_error)
    }

    /// Runs a command in a container and collects its output.
    pub async fn exec_sync(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecResult, Error> {
        let id = self.find(namespace, pod, container, false)?;
        self.inner.ctx.runtime.exec_sync(&id, command, timeout).await.map_err(api_error)
    }

    /// The last usage sample.
    pub fn usage(&self) -> NodeUsage {
        self.inner.usage.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops the agent's loops and pod workers; containers keep running, so that a new agent over
    /// the same runtime state re-attaches to them.
    pub fn shutdown(&self) {
        for t in self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            t.abort();
        }
        for (_, e) in self.inner.pods.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            e.task.abort();
        }
    }
}
