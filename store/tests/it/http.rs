//! The HTTP server over real loopback TCP, in front of the in-process `ApiServer`: discovery,
//! OpenAPI, CRUD, Table output, watch framing, patch types, errors, field validation, metrics.

use bosun_core::k8s_openapi::api::core::v1::ConfigMap;
use bosun_core::{Api, Client};
use bosun_store::ApiServer;
use bosun_store::http::{HttpConfig, Server, serve};
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

pub(crate) type TestResult = Result<(), Box<dyn std::error::Error>>;

/// An `ApiServer` behind a plain-HTTP server on an ephemeral loopback port.
pub(crate) async fn start() -> Result<(Arc<ApiServer>, Server), Box<dyn std::error::Error>> {
    let api = ApiServer::in_memory();
    let server = serve(api.clone(), HttpConfig::for_api_server(&api)).await?;
    Ok((api, server))
}

/// A finished response.
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

pub(crate) async fn call(
    server: &Server,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Reply, Box<dyn std::error::Error>> {
    let client = HyperClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::builder().method(method).uri(format!("{}{path}", server.url()));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client.request(req.body(Full::new(body.into()))?).await?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect()).await??.to_bytes();
    Ok(Reply { status, headers, body })
}

async fn get(server: &Server, path: &str) -> Result<Reply, Box<dyn std::error::Error>> {
    call(server, Method::GET, path, &[], Bytes::new()).await
}

const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
}

#[tokio::test]
async fn discovery_lists_groups_resources_and_short_names() -> TestResult {
    let (_api, server) = start().await?;
    let version = get(&server, "/version").await?.json();
    assert_eq!((version["major"].as_str(), version["minor"].as_str()), (Some("1"), Some("32")));
    assert_eq!(get(&server, "/api").await?.json()["versions"], json!(["v1"]));
    let groups = get(&server, "/apis").await?.json();
    assert!(groups["groups"].as_array().into_iter().flatten().any(|g| g["name"] == "apps"));
    let core = get(&server, "/api/v1").await?.json();
    let pods = core["resources"].as_array().into_iter().flatten().find(|r| r["name"] == "pods").cloned().unwrap_or_default();
    assert_eq!(pods["shortNames"], json!(["po"]));
    assert_eq!(pods["categories"], json!(["all"]));
    let agg = call(
        &server,
        Method::GET,
        "/apis",
        &[("accept", "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json")],
        Bytes::new(),
    )
    .await?;
    assert!(agg.headers["content-type"].to_str()?.contains("as=APIGroupDiscoveryList"));
    let apps = agg.json()["items"].as_array().into_iter().flatten().find(|g| g["metadata"]["name"] == "apps").cloned().unwrap_or_default();
    let deploy = apps["versions"][0]["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["resource"] == "deployments")
        .cloned()
        .unwrap_or_default();
    assert_eq!(deploy["scope"], "Namespaced");
    let scale = deploy["subresources"].as_array().into_iter().flatten().find(|s| s["subresource"] == "scale").cloned().unwrap_or_default();
    assert_eq!(scale["responseKind"], json!({"group": "autoscaling", "version": "v1", "kind": "Scale"}));
    assert_eq!(get(&server, "/apis/nothing.example.com/v1").await?.status, StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn crud_over_http_returns_objects_and_status_errors() -> TestResult {
    let (_api, server) = start().await?;
    let path = "/api/v1/namespaces/default/configmaps";
    let created = call(&server, Method::POST, path, &[("content-type", "application/json")], serde_json::to_vec(&cm("a"))?).await?;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert!(created.json()["metadata"]["uid"].is_string());
    let again = call(&server, Method::POST, path, &[("content-type", "application/json")], serde_json::to_vec(&cm("a"))?).await?;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!((again.json()["kind"].as_str(), again.json()["reason"].as_str()), (Some("Status"), Some("AlreadyExists")));
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\ndata:\n  x: y\n";
    let created = call(&server, Method::POST, path, &[("content-type", "application/yaml")], yaml).await?;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let list = get(&server, path).await?.json();
    assert_eq!(list["kind"], "ConfigMapList");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2));
    let missing = get(&server, &format!("{path}/nope")).await?;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json()["reason"], "NotFound");
    let mut stale = created.json();
    stale["metadata"]["resourceVersion"] = json!("1");
    stale["data"]["x"] = json!("z");
    let put =
        call(&server, Method::PUT, &format!("{path}/b"), &[("content-type", "application/json")], serde_json::to_vec(&stale)?).await?;
    assert_eq!(put.status, StatusCode::CONFLICT, "{:?}", put.body);
    let deleted = call(
        &server,
        Method::DELETE,
        &format!("{path}/b"),
        &[("content-type", "application/json")],
        r#"{"propagationPolicy":"Background"}"#,
    )
    .await?;
    assert_eq!(deleted.status, StatusCode::OK, "{:?}", deleted.body);
    assert_eq!(get(&server, &format!("{path}/b")).await?.status, StatusCode::NOT_FOUND);
    let gone = call(&server, Method::DELETE, path, &[], Bytes::new()).await?;
    assert_eq!(gone.status, StatusCode::OK, "{:?}", gone.body);
    assert_eq!(get(&server, path).await?.json()["items"], json!([]));
    Ok(())
}

