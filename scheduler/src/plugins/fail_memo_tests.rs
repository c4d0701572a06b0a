//! The failed-scan memo: after a scan finds no node, an equivalent pod (same spec, labels and
//! namespace) re-judges only the nodes changed since, and gets the same answer a full scan gives.

use crate::cache::Cache;
use crate::framework::{CycleState, FilterPlugin, Framework, Handle, Plugin, Profile, ScheduleError, Status};
use crate::node_info::{NodeInfo, NodeStatic};
use crate::plugins::testutil::{node, pod};
use crate::pod_info::PodInfo;
use crate::snapshot::Snapshot;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Rejects the nodes in `blocked`, counting how many nodes it judged. Declares itself node-local
/// (or not): the tests change `blocked` only together with the node, as the contract asks.
#[derive(Debug, Default)]
struct Gate {
    blocked: Mutex<HashSet<String>>,
    calls: AtomicUsize,
    not_local: bool,
}

impl Plugin for Gate {
    fn name(&self) -> &'static str {
        "Gate"
    }
    fn as_filter(self: Arc<Self>) -> Option<Arc<dyn FilterPlugin>> {
        Some(self)
    }
}

impl FilterPlugin for Gate {
    fn filter(&self, _: &CycleState, _: &PodInfo, node: &NodeInfo) -> Status {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let blocked = self.blocked.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&*node.name);
        if blocked { Status::unschedulable("node(s) were gated") } else { Status::success() }
    }
    fn node_local(&self, _: &CycleState, _: &PodInfo) -> bool {
        !self.not_local
    }
}

struct World {
    fw: Framework,
    gate: Arc<Gate>,
    cache: Cache,
    snap: Snapshot,
    handle: Handle,
}

const NODES: usize = 20;

fn world(not_local: bool) -> World {
    let gate = Arc::new(Gate { not_local, ..Gate::default() });
    let fw = Profile::defaults("default-scheduler").weighted_arc(gate.clone(), 1).build().unwrap_or_else(|e| panic!("{e}"));
    let mut cache = Cache::new();
    for i in 0..NODES {
        cache.add_or_update_node(NodeStatic::new(Arc::new(node(&format!("n{i}")).0)));
        gate.blocked.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(format!("n{i}"));
    }
    let mut snap = Snapshot::default();
    cache.update_snapshot(&mut snap);
    World { fw, gate, cache, snap, handle: Handle::default() }
}

impl World {
    /// Schedules one pod: the host or the failure message, and how many nodes Gate judged.
    fn schedule(&mut self, p: &Arc<PodInfo>) -> (Result<String, String>, usize) {
        self.cache.update_snapshot(&mut self.snap);
        let before = self.gate.calls.load(Ordering::Relaxed);
        let mut state = CycleState::new();
        let r = match self.fw.schedule_pod(&mut state, p, &self.snap, &self.handle) {
            Ok(r) => Ok(r.suggested_host),
            Err(ScheduleError::Fit(d)) => Err(format!("{} {:?}", d.message(), d.unschedulable_plugins)),
            Err(ScheduleError::Internal(s)) => panic!("{s}"),
        };
        (r, self.gate.calls.load(Ordering::Relaxed) - before)
    }

    /// Changes a node (a pod lands on it) and sets whether Gate blocks it.
    fn touch(&mut self, n: usize, blocked: bool) {
        let name = format!("n{n}");
        let p = pod(&format!("filler-{n}-{}", self.cache.pod_count())).node(&name).req("10m", "").info();
        self.cache.add_or_update_pod(p);
        let mut b = self.gate.blocked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if blocked {
            b.insert(name);
        } else {
            b.remove(&name);
        }
    }
}

fn web(name: &str) -> Arc<PodInfo> {
    pod(name).labels(&[("app", "web")]).req("100m", "100Mi").info()
}

