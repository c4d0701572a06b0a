//! The API layer: Kubernetes semantics over a [`Storage`], served in-process as a
//! [`bosun_core::Client`].
//!
//! Start with [`ApiServer::in_memory`] (a server over [`MemoryStorage`] with the namespaces
//! `default`, `kube-system` and `kube-public`) or [`ApiServer::builder`] for any storage. A
//! request goes through the registry (which kind), the kind's strategy (defaulting, validation,
//! spec/status split), the admission chain, and then storage; reads and watches are served from a
//! watch cache that follows one storage watch per kind.

mod admission;
mod alloc;
mod cache;
mod client;
mod codec;
mod crd;
mod defaults;
mod delete;
mod hpa_v1;
pub mod metrics;
mod read;
pub(crate) use codec::{bookmark_object, watch_line};
pub(crate) use read::parse_rv;
mod registry;
mod services;
mod strategy;
mod subresource;
mod typed;
mod validation;
mod write;

pub use admission::{AdmissionPlugin, Attributes, NamespaceLifecycle, Operation, Priority, ServiceAccountDefaults, default_plugins};
pub use alloc::ParseRangeError;
pub use cache::Cached;
pub use read::{EncodedList, EncodedWatch};
pub(crate) use write::{apply_needs_manager, patched_invalid};

use crate::http::{NodeConnector, ResourceCatalog};
use crate::storage::{MemoryStorage, RangeRequest, Storage};
use bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use bosun_core::k8s_openapi::jiff::Timestamp;
use bosun_core::{ApiResource, DynamicObject, Result};
use cache::{CacheOptions, KindCache};
use registry::Registry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use strategy::Kind;
use tokio::sync::OnceCell;

/// The namespaces every cluster starts with (`kube-node-lease` holds the nodes' heartbeat leases).
pub const INITIAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Kubernetes' API semantics over a [`Storage`]; implements [`bosun_core::Client`].
pub struct ApiServer {
    storage: Arc<dyn Storage>,
    registry: Registry,
    caches: Mutex<HashMap<String, Arc<KindCache>>>,
    cache_options: CacheOptions,
    ips: alloc::Allocator,
    ports: alloc::Allocator,
    node_ports: (u16, u16),
    admission: Vec<Arc<dyn AdmissionPlugin>>,
    nodes: Option<Arc<dyn NodeConnector>>,
    metrics: Option<Arc<dyn metrics::MetricsSource>>,
    event_ttl: Duration,
    event_lease: tokio::sync::Mutex<Option<(crate::storage::LeaseId, std::time::Instant)>>,
    bootstrap: OnceCell<()>,
    clock: Option<Clock>,
}

/// Where an [`ApiServer`] reads the time it stamps on objects (`creationTimestamp`,
/// `deletionTimestamp`, condition transition times): see [`ApiServerBuilder::clock`].
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer").field("node_ports", &self.node_ports).finish_non_exhaustive()
    }
}

impl Drop for ApiServer {
    /// Stops the watch-cache tasks, so that dropping the last handle releases the storage.
    fn drop(&mut self) {
        for cache in self.caches.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner).values() {
            cache.stop();
        }
    }
}

/// Builds an [`ApiServer`] over any storage.
#[must_use]
pub struct ApiServerBuilder {
    storage: Arc<dyn Storage>,
    cluster_ip_range: String,
    node_ports: (u16, u16),
    admission: Vec<Arc<dyn AdmissionPlugin>>,
    cache_options: CacheOptions,
    nodes: Option<Arc<dyn NodeConnector>>,
    metrics: Option<Arc<dyn metrics::MetricsSource>>,
    event_ttl: Duration,
    clock: Option<Clock>,
}

impl std::fmt::Debug for ApiServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServerBuilder")
            .field("cluster_ip_range", &self.cluster_ip_range)
            .field("node_ports", &self.node_ports)
            .finish_non_exhaustive()
    }
}

impl ApiServerBuilder {
    /// The CIDR Service cluster IPs come from (default `10.96.0.0/12`).
    pub fn cluster_ip_range(mut self, cidr: impl Into<String>) -> Self {
        self.cluster_ip_range = cidr.into();
        self
    }

    /// The inclusive range NodePorts come from (default 30000-32767).
    pub fn node_port_range(mut self, first: u16, last: u16) -> Self {
        self.node_ports = (first.min(last), first.max(last));
        self
    }

    /// Replaces the admission chain (default: [`default_plugins`]).
    pub fn admission(mut self, plugins: Vec<Arc<dyn AdmissionPlugin>>) -> Self {
        self.admission = plugins;
        self
    }

    /// Appends an admission plugin to the chain.
    pub fn admission_plugin(mut self, plugin: Arc<dyn AdmissionPlugin>) -> Self {
        self.admission.push(plugin);
        self
    }

    /// The connection to nodes that serves `pods/log` (and `pods/exec` through the HTTP server);
    /// default: none, so logs answer 405.
    pub fn node_connector(mut self, nodes: Arc<dyn NodeConnector>) -> Self {
        self.nodes = Some(nodes);
        self
    }

