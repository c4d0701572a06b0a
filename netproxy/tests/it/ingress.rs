//! The ingress proxy with real HTTP/1.1, HTTP/2 and TLS on loopback.

use crate::support::*;
use bosun_core::k8s_openapi::api::core::v1::Secret;
use bosun_core::k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use bosun_netproxy::ingress::{ClassConfig, RouteTable};
use bosun_netproxy::{IngressProxy, TableHandle};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;

/// An HTTP/1.1 backend answering `name path proto`.
async fn backend(name: &'static str) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.73.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| async move {
                let proto = req.headers().get("x-forwarded-proto").and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
                let host = req.headers().get("host").and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
                let body = format!("{name} {} {proto} {host}", req.uri().path());
                Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(Bytes::from(body))))
            });
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc));
        }
    });
    addr
}

async fn services() -> TableHandle {
    let t = TableHandle::new();
    for (name, vip, port, port_name) in [("a", "10.96.1.1", 80, "http"), ("b", "10.96.1.2", 8080, "web"), ("def", "10.96.1.3", 80, "")] {
        let ep = backend(name).await;
        put(
            &t,
            &k8s_service("shop", name, json!({"clusterIP": vip, "ports": [{"name": port_name, "port": port}]})),
            vec![k8s_slice(
                "shop",
                name,
                &format!("{name}-1"),
                json!([{"addresses": [ep.ip().to_string()]}]),
                json!([{"name": port_name, "port": ep.port()}]),
            )],
        );
    }
    t
}

fn class(name: &str, controller: &str) -> Arc<IngressClass> {
    Arc::new(serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"controller": controller}})).expect("class"))
}

fn ingress(name: &str, spec: serde_json::Value) -> Arc<Ingress> {
    Arc::new(serde_json::from_value(json!({"metadata": {"name": name, "namespace": "shop"}, "spec": spec})).expect("ingress"))
}

fn svc_backend(name: &str, port: serde_json::Value) -> serde_json::Value {
    json!({"service": {"name": name, "port": port}})
}

fn routes(secrets: Vec<Secret>, swap: bool) -> RouteTable {
    let target = if swap { "b" } else { "a" };
    let port = if swap { json!({"name": "web"}) } else { json!({"number": 80}) };
    let main = ingress(
        "main",
        json!({
            "ingressClassName": "bosun",
            "defaultBackend": svc_backend("def", json!({"number": 80})),
            "tls": [{"hosts": ["secure.example.com"], "secretName": "tls"}],
            "rules": [
                {"host": "foo.example.com", "http": {"paths": [
                    {"path": "/api", "pathType": "Prefix", "backend": svc_backend(target, port.clone())},
                    {"path": "/exact", "pathType": "Exact", "backend": svc_backend("b", json!({"name": "web"}))},
                    {"path": "/api/v2", "pathType": "ImplementationSpecific", "backend": svc_backend("b", json!({"number": 8080}))}
                ]}},
                {"host": "*.bar.com", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": svc_backend("b", json!({"number": 8080}))}]}},
                {"host": "secure.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": svc_backend(target, port)}]}},
                {"http": {"paths": [{"path": "/any", "pathType": "Prefix", "backend": svc_backend("a", json!({"name": "http"}))}]}}
            ]
        }),
    );
    let foreign = ingress(
        "foreign",
        json!({"ingressClassName": "other", "rules": [{"host": "other.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": svc_backend("a", json!({"number": 80}))}]}}]}),
    );
    let classes = [class("bosun", "bosun.dev/ingress"), class("other", "example.com/other")];
    let secrets: Vec<Arc<Secret>> = secrets.into_iter().map(Arc::new).collect();
    let lookup = move |ns: &str, name: &str| {
        secrets.iter().find(|s| s.metadata.namespace.as_deref() == Some(ns) && s.metadata.name.as_deref() == Some(name)).cloned()
    };
    RouteTable::build(&[main, foreign], &classes, &lookup, &ClassConfig::default())
}

