//! Generating `nft -f` scripts.
//!
//! Layout (one table of family `inet`; every map, pick chain and affinity chain exists once per
//! address family, the IPv6 ones with a `6` in their names), built so that adding or changing a
//! service only adds and removes map elements (no chain or rule is written per service, and no
//! anonymous set, which is what makes large nft scripts slow):
//! - `service-ids` (`daddr . l4proto . dport : mark`) and `nodeport-ids` (`l4proto . dport : mark`)
//!   give each service port's cluster and external traffic a numeric id, stored in the conntrack mark.
//! - `service-ips` / `service-nodeports` jump to a shared `pick-<proto>-<N>` chain for a service
//!   with N endpoints (`pick-masq-…` for external traffic that is masqueraded).
//! - `pick-…-N` DNATs through `backends` keyed by `ct mark . numgen random mod N`: one hash lookup.
//!   (`service-ips6`, `pick6-…-N`, `backends6` and so on for IPv6: a dual-stack service has elements
//!   in both families, each family's addresses going to that family's endpoints.)
//! - Services with ClientIP affinity get their own chains with per-endpoint timed sets instead.
//! - `no-endpoint-services` / `no-endpoint-nodeports` reject traffic to ports without endpoints.
//! - `hairpin` (`mark . ipv4_addr . ipv4_addr`) holds `id . ep . ep` for each endpoint address of
//!   each service port: after DNAT, a packet whose source is the endpoint it was sent to (a pod
//!   reaching its own Service) matches `ct mark . ip saddr . ip daddr` and is masqueraded, as
//!   kube-proxy's per-endpoint `ip saddr <ep> jump mark-for-masquerade` does. Without it the pod
//!   answers itself directly, not through the node, and the connection never completes.
//!   External traffic (node ports, external IPs) is masqueraded unless its policy is `Local`.

use crate::table::{Affinity, Endpoint, Protocol, ProxyService, ServicePortName};
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};

/// The mark external traffic carries to be masqueraded on its way out.
pub(super) const MASQ_MARK: u32 = 0x4000;

/// The table's address family in `nft` syntax and (for netlink) its `NFPROTO_*` number.
pub(super) const TABLE_FAMILY: &str = "inet";

/// The address family of a map, pick chain or affinity chain inside the `inet` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Family {
    V4,
    V6,
}

impl Family {
    const ALL: [Family; 2] = [Family::V4, Family::V6];

    pub(super) fn of(ip: &IpAddr) -> Self {
        if ip.is_ipv4() { Self::V4 } else { Self::V6 }
    }

    fn index(self) -> usize {
        match self {
            Self::V4 => 0,
            Self::V6 => 1,
        }
    }

    /// What the family's names carry (nothing for IPv4, so its names are those of the IPv4-only layout).
    fn suffix(self) -> &'static str {
        ["", "6"][self.index()]
    }

    /// The family's payload keyword (`ip daddr`, `ip6 saddr`, `dnat ip to`).
    fn ip(self) -> &'static str {
        ["ip", "ip6"][self.index()]
    }

    fn addr_type(self) -> &'static str {
        ["ipv4_addr", "ipv6_addr"][self.index()]
    }

    /// Loopback destinations, where node ports are not served (as kube-proxy).
    fn loopback(self) -> &'static str {
        ["127.0.0.0/8", "::1"][self.index()]
    }
}

/// The maps of one family (`&'static` so elements can name them cheaply).
pub(super) struct Maps {
    pub service_ids: &'static str,
    pub nodeport_ids: &'static str,
    pub service_ips: &'static str,
    pub service_nodeports: &'static str,
    pub backends: &'static str,
    pub no_endpoint_services: &'static str,
    pub no_endpoint_nodeports: &'static str,
    pub hairpin: &'static str,
}

