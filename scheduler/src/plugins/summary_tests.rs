//! The summary fast paths answer exactly what `filter` and `score` answer: every default plugin,
//! on a mix of nodes (cordoned, tainted, full, with ports, extended resources, images, pods with
//! anti-affinity, without a zone) for a mix of pods.

use crate::framework::{CycleState, Handle, SummaryFilter, SummaryScore};
use crate::node_info::NodeInfo;
use crate::plugins::testutil::{node, pod};
use crate::pod_info::PodInfo;
use crate::snapshot::Snapshot;
use bosun_core::k8s_openapi::api::core::v1::ContainerImage;
use std::sync::Arc;

fn nodes() -> Vec<NodeInfo> {
    let green = |n: &str, i: usize| pod(&format!("g{n}{i}")).labels(&[("color", "green")]).req("100m", "500Mi").node(n).info();
    let blue_repeller = |n: &str| {
        pod(&format!("r{n}")).labels(&[("app", "r")]).anti_affinity(&[("color", "blue")], "kubernetes.io/hostname").node(n).info()
    };
    let zone_repeller = |n: &str| {
        pod(&format!("z{n}")).labels(&[("app", "z")]).anti_affinity(&[("color", "red")], "topology.kubernetes.io/zone").node(n).info()
    };
    vec![
        node("plain").label("topology.kubernetes.io/zone", "a").info(&[]),
        node("greens").label("topology.kubernetes.io/zone", "a").info(&[green("greens", 0), green("greens", 1)]),
        node("one-green").label("topology.kubernetes.io/zone", "b").info(&[green("one-green", 0)]),
        node("cordoned").label("topology.kubernetes.io/zone", "b").unschedulable().info(&[]),
        node("hard").label("topology.kubernetes.io/zone", "c").taint("dedicated", "gpu", "NoSchedule").info(&[]),
        node("soft").label("topology.kubernetes.io/zone", "c").taint("spot", "yes", "PreferNoSchedule").info(&[]),
        node("full").label("topology.kubernetes.io/zone", "a").info(&[pod("big").req("3900m", "31Gi").node("full").info()]),
        node("two-pods")
            .label("topology.kubernetes.io/zone", "b")
            .alloc("pods", "2")
            .info(&[pod("x1").node("two-pods").info(), pod("x2").node("two-pods").info()]),
        node("ports").label("topology.kubernetes.io/zone", "a").info(&[pod("web").host_port(8080).node("ports").info()]),
        node("gpu").label("topology.kubernetes.io/zone", "b").alloc("example.com/gpu", "2").info(&[]),
        node("zoneless").info(&[]),
        node("images")
            .label("topology.kubernetes.io/zone", "c")
            .with(|n| {
                if let Some(s) = n.status.as_mut() {
                    s.images = Some(vec![ContainerImage {
                        names: Some(vec!["docker.io/library/big:1".into()]),
                        size_bytes: Some(800 * 1024 * 1024),
                    }]);
                }
            })
            .info(&[]),
        node("repels-blue").label("topology.kubernetes.io/zone", "a").info(&[blue_repeller("repels-blue")]),
        node("repels-red").label("topology.kubernetes.io/zone", "c").info(&[zone_repeller("repels-red")]),
        node("small").label("topology.kubernetes.io/zone", "c").alloc("cpu", "500m").alloc("ephemeral-storage", "1Gi").info(&[]),
    ]
}

fn pods() -> Vec<Arc<PodInfo>> {
    vec![
        pod("basic").req("100m", "500Mi").image("registry.k8s.io/pause:3.10").info(),
        pod("none").info(),
        pod("large").req("3", "20Gi").info(),
        pod("storage")
            .req("100m", "500Mi")
            .with(|p| {
                if let Some(s) = p.spec.as_mut()
                    && let Some(r) = s.containers[0].resources.as_mut()
                    && let Some(req) = r.requests.as_mut()
                {
                    req.insert(
                        "ephemeral-storage".into(),
                        bosun_core::k8s_openapi::apimachinery::pkg::api::resource::Quantity("2Gi".into()),
                    );
                }
            })
            .info(),
        pod("tolerant")
            .req("100m", "500Mi")
            .toleration("dedicated", "gpu", "NoSchedule")
            .toleration("spot", "yes", "PreferNoSchedule")
            .info(),
        pod("port").host_port(8080).info(),
        pod("gpu").req("100m", "500Mi").extended("example.com/gpu", "1").info(),
        pod("spread").labels(&[("color", "green")]).spread(1, "topology.kubernetes.io/zone", true, &[("color", "green")]).info(),
        pod("spread-host").labels(&[("color", "green")]).spread(1, "kubernetes.io/hostname", true, &[("color", "green")]).info(),
        pod("anti").labels(&[("color", "green")]).anti_affinity(&[("color", "green")], "kubernetes.io/hostname").info(),
        pod("blue").labels(&[("color", "blue")]).req("100m", "500Mi").info(),
        pod("red").labels(&[("color", "red")]).info(),
        pod("zone-anti").labels(&[("color", "green")]).anti_affinity(&[("color", "green")], "topology.kubernetes.io/zone").info(),
        pod("selector").node_selector(&[("topology.kubernetes.io/zone", "a")]).info(),
        pod("image").image("big:1").info(),
    ]
}

