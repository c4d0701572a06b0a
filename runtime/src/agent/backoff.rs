//! The crash-loop backoff curve, pluggable through [`RestartBackoff`].

use std::time::Duration;

/// How long a container that keeps crashing waits before its next restart.
pub trait RestartBackoff: Send + Sync + 'static {
    /// The wait before restart number `restarts + 1` of a crash loop (`restarts` = restarts so far
    /// in this loop; the first restart usually comes at once).
    fn delay(&self, restarts: u32) -> Duration;

    /// A container that ran at least this long before exiting starts a fresh loop.
    fn reset_after(&self) -> Duration;
}

/// Doubling backoff: none before the first restart, then `initial`, doubling up to `max`; reset
/// after `reset_after` of running. The default is the kubelet's: 10 s doubling to 300 s, reset after 10 min.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DoublingBackoff {
    /// The wait before the second restart.
    pub initial: Duration,
    /// The cap.
    pub max: Duration,
    /// Running this long resets the loop.
    pub reset_after: Duration,
}

impl Default for DoublingBackoff {
    fn default() -> Self {
        Self::kubernetes()
    }
}

impl DoublingBackoff {
    /// The kubelet's curve: 10 s doubling to 300 s, reset after 10 minutes.
    pub fn kubernetes() -> Self {
        Self { initial: Duration::from_secs(10), max: Duration::from_secs(300), reset_after: Duration::from_secs(600) }
    }

    /// KEP-4603's faster curve: 1 s doubling to 60 s, reset after 10 minutes.
    pub fn fast() -> Self {
        Self { initial: Duration::from_secs(1), max: Duration::from_secs(60), reset_after: Duration::from_secs(600) }
    }
}

impl RestartBackoff for DoublingBackoff {
    fn delay(&self, restarts: u32) -> Duration {
        if restarts == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(restarts - 1).unwrap_or(u32::MAX);
        self.initial.checked_mul(factor).map_or(self.max, |d| d.min(self.max))
    }

    fn reset_after(&self) -> Duration {
        self.reset_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_until_the_cap() {
        let b = DoublingBackoff::kubernetes();
        let delays: Vec<u64> = (0..9).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(delays, vec![0, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(300));
        assert_eq!(b.reset_after(), Duration::from_secs(600));
    }
}
