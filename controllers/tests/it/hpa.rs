//! The HorizontalPodAutoscaler against the in-process API server, whose metrics API reads a
//! simulated load: each app's total CPU is shared evenly by its running pods, so more replicas
//! mean less CPU each, as behind a load balancer.

use super::support;
use async_trait::async_trait;
use bosun_controllers::{Harness, ManagerConfig, clock};
use bosun_core::meta::find_condition;
use bosun_core::{Api, Client, ListParams, PostParams};
use bosun_store::api::metrics::{ContainerSample, MetricsSource, NodeSample, PodSample};
use bosun_store::{ApiServer, MemoryStorage};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscaler, HorizontalPodAutoscalerBehavior,
    HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Per app: total CPU in millicores, shared by its running pods, and memory per pod in bytes.
#[derive(Default)]
struct Load {
    api: OnceLock<Weak<ApiServer>>,
    apps: Mutex<HashMap<String, (u64, u64)>>,
}

impl Load {
    fn set(&self, app: &str, total_cpu_millis: u64, memory_bytes: u64) {
        if let Ok(mut apps) = self.apps.lock() {
            apps.insert(app.into(), (total_cpu_millis, memory_bytes));
        }
    }
}

#[async_trait]
impl MetricsSource for Load {
    async fn nodes(&self) -> bosun_core::Result<Vec<NodeSample>> {
        Ok(Vec::new())
    }

    async fn pods(&self, namespace: Option<&str>) -> bosun_core::Result<Vec<PodSample>> {
        let Some(api) = self.api.get().and_then(Weak::upgrade) else { return Ok(Vec::new()) };
        let pods = Api::<Pod>::namespaced(api, namespace.unwrap_or("default")).list(&ListParams::default()).await?;
        let running: Vec<&Pod> = pods
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .collect();
        let apps = self.apps.lock().map(|a| a.clone()).unwrap_or_default();
        let app_of = |p: &Pod| p.metadata.labels.as_ref().and_then(|l| l.get("app")).cloned().unwrap_or_default();
        let mut out = Vec::new();
        for pod in &running {
            let app = app_of(pod);
            let Some((cpu, memory)) = apps.get(&app) else { continue };
            let share = running.iter().filter(|p| app_of(p) == app).count() as u64;
            out.push(PodSample {
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                name: pod.metadata.name.clone().unwrap_or_default(),
                timestamp: clock::now(),
                window: Duration::from_secs(15),
                containers: vec![ContainerSample { name: "main".into(), cpu_nanocores: cpu * 1_000_000 / share, memory_bytes: *memory }],
            });
        }
        Ok(out)
    }
}

fn harness() -> Result<(Harness, Arc<Load>), Box<dyn std::error::Error>> {
    let load = Arc::new(Load::default());
    let api = ApiServer::builder(Arc::new(MemoryStorage::new())).metrics_source(load.clone()).clock(clock::now).build()?;
    let _ = load.api.set(Arc::downgrade(&api));
    let mut h = Harness::new(api);
    h.start_builtins(ManagerConfig::default().only(&["deployment", "replicaset", "horizontalpodautoscaler"]));
    h.start_kubelet();
    Ok((h, load))
}

/// A Deployment whose pods request 100m CPU and 64Mi memory.
async fn deployment(client: &Arc<dyn Client>, name: &str, replicas: i32) -> Result<(), bosun_core::Error> {
    let mut d = support::deployment(name, replicas, 1, 0);
    if let Some(spec) = d.spec.template.spec.as_mut() {
        spec.containers[0].resources = Some(ResourceRequirements {
            requests: Some([("cpu".to_owned(), Quantity("100m".into())), ("memory".to_owned(), Quantity("64Mi".into()))].into()),
            ..ResourceRequirements::default()
        });
    }
    Api::<Deployment>::namespaced(client.clone(), "default").create(&d, &PostParams::default()).await?;
    Ok(())
}

fn cpu_metric(percent: i32) -> MetricSpec {
    MetricSpec {
        type_: "Resource".into(),
        resource: Some(ResourceMetricSource {
            name: "cpu".into(),
            target: MetricTarget { type_: "Utilization".into(), average_utilization: Some(percent), ..MetricTarget::default() },
        }),
        ..MetricSpec::default()
    }
}

fn hpa(
    name: &str,
    min: i32,
    max: i32,
    metrics: Vec<MetricSpec>,
    behavior: Option<HorizontalPodAutoscalerBehavior>,
) -> HorizontalPodAutoscaler {
    HorizontalPodAutoscaler {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some("default".into()), ..ObjectMeta::default() },
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: name.into(),
            },
            min_replicas: Some(min),
            max_replicas: max,
            metrics: Some(metrics),
            behavior,
        },
        status: None,
    }
}

