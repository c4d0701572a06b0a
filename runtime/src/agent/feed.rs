//! Where a node agent's pods come from: a [`PodSource`].
//!
//! The default, [`NodeWatch`], is the kubelet's: one watch of the pods whose `spec.nodeName` is
//! this node. Many agents in one process (hollow nodes) share one [`SharedPodFeed`] instead: a
//! single watch of every bound pod, handed out by node name, so that the API server serves one
//! watcher instead of one per node and each pod is decoded once instead of once per agent.
//!
//! ```no_run
//! # async fn demo(client: std::sync::Arc<dyn bosun_core::Client>) -> Result<(), bosun_core::Error> {
//! use bosun_runtime::agent::feed::SharedPodFeed;
//! use bosun_runtime::{FakeRuntime, HostImages, NodeAgent, NodeAgentConfig};
//! let feed = SharedPodFeed::spawn(client.clone());
//! for i in 0..3 {
//!     let config = NodeAgentConfig::new(format!("hollow-{i}"), format!("/tmp/hollow-{i}")).pod_source(feed.clone());
//!     NodeAgent::new(client.clone(), FakeRuntime::new(), HostImages, config).start().await?;
//! }
//! # Ok(()) }
//! ```

use bosun_core::k8s_openapi::api::core::v1::Pod;
use bosun_core::watch::{Change, Event, Informer, WatchError, WatcherConfig, watcher};
use bosun_core::{Api, Client};
use futures::StreamExt;
use futures::stream::BoxStream;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use tokio::sync::mpsc;

/// The pods bound to one node, as a watcher reports them: a complete listing (`Init`,
/// `InitApply`..., `InitDone`) first and after every relist, changes in between.
pub type PodEvents = BoxStream<'static, Result<Event<Arc<Pod>>, WatchError>>;

/// Hands a node agent the pods bound to its node.
pub trait PodSource: Send + Sync {
    /// The pods bound to `node_name`, from now on (the stream never ends on its own).
    fn pods(&self, node_name: &str) -> PodEvents;
}

/// The kubelet's pod source: a watch of the pods with `spec.nodeName=<node>` (the default).
#[derive(Clone)]
pub struct NodeWatch {
    client: Arc<dyn Client>,
}

impl std::fmt::Debug for NodeWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeWatch").finish_non_exhaustive()
    }
}

impl NodeWatch {
    /// A per-node watch through `client`.
    pub fn new(client: Arc<dyn Client>) -> Self {
        Self { client }
    }
}

/// Drops `metadata.managedFields`: the agent never reads them (its status writes are patches),
/// and they are a large part of every pod it holds.
fn without_managed_fields(mut e: Event<Pod>) -> Event<Pod> {
    if let Event::InitApply(p) | Event::Apply(p) | Event::Delete(p) = &mut e {
        p.metadata.managed_fields = None;
    }
    e
}

fn shared_event(e: Event<Pod>) -> Event<Arc<Pod>> {
    match without_managed_fields(e) {
        Event::Init => Event::Init,
        Event::InitApply(p) => Event::InitApply(Arc::new(p)),
        Event::InitDone => Event::InitDone,
        Event::Apply(p) => Event::Apply(Arc::new(p)),
        Event::Delete(p) => Event::Delete(Arc::new(p)),
    }
}

impl PodSource for NodeWatch {
    fn pods(&self, node_name: &str) -> PodEvents {
        let api = Api::<Pod>::all(self.client.clone());
        let config = WatcherConfig::default().fields(format!("spec.nodeName={node_name}"));
        watcher(api, config).map(|r| r.map(shared_event)).boxed()
    }
}

type Item = Result<Event<Arc<Pod>>, WatchError>;
type PodsByUid = HashMap<String, Arc<Pod>>;

/// One watch of every bound pod, shared by any number of node agents in this process: each
/// subscriber gets the pods of its node (demultiplexed by `spec.nodeName`). Cheap to clone; the
/// watch stops when the last clone is dropped.
#[derive(Clone)]
pub struct SharedPodFeed {
    inner: Arc<FeedInner>,
}

impl std::fmt::Debug for SharedPodFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.inner.lock();
        f.debug_struct("SharedPodFeed").field("ready", &st.ready).field("nodes", &st.by_node.len()).finish_non_exhaustive()
    }
}

struct FeedInner {
    state: Mutex<FeedState>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for FeedInner {
    fn drop(&mut self) {
        if let Some(t) = self.task.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            t.abort();
        }
    }
}

