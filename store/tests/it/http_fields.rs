//! The HTTP server's field validation and warnings (duplicate and unknown fields under Strict,
//! Warn and Ignore; deprecated custom resource versions; bare finalizer names), server-side
//! apply of custom resources by their schema, the access and identity reviews, and HTTP/2 (ALPN
//! on HTTPS, prior knowledge on plain HTTP), over real loopback TCP.

use super::http::{Reply, TestResult, call, start};
use bosun_store::ApiServer;
use bosun_store::http::{HttpConfig, Server, serve};
use bytes::Bytes;
use http::{Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const CMS: &str = "/api/v1/namespaces/default/configmaps";
const JSON: (&str, &str) = ("content-type", "application/json");

/// The `Warning` headers of a reply, as their quoted texts unquoted.
fn warnings(reply: &Reply) -> Vec<String> {
    reply
        .headers
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| {
            let text = v.strip_prefix("299 - ").unwrap_or(v);
            serde_json::from_str::<String>(text).unwrap_or_else(|_| text.to_owned())
        })
        .collect()
}

fn message(reply: &Reply) -> String {
    reply.json()["message"].as_str().unwrap_or_default().to_owned()
}

/// A ConfigMap body naming `data.k` twice (and `metadata.name` twice).
fn repeated(name: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {{"name": "x", "name": "{name}"}}, "data": {{"k": "first", "k": "last"}}}}"#
    )
}

#[tokio::test]
async fn repeated_fields_are_refused_under_strict_warned_under_warn_and_let_pass_under_ignore() -> TestResult {
    let (_api, server) = start().await?;
    let strict = call(&server, Method::POST, &format!("{CMS}?fieldValidation=Strict"), &[JSON], repeated("strict")).await?;
    assert_eq!(strict.status, StatusCode::BAD_REQUEST, "{:?}", strict.body);
    assert_eq!(strict.json()["reason"], "BadRequest");
    let text = message(&strict);
    assert!(
        text.contains("ConfigMap in version \"v1\" cannot be handled as a ConfigMap: strict decoding error:")
            && text.contains("duplicate field \"metadata.name\"")
            && text.contains("duplicate field \"data.k\""),
        "{text}"
    );
    let absent = call(&server, Method::GET, &format!("{CMS}/strict"), &[], Bytes::new()).await?;
    assert_eq!(absent.status, StatusCode::NOT_FOUND, "a refused body must not be written");

    for (query, name) in [("?fieldValidation=Warn", "warned"), ("", "defaulted")] {
        let warned = call(&server, Method::POST, &format!("{CMS}{query}"), &[JSON], repeated(name)).await?;
        assert_eq!(warned.status, StatusCode::CREATED, "{:?}", warned.body);
        assert_eq!(warnings(&warned), ["duplicate field \"metadata.name\"", "duplicate field \"data.k\""]);
        assert!(warned.headers.get_all("warning").iter().all(|v| v.to_str().is_ok_and(|v| v.starts_with("299 - \""))));
        assert_eq!(warned.json()["data"]["k"], "last", "the last of repeated values wins");
        assert_eq!(warned.json()["metadata"]["name"], name);
    }
    let ignored = call(&server, Method::POST, &format!("{CMS}?fieldValidation=Ignore"), &[JSON], repeated("ignored")).await?;
    assert_eq!(ignored.status, StatusCode::CREATED, "{:?}", ignored.body);
    assert!(warnings(&ignored).is_empty());

    // Update, merge patch and server-side apply (YAML) bodies are checked too.
    let put = r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "warned"}, "data": {"a": "1", "a": "2"}}"#;
    let refused = call(&server, Method::PUT, &format!("{CMS}/warned?fieldValidation=Strict"), &[JSON], put).await?;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{:?}", refused.body);
    assert!(message(&refused).contains("duplicate field \"data.a\""), "{}", message(&refused));
    let merge = ("content-type", "application/merge-patch+json");
    let patch = r#"{"data": {"b": "1", "b": "2"}, "bogus": 1}"#;
    let refused = call(&server, Method::PATCH, &format!("{CMS}/warned?fieldValidation=Strict"), &[merge], patch).await?;
    // A patch's strict decoding errors are the patched object's: 422, as kube-apiserver answers.
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", refused.body);
    let text = message(&refused);
    assert!(text.contains("duplicate field \"data.b\"") && text.contains("unknown field \"bogus\""), "{text}");
    let patched = call(&server, Method::PATCH, &format!("{CMS}/warned?fieldValidation=Warn"), &[merge], patch).await?;
    assert_eq!(patched.status, StatusCode::OK, "{:?}", patched.body);
    assert_eq!(warnings(&patched), ["duplicate field \"data.b\"", "unknown field \"bogus\""]);

    let apply = ("content-type", "application/apply-patch+yaml");
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  k: one\n  k: two\n";
    let path = format!("{CMS}/applied?fieldManager=test&fieldValidation=Strict");
    let refused = call(&server, Method::PATCH, &path, &[apply], yaml).await?;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{:?}", refused.body);
    assert!(message(&refused).contains("duplicate field \"data.k\""), "{}", message(&refused));
    let applied = call(&server, Method::PATCH, &path.replace("Strict", "Warn"), &[apply], yaml).await?;
    assert_eq!(applied.status, StatusCode::CREATED, "an apply that creates answers 201: {:?}", applied.body);
    assert_eq!(warnings(&applied), ["duplicate field \"data.k\""]);
    assert_eq!(applied.json()["data"]["k"], "two");
    Ok(())
}

