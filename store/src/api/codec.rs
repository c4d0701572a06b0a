//! How objects are stored: JSON without `resourceVersion` (the storage's mod revision is the
//! version), under `/registry/{group}/{plural}/[{namespace}/]{name}`.

use crate::storage::{Revision, StorageError};
use bosun_core::{ApiResource, DynamicObject, Error, Result};
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
    let rv = obj.metadata.resource_version.take();
    let out = serde_json::to_vec(&*obj).map(Bytes::from).map_err(|e| Error::internal(format!("encode object: {e}")));
    obj.metadata.resource_version = rv;
    out
}

/// Decodes a stored object and stamps it with its revision.
pub(crate) fn decode(bytes: &[u8], revision: Revision) -> Result<DynamicObject> {
    let mut obj: DynamicObject = serde_json::from_slice(bytes).map_err(|e| Error::internal(format!("decode stored object: {e}")))?;
    obj.metadata.resource_version = Some(revision.to_string());
    Ok(obj)
}

/// The JSON clients see for a stored object: the stored bytes with `resourceVersion` spliced into
/// `metadata`, which costs a copy instead of a re-encode. `None` when the bytes are not in the
/// shape [`encode`] writes.
pub(crate) fn splice_version(bytes: &[u8], revision: Revision) -> Option<Bytes> {
    const META: &[u8] = b"\"metadata\":{";
    // `encode` writes apiVersion and kind first, so metadata opens within the first bytes.
    let head = &bytes[..bytes.len().min(512)];
    let at = head.windows(META.len()).position(|w| w == META)? + META.len();
    if bytes.windows(17).any(|w| w == b"\"resourceVersion\"") {
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
