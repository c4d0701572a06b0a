//! Images behind the [`ImageStore`] trait: [`HostImages`] (names only, for the process and fake
//! runtimes) and [`LocalImageStore`] (root file systems imported from directories, tarballs and
//! OCI image layouts; no registry is reachable, so nothing is pulled).

use crate::cri::ImageRef;
use crate::error::{Result, RuntimeError};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio::process::Command;

/// Where a container's image comes from. Object-safe: hold it as `Arc<dyn ImageStore>`.
#[async_trait]
pub trait ImageStore: Send + Sync + 'static {
    /// Resolves an image name to something runnable; [`RuntimeError::ImageNotFound`] when absent.
    async fn ensure(&self, name: &str) -> Result<ImageRef>;

    /// The images present.
    async fn list(&self) -> Result<Vec<ImageRef>>;

    /// Removes an image. Idempotent.
    async fn remove(&self, name: &str) -> Result<()>;
}

/// Accepts every name as it is: the process runtime runs commands from the host's file system and
/// the fake runtime runs nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostImages;

#[async_trait]
impl ImageStore for HostImages {
    async fn ensure(&self, name: &str) -> Result<ImageRef> {
        Ok(ImageRef { name: name.to_string(), ..ImageRef::default() })
    }

    async fn list(&self) -> Result<Vec<ImageRef>> {
        Ok(Vec::new())
    }

    async fn remove(&self, _name: &str) -> Result<()> {
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct StoredImage {
    name: String,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<(String, String)>,
    working_dir: Option<String>,
}

/// A local store of root file systems under one directory: `<root>/<digest-of-name>/rootfs` plus an
/// `image.json` with the entrypoint, cmd, env and working directory.
#[derive(Debug, Clone)]
pub struct LocalImageStore {
    root: PathBuf,
    images: Arc<RwLock<BTreeMap<String, StoredImage>>>,
}

/// Normalizes `busybox` and `docker.io/library/busybox:latest` to one key.
fn normalize(name: &str) -> String {
    let name = name.strip_prefix("docker.io/").unwrap_or(name);
    let name = name.strip_prefix("library/").unwrap_or(name);
    let has_tag = name.rsplit('/').next().is_some_and(|last| last.contains(':') || last.contains('@'));
    if has_tag { name.to_string() } else { format!("{name}:latest") }
}

fn dir_name(name: &str) -> String {
    normalize(name).chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect()
}

impl LocalImageStore {
    /// Opens (or creates) a store at `root`, loading the images already imported there.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| RuntimeError::io(format!("create {}", root.display()), e))?;
        let mut images = BTreeMap::new();
        let entries = std::fs::read_dir(&root).map_err(|e| RuntimeError::io(format!("read {}", root.display()), e))?;
        for entry in entries.flatten() {
            let meta = entry.path().join("image.json");
            if let Ok(data) = std::fs::read(&meta)
                && let Ok(img) = serde_json::from_slice::<StoredImage>(&data)
            {
                images.insert(normalize(&img.name), img);
            }
        }
        Ok(Self { root, images: Arc::new(RwLock::new(images)) })
    }

    fn image_dir(&self, name: &str) -> PathBuf {
        self.root.join(dir_name(name))
    }

    fn record(&self, name: &str, mut image: StoredImage) -> Result<ImageRef> {
        image.name = normalize(name);
        let dir = self.image_dir(name);
        let data = serde_json::to_vec_pretty(&image).map_err(|e| RuntimeError::State { path: dir.clone(), message: e.to_string() })?;
        std::fs::write(dir.join("image.json"), data).map_err(|e| RuntimeError::io("write image.json", e))?;
        let r = self.to_ref(&image);
        if let Ok(mut images) = self.images.write() {
            images.insert(image.name.clone(), image);
        }
        Ok(r)
    }

    fn to_ref(&self, image: &StoredImage) -> ImageRef {
        ImageRef {
            name: image.name.clone(),
            rootfs: Some(self.image_dir(&image.name).join("rootfs")),
            entrypoint: image.entrypoint.clone(),
            cmd: image.cmd.clone(),
            env: image.env.clone(),
            working_dir: image.working_dir.clone(),
        }
    }

    fn fresh_rootfs(&self, name: &str) -> Result<PathBuf> {
        let dir = self.image_dir(name);
        let rootfs = dir.join("rootfs");
        if rootfs.exists() {
            std::fs::remove_dir_all(&rootfs).map_err(|e| RuntimeError::io("remove old rootfs", e))?;
        }
        std::fs::create_dir_all(&rootfs).map_err(|e| RuntimeError::io("create rootfs", e))?;
        Ok(rootfs)
    }

    /// Imports a root file system from a directory (copied), with the default command `cmd`.
    pub async fn import_dir(&self, name: &str, dir: &Path, cmd: Vec<String>) -> Result<ImageRef> {
        let rootfs = self.fresh_rootfs(name)?;
        let src = format!("{}/.", dir.display());
        run(Command::new("cp").arg("-a").arg(src).arg(&rootfs)).await?;
        self.record(name, StoredImage { cmd, ..StoredImage::default() })
    }

    /// Imports a root file system from a tarball (plain or gzip), with the default command `cmd`.
    pub async fn import_tarball(&self, name: &str, tarball: &Path, cmd: Vec<String>) -> Result<ImageRef> {
        let rootfs = self.fresh_rootfs(name)?;
        run(Command::new("tar").arg("-xf").arg(tarball).arg("-C").arg(&rootfs)).await?;
        self.record(name, StoredImage { cmd, ..StoredImage::default() })
    }

    /// Imports an OCI image layout directory (`index.json`, `blobs/sha256/...`): applies the first
    /// manifest's layers in order (honouring `.wh.` whiteouts) and keeps its configuration.
    pub async fn import_oci_layout(&self, name: &str, layout: &Path) -> Result<ImageRef> {
        let read_json = |p: PathBuf| -> Result<serde_json::Value> {
            let data = std::fs::read(&p).map_err(|e| RuntimeError::io(format!("read {}", p.display()), e))?;
            serde_json::from_slice(&data).map_err(|e| RuntimeError::State { path: p, message: e.to_string() })
        };
        let blob = |digest: &str| -> PathBuf {
            let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
            layout.join("blobs").join(alg).join(hex)
        };
        let index = read_json(layout.join("index.json"))?;
        let manifest_digest = index
            .pointer("/manifests/0/digest")
            .and_then(|d| d.as_str())
            .ok_or_else(|| RuntimeError::Invalid("OCI index has no manifest".into()))?;
        let manifest = read_json(blob(manifest_digest))?;
        let config =
            manifest.pointer("/config/digest").and_then(|d| d.as_str()).map(|d| read_json(blob(d))).transpose()?.unwrap_or_default();
        let rootfs = self.fresh_rootfs(name)?;
        for layer in manifest.get("layers").and_then(|l| l.as_array()).into_iter().flatten() {
            let digest =
                layer.get("digest").and_then(|d| d.as_str()).ok_or_else(|| RuntimeError::Invalid("layer without digest".into()))?;
            let path = blob(digest);
            // Whiteouts first: a layer's `.wh.name` entries delete `name` from the layers below.
            let listing = run(Command::new("tar").arg("-tf").arg(&path)).await?;
            for entry in listing.lines() {
                let entry = entry.trim_start_matches("./");
                let (parent, file) = entry.rsplit_once('/').unwrap_or(("", entry));
                if let Some(victim) = file.strip_prefix(".wh.") {
                    let target = rootfs.join(parent).join(victim);
                    if victim == ".wh..opq" {
                        continue;
                    }
                    let _ = std::fs::remove_dir_all(&target).or_else(|_| std::fs::remove_file(&target));
                }
            }
            run(Command::new("tar").arg("-xf").arg(&path).arg("-C").arg(&rootfs).arg("--exclude=.wh.*").arg("--exclude=*/.wh.*")).await?;
        }
        let strings = |v: Option<&serde_json::Value>| -> Vec<String> {
            v.and_then(|v| v.as_array()).map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
        };
        let cfg = config.get("config");
        let env = strings(cfg.and_then(|c| c.get("Env")))
            .into_iter()
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        self.record(
            name,
            StoredImage {
                entrypoint: strings(cfg.and_then(|c| c.get("Entrypoint"))),
                cmd: strings(cfg.and_then(|c| c.get("Cmd"))),
                env,
                working_dir: cfg.and_then(|c| c.get("WorkingDir")).and_then(|w| w.as_str()).filter(|w| !w.is_empty()).map(String::from),
                ..StoredImage::default()
            },
        )
    }
}

#[async_trait]
impl ImageStore for LocalImageStore {
    async fn ensure(&self, name: &str) -> Result<ImageRef> {
        let images = self.images.read().map_err(|_| RuntimeError::Invalid("image store lock poisoned".into()))?;
        images.get(&normalize(name)).map(|i| self.to_ref(i)).ok_or_else(|| RuntimeError::ImageNotFound(name.to_string()))
    }

