//! Controller benchmarks against the in-process API server, with pods made ready (or completed) at
//! once by a simulated kubelet:
//! - a Deployment of 10,000 replicas converging, then its rolling update, and 1,000 Deployments of 10;
//! - a DaemonSet over 5,000 Nodes converging (status shows every pod scheduled and ready);
//! - 1,000 Jobs of 10 completions (parallelism 10) finishing, their pods succeeding at once.
//!
//! The default run is a tenth of that (it stays under two minutes in a debug build) and names its
//! figures after the sizes it ran; the full sizes print the issue's figure names:
//!
//! ```text
//! BOSUN_BENCH_FULL=1 cargo bench -p bosun-controllers --bench controllers
//! cargo bench -p bosun-controllers --bench controllers -- daemonset jobs   # only these groups
//! cargo bench -p bosun-controllers --bench controllers -- single   # the 10,000-replica Deployment
//! cargo bench -p bosun-controllers --bench controllers -- many     # the 1,000 Deployments of 10
//! ```
//!
//! The benchmark allocates with mimalloc, as the cluster binaries do.

use bosun_controllers::harness::kubelet;
use bosun_controllers::runtime::{Action, backoff_policy};
use bosun_controllers::{Controller, ControllerManager, ManagerConfig};
use bosun_core::meta::is_deleting;
use bosun_core::{Api, Client, DeleteParams, ListParams, Object, Patch, PatchParams, PostParams};
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, Node, NodeCondition, NodeStatus, Pod, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

type Labels = std::collections::BTreeMap<String, String>;

// Allocation-heavy (JSON, objects per event): mimalloc, as in the cluster binaries.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn labels(app: &str) -> Labels {
    [("app".to_owned(), app.to_owned())].into()
}

fn pod_template(app: &str, image: &str, restart: Option<&str>) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta { labels: Some(labels(app)), ..ObjectMeta::default() }),
        spec: Some(PodSpec {
            containers: vec![Container { name: "main".into(), image: Some(image.into()), ..Container::default() }],
            restart_policy: restart.map(str::to_owned),
            ..PodSpec::default()
        }),
    }
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    Deployment {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some("default".into()), ..ObjectMeta::default() },
        spec: DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector { match_labels: Some(labels(name)), ..LabelSelector::default() },
            template: pod_template(name, "web:1", None),
            ..DeploymentSpec::default()
        },
        status: None,
    }
}

fn daemonset(name: &str) -> DaemonSet {
    DaemonSet {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some("default".into()), ..ObjectMeta::default() },
        spec: DaemonSetSpec {
            selector: LabelSelector { match_labels: Some(labels(name)), ..LabelSelector::default() },
            template: pod_template(name, "agent:1", None),
            ..DaemonSetSpec::default()
        },
        status: None,
    }
}

fn node(name: &str) -> Node {
    Node {
        metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() },
        spec: None,
        status: Some(NodeStatus {
            conditions: Some(vec![NodeCondition { type_: "Ready".into(), status: "True".into(), ..NodeCondition::default() }]),
            ..NodeStatus::default()
        }),
    }
}

fn job(name: &str, completions: i32, parallelism: i32) -> Job {
    Job {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some("default".into()), ..ObjectMeta::default() },
        spec: Some(JobSpec {
            completions: Some(completions),
            parallelism: Some(parallelism),
            template: pod_template(name, "batch:1", Some("Never")),
            ..JobSpec::default()
        }),
        status: None,
    }
}

fn deployment_done(d: &Deployment) -> bool {
    let want = d.spec.replicas.unwrap_or(1);
    d.status.as_ref().is_some_and(|s| {
        s.observed_generation == d.metadata.generation
            && s.updated_replicas == Some(want)
            && s.replicas == Some(want)
            && s.available_replicas == Some(want)
    })
}

fn daemonset_done(d: &DaemonSet, nodes: i32) -> bool {
    let s = d.status.clone().unwrap_or_default();
    s.desired_number_scheduled == nodes && s.current_number_scheduled == nodes && s.number_ready == nodes
}

fn job_done(j: &Job) -> bool {
    bosun_controllers::builtin::job::finished_condition(j).is_some_and(|c| c.type_ == "Complete")
}

