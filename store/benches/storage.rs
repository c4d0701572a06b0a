//! Storage benchmark (filled in below): durable vs memory vs etcd.

fn main() {}
