//! The nftables backend's source NAT, for real in network namespaces: a pod reaching its own
//! Service through the node's bridge (hairpin: masqueraded, or its own reply never comes back
//! through the node), pod-to-other-pod Service traffic keeping the client's address, and node ports
//! reached from a client namespace through a forwarding node namespace, IPv4, IPv6 and dual stack:
//! masqueraded with `externalTrafficPolicy: Cluster`, the client's address kept with `Local`.

use crate::netns::Netns;
use crate::nftables::{ask, skip};
use crate::support::*;
use bosun_netproxy::table::{Protocol, TableDiff};
use bosun_netproxy::{NftablesConfig, NftablesProxy, ProxyBackend};
use std::net::{IpAddr, SocketAddr};

/// A TCP server inside a namespace greeting each connection with `name` and the peer's address.
fn serve_peer_in(ns: &Netns, addr: &'static str, name: &'static str) {
    let listener = ns.enter(move || std::net::TcpListener::bind(addr).expect("bind in netns"));
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            use std::io::Write;
            let peer = s.peer_addr().map(|p| p.ip().to_string()).unwrap_or_default();
            let _ = s.write_all(format!("{name} {peer}\n").as_bytes());
        }
    });
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// Namespaces without duplicate address detection, so IPv6 addresses are usable at once.
fn namespaces<const N: usize>(tags: [&str; N]) -> [Netns; N] {
    tags.map(|tag| {
        let ns = Netns::create(tag).expect("netns");
        ns.sysctl("net/ipv6/conf/default/accept_dad", "0").expect("sysctl");
        ns.sysctl("net/ipv6/conf/all/accept_dad", "0").expect("sysctl");
        ns
    })
}

/// A node that routes: IPv4 and IPv6 forwarding on.
fn forwarding(node: &Netns) {
    node.sysctl("net/ipv4/ip_forward", "1").expect("sysctl ip_forward");
    node.sysctl("net/ipv6/conf/all/forwarding", "1").expect("sysctl ipv6 forwarding");
}

/// Puts `pod` on the node's bridge `br0` (as the CNI bridge plugin does: hairpin mode on the
/// node's end) with addresses `v4`/24 and `v6`/64, default routes through the bridge's addresses.
fn on_bridge(node: &Netns, pod: &Netns, port: &str, v4: &str, v6: &str) {
    pod.veth(node, "eth0", port).expect("veth");
    node.ip(&["link", "set", port, "master", "br0"]).expect("attach to bridge");
    node.ip(&["link", "set", "dev", port, "type", "bridge_slave", "hairpin", "on"]).expect("hairpin mode");
    pod.ip(&["addr", "add", &format!("{v4}/24"), "dev", "eth0"]).expect("addr");
    pod.ip(&["-6", "addr", "add", &format!("{v6}/64"), "dev", "eth0", "nodad"]).expect("addr");
    pod.ip(&["route", "add", "default", "via", "10.244.0.1"]).expect("route");
    pod.ip(&["-6", "route", "add", "default", "via", "fd00:244::1"]).expect("route");
}

/// Connects `n` times in a row from `from` to `to`; returns each answer, failing at the first error.
fn in_a_row(from: &Netns, to: SocketAddr, n: usize) -> Vec<String> {
    (1..=n).map(|i| ask(from, to).unwrap_or_else(|e| panic!("attempt {i} of {n} to {to} failed: {e}"))).collect()
}

