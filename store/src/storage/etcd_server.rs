//! Real etcd processes on loopback ports for tests and benchmarks: one member or a cluster,
//! each member stoppable, everything killed on drop.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why an etcd cluster could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartEtcdError {
    /// The `etcd` binary is not installed (Debian package `etcd-server`).
    #[error("the etcd binary was not found (install the etcd-server package)")]
    Missing,
    /// A process or port could not be set up.
    #[error("could not start etcd")]
    Io(
        #[from]
        #[source]
        std::io::Error,
    ),
    /// The members did not answer in time.
    #[error("etcd did not become ready within {0:?}")]
    NotReady(Duration),
}

struct Member {
    name: String,
    client_url: String,
    peer_url: String,
    data_dir: PathBuf,
    child: Option<Child>,
}

/// A cluster of etcd processes listening on free loopback ports, with data in a temporary
/// directory. Dropping it kills the processes and removes the data.
pub struct EtcdCluster {
    members: Vec<Member>,
    root: PathBuf,
}

impl std::fmt::Debug for EtcdCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdCluster").field("endpoints", &self.endpoints()).finish()
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Whether the `etcd` binary is on `PATH`.
pub fn etcd_installed() -> bool {
    Command::new("etcd").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

impl EtcdCluster {
    /// Starts `size` members and waits until the cluster serves requests.
    pub async fn start(size: usize) -> Result<Self, StartEtcdError> {
        if !etcd_installed() {
            return Err(StartEtcdError::Missing);
        }
        let root = std::env::temp_dir().join(format!("bosun-etcd-{}-{}", std::process::id(), fastrand_suffix()));
        std::fs::create_dir_all(&root)?;
        let mut members = Vec::new();
        for i in 0..size {
            members.push(Member {
                name: format!("m{i}"),
                client_url: format!("http://127.0.0.1:{}", free_port()?),
                peer_url: format!("http://127.0.0.1:{}", free_port()?),
                data_dir: root.join(format!("m{i}")),
                child: None,
            });
        }
        let initial: Vec<String> = members.iter().map(|m| format!("{}={}", m.name, m.peer_url)).collect();
        let initial = initial.join(",");
        let mut cluster = Self { members, root };
        for m in &mut cluster.members {
            let child = Command::new("etcd")
                .args(["--name", &m.name])
                .arg("--data-dir")
                .arg(&m.data_dir)
                .args(["--listen-client-urls", &m.client_url, "--advertise-client-urls", &m.client_url])
                .args(["--listen-peer-urls", &m.peer_url, "--initial-advertise-peer-urls", &m.peer_url])
                .args(["--initial-cluster", &initial, "--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", &format!("bosun-{}", cluster.root.display())])
                .args(["--logger", "zap", "--log-level", "error"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            m.child = Some(child);
        }
        cluster.wait_ready(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    async fn wait_ready(&self, timeout: Duration) -> Result<(), StartEtcdError> {
        let deadline = Instant::now() + timeout;
        let endpoints = self.endpoints();
        while Instant::now() < deadline {
            let ready = async {
                let opts =
                    etcd_client::ConnectOptions::new().with_timeout(Duration::from_secs(2)).with_connect_timeout(Duration::from_secs(1));
                let mut c = etcd_client::Client::connect(&endpoints, Some(opts)).await.ok()?;
                c.put("/bosun-ready", "1", None).await.ok()
            };
            if ready.await.is_some() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(StartEtcdError::NotReady(timeout))
    }

    /// The client URLs of the running members.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().filter(|m| m.child.is_some()).map(|m| m.client_url.clone()).collect()
    }

    /// The client URL of member `index`.
    pub fn endpoint(&self, index: usize) -> Option<&str> {
        self.members.get(index).map(|m| m.client_url.as_str())
    }

    /// Kills member `index` (SIGKILL), as a crash would.
    pub fn stop_member(&mut self, index: usize) {
        if let Some(mut child) = self.members.get_mut(index).and_then(|m| m.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn fastrand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish()
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.stop_member(i);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
