//! `autoscaling/v1` HorizontalPodAutoscalers as a view of the stored `autoscaling/v2` objects,
//! converted both ways, for clients that still speak v1: `kubectl autoscale` up to 1.32 creates
//! its autoscaler through the v1 API. Served verbs: get, list, create, update, delete (no watch or
//! patch; v2 stays the preferred version that `kubectl get hpa` reads).
//!
//! The conversion follows Kubernetes' for the fields v1 has: `targetCPUUtilizationPercentage` is
//! the CPU `Utilization` resource metric, `currentCPUUtilizationPercentage` its current value.
//! Other v2 metrics and the conditions (which Kubernetes keeps in annotations) are left out of the
//! v1 form; an update through v1 keeps the stored v2 object's other metrics and its behaviour.

use super::ApiServer;
use bosun_core::{
    ApiResource, Client, DeleteParams, Deleted, DynamicObject, Error, ListParams, ObjectList, PostParams, Result, Target, TypeMeta,
};
use serde_json::{Value, json};

/// The `autoscaling/v1` resource as discovery lists it.
pub(crate) fn resource() -> ApiResource {
    let mut r = ApiResource::new("autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers", true);
    r.verbs = ["create", "delete", "get", "list", "update"].into_iter().map(Into::into).collect();
    r
}

/// Whether a request is for the v1 view.
pub(crate) fn is_v1(r: &ApiResource) -> bool {
    r.group == "autoscaling" && r.version == "v1" && r.plural == "horizontalpodautoscalers"
}

fn v2() -> Result<&'static ApiResource> {
    bosun_core::resource::builtin("autoscaling", "v2", "HorizontalPodAutoscaler")
        .ok_or_else(|| Error::internal("autoscaling/v2 horizontalpodautoscalers are not served"))
}

fn is_cpu_utilization(m: &Value) -> bool {
    m["type"] == "Resource" && m["resource"]["name"] == "cpu" && m["resource"]["target"]["type"] == "Utilization"
}

/// The v2 form of a v1 object; `stored` (the current v2 object, on update) lends the metrics v1
/// cannot express and the behaviour.
fn to_v2(v1: &DynamicObject, stored: Option<&DynamicObject>) -> DynamicObject {
    let spec = &v1.data["spec"];
    let mut metrics: Vec<Value> = stored
        .and_then(|s| s.data["spec"]["metrics"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|m| !is_cpu_utilization(m))
        .collect();
    if let Some(target) = spec.get("targetCPUUtilizationPercentage").filter(|v| !v.is_null()) {
        metrics.insert(
            0,
            json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}}}),
        );
    }
    let mut v2_spec = json!({"scaleTargetRef": spec["scaleTargetRef"], "maxReplicas": spec["maxReplicas"]});
    if let Some(min) = spec.get("minReplicas").filter(|v| !v.is_null()) {
        v2_spec["minReplicas"] = min.clone();
    }
    if !metrics.is_empty() {
        v2_spec["metrics"] = Value::Array(metrics);
    }
    if let Some(behavior) = stored.map(|s| &s.data["spec"]["behavior"]).filter(|b| !b.is_null()) {
        v2_spec["behavior"] = behavior.clone();
    }
    let mut data = json!({"spec": v2_spec});
    if let Some(status) = stored.map(|s| &s.data["status"]).filter(|s| !s.is_null()) {
        data["status"] = status.clone();
    }
    DynamicObject {
        types: Some(TypeMeta { api_version: "autoscaling/v2".into(), kind: "HorizontalPodAutoscaler".into() }),
        metadata: v1.metadata.clone(),
        data,
    }
}

