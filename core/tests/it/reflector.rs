//! The watcher and informer recover as client-go's reflector does: resume, relist on 410, back off.

use crate::fake::{Call, FakeClient, WatchScript, page, pod};
use bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use bosun_core::watch::{Backoff, Change, Event, Informer, ReflectorState, WatcherConfig, watcher};
use bosun_core::{Api, Bookmark, DynamicObject, Error, Object, WatchEvent};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;

fn api(client: &Arc<FakeClient>) -> Api<DynamicObject> {
    let resource = bosun_core::resource::builtin("", "v1", "Pod").cloned().unwrap_or_else(|| unreachable!());
    Api::dynamic(client.clone(), resource, Some("ns"))
}

fn config() -> WatcherConfig {
    WatcherConfig::default().backoff(Backoff::new(Duration::from_millis(800), Duration::from_secs(30)).jitter(0.0))
}

fn describe(ev: &Result<Event<DynamicObject>, bosun_core::watch::WatchError>) -> String {
    match ev {
        Ok(Event::Init) => "init".into(),
        Ok(Event::InitApply(o)) => format!("init:{}@{}", o.name(), o.resource_version()),
        Ok(Event::InitDone) => "done".into(),
        Ok(Event::Apply(o)) => format!("apply:{}@{}", o.name(), o.resource_version()),
        Ok(Event::Delete(o)) => format!("delete:{}@{}", o.name(), o.resource_version()),
        Err(e) => format!("error:{}", e.api_error().code()),
    }
}

fn gone() -> Status {
    Error::expired("too old resource version: 5 (10)").to_status()
}

