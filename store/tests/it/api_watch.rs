//! Watches through the in-process API server: resuming from a version, initial events, selectors,
//! bookmarks, expiry and slow watchers.

use crate::api::{TestResult, client, config_map, next_event, pod};
use bosun_core::k8s_openapi::api::core::v1::{ConfigMap, Pod};
use bosun_core::{Api, Bookmark, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use bosun_store::ApiServer;
use futures::StreamExt;
use serde_json::json;
use std::time::Duration;

fn name_of<K: bosun_core::Object>(ev: &WatchEvent<K>) -> String {
    match ev {
        WatchEvent::Added(k) | WatchEvent::Modified(k) | WatchEvent::Deleted(k) => k.name().to_owned(),
        _ => String::new(),
    }
}

#[tokio::test]
async fn a_watch_from_a_list_version_sees_every_later_change_in_order() -> TestResult {
    let cms = Api::<ConfigMap>::namespaced(client(), "default");
    cms.create(&config_map("before"), &PostParams::default()).await?;
    let list = cms.list(&ListParams::default()).await?;
    let mut stream = cms.watch(&WatchParams::default().from_version(list.resource_version())).await?;
    cms.create(&config_map("a"), &PostParams::default()).await?;
    cms.patch("a", &Patch::Merge(json!({"data": {"k": "v"}})), &PatchParams::default()).await?;
    cms.delete("a", &DeleteParams::default()).await?;
    let ev = next_event(&mut stream).await?;
    assert!(matches!(&ev, WatchEvent::Added(c) if c.metadata.name.as_deref() == Some("a")), "{ev:?}");
    let ev = next_event(&mut stream).await?;
    let WatchEvent::Modified(m) = ev else { return Err(format!("{ev:?}").into()) };
    assert_eq!(m.data.and_then(|d| d.get("k").cloned()).as_deref(), Some("v"));
    let ev = next_event(&mut stream).await?;
    let WatchEvent::Deleted(d) = ev else { return Err(format!("{ev:?}").into()) };
    // The deleted object carries the version of its deletion, later than its last write.
    let (dv, mv): (i64, i64) =
        (d.metadata.resource_version.unwrap_or_default().parse()?, m.metadata.resource_version.unwrap_or_default().parse()?);
    assert!(dv > mv);
    Ok(())
}

#[tokio::test]
async fn a_watch_from_zero_starts_with_the_current_state() -> TestResult {
    let cms = Api::<ConfigMap>::namespaced(client(), "default");
    cms.create(&config_map("x"), &PostParams::default()).await?;
    cms.create(&config_map("y"), &PostParams::default()).await?;
    let mut stream = cms.watch(&WatchParams::default().from_version("0")).await?;
    let a = next_event(&mut stream).await?;
    let b = next_event(&mut stream).await?;
    assert!(matches!(a, WatchEvent::Added(_)) && matches!(b, WatchEvent::Added(_)));
    let mut names = [name_of(&a), name_of(&b)];
    names.sort();
    assert_eq!(names, ["x", "y"]);
    cms.create(&config_map("z"), &PostParams::default()).await?;
    assert_eq!(name_of(&next_event(&mut stream).await?), "z");
    Ok(())
}

#[tokio::test]
async fn streaming_lists_end_their_initial_events_with_a_bookmark() -> TestResult {
    let cms = Api::<ConfigMap>::namespaced(client(), "default");
    cms.create(&config_map("x"), &PostParams::default()).await?;
    let params = WatchParams { send_initial_events: true, allow_bookmarks: true, ..WatchParams::default() };
    let mut stream = cms.watch(&params).await?;
    assert!(matches!(next_event(&mut stream).await?, WatchEvent::Added(_)));
    let ev = next_event(&mut stream).await?;
    let WatchEvent::Bookmark(b) = ev else { return Err(format!("{ev:?}").into()) };
    assert!(b.ends_initial_events());
    assert!(b.resource_version.parse::<i64>()? > 0);
    let _ = Bookmark::default();
    Ok(())
}

#[tokio::test]
async fn watchers_see_objects_enter_and_leave_their_selection() -> TestResult {
    let c = client();
    let pods = Api::<Pod>::namespaced(c.clone(), "default");
    pods.create(&pod("p"), &PostParams::default()).await?;
    let all = Api::<Pod>::all(c.clone());
    let mut on_node = all.watch(&WatchParams::default().fields("spec.nodeName=n1").from_version("0")).await?;
    let mut unbound = all.watch(&WatchParams::default().fields("spec.nodeName=").from_version("0")).await?;
    assert!(matches!(next_event(&mut unbound).await?, WatchEvent::Added(_)));
    pods.bind("p", "n1").await?;
    let ev = next_event(&mut on_node).await?;
    assert!(matches!(&ev, WatchEvent::Added(p) if p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("n1")), "{ev:?}");
    let ev = next_event(&mut unbound).await?;
    assert!(matches!(ev, WatchEvent::Deleted(_)), "{ev:?}");
    let mut labelled = all.watch(&WatchParams::default().labels("app=web").from_version("0")).await?;
    assert!(matches!(next_event(&mut labelled).await?, WatchEvent::Added(_)));
    pods.patch("p", &Patch::Merge(json!({"metadata": {"labels": {"app": "db"}}})), &PatchParams::default()).await?;
    assert!(matches!(next_event(&mut labelled).await?, WatchEvent::Deleted(_)));
    Ok(())
}

/// A watch resuming from a past version is served from the watch cache's history, which keeps
/// stored bytes: every event must read back as the version it wrote, with selections applied to
/// both the old and the new version.
#[tokio::test]
async fn a_watch_resuming_from_the_history_sees_objects_enter_and_leave_its_selection() -> TestResult {
    let c = client();
    let pods = Api::<Pod>::namespaced(c.clone(), "default");
    pods.create(&pod("stays"), &PostParams::default()).await?;
    pods.create(&pod("moves"), &PostParams::default()).await?;
    let start = pods.list(&ListParams::default()).await?.resource_version().to_owned();
    pods.bind("moves", "n1").await?;
    pods.create(&pod("late"), &PostParams::default()).await?;
    pods.patch("stays", &Patch::Merge(json!({"metadata": {"labels": {"tier": "front"}}})), &PatchParams::default()).await?;
    pods.delete("late", &DeleteParams::default()).await?;
    let all = Api::<Pod>::all(c.clone());
    let node = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
    let describe = |ev: &WatchEvent<Pod>| match ev {
        WatchEvent::Added(p) => format!("added {} on '{}'", name_of(ev), node(p)),
        WatchEvent::Modified(p) => format!("modified {} on '{}'", name_of(ev), node(p)),
        WatchEvent::Deleted(p) => format!("deleted {} on '{}'", name_of(ev), node(p)),
        other => format!("{other:?}"),
    };
    let mut seen = Vec::new();
    let mut unbound = all.watch(&WatchParams::default().fields("spec.nodeName=").from_version(start.clone())).await?;
    for _ in 0..4 {
        seen.push(describe(&next_event(&mut unbound).await?));
    }
    assert_eq!(seen, ["deleted moves on 'n1'", "added late on ''", "modified stays on ''", "deleted late on ''"]);
    let mut on_node = all.watch(&WatchParams::default().fields("spec.nodeName=n1").from_version(start.clone())).await?;
    assert_eq!(describe(&next_event(&mut on_node).await?), "added moves on 'n1'");
    let mut labelled = all.watch(&WatchParams::default().labels("tier=front").from_version(start.clone())).await?;
    let ev = next_event(&mut labelled).await?;
    assert_eq!(describe(&ev), "added stays on ''");
    let WatchEvent::Added(stays) = ev else { return Err("not added".into()) };
    assert_eq!(stays.metadata.labels.unwrap_or_default().get("tier").map(String::as_str), Some("front"));
    let mut everything = all.watch(&WatchParams::default().from_version(start)).await?;
    let mut versions = Vec::new();
    seen.clear();
    for _ in 0..4 {
        let ev = next_event(&mut everything).await?;
        if let WatchEvent::Added(p) | WatchEvent::Modified(p) | WatchEvent::Deleted(p) = &ev {
            versions.push(p.metadata.resource_version.clone().unwrap_or_default().parse::<i64>()?);
        }
        seen.push(describe(&ev));
    }
    assert_eq!(seen, ["modified moves on 'n1'", "added late on ''", "modified stays on ''", "deleted late on ''"]);
    // Each event carries the version of its own change, the deletion's included.
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    Ok(())
}

#[tokio::test]
async fn bookmarks_come_when_asked_for() -> TestResult {
    let server =
        ApiServer::builder(std::sync::Arc::new(bosun_store::MemoryStorage::new())).bookmark_interval(Duration::from_millis(50)).build()?;
    let cms = Api::<ConfigMap>::namespaced(server.clone(), "default");
    let list = cms.list(&ListParams::default()).await?;
    let mut stream = cms.watch(&WatchParams::default().from_version(list.resource_version()).bookmarks()).await?;
    let ev = next_event(&mut stream).await?;
    let WatchEvent::Bookmark(b) = ev else { return Err(format!("{ev:?}").into()) };
    assert!(b.resource_version.parse::<i64>()? >= list.resource_version().parse::<i64>()?);
    // Without asking, none come: the next event is the create.
    let mut quiet = cms.watch(&WatchParams::default().from_version(list.resource_version())).await?;
    tokio::time::sleep(Duration::from_millis(150)).await;
    cms.create(&config_map("after"), &PostParams::default()).await?;
    assert!(matches!(next_event(&mut quiet).await?, WatchEvent::Added(_)));
    Ok(())
}

#[tokio::test]
async fn a_watch_from_a_version_older_than_the_history_gets_410() -> TestResult {
    let server = ApiServer::builder(std::sync::Arc::new(bosun_store::MemoryStorage::new())).watch_history(3).build()?;
    let cms = Api::<ConfigMap>::namespaced(server.clone(), "default");
    let start = cms.list(&ListParams::default()).await?.resource_version().to_owned();
    for i in 0..10 {
        cms.create(&config_map(&format!("c{i}")), &PostParams::default()).await?;
    }
    // Let the cache see every write.
    cms.list(&ListParams::default()).await?;
    let mut stream = cms.watch(&WatchParams::default().from_version(start)).await?;
    let ev = next_event(&mut stream).await?;
    let WatchEvent::Error(status) = ev else { return Err(format!("{ev:?}").into()) };
    assert_eq!(status.code, Some(410));
    Ok(())
}

#[tokio::test]
async fn a_slow_watcher_is_ended_with_an_error() -> TestResult {
    let server = ApiServer::builder(std::sync::Arc::new(bosun_store::MemoryStorage::new())).watcher_queue(4).build()?;
    let cms = Api::<ConfigMap>::namespaced(server.clone(), "default");
    let rv = cms.list(&ListParams::default()).await?.resource_version().to_owned();
    let mut stream = cms.watch(&WatchParams::default().from_version(rv)).await?;
    for i in 0..20 {
        cms.create(&config_map(&format!("c{i}")), &PostParams::default()).await?;
    }
    let mut seen = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.next()).await? {
            Some(Ok(WatchEvent::Added(_))) => seen += 1,
            Some(Ok(WatchEvent::Error(status))) => {
                assert_eq!(status.code, Some(410));
                break;
            }
            other => return Err(format!("unexpected {other:?}").into()),
        }
    }
    assert!(seen < 20, "the slow watcher got every event");
    assert!(stream.next().await.is_none());
    Ok(())
}

