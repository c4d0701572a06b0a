use super::*;
use crate::table::{Affinity, Endpoint, Protocol};
use std::net::SocketAddr;

fn svc(name: &str, vip: &str, eps: &[&str]) -> ProxyService {
    let eps: Vec<Endpoint> = eps.iter().map(|a| Endpoint::ready(a.parse::<SocketAddr>().expect("addr"))).collect();
    let name = ServicePortName { namespace: "ns".into(), name: name.into(), port: "http".into(), protocol: Protocol::Tcp };
    ProxyService::new(name, vec![vip.parse().expect("ip")], 80, eps)
}

fn diff(up: Vec<ProxyService>, removed: Vec<ServicePortName>) -> TableDiff {
    TableDiff { full: false, upserted: up.into_iter().map(Arc::new).collect(), removed }
}

fn incremental(p: &NftablesProxy, state: &mut State, d: &TableDiff) -> String {
    let inc = p.incremental(state, d);
    let script = inc.script(&p.config.table);
    state.picks = inc.picks;
    for (name, r) in inc.records {
        match r {
            Some(r) => {
                state.ports.insert(name, r);
            }
            None => {
                state.ports.remove(&name);
            }
        }
    }
    script
}

#[test]
fn an_endpoint_change_touches_only_that_endpoints_backend_element() {
    let p = NftablesProxy::new(NftablesConfig::default());
    let mut state = State::default();
    incremental(&p, &mut state, &diff(vec![svc("web", "10.96.0.1", &["10.1.0.1:8080", "10.1.0.2:8080"])], vec![]));
    let s = incremental(&p, &mut state, &diff(vec![svc("web", "10.96.0.1", &["10.1.0.1:8080", "10.1.0.3:8080"])], vec![]));
    assert_eq!(
        s,
        "delete element inet bosun backends { 1 . 1 }\ndelete element inet bosun hairpin { 1 . 10.1.0.2 . 10.1.0.2 }\n\
         add element inet bosun backends { 1 . 1 : 10.1.0.3 . 8080 }\nadd element inet bosun hairpin { 1 . 10.1.0.3 . 10.1.0.3 }\n"
    );
    assert!(!s.contains("chain"), "no chain is written for an endpoint change: {s}");
}

#[test]
fn traffic_dnatted_back_to_its_sender_is_masqueraded() {
    let p = NftablesProxy::new(NftablesConfig::default());
    let mut dual = svc("dual", "10.96.0.5", &["10.1.0.1:80", "10.1.0.1:81", "[fd00:1::1]:80"]);
    dual.cluster_ips.push("fd00:96::5".parse().expect("ip"));
    let s = p.full_script(&[Arc::new(dual)]);
    assert!(s.contains("ct mark . ip saddr . ip daddr @hairpin jump mark-for-masquerade"), "{s}");
    assert!(s.contains("ct mark . ip6 saddr . ip6 daddr @hairpin6 jump mark-for-masquerade"), "{s}");
    // One element per endpoint address (two ports of one pod share it), in the family's set.
    assert!(s.contains("add element inet bosun hairpin { 1 . 10.1.0.1 . 10.1.0.1 }"), "{s}");
    assert!(s.contains("add element inet bosun hairpin6 { 1 . fd00:1::1 . fd00:1::1 }"), "{s}");
}

#[test]
fn external_traffic_is_masqueraded_unless_local_which_keeps_hairpin_masquerade() {
    let p = NftablesProxy::new(NftablesConfig::default());
    let mut cluster = svc("cluster", "10.96.0.6", &["10.1.0.1:80"]);
    cluster.node_port = Some(30006);
    let mut local = svc("local", "10.96.0.7", &["10.1.0.2:80"]);
    local.node_port = Some(30007);
    local.external_local = true;
    let s = p.full_script(&[Arc::new(cluster), Arc::new(local)]);
    assert!(s.contains("add rule inet bosun pick-masq-tcp-1 jump mark-for-masquerade"), "{s}");
    assert!(s.contains("service-nodeports { tcp . 30006 : goto pick-masq-tcp-1, tcp . 30007 : goto pick-tcp-1 }"), "{s}");
    // Ids: cluster 1/2 (cluster, external), local 3/4; only the local external path needs hairpin elements.
    assert!(s.contains("hairpin { 1 . 10.1.0.1 . 10.1.0.1, 3 . 10.1.0.2 . 10.1.0.2, 4 . 10.1.0.2 . 10.1.0.2 }"), "{s}");
}

