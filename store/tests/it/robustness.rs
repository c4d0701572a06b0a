//! Bad input over real HTTP: every malformed body, patch, query parameter and URL, every stale or
//! conflicting write gets a Kubernetes `Status` with kube-apiserver's code and reason, never a 500,
//! a panic or a hang, and leaves the stored objects exactly as they were.

use super::http::{TestResult, call, start};
use bosun_store::http::Server;
use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};

const CMS: &str = "/api/v1/namespaces/default/configmaps";
const KEEP: &str = "/api/v1/namespaces/default/configmaps/keep";
const DEPLOYS: &str = "/apis/apps/v1/namespaces/default/deployments";
const PODS: &str = "/api/v1/namespaces/default/pods";
const JSON: &str = "application/json";
const JSON_PATCH: &str = "application/json-patch+json";
const MERGE: &str = "application/merge-patch+json";
const SMP: &str = "application/strategic-merge-patch+json";
const APPLY: &str = "application/apply-patch+yaml";
const YAML: &str = "application/yaml";

/// One bad request and the answer kube-apiserver gives it.
struct Case {
    what: &'static str,
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: Bytes,
    code: u16,
    reason: &'static str,
}

fn case(what: &'static str, method: Method, path: impl Into<String>, content_type: Option<&'static str>, body: impl Into<Bytes>) -> Case {
    Case { what, method, path: path.into(), content_type, body: body.into(), code: 0, reason: "" }
}

impl Case {
    fn answers(mut self, code: u16, reason: &'static str) -> Self {
        self.code = code;
        self.reason = reason;
        self
    }
}

/// The object at `path` as the server stores it (200 asserted).
async fn stored(server: &Server, path: &str) -> Result<Value, Box<dyn std::error::Error>> {
    let reply = call(server, Method::GET, path, &[], Bytes::new()).await?;
    assert_eq!(reply.status.as_u16(), 200, "GET {path}: {:?}", reply.body);
    Ok(reply.json())
}

async fn create(server: &Server, path: &str, body: &Value) -> Result<Value, Box<dyn std::error::Error>> {
    let reply = call(server, Method::POST, path, &[("content-type", JSON)], serde_json::to_vec(body)?).await?;
    assert_eq!(reply.status.as_u16(), 201, "POST {path}: {:?}", reply.body);
    Ok(reply.json())
}

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
}

fn text(v: &Value) -> Bytes {
    Bytes::from(v.to_string())
}

/// Sends every case, then fails listing every one that was not answered with its `Status`
/// (kind, apiVersion, `Failure`, reason and code), so one run shows every divergence; then checks
/// that the objects `before` names are exactly as they were, and that the server still serves a
/// plain write (no task died).
async fn check_all(server: &Server, cases: Vec<Case>, before: &[(&str, Value)]) -> TestResult {
    let mut wrong = Vec::new();
    for c in cases {
        let headers: Vec<(&str, &str)> = c.content_type.map(|t| ("content-type", t)).into_iter().collect();
        let reply = call(server, c.method.clone(), &c.path, &headers, c.body.clone()).await?;
        let status = reply.json();
        let got = (
            reply.status.as_u16(),
            status["kind"].as_str(),
            status["apiVersion"].as_str(),
            status["status"].as_str(),
            status["reason"].as_str(),
            status["code"].as_u64(),
        );
        let want = (c.code, Some("Status"), Some("v1"), Some("Failure"), Some(c.reason), Some(u64::from(c.code)));
        if got != want {
            let body: String = String::from_utf8_lossy(&reply.body).chars().take(300).collect();
            wrong.push(format!("{} ({} {}): want {} {}, got {} {body}", c.what, c.method, c.path, c.code, c.reason, reply.status));
        }
    }
    assert!(wrong.is_empty(), "{} wrong answers:\n{}", wrong.len(), wrong.join("\n"));
    for (path, was) in before {
        let now = stored(server, path).await?;
        assert_eq!(&now, was, "{path} changed");
    }
    let created = call(server, Method::POST, CMS, &[("content-type", JSON)], text(&cm("after"))).await?;
    assert_eq!(created.status.as_u16(), 201, "{:?}", created.body);
    Ok(())
}

