use super::*;
use crate::framework::Code;
use crate::plugins::testutil::{filter_all, node, passing, pod};
use bosun_core::k8s_openapi::api::core::v1::TopologySpreadConstraint;

const ZONE: &str = "topology.kubernetes.io/zone";

fn web(name: &str, node_name: &str) -> Arc<PodInfo> {
    pod(name).labels(&[("app", "web")]).node(node_name).info()
}

fn constraint(max_skew: i32, min_domains: Option<i32>, affinity_policy: Option<&str>) -> TopologySpreadConstraint {
    TopologySpreadConstraint {
        max_skew,
        topology_key: ZONE.into(),
        when_unsatisfiable: "DoNotSchedule".into(),
        label_selector: Some(crate::plugins::testutil::selector(&[("app", "web")])),
        min_domains,
        node_affinity_policy: affinity_policy.map(str::to_owned),
        ..Default::default()
    }
}

#[test]
fn hard_constraints_keep_the_skew_within_max_skew() {
    let snap = Snapshot::from_nodes(vec![
        node("a1").label(ZONE, "a").info(&[web("w1", "a1"), web("w2", "a1")]),
        node("b1").label(ZONE, "b").info(&[web("w3", "b1")]),
        node("c1").label(ZONE, "c").info(&[web("w4", "c1")]),
    ]);
    let p = pod("p").labels(&[("app", "web")]).spread(1, ZONE, true, &[("app", "web")]).info();
    let r = filter_all(&PodTopologySpread, &p, &snap);
    assert_eq!(passing(&r), ["b1", "c1"]);
    assert_eq!(r[0].1.message(), REASON_CONSTRAINTS);
    assert_eq!(r[0].1.code(), Code::Unschedulable);
    // Pods in other namespaces or not matching the selector do not count.
    let other = pod("p").ns("other").labels(&[("app", "web")]).spread(1, ZONE, true, &[("app", "web")]).info();
    assert_eq!(passing(&filter_all(&PodTopologySpread, &other, &snap)), ["a1", "b1", "c1"]);
}

#[test]
fn nodes_without_the_topology_label_are_unresolvable() {
    let snap = Snapshot::from_nodes(vec![node("a1").label(ZONE, "a").info(&[]), node("bare").info(&[])]);
    let p = pod("p").labels(&[("app", "web")]).spread(1, ZONE, true, &[("app", "web")]).info();
    let r = filter_all(&PodTopologySpread, &p, &snap);
    assert_eq!(passing(&r), ["a1"]);
    assert_eq!(r[1].1.code(), Code::UnschedulableAndUnresolvable);
    assert_eq!(r[1].1.message(), REASON_LABEL);
}

#[test]
fn min_domains_treats_missing_domains_as_empty() {
    // Two zones with one pod each: the global minimum is 1, so either zone takes a second pod...
    let snap = Snapshot::from_nodes(vec![
        node("a1").label(ZONE, "a").info(&[web("w1", "a1")]),
        node("b1").label(ZONE, "b").info(&[web("w2", "b1")]),
    ]);
    let plain = pod("p").labels(&[("app", "web")]).spread_raw(constraint(1, None, None)).info();
    assert_eq!(passing(&filter_all(&PodTopologySpread, &plain, &snap)), ["a1", "b1"]);
    // ...but with minDomains 3 there are fewer domains than required, the minimum counts as 0,
    // and a second pod in any zone would make the skew 2.
    let min3 = pod("p").labels(&[("app", "web")]).spread_raw(constraint(1, Some(3), None)).info();
    assert!(passing(&filter_all(&PodTopologySpread, &min3, &snap)).is_empty());
    // minDomains already met: no effect.
    let min2 = pod("p").labels(&[("app", "web")]).spread_raw(constraint(1, Some(2), None)).info();
    assert_eq!(passing(&filter_all(&PodTopologySpread, &min2, &snap)), ["a1", "b1"]);
}

