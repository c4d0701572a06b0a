//! A `Client` wrapper that injects faults: scripted errors (409 on update, 410 on watch...),
//! dropped watch streams and slow writes; it also counts calls so tests can assert on traffic.

use async_trait::async_trait;
use bosun_core::{
    Client, DeleteParams, Deleted, DynamicObject, Error, ListParams, LogParams, LogStream, ObjectList, Patch, PatchParams, PostParams,
    Target, WatchParams, WatchStream,
};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The kind of request a fault rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Verb {
    /// `get` and `get_subresource`.
    Get,
    /// `list`.
    List,
    /// `create` and `create_subresource`.
    Create,
    /// `update` and `update_subresource`.
    Update,
    /// `patch` and `patch_subresource`.
    Patch,
    /// `delete` and `delete_collection`.
    Delete,
    /// `watch`.
    Watch,
}

impl Verb {
    fn is_write(self) -> bool {
        matches!(self, Self::Create | Self::Update | Self::Patch | Self::Delete)
    }
}

#[derive(Debug, Clone)]
struct Rule {
    verb: Verb,
    /// The plural the rule is limited to (`pods`), or every resource.
    resource: Option<String>,
    remaining: u32,
    error: Error,
}

#[derive(Default)]
struct FaultState {
    rules: Vec<Rule>,
    slow_writes: Duration,
    calls: BTreeMap<(Verb, String), u64>,
}

/// The fault script of a [`FaultyClient`]; cheap to clone, edited while controllers run.
#[derive(Clone, Default)]
pub struct Faults {
    state: Arc<Mutex<FaultState>>,
    dropper: Arc<tokio::sync::watch::Sender<u64>>,
    in_flight: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults").field("in_flight", &self.in_flight()).finish()
    }
}

impl Faults {
    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Fails the next `times` requests of `verb` (on `resource`, a plural, or any when `None`) with `error`.
    pub fn fail(&self, verb: Verb, resource: Option<&str>, times: u32, error: Error) {
        self.lock().rules.push(Rule { verb, resource: resource.map(str::to_owned), remaining: times, error });
    }

    /// The next `times` updates (of any resource, including status) fail with 409 Conflict.
    pub fn conflict_on_update(&self, times: u32) {
        self.fail(Verb::Update, None, times, Error::conflict("injected conflict: the object has been modified"));
    }

    /// The next `times` watch requests fail with 410 Gone (the reflector must relist).
    pub fn gone_on_watch(&self, times: u32) {
        self.fail(Verb::Watch, None, times, Error::gone("injected: too old resource version"));
    }

    /// Ends every open watch stream now (the reflectors must resume).
    pub fn drop_watches(&self) {
        self.dropper.send_modify(|g| *g += 1);
    }

    /// Delays every write by `delay` (zero to stop).
    pub fn slow_writes(&self, delay: Duration) {
        self.lock().slow_writes = delay;
    }

    /// Removes every pending rule and the write delay.
    pub fn clear(&self) {
        let mut s = self.lock();
        s.rules.clear();
        s.slow_writes = Duration::ZERO;
    }

    /// Requests of `verb` on `resource` (a plural) so far, injected failures included.
    pub fn calls(&self, verb: Verb, resource: &str) -> u64 {
        self.lock().calls.get(&(verb, resource.to_owned())).copied().unwrap_or(0)
    }

    /// Writes of any kind so far.
    pub fn writes(&self) -> u64 {
        self.lock().calls.iter().filter(|((v, _), _)| v.is_write()).map(|(_, n)| n).sum()
    }

    /// Requests running now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Counts a call and returns the injected error or write delay that applies.
    fn enter(&self, verb: Verb, resource: &str) -> (Option<Error>, Duration) {
        let mut s = self.lock();
        *s.calls.entry((verb, resource.to_owned())).or_default() += 1;
        let delay = if verb.is_write() { s.slow_writes } else { Duration::ZERO };
        let hit = s.rules.iter_mut().find(|r| r.verb == verb && r.remaining > 0 && r.resource.as_deref().is_none_or(|p| p == resource));
        let error = hit.map(|r| {
            r.remaining -= 1;
            r.error.clone()
        });
        s.rules.retain(|r| r.remaining > 0);
        (error, delay)
    }
}

struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A `Client` that forwards to another one through a [`Faults`] script.
pub struct FaultyClient {
    inner: Arc<dyn Client>,
    faults: Faults,
}

