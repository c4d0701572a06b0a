//! DefaultBinder (Bind): posts `pods/binding` through the client.

use crate::framework::{BindPlugin, CycleState, Handle, Plugin, Status};
use crate::pod_info::PodInfo;
use async_trait::async_trait;
use std::sync::Arc;

/// Binds through the API.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultBinder;

impl Plugin for DefaultBinder {
    fn name(&self) -> &'static str {
        "DefaultBinder"
    }
    fn as_bind(self: Arc<Self>) -> Option<Arc<dyn BindPlugin>> {
        Some(self)
    }
}

#[async_trait]
impl BindPlugin for DefaultBinder {
    async fn bind(&self, _: &CycleState, pod: &Arc<PodInfo>, node: &str, handle: &Handle) -> Status {
        let Some(client) = handle.client() else { return Status::error("no API client to bind with") };
        match bosun_core::api::bind_pod(&**client, Some(&pod.namespace), &pod.name, node).await {
            Ok(()) => Status::success(),
            Err(e) => Status::error(e.to_string()),
        }
    }
}
