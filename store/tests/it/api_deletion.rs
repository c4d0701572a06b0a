//! Deletion through the in-process API server: graceful pod deletion, finalizers, propagation
//! policies and preconditions.

use crate::api::{TestResult, client, config_map, pod};
use bosun_core::k8s_openapi::api::core::v1::{ConfigMap, Pod};
use bosun_core::{Api, DeleteParams, Deleted, ListParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;

#[tokio::test]
async fn a_bound_pod_is_deleted_gracefully() -> TestResult {
    let pods = Api::<Pod>::namespaced(client(), "default");
    pods.create(&pod("p"), &PostParams::default()).await?;
    pods.bind("p", "n1").await?;
    let Deleted::Pending(p) = pods.delete("p", &DeleteParams::default()).await? else {
        return Err("a running pod went at once".into());
    };
    assert!(p.metadata.deletion_timestamp.is_some());
    assert_eq!(p.metadata.deletion_grace_period_seconds, Some(30));
    // A second delete may shorten the grace period; zero removes the pod (what the node agent does).
    let Deleted::Pending(p) = pods.delete("p", &DeleteParams::default().grace_period(5)).await? else { return Err("gone".into()) };
    assert_eq!(p.metadata.deletion_grace_period_seconds, Some(5));
    assert!(matches!(pods.delete("p", &DeleteParams::default().grace_period(0)).await?, Deleted::Now(_)));
    assert!(pods.get_opt("p").await?.is_none());
    // An unscheduled pod goes at once.
    pods.create(&pod("q"), &PostParams::default()).await?;
    assert!(matches!(pods.delete("q", &DeleteParams::default()).await?, Deleted::Now(_)));
    Ok(())
}

#[tokio::test]
async fn finalizers_hold_an_object_until_they_are_removed() -> TestResult {
    let cms = Api::<ConfigMap>::namespaced(client(), "default");
    let mut cm = config_map("held");
    cm.metadata.finalizers = Some(vec!["example.com/cleanup".into()]);
    cms.create(&cm, &PostParams::default()).await?;
    let Deleted::Pending(held) = cms.delete("held", &DeleteParams::default()).await? else {
        return Err("deleted despite a finalizer".into());
    };
    assert!(held.metadata.deletion_timestamp.is_some());
    // No new finalizers on an object that is going away.
    let err = cms
        .patch(
            "held",
            &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/cleanup", "example.com/more"]}})),
            &PatchParams::default(),
        )
        .await
        .err()
        .ok_or("finalizer added")?;
    assert_eq!(err.code(), 422);
    cms.patch("held", &Patch::Merge(json!({"metadata": {"finalizers": null}})), &PatchParams::default()).await?;
    assert!(cms.get_opt("held").await?.is_none());
    Ok(())
}

#[tokio::test]
async fn propagation_policies_become_finalizers() -> TestResult {
    let cms = Api::<ConfigMap>::namespaced(client(), "default");
    cms.create(&config_map("fg"), &PostParams::default()).await?;
    let Deleted::Pending(fg) = cms.delete("fg", &DeleteParams::foreground()).await? else { return Err("foreground went at once".into()) };
    assert_eq!(fg.metadata.finalizers, Some(vec!["foregroundDeletion".to_owned()]));
    cms.create(&config_map("or"), &PostParams::default()).await?;
    let Deleted::Pending(or) = cms.delete("or", &DeleteParams::orphan()).await? else { return Err("orphan went at once".into()) };
    assert_eq!(or.metadata.finalizers, Some(vec!["orphan".to_owned()]));
    cms.create(&config_map("bg"), &PostParams::default()).await?;
    assert!(matches!(cms.delete("bg", &DeleteParams::background()).await?, Deleted::Now(_)));
    Ok(())
}

#[tokio::test]
async fn delete_preconditions_and_collections() -> TestResult {
    let cms = Api::<ConfigMap>::namespaced(client(), "default");
    let created = cms.create(&config_map("pre"), &PostParams::default()).await?;
    let wrong = DeleteParams {
        preconditions: Some(Preconditions { uid: Some("nope".into()), ..Preconditions::default() }),
        ..DeleteParams::default()
    };
    assert_eq!(cms.delete("pre", &wrong).await.err().map(|e| e.code()), Some(409));
    let right = DeleteParams {
        preconditions: Some(Preconditions {
            uid: created.metadata.uid.clone(),
            resource_version: created.metadata.resource_version.clone(),
        }),
        ..DeleteParams::default()
    };
    assert!(matches!(cms.delete("pre", &right).await?, Deleted::Now(_)));
    assert!(cms.delete("pre", &DeleteParams::default()).await.err().is_some_and(|e| e.is_not_found()));
    for i in 0..4 {
        let mut cm = config_map(&format!("bulk-{i}"));
        cm.metadata.labels = Some([("set".to_owned(), if i < 3 { "a" } else { "b" }.to_owned())].into());
        cms.create(&cm, &PostParams::default()).await?;
    }
    let gone = cms.delete_collection(&ListParams::default().labels("set=a"), &DeleteParams::default()).await?;
    assert_eq!(gone.len(), 3);
    assert_eq!(cms.list(&ListParams::default()).await?.items.len(), 1);
    // Dry run deletes nothing.
    let dry = DeleteParams { dry_run: true, ..DeleteParams::default() };
    cms.delete("bulk-3", &dry).await?;
    assert!(cms.get_opt("bulk-3").await?.is_some());
    Ok(())
}

#[tokio::test]
async fn events_expire_after_their_ttl() -> TestResult {
    use bosun_core::k8s_openapi::api::core::v1::Event;
    let server = bosun_store::ApiServer::builder(std::sync::Arc::new(bosun_store::MemoryStorage::new()))
        .event_ttl(std::time::Duration::from_millis(500))
        .build()?;
    let events = Api::<Event>::namespaced(server.clone(), "default");
    let ev: Event = serde_json::from_value(json!({
        "metadata": {"name": "e1"}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
        "reason": "Started", "message": "started", "type": "Normal",
    }))?;
    events.create(&ev, &PostParams::default()).await?;
    assert!(events.get_opt("e1").await?.is_some());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while events.get_opt("e1").await?.is_some() {
        if std::time::Instant::now() > deadline {
            return Err("the event outlived its TTL".into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(())
}
