//! Field paths and sets of them, as server-side apply tracks ownership, with the `FieldsV1`
//! encoding of `metadata.managedFields` (`f:<field>`, `k:{<keys>}`, `v:<value>`, `i:<index>`, `.`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    /// A field of a struct or a key of a map: `f:name`.
    Field(String),
    /// An item of an associative list, by its key fields: `k:{"name":"web"}` (canonical JSON, keys sorted).
    Key(String),
    /// An item of a set, by value: `v:"finalizer"` (canonical JSON).
    Value(String),
    /// An item of a list without keys, by index: `i:0`.
    Index(usize),
}

impl PathElement {
    /// The key element of an associative list item from its key fields (sorted by name).
    pub fn key(fields: &[(&str, &Value)]) -> Self {
        let mut sorted: Vec<&(&str, &Value)> = fields.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        let parts: Vec<String> = sorted.iter().map(|(k, v)| format!("{}:{}", Value::String((*k).to_owned()), canonical(v))).collect();
        Self::Key(format!("{{{}}}", parts.join(",")))
    }

    /// The value element of a set item.
    pub fn value(v: &Value) -> Self {
        Self::Value(canonical(v))
    }

    /// The `FieldsV1` key of this element.
    pub fn encode(&self) -> String {
        match self {
            Self::Field(f) => format!("f:{f}"),
            Self::Key(k) => format!("k:{k}"),
            Self::Value(v) => format!("v:{v}"),
            Self::Index(i) => format!("i:{i}"),
        }
    }

    /// Parses a `FieldsV1` key.
    pub fn decode(s: &str) -> Option<Self> {
        let (prefix, rest) = s.split_at_checked(2)?;
        match prefix {
            "f:" => Some(Self::Field(rest.to_owned())),
            "k:" => {
                let v: Value = serde_json::from_str(rest).ok()?;
                let obj = v.as_object()?;
                let fields: Vec<(&str, &Value)> = obj.iter().map(|(k, v)| (k.as_str(), v)).collect();
                Some(Self::key(&fields))
            }
            "v:" => serde_json::from_str::<Value>(rest).ok().map(|v| Self::value(&v)),
            "i:" => rest.parse().ok().map(Self::Index),
            _ => None,
        }
    }
}

impl fmt::Display for PathElement {
    /// As structured-merge-diff prints paths: `.name`, `[name="web"]`, `[="value"]`, `[0]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Field(name) => write!(f, ".{name}"),
            Self::Key(k) => {
                let parsed: Value = serde_json::from_str(k).unwrap_or(Value::Null);
                let parts: Vec<String> =
                    parsed.as_object().map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect()).unwrap_or_default();
                write!(f, "[{}]", parts.join(","))
            }
            Self::Value(v) => write!(f, "[={v}]"),
            Self::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// JSON with object keys sorted, so equal values give equal strings.
pub fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> =
                keys.iter().map(|k| format!("{}:{}", Value::String((*k).clone()), canonical(&m[k.as_str()]))).collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(canonical).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

/// A field path from the object root.
pub type Path = Vec<PathElement>;

/// Prints a path as structured-merge-diff does: `.spec.template.spec.containers[name="web"].image`.
pub fn path_string(path: &[PathElement]) -> String {
    path.iter().map(ToString::to_string).collect()
}

