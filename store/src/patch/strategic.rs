//! Strategic merge patch, as kube-apiserver applies `application/strategic-merge-patch+json`:
//! lists merge by the merge keys of the Go struct tags, and the directives `$patch`,
//! `$retainKeys`, `$setElementOrder/<field>` and `$deleteFromPrimitiveList/<field>` steer the merge.
//!
//! Where Kubernetes would leave directives in values it copies verbatim (it drops them later when
//! decoding into Go structs), this implementation strips them while copying, so the stored JSON
//! never carries a `$patch` key.

use serde_json::{Map, Value};

use super::error::{PatchError, Result};
use super::json_patch::json_eq;
use super::schema::{FieldSemantics, Node};

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// Applies a strategic merge patch to `doc`, whose schema starts at `root` (see [`Node::for_kind`]).
pub fn strategic_merge_patch(root: Node, doc: &Value, patch: &Value) -> Result<Value> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::malformed("invalid JSON document: a strategic merge patch must be a JSON object"));
    };
    let original = match doc {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        _ => return Err(PatchError::malformed("invalid JSON document: the object to patch is not a JSON object")),
    };
    merge_map(original, patch, root).map(Value::Object)
}

fn merge_map(mut original: Map<String, Value>, patch: &Map<String, Value>, node: Node) -> Result<Map<String, Value>> {
    if let Some(directive) = patch.get(DIRECTIVE) {
        return match directive.as_str() {
            Some("replace") => {
                let mut rest = patch.clone();
                rest.remove(DIRECTIVE);
                merge_map(Map::new(), &rest, node)
            }
            Some("delete") => Ok(Map::new()),
            _ => Err(PatchError::malformed(format!("unknown patch type: {directive} in map: {}", Value::Object(patch.clone())))),
        };
    }

    if let Some(retain) = patch.get(RETAIN_KEYS) {
        let keys = retain.as_array().ok_or_else(|| PatchError::malformed("invalid patch format of retainKeys"))?;
        let keep = |k: &str| keys.iter().any(|v| v.as_str() == Some(k));
        for (k, v) in patch {
            if v.is_null() || k.starts_with('$') {
                continue;
            }
            if !keep(k) {
                return Err(PatchError::malformed(format!("invalid patch format of retainKeys: field {k:?} is not in $retainKeys")));
            }
        }
        original.retain(|k, _| keep(k));
    }

    let mut done: Vec<&str> = Vec::new();
    for (key, order) in patch {
        let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER) else { continue };
        if field.is_empty() {
            return Err(PatchError::malformed("invalid patch format of setElementOrder list"));
        }
        set_element_order(&mut original, patch, field, order, node)?;
        done.push(field);
    }

    for (key, values) in patch {
        let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) else { continue };
        let values = values.as_array().ok_or_else(|| PatchError::malformed("invalid patch format of primitive list"))?;
        if field.is_empty() {
            return Err(PatchError::malformed("invalid patch format of primitive list"));
        }
        if let Some(Value::Array(items)) = original.get_mut(field) {
            items.retain(|item| !values.iter().any(|v| json_eq(v, item)));
        }
    }

    for (key, patch_value) in patch {
        if key == RETAIN_KEYS
            || key.starts_with(SET_ELEMENT_ORDER)
            || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            || done.contains(&key.as_str())
        {
            continue;
        }
        merge_field(&mut original, key, patch_value, node)?;
    }
    Ok(original)
}

/// Whether a strategic merge patch has directives at its top level (`$patch`, `$retainKeys`,
/// `$setElementOrder/...`, `$deleteFromPrimitiveList/...`): those need the whole object, the
/// other members merge each into its own field (see [`strategic_merge_fields`]).
pub fn has_top_level_directives(patch: &Map<String, Value>) -> bool {
    patch.keys().any(|k| k.starts_with('$'))
}

