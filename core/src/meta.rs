//! Metadata helpers: object keys, owner references, conditions, name validation and `generateName`.

use crate::object::{Object, TypedObject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, OwnerReference, Time};
use std::fmt;

/// `namespace/name`, or just `name` for cluster-scoped objects: how caches and work queues key objects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ObjectKey {
    /// Namespace; `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// A key from its parts.
    pub fn new(namespace: Option<&str>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.filter(|n| !n.is_empty()).map(str::to_owned), name: name.into() }
    }

    /// The key of an object.
    pub fn of<K: Object>(obj: &K) -> Self {
        Self::new(obj.namespace(), obj.name())
    }

    /// Parses `ns/name` or `name`.
    pub fn parse(s: &str) -> Self {
        match s.split_once('/') {
            Some((ns, name)) => Self::new(Some(ns), name),
            None => Self::new(None, s),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// The owner reference that marks `owner` as the controller of a dependent (`controller: true`,
/// `blockOwnerDeletion: true`), as ReplicaSets set on their pods.
pub fn controller_ref<K: TypedObject>(owner: &K) -> OwnerReference {
    let resource = K::api_resource();
    OwnerReference {
        api_version: resource.api_version(),
        kind: resource.kind.to_string(),
        name: owner.name().to_owned(),
        uid: owner.uid().to_owned(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The controlling owner reference of an object, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.iter().flatten().find(|r| r.controller == Some(true))
}

/// Whether `meta` lists an owner with this UID.
pub fn is_owned_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references.iter().flatten().any(|r| r.uid == uid)
}

/// Whether the object is being deleted (`deletionTimestamp` set).
pub fn is_deleting(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}

/// Whether the object carries this finalizer.
pub fn has_finalizer(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.finalizers.iter().flatten().any(|f| f == finalizer)
}

/// The fields every Kubernetes condition type has, so that one helper serves them all.
pub trait ConditionLike {
    /// The condition type, e.g. `Ready`.
    fn type_(&self) -> &str;
    /// `True`, `False` or `Unknown`.
    fn status(&self) -> &str;
    /// When the status last changed.
    fn last_transition_time(&self) -> Option<&Time>;
    /// Sets when the status last changed.
    fn set_last_transition_time(&mut self, t: Option<Time>);
}

macro_rules! condition_like {
    ($get:ident; $($ty:ty),* $(,)?) => {$(
        impl ConditionLike for $ty {
            fn type_(&self) -> &str { $get(&self.type_) }
            fn status(&self) -> &str { $get(&self.status) }
            fn last_transition_time(&self) -> Option<&Time> { self.last_transition_time.as_ref() }
            fn set_last_transition_time(&mut self, t: Option<Time>) { self.last_transition_time = t; }
        }
    )*};
}

fn plain(s: &str) -> &str {
    s
}

fn optional(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("")
}

condition_like!(plain;
    k8s_openapi::api::core::v1::PodCondition,
    k8s_openapi::api::core::v1::NamespaceCondition,
    k8s_openapi::api::core::v1::NodeCondition,
    k8s_openapi::api::batch::v1::JobCondition,
    k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerCondition,
);

// The apps/v1 conditions have optional type and status in the v1.37 schema.
condition_like!(optional;
    k8s_openapi::api::apps::v1::DeploymentCondition,
    k8s_openapi::api::apps::v1::ReplicaSetCondition,
    k8s_openapi::api::apps::v1::StatefulSetCondition,
    k8s_openapi::api::apps::v1::DaemonSetCondition,
);

impl ConditionLike for Condition {
    fn type_(&self) -> &str {
        &self.type_
    }
    fn status(&self) -> &str {
        &self.status
    }
    fn last_transition_time(&self) -> Option<&Time> {
        Some(&self.last_transition_time)
    }
    fn set_last_transition_time(&mut self, t: Option<Time>) {
        if let Some(t) = t {
            self.last_transition_time = t;
        }
    }
}

/// The condition of this type, if present.
pub fn find_condition<'a, C: ConditionLike>(conditions: &'a [C], type_: &str) -> Option<&'a C> {
    conditions.iter().find(|c| c.type_() == type_)
}

/// Whether the condition of this type is `True`.
pub fn is_condition_true<C: ConditionLike>(conditions: &[C], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status() == "True")
}

