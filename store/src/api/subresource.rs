//! Subresources: `status`, `scale` (as `autoscaling/v1` Scale), `pods/binding`, `pods/eviction`,
//! `pods/ephemeralcontainers` and `namespaces/finalize`.

use super::ApiServer;
use super::strategy::{Kind, Rules};
use super::write::Change;
use bosun_core::{DeleteParams, DynamicObject, Error, FieldError, LabelSelector, Patch, PostParams, Result, TypeMeta};
use serde_json::{Value, json};
use std::sync::Arc;

fn get_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut at = v;
    for p in path.split('.') {
        at = at.get(p)?;
    }
    Some(at)
}

fn set_path(v: &mut Value, path: &str, value: Value) {
    let mut at = v;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, p) in parts.iter().enumerate() {
        if !at.is_object() {
            *at = Value::Object(Default::default());
        }
        let Some(map) = at.as_object_mut() else { return };
        if i + 1 == parts.len() {
            map.insert((*p).to_owned(), value);
            return;
        }
        at = map.entry((*p).to_owned()).or_insert_with(|| Value::Object(Default::default()));
    }
}

/// The paths of a kind's scale: spec replicas, status replicas, label selector (`None`: none).
fn scale_paths(kind: &Kind) -> (String, String, Option<String>) {
    if let Some((s, r, l)) = kind.custom_scale.clone() {
        return (s, r, l);
    }
    ("spec.replicas".into(), "status.replicas".into(), Some("spec.selector".into()))
}

/// A label selector (API form or a plain map) in its string form.
fn selector_string(v: &Value) -> String {
    if let Some(s) = v.as_str() {
        return s.to_owned();
    }
    if v.get("matchLabels").is_some() || v.get("matchExpressions").is_some() {
        if let Ok(sel) = serde_json::from_value::<bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>(v.clone())
            && let Ok(parsed) = LabelSelector::from_api(&sel)
        {
            return parsed.to_string();
        }
        return String::new();
    }
    let mut parts: Vec<String> = v.as_object().into_iter().flatten().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect();
    parts.sort();
    parts.join(",")
}

