//! The reference cluster: every bosun component composed in one process on embedded defaults.
//!
//! [`ClusterConfig`] says what to run; [`Cluster::start`] starts it and returns once the API server
//! answers; dropping the [`Cluster`] (or [`Cluster::shutdown`]) stops it. The `bosun-cluster`
//! binary is a thin command line over this.

use async_trait::async_trait;
use bosun_controllers::ControllerManager;
use bosun_core::watch::Informers;
use bosun_core::{Client, Error, LogParams, LogStream, Result};
use bosun_netproxy::{ClusterDns, IngressController, IngressProxy, NodeContext, ServiceProxy, UserspaceConfig, UserspaceProxy};
use bosun_runtime::{HostImages, NodeAgent, NodeAgentConfig, NodeHandle, ProcessRuntime};
use bosun_scheduler::Scheduler;
use bosun_store::http::{HttpConfig, NodeConnector};
use bosun_store::{ApiServer, DurableStorage, MemoryStorage, Storage};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Where cluster state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// The durable embedded store in the data directory (the default).
    Durable,
    /// In memory; gone when the process ends.
    Memory,
    /// A real etcd cluster at these endpoints (needs the `etcd` feature).
    Etcd(Vec<String>),
}

/// What the cluster runs.
#[derive(Debug, Clone)]
#[must_use]
pub struct ClusterConfig {
    /// Durable state, node state and logs go under this directory (default `./bosun-data`).
    pub data_dir: PathBuf,
    /// The store backend (default durable).
    pub store: StoreChoice,
    /// The API server's HTTPS address (default 127.0.0.1:6443; port 0 picks one); plain HTTP
    /// listens on an ephemeral loopback port.
    pub listen: SocketAddr,
    /// Where the kubeconfig is written (default `./bosun.kubeconfig`).
    pub kubeconfig: PathBuf,
    /// Node agents run in this process (default 1).
    pub nodes: usize,
    /// The cluster DNS address (default 127.0.0.1:10053; port 0 picks one).
    pub dns: SocketAddr,
    /// The ingress HTTP address (default 127.0.0.1:8080; port 0 picks one).
    pub ingress: SocketAddr,
    /// Service ClusterIPs come from this range; loopback so that the userspace proxy can bind them.
    pub service_cidr: String,
    /// How often node agents renew their Lease (default 10 s).
    pub lease_renew: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("bosun-data"),
            store: StoreChoice::Durable,
            listen: SocketAddr::from(([127, 0, 0, 1], 6443)),
            kubeconfig: PathBuf::from("bosun.kubeconfig"),
            nodes: 1,
            dns: SocketAddr::from(([127, 0, 0, 1], 10053)),
            ingress: SocketAddr::from(([127, 0, 0, 1], 8080)),
            service_cidr: "127.240.0.0/12".into(),
            lease_renew: Duration::from_secs(10),
        }
    }
}

/// Routes `pods/log` to the node agent that runs the pod.
struct LocalNodes {
    client: Arc<dyn Client>,
    nodes: RwLock<HashMap<String, NodeHandle>>,
}

#[async_trait]
impl NodeConnector for LocalNodes {
    async fn logs(&self, namespace: &str, pod: &str, params: &LogParams) -> Result<LogStream> {
        let pods = bosun_core::Api::<bosun_core::k8s_openapi::api::core::v1::Pod>::namespaced(self.client.clone(), namespace);
        let node = pods
            .get(pod)
            .await?
            .spec
            .and_then(|s| s.node_name)
            .ok_or_else(|| Error::bad_request(format!("pod {pod:?} is not scheduled yet")))?;
        let handle = self.nodes.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&node).cloned();
        let handle = handle.ok_or_else(|| Error::unavailable(format!("node {node:?} is not served by this process")))?;
        handle.logs(namespace, pod, params).await.map_err(|e| Error::bad_request(e.to_string()))
    }
}

/// A running cluster.
pub struct Cluster {
    api: Arc<ApiServer>,
    server: Option<bosun_store::HttpServer>,
    nodes: Vec<NodeHandle>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _scheduler: bosun_scheduler::scheduler::Running,
    dns: Option<bosun_netproxy::DnsServer>,
    ingress_addr: Option<SocketAddr>,
    _ingress: Option<bosun_netproxy::ingress::IngressServer>,
}

impl Cluster {
    /// Starts every component; returns once the API server serves.
    pub async fn start(config: ClusterConfig) -> std::result::Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        std::fs::create_dir_all(&config.data_dir)?;
        let storage: Arc<dyn Storage> = match &config.store {
            StoreChoice::Memory => Arc::new(MemoryStorage::new()),
            StoreChoice::Durable => {
                let dir = config.data_dir.join("store");
                tracing::info!(dir = %dir.display(), "opening the durable store");
                Arc::new(DurableStorage::open(&dir)?)
            }
            StoreChoice::Etcd(endpoints) => etcd(endpoints).await?,
        };
        let api = ApiServer::builder(storage).cluster_ip_range(config.service_cidr.clone()).build()?;
        let client: Arc<dyn Client> = api.clone();
        let connector = Arc::new(LocalNodes { client: client.clone(), nodes: RwLock::default() });

