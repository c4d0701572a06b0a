//! The indexed in-memory cache a reflector keeps: objects by key, plus secondary indexes.

use super::watcher::Event;
use crate::meta::ObjectKey;
use crate::object::Object;
use crate::selector::LabelSelector;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A function from an object to the index values it is filed under.
pub type IndexFn<K> = Arc<dyn Fn(&K) -> Vec<String> + Send + Sync>;

/// Built-in index: the object's namespace.
pub const INDEX_NAMESPACE: &str = "namespace";
/// Built-in index: one `key=value` entry per label.
pub const INDEX_LABEL: &str = "label";
/// Built-in index: the UID of each owner reference.
pub const INDEX_OWNER: &str = "owner";

/// A change the cache applied, as subscribers receive it.
#[derive(Debug, Clone)]
pub enum Change<K> {
    /// An object was added or changed (also for objects of a relist).
    Applied(Arc<K>),
    /// An object was deleted (also for objects a relist no longer has).
    Deleted(Arc<K>),
    /// The subscriber missed changes (it fell behind); it should re-read the whole store.
    Resync,
}

struct Index<K> {
    func: IndexFn<K>,
    entries: HashMap<String, HashSet<ObjectKey>>,
}

struct Inner<K> {
    objects: HashMap<ObjectKey, Arc<K>>,
    indexes: HashMap<String, Index<K>>,
    /// Objects of a relist in progress; swapped in at `InitDone`.
    buffer: Option<HashMap<ObjectKey, Arc<K>>>,
    ready: bool,
}

/// A read handle on the cache; cheap to clone, shared by every consumer.
pub struct Store<K> {
    inner: Arc<RwLock<Inner<K>>>,
}

impl<K> Clone for Store<K> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

