//! Pod networking through the standard CNI plugins: one network namespace per pod (`ip netns`),
//! wired to a node bridge by the `bridge` plugin with `host-local` IP addresses.

use crate::error::{Result, RuntimeError};
use crate::image::run;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// How pods are wired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniConfig {
    /// Where the plugin binaries are (Debian: `/usr/lib/cni`).
    pub bin_dir: PathBuf,
    /// The node bridge.
    pub bridge: String,
    /// The pod subnet of this node.
    pub subnet: String,
    /// Where `host-local` keeps its allocations.
    pub ipam_dir: PathBuf,
}

impl CniConfig {
    fn network(&self) -> serde_json::Value {
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": NETWORK_NAME,
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": self.subnet }]],
                "routes": [{ "dst": "0.0.0.0/0" }],
                "dataDir": self.ipam_dir,
            }
        })
    }

    /// Whether the plugins are installed.
    pub fn available(&self) -> bool {
        self.bin_dir.join("bridge").exists() && self.bin_dir.join("host-local").exists()
    }
}

/// The path of a named network namespace.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/var/run/netns").join(name)
}

async fn plugin(config: &CniConfig, command: &str, container_id: &str, netns: &str) -> Result<String> {
    let mut child = Command::new(config.bin_dir.join("bridge"))
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container_id)
        .env("CNI_NETNS", netns_path(netns))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", &config.bin_dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| RuntimeError::io("run CNI bridge plugin", e))?;
    if let Some(mut stdin) = child.stdin.take() {
        let body = serde_json::to_vec(&config.network()).unwrap_or_default();
        stdin.write_all(&body).await.map_err(|e| RuntimeError::io("write CNI config", e))?;
    }
    let out = child.wait_with_output().await.map_err(|e| RuntimeError::io("wait CNI plugin", e))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(RuntimeError::Command { program: format!("CNI bridge {command}"), status: out.status.to_string(), stderr: stdout });
    }
    Ok(stdout)
}

/// Creates a network namespace, brings its loopback up and attaches it to the bridge; returns the pod IP.
pub async fn setup(config: &CniConfig, container_id: &str, netns: &str) -> Result<IpAddr> {
    run(Command::new("ip").args(["netns", "add", netns])).await?;
    run(Command::new("ip").args(["netns", "exec", netns, "ip", "link", "set", "lo", "up"])).await?;
    let result = match plugin(config, "ADD", container_id, netns).await {
        Ok(r) => r,
        Err(e) => {
            let _ = run(Command::new("ip").args(["netns", "delete", netns])).await;
            return Err(e);
        }
    };
    let parsed: serde_json::Value =
        serde_json::from_str(&result).map_err(|e| RuntimeError::Invalid(format!("CNI result is not JSON ({e}): {result}")))?;
    let addr = parsed
        .pointer("/ips/0/address")
        .and_then(|a| a.as_str())
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse::<IpAddr>().ok())
        .ok_or_else(|| RuntimeError::Invalid(format!("CNI result has no IP: {result}")))?;
    Ok(addr)
}

/// Detaches and deletes a pod's network namespace. Idempotent.
pub async fn teardown(config: &CniConfig, container_id: &str, netns: &str) {
    if netns_path(netns).exists() {
        if let Err(error) = plugin(config, "DEL", container_id, netns).await {
            tracing::warn!(%error, netns, "CNI DEL failed");
        }
        let _ = run(Command::new("ip").args(["netns", "delete", netns])).await;
    }
}

/// The network name the `host-local` IPAM files are kept under (`<ipam_dir>/<name>/<ip>`).
const NETWORK_NAME: &str = "bosun";

/// The addresses `host-local` has reserved in this config's IPAM directory, with the container id
/// (sandbox id) each one was reserved for.
pub fn reservations(config: &CniConfig) -> Vec<(IpAddr, String)> {
    let Ok(dir) = std::fs::read_dir(config.ipam_dir.join(NETWORK_NAME)) else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| {
            let ip = e.file_name().to_str()?.parse::<IpAddr>().ok()?;
            // host-local writes "<container id>\r\n<ifname>" (older versions: the id alone).
            let content = std::fs::read_to_string(e.path()).ok()?;
            let id = content.lines().next()?.trim().to_string();
            Some((ip, id))
        })
        .collect()
}

/// The named network namespaces on this machine.
pub fn namespaces() -> Vec<String> {
    std::fs::read_dir("/var/run/netns")
        .map(|d| d.flatten().filter_map(|e| e.file_name().to_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// The processes inside a named network namespace.
pub async fn namespace_pids(netns: &str) -> Vec<i32> {
    run(Command::new("ip").args(["netns", "pids", netns]))
        .await
        .map(|out| out.split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

/// Whether a namespace's `eth0` is the far end of a veth whose near end is a port of `bridge`.
pub async fn attached_to(netns: &str, bridge: &str) -> bool {
    on_bridge(Command::new("ip").args(["-n", netns, "-j", "link", "show", "eth0"]), bridge).await
}

/// Whether the network namespace of process `pid` is attached to `bridge` (as [`attached_to`];
/// for namespaces whose name was deleted while a process keeps them alive).
pub async fn pid_attached_to(pid: i32, bridge: &str) -> bool {
    let target = pid.to_string();
    on_bridge(Command::new("nsenter").args(["-t", &target, "-n", "ip", "-j", "link", "show", "eth0"]), bridge).await
}

async fn on_bridge(show_eth0: &mut Command, bridge: &str) -> bool {
    let Ok(out) = run(show_eth0).await else { return false };
    let Some(peer) =
        serde_json::from_str::<serde_json::Value>(&out).ok().and_then(|v| v.pointer("/0/link_index").and_then(serde_json::Value::as_u64))
    else {
        return false;
    };
    let Ok(ports) = std::fs::read_dir(Path::new("/sys/class/net").join(bridge).join("brif")) else { return false };
    ports.flatten().any(|p| {
        std::fs::read_to_string(Path::new("/sys/class/net").join(p.file_name()).join("ifindex"))
            .is_ok_and(|i| i.trim().parse::<u64>().ok() == Some(peer))
    })
}

/// Frees what a sandbox held on the network even when its namespace is gone: CNI DEL (which
/// releases the IPAM reservation and the veth), then the namespace itself. Processes still in
/// the namespace keep it and its veth alive, so callers kill them first.
pub async fn release(config: &CniConfig, container_id: &str, netns: &str) {
    if let Err(error) = plugin(config, "DEL", container_id, netns).await {
        tracing::warn!(%error, netns, "CNI DEL failed");
    }
    if netns_path(netns).exists() {
        let _ = run(Command::new("ip").args(["netns", "delete", netns])).await;
    }
    // A reservation the plugin could not release (its network config changed) goes by hand.
    for (ip, id) in reservations(config) {
        if id == container_id {
            let _ = std::fs::remove_file(config.ipam_dir.join(NETWORK_NAME).join(ip.to_string()));
        }
    }
}
