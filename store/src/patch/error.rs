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
    /// The field, as structured-merge-diff prints it: `.spec.template.spec.containers[name="web"].image`.
    pub field: String,
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
    let n = conflicts.len();
    let mut out = format!("Apply failed with {n} conflict{}: ", if n == 1 { "" } else { "s" });
    if n == 1 {
        let c = &conflicts[0];
        out.push_str(&format!("conflict with \"{}\" using {}: {}", c.manager, c.api_version, c.field));
        return out;
    }
    let mut lines = Vec::new();
    let mut i = 0;
    while i < n {
        let (m, v) = (&conflicts[i].manager, &conflicts[i].api_version);
        lines.push(format!("conflicts with \"{m}\" using {v}:"));
        while i < n && &conflicts[i].manager == m && &conflicts[i].api_version == v {
            lines.push(format!("- {}", conflicts[i].field));
            i += 1;
        }
    }
    out.push_str(&lines.join("\n"));
    out
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
                        field: Some(c.field),
                        message: Some(format!("conflict with \"{}\" using {}", c.manager, c.api_version)),
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
