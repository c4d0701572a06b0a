//! End-to-end tests: the reference cluster driven by the real `kubectl`.

mod attach;
mod debug;
mod etcd;
mod exec;
mod healing;
mod kubectl;
mod port_forward;
mod quickstart;
mod remote_node;
mod roles;
mod runc_nftables;
mod statefulset;