#[tokio::test]
async fn bad_bodies_get_a_status_and_write_nothing() -> TestResult {
    let (_api, server) = start().await?;
    create(&server, CMS, &cm("keep")).await?;
    let keep = stored(&server, KEEP).await?;
    let mut put_keep = keep.clone();
    put_keep["data"]["k"] = json!("changed");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = put_keep.clone();
        f(&mut v);
        text(&v)
    };
    let huge = {
        let mut v = cm("huge");
        v["data"]["k"] = json!("x".repeat(3 * 1024 * 1024 + 1));
        text(&v)
    };
    let post = |what, ctype, body: Bytes| case(what, Method::POST, CMS, ctype, body);
    // 1,000 nested objects under data, and YAML aliases that would expand to 9^9 strings.
    let deep = Bytes::from(format!(r#"{{"metadata": {{"name": "t"}}, "data": {}1{}}}"#, r#"{"a": "#.repeat(1000), "}".repeat(1000)));
    let mut bomb = String::from("metadata:\n  name: t\na0: &a0 [x, x, x, x, x, x, x, x, x]\n");
    for i in 1..9 {
        let p = i - 1;
        bomb.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
    }
    let put = |what, ctype, body: Bytes| case(what, Method::PUT, KEEP, ctype, body);
    let cases = vec![
        post("truncated json", Some(JSON), Bytes::from_static(br#"{"metadata": {"name": "t"}, "data": {"#)).answers(400, "BadRequest"),
        post("json syntax error", Some(JSON), Bytes::from_static(br#"{"metadata" {"name": "t"}}"#)).answers(400, "BadRequest"),
        post("json array", Some(JSON), Bytes::from_static(b"[1, 2]")).answers(400, "BadRequest"),
        post("json string", Some(JSON), Bytes::from_static(br#""configmap""#)).answers(400, "BadRequest"),
        post("json number", Some(JSON), Bytes::from_static(b"42")).answers(400, "BadRequest"),
        post("json null", Some(JSON), Bytes::from_static(b"null")).answers(400, "BadRequest"),
        post("empty body", Some(JSON), Bytes::new()).answers(400, "BadRequest"),
        post("blank body", Some(JSON), Bytes::from_static(b" \n\t ")).answers(400, "BadRequest"),
        post("empty body, no content type", None, Bytes::new()).answers(400, "BadRequest"),
        post("invalid utf-8", Some(JSON), Bytes::from_static(b"{\"metadata\": {\"name\": \"\xff\xfe\"}}")).answers(400, "BadRequest"),
        post("wrong kind", Some(JSON), text(&json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "t"}})))
            .answers(400, "BadRequest"),
        post("wrong apiVersion", Some(JSON), text(&json!({"apiVersion": "apps/v1", "kind": "ConfigMap", "metadata": {"name": "t"}})))
            .answers(400, "BadRequest"),
        post("kind without apiVersion", Some(JSON), text(&json!({"kind": "ConfigMap", "metadata": {"name": "t"}})))
            .answers(400, "BadRequest"),
        post("kind not a string", Some(JSON), text(&json!({"apiVersion": "v1", "kind": 7, "metadata": {"name": "t"}})))
            .answers(400, "BadRequest"),
        post("other namespace", Some(JSON), text(&json!({"metadata": {"name": "t", "namespace": "kube-system"}})))
            .answers(400, "BadRequest"),
        post("metadata a string", Some(JSON), text(&json!({"metadata": "t"}))).answers(400, "BadRequest"),
        post("labels a string", Some(JSON), text(&json!({"metadata": {"name": "t", "labels": "a=b"}}))).answers(400, "BadRequest"),
        post("name a number", Some(JSON), text(&json!({"metadata": {"name": 5}}))).answers(400, "BadRequest"),
        post("data a list", Some(JSON), text(&json!({"metadata": {"name": "t"}, "data": ["k"]}))).answers(400, "BadRequest"),
        post("data value a number", Some(JSON), text(&json!({"metadata": {"name": "t"}, "data": {"k": 1}}))).answers(400, "BadRequest"),
        post("no name", Some(JSON), text(&json!({"data": {"k": "v"}}))).answers(422, "Invalid"),
        post("invalid name", Some(JSON), text(&json!({"metadata": {"name": "Not_A_Name"}}))).answers(422, "Invalid"),
        post("name with a slash", Some(JSON), text(&json!({"metadata": {"name": "a/b"}}))).answers(422, "Invalid"),
        post("name ..", Some(JSON), text(&json!({"metadata": {"name": ".."}}))).answers(422, "Invalid"),
        post("name too long", Some(JSON), text(&json!({"metadata": {"name": "a".repeat(300)}}))).answers(422, "Invalid"),
        post("invalid label key", Some(JSON), text(&json!({"metadata": {"name": "t", "labels": {"bad key!": "v"}}})))
            .answers(422, "Invalid"),
        post("invalid data key", Some(JSON), text(&json!({"metadata": {"name": "t"}, "data": {"no/slash": "v"}}))).answers(422, "Invalid"),
        post("existing name", Some(JSON), text(&cm("keep"))).answers(409, "AlreadyExists"),
        post("over the body limit", Some(JSON), huge.clone()).answers(413, "RequestEntityTooLarge"),
        post("xml", Some("application/xml"), Bytes::from_static(b"<ConfigMap/>")).answers(415, "UnsupportedMediaType"),
        post("text", Some("text/plain"), text(&cm("t"))).answers(415, "UnsupportedMediaType"),
        post("a patch type", Some(MERGE), text(&cm("t"))).answers(415, "UnsupportedMediaType"),
        post("malformed yaml", Some(YAML), Bytes::from_static(b"metadata:\n  name: [t\n")).answers(400, "BadRequest"),
        post("json nested 1,000 deep", Some(JSON), deep).answers(400, "BadRequest"),
        post("yaml alias bomb", Some(YAML), Bytes::from(bomb)).answers(400, "BadRequest"),
        post("yaml list", Some(YAML), Bytes::from_static(b"- a\n- b\n")).answers(400, "BadRequest"),
        post("yaml scalar", Some(YAML), Bytes::from_static(b"just words\n")).answers(400, "BadRequest"),
        post("yaml with two documents", Some(YAML), Bytes::from_static(b"metadata:\n  name: t\n---\nmetadata:\n  name: u\n"))
            .answers(400, "BadRequest"),
        put("put empty body", Some(JSON), Bytes::new()).answers(400, "BadRequest"),
        put("put truncated json", Some(JSON), Bytes::from_static(b"{\"metadata\":")).answers(400, "BadRequest"),
        put("put json array", Some(JSON), Bytes::from_static(b"[]")).answers(400, "BadRequest"),
        put("put other name", Some(JSON), with(&|v| v["metadata"]["name"] = json!("other"))).answers(400, "BadRequest"),
        put("put other namespace", Some(JSON), with(&|v| v["metadata"]["namespace"] = json!("kube-system"))).answers(400, "BadRequest"),
        put("put wrong kind", Some(JSON), with(&|v| v["kind"] = json!("Secret"))).answers(400, "BadRequest"),
        put("put wrong apiVersion", Some(JSON), with(&|v| v["apiVersion"] = json!("v2"))).answers(400, "BadRequest"),
        put("put data value a number", Some(JSON), with(&|v| v["data"]["k"] = json!(1))).answers(400, "BadRequest"),
        put("put stale resourceVersion", Some(JSON), with(&|v| v["metadata"]["resourceVersion"] = json!("1"))).answers(409, "Conflict"),
        put("put other uid", Some(JSON), with(&|v| v["metadata"]["uid"] = json!("6a1f0f9e-0000-4000-8000-000000000000")))
            .answers(409, "Conflict"),
        put("put invalid label", Some(JSON), with(&|v| v["metadata"]["labels"] = json!({"-bad": "v"}))).answers(422, "Invalid"),
        put("put over the limit", Some(JSON), huge).answers(413, "RequestEntityTooLarge"),
        put("put xml", Some("application/xml"), Bytes::from_static(b"<x/>")).answers(415, "UnsupportedMediaType"),
        case("put of a missing object", Method::PUT, format!("{CMS}/missing"), Some(JSON), text(&cm("missing"))).answers(404, "NotFound"),
    ];
    check_all(&server, cases, &[(KEEP, keep)]).await?;
    let list = stored(&server, CMS).await?;
    let names: Vec<&str> = list["items"].as_array().into_iter().flatten().filter_map(|o| o["metadata"]["name"].as_str()).collect();
    assert_eq!(names, ["after", "keep"], "a refused create stored something");
    Ok(())
}

fn widget_crd() -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}}}]}})
}

fn deployment(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
}

fn pod(name: &str, node: Option<&str>) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
    if let Some(node) = node {
        p["spec"]["nodeName"] = json!(node);
    }
    p
}

