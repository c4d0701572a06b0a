//! NodeName (Filter): a pod naming a node in `spec.nodeName` fits only there.

use crate::framework::{ActionType, ClusterEventWithHint, CycleState, EventResource, FilterPlugin, Plugin, Status, SummaryFilter};
use crate::node_info::NodeInfo;
use crate::pod_info::PodInfo;
use crate::snapshot::Snapshot;
use std::sync::Arc;

/// The reason other nodes give.
pub const REASON: &str = "node(s) didn't match the requested node name";

/// Matches `spec.nodeName`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeName;

impl Plugin for NodeName {
    fn name(&self) -> &'static str {
        "NodeName"
    }
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        vec![ClusterEventWithHint::always(EventResource::Node, ActionType::ADD)]
    }
    fn as_filter(self: Arc<Self>) -> Option<Arc<dyn FilterPlugin>> {
        Some(self)
    }
}

impl FilterPlugin for NodeName {
    fn node_local(&self, _: &CycleState, _: &PodInfo) -> bool {
        true
    }

    fn summary_filter<'a>(&'a self, _: &'a CycleState, pod: &'a PodInfo, _: &'a Snapshot) -> SummaryFilter<'a> {
        if pod.node_name.is_none() { SummaryFilter::Pass } else { SummaryFilter::Full }
    }

    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        match &pod.node_name {
            Some(n) if **n != *node.name => Status::unresolvable(REASON),
            _ => Status::success(),
        }
    }
}