#[derive(Default)]
struct FeedState {
    /// The first listing is complete.
    ready: bool,
    /// Bound pods by node name, then by UID.
    by_node: HashMap<String, PodsByUid>,
    /// A relist in progress; swapped in at `InitDone`.
    relist: Option<HashMap<String, PodsByUid>>,
    /// Subscribers by node name.
    subscribers: HashMap<String, Vec<mpsc::UnboundedSender<Item>>>,
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty())
}

fn uid_of(pod: &Pod) -> String {
    match &pod.metadata.uid {
        Some(uid) => uid.clone(),
        None => format!("{}/{}", pod.metadata.namespace.as_deref().unwrap_or_default(), pod.metadata.name.as_deref().unwrap_or_default()),
    }
}

/// Sends a node's complete listing; false when the subscriber is gone.
fn send_listing(tx: &mpsc::UnboundedSender<Item>, pods: Option<&PodsByUid>) -> bool {
    let mut ok = tx.send(Ok(Event::Init)).is_ok();
    for p in pods.into_iter().flat_map(HashMap::values) {
        ok &= tx.send(Ok(Event::InitApply(p.clone()))).is_ok();
    }
    ok && tx.send(Ok(Event::InitDone)).is_ok()
}

impl FeedState {
    /// A new subscriber for a node: its listing now if the feed is ready (else when it is), then changes.
    fn subscribe(&mut self, node: &str) -> mpsc::UnboundedReceiver<Item> {
        let (tx, rx) = mpsc::unbounded_channel();
        if !self.ready || send_listing(&tx, self.by_node.get(node)) {
            self.subscribers.entry(node.to_string()).or_default().push(tx);
        }
        rx
    }

    fn send(&mut self, node: &str, item: &Item) {
        if let Some(subs) = self.subscribers.get_mut(node) {
            subs.retain(|tx| tx.send(item.clone()).is_ok());
            if subs.is_empty() {
                self.subscribers.remove(node);
            }
        }
    }

    fn apply(&mut self, event: Event<Arc<Pod>>) {
        match event {
            Event::Init => self.relist = Some(HashMap::new()),
            Event::InitApply(p) => {
                let relist = self.relist.get_or_insert_with(HashMap::new);
                if let Some(node) = node_of(&p) {
                    relist.entry(node.to_string()).or_default().insert(uid_of(&p), p);
                }
            }
            Event::InitDone => {
                self.by_node = self.relist.take().unwrap_or_default();
                self.ready = true;
                let by_node = &self.by_node;
                self.subscribers.retain(|node, subs| {
                    subs.retain(|tx| send_listing(tx, by_node.get(node)));
                    !subs.is_empty()
                });
            }
            Event::Apply(p) => {
                let Some(node) = node_of(&p).map(str::to_owned) else { return };
                self.by_node.entry(node.clone()).or_default().insert(uid_of(&p), p.clone());
                self.send(&node, &Ok(Event::Apply(p)));
            }
            Event::Delete(p) => {
                let Some(node) = node_of(&p).map(str::to_owned) else { return };
                if let Some(pods) = self.by_node.get_mut(&node) {
                    pods.remove(&uid_of(&p));
                    if pods.is_empty() {
                        self.by_node.remove(&node);
                    }
                }
                self.send(&node, &Ok(Event::Delete(p)));
            }
        }
    }

    /// A complete listing of `pods` (a relist).
    fn relist(&mut self, pods: Vec<Arc<Pod>>) {
        self.apply(Event::Init);
        for p in pods {
            self.apply(Event::InitApply(p));
        }
        self.apply(Event::InitDone);
    }
}

impl SharedPodFeed {
    /// Starts the shared watch (of pods with a `spec.nodeName`) on the current tokio runtime.
    pub fn spawn(client: Arc<dyn Client>) -> Self {
        Self::start(|weak| tokio::spawn(run(client, weak)))
    }

    /// Feeds the agents from a pod informer the process already has (the scheduler's and the
    /// controllers' `Informers::all::<Pod>()`) instead of a watch of its own: the agents then hold
    /// the informer's copy of each pod (`Arc`s of its cache), not a second one, and the API
    /// server serves one pod watcher fewer. The informer's caches drop `managedFields` when it
    /// comes from `Informers::new`.
    pub fn from_informer(pods: Informer<Pod>) -> Self {
        Self::start(|weak| tokio::spawn(follow(pods, weak)))
    }

