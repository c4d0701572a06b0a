//! The node side: an HTTPS server for the node agents of this process (kubelet's :10250) that
//! serves their logs, exec and attach sessions and usage to callers holding the token.

use super::credentials::Credentials;
use super::{LocalNodeSet, NodeEndpointError, wire};
use bosun_core::{Error, Result};
use bosun_store::http::ExecRequest;
use bytes::Bytes;
use futures::StreamExt as _;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::{Instrument as _, debug, info_span, warn};

/// The port kubelet serves on, and the node endpoint's first choice.
pub const DEFAULT_PORT: u16 = 10250;

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// A running node endpoint; dropping it (or [`shutdown`](Self::shutdown)) stops it.
#[derive(Debug)]
pub struct NodeEndpoint {
    addr: SocketAddr,
    ip: IpAddr,
    stop: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

struct Shared {
    nodes: Arc<dyn LocalNodeSet>,
    credentials: Credentials,
}

impl NodeEndpoint {
    /// Serves `nodes` on `listen`, or (`None`) on 127.0.0.1:10250, falling back to an ephemeral
    /// loopback port when that is taken. The serving certificate is signed by the credentials'
    /// CA for `localhost`, `127.0.0.1` and the listening address.
    pub async fn start(
        listen: Option<SocketAddr>,
        nodes: Arc<dyn LocalNodeSet>,
        credentials: Credentials,
    ) -> Result<Self, NodeEndpointError> {
        let listener = match listen {
            Some(addr) => TcpListener::bind(addr).await.map_err(|source| NodeEndpointError::Bind { addr, source })?,
            None => {
                let preferred = SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT));
                match TcpListener::bind(preferred).await {
                    Ok(l) => l,
                    Err(error) => {
                        debug!(%error, "port {DEFAULT_PORT} is taken; the node endpoint listens on an ephemeral port");
                        let any = SocketAddr::from(([127, 0, 0, 1], 0));
                        TcpListener::bind(any).await.map_err(|source| NodeEndpointError::Bind { addr: any, source })?
                    }
                }
            }
        };
        let asked = listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)));
        let addr = listener.local_addr().map_err(|source| NodeEndpointError::Bind { addr: asked, source })?;
        // The address published in the Node: the listening one, or loopback when it listens on all.
        let ip = if addr.ip().is_unspecified() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { addr.ip() };
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        if !names.contains(&ip.to_string()) {
            names.push(ip.to_string());
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(credentials.server_config(&names)?);
        let shared = Arc::new(Shared { nodes, credentials });
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, acceptor, shared, stopped));
        tracing::info!(%addr, "node endpoint listening");
        Ok(Self { addr, ip, stop, task: Some(task) })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address to publish as the Node's InternalIP: the listening address, or 127.0.0.1 when
    /// the endpoint listens on every address.
    pub fn node_ip(&self) -> IpAddr {
        self.ip
    }

    /// Stops accepting and closes open connections.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for NodeEndpoint {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
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
                warn!(%error, "node endpoint accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (shared, acceptor, mut stopped) = (shared.clone(), acceptor.clone(), stopped.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => return debug!(%error, %peer, "node endpoint tls handshake failed"),
                Err(_) => return debug!(%peer, "node endpoint tls handshake timed out"),
            };
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(shared, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).with_upgrades();
            let result = tokio::select! {
                r = conn => r,
                _ = stopped.wait_for(|s| *s) => Ok(()),
            };
            if let Err(error) = result {
                debug!(%error, %peer, "node endpoint connection ended with an error");
            }
        });
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// An error as kube-apiserver writes it: a `Status` with the matching code.
pub(super) fn status_response(error: &Error) -> Response<Body> {
    let body = serde_json::to_vec(&error.to_status()).unwrap_or_default();
    let mut response = Response::new(full(body));
    *response.status_mut() = StatusCode::from_u16(error.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let span = info_span!("node_endpoint.request", http.path = %req.uri().path());
    async {
        let authorization = req.headers().get(header::AUTHORIZATION).map(HeaderValue::as_bytes);
        if !shared.credentials.authorizes(authorization) {
            return status_response(&Error::unauthorized("the node endpoint needs the control plane's bearer token"));
        }
        if req.method() != Method::GET {
            return status_response(&Error::method_not_allowed(format!("method {} is not supported", req.method())));
        }
        match route(shared, req).await {
            Ok(response) => response,
            Err(error) => status_response(&error),
        }
    }
    .instrument(span)
    .await
}

async fn route(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>> {
    let path = req.uri().path().to_owned();
    let pairs = wire::parse_query(req.uri().query());
    let segments: Vec<String> = path.trim_matches('/').split('/').map(wire::decode).collect();
    match segments.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["healthz"] => Ok(Response::new(full("ok"))),
        ["containerLogs", namespace, pod] => {
            let params = wire::log_params(&pairs)?;
            let stream = shared.nodes.logs(namespace, pod, &params).await?;
            // A failed read ends the body, as kubelet ends the stream.
            let frames = stream.scan((), |(), chunk| futures::future::ready(chunk.ok())).map(|b| Ok::<_, std::io::Error>(Frame::data(b)));
            let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(frames)));
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            Ok(response)
        }
        [verb @ ("exec" | "attach"), namespace, pod] => {
            let request = wire::exec_request(namespace, pod, *verb == "attach", &pairs);
            exec(shared, req, request).await
        }
        ["portForward", namespace, pod] => {
            let port = wire::port_forward_port(&pairs)?;
            port_forward(shared, req, namespace, pod, port).await
        }
        ["usage"] => {
            let namespace = pairs.iter().find(|(k, _)| k == "namespace").map(|(_, v)| v.as_str()).filter(|v| !v.is_empty());
            let nodes = shared.nodes.nodes().await?;
            let pods = shared.nodes.pods(namespace).await?;
            let usage = wire::Usage { nodes: nodes.iter().map(Into::into).collect(), pods: pods.iter().map(Into::into).collect() };
            let body = serde_json::to_vec(&usage).map_err(|e| Error::internal(e.to_string()))?;
            let mut response = Response::new(full(body));
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(response)
        }
        _ => Err(Error::not_found("", "paths", &path)),
    }
}

