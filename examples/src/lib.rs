//! The reference cluster and small examples of each extension point.
//!
//! Start with [`cluster::Cluster`]: every bosun component composed in one process.

pub mod cluster;
pub mod haproxy;
pub mod image_policy;
mod local_nodes;
pub mod node_endpoint;
pub mod prefixed;
pub mod reloader;
pub mod scheduling;
pub mod timed;

pub use cluster::{Cluster, ClusterConfig, ProxyChoice, Role, RuntimeChoice, StoreChoice};
