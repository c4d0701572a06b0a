//! The in-process API server through `bosun_core::Client` and `Api<K>`: CRUD, defaulting,
//! validation, resourceVersion semantics, lists, watches and subresources.

use bosun_core::k8s_openapi::api::apps::v1::Deployment;
use bosun_core::k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use bosun_core::{
    Api, Client, DeleteParams, Deleted, DynamicObject, FieldValidation, ListParams, Patch, PatchParams, PostParams, VersionMatch,
    WatchEvent,
};
use bosun_store::ApiServer;
use futures::StreamExt;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

pub(crate) type TestResult = Result<(), Box<dyn std::error::Error>>;

pub(crate) fn client() -> Arc<dyn Client> {
    ApiServer::in_memory()
}

pub(crate) fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]},
    }))
    .unwrap_or_default()
}

pub(crate) fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}},
        },
    }))
    .unwrap_or_default()
}

pub(crate) fn config_map(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta { name: Some(name.into()), ..Default::default() },
        ..Default::default()
    }
}

pub(crate) async fn next_event<K>(
    stream: &mut futures::stream::BoxStream<'static, bosun_core::Result<WatchEvent<K>>>,
) -> Result<WatchEvent<K>, Box<dyn std::error::Error>> {
    match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
        Ok(Some(Ok(ev))) => Ok(ev),
        Ok(Some(Err(e))) => Err(e.into()),
        Ok(None) => Err("watch ended".into()),
        Err(_) => Err("no event within 5s".into()),
    }
}

#[tokio::test]
async fn the_initial_namespaces_exist() -> TestResult {
    let ns = Api::<Namespace>::all(client());
    let names: Vec<String> = ns.list(&ListParams::default()).await?.items.into_iter().filter_map(|n| n.metadata.name).collect();
    assert_eq!(names, ["default", "kube-node-lease", "kube-public", "kube-system"]);
    let default = ns.get("default").await?;
    assert_eq!(default.status.and_then(|s| s.phase).as_deref(), Some("Active"));
    assert_eq!(default.spec.and_then(|s| s.finalizers), Some(vec!["kubernetes".to_owned()]));
    Ok(())
}

#[tokio::test]
async fn create_fills_in_server_fields_and_defaults() -> TestResult {
    let pods = Api::<Pod>::namespaced(client(), "default");
    let created = pods.create(&pod("web"), &PostParams::default()).await?;
    let meta = &created.metadata;
    assert!(meta.uid.as_deref().is_some_and(|u| u.len() == 36));
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(meta.generation, Some(1));
    assert!(meta.resource_version.as_deref().is_some_and(|rv| rv.parse::<i64>().is_ok()));
    assert_eq!(meta.namespace.as_deref(), Some("default"));
    let spec = created.spec.clone().unwrap_or_default();
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    assert_eq!(spec.termination_grace_period_seconds, Some(30));
    assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
    assert_eq!(spec.scheduler_name.as_deref(), Some("default-scheduler"));
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
    assert_eq!(spec.containers[0].image_pull_policy.as_deref(), Some("Always"));
    assert_eq!(spec.containers[0].termination_message_path.as_deref(), Some("/dev/termination-log"));
    assert_eq!(spec.tolerations.as_ref().map(Vec::len), Some(2));
    let status = created.status.clone().unwrap_or_default();
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    assert_eq!(status.qos_class.as_deref(), Some("BestEffort"));
    assert_eq!(pods.get("web").await?, created);

    let deployments = Api::<Deployment>::namespaced(pods.client().clone(), "default");
    let d = deployments.create(&deployment("api", 2), &PostParams::default()).await?;
    let strategy = d.spec.strategy.clone().unwrap_or_default();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    let ru = strategy.rolling_update.unwrap_or_default();
    assert_eq!(ru.max_surge, Some(bosun_core::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("25%".into())));
    assert_eq!(d.spec.revision_history_limit, Some(10));
    assert_eq!(d.spec.progress_deadline_seconds, Some(600));
    Ok(())
}

