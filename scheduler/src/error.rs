//! The scheduler's error type.

/// What can go wrong setting up or running the scheduler.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A profile is not usable (no QueueSort, no Bind, a bad weight...).
    #[error("invalid profile: {0}")]
    InvalidProfile(String),
    /// The API refused a request.
    #[error("api request failed: {0}")]
    Api(#[from] bosun_core::Error),
    /// The scheduler's cache refused a change.
    #[error("cache: {0}")]
    Cache(#[from] crate::cache::CacheError),
}

/// `Result` with the scheduler's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
