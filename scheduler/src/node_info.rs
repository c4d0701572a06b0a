//! `NodeInfo`: a node's parsed, immutable description plus the pods the scheduler accounts on it.

use crate::pod_info::{HostPort, PodInfo, normalized_image};
use crate::resources::Resource;
use bosun_core::k8s_openapi::api::core::v1::{Node, Taint};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};

static EMPTY_LABELS: LazyLock<BTreeMap<String, String>> = LazyLock::new(BTreeMap::new);

/// The parts of a Node the plugins read, parsed once per node update.
#[derive(Debug)]
pub struct NodeStatic {
    /// The node object.
    pub node: Arc<Node>,
    /// Name.
    pub name: String,
    /// Taints.
    pub taints: Vec<Taint>,
    /// Allocatable resources.
    pub allocatable: Resource,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// Images present on the node, by every name they are known under, with their sizes in bytes.
    pub images: HashMap<String, i64>,
}

impl NodeStatic {
    /// Parses a node.
    pub fn new(node: Arc<Node>) -> Arc<Self> {
        let status = node.status.as_ref();
        let allocatable = status.and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref())).map(Resource::from_list).unwrap_or_default();
        let mut images = HashMap::new();
        for img in status.and_then(|s| s.images.as_ref()).into_iter().flatten() {
            for n in img.names.iter().flatten() {
                images.insert(normalized_image(n), img.size_bytes.unwrap_or(0));
            }
        }
        let spec = node.spec.as_ref();
        Arc::new(Self {
            name: node.metadata.name.clone().unwrap_or_default(),
            taints: spec.and_then(|s| s.taints.clone()).unwrap_or_default(),
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            allocatable,
            images,
            node,
        })
    }

    /// The node's labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        self.node.metadata.labels.as_ref().unwrap_or(&EMPTY_LABELS)
    }

    /// Whether anything the scheduler reads differs from `other`.
    pub fn same_for_scheduling(&self, other: &Self) -> bool {
        self.labels() == other.labels()
            && self.taints == other.taints
            && self.allocatable == other.allocatable
            && self.unschedulable == other.unschedulable
            && self.images == other.images
    }
}

/// A node as the scheduler sees it: its description and the pods (bound or assumed) on it, with
/// their summed requests. Cloning is cheap: the description is shared.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// Name (also for a node not yet seen whose pods were).
    pub name: Arc<str>,
    /// The node; `None` while only its pods are known.
    pub node: Option<Arc<NodeStatic>>,
    /// Pods on the node.
    pub pods: Vec<Arc<PodInfo>>,
    /// How many of them have pod (anti-)affinity terms.
    pub pods_with_affinity: u32,
    /// How many of them have required anti-affinity terms.
    pub pods_with_required_anti_affinity: u32,
    /// How many of them have terms that score other pods' placement (required affinity or
    /// preferred terms): what InterPodAffinity's PreScore visits.
    pub pods_with_scoring_affinity: u32,
    /// Summed requests of the pods.
    pub requested: Resource,
    /// Summed non-zero CPU and memory requests (scoring).
    pub non_zero_requested: (i64, i64),
    /// Host ports in use.
    pub used_ports: Vec<HostPort>,
    /// Bumped on every change.
    pub generation: u64,
}

impl NodeInfo {
    /// An empty node info.
    pub fn new(name: &str) -> Self {
        Self {
            name: Arc::from(name),
            node: None,
            pods: Vec::new(),
            pods_with_affinity: 0,
            pods_with_required_anti_affinity: 0,
            pods_with_scoring_affinity: 0,
            requested: Resource::default(),
            non_zero_requested: (0, 0),
            used_ports: Vec::new(),
            generation: 0,
        }
    }

    /// A node info for a node with these pods (tests and preemption dry runs).
    pub fn with_pods(node: Arc<NodeStatic>, pods: impl IntoIterator<Item = Arc<PodInfo>>) -> Self {
        let mut n = Self::new(&node.name);
        n.node = Some(node);
        for p in pods {
            n.add_pod(p);
        }
        n
    }

    /// The node's labels (empty until the node is known).
    pub fn labels(&self) -> &BTreeMap<String, String> {
        self.node.as_ref().map_or(&EMPTY_LABELS, |n| n.labels())
    }

    /// Allocatable resources.
    pub fn allocatable(&self) -> Resource {
        self.node.as_ref().map(|n| n.allocatable.clone()).unwrap_or_default()
    }

    /// Taints.
    pub fn taints(&self) -> &[Taint] {
        self.node.as_ref().map_or(&[], |n| &n.taints)
    }

    /// Accounts a pod on the node.
    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested.add(&pod.requests);
        self.non_zero_requested.0 += pod.non_zero.0;
        self.non_zero_requested.1 += pod.non_zero.1;
        self.used_ports.extend(pod.host_ports.iter().cloned());
        if pod.has_affinity() {
            self.pods_with_affinity += 1;
        }
        if pod.has_required_anti_affinity() {
            self.pods_with_required_anti_affinity += 1;
        }
        if pod.has_scoring_affinity() {
            self.pods_with_scoring_affinity += 1;
        }
        self.pods.push(pod);
        self.generation += 1;
    }

    /// Removes a pod by UID; false when it was not there.
    pub fn remove_pod(&mut self, uid: &str) -> bool {
        let Some(i) = self.pods.iter().position(|p| p.uid == uid) else { return false };
        let pod = self.pods.swap_remove(i);
        self.requested.sub(&pod.requests);
        self.non_zero_requested.0 -= pod.non_zero.0;
        self.non_zero_requested.1 -= pod.non_zero.1;
        for hp in &pod.host_ports {
            if let Some(j) = self.used_ports.iter().position(|u| u == hp) {
                self.used_ports.swap_remove(j);
            }
        }
        if pod.has_affinity() {
            self.pods_with_affinity -= 1;
        }
        if pod.has_required_anti_affinity() {
            self.pods_with_required_anti_affinity -= 1;
        }
        if pod.has_scoring_affinity() {
            self.pods_with_scoring_affinity -= 1;
        }
        self.generation += 1;
        true
    }
}
