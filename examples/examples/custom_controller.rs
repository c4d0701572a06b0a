//! A custom controller written with the bosun controller runtime: every ConfigMap labelled
//! `example.com/mirror=true` gets a `<name>-mirror` copy that it owns; the copy follows edits and is
//! garbage-collected with its source. Runs in-process against the embedded API server.
//!
//! `cargo run -p bosun-examples --example custom_controller`

use bosun_controllers::runtime::{Action, Controller, backoff_policy};
use bosun_controllers::{ControllerManager, ManagerConfig};
use bosun_core::meta::controller_ref;
use bosun_core::{Api, Client, Object, Patch, PatchParams, PostParams};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::sync::Arc;
use std::time::Duration;

const LABEL: &str = "example.com/mirror";

/// What every reconcile shares.
struct Ctx {
    client: Arc<dyn Client>,
}

/// Makes the mirror match its source; the runtime calls this for every change to either.
async fn reconcile(source: Arc<ConfigMap>, ctx: Arc<Ctx>) -> Result<Action, bosun_core::Error> {
    let wanted = source.metadata.labels.as_ref().and_then(|l| l.get(LABEL)).is_some_and(|v| v == "true");
    if !wanted || source.name().ends_with("-mirror") {
        return Ok(Action::await_change());
    }
    let ns = source.namespace().unwrap_or("default");
    let api = Api::<ConfigMap>::namespaced(ctx.client.clone(), ns);
    let mirror = ConfigMap {
        metadata: ObjectMeta {
            name: Some(format!("{}-mirror", source.name())),
            owner_references: Some(vec![controller_ref(&*source)]),
            ..ObjectMeta::default()
        },
        data: source.data.clone(),
        ..ConfigMap::default()
    };
    // Server-side apply: create or update in one idempotent call.
    let body = serde_json::to_value(&mirror).map_err(|e| bosun_core::Error::internal(e.to_string()))?;
    let mut body = body;
    body["apiVersion"] = "v1".into();
    body["kind"] = "ConfigMap".into();
    api.patch(mirror.name(), &Patch::Apply(body), &PatchParams::apply("mirror-controller").force()).await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client: Arc<dyn Client> = bosun_store::ApiServer::in_memory();
    // The built-in garbage collector removes mirrors whose source is deleted.
    let manager = ControllerManager::new(client.clone()).config(ManagerConfig::default().only(&["garbagecollector"]));
    let _builtins = manager.spawn_all();

    let controller = Controller::new(Api::<ConfigMap>::all(client.clone())).owns(Api::<ConfigMap>::all(client.clone())).concurrency(4).run(
        reconcile,
        backoff_policy,
        Arc::new(Ctx { client: client.clone() }),
    );
    tokio::spawn(controller);

    let api = Api::<ConfigMap>::namespaced(client.clone(), "default");
    let source = ConfigMap {
        metadata: ObjectMeta {
            name: Some("settings".into()),
            labels: Some([(LABEL.to_owned(), "true".to_owned())].into()),
            ..ObjectMeta::default()
        },
        data: Some([("greeting".to_owned(), "hello".to_owned())].into()),
        ..ConfigMap::default()
    };
    api.create(&source, &PostParams::default()).await?;
    for _ in 0..100 {
        if let Some(m) = api.get_opt("settings-mirror").await? {
            println!("mirror created: {:?}", m.data);
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("the mirror did not appear".into())
}
