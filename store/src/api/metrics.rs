//! The resource metrics API (`metrics.k8s.io/v1beta1` NodeMetrics and PodMetrics): read-only,
//! served from the usage a [`MetricsSource`] reports, joined with the Node and Pod objects so that
//! label and field selectors work as metrics-server has them.
//!
//! In Kubernetes metrics-server scrapes every kubelet and the API server proxies to it; here the
//! server asks its source (typically the node agents of the cluster) on every read. CPU is written
//! in nanocores (`123456n`) and memory in bytes with the binary suffix (`2048Ki`), as metrics-server
//! writes them.

use super::ApiServer;
use super::read::EncodedList;
use async_trait::async_trait;
use bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, Time};
use bosun_core::k8s_openapi::jiff::Timestamp;
use bosun_core::{ApiResource, Client, DynamicObject, Error, ListParams, ObjectList, Result, Target, TypeMeta};
use bytes::Bytes;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

/// The API group of the resource metrics API.
pub const GROUP: &str = "metrics.k8s.io";
/// Its one version.
pub const VERSION: &str = "v1beta1";

/// CPU and memory of one container over a window.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerSample {
    /// Container name.
    pub name: String,
    /// CPU in nanocores (billionths of a core) averaged over the window.
    pub cpu_nanocores: u64,
    /// Memory working set in bytes.
    pub memory_bytes: u64,
}

/// Usage of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSample {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// When the sample was taken.
    pub timestamp: Timestamp,
    /// The window the CPU rate is averaged over.
    pub window: Duration,
    /// Its containers.
    pub containers: Vec<ContainerSample>,
}

/// Usage of one node (the sum over what runs on it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSample {
    /// Node name.
    pub name: String,
    /// When the sample was taken.
    pub timestamp: Timestamp,
    /// The window the CPU rate is averaged over.
    pub window: Duration,
    /// CPU in nanocores.
    pub cpu_nanocores: u64,
    /// Memory working set in bytes.
    pub memory_bytes: u64,
}

/// Where the metrics API reads usage from: asked on every NodeMetrics or PodMetrics read. Given to
/// [`ApiServerBuilder::metrics_source`](super::ApiServerBuilder::metrics_source); without one the
/// `metrics.k8s.io` group is not served (and `kubectl top` says the metrics API is unavailable).
#[async_trait]
pub trait MetricsSource: Send + Sync + 'static {
    /// The latest sample of every node that has one.
    async fn nodes(&self) -> Result<Vec<NodeSample>>;

    /// The latest sample of every pod that has one, in one namespace or (`None`) all of them.
    async fn pods(&self, namespace: Option<&str>) -> Result<Vec<PodSample>>;
}

/// The two resources of the group, as discovery lists them.
pub fn resources() -> Vec<ApiResource> {
    [("NodeMetrics", "nodes", false), ("PodMetrics", "pods", true)]
        .into_iter()
        .map(|(kind, plural, namespaced)| {
            let mut r = ApiResource::new(GROUP, VERSION, kind, plural, namespaced);
            r.singular = "".into();
            r.verbs = vec!["get".into(), "list".into()];
            r
        })
        .collect()
}

/// Whether a request is for the metrics API.
pub(crate) fn is_metrics(resource: &ApiResource) -> bool {
    resource.group == GROUP
}

/// CPU as metrics-server writes it: nanocores, in the largest decimal unit that keeps it whole.
pub fn cpu_quantity(nanocores: u64) -> String {
    match nanocores {
        0 => "0".into(),
        n if n.is_multiple_of(1_000_000_000) => format!("{}", n / 1_000_000_000),
        n if n.is_multiple_of(1_000_000) => format!("{}m", n / 1_000_000),
        n if n.is_multiple_of(1_000) => format!("{}u", n / 1_000),
        n => format!("{n}n"),
    }
}

