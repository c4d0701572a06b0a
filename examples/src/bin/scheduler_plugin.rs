//! A custom scheduler plugin in a few lines: `TeamNodes` keeps a team's pods on its own nodes
//! (Filter) and spreads them over those nodes (Score), in a second profile `team-scheduler`
//! next to the default one. Runs against an in-process API server:
//! `cargo run -p bosun-examples --bin scheduler_plugin`.

use bosun_core::k8s_openapi::api::core::v1::{Container, Node, NodeStatus, Pod, PodSpec};
use bosun_core::k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use bosun_core::{Api, Client, ListParams, PostParams};
use bosun_scheduler::framework::{
    ActionType, ClusterEventWithHint, CycleState, EventResource, FilterPlugin, NodeScore, Plugin, QueueingHint, ScorePlugin, Status,
};
use bosun_scheduler::{NodeInfo, PodInfo, Profile, Scheduler};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const TEAM: &str = "example.com/team";

/// Pods labelled with a team run only on nodes of that team, spread evenly.
struct TeamNodes;

impl Plugin for TeamNodes {
    fn name(&self) -> &'static str {
        "TeamNodes"
    }
    // Only a node (re)labelled for the pod's team can make a rejected pod fit.
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        vec![ClusterEventWithHint::with_hint(EventResource::Node, ActionType::ADD.or(ActionType::UPDATE_NODE_LABEL), |pod, _, new| {
            let team = pod.labels().get(TEAM);
            match new.and_then(|n| n.node()) {
                Some(n) if n.labels().get(TEAM) == team => QueueingHint::Queue,
                _ => QueueingHint::QueueSkip,
            }
        })]
    }
    fn as_filter(self: Arc<Self>) -> Option<Arc<dyn FilterPlugin>> {
        Some(self)
    }
    fn as_score(self: Arc<Self>) -> Option<Arc<dyn ScorePlugin>> {
        Some(self)
    }
}

impl FilterPlugin for TeamNodes {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        match pod.labels().get(TEAM) {
            Some(team) if node.labels().get(TEAM) != Some(team) => Status::unresolvable("node(s) belong to another team"),
            _ => Status::success(),
        }
    }
}

impl ScorePlugin for TeamNodes {
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let team = pod.labels().get(TEAM);
        Ok(node.pods.iter().filter(|p| p.labels().get(TEAM) == team).count() as i64)
    }
    // Fewer team pods is better: reverse onto 0..=100.
    fn normalize_score(&self, _: &CycleState, _: &PodInfo, scores: &mut [NodeScore]) -> Status {
        let max = scores.iter().map(|s| s.score).max().unwrap_or(0).max(1);
        for s in scores.iter_mut() {
            s.score = 100 - s.score * 100 / max;
        }
        Status::success()
    }
}

fn node(name: &str, team: &str) -> Node {
    let mut n = Node::default();
    n.metadata.name = Some(name.into());
    n.metadata.labels = Some(BTreeMap::from([(TEAM.to_owned(), team.to_owned())]));
    let alloc = BTreeMap::from([
        ("cpu".to_owned(), Quantity("4".into())),
        ("memory".to_owned(), Quantity("8Gi".into())),
        ("pods".to_owned(), Quantity("110".into())),
    ]);
    n.status = Some(NodeStatus { allocatable: Some(alloc), ..Default::default() });
    n
}

fn pod(name: &str, team: &str) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = Some(name.into());
    p.metadata.labels = Some(BTreeMap::from([(TEAM.to_owned(), team.to_owned())]));
    p.spec = Some(PodSpec {
        scheduler_name: Some("team-scheduler".into()),
        containers: vec![Container { name: "app".into(), image: Some("nginx".into()), ..Default::default() }],
        ..Default::default()
    });
    p
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client: Arc<dyn Client> = bosun_store::ApiServer::in_memory();
    let nodes = Api::<Node>::all(client.clone());
    for (name, team) in [("red-1", "red"), ("red-2", "red"), ("blue-1", "blue")] {
        nodes.create(&node(name, team), &PostParams::default()).await?;
    }
    // The default profile plus one with the custom plugin on top of the defaults.
    let scheduler = Scheduler::builder(client.clone())
        .profile(Profile::defaults("default-scheduler"))
        .profile(Profile::defaults("team-scheduler").weighted(TeamNodes, 5))
        .build()?;
    let running = scheduler.start().await;
    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    for i in 0..4 {
        pods.create(&pod(&format!("red-app-{i}"), "red"), &PostParams::default()).await?;
    }
    pods.create(&pod("blue-app", "blue"), &PostParams::default()).await?;
    tokio::time::timeout(Duration::from_secs(10), scheduler.wait_scheduled(5)).await?;
    for p in pods.list(&ListParams::default()).await?.items {
        let node = p.spec.and_then(|s| s.node_name).unwrap_or_default();
        println!("{} -> {node}", p.metadata.name.unwrap_or_default());
    }
    running.stop();
    Ok(())
}
