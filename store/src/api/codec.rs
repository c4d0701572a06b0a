//! How objects are stored: JSON without `resourceVersion` (the storage's mod revision is the
//! version), under `/registry/{group}/{plural}/[{namespace}/]{name}`.

use crate::storage::{Revision, StorageError};
use bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use bosun_core::{ApiResource, DynamicObject, Error, Result, TypeMeta};
use bytes::Bytes;

/// The key prefix of every object of a resource (all versions of a group and plural share it).
pub(crate) fn prefix(resource: &ApiResource) -> String {
    let group = if resource.group.is_empty() { "core" } else { &resource.group };
    format!("/registry/{group}/{}/", resource.plural)
}

/// The key prefix of a resource's objects in one namespace (or all, for `None`).
pub(crate) fn scope_prefix(resource: &ApiResource, namespace: Option<&str>) -> String {
    match namespace.filter(|_| resource.namespaced) {
        Some(ns) => format!("{}{ns}/", prefix(resource)),
        None => prefix(resource),
    }
}

/// The key of one object.
pub(crate) fn key(resource: &ApiResource, namespace: Option<&str>, name: &str) -> String {
    match namespace.filter(|_| resource.namespaced) {
        Some(ns) => format!("{}{ns}/{name}", prefix(resource)),
        None => format!("{}{name}", prefix(resource)),
    }
}

/// Encodes an object for storage (its `resourceVersion` is left out, and put back afterwards).
pub(crate) fn encode(obj: &mut DynamicObject) -> Result<Bytes> {
    encode_sized(obj, 0)
}

/// [`encode`] into a buffer of `size` bytes to start with (the size of the version it replaces,
/// say): serializing into a buffer that keeps doubling from 128 bytes copies the object's JSON
/// several times over.
pub(crate) fn encode_sized(obj: &mut DynamicObject, size: usize) -> Result<Bytes> {
    let rv = obj.metadata.resource_version.take();
    let mut buf = Vec::with_capacity(size.max(1024));
    let out = serde_json::to_writer(&mut buf, &*obj)
        .map(|()| {
            // Stored bytes live on in storage and the watch cache: no room left over (shrinking
            // reallocates in place).
            if buf.capacity() - buf.len() > buf.len() / 16 {
                buf.shrink_to_fit();
            }
            Bytes::from(buf)
        })
        .map_err(|e| Error::internal(format!("encode object: {e}")));
    obj.metadata.resource_version = rv;
    let out = out?;
    // What `decode` cannot read back must not be stored: one such object would fail every read,
    // list and write of it (and every list of its kind) with a 500.
    let depth = nesting_depth(&out);
    if depth > MAX_DEPTH {
        let (group, _) = bosun_core::resource::split_api_version(obj.types.as_ref().map_or("", |t| t.api_version.as_str()));
        return Err(Error::invalid(
            group,
            obj.types.as_ref().map_or("", |t| t.kind.as_str()),
            obj.metadata.name.as_deref().unwrap_or_default(),
            vec![bosun_core::FieldError {
                reason: "FieldValueInvalid".into(),
                field: "<object>".into(),
                message: format!("the object nests {depth} levels deep; at most {MAX_DEPTH} can be stored"),
            }],
        ));
    }
    Ok(out)
}

/// The deepest nesting of arrays and objects [`decode`] reads (serde_json's recursion limit of
/// 128 stops at the 128th level).
const MAX_DEPTH: usize = 127;