/// Memory as metrics-server writes it: bytes, in the largest binary unit that keeps it whole.
pub fn memory_quantity(bytes: u64) -> String {
    const UNITS: [(&str, u32); 4] = [("Ei", 6), ("Pi", 5), ("Ti", 4), ("Gi", 3)];
    if bytes == 0 {
        return "0".into();
    }
    for (suffix, power) in UNITS.iter().copied().chain([("Mi", 2), ("Ki", 1)]) {
        let unit = 1u64 << (10 * power);
        if bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

fn window_string(window: Duration) -> String {
    let secs = window.as_secs_f64();
    if window.subsec_nanos() == 0 { format!("{}s", window.as_secs()) } else { format!("{secs}s") }
}

fn not_found(resource: &ApiResource, name: &str) -> Error {
    Error::not_found(GROUP, &resource.plural, name)
}

fn pod_object(pod: &DynamicObject, sample: &PodSample) -> DynamicObject {
    let containers: Vec<_> = sample
        .containers
        .iter()
        .map(|c| json!({"name": c.name, "usage": {"cpu": cpu_quantity(c.cpu_nanocores), "memory": memory_quantity(c.memory_bytes)}}))
        .collect();
    metrics_object(
        "PodMetrics",
        pod,
        json!({"timestamp": Time(sample.timestamp), "window": window_string(sample.window), "containers": containers}),
    )
}

fn node_object(node: &DynamicObject, sample: &NodeSample) -> DynamicObject {
    let usage = json!({"cpu": cpu_quantity(sample.cpu_nanocores), "memory": memory_quantity(sample.memory_bytes)});
    metrics_object(
        "NodeMetrics",
        node,
        json!({"timestamp": Time(sample.timestamp), "window": window_string(sample.window), "usage": usage}),
    )
}

/// A metrics object named and labelled like the object it measures, created now (as
/// metrics-server stamps them).
fn metrics_object(kind: &str, of: &DynamicObject, data: serde_json::Value) -> DynamicObject {
    let mut metadata = bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        name: of.metadata.name.clone(),
        namespace: of.metadata.namespace.clone(),
        labels: of.metadata.labels.clone(),
        ..Default::default()
    };
    metadata.creation_timestamp = Some(super::write::now());
    DynamicObject { types: Some(TypeMeta { api_version: format!("{GROUP}/{VERSION}"), kind: kind.into() }), metadata, data }
}

impl ApiServer {
    fn metrics(&self) -> Result<&std::sync::Arc<dyn MetricsSource>> {
        self.metrics
            .as_ref()
            .ok_or_else(|| Error::not_found(GROUP, "", "").with_status_message("the server could not find the requested resource"))
    }

    fn measured(resource: &ApiResource) -> Result<&'static ApiResource> {
        let kind = if resource.plural == "nodes" { "Node" } else { "Pod" };
        bosun_core::resource::builtin("", "v1", kind).ok_or_else(|| Error::internal("pods and nodes are not served"))
    }

    /// GET of one NodeMetrics or PodMetrics: 404 when the object or its sample is missing.
    pub(crate) async fn metrics_get(&self, target: Target<'_>, name: &str) -> Result<DynamicObject> {
        let source = self.metrics()?;
        let measured = Self::measured(target.resource)?;
        let namespace = target.namespace.filter(|_| target.resource.namespaced);
        let obj = match self.get(Target::new(measured, namespace), name).await {
            Ok(o) => o,
            Err(e) if e.is_not_found() => return Err(not_found(target.resource, name)),
            Err(e) => return Err(e),
        };
        if measured.plural == "nodes" {
            let samples = source.nodes().await?;
            let sample = samples.iter().find(|s| s.name == name).ok_or_else(|| not_found(target.resource, name))?;
            Ok(node_object(&obj, sample))
        } else {
            let samples = source.pods(namespace).await?;
            let sample = samples
                .iter()
                .find(|s| s.name == name && Some(s.namespace.as_str()) == namespace)
                .ok_or_else(|| not_found(target.resource, name))?;
            Ok(pod_object(&obj, sample))
        }
    }

    /// LIST of NodeMetrics or PodMetrics: the nodes or pods the selectors match that have a sample.
    pub(crate) async fn metrics_list(&self, target: Target<'_>, params: &ListParams) -> Result<ObjectList<DynamicObject>> {
        let source = self.metrics()?;
        let measured = Self::measured(target.resource)?;
        let namespace = target.namespace.filter(|_| target.resource.namespaced);
        let select = ListParams {
            label_selector: params.label_selector.clone(),
            field_selector: params.field_selector.clone(),
            ..ListParams::default()
        };
        let objects = self.list(Target::new(measured, namespace), &select).await?;
        let items: Vec<DynamicObject> = if measured.plural == "nodes" {
            let samples: HashMap<String, NodeSample> = source.nodes().await?.into_iter().map(|s| (s.name.clone(), s)).collect();
            objects.items.iter().filter_map(|n| samples.get(n.metadata.name.as_deref()?).map(|s| node_object(n, s))).collect()
        } else {
            let samples: HashMap<(String, String), PodSample> =
                source.pods(namespace).await?.into_iter().map(|s| ((s.namespace.clone(), s.name.clone()), s)).collect();
            objects
                .items
                .iter()
                .filter_map(|p| {
                    let key = (p.metadata.namespace.clone()?, p.metadata.name.clone()?);
                    samples.get(&key).map(|s| pod_object(p, s))
                })
                .collect()
        };
        Ok(ObjectList {
            types: TypeMeta { api_version: format!("{GROUP}/{VERSION}"), kind: format!("{}List", target.resource.kind) },
            metadata: ListMeta::default(),
            items,
        })
    }

    /// A list of a resource served without storage (the metrics API, the autoscaling/v1 view)
    /// with each item encoded, for the HTTP server's list path.
    pub(crate) async fn metrics_list_encoded(&self, target: Target<'_>, params: &ListParams) -> Result<EncodedList> {
        let list = self.list(target, params).await?;
        let items = list.items.iter().map(|o| Bytes::from(serde_json::to_vec(o).unwrap_or_default())).collect();
        Ok(EncodedList { types: list.types, metadata: list.metadata, items })
    }
}

