//! A simulated kubelet for tests and benchmarks: every pod becomes `Running` and `Ready` with an
//! IP at once, and pods that begin graceful deletion are removed at once.

use crate::clock;
use crate::runtime::{Action, Controller};
use bosun_core::meta::{is_condition_true, is_deleting};
use bosun_core::{Api, DeleteParams, Object, Patch, PatchParams};
use k8s_openapi::api::core::v1::Pod;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// Whether the simulated kubelet has already made this pod ready.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.conditions.as_deref()).is_some_and(|c| is_condition_true(c, "Ready"))
}

/// The status the simulated kubelet gives a pod: running, ready, with an IP from 10.0.0.0/8.
pub fn ready_status(ip: u32) -> serde_json::Value {
    let now = clock::now_time();
    let ip = format!("10.{}.{}.{}", (ip >> 16) & 255, (ip >> 8) & 255, ip & 255);
    serde_json::json!({
        "status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": now,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
            ],
        }
    })
}

struct Ctx {
    api: Api<Pod>,
    next_ip: AtomicU32,
}

async fn reconcile(pod: Arc<Pod>, ctx: Arc<Ctx>) -> Result<Action, bosun_core::Error> {
    let api = ctx.api.in_namespace(pod.namespace().unwrap_or("default"));
    if is_deleting(pod.meta()) {
        match api.delete(pod.name(), &DeleteParams::default().grace_period(0)).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    } else if !is_ready(&pod) {
        let ip = ctx.next_ip.fetch_add(1, Ordering::Relaxed);
        match api.patch_status(pod.name(), &Patch::Merge(ready_status(ip)), &PatchParams::default()).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Action::await_change())
}

/// Runs the simulated kubelet as a controller of pods.
pub fn simulated(controller: Controller<Pod>) -> impl Future<Output = ()> + Send + 'static {
    let ctx = Arc::new(Ctx { api: Api::all(controller.client()), next_ip: AtomicU32::new(1) });
    controller.name("kubelet-sim").concurrency(64).run(reconcile, crate::runtime::backoff_policy, ctx)
}
