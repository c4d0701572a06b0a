//! The one error type of the patch engine, and how it maps onto Kubernetes `Status` reasons.

use bosun_core::ErrorBody;
use bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};

/// `Result` with [`PatchError`] as the default error.
pub type Result<T, E = PatchError> = std::result::Result<T, E>;

/// The `StatusCause.reason` of each server-side apply conflict.
pub const FIELD_MANAGER_CONFLICT: &str = "FieldManagerConflict";

/// One field that another manager owns with a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldConflict {
    /// The manager that owns the field.
    pub manager: String,
    /// The `apiVersion` that manager used.
    pub api_version: String,
    /// The manager's operation: `Apply` or `Update`.
    pub operation: String,
    /// When the manager last wrote (RFC 3339), for `Update` managers.
    pub time: Option<String>,
    /// The subresource the manager wrote through, if any.
    pub subresource: Option<String>,
    /// The field, as structured-merge-diff prints it: `.spec.template.spec.containers[name="web"].image`.
    pub field: String,
}

impl FieldConflict {
    /// The manager as kube-apiserver prints it in conflicts: `"kubectl"` for an applier,
    /// `"hpa" using apps/v1 at 2026-01-01T00:00:00Z` for an updater, plus the subresource.
    pub fn manager_display(&self) -> String {
        let mut out = format!("{:?}", self.manager);
        if let Some(sub) = &self.subresource {
            out.push_str(&format!(" with subresource {sub:?}"));
        }
        if self.operation == "Update" {
            out.push_str(&format!(" using {}", self.api_version));
            if let Some(time) = &self.time {
                out.push_str(&format!(" at {time}"));
            }
        }
        out
    }
}

/// Why a patch could not be applied. Each variant maps onto the `Status` kube-apiserver answers with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PatchError {
    /// 400 `BadRequest`: the patch document is malformed for its patch type.
    #[error("{0}")]
    Malformed(String),
    /// 400 `BadRequest`: the body is not valid JSON or YAML; `line` and `column` are 1-based.
    #[error("error parsing body at line {line}, column {column}: {message}")]
    Parse {
        /// What the parser says.
        message: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
    },
    /// 422 `Invalid`: the patch is well formed but cannot be applied to this object
    /// (a JSON patch path that does not exist, a failed `test`, a list of lists).
    #[error("{0}")]
    Unprocessable(String),
    /// 415 `UnsupportedMediaType`: strategic merge patch on a kind without Go struct tags (custom resources).
    #[error(
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    )]
    StrategicUnsupported {
        /// `group/version, Kind=...` of the resource, for logs.
        kind: String,
    },
    /// 409 `Conflict`: server-side apply would change fields that other managers own.
    #[error("{}", conflict_message(.0))]
    Conflict(Vec<FieldConflict>),
}

fn conflict_message(conflicts: &[FieldConflict]) -> String {
    if let [c] = conflicts {
        return format!("Apply failed with 1 conflict: conflict with {}: {}", c.manager_display(), c.field);
    }
    let mut by_manager: std::collections::BTreeMap<String, Vec<&str>> = std::collections::BTreeMap::new();
    for c in conflicts {
        by_manager.entry(c.manager_display()).or_default().push(&c.field);
    }
    let mut lines = Vec::new();
    for (manager, fields) in by_manager {
        lines.push(format!("conflicts with {manager}:"));
        lines.extend(fields.into_iter().map(|f| format!("- {f}")));
    }
    format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
}

impl PatchError {
    /// The HTTP status code this error is answered with.
    pub fn code(&self) -> u16 {
        match self {
            Self::Malformed(_) | Self::Parse { .. } => 400,
            Self::Unprocessable(_) => 422,
            Self::StrategicUnsupported { .. } => 415,
            Self::Conflict(_) => 409,
        }
    }

    pub(crate) fn malformed(msg: impl Into<String>) -> Self {
        Self::Malformed(msg.into())
    }

    pub(crate) fn unprocessable(msg: impl Into<String>) -> Self {
        Self::Unprocessable(msg.into())
    }
}

impl From<PatchError> for bosun_core::Error {
    fn from(err: PatchError) -> Self {
        let message = err.to_string();
        match err {
            PatchError::Malformed(_) | PatchError::Parse { .. } => Self::BadRequest(ErrorBody::new(message)),
            PatchError::Unprocessable(_) => Self::Invalid(ErrorBody::new(message)),
            PatchError::StrategicUnsupported { .. } => Self::UnsupportedMediaType(ErrorBody::new(message)),
            PatchError::Conflict(conflicts) => {
                let causes = conflicts
                    .into_iter()
                    .map(|c| StatusCause {
                        message: Some(format!("conflict with {}", c.manager_display())),
                        field: Some(c.field),
                        reason: Some(FIELD_MANAGER_CONFLICT.to_owned()),
                    })
                    .collect();
                Self::Conflict(Box::new(ErrorBody {
                    message,
                    details: Some(StatusDetails { causes: Some(causes), ..StatusDetails::default() }),
                }))
            }
        }
    }
}
