//! Kubernetes `Event`s about a pod (Pulled, Created, Started, Killing, BackOff, Unhealthy,
//! FailedMount, ...), the kubelet's way.
//!
//! A [`Recorder`] never waits: it hands the event to its agent's [`EventSink`], one background task
//! that writes events in the order they come, several at a time, and folds repeats as client-go's
//! `EventCorrelator` does:
//! - **dedup**: the same event again (same object, type, reason and message) patches the first
//!   one's `count` and `lastTimestamp` instead of creating another object;
//! - **aggregation**: more than [`SIMILAR_LIMIT`] events within [`SIMILAR_WINDOW`] that differ only
//!   in their message become one event, `(combined from similar events): <latest message>`;
//! - **spam filter**: each object may cause a burst of [`SPAM_BURST`] events, then one more per
//!   [`SPAM_REFILL`]; the rest are dropped.
//!
//! The queue holds at most [`QUEUE_LIMIT`] events (client-go's broadcaster keeps 1,000); more are
//! dropped, so a slow API server never makes the agent grow without bound.

use bosun_core::k8s_openapi::api::core::v1::ObjectReference;
use bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use bosun_core::{ApiResource, Client, DynamicObject, Patch, PatchParams, PostParams, Target, TypeMeta, TypedObject};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use jiff::Timestamp;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Events waiting to be written, at most (client-go's `maxQueuedEvents`).
pub const QUEUE_LIMIT: usize = 1000;
/// Writes in flight at once per sink.
pub const IN_FLIGHT: usize = 16;
/// Similar events (differing only in message) allowed within [`SIMILAR_WINDOW`] before they are combined.
pub const SIMILAR_LIMIT: usize = 10;
/// The window of [`SIMILAR_LIMIT`] (client-go: 10 minutes).
pub const SIMILAR_WINDOW: Duration = Duration::from_secs(600);
/// Events one object may cause at once (client-go's spam filter burst).
pub const SPAM_BURST: f64 = 25.0;
/// One more event per this much time once the burst is spent (client-go: 1 per 5 minutes).
pub const SPAM_REFILL: Duration = Duration::from_secs(300);
/// Distinct events remembered for dedup (client-go's LRU holds 4,096).
pub const SEEN_LIMIT: usize = 4096;
/// The message prefix of a combined event.
pub const COMBINED_PREFIX: &str = "(combined from similar events): ";

/// One event as a recorder hands it over.
#[derive(Debug, Clone)]
struct Pending {
    object: Arc<ObjectReference>,
    type_: &'static str,
    reason: String,
    message: String,
    at: Timestamp,
    now: Instant,
}

/// Writes the events of one agent in the background. Cheap to clone; the task stops when the
/// last clone (and every [`Recorder`] holding one) is dropped, after writing what is queued.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink").field("queued", &(QUEUE_LIMIT - self.tx.capacity())).finish()
    }
}

impl EventSink {
    /// Starts the sink's writer on the current tokio runtime: events come from `component` on
    /// `host` (the kubelet: `kubelet` on the node's name).
    pub fn spawn(client: Arc<dyn Client>, component: &str, host: &str) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_LIMIT);
        let source = Source { component: component.to_string(), host: host.to_string() };
        tokio::spawn(write_loop(client, source, rx));
        Self { tx }
    }

    fn send(&self, event: Pending) {
        if let Err(error) = self.tx.try_send(event) {
            tracing::debug!(%error, "event queue full or closed; event dropped");
        }
    }
}

/// Records events about one object. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    sink: Option<EventSink>,
    object: Arc<ObjectReference>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").field("object", &self.object.name).finish_non_exhaustive()
    }
}

impl Recorder {
    /// A recorder for an object writing through `sink`; `None` records nothing (for scale runs).
    pub fn new(sink: Option<EventSink>, object: ObjectReference) -> Self {
        Self { sink, object: Arc::new(object) }
    }

    /// A `Normal` event.
    pub fn normal(&self, reason: &str, message: impl Into<String>) {
        self.record("Normal", reason, message.into());
    }

    /// A `Warning` event.
    pub fn warning(&self, reason: &str, message: impl Into<String>) {
        self.record("Warning", reason, message.into());
    }

    fn record(&self, type_: &'static str, reason: &str, message: String) {
        tracing::debug!(object = ?self.object.name, reason, %message, "event");
        let Some(sink) = &self.sink else { return };
        sink.send(Pending {
            object: self.object.clone(),
            type_,
            reason: reason.to_string(),
            message,
            at: Timestamp::now(),
            now: Instant::now(),
        });
    }
}

