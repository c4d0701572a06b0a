//! Pod volumes on the node: emptyDir, hostPath, configMap, secret, downwardAPI, projected and
//! persistentVolumeClaim (bound to a hostPath or local volume). Generated contents are written the
//! kubelet's atomic way (a timestamped directory behind a `..data` symlink) and refreshed when the
//! source objects change.

use super::env::{EnvContext, ObjectCache, field_value, resource_value};
use crate::cri::Mount;
use bosun_core::k8s_openapi::api::core::v1::{
    Container, DownwardAPIVolumeFile, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, Volume,
};
use bosun_core::{Api, Client};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a volume could not be set up (shown as a `FailedMount` event).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VolumeError {
    /// A referenced object (ConfigMap, Secret, PVC, PV) is missing.
    #[error("volume {volume:?}: {kind} {name:?} not found")]
    SourceNotFound {
        /// The volume.
        volume: String,
        /// What was missing.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// A hostPath's type check failed or a key is missing.
    #[error("volume {volume:?}: {message}")]
    Invalid {
        /// The volume.
        volume: String,
        /// What was wrong.
        message: String,
    },
    /// A container mounts a volume the pod does not declare.
    #[error("container {container:?} mounts unknown volume {volume:?}")]
    UnknownVolume {
        /// The container.
        container: String,
        /// The volume name.
        volume: String,
    },
    /// Writing files failed.
    #[error("volume {volume:?}: {message}")]
    Io {
        /// The volume.
        volume: String,
        /// The error.
        message: String,
    },
}

/// The host directories of one pod's volumes.
#[derive(Debug, Clone, Default)]
pub struct PodVolumes {
    paths: BTreeMap<String, PathBuf>,
}

impl PodVolumes {
    /// The host path of a volume.
    pub fn path(&self, name: &str) -> Option<&Path> {
        self.paths.get(name).map(PathBuf::as_path)
    }

    /// The bind mounts of a container.
    pub fn mounts(&self, container: &Container) -> Result<Vec<Mount>, VolumeError> {
        let mut out = Vec::new();
        for vm in container.volume_mounts.iter().flatten() {
            let base = self
                .paths
                .get(&vm.name)
                .ok_or_else(|| VolumeError::UnknownVolume { container: container.name.clone(), volume: vm.name.clone() })?;
            let host_path = match vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sub) => {
                    let p = base.join(sub);
                    if !p.exists() {
                        std::fs::create_dir_all(&p).map_err(|e| VolumeError::Io { volume: vm.name.clone(), message: e.to_string() })?;
                    }
                    p
                }
                None => base.clone(),
            };
            out.push(Mount { host_path, container_path: vm.mount_path.clone(), read_only: vm.read_only.unwrap_or(false) });
        }
        Ok(out)
    }
}

fn io(volume: &str) -> impl Fn(std::io::Error) -> VolumeError + '_ {
    move |e| VolumeError::Io { volume: volume.to_string(), message: e.to_string() }
}

/// Sets up (or refreshes) every volume of a pod under `pod_dir/volumes`.
pub async fn prepare(
    pod: &Pod,
    pod_dir: &Path,
    client: &Arc<dyn Client>,
    cx: &EnvContext<'_>,
    cache: &mut ObjectCache,
) -> Result<PodVolumes, VolumeError> {
    let mut out = PodVolumes::default();
    for vol in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let path = prepare_one(vol, pod, pod_dir, client, cx, cache).await?;
        out.paths.insert(vol.name.clone(), path);
    }
    Ok(out)
}

