//! OpenAPI documents generated from the typed model (`k8s-openapi`'s `schemars` impls): the v3 root
//! and per group-version documents that `kubectl apply` and `kubectl explain` read, and a v2 JSON
//! document. Every PATCH, POST and PUT declares `fieldValidation`, so that kubectl asks the server
//! to validate with `Strict`.

use super::catalog::ResourceCatalog;
use crate::patch::Node;
use crate::patch::schema::ListType;
use bosun_core::ApiResource;
use k8s_openapi::api::{apps, autoscaling, batch, coordination, core, discovery, events, networking, policy, rbac, scheduling, storage};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

type SchemaFn = fn(&mut SchemaGenerator) -> (String, Schema);

fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> (String, Schema) {
    (T::schema_name().into_owned(), generator.subschema_for::<T>())
}

/// The typed schema of a built-in group/version/kind.
fn typed_schema(group: &str, version: &str, kind: &str) -> Option<SchemaFn> {
    let f: SchemaFn = match (group, version, kind) {
        ("", "v1", "Namespace") => schema_of::<core::v1::Namespace>,
        ("", "v1", "Node") => schema_of::<core::v1::Node>,
        ("", "v1", "Pod") => schema_of::<core::v1::Pod>,
        ("", "v1", "Service") => schema_of::<core::v1::Service>,
        ("", "v1", "Endpoints") => schema_of::<core::v1::Endpoints>,
        ("", "v1", "ConfigMap") => schema_of::<core::v1::ConfigMap>,
        ("", "v1", "Secret") => schema_of::<core::v1::Secret>,
        ("", "v1", "ServiceAccount") => schema_of::<core::v1::ServiceAccount>,
        ("", "v1", "Event") => schema_of::<core::v1::Event>,
        ("", "v1", "PersistentVolume") => schema_of::<core::v1::PersistentVolume>,
        ("", "v1", "PersistentVolumeClaim") => schema_of::<core::v1::PersistentVolumeClaim>,
        ("", "v1", "ReplicationController") => schema_of::<core::v1::ReplicationController>,
        ("", "v1", "Binding") => schema_of::<core::v1::Binding>,
        ("apps", "v1", "Deployment") => schema_of::<apps::v1::Deployment>,
        ("apps", "v1", "ReplicaSet") => schema_of::<apps::v1::ReplicaSet>,
        ("apps", "v1", "StatefulSet") => schema_of::<apps::v1::StatefulSet>,
        ("apps", "v1", "DaemonSet") => schema_of::<apps::v1::DaemonSet>,
        ("apps", "v1", "ControllerRevision") => schema_of::<apps::v1::ControllerRevision>,
        ("batch", "v1", "Job") => schema_of::<batch::v1::Job>,
        ("batch", "v1", "CronJob") => schema_of::<batch::v1::CronJob>,
        ("autoscaling", "v2", "HorizontalPodAutoscaler") => schema_of::<autoscaling::v2::HorizontalPodAutoscaler>,
        ("autoscaling", "v1", "Scale") => schema_of::<autoscaling::v1::Scale>,
        ("policy", "v1", "PodDisruptionBudget") => schema_of::<policy::v1::PodDisruptionBudget>,
        ("policy", "v1", "Eviction") => schema_of::<policy::v1::Eviction>,
        ("networking.k8s.io", "v1", "Ingress") => schema_of::<networking::v1::Ingress>,
        ("networking.k8s.io", "v1", "IngressClass") => schema_of::<networking::v1::IngressClass>,
        ("discovery.k8s.io", "v1", "EndpointSlice") => schema_of::<discovery::v1::EndpointSlice>,
        ("events.k8s.io", "v1", "Event") => schema_of::<events::v1::Event>,
        ("coordination.k8s.io", "v1", "Lease") => schema_of::<coordination::v1::Lease>,
        ("scheduling.k8s.io", "v1", "PriorityClass") => schema_of::<scheduling::v1::PriorityClass>,
        ("storage.k8s.io", "v1", "StorageClass") => schema_of::<storage::v1::StorageClass>,
        ("apiextensions.k8s.io", "v1", "CustomResourceDefinition") => schema_of::<apiextensions::v1::CustomResourceDefinition>,
        ("rbac.authorization.k8s.io", "v1", "Role") => schema_of::<rbac::v1::Role>,
        ("rbac.authorization.k8s.io", "v1", "ClusterRole") => schema_of::<rbac::v1::ClusterRole>,
        ("rbac.authorization.k8s.io", "v1", "RoleBinding") => schema_of::<rbac::v1::RoleBinding>,
        ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding") => schema_of::<rbac::v1::ClusterRoleBinding>,
        _ => return None,
    };
    Some(f)
}

