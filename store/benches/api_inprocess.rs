//! The in-process API layer without HTTP: pod creates and bindings per second through
//! `bosun_core::Client`, and listing 150,000 pods (as objects and as pre-encoded JSON).
//!
//! Run: `cargo bench -p bosun-store --bench api_inprocess` (`BOSUN_BENCH_PODS` changes the count).

use bosun_core::k8s_openapi::api::core::v1::Pod;
use bosun_core::{Api, Client, DynamicObject, ListParams, PostParams, Target};
use bosun_store::ApiServer;
use std::sync::Arc;
use std::time::Instant;

type BenchResult = Result<(), Box<dyn std::error::Error>>;

fn main() -> BenchResult {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run())
}

fn pod(i: usize) -> Result<Pod, serde_json::Error> {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("pod-{i:06}"), "namespace": "default", "labels": {"app": "bench", "shard": (i % 10).to_string()}},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
    }))
}

async fn run() -> BenchResult {
    let count: usize = std::env::var("BOSUN_BENCH_PODS").ok().and_then(|v| v.parse().ok()).unwrap_or(150_000);
    let server = ApiServer::in_memory();
    let client: Arc<dyn Client> = server.clone();
    let pods = Api::<Pod>::namespaced(client.clone(), "default");

    let started = Instant::now();
    let writers = 64;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let pods = pods.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < count {
                pods.create(&pod(i)?, &PostParams::default()).await?;
                i += writers;
            }
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        }));
    }
    for t in tasks {
        t.await?.map_err(|e| e.to_string())?;
    }
    let creates = count as f64 / started.elapsed().as_secs_f64();
    println!("created {count} pods: {creates:.0}/s");

    let binds = count.min(10_000);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let pods = pods.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < binds {
                pods.bind(&format!("pod-{i:06}"), &format!("node-{}", i % 100)).await?;
                i += writers;
            }
            Ok::<(), bosun_core::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let bind_rate = binds as f64 / started.elapsed().as_secs_f64();
    println!("bound {binds} pods: {bind_rate:.0}/s");

    let res = bosun_core::resource::builtin("", "v1", "Pod").ok_or("pods")?;
    // Warm the cache (the first list after start waits for it to fill).
    server.list_encoded(Target::new(res, None), &ListParams::default().limit(1)).await?;
    let started = Instant::now();
    let encoded = server.list_encoded(Target::new(res, None), &ListParams::default()).await?;
    let bytes: usize = encoded.items.iter().map(|b| b.len()).sum();
    let encoded_s = started.elapsed().as_secs_f64();
    println!("list_encoded {} pods ({} MiB): {encoded_s:.3}s", encoded.items.len(), bytes >> 20);
    let started = Instant::now();
    let listed = client.list(Target::new(res, None), &ListParams::default()).await?;
    let list_s = started.elapsed().as_secs_f64();
    println!("list {} pods as objects: {list_s:.3}s", listed.items.len());
    let started = Instant::now();
    let on_node = client.list(Target::new(res, None), &ListParams::default().fields("spec.nodeName=node-7")).await?;
    println!("list by spec.nodeName ({} pods): {:.4}s", on_node.items.len(), started.elapsed().as_secs_f64());

    // What a typed client (`Api<Pod>`) pays per object it receives: converting the listed
    // objects, borrowed (`to_typed`, copying) and consumed (`into_typed`, moving).
    let copy = listed.items.clone();
    let started = Instant::now();
    let borrowed = listed.items.iter().map(DynamicObject::to_typed::<Pod>).collect::<bosun_core::Result<Vec<_>>>()?;
    let borrowed_s = started.elapsed().as_secs_f64();
    drop(borrowed);
    let started = Instant::now();
    let consumed = copy.into_iter().map(DynamicObject::into_typed::<Pod>).collect::<bosun_core::Result<Vec<_>>>()?;
    let consumed_s = started.elapsed().as_secs_f64();
    println!("typed {} pods: borrowed {borrowed_s:.3}s, consumed {consumed_s:.3}s", consumed.len());

    println!("BENCH api.inprocess.creates_per_s={creates:.0}");
    println!("BENCH api.inprocess.binds_per_s={bind_rate:.0}");
    println!("BENCH api.inprocess.list_150000_pods_encoded.seconds={encoded_s:.3}");
    println!("BENCH api.inprocess.list_150000_pods.seconds={list_s:.3}");
    println!("BENCH api.inprocess.typed_150000_pods.borrowed_s={borrowed_s:.3}");
    println!("BENCH api.inprocess.typed_150000_pods.consumed_s={consumed_s:.3}");
    Ok(())
}
