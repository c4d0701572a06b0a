//! A custom service proxy backend: `HaproxyBackend` (in `examples/src/haproxy.rs`) hands the
//! cluster's Services to HAProxy: each change of Services and EndpointSlices rewrites HAProxy's
//! configuration, checks it with `haproxy -c` and reloads HAProxy. A backend implements
//! `bosun_netproxy::ProxyBackend::apply`; `ServiceProxy` watches the API and calls it with what
//! changed.
//!
//! The program serves a greeting on 127.0.95.1, creates a Service and its EndpointSlice, then
//! connects to the Service's cluster IP through HAProxy. Needs `haproxy` on `PATH`
//! (`apt-get install haproxy`).
//!
//! `cargo run -p bosun-examples --example custom_proxy`

use bosun_core::k8s_openapi::api::core::v1::Service;
use bosun_core::k8s_openapi::api::discovery::v1::EndpointSlice;
use bosun_core::watch::Informers;
use bosun_core::{Api, Client, PostParams};
use bosun_examples::haproxy::HaproxyBackend;
use bosun_netproxy::{NodeContext, ProxyBackend, ServiceProxy};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Cluster IPs on loopback, so that HAProxy can bind them without setting up addresses.
    let client: Arc<dyn Client> =
        bosun_store::ApiServer::builder(Arc::new(bosun_store::MemoryStorage::new())).cluster_ip_range("127.0.96.0/24").build()?;
    let app = tokio::net::TcpListener::bind("127.0.95.1:0").await?;
    let app_addr = app.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = app.accept().await {
            let _ = s.write_all(b"hello from the endpoint\n").await;
        }
    });

    let dir = tempfile::tempdir()?;
    let backend = Arc::new(HaproxyBackend::new(dir.path()));
    let proxy =
        ServiceProxy::new(Informers::new(client.clone()), NodeContext::new("node-a")).backend_arc(backend.clone() as Arc<dyn ProxyBackend>);
    let table = proxy.table();
    let task = proxy.spawn();

    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "hello"}, "spec": {"ports": [{"name": "http", "port": 8080}]}}))?;
    let svc = Api::<Service>::namespaced(client.clone(), "default").create(&svc, &PostParams::default()).await?;
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "hello-1", "labels": {"kubernetes.io/service-name": "hello"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [app_addr.ip().to_string()]}],
        "ports": [{"name": "http", "port": app_addr.port()}],
    }))?;
    Api::<EndpointSlice>::namespaced(client.clone(), "default").create(&slice, &PostParams::default()).await?;
    tokio::time::timeout(Duration::from_secs(10), table.wait_for(|t| t.ports().any(|p| !p.cluster_endpoints.is_empty()))).await?;

    let vip = svc.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
    // HAProxy picks the new configuration up as it reloads: retry briefly.
    let mut answer = String::new();
    for _ in 0..50 {
        if let Ok(mut s) = tokio::net::TcpStream::connect((vip.as_str(), 8080)).await {
            answer.clear();
            if s.read_to_string(&mut answer).await.is_ok() && !answer.is_empty() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("--- {} ---\n{}", backend.config_path().display(), std::fs::read_to_string(backend.config_path()).unwrap_or_default());
    println!("{vip}:8080 through HAProxy answered: {}", answer.trim());
    task.abort();
    backend.stop();
    Ok(())
}