#[tokio::test]
async fn a_pod_reaches_its_own_service_every_time_and_other_pods_see_its_address() {
    if skip() {
        return;
    }
    let [node, a, b] = namespaces(["hpn", "hpa", "hpb"]);
    node.ip(&["link", "add", "br0", "type", "bridge"]).expect("bridge");
    node.ip(&["addr", "add", "10.244.0.1/24", "dev", "br0"]).expect("addr");
    node.ip(&["-6", "addr", "add", "fd00:244::1/64", "dev", "br0", "nodad"]).expect("addr");
    node.ip(&["link", "set", "br0", "up"]).expect("bridge up");
    forwarding(&node);
    on_bridge(&node, &a, "veth-a", "10.244.0.2", "fd00:244::2");
    on_bridge(&node, &b, "veth-b", "10.244.0.3", "fd00:244::3");
    serve_peer_in(&a, "10.244.0.2:8080", "a");
    serve_peer_in(&b, "10.244.0.3:8080", "b");
    serve_peer_in(&a, "[fd00:244::2]:8080", "a");
    serve_peer_in(&b, "[fd00:244::3]:8080", "b");

    let proxy = NftablesProxy::new(NftablesConfig::default().netns(node.name.clone()));
    // Dual stack, both pods behind it: from pod a, half the connections come back to a itself.
    let mut web = service(
        "web",
        Protocol::Tcp,
        ip("10.96.0.10"),
        80,
        &[addr("10.244.0.2:8080"), addr("10.244.0.3:8080"), addr("[fd00:244::2]:8080"), addr("[fd00:244::3]:8080")],
    );
    web.cluster_ips.push(ip("fd00:96::10"));
    // Only pod a behind it: every connection from a is a hairpin.
    let mut own = service("own", Protocol::Tcp, ip("10.96.0.11"), 80, &[addr("10.244.0.2:8080"), addr("[fd00:244::2]:8080")]);
    own.cluster_ips.push(ip("fd00:96::11"));
    proxy.apply(&TableDiff { full: true, upserted: vec![arc(web), arc(own)], removed: vec![] }).await.expect("full sync");

    for (vip, gateway, a_ip) in [("10.96.0.10:80", "10.244.0.1", "10.244.0.2"), ("[fd00:96::10]:80", "fd00:244::1", "fd00:244::2")] {
        let answers = in_a_row(&a, addr(vip), 50);
        let (mut to_self, mut to_other) = (0, 0);
        for answer in &answers {
            match answer.split_once(' ') {
                // Back to itself: masqueraded to the node's bridge address, so the reply goes through the node.
                Some(("a", peer)) if peer == gateway => to_self += 1,
                // To the other pod: not masqueraded, it sees the client pod's own address.
                Some(("b", peer)) if peer == a_ip => to_other += 1,
                _ => panic!("{vip}: unexpected answer {answer:?} (all: {answers:?})"),
            }
        }
        assert!(to_self > 0 && to_other > 0, "{vip}: random DNAT reached both pods ({to_self} to itself, {to_other} to the other)");
    }
    for (vip, gateway, b_ip) in [("10.96.0.11:80", "10.244.0.1", "10.244.0.3"), ("[fd00:96::11]:80", "fd00:244::1", "fd00:244::3")] {
        for answer in in_a_row(&a, addr(vip), 20) {
            assert_eq!(answer, format!("a {gateway}"), "{vip}: hairpin masqueraded to the bridge address");
        }
        // From the other pod the same Service is plain DNAT.
        assert_eq!(ask(&b, addr(vip)).expect("from pod b"), format!("a {b_ip}"), "{vip}: pod b keeps its address");
    }

    // The hairpin follows endpoint changes: pod b alone behind `own`, then pod a again.
    let moved = service("own", Protocol::Tcp, ip("10.96.0.11"), 80, &[addr("10.244.0.3:8080")]);
    proxy.apply(&TableDiff { full: false, upserted: vec![arc(moved)], removed: vec![] }).await.expect("diff");
    for answer in in_a_row(&a, addr("10.96.0.11:80"), 5) {
        assert_eq!(answer, "b 10.244.0.2", "no longer a hairpin: not masqueraded");
    }
    for answer in in_a_row(&b, addr("10.96.0.11:80"), 10) {
        assert_eq!(answer, "b 10.244.0.1", "pod b reaching itself is now the hairpin");
    }
    proxy.cleanup().await.expect("cleanup");
}

