//! Watch fan-out for the in-process backends: one ring of committed batches that every watcher
//! reads and filters itself, so writers never wait on watchers.
//!
//! A watcher first replays the history it asked for, then reads the ring. Delivery is cheap per
//! watcher: a publish appends the batch (shared, never copied per watcher) to the ring once and
//! wakes only the watchers that are parked waiting for it; a woken watcher takes every batch
//! published since it last looked in one pass under a read lock, and registering to wait is a
//! couple of atomic operations (no lock, no allocation). A watcher that falls a whole ring
//! behind gets [`StorageError::WatchLagged`] instead of silently missing events.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::task::{Context, Poll};

use futures::Stream;
use futures::task::AtomicWaker;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::mvcc::Batch;
use super::{Result, Revision, StorageError, WatchEvent, WatchOptions, WatchStream};

/// What the hub publishes.
#[derive(Debug)]
enum Published {
    /// A committed batch.
    Batch(Arc<Batch>),
    /// The store was restored: every watch ends with `Compacted` at this revision.
    Reset(Revision),
}

/// The last `capacity` published entries; entry `i` has sequence number `base + i`.
#[derive(Debug)]
struct Ring {
    base: u64,
    entries: VecDeque<Published>,
}

/// How the publisher reaches one watcher.
#[derive(Debug, Default)]
struct Wake {
    waker: AtomicWaker,
    /// The watcher is parked and wants a wake-up on the next publish.
    waiting: AtomicBool,
    /// A progress notification was requested.
    progress: AtomicBool,
    /// The watcher was dropped; the publisher forgets it.
    closed: AtomicBool,
}

/// The fan-out point: publishes batches in revision order and tracks the newest visible revision.
#[derive(Debug)]
pub(crate) struct Hub {
    ring: RwLock<Ring>,
    capacity: usize,
    /// The sequence number the next published entry gets.
    next: AtomicU64,
    visible: AtomicI64,
    publish: Mutex<()>,
    watchers: Mutex<Vec<Arc<Wake>>>,
    /// How many registered watchers were dropped since the list was last pruned.
    dropped: AtomicUsize,
}

impl Hub {
    /// A hub whose ring holds `capacity` batches.
    pub fn new(capacity: usize, visible: Revision) -> Self {
        let capacity = capacity.max(16);
        Self {
            ring: RwLock::new(Ring { base: 0, entries: VecDeque::new() }),
            capacity,
            next: AtomicU64::new(0),
            visible: AtomicI64::new(visible),
            publish: Mutex::new(()),
            watchers: Mutex::new(Vec::new()),
            dropped: AtomicUsize::new(0),
        }
    }

    /// The newest revision readers may see; every batch up to it has been published.
    pub fn visible(&self) -> Revision {
        self.visible.load(Ordering::Acquire)
    }

    /// Serializes publishing against watch registration.
    pub fn lock(&self) -> MutexGuard<'_, ()> {
        self.publish.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, entries: impl IntoIterator<Item = Published>) {
        let mut ring = self.ring.write().unwrap_or_else(|e| e.into_inner());
        for e in entries {
            ring.entries.push_back(e);
        }
        let excess = ring.entries.len().saturating_sub(self.capacity);
        if excess > 0 {
            ring.entries.drain(..excess);
            ring.base += excess as u64;
        }
        self.next.store(ring.base + ring.entries.len() as u64, Ordering::SeqCst);
    }

    /// Wakes every parked watcher.
    fn wake_all(&self) {
        let mut watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        if self.dropped.load(Ordering::Relaxed) > 0 {
            self.dropped.store(0, Ordering::Relaxed);
            watchers.retain(|w| !w.closed.load(Ordering::Relaxed));
        }
        for w in watchers.iter() {
            if w.waiting.swap(false, Ordering::SeqCst) {
                w.waker.wake();
            }
        }
    }

    /// Publishes batches (in order) and then makes `visible` readable. The caller holds [`Hub::lock`].
    pub fn publish(&self, _guard: &MutexGuard<'_, ()>, batches: impl IntoIterator<Item = Arc<Batch>>, visible: Revision) {
        self.push(batches.into_iter().map(Published::Batch));
        self.visible.store(visible, Ordering::Release);
        self.wake_all();
    }

    /// Ends every watch with `Compacted` and jumps to `revision`. The caller holds [`Hub::lock`].
    pub fn reset(&self, _guard: &MutexGuard<'_, ()>, revision: Revision) {
        self.push([Published::Reset(revision)]);
        self.visible.store(revision, Ordering::Release);
        self.wake_all();
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
        let wake = Arc::new(Wake::default());
        self.watchers.lock().unwrap_or_else(|e| e.into_inner()).push(wake.clone());
        let interval = options.progress_interval.map(|p| {
            let mut i = tokio::time::interval_at(Instant::now() + p, p);
            i.set_missed_tick_behavior(MissedTickBehavior::Delay);
            i
        });
        let watcher = Watcher {
            queue: history.into(),
            pos: 0,
            next_seq: self.next.load(Ordering::SeqCst),
            prefix: prefix.to_owned(),
            exact: options.exact,
            after,
            seen: after.max(self.visible()),
            reset: None,
            progress_due: None,
            interval,
            wake: wake.clone(),
            hub: self.clone(),
            done: false,
        };
        let requester = move || {
            wake.progress.store(true, Ordering::SeqCst);
            wake.waker.wake();
        };
        WatchStream::new(Box::pin(watcher), Some(Arc::new(requester)))
    }
}