/// The v1 form of a stored v2 object.
fn to_v1(v2: DynamicObject) -> DynamicObject {
    let spec = &v2.data["spec"];
    let metrics = spec["metrics"].as_array().cloned().unwrap_or_default();
    let mut v1_spec = json!({"scaleTargetRef": spec["scaleTargetRef"], "maxReplicas": spec["maxReplicas"]});
    if !spec["minReplicas"].is_null() {
        v1_spec["minReplicas"] = spec["minReplicas"].clone();
    }
    if let Some(m) = metrics.iter().find(|m| is_cpu_utilization(m)) {
        v1_spec["targetCPUUtilizationPercentage"] = m["resource"]["target"]["averageUtilization"].clone();
    }
    let status = &v2.data["status"];
    let mut v1_status = json!({
        "currentReplicas": status["currentReplicas"].as_i64().unwrap_or(0),
        "desiredReplicas": status["desiredReplicas"].as_i64().unwrap_or(0),
    });
    for field in ["observedGeneration", "lastScaleTime"] {
        if !status[field].is_null() {
            v1_status[field] = status[field].clone();
        }
    }
    let current =
        status["currentMetrics"].as_array().into_iter().flatten().find(|m| m["type"] == "Resource" && m["resource"]["name"] == "cpu");
    if let Some(u) = current.map(|m| &m["resource"]["current"]["averageUtilization"]).filter(|u| !u.is_null()) {
        v1_status["currentCPUUtilizationPercentage"] = u.clone();
    }
    DynamicObject {
        types: Some(TypeMeta { api_version: "autoscaling/v1".into(), kind: "HorizontalPodAutoscaler".into() }),
        metadata: v2.metadata,
        data: json!({"spec": v1_spec, "status": v1_status}),
    }
}

impl ApiServer {
    pub(crate) async fn hpa_v1_get(&self, target: Target<'_>, name: &str) -> Result<DynamicObject> {
        self.get(Target::new(v2()?, target.namespace), name).await.map(to_v1)
    }

    pub(crate) async fn hpa_v1_list(&self, target: Target<'_>, params: &ListParams) -> Result<ObjectList<DynamicObject>> {
        let list = self.list(Target::new(v2()?, target.namespace), params).await?;
        Ok(ObjectList {
            types: TypeMeta { api_version: "autoscaling/v1".into(), kind: "HorizontalPodAutoscalerList".into() },
            metadata: list.metadata,
            items: list.items.into_iter().map(to_v1).collect(),
        })
    }

    pub(crate) async fn hpa_v1_create(&self, target: Target<'_>, obj: &DynamicObject, params: &PostParams) -> Result<DynamicObject> {
        self.create(Target::new(v2()?, target.namespace), &to_v2(obj, None), params).await.map(to_v1)
    }

    pub(crate) async fn hpa_v1_update(&self, target: Target<'_>, obj: &DynamicObject, params: &PostParams) -> Result<DynamicObject> {
        let v2 = v2()?;
        let ns = target.namespace.or(obj.metadata.namespace.as_deref());
        let name = obj.metadata.name.as_deref().ok_or_else(|| Error::bad_request("metadata.name is required for update"))?;
        let stored = self.get(Target::new(v2, ns), name).await?;
        self.update(Target::new(v2, ns), &to_v2(obj, Some(&stored)), params).await.map(to_v1)
    }

    pub(crate) async fn hpa_v1_delete(&self, target: Target<'_>, name: &str, params: &DeleteParams) -> Result<Deleted<DynamicObject>> {
        Ok(match self.delete(Target::new(v2()?, target.namespace), name, params).await? {
            Deleted::Now(o) => Deleted::Now(to_v1(o)),
            Deleted::Pending(o) => Deleted::Pending(to_v1(o)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percent_converts_both_ways_and_an_update_keeps_other_metrics() {
        let v1 = DynamicObject::from_value(json!({
            "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 5, "targetCPUUtilizationPercentage": 50},
        }))
        .unwrap_or_else(|_| DynamicObject::new(&resource(), "x"));
        let v2 = to_v2(&v1, None);
        assert_eq!(v2.data["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 50);
        assert_eq!(v2.data["spec"]["maxReplicas"], 5);
        let mut stored = v2.clone();
        stored.data["spec"]["metrics"].as_array_mut().into_iter().for_each(|m| {
            m.push(json!({"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "1Gi"}}}));
        });
        stored.data["status"] = json!({"desiredReplicas": 3, "currentReplicas": 2, "currentMetrics": [
            {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 70, "averageValue": "70m"}}}]});
        let back = to_v1(stored.clone());
        assert_eq!(back.data["spec"]["targetCPUUtilizationPercentage"], 50);
        assert_eq!(back.data["status"]["currentCPUUtilizationPercentage"], 70);
        assert_eq!(back.data["status"]["desiredReplicas"], 3);
        let updated = to_v2(&back, Some(&stored));
        assert_eq!(updated.data["spec"]["metrics"].as_array().map(Vec::len), Some(2));
        assert_eq!(updated.data["status"]["desiredReplicas"], 3);
    }
}
