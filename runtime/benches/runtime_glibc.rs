//! The `runtime` bench on the system allocator (glibc malloc), to compare with mimalloc: run both
//! binaries alternately. Its lines are the same; the first says which allocator ran.

#[path = "shared/bench.rs"]
mod bench;
#[path = "shared/counting.rs"]
mod counting;

fn main() {
    bench::main("glibc malloc");
}
