//! Pod start latency (bound → Running) for the process and runc backends, and 100 hollow nodes ×
//! 100 pods on the fake runtime, all against the in-memory API server.
//!
//! `cargo bench -p bosun-runtime --bench runtime`; ends with `BENCH name=value` lines.
//! `BOSUN_BENCH_ONLY=fake` runs only the hollow-node figures (`fake-figure`: only the BENCH
//! one, e.g. for profiling). `runtime.fake.10000_pods_running_s`
//! is measured with a pod watch per node (as before); the figures with one shared pod watch
//! ([`SharedPodFeed`]) are printed beside it. Each fake run also prints the node agents' API calls
//! per pod (counted through a client layer) when all pods are Running and 2 s later: Events are
//! written in the background by each agent's event sink, so some may still be queued when the last
//! pod turns Running; `runtime.fake.10000_pods_events_written_s` is the time until every pod's
//! three Events (Pulled, Created, Started) are written too.

use bosun_core::k8s_openapi::api::core::v1::Pod;
use bosun_core::{Api, Client, PostParams, WatchEvent, WatchParams};
use bosun_runtime::agent::feed::SharedPodFeed;
use bosun_runtime::runc::busybox_rootfs;
use bosun_runtime::{FakeRuntime, HostImages, ImageStore, LocalImageStore, NodeAgent, NodeAgentConfig, ProcessRuntime, RuncRuntime};
use futures::StreamExt;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::counting;

fn pod(name: &str, node: &str, image: &str, command: &[&str]) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": "default" },
        "spec": { "nodeName": node, "terminationGracePeriodSeconds": 0,
                  "containers": [{ "name": "app", "image": image, "command": command }] }
    }))
    .expect("pod")
}

fn is_running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Creates pods one after another and times each from creation (already bound) to Running.
async fn start_latencies(client: &Arc<dyn Client>, node: &str, image: &str, command: &[&str], n: usize) -> Vec<f64> {
    let api = Api::<Pod>::namespaced(client.clone(), "default");
    let mut watch = api.watch(&WatchParams::default().from_version("0")).await.expect("watch");
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("{node}-lat-{i}");
        let t = Instant::now();
        api.create(&pod(&name, node, image, command), &PostParams::default()).await.expect("create");
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(30), watch.next())
                .await
                .expect("pod started in time")
                .expect("watch open")
                .expect("event");
            if let WatchEvent::Added(p) | WatchEvent::Modified(p) = ev
                && p.metadata.name.as_deref() == Some(name.as_str())
                && is_running(&p)
            {
                break;
            }
        }
        out.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    for i in 0..n {
        let _ = api.delete(&format!("{node}-lat-{i}"), &Default::default()).await;
    }
    out
}

fn report(name: &str, mut ms: Vec<f64>) -> f64 {
    ms.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&ms, 0.5), percentile(&ms, 0.99));
    println!("{name}: n={} p50={p50:.1} ms p99={p99:.1} ms max={:.1} ms", ms.len(), ms[ms.len() - 1]);
    p99
}

async fn process_bench(dir: &std::path::Path) -> f64 {
    let client: Arc<dyn Client> = bosun_store::ApiServer::in_memory();
    let runtime = ProcessRuntime::new(dir.join("process/runtime")).expect("runtime");
    let config = NodeAgentConfig::new("proc", dir.join("process/agent")).measure_pressure(false);
    let node = NodeAgent::new(client.clone(), runtime, HostImages, config).start().await.expect("agent");
    let ms = start_latencies(&client, "proc", "host", &["sleep", "600"], 100).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    node.shutdown();
    report("runtime.process.start", ms)
}

async fn runc_bench(dir: &std::path::Path) -> Option<f64> {
    if !RuncRuntime::available() {
        println!("runtime.runc.start: SKIPPED (needs root, runc and the CNI plugins)");
        return None;
    }
    let client: Arc<dyn Client> = bosun_store::ApiServer::in_memory();
    let images = LocalImageStore::open(dir.join("runc/images")).expect("images");
    let src = busybox_rootfs(&dir.join("runc/busybox")).await.expect("busybox");
    images.import_dir("busybox", &src, vec!["/bin/sh".into()]).await.expect("import");
    let runtime = RuncRuntime::builder(dir.join("runc/state")).bridge("bosunbench0").subnet("10.89.200.0/24").build().expect("runc");
    let config = NodeAgentConfig::new("runc", dir.join("runc/agent")).measure_pressure(false);
    let node = NodeAgent::new(client.clone(), runtime, images.clone(), config).start().await.expect("agent");
    let _ = images.ensure("busybox").await;
    let ms = start_latencies(&client, "runc", "busybox", &["sleep", "600"], 30).await;
    // Let the agent stop and remove what it ran (sandboxes, network namespaces).
    let api = Api::<Pod>::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !api.list(&Default::default()).await.expect("list").items.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    node.shutdown();
    Some(report("runtime.runc.start", ms))
}

/// How the hollow nodes of the fake bench get their pods.
#[derive(Clone, Copy, PartialEq)]
enum Watches {
    /// One shared watch, demultiplexed by node name (how hollow nodes in one process run).
    Shared,
    /// One `spec.nodeName` watch per node (a real kubelet's way).
    PerNode,
}

/// The fake bench's figures: seconds until every pod was Running, and (with Events on) until the
/// agents had also written every pod's Pulled, Created and Started Event (written behind the
/// status patches, as kubelet's are).
struct Fake {
    running_s: f64,
    events_written_s: Option<f64>,
}

