//! The scheduler cache: per-node state fed by informers, pods assumed before their binding lands,
//! and the incremental snapshot each cycle reads.

use crate::node_info::{NodeInfo, NodeStatic};
use crate::pod_info::PodInfo;
use crate::snapshot::Snapshot;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Why the cache refused a change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The pod is already in the cache (assumed or bound).
    #[error("pod {0} is already in the cache")]
    AlreadyPresent(String),
    /// The pod is not in the cache.
    #[error("pod {0} is not in the cache")]
    NotFound(String),
    /// The pod is not assumed (it cannot be forgotten).
    #[error("pod {0} is not assumed")]
    NotAssumed(String),
}

#[derive(Debug)]
struct PodState {
    pod: Arc<PodInfo>,
    node: Arc<str>,
    assumed: bool,
    binding_finished: bool,
}

/// Per-node state plus assumed pods. Not synchronised itself: the scheduler keeps it behind a mutex.
#[derive(Debug, Default)]
pub struct Cache {
    nodes: HashMap<Arc<str>, Arc<NodeInfo>>,
    pods: HashMap<String, PodState>,
    dirty: HashSet<Arc<str>>,
    structure_changed: bool,
    images_changed: bool,
}

impl Cache {
    /// An empty cache.
    pub fn new() -> Self {
        Self { structure_changed: true, ..Self::default() }
    }

    fn node_mut(&mut self, name: &str) -> &mut NodeInfo {
        let key: Arc<str> = match self.nodes.get_key_value(name) {
            Some((k, _)) => k.clone(),
            None => {
                let k: Arc<str> = Arc::from(name);
                self.nodes.insert(k.clone(), Arc::new(NodeInfo::new(name)));
                k
            }
        };
        self.dirty.insert(key.clone());
        let entry = self.nodes.get_mut(&key).map(Arc::make_mut);
        // The entry was inserted above.
        entry.unwrap_or_else(|| unreachable!("node entry exists"))
    }

    fn add_to_node(&mut self, pod: &Arc<PodInfo>, node: &str) {
        self.node_mut(node).add_pod(pod.clone());
    }

    fn remove_from_node(&mut self, uid: &str, node: &str) {
        if self.nodes.contains_key(node) {
            let n = self.node_mut(node);
            n.remove_pod(uid);
            if n.node.is_none() && n.pods.is_empty() && n.nominated.is_empty() {
                self.nodes.remove(node);
                self.dirty.remove(node);
            }
        }
    }

    /// Assumes a pod runs on a node before the binding lands, so the next cycle counts it.
    pub fn assume_pod(&mut self, pod: Arc<PodInfo>, node: &str) -> Result<(), CacheError> {
        if self.pods.contains_key(&pod.uid) {
            return Err(CacheError::AlreadyPresent(pod.key()));
        }
        self.add_to_node(&pod, node);
        self.pods.insert(pod.uid.clone(), PodState { node: Arc::from(node), pod, assumed: true, binding_finished: false });
        Ok(())
    }

    /// Marks an assumed pod's binding as done (it stays assumed until the informer confirms it).
    pub fn finish_binding(&mut self, uid: &str) {
        if let Some(p) = self.pods.get_mut(uid) {
            p.binding_finished = true;
        }
    }

    /// Drops an assumed pod (its binding failed).
    pub fn forget_pod(&mut self, uid: &str) -> Result<(), CacheError> {
        match self.pods.get(uid) {
            None => Err(CacheError::NotFound(uid.to_owned())),
            Some(p) if !p.assumed => Err(CacheError::NotAssumed(p.pod.key())),
            Some(p) => {
                let node = p.node.clone();
                self.pods.remove(uid);
                self.remove_from_node(uid, &node);
                Ok(())
            }
        }
    }

    /// Adds or updates a pod bound to a node (from the informer); confirms an assumed pod.
    pub fn add_or_update_pod(&mut self, pod: Arc<PodInfo>) {
        let Some(node) = pod.node_name.clone() else { return };
        if let Some(old) = self.pods.remove(&pod.uid) {
            self.remove_from_node(&pod.uid, &old.node);
        }
        self.add_to_node(&pod, &node);
        self.pods.insert(pod.uid.clone(), PodState { node: Arc::from(node.as_str()), pod, assumed: false, binding_finished: true });
    }

