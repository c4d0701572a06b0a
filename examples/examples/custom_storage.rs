//! A custom `Storage` backend, proven through the public conformance suite and then used by an
//! API server: [`PrefixedStorage`] keeps one cluster's keys under a prefix of a shared store (like
//! kube-apiserver's `--etcd-prefix`), so that several bosun clusters share one etcd or one durable
//! store. Its code is in `examples/src/prefixed/`; a backend only implements the ten required
//! methods of `bosun_store::Storage` (range, txn, watch, revision, leases, compaction, snapshot).
//!
//! This program runs the conformance suite for two tenants of one in-memory store, shows that
//! neither sees the other's keys, then serves one API server per tenant on that store and creates
//! a ConfigMap of the same name in each.
//!
//! `cargo run -p bosun-examples --example custom_storage`

use std::sync::Arc;

use bosun_core::k8s_openapi::api::core::v1::ConfigMap;
use bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use bosun_core::{Api, PostParams};
use bosun_examples::prefixed::PrefixedStorage;
use bosun_store::storage::conformance;
use bosun_store::storage::{RangeRequest, Storage};
use bosun_store::{ApiServer, MemoryStorage};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One shared store (an `EtcdStorage` or a `DurableStorage` in production), two tenants.
    let shared = Arc::new(MemoryStorage::new());
    let prod = PrefixedStorage::new(shared.clone(), "/clusters/prod")?;
    let staging = PrefixedStorage::new(shared.clone(), "/clusters/staging")?;

    // The suite panics on the first violation; it needs no other writer while it runs.
    for tenant in [&prod, &staging] {
        conformance::run_all(tenant).await;
        println!("{}: the Storage conformance suite passed", tenant.prefix());
    }

    // Isolation: a write in one tenant is invisible in the other.
    prod.put("/only-in-prod", "1".into(), None).await?;
    assert!(staging.get("/only-in-prod").await?.is_none());
    let keys = |r: bosun_store::storage::RangeResponse| r.kvs.iter().map(|kv| kv.key.to_string()).collect::<Vec<_>>();
    assert!(!keys(staging.range(RangeRequest::prefix("")).await?).contains(&"/only-in-prod".to_owned()));
    println!("a key written in prod is invisible in staging");

    // One API server per tenant, on the same shared store.
    let mut servers = Vec::new();
    for (tenant, greeting) in [(prod, "hello from prod"), (staging, "hello from staging")] {
        let api = ApiServer::builder(Arc::new(tenant)).build()?;
        let config = ConfigMap {
            metadata: ObjectMeta { name: Some("settings".into()), ..ObjectMeta::default() },
            data: Some([("greeting".to_owned(), greeting.to_owned())].into()),
            ..ConfigMap::default()
        };
        Api::<ConfigMap>::namespaced(api.clone(), "default").create(&config, &PostParams::default()).await?;
        servers.push(api);
    }
    for api in servers {
        let settings = Api::<ConfigMap>::namespaced(api, "default").get("settings").await?;
        println!("default/settings: {:?}", settings.data.unwrap_or_default().get("greeting"));
    }
    for kv in
        shared.range(RangeRequest::prefix("/clusters/")).await?.kvs.iter().filter(|kv| kv.key.contains("/configmaps/default/settings"))
    {
        println!("stored as {}", kv.key);
    }
    Ok(())
}
