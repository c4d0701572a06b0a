//! Cluster state: the `Storage` trait with its backends, the Kubernetes API semantics and the REST server.

pub mod patch;
pub mod storage;

pub use storage::{KeyValue, MemoryStorage, Revision, Storage, StorageError};
