//! `KubeClient`: [`Client`] over a real Kubernetes API server (or bosun's own) through the `kube` crate.
//!
//! Requests are built from [`ApiResource`](crate::ApiResource) paths and sent with `kube::Client`'s
//! raw request methods, so every verb and subresource maps one-to-one onto the REST API.

use crate::client::{
    Bookmark, Client, DeleteParams, Deleted, FieldValidation, ListParams, LogParams, LogStream, Patch, PatchParams, PostParams,
    PropagationPolicy, Target, WatchEvent, WatchParams, WatchStream,
};
use crate::error::{Error, Result};
use crate::object::{DynamicObject, ObjectList};
use async_trait::async_trait;
use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use std::path::Path;

/// A [`Client`] that talks HTTP to a Kubernetes-compatible API server.
#[derive(Clone)]
pub struct KubeClient {
    inner: kube::Client,
}

impl std::fmt::Debug for KubeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeClient").finish_non_exhaustive()
    }
}

impl KubeClient {
    /// Wraps a configured `kube::Client`.
    pub fn new(inner: kube::Client) -> Self {
        Self { inner }
    }

    /// Connects as `kubectl` would: `$KUBECONFIG`, `~/.kube/config`, or the in-cluster service account.
    pub async fn try_default() -> Result<Self> {
        let inner = kube::Client::try_default().await.map_err(convert)?;
        Ok(Self { inner })
    }

    /// Connects with the current context of a kubeconfig file.
    pub async fn from_kubeconfig(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_kubeconfig_at(path, None).await
    }

    /// Connects with the current context of a kubeconfig file, to `server` instead of the
    /// context's cluster address when given (a node joining a control plane over HTTPS).
    pub async fn from_kubeconfig_at(path: impl AsRef<Path>, server: Option<&str>) -> Result<Self> {
        let path = path.as_ref();
        let kubeconfig = kube::config::Kubeconfig::read_from(path)
            .map_err(|e| Error::bad_request(format!("read kubeconfig {}: {e}", path.display())))?;
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| Error::bad_request(format!("load kubeconfig {}: {e}", path.display())))?;
        if let Some(server) = server {
            config.cluster_url = server.parse().map_err(|e| Error::bad_request(format!("server URL {server:?}: {e}")))?;
        }
        let inner = kube::Client::try_from(config).map_err(convert)?;
        Ok(Self { inner })
    }

    async fn send_json(&self, request: http::Request<Vec<u8>>) -> Result<serde_json::Value> {
        let text = self.inner.request_text(request).await.map_err(convert)?;
        serde_json::from_str(&text).map_err(|e| Error::internal(format!("decode response: {e}")))
    }

    async fn object(&self, request: http::Request<Vec<u8>>) -> Result<DynamicObject> {
        DynamicObject::from_value(self.send_json(request).await?)
    }
}

/// Maps a `kube` error onto bosun's: API statuses keep their reason; transport failures are 503.
fn convert(err: kube::Error) -> Error {
    match err {
        kube::Error::Api(status) => match serde_json::to_value(&*status).and_then(serde_json::from_value::<Status>) {
            Ok(status) => Error::from_status(status),
            Err(e) => Error::internal(format!("decode status: {e}")),
        },
        other => Error::unavailable(format!("api server unreachable: {other}")),
    }
}

/// Builds a query string, percent-encoding values.
#[derive(Default)]
struct Query(String);

impl Query {
    fn push(&mut self, key: &str, value: impl AsRef<str>) {
        self.0.push(if self.0.is_empty() { '?' } else { '&' });
        self.0.push_str(key);
        self.0.push('=');
        for b in value.as_ref().bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                self.0.push(char::from(b));
            } else {
                self.0.push_str(&format!("%{b:02X}"));
            }
        }
    }

    fn opt(&mut self, key: &str, value: Option<impl AsRef<str>>) {
        if let Some(v) = value {
            self.push(key, v);
        }
    }

    fn flag(&mut self, key: &str, on: bool) {
        if on {
            self.push(key, "true");
        }
    }

    fn dry_run(&mut self, on: bool) {
        if on {
            self.push("dryRun", "All");
        }
    }

    fn validation(&mut self, v: Option<FieldValidation>) {
        self.opt(
            "fieldValidation",
            v.map(|v| match v {
                FieldValidation::Ignore => "Ignore",
                FieldValidation::Warn => "Warn",
                FieldValidation::Strict => "Strict",
            }),
        );
    }
}

