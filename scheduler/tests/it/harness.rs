//! Builders shared by the integration tests and the benchmark: nodes of 4 CPU / 32 Gi and pods
//! of 100m / 500Mi, as kube-scheduler's scheduler_perf uses.
#![allow(dead_code)]

use bosun_core::k8s_openapi::api::core::v1::{Container, Node, NodeStatus, Pod, PodSpec, ResourceRequirements};
use bosun_core::k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use bosun_core::{Api, Client, PostParams};
use std::collections::BTreeMap;
use std::sync::Arc;

/// An in-process API server (the store's, over memory).
pub fn api_server() -> Arc<dyn Client> {
    bosun_store::ApiServer::in_memory()
}

/// A node of 4 CPU / 32 Gi / 110 pods in a zone.
pub fn node(name: &str, zone: &str) -> Node {
    let mut n = Node::default();
    n.metadata.name = Some(name.into());
    let mut labels = BTreeMap::new();
    labels.insert("kubernetes.io/hostname".to_owned(), name.to_owned());
    labels.insert("topology.kubernetes.io/zone".to_owned(), zone.to_owned());
    n.metadata.labels = Some(labels);
    let mut alloc = BTreeMap::new();
    alloc.insert("cpu".to_owned(), Quantity("4".into()));
    alloc.insert("memory".to_owned(), Quantity("32Gi".into()));
    alloc.insert("pods".to_owned(), Quantity("110".into()));
    n.status = Some(NodeStatus { allocatable: Some(alloc.clone()), capacity: Some(alloc), ..Default::default() });
    n
}

/// A pod requesting `cpu` and `mem`.
pub fn pod(name: &str, cpu: &str, mem: &str) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = Some(name.into());
    p.metadata.namespace = Some("default".into());
    let mut req = BTreeMap::new();
    req.insert("cpu".to_owned(), Quantity(cpu.into()));
    req.insert("memory".to_owned(), Quantity(mem.into()));
    p.spec = Some(PodSpec {
        containers: vec![Container {
            name: "pause".into(),
            image: Some("registry.k8s.io/pause:3.10".into()),
            resources: Some(ResourceRequirements { requests: Some(req), ..Default::default() }),
            ..Default::default()
        }],
        ..Default::default()
    });
    p
}

/// Creates nodes `prefix-0..n` across `zones` zones.
pub async fn create_nodes(client: &Arc<dyn Client>, prefix: &str, n: usize, zones: usize) -> bosun_core::Result<()> {
    let api = Api::<Node>::all(client.clone());
    for i in 0..n {
        api.create(&node(&format!("{prefix}-{i}"), &format!("zone-{}", i % zones.max(1))), &PostParams::default()).await?;
    }
    Ok(())
}

/// Creates pods concurrently (up to `parallel` requests in flight).
pub async fn create_pods(client: &Arc<dyn Client>, pods: Vec<Pod>, parallel: usize) -> bosun_core::Result<()> {
    use futures::StreamExt;
    let api = Api::<Pod>::namespaced(client.clone(), "default");
    let results: Vec<bosun_core::Result<Pod>> = futures::stream::iter(pods)
        .map(|p| {
            let api = api.clone();
            async move { api.create(&p, &PostParams::default()).await }
        })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    results.into_iter().try_for_each(|r| r.map(drop))
}
