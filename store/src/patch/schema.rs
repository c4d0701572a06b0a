//! What Kubernetes' schema says about each field of a built-in kind: patch strategy and merge key
//! (strategic merge patch), list type and map keys, atomic maps (server-side apply).
//!
//! The facts live in a table (`schema_table.rs`) generated from the OpenAPI extensions
//! (`x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`, `x-kubernetes-list-type`,
//! `x-kubernetes-list-map-keys`, `x-kubernetes-map-type`) that kube-apiserver derives from its Go
//! struct tags. Fields the table does not name have the default semantics: maps merge key by
//! key, lists are atomic.

use super::schema_table::{KINDS, TYPES};

/// Strategy bit: `patchStrategy:"merge"`.
pub(crate) const MERGE: u8 = 1;
/// Strategy bit: `patchStrategy:"retainKeys"`.
pub(crate) const RETAIN_KEYS: u8 = 2;
/// Strategy bit: `patchStrategy:"replace"`.
pub(crate) const REPLACE: u8 = 4;

/// The JSON shape of a field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// A string, number or boolean (the generator emits none today: scalars have default semantics).
    #[allow(dead_code)]
    Scalar,
    /// An object with declared fields.
    Struct,
    /// An array.
    List,
    /// An object with arbitrary keys (`additionalProperties`).
    Map,
}

/// `x-kubernetes-list-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListType {
    /// Not declared: atomic for server-side apply.
    Unspecified,
    /// Replaced whole.
    Atomic,
    /// A set of scalars, merged by value.
    Set,
    /// A list of objects identified by the map keys.
    Map,
}

/// One field of a generated type.
#[derive(Debug)]
pub(crate) struct Field {
    pub(crate) name: &'static str,
    pub(crate) shape: Shape,
    pub(crate) elem: Option<usize>,
    pub(crate) strategy: u8,
    pub(crate) merge_key: Option<&'static str>,
    pub(crate) list_type: ListType,
    pub(crate) map_keys: &'static [&'static str],
    pub(crate) atomic: bool,
}

/// One generated type; fields sorted by name.
#[derive(Debug)]
pub(crate) struct TypeDef {
    pub(crate) name: &'static str,
    pub(crate) atomic: bool,
    pub(crate) fields: &'static [Field],
}

/// A position in a kind's schema: the type of the value found there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Node {
    /// No schema (custom resources): every object is a map, every list atomic.
    #[default]
    Deduced,
    /// A struct of a built-in kind: a table index, or `None` for a struct with default
    /// semantics all the way down.
    Struct(Option<usize>),
    /// An object with arbitrary keys (`additionalProperties`): the values' struct type, and
    /// whether the map is atomic.
    MapOf(Option<usize>, bool),
}

/// What the schema says about one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSemantics {
    /// Strategic merge patch merges this list (`patchStrategy:"merge"`).
    pub merge: bool,
    /// Strategic merge patch replaces this object whole (`patchStrategy:"replace"`).
    pub replace: bool,
    /// The object (or list items) carry `patchStrategy:"retainKeys"`.
    pub retain_keys: bool,
    /// `patchMergeKey`: the field identifying items of a merged list of objects.
    pub merge_key: Option<&'static str>,
    /// `x-kubernetes-list-type`.
    pub list_type: ListType,
    /// `x-kubernetes-list-map-keys`.
    pub map_keys: &'static [&'static str],
    /// The value (an object) is atomic for server-side apply.
    pub atomic: bool,
}

impl FieldSemantics {
    /// The semantics of a field the schema says nothing about (and of the object root).
    pub const fn default_for_root() -> Self {
        Self::DEFAULT
    }

    const DEFAULT: Self = Self {
        merge: false,
        replace: false,
        retain_keys: false,
        merge_key: None,
        list_type: ListType::Unspecified,
        map_keys: &[],
        atomic: false,
    };
}

impl Node {
    /// The root node of a kind, or `None` when the kind is not a built-in one (no strategic merge patch).
    pub fn for_kind(group: &str, version: &str, kind: &str) -> Option<Self> {
        KINDS.iter().find(|(g, v, k, _)| *g == group && *v == version && *k == kind).map(|(_, _, _, root)| Self::Struct(*root))
    }

    /// The schema node at a dotted path of a kind (list items are crossed implicitly:
    /// `spec.template.spec.containers.ports`), for inspection and tests.
    pub fn at_path(group: &str, version: &str, kind: &str, path: &str) -> Option<(Self, FieldSemantics)> {
        let mut node = Self::for_kind(group, version, kind)?;
        let mut sem = FieldSemantics::DEFAULT;
        for part in path.split('.').filter(|p| !p.is_empty()) {
            sem = node.field(part);
            node = node.child(part);
        }
        Some((node, sem))
    }

