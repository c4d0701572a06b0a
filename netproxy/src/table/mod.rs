//! The service table: what every proxy backend and the cluster DNS serve, keyed per service port,
//! and the diffs between two versions of it.

mod build;

pub use build::{NodeContext, build_service};

use bosun_core::ObjectKey;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// A transport protocol of a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// Parses the Kubernetes spelling (`TCP`, `UDP`, `SCTP`); absent means TCP.
    pub fn parse(s: Option<&str>) -> Option<Self> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            "SCTP" => Some(Self::Sctp),
            _ => None,
        }
    }

    /// The lowercase name (`tcp`), as nftables and DNS SRV labels spell it.
    pub fn as_lower(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
        })
    }
}

/// The name of one service port: `namespace/name:port/protocol`, the unit backends program.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName {
    /// The service's namespace.
    pub namespace: String,
    /// The service's name.
    pub name: String,
    /// The port's name (empty for a single unnamed port).
    pub port: String,
    /// The port's protocol.
    pub protocol: Protocol,
}

impl ServicePortName {
    /// The service this port belongs to.
    pub fn service(&self) -> ObjectKey {
        ObjectKey::new(Some(&self.namespace), self.name.clone())
    }
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}/{}", self.namespace, self.name, self.port, self.protocol)
    }
}

/// One backend address of a service port, with the conditions and topology the proxy looks at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    /// The endpoint's IP and target port.
    pub addr: SocketAddr,
    /// The node the endpoint runs on.
    pub node_name: Option<String>,
    /// The zone the endpoint runs in.
    pub zone: Option<String>,
    /// Ready to receive traffic.
    pub ready: bool,
    /// Serving (ready, or terminating but still answering).
    pub serving: bool,
    /// Terminating.
    pub terminating: bool,
    /// Zones this endpoint is hinted for (topology-aware routing).
    pub zone_hints: Vec<String>,
    /// Nodes this endpoint is hinted for (`trafficDistribution: PreferSameNode`).
    pub node_hints: Vec<String>,
}

impl Endpoint {
    /// A ready, serving endpoint at `addr` with no node, zone or hints (static backends, tests).
    #[must_use]
    pub fn ready(addr: SocketAddr) -> Self {
        Self {
            addr,
            node_name: None,
            zone: None,
            ready: true,
            serving: true,
            terminating: false,
            zone_hints: Vec::new(),
            node_hints: Vec::new(),
        }
    }
}

/// Session affinity of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Affinity {
    /// Every connection picks an endpoint anew.
    #[default]
    None,
    /// Connections from one client IP stick to one endpoint until `timeout` passes without traffic.
    ClientIp {
        /// The stickiness timeout (`sessionAffinityConfig.clientIP.timeoutSeconds`, default 10800 s).
        timeout: Duration,
    },
}

