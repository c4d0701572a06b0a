//! Storage benchmark: the same workload against `DurableStorage`, `MemoryStorage` and a real
//! etcd started here, in one run.
//!
//! Workload (per backend): 1 KiB values; 100k creates from 64 concurrent writers (plus a
//! one-writer and a 512-writer run); ranged reads of 10k keys; a paged read of every key; then watch fan-out: 1,000
//! watchers each receiving every one of 10k events written at a steady rate, reporting delivery
//! latency (from the event's commit to the watcher's receipt) at p50 and p99, and the p99 from
//! the writer's call (commit and fsync included). etcd gets
//! fewer fan-out watchers by default (every watcher is a gRPC stream through one client).
//!
//! Durability is equal: a write is acknowledged once fsync'd, by etcd's WAL and by ours.
//!
//! Knobs (environment): `BENCH_WRITES` (100000), `BENCH_FANOUT_WATCHERS` (1000),
//! `BENCH_FANOUT_EVENTS` (10000), `BENCH_FANOUT_RATE` (events/s, 1000),
//! `BENCH_ETCD_WATCHERS` (100).
//!
//! Run: `cargo bench -p bosun-store --bench storage`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bosun_store::storage::etcd::EtcdStorage;
use bosun_store::storage::etcd_server::EtcdCluster;
use bosun_store::storage::{RangeRequest, WatchEvent, WatchOptions};
use bosun_store::{DurableStorage, MemoryStorage, Storage};
use bytes::Bytes;
use futures::StreamExt;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn value(i: u64) -> Bytes {
    let mut v = vec![b'x'; 1024];
    v[..8].copy_from_slice(&i.to_le_bytes());
    Bytes::from(v)
}