#[test]
fn node_affinity_policy_decides_whether_excluded_nodes_count() {
    // Zone c is empty but outside the pod's nodeSelector.
    let snap = Snapshot::from_nodes(vec![
        node("a1").label(ZONE, "a").label("pool", "x").info(&[web("w1", "a1")]),
        node("b1").label(ZONE, "b").label("pool", "x").info(&[web("w2", "b1")]),
        node("c1").label(ZONE, "c").info(&[]),
    ]);
    let honor = pod("p").labels(&[("app", "web")]).node_selector(&[("pool", "x")]).spread_raw(constraint(1, None, None)).info();
    // Honor (default): zone c does not count, the minimum is 1, zones a and b are fine.
    let r = filter_all(&PodTopologySpread, &honor, &snap);
    assert!(r.iter().filter(|(n, _)| n != "c1").all(|(_, s)| s.is_success()));
    let ignore = pod("p").labels(&[("app", "web")]).node_selector(&[("pool", "x")]).spread_raw(constraint(1, None, Some("Ignore"))).info();
    // Ignore: empty zone c counts, the minimum is 0, zones a and b would reach skew 2.
    let r = filter_all(&PodTopologySpread, &ignore, &snap);
    assert!(r.iter().filter(|(n, _)| n != "c1").all(|(_, s)| !s.is_success()));
}

#[test]
fn add_and_remove_pod_update_the_counts_for_preemption() {
    let snap = Snapshot::from_nodes(vec![node("a1").label(ZONE, "a").info(&[web("w1", "a1")]), node("b1").label(ZONE, "b").info(&[])]);
    let p = pod("p").labels(&[("app", "web")]).spread(1, ZONE, true, &[("app", "web")]).info();
    let mut state = CycleState::new();
    let h = Handle::default();
    let _ = PodTopologySpread.pre_filter(&mut state, &p, &snap, &h);
    let a1 = snap.node("a1").cloned().unwrap_or_else(|| panic!("a1"));
    assert!(!PodTopologySpread.filter(&state, &p, &a1).is_success());
    let w1 = a1.pods[0].clone();
    PodTopologySpread.remove_pod(&mut state, &p, &w1, &a1, &h);
    assert!(PodTopologySpread.filter(&state, &p, &a1).is_success());
}

#[test]
fn soft_constraints_score_emptier_domains_higher() {
    let snap = Snapshot::from_nodes(vec![
        node("a1").label(ZONE, "a").info(&[web("w1", "a1"), web("w2", "a1")]),
        node("b1").label(ZONE, "b").info(&[]),
    ]);
    let p = pod("p").labels(&[("app", "web")]).spread(1, ZONE, false, &[("app", "web")]).info();
    let mut state = CycleState::new();
    let nodes: Vec<&NodeInfo> = snap.nodes().iter().map(|n| &**n).collect();
    assert!(PodTopologySpread.pre_score(&mut state, &p, &nodes, &snap, &Handle::default()).is_success());
    let mut scores: Vec<NodeScore> = snap
        .nodes()
        .iter()
        .enumerate()
        .map(|(i, n)| NodeScore { index: i, score: PodTopologySpread.score(&state, &p, n).unwrap_or(-1) })
        .collect();
    PodTopologySpread.normalize_score(&state, &p, &mut scores);
    let score_of = |name: &str| scores.iter().find(|s| &*snap.nodes()[s.index].name == name).map(|s| s.score);
    assert!(score_of("b1") > score_of("a1"), "{scores:?}");
    assert_eq!(score_of("b1"), Some(100));
}

