//! The real `kubectl port-forward` against the HTTPS server, with a node connector that dials
//! local TCP servers: SPDY tunneled in a WebSocket (kubectl's default) and plain SPDY
//! (`KUBECTL_PORT_FORWARD_WEBSOCKETS=false`), two connections at once, a large transfer, half
//! close, and a port nothing listens on.

use super::http::TestResult;
use super::kubectl::{Kubectl, have_kubectl};
use bosun_core::k8s_openapi::api::core::v1::Pod;
use bosun_core::{Api, Client, Patch, PatchParams};
use bosun_store::ApiServer;
use bosun_store::http::{ExecIo, HttpConfig, NodeConnector, Server, serve};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Child;

/// The pod's port `p` is `127.0.0.1:p`.
#[derive(Default)]
struct LoopbackNodes {
    dialed: AtomicUsize,
}

#[async_trait::async_trait]
impl NodeConnector for LoopbackNodes {
    async fn port_forward(&self, namespace: &str, pod: &str, port: u16) -> bosun_core::Result<Box<dyn ExecIo>> {
        assert_eq!((namespace, pod), ("default", "p"));
        self.dialed.fetch_add(1, Ordering::SeqCst);
        let conn = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| bosun_core::Error::internal(format!("dial 127.0.0.1:{port}: {e}")))?;
        Ok(Box::new(conn))
    }
}

/// A TCP echo server on 127.0.0.1: echoes until the client half-closes, then closes.
async fn echo_server() -> Result<u16, Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    Ok(port)
}

async fn setup() -> Result<(Arc<LoopbackNodes>, Server, Kubectl), Box<dyn std::error::Error>> {
    let api = ApiServer::in_memory();
    let nodes = Arc::new(LoopbackNodes::default());
    let config = HttpConfig::for_api_server(&api).https(([127, 0, 0, 1], 0).into()).nodes(nodes.clone());
    let server = serve(api.clone(), config).await?;
    let client = api as Arc<dyn Client>;
    let pods = Api::<Pod>::namespaced(client, "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "p"},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "busybox"}]}}))?;
    pods.create(&pod, &Default::default()).await?;
    // kubectl port-forward refuses pods that are not running before it asks the server.
    let status = Patch::Merge(serde_json::json!({"status": {"phase": "Running", "podIP": "127.0.0.1"}}));
    pods.patch_status("p", &status, &PatchParams::default()).await?;
    let k = Kubectl::new(&server)?;
    Ok((nodes, server, k))
}

/// A running `kubectl port-forward` and the local port it listens on.
struct Forward {
    child: Child,
    local: u16,
    stderr: tokio::task::JoinHandle<String>,
}

impl Forward {
    async fn start(k: &Kubectl, remote: u16, websockets: bool) -> Result<Self, Box<dyn std::error::Error>> {
        let target = format!(":{remote}");
        let mut cmd = k.command(&["port-forward", "-n", "default", "pod/p", &target, "--address", "127.0.0.1", "-v=4"]);
        if !websockets {
            cmd.env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false");
        }
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let mut stderr = BufReader::new(child.stderr.take().ok_or("no stderr")?);
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = tokio::time::timeout(Duration::from_secs(60), stderr.read_to_string(&mut text)).await;
            text
        });
        let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
        // "Forwarding from 127.0.0.1:41234 -> 8080"
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        let line = match first {
            Ok(Ok(Some(line))) => line,
            other => {
                let _ = child.kill().await;
                let err = stderr.await.unwrap_or_default();
                return Err(format!("kubectl port-forward printed no port ({other:?}); stderr:\n{err}").into());
            }
        };
        let local = line
            .strip_prefix("Forwarding from 127.0.0.1:")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("unexpected first line {line:?}"))?;
        // Keep draining stdout ("Handling connection for ...") so kubectl never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { child, local, stderr })
    }

    /// Stops kubectl and returns what it wrote to stderr.
    async fn stop(mut self) -> String {
        let _ = self.child.kill().await;
        tokio::time::timeout(Duration::from_secs(10), self.stderr).await.ok().and_then(Result::ok).unwrap_or_default()
    }
}

/// Sends `payload` through the forwarded port, half-closes, and returns all that comes back.
async fn round_trip(local: u16, payload: Vec<u8>) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut conn = TcpStream::connect(("127.0.0.1", local)).await?;
    let (mut r, mut w) = conn.split();
    let send = async {
        w.write_all(&payload).await?;
        w.shutdown().await
    };
    let mut back = Vec::new();
    let recv = r.read_to_end(&mut back);
    let (sent, received) = tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(send, recv) }).await?;
    sent?;
    received?;
    Ok(back)
}

