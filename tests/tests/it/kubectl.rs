//! Helpers: find the real kubectl, run it against a cluster, poll until a condition holds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The real kubectl, or `None` (a loud skip locally; a failure when ci.sh requires components).
pub fn kubectl_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("BOSUN_REQUIRE_COMPONENTS").is_ok_and(|v| v == "1") {
            panic!("kubectl is required (BOSUN_REQUIRE_COMPONENTS=1) but is not on PATH");
        }
        eprintln!("\n!!! SKIPPING: kubectl is not on PATH; install kubectl v1.32 to run the end-to-end tests !!!\n");
    }
    found
}

/// Runs kubectl commands against one kubeconfig.
pub struct Kubectl {
    pub binary: PathBuf,
    pub kubeconfig: PathBuf,
    pub cache: PathBuf,
}

impl Kubectl {
    pub fn new(binary: PathBuf, kubeconfig: &Path, cache: &Path) -> Self {
        Self { binary, kubeconfig: kubeconfig.to_owned(), cache: cache.to_owned() }
    }

    /// A kubectl command on this kubeconfig and cache, for callers that wire its streams themselves.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command.arg("--kubeconfig").arg(&self.kubeconfig).arg("--cache-dir").arg(&self.cache).args(args);
        command
    }

    /// Runs kubectl with `input` on its standard input (none: /dev/null); returns its whole output.
    pub fn output_with_stdin(&self, args: &[&str], input: Option<&[u8]>) -> std::process::Output {
        use std::io::Write;
        use std::process::Stdio;
        let mut child = self
            .command(args)
            .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run kubectl {args:?}: {e}"));
        if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
            stdin.write_all(input).unwrap_or_else(|e| panic!("write kubectl stdin: {e}"));
        }
        child.wait_with_output().unwrap_or_else(|e| panic!("wait for kubectl {args:?}: {e}"))
    }

    /// Runs kubectl; returns (success, stdout, stderr).
    pub fn try_run(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.command(args).output().unwrap_or_else(|e| panic!("run kubectl {args:?}: {e}"));
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// Runs kubectl and panics with its output when it fails.
    pub fn run(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.try_run(args);
        assert!(ok, "kubectl {args:?} failed:\nstdout: {stdout}\nstderr: {stderr}");
        stdout
    }

    /// Polls a kubectl command until `check` accepts its output, or panics after `timeout`.
    pub async fn eventually(&self, args: &[&str], timeout: Duration, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let (ok, stdout, stderr) = self.try_run(args);
            if ok && check(&stdout) {
                return stdout;
            }
            if Instant::now() >= deadline {
                let (_, pods, _) = self.try_run(&["get", "pods", "-A", "-o", "wide"]);
                let (_, describe, _) = self.try_run(&["describe", "pods", "-A"]);
                panic!("kubectl {args:?} never satisfied the check:\nstdout: {stdout}\nstderr: {stderr}\n{pods}\n{describe}");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// One HTTP/1.0 GET over a real TCP connection; returns the body on a 200.
pub async fn http_get(addr: &str, host: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connect = tokio::net::TcpStream::connect(addr);
    let mut stream = tokio::time::timeout(Duration::from_secs(2), connect).await.ok()?.ok()?;
    stream.write_all(format!("GET / HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes()).await.ok()?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut response)).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200").then(|| body.to_owned()).or_else(|| head.starts_with("HTTP/1.1 200").then(|| body.to_owned()))
}

/// Polls an HTTP GET until the body satisfies `check`.
pub async fn http_eventually(addr: &str, host: &str, timeout: Duration, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(body) = http_get(addr, host).await.filter(|b| check(b)) {
            return body;
        }
        assert!(Instant::now() < deadline, "GET http://{addr}/ (Host: {host}) never answered as expected");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Kills whatever process-runtime containers a cluster with this data directory left running (on
/// success and on failure alike).
pub struct KillContainers(pub PathBuf);

impl Drop for KillContainers {
    fn drop(&mut self) {
        let Ok(nodes) = std::fs::read_dir(self.0.join("nodes")) else { return };
        for node in nodes.flatten() {
            let Ok(records) = std::fs::read_dir(node.path().join("runtime/containers")) else { continue };
            for record in records.flatten() {
                let pid = std::fs::read(record.path())
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .and_then(|v| v.get("pid").and_then(serde_json::Value::as_i64));
                if let Some(pid) = pid.filter(|p| *p > 1) {
                    // Each container leads its own process group.
                    let _ = std::process::Command::new("kill").args(["-9", "--", &format!("-{pid}")]).status();
                }
            }
        }
    }
}

/// Whether etcd is installed (a loud skip locally; a failure when ci.sh requires components).
pub fn etcd_available() -> bool {
    if bosun_store::storage::etcd_server::etcd_installed() {
        return true;
    }
    assert!(
        std::env::var("BOSUN_REQUIRE_COMPONENTS").as_deref() != Ok("1"),
        "etcd is required (BOSUN_REQUIRE_COMPONENTS=1) but is not installed"
    );
    eprintln!("\n!!! SKIPPING: etcd is not installed (apt-get install etcd-server) !!!\n");
    false
}

/// A one-node reference cluster on the in-memory store, every listener on an ephemeral loopback
/// port, its files under `dir`.
pub fn one_node_in_memory(dir: &Path) -> bosun_examples::ClusterConfig {
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    bosun_examples::ClusterConfig {
        data_dir: dir.join("data"),
        store: bosun_examples::StoreChoice::Memory,
        listen: any,
        kubeconfig: dir.join("kubeconfig"),
        dns: any,
        ingress: any,
        lease_renew: Duration::from_secs(2),
        ..bosun_examples::ClusterConfig::default()
    }
}

/// A one-node in-memory cluster (process runtime) in a temp dir, with kubectl pointed at it.
/// Fields drop in order: the cluster stops, then its leftover containers are killed, then the
/// directory goes.
pub struct OneNode {
    pub k: Kubectl,
    _cluster: bosun_examples::Cluster,
    _cleanup: KillContainers,
    _dir: tempfile::TempDir,
}

impl OneNode {
    /// Starts the cluster and waits (90 s at most) until its node is Ready.
    pub async fn ready(binary: PathBuf) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let cleanup = KillContainers(dir.path().join("data"));
        let cluster = bosun_examples::Cluster::start(one_node_in_memory(dir.path())).await.unwrap_or_else(|e| panic!("start cluster: {e}"));
        let k = Kubectl::new(binary, &dir.path().join("kubeconfig"), &dir.path().join("cache"));
        k.eventually(&["get", "nodes"], Duration::from_secs(90), |out| out.contains("node-1") && out.contains(" Ready ")).await;
        Self { k, _cluster: cluster, _cleanup: cleanup, _dir: dir }
    }
}
