//! The reference cluster: every bosun component composed in one process on embedded defaults.
//!
//! [`ClusterConfig`] says what to run; [`Cluster::start`] starts it and returns once the API server
//! answers; dropping the [`Cluster`] (or [`Cluster::shutdown`]) stops it. The `bosun-cluster`
//! binary is a thin command line over this.

use crate::local_nodes::LocalNodes;
use crate::node_endpoint::{Credentials, NodeEndpoint, NodeRouter};
use async_trait::async_trait;
use bosun_controllers::builtin::nodelifecycle::NodeLifecycleConfig;
use bosun_controllers::builtin::persistentvolume::LocalPathConfig;
use bosun_controllers::runtime::LeaderElector;
use bosun_controllers::{ControllerManager, ManagerConfig};
use bosun_core::watch::Informers;
use bosun_core::{Client, Result};
use bosun_netproxy::ingress::StatusAddress;
use bosun_netproxy::{
    ClusterDns, IngressController, IngressProxy, NftablesConfig, NftablesProxy, NodeContext, ServiceProxy, UserspaceConfig, UserspaceProxy,
};
use bosun_runtime::{
    ContainerRuntime, FakeRuntime, HostImages, ImageStore, LocalImageStore, NodeAgent, NodeAgentConfig, NodeHandle, ProcessRuntime,
    RuncRuntime,
};
use bosun_scheduler::Scheduler;
use bosun_store::http::HttpConfig;
use bosun_store::{ApiServer, DurableStorage, MemoryStorage, Storage};
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

/// The container runtime of this process's node agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuntimeChoice {
    /// Plain processes with loopback pod IPs (the default; no privileges needed).
    #[default]
    Process,
    /// OCI containers through `runc`, pods on a CNI bridge (root; images from the node's image store).
    Runc,
    /// The fake runtime: containers "run" without processes (scale tests, hollow nodes).
    Fake,
}

/// The service proxy of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyChoice {
    /// The userspace L4 proxy: listens on each ClusterIP (loopback addresses) and NodePort.
    #[default]
    Userspace,
    /// nftables DNAT rules in table `ip bosun` (root; meant for `runc` pods on a bridge).
    Nftables,
}

/// Which parts of the cluster this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Everything: control plane, node agents, proxy, DNS and ingress (the default).
    #[default]
    All,
    /// API server, scheduler and controllers (the last two leader-elected); with
    /// [`ClusterConfig::server`] set, only the scheduler and controllers, against that API server.
    ControlPlane,
    /// Node agents, proxy, DNS and ingress joining the API server at [`ClusterConfig::server`].
    Node,
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
    /// The node agents' container runtime (default process).
    pub runtime: RuntimeChoice,
    /// The service proxy (default userspace).
    pub proxy: ProxyChoice,
    /// What this process runs (default everything).
    pub role: Role,
    /// The API server to join (`https://host:port`), for [`Role::Node`] and a control plane
    /// without its own API server; credentials come from [`kubeconfig`](Self::kubeconfig), which
    /// is then read instead of written.
    pub server: Option<String>,
    /// Node names are `<node_prefix>-1`, `<node_prefix>-2`... (default `node`); give each node
    /// process its own prefix.
    pub node_prefix: String,
    /// Run the scheduler and controllers behind leader election on Leases in `kube-system`
    /// (default: only when the state is shared, i.e. etcd or a control-plane role).
    pub leader_election: Option<bool>,
    /// This process's leader-election identity (default `<hostname>-<listen port>`).
    pub identity: Option<String>,
    /// How long a node may go without renewing its Lease before it is marked unreachable
    /// (default 50 s); its pods are evicted when their unreachable toleration runs out.
    pub node_grace_period: Option<Duration>,
    /// Where this process's node endpoint (kubelet's :10250: logs, exec, attach and usage for the
    /// API server) listens (default: 127.0.0.1:10250, or an ephemeral loopback port when that is
    /// taken); its IP is published as the nodes' InternalIP.
    pub node_listen: Option<SocketAddr>,
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
            runtime: RuntimeChoice::Process,
            proxy: ProxyChoice::Userspace,
            role: Role::All,
            server: None,
            node_prefix: "node".into(),
            leader_election: None,
            identity: None,
            node_grace_period: None,
            node_listen: None,
        }
    }
}

