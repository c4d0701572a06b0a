//! TaintToleration (Filter, Score; weight 3): `NoSchedule`/`NoExecute` taints must be tolerated;
//! fewer untolerated `PreferNoSchedule` taints score higher.

use crate::framework::{
    ActionType, ClusterEventWithHint, CycleState, EventResource, FilterPlugin, NodeScore, Plugin, QueueingHint, ScorePlugin, Status,
    SummaryFilter, SummaryScore,
};
use crate::node_info::{NodeInfo, NodeSummary};
use crate::pod_info::{PodInfo, tolerates};
use crate::snapshot::Snapshot;
use std::sync::Arc;

/// Filters by taints and scores by soft taints.
#[derive(Debug, Clone, Copy, Default)]
pub struct TaintToleration;

impl Plugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        vec![ClusterEventWithHint::with_hint(
            EventResource::Node,
            ActionType::ADD.or(ActionType::UPDATE_NODE_TAINT),
            |pod, _, new| match new.and_then(|n| n.node()) {
                Some(n) if untolerated(pod, &n.taints).is_none() => QueueingHint::Queue,
                _ => QueueingHint::QueueSkip,
            },
        )]
    }
    fn as_filter(self: Arc<Self>) -> Option<Arc<dyn FilterPlugin>> {
        Some(self)
    }
    fn as_score(self: Arc<Self>) -> Option<Arc<dyn ScorePlugin>> {
        Some(self)
    }
}

fn untolerated<'a>(
    pod: &PodInfo,
    taints: &'a [bosun_core::k8s_openapi::api::core::v1::Taint],
) -> Option<&'a bosun_core::k8s_openapi::api::core::v1::Taint> {
    taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !pod.tolerations.iter().any(|tol| tolerates(tol, t)))
}

impl FilterPlugin for TaintToleration {
    fn node_local(&self, _: &CycleState, _: &PodInfo) -> bool {
        true
    }

    fn summary_filter<'a>(&'a self, _: &'a CycleState, _: &'a PodInfo, _: &'a Snapshot) -> SummaryFilter<'a> {
        SummaryFilter::PassUnless(NodeSummary::HARD_TAINTS)
    }

    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        match untolerated(pod, node.taints()) {
            None => Status::success(),
            Some(t) => Status::unresolvable(format!("node(s) had untolerated taint {{{}: {}}}", t.key, t.value.as_deref().unwrap_or(""))),
        }
    }
}

impl ScorePlugin for TaintToleration {
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let soft = pod.tolerations.iter().filter(|t| t.effect.as_deref().is_none_or(|e| e.is_empty() || e == "PreferNoSchedule"));
        let soft: Vec<_> = soft.collect();
        let n =
            node.taints().iter().filter(|t| t.effect == "PreferNoSchedule").filter(|t| !soft.iter().any(|tol| tolerates(tol, t))).count();
        Ok(i64::try_from(n).unwrap_or(i64::MAX))
    }
    fn normalize_score(&self, _: &CycleState, _: &PodInfo, scores: &mut [NodeScore]) -> Status {
        super::default_normalize(scores, true);
        Status::success()
    }
    fn summary_score<'a>(&'a self, _: &'a CycleState, _: &'a PodInfo, _: &'a Snapshot) -> SummaryScore<'a> {
        SummaryScore::ZeroUnless(NodeSummary::SOFT_TAINTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::plugins::testutil::{node, pod};

    #[test]
    fn hard_taints_need_a_toleration_and_report_the_taint() {
        let n = node("n").taint("dedicated", "gpu", "NoSchedule").info(&[]);
        let s = TaintToleration.filter(&CycleState::new(), &pod("p").info(), &n);
        assert_eq!(s.code(), Code::UnschedulableAndUnresolvable);
        assert_eq!(s.message(), "node(s) had untolerated taint {dedicated: gpu}");
        let ok = pod("q").toleration("dedicated", "gpu", "NoSchedule").info();
        assert!(TaintToleration.filter(&CycleState::new(), &ok, &n).is_success());
        let wrong_value = pod("r").toleration("dedicated", "cpu", "NoSchedule").info();
        assert!(!TaintToleration.filter(&CycleState::new(), &wrong_value, &n).is_success());
    }

    #[test]
    fn soft_taints_lower_the_score() {
        let clean = node("a").info(&[]);
        let soft = node("b").taint("x", "y", "PreferNoSchedule").info(&[]);
        let p = pod("p").info();
        let st = CycleState::new();
        let mut scores = vec![
            NodeScore { index: 0, score: TaintToleration.score(&st, &p, &clean).unwrap_or(-1) },
            NodeScore { index: 1, score: TaintToleration.score(&st, &p, &soft).unwrap_or(-1) },
        ];
        TaintToleration.normalize_score(&st, &p, &mut scores);
        assert_eq!(scores[0].score, 100);
        assert_eq!(scores[1].score, 0);
    }
}
