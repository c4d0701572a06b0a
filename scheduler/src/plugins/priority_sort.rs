//! PrioritySort (QueueSort): higher `spec.priority` first, then first in, first out.

use crate::framework::{Plugin, QueueSortPlugin};
use crate::queue::QueuedPodInfo;
use std::sync::Arc;

/// Orders the active queue by priority, then by the time the pod was queued.
#[derive(Debug, Clone, Copy, Default)]
pub struct PrioritySort;

impl Plugin for PrioritySort {
    fn name(&self) -> &'static str {
        "PrioritySort"
    }
    fn as_queue_sort(self: Arc<Self>) -> Option<Arc<dyn QueueSortPlugin>> {
        Some(self)
    }
}

impl QueueSortPlugin for PrioritySort {
    fn less(&self, a: &QueuedPodInfo, b: &QueuedPodInfo) -> bool {
        let (pa, pb) = (a.pod.priority, b.pod.priority);
        pa > pb || (pa == pb && a.timestamp < b.timestamp)
    }
}
