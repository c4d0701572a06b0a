//! The Node object: registration with capacity, allocatable, labels, addresses and node info;
//! the Lease heartbeat in `kube-node-lease`; node conditions.

use super::NodeAgentConfig;
use bosun_core::k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use bosun_core::k8s_openapi::api::core::v1::{
    DaemonEndpoint, Namespace, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus, NodeSystemInfo,
};
use bosun_core::k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use bosun_core::{Api, Client, Patch, PatchParams, PostParams, Quantity, Result};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The namespace node leases live in.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// Seconds a lease is valid (the kubelet's 40 s).
pub const LEASE_DURATION_SECONDS: i32 = 40;

/// The Kubernetes architecture name of this machine.
pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// This machine's capacity: CPUs, memory, 110 pods, and the disk holding `root`.
pub fn host_capacity(root: &std::path::Path) -> BTreeMap<String, Quantity> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find(|l| l.starts_with("MemTotal:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<i64>().ok())
        })
        .unwrap_or(1 << 20);
    let disk = rustix::fs::statvfs(root).map_or(10 << 30, |s| i64::try_from(s.f_blocks.saturating_mul(s.f_frsize)).unwrap_or(i64::MAX));
    BTreeMap::from([
        ("cpu".to_string(), Quantity::from_milli(i64::try_from(cpus).unwrap_or(1) * 1000)),
        ("memory".to_string(), Quantity::from_bytes(mem_kib * 1024)),
        ("pods".to_string(), Quantity::from_milli(110_000)),
        ("ephemeral-storage".to_string(), Quantity::from_bytes(disk)),
    ])
}

fn api_map(m: &BTreeMap<String, Quantity>) -> BTreeMap<String, ApiQuantity> {
    m.iter().map(|(k, v)| (k.clone(), ApiQuantity(v.to_string()))).collect()
}

fn condition(type_: &str, ok: bool, reason: &str, message: &str, now: jiff::Timestamp) -> NodeCondition {
    // Ready is good when True; the pressure conditions are good when False.
    let status = if type_ == "Ready" { ok } else { !ok };
    NodeCondition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Node conditions from what the agent can measure (the fake node is always healthy).
pub fn conditions(config: &NodeAgentConfig, now: jiff::Timestamp) -> Vec<NodeCondition> {
    let pid_ok = !config.measure_pressure || !pid_pressure(host_tasks(), config.pid_available_threshold);
    let (mem_ok, disk_ok) = if config.measure_pressure {
        let avail_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
            m.lines().find(|l| l.starts_with("MemAvailable:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<u64>().ok())
        });
        let disk = rustix::fs::statvfs(&config.root_dir).ok().map(|s| (s.f_bavail, s.f_blocks));
        (avail_kib.is_none_or(|k| k > 100 * 1024), disk.is_none_or(|(avail, total)| total == 0 || avail * 10 >= total))
    } else {
        (true, true)
    };
    vec![
        condition(
            "MemoryPressure",
            mem_ok,
            if mem_ok { "KubeletHasSufficientMemory" } else { "KubeletHasInsufficientMemory" },
            "kubelet has sufficient memory available",
            now,
        ),
        condition(
            "DiskPressure",
            disk_ok,
            if disk_ok { "KubeletHasNoDiskPressure" } else { "KubeletHasDiskPressure" },
            "kubelet has no disk pressure",
            now,
        ),
        condition(
            "PIDPressure",
            pid_ok,
            if pid_ok { "KubeletHasSufficientPID" } else { "KubeletHasInsufficientPID" },
            if pid_ok { "kubelet has sufficient PID available" } else { "kubelet has insufficient PID available" },
            now,
        ),
        condition("Ready", true, "KubeletReady", "kubelet is posting ready status", now),
    ]
}

/// The node's task capacity and the tasks in use, as the kubelet measures them for the
/// `pid.available` signal: the smaller of `kernel.pid_max` and `kernel.threads-max`, and the
/// task count of `/proc/loadavg` (sysinfo(2) truncates it past 65535). `None` where unreadable.
pub fn host_tasks() -> Option<(u64, u64)> {
    let read = |p: &str| std::fs::read_to_string(p).ok().and_then(|s| s.trim().parse::<u64>().ok());
    let capacity = match (read("/proc/sys/kernel/pid_max"), read("/proc/sys/kernel/threads-max")) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    let in_use = loadavg_tasks(&std::fs::read_to_string("/proc/loadavg").ok()?)?;
    Some((capacity, in_use))
}

/// The total task count of a `/proc/loadavg` line (`0.20 0.18 0.12 1/80 11206`: the 80).
fn loadavg_tasks(loadavg: &str) -> Option<u64> {
    loadavg.split_whitespace().nth(3)?.split_once('/')?.1.parse().ok()
}

/// Whether `(capacity, in_use)` tasks leave less than `threshold` (a fraction of the capacity)
/// available: the `pid.available` hard eviction threshold is met.
pub fn pid_pressure(tasks: Option<(u64, u64)>, threshold: f64) -> bool {
    let Some((capacity, in_use)) = tasks else { return false };
    #[allow(clippy::cast_precision_loss)]
    let (capacity, available) = (capacity as f64, capacity.saturating_sub(in_use) as f64);
    available < capacity * threshold
}

/// The Node object this agent registers.
pub fn desired_node(config: &NodeAgentConfig, runtime_version: &str, allocatable: &BTreeMap<String, Quantity>) -> Node {
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), config.node_name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), arch().to_string()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("beta.kubernetes.io/arch".to_string(), arch().to_string()),
    ]);
    labels.extend(config.labels.clone());
    let now = jiff::Timestamp::now();
    Node {
        metadata: ObjectMeta { name: Some(config.node_name.clone()), labels: Some(labels), ..ObjectMeta::default() },
        spec: Some(NodeSpec { taints: (!config.taints.is_empty()).then(|| config.taints.clone()), ..NodeSpec::default() }),
        status: Some(NodeStatus {
            capacity: Some(api_map(&config.capacity)),
            allocatable: Some(api_map(allocatable)),
            conditions: Some(conditions(config, now)),
            addresses: Some(vec![
                NodeAddress { type_: "InternalIP".into(), address: config.node_ip.clone() },
                NodeAddress { type_: "Hostname".into(), address: config.node_name.clone() },
            ]),
            daemon_endpoints: Some(NodeDaemonEndpoints { kubelet_endpoint: Some(DaemonEndpoint { port: i32::from(config.port) }) }),
            node_info: Some(NodeSystemInfo {
                architecture: arch().into(),
                container_runtime_version: runtime_version.to_string(),
                kubelet_version: format!("v1.37.0-bosun.{}", env!("CARGO_PKG_VERSION")),
                kube_proxy_version: String::new(),
                operating_system: "linux".into(),
                os_image: "bosun".into(),
                kernel_version: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
                machine_id: config.node_name.clone(),
                system_uuid: config.node_name.clone(),
                boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default().trim().to_string(),
                ..NodeSystemInfo::default()
            }),
            ..NodeStatus::default()
        }),
    }
}