/// Polls `api` until `expect` objects all satisfy `done`; returns the seconds since `start`.
async fn wait_all<K: Object>(
    api: &Api<K>,
    expect: usize,
    start: Instant,
    limit: Duration,
    poll: Duration,
    done: impl Fn(&K) -> bool,
) -> Result<f64, String> {
    let mut shown = Instant::now();
    loop {
        let list = api.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
        let finished = list.items.iter().filter(|o| done(o)).count();
        if list.items.len() == expect && finished == expect {
            return Ok(start.elapsed().as_secs_f64());
        }
        if shown.elapsed() >= Duration::from_secs(5) {
            shown = Instant::now();
            eprintln!("  {:.1}s: {finished}/{expect} done", start.elapsed().as_secs_f64());
        }
        if start.elapsed() > limit {
            return Err(format!("not converged after {limit:?}: {finished}/{expect} done"));
        }
        tokio::time::sleep(poll).await;
    }
}

/// Prints each controller's queue and any watch not ready, every second (`BOSUN_BENCH_MONITOR=1`).
async fn monitor(metrics: bosun_controllers::Metrics) {
    let start = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut line = format!("  [{:.0}s]", start.elapsed().as_secs_f64());
        for name in metrics.names() {
            let m = metrics.controller(&name);
            let q = m.queue();
            line.push_str(&format!(
                " {name}: n={} q={} due={} run={} retry={} oldest={:.2}s;",
                m.reconciles(),
                q.queued,
                q.due,
                q.running,
                q.retrying,
                q.oldest.as_secs_f64()
            ));
            for (res, state) in m.watches() {
                if state != bosun_core::watch::ReflectorState::Ready {
                    line.push_str(&format!(" {res}={state:?};"));
                }
            }
        }
        eprintln!("{line}");
    }
}

