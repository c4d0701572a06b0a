//! The custom_proxy example's `HaproxyBackend` driving a real HAProxy: a Service and its
//! EndpointSlice become a `listen` section that carries traffic to the endpoint, an endpoint change
//! reloads HAProxy onto the new one, a deleted Service stops being served.

use bosun_core::k8s_openapi::api::core::v1::Service;
use bosun_core::k8s_openapi::api::discovery::v1::EndpointSlice;
use bosun_core::watch::Informers;
use bosun_core::{Api, Client, DeleteParams, Patch, PatchParams, PostParams};
use bosun_examples::haproxy::HaproxyBackend;
use bosun_netproxy::{NodeContext, ProxyBackend, ServiceProxy};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn skip() -> bool {
    if std::process::Command::new("haproxy").arg("-v").output().is_ok_and(|o| o.status.success()) {
        return false;
    }
    if std::env::var("BOSUN_REQUIRE_COMPONENTS").is_ok_and(|v| v == "1") {
        panic!("the custom_proxy test needs haproxy (Debian package haproxy) (BOSUN_REQUIRE_COMPONENTS=1)");
    }
    eprintln!("SKIPPING custom_proxy test: haproxy is not installed (apt-get install haproxy)");
    true
}

/// A TCP server on `ip` greeting each connection with `name`.
async fn greeter(ip: &str, name: &'static str) -> SocketAddr {
    let l = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.write_all(format!("{name}\n").as_bytes()).await;
        }
    });
    addr
}

/// The greeting through `to`, or the error.
async fn ask(to: SocketAddr) -> Result<String, String> {
    let s = tokio::net::TcpStream::connect(to).await.map_err(|e| e.to_string())?;
    let mut line = String::new();
    let read = tokio::time::timeout(Duration::from_secs(2), BufReader::new(s).read_line(&mut line)).await;
    match read {
        Ok(Ok(n)) if n > 0 => Ok(line.trim().to_owned()),
        Ok(Ok(_)) => Err("closed without a greeting".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// Asks until the answer is `want` (HAProxy reloads in the background), up to 15 s.
async fn until(to: SocketAddr, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let got = ask(to).await;
        if got.as_deref() == Ok(want) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{to}: wanted {want:?}, still {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn slice(ep: SocketAddr) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": "web-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ep.ip().to_string()]}],
        "ports": [{"name": "http", "port": ep.port()}],
    }))
    .expect("slice")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_follows_services_and_endpoint_slices() {
    if skip() {
        return;
    }
    let client: Arc<dyn Client> = bosun_store::ApiServer::builder(Arc::new(bosun_store::MemoryStorage::new()))
        .cluster_ip_range("127.0.93.0/24")
        .build()
        .expect("api server");
    let a = greeter("127.0.94.1", "a").await;
    let b = greeter("127.0.94.2", "b").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Arc::new(HaproxyBackend::new(dir.path()));
    let proxy =
        ServiceProxy::new(Informers::new(client.clone()), NodeContext::new("node-a")).backend_arc(backend.clone() as Arc<dyn ProxyBackend>);
    let task = proxy.spawn();

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let port = std::net::TcpListener::bind("127.0.93.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let svc: Service =
        serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"ports": [{"name": "http", "port": port}]}})).expect("svc");
    let created = services.create(&svc, &PostParams::default()).await.expect("service");
    let vip = created.spec.and_then(|s| s.cluster_ip).expect("cluster ip");
    let to: SocketAddr = format!("{vip}:{port}").parse().expect("addr");
    slices.create(&slice(a), &PostParams::default()).await.expect("slice");
    until(to, "a").await;
    let cfg = std::fs::read_to_string(backend.config_path()).expect("config");
    assert!(cfg.contains(&format!("bind {to}")) && cfg.contains(&format!("server ep0 {a}")), "{cfg}");
    let first = backend.pid().expect("haproxy runs");

    // The endpoint moves: HAProxy is reloaded onto the new one.
    let moved = json!({"endpoints": [{"addresses": ["127.0.94.2"]}], "ports": [{"name": "http", "port": b.port()}]});
    slices.patch("web-1", &Patch::Merge(moved), &PatchParams::default()).await.expect("move endpoint");
    until(to, "b").await;
    for _ in 0..5 {
        assert_eq!(ask(to).await.as_deref(), Ok("b"), "only the new endpoint after the reload");
    }
    assert_ne!(backend.pid(), Some(first), "a new HAProxy process took over");

    // The Service goes: its section goes, nothing listens on the cluster IP any more.
    services.delete("web", &DeleteParams::default()).await.expect("delete");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while ask(to).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "{to} still served after the Service was deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!std::fs::read_to_string(backend.config_path()).expect("config").contains("listen"), "no section left");
    task.abort();
    backend.stop();
}