/// Applies members of a strategic merge patch without top-level directives (see
/// [`has_top_level_directives`]) to the top-level fields of an object whose schema starts at
/// `root`, in place: each member merges into its own field only, so the fields the patch does
/// not name are neither copied nor visited. The same result as [`strategic_merge_patch`] on the
/// whole object.
pub fn strategic_merge_fields<'a>(
    root: Node,
    fields: &mut Map<String, Value>,
    members: impl IntoIterator<Item = (&'a String, &'a Value)>,
) -> Result<()> {
    for (key, value) in members {
        if key.starts_with('$') {
            return Err(PatchError::malformed(format!("the directive {key} needs the whole object")));
        }
        merge_field(fields, key, value, root)?;
    }
    Ok(())
}

/// Merges one member of a patch map into the same member of the original map.
fn merge_field(original: &mut Map<String, Value>, key: &String, patch_value: &Value, node: Node) -> Result<()> {
    if patch_value.is_null() {
        original.remove(key);
        return Ok(());
    }
    let sem = node.field(key);
    let child = node.child(key);
    let merged = match original.remove(key) {
        None => clean(patch_value, child, &sem)?,
        Some(Value::Object(orig)) if patch_value.is_object() => match patch_value {
            Value::Object(p) if !sem.replace => Value::Object(merge_map(orig, p, child)?),
            _ => clean(patch_value, child, &sem)?,
        },
        Some(Value::Array(orig)) if patch_value.is_array() => match patch_value {
            Value::Array(p) if sem.merge => Value::Array(merge_list(orig, p, child, sem.merge_key)?),
            _ => patch_value.clone(),
        },
        Some(_) => clean(patch_value, child, &sem)?,
    };
    original.insert(key.clone(), merged);
    Ok(())
}

/// A patch value copied where there is nothing to merge with: directives and nulls are resolved
/// against an empty original.
fn clean(value: &Value, node: Node, sem: &FieldSemantics) -> Result<Value> {
    Ok(match value {
        Value::Object(p) if !sem.replace => Value::Object(merge_map(Map::new(), p, node)?),
        Value::Object(p) => {
            let mut p = p.clone();
            p.remove(DIRECTIVE);
            Value::Object(p)
        }
        Value::Array(p) if sem.merge => Value::Array(merge_list(Vec::new(), p, node, sem.merge_key)?),
        other => other.clone(),
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ElemKind {
    Scalar,
    Object,
}

/// The one kind of element of the lists (objects or scalars); lists of lists are refused.
fn element_kind(lists: &[&[Value]]) -> Result<Option<ElemKind>> {
    let mut kind = None;
    for item in lists.iter().flat_map(|l| l.iter()) {
        let this = match item {
            Value::Array(_) => return Err(PatchError::unprocessable("lists of lists are not supported")),
            Value::Object(_) => ElemKind::Object,
            _ => ElemKind::Scalar,
        };
        match kind {
            None => kind = Some(this),
            Some(k) if k != this => return Err(PatchError::unprocessable("list element types are not identical")),
            Some(_) => {}
        }
    }
    Ok(kind)
}

fn key_of<'a>(item: &'a Value, merge_key: &str) -> Option<&'a Value> {
    item.as_object().and_then(|m| m.get(merge_key))
}

fn no_merge_key(item: &Value, merge_key: &str) -> PatchError {
    PatchError::unprocessable(format!("map: {item} does not contain declared merge key: {merge_key}"))
}

/// Merges two lists of a `patchStrategy:"merge"` field.
fn merge_list(original: Vec<Value>, patch: &[Value], elem: Node, merge_key: Option<&str>) -> Result<Vec<Value>> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    match element_kind(&[&original, patch])? {
        None => Ok(original),
        Some(ElemKind::Scalar) => {
            let mut merged = original.clone();
            for v in patch {
                if !merged.iter().any(|m| json_eq(m, v)) {
                    merged.push(v.clone());
                }
            }
            Ok(order_merged(merged, patch, &original, None))
        }
        Some(ElemKind::Object) => {
            let merge_key = merge_key.ok_or_else(|| PatchError::unprocessable("cannot merge lists of objects without a merge key"))?;
            let (original, plain) = apply_special_elements(original, patch, merge_key, elem)?;
            let mut merged = original.clone();
            for item in &plain {
                let Value::Object(p) = item else { continue };
                let key = p.get(merge_key).ok_or_else(|| no_merge_key(item, merge_key))?;
                match merged.iter().position(|m| key_of(m, merge_key).is_some_and(|k| json_eq(k, key))) {
                    Some(i) => {
                        let orig = match std::mem::take(&mut merged[i]) {
                            Value::Object(o) => o,
                            _ => Map::new(),
                        };
                        merged[i] = Value::Object(merge_map(orig, p, elem)?);
                    }
                    None => merged.push(Value::Object(merge_map(Map::new(), p, elem)?)),
                }
            }
            Ok(order_merged(merged, &plain, &original, Some(merge_key)))
        }
    }
}