/// A running cluster.
pub struct Cluster {
    api: Option<Arc<ApiServer>>,
    client: Arc<dyn Client>,
    url: String,
    server: Option<bosun_store::HttpServer>,
    nodes: Vec<NodeHandle>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _scheduler: Option<bosun_scheduler::scheduler::Running>,
    dns: Option<bosun_netproxy::DnsServer>,
    pod_dns: Option<bosun_netproxy::DnsServer>,
    ingress_addr: Option<SocketAddr>,
    _ingress: Option<bosun_netproxy::ingress::IngressServer>,
    node_endpoint: Option<NodeEndpoint>,
}

type StartError = Box<dyn std::error::Error + Send + Sync>;

impl Cluster {
    /// Starts every component of [`ClusterConfig::role`]; returns once the API server serves (or,
    /// joining another, once this process's nodes are registered).
    pub async fn start(config: ClusterConfig) -> std::result::Result<Self, StartError> {
        std::fs::create_dir_all(&config.data_dir)?;
        let (api, server, connector, client, url) = match &config.server {
            Some(url) => (None, None, None, join(&config.kubeconfig, url).await?, url.clone()),
            None => {
                let (api, server, connector) = start_api_server(&config).await?;
                let url = server.https_url().unwrap_or_default();
                let client: Arc<dyn Client> = api.clone();
                (Some(api), Some(server), Some(connector), client, url)
            }
        };
        let mut cluster = Self {
            api,
            client,
            url,
            server,
            nodes: Vec::new(),
            tasks: Vec::new(),
            _scheduler: None,
            dns: None,
            pod_dns: None,
            ingress_addr: None,
            _ingress: None,
            node_endpoint: None,
        };
        let informers = Informers::new(cluster.client.clone());
        if config.role != Role::Node {
            cluster.start_scheduler_and_controllers(&config, &informers).await?;
        }
        if config.role != Role::ControlPlane {
            cluster.start_nodes(&config, connector).await?;
            cluster.start_networking(&config, &informers).await?;
        }
        Ok(cluster)
    }

    /// The scheduler and the controller manager, behind leader election when the state is shared.
    async fn start_scheduler_and_controllers(
        &mut self,
        config: &ClusterConfig,
        informers: &Informers,
    ) -> std::result::Result<(), StartError> {
        let client = self.client.clone();
        let elect = config.leader_election.unwrap_or(matches!(config.store, StoreChoice::Etcd(_)) || config.role == Role::ControlPlane);
        if !elect {
            let scheduler = Scheduler::builder(client.clone()).informers(informers.clone()).build()?;
            self._scheduler = Some(scheduler.start().await);
            tracing::info!("scheduler started");
            self.tasks.push(tokio::spawn(ControllerManager::new(client).informers(informers).config(manager_config(config)).run()));
            tracing::info!("controller manager started");
            return Ok(());
        }
        let identity = config.identity.clone().unwrap_or_else(|| default_identity(config));
        tracing::info!(%identity, "scheduler and controllers campaign for their leases in kube-system");
        let elector = LeaderElector::new(client.clone(), "kube-system", "bosun-scheduler", identity.clone());
        let (scheduler_client, scheduler_informers) = (client.clone(), informers.clone());
        self.tasks.push(tokio::spawn(async move {
            loop {
                let result = elector
                    .run(|token| {
                        let (client, informers) = (scheduler_client.clone(), scheduler_informers.clone());
                        async move {
                            tracing::info!(transitions = token.transitions, "leading: scheduler started");
                            // Dropping the running scheduler (when leadership is lost) stops it.
                            let _running = match Scheduler::builder(client).informers(informers).build() {
                                Ok(scheduler) => scheduler.start().await,
                                Err(error) => {
                                    tracing::error!(%error, "scheduler failed to build");
                                    return;
                                }
                            };
                            std::future::pending::<()>().await;
                        }
                    })
                    .await;
                if let Err(error) = result {
                    tracing::warn!(%error, "scheduler lost leadership; campaigning again");
                }
            }
        }));
        let manager = ControllerManager::new(client).informers(informers).config(manager_config(config).leader_election(
            "kube-system",
            "bosun-controller-manager",
            &identity,
        ));
        self.tasks.push(tokio::spawn(manager.run()));
        Ok(())
    }

