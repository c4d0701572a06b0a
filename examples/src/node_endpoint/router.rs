//! The API server side: a [`NodeConnector`] and [`MetricsSource`] that serves pods on this
//! process's nodes directly and forwards the others to their node's endpoint over HTTPS.

use super::credentials::{Credentials, SECRET_NAME, SECRET_NAMESPACE};
use super::{LocalNodeSet, wire};
use async_trait::async_trait;
use bosun_core::k8s_openapi::api::core::v1::{Node, Pod, Secret};
use bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use bosun_core::{Api, Client, Error, ListParams, LogParams, LogStream, Result};
use bosun_store::api::metrics::{MetricsSource, NodeSample, PodSample};
use bosun_store::http::{ExecIo, ExecRequest, NodeConnector, channel};
use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use http::{HeaderValue, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

/// How long connecting to a node (TCP and TLS) and getting its answer's head may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a node may take to report its usage.
const USAGE_TIMEOUT: Duration = Duration::from_secs(5);
/// The most bytes of an error answer read from a node.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// After re-reading credentials that turned out unchanged, how long a refused request goes
/// without another re-read (a node with other credentials would otherwise cost a Secret read per
/// request).
const REFRESH_FLOOR: Duration = Duration::from_secs(1);

/// What the router needs to reach nodes: the token and a TLS connector trusting the nodes' CA.
struct Remote {
    /// The token and CA these were built from, to tell whether a re-read changed anything.
    token: String,
    ca_pem: String,
    authorization: HeaderValue,
    tls: tokio_rustls::TlsConnector,
}

impl Remote {
    fn new(credentials: &Credentials) -> Result<Self> {
        let authorization = HeaderValue::from_str(&format!("Bearer {}", credentials.token()))
            .map_err(|e| Error::internal(format!("node endpoint token: {e}")))?;
        let tls = credentials.client_config().map_err(|e| Error::internal(e.to_string()))?;
        Ok(Self {
            token: credentials.token().to_owned(),
            ca_pem: credentials.ca_pem().to_owned(),
            authorization,
            tls: tokio_rustls::TlsConnector::from(tls),
        })
    }
}

/// The credentials in use, and when a re-read last found them unchanged.
#[derive(Default)]
struct RemoteState {
    current: Option<Arc<Remote>>,
    unchanged_at: Option<tokio::time::Instant>,
}

/// Why one attempt at a node failed: refused credentials are worth a re-read of the Secret.
enum Failure {
    /// The TLS handshake failed (the node's certificate may come from a newer CA).
    Tls(Error),
    /// Anything else.
    Other(Error),
}

/// Routes `pods/log`, `pods/exec`, `pods/attach` and usage reads: to the node agents of this
/// process when they run the pod's node, otherwise to the node endpoint the Node publishes.
///
/// The credentials are read from their Secret on first use and again when a node refuses them
/// (a 401, or a certificate the CA in use does not sign): if the Secret holds other credentials
/// now, the request is retried once with them.
pub struct NodeRouter {
    client: Arc<dyn Client>,
    local: Arc<dyn LocalNodeSet>,
    remote: tokio::sync::Mutex<RemoteState>,
}

impl std::fmt::Debug for NodeRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeRouter").finish_non_exhaustive()
    }
}

impl NodeRouter {
    /// A router reading Pods, Nodes and the credentials' Secret through `client` (the API server's
    /// own), serving the nodes of `local` directly.
    pub fn new(client: Arc<dyn Client>, local: Arc<dyn LocalNodeSet>) -> Self {
        Self { client, local, remote: tokio::sync::Mutex::default() }
    }

    /// The credentials, loaded (or made) on first use.
    async fn remote(&self) -> Result<Arc<Remote>> {
        let mut state = self.remote.lock().await;
        if let Some(current) = &state.current {
            return Ok(current.clone());
        }
        let credentials = Credentials::load_or_create(&self.client).await.map_err(|e| Error::unavailable(e.to_string()))?;
        let fresh = Arc::new(Remote::new(&credentials)?);
        state.current = Some(fresh.clone());
        Ok(fresh)
    }