    fn start(spawn: impl FnOnce(Weak<FeedInner>) -> tokio::task::JoinHandle<()>) -> Self {
        let inner = Arc::new(FeedInner { state: Mutex::new(FeedState::default()), task: Mutex::new(None) });
        let task = spawn(Arc::downgrade(&inner));
        *inner.task.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task.abort_handle());
        Self { inner }
    }

    /// Whether the first listing is complete.
    pub fn is_ready(&self) -> bool {
        self.inner.lock().ready
    }

    /// How many bound pods the feed holds.
    pub fn len(&self) -> usize {
        self.inner.lock().by_node.values().map(HashMap::len).sum()
    }

    /// True when the feed holds no pod.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl FeedInner {
    fn lock(&self) -> MutexGuard<'_, FeedState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

async fn run(client: Arc<dyn Client>, feed: Weak<FeedInner>) {
    let api = Api::<Pod>::all(client);
    let mut events = std::pin::pin!(watcher(api, WatcherConfig::default().fields("spec.nodeName!=")));
    while let Some(item) = events.next().await {
        let Some(feed) = feed.upgrade() else { return };
        match item {
            Ok(event) => feed.lock().apply(shared_event(event)),
            Err(error) => tracing::warn!(%error, "shared pod watch failed; retrying"),
        }
    }
}

/// Follows an informer: its cache as the first listing (and again after a `Resync`), its changes
/// after. Changes made between subscribing and reading the cache arrive twice (an `Apply` of a pod
/// the listing had): agents take a repeated `Apply` as no change.
async fn follow(pods: Informer<Pod>, feed: Weak<FeedInner>) {
    let mut changes = pods.subscribe();
    pods.wait_ready().await;
    match feed.upgrade() {
        Some(f) => f.lock().relist(pods.store().list()),
        None => return,
    }
    while let Some(change) = changes.next().await {
        let Some(f) = feed.upgrade() else { return };
        match change {
            Change::Applied(p) => f.lock().apply(Event::Apply(p)),
            Change::Deleted(p) => f.lock().apply(Event::Delete(p)),
            Change::Resync => f.lock().relist(pods.store().list()),
        }
    }
}

