//! Watch fan-out for the in-process backends: one broadcast ring of committed batches that every
//! watcher reads and filters itself, so writers never wait on watchers.
//!
//! A watcher first replays the history it asked for, then reads the ring. A watcher that falls a
//! whole ring behind gets [`StorageError::WatchLagged`] instead of silently missing events.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use tokio::sync::{Notify, broadcast};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::mvcc::Batch;
use super::{Result, Revision, StorageError, WatchEvent, WatchOptions, WatchStream};

/// What the hub publishes.
#[derive(Debug)]
pub(crate) enum Published {
    /// A committed batch.
    Batch(Arc<Batch>),
    /// The store was restored: every watch ends with `Compacted` at this revision.
    Reset(Revision),
}

/// The fan-out point: publishes batches in revision order and tracks the newest visible revision.
#[derive(Debug)]
pub(crate) struct Hub {
    tx: broadcast::Sender<Arc<Published>>,
    visible: AtomicI64,
    publish: Mutex<()>,
}

impl Hub {
    /// A hub whose ring holds `capacity` batches.
    pub fn new(capacity: usize, visible: Revision) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(16));
        Self { tx, visible: AtomicI64::new(visible), publish: Mutex::new(()) }
    }

    /// The newest revision readers may see; every batch up to it has been published.
    pub fn visible(&self) -> Revision {
        self.visible.load(Ordering::Acquire)
    }

    /// Serializes publishing against watch registration.
    pub fn lock(&self) -> MutexGuard<'_, ()> {
        self.publish.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes batches (in order) and then makes `visible` readable. The caller holds [`Hub::lock`].
    pub fn publish(&self, _guard: &MutexGuard<'_, ()>, batches: impl IntoIterator<Item = Arc<Batch>>, visible: Revision) {
        for b in batches {
            // No receiver is not an error: nobody watches.
            let _ = self.tx.send(Arc::new(Published::Batch(b)));
        }
        self.visible.store(visible, Ordering::Release);
    }

    /// Ends every watch with `Compacted` and jumps to `revision`. The caller holds [`Hub::lock`].
    pub fn reset(&self, _guard: &MutexGuard<'_, ()>, revision: Revision) {
        let _ = self.tx.send(Arc::new(Published::Reset(revision)));
        self.visible.store(revision, Ordering::Release);
    }

    /// Registers a watcher. The caller holds [`Hub::lock`] and passes the history after
    /// `after` up to [`Hub::visible`], read under the same lock.
    pub fn subscribe(
        self: &Arc<Self>,
        _guard: &MutexGuard<'_, ()>,
        prefix: &str,
        after: Revision,
        history: Vec<Arc<Batch>>,
        options: &WatchOptions,
    ) -> WatchStream {
        let notify = Arc::new(Notify::new());
        let interval = options.progress_interval.map(|p| {
            let mut i = tokio::time::interval_at(Instant::now() + p, p);
            i.set_missed_tick_behavior(MissedTickBehavior::Delay);
            i
        });
        let state = Watcher {
            history: history.into(),
            pending: VecDeque::new(),
            rx: self.tx.subscribe(),
            prefix: prefix.to_owned(),
            exact: options.exact,
            after,
            seen: after.max(self.visible()),
            progress_due: None,
            notify: notify.clone(),
            interval,
            hub: self.clone(),
            done: false,
        };
        let stream = futures::stream::unfold(state, |mut s| async move { s.next().await.map(|item| (item, s)) });
        WatchStream::new(stream.boxed(), Some(Arc::new(move || notify.notify_one())))
    }
}

struct Watcher {
    history: VecDeque<Arc<Batch>>,
    pending: VecDeque<WatchEvent>,
    rx: broadcast::Receiver<Arc<Published>>,
    prefix: String,
    exact: bool,
    /// Events at or before this revision were asked not to be sent.
    after: Revision,
    /// Every batch up to this revision has been read from history or the ring.
    seen: Revision,
    progress_due: Option<Revision>,
    notify: Arc<Notify>,
    interval: Option<Interval>,
    hub: Arc<Hub>,
    done: bool,
}

impl Watcher {
    fn take(&mut self, batch: &Batch) {
        if batch.revision <= self.after {
            return;
        }
        for e in &batch.events {
            let matches = e.key().is_some_and(|k| if self.exact { k == self.prefix } else { k.starts_with(&self.prefix) });
            if matches {
                self.pending.push_back(e.clone());
            }
        }
    }

    fn receive(&mut self, published: &Published) -> Option<Result<WatchEvent>> {
        match published {
            Published::Batch(b) => {
                if b.revision > self.seen {
                    self.seen = b.revision;
                    self.take(b);
                }
                None
            }
            Published::Reset(revision) => {
                self.done = true;
                Some(Err(StorageError::Compacted { requested: self.seen, compacted: *revision }))
            }
        }
    }

    fn lagged(&mut self) -> Result<WatchEvent> {
        self.done = true;
        // Only called with nothing pending: every batch up to `seen` has been delivered.
        Err(StorageError::WatchLagged { last_revision: self.seen })
    }

    async fn next(&mut self) -> Option<Result<WatchEvent>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(e) = self.pending.pop_front() {
                return Some(Ok(e));
            }
            if let Some(b) = self.history.pop_front() {
                self.take(&b);
                continue;
            }
            if let Some(due) = self.progress_due {
                match self.rx.try_recv() {
                    Ok(p) => {
                        if let Some(err) = self.receive(&p) {
                            return Some(err);
                        }
                        continue;
                    }
                    Err(broadcast::error::TryRecvError::Empty) => {
                        self.progress_due = None;
                        return Some(Ok(WatchEvent::Progress { revision: due.max(self.seen) }));
                    }
                    Err(broadcast::error::TryRecvError::Lagged(_)) => return Some(self.lagged()),
                    Err(broadcast::error::TryRecvError::Closed) => {
                        self.done = true;
                        return Some(Err(StorageError::Closed("the storage was dropped".into())));
                    }
                }
            }
            enum Wake {
                Published(std::result::Result<Arc<Published>, broadcast::error::RecvError>),
                Progress,
            }
            let interval = &mut self.interval;
            let tick = async move {
                match interval.as_mut() {
                    Some(i) => {
                        i.tick().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let wake = tokio::select! {
                biased;
                r = self.rx.recv() => Wake::Published(r),
                () = self.notify.notified() => Wake::Progress,
                () = tick => Wake::Progress,
            };
            match wake {
                Wake::Published(Ok(p)) => {
                    if let Some(err) = self.receive(&p) {
                        return Some(err);
                    }
                }
                Wake::Published(Err(broadcast::error::RecvError::Lagged(_))) => return Some(self.lagged()),
                Wake::Published(Err(broadcast::error::RecvError::Closed)) => {
                    self.done = true;
                    return Some(Err(StorageError::Closed("the storage was dropped".into())));
                }
                Wake::Progress => self.progress_due = Some(self.hub.visible()),
            }
        }
    }
}
