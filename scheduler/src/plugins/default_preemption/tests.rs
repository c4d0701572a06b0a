use super::*;
use crate::framework::{Diagnosis, PdbInfo, Profile};
use crate::plugins::testutil::{node, pod};
use crate::snapshot::Snapshot;
use bosun_core::LabelSelector;

fn framework() -> Framework {
    Profile::defaults("default-scheduler").build().unwrap_or_else(|e| panic!("{e}"))
}

/// Runs the whole cycle (filter, then preemption) and returns the nominated node and the message.
fn preempt(snap: &Snapshot, p: &Arc<PodInfo>, handle: &Handle) -> (Option<String>, Status, Diagnosis) {
    let fw = framework();
    let mut state = CycleState::new();
    match fw.schedule_pod(&mut state, p, snap, handle) {
        Ok(r) => panic!("pod fits on {}", r.suggested_host),
        Err(crate::framework::ScheduleError::Fit(d)) => {
            let (n, s) = fw.run_post_filter(&state, p, &d, snap, handle);
            (n, s, *d)
        }
        Err(e) => panic!("{e:?}"),
    }
}

fn victim(name: &str, node_name: &str, prio: i32, cpu: &str) -> Arc<PodInfo> {
    pod(name).node(node_name).priority(prio).req(cpu, "").info()
}

#[test]
fn pods_of_equal_or_higher_priority_are_never_victims() {
    let snap = Snapshot::from_nodes(vec![node("n1").info(&[victim("a", "n1", 10, "2"), victim("b", "n1", 20, "2")])]);
    let p = pod("p").priority(10).req("1", "").info();
    let (n, s, d) = preempt(&snap, &p, &Handle::default());
    assert_eq!(n, None);
    assert!(!s.is_success());
    assert_eq!(s.message(), "preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.");
    assert_eq!(d.message(), "0/1 nodes are available: 1 Insufficient cpu.");
}

#[test]
fn the_fewest_lowest_priority_victims_are_chosen_and_the_rest_reprieved() {
    let pods = [victim("v1", "n1", 1, "1"), victim("v2", "n1", 2, "1"), victim("v3", "n1", 3, "1"), victim("v4", "n1", 4, "1")];
    let snap = Snapshot::from_nodes(vec![node("n1").info(&pods)]);
    let p = pod("p").priority(100).req("2", "").info();
    let fw = framework();
    let mut state = CycleState::new();
    let handle = Handle::default();
    let _ = fw.run_pre_filter(&mut state, &p, &snap, &handle);
    let c = DefaultPreemption::default().select_victims(&fw, &state, &p, &snap.nodes()[0], &handle, &[]).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = c.victims.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["v2", "v1"]);
    assert_eq!(c.pdb_violations, 0);
}

#[test]
fn a_node_whose_victims_a_budget_protects_loses_to_one_without() {
    let snap = Snapshot::from_nodes(vec![
        node("guarded").info(&[pod("g").labels(&[("app", "db")]).node("guarded").priority(1).req("4", "").info()]),
        node("free").info(&[pod("f").labels(&[("app", "batch")]).node("free").priority(1).req("4", "").info()]),
    ]);
    let handle = Handle::default();
    handle.set_pdb(PdbInfo {
        namespace: "default".into(),
        name: "db".into(),
        selector: LabelSelector::parse("app=db").unwrap_or_default(),
        disruptions_allowed: 0,
        disrupted_pods: Vec::new(),
    });
    let p = pod("p").priority(100).req("3", "").info();
    for _ in 0..10 {
        let (n, s, _) = preempt(&snap, &p, &handle);
        assert!(s.is_success(), "{s}");
        assert_eq!(n.as_deref(), Some("free"));
    }
}