fn request(method: http::Method, uri: String, content_type: Option<&str>, body: Vec<u8>) -> Result<http::Request<Vec<u8>>> {
    let mut builder = http::Request::builder().method(method).uri(uri).header(http::header::ACCEPT, "application/json");
    if let Some(ct) = content_type {
        builder = builder.header(http::header::CONTENT_TYPE, ct);
    }
    builder.body(body).map_err(|e| Error::bad_request(format!("build request: {e}")))
}

fn json_body(value: &impl serde::Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::internal(format!("encode body: {e}")))
}

fn object_path(target: Target<'_>, name: &str) -> String {
    format!("{}/{name}", target.resource.collection_path(target.namespace))
}

fn delete_options(params: &DeleteParams) -> serde_json::Value {
    let mut body = serde_json::json!({"apiVersion": "v1", "kind": "DeleteOptions"});
    if params.dry_run {
        body["dryRun"] = serde_json::json!(["All"]);
    }
    if let Some(g) = params.grace_period_seconds {
        body["gracePeriodSeconds"] = g.into();
    }
    if let Some(p) = params.propagation_policy {
        body["propagationPolicy"] = match p {
            PropagationPolicy::Orphan => "Orphan",
            PropagationPolicy::Background => "Background",
            PropagationPolicy::Foreground => "Foreground",
        }
        .into();
    }
    if let Some(pre) = &params.preconditions {
        body["preconditions"] = serde_json::to_value(pre).unwrap_or_default();
    }
    body
}

/// The query of a create or replace: dry run, field manager and field validation.
fn post_query(params: &PostParams) -> Query {
    let mut q = Query::default();
    q.dry_run(params.dry_run);
    q.opt("fieldManager", params.field_manager.as_deref());
    q.validation(params.field_validation);
    q
}

fn list_query(params: &ListParams) -> Query {
    let mut q = Query::default();
    q.opt("labelSelector", params.label_selector.as_deref());
    q.opt("fieldSelector", params.field_selector.as_deref());
    q.opt("limit", params.limit.map(|l| l.to_string()));
    q.opt("continue", params.continue_token.as_deref());
    q.opt("resourceVersion", params.resource_version.as_deref());
    q.opt("resourceVersionMatch", params.version_match.map(|m| m.as_str()));
    q
}

/// Parses one line of a watch stream.
fn parse_event(line: &str) -> Result<WatchEvent<DynamicObject>> {
    #[derive(serde::Deserialize)]
    struct Frame {
        #[serde(rename = "type")]
        type_: String,
        object: serde_json::Value,
    }
    let frame: Frame = serde_json::from_str(line).map_err(|e| Error::internal(format!("decode watch event: {e}")))?;
    let Frame { type_, object } = frame;
    Ok(match type_.as_str() {
        "ADDED" => WatchEvent::Added(DynamicObject::from_value(object)?),
        "MODIFIED" => WatchEvent::Modified(DynamicObject::from_value(object)?),
        "DELETED" => WatchEvent::Deleted(DynamicObject::from_value(object)?),
        "BOOKMARK" => {
            let meta = DynamicObject::from_value(object)?.metadata;
            WatchEvent::Bookmark(Bookmark {
                resource_version: meta.resource_version.unwrap_or_default(),
                annotations: meta.annotations.unwrap_or_default(),
            })
        }
        "ERROR" => WatchEvent::Error(serde_json::from_value(object).map_err(|e| Error::internal(format!("decode watch error: {e}")))?),
        other => return Err(Error::internal(format!("unknown watch event type {other:?}"))),
    })
}

#[async_trait]
impl Client for KubeClient {
    async fn get(&self, target: Target<'_>, name: &str) -> Result<DynamicObject> {
        self.object(request(http::Method::GET, object_path(target, name), None, Vec::new())?).await
    }

    async fn list(&self, target: Target<'_>, params: &ListParams) -> Result<ObjectList<DynamicObject>> {
        let uri = format!("{}{}", target.resource.collection_path(target.namespace), list_query(params).0);
        let value = self.send_json(request(http::Method::GET, uri, None, Vec::new())?).await?;
        serde_json::from_value(value).map_err(|e| Error::internal(format!("decode list: {e}")))
    }

