//! The node agents this process runs, as the API server's [`NodeConnector`] (logs, exec, attach)
//! and metrics source (`kubectl top`).

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
        // kubectl sends the terminal's size as soon as the session opens; the terminal starts at it.
        let mut sizes = session.take_resizes();
        let size = match sizes.as_mut() {
            Some(sizes) if request.tty => tokio::time::timeout(Duration::from_millis(500), sizes.recv()).await.ok().flatten(),
            _ => None,
        };
        let mut process = self.start_exec(&request, size).await;
        // The later sizes resize the terminal; `run_exec` cannot, the session's stream being taken.
        let resizing = match (process.as_mut().ok().and_then(|p| p.resize.take()), sizes) {
            (Some(apply), Some(mut sizes)) if request.tty => Some(tokio::spawn(async move {
                while let Some(size) = sizes.recv().await {
                    apply(size);
                }
            })),
            _ => None,
        };
        let outcome = channel::run_exec(session, &request, process).await.map_err(internal);
        if let Some(task) = resizing {
            task.abort();
        }
        outcome
    }
}

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

    /// Starts the command of an exec (or, for attach, follows the container's output from now
    /// on: the process runtime keeps no handle on a running container's stdin).
    async fn start_exec(&self, request: &ExecRequest, size: Option<channel::TerminalSize>) -> Result<ExecProcess> {
        let (handle, container) = self.exec_target(request).await?;
        if request.attach {
            if request.stdin {
                return Err(Error::bad_request("this node cannot attach to a container's stdin; attach without -i"));
            }
            let params = LogParams { container: Some(container), follow: true, tail_lines: Some(0), ..LogParams::default() };
            let mut logs = handle.logs(&request.namespace, &request.pod, &params).await?;
            let (mut writer, reader) = tokio::io::duplex(64 * 1024);
            let copy = async move {
                use futures::StreamExt as _;
                use tokio::io::AsyncWriteExt as _;
                while let Some(Ok(chunk)) = logs.next().await {
                    if writer.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
                Ok(0)
            };
            return Ok(ExecProcess {
                stdin: None,
                stdout: Box::pin(reader),
                stderr: Box::pin(tokio::io::empty()),
                exit: Box::pin(copy),
                resize: None,
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
        let resize = session.resize.map(|apply| -> Box<dyn Fn(channel::TerminalSize) + Send + Sync> {
            Box::new(move |s: channel::TerminalSize| {
                if let Err(error) = apply(bosun_runtime::cri::TerminalSize { width: s.width, height: s.height }) {
                    tracing::debug!(%error, "exec terminal resize failed");
                }
            })
        });
        Ok(ExecProcess {
            stdin: Some(session.stdin),
            stdout: session.stdout,
            stderr: session.stderr,
            exit: Box::pin(async move { exit.await.map_err(|e| Error::internal(e.to_string())) }),
            resize,
        })
    }
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