#[test]
fn summary_verdicts_and_scores_equal_the_plugins_own() {
    let snapshot = Snapshot::from_nodes(nodes());
    let handle = Handle::default();
    let plugins = crate::plugins::default_plugins();
    let mut checked = (0, 0);
    for p in pods() {
        let mut state = CycleState::new();
        let mut skipped = Vec::new();
        for (plugin, _) in &plugins {
            if let Some(pf) = plugin.clone().as_pre_filter() {
                let (_, s) = pf.pre_filter(&mut state, &p, &snapshot, &handle);
                if s.is_skip() {
                    skipped.push(plugin.name());
                }
            }
        }
        for (plugin, _) in &plugins {
            let Some(f) = plugin.clone().as_filter() else { continue };
            if skipped.contains(&plugin.name()) {
                continue;
            }
            let rule = f.summary_filter(&state, &p, &snapshot);
            for (idx, n) in snapshot.nodes().iter().enumerate() {
                if state.excluded(idx).is_some() {
                    continue;
                }
                let want = f.filter(&state, &p, n);
                let summary = &snapshot.summaries()[idx];
                let got = match &rule {
                    SummaryFilter::Full => None,
                    SummaryFilter::Pass => Some(crate::framework::Status::success()),
                    SummaryFilter::PassUnless(flags) => (!summary.has(*flags)).then(crate::framework::Status::success),
                    SummaryFilter::Check(c) => c(idx, summary),
                };
                if let Some(got) = got {
                    checked.0 += 1;
                    assert_eq!(got, want, "{} filter of pod {} on node {}", plugin.name(), p.name, n.name);
                }
            }
        }
        let all: Vec<&NodeInfo> = snapshot.nodes().iter().map(|n| &**n).collect();
        let mut score_skipped = Vec::new();
        for (plugin, _) in &plugins {
            if let Some(ps) = plugin.clone().as_pre_score()
                && ps.pre_score(&mut state, &p, &all, &snapshot, &handle).is_skip()
            {
                score_skipped.push(plugin.name());
            }
        }
        for (plugin, _) in &plugins {
            let Some(sp) = plugin.clone().as_score() else { continue };
            if score_skipped.contains(&plugin.name()) {
                continue;
            }
            let rule = sp.summary_score(&state, &p, &snapshot);
            for (idx, n) in snapshot.nodes().iter().enumerate() {
                let want = sp.score(&state, &p, n).ok();
                let summary = &snapshot.summaries()[idx];
                let got = match &rule {
                    SummaryScore::Full => None,
                    SummaryScore::ZeroUnless(flags) => (!summary.has(*flags)).then_some(0),
                    SummaryScore::Check(c) => c(idx, summary),
                };
                if let Some(got) = got {
                    checked.1 += 1;
                    assert_eq!(Some(got), want, "{} score of pod {} on node {}", plugin.name(), p.name, n.name);
                }
            }
        }
    }
    // The fast paths did answer (the comparison is not vacuous).
    assert!(checked.0 > 300 && checked.1 > 100, "{checked:?}");
}

#[test]
fn replaced_nodes_get_a_fresh_summary() {
    let mut snapshot = Snapshot::from_nodes(nodes());
    let idx = snapshot.index_of("plain").unwrap_or_else(|| panic!("plain"));
    let before = snapshot.summaries()[idx];
    let mut info = (*snapshot.nodes()[idx]).clone();
    info.add_pod(pod("late").req("1", "1Gi").node("plain").info());
    snapshot.replace(idx, Arc::new(info));
    let after = snapshot.summaries()[idx];
    assert_eq!((after.pods, after.requested_milli_cpu), (before.pods + 1, before.requested_milli_cpu + 1000));
    assert_eq!(after, snapshot.nodes()[idx].summary());
}
