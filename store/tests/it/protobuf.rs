//! Request bodies in Kubernetes' protobuf encoding: bodies built with `prost` and the `k8s-pb`
//! types (as client-go builds them) decode to the JSON of the object, and the real `kubectl create`
//! subcommands, which send protobuf, work against the HTTP server.

use super::http::{TestResult, start};
use bosun_core::k8s_openapi::api::apps::v1::Deployment;
use bosun_core::k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use bosun_core::{Api, Client};
use bosun_store::protobuf::decode_request;
use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The envelope client-go writes: magic, then `runtime.Unknown` around the object's bytes.
fn envelope(api_version: &str, kind: &str, object: &impl Message) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta { api_version: Some(api_version.into()), kind: Some(kind.into()) }),
        raw: Some(object.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = b"k8s\0".to_vec();
    out.extend(unknown.encode_to_vec());
    out
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect()
}

fn meta(name: &str, namespace: &str) -> meta::ObjectMeta {
    meta::ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        // gogo-protobuf writes every non-pointer string, empty ones too
        generate_name: Some(String::new()),
        resource_version: Some(String::new()),
        creation_timestamp: Some(meta::Time::default()),
        ..Default::default()
    }
}

#[test]
fn configmap_and_secret_decode_to_their_json() -> TestResult {
    let cm = core::ConfigMap {
        metadata: Some(meta::ObjectMeta {
            labels: map(&[("app", "web")]),
            creation_timestamp: Some(meta::Time { seconds: Some(1_700_000_000), nanos: Some(0) }),
            ..meta("c", "demo")
        }),
        data: map(&[("a", "b"), ("empty", "")]),
        binary_data: [("bin".to_string(), vec![0u8, 1, 2, 255])].into_iter().collect(),
        immutable: Some(false),
    };
    let value = decode_request(&envelope("v1", "ConfigMap", &cm))?;
    assert_eq!(
        value,
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "demo", "labels": {"app": "web"}, "creationTimestamp": "2023-11-14T22:13:20Z"},
            "data": {"a": "b", "empty": ""},
            "binaryData": {"bin": "AAEC/w=="},
            "immutable": false,
        })
    );

    let secret = core::Secret {
        metadata: Some(meta("s", "demo")),
        data: [("token".to_string(), b"hunter2".to_vec())].into_iter().collect(),
        r#type: Some("Opaque".into()),
        ..Default::default()
    };
    let value = decode_request(&envelope("v1", "Secret", &secret))?;
    assert_eq!(value["data"], json!({"token": "aHVudGVyMg=="}));
    assert_eq!(value["type"], "Opaque");
    Ok(())
}

#[test]
fn deployment_decodes_with_its_pod_template_quantities_and_int_or_string() -> TestResult {
    let container = core::Container {
        name: Some("x".into()),
        image: Some("nginx:1.27".into()),
        ports: vec![core::ContainerPort { container_port: Some(80), protocol: Some("TCP".into()), ..Default::default() }],
        resources: Some(core::ResourceRequirements {
            limits: [("cpu".to_string(), Quantity { string: Some("500m".into()) })].into_iter().collect(),
            ..Default::default()
        }),
        args: vec!["--a".into(), "b".into()],
        ..Default::default()
    };
    let deployment = apps::Deployment {
        metadata: Some(meta("d", "demo")),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            selector: Some(meta::LabelSelector { match_labels: map(&[("app", "d")]), ..Default::default() }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta { labels: map(&[("app", "d")]), ..Default::default() }),
                spec: Some(core::PodSpec {
                    containers: vec![container],
                    host_ipc: Some(true),
                    termination_grace_period_seconds: Some(-1),
                    ..Default::default()
                }),
            }),
            strategy: Some(apps::DeploymentStrategy {
                r#type: Some("RollingUpdate".into()),
                rolling_update: Some(apps::RollingUpdateDeployment {
                    max_surge: Some(IntOrString { r#type: Some(1), int_val: Some(0), str_val: Some("25%".into()) }),
                    max_unavailable: Some(IntOrString { r#type: Some(0), int_val: Some(1), str_val: Some(String::new()) }),
                }),
            }),
            ..Default::default()
        }),
        status: Some(apps::DeploymentStatus::default()),
    };
    let value = decode_request(&envelope("apps/v1", "Deployment", &deployment))?;
    assert_eq!(value["kind"], "Deployment");
    assert_eq!(value["spec"]["replicas"], 0, "an explicit zero survives");
    assert_eq!(value["spec"]["selector"], json!({"matchLabels": {"app": "d"}}));
    assert_eq!(value["spec"]["strategy"]["rollingUpdate"], json!({"maxSurge": "25%", "maxUnavailable": 1}));
    let pod = &value["spec"]["template"]["spec"];
    assert_eq!(pod["hostIPC"], true, "JSON names keep Kubernetes' acronyms");
    assert_eq!(pod["terminationGracePeriodSeconds"], -1, "negative int64 varints");
    assert_eq!(
        pod["containers"],
        json!([{
            "name": "x",
            "image": "nginx:1.27",
            "args": ["--a", "b"],
            "ports": [{"containerPort": 80, "protocol": "TCP"}],
            "resources": {"limits": {"cpu": "500m"}},
        }])
    );
    assert_eq!(value["status"], json!({}));
    assert!(value["metadata"].get("creationTimestamp").is_none() && value["metadata"].get("resourceVersion").is_none());
    // and it is a valid Deployment
    let typed: Deployment = serde_json::from_value(value)?;
    assert_eq!(typed.spec.template.spec.map(|s| s.containers.len()), Some(1));
    Ok(())
}

