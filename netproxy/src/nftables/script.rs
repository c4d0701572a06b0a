//! Generating `nft -f` scripts: the base table, and per service port the chains and map elements.
//!
//! Layout (family `ip`):
//! - `service-ips` map `daddr . l4proto . dport : verdict` jumps to a service port's `svc-…` chain
//!   (cluster IPs) or `ext-…` chain (external IPs); `service-nodeports` map `l4proto . dport : verdict`
//!   jumps to the `ext-…` chain for node ports on local addresses. One lookup per packet.
//! - A `svc-…`/`ext-…` chain picks an endpoint with `numgen random mod N` and DNATs through an
//!   anonymous map; with ClientIP affinity it first checks per-endpoint dynamic sets with a timeout.
//! - `no-endpoint-services` rejects traffic to service ports without endpoints (filter hooks).

use crate::table::{Affinity, Endpoint, Protocol, ProxyService, ServicePortName};
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};

/// The mark external traffic carries to be masqueraded on its way out.
pub(super) const MASQ_MARK: u32 = 0x4000;

/// The base table: maps, dispatch and hook chains. Creating it is idempotent only inside a
/// `delete table` + create transaction, which is how a full sync uses it.
pub(super) fn base(table: &str) -> String {
    format!(
        "table ip {table} {{
  map service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}
  map service-nodeports {{ type inet_proto . inet_service : verdict ; }}
  map no-endpoint-services {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}
  map no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; }}
  chain reject-chain {{ reject ; }}
  chain mark-for-masquerade {{ meta mark set meta mark | {MASQ_MARK:#x} ; }}
  chain services {{
    ip daddr . meta l4proto . th dport vmap @service-ips
    ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @service-nodeports
  }}
  chain filter-endpoints {{
    ip daddr . meta l4proto . th dport vmap @no-endpoint-services
    ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @no-endpoint-nodeports
  }}
  chain nat-prerouting {{ type nat hook prerouting priority dstnat ; policy accept ; jump services ; }}
  chain nat-output {{ type nat hook output priority -100 ; policy accept ; jump services ; }}
  chain nat-postrouting {{
    type nat hook postrouting priority srcnat ; policy accept ;
    meta mark & {MASQ_MARK:#x} == 0 return
    meta mark set meta mark ^ {MASQ_MARK:#x}
    masquerade fully-random
  }}
  chain filter-input {{ type filter hook input priority -110 ; policy accept ; ct state new jump filter-endpoints ; }}
  chain filter-forward {{ type filter hook forward priority -110 ; policy accept ; ct state new jump filter-endpoints ; }}
  chain filter-output {{ type filter hook output priority -110 ; policy accept ; ct state new jump filter-endpoints ; }}
}}
"
    )
}

/// A stable, nft-safe identifier of a service port (`ns/name/proto/port`; `_` for an unnamed port,
/// which no real port name can contain).
pub(super) fn id(name: &ServicePortName) -> String {
    let port = if name.port.is_empty() { "_" } else { &name.port };
    format!("{}/{}/{}/{}", name.namespace, name.name, name.protocol.as_lower(), port)
}

fn v4(ip: &IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(v) => Some(*v),
        IpAddr::V6(_) => None,
    }
}

fn v4_endpoints(eps: &[Endpoint]) -> Vec<SocketAddrV4> {
    eps.iter()
        .filter_map(|e| match e.addr {
            std::net::SocketAddr::V4(a) => Some(a),
            std::net::SocketAddr::V6(_) => None,
        })
        .collect()
}

fn l4(p: Protocol) -> &'static str {
    p.as_lower()
}

/// The map elements of a service port (the keys under which it is reachable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Keys {
    id: String,
    /// `(daddr, chain prefix)` entries of `service-ips`.
    ips: Vec<(Ipv4Addr, &'static str)>,
    port: u16,
    node_port: Option<u16>,
    protocol: Protocol,
    cluster_empty: bool,
    external_empty: bool,
}

