//! Custom resources: what a CustomResourceDefinition serves, and its structural schema
//! (validation, defaults, pruning of unknown fields).

use super::strategy::{Kind, Rules};
use bosun_core::{ApiResource, DynamicObject, FieldError, Object};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::sync::Arc;

/// The `openAPIV3Schema` of one custom resource version.
#[derive(Debug, Clone)]
pub(crate) struct CustomSchema {
    root: Arc<Value>,
}

impl CustomSchema {
    /// Wraps a schema (a JSON object as in `spec.versions[].schema.openAPIV3Schema`).
    pub(crate) fn new(root: Value) -> Self {
        Self { root: Arc::new(root) }
    }

    /// The schema as JSON.
    pub(crate) fn json(&self) -> &Value {
        &self.root
    }

    /// The schema as JSON, shared (what server-side apply merges by).
    pub(crate) fn shared(&self) -> Arc<Value> {
        self.root.clone()
    }

    /// Fills in `default`s (below the root; `metadata` is left alone).
    pub(crate) fn default(&self, data: &mut Value) {
        apply_defaults(&self.root, data, true);
    }

    /// Validates the data (everything but apiVersion, kind, metadata).
    pub(crate) fn validate(&self, data: &Value, errs: &mut Vec<FieldError>) {
        check_value(&self.root, data, "", true, errs);
    }

    /// Paths of fields the schema does not declare (and does not preserve).
    pub(crate) fn unknown_fields(&self, body: &Value) -> Vec<String> {
        let mut out = Vec::new();
        unknown(&self.root, body, "", true, &mut out);
        out
    }

    /// Removes fields the schema does not declare, as kube-apiserver prunes them.
    pub(crate) fn prune(&self, data: &mut Value) {
        prune(&self.root, data, true);
    }
}

fn preserves(schema: &Value) -> bool {
    schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true)
        || schema.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) && schema.get("properties").is_none()
        || schema.get("x-kubernetes-embedded-resource").and_then(Value::as_bool) == Some(true) && schema.get("properties").is_none()
}

fn child<'a>(schema: &'a Value, key: &str) -> Option<&'a Value> {
    if let Some(p) = schema.get("properties").and_then(|p| p.get(key)) {
        return Some(p);
    }
    schema.get("additionalProperties").filter(|a| a.is_object())
}

fn skip_at_root(root: bool, key: &str) -> bool {
    root && matches!(key, "apiVersion" | "kind" | "metadata")
}

fn apply_defaults(schema: &Value, data: &mut Value, root: bool) {
    match data {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, s) in props {
                    if skip_at_root(root, k) {
                        continue;
                    }
                    if !map.contains_key(k)
                        && let Some(d) = s.get("default")
                    {
                        map.insert(k.clone(), d.clone());
                    }
                }
            }
            for (k, v) in map.iter_mut() {
                if skip_at_root(root, k) {
                    continue;
                }
                if let Some(s) = child(schema, k) {
                    apply_defaults(s, v, false);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for v in items {
                    apply_defaults(s, v, false);
                }
            }
        }
        _ => {}
    }
}