#[test]
fn a_new_service_adds_only_map_elements_and_a_removed_one_deletes_them() {
    let p = NftablesProxy::new(NftablesConfig::default().table("t"));
    let mut state = State::default();
    let new = svc("api", "10.96.0.2", &["10.1.0.3:9090"]);
    let s = incremental(&p, &mut state, &diff(vec![new.clone()], vec![]));
    assert!(s.contains("add chain inet t pick-tcp-1"), "the shared pick chain appears once: {s}");
    assert!(s.contains("add element inet t service-ips { 10.96.0.2 . tcp . 80 : goto pick-tcp-1 }"), "{s}");
    assert!(s.contains("add element inet t service-ids { 10.96.0.2 . tcp . 80 : 1 }"), "{s}");
    assert!(s.contains("add element inet t backends { 1 . 0 : 10.1.0.3 . 9090 }"), "{s}");
    let s = incremental(&p, &mut state, &diff(vec![svc("api2", "10.96.0.3", &["10.1.0.4:9090"])], vec![]));
    assert!(!s.contains("chain"), "{s}");
    let s = incremental(&p, &mut state, &diff(vec![], vec![new.name.clone()]));
    assert!(s.contains("delete element inet t service-ips { 10.96.0.2 . tcp . 80 }"), "{s}");
    assert!(s.contains("delete element inet t backends { 1 . 0 }"), "{s}");
    assert!(!s.contains("add "), "{s}");
}

#[test]
fn a_service_without_endpoints_is_rejected_instead_of_dnatted() {
    let p = NftablesProxy::new(NftablesConfig::default());
    let mut state = State::default();
    let s = incremental(&p, &mut state, &diff(vec![svc("empty", "10.96.0.3", &[])], vec![]));
    assert!(s.contains("add element inet bosun no-endpoint-services { 10.96.0.3 . tcp . 80 : goto reject-chain }"), "{s}");
    assert!(!s.contains("service-ips"), "{s}");
}

#[test]
fn affinity_services_get_endpoint_chains_with_timed_sets() {
    let p = NftablesProxy::new(NftablesConfig::default());
    let mut s1 = svc("sticky", "10.96.0.4", &["10.1.0.1:80", "10.1.0.2:80"]);
    s1.affinity = Affinity::ClientIp { timeout: std::time::Duration::from_secs(30) };
    let s = p.full_script(&[Arc::new(s1)]);
    assert!(
        s.contains("add set inet bosun aff-ns/sticky/tcp/http/10.1.0.1/80 { type ipv4_addr ; flags dynamic,timeout ; timeout 30s ; }"),
        "{s}"
    );
    assert!(s.contains("ip saddr @aff-ns/sticky/tcp/http/10.1.0.2/80 goto ep-ns/sticky/tcp/http/10.1.0.2/80"), "{s}");
    assert!(s.contains("numgen random mod 2 vmap"), "{s}");
    assert!(s.contains("service-ips { 10.96.0.4 . tcp . 80 : goto svc-ns/sticky/tcp/http }"), "{s}");
}

#[test]
fn a_dual_stack_service_sends_each_family_to_its_own_endpoints() {
    let p = NftablesProxy::new(NftablesConfig::default());
    let mut state = State::default();
    let mut dual = svc("dual", "10.96.0.5", &["10.1.0.1:80", "[fd00:1::1]:80", "[fd00:1::2]:80"]);
    dual.cluster_ips.push("fd00:96::5".parse().expect("ip"));
    let s = incremental(&p, &mut state, &diff(vec![dual], vec![]));
    assert!(s.contains("add element inet bosun service-ips { 10.96.0.5 . tcp . 80 : goto pick-tcp-1 }"), "{s}");
    assert!(s.contains("add element inet bosun service-ips6 { fd00:96::5 . tcp . 80 : goto pick6-tcp-2 }"), "{s}");
    assert!(s.contains("add element inet bosun backends { 1 . 0 : 10.1.0.1 . 80 }"), "{s}");
    assert!(s.contains("add element inet bosun backends6 { 1 . 0 : fd00:1::1 . 80, 1 . 1 : fd00:1::2 . 80 }"), "{s}");
    assert!(s.contains("add rule inet bosun pick6-tcp-2 meta l4proto tcp dnat ip6 to ct mark . numgen random mod 2 map @backends6"), "{s}");
    assert!(!s.contains("backends { 1 . 1"), "IPv6 endpoints stay out of the IPv4 map: {s}");
}