const MAPS: [Maps; 2] = [
    Maps {
        service_ids: "service-ids",
        nodeport_ids: "nodeport-ids",
        service_ips: "service-ips",
        service_nodeports: "service-nodeports",
        backends: "backends",
        no_endpoint_services: "no-endpoint-services",
        no_endpoint_nodeports: "no-endpoint-nodeports",
        hairpin: "hairpin",
    },
    Maps {
        service_ids: "service-ids6",
        nodeport_ids: "nodeport-ids6",
        service_ips: "service-ips6",
        service_nodeports: "service-nodeports6",
        backends: "backends6",
        no_endpoint_services: "no-endpoint-services6",
        no_endpoint_nodeports: "no-endpoint-nodeports6",
        hairpin: "hairpin6",
    },
];

pub(super) fn maps(family: Family) -> &'static Maps {
    &MAPS[family.index()]
}

impl Maps {
    /// Every map and set of the family: `map` or `set`, its name and its type.
    fn declarations(&self, f: Family) -> [(&'static str, &'static str, String); 8] {
        let (ip, addr) = (f.ip(), f.addr_type());
        let by_addr = |value: &str| format!("type {addr} . inet_proto . inet_service : {value}");
        let by_port = |value: &str| format!("type inet_proto . inet_service : {value}");
        [
            ("map", self.service_ids, by_addr("mark")),
            ("map", self.nodeport_ids, by_port("mark")),
            ("map", self.service_ips, by_addr("verdict")),
            ("map", self.service_nodeports, by_port("verdict")),
            ("map", self.backends, format!("typeof ct mark . numgen random mod 2 : {ip} daddr . tcp dport")),
            ("map", self.no_endpoint_services, by_addr("verdict")),
            ("map", self.no_endpoint_nodeports, by_port("verdict")),
            ("set", self.hairpin, format!("type mark . {addr} . {addr}")),
        ]
    }
}

/// The smallest `size` a map is declared with.
const MIN_CAPACITY: usize = 1024;

/// The `size` a map is declared with at a full sync where it gets `count` elements: room to double.
///
/// A map with a size is a hash table the kernel sizes once; without one it starts at four buckets
/// and grows in the background, so a fill of 100,000 elements in one transaction spent most of
/// its time inserting into overfull tables (`rhashtable_insert_slow`: programming 10,000 services
/// took 540–600 ms, 310–400 ms sized). The size is also a limit: a diff that would pass it is
/// applied as a full sync, which sizes the maps anew.
pub(super) fn capacity(count: usize) -> usize {
    count.saturating_mul(2).next_power_of_two().max(MIN_CAPACITY)
}

/// Every map and set name of both families.
pub(super) fn all_maps() -> impl Iterator<Item = &'static str> {
    Family::ALL.into_iter().flat_map(|f| maps(f).declarations(f).map(|(_, name, _)| name))
}

/// Elements per map name.
pub(super) fn counts<'a>(elements: impl IntoIterator<Item = &'a Element>) -> HashMap<&'static str, usize> {
    let mut out = HashMap::new();
    for e in elements {
        *out.entry(e.map).or_default() += 1;
    }
    out
}

/// Which traffic to cluster IPs is masqueraded (see `NftablesConfig::cluster_cidrs`).
pub(super) struct ClusterMasquerade<'a> {
    /// All of it.
    pub all: bool,
    /// What does not come from these ranges (none: nothing).
    pub unless_from: &'a [super::Cidr],
}

impl ClusterMasquerade<'_> {
    /// The rule of `family` (with its `services` chain indent), or nothing.
    fn rule(&self, family: Family, ids: &str) -> String {
        let ip = family.ip();
        let to_service = format!("{ip} daddr . meta l4proto . th dport @{ids} jump mark-for-masquerade");
        if self.all {
            return format!("    {to_service}\n");
        }
        let ranges: Vec<String> = self.unless_from.iter().filter(|c| Family::of(&c.addr()) == family).map(ToString::to_string).collect();
        match ranges.as_slice() {
            [] => String::new(),
            [one] => format!("    {ip} saddr != {one} {to_service}\n"),
            many => format!("    {ip} saddr != {{ {} }} {to_service}\n", many.join(", ")),
        }
    }
}

