//! Jittered exponential backoff, as client-go's reflector uses (800 ms doubling to 30 s).

use std::time::Duration;

/// Jittered exponential backoff: each failure doubles the delay up to a cap; success resets it.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: f64,
    attempt: u32,
    rng: fastrand::Rng,
}

impl Default for Backoff {
    /// 800 ms doubling to 30 s, with up to 20% added jitter.
    fn default() -> Self {
        Self::new(Duration::from_millis(800), Duration::from_secs(30))
    }
}

impl Backoff {
    /// A backoff from `initial` doubling up to `max`, with up to 20% jitter.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max, jitter: 0.2, attempt: 0, rng: fastrand::Rng::new() }
    }

    /// Sets the jitter: each delay grows by a random fraction up to this (default 0.2), never past the cap.
    #[must_use]
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction.clamp(0.0, 1.0);
        self
    }

    /// Seeds the jitter's random source, for reproducible tests.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.rng = fastrand::Rng::with_seed(seed);
        self
    }

    /// The delay before the next attempt; each call counts one failure.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.initial.saturating_mul(1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX)).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let jittered = base.mul_f64(1.0 + self.jitter * self.rng.f64());
        jittered.min(self.max)
    }

    /// Forgets past failures.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Failures since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_until_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).jitter(0.0);
        let delays: Vec<u128> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn jitter_stays_between_the_base_and_the_cap() {
        let mut b = Backoff::default().seed(7);
        let mut prev_base = Duration::ZERO;
        for i in 0..20u32 {
            let d = b.next_delay();
            let base = Duration::from_millis(800).saturating_mul(1 << i.min(20)).min(Duration::from_secs(30));
            assert!(d >= base && d <= Duration::from_secs(30), "{d:?} vs base {base:?}");
            assert!(base >= prev_base);
            prev_base = base;
        }
        let spread: std::collections::HashSet<u128> = (0..10).map(|_| Backoff::default().next_delay().as_micros()).collect();
        assert!(spread.len() > 1, "jitter should vary the first delay");
    }
}
