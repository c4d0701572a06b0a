//! The node endpoint: what kubelet serves on :10250, for the node agents of one process, and the
//! API server's side of it that forwards `pods/log`, `pods/exec`, `pods/attach` and usage for
//! `metrics.k8s.io` to the process that runs a pod's node.
//!
//! A process running node agents serves [`NodeEndpoint`] over HTTPS and publishes its address in
//! each Node (`status.addresses` InternalIP, `status.daemonEndpoints.kubeletEndpoint.port`). An
//! API server hands [`NodeRouter`] to its HTTP server: pods on nodes of its own process are served
//! directly, the others through their node's endpoint.
//!
//! Security: both sides share [`Credentials`], kept in the Secret `kube-system/bosun-node-endpoint`
//! (made by whichever process needs it first): a CA that signs every node endpoint's serving
//! certificate (the API server verifies a node's certificate against it, for the node's address)
//! and a bearer token the API server presents on every request (the endpoint answers 401 without
//! it). Whoever may read Secrets in `kube-system` may therefore reach the nodes, as a cluster
//! administrator can in Kubernetes.
//!
//! The wire protocol (HTTP/1.1 over TLS, `Authorization: Bearer <token>` on every request):
//! - `GET /containerLogs/{namespace}/{pod}?container=&follow=&tailLines=&timestamps=&previous=&sinceSeconds=&limitBytes=`:
//!   the log as a streamed `text/plain` body;
//! - `GET /exec/{namespace}/{pod}?container=&command=...&stdin=&stdout=&stderr=&tty=&protocol=`
//!   and `GET /attach/...` with `Connection: Upgrade`: the node checks the request, answers `101`
//!   and speaks `channel.k8s.io` (the WebSocket subprotocol `protocol` the API server agreed on
//!   with the client) on the upgraded connection, which the API server splices to the client's;
//! - `GET /usage?namespace=`: the latest usage samples of the node agents, as JSON.
//!
//! Errors are `metav1.Status` JSON bodies with the matching HTTP code.

mod credentials;
mod router;
mod server;
#[cfg(test)]
mod tests;
mod wire;

pub use credentials::{Credentials, SECRET_NAME, SECRET_NAMESPACE};
pub use router::NodeRouter;
pub use server::{DEFAULT_PORT, NodeEndpoint};

use bosun_store::api::metrics::MetricsSource;
use bosun_store::http::NodeConnector;

/// The node agents of this process, as the node endpoint serves them and the router recognizes
/// them: logs and exec (as a [`NodeConnector`]) and usage (as a [`MetricsSource`]).
pub trait LocalNodeSet: NodeConnector + MetricsSource {
    /// Whether the node of this name runs in this process.
    fn serves(&self, node: &str) -> bool;
}

/// The node endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeEndpointError {
    /// Reading or writing the shared credentials through the API failed.
    #[error("node endpoint credentials: {0}")]
    Credentials(#[source] bosun_core::Error),
    /// The stored credentials are not usable (a damaged Secret).
    #[error("node endpoint credentials in {SECRET_NAMESPACE}/{SECRET_NAME} are not usable: {0}")]
    BadCredentials(String),
    /// Making or loading a certificate failed.
    #[error("node endpoint tls: {0}")]
    Tls(String),
    /// The listener could not be bound.
    #[error("bind the node endpoint on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}