#[test]
fn candidates_with_lower_priority_victims_win() {
    let a = Candidate { node: "a".into(), victims: vec![victim("x", "a", 5, "1")], pdb_violations: 0 };
    let b = Candidate { node: "b".into(), victims: vec![victim("y", "b", 3, "1"), victim("z", "b", 2, "1")], pdb_violations: 0 };
    let c = Candidate { node: "c".into(), victims: vec![victim("w", "c", 1, "1")], pdb_violations: 1 };
    assert_eq!(DefaultPreemption::pick_one(&[a.clone(), b.clone(), c]).map(|c| c.node.as_str()), Some("b"));
    let d = Candidate { node: "d".into(), victims: vec![victim("v", "d", 3, "1")], pdb_violations: 0 };
    // Same highest priority: the smaller priority sum wins.
    assert_eq!(DefaultPreemption::pick_one(&[b, d, a]).map(|c| c.node.as_str()), Some("d"));
}

#[test]
fn preemption_is_not_attempted_where_evictions_cannot_help() {
    // The pod does not tolerate the node's taint: evicting pods there would not help.
    let snap = Snapshot::from_nodes(vec![node("t").taint("k", "v", "NoSchedule").info(&[victim("a", "t", 0, "4")])]);
    let p = pod("p").priority(100).req("1", "").info();
    let (n, s, _) = preempt(&snap, &p, &Handle::default());
    assert_eq!(n, None);
    assert_eq!(s.message(), "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.");
    // preemptionPolicy: Never.
    let snap = Snapshot::from_nodes(vec![node("n").info(&[victim("a", "n", 0, "4")])]);
    let never = pod("q")
        .priority(100)
        .req("1", "")
        .with(|p| {
            if let Some(s) = p.spec.as_mut() {
                s.preemption_policy = Some("Never".into());
            }
        })
        .info();
    let (n, s, _) = preempt(&snap, &never, &Handle::default());
    assert_eq!(n, None);
    assert!(s.message().contains("preemptionPolicy=Never"));
}

/// A node whose snapshot carries a nominated pod (as the scheduler's cache keeps them).
fn with_nominated(mut n: crate::node_info::NodeInfo, nominated: &[Arc<PodInfo>]) -> crate::node_info::NodeInfo {
    n.nominated = nominated.to_vec();
    n
}

#[test]
fn room_kept_for_a_nominated_pod_of_equal_or_higher_priority_only() {
    // "a" has 3 of 4 CPU free, but a priority-10 pod needing 2 CPU is nominated there.
    let waiting = pod("waiting").priority(10).req("2", "").info();
    let snap = Snapshot::from_nodes(vec![with_nominated(node("a").info(&[victim("v", "a", 0, "1")]), std::slice::from_ref(&waiting))]);
    let fw = framework();
    let handle = Handle::default();
    let fits = |p: &Arc<PodInfo>| fw.schedule_pod(&mut CycleState::new(), p, &snap, &handle).is_ok();
    assert!(!fits(&pod("same").priority(10).req("2", "").info()), "equal priority leaves the nominated pod's room");
    assert!(fits(&pod("higher").priority(20).req("2", "").info()), "a higher-priority pod need not leave it (kube counts pods >= its own)");
    assert!(fits(&pod("small").priority(10).req("1", "").info()), "what is left after the nominated pod fits");
    // A lower-priority nominated pod does not hold room against a higher-priority one.
    let low = pod("low-nominated").priority(1).req("3", "").info();
    let snap2 = Snapshot::from_nodes(vec![with_nominated(node("a").info(&[]), std::slice::from_ref(&low))]);
    assert!(fw.schedule_pod(&mut CycleState::new(), &pod("p").priority(10).req("2", "").info(), &snap2, &handle).is_ok());
    // The nominated pod itself is not kept out by its own nomination.
    assert!(fw.schedule_pod(&mut CycleState::new(), &waiting, &snap, &handle).is_ok());
    // Mixed priorities on the node take the full path and agree.
    let snap3 = Snapshot::from_nodes(vec![with_nominated(node("a").info(&[]), &[low, waiting.clone()])]);
    assert!(fw.schedule_pod(&mut CycleState::new(), &pod("q").priority(10).req("3", "").info(), &snap3, &handle).is_err());
    assert!(fw.schedule_pod(&mut CycleState::new(), &pod("r").priority(10).req("2", "").info(), &snap3, &handle).is_ok());
}

