//! The watcher: lists, then watches from the list's version; resumes after a dropped stream,
//! relists on `410 Gone`, and backs off on errors. It never ends on its own.

use super::backoff::Backoff;
use crate::api::Api;
use crate::client::{ListParams, WatchEvent, WatchParams};
use crate::error::Error;
use crate::object::Object;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use std::collections::VecDeque;
use std::time::Duration;

/// What the watcher saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<K> {
    /// A (re)list begins: the objects until `InitDone` are the complete state.
    Init,
    /// An object of the (re)list.
    InitApply(K),
    /// The (re)list is complete; objects not seen in it are gone.
    InitDone,
    /// An object was added or changed.
    Apply(K),
    /// An object was deleted.
    Delete(K),
}

/// An error the watcher met and will recover from on its own (after a backoff).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// The list call failed.
    #[error("list failed: {0}")]
    List(#[source] Error),
    /// Starting the watch failed.
    #[error("watch failed to start: {0}")]
    Start(#[source] Error),
    /// The watch stream failed or the server sent an `ERROR` event.
    #[error("watch stream failed: {0}")]
    Stream(#[source] Error),
}

impl WatchError {
    /// The API error underneath.
    pub fn api_error(&self) -> &Error {
        match self {
            Self::List(e) | Self::Start(e) | Self::Stream(e) => e,
        }
    }
}

/// What a watcher watches and how.
#[derive(Debug, Clone)]
pub struct WatcherConfig {
    /// Label selector.
    pub label_selector: Option<String>,
    /// Field selector.
    pub field_selector: Option<String>,
    /// Page size of lists (default 500, as kubectl and client-go use).
    pub page_size: Option<u32>,
    /// Seconds the server keeps each watch open (default 290, as kube-rs).
    pub timeout_seconds: u32,
    /// Backoff between failed attempts.
    pub backoff: Backoff,
    /// Takes the initial state (and every relist) from a streaming list, a watch with
    /// `sendInitialEvents`, instead of paged lists (default false). The server sends the objects
    /// one by one from its watch cache, so a relist of 150,000 pods never holds a page, a list
    /// snapshot or the whole list at once, and no continue token can expire. A server that
    /// refuses it (400/422, e.g. without the `WatchList` feature) makes this watcher list instead.
    pub streaming_list: bool,
}

impl Default for WatcherConfig {
    fn default() -> Self {
        Self {
            label_selector: None,
            field_selector: None,
            page_size: Some(500),
            timeout_seconds: 290,
            backoff: Backoff::default(),
            streaming_list: false,
        }
    }
}

impl WatcherConfig {
    /// Watches only objects matching this label selector.
    #[must_use]
    pub fn labels(mut self, selector: impl Into<String>) -> Self {
        self.label_selector = Some(selector.into());
        self
    }

    /// Watches only objects matching this field selector.
    #[must_use]
    pub fn fields(mut self, selector: impl Into<String>) -> Self {
        self.field_selector = Some(selector.into());
        self
    }

    /// Sets the backoff between failed attempts (default: 800 ms doubling to 30 s, jittered).
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Takes initial states from streaming lists (watches with `sendInitialEvents`) instead of
    /// paged lists (default false); see [`WatcherConfig::streaming_list`].
    #[must_use]
    pub fn streaming_list(mut self, on: bool) -> Self {
        self.streaming_list = on;
        self
    }

    /// Sets the list page size (default 500; `None` lists everything at once).
    #[must_use]
    pub fn page_size(mut self, size: Option<u32>) -> Self {
        self.page_size = size;
        self
    }
}

enum Phase<K> {
    Listing {
        continue_token: Option<String>,
    },
    Starting {
        resource_version: String,
    },
    /// `initial`: the stream is a streaming list still sending the initial state.
    Streaming {
        resource_version: String,
        stream: BoxStream<'static, crate::Result<WatchEvent<K>>>,
        initial: bool,
    },
}

struct State<K> {
    api: Api<K>,
    config: WatcherConfig,
    phase: Phase<K>,
    pending: VecDeque<Event<K>>,
    delay: Option<Duration>,
    /// The server refused a streaming list: list in pages from now on.
    no_streaming: bool,
}

/// Watches a kind forever: yields the events, and the errors it recovers from.
pub fn watcher<K: Object>(api: Api<K>, config: WatcherConfig) -> impl Stream<Item = Result<Event<K>, WatchError>> + Send + 'static {
    let state =
        State { api, config, phase: Phase::Listing { continue_token: None }, pending: VecDeque::new(), delay: None, no_streaming: false };
    futures::stream::unfold(state, |mut s| async move {
        let item = s.step().await;
        Some((item, s))
    })
}

impl<K: Object> State<K> {
    fn fail(&mut self) {
        self.delay = Some(self.config.backoff.next_delay());
    }

    async fn step(&mut self) -> Result<Event<K>, WatchError> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Ok(ev);
            }
            if let Some(delay) = self.delay.take() {
                tracing::debug!(?delay, resource = %self.api.resource().group_resource(), "watcher backing off");
                tokio::time::sleep(delay).await;
            }
            match std::mem::replace(&mut self.phase, Phase::Listing { continue_token: None }) {
                Phase::Listing { continue_token: None } if self.config.streaming_list && !self.no_streaming => {
                    self.start_streaming_list().await?;
                }
                Phase::Listing { continue_token } => {
                    let first = continue_token.is_none();
                    let params = ListParams {
                        label_selector: self.config.label_selector.clone(),
                        field_selector: self.config.field_selector.clone(),
                        limit: self.config.page_size,
                        continue_token: continue_token.clone(),
                        ..ListParams::default()
                    };
                    match self.api.list(&params).await {
                        Ok(page) => {
                            if first {
                                self.pending.push_back(Event::Init);
                            }
                            let next = page.continue_token().map(str::to_owned);
                            let rv = page.resource_version().to_owned();
                            self.pending.extend(page.items.into_iter().map(Event::InitApply));
                            self.phase = match next {
                                Some(token) => Phase::Listing { continue_token: Some(token) },
                                None => {
                                    self.pending.push_back(Event::InitDone);
                                    self.config.backoff.reset();
                                    Phase::Starting { resource_version: rv }
                                }
                            };
                        }
                        Err(e) => {
                            // An expired continue token restarts the list from the top (the `Init`
                            // already sent is repeated, so the consumer starts its buffer afresh).
                            self.phase = Phase::Listing { continue_token: None };
                            self.fail();
                            return Err(WatchError::List(e));
                        }
                    }
                }
                Phase::Starting { resource_version } => {
                    let params = WatchParams {
                        label_selector: self.config.label_selector.clone(),
                        field_selector: self.config.field_selector.clone(),
                        resource_version: Some(resource_version.clone()).filter(|rv| !rv.is_empty()),
                        timeout_seconds: Some(self.config.timeout_seconds),
                        allow_bookmarks: true,
                        send_initial_events: false,
                    };
                    match self.api.watch(&params).await {
                        Ok(stream) => self.phase = Phase::Streaming { resource_version, stream, initial: false },
                        Err(e) => {
                            self.phase =
                                if e.is_gone() { Phase::Listing { continue_token: None } } else { Phase::Starting { resource_version } };
                            self.fail();
                            return Err(WatchError::Start(e));
                        }
                    }
                }
                Phase::Streaming { mut resource_version, mut stream, mut initial } => match stream.next().await {
                    Some(Ok(ev)) => {
                        let out = match ev {
                            // While `initial`, the state of a streaming list (only ADDED events, by the protocol).
                            WatchEvent::Added(k) | WatchEvent::Modified(k) => {
                                resource_version = k.resource_version().to_owned();
                                Some(if initial { Event::InitApply(k) } else { Event::Apply(k) })
                            }
                            WatchEvent::Deleted(k) => {
                                resource_version = k.resource_version().to_owned();
                                Some(Event::Delete(k))
                            }
                            WatchEvent::Bookmark(b) => {
                                let ends = initial && b.ends_initial_events();
                                resource_version = b.resource_version;
                                if ends {
                                    initial = false;
                                    Some(Event::InitDone)
                                } else {
                                    None
                                }
                            }
                            WatchEvent::Error(status) => {
                                let e = Error::from_status(status);
                                self.after_stream_error(&e, resource_version, initial);
                                return Err(WatchError::Stream(e));
                            }
                        };
                        if !initial {
                            self.config.backoff.reset();
                        }
                        self.phase = Phase::Streaming { resource_version, stream, initial };
                        if let Some(ev) = out {
                            return Ok(ev);
                        }
                    }
                    Some(Err(e)) => {
                        self.after_stream_error(&e, resource_version, initial);
                        return Err(WatchError::Stream(e));
                    }
                    // The server closed the watch before the initial state was complete: start over.
                    None if initial => {
                        self.phase = Phase::Listing { continue_token: None };
                        self.fail();
                    }
                    // The server closed the watch (timeout): resume from the last version seen.
                    None => self.phase = Phase::Starting { resource_version },
                },
            }
        }
    }

    /// Starts a streaming list: a watch from the current state (a consistent read) that sends it
    /// as `ADDED` events, ended by an annotated bookmark. A server refusing it (a 4xx other than
    /// auth, gone or throttling) turns this watcher to paged lists for good.
    async fn start_streaming_list(&mut self) -> Result<(), WatchError> {
        let params = WatchParams {
            label_selector: self.config.label_selector.clone(),
            field_selector: self.config.field_selector.clone(),
            resource_version: None,
            // No timeout: one cut short while the initial state streams would start it over.
            timeout_seconds: None,
            allow_bookmarks: true,
            send_initial_events: true,
        };
        match self.api.watch(&params).await {
            Ok(stream) => {
                self.pending.push_back(Event::Init);
                self.phase = Phase::Streaming { resource_version: String::new(), stream, initial: true };
                Ok(())
            }
            Err(e) if matches!(e.code(), 400 | 405 | 406 | 415 | 422) => {
                tracing::debug!(resource = %self.api.resource().group_resource(), error = %e, "streaming list refused; listing in pages");
                self.no_streaming = true;
                Ok(())
            }
            Err(e) => {
                self.fail();
                Err(WatchError::List(e))
            }
        }
    }

    /// After a failed watch stream: relist on 410 (at once) or when the initial state of a
    /// streaming list was cut short, else resume from the last version seen; back off unless 410.
    fn after_stream_error(&mut self, e: &Error, resource_version: String, initial: bool) {
        self.phase = if e.is_gone() || initial { Phase::Listing { continue_token: None } } else { Phase::Starting { resource_version } };
        if !e.is_gone() {
            self.fail();
        }
    }
}
