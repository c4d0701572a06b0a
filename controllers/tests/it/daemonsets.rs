//! The DaemonSet controller.

use crate::support::*;
use bosun_controllers::builtin::{pod_is_active, pod_is_ready};
use bosun_core::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec};
use k8s_openapi::api::core::v1::{Node, NodeSpec, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

type Res = Result<(), Box<dyn std::error::Error>>;

fn node(name: &str, labels: &[(&str, &str)], taints: Vec<Taint>) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec { taints: Some(taints), ..NodeSpec::default() }),
        status: None,
    }
}

fn taint(key: &str, effect: &str) -> Taint {
    Taint { key: key.into(), effect: effect.into(), value: None, time_added: None }
}

fn daemonset(name: &str) -> DaemonSet {
    let mut template = template(name, "agent:1");
    if let Some(spec) = template.spec.as_mut() {
        spec.node_selector = Some([("disk".to_owned(), "ssd".to_owned())].into());
    }
    DaemonSet {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some("default".into()), ..ObjectMeta::default() },
        spec: DaemonSetSpec {
            selector: LabelSelector { match_labels: Some(labels(name)), ..LabelSelector::default() },
            template,
            ..DaemonSetSpec::default()
        },
        status: None,
    }
}

/// Active pods by node, with their images.
async fn placement(api: &Api<Pod>) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in api.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default().into_iter().filter(pod_is_active) {
        let spec = p.spec.unwrap_or_default();
        let image = spec.containers.first().and_then(|c| c.image.clone()).unwrap_or_default();
        out.entry(spec.node_name.unwrap_or_default()).or_default().push(image);
    }
    out
}

fn on(nodes: &[(&str, &str)]) -> BTreeMap<String, Vec<String>> {
    nodes.iter().map(|(n, i)| ((*n).to_owned(), vec![(*i).to_owned()])).collect()
}

