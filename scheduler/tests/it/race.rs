//! Lost-pod regression: many pods created at once while nodes register, bind conflicts injected,
//! pods updated while they are being scheduled. Every pod must end up bound.

use crate::harness::{api_server, node, pod};
use async_trait::async_trait;
use bosun_core::k8s_openapi::api::core::v1::{Node, Pod};
use bosun_core::{Api, Client, DynamicObject, Error, Result};
use bosun_core::{DeleteParams, Deleted, ListParams, ObjectList, Patch, PatchParams, PostParams, Target, WatchParams, WatchStream};
use bosun_scheduler::Scheduler;
use futures::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A client that fails some bindings, as a conflicting writer or an overloaded server would.
struct FlakyBinds {
    inner: Arc<dyn Client>,
    binds: AtomicU64,
    /// Every `every`-th binding fails with 409 before it reaches the server.
    every: u64,
}

#[async_trait]
impl Client for FlakyBinds {
    async fn get(&self, t: Target<'_>, name: &str) -> Result<DynamicObject> {
        self.inner.get(t, name).await
    }
    async fn list(&self, t: Target<'_>, p: &ListParams) -> Result<ObjectList<DynamicObject>> {
        self.inner.list(t, p).await
    }
    async fn create(&self, t: Target<'_>, o: &DynamicObject, p: &PostParams) -> Result<DynamicObject> {
        self.inner.create(t, o, p).await
    }
    async fn update(&self, t: Target<'_>, o: &DynamicObject, p: &PostParams) -> Result<DynamicObject> {
        self.inner.update(t, o, p).await
    }
    async fn patch(&self, t: Target<'_>, name: &str, patch: &Patch, p: &PatchParams) -> Result<DynamicObject> {
        self.inner.patch(t, name, patch, p).await
    }
    async fn delete(&self, t: Target<'_>, name: &str, p: &DeleteParams) -> Result<Deleted<DynamicObject>> {
        self.inner.delete(t, name, p).await
    }
    async fn delete_collection(&self, t: Target<'_>, l: &ListParams, p: &DeleteParams) -> Result<ObjectList<DynamicObject>> {
        self.inner.delete_collection(t, l, p).await
    }
    async fn watch(&self, t: Target<'_>, p: &WatchParams) -> Result<WatchStream> {
        self.inner.watch(t, p).await
    }
    async fn get_subresource(&self, t: Target<'_>, name: &str, sub: &str) -> Result<DynamicObject> {
        self.inner.get_subresource(t, name, sub).await
    }
    async fn update_subresource(&self, t: Target<'_>, name: &str, sub: &str, o: &DynamicObject, p: &PostParams) -> Result<DynamicObject> {
        self.inner.update_subresource(t, name, sub, o, p).await
    }
    async fn patch_subresource(&self, t: Target<'_>, name: &str, sub: &str, patch: &Patch, p: &PatchParams) -> Result<DynamicObject> {
        self.inner.patch_subresource(t, name, sub, patch, p).await
    }
    async fn create_subresource(
        &self,
        t: Target<'_>,
        name: &str,
        sub: &str,
        body: &serde_json::Value,
        p: &PostParams,
    ) -> Result<serde_json::Value> {
        if sub == "binding" {
            let n = self.binds.fetch_add(1, Ordering::Relaxed) + 1;
            // Let the informers run between the scheduling cycle and the binding.
            tokio::task::yield_now().await;
            if n.is_multiple_of(self.every) {
                return Err(Error::conflict(format!("injected conflict binding {name}")));
            }
        }
        self.inner.create_subresource(t, name, sub, body, p).await
    }
}