    fn def(self) -> Option<&'static TypeDef> {
        match self {
            Self::Struct(Some(i)) => TYPES.get(i),
            _ => None,
        }
    }

    fn raw_field(self, name: &str) -> Option<&'static Field> {
        let def = self.def()?;
        def.fields.binary_search_by(|f| f.name.cmp(name)).ok().map(|i| &def.fields[i])
    }

    /// What the schema says about the field `name` of this node.
    pub fn field(self, name: &str) -> FieldSemantics {
        let Some(f) = self.raw_field(name) else { return FieldSemantics::DEFAULT };
        let elem_atomic = f.elem.and_then(|i| TYPES.get(i)).is_some_and(|t| t.atomic);
        FieldSemantics {
            merge: f.strategy & MERGE != 0,
            replace: f.strategy & REPLACE != 0,
            retain_keys: f.strategy & RETAIN_KEYS != 0,
            merge_key: f.merge_key,
            list_type: f.list_type,
            map_keys: f.map_keys,
            atomic: f.atomic || (f.shape == Shape::Struct && elem_atomic),
        }
    }

    /// The node of the value under key `name` (for lists: of each item).
    pub fn child(self, name: &str) -> Self {
        match self {
            Self::Deduced => Self::Deduced,
            Self::MapOf(elem, _) => Self::Struct(elem),
            Self::Struct(None) => Self::Struct(None),
            Self::Struct(Some(_)) => match self.raw_field(name) {
                None => Self::Struct(None),
                Some(f) => match f.shape {
                    Shape::Map => Self::MapOf(f.elem, f.atomic),
                    Shape::Scalar | Shape::Struct | Shape::List => Self::Struct(f.elem),
                },
            },
        }
    }

    /// Whether the keys of an object here are map entries (each owned on its own by server-side
    /// apply) rather than the declared fields of a struct.
    pub fn is_map(self) -> bool {
        matches!(self, Self::Deduced | Self::MapOf(..))
    }

    /// Whether an object at this node is atomic (replaced whole and owned as one field).
    pub fn is_atomic(self) -> bool {
        match self {
            Self::Struct(_) => self.def().is_some_and(|d| d.atomic),
            Self::MapOf(_, atomic) => atomic,
            Self::Deduced => false,
        }
    }

    /// The type's name in the table, for diagnostics.
    pub fn type_name(self) -> Option<&'static str> {
        self.def().map(|d| d.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_core::resource::builtin_resources;

    #[test]
    fn the_table_is_sorted_and_every_builtin_kind_has_a_root() {
        for t in TYPES {
            assert!(t.fields.windows(2).all(|w| w[0].name < w[1].name), "{} fields unsorted", t.name);
        }
        for r in builtin_resources() {
            assert!(Node::for_kind(&r.group, &r.version, &r.kind).is_some(), "{}/{} {} has no schema", r.group, r.version, r.kind);
        }
        assert!(Node::for_kind("example.com", "v1", "Widget").is_none());
    }

    #[test]
    fn merge_keys_match_the_go_struct_tags() {
        let check = |kind: (&str, &str), path: &str, key: Option<&str>, merge: bool| {
            let (_, sem) = Node::at_path(kind.0, "v1", kind.1, path).unwrap_or_else(|| panic!("{path}"));
            assert_eq!((sem.merge_key, sem.merge), (key, merge), "{}.{path}", kind.1);
        };
        let deploy = ("apps", "Deployment");
        check(deploy, "spec.template.spec.containers", Some("name"), true);
        check(deploy, "spec.template.spec.containers.ports", Some("containerPort"), true);
        check(deploy, "spec.template.spec.containers.env", Some("name"), true);
        check(deploy, "spec.template.spec.containers.volumeMounts", Some("mountPath"), true);
        check(deploy, "spec.template.spec.volumes", Some("name"), true);
        check(deploy, "spec.template.spec.tolerations", None, false);
        check(deploy, "metadata.finalizers", None, true);
        check(deploy, "metadata.ownerReferences", Some("uid"), true);
        check(("", "Service"), "spec.ports", Some("port"), true);
        check(("", "Node"), "status.conditions", Some("type"), true);
        let (_, ports) = Node::at_path("", "v1", "Pod", "spec.containers.ports").unwrap_or_else(|| panic!("pod"));
        assert_eq!(ports.map_keys, &["containerPort", "protocol"]);
        assert_eq!(ports.list_type, ListType::Map);
        let (_, strategy) = Node::at_path("apps", "v1", "Deployment", "spec.strategy").unwrap_or_else(|| panic!("strategy"));
        assert!(strategy.retain_keys);
        let (selector, _) = Node::at_path("apps", "v1", "Deployment", "spec.selector").unwrap_or_else(|| panic!("selector"));
        assert!(selector.is_atomic());
    }
}