/// Whether the server knows a typed schema (and so strategic merge patch) for this kind.
pub(crate) fn is_typed(resource: &ApiResource) -> bool {
    typed_schema(&resource.group, &resource.version, &resource.kind).is_some()
}

/// The component name of a kind without a typed schema, as kube-apiserver names CRD schemas.
fn custom_schema_name(resource: &ApiResource) -> String {
    let reversed: Vec<&str> = resource.group.split('.').rev().collect();
    format!("{}.{}.{}", reversed.join("."), resource.version, resource.kind)
}

/// One generated group-version document, with what validation needs from it.
#[derive(Debug)]
pub(crate) struct GroupVersionDoc {
    /// The whole OpenAPI v3 document as JSON bytes.
    pub bytes: bytes::Bytes,
    /// A hash of `bytes` for the root's `serverRelativeURL`.
    pub hash: String,
    /// `components.schemas`.
    pub schemas: Arc<Map<String, Value>>,
    /// Kind → its schema's component name.
    pub roots: HashMap<String, String>,
}

/// Generates and caches documents; regenerated when the served resources change.
/// Documents by (group, version), with the fingerprint of the resources they were made from.
type DocCache = HashMap<(String, String), (u64, Arc<GroupVersionDoc>)>;

#[derive(Default)]
pub(crate) struct OpenApi {
    cache: Mutex<DocCache>,
    v2: Mutex<Option<(u64, bytes::Bytes)>>,
}

fn fingerprint<'a>(resources: impl Iterator<Item = &'a ApiResource>) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for r in resources {
        r.hash(&mut h);
    }
    h.finish()
}

fn param(name: &str, location: &str, description: &str, required: bool, ty: &str) -> Value {
    json!({"name": name, "in": location, "description": description, "required": required, "schema": {"type": ty, "uniqueItems": true}})
}

fn write_params(patch: bool) -> Vec<Value> {
    let mut params = vec![
        param(
            "dryRun",
            "query",
            "When present, indicates that modifications should not be persisted. Valid values are: - All: all dry run stages will be processed",
            false,
            "string",
        ),
        param(
            "fieldManager",
            "query",
            "fieldManager is a name associated with the actor or entity that is making these changes.",
            false,
            "string",
        ),
        param(
            "fieldValidation",
            "query",
            "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore - Warn (the default) - Strict",
            false,
            "string",
        ),
    ];
    if patch {
        params.push(param(
            "force",
            "query",
            "Force is going to \"force\" Apply requests. It must be unset for non-apply patch requests.",
            false,
            "boolean",
        ));
    }
    params
}

fn list_params() -> Vec<Value> {
    [
        ("allowWatchBookmarks", "boolean"),
        ("continue", "string"),
        ("fieldSelector", "string"),
        ("labelSelector", "string"),
        ("limit", "integer"),
        ("resourceVersion", "string"),
        ("resourceVersionMatch", "string"),
        ("sendInitialEvents", "boolean"),
        ("timeoutSeconds", "integer"),
        ("watch", "boolean"),
    ]
    .iter()
    .map(|(n, t)| param(n, "query", n, false, t))
    .collect()
}

