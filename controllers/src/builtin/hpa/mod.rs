//! The HorizontalPodAutoscaler controller (`autoscaling/v2`): every sync period it reads the
//! target's `scale` subresource (Deployments, ReplicaSets, StatefulSets and anything else with
//! one), the resource metrics API (`metrics.k8s.io/v1beta1` PodMetrics of the pods the scale's
//! selector picks) and the pods' requests, computes a replica count per metric (CPU or memory;
//! `Resource` and `ContainerResource` metrics with `Utilization` or `AverageValue` targets), takes
//! the largest, stabilises and rate-limits it by the behaviour, bounds it by min/maxReplicas and
//! writes the scale. Status carries `currentReplicas`, `desiredReplicas`, `currentMetrics`,
//! `lastScaleTime` and the `AbleToScale`, `ScalingActive` and `ScalingLimited` conditions.
//!
//! Readiness (simplified from kube-controller-manager): pods being deleted or finished are
//! ignored; pending pods are unready; for CPU a pod is also unready within its first 5 minutes
//! while not Ready or while its sample predates its readiness plus the sample window, and after
//! that only if it is not Ready and never became ready after its first 30 s. The recommendations
//! and scale events behind the stabilisation windows and rate policies live in memory, per
//! autoscaler, as in kube-controller-manager (a restart forgets them and waits a full window
//! before scaling down).

pub mod behavior;
pub mod replicas;

use super::Shared;
use crate::clock;
use crate::runtime::events::object_reference;
use crate::runtime::{Action, Controller, EventData};
use behavior::History;
use bosun_core::meta::{find_condition, is_deleting, set_condition};
use bosun_core::{Api, ApiResource, DynamicObject, Error, ListParams, Object, Patch, PatchParams, PostParams, Quantity};
use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus, MetricSpec, MetricStatus, MetricValueStatus,
    ResourceMetricStatus,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use replicas::{PodInput, Readiness, Target};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often each autoscaler is synced (kube-controller-manager's
/// `--horizontal-pod-autoscaler-sync-period`).
pub const SYNC_PERIOD: Duration = Duration::from_secs(15);
/// How long after start a pod's CPU samples may still be start-up noise.
pub const CPU_INITIALIZATION_PERIOD: Duration = Duration::from_secs(300);
/// How long after start a pod's first readiness change may still be its initial one.
pub const INITIAL_READINESS_DELAY: Duration = Duration::from_secs(30);

/// The PodMetrics resource of the resource metrics API.
pub fn pod_metrics_resource() -> ApiResource {
    let mut r = ApiResource::new("metrics.k8s.io", "v1beta1", "PodMetrics", "pods", true);
    r.verbs = vec!["get".into(), "list".into()];
    r
}

/// The HPA controller's state: the shared parts and each autoscaler's history.
pub struct HpaCtx {
    shared: Shared,
    histories: Mutex<HashMap<String, History>>,
    /// When each autoscaler was last synced, at which generation: its own status writes (and other
    /// updates that leave the spec alone) do not sync it again before the period is up.
    last_sync: Mutex<HashMap<String, (tokio::time::Instant, Option<i64>)>>,
}

/// Builds the HPA controller on `shared`'s informers. It resyncs each autoscaler every
/// [`SYNC_PERIOD`] rather than watching pods and metrics.
pub fn controller(shared: &Shared) -> (Controller<HorizontalPodAutoscaler>, Arc<HpaCtx>) {
    let c = shared.controller(Api::<HorizontalPodAutoscaler>::all(shared.client.clone()), "horizontalpodautoscaler");
    (c, Arc::new(HpaCtx { shared: shared.clone(), histories: Mutex::new(HashMap::new()), last_sync: Mutex::new(HashMap::new()) }))
}

fn condition(type_: &str, status: bool, reason: &str, message: impl Into<String>) -> HorizontalPodAutoscalerCondition {
    HorizontalPodAutoscalerCondition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        ..HorizontalPodAutoscalerCondition::default()
    }
}

fn milli(q: &K8sQuantity) -> Option<i64> {
    Quantity::parse(&q.0).ok().map(|q| q.milli_value())
}

