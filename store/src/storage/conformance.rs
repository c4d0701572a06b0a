//! The conformance suite every [`Storage`] backend passes: revision rules, ranges, CAS conflicts,
//! transactions, watch ordering and resumption, compaction, progress notifications, leases,
//! snapshot and restore, concurrent writers, and large values.
//!
//! Each check panics (like `assert!`) on a violation. [`run_all`] runs them in order against one
//! store, which must not have other writers meanwhile (revisions are checked to be gap-free);
//! each check works under its own key prefix and the restore check, which replaces every key,
//! runs last.
//!
//! ```no_run
//! # async fn demo() {
//! let storage = bosun_store::MemoryStorage::new();
//! bosun_store::storage::conformance::run_all(&storage).await;
//! # }
//! ```

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use super::{
    Compare, CompareOp, RangeRequest, Revision, Storage, StorageError, Txn, TxnOp, TxnOpResult, WatchEvent, WatchOptions, WatchStream,
};

/// How long a check waits for an event that must come.
const EVENT_WAIT: Duration = Duration::from_secs(10);

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// The next item of a watch, failing the check if none comes in time.
pub async fn next_event(stream: &mut WatchStream) -> Result<WatchEvent, StorageError> {
    match tokio::time::timeout(EVENT_WAIT, stream.next()).await {
        Ok(Some(item)) => item,
        Ok(None) => panic!("watch stream ended unexpectedly"),
        Err(_) => panic!("no watch event within {EVENT_WAIT:?}"),
    }
}

/// The next non-progress event of a watch.
pub async fn next_change(stream: &mut WatchStream) -> WatchEvent {
    loop {
        match next_event(stream).await {
            Ok(WatchEvent::Progress { .. }) => continue,
            Ok(e) => return e,
            Err(e) => panic!("watch failed: {e}"),
        }
    }
}

/// Runs every check in order; see the module docs.
pub async fn run_all<S: Storage + ?Sized>(s: &S) {
    revisions(s).await;
    ranges(s).await;
    compare_and_swap(s).await;
    transactions(s).await;
    watch_order_and_resume(s).await;
    watch_progress(s).await;
    compaction(s).await;
    leases(s).await;
    concurrent_writers(s).await;
    large_values(s).await;
    snapshot_restore(s).await;
}

/// One revision per write; create/mod revisions and versions follow etcd's rules.
pub async fn revisions<S: Storage + ?Sized>(s: &S) {
    let r0 = s.current_revision().await.expect("current revision");
    let a = s.create("/conf/rev/a", b("1"), None).await.expect("create");
    assert_eq!((a.create_revision, a.mod_revision, a.version), (r0 + 1, r0 + 1, 1));
    let a2 = s.update("/conf/rev/a", b("2"), a.mod_revision, None).await.expect("update");
    assert_eq!((a2.create_revision, a2.mod_revision, a2.version), (r0 + 1, r0 + 2, 2));
    let got = s.get("/conf/rev/a").await.expect("get").expect("key exists");
    assert_eq!(got, a2);
    let put = s.put("/conf/rev/a", b("3"), None).await.expect("put");
    assert_eq!((put.create_revision, put.mod_revision, put.version), (r0 + 1, r0 + 3, 3));
    let deleted = s.delete("/conf/rev/a", None).await.expect("delete");
    assert_eq!(deleted.value, b("3"));
    assert_eq!(s.current_revision().await.expect("rev"), r0 + 4);
    assert!(s.get("/conf/rev/a").await.expect("get").is_none());
    let again = s.create("/conf/rev/a", b("4"), None).await.expect("recreate");
    assert_eq!((again.create_revision, again.version), (r0 + 5, 1));
    // A transaction that writes nothing does not bump the revision.
    let resp = s.txn(Txn::new().and_then([TxnOp::get("/conf/rev/a"), TxnOp::delete("/conf/rev/missing")])).await.expect("txn");
    assert_eq!(resp.revision, r0 + 5);
    assert_eq!(s.current_revision().await.expect("rev"), r0 + 5);
    // Deleting a missing key is NotFound and does not bump either.
    assert!(s.delete("/conf/rev/missing", None).await.expect_err("missing").is_not_found());
    assert_eq!(s.current_revision().await.expect("rev"), r0 + 5);
}