    /// This process's node agents on the configured runtime, and the node endpoint serving them.
    async fn start_nodes(&mut self, config: &ClusterConfig, connector: Option<Arc<LocalNodes>>) -> std::result::Result<(), StartError> {
        if config.nodes == 0 {
            return Ok(());
        }
        let local = connector.unwrap_or_else(|| {
            Arc::new(LocalNodes { client: self.client.clone(), nodes: RwLock::default(), terminals: config.runtime != RuntimeChoice::Fake })
        });
        let credentials = Credentials::load_or_create(&self.client).await?;
        let endpoint = NodeEndpoint::start(config.node_listen, local.clone(), credentials).await?;
        let (node_ip, node_port) = (endpoint.node_ip().to_string(), endpoint.addr().port());
        self.node_endpoint = Some(endpoint);
        let images: Arc<dyn ImageStore> = match config.runtime {
            RuntimeChoice::Process | RuntimeChoice::Fake => Arc::new(HostImages),
            RuntimeChoice::Runc => Arc::new(runc_images(&config.data_dir.join("images")).await?),
        };
        for i in 0..config.nodes {
            let name = format!("{}-{}", config.node_prefix, i + 1);
            let root = config.data_dir.join("nodes").join(&name);
            let runtime: Arc<dyn ContainerRuntime> = match config.runtime {
                // Pod IPs start at 127.<n>.0.1 with n derived from the node's state directory, so
                // that clusters on different data directories rarely share addresses.
                RuntimeChoice::Process => Arc::new(ProcessRuntime::new(root.join("runtime"))?),
                RuntimeChoice::Runc => {
                    let (bridge, subnet, _) = runc_network(i);
                    Arc::new(RuncRuntime::builder(root.join("runtime")).bridge(bridge).subnet(subnet).build()?)
                }
                RuntimeChoice::Fake => Arc::new(FakeRuntime::new()),
            };
            let mut agent_config =
                NodeAgentConfig::new(name.clone(), root).lease_renew_interval(config.lease_renew).node_ip(node_ip.clone());
            agent_config.port = node_port;
            if config.runtime == RuntimeChoice::Runc {
                // Pods in network namespaces resolve through the DNS on the first bridge's gateway.
                agent_config = agent_config.cluster_dns([runc_network(0).2.to_string()]);
            }
            let handle = NodeAgent::with_runtime(self.client.clone(), runtime, images.clone(), agent_config).start().await?;
            local.nodes.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(name.clone(), handle.clone());
            tracing::info!(node.name = %name, runtime = ?config.runtime, "node agent started");
            self.nodes.push(handle);
        }
        Ok(())
    }

