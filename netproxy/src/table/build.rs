//! Building table entries from a Service and its EndpointSlices, with kube-proxy's endpoint rules:
//! ready endpoints (terminating-but-serving ones when none is ready), traffic policies and topology hints.

use super::{Affinity, DnsEndpoint, Endpoint, NamedPort, Protocol, ProxyService, ServiceInfo, ServiceKind, ServicePortName};
use bosun_core::ObjectKey;
use bosun_core::k8s_openapi::api::core::v1::Service;
use bosun_core::k8s_openapi::api::discovery::v1::EndpointSlice;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// The node a proxy runs on: decides what `Local` traffic policies and topology hints select.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeContext {
    /// This node's name.
    pub node_name: Option<String>,
    /// This node's zone (`topology.kubernetes.io/zone`).
    pub zone: Option<String>,
}

impl NodeContext {
    /// A context for a named node.
    pub fn new(node_name: impl Into<String>) -> Self {
        Self { node_name: Some(node_name.into()), zone: None }
    }

    /// Sets the node's zone (default: none, which disables topology hints).
    #[must_use]
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    fn is_local(&self, ep: &Endpoint) -> bool {
        self.node_name.is_some() && ep.node_name == self.node_name
    }
}

/// Default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
const DEFAULT_AFFINITY_SECONDS: u64 = 10_800;

/// Builds the table entry of one service from its spec and the EndpointSlices that name it.
/// Returns `None` for a service the proxy cannot use at all (no spec).
pub fn build_service(svc: &Service, slices: &[Arc<EndpointSlice>], node: &NodeContext) -> Option<(ServiceInfo, Vec<ProxyService>)> {
    let spec = svc.spec.as_ref()?;
    let namespace = svc.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let name = svc.metadata.name.clone()?;
    let key = ObjectKey::new(Some(&namespace), name.clone());
    let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
    let mut cluster_ips: Vec<IpAddr> =
        spec.cluster_ips.iter().flatten().chain(spec.cluster_ip.iter()).filter_map(|s| s.parse().ok()).collect();
    cluster_ips.dedup();
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let kind = match type_ {
        "ExternalName" => ServiceKind::ExternalName(spec.external_name.clone().unwrap_or_default()),
        _ if headless => ServiceKind::Headless,
        "NodePort" => ServiceKind::NodePort,
        "LoadBalancer" => ServiceKind::LoadBalancer,
        _ => ServiceKind::ClusterIp,
    };
    if matches!(kind, ServiceKind::Headless | ServiceKind::ExternalName(_)) {
        cluster_ips.clear();
    }
    let ports: Vec<(NamedPort, Option<u16>)> = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let named = NamedPort {
                name: p.name.clone().unwrap_or_default(),
                protocol: Protocol::parse(p.protocol.as_deref())?,
                port: u16::try_from(p.port).ok()?,
            };
            Some((named, p.node_port.and_then(|n| u16::try_from(n).ok()).filter(|n| *n != 0)))
        })
        .collect();

    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let dns_endpoints = if matches!(kind, ServiceKind::Headless) { dns_endpoints(slices, publish_not_ready) } else { Vec::new() };
    let info = ServiceInfo {
        key,
        kind: kind.clone(),
        cluster_ips: cluster_ips.clone(),
        ports: ports.iter().map(|(p, _)| p.clone()).collect(),
        dns_endpoints,
    };
    if !matches!(kind, ServiceKind::ClusterIp | ServiceKind::NodePort | ServiceKind::LoadBalancer) {
        return Some((info, Vec::new()));
    }

    let affinity = match spec.session_affinity.as_deref() {
        Some("ClientIP") => {
            let secs = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|s| u64::try_from(s).ok())
                .unwrap_or(DEFAULT_AFFINITY_SECONDS);
            Affinity::ClientIp { timeout: Duration::from_secs(secs) }
        }
        _ => Affinity::None,
    };
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let has_node_port = matches!(kind, ServiceKind::NodePort | ServiceKind::LoadBalancer);
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local") && has_node_port;
    let mut external_ips: Vec<IpAddr> = spec.external_ips.iter().flatten().filter_map(|s| s.parse().ok()).collect();
    if matches!(kind, ServiceKind::LoadBalancer) {
        let lb = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.as_ref());
        external_ips.extend(lb.into_iter().flatten().filter_map(|i| i.ip.as_deref()?.parse::<IpAddr>().ok()));
        external_ips.extend(spec.load_balancer_ip.as_deref().and_then(|s| s.parse::<IpAddr>().ok()));
    }
    external_ips.sort();
    external_ips.dedup();

    let entries = ports
        .iter()
        .map(|(port, node_port)| {
            let all = endpoints_for(slices, port);
            let cluster_endpoints = if internal_local {
                ready_or_serving(all.iter().filter(|e| node.is_local(e)))
            } else {
                ready_or_serving(topology_filter(&all, node).iter())
            };
            let external_endpoints = if external_local {
                ready_or_serving(all.iter().filter(|e| node.is_local(e)))
            } else if internal_local {
                // External traffic with a Cluster policy may go anywhere, even if internal traffic may not.
                ready_or_serving(all.iter())
            } else {
                cluster_endpoints.clone()
            };
            ProxyService {
                name: ServicePortName {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    port: port.name.clone(),
                    protocol: port.protocol,
                },
                cluster_ips: cluster_ips.clone(),
                port: port.port,
                node_port: if has_node_port { *node_port } else { None },
                external_ips: external_ips.clone(),
                affinity,
                internal_local,
                external_local,
                cluster_endpoints,
                external_endpoints,
            }
        })
        .collect();
    Some((info, entries))
}

