use super::*;
use serde_json::json;

fn svc(spec: serde_json::Value) -> Service {
    serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "ns"}, "spec": spec})).expect("service")
}

fn slice(endpoints: serde_json::Value, ports: serde_json::Value) -> Arc<EndpointSlice> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "ns", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "endpoints": endpoints, "ports": ports
        }))
        .expect("slice"),
    )
}

fn addrs(eps: &[Endpoint]) -> Vec<String> {
    eps.iter().map(|e| e.addr.to_string()).collect()
}

#[test]
fn cluster_ip_service_maps_named_ports_to_target_ports_of_ready_endpoints() {
    let s = svc(json!({"clusterIP": "10.96.0.5", "ports": [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]}));
    let sl = slice(
        json!([
            {"addresses": ["10.1.0.1"], "conditions": {"ready": true}},
            {"addresses": ["10.1.0.2"], "conditions": {"ready": false}},
            {"addresses": ["10.1.0.3"]}
        ]),
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}]),
    );
    let (info, ports) = build_service(&s, &[sl], &NodeContext::default()).expect("entry");
    assert_eq!(info.kind, ServiceKind::ClusterIp);
    assert_eq!(ports.len(), 2);
    let http = ports.iter().find(|p| p.name.port == "http").expect("http");
    assert_eq!(http.port, 80);
    assert_eq!(http.cluster_ips, vec!["10.96.0.5".parse::<IpAddr>().expect("ip")]);
    assert_eq!(addrs(&http.cluster_endpoints), ["10.1.0.1:8080", "10.1.0.3:8080"]);
    let dns = ports.iter().find(|p| p.name.port == "dns").expect("dns");
    assert_eq!(dns.name.protocol, Protocol::Udp);
    assert_eq!(addrs(&dns.cluster_endpoints), ["10.1.0.1:5353", "10.1.0.3:5353"]);
}

#[test]
fn terminating_serving_endpoints_are_used_only_when_none_is_ready() {
    let s = svc(json!({"clusterIP": "10.96.0.5", "ports": [{"port": 80}]}));
    let eps = json!([
        {"addresses": ["10.1.0.1"], "conditions": {"ready": false, "serving": true, "terminating": true}},
        {"addresses": ["10.1.0.2"], "conditions": {"ready": false, "serving": false, "terminating": true}}
    ]);
    let (_, ports) = build_service(&s, &[slice(eps, json!([{"port": 8080}]))], &NodeContext::default()).expect("entry");
    assert_eq!(addrs(&ports[0].cluster_endpoints), ["10.1.0.1:8080"]);

    let eps = json!([
        {"addresses": ["10.1.0.1"], "conditions": {"ready": false, "serving": true, "terminating": true}},
        {"addresses": ["10.1.0.3"], "conditions": {"ready": true}}
    ]);
    let (_, ports) = build_service(&s, &[slice(eps, json!([{"port": 8080}]))], &NodeContext::default()).expect("entry");
    assert_eq!(addrs(&ports[0].cluster_endpoints), ["10.1.0.3:8080"]);
}

#[test]
fn traffic_policies_local_select_this_nodes_endpoints() {
    let s = svc(json!({"clusterIP": "10.96.0.5", "type": "NodePort", "externalTrafficPolicy": "Local",
        "ports": [{"port": 80, "nodePort": 30080}]}));
    let eps = json!([
        {"addresses": ["10.1.0.1"], "nodeName": "a"},
        {"addresses": ["10.1.0.2"], "nodeName": "b"}
    ]);
    let sl = slice(eps, json!([{"port": 8080}]));
    let (_, ports) = build_service(&s, std::slice::from_ref(&sl), &NodeContext::new("a")).expect("entry");
    assert_eq!(ports[0].node_port, Some(30080));
    assert!(ports[0].external_local);
    assert_eq!(addrs(&ports[0].cluster_endpoints), ["10.1.0.1:8080", "10.1.0.2:8080"]);
    assert_eq!(addrs(&ports[0].external_endpoints), ["10.1.0.1:8080"]);

    let s = svc(json!({"clusterIP": "10.96.0.5", "internalTrafficPolicy": "Local", "ports": [{"port": 80}]}));
    let (_, ports) = build_service(&s, std::slice::from_ref(&sl), &NodeContext::new("b")).expect("entry");
    assert_eq!(addrs(&ports[0].cluster_endpoints), ["10.1.0.2:8080"]);
    let (_, ports) = build_service(&s, &[sl], &NodeContext::new("c")).expect("entry");
    assert!(ports[0].cluster_endpoints.is_empty(), "no fallback to remote endpoints under Local");
}