/// Rewording a 404's message.
trait WithStatusMessage {
    fn with_status_message(self, message: &str) -> Self;
}

impl WithStatusMessage for Error {
    fn with_status_message(self, message: &str) -> Self {
        let details = self.body().and_then(|b| b.details.clone());
        Error::NotFound(Box::new(bosun_core::ErrorBody { message: message.to_owned(), details }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_written_in_the_largest_whole_decimal_unit() {
        assert_eq!(cpu_quantity(123_456), "123456n");
        assert_eq!(cpu_quantity(250_000_000), "250m");
        assert_eq!(cpu_quantity(2_000_000_000), "2");
        assert_eq!(cpu_quantity(1_500), "1500n");
        assert_eq!(cpu_quantity(15_000), "15u");
        assert_eq!(cpu_quantity(0), "0");
    }

    #[test]
    fn memory_is_written_in_the_largest_whole_binary_unit() {
        assert_eq!(memory_quantity(3 * 1024 + 1024 * 1024), "1027Ki");
        assert_eq!(memory_quantity(16 << 20), "16Mi");
        assert_eq!(memory_quantity(1000), "1000");
        assert_eq!(memory_quantity(0), "0");
    }

    #[test]
    fn the_group_serves_cluster_nodes_and_namespaced_pods_read_only() {
        let r = resources();
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|r| r.verbs == ["get", "list"]));
        assert!(r.iter().any(|r| r.plural == "pods" && r.namespaced && r.kind == "PodMetrics"));
        assert!(r.iter().any(|r| r.plural == "nodes" && !r.namespaced && r.kind == "NodeMetrics"));
    }
}