    /// Re-reads the credentials after a node refused `stale`; returns the ones to retry with, or
    /// `None` when the Secret holds the same (or no) credentials. Concurrent refusals re-read once.
    async fn refresh(&self, stale: &Arc<Remote>) -> Result<Option<Arc<Remote>>> {
        let mut state = self.remote.lock().await;
        if let Some(current) = state.current.as_ref().filter(|c| !Arc::ptr_eq(c, stale)) {
            return Ok(Some(current.clone()));
        }
        if state.unchanged_at.is_some_and(|at| at.elapsed() < REFRESH_FLOOR) {
            return Ok(None);
        }
        let secret = Api::<Secret>::namespaced(self.client.clone(), SECRET_NAMESPACE).get_opt(SECRET_NAME).await?;
        let credentials = secret.map(|s| Credentials::from_secret(&s)).transpose().map_err(|e| Error::unavailable(e.to_string()))?;
        match credentials.filter(|c| c.token() != stale.token || c.ca_pem() != stale.ca_pem) {
            Some(credentials) => {
                debug!("the node endpoint credentials changed; using the new ones");
                let fresh = Arc::new(Remote::new(&credentials)?);
                state.current = Some(fresh.clone());
                state.unchanged_at = None;
                Ok(Some(fresh))
            }
            None => {
                state.unchanged_at = Some(tokio::time::Instant::now());
                Ok(None)
            }
        }
    }