/// Handles `$patch: delete` and `$patch: replace` items; returns the new original and the plain patch items.
fn apply_special_elements(mut original: Vec<Value>, patch: &[Value], merge_key: &str, elem: Node) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut plain = Vec::new();
    let mut replace = false;
    for item in patch {
        let Some(directive) = item.get(DIRECTIVE) else {
            plain.push(item.clone());
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let key = key_of(item, merge_key).ok_or_else(|| no_merge_key(item, merge_key))?;
                original.retain(|o| !key_of(o, merge_key).is_some_and(|k| json_eq(k, key)));
            }
            Some("replace") => replace = true,
            Some("merge") => return Err(PatchError::malformed("merging lists cannot yet be specified in the patch")),
            _ => return Err(PatchError::malformed(format!("unknown patch type: {directive} in list item: {item}"))),
        }
    }
    if replace {
        let mut cleaned = Vec::with_capacity(plain.len());
        for item in plain {
            cleaned.push(match item {
                Value::Object(p) => Value::Object(merge_map(Map::new(), &p, elem)?),
                other => other,
            });
        }
        return Ok((cleaned, Vec::new()));
    }
    Ok((original, plain))
}

fn position_in(list: &[Value], item: &Value, merge_key: Option<&str>) -> Option<usize> {
    match merge_key {
        None => list.iter().position(|v| json_eq(v, item)),
        Some(k) => {
            let key = key_of(item, k)?;
            list.iter().position(|v| key_of(v, k).is_some_and(|x| json_eq(x, key)))
        }
    }
}

/// Orders a merged list as Kubernetes does: items named in `patch_order` follow that order,
/// the others keep the order of `server_order`, and the two are interleaved by `server_order`.
fn order_merged(merged: Vec<Value>, patch_order: &[Value], server_order: &[Value], merge_key: Option<&str>) -> Vec<Value> {
    let (mut from_patch, mut server_only): (Vec<Value>, Vec<Value>) =
        merged.into_iter().partition(|item| position_in(patch_order, item, merge_key).is_some());
    let sort_key = |order: &[Value], item: &Value| position_in(order, item, merge_key).unwrap_or(usize::MAX);
    from_patch.sort_by_key(|item| sort_key(patch_order, item));
    server_only.sort_by_key(|item| sort_key(server_order, item));
    let mut out = Vec::with_capacity(from_patch.len() + server_only.len());
    let (mut left, mut right) = (server_only.into_iter().peekable(), from_patch.into_iter().peekable());
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => match (position_in(server_order, l, merge_key), position_in(server_order, r, merge_key)) {
                (Some(li), Some(ri)) => li < ri,
                _ => false,
            },
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}

