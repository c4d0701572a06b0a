//! Cluster events and queueing hints: which changes can make a rejected pod schedulable.

use crate::node_info::NodeStatic;
use crate::pod_info::PodInfo;
use std::sync::Arc;

/// The kind of object an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventResource {
    /// The pending pod itself (its own update).
    UnscheduledPod,
    /// A pod bound to a node.
    AssignedPod,
    /// A node.
    Node,
    /// A namespace.
    Namespace,
    /// A PersistentVolumeClaim.
    PersistentVolumeClaim,
    /// A PersistentVolume.
    PersistentVolume,
    /// A PodDisruptionBudget.
    PodDisruptionBudget,
    /// Any resource.
    WildCard,
}

/// What happened, as bit flags so that a registration can cover several.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ActionType(pub u32);

impl ActionType {
    /// Created.
    pub const ADD: Self = Self(1);
    /// Deleted.
    pub const DELETE: Self = Self(1 << 1);
    /// Node allocatable changed.
    pub const UPDATE_NODE_ALLOCATABLE: Self = Self(1 << 2);
    /// Node labels changed.
    pub const UPDATE_NODE_LABEL: Self = Self(1 << 3);
    /// Node taints (or `unschedulable`) changed.
    pub const UPDATE_NODE_TAINT: Self = Self(1 << 4);
    /// Node conditions changed.
    pub const UPDATE_NODE_CONDITION: Self = Self(1 << 5);
    /// Node images or annotations changed.
    pub const UPDATE_NODE_OTHER: Self = Self(1 << 6);
    /// Pod labels changed.
    pub const UPDATE_POD_LABEL: Self = Self(1 << 7);
    /// A pod's requests went down.
    pub const UPDATE_POD_SCALE_DOWN: Self = Self(1 << 8);
    /// Pod tolerations changed.
    pub const UPDATE_POD_TOLERATIONS: Self = Self(1 << 9);
    /// A pod's scheduling gates were all removed.
    pub const UPDATE_POD_GATES_ELIMINATED: Self = Self(1 << 10);
    /// Any other update.
    pub const UPDATE_OTHER: Self = Self(1 << 11);
    /// Every kind of update.
    pub const UPDATE: Self = Self(((1 << 12) - 1) & !3);
    /// Everything.
    pub const ALL: Self = Self(u32::MAX);

    /// Both sets of flags.
    #[must_use]
    pub const fn or(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Whether any flag is shared.
    pub const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }
}

/// A cluster event: a resource and what happened to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClusterEvent {
    /// The resource.
    pub resource: EventResource,
    /// What happened.
    pub action: ActionType,
}

impl ClusterEvent {
    /// An event.
    pub const fn new(resource: EventResource, action: ActionType) -> Self {
        Self { resource, action }
    }

    /// Whether a registration covers this event.
    pub fn matches(&self, registered: &ClusterEvent) -> bool {
        (registered.resource == EventResource::WildCard || registered.resource == self.resource)
            && registered.action.intersects(self.action)
    }

    /// A short label (`NodeAdd`, `AssignedPodDelete`...).
    pub fn label(&self) -> String {
        format!("{:?}{:?}", self.resource, self.action)
    }
}

/// An object an event carries.
#[derive(Debug, Clone)]
pub enum EventObject {
    /// A pod.
    Pod(Arc<PodInfo>),
    /// A node.
    Node(Arc<NodeStatic>),
    /// Another kind (no detail).
    Other,
}

impl EventObject {
    /// The pod, if it is one.
    pub fn pod(&self) -> Option<&Arc<PodInfo>> {
        match self {
            Self::Pod(p) => Some(p),
            _ => None,
        }
    }

    /// The node, if it is one.
    pub fn node(&self) -> Option<&Arc<NodeStatic>> {
        match self {
            Self::Node(n) => Some(n),
            _ => None,
        }
    }
}

/// What a queueing hint decides for a pending pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueingHint {
    /// The event may make the pod schedulable: retry it.
    Queue,
    /// The event does not help the pod: leave it.
    QueueSkip,
}

/// A hint function: given the pending pod and the event's old and new objects, retry or not.
pub type QueueingHintFn = Arc<dyn Fn(&PodInfo, Option<&EventObject>, Option<&EventObject>) -> QueueingHint + Send + Sync>;

/// An event a plugin registers, with an optional hint (none: always retry).
#[derive(Clone)]
pub struct ClusterEventWithHint {
    /// The event.
    pub event: ClusterEvent,
    /// The hint; `None` always retries.
    pub hint: Option<QueueingHintFn>,
}

impl std::fmt::Debug for ClusterEventWithHint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterEventWithHint").field("event", &self.event).field("hint", &self.hint.is_some()).finish()
    }
}

impl ClusterEventWithHint {
    /// An event without a hint.
    pub fn always(resource: EventResource, action: ActionType) -> Self {
        Self { event: ClusterEvent::new(resource, action), hint: None }
    }

    /// An event with a hint.
    pub fn with_hint(
        resource: EventResource,
        action: ActionType,
        hint: impl Fn(&PodInfo, Option<&EventObject>, Option<&EventObject>) -> QueueingHint + Send + Sync + 'static,
    ) -> Self {
        Self { event: ClusterEvent::new(resource, action), hint: Some(Arc::new(hint)) }
    }
}
