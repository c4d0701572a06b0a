//! The real `kubectl` against more of the server: `auth can-i` and `auth whoami`, the warnings
//! it prints from `Warning` headers, HTTP/2 over HTTPS (with exec, logs and watch still
//! working), and server-side apply of a custom resource merging its associative list.

use super::http::TestResult;
use super::kubectl::{Kubectl, have_kubectl};
use bosun_core::k8s_openapi::api::core::v1::{ConfigMap, Pod};
use bosun_core::{Api, Client};
use bosun_store::ApiServer;
use bosun_store::http::channel::ChannelProtocol;
use bosun_store::http::{ExecIo, ExecProcess, ExecRequest, HttpConfig, NodeConnector, Server, serve, serve_exec};
use bytes::Bytes;
use futures::StreamExt;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

async fn https_server(nodes: Option<Arc<dyn NodeConnector>>) -> Result<(Arc<ApiServer>, Server), Box<dyn std::error::Error>> {
    let api = ApiServer::in_memory();
    let mut config = HttpConfig::for_api_server(&api).https(([127, 0, 0, 1], 0).into());
    if let Some(nodes) = nodes {
        config = config.nodes(nodes);
    }
    let server = serve(api.clone(), config).await?;
    Ok((api, server))
}

async fn metric(server: &Server, name: &str) -> Result<u64, Box<dyn std::error::Error>> {
    let reply = super::http::call(server, http::Method::GET, "/metrics", &[], Bytes::new()).await?;
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    let line = text.lines().find(|l| l.starts_with(name)).ok_or_else(|| format!("no {name} in {text}"))?;
    Ok(line.rsplit(' ').next().unwrap_or("0").parse()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_auth_can_i_and_whoami() -> TestResult {
    if !have_kubectl() {
        return Ok(());
    }
    let (_api, server) = https_server(None).await?;
    let k = Kubectl::new(&server)?;
    assert_eq!(k.ok(&["auth", "can-i", "create", "deployments", "-n", "default"]).await?.trim(), "yes");
    assert_eq!(k.ok(&["auth", "can-i", "delete", "nodes", "--as=jane"]).await?.trim(), "yes");
    assert_eq!(k.ok(&["auth", "can-i", "get", "/healthz"]).await?.trim(), "yes");
    let list = k.ok(&["auth", "can-i", "--list", "-n", "default"]).await?;
    assert!(list.contains("Resources") && list.contains("*.*") && list.contains("[*]"), "{list}");
    // A review written out, as the Kubernetes docs show it.
    let ssar = k.file(
        "ssar.yaml",
        "apiVersion: authorization.k8s.io/v1\nkind: SelfSubjectAccessReview\nspec:\n  resourceAttributes:\n    verb: get\n    resource: secrets\n    namespace: default\n",
    )?;
    assert_eq!(k.ok(&["create", "-f", &ssar, "-o", "jsonpath={.status.allowed}"]).await?, "true");
    let me = k.ok(&["auth", "whoami"]).await?;
    assert!(me.contains("system:anonymous") && me.contains("system:unauthenticated"), "{me}");
    let jane = k.ok(&["auth", "whoami", "--as=jane", "--as-group=devs", "-o", "json"]).await?;
    let jane: serde_json::Value = serde_json::from_str(&jane)?;
    assert_eq!(jane["status"]["userInfo"]["username"], "jane");
    assert_eq!(jane["status"]["userInfo"]["groups"], serde_json::json!(["devs", "system:authenticated"]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_a_list_document() -> TestResult {
    if !have_kubectl() {
        return Ok(());
    }
    let (_api, server) = https_server(None).await?;
    let k = Kubectl::new(&server)?;
    let list = k.file(
        "list.yaml",
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: one, namespace: default}\n  data: {a: b}\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: two, namespace: default}\n",
    )?;
    let out = k.ok(&["apply", "-f", &list]).await?;
    assert!(out.contains("configmap/one created") && out.contains("configmap/two created"), "{out}");
    // What `get -o yaml` of several objects prints is a List too.
    let exported = k.ok(&["get", "cm", "one", "two", "-n", "default", "-o", "yaml"]).await?;
    assert!(exported.contains("kind: List"), "{exported}");
    let again = k.file("again.yaml", &exported.replace("a: b", "a: c"))?;
    k.ok(&["apply", "-f", &again]).await?;
    assert_eq!(k.ok(&["get", "cm", "one", "-n", "default", "-o", "jsonpath={.data.a}"]).await?, "c");
    // The items are still validated strictly, by the server.
    let typo = k.file("typo.yaml", "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: three, namespace: default}\n  colour: red\n")?;
    let err = k.fails(&["apply", "-f", &typo]).await?;
    assert!(err.contains("unknown field \"colour\""), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_prints_the_servers_warnings() -> TestResult {
    if !have_kubectl() {
        return Ok(());
    }
    let (_api, server) = https_server(None).await?;
    let k = Kubectl::new(&server)?;
    let typo = k.file(
        "typo.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: typo\n  namespace: default\ndata:\n  a: b\ncolour: red\n",
    )?;
    let out = k.run(&["apply", "--validate=warn", "-f", &typo]).await?;
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stderr.contains("Warning: unknown field \"colour\""), "{}", out.stderr);

    // kubectl re-encodes what it reads, so repeated fields reach the server only raw.
    let repeated =
        k.file("repeated.json", r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "rep"}, "data": {"k": "1", "k": "2"}}"#)?;
    let path = "/api/v1/namespaces/default/configmaps";
    let err = k.fails(&["create", "--raw", &format!("{path}?fieldValidation=Strict"), "-f", &repeated]).await?;
    assert!(err.contains("strict decoding error") && err.contains("duplicate field \"data.k\""), "{err}");
    let out = k.run(&["create", "--raw", &format!("{path}?fieldValidation=Warn"), "-f", &repeated]).await?;
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stderr.contains("Warning: duplicate field \"data.k\""), "{}", out.stderr);

    let finalized = k.file(
        "finalized.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fin\n  namespace: default\n  finalizers: [cleanup]\n",
    )?;
    let out = k.run(&["create", "-f", &finalized]).await?;
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stderr.contains("Warning: metadata.finalizers: \"cleanup\": prefer a domain-qualified finalizer name"), "{}", out.stderr);

    // Pod template warnings, on create and on an apply that changes the template.
    let deploy = |image: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: old-labels\n  namespace: default\nspec:\n  selector:\n    matchLabels: {{app: x}}\n  template:\n    metadata:\n      labels: {{app: x}}\n    spec:\n      nodeSelector: {{beta.kubernetes.io/os: linux}}\n      containers:\n      - {{name: c, image: {image}}}\n"
        )
    };
    let warning =
        "Warning: spec.template.spec.nodeSelector[beta.kubernetes.io/os]: deprecated since v1.14; use \"kubernetes.io/os\" instead";
    for image in ["nginx", "nginx:2"] {
        let file = k.file("deploy.yaml", &deploy(image))?;
        let out = k.run(&["apply", "-f", &file]).await?;
        assert!(out.ok, "{}", out.stderr);
        assert!(out.stderr.contains(warning), "{image}: {}", out.stderr);
    }

    let crd = k.file("crd.yaml", GADGETS)?;
    k.ok(&["apply", "-f", &crd]).await?;
    k.ok(&["wait", "--for=condition=Established", "crd/gadgets.example.com", "--timeout=20s"]).await?;
    let out = k.run(&["get", "gadgets.v1beta1.example.com", "-n", "default"]).await?;
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stderr.contains("Warning: example.com/v1beta1 Gadget is deprecated; use example.com/v1 Gadget"), "{}", out.stderr);
    Ok(())
}