#[test]
fn ipv6_affinity_chains_have_nft_safe_names() {
    let p = NftablesProxy::new(NftablesConfig::default());
    let mut s1 = svc("sticky", "fd00:96::4", &["[fd00:1::1]:80"]);
    s1.affinity = Affinity::ClientIp { timeout: std::time::Duration::from_secs(30) };
    let s = p.full_script(&[Arc::new(s1)]);
    assert!(
        s.contains("add set inet bosun aff-ns/sticky/tcp/http/fd00_1__1/80 { type ipv6_addr ; flags dynamic,timeout ; timeout 30s ; }"),
        "{s}"
    );
    assert!(s.contains("update @aff-ns/sticky/tcp/http/fd00_1__1/80 { ip6 saddr } meta l4proto tcp dnat ip6 to [fd00:1::1]:80"), "{s}");
    assert!(s.contains("service-ips6 { fd00:96::4 . tcp . 80 : goto svc6-ns/sticky/tcp/http }"), "{s}");
    assert!(!s.contains("svc-ns/sticky"), "no IPv4 chain for an IPv6-only service: {s}");
}

#[test]
fn maps_are_declared_with_room_to_double_what_the_full_sync_puts_in_them() {
    assert_eq!(script::capacity(0), 1024);
    assert_eq!(script::capacity(600), 2048);
    assert_eq!(script::capacity(100_000), 262_144);
    let p = NftablesProxy::new(NftablesConfig::default());
    // 700 services of 2 endpoints: 700 ids and addresses, 1,400 backends and hairpin elements.
    let services: Vec<Arc<ProxyService>> = (0..700u32)
        .map(|i| {
            let vip = format!("10.96.{}.{}", i / 250, i % 250 + 1);
            let eps = [format!("10.1.{}.{}:80", i / 250, i % 250 + 1), format!("10.2.{}.{}:80", i / 250, i % 250 + 1)];
            Arc::new(svc(&format!("s{i}"), &vip, &[eps[0].as_str(), eps[1].as_str()]))
        })
        .collect();
    let (text, all, state) = p.full("bosun", &services);
    let declared = |map: &str| -> usize {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("map {map} {{")) || l.trim_start().starts_with(&format!("set {map} {{")));
        let line = line.unwrap_or_else(|| panic!("{map} declared in:\n{text}"));
        line.split("size ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("size in {line}"))
    };
    assert_eq!(declared("service-ids"), 2048);
    assert_eq!(declared("service-ips"), 2048);
    assert_eq!(declared("backends"), 4096);
    assert_eq!(declared("hairpin"), 4096);
    assert_eq!(declared("backends6"), 1024, "an empty map gets the smallest size");
    assert_eq!(state.counts.get("backends"), Some(&1400));
    assert_eq!(state.capacity.get("backends"), Some(&4096));
    assert_eq!(all.len(), 700 * 2 + 1400 * 2);
}

#[test]
fn cluster_ip_traffic_from_outside_the_cluster_cidrs_is_masqueraded_per_family() {
    let services = [Arc::new(svc("web", "10.96.0.1", &["10.1.0.1:8080"]))];
    let none = NftablesProxy::new(NftablesConfig::default()).full_script(&services);
    assert!(!none.contains("@service-ids jump mark-for-masquerade"), "no CIDR, no masquerade-all: sources are kept:\n{none}");
    let cidrs: Vec<Cidr> = ["10.244.0.0/16", "10.245.0.0/16", "fd00:10::/56"].iter().map(|c| c.parse().expect("cidr")).collect();
    let script = NftablesProxy::new(NftablesConfig::default().cluster_cidrs(cidrs)).full_script(&services);
    assert!(
        script.contains(
            "    ip saddr != { 10.244.0.0/16, 10.245.0.0/16 } ip daddr . meta l4proto . th dport @service-ids jump mark-for-masquerade\n"
        ),
        "{script}"
    );
    assert!(
        script.contains("    ip6 saddr != fd00:10::/56 ip6 daddr . meta l4proto . th dport @service-ids6 jump mark-for-masquerade\n"),
        "{script}"
    );
    let all = NftablesProxy::new(NftablesConfig::default().masquerade_all(true)).full_script(&services);
    assert!(all.contains("    ip daddr . meta l4proto . th dport @service-ids jump mark-for-masquerade\n"), "{all}");
    assert!(all.contains("    ip6 daddr . meta l4proto . th dport @service-ids6 jump mark-for-masquerade\n"), "{all}");
}

#[test]
fn cidrs_parse_and_refuse_what_is_not_one() {
    let c: Cidr = "10.244.0.0/16".parse().expect("cidr");
    assert_eq!((c.addr(), c.prefix(), c.to_string()), ("10.244.0.0".parse().expect("ip"), 16, "10.244.0.0/16".to_owned()));
    assert_eq!("fd00:10::/56".parse::<Cidr>().expect("cidr").prefix(), 56);
    for bad in ["10.244.0.0", "10.244.0.0/33", "fd00::/129", "nope/8", "10.0.0.0/x", ""] {
        let err = bad.parse::<Cidr>().expect_err(bad);
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
    }
}
