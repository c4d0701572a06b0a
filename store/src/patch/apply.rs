//! Server-side apply (`application/apply-patch+yaml`) and `managedFields` tracking for ordinary
//! writes, after structured-merge-diff: the applied intent merges into the live object by the
//! kind's list types and map keys, each field manager owns the fields it set, a change to a field
//! another manager owns is a conflict unless forced, and fields a manager stops applying are
//! removed when no one else owns them.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use bosun_core::ApiResource;

use super::ApplyContext;
use super::error::{FieldConflict, PatchError, Result};
use super::fieldpath::{FieldSet, Path, PathElement, canonical, path_string};
use super::json_patch::json_eq;
use super::schema::{FieldSemantics, ListType, Node};

/// The manager Kubernetes credits with the fields of an object that had no `managedFields`
/// when it was first applied to.
pub const BEFORE_FIRST_APPLY: &str = "before-first-apply";

const APPLY: &str = "Apply";
const UPDATE: &str = "Update";

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedFieldsEntry {
    /// The field manager.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// The `apiVersion` the manager wrote with.
    pub api_version: String,
    /// When the manager last changed its fields (RFC 3339).
    pub time: Option<String>,
    /// The subresource written through, if any.
    pub subresource: Option<String>,
    /// The fields the manager owns.
    pub fields: FieldSet,
}

impl ManagedFieldsEntry {
    fn same_owner(&self, manager: &str, operation: &str, api_version: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
            && (operation == APPLY || self.api_version == api_version)
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), Value::String(self.manager.clone()));
        m.insert("operation".into(), Value::String(self.operation.clone()));
        m.insert("apiVersion".into(), Value::String(self.api_version.clone()));
        if let Some(t) = &self.time {
            m.insert("time".into(), Value::String(t.clone()));
        }
        m.insert("fieldsType".into(), Value::String("FieldsV1".into()));
        m.insert("fieldsV1".into(), self.fields.to_fields_v1());
        if let Some(s) = &self.subresource {
            m.insert("subresource".into(), Value::String(s.clone()));
        }
        Value::Object(m)
    }

    fn from_json(v: &Value) -> Option<Self> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        if v.get("fieldsType").and_then(Value::as_str).is_some_and(|t| t != "FieldsV1") {
            return None;
        }
        Some(Self {
            manager: s("manager")?,
            operation: s("operation")?,
            api_version: s("apiVersion").unwrap_or_default(),
            time: s("time"),
            subresource: s("subresource").filter(|s| !s.is_empty()),
            fields: FieldSet::from_fields_v1(v.get("fieldsV1").unwrap_or(&Value::Object(Map::new())))?,
        })
    }
}

/// Reads `metadata.managedFields`; `Err` when an entry is not well formed.
pub fn decode_managed_fields(obj: &Value) -> Result<Vec<ManagedFieldsEntry>> {
    let Some(list) = obj.pointer("/metadata/managedFields") else { return Ok(Vec::new()) };
    let Some(items) = list.as_array() else {
        return Err(PatchError::malformed("metadata.managedFields must be a list"));
    };
    let mut out = Vec::new();
    for item in items {
        // `[{}]` is how a client resets managed fields: entries without a manager are dropped.
        if item.as_object().is_some_and(Map::is_empty) {
            continue;
        }
        out.push(
            ManagedFieldsEntry::from_json(item)
                .ok_or_else(|| PatchError::malformed(format!("invalid metadata.managedFields entry: {item}")))?,
        );
    }
    Ok(out)
}

/// Writes entries into `metadata.managedFields`, sorted as kube-apiserver sorts them; no entry removes the field.
pub fn encode_managed_fields(obj: &mut Value, mut entries: Vec<ManagedFieldsEntry>) {
    entries.retain(|e| !e.fields.is_empty());
    entries.sort_by(|p, q| {
        (
            p.operation.as_str(),
            p.time.as_deref().unwrap_or(""),
            p.manager.as_str(),
            p.api_version.as_str(),
            p.subresource.as_deref().unwrap_or(""),
        )
            .cmp(&(
                q.operation.as_str(),
                q.time.as_deref().unwrap_or(""),
                q.manager.as_str(),
                q.api_version.as_str(),
                q.subresource.as_deref().unwrap_or(""),
            ))
    });
    let Some(meta) = obj.as_object_mut().map(|o| o.entry("metadata").or_insert_with(|| Value::Object(Map::new()))) else { return };
    let Some(meta) = meta.as_object_mut() else { return };
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(entries.iter().map(ManagedFieldsEntry::to_json).collect()));
    }
}