/// How deeply arrays and objects nest in a JSON document (brackets inside strings do not count).
fn nesting_depth(json: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in json {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Decodes a stored object and stamps it with its revision.
pub(crate) fn decode(bytes: &[u8], revision: Revision) -> Result<DynamicObject> {
    let Stored(mut obj) = serde_json::from_slice(bytes).map_err(|e| Error::internal(format!("decode stored object: {e}")))?;
    obj.metadata.resource_version = Some(revision.to_string());
    Ok(obj)
}

/// A stored object, decoded in one pass: `metadata` straight into `ObjectMeta` (the generic
/// `DynamicObject` decoding builds a JSON tree of it first). Every watcher and list reads objects
/// this way, so it is the API layer's hottest decoding.
struct Stored(DynamicObject);

impl<'de> serde::Deserialize<'de> for Stored {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_map(StoredVisitor)
    }
}

struct StoredVisitor;

impl<'de> serde::de::Visitor<'de> for StoredVisitor {
    type Value = Stored;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut access: A) -> std::result::Result<Stored, A::Error> {
        let mut data = serde_json::Map::new();
        let (mut api_version, mut kind, mut metadata) = (None, None, None);
        while let Some(key) = access.next_key::<String>()? {
            match key.as_str() {
                "apiVersion" => api_version = access.next_value::<Option<String>>()?,
                "kind" => kind = access.next_value::<Option<String>>()?,
                "metadata" => metadata = access.next_value::<Option<ObjectMeta>>()?,
                _ => {
                    let value = access.next_value::<serde_json::Value>()?;
                    data.insert(key, value);
                }
            }
        }
        let types = match (api_version, kind) {
            (None, None) => None,
            (a, k) => Some(TypeMeta { api_version: a.unwrap_or_default(), kind: k.unwrap_or_default() }),
        };
        Ok(Stored(DynamicObject { types, metadata: metadata.unwrap_or_default(), data: serde_json::Value::Object(data) }))
    }
}

/// The JSON clients see for a stored object: the stored bytes with `resourceVersion` spliced into
/// `metadata`, which costs a copy instead of a re-encode. `None` when the bytes are not in the
/// shape [`encode`] writes.
pub(crate) fn splice_version(bytes: &[u8], revision: Revision) -> Option<Bytes> {
    const META: &[u8] = b"\"metadata\":{";
    // `encode` writes apiVersion and kind first, so metadata opens within the first bytes.
    let head = &bytes[..bytes.len().min(512)];
    let at = head.windows(META.len()).position(|w| w == META)? + META.len();
    if contains(bytes, b"\"resourceVersion\"") {
        return None;
    }
    let rv = format!("\"resourceVersion\":\"{revision}\"");
    let empty = bytes.get(at) == Some(&b'}');
    let mut out = Vec::with_capacity(bytes.len() + rv.len() + 1);
    out.extend_from_slice(&bytes[..at]);
    out.extend_from_slice(rv.as_bytes());
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(&bytes[at..]);
    Some(Bytes::from(out))
}

/// The JSON clients see for a stored object at `revision`: spliced when the bytes allow it, else
/// decoded and encoded again.
pub(crate) fn shown(stored: &[u8], revision: Revision) -> Result<Bytes> {
    match splice_version(stored, revision) {
        Some(b) => Ok(b),
        None => {
            let obj = decode(stored, revision)?;
            Ok(Bytes::from(serde_json::to_vec(&obj).map_err(|e| Error::internal(format!("encode object: {e}")))?))
        }
    }
}

/// Whether an object's JSON, as [`encode`] writes it, starts with this `apiVersion`.
pub(crate) fn has_api_version(json: &[u8], api_version: &str) -> bool {
    const HEAD: &[u8] = b"{\"apiVersion\":\"";
    json.strip_prefix(HEAD).and_then(|rest| rest.strip_prefix(api_version.as_bytes())).is_some_and(|rest| rest.first() == Some(&b'"'))
}

