//! Shared setup: an in-process API server behind the harness, and object builders.

use bosun_controllers::{Harness, ManagerConfig};
use bosun_core::Client;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, ReplicaSet, ReplicaSetSpec, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::sync::Arc;

/// An in-memory API server that stamps creation and deletion times from the controllers' clock,
/// which follows tokio's (virtual, in paused tests) time.
pub fn server() -> Arc<dyn Client> {
    let storage = Arc::new(bosun_store::MemoryStorage::new());
    match bosun_store::ApiServer::builder(storage).clock(bosun_controllers::clock::now).build() {
        Ok(api) => api,
        Err(e) => panic!("the default cluster IP range parses: {e}"),
    }
}

/// A harness running the given built-ins and the simulated kubelet.
pub fn harness(controllers: &[&str]) -> Harness {
    let mut h = Harness::new(server());
    h.start_builtins(ManagerConfig::default().only(controllers));
    h.start_kubelet();
    h
}

pub fn labels(app: &str) -> std::collections::BTreeMap<String, String> {
    [("app".to_owned(), app.to_owned())].into()
}

pub fn template(app: &str, image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta { labels: Some(labels(app)), ..ObjectMeta::default() }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "main".into(),
                image: Some(image.into()),
                ports: Some(vec![ContainerPort { name: Some("http".into()), container_port: 8080, ..ContainerPort::default() }]),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
    }
}

pub fn replicaset(name: &str, app: &str, replicas: i32) -> ReplicaSet {
    ReplicaSet {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some("default".into()), ..ObjectMeta::default() },
        spec: ReplicaSetSpec {
            replicas: Some(replicas),
            selector: LabelSelector { match_labels: Some(labels(app)), ..LabelSelector::default() },
            template: Some(template(app, "web:1")),
            ..ReplicaSetSpec::default()
        },
        status: None,
    }
}

pub fn deployment(name: &str, replicas: i32, surge: i32, unavailable: i32) -> Deployment {
    Deployment {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some("default".into()), ..ObjectMeta::default() },
        spec: DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector { match_labels: Some(labels(name)), ..LabelSelector::default() },
            template: template(name, "web:1"),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(surge)),
                    max_unavailable: Some(IntOrString::Int(unavailable)),
                }),
            }),
            ..DeploymentSpec::default()
        },
        status: None,
    }
}

pub fn bare_pod(name: &str, app: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            labels: Some(labels(app)),
            ..ObjectMeta::default()
        },
        spec: template(app, "web:1").spec,
        status: None,
    }
}
