//! Benchmarks of bosun-netproxy: the userspace proxy against a direct loopback connection in the same
//! run, and nftables programming at 10,000 services (inside a network namespace this bench creates).
//!
//! Run: `cargo bench -p bosun-netproxy --bench netproxy`. Ends with `BENCH name=value` lines.

use bosun_netproxy::table::{Endpoint, Protocol, ProxyService, ServicePortName, TableDiff};
use bosun_netproxy::{NftablesConfig, NftablesProxy, ProxyBackend, UserspaceConfig, UserspaceProxy};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes per bulk transfer: at ~3 GiB/s a 64 MiB round lasted ~20 ms, short enough for one
/// scheduling hiccup to move a round's ratio by 0.2; 256 MiB rounds move the median less.
const BULK_BYTES: usize = 256 * 1024 * 1024;
const BULK_ROUNDS: usize = 11;
const ROUND_TRIPS: usize = 5_000;
const SERVICES: usize = 10_000;
const ENDPOINTS: usize = 10;

fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint::ready(addr)
}

fn service(name: String, vip: IpAddr, port: u16, eps: Vec<SocketAddr>) -> ProxyService {
    let name = ServicePortName { namespace: "bench".into(), name, port: "http".into(), protocol: Protocol::Tcp };
    ProxyService::new(name, vec![vip], port, eps.into_iter().map(endpoint).collect())
}

/// A server that swallows a stream and answers one byte at EOF; and echoes small messages.
async fn servers() -> (SocketAddr, SocketAddr) {
    let sink = TcpListener::bind("127.0.80.2:0").await.expect("bind");
    let echo = TcpListener::bind("127.0.80.3:0").await.expect("bind");
    let (sa, ea) = (sink.local_addr().expect("addr"), echo.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = sink.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                let _ = s.write_all(b"k").await;
            });
        }
    });
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while s.read_exact(&mut buf).await.is_ok() {
                    if s.write_all(&buf).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (sa, ea)
}

async fn bulk(to: SocketAddr) -> f64 {
    let mut s = TcpStream::connect(to).await.expect("connect");
    let chunk = vec![7u8; 256 * 1024];
    let start = Instant::now();
    let mut sent = 0;
    while sent < BULK_BYTES {
        s.write_all(&chunk).await.expect("write");
        sent += chunk.len();
    }
    s.shutdown().await.expect("shutdown");
    let mut k = [0u8; 1];
    s.read_exact(&mut k).await.expect("ack");
    BULK_BYTES as f64 / start.elapsed().as_secs_f64()
}

/// CPU time of the minimal relay's threads that have ended (their `/proc` entries go with them).
static RELAY_NS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn own_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .unwrap_or(0)
}

/// The smallest relay there is, for comparison: blocking `splice(2)` through a 1 MiB pipe on a
/// thread per connection, as a C program would do it (no runtime, no readiness, no balancer).
fn minimal_relay(to: SocketAddr) -> SocketAddr {
    use rustix::pipe::{SpliceFlags, fcntl_setpipe_size, pipe, splice};
    let listener = std::net::TcpListener::bind("127.0.80.4:0").expect("bind relay");
    let addr = listener.local_addr().expect("addr");
    let one_way = |from: &std::net::TcpStream, into: &std::net::TcpStream| {
        let (r, w) = pipe().expect("pipe");
        let _ = fcntl_setpipe_size(&w, 1 << 20);
        while let Ok(n) = splice(from, None, &w, None, 1 << 20, SpliceFlags::MOVE) {
            if n == 0 {
                break;
            }
            let mut left = n;
            while left > 0 {
                match splice(&r, None, into, None, left, SpliceFlags::MOVE) {
                    Ok(m) if m > 0 => left -= m,
                    _ => return,
                }
            }
        }
        let _ = into.shutdown(std::net::Shutdown::Write);
        // This thread ends here: keep its CPU time for the accounting.
        RELAY_NS.fetch_add(own_cpu_ns(), std::sync::atomic::Ordering::Relaxed);
    };
    std::thread::Builder::new()
        .name("relay-accept".into())
        .spawn(move || {
            for a in listener.incoming().flatten() {
                let Ok(b) = std::net::TcpStream::connect(to) else { continue };
                let _ = std::thread::Builder::new().name("relay".into()).spawn(move || {
                    std::thread::scope(|s| {
                        s.spawn(|| one_way(&b, &a));
                        one_way(&a, &b);
                    });
                });
            }
        })
        .expect("relay thread");
    addr
}