fn milli_quantity(m: i64) -> K8sQuantity {
    K8sQuantity(if m % 1000 == 0 { (m / 1000).to_string() } else { format!("{m}m") })
}

/// One metric of the spec, in the form the calculator takes.
struct ResourceMetric {
    resource: String,
    container: Option<String>,
    target: Target,
}

fn resource_metric(spec: &MetricSpec) -> Result<ResourceMetric, String> {
    let (resource, container, target) = match spec.type_.as_str() {
        "Resource" => {
            let r = spec.resource.as_ref().ok_or("metric type Resource without a resource source")?;
            (r.name.clone(), None, r.target.clone())
        }
        "ContainerResource" => {
            let r = spec.container_resource.as_ref().ok_or("metric type ContainerResource without a source")?;
            (r.name.clone(), Some(r.container.clone()), r.target.clone())
        }
        other => return Err(format!("unsupported metric type {other:?}: only Resource and ContainerResource metrics are served")),
    };
    let t = match target.type_.as_str() {
        "Utilization" => Target::Utilization(target.average_utilization.ok_or("Utilization target without averageUtilization")?),
        "AverageValue" => {
            Target::AverageValue(target.average_value.as_ref().and_then(milli).ok_or("AverageValue target without a valid averageValue")?)
        }
        other => return Err(format!("unsupported target type {other:?} for a resource metric")),
    };
    Ok(ResourceMetric { resource, container, target: t })
}

/// A pod's requests for the resource (milli), `None` when a counted container has none.
fn request_of(pod: &Pod, resource: &str, container: Option<&str>) -> Option<i64> {
    let spec = pod.spec.as_ref()?;
    let mut total = 0;
    for c in spec.containers.iter().filter(|c| container.is_none_or(|n| n == c.name)) {
        let q = c.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get(resource))?;
        total += milli(q)?;
    }
    Some(total)
}

/// A pod's sample: usage (milli) summed over the counted containers, its timestamp and window.
struct Sample {
    usage: i64,
    timestamp: Option<Timestamp>,
    window: Duration,
}

fn sample_of(metrics: &DynamicObject, resource: &str, container: Option<&str>) -> Option<Sample> {
    let containers = metrics.data.get("containers")?.as_array()?;
    let mut usage = 0;
    let mut found = false;
    for c in containers.iter().filter(|c| container.is_none_or(|n| c.get("name").and_then(|v| v.as_str()) == Some(n))) {
        let q = c.get("usage")?.get(resource)?.as_str()?;
        usage += Quantity::parse(q).ok()?.milli_value();
        found = true;
    }
    if !found {
        return None;
    }
    let timestamp = metrics.data.get("timestamp").and_then(|t| t.as_str()).and_then(|t| t.parse().ok());
    let window = metrics
        .data
        .get("window")
        .and_then(|w| w.as_str())
        .and_then(|w| w.strip_suffix('s'))
        .and_then(|w| w.parse::<f64>().ok())
        .map_or(Duration::ZERO, |s| Duration::from_secs_f64(s.max(0.0)));
    Some(Sample { usage, timestamp, window })
}

fn after(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(SignedDuration::try_from(d).unwrap_or_default()).unwrap_or(t)
}

/// How a pod takes part, by kube-controller-manager's `groupPods` rules (see the module doc).
fn readiness(pod: &Pod, cpu: bool, sample: Option<&Sample>, now: Timestamp) -> Readiness {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if is_deleting(pod.meta()) || matches!(phase, Some("Failed" | "Succeeded")) {
        return Readiness::Ignored;
    }
    if matches!(phase, None | Some("Pending")) {
        return Readiness::Unready;
    }
    let Some(sample) = sample.filter(|_| cpu) else { return Readiness::Ready };
    let status = pod.status.as_ref();
    let ready = status.and_then(|s| s.conditions.as_deref()).and_then(|c| find_condition(c, "Ready"));
    let (Some(ready), Some(start)) = (ready, status.and_then(|s| s.start_time.as_ref())) else { return Readiness::Unready };
    let transition = ready.last_transition_time.as_ref().map_or(start.0, |t| t.0);
    let unready = if after(start.0, CPU_INITIALIZATION_PERIOD) > now {
        ready.status == "False" || sample.timestamp.is_some_and(|ts| ts < after(transition, sample.window))
    } else {
        ready.status == "False" && after(start.0, INITIAL_READINESS_DELAY) > transition
    };
    if unready { Readiness::Unready } else { Readiness::Ready }
}

