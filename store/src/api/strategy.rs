//! Per-kind strategies: how each kind is defaulted, validated, split into spec and status, and
//! which fields its field selectors may name.

use super::crd::CustomSchema;
use super::defaults;
use super::validation::{self, NameRule};
use bosun_core::k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use bosun_core::k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use bosun_core::k8s_openapi::api::batch::v1::{CronJob, Job};
use bosun_core::k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service};
use bosun_core::k8s_openapi::api::discovery::v1::EndpointSlice;
use bosun_core::k8s_openapi::api::policy::v1::PodDisruptionBudget;
use bosun_core::k8s_openapi::api::scheduling::v1::PriorityClass;
use bosun_core::{ApiResource, DynamicObject, Error, FieldError, Object, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::borrow::Cow;
use std::sync::Arc;

/// The rules a kind follows; built-ins have their own, everything else is generic or custom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Rules {
    Namespace,
    Node,
    Pod,
    Service,
    Endpoints,
    ConfigMap,
    Secret,
    ServiceAccount,
    CoreEvent,
    ReplicationController,
    PersistentVolume,
    PersistentVolumeClaim,
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
    HorizontalPodAutoscaler,
    PodDisruptionBudget,
    EndpointSlice,
    Event,
    PriorityClass,
    CustomResourceDefinition,
    Rbac,
    Generic,
    Custom,
}

impl Rules {
    /// The rules of a kind, by group and kind.
    pub(crate) fn of(group: &str, kind: &str) -> Self {
        match (group, kind) {
            ("", "Namespace") => Self::Namespace,
            ("", "Node") => Self::Node,
            ("", "Pod") => Self::Pod,
            ("", "Service") => Self::Service,
            ("", "Endpoints") => Self::Endpoints,
            ("", "ConfigMap") => Self::ConfigMap,
            ("", "Secret") => Self::Secret,
            ("", "ServiceAccount") => Self::ServiceAccount,
            ("", "Event") => Self::CoreEvent,
            ("", "ReplicationController") => Self::ReplicationController,
            ("", "PersistentVolume") => Self::PersistentVolume,
            ("", "PersistentVolumeClaim") => Self::PersistentVolumeClaim,
            ("apps", "Deployment") => Self::Deployment,
            ("apps", "ReplicaSet") => Self::ReplicaSet,
            ("apps", "StatefulSet") => Self::StatefulSet,
            ("apps", "DaemonSet") => Self::DaemonSet,
            ("batch", "Job") => Self::Job,
            ("batch", "CronJob") => Self::CronJob,
            ("autoscaling", "HorizontalPodAutoscaler") => Self::HorizontalPodAutoscaler,
            ("policy", "PodDisruptionBudget") => Self::PodDisruptionBudget,
            ("discovery.k8s.io", "EndpointSlice") => Self::EndpointSlice,
            ("events.k8s.io", "Event") => Self::Event,
            ("scheduling.k8s.io", "PriorityClass") => Self::PriorityClass,
            ("apiextensions.k8s.io", "CustomResourceDefinition") => Self::CustomResourceDefinition,
            ("rbac.authorization.k8s.io", _) => Self::Rbac,
            _ => Self::Generic,
        }
    }

    fn name_rule(self) -> NameRule {
        match self {
            Self::Namespace => NameRule::Label,
            Self::Service => NameRule::Dns1035,
            Self::Rbac | Self::Custom => NameRule::Path,
            _ => NameRule::Subdomain,
        }
    }

    /// Whether the status set on create survives (kinds whose writers report status from the start).
    fn keeps_status_on_create(self) -> bool {
        matches!(self, Self::Node | Self::CoreEvent | Self::Event | Self::Generic | Self::Rbac)
    }
}

