//! Listeners and the top-level request handler: configuration, plain HTTP and HTTPS accept loops,
//! non-resource endpoints (discovery, OpenAPI, health, metrics) and the exec upgrade.

use super::body::{self, Body};
use super::catalog::{ResourceCatalog, StaticCatalog};
use super::lists::EncodedLists;
use super::metrics::Metrics;
use super::node::{ExecRequest, NodeConnector};
use super::openapi::OpenApi;
use super::rest::{self, Served, State};
use super::router::{self, Query, Route};
use super::tls::{SelfSignedCert, kubeconfig_yaml};
use super::{ServeError, discovery};
use base64::Engine as _;
use bosun_core::{Client, Error, Result};
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tracing::{Instrument, debug, info_span, warn};

/// How the HTTP server listens and what it serves.
#[derive(Clone)]
pub struct HttpConfig {
    addr: SocketAddr,
    https_addr: Option<SocketAddr>,
    tls_names: Vec<String>,
    catalog: Arc<dyn ResourceCatalog>,
    nodes: Option<Arc<dyn NodeConnector>>,
    lists: Option<Arc<dyn EncodedLists>>,
    max_body_bytes: usize,
    default_watch_timeout: Duration,
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig").field("addr", &self.addr).field("https_addr", &self.https_addr).finish_non_exhaustive()
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            https_addr: None,
            tls_names: Vec::new(),
            catalog: Arc::new(StaticCatalog::builtin()),
            nodes: None,
            lists: None,
            max_body_bytes: body::MAX_BODY_BYTES,
            default_watch_timeout: Duration::from_secs(1800),
        }
    }
}

impl HttpConfig {
    /// The default: plain HTTP on an ephemeral loopback port, no HTTPS, the built-in kinds.
    pub fn new() -> Self {
        Self::default()
    }

    /// The configuration for serving an [`ApiServer`](crate::ApiServer): it is the catalog (so
    /// custom resources appear), the source of pre-encoded lists, and its node connection (if any)
    /// serves logs and exec.
    pub fn for_api_server(api: &Arc<crate::api::ApiServer>) -> Self {
        let config = Self::default().catalog(api.clone()).encoded_lists(api.clone());
        match api.node_connector() {
            Some(nodes) => config.nodes(nodes.clone()),
            None => config,
        }
    }

    /// Where plain HTTP listens (default `127.0.0.1:0`, an ephemeral port).
    #[must_use]
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Also serves HTTPS here, with a self-signed certificate (default: no HTTPS).
    #[must_use]
    pub fn https(mut self, addr: SocketAddr) -> Self {
        self.https_addr = Some(addr);
        self
    }

    /// Extra DNS names or IPs for the HTTPS certificate (default: only `localhost` and `127.0.0.1`).
    #[must_use]
    pub fn tls_names(mut self, names: impl IntoIterator<Item = String>) -> Self {
        self.tls_names = names.into_iter().collect();
        self
    }

    /// What discovery, OpenAPI and routing serve (default: [`StaticCatalog::builtin`]).
    #[must_use]
    pub fn catalog(mut self, catalog: impl ResourceCatalog) -> Self {
        self.catalog = Arc::new(catalog);
        self
    }

    /// Where `pods/log` and `pods/exec` go (default: logs through [`Client::logs`], no exec).
    #[must_use]
    pub fn nodes(mut self, nodes: Arc<dyn NodeConnector>) -> Self {
        self.nodes = Some(nodes);
        self
    }

    /// Serves plain JSON lists from pre-encoded items (default: lists through [`Client::list`]).
    #[must_use]
    pub fn encoded_lists(mut self, lists: Arc<dyn EncodedLists>) -> Self {
        self.lists = Some(lists);
        self
    }

    /// The largest request body accepted (default 3 MiB; larger ones get 413).
    #[must_use]
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// How long a watch without `timeoutSeconds` lasts (default 30 minutes).
    #[must_use]
    pub fn default_watch_timeout(mut self, timeout: Duration) -> Self {
        self.default_watch_timeout = timeout;
        self
    }
}