/// A server given a clock stamps its time, not the system's, on what it creates, deletes and binds.
#[tokio::test]
async fn timestamps_come_from_the_servers_clock() -> TestResult {
    use bosun_core::k8s_openapi::jiff::Timestamp;
    let t0 = Timestamp::from_second(1_000_000_000)?;
    let now = Arc::new(std::sync::Mutex::new(t0));
    let clock = now.clone();
    let server = ApiServer::builder(Arc::new(bosun_store::MemoryStorage::new()))
        .clock(move || *clock.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
        .build()?;
    let pods = Api::<Pod>::namespaced(server.clone(), "default");
    let created = pods.create(&pod("p"), &PostParams::default()).await?;
    assert_eq!(created.metadata.creation_timestamp.map(|t| t.0), Some(t0));
    // Sub-second parts are cut, as Kubernetes timestamps have second precision.
    let later = Timestamp::from_millisecond(1_000_000_060_500)?;
    *now.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = later;
    pods.bind("p", "n1").await?;
    let bound = pods.get("p").await?;
    let scheduled = bound.status.and_then(|s| s.conditions).unwrap_or_default().into_iter().find(|c| c.type_ == "PodScheduled");
    assert_eq!(scheduled.and_then(|c| c.last_transition_time).map(|t| t.0), Some(Timestamp::from_second(1_000_000_060)?));
    pods.delete("p", &DeleteParams::default()).await?;
    let deleting = pods.get("p").await?;
    // The default grace period of 30 s runs from the server's now.
    assert_eq!(deleting.metadata.deletion_timestamp.map(|t| t.0), Some(Timestamp::from_second(1_000_000_090)?));
    Ok(())
}

#[tokio::test]
async fn generate_name_and_duplicates() -> TestResult {
    let cms = Api::<ConfigMap>::namespaced(client(), "default");
    let mut cm = config_map("");
    cm.metadata.name = None;
    cm.metadata.generate_name = Some("cfg-".into());
    let a = cms.create(&cm, &PostParams::default()).await?;
    let b = cms.create(&cm, &PostParams::default()).await?;
    let (an, bn) = (a.metadata.name.unwrap_or_default(), b.metadata.name.unwrap_or_default());
    assert!(an.starts_with("cfg-") && an.len() == 9, "{an}");
    assert_ne!(an, bn);
    cms.create(&config_map("fixed"), &PostParams::default()).await?;
    let err = cms.create(&config_map("fixed"), &PostParams::default()).await.err().ok_or("duplicate created")?;
    assert!(err.is_already_exists(), "{err:?}");
    let err = cms.create(&config_map(""), &PostParams::default()).await.err().ok_or("nameless created")?;
    assert_eq!(err.code(), 422);
    Ok(())
}

#[tokio::test]
async fn writes_into_missing_or_terminating_namespaces_are_refused() -> TestResult {
    let c = client();
    let err =
        Api::<ConfigMap>::namespaced(c.clone(), "nowhere").create(&config_map("x"), &PostParams::default()).await.err().ok_or("created")?;
    assert!(err.is_not_found(), "{err:?}");
    let ns = Api::<Namespace>::all(c.clone());
    let mut n = Namespace::default();
    n.metadata.name = Some("doomed".into());
    ns.create(&n, &PostParams::default()).await?;
    Api::<ConfigMap>::namespaced(c.clone(), "doomed").create(&config_map("before"), &PostParams::default()).await?;
    let deleted = ns.delete("doomed", &DeleteParams::default()).await?;
    let Deleted::Pending(gone) = deleted else { return Err("namespace deleted at once despite its finalizer".into()) };
    assert_eq!(gone.status.and_then(|s| s.phase).as_deref(), Some("Terminating"));
    let err = Api::<ConfigMap>::namespaced(c.clone(), "doomed")
        .create(&config_map("after"), &PostParams::default())
        .await
        .err()
        .ok_or("created")?;
    assert_eq!(err.code(), 403, "{err:?}");
    let err = ns.delete("kube-system", &DeleteParams::default()).await.err().ok_or("deleted kube-system")?;
    assert_eq!(err.code(), 403);
    // The namespace controller's last step: finalize empties spec.finalizers and the namespace goes.
    let body = DynamicObject::from_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "doomed"}, "spec": {"finalizers": []}}),
    )?;
    let res = bosun_core::resource::builtin("", "v1", "Namespace").ok_or("no namespaces")?;
    c.update_subresource(bosun_core::Target::new(res, None), "doomed", "finalize", &body, &PostParams::default()).await?;
    assert!(ns.get_opt("doomed").await?.is_none());
    Ok(())
}

