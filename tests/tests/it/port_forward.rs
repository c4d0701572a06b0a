//! `kubectl port-forward` against the reference cluster (process runtime): a busybox `nc` echo
//! server in a pod, reached through the API server's `pods/portforward` (SPDY tunneled in a
//! WebSocket, kubectl's default, and plain SPDY).

use crate::kubectl::{Kubectl, OneNode, kubectl_binary};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(90);

/// Starts `kubectl port-forward` to `pod`'s port `remote`; returns the process (killed on drop)
/// and the local port.
pub(crate) async fn port_forward(k: &Kubectl, pod: &str, remote: u16, websockets: bool) -> (tokio::process::Child, u16) {
    let target = format!(":{remote}");
    let pod = format!("pod/{pod}");
    let mut cmd = tokio::process::Command::from(k.command(&["port-forward", &pod, &target, "--address", "127.0.0.1"]));
    if !websockets {
        cmd.env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false");
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("run kubectl port-forward: {e}"));
    let mut lines = BufReader::new(child.stdout.take().unwrap_or_else(|| panic!("no stdout"))).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
    let line = match line {
        Ok(Ok(Some(line))) => line,
        other => panic!("kubectl port-forward printed no port: {other:?}"),
    };
    let local = line
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, local)
}

/// Sends `payload` to `ip`:`port`, half-closes, returns all that comes back.
pub(crate) async fn echo_through(ip: std::net::IpAddr, port: u16, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let work = async {
        let mut conn = TcpStream::connect((ip, port)).await?;
        let (mut r, mut w) = conn.split();
        let send = async {
            w.write_all(payload).await?;
            w.shutdown().await
        };
        let mut back = Vec::new();
        let (sent, received) = tokio::join!(send, r.read_to_end(&mut back));
        sent?;
        received?;
        Ok(back)
    };
    tokio::time::timeout(Duration::from_secs(30), work).await.unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// Runs pod `name`, an echo server, and waits until it answers on its IP; returns its port.
/// Process-runtime pods share the host's network (each with its own 127.x.y.z address): a free
/// port for the pod's listener. The process runtime runs host binaries, so busybox's `nc` (an
/// echo server with `-ll -e cat`) is called through the busybox binary.
pub(crate) async fn echo_pod(k: &Kubectl, name: &str) -> u16 {
    let port =
        std::net::TcpListener::bind(("127.0.0.1", 0)).and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or_else(|e| panic!("{e}"));
    let listen = format!("exec busybox nc -ll -p {port} -e cat");
    k.run(&["run", name, "--image=busybox", "--restart=Never", "--command", "--", "sh", "-c", &listen]);
    k.eventually(&["get", "pod", name], WAIT, |out| out.contains("Running")).await;
    let ip = k.run(&["get", "pod", name, "-o", "jsonpath={.status.podIP}"]);
    let ip: std::net::IpAddr = ip.trim().parse().unwrap_or_else(|e| panic!("pod IP {ip:?}: {e}"));
    // Wait until nc listens on the pod's IP (direct connections, bounded).
    let deadline = Instant::now() + WAIT;
    while echo_through(ip, port, b"ready?").await.ok().as_deref() != Some(&b"ready?"[..]) {
        assert!(Instant::now() < deadline, "nothing listens on {port} in pod {name}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_reaches_a_pods_listener() {
    let Some(binary) = kubectl_binary() else { return };
    let cluster = OneNode::ready(binary).await;
    let k = &cluster.k;

    let port = echo_pod(k, "echo").await;

    for websockets in [true, false] {
        let (mut child, local) = port_forward(k, "echo", port, websockets).await;
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let here = std::net::IpAddr::from([127, 0, 0, 1]);
        let (a, b) = tokio::join!(echo_through(here, local, b"hello pod"), echo_through(here, local, &big));
        assert_eq!(a.unwrap_or_else(|e| panic!("websockets={websockets}: {e}")), b"hello pod");
        let b = b.unwrap_or_else(|e| panic!("websockets={websockets}: {e}"));
        assert!(b == big, "websockets={websockets}: {} bytes came back, {} sent", b.len(), big.len());
        let _ = child.kill().await;
    }
    drop(cluster);
}
