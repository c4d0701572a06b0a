//! NodeAffinity (PreFilter, Filter, PreScore, Score; weight 2): `nodeSelector` and required node
//! affinity filter; preferred terms score by summed weight. Terms pinning `metadata.name` narrow
//! the nodes in PreFilter.

use crate::framework::{
    ActionType, ClusterEventWithHint, CycleState, EventResource, FilterPlugin, Handle, NodeScore, Plugin, PreFilterPlugin, PreFilterResult,
    PreScorePlugin, QueueingHint, ScorePlugin, Status, SummaryFilter,
};
use crate::node_info::NodeInfo;
use crate::pod_info::PodInfo;
use crate::snapshot::Snapshot;
use std::sync::Arc;

/// The reason nodes that do not match give.
pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";

/// Node selectors and node affinity.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeAffinity;

impl Plugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        vec![ClusterEventWithHint::with_hint(
            EventResource::Node,
            ActionType::ADD.or(ActionType::UPDATE_NODE_LABEL),
            |pod, _, new| match new.and_then(|n| n.node()) {
                Some(n) if pod.required_node_affinity.matches(n.labels(), &n.name) => QueueingHint::Queue,
                _ => QueueingHint::QueueSkip,
            },
        )]
    }
    fn as_pre_filter(self: Arc<Self>) -> Option<Arc<dyn PreFilterPlugin>> {
        Some(self)
    }
    fn as_filter(self: Arc<Self>) -> Option<Arc<dyn FilterPlugin>> {
        Some(self)
    }
    fn as_pre_score(self: Arc<Self>) -> Option<Arc<dyn PreScorePlugin>> {
        Some(self)
    }
    fn as_score(self: Arc<Self>) -> Option<Arc<dyn ScorePlugin>> {
        Some(self)
    }
}

impl PreFilterPlugin for NodeAffinity {
    fn pre_filter(&self, _: &mut CycleState, pod: &PodInfo, _: &Snapshot, _: &Handle) -> (Option<PreFilterResult>, Status) {
        if pod.required_node_affinity.is_empty() {
            return (None, Status::skip());
        }
        match pod.required_node_affinity.node_names() {
            Some(names) if names.is_empty() => (None, Status::unresolvable(REASON)),
            Some(names) => (Some(names.into_iter().collect()), Status::success()),
            None => (None, Status::success()),
        }
    }
}

impl FilterPlugin for NodeAffinity {
    fn node_local(&self, _: &CycleState, _: &PodInfo) -> bool {
        true
    }

    fn summary_filter<'a>(&'a self, _: &'a CycleState, pod: &'a PodInfo, _: &'a Snapshot) -> SummaryFilter<'a> {
        if pod.required_node_affinity.is_empty() { SummaryFilter::Pass } else { SummaryFilter::Full }
    }

    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if pod.required_node_affinity.matches(node.labels(), &node.name) { Status::success() } else { Status::unresolvable(REASON) }
    }
}

impl PreScorePlugin for NodeAffinity {
    fn pre_score(&self, _: &mut CycleState, pod: &PodInfo, _: &[&NodeInfo], _: &Snapshot, _: &Handle) -> Status {
        if pod.preferred_node_affinity.is_empty() { Status::skip() } else { Status::success() }
    }
}

