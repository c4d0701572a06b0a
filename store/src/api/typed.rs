//! The `k8s-openapi` type behind each built-in kind, for decoding checks and unknown-field detection.

use bosun_core::k8s_openapi::api;
use bosun_core::{ApiResource, DynamicObject, Error, Object, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Something to do with the `k8s-openapi` type of a kind, whichever it is (see [`with_type`]).
pub(crate) trait KindFn {
    /// What doing it gives.
    type Out;
    /// Does it with the kind's type.
    fn call<K: Object + Serialize + DeserializeOwned>(self) -> Self::Out;
}

macro_rules! kinds {
    ($res:expr, $f:expr, $( ($group:literal, $kind:literal) => $ty:ty ),* $(,)?) => {
        match (&*$res.group, &*$res.kind) {
            $( ($group, $kind) => Some($f.call::<$ty>()), )*
            _ => None,
        }
    };
}

struct Through<'a>(&'a serde_json::Value);

impl KindFn for Through<'_> {
    type Out = Result<serde_json::Value>;
    fn call<K: Object + Serialize + DeserializeOwned>(self) -> Self::Out {
        // Decoding from a borrowed value: no copy of the body first.
        let k = K::deserialize(self.0).map_err(|e| Error::bad_request(format!("decode body: {e}")))?;
        serde_json::to_value(&k).map_err(|e| Error::internal(format!("encode object: {e}")))
    }
}

struct RoundTrip<'a>(&'a mut DynamicObject);

impl KindFn for RoundTrip<'_> {
    type Out = Result<()>;
    fn call<K: Object + Serialize + DeserializeOwned>(self) -> Self::Out {
        let k: K = std::mem::take(self.0).into_typed()?;
        *self.0 = DynamicObject::from_typed_owned(k)?;
        Ok(())
    }
}

/// Runs `f` with the `k8s-openapi` type of a built-in kind; `None` for kinds without one.
pub(crate) fn with_type<F: KindFn>(resource: &ApiResource, f: F) -> Option<F::Out> {
    kinds!(resource, f,
        ("", "Namespace") => api::core::v1::Namespace,
        ("", "Node") => api::core::v1::Node,
        ("", "Pod") => api::core::v1::Pod,
        ("", "Service") => api::core::v1::Service,
        ("", "Endpoints") => api::core::v1::Endpoints,
        ("", "ConfigMap") => api::core::v1::ConfigMap,
        ("", "Secret") => api::core::v1::Secret,
        ("", "ServiceAccount") => api::core::v1::ServiceAccount,
        ("", "Event") => api::core::v1::Event,
        ("", "PersistentVolume") => api::core::v1::PersistentVolume,
        ("", "PersistentVolumeClaim") => api::core::v1::PersistentVolumeClaim,
        ("", "ReplicationController") => api::core::v1::ReplicationController,
        ("", "PodTemplate") => api::core::v1::PodTemplate,
        ("", "LimitRange") => api::core::v1::LimitRange,
        ("", "ResourceQuota") => api::core::v1::ResourceQuota,
        ("apps", "Deployment") => api::apps::v1::Deployment,
        ("apps", "ReplicaSet") => api::apps::v1::ReplicaSet,
        ("apps", "StatefulSet") => api::apps::v1::StatefulSet,
        ("apps", "DaemonSet") => api::apps::v1::DaemonSet,
        ("apps", "ControllerRevision") => api::apps::v1::ControllerRevision,
        ("batch", "Job") => api::batch::v1::Job,
        ("batch", "CronJob") => api::batch::v1::CronJob,
        ("autoscaling", "HorizontalPodAutoscaler") => api::autoscaling::v2::HorizontalPodAutoscaler,
        ("policy", "PodDisruptionBudget") => api::policy::v1::PodDisruptionBudget,
        ("networking.k8s.io", "Ingress") => api::networking::v1::Ingress,
        ("networking.k8s.io", "IngressClass") => api::networking::v1::IngressClass,
        ("networking.k8s.io", "NetworkPolicy") => api::networking::v1::NetworkPolicy,
        ("discovery.k8s.io", "EndpointSlice") => api::discovery::v1::EndpointSlice,
        ("events.k8s.io", "Event") => api::events::v1::Event,
        ("coordination.k8s.io", "Lease") => api::coordination::v1::Lease,
        ("scheduling.k8s.io", "PriorityClass") => api::scheduling::v1::PriorityClass,
        ("storage.k8s.io", "StorageClass") => api::storage::v1::StorageClass,
        ("apiextensions.k8s.io", "CustomResourceDefinition") => bosun_core::k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
        ("rbac.authorization.k8s.io", "Role") => api::rbac::v1::Role,
        ("rbac.authorization.k8s.io", "ClusterRole") => api::rbac::v1::ClusterRole,
        ("rbac.authorization.k8s.io", "RoleBinding") => api::rbac::v1::RoleBinding,
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => api::rbac::v1::ClusterRoleBinding,
    )
}

