//! The event recorder: publishes `events.k8s.io/v1` Events about objects, folding repeats of the
//! same event into one object with a `series` (count and last-observed time), as client-go does.

use crate::clock;
use bosun_core::{Api, Object, Patch, PatchParams, PostParams, TypedObject};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Repeats within this window join the existing series (client-go uses 6 minutes).
pub const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Routine: something happened as expected.
    Normal,
    /// Something may need attention.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

/// One event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventData {
    /// `Normal` or `Warning`.
    pub type_: EventType,
    /// Why, in UpperCamelCase (`ScalingReplicaSet`).
    pub reason: String,
    /// What was done or failed (`Scale`).
    pub action: String,
    /// A human-readable description.
    pub note: Option<String>,
}

impl EventData {
    /// A `Normal` event.
    pub fn normal(reason: impl Into<String>, action: impl Into<String>, note: impl Into<String>) -> Self {
        Self { type_: EventType::Normal, reason: reason.into(), action: action.into(), note: Some(note.into()) }
    }

    /// A `Warning` event.
    pub fn warning(reason: impl Into<String>, action: impl Into<String>, note: impl Into<String>) -> Self {
        Self { type_: EventType::Warning, reason: reason.into(), action: action.into(), note: Some(note.into()) }
    }
}

/// The reference to `obj` that events name as `regarding`.
pub fn object_reference<K: TypedObject>(obj: &K) -> ObjectReference {
    let r = K::api_resource();
    ObjectReference {
        api_version: Some(r.api_version()),
        kind: Some(r.kind.to_string()),
        name: obj.meta().name.clone(),
        namespace: obj.meta().namespace.clone(),
        uid: obj.meta().uid.clone(),
        resource_version: obj.meta().resource_version.clone(),
        field_path: None,
    }
}

type SeriesKey = (String, String, String, String, String, String);

struct Seen {
    name: String,
    namespace: String,
    count: i32,
    last: tokio::time::Instant,
}

/// Publishes events as one reporting controller instance; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    client: Arc<dyn bosun_core::Client>,
    controller: String,
    instance: String,
    seen: Arc<Mutex<HashMap<SeriesKey, Seen>>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").field("controller", &self.controller).field("instance", &self.instance).finish()
    }
}

impl Recorder {
    /// A recorder reporting as `controller` (e.g. `deployment-controller`) from `instance` (e.g. a pod name).
    pub fn new(client: Arc<dyn bosun_core::Client>, controller: impl Into<String>, instance: impl Into<String>) -> Self {
        Self { client, controller: controller.into(), instance: instance.into(), seen: Arc::default() }
    }

    /// Publishes an event about `regarding`. A repeat of the same (object, type, reason, action,
    /// note) within [`SERIES_WINDOW`] updates the first event's series instead of creating another.
    pub async fn publish(&self, regarding: &ObjectReference, data: &EventData) -> bosun_core::Result<()> {
        let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".to_owned());
        let key: SeriesKey = (
            regarding.uid.clone().unwrap_or_default(),
            regarding.name.clone().unwrap_or_default(),
            data.type_.as_str().to_owned(),
            data.reason.clone(),
            data.action.clone(),
            data.note.clone().unwrap_or_default(),
        );
        let now = tokio::time::Instant::now();
        let repeat = {
            let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            seen.retain(|_, s| now.saturating_duration_since(s.last) < SERIES_WINDOW);
            seen.get_mut(&key).map(|s| {
                s.count += 1;
                s.last = now;
                (s.name.clone(), s.namespace.clone(), s.count)
            })
        };
        let api = Api::<Event>::namespaced(self.client.clone(), &namespace);
        if let Some((name, ns, count)) = repeat {
            let series = EventSeries { count, last_observed_time: clock::now_micro() };
            let patch = serde_json::json!({ "series": series });
            match api.in_namespace(&ns).patch(&name, &Patch::Merge(patch), &PatchParams::default()).await {
                Ok(_) => return Ok(()),
                // The event expired or was deleted: start a new one.
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        let base = regarding.name.clone().unwrap_or_else(|| "event".to_owned());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{base}.{:x}", fastrand::u64(..))),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(clock::now_micro()),
            regarding: Some(regarding.clone()),
            reason: Some(data.reason.clone()),
            action: Some(data.action.clone()),
            note: data.note.clone(),
            type_: Some(data.type_.as_str().to_owned()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        let created = api.create(&event, &PostParams::default()).await?;
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.insert(key, Seen { name: created.name().to_owned(), namespace, count: 1, last: now });
        Ok(())
    }
}