    /// The service proxy, cluster DNS and ingress of this process's first node.
    async fn start_networking(&mut self, config: &ClusterConfig, informers: &Informers) -> std::result::Result<(), StartError> {
        let node = NodeContext::new(self.nodes.first().map(|n| n.node_name().to_owned()).unwrap_or_default());
        let proxy = ServiceProxy::new(informers.clone(), node);
        let proxy = match config.proxy {
            ProxyChoice::Userspace => proxy.backend(UserspaceProxy::new(UserspaceConfig::default())),
            ProxyChoice::Nftables => {
                let mut nft = NftablesConfig::default();
                if config.runtime == RuntimeChoice::Runc {
                    // The pods' subnets: cluster IP traffic from elsewhere (this host, other
                    // hosts routing through it) is masqueraded, as kube-proxy's --cluster-cidr does.
                    nft = nft.cluster_cidrs((0..self.nodes.len()).filter_map(|i| runc_network(i).1.parse().ok()));
                }
                proxy.backend(NftablesProxy::new(nft))
            }
        };
        let table = proxy.table();
        self.tasks.push(proxy.spawn());
        tracing::info!(proxy = ?config.proxy, "service proxy started");

        let dns = serve_dns(ClusterDns::new(table.clone()), config.dns).await?;
        tracing::info!(addr = %dns.local_addr(), "cluster dns listening");
        self.dns = Some(dns);
        if config.runtime == RuntimeChoice::Runc && !self.nodes.is_empty() {
            // Pods cannot reach the host's loopback: they get this server on the first node
            // bridge's gateway, port 53 (what their resolv.conf names), made ahead of the first pod.
            let (bridge, subnet, gateway) = runc_network(0);
            ensure_bridge(&bridge, &subnet, gateway).await?;
            let pod_dns = ClusterDns::new(table.clone()).serve(SocketAddr::from((gateway, 53))).await?;
            tracing::info!(addr = %pod_dns.local_addr(), "cluster dns listening for pods");
            self.pod_dns = Some(pod_dns);
        }

        let ingress_proxy = IngressProxy::new(table);
        let ingress = ingress_proxy.serve_http(config.ingress).await?;
        self.ingress_addr = Some(ingress.local_addr());
        // The address kubectl shows under ADDRESS: where the ingress listens (loopback for 0.0.0.0).
        let ip = match ingress.local_addr().ip() {
            ip if ip.is_unspecified() => std::net::IpAddr::from([127, 0, 0, 1]),
            ip => ip,
        };
        let controller = IngressController::new(informers.clone(), ingress_proxy).status_address(StatusAddress::Ip(ip));
        self.tasks.push(controller.spawn());
        tracing::info!(addr = %ingress.local_addr(), "ingress listening");
        self._ingress = Some(ingress);
        Ok(())
    }

    /// The API this process talks to: the in-process API server, or the joined one over HTTPS.
    pub fn client(&self) -> Arc<dyn Client> {
        self.client.clone()
    }

    /// The in-process API server (none when this process joined another).
    pub fn api_server(&self) -> Option<&Arc<ApiServer>> {
        self.api.as_ref()
    }

    /// The API server's HTTPS URL.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The API server's plain HTTP address (loopback only).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(|s| s.addr())
    }

    /// Where the cluster DNS answers.
    pub fn dns_addr(&self) -> Option<SocketAddr> {
        self.dns.as_ref().map(|d| d.local_addr())
    }

    /// Where pods' resolv.conf points (runc nodes: the first bridge's gateway, port 53).
    pub fn pod_dns_addr(&self) -> Option<SocketAddr> {
        self.pod_dns.as_ref().map(|d| d.local_addr())
    }

    /// Where the ingress listens.
    pub fn ingress_addr(&self) -> Option<SocketAddr> {
        self.ingress_addr
    }

    /// The node agents of this process.
    pub fn nodes(&self) -> &[NodeHandle] {
        &self.nodes
    }

    /// Where this process's node endpoint listens (none without node agents).
    pub fn node_endpoint_addr(&self) -> Option<SocketAddr> {
        self.node_endpoint.as_ref().map(NodeEndpoint::addr)
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
        if let Some(dns) = self.pod_dns.take() {
            dns.shutdown().await;
        }
        if let Some(ingress) = self._ingress.take() {
            ingress.shutdown().await;
        }
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        if let Some(endpoint) = self.node_endpoint.take() {
            endpoint.shutdown().await;
        }
        // Dropping the scheduler and the last handles on the API server closes the store.
        drop(self);
    }
}

