//! The nftables backend for real: a client namespace reaches a ClusterIP that DNATs to server namespaces.

use crate::netns::{self, Netns};
use crate::support::*;
use bosun_netproxy::table::{Affinity, Protocol, TableDiff};
use bosun_netproxy::{NftablesConfig, NftablesProxy, ProxyBackend};
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub(crate) fn skip() -> bool {
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
pub(crate) fn ask(ns: &Netns, to: SocketAddr) -> Result<String, String> {
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

/// `nft list tables` inside a namespace.
fn nft_tables(ns: &Netns) -> Vec<String> {
    let out =
        std::process::Command::new("ip").args(["netns", "exec", &ns.name, "nft", "list", "tables"]).output().expect("nft list tables");
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).filter(|l| !l.is_empty()).collect()
}

/// The table as a multiset of tokens: element order in listings follows the kernel's hashing, so
/// only what is listed is compared, not where.
fn listing(ns: &Netns, table: &str) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "nft", "list", "table", "inet", table])
        .output()
        .expect("nft list");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut tokens: Vec<String> = text
        .split(['\n', ',', '{', '}'])
        .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|t| !t.is_empty() && !t.starts_with("table inet"))
        .collect();
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
    // IPv6: a dual-stack service (each family to its own endpoints), an IPv6 node port and affinity.
    let mut dual = service("dual", Protocol::Tcp, vip("10.96.0.13"), 80, &[ep("10.240.1.4:80"), ep("[fd00:240:1::4]:80")]);
    dual.cluster_ips.push(vip("fd00:96::13"));
    dual.node_port = Some(30013);
    let mut sticky6 = service("sticky6", Protocol::Tcp, vip("fd00:96::14"), 443, &[ep("[fd00:240:1::5]:8443"), ep("[fd00:240:1::6]:8443")]);
    sticky6.affinity = Affinity::ClientIp { timeout: Duration::from_secs(60) };
    let empty6 = service("empty6", Protocol::Udp, vip("fd00:96::15"), 53, &[]);
    let full = TableDiff {
        full: true,
        upserted: vec![arc(web), arc(dns), arc(sticky), arc(empty), arc(dual), arc(sticky6), arc(empty6)],
        removed: vec![],
    };
    netlink.apply(&full).await.expect("netlink full sync");
    text.apply(&full).await.expect("text full sync");
    let (ta, tb) = (netlink.table_in_use().await.expect("table"), text.table_in_use().await.expect("table"));
    let programmed = listing(&a, &ta);
    assert!(
        programmed.iter().any(|t| t == "0x00000001 . 1 : 10.240.2.2 . 8080"),
        "marks, numgen results, addresses and ports decode as nft writes them: {programmed:?}"
    );
    assert!(programmed.iter().any(|t| t == "fd00:96::13 . tcp . 80 : goto pick6-tcp-1"), "IPv6 keys decode: {programmed:?}");
    assert!(programmed.iter().any(|t| t.ends_with(": fd00:240:1::4 . 80")), "IPv6 targets decode: {programmed:?}");
    assert_eq!(programmed, listing(&b, &tb));

    // An endpoint change: elements only, so one batch on the netlink side.
    let moved = service("web", Protocol::Tcp, vip("10.96.0.10"), 80, &[ep("10.240.1.2:8080"), ep("10.240.3.2:8080")]);
    let diff = TableDiff { full: false, upserted: vec![arc(moved)], removed: vec![] };
    netlink.apply(&diff).await.expect("netlink diff");
    text.apply(&diff).await.expect("text diff");
    assert_eq!(listing(&a, &ta), listing(&b, &tb));

    // Removing a service deletes its elements.
    let removed = TableDiff { full: false, upserted: vec![], removed: vec![full.upserted[0].name.clone()] };
    netlink.apply(&removed).await.expect("netlink removal");
    text.apply(&removed).await.expect("text removal");
    assert_eq!(listing(&a, &ta), listing(&b, &tb));

    // A full resync over the existing table builds the other name and drops the old one; same content.
    netlink.apply(&full).await.expect("netlink resync");
    text.apply(&full).await.expect("text resync");
    let ta2 = netlink.table_in_use().await.expect("table");
    assert_ne!(ta, ta2, "the resync built the table under the other name");
    let tables = nft_tables(&a);
    assert_eq!(tables, vec![format!("table inet {ta2}")], "only the new table is left");
    assert_eq!(listing(&a, &ta2), listing(&b, &text.table_in_use().await.expect("table")));
    netlink.cleanup().await.expect("cleanup");
    assert!(nft_tables(&a).is_empty(), "cleanup removes the table");
}

