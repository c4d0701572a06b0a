//! Storage backends against the conformance suite, plus backend-specific behaviour.

use std::time::Duration;

use bosun_store::storage::{WatchEvent, WatchOptions, conformance};
use bosun_store::{MemoryStorage, Storage, StorageError};
use futures::StreamExt;

#[tokio::test]
async fn memory_storage_passes_the_conformance_suite() {
    conformance::run_all(&MemoryStorage::new()).await;
}

#[tokio::test]
async fn a_slow_memory_watcher_is_cut_off_with_an_explicit_error() {
    let s = MemoryStorage::with_watch_capacity(16);
    let mut w = s.watch("/", 0, WatchOptions::default()).await.expect("watch");
    for i in 0..100 {
        s.put(&format!("/k{i}"), bytes::Bytes::from_static(b"v"), None).await.expect("put");
    }
    let mut last = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), w.next()).await.expect("item") {
            Some(Ok(WatchEvent::Put { kv, .. })) => {
                assert_eq!(kv.mod_revision, last + 1, "no event is skipped before the error");
                last = kv.mod_revision;
            }
            Some(Err(StorageError::WatchLagged { last_revision })) => {
                assert_eq!(last_revision, last);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(w.next().await.is_none(), "the stream ends after the error");
    // Resuming from the reported revision delivers the rest.
    let mut resumed = s.watch("/", last, WatchOptions::default()).await.expect("resume");
    for rev in last + 1..=100 {
        let e = resumed.next().await.expect("event").expect("ok");
        assert_eq!(e.revision(), rev);
    }
}