async fn get_h1(sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>, host: &str, path: &str) -> (u16, String) {
    let req = Request::get(path).header("host", host).body(Empty::new()).expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn h1(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    sender
}

#[tokio::test]
async fn http1_routes_by_host_and_path_with_class_selection_and_a_default_backend() {
    let proxy = IngressProxy::new(services().await);
    proxy.set_routes(routes(vec![], false));
    let server = proxy.serve_http("127.0.73.2:0".parse().expect("addr")).await.expect("serve");
    let mut c = h1(server.local_addr()).await;
    let cases = [
        ("foo.example.com", "/api", "a /api http"),
        ("foo.example.com", "/api/users", "a /api/users http"),
        ("foo.example.com", "/api/v2/x", "b /api/v2/x http"),
        ("foo.example.com", "/apix", "def /apix http"),
        ("foo.example.com", "/exact", "b /exact http"),
        ("foo.example.com", "/exact/no", "def /exact/no http"),
        ("x.bar.com", "/", "b / http"),
        ("y.x.bar.com", "/", "def / http"),
        ("anything.net", "/any/thing", "a /any/thing http"),
        ("other.com", "/", "def / http"),
    ];
    for (host, path, want) in cases {
        let (status, body) = get_h1(&mut c, host, path).await;
        assert_eq!(status, 200, "{host}{path}");
        assert!(body.starts_with(want), "{host}{path}: got {body:?}, want {want:?}");
        assert!(body.ends_with(host), "the Host header is passed on: {body}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn routes_swap_under_open_http1_and_http2_connections() {
    let proxy = IngressProxy::new(services().await);
    proxy.set_routes(routes(vec![], false));
    let server = proxy.serve_http("127.0.73.3:0".parse().expect("addr")).await.expect("serve");
    let mut c1 = h1(server.local_addr()).await;
    let stream = TcpStream::connect(server.local_addr()).await.expect("connect");
    let (mut c2, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.expect("h2");
    tokio::spawn(conn);
    let h2_get = |c2: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>| {
        let req = Request::get("http://foo.example.com/api").body(Empty::new()).expect("request");
        let f = c2.send_request(req);
        async move {
            let resp = f.await.expect("h2 response");
            assert_eq!(resp.version(), hyper::Version::HTTP_2);
            String::from_utf8_lossy(&resp.into_body().collect().await.expect("body").to_bytes()).into_owned()
        }
    };
    assert!(get_h1(&mut c1, "foo.example.com", "/api").await.1.starts_with("a "));
    assert!(h2_get(&mut c2).await.starts_with("a "));
    proxy.set_routes(routes(vec![], true));
    assert!(get_h1(&mut c1, "foo.example.com", "/api").await.1.starts_with("b "), "same HTTP/1.1 connection, new route");
    assert!(h2_get(&mut c2).await.starts_with("b "), "same HTTP/2 connection, new route");
    assert!(!c1.is_closed());
    server.shutdown().await;
}

#[tokio::test]
async fn tls_terminates_with_the_secret_of_spec_tls_over_h2_and_http1() {
    let cert = rcgen::generate_simple_self_signed(vec!["secure.example.com".to_owned()]).expect("cert");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "tls", "namespace": "shop"}, "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": cert.cert.pem(), "tls.key": cert.signing_key.serialize_pem()}
    }))
    .expect("secret");
    let proxy = IngressProxy::new(services().await);
    proxy.set_routes(routes(vec![secret], false));
    let server = proxy.serve_https("127.0.73.4:0".parse().expect("addr")).await.expect("serve");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    for alpn in [&b"h2"[..], &b"http/1.1"[..]] {
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(server.local_addr()).await.expect("connect");
        let name = rustls_pki_types::ServerName::try_from("secure.example.com").expect("name");
        let tls = connector.connect(name, tcp).await.expect("handshake with the secret's certificate");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
        let body = if alpn == b"h2" {
            let (mut c, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.expect("h2");
            tokio::spawn(conn);
            let req = Request::get("https://secure.example.com/page").body(Empty::<Bytes>::new()).expect("request");
            let resp = c.send_request(req).await.expect("response");
            resp.into_body().collect().await.expect("body").to_bytes()
        } else {
            let (mut c, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.expect("h1");
            tokio::spawn(conn);
            let req = Request::get("/page").header("host", "secure.example.com").body(Empty::<Bytes>::new()).expect("request");
            let resp = c.send_request(req).await.expect("response");
            resp.into_body().collect().await.expect("body").to_bytes()
        };
        assert_eq!(String::from_utf8_lossy(&body), "a /page https secure.example.com", "alpn {alpn:?}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn the_controller_follows_ingress_objects_from_the_api_server_retries_dead_endpoints_and_writes_status() {
    use bosun_core::{Api, Client, PostParams};
    use bosun_netproxy::ingress::StatusAddress;
    use bosun_netproxy::{IngressController, NodeContext, ServiceProxy};
    let server = bosun_store::ApiServer::in_memory();
    let client: Arc<dyn Client> = server;
    let informers = bosun_core::watch::Informers::new(client.clone());
    let ep = backend("live").await;
    let pp = PostParams::default();
    Api::<bosun_core::k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), "default")
        .create(&k8s_service("default", "live", json!({"ports": [{"name": "http", "port": 80}]})), &pp)
        .await
        .expect("service");
    Api::<bosun_core::k8s_openapi::api::discovery::v1::EndpointSlice>::namespaced(client.clone(), "default")
        .create(
            &k8s_slice(
                "default",
                "live",
                "live-1",
                // Nothing listens on the second address: connects to it are refused.
                json!([{"addresses": [ep.ip().to_string()]}, {"addresses": ["127.0.73.9"]}]),
                json!([{"name": "http", "port": ep.port()}]),
            ),
            &pp,
        )
        .await
        .expect("slice");
    let sp = ServiceProxy::new(informers.clone(), NodeContext::default());
    let table = sp.table();
    let _sp = sp.spawn();
    let proxy = IngressProxy::new(table.clone());
    let published: std::net::IpAddr = "127.0.73.5".parse().expect("ip");
    let _ic = IngressController::new(informers, proxy.clone()).status_address(StatusAddress::Ip(published)).spawn();
    let http = proxy.serve_http("127.0.73.5:0".parse().expect("addr")).await.expect("serve");

    let class: IngressClass = serde_json::from_value(json!({"metadata": {"name": "bosun", "annotations": {
        "ingressclass.kubernetes.io/is-default-class": "true"}}, "spec": {"controller": "bosun.dev/ingress"}}))
    .expect("class");
    Api::<IngressClass>::all(client.clone()).create(&class, &pp).await.expect("class");
    // No class named: the default class claims it.
    let ing: Ingress = serde_json::from_value(json!({"metadata": {"name": "live", "namespace": "default"}, "spec": {"rules": [
        {"host": "live.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": svc_backend("live", json!({"name": "http"}))}]}}
    ]}}))
    .expect("ingress");
    Api::<Ingress>::namespaced(client.clone(), "default").create(&ing, &pp).await.expect("ingress");

    let mut c = h1(http.local_addr()).await;
    let mut last = (0, String::new());
    for _ in 0..100 {
        last = get_h1(&mut c, "live.example.com", "/hello").await;
        if last.0 == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(last.0, 200, "{last:?}");
    assert!(last.1.starts_with("live /hello http"), "{last:?}");
    // Round robin makes every other request try the dead endpoint first; each moves on to the live one.
    for i in 0..6 {
        let mut fresh = h1(http.local_addr()).await;
        let (status, body) = get_h1(&mut fresh, "live.example.com", &format!("/r{i}")).await;
        assert_eq!((status, body.starts_with(&format!("live /r{i} "))), (200, true), "request {i}: {body}");
    }
    // The served Ingress carries our address in its status (kubectl's ADDRESS column).
    let api = Api::<Ingress>::namespaced(client.clone(), "default");
    let mut address = None;
    for _ in 0..100 {
        let ing = api.get("live").await.expect("get");
        address = ing.status.and_then(|s| s.load_balancer).and_then(|l| l.ingress).and_then(|i| i.first().and_then(|a| a.ip.clone()));
        if address.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(address.as_deref(), Some("127.0.73.5"));
    // Handed to another class: the address is taken out again.
    let other: IngressClass =
        serde_json::from_value(json!({"metadata": {"name": "other"}, "spec": {"controller": "example.com/other"}})).expect("class");
    Api::<IngressClass>::all(client.clone()).create(&other, &pp).await.expect("class");
    let patch = bosun_core::client::Patch::Merge(json!({"spec": {"ingressClassName": "other"}}));
    api.patch("live", &patch, &bosun_core::client::PatchParams::default()).await.expect("patch");
    for _ in 0..100 {
        let ing = api.get("live").await.expect("get");
        address = ing.status.and_then(|s| s.load_balancer).and_then(|l| l.ingress).and_then(|i| i.first().and_then(|a| a.ip.clone()));
        if address.is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(address, None, "the status no longer names us");
    http.shutdown().await;
}
