use super::*;
use crate::table::{Affinity, Endpoint, Protocol};
use std::net::SocketAddr;

fn svc(name: &str, vip: &str, eps: &[&str]) -> ProxyService {
    let eps: Vec<Endpoint> = eps
        .iter()
        .map(|a| Endpoint {
            addr: a.parse::<SocketAddr>().expect("addr"),
            node_name: None,
            zone: None,
            ready: true,
            serving: true,
            terminating: false,
            zone_hints: Vec::new(),
        })
        .collect();
    ProxyService {
        name: ServicePortName { namespace: "ns".into(), name: name.into(), port: "http".into(), protocol: Protocol::Tcp },
        cluster_ips: vec![vip.parse().expect("ip")],
        port: 80,
        node_port: None,
        external_ips: Vec::new(),
        affinity: Affinity::None,
        internal_local: false,
        external_local: false,
        cluster_endpoints: eps.clone(),
        external_endpoints: eps,
    }
}

fn diff(up: Vec<ProxyService>, removed: Vec<ServicePortName>) -> TableDiff {
    TableDiff { full: false, upserted: up.into_iter().map(Arc::new).collect(), removed }
}

#[test]
fn an_endpoint_change_rewrites_one_chain_and_leaves_the_maps_alone() {
    let p = NftablesProxy::new(NftablesConfig::default());
    let old = svc("web", "10.96.0.1", &["10.1.0.1:8080", "10.1.0.2:8080"]);
    let programmed: HashMap<_, _> = [(old.name.clone(), Arc::new(old))].into_iter().collect();
    let s = p.diff_script(&programmed, &diff(vec![svc("web", "10.96.0.1", &["10.1.0.1:8080"])], vec![]));
    assert_eq!(s.lines().count(), 2, "{s}");
    assert!(s.contains("flush chain ip bosun svc-ns/web/tcp/http"), "{s}");
    assert!(s.contains("meta l4proto tcp dnat to numgen random mod 1 map { 0 : 10.1.0.1 . 8080 }"), "{s}");
    assert!(!s.contains("element"), "{s}");
}

#[test]
fn a_new_service_adds_a_chain_and_a_map_element_and_a_removed_one_deletes_them() {
    let p = NftablesProxy::new(NftablesConfig::default().table("t"));
    let new = svc("api", "10.96.0.2", &["10.1.0.3:9090"]);
    let s = p.diff_script(&HashMap::new(), &diff(vec![new.clone()], vec![]));
    assert!(s.contains("add chain ip t svc-ns/api/tcp/http"), "{s}");
    assert!(s.contains("add element ip t service-ips { 10.96.0.2 . tcp . 80 : goto svc-ns/api/tcp/http }"), "{s}");
    let programmed: HashMap<_, _> = [(new.name.clone(), Arc::new(new.clone()))].into_iter().collect();
    let s = p.diff_script(&programmed, &diff(vec![], vec![new.name.clone()]));
    let del_elem = s.find("delete element ip t service-ips").expect("element deleted");
    let del_chain = s.find("delete chain ip t svc-ns/api/tcp/http").expect("chain deleted");
    assert!(del_elem < del_chain, "the reference goes before the chain: {s}");
}

#[test]
fn a_service_without_endpoints_is_rejected_instead_of_dnatted() {
    let p = NftablesProxy::new(NftablesConfig::default());
    let s = p.diff_script(&HashMap::new(), &diff(vec![svc("empty", "10.96.0.3", &[])], vec![]));
    assert!(s.contains("add element ip bosun no-endpoint-services { 10.96.0.3 . tcp . 80 : goto reject-chain }"), "{s}");
    assert!(!s.contains("service-ips"), "{s}");
}

#[test]
fn affinity_services_get_endpoint_chains_with_timed_sets() {
    let p = NftablesProxy::new(NftablesConfig::default());
    let mut s1 = svc("sticky", "10.96.0.4", &["10.1.0.1:80", "10.1.0.2:80"]);
    s1.affinity = Affinity::ClientIp { timeout: std::time::Duration::from_secs(30) };
    let s = p.full_script([&s1]);
    assert!(
        s.contains("add set ip bosun aff-ns/sticky/tcp/http/10.1.0.1/80 { type ipv4_addr ; flags dynamic,timeout ; timeout 30s ; }"),
        "{s}"
    );
    assert!(s.contains("ip saddr @aff-ns/sticky/tcp/http/10.1.0.2/80 goto ep-ns/sticky/tcp/http/10.1.0.2/80"), "{s}");
    assert!(s.contains("numgen random mod 2 vmap"), "{s}");
}