/// Every endpoint of the slices for one service port (its target port found by port name and protocol).
fn endpoints_for(slices: &[Arc<EndpointSlice>], port: &NamedPort) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = Vec::new();
    for slice in slices {
        if slice.address_type == "FQDN" {
            continue;
        }
        let Some(target) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or("") == port.name && Protocol::parse(p.protocol.as_deref()) == Some(port.protocol))
        else {
            continue;
        };
        let Some(target) = target.port.and_then(|p| u16::try_from(p).ok()) else { continue };
        for ep in slice.endpoints.iter().flatten() {
            // Like kube-proxy, only the first address counts.
            let Some(ip) = ep.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else { continue };
            let cond = ep.conditions.as_ref();
            let ready = cond.and_then(|c| c.ready).unwrap_or(true);
            let serving = cond.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = cond.and_then(|c| c.terminating).unwrap_or(false);
            let zone_hints = ep
                .hints
                .as_ref()
                .and_then(|h| h.for_zones.as_ref())
                .map(|z| z.iter().map(|z| z.name.clone()).collect())
                .unwrap_or_default();
            let node_hints = ep
                .hints
                .as_ref()
                .and_then(|h| h.for_nodes.as_ref())
                .map(|n| n.iter().map(|n| n.name.clone()).collect())
                .unwrap_or_default();
            let endpoint = Endpoint {
                addr: SocketAddr::new(ip, target),
                node_name: ep.node_name.clone(),
                zone: ep.zone.clone(),
                ready,
                serving,
                terminating,
                zone_hints,
                node_hints,
            };
            if !out.iter().any(|e| e.addr == endpoint.addr) {
                out.push(endpoint);
            }
        }
    }
    out.sort_by_key(|a| a.addr);
    out
}

/// The ready endpoints; when none is ready, the serving terminating ones (graceful failover).
fn ready_or_serving<'a>(eps: impl Iterator<Item = &'a Endpoint> + Clone) -> Vec<Endpoint> {
    let ready: Vec<Endpoint> = eps.clone().filter(|e| e.ready && !e.terminating).cloned().collect();
    if !ready.is_empty() {
        return ready;
    }
    eps.filter(|e| e.serving && e.terminating).cloned().collect()
}

/// Topology-aware routing, as kube-proxy does it: when every ready endpoint carries node hints and
/// some is hinted for this node, keep only those (`PreferSameNode`); else when every ready endpoint
/// carries zone hints and some is hinted for this node's zone, keep only those; else keep everything.
fn topology_filter(all: &[Endpoint], node: &NodeContext) -> Vec<Endpoint> {
    if let Some(name) = node.node_name.as_deref() {
        let ready: Vec<&Endpoint> = all.iter().filter(|e| e.ready).collect();
        if !ready.is_empty()
            && ready.iter().all(|e| !e.node_hints.is_empty())
            && ready.iter().any(|e| e.node_hints.iter().any(|n| n == name))
        {
            return all.iter().filter(|e| e.node_hints.iter().any(|n| n == name)).cloned().collect();
        }
    }
    let Some(zone) = node.zone.as_deref() else { return all.to_vec() };
    let ready: Vec<&Endpoint> = all.iter().filter(|e| e.ready).collect();
    if ready.is_empty() || ready.iter().any(|e| e.zone_hints.is_empty()) {
        return all.to_vec();
    }
    if !ready.iter().any(|e| e.zone_hints.iter().any(|z| z == zone)) {
        return all.to_vec();
    }
    all.iter().filter(|e| e.zone_hints.iter().any(|z| z == zone)).cloned().collect()
}

fn dns_endpoints(slices: &[Arc<EndpointSlice>], publish_not_ready: bool) -> Vec<DnsEndpoint> {
    let mut out: Vec<DnsEndpoint> = Vec::new();
    for slice in slices {
        if slice.address_type == "FQDN" {
            continue;
        }
        let ports: Vec<NamedPort> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(NamedPort {
                    name: p.name.clone().unwrap_or_default(),
                    protocol: Protocol::parse(p.protocol.as_deref())?,
                    port: u16::try_from(p.port?).ok()?,
                })
            })
            .collect();
        for ep in slice.endpoints.iter().flatten() {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready && !publish_not_ready {
                continue;
            }
            for ip in ep.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                if let Some(existing) = out.iter_mut().find(|d| d.ip == ip) {
                    for p in &ports {
                        if !existing.ports.contains(p) {
                            existing.ports.push(p.clone());
                        }
                    }
                    continue;
                }
                out.push(DnsEndpoint { ip, hostname: ep.hostname.clone(), ports: ports.clone() });
            }
        }
    }
    out.sort_by_key(|a| a.ip);
    out
}

#[cfg(test)]
mod tests;
