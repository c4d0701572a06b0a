//! Two scheduler plugins of the kind a platform team writes, for the `scheduler_plugin` example:
//!
//! - [`Maintenance`] (Filter): nodes labelled `example.bosun.dev/maintenance=true` take only pods
//!   labelled `example.bosun.dev/maintenance-ok=true` (a drain that still lets the maintenance
//!   tooling's own pods in). Unresolvable: preempting pods would not help.
//! - [`CheapestFirst`] (Score): prefers nodes with a lower `example.bosun.dev/hourly-cost-cents`
//!   label: the cheapest node scores 100, the dearest 0, nodes without the label 0.
//!
//! [`profile`] is kube-scheduler's default profile with both added: pods still get resource
//! fit, taints, affinity and spreading; these two only add a rule and a preference.

use bosun_core::k8s_openapi::api::core::v1::{Container, Node, NodeStatus, Pod, PodSpec};
use bosun_core::k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use bosun_scheduler::framework::{
    ActionType, ClusterEventWithHint, CycleState, EventResource, FilterPlugin, MAX_NODE_SCORE, NodeScore, Plugin, ScorePlugin,
};
use bosun_scheduler::{NodeInfo, PodInfo, Profile, Status};
use std::sync::Arc;

/// The node label that puts a node under maintenance (`"true"`).
pub const MAINTENANCE: &str = "example.bosun.dev/maintenance";
/// The pod label that lets a pod onto nodes under maintenance (`"true"`).
pub const MAINTENANCE_OK: &str = "example.bosun.dev/maintenance-ok";
/// The node label with the node's hourly cost in cents.
pub const HOURLY_COST: &str = "example.bosun.dev/hourly-cost-cents";
/// Why [`Maintenance`] rejects a node (shown in the pod's `PodScheduled` condition).
pub const UNDER_MAINTENANCE: &str = "node(s) were under maintenance";

/// Keeps pods off nodes under maintenance unless they opt in.
#[derive(Debug, Clone, Copy, Default)]
pub struct Maintenance;

impl Plugin for Maintenance {
    fn name(&self) -> &'static str {
        "ExampleMaintenance"
    }

    // A node coming out of maintenance (a label change) or a new node may let a waiting pod in.
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        vec![ClusterEventWithHint::always(EventResource::Node, ActionType::ADD.or(ActionType::UPDATE_NODE_LABEL))]
    }

    fn as_filter(self: Arc<Self>) -> Option<Arc<dyn FilterPlugin>> {
        Some(self)
    }
}

impl FilterPlugin for Maintenance {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(n) = &node.node else { return Status::unresolvable("node not found") };
        let labelled = |labels: Option<&std::collections::BTreeMap<String, String>>, key: &str| {
            labels.and_then(|l| l.get(key)).is_some_and(|v| v == "true")
        };
        if !labelled(Some(n.labels()), MAINTENANCE) || labelled(pod.pod.metadata.labels.as_ref(), MAINTENANCE_OK) {
            return Status::success();
        }
        Status::unresolvable(UNDER_MAINTENANCE)
    }

    // Only the node and the pod decide: the scheduler may reuse an earlier verdict for the same pod shape.
    fn node_local(&self, _: &CycleState, _: &PodInfo) -> bool {
        true
    }
}

/// Prefers cheaper nodes.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheapestFirst;

impl Plugin for CheapestFirst {
    fn name(&self) -> &'static str {
        "ExampleCheapestFirst"
    }

    fn as_score(self: Arc<Self>) -> Option<Arc<dyn ScorePlugin>> {
        Some(self)
    }
}

/// A node's cost in cents, or `None` when it has no (valid) cost label.
fn cost(node: &NodeInfo) -> Option<i64> {
    node.node.as_ref()?.labels().get(HOURLY_COST)?.parse().ok().filter(|c: &i64| *c >= 0)
}

impl ScorePlugin for CheapestFirst {
    // The raw score is the cost itself (-1 without a label); `normalize_score` turns it around.
    fn score(&self, _: &CycleState, _: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        Ok(cost(node).unwrap_or(-1))
    }

