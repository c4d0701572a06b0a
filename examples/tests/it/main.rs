//! Integration tests of the examples' reusable parts, through their public API only.

mod custom_proxy;
mod custom_storage;
mod image_policy;
mod kube_adapter;
mod node_endpoint;
mod scheduler_plugin;