/// The base table: maps (each declared with the `size` `capacity` gives it), dispatch and hook
/// chains (no service in it yet).
pub(super) fn base(table: &str, capacity: &HashMap<&'static str, usize>, masquerade: &ClusterMasquerade<'_>) -> String {
    let size = |map: &str| capacity.get(map).copied().unwrap_or(MIN_CAPACITY);
    let mut maps_text = String::new();
    let mut services = String::new();
    let mut filter = String::new();
    let mut hairpin = String::new();
    for f in Family::ALL {
        let m = maps(f);
        let (ip, lo) = (f.ip(), f.loopback());
        for (kind, name, ty) in m.declarations(f) {
            let _ = writeln!(maps_text, "  {kind} {name} {{ {ty} ; size {} ; }}", size(name));
        }
        let _ = write!(
            services,
            "    ct mark set {ip} daddr . meta l4proto . th dport map @{}
{}    {ip} daddr . meta l4proto . th dport vmap @{}
    {ip} daddr != {lo} fib daddr type local ct mark set meta l4proto . th dport map @{}
    {ip} daddr != {lo} fib daddr type local meta l4proto . th dport vmap @{}
",
            m.service_ids,
            masquerade.rule(f, m.service_ids),
            m.service_ips,
            m.nodeport_ids,
            m.service_nodeports
        );
        let _ = write!(
            filter,
            "    {ip} daddr . meta l4proto . th dport vmap @{}
    {ip} daddr != {lo} fib daddr type local meta l4proto . th dport vmap @{}
",
            m.no_endpoint_services, m.no_endpoint_nodeports
        );
        let _ = writeln!(hairpin, "    ct mark . {ip} saddr . {ip} daddr @{} jump mark-for-masquerade", m.hairpin);
    }
    format!(
        "table {TABLE_FAMILY} {table} {{
{maps_text}  chain reject-chain {{ reject ; }}
  chain mark-for-masquerade {{ meta mark set meta mark | {MASQ_MARK:#x} ; }}
  chain services {{
{services}  }}
  chain filter-endpoints {{
{filter}  }}
  chain nat-prerouting {{ type nat hook prerouting priority dstnat ; policy accept ; jump services ; }}
  chain nat-output {{ type nat hook output priority -100 ; policy accept ; jump services ; }}
  chain nat-postrouting {{
    type nat hook postrouting priority srcnat ; policy accept ;
{hairpin}    meta mark & {MASQ_MARK:#x} == 0 return
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

/// The service's address families: those of its cluster IPs (IPv4 when it has none).
fn families(svc: &ProxyService) -> BTreeSet<Family> {
    let mut out: BTreeSet<Family> = svc.cluster_ips.iter().map(Family::of).collect();
    if out.is_empty() {
        out.insert(Family::V4);
    }
    out
}

fn ips_of(ips: &[IpAddr], family: Family) -> impl Iterator<Item = IpAddr> + '_ {
    ips.iter().copied().filter(move |ip| Family::of(ip) == family)
}

fn endpoints_of(eps: &[Endpoint], family: Family) -> Vec<SocketAddr> {
    eps.iter().map(|e| e.addr).filter(|a| Family::of(&a.ip()) == family).collect()
}

fn l4(p: Protocol) -> &'static str {
    p.as_lower()
}

/// A shared endpoint-picking chain: `pick[-masq]-<proto>-<n>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Pick {
    pub family: Family,
    pub protocol: Protocol,
    pub n: usize,
    pub masquerade: bool,
}

impl Pick {
    pub(super) fn name(&self) -> String {
        format!("pick{}-{}{}-{}", self.family.suffix(), if self.masquerade { "masq-" } else { "" }, l4(self.protocol), self.n)
    }

    pub(super) fn write(&self, out: &mut String, table: &str) {
        let name = self.name();
        let _ = writeln!(out, "add chain {TABLE_FAMILY} {table} {name}");
        if self.masquerade {
            let _ = writeln!(out, "add rule {TABLE_FAMILY} {table} {name} jump mark-for-masquerade");
        }
        let _ = writeln!(
            out,
            "add rule {TABLE_FAMILY} {table} {name} meta l4proto {} dnat {} to ct mark . numgen random mod {} map @{}",
            l4(self.protocol),
            self.family.ip(),
            self.n,
            maps(self.family).backends
        );
    }
}

/// The key of a map element.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Key {
    /// `ipv4_addr . inet_proto . inet_service` or `ipv6_addr . …` (cluster and external IPs).
    Addr(IpAddr, Protocol, u16),
    /// `inet_proto . inet_service` (node ports).
    Port(Protocol, u16),
    /// `mark . numgen` (`backends`: a service port's id and an endpoint's index).
    Backend(u32, u32),
    /// `mark . addr . addr` (`hairpin`: a service port's id and an endpoint address, twice).
    Hairpin(u32, IpAddr),
}

/// The value of a map element.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Value {
    /// A conntrack mark (a service port's id).
    Mark(u32),
    /// A verdict: `goto <chain>`.
    Goto(String),
    /// A DNAT target: `ipv4_addr . inet_service` or `ipv6_addr . inet_service`.
    Target(SocketAddr),
    /// None: the element of a set (`hairpin`).
    Member,
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
            Self::Hairpin(id, ip) => write!(f, "{id} . {ip} . {ip}"),
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Mark(m) => write!(f, "{m}"),
            Self::Goto(chain) => write!(f, "goto {chain}"),
            Self::Target(ep) => write!(f, "{} . {}", ep.ip(), ep.port()),
            Self::Member => Ok(()),
        }
    }
}

/// The numeric ids of a service port's cluster and external traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ids {
    pub cluster: u32,
    pub external: u32,
}

