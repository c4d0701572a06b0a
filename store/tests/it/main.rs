//! The store crate's integration tests: one binary, one module per area.

mod api;
mod api_deletion;
mod api_subresources;
mod api_watch;
mod ephemeral;
mod http;
mod http_fields;
mod http_kube;
mod http_watch;
mod kubectl;
mod kubectl_more;
mod kubectl_portforward;
mod metrics;
mod patch;
mod protobuf;
mod robustness;
mod storage;
mod storage_durable;
mod storage_etcd;
mod write_path;