/// Who reports the events.
#[derive(Debug, Clone)]
struct Source {
    component: String,
    host: String,
}

/// What to write for one recorded event.
#[derive(Debug, Clone, PartialEq)]
enum Write {
    /// A new Event object.
    Create(EventFields),
    /// A repeat: a patch of the existing object's count, last timestamp and message (the whole
    /// event is created again should the object be gone: expired).
    Repeat(EventFields),
}

/// An Event object's fields.
#[derive(Debug, Clone, PartialEq)]
struct EventFields {
    name: String,
    namespace: String,
    object: Arc<ObjectReference>,
    type_: &'static str,
    reason: String,
    message: String,
    first: Timestamp,
    at: Timestamp,
    count: i32,
}

struct Seen {
    name: String,
    count: i32,
    first: Timestamp,
    last: Instant,
}

struct Similar {
    since: Instant,
    messages: std::collections::HashSet<String>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// client-go's `EventCorrelator` (aggregator, dedup logger and spam filter), for one source.
#[derive(Default)]
struct Correlator {
    seen: HashMap<String, Seen>,
    similar: HashMap<String, Similar>,
    spam: HashMap<String, Bucket>,
    last_name: u64,
}

fn object_key(o: &ObjectReference) -> String {
    format!(
        "{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
        o.api_version.as_deref().unwrap_or_default(),
        o.kind.as_deref().unwrap_or_default(),
        o.namespace.as_deref().unwrap_or_default(),
        o.name.as_deref().unwrap_or_default(),
        o.uid.as_deref().unwrap_or_default()
    )
}

impl Correlator {
    /// Decides what to write for an event (`None`: dropped by the spam filter).
    fn correlate(&mut self, e: Pending) -> Option<Write> {
        let object = object_key(&e.object);
        // Spam filter first: a token per event, whatever becomes of it.
        let bucket = self.spam.entry(object.clone()).or_insert(Bucket { tokens: SPAM_BURST, at: e.now });
        let refill = e.now.saturating_duration_since(bucket.at).as_secs_f64() / SPAM_REFILL.as_secs_f64();
        bucket.tokens = (bucket.tokens + refill).min(SPAM_BURST);
        bucket.at = e.now;
        if bucket.tokens < 1.0 {
            tracing::debug!(object = ?e.object.name, reason = %e.reason, "event dropped by the spam filter");
            return None;
        }
        bucket.tokens -= 1.0;

        // Aggregation: too many similar events in the window become one combined event.
        let similar_key = format!("{object}\u{0}{}\u{0}{}", e.type_, e.reason);
        let similar =
            self.similar.entry(similar_key.clone()).or_insert_with(|| Similar { since: e.now, messages: std::collections::HashSet::new() });
        if e.now.saturating_duration_since(similar.since) > SIMILAR_WINDOW {
            similar.since = e.now;
            similar.messages.clear();
        }
        similar.messages.insert(e.message.clone());
        let (seen_key, message) = if similar.messages.len() >= SIMILAR_LIMIT {
            (similar_key, format!("{COMBINED_PREFIX}{}", e.message))
        } else {
            (format!("{similar_key}\u{0}{}", e.message), e.message)
        };

        // Dedup: the same event again patches the first one.
        let namespace = e.object.namespace.clone().unwrap_or_else(|| "default".into());
        if let Some(seen) = self.seen.get_mut(&seen_key) {
            seen.count = seen.count.saturating_add(1);
            seen.last = e.now;
            return Some(Write::Repeat(EventFields {
                name: seen.name.clone(),
                namespace,
                object: e.object,
                type_: e.type_,
                reason: e.reason,
                message,
                first: seen.first,
                at: e.at,
                count: seen.count,
            }));
        }
        if self.seen.len() >= SEEN_LIMIT {
            self.forget(e.now);
        }
        let name = self.name_for(&e.object, e.at);
        self.seen.insert(seen_key, Seen { name: name.clone(), count: 1, first: e.at, last: e.now });
        Some(Write::Create(EventFields {
            name,
            namespace,
            object: e.object,
            type_: e.type_,
            reason: e.reason,
            message,
            first: e.at,
            at: e.at,
            count: 1,
        }))
    }

    /// client-go's name: the object's name and the time in nanoseconds, in hex (kept unique here).
    fn name_for(&mut self, object: &ObjectReference, at: Timestamp) -> String {
        let nanos = u64::try_from(at.as_nanosecond()).unwrap_or(0).max(self.last_name.saturating_add(1));
        self.last_name = nanos;
        format!("{}.{nanos:x}", object.name.as_deref().unwrap_or_default())
    }