#[tokio::test]
async fn a_watch_ends_after_its_timeout() -> TestResult {
    let cms = Api::<ConfigMap>::namespaced(client(), "default");
    let mut stream = cms.watch(&WatchParams::default().from_version("0").timeout(1)).await?;
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(ev) = stream.next().await {
            ev?;
        }
        Ok::<_, bosun_core::Error>(())
    })
    .await;
    assert!(matches!(ended, Ok(Ok(()))));
    Ok(())
}

#[tokio::test]
async fn a_watcher_on_streaming_lists_takes_its_state_from_the_watch_cache_and_keeps_watching() -> TestResult {
    use bosun_core::watch::{Event, WatcherConfig, watcher};
    let client = client();
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "default");
    for name in ["a", "b", "c"] {
        cms.create(&config_map(name), &PostParams::default()).await?;
    }
    let config = WatcherConfig::default().streaming_list(true);
    let mut events = Box::pin(watcher(cms.clone(), config));
    let mut next = async || -> Result<String, Box<dyn std::error::Error>> {
        let ev = tokio::time::timeout(Duration::from_secs(5), events.next()).await?.ok_or("watcher ended")??;
        Ok(match ev {
            Event::Init => "init".into(),
            Event::InitApply(c) => format!("init:{}", c.metadata.name.unwrap_or_default()),
            Event::InitDone => "done".into(),
            Event::Apply(c) => format!("apply:{}", c.metadata.name.unwrap_or_default()),
            Event::Delete(c) => format!("delete:{}", c.metadata.name.unwrap_or_default()),
        })
    };
    let mut initial = Vec::new();
    for _ in 0..5 {
        initial.push(next().await?);
    }
    assert_eq!(initial, ["init", "init:a", "init:b", "init:c", "done"]);
    // The same watch goes on with the changes after the initial state.
    cms.create(&config_map("d"), &PostParams::default()).await?;
    cms.delete("a", &DeleteParams::default()).await?;
    assert_eq!(next().await?, "apply:d");
    assert_eq!(next().await?, "delete:a");
    Ok(())
}