#[tokio::test]
async fn bad_bodies_get_400_413_and_415() -> TestResult {
    let (_api, server) = start().await?;
    let path = "/api/v1/namespaces/default/configmaps";
    let bad =
        call(&server, Method::POST, path, &[("content-type", "application/json")], "{\n \"metadata\": {\"name\": \"a\"},\n \"data\" 1\n}")
            .await?;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.json()["message"].as_str().is_some_and(|m| m.contains("line 3")), "{:?}", bad.json());
    let bad = call(&server, Method::POST, path, &[("content-type", "application/yaml")], "metadata:\n  name: [a\ndata: 1\n").await?;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let mut big = cm("big");
    big["data"]["k"] = json!("x".repeat(3 * 1024 * 1024 + 10));
    let big = call(&server, Method::POST, path, &[("content-type", "application/json")], serde_json::to_vec(&big)?).await?;
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(big.json()["reason"], "RequestEntityTooLarge");
    assert_eq!(get(&server, &format!("{path}/big")).await?.status, StatusCode::NOT_FOUND);
    call(&server, Method::POST, path, &[("content-type", "application/json")], serde_json::to_vec(&cm("a"))?).await?;
    let weird = call(&server, Method::PATCH, &format!("{path}/a"), &[("content-type", "application/xml")], "<a/>").await?;
    assert_eq!(weird.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(weird.json()["reason"], "UnsupportedMediaType");
    let proto = call(&server, Method::GET, path, &[("accept", "application/vnd.kubernetes.protobuf")], Bytes::new()).await?;
    assert_eq!(proto.status, StatusCode::NOT_ACCEPTABLE);
    Ok(())
}

#[tokio::test]
async fn the_four_patch_types_reach_the_api_layer() -> TestResult {
    let (_api, server) = start().await?;
    let path = "/api/v1/namespaces/default/configmaps";
    call(&server, Method::POST, path, &[("content-type", "application/json")], serde_json::to_vec(&cm("p"))?).await?;
    let item = format!("{path}/p");
    let merge = call(&server, Method::PATCH, &item, &[("content-type", "application/merge-patch+json")], r#"{"data":{"m":"1"}}"#).await?;
    assert_eq!(merge.status, StatusCode::OK, "{:?}", merge.body);
    let jp = r#"[{"op":"add","path":"/data/j","value":"2"}]"#;
    let json_patch = call(&server, Method::PATCH, &item, &[("content-type", "application/json-patch+json")], jp).await?;
    assert_eq!(json_patch.status, StatusCode::OK, "{:?}", json_patch.body);
    let smp =
        call(&server, Method::PATCH, &item, &[("content-type", "application/strategic-merge-patch+json")], r#"{"data":{"s":"3"}}"#).await?;
    assert_eq!(smp.status, StatusCode::OK, "{:?}", smp.body);
    let apply = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: p\ndata:\n  a: \"4\"\n";
    let ssa = call(
        &server,
        Method::PATCH,
        &format!("{item}?fieldManager=test&force=true"),
        &[("content-type", "application/apply-patch+yaml")],
        apply,
    )
    .await?;
    assert_eq!(ssa.status, StatusCode::OK, "{:?}", ssa.body);
    let data = get(&server, &item).await?.json()["data"].clone();
    for (k, v) in [("m", "1"), ("j", "2"), ("s", "3"), ("a", "4")] {
        assert_eq!(data[k], v, "{data}");
    }
    Ok(())
}

#[tokio::test]
async fn strict_field_validation_refuses_unknown_fields_and_warn_warns() -> TestResult {
    let (_api, server) = start().await?;
    let path = "/apis/apps/v1/namespaces/default/deployments";
    let body = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "nginx", "imagePullPolicyy": "Always"}]}}}});
    let strict = call(
        &server,
        Method::POST,
        &format!("{path}?fieldValidation=Strict"),
        &[("content-type", "application/json")],
        serde_json::to_vec(&body)?,
    )
    .await?;
    assert_eq!(strict.status, StatusCode::BAD_REQUEST);
    let message = strict.json()["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("unknown field \"spec.template.spec.containers[0].imagePullPolicyy\""), "{message}");
    assert_eq!(get(&server, &format!("{path}/web")).await?.status, StatusCode::NOT_FOUND);
    let warn = call(
        &server,
        Method::POST,
        &format!("{path}?fieldValidation=Warn"),
        &[("content-type", "application/json")],
        serde_json::to_vec(&body)?,
    )
    .await?;
    assert_eq!(warn.status, StatusCode::CREATED, "{:?}", warn.body);
    let warning = warn.headers.get("warning").map(|v| v.to_str().unwrap_or_default().to_owned()).unwrap_or_default();
    assert!(warning.starts_with("299 - ") && warning.contains("imagePullPolicyy"), "{warning}");
    Ok(())
}

