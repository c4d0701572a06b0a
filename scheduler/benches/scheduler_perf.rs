//! A benchmark modelled on kube-scheduler's scheduler_perf: nodes of 4 CPU / 32 Gi, pods of
//! 100m / 500Mi, created through the in-process API server and bound through it.
//!
//! `cargo bench -p bosun-scheduler --bench scheduler_perf`. Environment:
//! `BOSUN_BENCH_SCALE` (default 1.0) scales nodes and pods for quick runs;
//! `BOSUN_BENCH_ONLY` runs the workloads whose names contain it;
//! `BOSUN_BENCH_E2E=1` creates the measured pods while the scheduler runs (the timer then also
//! covers their creation) instead of before it starts (a full queue, scheduler_perf's steady state).
//!
//! The bench allocates with mimalloc; `--features bench-system-alloc` builds it with the system
//! allocator (glibc malloc) instead, for an A/B of the two.

#[path = "../tests/it/harness.rs"]
mod harness;

#[cfg(not(feature = "bench-system-alloc"))]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Which allocator this build of the bench uses.
const ALLOCATOR: &str = if cfg!(feature = "bench-system-alloc") { "system" } else { "mimalloc" };

use bosun_core::k8s_openapi::api::core::v1::{Affinity, Pod, PodAffinityTerm, PodAntiAffinity, TopologySpreadConstraint};
use bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use bosun_scheduler::Scheduler;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Clone, Copy)]
enum Kind {
    Basic,
    AntiAffinity,
    TopologySpread,
    Preemption,
}

struct Workload {
    bench: &'static str,
    kind: Kind,
    nodes: usize,
    pods: usize,
}

fn labelled(mut p: Pod, key: &str, value: &str) -> Pod {
    p.metadata.labels = Some(BTreeMap::from([(key.to_owned(), value.to_owned())]));
    p
}

fn selector(key: &str, value: &str) -> LabelSelector {
    LabelSelector { match_labels: Some(BTreeMap::from([(key.to_owned(), value.to_owned())])), match_expressions: None }
}

