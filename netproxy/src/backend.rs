//! The trait every service proxy backend implements: apply a diff of the service table.

use crate::table::TableDiff;

/// A backend failed to apply a diff; the caller resends the whole table later.
#[derive(Debug, thiserror::Error)]
#[error("{backend}: apply failed")]
pub struct ApplyError {
    /// The backend's name.
    pub backend: &'static str,
    /// Why.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl ApplyError {
    /// Wraps a backend's own error.
    pub fn new(backend: &'static str, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self { backend, source: source.into() }
    }
}

/// A service proxy backend. It receives only what changed since its last successful apply (a change costs
/// O(change)), and a full resync (`diff.full`) on start and after a failed apply.
#[async_trait::async_trait]
pub trait ProxyBackend: Send + Sync + 'static {
    /// A short name for logs.
    fn name(&self) -> &'static str;

    /// Applies a diff. On error the backend may be half-updated; the caller follows with a full resync.
    async fn apply(&self, diff: &TableDiff) -> Result<(), ApplyError>;
}