/// Prefix ranges with limits, continuation, counts, exact keys and past revisions.
pub async fn ranges<S: Storage + ?Sized>(s: &S) {
    for i in 0..25 {
        s.create(&format!("/conf/range/k{i:02}"), b(&i.to_string()), None).await.expect("create");
    }
    s.create("/conf/rangex", b("outside"), None).await.expect("create sibling");
    s.create("/conf/range/k05/child", b("child"), None).await.expect("create child");
    let all = s.range(RangeRequest::prefix("/conf/range/")).await.expect("range");
    assert_eq!(all.kvs.len(), 26);
    assert_eq!(all.count, 26);
    assert!(!all.more);
    assert!(all.kvs.windows(2).all(|w| w[0].key < w[1].key), "keys come in ascending order");
    assert_eq!(s.count("/conf/range/").await.expect("count"), 26);

    // Pages of 10 with continuation see every key exactly once.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let at = all.revision;
    loop {
        let mut req = RangeRequest::prefix("/conf/range/").limit(10).at_revision(at);
        if let Some(a) = &after {
            req = req.start_after(a.clone());
        }
        let page = s.range(req).await.expect("page");
        assert!(page.kvs.len() <= 10);
        assert_eq!(page.count as usize, 26 - seen.len(), "count covers the rest of the range");
        seen.extend(page.kvs.iter().map(|kv| kv.key.to_string()));
        if !page.more {
            break;
        }
        after = page.kvs.last().map(|kv| kv.key.to_string());
    }
    assert_eq!(seen, all.kvs.iter().map(|kv| kv.key.to_string()).collect::<Vec<_>>());

    // Exact keys do not match their prefix siblings.
    let exact = s.range(RangeRequest::key("/conf/range/k05")).await.expect("exact");
    assert_eq!(exact.kvs.len(), 1);
    assert_eq!(exact.kvs[0].value, b("5"));
    assert!(s.get("/conf/range/k9").await.expect("get").is_none());

    // Past revisions read the past.
    let before = s.current_revision().await.expect("rev");
    s.put("/conf/range/k00", b("changed"), None).await.expect("put");
    s.delete("/conf/range/k01", None).await.expect("delete");
    let past = s.range(RangeRequest::prefix("/conf/range/k0").at_revision(before)).await.expect("past");
    assert_eq!(past.revision, before);
    assert_eq!(past.kvs[0].value, b("0"));
    assert_eq!(&*past.kvs[1].key, "/conf/range/k01");
    let now = s.range(RangeRequest::prefix("/conf/range/k0")).await.expect("now");
    assert_eq!(now.kvs[0].value, b("changed"));
    assert_ne!(&*now.kvs[1].key, "/conf/range/k01");
    let future = s.range(RangeRequest::prefix("/conf/range/").at_revision(before + 1000)).await;
    assert!(matches!(future, Err(StorageError::FutureRevision { .. })), "future revision: {future:?}");
}

/// Create-if-absent and compare-and-swap on mod revision report conflicts with the current value.
pub async fn compare_and_swap<S: Storage + ?Sized>(s: &S) {
    let a = s.create("/conf/cas/a", b("1"), None).await.expect("create");
    match s.create("/conf/cas/a", b("x"), None).await {
        Err(StorageError::AlreadyExists { current, .. }) => assert_eq!(*current, a),
        other => panic!("create of an existing key: {other:?}"),
    }
    let a2 = s.update("/conf/cas/a", b("2"), a.mod_revision, None).await.expect("update");
    match s.update("/conf/cas/a", b("3"), a.mod_revision, None).await {
        Err(StorageError::Conflict { current: Some(current), expected, .. }) => {
            assert_eq!(*current, a2);
            assert_eq!(expected, a.mod_revision);
        }
        other => panic!("stale update: {other:?}"),
    }
    assert!(s.update("/conf/cas/missing", b("1"), 5, None).await.expect_err("missing").is_not_found());
    assert!(s.delete("/conf/cas/a", Some(a.mod_revision)).await.expect_err("stale delete").is_conflict());
    assert_eq!(s.get("/conf/cas/a").await.expect("get").map(|kv| kv.value), Some(b("2")));
    let gone = s.delete("/conf/cas/a", Some(a2.mod_revision)).await.expect("delete");
    assert_eq!(gone.value, b("2"));
    assert!(s.delete("/conf/cas/a", Some(a2.mod_revision)).await.expect_err("deleted").is_not_found());
}

