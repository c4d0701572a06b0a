//! Generating `nft -f` scripts.
//!
//! Layout (family `ip`), built so that adding or changing a service only adds and removes map
//! elements (no chain or rule is written per service, and no anonymous set, which is what makes large
//! nft scripts slow):
//! - `service-ids` (`daddr . l4proto . dport : mark`) and `nodeport-ids` (`l4proto . dport : mark`)
//!   give each service port's cluster and external traffic a numeric id, stored in the conntrack mark.
//! - `service-ips` / `service-nodeports` jump to a shared `pick-<proto>-<N>` chain for a service
//!   with N endpoints (`pick-masq-…` for external traffic that is masqueraded).
//! - `pick-…-N` DNATs through `backends` keyed by `ct mark . numgen random mod N`: one hash lookup.
//! - Services with ClientIP affinity get their own chains with per-endpoint timed sets instead.
//! - `no-endpoint-services` / `no-endpoint-nodeports` reject traffic to ports without endpoints.

use crate::table::{Affinity, Endpoint, Protocol, ProxyService, ServicePortName};
use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};

/// The mark external traffic carries to be masqueraded on its way out.
pub(super) const MASQ_MARK: u32 = 0x4000;

/// The base table: maps, dispatch and hook chains (no service in it yet).
pub(super) fn base(table: &str) -> String {
    format!(
        "table ip {table} {{
  map service-ids {{ type ipv4_addr . inet_proto . inet_service : mark ; }}
  map nodeport-ids {{ type inet_proto . inet_service : mark ; }}
  map service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}
  map service-nodeports {{ type inet_proto . inet_service : verdict ; }}
  map backends {{ typeof ct mark . numgen random mod 2 : ip daddr . tcp dport ; }}
  map no-endpoint-services {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}
  map no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; }}
  chain reject-chain {{ reject ; }}
  chain mark-for-masquerade {{ meta mark set meta mark | {MASQ_MARK:#x} ; }}
  chain services {{
    ct mark set ip daddr . meta l4proto . th dport map @service-ids
    ip daddr . meta l4proto . th dport vmap @service-ips
    ip daddr != 127.0.0.0/8 fib daddr type local ct mark set meta l4proto . th dport map @nodeport-ids
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

/// A shared endpoint-picking chain: `pick[-masq]-<proto>-<n>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Pick {
    pub protocol: Protocol,
    pub n: usize,
    pub masquerade: bool,
}

impl Pick {
    pub(super) fn name(&self) -> String {
        format!("pick-{}{}-{}", if self.masquerade { "masq-" } else { "" }, l4(self.protocol), self.n)
    }

    pub(super) fn write(&self, out: &mut String, table: &str) {
        let name = self.name();
        let _ = writeln!(out, "add chain ip {table} {name}");
        if self.masquerade {
            let _ = writeln!(out, "add rule ip {table} {name} jump mark-for-masquerade");
        }
        let _ = writeln!(
            out,
            "add rule ip {table} {name} meta l4proto {} dnat to ct mark . numgen random mod {} map @backends",
            l4(self.protocol),
            self.n
        );
    }
}

/// The key of a map element.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Key {
    /// `ipv4_addr . inet_proto . inet_service` (cluster and external IPs).
    Addr(Ipv4Addr, Protocol, u16),
    /// `inet_proto . inet_service` (node ports).
    Port(Protocol, u16),
    /// `mark . numgen` (`backends`: a service port's id and an endpoint's index).
    Backend(u32, u32),
}

/// The value of a map element.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Value {
    /// A conntrack mark (a service port's id).
    Mark(u32),
    /// A verdict: `goto <chain>`.
    Goto(String),
    /// A DNAT target: `ipv4_addr . inet_service`.
    Target(SocketAddrV4),
}

/// One map element: map name, key, value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Element {
    pub map: &'static str,
    pub key: Key,
    pub value: Value,
}

impl Element {
    fn new(map: &'static str, key: Key, value: Value) -> Self {
        Self { map, key, value }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Addr(ip, p, port) => write!(f, "{ip} . {} . {port}", l4(*p)),
            Self::Port(p, port) => write!(f, "{} . {port}", l4(*p)),
            Self::Backend(id, i) => write!(f, "{id} . {i}"),
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Mark(m) => write!(f, "{m}"),
            Self::Goto(chain) => write!(f, "goto {chain}"),
            Self::Target(ep) => write!(f, "{} . {}", ep.ip(), ep.port()),
        }
    }
}

/// The numeric ids of a service port's cluster and external traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ids {
    pub cluster: u32,
    pub external: u32,
}