/// What a proxy backend programs for one service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyService {
    /// Which service port this is.
    pub name: ServicePortName,
    /// The cluster IPs (one per IP family).
    pub cluster_ips: Vec<IpAddr>,
    /// The service port.
    pub port: u16,
    /// The node port (NodePort and LoadBalancer services).
    pub node_port: Option<u16>,
    /// External addresses: `spec.externalIPs` and load-balancer ingress IPs.
    pub external_ips: Vec<IpAddr>,
    /// Session affinity.
    pub affinity: Affinity,
    /// `internalTrafficPolicy: Local`: cluster traffic goes to this node's endpoints only.
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local`: node-port and external traffic goes to this node's endpoints only.
    pub external_local: bool,
    /// Endpoints for traffic to the cluster IPs (policy, topology and readiness already applied).
    pub cluster_endpoints: Vec<Endpoint>,
    /// Endpoints for traffic to the node port and external IPs.
    pub external_endpoints: Vec<Endpoint>,
}

impl ProxyService {
    /// A plain ClusterIP service port: `endpoints` serve cluster and external traffic alike; no
    /// node port, external IP or affinity; `Cluster` traffic policies. Set fields for the rest.
    pub fn new(name: ServicePortName, cluster_ips: Vec<IpAddr>, port: u16, endpoints: Vec<Endpoint>) -> Self {
        Self {
            name,
            cluster_ips,
            port,
            node_port: None,
            external_ips: Vec::new(),
            affinity: Affinity::None,
            internal_local: false,
            external_local: false,
            cluster_endpoints: endpoints.clone(),
            external_endpoints: endpoints,
        }
    }

    /// Every endpoint address either kind of traffic may reach.
    pub fn all_endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.cluster_endpoints.iter().chain(self.external_endpoints.iter().filter(|e| !self.cluster_endpoints.contains(e)))
    }
}

/// The kind of a service, as far as routing and DNS care.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServiceKind {
    /// A virtual IP.
    ClusterIp,
    /// A virtual IP plus a port on every node.
    NodePort,
    /// A node port plus external load-balancer addresses.
    LoadBalancer,
    /// No virtual IP: DNS answers with the endpoints.
    Headless,
    /// A DNS alias (`CNAME`) to an outside name.
    ExternalName(String),
}

/// A named port of a service or of an endpoint, as DNS SRV records need them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPort {
    /// The port name (SRV records exist only for named ports).
    pub name: String,
    /// The protocol.
    pub protocol: Protocol,
    /// The port number.
    pub port: u16,
}

/// An address DNS publishes for a headless service (ready ones, or all with `publishNotReadyAddresses`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsEndpoint {
    /// The endpoint IP.
    pub ip: IpAddr,
    /// The endpoint's hostname (StatefulSet pods: the pod name).
    pub hostname: Option<String>,
    /// The ports of its EndpointSlice.
    pub ports: Vec<NamedPort>,
}

/// Service-level facts: what DNS serves, and the ports the service expands into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    /// Namespace and name.
    pub key: ObjectKey,
    /// The kind.
    pub kind: ServiceKind,
    /// The cluster IPs (empty for headless and ExternalName).
    pub cluster_ips: Vec<IpAddr>,
    /// The service's ports.
    pub ports: Vec<NamedPort>,
    /// Addresses DNS publishes for a headless service.
    pub dns_endpoints: Vec<DnsEndpoint>,
}

/// What changed between two versions of the table; backends apply exactly this.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableDiff {
    /// When set, `upserted` is the whole table and the backend must drop everything else it has.
    pub full: bool,
    /// Service ports added or changed (their new state).
    pub upserted: Vec<Arc<ProxyService>>,
    /// Service ports removed.
    pub removed: Vec<ServicePortName>,
}

impl TableDiff {
    /// True when nothing changed (and this is not a full resync).
    pub fn is_empty(&self) -> bool {
        !self.full && self.upserted.is_empty() && self.removed.is_empty()
    }

    /// Appends another diff (later wins for a port present in both).
    pub fn merge(&mut self, other: TableDiff) {
        if other.full {
            *self = other;
            return;
        }
        for name in other.removed {
            self.upserted.retain(|s| s.name != name);
            if !self.removed.contains(&name) {
                self.removed.push(name);
            }
        }
        for svc in other.upserted {
            self.removed.retain(|n| *n != svc.name);
            self.upserted.retain(|s| s.name != svc.name);
            self.upserted.push(svc);
        }
    }
}

/// The whole desired state: services (for DNS and ingress) and service ports (for proxy backends).
#[derive(Debug, Clone, Default)]
pub struct ServiceTable {
    services: BTreeMap<ObjectKey, Arc<ServiceInfo>>,
    ports: BTreeMap<ServicePortName, Arc<ProxyService>>,
}

impl ServiceTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces one service (or removes it with `None`) and returns what changed for backends.
    pub fn set_service(&mut self, key: &ObjectKey, entry: Option<(ServiceInfo, Vec<ProxyService>)>) -> TableDiff {
        let mut diff = TableDiff::default();
        let old: Vec<ServicePortName> = self.ports.range(port_range(key)).map(|(k, _)| k.clone()).collect();
        match entry {
            None => {
                self.services.remove(key);
                for name in old {
                    self.ports.remove(&name);
                    diff.removed.push(name);
                }
            }
            Some((info, ports)) => {
                self.services.insert(key.clone(), Arc::new(info));
                let new_names: Vec<&ServicePortName> = ports.iter().map(|p| &p.name).collect();
                for name in old {
                    if !new_names.contains(&&name) {
                        self.ports.remove(&name);
                        diff.removed.push(name);
                    }
                }
                for port in ports {
                    if self.ports.get(&port.name).is_some_and(|cur| **cur == port) {
                        continue;
                    }
                    let port = Arc::new(port);
                    self.ports.insert(port.name.clone(), port.clone());
                    diff.upserted.push(port);
                }
            }
        }
        diff
    }

    /// The whole table as a full-resync diff.
    pub fn full_diff(&self) -> TableDiff {
        TableDiff { full: true, upserted: self.ports.values().cloned().collect(), removed: Vec::new() }
    }

    /// One service.
    pub fn service(&self, key: &ObjectKey) -> Option<&Arc<ServiceInfo>> {
        self.services.get(key)
    }

    /// One service by namespace and name.
    pub fn service_by_name(&self, namespace: &str, name: &str) -> Option<&Arc<ServiceInfo>> {
        self.services.get(&ObjectKey::new(Some(namespace), name))
    }

    /// Every service.
    pub fn services(&self) -> impl Iterator<Item = &Arc<ServiceInfo>> {
        self.services.values()
    }

    /// One service port.
    pub fn port(&self, name: &ServicePortName) -> Option<&Arc<ProxyService>> {
        self.ports.get(name)
    }

    /// The ports of one service.
    pub fn ports_of(&self, key: &ObjectKey) -> impl Iterator<Item = &Arc<ProxyService>> {
        self.ports.range(port_range(key)).map(|(_, v)| v)
    }

    /// Every service port.
    pub fn ports(&self) -> impl Iterator<Item = &Arc<ProxyService>> {
        self.ports.values()
    }

    /// The number of service ports.
    pub fn len(&self) -> usize {
        self.ports.len()
    }

    /// True when the table has no service port.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }
}

fn port_range(key: &ObjectKey) -> std::ops::RangeInclusive<ServicePortName> {
    let ns = key.namespace.clone().unwrap_or_default();
    let lo = ServicePortName { namespace: ns.clone(), name: key.name.clone(), port: String::new(), protocol: Protocol::Tcp };
    // Port names are DNS labels, so `\u{10FFFF}` sorts after every real one.
    let hi = ServicePortName { namespace: ns, name: key.name.clone(), port: "\u{10FFFF}".into(), protocol: Protocol::Sctp };
    lo..=hi
}