/// Multi-key transactions are atomic and share one revision.
pub async fn transactions<S: Storage + ?Sized>(s: &S) {
    let x = s.create("/conf/txn/x", b("x1"), None).await.expect("create x");
    let y = s.create("/conf/txn/y", b("y1"), None).await.expect("create y");
    let txn = Txn::new()
        .when([
            Compare::mod_revision("/conf/txn/x", CompareOp::Equal, x.mod_revision),
            Compare::value("/conf/txn/y", CompareOp::Equal, b("y1")),
            Compare::version("/conf/txn/y", CompareOp::Equal, 1),
            Compare::create_revision("/conf/txn/y", CompareOp::Greater, 0),
            Compare::absent("/conf/txn/z"),
        ])
        .and_then([TxnOp::put("/conf/txn/x", "x2"), TxnOp::delete("/conf/txn/y"), TxnOp::put("/conf/txn/z", "z1")])
        .or_else([TxnOp::get("/conf/txn/x")]);
    let resp = s.txn(txn.clone()).await.expect("txn");
    assert!(resp.succeeded);
    assert_eq!(resp.revision, y.mod_revision + 1);
    assert!(matches!(&resp.results[0], TxnOpResult::Put { prev: Some(p) } if p.value == b("x1")));
    assert!(matches!(&resp.results[1], TxnOpResult::Delete { prev: Some(p) } if p.value == b("y1")));
    assert!(matches!(&resp.results[2], TxnOpResult::Put { prev: None }));
    let x2 = s.get("/conf/txn/x").await.expect("get").expect("x");
    let z = s.get("/conf/txn/z").await.expect("get").expect("z");
    assert_eq!(x2.mod_revision, resp.revision);
    assert_eq!(z.mod_revision, resp.revision);
    assert!(s.get("/conf/txn/y").await.expect("get").is_none());

    // Same transaction again: the compares fail and the failure branch runs, writing nothing.
    let before = s.current_revision().await.expect("rev");
    let resp = s.txn(txn).await.expect("txn");
    assert!(!resp.succeeded);
    assert!(matches!(&resp.results[0], TxnOpResult::Get(Some(kv)) if kv.value == b("x2")));
    assert_eq!(s.current_revision().await.expect("rev"), before);

    // A key written twice in one branch is rejected and nothing is applied.
    let bad = Txn::new().and_then([TxnOp::put("/conf/txn/w", "1"), TxnOp::put("/conf/txn/w", "2")]);
    assert!(matches!(s.txn(bad).await, Err(StorageError::InvalidArgument(_))));
    assert!(s.get("/conf/txn/w").await.expect("get").is_none());
    assert_eq!(s.current_revision().await.expect("rev"), before);
}

/// A watch delivers every change after its start revision, in order, once; a new watch resumes
/// from any retained revision.
pub async fn watch_order_and_resume<S: Storage + ?Sized>(s: &S) {
    let start = s.current_revision().await.expect("rev");
    let mut w = s.watch("/conf/watch/", start, WatchOptions::default()).await.expect("watch");
    let mut other = s.watch("/conf/watchother/", start, WatchOptions::default()).await.expect("watch other");
    let mut expected = Vec::new();
    for i in 0..60 {
        let key = format!("/conf/watch/k{}", i % 3);
        if i % 7 == 6 {
            match s.delete(&key, None).await {
                Ok(_) => expected.push((key.clone(), s.current_revision().await.expect("rev"), None)),
                Err(e) if e.is_not_found() => {}
                Err(e) => panic!("delete: {e}"),
            }
        } else {
            let kv = s.put(&key, b(&i.to_string()), None).await.expect("put");
            expected.push((key.clone(), kv.mod_revision, Some(i.to_string())));
        }
        s.put("/conf/watchother/x", b("noise"), None).await.expect("noise");
    }
    let mut got = Vec::new();
    let mut last = start;
    while got.len() < expected.len() {
        let e = next_change(&mut w).await;
        assert!(e.revision() > last, "events come in increasing revision order");
        last = e.revision();
        match e {
            WatchEvent::Put { kv, .. } => {
                got.push((kv.key.to_string(), kv.mod_revision, Some(String::from_utf8_lossy(&kv.value).into_owned())))
            }
            WatchEvent::Delete { key, revision, prev } => {
                assert!(prev.is_some_and(|p| p.key == key), "a delete carries the last value");
                got.push((key.to_string(), revision, None));
            }
            WatchEvent::Progress { .. } => unreachable!(),
        }
    }
    assert_eq!(got, expected);
    // The other prefix saw only its own keys.
    let e = next_change(&mut other).await;
    assert_eq!(e.key(), Some("/conf/watchother/x"));

    // Resume from the middle: exactly the remaining events.
    let mid = expected[expected.len() / 2].1;
    let mut resumed = s.watch("/conf/watch/", mid, WatchOptions::default()).await.expect("resume");
    for want in expected.iter().filter(|e| e.1 > mid) {
        let e = next_change(&mut resumed).await;
        assert_eq!((e.key().map(str::to_owned), e.revision()), (Some(want.0.clone()), want.1));
    }
    // Nothing more is pending: the next thing after a progress request is a progress notification.
    resumed.request_progress();
    match next_event(&mut resumed).await {
        Ok(WatchEvent::Progress { revision }) => assert!(revision >= last),
        other => panic!("expected progress after the last event, got {other:?}"),
    }

    // Watching an exact key.
    let mut exact = s.watch("/conf/watch/k1", last, WatchOptions { exact: true, ..WatchOptions::default() }).await.expect("exact");
    s.put("/conf/watch/k10", b("sibling"), None).await.expect("put");
    let k1 = s.put("/conf/watch/k1", b("exact"), None).await.expect("put");
    let e = next_change(&mut exact).await;
    assert_eq!((e.key(), e.revision()), (Some("/conf/watch/k1"), k1.mod_revision));
}

