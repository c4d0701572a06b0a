//! A bosun controller running against a real Kubernetes cluster through the `kube` adapter.
//!
//! Every bosun component talks through `Arc<dyn bosun_core::Client>`: the in-process API server
//! is one implementation, `bosun_core::kube_client::KubeClient` (feature `kube` of bosun-core) is
//! another, which speaks HTTPS to any Kubernetes API server with kubectl's credentials. The
//! controller here is the config reloader of `examples/src/reloader.rs`: a Deployment annotated
//! `example.com/config-hash-from: <configmap>` gets that ConfigMap's hash on its pod template, so
//! editing the ConfigMap rolls its pods. Against any cluster (kind, minikube, EKS, bosun's own):
//!
//! ```sh
//! KUBECONFIG=~/.kube/config cargo run -p bosun-examples --example kube_adapter
//! cargo run -p bosun-examples --example kube_adapter -- --kubeconfig bosun.kubeconfig --namespace default
//! kubectl create configmap app-config --from-literal=greeting=hi
//! kubectl create deployment app --image=nginx
//! kubectl annotate deployment app example.com/config-hash-from=app-config
//! kubectl edit configmap app-config        # the Deployment rolls out new pods
//! ```
//!
//! It needs RBAC to list and watch ConfigMaps and Deployments and to patch Deployments. Ctrl-C
//! stops it after the reconciles in flight.

use std::path::PathBuf;
use std::sync::Arc;

use bosun_core::k8s_openapi::api::apps::v1::Deployment;
use bosun_core::kube_client::KubeClient;
use bosun_core::{Api, Client, ListParams};
use clap::Parser;

/// Runs the config reloader against a Kubernetes API server.
#[derive(Parser, Debug)]
struct Args {
    /// The kubeconfig to use (default: `$KUBECONFIG`, `~/.kube/config`, or the in-cluster
    /// service account, as kubectl does).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long)]
    namespace: Option<String>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kube_adapter: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let kube = match &args.kubeconfig {
        Some(path) => KubeClient::from_kubeconfig(path).await?,
        None => KubeClient::try_default().await?,
    };
    let client: Arc<dyn Client> = Arc::new(kube);
    // Fail now, with a clear message, if the cluster cannot be reached or refuses us.
    let deployments = match &args.namespace {
        Some(ns) => Api::<Deployment>::namespaced(client.clone(), ns),
        None => Api::<Deployment>::all(client.clone()),
    };
    deployments.list(&ListParams::default().limit(1)).await.map_err(|e| format!("cannot list Deployments: {e}"))?;
    tracing::info!(namespace = args.namespace.as_deref().unwrap_or("(all)"), "config reloader starting");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    bosun_examples::reloader::run(client, args.namespace.as_deref(), shutdown).await;
    Ok(())
}
