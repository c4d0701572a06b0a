//! [`RuncRuntime`]: OCI containers through the `runc` command (root): an OCI bundle per container
//! from the image's root file system (an overlay, or read-only where asked), Linux namespaces,
//! cgroup CPU and memory limits (OOM kills reported as `OOMKilled`), volume bind mounts, and one
//! network namespace per pod wired by the CNI `bridge` and `host-local` plugins.

use crate::cni::{self, CniConfig};
use crate::cri::*;
use crate::error::{Result, RuntimeError};
use crate::image::run;
use crate::launch::{self, container_env};
use crate::process::short;
use crate::sys;
use crate::table::{self, Exit, JsonFiles, SandboxEntry, Table};
use async_trait::async_trait;
use futures::stream::BoxStream;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::process::Command;

/// Builds a [`RuncRuntime`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RuncRuntimeBuilder {
    root: PathBuf,
    runc: PathBuf,
    cni: CniConfig,
}

impl RuncRuntimeBuilder {
    /// The `runc` binary (default: `runc` from `PATH`).
    pub fn runc(mut self, path: impl Into<PathBuf>) -> Self {
        self.runc = path.into();
        self
    }

    /// The CNI plugin directory (default `/usr/lib/cni`).
    pub fn cni_bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cni.bin_dir = dir.into();
        self
    }

    /// The node bridge name (default `bosun0`).
    pub fn bridge(mut self, name: impl Into<String>) -> Self {
        self.cni.bridge = name.into();
        self
    }

    /// The pod subnet (default `10.88.0.0/16`).
    pub fn subnet(mut self, cidr: impl Into<String>) -> Self {
        self.cni.subnet = cidr.into();
        self
    }

    /// Opens the runtime over its state directory.
    pub fn build(self) -> Result<RuncRuntime> {
        for sub in ["sandboxes", "containers", "bundles", "logs", "runc", "ipam"] {
            let dir = self.root.join(sub);
            std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::io(format!("create {}", dir.display()), e))?;
        }
        let table = Table::new(JsonFiles::new(self.root.clone()), 4096);
        Ok(RuncRuntime { inner: Arc::new(Inner { root: self.root, runc: self.runc, cni: self.cni, table }) })
    }
}

/// Runs OCI containers with `runc`. Cheap to clone (a handle).
#[derive(Debug, Clone)]
pub struct RuncRuntime {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    runc: PathBuf,
    cni: CniConfig,
    table: Table<SandboxRecord, ContainerRecord, Making, JsonFiles>,
}

/// What the runtime keeps beside its records, under the same lock (the sweep reads both at once).
#[derive(Debug, Default)]
struct Making {
    /// Sandboxes and containers being made: their directories exist before their records do.
    pending: HashSet<String>,
    /// Whether leftovers were swept (once per instance, at the first `recover`).
    swept: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SandboxRecord {
    status: SandboxStatus,
    netns: Option<String>,
}

impl SandboxEntry for SandboxRecord {
    fn status(&self) -> &SandboxStatus {
        &self.status
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ContainerRecord {
    status: ContainerStatus,
    config: ContainerConfig,
    bundle: PathBuf,
    overlay: bool,
    pid: Option<i32>,
    /// Whether this instance is stopping it (an exit 137 is then no OOM kill). Not persisted: a
    /// recovered container is not being stopped.
    #[serde(skip)]
    killing: bool,
}

table::container_entry!(ContainerRecord);

/// Makes a minimal busybox root file system (from Debian's `busybox-static`) at `dir`: a test image.
pub async fn busybox_rootfs(dir: &Path) -> Result<PathBuf> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .ok_or_else(|| RuntimeError::Invalid("busybox is not installed (apt-get install busybox-static)".into()))?;
    for sub in ["bin", "proc", "dev", "sys", "tmp", "etc", "root"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| RuntimeError::io("create rootfs", e))?;
    }
    std::fs::copy(busybox, dir.join("bin/busybox")).map_err(|e| RuntimeError::io("copy busybox", e))?;
    let list = run(Command::new(busybox).arg("--list")).await?;
    for applet in list.lines().map(str::trim).filter(|a| !a.is_empty() && *a != "busybox") {
        let link = dir.join("bin").join(applet);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink("busybox", &link).map_err(|e| RuntimeError::io("link applet", e))?;
        }
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        .map_err(|e| RuntimeError::io("write passwd", e))?;
    std::fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").map_err(|e| RuntimeError::io("write group", e))?;
    Ok(dir.to_path_buf())
}

impl RuncRuntime {
    /// A builder over a state directory.
    pub fn builder(root: impl Into<PathBuf>) -> RuncRuntimeBuilder {
        let root = root.into();
        let cni = CniConfig {
            bin_dir: "/usr/lib/cni".into(),
            bridge: "bosun0".into(),
            subnet: "10.88.0.0/16".into(),
            ipam_dir: root.join("ipam"),
        };
        RuncRuntimeBuilder { root, runc: "runc".into(), cni }
    }