#[tokio::test]
async fn bare_finalizer_names_get_a_warning() -> TestResult {
    let (_api, server) = start().await?;
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "f", "finalizers": ["cleanup", "example.com/cleanup", "orphan"]}});
    let created = call(&server, Method::POST, CMS, &[JSON], serde_json::to_vec(&body)?).await?;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(
        warnings(&created),
        [
            "metadata.finalizers: \"cleanup\": prefer a domain-qualified finalizer name including a path (/) to avoid accidental conflicts with other finalizer writers"
        ]
    );
    let merge = ("content-type", "application/merge-patch+json");
    let patched = call(&server, Method::PATCH, &format!("{CMS}/f"), &[merge], r#"{"metadata": {"finalizers": ["mine"]}}"#).await?;
    assert_eq!(patched.status, StatusCode::OK, "{:?}", patched.body);
    assert_eq!(warnings(&patched).len(), 1);
    assert!(warnings(&patched)[0].contains("\"mine\""), "{:?}", warnings(&patched));
    let unrelated = call(&server, Method::PATCH, &format!("{CMS}/f"), &[merge], r#"{"data": {"a": "b"}}"#).await?;
    assert!(warnings(&unrelated).is_empty(), "{:?}", warnings(&unrelated));
    Ok(())
}

/// A definition of `widgets.example.com` with a deprecated v1beta1 (default warning), a
/// deprecated v1alpha1 with its own warning, and v1; its schema has an associative list
/// (`ports` by `name`), a set (`tags`), an atomic list (`hosts`) and an atomic map (`selector`).
pub(crate) fn widget_crd() -> Value {
    let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
            "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}},
        "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
        "hosts": {"type": "array", "items": {"type": "string"}},
        "selector": {"type": "object", "x-kubernetes-map-type": "atomic", "additionalProperties": {"type": "string"}},
    }}}});
    let version =
        |name: &str, storage: bool| json!({"name": name, "served": true, "storage": storage, "schema": {"openAPIV3Schema": schema}});
    let mut alpha = version("v1alpha1", false);
    alpha["deprecated"] = json!(true);
    alpha["deprecationWarning"] = json!("v1alpha1 widgets go away soon");
    let mut beta = version("v1beta1", false);
    beta["deprecated"] = json!(true);
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [alpha, beta, version("v1", true)]}})
}

async fn with_widgets() -> Result<(Arc<ApiServer>, Server), Box<dyn std::error::Error>> {
    let (api, server) = start().await?;
    let crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
    let created = call(&server, Method::POST, crds, &[JSON], serde_json::to_vec(&widget_crd())?).await?;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    Ok((api, server))
}

#[tokio::test]
async fn deprecated_custom_resource_versions_warn_on_every_request() -> TestResult {
    let (_api, server) = with_widgets().await?;
    let list = |v: &str| format!("/apis/example.com/{v}/namespaces/default/widgets");
    let beta = call(&server, Method::GET, &list("v1beta1"), &[], Bytes::new()).await?;
    assert_eq!(beta.status, StatusCode::OK, "{:?}", beta.body);
    assert_eq!(warnings(&beta), ["example.com/v1beta1 Widget is deprecated; use example.com/v1 Widget"]);
    let alpha = call(&server, Method::GET, &format!("{}/missing", list("v1alpha1")), &[], Bytes::new()).await?;
    assert_eq!(alpha.status, StatusCode::NOT_FOUND);
    assert_eq!(warnings(&alpha), ["v1alpha1 widgets go away soon"], "failed requests warn too");
    let v1 = call(&server, Method::GET, &list("v1"), &[], Bytes::new()).await?;
    assert!(warnings(&v1).is_empty(), "{:?}", warnings(&v1));
    let pods = call(&server, Method::GET, "/api/v1/namespaces/default/pods", &[], Bytes::new()).await?;
    assert!(pods.headers.get("warning").is_none());
    Ok(())
}

