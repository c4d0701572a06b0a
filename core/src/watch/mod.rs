//! Watch machinery shared by every component: a watcher that lists then watches and recovers on its
//! own, an indexed in-memory cache it feeds, and shared informers (one reflector per kind).

mod backoff;
mod cache;
mod informer;
mod watcher;

pub use backoff::Backoff;
pub use cache::{Change, INDEX_LABEL, INDEX_NAMESPACE, INDEX_OWNER, IndexFn, Store};
pub use informer::{ChangeStream, Informer, Informers, ReflectorState};
pub use watcher::{Event, WatchError, WatcherConfig, watcher};
