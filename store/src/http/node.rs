//! The node connection behind `pods/log`, `pods/exec` and `pods/portforward`: the HTTP server
//! forwards those requests to whatever runs the pod (the node agent implements this trait).

use async_trait::async_trait;
use bosun_core::{Error, LogParams, LogStream, Result};
use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream to the client of an exec session, after the HTTP upgrade (a WebSocket speaking
/// the negotiated `channel.k8s.io` subprotocol).
pub trait ExecIo: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> ExecIo for T {}

/// What `kubectl exec` asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecRequest {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod.
    pub pod: String,
    /// The container; may be left out when the pod has one.
    pub container: Option<String>,
    /// The command and its arguments.
    pub command: Vec<String>,
    /// Whether the client sends standard input.
    pub stdin: bool,
    /// Whether the client wants standard output.
    pub stdout: bool,
    /// Whether the client wants standard error.
    pub stderr: bool,
    /// Whether to allocate a terminal.
    pub tty: bool,
    /// The WebSocket subprotocol agreed on, e.g. `v5.channel.k8s.io`.
    pub protocol: String,
    /// `pods/attach` (to the container's main process; `command` is empty) rather than `pods/exec`.
    pub attach: bool,
}

/// Reaches the node that runs a pod, for logs, exec and port forwarding. The defaults refuse: logs
/// and port forwarding with 405 `MethodNotAllowed`, exec with no subprotocol (the server answers
/// 405 before upgrading).
#[async_trait]
pub trait NodeConnector: Send + Sync + 'static {
    /// Streams a container's log.
    async fn logs(&self, namespace: &str, pod: &str, params: &LogParams) -> Result<LogStream> {
        let _ = (namespace, pod, params);
        Err(Error::method_not_allowed("no node connection serves pod logs"))
    }

    /// The `channel.k8s.io` WebSocket subprotocols this connector speaks, most preferred first;
    /// empty (the default) when it serves no exec.
    fn exec_protocols(&self) -> Vec<String> {
        Vec::new()
    }

    /// Checks an exec or attach request before the connection is upgraded (pod and container
    /// exist, see [`channel::exec_container`](super::channel::exec_container)): an error here is
    /// answered as a plain `Status`, which kubectl shows as `Error from server (...)`. The
    /// default accepts everything.
    async fn check_exec(&self, request: &ExecRequest) -> Result<()> {
        let _ = request;
        Ok(())
    }

    /// Runs an exec session over the upgraded connection until it ends
    /// ([`channel::serve_exec`](super::channel::serve_exec) speaks the protocol).
    async fn exec(&self, request: ExecRequest, io: Box<dyn ExecIo>) -> Result<()> {
        let _ = (request, io);
        Err(Error::method_not_allowed("no node connection serves pod exec"))
    }

    /// Opens a byte stream to `port` of the pod (`kubectl port-forward`): one call per forwarded
    /// connection; closing the write side half-closes the connection to the pod. An error is
    /// shown to the client as the message of its forwarded connection
    /// ([`portforward`](super::portforward) speaks the protocol). The default refuses with 405.
    async fn port_forward(&self, namespace: &str, pod: &str, port: u16) -> Result<Box<dyn ExecIo>> {
        let _ = (namespace, pod, port);
        Err(Error::method_not_allowed("no node connection serves port forwarding"))
    }
}

/// The connector of a server without nodes: every call is refused.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNodes;

impl NodeConnector for NoNodes {}