/// Every map element a service port needs, and the pick chains they jump to: per address family of
/// its cluster IPs, that family's addresses to that family's endpoints.
pub(super) fn elements(svc: &ProxyService, ids: Ids, picks: &mut BTreeSet<Pick>) -> BTreeSet<Element> {
    let mut out = BTreeSet::new();
    for family in families(svc) {
        family_elements(svc, ids, family, picks, &mut out);
    }
    out
}

fn family_elements(svc: &ProxyService, ids: Ids, family: Family, picks: &mut BTreeSet<Pick>, out: &mut BTreeSet<Element>) {
    let m = maps(family);
    let p = svc.name.protocol;
    let port = svc.port;
    let sid = id(&svc.name);
    let affinity = timeout(svc).is_some();
    let cluster = endpoints_of(&svc.cluster_endpoints, family);
    let external = endpoints_of(&svc.external_endpoints, family);
    let mut verdict = |eps: &[SocketAddr], id: u32, kind: &str, masquerade: bool, out: &mut BTreeSet<Element>| -> Value {
        if affinity {
            return Value::Goto(format!("{kind}{}-{sid}", family.suffix()));
        }
        for (i, ep) in (0u32..).zip(eps) {
            out.insert(Element::new(m.backends, Key::Backend(id, i), Value::Target(*ep)));
        }
        let pick = Pick { family, protocol: svc.name.protocol, n: eps.len(), masquerade };
        let v = Value::Goto(pick.name());
        picks.insert(pick);
        v
    };
    let cluster_verdict = (!cluster.is_empty()).then(|| verdict(&cluster, ids.cluster, "svc", false, out));
    let has_ext = svc.node_port.is_some() || !svc.external_ips.is_empty();
    let external_verdict = (has_ext && !external.is_empty()).then(|| verdict(&external, ids.external, "ext", !svc.external_local, out));
    // Hairpin: each endpoint address of a path that is not masqueraded anyway.
    let hairpin = |eps: &[SocketAddr], id: u32, out: &mut BTreeSet<Element>| {
        for ep in eps {
            out.insert(Element::new(m.hairpin, Key::Hairpin(id, ep.ip()), Value::Member));
        }
    };
    if cluster_verdict.is_some() {
        hairpin(&cluster, ids.cluster, out);
    }
    if external_verdict.is_some() && svc.external_local {
        hairpin(&external, ids.external, out);
    }
    let reject = || Value::Goto("reject-chain".into());
    for ip in ips_of(&svc.cluster_ips, family) {
        let key = Key::Addr(ip, p, port);
        match &cluster_verdict {
            Some(v) => {
                out.insert(Element::new(m.service_ids, key.clone(), Value::Mark(ids.cluster)));
                out.insert(Element::new(m.service_ips, key, v.clone()));
            }
            None => {
                out.insert(Element::new(m.no_endpoint_services, key, reject()));
            }
        }
    }
    let ext_keys =
        ips_of(&svc.external_ips, family).map(|ip| (m.service_ids, m.service_ips, m.no_endpoint_services, Key::Addr(ip, p, port)));
    let np_keys = svc.node_port.map(|np| (m.nodeport_ids, m.service_nodeports, m.no_endpoint_nodeports, Key::Port(p, np)));
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
}