#[test]
fn topology_hints_keep_same_zone_endpoints_only_when_all_are_hinted() {
    let s = svc(json!({"clusterIP": "10.96.0.5", "ports": [{"port": 80}]}));
    let hinted = json!([
        {"addresses": ["10.1.0.1"], "zone": "z1", "hints": {"forZones": [{"name": "z1"}]}},
        {"addresses": ["10.1.0.2"], "zone": "z2", "hints": {"forZones": [{"name": "z2"}]}}
    ]);
    let node = NodeContext::new("a").zone("z2");
    let (_, ports) = build_service(&s, &[slice(hinted, json!([{"port": 8080}]))], &node).expect("entry");
    assert_eq!(addrs(&ports[0].cluster_endpoints), ["10.1.0.2:8080"]);

    let partly = json!([
        {"addresses": ["10.1.0.1"], "zone": "z1", "hints": {"forZones": [{"name": "z1"}]}},
        {"addresses": ["10.1.0.2"], "zone": "z2"}
    ]);
    let (_, ports) = build_service(&s, &[slice(partly, json!([{"port": 8080}]))], &node).expect("entry");
    assert_eq!(ports[0].cluster_endpoints.len(), 2);

    // PreferSameNode: node hints win over zone hints when every ready endpoint has them.
    let by_node = json!([
        {"addresses": ["10.1.0.1"], "zone": "z2", "hints": {"forZones": [{"name": "z2"}], "forNodes": [{"name": "b"}]}},
        {"addresses": ["10.1.0.2"], "zone": "z2", "hints": {"forZones": [{"name": "z2"}], "forNodes": [{"name": "a"}]}},
        {"addresses": ["10.1.0.3"], "zone": "z2", "hints": {"forZones": [{"name": "z2"}], "forNodes": [{"name": "c"}]}}
    ]);
    let (_, ports) = build_service(&s, &[slice(by_node.clone(), json!([{"port": 8080}]))], &node).expect("entry");
    assert_eq!(addrs(&ports[0].cluster_endpoints), ["10.1.0.2:8080"]);
    let (_, ports) = build_service(&s, &[slice(by_node, json!([{"port": 8080}]))], &NodeContext::new("d").zone("z2")).expect("entry");
    assert_eq!(ports[0].cluster_endpoints.len(), 3, "no endpoint for this node: the zone hints apply");
}

#[test]
fn load_balancer_is_a_node_port_plus_ingress_addresses_and_affinity_has_a_timeout() {
    let mut s = svc(json!({"clusterIP": "10.96.0.5", "type": "LoadBalancer", "sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
        "externalIPs": ["192.0.2.9"], "ports": [{"port": 80, "nodePort": 30001}]}));
    s.status = Some(serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}]}})).expect("status"));
    let (info, ports) = build_service(&s, &[], &NodeContext::default()).expect("entry");
    assert_eq!(info.kind, ServiceKind::LoadBalancer);
    assert_eq!(ports[0].node_port, Some(30001));
    assert_eq!(ports[0].external_ips.len(), 2);
    assert_eq!(ports[0].affinity, Affinity::ClientIp { timeout: Duration::from_secs(60) });
}

#[test]
fn headless_and_external_name_services_have_no_proxy_ports_but_dns_facts() {
    let s = svc(json!({"clusterIP": "None", "ports": [{"name": "web", "port": 80}]}));
    let eps = json!([
        {"addresses": ["10.1.0.1"], "hostname": "web-0"},
        {"addresses": ["10.1.0.2"], "hostname": "web-1", "conditions": {"ready": false}}
    ]);
    let (info, ports) = build_service(&s, &[slice(eps, json!([{"name": "web", "port": 8080}]))], &NodeContext::default()).expect("entry");
    assert!(ports.is_empty());
    assert_eq!(info.kind, ServiceKind::Headless);
    assert_eq!(info.dns_endpoints.len(), 1);
    assert_eq!(info.dns_endpoints[0].hostname.as_deref(), Some("web-0"));

    let s = svc(json!({"type": "ExternalName", "externalName": "example.org"}));
    let (info, ports) = build_service(&s, &[], &NodeContext::default()).expect("entry");
    assert!(ports.is_empty());
    assert_eq!(info.kind, ServiceKind::ExternalName("example.org".into()));
}

#[test]
fn table_diffs_carry_only_what_changed() {
    let mut table = crate::table::ServiceTable::new();
    let s = svc(json!({"clusterIP": "10.96.0.5", "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]}));
    let sl = slice(json!([{"addresses": ["10.1.0.1"]}]), json!([{"name": "a", "port": 8080}, {"name": "b", "port": 8081}]));
    let key = ObjectKey::new(Some("ns"), "web");
    let d = table.set_service(&key, build_service(&s, std::slice::from_ref(&sl), &NodeContext::default()));
    assert_eq!(d.upserted.len(), 2);
    let d = table.set_service(&key, build_service(&s, std::slice::from_ref(&sl), &NodeContext::default()));
    assert!(d.is_empty(), "an unchanged rebuild is no change: {d:?}");
    let sl2 = slice(json!([{"addresses": ["10.1.0.1"]}]), json!([{"name": "a", "port": 9090}, {"name": "b", "port": 8081}]));
    let d = table.set_service(&key, build_service(&s, std::slice::from_ref(&sl2), &NodeContext::default()));
    assert_eq!(d.upserted.len(), 1);
    assert_eq!(d.upserted[0].name.port, "a");
    let s1 = svc(json!({"clusterIP": "10.96.0.5", "ports": [{"name": "b", "port": 81}]}));
    let d = table.set_service(&key, build_service(&s1, &[sl2], &NodeContext::default()));
    assert_eq!(d.removed.len(), 1);
    assert!(d.upserted.is_empty());
    assert_eq!(table.ports_of(&key).count(), 1);
    let d = table.set_service(&key, None);
    assert_eq!(d.removed.len(), 1);
    assert!(table.is_empty());
}
