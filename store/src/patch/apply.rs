//! Server-side apply (`application/apply-patch+yaml`) and `managedFields` tracking for ordinary
//! writes, after structured-merge-diff: the applied intent merges into the live object by the
//! kind's list types and map keys, each field manager owns the fields it set, a change to a field
//! another manager owns is a conflict unless forced, and fields a manager stops applying are
//! removed when no one else owns them.

use serde_json::{Map, Value};

use bosun_core::ApiResource;

use super::ApplyContext;
use super::error::{FieldConflict, PatchError, Result};
use super::fieldpath::{FieldSet, PathElement, path_string};
use super::managed::{APPLY, UPDATE};
pub use super::managed::{BEFORE_FIRST_APPLY, ManagedFieldsEntry, decode_managed_fields, encode_managed_fields, now_rfc3339};
use super::structured::{Pos, check_keys, diff_at, merge, remove_at, set_of};
pub use super::structured::{diff, field_set};

// ---------------------------------------------------------------------------------------------
// Scope: the fields managedFields tracks for a write

/// The field manager whose applies may take over what client-side apply set (kubectl's upgrade
/// from `kubectl apply` to `kubectl apply --server-side`).
const KUBECTL: &str = "kubectl";

/// The `kubectl.kubernetes.io/last-applied-configuration` annotation client-side apply keeps.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The fields of the object's last client-side applied configuration that still hold the
/// values it applied: kube-apiserver lets the `kubectl` manager take these over without a
/// conflict, so that switching to server-side apply needs no `--force-conflicts`.
fn last_applied_fields(live: &Value, root: Pos<'_>, resource: &ApiResource) -> FieldSet {
    let text = live.pointer("/metadata/annotations").and_then(|a| a.get(LAST_APPLIED_ANNOTATION)).and_then(Value::as_str);
    let Some(last) = text.and_then(|t| serde_json::from_str::<Value>(t).ok()).filter(Value::is_object) else { return FieldSet::new() };
    let (changed, removed) = diff_at(&last, live, root);
    scope(&set_of(&last, root).difference(&changed).difference(&removed), resource, None)
}

fn f(name: &str) -> PathElement {
    PathElement::Field(name.to_owned())
}

/// Drops the fields kube-apiserver never tracks, and those reset by the write's subresource.
fn scope(set: &FieldSet, resource: &ApiResource, subresource: Option<&str>) -> FieldSet {
    if subresource == Some("status") {
        // Only `status` stays: what the other rules drop lies outside it.
        return set.only_prefix(&[f("status")]);
    }
    let mut out = set.clone();
    for top in ["apiVersion", "kind"] {
        out.remove_prefix(&[f(top)]);
    }
    for meta in
        ["name", "namespace", "creationTimestamp", "selfLink", "uid", "clusterName", "generation", "managedFields", "resourceVersion"]
    {
        out.remove_prefix(&[f("metadata"), f(meta)]);
    }
    out.remove(&[f("metadata")]);
    match subresource {
        Some("status") => out.only_prefix(&[f("status")]),
        None if resource.has_subresource("status") => {
            out.remove_prefix(&[f("status")]);
            out
        }
        _ => out,
    }
}

/// The part of an applied configuration a write may change.
fn scoped_intent(applied: &Value, resource: &ApiResource, subresource: Option<&str>) -> Value {
    let mut v = applied.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    match subresource {
        Some("status") => {
            let mut out = Map::new();
            if let Some(s) = v.get("status") {
                out.insert("status".into(), s.clone());
            }
            Value::Object(out)
        }
        None if resource.has_subresource("status") => {
            if let Some(o) = v.as_object_mut() {
                o.remove("status");
            }
            v
        }
        _ => v,
    }
}

// ---------------------------------------------------------------------------------------------
// Apply and Update

