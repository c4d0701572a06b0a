//! The default plugins, one file each, with kube-scheduler's names, semantics and weights.

pub mod default_binder;
pub mod default_preemption;
pub mod image_locality;
pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_name;
pub mod node_ports;
pub mod node_resources_balanced_allocation;
pub mod node_resources_fit;
pub mod node_unschedulable;
pub mod pod_topology_spread;
pub mod priority_sort;
pub mod scheduling_gates;
pub mod taint_toleration;
pub mod volume_binding;

pub use default_binder::DefaultBinder;
pub use default_preemption::DefaultPreemption;
pub use image_locality::ImageLocality;
pub use inter_pod_affinity::InterPodAffinity;
pub use node_affinity::NodeAffinity;
pub use node_name::NodeName;
pub use node_ports::NodePorts;
pub use node_resources_balanced_allocation::NodeResourcesBalancedAllocation;
pub use node_resources_fit::{NodeResourcesFit, ScoringStrategy};
pub use node_unschedulable::NodeUnschedulable;
pub use pod_topology_spread::PodTopologySpread;
pub use priority_sort::PrioritySort;
pub use scheduling_gates::SchedulingGates;
pub use taint_toleration::TaintToleration;
pub use volume_binding::VolumeBinding;

use crate::framework::{MAX_NODE_SCORE, NodeScore, Plugin};
use std::sync::Arc;

/// kube-scheduler's default plugins in their order, with score weights.
pub fn default_plugins() -> Vec<(Arc<dyn Plugin>, i64)> {
    vec![
        (Arc::new(SchedulingGates), 1),
        (Arc::new(PrioritySort), 1),
        (Arc::new(NodeUnschedulable), 1),
        (Arc::new(NodeName), 1),
        (Arc::new(TaintToleration), 3),
        (Arc::new(NodeAffinity), 2),
        (Arc::new(NodePorts), 1),
        (Arc::new(NodeResourcesFit::default()), 1),
        (Arc::new(VolumeBinding), 1),
        (Arc::new(PodTopologySpread), 2),
        (Arc::new(InterPodAffinity::default()), 2),
        (Arc::new(DefaultPreemption::default()), 1),
        (Arc::new(NodeResourcesBalancedAllocation), 1),
        (Arc::new(ImageLocality), 1),
        (Arc::new(DefaultBinder), 1),
    ]
}

/// kube-scheduler's `DefaultNormalizeScore`: scales to 0..=100 by the maximum, optionally reversed.
pub fn default_normalize(scores: &mut [NodeScore], reverse: bool) {
    let max = scores.iter().map(|s| s.score).max().unwrap_or(0);
    if max == 0 {
        if reverse {
            for s in scores.iter_mut() {
                s.score = MAX_NODE_SCORE;
            }
        }
        return;
    }
    for s in scores.iter_mut() {
        s.score = MAX_NODE_SCORE * s.score / max;
        if reverse {
            s.score = MAX_NODE_SCORE - s.score;
        }
    }
}

#[cfg(test)]
mod fail_memo_tests;
#[cfg(test)]
mod summary_tests;
#[cfg(test)]
pub(crate) mod testutil;