/// A running server. Dropping it (or [`Server::shutdown`]) stops the listeners and open connections.
pub struct Server {
    addr: SocketAddr,
    https_addr: Option<SocketAddr>,
    cert: Option<SelfSignedCert>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("addr", &self.addr).field("https_addr", &self.https_addr).finish_non_exhaustive()
    }
}

impl Server {
    /// The bound plain-HTTP address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound HTTPS address, when HTTPS is on.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    /// `http://{addr}`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `https://{https_addr}`, when HTTPS is on.
    pub fn https_url(&self) -> Option<String> {
        self.https_addr.map(|a| format!("https://{a}"))
    }

    /// The CA certificate (PEM) clients must trust for HTTPS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.cert.as_ref().map(|c| c.ca_pem.as_str())
    }

    /// A kubeconfig pointing at the HTTPS listener when there is one, else at plain HTTP.
    pub fn kubeconfig(&self) -> String {
        match (self.https_url(), self.ca_pem()) {
            (Some(url), Some(ca)) => kubeconfig_yaml(&url, Some(ca)),
            _ => kubeconfig_yaml(&self.url(), None),
        }
    }

    /// Writes [`Server::kubeconfig`] to a file.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> Result<(), ServeError> {
        let path = path.as_ref();
        std::fs::write(path, self.kubeconfig()).map_err(|source| ServeError::Kubeconfig { path: path.to_owned(), source })
    }

    /// Stops accepting, closes open connections and waits for the listeners to end.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Serves the Kubernetes REST API for `client` as `config` says; returns once the listeners are bound.
pub async fn serve(client: Arc<dyn Client>, config: HttpConfig) -> Result<Server, ServeError> {
    let listener = TcpListener::bind(config.addr).await.map_err(|source| ServeError::Bind { addr: config.addr, source })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind { addr: config.addr, source })?;
    let https = match config.https_addr {
        Some(a) => {
            let l = TcpListener::bind(a).await.map_err(|source| ServeError::Bind { addr: a, source })?;
            let bound = l.local_addr().map_err(|source| ServeError::Bind { addr: a, source })?;
            let cert = SelfSignedCert::generate(&config.tls_names)?;
            let acceptor = tokio_rustls::TlsAcceptor::from(cert.server_config()?);
            Some((l, bound, cert, acceptor))
        }
        None => None,
    };
    let state = Arc::new(Shared {
        state: State {
            client,
            catalog: config.catalog.clone(),
            nodes: config.nodes.clone(),
            lists: config.lists.clone(),
            openapi: OpenApi::default(),
            metrics: Arc::new(Metrics::default()),
            max_body_bytes: config.max_body_bytes,
            default_watch_timeout: config.default_watch_timeout,
        },
        address: addr.to_string(),
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = vec![tokio::spawn(accept_loop(listener, None, state.clone(), stopped.clone()))];
    let (https_addr, cert) = match https {
        Some((l, bound, cert, acceptor)) => {
            tasks.push(tokio::spawn(accept_loop(l, Some(acceptor), state, stopped)));
            (Some(bound), Some(cert))
        }
        None => (None, None),
    };
    Ok(Server { addr, https_addr, cert, stop, tasks })
}

struct Shared {
    state: State,
    address: String,
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(error) => {
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(shared, req).await) }
            });
            let result = match tls {
                // Plain HTTP: HTTP/1.1, or HTTP/2 with prior knowledge (h2c), told apart by the preface.
                None => {
                    let builder = auto_builder();
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    tokio::select! {
                        r = conn => r,
                        _ = stopped.wait_for(|s| *s) => Ok(()),
                    }
                }
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls_stream) => {
                        // ALPN decides: `h2` gets HTTP/2; `http/1.1` or no ALPN (WebSocket and SPDY
                        // dialers) gets HTTP/1.1 with upgrades.
                        let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
                        let io = TokioIo::new(tls_stream);
                        if h2 {
                            let conn = h2_builder().serve_connection(io, service);
                            tokio::select! {
                                r = conn => r.map_err(Into::into),
                                _ = stopped.wait_for(|s| *s) => Ok(()),
                            }
                        } else {
                            let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service).with_upgrades();
                            tokio::select! {
                                r = conn => r.map_err(Into::into),
                                _ = stopped.wait_for(|s| *s) => Ok(()),
                            }
                        }
                    }
                    Err(error) => {
                        debug!(%error, %peer, "tls handshake failed");
                        Ok(())
                    }
                },
            };
            if let Err(error) = result {
                debug!(%error, %peer, "connection ended with an error");
            }
        });
    }
}

