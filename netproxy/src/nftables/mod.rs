//! The nftables proxy backend: a table of its own (family `inet`: IPv4 and IPv6 services, each
//! family's addresses DNATted to that family's endpoints) with DNAT through verdict maps (a few hash
//! lookups per new connection, like kube-proxy's nftables mode). A full sync replaces the table
//! atomically; a diff adds and removes only the map elements it touches, so its cost follows the
//! change, not the number of services. The conntrack mark of service connections carries the
//! service port's id.
//!
//! Map elements (all the per-service and per-endpoint state) go to the kernel as one nfnetlink batch
//! built here rather than as `nft` text, which `nft` parses several times more slowly than the
//! kernel applies it: a diff that only touches elements (the common case: endpoints and services
//! without affinity) is that one batch, one transaction. Diffs that add chains (affinity, a new
//! endpoint count) stay one `nft -f` transaction.
//!
//! A full sync never leaves a moment without translation: `nft -f` builds the new table (without
//! elements) beside the one in use, under the other of two names (`<table>` and `<table>-alt`), then
//! one batch fills its maps and deletes the old table: one transaction. While both exist the new
//! one, with empty maps, matches nothing and the old one keeps translating. So the table in use
//! alternates between the two names across full syncs ([`NftablesProxy::table_in_use`]).
//! [`NftablesConfig::netlink`] turns the batches off (everything as `nft` text: a full sync is then
//! one `nft -f` transaction that deletes both names and builds `<table>`).

mod netlink;
mod script;

use crate::backend::{ApplyError, ProxyBackend};
use crate::table::{ProxyService, ServicePortName, TableDiff};
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
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
    /// The kernel rejected an element batch (nothing of it was applied), or netlink failed.
    #[error("netlink element batch")]
    Netlink(#[source] std::io::Error),
}

/// A CIDR that is not one: `addr/prefix` with a prefix the family allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {0:?}: want an address, a slash and a prefix length (10.244.0.0/16, fd00:10::/56)")]
pub struct CidrError(String);

/// An address range: `10.244.0.0/16`, `fd00:10::/56`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The range of `addr` with a `prefix`-bit network part (at most 32 for IPv4, 128 for IPv6).
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, CidrError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(CidrError(format!("{addr}/{prefix}")));
        }
        Ok(Self { addr, prefix })
    }

    /// The address as given.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }
}

impl std::str::FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, CidrError> {
        let bad = || CidrError(s.to_owned());
        let (addr, prefix) = s.trim().split_once('/').ok_or_else(bad)?;
        Self::new(addr.parse().map_err(|_| bad())?, prefix.parse().map_err(|_| bad())?).map_err(|_| bad())
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Settings of the nftables backend.
#[derive(Debug, Clone)]
#[must_use]
pub struct NftablesConfig {
    table: String,
    nft: PathBuf,
    netns: Option<String>,
    netlink: bool,
    cluster_cidrs: Vec<Cidr>,
    masquerade_all: bool,
}

impl Default for NftablesConfig {
    fn default() -> Self {
        Self {
            table: "bosun".into(),
            nft: PathBuf::from("nft"),
            netns: None,
            netlink: true,
            cluster_cidrs: Vec::new(),
            masquerade_all: false,
        }
    }
}

impl NftablesConfig {
    /// The table's name in family `inet` (default `bosun`; a full sync over an existing table builds
    /// the new one as `<name>-alt`, and the next one back as `<name>`).
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

    /// Send map elements as nfnetlink batches (default `true`); `false` writes them as `nft` text.
    pub fn netlink(mut self, on: bool) -> Self {
        self.netlink = on;
        self
    }

    /// The pods' address ranges (kube-proxy's `--cluster-cidr`; in dual stack one per family):
    /// traffic to a cluster IP from outside them (another host routing through this node, or this
    /// node itself) is masqueraded, so that the endpoint's replies come back through this node to
    /// be un-NATted. Default: none, and cluster IP traffic keeps its source address.
    pub fn cluster_cidrs(mut self, cidrs: impl IntoIterator<Item = Cidr>) -> Self {
        self.cluster_cidrs = cidrs.into_iter().collect();
        self
    }