async fn create_hpa(client: &Arc<dyn Client>, h: &HorizontalPodAutoscaler) -> Result<(), bosun_core::Error> {
    Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), "default").create(h, &PostParams::default()).await?;
    Ok(())
}

async fn replicas(client: &Arc<dyn Client>, name: &str) -> Result<i32, bosun_core::Error> {
    let d = Api::<Deployment>::namespaced(client.clone(), "default").get(name).await?;
    Ok(d.spec.replicas.unwrap_or(0))
}

/// Replica count changes as (seconds since the tracker started, count), sampled every second of
/// virtual time.
struct Tracker {
    origin: tokio::time::Instant,
    changes: Vec<(u64, i32)>,
}

impl Tracker {
    fn new() -> Self {
        Self { origin: tokio::time::Instant::now(), changes: Vec::new() }
    }

    async fn watch(&mut self, client: &Arc<dyn Client>, name: &str, seconds: u64) -> Result<(), bosun_core::Error> {
        let end = tokio::time::Instant::now() + Duration::from_secs(seconds);
        loop {
            let now = replicas(client, name).await?;
            if self.changes.last().is_none_or(|(_, r)| *r != now) {
                self.changes.push((self.origin.elapsed().as_secs(), now));
            }
            if tokio::time::Instant::now() >= end {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    fn counts(&self) -> Vec<i32> {
        self.changes.iter().map(|c| c.1).collect()
    }
}

async fn status_of(
    client: &Arc<dyn Client>,
    name: &str,
) -> Result<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerStatus, bosun_core::Error> {
    let h = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), "default").get(name).await?;
    Ok(h.status.unwrap_or_default())
}

fn condition(status: &k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerStatus, type_: &str) -> (String, String) {
    let c = status.conditions.as_deref().and_then(|c| find_condition(c, type_));
    c.map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default())).unwrap_or_default()
}