fn measured_pod(kind: Kind, i: usize) -> Pod {
    let name = format!("pod-{i}");
    match kind {
        Kind::Basic => harness::pod(&name, "100m", "500Mi"),
        Kind::AntiAffinity => {
            let mut p = labelled(harness::pod(&name, "100m", "500Mi"), "color", "green");
            if let Some(s) = p.spec.as_mut() {
                s.affinity = Some(Affinity {
                    pod_anti_affinity: Some(PodAntiAffinity {
                        required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                            label_selector: Some(selector("color", "green")),
                            topology_key: "kubernetes.io/hostname".into(),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
            p
        }
        Kind::TopologySpread => {
            let mut p = labelled(harness::pod(&name, "100m", "500Mi"), "color", "blue");
            if let Some(s) = p.spec.as_mut() {
                s.topology_spread_constraints = Some(vec![TopologySpreadConstraint {
                    max_skew: 5,
                    topology_key: "topology.kubernetes.io/zone".into(),
                    when_unsatisfiable: "DoNotSchedule".into(),
                    label_selector: Some(selector("color", "blue")),
                    ..Default::default()
                }]);
            }
            p
        }
        Kind::Preemption => {
            let mut p = harness::pod(&name, "3", "500Mi");
            if let Some(s) = p.spec.as_mut() {
                s.priority = Some(10);
            }
            p
        }
    }
}

async fn run(w: &Workload, scale: f64) -> f64 {
    let nodes = ((w.nodes as f64 * scale).round() as usize).max(3);
    let pods = ((w.pods as f64 * scale).round() as usize).max(3);
    let client = harness::api_server();
    let setup = Instant::now();
    let zones = if matches!(w.kind, Kind::TopologySpread) { 3 } else { 10 };
    harness::create_nodes(&client, "node", nodes, zones).await.unwrap_or_else(|e| panic!("create nodes: {e}"));
    if matches!(w.kind, Kind::Preemption) {
        // Every node full of low-priority pods (4 × 900m of 4 CPU), bound directly.
        let low: Vec<Pod> = (0..nodes * 4)
            .map(|i| {
                let mut p = harness::pod(&format!("low-{i}"), "900m", "500Mi");
                if let Some(s) = p.spec.as_mut() {
                    s.priority = Some(1);
                    s.node_name = Some(format!("node-{}", i / 4));
                }
                p
            })
            .collect();
        harness::create_pods(&client, low, 64).await.unwrap_or_else(|e| panic!("create low-priority pods: {e}"));
    }
    let mut builder = Scheduler::builder(client.clone()).success_events(false);
    if matches!(w.kind, Kind::Preemption) {
        builder = builder.victim_grace_period(0);
    }
    let scheduler = builder.build().unwrap_or_else(|e| panic!("build scheduler: {e}"));
    let e2e = std::env::var("BOSUN_BENCH_E2E").is_ok_and(|v| v == "1");
    let mut batch: Vec<Pod> = (0..pods).map(|i| measured_pod(w.kind, i)).collect();
    let mut creator = None;
    if !e2e {
        harness::create_pods(&client, std::mem::take(&mut batch), 64).await.unwrap_or_else(|e| panic!("create pods: {e}"));
    }
    eprintln!("{}: {nodes} nodes ready in {:.1}s", w.bench, setup.elapsed().as_secs_f64());
    let running = scheduler.start().await;
    let start = Instant::now();
    if e2e {
        let client = client.clone();
        creator = Some(tokio::spawn(async move { harness::create_pods(&client, batch, 64).await }));
    }
    let target = pods as u64;
    let done = tokio::time::timeout(Duration::from_secs(600), scheduler.wait_scheduled(target)).await;
    let elapsed = start.elapsed().as_secs_f64();
    let created = match creator {
        Some(c) => c.await.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())),
        None => Ok(()),
    };
    let stats = scheduler.stats();
    if done.is_err() || created.is_err() {
        eprintln!("{}: incomplete after {elapsed:.1}s: {stats:?} {created:?}", w.bench);
    }
    running.stop();
    let rate = stats.scheduled as f64 / elapsed;
    eprintln!("{}: {} pods bound in {elapsed:.2}s = {rate:.0} pods/s ({stats:?})", w.bench, stats.scheduled);
    rate
}

/// The scheduling cycles alone (no API): cache, incremental snapshot, filter, score, assume.
/// Shows the algorithm's own ceiling next to the end-to-end figure.
fn cycles_only(w: &Workload, scale: f64) -> Option<f64> {
    use bosun_scheduler::cache::Cache;
    use bosun_scheduler::framework::{CycleState, Handle};
    use bosun_scheduler::node_info::NodeStatic;
    use bosun_scheduler::{PodInfo, Profile, Snapshot};
    use std::sync::Arc;
    if matches!(w.kind, Kind::Preemption) {
        return None;
    }
    let nodes = ((w.nodes as f64 * scale).round() as usize).max(3);
    let pods = ((w.pods as f64 * scale).round() as usize).max(3);
    let zones = if matches!(w.kind, Kind::TopologySpread) { 3 } else { 10 };
    let fw = Profile::defaults("default-scheduler").build().ok()?;
    let handle = Handle::default();
    let mut cache = Cache::new();
    for i in 0..nodes {
        cache.add_or_update_node(NodeStatic::new(Arc::new(harness::node(&format!("node-{i}"), &format!("zone-{}", i % zones)))));
    }
    let infos: Vec<Arc<PodInfo>> = (0..pods)
        .map(|i| {
            let mut p = measured_pod(w.kind, i);
            p.metadata.uid = Some(format!("uid-{i}"));
            PodInfo::new(Arc::new(p))
        })
        .collect();
    let mut snapshot = Snapshot::default();
    let start = Instant::now();
    let mut placed = 0;
    for p in infos {
        cache.update_snapshot(&mut snapshot);
        let mut state = CycleState::new();
        if let Ok(r) = fw.schedule_pod(&mut state, &p, &snapshot, &handle)
            && cache.assume_pod(p, &r.suggested_host).is_ok()
        {
            placed += 1;
        }
    }
    let rate = placed as f64 / start.elapsed().as_secs_f64();
    eprintln!("{}: scheduling cycles alone: {placed} pods in {:.2}s = {rate:.0} pods/s", w.bench, start.elapsed().as_secs_f64());
    Some(rate)
}

fn main() {
    let scale: f64 = std::env::var("BOSUN_BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let only = std::env::var("BOSUN_BENCH_ONLY").unwrap_or_default();
    let workloads = [
        Workload { bench: "scheduler.basic_5000n_10000p.pods_per_s", kind: Kind::Basic, nodes: 5000, pods: 10000 },
        Workload { bench: "scheduler.anti_affinity_5000n_5000p.pods_per_s", kind: Kind::AntiAffinity, nodes: 5000, pods: 5000 },
        Workload { bench: "scheduler.topology_spread_5000n_5000p.pods_per_s", kind: Kind::TopologySpread, nodes: 5000, pods: 5000 },
        Workload { bench: "scheduler.preemption_5000n_5000p.pods_per_s", kind: Kind::Preemption, nodes: 5000, pods: 5000 },
        Workload { bench: "scheduler.basic_15000n_30000p.pods_per_s", kind: Kind::Basic, nodes: 15000, pods: 30000 },
    ];
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => panic!("tokio runtime: {e}"),
    };
    eprintln!("allocator: {ALLOCATOR}");
    let mut results = Vec::new();
    for w in workloads.iter().filter(|w| w.bench.contains(&only)) {
        let rate = rt.block_on(run(w, scale));
        results.push((w.bench.to_owned(), rate));
        if let Some(r) = cycles_only(w, scale) {
            results.push((w.bench.replace("scheduler.", "scheduler.cycles_only."), r));
        }
    }
    for (name, rate) in results {
        println!("BENCH {name}={rate:.0}");
    }
}