#[tokio::test]
async fn validation_reports_field_causes() -> TestResult {
    let c = client();
    let mut bad = pod("Bad_Name");
    bad.spec.as_mut().ok_or("spec")?.containers[0].image = None;
    let err = Api::<Pod>::namespaced(c.clone(), "default").create(&bad, &PostParams::default()).await.err().ok_or("created")?;
    assert_eq!(err.code(), 422);
    let fields: Vec<String> = err.causes().iter().filter_map(|c| c.field.clone()).collect();
    assert!(fields.contains(&"metadata.name".to_owned()), "{fields:?}");
    assert!(fields.contains(&"spec.containers[0].image".to_owned()), "{fields:?}");

    let mut d = deployment("mismatch", 1);
    d.spec.template.metadata.as_mut().ok_or("meta")?.labels = Some([("app".to_owned(), "other".to_owned())].into());
    let err = Api::<Deployment>::namespaced(c.clone(), "default").create(&d, &PostParams::default()).await.err().ok_or("created")?;
    assert_eq!(err.causes().first().and_then(|c| c.field.as_deref()), Some("spec.template.metadata.labels"));

    // Selectors are immutable.
    let deployments = Api::<Deployment>::namespaced(c, "default");
    let mut d = deployments.create(&deployment("fixed", 1), &PostParams::default()).await?;
    d.spec.selector.match_labels = Some([("app".to_owned(), "changed".to_owned())].into());
    d.spec.template.metadata.as_mut().ok_or("meta")?.labels = Some([("app".to_owned(), "changed".to_owned())].into());
    let err = deployments.replace(&d, &PostParams::default()).await.err().ok_or("replaced")?;
    assert_eq!(err.code(), 422);
    assert_eq!(err.causes().first().and_then(|c| c.field.as_deref()), Some("spec.selector"));
    Ok(())
}

#[tokio::test]
async fn stale_updates_conflict_and_generation_tracks_the_spec() -> TestResult {
    let deployments = Api::<Deployment>::namespaced(client(), "default");
    let d1 = deployments.create(&deployment("web", 1), &PostParams::default()).await?;
    let mut d2 = d1.clone();
    d2.spec.replicas = Some(3);
    let d2 = deployments.replace(&d2, &PostParams::default()).await?;
    assert_eq!(d2.metadata.generation, Some(2));
    assert_ne!(d2.metadata.resource_version, d1.metadata.resource_version);
    // The first version is stale now.
    let mut stale = d1.clone();
    stale.spec.replicas = Some(5);
    let err = deployments.replace(&stale, &PostParams::default()).await.err().ok_or("stale write won")?;
    assert!(err.is_conflict(), "{err:?}");
    // Labels change metadata only: the generation stays.
    let d3 = deployments.patch("web", &Patch::Merge(json!({"metadata": {"labels": {"tier": "front"}}})), &PatchParams::default()).await?;
    assert_eq!(d3.metadata.generation, Some(2));
    // A write that changes nothing is not a write.
    let d4 = deployments.replace(&d3, &PostParams::default()).await?;
    assert_eq!(d4.metadata.resource_version, d3.metadata.resource_version);
    // Status goes through the subresource only, and does not bump the generation.
    let mut with_status = d4.clone();
    with_status.status = Some(bosun_core::k8s_openapi::api::apps::v1::DeploymentStatus { replicas: Some(3), ..Default::default() });
    let ignored = deployments.replace(&with_status, &PostParams::default()).await?;
    assert_eq!(ignored.status.and_then(|s| s.replicas), None);
    let s = deployments
        .patch_status(
            "web",
            &Patch::Merge(json!({"status": {"replicas": 3, "observedGeneration": 2}, "spec": {"replicas": 9}})),
            &PatchParams::default(),
        )
        .await?;
    assert_eq!(s.status.as_ref().and_then(|s| s.replicas), Some(3));
    assert_eq!(s.spec.replicas, Some(3));
    assert_eq!(s.metadata.generation, Some(2));
    Ok(())
}