        // HTTPS on the configured address; plain HTTP on an ephemeral loopback port for local tools.
        let http = HttpConfig::for_api_server(&api).https(config.listen).nodes(connector.clone());
        let server = bosun_store::http::serve(client.clone(), http).await?;
        server.write_kubeconfig(&config.kubeconfig)?;
        tracing::info!(url = %server.https_url().unwrap_or_default(), "api server listening");

        let informers = Informers::new(client.clone());
        let scheduler = Scheduler::builder(client.clone()).informers(informers.clone()).build()?;
        let scheduler = scheduler.start().await;
        tracing::info!("scheduler started");

        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(ControllerManager::new(client.clone()).informers(&informers).run()));
        tracing::info!("controller manager started");

        let mut nodes = Vec::new();
        for i in 0..config.nodes {
            let name = if config.nodes == 1 { "node-1".to_owned() } else { format!("node-{}", i + 1) };
            let root = config.data_dir.join("nodes").join(&name);
            // Pod IPs start at 127.<n>.0.1 with n derived from the node's state directory, so that
            // clusters on different data directories rarely share addresses.
            let runtime = ProcessRuntime::new(root.join("runtime"))?;
            let agent_config = NodeAgentConfig::new(name.clone(), root).lease_renew_interval(config.lease_renew);
            let handle = NodeAgent::new(client.clone(), runtime, HostImages, agent_config).start().await?;
            connector.nodes.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(name.clone(), handle.clone());
            tracing::info!(node.name = %name, "node agent started");
            nodes.push(handle);
        }

        let proxy =
            ServiceProxy::new(informers.clone(), NodeContext::new(nodes.first().map(|n| n.node_name().to_owned()).unwrap_or_default()))
                .backend(UserspaceProxy::new(UserspaceConfig::default()));
        let table = proxy.table();
        tasks.push(proxy.spawn());
        tracing::info!("userspace service proxy started");

        let dns = ClusterDns::new(table.clone()).serve(config.dns).await?;
        tracing::info!(addr = %dns.local_addr(), "cluster dns listening");

        let ingress_proxy = IngressProxy::new(table);
        let ingress = ingress_proxy.serve_http(config.ingress).await?;
        let ingress_addr = ingress.local_addr();
        tasks.push(IngressController::new(informers.clone(), ingress_proxy).spawn());
        tracing::info!(addr = %ingress_addr, "ingress listening");

        Ok(Self {
            api,
            server: Some(server),
            nodes,
            tasks,
            _scheduler: scheduler,
            dns: Some(dns),
            ingress_addr: Some(ingress_addr),
            _ingress: Some(ingress),
        })
    }

    /// The in-process API (a [`Client`]).
    pub fn client(&self) -> Arc<dyn Client> {
        self.api.clone()
    }

    /// The API server's HTTPS URL.
    pub fn url(&self) -> String {
        self.server.as_ref().and_then(|s| s.https_url()).unwrap_or_default()
    }

    /// The API server's plain HTTP address (loopback only).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(|s| s.addr())
    }

    /// Where the cluster DNS answers.
    pub fn dns_addr(&self) -> Option<SocketAddr> {
        self.dns.as_ref().map(|d| d.local_addr())
    }

    /// Where the ingress listens.
    pub fn ingress_addr(&self) -> Option<SocketAddr> {
        self.ingress_addr
    }

    /// The node agents of this process.
    pub fn nodes(&self) -> &[NodeHandle] {
        &self.nodes
    }

    /// Stops every component and releases the store; running containers are left for the next
    /// start on the same data directory to re-adopt.
    pub async fn shutdown(mut self) {
        for node in self.nodes.drain(..) {
            node.shutdown();
        }
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        if let Some(dns) = self.dns.take() {
            dns.shutdown().await;
        }
        if let Some(ingress) = self._ingress.take() {
            ingress.shutdown().await;
        }
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        // Dropping the scheduler and the last handles on the API server closes the store.
        drop(self);
    }
}

#[cfg(feature = "etcd")]
async fn etcd(endpoints: &[String]) -> std::result::Result<Arc<dyn Storage>, Box<dyn std::error::Error + Send + Sync>> {
    tracing::info!(?endpoints, "connecting to etcd");
    Ok(Arc::new(bosun_store::storage::etcd::EtcdStorage::connect(endpoints, "/bosun").await?))
}

#[cfg(not(feature = "etcd"))]
async fn etcd(_endpoints: &[String]) -> std::result::Result<Arc<dyn Storage>, Box<dyn std::error::Error + Send + Sync>> {
    Err("this build has no etcd support: rebuild with `--features etcd`".into())
}
