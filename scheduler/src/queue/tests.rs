use super::*;
use crate::framework::{ActionType, EventResource, Profile};
use crate::node_info::NodeStatic;
use crate::plugins::testutil::{node, pod};
use bosun_core::k8s_openapi::api::core::v1::PodSchedulingGate;

struct Manual(Arc<Mutex<Instant>>);

impl Manual {
    fn new() -> (Self, Clock) {
        let t = Arc::new(Mutex::new(Instant::now()));
        let c = t.clone();
        (Self(t), Arc::new(move || *c.lock().unwrap_or_else(std::sync::PoisonError::into_inner)))
    }
    fn advance(&self, d: Duration) {
        let mut t = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *t += d;
    }
}

fn queue(clock: Clock) -> SchedulingQueue {
    let fw = Arc::new(Profile::defaults(crate::DEFAULT_SCHEDULER_NAME).build().unwrap_or_else(|e| panic!("{e}")));
    SchedulingQueue::new(&[fw], Arc::default(), clock).unwrap_or_else(|e| panic!("{e}"))
}

fn names(q: &SchedulingQueue) -> Vec<String> {
    std::iter::from_fn(|| q.try_pop()).map(|p| p.pod.name.clone()).collect()
}

#[test]
fn active_pods_leave_by_priority_then_first_in_first_out() {
    let (m, clock) = Manual::new();
    let q = queue(clock);
    for (name, prio) in [("low-1", 0), ("high", 100), ("low-2", 0), ("mid", 50)] {
        q.add(pod(name).priority(prio).info());
        m.advance(Duration::from_millis(1));
    }
    assert_eq!(names(&q), ["high", "mid", "low-1", "low-2"]);
}

#[test]
fn backoff_doubles_from_one_second_to_a_ten_second_cap() {
    let (_, clock) = Manual::new();
    let q = queue(clock);
    q.add(pod("p").info());
    let mut entry = q.try_pop().unwrap_or_else(|| panic!("pod queued"));
    let start = entry.timestamp;
    let mut seen = Vec::new();
    for attempts in 1..=6 {
        entry.attempts = attempts;
        seen.push(entry.backoff_expiry().duration_since(start).as_secs());
    }
    assert_eq!(seen, [1, 2, 4, 8, 10, 10]);
}

#[test]
fn a_failed_pod_waits_in_backoff_when_an_event_arrived_during_its_cycle() {
    let (m, clock) = Manual::new();
    let q = queue(clock);
    q.add(pod("p").req("8", "").info());
    let mut entry = q.try_pop().unwrap_or_else(|| panic!("pod queued"));
    let cycle = q.scheduling_cycle();
    let large = EventObject::Node(NodeStatic::new(Arc::new(node("large").alloc("cpu", "16").0)));
    q.on_event(&ClusterEvent::new(EventResource::Node, ActionType::ADD), None, Some(&large));
    entry.unschedulable_plugins = vec!["NodeResourcesFit".into()];
    q.add_unschedulable(entry, cycle);
    assert!(q.is_backing_off("uid-p"));
    q.flush_backoff_completed();
    assert!(q.try_pop().is_none(), "still backing off");
    m.advance(Duration::from_millis(1001));
    q.flush_backoff_completed();
    assert_eq!(names(&q), ["p"]);
}

#[test]
fn queueing_hints_move_only_pods_an_event_can_help() {
    let (m, clock) = Manual::new();
    let q = queue(clock);
    q.add(pod("big").req("8", "").info());
    let mut entry = q.try_pop().unwrap_or_else(|| panic!("pod queued"));
    let cycle = q.scheduling_cycle();
    entry.unschedulable_plugins = vec!["NodeResourcesFit".into()];
    q.add_unschedulable(entry, cycle);
    assert!(q.is_unschedulable("uid-big"));
    m.advance(Duration::from_secs(20));
    // A node too small for the pod: NodeResourcesFit's hint skips it.
    let small = EventObject::Node(NodeStatic::new(Arc::new(node("small").0)));
    q.on_event(&ClusterEvent::new(EventResource::Node, ActionType::ADD), None, Some(&small));
    assert!(q.is_unschedulable("uid-big"));
    // A pod on another node going away is not about nodes: NodeResourcesFit registered for it, so it moves.
    let large = EventObject::Node(NodeStatic::new(Arc::new(node("large").alloc("cpu", "16").0)));
    q.on_event(&ClusterEvent::new(EventResource::Node, ActionType::ADD), None, Some(&large));
    assert!(!q.is_unschedulable("uid-big"));
    assert_eq!(names(&q), ["big"]);
}

#[test]
fn unrelated_events_leave_unschedulable_pods_alone_until_the_five_minute_flush() {
    let (m, clock) = Manual::new();
    let q = queue(clock);
    q.add(pod("p").node_selector(&[("disk", "ssd")]).info());
    let mut entry = q.try_pop().unwrap_or_else(|| panic!("pod queued"));
    let cycle = q.scheduling_cycle();
    entry.unschedulable_plugins = vec!["NodeAffinity".into()];
    q.add_unschedulable(entry, cycle);
    // NodeAffinity does not care about pods being deleted.
    q.on_event(&ClusterEvent::new(EventResource::AssignedPod, ActionType::DELETE), None, None);
    assert!(q.is_unschedulable("uid-p"));
    m.advance(Duration::from_secs(299));
    q.flush_unschedulable_leftover();
    assert!(q.is_unschedulable("uid-p"));
    m.advance(Duration::from_secs(2));
    q.flush_unschedulable_leftover();
    assert_eq!(names(&q), ["p"]);
}

