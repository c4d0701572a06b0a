//! The nftables backend for real: a client namespace reaches a ClusterIP that DNATs to server namespaces.

use crate::netns::{self, Netns};
use crate::support::*;
use bosun_netproxy::table::{Affinity, Protocol, TableDiff};
use bosun_netproxy::{NftablesConfig, NftablesProxy, ProxyBackend};
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

fn skip() -> bool {
    if netns::available() {
        return false;
    }
    if require_components() {
        panic!("nftables test needs root, iproute2 and nftables (BOSUN_REQUIRE_COMPONENTS=1)");
    }
    eprintln!("SKIPPING nftables test: needs root, iproute2 (ip netns) and nftables (nft)");
    true
}

/// A TCP server inside a namespace greeting each connection with `name`.
fn serve_in(ns: &Netns, addr: &'static str, name: &'static str) {
    let listener = ns.enter(move || std::net::TcpListener::bind(addr).expect("bind in netns"));
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            use std::io::Write;
            let _ = s.write_all(format!("{name}\n").as_bytes());
        }
    });
}

/// Connects from inside a namespace and returns the greeting (or the error).
fn ask(ns: &Netns, to: SocketAddr) -> Result<String, String> {
    ns.enter(move || {
        let s = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(2)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).map_err(|e| e.to_string())?;
        Ok(line.trim().to_owned())
    })
}

#[tokio::test]
async fn cluster_ip_dnats_from_a_client_namespace_to_servers_and_follows_endpoint_changes() {
    if skip() {
        return;
    }
    let client = Netns::create("c").expect("netns");
    let s1 = Netns::create("s1").expect("netns");
    let s2 = Netns::create("s2").expect("netns");
    client.link(&s1, "vc1", "10.240.1.1/24", "vs1", "10.240.1.2/24").expect("veth");
    client.link(&s2, "vc2", "10.240.2.1/24", "vs2", "10.240.2.2/24").expect("veth");
    // The cluster IP range must be routable before DNAT picks the real destination.
    client.ip(&["route", "add", "10.96.0.0/16", "dev", "vc1"]).expect("route");
    // Replies go back to whichever client address the first route chose.
    s1.ip(&["route", "add", "default", "via", "10.240.1.1"]).expect("route");
    s2.ip(&["route", "add", "default", "via", "10.240.2.1"]).expect("route");
    serve_in(&s1, "10.240.1.2:8080", "s1");
    serve_in(&s2, "10.240.2.2:8080", "s2");

    let proxy = NftablesProxy::new(NftablesConfig::default().netns(client.name.clone()));
    let vip: IpAddr = "10.96.0.10".parse().expect("ip");
    let ep1: SocketAddr = "10.240.1.2:8080".parse().expect("addr");
    let ep2: SocketAddr = "10.240.2.2:8080".parse().expect("addr");
    let to = SocketAddr::new(vip, 80);

    // Full sync with only server 1.
    let svc = service("web", Protocol::Tcp, vip, 80, &[ep1]);
    proxy.apply(&TableDiff { full: true, upserted: vec![arc(svc)], removed: vec![] }).await.expect("full sync");
    for _ in 0..3 {
        assert_eq!(ask(&client, to).expect("reach s1"), "s1");
    }

    // Incremental: both servers; both get traffic.
    let both = service("web", Protocol::Tcp, vip, 80, &[ep1, ep2]);
    proxy.apply(&TableDiff { full: false, upserted: vec![arc(both)], removed: vec![] }).await.expect("diff");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        seen.insert(ask(&client, to).expect("reach"));
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "random DNAT reaches both servers: {seen:?}");

    // Only server 2.
    let two = service("web", Protocol::Tcp, vip, 80, &[ep2]);
    proxy.apply(&TableDiff { full: false, upserted: vec![arc(two)], removed: vec![] }).await.expect("diff");
    for _ in 0..5 {
        assert_eq!(ask(&client, to).expect("reach s2"), "s2");
    }

    // No endpoints: rejected at once (not a timeout).
    let none = service("web", Protocol::Tcp, vip, 80, &[]);
    proxy.apply(&TableDiff { full: false, upserted: vec![arc(none.clone())], removed: vec![] }).await.expect("diff");
    let err = ask(&client, to).expect_err("rejected");
    assert!(err.to_lowercase().contains("refused") || err.contains("unreachable"), "{err}");

    // A second service with affinity sticks to one server.
    let vip2: IpAddr = "10.96.0.11".parse().expect("ip");
    let mut sticky = service("sticky", Protocol::Tcp, vip2, 80, &[ep1, ep2]);
    sticky.affinity = Affinity::ClientIp { timeout: Duration::from_secs(60) };
    proxy.apply(&TableDiff { full: false, upserted: vec![arc(sticky)], removed: vec![] }).await.expect("diff");
    let first = ask(&client, SocketAddr::new(vip2, 80)).expect("reach");
    for _ in 0..8 {
        assert_eq!(ask(&client, SocketAddr::new(vip2, 80)).expect("reach"), first);
    }

    // A NodePort with the external path (masqueraded) on the client namespace's own address.
    let mut np = service("np", Protocol::Tcp, "10.96.0.12".parse().expect("ip"), 80, &[ep2]);
    np.node_port = Some(30080);
    proxy.apply(&TableDiff { full: false, upserted: vec![arc(np)], removed: vec![] }).await.expect("diff");
    assert_eq!(ask(&client, "10.240.1.1:30080".parse().expect("addr")).expect("node port"), "s2");

    // Removing the service removes its rules.
    proxy.apply(&TableDiff { full: false, upserted: vec![], removed: vec![none.name.clone()] }).await.expect("diff");
    let err = ask(&client, to).expect_err("no rule: nothing listens on the cluster IP");
    assert!(!err.is_empty());
    proxy.cleanup().await.expect("cleanup");
}

