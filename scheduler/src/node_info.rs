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

/// A node's figures that Filter and Score read most, in one compact record: the snapshot keeps one
/// per node in scan order, so that a scan reads a dense array instead of chasing each node's
/// description and pod list (see [`crate::framework::SummaryFilter`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeSummary {
    /// Allocatable CPU (millicores).
    pub alloc_milli_cpu: i64,
    /// Allocatable memory (bytes).
    pub alloc_memory: i64,
    /// Allocatable ephemeral storage (bytes).
    pub alloc_ephemeral_storage: i64,
    /// How many pods the node accepts.
    pub alloc_pods: i64,
    /// Summed CPU requests of its pods.
    pub requested_milli_cpu: i64,
    /// Summed memory requests.
    pub requested_memory: i64,
    /// Summed ephemeral storage requests.
    pub requested_ephemeral_storage: i64,
    /// Pods on the node.
    pub pods: i64,
    /// Summed non-zero CPU requests (scoring).
    pub non_zero_milli_cpu: i64,
    /// Summed non-zero memory requests (scoring).
    pub non_zero_memory: i64,
    /// Summed CPU requests of the pods nominated to the node.
    pub nominated_milli_cpu: i64,
    /// Summed memory requests of the nominated pods.
    pub nominated_memory: i64,
    /// Summed ephemeral storage requests of the nominated pods.
    pub nominated_ephemeral_storage: i64,
    /// How many pods are nominated to the node.
    pub nominated_pods: i64,
    /// The lowest priority among them.
    pub nominated_min_priority: i32,
    /// The highest priority among them.
    pub nominated_max_priority: i32,
    /// A one-word Bloom filter of their UIDs ([`NodeSummary::uid_bit`]): a pod whose bit is clear
    /// is surely not among them.
    pub nominated_uids: u64,
    /// `NodeSummary::*` flags.
    pub flags: u32,
}

impl NodeSummary {
    /// The node object is not known (only pods on it are).
    pub const NO_NODE: u32 = 1;
    /// Cordoned (`spec.unschedulable`).
    pub const UNSCHEDULABLE: u32 = 1 << 1;
    /// Has a `NoSchedule` or `NoExecute` taint.
    pub const HARD_TAINTS: u32 = 1 << 2;
    /// Has a `PreferNoSchedule` taint.
    pub const SOFT_TAINTS: u32 = 1 << 3;
    /// Some pod on it uses a host port.
    pub const HOST_PORTS: u32 = 1 << 4;
    /// Allocatable or requested extended (scalar) resources.
    pub const SCALAR: u32 = 1 << 5;
    /// Reports images.
    pub const IMAGES: u32 = 1 << 6;
    /// Some pod on it has pod (anti-)affinity terms.
    pub const POD_AFFINITY: u32 = 1 << 7;
    /// Pods are nominated to the node (the `nominated_*` figures).
    pub const NOMINATED: u32 = 1 << 8;
    /// A pod nominated to the node asks for more than the summary holds (host ports, extended
    /// resources, pod affinity, spread constraints).
    pub const NOMINATED_OTHER: u32 = 1 << 9;

    /// A UID's bit in [`NodeSummary::nominated_uids`].
    pub fn uid_bit(uid: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        uid.hash(&mut h);
        1 << (h.finish() % 64)
    }

    /// The summary as if every nominated pod ran on the node (their requests and count added).
    pub fn with_nominated(&self) -> Self {
        let mut s = *self;
        s.requested_milli_cpu += self.nominated_milli_cpu;
        s.requested_memory += self.nominated_memory;
        s.requested_ephemeral_storage += self.nominated_ephemeral_storage;
        s.pods += self.nominated_pods;
        s
    }

    /// Whether any of `flags` is set.
    pub fn has(&self, flags: u32) -> bool {
        self.flags & flags != 0
    }

    /// A resource by name from the summary (`cpu` in millicores): (allocatable, requested);
    /// `None` for extended resources, which the summary does not hold.
    pub fn by_name(&self, name: &str) -> Option<(i64, i64)> {
        use crate::resources::{CPU, EPHEMERAL_STORAGE, MEMORY, PODS};
        match name {
            CPU => Some((self.alloc_milli_cpu, self.requested_milli_cpu)),
            MEMORY => Some((self.alloc_memory, self.requested_memory)),
            EPHEMERAL_STORAGE => Some((self.alloc_ephemeral_storage, self.requested_ephemeral_storage)),
            PODS => Some((self.alloc_pods, self.pods)),
            _ => None,
        }
    }
}

/// The pods on a node by priority, as preemption's dry runs read them: enough to tell, without
/// visiting the pods, that a node has no victims or that evicting them cannot help, for a
/// preemptor whose priority is above every pod's or equal to the highest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriorityProfile {
    /// The highest priority of a pod on the node (`i32::MIN` without pods).
    pub top: i32,
    /// The lowest (`i32::MAX` without pods).
    pub bottom: i32,
    /// Summed CPU requests (millicores) of the pods below `top`.
    pub below_top_milli_cpu: i64,
    /// Summed memory requests of the pods below `top`.
    pub below_top_memory: i64,
    /// Summed ephemeral storage requests of the pods below `top`.
    pub below_top_ephemeral_storage: i64,
    /// How many pods are below `top`.
    pub below_top_pods: i64,
    /// Summed non-zero CPU requests of the pods below `top`.
    pub below_top_non_zero_milli_cpu: i64,
    /// Summed non-zero memory requests of the pods below `top`.
    pub below_top_non_zero_memory: i64,
    /// Every pod below `top` is plain: no host ports, extended resources or affinity terms, so
    /// that removing them changes no [`NodeSummary`] flag.
    pub below_top_plain: bool,
    /// Every pod on the node is plain.
    pub all_plain: bool,
}

