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

#[test]
fn the_framework_skips_nodes_hostname_anti_affinity_rules_out_both_ways_and_reports_them() {
    use crate::framework::{Handle, Profile, ScheduleError};
    let fw = Profile::defaults("default-scheduler").build().unwrap_or_else(|e| panic!("{e}"));
    let green = |name: &str, n: &str| pod(name).labels(&[("color", "green")]).node(n).info();
    let snap = Snapshot::from_nodes(vec![
        // A pod the incoming pod's own term matches.
        node("a").info(&[green("e1", "a")]),
        // A pod whose term repels the incoming pod (symmetry).
        node("b").info(&[pod("e2").labels(&[("color", "blue")]).anti_affinity(&[("color", "green")], HOST).node("b").info()]),
        // Unrelated.
        node("c").info(&[pod("e3").labels(&[("color", "red")]).node("c").info()]),
    ]);
    let p = pod("p").labels(&[("color", "green")]).anti_affinity(&[("color", "green")], HOST).info();
    for _ in 0..5 {
        let mut state = CycleState::new();
        let r = fw.schedule_pod(&mut state, &p, &snap, &Handle::default()).unwrap_or_else(|_| panic!("fits on c"));
        assert_eq!(r.suggested_host, "c");
    }
    let full = Snapshot::from_nodes(vec![node("a").info(&[green("e1", "a")]), node("c").info(&[green("e3", "c")])]);
    let mut state = CycleState::new();
    match fw.schedule_pod(&mut state, &p, &full, &Handle::default()) {
        Err(ScheduleError::Fit(d)) => {
            assert_eq!(d.message(), "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules.");
            assert_eq!(d.unschedulable_plugins, ["InterPodAffinity"]);
        }
        _ => panic!("no node fits"),
    }
}
