//! The nftables proxy backend: a table of its own with DNAT through verdict maps (one lookup per
//! packet, like kube-proxy's nftables mode), applied atomically with `nft -f`. A full sync replaces
//! the table in one transaction; a diff adds and removes only the map elements and chains it touches,
//! so its cost follows the change, not the number of services. IPv4 only for now.

mod script;

use crate::backend::{ApplyError, ProxyBackend};
use crate::table::{ProxyService, ServicePortName, TableDiff};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// Errors of the nftables backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NftablesError {
    /// `nft` could not be started.
    #[error("run {command}")]
    Spawn {
        /// The command line.
        command: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `nft` rejected the script; nothing of it was applied (it is one transaction).
    #[error("nft failed: {stderr}")]
    Rejected {
        /// What nft said.
        stderr: String,
    },
}

/// Settings of the nftables backend.
#[derive(Debug, Clone)]
#[must_use]
pub struct NftablesConfig {
    table: String,
    nft: PathBuf,
    netns: Option<String>,
}

impl Default for NftablesConfig {
    fn default() -> Self {
        Self { table: "bosun".into(), nft: PathBuf::from("nft"), netns: None }
    }
}

impl NftablesConfig {
    /// The table's name in family `ip` (default `bosun`).
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// The `nft` binary (default `nft` from `PATH`).
    pub fn nft(mut self, path: impl Into<PathBuf>) -> Self {
        self.nft = path.into();
        self
    }

    /// Program a named network namespace (`ip netns exec NAME nft …`) instead of the current one (default: current).
    pub fn netns(mut self, name: impl Into<String>) -> Self {
        self.netns = Some(name.into());
        self
    }
}

/// The nftables backend. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct NftablesProxy {
    config: Arc<NftablesConfig>,
    /// What the kernel has, per service port (only updated after `nft` succeeded).
    programmed: Arc<tokio::sync::Mutex<HashMap<ServicePortName, Arc<ProxyService>>>>,
}

impl NftablesProxy {
    /// A backend with the given settings; nothing is programmed until the first apply.
    pub fn new(config: NftablesConfig) -> Self {
        Self { config: Arc::new(config), programmed: Arc::default() }
    }

    /// Whether `nft` can be run here (installed, and we may use netlink).
    pub async fn available(config: &NftablesConfig) -> bool {
        let probe = Self::new(config.clone());
        probe.run("list tables\n").await.is_ok()
    }

    /// Removes the table (no error when it does not exist).
    pub async fn cleanup(&self) -> Result<(), NftablesError> {
        let t = &self.config.table;
        self.run(&format!("table ip {t} {{}}\ndelete table ip {t}\n")).await?;
        self.programmed.lock().await.clear();
        Ok(())
    }

    /// The script a full sync of `services` would apply (for inspection and tests).
    pub fn full_script<'a>(&self, services: impl IntoIterator<Item = &'a ProxyService>) -> String {
        let t = &self.config.table;
        // Creating then deleting makes the delete safe when the table does not exist yet.
        let mut out = format!("table ip {t} {{}}\ndelete table ip {t}\n");
        out.push_str(&script::base(t));
        for svc in services {
            script::chains(&mut out, t, None, Some(svc));
            script::keys(svc).write(&mut out, t, "add");
        }
        out
    }

    fn diff_script(&self, programmed: &HashMap<ServicePortName, Arc<ProxyService>>, diff: &TableDiff) -> String {
        let t = &self.config.table;
        let mut out = String::new();
        for name in &diff.removed {
            if let Some(old) = programmed.get(name) {
                script::keys(old).write(&mut out, t, "delete");
                script::chains(&mut out, t, Some(old), None);
            }
        }
        for new in &diff.upserted {
            let old = programmed.get(&new.name);
            if old.is_some_and(|o| **o == **new) {
                continue;
            }
            let old_keys = old.map(|o| script::keys(o));
            let new_keys = script::keys(new);
            let keys_changed = old_keys.as_ref() != Some(&new_keys);
            if keys_changed {
                if let Some(k) = &old_keys {
                    k.write(&mut out, t, "delete");
                }
            }
            script::chains(&mut out, t, old.map(|o| &**o), Some(new));
            if keys_changed {
                new_keys.write(&mut out, t, "add");
            }
        }
        out
    }

    async fn run(&self, script: &str) -> Result<(), NftablesError> {
        let mut cmd = match &self.config.netns {
            Some(ns) => {
                let mut c = tokio::process::Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.config.nft);
                c
            }
            None => tokio::process::Command::new(&self.config.nft),
        };
        cmd.args(["-f", "-"]).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
        let command = format!("{:?}", cmd.as_std());
        let mut child = cmd.spawn().map_err(|source| NftablesError::Spawn { command: command.clone(), source })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes()).await.map_err(|source| NftablesError::Spawn { command: command.clone(), source })?;
        }
        let output = child.wait_with_output().await.map_err(|source| NftablesError::Spawn { command, source })?;
        if !output.status.success() {
            let mut stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            stderr.truncate(4096);
            return Err(NftablesError::Rejected { stderr });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ProxyBackend for NftablesProxy {
    fn name(&self) -> &'static str {
        "nftables"
    }

    async fn apply(&self, diff: &TableDiff) -> Result<(), ApplyError> {
        let mut programmed = self.programmed.lock().await;
        let span = tracing::debug_span!("nftables", full = diff.full, upserted = diff.upserted.len(), removed = diff.removed.len());
        let _enter = span.enter();
        if diff.full {
            let script = self.full_script(diff.upserted.iter().map(|s| &**s));
            drop(_enter);
            self.run(&script).await.map_err(|e| ApplyError::new("nftables", e))?;
            *programmed = diff.upserted.iter().map(|s| (s.name.clone(), s.clone())).collect();
            return Ok(());
        }
        let script = self.diff_script(&programmed, diff);
        drop(_enter);
        if !script.is_empty() {
            self.run(&script).await.map_err(|e| ApplyError::new("nftables", e))?;
        }
        for name in &diff.removed {
            programmed.remove(name);
        }
        for s in &diff.upserted {
            programmed.insert(s.name.clone(), s.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