/// Concurrent streams per HTTP/2 connection (kube-apiserver's default for
/// `--http2-max-streams-per-connection`): watches are long-lived streams.
const H2_MAX_STREAMS: u32 = 1000;

fn h2_builder() -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder.max_concurrent_streams(H2_MAX_STREAMS);
    builder
}

fn auto_builder() -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http2().max_concurrent_streams(H2_MAX_STREAMS);
    builder
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let state = &shared.state;
    let span = info_span!("http.request", http.method = %req.method(), http.path = %req.uri().path());
    let mut served = Served { verb: "GET", resource: String::new() };
    state.metrics.protocol(req.version());
    let route = router::route(req.uri().path());
    let response = async {
        match route {
            Route::Resource(path) => rest::handle(state, req, path, &mut served).await,
            other => non_resource(&shared, req, other).await,
        }
    }
    .instrument(span)
    .await;
    if !served.resource.is_empty() {
        state.metrics.observe(served.verb, &served.resource, response.status().as_u16(), started.elapsed());
    }
    response
}

/// The media types of `/openapi/v2` as gnostic protobuf: what kube-apiserver answers with (a
/// valid MIME type), then the older spelling clients still ask for (`@` is not valid in a
/// response's Content-Type, which Go's MIME parser refuses).
const OPENAPI_V2_PROTOBUF: [&str; 2] =
    ["application/com.github.proto-openapi.spec.v2.v1.0+protobuf", "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"];

/// Whether `Accept` names this media type.
fn accepts(req: &Request<Incoming>, media: &str) -> bool {
    let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    accept.split(',').any(|part| part.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case(media)))
}

fn json_or_406(req: &Request<Incoming>) -> Result<()> {
    body::negotiate(req.headers()).map(|_| ())
}

async fn non_resource(shared: &Shared, req: Request<Incoming>, route: Route) -> Response<Body> {
    let state = &shared.state;
    // Discovery also lists the access and identity reviews, which no catalog holds.
    let resources: Vec<bosun_core::ApiResource> = match route {
        Route::CoreVersions | Route::Groups | Route::Group(_) | Route::Resources { .. } => {
            state.catalog.resources().iter().cloned().chain(super::review::resources()).collect()
        }
        _ => Vec::new(),
    };
    let not_found = || body::status_response(&Error::not_found("", "", "").with_404_message());
    let aggregated = discovery::wants_aggregated(req.headers());
    let ok = |v: &serde_json::Value| body::respond(StatusCode::OK, v, body::Output::Json);
    let agg = |v: &serde_json::Value| {
        let mut r = ok(v);
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(discovery::AGGREGATED_CONTENT_TYPE));
        r
    };
    match route {
        Route::Version => ok(&discovery::version()),
        Route::Health => body::text(StatusCode::OK, "ok", "text/plain; charset=utf-8"),
        Route::Metrics => body::text(StatusCode::OK, state.metrics.render(), "text/plain; version=0.0.4"),
        Route::CoreVersions if aggregated => agg(&discovery::aggregated(&resources, true)),
        Route::CoreVersions => ok(&discovery::core_versions(&shared.address)),
        Route::Groups if aggregated => agg(&discovery::aggregated(&resources, false)),
        Route::Groups => ok(&discovery::group_list(&resources)),
        Route::Group(g) => discovery::group(&resources, &g).map_or_else(not_found, |v| ok(&v)),
        Route::Resources { group, version } => discovery::resource_list(&resources, &group, &version).map_or_else(not_found, |v| ok(&v)),
        Route::OpenApiV3Root => ok(&state.openapi.root(state.catalog.as_ref())),
        Route::OpenApiV3 { group, version } => match state.openapi.group_version(state.catalog.as_ref(), &group, &version) {
            Some(doc) => {
                let mut r = body::text(StatusCode::OK, doc.bytes.clone(), "application/json");
                if Query::parse(req.uri().query()).get("hash").is_some() {
                    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, immutable"));
                }
                r
            }
            None => not_found(),
        },
        Route::OpenApiV2 if OPENAPI_V2_PROTOBUF.iter().any(|m| accepts(&req, m)) => {
            body::text(StatusCode::OK, OpenApi::v2_protobuf(), OPENAPI_V2_PROTOBUF[0])
        }
        Route::OpenApiV2 => match json_or_406(&req) {
            Ok(()) => body::text(StatusCode::OK, state.openapi.v2(state.catalog.as_ref()), "application/json"),
            Err(e) => body::status_response(&e),
        },
        Route::Resource(_) | Route::Unknown => not_found(),
    }
}