/// The metrics source handed to the API server before the node connection (which needs the
/// server's client) exists; it reads the [`NodeRouter`] (local and remote nodes) once that is set.
#[derive(Default)]
struct LateMetrics(std::sync::OnceLock<std::sync::Weak<NodeRouter>>);

#[async_trait]
impl bosun_store::api::metrics::MetricsSource for LateMetrics {
    async fn nodes(&self) -> Result<Vec<bosun_store::api::metrics::NodeSample>> {
        match self.0.get().and_then(std::sync::Weak::upgrade) {
            Some(nodes) => bosun_store::api::metrics::MetricsSource::nodes(&*nodes).await,
            None => Ok(Vec::new()),
        }
    }

    async fn pods(&self, namespace: Option<&str>) -> Result<Vec<bosun_store::api::metrics::PodSample>> {
        match self.0.get().and_then(std::sync::Weak::upgrade) {
            Some(nodes) => bosun_store::api::metrics::MetricsSource::pods(&*nodes, namespace).await,
            None => Ok(Vec::new()),
        }
    }
}

/// The store, the API server and its HTTPS endpoint; writes the kubeconfig.
async fn start_api_server(
    config: &ClusterConfig,
) -> std::result::Result<(Arc<ApiServer>, bosun_store::HttpServer, Arc<LocalNodes>), StartError> {
    let storage: Arc<dyn Storage> = match &config.store {
        StoreChoice::Memory => Arc::new(MemoryStorage::new()),
        StoreChoice::Durable => {
            let dir = config.data_dir.join("store");
            tracing::info!(dir = %dir.display(), "opening the durable store");
            Arc::new(DurableStorage::open(&dir)?)
        }
        StoreChoice::Etcd(endpoints) => etcd(endpoints).await?,
    };
    let metrics = Arc::new(LateMetrics::default());
    let api = ApiServer::builder(storage).cluster_ip_range(config.service_cidr.clone()).metrics_source(metrics.clone()).build()?;
    let client: Arc<dyn Client> = api.clone();
    let connector =
        Arc::new(LocalNodes { client: client.clone(), nodes: RwLock::default(), terminals: config.runtime != RuntimeChoice::Fake });
    // Pods on nodes of other processes are reached through their node endpoints.
    let router = Arc::new(NodeRouter::new(client.clone(), connector.clone()));
    let _ = metrics.0.set(Arc::downgrade(&router));

    // HTTPS on the configured address; plain HTTP on an ephemeral loopback port for local tools.
    let http = HttpConfig::for_api_server(&api).https(config.listen).nodes(router);
    let server = bosun_store::http::serve(client, http).await?;
    server.write_kubeconfig(&config.kubeconfig)?;
    tracing::info!(url = %server.https_url().unwrap_or_default(), "api server listening");
    Ok((api, server, connector))
}

/// A client of the API server at `server`, with the credentials of `kubeconfig`.
async fn join(kubeconfig: &std::path::Path, server: &str) -> std::result::Result<Arc<dyn Client>, StartError> {
    tracing::info!(%server, kubeconfig = %kubeconfig.display(), "joining the API server");
    let client = bosun_core::kube_client::KubeClient::from_kubeconfig_at(kubeconfig, Some(server)).await?;
    // Fail now, with a clear message, if the server cannot be reached.
    bosun_core::Api::<bosun_core::k8s_openapi::api::core::v1::Namespace>::all(Arc::new(client.clone()))
        .get("default")
        .await
        .map_err(|e| format!("cannot reach the API server at {server}: {e}"))?;
    Ok(Arc::new(client))
}