impl ApiServer {
    /// The `autoscaling/v1` Scale of an object.
    pub(crate) fn to_scale(&self, kind: &Kind, obj: &DynamicObject) -> DynamicObject {
        let (spec_path, status_path, selector_path) = scale_paths(kind);
        let data = &obj.data;
        let replicas = get_path(data, &spec_path).and_then(Value::as_i64).unwrap_or(if kind.rules == Rules::Custom { 0 } else { 1 });
        let status_replicas = get_path(data, &status_path).and_then(Value::as_i64).unwrap_or(0);
        let mut status = json!({"replicas": status_replicas});
        if let Some(sel) = selector_path.as_deref().and_then(|p| get_path(data, p)) {
            status["selector"] = json!(selector_string(sel));
        }
        let mut meta = bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: obj.metadata.name.clone(),
            namespace: obj.metadata.namespace.clone(),
            uid: obj.metadata.uid.clone(),
            resource_version: obj.metadata.resource_version.clone(),
            creation_timestamp: obj.metadata.creation_timestamp.clone(),
            ..Default::default()
        };
        meta.labels = None;
        DynamicObject {
            types: Some(TypeMeta { api_version: "autoscaling/v1".into(), kind: "Scale".into() }),
            metadata: meta,
            data: json!({"spec": {"replicas": replicas}, "status": status}),
        }
    }

    fn check_subresource(kind: &Kind, sub: &str) -> Result<()> {
        if kind.resource.has_subresource(sub) {
            Ok(())
        } else {
            Err(Error::not_found(&kind.resource.group, &format!("{}/{sub}", kind.resource.plural), "")
                .with_text(format!("the server could not find the requested resource ({}/{sub})", kind.resource.plural)))
        }
    }

    /// Reads `status` (the whole object) or `scale`.
    pub(crate) async fn get_sub(&self, kind: &Arc<Kind>, ns: Option<&str>, name: &str, sub: &str) -> Result<DynamicObject> {
        Self::check_subresource(kind, sub)?;
        let (obj, _) = self.get_object(kind, ns, name).await?;
        match sub {
            "status" => Ok(obj),
            "ephemeralcontainers" if kind.rules == Rules::Pod => Ok(obj),
            "scale" => Ok(self.to_scale(kind, &obj)),
            other => Err(Error::method_not_allowed(format!("{other} does not support get"))),
        }
    }

    fn scale_replicas(scale: &DynamicObject, name: &str) -> Result<i64> {
        let replicas = scale.data.get("spec").and_then(|s| s.get("replicas"));
        let n = match replicas {
            None | Some(Value::Null) => 0,
            Some(v) => v.as_i64().ok_or_else(|| Error::bad_request("spec.replicas must be an integer"))?,
        };
        if n < 0 {
            return Err(Error::invalid(
                "autoscaling",
                "Scale",
                name,
                vec![FieldError::invalid("spec.replicas", n, "must be greater than or equal to 0")],
            ));
        }
        Ok(n)
    }

    fn with_replicas(kind: &Kind, current: &DynamicObject, replicas: i64, rv: Option<String>) -> DynamicObject {
        let (spec_path, _, _) = scale_paths(kind);
        let mut obj = current.clone();
        set_path(&mut obj.data, &spec_path, json!(replicas));
        obj.metadata.resource_version = rv;
        obj
    }

    /// Replaces `status` or `scale` (or `finalize` for namespaces).
    pub(crate) async fn update_sub(
        &self,
        kind: &Arc<Kind>,
        ns: Option<&str>,
        name: &str,
        sub: &str,
        body: &DynamicObject,
        params: &PostParams,
    ) -> Result<DynamicObject> {
        Self::check_subresource(kind, sub)?;
        // A subresource written whole names the object of its URL (kube-apiserver's name check).
        if let Some(n) = body.metadata.name.as_deref().filter(|n| !n.is_empty() && *n != name) {
            return Err(Error::bad_request(format!("the name of the object ({n}) does not match the name on the URL ({name})")));
        }
        // Unnamed writers are recorded only where fields are tracked (see `patch_object`).
        let change = Change {
            subresource: Some(sub),
            dry_run: params.dry_run,
            validation: params.field_validation,
            manager: params.field_manager.as_deref(),
            applied: false,
            patched: false,
        };
        match sub {
            "status" => self.update_object(kind, ns, name, change, &|_| Ok(body.clone())).await,
            "ephemeralcontainers" if kind.rules == Rules::Pod => {
                self.update_object(kind, ns, name, change, &|cur| with_ephemeral_containers(cur, body, name)).await
            }
            "scale" => {
                check_scale_types(body)?;
                let replicas = Self::scale_replicas(body, name)?;
                let rv = body.metadata.resource_version.clone().filter(|r| !r.is_empty());
                let change = Change { validation: None, ..change };
                let obj =
                    self.update_object(kind, ns, name, change, &|cur| Ok(Self::with_replicas(kind, cur, replicas, rv.clone()))).await?;
                Ok(self.to_scale(kind, &obj))
            }
            "finalize" if kind.rules == Rules::Namespace => {
                let finalizers = body.data.get("spec").and_then(|s| s.get("finalizers")).cloned().unwrap_or(json!([]));
                self.update_object(kind, ns, name, change, &|cur| {
                    let mut obj = cur.clone();
                    set_path(&mut obj.data, "spec.finalizers", finalizers.clone());
                    Ok(obj)
                })
                .await
            }
            other => Err(Error::method_not_allowed(format!("{other} does not support update"))),
        }
    }

    /// Patches `status` or `scale`.
    pub(crate) async fn patch_sub(
        &self,
        kind: &Arc<Kind>,
        ns: Option<&str>,
        name: &str,
        sub: &str,
        patch: &Patch,
        params: &bosun_core::PatchParams,
    ) -> Result<DynamicObject> {
        Self::check_subresource(kind, sub)?;
        let applied = matches!(patch, Patch::Apply(_));
        let change = Change {
            subresource: Some(sub),
            dry_run: params.dry_run,
            validation: params.field_validation,
            manager: params.field_manager.as_deref(),
            applied,
            patched: true,
        };
        match sub {
            "status" => self.patch_object(kind, ns, name, Some("status"), patch, params, None).await,
            "ephemeralcontainers" if kind.rules == Rules::Pod => {
                let shape = |cur: &DynamicObject, patched: &DynamicObject| with_ephemeral_containers(cur, patched, name);
                self.patch_object(kind, ns, name, Some(sub), patch, params, Some(&shape)).await
            }
            "scale" => {
                let mut ctx = crate::patch::ApplyContext::from_params(params);
                ctx.subresource = Some("scale".into());
                let scale_kind = Kind::builtin(bosun_core::ApiResource::new("autoscaling", "v1", "Scale", "scales", true));
                let obj = self
                    .update_object(kind, ns, name, Change { validation: None, ..change }, &|cur| {
                        let scale = self.to_scale(kind, cur);
                        let patched = self.apply_patch(&scale_kind, &scale, patch, &ctx)?;
                        let replicas = Self::scale_replicas(&patched, name)
                            .map_err(|e| super::write::patched_invalid(e, &scale_kind.resource, name))?;
                        let rv = patched.metadata.resource_version.clone().filter(|r| Some(r) != scale.metadata.resource_version.as_ref());
                        Ok(Self::with_replicas(kind, cur, replicas, rv.or_else(|| cur.metadata.resource_version.clone())))
                    })
                    .await?;
                Ok(self.to_scale(kind, &obj))
            }
            other => Err(Error::method_not_allowed(format!("{other} does not support patch"))),
        }
    }

    /// `pods/binding`: assigns a pod to a node.
    pub(crate) async fn bind(&self, kind: &Arc<Kind>, ns: Option<&str>, name: &str, body: &Value, params: &PostParams) -> Result<Value> {
        typed_body::<bosun_core::k8s_openapi::api::core::v1::Binding>(body, &["v1"], "Binding")?;
        let node = body
            .get("target")
            .and_then(|t| t.get("name"))
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Error::invalid("", "Binding", name, vec![FieldError::required("target.name")]))?
            .to_owned();
        let target_kind = body.get("target").and_then(|t| t.get("kind")).and_then(Value::as_str).unwrap_or("Node");
        if target_kind != "Node" {
            return Err(Error::invalid("", "Binding", name, vec![FieldError::not_supported("target.kind", target_kind, &["Node"])]));
        }
        let annotations = body.get("metadata").and_then(|m| m.get("annotations")).and_then(Value::as_object).cloned();
        let uid = body.get("metadata").and_then(|m| m.get("uid")).and_then(Value::as_str).map(str::to_owned);
        let at = self.now_text();
        let change = Change {
            subresource: Some("binding"),
            dry_run: params.dry_run,
            validation: None,
            manager: None,
            applied: false,
            patched: false,
        };
        self.update_object(kind, ns, name, change, &|cur| {
            if let Some(uid) = uid.as_deref()
                && cur.metadata.uid.as_deref() != Some(uid)
            {
                return Err(Error::conflict(format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    cur.metadata.uid.as_deref().unwrap_or("")
                )));
            }
            if cur.metadata.deletion_timestamp.is_some() {
                return Err(Error::conflict(format!("pod {name} is being deleted, cannot be assigned to a host")));
            }
            if let Some(existing) = cur.path_str("spec.nodeName").filter(|n| !n.is_empty()) {
                return Err(Error::conflict(format!("pod {name} is already assigned to node \"{existing}\"")));
            }
            let mut obj = cur.clone();
            obj.metadata.resource_version = None;
            set_path(&mut obj.data, "spec.nodeName", json!(node));
            if let Some(a) = annotations.as_ref() {
                let map = obj.metadata.annotations.get_or_insert_with(Default::default);
                for (k, v) in a {
                    map.insert(k.clone(), v.as_str().unwrap_or("").to_owned());
                }
            }
            let status = obj.data.as_object_mut().map(|m| m.entry("status").or_insert_with(|| json!({})));
            if let Some(status) = status.and_then(Value::as_object_mut) {
                let conditions = status.entry("conditions").or_insert_with(|| json!([]));
                if let Some(list) = conditions.as_array_mut() {
                    list.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
                    list.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": at}));
                }
            }
            Ok(obj)
        })
        .await?;
        Ok(success(201))
    }

    /// `pods/eviction`: deletes a pod unless a disruption budget forbids it (429).
    pub(crate) async fn evict(&self, kind: &Arc<Kind>, ns: Option<&str>, name: &str, body: &Value, params: &PostParams) -> Result<Value> {
        let eviction =
            typed_body::<bosun_core::k8s_openapi::api::policy::v1::Eviction>(body, &["policy/v1", "policy/v1beta1"], "Eviction")?;
        let delete = eviction_delete_params(eviction.delete_options, params.dry_run, name)?;
        let (pod, _) = self.get_object(kind, ns, name).await?;
        let phase = pod.path_str("status.phase").map(|p| p.into_owned()).unwrap_or_default();
        let terminal = matches!(phase.as_str(), "Succeeded" | "Failed");
        if !terminal && pod.metadata.deletion_timestamp.is_none() {
            self.take_disruption(ns, &pod, params.dry_run).await?;
        }
        self.delete_object(kind, ns, name, &delete).await?;
        Ok(success(201))
    }

    /// Consumes one allowed disruption of the budget covering a pod, or refuses with 429.
    async fn take_disruption(&self, ns: Option<&str>, pod: &DynamicObject, dry_run: bool) -> Result<()> {
        let Some(res) = bosun_core::resource::builtin("policy", "v1", "PodDisruptionBudget") else { return Ok(()) };
        let pdb_kind = self.registry.resolve(res)?;
        let list = self.list_objects(&pdb_kind, ns, &Default::default()).await?;
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let matching: Vec<&DynamicObject> = list
            .items
            .iter()
            .filter(|p| {
                let sel = p.data.get("spec").and_then(|s| s.get("selector")).cloned();
                let Some(sel) = sel.and_then(|s| serde_json::from_value(s).ok()) else { return false };
                // policy/v1: an empty selector covers every pod of the namespace.
                LabelSelector::from_api(&sel).is_ok_and(|s| s.matches(&labels))
            })
            .collect();
        match matching.as_slice() {
            [] => Ok(()),
            [pdb] => {
                let allowed = pdb.data.get("status").and_then(|s| s.get("disruptionsAllowed")).and_then(Value::as_i64).unwrap_or(0);
                let pdb_name = pdb.metadata.name.clone().unwrap_or_default();
                if allowed <= 0 {
                    let mut err = Error::too_many_requests("Cannot evict pod as it would violate the pod's disruption budget.");
                    if let Error::TooManyRequests(body) = &mut err {
                        body.details = Some(bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::StatusDetails {
                            causes: Some(vec![bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::StatusCause {
                                reason: Some("DisruptionBudget".into()),
                                message: Some(format!(
                                    "The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
                                    pdb.path_str("status.desiredHealthy").unwrap_or_default(),
                                    pdb.path_str("status.currentHealthy").unwrap_or_default()
                                )),
                                field: None,
                            }]),
                            ..Default::default()
                        });
                    }
                    return Err(err);
                }
                if dry_run {
                    return Ok(());
                }
                let rv = pdb.metadata.resource_version.clone();
                let pod_name = pod.metadata.name.clone().unwrap_or_default();
                let at = self.now_text();
                let change =
                    Change { subresource: Some("status"), dry_run, validation: None, manager: None, applied: false, patched: false };
                self.update_object(&pdb_kind, ns, &pdb_name, change, &|cur| {
                    let mut obj = cur.clone();
                    obj.metadata.resource_version = rv.clone();
                    set_path(&mut obj.data, "status.disruptionsAllowed", json!(allowed - 1));
                    let disrupted = obj.data.get("status").and_then(|s| s.get("disruptedPods")).cloned().unwrap_or(json!({}));
                    let mut disrupted = disrupted;
                    if let Some(m) = disrupted.as_object_mut() {
                        m.insert(pod_name.clone(), json!(at));
                    }
                    set_path(&mut obj.data, "status.disruptedPods", disrupted);
                    Ok(obj)
                })
                .await
                .map_err(|e| if e.is_conflict() { Error::too_many_requests("the disruption budget changed; try again") } else { e })?;
                Ok(())
            }
            _ => Err(Error::internal("This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.")),
        }
    }
}

