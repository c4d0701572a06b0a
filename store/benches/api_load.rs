//! Load on the HTTP API server in front of the in-memory `ApiServer`, over loopback TCP:
//!
//! - 1,000 mutating requests per second (open loop: create, merge patch, delete of ConfigMaps,
//!   in rotation) for `BOSUN_BENCH_SECONDS` seconds (default 60), reporting p50/p99 latency and
//!   errors;
//! - a LIST of 150,000 pods (`BOSUN_BENCH_PODS` to change the count) over HTTP, reporting seconds.
//!
//! Run: `cargo bench -p bosun-store --bench api_load` (quick: `BOSUN_BENCH_SECONDS=5`).

use bosun_core::k8s_openapi::api::core::v1::Pod;
use bosun_core::{Api, Client, PostParams};
use bosun_store::ApiServer;
use bosun_store::http::{HttpConfig, serve};
use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Objects the patches rotate over.
const POOL: u64 = 64;
/// Deletes remove the object created this many creates earlier (a second at 1,000 requests/s).
const DELETE_LAG: u64 = 333;

type BenchResult = Result<(), Box<dyn std::error::Error>>;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

fn main() -> BenchResult {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run())
}

async fn run() -> BenchResult {
    let seconds = env_number("BOSUN_BENCH_SECONDS", 60);
    let pods = env_number("BOSUN_BENCH_PODS", 150_000);
    let rate = env_number("BOSUN_BENCH_RPS", 1000);

    let api = ApiServer::in_memory();
    let server = serve(api.clone(), HttpConfig::for_api_server(&api)).await?;
    let base = server.url();
    let client = HyperClient::builder(TokioExecutor::new()).pool_max_idle_per_host(256).build_http::<Full<Bytes>>();

    // Warm up: the namespace bootstrap and the ConfigMap watch cache.
    let warm = Request::builder().uri(format!("{base}/api/v1/namespaces/default/configmaps")).body(Full::new(Bytes::new()))?;
    client.request(warm).await?.into_body().collect().await?;

    // The pool of objects the patches target.
    for p in 0..POOL {
        let body = format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"pool-{p}"}},"data":{{"n":"0"}}}}"#);
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("{base}/api/v1/namespaces/default/configmaps"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        client.request(req).await?.into_body().collect().await?;
    }

    // 1. Open-loop mutating load.
    let total = seconds * rate;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(usize::try_from(total)?);
    for i in 0..total {
        let due = started + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let client = client.clone();
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            // Creates of new names, merge patches of a pool of existing ones, deletes of names
            // created a second earlier: every request is independent of the ones in flight.
            let (n, step) = (i / 3, i % 3);
            let collection = format!("{base}/api/v1/namespaces/default/configmaps");
            let patch = |target: String| {
                Request::builder()
                    .method(Method::PATCH)
                    .uri(format!("{collection}/{target}"))
                    .header("content-type", "application/merge-patch+json")
                    .body(Full::new(Bytes::from(format!(r#"{{"data":{{"patched":"{i}"}}}}"#))))
            };
            let req = match step {
                0 => Request::builder().method(Method::POST).uri(&collection).header("content-type", "application/json").body(Full::new(Bytes::from(format!(
                    r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"load-{n}","labels":{{"bench":"load"}}}},"data":{{"n":"{i}"}}}}"#
                )))),
                1 => patch(format!("pool-{}", n % POOL)),
                _ if n >= DELETE_LAG => {
                    Request::builder().method(Method::DELETE).uri(format!("{collection}/load-{}", n - DELETE_LAG)).body(Full::new(Bytes::new()))
                }
                _ => patch(format!("pool-{}", (n + 1) % POOL)),
            };
            let Ok(req) = req else { return (Duration::ZERO, Some("bad request".to_owned())) };
            let sent = Instant::now();
            let failure = match client.request(req).await {
                Ok(resp) => {
                    let status = resp.status();
                    match resp.into_body().collect().await {
                        Ok(body) if !status.is_success() => Some(format!("{status}: {}", String::from_utf8_lossy(&body.to_bytes()))),
                        Ok(_) => None,
                        Err(e) => Some(format!("body: {e}")),
                    }
                }
                Err(e) => Some(format!("transport: {e}")),
            };
            (sent.elapsed(), failure)
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    let mut errors = 0u64;
    for t in tasks {
        let (latency, failure) = t.await?;
        latencies.push(latency);
        if let Some(failure) = failure {
            if errors < 5 {
                println!("error: {failure}");
            }
            errors += 1;
        }
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let p50 = percentile(&latencies, 50.0);
    let p99 = percentile(&latencies, 99.0);
    println!(
        "mutating: {total} requests in {:.1}s ({:.0}/s offered {rate}/s): p50 {p50:.2} ms, p99 {p99:.2} ms, max {:.2} ms, errors {errors}",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    );

    // 2. LIST of many pods, created in-process (the HTTP path is what is measured).
    let created = Instant::now();
    let pod_api: Api<Pod> = Api::namespaced(api.clone() as Arc<dyn Client>, "default");
    let template: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"labels": {"app": "bench", "tier": "web"}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "registry.example/app:1.0", "ports": [{"containerPort": 8080}],
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
    }))?;
    let results: Vec<bool> = futures::stream::iter(0..pods)
        .map(|i| {
            let pod_api = pod_api.clone();
            let mut pod = template.clone();
            pod.metadata.name = Some(format!("pod-{i:06}"));
            async move { pod_api.create(&pod, &PostParams::default()).await.is_ok() }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let failed = results.iter().filter(|ok| !**ok).count();
    println!("created {} pods in {:.1}s ({failed} failed)", pods, created.elapsed().as_secs_f64());

    let target_pods = bosun_core::resource::builtin("", "v1", "Pod").ok_or("no pods")?;
    let started = Instant::now();
    let inproc = api.list(bosun_core::Target::new(target_pods, None), &Default::default()).await?;
    println!("in-process Client::list: {} items in {:.3}s", inproc.items.len(), started.elapsed().as_secs_f64());
    let started = Instant::now();
    let encoded = serde_json::to_vec(&inproc)?;
    println!("encoding that list: {} MiB in {:.3}s", encoded.len() / (1024 * 1024), started.elapsed().as_secs_f64());
    drop((inproc, encoded));
    let mut list_seconds = f64::MAX;
    let mut listed = 0;
    for _ in 0..3 {
        let req =
            Request::builder().uri(format!("{base}/api/v1/pods")).header("accept", "application/json").body(Full::new(Bytes::new()))?;
        let started = Instant::now();
        let resp = client.request(req).await?;
        let body = resp.into_body().collect().await?.to_bytes();
        let took = started.elapsed().as_secs_f64();
        let list: serde_json::Value = serde_json::from_slice(&body)?;
        listed = list["items"].as_array().map_or(0, Vec::len);
        println!("LIST /api/v1/pods: {listed} items, {} MiB in {took:.3}s", body.len() / (1024 * 1024));
        list_seconds = list_seconds.min(took);
    }
    if listed as u64 != pods {
        println!("LIST returned {listed} pods, expected {pods}");
        list_seconds = f64::NAN;
    }

    println!("BENCH api.mutating_1000rps.p50_ms={p50:.3}");
    println!("BENCH api.mutating_1000rps.p99_ms={p99:.3}");
    println!("BENCH api.mutating_1000rps.errors={errors}");
    println!("BENCH api.list_150000_pods.seconds={list_seconds:.3}");
    server.shutdown().await;
    Ok(())
}
