//! `Snapshot`: the per-cycle, read-only view of every node that Filter and Score read.
//! Updated incrementally from the cache: only nodes changed since the last cycle are replaced.

use crate::node_info::{NodeInfo, NodeSummary, PriorityProfile};
use std::collections::HashMap;
use std::sync::Arc;

/// Zone label kube-scheduler interleaves nodes by.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Hostname label.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// Region label.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";

/// Every schedulable node's info in zone-interleaved order, with lookups the plugins need.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub(crate) nodes: Vec<Arc<NodeInfo>>,
    /// Each node's compact summary, by index (what scans read first).
    pub(crate) summaries: Vec<NodeSummary>,
    /// Each node's pods by priority, by index (what preemption's dry runs read first).
    pub(crate) profiles: Vec<PriorityProfile>,
    pub(crate) index: HashMap<Arc<str>, usize>,
    pub(crate) with_affinity: Vec<usize>,
    pub(crate) with_required_anti_affinity: Vec<usize>,
    pub(crate) with_scoring_affinity: Vec<usize>,
    /// Nodes with nominated pods.
    pub(crate) with_nominated: Vec<usize>,
    pub(crate) image_nodes: HashMap<String, usize>,
    pub(crate) hostnames_unique: bool,
    /// Per topology key, every node's value in scan order; valid until the next rebuild (label
    /// changes always rebuild).
    pub(crate) columns: Arc<std::sync::Mutex<HashMap<String, TopologyColumn>>>,
    /// Per topology key, every node's domain as a small integer; valid until the next rebuild.
    pub(crate) domain_ids: Arc<std::sync::Mutex<HashMap<String, Arc<DomainIds>>>>,
    /// Indexes of the nodes replaced since the last rebuild, in order: what derived counts replay.
    pub(crate) changes: Vec<usize>,
    /// Per-node counts plugins derive (pods matching a selector...), kept up to date by replaying
    /// `changes` instead of rescanning every node each cycle.
    pub(crate) counts: Arc<std::sync::Mutex<HashMap<String, NodeCounts>>>,
    /// Names this snapshot's node order and change log: a new value on every rebuild, copy, or
    /// restart of the log (0: never set), so that `(epoch, changes.len())` marks a state from
    /// which the nodes changed since are `changes[len..]`.
    pub(crate) epoch: u64,
}

