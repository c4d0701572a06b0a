//! The `Client` trait every component talks through, with its request parameters and watch events.

use crate::error::{Error, Result};
use crate::object::{DynamicObject, ObjectList};
use crate::resource::ApiResource;
use async_trait::async_trait;
use futures::stream::BoxStream;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How a list's `resourceVersion` is interpreted (`resourceVersionMatch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VersionMatch {
    /// Data at least as new as the given version.
    NotOlderThan,
    /// Data at exactly the given version.
    Exact,
}

impl VersionMatch {
    /// The query-string value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotOlderThan => "NotOlderThan",
            Self::Exact => "Exact",
        }
    }
}

/// Parameters of a list (and of the list half of a watch).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListParams {
    /// Label selector in string form, e.g. `app=web`.
    pub label_selector: Option<String>,
    /// Field selector in string form, e.g. `spec.nodeName=n1`.
    pub field_selector: Option<String>,
    /// Page size; `None` for everything at once.
    pub limit: Option<u32>,
    /// Continue token of the previous page.
    pub continue_token: Option<String>,
    /// Unset: a consistent (latest) read; `"0"`: any cached state; otherwise a version, see `version_match`.
    pub resource_version: Option<String>,
    /// How `resource_version` is matched.
    pub version_match: Option<VersionMatch>,
}

impl ListParams {
    /// Filters by a label selector.
    #[must_use]
    pub fn labels(mut self, selector: impl Into<String>) -> Self {
        self.label_selector = Some(selector.into());
        self
    }

    /// Filters by a field selector.
    #[must_use]
    pub fn fields(mut self, selector: impl Into<String>) -> Self {
        self.field_selector = Some(selector.into());
        self
    }

    /// Pages by this many items (default: no paging).
    #[must_use]
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Continues after a previous page.
    #[must_use]
    pub fn continue_from(mut self, token: impl Into<String>) -> Self {
        self.continue_token = Some(token.into());
        self
    }

    /// Reads at a resource version with this match rule (default: consistent read of the latest).
    #[must_use]
    pub fn at(mut self, resource_version: impl Into<String>, version_match: VersionMatch) -> Self {
        self.resource_version = Some(resource_version.into());
        self.version_match = Some(version_match);
        self
    }
}

/// Parameters of a watch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchParams {
    /// Label selector in string form.
    pub label_selector: Option<String>,
    /// Field selector in string form.
    pub field_selector: Option<String>,
    /// Events after this version; unset or `"0"` start with synthetic `ADDED` events for the current state.
    pub resource_version: Option<String>,
    /// The server ends the watch after this many seconds.
    pub timeout_seconds: Option<u32>,
    /// Ask for `BOOKMARK` events carrying the current version.
    pub allow_bookmarks: bool,
    /// Streaming list: send the current state as `ADDED` events first, then a bookmark
    /// annotated `k8s.io/initial-events-end: "true"`.
    pub send_initial_events: bool,
}

impl WatchParams {
    /// Watches from a resource version.
    #[must_use]
    pub fn from_version(mut self, resource_version: impl Into<String>) -> Self {
        self.resource_version = Some(resource_version.into());
        self
    }

    /// Filters by a label selector.
    #[must_use]
    pub fn labels(mut self, selector: impl Into<String>) -> Self {
        self.label_selector = Some(selector.into());
        self
    }

    /// Filters by a field selector.
    #[must_use]
    pub fn fields(mut self, selector: impl Into<String>) -> Self {
        self.field_selector = Some(selector.into());
        self
    }

    /// Asks for bookmarks (default: none).
    #[must_use]
    pub fn bookmarks(mut self) -> Self {
        self.allow_bookmarks = true;
        self
    }

    /// Ends the watch after this many seconds (default: the server's choice).
    #[must_use]
    pub fn timeout(mut self, seconds: u32) -> Self {
        self.timeout_seconds = Some(seconds);
        self
    }
}

/// How strictly the server checks a body for unknown or duplicate fields (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FieldValidation {
    /// Drop unknown fields silently.
    Ignore,
    /// Drop them and return a warning (the server's default).
    #[default]
    Warn,
    /// Refuse the request with 400.
    Strict,
}

/// Parameters of create and update.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostParams {
    /// Validate and default, but do not persist.
    pub dry_run: bool,
    /// Who is making the change, for `managedFields`.
    pub field_manager: Option<String>,
    /// Unknown-field handling.
    pub field_validation: Option<FieldValidation>,
}

/// A patch body, by patch type.
#[derive(Debug, Clone, PartialEq)]
pub enum Patch {
    /// `application/json-patch+json`: RFC 6902 operations (a JSON array).
    Json(serde_json::Value),
    /// `application/merge-patch+json`: RFC 7386.
    Merge(serde_json::Value),
    /// `application/strategic-merge-patch+json`: merge keys and `$patch` directives (built-in kinds only).
    Strategic(serde_json::Value),
    /// `application/apply-patch+yaml`: server-side apply of a fully specified intent.
    Apply(serde_json::Value),
}