#[test]
fn an_equivalent_pod_rejudges_only_the_nodes_changed_since_the_last_failed_scan() {
    let mut w = world(false);
    let (first, judged) = w.schedule(&web("a"));
    let message = first.expect_err("every node is gated");
    assert_eq!(judged, NODES);
    assert!(message.starts_with("0/20 nodes are available: 20 node(s) were gated."), "{message}");
    assert!(message.ends_with("[\"Gate\"]"), "{message}");

    // Same spec, labels and namespace, another pod: nothing changed, nothing judged, same answer.
    let (second, judged) = w.schedule(&web("b"));
    assert_eq!(second.as_ref().err(), Some(&message));
    assert_eq!(judged, 0);

    // Two nodes change (still gated): only they are judged again.
    w.touch(3, true);
    w.touch(7, true);
    let (third, judged) = w.schedule(&web("c"));
    assert_eq!(third.as_ref().err(), Some(&message));
    assert_eq!(judged, 2);

    // A changed node that now passes: the pod lands there.
    w.touch(11, false);
    let (fourth, _) = w.schedule(&web("d"));
    assert_eq!(fourth, Ok("n11".to_owned()));
}

#[test]
fn pods_that_differ_or_are_nominated_or_meet_a_non_local_filter_are_judged_on_every_node() {
    let mut w = world(false);
    assert_eq!(w.schedule(&web("a")).1, NODES);
    // Other labels, other requests, another namespace: another class.
    let other_labels = pod("b").labels(&[("app", "db")]).req("100m", "100Mi").info();
    let other_requests = pod("c").labels(&[("app", "web")]).req("200m", "100Mi").info();
    let other_namespace = pod("d").ns("other").labels(&[("app", "web")]).req("100m", "100Mi").info();
    for p in [other_labels, other_requests, other_namespace] {
        assert_eq!(w.schedule(&p).1, NODES, "{}", p.name);
    }
    // The memo now holds the last class (other namespace); back to web: a full scan once...
    assert_eq!(w.schedule(&web("e")).1, NODES);
    assert_eq!(w.schedule(&web("f")).1, 0);
    // ...but never for a pod nominated to a node (the node keeps no room against it).
    let nominated = pod("g")
        .labels(&[("app", "web")])
        .req("100m", "100Mi")
        .with(|p| p.status.get_or_insert_with(Default::default).nominated_node_name = Some("n1".into()))
        .info();
    w.cache.nominate(&nominated, None, Some("n1"));
    assert_eq!(w.schedule(&nominated).1, NODES + 1, "its nominated node first, then every node");
    // The nomination changed n1: an equivalent pod judges n1 alone.
    assert_eq!(w.schedule(&web("h")).1, 1);

    let mut w = world(true);
    assert_eq!(w.schedule(&web("a")).1, NODES);
    assert_eq!(w.schedule(&web("b")).1, NODES, "a filter that is not node-local disables the memo");
}

#[test]
fn with_the_default_plugins_a_freed_node_is_found_and_a_full_one_stays_full() {
    // Nodes of 4 CPU, each full with one 3500m pod: a 1-CPU pod fits nowhere.
    let fw = Profile::defaults("default-scheduler").build().unwrap_or_else(|e| panic!("{e}"));
    let handle = Handle::default();
    let mut cache = Cache::new();
    for i in 0..NODES {
        let name = format!("n{i}");
        cache.add_or_update_node(NodeStatic::new(Arc::new(node(&name).0)));
        cache.add_or_update_pod(pod(&format!("big-{i}")).node(&name).req("3500m", "").info());
    }
    let mut snap = Snapshot::default();
    let mut run = |cache: &mut Cache, name: &str| {
        cache.update_snapshot(&mut snap);
        let p = pod(name).req("1", "1Gi").info();
        match fw.schedule_pod(&mut CycleState::new(), &p, &snap, &handle) {
            Ok(r) => Ok(r.suggested_host),
            Err(ScheduleError::Fit(d)) => Err(d.message()),
            Err(ScheduleError::Internal(s)) => panic!("{s}"),
        }
    };
    let full = run(&mut cache, "a");
    assert_eq!(full, Err("0/20 nodes are available: 20 Insufficient cpu.".to_owned()));
    assert_eq!(run(&mut cache, "b"), full);
    // A node gets fuller, another is freed.
    cache.add_or_update_pod(pod("more").node("n4").req("100m", "").info());
    assert_eq!(run(&mut cache, "c"), full);
    cache.remove_pod("uid-big-9");
    assert_eq!(run(&mut cache, "d"), Ok("n9".to_owned()));
    // A new node: the snapshot is rebuilt (a new epoch), the memo cannot apply.
    cache.add_or_update_node(NodeStatic::new(Arc::new(node("fresh").0)));
    cache.add_or_update_pod(pod("e-taken").node("n9").req("3500m", "").info());
    let landed = run(&mut cache, "e");
    assert_eq!(landed, Ok("fresh".to_owned()));
}