/// The table as a multiset of tokens: element order in listings follows the kernel's hashing, so
/// only what is listed is compared, not where.
fn listing(ns: &Netns) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "nft", "list", "table", "ip", "bosun"])
        .output()
        .expect("nft list");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut tokens: Vec<String> =
        text.split(['\n', ',', '{', '}']).map(|t| t.split_whitespace().collect::<Vec<_>>().join(" ")).filter(|t| !t.is_empty()).collect();
    tokens.sort();
    tokens
}

#[tokio::test]
async fn netlink_element_batches_program_exactly_what_nft_text_does() {
    if skip() {
        return;
    }
    let a = Netns::create("nla").expect("netns");
    let b = Netns::create("nlb").expect("netns");
    let netlink = NftablesProxy::new(NftablesConfig::default().netns(a.name.clone()));
    let text = NftablesProxy::new(NftablesConfig::default().netns(b.name.clone()).netlink(false));
    let ep = |s: &str| s.parse::<SocketAddr>().expect("addr");
    let vip = |s: &str| s.parse::<IpAddr>().expect("ip");
    let web = service("web", Protocol::Tcp, vip("10.96.0.10"), 80, &[ep("10.240.1.2:8080"), ep("10.240.2.2:8080")]);
    let mut dns = service("dns", Protocol::Udp, vip("10.96.0.53"), 53, &[ep("10.240.1.3:5353")]);
    dns.node_port = Some(30053);
    dns.external_ips = vec![vip("192.0.2.7")];
    let mut sticky = service("sticky", Protocol::Tcp, vip("10.96.0.11"), 443, &[ep("10.240.1.2:8443")]);
    sticky.affinity = Affinity::ClientIp { timeout: Duration::from_secs(60) };
    let empty = service("empty", Protocol::Tcp, vip("10.96.0.12"), 80, &[]);
    let full = TableDiff { full: true, upserted: vec![arc(web), arc(dns), arc(sticky), arc(empty)], removed: vec![] };
    netlink.apply(&full).await.expect("netlink full sync");
    text.apply(&full).await.expect("text full sync");
    let programmed = listing(&a);
    assert!(
        programmed.iter().any(|t| t == "0x00000001 . 1 : 10.240.2.2 . 8080"),
        "marks, numgen results, addresses and ports decode as nft writes them: {programmed:?}"
    );
    assert_eq!(programmed, listing(&b));

    // An endpoint change: elements only, so one batch on the netlink side.
    let moved = service("web", Protocol::Tcp, vip("10.96.0.10"), 80, &[ep("10.240.1.2:8080"), ep("10.240.3.2:8080")]);
    let diff = TableDiff { full: false, upserted: vec![arc(moved)], removed: vec![] };
    netlink.apply(&diff).await.expect("netlink diff");
    text.apply(&diff).await.expect("text diff");
    assert_eq!(listing(&a), listing(&b));

    // Removing a service deletes its elements.
    let removed = TableDiff { full: false, upserted: vec![], removed: vec![full.upserted[0].name.clone()] };
    netlink.apply(&removed).await.expect("netlink removal");
    text.apply(&removed).await.expect("text removal");
    assert_eq!(listing(&a), listing(&b));
    netlink.cleanup().await.expect("cleanup");
}