async fn prepare_one(
    vol: &Volume,
    pod: &Pod,
    pod_dir: &Path,
    client: &Arc<dyn Client>,
    cx: &EnvContext<'_>,
    cache: &mut ObjectCache,
) -> Result<PathBuf, VolumeError> {
    let name = vol.name.as_str();
    let dir = pod_dir.join("volumes").join(name);
    if let Some(hp) = &vol.host_path {
        return host_path(name, Path::new(&hp.path), hp.type_.as_deref().unwrap_or(""));
    }
    if let Some(claim) = &vol.persistent_volume_claim {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns).get_opt(&claim.claim_name).await.ok().flatten().ok_or_else(
            || VolumeError::SourceNotFound { volume: name.into(), kind: "persistentvolumeclaim", name: claim.claim_name.clone() },
        )?;
        let pv_name = pvc
            .spec
            .and_then(|s| s.volume_name)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| VolumeError::Invalid { volume: name.into(), message: format!("claim {:?} is not bound", claim.claim_name) })?;
        let pv = Api::<PersistentVolume>::all(client.clone())
            .get_opt(&pv_name)
            .await
            .ok()
            .flatten()
            .ok_or_else(|| VolumeError::SourceNotFound { volume: name.into(), kind: "persistentvolume", name: pv_name.clone() })?;
        let spec = pv.spec.unwrap_or_default();
        let path = spec.host_path.map(|h| h.path).or(spec.local.map(|l| l.path)).ok_or_else(|| VolumeError::Invalid {
            volume: name.into(),
            message: format!("persistent volume {pv_name:?} is neither hostPath nor local"),
        })?;
        return host_path(name, Path::new(&path), "DirectoryOrCreate");
    }
    let fs_group = pod.spec.as_ref().and_then(|s| s.security_context.as_ref()).and_then(|s| s.fs_group).and_then(|g| u32::try_from(g).ok());
    if let Some(ed) = &vol.empty_dir {
        if ed.medium.as_deref() == Some("Memory") {
            memory_dir(name, &dir, memory_size(pod, ed.size_limit.as_ref()), pod.metadata.uid.as_deref().unwrap_or_default()).await?;
        } else {
            std::fs::create_dir_all(&dir).map_err(io(name))?;
        }
        if let Some(group) = fs_group {
            set_ownership(&dir, group, false);
        }
        return Ok(dir);
    }
    std::fs::create_dir_all(&dir).map_err(io(name))?;
    let mut files: BTreeMap<String, (Vec<u8>, u32)> = BTreeMap::new();
    if let Some(cm) = &vol.config_map {
        let data = cache.config_map(&cm.name).await.map_err(|e| VolumeError::Invalid { volume: name.into(), message: e.to_string() })?;
        match data {
            Some(data) => project(name, &data, cm.items.as_deref(), cm.default_mode.unwrap_or(0o644), &mut files)?,
            None if cm.optional.unwrap_or(false) => {}
            None => return Err(VolumeError::SourceNotFound { volume: name.into(), kind: "configmap", name: cm.name.clone() }),
        }
    } else if let Some(sec) = &vol.secret {
        let sname = sec.secret_name.clone().unwrap_or_default();
        let data = cache.secret(&sname).await.map_err(|e| VolumeError::Invalid { volume: name.into(), message: e.to_string() })?;
        match data {
            Some(data) => project(name, &data, sec.items.as_deref(), sec.default_mode.unwrap_or(0o644), &mut files)?,
            None if sec.optional.unwrap_or(false) => {}
            None => return Err(VolumeError::SourceNotFound { volume: name.into(), kind: "secret", name: sname }),
        }
    } else if let Some(d) = &vol.downward_api {
        downward(name, pod, d.items.as_deref().unwrap_or_default(), d.default_mode.unwrap_or(0o644), cx, &mut files)?;
    } else if let Some(p) = &vol.projected {
        let mode = p.default_mode.unwrap_or(0o644);
        for src in p.sources.iter().flatten() {
            if let Some(cm) = &src.config_map {
                match cache.config_map(&cm.name).await.map_err(|e| VolumeError::Invalid { volume: name.into(), message: e.to_string() })? {
                    Some(data) => project(name, &data, cm.items.as_deref(), mode, &mut files)?,
                    None if cm.optional.unwrap_or(false) => {}
                    None => return Err(VolumeError::SourceNotFound { volume: name.into(), kind: "configmap", name: cm.name.clone() }),
                }
            }
            if let Some(s) = &src.secret {
                match cache.secret(&s.name).await.map_err(|e| VolumeError::Invalid { volume: name.into(), message: e.to_string() })? {
                    Some(data) => project(name, &data, s.items.as_deref(), mode, &mut files)?,
                    None if s.optional.unwrap_or(false) => {}
                    None => return Err(VolumeError::SourceNotFound { volume: name.into(), kind: "secret", name: s.name.clone() }),
                }
            }
            if let Some(d) = &src.downward_api {
                downward(name, pod, d.items.as_deref().unwrap_or_default(), mode, cx, &mut files)?;
            }
            if let Some(t) = &src.service_account_token {
                // No token issuer on the node: a placeholder keeps the file layout apps expect.
                files.insert(t.path.clone(), (Vec::new(), u32::try_from(mode).unwrap_or(0o644)));
            }
        }
    } else {
        return Err(VolumeError::Invalid { volume: name.into(), message: "unsupported volume source".into() });
    }
    write_atomic(name, &dir, &files)?;
    if let Some(group) = fs_group {
        set_ownership(&dir, group, true);
    }
    Ok(dir)
}

