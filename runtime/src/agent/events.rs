//! Kubernetes `Event`s about a pod (Pulled, Created, Started, Killing, BackOff, Unhealthy,
//! FailedMount, ...), written in the background so that a slow API never stalls a pod worker.

use bosun_core::k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use bosun_core::{Api, Client, PostParams};
use std::sync::Arc;

/// Records events about one object. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    client: Option<Arc<dyn Client>>,
    object: ObjectReference,
    node: String,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").field("object", &self.object.name).finish_non_exhaustive()
    }
}

impl Recorder {
    /// A recorder for an object; `client: None` records nothing (for scale runs).
    pub fn new(client: Option<Arc<dyn Client>>, object: ObjectReference, node: &str) -> Self {
        Self { client, object, node: node.to_string() }
    }

    /// A `Normal` event.
    pub fn normal(&self, reason: &str, message: impl Into<String>) {
        self.record("Normal", reason, message.into());
    }

    /// A `Warning` event.
    pub fn warning(&self, reason: &str, message: impl Into<String>) {
        self.record("Warning", reason, message.into());
    }

    fn record(&self, type_: &str, reason: &str, message: String) {
        tracing::debug!(object = ?self.object.name, reason, %message, "event");
        let Some(client) = self.client.clone() else { return };
        let ns = self.object.namespace.clone().unwrap_or_else(|| "default".into());
        let now = jiff::Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{:016x}", self.object.name.clone().unwrap_or_default(), fastrand::u64(..))),
                namespace: Some(ns.clone()),
                ..ObjectMeta::default()
            },
            involved_object: self.object.clone(),
            reason: Some(reason.to_string()),
            message: Some(message),
            type_: Some(type_.to_string()),
            source: Some(EventSource { component: Some("kubelet".into()), host: Some(self.node.clone()) }),
            reporting_component: Some("kubelet".into()),
            reporting_instance: Some(self.node.clone()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            action: Some(reason.to_string()),
            count: Some(1),
            ..Event::default()
        };
        tokio::spawn(async move {
            if let Err(error) = Api::<Event>::namespaced(client, &ns).create(&event, &PostParams::default()).await {
                tracing::debug!(%error, "cannot record event");
            }
        });
    }
}