fn op_id(verb: &str, r: &ApiResource, suffix: &str) -> String {
    let group: String = r
        .group
        .split('.')
        .next()
        .map(|g| {
            let mut c = g.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .unwrap_or_default();
    let version = {
        let mut c = r.version.chars();
        c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
    };
    let scope = if r.namespaced { "Namespaced" } else { "" };
    format!("{verb}{}{version}{scope}{}{suffix}", if group.is_empty() { "Core".into() } else { group }, r.kind)
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn ok(schema: &Value) -> Value {
    json!({"200": {"description": "OK", "content": {"application/json": {"schema": schema}, "application/yaml": {"schema": schema}}}})
}

fn operation(r: &ApiResource, action: &str, id: String, gvk: &Value, params: Vec<Value>, schema: &Value, body: Option<Value>) -> Value {
    let mut op = json!({
        "operationId": id,
        "description": format!("{action} {}", r.kind),
        "parameters": params,
        "responses": ok(schema),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
    });
    if let (Some(body), Some(map)) = (body, op.as_object_mut()) {
        map.insert("requestBody".into(), body);
    }
    op
}

fn patch_body() -> Value {
    let patch = reference("io.k8s.apimachinery.pkg.apis.meta.v1.Patch");
    json!({"required": true, "content": {
        "application/apply-patch+yaml": {"schema": patch},
        "application/json-patch+json": {"schema": patch},
        "application/merge-patch+json": {"schema": patch},
        "application/strategic-merge-patch+json": {"schema": patch},
    }})
}

fn object_body(schema: &Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema}, "application/yaml": {"schema": schema}}})
}

/// The paths of one resource: collection, object and the status/scale subresources.
fn resource_paths(r: &ApiResource, root: &str, paths: &mut Map<String, Value>) {
    let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
    let schema = reference(root);
    let base = r.group_version_path();
    let (collection, item_params) = if r.namespaced {
        (
            format!("{base}/namespaces/{{namespace}}/{}", r.plural),
            vec![
                param("name", "path", "name of the object", true, "string"),
                param("namespace", "path", "object name and auth scope", true, "string"),
            ],
        )
    } else {
        (format!("{base}/{}", r.plural), vec![param("name", "path", "name of the object", true, "string")])
    };
    let ns_params: Vec<Value> = item_params.iter().skip(1).cloned().collect();
    let mut coll = Map::new();
    coll.insert("parameters".into(), Value::Array(ns_params.clone()));
    if r.supports("list") {
        coll.insert("get".into(), operation(r, "list", op_id("list", r, ""), &gvk, list_params(), &json!({"type": "object"}), None));
    }
    if r.supports("create") {
        coll.insert(
            "post".into(),
            operation(r, "post", op_id("create", r, ""), &gvk, write_params(false), &schema, Some(object_body(&schema))),
        );
    }
    if r.supports("deletecollection") {
        coll.insert(
            "delete".into(),
            operation(
                r,
                "deletecollection",
                op_id("deleteCollection", r, ""),
                &gvk,
                list_params(),
                &reference("io.k8s.apimachinery.pkg.apis.meta.v1.Status"),
                None,
            ),
        );
    }
    paths.insert(collection.clone(), Value::Object(coll));
    if r.namespaced && r.supports("list") {
        let all = json!({"get": operation(r, "list", format!("{}ForAllNamespaces", op_id("list", r, "")), &gvk, list_params(), &json!({"type": "object"}), None)});
        paths.insert(format!("{base}/{}", r.plural), all);
    }
    let mut item = Map::new();
    item.insert("parameters".into(), Value::Array(item_params.clone()));
    if r.supports("get") {
        item.insert("get".into(), operation(r, "get", op_id("read", r, ""), &gvk, vec![], &schema, None));
    }
    if r.supports("update") {
        item.insert(
            "put".into(),
            operation(r, "put", op_id("replace", r, ""), &gvk, write_params(false), &schema, Some(object_body(&schema))),
        );
    }
    if r.supports("patch") {
        item.insert("patch".into(), operation(r, "patch", op_id("patch", r, ""), &gvk, write_params(true), &schema, Some(patch_body())));
    }
    if r.supports("delete") {
        let body = object_body(&reference("io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"));
        let params = vec![
            param("dryRun", "query", "dry run", false, "string"),
            param("gracePeriodSeconds", "query", "grace period", false, "integer"),
            param("propagationPolicy", "query", "propagation policy", false, "string"),
        ];
        item.insert("delete".into(), operation(r, "delete", op_id("delete", r, ""), &gvk, params, &schema, Some(body)));
    }
    paths.insert(format!("{collection}/{{name}}"), Value::Object(item));
    for sub in r.subresources.iter().filter(|s| matches!(s.as_ref(), "status" | "scale")) {
        let (sub_gvk, sub_schema, suffix) = if sub == "scale" {
            (json!({"group": "autoscaling", "version": "v1", "kind": "Scale"}), reference("io.k8s.api.autoscaling.v1.Scale"), "Scale")
        } else {
            (gvk.clone(), schema.clone(), "Status")
        };
        let mut ops = Map::new();
        ops.insert("parameters".into(), Value::Array(item_params.clone()));
        ops.insert("get".into(), operation(r, "get", op_id("read", r, suffix), &sub_gvk, vec![], &sub_schema, None));
        ops.insert(
            "put".into(),
            operation(r, "put", op_id("replace", r, suffix), &sub_gvk, write_params(false), &sub_schema, Some(object_body(&sub_schema))),
        );
        ops.insert(
            "patch".into(),
            operation(r, "patch", op_id("patch", r, suffix), &sub_gvk, write_params(true), &sub_schema, Some(patch_body())),
        );
        paths.insert(format!("{collection}/{{name}}/{sub}"), Value::Object(ops));
    }
}