    /// Serves the resource metrics API (`metrics.k8s.io/v1beta1` NodeMetrics and PodMetrics, what
    /// `kubectl top` and the HorizontalPodAutoscaler read) from this source; default: none, so the
    /// group is not served.
    pub fn metrics_source(mut self, source: Arc<dyn metrics::MetricsSource>) -> Self {
        self.metrics = Some(source);
        self
    }

    /// How long Events live before storage expires them (default one hour; zero keeps them).
    pub fn event_ttl(mut self, ttl: Duration) -> Self {
        self.event_ttl = ttl;
        self
    }

    /// How many events each kind's watch cache keeps for watches resuming from an older version
    /// (default 100,000); older versions get 410 Gone.
    pub fn watch_history(mut self, events: usize) -> Self {
        self.cache_options.history = events.max(1);
        self
    }

    /// How many events may wait for one watcher before it is ended as too slow (default 4096).
    pub fn watcher_queue(mut self, events: usize) -> Self {
        self.cache_options.watcher_queue = events.max(1);
        self
    }

    /// How often watchers that allow bookmarks get one (default 30 s).
    pub fn bookmark_interval(mut self, interval: Duration) -> Self {
        self.cache_options.bookmark_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Reads the time from `clock` instead of the system clock (default), e.g. a test harness's
    /// virtual clock, so that the timestamps the server stamps agree with it. Timestamps keep
    /// Kubernetes' second precision.
    pub fn clock(mut self, clock: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Builds the server. Fails only on an invalid cluster IP range.
    pub fn build(self) -> std::result::Result<Arc<ApiServer>, ParseRangeError> {
        let ips = alloc::Allocator::ips(&self.cluster_ip_range)?;
        let registry = Registry::builtin();
        registry.serve_without_storage(vec![hpa_v1::resource()]);
        if self.metrics.is_some() {
            registry.serve_without_storage(metrics::resources());
        }
        Ok(Arc::new(ApiServer {
            storage: self.storage,
            registry,
            caches: Mutex::new(HashMap::new()),
            cache_options: self.cache_options,
            ips,
            ports: alloc::Allocator::ports(self.node_ports.0, self.node_ports.1),
            node_ports: self.node_ports,
            admission: self.admission,
            nodes: self.nodes,
            metrics: self.metrics,
            event_ttl: self.event_ttl,
            event_lease: tokio::sync::Mutex::new(None),
            bootstrap: OnceCell::new(),
            clock: self.clock,
        }))
    }
}

impl ApiServer {
    /// A builder over this storage.
    pub fn builder(storage: Arc<dyn Storage>) -> ApiServerBuilder {
        ApiServerBuilder {
            storage,
            cluster_ip_range: "10.96.0.0/12".into(),
            node_ports: (30000, 32767),
            admission: default_plugins(),
            cache_options: CacheOptions::default(),
            nodes: None,
            metrics: None,
            event_ttl: Duration::from_secs(3600),
            clock: None,
        }
    }

    /// A server over a fresh [`MemoryStorage`], with the default options.
    pub fn in_memory() -> Arc<Self> {
        match Self::builder(Arc::new(MemoryStorage::new())).build() {
            Ok(s) => s,
            // The default range is a constant that parses.
            Err(e) => unreachable!("default cluster IP range: {e}"),
        }
    }

    /// Now, from the server's clock, at the second precision Kubernetes timestamps have.
    pub(crate) fn now(&self) -> Time {
        match &self.clock {
            Some(clock) => {
                let t = clock();
                Time(Timestamp::from_second(t.as_second()).unwrap_or(t))
            }
            None => write::now(),
        }
    }

    /// [`ApiServer::now`] as RFC 3339 text.
    pub(crate) fn now_text(&self) -> String {
        serde_json::to_value(self.now()).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
    }

    /// The node connection behind `pods/log` and `pods/exec`, if one was given.
    pub fn node_connector(&self) -> Option<&Arc<dyn NodeConnector>> {
        self.nodes.as_ref()
    }

    /// The storage underneath.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Every served resource: the built-in kinds and the custom resources of established definitions.
    pub fn resources(&self) -> Arc<[ApiResource]> {
        self.registry.resources()
    }

    /// The served resource with this group, version and plural.
    pub fn resource(&self, group: &str, version: &str, plural: &str) -> Option<ApiResource> {
        self.registry.find(group, version, plural).map(|k| k.resource.clone())
    }

    /// The OpenAPI v3 schema of a custom resource, from its definition.
    pub fn custom_schema(&self, resource: &ApiResource) -> Option<serde_json::Value> {
        let kind = self.registry.find(&resource.group, &resource.version, &resource.plural)?;
        kind.schema.as_ref().map(|s| s.json().clone())
    }

    /// Waits until the server is bootstrapped; first creates what every cluster starts with (once): the initial namespaces; registers stored
    /// custom resource definitions.
    async fn ready(&self) -> Result<()> {
        // In-memory storage answers without ever yielding: spend the task's cooperative budget so
        // that a caller looping on requests cannot starve the watch caches of their worker.
        tokio::task::consume_budget().await;
        self.bootstrap
            .get_or_try_init(|| async {
                let crds = bosun_core::resource::builtin("apiextensions.k8s.io", "v1", "CustomResourceDefinition")
                    .ok_or_else(|| bosun_core::Error::internal("customresourcedefinitions are not served"))?;
                let stored = self.storage.range(RangeRequest::prefix(codec::prefix(crds))).await.map_err(codec::storage_error)?;
                for kv in stored.kvs {
                    if let Ok(obj) = codec::decode(&kv.value, kv.mod_revision) {
                        self.registry.register(crd::kinds_of(&obj));
                    }
                }
                // Every kind's watch cache lists before the first write a client can make, so that
                // any version a client sees can be watched from.
                let caches: Vec<Arc<KindCache>> =
                    self.registry.resources().iter().filter_map(|r| self.registry.resolve(r).ok()).map(|k| self.cache(&k)).collect();
                for c in caches {
                    c.wait_for(0).await;
                }
                let ns = bosun_core::resource::builtin("", "v1", "Namespace")
                    .ok_or_else(|| bosun_core::Error::internal("namespaces are not served"))?;
                let kind = self.registry.resolve(ns)?;
                for name in INITIAL_NAMESPACES {
                    let obj = DynamicObject::new(ns, *name);
                    match self.create_object(&kind, None, obj, &write::Create::default()).await {
                        Ok(_) => {}
                        Err(e) if e.is_already_exists() => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// The watch cache of a kind, started on first use.
    fn cache(&self, kind: &Arc<Kind>) -> Arc<KindCache> {
        if let Some(c) = kind.cache.get().and_then(std::sync::Weak::upgrade) {
            return c;
        }
        let c = self.cache_by_prefix(kind);
        let _ = kind.cache.set(Arc::downgrade(&c));
        c
    }

    fn cache_by_prefix(&self, kind: &Arc<Kind>) -> Arc<KindCache> {
        let prefix = codec::prefix(&kind.resource);
        let mut caches = self.caches.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = caches.get(&prefix) {
            return c.clone();
        }
        let cache = KindCache::new(prefix.clone(), kind.clone(), self.cache_options.clone());
        cache.start(self.storage.clone());
        caches.insert(prefix, cache.clone());
        cache
    }

    fn drop_cache(&self, resource: &ApiResource) {
        let prefix = codec::prefix(resource);
        self.caches.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&prefix);
    }

    /// The number of open watches, over every kind.
    pub fn watch_count(&self) -> usize {
        let caches = self.caches.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        caches.values().map(|c| c.watcher_count()).sum()
    }

    /// Whether a namespace exists (`None` if not) and is terminating, from the watch cache when
    /// it has the namespace, else from storage.
    pub async fn namespace_terminating(&self, name: &str) -> Result<Option<bool>> {
        let res =
            bosun_core::resource::builtin("", "v1", "Namespace").ok_or_else(|| bosun_core::Error::internal("namespaces are not served"))?;
        let kind = self.registry.resolve(res)?;
        let key = codec::key(res, None, name);
        let terminating = |o: &DynamicObject| {
            o.metadata.deletion_timestamp.is_some()
                || o.data.get("status").and_then(|s| s.get("phase")).and_then(|p| p.as_str()) == Some("Terminating")
        };
        if let Some(c) = self.cache(&kind).get(&key) {
            // `status.phase` is a selectable field of namespaces: no need to decode the namespace.
            return Ok(Some(c.deleting() || c.field("status.phase") == "Terminating"));
        }
        match self.storage.get(&key).await.map_err(codec::storage_error)? {
            Some(kv) => Ok(Some(terminating(&codec::decode(&kv.value, kv.mod_revision)?))),
            None => Ok(None),
        }
    }

    /// A namespace, from the watch cache when it has it, else from storage.
    pub async fn lookup_namespace(&self, name: &str) -> Result<Option<DynamicObject>> {
        let res =
            bosun_core::resource::builtin("", "v1", "Namespace").ok_or_else(|| bosun_core::Error::internal("namespaces are not served"))?;
        let kind = self.registry.resolve(res)?;
        let key = codec::key(res, None, name);
        if let Some(c) = self.cache(&kind).get(&key) {
            return Ok(Some(c.object()?));
        }
        match self.storage.get(&key).await.map_err(codec::storage_error)? {
            Some(kv) => Ok(Some(codec::decode(&kv.value, kv.mod_revision)?)),
            None => Ok(None),
        }
    }
}

/// Discovery, OpenAPI and routing of the HTTP server read the served kinds from here, so custom
/// resources appear as soon as their definition is created.
impl ResourceCatalog for ApiServer {
    fn resources(&self) -> Arc<[ApiResource]> {
        self.registry.resources()
    }

    fn schema(&self, resource: &ApiResource) -> Option<serde_json::Value> {
        self.custom_schema(resource)
    }

    fn deprecation(&self, resource: &ApiResource) -> Option<String> {
        self.registry.find(&resource.group, &resource.version, &resource.plural).and_then(|k| k.deprecation.clone())
    }
}
