//! Helpers shared by the integration tests.

use bosun_netproxy::table::{Endpoint, Protocol, ProxyService, ServicePortName};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// Whether missing components must fail tests (CI) rather than skip them.
pub fn require_components() -> bool {
    std::env::var("BOSUN_REQUIRE_COMPONENTS").is_ok_and(|v| v == "1")
}

/// A free port on an address (racy but good enough on a private loopback address).
pub fn free_port(ip: IpAddr) -> u16 {
    std::net::TcpListener::bind((ip, 0)).and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

pub fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint::ready(addr)
}

pub fn service(name: &str, protocol: Protocol, ip: IpAddr, port: u16, endpoints: &[SocketAddr]) -> ProxyService {
    let name = ServicePortName { namespace: "default".into(), name: name.into(), port: String::new(), protocol };
    ProxyService::new(name, vec![ip], port, endpoints.iter().copied().map(endpoint).collect())
}

/// A TCP server that greets each connection with its name and a newline, then echoes.
pub async fn tcp_named_echo(ip: IpAddr, name: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind((ip, 0)).await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                if s.write_all(format!("{name}\n").as_bytes()).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// A UDP server that answers each datagram with its name, a colon and the datagram.
pub async fn udp_named_echo(ip: IpAddr, name: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let s = UdpSocket::bind((ip, 0)).await.expect("bind");
    let addr = s.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            let mut reply = format!("{name}:").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&reply, from).await;
        }
    });
    (addr, task)
}

/// Connects and reads the greeting line.
pub async fn greet(addr: SocketAddr) -> (String, TcpStream) {
    let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await.expect("connect in time").expect("connect");
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await.expect("greeting in time").expect("read");
        if n == 0 || b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
    }
    (String::from_utf8(line).expect("utf8"), s)
}

pub fn arc(s: ProxyService) -> Arc<ProxyService> {
    Arc::new(s)
}

/// A Service from JSON spec parts.
pub fn k8s_service(ns: &str, name: &str, spec: serde_json::Value) -> bosun_core::k8s_openapi::api::core::v1::Service {
    serde_json::from_value(serde_json::json!({"metadata": {"name": name, "namespace": ns}, "spec": spec})).expect("service")
}

/// An EndpointSlice for a service.
pub fn k8s_slice(
    ns: &str,
    svc: &str,
    slice: &str,
    endpoints: serde_json::Value,
    ports: serde_json::Value,
) -> bosun_core::k8s_openapi::api::discovery::v1::EndpointSlice {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": slice, "namespace": ns, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4", "endpoints": endpoints, "ports": ports
    }))
    .expect("slice")
}

/// Puts a service (built from its objects) into a table handle.
pub fn put(
    table: &bosun_netproxy::TableHandle,
    svc: &bosun_core::k8s_openapi::api::core::v1::Service,
    slices: Vec<bosun_core::k8s_openapi::api::discovery::v1::EndpointSlice>,
) {
    let slices: Vec<Arc<_>> = slices.into_iter().map(Arc::new).collect();
    let entry = bosun_netproxy::table::build_service(svc, &slices, &bosun_netproxy::NodeContext::default());
    let key = bosun_core::ObjectKey::new(svc.metadata.namespace.as_deref(), svc.metadata.name.clone().unwrap_or_default());
    table.update(|t| t.set_service(&key, entry));
}
