//! Liveness, readiness and startup probes (exec, HTTP GET, TCP) of one container instance, with
//! initial delay, period, timeout and thresholds. Results land in a shared [`ProbeState`] and wake
//! the pod worker, which acts on them.

use super::events::Recorder;
use crate::cri::{ContainerId, ContainerRuntime};
use bosun_core::k8s_openapi::api::core::v1::{Container, Probe};
use bosun_core::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

/// What the probes of one container instance have found so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeState {
    /// The startup probe passed (or there is none).
    pub started: bool,
    /// The readiness probe passes (only meaningful with a readiness probe).
    pub ready: bool,
    /// The liveness or startup probe failed past its threshold: the container must be restarted.
    pub failed: Option<String>,
}

/// Where probes connect and what they run through.
#[derive(Clone)]
pub struct ProbeTarget {
    /// The runtime (exec probes, and network probes it answers itself).
    pub runtime: Arc<dyn ContainerRuntime>,
    /// The container instance.
    pub container_id: ContainerId,
    /// The pod IP (network probes connect here unless the probe names a host).
    pub ip: IpAddr,
}

/// One probe's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Passed.
    Success,
    /// Failed, with why.
    Failure(String),
}

fn resolve_port(port: &IntOrString, container: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).ok(),
        IntOrString::String(name) => name.parse().ok().or_else(|| {
            container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
        }),
    }
}

/// Runs one probe attempt.
pub async fn run_once(probe: &Probe, container: &Container, target: &ProbeTarget) -> Outcome {
    let timeout = Duration::from_secs(u64::try_from(probe.timeout_seconds.unwrap_or(1).max(1)).unwrap_or(1));
    if let Some(exec) = &probe.exec {
        let cmd = exec.command.clone().unwrap_or_default();
        return match target.runtime.exec_sync(&target.container_id, &cmd, timeout).await {
            Ok(r) if r.timed_out => Outcome::Failure(format!("command timed out after {timeout:?}")),
            Ok(r) if r.exit_code == 0 => Outcome::Success,
            Ok(r) => Outcome::Failure(format!(
                "command {cmd:?} exited with {}: {}",
                r.exit_code,
                String::from_utf8_lossy(&r.stdout)
                    .trim()
                    .chars()
                    .chain(String::from_utf8_lossy(&r.stderr).trim().chars())
                    .take(200)
                    .collect::<String>()
            )),
            Err(e) => Outcome::Failure(e.to_string()),
        };
    }
    let (port, http) = if let Some(h) = &probe.http_get {
        (resolve_port(&h.port, container), Some(h))
    } else if let Some(t) = &probe.tcp_socket {
        (resolve_port(&t.port, container), None)
    } else if let Some(g) = &probe.grpc {
        // No gRPC client here: a gRPC probe checks that the port accepts connections.
        (u16::try_from(g.port).ok(), None)
    } else {
        return Outcome::Failure("probe has no handler".into());
    };
    let Some(port) = port else { return Outcome::Failure("probe port cannot be resolved".into()) };
    if let Some(answer) = target.runtime.probe_network(&target.container_id, port).await {
        return if answer { Outcome::Success } else { Outcome::Failure(format!("probe of port {port} failed")) };
    }
    let host = http
        .and_then(|h| h.host.clone())
        .or_else(|| probe.tcp_socket.as_ref().and_then(|t| t.host.clone()))
        .unwrap_or_else(|| target.ip.to_string());
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|e| format!("dial tcp {host}:{port}: {e}"))?;
        let Some(h) = http else { return Ok(()) };
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        let mut req =
            format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.37\r\nAccept: */*\r\nConnection: close\r\n");
        for hdr in h.http_headers.iter().flatten() {
            req.push_str(&format!("{}: {}\r\n", hdr.name, hdr.value));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 256];
        let mut got = 0;
        while got < 12 {
            let n = stream.read(&mut buf[got..]).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            got += n;
        }
        let line = String::from_utf8_lossy(&buf[..got]);
        let code: u16 = line.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| format!("malformed HTTP response {line:?}"))?;
        if (200..400).contains(&code) { Ok(()) } else { Err(format!("HTTP probe failed with statuscode: {code}")) }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(())) => Outcome::Success,
        Ok(Err(e)) => Outcome::Failure(e),
        Err(_) => Outcome::Failure(format!("probe timed out after {timeout:?}")),
    }
}

fn secs(v: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(default))
}

/// Runs the probes of a container instance until the returned handle is dropped.
pub fn spawn(
    container: Container,
    target: ProbeTarget,
    state: Arc<Mutex<ProbeState>>,
    wake: Arc<Notify>,
    recorder: Recorder,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let set = |f: &dyn Fn(&mut ProbeState)| {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            let before = s.clone();
            f(&mut s);
            if *s != before {
                wake.notify_one();
            }
        };
        if let Some(p) = container.startup_probe.clone()
            && let Err(msg) = run_loop(&p, &container, &target, &recorder, "Startup", true).await
        {
            set(&|s| s.failed = Some(msg.clone()));
            return;
        }
        set(&|s| s.started = true);
        let liveness = async {
            let Some(p) = container.liveness_probe.clone() else { return std::future::pending::<()>().await };
            if let Err(msg) = run_loop(&p, &container, &target, &recorder, "Liveness", false).await {
                set(&|s| s.failed = Some(msg.clone()));
            }
        };
        let readiness = async {
            let Some(p) = container.readiness_probe.clone() else { return std::future::pending::<()>().await };
            tokio::time::sleep(secs(p.initial_delay_seconds, 0)).await;
            let period = secs(p.period_seconds, 10).max(Duration::from_secs(1));
            let (need_ok, need_fail) = (p.success_threshold.unwrap_or(1).max(1), p.failure_threshold.unwrap_or(3).max(1));
            let (mut oks, mut fails) = (0, 0);
            loop {
                match run_once(&p, &container, &target).await {
                    Outcome::Success => {
                        oks += 1;
                        fails = 0;
                        if oks >= need_ok {
                            set(&|s| s.ready = true);
                        }
                    }
                    Outcome::Failure(msg) => {
                        fails += 1;
                        oks = 0;
                        recorder.warning("Unhealthy", format!("Readiness probe failed: {msg}"));
                        if fails >= need_fail {
                            set(&|s| s.ready = false);
                        }
                    }
                }
                tokio::time::sleep(period).await;
            }
        };
        // Liveness ends only on failure; readiness never ends on its own.
        tokio::select! {
            () = liveness => {}
            () = readiness => {}
        }
    })
}

/// Probes until failure passes the threshold (`Err`) or, for startup probes, until success (`Ok`).
async fn run_loop(
    p: &Probe,
    container: &Container,
    target: &ProbeTarget,
    recorder: &Recorder,
    kind: &str,
    until_success: bool,
) -> Result<(), String> {
    tokio::time::sleep(secs(p.initial_delay_seconds, 0)).await;
    let period = secs(p.period_seconds, 10).max(Duration::from_secs(1));
    let need_fail = p.failure_threshold.unwrap_or(3).max(1);
    let mut fails = 0;
    loop {
        match run_once(p, container, target).await {
            Outcome::Success => {
                fails = 0;
                if until_success {
                    return Ok(());
                }
            }
            Outcome::Failure(msg) => {
                fails += 1;
                recorder.warning("Unhealthy", format!("{kind} probe failed: {msg}"));
                if fails >= need_fail {
                    return Err(format!("{kind} probe failed {fails} times: {msg}"));
                }
            }
        }
        tokio::time::sleep(period).await;
    }
}