/// As [`wait_all`] for objects created after `start`, but reading a watch-fed cache instead of
/// listing: a list of 1,000 Deployments every 100 ms copies and converts each of them, a cost
/// that grows with their number and competes with the controllers being measured. (Not for a
/// change to existing objects: the cache may still hold their state from before the change.)
async fn wait_all_watched<K: bosun_core::TypedObject>(
    api: &Api<K>,
    expect: usize,
    start: Instant,
    limit: Duration,
    done: impl Fn(&K) -> bool,
) -> Result<f64, String> {
    let informer = bosun_core::watch::Informer::spawn(api.clone(), bosun_core::watch::WatcherConfig::default());
    informer.wait_ready().await;
    let mut shown = Instant::now();
    loop {
        let all = informer.store().list();
        let finished = all.iter().filter(|o| done(o)).count();
        if all.len() == expect && finished == expect {
            return Ok(start.elapsed().as_secs_f64());
        }
        if start.elapsed() > limit {
            return Err(format!("not converged after {limit:?}: {finished}/{expect} done"));
        }
        if shown.elapsed() >= Duration::from_secs(5) {
            shown = Instant::now();
            eprintln!("  {:.1}s: {finished}/{expect} done", start.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Cluster {
    client: Arc<dyn Client>,
    metrics: bosun_controllers::Metrics,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Cluster {
    /// Prints each controller's reconcile count and time, to see where a phase went.
    fn report(&self, phase: &str) {
        for name in self.metrics.names() {
            let m = self.metrics.controller(&name);
            eprintln!(
                "  {phase}: {name}: {} reconciles ({} failed), {:.2}s reconciling",
                m.reconciles(),
                m.errors(),
                m.duration_total().as_secs_f64()
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The built-ins `controllers` on a fresh in-process API server, with `kubelet` for pods; `setup`
/// runs against the server before the controllers start.
async fn cluster<F, Fut>(controllers: &[&str], kubelet: Kubelet, setup: F) -> Result<Cluster, String>
where
    F: FnOnce(Arc<dyn Client>) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let client: Arc<dyn Client> = bosun_store::ApiServer::in_memory();
    setup(client.clone()).await?;
    let manager = ControllerManager::new(client.clone()).config(ManagerConfig::default().only(controllers));
    let metrics = manager.metrics_registry().clone();
    let mut tasks = manager.spawn_all();
    let pods = Controller::new(Api::<Pod>::all(client.clone())).metrics(&metrics);
    tasks.push(tokio::spawn(match kubelet {
        Kubelet::Ready => futures::FutureExt::boxed(kubelet::simulated(pods)),
        Kubelet::Completing => futures::FutureExt::boxed(completing(pods)),
    }));
    Ok(Cluster { client, metrics, tasks })
}

/// What the simulated kubelet does with pods.
enum Kubelet {
    /// Pods run and are ready at once.
    Ready,
    /// Pods succeed at once (their container exits 0).
    Completing,
}

/// A kubelet whose pods succeed as soon as they exist; terminating pods go at once.
fn completing(controller: Controller<Pod>) -> impl Future<Output = ()> + Send + 'static {
    async fn reconcile(pod: Arc<Pod>, api: Arc<Api<Pod>>) -> Result<Action, bosun_core::Error> {
        let api = api.in_namespace(pod.namespace().unwrap_or("default"));
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let result = if is_deleting(pod.meta()) {
            api.delete(pod.name(), &DeleteParams::default().grace_period(0)).await.map(drop)
        } else if !matches!(phase, Some("Succeeded" | "Failed")) {
            let status = serde_json::json!({"status": {
                "phase": "Succeeded",
                "containerStatuses": [{
                    "name": "main", "image": "batch:1", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                }],
            }});
            api.patch_status(pod.name(), &Patch::Merge(status), &PatchParams::default()).await.map(drop)
        } else {
            Ok(())
        };
        match result {
            Err(e) if !e.is_not_found() => Err(e),
            _ => Ok(Action::await_change()),
        }
    }
    let api = Arc::new(Api::<Pod>::all(controller.client()));
    controller.name("kubelet-completing").concurrency(64).run(reconcile, backoff_policy, api)
}

/// The sizes of one run.
struct Sizes {
    full: bool,
    deployment: i32,
    deployments: usize,
    nodes: usize,
    jobs: usize,
}

impl Sizes {
    /// The figure's name: the issue's at full size, else one naming the size that ran.
    fn name(&self, full: &str, small: String) -> String {
        if self.full { full.to_owned() } else { small }
    }
}

async fn bench_deployments(s: &Sizes, limit: Duration, out: &mut Vec<(String, f64)>) -> Result<(), String> {
    let c = cluster(&["replicaset", "deployment"], Kubelet::Ready, |_| async { Ok(()) }).await?;
    let api = Api::<Deployment>::namespaced(c.client.clone(), "default");
    let start = Instant::now();
    api.create(&deployment("big", s.deployment), &PostParams::default()).await.map_err(|e| e.to_string())?;
    let converge = wait_all(&api, 1, start, limit, Duration::from_millis(50), deployment_done).await?;
    eprintln!("deployment of {} converged in {converge:.2}s", s.deployment);
    c.report("converge");
    let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "web:2"}]}}}});
    let start = Instant::now();
    api.patch("big", &Patch::Strategic(patch), &PatchParams::default()).await.map_err(|e| e.to_string())?;
    tokio::time::sleep(Duration::from_millis(1)).await;
    let rollout = wait_all(&api, 1, start, limit, Duration::from_millis(50), deployment_done).await?;
    eprintln!("rolling update of {} completed in {rollout:.2}s", s.deployment);
    c.report("converge+rollout");
    drop(c);
    out.push((s.name("controllers.deployment_10000.converge_s", format!("controllers.deployment_{}.converge_s", s.deployment)), converge));
    out.push((s.name("controllers.rollout_10000.s", format!("controllers.rollout_{}.s", s.deployment)), rollout));
    Ok(())
}

