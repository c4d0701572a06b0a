//! A `Client` wrapper that injects faults: scripted errors (409 on update, 410 on watch...),
//! dropped watch streams and slow writes; it also counts calls so tests can assert on traffic.

/// The kind of request a fault rule matches (subresource calls count as their verb: a status
/// update is an `Update`).
pub use bosun_core::layer::Verb;
use bosun_core::layer::{Call, Layer, Layered};
use bosun_core::{Client, Error, WatchStream};
use futures::StreamExt;
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// A `Client` that forwards to another one through a [`Faults`] script: made by [`Faults::wrap`].
pub type FaultyClient = Layered<Faults>;

impl Faults {
    /// Wraps `inner`; returns the client and its fault script.
    pub fn wrap(inner: Arc<dyn Client>) -> (Arc<FaultyClient>, Faults) {
        let faults = Faults::default();
        (Arc::new(Layered::new(inner, faults.clone())), faults)
    }

    /// Counts the call and applies the script: the write delay, then the injected error, if any.
    async fn gate(&self, verb: Verb, resource: &str) -> Result<InFlight, Error> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(self.in_flight.clone());
        let (error, delay) = self.enter(verb, resource);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match error {
            Some(e) => Err(e),
            None => Ok(guard),
        }
    }
}

impl Layer for Faults {
    fn call<'a, T: Send + 'a>(
        &'a self,
        call: Call<'a>,
        next: BoxFuture<'a, bosun_core::Result<T>>,
    ) -> BoxFuture<'a, bosun_core::Result<T>> {
        Box::pin(async move {
            let _in_flight = self.gate(call.verb, call.plural).await?;
            next.await
        })
    }

    fn watch_stream(&self, _call: Call<'_>, stream: WatchStream) -> WatchStream {
        let mut dropped = self.dropper.subscribe();
        dropped.mark_unchanged();
        let stop = async move {
            let _ = dropped.changed().await;
        };
        stream.take_until(Box::pin(stop)).boxed()
    }
}