/// `TMPFS_MAGIC` of statfs(2).
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Whether a directory is the root of a mount (its device differs from its parent's).
fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(own), Some(Ok(parent))) = (std::fs::symlink_metadata(path), path.parent().map(std::fs::metadata)) else { return false };
    own.is_dir() && own.dev() != parent.dev()
}

/// Whether `path` lies on a tmpfs.
// `f_type`'s integer type differs between architectures; the conversion is a no-op on x86-64.
#[allow(clippy::useless_conversion)]
pub fn on_tmpfs(path: &Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|s| i64::from(s.f_type) == TMPFS_MAGIC)
}

/// The size of a memory-backed emptyDir, as the kubelet sizes it: its `sizeLimit`, capped by the
/// pod's memory limit when every container has one (the volume's pages count against it).
/// `None`: tmpfs's default.
fn memory_size(pod: &Pod, size_limit: Option<&bosun_core::k8s_openapi::apimachinery::pkg::api::resource::Quantity>) -> Option<u64> {
    let limit = size_limit.and_then(|q| bosun_core::Quantity::parse(&q.0).ok()).and_then(|q| u64::try_from(q.value()).ok());
    let containers = pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
    let pod_limit = containers
        .iter()
        .map(|c| {
            let q = c.resources.as_ref()?.limits.as_ref()?.get("memory")?;
            u64::try_from(bosun_core::Quantity::parse(&q.0).ok()?.value()).ok()
        })
        .sum::<Option<u64>>()
        .filter(|_| !containers.is_empty());
    match (limit, pod_limit) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Makes `dir` a memory-backed directory: a tmpfs mounted there (of `size` bytes) where the
/// agent may mount (root); otherwise a link to a directory under `/dev/shm`, the tmpfs every
/// Linux machine has, so that its contents still live in memory.
async fn memory_dir(volume: &str, dir: &Path, size: Option<u64>, pod_uid: &str) -> Result<(), VolumeError> {
    if dir.is_symlink() || (on_tmpfs(dir) && is_mount_point(dir)) {
        return Ok(());
    }
    if rustix::process::geteuid().is_root() {
        std::fs::create_dir_all(dir).map_err(io(volume))?;
        let mut options = String::from("mode=0777");
        if let Some(size) = size {
            options.push_str(&format!(",size={size}"));
        }
        let out = tokio::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &options, "tmpfs"])
            .arg(dir)
            .output()
            .await
            .map_err(io(volume))?;
        if out.status.success() {
            return Ok(());
        }
        tracing::warn!(volume, stderr = %String::from_utf8_lossy(&out.stderr), "cannot mount a tmpfs; using /dev/shm");
    }
    let shm = Path::new("/dev/shm").join(format!("bosun-{pod_uid}-{volume}"));
    std::fs::create_dir_all(&shm).map_err(io(volume))?;
    let _ = std::fs::remove_dir(dir);
    match std::os::unix::fs::symlink(&shm, dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(io(volume)(e)),
        _ => Ok(()),
    }
}

/// Gives a volume to the pod's `fsGroup`, the kubelet's way: every file and directory belongs to
/// the group and is group-readable (and writable unless `read_only`); directories are
/// group-searchable and setgid, so that new files inherit the group. Best effort: without the
/// privilege to change a group the volume stays as it is.
fn set_ownership(dir: &Path, group: u32, read_only: bool) {
    let mask = if read_only { 0o440 } else { 0o660 };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if meta.file_type().is_symlink() {
            continue;
        }
        if let Err(error) = std::os::unix::fs::lchown(&path, None, Some(group)) {
            tracing::debug!(%error, path = %path.display(), group, "cannot give the volume to its fsGroup");
            return;
        }
        let mut mode = meta.permissions().mode() | mask;
        if meta.is_dir() {
            mode |= 0o2000 | 0o110;
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        }
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode));
    }
}