    /// The node a pod is bound to.
    async fn node_of(&self, namespace: &str, pod: &str) -> Result<(Pod, String)> {
        let pod_object = Api::<Pod>::namespaced(self.client.clone(), namespace).get(pod).await?;
        let node = pod_object.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty());
        let node = node.ok_or_else(|| Error::bad_request(format!("pod {pod:?} is not scheduled yet")))?;
        Ok((pod_object, node))
    }

    /// Where a node's endpoint listens: its InternalIP (or ExternalIP) and kubelet port.
    async fn endpoint(&self, node: &str) -> Result<SocketAddr> {
        let object = Api::<Node>::all(self.client.clone()).get_opt(node).await?;
        let object = object.ok_or_else(|| Error::unavailable(format!("node {node:?} is not registered")))?;
        endpoint_of(&object).ok_or_else(|| Error::unavailable(format!("node {node:?} publishes no endpoint (InternalIP and kubelet port)")))
    }

    /// Sends a GET to a node's endpoint; returns the answer's head (the body streams after it).
    /// When the node refuses the credentials, re-reads them and retries once if they changed.
    async fn get(&self, node: &str, addr: SocketAddr, path: &str, upgrade: bool) -> Result<hyper::Response<Incoming>> {
        let remote = self.remote().await?;
        let refused = match self.attempt(&remote, node, addr, path, upgrade).await {
            Ok(response) if response.status() == StatusCode::UNAUTHORIZED => Ok(response),
            Ok(response) => return Ok(response),
            Err(Failure::Tls(error)) => Err(error),
            Err(Failure::Other(error)) => return Err(error),
        };
        match self.refresh(&remote).await {
            Ok(Some(fresh)) => self.attempt(&fresh, node, addr, path, upgrade).await.map_err(|(Failure::Tls(e) | Failure::Other(e))| e),
            Ok(None) => refused,
            Err(error) => {
                debug!(%error, "could not re-read the node endpoint credentials");
                refused
            }
        }
    }

    /// One request to a node's endpoint with `remote`'s credentials.
    async fn attempt(
        &self,
        remote: &Remote,
        node: &str,
        addr: SocketAddr,
        path: &str,
        upgrade: bool,
    ) -> Result<hyper::Response<Incoming>, Failure> {
        let unreachable = |what: String| Failure::Other(Error::unavailable(format!("node {node:?} cannot be reached at {addr}: {what}")));
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| unreachable(e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            let tls = remote
                .tls
                .connect(addr.ip().into(), tcp)
                .await
                .map_err(|e| Failure::Tls(Error::unavailable(format!("node {node:?} cannot be reached at {addr}: tls: {e}"))))?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| unreachable(e.to_string()))?;
            tokio::spawn(async move {
                if let Err(error) = conn.with_upgrades().await {
                    debug!(%error, "node endpoint connection ended with an error");
                }
            });
            let mut request = Request::get(path)
                .header(header::HOST, addr.to_string())
                .header(header::AUTHORIZATION, remote.authorization.clone())
                .body(Empty::<Bytes>::new())
                .map_err(|e| Failure::Other(Error::internal(e.to_string())))?;
            if upgrade {
                request.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
                request.headers_mut().insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            }
            sender.send_request(request).await.map_err(|e| unreachable(e.to_string()))
        };
        tokio::time::timeout(CONNECT_TIMEOUT, exchange).await.map_err(|_| unreachable(format!("no answer in {CONNECT_TIMEOUT:?}")))?
    }

    /// The usage of every node endpoint other than this process's, fetched concurrently; an
    /// endpoint that does not answer is left out (as metrics-server leaves out a silent kubelet).
    async fn remote_usage(&self, namespace: Option<&str>) -> Result<Vec<wire::Usage>> {
        let nodes = Api::<Node>::all(self.client.clone()).list_all(&ListParams::default()).await?.items;
        let mut endpoints: BTreeMap<SocketAddr, BTreeSet<String>> = BTreeMap::new();
        for node in &nodes {
            let name = node.metadata.name.clone().unwrap_or_default();
            if self.local.serves(&name) {
                continue;
            }
            if let Some(addr) = endpoint_of(node) {
                endpoints.entry(addr).or_default().insert(name);
            }
        }
        if endpoints.is_empty() {
            return Ok(Vec::new());
        }
        let path = wire::usage_path(namespace);
        let fetches = endpoints.into_iter().map(|(addr, names)| {
            let path = path.clone();
            async move {
                let label = names.iter().next().cloned().unwrap_or_default();
                let fetch = async {
                    let response = self.get(&label, addr, &path, false).await?;
                    let ok = response.status().is_success();
                    let body = response.into_body().collect().await.map_err(|e| Error::unavailable(e.to_string()))?.to_bytes();
                    if !ok {
                        return Err(error_from_body(&label, &body));
                    }
                    let mut usage: wire::Usage = serde_json::from_slice(&body).map_err(|e| Error::internal(e.to_string()))?;
                    // Only the nodes the cluster says live there.
                    usage.nodes.retain(|n| names.contains(n.name()));
                    Ok(usage)
                };
                match tokio::time::timeout(USAGE_TIMEOUT, fetch).await {
                    Ok(Ok(usage)) => Some(usage),
                    Ok(Err(error)) => {
                        warn!(%error, %addr, "no usage from a node endpoint");
                        None
                    }
                    Err(_) => {
                        warn!(%addr, "no usage from a node endpoint in time");
                        None
                    }
                }
            }
        });
        Ok(futures::future::join_all(fetches).await.into_iter().flatten().collect())
    }
}

/// The endpoint a Node publishes: an InternalIP (else ExternalIP) address and the kubelet port.
fn endpoint_of(node: &Node) -> Option<SocketAddr> {
    let status = node.status.as_ref()?;
    let port = status.daemon_endpoints.as_ref()?.kubelet_endpoint.as_ref()?.port;
    let port = u16::try_from(port).ok().filter(|p| *p > 0)?;
    let addresses = status.addresses.as_deref().unwrap_or_default();
    let ip = ["InternalIP", "ExternalIP"]
        .iter()
        .find_map(|kind| addresses.iter().filter(|a| a.type_ == *kind).find_map(|a| a.address.parse::<IpAddr>().ok()))?;
    Some(SocketAddr::new(ip, port))
}

