//! `bosun-density`: Kubernetes' density test on hollow nodes, in one process.
//!
//! Starts the API server (in-memory store, HTTPS), the scheduler, the Deployment and ReplicaSet
//! controllers and `--nodes` node agents on the fake runtime; then creates Deployments of
//! `--pods-per-deployment` replicas through the HTTPS API at `--rate` pods per second until
//! `--pods` pods are asked for, and waits until all are Running. Reports pod startup latency
//! (first seen by a watch → observed Running), the API's mutating-call latency (every create,
//! update, patch, delete and subresource call of every component, and of the load generator over
//! HTTPS), the total time and the peak RSS of the process.
//!
//! ```text
//! cargo run --release --bin bosun-density -- --nodes 5000 --pods 150000
//! cargo run --release --bin bosun-density -- --nodes 500 --pods 15000     # the smoke size
//! ```
//! Ends with `BENCH density.*=...` lines.

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use bosun_controllers::{ControllerManager, ManagerConfig};
use bosun_core::k8s_openapi::api::apps::v1::Deployment;
use bosun_core::k8s_openapi::api::core::v1::{Namespace, Pod};
use bosun_core::kube_client::KubeClient;
use bosun_core::watch::{Informers, WatcherConfig};
use bosun_core::{Api, Client, PostParams, WatchEvent, WatchParams};
use bosun_examples::timed::{Timing, quantile};
use bosun_runtime::agent::feed::SharedPodFeed;
use bosun_runtime::{FakeRuntime, HostImages, NodeAgent, NodeAgentConfig};
use bosun_scheduler::Scheduler;
use bosun_store::http::HttpConfig;
use bosun_store::{ApiServer, MemoryStorage, Storage};
use clap::Parser;
use futures::StreamExt;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Density benchmark: hollow nodes, Deployments through the HTTPS API, pod startup latency.
#[derive(Debug, Parser)]
#[command(name = "bosun-density")]
struct Args {
    /// Hollow node agents (fake runtime) in this process.
    #[arg(long, default_value_t = 5000)]
    nodes: usize,
    /// Pods to run in total.
    #[arg(long, default_value_t = 150_000)]
    pods: usize,
    /// Replicas per Deployment.
    #[arg(long, default_value_t = 30)]
    pods_per_deployment: usize,
    /// Pods asked for per second (Deployments are created at rate / pods-per-deployment per second).
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// Give up waiting for Running pods after this many seconds.
    #[arg(long, default_value_t = 1800)]
    timeout_s: u64,
    /// Node state directories go here (default: a fresh directory under the system temp dir).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Watch-cache history per kind, in events (default: the API server's 100,000). Each event holds
    /// the object's previous version; a watch resuming from a version older than the history relists.
    #[arg(long)]
    watch_history: Option<usize>,
    /// Events queued per watcher before the API server ends it as too slow (the server's default
    /// is 4096). Every component shares this process's two cores, so a watcher that falls behind
    /// for a moment would otherwise relist every pod.
    #[arg(long, default_value_t = 32_768)]
    watcher_queue: usize,
    /// Compact the store's history every this many seconds, to the revision of the previous round
    /// (kube-apiserver compacts etcd every 5 minutes); 0 never compacts.
    #[arg(long, default_value_t = 60)]
    compaction_interval_s: u64,
    /// Each node agent watches its own pods (`spec.nodeName=<node>`, as a real kubelet does)
    /// instead of all agents sharing the control plane's pod informer.
    #[arg(long)]
    per_node_watches: bool,
    /// The agents share a pod watch of their own (a second typed copy of every bound pod) instead
    /// of the control plane's pod informer.
    #[arg(long)]
    own_pod_watch: bool,
    /// The scheduler's and controllers' informers take their initial state (and every relist) from
    /// paged lists, 500 objects a page, instead of streaming lists (watches with
    /// `sendInitialEvents`, which the API server serves from its watch cache one object at a time).
    #[arg(long)]
    paged_lists: bool,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,bosun_density=info")),
        )
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("error: tokio runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn run(args: Args) -> Result<bool, BoxError> {
    let work = args.work_dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("bosun-density-{}", std::process::id())));
    std::fs::create_dir_all(&work)?;
    let started = Instant::now();

    // The control plane. Every in-process component talks through the timing decorator.
    let storage = Arc::new(MemoryStorage::new());
    let mut builder = ApiServer::builder(storage.clone()).watcher_queue(args.watcher_queue);
    if let Some(events) = args.watch_history {
        builder = builder.watch_history(events);
    }
    let api = builder.build()?;
    let _compactor =
        (args.compaction_interval_s > 0).then(|| tokio::spawn(compact(storage, Duration::from_secs(args.compaction_interval_s))));
    let timed = Timing::wrap(api.clone());
    let client: Arc<dyn Client> = timed.clone();
    let http = HttpConfig::for_api_server(&api).https(SocketAddr::from(([127, 0, 0, 1], 0)));
    let server = bosun_store::http::serve(api.clone(), http).await?;
    let kubeconfig = work.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig)?;
    let informers = Informers::new(client.clone()).config(WatcherConfig::default().streaming_list(!args.paged_lists));
    let scheduler = Scheduler::builder(client.clone()).informers(informers.clone()).success_events(false).build()?;
    let _scheduler = scheduler.start().await;
    let manager =
        ControllerManager::new(client.clone()).informers(&informers).config(ManagerConfig::default().only(&["deployment", "replicaset"]));
    let _controllers = manager.spawn_all();
    tracing::info!(url = %server.https_url().unwrap_or_default(), "control plane up");

    // The hollow nodes, registered a few at a time. They share the scheduler's and controllers'
    // pod informer (demultiplexed by node name: one copy of each pod in the process) unless
    // --own-pod-watch (one shared watch of their own) or --per-node-watches.
    let t = Instant::now();
    let feed = (!args.per_node_watches).then(|| match args.own_pod_watch {
        true => SharedPodFeed::spawn(client.clone()),
        false => SharedPodFeed::from_informer(informers.all()),
    });
    let nodes: Vec<_> = futures::stream::iter(0..args.nodes)
        .map(|i| {
            let client = client.clone();
            let root = work.join("nodes").join(i.to_string());
            let feed = feed.clone();
            async move {
                let mut config = NodeAgentConfig::new(format!("hollow-{i}"), root).measure_pressure(false).record_events(false);
                if let Some(feed) = feed {
                    config = config.pod_source(feed);
                }
                NodeAgent::new(client, FakeRuntime::new(), HostImages, config).start().await
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let nodes: Vec<_> = nodes.into_iter().collect::<Result<_, _>>()?;
    tracing::info!(nodes = nodes.len(), secs = t.elapsed().as_secs_f64(), "hollow nodes registered");

    // The observer: first sighting and Running of every pod, from a watch on the in-process API.
    let observer = tokio::spawn(observe(api.clone(), args.pods, Duration::from_secs(args.timeout_s)));

    // The load: Deployments over HTTPS at a steady pod rate.
    let remote = Timing::wrap(Arc::new(KubeClient::from_kubeconfig(&kubeconfig).await?));
    let remote_client: Arc<dyn Client> = remote.clone();
    Api::<Namespace>::all(remote_client.clone())
        .create(&serde_json::from_value(serde_json::json!({"metadata": {"name": "density"}}))?, &PostParams::default())
        .await?;
    let deployments = args.pods.div_ceil(args.pods_per_deployment.max(1));
    let interval = Duration::from_secs_f64(args.pods_per_deployment.max(1) as f64 / args.rate.max(0.001));
    let load_started = Instant::now();
    let generator = {
        let api = Api::<Deployment>::namespaced(remote_client.clone(), "density");
        let per = args.pods_per_deployment.max(1);
        let total = args.pods;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            let mut inflight = futures::stream::FuturesUnordered::new();
            for d in 0..deployments {
                let replicas = per.min(total - d * per);
                tick.tick().await;
                let api = api.clone();
                inflight.push(tokio::spawn(async move { api.create(&deployment(d, replicas), &PostParams::default()).await.map(|_| ()) }));
                // Reap finished creates without blocking the pace.
                while let Some(Some(done)) = futures::FutureExt::now_or_never(inflight.next()) {
                    if let Ok(Err(error)) = done {
                        tracing::warn!(%error, "create deployment failed");
                    }
                }
                if d % 100 == 99 {
                    tracing::info!(deployments = d + 1, of = deployments, "load generator");
                }
            }
            while let Some(done) = inflight.next().await {
                if let Ok(Err(error)) = done {
                    tracing::warn!(%error, "create deployment failed");
                }
            }
        })
    };

    let observed = observer.await?;
    let total_s = load_started.elapsed().as_secs_f64();
    generator.abort();
    let mut startup = observed.startup_s;
    let running = startup.len();
    let mut mutating = timed.layer().latencies_ms();
    let mut http_mutating = remote.layer().latencies_ms();
    let mutating_calls = mutating.len() + http_mutating.len();
    mutating.extend_from_slice(&http_mutating);
    let peak_rss_gib = peak_rss_bytes().unwrap_or(0) as f64 / (1u64 << 30) as f64;
    println!(
        "bosun-density: {running}/{} pods Running on {} hollow nodes in {total_s:.1} s ({:.1} s in all); {mutating_calls} mutating calls; HTTPS creates p99 {:.1} ms",
        args.pods,
        args.nodes,
        started.elapsed().as_secs_f64(),
        quantile(&mut http_mutating, 0.99),
    );
    println!("BENCH density.pods_running={running}");
    println!("BENCH density.pod_startup_p50_s={:.3}", quantile(&mut startup, 0.50));
    println!("BENCH density.pod_startup_p99_s={:.3}", quantile(&mut startup, 0.99));
    println!("BENCH density.api_mutating_p99_ms={:.2}", quantile(&mut mutating, 0.99));
    println!("BENCH density.peak_rss_gib={peak_rss_gib:.2}");
    println!("BENCH density.total_s={total_s:.1}");

    for node in &nodes {
        node.shutdown();
    }
    server.shutdown().await;
    if args.work_dir.is_none() {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(running >= args.pods)
}

/// Compacts the store every `period` to the revision it had one period earlier, so that the
/// history of every write (leases, pod status) does not grow for the whole run.
async fn compact(storage: Arc<MemoryStorage>, period: Duration) {
    let mut previous = None;
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        if let Some(revision) = previous
            && let Err(error) = storage.compact(revision).await
        {
            tracing::warn!(%error, "compaction failed");
        }
        previous = storage.current_revision().await.ok();
    }
}