/// Gadgets: a deprecated v1beta1 and a v1 whose `spec.parts` is an associative list keyed by `name`.
const GADGETS: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
  - name: v1beta1
    served: true
    storage: false
    deprecated: true
    schema: &schema
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              parts:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [name]
                items:
                  type: object
                  required: [name]
                  properties:
                    name: {type: string}
                    size: {type: integer}
  - name: v1
    served: true
    storage: true
    schema: *schema
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_server_side_apply_merges_a_custom_resources_keyed_list() -> TestResult {
    if !have_kubectl() {
        return Ok(());
    }
    let (_api, server) = https_server(None).await?;
    let k = Kubectl::new(&server)?;
    let crd = k.file("crd.yaml", GADGETS)?;
    k.ok(&["apply", "--server-side", "-f", &crd]).await?;
    k.ok(&["wait", "--for=condition=Established", "crd/gadgets.example.com", "--timeout=20s"]).await?;
    let gadget = |part: &str, size: u32| {
        format!(
            "apiVersion: example.com/v1\nkind: Gadget\nmetadata:\n  name: g\n  namespace: default\nspec:\n  parts:\n  - name: {part}\n    size: {size}\n"
        )
    };
    let wheel = k.file("wheel.yaml", &gadget("wheel", 4))?;
    let bell = k.file("bell.yaml", &gadget("bell", 1))?;
    k.ok(&["apply", "--server-side", "--field-manager=wheels", "-f", &wheel]).await?;
    k.ok(&["apply", "--server-side", "--field-manager=bells", "-f", &bell]).await?;
    let parts = k.ok(&["get", "gadget", "g", "-n", "default", "-o", "jsonpath={.spec.parts[*].name}"]).await?;
    assert_eq!(parts, "wheel bell", "each manager's entry stays");
    // Changing another manager's entry is a conflict on that entry's field alone.
    let bigger = k.file("bigger.yaml", &gadget("wheel", 5))?;
    let err = k.fails(&["apply", "--server-side", "--field-manager=bells", "-f", &bigger]).await?;
    assert!(err.contains("conflict") && err.contains(".spec.parts[name=\"wheel\"].size"), "{err}");
    Ok(())
}