/// What a look at the ring found.
enum Pull {
    /// Nothing new.
    Empty,
    /// New entries were taken.
    Took,
    /// The ring moved past entries this watcher had not read.
    Lagged,
}

struct Watcher {
    /// Batches to deliver, in order; `pos` is the next event of the front batch.
    queue: VecDeque<Arc<Batch>>,
    pos: usize,
    /// The sequence number of the next ring entry to read.
    next_seq: u64,
    prefix: String,
    exact: bool,
    /// Events at or before this revision were asked not to be sent.
    after: Revision,
    /// Every batch up to this revision has been read from history or the ring.
    seen: Revision,
    /// The store was restored at this revision: end once the queue is delivered.
    reset: Option<Revision>,
    progress_due: Option<Revision>,
    interval: Option<Interval>,
    wake: Arc<Wake>,
    hub: Arc<Hub>,
    done: bool,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.wake.closed.store(true, Ordering::Relaxed);
        self.hub.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

impl Watcher {
    fn matches(&self, e: &WatchEvent) -> bool {
        e.key().is_some_and(|k| if self.exact { k == self.prefix } else { k.starts_with(&self.prefix) })
    }

    /// The next queued event this watcher wants.
    fn next_queued(&mut self) -> Option<WatchEvent> {
        while let Some(b) = self.queue.front() {
            if b.revision > self.after {
                while let Some(e) = b.events.get(self.pos) {
                    self.pos += 1;
                    if self.matches(e) {
                        return Some(e.clone());
                    }
                }
            }
            self.queue.pop_front();
            self.pos = 0;
        }
        None
    }

    /// Takes every entry published since the last look.
    fn pull(&mut self) -> Pull {
        if self.hub.next.load(Ordering::SeqCst) == self.next_seq {
            return Pull::Empty;
        }
        let hub = self.hub.clone();
        let ring = hub.ring.read().unwrap_or_else(|e| e.into_inner());
        if self.next_seq < ring.base {
            return Pull::Lagged;
        }
        let start = usize::try_from(self.next_seq - ring.base).unwrap_or(usize::MAX).min(ring.entries.len());
        for entry in ring.entries.range(start..) {
            self.next_seq += 1;
            match entry {
                Published::Batch(b) => {
                    if b.revision > self.seen {
                        self.seen = b.revision;
                        if b.revision > self.after && b.events.iter().any(|e| self.matches(e)) {
                            self.queue.push_back(b.clone());
                        }
                    }
                }
                Published::Reset(revision) => {
                    self.reset = Some(*revision);
                    break;
                }
            }
        }
        Pull::Took
    }

    fn end(&mut self, error: StorageError) -> Poll<Option<Result<WatchEvent>>> {
        self.done = true;
        Poll::Ready(Some(Err(error)))
    }
}

impl Stream for Watcher {
    type Item = Result<WatchEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(e) = this.next_queued() {
                return Poll::Ready(Some(Ok(e)));
            }
            if let Some(revision) = this.reset {
                let requested = this.seen;
                return this.end(StorageError::Compacted { requested, compacted: revision });
            }
            // A progress request or tick: the revision to report is the one visible now; every
            // batch up to it is in the ring already, so pulling next delivers them first.
            let ticked = this.interval.as_mut().is_some_and(|i| i.poll_tick(cx).is_ready());
            if (ticked || this.wake.progress.swap(false, Ordering::SeqCst)) && this.progress_due.is_none() {
                this.progress_due = Some(this.hub.visible());
            }
            match this.pull() {
                Pull::Took => continue,
                Pull::Lagged => {
                    // Only reached with nothing queued: every batch up to `seen` was delivered.
                    let last_revision = this.seen;
                    return this.end(StorageError::WatchLagged { last_revision });
                }
                Pull::Empty => {}
            }
            if let Some(due) = this.progress_due.take() {
                return Poll::Ready(Some(Ok(WatchEvent::Progress { revision: due.max(this.seen) })));
            }
            this.wake.waker.register(cx.waker());
            this.wake.waiting.store(true, Ordering::SeqCst);
            // Published (or asked for progress) between the look above and the registration?
            if this.hub.next.load(Ordering::SeqCst) != this.next_seq || this.wake.progress.load(Ordering::SeqCst) {
                continue;
            }
            return Poll::Pending;
        }
    }
}
