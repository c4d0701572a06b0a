//! Ingress (networking.k8s.io/v1): an HTTP/1.1 and HTTP/2 reverse proxy on hyper that routes by host
//! and path to service endpoints from the service table, terminates TLS with certificates from
//! `spec.tls` Secrets (rustls), and swaps routes without dropping connections.

mod resolve;
mod routes;
mod tls;

pub use routes::{Backend, ClassConfig, PathKind, PortRef, RouteTable, is_ours};
pub use tls::{CertStore, TlsError, certified_key_from_secret};

use crate::sync::TableHandle;
use bosun_core::ObjectKey;
use bosun_core::k8s_openapi::api::core::v1::Secret;
use bosun_core::k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use bosun_core::watch::{Informer, Informers};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Errors of the ingress proxy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngressError {
    /// A listener could not be bound.
    #[error("bind {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The TLS configuration could not be built.
    #[error("tls config")]
    Tls(#[source] rustls::Error),
}

type Body = BoxBody<Bytes, hyper::Error>;

fn text(status: StatusCode, msg: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(msg.as_bytes())).map_err(|never| match never {}).boxed());
    *r.status_mut() = status;
    r
}

const HOP_BY_HOP: [&str; 8] =
    ["connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"];

/// The proxy: a route table it swaps atomically, and the service table it finds endpoints in.
/// Cheap to clone; clones share routes.
#[derive(Clone)]
pub struct IngressProxy {
    routes: Arc<RwLock<Arc<RouteTable>>>,
    services: TableHandle,
    client: Client<HttpConnector<resolve::BackendResolver>, Incoming>,
    next: Arc<AtomicUsize>,
}

impl IngressProxy {
    /// A proxy with no routes (every request gets 404 until routes are set).
    pub fn new(services: TableHandle) -> Self {
        // Upstream URIs name a backend and the endpoint to try first (see `resolve`); the connector
        // tries the backend's other endpoints in turn when a connect fails.
        let mut connector = HttpConnector::new_with_resolver(resolve::BackendResolver::new(services.clone()));
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).set_host(false).build(connector);
        Self { routes: Arc::default(), services, client, next: Arc::default() }
    }

    /// Swaps in a new route table; requests from now on use it, open connections stay open.
    pub fn set_routes(&self, routes: RouteTable) {
        *self.routes.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(routes);
    }

    /// The current route table.
    pub fn routes(&self) -> Arc<RouteTable> {
        self.routes.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Serves plain HTTP (HTTP/1.1, and HTTP/2 with prior knowledge) on `addr`.
    pub async fn serve_http(&self, addr: SocketAddr) -> Result<IngressServer, IngressError> {
        self.serve(addr, None).await
    }

    /// Serves HTTPS (ALPN `h2` and `http/1.1`) on `addr` with the certificates of the route table.
    pub async fn serve_https(&self, addr: SocketAddr) -> Result<IngressServer, IngressError> {
        let resolver = Arc::new(tls::RouteCertResolver { routes: self.routes.clone() });
        let config = tls::server_config(resolver).map_err(IngressError::Tls)?;
        self.serve(addr, Some(tokio_rustls::TlsAcceptor::from(config))).await
    }

    async fn serve(&self, addr: SocketAddr, tls: Option<tokio_rustls::TlsAcceptor>) -> Result<IngressServer, IngressError> {
        let listener = TcpListener::bind(addr).await.map_err(|source| IngressError::Bind { addr, source })?;
        let local = listener.local_addr().map_err(|source| IngressError::Bind { addr, source })?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(self.clone(), listener, tls, stopped));
        Ok(IngressServer { addr: local, stop, task: Some(task) })
    }

    /// The upstream authority for a backend: round robin picks the endpoint tried first.
    fn upstream(&self, backend: &Backend) -> Option<String> {
        let n = resolve::endpoints(&self.services, backend).len();
        if n == 0 {
            return None;
        }
        Some(resolve::upstream_host(backend, self.next.fetch_add(1, Ordering::Relaxed) % n))
    }

    /// Routes and forwards one request.
    async fn handle(&self, mut req: Request<Incoming>, client: SocketAddr, https: bool) -> Response<Body> {
        let host = req
            .uri()
            .host()
            .map(str::to_owned)
            .or_else(|| {
                req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(|h| h.rsplit_once(':').map_or(h, |(h, _)| h).to_owned())
            })
            .unwrap_or_default();
        let routes = self.routes();
        let Some(backend) = routes.route(&host, req.uri().path()) else {
            return text(StatusCode::NOT_FOUND, "no ingress rule matches\n");
        };
        let Some(endpoint) = self.upstream(backend) else {
            return text(StatusCode::SERVICE_UNAVAILABLE, "no ready endpoint\n");
        };
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let Ok(uri) = Uri::try_from(format!("http://{endpoint}{path}")) else {
            return text(StatusCode::BAD_REQUEST, "bad request target\n");
        };
        let authority = req.uri().authority().map(|a| a.to_string());
        *req.uri_mut() = uri;
        *req.version_mut() = http::Version::HTTP_11;
        let headers = req.headers_mut();
        for h in HOP_BY_HOP {
            headers.remove(h);
        }
        if !headers.contains_key(header::HOST)
            && let Some(v) = authority.as_deref().and_then(|a| HeaderValue::from_str(a).ok())
        {
            headers.insert(header::HOST, v);
        }
        let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prev) => format!("{prev}, {}", client.ip()),
            None => client.ip().to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            headers.insert("x-forwarded-for", v);
        }
        headers.insert("x-forwarded-proto", HeaderValue::from_static(if https { "https" } else { "http" }));
        match self.client.request(req).await {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                for h in HOP_BY_HOP {
                    parts.headers.remove(h);
                }
                Response::from_parts(parts, body.boxed())
            }
            Err(error) => {
                tracing::debug!(%endpoint, %error, "upstream request failed");
                text(StatusCode::BAD_GATEWAY, "upstream failed\n")
            }
        }
    }
}

