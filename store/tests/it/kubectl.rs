//! The real `kubectl` (v1.32) against the HTTP server in front of the in-process `ApiServer`: the
//! flows of issue 4 (apply, get with columns, -o yaml, get -w, patch, server-side apply, scale,
//! label, annotate, delete, explain), over plain HTTP and HTTPS.

use super::http::{TestResult, start};
use bosun_core::k8s_openapi::api::core::v1::ConfigMap;
use bosun_core::{Api, Client};
use bosun_store::http::Server;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

const KUBECTL: &str = "/usr/bin/kubectl";

/// Whether kubectl is here; without it a test skips loudly, or fails when CI requires components.
pub(crate) fn have_kubectl() -> bool {
    if Path::new(KUBECTL).exists() {
        return true;
    }
    assert!(std::env::var("BOSUN_REQUIRE_COMPONENTS").as_deref() != Ok("1"), "{KUBECTL} is missing and BOSUN_REQUIRE_COMPONENTS=1");
    eprintln!("SKIPPED: {KUBECTL} is missing");
    false
}

/// kubectl with its own kubeconfig and discovery cache in a temp dir.
pub(crate) struct Kubectl {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

pub(crate) struct Out {
    pub(crate) ok: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Kubectl {
    pub(crate) fn new(server: &Server) -> Result<Self, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        server.write_kubeconfig(&kubeconfig)?;
        Ok(Self { dir, kubeconfig })
    }

    pub(crate) fn file(&self, name: &str, text: &str) -> Result<String, Box<dyn std::error::Error>> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text)?;
        Ok(path.to_string_lossy().into_owned())
    }

    pub(crate) fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(KUBECTL);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).arg("--cache-dir").arg(self.dir.path().join("cache")).args(args);
        cmd.env_remove("KUBECONFIG").env("HOME", self.dir.path()).kill_on_drop(true);
        cmd
    }

    pub(crate) async fn run(&self, args: &[&str]) -> Result<Out, Box<dyn std::error::Error>> {
        let out = tokio::time::timeout(Duration::from_secs(60), self.command(args).output()).await??;
        Ok(Out {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs and requires success; returns stdout.
    pub(crate) async fn ok(&self, args: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
        let out = self.run(args).await?;
        assert!(out.ok, "kubectl {args:?} failed:\nstdout: {}\nstderr: {}", out.stdout, out.stderr);
        Ok(out.stdout)
    }

    /// Runs and requires failure; returns stderr.
    pub(crate) async fn fails(&self, args: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
        let out = self.run(args).await?;
        assert!(!out.ok, "kubectl {args:?} should have failed:\nstdout: {}", out.stdout);
        Ok(out.stderr)
    }
}

/// The header and rows of `kubectl get` output, split on runs of spaces.
fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split("  ").map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned).collect())
        .collect()
}

const MANIFEST: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: demo
data:
  color: blue
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
  namespace: demo
