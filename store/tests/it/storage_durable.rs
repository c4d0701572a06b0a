//! The durable backend: conformance, recovery after reopen, and the kill -9 crash test.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bosun_store::storage::{DurableOptions, RangeRequest, Txn, TxnOp, WatchEvent, WatchOptions, conformance};
use bosun_store::{DurableStorage, Storage, StorageError};
use bytes::Bytes;
use futures::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_storage_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = DurableStorage::open(dir.path()).expect("open");
    conformance::run_all(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_storage_passes_the_conformance_suite_with_tiny_segments_and_snapshots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = DurableStorage::open_with(dir.path(), DurableOptions::default().segment_size(4096).snapshot_after(16 << 10)).expect("open");
    conformance::run_all(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_store_has_every_write_history_leases_and_compaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = DurableOptions::default().segment_size(8 << 10).snapshot_after(32 << 10);
    let (rev, lease, compacted) = {
        let s = DurableStorage::open_with(dir.path(), opts.clone()).expect("open");
        for i in 0..300 {
            s.put(&format!("/k/{}", i % 50), Bytes::from(vec![b'x'; 200 + i]), None).await.expect("put");
        }
        s.delete("/k/7", None).await.expect("delete");
        let lease = s.lease_grant(Duration::from_secs(300)).await.expect("grant");
        s.put("/leased", Bytes::from_static(b"l"), Some(lease)).await.expect("put leased");
        let compacted = s.current_revision().await.expect("rev") - 20;
        s.compact(compacted).await.expect("compact");
        (s.current_revision().await.expect("rev"), lease, compacted)
    };
    // Snapshots were taken and the log segments they cover removed.
    assert!(std::fs::read_dir(dir.path().join("snap")).expect("snap dir").count() >= 1);
    let s = DurableStorage::open_with(dir.path(), opts).expect("reopen");
    assert_eq!(s.current_revision().await.expect("rev"), rev);
    assert_eq!(s.count("/k/").await.expect("count"), 49);
    let k3 = s.get("/k/3").await.expect("get").expect("k3");
    assert_eq!(k3.version, 6);
    assert_eq!(s.get("/leased").await.expect("get").and_then(|kv| kv.lease), Some(lease));
    s.lease_keep_alive(lease).await.expect("the lease survived");
    // Compacted history stays compacted; what the log still holds can be watched.
    let old = s.range(RangeRequest::prefix("/k/").at_revision(compacted - 1)).await;
    assert!(matches!(old, Err(StorageError::Compacted { .. })), "{old:?}");
    let next = s.put("/k/new", Bytes::from_static(b"n"), None).await.expect("put");
    assert_eq!(next.mod_revision, rev + 1, "revisions continue without a gap");
    // A second open of the same directory is refused while this one holds it.
    assert!(matches!(DurableStorage::open(dir.path()), Err(StorageError::Unavailable(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_backup_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backup = {
        let s = DurableStorage::open(dir.path()).expect("open");
        s.put("/a", Bytes::from_static(b"1"), None).await.expect("put");
        let mut buf = Vec::new();
        s.snapshot(&mut buf).await.expect("snapshot");
        s.put("/a", Bytes::from_static(b"2"), None).await.expect("put");
        s.put("/b", Bytes::from_static(b"2"), None).await.expect("put");
        buf
    };
    let s = DurableStorage::open(dir.path()).expect("open");
    let mut reader: &[u8] = &backup;
    let rev = s.restore(&mut reader).await.expect("restore");
    assert!(rev > 3);
    drop(s);
    let s = DurableStorage::open(dir.path()).expect("reopen");
    assert_eq!(s.current_revision().await.expect("rev"), rev);
    assert_eq!(s.get("/a").await.expect("get").map(|kv| kv.value), Some(Bytes::from_static(b"1")));
    assert!(s.get("/b").await.expect("get").is_none());
    let w = s.watch("/", rev - 1, WatchOptions::default()).await;
    assert!(matches!(w, Err(StorageError::Compacted { .. })));
}

const CRASH_DIR: &str = "BOSUN_CRASH_CHILD_DIR";
const CRASH_ROUND: &str = "BOSUN_CRASH_CHILD_ROUND";

/// The child side of the crash test: a no-op unless the parent set the environment.
#[test]
fn crash_child() {
    let (Ok(dir), Ok(round)) = (std::env::var(CRASH_DIR), std::env::var(CRASH_ROUND)) else { return };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async move {
        let opts = DurableOptions::default().segment_size(64 << 10).snapshot_after(256 << 10);
        let s = DurableStorage::open_with(&dir, opts).expect("open in child");
        println!("open");
        let tasks: Vec<_> = (0..16)
            .map(|w| {
                let s = s.clone();
                let round = round.clone();
                tokio::spawn(async move {
                    for i in 0.. {
                        // Three keys per transaction: after a crash all three exist or none.
                        let base = format!("/crash/{round}/{w}/{i}");
                        let value = Bytes::from(format!("{base}:{}", "v".repeat(100 + (i % 7) * 50)));
                        let txn = Txn::new().and_then(["a", "b", "c"].map(|k| TxnOp::put(format!("{base}/{k}"), value.clone())));
                        let resp = s.txn(txn).await.expect("txn");
                        println!("ack {base} {}", resp.revision);
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_at_random_points() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut acked_total: BTreeMap<String, i64> = BTreeMap::new();
    for round in 0..24 {
        let mut child = Command::new(&exe)
            .args(["--exact", "storage_durable::crash_child", "--nocapture", "--test-threads=1"])
            .env(CRASH_DIR, dir.path())
            .env(CRASH_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (opened_tx, opened_rx) = std::sync::mpsc::channel();
        let reader = {
            let acked = acked.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if line.ends_with("open") {
                        let _ = opened_tx.send(());
                    }
                    let mut parts = line.split(' ');
                    if let (Some("ack"), Some(base), Some(rev)) = (parts.next(), parts.next(), parts.next())
                        && let Ok(rev) = rev.parse::<i64>()
                    {
                        acked.lock().expect("lock").push((base.to_owned(), rev));
                    }
                }
            })
        };
        opened_rx.recv_timeout(Duration::from_secs(30)).expect("child opened the store");
        // Kill at a random point while writers are busy.
        std::thread::sleep(Duration::from_millis(fastrand::u64(20..400)));
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        reader.join().expect("reader");
        let acked = std::mem::take(&mut *acked.lock().expect("lock"));

        let s = DurableStorage::open(dir.path()).expect("recover after kill -9");
        let all = s.range(RangeRequest::prefix("/crash/")).await.expect("range");
        let current = s.current_revision().await.expect("rev");
        // Every acknowledged transaction is there, with the revision it was acknowledged with.
        let mut by_rev: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
        for kv in &all.kvs {
            by_rev.entry(kv.mod_revision).or_default().push(&kv.key);
            assert!(kv.value.starts_with(kv.key.rsplit_once('/').expect("key").0.as_bytes()), "value belongs to its key");
        }
        let keys: HashSet<&str> = all.kvs.iter().map(|kv| &*kv.key).collect();
        for (base, rev) in &acked {
            for k in ["a", "b", "c"] {
                assert!(keys.contains(format!("{base}/{k}").as_str()), "round {round}: acknowledged {base}/{k} at {rev} was lost");
            }
            acked_total.insert(base.clone(), *rev);
        }
        for (base, rev) in &acked_total {
            let kv = s.get(&format!("{base}/a")).await.expect("get").expect("earlier acknowledged write");
            assert_eq!(kv.mod_revision, *rev);
        }
        // Gap-free and atomic: every revision 1..=current is exactly one three-key transaction.
        assert_eq!(by_rev.len() as i64, current, "round {round}: one transaction per revision");
        for (i, (rev, keys)) in by_rev.iter().enumerate() {
            assert_eq!(*rev, i as i64 + 1, "round {round}: revisions are gap-free");
            assert_eq!(keys.len(), 3, "round {round}: transaction at {rev} is whole: {keys:?}");
        }
        // The history the log still holds replays in order without gaps.
        let mut w = s.watch("/crash/", current.saturating_sub(50).max(0), WatchOptions::default()).await;
        if let Ok(w) = w.as_mut() {
            w.request_progress();
            let mut last = None;
            while let Some(Ok(e)) = tokio::time::timeout(Duration::from_secs(5), w.next()).await.expect("watch item") {
                match e {
                    WatchEvent::Progress { revision } => {
                        assert_eq!(revision, current);
                        break;
                    }
                    e => {
                        if let Some(l) = last {
                            assert!(e.revision() == l || e.revision() == l + 1, "watch history is gap-free");
                        }
                        last = Some(e.revision());
                    }
                }
            }
        }
        eprintln!("round {round}: {} acknowledged, revision {current}", acked.len());
        drop(s);
    }
    assert!(acked_total.len() > 100, "the children did write: {}", acked_total.len());
}