    /// Whether runc and the CNI plugins are installed and this process is root.
    pub fn available() -> bool {
        let runc = std::process::Command::new("runc").arg("--version").output().is_ok_and(|o| o.status.success());
        let cni = Path::new("/usr/lib/cni/bridge").exists() && Path::new("/usr/lib/cni/host-local").exists();
        runc && cni && rustix::process::geteuid().is_root()
    }

    fn runc(&self) -> Command {
        let mut c = Command::new(&self.inner.runc);
        c.arg("--root").arg(self.inner.root.join("runc"));
        c
    }

    /// Marks a container exited; an exit 137 that this instance did not cause in a container with
    /// a memory limit is an OOM kill.
    fn mark_exited(&self, id: &ContainerId, code: i32, signal: Option<i32>, reason: Option<String>) {
        self.inner.table.mark_exited(id, |r| {
            let oom = reason.is_none() && code == 137 && !r.killing && r.config.resources.memory_limit_bytes.is_some();
            let reason = reason.unwrap_or_else(|| ContainerStatus::exit_reason(code, oom).to_string());
            Some(Exit { code, signal, reason, message: None })
        });
    }

    /// The body of `run_sandbox`: directory, network namespace, hosts and resolv.conf files, record.
    async fn make_sandbox(&self, id: &SandboxId, config: &SandboxConfig) -> Result<()> {
        let dir = self.inner.root.join("sandboxes").join(&id.0);
        std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::io("create sandbox dir", e))?;
        let (ip, netns) = if config.host_network {
            (None, None)
        } else {
            let netns = format!("bosun-{}", id.0);
            let ip = cni::setup(&self.inner.cni, &id.0, &netns).await?;
            (Some(ip), Some(netns))
        };
        let hosts = format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{}\n",
            ip.map_or_else(|| "127.0.1.1".to_string(), |i| i.to_string()),
            config.hostname
        );
        if let Err(e) = std::fs::write(dir.join("hosts"), hosts) {
            if let Some(ns) = &netns {
                cni::teardown(&self.inner.cni, &id.0, ns).await;
            }
            return Err(RuntimeError::io("write hosts", e));
        }
        if let Some(dns) = &config.dns
            && let Err(e) = std::fs::write(dir.join("resolv.conf"), dns.resolv_conf())
        {
            if let Some(ns) = &netns {
                cni::teardown(&self.inner.cni, &id.0, ns).await;
            }
            return Err(RuntimeError::io("write resolv.conf", e));
        }
        let status = SandboxStatus { id: id.clone(), config: config.clone(), state: SandboxState::Ready, ip, created_at: Timestamp::now() };
        let record = SandboxRecord { status, netns };
        self.inner.table.save_sandbox(&record);
        self.inner.table.lock().sandboxes.insert(id.clone(), record);
        Ok(())
    }

    /// Frees what an earlier instance left without a record (it was killed between making a thing
    /// and persisting it, or its records were removed): runc state, overlay mounts and bundles of
    /// unknown containers; network namespaces and `host-local` reservations of unknown sandboxes
    /// (through CNI DEL, so the veth goes too); and pods that a runtime over another state
    /// directory left on this runtime's bridge, whose addresses a new sandbox would otherwise
    /// collide with. Runs once per instance, at the first [`ContainerRuntime::recover`].
    async fn sweep(&self) {
        let (sandboxes, containers, pending) = {
            let mut records = self.inner.table.lock();
            if std::mem::replace(&mut records.extra.swept, true) {
                return;
            }
            let sandboxes: HashMap<String, Option<String>> =
                records.sandboxes.iter().map(|(k, v)| (k.0.clone(), v.netns.clone())).collect();
            let containers: HashSet<String> = records.containers.keys().map(|k| k.0.clone()).collect();
            (sandboxes, containers, records.extra.pending.clone())
        };
        let subdirs = |sub: &str| -> Vec<String> {
            std::fs::read_dir(self.inner.root.join(sub))
                .map(|d| d.flatten().filter(|e| e.path().is_dir()).filter_map(|e| e.file_name().to_str().map(str::to_string)).collect())
                .unwrap_or_default()
        };
        let unknown_containers: BTreeSet<String> =
            subdirs("runc").into_iter().chain(subdirs("bundles")).filter(|id| !containers.contains(id) && !pending.contains(id)).collect();
        for id in unknown_containers {
            tracing::info!(container.id = %id, "removing a container left without a record");
            let _ = run(self.runc().args(["delete", "--force", &id])).await;
            let bundle = self.inner.root.join("bundles").join(&id);
            unmount_if_mounted(&bundle.join("rootfs")).await;
            let _ = std::fs::remove_dir_all(&bundle);
        }
        let mut unknown_sandboxes: BTreeSet<String> =
            subdirs("sandboxes").into_iter().filter(|id| !sandboxes.contains_key(id) && !pending.contains(id)).collect();
        for (_, id) in cni::reservations(&self.inner.cni) {
            // A reservation is live while its sandbox's record still names its namespace.
            if !sandboxes.get(&id).is_some_and(Option::is_some) && !pending.contains(&id) {
                unknown_sandboxes.insert(id);
            }
        }
        for id in &unknown_sandboxes {
            tracing::info!(sandbox.id = %id, "releasing the network of a sandbox left without a record");
            let netns = format!("bosun-{id}");
            if cni::netns_path(&netns).exists() {
                kill_and_wait(&cni::namespace_pids(&netns).await).await;
            }
            cni::release(&self.inner.cni, id, &netns).await;
            if !sandboxes.contains_key(id) {
                let _ = std::fs::remove_dir_all(self.inner.root.join("sandboxes").join(id));
            }
        }
        // Pods that a runtime over another state directory left on this bridge still hold their
        // addresses, and a new sandbox would collide with them: containers whose `runc run` was
        // orphaned (or was started by this very process, by a runtime dropped without cleanup),
        // even when the name of their namespace was deleted; and named namespaces that no live
        // runtime's container is in. A live runtime's pods are left alone.
        let me = rustix::process::getpid().as_raw_nonzero().get();
        let abandoned = |o: &RuncOwner| o.parent == 1 || o.parent == me;
        let mut evicted: Vec<RuncOwner> = Vec::new();
        for owner in runc_containers() {
            let Some(init) = owner.init else { continue };
            if containers.contains(&owner.container_id) || pending.contains(&owner.container_id) || !abandoned(&owner) {
                continue;
            }
            if !cni::pid_attached_to(init, &self.inner.cni.bridge).await {
                continue;
            }
            tracing::info!(container.id = %owner.container_id, bridge = %self.inner.cni.bridge, "stopping a container another runtime left on this bridge");
            kill_and_wait(&[init]).await;
            evicted.push(owner);
        }
        let ours: HashSet<String> = sandboxes.values().flatten().cloned().collect();
        let mut released: HashSet<String> = HashSet::new();
        for owner in &evicted {
            // The bundle names the sandbox's namespace: release its address through CNI too.
            if let Some(netns) = bundle_netns(&owner.bundle)
                && let Some(id) = netns.strip_prefix("bosun-")
                && released.insert(netns.clone())
            {
                cni::release(&foreign_cni(&self.inner.cni, owner), id, &netns).await;
            }
        }
        for netns in cni::namespaces() {
            let Some(id) = netns.strip_prefix("bosun-").filter(|id| id.starts_with("rsb-")) else { continue };
            if ours.contains(&netns) || pending.contains(id) || unknown_sandboxes.contains(id) || released.contains(&netns) {
                continue;
            }
            if !cni::attached_to(&netns, &self.inner.cni.bridge).await {
                continue;
            }
            let pids = cni::namespace_pids(&netns).await;
            let owners: Vec<RuncOwner> = pids.iter().filter_map(|p| parent_of(*p).and_then(runc_owner)).collect();
            if owners.iter().any(|o| !abandoned(o)) {
                continue;
            }
            // An empty namespace may be a live runtime's sandbox whose container is on its way.
            let young = std::fs::symlink_metadata(cni::netns_path(&netns))
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < Duration::from_secs(30)));
            if pids.is_empty() && young {
                continue;
            }
            tracing::info!(netns, bridge = %self.inner.cni.bridge, "removing a pod network another runtime left on this bridge");
            kill_and_wait(&pids).await;
            let foreign = owners.first().map_or_else(|| self.inner.cni.clone(), |o| foreign_cni(&self.inner.cni, o));
            cni::release(&foreign, id, &netns).await;
            evicted.extend(owners);
        }
        for owner in evicted {
            let mut delete = Command::new(&self.inner.runc);
            delete.arg("--root").arg(&owner.runc_root).args(["delete", "--force", &owner.container_id]);
            let _ = run(&mut delete).await;
            unmount_if_mounted(&owner.bundle.join("rootfs")).await;
        }
    }

    fn spec(&self, id: &ContainerId, config: &ContainerConfig, sandbox: &SandboxRecord, rootfs: &Path, hosts: &Path) -> serde_json::Value {
        let read_only = config.read_only_rootfs;
        let mut argv = config.argv();
        if argv.is_empty() {
            argv.push("/bin/sh".into());
        }
        let env = container_env(config, &sandbox.status);
        let mut dedup: Vec<(String, String)> = Vec::new();
        for (k, v) in env {
            match dedup.iter_mut().find(|(n, _)| *n == k) {
                Some(slot) => slot.1 = v,
                None => dedup.push((k, v)),
            }
        }
        let caps = [
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FSETID",
            "CAP_FOWNER",
            "CAP_MKNOD",
            "CAP_NET_RAW",
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_SETFCAP",
            "CAP_SETPCAP",
            "CAP_NET_BIND_SERVICE",
            "CAP_SYS_CHROOT",
            "CAP_KILL",
            "CAP_AUDIT_WRITE",
        ];
        let mut mounts = vec![
            serde_json::json!({ "destination": "/proc", "type": "proc", "source": "proc" }),
            serde_json::json!({ "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] }),
            serde_json::json!({ "destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] }),
            serde_json::json!({ "destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] }),
            serde_json::json!({ "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"] }),
            serde_json::json!({ "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"] }),
            serde_json::json!({ "destination": "/etc/hosts", "type": "bind", "source": hosts, "options": ["rbind", "rprivate", "ro"] }),
        ];
        if sandbox.status.config.dns.is_some() {
            let resolv = hosts.with_file_name("resolv.conf");
            mounts.push(serde_json::json!({ "destination": "/etc/resolv.conf", "type": "bind", "source": resolv, "options": ["rbind", "rprivate", "ro"] }));
        }
        for m in &config.mounts {
            let mut options = vec!["rbind", "rprivate"];
            if m.read_only {
                options.push("ro");
            }
            mounts.push(serde_json::json!({ "destination": m.container_path, "type": "bind", "source": m.host_path, "options": options }));
        }
        let mut namespaces = vec![
            serde_json::json!({"type": "pid"}),
            serde_json::json!({"type": "ipc"}),
            serde_json::json!({"type": "uts"}),
            serde_json::json!({"type": "mount"}),
        ];
        if let Some(ns) = &sandbox.netns {
            namespaces.push(serde_json::json!({ "type": "network", "path": cni::netns_path(ns) }));
        }
        let mut resources = serde_json::json!({ "devices": [{ "allow": false, "access": "rwm" }] });
        let r = config.resources;
        let mut cpu = serde_json::Map::new();
        if let Some(req) = r.cpu_request_millis {
            // The kubelet's mapping: 1024 shares per core, at least 2.
            cpu.insert("shares".into(), serde_json::json!((req * 1024 / 1000).max(2)));
        }
        if let Some(lim) = r.cpu_limit_millis {
            cpu.insert("quota".into(), serde_json::json!((lim * 100).max(1000)));
            cpu.insert("period".into(), serde_json::json!(100_000));
        }
        if !cpu.is_empty() {
            resources["cpu"] = serde_json::Value::Object(cpu);
        }
        if let Some(mem) = r.memory_limit_bytes {
            resources["memory"] = serde_json::json!({ "limit": mem });
        }
        let uid = config.run_as_user.unwrap_or(0);
        let gid = config.run_as_group.unwrap_or(if uid == 0 { 0 } else { uid });
        serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": config.tty,
                "user": { "uid": uid, "gid": gid, "additionalGids": config.supplemental_groups },
                "args": argv,
                "env": dedup.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
                "cwd": config.working_dir.clone().or(config.image.working_dir.clone()).unwrap_or_else(|| "/".into()),
                "capabilities": { "bounding": caps, "effective": caps, "permitted": caps },
                "noNewPrivileges": false
            },
            "root": { "path": rootfs, "readonly": read_only },
            "hostname": sandbox.status.config.hostname,
            "mounts": mounts,
            "linux": {
                "namespaces": namespaces,
                "resources": resources,
                "cgroupsPath": format!("/bosun/{}", id.0),
                "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
                "readonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
            }
        })
    }
}