    /// Masquerade all traffic to cluster IPs, from pods too (kube-proxy's `--masquerade-all`;
    /// default `false`).
    pub fn masquerade_all(mut self, on: bool) -> Self {
        self.masquerade_all = on;
        self
    }
}

/// What the kernel has for one service port.
struct Programmed {
    spec: Arc<ProxyService>,
    ids: script::Ids,
    elements: BTreeSet<script::Element>,
}

/// The backend's record of the kernel's state (only updated after `nft` succeeded).
#[derive(Default)]
struct State {
    /// The table in use (None: none programmed by this backend yet).
    live: Option<String>,
    ports: HashMap<ServicePortName, Programmed>,
    picks: BTreeSet<script::Pick>,
    next_id: u32,
    free_ids: Vec<u32>,
    /// Elements per map in the kernel.
    counts: HashMap<&'static str, usize>,
    /// The `size` each map was declared with at the last full sync (a diff must stay within it).
    capacity: HashMap<&'static str, usize>,
}

impl State {
    fn take_id(&mut self) -> u32 {
        self.free_ids.pop().unwrap_or_else(|| {
            self.next_id += 1;
            self.next_id
        })
    }
}

/// What an incremental apply changes.
struct Incremental {
    /// New pick chains, written first (empty: none).
    new_picks: String,
    /// Affinity chains and sets, written between the deleted and the added elements (empty: none).
    chains: String,
    removed: BTreeSet<script::Element>,
    added: BTreeSet<script::Element>,
    /// The per-port records it leaves (`None`: removed).
    records: Vec<(ServicePortName, Option<Programmed>)>,
    /// The pick chains then present.
    picks: BTreeSet<script::Pick>,
}

impl Incremental {
    /// The whole change as one `nft` script.
    fn script(&self, table: &str) -> String {
        let mut out = self.new_picks.clone();
        script::write_elements(&mut out, table, "delete", &self.removed, CHUNK);
        out.push_str(&self.chains);
        script::write_elements(&mut out, table, "add", &self.added, CHUNK);
        out
    }
}

/// Elements per `add element` statement: nft parses one huge statement much more slowly than many small ones.
const CHUNK: usize = 256;

/// The nftables backend. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct NftablesProxy {
    config: Arc<NftablesConfig>,
    state: Arc<tokio::sync::Mutex<State>>,
    /// The netlink socket element batches go through, kept open between applies: closing one
    /// after a transaction that deleted elements blocks for 10–20 ms while the kernel finishes
    /// with them (strace of the bench's endpoint changes), and opening one in another namespace
    /// costs a thread. Dropped after any error, so the next batch starts on a fresh socket.
    socket: Arc<std::sync::Mutex<Option<std::os::fd::OwnedFd>>>,
}

impl NftablesProxy {
    /// A backend with the given settings; nothing is programmed until the first apply.
    pub fn new(config: NftablesConfig) -> Self {
        Self { config: Arc::new(config), state: Arc::default(), socket: Arc::default() }
    }

    /// Whether `nft` can be run here (installed, and we may use netlink).
    pub async fn available(config: &NftablesConfig) -> bool {
        Self::new(config.clone()).run("list tables\n").await.is_ok()
    }

    /// Removes the table under both its names (no error when they do not exist).
    pub async fn cleanup(&self) -> Result<(), NftablesError> {
        let mut state = self.state.lock().await;
        self.run(&self.delete_all()).await?;
        *state = State::default();
        // An open socket keeps its network namespace alive.
        drop(self.socket.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take());
        Ok(())
    }

    /// The name of the table in use (`<table>` or `<table>-alt`), or None before the first full sync.
    pub async fn table_in_use(&self) -> Option<String> {
        self.state.lock().await.live.clone()
    }

    fn alternate(&self) -> String {
        format!("{}-alt", self.config.table)
    }

    /// `nft` text deleting the table under both names, and the IPv4-only `ip` table of earlier
    /// versions (creating each first makes the delete safe when it does not exist).
    fn delete_all(&self) -> String {
        let (t, alt) = (&self.config.table, self.alternate());
        format!(
            "table {f} {t} {{}}\ndelete table {f} {t}\ntable {f} {alt} {{}}\ndelete table {f} {alt}\ntable ip {t} {{}}\ndelete table ip {t}\n",
            f = script::TABLE_FAMILY
        )
    }

    /// This backend's tables the kernel has now, as (`NFPROTO_*` family, name).
    async fn existing_tables(&self) -> Result<Vec<(u8, String)>, NftablesError> {
        let netns = self.config.netns.clone();
        let all = tokio::task::spawn_blocking(move || netlink::open(netns.as_deref()).and_then(|s| netlink::tables(&s)))
            .await
            .map_err(|e| NftablesError::Netlink(std::io::Error::other(e)))?
            .map_err(NftablesError::Netlink)?;
        let (t, alt) = (self.config.table.as_str(), self.alternate());
        Ok(all
            .into_iter()
            .filter(|(family, name)| match *family {
                netlink::NFPROTO_INET => name == t || *name == alt,
                netlink::NFPROTO_IPV4 => name == t,
                _ => false,
            })
            .collect())
    }