async fn p50_round_trip_us(to: SocketAddr) -> f64 {
    let mut s = TcpStream::connect(to).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let msg = [1u8; 64];
    let mut buf = [0u8; 64];
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..ROUND_TRIPS + 200 {
        let t = Instant::now();
        s.write_all(&msg).await.expect("write");
        s.read_exact(&mut buf).await.expect("read");
        if i >= 200 {
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// CPU seconds run by this process's threads (from `schedstat`, in ns), as (proxy runtime's threads,
/// the minimal relay's threads, all others: the clients and servers).
fn thread_cpu_s() -> [f64; 3] {
    let mut out = [0.0; 3];
    out[1] = RELAY_NS.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e9;
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let ns: f64 = std::fs::read_to_string(task.path().join("schedstat"))
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .and_then(|f| f.parse().ok())
            .unwrap_or(0.0);
        if comm.starts_with("proxy") {
            out[0] += ns / 1e9;
        } else if !comm.starts_with("relay") {
            out[2] += ns / 1e9;
        }
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The ways a bulk transfer goes: straight to the server, through the proxy, through the minimal relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Direct,
    Proxied,
    Relay,
}

/// The proxy runs on a runtime of its own (as it would in its own process, apart from the
/// applications); clients and servers share the bench's runtime for every path. Each round runs
/// every path once, in a rotating order, so that all see the same machine load; the ratio is the
/// median of the rounds' proxied/direct ratios.
///
/// Knobs for investigation: `BOSUN_BENCH_ROUNDS` (default 11), `BOSUN_BENCH_BULK=direct|proxied|relay`
/// (only that path, e.g. under `perf record`), `BOSUN_BENCH_SPLICE=0` (the proxy copies instead).
async fn userspace(proxy_rt: tokio::runtime::Handle) -> (f64, f64, f64) {
    let (sink, echo) = servers().await;
    let splice = env("BOSUN_BENCH_SPLICE").is_none_or(|v| v != "0");
    let proxy = UserspaceProxy::new(UserspaceConfig::default().splice(splice));
    let vip: IpAddr = "127.0.80.1".parse().expect("ip");
    let (ps, pe) = (18_081, 18_082);
    let diff = TableDiff {
        full: true,
        upserted: vec![Arc::new(service("sink".into(), vip, ps, vec![sink])), Arc::new(service("echo".into(), vip, pe, vec![echo]))],
        removed: vec![],
    };
    let p = proxy.clone();
    proxy_rt.spawn(async move { p.apply(&diff).await }).await.expect("apply task").expect("apply");
    let relay = minimal_relay(sink);
    let rounds: usize = env("BOSUN_BENCH_ROUNDS").and_then(|v| v.parse().ok()).unwrap_or(BULK_ROUNDS);
    let only = env("BOSUN_BENCH_BULK");
    let paths: Vec<Path> = [Path::Direct, Path::Proxied, Path::Relay]
        .into_iter()
        .filter(|p| only.as_deref().is_none_or(|o| format!("{p:?}").eq_ignore_ascii_case(o)))
        .collect();
    let mut speed: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    // CPU seconds per path: [proxy threads, relay threads, clients and servers].
    let mut cpu: std::collections::BTreeMap<&str, [f64; 3]> = Default::default();
    for round in 0..rounds {
        for k in 0..paths.len() {
            let path = paths[(round + k) % paths.len()];
            let to = match path {
                Path::Direct => sink,
                Path::Proxied => SocketAddr::new(vip, ps),
                Path::Relay => relay,
            };
            let name = match path {
                Path::Direct => "direct",
                Path::Proxied => "proxied",
                Path::Relay => "minimal relay",
            };
            let before = thread_cpu_s();
            speed.entry(name).or_default().push(bulk(to).await);
            let after = thread_cpu_s();
            let c = cpu.entry(name).or_default();
            for ((c, a), b) in c.iter_mut().zip(after).zip(before) {
                *c += a - b;
            }
        }
    }
    let gib = (rounds * BULK_BYTES) as f64 / (1u64 << 30) as f64;
    for (name, c) in &cpu {
        println!(
            "userspace bulk CPU s/GiB, {name}: clients+servers {:.3} + proxy {:.3} + minimal relay {:.3} = {:.3}",
            c[2] / gib,
            c[0] / gib,
            c[1] / gib,
            (c[0] + c[1] + c[2]) / gib
        );
    }
    for (name, v) in &speed {
        let list = v.iter().map(|b| format!("{:.0}", b / 1048576.0)).collect::<Vec<_>>().join(" ");
        println!("userspace bulk MiB/s, {name}: {list} (median {:.0}; rounds of {} MiB)", median(v.clone()) / 1048576.0, BULK_BYTES >> 20);
    }
    let ratio = |name: &str| -> f64 {
        match (speed.get("direct"), speed.get(name)) {
            (Some(d), Some(x)) => median(d.iter().zip(x).map(|(d, x)| x / d).collect()),
            _ => f64::NAN,
        }
    };
    let (proxied_ratio, relay_ratio) = (ratio("proxied"), ratio("minimal relay"));
    let total = |name: &str| speed.get(name).map_or(f64::NAN, |v| v.len() as f64 / v.iter().map(|b| 1.0 / b).sum::<f64>());
    println!(
        "userspace bulk: median of per-round ratios to direct: proxied {proxied_ratio:.3}, minimal relay {relay_ratio:.3}; all rounds together: proxied {:.3}, minimal relay {:.3}",
        total("proxied") / total("direct"),
        total("minimal relay") / total("direct")
    );
    let (mut d50, mut p50) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        d50.push(p50_round_trip_us(echo).await);
        p50.push(p50_round_trip_us(SocketAddr::new(vip, pe)).await);
    }
    let (d50, p50) = (median(d50), median(p50));
    println!("userspace 64-byte round trip p50: direct {d50:.1} us, proxied {p50:.1} us");
    drop(proxy);
    (proxied_ratio, relay_ratio, (p50 - d50).max(0.0))
}

fn ip(args: &[&str]) -> bool {
    std::process::Command::new("ip").args(args).output().is_ok_and(|o| o.status.success())
}

/// CPU seconds (user + system) of this process and of its waited-for children (the `nft` runs), from
/// `/proc/self/stat` (clock ticks of 10 ms).
fn cpu_s() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<f64> = stat.rsplit_once(')').map_or("", |(_, r)| r).split_whitespace().filter_map(|f| f.parse().ok()).collect();
    // After the command name: state (not a number, skipped), then ppid.. so utime is index 10.
    let f = |i: usize| fields.get(i).copied().unwrap_or(0.0) / 100.0;
    (f(10) + f(11), f(12) + f(13))
}

async fn nftables() -> Option<(f64, f64, f64)> {
    let ns = format!("bnp-bench-{}", std::process::id());
    if !ip(&["netns", "add", &ns]) {
        eprintln!("!!! SKIPPING nftables benchmark: cannot create a network namespace (needs root and iproute2)");
        return None;
    }
    let proxy = NftablesProxy::new(NftablesConfig::default().netns(ns.clone()));
    if !NftablesProxy::available(&NftablesConfig::default().netns(ns.clone())).await {
        eprintln!("!!! SKIPPING nftables benchmark: nft is not installed or not usable");
        ip(&["netns", "delete", &ns]);
        return None;
    }
    let vip = |i: usize| IpAddr::V4(Ipv4Addr::new(10, 96, (i / 250) as u8, (i % 250 + 1) as u8));
    let eps = |i: usize, shift: usize| -> Vec<SocketAddr> {
        (0..ENDPOINTS)
            .map(|e| {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1 + (i / 250 % 200) as u8, (i % 250) as u8, (e + 1 + shift) as u8)), 8080)
            })
            .collect()
    };
    let all: Vec<Arc<ProxyService>> = (0..SERVICES).map(|i| Arc::new(service(format!("svc{i}"), vip(i), 80, eps(i, 0)))).collect();
    // The same full sync with every element as `nft` text (the way before netlink batches), for comparison.
    let text = NftablesProxy::new(NftablesConfig::default().netns(ns.clone()).netlink(false));
    let (start, (_, cpu)) = (Instant::now(), cpu_s());
    text.apply(&TableDiff { full: true, upserted: all.clone(), removed: vec![] }).await.expect("text full sync of 10k services");
    let text_ms = start.elapsed().as_secs_f64() * 1e3;
    let text_cpu_ms = (cpu_s().1 - cpu) * 1e3;
    let _ = text.cleanup().await;
    println!(
        "nftables, elements as nft text: programmed {SERVICES} services x {ENDPOINTS} endpoints in {text_ms:.0} ms (nft cpu {text_cpu_ms:.0} ms)"
    );

    let (start, (own, children)) = (Instant::now(), cpu_s());
    proxy.apply(&TableDiff { full: true, upserted: all.clone(), removed: vec![] }).await.expect("full sync of 10k services");
    let full_ms = start.elapsed().as_secs_f64() * 1e3;
    let (own2, children2) = cpu_s();
    let (self_cpu_ms, nft_cpu_ms) = ((own2 - own) * 1e3, (children2 - children) * 1e3);
    println!(
        "nftables: programmed {SERVICES} services x {ENDPOINTS} endpoints in {full_ms:.0} ms (nft cpu {nft_cpu_ms:.0} ms, this process incl. kernel batch {self_cpu_ms:.0} ms)"
    );

    // A resync replaces a table that already holds all of it.
    let start = Instant::now();
    proxy.apply(&TableDiff { full: true, upserted: all, removed: vec![] }).await.expect("resync of 10k services");
    println!("nftables: resync of the same {SERVICES} services over the existing table in {:.0} ms", start.elapsed().as_secs_f64() * 1e3);

    let mut add = Vec::new();
    let mut change = Vec::new();
    for k in 0..7 {
        let i = SERVICES + k;
        let t = Instant::now();
        let diff = TableDiff { full: false, upserted: vec![Arc::new(service(format!("svc{i}"), vip(i), 80, eps(i, 0)))], removed: vec![] };
        proxy.apply(&diff).await.expect("add one");
        add.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let diff =
            TableDiff { full: false, upserted: vec![Arc::new(service(format!("svc{k}"), vip(k), 80, eps(k, 100)))], removed: vec![] };
        proxy.apply(&diff).await.expect("change one");
        change.push(t.elapsed().as_secs_f64() * 1e3);
    }
    add.sort_by(f64::total_cmp);
    change.sort_by(f64::total_cmp);
    let (add_ms, change_ms) = (add[add.len() / 2], change[change.len() / 2]);
    println!(
        "nftables at {SERVICES} services: add one service {add_ms:.1} ms, change one service's endpoints {change_ms:.1} ms (medians of 7)"
    );
    let _ = proxy.cleanup().await;
    ip(&["netns", "delete", &ns]);
    Some((full_ms, add_ms, change_ms))
}