/// One event of a JSON watch: `{"type":…,"object":…}` and a newline, `object` given as JSON.
pub(crate) fn watch_line(type_name: &str, object: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(object.len() + type_name.len() + 24);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(type_name.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    out.extend_from_slice(object);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

/// A bookmark's object: the watched kind with only a `resourceVersion` (and annotations).
pub(crate) fn bookmark_object(resource: &ApiResource, bookmark: &bosun_core::Bookmark) -> serde_json::Value {
    serde_json::json!({
        "kind": resource.kind,
        "apiVersion": resource.api_version(),
        "metadata": {"resourceVersion": bookmark.resource_version, "annotations": bookmark.annotations},
    })
}

/// Whether `needle` (non-empty) occurs in `hay`: a jump from each occurrence of its first byte,
/// many times faster than comparing every window (lists splice every object they serve).
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    let Some(&first) = needle.first() else { return true };
    let mut rest = hay;
    while let Some(i) = rest.iter().position(|&b| b == first) {
        if rest[i..].starts_with(needle) {
            return true;
        }
        rest = &rest[i + 1..];
    }
    false
}

/// A storage error as an API error.
pub(crate) fn storage_error(e: StorageError) -> Error {
    match e {
        StorageError::Compacted { requested, compacted } => {
            Error::expired(format!("The resourceVersion for the provided list is too old: {requested} (compacted {compacted})"))
        }
        StorageError::FutureRevision { requested, current } => {
            Error::timeout(format!("Too large resource version: {requested}, current: {current}"))
        }
        StorageError::Unavailable(m) => Error::unavailable(m),
        other => Error::internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An object nested as deeply as storage takes round-trips; one level more is refused with
    /// 422 rather than stored unreadable.
    #[test]
    fn what_is_stored_can_be_read_back() -> Result<()> {
        let nested = |levels: usize| {
            let mut v = serde_json::json!(1);
            // The object itself is one level; `data` is the outermost of the others.
            for _ in 0..levels - 1 {
                v = serde_json::json!({"a": v});
            }
            DynamicObject::from_value(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "n"}, "data": v}))
        };
        let bytes = encode(&mut nested(MAX_DEPTH)?)?;
        assert_eq!(nesting_depth(&bytes), MAX_DEPTH);
        assert!(decode(&bytes, 1).is_ok());
        let refused = encode(&mut nested(MAX_DEPTH + 1)?).err();
        assert_eq!(refused.map(|e| e.code()), Some(422));
        assert_eq!(nesting_depth(br#"{"a": "{[\"{", "b": [{}]}"#), 3);
        Ok(())
    }

    #[test]
    fn the_one_pass_decoding_agrees_with_the_generic_one() -> Result<()> {
        for value in [
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default", "labels": {"a": "b"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u", "controller": true}]},
                "spec": {"containers": [{"name": "c", "image": "i"}], "nodeName": "n"}, "status": {"phase": "Running"}}),
            serde_json::json!({"metadata": null, "data": {"k": "v"}}),
            serde_json::json!({"kind": "ConfigMap", "data": {}}),
        ] {
            let bytes = serde_json::to_vec(&value).map_err(|e| Error::internal(e.to_string()))?;
            let mut generic: DynamicObject = serde_json::from_slice(&bytes).map_err(|e| Error::internal(e.to_string()))?;
            generic.metadata.resource_version = Some("7".into());
            assert_eq!(decode(&bytes, 7)?, generic);
        }
        assert!(decode(b"[1]", 1).is_err());
        assert!(contains(br#"{"a":{"resourceVersion":"1"}}"#, br#""resourceVersion""#));
        assert!(!contains(br#"{"a":{"resourceVersio":"1"}}"#, br#""resourceVersion""#));
        assert!(splice_version(br#"{"metadata":{"resourceVersion":"3"}}"#, 4).is_none());
        assert!(decode(br#"{"metadata": {"name": 5}}"#, 1).is_err());
        Ok(())
    }

    #[test]
    fn spliced_versions_read_back_as_the_decoded_object() -> Result<()> {
        for value in [
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "default"}, "data": {"k": "v"}}),
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}),
        ] {
            let obj = DynamicObject::from_value(value)?;
            let mut obj = obj;
            let stored = encode(&mut obj)?;
            let spliced = splice_version(&stored, 42).ok_or_else(|| Error::internal("not spliced"))?;
            let back: DynamicObject = serde_json::from_slice(&spliced).map_err(|e| Error::internal(e.to_string()))?;
            assert_eq!(back, decode(&stored, 42)?);
        }
        Ok(())
    }
}