fn prune(schema: &Value, data: &mut Value, root: bool) {
    match data {
        Value::Object(map) => {
            if preserves(schema) && schema.get("properties").is_none() {
                return;
            }
            let keep_unknown =
                preserves(schema) || schema.get("additionalProperties").is_some_and(|a| a.is_object() || a == &Value::Bool(true));
            map.retain(|k, _| skip_at_root(root, k) || keep_unknown || child(schema, k).is_some());
            for (k, v) in map.iter_mut() {
                if skip_at_root(root, k) {
                    continue;
                }
                if let Some(s) = child(schema, k) {
                    prune(s, v, false);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for v in items {
                    prune(s, v, false);
                }
            }
        }
        _ => {}
    }
}

fn unknown(schema: &Value, data: &Value, path: &str, root: bool, out: &mut Vec<String>) {
    match data {
        Value::Object(map) => {
            if preserves(schema) && schema.get("properties").is_none() {
                return;
            }
            let keep_unknown =
                preserves(schema) || schema.get("additionalProperties").is_some_and(|a| a.is_object() || a == &Value::Bool(true));
            for (k, v) in map {
                if skip_at_root(root, k) {
                    continue;
                }
                let at = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match child(schema, k) {
                    Some(s) => unknown(s, v, &at, false, out),
                    None if !keep_unknown => out.push(at),
                    None => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    unknown(s, v, &format!("{path}[{i}]"), false, out);
                }
            }
        }
        _ => {}
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn check_value(schema: &Value, data: &Value, path: &str, root: bool, errs: &mut Vec<FieldError>) {
    let field = |p: &str| if p.is_empty() { Cow::Borrowed("<root>") } else { Cow::Owned(p.to_owned()) };
    if data.is_null() {
        if schema.get("nullable").and_then(Value::as_bool) != Some(true) && !root {
            // kube-apiserver drops nulls for non-nullable fields; accept them.
        }
        return;
    }
    let int_or_string = schema.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true);
    if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let actual = type_name(data);
        let ok = actual == t || (t == "number" && actual == "integer") || (int_or_string && matches!(actual, "integer" | "string"));
        if !ok {
            errs.push(FieldError {
                reason: "FieldValueTypeInvalid".into(),
                field: field(path).into_owned(),
                message: format!("Invalid value: \"{}\": {path} in body must be of type {t}: \"{actual}\"", compact(data)),
            });
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(data)
    {
        let allowed: Vec<String> = options.iter().map(compact).collect();
        let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
        errs.push(FieldError::not_supported(field(path), compact(data), &allowed));
    }
    if let Some(n) = data.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            errs.push(FieldError::invalid(field(path), compact(data), format!("{path} in body should be greater than or equal to {min}")));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            errs.push(FieldError::invalid(field(path), compact(data), format!("{path} in body should be less than or equal to {max}")));
        }
    }
    if let Some(s) = data.as_str() {
        let len = s.chars().count() as u64;
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && len < min
        {
            errs.push(FieldError::invalid(field(path), s, format!("{path} in body should be at least {min} chars long")));
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && len > max
        {
            errs.push(FieldError::invalid(field(path), s, format!("{path} in body may not be longer than {max}")));
        }
    }
    match data {
        Value::Object(map) => {
            for r in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
                if !map.contains_key(r) && !skip_at_root(root, r) {
                    errs.push(FieldError::required(if path.is_empty() { r.to_owned() } else { format!("{path}.{r}") }));
                }
            }
            for (k, v) in map {
                if skip_at_root(root, k) {
                    continue;
                }
                if let Some(s) = child(schema, k) {
                    check_value(s, v, &if path.is_empty() { k.clone() } else { format!("{path}.{k}") }, false, errs);
                }
            }
        }
        Value::Array(items) => {
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                errs.push(FieldError::invalid(field(path), items.len(), format!("{path} in body should have at most {max} items")));
            }
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < min
            {
                errs.push(FieldError::invalid(field(path), items.len(), format!("{path} in body should have at least {min} items")));
            }
            if let Some(s) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    check_value(s, v, &format!("{path}[{i}]"), false, errs);
                }
            }
        }
        _ => {}
    }
}

fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut at = v;
    for p in path {
        at = at.get(p)?;
    }
    at.as_str()
}

fn strings(v: Option<&Value>) -> Vec<Cow<'static, str>> {
    v.and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(|s| Cow::Owned(s.to_owned())).collect()
}

/// Validates a CustomResourceDefinition.
pub(crate) fn validate_definition(obj: &DynamicObject, errs: &mut Vec<FieldError>) {
    let spec = obj.data.get("spec").cloned().unwrap_or(Value::Null);
    let group = str_at(&spec, &["group"]).unwrap_or("");
    let plural = str_at(&spec, &["names", "plural"]).unwrap_or("");
    if group.is_empty() {
        errs.push(FieldError::required("spec.group"));
    } else if !group.contains('.') {
        errs.push(FieldError::invalid("spec.group", group, "should be a domain with at least one dot"));
    }
    if plural.is_empty() {
        errs.push(FieldError::required("spec.names.plural"));
    }
    if str_at(&spec, &["names", "kind"]).unwrap_or("").is_empty() {
        errs.push(FieldError::required("spec.names.kind"));
    }
    if !group.is_empty() && !plural.is_empty() && obj.name() != format!("{plural}.{group}") {
        errs.push(FieldError::invalid("metadata.name", obj.name(), "must be spec.names.plural+\".\"+spec.group"));
    }
    match str_at(&spec, &["scope"]) {
        Some("Namespaced" | "Cluster") => {}
        Some(other) => errs.push(FieldError::not_supported("spec.scope", other, &["Cluster", "Namespaced"])),
        None => errs.push(FieldError::required("spec.scope")),
    }
    let versions = spec.get("versions").and_then(Value::as_array).cloned().unwrap_or_default();
    if versions.is_empty() {
        errs.push(FieldError::required("spec.versions"));
    }
    for (i, version) in versions.iter().enumerate() {
        let columns = version.get("additionalPrinterColumns").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        for (j, column) in columns.iter().enumerate() {
            validate_printer_column(column, &format!("spec.versions[{i}].additionalPrinterColumns[{j}]"), errs);
        }
    }
    let storage = versions.iter().filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true)).count();
    if !versions.is_empty() && storage != 1 {
        errs.push(FieldError::invalid("spec.versions", storage, "must have exactly one version marked as storage version"));
    }
}