/// A set of field paths, stored as a tree: `members` are paths ending here, `children` go deeper.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    members: BTreeSet<PathElement>,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the set holds no path.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.values().all(FieldSet::is_empty)
    }

    /// Adds a path (the empty path is ignored).
    pub fn insert(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    /// Whether the set holds exactly this path.
    pub fn contains(&self, path: &[PathElement]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.contains(rest)),
        }
    }

    /// Whether the set holds a path strictly below this one.
    pub fn has_descendant(&self, path: &[PathElement]) -> bool {
        match path {
            [] => !self.is_empty(),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.has_descendant(rest)),
        }
    }

    /// Every path of the set, in order.
    pub fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Path, out: &mut Vec<Path>) {
        let mut keys: BTreeSet<&PathElement> = self.members.iter().collect();
        keys.extend(self.children.keys());
        for pe in keys {
            prefix.push(pe.clone());
            if self.members.contains(pe) {
                out.push(prefix.clone());
            }
            if let Some(child) = self.children.get(pe) {
                child.collect(prefix, out);
            }
            prefix.pop();
        }
    }

    /// The paths in either set.
    pub fn union(&self, other: &Self) -> Self {
        let mut out = self.clone();
        out.members.extend(other.members.iter().cloned());
        for (pe, child) in &other.children {
            let merged = match out.children.get(pe) {
                Some(mine) => mine.union(child),
                None => child.clone(),
            };
            out.children.insert(pe.clone(), merged);
        }
        out
    }

    /// The paths in both sets.
    pub fn intersection(&self, other: &Self) -> Self {
        let mut out = Self::new();
        out.members = self.members.intersection(&other.members).cloned().collect();
        for (pe, child) in &self.children {
            if let Some(theirs) = other.children.get(pe) {
                let both = child.intersection(theirs);
                if !both.is_empty() {
                    out.children.insert(pe.clone(), both);
                }
            }
        }
        out
    }

    /// The paths of `self` not in `other`.
    pub fn difference(&self, other: &Self) -> Self {
        let mut out = Self::new();
        out.members = self.members.difference(&other.members).cloned().collect();
        for (pe, child) in &self.children {
            let rest = match other.children.get(pe) {
                Some(theirs) => child.difference(theirs),
                None => child.clone(),
            };
            if !rest.is_empty() {
                out.children.insert(pe.clone(), rest);
            }
        }
        out
    }

    /// The set without any path that starts with `prefix` (the prefix itself included).
    pub fn without_prefix(&self, prefix: &[PathElement]) -> Self {
        let mut out = self.clone();
        out.remove_prefix(prefix);
        out
    }

    /// Removes, in place, every path that starts with `prefix` (the prefix itself included).
    pub fn remove_prefix(&mut self, prefix: &[PathElement]) {
        match prefix {
            [] => *self = Self::new(),
            [last] => {
                self.members.remove(last);
                self.children.remove(last);
            }
            [first, rest @ ..] => {
                if let Some(child) = self.children.get_mut(first) {
                    child.remove_prefix(rest);
                }
            }
        }
    }

    /// Removes, in place, exactly this path (its descendants stay).
    pub fn remove(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                self.members.remove(last);
            }
            [first, rest @ ..] => {
                if let Some(child) = self.children.get_mut(first) {
                    child.remove(rest);
                }
            }
        }
    }

    /// Keeps only the paths under `prefix` (the prefix itself included).
    pub fn only_prefix(&self, prefix: &[PathElement]) -> Self {
        let mut out = Self::new();
        let Some((last, parents)) = prefix.split_last() else {
            for p in self.paths() {
                out.insert(&p);
            }
            return out;
        };
        // Only the subtree under the prefix is visited (not every path of the set).
        let mut node = self;
        for pe in parents {
            match node.children.get(pe) {
                Some(child) => node = child,
                None => return out,
            }
        }
        if node.members.contains(last) {
            out.insert(prefix);
        }
        if let Some(child) = node.children.get(last) {
            let mut path = prefix.to_vec();
            for p in child.paths() {
                path.truncate(prefix.len());
                path.extend(p);
                out.insert(&path);
            }
        }
        out
    }

    /// The `FieldsV1` JSON of the set.
    pub fn to_fields_v1(&self) -> Value {
        let mut out = Map::new();
        for pe in &self.members {
            if self.children.get(pe).is_none_or(FieldSet::is_empty) {
                out.insert(pe.encode(), Value::Object(Map::new()));
            }
        }
        for (pe, child) in &self.children {
            if child.is_empty() {
                continue;
            }
            let mut inner = match child.to_fields_v1() {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            if self.members.contains(pe) {
                inner.insert(".".to_owned(), Value::Object(Map::new()));
            }
            out.insert(pe.encode(), Value::Object(inner));
        }
        Value::Object(out)
    }

    /// Parses `FieldsV1` JSON; `None` when it is not well formed.
    pub fn from_fields_v1(v: &Value) -> Option<Self> {
        let obj = v.as_object()?;
        let mut out = Self::new();
        for (k, child) in obj {
            if k == "." {
                continue;
            }
            let pe = PathElement::decode(k)?;
            let child_obj = child.as_object()?;
            if child_obj.is_empty() || child_obj.contains_key(".") {
                out.members.insert(pe.clone());
            }
            let sub = Self::from_fields_v1(child)?;
            if !sub.is_empty() {
                out.children.insert(pe, sub);
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(name: &str) -> PathElement {
        PathElement::Field(name.to_owned())
    }

    #[test]
    fn fields_v1_round_trips_with_dot_members() {
        let v = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}
            }}}}
        });
        let set = FieldSet::from_fields_v1(&v).expect("valid FieldsV1");
        assert!(set.contains(&[f("spec"), f("replicas")]));
        assert!(set.contains(&[f("metadata"), f("labels")]));
        assert!(!set.contains(&[f("spec")]));
        let web = PathElement::key(&[("name", &json!("web"))]);
        assert!(set.contains(&[f("spec"), f("template"), f("spec"), f("containers"), web.clone()]));
        assert_eq!(set.to_fields_v1(), v);
        assert_eq!(path_string(&[f("spec"), f("containers"), web, f("image")]), ".spec.containers[name=\"web\"].image");
    }

    #[test]
    fn keys_are_canonical_whatever_the_field_order() {
        let a = PathElement::key(&[("protocol", &json!("TCP")), ("containerPort", &json!(80))]);
        let b = PathElement::decode("k:{\"protocol\":\"TCP\",\"containerPort\":80}").expect("valid key");
        assert_eq!(a, b);
        assert_eq!(a.encode(), "k:{\"containerPort\":80,\"protocol\":\"TCP\"}");
        assert_eq!(a.to_string(), "[containerPort=80,protocol=\"TCP\"]");
        assert_eq!(PathElement::value(&json!("x")).encode(), "v:\"x\"");
    }

    #[test]
    fn set_algebra_works_on_trees() {
        let mut a = FieldSet::new();
        a.insert(&[f("a"), f("b")]);
        a.insert(&[f("a"), f("c")]);
        let mut b = FieldSet::new();
        b.insert(&[f("a"), f("c")]);
        b.insert(&[f("d")]);
        assert_eq!(a.intersection(&b).paths(), vec![vec![f("a"), f("c")]]);
        assert_eq!(a.difference(&b).paths(), vec![vec![f("a"), f("b")]]);
        assert_eq!(a.union(&b).paths().len(), 3);
        assert!(a.has_descendant(&[f("a")]));
        assert!(a.without_prefix(&[f("a")]).is_empty());
    }

    #[test]
    fn only_prefix_keeps_what_filtering_every_path_keeps() {
        let fields = serde_json::json!({
            "f:metadata": {"f:labels": {".": {}, "f:a": {}}},
            "f:status": {".": {}, "f:phase": {}, "f:conditions": {"k:{\"type\":\"Ready\"}": {".": {}, "f:status": {}}}},
            "f:spec": {"f:replicas": {}},
        });
        let set = FieldSet::from_fields_v1(&fields).expect("well formed");
        let by_filter = |prefix: &[PathElement]| {
            let mut out = FieldSet::new();
            for p in set.paths() {
                if p.starts_with(prefix) {
                    out.insert(&p);
                }
            }
            out
        };
        for prefix in [
            vec![],
            vec![f("status")],
            vec![f("status"), f("conditions")],
            vec![f("metadata"), f("labels"), f("a")],
            vec![f("missing")],
            vec![f("spec"), f("replicas")],
        ] {
            let fast = set.only_prefix(&prefix);
            assert_eq!(fast.to_fields_v1(), by_filter(&prefix).to_fields_v1(), "{prefix:?}");
            assert_eq!(fast.paths(), by_filter(&prefix).paths(), "{prefix:?}");
        }
    }
}