/// Creates the Node, or updates labels and status when it exists (an agent restart).
pub async fn register(client: &Arc<dyn Client>, node: &Node) -> Result<Node> {
    let api = Api::<Node>::all(client.clone());
    let name = node.metadata.name.clone().unwrap_or_default();
    let created = match api.create(node, &PostParams::default()).await {
        // The API server keeps a Node's status on create (the kubelet registers it that way).
        Ok(n) if n.status.as_ref().is_some_and(|s| s.conditions.is_some() && s.capacity.is_some()) => return Ok(n),
        Ok(n) => n,
        Err(e) if e.code() == 409 => {
            let patch = serde_json::json!({ "metadata": { "labels": node.metadata.labels } });
            api.patch(&name, &Patch::Merge(patch), &PatchParams::default()).await?
        }
        Err(e) => return Err(e),
    };
    // Status is a subresource: write it explicitly, since create may drop it.
    let status = serde_json::json!({ "status": node.status });
    match api.patch_status(&name, &Patch::Merge(status), &PatchParams::default()).await {
        Ok(n) => Ok(n),
        Err(e) if e.code() == 404 || e.code() == 405 => Ok(created),
        Err(e) => Err(e),
    }
}

/// Writes the node's conditions (heartbeat times included).
pub async fn update_status(client: &Arc<dyn Client>, node_name: &str, conditions: &[NodeCondition]) -> Result<()> {
    let status = serde_json::json!({ "status": { "conditions": conditions } });
    Api::<Node>::all(client.clone()).patch_status(node_name, &Patch::Merge(status), &PatchParams::default()).await.map(|_| ())
}

/// Whether two condition lists say the same (type, status, reason and message; times aside).
pub fn same_conditions(a: &[NodeCondition], b: &[NodeCondition]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| x.type_ == y.type_ && x.status == y.status && x.reason == y.reason && x.message == y.message)
}

/// Keeps the transition time of every condition whose status did not change since `reported`.
pub fn carry_transitions(mut conditions: Vec<NodeCondition>, reported: &[NodeCondition]) -> Vec<NodeCondition> {
    for c in &mut conditions {
        if let Some(old) = reported.iter().find(|o| o.type_ == c.type_ && o.status == c.status) {
            c.last_transition_time.clone_from(&old.last_transition_time);
        }
    }
    conditions
}

/// Renews a node's Lease from the copy it last wrote (one update per renewal, as the kubelet's
/// lease controller does); reads it again only after a conflict.
pub struct LeaseRenewer {
    client: Arc<dyn Client>,
    node_name: String,
    node_uid: Option<String>,
    latest: Option<Lease>,
}

impl std::fmt::Debug for LeaseRenewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseRenewer").field("node_name", &self.node_name).finish_non_exhaustive()
    }
}

impl LeaseRenewer {
    /// A renewer for the Lease of node `node_name` (owned by the Node with `node_uid`).
    pub fn new(client: Arc<dyn Client>, node_name: &str, node_uid: Option<String>) -> Self {
        Self { client, node_name: node_name.to_string(), node_uid, latest: None }
    }