#[tokio::test(start_paused = true)]
async fn high_cpu_scales_up_within_the_default_rate_and_stops_at_max() -> TestResult {
    let (h, load) = harness()?;
    let client = h.client();
    deployment(&client, "web", 2).await?;
    h.run_until_quiescent().await?;
    // 600m over 2 pods requesting 100m: 300% against a 50% target asks for 12 replicas.
    load.set("web", 600, 32 << 20);
    create_hpa(&client, &hpa("web", 1, 10, vec![cpu_metric(50)], None)).await?;
    let mut t = Tracker::new();
    t.watch(&client, "web", 120).await?;
    let counts = t.counts();
    // The default scale-up rate allows max(+4 pods, +100%) per 15 s: 2 -> 6, then the max of 10.
    assert_eq!(counts, [2, 6, 10], "{:?}", t.changes);
    let status = status_of(&client, "web").await?;
    assert_eq!(status.desired_replicas, 10);
    assert_eq!(status.current_replicas, Some(10));
    assert!(status.last_scale_time.is_some());
    let current = status.current_metrics.clone().unwrap_or_default();
    let cpu = current.first().and_then(|m| m.resource.as_ref()).map(|r| (r.name.clone(), r.current.average_utilization));
    // 600m over 10 pods is 60% of the 100m request.
    assert_eq!(cpu, Some(("cpu".to_owned(), Some(60))));
    assert_eq!(condition(&status, "AbleToScale").0, "True");
    assert_eq!(condition(&status, "ScalingActive"), ("True".into(), "ValidMetricFound".into()));
    assert_eq!(condition(&status, "ScalingLimited"), ("True".into(), "TooManyReplicas".into()));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_bouncing_load_does_not_flap_inside_the_stabilisation_window() -> TestResult {
    let (h, load) = harness()?;
    let client = h.client();
    deployment(&client, "web", 4).await?;
    h.run_until_quiescent().await?;
    // 200m over 4 pods: 50% of request, on the 50% target.
    load.set("web", 200, 32 << 20);
    create_hpa(&client, &hpa("web", 1, 10, vec![cpu_metric(50)], None)).await?;
    let mut t = Tracker::new();
    t.watch(&client, "web", 60).await?;
    // The load drops to 10% and bounces back every minute for four minutes, then stays low.
    for _ in 0..2 {
        load.set("web", 40, 32 << 20);
        t.watch(&client, "web", 60).await?;
        load.set("web", 200, 32 << 20);
        t.watch(&client, "web", 60).await?;
    }
    load.set("web", 40, 32 << 20);
    t.watch(&client, "web", 280).await?;
    assert_eq!(t.changes, [(0, 4)], "no scale-down while recent recommendations were higher");
    let status = status_of(&client, "web").await?;
    assert_eq!(condition(&status, "AbleToScale"), ("True".into(), "ScaleDownStabilized".into()));
    // 300 s after the last high recommendation the scale-down happens, at once (100% per 15 s).
    t.watch(&client, "web", 60).await?;
    assert_eq!(t.counts(), [4, 1], "{:?}", t.changes);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_pods_policy_limits_each_step_per_period() -> TestResult {
    let (h, load) = harness()?;
    let client = h.client();
    deployment(&client, "web", 1).await?;
    h.run_until_quiescent().await?;
    load.set("web", 2000, 32 << 20);
    let behavior = HorizontalPodAutoscalerBehavior {
        scale_up: Some(HPAScalingRules {
            policies: Some(vec![HPAScalingPolicy { type_: "Pods".into(), value: 1, period_seconds: 60 }]),
            ..HPAScalingRules::default()
        }),
        scale_down: None,
    };
    create_hpa(&client, &hpa("web", 1, 10, vec![cpu_metric(50)], Some(behavior))).await?;
    let mut t = Tracker::new();
    t.watch(&client, "web", 180).await?;
    assert_eq!(t.counts(), [1, 2, 3, 4], "{:?}", t.changes);
    for pair in t.changes.windows(2).skip(1) {
        assert!(pair[1].0 - pair[0].0 >= 60, "two steps inside one 60 s period: {:?}", t.changes);
    }
    let status = status_of(&client, "web").await?;
    assert_eq!(condition(&status, "ScalingLimited"), ("True".into(), "ScaleUpLimit".into()));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn replicas_outside_min_and_max_are_brought_inside_without_metrics() -> TestResult {
    let (h, _load) = harness()?;
    let client = h.client();
    deployment(&client, "big", 7).await?;
    deployment(&client, "small", 1).await?;
    h.run_until_quiescent().await?;
    create_hpa(&client, &hpa("big", 1, 3, vec![cpu_metric(50)], None)).await?;
    create_hpa(&client, &hpa("small", 2, 5, vec![cpu_metric(50)], None)).await?;
    h.run_until(Duration::from_secs(60), || false).await.ok();
    assert_eq!(replicas(&client, "big").await?, 3);
    assert_eq!(replicas(&client, "small").await?, 2);
    assert_eq!(status_of(&client, "big").await?.desired_replicas, 3);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn missing_metrics_stop_scaling_with_scaling_active_false() -> TestResult {
    let (h, load) = harness()?;
    let client = h.client();
    deployment(&client, "web", 2).await?;
    h.run_until_quiescent().await?;
    create_hpa(&client, &hpa("web", 1, 10, vec![cpu_metric(50)], None)).await?;
    let mut t = Tracker::new();
    t.watch(&client, "web", 60).await?;
    assert_eq!(t.changes, [(0, 2)]);
    let status = status_of(&client, "web").await?;
    assert_eq!(condition(&status, "ScalingActive"), ("False".into(), "FailedGetResourceMetric".into()));
    assert_eq!(condition(&status, "AbleToScale").0, "True");
    // Metrics arriving later bring it back to work.
    load.set("web", 600, 32 << 20);
    t.watch(&client, "web", 40).await?;
    assert!(t.counts().last().is_some_and(|c| *c > 2), "{:?}", t.changes);
    assert_eq!(condition(&status_of(&client, "web").await?, "ScalingActive").0, "True");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn memory_average_value_targets_scale_too() -> TestResult {
    let (h, load) = harness()?;
    let client = h.client();
    deployment(&client, "cache", 2).await?;
    h.run_until_quiescent().await?;
    // 96Mi per pod against a 32Mi average: ratio 3, so 6 replicas (the rate limit) then the max.
    load.set("cache", 10, 96 << 20);
    let memory = MetricSpec {
        type_: "Resource".into(),
        resource: Some(ResourceMetricSource {
            name: "memory".into(),
            target: MetricTarget { type_: "AverageValue".into(), average_value: Some(Quantity("32Mi".into())), ..MetricTarget::default() },
        }),
        ..MetricSpec::default()
    };
    create_hpa(&client, &hpa("cache", 1, 10, vec![memory], None)).await?;
    let mut t = Tracker::new();
    t.watch(&client, "cache", 60).await?;
    assert_eq!(t.counts(), [2, 6, 10], "{:?}", t.changes);
    let status = status_of(&client, "cache").await?;
    let value = status.current_metrics.unwrap_or_default().first().and_then(|m| m.resource.clone()).and_then(|r| r.current.average_value);
    assert_eq!(value, Some(Quantity((96u64 << 20).to_string())));
    Ok(())
}