impl Patch {
    /// The content type this patch is sent as.
    pub fn content_type(&self) -> &'static str {
        match self {
            Self::Json(_) => "application/json-patch+json",
            Self::Merge(_) => "application/merge-patch+json",
            Self::Strategic(_) => "application/strategic-merge-patch+json",
            Self::Apply(_) => "application/apply-patch+yaml",
        }
    }

    /// The patch body.
    pub fn body(&self) -> &serde_json::Value {
        match self {
            Self::Json(v) | Self::Merge(v) | Self::Strategic(v) | Self::Apply(v) => v,
        }
    }
}

/// Parameters of a patch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatchParams {
    /// Validate and default, but do not persist.
    pub dry_run: bool,
    /// Who is making the change; required for server-side apply.
    pub field_manager: Option<String>,
    /// Server-side apply: take ownership of conflicting fields instead of failing with 409.
    pub force: bool,
    /// Unknown-field handling.
    pub field_validation: Option<FieldValidation>,
}

impl PatchParams {
    /// Server-side apply as this field manager.
    pub fn apply(manager: impl Into<String>) -> Self {
        Self { field_manager: Some(manager.into()), ..Self::default() }
    }

    /// Takes over conflicting fields (default: conflicts fail).
    #[must_use]
    pub fn force(mut self) -> Self {
        self.force = true;
        self
    }
}

/// What happens to dependents when their owner is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PropagationPolicy {
    /// Leave dependents, clearing their owner references.
    Orphan,
    /// Delete the owner now and the dependents in the background.
    Background,
    /// Delete dependents first; the owner waits with the `foregroundDeletion` finalizer.
    Foreground,
}

/// Preconditions a delete checks before it acts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Preconditions {
    /// Delete only if the object has this UID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Delete only if the object is at this version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
}

/// Parameters of delete and delete-collection (the `DeleteOptions` body).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteParams {
    /// Validate, but do not delete.
    pub dry_run: bool,
    /// Seconds before a pod is killed; 0 deletes at once.
    pub grace_period_seconds: Option<u32>,
    /// Dependents' fate; the kind's default when unset.
    pub propagation_policy: Option<PropagationPolicy>,
    /// Checks made before deleting.
    pub preconditions: Option<Preconditions>,
}

impl DeleteParams {
    /// Deletes dependents in the background (the default for most kinds).
    pub fn background() -> Self {
        Self { propagation_policy: Some(PropagationPolicy::Background), ..Self::default() }
    }

    /// Deletes dependents first.
    pub fn foreground() -> Self {
        Self { propagation_policy: Some(PropagationPolicy::Foreground), ..Self::default() }
    }

    /// Orphans dependents.
    pub fn orphan() -> Self {
        Self { propagation_policy: Some(PropagationPolicy::Orphan), ..Self::default() }
    }

    /// Sets the grace period (default: the object's own).
    #[must_use]
    pub fn grace_period(mut self, seconds: u32) -> Self {
        self.grace_period_seconds = Some(seconds);
        self
    }
}

/// What a delete did.
#[derive(Debug, Clone, PartialEq)]
pub enum Deleted<K> {
    /// The object is gone; this was its last state.
    Now(K),
    /// Deletion has begun (`deletionTimestamp` set) and waits on finalizers or a grace period.
    Pending(K),
}

impl<K> Deleted<K> {
    /// The object, either way.
    pub fn into_inner(self) -> K {
        match self {
            Self::Now(k) | Self::Pending(k) => k,
        }
    }
}

/// Parameters of `pods/log`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogParams {
    /// The container; may be left out when the pod has one.
    pub container: Option<String>,
    /// Keep streaming new output.
    pub follow: bool,
    /// Only the last this many lines.
    pub tail_lines: Option<u64>,
    /// Prefix each line with an RFC 3339 timestamp.
    pub timestamps: bool,
    /// The previous (terminated) instance of the container.
    pub previous: bool,
    /// Only lines newer than this many seconds.
    pub since_seconds: Option<u64>,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
}

/// One event of a watch.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // events are moved once, boxing would cost an allocation each
pub enum WatchEvent<K> {
    /// An object appeared (or exists, for the initial events of a watch from `"0"`).
    Added(K),
    /// An object changed.
    Modified(K),
    /// An object was deleted; this is its last state.
    Deleted(K),
    /// Progress: the watch has seen everything up to this version.
    Bookmark(Bookmark),
    /// The server ended the watch with an error (410 `Expired` when the version is compacted).
    Error(Status),
}

/// The payload of a `BOOKMARK` event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bookmark {
    /// The version the watch has reached.
    pub resource_version: String,
    /// Annotations, e.g. `k8s.io/initial-events-end`.
    pub annotations: BTreeMap<String, String>,
}

impl Bookmark {
    /// The annotation that ends the initial events of a streaming list.
    pub const INITIAL_EVENTS_END: &'static str = "k8s.io/initial-events-end";