/// Server-side apply of `applied` (the parsed `application/apply-patch+yaml` body) to `live`
/// (`Value::Null` when the object does not exist yet: apply creates it).
///
/// Needs `ctx.field_manager` (400 without). Fields the applier sets that another manager owns
/// with a different value are a [`PatchError::Conflict`] (409, one cause per field) unless
/// `ctx.force`, which takes them over. Fields this manager applied before but no longer does are
/// removed unless another manager owns them. The result carries the updated
/// `metadata.managedFields`.
pub fn server_side_apply(resource: &ApiResource, live: &Value, applied: &Value, ctx: &ApplyContext) -> Result<Value> {
    let manager = ctx
        .field_manager
        .as_deref()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| PatchError::malformed("fieldManager is required for apply requests"))?;
    let Some(applied_obj) = applied.as_object() else {
        return Err(PatchError::malformed("an apply configuration must be an object"));
    };
    let api_version = applied_obj.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let kind = applied_obj.get("kind").and_then(Value::as_str).unwrap_or_default();
    if api_version.is_empty() || kind.is_empty() {
        return Err(PatchError::malformed("apiVersion and kind must be set in an apply configuration"));
    }
    let sub = ctx.subresource.as_deref();
    if sub.is_none() && (api_version != resource.api_version() || kind != resource.kind) {
        return Err(PatchError::malformed(format!(
            "the apply configuration is {api_version}, Kind={kind}, but the resource is {}, Kind={}",
            resource.api_version(),
            resource.kind
        )));
    }
    let root = Pos::root(resource, ctx.schema.as_deref());
    let live_obj = if live.is_null() { Value::Object(Map::new()) } else { live.clone() };
    let mut managers = decode_managed_fields(&live_obj)?;
    if !live.is_null() && managers.is_empty() {
        managers.push(ManagedFieldsEntry {
            manager: BEFORE_FIRST_APPLY.into(),
            operation: UPDATE.into(),
            api_version: live_obj.get("apiVersion").and_then(Value::as_str).unwrap_or(api_version).to_owned(),
            time: None,
            subresource: None,
            fields: scope(&set_of(&live_obj, root), resource, None),
        });
    }

    let intent = scoped_intent(applied, resource, sub);
    check_keys(&intent, root, &mut Vec::new())?;
    let mut new_obj = merge(&live_obj, &intent, root);
    let new_set = scope(&set_of(&intent, root), resource, sub);
    let (changed, _) = diff_at(&live_obj, &new_obj, root);
    let changed = scope(&changed, resource, sub);

    let is_self = |e: &ManagedFieldsEntry| e.same_owner(manager, APPLY, api_version, sub);
    let mut conflicts = Vec::new();
    let mut clashes = Vec::with_capacity(managers.len());
    let mut clashing = FieldSet::new();
    for entry in &managers {
        let clash = if is_self(entry) { FieldSet::new() } else { entry.fields.intersection(&changed).intersection(&new_set) };
        for p in clash.paths() {
            conflicts.push(FieldConflict {
                manager: entry.manager.clone(),
                api_version: entry.api_version.clone(),
                operation: entry.operation.clone(),
                time: entry.time.clone(),
                subresource: entry.subresource.clone(),
                field: path_string(&p),
            });
        }
        clashing = clashing.union(&clash);
        clashes.push(clash);
    }
    let force = ctx.force
        || conflicts.is_empty()
        || (manager == KUBECTL && clashing.difference(&last_applied_fields(&live_obj, root, resource)).is_empty());
    if !force {
        return Err(PatchError::Conflict(conflicts));
    }
    for (entry, clash) in managers.iter_mut().zip(&clashes) {
        if !clash.is_empty() {
            entry.fields = entry.fields.difference(clash);
        }
    }

    let previous = managers.iter().find(|e| is_self(e)).map(|e| e.fields.clone()).unwrap_or_default();
    let others = managers.iter().filter(|e| !is_self(e)).fold(FieldSet::new(), |acc, e| acc.union(&e.fields));
    let stale = previous.difference(&new_set).difference(&others);
    for p in stale.paths() {
        if !others.has_descendant(&p) {
            remove_at(&mut new_obj, &p, root);
        }
    }

    let time = ctx.time.clone().unwrap_or_else(now_rfc3339);
    managers.retain(|e| !is_self(e));
    managers.push(ManagedFieldsEntry {
        manager: manager.to_owned(),
        operation: APPLY.into(),
        api_version: api_version.to_owned(),
        time: Some(time),
        subresource: sub.map(str::to_owned),
        fields: new_set,
    });
    encode_managed_fields(&mut new_obj, managers);
    Ok(new_obj)
}

