//! The resource metrics API (`metrics.k8s.io/v1beta1`) served from a fake usage source: through
//! the in-process client, and through the HTTP server to the real `kubectl top`.

use async_trait::async_trait;
use bosun_core::k8s_openapi::api::core::v1::{Container, Node, NodeStatus, Pod, PodSpec};
use bosun_core::k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use bosun_core::k8s_openapi::jiff::Timestamp;
use bosun_core::{Api, ApiResource, Client, ListParams, PostParams, Target};
use bosun_store::api::metrics::{self, ContainerSample, MetricsSource, NodeSample, PodSample};
use bosun_store::{ApiServer, HttpConfig, MemoryStorage, serve};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Usage set by the test.
#[derive(Default)]
struct FakeSource {
    nodes: Mutex<Vec<NodeSample>>,
    pods: Mutex<Vec<PodSample>>,
}

#[async_trait]
impl MetricsSource for FakeSource {
    async fn nodes(&self) -> bosun_core::Result<Vec<NodeSample>> {
        Ok(self.nodes.lock().map(|n| n.clone()).unwrap_or_default())
    }

    async fn pods(&self, namespace: Option<&str>) -> bosun_core::Result<Vec<PodSample>> {
        let pods = self.pods.lock().map(|p| p.clone()).unwrap_or_default();
        Ok(pods.into_iter().filter(|p| namespace.is_none_or(|ns| p.namespace == ns)).collect())
    }
}