/// A printer column as kube-apiserver's ValidateCustomResourceColumnDefinition checks it: a
/// name, a known type and format, and a simple JSON path starting with `.`.
fn validate_printer_column(column: &Value, at: &str, errs: &mut Vec<FieldError>) {
    const TYPES: [&str; 5] = ["boolean", "date", "integer", "number", "string"];
    const FORMATS: [&str; 8] = ["byte", "date", "date-time", "double", "float", "int32", "int64", "password"];
    if str_at(column, &["name"]).unwrap_or("").is_empty() {
        errs.push(FieldError::required(format!("{at}.name")));
    }
    match str_at(column, &["type"]).unwrap_or("") {
        "" => errs.push(FieldError::required(format!("{at}.type"))),
        t if !TYPES.contains(&t) => errs.push(FieldError::not_supported(format!("{at}.type"), t, &TYPES)),
        _ => {}
    }
    if let Some(f) = str_at(column, &["format"]).filter(|f| !f.is_empty() && !FORMATS.contains(f)) {
        errs.push(FieldError::not_supported(format!("{at}.format"), f, &FORMATS));
    }
    match str_at(column, &["jsonPath"]).unwrap_or("") {
        "" => errs.push(FieldError::required(format!("{at}.JSONPath"))),
        p if !p.starts_with('.') => {
            errs.push(FieldError::invalid(format!("{at}.JSONPath"), p, "must be a simple json path starting with ."))
        }
        _ => {}
    }
}

/// What a CustomResourceDefinition may not change once it serves (kube-apiserver's
/// ValidateCustomResourceDefinitionSpecUpdate for an established definition): its scope and kind
/// (they shape storage), its group and plural (they make its name).
pub(crate) fn validate_definition_update(obj: &DynamicObject, old: &DynamicObject, errs: &mut Vec<FieldError>) {
    let (spec, old_spec) = (obj.data.get("spec").unwrap_or(&Value::Null), old.data.get("spec").unwrap_or(&Value::Null));
    for (path, field) in [
        (&["scope"][..], "spec.scope"),
        (&["names", "kind"], "spec.names.kind"),
        (&["group"], "spec.group"),
        (&["names", "plural"], "spec.names.plural"),
    ] {
        let (new, was) = (str_at(spec, path), str_at(old_spec, path));
        if new != was {
            errs.push(FieldError::invalid(field, new.unwrap_or(""), "field is immutable"));
        }
    }
}

/// The kinds a CustomResourceDefinition serves: one per served version.
pub(crate) fn kinds_of(crd: &DynamicObject) -> Vec<Kind> {
    let Some(spec) = crd.data.get("spec") else { return Vec::new() };
    let group = str_at(spec, &["group"]).unwrap_or("").to_owned();
    let names = spec.get("names").cloned().unwrap_or(Value::Null);
    let kind = str_at(&names, &["kind"]).unwrap_or("").to_owned();
    let plural = str_at(&names, &["plural"]).unwrap_or("").to_owned();
    let singular = str_at(&names, &["singular"]).map(str::to_owned).unwrap_or_else(|| kind.to_lowercase());
    let namespaced = str_at(spec, &["scope"]) == Some("Namespaced");
    let mut out = Vec::new();
    for v in spec.get("versions").and_then(Value::as_array).into_iter().flatten() {
        if v.get("served").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let Some(version) = v.get("name").and_then(Value::as_str) else { continue };
        let mut res = ApiResource::new(group.clone(), version.to_owned(), kind.clone(), plural.clone(), namespaced);
        res.singular = Cow::Owned(singular.clone());
        res.short_names = strings(names.get("shortNames"));
        res.categories = strings(names.get("categories"));
        let subs = v.get("subresources");
        let mut custom_scale = None;
        if subs.and_then(|s| s.get("status")).is_some() {
            res.subresources.push(Cow::Borrowed("status"));
        }
        if let Some(scale) = subs.and_then(|s| s.get("scale")) {
            res.subresources.push(Cow::Borrowed("scale"));
            custom_scale = Some((
                str_at(scale, &["specReplicasPath"]).unwrap_or(".spec.replicas").trim_start_matches('.').to_owned(),
                str_at(scale, &["statusReplicasPath"]).unwrap_or(".status.replicas").trim_start_matches('.').to_owned(),
                str_at(scale, &["labelSelectorPath"]).map(|p| p.trim_start_matches('.').to_owned()),
            ));
        }
        let schema = v.get("schema").and_then(|s| s.get("openAPIV3Schema")).cloned().map(|s| Arc::new(CustomSchema::new(s)));
        let deprecation = (v.get("deprecated").and_then(Value::as_bool) == Some(true)).then(|| {
            v.get("deprecationWarning").and_then(Value::as_str).map_or_else(|| default_deprecation(spec, version, &kind), str::to_owned)
        });
        out.push(Kind { resource: res, rules: Rules::Custom, schema, custom_scale, deprecation, cache: std::sync::OnceLock::new() });
    }
    out
}