/// Everything the API layer knows about serving one kind.
#[derive(Debug)]
pub struct Kind {
    /// The descriptor (the storage version for multi-version custom resources).
    pub resource: ApiResource,
    pub(crate) rules: Rules,
    /// The schema of a custom resource.
    pub(crate) schema: Option<Arc<CustomSchema>>,
    /// The scale subresource's paths for custom resources: (spec replicas, status replicas, label selector).
    pub(crate) custom_scale: Option<(String, String, Option<String>)>,
    /// The warning every request to this version gets (a custom resource version marked `deprecated`).
    pub(crate) deprecation: Option<String>,
    /// The kind's watch cache, once started (weak: the cache holds the kind).
    pub(crate) cache: std::sync::OnceLock<std::sync::Weak<super::cache::KindCache>>,
}

impl Kind {
    /// A built-in kind.
    pub(crate) fn builtin(resource: ApiResource) -> Self {
        let rules = Rules::of(&resource.group, &resource.kind);
        Self { resource, rules, schema: None, custom_scale: None, deprecation: None, cache: std::sync::OnceLock::new() }
    }

    /// Whether writes to the main resource ignore `.status` (the kind has a `status` subresource).
    pub(crate) fn has_status(&self) -> bool {
        self.resource.has_subresource("status")
    }