    /// Builds the full-sync script for table `t` (without elements and without deleting anything but
    /// `t`), the elements, and the state they leave.
    fn full(&self, t: &str, services: &[Arc<ProxyService>]) -> (String, BTreeSet<script::Element>, State) {
        let mut state = State { live: Some(t.to_owned()), ..State::default() };
        let mut body = String::new();
        let mut all = BTreeSet::new();
        for svc in services {
            let ids = script::Ids { cluster: state.take_id(), external: state.take_id() };
            let elements = script::elements(svc, ids, &mut state.picks);
            script::affinity_chains(&mut body, t, None, Some(svc));
            all.extend(elements.iter().cloned());
            state.ports.insert(svc.name.clone(), Programmed { spec: svc.clone(), ids, elements });
        }
        state.counts = script::counts(&all);
        state.capacity = script::all_maps().map(|m| (m, script::capacity(state.counts.get(m).copied().unwrap_or(0)))).collect();
        // Creating then deleting makes the delete safe when the table does not exist yet.
        let mut out = format!("table {f} {t} {{}}\ndelete table {f} {t}\n", f = script::TABLE_FAMILY);
        let masquerade = script::ClusterMasquerade { all: self.config.masquerade_all, unless_from: &self.config.cluster_cidrs };
        out.push_str(&script::base(t, &state.capacity, &masquerade));
        for pick in &state.picks {
            pick.write(&mut out, t);
        }
        out.push_str(&body);
        (out, all, state)
    }

    /// The script a full sync of `services` would apply as `nft` text alone (for inspection and tests).
    pub fn full_script(&self, services: &[Arc<ProxyService>]) -> String {
        let (body, all, _) = self.full(&self.config.table, services);
        let mut out = self.delete_all();
        out.push_str(&body);
        script::write_elements(&mut out, &self.config.table, "add", &all, CHUNK);
        out
    }

    /// Builds the incremental script for a diff; returns it with the new per-port records and picks.
    fn incremental(&self, state: &mut State, diff: &TableDiff) -> Incremental {
        let t = state.live.clone().unwrap_or_else(|| self.config.table.clone());
        let t = t.as_str();
        let mut picks = state.picks.clone();
        let mut removed_elements: BTreeSet<script::Element> = BTreeSet::new();
        let mut added_elements: BTreeSet<script::Element> = BTreeSet::new();
        let mut chains = String::new();
        let mut records = Vec::new();
        for name in &diff.removed {
            if let Some(old) = state.ports.get(name) {
                removed_elements.extend(old.elements.iter().cloned());
                script::affinity_chains(&mut chains, t, Some(&old.spec), None);
                records.push((name.clone(), None));
            }
        }
        for new in &diff.upserted {
            if state.ports.get(&new.name).is_some_and(|o| *o.spec == **new) {
                continue;
            }
            let ids = match state.ports.get(&new.name) {
                Some(o) => o.ids,
                None => script::Ids { cluster: state.take_id(), external: state.take_id() },
            };
            let old = state.ports.get(&new.name);
            let elements = script::elements(new, ids, &mut picks);
            let empty = BTreeSet::new();
            let old_elements = old.map_or(&empty, |o| &o.elements);
            // An element whose value changes is deleted and re-added in the same transaction
            // (deletes go first in the script).
            removed_elements.extend(old_elements.difference(&elements).cloned());
            added_elements.extend(elements.difference(old_elements).cloned());
            script::affinity_chains(&mut chains, t, old.map(|o| &*o.spec), Some(new));
            records.push((new.name.clone(), Some(Programmed { spec: new.clone(), ids, elements })));
        }
        let mut out = String::new();
        for pick in picks.difference(&state.picks) {
            pick.write(&mut out, t);
        }
        Incremental { new_picks: out, removed: removed_elements, added: added_elements, chains, records, picks }
    }

    /// Builds an element batch and sends it (one kernel transaction), off the async threads.
    async fn send_elements(&self, build: impl FnOnce() -> netlink::Batch + Send + 'static) -> Result<(), NftablesError> {
        let netns = self.config.netns.clone();
        let cached = self.socket.clone();
        tokio::task::spawn_blocking(move || {
            let batch = build();
            if batch.is_empty() {
                return Ok(());
            }
            let mut slot = cached.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let socket = match slot.take() {
                Some(socket) => socket,
                None => netlink::open(netns.as_deref())?,
            };
            let sent = netlink::send(&socket, batch);
            if sent.is_ok() {
                *slot = Some(socket);
            }
            sent
        })
        .await
        .map_err(|e| NftablesError::Netlink(std::io::Error::other(e)))?
        .map_err(NftablesError::Netlink)
    }

