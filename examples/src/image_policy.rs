//! A runtime layer, for the `runtime_layer` example: [`ImageAllowlist`] wraps any container
//! runtime (process, runc, fake, your own) and refuses to create containers from images outside
//! the registries it allows. The node agent reports a refused container as kubelet does a failed
//! create: `Waiting` with reason `CreateContainerError` and the policy's message, retried with
//! back-off. A layer implements one method, `bosun_runtime::layer::RuntimeLayer::call`, which sees
//! every runtime call with its arguments.

use bosun_runtime::layer::{LayeredRuntime, RuntimeCall, RuntimeLayer};
use bosun_runtime::{ContainerRuntime, Result, RuntimeError};
use futures::future::BoxFuture;
use std::sync::atomic::{AtomicU64, Ordering};

/// Allows images whose names start with one of its prefixes (`registry.internal/`).
#[derive(Debug, Default)]
pub struct ImageAllowlist {
    prefixes: Vec<String>,
    refused: AtomicU64,
}

impl ImageAllowlist {
    /// Allows the images under `prefixes`.
    pub fn new(prefixes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self { prefixes: prefixes.into_iter().map(Into::into).collect(), refused: AtomicU64::new(0) }
    }

    /// `runtime` behind this policy.
    pub fn wrap<R: ContainerRuntime>(self, runtime: R) -> LayeredRuntime<R, Self> {
        LayeredRuntime::new(runtime, self)
    }

    /// Whether `image` may run.
    pub fn allows(&self, image: &str) -> bool {
        self.prefixes.iter().any(|p| image.starts_with(p.as_str()))
    }

    /// How many container creations it refused.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl RuntimeLayer for ImageAllowlist {
    fn call<'a, T: Send + 'a>(&'a self, call: RuntimeCall<'a>, next: BoxFuture<'a, Result<T>>) -> BoxFuture<'a, Result<T>> {
        match call {
            RuntimeCall::CreateContainer { config, .. } if !self.allows(&config.image.name) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                let why = format!("image {:?} is not from an allowed registry ({})", config.image.name, self.prefixes.join(", "));
                tracing::warn!(container = %config.name, %why, "refused by the image policy");
                Box::pin(async move { Err(RuntimeError::Invalid(why)) })
            }
            _ => next,
        }
    }
}