impl FaultyClient {
    /// Wraps `inner`; returns the client and its fault script.
    pub fn wrap(inner: Arc<dyn Client>) -> (Arc<Self>, Faults) {
        let faults = Faults::default();
        (Arc::new(Self { inner, faults: faults.clone() }), faults)
    }

    async fn gate(&self, verb: Verb, target: &Target<'_>) -> Result<InFlight, Error> {
        self.faults.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(self.faults.in_flight.clone());
        let (error, delay) = self.faults.enter(verb, &target.resource.plural);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match error {
            Some(e) => Err(e),
            None => Ok(guard),
        }
    }
}

#[async_trait]
impl Client for FaultyClient {
    async fn get(&self, target: Target<'_>, name: &str) -> bosun_core::Result<DynamicObject> {
        let _g = self.gate(Verb::Get, &target).await?;
        self.inner.get(target, name).await
    }

    async fn list(&self, target: Target<'_>, params: &ListParams) -> bosun_core::Result<ObjectList<DynamicObject>> {
        let _g = self.gate(Verb::List, &target).await?;
        self.inner.list(target, params).await
    }

    async fn create(&self, target: Target<'_>, obj: &DynamicObject, params: &PostParams) -> bosun_core::Result<DynamicObject> {
        let _g = self.gate(Verb::Create, &target).await?;
        self.inner.create(target, obj, params).await
    }

    async fn update(&self, target: Target<'_>, obj: &DynamicObject, params: &PostParams) -> bosun_core::Result<DynamicObject> {
        let _g = self.gate(Verb::Update, &target).await?;
        self.inner.update(target, obj, params).await
    }

    async fn patch(&self, target: Target<'_>, name: &str, patch: &Patch, params: &PatchParams) -> bosun_core::Result<DynamicObject> {
        let _g = self.gate(Verb::Patch, &target).await?;
        self.inner.patch(target, name, patch, params).await
    }

    async fn delete(&self, target: Target<'_>, name: &str, params: &DeleteParams) -> bosun_core::Result<Deleted<DynamicObject>> {
        let _g = self.gate(Verb::Delete, &target).await?;
        self.inner.delete(target, name, params).await
    }

    async fn delete_collection(
        &self,
        target: Target<'_>,
        list: &ListParams,
        params: &DeleteParams,
    ) -> bosun_core::Result<ObjectList<DynamicObject>> {
        let _g = self.gate(Verb::Delete, &target).await?;
        self.inner.delete_collection(target, list, params).await
    }

    async fn watch(&self, target: Target<'_>, params: &WatchParams) -> bosun_core::Result<WatchStream> {
        let _g = self.gate(Verb::Watch, &target).await?;
        let stream = self.inner.watch(target, params).await?;
        let mut dropped = self.faults.dropper.subscribe();
        dropped.mark_unchanged();
        let stop = async move {
            let _ = dropped.changed().await;
        };
        Ok(stream.take_until(Box::pin(stop)).boxed())
    }

    async fn get_subresource(&self, target: Target<'_>, name: &str, subresource: &str) -> bosun_core::Result<DynamicObject> {
        let _g = self.gate(Verb::Get, &target).await?;
        self.inner.get_subresource(target, name, subresource).await
    }

    async fn update_subresource(
        &self,
        target: Target<'_>,
        name: &str,
        subresource: &str,
        obj: &DynamicObject,
        params: &PostParams,
    ) -> bosun_core::Result<DynamicObject> {
        let _g = self.gate(Verb::Update, &target).await?;
        self.inner.update_subresource(target, name, subresource, obj, params).await
    }

    async fn patch_subresource(
        &self,
        target: Target<'_>,
        name: &str,
        subresource: &str,
        patch: &Patch,
        params: &PatchParams,
    ) -> bosun_core::Result<DynamicObject> {
        let _g = self.gate(Verb::Patch, &target).await?;
        self.inner.patch_subresource(target, name, subresource, patch, params).await
    }

    async fn create_subresource(
        &self,
        target: Target<'_>,
        name: &str,
        subresource: &str,
        body: &serde_json::Value,
        params: &PostParams,
    ) -> bosun_core::Result<serde_json::Value> {
        let _g = self.gate(Verb::Create, &target).await?;
        self.inner.create_subresource(target, name, subresource, body, params).await
    }

    async fn logs(&self, namespace: &str, pod: &str, params: &LogParams) -> bosun_core::Result<LogStream> {
        self.inner.logs(namespace, pod, params).await
    }
}