#[async_trait]
impl ContainerRuntime for RuncRuntime {
    fn version(&self) -> RuntimeVersion {
        let v = std::process::Command::new(&self.inner.runc)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.lines().next().map(|l| l.trim_start_matches("runc version ").to_string()))
            .unwrap_or_else(|| "unknown".into());
        RuntimeVersion { name: "runc".into(), version: v }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { exec: true, signals: true, mounts: true, network_namespace: true, resource_limits: true, images: true, attach: true }
    }

    async fn run_sandbox(&self, config: &SandboxConfig) -> Result<SandboxId> {
        let id = {
            let mut records = self.inner.table.lock();
            let id = SandboxId(format!("rsb-{}-{}", short(&config.uid), records.next_seq()));
            records.extra.pending.insert(id.0.clone());
            id
        };
        let made = self.make_sandbox(&id, config).await;
        self.inner.table.lock().extra.pending.remove(&id.0);
        made.map(|()| id)
    }

    async fn stop_sandbox(&self, id: &SandboxId) -> Result<()> {
        for c in self.inner.table.running_in(id) {
            self.stop_container(&c, Duration::ZERO).await?;
        }
        let netns = self.inner.table.lock().sandboxes.get(id).and_then(|r| r.netns.clone());
        if let Some(ns) = netns {
            cni::teardown(&self.inner.cni, &id.0, &ns).await;
        }
        self.inner.table.update_sandbox(id, |r| {
            r.netns = None;
            r.status.state = SandboxState::NotReady;
        });
        Ok(())
    }

    async fn remove_sandbox(&self, id: &SandboxId) -> Result<()> {
        self.stop_sandbox(id).await?;
        for c in self.inner.table.containers_in(id) {
            self.remove_container(&c).await?;
        }
        if self.inner.table.remove_sandbox(id).is_some() {
            let _ = std::fs::remove_dir_all(self.inner.root.join("sandboxes").join(&id.0));
        }
        Ok(())
    }

    async fn sandbox_status(&self, id: &SandboxId) -> Result<SandboxStatus> {
        self.inner.table.sandbox_status(id)
    }

    async fn list_sandboxes(&self) -> Result<Vec<SandboxStatus>> {
        Ok(self.inner.table.list_sandboxes())
    }

    async fn create_container(&self, sandbox: &SandboxId, config: &ContainerConfig) -> Result<ContainerId> {
        let (sb, id) = {
            let mut records = self.inner.table.lock();
            let sb = records.sandboxes.get(sandbox).cloned().ok_or_else(|| RuntimeError::not_found("sandbox", &sandbox.0))?;
            if sb.status.state != SandboxState::Ready {
                return Err(RuntimeError::Invalid(format!("sandbox {sandbox} is not ready")));
            }
            let id = ContainerId(format!("rc-{}-{}-{}-{}", short(&sb.status.config.uid), config.name, config.attempt, records.next_seq()));
            records.extra.pending.insert(id.0.clone());
            (sb, id)
        };
        let image_root = config.image.rootfs.clone().ok_or_else(|| {
            RuntimeError::Invalid(format!("image {:?} has no root file system (import it into the image store)", config.image.name))
        })?;
        let bundle = self.inner.root.join("bundles").join(&id.0);
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(&rootfs).map_err(|e| RuntimeError::io("create bundle", e))?;
        // Writable layer: an overlay on the image; read-only root file systems use the image as is.
        let (root_path, overlay) = if config.read_only_rootfs {
            (image_root.clone(), false)
        } else {
            for d in ["upper", "work"] {
                std::fs::create_dir_all(bundle.join(d)).map_err(|e| RuntimeError::io("create overlay dirs", e))?;
            }
            let opts = format!(
                "lowerdir={},upperdir={},workdir={}",
                image_root.display(),
                bundle.join("upper").display(),
                bundle.join("work").display()
            );
            match run(Command::new("mount").args(["-t", "overlay", "overlay", "-o", &opts]).arg(&rootfs)).await {
                Ok(_) => (rootfs.clone(), true),
                Err(_) => {
                    run(Command::new("cp").arg("-a").arg(format!("{}/.", image_root.display())).arg(&rootfs)).await?;
                    (rootfs.clone(), false)
                }
            }
        };
        let hosts = self.inner.root.join("sandboxes").join(&sandbox.0).join("hosts");
        let spec = self.spec(&id, config, &sb, &root_path, &hosts);
        std::fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&spec).unwrap_or_default())
            .map_err(|e| RuntimeError::io("write config.json", e))?;
        let log_path = table::log_path(&self.inner.root, &sb.status, config);
        if let Some(dir) = log_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| RuntimeError::io("create log dir", e))?;
        }
        let status = table::created_status(&id, sandbox, config, Some(log_path));
        let record = ContainerRecord { status, config: config.clone(), bundle, overlay, pid: None, killing: false };
        self.inner.table.save_container(&record);
        {
            let mut records = self.inner.table.lock();
            records.extra.pending.remove(&id.0);
            records.insert(id.clone(), record);
        }
        self.inner.table.emit(EventKind::Created, sandbox, &id);
        Ok(id)
    }

    async fn start_container(&self, id: &ContainerId) -> Result<()> {
        let record = self.inner.table.created(id)?;
        let pid_file = record.bundle.join("pid");
        let _ = std::fs::remove_file(&pid_file);
        let config = &record.config;
        let mut cmd = self.runc();
        cmd.arg("run").arg("--bundle").arg(&record.bundle).arg("--pid-file").arg(&pid_file).arg(&id.0);
        // `runc run` in the foreground passes its own standard streams to the container. With
        // `tty` (`terminal: true` in the bundle) runc makes the container a terminal inside it
        // and relays it to runc's terminal: ours, given as runc's streams and, through
        // `setsid --ctty`, its controlling terminal, whose resizes runc follows (SIGWINCH).
        let (mut cmd, pty) = launch::main_stdio(cmd, config, Some(launch::DEFAULT_TERMINAL))?;
        let spawned = cmd.spawn();
        drop(cmd);
        let mut child = spawned.map_err(|e| RuntimeError::io("spawn runc run", e))?;
        let log_path = record.status.log_path.clone().unwrap_or_default();
        let (point, pumps) = launch::wire_output(config, pty, &mut child, &log_path)?;
        // Running once runc has written the container's pid (or it failed first).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut pid = None;
        let mut early_exit = None;
        while tokio::time::Instant::now() < deadline {
            if let Some(p) = std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
                pid = Some(p);
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                early_exit = Some(status);
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.inner.table.mark_running(id, &record.status.sandbox_id, point, |r| r.pid = pid);
        let this = self.clone();
        let id2 = id.clone();
        tokio::spawn(async move {
            let status = match early_exit {
                Some(s) => Ok(s),
                None => child.wait().await,
            };
            launch::drain(pumps).await;
            match status {
                Ok(s) => {
                    use std::os::unix::process::ExitStatusExt;
                    let code = sys::exit_code_of(s);
                    let signal = s.signal().or_else(|| (code > 128 && code < 160).then_some(code - 128));
                    this.mark_exited(&id2, code, signal, None);
                }
                Err(_) => this.mark_exited(&id2, 137, None, Some("ContainerStatusUnknown".into())),
            }
        });
        Ok(())
    }

    async fn stop_container(&self, id: &ContainerId, grace: Duration) -> Result<()> {
        let (state, pid) = self.inner.table.with_container(id, |r| (r.status.state, r.pid))?;
        if state != ContainerState::Running {
            return Ok(());
        }
        if let Some(c) = self.inner.table.lock().containers.get_mut(id) {
            c.record.killing = true;
        }
        if !grace.is_zero() {
            let _ = run(self.runc().args(["kill", &id.0, "TERM"])).await;
            if self.inner.table.wait_exited(id, grace).await {
                return Ok(());
            }
        }
        let _ = run(self.runc().args(["kill", "--all", &id.0, "KILL"])).await;
        if !self.inner.table.wait_exited(id, Duration::from_secs(10)).await
            && let Some(pid) = pid
        {
            let _ = sys::signal_group(pid, 9);
        }
        Ok(())
    }

    async fn signal_container(&self, id: &ContainerId, signal: i32) -> Result<()> {
        self.inner.table.with_running(id, |_| ())?;
        run(self.runc().args(["kill", &id.0, &signal.to_string()])).await.map(|_| ())
    }

    async fn remove_container(&self, id: &ContainerId) -> Result<()> {
        let Ok((state, overlay, bundle)) = self.inner.table.with_container(id, |r| (r.status.state, r.overlay, r.bundle.clone())) else {
            return Ok(());
        };
        if state == ContainerState::Running {
            self.stop_container(id, Duration::ZERO).await?;
        }
        let _ = run(self.runc().args(["delete", "--force", &id.0])).await;
        if overlay {
            let _ = run(Command::new("umount").arg(bundle.join("rootfs"))).await;
        }
        let _ = std::fs::remove_dir_all(&bundle);
        self.inner.table.remove_container(id);
        Ok(())
    }

    async fn container_status(&self, id: &ContainerId) -> Result<ContainerStatus> {
        self.inner.table.container_status(id)
    }

    async fn list_containers(&self, filter: &ContainerFilter) -> Result<Vec<ContainerStatus>> {
        Ok(self.inner.table.list_containers(filter))
    }

    fn events(&self) -> BoxStream<'static, RuntimeEvent> {
        self.inner.table.events()
    }

    async fn exec_sync(&self, id: &ContainerId, cmd: &[String], timeout: Duration) -> Result<ExecResult> {
        let bundle = self.inner.table.with_running(id, |r| r.bundle.clone())?;
        if cmd.is_empty() {
            return Err(RuntimeError::Invalid("empty exec command".into()));
        }
        let pid_file = bundle.join(format!("exec-{:08x}.pid", fastrand::u32(..)));
        let mut command = self.runc();
        command.arg("exec").arg("--pid-file").arg(&pid_file).arg(&id.0).args(cmd);
        // On timeout, kill the process inside the container too, not just `runc exec`.
        let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let killer = {
            let (pid_file, fired) = (pid_file.clone(), fired.clone());
            async move {
                tokio::time::sleep(timeout).await;
                fired.store(true, std::sync::atomic::Ordering::SeqCst);
                if let Some(pid) = std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse::<i32>().ok())
                    && let Some(p) = rustix::process::Pid::from_raw(pid)
                {
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                }
            }
        };
        let killer = tokio::spawn(killer);
        let result = sys::exec_with_timeout(&mut command, timeout + Duration::from_secs(2)).await;
        killer.abort();
        let _ = std::fs::remove_file(&pid_file);
        let mut result = result?;
        if fired.load(std::sync::atomic::Ordering::SeqCst) {
            result.timed_out = true;
            result.exit_code = -1;
        }
        Ok(result)
    }

    async fn exec(&self, id: &ContainerId, cmd: &[String]) -> Result<ExecSession> {
        self.inner.table.with_running(id, |_| ())?;
        let mut command = self.runc();
        command.arg("exec").arg(&id.0).args(cmd);
        launch::piped_exec(command, "spawn runc exec")
    }

    async fn exec_tty(&self, id: &ContainerId, cmd: &[String], size: Option<TerminalSize>) -> Result<ExecSession> {
        let names_term = self.inner.table.with_running(id, |r| launch::names_term(r.config.env.iter().chain(&r.config.image.env)))?;
        if cmd.is_empty() {
            return Err(RuntimeError::Invalid("empty exec command".into()));
        }
        // `runc exec --tty` without a console socket makes a terminal inside the container (on its
        // own devpts) and relays it to runc's own terminal: ours, whose slave side runc gets as its
        // standard streams and, through `setsid --ctty`, as its controlling terminal. runc puts it in
        // raw mode (so ^C and ^D reach the container's terminal as bytes), starts the container's
        // terminal at its size, and follows its resizes (SIGWINCH).
        let mut command = Command::new("setsid");
        command.arg("--ctty").arg(&self.inner.runc).arg("--root").arg(self.inner.root.join("runc")).args(["exec", "--tty"]);
        if !names_term {
            command.args(["--env", &format!("{}={}", launch::DEFAULT_TERM.0, launch::DEFAULT_TERM.1)]);
        }
        command.arg(&id.0).args(cmd);
        launch::terminal_exec(command, Some(size.unwrap_or(launch::DEFAULT_TERMINAL)), "spawn runc exec")
    }

    async fn attach(&self, id: &ContainerId, size: Option<TerminalSize>) -> Result<AttachSession> {
        self.inner.table.attach(id, size)
    }

    async fn logs(&self, id: &ContainerId, options: &LogOptions) -> Result<LogByteStream> {
        self.inner.table.logs(id, options)
    }

    async fn stats(&self, id: &ContainerId) -> Result<ContainerStats> {
        let (state, pid) = self.inner.table.with_container(id, |r| (r.status.state, r.pid))?;
        if state != ContainerState::Running {
            return Ok(ContainerStats::default());
        }
        // cgroup v1 or v2 counters of the container's cgroup.
        let v1 = |ctrl: &str, file: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/{ctrl}/bosun/{}/{file}", id.0)).ok();
        let v2 = |file: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/bosun/{}/{file}", id.0)).ok();
        let cpu = v1("cpuacct", "cpuacct.usage").and_then(|s| s.trim().parse::<u64>().ok()).or_else(|| {
            v2("cpu.stat")?
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|us| us * 1000)
        });
        let mem = v1("memory", "memory.usage_in_bytes").or_else(|| v2("memory.current")).and_then(|s| s.trim().parse::<u64>().ok());
        match (cpu, mem) {
            (Some(c), Some(m)) => Ok(ContainerStats { cpu_usage_nanos: c, memory_working_set_bytes: m }),
            _ => Ok(pid.map(sys::group_stats).unwrap_or_default()),
        }
    }

    async fn recover(&self) -> Result<Vec<ContainerStatus>> {
        let table = &self.inner.table;
        for (_, sb) in table.store().load::<SandboxRecord>("sandboxes") {
            let mut records = table.lock();
            records.saw_id(&sb.status.id.0);
            records.sandboxes.entry(sb.status.id.clone()).or_insert(sb);
        }
        // Still running while its first process lives (runc keeps the container's own state).
        let alive = |record: &ContainerRecord| std::future::ready(record.pid.is_some_and(sys::alive));
        let watch = |id: &ContainerId, record: &ContainerRecord| {
            let Some(pid) = record.pid else { return };
            let this = self.clone();
            let id = id.clone();
            tokio::spawn(async move {
                while sys::alive(pid) {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                this.mark_exited(&id, 137, None, Some("ContainerStatusUnknown".into()));
            });
        };
        let found = table.recover_containers(table::Known::Reported, alive, |_| {}, watch).await;
        self.sweep().await;
        Ok(found)
    }
}

