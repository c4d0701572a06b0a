//! A custom service proxy backend, for the `custom_proxy` example: [`HaproxyBackend`] hands the
//! cluster's Services to HAProxy. It renders the service table as an HAProxy configuration (one
//! `listen` section in TCP mode per cluster IP and port, a `server` per endpoint, `balance
//! source` for ClientIP affinity), has `haproxy -c` check it, swaps it in atomically and starts or
//! reloads HAProxy (`-sf`: the old process finishes its connections, the new one takes the
//! listeners). A backend implements one method of `bosun_netproxy::ProxyBackend`, `apply`, which
//! receives what changed since the last successful apply (or everything, `diff.full`).
//!
//! HAProxy speaks TCP and HTTP: UDP service ports are left out (a comment says so in the file).

use bosun_netproxy::table::{Affinity, Protocol, ProxyService, ServicePortName, TableDiff};
use bosun_netproxy::{ApplyError, ProxyBackend};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What went wrong in an apply; the file in use and the running HAProxy are unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HaproxyError {
    /// Writing the new configuration failed.
    #[error("write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `haproxy` could not be run.
    #[error("run {0}")]
    Spawn(String, #[source] std::io::Error),
    /// `haproxy -c` refused the configuration, or the (re)start failed.
    #[error("haproxy: {0}")]
    Refused(String),
}

/// A backend that keeps HAProxy in step with the service table. It starts HAProxy at its first
/// apply that has something to serve, and stops it when dropped (or by [`HaproxyBackend::stop`]).
pub struct HaproxyBackend {
    config: PathBuf,
    pid_file: PathBuf,
    haproxy: PathBuf,
    services: tokio::sync::Mutex<BTreeMap<ServicePortName, Arc<ProxyService>>>,
    /// The pid of the HAProxy this backend started last (0: none), kept apart from the pid file
    /// so that dropping the backend stops HAProxy even when its directory is already gone.
    running: std::sync::atomic::AtomicU32,
}

impl HaproxyBackend {
    /// Writes its configuration and HAProxy's pid file in `dir`; runs `haproxy` from `PATH`.
    pub fn new(dir: &Path) -> Self {
        Self {
            config: dir.join("haproxy.cfg"),
            pid_file: dir.join("haproxy.pid"),
            haproxy: PathBuf::from("haproxy"),
            services: tokio::sync::Mutex::default(),
            running: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// The configuration file HAProxy runs with.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The pid of the HAProxy running the newest configuration, if one was started.
    pub fn pid(&self) -> Option<u32> {
        Some(self.running.load(std::sync::atomic::Ordering::SeqCst)).filter(|p| *p != 0)
    }

    /// Stops HAProxy (its listeners close; the configuration file stays).
    pub fn stop(&self) {
        if let Some(pid) = self.pid() {
            // SIGTERM: immediate (SIGUSR1 would let connections finish first).
            let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
            self.running.store(0, std::sync::atomic::Ordering::SeqCst);
            let _ = std::fs::remove_file(&self.pid_file);
        }
    }

    /// Runs `haproxy args`; its stderr goes to a file beside the configuration (a daemonized HAProxy
    /// would hold a pipe open), read back when it fails.
    async fn haproxy(&self, args: &[&str]) -> Result<(), HaproxyError> {
        let spawn = |e| HaproxyError::Spawn(self.haproxy.display().to_string(), e);
        let err_path = self.config.with_extension("stderr");
        let stderr = std::fs::File::create(&err_path).map_err(spawn)?;
        let status = tokio::process::Command::new(&self.haproxy)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .status()
            .await
            .map_err(spawn)?;
        if status.success() {
            return Ok(());
        }
        let mut why = std::fs::read_to_string(&err_path).unwrap_or_default();
        why.truncate(2048);
        Err(HaproxyError::Refused(format!("{status}: {why}")))
    }

    /// Checks `text`, swaps it in and (re)starts HAProxy on it; with no section to serve, stops
    /// HAProxy instead (it refuses to run without a listener).
    async fn install(&self, text: &str) -> Result<(), HaproxyError> {
        let next = self.config.with_extension("cfg.next");
        let write = |source| HaproxyError::Write { path: next.clone(), source };
        tokio::fs::write(&next, text).await.map_err(write)?;
        if !text.lines().any(|l| l.starts_with("listen ")) {
            tokio::fs::rename(&next, &self.config).await.map_err(|source| HaproxyError::Write { path: self.config.clone(), source })?;
            self.stop();
            return Ok(());
        }
        let next_str = next.display().to_string();
        self.haproxy(&["-c", "-q", "-f", &next_str]).await?;
        tokio::fs::rename(&next, &self.config).await.map_err(|source| HaproxyError::Write { path: self.config.clone(), source })?;
        let (config, pid_file) = (self.config.display().to_string(), self.pid_file.display().to_string());
        let old = self.pid().map(|p| p.to_string());
        let mut args = vec!["-D", "-f", &config, "-p", &pid_file];
        if let Some(old) = &old {
            args.extend(["-sf", old]);
        }
        self.haproxy(&args).await?;
        // The daemon's pid, which `-p` wrote before the command returned.
        let pid = std::fs::read_to_string(&self.pid_file).ok().and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()));
        self.running.store(pid.unwrap_or(0), std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

impl Drop for HaproxyBackend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A section name HAProxy accepts: `ns/name:port` with other characters as `_`.
fn section(name: &ServicePortName, ip: &std::net::IpAddr) -> String {
    let raw = format!("{}/{}:{}@{ip}", name.namespace, name.name, name.port);
    raw.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.:".contains(c) { c } else { '_' }).collect()
}

/// The whole configuration for `services`.
pub fn render(services: &BTreeMap<ServicePortName, Arc<ProxyService>>) -> String {
    let mut out = String::from(
        "# Written by bosun's HaproxyBackend; changes are overwritten.\n\
         global\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\n",
    );
    for svc in services.values() {
        if svc.name.protocol != Protocol::Tcp {
            let _ = writeln!(
                out,
                "# {}/{} port {}: {:?} is not served by HAProxy",
                svc.name.namespace, svc.name.name, svc.port, svc.name.protocol
            );
            continue;
        }
        for ip in &svc.cluster_ips {
            let bind = std::net::SocketAddr::new(*ip, svc.port);
            let _ = write!(out, "listen {}\n    bind {bind}\n", section(&svc.name, ip));
            let balance = match svc.affinity {
                Affinity::ClientIp { .. } => "source",
                Affinity::None => "roundrobin",
            };
            let _ = writeln!(out, "    balance {balance}");
            // This family's endpoints (a dual-stack service has a section per family).
            for (i, ep) in svc.cluster_endpoints.iter().filter(|e| e.addr.is_ipv4() == ip.is_ipv4()).enumerate() {
                let _ = writeln!(out, "    server ep{i} {}", ep.addr);
            }
        }
    }
    out
}

#[async_trait::async_trait]
impl ProxyBackend for HaproxyBackend {
    fn name(&self) -> &'static str {
        "haproxy"
    }

    async fn apply(&self, diff: &TableDiff) -> Result<(), ApplyError> {
        let mut services = self.services.lock().await;
        let mut next = if diff.full { BTreeMap::new() } else { services.clone() };
        for name in &diff.removed {
            next.remove(name);
        }
        for svc in &diff.upserted {
            next.insert(svc.name.clone(), svc.clone());
        }
        // The whole file is rewritten: HAProxy reads one configuration (a change costs a reload).
        self.install(&render(&next)).await.map_err(|e| ApplyError::new("haproxy", e))?;
        tracing::info!(services = next.len(), path = %self.config.display(), "haproxy configuration installed");
        *services = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_netproxy::table::Endpoint;
    use std::net::SocketAddr;

    fn svc(name: &str, protocol: Protocol, ips: &[&str], eps: &[&str]) -> Arc<ProxyService> {
        let eps: Vec<Endpoint> = eps.iter().map(|e| Endpoint::ready(e.parse::<SocketAddr>().expect("addr"))).collect();
        let name = ServicePortName { namespace: "ns".into(), name: name.into(), port: "p".into(), protocol };
        Arc::new(ProxyService::new(name, ips.iter().map(|i| i.parse().expect("ip")).collect(), 80, eps))
    }

    #[test]
    fn each_family_gets_its_section_with_its_endpoints_udp_is_left_out_and_affinity_balances_by_source() {
        let dual = svc("dual", Protocol::Tcp, &["10.96.0.1", "fd00::1"], &["10.1.0.1:8080", "[fd00:1::1]:8080"]);
        let mut sticky = (*svc("sticky", Protocol::Tcp, &["10.96.0.2"], &["10.1.0.2:80", "10.1.0.3:80"])).clone();
        sticky.affinity = Affinity::ClientIp { timeout: std::time::Duration::from_secs(60) };
        let dns = svc("dns", Protocol::Udp, &["10.96.0.10"], &["10.1.0.9:53"]);
        let all: BTreeMap<_, _> = [dual, Arc::new(sticky), dns].into_iter().map(|s| (s.name.clone(), s)).collect();
        let text = render(&all);
        let section = |head: &str| -> String {
            let start = text.find(head).unwrap_or_else(|| panic!("{head} in:\n{text}"));
            text[start..].split("\nlisten ").next().unwrap_or_default().to_owned()
        };
        let v4 = section("listen ns_dual:p_10.96.0.1\n");
        assert!(v4.contains("bind 10.96.0.1:80") && v4.contains("server ep0 10.1.0.1:8080") && !v4.contains("fd00"), "{v4}");
        let v6 = section("listen ns_dual:p_fd00::1\n");
        assert!(v6.contains("bind [fd00::1]:80") && v6.contains("server ep0 [fd00:1::1]:8080") && !v6.contains("10.1.0.1"), "{v6}");
        let s = section("listen ns_sticky:p_10.96.0.2\n");
        assert!(s.contains("balance source") && s.contains("server ep1 10.1.0.3:80"), "{s}");
        assert!(text.contains("# ns/dns port 80: Udp is not served by HAProxy") && !text.contains("bind 10.96.0.10"), "{text}");
    }
}