    async fn create(&self, target: Target<'_>, obj: &DynamicObject, params: &PostParams) -> Result<DynamicObject> {
        let q = post_query(params);
        let ns = target.namespace.or(obj.metadata.namespace.as_deref());
        let uri = format!("{}{}", target.resource.collection_path(ns), q.0);
        self.object(request(http::Method::POST, uri, Some("application/json"), json_body(obj)?)?).await
    }

    async fn update(&self, target: Target<'_>, obj: &DynamicObject, params: &PostParams) -> Result<DynamicObject> {
        let q = post_query(params);
        let ns = target.namespace.or(obj.metadata.namespace.as_deref());
        let name = obj.metadata.name.as_deref().unwrap_or("");
        let uri = format!("{}/{name}{}", target.resource.collection_path(ns), q.0);
        self.object(request(http::Method::PUT, uri, Some("application/json"), json_body(obj)?)?).await
    }

    async fn patch(&self, target: Target<'_>, name: &str, patch: &Patch, params: &PatchParams) -> Result<DynamicObject> {
        self.patch_subresource_inner(target, name, None, patch, params).await
    }

    async fn delete(&self, target: Target<'_>, name: &str, params: &DeleteParams) -> Result<Deleted<DynamicObject>> {
        let body = json_body(&delete_options(params))?;
        let value = self.send_json(request(http::Method::DELETE, object_path(target, name), Some("application/json"), body)?).await?;
        if value.get("kind").and_then(|k| k.as_str()) == Some("Status") {
            // Some servers answer a finished delete with a Status naming the object.
            let mut gone = DynamicObject::new(target.resource, name);
            gone.metadata.namespace = target.namespace.map(str::to_owned);
            gone.metadata.uid = value.pointer("/details/uid").and_then(|u| u.as_str()).map(str::to_owned);
            return Ok(Deleted::Now(gone));
        }
        let obj = DynamicObject::from_value(value)?;
        let pending = obj.metadata.deletion_timestamp.is_some() && obj.metadata.finalizers.as_ref().is_some_and(|f| !f.is_empty());
        Ok(if pending { Deleted::Pending(obj) } else { Deleted::Now(obj) })
    }

    async fn delete_collection(&self, target: Target<'_>, list: &ListParams, params: &DeleteParams) -> Result<ObjectList<DynamicObject>> {
        let uri = format!("{}{}", target.resource.collection_path(target.namespace), list_query(list).0);
        let body = json_body(&delete_options(params))?;
        let value = self.send_json(request(http::Method::DELETE, uri, Some("application/json"), body)?).await?;
        if value.get("kind").and_then(|k| k.as_str()) == Some("Status") {
            return Ok(ObjectList { types: Default::default(), metadata: Default::default(), items: Vec::new() });
        }
        serde_json::from_value(value).map_err(|e| Error::internal(format!("decode list: {e}")))
    }

    async fn watch(&self, target: Target<'_>, params: &WatchParams) -> Result<WatchStream> {
        let mut q = Query::default();
        q.push("watch", "true");
        q.opt("labelSelector", params.label_selector.as_deref());
        q.opt("fieldSelector", params.field_selector.as_deref());
        q.opt("resourceVersion", params.resource_version.as_deref());
        q.opt("timeoutSeconds", params.timeout_seconds.map(|t| t.to_string()));
        q.flag("allowWatchBookmarks", params.allow_bookmarks);
        if params.send_initial_events {
            q.push("sendInitialEvents", "true");
            q.push("resourceVersionMatch", "NotOlderThan");
        }
        let uri = format!("{}{}", target.resource.collection_path(target.namespace), q.0);
        let reader = self.inner.request_stream(request(http::Method::GET, uri, None, Vec::new())?).await.map_err(convert)?;
        let lines = reader.lines().map_err(|e| Error::unavailable(format!("watch stream: {e}")));
        Ok(lines.try_filter(|l| futures::future::ready(!l.trim().is_empty())).and_then(|l| futures::future::ready(parse_event(&l))).boxed())
    }

    async fn get_subresource(&self, target: Target<'_>, name: &str, subresource: &str) -> Result<DynamicObject> {
        let uri = format!("{}/{subresource}", object_path(target, name));
        self.object(request(http::Method::GET, uri, None, Vec::new())?).await
    }

    async fn update_subresource(
        &self,
        target: Target<'_>,
        name: &str,
        subresource: &str,
        obj: &DynamicObject,
        params: &PostParams,
    ) -> Result<DynamicObject> {
        let q = post_query(params);
        let uri = format!("{}/{subresource}{}", object_path(target, name), q.0);
        self.object(request(http::Method::PUT, uri, Some("application/json"), json_body(obj)?)?).await
    }

