use super::*;
use crate::framework::Code;
use crate::plugins::testutil::{filter_all, node, passing, pod, selector};
use bosun_core::k8s_openapi::api::core::v1::PodAffinityTerm;

const HOST: &str = "kubernetes.io/hostname";
const ZONE: &str = "topology.kubernetes.io/zone";

#[test]
fn existing_pods_anti_affinity_repels_the_incoming_pod_symmetrically() {
    // The existing pod refuses app=web next to it; the incoming pod has no terms of its own.
    let guard = pod("guard").node("n1").anti_affinity(&[("app", "web")], HOST).info();
    let snap = Snapshot::from_nodes(vec![node("n1").info(&[guard]), node("n2").info(&[])]);
    let web = pod("w").labels(&[("app", "web")]).info();
    let r = filter_all(&InterPodAffinity::default(), &web, &snap);
    assert_eq!(passing(&r), ["n2"]);
    assert_eq!(r[0].1.message(), REASON_EXISTING_ANTI_AFFINITY);
    assert_eq!(r[0].1.code(), Code::Unschedulable);
    // A pod the term does not select is not repelled.
    let db = pod("d").labels(&[("app", "db")]).info();
    assert_eq!(passing(&filter_all(&InterPodAffinity::default(), &db, &snap)), ["n1", "n2"]);
}

#[test]
fn the_incoming_pods_anti_affinity_avoids_matching_pods_in_the_domain() {
    let snap = Snapshot::from_nodes(vec![
        node("a1").label(ZONE, "a").info(&[pod("w1").labels(&[("app", "web")]).node("a1").info()]),
        node("a2").label(ZONE, "a").info(&[]),
        node("b1").label(ZONE, "b").info(&[]),
    ]);
    let p = pod("p").labels(&[("app", "web")]).anti_affinity(&[("app", "web")], ZONE).info();
    let r = filter_all(&InterPodAffinity::default(), &p, &snap);
    assert_eq!(passing(&r), ["b1"]);
    assert_eq!(r[1].1.message(), REASON_ANTI_AFFINITY);
}

#[test]
fn required_affinity_needs_a_matching_pod_in_the_domain_except_for_the_first_of_a_group() {
    let snap = Snapshot::from_nodes(vec![
        node("a1").label(ZONE, "a").info(&[pod("c1").labels(&[("app", "cache")]).node("a1").info()]),
        node("a2").label(ZONE, "a").info(&[]),
        node("b1").label(ZONE, "b").info(&[]),
    ]);
    let p = pod("p").affinity_term(&[("app", "cache")], ZONE).info();
    let r = filter_all(&InterPodAffinity::default(), &p, &snap);
    assert_eq!(passing(&r), ["a1", "a2"]);
    assert_eq!(r[2].1.message(), REASON_AFFINITY);
    assert_eq!(r[2].1.code(), Code::UnschedulableAndUnresolvable);
    // No pod matches anywhere: a pod that matches its own term may start the group.
    let first = pod("f").labels(&[("app", "new")]).affinity_term(&[("app", "new")], ZONE).info();
    assert_eq!(passing(&filter_all(&InterPodAffinity::default(), &first, &snap)), ["a1", "a2", "b1"]);
    // One that does not match its own term may not.
    let lonely = pod("l").affinity_term(&[("app", "new")], ZONE).info();
    assert!(passing(&filter_all(&InterPodAffinity::default(), &lonely, &snap)).is_empty());
}

#[test]
fn namespace_selectors_choose_whose_pods_count() {
    let other = pod("w").ns("team-b").labels(&[("app", "web")]).node("n1").info();
    let snap = Snapshot::from_nodes(vec![node("n1").info(&[other]), node("n2").info(&[])]);
    let term = |ns_sel: &[(&str, &str)]| PodAffinityTerm {
        label_selector: Some(selector(&[("app", "web")])),
        namespace_selector: Some(selector(ns_sel)),
        topology_key: HOST.into(),
        ..Default::default()
    };
    let handle = Handle::default();
    handle.set_namespace("team-b", Some(crate::plugins::testutil::labels(&[("team", "b")])));
    handle.set_namespace("default", Some(crate::plugins::testutil::labels(&[("team", "a")])));
    let run = |p: &PodInfo| -> Vec<String> {
        let mut st = CycleState::new();
        let plugin = InterPodAffinity::default();
        let (_, s) = plugin.pre_filter(&mut st, p, &snap, &handle);
        assert!(s.is_success());
        snap.nodes().iter().filter(|n| plugin.filter(&st, p, n).is_success()).map(|n| n.name.to_string()).collect()
    };
    // Selecting team=b namespaces: the pod in team-b counts, n1 is avoided.
    let avoid_b = pod("p").raw_affinity_term(term(&[("team", "b")]), true).info();
    assert_eq!(run(&avoid_b), ["n2"]);
    // Selecting team=a namespaces: it does not.
    let avoid_a = pod("q").raw_affinity_term(term(&[("team", "a")]), true).info();
    assert_eq!(run(&avoid_a), ["n1", "n2"]);
    // Without namespaces or a selector, only the pod's own namespace counts.
    let own_ns = pod("r").anti_affinity(&[("app", "web")], HOST).info();
    assert_eq!(run(&own_ns), ["n1", "n2"]);
}

#[test]
fn preferred_affinity_scores_nodes_near_matching_pods() {
    let snap = Snapshot::from_nodes(vec![
        node("a1").label(ZONE, "a").info(&[pod("c").labels(&[("app", "cache")]).node("a1").info()]),
        node("b1").label(ZONE, "b").info(&[]),
    ]);
    let p = pod("p")
        .with(|p| {
            let term = bosun_core::k8s_openapi::api::core::v1::WeightedPodAffinityTerm {
                weight: 50,
                pod_affinity_term: PodAffinityTerm {
                    label_selector: Some(selector(&[("app", "cache")])),
                    topology_key: ZONE.into(),
                    ..Default::default()
                },
            };
            if let Some(s) = p.spec.as_mut() {
                s.affinity = Some(bosun_core::k8s_openapi::api::core::v1::Affinity {
                    pod_affinity: Some(bosun_core::k8s_openapi::api::core::v1::PodAffinity {
                        preferred_during_scheduling_ignored_during_execution: Some(vec![term]),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
        })
        .info();
    let plugin = InterPodAffinity::default();
    let mut st = CycleState::new();
    assert!(plugin.pre_score(&mut st, &p, &[], &snap, &Handle::default()).is_success());
    let mut scores: Vec<NodeScore> =
        snap.nodes().iter().enumerate().map(|(i, n)| NodeScore { index: i, score: plugin.score(&st, &p, n).unwrap_or(-1) }).collect();
    plugin.normalize_score(&st, &p, &mut scores);
    let get = |name: &str| scores.iter().find(|s| &*snap.nodes()[s.index].name == name).map(|s| s.score);
    assert_eq!((get("a1"), get("b1")), (Some(100), Some(0)));
}