/// The warning for a deprecated custom resource version without its own `deprecationWarning`,
/// as kube-apiserver words it: the newest served, not deprecated, later version is suggested.
fn default_deprecation(spec: &Value, deprecated: &str, kind: &str) -> String {
    let group = str_at(spec, &["group"]).unwrap_or("");
    let message = format!("{group}/{deprecated} {kind} is deprecated");
    let newer = spec
        .get("versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.get("served").and_then(Value::as_bool) != Some(false) && v.get("deprecated").and_then(Value::as_bool) != Some(true))
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .filter(|v| version_priority(v) > version_priority(deprecated))
        .max_by_key(|v| version_priority(v));
    match newer {
        Some(v) => format!("{message}; use {group}/{v} {kind}"),
        None => message,
    }
}

/// Orders versions as Kubernetes does: GA over beta over alpha, then by major and minor number
/// (`v2` > `v1` > `v1beta2` > `v1beta1` > `v1alpha1`); versions of another form rank lowest, by name.
fn version_priority(version: &str) -> (u8, u64, u64, std::cmp::Reverse<String>) {
    let parsed = version.strip_prefix('v').and_then(|rest| {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let major: u64 = rest[..digits].parse().ok()?;
        let tail = &rest[digits..];
        let (level, minor) = match tail {
            "" => return Some((3, major, 0)),
            _ if tail.starts_with("beta") => (2, &tail[4..]),
            _ if tail.starts_with("alpha") => (1, &tail[5..]),
            _ => return None,
        };
        Some((level, major, minor.parse().ok()?))
    });
    match parsed {
        Some((level, major, minor)) => (level, major, minor, std::cmp::Reverse(String::new())),
        None => (0, 0, 0, std::cmp::Reverse(version.to_owned())),
    }
}

/// The status kube-apiserver gives a definition it accepted: names accepted and established.
pub(crate) fn accepted_status(crd: &DynamicObject, now: &str) -> Value {
    let names = crd.data.get("spec").and_then(|s| s.get("names")).cloned().unwrap_or(Value::Object(Map::new()));
    let stored: Vec<Value> = crd
        .data
        .get("spec")
        .and_then(|s| s.get("versions"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .filter_map(|v| v.get("name").cloned())
        .collect();
    let condition = |t: &str, reason: &str, message: &str| serde_json::json!({"type": t, "status": "True", "lastTransitionTime": now, "reason": reason, "message": message});
    serde_json::json!({
        "acceptedNames": names,
        "storedVersions": stored,
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> CustomSchema {
        CustomSchema::new(json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["size"],
                    "properties": {
                        "size": {"type": "integer", "minimum": 1},
                        "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    },
                },
                "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
            },
        }))
    }

    #[test]
    fn schemas_default_validate_and_prune() {
        let s = schema();
        let mut data = json!({"spec": {"size": 0, "bogus": 1, "extra": {"any": 1}}});
        s.default(&mut data);
        assert_eq!(data["spec"]["mode"], "a");
        assert_eq!(s.unknown_fields(&data), vec!["spec.bogus".to_owned()]);
        let mut errs = Vec::new();
        s.validate(&data, &mut errs);
        assert_eq!(errs.len(), 1, "{errs:?}");
        s.prune(&mut data);
        assert!(data["spec"].get("bogus").is_none());
        assert_eq!(data["spec"]["extra"]["any"], 1);
        let mut errs = Vec::new();
        s.validate(&json!({"spec": {"mode": "c", "size": "x"}}), &mut errs);
        assert_eq!(errs.len(), 2, "{errs:?}");
    }
}
