//! The userspace proxy with real sockets on 127.0.0.0/8.

use crate::support::*;
use bosun_netproxy::table::{Affinity, Protocol, TableDiff};
use bosun_netproxy::{Balance, ProxyBackend, UserspaceConfig, UserspaceProxy};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

fn ip(d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 71, d))
}

fn upsert(s: bosun_netproxy::ProxyService) -> TableDiff {
    TableDiff { full: false, upserted: vec![arc(s)], removed: Vec::new() }
}

#[tokio::test]
async fn tcp_cluster_ip_round_robins_and_skips_an_endpoint_that_refuses() {
    let (a, _ta) = tcp_named_echo(ip(2), "a").await;
    let (b, _tb) = tcp_named_echo(ip(3), "b").await;
    let dead = SocketAddr::new(ip(4), free_port(ip(4)));
    let vip = ip(1);
    let port = free_port(vip);
    let proxy = UserspaceProxy::new(UserspaceConfig::default());
    let mut svc = service("web", Protocol::Tcp, vip, port, &[a, dead, b]);
    let node_port = free_port(IpAddr::V4(Ipv4Addr::LOCALHOST));
    svc.node_port = Some(node_port);
    proxy.apply(&upsert(svc)).await.expect("apply");

    let mut seen = Vec::new();
    for _ in 0..6 {
        let (name, mut s) = greet(SocketAddr::new(vip, port)).await;
        s.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.expect("echo");
        assert_eq!(&buf, b"ping");
        seen.push(name);
    }
    assert!(seen.iter().filter(|n| *n == "a").count() >= 2, "{seen:?}");
    assert!(seen.iter().filter(|n| *n == "b").count() >= 2, "{seen:?}");
    let (name, _) = greet(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), node_port)).await;
    assert!(name == "a" || name == "b");
}

#[tokio::test]
async fn tcp_client_ip_affinity_pins_a_client_to_one_endpoint() {
    let (a, _ta) = tcp_named_echo(ip(12), "a").await;
    let (b, _tb) = tcp_named_echo(ip(13), "b").await;
    let vip = ip(11);
    let port = free_port(vip);
    let proxy = UserspaceProxy::new(UserspaceConfig::default().balance(Balance::LeastConnections));
    let mut svc = service("sticky", Protocol::Tcp, vip, port, &[a, b]);
    svc.affinity = Affinity::ClientIp { timeout: Duration::from_secs(60) };
    proxy.apply(&upsert(svc)).await.expect("apply");
    let (first, _keep) = greet(SocketAddr::new(vip, port)).await;
    for _ in 0..5 {
        let (name, _) = greet(SocketAddr::new(vip, port)).await;
        assert_eq!(name, first, "least-connections would pick the other one without affinity");
    }
}

#[tokio::test]
async fn removed_endpoints_drain_gracefully_and_new_connections_go_elsewhere() {
    let (a, _ta) = tcp_named_echo(ip(22), "a").await;
    let (b, _tb) = tcp_named_echo(ip(23), "b").await;
    let vip = ip(21);
    let port = free_port(vip);
    let proxy = UserspaceProxy::new(UserspaceConfig::default().drain_timeout(Duration::from_millis(400)));
    proxy.apply(&upsert(service("drain", Protocol::Tcp, vip, port, &[a]))).await.expect("apply");
    let (name, mut old) = greet(SocketAddr::new(vip, port)).await;
    assert_eq!(name, "a");
    proxy.apply(&upsert(service("drain", Protocol::Tcp, vip, port, &[b]))).await.expect("apply");
    for _ in 0..3 {
        assert_eq!(greet(SocketAddr::new(vip, port)).await.0, "b");
    }
    // The old connection still works during the drain time...
    old.write_all(b"x").await.expect("write");
    let mut buf = [0u8; 1];
    old.read_exact(&mut buf).await.expect("still open while draining");
    // ...and is closed after it.
    let n = tokio::time::timeout(Duration::from_secs(5), old.read(&mut buf)).await.expect("closed in time");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");

    proxy
        .apply(&TableDiff { full: false, upserted: Vec::new(), removed: vec![service("drain", Protocol::Tcp, vip, port, &[]).name] })
        .await
        .expect("apply");
    assert!(proxy.listening().await.is_empty());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(tokio::net::TcpStream::connect((vip, port)).await.is_err(), "listener closed with its service");
}

#[tokio::test]
async fn udp_sessions_relay_replies_and_move_when_the_endpoint_goes_away() {
    let (a, _ta) = udp_named_echo(ip(32), "a").await;
    let (b, _tb) = udp_named_echo(ip(33), "b").await;
    let vip = ip(31);
    let port = free_port(vip);
    let proxy = UserspaceProxy::new(UserspaceConfig::default());
    proxy.apply(&upsert(service("dns", Protocol::Udp, vip, port, &[a]))).await.expect("apply");
    let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind");
    client.connect((vip, port)).await.expect("connect");
    let mut buf = [0u8; 64];
    for i in 0..3 {
        client.send(format!("q{i}").as_bytes()).await.expect("send");
        let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf)).await.expect("reply in time").expect("recv");
        assert_eq!(&buf[..n], format!("a:q{i}").as_bytes());
    }
    proxy.apply(&upsert(service("dns", Protocol::Udp, vip, port, &[b]))).await.expect("apply");
    tokio::time::sleep(Duration::from_millis(20)).await;
    client.send(b"q9").await.expect("send");
    let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf)).await.expect("reply in time").expect("recv");
    assert_eq!(&buf[..n], b"b:q9", "no stale session to the removed endpoint");
}

#[tokio::test]
async fn a_full_resync_drops_ports_it_does_not_list() {
    let (a, _ta) = tcp_named_echo(ip(42), "a").await;
    let vip = ip(41);
    let (p1, p2) = (free_port(vip), free_port(ip(43)));
    let proxy = UserspaceProxy::new(UserspaceConfig::default());
    let s1 = service("one", Protocol::Tcp, vip, p1, &[a]);
    let s2 = service("two", Protocol::Tcp, ip(43), p2, &[a]);
    proxy.apply(&TableDiff { full: true, upserted: vec![arc(s1.clone()), arc(s2)], removed: vec![] }).await.expect("apply");
    assert_eq!(proxy.listening().await.len(), 2);
    proxy.apply(&TableDiff { full: true, upserted: vec![arc(s1)], removed: vec![] }).await.expect("apply");
    let l = proxy.listening().await;
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].0.name, "one");
    assert_eq!(greet(SocketAddr::new(vip, p1)).await.0, "a");
}