/// A success `Status` as JSON.
fn success(code: i32) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code})
}

trait WithText {
    fn with_text(self, message: String) -> Self;
}

impl WithText for Error {
    fn with_text(self, message: String) -> Self {
        let details = self.body().and_then(|b| b.details.clone());
        Error::NotFound(Box::new(bosun_core::ErrorBody { message, details }))
    }
}

/// The body of a create on a subresource decoded as the kind it takes: a JSON object whose
/// `apiVersion` and `kind`, when set, name that kind, and whose members have their types. 400
/// otherwise, as kube-apiserver's decoding answers (instead of acting on a misread body).
fn typed_body<T: serde::de::DeserializeOwned>(body: &Value, api_versions: &[&str], kind: &str) -> Result<T> {
    let Some(map) = body.as_object() else {
        return Err(Error::bad_request(format!("the body of a {kind} must be a JSON object")));
    };
    let field =
        |f: &str| map.get(f).map(|v| v.as_str().ok_or_else(|| Error::bad_request(format!("{kind}: {f} must be a string")))).transpose();
    if let Some(k) = field("kind")?.filter(|k| !k.is_empty() && *k != kind) {
        return Err(Error::bad_request(format!("the kind in the body ({k}) does not match the kind of the request ({kind})")));
    }
    if let Some(v) = field("apiVersion")?.filter(|v| !v.is_empty() && !api_versions.contains(v)) {
        return Err(Error::bad_request(format!(
            "the API version in the data ({v}) does not match the expected API version ({})",
            api_versions[0]
        )));
    }
    let mut rest = map.clone();
    rest.remove("kind");
    rest.remove("apiVersion");
    serde_json::from_value(Value::Object(rest)).map_err(|e| Error::bad_request(format!("decode {kind}: {e}")))
}

