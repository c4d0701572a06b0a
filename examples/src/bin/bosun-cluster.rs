//! `bosun-cluster`: the reference cluster on embedded defaults, driven by the real `kubectl`.

use bosun_examples::{Cluster, ClusterConfig, StoreChoice};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Starts a Kubernetes-compatible cluster in one process: API server, scheduler, controllers,
/// node agents with the process runtime, the userspace service proxy, cluster DNS and ingress.
#[derive(Debug, Parser)]
#[command(name = "bosun-cluster", version)]
struct Args {
    /// Where state lives (the durable store, node state, container logs).
    #[arg(long, default_value = "bosun-data")]
    data_dir: PathBuf,
    /// `memory` keeps state in memory only (default: the durable store in --data-dir).
    #[arg(long)]
    store: Option<String>,
    /// Keep state in a real etcd cluster at these endpoints (comma separated).
    #[arg(long, value_delimiter = ',')]
    etcd: Vec<String>,
    /// The API server's HTTPS address.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Where to write the kubeconfig.
    #[arg(long, default_value = "bosun.kubeconfig")]
    kubeconfig: PathBuf,
    /// Node agents to run in this process.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Container runtime: process (default).
    #[arg(long, default_value = "process")]
    runtime: String,
    /// Service proxy: userspace (default).
    #[arg(long, default_value = "userspace")]
    proxy: String,
    /// The cluster DNS address.
    #[arg(long, default_value = "127.0.0.1:10053")]
    dns: SocketAddr,
    /// The ingress HTTP address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    ingress: SocketAddr,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    if args.runtime != "process" || args.proxy != "userspace" {
        eprintln!("error: only --runtime process and --proxy userspace are wired into bosun-cluster so far");
        return std::process::ExitCode::from(2);
    }
    let store = match (args.store.as_deref(), args.etcd.is_empty()) {
        (Some("memory"), true) => StoreChoice::Memory,
        (None, true) => StoreChoice::Durable,
        (None, false) => StoreChoice::Etcd(args.etcd.clone()),
        (Some(other), _) => {
            eprintln!("error: --store {other:?}: expected `memory` (or --etcd URL for etcd)");
            return std::process::ExitCode::from(2);
        }
    };
    let config = ClusterConfig {
        data_dir: args.data_dir,
        store,
        listen: args.listen,
        kubeconfig: args.kubeconfig.clone(),
        nodes: args.nodes,
        dns: args.dns,
        ingress: args.ingress,
        ..ClusterConfig::default()
    };
    tracing::info!("starting bosun-cluster");
    let cluster = match Cluster::start(config).await {
        Ok(c) => c,
        Err(error) => {
            tracing::error!(%error, "the cluster failed to start");
            return std::process::ExitCode::FAILURE;
        }
    };
    let kubeconfig = std::fs::canonicalize(&args.kubeconfig).unwrap_or(args.kubeconfig);
    tracing::info!(url = %cluster.url(), "bosun-cluster is ready (/readyz answers ok)");
    println!("\nbosun-cluster is ready at {}\n\n    export KUBECONFIG={}\n    kubectl get nodes\n", cluster.url(), kubeconfig.display());
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down");
    cluster.shutdown().await;
    std::process::ExitCode::SUCCESS
}