fn main() {
    let only = env("BOSUN_BENCH_ONLY");
    let wants = |part: &str| only.as_deref().is_none_or(|o| o == part);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    // `BOSUN_BENCH_PROXY_RT`: `mt2` (default: multi-thread, 2 workers), `mt1`, or `ct` (current-thread on one thread).
    let flavour = env("BOSUN_BENCH_PROXY_RT").unwrap_or_else(|| "mt2".into());
    let proxy_rt = match flavour.as_str() {
        "ct" => tokio::runtime::Builder::new_current_thread().enable_all().build().expect("proxy runtime"),
        "mt1" => {
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name("proxy").enable_all().build().expect("proxy runtime")
        }
        _ => {
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("proxy").enable_all().build().expect("proxy runtime")
        }
    };
    let proxy_handle = proxy_rt.handle().clone();
    let proxy_rt = Arc::new(proxy_rt);
    if flavour == "ct" {
        // A current-thread runtime runs its tasks only inside `block_on`: give it a thread of its own.
        let rt2 = proxy_rt.clone();
        std::thread::Builder::new().name("proxy".into()).spawn(move || rt2.block_on(std::future::pending::<()>())).expect("proxy thread");
    }
    let userspace = wants("userspace").then(|| rt.block_on(userspace(proxy_handle)));
    let nft = if wants("nftables") { rt.block_on(nftables()) } else { None };
    if let Some((ratio, relay_ratio, added)) = userspace {
        println!("BENCH netproxy.userspace.throughput_ratio={ratio:.3}");
        println!("BENCH netproxy.userspace.minimal_relay_throughput_ratio={relay_ratio:.3}");
        println!("BENCH netproxy.userspace.added_p50_us={added:.1}");
    }
    if let Some((full, add, change)) = nft {
        println!("BENCH netproxy.nftables.program_10000_services_ms={full:.1}");
        println!("BENCH netproxy.nftables.add_one_at_10000_ms={add:.2}");
        println!("BENCH netproxy.nftables.change_one_endpoint_at_10000_ms={change:.2}");
    }
    std::process::exit(0);
}