#[test]
fn service_ports_decode() -> TestResult {
    let service = core::Service {
        metadata: Some(meta("s", "demo")),
        spec: Some(core::ServiceSpec {
            r#type: Some("ClusterIP".into()),
            cluster_ip: Some(String::new()),
            ports: vec![core::ServicePort {
                name: Some("80-8080".into()),
                port: Some(80),
                target_port: Some(IntOrString { r#type: Some(0), int_val: Some(8080), str_val: Some(String::new()) }),
                node_port: Some(0),
                ..Default::default()
            }],
            selector: map(&[("app", "s")]),
            ..Default::default()
        }),
        status: None,
    };
    let value = decode_request(&envelope("v1", "Service", &service))?;
    assert_eq!(
        value["spec"],
        json!({
            "type": "ClusterIP",
            "ports": [{"name": "80-8080", "port": 80, "targetPort": 8080, "nodePort": 0}],
            "selector": {"app": "s"},
        })
    );
    Ok(())
}

#[test]
fn malformed_bodies_are_400_and_unknown_kinds_415() {
    let ns = core::Namespace { metadata: Some(meta("demo", "")), ..Default::default() };
    let good = envelope("v1", "Namespace", &ns);
    assert!(decode_request(&good).is_ok());
    let code = |bytes: &[u8]| decode_request(bytes).err().map(|e| e.code());
    assert_eq!(code(&good[4..]), Some(400), "no magic");
    assert_eq!(code(&good[..good.len() - 3]), Some(400), "truncated");
    assert_eq!(code(b"k8s\0\x0a\x02\x12\x00"), Some(400), "no apiVersion/kind content");
    assert_eq!(code(&envelope("example.com/v1", "Widget", &ns)), Some(415));
    // a string field sent as a varint
    let mut bad = envelope("v1", "Namespace", &core::Namespace::default());
    let raw = {
        let mut r = Vec::new();
        r.extend([0x0a, 0x02, 0x08, 0x01]); // metadata{ name: varint 1 }
        r
    };
    bad.truncate(4);
    bad.extend(
        Unknown {
            type_meta: Some(TypeMeta { api_version: Some("v1".into()), kind: Some("Namespace".into()) }),
            raw: Some(raw),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    let err = decode_request(&bad).err();
    assert_eq!(err.as_ref().map(bosun_core::Error::code), Some(400));
    assert!(err.map(|e| e.to_string()).unwrap_or_default().contains("name"));
}

const KUBECTL: &str = "/usr/bin/kubectl";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_subcommands_send_protobuf_and_work() -> TestResult {
    if !Path::new(KUBECTL).exists() {
        assert!(std::env::var("BOSUN_REQUIRE_COMPONENTS").as_deref() != Ok("1"), "{KUBECTL} is missing and BOSUN_REQUIRE_COMPONENTS=1");
        eprintln!("SKIPPED: {KUBECTL} is missing");
        return Ok(());
    }
    let (api, server) = start().await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig)?;
    let kubectl = |args: &'static [&'static str]| {
        let mut cmd = tokio::process::Command::new(KUBECTL);
        cmd.arg("--kubeconfig").arg(&kubeconfig).arg("--cache-dir").arg(dir.path().join("cache")).args(args);
        cmd.env_remove("KUBECONFIG").env("HOME", dir.path()).kill_on_drop(true);
        async move {
            let out = tokio::time::timeout(Duration::from_secs(60), cmd.output()).await??;
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(out.status.success(), "kubectl {args:?} failed:\nstdout: {stdout}\nstderr: {stderr}");
            Ok::<_, Box<dyn std::error::Error>>((stdout, stderr))
        }
    };

    let (out, log) = kubectl(&["create", "namespace", "demo", "-v=8"]).await?;
    assert!(out.contains("namespace/demo created"), "{out}");
    assert!(log.contains("application/vnd.kubernetes.protobuf"), "kubectl should have sent protobuf:\n{log}");
    let (out, _) = kubectl(&["create", "configmap", "c", "--from-literal=a=b", "-n", "demo"]).await?;
    assert!(out.contains("configmap/c created"), "{out}");
    let (out, _) = kubectl(&["create", "deployment", "d", "--image=x", "-n", "demo"]).await?;
    assert!(out.contains("deployment.apps/d created"), "{out}");
    let (out, _) = kubectl(&["create", "service", "clusterip", "s", "--tcp=80:8080", "-n", "demo"]).await?;
    assert!(out.contains("service/s created"), "{out}");

    let client: Arc<dyn Client> = api;
    let ns = Api::<Namespace>::all(client.clone()).get("demo").await?;
    assert!(ns.metadata.uid.is_some());
    let cm = Api::<ConfigMap>::namespaced(client.clone(), "demo").get("c").await?;
    assert_eq!(cm.data.and_then(|d| d.get("a").cloned()).as_deref(), Some("b"));
    let d = Api::<Deployment>::namespaced(client.clone(), "demo").get("d").await?;
    let spec = d.spec;
    assert_eq!(spec.selector.match_labels.and_then(|l| l.get("app").cloned()).as_deref(), Some("d"));
    let containers = spec.template.spec.ok_or("no pod spec")?.containers;
    assert_eq!(containers.first().and_then(|c| c.image.clone()).as_deref(), Some("x"));
    let s = Api::<Service>::namespaced(client, "demo").get("s").await?;
    let port = s.spec.and_then(|s| s.ports).and_then(|p| p.into_iter().next()).ok_or("no port")?;
    assert_eq!(port.port, 80);
    assert_eq!(port.target_port, Some(bosun_core::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8080)));
    Ok(())
}