#[tokio::test]
async fn bad_patches_get_a_status_and_leave_the_object_alone() -> TestResult {
    let (_api, server) = start().await?;
    create(&server, CMS, &cm("keep")).await?;
    let mut frozen = cm("frozen");
    frozen["immutable"] = json!(true);
    create(&server, CMS, &frozen).await?;
    create(&server, DEPLOYS, &deployment("web")).await?;
    create(&server, PODS, &pod("bound", Some("node-1"))).await?;
    create(&server, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", &widget_crd()).await?;
    let gadgets = "/apis/example.com/v1/namespaces/default/gadgets";
    create(&server, gadgets, &json!({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}, "spec": {"size": 1}}))
        .await?;
    // Server-side apply by one manager, so another's apply of a different value conflicts.
    let owned = call(
        &server,
        Method::PATCH,
        &format!("{KEEP}?fieldManager=owner"),
        &[("content-type", APPLY)],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: keep\ndata:\n  k: v\n",
    )
    .await?;
    assert_eq!(owned.status.as_u16(), 200, "{:?}", owned.body);
    let (frozen_path, web, bound, gadget) =
        (format!("{CMS}/frozen"), format!("{DEPLOYS}/web"), format!("{PODS}/bound"), format!("{gadgets}/g"));
    let before = [
        (KEEP, stored(&server, KEEP).await?),
        (frozen_path.as_str(), stored(&server, &frozen_path).await?),
        (web.as_str(), stored(&server, &web).await?),
        (bound.as_str(), stored(&server, &bound).await?),
        (gadget.as_str(), stored(&server, &gadget).await?),
    ];
    let patch = |what, ctype, body: &'static str| case(what, Method::PATCH, KEEP, Some(ctype), body);
    let too_many_ops = Bytes::from(serde_json::to_vec(&vec![json!({"op": "test", "path": "/data/k", "value": "v"}); 10_001])?);
    let huge = Bytes::from(serde_json::to_vec(&json!({"data": {"k": "x".repeat(3 * 1024 * 1024 + 1)}}))?);
    let cases = vec![
        case("no content type", Method::PATCH, KEEP, None, r#"{"data":{"k":"x"}}"#).answers(415, "UnsupportedMediaType"),
        patch("plain json", JSON, r#"{"data":{"k":"x"}}"#).answers(415, "UnsupportedMediaType"),
        patch("yaml", YAML, "data:\n  k: x\n").answers(415, "UnsupportedMediaType"),
        patch("json patch: malformed", JSON_PATCH, r#"[{"op": "add""#).answers(400, "BadRequest"),
        patch("json patch: an object", JSON_PATCH, r#"{"op": "add", "path": "/data/x", "value": "1"}"#).answers(400, "BadRequest"),
        patch("json patch: not objects", JSON_PATCH, "[1, 2]").answers(400, "BadRequest"),
        patch("json patch: empty body", JSON_PATCH, "").answers(400, "BadRequest"),
        patch("json patch: unknown op", JSON_PATCH, r#"[{"op": "frob", "path": "/data/k"}]"#).answers(422, "Invalid"),
        patch("json patch: no op", JSON_PATCH, r#"[{"path": "/data/k", "value": "x"}]"#).answers(422, "Invalid"),
        patch("json patch: no path", JSON_PATCH, r#"[{"op": "add", "value": "x"}]"#).answers(422, "Invalid"),
        patch("json patch: relative path", JSON_PATCH, r#"[{"op": "add", "path": "data/x", "value": "x"}]"#).answers(422, "Invalid"),
        patch("json patch: remove missing", JSON_PATCH, r#"[{"op": "remove", "path": "/data/nope"}]"#).answers(422, "Invalid"),
        patch("json patch: replace missing", JSON_PATCH, r#"[{"op": "replace", "path": "/spec/x", "value": 1}]"#).answers(422, "Invalid"),
        patch("json patch: move from missing", JSON_PATCH, r#"[{"op": "move", "from": "/data/nope", "path": "/data/x"}]"#)
            .answers(422, "Invalid"),
        patch(
            "json patch: failing test",
            JSON_PATCH,
            r#"[{"op": "add", "path": "/data/x", "value": "1"}, {"op": "test", "path": "/data/k", "value": "other"}]"#,
        )
        .answers(422, "Invalid"),
        patch("json patch: index into a string", JSON_PATCH, r#"[{"op": "add", "path": "/data/k/0", "value": "x"}]"#)
            .answers(422, "Invalid"),
        patch("json patch: metadata a string", JSON_PATCH, r#"[{"op": "replace", "path": "/metadata", "value": "x"}]"#)
            .answers(422, "Invalid"),
        patch("json patch: data value a number", JSON_PATCH, r#"[{"op": "add", "path": "/data/k", "value": 1}]"#).answers(422, "Invalid"),
        patch("json patch: rename", JSON_PATCH, r#"[{"op": "replace", "path": "/metadata/name", "value": "other"}]"#)
            .answers(400, "BadRequest"),
        patch("json patch: move namespace", JSON_PATCH, r#"[{"op": "replace", "path": "/metadata/namespace", "value": "kube-system"}]"#)
            .answers(400, "BadRequest"),
        case("json patch: over 10000 operations", Method::PATCH, KEEP, Some(JSON_PATCH), too_many_ops)
            .answers(413, "RequestEntityTooLarge"),
        patch("merge: malformed", MERGE, r#"{"data": "#).answers(400, "BadRequest"),
        patch("merge: an array", MERGE, "[1]").answers(400, "BadRequest"),
        patch("merge: a string", MERGE, r#""data""#).answers(400, "BadRequest"),
        patch("merge: empty body", MERGE, "").answers(400, "BadRequest"),
        patch("merge: metadata a string", MERGE, r#"{"metadata": "x"}"#).answers(422, "Invalid"),
        patch("merge: labels a list", MERGE, r#"{"metadata": {"labels": ["a"]}}"#).answers(422, "Invalid"),
        patch("merge: data a string", MERGE, r#"{"data": "x"}"#).answers(422, "Invalid"),
        patch("merge: data value a number", MERGE, r#"{"data": {"k": 1}}"#).answers(422, "Invalid"),
        patch("merge: invalid label", MERGE, r#"{"metadata": {"labels": {"-bad": "v"}}}"#).answers(422, "Invalid"),
        patch("merge: rename", MERGE, r#"{"metadata": {"name": "other"}}"#).answers(400, "BadRequest"),
        patch("merge: move namespace", MERGE, r#"{"metadata": {"namespace": "kube-system"}}"#).answers(400, "BadRequest"),
        patch("merge: change uid", MERGE, r#"{"metadata": {"uid": "6a1f0f9e-0000-4000-8000-000000000000"}}"#).answers(422, "Invalid"),
        patch("merge: stale resourceVersion", MERGE, r#"{"metadata": {"resourceVersion": "1"}, "data": {"k": "x"}}"#)
            .answers(409, "Conflict"),
        patch("strategic: malformed", SMP, r#"{"data""#).answers(400, "BadRequest"),
        patch("strategic: an array", SMP, "[]").answers(400, "BadRequest"),
        patch("strategic: unknown $patch", SMP, r#"{"metadata": {"labels": {"$patch": "frob"}}}"#).answers(400, "BadRequest"),
        patch("strategic: $patch not a string", SMP, r#"{"metadata": {"labels": {"$patch": 1}}}"#).answers(400, "BadRequest"),
        patch("strategic: $retainKeys not a list", SMP, r#"{"data": {"$retainKeys": "k"}}"#).answers(400, "BadRequest"),
        patch("strategic: delete directive on a string", SMP, r#"{"data": {"k": {"$patch": "delete"}}}"#).answers(422, "Invalid"),
        patch("strategic: data a list", SMP, r#"{"data": ["k"]}"#).answers(422, "Invalid"),
        patch("strategic: finalizers an object", SMP, r#"{"metadata": {"finalizers": {"a": "b"}}}"#).answers(422, "Invalid"),
        patch("strategic: $patch delete of the object", SMP, r#"{"$patch": "delete"}"#).answers(400, "BadRequest"),
        patch("strategic: $patch replace of metadata", SMP, r#"{"metadata": {"$patch": "replace"}}"#).answers(400, "BadRequest"),
        patch("strategic: $deleteFromPrimitiveList not a list", SMP, r#"{"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}"#)
            .answers(400, "BadRequest"),
        patch("json patch: remove the name", JSON_PATCH, r#"[{"op": "remove", "path": "/metadata/name"}]"#).answers(400, "BadRequest"),
        case(
            "strategic: delete without a merge key",
            Method::PATCH,
            web.clone(),
            Some(SMP),
            r#"{"spec":{"template":{"spec":{"containers":[{"$patch":"delete"}]}}}}"#,
        )
        .answers(422, "Invalid"),
        case(
            "strategic: $setElementOrder not a list",
            Method::PATCH,
            web.clone(),
            Some(SMP),
            r#"{"spec":{"template":{"spec":{"$setElementOrder/containers":"c"}}}}"#,
        )
        .answers(400, "BadRequest"),
        case(
            "strategic: a list of lists",
            Method::PATCH,
            web.clone(),
            Some(SMP),
            r#"{"spec":{"template":{"spec":{"containers":[["c"]]}}}}"#,
        )
        .answers(422, "Invalid"),
        case(
            "strategic: unknown $patch in a list item",
            Method::PATCH,
            web.clone(),
            Some(SMP),
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"c","$patch":"frob"}]}}}}"#,
        )
        .answers(400, "BadRequest"),
        patch("apply: no fieldManager", APPLY, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: keep\ndata:\n  k: x\n")
            .answers(422, "Invalid"),
        patch("apply: malformed yaml, no fieldManager (options come first)", APPLY, "metadata: [keep\n").answers(422, "Invalid"),
        case("apply: malformed yaml", Method::PATCH, format!("{KEEP}?fieldManager=owner"), Some(APPLY), "metadata: [keep\n")
            .answers(400, "BadRequest"),
        case("apply: a yaml list", Method::PATCH, format!("{KEEP}?fieldManager=owner"), Some(APPLY), "- keep\n").answers(400, "BadRequest"),
        case("apply: empty body", Method::PATCH, format!("{KEEP}?fieldManager=owner"), Some(APPLY), "").answers(400, "BadRequest"),
        case(
            "apply: conflict with another manager",
            Method::PATCH,
            format!("{KEEP}?fieldManager=intruder"),
            Some(APPLY),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: keep\ndata:\n  k: mine\n",
        )
        .answers(409, "Conflict"),
        case(
            "apply: managedFields set",
            Method::PATCH,
            format!("{KEEP}?fieldManager=owner"),
            Some(APPLY),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: keep\n  managedFields:\n  - manager: a\n    operation: Apply\n",
        )
        .answers(400, "BadRequest"),
        case(
            "apply: other apiVersion",
            Method::PATCH,
            format!("{KEEP}?fieldManager=owner"),
            Some(APPLY),
            "apiVersion: v2\nkind: ConfigMap\nmetadata:\n  name: keep\ndata:\n  k: x\n",
        )
        .answers(400, "BadRequest"),
        case(
            "apply: other name",
            Method::PATCH,
            format!("{KEEP}?fieldManager=owner"),
            Some(APPLY),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\ndata:\n  k: v\n",
        )
        .answers(400, "BadRequest"),
        case("merge: unknown field under Strict", Method::PATCH, format!("{KEEP}?fieldValidation=Strict"), Some(MERGE), r#"{"bogus": 1}"#)
            .answers(422, "Invalid"),
        case(
            "json patch: unknown field under Strict",
            Method::PATCH,
            format!("{KEEP}?fieldValidation=Strict"),
            Some(JSON_PATCH),
            r#"[{"op": "add", "path": "/bogus", "value": 1}]"#,
        )
        .answers(422, "Invalid"),
        case(
            "strategic: repeated field under Strict",
            Method::PATCH,
            format!("{KEEP}?fieldValidation=Strict"),
            Some(SMP),
            r#"{"data": {"k": "a", "k": "b"}}"#,
        )
        .answers(422, "Invalid"),
        case("force on a merge patch", Method::PATCH, format!("{KEEP}?force=true"), Some(MERGE), r#"{"data":{"k":"x"}}"#)
            .answers(422, "Invalid"),
        case("patch over the limit", Method::PATCH, KEEP, Some(MERGE), huge).answers(413, "RequestEntityTooLarge"),
        case("merge of a missing object", Method::PATCH, format!("{CMS}/missing"), Some(MERGE), r#"{"data":{"k":"x"}}"#)
            .answers(404, "NotFound"),
        case("immutable configmap data", Method::PATCH, frozen_path.clone(), Some(MERGE), r#"{"data":{"k":"x"}}"#).answers(422, "Invalid"),
        case("immutable configmap made mutable", Method::PATCH, frozen_path.clone(), Some(MERGE), r#"{"immutable":false}"#)
            .answers(422, "Invalid"),
        case("negative replicas", Method::PATCH, web.clone(), Some(MERGE), r#"{"spec":{"replicas":-1}}"#).answers(422, "Invalid"),
        case("replicas a string", Method::PATCH, web.clone(), Some(MERGE), r#"{"spec":{"replicas":"many"}}"#).answers(422, "Invalid"),
        case("selector changed", Method::PATCH, web.clone(), Some(SMP), r#"{"spec":{"selector":{"matchLabels":{"app":"other"}}}}"#)
            .answers(422, "Invalid"),
        case(
            "containers removed",
            Method::PATCH,
            web.clone(),
            Some(JSON_PATCH),
            r#"[{"op":"remove","path":"/spec/template/spec/containers"}]"#,
        )
        .answers(422, "Invalid"),
        case("bound pod moved", Method::PATCH, bound.clone(), Some(MERGE), r#"{"spec":{"nodeName":"node-2"}}"#).answers(422, "Invalid"),
        case(
            "pod containers renamed",
            Method::PATCH,
            bound.clone(),
            Some(JSON_PATCH),
            r#"[{"op":"replace","path":"/spec/containers/0/name","value":"d"}]"#,
        )
        .answers(422, "Invalid"),
        case("strategic merge on a custom resource", Method::PATCH, gadget.clone(), Some(SMP), r#"{"spec":{"size":2}}"#)
            .answers(415, "UnsupportedMediaType"),
        case("custom resource metadata a string", Method::PATCH, gadget.clone(), Some(MERGE), r#"{"metadata":"x"}"#)
            .answers(422, "Invalid"),
        case("dry run of an invalid patch", Method::PATCH, format!("{}?dryRun=All", web), Some(MERGE), r#"{"spec":{"replicas":-1}}"#)
            .answers(422, "Invalid"),
    ];
    check_all(&server, cases, &before).await
}

/// List and watch queries kube-apiserver refuses: what, query string, code, reason.
const BAD_QUERIES: &[(&str, &str, u16, &str)] = &[
    ("label selector: open set", "labelSelector=a%20in%20(b", 400, "BadRequest"),
    ("label selector: operators only", "labelSelector=%3D%3D%3D", 400, "BadRequest"),
    ("label selector: invalid key", "labelSelector=-bad%3Dv", 400, "BadRequest"),
    ("label selector: invalid value", "labelSelector=a%3D-v-", 400, "BadRequest"),
    ("field selector: no operator", "fieldSelector=metadata.name", 400, "BadRequest"),
    ("field selector: unsupported field", "fieldSelector=spec.foo%3Dbar", 400, "BadRequest"),
    ("field selector: unknown operator", "fieldSelector=metadata.name~x", 400, "BadRequest"),
    ("limit: not a number", "limit=abc", 400, "BadRequest"),
    ("limit: a fraction", "limit=1.5", 400, "BadRequest"),
    ("continue: not base64", "continue=%25%25garbage", 400, "BadRequest"),
    ("continue: not a token", "continue=e30", 400, "BadRequest"),
    ("resourceVersionMatch without resourceVersion", "resourceVersionMatch=Exact", 422, "Invalid"),
    ("resourceVersionMatch unsupported", "resourceVersionMatch=Bogus&resourceVersion=1", 422, "Invalid"),
    ("resourceVersionMatch with continue", "resourceVersionMatch=NotOlderThan&resourceVersion=1&continue=e30", 422, "Invalid"),
    ("resourceVersionMatch=Exact at 0", "resourceVersionMatch=Exact&resourceVersion=0", 422, "Invalid"),
    ("resourceVersion: not a number", "resourceVersion=abc", 422, "Invalid"),
    ("resourceVersion: not a number, paged", "resourceVersion=abc&limit=5", 422, "Invalid"),
    ("resourceVersion: negative", "resourceVersion=-3&resourceVersionMatch=NotOlderThan", 422, "Invalid"),
    ("timeoutSeconds: not a number", "timeoutSeconds=abc", 400, "BadRequest"),
    ("watch: resourceVersion not a number", "watch=1&resourceVersion=abc", 422, "Invalid"),
    ("watch: timeoutSeconds not a number", "watch=1&timeoutSeconds=abc", 400, "BadRequest"),
    ("watch: bad label selector", "watch=1&labelSelector=a%20in%20(b", 400, "BadRequest"),
    ("watch: unsupported field", "watch=1&fieldSelector=spec.foo%3Dbar", 400, "BadRequest"),
    ("watch: sendInitialEvents without a match rule", "watch=1&sendInitialEvents=true", 422, "Invalid"),
    ("watch: a match rule without sendInitialEvents", "watch=1&resourceVersionMatch=NotOlderThan", 422, "Invalid"),
    ("watch: an Exact match rule", "watch=1&sendInitialEvents=true&resourceVersionMatch=Exact&resourceVersion=1", 422, "Invalid"),
    ("list: sendInitialEvents", "sendInitialEvents=true", 422, "Invalid"),
];

#[tokio::test]
async fn bad_query_parameters_get_400_or_422_and_change_nothing() -> TestResult {
    let (_api, server) = start().await?;
    create(&server, CMS, &cm("keep")).await?;
    let keep = stored(&server, KEEP).await?;
    let get = |what, query: &str| case(what, Method::GET, format!("{CMS}?{query}"), None, Bytes::new());
    let write = |what, method: Method, path: &str, query: &str, ctype, body: &'static str| {
        case(what, method, format!("{path}?{query}"), ctype, body)
    };
    let delete = |what, body: &'static str| case(what, Method::DELETE, KEEP, Some(JSON), body);
    let manager = format!("fieldManager={}", "m".repeat(129));
    let cm_body: &'static str = r#"{"metadata": {"name": "t"}, "data": {"k": "v"}}"#;
    let mut cases: Vec<Case> = BAD_QUERIES.iter().map(|(what, query, code, reason)| get(what, query).answers(*code, reason)).collect();
    cases.extend([
        case("get: resourceVersion not a number", Method::GET, format!("{KEEP}?resourceVersion=abc"), None, "").answers(422, "Invalid"),
        write("create: dryRun=Maybe", Method::POST, CMS, "dryRun=Maybe", Some(JSON), cm_body).answers(422, "Invalid"),
        write("create: fieldValidation=Bogus", Method::POST, CMS, "fieldValidation=Bogus", Some(JSON), cm_body).answers(422, "Invalid"),
        write("create: fieldValidation=strict", Method::POST, CMS, "fieldValidation=strict", Some(JSON), cm_body).answers(422, "Invalid"),
        case("create: fieldManager too long", Method::POST, format!("{CMS}?{manager}"), Some(JSON), cm_body).answers(422, "Invalid"),
        write("update: dryRun=Maybe", Method::PUT, KEEP, "dryRun=Maybe", Some(JSON), r#"{"metadata": {"name": "keep"}}"#)
            .answers(422, "Invalid"),
        write("patch: dryRun=Maybe", Method::PATCH, KEEP, "dryRun=Maybe", Some(MERGE), r#"{"data": {"k": "x"}}"#).answers(422, "Invalid"),
        write("patch: fieldValidation=Bogus", Method::PATCH, KEEP, "fieldValidation=Bogus", Some(MERGE), r#"{"data": {"k": "x"}}"#)
            .answers(422, "Invalid"),
        case("patch: fieldManager too long", Method::PATCH, format!("{KEEP}?{manager}"), Some(MERGE), r#"{"data": {"k": "x"}}"#)
            .answers(422, "Invalid"),
        write("delete: propagationPolicy=Sideways", Method::DELETE, KEEP, "propagationPolicy=Sideways", None, "").answers(422, "Invalid"),
        write("delete: dryRun=Maybe", Method::DELETE, KEEP, "dryRun=Maybe", None, "").answers(422, "Invalid"),
        write("delete: gracePeriodSeconds not a number", Method::DELETE, KEEP, "gracePeriodSeconds=abc", None, "")
            .answers(400, "BadRequest"),
        delete("delete body: propagationPolicy Sideways", r#"{"propagationPolicy": "Sideways"}"#).answers(422, "Invalid"),
        delete("delete body: dryRun Maybe", r#"{"dryRun": ["Maybe"]}"#).answers(422, "Invalid"),
        delete("delete body: gracePeriodSeconds a string", r#"{"gracePeriodSeconds": "soon"}"#).answers(400, "BadRequest"),
        delete("delete body: orphanDependents a string", r#"{"orphanDependents": "yes"}"#).answers(400, "BadRequest"),
        delete("delete body: preconditions a string", r#"{"preconditions": "x"}"#).answers(400, "BadRequest"),
        delete("delete body: malformed", r#"{"propagationPolicy": "#).answers(400, "BadRequest"),
        delete("delete body: an array", "[1]").answers(400, "BadRequest"),
        delete("delete body: another kind", r#"{"apiVersion": "v1", "kind": "Pod"}"#).answers(400, "BadRequest"),
        delete("delete body: orphan and propagation both", r#"{"orphanDependents": true, "propagationPolicy": "Background"}"#)
            .answers(422, "Invalid"),
        delete("delete precondition: other uid", r#"{"preconditions": {"uid": "6a1f0f9e-0000-4000-8000-000000000000"}}"#)
            .answers(409, "Conflict"),
        delete("delete precondition: stale resourceVersion", r#"{"preconditions": {"resourceVersion": "1"}}"#).answers(409, "Conflict"),
        case("delete body: xml", Method::DELETE, KEEP, Some("application/xml"), "<x/>").answers(415, "UnsupportedMediaType"),
        write("deletecollection: bad label selector", Method::DELETE, CMS, "labelSelector=a%20in%20(b", None, "")
            .answers(400, "BadRequest"),
        write("deletecollection: propagationPolicy=Sideways", Method::DELETE, CMS, "propagationPolicy=Sideways", None, "")
            .answers(422, "Invalid"),
        write("deletecollection: unsupported field", Method::DELETE, CMS, "fieldSelector=spec.foo%3Dbar", None, "")
            .answers(400, "BadRequest"),
    ]);
    check_all(&server, cases, &[(KEEP, keep)]).await?;
    let list = stored(&server, CMS).await?;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2), "a refused request wrote: {list}");
    // Read as kube-apiserver's parameter codec reads them: a limit below 1 is no limit, and any
    // boolean value but `0` or `false` is true (so this is a watch, not a list).
    let unlimited = call(&server, Method::GET, &format!("{CMS}?limit=-1"), &[], Bytes::new()).await?;
    assert_eq!((unlimited.status.as_u16(), unlimited.json()["items"].as_array().map(Vec::len)), (200, Some(2)), "{:?}", unlimited.body);
    let watched = call(&server, Method::GET, &format!("{CMS}?watch=maybe&timeoutSeconds=1"), &[], Bytes::new()).await?;
    let events: Vec<Value> = watched.body.split(|b| *b == b'\n').filter_map(|l| serde_json::from_slice(l).ok()).collect();
    assert_eq!(watched.status.as_u16(), 200);
    assert!(events.len() == 2 && events.iter().all(|e| e["type"] == "ADDED"), "{:?}", watched.body);
    Ok(())
}

#[tokio::test]
async fn bad_urls_get_404_400_and_405() -> TestResult {
    let (_api, server) = start().await?;
    create(&server, CMS, &cm("keep")).await?;
    create(&server, DEPLOYS, &deployment("web")).await?;
    let keep = stored(&server, KEEP).await?;
    let get = |what, path: String| case(what, Method::GET, path, None, Bytes::new());
    let post = |what, path: &str, body: &'static str| case(what, Method::POST, path, Some(JSON), body);
    let cases = vec![
        get("unknown group", "/apis/nope.example.com/v1/namespaces/default/things".into()).answers(404, "NotFound"),
        get("unknown version", "/api/v2/namespaces/default/configmaps".into()).answers(404, "NotFound"),
        get("unknown group version", "/apis/apps/v9/namespaces/default/deployments".into()).answers(404, "NotFound"),
        get("unknown resource", "/api/v1/namespaces/default/nothings".into()).answers(404, "NotFound"),
        get("unknown subresource", format!("{KEEP}/nothing")).answers(404, "NotFound"),
        get("status of a kind without it", format!("{KEEP}/status")).answers(404, "NotFound"),
        get("scale of a kind without it", format!("{KEEP}/scale")).answers(404, "NotFound"),
        get("too deep", format!("{KEEP}/status/more")).answers(404, "NotFound"),
        get("unknown top level", "/nothing/here".into()).answers(404, "NotFound"),
        get("cluster-scoped in a namespace", "/api/v1/namespaces/default/nodes".into()).answers(404, "NotFound"),
        post("create cluster-scoped in a namespace", "/api/v1/namespaces/default/nodes", r#"{"metadata":{"name":"n"}}"#)
            .answers(404, "NotFound"),
        get("name ..", format!("{CMS}/%2E%2E")).answers(400, "BadRequest"),
        get("name .", format!("{CMS}/%2E")).answers(400, "BadRequest"),
        get("name with %", format!("{CMS}/a%25b")).answers(400, "BadRequest"),
        get("escaped slash", format!("{CMS}/a%2Fb")).answers(404, "NotFound"),
        case("delete name ..", Method::DELETE, format!("{CMS}/%2E%2E"), None, "").answers(400, "BadRequest"),
        case("update name ..", Method::PUT, format!("{CMS}/%2E%2E"), Some(JSON), r#"{"metadata":{"name":".."}}"#)
            .answers(400, "BadRequest"),
        case("patch name ..", Method::PATCH, format!("{CMS}/%2E%2E"), Some(MERGE), "{}").answers(400, "BadRequest"),
        get("long name", format!("{CMS}/{}", "a".repeat(300))).answers(404, "NotFound"),
        get("very long name", format!("{CMS}/{}", "a".repeat(6000))).answers(404, "NotFound"),
        post("create without a namespace", "/api/v1/configmaps", r#"{"metadata":{"name":"t","namespace":"default"}}"#)
            .answers(405, "MethodNotAllowed"),
        case("delete all namespaces' objects", Method::DELETE, "/api/v1/configmaps", None, "").answers(405, "MethodNotAllowed"),
        case("update a collection", Method::PUT, CMS, Some(JSON), r#"{"metadata":{"name":"t"}}"#).answers(405, "MethodNotAllowed"),
        case("patch a collection", Method::PATCH, CMS, Some(MERGE), "{}").answers(405, "MethodNotAllowed"),
        post("create at an object", KEEP, r#"{"metadata":{"name":"keep"}}"#).answers(405, "MethodNotAllowed"),
        post("create at status", &format!("{DEPLOYS}/web/status"), "{}").answers(405, "MethodNotAllowed"),
        case("delete status", Method::DELETE, format!("{DEPLOYS}/web/status"), None, "").answers(405, "MethodNotAllowed"),
        post("create in a missing namespace", "/api/v1/namespaces/nope/configmaps", r#"{"metadata":{"name":"t"}}"#)
            .answers(404, "NotFound"),
    ];
    check_all(&server, cases, &[(KEEP, keep)]).await
}

#[tokio::test]
async fn subresource_and_definition_misuse_gets_a_status_and_changes_nothing() -> TestResult {
    let (_api, server) = start().await?;
    create(&server, DEPLOYS, &deployment("web")).await?;
    create(&server, PODS, &pod("bound", Some("node-1"))).await?;
    create(&server, PODS, &pod("free", None)).await?;
    create(&server, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", &widget_crd()).await?;
    let (web, bound, free) = (format!("{DEPLOYS}/web"), format!("{PODS}/bound"), format!("{PODS}/free"));
    let crd = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gadgets.example.com";
    let before = [
        (web.as_str(), stored(&server, &web).await?),
        (bound.as_str(), stored(&server, &bound).await?),
        (free.as_str(), stored(&server, &free).await?),
        (crd, stored(&server, crd).await?),
        ("/api/v1/namespaces/default", stored(&server, "/api/v1/namespaces/default").await?),
    ];
    let scale = stored(&server, &format!("{web}/scale")).await?;
    let scale_with = |f: &dyn Fn(&mut Value)| {
        let mut v = scale.clone();
        f(&mut v);
        text(&v)
    };
    let mut status = before[0].1.clone();
    status["kind"] = json!("ConfigMap");
    let binding = |name: &str| json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name}, "target": {"kind": "Node", "name": "node-2"}});
    let eviction = |extra: Value| {
        let mut e = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "free"}});
        e.as_object_mut().into_iter().zip(extra.as_object()).for_each(|(e, x)| e.extend(x.clone()));
        text(&e)
    };
    let (status_of, scale_of) = (format!("{web}/status"), format!("{web}/scale"));
    let (bind_free, evict_free) = (format!("{free}/binding"), format!("{free}/eviction"));
    let put = |what, path: &str, body: Bytes| case(what, Method::PUT, path, Some(JSON), body);
    let post = |what, path: &str, body: Bytes| case(what, Method::POST, path, Some(JSON), body);
    let patch = |what, path: &str, ctype, body: &'static str| case(what, Method::PATCH, path, Some(ctype), body);
    let raw = Bytes::from_static;
    let cases = vec![
        put("status: wrong kind", &status_of, text(&status)).answers(400, "BadRequest"),
        put("status: malformed", &status_of, raw(b"{\"status\":")).answers(400, "BadRequest"),
        put("status: other name", &status_of, text(&json!({"metadata": {"name": "other"}}))).answers(400, "BadRequest"),
        patch("status: replicas a string", &status_of, MERGE, r#"{"status":{"replicas":"x"}}"#).answers(422, "Invalid"),
        patch("status: failing test", &format!("{free}/status"), JSON_PATCH, r#"[{"op":"test","path":"/status/phase","value":"Running"}]"#)
            .answers(422, "Invalid"),
        put("scale: a Deployment body", &scale_of, text(&deployment("web"))).answers(400, "BadRequest"),
        put("scale: negative replicas", &scale_of, scale_with(&|v| v["spec"]["replicas"] = json!(-1))).answers(422, "Invalid"),
        put("scale: replicas a string", &scale_of, scale_with(&|v| v["spec"]["replicas"] = json!("many"))).answers(400, "BadRequest"),
        put("scale: other name", &scale_of, scale_with(&|v| v["metadata"]["name"] = json!("other"))).answers(400, "BadRequest"),
        put("scale: stale resourceVersion", &scale_of, scale_with(&|v| v["metadata"]["resourceVersion"] = json!("1")))
            .answers(409, "Conflict"),
        patch("scale: patched replicas a string", &scale_of, MERGE, r#"{"spec":{"replicas":"many"}}"#).answers(422, "Invalid"),
        patch("scale: patched negative replicas", &scale_of, MERGE, r#"{"spec":{"replicas":-1}}"#).answers(422, "Invalid"),
        case("scale of a custom kind without it", Method::GET, "/apis/example.com/v1/namespaces/default/gadgets/g/scale", None, "")
            .answers(404, "NotFound"),
        post("binding: already bound", &format!("{bound}/binding"), text(&binding("bound"))).answers(409, "Conflict"),
        post("binding: malformed", &bind_free, raw(b"{\"target\":")).answers(400, "BadRequest"),
        post("binding: an array", &bind_free, raw(b"[]")).answers(400, "BadRequest"),
        post("binding: wrong kind", &bind_free, text(&json!({"kind": "ConfigMap", "target": {"kind": "Node", "name": "n"}})))
            .answers(400, "BadRequest"),
        post("binding: target a string", &bind_free, text(&json!({"kind": "Binding", "target": "node-2"}))).answers(400, "BadRequest"),
        post("binding: missing pod", &format!("{PODS}/missing/binding"), text(&binding("missing"))).answers(404, "NotFound"),
        put(
            "finalize: other name",
            "/api/v1/namespaces/default/finalize",
            text(&json!({"metadata": {"name": "other"}, "spec": {"finalizers": []}})),
        )
        .answers(400, "BadRequest"),
        put("finalize: finalizers a string", "/api/v1/namespaces/default/finalize", text(&json!({"spec": {"finalizers": "x"}})))
            .answers(400, "BadRequest"),
        put("namespace status: wrong kind", "/api/v1/namespaces/default/status", text(&json!({"kind": "Pod", "apiVersion": "v1"})))
            .answers(400, "BadRequest"),
        patch("definition: scope changed", crd, MERGE, r#"{"spec":{"scope":"Cluster"}}"#).answers(422, "Invalid"),
        patch("definition: kind changed", crd, MERGE, r#"{"spec":{"names":{"kind":"Widget"}}}"#).answers(422, "Invalid"),
        patch("definition: group changed", crd, MERGE, r#"{"spec":{"group":"other.example.com"}}"#).answers(422, "Invalid"),
        patch(
            "definition: printer column path",
            crd,
            JSON_PATCH,
            r#"[{"op":"add","path":"/spec/versions/0/additionalPrinterColumns","value":[{"name":"S","type":"string","jsonPath":"{{{"}]}]"#,
        )
        .answers(422, "Invalid"),
        patch(
            "definition: printer column type",
            crd,
            JSON_PATCH,
            r#"[{"op":"add","path":"/spec/versions/0/additionalPrinterColumns","value":[{"name":"S","type":"text","jsonPath":".spec"}]}]"#,
        )
        .answers(422, "Invalid"),
        post("eviction: malformed", &evict_free, raw(b"{\"metadata\"")).answers(400, "BadRequest"),
        post("eviction: an array", &evict_free, raw(b"[1]")).answers(400, "BadRequest"),
        post("eviction: wrong kind", &evict_free, eviction(json!({"kind": "Pod", "apiVersion": "v1"}))).answers(400, "BadRequest"),
        post("eviction: deleteOptions a string", &evict_free, eviction(json!({"deleteOptions": "now"}))).answers(400, "BadRequest"),
        post("eviction: grace period a string", &evict_free, eviction(json!({"deleteOptions": {"gracePeriodSeconds": "soon"}})))
            .answers(400, "BadRequest"),
        post("eviction: propagation Sideways", &evict_free, eviction(json!({"deleteOptions": {"propagationPolicy": "Sideways"}})))
            .answers(422, "Invalid"),
        post("eviction: stale precondition", &evict_free, eviction(json!({"deleteOptions": {"preconditions": {"resourceVersion": "1"}}})))
            .answers(409, "Conflict"),
        post("eviction: missing pod", &format!("{PODS}/missing/eviction"), eviction(json!({"metadata": {"name": "missing"}})))
            .answers(404, "NotFound"),
    ];
    check_all(&server, cases, &before).await
}

#[tokio::test]
async fn racing_writes_conflict_and_exactly_one_wins() -> TestResult {
    let (_api, server) = start().await?;
    let keep = create(&server, CMS, &cm("keep")).await?;
    let puts = (0..8).map(|i| {
        let mut v = keep.clone();
        v["data"]["k"] = json!(format!("writer-{i}"));
        let server = &server;
        async move { call(server, Method::PUT, KEEP, &[("content-type", JSON)], text(&v)).await }
    });
    let replies = futures::future::join_all(puts).await;
    let mut winners = Vec::new();
    for (i, reply) in replies.into_iter().enumerate() {
        let reply = reply?;
        match reply.status.as_u16() {
            200 => winners.push(format!("writer-{i}")),
            409 => assert_eq!(reply.json()["reason"], "Conflict", "{:?}", reply.body),
            other => panic!("writer {i}: {other} {:?}", reply.body),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(stored(&server, KEEP).await?["data"]["k"], json!(winners[0]));
    let posts = (0..8).map(|_| call(&server, Method::POST, CMS, &[("content-type", JSON)], text(&cm("race"))));
    let codes: Vec<u16> =
        futures::future::join_all(posts).await.into_iter().map(|r| r.map(|r| r.status.as_u16())).collect::<Result<_, _>>()?;
    assert_eq!(codes.iter().filter(|c| **c == 201).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 409).count(), 7, "{codes:?}");
    // Patches without a version retry on conflicts: every one lands. Appliers of their own fields too.
    let patches = (0..12).map(|i| {
        let (path, body) = match i % 2 {
            0 => (KEEP.to_owned(), json!({"data": {format!("m{i}"): "x"}}).to_string()),
            _ => (
                format!("{KEEP}?fieldManager=m{i}"),
                format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: keep\ndata:\n  a{i}: x\n"),
            ),
        };
        let ctype = if i % 2 == 0 { MERGE } else { APPLY };
        let server = &server;
        async move { call(server, Method::PATCH, &path, &[("content-type", ctype)], body).await }
    });
    for reply in futures::future::join_all(patches).await {
        let reply = reply?;
        assert_eq!(reply.status.as_u16(), 200, "{:?}", reply.body);
    }
    let data = stored(&server, KEEP).await?["data"].clone();
    let keys = data.as_object().map(|d| d.keys().filter(|k| k.starts_with('m') || k.starts_with('a')).count());
    assert_eq!(keys, Some(12), "{data}");
    // A delete racing patches: each answer is the object or 404, and the object ends gone.
    let race = (0..8).map(|i| {
        let server = &server;
        async move {
            if i == 4 {
                call(server, Method::DELETE, KEEP, &[], Bytes::new()).await
            } else {
                call(server, Method::PATCH, KEEP, &[("content-type", MERGE)], json!({"data": {"late": i.to_string()}}).to_string()).await
            }
        }
    });
    for reply in futures::future::join_all(race).await {
        let reply = reply?;
        assert!(matches!(reply.status.as_u16(), 200 | 404), "{} {:?}", reply.status, reply.body);
    }
    let gone = call(&server, Method::GET, KEEP, &[], Bytes::new()).await?;
    assert_eq!(gone.status.as_u16(), 404, "{:?}", gone.body);
    Ok(())
}

/// A JSON patch names paths of any depth, so patches can nest an object deeper than any body
/// could; what storage could not read back must be refused, or every read and list of the kind
/// fails afterwards.
#[tokio::test]
async fn patches_cannot_nest_an_object_past_what_storage_reads_back() -> TestResult {
    let (_api, server) = start().await?;
    let mut crd = widget_crd();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"] =
        json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    create(&server, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", &crd).await?;
    let gadgets = "/apis/example.com/v1/namespaces/default/gadgets";
    let gadget = format!("{gadgets}/g");
    create(&server, gadgets, &json!({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}, "spec": {}})).await?;
    let mut value = json!(1);
    for _ in 0..100 {
        value = json!({"a": value});
    }
    // 100 levels below spec: stored fine.
    let first = json!([{"op": "add", "path": "/spec/b", "value": value}]);
    let reply = call(&server, Method::PATCH, &gadget, &[("content-type", JSON_PATCH)], text(&first)).await?;
    assert_eq!(reply.status.as_u16(), 200, "{:?}", reply.body);
    let before = stored(&server, &gadget).await?;
    // 100 more below the first: refused, and the object and its list still read.
    let deeper = json!([{"op": "add", "path": format!("/spec/b{}/b", "/a".repeat(99)), "value": value}]);
    let cases =
        vec![case("a patch nesting past storage", Method::PATCH, gadget.as_str(), Some(JSON_PATCH), text(&deeper)).answers(422, "Invalid")];
    check_all(&server, cases, &[(gadget.as_str(), before)]).await?;
    let list = call(&server, Method::GET, gadgets, &[], Bytes::new()).await?;
    assert_eq!(list.status.as_u16(), 200, "{:?}", list.body);
    Ok(())
}

/// Raw HTTP/1.1 on loopback: sends `request` (while reading: a server refusing a long body
/// answers before it has all of it, and may close before the rest is written), half-closes, and
/// returns what the server answered.
async fn raw_exchange(server: &Server, request: Vec<u8>) -> Result<String, Box<dyn std::error::Error>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(server.addr()).await?;
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        // The server may stop reading once it has answered: a failed write is expected then.
        if write.write_all(&request).await.is_ok() {
            let _ = write.shutdown().await;
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    let reading = async {
        // A reset after the answer ends the reading; what came before it is the answer.
        while let Ok(n) = read.read(&mut buf).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), reading).await?;
    writer.abort();
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// A body cut short by the client (fewer bytes than its Content-Length, then end of stream), and
/// chunked bodies that are malformed or run past the limit, are refused with a `Status`; nothing is
/// written and the server goes on serving.
#[tokio::test]
async fn truncated_and_malformed_framing_is_refused() -> TestResult {
    let (_api, server) = start().await?;
    create(&server, CMS, &cm("keep")).await?;
    let keep = stored(&server, KEEP).await?;
    let body = text(&cm("cut"));
    let mut cut =
        format!("POST {CMS} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
    cut.extend_from_slice(&body[..body.len() / 2]);
    let answer = raw_exchange(&server, cut).await?;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains(r#""reason":"BadRequest""#), "{answer}");
    let chunk = format!(
        "PUT {KEEP} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"
    );
    let answer = raw_exchange(&server, chunk.into_bytes()).await?;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let mut big =
        format!("POST {CMS} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n").into_bytes();
    for _ in 0..4 {
        big.extend_from_slice(format!("{:x}\r\n", 1024 * 1024).as_bytes());
        big.extend(std::iter::repeat_n(b' ', 1024 * 1024));
        big.extend_from_slice(b"\r\n");
    }
    big.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_exchange(&server, big).await?;
    assert!(answer.starts_with("HTTP/1.1 413"), "{}", &answer[..answer.len().min(300)]);
    assert!(answer.contains(r#""reason":"RequestEntityTooLarge""#), "{}", &answer[..answer.len().min(300)]);
    check_all(&server, Vec::new(), &[(KEEP, keep)]).await?;
    let list = stored(&server, CMS).await?;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2), "{list}");
    Ok(())
}

/// `managedFields` a writer sends that do not decode are replaced by the stored ones (none on a
/// create), as kube-apiserver's field manager does: stored, they failed every later apply.
#[tokio::test]
async fn unreadable_managed_fields_are_not_stored() -> TestResult {
    let (_api, server) = start().await?;
    let garbage = json!([{"manager": "a", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"k:{bad": {}}}}]);
    let mut body = cm("keep");
    body["metadata"]["managedFields"] = garbage.clone();
    let created = create(&server, CMS, &body).await?;
    assert!(created["metadata"].get("managedFields").is_none(), "{created}");
    let mut put = stored(&server, KEEP).await?;
    put["metadata"]["managedFields"] = garbage;
    let replaced = call(&server, Method::PUT, KEEP, &[("content-type", JSON)], text(&put)).await?;
    assert_eq!(replaced.status.as_u16(), 200, "{:?}", replaced.body);
    assert!(replaced.json()["metadata"].get("managedFields").is_none(), "{:?}", replaced.body);
    let apply = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: keep\ndata:\n  k: applied\n";
    let applied = call(&server, Method::PATCH, &format!("{KEEP}?fieldManager=a&force=true"), &[("content-type", APPLY)], apply).await?;
    assert_eq!(applied.status.as_u16(), 200, "{:?}", applied.body);
    assert_eq!(applied.json()["data"]["k"], "applied");
    Ok(())
}