/// `total` creates from `writers` concurrent tasks; returns writes per second.
async fn writes(s: Arc<dyn Storage>, prefix: &str, writers: usize, total: usize) -> f64 {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let s = s.clone();
            let next = next.clone();
            let prefix = prefix.to_owned();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total as u64 {
                        break;
                    }
                    if let Err(e) = s.create(&format!("{prefix}{i:08}"), value(i), None).await {
                        panic!("create failed: {e}");
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer");
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// Reads 10k keys in one range, repeatedly; returns milliseconds per 10k-key range.
async fn ranges(s: &dyn Storage, prefix: &str) -> f64 {
    let rounds = 10;
    let start = Instant::now();
    for _ in 0..rounds {
        let r = s.range(RangeRequest::prefix(prefix).limit(10_000)).await.expect("range");
        assert_eq!(r.kvs.len(), 10_000);
    }
    start.elapsed().as_secs_f64() * 1000.0 / f64::from(rounds)
}

/// Reads every key under `prefix` in pages of 500 (kubectl's chunk size), as the API server pages
/// a list from storage: `without_total` (as the API server asks; etcd counts anyway), or with each
/// page counting the rest of the range; returns (milliseconds for the whole read, keys read).
async fn paged(s: &dyn Storage, prefix: &str, without_total: bool) -> (f64, usize) {
    let start = Instant::now();
    let (mut after, mut keys) = (None::<String>, 0);
    loop {
        let mut req = RangeRequest::prefix(prefix).limit(500);
        if without_total {
            req = req.without_total();
        }
        if let Some(a) = after.take() {
            req = req.start_after(a);
        }
        let r = s.range(req).await.expect("page");
        keys += r.kvs.len();
        after = r.kvs.last().map(|kv| kv.key.to_string());
        if !r.more || after.is_none() {
            break;
        }
    }
    (start.elapsed().as_secs_f64() * 1000.0, keys)
}

/// `watchers` watchers each receive `events` events written at `rate` per second by 64 writers;
/// returns (p50, p99) delivery latency in milliseconds from the event's commit, and the p99 from
/// the moment its writer called `create` (which includes the write's own commit: its fsync).
///
/// The commit instant is not visible outside the store, so it is taken as the first sign of it:
/// the writer's acknowledgement or the first watcher's receipt, whichever came first. Both
/// follow the publish, so the first figure slightly understates delivery latency (by the
/// fastest watcher's wake-up); the second is an upper bound.
async fn fanout(s: Arc<dyn Storage>, prefix: &str, watchers: usize, events: usize, rate: usize) -> (f64, f64, f64) {
    let base = s.current_revision().await.expect("rev");
    let epoch = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..watchers {
        let mut w = s.watch(prefix, base, WatchOptions::default()).await.expect("watch");
        handles.push(tokio::spawn(async move {
            let mut recv = vec![0u64; events];
            let mut got = 0;
            // One deadline for the whole run, not a timer armed per event: a per-event timeout
            // registered and cancelled a timer a million times a second, which is the bench's
            // own work and not delivery.
            let receive = async {
                while got < events {
                    match w.next().await {
                        Some(Ok(WatchEvent::Put { kv, .. })) => {
                            let mut idx = [0u8; 8];
                            idx.copy_from_slice(&kv.value[..8]);
                            recv[u64::from_le_bytes(idx) as usize] = epoch.elapsed().as_nanos() as u64;
                            got += 1;
                        }
                        Some(Ok(_)) => {}
                        other => panic!("watcher stopped after {got} events: {other:?}"),
                    }
                }
            };
            let deadline = Duration::from_secs(60) + Duration::from_secs_f64(events as f64 / rate as f64);
            if tokio::time::timeout(deadline, receive).await.is_err() {
                panic!("watcher received only {got} of {events} events in {deadline:?}");
            }
            recv
        }));
    }
    let acks: Arc<Vec<AtomicU64>> = Arc::new((0..events).map(|_| AtomicU64::new(0)).collect());
    let submits: Arc<Vec<AtomicU64>> = Arc::new((0..events).map(|_| AtomicU64::new(0)).collect());
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = tokio::time::Instant::now();
    let writers: Vec<_> = (0..64)
        .map(|w| {
            let s = s.clone();
            let acks = acks.clone();
            let submits = submits.clone();
            let prefix = prefix.to_owned();
            tokio::spawn(async move {
                for i in (w..events).step_by(64) {
                    tokio::time::sleep_until(start + interval * i as u32).await;
                    submits[i].store(epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    s.create(&format!("{prefix}{i:08}"), value(i as u64), None).await.expect("create");
                    acks[i].store(epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    let mut received = Vec::with_capacity(watchers);
    for h in handles {
        received.push(h.await.expect("watcher"));
    }
    // An event is committed when it is published: no later than its acknowledgement, and no
    // later than the first watcher's receipt (a durable write is published before its writer
    // wakes up).
    let committed: Vec<u64> =
        (0..events).map(|i| received.iter().map(|r| r[i]).min().unwrap_or(u64::MAX).min(acks[i].load(Ordering::Relaxed))).collect();
    let mut latencies: Vec<u32> = Vec::with_capacity(watchers * events);
    let mut from_write: Vec<u32> = Vec::with_capacity(watchers * events);
    for recv in &received {
        for (i, r) in recv.iter().enumerate() {
            latencies.push((r.saturating_sub(committed[i]) / 1000) as u32);
            from_write.push((r.saturating_sub(submits[i].load(Ordering::Relaxed)) / 1000) as u32);
        }
    }
    let pct = |p: f64, l: &mut Vec<u32>| {
        let idx = ((l.len() as f64 * p) as usize).min(l.len() - 1);
        *l.select_nth_unstable(idx).1 as f64 / 1000.0
    };
    (pct(0.50, &mut latencies), pct(0.99, &mut latencies), pct(0.99, &mut from_write))
}

struct Figures {
    name: &'static str,
    lines: Vec<(String, f64)>,
}

async fn run(name: &'static str, s: Arc<dyn Storage>, watchers: usize) -> Figures {
    let total = env("BENCH_WRITES", 100_000);
    let events = env("BENCH_FANOUT_EVENTS", 10_000);
    let rate = env("BENCH_FANOUT_RATE", 1_000);
    let mut lines = Vec::new();
    let w1 = writes(s.clone(), "/bench/w1/", 1, (total / 50).max(200)).await;
    println!("{name}: 1 writer: {w1:.0} writes/s");
    lines.push((format!("storage.{name}.writes_per_s_1_writer"), w1));
    let w64 = writes(s.clone(), "/bench/w64/", 64, total).await;
    println!("{name}: 64 writers, {total} creates of 1 KiB: {w64:.0} writes/s");
    lines.push((format!("storage.{name}.writes_per_s"), w64));
    let w512 = writes(s.clone(), "/bench/w512/", 512, total / 2).await;
    println!("{name}: 512 writers: {w512:.0} writes/s");
    lines.push((format!("storage.{name}.writes_per_s_512_writers"), w512));
    let r = ranges(s.as_ref(), "/bench/w64/").await;
    println!("{name}: range of 10k keys: {r:.1} ms");
    lines.push((format!("storage.{name}.range_10k_ms"), r));
    let (p, keys) = paged(s.as_ref(), "/bench/w64/", true).await;
    let (counted, _) = paged(s.as_ref(), "/bench/w64/", false).await;
    println!("{name}: all {keys} keys in pages of 500: {p:.1} ms ({counted:.1} ms when each page counts the rest)");
    lines.push((format!("storage.{name}.paged_read_500_ms"), p));
    lines.push((format!("storage.{name}.paged_read_500_counted_ms"), counted));
    if watchers > 0 {
        let (p50, p99, p99_write) = fanout(s.clone(), "/bench/fan/", watchers, events, rate).await;
        println!(
            "{name}: fan-out to {watchers} watchers of {events} events at {rate}/s: p50 {p50:.2} ms, p99 {p99:.2} ms from commit; p99 {p99_write:.2} ms from the write call"
        );
        lines.push((format!("storage.{name}.watch_fanout_{watchers}.p50_ms"), p50));
        lines.push((format!("storage.{name}.watch_fanout_{watchers}.p99_ms"), p99));
        lines.push((format!("storage.{name}.watch_fanout_{watchers}.p99_from_write_ms"), p99_write));
    }
    Figures { name, lines }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let watchers = env("BENCH_FANOUT_WATCHERS", 1_000);
        let mut all = Vec::new();

        let dir = tempfile::tempdir().expect("tempdir");
        let durable = DurableStorage::open(dir.path()).expect("open durable");
        all.push(run("durable", Arc::new(durable), watchers).await);

        all.push(run("memory", Arc::new(MemoryStorage::new()), watchers).await);

        match EtcdCluster::start(1).await {
            Ok(etcd) => {
                let s = EtcdStorage::connect(&etcd.endpoints(), "").await.expect("connect to etcd");
                all.push(run("etcd", Arc::new(s), env("BENCH_ETCD_WATCHERS", 100)).await);
                drop(etcd);
            }
            Err(e) => println!("etcd: not measured ({e})"),
        }

        let find = |backend: &str, figure: &str| {
            all.iter().find(|f| f.name == backend).and_then(|f| f.lines.iter().find(|(n, _)| n == figure).map(|(_, v)| *v))
        };
        println!();
        for f in &all {
            for (n, v) in &f.lines {
                println!("BENCH {n}={v:.2}");
            }
        }
        if let (Some(d), Some(e)) = (find("durable", "storage.durable.writes_per_s"), find("etcd", "storage.etcd.writes_per_s")) {
            println!("BENCH storage.durable_vs_etcd.write_ratio={:.2}", d / e);
        }
        if let (Some(d), Some(e)) =
            (find("durable", "storage.durable.writes_per_s_512_writers"), find("etcd", "storage.etcd.writes_per_s_512_writers"))
        {
            println!("BENCH storage.durable_vs_etcd.write_ratio_512_writers={:.2}", d / e);
        }
        if let Some(p99) = find("durable", &format!("storage.durable.watch_fanout_{watchers}.p99_ms")) {
            println!("BENCH storage.watch_fanout.p99_ms={p99:.2}");
        }
        if let Some(p50) = find("durable", &format!("storage.durable.watch_fanout_{watchers}.p50_ms")) {
            println!("BENCH storage.watch_fanout.p50_ms={p50:.2}");
        }
    });
}
