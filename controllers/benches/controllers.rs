//! Controller benchmarks (filled in below).

fn main() {}
