//! NodeUnschedulable (Filter): cordoned nodes take only pods tolerating `node.kubernetes.io/unschedulable`.

use crate::framework::{
    ActionType, ClusterEventWithHint, CycleState, EventResource, FilterPlugin, Plugin, QueueingHint, Status, SummaryFilter,
};
use crate::node_info::{NodeInfo, NodeSummary};
use crate::pod_info::{PodInfo, tolerates};
use crate::snapshot::Snapshot;
use bosun_core::k8s_openapi::api::core::v1::Taint;
use std::sync::Arc;

/// The reason a cordoned node gives.
pub const REASON: &str = "node(s) were unschedulable";
/// The taint key of cordoned nodes.
pub const TAINT_KEY: &str = "node.kubernetes.io/unschedulable";

/// Filters out cordoned nodes.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeUnschedulable;

impl Plugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        "NodeUnschedulable"
    }
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        vec![ClusterEventWithHint::with_hint(EventResource::Node, ActionType::ADD.or(ActionType::UPDATE_NODE_TAINT), |_, _, new| match new
            .and_then(|n| n.node())
        {
            Some(n) if !n.unschedulable => QueueingHint::Queue,
            _ => QueueingHint::QueueSkip,
        })]
    }
    fn as_filter(self: Arc<Self>) -> Option<Arc<dyn FilterPlugin>> {
        Some(self)
    }
}

impl FilterPlugin for NodeUnschedulable {
    fn node_local(&self, _: &CycleState, _: &PodInfo) -> bool {
        true
    }

    fn summary_filter<'a>(&'a self, _: &'a CycleState, _: &'a PodInfo, _: &'a Snapshot) -> SummaryFilter<'a> {
        SummaryFilter::PassUnless(NodeSummary::NO_NODE | NodeSummary::UNSCHEDULABLE)
    }

    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(n) = &node.node else { return Status::unresolvable("node not found") };
        if !n.unschedulable {
            return Status::success();
        }
        let taint = Taint { key: TAINT_KEY.into(), effect: "NoSchedule".into(), ..Default::default() };
        if pod.tolerations.iter().any(|t| tolerates(t, &taint)) {
            return Status::success();
        }
        Status::unresolvable(REASON)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::{node, pod};

    #[test]
    fn cordoned_nodes_reject_pods_without_the_toleration() {
        let n = node("n").unschedulable().info(&[]);
        let s = NodeUnschedulable.filter(&CycleState::new(), &pod("p").info(), &n);
        assert_eq!(s.code(), crate::framework::Code::UnschedulableAndUnresolvable);
        assert_eq!(s.message(), REASON);
        let tolerant = pod("q").toleration(TAINT_KEY, "", "NoSchedule").info();
        assert!(NodeUnschedulable.filter(&CycleState::new(), &tolerant, &n).is_success());
        assert!(NodeUnschedulable.filter(&CycleState::new(), &pod("p").info(), &node("m").info(&[])).is_success());
    }
}
