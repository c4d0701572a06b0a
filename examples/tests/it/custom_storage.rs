//! `PrefixedStorage` (the custom_storage example): the conformance suite for two tenants of one
//! store, their isolation, portable tenant snapshots, and an API server on a tenant.

use std::sync::Arc;

use bosun_core::k8s_openapi::api::core::v1::ConfigMap;
use bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use bosun_core::{Api, PostParams};
use bosun_examples::prefixed::PrefixedStorage;
use bosun_store::storage::conformance::{self, next_change};
use bosun_store::storage::{RangeRequest, Storage, StorageError, WatchEvent, WatchOptions};
use bosun_store::{ApiServer, MemoryStorage};
use bytes::Bytes;

type Tenant = PrefixedStorage<Arc<MemoryStorage>>;

fn tenants() -> (Arc<MemoryStorage>, Tenant, Tenant) {
    let shared = Arc::new(MemoryStorage::new());
    let a = PrefixedStorage::new(shared.clone(), "/clusters/a").expect("prefix");
    let b = PrefixedStorage::new(shared.clone(), "/clusters/b").expect("prefix");
    (shared, a, b)
}

fn keys(r: &bosun_store::storage::RangeResponse) -> Vec<String> {
    r.kvs.iter().map(|kv| kv.key.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_of_one_store_each_pass_the_conformance_suite_and_stay_apart() {
    let (shared, a, b) = tenants();
    conformance::run_all(&a).await;
    let a_keys = keys(&a.range(RangeRequest::prefix("")).await.expect("range a"));
    assert!(!a_keys.is_empty());
    conformance::run_all(&b).await;
    // B's run (its restore included) left A's keys as they were.
    assert_eq!(keys(&a.range(RangeRequest::prefix("")).await.expect("range a")), a_keys);
    assert_eq!(a.get("/conf/snap/a").await.expect("get").map(|kv| kv.value), Some(Bytes::from_static(b"a3")));
    // Every key in the shared store belongs to one of the tenants.
    let all = shared.range(RangeRequest::prefix("")).await.expect("range shared");
    assert!(all.kvs.iter().all(|kv| kv.key.starts_with("/clusters/a/") || kv.key.starts_with("/clusters/b/")));

    // A write in one is invisible in the other, to reads and to watches.
    let start = b.current_revision().await.expect("rev");
    let mut watch = b.watch("", start, WatchOptions::default()).await.expect("watch b");
    a.put("/only-in-a", Bytes::from_static(b"1"), None).await.expect("put a");
    let mine = b.put("/only-in-b", Bytes::from_static(b"2"), None).await.expect("put b");
    assert!(b.get("/only-in-a").await.expect("get").is_none());
    assert!(!keys(&b.range(RangeRequest::prefix("")).await.expect("range b")).contains(&"/only-in-a".to_owned()));
    match next_change(&mut watch).await {
        WatchEvent::Put { kv, .. } => assert_eq!((&*kv.key, kv.mod_revision), ("/only-in-b", mine.mod_revision)),
        other => panic!("B's watch saw {other:?}"),
    }
}

#[tokio::test]
async fn a_tenant_snapshot_is_portable_both_ways() {
    let (_shared, a, b) = tenants();
    a.put("/x", Bytes::from_static(b"1"), None).await.expect("put");
    a.put("/y/z", Bytes::from_static(b"2"), None).await.expect("put");
    b.put("/x", Bytes::from_static(b"b"), None).await.expect("put");
    let mut snap = Vec::new();
    let info = a.snapshot(&mut snap).await.expect("snapshot");
    assert_eq!(info.keys, 2, "only the tenant's keys");

    // Moved out to a store of its own: the keys come without the prefix.
    let own = MemoryStorage::new();
    own.restore(&mut &snap[..]).await.expect("restore into a whole store");
    assert_eq!(keys(&own.range(RangeRequest::prefix("")).await.expect("range")), ["/x", "/y/z"]);

    // And back into another tenant, replacing what it held, leaving the first alone.
    own.put("/w", Bytes::from_static(b"3"), None).await.expect("put");
    let mut whole = Vec::new();
    own.snapshot(&mut whole).await.expect("snapshot whole store");
    let before = b.current_revision().await.expect("rev");
    let restored = b.restore(&mut &whole[..]).await.expect("restore into a tenant");
    assert!(restored > before);
    assert_eq!(keys(&b.range(RangeRequest::prefix("")).await.expect("range")), ["/w", "/x", "/y/z"]);
    assert_eq!(b.get("/x").await.expect("get").map(|kv| kv.value), Some(Bytes::from_static(b"1")));
    assert_eq!(keys(&a.range(RangeRequest::prefix("")).await.expect("range")), ["/x", "/y/z"]);
    // B's history before the restore is gone for B only.
    assert!(matches!(b.range(RangeRequest::prefix("").at_revision(before)).await, Err(StorageError::Compacted { .. })));
    assert!(a.range(RangeRequest::prefix("").at_revision(before)).await.is_ok());
}

#[tokio::test]
async fn an_api_server_per_tenant_shares_one_store() {
    let (shared, a, b) = tenants();
    let mut servers = Vec::new();
    for (tenant, greeting) in [(a, "from a"), (b, "from b")] {
        let api = ApiServer::builder(Arc::new(tenant)).build().expect("api server");
        let config = ConfigMap {
            metadata: ObjectMeta { name: Some("settings".into()), ..ObjectMeta::default() },
            data: Some([("greeting".to_owned(), greeting.to_owned())].into()),
            ..ConfigMap::default()
        };
        Api::<ConfigMap>::namespaced(api.clone(), "default").create(&config, &PostParams::default()).await.expect("create");
        servers.push(api);
    }
    for (api, greeting) in servers.into_iter().zip(["from a", "from b"]) {
        let got = Api::<ConfigMap>::namespaced(api, "default").get("settings").await.expect("get");
        assert_eq!(got.data.unwrap_or_default().get("greeting").map(String::as_str), Some(greeting));
    }
    for tenant in ["a", "b"] {
        let key = format!("/clusters/{tenant}/registry/core/configmaps/default/settings");
        assert!(shared.get(&key).await.expect("get").is_some(), "{key} is stored");
    }
}

/// The use the backend is for: two clusters in one real etcd (feature `etcd`; CI installs etcd).
#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_of_one_etcd_each_pass_the_conformance_suite() {
    use bosun_store::storage::etcd::EtcdStorage;
    use bosun_store::storage::etcd_server::{EtcdCluster, StartEtcdError};
    let etcd = match EtcdCluster::start(1).await {
        Ok(c) => c,
        Err(StartEtcdError::Missing) if std::env::var("BOSUN_REQUIRE_COMPONENTS").as_deref() != Ok("1") => {
            eprintln!("\n!!! SKIPPING: etcd is not installed (apt-get install etcd-server) !!!\n");
            return;
        }
        Err(e) => panic!("starting etcd: {e}"),
    };
    let shared = Arc::new(EtcdStorage::connect(&etcd.endpoints(), "").await.expect("connect"));
    let a = PrefixedStorage::new(shared.clone(), "/clusters/a").expect("prefix");
    let b = PrefixedStorage::new(shared.clone(), "/clusters/b").expect("prefix");
    conformance::run_all(&a).await;
    conformance::run_all(&b).await;
    assert_eq!(a.get("/conf/snap/a").await.expect("get").map(|kv| kv.value), Some(Bytes::from_static(b"a3")));
    assert!(shared.get("/clusters/b/conf/snap/a").await.expect("get").is_some());
}