    /// Makes room: drops what was seen longest ago (half the remembered events), and similar-event
    /// and spam records that no longer matter.
    fn forget(&mut self, now: Instant) {
        let mut ages: Vec<Instant> = self.seen.values().map(|s| s.last).collect();
        ages.sort_unstable();
        let cut = ages.get(ages.len() / 2).copied().unwrap_or(now);
        self.seen.retain(|_, s| s.last > cut);
        self.similar.retain(|_, s| now.saturating_duration_since(s.since) <= SIMILAR_WINDOW);
        // A bucket that has refilled completely is the same as no bucket.
        let full = SPAM_REFILL.mul_f64(SPAM_BURST);
        self.spam.retain(|_, b| now.saturating_duration_since(b.at) < full);
    }
}

fn event_object(source: &Source, e: &EventFields) -> DynamicObject {
    let EventFields { name, namespace, object, type_, reason, message, first, at, count } = e;
    let data = serde_json::json!({
        "involvedObject": object.as_ref(),
        "reason": reason,
        "message": message,
        "type": type_,
        "source": { "component": source.component, "host": source.host },
        "reportingComponent": source.component,
        "reportingInstance": source.host,
        "firstTimestamp": Time(*first),
        "lastTimestamp": Time(*at),
        "count": count,
    });
    DynamicObject {
        types: Some(TypeMeta { api_version: "v1".into(), kind: "Event".into() }),
        metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(namespace.clone()), ..ObjectMeta::default() },
        data,
    }
}

