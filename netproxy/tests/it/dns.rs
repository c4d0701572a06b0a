//! Cluster DNS answered over the wire to a real resolver (hickory-resolver) on a loopback port.

use crate::support::*;
use bosun_netproxy::{ClusterDns, TableHandle};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use serde_json::json;
use std::net::{IpAddr, SocketAddr};

fn resolver(server: SocketAddr, search: &[String]) -> TokioResolver {
    let mut udp = ConnectionConfig::udp();
    udp.port = server.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = server.port();
    let mut ns = NameServerConfig::udp_and_tcp(server.ip());
    ns.connections = vec![udp, tcp];
    let search = search.iter().map(|s| Name::from_ascii(format!("{s}.")).expect("name")).collect();
    let config = ResolverConfig::from_parts(None, search, vec![ns]);
    let mut opts = ResolverOpts::default();
    opts.ndots = 5;
    opts.cache_size = 0;
    opts.use_hosts_file = ResolveHosts::Never;
    opts.attempts = 1;
    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default()).with_options(opts).build().expect("resolver")
}

fn table() -> TableHandle {
    let t = TableHandle::new();
    put(
        &t,
        &k8s_service("shop", "web", json!({"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]})),
        vec![k8s_slice("shop", "web", "web-1", json!([{"addresses": ["10.1.0.9"]}]), json!([{"name": "http", "port": 8080}]))],
    );
    put(
        &t,
        &k8s_service("shop", "db", json!({"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]})),
        vec![k8s_slice(
            "shop",
            "db",
            "db-1",
            json!([
                {"addresses": ["10.1.0.1"], "hostname": "db-0"},
                {"addresses": ["10.1.0.2"], "hostname": "db-1"},
                {"addresses": ["10.1.0.3"], "hostname": "db-2", "conditions": {"ready": false}}
            ]),
            json!([{"name": "pg", "port": 5432}]),
        )],
    );
    put(&t, &k8s_service("shop", "ext", json!({"type": "ExternalName", "externalName": "example.org"})), vec![]);
    t
}

fn ips(l: &hickory_resolver::lookup_ip::LookupIp) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = l.iter().collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_real_resolver_gets_cluster_names_with_pod_search_domains() {
    let dns = ClusterDns::new(table());
    let search = dns.search_domains("shop");
    let server = dns.serve("127.0.72.1:0".parse().expect("addr")).await.expect("serve");
    let r = resolver(server.local_addr(), &search);

    // Short names through the pod's search path (ndots 5), and the full name.
    for name in ["web", "web.shop", "web.shop.svc", "web.shop.svc.cluster.local."] {
        let got = r.lookup_ip(name).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(ips(&got), ["10.96.0.10".parse::<IpAddr>().expect("ip")], "{name}");
    }
    // Headless: the ready pod IPs; StatefulSet pods by hostname.
    let got = r.lookup_ip("db.shop.svc.cluster.local.").await.expect("headless");
    assert_eq!(ips(&got), ["10.1.0.1".parse::<IpAddr>().expect("ip"), "10.1.0.2".parse().expect("ip")]);
    let got = r.lookup_ip("db-1.db").await.expect("statefulset pod");
    assert_eq!(ips(&got), ["10.1.0.2".parse::<IpAddr>().expect("ip")]);
    assert!(r.lookup_ip("db-2.db.shop.svc.cluster.local.").await.is_err(), "not-ready pods are not published");

    // SRV for named ports: the service for a ClusterIP service, each endpoint for a headless one.
    let srv = r.lookup("_http._tcp.web.shop.svc.cluster.local.", RecordType::SRV).await.expect("srv");
    let records: Vec<_> = srv.answers().iter().filter_map(|r| if let RData::SRV(s) = &r.data { Some(s.clone()) } else { None }).collect();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].port, 80);
    assert_eq!(records[0].target.to_ascii(), "web.shop.svc.cluster.local.");
    let srv = r.lookup("_pg._tcp.db.shop.svc.cluster.local.", RecordType::SRV).await.expect("srv");
    let mut targets: Vec<String> =
        srv.answers().iter().filter_map(|r| if let RData::SRV(s) = &r.data { Some(s.target.to_ascii()) } else { None }).collect();
    targets.sort();
    assert_eq!(targets, ["db-0.db.shop.svc.cluster.local.", "db-1.db.shop.svc.cluster.local."]);

    // ExternalName: a CNAME.
    let c = r.lookup("ext.shop.svc.cluster.local.", RecordType::CNAME).await.expect("cname");
    let cname = c.answers().iter().find_map(|r| if let RData::CNAME(n) = &r.data { Some(n.0.to_ascii()) } else { None });
    assert_eq!(cname.as_deref(), Some("example.org."));

    // Pod A records from the dashed IP.
    let got = r.lookup_ip("10-1-0-7.shop.pod.cluster.local.").await.expect("pod");
    assert_eq!(ips(&got), ["10.1.0.7".parse::<IpAddr>().expect("ip")]);

    // Unknown names do not exist; AAAA of an IPv4-only service is empty.
    assert!(r.lookup_ip("nope.shop.svc.cluster.local.").await.is_err());
    assert!(r.lookup("web.shop.svc.cluster.local.", RecordType::AAAA).await.map(|l| l.answers().is_empty()).unwrap_or(true));
    server.shutdown().await;
}

#[test]
fn the_answer_follows_table_changes_and_names_outside_the_zone_are_refused() {
    let t = table();
    let dns = ClusterDns::new(t.clone()).domain("cluster.local.");
    let name = Name::from_ascii("web.shop.svc.cluster.local.").expect("name");
    assert_eq!(dns.resolve(&name, RecordType::A).answers.len(), 1);
    put(&t, &k8s_service("shop", "web", json!({"clusterIP": "10.96.0.99", "ports": [{"port": 80}]})), vec![]);
    let a = dns.resolve(&name, RecordType::A);
    assert!(matches!(&a.answers[0].data, RData::A(ip) if ip.0 == std::net::Ipv4Addr::new(10, 96, 0, 99)));
    let other = dns.resolve(&Name::from_ascii("example.com.").expect("name"), RecordType::A);
    assert_eq!(other.code, hickory_resolver::proto::op::ResponseCode::Refused);
    assert!(
        dns.resolv_conf("10.96.0.10".parse().expect("ip"), "shop")
            .contains("search shop.svc.cluster.local svc.cluster.local cluster.local")
    );
}