    /// Confirms an assumed pod with the version the informer delivered (bound to the node it was
    /// assumed on), when that version differs from the assumed one in nothing the scheduler
    /// derives from a pod but `spec.nodeName` ([`PodInfo::rebound`]): the node's accounting is
    /// already right, so the node (and the snapshot) is left as it is; the node's pod list keeps
    /// the assumed version's info, which equals the new one in every parsed part. Returns the
    /// assumed and the confirmed info; `None` (nothing done) when the slow path must run.
    pub fn confirm_assumed(&mut self, pod: &Arc<bosun_core::k8s_openapi::api::core::v1::Pod>) -> Option<(Arc<PodInfo>, Arc<PodInfo>)> {
        let uid = pod.metadata.uid.as_deref()?;
        let state = self.pods.get_mut(uid)?;
        let node = pod.spec.as_ref()?.node_name.as_deref()?;
        if !state.assumed || *state.node != *node {
            return None;
        }
        let confirmed = state.pod.rebound(pod.clone())?;
        let assumed = std::mem::replace(&mut state.pod, confirmed.clone());
        state.assumed = false;
        state.binding_finished = true;
        Some((assumed, confirmed))
    }

    /// Moves a pod's nomination (by preemption) from one node to another (`None`: none), so that
    /// snapshots carry each node's nominated pods.
    pub fn nominate(&mut self, pod: &Arc<PodInfo>, from: Option<&str>, to: Option<&str>) {
        if let Some(from) = from
            && self.nodes.contains_key(from)
        {
            let n = self.node_mut(from);
            n.nominated.retain(|p| p.uid != pod.uid);
            if n.node.is_none() && n.pods.is_empty() && n.nominated.is_empty() {
                self.nodes.remove(from);
                self.dirty.remove(from);
            }
        }
        if let Some(to) = to {
            let n = self.node_mut(to);
            n.nominated.retain(|p| p.uid != pod.uid);
            n.nominated.push(pod.clone());
        }
    }

    /// Removes a pod (deleted, or terminal).
    pub fn remove_pod(&mut self, uid: &str) -> Option<Arc<PodInfo>> {
        let old = self.pods.remove(uid)?;
        self.remove_from_node(uid, &old.node);
        Some(old.pod)
    }

    /// Whether a pod is assumed and not yet confirmed.
    pub fn is_assumed(&self, uid: &str) -> bool {
        self.pods.get(uid).is_some_and(|p| p.assumed)
    }

    /// The pod the cache holds under a UID.
    pub fn pod(&self, uid: &str) -> Option<Arc<PodInfo>> {
        self.pods.get(uid).map(|p| p.pod.clone())
    }

    /// Adds or updates a node; returns the previous description.
    pub fn add_or_update_node(&mut self, node: Arc<NodeStatic>) -> Option<Arc<NodeStatic>> {
        let name = node.name.clone();
        let old = self.node_mut(&name).node.replace(node.clone());
        match &old {
            Some(o) => {
                if o.images != node.images {
                    self.images_changed = true;
                }
                if o.labels() != node.labels() {
                    self.structure_changed = true;
                }
            }
            None => self.structure_changed = true,
        }
        old
    }

    /// Removes a node (its pods stay accounted until they go).
    pub fn remove_node(&mut self, name: &str) -> Option<Arc<NodeStatic>> {
        if !self.nodes.contains_key(name) {
            return None;
        }
        let n = self.node_mut(name);
        let old = n.node.take();
        if n.pods.is_empty() && n.nominated.is_empty() {
            self.nodes.remove(name);
            self.dirty.remove(name);
        }
        self.structure_changed = true;
        old
    }

    /// The number of known nodes (with a Node object).
    pub fn node_count(&self) -> usize {
        self.nodes.values().filter(|n| n.node.is_some()).count()
    }

    /// The number of pods (bound and assumed).
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// The names of the nodes with a Node object (what the informer last told).
    pub fn node_names(&self) -> Vec<Arc<str>> {
        self.nodes.iter().filter(|(_, n)| n.node.is_some()).map(|(k, _)| k.clone()).collect()
    }

