//! The patch engine: JSON patch, JSON merge patch, strategic merge patch and server-side apply,
//! as pure functions over `serde_json::Value` with no I/O and no tie to the rest of the store.
//!
//! # Entry points
//! - [`apply_patch`]`(resource, live, patch, ctx)`: one call for any [`bosun_core::Patch`]. For
//!   [`Patch::Apply`] pass `Value::Null` as `live` when the object does not exist (apply creates
//!   it); the other patch types need an existing object (the caller answers 404 first).
//! - The individual functions: [`json_patch()`], [`merge_patch()`],
//!   [`strategic_merge_patch`]`(Node::for_kind(..), live, patch)`, [`server_side_apply`].
//! - [`record_update`]`(resource, old, &mut new, ctx)`: after every ordinary write (create, update,
//!   JSON/merge/strategic patch; not after an apply, which records itself) it credits the
//!   changed fields to `ctx.field_manager` as an `Update` in `metadata.managedFields`, taking
//!   them from other managers; managedFields rewritten by the request itself (kubectl's
//!   client-side to server-side apply migration) are honoured, `[{}]` clears them.
//! - [`parse_yaml_or_json`] for request bodies (apply bodies arrive as YAML), with line and column
//!   in errors.
//! - [`Node`] tells the merge key, patch strategy, list type and map keys of any field of a
//!   built-in kind (`Node::at_path("apps", "v1", "Deployment", "spec.template.spec.containers")`).
//!
//! # Errors
//! [`PatchError`] converts into [`bosun_core::Error`] with the code kube-apiserver uses:
//! 400 `BadRequest` for a malformed patch or body ([`PatchError::Malformed`],
//! [`PatchError::Parse`]); 422 `Invalid` for a well-formed patch that cannot apply (a JSON patch
//! path that does not exist, a failed `test`, a list of lists, a list item without its merge key);
//! 415 `UnsupportedMediaType` for strategic merge patch on a custom resource; 409 `Conflict` for
//! server-side apply conflicts, with one `FieldManagerConflict` cause per field
//! (`field: ".spec.replicas"`, `message: conflict with "kubectl" using apps/v1`).
//!
//! # Server-side apply
//! The applied intent merges into the live object by the kind's schema (associative lists by
//! their keys, sets by value, atomic lists and maps whole; custom resources by the schema in
//! [`ApplyContext::schema`]). Each manager owns the fields it applied; applying a different value
//! to a field another manager owns is a conflict unless `force`, which takes it over; fields a
//! manager applied before and no longer applies are removed unless another manager owns them.
//! On the main resource of a kind with a `status` subresource, `status` is neither applied nor
//! tracked; on `status`, only `status` is. An object that has no `managedFields` yet is credited
//! to `before-first-apply`.
//!
//! Nothing here touches `metadata.resourceVersion`, defaulting or validation: the caller runs the
//! patched object through the same path as an update.

pub mod apply;
pub mod error;
pub mod fieldpath;
pub mod json_patch;
pub mod managed;
pub mod merge_patch;
pub mod schema;
mod schema_table;
pub mod strategic;
pub mod structured;
pub mod yaml;

use bosun_core::{ApiResource, Patch};
use serde_json::Value;

pub use apply::{ManagedFieldsEntry, record_update, server_side_apply};
pub use error::{FIELD_MANAGER_CONFLICT, FieldConflict, PatchError, Result};
pub use json_patch::json_patch;
pub use merge_patch::merge_patch;
pub use schema::Node;
pub use strategic::{has_top_level_directives, strategic_merge_fields, strategic_merge_patch};
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
    /// A custom resource's structural schema (`spec.versions[].schema.openAPIV3Schema`), whose
    /// `x-kubernetes-list-type`, `x-kubernetes-list-map-keys` and `x-kubernetes-map-type` steer
    /// server-side apply; without it, maps merge by key and lists are atomic. Built-in kinds
    /// use their own tables and ignore it.
    pub schema: Option<std::sync::Arc<Value>>,
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

    /// Uses this custom resource schema for server-side apply (default: none).
    #[must_use]
    pub fn schema(mut self, schema: std::sync::Arc<Value>) -> Self {
        self.schema = Some(schema);
        self
    }

    /// Records the write as made to this subresource (default: the main resource).
    #[must_use]
    pub fn subresource(mut self, subresource: impl Into<String>) -> Self {
        self.subresource = Some(subresource.into());
        self
    }
}

/// Applies any patch type to `live` for the resource `resource` and returns the patched object.
///
/// `live` is the stored object as JSON. JSON, merge and strategic merge patches need it to
/// exist (the caller answers 404 otherwise); server-side apply takes `Value::Null` for an object
/// that does not exist yet and creates it. Strategic merge patch on a kind that is not built in
/// is [`PatchError::StrategicUnsupported`] (415). Only server-side apply reads `ctx` and updates
/// `metadata.managedFields`; after the other patch types call [`record_update`].
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
