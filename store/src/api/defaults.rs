//! Defaulting: the values kube-apiserver fills in for fields a user leaves out, per built-in kind.

use bosun_core::k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetUpdateStrategy, Deployment, DeploymentStrategy, ReplicaSet, RollingUpdateDaemonSet, RollingUpdateDeployment,
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetUpdateStrategy,
};
use bosun_core::k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use bosun_core::k8s_openapi::api::batch::v1::{CronJob, Job, JobTemplateSpec};
use bosun_core::k8s_openapi::api::core::v1::{
    Container, Namespace, NamespaceSpec, PersistentVolume, PersistentVolumeClaim, Pod, PodSpec, PodTemplateSpec, Probe,
    ReplicationController, Secret, Service, Toleration,
};
use bosun_core::k8s_openapi::api::discovery::v1::EndpointSlice;
use bosun_core::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// `imagePullPolicy`: `Always` for `:latest` or untagged images, else `IfNotPresent`.
pub(crate) fn image_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        None => "Always",
        Some((_, "latest")) => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn default_probe(probe: &mut Option<Probe>) {
    if let Some(p) = probe.as_mut() {
        p.timeout_seconds.get_or_insert(1);
        p.period_seconds.get_or_insert(10);
        p.success_threshold.get_or_insert(1);
        p.failure_threshold.get_or_insert(3);
        if let Some(h) = p.http_get.as_mut() {
            h.path.get_or_insert_with(|| "/".into());
            h.scheme.get_or_insert_with(|| "HTTP".into());
        }
    }
}

fn default_container(c: &mut Container, host_network: bool) {
    if c.image_pull_policy.is_none() {
        c.image_pull_policy = Some(image_pull_policy(c.image.as_deref().unwrap_or("")).into());
    }
    c.termination_message_path.get_or_insert_with(|| "/dev/termination-log".into());
    c.termination_message_policy.get_or_insert_with(|| "File".into());
    for port in c.ports.iter_mut().flatten() {
        port.protocol.get_or_insert_with(|| "TCP".into());
        if host_network && port.host_port.is_none() {
            port.host_port = Some(port.container_port);
        }
    }
    for env in c.env.iter_mut().flatten() {
        if let Some(f) = env.value_from.as_mut().and_then(|v| v.field_ref.as_mut()) {
            f.api_version.get_or_insert_with(|| "v1".into());
        }
    }
    default_probe(&mut c.liveness_probe);
    default_probe(&mut c.readiness_probe);
    default_probe(&mut c.startup_probe);
    let resources = c.resources.get_or_insert_with(Default::default);
    if let Some(limits) = resources.limits.clone() {
        let requests = resources.requests.get_or_insert_with(Default::default);
        for (k, v) in limits {
            requests.entry(k).or_insert(v);
        }
    }
}

/// Defaults of a pod spec (also inside every workload's pod template).
pub(crate) fn pod_spec(spec: &mut PodSpec) {
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
    spec.scheduler_name.get_or_insert_with(|| "default-scheduler".into());
    spec.security_context.get_or_insert_with(Default::default);
    spec.enable_service_links.get_or_insert(true);
    let host_network = spec.host_network.unwrap_or(false);
    for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
        default_container(c, host_network);
    }
    if spec.service_account_name.is_none()
        && let Some(sa) = spec.service_account.clone()
    {
        spec.service_account_name = Some(sa);
    }
    for v in spec.volumes.iter_mut().flatten() {
        if let Some(cm) = v.config_map.as_mut() {
            cm.default_mode.get_or_insert(0o644);
        }
        if let Some(s) = v.secret.as_mut() {
            s.default_mode.get_or_insert(0o644);
        }
        if let Some(d) = v.downward_api.as_mut() {
            d.default_mode.get_or_insert(0o644);
        }
        if let Some(p) = v.projected.as_mut() {
            p.default_mode.get_or_insert(0o644);
        }
        if let Some(h) = v.host_path.as_mut() {
            h.type_.get_or_insert_with(String::new);
        }
    }
}

fn template(t: &mut PodTemplateSpec) {
    if let Some(spec) = t.spec.as_mut() {
        pod_spec(spec);
    }
}

