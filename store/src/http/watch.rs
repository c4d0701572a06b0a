//! Watch over HTTP: a chunked stream of newline-terminated `{"type","object"}` events that ends at
//! `timeoutSeconds`, with an `ERROR` event carrying a `Status` when the watch fails.

use super::body::{Body, Output, status_value};
use super::metrics::Metrics;
use super::table::{self, Include};
use bosun_core::{ApiResource, WatchEvent, WatchStream};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// How events are rendered.
#[derive(Debug, Clone)]
pub(crate) struct Encoding {
    pub resource: ApiResource,
    pub printer: table::Printer,
    pub output: Output,
    pub include: Include,
}

impl Encoding {
    /// One event line.
    pub(crate) fn event(&self, event: &WatchEvent<bosun_core::DynamicObject>) -> Bytes {
        let object = match event {
            WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => {
                let mut value = o.to_value();
                if let Some(map) = value.as_object_mut().filter(|m| !m.contains_key("kind")) {
                    map.insert("apiVersion".into(), self.resource.api_version().into());
                    map.insert("kind".into(), self.resource.kind.to_string().into());
                }
                match self.output {
                    Output::Metadata => super::body::partial_metadata(&value),
                    Output::Table => {
                        let rv = o.metadata.resource_version.clone().unwrap_or_default();
                        table::table(&self.printer, std::slice::from_ref(&value), json!({"resourceVersion": rv}), self.include)
                    }
                    _ => value,
                }
            }
            WatchEvent::Bookmark(b) => json!({
                "kind": self.resource.kind,
                "apiVersion": self.resource.api_version(),
                "metadata": {"resourceVersion": b.resource_version, "annotations": b.annotations},
            }),
            WatchEvent::Error(status) => status_value(status),
        };
        line(event.type_name(), object)
    }
}

fn line(kind: &str, object: Value) -> Bytes {
    let mut bytes = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// Streams a watch as the response body. The stream ends after `timeout`, when the client goes
/// away, or after an error event.
pub(crate) fn body(mut stream: WatchStream, encoding: Encoding, timeout: Duration, metrics: Arc<Metrics>) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(64);
    metrics.watch_delta(1);
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            let next = tokio::select! {
                () = &mut deadline => break,
                () = tx.closed() => break,
                next = stream.next() => next,
            };
            let (bytes, last) = match next {
                None => break,
                Some(Ok(event)) => {
                    let last = matches!(event, WatchEvent::Error(_));
                    (encoding.event(&event), last)
                }
                Some(Err(err)) => (line("ERROR", status_value(&err.to_status())), true),
            };
            if tx.send(Ok(Frame::data(bytes))).await.is_err() || last {
                break;
            }
        }
        metrics.watch_delta(-1);
    });
    let stream = tokio_stream_from(rx);
    BodyExt::boxed_unsync(StreamBody::new(stream))
}

fn tokio_stream_from<T: Send + 'static>(mut rx: tokio::sync::mpsc::Receiver<T>) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_core::{Bookmark, DynamicObject};

    fn encoding(output: Output) -> Encoding {
        let resource = bosun_core::resource::builtin("", "v1", "ConfigMap").cloned().unwrap_or_else(|| unreachable!());
        Encoding { printer: table::Printer::Builtin(resource.clone()), resource, output, include: Include::Metadata }
    }

    #[test]
    fn events_are_one_json_line_each() {
        let cm =
            DynamicObject::from_value(json!({"metadata": {"name": "a", "resourceVersion": "5"}, "data": {"k": "v"}})).unwrap_or_default();
        let bytes = encoding(Output::Json).event(&WatchEvent::Added(cm.clone()));
        assert_eq!(bytes.last(), Some(&b'\n'));
        let v: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        assert_eq!((v["type"].as_str(), v["object"]["kind"].as_str()), (Some("ADDED"), Some("ConfigMap")));
        let table: Value = serde_json::from_slice(&encoding(Output::Table).event(&WatchEvent::Modified(cm))).unwrap_or_default();
        assert_eq!(table["object"]["kind"], "Table");
        assert_eq!(table["object"]["rows"][0]["cells"][0], "a");
    }

    #[test]
    fn bookmarks_carry_their_type_meta() {
        let b = Bookmark { resource_version: "9".into(), ..Bookmark::default() };
        let v: Value = serde_json::from_slice(&encoding(Output::Json).event(&WatchEvent::Bookmark(b))).unwrap_or_default();
        assert_eq!((v["object"]["kind"].as_str(), v["object"]["apiVersion"].as_str()), (Some("ConfigMap"), Some("v1")));
        assert_eq!(v["object"]["metadata"]["resourceVersion"], "9");
    }
}