#[tokio::test(start_paused = true)]
async fn a_dropped_watch_resumes_from_the_last_version_seen() {
    let client = Arc::new(FakeClient::default());
    client.list_answer(Ok(page("10", vec![pod("a", "9")], None)));
    client.watch_answer(WatchScript::Events(vec![
        Ok(WatchEvent::Added(pod("b", "11"))),
        Ok(WatchEvent::Bookmark(Bookmark { resource_version: "15".into(), ..Bookmark::default() })),
    ]));
    client.watch_answer(WatchScript::EventsThenHang(vec![Ok(WatchEvent::Deleted(pod("a", "16")))]));
    let events: Vec<String> = watcher(api(&client), config()).take(5).map(|e| describe(&e)).collect().await;
    assert_eq!(events, ["init", "init:a@9", "done", "apply:b@11", "delete:a@16"]);
    assert_eq!(
        client.calls(),
        [
            Call::List { continue_token: None },
            Call::Watch { resource_version: Some("10".into()) },
            // Resumed from the bookmark's version, without a relist.
            Call::Watch { resource_version: Some("15".into()) },
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn gone_relists_without_waiting_and_pages_are_followed() {
    let client = Arc::new(FakeClient::default());
    client.list_answer(Ok(page("10", vec![pod("a", "9")], Some("tok"))));
    client.list_answer(Ok(page("10", vec![pod("b", "10")], None)));
    client.watch_answer(WatchScript::Events(vec![Ok(WatchEvent::Error(gone()))]));
    client.list_answer(Ok(page("20", vec![pod("b", "18")], None)));
    client.watch_answer(WatchScript::EventsThenHang(vec![]));
    let start = tokio::time::Instant::now();
    let events: Vec<String> = watcher(api(&client), config()).take(8).map(|e| describe(&e)).collect().await;
    assert_eq!(events, ["init", "init:a@9", "init:b@10", "done", "error:410", "init", "init:b@18", "done"]);
    assert_eq!(
        client.calls(),
        [
            Call::List { continue_token: None },
            Call::List { continue_token: Some("tok".into()) },
            Call::Watch { resource_version: Some("10".into()) },
            Call::List { continue_token: None },
        ]
    );
    assert_eq!(start.elapsed(), Duration::ZERO, "a 410 relists at once");
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_exponentially_and_success_resets() {
    let client = Arc::new(FakeClient::default());
    for _ in 0..3 {
        client.list_answer(Err(Error::internal("etcd down")));
    }
    client.list_answer(Ok(page("10", vec![], None)));
    client.watch_answer(WatchScript::Fail(Error::unavailable("restarting")));
    client.watch_answer(WatchScript::EventsThenHang(vec![Ok(WatchEvent::Added(pod("a", "11")))]));
    let events: Vec<String> = watcher(api(&client), config()).take(7).map(|e| describe(&e)).collect().await;
    assert_eq!(events, ["error:500", "error:500", "error:500", "init", "done", "error:503", "apply:a@11"]);
    let times = client.call_times();
    let gaps: Vec<u128> = times.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
    // list, list (+800), list (+1600), list ok (+3200), watch fails at once, watch again after a fresh 800.
    assert_eq!(gaps, [800, 1600, 3200, 0, 800]);
}

#[tokio::test(start_paused = true)]
async fn a_watch_stream_error_that_is_not_gone_resumes_after_a_backoff() {
    let client = Arc::new(FakeClient::default());
    client.list_answer(Ok(page("10", vec![], None)));
    client.watch_answer(WatchScript::Events(vec![Ok(WatchEvent::Added(pod("a", "12"))), Err(Error::internal("connection reset"))]));
    client.watch_answer(WatchScript::EventsThenHang(vec![]));
    let mut stream = std::pin::pin!(watcher(api(&client), config()));
    let mut events = Vec::new();
    for _ in 0..4 {
        events.extend(stream.next().await.map(|e| describe(&e)));
    }
    assert_eq!(events, ["init", "done", "apply:a@12", "error:500"]);
    // Poll on while the backoff passes so that the watcher restarts the watch.
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.next()).await;
    assert_eq!(client.calls().last(), Some(&Call::Watch { resource_version: Some("12".into()) }));
}

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn informers_keep_the_cache_and_subscribers_in_step_across_relists() {
    let client = Arc::new(FakeClient::default());
    client.list_answer(Ok(page("10", vec![pod("a", "9"), pod("b", "10")], None)));
    client.watch_answer(WatchScript::Events(vec![Ok(WatchEvent::Modified(pod("a", "11"))), Ok(WatchEvent::Error(gone()))]));
    client.list_answer(Ok(page("30", vec![pod("a", "11"), pod("c", "25")], None)));
    client.watch_answer(WatchScript::EventsThenHang(vec![]));
    let informer = Informer::spawn(api(&client), config());
    let mut changes = informer.subscribe();
    informer.wait_ready().await;
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let Some(change) = changes.next().await else { break };
        seen.push(match change {
            Change::Applied(o) => format!("+{}@{}", o.name(), o.resource_version()),
            Change::Deleted(o) => format!("-{}", o.name()),
            Change::Resync => "resync".into(),
        });
    }
    seen[..2].sort();
    seen[3..].sort();
    // First list (a, b), the watch's change to a, then the relist: b vanished, c appeared, a unchanged.
    assert_eq!(seen, ["+a@9", "+b@10", "+a@11", "+c@25", "-b"]);
    let mut names: Vec<String> = informer.store().list().iter().map(|o| o.name().to_owned()).collect();
    names.sort();
    assert_eq!(names, ["a", "c"]);
    assert_eq!(informer.state(), ReflectorState::Ready);
}

#[tokio::test(start_paused = true)]
async fn the_state_tells_forbidden_and_missing_kinds_from_a_hang() {
    let client = Arc::new(FakeClient::default());
    client.list_answer(Err(Error::forbidden("pods is forbidden")));
    let informer = Informer::spawn(api(&client), config());
    settle().await;
    assert!(matches!(informer.state(), ReflectorState::Forbidden { .. }), "{:?}", informer.state());

    let client = Arc::new(FakeClient::default());
    client.list_answer(Err(Error::not_found("example.com", "widgets", "")));
    let informer = Informer::spawn(api(&client), config());
    settle().await;
    assert!(matches!(informer.state(), ReflectorState::KindMissing { .. }), "{:?}", informer.state());

    let client = Arc::new(FakeClient::default());
    client.list_answer(Err(Error::internal("boom")));
    client.list_answer(Ok(page("1", vec![], None)));
    let informer = Informer::spawn(api(&client), config());
    settle().await;
    assert!(matches!(informer.state(), ReflectorState::BackingOff { .. }), "{:?}", informer.state());
    assert!(!informer.store().is_ready());
    informer.wait_ready().await;
    assert_eq!(informer.state(), ReflectorState::Ready);
}

fn with_managed_fields(mut obj: DynamicObject) -> DynamicObject {
    use bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    obj.metadata.managed_fields =
        Some(vec![ManagedFieldsEntry { manager: Some("kubectl".into()), operation: Some("Update".into()), ..Default::default() }]);
    obj
}

#[tokio::test(start_paused = true)]
async fn factory_informers_drop_managed_fields_unless_asked_to_keep_them() {
    let managed = |informer: &Informer<DynamicObject>| -> Vec<bool> {
        let mut objs = informer.store().list();
        objs.sort_by(|a, b| a.name().cmp(b.name()));
        objs.iter().map(|o| o.metadata.managed_fields.is_some()).collect()
    };
    let script = |client: &FakeClient| {
        client.list_answer(Ok(page("10", vec![with_managed_fields(pod("a", "9"))], None)));
        client.watch_answer(WatchScript::EventsThenHang(vec![Ok(WatchEvent::Added(with_managed_fields(pod("b", "11"))))]));
    };
    let resource = bosun_core::resource::builtin("", "v1", "Pod").cloned().unwrap_or_else(|| unreachable!());

    let client = Arc::new(FakeClient::default());
    script(&client);
    let informer = bosun_core::watch::Informers::new(client.clone()).dynamic(resource.clone(), Some("ns"));
    informer.wait_ready().await;
    settle().await;
    assert_eq!(managed(&informer), [false, false], "listed and watched objects are stripped");

    let client = Arc::new(FakeClient::default());
    script(&client);
    let informer = bosun_core::watch::Informers::new(client.clone()).keep_managed_fields(true).dynamic(resource, Some("ns"));
    informer.wait_ready().await;
    settle().await;
    assert_eq!(managed(&informer), [true, true]);

    let client = Arc::new(FakeClient::default());
    script(&client);
    let informer = Informer::spawn(api(&client), config());
    informer.wait_ready().await;
    settle().await;
    assert_eq!(managed(&informer), [true, true], "a plain informer keeps what the server sent");
}
