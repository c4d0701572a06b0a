//! A config reloader: a Deployment annotated `example.com/config-hash-from: <configmap>` gets the
//! hash of that ConfigMap's data stamped on its pod template, so editing the ConfigMap rolls the
//! Deployment's pods (what stakater's Reloader does for real clusters).
//!
//! It is written against [`Client`] only, so it runs unchanged in-process on an
//! [`ApiServer`](bosun_store::ApiServer) or on any Kubernetes cluster through
//! [`KubeClient`](bosun_core::kube_client::KubeClient); see `examples/kube_adapter.rs`. It needs
//! `list`/`watch` on ConfigMaps and Deployments and `patch` on Deployments.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use bosun_controllers::runtime::{Action, Controller, backoff_policy};
use bosun_core::k8s_openapi::api::apps::v1::Deployment;
use bosun_core::k8s_openapi::api::core::v1::ConfigMap;
use bosun_core::{Api, Client, Object, ObjectKey, Patch, PatchParams};

/// The Deployment annotation naming the ConfigMap (in the Deployment's namespace) to follow.
pub const HASH_FROM: &str = "example.com/config-hash-from";
/// The pod-template annotation holding the followed ConfigMap's hash.
pub const HASH: &str = "example.com/config-hash";
/// The index of Deployments by the `namespace/name` of the ConfigMap they follow.
const INDEX: &str = "config-hash-from";

/// What every reconcile shares.
pub struct Ctx {
    client: Arc<dyn Client>,
}

impl Ctx {
    /// The context of a reloader that reads and patches through `client`.
    pub fn new(client: Arc<dyn Client>) -> Self {
        Self { client }
    }
}

/// The hash a Deployment following `config` carries: FNV-1a over its sorted data and binary
/// data, stable across processes and versions (a changed hash rolls the pods). An absent
/// ConfigMap hashes to `absent`.
pub fn config_hash(config: Option<&ConfigMap>) -> String {
    let Some(config) = config else { return "absent".to_owned() };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes.iter().chain([&0xff]) {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for (k, v) in config.data.iter().flatten() {
        feed(k.as_bytes());
        feed(v.as_bytes());
    }
    feed(b"binaryData");
    for (k, v) in config.binary_data.iter().flatten() {
        feed(k.as_bytes());
        feed(&v.0);
    }
    format!("{h:016x}")
}

fn source_name(deployment: &Deployment) -> Option<&str> {
    deployment.metadata.annotations.as_ref()?.get(HASH_FROM).map(String::as_str).filter(|s| !s.is_empty())
}

fn current_hash(deployment: &Deployment) -> Option<&str> {
    let template = deployment.spec.template.metadata.as_ref()?;
    template.annotations.as_ref()?.get(HASH).map(String::as_str)
}

/// Stamps the followed ConfigMap's hash on the Deployment's pod template when it differs.
#[tracing::instrument(name = "reloader.reconcile", skip_all, fields(object.ref = %ObjectKey::of(&*deployment)))]
pub async fn reconcile(deployment: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, bosun_core::Error> {
    let Some(source) = source_name(&deployment) else { return Ok(Action::await_change()) };
    let namespace = deployment.namespace().unwrap_or("default");
    let config = Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace).get_opt(source).await?;
    let hash = config_hash(config.as_ref());
    if current_hash(&deployment) == Some(hash.as_str()) {
        return Ok(Action::await_change());
    }
    tracing::info!(configmap = source, %hash, "config changed; rolling the pods");
    // A merge patch touches only this annotation; the Deployment controller does the rollout.
    let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {HASH: hash}}}}});
    Api::<Deployment>::namespaced(ctx.client.clone(), namespace)
        .patch(deployment.name(), &Patch::Merge(patch), &PatchParams::default())
        .await?;
    Ok(Action::await_change())
}

/// The reloader over `client`, in `namespace` or every namespace; it runs until `shutdown`
/// completes (pass `std::future::pending()` to run for ever).
pub fn run(
    client: Arc<dyn Client>,
    namespace: Option<&str>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let (deployments, configs) = match namespace {
        Some(ns) => (Api::<Deployment>::namespaced(client.clone(), ns), Api::<ConfigMap>::namespaced(client.clone(), ns)),
        None => (Api::<Deployment>::all(client.clone()), Api::<ConfigMap>::all(client.clone())),
    };
    let controller = Controller::new(deployments).name("config-reloader").graceful_shutdown_on(shutdown);
    let followers = controller.store();
    followers.add_index(
        INDEX,
        Arc::new(|d: &Deployment| source_name(d).map(|s| format!("{}/{s}", d.namespace().unwrap_or_default())).into_iter().collect()),
    );
    // A ConfigMap change reconciles every Deployment that follows it.
    let controller = controller.watches(configs, move |config: &ConfigMap| {
        let key = format!("{}/{}", config.namespace().unwrap_or_default(), config.name());
        followers.by_index(INDEX, &key).iter().map(|d| ObjectKey::of(&**d)).collect::<Vec<_>>()
    });
    controller.run(reconcile, backoff_policy, Arc::new(Ctx { client }))
}

/// The annotations a Deployment needs to follow `configmap`.
pub fn follow(configmap: &str) -> BTreeMap<String, String> {
    [(HASH_FROM.to_owned(), configmap.to_owned())].into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(data: &[(&str, &str)]) -> ConfigMap {
        ConfigMap { data: Some(data.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()), ..ConfigMap::default() }
    }

    #[test]
    fn the_hash_follows_the_data_and_not_its_split_into_keys() {
        let a = config_hash(Some(&config(&[("a", "1"), ("b", "2")])));
        assert_eq!(a, config_hash(Some(&config(&[("b", "2"), ("a", "1")]))), "key order does not matter");
        assert_ne!(a, config_hash(Some(&config(&[("a", "1"), ("b", "3")]))));
        assert_ne!(config_hash(Some(&config(&[("ab", "")]))), config_hash(Some(&config(&[("a", "b")]))));
        assert_eq!(config_hash(None), "absent");
        assert_eq!(a.len(), 16);
    }
}