/// `$setElementOrder/<field>`: merge the field's list, then order it as the directive says.
fn set_element_order(original: &mut Map<String, Value>, patch: &Map<String, Value>, field: &str, order: &Value, node: Node) -> Result<()> {
    let order = order.as_array().ok_or_else(|| PatchError::malformed("invalid patch format of setElementOrder list"))?;
    let sem = node.field(field);
    let child = node.child(field);
    let orig = match original.get(field) {
        None => None,
        Some(Value::Array(a)) => Some(a.clone()),
        Some(_) => return Err(PatchError::unprocessable(format!("the value of {field:?} is not a list"))),
    };
    let patch_list = match patch.get(field) {
        None => None,
        Some(Value::Array(a)) => Some(a.as_slice()),
        Some(Value::Null) => None,
        Some(_) => return Err(PatchError::malformed(format!("the patch value of {field:?} is not a list"))),
    };
    let merge_key = sem.merge_key;
    if let Some(p) = patch_list {
        validate_order(p, order, merge_key)?;
    }
    let merged = match (orig.clone(), patch_list) {
        (None, None) => return Ok(()),
        (Some(o), None) => o,
        (None, Some(p)) if sem.merge => merge_list(Vec::new(), p, child, merge_key)?,
        (None, Some(p)) => p.to_vec(),
        (Some(o), Some(p)) if sem.merge => merge_list(o, p, child, merge_key)?,
        (Some(_), Some(p)) => p.to_vec(),
    };
    let objects = merged.iter().any(Value::is_object);
    if objects && merge_key.is_none() {
        original.insert(field.to_owned(), Value::Array(merged));
        return Ok(());
    }
    if objects && let Some(k) = merge_key {
        for item in merged.iter().chain(order.iter()) {
            if key_of(item, k).is_none() {
                return Err(no_merge_key(item, k));
            }
        }
    }
    let server_order = orig.unwrap_or_default();
    original.insert(field.to_owned(), Value::Array(order_merged(merged, order, &server_order, if objects { merge_key } else { None })));
    Ok(())
}