/// A `runc run` process: where its runtime keeps state, the container, who started it and the
/// container's first process.
#[derive(Debug)]
struct RuncOwner {
    runc_root: PathBuf,
    bundle: PathBuf,
    container_id: String,
    /// The parent of `runc run`: its runtime's process, or 1 once that is gone.
    parent: i32,
    /// The container's first process (the child of `runc run`).
    init: Option<i32>,
}

/// The parent pid of a process.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.get(stat.rfind(')')? + 2..)?.split(' ').nth(1)?.parse().ok()
}

/// Reads `runc --root R run --bundle B --pid-file P ID` from a process's command line.
fn runc_owner(pid: i32) -> Option<RuncOwner> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let run = args.iter().position(|a| a == "run")?;
    let after = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).map(PathBuf::from);
    Some(RuncOwner {
        runc_root: after("--root")?,
        bundle: after("--bundle")?,
        container_id: args.get(run + 1..)?.last()?.clone(),
        parent: parent_of(pid)?,
        init: None,
    })
}

/// Every `runc run` on this machine with its container's first process.
fn runc_containers() -> Vec<RuncOwner> {
    let pids: Vec<i32> = std::fs::read_dir("/proc")
        .map(|d| d.flatten().filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok())).collect())
        .unwrap_or_default();
    let mut owners: Vec<(i32, RuncOwner)> = pids.iter().filter_map(|p| runc_owner(*p).map(|o| (*p, o))).collect();
    for pid in &pids {
        let Some(parent) = parent_of(*pid) else { continue };
        if let Some((_, owner)) = owners.iter_mut().find(|(runc, _)| *runc == parent) {
            owner.init = Some(*pid);
        }
    }
    owners.into_iter().map(|(_, o)| o).collect()
}