impl Default for PriorityProfile {
    fn default() -> Self {
        Self {
            top: i32::MIN,
            bottom: i32::MAX,
            below_top_milli_cpu: 0,
            below_top_memory: 0,
            below_top_ephemeral_storage: 0,
            below_top_pods: 0,
            below_top_non_zero_milli_cpu: 0,
            below_top_non_zero_memory: 0,
            below_top_plain: true,
            all_plain: true,
        }
    }
}

impl PriorityProfile {
    /// The profile of these pods.
    pub fn of(pods: &[Arc<PodInfo>]) -> Self {
        let mut p = Self::default();
        for pod in pods {
            p.top = p.top.max(pod.priority);
            p.bottom = p.bottom.min(pod.priority);
        }
        for pod in pods {
            let plain = pod.is_plain();
            p.all_plain &= plain;
            if pod.priority < p.top {
                p.below_top_plain &= plain;
                p.below_top_milli_cpu += pod.requests.milli_cpu;
                p.below_top_memory += pod.requests.memory;
                p.below_top_ephemeral_storage += pod.requests.ephemeral_storage;
                p.below_top_pods += 1;
                p.below_top_non_zero_milli_cpu += pod.non_zero.0;
                p.below_top_non_zero_memory += pod.non_zero.1;
            }
        }
        p
    }

    /// `summary` (this node's) without the pods of lower priority than `priority`, when the
    /// profile tells: the preemptor outranks every pod, or ties the highest. `None` otherwise, or
    /// when the pods to remove are not plain.
    pub fn without_lower(&self, summary: &NodeSummary, priority: i32) -> Option<NodeSummary> {
        let mut s = *summary;
        if priority > self.top && self.all_plain {
            s.requested_milli_cpu = 0;
            s.requested_memory = 0;
            s.requested_ephemeral_storage = 0;
            s.pods = 0;
            s.non_zero_milli_cpu = 0;
            s.non_zero_memory = 0;
            return Some(s);
        }
        if priority == self.top && self.below_top_plain {
            s.requested_milli_cpu -= self.below_top_milli_cpu;
            s.requested_memory -= self.below_top_memory;
            s.requested_ephemeral_storage -= self.below_top_ephemeral_storage;
            s.pods -= self.below_top_pods;
            s.non_zero_milli_cpu -= self.below_top_non_zero_milli_cpu;
            s.non_zero_memory -= self.below_top_non_zero_memory;
            return Some(s);
        }
        None
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
    /// Pods that preemption nominated to this node (any priority), whose room others leave free.
    pub nominated: Vec<Arc<PodInfo>>,
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
            nominated: Vec::new(),
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

    /// The compact summary of the node's hot figures.
    pub fn summary(&self) -> NodeSummary {
        let mut flags = 0;
        let alloc = match &self.node {
            None => {
                flags |= NodeSummary::NO_NODE;
                Resource::default()
            }
            Some(n) => {
                if n.unschedulable {
                    flags |= NodeSummary::UNSCHEDULABLE;
                }
                for t in &n.taints {
                    match t.effect.as_str() {
                        "NoSchedule" | "NoExecute" => flags |= NodeSummary::HARD_TAINTS,
                        "PreferNoSchedule" => flags |= NodeSummary::SOFT_TAINTS,
                        _ => {}
                    }
                }
                if !n.images.is_empty() {
                    flags |= NodeSummary::IMAGES;
                }
                n.allocatable.clone()
            }
        };
        if !self.used_ports.is_empty() {
            flags |= NodeSummary::HOST_PORTS;
        }
        if !alloc.scalar.is_empty() || !self.requested.scalar.is_empty() {
            flags |= NodeSummary::SCALAR;
        }
        if self.pods_with_affinity > 0 {
            flags |= NodeSummary::POD_AFFINITY;
        }
        let mut nominated = Resource::default();
        let (mut min_priority, mut max_priority) = (i32::MAX, i32::MIN);
        let mut uids = 0;
        for p in &self.nominated {
            flags |= NodeSummary::NOMINATED;
            uids |= NodeSummary::uid_bit(&p.uid);
            if !p.host_ports.is_empty() || !p.requests.scalar.is_empty() || p.has_affinity() || !p.spread_constraints.is_empty() {
                flags |= NodeSummary::NOMINATED_OTHER;
            }
            nominated.add(&p.requests);
            min_priority = min_priority.min(p.priority);
            max_priority = max_priority.max(p.priority);
        }
        NodeSummary {
            nominated_milli_cpu: nominated.milli_cpu,
            nominated_memory: nominated.memory,
            nominated_ephemeral_storage: nominated.ephemeral_storage,
            nominated_pods: i64::try_from(self.nominated.len()).unwrap_or(i64::MAX),
            nominated_min_priority: min_priority,
            nominated_max_priority: max_priority,
            nominated_uids: uids,
            alloc_milli_cpu: alloc.milli_cpu,
            alloc_memory: alloc.memory,
            alloc_ephemeral_storage: alloc.ephemeral_storage,
            alloc_pods: alloc.allowed_pod_number,
            requested_milli_cpu: self.requested.milli_cpu,
            requested_memory: self.requested.memory,
            requested_ephemeral_storage: self.requested.ephemeral_storage,
            pods: i64::try_from(self.pods.len()).unwrap_or(i64::MAX),
            non_zero_milli_cpu: self.non_zero_requested.0,
            non_zero_memory: self.non_zero_requested.1,
            flags,
        }
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