impl<K: Object> Default for Store<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Object> Store<K> {
    /// An empty cache with the built-in namespace, label and owner indexes.
    pub fn new() -> Self {
        let store =
            Self { inner: Arc::new(RwLock::new(Inner { objects: HashMap::new(), indexes: HashMap::new(), buffer: None, ready: false })) };
        store.add_index(INDEX_NAMESPACE, Arc::new(|k: &K| k.namespace().map(|n| vec![n.to_owned()]).unwrap_or_default()));
        store.add_index(INDEX_LABEL, Arc::new(|k: &K| k.meta().labels.iter().flatten().map(|(k, v)| format!("{k}={v}")).collect()));
        store.add_index(INDEX_OWNER, Arc::new(|k: &K| k.meta().owner_references.iter().flatten().map(|r| r.uid.clone()).collect()));
        store
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner<K>> {
        self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner<K>> {
        self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds (or replaces) an index; existing objects are indexed at once.
    pub fn add_index(&self, name: &str, func: IndexFn<K>) {
        let mut inner = self.write();
        let mut index = Index { func, entries: HashMap::new() };
        for (key, obj) in &inner.objects {
            for value in (index.func)(obj) {
                index.entries.entry(value).or_default().insert(key.clone());
            }
        }
        inner.indexes.insert(name.to_owned(), index);
    }

    /// One object by key.
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<K>> {
        self.read().objects.get(key).cloned()
    }

    /// Every object.
    pub fn list(&self) -> Vec<Arc<K>> {
        self.read().objects.values().cloned().collect()
    }

    /// Every key.
    pub fn keys(&self) -> Vec<ObjectKey> {
        self.read().objects.keys().cloned().collect()
    }

    /// The number of objects.
    pub fn len(&self) -> usize {
        self.read().objects.len()
    }

    /// True when the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the first list has completed.
    pub fn is_ready(&self) -> bool {
        self.read().ready
    }

    /// The objects filed under `value` in index `index` (empty for an unknown index).
    pub fn by_index(&self, index: &str, value: &str) -> Vec<Arc<K>> {
        let inner = self.read();
        let Some(keys) = inner.indexes.get(index).and_then(|i| i.entries.get(value)) else { return Vec::new() };
        keys.iter().filter_map(|k| inner.objects.get(k).cloned()).collect()
    }

    /// The objects in a namespace (or all) that match a label selector; equality terms use the label index.
    pub fn select(&self, namespace: Option<&str>, selector: &LabelSelector) -> Vec<Arc<K>> {
        let inner = self.read();
        let in_ns = |o: &&Arc<K>| namespace.is_none_or(|ns| o.namespace() == Some(ns));
        let matches = |o: &&Arc<K>| in_ns(o) && selector.matches_opt(o.meta().labels.as_ref());
        let narrowest = selector
            .requirements()
            .iter()
            .filter_map(|r| r.equals().map(|v| format!("{}={v}", r.key)))
            .filter_map(|term| inner.indexes.get(INDEX_LABEL).map(|i| i.entries.get(&term).map_or(0, HashSet::len)).map(|n| (n, term)))
            .min();
        match narrowest {
            Some((_, term)) => {
                let keys = inner.indexes.get(INDEX_LABEL).and_then(|i| i.entries.get(&term));
                keys.into_iter().flatten().filter_map(|k| inner.objects.get(k)).filter(matches).cloned().collect()
            }
            None => match namespace.and_then(|ns| inner.indexes.get(INDEX_NAMESPACE).map(|i| i.entries.get(ns))) {
                Some(keys) => keys.into_iter().flatten().filter_map(|k| inner.objects.get(k)).filter(matches).cloned().collect(),
                None => inner.objects.values().filter(matches).cloned().collect(),
            },
        }
    }

    /// Applies a watcher event; returns the changes subscribers should hear about.
    pub fn apply(&self, event: Event<K>) -> Vec<Change<K>> {
        let mut inner = self.write();
        match event {
            Event::Init => {
                inner.buffer = Some(HashMap::new());
                Vec::new()
            }
            Event::InitApply(obj) => {
                // An object the relist finds unchanged keeps the cached copy, so that a relist
                // holds two copies only of what changed (the new one is dropped here).
                let key = ObjectKey::of(&obj);
                let obj = match inner.objects.get(&key) {
                    Some(old) if !obj.resource_version().is_empty() && old.resource_version() == obj.resource_version() => old.clone(),
                    _ => Arc::new(obj),
                };
                inner.buffer.get_or_insert_with(HashMap::new).insert(key, obj);
                Vec::new()
            }
            Event::InitDone => {
                let fresh = inner.buffer.take().unwrap_or_default();
                let mut changes = Vec::new();
                let gone: Vec<ObjectKey> = inner.objects.keys().filter(|k| !fresh.contains_key(*k)).cloned().collect();
                for key in gone {
                    if let Some(old) = inner.remove(&key) {
                        changes.push(Change::Deleted(old));
                    }
                }
                for (key, obj) in fresh {
                    let unchanged = inner
                        .objects
                        .get(&key)
                        .is_some_and(|old| old.resource_version() == obj.resource_version() && !obj.resource_version().is_empty());
                    if !unchanged {
                        inner.insert(key, obj.clone());
                        changes.push(Change::Applied(obj));
                    }
                }
                inner.ready = true;
                changes
            }
            Event::Apply(obj) => {
                let obj = Arc::new(obj);
                inner.insert(ObjectKey::of(&*obj), obj.clone());
                vec![Change::Applied(obj)]
            }
            Event::Delete(obj) => {
                let key = ObjectKey::of(&obj);
                let last = inner.remove(&key).map(|_| Arc::new(obj));
                last.map(Change::Deleted).into_iter().collect()
            }
        }
    }
}

impl<K: Object> Inner<K> {
    fn unindex(&mut self, key: &ObjectKey, obj: &K) {
        for index in self.indexes.values_mut() {
            for value in (index.func)(obj) {
                if let Some(set) = index.entries.get_mut(&value) {
                    set.remove(key);
                    if set.is_empty() {
                        index.entries.remove(&value);
                    }
                }
            }
        }
    }

    fn insert(&mut self, key: ObjectKey, obj: Arc<K>) {
        if let Some(old) = self.objects.get(&key).cloned() {
            self.unindex(&key, &old);
        }
        for index in self.indexes.values_mut() {
            for value in (index.func)(&obj) {
                index.entries.entry(value).or_default().insert(key.clone());
            }
        }
        self.objects.insert(key, obj);
    }

    fn remove(&mut self, key: &ObjectKey) -> Option<Arc<K>> {
        let old = self.objects.remove(key)?;
        self.unindex(key, &old);
        Some(old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn pod(ns: &str, name: &str, rv: &str, labels: &[(&str, &str)], owner: Option<&str>) -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = Some(ns.into());
        p.metadata.name = Some(name.into());
        p.metadata.resource_version = Some(rv.into());
        p.metadata.labels = Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        p.metadata.owner_references = owner.map(|uid| {
            vec![OwnerReference {
                uid: uid.into(),
                name: "rs".into(),
                kind: "ReplicaSet".into(),
                api_version: "apps/v1".into(),
                ..Default::default()
            }]
        });
        p
    }

    fn names(v: Vec<Arc<Pod>>) -> Vec<String> {
        let mut n: Vec<String> = v.iter().map(|p| p.name().to_owned()).collect();
        n.sort();
        n
    }

    #[test]
    fn built_in_indexes_follow_updates_and_deletes() {
        let store = Store::<Pod>::new();
        store.apply(Event::Apply(pod("a", "p1", "1", &[("app", "web")], Some("rs-1"))));
        store.apply(Event::Apply(pod("a", "p2", "2", &[("app", "db")], Some("rs-1"))));
        store.apply(Event::Apply(pod("b", "p3", "3", &[("app", "web")], None)));
        assert_eq!(names(store.by_index(INDEX_NAMESPACE, "a")), ["p1", "p2"]);
        assert_eq!(names(store.by_index(INDEX_LABEL, "app=web")), ["p1", "p3"]);
        assert_eq!(names(store.by_index(INDEX_OWNER, "rs-1")), ["p1", "p2"]);
        // p1 changes its label and loses its owner: both indexes follow.
        store.apply(Event::Apply(pod("a", "p1", "4", &[("app", "db")], None)));
        assert_eq!(names(store.by_index(INDEX_LABEL, "app=web")), ["p3"]);
        assert_eq!(names(store.by_index(INDEX_OWNER, "rs-1")), ["p2"]);
        store.apply(Event::Delete(pod("a", "p2", "5", &[], None)));
        assert_eq!(names(store.by_index(INDEX_OWNER, "rs-1")), Vec::<String>::new());
        assert_eq!(names(store.by_index(INDEX_LABEL, "app=db")), ["p1"]);
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn user_defined_indexes_cover_existing_objects() {
        let store = Store::<Pod>::new();
        store.apply(Event::Apply(pod("a", "p1", "1", &[], None)));
        store.add_index("name-length", Arc::new(|p: &Pod| vec![p.name().len().to_string()]));
        store.apply(Event::Apply(pod("a", "pod-2", "2", &[], None)));
        assert_eq!(names(store.by_index("name-length", "2")), ["p1"]);
        assert_eq!(names(store.by_index("name-length", "5")), ["pod-2"]);
        assert!(store.by_index("nope", "x").is_empty());
    }

    #[test]
    fn select_uses_labels_and_namespaces() {
        let store = Store::<Pod>::new();
        store.apply(Event::Apply(pod("a", "p1", "1", &[("app", "web"), ("tier", "f")], None)));
        store.apply(Event::Apply(pod("b", "p2", "2", &[("app", "web")], None)));
        store.apply(Event::Apply(pod("a", "p3", "3", &[("app", "db")], None)));
        let sel = |s: &str| LabelSelector::parse(s).unwrap_or_default();
        assert_eq!(names(store.select(None, &sel("app=web"))), ["p1", "p2"]);
        assert_eq!(names(store.select(Some("a"), &sel("app=web"))), ["p1"]);
        assert_eq!(names(store.select(Some("a"), &sel(""))), ["p1", "p3"]);
        assert_eq!(names(store.select(None, &sel("app!=web"))), ["p3"]);
        assert_eq!(names(store.select(None, &sel("app=web,tier"))), ["p1"]);
    }

    #[test]
    fn a_relist_swaps_atomically_and_reports_what_vanished() {
        let store = Store::<Pod>::new();
        store.apply(Event::Apply(pod("a", "keep", "1", &[], None)));
        store.apply(Event::Apply(pod("a", "gone", "2", &[], None)));
        assert!(!store.is_ready());
        store.apply(Event::Init);
        store.apply(Event::InitApply(pod("a", "keep", "1", &[], None)));
        store.apply(Event::InitApply(pod("a", "new", "3", &[], None)));
        // Until InitDone, readers see the old state.
        assert_eq!(names(store.list()), ["gone", "keep"]);
        let changes = store.apply(Event::InitDone);
        assert!(store.is_ready());
        assert_eq!(names(store.list()), ["keep", "new"]);
        let mut summary: Vec<String> = changes
            .iter()
            .map(|c| match c {
                Change::Applied(p) => format!("+{}", p.name()),
                Change::Deleted(p) => format!("-{}", p.name()),
                Change::Resync => "resync".into(),
            })
            .collect();
        summary.sort();
        assert_eq!(summary, ["+new", "-gone"]);
    }
}