    /// A full sync (see the module docs); returns the state it leaves. On an error the table in use
    /// is unchanged (and so is `state`).
    async fn full_sync(&self, state: &State, services: &[Arc<ProxyService>]) -> Result<State, NftablesError> {
        if !self.config.netlink {
            let (body, all, new_state) = self.full(&self.config.table, services);
            let mut script = self.delete_all();
            script.push_str(&body);
            script::write_elements(&mut script, &self.config.table, "add", &all, CHUNK);
            self.run(&script).await?;
            return Ok(new_state);
        }
        let existing = self.existing_tables().await?;
        let (t, alt) = (self.config.table.clone(), self.alternate());
        let has = |name: &str| existing.iter().any(|(f, n)| *f == netlink::NFPROTO_INET && n == name);
        // Build under the name not in use; with neither (or both, after a failure) decided by what we know.
        let target = match state.live.as_deref() {
            Some(live) if has(live) => {
                if live == t {
                    alt
                } else {
                    t
                }
            }
            _ if has(&t) => alt,
            _ => t,
        };
        let (script, all, new_state) = self.full(&target, services);
        self.run(&script).await?;
        let old: Vec<(u8, String)> = existing.into_iter().filter(|(f, n)| !(*f == netlink::NFPROTO_INET && *n == target)).collect();
        let table = target.clone();
        let filled = self
            .send_elements(move || {
                let mut batch = netlink::Batch::new();
                batch.elements(&table, netlink::Verb::Add, &all);
                for (family, name) in &old {
                    batch.delete_table(*family, name);
                }
                batch
            })
            .await;
        if let Err(e) = filled {
            // The old table is untouched; the new one, half built, goes (best effort).
            let f = script::TABLE_FAMILY;
            let _ = self.run(&format!("table {f} {target} {{}}\ndelete table {f} {target}\n")).await;
            return Err(e);
        }
        Ok(new_state)
    }

    fn command(&self) -> tokio::process::Command {
        match &self.config.netns {
            Some(ns) => {
                let mut c = tokio::process::Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.config.nft);
                c
            }
            None => tokio::process::Command::new(&self.config.nft),
        }
    }

    async fn run(&self, script: &str) -> Result<(), NftablesError> {
        let mut cmd = self.command();
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
        let mut state = self.state.lock().await;
        tracing::debug!(full = diff.full, upserted = diff.upserted.len(), removed = diff.removed.len(), "nftables apply");
        if diff.full {
            *state = self.full_sync(&state, &diff.upserted).await.map_err(|e| ApplyError::new("nftables", e))?;
            return Ok(());
        }
        let (next_id, free) = (state.next_id, state.free_ids.clone());
        let inc = self.incremental(&mut state, diff);
        let mut counts = state.counts.clone();
        for e in &inc.removed {
            if let Some(n) = counts.get_mut(e.map) {
                *n = n.saturating_sub(1);
            }
        }
        for e in &inc.added {
            *counts.entry(e.map).or_default() += 1;
        }
        if let Some((map, n)) = counts.iter().find(|(m, n)| **n > state.capacity.get(*m).copied().unwrap_or(0)) {
            // The diff would pass a map's size (or nothing was synced yet): a full sync of what the
            // table would then hold sizes the maps anew.
            tracing::info!(map, elements = n, "an nftables map outgrows its size; applying the diff as a full sync");
            state.next_id = next_id;
            state.free_ids = free;
            let mut specs: HashMap<ServicePortName, Arc<ProxyService>> =
                state.ports.iter().map(|(name, p)| (name.clone(), p.spec.clone())).collect();
            for name in &diff.removed {
                specs.remove(name);
            }
            for svc in &diff.upserted {
                specs.insert(svc.name.clone(), svc.clone());
            }
            let services: Vec<Arc<ProxyService>> = specs.into_values().collect();
            *state = self.full_sync(&state, &services).await.map_err(|e| ApplyError::new("nftables", e))?;
            return Ok(());
        }
        let live = state.live.clone().unwrap_or_else(|| self.config.table.clone());
        let result = if self.config.netlink && inc.new_picks.is_empty() && inc.chains.is_empty() {
            let t = live;
            let (removed, added) = (inc.removed.clone(), inc.added.clone());
            self.send_elements(move || {
                let mut batch = netlink::Batch::new();
                batch.elements(&t, netlink::Verb::Delete, &removed);
                batch.elements(&t, netlink::Verb::Add, &added);
                batch
            })
            .await
        } else {
            let script = inc.script(&live);
            if script.is_empty() { Ok(()) } else { self.run(&script).await }
        };
        let Incremental { records, picks, .. } = inc;
        if let Err(e) = result {
            // Nothing was applied (one transaction): forget ids handed out for it.
            state.next_id = next_id;
            state.free_ids = free;
            return Err(ApplyError::new("nftables", e));
        }
        state.picks = picks;
        state.counts = counts;
        for (name, record) in records {
            match record {
                Some(r) => {
                    state.ports.insert(name, r);
                }
                None => {
                    if let Some(old) = state.ports.remove(&name) {
                        state.free_ids.extend([old.ids.cluster, old.ids.external]);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