#[test]
fn a_preemptor_whose_victims_are_still_being_deleted_does_not_preempt_again() {
    let snap = Snapshot::from_nodes(vec![node("a").info(&[victim("a1", "a", 0, "3")]), node("b").info(&[victim("b1", "b", 0, "3")])]);
    // A client, so that evictions are asked for (no runtime runs them: they stay pending).
    let client: Arc<dyn bosun_core::Client> = bosun_store::ApiServer::in_memory();
    let handle = Handle::new(Some(client), Arc::default(), None, None);
    let p = pod("p").priority(10).req("2", "").info();
    let (first, s, _) = preempt(&snap, &p, &handle);
    assert!(s.is_success(), "{s:?}");
    let first = first.unwrap_or_else(|| panic!("nominated"));
    handle.nominator().add(p.clone(), &first);
    let victim_uid = if first == "a" { "uid-a1" } else { "uid-b1" };
    assert!(handle.is_victim_deleting(victim_uid), "the victim's deletion is pending");
    // Retried before the deletion lands: it waits instead of taking another node's pods.
    let (again, s, _) = preempt(&snap, &p, &handle);
    assert_eq!(again, None);
    assert!(s.message().contains("terminating pod on the nominated node"), "{}", s.message());
    // Once the deletion is seen, preemption may run again (here: the victim is still in this snapshot).
    handle.victim_gone(victim_uid);
    assert!(!handle.is_victim_deleting(victim_uid));
}

/// The summary dry run must choose exactly the victims the full dry run chooses (same order, same
/// budget violations, same reason when there is no candidate), on random clusters: mixed
/// priorities, requests, budgets, nominated pods, taints and host ports (the last two make the
/// summary defer, which must then say so rather than answer).
#[test]
fn the_summary_dry_run_chooses_the_victims_the_full_dry_run_chooses() {
    let fw = framework();
    let mut rng = fastrand::Rng::with_seed(7);
    let (mut compared, mut deferred, mut with_victims, mut with_violations) = (0, 0, 0, 0);
    for round in 0..150 {
        let handle = Handle::default();
        for (i, app) in ["a", "b"].iter().enumerate() {
            if rng.bool() {
                handle.set_pdb(PdbInfo {
                    namespace: "default".into(),
                    name: format!("pdb-{i}"),
                    selector: LabelSelector::parse(&format!("app={app}")).unwrap_or_default(),
                    disruptions_allowed: rng.i32(0..3),
                    disrupted_pods: Vec::new(),
                });
            }
        }
        let mut nodes = Vec::new();
        for n in 0..8 {
            let name = format!("r{round}-n{n}");
            let mut b = node(&name).alloc("cpu", &format!("{}", rng.u32(2..9))).alloc("pods", &format!("{}", rng.u32(3..12)));
            if rng.u8(0..10) == 0 {
                b = b.taint("dedicated", "x", "NoSchedule");
            }
            let pods: Vec<Arc<PodInfo>> = (0..rng.usize(0..7))
                .map(|k| {
                    let mut p = pod(&format!("{name}-p{k}"))
                        .node(&name)
                        .priority(rng.i32(0..6))
                        .labels(&[("app", ["a", "b", "c"][rng.usize(0..3)])])
                        .req(&format!("{}m", rng.u32(100..2500)), &format!("{}Mi", rng.u32(100..8000)));
                    if rng.u8(0..15) == 0 {
                        p = p.host_port(8000 + rng.i32(0..3));
                    }
                    p.info()
                })
                .collect();
            let nominated: Vec<Arc<PodInfo>> = (0..rng.usize(0..3).saturating_sub(1))
                .map(|k| pod(&format!("{name}-nom{k}")).priority(rng.i32(0..8)).req(&format!("{}m", rng.u32(100..2000)), "1Gi").info())
                .collect();
            nodes.push(with_nominated(b.info(&pods), &nominated));
        }
        let snap = Snapshot::from_nodes(nodes);
        let mut bare = snap.clone();
        bare.profiles.clear();
        let p = pod(&format!("r{round}-preemptor")).priority(rng.i32(1..7)).req(&format!("{}m", rng.u32(500..6000)), "2Gi").info();
        let mut state = CycleState::new();
        let (_, s) = fw.run_pre_filter(&mut state, &p, &snap, &handle);
        assert!(s.is_success(), "{s}");
        let Some(judge) = fw.summary_judge(&state, &p, &snap) else { panic!("default plugins judge a plain pod from summaries") };
        let allowance: Vec<(PdbInfo, i32)> = handle.pdbs().into_iter().map(|p| (p.clone(), p.disruptions_allowed)).collect();
        let plugin = DefaultPreemption::default();
        for (i, n) in snap.nodes().iter().enumerate() {
            let full = plugin.select_victims(&fw, &state, &p, n, &handle, &allowance);
            // With the priority profile and without (the pods visited): both must agree.
            let by_profile = plugin.select_victims_by_summary(&judge, &p, &snap, i, &allowance);
            let by_pods = plugin.select_victims_by_summary(&judge, &p, &bare, i, &allowance);
            if let (Some(a), Some(b)) = (&by_profile, &by_pods) {
                assert_eq!(format!("{a:?}"), format!("{b:?}"), "profile vs pods on {}", n.name);
            }
            let Some(quick) = by_profile.or(by_pods) else {
                deferred += 1;
                continue;
            };
            compared += 1;
            match (&full, &quick) {
                (Ok(f), Ok(q)) => {
                    let names = |c: &Candidate| c.victims.iter().map(|v| v.name.clone()).collect::<Vec<_>>();
                    assert_eq!(names(f), names(q), "victims on {}", n.name);
                    assert_eq!(f.pdb_violations, q.pdb_violations, "budget violations on {}", n.name);
                    with_victims += 1;
                    with_violations += usize::from(f.pdb_violations > 0);
                }
                (Err(f), Err(q)) => assert_eq!(f, q, "reason on {}", n.name),
                _ => panic!("{}: full {full:?} vs summary {quick:?}", n.name),
            }
        }
    }
    // The comparison covered the interesting cases.
    assert!(
        compared > 600 && with_victims > 150 && with_violations > 10 && deferred > 30,
        "{compared} {with_victims} {with_violations} {deferred}"
    );
}