async fn bench_many_deployments(s: &Sizes, limit: Duration, out: &mut Vec<(String, f64)>) -> Result<(), String> {
    let c = cluster(&["replicaset", "deployment"], Kubelet::Ready, |_| async { Ok(()) }).await?;
    let api = Api::<Deployment>::namespaced(c.client.clone(), "default");
    let monitor = std::env::var("BOSUN_BENCH_MONITOR").is_ok_and(|v| v == "1").then(|| tokio::spawn(monitor(c.metrics.clone())));
    let start = Instant::now();
    for i in 0..s.deployments {
        api.create(&deployment(&format!("d{i}"), 10), &PostParams::default()).await.map_err(|e| e.to_string())?;
    }
    eprintln!("{} deployments created in {:.2}s", s.deployments, start.elapsed().as_secs_f64());
    let many = wait_all_watched(&api, s.deployments, start, limit, deployment_done).await?;
    if let Some(m) = monitor {
        m.abort();
    }
    eprintln!("{} deployments of 10 converged in {many:.2}s", s.deployments);
    c.report("deployments");
    out.push((
        s.name("controllers.deployments_1000x10.converge_s", format!("controllers.deployments_{}x10.converge_s", s.deployments)),
        many,
    ));
    Ok(())
}

async fn bench_daemonset(s: &Sizes, limit: Duration, out: &mut Vec<(String, f64)>) -> Result<(), String> {
    let n = s.nodes;
    let made = Instant::now();
    let c = cluster(&["daemonset"], Kubelet::Ready, |client| async move {
        let nodes = Api::<Node>::all(client);
        for i in 0..n {
            nodes.create(&node(&format!("node-{i:05}")), &PostParams::default()).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    })
    .await?;
    eprintln!("{n} nodes created in {:.2}s", made.elapsed().as_secs_f64());
    let api = Api::<DaemonSet>::namespaced(c.client.clone(), "default");
    let start = Instant::now();
    api.create(&daemonset("agent"), &PostParams::default()).await.map_err(|e| e.to_string())?;
    let want = i32::try_from(n).unwrap_or(i32::MAX);
    let converge = wait_all(&api, 1, start, limit, Duration::from_millis(100), |d| daemonset_done(d, want)).await?;
    eprintln!("daemonset over {n} nodes converged in {converge:.2}s");
    c.report("daemonset");
    out.push((s.name("controllers.daemonset_5000_nodes.converge_s", format!("controllers.daemonset_{n}_nodes.converge_s")), converge));
    Ok(())
}

async fn bench_jobs(s: &Sizes, limit: Duration, out: &mut Vec<(String, f64)>) -> Result<(), String> {
    let c = cluster(&["job"], Kubelet::Completing, |_| async { Ok(()) }).await?;
    let api = Api::<Job>::namespaced(c.client.clone(), "default");
    let start = Instant::now();
    for i in 0..s.jobs {
        api.create(&job(&format!("j{i}"), 10, 10), &PostParams::default()).await.map_err(|e| e.to_string())?;
    }
    let complete = wait_all(&api, s.jobs, start, limit, Duration::from_millis(200), job_done).await?;
    eprintln!("{} jobs of 10 completions finished in {complete:.2}s", s.jobs);
    c.report("jobs");
    out.push((s.name("controllers.jobs_1000x10.complete_s", format!("controllers.jobs_{}x10.complete_s", s.jobs)), complete));
    Ok(())
}

fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_writer(std::io::stderr).init();
    }
    let full = std::env::var("BOSUN_BENCH_FULL").is_ok_and(|v| v == "1");
    // `cargo bench` passes `--bench`; other words pick groups (deployment, daemonset, jobs).
    let groups: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let on = |g: &str| groups.is_empty() || groups.iter().any(|w| g.contains(w.as_str()));
    let sizes = if full {
        Sizes { full, deployment: 10_000, deployments: 1000, nodes: 5000, jobs: 1000 }
    } else {
        Sizes { full, deployment: 1000, deployments: 100, nodes: 500, jobs: 100 }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            std::process::exit(1);
        }
    };
    let limit = Duration::from_secs(900);
    let mut figures = Vec::new();
    let result: Result<(), String> = runtime.block_on(async {
        if on("deployment-single") {
            bench_deployments(&sizes, limit, &mut figures).await?;
        }
        if on("deployments-many") {
            bench_many_deployments(&sizes, limit, &mut figures).await?;
        }
        if on("daemonset") {
            bench_daemonset(&sizes, limit, &mut figures).await?;
        }
        if on("jobs") {
            bench_jobs(&sizes, limit, &mut figures).await?;
        }
        Ok(())
    });
    if let Err(e) = result {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
    for (name, value) in figures {
        println!("BENCH {name}={value:.3}");
    }
}
