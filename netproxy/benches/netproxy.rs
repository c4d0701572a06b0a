//! Benchmarks of bosun-netproxy (filled in below).
fn main() {}