fn deployment(index: usize, replicas: usize) -> Deployment {
    let name = format!("density-{index}");
    let value = serde_json::json!({
        "metadata": { "name": name, "namespace": "density" },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{ "name": "pause", "image": "registry.k8s.io/pause:3.10" }]
                }
            }
        }
    });
    serde_json::from_value(value).unwrap_or_default()
}

struct Observed {
    /// Seconds from first sighting to Running, per pod that got there.
    startup_s: Vec<f32>,
}

/// Watches every pod until `want` are Running or `timeout` passes.
async fn observe(api: Arc<ApiServer>, want: usize, timeout: Duration) -> Observed {
    let pods = Api::<Pod>::all(api);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen: HashMap<String, Option<Instant>> = HashMap::new();
    let mut startup_s = Vec::with_capacity(want);
    let mut version = String::new();
    // After the watch fell behind: catch up from a streaming list (the current state as ADDED
    // events, one at a time, then a bookmark), not from a list of every pod at once.
    let mut relisting = false;
    let mut last_report = Instant::now();
    'outer: while startup_s.len() < want {
        let params = if relisting {
            WatchParams { send_initial_events: true, allow_bookmarks: true, ..WatchParams::default() }
        } else if version.is_empty() {
            WatchParams::default()
        } else {
            WatchParams::default().from_version(version.clone())
        };
        let mut stream = match pods.watch(&params).await {
            Ok(s) => s,
            Err(error) => {
                tracing::warn!(%error, "watch failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        loop {
            let next = tokio::time::timeout_at(deadline, stream.next()).await;
            let Ok(next) = next else { break 'outer };
            let Some(Ok(event)) = next else { continue 'outer };
            let pod = match event {
                WatchEvent::Added(p) | WatchEvent::Modified(p) => p,
                WatchEvent::Bookmark(b) => {
                    if b.ends_initial_events() {
                        relisting = false;
                    }
                    version = b.resource_version;
                    continue;
                }
                WatchEvent::Deleted(_) => continue,
                WatchEvent::Error(status) => {
                    tracing::warn!(message = %status.message.unwrap_or_default(), "observer watch ended; relisting");
                    relisting = true;
                    continue 'outer;
                }
            };
            version = pod.metadata.resource_version.clone().unwrap_or_default();
            count(&mut seen, &mut startup_s, &pod, relisting);
            if last_report.elapsed() > Duration::from_secs(5) {
                tracing::info!(running = startup_s.len(), of = want, "pods running");
                last_report = Instant::now();
            }
            if startup_s.len() >= want {
                break 'outer;
            }
        }
    }
    Observed { startup_s }
}

/// Counts a pod's first sighting and, once, its being Running. A pod first seen in a relist after
/// the watch fell behind is timed from its creationTimestamp (second precision), not from the list.
fn count(seen: &mut HashMap<String, Option<Instant>>, startup_s: &mut Vec<f32>, pod: &Pod, listed: bool) {
    let Some(uid) = pod.metadata.uid.clone() else { return };
    let first_sighting = || {
        let age = pod
            .metadata
            .creation_timestamp
            .as_ref()
            .filter(|_| listed)
            .and_then(|t| Duration::try_from(bosun_core::k8s_openapi::jiff::Timestamp::now().duration_since(t.0)).ok())
            .unwrap_or_default();
        Some(Instant::now().checked_sub(age).unwrap_or_else(Instant::now))
    };
    // Some(first sighting) while pending; None once counted, so each pod counts once.
    let entry = seen.entry(uid).or_insert_with(first_sighting);
    let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    if running && let Some(first) = entry.take() {
        startup_s.push(first.elapsed().as_secs_f32());
    }
}

/// Peak resident set size of this process (`VmHWM`).
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
