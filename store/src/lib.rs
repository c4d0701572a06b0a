//! Cluster state: the `Storage` trait with its backends, the Kubernetes API semantics and the REST server.

pub mod api;
pub mod http;
pub mod patch;
pub mod protobuf;
pub mod storage;

pub use api::{ApiServer, ApiServerBuilder};
pub use http::{HttpConfig, Server as HttpServer, serve};
pub use storage::{DurableStorage, KeyValue, MemoryStorage, Revision, Storage, StorageError};
