//! SchedulingGates (PreEnqueue): a pod with `spec.schedulingGates` waits outside the active queue.

use crate::framework::{ActionType, ClusterEventWithHint, EventResource, Plugin, PreEnqueuePlugin, QueueingHint, Status};
use crate::pod_info::PodInfo;
use std::sync::Arc;

/// Keeps gated pods out of scheduling until every gate is removed.
#[derive(Debug, Clone, Copy, Default)]
pub struct SchedulingGates;

impl Plugin for SchedulingGates {
    fn name(&self) -> &'static str {
        "SchedulingGates"
    }
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        vec![ClusterEventWithHint::with_hint(EventResource::UnscheduledPod, ActionType::UPDATE, |pod, _, new| {
            let new = new.and_then(|n| n.pod());
            if new.is_some_and(|n| n.uid == pod.uid && n.scheduling_gates.is_empty()) {
                QueueingHint::Queue
            } else {
                QueueingHint::QueueSkip
            }
        })]
    }
    fn as_pre_enqueue(self: Arc<Self>) -> Option<Arc<dyn PreEnqueuePlugin>> {
        Some(self)
    }
}

impl PreEnqueuePlugin for SchedulingGates {
    fn pre_enqueue(&self, pod: &PodInfo) -> Status {
        if pod.scheduling_gates.is_empty() {
            return Status::success();
        }
        Status::unresolvable(format!("waiting for scheduling gates: [{}]", pod.scheduling_gates.join(" ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::pod;
    use bosun_core::k8s_openapi::api::core::v1::PodSchedulingGate;

    #[test]
    fn gated_pods_are_held_and_ungated_pods_pass() {
        let gated = pod("a")
            .with(|p| {
                if let Some(s) = p.spec.as_mut() {
                    s.scheduling_gates = Some(vec![PodSchedulingGate { name: "example.com/wait".into() }]);
                }
            })
            .info();
        let s = SchedulingGates.pre_enqueue(&gated);
        assert!(s.is_rejected());
        assert_eq!(s.message(), "waiting for scheduling gates: [example.com/wait]");
        assert!(SchedulingGates.pre_enqueue(&pod("b").info()).is_success());
    }
}