    async fn patch_subresource(
        &self,
        target: Target<'_>,
        name: &str,
        subresource: &str,
        patch: &Patch,
        params: &PatchParams,
    ) -> Result<DynamicObject> {
        self.patch_subresource_inner(target, name, Some(subresource), patch, params).await
    }

    async fn create_subresource(
        &self,
        target: Target<'_>,
        name: &str,
        subresource: &str,
        body: &serde_json::Value,
        params: &PostParams,
    ) -> Result<serde_json::Value> {
        let mut q = Query::default();
        q.dry_run(params.dry_run);
        let uri = format!("{}/{subresource}{}", object_path(target, name), q.0);
        self.send_json(request(http::Method::POST, uri, Some("application/json"), json_body(body)?)?).await
    }

    async fn logs(&self, namespace: &str, pod: &str, params: &LogParams) -> Result<LogStream> {
        let mut q = Query::default();
        q.opt("container", params.container.as_deref());
        q.flag("follow", params.follow);
        q.opt("tailLines", params.tail_lines.map(|n| n.to_string()));
        q.flag("timestamps", params.timestamps);
        q.flag("previous", params.previous);
        q.opt("sinceSeconds", params.since_seconds.map(|n| n.to_string()));
        q.opt("limitBytes", params.limit_bytes.map(|n| n.to_string()));
        let uri = format!("/api/v1/namespaces/{namespace}/pods/{pod}/log{}", q.0);
        let reader = self.inner.request_stream(request(http::Method::GET, uri, None, Vec::new())?).await.map_err(convert)?;
        let stream = futures::stream::unfold(reader, |mut reader| async move {
            let mut buf = vec![0u8; 8192];
            match futures::AsyncReadExt::read(&mut reader, &mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(bytes::Bytes::from(buf)), reader))
                }
                Err(e) => Some((Err(Error::unavailable(format!("log stream: {e}"))), reader)),
            }
        });
        Ok(stream.boxed())
    }
}

impl KubeClient {
    async fn patch_subresource_inner(
        &self,
        target: Target<'_>,
        name: &str,
        subresource: Option<&str>,
        patch: &Patch,
        params: &PatchParams,
    ) -> Result<DynamicObject> {
        let mut q = Query::default();
        q.dry_run(params.dry_run);
        q.opt("fieldManager", params.field_manager.as_deref());
        if matches!(patch, Patch::Apply(_)) {
            q.flag("force", params.force);
        }
        q.validation(params.field_validation);
        let sub = subresource.map(|s| format!("/{s}")).unwrap_or_default();
        let uri = format!("{}{sub}{}", object_path(target, name), q.0);
        self.object(request(http::Method::PATCH, uri, Some(patch.content_type()), json_body(patch.body())?)?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_percent_encode_selectors() {
        let q = list_query(&ListParams::default().labels("app in (a,b)").limit(500));
        assert_eq!(q.0, "?labelSelector=app%20in%20%28a%2Cb%29&limit=500");
    }

    #[test]
    fn watch_lines_parse_into_events() -> Result<()> {
        let added =
            parse_event(r#"{"type":"ADDED","object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","resourceVersion":"5"}}}"#)?;
        assert!(matches!(added, WatchEvent::Added(ref o) if o.metadata.name.as_deref() == Some("p")));
        let bookmark = parse_event(
            r#"{"type":"BOOKMARK","object":{"apiVersion":"v1","kind":"Pod","metadata":{"resourceVersion":"9","annotations":{"k8s.io/initial-events-end":"true"}}}}"#,
        )?;
        assert!(matches!(bookmark, WatchEvent::Bookmark(ref b) if b.resource_version == "9" && b.ends_initial_events()));
        let error = parse_event(
            r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","code":410,"reason":"Expired"}}"#,
        )?;
        assert!(matches!(error, WatchEvent::Error(ref s) if s.code == Some(410)));
        assert!(parse_event(r#"{"type":"WAT","object":{}}"#).is_err());
        Ok(())
    }

    #[test]
    fn delete_options_carry_policy_and_grace() {
        let body = delete_options(&DeleteParams::foreground().grace_period(0));
        assert_eq!(body["propagationPolicy"], "Foreground");
        assert_eq!(body["gracePeriodSeconds"], 0);
    }
}