// ---------------------------------------------------------------------------------------------
// Schema positions

#[derive(Debug, Clone, PartialEq, Eq)]
enum ListKind {
    Atomic,
    Set,
    Map(Vec<String>),
}

/// Where a value sits in its kind's schema: a built-in kind's table node with the semantics of
/// the field holding the value, or a custom resource's structural schema (`None`: no schema,
/// so maps are granular and lists atomic).
#[derive(Debug, Clone, Copy)]
enum Pos<'s> {
    Builtin(Node, FieldSemantics),
    Custom(Option<&'s Value>),
}

impl<'s> Pos<'s> {
    fn root(resource: &ApiResource, schema: Option<&'s Value>) -> Self {
        match Node::for_kind(&resource.group, &resource.version, &resource.kind) {
            Some(node) => Self::Builtin(node, FieldSemantics::default_for_root()),
            None => Self::Custom(schema),
        }
    }

    /// The position of the member `key` of an object here.
    fn child(self, key: &str) -> Self {
        match self {
            Self::Builtin(node, _) => Self::Builtin(node.child(key), node.field(key)),
            Self::Custom(None) => Self::Custom(None),
            Self::Custom(Some(s)) => Self::Custom(
                s.get("properties").and_then(|p| p.get(key)).or_else(|| s.get("additionalProperties").filter(|a| a.is_object())),
            ),
        }
    }

    /// The position of the items of a list here.
    fn item(self) -> Self {
        match self {
            Self::Builtin(node, _) => Self::Builtin(node, FieldSemantics::default_for_root()),
            Self::Custom(s) => Self::Custom(s.and_then(|s| s.get("items"))),
        }
    }

    fn list_kind(self) -> ListKind {
        match self {
            Self::Builtin(node, sem) => {
                if node == Node::Deduced {
                    return ListKind::Atomic;
                }
                match sem.list_type {
                    ListType::Map if !sem.map_keys.is_empty() => ListKind::Map(sem.map_keys.iter().map(|k| (*k).to_owned()).collect()),
                    ListType::Set => ListKind::Set,
                    ListType::Atomic | ListType::Map => ListKind::Atomic,
                    ListType::Unspecified if sem.merge => sem.merge_key.map_or(ListKind::Set, |k| ListKind::Map(vec![k.to_owned()])),
                    ListType::Unspecified => ListKind::Atomic,
                }
            }
            Self::Custom(None) => ListKind::Atomic,
            Self::Custom(Some(s)) => match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
                Some("set") => ListKind::Set,
                Some("map") => {
                    let keys: Vec<String> = s
                        .get("x-kubernetes-list-map-keys")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect();
                    if keys.is_empty() { ListKind::Atomic } else { ListKind::Map(keys) }
                }
                _ => ListKind::Atomic,
            },
        }
    }

    /// Whether an object here is replaced and owned whole.
    fn atomic_object(self) -> bool {
        match self {
            Self::Builtin(node, sem) => sem.atomic || node.is_atomic(),
            Self::Custom(s) => s.and_then(|s| s.get("x-kubernetes-map-type")).and_then(Value::as_str) == Some("atomic"),
        }
    }

    /// Whether the keys of an object here are map entries rather than declared struct fields.
    fn is_map(self) -> bool {
        match self {
            Self::Builtin(node, _) => node.is_map(),
            Self::Custom(None) => true,
            Self::Custom(Some(s)) => s.get("properties").is_none(),
        }
    }
}

/// The path element of an associative list item; key fields that are absent take their
/// Kubernetes default (`protocol: TCP`) so that an applied port matches the defaulted live one.
fn item_key(item: &Value, keys: &[String], index: usize) -> PathElement {
    let Some(obj) = item.as_object() else { return PathElement::Index(index) };
    let tcp = Value::String("TCP".into());
    let fields: Vec<(&str, &Value)> = keys
        .iter()
        .filter_map(|k| match obj.get(k) {
            Some(v) if !v.is_null() => Some((k.as_str(), v)),
            _ if k == "protocol" => Some((k.as_str(), &tcp)),
            _ => None,
        })
        .collect();
    if fields.is_empty() { PathElement::Index(index) } else { PathElement::key(&fields) }
}