#[tokio::test]
async fn patches_of_every_type() -> TestResult {
    let cms = Api::<ConfigMap>::namespaced(client(), "default");
    let mut cm = config_map("cfg");
    cm.data = Some([("a".to_owned(), "1".to_owned())].into());
    cms.create(&cm, &PostParams::default()).await?;
    let merged = cms.patch("cfg", &Patch::Merge(json!({"data": {"b": "2"}})), &PatchParams::default()).await?;
    assert_eq!(merged.data.as_ref().map(|d| d.len()), Some(2));
    let jp = cms.patch("cfg", &Patch::Json(json!([{"op": "remove", "path": "/data/a"}])), &PatchParams::default()).await?;
    assert_eq!(jp.data.as_ref().map(|d| d.keys().cloned().collect::<Vec<_>>()), Some(vec!["b".to_owned()]));
    let err = cms
        .patch("cfg", &Patch::Json(json!([{"op": "test", "path": "/data/b", "value": "x"}])), &PatchParams::default())
        .await
        .err()
        .ok_or("test passed")?;
    assert_eq!(err.code(), 422);
    let applied = cms
        .patch(
            "new",
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "new"}, "data": {"x": "y"}})),
            &PatchParams::apply("test"),
        )
        .await?;
    assert_eq!(applied.data.and_then(|d| d.get("x").cloned()).as_deref(), Some("y"));
    let err = cms.patch("missing", &Patch::Merge(json!({"data": {}})), &PatchParams::default()).await.err().ok_or("patched")?;
    assert!(err.is_not_found());
    Ok(())
}

#[tokio::test]
async fn strict_field_validation_refuses_unknown_fields() -> TestResult {
    let c = client();
    let res = bosun_core::resource::builtin("", "v1", "ConfigMap").ok_or("cm")?;
    let body = DynamicObject::from_value(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"a": "b"}, "bogus": 1}),
    )?;
    let strict = PostParams { field_validation: Some(FieldValidation::Strict), ..PostParams::default() };
    let err = c.create(bosun_core::Target::new(res, Some("default")), &body, &strict).await.err().ok_or("created")?;
    assert_eq!(err.code(), 400);
    assert!(err.to_string().contains("unknown field \"bogus\""), "{err}");
    // Ignore (and the default) drop it.
    let created = c.create(bosun_core::Target::new(res, Some("default")), &body, &PostParams::default()).await?;
    assert!(created.data.get("bogus").is_none());
    let body = DynamicObject::from_value(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "x", "imagee": "typo"}]}}))?;
    let pods = bosun_core::resource::builtin("", "v1", "Pod").ok_or("pods")?;
    let err = c.create(bosun_core::Target::new(pods, Some("default")), &body, &strict).await.err().ok_or("created")?;
    assert!(err.to_string().contains("spec.containers[0].imagee"), "{err}");
    Ok(())
}

