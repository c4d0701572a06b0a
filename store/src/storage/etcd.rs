//! `EtcdStorage`: a real etcd cluster through `etcd-client` (being written).

/// A [`Storage`](super::Storage) over etcd (being written).
#[derive(Debug)]
pub struct EtcdStorage;