async fn forwards_through(websockets: bool) -> TestResult {
    let (nodes, _server, k) = setup().await?;
    let echo = echo_server().await?;
    let forward = Forward::start(&k, echo, websockets).await?;
    let local = forward.local;
    let result = async {
        // Two connections at once, different payloads; one big enough for many frames.
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (a, b) = tokio::join!(round_trip(local, b"hello through the tunnel".to_vec()), round_trip(local, big.clone()));
        assert_eq!(a?, b"hello through the tunnel");
        let b = b?;
        assert_eq!(b.len(), big.len());
        assert!(b == big, "the large transfer came back altered");
        // And the session serves a third connection after those ended.
        assert_eq!(round_trip(local, b"third".to_vec()).await?, b"third");
        Ok::<_, Box<dyn std::error::Error>>(())
    }
    .await;
    let stderr = forward.stop().await;
    result.map_err(|e| format!("{e}; kubectl stderr:\n{stderr}"))?;
    assert_eq!(nodes.dialed.load(Ordering::SeqCst), 3);
    // At -v=4 kubectl's tunneling dialer logs the subprotocol it negotiated (without the
    // `SPDY/3.1+` prefix), and the fallback dialer logs any fall back to plain SPDY.
    if websockets {
        assert!(stderr.contains("negotiated protocol: portforward.k8s.io"), "kubectl did not tunnel:\n{stderr}");
        assert!(!stderr.to_lowercase().contains("fallback"), "kubectl fell back from the WebSocket tunnel:\n{stderr}");
    } else {
        assert!(!stderr.contains("tunneling_dialer"), "kubectl tried the tunnel despite KUBECTL_PORT_FORWARD_WEBSOCKETS=false:\n{stderr}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_through_the_websocket_tunnel() -> TestResult {
    if !have_kubectl() {
        return Ok(());
    }
    forwards_through(true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_over_plain_spdy() -> TestResult {
    if !have_kubectl() {
        return Ok(());
    }
    forwards_through(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_reports_a_closed_port() -> TestResult {
    if !have_kubectl() {
        return Ok(());
    }
    let (_nodes, _server, k) = setup().await?;
    // A port nothing listens on: bound, then closed.
    let closed = TcpListener::bind(("127.0.0.1", 0)).await?.local_addr()?.port();
    let mut forward = Forward::start(&k, closed, true).await?;
    // The local connection is accepted, then closed without data once the pod side fails.
    let mut conn = TcpStream::connect(("127.0.0.1", forward.local)).await?;
    let mut back = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut back)).await?;
    assert!(back.is_empty(), "{back:?}");
    // kubectl prints the error stream's message ("an error occurred forwarding L -> R: ...") and,
    // since client-go 1.29, closes the session: "error: lost connection to pod".
    let exited = tokio::time::timeout(Duration::from_secs(30), forward.child.wait()).await;
    let stderr = forward.stop().await;
    let wanted = format!("error forwarding port {closed} to pod default/p");
    assert!(stderr.contains(&wanted), "kubectl did not print {wanted:?}:\n{stderr}");
    assert!(matches!(exited, Ok(Ok(status)) if !status.success()), "kubectl should exit with an error: {exited:?}\n{stderr}");
    assert!(stderr.contains("lost connection to pod"), "{stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_to_a_missing_pod_fails_plainly() -> TestResult {
    if !have_kubectl() {
        return Ok(());
    }
    let (_nodes, _server, k) = setup().await?;
    let err = k.fails(&["port-forward", "-n", "default", "pod/nope", "8080:80"]).await?;
    assert!(err.contains("pods \"nope\" not found"), "{err}");
    Ok(())
}

/// What is refused before any upgrade, as a plain `Status` (a non-101 answer is also what makes
/// kubectl fall back from the WebSocket tunnel to plain SPDY).
#[tokio::test]
async fn port_forward_requests_are_checked_before_the_upgrade() -> TestResult {
    use http::{Method, StatusCode};
    let path = "/api/v1/namespaces/default/pods/p/portforward";
    let (_api, bare) = super::http::start().await?;
    let reply = super::http::call(&bare, Method::POST, path, &[], "").await?;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "no node connector");

    let (_nodes, server, _k) = setup().await?;
    let reply = super::http::call(&server, Method::POST, path, &[], "").await?;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "no upgrade");
    assert!(reply.json()["message"].as_str().unwrap_or_default().contains("SPDY/3.1"), "{:?}", reply.json());
    let websocket = [
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
    ];
    let mut exec_only = websocket.to_vec();
    exec_only.push(("sec-websocket-protocol", "v5.channel.k8s.io"));
    let reply = super::http::call(&server, Method::GET, path, &exec_only, "").await?;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "a WebSocket without the tunnel subprotocol");
    let spdy = [("connection", "Upgrade"), ("upgrade", "SPDY/3.1"), ("x-stream-protocol-version", "v4.channel.k8s.io")];
    let reply = super::http::call(&server, Method::POST, path, &spdy, "").await?;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "SPDY without portforward.k8s.io");
    let mut tunnel = websocket.to_vec();
    tunnel.push(("sec-websocket-protocol", "SPDY/3.1+portforward.k8s.io"));
    let reply = super::http::call(&server, Method::GET, "/api/v1/namespaces/default/pods/nope/portforward", &tunnel, "").await?;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "a missing pod");
    Ok(())
}
