//! Load benchmark of the HTTP API server (filled in below).
fn main() {}