/// Connects to the pod's port, then upgrades and relays bytes both ways: the API server speaks
/// kubectl's port-forward protocol and sends each forwarded connection here as one raw stream.
/// A pod or port that cannot be reached is refused before the upgrade, as a plain `Status`.
async fn port_forward(shared: Arc<Shared>, req: Request<Incoming>, namespace: &str, pod: &str, port: u16) -> Result<Response<Body>> {
    if !wants_upgrade(&req) {
        return Err(Error::bad_request("port forwarding needs a connection upgrade"));
    }
    let mut target = shared.nodes.port_forward(namespace, pod, port).await?;
    tokio::spawn(
        async move {
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => {
                    if let Err(error) = tokio::io::copy_bidirectional(&mut TokioIo::new(upgraded), &mut target).await {
                        debug!(%error, "port-forward stream ended with an error");
                    }
                }
                Err(error) => warn!(%error, "port-forward upgrade failed"),
            }
        }
        .in_current_span(),
    );
    Ok(switching_protocols())
}

/// Whether the request asks for the connection upgrade the API server sends.
fn wants_upgrade(req: &Request<Incoming>) -> bool {
    req.headers().get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The 101 answer that hands the connection over.
fn switching_protocols() -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    response.headers_mut().insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    response
}

/// Checks an exec or attach request, then upgrades and runs the session over `channel.k8s.io`.
async fn exec(shared: Arc<Shared>, req: Request<Incoming>, request: ExecRequest) -> Result<Response<Body>> {
    if !shared.nodes.exec_protocols().contains(&request.protocol) {
        return Err(Error::bad_request(format!("unsupported exec subprotocol {:?}", request.protocol)));
    }
    if !wants_upgrade(&req) {
        return Err(Error::bad_request("exec and attach need a connection upgrade"));
    }
    shared.nodes.check_exec(&request).await?;
    let nodes = shared.nodes.clone();
    tokio::spawn(
        async move {
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => {
                    if let Err(error) = nodes.exec(request, Box::new(TokioIo::new(upgraded))).await {
                        warn!(%error, "exec session failed");
                    }
                }
                Err(error) => warn!(%error, "exec upgrade failed"),
            }
        }
        .in_current_span(),
    );
    Ok(switching_protocols())
}
