//! The built-in controllers, one file each, and the helpers they share.

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod gc;
pub mod hpa;
pub mod job;
pub mod namespace;
pub mod nodelifecycle;
pub mod persistentvolume;
pub mod replicaset;
pub mod statefulset;

use crate::clock;
use crate::runtime::{Controller, Metrics, Recorder};
use bosun_core::meta::{find_condition, is_condition_true, is_deleting};
use bosun_core::watch::{INDEX_OWNER, Informers, Store};
use bosun_core::{Api, Client, Error, LabelSelector, Object};
use k8s_openapi::api::core::v1::Pod;
use std::sync::Arc;
use std::time::Duration;

/// What every built-in controller shares: the client, the informers, metrics and events.
#[derive(Clone)]
pub struct Shared {
    /// The client.
    pub client: Arc<dyn Client>,
    /// The shared informers (one reflector per kind).
    pub informers: Informers,
    /// The metrics registry.
    pub metrics: Metrics,
    /// The event recorder.
    pub recorder: Recorder,
}

impl Shared {
    /// Shared state over a client.
    pub fn new(client: Arc<dyn Client>, informers: Informers, metrics: Metrics) -> Self {
        let recorder = Recorder::new(client.clone(), "bosun-controller-manager", "bosun");
        Self { client, informers, metrics, recorder }
    }

    /// A controller wired to the shared informers and metrics.
    pub fn controller<K: Object>(&self, api: Api<K>, name: &str) -> Controller<K> {
        Controller::new(api).informers(&self.informers).metrics(&self.metrics).name(name)
    }
}

/// Parses a workload's label selector; a missing or invalid one is a 400.
pub fn selector_of(selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector) -> Result<LabelSelector, Error> {
    LabelSelector::from_api(selector).map_err(|e| Error::bad_request(format!("invalid selector: {e}")))
}

/// Whether a pod counts toward its owner's replicas: not being deleted and not finished.
pub fn pod_is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !is_deleting(pod.meta()) && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// Whether the pod's `Ready` condition is `True`.
pub fn pod_is_ready(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.conditions.as_deref()).is_some_and(|c| is_condition_true(c, "Ready"))
}

/// Whether a ready pod has been ready for `min_ready_seconds`; else how long until it will be.
pub fn pod_is_available(pod: &Pod, min_ready_seconds: i32) -> Result<(), Duration> {
    if min_ready_seconds <= 0 {
        return Ok(());
    }
    let since = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .and_then(|c| find_condition(c, "Ready"))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| clock::seconds_since(&t.0));
    match since {
        Some(s) if s >= f64::from(min_ready_seconds) => Ok(()),
        Some(s) => Err(Duration::from_secs_f64((f64::from(min_ready_seconds) - s).max(0.001))),
        None => Ok(()),
    }
}

/// The objects an owner may claim: those that already name it as an owner (owner index) and those
/// in its namespace its selector matches (label index); each once. Cheap in a crowded namespace.
pub fn claim_candidates<K: Object>(store: &Store<K>, namespace: &str, owner_uid: &str, selector: &LabelSelector) -> Vec<Arc<K>> {
    let mut out = store.by_index(INDEX_OWNER, owner_uid);
    if !selector.is_empty() {
        // Only orphans can be claimed; objects that name this owner are already in.
        let orphans = store.select(Some(namespace), selector).into_iter().filter(|o| {
            let meta = o.meta();
            bosun_core::meta::controller_of(meta).is_none() && !bosun_core::meta::is_owned_by(meta, owner_uid)
        });
        out.extend(orphans);
    }
    out.retain(|o| o.namespace() == Some(namespace));
    out
}

/// Ignores a 404: the object is already gone.
pub fn ignore_not_found<T>(r: Result<T, Error>) -> Result<Option<T>, Error> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether a required node selector (node affinity, a volume's node affinity) admits `node`: any
/// of its terms, each non-empty with every expression (labels) and field (`metadata.name`) met.
pub(crate) fn node_selector_admits(selector: &k8s_openapi::api::core::v1::NodeSelector, node: &k8s_openapi::api::core::v1::Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let name = node.metadata.name.as_deref().unwrap_or_default();
    selector.node_selector_terms.iter().any(|term| {
        let exprs = term.match_expressions.as_deref().unwrap_or_default();
        let fields = term.match_fields.as_deref().unwrap_or_default();
        (!exprs.is_empty() || !fields.is_empty())
            && exprs.iter().all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
            && fields.iter().all(|r| r.key == "metadata.name" && requirement_matches(r, Some(name)))
    })
}

/// Whether a node selector requirement admits a label value (`None`: the label is absent).
fn requirement_matches(r: &k8s_openapi::api::core::v1::NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| values.iter().all(|x| x != v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (value.and_then(|v| v.parse::<i64>().ok()), values.first().and_then(|b| b.parse::<i64>().ok()))
            else {
                return false;
            };
            if r.operator == "Gt" { v > bound } else { v < bound }
        }
        _ => false,
    }
}
