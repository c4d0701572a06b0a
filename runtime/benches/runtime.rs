//! Runtime benchmarks (placeholder until written).
fn main() {}
