//! A `Client` that counts the calls made through it, by verb and resource, so that the bench can
//! say how many API writes the node agents make per pod.

use bosun_core::Result;
use bosun_core::layer::{Call, Layer, Layered};
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A client whose calls are counted: made by [`Counting::wrap`], read with `layer().snapshot()`.
pub type CountingClient = Layered<Counting>;

/// Counts calls by `"<verb> <plural>[/<subresource>]"`.
#[derive(Default)]
pub struct Counting {
    counts: Mutex<BTreeMap<String, u64>>,
}

impl Counting {
    pub fn wrap(inner: Arc<dyn bosun_core::Client>) -> Arc<CountingClient> {
        Arc::new(Layered::new(inner, Self::default()))
    }

    /// Forgets what was counted so far.
    pub fn reset(&self) {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The counts so far.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Layer for Counting {
    fn call<'a, T: Send + 'a>(&'a self, call: Call<'a>, next: BoxFuture<'a, Result<T>>) -> BoxFuture<'a, Result<T>> {
        let key = match call.subresource {
            Some(s) => format!("{} {}/{s}", call.verb.as_str(), call.plural),
            None => format!("{} {}", call.verb.as_str(), call.plural),
        };
        *self.counts.lock().unwrap_or_else(|p| p.into_inner()).entry(key).or_default() += 1;
        next
    }
}
