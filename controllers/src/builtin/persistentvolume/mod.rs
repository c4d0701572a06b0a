//! The PersistentVolume controller (kube-controller-manager's `persistentvolume-binder`) and the
//! local-path dynamic provisioner: claims are bound to the smallest volume that satisfies them
//! (class, access modes, capacity, selector, pre-binding), `WaitForFirstConsumer` claims once the
//! scheduler has chosen a node (`volume.kubernetes.io/selected-node`), and claims of the
//! `bosun.io/local-path` class get a hostPath volume `<base>/<pv-name>` pinned to that node.
//! Volumes whose claim is gone become `Released` and are kept (`Retain`) or deleted with their data
//! (`Delete`). A default `local-path` StorageClass is created at start when missing.
//!
//! Two loops share one context: [`reconcile_claim`] drives claims (binding, provisioning, claim
//! phases) and [`reconcile_volume`] drives volumes (phases, release, reclaim).

mod claim;
pub mod matching;
mod volume;

pub use claim::reconcile_claim;
pub use volume::reconcile_volume;

use super::Shared;
use crate::runtime::{Controller, backoff_policy};
use bosun_core::watch::Store;
use bosun_core::{Api, Client, Error, ObjectKey, PostParams};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Set on a claim once the controller has bound it.
pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// Set on a claim or volume whose binding the controller (not the user) made.
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// The node the scheduler chose for a delayed-binding claim.
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The provisioner that made a volume.
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// The provisioner expected to provision a claim.
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// Marks the default StorageClass.
pub const ANN_DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
/// The local-path provisioner's name.
pub const LOCAL_PATH_PROVISIONER: &str = "bosun.io/local-path";
/// The default StorageClass's name.
pub const DEFAULT_CLASS_NAME: &str = "local-path";

/// The local-path provisioner's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPathConfig {
    /// The directory under which each provisioned volume gets `<base_dir>/<pv-name>` on its node
    /// (default `/var/lib/bosun/local-path`).
    pub base_dir: PathBuf,
    /// Create the `local-path` StorageClass at start when missing; it is made the default class
    /// unless another class already is (default: true).
    pub default_class: bool,
    /// Remove a provisioned volume's directory when the volume is deleted (reclaim policy
    /// `Delete`). The controller does it itself, so this suits clusters whose nodes share its
    /// filesystem (the in-process cluster); turn it off when node agents run elsewhere (default: true).
    pub remove_data: bool,
}

impl Default for LocalPathConfig {
    fn default() -> Self {
        Self { base_dir: PathBuf::from("/var/lib/bosun/local-path"), default_class: true, remove_data: true }
    }
}

impl LocalPathConfig {
    /// Provisions under `dir` (default `/var/lib/bosun/local-path`).
    #[must_use]
    pub fn base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = dir.into();
        self
    }

    /// Whether to create the `local-path` StorageClass at start (default: true).
    #[must_use]
    pub fn default_class(mut self, on: bool) -> Self {
        self.default_class = on;
        self
    }

    /// Whether to remove a deleted volume's directory (default: true).
    #[must_use]
    pub fn remove_data(mut self, on: bool) -> Self {
        self.remove_data = on;
        self
    }
}

/// What both loops share.
pub struct PvCtx {
    shared: Shared,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
    nodes: Store<Node>,
    pods: Store<Pod>,
    config: LocalPathConfig,
}

impl PvCtx {
    /// The default StorageClass, if any (the most recently created when several are marked).
    fn default_class(&self) -> Option<Arc<StorageClass>> {
        let mut defaults: Vec<Arc<StorageClass>> = self.classes.list().into_iter().filter(|c| is_default_class(c)).collect();
        defaults.sort_by(|a, b| {
            let t = |c: &StorageClass| c.metadata.creation_timestamp.as_ref().map(|t| t.0);
            t(b).cmp(&t(a)).then_with(|| a.metadata.name.cmp(&b.metadata.name))
        });
        defaults.into_iter().next()
    }
}

/// Whether a class carries `storageclass.kubernetes.io/is-default-class: "true"`.
pub fn is_default_class(class: &StorageClass) -> bool {
    class.metadata.annotations.as_ref().and_then(|a| a.get(ANN_DEFAULT_CLASS)).is_some_and(|v| v == "true")
}

fn claim_ref_key(pv: &PersistentVolume) -> Option<ObjectKey> {
    let r = pv.spec.as_ref()?.claim_ref.as_ref()?;
    Some(ObjectKey::new(r.namespace.as_deref(), r.name.clone()?))
}

