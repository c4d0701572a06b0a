//! API writes whose answers the scheduler does not read. They go through the raw [`Client`], so
//! that the answer is not converted into a typed object (a full serialize/deserialize round trip
//! per call, as [`bosun_core::Api`] does): three to five such writes per preemption.

use bosun_core::k8s_openapi::api::core::v1::{Event, Pod};
use bosun_core::{ApiResource, Client, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Result, Target, TypedObject};
use std::sync::LazyLock;

static PODS: LazyLock<ApiResource> = LazyLock::new(Pod::api_resource);
static EVENTS: LazyLock<ApiResource> = LazyLock::new(Event::api_resource);

/// Deletes a pod.
pub(crate) async fn delete_pod(client: &dyn Client, namespace: &str, name: &str, params: &DeleteParams) -> Result<()> {
    client.delete(Target::new(&PODS, Some(namespace)), name, params).await.map(drop)
}

/// Patches a pod's status.
pub(crate) async fn patch_pod_status(client: &dyn Client, namespace: &str, name: &str, patch: &Patch) -> Result<()> {
    client.patch_subresource(Target::new(&PODS, Some(namespace)), name, "status", patch, &PatchParams::default()).await.map(drop)
}

/// Records an event.
pub(crate) async fn create_event(client: &dyn Client, namespace: &str, event: &Event) -> Result<()> {
    let obj = DynamicObject::from_typed(event)?;
    client.create(Target::new(&EVENTS, Some(namespace)), &obj, &PostParams::default()).await.map(drop)
}