    /// Whether this bookmark ends the initial events of a streaming list.
    pub fn ends_initial_events(&self) -> bool {
        self.annotations.get(Self::INITIAL_EVENTS_END).is_some_and(|v| v == "true")
    }
}

impl<K> WatchEvent<K> {
    /// Converts the object of the event.
    pub fn try_map<T>(self, f: impl FnOnce(K) -> Result<T>) -> Result<WatchEvent<T>> {
        Ok(match self {
            Self::Added(k) => WatchEvent::Added(f(k)?),
            Self::Modified(k) => WatchEvent::Modified(f(k)?),
            Self::Deleted(k) => WatchEvent::Deleted(f(k)?),
            Self::Bookmark(b) => WatchEvent::Bookmark(b),
            Self::Error(s) => WatchEvent::Error(s),
        })
    }

    /// The wire name of the event type: `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`, `ERROR`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Added(_) => "ADDED",
            Self::Modified(_) => "MODIFIED",
            Self::Deleted(_) => "DELETED",
            Self::Bookmark(_) => "BOOKMARK",
            Self::Error(_) => "ERROR",
        }
    }
}

/// A stream of watch events; a stream error ends the watch.
pub type WatchStream = BoxStream<'static, Result<WatchEvent<DynamicObject>>>;

/// A stream of log bytes.
pub type LogStream = BoxStream<'static, Result<bytes::Bytes>>;

/// Where a request goes: a resource, a namespace (for namespaced kinds) and possibly a name.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The resource.
    pub resource: &'a ApiResource,
    /// The namespace; `None` for cluster-scoped kinds or across all namespaces.
    pub namespace: Option<&'a str>,
}

impl<'a> Target<'a> {
    /// A target in a namespace (ignored for cluster-scoped kinds).
    pub fn new(resource: &'a ApiResource, namespace: Option<&'a str>) -> Self {
        Self { resource, namespace: namespace.filter(|_| resource.namespaced) }
    }
}

/// The API every bosun component talks through: in-process over the store, over HTTP to a bosun
/// API server, or to a real Kubernetes cluster. Object-safe: hold it as `Arc<dyn Client>`.
///
/// Objects travel as [`DynamicObject`]; the typed facade [`Api`](crate::Api) converts.
#[async_trait]
pub trait Client: Send + Sync + 'static {
    /// Reads one object.
    async fn get(&self, target: Target<'_>, name: &str) -> Result<DynamicObject>;

    /// Lists objects (one page when `limit` is set).
    async fn list(&self, target: Target<'_>, params: &ListParams) -> Result<ObjectList<DynamicObject>>;

    /// Creates an object; `metadata.name` or `metadata.generateName` must be set.
    async fn create(&self, target: Target<'_>, obj: &DynamicObject, params: &PostParams) -> Result<DynamicObject>;

    /// Replaces an object; a set `metadata.resourceVersion` that is not current fails with 409.
    async fn update(&self, target: Target<'_>, obj: &DynamicObject, params: &PostParams) -> Result<DynamicObject>;

    /// Patches an object (server-side apply creates it when absent).
    async fn patch(&self, target: Target<'_>, name: &str, patch: &Patch, params: &PatchParams) -> Result<DynamicObject>;

    /// Deletes an object.
    async fn delete(&self, target: Target<'_>, name: &str, params: &DeleteParams) -> Result<Deleted<DynamicObject>>;

    /// Deletes every object the list parameters select; returns what was deleted or began deleting.
    async fn delete_collection(&self, target: Target<'_>, list: &ListParams, params: &DeleteParams) -> Result<ObjectList<DynamicObject>>;

    /// Watches for changes.
    async fn watch(&self, target: Target<'_>, params: &WatchParams) -> Result<WatchStream>;

    /// Reads a subresource (`status`, `scale`).
    async fn get_subresource(&self, target: Target<'_>, name: &str, subresource: &str) -> Result<DynamicObject>;

    /// Replaces a subresource (`status`, `scale`).
    async fn update_subresource(
        &self,
        target: Target<'_>,
        name: &str,
        subresource: &str,
        obj: &DynamicObject,
        params: &PostParams,
    ) -> Result<DynamicObject>;

    /// Patches a subresource (`status`, `scale`).
    async fn patch_subresource(
        &self,
        target: Target<'_>,
        name: &str,
        subresource: &str,
        patch: &Patch,
        params: &PatchParams,
    ) -> Result<DynamicObject>;

    /// Posts to a subresource (`binding`, `eviction`); returns the response body (often a `Status`).
    async fn create_subresource(
        &self,
        target: Target<'_>,
        name: &str,
        subresource: &str,
        body: &serde_json::Value,
        params: &PostParams,
    ) -> Result<serde_json::Value>;

    /// Streams a pod's container log. Backends without nodes answer 405.
    async fn logs(&self, namespace: &str, pod: &str, params: &LogParams) -> Result<LogStream> {
        let _ = (namespace, pod, params);
        Err(Error::method_not_allowed("this client serves no pod logs"))
    }
}
