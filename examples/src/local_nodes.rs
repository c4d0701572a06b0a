//! The node agents this process runs, as the API server's [`NodeConnector`] (logs, exec, attach,
//! port forwarding) and metrics source (`kubectl top`).

use crate::node_endpoint::LocalNodeSet;
use async_trait::async_trait;
use bosun_core::{Client, Error, LogParams, LogStream, Result};
use bosun_runtime::NodeHandle;
use bosun_store::http::{ExecIo, ExecProcess, ExecRequest, NodeConnector, channel};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Routes `pods/log` to the node agent that runs the pod.
pub(crate) struct LocalNodes {
    pub(crate) client: Arc<dyn Client>,
    pub(crate) nodes: RwLock<HashMap<String, NodeHandle>>,
    /// The runtime gives `kubectl exec -t` a terminal ([`NodeHandle::exec_tty`]); the fake
    /// runtime has none, so its `-t` sessions get pipes.
    pub(crate) terminals: bool,
}

#[async_trait]
impl NodeConnector for LocalNodes {
    async fn logs(&self, namespace: &str, pod: &str, params: &LogParams) -> Result<LogStream> {
        let pods = bosun_core::Api::<bosun_core::k8s_openapi::api::core::v1::Pod>::namespaced(self.client.clone(), namespace);
        let node = pods
            .get(pod)
            .await?
            .spec
            .and_then(|s| s.node_name)
            .ok_or_else(|| Error::bad_request(format!("pod {pod:?} is not scheduled yet")))?;
        let handle = self.nodes.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&node).cloned();
        let handle = handle.ok_or_else(|| Error::unavailable(format!("node {node:?} is not served by this process")))?;
        handle.logs(namespace, pod, params).await.map_err(|e| Error::bad_request(e.to_string()))
    }

    fn exec_protocols(&self) -> Vec<String> {
        channel::ChannelProtocol::names()
    }

    async fn check_exec(&self, request: &ExecRequest) -> Result<()> {
        self.exec_target(request).await.map(drop)
    }

    async fn exec(&self, request: ExecRequest, io: Box<dyn ExecIo>) -> Result<()> {
        let internal = |e: channel::ChannelError| Error::internal(e.to_string());
        let mut session = channel::ChannelSession::accept(io, &request.protocol).await.map_err(internal)?;
        // kubectl sends the terminal's size as soon as the session opens; the terminal starts at
        // it, and `run_exec` applies the later sizes.
        let size = if request.tty { session.first_size(Duration::from_millis(500)).await } else { None };
        let process = self.start_exec(&request, size).await;
        channel::run_exec(session, &request, process).await.map_err(internal)
    }

    /// A TCP connection to the pod's IP (`status.podIP`): with the process runtime that is the
    /// node's IP, where the pod's processes listen on the host's network; with runc, the pod's
    /// address on the node's bridge, routed from this host. No runtime call is needed.
    async fn port_forward(&self, namespace: &str, pod: &str, port: u16) -> Result<Box<dyn ExecIo>> {
        let pods = bosun_core::Api::<bosun_core::k8s_openapi::api::core::v1::Pod>::namespaced(self.client.clone(), namespace);
        let found = pods.get(pod).await?;
        let node = found.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        if !self.serves(&node) {
            return Err(Error::unavailable(format!("node {node:?} of pod {pod:?} is not served by this process")));
        }
        let ip = found.status.and_then(|s| s.pod_ip).filter(|ip| !ip.is_empty());
        let ip = ip.ok_or_else(|| Error::bad_request(format!("pod {pod:?} has no IP yet")))?;
        let addr: std::net::IpAddr = ip.parse().map_err(|_| Error::internal(format!("pod {pod:?} has a malformed IP {ip:?}")))?;
        let dial = tokio::time::timeout(DIAL_TIMEOUT, tokio::net::TcpStream::connect((addr, port))).await;
        let conn = match dial {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(Error::unavailable(format!("dial {addr}:{port}: {e}"))),
            Err(_) => return Err(Error::unavailable(format!("dial {addr}:{port}: no answer in {DIAL_TIMEOUT:?}"))),
        };
        let _ = conn.set_nodelay(true);
        Ok(Box::new(conn))
    }
}

/// How long connecting to a pod's port may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

impl LocalNodeSet for LocalNodes {
    fn serves(&self, node: &str) -> bool {
        self.nodes.read().unwrap_or_else(std::sync::PoisonError::into_inner).contains_key(node)
    }
}