/// Connects from inside a namespace in a loop until `stop` (at most `max` attempts and `limit` of
/// time); returns (attempts, failures with their errors). Attempts are paced a millisecond apart:
/// a gap in translation lasts as long as a table rebuild (hundreds of ms before the atomic
/// resync), while an unpaced loop (4,500 connections/s here) reuses client ports within their
/// TIME_WAIT and lost a connection to that once in ~5,500 attempts, after the resyncs had ended.
fn probe_loop(
    ns: &Netns,
    to: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    max: usize,
    limit: Duration,
) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    let path = format!("/var/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        rustix::thread::move_into_link_name_space(std::os::fd::AsFd::as_fd(&file), Some(rustix::thread::LinkNameSpaceType::Network))
            .expect("setns");
        let start = std::time::Instant::now();
        let (mut attempts, mut failures) = (0, Vec::new());
        while !stop.load(std::sync::atomic::Ordering::Relaxed) && attempts < max && start.elapsed() < limit {
            attempts += 1;
            let answer = std::net::TcpStream::connect_timeout(&to, Duration::from_millis(500)).and_then(|s| {
                s.set_read_timeout(Some(Duration::from_millis(500)))?;
                let mut line = String::new();
                BufReader::new(s).read_line(&mut line)?;
                Ok(line)
            });
            std::thread::sleep(Duration::from_millis(1));
            match answer {
                Ok(line) if line.trim() == "s1" => {}
                Ok(line) => failures.push(format!("attempt {attempts}: answer {line:?}")),
                Err(e) => failures.push(format!("attempt {attempts}: {e}")),
            }
        }
        (attempts, failures)
    })
}

