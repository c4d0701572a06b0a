//! Pod start latency (bound → Running) for the process and runc backends, and 100 hollow nodes ×
//! 100 pods on the fake runtime, all against the in-memory API server, allocating with mimalloc
//! (`runtime_glibc` is the same bench on glibc malloc, for comparison).
//!
//! `cargo bench -p bosun-runtime --bench runtime`; ends with `BENCH name=value` lines. See
//! `shared/bench.rs` for the `BOSUN_BENCH_ONLY` filters.

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "shared/bench.rs"]
mod bench;
#[path = "shared/counting.rs"]
mod counting;

fn main() {
    bench::main("mimalloc");
}