#[tokio::test]
async fn server_side_apply_merges_custom_resources_by_their_schema() -> TestResult {
    let (_api, server) = with_widgets().await?;
    let path = "/apis/example.com/v1/namespaces/default/widgets/w";
    let apply = |manager: &'static str, spec: Value| {
        let server = &server;
        async move {
            let body = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": spec});
            let yaml = serde_yaml::to_string(&body)?;
            call(
                server,
                Method::PATCH,
                &format!("{path}?fieldManager={manager}"),
                &[("content-type", "application/apply-patch+yaml")],
                yaml,
            )
            .await
        }
    };
    let first =
        apply("alice", json!({"ports": [{"name": "http", "port": 80}], "tags": ["a"], "hosts": ["x"], "selector": {"app": "w"}})).await?;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    let second = apply("bob", json!({"ports": [{"name": "metrics", "port": 9090}], "tags": ["b"]})).await?;
    assert_eq!(second.status, StatusCode::OK, "{:?}", second.body);
    let spec = &second.json()["spec"];
    assert_eq!(spec["ports"], json!([{"name": "http", "port": 80}, {"name": "metrics", "port": 9090}]), "entries merge by name");
    assert_eq!(spec["tags"], json!(["a", "b"]), "a set merges by value");
    let managed = second.json()["metadata"]["managedFields"].clone();
    let bob = managed.as_array().into_iter().flatten().find(|m| m["manager"] == "bob").cloned().unwrap_or_default();
    let ports = &bob["fieldsV1"]["f:spec"]["f:ports"];
    assert!(ports.get("k:{\"name\":\"metrics\"}").is_some() && ports.get("k:{\"name\":\"http\"}").is_none(), "{bob}");

    // Atomic values belong whole to one manager: another one's different value conflicts.
    let conflict = apply("bob", json!({"hosts": ["y"]})).await?;
    assert_eq!(conflict.status, StatusCode::CONFLICT, "{:?}", conflict.body);
    let conflict = apply("bob", json!({"selector": {"tier": "web"}})).await?;
    assert_eq!(conflict.status, StatusCode::CONFLICT, "{:?}", conflict.body);

    // Whatever the schema, metadata is ObjectMeta: finalizers are a set, labels granular.
    let meta = |manager: &'static str, finalizer: &'static str, label: &'static str| {
        let server = &server;
        async move {
            let body = json!({"apiVersion": "example.com/v1", "kind": "Widget",
                "metadata": {"name": "w", "finalizers": [finalizer], "labels": {label: "yes"}}});
            let yaml = serde_yaml::to_string(&body)?;
            call(
                server,
                Method::PATCH,
                &format!("{path}?fieldManager={manager}"),
                &[("content-type", "application/apply-patch+yaml")],
                yaml,
            )
            .await
        }
    };
    assert_eq!(meta("carol", "example.com/a", "a").await?.status, StatusCode::OK);
    let both = meta("dave", "example.com/b", "b").await?;
    assert_eq!(both.status, StatusCode::OK, "{:?}", both.body);
    assert_eq!(both.json()["metadata"]["finalizers"], json!(["example.com/a", "example.com/b"]));
    assert_eq!(both.json()["metadata"]["labels"], json!({"a": "yes", "b": "yes"}));

    // Dropping an entry from an apply removes only that manager's entry.
    let third = apply("alice", json!({"tags": ["a"], "hosts": ["x"], "selector": {"app": "w"}})).await?;
    assert_eq!(third.status, StatusCode::OK, "{:?}", third.body);
    assert_eq!(third.json()["spec"]["ports"], json!([{"name": "metrics", "port": 9090}]));
    Ok(())
}

#[tokio::test]
async fn access_and_identity_reviews_answer_and_are_discovered() -> TestResult {
    let (_api, server) = start().await?;
    let ssar = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"namespace": "default", "verb": "create", "group": "apps", "resource": "deployments"}}});
    let path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
    let answered = call(&server, Method::POST, path, &[JSON], serde_json::to_vec(&ssar)?).await?;
    assert_eq!(answered.status, StatusCode::CREATED, "{:?}", answered.body);
    assert_eq!(answered.json()["status"]["allowed"], true);
    assert_eq!(answered.json()["spec"]["resourceAttributes"]["resource"], "deployments");
    let listed = call(&server, Method::GET, path, &[], Bytes::new()).await?;
    assert_eq!(listed.status, StatusCode::METHOD_NOT_ALLOWED);
    let who = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let path = "/apis/authentication.k8s.io/v1/selfsubjectreviews";
    let answered = call(&server, Method::POST, path, &[JSON, ("impersonate-user", "jane")], serde_json::to_vec(&who)?).await?;
    assert_eq!(answered.status, StatusCode::CREATED, "{:?}", answered.body);
    assert_eq!(answered.json()["status"]["userInfo"]["username"], "jane");
    let discovery = call(&server, Method::GET, "/apis/authorization.k8s.io/v1", &[], Bytes::new()).await?.json();
    let names: Vec<&str> = discovery["resources"].as_array().into_iter().flatten().filter_map(|r| r["name"].as_str()).collect();
    assert!(names.contains(&"selfsubjectaccessreviews") && names.contains(&"selfsubjectrulesreviews"), "{names:?}");
    let groups = call(&server, Method::GET, "/apis", &[], Bytes::new()).await?.json();
    assert!(groups["groups"].as_array().into_iter().flatten().any(|g| g["name"] == "authentication.k8s.io"), "{groups}");
    Ok(())
}

