//! NodeResourcesBalancedAllocation (PreScore, Score; weight 1): prefer nodes whose CPU and memory
//! use would stay balanced: `(1 - std(fractions)) × 100`.

use crate::framework::{CycleState, Handle, MAX_NODE_SCORE, Plugin, PreScorePlugin, ScorePlugin, Status, SummaryScore};
use crate::node_info::{NodeInfo, NodeSummary};
use crate::pod_info::PodInfo;
use crate::snapshot::Snapshot;
use std::sync::Arc;

/// Balanced CPU/memory scoring.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeResourcesBalancedAllocation;

impl Plugin for NodeResourcesBalancedAllocation {
    fn name(&self) -> &'static str {
        "NodeResourcesBalancedAllocation"
    }
    fn as_pre_score(self: Arc<Self>) -> Option<Arc<dyn PreScorePlugin>> {
        Some(self)
    }
    fn as_score(self: Arc<Self>) -> Option<Arc<dyn ScorePlugin>> {
        Some(self)
    }
}

impl PreScorePlugin for NodeResourcesBalancedAllocation {
    fn pre_score(&self, _: &mut CycleState, pod: &PodInfo, _: &[&NodeInfo], _: &Snapshot, _: &Handle) -> Status {
        if pod.requests.milli_cpu == 0 && pod.requests.memory == 0 { Status::skip() } else { Status::success() }
    }
}

/// The score from CPU and memory (requested with the pod, allocatable).
fn balanced(cpu: (i64, i64), memory: (i64, i64)) -> i64 {
    let frac = |req: i64, alloc: i64| if alloc <= 0 { 0.0 } else { (req as f64 / alloc as f64).min(1.0) };
    let std = ((frac(cpu.0, cpu.1) - frac(memory.0, memory.1)) / 2.0).abs();
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

impl ScorePlugin for NodeResourcesBalancedAllocation {
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(n) = &node.node else { return Ok(0) };
        Ok(balanced(
            (node.requested.milli_cpu + pod.requests.milli_cpu, n.allocatable.milli_cpu),
            (node.requested.memory + pod.requests.memory, n.allocatable.memory),
        ))
    }

    fn summary_score<'a>(&'a self, _: &'a CycleState, pod: &'a PodInfo, _: &'a Snapshot) -> SummaryScore<'a> {
        SummaryScore::Check(Box::new(move |_, n: &NodeSummary| {
            if n.has(NodeSummary::NO_NODE) {
                return Some(0);
            }
            Some(balanced(
                (n.requested_milli_cpu + pod.requests.milli_cpu, n.alloc_milli_cpu),
                (n.requested_memory + pod.requests.memory, n.alloc_memory),
            ))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::{node, pod};

    #[test]
    fn balanced_use_scores_higher() {
        let st = CycleState::new();
        // cpu 2/4 = .5, mem 16/32 = .5 → std 0 → 100.
        let p = pod("p").req("2", "16Gi").info();
        assert_eq!(NodeResourcesBalancedAllocation.score(&st, &p, &node("a").info(&[])).ok(), Some(100));
        // cpu 2/4 = .5, mem 0 → std .25 → 75.
        let q = pod("q").req("2", "").info();
        assert_eq!(NodeResourcesBalancedAllocation.score(&st, &q, &node("a").info(&[])).ok(), Some(75));
    }
}