/// Progress notifications on request and at an interval carry a revision up to which every
/// event has been delivered.
pub async fn watch_progress<S: Storage + ?Sized>(s: &S) {
    let start = s.current_revision().await.expect("rev");
    let mut w = s.watch("/conf/progress/", start, WatchOptions::default()).await.expect("watch");
    w.request_progress();
    match next_event(&mut w).await {
        Ok(WatchEvent::Progress { revision }) => assert!(revision >= start),
        other => panic!("expected progress, got {other:?}"),
    }
    let kv = s.put("/conf/progress/a", b("1"), None).await.expect("put");
    // Writes elsewhere move the store on; progress reports it even with no event for us.
    let elsewhere = s.put("/conf/progress-elsewhere", b("1"), None).await.expect("put");
    let e = next_change(&mut w).await;
    assert_eq!(e.revision(), kv.mod_revision);
    w.request_progress();
    match next_event(&mut w).await {
        Ok(WatchEvent::Progress { revision }) => assert!(revision >= elsewhere.mod_revision, "progress {revision} covers the store"),
        other => panic!("expected progress, got {other:?}"),
    }
    let mut ticking = s
        .watch("/conf/progress/", elsewhere.mod_revision, WatchOptions::default().progress_interval(Duration::from_millis(200)))
        .await
        .expect("watch");
    match next_event(&mut ticking).await {
        Ok(WatchEvent::Progress { revision }) => assert!(revision >= elsewhere.mod_revision),
        other => panic!("expected a periodic progress notification, got {other:?}"),
    }
}

async fn expect_compacted_watch<S: Storage + ?Sized>(s: &S, prefix: &str, after: Revision) {
    match s.watch(prefix, after, WatchOptions::default()).await {
        Err(e) => assert!(e.is_compacted(), "watch below the compaction point: {e}"),
        Ok(mut w) => match next_event(&mut w).await {
            Err(e) => assert!(e.is_compacted(), "watch below the compaction point: {e}"),
            Ok(e) => panic!("watch below the compaction point delivered {e:?}"),
        },
    }
}

/// Compaction removes history but keeps the newest values.
pub async fn compaction<S: Storage + ?Sized>(s: &S) {
    let a1 = s.put("/conf/compact/a", b("1"), None).await.expect("put");
    let a2 = s.put("/conf/compact/a", b("2"), None).await.expect("put");
    s.put("/conf/compact/b", b("1"), None).await.expect("put");
    s.delete("/conf/compact/b", None).await.expect("delete");
    let c = s.put("/conf/compact/c", b("1"), None).await.expect("put");
    s.compact(c.mod_revision).await.expect("compact");
    let old = s.range(RangeRequest::prefix("/conf/compact/").at_revision(a1.mod_revision)).await;
    assert!(matches!(&old, Err(e) if e.is_compacted()), "read below the compaction point: {old:?}");
    let at = s.range(RangeRequest::prefix("/conf/compact/").at_revision(c.mod_revision)).await.expect("read at compaction point");
    assert_eq!(at.kvs.len(), 2);
    let now = s.range(RangeRequest::prefix("/conf/compact/")).await.expect("read");
    assert_eq!(now.kvs.iter().map(|kv| kv.value.clone()).collect::<Vec<_>>(), vec![b("2"), b("1")]);
    assert_eq!(now.kvs[0].mod_revision, a2.mod_revision);
    expect_compacted_watch(s, "/conf/compact/", a2.mod_revision).await;
    // Watching from the compaction point itself works.
    let mut w = s.watch("/conf/compact/", c.mod_revision, WatchOptions::default()).await.expect("watch at compaction point");
    let d = s.put("/conf/compact/d", b("1"), None).await.expect("put");
    assert_eq!(next_change(&mut w).await.revision(), d.mod_revision);
    let again = s.compact(a2.mod_revision).await;
    assert!(matches!(&again, Err(e) if e.is_compacted()), "compacting an older revision: {again:?}");
}

