//! Watch over HTTP: a chunked stream of newline-terminated `{"type","object"}` events that ends at
//! `timeoutSeconds`, with an `ERROR` event carrying a `Status` when the watch fails.

use super::body::{Body, Output, status_value};
use super::metrics::Metrics;
use super::table::{self, Include};
use crate::api::EncodedWatch;
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
                let value = super::body::typed_value(o, &self.resource);
                match self.output {
                    Output::Metadata => super::body::partial_metadata(&value),
                    Output::Table => {
                        let rv = o.metadata.resource_version.clone().unwrap_or_default();
                        table::table(&self.printer, std::slice::from_ref(&value), json!({"resourceVersion": rv}), self.include)
                    }
                    _ => value,
                }
            }
            WatchEvent::Bookmark(b) => crate::api::bookmark_object(&self.resource, b),
            WatchEvent::Error(status) => status_value(status),
        };
        line(event.type_name(), &object)
    }

    /// The body of a watch of objects, each event encoded for this watcher. The stream ends after
    /// an `ERROR` event.
    pub(crate) fn body(self, stream: WatchStream, timeout: Duration, metrics: Arc<Metrics>) -> Body {
        let lines = stream.map(move |next| match next {
            Ok(event) => (self.event(&event), matches!(event, WatchEvent::Error(_))),
            Err(err) => (error_line(&err), true),
        });
        body(lines, timeout, metrics)
    }
}

/// The body of a watch whose events come encoded (see [`crate::api::EncodedWatch`]).
pub(crate) fn encoded_body(stream: EncodedWatch, timeout: Duration, metrics: Arc<Metrics>) -> Body {
    let lines = stream.map(|next| match next {
        Ok(line) => (line, false),
        Err(err) => (error_line(&err), true),
    });
    body(lines, timeout, metrics)
}

fn line(kind: &str, object: &Value) -> Bytes {
    crate::api::watch_line(kind, &serde_json::to_vec(object).unwrap_or_default())
}

fn error_line(err: &bosun_core::Error) -> Bytes {
    line("ERROR", &status_value(&err.to_status()))
}

/// Streams a watch's lines (each with whether it is the last) as the response body. The stream
/// ends after `timeout`, when the client goes away, or after the last line.
fn body(mut lines: impl futures::Stream<Item = (Bytes, bool)> + Send + Unpin + 'static, timeout: Duration, metrics: Arc<Metrics>) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(64);
    metrics.watch_delta(1);
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            let next = tokio::select! {
                () = &mut deadline => break,
                () = tx.closed() => break,
                next = lines.next() => next,
            };
            let Some((bytes, last)) = next else { break };
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