    /// Fields beyond `metadata.name` and `metadata.namespace` that field selectors may name.
    pub(crate) fn selectable_fields(&self) -> &'static [&'static str] {
        match self.rules {
            Rules::Pod => &[
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.nominatedNodeName",
            ],
            Rules::Node => &["spec.unschedulable"],
            Rules::Namespace => &["status.phase"],
            Rules::Secret => &["type"],
            Rules::Service => &["spec.clusterIP", "spec.type"],
            Rules::ReplicationController | Rules::ReplicaSet => &["status.replicas"],
            Rules::Job => &["status.successful"],
            Rules::PersistentVolumeClaim | Rules::PersistentVolume => &["status.phase"],
            Rules::CoreEvent => &[
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
            ],
            Rules::Event => &[
                "regarding.kind",
                "regarding.namespace",
                "regarding.name",
                "regarding.uid",
                "regarding.apiVersion",
                "regarding.resourceVersion",
                "regarding.fieldPath",
                "reason",
                "reportingController",
                "type",
            ],
            _ => &[],
        }
    }

    /// Checks that a field selector names only selectable fields.
    pub(crate) fn check_field_selector(&self, selector: &bosun_core::FieldSelector) -> Result<()> {
        for req in selector.requirements() {
            let field = req.field.as_str();
            if field != "metadata.name" && field != "metadata.namespace" && !self.selectable_fields().contains(&field) {
                return Err(Error::bad_request(format!("field label not supported: {field}")));
            }
        }
        Ok(())
    }

    /// The value of a selectable field of an object.
    pub(crate) fn field_value<'a>(&self, obj: &'a DynamicObject, field: &str) -> Option<Cow<'a, str>> {
        match (self.rules, field) {
            (Rules::CoreEvent, "source") => obj.path_str("source.component"),
            (Rules::Pod, "spec.hostNetwork") => Some(obj.path_str(field).unwrap_or(Cow::Borrowed("false"))),
            (Rules::Node, "spec.unschedulable") => Some(obj.path_str(field).unwrap_or(Cow::Borrowed("false"))),
            (Rules::Job, "status.successful") | (Rules::ReplicaSet | Rules::ReplicationController, "status.replicas") => {
                Some(obj.path_str(field).unwrap_or(Cow::Borrowed("0")))
            }
            (_, "metadata.namespace") => Some(obj.path_str(field).unwrap_or(Cow::Borrowed(""))),
            _ => Some(obj.path_str(field).unwrap_or(Cow::Borrowed(""))),
        }
    }

    /// Prepares a new object: resets what a client may not set on create (status, for most kinds).
    pub(crate) fn prepare_create(&self, obj: &mut DynamicObject) {
        if self.has_status()
            && !self.rules.keeps_status_on_create()
            && let Some(map) = obj.data.as_object_mut()
        {
            map.remove("status");
        }
    }

    /// Prepares an update of the main resource: `.status` comes from the stored object.
    pub(crate) fn prepare_update(&self, obj: &mut DynamicObject, old: &DynamicObject) {
        if self.has_status() {
            copy_field(obj, old, "status");
        }
    }

    /// Prepares an update of the `status` subresource: everything but `.status` comes from the stored object.
    pub(crate) fn prepare_status_update(&self, obj: &mut DynamicObject, old: &DynamicObject) {
        // A patch of `status` leaves the rest as stored: then there is no data to copy back.
        let rest_same = obj.data.is_object() && old.data.is_object() && !super::write::spec_changed(&obj.data, &old.data);
        if !rest_same {
            let status = obj.data.get("status").cloned();
            let mut data = old.data.clone();
            if let Some(map) = data.as_object_mut() {
                match status {
                    Some(s) => {
                        map.insert("status".into(), s);
                    }
                    None => {
                        map.remove("status");
                    }
                }
            }
            obj.data = data;
        }
        // Metadata is the stored object's (the resourceVersion precondition stays the body's).
        if obj.metadata != old.metadata {
            let rv = obj.metadata.resource_version.take();
            obj.metadata = old.metadata.clone();
            obj.metadata.resource_version = rv;
        }
    }

    /// Fills in defaults (typed kinds go through their `k8s-openapi` type, which also prunes unknown fields).
    pub(crate) fn default(&self, obj: &mut DynamicObject, create: bool) -> Result<()> {
        match self.rules {
            Rules::Pod => typed(obj, |p: &mut Pod| {
                defaults::pod(p);
                if create {
                    let status = p.status.get_or_insert_with(Default::default);
                    status.phase.get_or_insert_with(|| "Pending".into());
                    if let Some(spec) = p.spec.as_ref() {
                        status.qos_class = Some(defaults::qos_class(spec).into());
                    }
                }
            }),
            Rules::Deployment => typed(obj, defaults::deployment),
            Rules::ReplicaSet => typed(obj, defaults::replica_set),
            Rules::ReplicationController => typed(obj, defaults::replication_controller),
            Rules::StatefulSet => typed(obj, defaults::stateful_set),
            Rules::DaemonSet => typed(obj, defaults::daemon_set),
            Rules::Job => typed(obj, |j: &mut Job| {
                defaults::job(j);
                if create {
                    defaults::job_selector(j);
                }
            }),
            Rules::CronJob => typed(obj, defaults::cron_job),
            Rules::Service => typed(obj, defaults::service),
            Rules::Namespace => typed(obj, |n: &mut Namespace| {
                defaults::namespace(n);
                if create {
                    n.status.get_or_insert_with(Default::default).phase = Some("Active".into());
                }
            }),
            Rules::Secret => typed(obj, defaults::secret),
            Rules::PersistentVolume => typed(obj, |p: &mut PersistentVolume| {
                defaults::persistent_volume(p);
                if create {
                    p.status.get_or_insert_with(Default::default).phase.get_or_insert_with(|| "Pending".into());
                }
            }),
            Rules::PersistentVolumeClaim => typed(obj, |p: &mut PersistentVolumeClaim| {
                defaults::persistent_volume_claim(p);
                if create {
                    p.status.get_or_insert_with(Default::default).phase.get_or_insert_with(|| "Pending".into());
                }
            }),
            Rules::HorizontalPodAutoscaler => typed(obj, defaults::horizontal_pod_autoscaler),
            Rules::EndpointSlice => typed(obj, defaults::endpoint_slice),
            Rules::PriorityClass => typed(obj, |p: &mut PriorityClass| {
                p.preemption_policy.get_or_insert_with(|| "PreemptLowerPriority".into());
            }),
            Rules::Custom => {
                if let Some(schema) = self.schema.as_ref() {
                    schema.prune(&mut obj.data);
                    schema.default(&mut obj.data);
                }
                Ok(())
            }
            // Other built-ins go through their type too: unknown fields are dropped, bad shapes refused.
            _ => {
                let types = obj.types.clone();
                if super::typed::round_trip_object(&self.resource, obj)? {
                    obj.types = types;
                }
                Ok(())
            }
        }
    }

    /// Defaults an object after a write to its `status` subresource. Everything but `status` is
    /// the stored object's, which was defaulted when it was written, and defaulting never reads
    /// or writes `status` after create: so only `status` goes through its type (unknown fields
    /// dropped, bad shapes refused), which is what the whole object's round trip would do to it.
    pub(crate) fn default_status_update(&self, obj: &mut DynamicObject) -> Result<()> {
        if matches!(self.rules, Rules::Custom) {
            return self.default(obj, false);
        }
        let Some(map) = obj.data.as_object_mut() else { return self.default(obj, false) };
        let Some(status) = map.get("status") else { return Ok(()) };
        if status.is_null() {
            map.remove("status");
            return Ok(());
        }
        match super::typed::round_trip_status(&self.resource, status)? {
            Some(typed) => {
                map.insert("status".into(), typed);
                Ok(())
            }
            None => self.default(obj, false),
        }
    }

    /// Validates an object about to be written; `old` is the stored object on update.
    pub(crate) fn validate(&self, obj: &DynamicObject, old: Option<&DynamicObject>, node_ports: (u16, u16)) -> Result<()> {
        let mut errs = Vec::new();
        validation::metadata(&obj.metadata, self.rules.name_rule(), &mut errs);
        if self.resource.namespaced && obj.metadata.namespace.as_deref().is_none_or(str::is_empty) {
            errs.push(FieldError::required("metadata.namespace"));
        }
        match self.rules {
            Rules::Pod => check(obj, old, &mut errs, |n: &Pod, o, e| validation::pod(n, o, e))?,
            Rules::Deployment => check(obj, old, &mut errs, |n: &Deployment, o, e| validation::deployment(n, o, e))?,
            Rules::ReplicaSet => check(obj, old, &mut errs, |n: &ReplicaSet, o, e| validation::replica_set(n, o, e))?,
            Rules::StatefulSet => check(obj, old, &mut errs, |n: &StatefulSet, o, e| validation::stateful_set(n, o, e))?,
            Rules::DaemonSet => check(obj, old, &mut errs, |n: &DaemonSet, o, e| validation::daemon_set(n, o, e))?,
            Rules::Job => check(obj, old, &mut errs, |n: &Job, o, e| validation::job(n, o, e))?,
            Rules::CronJob => check(obj, old, &mut errs, |n: &CronJob, _, e| validation::cron_job(n, e))?,
            Rules::Service => check(obj, old, &mut errs, |n: &Service, o, e| validation::service(n, o, node_ports, e))?,
            Rules::ConfigMap => check(obj, old, &mut errs, |n: &ConfigMap, o, e| validation::config_map(n, o, e))?,
            Rules::Secret => check(obj, old, &mut errs, |n: &Secret, o, e| validation::secret(n, o, e))?,
            Rules::HorizontalPodAutoscaler => {
                check(obj, old, &mut errs, |n: &HorizontalPodAutoscaler, _, e| validation::horizontal_pod_autoscaler(n, e))?
            }
            Rules::PodDisruptionBudget => {
                check(obj, old, &mut errs, |n: &PodDisruptionBudget, _, e| validation::pod_disruption_budget(n, e))?
            }
            Rules::PriorityClass => check(obj, old, &mut errs, |n: &PriorityClass, o, e| validation::priority_class(n, o, e))?,
            Rules::EndpointSlice => check(obj, old, &mut errs, |n: &EndpointSlice, _, e| {
                if !matches!(n.address_type.as_str(), "IPv4" | "IPv6" | "FQDN") {
                    e.push(FieldError::not_supported("addressType", &n.address_type, &["FQDN", "IPv4", "IPv6"]));
                }
            })?,
            Rules::CustomResourceDefinition => {
                super::crd::validate_definition(obj, &mut errs);
                if let Some(old) = old {
                    super::crd::validate_definition_update(obj, old, &mut errs);
                }
            }
            Rules::Custom => {
                if let Some(schema) = self.schema.as_ref() {
                    schema.validate(&obj.data, &mut errs);
                }
            }
            _ => {}
        }
        if let Some(old) = old {
            if self.rules == Rules::Namespace || !self.resource.namespaced {
                // nothing more: names never change (the key is the name)
            }
            let _ = old;
        }
        if errs.is_empty() { Ok(()) } else { Err(Error::invalid(&self.resource.group, &self.resource.kind, obj.name(), errs)) }
    }

    /// The JSON that `Strict` field validation compares a body against: the body through the typed kind.
    /// Returns the unknown fields' paths.
    pub(crate) fn unknown_fields(&self, body: &serde_json::Value) -> Result<Vec<String>> {
        let round = match self.rules {
            Rules::Custom => return Ok(self.schema.as_ref().map(|s| s.unknown_fields(body)).unwrap_or_default()),
            _ => match super::typed::round_trip(&self.resource, body)? {
                Some(v) => v,
                None => return Ok(Vec::new()),
            },
        };
        let mut out = Vec::new();
        diff_keys("", body, &round, &mut out);
        Ok(out)
    }
}

