//! The table kept by watch against the in-process API server, driving a userspace proxy end to end.

use crate::support::*;
use bosun_core::k8s_openapi::api::core::v1::Service;
use bosun_core::k8s_openapi::api::discovery::v1::EndpointSlice;
use bosun_core::watch::Informers;
use bosun_core::{Api, Client, DeleteParams, PostParams};
use bosun_netproxy::table::TableDiff;
use bosun_netproxy::{ApplyError, NodeContext, ProxyBackend, ServiceProxy, UserspaceConfig, UserspaceProxy};
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<TableDiff>>>);

#[async_trait::async_trait]
impl ProxyBackend for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }
    async fn apply(&self, diff: &TableDiff) -> Result<(), ApplyError> {
        self.0.lock().expect("lock").push(diff.clone());
        Ok(())
    }
}

fn slice(ep: SocketAddr) -> EndpointSlice {
    k8s_slice(
        "default",
        "web",
        "web-1",
        json!([{"addresses": [ep.ip().to_string()], "nodeName": "node-a"}]),
        json!([{"name": "http", "port": ep.port()}]),
    )
}

#[tokio::test]
async fn services_and_endpoint_slices_drive_backends_with_a_resync_then_small_diffs() {
    let server = bosun_store::ApiServer::builder(Arc::new(bosun_store::MemoryStorage::new()))
        .cluster_ip_range("127.0.74.0/24")
        .build()
        .expect("api server");
    let client: Arc<dyn Client> = server;
    let (a, _ta) = tcp_named_echo("127.0.75.1".parse().expect("ip"), "a").await;
    let (b, _tb) = tcp_named_echo("127.0.75.2".parse().expect("ip"), "b").await;

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    // Something that exists before the proxy starts arrives in the full resync.
    let other = k8s_service("default", "other", json!({"ports": [{"name": "x", "port": 1}]}));
    services.create(&other, &PostParams::default()).await.expect("create other");

    let recorder = Recorder::default();
    let userspace = UserspaceProxy::new(UserspaceConfig::default());
    let proxy =
        ServiceProxy::new(Informers::new(client.clone()), NodeContext::new("node-a")).backend(recorder.clone()).backend(userspace.clone());
    let table = proxy.table();
    let _task = proxy.spawn();
    tokio::time::timeout(Duration::from_secs(10), table.wait_for(|t| t.len() == 1)).await.expect("initial sync");

    let port = free_port("127.0.74.1".parse().expect("ip"));
    let svc = k8s_service("default", "web", json!({"ports": [{"name": "http", "port": port, "targetPort": 9}]}));
    let created = services.create(&svc, &PostParams::default()).await.expect("create service");
    let vip: IpAddr = created.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()).expect("cluster ip allocated").parse().expect("ip");
    slices.create(&slice(a), &PostParams::default()).await.expect("create slice");
    let has = |ep: SocketAddr| {
        let table = table.clone();
        async move {
            tokio::time::timeout(
                Duration::from_secs(10),
                table.wait_for(|t| t.ports().any(|p| p.name.name == "web" && p.cluster_endpoints.iter().any(|e| e.addr == ep))),
            )
            .await
            .expect("table follows the slice");
        }
    };
    has(a).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(greet(SocketAddr::new(vip, port)).await.0, "a");

    let mut moved = slices.get("web-1").await.expect("get slice");
    moved.endpoints = slice(b).endpoints;
    moved.ports = slice(b).ports;
    slices.replace(&moved, &PostParams::default()).await.expect("replace slice");
    has(b).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(greet(SocketAddr::new(vip, port)).await.0, "b");

    services.delete("web", &DeleteParams::default()).await.expect("delete");
    tokio::time::timeout(Duration::from_secs(10), table.wait_for(|t| t.len() == 1)).await.expect("service gone");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(userspace.listening().await.iter().all(|(n, _)| n.name != "web"));

    let diffs = recorder.0.lock().expect("lock").clone();
    assert!(diffs[0].full, "the first apply is a full resync");
    assert_eq!(diffs[0].upserted.len(), 1);
    assert!(
        diffs[1..].iter().all(|d| !d.full && d.upserted.len() + d.removed.len() <= 1),
        "later applies carry only the change: {diffs:#?}"
    );
    assert!(diffs.iter().any(|d| d.removed.iter().any(|n| n.name == "web")));
}