/// The replica count one metric asks for, and its `currentMetrics` entry.
async fn metric_proposal(
    ctx: &HpaCtx,
    ns: &str,
    selector: &str,
    current: i32,
    spec: &MetricSpec,
) -> Result<(i32, MetricStatus, String), String> {
    let metric = resource_metric(spec)?;
    let client = ctx.shared.client.clone();
    let params = ListParams::default().labels(selector);
    let pods = Api::<Pod>::namespaced(client.clone(), ns).list(&params).await.map_err(|e| format!("unable to list pods: {e}"))?;
    let metrics = Api::dynamic(client, pod_metrics_resource(), Some(ns)).list(&params).await.map_err(|e| {
        format!("unable to get metrics for resource {}: unable to fetch metrics from resource metrics API: {e}", metric.resource)
    })?;
    if metrics.items.is_empty() {
        return Err(format!("unable to get metrics for resource {}: no metrics returned from resource metrics API", metric.resource));
    }
    let samples: HashMap<&str, Sample> = metrics
        .items
        .iter()
        .filter_map(|m| Some((m.metadata.name.as_deref()?, sample_of(m, &metric.resource, metric.container.as_deref())?)))
        .collect();
    let now = clock::now();
    let cpu = metric.resource == "cpu";
    let inputs: Vec<PodInput> = pods
        .items
        .iter()
        .map(|p| {
            let sample = samples.get(p.name());
            PodInput {
                name: p.name().to_owned(),
                readiness: readiness(p, cpu, sample, now),
                usage: sample.map(|s| s.usage),
                request: request_of(p, &metric.resource, metric.container.as_deref()),
            }
        })
        .collect();
    let proposal = replicas::calculate(current, &inputs, metric.target, &metric.resource, replicas::TOLERANCE)
        .map_err(|e| format!("failed to get {} utilization: {e}", metric.resource))?;
    let value =
        MetricValueStatus { average_utilization: proposal.utilization, average_value: Some(milli_quantity(proposal.average)), value: None };
    let description = match metric.target {
        Target::Utilization(_) => format!("{} resource utilization (percentage of request)", metric.resource),
        Target::AverageValue(_) => format!("{} resource", metric.resource),
    };
    let status = match metric.container {
        None => MetricStatus {
            type_: "Resource".into(),
            resource: Some(ResourceMetricStatus { name: metric.resource.clone(), current: value }),
            ..MetricStatus::default()
        },
        Some(container) => MetricStatus {
            type_: "ContainerResource".into(),
            container_resource: Some(k8s_openapi::api::autoscaling::v2::ContainerResourceMetricStatus {
                container,
                name: metric.resource.clone(),
                current: value,
            }),
            ..MetricStatus::default()
        },
    };
    Ok((proposal.replicas, status, description))
}

/// The largest proposal over every metric. As in Kubernetes, invalid metrics only stop scaling
/// when all are invalid or the valid ones would not scale up.
async fn proposal(
    ctx: &HpaCtx,
    ns: &str,
    selector: &str,
    current: i32,
    specs: &[MetricSpec],
) -> (Result<(i32, String), String>, Vec<MetricStatus>) {
    let mut best: Option<(i32, String)> = None;
    let mut statuses = Vec::new();
    let mut errors = Vec::new();
    for spec in specs {
        match metric_proposal(ctx, ns, selector, current, spec).await {
            Ok((replicas, status, description)) => {
                statuses.push(status);
                if best.as_ref().is_none_or(|(b, _)| replicas > *b) {
                    best = Some((replicas, description));
                }
            }
            Err(e) => errors.push(e),
        }
    }
    let result = match (best, errors.first()) {
        (Some(b), None) => Ok(b),
        (Some(b), Some(_)) if b.0 > current => Ok(b),
        (_, Some(first)) if errors.len() == specs.len() => Err(first.clone()),
        (_, Some(first)) => Err(format!("invalid metrics ({} invalid out of {}), first error is: {first}", errors.len(), specs.len())),
        (None, None) => Err("no metrics are specified".into()),
    };
    (result, statuses)
}

