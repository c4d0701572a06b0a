//! Pod status pieces as kubectl users expect them: container states, the QoS class, and the
//! Initialized / ContainersReady / Ready / PodReadyToStartContainers conditions.

use bosun_core::k8s_openapi::api::core::v1::{
    ContainerState as ApiState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus as ApiStatus, Pod,
    PodCondition,
};
use bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use jiff::Timestamp;

/// What a container is doing, as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewState {
    /// Not running: why.
    Waiting {
        /// `ContainerCreating`, `PodInitializing`, `CrashLoopBackOff`, `CreateContainerConfigError`, ...
        reason: String,
        /// Detail.
        message: Option<String>,
    },
    /// Running since.
    Running {
        /// Start time.
        started_at: Option<Timestamp>,
    },
    /// Ended.
    Terminated(Terminated),
}

/// A finished container instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminated {
    /// Exit code.
    pub exit_code: i32,
    /// The signal that ended it.
    pub signal: Option<i32>,
    /// `Completed`, `Error`, `OOMKilled`, ...
    pub reason: String,
    /// Detail.
    pub message: Option<String>,
    /// Start time.
    pub started_at: Option<Timestamp>,
    /// End time.
    pub finished_at: Option<Timestamp>,
    /// The runtime's id of the instance.
    pub container_id: String,
}

/// One container's line of the pod status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerView {
    /// Container name.
    pub name: String,
    /// Image.
    pub image: String,
    /// Restarts so far.
    pub restart_count: i32,
    /// Current state.
    pub state: ViewState,
    /// The previous instance, once there was one.
    pub last_terminated: Option<Terminated>,
    /// Passes readiness.
    pub ready: bool,
    /// Passed its startup probe (`None` for init containers that are not sidecars).
    pub started: Option<bool>,
    /// The current instance's id.
    pub container_id: Option<String>,
}

/// The URI-style id Kubernetes shows (`process://c-web-0-3`).
pub fn container_uri(runtime: &str, id: &str) -> String {
    format!("{runtime}://{id}")
}

fn time(t: Option<Timestamp>) -> Option<Time> {
    t.map(api_time)
}

/// A time as the API keeps it: whole seconds (so that what the agent wrote compares equal to what
/// it reads back).
pub fn api_time(t: Timestamp) -> Time {
    Time(Timestamp::from_second(t.as_second()).unwrap_or(t))
}

fn terminated(t: &Terminated, runtime: &str) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        signal: t.signal,
        reason: Some(t.reason.clone()),
        message: t.message.clone(),
        started_at: time(t.started_at),
        finished_at: time(t.finished_at),
        container_id: (!t.container_id.is_empty()).then(|| container_uri(runtime, &t.container_id)),
    }
}

impl ContainerView {
    /// Converts to the API type.
    pub fn to_api(&self, runtime: &str) -> ApiStatus {
        let state = match &self.state {
            ViewState::Waiting { reason, message } => ApiState {
                waiting: Some(ContainerStateWaiting { reason: Some(reason.clone()), message: message.clone() }),
                ..ApiState::default()
            },
            ViewState::Running { started_at } => {
                ApiState { running: Some(ContainerStateRunning { started_at: time(*started_at) }), ..ApiState::default() }
            }
            ViewState::Terminated(t) => ApiState { terminated: Some(terminated(t, runtime)), ..ApiState::default() },
        };
        ApiStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: format!("{runtime}-image://{}", self.image),
            restart_count: self.restart_count,
            ready: self.ready,
            started: self.started,
            state: Some(state),
            last_state: Some(
                self.last_terminated
                    .as_ref()
                    .map_or_else(ApiState::default, |t| ApiState { terminated: Some(terminated(t, runtime)), ..ApiState::default() }),
            ),
            container_id: self.container_id.as_ref().map(|id| container_uri(runtime, id)),
            ..ApiStatus::default()
        }
    }
}

/// The pod's QoS class: `Guaranteed` when every container's CPU and memory limits equal its
/// requests, `BestEffort` when none has any, else `Burstable`.
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = &pod.spec else { return "BestEffort" };
    let all: Vec<_> = spec.containers.iter().chain(spec.init_containers.iter().flatten()).collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &all {
        let res = c.resources.clone().unwrap_or_default();
        let requests = res.requests.unwrap_or_default();
        let limits = res.limits.unwrap_or_default();
        for name in ["cpu", "memory"] {
            let req = requests.get(name).or_else(|| limits.get(name));
            let lim = limits.get(name);
            if req.is_some() || lim.is_some() {
                any = true;
            }
            let same = match (req, lim) {
                (Some(r), Some(l)) => bosun_core::Quantity::parse(&r.0).ok() == bosun_core::Quantity::parse(&l.0).ok(),
                _ => false,
            };
            guaranteed &= same;
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// Sets a condition in a list, keeping the transition time when the status does not change.
pub fn set_condition(conditions: &mut Vec<PodCondition>, type_: &str, status: bool, reason: Option<&str>, now: Timestamp) {
    let status = if status { "True" } else { "False" };
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.status = status.to_string();
            c.last_transition_time = Some(api_time(now));
        }
        c.reason = reason.map(String::from);
        return;
    }
    conditions.push(PodCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.map(String::from),
        last_transition_time: Some(api_time(now)),
        ..PodCondition::default()
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_core::k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
    use bosun_core::k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;
    use std::collections::BTreeMap;

    fn pod(resources: Vec<Option<ResourceRequirements>>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers: resources
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| Container { name: format!("c{i}"), resources: r, ..Container::default() })
                    .collect(),
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    fn rr(req: &[(&str, &str)], lim: &[(&str, &str)]) -> Option<ResourceRequirements> {
        let m = |x: &[(&str, &str)]| Some(x.iter().map(|(k, v)| (k.to_string(), Q(v.to_string()))).collect::<BTreeMap<_, _>>());
        Some(ResourceRequirements { requests: m(req), limits: m(lim), ..ResourceRequirements::default() })
    }

    #[test]
    fn qos_classes_follow_requests_and_limits() {
        assert_eq!(qos_class(&pod(vec![None])), "BestEffort");
        assert_eq!(qos_class(&pod(vec![rr(&[("cpu", "100m"), ("memory", "1Gi")], &[("cpu", "0.1"), ("memory", "1Gi")])])), "Guaranteed");
        assert_eq!(qos_class(&pod(vec![rr(&[], &[("cpu", "1"), ("memory", "1Gi")])])), "Guaranteed", "limits alone imply requests");
        assert_eq!(qos_class(&pod(vec![rr(&[("cpu", "100m")], &[])])), "Burstable");
        assert_eq!(qos_class(&pod(vec![rr(&[("cpu", "1"), ("memory", "1Gi")], &[("cpu", "1"), ("memory", "1Gi")]), None])), "Burstable");
    }
}
