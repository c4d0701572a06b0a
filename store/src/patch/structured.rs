//! Structured merge over a kind's schema, after structured-merge-diff: the fields a value sets,
//! what changed between two values, and how an applied intent merges into a live object
//! (associative lists by key, sets by value, atomic values whole).

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use bosun_core::ApiResource;

use super::error::{PatchError, Result};
use super::fieldpath::{FieldSet, Path, PathElement, path_string};
use super::json_patch::json_eq;
use super::schema::{FieldSemantics, ListType, Node};

// ---------------------------------------------------------------------------------------------
// Schema positions

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListKind {
    Atomic,
    Set,
    Map(Vec<String>),
}

/// Where a value sits in its kind's schema: a built-in kind's table node with the semantics of
/// the field holding the value, or a custom resource's structural schema (`None`: no schema,
/// so maps are granular and lists atomic).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pos<'s> {
    Builtin(Node, FieldSemantics),
    Custom(Option<&'s Value>),
    /// The root of a custom resource: as [`Pos::Custom`], except that its `metadata` is the
    /// built-in `ObjectMeta` (finalizers a set, owner references keyed by uid), as
    /// kube-apiserver types a custom resource's metadata whatever its schema says.
    CustomRoot(Option<&'s Value>),
}

impl<'s> Pos<'s> {
    pub(crate) fn root(resource: &ApiResource, schema: Option<&'s Value>) -> Self {
        match Node::for_kind(&resource.group, &resource.version, &resource.kind) {
            Some(node) => Self::Builtin(node, FieldSemantics::default_for_root()),
            None => Self::CustomRoot(schema),
        }
    }

    /// The position of the member `key` of an object here.
    fn child(self, key: &str) -> Self {
        match self {
            Self::CustomRoot(_) if key == "metadata" => match Node::for_kind("", "v1", "ConfigMap") {
                Some(node) => Self::Builtin(node.child("metadata"), node.field("metadata")),
                None => Self::Custom(None),
            },
            Self::CustomRoot(s) => Self::Custom(s).child(key),
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
            Self::CustomRoot(s) => Self::Custom(s).item(),
            Self::Builtin(node, _) => Self::Builtin(node, FieldSemantics::default_for_root()),
            Self::Custom(s) => Self::Custom(s.and_then(|s| s.get("items"))),
        }
    }

    fn list_kind(self) -> ListKind {
        match self {
            Self::CustomRoot(s) => Self::Custom(s).list_kind(),
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
            Self::CustomRoot(s) => Self::Custom(s).atomic_object(),
            Self::Custom(s) => s.and_then(|s| s.get("x-kubernetes-map-type")).and_then(Value::as_str) == Some("atomic"),
        }
    }

    /// Whether the keys of an object here are map entries rather than declared struct fields.
    fn is_map(self) -> bool {
        match self {
            Self::Builtin(node, _) => node.is_map(),
            Self::CustomRoot(s) => Self::Custom(s).is_map(),
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

/// The fields a value sets, from its schema position.
pub(crate) fn set_of(value: &Value, root: Pos<'_>) -> FieldSet {
    let mut out = FieldSet::new();
    walk(value, root, &mut Vec::new(), &mut out);
    out
}

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

pub(crate) fn diff_at(old: &Value, new: &Value, root: Pos<'_>) -> (FieldSet, FieldSet) {
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
pub(crate) fn check_keys(v: &Value, pos: Pos<'_>, path: &mut Path) -> Result<()> {
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
pub(crate) fn merge(live: &Value, applied: &Value, pos: Pos<'_>) -> Value {
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
pub(crate) fn merge_lists(lhs: &[Value], rhs: &[Value], kind: &ListKind, item: Pos<'_>) -> Vec<Value> {
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
pub(crate) fn remove_at(v: &mut Value, path: &[PathElement], pos: Pos<'_>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