/// Every map element a service port needs, and the pick chains they jump to.
pub(super) fn elements(svc: &ProxyService, ids: Ids, picks: &mut BTreeSet<Pick>) -> BTreeSet<Element> {
    let mut out = BTreeSet::new();
    let p = svc.name.protocol;
    let port = svc.port;
    let sid = id(&svc.name);
    let affinity = timeout(svc).is_some();
    let cluster = v4_endpoints(&svc.cluster_endpoints);
    let external = v4_endpoints(&svc.external_endpoints);
    let mut verdict = |eps: &[SocketAddrV4], id: u32, kind: &str, masquerade: bool, out: &mut BTreeSet<Element>| -> Value {
        if affinity {
            return Value::Goto(format!("{kind}-{sid}"));
        }
        for (i, ep) in (0u32..).zip(eps) {
            out.insert(Element::new("backends", Key::Backend(id, i), Value::Target(*ep)));
        }
        let pick = Pick { protocol: svc.name.protocol, n: eps.len(), masquerade };
        let v = Value::Goto(pick.name());
        picks.insert(pick);
        v
    };
    let cluster_verdict = (!cluster.is_empty()).then(|| verdict(&cluster, ids.cluster, "svc", false, &mut out));
    let has_ext = svc.node_port.is_some() || !svc.external_ips.is_empty();
    let external_verdict =
        (has_ext && !external.is_empty()).then(|| verdict(&external, ids.external, "ext", !svc.external_local, &mut out));
    let reject = || Value::Goto("reject-chain".into());
    for ip in svc.cluster_ips.iter().filter_map(v4) {
        let key = Key::Addr(ip, p, port);
        match &cluster_verdict {
            Some(v) => {
                out.insert(Element::new("service-ids", key.clone(), Value::Mark(ids.cluster)));
                out.insert(Element::new("service-ips", key, v.clone()));
            }
            None => {
                out.insert(Element::new("no-endpoint-services", key, reject()));
            }
        }
    }
    let ext_keys =
        svc.external_ips.iter().filter_map(v4).map(|ip| ("service-ids", "service-ips", "no-endpoint-services", Key::Addr(ip, p, port)));
    let np_keys = svc.node_port.map(|np| ("nodeport-ids", "service-nodeports", "no-endpoint-nodeports", Key::Port(p, np)));
    for (ids_map, verdict_map, reject_map, key) in ext_keys.chain(np_keys) {
        match &external_verdict {
            Some(v) => {
                out.insert(Element::new(ids_map, key.clone(), Value::Mark(ids.external)));
                out.insert(Element::new(verdict_map, key, v.clone()));
            }
            None => {
                out.insert(Element::new(reject_map, key, reject()));
            }
        }
    }
    out
}

/// Writes `add element` / `delete element` statements, grouped per map, at most `chunk` per statement.
pub(super) fn write_elements<'a>(out: &mut String, table: &str, verb: &str, elements: impl IntoIterator<Item = &'a Element>, chunk: usize) {
    let mut by_map: std::collections::BTreeMap<&str, Vec<&Element>> = std::collections::BTreeMap::new();
    for e in elements {
        by_map.entry(e.map).or_default().push(e);
    }
    for (map, elems) in by_map {
        for group in elems.chunks(chunk.max(1)) {
            let _ = write!(out, "{verb} element ip {table} {map} {{ ");
            for (i, e) in group.iter().enumerate() {
                let sep = if i == 0 { "" } else { ", " };
                if verb == "add" {
                    let _ = write!(out, "{sep}{} : {}", e.key, e.value);
                } else {
                    let _ = write!(out, "{sep}{}", e.key);
                }
            }
            out.push_str(" }\n");
        }
    }
}

/// The affinity chains of a service port, when it has affinity.
pub(super) fn affinity_chains(out: &mut String, table: &str, old: Option<&ProxyService>, new: Option<&ProxyService>) {
    let old = old.filter(|o| timeout(o).is_some());
    let new = new.filter(|n| timeout(n).is_some());
    chains(out, table, old, new);
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
fn chains(out: &mut String, table: &str, old: Option<&ProxyService>, new: Option<&ProxyService>) {
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
        chain(out, table, &id, "svc", &v4_endpoints(&new.cluster_endpoints), false, svc_exists);
        if wants_ext(new) {
            chain(out, table, &id, "ext", &v4_endpoints(&new.external_endpoints), !new.external_local, ext_exists);
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

/// An affinity service's `svc-`/`ext-` chain: stick to a remembered endpoint, else pick one at random.
fn chain(out: &mut String, table: &str, id: &str, kind: &str, eps: &[SocketAddrV4], masquerade: bool, existing: bool) {
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
    for ep in eps {
        let e = ep_name(id, *ep);
        let _ = writeln!(out, "add rule ip {table} {name} ip saddr @aff-{e} goto ep-{e}");
    }
    let mut map = String::new();
    for (i, ep) in eps.iter().enumerate() {
        let _ = write!(map, "{}{i} : goto ep-{}", if i == 0 { "" } else { ", " }, ep_name(id, *ep));
    }
    let _ = writeln!(out, "add rule ip {table} {name} numgen random mod {} vmap {{ {map} }}", eps.len());
}

fn delete_chain(out: &mut String, table: &str, name: &str) {
    let _ = writeln!(out, "flush chain ip {table} {name}");
    let _ = writeln!(out, "delete chain ip {table} {name}");
}