/// Position of each element (the first, for duplicates).
fn index_of(elements: &[PathElement]) -> HashMap<&PathElement, usize> {
    let mut out = HashMap::with_capacity(elements.len());
    for (i, pe) in elements.iter().enumerate() {
        out.entry(pe).or_insert(i);
    }
    out
}

fn item_elements(items: &[Value], kind: &ListKind) -> Vec<PathElement> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match kind {
            ListKind::Map(keys) => item_key(item, keys, i),
            ListKind::Set => PathElement::value(item),
            ListKind::Atomic => PathElement::Index(i),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Field sets

/// The fields a value of a built-in kind sets, by structured-merge-diff's rules: leaves, list
/// items, map entries, atomic values, empty or null struct fields.
pub fn field_set(value: &Value, root: Node) -> FieldSet {
    let mut out = FieldSet::new();
    walk(value, Pos::Builtin(root, FieldSemantics::default_for_root()), &mut Vec::new(), &mut out);
    out
}

fn walk(v: &Value, pos: Pos<'_>, path: &mut Path, out: &mut FieldSet) {
    match v {
        Value::Object(m) => {
            if pos.atomic_object() {
                out.insert(path);
                return;
            }
            for (k, cv) in m {
                path.push(PathElement::Field(k.clone()));
                walk(cv, pos.child(k), path, out);
                if cv.is_null() || cv.as_object().is_some_and(Map::is_empty) || pos.is_map() {
                    out.insert(path);
                }
                path.pop();
            }
        }
        Value::Array(items) => {
            let kind = pos.list_kind();
            if kind == ListKind::Atomic {
                out.insert(path);
                return;
            }
            for (pe, item) in item_elements(items, &kind).into_iter().zip(items) {
                path.push(pe);
                if matches!(kind, ListKind::Map(_)) {
                    walk(item, pos.item(), path, out);
                }
                out.insert(path);
                path.pop();
            }
        }
        _ => out.insert(path),
    }
}

/// What changed from `old` to `new` in a built-in kind: (added or modified fields, removed fields).
pub fn diff(old: &Value, new: &Value, root: Node) -> (FieldSet, FieldSet) {
    diff_at(old, new, Pos::Builtin(root, FieldSemantics::default_for_root()))
}

fn diff_at(old: &Value, new: &Value, root: Pos<'_>) -> (FieldSet, FieldSet) {
    let (mut changed, mut removed) = (FieldSet::new(), FieldSet::new());
    diff_walk(old, new, root, &mut Vec::new(), &mut changed, &mut removed);
    (changed, removed)
}

fn diff_walk(old: &Value, new: &Value, pos: Pos<'_>, path: &mut Path, changed: &mut FieldSet, removed: &mut FieldSet) {
    // Most of an update leaves most subtrees alone: equal values have nothing to report.
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(o), Value::Object(n)) if !pos.atomic_object() => {
            for (k, nv) in n {
                path.push(PathElement::Field(k.clone()));
                let child = pos.child(k);
                match o.get(k) {
                    Some(ov) => diff_walk(ov, nv, child, path, changed, removed),
                    None => {
                        walk(nv, child, path, changed);
                        if nv.is_null() || nv.as_object().is_some_and(Map::is_empty) || pos.is_map() || (nv.is_object() && child.is_map()) {
                            changed.insert(path);
                        }
                    }
                }
                path.pop();
            }
            for (k, ov) in o {
                if n.contains_key(k) {
                    continue;
                }
                path.push(PathElement::Field(k.clone()));
                walk(ov, pos.child(k), path, removed);
                removed.insert(path);
                path.pop();
            }
        }
        (Value::Array(o), Value::Array(n)) if pos.list_kind() != ListKind::Atomic => {
            let kind = pos.list_kind();
            let keyed = matches!(kind, ListKind::Map(_));
            let (ope, npe) = (item_elements(o, &kind), item_elements(n, &kind));
            let (old_index, new_index) = (index_of(&ope), index_of(&npe));
            for (pe, item) in npe.iter().zip(n) {
                path.push(pe.clone());
                match old_index.get(pe).copied() {
                    Some(i) if keyed => diff_walk(&o[i], item, pos.item(), path, changed, removed),
                    Some(_) => {}
                    None => {
                        if keyed {
                            walk(item, pos.item(), path, changed);
                        }
                        changed.insert(path);
                    }
                }
                path.pop();
            }
            for (pe, item) in ope.iter().zip(o) {
                if new_index.contains_key(pe) {
                    continue;
                }
                path.push(pe.clone());
                if keyed {
                    walk(item, pos.item(), path, removed);
                }
                removed.insert(path);
                path.pop();
            }
        }
        _ => {
            if !json_eq(old, new) {
                changed.insert(path);
            }
        }
    }
}