#[tokio::test]
async fn node_ports_from_a_client_namespace_dnat_over_ipv4_and_ipv6_and_masquerade_unless_local() {
    if skip() {
        return;
    }
    // client --(10.240.9.0/24, fd00:9::/64)-- node --(10.240.8.0/24, fd00:8::/64)-- endpoint
    let [client, node, endpoint] = namespaces(["npc", "npn", "npe"]);
    client.link(&node, "eth0", "10.240.9.2/24", "to-client", "10.240.9.1/24").expect("veth");
    node.link(&endpoint, "to-pod", "10.240.8.1/24", "eth0", "10.240.8.2/24").expect("veth");
    client.ip(&["-6", "addr", "add", "fd00:9::2/64", "dev", "eth0", "nodad"]).expect("addr");
    node.ip(&["-6", "addr", "add", "fd00:9::1/64", "dev", "to-client", "nodad"]).expect("addr");
    node.ip(&["-6", "addr", "add", "fd00:8::1/64", "dev", "to-pod", "nodad"]).expect("addr");
    endpoint.ip(&["-6", "addr", "add", "fd00:8::2/64", "dev", "eth0", "nodad"]).expect("addr");
    endpoint.ip(&["route", "add", "default", "via", "10.240.8.1"]).expect("route");
    endpoint.ip(&["-6", "route", "add", "default", "via", "fd00:8::1"]).expect("route");
    forwarding(&node);
    serve_peer_in(&endpoint, "10.240.8.2:8080", "e4");
    serve_peer_in(&endpoint, "[fd00:8::2]:8080", "e6");
    let (e4, e6) = (addr("10.240.8.2:8080"), addr("[fd00:8::2]:8080"));

    let proxy = NftablesProxy::new(NftablesConfig::default().netns(node.name.clone()));
    // IPv4 only, IPv6 only, dual stack (externalTrafficPolicy Cluster), and dual stack with Local.
    let mut np4 = service("np4", Protocol::Tcp, ip("10.96.0.20"), 80, &[e4]);
    np4.node_port = Some(30080);
    let mut np6 = service("np6", Protocol::Tcp, ip("fd00:96::21"), 80, &[e6]);
    np6.node_port = Some(30081);
    let mut dual = service("dual", Protocol::Tcp, ip("10.96.0.22"), 80, &[e4, e6]);
    dual.cluster_ips.push(ip("fd00:96::22"));
    dual.node_port = Some(30082);
    let mut local = dual.clone();
    local.name.name = "local".into();
    local.cluster_ips = vec![ip("10.96.0.23"), ip("fd00:96::23")];
    local.node_port = Some(30083);
    local.external_local = true;
    // np6 arrives by a diff (the IPv6 node-port elements through the incremental path).
    proxy.apply(&TableDiff { full: true, upserted: vec![arc(np4), arc(dual), arc(local)], removed: vec![] }).await.expect("full sync");
    proxy.apply(&TableDiff { full: false, upserted: vec![arc(np6.clone())], removed: vec![] }).await.expect("diff");

    let cases = [
        // (node address, answer): Cluster policy masquerades to the node's address towards the endpoint.
        ("10.240.9.1:30080", "e4 10.240.8.1"),
        ("[fd00:9::1]:30081", "e6 fd00:8::1"),
        ("10.240.9.1:30082", "e4 10.240.8.1"),
        ("[fd00:9::1]:30082", "e6 fd00:8::1"),
        // Local policy keeps the client's address.
        ("10.240.9.1:30083", "e4 10.240.9.2"),
        ("[fd00:9::1]:30083", "e6 fd00:9::2"),
    ];
    for (to, want) in cases {
        for answer in in_a_row(&client, addr(to), 5) {
            assert_eq!(answer, want, "node port {to}");
        }
    }
    // An IPv6-only Service's node port is not served on the node's IPv4 address (nothing listens there).
    let err = ask(&client, addr("10.240.9.1:30081")).expect_err("no IPv4 node port for an IPv6-only service");
    assert!(err.to_lowercase().contains("refused"), "{err}");

    // No endpoint left: the IPv6 node port rejects at once instead of hanging; then it comes back.
    let mut none = np6.clone();
    none.cluster_endpoints.clear();
    none.external_endpoints.clear();
    proxy.apply(&TableDiff { full: false, upserted: vec![arc(none)], removed: vec![] }).await.expect("diff");
    let err = ask(&client, addr("[fd00:9::1]:30081")).expect_err("rejected");
    assert!(err.to_lowercase().contains("refused") || err.contains("unreachable"), "{err}");
    proxy.apply(&TableDiff { full: false, upserted: vec![arc(np6)], removed: vec![] }).await.expect("diff");
    assert_eq!(ask(&client, addr("[fd00:9::1]:30081")).expect("back"), "e6 fd00:8::1");
    proxy.cleanup().await.expect("cleanup");
}