#[tokio::test]
async fn get_answers_tables_with_kubectl_columns() -> TestResult {
    let (api, server) = start().await?;
    let cms: Api<ConfigMap> = Api::namespaced(api.clone() as Arc<dyn Client>, "default");
    cms.create(&serde_json::from_value(cm("t"))?, &Default::default()).await?;
    let table = call(&server, Method::GET, "/api/v1/namespaces/default/configmaps", &[("accept", TABLE)], Bytes::new()).await?.json();
    assert_eq!(table["kind"], "Table");
    let columns: Vec<&str> = table["columnDefinitions"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(columns, ["Name", "Data", "Age"]);
    assert_eq!(table["rows"][0]["cells"][0], "t");
    assert_eq!(table["rows"][0]["cells"][1], 1);
    assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    let one =
        call(&server, Method::GET, "/api/v1/namespaces/default/configmaps/t?includeObject=Object", &[("accept", TABLE)], Bytes::new())
            .await?
            .json();
    assert_eq!(one["rows"][0]["object"]["data"]["k"], "v");
    Ok(())
}

#[tokio::test]
async fn watch_streams_newline_terminated_events_until_its_timeout() -> TestResult {
    let (api, server) = start().await?;
    let cms: Api<ConfigMap> = Api::namespaced(api.clone() as Arc<dyn Client>, "default");
    let first = cms.create(&serde_json::from_value(cm("w"))?, &Default::default()).await?;
    let rv = first.metadata.resource_version.clone().unwrap_or_default();
    let watcher = {
        let url = format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=2");
        let server_url = server.url();
        tokio::spawn(async move {
            let client = HyperClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
            let req = Request::builder().uri(format!("{server_url}{url}")).body(Full::new(Bytes::new()))?;
            let resp = client.request(req).await?;
            let started = std::time::Instant::now();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((body, started.elapsed()))
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut changed = first.clone();
    changed.data = Some([("k".to_owned(), "changed".to_owned())].into());
    cms.replace(&changed, &Default::default()).await?;
    let (body, elapsed) = watcher.await?.map_err(|e| e.to_string())?;
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    let text = String::from_utf8(body.to_vec())?;
    assert!(text.ends_with('\n'));
    let events: Vec<Value> = text.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    assert_eq!(events.len(), 1, "{text}");
    assert_eq!(events[0]["type"], "MODIFIED");
    assert_eq!(events[0]["object"]["data"]["k"], "changed");
    Ok(())
}

#[tokio::test]
async fn a_watch_from_a_compacted_version_ends_with_a_410_error_event() -> TestResult {
    let api = ApiServer::builder(Arc::new(bosun_store::MemoryStorage::new())).watch_history(4).build()?;
    let server = serve(api.clone(), HttpConfig::new().catalog(api.clone())).await?;
    let cms: Api<ConfigMap> = Api::namespaced(api.clone() as Arc<dyn Client>, "default");
    let first = cms.create(&serde_json::from_value(cm("old"))?, &Default::default()).await?;
    for i in 0..20 {
        cms.create(&serde_json::from_value(cm(&format!("n{i}")))?, &Default::default()).await?;
    }
    api.storage().compact(api.storage().current_revision().await?).await?;
    let rv = first.metadata.resource_version.unwrap_or_default();
    let reply = get(&server, &format!("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=3")).await?;
    let text = String::from_utf8(reply.body.to_vec())?;
    let last: Value = text.lines().last().map(serde_json::from_str).transpose()?.unwrap_or_default();
    assert_eq!(reply.status, StatusCode::OK, "{text}");
    assert_eq!(last["type"], "ERROR", "{text}");
    assert_eq!(last["object"]["code"], 410, "{text}");
    assert_eq!(last["object"]["kind"], "Status", "{text}");
    Ok(())
}

#[tokio::test]
async fn health_openapi_and_metrics_are_served() -> TestResult {
    let (_api, server) = start().await?;
    for p in ["/healthz", "/livez", "/readyz"] {
        let r = get(&server, p).await?;
        assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"ok"[..]));
    }
    let root = get(&server, "/openapi/v3").await?.json();
    let url = root["paths"]["apis/apps/v1"]["serverRelativeURL"].as_str().unwrap_or_default().to_owned();
    let doc = get(&server, &url).await?.json();
    assert!(doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"].is_object());
    let v2 = get(&server, "/openapi/v2").await?.json();
    assert_eq!(v2["swagger"], "2.0");
    get(&server, "/api/v1/namespaces/default/pods").await?;
    let metrics = String::from_utf8(get(&server, "/metrics").await?.body.to_vec())?;
    assert!(metrics.contains("apiserver_request_total{verb=\"LIST\",resource=\"pods\",code=\"200\"} 1"), "{metrics}");
    assert!(metrics.contains("apiserver_request_duration_seconds_count{verb=\"LIST\",resource=\"pods\"} 1"));
    Ok(())
}

#[tokio::test]
async fn deployments_scale_through_the_scale_subresource() -> TestResult {
    let (_api, server) = start().await?;
    let path = "/apis/apps/v1/namespaces/default/deployments";
    let body = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
    let created = call(&server, Method::POST, path, &[("content-type", "application/json")], serde_json::to_vec(&body)?).await?;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let scale = call(
        &server,
        Method::PATCH,
        &format!("{path}/web/scale"),
        &[("content-type", "application/merge-patch+json")],
        r#"{"spec":{"replicas":4}}"#,
    )
    .await?;
    assert_eq!(scale.status, StatusCode::OK, "{:?}", scale.body);
    assert_eq!((scale.json()["kind"].as_str(), scale.json()["spec"]["replicas"].as_i64()), (Some("Scale"), Some(4)));
    assert_eq!(get(&server, &format!("{path}/web")).await?.json()["spec"]["replicas"], 4);
    let status = get(&server, &format!("{path}/web/status")).await?;
    assert_eq!(status.status, StatusCode::OK);
    assert_eq!(get(&server, &format!("{path}/web/nosuch")).await?.status, StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn https_serves_with_the_certificate_in_the_kubeconfig() -> TestResult {
    let api = ApiServer::in_memory();
    let server = serve(api.clone(), HttpConfig::new().https(([127, 0, 0, 1], 0).into()).catalog(api)).await?;
    let kubeconfig = server.kubeconfig();
    assert!(kubeconfig.contains(&format!("server: https://{}", server.https_addr().map(|a| a.to_string()).unwrap_or_default())));
    assert!(kubeconfig.contains("certificate-authority-data: "));
    let ca = server.ca_pem().unwrap_or_default().to_owned();
    let mut roots = rustls::RootCertStore::empty();
    let der = pem_to_der(&ca)?;
    roots.add(rustls::pki_types::CertificateDer::from(der))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.https_addr().ok_or("no https")?).await?;
    let tls = connector.connect(rustls::pki_types::ServerName::try_from("127.0.0.1")?, tcp).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let resp = send.send_request(Request::builder().uri("/version").header("host", "127.0.0.1").body(Full::new(Bytes::new()))?).await?;
    assert_eq!(resp.status(), StatusCode::OK);
    Ok(())
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    use base64::Engine as _;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    Ok(base64::engine::general_purpose::STANDARD.decode(b64)?)
}

/// A node connection that serves a fixed log and echoes exec sessions' requests back.
struct FakeNodes {
    seen: tokio::sync::mpsc::UnboundedSender<bosun_store::http::ExecRequest>,
}

#[async_trait::async_trait]
impl bosun_store::http::NodeConnector for FakeNodes {
    async fn logs(&self, namespace: &str, pod: &str, params: &bosun_core::LogParams) -> bosun_core::Result<bosun_core::LogStream> {
        let text = format!("{namespace}/{pod} tail={:?} container={:?}\nsecond line\n", params.tail_lines, params.container);
        Ok(futures::stream::iter(vec![Ok(Bytes::from(text))]).boxed())
    }

    fn exec_protocols(&self) -> Vec<String> {
        vec!["v5.channel.k8s.io".into()]
    }

    async fn exec(&self, request: bosun_store::http::ExecRequest, mut io: Box<dyn bosun_store::http::ExecIo>) -> bosun_core::Result<()> {
        use tokio::io::AsyncWriteExt;
        let _ = self.seen.send(request);
        io.write_all(b"hello").await.map_err(|e| bosun_core::Error::internal(e.to_string()))?;
        io.shutdown().await.map_err(|e| bosun_core::Error::internal(e.to_string()))
    }
}

#[tokio::test]
async fn logs_and_exec_go_to_the_node_connection() -> TestResult {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let api = ApiServer::in_memory();
    let plain = serve(api.clone(), HttpConfig::new().catalog(api.clone())).await?;
    let refused = call(&plain, Method::POST, "/api/v1/namespaces/default/pods/p/exec?command=ls", &[], Bytes::new()).await?;
    assert_eq!(refused.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(refused.json()["kind"], "Status");

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let server = serve(api.clone(), HttpConfig::new().catalog(api).nodes(Arc::new(FakeNodes { seen: tx }))).await?;
    let log = get(&server, "/api/v1/namespaces/default/pods/p/log?tailLines=2&container=c").await?;
    assert_eq!(log.status, StatusCode::OK);
    assert_eq!(std::str::from_utf8(&log.body)?, "default/p tail=Some(2) container=Some(\"c\")\nsecond line\n");

    let mut tcp = tokio::net::TcpStream::connect(server.addr()).await?;
    let req = "GET /api/v1/namespaces/default/pods/p/exec?command=echo&command=hi&stdout=true&container=c HTTP/1.1\r\n\
        Host: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v5.channel.k8s.io, v4.channel.k8s.io\r\n\r\n";
    tcp.write_all(req.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await??;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    assert!(answer.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") && answer.contains("v5.channel.k8s.io"), "{answer}");
    assert!(answer.ends_with("hello"), "{answer}");
    let request = rx.recv().await.ok_or("no exec request")?;
    assert_eq!(
        (request.command, request.container.as_deref(), request.stdout, request.stdin),
        (vec!["echo".to_owned(), "hi".to_owned()], Some("c"), true, false)
    );
    Ok(())
}

#[tokio::test]
async fn pods_bind_and_evict_through_subresources() -> TestResult {
    let (_api, server) = start().await?;
    let pods = "/api/v1/namespaces/default/pods";
    let pod =
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
    let created = call(&server, Method::POST, pods, &[("content-type", "application/json")], serde_json::to_vec(&pod)?).await?;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"}});
    let bound =
        call(&server, Method::POST, &format!("{pods}/p/binding"), &[("content-type", "application/json")], serde_json::to_vec(&binding)?)
            .await?;
    assert_eq!(bound.status, StatusCode::CREATED, "{:?}", bound.body);
    assert_eq!(get(&server, &format!("{pods}/p")).await?.json()["spec"]["nodeName"], "node-1");
    let table = call(&server, Method::GET, &format!("{pods}/p"), &[("accept", TABLE)], Bytes::new()).await?.json();
    let columns: Vec<&str> = table["columnDefinitions"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(columns[..5], ["Name", "Ready", "Status", "Restarts", "Age"]);
    assert_eq!(table["rows"][0]["cells"][6], "node-1");
    let eviction = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p", "namespace": "default"}});
    let evicted =
        call(&server, Method::POST, &format!("{pods}/p/eviction"), &[("content-type", "application/json")], serde_json::to_vec(&eviction)?)
            .await?;
    assert_eq!(evicted.status, StatusCode::CREATED, "{:?}", evicted.body);
    let after = get(&server, &format!("{pods}/p")).await?;
    assert!(after.status == StatusCode::NOT_FOUND || after.json()["metadata"]["deletionTimestamp"].is_string(), "{:?}", after.body);
    Ok(())
}

#[tokio::test]
async fn metadata_only_clients_get_partial_object_metadata() -> TestResult {
    let (_api, server) = start().await?;
    let path = "/api/v1/namespaces/default/configmaps";
    call(&server, Method::POST, path, &[("content-type", "application/json")], serde_json::to_vec(&cm("m"))?).await?;
    let accept = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
    let list = call(&server, Method::GET, path, &[("accept", accept)], Bytes::new()).await?.json();
    assert_eq!(list["kind"], "PartialObjectMetadataList");
    assert_eq!(list["items"][0]["kind"], "PartialObjectMetadata");
    assert_eq!(list["items"][0]["metadata"]["name"], "m");
    assert!(list["items"][0].get("data").is_none());
    let one = call(
        &server,
        Method::GET,
        &format!("{path}/m"),
        &[("accept", "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1")],
        Bytes::new(),
    )
    .await?
    .json();
    assert_eq!((one["kind"].as_str(), one["metadata"]["name"].as_str()), (Some("PartialObjectMetadata"), Some("m")));
    Ok(())
}