    async fn list(&self) -> Result<Vec<ImageRef>> {
        let images = self.images.read().map_err(|_| RuntimeError::Invalid("image store lock poisoned".into()))?;
        Ok(images.values().map(|i| self.to_ref(i)).collect())
    }

    async fn remove(&self, name: &str) -> Result<()> {
        if let Ok(mut images) = self.images.write() {
            images.remove(&normalize(name));
        }
        let dir = self.image_dir(name);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RuntimeError::io(format!("remove {}", dir.display()), e)),
        }
    }
}

/// Runs a helper program and returns its stdout, or a [`RuntimeError::Command`].
pub(crate) async fn run(cmd: &mut Command) -> Result<String> {
    let program = format!("{:?}", cmd.as_std().get_program());
    let out = cmd.output().await.map_err(|e| RuntimeError::io(format!("run {program}"), e))?;
    if !out.status.success() {
        return Err(RuntimeError::Command {
            program,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_normalize_to_one_key() {
        assert_eq!(normalize("busybox"), "busybox:latest");
        assert_eq!(normalize("docker.io/library/busybox:1.36"), "busybox:1.36");
        assert_eq!(normalize("registry:5000/app"), "registry:5000/app:latest");
    }

    #[tokio::test]
    async fn a_directory_import_survives_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("bin")).expect("mkdir");
        std::fs::write(src.join("bin/hello"), "hi").expect("write");
        let store = LocalImageStore::open(dir.path().join("images")).expect("open");
        assert!(matches!(store.ensure("demo").await, Err(RuntimeError::ImageNotFound(_))));
        store.import_dir("demo", &src, vec!["/bin/hello".into()]).await.expect("import");
        let reopened = LocalImageStore::open(dir.path().join("images")).expect("reopen");
        let image = reopened.ensure("docker.io/library/demo:latest").await.expect("ensure");
        assert_eq!(image.cmd, vec!["/bin/hello".to_string()]);
        let rootfs = image.rootfs.expect("rootfs");
        assert_eq!(std::fs::read_to_string(rootfs.join("bin/hello")).expect("read"), "hi");
        reopened.remove("demo").await.expect("remove");
        assert!(reopened.ensure("demo").await.is_err());
    }
}