/// Writes one event; a repeat whose object is gone (expired) is created again.
async fn write(client: &dyn Client, source: &Source, w: Write) {
    static EVENTS: std::sync::LazyLock<ApiResource> =
        std::sync::LazyLock::new(<bosun_core::k8s_openapi::api::core::v1::Event as TypedObject>::api_resource);
    let resource = &*EVENTS;
    let create = async |e: &EventFields| {
        client.create(Target::new(resource, Some(&e.namespace)), &event_object(source, e), &PostParams::default()).await.map(drop)
    };
    let result = match &w {
        Write::Create(e) => create(e).await,
        Write::Repeat(e) => {
            let patch = Patch::Merge(serde_json::json!({ "count": e.count, "lastTimestamp": Time(e.at), "message": e.message }));
            match client.patch(Target::new(resource, Some(&e.namespace)), &e.name, &patch, &PatchParams::default()).await {
                Err(err) if err.is_not_found() => create(e).await,
                other => other.map(drop),
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "cannot record event");
    }
}

async fn write_loop(client: Arc<dyn Client>, source: Source, mut rx: mpsc::Receiver<Pending>) {
    let mut correlator = Correlator::default();
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            // Finished writes make room for queued ones.
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            pending = rx.recv(), if in_flight.len() < IN_FLIGHT => {
                let Some(pending) = pending else { break };
                if let Some(w) = correlator.correlate(pending) {
                    let (client, source) = (client.clone(), source.clone());
                    in_flight.push(async move { write(client.as_ref(), &source, w).await });
                }
            }
        }
    }
    while in_flight.next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_core::Api;
    use bosun_core::k8s_openapi::api::core::v1::Event;

    fn pod(name: &str) -> Arc<ObjectReference> {
        Arc::new(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            ..ObjectReference::default()
        })
    }

    fn event(object: &Arc<ObjectReference>, reason: &str, message: &str, now: Instant) -> Pending {
        Pending { object: object.clone(), type_: "Normal", reason: reason.into(), message: message.into(), at: Timestamp::now(), now }
    }

    fn created(w: Option<Write>) -> (String, String, i32) {
        match w {
            Some(Write::Create(e)) => (e.name, e.message, e.count),
            other => panic!("expected a create, got {other:?}"),
        }
    }

    fn repeated(w: Option<Write>) -> (String, String, i32) {
        match w {
            Some(Write::Repeat(e)) => (e.name, e.message, e.count),
            other => panic!("expected a repeat, got {other:?}"),
        }
    }

    #[test]
    fn the_same_event_again_counts_on_the_first_object() {
        let mut c = Correlator::default();
        let (p, t) = (pod("a"), Instant::now());
        let (name, _, count) = created(c.correlate(event(&p, "Unhealthy", "probe failed", t)));
        assert_eq!(count, 1);
        assert!(name.starts_with("a."), "{name}");
        assert_eq!(repeated(c.correlate(event(&p, "Unhealthy", "probe failed", t))), (name.clone(), "probe failed".into(), 2));
        assert_eq!(repeated(c.correlate(event(&p, "Unhealthy", "probe failed", t))).2, 3);
        // Another message, reason or object is another event.
        assert_ne!(created(c.correlate(event(&p, "Unhealthy", "probe failed again", t))).0, name);
        assert_ne!(created(c.correlate(event(&p, "Killing", "probe failed", t))).0, name);
        assert_ne!(created(c.correlate(event(&pod("b"), "Unhealthy", "probe failed", t))).0, name);
    }

    #[test]
    fn many_similar_events_are_combined_into_one() {
        let mut c = Correlator::default();
        let (p, t) = (pod("a"), Instant::now());
        let mut names = std::collections::HashSet::new();
        for i in 0..SIMILAR_LIMIT - 1 {
            names.insert(created(c.correlate(event(&p, "Failed", &format!("error {i}"), t))).0);
        }
        assert_eq!(names.len(), SIMILAR_LIMIT - 1, "each distinct message is its own event below the limit");
        let (combined, message, count) = created(c.correlate(event(&p, "Failed", "error 9", t)));
        assert_eq!((message.as_str(), count), ("(combined from similar events): error 9", 1));
        assert!(!names.contains(&combined));
        let (name, message, count) = repeated(c.correlate(event(&p, "Failed", "error 10", t)));
        assert_eq!((name, message.as_str(), count), (combined, "(combined from similar events): error 10", 2));
        // Past the window, messages count afresh.
        let later = t + SIMILAR_WINDOW + Duration::from_secs(1);
        assert_eq!(created(c.correlate(event(&p, "Failed", "error 11", later))).1, "error 11");
    }

    #[test]
    fn the_spam_filter_allows_a_burst_per_object_then_one_per_five_minutes() {
        let mut c = Correlator::default();
        let (p, t) = (pod("a"), Instant::now());
        let written = (0..40).filter(|i| c.correlate(event(&p, &format!("Reason{i}"), "m", t)).is_some()).count();
        assert_eq!(written, 25);
        assert!(c.correlate(event(&pod("b"), "Reason", "m", t)).is_some(), "another object has its own burst");
        assert!(c.correlate(event(&p, "More", "m", t + Duration::from_secs(299))).is_none());
        assert!(c.correlate(event(&p, "More", "m", t + Duration::from_secs(301))).is_some(), "one token refilled");
        assert!(c.correlate(event(&p, "More2", "m", t + Duration::from_secs(302))).is_none());
    }

    #[test]
    fn remembered_events_stay_bounded() {
        let mut c = Correlator::default();
        let t = Instant::now();
        for i in 0..SEEN_LIMIT * 2 {
            let _ = c.correlate(event(&pod(&format!("p{i}")), "Started", "m", t + Duration::from_millis(i as u64)));
        }
        assert!(c.seen.len() <= SEEN_LIMIT, "{}", c.seen.len());
    }

    #[tokio::test]
    async fn a_sink_creates_events_and_counts_repeats_on_them() {
        let client: Arc<dyn Client> = bosun_store::ApiServer::in_memory();
        let sink = EventSink::spawn(client.clone(), "kubelet", "node-1");
        let recorder = Recorder::new(Some(sink), (*pod("web")).clone());
        recorder.normal("Pulled", "Container image \"x\" already present on machine");
        for _ in 0..3 {
            recorder.warning("BackOff", "Back-off restarting failed container app");
        }
        let api = Api::<Event>::namespaced(client, "default");
        let mut events = Vec::new();
        for _ in 0..100 {
            events = api.list(&Default::default()).await.expect("list").items;
            if events.iter().any(|e| e.count == Some(3)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        events.sort_by_key(|e| e.reason.clone());
        let seen: Vec<_> = events.iter().map(|e| (e.reason.as_deref(), e.type_.as_deref(), e.count)).collect();
        assert_eq!(seen, [(Some("BackOff"), Some("Warning"), Some(3)), (Some("Pulled"), Some("Normal"), Some(1))]);
        let backoff = &events[0];
        assert_eq!(backoff.involved_object.name.as_deref(), Some("web"));
        assert_eq!(backoff.source.as_ref().and_then(|s| s.host.as_deref()), Some("node-1"));
        assert!(backoff.first_timestamp.is_some() && backoff.last_timestamp >= backoff.first_timestamp);
    }
}