/// An eviction's `deleteOptions` as delete parameters; values kube-apiserver's
/// ValidateDeleteOptions refuses are 422.
fn eviction_delete_params(
    options: Option<bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions>,
    dry_run: bool,
    name: &str,
) -> Result<DeleteParams> {
    let mut delete = DeleteParams { dry_run, ..DeleteParams::default() };
    let Some(opts) = options else { return Ok(delete) };
    let mut errors = Vec::new();
    delete.grace_period_seconds = opts.grace_period_seconds.map(|g| u32::try_from(g.max(0)).unwrap_or(u32::MAX));
    delete.preconditions = opts.preconditions.map(|p| bosun_core::Preconditions { uid: p.uid, resource_version: p.resource_version });
    match opts.dry_run.as_deref().unwrap_or_default() {
        [] => {}
        [all] if all == "All" => delete.dry_run = true,
        other => errors.push(FieldError::not_supported("deleteOptions.dryRun", other.join(","), &["All"])),
    }
    delete.propagation_policy = match (opts.propagation_policy.as_deref(), opts.orphan_dependents) {
        (Some(_), Some(_)) => {
            errors.push(FieldError::invalid(
                "deleteOptions.propagationPolicy",
                opts.propagation_policy.as_deref().unwrap_or_default(),
                "orphanDependents and deletionPropagation cannot be both set",
            ));
            None
        }
        (Some(p), None) => match serde_json::from_value(json!(p)) {
            Ok(policy) => Some(policy),
            Err(_) => {
                errors.push(FieldError::not_supported("deleteOptions.propagationPolicy", p, &["Background", "Foreground", "Orphan"]));
                None
            }
        },
        (None, Some(true)) => Some(bosun_core::PropagationPolicy::Orphan),
        (None, Some(false)) => Some(bosun_core::PropagationPolicy::Background),
        (None, None) => None,
    };
    if errors.is_empty() { Ok(delete) } else { Err(Error::invalid("policy", "Eviction", name, errors)) }
}