/// The first emptyDir of `pod` whose contents exceed its `sizeLimit`, with the kubelet's
/// eviction message.
pub fn over_size_limit(pod: &Pod, pod_dir: &Path) -> Option<String> {
    for vol in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let Some(limit) = vol.empty_dir.as_ref().and_then(|e| e.size_limit.as_ref()) else { continue };
        let Ok(bytes) = bosun_core::Quantity::parse(&limit.0).map(|q| q.value()) else { continue };
        let used = disk_usage(&pod_dir.join("volumes").join(&vol.name));
        if i128::from(used) > i128::from(bytes) {
            return Some(format!("Usage of EmptyDir volume {:?} exceeds the limit {:?}. ", vol.name, limit.0));
        }
    }
    None
}

/// Whether a pod has an emptyDir with a `sizeLimit` to watch.
pub fn has_size_limits(pod: &Pod) -> bool {
    pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()).any(|v| v.empty_dir.as_ref().is_some_and(|e| e.size_limit.is_some()))
}

/// Bytes a directory tree takes on disk (as `du` counts: allocated blocks), following the
/// directory itself when it is a link (a memory-backed emptyDir under `/dev/shm`).
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut stack = vec![std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        total = total.saturating_add(meta.blocks().saturating_mul(512));
        if meta.is_dir()
            && let Ok(entries) = std::fs::read_dir(&path)
        {
            stack.extend(entries.flatten().map(|e| e.path()));
        }
    }
    total
}

/// Releases what a pod's volumes hold outside its directory: tmpfs mounts are unmounted and
/// `/dev/shm` directories removed, so that the directory can go.
pub async fn teardown(pod_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(pod_dir.join("volumes")) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_symlink() {
            if let Ok(target) = std::fs::read_link(&path)
                && target.starts_with("/dev/shm")
            {
                let _ = tokio::fs::remove_dir_all(&target).await;
            }
        } else if is_mount_point(&path) {
            let _ = tokio::process::Command::new("umount").arg(&path).output().await;
        }
    }
}

fn host_path(volume: &str, path: &Path, type_: &str) -> Result<PathBuf, VolumeError> {
    let fail = |message: String| VolumeError::Invalid { volume: volume.into(), message };
    match type_ {
        "DirectoryOrCreate" => std::fs::create_dir_all(path).map_err(io(volume))?,
        "FileOrCreate" if !path.exists() => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io(volume))?;
            }
            std::fs::write(path, b"").map_err(io(volume))?;
        }
        "Directory" if !path.is_dir() => return Err(fail(format!("hostPath type check failed: {} is not a directory", path.display()))),
        "File" if !path.is_file() => return Err(fail(format!("hostPath type check failed: {} is not a file", path.display()))),
        "Socket" | "CharDevice" | "BlockDevice" if !path.exists() => {
            return Err(fail(format!("hostPath type check failed: {} does not exist", path.display())));
        }
        _ => {}
    }
    Ok(path.to_path_buf())
}

fn project(
    volume: &str,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    mode: i32,
    out: &mut BTreeMap<String, (Vec<u8>, u32)>,
) -> Result<(), VolumeError> {
    let mode = u32::try_from(mode).unwrap_or(0o644);
    match items {
        Some(items) if !items.is_empty() => {
            for item in items {
                let v = data
                    .get(&item.key)
                    .ok_or_else(|| VolumeError::Invalid { volume: volume.into(), message: format!("key {:?} not found", item.key) })?;
                let m = item.mode.and_then(|m| u32::try_from(m).ok()).unwrap_or(mode);
                out.insert(item.path.clone(), (v.clone(), m));
            }
        }
        _ => out.extend(data.iter().map(|(k, v)| (k.clone(), (v.clone(), mode)))),
    }
    Ok(())
}