/// Records an ordinary write (create, update, or a JSON, merge or strategic merge patch) in
/// `new`'s `metadata.managedFields` as an `Update` by `ctx.field_manager` (default `unknown`).
///
/// The writer takes the fields it added or changed from every other manager (no conflicts for
/// updates), and removed fields leave every manager's set. If the request itself changed
/// `metadata.managedFields` (as kubectl does when it migrates client-side apply to server-side
/// apply), those entries are the starting point instead of the old object's; `[{}]` resets them.
/// `old` is `None` on create.
pub fn record_update(resource: &ApiResource, old: Option<&Value>, new: &mut Value, ctx: &ApplyContext) -> Result<()> {
    let manager = ctx.field_manager.clone().filter(|m| !m.is_empty()).unwrap_or_else(|| "unknown".into());
    let sub = ctx.subresource.as_deref();
    let old_mf = old.and_then(|o| o.pointer("/metadata/managedFields"));
    let new_mf = new.pointer("/metadata/managedFields");
    let requested = match new_mf {
        Some(Value::Array(a)) if a.is_empty() => false,
        Some(mf) => old_mf != Some(mf),
        None => false,
    };
    let mut managers =
        if requested { decode_managed_fields(new)? } else { old.map(decode_managed_fields).transpose()?.unwrap_or_default() };
    let root = Pos::root(resource, ctx.schema.as_deref());
    let empty = Value::Object(Map::new());
    let (changed, removed) = diff_at(old.unwrap_or(&empty), new, root);
    let (changed, removed) = (scope(&changed, resource, sub), scope(&removed, resource, sub));
    let api_version = new.get("apiVersion").and_then(Value::as_str).map_or_else(|| resource.api_version(), str::to_owned);
    for entry in &mut managers {
        if !removed.is_empty() {
            entry.fields = entry.fields.difference(&removed);
        }
        if !changed.is_empty() && !entry.same_owner(&manager, UPDATE, &api_version, sub) {
            entry.fields = entry.fields.difference(&changed);
        }
    }
    if !changed.is_empty() {
        let time = ctx.time.clone().unwrap_or_else(now_rfc3339);
        match managers.iter_mut().find(|e| e.same_owner(&manager, UPDATE, &api_version, sub)) {
            Some(entry) => {
                entry.fields = entry.fields.union(&changed);
                entry.time = Some(time);
            }
            None => managers.push(ManagedFieldsEntry {
                manager,
                operation: UPDATE.into(),
                api_version,
                time: Some(time),
                subresource: sub.map(str::to_owned),
                fields: changed,
            }),
        }
    }
    encode_managed_fields(new, managers);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn configmaps() -> ApiResource {
        bosun_core::resource::builtin("", "v1", "ConfigMap").cloned().expect("configmaps are built in")
    }

    #[test]
    fn the_server_side_apply_docs_example_gives_the_documented_managed_fields() {
        let intent = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "test-cm", "namespace": "default", "labels": {"test-label": "test"}},
            "data": {"key": "some value"}
        });
        let ctx = ApplyContext::new("kubectl").time("2010-10-10T00:00:00Z");
        let obj = server_side_apply(&configmaps(), &Value::Null, &intent, &ctx).expect("apply");
        assert_eq!(
            obj["metadata"]["managedFields"],
            json!([{
                "manager": "kubectl", "operation": "Apply", "apiVersion": "v1", "time": "2010-10-10T00:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {"f:test-label": {}}}, "f:data": {"f:key": {}}}
            }])
        );
    }

    #[test]
    fn timestamps_are_rfc_3339_seconds_in_utc() {
        let now = now_rfc3339();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.ends_with('Z') && now.as_bytes()[10] == b'T', "{now}");
        assert!(now.as_str() > "2024-01-01T00:00:00Z");
    }
}