/// The network namespace a bundle's `config.json` puts its container in (`bosun-rsb-...`).
fn bundle_netns(bundle: &Path) -> Option<String> {
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(bundle.join("config.json")).ok()?).ok()?;
    config.pointer("/linux/namespaces")?.as_array()?.iter().find(|n| n["type"] == "network").and_then(|n| {
        let path = Path::new(n["path"].as_str()?);
        path.file_name()?.to_str().map(str::to_string)
    })
}

/// The CNI configuration of the runtime that ran `owner`: its IPAM directory sits beside its
/// `runc --root` directory (when that still exists; otherwise its reservations are gone anyway).
fn foreign_cni(ours: &CniConfig, owner: &RuncOwner) -> CniConfig {
    let mut cni = ours.clone();
    if let Some(ipam) = owner.runc_root.parent().map(|r| r.join("ipam")).filter(|p| p.is_dir()) {
        cni.ipam_dir = ipam;
    }
    cni
}

/// Kills processes (a container's first process takes its PID namespace along) and waits a
/// little for them to go.
async fn kill_and_wait(pids: &[i32]) {
    for &pid in pids {
        if let Some(p) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        }
    }
    for _ in 0..100 {
        if !pids.iter().any(|p| sys::alive(*p)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Unmounts a path if something is mounted there (per `/proc/self/mountinfo`).
async fn unmount_if_mounted(path: &Path) {
    let target = path.to_string_lossy().into_owned();
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .is_ok_and(|m| m.lines().any(|l| l.split(' ').nth(4).is_some_and(|mp| mp == target)));
    if mounted {
        let _ = run(Command::new("umount").arg("-l").arg(path)).await;
    }
}