/// Writes `add element` / `delete element` statements, grouped per map, at most `chunk` per statement.
pub(super) fn write_elements<'a>(out: &mut String, table: &str, verb: &str, elements: impl IntoIterator<Item = &'a Element>, chunk: usize) {
    let mut by_map: std::collections::BTreeMap<&str, Vec<&Element>> = std::collections::BTreeMap::new();
    for e in elements {
        by_map.entry(e.map).or_default().push(e);
    }
    for (map, elems) in by_map {
        for group in elems.chunks(chunk.max(1)) {
            let _ = write!(out, "{verb} element {TABLE_FAMILY} {table} {map} {{ ");
            for (i, e) in group.iter().enumerate() {
                let sep = if i == 0 { "" } else { ", " };
                if verb == "add" && e.value != Value::Member {
                    let _ = write!(out, "{sep}{} : {}", e.key, e.value);
                } else {
                    let _ = write!(out, "{sep}{}", e.key);
                }
            }
            out.push_str(" }\n");
        }
    }
}

/// The affinity chains of a service port, when it has affinity (per address family).
pub(super) fn affinity_chains(out: &mut String, table: &str, old: Option<&ProxyService>, new: Option<&ProxyService>) {
    let old = old.filter(|o| timeout(o).is_some());
    let new = new.filter(|n| timeout(n).is_some());
    for family in Family::ALL {
        let in_family = |s: &&ProxyService| families(s).contains(&family);
        chains(out, table, family, old.filter(in_family), new.filter(in_family));
    }
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

/// Endpoints of a family that get an endpoint chain and an affinity set (services with ClientIP affinity only).
fn affinity_endpoints(svc: &ProxyService, family: Family) -> Vec<SocketAddr> {
    if timeout(svc).is_none() {
        return Vec::new();
    }
    let mut all: Vec<SocketAddr> =
        endpoints_of(&svc.cluster_endpoints, family).into_iter().chain(endpoints_of(&svc.external_endpoints, family)).collect();
    all.sort();
    all.dedup();
    all
}

/// An endpoint's part of chain and set names (`:` is not allowed in nft names: IPv6 colons become `_`).
fn ep_name(id: &str, ep: SocketAddr) -> String {
    format!("{id}/{}/{}", ep.ip().to_string().replace(':', "_"), ep.port())
}

/// Commands that bring a service port's chains of one family from `old` (None: nothing yet) to
/// `new` (None: gone). Order matters inside the one transaction: new endpoint chains first, then the
/// service chains that reference them, then whatever nothing references any more.
fn chains(out: &mut String, table: &str, family: Family, old: Option<&ProxyService>, new: Option<&ProxyService>) {
    let Some(svc) = new.or(old) else { return };
    let t = format!("{TABLE_FAMILY} {table}");
    let id = id(&svc.name);
    let (ip, sfx) = (family.ip(), family.suffix());
    let old_eps = old.map(|o| affinity_endpoints(o, family)).unwrap_or_default();
    let new_eps = new.map(|n| affinity_endpoints(n, family)).unwrap_or_default();
    if let Some(new) = new {
        if let Some(secs) = timeout(new) {
            let old_t = old.and_then(timeout);
            for ep in &new_eps {
                let name = ep_name(&id, *ep);
                if old_eps.contains(ep) && old_t == Some(secs) {
                    continue;
                }
                if old_eps.contains(ep) {
                    // The timeout changed: recreate the set.
                    let _ = writeln!(out, "flush chain {t} ep-{name}");
                    let _ = writeln!(out, "delete set {t} aff-{name}");
                } else {
                    let _ = writeln!(out, "add chain {t} ep-{name}");
                }
                let _ =
                    writeln!(out, "add set {t} aff-{name} {{ type {} ; flags dynamic,timeout ; timeout {secs}s ; }}", family.addr_type());
                let _ = writeln!(
                    out,
                    "add rule {t} ep-{name} update @aff-{name} {{ {ip} saddr }} meta l4proto {} dnat {ip} to {ep}",
                    l4(new.name.protocol)
                );
            }
        }
        let svc_exists = old.is_some();
        let ext_exists = old.is_some_and(wants_ext);
        let cluster = endpoints_of(&new.cluster_endpoints, family);
        chain(out, &t, family, &id, &format!("svc{sfx}"), &cluster, false, svc_exists);
        if wants_ext(new) {
            let external = endpoints_of(&new.external_endpoints, family);
            chain(out, &t, family, &id, &format!("ext{sfx}"), &external, !new.external_local, ext_exists);
        } else if ext_exists {
            delete_chain(out, &t, &format!("ext{sfx}-{id}"));
        }
    } else if let Some(old) = old {
        delete_chain(out, &t, &format!("svc{sfx}-{id}"));
        if wants_ext(old) {
            delete_chain(out, &t, &format!("ext{sfx}-{id}"));
        }
    }
    for ep in old_eps.iter().filter(|e| !new_eps.contains(e)) {
        let name = ep_name(&id, *ep);
        delete_chain(out, &t, &format!("ep-{name}"));
        let _ = writeln!(out, "delete set {t} aff-{name}");
    }
}

/// An affinity service's `svc-`/`ext-` chain: stick to a remembered endpoint, else pick one at random.
#[allow(clippy::too_many_arguments)]
fn chain(out: &mut String, t: &str, family: Family, id: &str, kind: &str, eps: &[SocketAddr], masquerade: bool, existing: bool) {
    let name = format!("{kind}-{id}");
    if existing {
        let _ = writeln!(out, "flush chain {t} {name}");
    } else {
        let _ = writeln!(out, "add chain {t} {name}");
    }
    if masquerade {
        let _ = writeln!(out, "add rule {t} {name} jump mark-for-masquerade");
    }
    if eps.is_empty() {
        return;
    }
    for ep in eps {
        let e = ep_name(id, *ep);
        let _ = writeln!(out, "add rule {t} {name} {} saddr @aff-{e} goto ep-{e}", family.ip());
    }
    let mut map = String::new();
    for (i, ep) in eps.iter().enumerate() {
        let _ = write!(map, "{}{i} : goto ep-{}", if i == 0 { "" } else { ", " }, ep_name(id, *ep));
    }
    let _ = writeln!(out, "add rule {t} {name} numgen random mod {} vmap {{ {map} }}", eps.len());
}

fn delete_chain(out: &mut String, t: &str, name: &str) {
    let _ = writeln!(out, "flush chain {t} {name}");
    let _ = writeln!(out, "delete chain {t} {name}");
}