    fn normalize_score(&self, _: &CycleState, _: &PodInfo, scores: &mut [NodeScore]) -> Status {
        let costs = scores.iter().map(|s| s.score).filter(|c| *c >= 0);
        let (Some(min), Some(max)) = (costs.clone().min(), costs.max()) else { return Status::success() };
        for s in scores.iter_mut() {
            s.score = match s.score {
                c if c < 0 => 0,
                _ if max == min => MAX_NODE_SCORE,
                c => MAX_NODE_SCORE * (max - c) / (max - min),
            };
        }
        Status::success()
    }
}

/// kube-scheduler's default profile (for pods of `default-scheduler`) with [`Maintenance`] and
/// [`CheapestFirst`] (weight 5: cost outweighs the default spreading preferences, weight 1–2).
pub fn profile() -> Profile {
    Profile::defaults(bosun_scheduler::DEFAULT_SCHEDULER_NAME).plugin(Maintenance).weighted(CheapestFirst, 5)
}

/// A node with room for 110 pods (4 CPUs, 8 GiB) and `labels`, as the example and its test create them.
pub fn node(name: &str, labels: &[(&str, &str)]) -> Node {
    let allocatable = [("cpu", "4"), ("memory", "8Gi"), ("pods", "110")].map(|(k, v)| (k.to_owned(), Quantity(v.to_owned())));
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
            ..ObjectMeta::default()
        },
        status: Some(NodeStatus {
            allocatable: Some(allocatable.clone().into_iter().collect()),
            capacity: Some(allocatable.into_iter().collect()),
            ..NodeStatus::default()
        }),
        ..Node::default()
    }
}

/// Where each pod went: its node, or the scheduler's message when it fits nowhere. Polls until
/// every pod in `names` is bound or marked unschedulable, or until `timeout`.
pub async fn placements(
    pods: &bosun_core::Api<bosun_core::k8s_openapi::api::core::v1::Pod>,
    names: &[&str],
    timeout: std::time::Duration,
) -> bosun_core::Result<std::collections::BTreeMap<String, Result<String, String>>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut out = std::collections::BTreeMap::new();
        for name in names {
            let pod = pods.get(name).await?;
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
            let refused = pod.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|cs| {
                cs.iter().find(|c| c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable"))
            });
            match (node, refused) {
                (Some(node), _) => out.insert((*name).to_owned(), Ok(node)),
                (None, Some(c)) => out.insert((*name).to_owned(), Err(c.message.clone().unwrap_or_default())),
                (None, None) => None,
            };
        }
        if out.len() == names.len() || tokio::time::Instant::now() >= deadline {
            return Ok(out);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A pod of one busybox container with `labels`, pinned to a node by `kubernetes.io/hostname` when asked.
pub fn pod(name: &str, labels: &[(&str, &str)], pinned_to: Option<&str>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container { name: "app".into(), image: Some("busybox".into()), ..Container::default() }],
            node_selector: pinned_to.map(|n| [("kubernetes.io/hostname".to_owned(), n.to_owned())].into()),
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_scheduler::framework::CycleState;

    #[test]
    fn the_cheapest_labelled_node_scores_100_the_dearest_0_unlabelled_ones_0() {
        let p = PodInfo::new(Arc::new(pod("p", &[], None)));
        let mut scores: Vec<NodeScore> = [120, 60, 35, -1].iter().enumerate().map(|(index, &score)| NodeScore { index, score }).collect();
        assert!(CheapestFirst.normalize_score(&CycleState::default(), &p, &mut scores).is_success());
        assert_eq!(scores.iter().map(|s| s.score).collect::<Vec<_>>(), [0, 70, 100, 0]);
        let mut same = vec![NodeScore { index: 0, score: 50 }, NodeScore { index: 1, score: 50 }];
        assert!(CheapestFirst.normalize_score(&CycleState::default(), &p, &mut same).is_success());
        assert_eq!(same.iter().map(|s| s.score).collect::<Vec<_>>(), [100, 100]);
    }
}
