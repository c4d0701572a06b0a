//! Leader election on a `coordination.k8s.io/v1` Lease: acquire, renew, step down, with a fencing
//! token (holder plus transition count) that callers check before acting as the leader.
//!
//! Expiry is judged on the local clock from when this candidate last saw the record change, not
//! on the holder's timestamps, so clock skew between machines does not matter (as client-go).

use crate::clock;
use bosun_core::{Api, Error, PostParams};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Lease timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    /// How long a lease is valid after its last renewal (default 15 s).
    pub lease_duration: Duration,
    /// A leader that cannot renew for this long steps down (default 10 s).
    pub renew_deadline: Duration,
    /// Time between attempts to acquire or renew (default 2 s).
    pub retry_period: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self { lease_duration: Duration::from_secs(15), renew_deadline: Duration::from_secs(10), retry_period: Duration::from_secs(2) }
    }
}

/// Proof of leadership: the holder and the lease's transition count when it was acquired. A newer
/// leader always has a larger `transitions`, so a write guarded by the token cannot come from a
/// deposed leader that still believes it leads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FencingToken {
    /// The lease's `leaseTransitions` at acquisition.
    pub transitions: i32,
    /// The holder identity.
    pub holder: String,
}

/// Why leading ended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaderError {
    /// The lease could not be renewed within the renew deadline.
    #[error("lost the lease {lease}: no renewal for {deadline:?}")]
    Lost {
        /// The lease name.
        lease: String,
        /// The renew deadline.
        deadline: Duration,
    },
    /// An API call failed.
    #[error("lease request failed: {0}")]
    Api(#[from] Error),
}

/// A lease record as observed: holder, renew time (as text) and transition count.
type Record = (Option<String>, String, i32);

#[derive(Default)]
struct State {
    /// The record as last seen (holder, renew time, transitions) and when it was first seen so.
    observed: Option<(Record, Instant)>,
    token: Option<FencingToken>,
    renewed: Option<Instant>,
}

/// A candidate for leadership of one lease; cheap to clone.
#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    config: LeaseConfig,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector").field("lease", &self.name).field("identity", &self.identity).finish()
    }
}

impl LeaderElector {
    /// A candidate `identity` for lease `name` in `namespace`.
    pub fn new(client: Arc<dyn bosun_core::Client>, namespace: &str, name: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            config: LeaseConfig::default(),
            state: Arc::default(),
        }
    }

    /// Sets the timings (default: 15 s lease, 10 s renew deadline, 2 s retry).
    #[must_use]
    pub fn config(mut self, config: LeaseConfig) -> Self {
        self.config = config;
        self
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The token while this candidate leads (renewed within the renew deadline), else `None`.
    pub fn token(&self) -> Option<FencingToken> {
        let state = self.lock();
        let fresh = state.renewed.is_some_and(|t| t.elapsed() < self.config.renew_deadline);
        state.token.clone().filter(|_| fresh)
    }

    /// Whether `token` is still this candidate's current leadership.
    pub fn check(&self, token: &FencingToken) -> bool {
        self.token().as_ref() == Some(token)
    }

    /// One attempt to acquire or renew; returns the token when this candidate holds the lease.
    pub async fn try_acquire_or_renew(&self) -> Result<Option<FencingToken>, LeaderError> {
        let now = Instant::now();
        let duration_secs = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let existing = self.api.get_opt(&self.name).await?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(clock::now_micro()),
                    renew_time: Some(clock::now_micro()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&lease, &PostParams::default()).await {
                Ok(_) => Ok(Some(self.became(0, now))),
                Err(e) if e.is_already_exists() || e.is_conflict() => Ok(None),
                Err(e) => Err(e.into()),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let transitions = spec.lease_transitions.unwrap_or(0);
        let record = (holder.clone(), format!("{:?}", spec.renew_time), transitions);
        let ours = holder.as_deref() == Some(self.identity.as_str());
        let expired = {
            let mut state = self.lock();
            let since = match &state.observed {
                Some((seen, at)) if *seen == record => *at,
                _ => {
                    state.observed = Some((record, now));
                    now
                }
            };
            let duration = spec.lease_duration_seconds.map_or(self.config.lease_duration, |s| Duration::from_secs(s.max(0) as u64));
            holder.is_none() || now.saturating_duration_since(since) >= duration
        };
        if !ours && !expired {
            self.lock().token = None;
            return Ok(None);
        }
        let transitions = if ours { transitions } else { transitions + 1 };
        let mut spec = spec;
        if !ours {
            spec.acquire_time = Some(clock::now_micro());
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(duration_secs);
        spec.renew_time = Some(clock::now_micro());
        spec.lease_transitions = Some(transitions);
        lease.spec = Some(spec);
        match self.api.replace(&lease, &PostParams::default()).await {
            Ok(_) => Ok(Some(self.became(transitions, now))),
            Err(e) if e.is_conflict() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn became(&self, transitions: i32, at: Instant) -> FencingToken {
        let token = FencingToken { transitions, holder: self.identity.clone() };
        let mut state = self.lock();
        if state.token.as_ref() != Some(&token) {
            tracing::info!(lease = %self.name, identity = %self.identity, transitions, "became leader");
        }
        state.token = Some(token.clone());
        state.renewed = Some(at);
        token
    }

    /// Waits to acquire the lease, then runs `leading(token)` while renewing every retry period.
    /// Returns the task's output, or [`LeaderError::Lost`] (dropping the task) when renewal fails
    /// for longer than the renew deadline.
    pub async fn run<F, Fut>(&self, leading: F) -> Result<Fut::Output, LeaderError>
    where
        F: FnOnce(FencingToken) -> Fut,
        Fut: Future,
    {
        let token = loop {
            match self.try_acquire_or_renew().await {
                Ok(Some(token)) => break token,
                Ok(None) => {}
                Err(error) => tracing::warn!(lease = %self.name, %error, "acquiring the lease failed"),
            }
            tokio::time::sleep(self.config.retry_period).await;
        };
        let task = leading(token.clone());
        let mut task = std::pin::pin!(task);
        let mut ticker = tokio::time::interval(self.config.retry_period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                out = &mut task => return Ok(out),
                _ = ticker.tick() => {
                    let renewed = matches!(self.try_acquire_or_renew().await, Ok(Some(ref t)) if *t == token);
                    if !renewed && self.token().is_none() {
                        self.lock().token = None;
                        tracing::warn!(lease = %self.name, identity = %self.identity, "lost leadership");
                        return Err(LeaderError::Lost { lease: self.name.clone(), deadline: self.config.renew_deadline });
                    }
                }
            }
        }
    }

    /// Gives the lease up (clears the holder) if this candidate holds it, so a successor need not wait.
    pub async fn release(&self) -> Result<(), LeaderError> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else { return Ok(()) };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        lease.spec = Some(spec);
        self.api.replace(&lease, &PostParams::default()).await?;
        let mut state = self.lock();
        state.token = None;
        state.renewed = None;
        Ok(())
    }
}
