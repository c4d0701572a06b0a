//! Label and field selectors: parsed from strings and from `LabelSelector`, matched against objects.

mod field;
mod label;

pub use field::{FieldRequirement, FieldSelector};
pub use label::{LabelSelector, Operator, Requirement};

/// Why a selector string or `LabelSelector` could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse selector {input:?} at position {position}: {reason}")]
pub struct ParseSelectorError {
    /// The selector as given.
    pub input: String,
    /// Byte offset where parsing failed.
    pub position: usize,
    /// What was expected or wrong.
    pub reason: String,
}

impl From<ParseSelectorError> for crate::Error {
    fn from(err: ParseSelectorError) -> Self {
        crate::Error::bad_request(err.to_string())
    }
}
