//! Field validation against the OpenAPI schemas: finds the unknown fields of a body, for
//! `fieldValidation=Strict` (refuse) and `Warn` (a `Warning` header).

use serde_json::{Map, Value};

/// Follows `$ref` and single-element `allOf` to the schema that describes a value.
fn resolve<'a>(mut schema: &'a Value, defs: &'a Map<String, Value>) -> &'a Value {
    for _ in 0..32 {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            match r.rsplit('/').next().and_then(|n| defs.get(n)) {
                Some(s) => schema = s,
                None => return schema,
            }
        } else if let Some([only]) = schema.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
            schema = only;
        } else {
            return schema;
        }
    }
    schema
}

/// The unknown fields of `value` under the component schema `root`, as kube-apiserver names them
/// (`spec.template.spec.containers[0].imagee`). Patch directives (`$patch`, `$setElementOrder/…`)
/// are not fields.
pub(crate) fn unknown_fields(value: &Value, root: &str, defs: &Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(schema) = defs.get(root) {
        walk(value, schema, defs, String::new(), &mut out);
    }
    out
}

fn walk(value: &Value, schema: &Value, defs: &Map<String, Value>, path: String, out: &mut Vec<String>) {
    let schema = resolve(schema, defs);
    if schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true) {
        if let (Some(props), Value::Object(map)) = (schema.get("properties").and_then(Value::as_object), value) {
            for (k, v) in map {
                if let Some(s) = props.get(k) {
                    walk(v, s, defs, join(&path, k), out);
                }
            }
        }
        return;
    }
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            if props.is_none() && additional.is_none() {
                return;
            }
            for (k, v) in map {
                if k.starts_with('$') {
                    continue;
                }
                match (props.and_then(|p| p.get(k)), additional) {
                    (Some(s), _) | (None, Some(s)) => walk(v, s, defs, join(&path, k), out),
                    (None, None) => out.push(join(&path, k)),
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    walk(v, item_schema, defs, format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::catalog::StaticCatalog;
    use crate::http::openapi::OpenApi;
    use serde_json::json;

    #[test]
    fn a_misspelt_field_deep_in_a_deployment_is_found() {
        let api = OpenApi::default();
        let Some(doc) = api.group_version(&StaticCatalog::builtin(), "apps", "v1") else { unreachable!() };
        let root = doc.roots.get("Deployment").cloned().unwrap_or_default();
        let body = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx", "imagee": "x", "resources": {"limits": {"cpu": "1"}}}]}},
            "bogus": 1},
        });
        let unknown = unknown_fields(&body, &root, &doc.schemas);
        assert_eq!(unknown, vec!["spec.bogus".to_owned(), "spec.template.spec.containers[0].imagee".to_owned()]);
    }

    #[test]
    fn patch_directives_are_not_unknown_fields() {
        let api = OpenApi::default();
        let Some(doc) = api.group_version(&StaticCatalog::builtin(), "", "v1") else { unreachable!() };
        let root = doc.roots.get("Pod").cloned().unwrap_or_default();
        let body = json!({"spec": {"$setElementOrder/containers": [{"name": "c"}], "containers": [{"name": "c", "$patch": "delete"}]}});
        assert!(unknown_fields(&body, &root, &doc.schemas).is_empty());
    }
}
