//! Integration tests of the examples' reusable parts, through their public API only.

mod custom_proxy;
mod custom_storage;
mod kube_adapter;
mod node_endpoint;
mod scheduler_plugin;
