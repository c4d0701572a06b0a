//! Many JSON watchers over HTTP: `BOSUN_BENCH_WATCHERS` (200) watchers of one namespace's pods,
//! each on its own loopback connection, while `BOSUN_BENCH_EVENTS` (2,000) pod updates are
//! written at `BOSUN_BENCH_RATE` per second (500). The same run is made twice in one process:
//! against the default server, which sends each change's JSON encoded once for all its watchers,
//! and against a server without that fast path, which encodes every event once per watcher
//! (what the server did before). Reports the process's CPU time per delivered event (the
//! watchers' own reading included, the same in both) and how long after the last write the last
//! watcher had it.
//!
//! Run: `cargo bench -p bosun-store --bench watch_http`.

use bosun_core::k8s_openapi::api::core::v1::Pod;
use bosun_core::{Api, Client, Patch, PatchParams, PostParams};
use bosun_store::ApiServer;
use bosun_store::http::{HttpConfig, Server, serve};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

const NAMESPACE: &str = "bench";
/// Pods the updates rotate over.
const PODS: usize = 100;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// User plus system CPU time of this process, from `/proc/self/stat` (clock ticks of 10 ms).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with the last ')'): utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(11) + field(12);
    Duration::from_millis(ticks * 10)
}

/// A pod of about 3 KB of JSON, the size of a typical workload pod.
fn pod(i: usize) -> BenchResult<Pod> {
    let env: Vec<_> = (0..12).map(|e| json!({"name": format!("SETTING_{e}"), "value": format!("value-{e}-of-pod-{i}")})).collect();
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("web-{i}"), "labels": {"app": "web", "tier": "frontend", "pod-template-hash": "5d8f9c7b6"},
            "annotations": {"round": "0"}},
        "spec": {"nodeName": format!("node-{}", i % 10), "containers": [{
            "name": "web", "image": "registry.example.com/team/web:1.2.3", "env": env,
            "ports": [{"name": "http", "containerPort": 8080}],
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5},
        }]},
    }))?)
}

/// Opens `watchers` watches from `rv`; each counts the event lines it has read.
async fn watch_all(server: &Server, watchers: usize, rv: &str) -> BenchResult<(Vec<Arc<AtomicU64>>, Vec<tokio::task::JoinHandle<()>>)> {
    let mut counts = Vec::with_capacity(watchers);
    let mut tasks = Vec::with_capacity(watchers);
    let url = format!("{}/api/v1/namespaces/{NAMESPACE}/pods?watch=1&resourceVersion={rv}&timeoutSeconds=600", server.url());
    for _ in 0..watchers {
        // One client per watcher: its own connection, as separate controllers have.
        let client = HyperClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let resp = client.request(Request::builder().uri(&url).body(Full::new(Bytes::new()))?).await?;
        let count = Arc::new(AtomicU64::new(0));
        counts.push(count.clone());
        let mut body = resp.into_body();
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(data) = frame.data_ref() {
                    let lines = data.iter().filter(|&&b| b == b'\n').count() as u64;
                    count.fetch_add(lines, Ordering::Relaxed);
                }
            }
        }));
    }
    Ok((counts, tasks))
}

async fn wait_for(counts: &[Arc<AtomicU64>], n: u64, limit: Duration) -> BenchResult {
    let deadline = Instant::now() + limit;
    while counts.iter().any(|c| c.load(Ordering::Relaxed) < n) {
        if Instant::now() > deadline {
            let least = counts.iter().map(|c| c.load(Ordering::Relaxed)).min().unwrap_or(0);
            return Err(format!("a watcher saw only {least} of {n} events within {limit:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

struct Figures {
    cpu_us_per_event: f64,
    drain_ms: f64,
}

/// One run: watchers on `server`, `events` updates written at `rate`, CPU and drain measured.
async fn run(api: &Arc<ApiServer>, server: &Server, watchers: usize, events: u64, rate: u64, round: &mut u64) -> BenchResult<Figures> {
    let pods: Api<Pod> = Api::namespaced(api.clone() as Arc<dyn Client>, NAMESPACE);
    let rv = pods.list(&Default::default()).await?.metadata.resource_version.unwrap_or_default();
    let (counts, tasks) = watch_all(server, watchers, &rv).await?;
    let mut update = |i: u64| {
        *round += 1;
        let patch = json!({"metadata": {"annotations": {"round": round.to_string()}}});
        let pods = pods.clone();
        async move { pods.patch(&format!("web-{}", i as usize % PODS), &Patch::Merge(patch), &PatchParams::default()).await }
    };
    // Every watcher connected and fed once before the clock starts.
    update(0).await?;
    wait_for(&counts, 1, Duration::from_secs(30)).await?;
    let cpu = cpu_time();
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    for i in 0..events {
        tokio::time::sleep_until((started + interval.mul_f64(i as f64)).into()).await;
        update(i).await?;
    }
    let written = Instant::now();
    wait_for(&counts, events + 1, Duration::from_secs(120)).await?;
    let drain = written.elapsed();
    let cpu = cpu_time().saturating_sub(cpu);
    for t in tasks {
        t.abort();
    }
    let delivered = (events * watchers as u64) as f64;
    Ok(Figures { cpu_us_per_event: cpu.as_secs_f64() * 1e6 / delivered, drain_ms: drain.as_secs_f64() * 1000.0 })
}

fn main() -> BenchResult {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let watchers = usize::try_from(env_number("BOSUN_BENCH_WATCHERS", 200))?;
        let events = env_number("BOSUN_BENCH_EVENTS", 2000);
        let rate = env_number("BOSUN_BENCH_RATE", 500).max(1);
        let api = ApiServer::in_memory();
        let shared = serve(api.clone(), HttpConfig::for_api_server(&api)).await?;
        let alone = serve(api.clone(), HttpConfig::new().catalog(api.clone())).await?;
        let namespaces: Api<bosun_core::k8s_openapi::api::core::v1::Namespace> = Api::all(api.clone() as Arc<dyn Client>);
        namespaces.create(&serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?, &PostParams::default()).await?;
        let pods: Api<Pod> = Api::namespaced(api.clone() as Arc<dyn Client>, NAMESPACE);
        for i in 0..PODS {
            pods.create(&pod(i)?, &PostParams::default()).await?;
        }
        eprintln!("watch fan-out over HTTP: {watchers} watchers, {events} pod updates at {rate}/s, per-watcher encoding, then shared");
        let mut round = 0;
        // Per-watcher encoding first, so that neither run benefits from the other's warm-up alone.
        let per_watcher = run(&api, &alone, watchers, events, rate, &mut round).await?;
        let shared_figures = run(&api, &shared, watchers, events, rate, &mut round).await?;
        let name = format!("api.watch_http_{watchers}w");
        println!("{name}: {watchers} watchers, {events} pod updates at {rate}/s");
        println!("BENCH {name}.shared_encoding.cpu_us_per_event={:.2}", shared_figures.cpu_us_per_event);
        println!("BENCH {name}.per_watcher_encoding.cpu_us_per_event={:.2}", per_watcher.cpu_us_per_event);
        println!("BENCH {name}.shared_encoding.drain_ms={:.1}", shared_figures.drain_ms);
        println!("BENCH {name}.per_watcher_encoding.drain_ms={:.1}", per_watcher.drain_ms);
        println!("BENCH {name}.cpu_ratio={:.2}", per_watcher.cpu_us_per_event / shared_figures.cpu_us_per_event.max(f64::MIN_POSITIVE));
        Ok(())
    })
}