/// Sets a condition: replaces the one of the same type, keeping its `lastTransitionTime` when the
/// status did not change, and stamping `now` when it did. Returns whether anything changed.
pub fn set_condition<C: ConditionLike + PartialEq>(conditions: &mut Vec<C>, mut new: C, now: Time) -> bool {
    match conditions.iter_mut().find(|c| c.type_() == new.type_()) {
        Some(old) => {
            let t = if old.status() == new.status() { old.last_transition_time().cloned().or(Some(now)) } else { Some(now) };
            new.set_last_transition_time(t);
            if *old == new {
                return false;
            }
            *old = new;
            true
        }
        None => {
            new.set_last_transition_time(Some(now));
            conditions.push(new);
            true
        }
    }
}

/// Why a name, label key or label value is invalid; the messages are Kubernetes' own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidNameError(pub String);

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty() && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-') && b[0] != b'-' && b[b.len() - 1] != b'-'
}

/// DNS-1123 label: at most 63 lower-case alphanumerics or `-`, alphanumeric at both ends (namespaces, most names).
pub fn validate_dns1123_label(s: &str) -> Result<(), InvalidNameError> {
    if s.len() > 63 {
        return Err(InvalidNameError("must be no more than 63 characters".into()));
    }
    if !is_dns_label(s) {
        return Err(InvalidNameError(DNS1123_LABEL_MSG.into()));
    }
    Ok(())
}

/// DNS-1123 subdomain: at most 253 characters of dot-separated labels (most object names).
pub fn validate_dns1123_subdomain(s: &str) -> Result<(), InvalidNameError> {
    if s.len() > 253 {
        return Err(InvalidNameError("must be no more than 253 characters".into()));
    }
    if !s.split('.').all(is_dns_label) {
        return Err(InvalidNameError(DNS1123_SUBDOMAIN_MSG.into()));
    }
    Ok(())
}

/// DNS-1035 label: a DNS-1123 label that starts with a letter (Service names).
pub fn validate_dns1035_label(s: &str) -> Result<(), InvalidNameError> {
    if s.len() > 63 {
        return Err(InvalidNameError("must be no more than 63 characters".into()));
    }
    if !is_dns_label(s) || !s.as_bytes()[0].is_ascii_lowercase() {
        return Err(InvalidNameError(DNS1035_LABEL_MSG.into()));
    }
    Ok(())
}

fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// A qualified name (label and annotation keys): an optional DNS subdomain prefix and `/`, then a
/// name of at most 63 alphanumerics, `-`, `_` or `.`, alphanumeric at both ends.
pub fn validate_qualified_name(s: &str) -> Result<(), InvalidNameError> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Err(InvalidNameError("prefix part must be non-empty".into()));
        }
        validate_dns1123_subdomain(p).map_err(|e| InvalidNameError(format!("prefix part {e}")))?;
    }
    if name.len() > 63 {
        return Err(InvalidNameError("name part must be no more than 63 characters".into()));
    }
    if !is_qualified_name_part(name) {
        return Err(InvalidNameError(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".into(),
        ));
    }
    Ok(())
}

/// A label value: empty, or at most 63 alphanumerics, `-`, `_` or `.`, alphanumeric at both ends.
pub fn validate_label_value(s: &str) -> Result<(), InvalidNameError> {
    if s.is_empty() {
        return Ok(());
    }
    if s.len() > 63 {
        return Err(InvalidNameError("must be no more than 63 characters".into()));
    }
    if !is_qualified_name_part(s) {
        return Err(InvalidNameError(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".into(),
        ));
    }
    Ok(())
}

