//! `CycleState`: typed data plugins keep for one scheduling cycle.

use std::any::{Any, TypeId};

/// Data a plugin stores in a [`CycleState`]; any `Clone + Send + Sync` type qualifies.
/// Cloning matters: preemption dry runs work on a copy of the state.
pub trait StateData: Any + Send + Sync {
    /// A boxed copy.
    fn clone_data(&self) -> Box<dyn StateData>;
    /// As `Any`, to downcast.
    fn as_any(&self) -> &dyn Any;
    /// As mutable `Any`, to downcast.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Any + Clone + Send + Sync> StateData for T {
    fn clone_data(&self) -> Box<dyn StateData> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Per-cycle, per-pod plugin state keyed by type: a plugin stores its own struct and reads it back
/// in later extension points without string keys or downcasts at the call site.
#[derive(Default)]
pub struct CycleState {
    data: Vec<(TypeId, Box<dyn StateData>)>,
    /// Plugins whose Filter is skipped for this pod (their PreFilter answered `Skip`).
    pub skip_filter: Vec<&'static str>,
    /// Plugins whose Score is skipped for this pod (their PreScore answered `Skip`).
    pub skip_score: Vec<&'static str>,
    /// Plugins whose PreFilter narrowed the nodes.
    pub(crate) restricted_by: Vec<&'static str>,
    /// Bit i set: the profile's i-th Filter plugin is skipped (precomputed from `skip_filter`).
    pub(crate) filter_skip_mask: u64,
    /// The pods nominated to each node that this cycle's pod must leave room for (equal or higher
    /// priority), read once per cycle instead of locking the nominator for every node.
    pub(crate) nominated: Option<NominatedByNode>,
    /// Nodes a PreFilter already knows fail its Filter (by snapshot index: 0 passes, `k` fails
    /// with `statuses[k - 1]`), so the filter chain is not run on them at all.
    pub(crate) excluded: Option<(std::sync::Arc<Vec<u8>>, Vec<crate::framework::Status>)>,
}

/// Nominated pods by node name.
pub(crate) type NominatedByNode = std::sync::Arc<std::collections::HashMap<String, Vec<std::sync::Arc<crate::pod_info::PodInfo>>>>;

impl Clone for CycleState {
    fn clone(&self) -> Self {
        Self {
            data: self.data.iter().map(|(t, d)| (*t, (**d).clone_data())).collect(),
            skip_filter: self.skip_filter.clone(),
            skip_score: self.skip_score.clone(),
            restricted_by: self.restricted_by.clone(),
            filter_skip_mask: self.filter_skip_mask,
            nominated: self.nominated.clone(),
            excluded: self.excluded.clone(),
        }
    }
}

impl std::fmt::Debug for CycleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CycleState").field("entries", &self.data.len()).finish()
    }
}

impl CycleState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores a value, replacing one of the same type.
    pub fn insert<T: StateData>(&mut self, value: T) {
        let id = TypeId::of::<T>();
        match self.data.iter_mut().find(|(t, _)| *t == id) {
            Some((_, d)) => *d = Box::new(value),
            None => self.data.push((id, Box::new(value))),
        }
    }

    /// Reads a value.
    pub fn get<T: StateData>(&self) -> Option<&T> {
        let id = TypeId::of::<T>();
        self.data.iter().find(|(t, _)| *t == id).and_then(|(_, d)| (**d).as_any().downcast_ref())
    }

    /// Reads a value mutably.
    pub fn get_mut<T: StateData>(&mut self) -> Option<&mut T> {
        let id = TypeId::of::<T>();
        self.data.iter_mut().find(|(t, _)| *t == id).and_then(|(_, d)| (**d).as_any_mut().downcast_mut())
    }

    /// Removes a value.
    pub fn remove<T: StateData>(&mut self) -> Option<Box<dyn StateData>> {
        let id = TypeId::of::<T>();
        let i = self.data.iter().position(|(t, _)| *t == id)?;
        Some(self.data.swap_remove(i).1)
    }

    /// The status a PreFilter settled in advance for the node at this snapshot index.
    pub(crate) fn excluded(&self, index: usize) -> Option<&crate::framework::Status> {
        let (nodes, statuses) = self.excluded.as_ref()?;
        match nodes.get(index).copied() {
            None | Some(0) => None,
            Some(k) => statuses.get(usize::from(k) - 1),
        }
    }

    /// Whether the named plugin's Filter is skipped.
    pub fn skips_filter(&self, plugin: &str) -> bool {
        self.skip_filter.contains(&plugin)
    }

    /// Whether the named plugin's Score is skipped.
    pub fn skips_score(&self, plugin: &str) -> bool {
        self.skip_score.contains(&plugin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Counts(Vec<u32>);

    #[test]
    fn typed_entries_survive_a_clone_independently() {
        let mut s = CycleState::new();
        s.insert(Counts(vec![1]));
        s.insert(7u64);
        let mut copy = s.clone();
        if let Some(c) = copy.get_mut::<Counts>() {
            c.0.push(2);
        }
        assert_eq!(s.get::<Counts>(), Some(&Counts(vec![1])));
        assert_eq!(copy.get::<Counts>(), Some(&Counts(vec![1, 2])));
        assert_eq!(copy.get::<u64>(), Some(&7));
        assert!(s.get::<String>().is_none());
    }
}