#[tokio::test]
async fn a_full_resync_never_leaves_new_connections_untranslated() {
    if skip() {
        return;
    }
    let client = Netns::create("rc").expect("netns");
    let s1 = Netns::create("rs").expect("netns");
    client.link(&s1, "vc1", "10.240.1.1/24", "vs1", "10.240.1.2/24").expect("veth");
    client.ip(&["route", "add", "10.96.0.0/16", "dev", "vc1"]).expect("route");
    s1.ip(&["route", "add", "default", "via", "10.240.1.1"]).expect("route");
    serve_in(&s1, "10.240.1.2:8080", "s1");
    let proxy = NftablesProxy::new(NftablesConfig::default().netns(client.name.clone()));
    let ep1: SocketAddr = "10.240.1.2:8080".parse().expect("addr");
    // Enough other services that a full sync takes a while (the gap, if any, is wide enough to hit).
    let mut all = vec![arc(service("web", Protocol::Tcp, "10.96.0.10".parse().expect("ip"), 80, &[ep1]))];
    for i in 0..3000u32 {
        let vip = IpAddr::from([10, 96, 10 + (i / 250) as u8, (i % 250) as u8 + 1]);
        let eps: Vec<SocketAddr> =
            (0..4u32).map(|e| SocketAddr::from(([10, 241, (i / 250) as u8, (i % 250) as u8], 8000 + e as u16))).collect();
        all.push(arc(service(&format!("other{i}"), Protocol::Tcp, vip, 80, &eps)));
    }
    let full = TableDiff { full: true, upserted: all, removed: vec![] };
    proxy.apply(&full).await.expect("first full sync");
    let to: SocketAddr = "10.96.0.10:80".parse().expect("addr");
    assert_eq!(ask(&client, to).expect("reach s1"), "s1");

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = probe_loop(&client, to, stop.clone(), 200_000, Duration::from_secs(60));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let resyncs = 4;
    for _ in 0..resyncs {
        proxy.apply(&full).await.expect("resync");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (attempts, failures) = prober.join().expect("prober");
    assert!(attempts >= 20, "the prober ran through the resyncs ({attempts} attempts)");
    assert!(
        failures.is_empty(),
        "{} of {attempts} connections during {resyncs} full resyncs failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(ask(&client, to).expect("reach s1 after"), "s1");
    proxy.cleanup().await.expect("cleanup");
}

#[tokio::test]
async fn ipv6_cluster_ips_dnat_to_ipv6_endpoints_and_dual_stack_families_stay_apart() {
    if skip() {
        return;
    }
    let client = Netns::create("c6").expect("netns");
    let s1 = Netns::create("s61").expect("netns");
    let s2 = Netns::create("s62").expect("netns");
    // No duplicate address detection: addresses (link-local ones too, which neighbour discovery
    // uses) are usable at once.
    for ns in [&client, &s1, &s2] {
        ns.enter(|| std::fs::write("/proc/sys/net/ipv6/conf/default/accept_dad", "0")).expect("sysctl accept_dad");
    }
    client.link(&s1, "vc1", "10.240.1.1/24", "vs1", "10.240.1.2/24").expect("veth");
    client.link(&s2, "vc2", "10.240.2.1/24", "vs2", "10.240.2.2/24").expect("veth");
    // ULA addresses.
    client.ip(&["-6", "addr", "add", "fd00:240:1::1/64", "dev", "vc1", "nodad"]).expect("addr");
    s1.ip(&["-6", "addr", "add", "fd00:240:1::2/64", "dev", "vs1", "nodad"]).expect("addr");
    client.ip(&["-6", "addr", "add", "fd00:240:2::1/64", "dev", "vc2", "nodad"]).expect("addr");
    s2.ip(&["-6", "addr", "add", "fd00:240:2::2/64", "dev", "vs2", "nodad"]).expect("addr");
    client.ip(&["route", "add", "10.96.0.0/16", "dev", "vc1"]).expect("route");
    client.ip(&["-6", "route", "add", "fd00:96::/64", "dev", "vc1"]).expect("route");
    s1.ip(&["route", "add", "default", "via", "10.240.1.1"]).expect("route");
    s2.ip(&["route", "add", "default", "via", "10.240.2.1"]).expect("route");
    s1.ip(&["-6", "route", "add", "default", "via", "fd00:240:1::1"]).expect("route");
    s2.ip(&["-6", "route", "add", "default", "via", "fd00:240:2::1"]).expect("route");
    serve_in(&s1, "[fd00:240:1::2]:8080", "s1v6");
    serve_in(&s2, "[fd00:240:2::2]:8080", "s2v6");
    serve_in(&s1, "10.240.1.2:8080", "s1v4");

    let proxy = NftablesProxy::new(NftablesConfig::default().netns(client.name.clone()));
    let ep = |s: &str| s.parse::<SocketAddr>().expect("addr");
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    let (e1, e2) = (ep("[fd00:240:1::2]:8080"), ep("[fd00:240:2::2]:8080"));
    let to = ep("[fd00:96::10]:80");

    // An IPv6-only service, programmed by a full sync.
    let web = service("web6", Protocol::Tcp, ip("fd00:96::10"), 80, &[e1]);
    proxy.apply(&TableDiff { full: true, upserted: vec![arc(web)], removed: vec![] }).await.expect("full sync");
    for _ in 0..3 {
        assert_eq!(ask(&client, to).expect("reach s1 over IPv6"), "s1v6");
    }
    // Its endpoint moves: the diff follows.
    let moved = service("web6", Protocol::Tcp, ip("fd00:96::10"), 80, &[e2]);
    proxy.apply(&TableDiff { full: false, upserted: vec![arc(moved)], removed: vec![] }).await.expect("diff");
    for _ in 0..3 {
        assert_eq!(ask(&client, to).expect("reach s2 over IPv6"), "s2v6");
    }

    // Dual stack: the IPv4 cluster IP goes to the IPv4 endpoint, the IPv6 one to the IPv6 endpoint.
    let mut dual = service("dual", Protocol::Tcp, ip("10.96.0.20"), 80, &[ep("10.240.1.2:8080"), e2]);
    dual.cluster_ips.push(ip("fd00:96::20"));
    proxy.apply(&TableDiff { full: false, upserted: vec![arc(dual)], removed: vec![] }).await.expect("diff");
    for _ in 0..6 {
        assert_eq!(ask(&client, ep("10.96.0.20:80")).expect("dual over IPv4"), "s1v4");
        assert_eq!(ask(&client, ep("[fd00:96::20]:80")).expect("dual over IPv6"), "s2v6");
    }

    // ClientIP affinity over IPv6 sticks to one endpoint.
    let mut sticky = service("sticky6", Protocol::Tcp, ip("fd00:96::11"), 80, &[e1, e2]);
    sticky.affinity = Affinity::ClientIp { timeout: Duration::from_secs(60) };
    proxy.apply(&TableDiff { full: false, upserted: vec![arc(sticky)], removed: vec![] }).await.expect("diff");
    let first = ask(&client, ep("[fd00:96::11]:80")).expect("reach sticky");
    for _ in 0..8 {
        assert_eq!(ask(&client, ep("[fd00:96::11]:80")).expect("reach sticky"), first);
    }

    // A node port on the client namespace's own IPv6 address (external path, masqueraded).
    let mut np = service("np6", Protocol::Tcp, ip("fd00:96::12"), 80, &[e1]);
    np.node_port = Some(30081);
    proxy.apply(&TableDiff { full: false, upserted: vec![arc(np)], removed: vec![] }).await.expect("diff");
    assert_eq!(ask(&client, ep("[fd00:240:1::1]:30081")).expect("IPv6 node port"), "s1v6");

    // No endpoints: rejected at once.
    let none = service("web6", Protocol::Tcp, ip("fd00:96::10"), 80, &[]);
    proxy.apply(&TableDiff { full: false, upserted: vec![arc(none)], removed: vec![] }).await.expect("diff");
    let err = ask(&client, to).expect_err("rejected");
    assert!(err.to_lowercase().contains("refused") || err.contains("unreachable"), "{err}");
    proxy.cleanup().await.expect("cleanup");
}

#[tokio::test]
async fn a_diff_that_outgrows_a_maps_size_is_applied_as_a_full_sync_that_resizes_it() {
    if skip() {
        return;
    }
    let client = Netns::create("grow").expect("netns");
    let server = Netns::create("grows").expect("netns");
    client.link(&server, "vg1", "10.241.1.1/24", "vg2", "10.241.1.2/24").expect("veth");
    client.ip(&["route", "add", "10.97.0.0/16", "dev", "vg1"]).expect("route");
    server.ip(&["route", "add", "default", "via", "10.241.1.1"]).expect("route");
    serve_in(&server, "10.241.1.2:8080", "grown");
    let proxy = NftablesProxy::new(NftablesConfig::default().table("grow").netns(client.name.clone()));
    let ep: SocketAddr = "10.241.1.2:8080".parse().expect("addr");
    let first = service("first", Protocol::Tcp, "10.97.0.1".parse().expect("ip"), 80, &[ep]);
    proxy.apply(&TableDiff { full: true, upserted: vec![arc(first)], removed: vec![] }).await.expect("full sync");
    let before = proxy.table_in_use().await.expect("a table");
    assert!(listing(&client, &before).iter().any(|t| t == "size 1024"), "sized maps");
    // 1,100 more services: `service-ids` passes its 1,024 elements.
    let more: Vec<_> = (0..1100u32)
        .map(|i| {
            arc(service(&format!("more{i}"), Protocol::Tcp, IpAddr::from([10, 97, 1 + (i / 250) as u8, (i % 250 + 1) as u8]), 80, &[ep]))
        })
        .collect();
    proxy.apply(&TableDiff { full: false, upserted: more, removed: vec![] }).await.expect("diff past the size");
    let after = proxy.table_in_use().await.expect("a table");
    assert_ne!(before, after, "applied as a full sync, which builds the table under its other name");
    let tokens = listing(&client, &after);
    assert!(tokens.iter().any(|t| t == "size 4096"), "service-ids resized for 1,101 elements: {:?}", &tokens[..tokens.len().min(40)]);
    assert_eq!(nft_tables(&client).iter().filter(|t| t.contains("grow")).count(), 1, "the old table is gone");
    assert_eq!(ask(&client, "10.97.0.1:80".parse().expect("addr")).expect("the first service still answers"), "grown");
    assert_eq!(ask(&client, "10.97.5.100:80".parse().expect("addr")).expect("the last new service answers"), "grown");
    // Further diffs stay incremental on the resized table.
    let last = service("last", Protocol::Tcp, "10.97.9.1".parse().expect("ip"), 80, &[ep]);
    proxy.apply(&TableDiff { full: false, upserted: vec![arc(last)], removed: vec![] }).await.expect("small diff");
    assert_eq!(proxy.table_in_use().await.expect("a table"), after, "a small diff does not rebuild the table");
    assert_eq!(ask(&client, "10.97.9.1:80".parse().expect("addr")).expect("reach"), "grown");
    proxy.cleanup().await.expect("cleanup");
}