    /// The UIDs of the pods bound by the informer's account (not the assumed ones).
    pub fn bound_pod_uids(&self) -> Vec<String> {
        self.pods.iter().filter(|(_, p)| !p.assumed).map(|(k, _)| k.clone()).collect()
    }

    /// Makes the next [`Cache::update_snapshot`] rebuild the snapshot from scratch.
    pub fn invalidate_snapshot(&mut self) {
        self.structure_changed = true;
    }

    /// The number of assumed pods.
    pub fn assumed_count(&self) -> usize {
        self.pods.values().filter(|p| p.assumed).count()
    }

    /// A node's info.
    pub fn node_info(&self, name: &str) -> Option<Arc<NodeInfo>> {
        self.nodes.get(name).cloned()
    }

    /// Brings a snapshot up to date: replaces the nodes changed since the last call, or rebuilds
    /// it when nodes came or went.
    pub fn update_snapshot(&mut self, snapshot: &mut Snapshot) {
        if self.structure_changed {
            snapshot.rebuild(self.nodes.values().filter(|n| n.node.is_some()).cloned().collect());
            self.structure_changed = false;
            self.images_changed = false;
            self.dirty.clear();
            return;
        }
        for name in self.dirty.drain() {
            if let (Some(i), Some(info)) = (snapshot.index_of(&name), self.nodes.get(&name)) {
                snapshot.replace(i, info.clone());
            }
        }
        if self.images_changed {
            snapshot.recount_images();
            self.images_changed = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_core::k8s_openapi::api::core::v1::{Node, Pod};

    fn pod(uid: &str, node: Option<&str>) -> Arc<PodInfo> {
        let mut p = Pod::default();
        p.metadata.name = Some(uid.into());
        p.metadata.namespace = Some("default".into());
        p.metadata.uid = Some(uid.into());
        p.spec = Some(Default::default());
        if let Some(spec) = p.spec.as_mut() {
            spec.node_name = node.map(str::to_owned);
        }
        PodInfo::new(Arc::new(p))
    }

    fn node(name: &str) -> Arc<NodeStatic> {
        let mut n = Node::default();
        n.metadata.name = Some(name.into());
        NodeStatic::new(Arc::new(n))
    }

    #[test]
    fn assumed_pods_count_until_forgotten_and_confirmation_replaces_them() {
        let mut c = Cache::new();
        c.add_or_update_node(node("n1"));
        let mut snap = Snapshot::default();
        c.update_snapshot(&mut snap);
        assert_eq!(snap.len(), 1);
        c.assume_pod(pod("a", None), "n1").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(c.assume_pod(pod("a", None), "n1"), Err(CacheError::AlreadyPresent(_))));
        c.update_snapshot(&mut snap);
        assert_eq!(snap.node("n1").map(|n| n.pods.len()), Some(1));
        c.forget_pod("a").unwrap_or_else(|e| panic!("{e}"));
        c.update_snapshot(&mut snap);
        assert_eq!(snap.node("n1").map(|n| n.pods.len()), Some(0));
        c.assume_pod(pod("b", None), "n1").unwrap_or_else(|e| panic!("{e}"));
        c.add_or_update_pod(pod("b", Some("n1")));
        assert!(!c.is_assumed("b"));
        assert!(matches!(c.forget_pod("b"), Err(CacheError::NotAssumed(_))));
        c.update_snapshot(&mut snap);
        assert_eq!(snap.node("n1").map(|n| n.pods.len()), Some(1));
    }

    #[test]
    fn snapshots_share_unchanged_nodes() {
        let mut c = Cache::new();
        c.add_or_update_node(node("n1"));
        c.add_or_update_node(node("n2"));
        let mut snap = Snapshot::default();
        c.update_snapshot(&mut snap);
        let before = snap.node("n2").cloned();
        c.add_or_update_pod(pod("x", Some("n1")));
        c.update_snapshot(&mut snap);
        let after = snap.node("n2").cloned();
        assert!(matches!((before, after), (Some(a), Some(b)) if Arc::ptr_eq(&a, &b)));
        assert_eq!(snap.node("n1").map(|n| n.pods.len()), Some(1));
        c.remove_node("n2");
        c.update_snapshot(&mut snap);
        assert_eq!(snap.len(), 1);
    }
}
