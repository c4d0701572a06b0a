//! JSON watches over HTTP: the server's fast path, which sends each change's JSON encoded once for
//! all its watchers, shows exactly what encoding every event for each watcher on its own shows.

use crate::http::{TestResult, call, start};
use crate::http_fields::widget_crd;
use bosun_store::http::{HttpConfig, Server, serve};
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};

const JSON: (&str, &str) = ("content-type", "application/json");

/// The events of a watch that ends by its own `timeoutSeconds`.
async fn events(server: &Server, path: &str) -> Result<Vec<Value>, Box<dyn std::error::Error>> {
    let reply = call(server, Method::GET, path, &[], Bytes::new()).await?;
    assert_eq!(reply.status, StatusCode::OK, "{path}: {:?}", reply.body);
    let text = String::from_utf8(reply.body.to_vec())?;
    assert!(text.is_empty() || text.ends_with('\n'), "{path}: {text}");
    Ok(text.lines().map(serde_json::from_str).collect::<Result<_, _>>()?)
}

async fn send(server: &Server, method: Method, path: &str, body: Value) -> Result<Value, Box<dyn std::error::Error>> {
    let reply = call(server, method, path, &[JSON], serde_json::to_vec(&body)?).await?;
    assert!(reply.status.is_success(), "{path}: {} {:?}", reply.status, reply.body);
    Ok(reply.json())
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap_or_default()).collect()
}

#[tokio::test]
async fn shared_encodings_show_what_encoding_each_watcher_alone_shows() -> TestResult {
    let (api, fast) = start().await?;
    // The same API server behind a server without the encoded fast path.
    let plain = serve(api.clone(), HttpConfig::new().catalog(api.clone())).await?;
    send(&fast, Method::POST, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", widget_crd()).await?;
    let cms = "/api/v1/namespaces/default/configmaps";
    let widgets = "/apis/example.com/v1/namespaces/default/widgets";
    let start_rv = send(&fast, Method::POST, cms, json!({"metadata": {"name": "first"}})).await?["metadata"]["resourceVersion"].clone();
    let start_rv = start_rv.as_str().unwrap_or_default().to_owned();

    let cm = |name: &str, app: &str, v: &str| json!({"metadata": {"name": name, "labels": {"app": app}}, "data": {"k": v}});
    send(&fast, Method::POST, cms, cm("a", "x", "1")).await?;
    send(&fast, Method::POST, cms, cm("b", "x", "1")).await?;
    send(&fast, Method::PUT, &format!("{cms}/a"), cm("a", "x", "2")).await?;
    send(&fast, Method::PUT, &format!("{cms}/a"), cm("a", "y", "3")).await?;
    send(&fast, Method::DELETE, &format!("{cms}/b"), json!({})).await?;
    let widget =
        |v: u32| json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"tags": [v.to_string()]}});
    send(&fast, Method::POST, widgets, widget(1)).await?;
    send(&fast, Method::PUT, &format!("{widgets}/w"), widget(2)).await?;

    let watches = [
        format!("{cms}?watch=1&resourceVersion={start_rv}&timeoutSeconds=1"),
        format!("{cms}?watch=1&resourceVersion={start_rv}&labelSelector=app%3Dx&timeoutSeconds=1"),
        format!("{cms}?watch=1&fieldSelector=metadata.name%3Da&resourceVersion=0&timeoutSeconds=1"),
        format!("{cms}?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1"),
        format!("/apis/example.com/v1beta1/namespaces/default/widgets?watch=1&resourceVersion={start_rv}&timeoutSeconds=1"),
        format!("{widgets}?watch=1&resourceVersion={start_rv}&timeoutSeconds=1"),
    ];
    let mut seen = Vec::new();
    for path in &watches {
        let (shared, alone) = tokio::join!(events(&fast, path), events(&plain, path));
        let (shared, alone) = (shared?, alone?);
        assert!(!shared.is_empty(), "{path}");
        assert_eq!(shared, alone, "{path}");
        seen.push(shared);
    }
    assert_eq!(types(&seen[0]), ["ADDED", "ADDED", "MODIFIED", "MODIFIED", "DELETED"]);
    assert_eq!(types(&seen[1]), ["ADDED", "ADDED", "MODIFIED", "DELETED", "DELETED"], "a leaves the selection, then b goes");
    assert_eq!(seen[1][3]["object"]["metadata"]["labels"]["app"], "y", "the object as it left");
    assert_eq!(types(&seen[2]), ["ADDED"]);
    assert_eq!(seen[2][0]["object"]["data"]["k"], "3");
    assert_eq!(types(&seen[3]).last(), Some(&"BOOKMARK"), "the initial events end with a bookmark");
    assert_eq!(seen[3].len(), 3, "first, a, then the bookmark: {:?}", seen[3]);
    for (event, version) in seen[4].iter().map(|e| (e, "example.com/v1beta1")).chain(seen[5].iter().map(|e| (e, "example.com/v1"))) {
        assert_eq!(event["object"]["apiVersion"], version, "each watch shows the version it asked for");
        assert_eq!(event["object"]["kind"], "Widget");
    }
    assert_eq!(seen[4][1]["object"]["spec"]["tags"], json!(["2"]));
    Ok(())
}