/// Hands out snapshot epochs, unique in the process.
static EPOCHS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A number no earlier call returned, in this process (snapshot epochs, budget generations).
pub(crate) fn next_epoch() -> u64 {
    EPOCHS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Clone for Snapshot {
    fn clone(&self) -> Self {
        Self {
            nodes: self.nodes.clone(),
            summaries: self.summaries.clone(),
            profiles: self.profiles.clone(),
            index: self.index.clone(),
            with_affinity: self.with_affinity.clone(),
            with_required_anti_affinity: self.with_required_anti_affinity.clone(),
            with_scoring_affinity: self.with_scoring_affinity.clone(),
            with_nominated: self.with_nominated.clone(),
            image_nodes: self.image_nodes.clone(),
            hostnames_unique: self.hostnames_unique,
            columns: self.columns.clone(),
            domain_ids: self.domain_ids.clone(),
            // A copy may diverge: derived counts are recomputed for it.
            changes: Vec::new(),
            counts: Arc::default(),
            epoch: next_epoch(),
        }
    }
}

/// A count per node (pods matching some rule) and its sums per topology domain, as of
/// `synced` entries of the snapshot's change log.
#[derive(Debug, Clone, Default)]
pub struct NodeCounts {
    synced: usize,
    /// Each node's count, by snapshot index (0 for nodes that do not qualify).
    pub per_node: Arc<Vec<i64>>,
    /// The counts summed per domain value; every domain of a qualifying node is present, zero included.
    pub by_domain: Arc<HashMap<String, i64>>,
}

/// Every node's value of one label, by snapshot index.
pub type TopologyColumn = Arc<Vec<Option<Arc<str>>>>;

/// Every node's value of one label as a small integer (its domain), by snapshot index, so that a
/// per-domain verdict is an array lookup.
#[derive(Debug, Clone, Default)]
pub struct DomainIds {
    /// Each node's domain ([`DomainIds::NONE`] without the label).
    pub ids: Vec<u32>,
    /// The label value of each domain.
    pub values: Vec<Arc<str>>,
}

impl DomainIds {
    /// The id of nodes without the label.
    pub const NONE: u32 = u32::MAX;
}

impl Snapshot {
    /// A snapshot of these nodes (tests and simulations); the cache builds the scheduler's own.
    pub fn from_nodes(nodes: Vec<NodeInfo>) -> Self {
        let mut s = Self::default();
        s.rebuild(nodes.into_iter().filter(|n| n.node.is_some()).map(Arc::new).collect());
        s
    }

    pub(crate) fn rebuild(&mut self, nodes: Vec<Arc<NodeInfo>>) {
        // Interleave zones so that a partial scan samples every zone (kube-scheduler's node tree).
        let mut zones: std::collections::BTreeMap<String, Vec<Arc<NodeInfo>>> = std::collections::BTreeMap::new();
        for n in nodes {
            let l = n.labels();
            let zone = format!("{}:\0:{}", l.get(REGION_LABEL).map_or("", String::as_str), l.get(ZONE_LABEL).map_or("", String::as_str));
            zones.entry(zone).or_default().push(n);
        }
        let mut lists: Vec<std::vec::IntoIter<Arc<NodeInfo>>> = zones
            .into_values()
            .map(|mut v| {
                v.sort_by(|a, b| a.name.cmp(&b.name));
                v.into_iter()
            })
            .collect();
        let mut ordered = Vec::new();
        loop {
            let mut any = false;
            for l in &mut lists {
                if let Some(n) = l.next() {
                    ordered.push(n);
                    any = true;
                }
            }
            if !any {
                break;
            }
        }
        self.nodes = ordered;
        self.summaries = self.nodes.iter().map(|n| n.summary()).collect();
        self.profiles = self.nodes.iter().map(|n| PriorityProfile::of(&n.pods)).collect();
        self.index = self.nodes.iter().enumerate().map(|(i, n)| (n.name.clone(), i)).collect();
        self.columns = Arc::default();
        self.domain_ids = Arc::default();
        self.changes.clear();
        self.counts = Arc::default();
        self.epoch = next_epoch();
        let mut hostnames = std::collections::HashSet::new();
        self.hostnames_unique = self.nodes.iter().all(|n| n.labels().get(HOSTNAME_LABEL).is_none_or(|h| hostnames.insert(h.clone())));
        self.with_affinity = (0..self.nodes.len()).filter(|i| self.nodes[*i].pods_with_affinity > 0).collect();
        self.with_required_anti_affinity = (0..self.nodes.len()).filter(|i| self.nodes[*i].pods_with_required_anti_affinity > 0).collect();
        self.with_scoring_affinity = (0..self.nodes.len()).filter(|i| self.nodes[*i].pods_with_scoring_affinity > 0).collect();
        self.with_nominated = (0..self.nodes.len()).filter(|i| !self.nodes[*i].nominated.is_empty()).collect();
        self.recount_images();
    }

    pub(crate) fn recount_images(&mut self) {
        self.image_nodes.clear();
        for n in &self.nodes {
            if let Some(s) = &n.node {
                for img in s.images.keys() {
                    *self.image_nodes.entry(img.clone()).or_default() += 1;
                }
            }
        }
    }

    /// Replaces one node's info, keeping the affinity lists right.
    pub(crate) fn replace(&mut self, i: usize, info: Arc<NodeInfo>) {
        let old = &self.nodes[i];
        if (old.pods_with_affinity > 0) != (info.pods_with_affinity > 0) {
            toggle(&mut self.with_affinity, i, info.pods_with_affinity > 0);
        }
        if (old.pods_with_required_anti_affinity > 0) != (info.pods_with_required_anti_affinity > 0) {
            toggle(&mut self.with_required_anti_affinity, i, info.pods_with_required_anti_affinity > 0);
        }
        if (old.pods_with_scoring_affinity > 0) != (info.pods_with_scoring_affinity > 0) {
            toggle(&mut self.with_scoring_affinity, i, info.pods_with_scoring_affinity > 0);
        }
        if old.nominated.is_empty() != info.nominated.is_empty() {
            toggle(&mut self.with_nominated, i, !info.nominated.is_empty());
        }
        self.summaries[i] = info.summary();
        self.profiles[i] = PriorityProfile::of(&info.pods);
        self.nodes[i] = info;
        if self.changes.len() > 8 * self.nodes.len() + 4096 {
            // A long-lived snapshot: start the derived counts over rather than keep a long log.
            self.changes.clear();
            self.counts = Arc::default();
            self.epoch = next_epoch();
        }
        self.changes.push(i);
    }

    /// Whether some node lists the pod with this UID among its nominated pods.
    pub(crate) fn nominates(&self, uid: &str) -> bool {
        if self.with_nominated.is_empty() {
            return false;
        }
        let bit = NodeSummary::uid_bit(uid);
        self.with_nominated.iter().any(|&i| {
            self.summaries.get(i).is_none_or(|s| s.nominated_uids & bit != 0) && self.nodes[i].nominated.iter().any(|p| p.uid == uid)
        })
    }

    /// Per-node counts under `key` (which must name everything the two functions depend on),
    /// computed on first use after a rebuild and then brought up to date by recounting only the
    /// nodes replaced since. `qualifies` may read only what a rebuild resets (labels);
    /// `domain` gives each node's domain value for the per-domain sums.
    pub fn node_counts(
        &self,
        key: &str,
        domain: &TopologyColumn,
        qualifies: &(dyn Fn(usize) -> bool + Sync),
        count: &(dyn Fn(&NodeInfo) -> i64 + Sync),
    ) -> NodeCounts {
        let mut cache = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = cache.get_mut(key) {
            if c.synced < self.changes.len() {
                let per_node = Arc::make_mut(&mut c.per_node);
                let by_domain = Arc::make_mut(&mut c.by_domain);
                for &i in &self.changes[c.synced..] {
                    if !qualifies(i) {
                        continue;
                    }
                    let new = count(&self.nodes[i]);
                    let delta = new - per_node[i];
                    per_node[i] = new;
                    if delta != 0
                        && let Some(v) = domain[i].as_deref()
                        && let Some(d) = by_domain.get_mut(v)
                    {
                        *d += delta;
                    }
                }
                c.synced = self.changes.len();
            }
            return c.clone();
        }
        use rayon::prelude::*;
        let per_node: Vec<i64> =
            (0..self.nodes.len()).into_par_iter().map(|i| if qualifies(i) { count(&self.nodes[i]) } else { 0 }).collect();
        let mut by_domain: HashMap<String, i64> = HashMap::new();
        for (i, n) in per_node.iter().enumerate() {
            if !qualifies(i) {
                continue;
            }
            if let Some(v) = domain[i].as_deref() {
                match by_domain.get_mut(v) {
                    Some(d) => *d += n,
                    None => {
                        by_domain.insert(v.to_owned(), *n);
                    }
                }
            }
        }
        let c = NodeCounts { synced: self.changes.len(), per_node: Arc::new(per_node), by_domain: Arc::new(by_domain) };
        cache.insert(key.to_owned(), c.clone());
        c
    }

    /// Every node, in scan order.
    pub fn nodes(&self) -> &[Arc<NodeInfo>] {
        &self.nodes
    }

    /// Every node's compact summary, in scan order (index `i` describes `nodes()[i]`).
    pub fn summaries(&self) -> &[NodeSummary] {
        &self.summaries
    }

    /// Each node's [`PriorityProfile`], by index (empty in a snapshot built without them).
    pub fn priority_profiles(&self) -> &[PriorityProfile] {
        &self.profiles
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True without nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// A node's index by name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&Arc<NodeInfo>> {
        self.index_of(name).map(|i| &self.nodes[i])
    }

    /// Nodes with at least one pod that has pod (anti-)affinity terms.
    pub fn nodes_with_affinity(&self) -> impl Iterator<Item = &Arc<NodeInfo>> {
        self.with_affinity.iter().map(|i| &self.nodes[*i])
    }

    /// Nodes with at least one pod whose terms score other pods' placement (required affinity,
    /// preferred affinity or anti-affinity).
    pub fn nodes_with_scoring_affinity(&self) -> impl Iterator<Item = &Arc<NodeInfo>> {
        self.with_scoring_affinity.iter().map(|i| &self.nodes[*i])
    }

    /// Nodes with at least one pod that has required anti-affinity terms.
    pub fn nodes_with_required_anti_affinity(&self) -> impl Iterator<Item = &Arc<NodeInfo>> {
        self.with_required_anti_affinity.iter().map(|i| &self.nodes[*i])
    }

    /// Every node's value of a label (a topology key), by index: a compact column that spreading
    /// and affinity scan instead of each node's label map.
    pub fn topology_column(&self, key: &str) -> TopologyColumn {
        let mut columns = self.columns.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = columns.get(key) {
            return c.clone();
        }
        let column: TopologyColumn = Arc::new(self.nodes.iter().map(|n| n.labels().get(key).map(|v| Arc::from(v.as_str()))).collect());
        columns.insert(key.to_owned(), column.clone());
        column
    }

    /// Every node's domain of a topology key as a small integer (see [`DomainIds`]).
    pub fn domain_ids(&self, key: &str) -> Arc<DomainIds> {
        let mut cache = self.domain_ids.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(d) = cache.get(key) {
            return d.clone();
        }
        let column = self.topology_column(key);
        let mut by_value: HashMap<&str, u32> = HashMap::new();
        let mut d = DomainIds { ids: Vec::with_capacity(column.len()), values: Vec::new() };
        for v in column.iter() {
            let id = match v {
                None => DomainIds::NONE,
                Some(v) => *by_value.entry(v).or_insert_with(|| {
                    d.values.push(v.clone());
                    u32::try_from(d.values.len() - 1).unwrap_or(DomainIds::NONE)
                }),
            };
            d.ids.push(id);
        }
        let d = Arc::new(d);
        cache.insert(key.to_owned(), d.clone());
        d
    }

    /// Whether no two nodes share a `kubernetes.io/hostname` value (so that a hostname domain is one node).
    pub fn hostnames_unique(&self) -> bool {
        self.hostnames_unique
    }

    /// On how many nodes an image (normalised name) is present.
    pub fn image_node_count(&self, image: &str) -> usize {
        self.image_nodes.get(image).copied().unwrap_or(0)
    }
}

fn toggle(list: &mut Vec<usize>, i: usize, on: bool) {
    if on {
        list.push(i);
    } else if let Some(p) = list.iter().position(|x| *x == i) {
        list.swap_remove(p);
    }
}
