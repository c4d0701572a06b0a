//! The fast path for large lists and many watchers: a source of lists and watches whose objects
//! are already JSON-encoded, written out without decoding and re-encoding each object (for a
//! watch: once per watcher).

use crate::api::{ApiServer, EncodedList, EncodedWatch};
use async_trait::async_trait;
use bosun_core::{ListParams, Result, Target, WatchParams};
use bytes::Bytes;

/// Lists and watches with pre-encoded objects, for JSON responses. Optional: without one, the
/// server lists and watches through [`bosun_core::Client`] and encodes each object itself.
#[async_trait]
pub trait EncodedLists: Send + Sync + 'static {
    /// One page of a list, each item as its JSON bytes.
    async fn list_encoded(&self, target: Target<'_>, params: &ListParams) -> Result<EncodedList>;

    /// A watch whose events are already the lines a JSON watch sends; `None` (the default) to
    /// watch through [`bosun_core::Client::watch`] instead.
    async fn watch_encoded(&self, target: Target<'_>, params: &WatchParams) -> Result<Option<EncodedWatch>> {
        let _ = (target, params);
        Ok(None)
    }
}

#[async_trait]
impl EncodedLists for ApiServer {
    async fn list_encoded(&self, target: Target<'_>, params: &ListParams) -> Result<EncodedList> {
        ApiServer::list_encoded(self, target, params).await
    }

    async fn watch_encoded(&self, target: Target<'_>, params: &WatchParams) -> Result<Option<EncodedWatch>> {
        ApiServer::watch_encoded(self, target, params).await
    }
}

/// The list as one JSON document: `{"apiVersion","kind","metadata","items":[...]}`.
pub(crate) fn to_json(list: &EncodedList) -> Bytes {
    let head = serde_json::json!({"apiVersion": list.types.api_version, "kind": list.types.kind, "metadata": list.metadata});
    let head = serde_json::to_vec(&head).unwrap_or_default();
    let size: usize = list.items.iter().map(|i| i.len() + 1).sum::<usize>() + head.len() + 16;
    let mut out = Vec::with_capacity(size);
    // The head object without its closing brace, then the items.
    out.extend_from_slice(&head[..head.len().saturating_sub(1)]);
    out.extend_from_slice(b",\"items\":[");
    for (i, item) in list.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_core::TypeMeta;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;

    #[test]
    fn encoded_items_are_spliced_into_a_list_document() {
        let list = EncodedList {
            types: TypeMeta { api_version: "v1".into(), kind: "PodList".into() },
            metadata: ListMeta { resource_version: Some("7".into()), ..ListMeta::default() },
            items: vec![Bytes::from_static(br#"{"metadata":{"name":"a"}}"#), Bytes::from_static(br#"{"metadata":{"name":"b"}}"#)],
        };
        let v: serde_json::Value = serde_json::from_slice(&to_json(&list)).unwrap_or_default();
        assert_eq!(v["kind"], "PodList");
        assert_eq!(v["metadata"]["resourceVersion"], "7");
        assert_eq!(v["items"][1]["metadata"]["name"], "b");
        let empty = EncodedList { items: vec![], ..list };
        let v: serde_json::Value = serde_json::from_slice(&to_json(&empty)).unwrap_or_default();
        assert_eq!(v["items"], serde_json::json!([]));
    }
}