async fn fake_bench(dir: &std::path::Path, events: bool, watches: Watches) -> Fake {
    const NODES: usize = 100;
    const PODS_PER_NODE: usize = 100;
    let client: Arc<dyn Client> = bosun_store::ApiServer::in_memory();
    // The agents' calls are counted; the bench's own (creates, its watch) are not.
    let counting = counting::Counting::wrap(client.clone());
    let agents: Arc<dyn Client> = counting.clone();
    let feed = (watches == Watches::Shared).then(|| SharedPodFeed::spawn(agents.clone()));
    let mut nodes = Vec::new();
    let shared = watches == Watches::Shared;
    for i in 0..NODES {
        let mut config = NodeAgentConfig::new(format!("hollow-{i}"), dir.join(format!("fake/{events}-{shared}/{i}")))
            .measure_pressure(false)
            .record_events(events);
        if let Some(feed) = &feed {
            config = config.pod_source(feed.clone());
        }
        nodes.push(NodeAgent::new(agents.clone(), FakeRuntime::new(), HostImages, config).start().await.expect("agent"));
    }
    counting.layer().reset();
    let api = Api::<Pod>::namespaced(client.clone(), "default");
    let mut watch = api.watch(&WatchParams::default().from_version("0")).await.expect("watch");
    let total = NODES * PODS_PER_NODE;
    let t = Instant::now();
    let creator = {
        let api = api.clone();
        tokio::spawn(async move {
            let mut batch = futures::stream::iter(0..total)
                .map(|i| {
                    let api = api.clone();
                    async move {
                        let p = pod(&format!("p-{i}"), &format!("hollow-{}", i % NODES), "fake", &[]);
                        api.create(&p, &PostParams::default()).await.map(|_| ())
                    }
                })
                .buffer_unordered(64);
            while let Some(r) = batch.next().await {
                r.expect("create");
            }
        })
    };
    let mut running = HashSet::new();
    while running.len() < total {
        let ev = tokio::time::timeout(Duration::from_secs(120), watch.next()).await.expect("progress").expect("watch open").expect("event");
        if let WatchEvent::Added(p) | WatchEvent::Modified(p) = ev
            && is_running(&p)
        {
            running.insert(p.metadata.name.unwrap_or_default());
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let calls = counting.layer().snapshot();
    creator.await.expect("creator");
    println!(
        "runtime.fake (events {}, {} pod watch): {total} pods on {NODES} hollow nodes Running {secs:.2} s after the first was bound",
        if events { "on" } else { "off" },
        if shared { "one shared" } else { "per-node" },
    );
    let per_pod = |calls: &std::collections::BTreeMap<String, u64>| {
        let each: Vec<String> = calls.iter().map(|(k, v)| format!("{k} {:.2}", *v as f64 / total as f64)).collect();
        format!("{} (total {:.2})", each.join(", "), calls.values().sum::<u64>() as f64 / total as f64)
    };
    println!("  agent API calls per pod until all Running: {}", per_pod(&calls));
    // Three Events per pod (Pulled, Created, Started), each its own create (one per object and reason).
    let events_written_s = if events {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let created = counting.layer().snapshot().get("create events").copied().unwrap_or(0);
            if created >= 3 * total as u64 {
                break Some(t.elapsed().as_secs_f64());
            }
            if Instant::now() > deadline {
                println!("  only {created} of {} Events written 60 s after the last pod ran", 3 * total);
                break None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    } else {
        None
    };
    if let Some(e) = events_written_s {
        println!("  every pod's 3 Events written {e:.2} s after the first was bound");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("  agent API calls per pod 2 s later: {}", per_pod(&counting.layer().snapshot()));
    for n in &nodes {
        n.shutdown();
    }
    Fake { running_s: secs, events_written_s }
}

/// The fake figure's `BENCH` lines.
fn print_fake(fake: &Fake) {
    println!("BENCH runtime.fake.10000_pods_running_s={:.2}", fake.running_s);
    if let Some(e) = fake.events_written_s {
        println!("BENCH runtime.fake.10000_pods_events_written_s={e:.2}");
    }
}

/// Runs the bench; `allocator` names the global allocator in the printed lines.
pub fn main(allocator: &str) {
    println!("allocator: {allocator}");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    let dir = tempfile::tempdir().expect("tempdir");
    if std::env::var("BOSUN_BENCH_ONLY").is_ok_and(|v| v == "fake-figure") {
        let fake = rt.block_on(fake_bench(dir.path(), true, Watches::PerNode));
        print_fake(&fake);
        return;
    }
    if std::env::var("BOSUN_BENCH_ONLY").is_ok_and(|v| v == "fake") {
        let fake = rt.block_on(async {
            fake_bench(dir.path(), true, Watches::Shared).await;
            fake_bench(dir.path(), false, Watches::Shared).await;
            fake_bench(dir.path(), true, Watches::PerNode).await
        });
        print_fake(&fake);
        return;
    }
    let (process, runc, fake) = rt.block_on(async {
        let process = process_bench(dir.path()).await;
        let runc = runc_bench(dir.path()).await;
        // The figure keeps its definition (per-node watches, Events on). At 100 nodes one shared
        // watch is no faster: it decodes every pod in one task, where 100 watches spread that over
        // both cores; it pays off at thousands of nodes (bosun-density).
        fake_bench(dir.path(), true, Watches::Shared).await;
        // Hollow nodes at scale usually skip Events (as KWOK does); report that figure too.
        fake_bench(dir.path(), false, Watches::Shared).await;
        let fake = fake_bench(dir.path(), true, Watches::PerNode).await;
        (process, runc, fake)
    });
    println!("BENCH runtime.process.start_p99_ms={process:.2}");
    if let Some(runc) = runc {
        println!("BENCH runtime.runc.start_p99_ms={runc:.2}");
    }
    print_fake(&fake);
}
