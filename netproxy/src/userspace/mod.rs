//! The userspace L4 proxy backend: tokio listeners on each ClusterIP:port, node port and external IP,
//! relaying TCP streams and UDP datagrams to endpoints. Needs no privileges; in process mode the
//! cluster IPs are loopback addresses (any of 127.0.0.0/8 binds without configuration).

mod balancer;
mod splice;
mod tcp;
mod udp;

pub use balancer::Balance;

use crate::backend::{ApplyError, ProxyBackend};
use crate::table::{Protocol, ProxyService, ServicePortName, TableDiff};
use balancer::Balancer;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Errors of the userspace proxy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UserspaceError {
    /// A listening address could not be bound.
    #[error("bind {addr}/{protocol}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The protocol.
        protocol: Protocol,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Settings of the userspace proxy.
#[derive(Debug, Clone)]
#[must_use]
pub struct UserspaceConfig {
    balance: Balance,
    node_ips: Vec<IpAddr>,
    connect_timeout: Duration,
    drain_timeout: Duration,
    udp_idle_timeout: Duration,
    splice: bool,
}

impl Default for UserspaceConfig {
    fn default() -> Self {
        Self {
            balance: Balance::RoundRobin,
            node_ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            connect_timeout: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(30),
            udp_idle_timeout: Duration::from_secs(30),
            splice: true,
        }
    }
}

impl UserspaceConfig {
    /// Load balancing policy (default round robin).
    pub fn balance(mut self, balance: Balance) -> Self {
        self.balance = balance;
        self
    }

    /// Addresses node ports listen on (default `127.0.0.1`).
    pub fn node_ips(mut self, ips: impl IntoIterator<Item = IpAddr>) -> Self {
        self.node_ips = ips.into_iter().collect();
        self
    }

    /// How long one connect to an endpoint may take before the next endpoint is tried (default 2 s).
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// How long open TCP connections to a removed endpoint may finish before they are closed (default 30 s).
    pub fn drain_timeout(mut self, t: Duration) -> Self {
        self.drain_timeout = t;
        self
    }

    /// How long a UDP client session lives without traffic (default 30 s).
    pub fn udp_idle_timeout(mut self, t: Duration) -> Self {
        self.udp_idle_timeout = t;
        self
    }

    /// Relay TCP bytes with `splice(2)` through kernel pipes (default `true`); `false` copies them
    /// through userspace buffers. Splicing falls back to copying when pipes cannot be made.
    pub fn splice(mut self, on: bool) -> Self {
        self.splice = on;
        self
    }
}

/// One listening socket and the task serving it.
struct Listener {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
}

struct PortState {
    spec: Arc<ProxyService>,
    cluster: Arc<Balancer>,
    external: Arc<Balancer>,
    listeners: Vec<Listener>,
}

impl PortState {
    fn shutdown(self) {
        for l in self.listeners {
            l.stop.send_replace(true);
        }
        self.cluster.close();
        self.external.close();
    }
}

/// The userspace proxy. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct UserspaceProxy {
    config: Arc<UserspaceConfig>,
    ports: Arc<tokio::sync::Mutex<HashMap<ServicePortName, PortState>>>,
    bind_errors: Arc<Mutex<Vec<String>>>,
}

impl UserspaceProxy {
    /// A proxy with the given settings; it serves nothing until a diff is applied.
    pub fn new(config: UserspaceConfig) -> Self {
        Self { config: Arc::new(config), ports: Arc::default(), bind_errors: Arc::default() }
    }

    /// The addresses currently listened on, per service port.
    pub async fn listening(&self) -> Vec<(ServicePortName, SocketAddr)> {
        let ports = self.ports.lock().await;
        let mut out: Vec<_> = ports.iter().flat_map(|(n, p)| p.listeners.iter().map(move |l| (n.clone(), l.addr))).collect();
        out.sort();
        out
    }