/// A node connection whose exec prints a fixed line and whose log is two lines.
struct EchoNodes;

#[async_trait::async_trait]
impl NodeConnector for EchoNodes {
    async fn logs(&self, _ns: &str, pod: &str, _params: &bosun_core::LogParams) -> bosun_core::Result<bosun_core::LogStream> {
        Ok(futures::stream::iter(vec![Ok(Bytes::from(format!("log of {pod}\nsecond line\n")))]).boxed())
    }

    fn exec_protocols(&self) -> Vec<String> {
        ChannelProtocol::names()
    }

    async fn exec(&self, request: ExecRequest, io: Box<dyn ExecIo>) -> bosun_core::Result<()> {
        let text = format!("exec {} in {}\n", request.command.join(" "), request.pod);
        let process = ExecProcess {
            stdin: None,
            stdout: Box::pin(std::io::Cursor::new(text.into_bytes())),
            stderr: Box::pin(tokio::io::empty()),
            exit: Box::pin(async { Ok(0) }),
            resize: None,
        };
        serve_exec(io, &request, Ok(process)).await.map_err(|e| bosun_core::Error::internal(e.to_string()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_speaks_http2_and_still_execs_logs_and_watches() -> TestResult {
    if !have_kubectl() {
        return Ok(());
    }
    let (api, server) = https_server(Some(Arc::new(EchoNodes))).await?;
    let k = Kubectl::new(&server)?;
    let client = api.clone() as Arc<dyn Client>;
    let pod: Pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "p"},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "busybox"}]}}))?;
    Api::<Pod>::namespaced(client.clone(), "default").create(&pod, &Default::default()).await?;

    let before = metric(&server, "bosun_http_requests_total{protocol=\"HTTP/2\"}").await?;
    k.ok(&["get", "pods", "-n", "default"]).await?;
    let after = metric(&server, "bosun_http_requests_total{protocol=\"HTTP/2\"}").await?;
    assert!(after > before, "kubectl used HTTP/2 for none of its requests ({before} -> {after})");

    let out = k.ok(&["exec", "p", "-n", "default", "--", "echo", "hi"]).await?;
    assert_eq!(out, "exec echo hi in p\n");
    let out = k.ok(&["logs", "p", "-n", "default"]).await?;
    assert_eq!(out, "log of p\nsecond line\n");

    // The watch lists `early` first; `late`, created once that line shows, must come through the watch.
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let cm = |name: &str| serde_json::from_value::<ConfigMap>(serde_json::json!({"metadata": {"name": name}, "data": {"a": "1"}}));
    cms.create(&cm("early")?, &Default::default()).await?;
    let mut child =
        k.command(&["get", "cm", "-n", "default", "-w", "--output-watch-events"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let late = cm("late")?;
    let watched = async {
        while let Some(line) = lines.next_line().await? {
            if line.contains("early") {
                cms.create(&late, &Default::default()).await?;
            }
            if line.contains("ADDED") && line.contains("late") {
                return Ok::<_, Box<dyn std::error::Error>>(());
            }
        }
        Err("kubectl get -w ended".into())
    };
    let result = tokio::time::timeout(Duration::from_secs(30), watched).await;
    let _ = child.kill().await;
    assert!(matches!(result, Ok(Ok(()))), "{result:?}");
    Ok(())
}
