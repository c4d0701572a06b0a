//! `bosun-cluster`: the reference cluster on embedded defaults, driven by the real `kubectl`.

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use bosun_examples::{Cluster, ClusterConfig, ProxyChoice, Role, RuntimeChoice, StoreChoice};
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
    /// Container runtime: process (plain processes, no privileges), runc (OCI containers on a
    /// CNI bridge; root) or fake (nothing runs; scale tests).
    #[arg(long, default_value = "process", value_parser = ["process", "runc", "fake"])]
    runtime: String,
    /// Service proxy: userspace (listens on loopback ClusterIPs) or nftables (DNAT rules; root).
    #[arg(long, default_value = "userspace", value_parser = ["userspace", "nftables"])]
    proxy: String,
    /// What this process runs: all, control-plane (API server, leader-elected scheduler and
    /// controllers; with --server only the last two) or node (node agents, proxy, DNS, ingress).
    #[arg(long, default_value = "all", value_parser = ["all", "control-plane", "node"])]
    role: String,
    /// The API server to join (https://HOST:PORT) for --role node or a control plane without its
    /// own API server; credentials come from --kubeconfig, which is then read, not written.
    #[arg(long)]
    server: Option<String>,
    /// Node names are PREFIX-1, PREFIX-2...; give each node process its own.
    #[arg(long, default_value = "node")]
    node_prefix: String,
    /// Service ClusterIP range (default 127.240.0.0/12 with the userspace proxy, 10.96.0.0/16 with nftables).
    #[arg(long)]
    service_cidr: Option<String>,
    /// Run the scheduler and controllers behind leader election (default: with --etcd or --role control-plane).
    #[arg(long)]
    leader_elect: Option<bool>,
    /// The cluster DNS address.
    #[arg(long, default_value = "127.0.0.1:10053")]
    dns: SocketAddr,
    /// The ingress HTTP address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    ingress: SocketAddr,
    /// The node endpoint's HTTPS address (logs, exec, attach and usage of this process's pods for
    /// the API server; its IP becomes the nodes' InternalIP, 127.0.0.1 for an unspecified one, so
    /// give this machine's address for a multi-machine cluster). Default: 127.0.0.1:10250, or an
    /// ephemeral loopback port when 10250 is taken.
    #[arg(long)]
    node_listen: Option<SocketAddr>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let runtime = match args.runtime.as_str() {
        "runc" => RuntimeChoice::Runc,
        "fake" => RuntimeChoice::Fake,
        _ => RuntimeChoice::Process,
    };
    let proxy = if args.proxy == "nftables" { ProxyChoice::Nftables } else { ProxyChoice::Userspace };
    let role = match args.role.as_str() {
        "control-plane" => Role::ControlPlane,
        "node" => Role::Node,
        _ => Role::All,
    };
    if role == Role::Node && args.server.is_none() {
        eprintln!("error: --role node needs --server https://HOST:PORT (and --kubeconfig with the control plane's credentials)");
        return std::process::ExitCode::from(2);
    }
    if role == Role::All && args.server.is_some() {
        eprintln!("error: --server joins another API server: use it with --role node or --role control-plane");
        return std::process::ExitCode::from(2);
    }
    let service_cidr = args.service_cidr.clone().unwrap_or_else(|| match proxy {
        ProxyChoice::Userspace => "127.240.0.0/12".to_owned(),
        ProxyChoice::Nftables => "10.96.0.0/16".to_owned(),
    });
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
        service_cidr,
        runtime,
        proxy,
        role,
        server: args.server.clone(),
        node_prefix: args.node_prefix.clone(),
        leader_election: args.leader_elect,
        node_listen: args.node_listen,
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
    tracing::info!(url = %cluster.url(), role = %args.role, "bosun-cluster is ready (/readyz answers ok)");
    println!("\nbosun-cluster is ready at {}\n\n    export KUBECONFIG={}\n    kubectl get nodes\n", cluster.url(), kubeconfig.display());
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down");
    cluster.shutdown().await;
    std::process::ExitCode::SUCCESS
}