impl PodSource for SharedPodFeed {
    fn pods(&self, node_name: &str) -> PodEvents {
        let rx = self.inner.lock().subscribe(node_name);
        tokio_stream::wrappers::UnboundedReceiverStream::new(rx).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_core::k8s_openapi::api::core::v1::PodSpec;
    use bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str, node: &str) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("d".into()),
                uid: Some(format!("u-{name}")),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec { node_name: Some(node.into()), ..PodSpec::default() }),
            ..Pod::default()
        })
    }

    fn drain(rx: &mut mpsc::UnboundedReceiver<Item>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(item) = rx.try_recv() {
            out.push(match item {
                Ok(Event::Init) => "init".to_string(),
                Ok(Event::InitApply(p)) => format!("list {}", p.metadata.name.as_deref().unwrap_or_default()),
                Ok(Event::InitDone) => "done".to_string(),
                Ok(Event::Apply(p)) => format!("apply {}", p.metadata.name.as_deref().unwrap_or_default()),
                Ok(Event::Delete(p)) => format!("delete {}", p.metadata.name.as_deref().unwrap_or_default()),
                Err(e) => format!("error {e}"),
            });
        }
        out
    }

    #[test]
    fn each_node_sees_only_its_pods_with_a_listing_first_and_after_every_relist() {
        let mut st = FeedState::default();
        // Subscribed before the first listing: the listing comes when it completes.
        let mut early = st.subscribe("n1");
        st.apply(Event::Init);
        st.apply(Event::InitApply(pod("a", "n1")));
        st.apply(Event::InitApply(pod("b", "n2")));
        assert!(drain(&mut early).is_empty(), "nothing before the listing is complete");
        st.apply(Event::InitDone);
        assert_eq!(drain(&mut early), ["init", "list a", "done"]);
        // Subscribed later: the node's current pods at once.
        let mut late = st.subscribe("n2");
        assert_eq!(drain(&mut late), ["init", "list b", "done"]);
        st.apply(Event::Apply(pod("c", "n2")));
        st.apply(Event::Delete(pod("a", "n1")));
        assert_eq!(drain(&mut early), ["delete a"]);
        assert_eq!(drain(&mut late), ["apply c"]);
        // A relist: every subscriber gets its complete listing again (b is gone).
        st.apply(Event::Init);
        st.apply(Event::InitApply(pod("c", "n2")));
        st.apply(Event::InitDone);
        assert_eq!(drain(&mut early), ["init", "done"]);
        assert_eq!(drain(&mut late), ["init", "list c", "done"]);
        // A dropped subscriber is forgotten at the next event for its node.
        drop(late);
        st.apply(Event::Apply(pod("d", "n2")));
        assert!(!st.subscribers.contains_key("n2"));
        assert_eq!(st.by_node.get("n2").map(HashMap::len), Some(2));
    }

    fn bound_pod(name: &str, node: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "namespace": "default" },
            "spec": { "nodeName": node, "terminationGracePeriodSeconds": 0, "containers": [{ "name": "app", "image": "fake" }] }
        }))
        .expect("pod json")
    }

    async fn wait_until(what: &str, check: impl AsyncFn() -> bool) {
        for _ in 0..200 {
            if check().await {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("not reached in 10 s: {what}");
    }

    #[tokio::test(start_paused = true)]
    async fn agents_sharing_a_feed_run_the_pods_of_their_own_node() {
        agents_run_the_pods_of_their_own_node(false).await;
    }

    #[tokio::test(start_paused = true)]
    async fn agents_fed_by_an_informer_run_their_pods_and_hold_the_informers_copies() {
        agents_run_the_pods_of_their_own_node(true).await;
    }

    /// Three agents on one feed: its own watch, or (`from_informer`) a pod informer's cache.
    async fn agents_run_the_pods_of_their_own_node(from_informer: bool) {
        use crate::{FakeRuntime, HostImages, NodeAgent, NodeAgentConfig};
        use bosun_core::{DeleteParams, PostParams};
        let client: Arc<dyn Client> = bosun_store::ApiServer::in_memory();
        let dir = tempfile::tempdir().expect("tempdir");
        let pods_informer = from_informer.then(|| bosun_core::watch::Informers::new(client.clone()).all::<Pod>());
        let feed = match &pods_informer {
            Some(i) => SharedPodFeed::from_informer(i.clone()),
            None => SharedPodFeed::spawn(client.clone()),
        };
        let api = Api::<Pod>::namespaced(client.clone(), "default");
        // n2's pod exists before its agent starts: the agent gets it from the feed's listing.
        api.create(&bound_pod("early", "n2"), &PostParams::default()).await.expect("create");
        let fakes = [FakeRuntime::new(), FakeRuntime::new(), FakeRuntime::new()];
        let mut nodes = Vec::new();
        for (i, fake) in fakes.iter().enumerate() {
            let config = NodeAgentConfig::new(format!("n{i}"), dir.path().join(i.to_string()))
                .measure_pressure(false)
                .record_events(false)
                .pod_source(feed.clone());
            nodes.push(NodeAgent::new(client.clone(), fake.clone(), HostImages, config).start().await.expect("agent"));
        }
        for (name, node) in [("a", "n0"), ("b", "n0"), ("c", "n0"), ("d", "n1")] {
            api.create(&bound_pod(name, node), &PostParams::default()).await.expect("create");
        }
        wait_until("every pod Running", async || {
            let pods = api.list(&Default::default()).await.expect("list").items;
            pods.len() == 5 && pods.iter().all(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        })
        .await;
        assert_eq!([fakes[0].running(), fakes[1].running(), fakes[2].running()], [3, 1, 1], "each node runs only its own pods");
        assert_eq!(nodes[0].pod_count(), 3);
        assert_eq!(feed.len(), 5);
        api.delete("b", &DeleteParams::default()).await.expect("delete");
        wait_until("b gone and stopped", async || api.get_opt("b").await.expect("get").is_none() && fakes[0].running() == 2).await;
        wait_until("the feed forgot b", async || feed.len() == 4).await;
        assert_eq!([fakes[1].running(), fakes[2].running()], [1, 1]);
        if let Some(informer) = &pods_informer {
            // One copy of each pod in the process: the feed holds the informer's Arcs.
            wait_until("the feed holds the informer's copies", async || {
                let st = feed.inner.lock();
                let held: Vec<&Arc<Pod>> = st.by_node.values().flat_map(HashMap::values).collect();
                held.len() == 4
                    && held.iter().all(|p| {
                        let key =
                            bosun_core::ObjectKey::new(p.metadata.namespace.as_deref(), p.metadata.name.as_deref().unwrap_or_default());
                        informer.store().get(&key).is_some_and(|cached| Arc::ptr_eq(&cached, p))
                    })
            })
            .await;
        }
    }
}