/// The controllers' settings: local-path volumes live under the data directory.
fn manager_config(config: &ClusterConfig) -> ManagerConfig {
    // hostPath volumes need an absolute path.
    let dir = config.data_dir.join("local-path");
    let local_path = LocalPathConfig::default().base_dir(std::path::absolute(&dir).unwrap_or(dir));
    let mut manager = ManagerConfig::default().local_path(local_path);
    if let Some(grace) = config.node_grace_period {
        let lifecycle = NodeLifecycleConfig::default().grace_period(grace).monitor_period(grace.min(Duration::from_secs(5)) / 2);
        manager = manager.node_lifecycle(lifecycle);
    }
    manager
}

/// `<hostname>-<listen port>`: stable across restarts, so a restarted process takes its own lease
/// back at once; distinct for control planes on one host.
fn default_identity(config: &ClusterConfig) -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
    let host = if host.is_empty() { "bosun".to_owned() } else { host };
    format!("{host}-{}", config.listen.port())
}

/// Serves the DNS at `addr`. With port 0 the UDP socket picks the port and TCP then binds the
/// same number, which a TCP socket may already hold: try another port then.
async fn serve_dns(dns: ClusterDns, addr: SocketAddr) -> std::result::Result<bosun_netproxy::DnsServer, StartError> {
    let mut attempts = if addr.port() == 0 { 5 } else { 1 };
    loop {
        attempts -= 1;
        match dns.clone().serve(addr).await {
            Err(bosun_netproxy::dns::DnsError::Bind { addr: taken, .. }) if attempts > 0 => {
                tracing::debug!(%taken, "the dns port is taken for tcp; trying another");
            }
            result => return Ok(result?),
        }
    }
}

/// The bridge, pod subnet and gateway of this process's runc node `i`: bosun0 10.88.0.0/16, then
/// bosun1 10.101.0.0/16, bosun2 10.102.0.0/16... (clear of the service ranges); the gateway is
/// the subnet's first address, as the CNI `host-local` plugin picks it.
fn runc_network(i: usize) -> (String, String, std::net::Ipv4Addr) {
    let second = if i == 0 { 88 } else { 100 + i.min(150) as u8 };
    (format!("bosun{i}"), format!("10.{second}.0.0/16"), std::net::Ipv4Addr::new(10, second, 0, 1))
}

/// Makes the node bridge with its gateway address now (the CNI `bridge` plugin adopts it when the
/// first pod comes), so that the pods' DNS can listen on the gateway before any pod exists.
async fn ensure_bridge(bridge: &str, subnet: &str, gateway: std::net::Ipv4Addr) -> std::result::Result<(), StartError> {
    let prefix = subnet.rsplit_once('/').map_or("16", |(_, p)| p);
    if ip(&["link", "show", bridge]).await.is_err() {
        ip(&["link", "add", "name", bridge, "type", "bridge"]).await?;
    }
    if !ip(&["-4", "addr", "show", "dev", bridge]).await?.contains(&format!("inet {gateway}/")) {
        ip(&["addr", "add", &format!("{gateway}/{prefix}"), "dev", bridge]).await?;
    }
    ip(&["link", "set", bridge, "up"]).await?;
    Ok(())
}

/// Runs `ip ARGS`; its output, or what it said on failure.
async fn ip(args: &[&str]) -> std::result::Result<String, StartError> {
    let out = tokio::process::Command::new("ip").args(args).output().await.map_err(|e| format!("run ip {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The runc nodes' image store, with `busybox` imported from the host's busybox-static.
async fn runc_images(dir: &std::path::Path) -> std::result::Result<LocalImageStore, StartError> {
    let store = LocalImageStore::open(dir)?;
    if store.ensure("busybox").await.is_err() {
        let rootfs = dir.join(".busybox-rootfs");
        bosun_runtime::runc::busybox_rootfs(&rootfs).await?;
        store.import_dir("busybox", &rootfs, vec!["sh".into()]).await?;
        let _ = std::fs::remove_dir_all(&rootfs);
        tracing::info!("imported image busybox from the host's busybox-static");
    }
    Ok(store)
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