impl LocalNodes {
    /// The node agent and container an exec or attach request reaches.
    async fn exec_target(&self, request: &ExecRequest) -> Result<(NodeHandle, String)> {
        let pods = bosun_core::Api::<bosun_core::k8s_openapi::api::core::v1::Pod>::namespaced(self.client.clone(), &request.namespace);
        let pod = pods.get(&request.pod).await?;
        let container = channel::exec_container(&pod, request.container.as_deref())?;
        let node = pod.spec.and_then(|s| s.node_name).unwrap_or_default();
        let handle = self.nodes.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&node).cloned();
        let handle = handle.ok_or_else(|| Error::unavailable(format!("node {node:?} is not served by this process")))?;
        Ok((handle, container))
    }

    /// Starts the command of an exec, or attaches to the container's main process.
    async fn start_exec(&self, request: &ExecRequest, size: Option<channel::TerminalSize>) -> Result<ExecProcess> {
        let (handle, container) = self.exec_target(request).await?;
        if request.attach {
            // The container's main process: its output from now on, its stdin (shared with
            // other sessions; closed after this one with `stdinOnce`), its terminal.
            let size = size.map(|s| bosun_runtime::cri::TerminalSize { width: s.width, height: s.height });
            let session = handle.attach(&request.namespace, &request.pod, Some(&container), size).await?;
            if request.stdin && session.stdin.is_none() {
                tracing::debug!(pod = %request.pod, %container, "attach: the container's stdin is closed or was never opened");
            }
            return Ok(ExecProcess {
                stdin: session.stdin,
                stdout: session.stdout,
                stderr: session.stderr,
                // The session ends when the container's output does (it exited); the outcome
                // is a success, as kubelet reports it: `kubectl run` reads the exit code from
                // the pod's status.
                exit: Box::pin(std::future::ready(Ok(0))),
                resize: resize_fn(session.resize),
            });
        }
        if request.command.is_empty() {
            return Err(Error::bad_request("you must specify at least one command for the container"));
        }
        // With `-t` the command runs on a terminal of the runtime (a pty as its controlling
        // terminal: line editing, echo, ^C, ^D) at the client's first size, and the client's
        // later sizes resize it (SIGWINCH). Without one (fake runtime) a `-t` session gets pipes,
        // stderr merged into stdout.
        let session = if request.tty && self.terminals {
            let size = size.map(|s| bosun_runtime::cri::TerminalSize { width: s.width, height: s.height });
            handle.exec_tty(&request.namespace, &request.pod, Some(&container), &request.command, size).await?
        } else {
            handle.exec(&request.namespace, &request.pod, Some(&container), &request.command).await?
        };
        let exit = session.exit;
        Ok(ExecProcess {
            stdin: Some(session.stdin),
            stdout: session.stdout,
            stderr: session.stderr,
            exit: Box::pin(async move { exit.await.map_err(|e| Error::internal(e.to_string())) }),
            resize: resize_fn(session.resize),
        })
    }
}

/// The runtime's terminal resize as the channel protocol applies it.
fn resize_fn(resize: Option<bosun_runtime::cri::Resize>) -> Option<Box<dyn Fn(channel::TerminalSize) + Send + Sync>> {
    resize.map(|apply| -> Box<dyn Fn(channel::TerminalSize) + Send + Sync> {
        Box::new(move |s: channel::TerminalSize| {
            if let Err(error) = apply(bosun_runtime::cri::TerminalSize { width: s.width, height: s.height }) {
                tracing::debug!(%error, "terminal resize failed");
            }
        })
    })
}

/// The resource metrics API (`kubectl top`, the HorizontalPodAutoscaler) reads the usage samples
/// of the node agents this process runs.
#[async_trait]
impl bosun_store::api::metrics::MetricsSource for LocalNodes {
    async fn nodes(&self) -> Result<Vec<bosun_store::api::metrics::NodeSample>> {
        let handles: Vec<NodeHandle> = self.nodes.read().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned().collect();
        Ok(handles
            .iter()
            .filter_map(|h| {
                let u = h.usage();
                Some(bosun_store::api::metrics::NodeSample {
                    name: h.node_name().to_owned(),
                    timestamp: u.timestamp?,
                    window: u.window,
                    cpu_nanocores: u.cpu_nanocores,
                    memory_bytes: u.memory_bytes,
                })
            })
            .collect())
    }

    async fn pods(&self, namespace: Option<&str>) -> Result<Vec<bosun_store::api::metrics::PodSample>> {
        let handles: Vec<NodeHandle> = self.nodes.read().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned().collect();
        let mut out = Vec::new();
        for h in &handles {
            let u = h.usage();
            let Some(timestamp) = u.timestamp else { continue };
            for p in u.pods.into_iter().filter(|p| namespace.is_none_or(|ns| p.namespace == ns)) {
                let containers = p
                    .containers
                    .into_iter()
                    .map(|c| bosun_store::api::metrics::ContainerSample {
                        name: c.name,
                        cpu_nanocores: c.cpu_nanocores,
                        memory_bytes: c.memory_bytes,
                    })
                    .collect();
                out.push(bosun_store::api::metrics::PodSample {
                    namespace: p.namespace,
                    name: p.name,
                    timestamp,
                    window: u.window,
                    containers,
                });
            }
        }
        Ok(out)
    }
}
