//! `pods/ephemeralcontainers` over HTTP: the subresource's object is the Pod, only
//! `spec.ephemeralContainers` changes through it, entries are only added, and kube's validation
//! of them answers 422.

use crate::http::{TestResult, call, start};
use http::{Method, StatusCode};
use serde_json::{Value, json};

const PATH: &str = "/api/v1/namespaces/default/pods/p/ephemeralcontainers";
const SMP: (&str, &str) = ("content-type", "application/strategic-merge-patch+json");
const JSON: (&str, &str) = ("content-type", "application/json");

fn names(pod: &Value) -> Vec<String> {
    pod.pointer("/spec/ephemeralContainers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect()
}

fn causes(reply: &Value) -> Vec<(String, String)> {
    reply
        .pointer("/details/causes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| (c["reason"].as_str().unwrap_or("").to_owned(), c["field"].as_str().unwrap_or("").to_owned()))
        .collect()
}

#[tokio::test]
async fn ephemeral_containers_are_added_through_their_subresource_only() -> TestResult {
    let (_api, server) = start().await?;
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "app", "image": "busybox"}], "initContainers": [{"name": "init", "image": "busybox"}]}});
    let created = call(&server, Method::POST, "/api/v1/namespaces/default/pods", &[JSON], pod.to_string()).await?;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.json());

    // GET answers the pod.
    let got = call(&server, Method::GET, PATH, &[], "").await?;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!((got.json()["kind"].as_str(), got.json()["metadata"]["name"].as_str()), (Some("Pod"), Some("p")));

    // A strategic merge patch (what kubectl debug sends) adds one; other changes are ignored.
    let patch = json!({"metadata": {"labels": {"x": "y"}}, "spec": {"ephemeralContainers": [
        {"name": "dbg", "image": "busybox", "command": ["sh"], "stdin": true, "targetContainerName": "app"}
    ], "containers": [{"name": "app", "image": "nginx"}]}});
    let patched = call(&server, Method::PATCH, PATH, &[SMP], patch.to_string()).await?;
    assert_eq!(patched.status, StatusCode::OK, "{:?}", patched.json());
    let p = patched.json();
    assert_eq!(names(&p), ["dbg"]);
    assert_eq!(p.pointer("/spec/containers/0/image"), Some(&json!("busybox")), "only ephemeralContainers changes");
    assert_eq!(p.pointer("/metadata/labels/x"), None);
    let rv1 = p["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_owned();
    let got = call(&server, Method::GET, "/api/v1/namespaces/default/pods/p", &[], "").await?.json();
    assert_eq!(names(&got), ["dbg"]);
    assert_eq!(got["metadata"]["resourceVersion"].as_str(), Some(rv1.as_str()));

    // Names are unique across containers, init containers and ephemeral containers.
    for taken in ["app", "init", "dbg"] {
        let patch = json!({"spec": {"ephemeralContainers": [{"name": taken, "image": "alpine"}]}});
        let reply = call(&server, Method::PATCH, PATH, &[SMP], patch.to_string()).await?;
        let body = reply.json();
        if taken == "dbg" {
            // Keyed by name: the patch changes the existing entry, which is forbidden.
            assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert!(causes(&body).iter().any(|(r, _)| r == "FieldValueForbidden"), "{body}");
            continue;
        }
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{taken}: {body}");
        // (A strategic merge patch puts the patch's new entries first, as kube's does without `$setElementOrder`.)
        assert!(causes(&body).contains(&("FieldValueDuplicate".into(), "spec.ephemeralContainers[0].name".into())), "{body}");
    }

    // Ports, probes, lifecycle and resources may not be set.
    let patch = json!({"spec": {"ephemeralContainers": [{"name": "bad", "image": "busybox",
        "ports": [{"containerPort": 80}], "readinessProbe": {"exec": {"command": ["true"]}},
        "lifecycle": {"postStart": {"exec": {"command": ["true"]}}}, "resources": {"limits": {"cpu": "1"}}}]}});
    let reply = call(&server, Method::PATCH, PATH, &[SMP], patch.to_string()).await?;
    let body = reply.json();
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let fields: Vec<String> = causes(&body).into_iter().filter(|(r, _)| r == "FieldValueForbidden").map(|(_, f)| f).collect();
    for f in ["ports", "readinessProbe", "lifecycle", "resources"] {
        assert!(fields.contains(&format!("spec.ephemeralContainers[0].{f}")), "{f}: {body}");
    }

    // PUT of the whole pod: an existing entry can be neither removed nor changed; a new one is added.
    let mut pod = call(&server, Method::GET, PATH, &[], "").await?.json();
    pod["spec"]["ephemeralContainers"] = json!([]);
    let reply = call(&server, Method::PUT, PATH, &[JSON], pod.to_string()).await?;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", reply.json());
    assert!(reply.json()["message"].as_str().is_some_and(|m| m.contains("may not be removed")), "{:?}", reply.json());
    let mut pod = call(&server, Method::GET, PATH, &[], "").await?.json();
    pod["spec"]["ephemeralContainers"][0]["image"] = json!("alpine");
    let reply = call(&server, Method::PUT, PATH, &[JSON], pod.to_string()).await?;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", reply.json());
    assert!(reply.json()["message"].as_str().is_some_and(|m| m.contains("may not be changed")), "{:?}", reply.json());
    let mut pod = call(&server, Method::GET, PATH, &[], "").await?.json();
    let stale = pod.clone();
    pod["spec"]["ephemeralContainers"].as_array_mut().ok_or("list")?.push(json!({"name": "dbg2", "image": "busybox"}));
    let reply = call(&server, Method::PUT, PATH, &[JSON], pod.to_string()).await?;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    assert_eq!(names(&reply.json()), ["dbg", "dbg2"]);
    // The resourceVersion precondition holds: a PUT of the older pod conflicts.
    let reply = call(&server, Method::PUT, PATH, &[JSON], stale.to_string()).await?;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{:?}", reply.json());

    // Other kinds have no such subresource.
    let reply = call(&server, Method::GET, "/api/v1/namespaces/default/configmaps/x/ephemeralcontainers", &[], "").await?;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    Ok(())
}