fn preserve_unknown(r: &ApiResource) -> Value {
    json!({
        "type": "object",
        "description": format!("{} is a custom resource.", r.kind),
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."},
            "kind": {"type": "string", "description": "Kind is a string value representing the REST resource this object represents."},
            "metadata": {"allOf": [reference("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")], "description": "Standard object's metadata."},
        },
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// A custom resource's schema with `apiVersion`, `kind` and `metadata` declared, as kube-apiserver
/// publishes it (definitions leave them out).
fn with_type_and_object_meta(mut schema: Value, r: &ApiResource) -> Value {
    let base = preserve_unknown(r);
    if let Some(map) = schema.as_object_mut() {
        map.entry("type").or_insert_with(|| "object".into());
        let props = map.entry("properties").or_insert_with(|| json!({}));
        if let (Some(props), Some(base_props)) = (props.as_object_mut(), base["properties"].as_object()) {
            for (k, v) in base_props {
                props.insert(k.clone(), v.clone());
            }
        }
    }
    schema
}

/// Generates the schemas of these resources: component name per kind, and all definitions.
fn generate(
    catalog: &dyn ResourceCatalog,
    resources: &[&ApiResource],
    settings: SchemaSettings,
) -> (HashMap<String, String>, Map<String, Value>) {
    let mut generator = settings.into_generator();
    let mut roots = HashMap::new();
    let mut custom = Vec::new();
    for r in resources {
        match typed_schema(&r.group, &r.version, &r.kind) {
            Some(f) => {
                let (name, _) = f(&mut generator);
                roots.insert(r.kind.to_string(), name);
            }
            None => {
                let name = custom_schema_name(r);
                let schema = catalog.schema(r).map_or_else(|| preserve_unknown(r), |s| with_type_and_object_meta(s, r));
                custom.push((name.clone(), schema));
                roots.insert(r.kind.to_string(), name);
            }
        }
        if r.has_subresource("scale") {
            let _ = schema_of::<autoscaling::v1::Scale>(&mut generator);
        }
    }
    let _ = schema_of::<meta::Status>(&mut generator);
    let _ = schema_of::<meta::DeleteOptions>(&mut generator);
    let _ = schema_of::<meta::ObjectMeta>(&mut generator);
    let mut defs = generator.take_definitions(true);
    defs.insert(
        "io.k8s.apimachinery.pkg.apis.meta.v1.Patch".into(),
        json!({"type": "object", "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body."}),
    );
    for (name, schema) in custom {
        defs.insert(name, schema);
    }
    for r in resources {
        if let Some(Value::Object(schema)) = roots.get(r.kind.as_ref()).and_then(|n| defs.get_mut(n)) {
            schema.insert("x-kubernetes-group-version-kind".into(), json!([{"group": r.group, "version": r.version, "kind": r.kind}]));
        }
    }
    let mut visited = std::collections::HashSet::new();
    for r in resources {
        if let (Some(node), Some(root)) = (Node::for_kind(&r.group, &r.version, &r.kind), roots.get(r.kind.as_ref())) {
            annotate(&mut defs, root, node, &mut visited);
        }
    }
    if let Some(Value::Object(scale)) = defs.get_mut("io.k8s.api.autoscaling.v1.Scale") {
        scale.insert("x-kubernetes-group-version-kind".into(), json!([{"group": "autoscaling", "version": "v1", "kind": "Scale"}]));
    }
    (roots, defs)
}

/// The component a property schema refers to: directly, through a single `allOf`, or through its
/// array items.
fn referenced(schema: &Value) -> Option<(String, bool)> {
    let direct = |s: &Value| -> Option<String> {
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            return r.rsplit('/').next().map(str::to_owned);
        }
        match s.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
            Some([only]) => only.get("$ref").and_then(Value::as_str).and_then(|r| r.rsplit('/').next()).map(str::to_owned),
            _ => None,
        }
    };
    if let Some(r) = direct(schema) {
        return Some((r, false));
    }
    if let Some(r) = schema.get("items").and_then(direct) {
        return Some((r, false));
    }
    schema.get("additionalProperties").and_then(direct).map(|r| (r, true))
}