/// Leases: keys attached to a lease go when it is revoked or expires; keep-alive renews it.
pub async fn leases<S: Storage + ?Sized>(s: &S) {
    let missing = s.put("/conf/lease/none", b("1"), Some(0x7fff_0000_1234)).await;
    assert!(matches!(missing, Err(StorageError::LeaseNotFound(_))), "put with an unknown lease: {missing:?}");

    let start = s.current_revision().await.expect("rev");
    let mut w = s.watch("/conf/lease/", start, WatchOptions::default()).await.expect("watch");
    let long = s.lease_grant(Duration::from_secs(60)).await.expect("grant");
    let kv = s.create("/conf/lease/revoked", b("1"), Some(long)).await.expect("create with lease");
    assert_eq!(kv.lease, Some(long));
    assert_eq!(s.get("/conf/lease/revoked").await.expect("get").and_then(|kv| kv.lease), Some(long));
    assert!(s.lease_keep_alive(long).await.expect("keep alive") >= Duration::from_secs(59));
    s.lease_revoke(long).await.expect("revoke");
    assert!(s.get("/conf/lease/revoked").await.expect("get").is_none());
    let renewed = s.lease_keep_alive(long).await;
    assert!(matches!(renewed, Err(StorageError::LeaseNotFound(_))), "keep-alive of a revoked lease: {renewed:?}");
    assert!(matches!(next_change(&mut w).await, WatchEvent::Put { .. }));
    match next_change(&mut w).await {
        WatchEvent::Delete { key, .. } => assert_eq!(&*key, "/conf/lease/revoked"),
        other => panic!("expected the revoked key's delete, got {other:?}"),
    }

    let short = s.lease_grant(Duration::from_secs(1)).await.expect("grant");
    let kept = s.lease_grant(Duration::from_secs(60)).await.expect("grant");
    s.create("/conf/lease/expiring", b("1"), Some(short)).await.expect("create");
    s.create("/conf/lease/kept", b("1"), Some(kept)).await.expect("create");
    let granted = std::time::Instant::now();
    assert!(matches!(next_change(&mut w).await, WatchEvent::Put { .. }));
    assert!(matches!(next_change(&mut w).await, WatchEvent::Put { .. }));
    match next_change(&mut w).await {
        WatchEvent::Delete { key, .. } => assert_eq!(&*key, "/conf/lease/expiring"),
        other => panic!("expected the expired key's delete, got {other:?}"),
    }
    assert!(granted.elapsed() >= Duration::from_millis(900), "a lease outlives its TTL");
    assert!(s.get("/conf/lease/kept").await.expect("get").is_some());
    s.lease_revoke(kept).await.expect("revoke");
}

/// Concurrent read-modify-write loops with CAS lose no update.
pub async fn concurrent_writers<S: Storage + ?Sized>(s: &S) {
    const TASKS: usize = 8;
    const INCREMENTS: usize = 20;
    s.create("/conf/concurrent/counter", b("0"), None).await.expect("create");
    let start = s.current_revision().await.expect("rev");
    let increments = futures::future::join_all((0..TASKS).map(|_| async {
        let mut conflicts = 0u64;
        for _ in 0..INCREMENTS {
            loop {
                let kv = s.get("/conf/concurrent/counter").await.expect("get").expect("counter");
                let n: u64 = String::from_utf8_lossy(&kv.value).parse().expect("number");
                match s.update("/conf/concurrent/counter", b(&(n + 1).to_string()), kv.mod_revision, None).await {
                    Ok(_) => break,
                    Err(e) if e.is_conflict() => conflicts += 1,
                    Err(e) => panic!("update: {e}"),
                }
            }
        }
        conflicts
    }))
    .await;
    let kv = s.get("/conf/concurrent/counter").await.expect("get").expect("counter");
    assert_eq!(kv.value, b(&(TASKS * INCREMENTS).to_string()), "no update was lost");
    assert_eq!(kv.version as usize, TASKS * INCREMENTS + 1);
    assert_eq!(kv.mod_revision, start + (TASKS * INCREMENTS) as Revision, "one revision per successful write");
    let _ = increments;
}