impl ScorePlugin for NodeAffinity {
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        Ok(pod.preferred_node_affinity.iter().filter(|(_, t)| t.matches(node.labels(), &node.name)).map(|(w, _)| *w).sum())
    }
    fn normalize_score(&self, _: &CycleState, _: &PodInfo, scores: &mut [NodeScore]) -> Status {
        super::default_normalize(scores, false);
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::{filter_all, node, passing, pod};
    use bosun_core::k8s_openapi::api::core::v1::{
        NodeAffinity as ApiNodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PreferredSchedulingTerm,
    };

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()).filter(|v: &Vec<String>| !v.is_empty()),
        }
    }

    fn with_required(terms: Vec<NodeSelectorTerm>) -> crate::plugins::testutil::PodBuilder {
        pod("p").with(|p| {
            if let Some(s) = p.spec.as_mut() {
                s.affinity = Some(bosun_core::k8s_openapi::api::core::v1::Affinity {
                    node_affinity: Some(ApiNodeAffinity {
                        required_during_scheduling_ignored_during_execution: Some(NodeSelector { node_selector_terms: terms }),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
        })
    }

    fn snap() -> Snapshot {
        Snapshot::from_nodes(vec![
            node("a").label("zone", "z1").label("gen", "3").info(&[]),
            node("b").label("zone", "z2").label("gen", "5").info(&[]),
            node("c").info(&[]),
        ])
    }

    #[test]
    fn node_selector_and_required_terms_both_apply() {
        let p = pod("p").node_selector(&[("zone", "z1")]).info();
        assert_eq!(passing(&filter_all(&NodeAffinity, &p, &snap())), ["a"]);
        let r = filter_all(&NodeAffinity, &p, &snap());
        assert_eq!(r[1].1.message(), REASON);
    }

    #[test]
    fn terms_are_ored_and_expressions_anded_with_gt_and_does_not_exist() {
        let p = with_required(vec![
            NodeSelectorTerm { match_expressions: Some(vec![req("gen", "Gt", &["4"])]), match_fields: None },
            NodeSelectorTerm { match_expressions: Some(vec![req("zone", "DoesNotExist", &[])]), match_fields: None },
        ])
        .info();
        assert_eq!(passing(&filter_all(&NodeAffinity, &p, &snap())), ["b", "c"]);
        // An empty term matches nothing.
        let none = with_required(vec![NodeSelectorTerm::default()]).info();
        assert!(passing(&filter_all(&NodeAffinity, &none, &snap())).is_empty());
    }

    #[test]
    fn metadata_name_fields_narrow_the_nodes_in_pre_filter() {
        let p =
            with_required(vec![NodeSelectorTerm { match_expressions: None, match_fields: Some(vec![req("metadata.name", "In", &["b"])]) }])
                .info();
        let (r, s) = NodeAffinity.pre_filter(&mut CycleState::new(), &p, &snap(), &Handle::default());
        assert!(s.is_success());
        assert_eq!(r.map(|r| r.into_iter().collect::<Vec<_>>()), Some(vec!["b".to_owned()]));
    }

    #[test]
    fn preferred_terms_score_by_weight() {
        let p = pod("p")
            .with(|p| {
                if let Some(s) = p.spec.as_mut() {
                    s.affinity = Some(bosun_core::k8s_openapi::api::core::v1::Affinity {
                        node_affinity: Some(ApiNodeAffinity {
                            preferred_during_scheduling_ignored_during_execution: Some(vec![
                                PreferredSchedulingTerm {
                                    weight: 10,
                                    preference: NodeSelectorTerm {
                                        match_expressions: Some(vec![req("zone", "In", &["z1"])]),
                                        match_fields: None,
                                    },
                                },
                                PreferredSchedulingTerm {
                                    weight: 5,
                                    preference: NodeSelectorTerm {
                                        match_expressions: Some(vec![req("gen", "Exists", &[])]),
                                        match_fields: None,
                                    },
                                },
                            ]),
                            ..Default::default()
                        }),
                        ..Default::default()
                    });
                }
            })
            .info();
        let s = snap();
        let st = CycleState::new();
        let mut scores: Vec<NodeScore> = s
            .nodes()
            .iter()
            .enumerate()
            .map(|(i, n)| NodeScore { index: i, score: NodeAffinity.score(&st, &p, n).unwrap_or(-1) })
            .collect();
        NodeAffinity.normalize_score(&st, &p, &mut scores);
        let by_name: Vec<(String, i64)> = scores.iter().map(|x| (s.nodes()[x.index].name.to_string(), x.score)).collect();
        assert!(by_name.contains(&("a".into(), 100)));
        assert!(by_name.contains(&("b".into(), 33)));
        assert!(by_name.contains(&("c".into(), 0)));
    }
}