/// The characters Kubernetes draws `generateName` suffixes from (no vowels, no look-alikes).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A name from a `generateName` prefix: the base cut to 58 characters plus 5 random characters.
pub fn generate_name(base: &str) -> String {
    let cut = base.char_indices().nth(58).map_or(base.len(), |(i, _)| i);
    let mut name = String::with_capacity(cut + 5);
    name.push_str(&base[..cut]);
    for _ in 0..5 {
        name.push(char::from(SUFFIX_ALPHABET[fastrand::usize(..SUFFIX_ALPHABET.len())]));
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use k8s_openapi::api::core::v1::PodCondition;
    use k8s_openapi::jiff::Timestamp;

    #[test]
    fn keys_print_and_parse_as_namespace_slash_name() {
        let k = ObjectKey::new(Some("ns"), "web");
        assert_eq!(k.to_string(), "ns/web");
        assert_eq!(ObjectKey::parse("ns/web"), k);
        assert_eq!(ObjectKey::parse("node-1"), ObjectKey::new(None, "node-1"));
        assert_eq!(ObjectKey::new(Some(""), "x").namespace, None);
    }

    #[test]
    fn controller_refs_point_back_at_the_owner() {
        let mut rs = ReplicaSet::default();
        rs.metadata.name = Some("web-1".into());
        rs.metadata.uid = Some("u-1".into());
        let r = controller_ref(&rs);
        assert_eq!((r.api_version.as_str(), r.kind.as_str(), r.controller), ("apps/v1", "ReplicaSet", Some(true)));
        let meta = ObjectMeta { owner_references: Some(vec![r]), ..ObjectMeta::default() };
        assert_eq!(controller_of(&meta).map(|r| r.uid.as_str()), Some("u-1"));
        assert!(is_owned_by(&meta, "u-1") && !is_owned_by(&meta, "u-2"));
    }

    #[test]
    fn set_condition_keeps_the_transition_time_while_the_status_holds() {
        let t1 = Time(Timestamp::from_second(1).unwrap_or(Timestamp::UNIX_EPOCH));
        let t2 = Time(Timestamp::from_second(2).unwrap_or(Timestamp::UNIX_EPOCH));
        let ready = |status: &str| PodCondition { type_: "Ready".into(), status: status.into(), ..PodCondition::default() };
        let mut conds = Vec::new();
        assert!(set_condition(&mut conds, ready("False"), t1.clone()));
        assert!(!set_condition(&mut conds, ready("False"), t2.clone()));
        assert_eq!(conds[0].last_transition_time, Some(t1));
        assert!(set_condition(&mut conds, ready("True"), t2.clone()));
        assert_eq!(conds[0].last_transition_time, Some(t2));
        assert!(is_condition_true(&conds, "Ready"));
        assert_eq!(conds.len(), 1);
    }

    #[test]
    fn names_follow_the_dns_rules() {
        for ok in ["a", "web-1", "0abc", &"a".repeat(63)] {
            assert!(validate_dns1123_label(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64)] {
            assert!(validate_dns1123_label(bad).is_err(), "{bad}");
        }
        assert!(validate_dns1123_subdomain("a.b-c.d").is_ok());
        assert!(validate_dns1123_subdomain("a..b").is_err());
        assert!(validate_dns1035_label("web").is_ok());
        assert!(validate_dns1035_label("1web").is_err());
    }

    #[test]
    fn label_keys_and_values_follow_the_qualified_name_rules() {
        for ok in ["app", "app.kubernetes.io/name", "A_b.c", "x/y"] {
            assert!(validate_qualified_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/a", "a/", "-a", "a/b/c", "Bad_Prefix/x", &"a".repeat(64)] {
            assert!(validate_qualified_name(bad).is_err(), "{bad}");
        }
        assert!(validate_label_value("").is_ok());
        assert!(validate_label_value("v1.2_3-x").is_ok());
        assert!(validate_label_value("-v").is_err());
        assert!(validate_label_value("a b").is_err());
    }

    #[test]
    fn generated_names_are_the_cut_base_plus_five_suffix_characters() {
        let name = generate_name("web-");
        assert_eq!(name.len(), 9);
        assert!(name.starts_with("web-"));
        assert!(name[4..].bytes().all(|c| SUFFIX_ALPHABET.contains(&c)));
        let long = generate_name(&"x".repeat(100));
        assert_eq!(long.len(), 63);
        assert!(validate_dns1123_label(&long).is_ok());
        assert_ne!(generate_name("a-"), generate_name("a-"));
    }
}
