//! [`TimedClient`]: a [`Client`] decorator that records the latency of every mutating call, for
//! benchmarks that report the API's mutating-call latency as Kubernetes' SLO defines it.

use async_trait::async_trait;
use bosun_core::client::{Deleted, LogStream, WatchStream};
use bosun_core::{
    Client, DeleteParams, DynamicObject, ListParams, LogParams, ObjectList, Patch, PatchParams, PostParams, Result, Target, WatchParams,
};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Wraps a client; [`latencies_ms`](Self::latencies_ms) returns the mutating calls' latencies so far.
pub struct TimedClient {
    inner: Arc<dyn Client>,
    samples: Mutex<Vec<f32>>,
}

impl TimedClient {
    /// Times the mutating calls made through `inner`.
    pub fn new(inner: Arc<dyn Client>) -> Arc<Self> {
        Arc::new(Self { inner, samples: Mutex::new(Vec::new()) })
    }

    /// The latencies (milliseconds) of every mutating call so far, in completion order.
    pub fn latencies_ms(&self) -> Vec<f32> {
        self.samples.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    async fn time<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        let started = Instant::now();
        let out = call.await;
        let ms = started.elapsed().as_secs_f32() * 1000.0;
        self.samples.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(ms);
        out
    }
}

#[async_trait]
impl Client for TimedClient {
    async fn get(&self, target: Target<'_>, name: &str) -> Result<DynamicObject> {
        self.inner.get(target, name).await
    }

    async fn list(&self, target: Target<'_>, params: &ListParams) -> Result<ObjectList<DynamicObject>> {
        self.inner.list(target, params).await
    }

    async fn create(&self, target: Target<'_>, obj: &DynamicObject, params: &PostParams) -> Result<DynamicObject> {
        self.time(self.inner.create(target, obj, params)).await
    }

    async fn update(&self, target: Target<'_>, obj: &DynamicObject, params: &PostParams) -> Result<DynamicObject> {
        self.time(self.inner.update(target, obj, params)).await
    }

    async fn patch(&self, target: Target<'_>, name: &str, patch: &Patch, params: &PatchParams) -> Result<DynamicObject> {
        self.time(self.inner.patch(target, name, patch, params)).await
    }

    async fn delete(&self, target: Target<'_>, name: &str, params: &DeleteParams) -> Result<Deleted<DynamicObject>> {
        self.time(self.inner.delete(target, name, params)).await
    }

    async fn delete_collection(&self, target: Target<'_>, list: &ListParams, params: &DeleteParams) -> Result<ObjectList<DynamicObject>> {
        self.time(self.inner.delete_collection(target, list, params)).await
    }

    async fn watch(&self, target: Target<'_>, params: &WatchParams) -> Result<WatchStream> {
        self.inner.watch(target, params).await
    }

    async fn get_subresource(&self, target: Target<'_>, name: &str, subresource: &str) -> Result<DynamicObject> {
        self.inner.get_subresource(target, name, subresource).await
    }

    async fn update_subresource(
        &self,
        target: Target<'_>,
        name: &str,
        subresource: &str,
        obj: &DynamicObject,
        params: &PostParams,
    ) -> Result<DynamicObject> {
        self.time(self.inner.update_subresource(target, name, subresource, obj, params)).await
    }

    async fn patch_subresource(
        &self,
        target: Target<'_>,
        name: &str,
        subresource: &str,
        patch: &Patch,
        params: &PatchParams,
    ) -> Result<DynamicObject> {
        self.time(self.inner.patch_subresource(target, name, subresource, patch, params)).await
    }

    async fn create_subresource(
        &self,
        target: Target<'_>,
        name: &str,
        subresource: &str,
        body: &serde_json::Value,
        params: &PostParams,
    ) -> Result<serde_json::Value> {
        self.time(self.inner.create_subresource(target, name, subresource, body, params)).await
    }

    async fn logs(&self, namespace: &str, pod: &str, params: &LogParams) -> Result<LogStream> {
        self.inner.logs(namespace, pod, params).await
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