/// Refuses an applied configuration whose associative list items lack a key field (only
/// `protocol` has a default), as structured-merge-diff does.
fn check_keys(v: &Value, pos: Pos<'_>, path: &mut Path) -> Result<()> {
    match v {
        Value::Object(m) if !pos.atomic_object() => {
            for (k, cv) in m {
                path.push(PathElement::Field(k.clone()));
                check_keys(cv, pos.child(k), path)?;
                path.pop();
            }
        }
        Value::Array(items) => {
            if let ListKind::Map(keys) = pos.list_kind() {
                for (i, item) in items.iter().enumerate() {
                    let missing = keys.iter().find(|k| *k != "protocol" && item.get(k.as_str()).is_none_or(Value::is_null));
                    if let Some(k) = missing {
                        return Err(PatchError::unprocessable(format!(
                            "{}: element {i}: associative list with keys has an element that omits key field {k:?} (and doesn't have default value)",
                            path_string(path)
                        )));
                    }
                    check_keys(item, pos.item(), path)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Merging the applied intent

fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), strip_nulls(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// Merges the applied configuration into the live object (structured merge: associative lists
/// by key, sets by value, atomic values replaced).
fn merge(live: &Value, applied: &Value, pos: Pos<'_>) -> Value {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) if !pos.atomic_object() => {
            let mut out = l.clone();
            for (k, av) in a {
                if av.is_null() {
                    out.remove(k);
                    continue;
                }
                let merged = match l.get(k) {
                    Some(lv) => merge(lv, av, pos.child(k)),
                    None => strip_nulls(av),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(a)) if pos.list_kind() != ListKind::Atomic => {
            Value::Array(merge_lists(l, a, &pos.list_kind(), pos.item()))
        }
        _ => strip_nulls(applied),
    }
}

/// Interleaves live and applied items as structured-merge-diff does: applied items in their
/// order, live-only items kept where they were relative to the shared ones.
fn merge_lists(lhs: &[Value], rhs: &[Value], kind: &ListKind, item: Pos<'_>) -> Vec<Value> {
    let (lpe, rpe) = (item_elements(lhs, kind), item_elements(rhs, kind));
    let (lhs_index, rhs_index) = (index_of(&lpe), index_of(&rpe));
    let in_rhs = |pe: &PathElement| rhs_index.contains_key(pe);
    let lhs_item = |pe: &PathElement| lhs_index.get(pe).map(|&i| &lhs[i]);
    let merge_item = |pe: &PathElement, r: &Value| match (kind, lhs_item(pe)) {
        (ListKind::Map(_), Some(l)) => merge(l, r, item),
        _ => strip_nulls(r),
    };
    let mut shared: std::collections::VecDeque<&PathElement> = rpe.iter().filter(|pe| lhs_index.contains_key(pe)).collect();
    let mut merged_rhs: HashSet<&PathElement> = HashSet::new();
    let mut out = Vec::with_capacity(lhs.len() + rhs.len());
    let (mut li, mut ri) = (0, 0);
    while li < lhs.len() || ri < rhs.len() {
        if li < lhs.len() && ri < rhs.len() {
            if lpe[li] == rpe[ri] {
                out.push(merge_item(&rpe[ri], &rhs[ri]));
                merged_rhs.insert(&rpe[ri]);
                li += 1;
                ri += 1;
                shared.pop_front();
                continue;
            }
            if in_rhs(&lpe[li]) && shared.front().is_some_and(|s| **s != lpe[li]) && !merged_rhs.contains(&lpe[li]) {
                li += 1;
                continue;
            }
        }
        if li < lhs.len() {
            if !in_rhs(&lpe[li]) {
                out.push(lhs[li].clone());
                li += 1;
                continue;
            }
            if merged_rhs.contains(&lpe[li]) {
                li += 1;
                continue;
            }
        }
        if ri < rhs.len() {
            let pe = &rpe[ri];
            out.push(merge_item(pe, &rhs[ri]));
            merged_rhs.insert(pe);
            if shared.front().is_some_and(|s| *s == pe) {
                shared.pop_front();
            }
            ri += 1;
        } else {
            li += 1;
        }
    }
    out
}

/// Removes the value at `path` (no-op when absent).
fn remove_at(v: &mut Value, path: &[PathElement], pos: Pos<'_>) {
    let Some((first, rest)) = path.split_first() else { return };
    match (v, first) {
        (Value::Object(m), PathElement::Field(k)) => {
            if rest.is_empty() {
                m.remove(k);
            } else if let Some(child) = m.get_mut(k) {
                remove_at(child, rest, pos.child(k));
            }
        }
        (Value::Array(items), pe) => {
            let kind = pos.list_kind();
            let Some(i) = item_elements(items, &kind).iter().position(|x| x == pe) else { return };
            if rest.is_empty() {
                items.remove(i);
            } else {
                remove_at(&mut items[i], rest, pos.item());
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Scope: the fields managedFields tracks for a write

fn f(name: &str) -> PathElement {
    PathElement::Field(name.to_owned())
}

/// Drops the fields kube-apiserver never tracks, and those reset by the write's subresource.
fn scope(set: &FieldSet, resource: &ApiResource, subresource: Option<&str>) -> FieldSet {
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

fn set_of(value: &Value, root: Pos<'_>) -> FieldSet {
    let mut out = FieldSet::new();
    walk(value, root, &mut Vec::new(), &mut out);
    out
}

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
    for entry in managers.iter_mut().filter(|e| !is_self(e)) {
        let clash = entry.fields.intersection(&changed).intersection(&new_set);
        if clash.is_empty() {
            continue;
        }
        for p in clash.paths() {
            conflicts.push(FieldConflict {
                manager: entry.manager.clone(),
                api_version: entry.api_version.clone(),
                field: path_string(&p),
            });
        }
        if ctx.force {
            entry.fields = entry.fields.difference(&clash);
        }
    }
    if !conflicts.is_empty() && !ctx.force {
        return Err(PatchError::Conflict(conflicts));
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

/// The current UTC time as RFC 3339 with second precision, as `metav1.Time` serializes.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let secs = i64::try_from(secs).unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// For tests and callers: the canonical text of a value, as used in set keys.
pub fn canonical_json(v: &Value) -> String {
    canonical(v)
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
    fn associative_lists_keep_live_only_items_in_place() {
        let kind = ListKind::Map(vec!["name".to_owned()]);
        let items = |names: &[&str]| names.iter().map(|n| json!({"name": n})).collect::<Vec<_>>();
        let node = Pos::Builtin(Node::Struct(None), FieldSemantics::default_for_root());
        let merged = merge_lists(&items(&["a", "x", "b", "c"]), &items(&["c", "b", "d"]), &kind, node);
        let names: Vec<&str> = merged.iter().filter_map(|v| v["name"].as_str()).collect();
        assert_eq!(names, vec!["a", "x", "c", "b", "d"]);
        let merged = merge_lists(&items(&["a", "b"]), &items(&["b", "a"]), &kind, node);
        let names: Vec<&str> = merged.iter().filter_map(|v| v["name"].as_str()).collect();
        assert_eq!(names, vec!["b", "a"]);
    }

    #[test]
    fn timestamps_are_rfc_3339_seconds_in_utc() {
        let now = now_rfc3339();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.ends_with('Z') && now.as_bytes()[10] == b'T', "{now}");
        assert!(now.as_str() > "2024-01-01T00:00:00Z");
    }
}