    /// Creates or renews the Lease.
    pub async fn renew(&mut self) -> Result<()> {
        if let Some(mut lease) = self.latest.take() {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
            let api = Api::<Lease>::namespaced(self.client.clone(), LEASE_NAMESPACE);
            match api.replace(&lease, &PostParams::default()).await {
                Ok(l) => {
                    self.latest = Some(l);
                    return Ok(());
                }
                Err(e) if e.is_conflict() || e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        self.latest = Some(renew_lease(&self.client, &self.node_name, self.node_uid.as_deref()).await?);
        Ok(())
    }
}

/// Creates or renews the node's Lease, returning it as written: creates it first (a new node's
/// case), and reads and updates it when it exists (an agent restart).
pub async fn renew_lease(client: &Arc<dyn Client>, node_name: &str, node_uid: Option<&str>) -> Result<Lease> {
    let api = Api::<Lease>::namespaced(client.clone(), LEASE_NAMESPACE);
    let now = MicroTime(jiff::Timestamp::now());
    let owner = node_uid.map(|uid| {
        vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: node_name.to_string(),
            uid: uid.to_string(),
            ..OwnerReference::default()
        }]
    });
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(node_name.to_string()),
            namespace: Some(LEASE_NAMESPACE.into()),
            owner_references: owner,
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node_name.to_string()),
            lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
            renew_time: Some(now.clone()),
            ..LeaseSpec::default()
        }),
    };
    match api.create(&lease, &PostParams::default()).await {
        Ok(l) => Ok(l),
        Err(e) if e.code() == 409 => {
            let mut lease = api.get(node_name).await?;
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            spec.renew_time = Some(now);
            spec.holder_identity = Some(node_name.to_string());
            spec.lease_duration_seconds = Some(LEASE_DURATION_SECONDS);
            api.replace(&lease, &PostParams::default()).await
        }
        Err(e) if e.code() == 404 => {
            // The lease namespace is missing: make it, then retry once.
            let ns =
                Namespace { metadata: ObjectMeta { name: Some(LEASE_NAMESPACE.into()), ..ObjectMeta::default() }, ..Namespace::default() };
            match Api::<Namespace>::all(client.clone()).create(&ns, &PostParams::default()).await {
                Ok(_) => {}
                Err(e) if e.code() == 409 => {}
                Err(e) => return Err(e),
            }
            api.create(&lease, &PostParams::default()).await
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_pressure_follows_the_available_fraction_of_the_task_capacity() {
        assert_eq!(loadavg_tasks("0.20 0.18 0.12 1/80 11206"), Some(80));
        assert_eq!(loadavg_tasks("garbage"), None);
        // 4194304 pids but 1000 threads at most: the smaller limit is the capacity.
        assert!(!pid_pressure(Some((1000, 899)), 0.1), "101 tasks left of 1000: above 10%");
        assert!(pid_pressure(Some((1000, 901)), 0.1), "99 tasks left of 1000: under 10%");
        assert!(pid_pressure(Some((1000, 1200)), 0.1), "over capacity");
        assert!(!pid_pressure(None, 0.1), "unmeasurable: no pressure");
        let config = NodeAgentConfig::new("n1", "/nonexistent").pid_available_threshold(1.1);
        let now = jiff::Timestamp::from_second(1_000).expect("now");
        let pid = conditions(&config, now).into_iter().find(|c| c.type_ == "PIDPressure").expect("PIDPressure");
        let measurable = host_tasks().is_some();
        assert_eq!(pid.status, if measurable { "True" } else { "False" }, "a threshold above the capacity is always met");
        assert_eq!(pid.reason.as_deref(), Some(if measurable { "KubeletHasInsufficientPID" } else { "KubeletHasSufficientPID" }));
        let config = config.pid_available_threshold(0.0);
        let pid = conditions(&config, now).into_iter().find(|c| c.type_ == "PIDPressure").expect("PIDPressure");
        assert_eq!(pid.status, "False");
    }

    #[test]
    fn unchanged_conditions_keep_their_transition_times_and_are_not_reported_again() {
        let config = NodeAgentConfig::new("n1", "/nonexistent").measure_pressure(false);
        let t0 = jiff::Timestamp::from_second(1_000).expect("t0");
        let t1 = jiff::Timestamp::from_second(2_000).expect("t1");
        let reported = conditions(&config, t0);
        let now = conditions(&config, t1);
        assert!(same_conditions(&now, &reported), "heartbeat times aside, nothing changed");
        let carried = carry_transitions(now, &reported);
        assert!(carried.iter().all(|c| c.last_transition_time == Some(Time(t0))));
        assert!(carried.iter().all(|c| c.last_heartbeat_time == Some(Time(t1))));
        let mut flipped = conditions(&config, t1);
        flipped[0].status = "True".into();
        assert!(!same_conditions(&flipped, &reported));
        let carried = carry_transitions(flipped, &reported);
        assert_eq!(carried[0].last_transition_time, Some(Time(t1)), "a changed status gets a new transition time");
        assert_eq!(carried[1].last_transition_time, Some(Time(t0)));
    }
}