/// Values of 1 MiB round-trip through put, get, range and watch.
pub async fn large_values<S: Storage + ?Sized>(s: &S) {
    let value = Bytes::from((0..(1 << 20)).map(|i: u32| (i % 251) as u8).collect::<Vec<u8>>());
    let start = s.current_revision().await.expect("rev");
    let mut w = s.watch("/conf/large/", start, WatchOptions::default()).await.expect("watch");
    s.create("/conf/large/a", value.clone(), None).await.expect("create 1 MiB");
    assert_eq!(s.get("/conf/large/a").await.expect("get").map(|kv| kv.value), Some(value.clone()));
    match next_change(&mut w).await {
        WatchEvent::Put { kv, .. } => assert_eq!(kv.value, value),
        other => panic!("expected put, got {other:?}"),
    }
    s.delete("/conf/large/a", None).await.expect("delete");
}

/// Snapshot then restore: the keys come back as they were, the revision jumps past the current
/// one, older revisions read as compacted, and open watches end with `Compacted`.
pub async fn snapshot_restore<S: Storage + ?Sized>(s: &S) {
    s.put("/conf/snap/a", b("a1"), None).await.expect("put");
    s.put("/conf/snap/b", b("b1"), None).await.expect("put");
    let lease = s.lease_grant(Duration::from_secs(60)).await.expect("grant");
    s.put("/conf/snap/leased", b("l"), Some(lease)).await.expect("put");
    let before = s.range(RangeRequest::prefix("")).await.expect("range all");
    let mut buf = Vec::new();
    let info = s.snapshot(&mut buf).await.expect("snapshot");
    assert_eq!(info.bytes, buf.len() as u64);
    assert_eq!(info.keys, before.kvs.len() as u64);
    assert!(info.revision >= before.revision);

    s.put("/conf/snap/a", b("a2"), None).await.expect("put");
    s.delete("/conf/snap/b", None).await.expect("delete");
    s.put("/conf/snap/c", b("c1"), None).await.expect("put");
    let current = s.current_revision().await.expect("rev");
    let mut w = s.watch("/conf/snap/", current, WatchOptions::default()).await.expect("watch");

    let mut reader: &[u8] = &buf;
    let restored = s.restore(&mut reader).await.expect("restore");
    assert!(restored > current, "restore bumps the revision ({restored} > {current})");
    assert!(s.current_revision().await.expect("rev") >= restored);
    let after = s.range(RangeRequest::prefix("")).await.expect("range all");
    let strip = |r: &super::RangeResponse| r.kvs.iter().map(|kv| (kv.key.to_string(), kv.value.clone())).collect::<Vec<_>>();
    assert_eq!(strip(&after), strip(&before));
    let old = s.range(RangeRequest::prefix("/conf/snap/").at_revision(current)).await;
    assert!(matches!(&old, Err(e) if e.is_compacted()), "history before a restore is compacted: {old:?}");
    // The open watch ends with Compacted (after, possibly, the restore's own changes).
    loop {
        match next_event(&mut w).await {
            Ok(_) => continue,
            Err(e) => {
                assert!(e.is_compacted(), "a restore ends open watches with Compacted: {e}");
                break;
            }
        }
    }
    expect_compacted_watch(s, "/conf/snap/", current).await;
    // The restored store keeps working.
    let next = s.put("/conf/snap/a", b("a3"), None).await.expect("put after restore");
    assert!(next.mod_revision > restored);
    let _ = s.lease_revoke(lease).await;

    // A corrupt snapshot is refused and changes nothing.
    let mut bad = buf.clone();
    let n = bad.len();
    bad[n / 2] ^= 0xff;
    let mut reader: &[u8] = &bad;
    assert!(s.restore(&mut reader).await.is_err());
    assert_eq!(s.get("/conf/snap/a").await.expect("get").map(|kv| kv.value), Some(b("a3")));
}