pub(super) fn keys(svc: &ProxyService) -> Keys {
    let mut ips: Vec<(Ipv4Addr, &'static str)> = svc.cluster_ips.iter().filter_map(v4).map(|ip| (ip, "svc")).collect();
    ips.extend(svc.external_ips.iter().filter_map(v4).map(|ip| (ip, "ext")));
    Keys {
        id: id(&svc.name),
        ips,
        port: svc.port,
        node_port: svc.node_port,
        protocol: svc.name.protocol,
        cluster_empty: v4_endpoints(&svc.cluster_endpoints).is_empty(),
        external_empty: v4_endpoints(&svc.external_endpoints).is_empty(),
    }
}

impl Keys {
    /// Writes `add element` (or, with `verb` "delete", `delete element`) commands for these keys.
    pub(super) fn write(&self, out: &mut String, table: &str, verb: &str) {
        let (p, id, port) = (l4(self.protocol), &self.id, self.port);
        for (ip, kind) in &self.ips {
            let empty = if *kind == "ext" { self.external_empty } else { self.cluster_empty };
            if empty {
                let _ = writeln!(
                    out,
                    "{verb} element ip {table} no-endpoint-services {{ {ip} . {p} . {port}{} }}",
                    value(verb, "reject-chain")
                );
            } else {
                let _ = writeln!(
                    out,
                    "{verb} element ip {table} service-ips {{ {ip} . {p} . {port}{} }}",
                    value(verb, &format!("{kind}-{id}"))
                );
            }
        }
        if let Some(np) = self.node_port {
            if self.external_empty {
                let _ = writeln!(out, "{verb} element ip {table} no-endpoint-nodeports {{ {p} . {np}{} }}", value(verb, "reject-chain"));
            } else {
                let _ = writeln!(out, "{verb} element ip {table} service-nodeports {{ {p} . {np}{} }}", value(verb, &format!("ext-{id}")));
            }
        }
    }
}

fn value(verb: &str, chain: &str) -> String {
    if verb == "add" { format!(" : goto {chain}") } else { String::new() }
}

fn wants_ext(svc: &ProxyService) -> bool {
    svc.node_port.is_some() || !svc.external_ips.is_empty()
}

fn timeout(svc: &ProxyService) -> Option<u64> {
    match svc.affinity {
        Affinity::ClientIp { timeout } => Some(timeout.as_secs().max(1)),
        Affinity::None => None,
    }
}

/// Endpoints that get an endpoint chain and an affinity set (services with ClientIP affinity only).
fn affinity_endpoints(svc: &ProxyService) -> Vec<SocketAddrV4> {
    if timeout(svc).is_none() {
        return Vec::new();
    }
    let mut all: Vec<SocketAddrV4> =
        v4_endpoints(&svc.cluster_endpoints).into_iter().chain(v4_endpoints(&svc.external_endpoints)).collect();
    all.sort();
    all.dedup();
    all
}

fn ep_name(id: &str, ep: SocketAddrV4) -> String {
    format!("{id}/{}/{}", ep.ip(), ep.port())
}

/// Commands that bring a service port's chains from `old` (None: nothing yet) to `new` (None: gone).
/// Order matters inside the one transaction: new endpoint chains first, then the service chains that
/// reference them, then whatever nothing references any more.
pub(super) fn chains(out: &mut String, table: &str, old: Option<&ProxyService>, new: Option<&ProxyService>) {
    let Some(svc) = new.or(old) else { return };
    let id = id(&svc.name);
    let old_eps = old.map(affinity_endpoints).unwrap_or_default();
    let new_eps = new.map(affinity_endpoints).unwrap_or_default();
    if let Some(new) = new {
        if let Some(t) = timeout(new) {
            let old_t = old.and_then(timeout);
            for ep in &new_eps {
                let name = ep_name(&id, *ep);
                if old_eps.contains(ep) && old_t == Some(t) {
                    continue;
                }
                if old_eps.contains(ep) {
                    // The timeout changed: recreate the set.
                    let _ = writeln!(out, "flush chain ip {table} ep-{name}");
                    let _ = writeln!(out, "delete set ip {table} aff-{name}");
                } else {
                    let _ = writeln!(out, "add chain ip {table} ep-{name}");
                }
                let _ = writeln!(out, "add set ip {table} aff-{name} {{ type ipv4_addr ; flags dynamic,timeout ; timeout {t}s ; }}");
                let _ = writeln!(
                    out,
                    "add rule ip {table} ep-{name} update @aff-{name} {{ ip saddr }} meta l4proto {} dnat to {ep}",
                    l4(new.name.protocol)
                );
            }
        }
        let svc_exists = old.is_some();
        let ext_exists = old.is_some_and(wants_ext);
        chain(out, table, &id, new.name.protocol, "svc", &v4_endpoints(&new.cluster_endpoints), false, timeout(new).is_some(), svc_exists);
        if wants_ext(new) {
            chain(
                out,
                table,
                &id,
                new.name.protocol,
                "ext",
                &v4_endpoints(&new.external_endpoints),
                !new.external_local,
                timeout(new).is_some(),
                ext_exists,
            );
        } else if ext_exists {
            delete_chain(out, table, &format!("ext-{id}"));
        }
    } else if let Some(old) = old {
        delete_chain(out, table, &format!("svc-{id}"));
        if wants_ext(old) {
            delete_chain(out, table, &format!("ext-{id}"));
        }
    }
    for ep in old_eps.iter().filter(|e| !new_eps.contains(e)) {
        let name = ep_name(&id, *ep);
        delete_chain(out, table, &format!("ep-{name}"));
        let _ = writeln!(out, "delete set ip {table} aff-{name}");
    }
}

fn chain(
    out: &mut String,
    table: &str,
    id: &str,
    protocol: Protocol,
    kind: &str,
    eps: &[SocketAddrV4],
    masquerade: bool,
    affinity: bool,
    existing: bool,
) {
    let name = format!("{kind}-{id}");
    if existing {
        let _ = writeln!(out, "flush chain ip {table} {name}");
    } else {
        let _ = writeln!(out, "add chain ip {table} {name}");
    }
    if masquerade {
        let _ = writeln!(out, "add rule ip {table} {name} jump mark-for-masquerade");
    }
    if eps.is_empty() {
        return;
    }
    let mut map = String::new();
    if affinity {
        for ep in eps {
            let e = ep_name(id, *ep);
            let _ = writeln!(out, "add rule ip {table} {name} ip saddr @aff-{e} goto ep-{e}");
        }
        for (i, ep) in eps.iter().enumerate() {
            let _ = write!(map, "{}{i} : goto ep-{}", if i == 0 { "" } else { ", " }, ep_name(id, *ep));
        }
        let _ = writeln!(out, "add rule ip {table} {name} numgen random mod {} vmap {{ {map} }}", eps.len());
        return;
    }
    for (i, ep) in eps.iter().enumerate() {
        let _ = write!(map, "{}{i} : {} . {}", if i == 0 { "" } else { ", " }, ep.ip(), ep.port());
    }
    let _ =
        writeln!(out, "add rule ip {table} {name} meta l4proto {} dnat to numgen random mod {} map {{ {map} }}", l4(protocol), eps.len());
}

fn delete_chain(out: &mut String, table: &str, name: &str) {
    let _ = writeln!(out, "flush chain ip {table} {name}");
    let _ = writeln!(out, "delete chain ip {table} {name}");
}