/// Preemption compares candidates as the dry runs find them and builds only the best: on small
/// random clusters (where every node is looked at) the node it nominates is one `pick_one` would
/// choose among every candidate the full dry runs find.
#[test]
fn the_nominated_node_is_the_best_candidate_of_the_full_dry_runs() {
    let fw = framework();
    let mut rng = fastrand::Rng::with_seed(11);
    let mut nominations = 0;
    for round in 0..120 {
        let handle = Handle::default();
        if rng.bool() {
            handle.set_pdb(PdbInfo {
                namespace: "default".into(),
                name: "pdb".into(),
                selector: LabelSelector::parse("app=a").unwrap_or_default(),
                disruptions_allowed: rng.i32(0..2),
                disrupted_pods: Vec::new(),
            });
        }
        let nodes: Vec<_> = (0..10)
            .map(|n| {
                let name = format!("r{round}-n{n}");
                let pods: Vec<Arc<PodInfo>> = (0..rng.usize(2..6))
                    .map(|k| {
                        pod(&format!("{name}-p{k}"))
                            .node(&name)
                            .priority(rng.i32(0..6))
                            .labels(&[("app", ["a", "b"][rng.usize(0..2)])])
                            .req(&format!("{}m", rng.u32(500..1500)), "")
                            .info()
                    })
                    .collect();
                node(&name).info(&pods)
            })
            .collect();
        let snap = Snapshot::from_nodes(nodes);
        let p = pod(&format!("r{round}-preemptor")).priority(rng.i32(1..7)).req(&format!("{}m", rng.u32(2000..4000)), "").info();
        let mut state = CycleState::new();
        let Err(crate::framework::ScheduleError::Fit(d)) = fw.schedule_pod(&mut state, &p, &snap, &handle) else { continue };
        let (nominated, _) = fw.run_post_filter(&state, &p, &d, &snap, &handle);
        let mut full_state = CycleState::new();
        let _ = fw.run_pre_filter(&mut full_state, &p, &snap, &handle);
        let allowance: Vec<(PdbInfo, i32)> = handle.pdbs().into_iter().map(|b| (b.clone(), b.disruptions_allowed)).collect();
        let plugin = DefaultPreemption::default();
        let candidates: Vec<Candidate> =
            snap.nodes().iter().filter_map(|n| plugin.select_victims(&fw, &full_state, &p, n, &handle, &allowance).ok()).collect();
        let key = |c: &Candidate| candidate_key(c.victims.iter().map(|v| &**v), c.pdb_violations);
        match (nominated, DefaultPreemption::pick_one(&candidates)) {
            (None, None) => {}
            (Some(n), Some(best)) => {
                let chosen = candidates.iter().find(|c| c.node == n).unwrap_or_else(|| panic!("{n} is no candidate"));
                assert_eq!(key(chosen), key(best), "round {round}: {n} vs {}", best.node);
                nominations += 1;
            }
            (n, b) => panic!("round {round}: nominated {n:?}, best {:?}", b.map(|c| &c.node)),
        }
    }
    assert!(nominations > 40, "{nominations}");
}

