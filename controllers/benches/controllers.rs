//! Controller benchmarks against the in-process API server, with pods made ready at once by a
//! simulated kubelet (the benchmark sets pod status itself):
//! a Deployment of 10,000 replicas converging, its rolling update, and 1,000 Deployments of 10.

use bosun_controllers::harness::kubelet;
use bosun_controllers::{Controller, ControllerManager, ManagerConfig};
use bosun_core::{Api, Client, ListParams, Patch, PatchParams, PostParams};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn deployment(name: &str, replicas: i32) -> Deployment {
    let labels: std::collections::BTreeMap<String, String> = [("app".to_owned(), name.to_owned())].into();
    Deployment {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some("default".into()), ..ObjectMeta::default() },
        spec: DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector { match_labels: Some(labels.clone()), ..LabelSelector::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    containers: vec![Container { name: "main".into(), image: Some("web:1".into()), ..Container::default() }],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        status: None,
    }
}

fn done(d: &Deployment) -> bool {
    let want = d.spec.replicas.unwrap_or(1);
    let s = d.status.clone().unwrap_or_default();
    s.observed_generation == d.metadata.generation
        && s.updated_replicas == Some(want)
        && s.replicas == Some(want)
        && s.available_replicas == Some(want)
}

async fn wait_all(api: &Api<Deployment>, expect: usize, limit: Duration) -> Result<f64, String> {
    let start = Instant::now();
    loop {
        let list = api.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
        if list.items.len() == expect && list.items.iter().all(done) {
            return Ok(start.elapsed().as_secs_f64());
        }
        if start.elapsed() > limit {
            let ready = list.items.iter().filter(|d| done(d)).count();
            return Err(format!("not converged after {limit:?}: {ready}/{expect} deployments done"));
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
            eprintln!("  {phase}: {name}: {} reconciles, {:.2}s reconciling", m.reconciles(), m.duration_total().as_secs_f64());
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

fn cluster() -> Cluster {
    let client: Arc<dyn Client> = bosun_store::ApiServer::in_memory();
    let manager = ControllerManager::new(client.clone()).config(ManagerConfig::default().only(&["replicaset", "deployment"]));
    let metrics = manager.metrics_registry().clone();
    let mut tasks = manager.spawn_all();
    let kubelet_controller = Controller::new(Api::all(client.clone()));
    tasks.push(tokio::spawn(kubelet::simulated(kubelet_controller)));
    Cluster { client, metrics, tasks }
}

fn main() {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            std::process::exit(1);
        }
    };
    let limit = Duration::from_secs(900);
    let result: Result<(f64, f64, f64), String> = runtime.block_on(async {
        let c = cluster();
        let api = Api::<Deployment>::namespaced(c.client.clone(), "default");
        api.create(&deployment("big", 10_000), &PostParams::default()).await.map_err(|e| e.to_string())?;
        let converge = wait_all(&api, 1, limit).await?;
        eprintln!("deployment of 10000 converged in {converge:.2}s");
        c.report("converge");
        let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "web:2"}]}}}});
        api.patch("big", &Patch::Strategic(patch), &PatchParams::default()).await.map_err(|e| e.to_string())?;
        tokio::time::sleep(Duration::from_millis(1)).await;
        let rollout = wait_all(&api, 1, limit).await?;
        eprintln!("rolling update of 10000 completed in {rollout:.2}s");
        c.report("converge+rollout");
        drop(c);

        let c = cluster();
        let api = Api::<Deployment>::namespaced(c.client.clone(), "default");
        let start = Instant::now();
        for i in 0..1000 {
            api.create(&deployment(&format!("d{i}"), 10), &PostParams::default()).await.map_err(|e| e.to_string())?;
        }
        wait_all(&api, 1000, limit).await?;
        let many = start.elapsed().as_secs_f64();
        eprintln!("1000 deployments of 10 converged in {many:.2}s");
        c.report("1000x10");
        Ok((converge, rollout, many))
    });
    match result {
        Ok((converge, rollout, many)) => {
            println!("BENCH controllers.deployment_10000.converge_s={converge:.3}");
            println!("BENCH controllers.rollout_10000.s={rollout:.3}");
            println!("BENCH controllers.deployments_1000x10.converge_s={many:.3}");
        }
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            std::process::exit(1);
        }
    }
}
