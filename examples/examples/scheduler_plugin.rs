//! A scheduler with two custom plugins beside kube-scheduler's defaults: a Filter that keeps pods
//! off nodes under maintenance (unless they opt in) and a Score that prefers cheaper nodes. The
//! plugins are in `examples/src/scheduling.rs`; a plugin implements `Plugin` (its name, the cluster
//! events that may make a waiting pod schedulable) and the traits of its extension points.
//!
//! Four nodes with hourly costs, one of them (the cheapest) under maintenance; three ordinary pods
//! go to the cheapest node in service, the maintenance tooling's pod to the draining node, and a
//! pod pinned to the draining node stays Pending with the plugin's reason.
//!
//! `cargo run -p bosun-examples --example scheduler_plugin`

use bosun_core::k8s_openapi::api::core::v1::{Node, Pod};
use bosun_core::{Api, Client, PostParams};
use bosun_examples::scheduling::{self, HOURLY_COST, MAINTENANCE, MAINTENANCE_OK, pod};
use bosun_scheduler::Scheduler;
use std::sync::Arc;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client: Arc<dyn Client> = bosun_store::ApiServer::in_memory();
    let nodes = Api::<Node>::all(client.clone());
    for (name, cents, draining) in [("on-demand", "120", false), ("reserved", "60", false), ("spot", "35", false), ("draining", "10", true)]
    {
        let mut labels = vec![(HOURLY_COST, cents), ("kubernetes.io/hostname", name)];
        if draining {
            labels.push((MAINTENANCE, "true"));
        }
        nodes.create(&scheduling::node(name, &labels), &PostParams::default()).await?;
    }
    let scheduler = Scheduler::builder(client.clone()).profile(scheduling::profile()).build()?;
    let running = scheduler.start().await;

    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    for p in [
        pod("web-1", &[], None),
        pod("web-2", &[], None),
        pod("web-3", &[], None),
        pod("firmware-updater", &[(MAINTENANCE_OK, "true")], None),
        pod("pinned", &[], Some("draining")),
    ] {
        pods.create(&p, &PostParams::default()).await?;
    }
    let names = ["web-1", "web-2", "web-3", "firmware-updater", "pinned"];
    for (pod, placement) in scheduling::placements(&pods, &names, Duration::from_secs(10)).await? {
        match placement {
            Ok(node) => println!("{pod:18} -> {node}"),
            Err(why) => println!("{pod:18} -> Pending: {why}"),
        }
    }
    running.stop();
    Ok(())
}