/// A batch of equivalent preemptors through one framework (whose preemption keeps the dry runs of
/// the nodes that did not change): each is nominated to a node no earlier one holds, with the
/// candidate a fresh framework (nothing kept) finds best, also after a budget appears; once
/// every node is taken, none is nominated.
#[test]
fn equivalent_preemptors_in_a_row_reuse_dry_runs_and_choose_as_a_fresh_run_does() {
    use crate::cache::Cache;
    use crate::node_info::NodeStatic;
    const NODES: usize = 12;
    let fw = framework();
    let handle = Handle::default();
    let mut cache = Cache::new();
    for n in 0..NODES {
        let name = format!("n{n}");
        cache.add_or_update_node(NodeStatic::new(Arc::new(node(&name).0)));
        for k in 0..4 {
            let app = if n % 3 == 0 { "a" } else { "b" };
            cache.add_or_update_pod(
                pod(&format!("low-{n}-{k}")).labels(&[("app", app)]).node(&name).priority(1 + k % 2).req("900m", "").info(),
            );
        }
    }
    let mut snap = Snapshot::default();
    let mut taken = std::collections::HashSet::new();
    for i in 0..=NODES {
        if i == 4 {
            handle.set_pdb(PdbInfo {
                namespace: "default".into(),
                name: "guard-a".into(),
                selector: LabelSelector::parse("app=a").unwrap_or_default(),
                disruptions_allowed: 0,
                disrupted_pods: Vec::new(),
            });
        }
        cache.update_snapshot(&mut snap);
        let p = pod(&format!("high-{i}")).priority(10).req("3", "").info();
        let run = |fw: &Framework| {
            let mut state = CycleState::new();
            let Err(crate::framework::ScheduleError::Fit(d)) = fw.schedule_pod(&mut state, &p, &snap, &handle) else { panic!("fits") };
            fw.run_post_filter(&state, &p, &d, &snap, &handle).0
        };
        let key_on = |node: &str| {
            let mut state = CycleState::new();
            let _ = fw.run_pre_filter(&mut state, &p, &snap, &handle);
            let allowance: Vec<(PdbInfo, i32)> = handle.pdbs().into_iter().map(|b| (b.clone(), b.disruptions_allowed)).collect();
            let n = snap.node(node).unwrap_or_else(|| panic!("{node}"));
            let c = DefaultPreemption::default().select_victims(&fw, &state, &p, n, &handle, &allowance).unwrap_or_else(|e| panic!("{e}"));
            candidate_key(c.victims.iter().map(|v| &**v), c.pdb_violations)
        };
        let kept = run(&fw);
        let fresh = run(&framework());
        if i == NODES {
            assert_eq!((kept, fresh), (None, None), "every node holds a nominated preemptor");
            break;
        }
        let (Some(kept), Some(fresh)) = (kept, fresh) else { panic!("preemptor {i}: a node is left") };
        assert!(taken.insert(kept.clone()), "preemptor {i}: {kept} is already nominated");
        assert_eq!(key_on(&kept), key_on(&fresh), "preemptor {i}: {kept} vs {fresh}");
        // As the scheduler's nominator does: the node now keeps room for the preemptor.
        cache.nominate(&p, None, Some(&kept));
    }
}
