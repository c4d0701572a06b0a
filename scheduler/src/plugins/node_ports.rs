//! NodePorts (PreFilter, Filter): a pod's host ports must be free on the node.

use crate::framework::{
    ActionType, ClusterEventWithHint, CycleState, EventResource, FilterPlugin, Handle, Plugin, PreFilterPlugin, PreFilterResult,
    QueueingHint, Status, SummaryFilter,
};
use crate::node_info::{NodeInfo, NodeSummary};
use crate::pod_info::PodInfo;
use crate::snapshot::Snapshot;
use std::sync::Arc;

/// The reason a node with a port in use gives.
pub const REASON: &str = "node(s) didn't have free ports for the requested pod ports";

/// Host port conflicts.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodePorts;

impl Plugin for NodePorts {
    fn name(&self) -> &'static str {
        "NodePorts"
    }
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        vec![
            ClusterEventWithHint::with_hint(EventResource::AssignedPod, ActionType::DELETE, |pod, old, _| {
                match old.and_then(|o| o.pod()) {
                    Some(o) if o.host_ports.iter().any(|a| pod.host_ports.iter().any(|b| a.conflicts(b))) => QueueingHint::Queue,
                    _ => QueueingHint::QueueSkip,
                }
            }),
            ClusterEventWithHint::always(EventResource::Node, ActionType::ADD),
        ]
    }
    fn as_pre_filter(self: Arc<Self>) -> Option<Arc<dyn PreFilterPlugin>> {
        Some(self)
    }
    fn as_filter(self: Arc<Self>) -> Option<Arc<dyn FilterPlugin>> {
        Some(self)
    }
}

impl PreFilterPlugin for NodePorts {
    fn pre_filter(&self, _: &mut CycleState, pod: &PodInfo, _: &Snapshot, _: &Handle) -> (Option<PreFilterResult>, Status) {
        (None, if pod.host_ports.is_empty() { Status::skip() } else { Status::success() })
    }
}

impl FilterPlugin for NodePorts {
    fn node_local(&self, _: &CycleState, _: &PodInfo) -> bool {
        true
    }

    fn summary_filter<'a>(&'a self, _: &'a CycleState, pod: &'a PodInfo, _: &'a Snapshot) -> SummaryFilter<'a> {
        if pod.host_ports.is_empty() { SummaryFilter::Pass } else { SummaryFilter::PassUnless(NodeSummary::HOST_PORTS) }
    }

    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if pod.host_ports.iter().any(|p| node.used_ports.iter().any(|u| u.conflicts(p))) {
            Status::unschedulable(REASON)
        } else {
            Status::success()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::{node, pod};

    #[test]
    fn a_used_host_port_blocks_the_node() {
        let n = node("n").info(&[pod("web").host_port(8080).node("n").info()]);
        let st = CycleState::new();
        assert_eq!(NodePorts.filter(&st, &pod("p").host_port(8080).info(), &n).message(), REASON);
        assert!(NodePorts.filter(&st, &pod("q").host_port(9090).info(), &n).is_success());
    }
}
