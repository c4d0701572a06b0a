//! Integration tests of the controller runtime and the built-in controllers, on the in-process
//! API server and tokio's paused clock.

mod cluster;
mod cronjobs;
mod daemonsets;
mod disruption;
mod hpa;
mod jobs;
mod nodes;
mod runtime;
mod statefulsets;
mod support;
mod volumes;
mod workloads;