    /// Addresses that could not be bound (most recent last); they are retried on the next change of the port.
    pub fn bind_errors(&self) -> Vec<String> {
        self.bind_errors.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn wanted(&self, spec: &ProxyService) -> Vec<(SocketAddr, bool)> {
        let mut out: Vec<(SocketAddr, bool)> = spec.cluster_ips.iter().map(|ip| (SocketAddr::new(*ip, spec.port), false)).collect();
        out.extend(spec.external_ips.iter().map(|ip| (SocketAddr::new(*ip, spec.port), true)));
        if let Some(np) = spec.node_port {
            out.extend(self.config.node_ips.iter().map(|ip| (SocketAddr::new(*ip, np), true)));
        }
        out
    }

    async fn upsert(&self, ports: &mut HashMap<ServicePortName, PortState>, spec: Arc<ProxyService>) {
        let same_addresses = ports.get(&spec.name).is_some_and(|cur| {
            cur.spec.cluster_ips == spec.cluster_ips
                && cur.spec.port == spec.port
                && cur.spec.node_port == spec.node_port
                && cur.spec.external_ips == spec.external_ips
        });
        if same_addresses {
            if let Some(cur) = ports.get_mut(&spec.name) {
                cur.cluster.update(&spec.cluster_endpoints, spec.affinity);
                cur.external.update(&spec.external_endpoints, spec.affinity);
                cur.spec = spec;
            }
            return;
        }
        if let Some(old) = ports.remove(&spec.name) {
            old.shutdown();
        }
        let drain = if spec.name.protocol == Protocol::Udp { Duration::ZERO } else { self.config.drain_timeout };
        let cluster = Arc::new(Balancer::new(self.config.balance, drain));
        let external = Arc::new(Balancer::new(self.config.balance, drain));
        cluster.update(&spec.cluster_endpoints, spec.affinity);
        external.update(&spec.external_endpoints, spec.affinity);
        let mut listeners = Vec::new();
        for (addr, is_external) in self.wanted(&spec) {
            let balancer = if is_external { external.clone() } else { cluster.clone() };
            match self.listen(addr, spec.name.protocol, balancer, &spec.name).await {
                Ok(l) => listeners.push(l),
                Err(error) => {
                    tracing::warn!(service = %spec.name, %error, "userspace proxy cannot listen");
                    let mut errs = self.bind_errors.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    errs.push(format!("{}: {error}", spec.name));
                    let excess = errs.len().saturating_sub(100);
                    errs.drain(..excess);
                }
            }
        }
        ports.insert(spec.name.clone(), PortState { spec, cluster, external, listeners });
    }

    async fn listen(
        &self,
        addr: SocketAddr,
        protocol: Protocol,
        balancer: Arc<Balancer>,
        name: &ServicePortName,
    ) -> Result<Listener, UserspaceError> {
        let (stop, stopped) = watch::channel(false);
        let bind_err = |source| UserspaceError::Bind { addr, protocol, source };
        let span = tracing::debug_span!("userspace", service = %name, %addr);
        match protocol {
            Protocol::Tcp => {
                let socket = tcp::bind(addr).map_err(bind_err)?;
                tokio::spawn(tracing::Instrument::instrument(
                    tcp::serve(socket, balancer, self.config.connect_timeout, self.config.splice, stopped),
                    span,
                ));
            }
            Protocol::Udp => {
                let socket = tokio::net::UdpSocket::bind(addr).await.map_err(bind_err)?;
                tokio::spawn(tracing::Instrument::instrument(udp::serve(socket, balancer, self.config.udp_idle_timeout, stopped), span));
            }
            _ => {
                return Err(bind_err(std::io::Error::new(std::io::ErrorKind::Unsupported, "SCTP is not proxied in userspace")));
            }
        }
        Ok(Listener { addr, stop })
    }
}

#[async_trait::async_trait]
impl ProxyBackend for UserspaceProxy {
    fn name(&self) -> &'static str {
        "userspace"
    }

    async fn apply(&self, diff: &TableDiff) -> Result<(), ApplyError> {
        let mut ports = self.ports.lock().await;
        if diff.full {
            let keep: std::collections::HashSet<&ServicePortName> = diff.upserted.iter().map(|s| &s.name).collect();
            let gone: Vec<ServicePortName> = ports.keys().filter(|k| !keep.contains(k)).cloned().collect();
            for name in gone {
                if let Some(p) = ports.remove(&name) {
                    p.shutdown();
                }
            }
        }
        for name in &diff.removed {
            if let Some(p) = ports.remove(name) {
                p.shutdown();
            }
        }
        for spec in &diff.upserted {
            self.upsert(&mut ports, spec.clone()).await;
        }
        Ok(())
    }
}