type: Opaque
stringData:
  password: hunter2
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: demo
  labels:
    app: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: nginx
        image: nginx:1.27
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: demo
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 80
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_get_patch_scale_and_delete() -> TestResult {
    if !have_kubectl() {
        return Ok(());
    }
    let (_api, server) = start().await?;
    let k = Kubectl::new(&server)?;
    let manifest = k.file("app.yaml", MANIFEST)?;

    let out = k.ok(&["apply", "-f", &manifest]).await?;
    for line in [
        "namespace/demo created",
        "configmap/settings created",
        "secret/creds created",
        "deployment.apps/web created",
        "service/web created",
    ] {
        assert!(out.contains(line), "{out}");
    }

    // get with the familiar columns
    let deploy = rows(&k.ok(&["get", "deploy", "-n", "demo"]).await?);
    assert_eq!(deploy[0], ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    assert_eq!(deploy[1][..2], ["web".to_owned(), "0/2".to_owned()]);
    let svc = rows(&k.ok(&["get", "svc", "-n", "demo"]).await?);
    assert_eq!(svc[0], ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]);
    assert_eq!(svc[1][..2], ["web".to_owned(), "ClusterIP".to_owned()]);
    assert_eq!(svc[1][4], "80/TCP");
    let cm = rows(&k.ok(&["get", "configmaps", "-n", "demo"]).await?);
    assert_eq!(cm[0], ["NAME", "DATA", "AGE"]);
    let secret = rows(&k.ok(&["get", "secret", "creds", "-n", "demo"]).await?);
    assert_eq!(secret[0], ["NAME", "TYPE", "DATA", "AGE"]);
    assert_eq!(secret[1][..3], ["creds".to_owned(), "Opaque".to_owned(), "1".to_owned()]);
    let ns = k.ok(&["get", "ns"]).await?;
    assert!(ns.starts_with("NAME") && ns.contains("demo") && ns.contains("kube-system"), "{ns}");
    let wide = rows(&k.ok(&["get", "deploy", "-n", "demo", "-o", "wide"]).await?);
    assert_eq!(wide[0][5..], ["CONTAINERS".to_owned(), "IMAGES".to_owned(), "SELECTOR".to_owned()]);
    let all = k.ok(&["get", "all", "-n", "demo"]).await?;
    assert!(all.contains("deployment.apps/web") && all.contains("service/web"), "{all}");

    // -o yaml carries the last-applied annotation
    let yaml = k.ok(&["get", "deploy", "web", "-n", "demo", "-o", "yaml"]).await?;
    assert!(yaml.contains("kind: Deployment") && yaml.contains("kubectl.kubernetes.io/last-applied-configuration"), "{yaml}");

    // apply again after a change: a strategic merge patch from last-applied
    let changed = k.file("app2.yaml", &MANIFEST.replace("replicas: 2", "replicas: 3").replace("color: blue", "color: green"))?;
    let out = k.ok(&["apply", "-f", &changed]).await?;
    assert!(out.contains("deployment.apps/web configured") && out.contains("configmap/settings configured"), "{out}");
    assert!(out.contains("service/web unchanged"), "{out}");
    assert_eq!(k.ok(&["get", "deploy", "web", "-n", "demo", "-o", "jsonpath={.spec.replicas}"]).await?, "3");
    assert_eq!(k.ok(&["get", "cm", "settings", "-n", "demo", "-o", "jsonpath={.data.color}"]).await?, "green");

    // the three patch types
    k.ok(&["patch", "deploy", "web", "-n", "demo", "--type=merge", "-p", r#"{"metadata":{"labels":{"merged":"yes"}}}"#]).await?;
    k.ok(&[
        "patch",
        "deploy",
        "web",
        "-n",
        "demo",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/metadata/labels/jsonpatched","value":"yes"}]"#,
    ])
    .await?;
    let smp = r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.28"}]}}}}"#;
    k.ok(&["patch", "deploy", "web", "-n", "demo", "--type=strategic", "-p", smp]).await?;
    let labels = k.ok(&["get", "deploy", "web", "-n", "demo", "-o", "jsonpath={.metadata.labels}"]).await?;
    assert!(labels.contains("\"merged\":\"yes\"") && labels.contains("\"jsonpatched\":\"yes\""), "{labels}");
    let image = k.ok(&["get", "deploy", "web", "-n", "demo", "-o", "jsonpath={.spec.template.spec.containers[*].image}"]).await?;
    assert_eq!(image, "nginx:1.28");
    let generation = k.ok(&["get", "deploy", "web", "-n", "demo", "-o", "jsonpath={.metadata.generation}"]).await?;
    assert!(generation.parse::<i64>().unwrap_or(0) >= 3, "generation {generation}");

    // scale, label, annotate
    let out = k.ok(&["scale", "deploy", "web", "-n", "demo", "--replicas=5"]).await?;
    assert!(out.contains("deployment.apps/web scaled"), "{out}");
    assert_eq!(k.ok(&["get", "deploy", "web", "-n", "demo", "-o", "jsonpath={.spec.replicas}"]).await?, "5");
    k.ok(&["label", "cm", "settings", "-n", "demo", "tier=config"]).await?;
    k.ok(&["annotate", "cm", "settings", "-n", "demo", "owner=ops"]).await?;
    let shown = k.ok(&["get", "cm", "-n", "demo", "-l", "tier=config", "-o", "name"]).await?;
    assert_eq!(shown.trim(), "configmap/settings");
    assert_eq!(k.ok(&["get", "cm", "settings", "-n", "demo", "-o", "jsonpath={.metadata.annotations.owner}"]).await?, "ops");

    // delete with --wait, and a foreground cascade (no garbage collector runs here, so the
    // owner waits with the foregroundDeletion finalizer)
    let out = k.ok(&["delete", "cm", "settings", "-n", "demo", "--wait", "--timeout=20s"]).await?;
    assert!(out.contains("configmap \"settings\" deleted"), "{out}");
    let err = k.fails(&["get", "cm", "settings", "-n", "demo"]).await?;
    assert!(err.contains("NotFound") || err.contains("not found"), "{err}");
    let out = k.ok(&["delete", "deploy", "web", "-n", "demo", "--cascade=foreground", "--wait=false"]).await?;
    assert!(out.contains("deployment.apps \"web\" deleted"), "{out}");
    let finalizers = k.run(&["get", "deploy", "web", "-n", "demo", "-o", "jsonpath={.metadata.finalizers}"]).await?;
    assert!(!finalizers.ok || finalizers.stdout.contains("foregroundDeletion"), "{}", finalizers.stdout);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_server_side_apply_reports_conflicts() -> TestResult {
    if !have_kubectl() {
        return Ok(());
    }
    let (_api, server) = start().await?;
    let k = Kubectl::new(&server)?;
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\n  namespace: default\ndata:\n  owner: first\n";
    let first = k.file("first.yaml", cm)?;
    let out = k.ok(&["apply", "--server-side", "-f", &first]).await?;
    assert!(out.contains("configmap/ssa serverside-applied"), "{out}");
    let managed = k.ok(&["get", "cm", "ssa", "-o", "jsonpath={.metadata.managedFields[*].manager}", "--show-managed-fields"]).await?;
    assert!(managed.contains("kubectl"), "{managed}");
    let second = k.file("second.yaml", &cm.replace("owner: first", "owner: second"))?;
    let err = k.fails(&["apply", "--server-side", "--field-manager=intruder", "-f", &second]).await?;
    assert!(err.to_lowercase().contains("conflict"), "{err}");
    k.ok(&["apply", "--server-side", "--field-manager=intruder", "--force-conflicts", "-f", &second]).await?;
    assert_eq!(k.ok(&["get", "cm", "ssa", "-o", "jsonpath={.data.owner}"]).await?, "second");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_validates_strictly_and_explains_from_openapi() -> TestResult {
    if !have_kubectl() {
        return Ok(());
    }
    let (_api, server) = start().await?;
    let k = Kubectl::new(&server)?;
    let bad =
        k.file("bad.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\n  namespace: default\ndata:\n  a: b\ncolour: red\n")?;
    let err = k.fails(&["apply", "-f", &bad]).await?;
    assert!(err.contains("unknown field \"colour\""), "{err}");
    let out = k.ok(&["explain", "deployment.spec.replicas"]).await?;
    assert!(out.contains("replicas") && out.contains("<integer>"), "{out}");
    let out = k.ok(&["explain", "pods"]).await?;
    assert!(out.contains("KIND:") && out.contains("Pod") && out.contains("spec"), "{out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_watch_sees_an_update() -> TestResult {
    if !have_kubectl() {
        return Ok(());
    }
    let (api, server) = start().await?;
    let k = Kubectl::new(&server)?;
    let cms: Api<ConfigMap> = Api::namespaced(api.clone() as Arc<dyn Client>, "default");
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": "watched"}, "data": {"a": "1"}}))?;
    cms.create(&cm, &Default::default()).await?;
    let mut child = k.command(&["get", "cm", "-w", "--output-watch-events"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    let read = async {
        while let Some(line) = lines.next_line().await? {
            seen.push(line.clone());
            if line.contains("watched") && seen.iter().filter(|l| l.contains("watched")).count() == 1 {
                let mut changed = cms.get("watched").await?;
                changed.data = Some([("a".to_owned(), "2".to_owned()), ("b".to_owned(), "3".to_owned())].into());
                cms.replace(&changed, &Default::default()).await?;
            }
            if line.contains("MODIFIED") && line.contains("watched") {
                return Ok::<_, Box<dyn std::error::Error>>(());
            }
        }
        Err("kubectl get -w ended".into())
    };
    let result = tokio::time::timeout(Duration::from_secs(30), read).await;
    let _ = child.kill().await;
    assert!(matches!(result, Ok(Ok(()))), "{result:?}: {seen:?}");
    assert!(seen[0].contains("EVENT") && seen[0].contains("NAME") && seen[0].contains("DATA"), "{seen:?}");
    assert!(seen.iter().any(|l| l.contains("MODIFIED") && l.contains(" 2 ")), "{seen:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_talks_https_with_the_written_kubeconfig() -> TestResult {
    if !have_kubectl() {
        return Ok(());
    }
    let api = bosun_store::ApiServer::in_memory();
    let config = bosun_store::http::HttpConfig::new().https(([127, 0, 0, 1], 0).into()).catalog(api.clone());
    let server = bosun_store::http::serve(api, config).await?;
    let k = Kubectl::new(&server)?;
    let out = k.ok(&["get", "namespaces", "-o", "name"]).await?;
    assert!(out.contains("namespace/default") && out.contains("namespace/kube-system"), "{out}");
    let version = k.ok(&["version", "-o", "json"]).await?;
    assert!(version.contains("\"minor\": \"32\""), "{version}");
    Ok(())
}

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crontabs.stable.example.com
spec:
  group: stable.example.com
  scope: Namespaced
  names:
    plural: crontabs
    singular: crontab
    kind: CronTab
    shortNames: ["ct"]
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              cronSpec:
                type: string
              replicas:
                type: integer
    additionalPrinterColumns:
    - name: Spec
      type: string
      jsonPath: .spec.cronSpec
    - name: Replicas
      type: integer
      jsonPath: .spec.replicas
    - name: Age
      type: date
      jsonPath: .metadata.creationTimestamp
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_serves_custom_resources_with_their_printer_columns() -> TestResult {
    if !have_kubectl() {
        return Ok(());
    }
    let (_api, server) = start().await?;
    let k = Kubectl::new(&server)?;
    let crd = k.file("crd.yaml", CRD)?;
    k.ok(&["apply", "-f", &crd]).await?;
    k.ok(&["wait", "--for=condition=Established", "crd/crontabs.stable.example.com", "--timeout=20s"]).await?;
    let cr = k.file("cr.yaml", "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata:\n  name: nightly\n  namespace: default\nspec:\n  cronSpec: \"0 3 * * *\"\n  replicas: 2\n")?;
    let out = k.ok(&["apply", "-f", &cr]).await?;
    assert!(out.contains("crontab.stable.example.com/nightly created"), "{out}");
    let table = rows(&k.ok(&["get", "ct"]).await?);
    assert_eq!(table[0], ["NAME", "SPEC", "REPLICAS", "AGE"]);
    assert_eq!(table[1][..3], ["nightly".to_owned(), "0 3 * * *".to_owned(), "2".to_owned()]);
    let err = k.fails(&["patch", "ct", "nightly", "--type=strategic", "-p", r#"{"spec":{"replicas":3}}"#]).await?;
    assert!(err.contains("application/strategic-merge-patch+json is not supported"), "{err}");
    k.ok(&["patch", "ct", "nightly", "--type=merge", "-p", r#"{"spec":{"replicas":3}}"#]).await?;
    assert_eq!(k.ok(&["get", "ct", "nightly", "-o", "jsonpath={.spec.replicas}"]).await?, "3");
    Ok(())
}