fn ts() -> Timestamp {
    Timestamp::from_second(1_700_000_000).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn pod_sample(ns: &str, name: &str, cpu_nanocores: u64, memory_bytes: u64) -> PodSample {
    PodSample {
        namespace: ns.into(),
        name: name.into(),
        timestamp: ts(),
        window: Duration::from_secs(15),
        containers: vec![ContainerSample { name: "main".into(), cpu_nanocores, memory_bytes }],
    }
}

fn pod(name: &str, app: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([("app".to_owned(), app.to_owned())].into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container { name: "main".into(), image: Some("web:1".into()), ..Container::default() }],
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// A server with namespace `shop` holding pods web-1, web-2 (app=web) and db-1 (app=db), node n1,
/// and usage for web-1, db-1 and n1 (web-2 has none yet).
async fn setup() -> Result<(Arc<ApiServer>, Arc<FakeSource>), Box<dyn std::error::Error>> {
    let source = Arc::new(FakeSource::default());
    let api = ApiServer::builder(Arc::new(MemoryStorage::new())).metrics_source(source.clone()).build()?;
    let client: Arc<dyn Client> = api.clone();
    let ns = bosun_core::k8s_openapi::api::core::v1::Namespace {
        metadata: ObjectMeta { name: Some("shop".into()), ..ObjectMeta::default() },
        ..Default::default()
    };
    Api::all(client.clone()).create(&ns, &PostParams::default()).await?;
    let pods = Api::<Pod>::namespaced(client.clone(), "shop");
    for (name, app) in [("web-1", "web"), ("web-2", "web"), ("db-1", "db")] {
        pods.create(&pod(name, app), &PostParams::default()).await?;
    }
    let nodes = Api::<Node>::all(client.clone());
    let node = Node { metadata: ObjectMeta { name: Some("n1".into()), ..ObjectMeta::default() }, ..Node::default() };
    let mut node = nodes.create(&node, &PostParams::default()).await?;
    node.status = Some(NodeStatus {
        allocatable: Some([("cpu".to_owned(), K8sQuantity("4".into())), ("memory".to_owned(), K8sQuantity("8Gi".into()))].into()),
        capacity: Some([("cpu".to_owned(), K8sQuantity("4".into())), ("memory".to_owned(), K8sQuantity("8Gi".into()))].into()),
        ..NodeStatus::default()
    });
    nodes.replace_status(&node, &PostParams::default()).await?;
    *source.pods.lock().map_err(|e| e.to_string())? =
        vec![pod_sample("shop", "web-1", 250_000_000, 64 << 20), pod_sample("shop", "db-1", 123_456, (1 << 20) + 3 * 1024)];
    *source.nodes.lock().map_err(|e| e.to_string())? = vec![NodeSample {
        name: "n1".into(),
        timestamp: ts(),
        window: Duration::from_secs(15),
        cpu_nanocores: 1_500_000_000,
        memory_bytes: 2 << 30,
    }];
    Ok((api, source))
}

fn resource(plural: &str) -> ApiResource {
    metrics::resources().into_iter().find(|r| r.plural == plural).unwrap_or_else(|| ApiResource::new("", "", "", "", false))
}

#[tokio::test]
async fn pod_and_node_metrics_are_served_through_the_client() -> TestResult {
    let (api, _source) = setup().await?;
    let pods = resource("pods");
    let all = api.list(Target::new(&pods, Some("shop")), &ListParams::default()).await?;
    let mut names: Vec<_> = all.items.iter().filter_map(|o| o.metadata.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["db-1", "web-1"], "web-2 has no sample yet");
    assert_eq!(all.types.kind, "PodMetricsList");

    let web = api.list(Target::new(&pods, Some("shop")), &ListParams::default().labels("app=web")).await?;
    assert_eq!(web.items.len(), 1);
    let item = web.items[0].to_value();
    assert_eq!(item["kind"], "PodMetrics");
    assert_eq!(item["metadata"]["labels"]["app"], "web");
    assert_eq!(item["window"], "15s");
    assert_eq!(item["timestamp"], "2023-11-14T22:13:20Z");
    assert_eq!(item["containers"][0]["usage"]["cpu"], "250m");
    assert_eq!(item["containers"][0]["usage"]["memory"], "64Mi");

    let db = api.get(Target::new(&pods, Some("shop")), "db-1").await?.to_value();
    assert_eq!(db["containers"][0]["usage"]["cpu"], "123456n");
    assert_eq!(db["containers"][0]["usage"]["memory"], "1027Ki");

    let missing = api.get(Target::new(&pods, Some("shop")), "web-2").await.err();
    assert!(missing.as_ref().is_some_and(bosun_core::Error::is_not_found), "{missing:?}");
    let other_ns = api.list(Target::new(&pods, Some("default")), &ListParams::default()).await?;
    assert!(other_ns.items.is_empty());
    let everywhere = api.list(Target::new(&pods, None), &ListParams::default()).await?;
    assert_eq!(everywhere.items.len(), 2);

    let nodes = resource("nodes");
    let n1 = api.get(Target::new(&nodes, None), "n1").await?.to_value();
    assert_eq!(n1["kind"], "NodeMetrics");
    assert_eq!(n1["usage"]["cpu"], "1500m");
    assert_eq!(n1["usage"]["memory"], "2Gi");
    let listed = api.list(Target::new(&nodes, None), &ListParams::default()).await?;
    assert_eq!(listed.items.len(), 1);
    Ok(())
}

#[tokio::test]
async fn without_a_source_the_group_is_not_served() -> TestResult {
    let api = ApiServer::in_memory();
    let got = api.list(Target::new(&resource("pods"), Some("default")), &ListParams::default()).await;
    assert!(got.as_ref().err().is_some_and(bosun_core::Error::is_not_found));
    assert!(!api.resources().iter().any(|r| r.group == metrics::GROUP));
    Ok(())
}

const KUBECTL: &str = "/usr/bin/kubectl";

async fn kubectl(dir: &Path, args: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(dir.join("kubeconfig"))
            .arg("--cache-dir")
            .arg(dir.join("cache"))
            .args(args)
            .env_remove("KUBECONFIG")
            .env("HOME", dir)
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "kubectl {args:?} failed:\nstdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    Ok(stdout)
}

/// The row of a table whose first column is `name`, split on whitespace.
fn row(table: &str, name: &str) -> Vec<String> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|c| c.first().is_some_and(|n| n == name))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_top_reads_pods_and_nodes() -> TestResult {
    if !Path::new(KUBECTL).exists() {
        assert!(std::env::var("BOSUN_REQUIRE_COMPONENTS").as_deref() != Ok("1"), "{KUBECTL} is missing and BOSUN_REQUIRE_COMPONENTS=1");
        eprintln!("SKIPPED: {KUBECTL} is missing");
        return Ok(());
    }
    let (api, source) = setup().await?;
    let server = serve(api.clone(), HttpConfig::for_api_server(&api)).await?;
    let dir = tempfile::tempdir()?;
    server.write_kubeconfig(dir.path().join("kubeconfig"))?;

    let top = kubectl(dir.path(), &["top", "pods", "-n", "shop"]).await?;
    assert_eq!(row(&top, "web-1"), ["web-1", "250m", "64Mi"], "{top}");
    assert_eq!(row(&top, "db-1"), ["db-1", "1m", "1Mi"], "{top}");
    assert!(row(&top, "web-2").is_empty(), "{top}");

    let selected = kubectl(dir.path(), &["top", "pods", "-n", "shop", "-l", "app=db", "--containers"]).await?;
    assert_eq!(row(&selected, "db-1"), ["db-1", "main", "1m", "1Mi"], "{selected}");
    assert!(row(&selected, "web-1").is_empty(), "{selected}");

    let one = kubectl(dir.path(), &["top", "pod", "web-1", "-n", "shop"]).await?;
    assert_eq!(row(&one, "web-1"), ["web-1", "250m", "64Mi"], "{one}");

    let nodes = kubectl(dir.path(), &["top", "nodes"]).await?;
    assert_eq!(row(&nodes, "n1"), ["n1", "1500m", "37%", "2048Mi", "25%"], "{nodes}");

    // A new sample is read on the next request.
    source.pods.lock().map_err(|e| e.to_string())?.push(pod_sample("shop", "web-2", 2_000_000_000, 128 << 20));
    let top = kubectl(dir.path(), &["top", "pods", "-n", "shop", "--sort-by", "cpu"]).await?;
    assert_eq!(row(&top, "web-2"), ["web-2", "2000m", "128Mi"], "{top}");
    let first = top.lines().nth(1).unwrap_or_default();
    assert!(first.starts_with("web-2"), "{top}");
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_autoscale_creates_an_autoscaler_read_back_as_v2() -> TestResult {
    if !Path::new(KUBECTL).exists() {
        assert!(std::env::var("BOSUN_REQUIRE_COMPONENTS").as_deref() != Ok("1"), "{KUBECTL} is missing and BOSUN_REQUIRE_COMPONENTS=1");
        eprintln!("SKIPPED: {KUBECTL} is missing");
        return Ok(());
    }
    use bosun_core::k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
    use bosun_core::k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    use bosun_core::k8s_openapi::api::core::v1::PodTemplateSpec;
    use bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    let (api, _source) = setup().await?;
    let client: Arc<dyn Client> = api.clone();
    let labels: std::collections::BTreeMap<String, String> = [("app".to_owned(), "web".to_owned())].into();
    let deploy = Deployment {
        metadata: ObjectMeta { name: Some("web".into()), ..ObjectMeta::default() },
        spec: DeploymentSpec {
            replicas: Some(2),
            selector: LabelSelector { match_labels: Some(labels.clone()), ..LabelSelector::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..ObjectMeta::default() }),
                spec: pod("x", "web").spec,
            },
            ..DeploymentSpec::default()
        },
        status: None,
    };
    Api::<Deployment>::namespaced(client.clone(), "shop").create(&deploy, &PostParams::default()).await?;
    let server = serve(api.clone(), HttpConfig::for_api_server(&api)).await?;
    let dir = tempfile::tempdir()?;
    server.write_kubeconfig(dir.path().join("kubeconfig"))?;

    // kubectl up to 1.32 creates through autoscaling/v1 (served as a view of v2), later ones through v2.
    let version = kubectl(
        dir.path(),
        &["autoscale", "deployment", "web", "-n", "shop", "--max=7", "--dry-run=client", "-o", "jsonpath={.apiVersion}"],
    )
    .await?;
    eprintln!("kubectl autoscale speaks {version}");
    let out = kubectl(dir.path(), &["autoscale", "deployment", "web", "-n", "shop", "--min=2", "--max=7", "--cpu-percent=60"]).await?;
    assert!(out.contains("autoscaled"), "{out}");
    let hpa = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), "shop").get("web").await?;
    assert_eq!((hpa.spec.min_replicas, hpa.spec.max_replicas), (Some(2), 7));
    assert_eq!(hpa.spec.scale_target_ref.kind, "Deployment");
    let metric = hpa.spec.metrics.unwrap_or_default().into_iter().next().and_then(|m| m.resource);
    assert_eq!(metric.map(|r| (r.name, r.target.average_utilization)), Some(("cpu".to_owned(), Some(60))));

    let listed = kubectl(dir.path(), &["get", "hpa", "-n", "shop", "-o", "jsonpath={.items[0].apiVersion}"]).await?;
    assert_eq!(listed, "autoscaling/v2");
    kubectl(dir.path(), &["delete", "hpa", "web", "-n", "shop"]).await?;
    server.shutdown().await;
    Ok(())
}