/// Reconciles one HorizontalPodAutoscaler; always looks again after [`SYNC_PERIOD`].
pub async fn reconcile(hpa: Arc<HorizontalPodAutoscaler>, ctx: Arc<HpaCtx>) -> Result<Action, Error> {
    let ns = hpa.namespace().unwrap_or("default").to_owned();
    let key = format!("{ns}/{}/{}", hpa.name(), hpa.meta().uid.as_deref().unwrap_or(""));
    if is_deleting(hpa.meta()) {
        ctx.histories.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&key);
        ctx.last_sync.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&key);
        return Ok(Action::await_change());
    }
    {
        let generation = hpa.meta().generation;
        let mut last = ctx.last_sync.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, synced)) = last.get(&key)
            && *synced == generation
            && at.elapsed() < SYNC_PERIOD
        {
            return Ok(Action::requeue(SYNC_PERIOD - at.elapsed()));
        }
        last.insert(key.clone(), (tokio::time::Instant::now(), generation));
    }
    let spec = &hpa.spec;
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;
    let now = clock::now();
    let old = hpa.status.clone().unwrap_or_default();
    let mut status = HorizontalPodAutoscalerStatus { observed_generation: hpa.meta().generation, ..old.clone() };
    let mut conditions = old.conditions.clone().unwrap_or_default();
    let mut set = |c: HorizontalPodAutoscalerCondition| {
        set_condition(&mut conditions, c, clock::now_time());
    };
    let target = &spec.scale_target_ref;
    let api_version = target.api_version.as_deref().unwrap_or("apps/v1");
    let scale_api = bosun_core::resource::builtin_for(api_version, &target.kind)
        .filter(|r| r.has_subresource("scale"))
        .map(|r| Api::<DynamicObject>::dynamic(ctx.shared.client.clone(), r.clone(), Some(&ns)));
    let scale = match &scale_api {
        Some(api) => api.get_scale(&target.name).await.map_err(|e| e.to_string()),
        None => Err(format!("no matches for kind {:?} in group-version {api_version:?} with a scale subresource", target.kind)),
    };
    let mut event = None;
    let scale = match scale {
        Ok(s) => s,
        Err(e) => {
            set(condition(
                "AbleToScale",
                false,
                "FailedGetScale",
                format!("the HPA controller was unable to get the target's current scale: {e}"),
            ));
            event = Some(EventData::warning("FailedGetScale", "GetScale", e));
            return finish(&ctx, &hpa, status, conditions, event).await;
        }
    };
    set(condition("AbleToScale", true, "SucceededGetScale", "the HPA controller was able to get the target's current scale"));
    let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    status.current_replicas = Some(scale.status.as_ref().map_or(0, |s| s.replicas));
    let (up, down) = (behavior::scale_up(spec.behavior.as_ref()), behavior::scale_down(spec.behavior.as_ref()));
    let mut rescale_reason = String::new();
    let desired = if current == 0 && min != 0 {
        set(condition("ScalingActive", false, "ScalingDisabled", "scaling is disabled since the replica count of the target is zero"));
        0
    } else if current > max {
        rescale_reason = "Current number of replicas above Spec.MaxReplicas".into();
        set(condition("ScalingLimited", true, "TooManyReplicas", "the desired replica count is more than the maximum replica count"));
        max
    } else if current < min {
        rescale_reason = "Current number of replicas below Spec.MinReplicas".into();
        set(condition("ScalingLimited", true, "TooFewReplicas", "the desired replica count is less than the minimum replica count"));
        min
    } else {
        let selector = scale.status.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
        if selector.is_empty() {
            let msg = "the HPA target's scale is missing a selector";
            set(condition("ScalingActive", false, "InvalidSelector", msg));
            event = Some(EventData::warning("SelectorRequired", "Scale", msg));
            return finish(&ctx, &hpa, status, conditions, event).await;
        }
        let metrics = spec.metrics.clone().unwrap_or_default();
        let (result, current_metrics) = proposal(&ctx, &ns, &selector, current, &metrics).await;
        status.current_metrics = Some(current_metrics).filter(|m| !m.is_empty());
        let (proposed, description) = match result {
            Ok(p) => p,
            Err(e) => {
                set(condition(
                    "ScalingActive",
                    false,
                    "FailedGetResourceMetric",
                    format!("the HPA was unable to compute the replica count: {e}"),
                ));
                event = Some(EventData::warning("FailedGetResourceMetric", "ComputeReplicas", e));
                return finish(&ctx, &hpa, status, conditions, event).await;
            }
        };
        set(condition(
            "ScalingActive",
            true,
            "ValidMetricFound",
            format!("the HPA was able to successfully calculate a replica count from {description}"),
        ));
        let limited = {
            let mut histories = ctx.histories.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let history = histories.entry(key.clone()).or_insert_with(|| History::starting_at(now, current));
            let stabilized = history.stabilize(now, current, proposed, &up, &down);
            if stabilized == proposed {
                set(condition("AbleToScale", true, "ReadyForNewScale", "recommended size matches current size"));
            } else if stabilized > proposed {
                set(condition(
                    "AbleToScale",
                    true,
                    "ScaleDownStabilized",
                    "recent recommendations were higher than current one, applying the highest recent recommendation",
                ));
            } else {
                set(condition(
                    "AbleToScale",
                    true,
                    "ScaleUpStabilized",
                    "recent recommendations were lower than current one, applying the lowest recent recommendation",
                ));
            }
            let limited = behavior::limit(stabilized, current, min, max, history, now, &up, &down);
            set(condition("ScalingLimited", limited.replicas != stabilized, limited.reason, limited.message));
            limited
        };
        if limited.replicas != current {
            let direction = if limited.replicas > current { "above" } else { "below" };
            rescale_reason = format!("{description} {direction} target");
        }
        limited.replicas
    };
    status.desired_replicas = desired;
    if desired != current
        && let Some(api) = &scale_api
    {
        let patch = Patch::Merge(serde_json::json!({"spec": {"replicas": desired}}));
        if let Err(e) = api.patch_scale(&target.name, &patch, &PatchParams::default()).await {
            set(condition(
                "AbleToScale",
                false,
                "FailedUpdateScale",
                format!("the HPA controller was unable to update the target scale: {e}"),
            ));
            event =
                Some(EventData::warning("FailedRescale", "Scale", format!("New size: {desired}; reason: {rescale_reason}; error: {e}")));
            return finish(&ctx, &hpa, status, conditions, event).await;
        }
        tracing::info!(hpa = %key, from = current, to = desired, reason = %rescale_reason, "rescaled");
        set(condition(
            "AbleToScale",
            true,
            "SucceededRescale",
            format!("the HPA controller was able to update the target scale to {desired}"),
        ));
        ctx.histories
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key)
            .or_default()
            .record_scale(now, current, desired, &up, &down);
        status.last_scale_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
        event = Some(EventData::normal("SuccessfulRescale", "Scale", format!("New size: {desired}; reason: {rescale_reason}")));
    }
    finish(&ctx, &hpa, status, conditions, event).await
}

/// Writes the status when it changed, publishes the event, and schedules the next sync.
async fn finish(
    ctx: &HpaCtx,
    hpa: &HorizontalPodAutoscaler,
    mut status: HorizontalPodAutoscalerStatus,
    conditions: Vec<HorizontalPodAutoscalerCondition>,
    event: Option<EventData>,
) -> Result<Action, Error> {
    status.conditions = Some(conditions);
    if let Some(e) = &event
        && let Err(error) = ctx.shared.recorder.publish(&object_reference(hpa), e).await
    {
        tracing::debug!(%error, "could not record an event");
    }
    if hpa.status.as_ref() != Some(&status) {
        let mut updated = hpa.clone();
        updated.status = Some(status);
        Api::<HorizontalPodAutoscaler>::namespaced(ctx.shared.client.clone(), hpa.namespace().unwrap_or("default"))
            .replace_status(&updated, &PostParams::default())
            .await?;
    }
    Ok(Action::requeue(SYNC_PERIOD))
}