/// The error a node answered with (a `Status` body), or a 503 naming the node.
fn error_from_body(node: &str, body: &[u8]) -> Error {
    match serde_json::from_slice::<Status>(body) {
        Ok(status) if status.code.is_some() => Error::from_status(status),
        _ => Error::unavailable(format!("node {node:?} answered: {}", String::from_utf8_lossy(&body[..body.len().min(512)]))),
    }
}

/// Reads (a bounded part of) an error answer's body.
async fn error_of(node: &str, response: hyper::Response<Incoming>) -> Error {
    let code = response.status();
    let mut body = Vec::new();
    let mut stream = response.into_body().into_data_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        body.extend_from_slice(&chunk);
        if body.len() >= ERROR_BODY_LIMIT {
            break;
        }
    }
    if body.is_empty() {
        return Error::unavailable(format!("node {node:?} answered {code}"));
    }
    error_from_body(node, &body)
}

#[async_trait]
impl NodeConnector for NodeRouter {
    async fn logs(&self, namespace: &str, pod: &str, params: &LogParams) -> Result<LogStream> {
        let (_, node) = self.node_of(namespace, pod).await?;
        if self.local.serves(&node) {
            return self.local.logs(namespace, pod, params).await;
        }
        let addr = self.endpoint(&node).await?;
        let response = self.get(&node, addr, &wire::logs_path(namespace, pod, params), false).await?;
        if !response.status().is_success() {
            return Err(error_of(&node, response).await);
        }
        let stream =
            response.into_body().into_data_stream().map_err(move |e| Error::unavailable(format!("log stream from node {node:?}: {e}")));
        Ok(stream.boxed())
    }

    fn exec_protocols(&self) -> Vec<String> {
        channel::ChannelProtocol::names()
    }

    async fn check_exec(&self, request: &ExecRequest) -> Result<()> {
        let (pod, node) = self.node_of(&request.namespace, &request.pod).await?;
        if self.local.serves(&node) {
            return self.local.check_exec(request).await;
        }
        channel::exec_container(&pod, request.container.as_deref())?;
        // Refuse now, as a plain Status, when the node cannot be reached at all.
        let addr = self.endpoint(&node).await?;
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Error::unavailable(format!("node {node:?} cannot be reached at {addr}: {e}"))),
            Err(_) => Err(Error::unavailable(format!("node {node:?} cannot be reached at {addr}: no answer in {CONNECT_TIMEOUT:?}"))),
        }
    }

    /// A pod on another process's node is reached through that node's endpoint: one upgraded
    /// connection per forwarded connection, carrying its bytes as they are.
    async fn port_forward(&self, namespace: &str, pod: &str, port: u16) -> Result<Box<dyn ExecIo>> {
        let (_, node) = self.node_of(namespace, pod).await?;
        if self.local.serves(&node) {
            return self.local.port_forward(namespace, pod, port).await;
        }
        let addr = self.endpoint(&node).await?;
        let response = self.get(&node, addr, &wire::port_forward_path(namespace, pod, port), true).await?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(error_of(&node, response).await);
        }
        let upgraded = hyper::upgrade::on(response)
            .await
            .map_err(|e| Error::unavailable(format!("node {node:?}: port-forward upgrade failed: {e}")))?;
        Ok(Box::new(TokioIo::new(upgraded)))
    }

    async fn exec(&self, request: ExecRequest, mut io: Box<dyn ExecIo>) -> Result<()> {
        let node = match self.node_of(&request.namespace, &request.pod).await {
            Ok((_, node)) if self.local.serves(&node) => return self.local.exec(request, io).await,
            Ok((_, node)) => node,
            Err(error) => return channel::serve_exec(io, &request, Err(error)).await.map_err(|e| Error::internal(e.to_string())),
        };
        let upgraded = async {
            let addr = self.endpoint(&node).await?;
            let response = self.get(&node, addr, &wire::exec_path(&request), true).await?;
            if response.status() != StatusCode::SWITCHING_PROTOCOLS {
                return Err(error_of(&node, response).await);
            }
            hyper::upgrade::on(response).await.map_err(|e| Error::unavailable(format!("node {node:?}: exec upgrade failed: {e}")))
        };
        match upgraded.await {
            Ok(upgraded) => {
                // Both ends speak the same WebSocket subprotocol: the frames pass through as they are.
                let mut node_io = TokioIo::new(upgraded);
                match tokio::io::copy_bidirectional(&mut io, &mut node_io).await {
                    Ok(_) => Ok(()),
                    Err(error) => {
                        debug!(%error, node.name = %node, "exec stream ended with an error");
                        Ok(())
                    }
                }
            }
            // The client has its upgrade already: the failure goes out as the session's outcome.
            Err(error) => channel::serve_exec(io, &request, Err(error)).await.map_err(|e| Error::internal(e.to_string())),
        }
    }
}