#[tokio::test]
async fn lists_page_with_continue_tokens_and_honour_resource_versions() -> TestResult {
    let c = client();
    let cms = Api::<ConfigMap>::namespaced(c.clone(), "default");
    for i in 0..25 {
        cms.create(&config_map(&format!("cm-{i:02}")), &PostParams::default()).await?;
    }
    let first = cms.list(&ListParams::default().limit(10)).await?;
    assert_eq!(first.items.len(), 10);
    let token = first.continue_token().ok_or("no token")?.to_owned();
    let rv = first.resource_version().to_owned();
    // A write between pages does not show up: pages are a snapshot at the first page's version.
    cms.create(&config_map("cm-99"), &PostParams::default()).await?;
    let all = cms.list_all(&ListParams::default().limit(10)).await?;
    assert_eq!(all.items.len(), 26);
    let second = cms.list(&ListParams::default().limit(10).continue_from(token.clone())).await?;
    assert_eq!(second.resource_version(), rv);
    let third = cms.list(&ListParams::default().limit(10).continue_from(second.continue_token().ok_or("no token")?)).await?;
    assert_eq!(third.items.len(), 5);
    assert!(third.continue_token().is_none());
    // An exact read sees the old state.
    let exact = cms.list(&ListParams::default().at(rv.clone(), VersionMatch::Exact)).await?;
    assert_eq!(exact.items.len(), 25);
    let latest = cms.list(&ListParams::default()).await?;
    assert_eq!(latest.items.len(), 26);
    let any = cms.list(&ListParams { resource_version: Some("0".into()), ..ListParams::default() }).await?;
    assert!(any.items.len() >= 25);
    // Once compacted, the token expires with 410.
    let server = ApiServer::in_memory();
    let cms = Api::<ConfigMap>::namespaced(server.clone(), "default");
    for i in 0..5 {
        cms.create(&config_map(&format!("c{i}")), &PostParams::default()).await?;
    }
    let page = cms.list(&ListParams::default().limit(2)).await?;
    cms.create(&config_map("later"), &PostParams::default()).await?;
    let now = server.storage().current_revision().await?;
    server.storage().compact(now).await?;
    let err = cms.list(&ListParams::default().limit(2).continue_from(page.continue_token().ok_or("token")?)).await.err().ok_or("served")?;
    assert_eq!((err.code(), err.reason()), (410, "Expired"), "{err:?}");
    let fresh = err.to_status().metadata.continue_.ok_or("no fresh token")?;
    let rest = cms.list(&ListParams::default().limit(100).continue_from(fresh)).await?;
    assert!(!rest.items.is_empty());
    Ok(())
}

#[tokio::test]
async fn lists_filter_by_labels_and_fields() -> TestResult {
    let c = client();
    let pods = Api::<Pod>::namespaced(c.clone(), "default");
    for (name, app) in [("a", "web"), ("b", "web"), ("c", "db")] {
        let mut p = pod(name);
        p.metadata.labels = Some([("app".to_owned(), app.to_owned())].into());
        pods.create(&p, &PostParams::default()).await?;
    }
    pods.bind("a", "node-1").await?;
    let web = pods.list(&ListParams::default().labels("app=web")).await?;
    assert_eq!(web.items.len(), 2);
    let notweb = pods.list(&ListParams::default().labels("app!=web")).await?;
    assert_eq!(notweb.items.len(), 1);
    let on_node = Api::<Pod>::all(c.clone()).list(&ListParams::default().fields("spec.nodeName=node-1")).await?;
    assert_eq!(on_node.items.iter().filter_map(|p| p.metadata.name.clone()).collect::<Vec<_>>(), ["a"]);
    let unbound = pods.list(&ListParams::default().fields("spec.nodeName=")).await?;
    assert_eq!(unbound.items.len(), 2);
    let named = pods.list(&ListParams::default().fields("metadata.name=b")).await?;
    assert_eq!(named.items.len(), 1);
    let pending = pods.list(&ListParams::default().fields("status.phase=Pending,metadata.namespace=default")).await?;
    assert_eq!(pending.items.len(), 3);
    let err = pods.list(&ListParams::default().fields("spec.bogus=x")).await.err().ok_or("listed")?;
    assert_eq!(err.code(), 400);
    let other_ns = Api::<Pod>::namespaced(c, "kube-system").list(&ListParams::default()).await?;
    assert!(other_ns.items.is_empty());
    Ok(())
}