#[tokio::test]
async fn cluster_ip_traffic_from_outside_the_cluster_cidr_is_masqueraded_and_pods_keep_their_address() {
    if skip() {
        return;
    }
    // outside --(10.250.9.0/24, fd00:99::/64)-- node --(10.240.8.0/24)-- endpoint
    //                                              \--(10.240.7.0/24)-- pod (a client inside the cluster CIDR)
    let [outside, node, endpoint, pod] = namespaces(["ccc", "ccn", "cce", "ccp"]);
    outside.link(&node, "eth0", "10.250.9.2/24", "to-out", "10.250.9.1/24").expect("veth");
    node.link(&endpoint, "to-ep", "10.240.8.1/24", "eth0", "10.240.8.2/24").expect("veth");
    node.link(&pod, "to-pod", "10.240.7.1/24", "eth0", "10.240.7.2/24").expect("veth");
    outside.ip(&["-6", "addr", "add", "fd00:99::2/64", "dev", "eth0", "nodad"]).expect("addr");
    node.ip(&["-6", "addr", "add", "fd00:99::1/64", "dev", "to-out", "nodad"]).expect("addr");
    node.ip(&["-6", "addr", "add", "fd00:240:8::1/64", "dev", "to-ep", "nodad"]).expect("addr");
    endpoint.ip(&["-6", "addr", "add", "fd00:240:8::2/64", "dev", "eth0", "nodad"]).expect("addr");
    outside.ip(&["route", "add", "10.96.0.0/16", "via", "10.250.9.1"]).expect("route");
    outside.ip(&["-6", "route", "add", "fd00:96::/64", "via", "fd00:99::1"]).expect("route");
    endpoint.ip(&["route", "add", "default", "via", "10.240.8.1"]).expect("route");
    endpoint.ip(&["-6", "route", "add", "default", "via", "fd00:240:8::1"]).expect("route");
    pod.ip(&["route", "add", "default", "via", "10.240.7.1"]).expect("route");
    forwarding(&node);
    serve_peer_in(&endpoint, "10.240.8.2:8080", "e4");
    serve_peer_in(&endpoint, "[fd00:240:8::2]:8080", "e6");
    let mut web = service("web", Protocol::Tcp, ip("10.96.0.30"), 80, &[addr("10.240.8.2:8080"), addr("[fd00:240:8::2]:8080")]);
    web.cluster_ips.push(ip("fd00:96::30"));
    let (v4, v6) = (addr("10.96.0.30:80"), addr("[fd00:96::30]:80"));
    let cidrs = ["10.240.0.0/16".parse().expect("cidr"), "fd00:240::/48".parse().expect("cidr")];

    for (config, from_outside, from_pod) in [
        // No cluster CIDR: every source is kept (the outside host's replies only come back because
        // the endpoint routes through this node).
        (NftablesConfig::default(), ["e4 10.250.9.2", "e6 fd00:99::2"], "e4 10.240.7.2"),
        // Cluster CIDRs: from outside them masqueraded to the node's address, pods keep theirs.
        (NftablesConfig::default().cluster_cidrs(cidrs), ["e4 10.240.8.1", "e6 fd00:240:8::1"], "e4 10.240.7.2"),
        // Masquerade all: pods too.
        (NftablesConfig::default().masquerade_all(true), ["e4 10.240.8.1", "e6 fd00:240:8::1"], "e4 10.240.8.1"),
    ] {
        let proxy = NftablesProxy::new(config.netns(node.name.clone()));
        proxy.apply(&TableDiff { full: true, upserted: vec![arc(web.clone())], removed: vec![] }).await.expect("full sync");
        for (to, want) in [(v4, from_outside[0]), (v6, from_outside[1])] {
            for answer in in_a_row(&outside, to, 3) {
                assert_eq!(answer, want, "{to} from outside the cluster CIDR");
            }
        }
        for answer in in_a_row(&pod, v4, 3) {
            assert_eq!(answer, from_pod, "{v4} from a pod");
        }
        proxy.cleanup().await.expect("cleanup");
    }
}
