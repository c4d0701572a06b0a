//! The `k8s-openapi` type behind each built-in kind, for decoding checks and unknown-field detection.

use bosun_core::k8s_openapi::api;
use bosun_core::{ApiResource, Error, Result};

macro_rules! kinds {
    ($res:expr, $body:expr, $( ($group:literal, $kind:literal) => $ty:ty ),* $(,)?) => {
        match (&*$res.group, &*$res.kind) {
            $( ($group, $kind) => Some(through::<$ty>($body)?), )*
            _ => None,
        }
    };
}

fn through<K: serde::de::DeserializeOwned + serde::Serialize>(body: &serde_json::Value) -> Result<serde_json::Value> {
    let k: K = serde_json::from_value(body.clone()).map_err(|e| Error::bad_request(format!("decode body: {e}")))?;
    serde_json::to_value(&k).map_err(|e| Error::internal(format!("encode object: {e}")))
}

/// Decodes a body as the resource's typed kind and encodes it again; `None` for kinds without one.
/// A body that does not fit the type is a 400.
pub(crate) fn round_trip(resource: &ApiResource, body: &serde_json::Value) -> Result<Option<serde_json::Value>> {
    Ok(kinds!(resource, body,
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
    ))
}
