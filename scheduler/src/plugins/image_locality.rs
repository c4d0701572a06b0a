//! ImageLocality (PreScore, Score; weight 1): prefer nodes that already have the pod's images,
//! weighted by image size and by how widely the image is spread (to avoid piling onto one node).

use crate::framework::{CycleState, Handle, MAX_NODE_SCORE, Plugin, PreScorePlugin, ScorePlugin, Status, SummaryScore};
use crate::node_info::{NodeInfo, NodeSummary};
use crate::pod_info::PodInfo;
use crate::snapshot::Snapshot;
use std::collections::HashMap;
use std::sync::Arc;

const MB: i64 = 1024 * 1024;
const MIN_THRESHOLD: i64 = 23 * MB;
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

/// Image presence scoring.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImageLocality;

#[derive(Debug, Clone)]
struct ImageState {
    total_nodes: usize,
    spread: HashMap<String, usize>,
}

impl Plugin for ImageLocality {
    fn name(&self) -> &'static str {
        "ImageLocality"
    }
    fn as_pre_score(self: Arc<Self>) -> Option<Arc<dyn PreScorePlugin>> {
        Some(self)
    }
    fn as_score(self: Arc<Self>) -> Option<Arc<dyn ScorePlugin>> {
        Some(self)
    }
}

impl PreScorePlugin for ImageLocality {
    fn pre_score(&self, state: &mut CycleState, pod: &PodInfo, _: &[&NodeInfo], snapshot: &Snapshot, _: &Handle) -> Status {
        let spread: HashMap<String, usize> =
            pod.images.iter().map(|i| (i.clone(), snapshot.image_node_count(i))).filter(|(_, n)| *n > 0).collect();
        if spread.is_empty() {
            return Status::skip();
        }
        state.insert(ImageState { total_nodes: snapshot.len(), spread });
        Status::success()
    }
}

impl ScorePlugin for ImageLocality {
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(st) = state.get::<ImageState>() else { return Ok(0) };
        let Some(n) = &node.node else { return Ok(0) };
        let mut sum = 0i64;
        let mut seen: Vec<&str> = Vec::new();
        for img in &pod.images {
            if seen.contains(&img.as_str()) {
                continue;
            }
            seen.push(img);
            if let (Some(size), Some(count)) = (n.images.get(img), st.spread.get(img)) {
                sum += (*size as f64 * (*count as f64 / st.total_nodes.max(1) as f64)) as i64;
            }
        }
        let max = MAX_CONTAINER_THRESHOLD * i64::try_from(pod.images.len().max(1)).unwrap_or(1);
        let sum = sum.clamp(MIN_THRESHOLD, max);
        Ok(MAX_NODE_SCORE * (sum - MIN_THRESHOLD) / (max - MIN_THRESHOLD))
    }

    fn summary_score<'a>(&'a self, _: &'a CycleState, _: &'a PodInfo, _: &'a Snapshot) -> SummaryScore<'a> {
        // A node without images sums nothing: the lowest score.
        SummaryScore::ZeroUnless(NodeSummary::IMAGES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::{node, pod};
    use bosun_core::k8s_openapi::api::core::v1::ContainerImage;

    #[test]
    fn nodes_with_the_image_score_higher() {
        let with = node("a")
            .with(|n| {
                if let Some(s) = n.status.as_mut() {
                    s.images =
                        Some(vec![ContainerImage { names: Some(vec!["docker.io/library/big:1".into()]), size_bytes: Some(800 * MB) }]);
                }
            })
            .info(&[]);
        let without = node("b").info(&[]);
        let snap = Snapshot::from_nodes(vec![with.clone(), without.clone()]);
        let p = pod("p").image("big:1").info();
        let mut st = CycleState::new();
        assert!(ImageLocality.pre_score(&mut st, &p, &[], &snap, &Handle::default()).is_success());
        let a = ImageLocality.score(&st, &p, &with).unwrap_or(-1);
        let b = ImageLocality.score(&st, &p, &without).unwrap_or(-1);
        // 800 MiB × 1/2 spread = 400 MiB → (400-23)/(1000-23) × 100 = 38.
        assert_eq!((a, b), (38, 0));
    }
}