#[test]
fn gated_pods_wait_outside_the_active_queue_until_their_gates_go() {
    let (m, clock) = Manual::new();
    let q = queue(clock);
    let gated = pod("g").with(|p| {
        if let Some(s) = p.spec.as_mut() {
            s.scheduling_gates = Some(vec![PodSchedulingGate { name: "wait".into() }]);
        }
    });
    q.add(gated.clone().info());
    assert!(q.try_pop().is_none());
    m.advance(Duration::from_secs(600));
    q.flush_unschedulable_leftover();
    assert!(q.try_pop().is_none(), "gated pods are not flushed");
    q.update(pod("g").info());
    assert_eq!(names(&q), ["g"]);
}

#[test]
fn deleted_pods_leave_every_queue() {
    let (_, clock) = Manual::new();
    let q = queue(clock);
    q.add(pod("a").info());
    q.add(pod("b").info());
    q.delete("uid-a");
    assert_eq!(names(&q), ["b"]);
    assert_eq!(q.lens(), (0, 0, 0));
}

#[test]
fn the_nominator_tracks_nominations_by_node() {
    let n = Nominator::default();
    assert!(n.is_empty());
    n.add(pod("a").info(), "n1");
    n.add(pod("a").info(), "n2");
    assert!(n.pods_for_node("n1").is_empty());
    assert_eq!(n.node_of("uid-a").as_deref(), Some("n2"));
    n.remove("uid-a");
    assert!(n.is_empty());
}

#[test]
fn in_flight_events_the_hints_ignore_leave_the_pod_unschedulable() {
    let (_, clock) = Manual::new();
    let q = queue(clock);
    q.add(pod("p").node_selector(&[("disk", "ssd")]).info());
    let mut entry = q.try_pop().unwrap_or_else(|| panic!("pod queued"));
    let cycle = q.scheduling_cycle();
    // During the cycle a node without the label arrives: NodeAffinity's hint skips it.
    let plain = EventObject::Node(NodeStatic::new(Arc::new(node("plain").0)));
    q.on_event(&ClusterEvent::new(EventResource::Node, ActionType::ADD), None, Some(&plain));
    entry.unschedulable_plugins = vec!["NodeAffinity".into()];
    q.add_unschedulable(entry, cycle);
    assert!(q.is_unschedulable("uid-p"));
}

#[test]
fn a_blocking_pop_takes_an_event_moved_pod_from_backoff_when_nothing_is_active() {
    let (_, clock) = Manual::new();
    let q = Arc::new(queue(clock));
    q.add(pod("p").req("8", "").info());
    let mut entry = q.try_pop().unwrap_or_else(|| panic!("pod queued"));
    let cycle = q.scheduling_cycle();
    entry.unschedulable_plugins = vec!["NodeResourcesFit".into()];
    q.add_unschedulable(entry, cycle);
    q.on_event(&ClusterEvent::new(EventResource::AssignedPod, ActionType::DELETE), None, None);
    assert!(q.is_backing_off("uid-p"), "moved to backoff, whose second has not passed");
    let (tx, rx) = std::sync::mpsc::channel();
    let q2 = q.clone();
    std::thread::spawn(move || {
        let _ = tx.send(q2.pop().map(|p| p.pod.name.clone()));
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).ok().flatten().as_deref(), Some("p"));
    q.close();
}

#[test]
fn a_pod_changed_during_its_own_cycle_is_retried_after_backoff_instead_of_parked() {
    let (m, clock) = Manual::new();
    let q = queue(clock);
    q.add(pod("p").node_selector(&[("disk", "ssd")]).info());
    let mut entry = q.try_pop().unwrap_or_else(|| panic!("pod queued"));
    let cycle = q.scheduling_cycle();
    // While the cycle judges the old spec, the pod's selector is fixed (no cluster event follows).
    let fixed = pod("p").with(|p| p.metadata.resource_version = Some("2".into())).info();
    q.update(fixed);
    entry.unschedulable_plugins = vec!["NodeAffinity".into()];
    q.add_unschedulable(entry, cycle);
    assert!(q.is_backing_off("uid-p"), "the update is the pod's own event: it must not wait five minutes");
    m.advance(Duration::from_millis(1001));
    q.flush_backoff_completed();
    let again = q.try_pop().unwrap_or_else(|| panic!("retried"));
    assert!(again.pod.pod.spec.as_ref().is_some_and(|s| s.node_selector.is_none()), "the retry judges the new version");
}

#[test]
fn a_status_only_change_during_the_cycle_does_not_count_as_an_event() {
    let (_, clock) = Manual::new();
    let q = queue(clock);
    q.add(pod("p").node_selector(&[("disk", "ssd")]).info());
    let mut entry = q.try_pop().unwrap_or_else(|| panic!("pod queued"));
    let cycle = q.scheduling_cycle();
    let mut raw = (*entry.pod.pod).clone();
    raw.metadata.resource_version = Some("2".into());
    raw.status = Some(Default::default());
    assert!(q.update_in_flight(PodInfo::new(Arc::new(raw))));
    entry.unschedulable_plugins = vec!["NodeAffinity".into()];
    q.add_unschedulable(entry, cycle);
    assert!(q.is_unschedulable("uid-p"));
    assert!(!q.update_in_flight(pod("other").info()), "not in flight");
}
