//! Cluster state: the `Storage` trait with its backends, the Kubernetes API semantics and the REST server.
