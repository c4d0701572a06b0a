//! The error every [`ContainerRuntime`](crate::ContainerRuntime) and [`ImageStore`](crate::ImageStore) call returns.

use std::path::PathBuf;

/// What went wrong in a runtime or image operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// No sandbox, container or image with this id.
    #[error("{kind} {id:?} not found")]
    NotFound {
        /// `sandbox`, `container` or `image`.
        kind: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The image is not in the local store (no registry is reachable).
    #[error("image {0:?} not found in the local image store")]
    ImageNotFound(String),
    /// The request is malformed or contradicts the object's state.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The backend cannot do this (see [`Capabilities`](crate::Capabilities)).
    #[error("unsupported by this runtime: {0}")]
    Unsupported(String),
    /// A volume could not be mounted into the container.
    #[error("cannot mount volume at {mount_path:?}: {reason}")]
    Mount {
        /// The container path of the mount.
        mount_path: String,
        /// Why it failed.
        reason: String,
    },
    /// A file-system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An external tool (runc, a CNI plugin, tar) failed.
    #[error("{program} failed ({status}): {stderr}")]
    Command {
        /// The program that ran.
        program: String,
        /// Its exit status, as text.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A state file could not be read or written.
    #[error("state file {path:?}: {message}")]
    State {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
}

impl RuntimeError {
    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io { context: context.into(), source }
    }

    /// A missing object.
    pub fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        Self::NotFound { kind, id: id.into() }
    }

    /// Whether this is a missing object.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}

/// The result of runtime operations.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