/// A `Scale` written whole must say it is one (`autoscaling/v1`) when it names its type: 400
/// otherwise, as kube-apiserver's decoding answers.
fn check_scale_types(body: &DynamicObject) -> Result<()> {
    let Some(t) = body.types.as_ref() else { return Ok(()) };
    if !t.kind.is_empty() && t.kind != "Scale" {
        return Err(Error::bad_request(format!("the kind in the body ({}) does not match the kind of the request (Scale)", t.kind)));
    }
    if !t.api_version.is_empty() && t.api_version != "autoscaling/v1" {
        return Err(Error::bad_request(format!(
            "the API version in the data ({}) does not match the expected API version (autoscaling/v1)",
            t.api_version
        )));
    }
    Ok(())
}

/// What a write to `pods/ephemeralcontainers` makes of the stored pod: the pod as it is, with the
/// written pod's `spec.ephemeralContainers` (and its resourceVersion precondition and
/// managedFields); anything else the writer changed is ignored, as kube-apiserver's
/// EphemeralContainers strategy does. The change is validated the way kube's
/// `ValidatePodEphemeralContainersUpdate` does (422 otherwise).
fn with_ephemeral_containers(current: &DynamicObject, written: &DynamicObject, name: &str) -> Result<DynamicObject> {
    let ephemeral = written.data.get("spec").and_then(|s| s.get("ephemeralContainers")).cloned().unwrap_or(Value::Null);
    // A stale resourceVersion precondition conflicts before anything is validated.
    let rv = written.metadata.resource_version.clone().filter(|r| !r.is_empty());
    if rv.is_some() && rv != current.metadata.resource_version {
        return Err(Error::stale("", "pods", name));
    }
    let errs = ephemeral_errors(current, &ephemeral);
    if !errs.is_empty() {
        return Err(Error::invalid("", "Pod", name, errs));
    }
    let mut obj = current.clone();
    obj.metadata.resource_version = rv;
    obj.metadata.managed_fields = written.metadata.managed_fields.clone();
    match ephemeral {
        Value::Null => {
            if let Some(spec) = obj.data.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("ephemeralContainers");
            }
        }
        list => set_path(&mut obj.data, "spec.ephemeralContainers", list),
    }
    Ok(obj)
}

