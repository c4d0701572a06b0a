//! The patch engine: JSON patch, JSON merge patch, strategic merge patch and server-side apply,
//! as pure functions over `serde_json::Value` with no I/O and no tie to the rest of the store.
//!
//! # Entry points
//! - [`apply_patch`]: one call for any [`bosun_core::Patch`], given the resource, the live object
//!   and an [`ApplyContext`]. Returns the patched object or a [`PatchError`], which converts into
//!   [`bosun_core::Error`] with the code kube-apiserver uses (400 malformed patch, 422 patch that
//!   cannot apply, 415 strategic merge patch on a custom resource, 409 apply conflicts).
//! - The individual functions: [`json_patch()`], [`merge_patch()`], [`strategic_merge_patch`].
//! - [`parse_yaml_or_json`] for request bodies (apply bodies arrive as YAML), with line and column
//!   in errors.
//! - [`schema::Node`] tells the merge key, patch strategy and list type of any field of a
//!   built-in kind (`Node::at_path("apps", "v1", "Deployment", "spec.template.spec.containers")`).
//!
//! Nothing here touches `metadata.resourceVersion`, defaulting or validation: the caller runs the
//! patched object through the same path as an update.

pub mod apply;
pub mod error;
pub mod fieldpath;
pub mod json_patch;
pub mod merge_patch;
pub mod schema;
mod schema_table;
pub mod strategic;
pub mod yaml;

use bosun_core::{ApiResource, Patch};
use serde_json::Value;

pub use apply::{ManagedFieldsEntry, record_update, server_side_apply};
pub use error::{FIELD_MANAGER_CONFLICT, FieldConflict, PatchError, Result};
pub use json_patch::json_patch;
pub use merge_patch::merge_patch;
pub use schema::Node;
pub use strategic::strategic_merge_patch;
pub use yaml::parse_yaml_or_json;

/// Who applies a patch and how: the field manager, `force`, the time recorded in `managedFields`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyContext {
    /// The field manager (`?fieldManager=`); required for server-side apply.
    pub field_manager: Option<String>,
    /// Server-side apply takes over conflicting fields instead of failing with 409.
    pub force: bool,
    /// The RFC 3339 time written into `managedFields` entries (default: now).
    pub time: Option<String>,
    /// The subresource being written (`status`, `scale`), recorded in `managedFields`.
    pub subresource: Option<String>,
}

impl ApplyContext {
    /// A context for this field manager, not forcing.
    pub fn new(field_manager: impl Into<String>) -> Self {
        Self { field_manager: Some(field_manager.into()), ..Self::default() }
    }

    /// The context a request's [`bosun_core::PatchParams`] describe.
    pub fn from_params(params: &bosun_core::PatchParams) -> Self {
        Self { field_manager: params.field_manager.clone(), force: params.force, ..Self::default() }
    }

    /// Takes over conflicting fields (default: conflicts fail with 409).
    #[must_use]
    pub fn force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }

    /// Records this RFC 3339 time in `managedFields` (default: the current time).
    #[must_use]
    pub fn time(mut self, time: impl Into<String>) -> Self {
        self.time = Some(time.into());
        self
    }

    /// Records the write as made to this subresource (default: the main resource).
    #[must_use]
    pub fn subresource(mut self, subresource: impl Into<String>) -> Self {
        self.subresource = Some(subresource.into());
        self
    }
}

/// Applies any patch type to `live` for the resource `resource`.
///
/// `live` is the stored object. JSON, merge and strategic merge patches need it to exist (the
/// caller answers 404 otherwise).
pub fn apply_patch(resource: &ApiResource, live: &Value, patch: &Patch, ctx: &ApplyContext) -> Result<Value> {
    match patch {
        Patch::Json(p) => json_patch(live, p),
        Patch::Merge(p) => merge_patch(live, p),
        Patch::Strategic(p) => strategic_merge_patch(builtin_schema(resource)?, live, p),
        Patch::Apply(p) => server_side_apply(resource, live, p, ctx),
    }
}

/// The schema root of a built-in kind; custom resources get 415 for strategic merge patch.
pub fn builtin_schema(resource: &ApiResource) -> Result<Node> {
    Node::for_kind(&resource.group, &resource.version, &resource.kind)
        .ok_or_else(|| PatchError::StrategicUnsupported { kind: format!("{}, Kind={}", resource.api_version(), resource.kind) })
}