#[tokio::test]
async fn many_writers_on_one_object_lose_no_update() -> TestResult {
    let c = client();
    let cms = Api::<ConfigMap>::namespaced(c.clone(), "default");
    cms.create(&config_map("counter"), &PostParams::default()).await?;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let cms = cms.clone();
        tasks.push(tokio::spawn(async move {
            cms.patch("counter", &Patch::Merge(json!({"data": {format!("k{i}"): "v"}})), &PatchParams::default()).await.map(drop)
        }));
    }
    for t in tasks {
        t.await??;
    }
    assert_eq!(cms.get("counter").await?.data.map(|d| d.len()), Some(20));
    Ok(())
}

#[tokio::test]
async fn a_service_gets_the_kubernetes_defaults() -> TestResult {
    let services = Api::<Service>::namespaced(client(), "default");
    let svc: Service =
        serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}))?;
    let svc = services.create(&svc, &PostParams::default()).await?;
    let spec = svc.spec.unwrap_or_default();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(spec.session_affinity.as_deref(), Some("None"));
    let port = spec.ports.unwrap_or_default().pop().ok_or("no port")?;
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    assert_eq!(port.target_port, Some(bosun_core::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(80)));
    Ok(())
}

#[tokio::test]
async fn strategic_merge_and_server_side_apply() -> TestResult {
    let deployments = Api::<Deployment>::namespaced(client(), "default");
    let mut d = deployment("web", 1);
    d.spec.template.spec.as_mut().ok_or("spec")?.containers.push(serde_json::from_value(json!({"name": "side", "image": "busybox"}))?);
    deployments.create(&d, &PostParams::default()).await?;
    // Containers merge by name: only `c` changes, `side` stays.
    let patched = deployments
        .patch(
            "web",
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}}})),
            &PatchParams::default(),
        )
        .await?;
    let containers = patched.spec.template.spec.clone().ok_or("spec")?.containers;
    assert_eq!(containers.len(), 2);
    assert_eq!(containers.iter().find(|c| c.name == "c").and_then(|c| c.image.as_deref()), Some("nginx:2"));
    assert_eq!(patched.metadata.generation, Some(2));

    // Server-side apply records its manager, refuses another manager's conflicting change, and forces.
    let cms = Api::<ConfigMap>::namespaced(deployments.client().clone(), "default");
    let intent = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "1"}});
    let cm = cms.patch("ssa", &Patch::Apply(intent), &PatchParams::apply("alice")).await?;
    let managers: Vec<String> = cm.metadata.managed_fields.unwrap_or_default().into_iter().filter_map(|m| m.manager).collect();
    assert_eq!(managers, ["alice"]);
    let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "2"}});
    let err = cms.patch("ssa", &Patch::Apply(other.clone()), &PatchParams::apply("bob")).await.err().ok_or("no conflict")?;
    assert_eq!(err.code(), 409);
    assert!(!err.causes().is_empty());
    let forced = cms.patch("ssa", &Patch::Apply(other), &PatchParams::apply("bob").force()).await?;
    assert_eq!(forced.data.and_then(|d| d.get("a").cloned()).as_deref(), Some("2"));
    // Ordinary writes are recorded as updates.
    let updated = cms
        .patch(
            "ssa",
            &Patch::Merge(json!({"data": {"b": "x"}})),
            &PatchParams { field_manager: Some("carol".into()), ..PatchParams::default() },
        )
        .await?;
    let ops: Vec<(String, String)> = updated
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|m| (m.manager.unwrap_or_default(), m.operation.unwrap_or_default()))
        .collect();
    assert!(ops.contains(&("carol".to_owned(), "Update".to_owned())), "{ops:?}");
    let err = cms
        .patch("ssa", &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap"})), &PatchParams::default())
        .await
        .err()
        .ok_or("no manager")?;
    // PatchOptions without a fieldManager for an apply: 422, as kube-apiserver validates options.
    assert_eq!(err.code(), 422);
    Ok(())
}