#[tokio::test(start_paused = true)]
async fn a_daemonset_runs_one_pod_per_eligible_node_and_follows_the_nodes() -> Res {
    let h = harness(&["daemonset"]);
    let nodes = Api::<Node>::all(h.client());
    let sets = Api::<DaemonSet>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    let pp = PostParams::default();
    nodes.create(&node("a", &[("disk", "ssd")], vec![]), &pp).await?;
    nodes.create(&node("b", &[("disk", "ssd")], vec![taint("dedicated", "NoSchedule")]), &pp).await?;
    nodes.create(&node("c", &[], vec![]), &pp).await?;
    nodes.create(&node("d", &[("disk", "ssd")], vec![taint("node.kubernetes.io/unreachable", "NoExecute")]), &pp).await?;
    sets.create(&daemonset("agent"), &pp).await?;
    h.run_until_quiescent().await?;
    // b's taint is not tolerated, c lacks the label; d's unreachable taint is a standard toleration.
    assert_eq!(placement(&pods).await, on(&[("a", "agent:1"), ("d", "agent:1")]));
    let ds = sets.get("agent").await?;
    let s = ds.status.clone().unwrap_or_default();
    assert_eq!(
        (s.desired_number_scheduled, s.current_number_scheduled, s.number_ready, s.updated_number_scheduled, s.number_available),
        (2, 2, 2, Some(2), Some(2))
    );
    assert_eq!(s.observed_generation, ds.metadata.generation);

    // A node that becomes eligible gets a pod; a removed node's pod goes.
    nodes.patch("c", &Patch::Merge(serde_json::json!({"metadata": {"labels": {"disk": "ssd"}}})), &PatchParams::default()).await?;
    nodes.delete("a", &DeleteParams::default()).await?;
    h.run_until_quiescent().await?;
    assert_eq!(placement(&pods).await, on(&[("c", "agent:1"), ("d", "agent:1")]));
    // A node that loses the label loses its pod.
    nodes.patch("d", &Patch::Merge(serde_json::json!({"metadata": {"labels": {"disk": "hdd"}}})), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    assert_eq!(placement(&pods).await, on(&[("c", "agent:1")]));

    // A deleted pod is replaced on its node.
    let list = pods.list(&ListParams::default()).await?.items;
    let name = list.first().and_then(|p| p.metadata.name.clone()).unwrap_or_default();
    pods.delete(&name, &DeleteParams::default()).await?;
    h.run_until_quiescent().await?;
    assert_eq!(placement(&pods).await, on(&[("c", "agent:1")]));
    assert!(pods.get_opt(&name).await?.is_none());
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_daemonset_rolls_out_a_new_template_node_by_node() -> Res {
    let h = harness(&["daemonset"]);
    let nodes = Api::<Node>::all(h.client());
    let sets = Api::<DaemonSet>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    let pp = PostParams::default();
    for n in ["n1", "n2", "n3", "n4"] {
        nodes.create(&node(n, &[("disk", "ssd")], vec![]), &pp).await?;
    }
    sets.create(&daemonset("agent"), &pp).await?;
    h.run_until_quiescent().await?;
    assert_eq!(placement(&pods).await.len(), 4);
    // Watch availability through the rollout (default maxUnavailable 1: never fewer than 3 ready).
    let informer = h.informers().all::<Pod>();
    informer.wait_ready().await;
    let min_ready = Arc::new(AtomicUsize::new(usize::MAX));
    let store = informer.store().clone();
    let mut changes = informer.subscribe();
    let mr = min_ready.clone();
    let _monitor = tokio::spawn(async move {
        loop {
            let ready = store.list().iter().filter(|p| pod_is_active(p) && pod_is_ready(p)).count();
            mr.fetch_min(ready, Ordering::SeqCst);
            if changes.next().await.is_none() {
                break;
            }
        }
    });
    let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "agent:2"}]}}}});
    sets.patch("agent", &Patch::Strategic(patch), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    assert_eq!(placement(&pods).await, on(&[("n1", "agent:2"), ("n2", "agent:2"), ("n3", "agent:2"), ("n4", "agent:2")]));
    let low = min_ready.load(Ordering::SeqCst);
    assert_eq!(low, 3, "one node at a time within maxUnavailable 1 (lowest ready count {low})");
    let ds = sets.get("agent").await?;
    let s = ds.status.clone().unwrap_or_default();
    assert_eq!((s.desired_number_scheduled, s.updated_number_scheduled, s.number_available), (4, Some(4), Some(4)));
    assert_eq!(s.observed_generation, ds.metadata.generation);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_daemonset_with_max_surge_starts_the_new_pod_before_removing_the_old() -> Res {
    let h = harness(&["daemonset"]);
    let nodes = Api::<Node>::all(h.client());
    let sets = Api::<DaemonSet>::namespaced(h.client(), "default");
    let pods = Api::<Pod>::namespaced(h.client(), "default");
    let pp = PostParams::default();
    for n in ["n1", "n2", "n3", "n4"] {
        nodes.create(&node(n, &[("disk", "ssd")], vec![]), &pp).await?;
    }
    let mut ds = daemonset("agent");
    ds.spec.update_strategy = Some(serde_json::from_value(serde_json::json!(
        {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    ))?);
    sets.create(&ds, &pp).await?;
    h.run_until_quiescent().await?;
    assert_eq!(placement(&pods).await.len(), 4);
    // Through the rollout every node keeps a ready pod, and at most one node runs two pods.
    let informer = h.informers().all::<Pod>();
    informer.wait_ready().await;
    let (min_ready, max_pods) = (Arc::new(AtomicUsize::new(usize::MAX)), Arc::new(AtomicUsize::new(0)));
    let store = informer.store().clone();
    let mut changes = informer.subscribe();
    let (mr, mp) = (min_ready.clone(), max_pods.clone());
    let _monitor = tokio::spawn(async move {
        loop {
            let active: Vec<_> = store.list().into_iter().filter(|p| pod_is_active(p)).collect();
            let ready_nodes: std::collections::BTreeSet<_> =
                active.iter().filter(|p| pod_is_ready(p)).filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone())).collect();
            mr.fetch_min(ready_nodes.len(), Ordering::SeqCst);
            mp.fetch_max(active.len(), Ordering::SeqCst);
            if changes.next().await.is_none() {
                break;
            }
        }
    });
    let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "agent:2"}]}}}});
    sets.patch("agent", &Patch::Strategic(patch), &PatchParams::default()).await?;
    h.run_until_quiescent().await?;
    assert_eq!(placement(&pods).await, on(&[("n1", "agent:2"), ("n2", "agent:2"), ("n3", "agent:2"), ("n4", "agent:2")]));
    assert_eq!(min_ready.load(Ordering::SeqCst), 4, "maxUnavailable 0: every node always had a ready pod");
    assert_eq!(max_pods.load(Ordering::SeqCst), 5, "maxSurge 1: exactly one extra pod at a time");
    let s = sets.get("agent").await?.status.unwrap_or_default();
    assert_eq!((s.desired_number_scheduled, s.updated_number_scheduled, s.number_available), (4, Some(4), Some(4)));
    Ok(())
}