/// The patch list's items (deletions aside) must appear in the `$setElementOrder` list, in the same order.
fn validate_order(patch_list: &[Value], order: &[Value], merge_key: Option<&str>) -> Result<()> {
    let items: Vec<&Value> = patch_list.iter().filter(|v| v.get(DIRECTIVE).is_none()).collect();
    let (mut pi, mut oi) = (0, 0);
    while pi < items.len() && oi < order.len() {
        let equal = match merge_key {
            Some(k) if items[pi].is_object() => match (key_of(items[pi], k), key_of(&order[oi], k)) {
                (Some(a), Some(b)) => json_eq(a, b),
                (None, _) => return Err(no_merge_key(items[pi], k)),
                (_, None) => return Err(no_merge_key(&order[oi], k)),
            },
            _ => json_eq(items[pi], &order[oi]),
        };
        if equal {
            pi += 1;
        }
        oi += 1;
    }
    if pi < items.len() {
        return Err(PatchError::malformed(format!(
            "the order in patch list {} doesn't match $setElementOrder list {}",
            Value::Array(patch_list.to_vec()),
            Value::Array(order.to_vec())
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Node {
        Node::for_kind("apps", "v1", "Deployment").expect("deployment schema")
    }

    fn smp(doc: Value, patch: Value) -> Value {
        strategic_merge_patch(deployment(), &doc, &patch).expect("patch applies")
    }

    fn patch_demo() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "patch-demo"},
            "spec": {"replicas": 2, "template": {"spec": {
                "containers": [{"name": "patch-demo-ctr", "image": "nginx"}],
                "tolerations": [{"effect": "NoSchedule", "key": "dedicated", "value": "test-team"}]
            }}}
        })
    }

    #[test]
    fn containers_merge_by_name_as_in_the_kubectl_patch_docs() {
        let out =
            smp(patch_demo(), json!({"spec": {"template": {"spec": {"containers": [{"name": "patch-demo-ctr-2", "image": "redis"}]}}}}));
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "patch-demo-ctr-2", "image": "redis"}, {"name": "patch-demo-ctr", "image": "nginx"}])
        );
        assert_eq!(out["spec"]["replicas"], 2);
    }

    #[test]
    fn tolerations_have_no_merge_strategy_and_are_replaced() {
        let out = smp(
            patch_demo(),
            json!({"spec": {"template": {"spec": {"tolerations": [{"effect": "NoSchedule", "key": "disktype", "value": "ssd"}]}}}}),
        );
        assert_eq!(out["spec"]["template"]["spec"]["tolerations"], json!([{"effect": "NoSchedule", "key": "disktype", "value": "ssd"}]));
    }

    #[test]
    fn retain_keys_clears_the_fields_it_does_not_name() {
        let doc = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "30%"}}}});
        let out = smp(doc, json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}));
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        let err =
            strategic_merge_patch(deployment(), &json!({}), &json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}}));
        assert_eq!(err.err().map(|e| e.code()), Some(400));
    }

    #[test]
    fn patch_directives_delete_and_replace_list_items_and_maps() {
        let doc = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "1"}, {"name": "b", "image": "2"}, {"name": "c", "image": "3"}
        ]}}}});
        let out = smp(
            doc.clone(),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "$patch": "delete"}, {"name": "a", "image": "9"}]}}}}),
        );
        assert_eq!(out["spec"]["template"]["spec"]["containers"], json!([{"name": "a", "image": "9"}, {"name": "c", "image": "3"}]));
        let out =
            smp(doc.clone(), json!({"spec": {"template": {"spec": {"containers": [{"name": "z", "image": "0"}, {"$patch": "replace"}]}}}}));
        assert_eq!(out["spec"]["template"]["spec"]["containers"], json!([{"name": "z", "image": "0"}]));
        let out =
            smp(json!({"metadata": {"labels": {"a": "1", "b": "2"}}}), json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}}}));
        assert_eq!(out["metadata"]["labels"], json!({"c": "3"}));
        let out = smp(json!({"metadata": {"labels": {"a": "1"}}}), json!({"metadata": {"labels": {"$patch": "delete"}}}));
        assert_eq!(out["metadata"]["labels"], json!({}));
    }

    #[test]
    fn primitive_merge_lists_union_and_delete() {
        let doc = json!({"metadata": {"finalizers": ["a", "b"]}});
        assert_eq!(smp(doc.clone(), json!({"metadata": {"finalizers": ["c", "a"]}}))["metadata"]["finalizers"], json!(["c", "a", "b"]));
        assert_eq!(
            smp(doc.clone(), json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}))["metadata"]["finalizers"],
            json!(["b"])
        );
        let out = smp(
            doc,
            json!({"metadata": {"$setElementOrder/finalizers": ["c", "b"], "finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "b"]));
    }

    #[test]
    fn set_element_order_orders_merged_items() {
        let doc = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]}}}});
        let out = smp(
            doc,
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "b"}, {"name": "c"}, {"name": "a"}],
                "containers": [{"name": "c", "image": "3"}]
            }}}}),
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "b", "image": "2"}, {"name": "c", "image": "3"}, {"name": "a", "image": "1"}])
        );
    }

    #[test]
    fn ports_merge_by_container_port_and_nulls_delete() {
        let doc = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}], "env": [{"name": "A", "value": "1"}]}]}}}});
        let out = smp(
            doc,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": null, "ports": [{"containerPort": 443}], "env": [{"name": "A", "value": "2"}]}]}}}}),
        );
        let c = &out["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["ports"], json!([{"containerPort": 443}, {"containerPort": 80}]));
        assert_eq!(c["env"], json!([{"name": "A", "value": "2"}]));
        assert!(c.get("image").is_none());
    }

    #[test]
    fn new_values_are_copied_without_directives() {
        let out = smp(
            json!({}),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "$patch": "delete"}]}}}}),
        );
        assert_eq!(out["spec"]["template"]["spec"]["containers"], json!([{"name": "a", "image": "1"}]));
    }

    #[test]
    fn malformed_patches_and_lists_of_lists_are_refused() {
        let node = deployment();
        assert_eq!(strategic_merge_patch(node, &json!({}), &json!([1])).err().map(|e| e.code()), Some(400));
        let err = strategic_merge_patch(node, &json!({"metadata": {"finalizers": [["a"]]}}), &json!({"metadata": {"finalizers": [["b"]]}}));
        assert_eq!(err.err().map(|e| e.code()), Some(422));
        let err = strategic_merge_patch(node, &json!({}), &json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}));
        assert_eq!(err.err().map(|e| e.code()), Some(422));
    }
}