#[test]
fn pods_without_constraints_spread_over_their_services_pods_by_default() {
    let snap = Snapshot::from_nodes(vec![
        node("a1").label(ZONE, "a").info(&[web("w1", "a1"), web("w2", "a1")]),
        node("b1").label(ZONE, "b").info(&[web("w3", "b1")]),
        node("c1").label(ZONE, "c").info(&[]),
    ]);
    let p = pod("p").labels(&[("app", "web"), ("pod-template-hash", "x")]).info();
    let nodes: Vec<&NodeInfo> = snap.nodes().iter().map(|n| &**n).collect();
    let handle = Handle::default();
    // No Service selects the pod: nothing to spread over.
    assert!(PodTopologySpread.pre_score(&mut CycleState::new(), &p, &nodes, &snap, &handle).is_skip());
    handle.set_service("default", "web", Some(crate::plugins::testutil::labels(&[("app", "web")])));
    let mut state = CycleState::new();
    assert!(PodTopologySpread.pre_score(&mut state, &p, &nodes, &snap, &handle).is_success());
    let mut scores: Vec<NodeScore> = snap
        .nodes()
        .iter()
        .enumerate()
        .map(|(i, n)| NodeScore { index: i, score: PodTopologySpread.score(&state, &p, n).unwrap_or(-1) })
        .collect();
    PodTopologySpread.normalize_score(&state, &p, &mut scores);
    let score_of = |name: &str| scores.iter().find(|s| &*snap.nodes()[s.index].name == name).map(|s| s.score).unwrap_or(-1);
    assert!(score_of("c1") > score_of("b1") && score_of("b1") > score_of("a1"), "{scores:?}");
}

#[test]
fn counts_kept_across_incremental_snapshot_updates_equal_a_full_recount() {
    use crate::cache::Cache;
    use crate::node_info::NodeStatic;
    let mut cache = Cache::new();
    for (name, zone) in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("c1", "c"), ("nozone", "")] {
        let mut b = node(name);
        if !zone.is_empty() {
            b = b.label(ZONE, zone);
        }
        cache.add_or_update_node(NodeStatic::new(Arc::new(b.0)));
    }
    let mut snap = Snapshot::default();
    let incoming = pod("p").labels(&[("app", "web")]).spread(3, ZONE, true, &[("app", "web")]).info();
    let check = |snap: &Snapshot| {
        let constraints: Vec<SpreadConstraint> = incoming.spread_constraints.clone();
        let cached = cached_counts(&constraints, &incoming, snap);
        let full = count_domains(&constraints, &incoming, snap, None, true);
        assert_eq!(cached, full);
        cached
    };
    cache.update_snapshot(&mut snap);
    assert_eq!(check(&snap)[0].values().sum::<i64>(), 0);
    // Assumed, bound, other-namespace and non-matching pods arrive one cycle at a time.
    let steps: Vec<(Arc<PodInfo>, &str)> = vec![
        (pod("w1").labels(&[("app", "web")]).info(), "a1"),
        (pod("w2").labels(&[("app", "web")]).info(), "b1"),
        (pod("x").labels(&[("app", "db")]).info(), "a2"),
        (pod("o").ns("other").labels(&[("app", "web")]).info(), "c1"),
        (pod("w3").labels(&[("app", "web")]).info(), "nozone"),
    ];
    for (p, n) in steps {
        cache.assume_pod(p, n).unwrap_or_else(|e| panic!("{e}"));
        cache.update_snapshot(&mut snap);
        check(&snap);
    }
    assert_eq!(check(&snap)[0], HashMap::from([("a".to_owned(), 1), ("b".to_owned(), 1), ("c".to_owned(), 0)]));
    // Confirmation, a terminating pod, a forgotten assumption.
    cache.add_or_update_pod(pod("w1").labels(&[("app", "web")]).node("a1").info());
    cache.add_or_update_pod(
        pod("w2")
            .labels(&[("app", "web")])
            .node("b1")
            .with(|p| {
                p.metadata.deletion_timestamp = Some(bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    bosun_core::k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ))
            })
            .info(),
    );
    cache.update_snapshot(&mut snap);
    assert_eq!(check(&snap)[0].get("b"), Some(&0));
    cache.forget_pod("uid-w3").unwrap_or_else(|e| panic!("{e}"));
    cache.assume_pod(pod("w4").labels(&[("app", "web")]).info(), "c1").unwrap_or_else(|e| panic!("{e}"));
    cache.update_snapshot(&mut snap);
    assert_eq!(check(&snap)[0].get("c"), Some(&1));
    // A label change rebuilds: the counts start over and still agree.
    cache.add_or_update_node(NodeStatic::new(Arc::new(node("nozone").label(ZONE, "c").0)));
    cache.update_snapshot(&mut snap);
    assert_eq!(check(&snap)[0].get("c"), Some(&1));
}