fn diff_keys(path: &str, body: &serde_json::Value, round: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (body, round) {
        (Value::Object(b), Value::Object(r)) => {
            for (k, v) in b {
                let at = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match r.get(k) {
                    Some(rv) => diff_keys(&at, v, rv, out),
                    None if v.is_null() => {}
                    None if path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind") => {}
                    None => {
                        // Empty objects and arrays may be dropped by the typed form without being unknown.
                        let empty = v.as_object().is_some_and(|m| m.is_empty()) || v.as_array().is_some_and(|a| a.is_empty());
                        if !empty {
                            out.push(at);
                        }
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(r)) => {
            for (i, (bv, rv)) in b.iter().zip(r.iter()).enumerate() {
                diff_keys(&format!("{path}[{i}]"), bv, rv, out);
            }
        }
        _ => {}
    }
}

fn copy_field(obj: &mut DynamicObject, old: &DynamicObject, field: &str) {
    let value = old.data.get(field).cloned();
    if !obj.data.is_object() {
        obj.data = serde_json::Value::Object(Default::default());
    }
    if let Some(map) = obj.data.as_object_mut() {
        match value {
            Some(v) => {
                map.insert(field.into(), v);
            }
            None => {
                map.remove(field);
            }
        }
    }
}

/// Runs `f` on the typed form of `obj` and stores the result back, keeping the type meta.
pub(crate) fn typed<K: Object + Serialize + DeserializeOwned>(obj: &mut DynamicObject, f: impl FnOnce(&mut K)) -> Result<()> {
    let types = obj.types.clone();
    let mut k: K = std::mem::take(obj).into_typed()?;
    f(&mut k);
    let mut back = DynamicObject::from_typed_owned(k)?;
    back.types = types;
    *obj = back;
    Ok(())
}

fn check<K: Object>(
    obj: &DynamicObject,
    old: Option<&DynamicObject>,
    errs: &mut Vec<FieldError>,
    f: impl FnOnce(&K, Option<&K>, &mut Vec<FieldError>),
) -> Result<()> {
    let k: K = obj.to_typed()?;
    let o: Option<K> = old.map(DynamicObject::to_typed).transpose()?;
    f(&k, o.as_ref(), errs);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_keys_are_found_at_any_depth() {
        let body = json!({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "c", "imagee": "x"}], "bogus": 1}});
        let round = json!({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "c"}]}});
        let mut out = Vec::new();
        diff_keys("", &body, &round, &mut out);
        out.sort();
        assert_eq!(out, vec!["spec.bogus".to_owned(), "spec.containers[0].imagee".to_owned()]);
    }
}