async fn accept_loop(proxy: IngressProxy, listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>, mut stop: watch::Receiver<bool>) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, client) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(error) => {
                    tracing::warn!(%error, "ingress accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.wait_for(|s| *s).map(|_| ()) => break,
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let https = tls.is_some();
        let service = hyper::service::service_fn(move |req| {
            let proxy = proxy.clone();
            async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, client, https).await) }
        });
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        match &tls {
            None => {
                let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(error) = conn.await {
                        tracing::debug!(%error, "ingress connection ended with an error");
                    }
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(error)) => return tracing::debug!(%error, "tls handshake failed"),
                        Err(_) => return tracing::debug!("tls handshake timed out"),
                    };
                    let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    if let Err(error) = watcher.watch(conn).await {
                        tracing::debug!(%error, "ingress connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
}

impl IngressController {
    /// Writes `address` into the status of the Ingresses served and removes it from the others that
    /// still carry it. A failed write is retried on the next change or resync.
    async fn publish(&self, address: &StatusAddress, all: &[Arc<Ingress>], served: &[ObjectKey]) {
        let ours = address.to_json();
        for ing in all {
            let key = ObjectKey::of(&**ing);
            let current = ing
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|l| l.ingress.as_ref())
                .and_then(|i| serde_json::to_value(i).ok())
                .unwrap_or_else(|| serde_json::json!([]));
            let want = if served.contains(&key) {
                ours.clone()
            } else if current == ours {
                serde_json::json!([])
            } else {
                continue;
            };
            if current == want {
                continue;
            }
            let (Some(ns), Some(name)) = (ing.metadata.namespace.as_deref(), ing.metadata.name.as_deref()) else { continue };
            let api = bosun_core::Api::<Ingress>::namespaced(self.informers.client().clone(), ns);
            let patch = bosun_core::client::Patch::Merge(serde_json::json!({ "status": { "loadBalancer": { "ingress": want } } }));
            match api.patch_status(name, &patch, &bosun_core::client::PatchParams::default()).await {
                Ok(_) => tracing::debug!(ingress = %key, "ingress status written"),
                Err(error) => tracing::warn!(ingress = %key, %error, "cannot write ingress status"),
            }
        }
    }
}

/// A running ingress listener; it stops when dropped.
pub struct IngressServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl IngressServer {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets open requests finish (up to 10 s) and waits.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for IngressServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Watches Ingresses, IngressClasses and Secrets and keeps an [`IngressProxy`]'s routes current.
#[must_use = "an IngressController does nothing until run or spawned"]
pub struct IngressController {
    informers: Informers,
    proxy: IngressProxy,
    config: ClassConfig,
    address: Option<StatusAddress>,
}

/// The address an [`IngressController`] publishes in the `status.loadBalancer.ingress` of the
/// Ingresses it serves (what `kubectl get ingress` shows as ADDRESS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusAddress {
    /// An IP address.
    Ip(std::net::IpAddr),
    /// A DNS name.
    Hostname(String),
}

impl StatusAddress {
    fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Ip(ip) => serde_json::json!([{ "ip": ip.to_string() }]),
            Self::Hostname(h) => serde_json::json!([{ "hostname": h }]),
        }
    }
}

impl IngressController {
    /// A controller feeding `proxy`.
    pub fn new(informers: Informers, proxy: IngressProxy) -> Self {
        Self { informers, proxy, config: ClassConfig::default(), address: None }
    }

    /// Publish `address` in the status of every Ingress served, and take it out of Ingresses no
    /// longer served (default: no status is written).
    pub fn status_address(mut self, address: StatusAddress) -> Self {
        self.address = Some(address);
        self
    }

    /// Which classes are ours (default: IngressClasses with controller `bosun.dev/ingress`).
    pub fn class(mut self, config: ClassConfig) -> Self {
        self.config = config;
        self
    }

    /// Runs on a task of its own.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    /// Rebuilds the route table on every change, until the informers stop.
    pub async fn run(self) {
        let ingresses: Informer<Ingress> = self.informers.all();
        let classes: Informer<IngressClass> = self.informers.all();
        let secrets: Informer<Secret> = self.informers.all();
        let mut changes = futures::stream::select_all([
            ingresses.subscribe().map(|_| ()).boxed(),
            classes.subscribe().map(|_| ()).boxed(),
            secrets.subscribe().map(|_| ()).boxed(),
        ]);
        ingresses.wait_ready().await;
        classes.wait_ready().await;
        secrets.wait_ready().await;
        loop {
            let store = secrets.store().clone();
            let lookup = move |ns: &str, name: &str| store.get(&ObjectKey::new(Some(ns), name));
            let table = RouteTable::build(&ingresses.store().list(), &classes.store().list(), &lookup, &self.config);
            tracing::debug!(ingresses = table.ingresses.len(), "ingress routes rebuilt");
            if let Some(address) = &self.address {
                self.publish(address, &ingresses.store().list(), &table.ingresses).await;
            }
            self.proxy.set_routes(table);
            if changes.next().await.is_none() {
                return;
            }
            while let Some(Some(())) = changes.next().now_or_never() {}
        }
    }
}