#[async_trait]
impl MetricsSource for NodeRouter {
    async fn nodes(&self) -> Result<Vec<NodeSample>> {
        let mut samples = self.local.nodes().await?;
        for usage in self.remote_usage(None).await? {
            samples.extend(usage.nodes.iter().filter_map(wire::NodeUsage::sample));
        }
        Ok(samples)
    }

    async fn pods(&self, namespace: Option<&str>) -> Result<Vec<PodSample>> {
        let mut samples = self.local.pods(namespace).await?;
        for usage in self.remote_usage(namespace).await? {
            samples.extend(usage.pods.iter().filter_map(wire::PodUsage::sample));
        }
        Ok(samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_core::k8s_openapi::api::core::v1::{DaemonEndpoint, NodeAddress, NodeDaemonEndpoints, NodeStatus};

    fn node(addresses: &[(&str, &str)], port: i32) -> Node {
        Node {
            status: Some(NodeStatus {
                addresses: Some(addresses.iter().map(|(t, a)| NodeAddress { type_: (*t).into(), address: (*a).into() }).collect()),
                daemon_endpoints: Some(NodeDaemonEndpoints { kubelet_endpoint: Some(DaemonEndpoint { port }) }),
                ..NodeStatus::default()
            }),
            ..Node::default()
        }
    }

    #[test]
    fn a_node_is_reached_at_its_internal_ip_and_kubelet_port() {
        let n = node(&[("Hostname", "worker-1"), ("ExternalIP", "192.0.2.9"), ("InternalIP", "127.0.0.7")], 10251);
        assert_eq!(endpoint_of(&n), Some(SocketAddr::from(([127, 0, 0, 7], 10251))));
        let external = node(&[("Hostname", "worker-1"), ("ExternalIP", "192.0.2.9")], 10250);
        assert_eq!(endpoint_of(&external), Some(SocketAddr::from(([192, 0, 2, 9], 10250))));
        assert_eq!(endpoint_of(&node(&[("Hostname", "worker-1")], 10250)), None);
        assert_eq!(endpoint_of(&node(&[("InternalIP", "127.0.0.1")], 0)), None);
        assert_eq!(endpoint_of(&Node::default()), None);
    }

    #[test]
    fn a_node_error_keeps_its_status() {
        let status = serde_json::to_vec(&Error::bad_request("container nope is not valid").to_status()).unwrap_or_default();
        let error = error_from_body("worker-1", &status);
        assert_eq!(error.code(), 400);
        let garbage = error_from_body("worker-1", b"<html>");
        assert_eq!(garbage.code(), 503);
        assert!(garbage.to_string().contains("worker-1"), "{garbage}");
    }
}