/// Builds the claim and volume controllers on `shared`'s informers.
pub fn controllers(
    shared: &Shared,
    config: LocalPathConfig,
) -> (Controller<PersistentVolumeClaim>, Controller<PersistentVolume>, Arc<PvCtx>) {
    let client = shared.client.clone();
    let claims = shared.informers.all::<PersistentVolumeClaim>().store().clone();
    let volumes = shared.informers.all::<PersistentVolume>().store().clone();
    let classes = shared.informers.all::<StorageClass>().store().clone();
    let nodes = shared.informers.all::<Node>().store().clone();
    let pods = shared.informers.all::<Pod>().store().clone();
    let unbound = {
        let claims = claims.clone();
        move |class: Option<&str>| {
            claims
                .list()
                .iter()
                .filter(|c| c.spec.as_ref().and_then(|s| s.volume_name.as_deref()).is_none_or(str::is_empty))
                .filter(|c| class.is_none_or(|class| matching::claim_class(c) == class))
                .map(|c| ObjectKey::of(&**c))
                .collect::<Vec<_>>()
        }
    };
    let on_class = unbound.clone();
    let claim_controller = shared
        .controller(Api::<PersistentVolumeClaim>::all(client.clone()), "persistentvolume-claim")
        // A volume's claim; a free volume may suit any waiting claim of its class.
        .watches(Api::<PersistentVolume>::all(client.clone()), move |pv: &PersistentVolume| match claim_ref_key(pv) {
            Some(key) => vec![key],
            None => unbound(Some(matching::volume_class(pv))),
        })
        .watches(Api::<StorageClass>::all(client.clone()), move |_c: &StorageClass| on_class(None));
    let by_claim = volumes.clone();
    let volume_controller = shared.controller(Api::<PersistentVolume>::all(client.clone()), "persistentvolume-binder").watches(
        Api::<PersistentVolumeClaim>::all(client),
        move |pvc: &PersistentVolumeClaim| {
            let key = ObjectKey::of(pvc);
            let mut out: Vec<ObjectKey> =
                by_claim.list().iter().filter(|pv| claim_ref_key(pv).as_ref() == Some(&key)).map(|pv| ObjectKey::of(&**pv)).collect();
            if let Some(v) = pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref()).filter(|v| !v.is_empty()) {
                out.push(ObjectKey::new(None, v));
            }
            out
        },
    );
    let ctx = Arc::new(PvCtx { shared: shared.clone(), claims, volumes, classes, nodes, pods, config });
    (claim_controller, volume_controller, ctx)
}

/// Creates the `local-path` StorageClass if it is missing (default class unless another is),
/// retrying until the API answers.
pub async fn ensure_default_class(client: &Arc<dyn Client>) {
    let api = Api::<StorageClass>::all(client.clone());
    let mut delay = Duration::from_millis(100);
    loop {
        match try_ensure_default_class(&api).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(%error, "could not create the default storage class; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn try_ensure_default_class(api: &Api<StorageClass>) -> Result<(), Error> {
    if api.get_opt(DEFAULT_CLASS_NAME).await?.is_some() {
        return Ok(());
    }
    let other_default = api.list(&Default::default()).await?.items.iter().any(is_default_class);
    let class = local_path_class(!other_default);
    match api.create(&class, &PostParams::default()).await {
        Ok(_) => Ok(()),
        Err(Error::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The `local-path` StorageClass (`WaitForFirstConsumer`, reclaim `Delete`).
pub fn local_path_class(default: bool) -> StorageClass {
    let annotations = default.then(|| [(ANN_DEFAULT_CLASS.to_owned(), "true".to_owned())].into());
    StorageClass {
        metadata: ObjectMeta { name: Some(DEFAULT_CLASS_NAME.into()), annotations, ..ObjectMeta::default() },
        provisioner: LOCAL_PATH_PROVISIONER.into(),
        reclaim_policy: Some("Delete".into()),
        volume_binding_mode: Some("WaitForFirstConsumer".into()),
        allow_volume_expansion: None,
        allowed_topologies: None,
        mount_options: None,
        parameters: None,
    }
}

/// Runs the controller: both loops, and the default class (when configured) alongside.
pub async fn run(shared: Shared, concurrency: usize, config: LocalPathConfig) {
    let client = shared.client.clone();
    let default_class = config.default_class;
    let (claims, volumes, ctx) = controllers(&shared, config);
    let claims = claims.concurrency(concurrency).run(reconcile_claim, backoff_policy, ctx.clone());
    let volumes = volumes.concurrency(concurrency).run(reconcile_volume, backoff_policy, ctx);
    let class = async move {
        if default_class {
            ensure_default_class(&client).await;
        }
    };
    futures::future::join3(class, claims, volumes).await;
}