/// Adds the patch and list semantics kube-apiserver publishes (`x-kubernetes-patch-strategy`,
/// `x-kubernetes-patch-merge-key`, `x-kubernetes-list-type`, `x-kubernetes-list-map-keys`,
/// `x-kubernetes-map-type`) from the patch engine's tables, so that clients computing strategic
/// merge patches from the OpenAPI document (kubectl apply) merge lists by key.
fn annotate(defs: &mut Map<String, Value>, name: &str, node: Node, visited: &mut std::collections::HashSet<String>) {
    if !matches!(node, Node::Struct(Some(_))) || !visited.insert(name.to_owned()) {
        return;
    }
    let Some(Value::Object(schema)) = defs.get_mut(name) else { return };
    if node.is_atomic() {
        schema.insert("x-kubernetes-map-type".into(), "atomic".into());
    }
    let mut children = Vec::new();
    if let Some(Value::Object(props)) = schema.get_mut("properties") {
        for (key, prop) in props.iter_mut() {
            let sem = node.field(key);
            if let Value::Object(p) = prop {
                let mut strategy = Vec::new();
                if sem.merge {
                    strategy.push("merge");
                }
                if sem.retain_keys {
                    strategy.push("retainKeys");
                }
                if sem.replace {
                    strategy.push("replace");
                }
                if !strategy.is_empty() {
                    p.insert("x-kubernetes-patch-strategy".into(), strategy.join(",").into());
                }
                if let Some(k) = sem.merge_key {
                    p.insert("x-kubernetes-patch-merge-key".into(), k.into());
                }
                let list_type = match sem.list_type {
                    ListType::Atomic => Some("atomic"),
                    ListType::Set => Some("set"),
                    ListType::Map => Some("map"),
                    ListType::Unspecified => None,
                };
                if let Some(t) = list_type {
                    p.insert("x-kubernetes-list-type".into(), t.into());
                }
                if !sem.map_keys.is_empty() {
                    p.insert("x-kubernetes-list-map-keys".into(), json!(sem.map_keys));
                }
            }
            if let Some((component, is_map)) = referenced(prop) {
                let child = node.child(key);
                children.push((component, if is_map { child.child("*") } else { child }));
            }
        }
    }
    for (component, child) in children {
        annotate(defs, &component, child, visited);
    }
}

fn info() -> Value {
    json!({"title": "Kubernetes", "version": format!("v{}.{}.0", super::discovery::KUBE_MAJOR, super::discovery::KUBE_MINOR)})
}