trait NotFoundMessage {
    fn with_404_message(self) -> Self;
}

impl NotFoundMessage for Error {
    fn with_404_message(self) -> Self {
        let mut status = self.to_status();
        status.message = Some("the server could not find the requested resource".into());
        status.details = None;
        Error::from_status(status)
    }
}

/// `pods/exec` and `pods/attach`: upgrades to a WebSocket and hands the connection to the node connector.
pub(crate) async fn exec(
    state: &State,
    req: Request<Incoming>,
    namespace: &str,
    pod: &str,
    sub: &str,
    query: &Query,
) -> Result<Response<Body>> {
    let Some(nodes) = state.nodes.clone() else {
        return Err(Error::method_not_allowed(format!("no node connection serves pods/{sub}")));
    };
    let supported = nodes.exec_protocols();
    if supported.is_empty() {
        return Err(Error::method_not_allowed(format!("the node connection serves no pods/{sub}")));
    }
    let mut request = ExecRequest {
        namespace: namespace.to_owned(),
        pod: pod.to_owned(),
        container: query.non_empty("container"),
        command: query.all("command"),
        stdin: query.flag("stdin"),
        stdout: query.flag("stdout"),
        stderr: query.flag("stderr"),
        tty: query.flag("tty"),
        protocol: String::new(),
        attach: sub == "attach",
    };
    // Before the upgrade, so that a missing pod or container is a plain Status whatever the
    // client tried (kubectl falls back from WebSocket to SPDY on any failed upgrade).
    nodes.check_exec(&request).await?;
    let headers = req.headers();
    let is_websocket = headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = headers.get("sec-websocket-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (true, Some(key)) = (is_websocket, key) else {
        return Err(Error::bad_request("pods/exec needs a WebSocket upgrade (channel.k8s.io)"));
    };
    let offered = header_tokens(headers, "sec-websocket-protocol");
    let Some(protocol) = supported.iter().find(|p| offered.contains(p)).cloned() else {
        return Err(Error::bad_request(format!("none of the offered subprotocols {offered:?} is supported; supported: {supported:?}")));
    };
    request.protocol = protocol.clone();
    let response = websocket_switch(&key, &protocol);
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                if let Err(error) = nodes.exec(request, Box::new(TokioIo::new(upgraded))).await {
                    warn!(%error, "exec session failed");
                }
            }
            Err(error) => warn!(%error, "exec upgrade failed"),
        }
    });
    Ok(response)
}

/// The comma-separated tokens of every value of a header, trimmed, empty ones left out.
pub(super) fn header_tokens(headers: &http::HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect()
}

/// The 101 answer to a WebSocket upgrade with this `Sec-WebSocket-Key`, speaking `protocol`.
pub(super) fn websocket_switch(key: &str, protocol: &str) -> Response<Body> {
    let mut response = Response::new(body::full(bytes::Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&websocket_accept(key)) {
        h.insert("sec-websocket-accept", v);
    }
    if let Ok(v) = HeaderValue::from_str(protocol) {
        h.insert("sec-websocket-protocol", v);
    }
    response
}

/// `Sec-WebSocket-Accept` for a key (RFC 6455).
fn websocket_accept(key: &str) -> String {
    let digest = sha1(format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// SHA-1, only for the WebSocket handshake (RFC 3174).
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0];
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for chunk in msg.chunks(64) {
        let mut w = [0u32; 80];
        for (i, word) in chunk.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a.rotate_left(5).wrapping_add(f).wrapping_add(e).wrapping_add(k).wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, word) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&word.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_websocket_accept_matches_rfc_6455() {
        assert_eq!(websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