/// Decodes an object through its kind's type and back, in place (unknown fields dropped, bad
/// shapes refused with 400); `false` for kinds without a type (left as they are).
pub(crate) fn round_trip_object(resource: &ApiResource, obj: &mut DynamicObject) -> Result<bool> {
    with_type(resource, RoundTrip(obj)).transpose().map(|done| done.is_some())
}

macro_rules! statuses {
    ($res:expr, $body:expr, $( ($group:literal, $kind:literal) => $ty:ty ),* $(,)?) => {
        match (&*$res.group, &*$res.kind) {
            $( ($group, $kind) => Some(status_through::<$ty>($body)?), )*
            _ => None,
        }
    };
}

fn status_through<S: serde::de::DeserializeOwned + Serialize>(status: &serde_json::Value) -> Result<serde_json::Value> {
    let s = S::deserialize(status).map_err(|e| Error::bad_request(format!("decode body: status: {e}")))?;
    serde_json::to_value(&s).map_err(|e| Error::internal(format!("encode status: {e}")))
}

/// Decodes a kind's `status` (not null) as its typed status and encodes it again: the status part
/// of [`round_trip`], for writes that change nothing else. `None` for kinds without a typed status.
pub(crate) fn round_trip_status(resource: &ApiResource, status: &serde_json::Value) -> Result<Option<serde_json::Value>> {
    use bosun_core::k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinitionStatus;
    Ok(statuses!(resource, status,
        ("", "Namespace") => api::core::v1::NamespaceStatus,
        ("", "Node") => api::core::v1::NodeStatus,
        ("", "Pod") => api::core::v1::PodStatus,
        ("", "Service") => api::core::v1::ServiceStatus,
        ("", "PersistentVolume") => api::core::v1::PersistentVolumeStatus,
        ("", "PersistentVolumeClaim") => api::core::v1::PersistentVolumeClaimStatus,
        ("", "ReplicationController") => api::core::v1::ReplicationControllerStatus,
        ("", "ResourceQuota") => api::core::v1::ResourceQuotaStatus,
        ("apps", "Deployment") => api::apps::v1::DeploymentStatus,
        ("apps", "ReplicaSet") => api::apps::v1::ReplicaSetStatus,
        ("apps", "StatefulSet") => api::apps::v1::StatefulSetStatus,
        ("apps", "DaemonSet") => api::apps::v1::DaemonSetStatus,
        ("batch", "Job") => api::batch::v1::JobStatus,
        ("batch", "CronJob") => api::batch::v1::CronJobStatus,
        ("autoscaling", "HorizontalPodAutoscaler") => api::autoscaling::v2::HorizontalPodAutoscalerStatus,
        ("policy", "PodDisruptionBudget") => api::policy::v1::PodDisruptionBudgetStatus,
        ("networking.k8s.io", "Ingress") => api::networking::v1::IngressStatus,
        ("apiextensions.k8s.io", "CustomResourceDefinition") => CustomResourceDefinitionStatus,
    ))
}

/// Decodes a body as the resource's typed kind and encodes it again; `None` for kinds without one.
/// A body that does not fit the type is a 400.
pub(crate) fn round_trip(resource: &ApiResource, body: &serde_json::Value) -> Result<Option<serde_json::Value>> {
    with_type(resource, Through(body)).transpose()
}