impl OpenApi {
    /// The document of a group-version, if it serves anything.
    pub(crate) fn group_version(&self, catalog: &dyn ResourceCatalog, group: &str, version: &str) -> Option<Arc<GroupVersionDoc>> {
        let all = catalog.resources();
        let served: Vec<&ApiResource> = all.iter().filter(|r| r.group == group && r.version == version).collect();
        if served.is_empty() {
            return None;
        }
        let print = fingerprint(served.iter().copied());
        let key = (group.to_owned(), version.to_owned());
        if let Some((_, doc)) = self.cache.lock().ok()?.get(&key).filter(|(p, _)| *p == print) {
            return Some(doc.clone());
        }
        let (roots, defs) = generate(catalog, &served, SchemaSettings::openapi3());
        let mut paths = Map::new();
        for r in &served {
            if let Some(root) = roots.get(r.kind.as_ref()) {
                resource_paths(r, root, &mut paths);
            }
        }
        let doc = json!({"openapi": "3.0.0", "info": info(), "paths": paths, "components": {"schemas": defs}});
        let bytes = bytes::Bytes::from(serde_json::to_vec(&doc).ok()?);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut h);
        let schemas = match doc {
            Value::Object(mut map) => match map.remove("components").and_then(|mut c| c.get_mut("schemas").map(Value::take)) {
                Some(Value::Object(s)) => s,
                _ => Map::new(),
            },
            _ => Map::new(),
        };
        let doc = Arc::new(GroupVersionDoc { bytes, hash: format!("{:016X}", h.finish()), schemas: Arc::new(schemas), roots });
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(key, (print, doc.clone()));
        }
        Some(doc)
    }

    /// The `/openapi/v3` root: one entry per served group-version.
    pub(crate) fn root(&self, catalog: &dyn ResourceCatalog) -> Value {
        let all = catalog.resources();
        let mut gvs: Vec<(String, String)> = Vec::new();
        for r in all.iter() {
            let gv = (r.group.to_string(), r.version.to_string());
            if !gvs.contains(&gv) {
                gvs.push(gv);
            }
        }
        let mut paths = Map::new();
        for (g, v) in gvs {
            let key = if g.is_empty() { format!("api/{v}") } else { format!("apis/{g}/{v}") };
            if let Some(doc) = self.group_version(catalog, &g, &v) {
                paths.insert(key.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={}", doc.hash)}));
            }
        }
        json!({"paths": paths})
    }

    /// `/openapi/v2` as gnostic protobuf (`openapi_v2.Document`), which kubectl asks for to
    /// validate on the client the kinds whose v3 document has no PATCH operation declaring
    /// `fieldValidation` (`List` documents, access reviews). It carries the version and title
    /// but no definitions: kubectl then finds no schema to check such a document against and
    /// leaves validation to the server (which it asks for Strict validation of each item).
    pub(crate) fn v2_protobuf() -> bytes::Bytes {
        fn field(out: &mut Vec<u8>, number: u8, bytes: &[u8]) {
            out.push((number << 3) | 2);
            let mut len = bytes.len();
            while len >= 0x80 {
                out.push((len as u8 & 0x7f) | 0x80);
                len >>= 7;
            }
            out.push(len as u8);
            out.extend_from_slice(bytes);
        }
        let version = format!("v{}.{}.0", super::discovery::KUBE_MAJOR, super::discovery::KUBE_MINOR);
        let mut info = Vec::new();
        field(&mut info, 1, b"Kubernetes");
        field(&mut info, 2, version.as_bytes());
        let mut doc = Vec::new();
        field(&mut doc, 1, b"2.0");
        field(&mut doc, 2, &info);
        bytes::Bytes::from(doc)
    }

    /// The `/openapi/v2` document (Swagger 2.0, JSON).
    pub(crate) fn v2(&self, catalog: &dyn ResourceCatalog) -> bytes::Bytes {
        let all = catalog.resources();
        let print = fingerprint(all.iter());
        if let Ok(cache) = self.v2.lock()
            && let Some((_, bytes)) = cache.as_ref().filter(|(p, _)| *p == print)
        {
            return bytes.clone();
        }
        let served: Vec<&ApiResource> = all.iter().collect();
        let settings = SchemaSettings::openapi3().with(|s| s.definitions_path = "/definitions".into());
        let (roots, defs) = generate(catalog, &served, settings);
        let mut paths = Map::new();
        for r in &served {
            let Some(root) = roots.get(r.kind.as_ref()) else { continue };
            let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
            let schema = json!({"$ref": format!("#/definitions/{root}")});
            let item = if r.namespaced {
                format!("{}/namespaces/{{namespace}}/{}/{{name}}", r.group_version_path(), r.plural)
            } else {
                format!("{}/{}/{{name}}", r.group_version_path(), r.plural)
            };
            let query = |n: &str, t: &str| json!({"name": n, "in": "query", "type": t, "uniqueItems": true});
            let params = vec![query("dryRun", "string"), query("fieldManager", "string"), query("fieldValidation", "string")];
            paths.insert(
                item,
                json!({
                    "get": {"operationId": op_id("read", r, ""), "responses": {"200": {"description": "OK", "schema": schema}}, "x-kubernetes-action": "get", "x-kubernetes-group-version-kind": gvk},
                    "patch": {"operationId": op_id("patch", r, ""), "parameters": params, "responses": {"200": {"description": "OK", "schema": schema}}, "x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk},
                }),
            );
        }
        let doc = json!({"swagger": "2.0", "info": info(), "paths": paths, "definitions": defs});
        let bytes = bytes::Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
        if let Ok(mut cache) = self.v2.lock() {
            *cache = Some((print, bytes.clone()));
        }
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::catalog::StaticCatalog;

    #[test]
    fn every_builtin_kind_has_a_typed_schema() {
        for r in bosun_core::resource::builtin_resources() {
            assert!(is_typed(r), "{}/{} {}", r.group, r.version, r.kind);
        }
    }

    #[test]
    fn patch_operations_declare_field_validation_with_their_kind() {
        let api = OpenApi::default();
        let doc = api.group_version(&StaticCatalog::builtin(), "apps", "v1").map(|d| d.bytes.clone()).unwrap_or_default();
        let doc: Value = serde_json::from_slice(&doc).unwrap_or_default();
        let item = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(item["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        let names: Vec<&str> = item["parameters"].as_array().into_iter().flatten().filter_map(|p| p["name"].as_str()).collect();
        assert!(names.contains(&"fieldValidation"), "{names:?}");
        let schema = &doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(schema["x-kubernetes-group-version-kind"][0]["kind"], "Deployment");
        let pod_spec = &doc["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"];
        assert_eq!(pod_spec["properties"]["containers"]["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(pod_spec["properties"]["containers"]["x-kubernetes-patch-strategy"], "merge");
        let container = &doc["components"]["schemas"]["io.k8s.api.core.v1.Container"];
        assert_eq!(container["properties"]["ports"]["x-kubernetes-patch-merge-key"], "containerPort");
        assert_eq!(container["properties"]["ports"]["x-kubernetes-list-type"], "map");
    }

    #[test]
    fn the_root_points_at_every_group_version() {
        let api = OpenApi::default();
        let root = api.root(&StaticCatalog::builtin());
        assert!(root["paths"]["api/v1"]["serverRelativeURL"].as_str().is_some_and(|u| u.starts_with("/openapi/v3/api/v1?hash=")));
        assert!(root["paths"]["apis/apps/v1"].is_object());
    }

    #[test]
    fn custom_kinds_get_a_schema_that_keeps_unknown_fields() {
        let crd = ApiResource::new("stable.example.com", "v1", "CronTab", "crontabs", true);
        let api = OpenApi::default();
        let doc = api.group_version(&StaticCatalog::new([crd]), "stable.example.com", "v1");
        let schema = doc.as_ref().and_then(|d| d.schemas.get("com.example.stable.v1.CronTab").cloned()).unwrap_or_default();
        assert_eq!(schema["x-kubernetes-preserve-unknown-fields"], true);
    }
}