/// The fields an ephemeral container may not set (kube: "cannot be set for an Ephemeral Container").
const EPHEMERAL_FORBIDDEN: [&str; 8] =
    ["ports", "livenessProbe", "readinessProbe", "startupProbe", "lifecycle", "resources", "resizePolicy", "restartPolicy"];

/// The validation errors of a new `spec.ephemeralContainers` (JSON) against the stored pod's.
fn ephemeral_errors(current: &DynamicObject, new: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let field = "spec.ephemeralContainers";
    let new_list: &[Value] = match new {
        Value::Null => &[],
        Value::Array(list) => list,
        other => {
            errs.push(FieldError::invalid(field, other.to_string(), "must be a list of ephemeral containers"));
            return errs;
        }
    };
    let spec = current.data.get("spec");
    let names_of = |list: &str| -> Vec<String> {
        spec.and_then(|s| s.get(list))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
            .collect()
    };
    let mut seen: std::collections::HashSet<String> = names_of("containers").into_iter().chain(names_of("initContainers")).collect();
    let old_list: &[Value] = spec.and_then(|s| s.get("ephemeralContainers")).and_then(Value::as_array).map_or(&[], Vec::as_slice);
    let name_of = |c: &Value| c.get("name").and_then(Value::as_str).unwrap_or("").to_owned();
    for (i, c) in new_list.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let Some(map) = c.as_object() else {
            errs.push(FieldError::invalid(&at, c.to_string(), "must be an ephemeral container"));
            continue;
        };
        let n = name_of(c);
        if n.is_empty() {
            errs.push(FieldError::required(format!("{at}.name")));
        } else {
            super::validation::name(super::validation::NameRule::Label, &format!("{at}.name"), &n, &mut errs);
            if !seen.insert(n.clone()) {
                errs.push(FieldError::duplicate(format!("{at}.name"), n.as_str()));
            }
        }
        if map.get("image").and_then(Value::as_str).is_none_or(str::is_empty) {
            errs.push(FieldError::required(format!("{at}.image")));
        }
        for f in EPHEMERAL_FORBIDDEN {
            // Unset is `null`, an empty object or an empty list (kubectl sends `resources: {}`).
            let set = map.get(f).is_some_and(|v| match v {
                Value::Null => false,
                Value::Object(m) => !m.is_empty(),
                Value::Array(a) => !a.is_empty(),
                Value::String(s) => !s.is_empty(),
                _ => true,
            });
            if set {
                errs.push(FieldError::forbidden(format!("{at}.{f}"), "cannot be set for an Ephemeral Container"));
            }
        }
        if let Err(e) = serde_json::from_value::<bosun_core::k8s_openapi::api::core::v1::EphemeralContainer>(c.clone()) {
            errs.push(FieldError::invalid(&at, "", e.to_string()));
        }
    }
    // Existing ephemeral containers may be neither removed nor changed.
    for old in old_list {
        let n = name_of(old);
        match new_list.iter().position(|c| name_of(c) == n) {
            None => errs.push(FieldError::forbidden(field, format!("existing ephemeral containers {n:?} may not be removed"))),
            Some(i) if new_list[i] != *old => {
                errs.push(FieldError::forbidden(
                    format!("{field}[{i}]"),
                    format!("existing ephemeral containers {n:?} may not be changed"),
                ));
            }
            Some(_) => {}
        }
    }
    errs
}