/// Pod defaults, including the tolerations the `DefaultTolerationSeconds` admission plugin adds.
pub(crate) fn pod(p: &mut Pod) {
    let spec = p.spec.get_or_insert_with(Default::default);
    pod_spec(spec);
    if spec.priority_class_name.is_none() && spec.priority.is_none() {
        spec.priority = Some(0);
    }
    spec.preemption_policy.get_or_insert_with(|| "PreemptLowerPriority".into());
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
        let present = tolerations
            .iter()
            .any(|t| (t.key.as_deref() == Some(key) || t.key.is_none()) && t.effect.as_deref().is_none_or(|e| e == "NoExecute"));
        if !present {
            tolerations.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some("NoExecute".into()),
                toleration_seconds: Some(300),
                ..Toleration::default()
            });
        }
    }
}

/// `Guaranteed`, `Burstable` or `BestEffort`, from the containers' requests and limits.
pub(crate) fn qos_class(spec: &PodSpec) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    for c in spec.containers.iter().chain(spec.init_containers.iter().flatten()) {
        let r = c.resources.as_ref();
        let requests = r.and_then(|r| r.requests.as_ref());
        let limits = r.and_then(|r| r.limits.as_ref());
        let relevant = |m: Option<&std::collections::BTreeMap<String, _>>| {
            m.map(|m| m.keys().filter(|k| *k == "cpu" || *k == "memory").count()).unwrap_or(0)
        };
        if relevant(requests) + relevant(limits) > 0 {
            any = true;
        }
        for res in ["cpu", "memory"] {
            let l = limits.and_then(|l| l.get(res));
            let q = requests.and_then(|q| q.get(res)).or(l);
            match (l, q) {
                (Some(l), Some(q)) if l == q => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Deployment defaults: RollingUpdate 25%/25%, revisionHistoryLimit 10, progressDeadlineSeconds 600.
pub(crate) fn deployment(d: &mut Deployment) {
    let spec = &mut d.spec;
    spec.replicas.get_or_insert(1);
    let strategy = spec.strategy.get_or_insert_with(DeploymentStrategy::default);
    let kind = strategy.type_.get_or_insert_with(|| "RollingUpdate".into());
    if kind == "RollingUpdate" {
        let ru = strategy.rolling_update.get_or_insert_with(RollingUpdateDeployment::default);
        ru.max_unavailable.get_or_insert_with(|| IntOrString::String("25%".into()));
        ru.max_surge.get_or_insert_with(|| IntOrString::String("25%".into()));
    }
    spec.revision_history_limit.get_or_insert(10);
    spec.progress_deadline_seconds.get_or_insert(600);
    template(&mut spec.template);
}

/// ReplicaSet defaults.
pub(crate) fn replica_set(r: &mut ReplicaSet) {
    let spec = &mut r.spec;
    spec.replicas.get_or_insert(1);
    if let Some(t) = spec.template.as_mut() {
        template(t);
    }
}

/// ReplicationController defaults: the selector and labels default to the template's labels.
pub(crate) fn replication_controller(r: &mut ReplicationController) {
    let spec = r.spec.get_or_insert_with(Default::default);
    spec.replicas.get_or_insert(1);
    let labels = spec.template.as_ref().and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.clone());
    if spec.selector.as_ref().is_none_or(|s| s.is_empty()) {
        spec.selector = labels.clone();
    }
    if r.metadata.labels.as_ref().is_none_or(|l| l.is_empty()) {
        r.metadata.labels = labels;
    }
    if let Some(t) = spec.template.as_mut() {
        template(t);
    }
}

/// StatefulSet defaults.
pub(crate) fn stateful_set(s: &mut StatefulSet) {
    let spec = &mut s.spec;
    spec.replicas.get_or_insert(1);
    spec.pod_management_policy.get_or_insert_with(|| "OrderedReady".into());
    let us = spec.update_strategy.get_or_insert_with(StatefulSetUpdateStrategy::default);
    let kind = us.type_.get_or_insert_with(|| "RollingUpdate".into());
    if kind == "RollingUpdate" {
        us.rolling_update.get_or_insert_with(RollingUpdateStatefulSetStrategy::default).partition.get_or_insert(0);
    }
    spec.revision_history_limit.get_or_insert(10);
    let policy = spec.persistent_volume_claim_retention_policy.get_or_insert_with(StatefulSetPersistentVolumeClaimRetentionPolicy::default);
    policy.when_deleted.get_or_insert_with(|| "Retain".into());
    policy.when_scaled.get_or_insert_with(|| "Retain".into());
    for pvc in spec.volume_claim_templates.iter_mut().flatten() {
        pvc.spec.get_or_insert_with(Default::default).volume_mode.get_or_insert_with(|| "Filesystem".into());
    }
    template(&mut spec.template);
}

/// DaemonSet defaults: RollingUpdate with maxUnavailable 1, maxSurge 0.
pub(crate) fn daemon_set(d: &mut DaemonSet) {
    let spec = &mut d.spec;
    let us = spec.update_strategy.get_or_insert_with(DaemonSetUpdateStrategy::default);
    let kind = us.type_.get_or_insert_with(|| "RollingUpdate".into());
    if kind == "RollingUpdate" {
        let ru = us.rolling_update.get_or_insert_with(RollingUpdateDaemonSet::default);
        ru.max_unavailable.get_or_insert(IntOrString::Int(1));
        ru.max_surge.get_or_insert(IntOrString::Int(0));
    }
    spec.revision_history_limit.get_or_insert(10);
    template(&mut spec.template);
}

/// Job defaults (the generated selector is added at create, once the uid is known).
pub(crate) fn job(j: &mut Job) {
    let spec = j.spec.get_or_insert_with(Default::default);
    if spec.completions.is_none() && spec.parallelism.is_none() {
        spec.completions = Some(1);
    }
    spec.parallelism.get_or_insert(1);
    spec.backoff_limit.get_or_insert(if spec.backoff_limit_per_index.is_some() { i32::MAX } else { 6 });
    spec.completion_mode.get_or_insert_with(|| "NonIndexed".into());
    spec.suspend.get_or_insert(false);
    spec.manual_selector.get_or_insert(false);
    if spec.pod_failure_policy.is_none() {
        spec.pod_replacement_policy.get_or_insert_with(|| "TerminatingOrFailed".into());
    }
    template(&mut spec.template);
}

/// The labels a job stamps on its pods and selects them by.
pub(crate) fn job_selector(j: &mut Job) {
    let name = j.metadata.name.clone().unwrap_or_default();
    let uid = j.metadata.uid.clone().unwrap_or_default();
    let Some(spec) = j.spec.as_mut() else { return };
    if spec.manual_selector == Some(true) || spec.selector.is_some() {
        return;
    }
    let labels = spec.template.metadata.get_or_insert_with(Default::default).labels.get_or_insert_with(Default::default);
    labels.insert("batch.kubernetes.io/controller-uid".into(), uid.clone());
    labels.insert("batch.kubernetes.io/job-name".into(), name.clone());
    labels.insert("controller-uid".into(), uid.clone());
    labels.insert("job-name".into(), name);
    spec.selector = Some(bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
        match_labels: Some([("batch.kubernetes.io/controller-uid".to_owned(), uid)].into()),
        ..Default::default()
    });
}

fn job_template(t: &mut JobTemplateSpec) {
    if let Some(spec) = t.spec.as_mut() {
        template(&mut spec.template);
    }
}

/// CronJob defaults.
pub(crate) fn cron_job(c: &mut CronJob) {
    let spec = &mut c.spec;
    spec.concurrency_policy.get_or_insert_with(|| "Allow".into());
    spec.suspend.get_or_insert(false);
    spec.successful_jobs_history_limit.get_or_insert(3);
    spec.failed_jobs_history_limit.get_or_insert(1);
    job_template(&mut spec.job_template);
}

/// Service defaults: type ClusterIP, sessionAffinity None, TCP ports whose targetPort is the port.
pub(crate) fn service(s: &mut Service) {
    let spec = s.spec.get_or_insert_with(Default::default);
    let kind = spec.type_.get_or_insert_with(|| "ClusterIP".into()).clone();
    spec.session_affinity.get_or_insert_with(|| "None".into());
    for p in spec.ports.iter_mut().flatten() {
        p.protocol.get_or_insert_with(|| "TCP".into());
        p.target_port.get_or_insert(IntOrString::Int(p.port));
    }
    if kind != "ExternalName" {
        spec.internal_traffic_policy.get_or_insert_with(|| "Cluster".into());
    }
    if kind == "NodePort" || kind == "LoadBalancer" {
        spec.external_traffic_policy.get_or_insert_with(|| "Cluster".into());
    }
    if kind == "LoadBalancer" {
        spec.allocate_load_balancer_node_ports.get_or_insert(true);
    }
}

/// Namespace defaults: the `kubernetes` finalizer and the `kubernetes.io/metadata.name` label.
pub(crate) fn namespace(n: &mut Namespace) {
    let name = n.metadata.name.clone().unwrap_or_default();
    if !name.is_empty() {
        n.metadata.labels.get_or_insert_with(Default::default).insert("kubernetes.io/metadata.name".into(), name);
    }
    let spec = n.spec.get_or_insert_with(NamespaceSpec::default);
    spec.finalizers.get_or_insert_with(|| vec!["kubernetes".into()]);
}

/// Secret defaults: type Opaque.
pub(crate) fn secret(s: &mut Secret) {
    s.type_.get_or_insert_with(|| "Opaque".into());
}

/// PersistentVolume defaults.
pub(crate) fn persistent_volume(p: &mut PersistentVolume) {
    let spec = p.spec.get_or_insert_with(Default::default);
    spec.persistent_volume_reclaim_policy.get_or_insert_with(|| "Retain".into());
    spec.volume_mode.get_or_insert_with(|| "Filesystem".into());
}

/// PersistentVolumeClaim defaults.
pub(crate) fn persistent_volume_claim(p: &mut PersistentVolumeClaim) {
    p.spec.get_or_insert_with(Default::default).volume_mode.get_or_insert_with(|| "Filesystem".into());
}

/// HorizontalPodAutoscaler (v2) defaults: minReplicas 1 and 80% CPU when no metric is given.
pub(crate) fn horizontal_pod_autoscaler(h: &mut HorizontalPodAutoscaler) {
    use bosun_core::k8s_openapi::api::autoscaling::v2::{MetricSpec, MetricTarget, ResourceMetricSource};
    let spec = &mut h.spec;
    spec.min_replicas.get_or_insert(1);
    if spec.metrics.as_ref().is_none_or(Vec::is_empty) {
        spec.metrics = Some(vec![MetricSpec {
            type_: "Resource".into(),
            resource: Some(ResourceMetricSource {
                name: "cpu".into(),
                target: MetricTarget { type_: "Utilization".into(), average_utilization: Some(80), ..Default::default() },
            }),
            ..Default::default()
        }]);
    }
}

/// EndpointSlice defaults: TCP ports.
pub(crate) fn endpoint_slice(e: &mut EndpointSlice) {
    for p in e.ports.iter_mut().flatten() {
        p.protocol.get_or_insert_with(|| "TCP".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untagged_and_latest_images_are_always_pulled() {
        assert_eq!(image_pull_policy("nginx"), "Always");
        assert_eq!(image_pull_policy("nginx:latest"), "Always");
        assert_eq!(image_pull_policy("nginx:1.27"), "IfNotPresent");
        assert_eq!(image_pull_policy("localhost:5000/nginx"), "Always");
        assert_eq!(image_pull_policy("nginx@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn deployments_get_the_rolling_update_defaults() {
        let mut d = Deployment::default();
        deployment(&mut d);
        let spec = d.spec;
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.revision_history_limit, Some(10));
        let ru = spec.strategy.and_then(|s| s.rolling_update).unwrap_or_default();
        assert_eq!(ru.max_surge, Some(IntOrString::String("25%".into())));
        assert_eq!(ru.max_unavailable, Some(IntOrString::String("25%".into())));
    }

    #[test]
    fn qos_follows_requests_and_limits() {
        let mut spec = PodSpec { containers: vec![Container { name: "c".into(), ..Default::default() }], ..Default::default() };
        assert_eq!(qos_class(&spec), "BestEffort");
        let q = bosun_core::k8s_openapi::apimachinery::pkg::api::resource::Quantity("1".into());
        spec.containers[0].resources = Some(bosun_core::k8s_openapi::api::core::v1::ResourceRequirements {
            limits: Some([("cpu".to_owned(), q.clone()), ("memory".to_owned(), q.clone())].into()),
            ..Default::default()
        });
        assert_eq!(qos_class(&spec), "Guaranteed");
        spec.containers[0].resources = Some(bosun_core::k8s_openapi::api::core::v1::ResourceRequirements {
            requests: Some([("cpu".to_owned(), q)].into()),
            ..Default::default()
        });
        assert_eq!(qos_class(&spec), "Burstable");
    }
}