fn downward(
    volume: &str,
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    mode: i32,
    cx: &EnvContext<'_>,
    out: &mut BTreeMap<String, (Vec<u8>, u32)>,
) -> Result<(), VolumeError> {
    let mode = u32::try_from(mode).unwrap_or(0o644);
    for item in items {
        let value = if let Some(f) = &item.field_ref {
            field_value(pod, f, cx.pod_ip, cx.host_ip)
        } else if let Some(r) = &item.resource_field_ref {
            let container = pod
                .spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .find(|c| Some(c.name.as_str()) == r.container_name.as_deref())
                .cloned()
                .unwrap_or_default();
            resource_value(pod, &container, r, cx.allocatable)
        } else {
            Ok(String::new())
        }
        .map_err(|e| VolumeError::Invalid { volume: volume.into(), message: e.to_string() })?;
        out.insert(item.path.clone(), (value.into_bytes(), item.mode.and_then(|m| u32::try_from(m).ok()).unwrap_or(mode)));
    }
    Ok(())
}

/// Writes `files` into `dir` atomically: a new `..<stamp>` directory, then the `..data` symlink is
/// swapped to it by rename, and each top-level name is a symlink through `..data`. Nothing is
/// written when the contents are unchanged.
pub fn write_atomic(volume: &str, dir: &Path, files: &BTreeMap<String, (Vec<u8>, u32)>) -> Result<bool, VolumeError> {
    let data_link = dir.join("..data");
    if let Ok(current) = std::fs::read_link(&data_link) {
        let current = dir.join(current);
        let unchanged = files.iter().all(|(p, (v, _))| std::fs::read(current.join(p)).is_ok_and(|old| old == *v))
            && count_files(&current) == files.len();
        if unchanged {
            return Ok(false);
        }
    }
    let stamp = format!("..{}_{:08x}", jiff::Timestamp::now().as_nanosecond(), fastrand::u32(..));
    let new_dir = dir.join(&stamp);
    for (path, (value, mode)) in files {
        let clean = Path::new(path);
        if clean.is_absolute() || clean.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            return Err(VolumeError::Invalid { volume: volume.into(), message: format!("path {path:?} escapes the volume") });
        }
        let target = new_dir.join(clean);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io(volume))?;
        }
        std::fs::write(&target, value).map_err(io(volume))?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(*mode)).map_err(io(volume))?;
    }
    std::fs::create_dir_all(&new_dir).map_err(io(volume))?;
    let tmp_link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&stamp, &tmp_link).map_err(io(volume))?;
    let old = std::fs::read_link(&data_link).ok();
    std::fs::rename(&tmp_link, &data_link).map_err(io(volume))?;
    // User-visible names point through ..data; stale names go.
    let top: std::collections::BTreeSet<String> =
        files.keys().filter_map(|p| Path::new(p).components().next()).map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    for name in &top {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link).map_err(io(volume))?;
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if !n.starts_with("..") && !top.contains(&n) && e.file_type().is_ok_and(|t| t.is_symlink()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(true)
}

fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries.flatten().map(|e| if e.file_type().is_ok_and(|t| t.is_dir()) { count_files(&e.path()) } else { 1 }).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_swap_contents_and_drop_stale_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = BTreeMap::from([("a".to_string(), (b"1".to_vec(), 0o644)), ("b".to_string(), (b"2".to_vec(), 0o600))]);
        assert!(write_atomic("v", dir.path(), &files).expect("write"));
        assert_eq!(std::fs::read(dir.path().join("a")).expect("a"), b"1");
        assert!(!write_atomic("v", dir.path(), &files).expect("rewrite"), "unchanged contents are not rewritten");
        let files = BTreeMap::from([("a".to_string(), (b"new".to_vec(), 0o644))]);
        assert!(write_atomic("v", dir.path(), &files).expect("update"));
        assert_eq!(std::fs::read(dir.path().join("a")).expect("a"), b"new");
        assert!(std::fs::symlink_metadata(dir.path().join("b")).is_err(), "a removed key disappears");
        let escaping = BTreeMap::from([("../x".to_string(), (b"no".to_vec(), 0o644))]);
        assert!(write_atomic("v", dir.path(), &escaping).is_err());
    }
}