fn tls_client(server: &Server, alpn: &[&[u8]]) -> Result<tokio_rustls::TlsConnector, Box<dyn std::error::Error>> {
    use base64::Engine as _;
    let pem = server.ca_pem().ok_or("no https")?;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(base64::engine::general_purpose::STANDARD.decode(b64)?))?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

async fn tls_connect(
    server: &Server,
    alpn: &[&[u8]],
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, Box<dyn std::error::Error>> {
    let tcp = tokio::net::TcpStream::connect(server.https_addr().ok_or("no https")?).await?;
    Ok(tls_client(server, alpn)?.connect(rustls::pki_types::ServerName::try_from("127.0.0.1")?, tcp).await?)
}

#[tokio::test]
async fn https_speaks_http2_by_alpn_and_watches_stream_over_it() -> TestResult {
    let api = ApiServer::in_memory();
    let server = serve(api.clone(), HttpConfig::for_api_server(&api).https(([127, 0, 0, 1], 0).into())).await?;
    let tls = tls_connect(&server, &[b"h2", b"http/1.1"]).await?;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let base = format!("https://127.0.0.1:{}", server.https_addr().map(|a| a.port()).unwrap_or_default());
    let get = Request::builder().uri(format!("{base}/api/v1/namespaces/default")).body(Full::new(Bytes::new()))?;
    let resp = send.send_request(get).await?;
    assert_eq!((resp.status(), resp.version()), (StatusCode::OK, Version::HTTP_2));

    // A watch is one long stream; a write on another stream of the same connection shows up in it.
    let watch = Request::builder().uri(format!("{base}{CMS}?watch=true&timeoutSeconds=10")).body(Full::new(Bytes::new()))?;
    let resp = send.send_request(watch).await?;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get("transfer-encoding").is_none());
    let mut body = resp.into_body();
    let create = Request::builder()
        .method(Method::POST)
        .uri(format!("{base}{CMS}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(r#"{"metadata": {"name": "over-h2"}}"#)))?;
    assert_eq!(send.send_request(create).await?.status(), StatusCode::CREATED);
    let mut seen = Vec::new();
    let event = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                seen.extend_from_slice(&data);
                if seen.ends_with(b"\n") {
                    return Ok::<_, Box<dyn std::error::Error>>(String::from_utf8_lossy(&seen).into_owned());
                }
            }
        }
        Err("the watch ended".into())
    })
    .await??;
    assert!(event.contains("\"ADDED\"") && event.contains("over-h2"), "{event}");

    // Clients that ask for HTTP/1.1, or for nothing (WebSocket dialers), get HTTP/1.1.
    for alpn in [&[&b"http/1.1"[..]][..], &[][..]] {
        let tls = tls_connect(&server, alpn).await?;
        assert_ne!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let resp = send.send_request(Request::builder().uri("/version").header("host", "127.0.0.1").body(Full::new(Bytes::new()))?).await?;
        assert_eq!((resp.status(), resp.version()), (StatusCode::OK, Version::HTTP_11));
    }
    let metrics = call(&server, Method::GET, "/metrics", &[], Bytes::new()).await?;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(text.contains("bosun_http_requests_total{protocol=\"HTTP/2\"} 3"), "{text}");
    Ok(())
}

#[tokio::test]
async fn plain_http_takes_http2_with_prior_knowledge() -> TestResult {
    let (_api, server) = start().await?;
    let tcp = tokio::net::TcpStream::connect(server.addr()).await?;
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let req = Request::builder().uri(format!("{}/api/v1/namespaces", server.url())).body(Full::new(Bytes::new()))?;
    let resp = send.send_request(req).await?;
    assert_eq!((resp.status(), resp.version()), (StatusCode::OK, Version::HTTP_2));
    let body = resp.into_body().collect().await?.to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("kube-system"));
    Ok(())
}