async fn unbound(api: &Api<Pod>) -> Vec<String> {
    let list = api.list(&ListParams::default()).await.unwrap_or_else(|e| panic!("list pods: {e}"));
    list.items
        .into_iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_none_or(str::is_empty))
        .filter_map(|p| p.metadata.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_pod_is_lost_when_nodes_register_while_pods_flood_in_with_bind_conflicts_and_updates() {
    const NODES: usize = 40;
    const PODS: usize = 600;
    let server = api_server();
    let client: Arc<dyn Client> = Arc::new(FlakyBinds { inner: server.clone(), binds: AtomicU64::new(0), every: 5 });
    let scheduler = Scheduler::builder(client.clone()).success_events(false).build().unwrap_or_else(|e| panic!("{e}"));
    let running = scheduler.start().await;
    let pods = Api::<Pod>::namespaced(server.clone(), "default");

    // Nodes register one by one, some first without allocatable (as a kubelet's first post).
    let nodes_task = {
        let client = server.clone();
        tokio::spawn(async move {
            let api = Api::<Node>::all(client);
            for i in 0..NODES {
                let mut n = node(&format!("n-{i}"), &format!("zone-{}", i % 3));
                let full = n.status.clone();
                if i % 2 == 0 {
                    n.status = None;
                }
                api.create(&n, &PostParams::default()).await.unwrap_or_else(|e| panic!("create node: {e}"));
                if i % 2 == 0 {
                    let patch = Patch::Merge(serde_json::json!({ "status": full }));
                    api.patch_status(&format!("n-{i}"), &patch, &PatchParams::default())
                        .await
                        .unwrap_or_else(|e| panic!("node status: {e}"));
                }
                tokio::task::yield_now().await;
            }
        })
    };
    // Pods flood in concurrently.
    let create_task = {
        let api = pods.clone();
        tokio::spawn(async move {
            futures::stream::iter(0..PODS)
                .map(|i| {
                    let api = api.clone();
                    async move { api.create(&pod(&format!("p-{i}"), "100m", "500Mi"), &PostParams::default()).await.map(drop) }
                })
                .buffer_unordered(32)
                .for_each(|r| async move { r.unwrap_or_else(|e| panic!("create pod: {e}")) })
                .await;
        })
    };
    // Pods are updated (labels: a spec-relevant change) while the scheduler works on them.
    let update_task = {
        let api = pods.clone();
        tokio::spawn(async move {
            for round in 0..3 {
                for i in (round..PODS).step_by(7) {
                    let patch = Patch::Merge(serde_json::json!({ "metadata": { "labels": { "round": round.to_string() } } }));
                    // Not yet created or already gone is fine.
                    let _ = api.patch(&format!("p-{i}"), &patch, &PatchParams::default()).await;
                }
                tokio::task::yield_now().await;
            }
        })
    };
    for t in [nodes_task, create_task, update_task] {
        t.await.unwrap_or_else(|e| panic!("task: {e}"));
    }
    // Backoff is 1 s doubling to 10 s and every pod fits somewhere, so all bind within seconds of
    // the scheduler seeing the nodes; the margin is for a heavily loaded 2-core machine, where the
    // watches themselves can lag by tens of seconds. A lost pod never binds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let left = unbound(&pods).await;
        if left.is_empty() {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let q = running.scheduler().queue();
            let mut detail = Vec::new();
            for name in left.iter().take(5) {
                let p = pods.get(name).await.unwrap_or_else(|e| panic!("get: {e}"));
                let uid = p.metadata.uid.clone().unwrap_or_default();
                detail.push(format!(
                    "{name}: rv {:?} node (get) {:?} queued {} unschedulable {} backoff {} conditions {:?}",
                    p.metadata.resource_version,
                    p.spec.as_ref().and_then(|s| s.node_name.clone()),
                    q.contains(&uid),
                    q.is_unschedulable(&uid),
                    q.is_backing_off(&uid),
                    p.status.and_then(|s| s.conditions)
                ));
            }
            panic!(
                "{} pods were never bound (queue active/backoff/unschedulable {:?}, stats {:?}, cached pods {}):\n{}",
                left.len(),
                q.lens(),
                running.scheduler().stats(),
                running.scheduler().cached_pods(),
                detail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats = running.scheduler().stats();
    eprintln!("race stats: {stats:?}");
    assert!(stats.bind_failures > 0, "conflicts were injected: {stats:?}");
    assert_eq!(running.scheduler().cached_pods(), PODS);
}
