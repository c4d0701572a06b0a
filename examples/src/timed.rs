//! [`TimedClient`]: a [`Client`] layer that records the latency of every mutating call, for
//! benchmarks that report the API's mutating-call latency as Kubernetes' SLO defines it.

use bosun_core::layer::{Call, Layer, Layered};
use bosun_core::{Client, Result};
use futures::future::BoxFuture;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A client whose mutating calls are timed: made by [`Timing::wrap`]; read with `layer().latencies_ms()`.
pub type TimedClient = Layered<Timing>;

/// The [`Layer`] of a [`TimedClient`]: records how long each mutating call took.
#[derive(Debug, Default)]
pub struct Timing {
    samples: Mutex<Vec<f32>>,
}

impl Timing {
    /// Times the mutating calls made through `inner`.
    pub fn wrap(inner: Arc<dyn Client>) -> Arc<TimedClient> {
        Arc::new(Layered::new(inner, Self::default()))
    }

    /// The latencies (milliseconds) of every mutating call so far, in completion order.
    pub fn latencies_ms(&self) -> Vec<f32> {
        self.samples.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

impl Layer for Timing {
    fn call<'a, T: Send + 'a>(&'a self, call: Call<'a>, next: BoxFuture<'a, Result<T>>) -> BoxFuture<'a, Result<T>> {
        if !call.verb.is_write() {
            return next;
        }
        Box::pin(async move {
            let started = Instant::now();
            let out = next.await;
            let ms = started.elapsed().as_secs_f32() * 1000.0;
            self.samples.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(ms);
            out
        })
    }
}

/// The `p`-quantile (0..=1) of unsorted samples; 0 when there are none.
pub fn quantile(samples: &mut [f32], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_by(f32::total_cmp);
    let last = samples.len() - 1;
    // Nearest rank: the smallest sample with at least p of the samples at or below it.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let idx = ((p * samples.len() as f64).ceil() as usize).saturating_sub(1).min(last);
    f64::from(samples[idx])
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn nearest_rank_quantiles() {
        let mut s: Vec<f32> = (1..=100).map(|i| i as f32).collect();
        assert_eq!(quantile(&mut s, 0.5), 50.0);
        assert_eq!(quantile(&mut s, 0.99), 99.0);
        assert_eq!(quantile(&mut s, 1.0), 100.0);
        assert_eq!(quantile(&mut [], 0.99), 0.0);
        assert_eq!(quantile(&mut [7.0], 0.5), 7.0);
    }
}
