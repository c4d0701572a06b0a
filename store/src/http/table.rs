//! Server-side printing: the `meta.k8s.io/v1` `Table` kubectl asks for on `get`, with the columns
//! kubectl users know for every built-in kind (`NAME READY STATUS RESTARTS AGE` for pods...).

use bosun_core::ApiResource;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Header, e.g. `Ready`.
    pub name: &'static str,
    /// OpenAPI type: `string`, `integer`, `boolean`.
    pub type_: &'static str,
    /// Format, e.g. `name` for the name column.
    pub format: &'static str,
    /// 0 for `get`, 1 for the extra columns of `get -o wide`.
    pub priority: i32,
}

/// The cells of one row.
pub type TableRow = Vec<Value>;

const fn col(name: &'static str, type_: &'static str, priority: i32) -> Column {
    Column { name, type_, format: "", priority }
}

const NAME: Column = Column { name: "Name", type_: "string", format: "name", priority: 0 };
const AGE: Column = col("Age", "string", 0);
const S: &str = "string";
const I: &str = "integer";

/// The columns of a resource's table.
pub fn table_columns(resource: &ApiResource) -> Vec<Column> {
    match (resource.group.as_ref(), resource.kind.as_ref()) {
        ("", "Pod") => vec![
            NAME,
            col("Ready", S, 0),
            col("Status", S, 0),
            col("Restarts", S, 0),
            AGE,
            col("IP", S, 1),
            col("Node", S, 1),
            col("Nominated Node", S, 1),
            col("Readiness Gates", S, 1),
        ],
        ("apps", "Deployment") => vec![
            NAME,
            col("Ready", S, 0),
            col("Up-to-date", I, 0),
            col("Available", I, 0),
            AGE,
            col("Containers", S, 1),
            col("Images", S, 1),
            col("Selector", S, 1),
        ],
        ("apps", "ReplicaSet") | ("", "ReplicationController") => vec![
            NAME,
            col("Desired", I, 0),
            col("Current", I, 0),
            col("Ready", I, 0),
            AGE,
            col("Containers", S, 1),
            col("Images", S, 1),
            col("Selector", S, 1),
        ],
        ("apps", "StatefulSet") => vec![NAME, col("Ready", S, 0), AGE, col("Containers", S, 1), col("Images", S, 1)],
        ("apps", "DaemonSet") => vec![
            NAME,
            col("Desired", I, 0),
            col("Current", I, 0),
            col("Ready", I, 0),
            col("Up-to-date", I, 0),
            col("Available", I, 0),
            col("Node Selector", S, 0),
            AGE,
            col("Containers", S, 1),
            col("Images", S, 1),
            col("Selector", S, 1),
        ],
        ("apps", "ControllerRevision") => vec![NAME, col("Controller", S, 0), col("Revision", I, 0), AGE],
        ("", "Service") => {
            vec![
                NAME,
                col("Type", S, 0),
                col("Cluster-IP", S, 0),
                col("External-IP", S, 0),
                col("Port(s)", S, 0),
                AGE,
                col("Selector", S, 1),
            ]
        }
        ("", "Node") => vec![
            NAME,
            col("Status", S, 0),
            col("Roles", S, 0),
            AGE,
            col("Version", S, 0),
            col("Internal-IP", S, 1),
            col("External-IP", S, 1),
            col("OS-Image", S, 1),
            col("Kernel-Version", S, 1),
            col("Container-Runtime", S, 1),
        ],
        ("", "Namespace") => vec![NAME, col("Status", S, 0), AGE],
        ("", "ConfigMap") => vec![NAME, col("Data", I, 0), AGE],
        ("", "Secret") => vec![NAME, col("Type", S, 0), col("Data", I, 0), AGE],
        ("", "ServiceAccount") => vec![NAME, col("Secrets", I, 0), AGE],
        ("", "Endpoints") => vec![NAME, col("Endpoints", S, 0), AGE],
        ("", "Event") | ("events.k8s.io", "Event") => vec![
            col("Last Seen", S, 0),
            col("Type", S, 0),
            col("Reason", S, 0),
            col("Object", S, 0),
            col("Subobject", S, 1),
            col("Source", S, 1),
            col("Message", S, 0),
            col("First Seen", S, 1),
            col("Count", I, 1),
            Column { name: "Name", type_: "string", format: "name", priority: 1 },
        ],
        ("", "PersistentVolume") => vec![
            NAME,
            col("Capacity", S, 0),
            col("Access Modes", S, 0),
            col("Reclaim Policy", S, 0),
            col("Status", S, 0),
            col("Claim", S, 0),
            col("StorageClass", S, 0),
            col("VolumeAttributesClass", S, 0),
            col("Reason", S, 0),
            AGE,
            col("VolumeMode", S, 1),
        ],
        ("", "PersistentVolumeClaim") => vec![
            NAME,
            col("Status", S, 0),
            col("Volume", S, 0),
            col("Capacity", S, 0),
            col("Access Modes", S, 0),
            col("StorageClass", S, 0),
            col("VolumeAttributesClass", S, 0),
            AGE,
            col("VolumeMode", S, 1),
        ],
        ("batch", "Job") => vec![
            NAME,
            col("Status", S, 0),
            col("Completions", S, 0),
            col("Duration", S, 0),
            AGE,
            col("Containers", S, 1),
            col("Images", S, 1),
            col("Selector", S, 1),
        ],
        ("batch", "CronJob") => vec![
            NAME,
            col("Schedule", S, 0),
            col("Timezone", S, 0),
            col("Suspend", S, 0),
            col("Active", I, 0),
            col("Last Schedule", S, 0),
            AGE,
            col("Containers", S, 1),
            col("Images", S, 1),
            col("Selector", S, 1),
        ],
        ("networking.k8s.io", "Ingress") => {
            vec![NAME, col("Class", S, 0), col("Hosts", S, 0), col("Address", S, 0), col("Ports", S, 0), AGE]
        }
        ("networking.k8s.io", "IngressClass") => vec![NAME, col("Controller", S, 0), col("Parameters", S, 0), AGE],
        ("discovery.k8s.io", "EndpointSlice") => vec![NAME, col("AddressType", S, 0), col("Ports", S, 0), col("Endpoints", S, 0), AGE],
        ("coordination.k8s.io", "Lease") => vec![NAME, col("Holder", S, 0), AGE],
        ("autoscaling", "HorizontalPodAutoscaler") => {
            vec![NAME, col("Reference", S, 0), col("Targets", S, 0), col("MinPods", S, 0), col("MaxPods", I, 0), col("Replicas", I, 0), AGE]
        }
        ("policy", "PodDisruptionBudget") => {
            vec![NAME, col("Min Available", S, 0), col("Max Unavailable", S, 0), col("Allowed Disruptions", I, 0), AGE]
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            vec![NAME, col("Value", I, 0), col("Global-Default", S, 0), AGE, col("PreemptionPolicy", S, 1)]
        }
        ("storage.k8s.io", "StorageClass") => vec![
            NAME,
            col("Provisioner", S, 0),
            col("ReclaimPolicy", S, 0),
            col("VolumeBindingMode", S, 0),
            col("AllowVolumeExpansion", S, 0),
            AGE,
        ],
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            vec![NAME, col("Role", S, 0), AGE, col("Users", S, 1), col("Groups", S, 1), col("ServiceAccounts", S, 1)]
        }
        _ => vec![NAME, Column { name: "Created At", type_: "string", format: "date", priority: 0 }],
    }
}

fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, p| v.get(p).unwrap_or(&Value::Null))
}

fn text<'a>(v: &'a Value, path: &str) -> &'a str {
    at(v, path).as_str().unwrap_or("")
}

fn or_none(s: &str) -> String {
    if s.is_empty() { "<none>".to_owned() } else { s.to_owned() }
}

fn int(v: &Value, path: &str) -> i64 {
    at(v, path).as_i64().unwrap_or(0)
}

fn items<'a>(v: &'a Value, path: &str) -> &'a [Value] {
    at(v, path).as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn timestamp(v: &Value, path: &str) -> Option<Timestamp> {
    text(v, path).parse().ok()
}

/// How long ago, the way kubectl prints ages (`42s`, `5m10s`, `3h`, `12d`).
pub(crate) fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 { format!("{minutes}m") } else { format!("{minutes}m{s}s") };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 { format!("{hours}h") } else { format!("{hours}h{m}m") };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 { format!("{}d", hours / 24) } else { format!("{}d{h}h", hours / 24) };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 { format!("{}y", hours / 24 / 365) } else { format!("{}y{dy}d", hours / 24 / 365) };
    }
    format!("{}y", hours / 24 / 365)
}

fn since(t: Option<Timestamp>, now: Timestamp) -> String {
    match t {
        Some(t) => human_duration(now.as_second() - t.as_second()),
        None => "<unknown>".into(),
    }
}

fn age(v: &Value, now: Timestamp) -> Value {
    since(timestamp(v, "metadata.creationTimestamp"), now).into()
}

fn containers_images(v: &Value, spec: &str) -> (Value, Value) {
    let containers = items(v, &format!("{spec}.containers"));
    let names: Vec<&str> = containers.iter().map(|c| text(c, "name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| text(c, "image")).collect();
    (names.join(",").into(), images.join(",").into())
}

fn selector_string(sel: &Value) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(map) = sel.get("matchLabels").and_then(Value::as_object) {
        parts.extend(map.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))));
    }
    for expr in sel.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
        let key = text(expr, "key");
        let values: Vec<&str> = items(expr, "values").iter().filter_map(Value::as_str).collect();
        parts.push(match text(expr, "operator") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_owned(),
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other}"),
        });
    }
    or_none(&parts.join(","))
}

fn map_string(v: &Value) -> String {
    let parts: Vec<String> = v.as_object().into_iter().flatten().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect();
    or_none(&parts.join(","))
}

fn pod_status(v: &Value, now: Timestamp) -> (String, String, String) {
    let total = items(v, "spec.containers").len();
    let mut restarts = 0;
    let mut ready = 0;
    let mut last_restart: Option<Timestamp> = None;
    let mut reason = text(v, "status.phase").to_owned();
    if !text(v, "status.reason").is_empty() {
        reason = text(v, "status.reason").to_owned();
    }
    let init_total = items(v, "spec.initContainers").len();
    let mut initializing = false;
    for (i, c) in items(v, "status.initContainerStatuses").iter().enumerate() {
        restarts += int(c, "restartCount");
        let terminated = at(c, "state.terminated");
        let waiting = at(c, "state.waiting");
        if terminated.is_object() && int(terminated, "exitCode") == 0 {
            continue;
        }
        initializing = true;
        reason = if terminated.is_object() {
            if !text(terminated, "reason").is_empty() {
                format!("Init:{}", text(terminated, "reason"))
            } else if int(terminated, "signal") != 0 {
                format!("Init:Signal:{}", int(terminated, "signal"))
            } else {
                format!("Init:ExitCode:{}", int(terminated, "exitCode"))
            }
        } else if waiting.is_object() && !text(waiting, "reason").is_empty() && text(waiting, "reason") != "PodInitializing" {
            format!("Init:{}", text(waiting, "reason"))
        } else {
            format!("Init:{i}/{init_total}")
        };
        break;
    }
    if !initializing {
        let mut has_running = false;
        for c in items(v, "status.containerStatuses").iter().rev() {
            restarts += int(c, "restartCount");
            if let Some(t) = timestamp(c, "lastState.terminated.finishedAt")
                && last_restart.is_none_or(|l| t > l)
            {
                last_restart = Some(t);
            }
            let waiting = at(c, "state.waiting");
            let terminated = at(c, "state.terminated");
            if !text(waiting, "reason").is_empty() {
                reason = text(waiting, "reason").to_owned();
            } else if terminated.is_object() {
                reason = if !text(terminated, "reason").is_empty() {
                    text(terminated, "reason").to_owned()
                } else if int(terminated, "signal") != 0 {
                    format!("Signal:{}", int(terminated, "signal"))
                } else {
                    format!("ExitCode:{}", int(terminated, "exitCode"))
                };
            } else if at(c, "ready").as_bool() == Some(true) && at(c, "state.running").is_object() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = items(v, "status.conditions").iter().any(|c| text(c, "type") == "Ready" && text(c, "status") == "True");
            reason = if pod_ready { "Running".into() } else { "NotReady".into() };
        }
    }
    if !text(v, "metadata.deletionTimestamp").is_empty() {
        reason = if text(v, "status.reason") == "NodeLost" { "Unknown".into() } else { "Terminating".into() };
    }
    if reason.is_empty() {
        reason = "Pending".into();
    }
    let restarts = match last_restart {
        Some(t) if restarts > 0 => format!("{restarts} ({} ago)", since(Some(t), now)),
        _ => restarts.to_string(),
    };
    (format!("{ready}/{total}"), reason, restarts)
}

fn service_ports(v: &Value) -> String {
    let ports: Vec<String> = items(v, "spec.ports")
        .iter()
        .map(|p| {
            let proto = match text(p, "protocol") {
                "" => "TCP",
                other => other,
            };
            match int(p, "nodePort") {
                0 => format!("{}/{proto}", int(p, "port")),
                node => format!("{}:{node}/{proto}", int(p, "port")),
            }
        })
        .collect();
    or_none(&ports.join(","))
}

fn service_external_ip(v: &Value) -> String {
    let external: Vec<&str> = items(v, "spec.externalIPs").iter().filter_map(Value::as_str).collect();
    match text(v, "spec.type") {
        "LoadBalancer" => {
            let mut ips: Vec<&str> = items(v, "status.loadBalancer.ingress")
                .iter()
                .map(|i| if text(i, "ip").is_empty() { text(i, "hostname") } else { text(i, "ip") })
                .collect();
            ips.extend(external);
            if ips.is_empty() { "<pending>".into() } else { ips.join(",") }
        }
        "ExternalName" => text(v, "spec.externalName").to_owned(),
        _ => or_none(&external.join(",")),
    }
}

fn node_status(v: &Value) -> String {
    let ready = items(v, "status.conditions").iter().find(|c| text(c, "type") == "Ready");
    let mut status = match ready.map(|c| text(c, "status")) {
        Some("True") => "Ready".to_owned(),
        Some(_) => "NotReady".to_owned(),
        None => "Unknown".to_owned(),
    };
    if at(v, "spec.unschedulable").as_bool() == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    status
}

fn node_roles(v: &Value) -> String {
    let mut roles: Vec<&str> = at(v, "metadata.labels")
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, val)| {
            k.strip_prefix("node-role.kubernetes.io/")
                .filter(|r| !r.is_empty())
                .or_else(|| (k == "kubernetes.io/role").then(|| val.as_str().unwrap_or("")))
        })
        .collect();
    roles.sort_unstable();
    or_none(&roles.join(","))
}

fn node_address(v: &Value, kind: &str) -> String {
    or_none(items(v, "status.addresses").iter().find(|a| text(a, "type") == kind).map(|a| text(a, "address")).unwrap_or(""))
}

fn job_status(v: &Value) -> &'static str {
    let conditions = items(v, "status.conditions");
    let is = |t: &str| conditions.iter().any(|c| text(c, "type") == t && text(c, "status") == "True");
    if is("Complete") {
        "Complete"
    } else if is("Failed") {
        "Failed"
    } else if !text(v, "metadata.deletionTimestamp").is_empty() {
        "Terminating"
    } else if is("FailureTarget") {
        "FailureTarget"
    } else if is("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else if at(v, "spec.suspend").as_bool() == Some(true) || is("Suspended") {
        "Suspended"
    } else {
        "Running"
    }
}

fn int_or_string(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => "N/A".into(),
    }
}

fn event_object(v: &Value, field: &str) -> String {
    let o = at(v, field);
    format!("{}/{}", text(o, "kind").to_ascii_lowercase(), text(o, "name"))
}

fn access_modes(v: &Value, path: &str) -> String {
    let modes: Vec<&str> = items(v, path)
        .iter()
        .filter_map(Value::as_str)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect();
    modes.join(",")
}

/// An HPA's TARGETS column as kubectl prints it: `cpu: 250%/50%, memory: 40Mi/100Mi + 1 more...`,
/// each metric's current value (from `status.currentMetrics` at the same index) over its target.
fn hpa_targets(v: &Value) -> String {
    let specs = at(v, "spec.metrics").as_array().map(Vec::as_slice).unwrap_or_default();
    if specs.is_empty() {
        return "<none>".into();
    }
    let statuses = at(v, "status.currentMetrics").as_array().map(Vec::as_slice).unwrap_or_default();
    let quantity = |v: &Value| v.as_str().map(str::to_owned).or_else(|| v.as_i64().map(|n| n.to_string()));
    let shown: Vec<String> = specs
        .iter()
        .take(2)
        .enumerate()
        .map(|(i, spec)| {
            let kind = text(spec, "type");
            let key = match kind {
                "Resource" => "resource",
                "ContainerResource" => "containerResource",
                "Pods" => "pods",
                "Object" => "object",
                _ => "external",
            };
            let target = &spec[key]["target"];
            let current = &statuses.get(i).map_or(&Value::Null, |s| &s[key])["current"];
            let (cur, want) = if let Some(pct) = target["averageUtilization"].as_i64() {
                (current["averageUtilization"].as_i64().map(|c| format!("{c}%")), format!("{pct}%"))
            } else if let Some(avg) = quantity(&target["averageValue"]) {
                (quantity(&current["averageValue"]), avg)
            } else {
                (quantity(&current["value"]), quantity(&target["value"]).unwrap_or_else(|| "<unknown>".into()))
            };
            let pair = format!("{}/{want}", cur.unwrap_or_else(|| "<unknown>".into()));
            match kind {
                "Resource" | "ContainerResource" => format!("{}: {pair}", text(&spec[key], "name")),
                _ => pair,
            }
        })
        .collect();
    let mut out = shown.join(", ");
    if specs.len() > 2 {
        out.push_str(&format!(" + {} more...", specs.len() - 2));
    }
    out
}

/// The cells of an object's row under [`table_columns`], computed at `now`.
pub fn table_row(resource: &ApiResource, v: &Value, now: Timestamp) -> TableRow {
    let name: Value = text(v, "metadata.name").into();
    match (resource.group.as_ref(), resource.kind.as_ref()) {
        ("", "Pod") => {
            let (ready, status, restarts) = pod_status(v, now);
            let gates = items(v, "spec.readinessGates");
            let gates = if gates.is_empty() {
                "<none>".to_owned()
            } else {
                let passing = gates
                    .iter()
                    .filter(|g| {
                        items(v, "status.conditions")
                            .iter()
                            .any(|c| text(c, "type") == text(g, "conditionType") && text(c, "status") == "True")
                    })
                    .count();
                format!("{passing}/{}", gates.len())
            };
            vec![
                name,
                ready.into(),
                status.into(),
                restarts.into(),
                age(v, now),
                or_none(text(v, "status.podIP")).into(),
                or_none(text(v, "spec.nodeName")).into(),
                or_none(text(v, "status.nominatedNodeName")).into(),
                gates.into(),
            ]
        }
        ("apps", "Deployment") => {
            let (c, i) = containers_images(v, "spec.template.spec");
            vec![
                name,
                format!("{}/{}", int(v, "status.readyReplicas"), int(v, "spec.replicas")).into(),
                int(v, "status.updatedReplicas").into(),
                int(v, "status.availableReplicas").into(),
                age(v, now),
                c,
                i,
                selector_string(at(v, "spec.selector")).into(),
            ]
        }
        ("apps", "ReplicaSet") | ("", "ReplicationController") => {
            let (c, i) = containers_images(v, "spec.template.spec");
            let selector =
                if resource.group.is_empty() { map_string(at(v, "spec.selector")) } else { selector_string(at(v, "spec.selector")) };
            vec![
                name,
                int(v, "spec.replicas").into(),
                int(v, "status.replicas").into(),
                int(v, "status.readyReplicas").into(),
                age(v, now),
                c,
                i,
                selector.into(),
            ]
        }
        ("apps", "StatefulSet") => {
            let (c, i) = containers_images(v, "spec.template.spec");
            vec![name, format!("{}/{}", int(v, "status.readyReplicas"), int(v, "spec.replicas")).into(), age(v, now), c, i]
        }
        ("apps", "DaemonSet") => {
            let (c, i) = containers_images(v, "spec.template.spec");
            vec![
                name,
                int(v, "status.desiredNumberScheduled").into(),
                int(v, "status.currentNumberScheduled").into(),
                int(v, "status.numberReady").into(),
                int(v, "status.updatedNumberScheduled").into(),
                int(v, "status.numberAvailable").into(),
                map_string(at(v, "spec.template.spec.nodeSelector")).into(),
                age(v, now),
                c,
                i,
                selector_string(at(v, "spec.selector")).into(),
            ]
        }
        ("apps", "ControllerRevision") => {
            let owner = items(v, "metadata.ownerReferences").iter().find(|o| at(o, "controller").as_bool() == Some(true));
            let controller =
                owner.map(|o| format!("{}/{}", text(o, "kind").to_ascii_lowercase(), text(o, "name"))).unwrap_or_else(|| "<none>".into());
            vec![name, controller.into(), int(v, "revision").into(), age(v, now)]
        }
        ("", "Service") => vec![
            name,
            match text(v, "spec.type") {
                "" => "ClusterIP",
                t => t,
            }
            .into(),
            or_none(text(v, "spec.clusterIP")).into(),
            service_external_ip(v).into(),
            service_ports(v).into(),
            age(v, now),
            map_string(at(v, "spec.selector")).into(),
        ],
        ("", "Node") => vec![
            name,
            node_status(v).into(),
            node_roles(v).into(),
            age(v, now),
            text(v, "status.nodeInfo.kubeletVersion").into(),
            node_address(v, "InternalIP").into(),
            node_address(v, "ExternalIP").into(),
            or_none(text(v, "status.nodeInfo.osImage")).into(),
            or_none(text(v, "status.nodeInfo.kernelVersion")).into(),
            or_none(text(v, "status.nodeInfo.containerRuntimeVersion")).into(),
        ],
        ("", "Namespace") => vec![name, text(v, "status.phase").into(), age(v, now)],
        ("", "ConfigMap") => {
            let n = at(v, "data").as_object().map_or(0, |m| m.len()) + at(v, "binaryData").as_object().map_or(0, |m| m.len());
            vec![name, n.into(), age(v, now)]
        }
        ("", "Secret") => {
            let n = at(v, "data").as_object().map_or(0, |m| m.len()) + at(v, "stringData").as_object().map_or(0, |m| m.len());
            vec![name, text(v, "type").into(), n.into(), age(v, now)]
        }
        ("", "ServiceAccount") => vec![name, items(v, "secrets").len().into(), age(v, now)],
        ("", "Endpoints") => {
            let mut eps = Vec::new();
            for subset in items(v, "subsets") {
                for addr in items(subset, "addresses") {
                    let ports = items(subset, "ports");
                    if ports.is_empty() {
                        eps.push(text(addr, "ip").to_owned());
                    }
                    for p in ports {
                        eps.push(format!("{}:{}", text(addr, "ip"), int(p, "port")));
                    }
                }
            }
            let shown = if eps.len() > 3 { format!("{} + {} more...", eps[..3].join(","), eps.len() - 3) } else { eps.join(",") };
            vec![name, or_none(&shown).into(), age(v, now)]
        }
        ("", "Event") => {
            let last =
                timestamp(v, "lastTimestamp").or_else(|| timestamp(v, "eventTime")).or_else(|| timestamp(v, "metadata.creationTimestamp"));
            let first = timestamp(v, "firstTimestamp").or_else(|| timestamp(v, "eventTime"));
            let source = text(v, "source.component");
            vec![
                since(last, now).into(),
                text(v, "type").into(),
                text(v, "reason").into(),
                event_object(v, "involvedObject").into(),
                text(v, "involvedObject.fieldPath").into(),
                or_none(source).into(),
                text(v, "message").trim().into(),
                since(first, now).into(),
                int(v, "count").max(1).into(),
                name,
            ]
        }
        ("events.k8s.io", "Event") => {
            let last = timestamp(v, "deprecatedLastTimestamp")
                .or_else(|| timestamp(v, "eventTime"))
                .or_else(|| timestamp(v, "metadata.creationTimestamp"));
            vec![
                since(last, now).into(),
                text(v, "type").into(),
                text(v, "reason").into(),
                event_object(v, "regarding").into(),
                text(v, "regarding.fieldPath").into(),
                or_none(text(v, "reportingController")).into(),
                text(v, "note").trim().into(),
                since(timestamp(v, "deprecatedFirstTimestamp").or_else(|| timestamp(v, "eventTime")), now).into(),
                int(v, "deprecatedCount").max(1).into(),
                name,
            ]
        }
        ("", "PersistentVolume") => {
            let claim = at(v, "spec.claimRef");
            let claim = if claim.is_object() { format!("{}/{}", text(claim, "namespace"), text(claim, "name")) } else { String::new() };
            vec![
                name,
                text(v, "spec.capacity.storage").into(),
                access_modes(v, "spec.accessModes").into(),
                match text(v, "spec.persistentVolumeReclaimPolicy") {
                    "" => "Retain",
                    p => p,
                }
                .into(),
                text(v, "status.phase").into(),
                claim.into(),
                text(v, "spec.storageClassName").into(),
                or_unset(text(v, "spec.volumeAttributesClassName")).into(),
                text(v, "status.reason").into(),
                age(v, now),
                match text(v, "spec.volumeMode") {
                    "" => "Filesystem",
                    m => m,
                }
                .into(),
            ]
        }
        ("", "PersistentVolumeClaim") => vec![
            name,
            text(v, "status.phase").into(),
            text(v, "spec.volumeName").into(),
            text(v, "status.capacity.storage").into(),
            access_modes(v, "status.accessModes").into(),
            text(v, "spec.storageClassName").into(),
            or_unset(text(v, "spec.volumeAttributesClassName")).into(),
            age(v, now),
            match text(v, "spec.volumeMode") {
                "" => "Filesystem",
                m => m,
            }
            .into(),
        ],
        ("batch", "Job") => {
            let (c, i) = containers_images(v, "spec.template.spec");
            let completions = match at(v, "spec.completions").as_i64() {
                Some(n) => format!("{}/{n}", int(v, "status.succeeded")),
                None => format!("{}/1 of {}", int(v, "status.succeeded"), at(v, "spec.parallelism").as_i64().unwrap_or(1)),
            };
            let duration = match (timestamp(v, "status.startTime"), timestamp(v, "status.completionTime")) {
                (Some(s), Some(e)) => human_duration(e.as_second() - s.as_second()),
                (Some(s), None) => human_duration(now.as_second() - s.as_second()),
                _ => String::new(),
            };
            vec![
                name,
                job_status(v).into(),
                completions.into(),
                duration.into(),
                age(v, now),
                c,
                i,
                selector_string(at(v, "spec.selector")).into(),
            ]
        }
        ("batch", "CronJob") => {
            let (c, i) = containers_images(v, "spec.jobTemplate.spec.template.spec");
            let last = timestamp(v, "status.lastScheduleTime").map(|t| since(Some(t), now)).unwrap_or_else(|| "<none>".into());
            vec![
                name,
                text(v, "spec.schedule").into(),
                or_none(text(v, "spec.timeZone")).into(),
                if at(v, "spec.suspend").as_bool() == Some(true) { "True" } else { "False" }.into(),
                items(v, "status.active").len().into(),
                last.into(),
                age(v, now),
                c,
                i,
                selector_string(at(v, "spec.jobTemplate.spec.selector")).into(),
            ]
        }
        ("networking.k8s.io", "Ingress") => {
            let hosts: Vec<&str> = items(v, "spec.rules").iter().map(|r| text(r, "host")).filter(|h| !h.is_empty()).collect();
            let hosts = if hosts.is_empty() { "*".to_owned() } else { hosts.join(",") };
            let address: Vec<&str> = items(v, "status.loadBalancer.ingress")
                .iter()
                .map(|i| if text(i, "ip").is_empty() { text(i, "hostname") } else { text(i, "ip") })
                .collect();
            let ports = if items(v, "spec.tls").is_empty() { "80" } else { "80, 443" };
            vec![name, or_none(text(v, "spec.ingressClassName")).into(), hosts.into(), address.join(",").into(), ports.into(), age(v, now)]
        }
        ("networking.k8s.io", "IngressClass") => {
            let p = at(v, "spec.parameters");
            let params = if p.is_object() { format!("{}/{}", text(p, "kind"), text(p, "name")) } else { "<none>".into() };
            vec![name, text(v, "spec.controller").into(), params.into(), age(v, now)]
        }
        ("discovery.k8s.io", "EndpointSlice") => {
            let ports: Vec<String> = items(v, "ports").iter().map(|p| int(p, "port").to_string()).collect();
            let addrs: Vec<&str> = items(v, "endpoints").iter().flat_map(|e| items(e, "addresses")).filter_map(Value::as_str).collect();
            let shown = if addrs.len() > 3 { format!("{} + {} more...", addrs[..3].join(","), addrs.len() - 3) } else { addrs.join(",") };
            vec![name, text(v, "addressType").into(), or_unset(&ports.join(",")).into(), or_unset(&shown).into(), age(v, now)]
        }
        ("coordination.k8s.io", "Lease") => vec![name, text(v, "spec.holderIdentity").into(), age(v, now)],
        ("autoscaling", "HorizontalPodAutoscaler") => {
            let r = at(v, "spec.scaleTargetRef");
            vec![
                name,
                format!("{}/{}", text(r, "kind"), text(r, "name")).into(),
                hpa_targets(v).into(),
                at(v, "spec.minReplicas").as_i64().unwrap_or(1).to_string().into(),
                int(v, "spec.maxReplicas").into(),
                int(v, "status.currentReplicas").into(),
                age(v, now),
            ]
        }
        ("policy", "PodDisruptionBudget") => vec![
            name,
            int_or_string(at(v, "spec.minAvailable")).into(),
            int_or_string(at(v, "spec.maxUnavailable")).into(),
            int(v, "status.disruptionsAllowed").into(),
            age(v, now),
        ],
        ("scheduling.k8s.io", "PriorityClass") => vec![
            name,
            int(v, "value").into(),
            (at(v, "globalDefault").as_bool() == Some(true)).to_string().into(),
            age(v, now),
            or_none(text(v, "preemptionPolicy")).into(),
        ],
        ("storage.k8s.io", "StorageClass") => vec![
            // kubectl marks the default class as kube-apiserver's printer does.
            if ["storageclass.kubernetes.io/is-default-class", "storageclass.beta.kubernetes.io/is-default-class"]
                .iter()
                .any(|a| v["metadata"]["annotations"][a].as_str() == Some("true"))
            {
                format!("{} (default)", text(v, "metadata.name")).into()
            } else {
                name
            },
            text(v, "provisioner").into(),
            match text(v, "reclaimPolicy") {
                "" => "Delete",
                p => p,
            }
            .into(),
            match text(v, "volumeBindingMode") {
                "" => "Immediate",
                m => m,
            }
            .into(),
            (at(v, "allowVolumeExpansion").as_bool() == Some(true)).to_string().into(),
            age(v, now),
        ],
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            let subjects = items(v, "subjects");
            let of = |kind: &str| -> String {
                let names: Vec<String> = subjects
                    .iter()
                    .filter(|s| text(s, "kind") == kind)
                    .map(|s| {
                        if kind == "ServiceAccount" {
                            format!("{}/{}", text(s, "namespace"), text(s, "name"))
                        } else {
                            text(s, "name").to_owned()
                        }
                    })
                    .collect();
                names.join(", ")
            };
            vec![
                name,
                format!("{}/{}", text(v, "roleRef.kind"), text(v, "roleRef.name")).into(),
                age(v, now),
                of("User").into(),
                of("Group").into(),
                of("ServiceAccount").into(),
            ]
        }
        _ => vec![name, text(v, "metadata.creationTimestamp").into()],
    }
}

fn or_unset(s: &str) -> String {
    if s.is_empty() { "<unset>".to_owned() } else { s.to_owned() }
}

/// The column definitions as JSON.
pub(crate) fn column_definitions(resource: &ApiResource) -> Vec<Value> {
    table_columns(resource)
        .iter()
        .map(|c| {
            let description = if c.format == "name" {
                "Name must be unique within a namespace. More info: http://kubernetes.io/docs/user-guide/identifiers#names"
            } else {
                c.name
            };
            json!({"name": c.name, "type": c.type_, "format": c.format, "description": description, "priority": c.priority})
        })
        .collect()
}

/// What each row carries besides its cells (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Include {
    /// Nothing.
    None,
    /// `PartialObjectMetadata` (the default).
    Metadata,
    /// The whole object.
    Object,
}

impl Include {
    pub(crate) fn parse(s: Option<&str>) -> bosun_core::Result<Self> {
        match s {
            None | Some("" | "Metadata") => Ok(Self::Metadata),
            Some("Object") => Ok(Self::Object),
            Some("None") => Ok(Self::None),
            Some(other) => {
                Err(bosun_core::Error::bad_request(format!("unsupported includeObject {other:?}: use None, Metadata or Object")))
            }
        }
    }
}

/// A custom resource's `additionalPrinterColumns` entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CustomColumn {
    name: String,
    type_: String,
    format: String,
    description: String,
    priority: i64,
    /// The JSONPath as dotted segments (`.spec.replicas` → `spec`, `replicas`); `[n]` indexes.
    path: Vec<String>,
}

/// How a resource's rows are printed.
#[derive(Debug, Clone)]
pub(crate) enum Printer {
    /// The built-in columns of [`table_columns`].
    Builtin(ApiResource),
    /// A custom resource's printer columns (always led by Name).
    Custom(Vec<CustomColumn>),
}

impl Printer {
    /// The printer of a custom resource from its definition: the served version's
    /// `additionalPrinterColumns`, or Name and Age when it declares none.
    pub(crate) fn from_definition(crd: &Value, version: &str) -> Self {
        let declared = items(crd, "spec.versions")
            .iter()
            .find(|v| text(v, "name") == version)
            .map(|v| items(v, "additionalPrinterColumns"))
            .unwrap_or(&[]);
        let mut columns: Vec<CustomColumn> = declared
            .iter()
            .map(|c| CustomColumn {
                name: text(c, "name").to_owned(),
                type_: text(c, "type").to_owned(),
                format: text(c, "format").to_owned(),
                description: text(c, "description").to_owned(),
                priority: int(c, "priority"),
                path: text(c, "jsonPath").trim_start_matches('.').split('.').filter(|p| !p.is_empty()).map(str::to_owned).collect(),
            })
            .collect();
        if columns.is_empty() {
            columns.push(CustomColumn {
                name: "Age".into(),
                type_: "date".into(),
                format: String::new(),
                description: "CreationTimestamp".into(),
                priority: 0,
                path: vec!["metadata".into(), "creationTimestamp".into()],
            });
        }
        Self::Custom(columns)
    }

    fn definitions(&self) -> Vec<Value> {
        match self {
            Self::Builtin(r) => column_definitions(r),
            Self::Custom(columns) => {
                let mut defs = vec![
                    json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
                ];
                defs.extend(columns.iter().map(
                    |c| json!({"name": c.name, "type": c.type_, "format": c.format, "description": c.description, "priority": c.priority}),
                ));
                defs
            }
        }
    }

    fn cells(&self, object: &Value, now: Timestamp) -> Vec<Value> {
        match self {
            Self::Builtin(r) => table_row(r, object, now),
            Self::Custom(columns) => {
                let mut cells = vec![Value::from(text(object, "metadata.name"))];
                cells.extend(columns.iter().map(|c| custom_cell(c, object, now)));
                cells
            }
        }
    }
}

fn custom_cell(column: &CustomColumn, object: &Value, now: Timestamp) -> Value {
    let mut at = object;
    for seg in &column.path {
        let (key, index) = match seg.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg.as_str(), None),
        };
        at = at.get(key).unwrap_or(&Value::Null);
        if let Some(i) = index {
            at = at.get(i).unwrap_or(&Value::Null);
        }
    }
    match (column.type_.as_str(), at) {
        (_, Value::Null) => Value::Null,
        ("date", Value::String(s)) => s.parse::<Timestamp>().map_or_else(|_| Value::from(s.clone()), |t| since(Some(t), now).into()),
        ("string", Value::Number(_) | Value::Bool(_)) => at.to_string().into(),
        ("string", Value::Object(_) | Value::Array(_)) => at.to_string().into(),
        _ => at.clone(),
    }
}

/// One row with its object.
pub(crate) fn row(printer: &Printer, object: &Value, now: Timestamp, include: Include) -> Value {
    let cells = printer.cells(object, now);
    let object = match include {
        Include::None => Value::Null,
        Include::Object => object.clone(),
        Include::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }),
    };
    json!({"cells": cells, "object": object})
}

/// The current time.
pub(crate) fn now() -> Timestamp {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Timestamp::from_second(i64::try_from(secs).unwrap_or(0)).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A whole table.
pub(crate) fn table(printer: &Printer, objects: &[Value], list_meta: Value, include: Include) -> Value {
    let now = now();
    let rows: Vec<Value> = objects.iter().map(|o| row(printer, o, now, include)).collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": printer.definitions(),
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_core::resource::builtin;

    fn res(group: &str, version: &str, kind: &str) -> ApiResource {
        builtin(group, version, kind)
            .cloned()
            .unwrap_or_else(|| ApiResource::new(group.to_owned(), version.to_owned(), kind.to_owned(), "x", true))
    }

    fn now() -> Timestamp {
        "2024-01-01T01:00:00Z".parse().unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(3600), "60m");
        assert_eq!(human_duration(4 * 3600 + 60), "4h1m");
        assert_eq!(human_duration(3 * 86400 + 3600), "3d1h");
        assert_eq!(human_duration(30 * 86400), "30d");
    }

    #[test]
    fn a_running_pod_reads_ready_running() {
        let pod = json!({
            "metadata": {"name": "web-1", "creationTimestamp": "2024-01-01T00:59:00Z"},
            "spec": {"nodeName": "n1", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                 "lastState": {"terminated": {"finishedAt": "2024-01-01T00:58:00Z"}}},
            ]},
        });
        let row = table_row(&res("", "v1", "Pod"), &pod, now());
        assert_eq!(
            row[..6],
            [json!("web-1"), json!("1/2"), json!("CrashLoopBackOff"), json!("2 (2m ago)"), json!("60s"), json!("10.0.0.5")]
        );
        assert_eq!(row.len(), table_columns(&res("", "v1", "Pod")).len());
    }

    #[test]
    fn a_deleting_pod_is_terminating_and_a_new_one_pending() {
        let pod = json!({"metadata": {"name": "p", "deletionTimestamp": "2024-01-01T00:00:00Z"}, "spec": {"containers": [{}]}, "status": {"phase": "Running"}});
        assert_eq!(table_row(&res("", "v1", "Pod"), &pod, now())[2], "Terminating");
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{}]}});
        assert_eq!(table_row(&res("", "v1", "Pod"), &pod, now())[1..3], [json!("0/1"), json!("Pending")]);
    }

    #[test]
    fn deployments_show_ready_over_desired() {
        let d = json!({"metadata": {"name": "web"}, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let row = table_row(&res("apps", "v1", "Deployment"), &d, now());
        assert_eq!(
            row,
            vec![json!("web"), json!("2/3"), json!(3), json!(2), json!("<unknown>"), json!("c"), json!("nginx"), json!("app=web")]
        );
    }

    #[test]
    fn services_print_type_ip_and_ports() {
        let s = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.10",
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}], "selector": {"app": "web"}}});
        let row = table_row(&res("", "v1", "Service"), &s, now());
        assert_eq!(row[1..5], [json!("NodePort"), json!("10.96.0.10"), json!("<none>"), json!("80:30080/TCP,53/UDP")]);
    }

    #[test]
    fn hpa_targets_show_current_over_target() {
        let hpa = json!({"metadata": {"name": "web"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 5,
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
                {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
                {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "10"}}}]},
            "status": {"currentReplicas": 2, "currentMetrics": [
                {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 250, "averageValue": "250m"}}}]}});
        let row = table_row(&res("autoscaling", "v2", "HorizontalPodAutoscaler"), &hpa, now());
        assert_eq!(row[1..3], [json!("Deployment/web"), json!("cpu: 250%/50%, memory: <unknown>/100Mi + 1 more...")]);
        let none = json!({"metadata": {"name": "web"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}}});
        assert_eq!(table_row(&res("autoscaling", "v2", "HorizontalPodAutoscaler"), &none, now())[2], json!("<none>"));
    }

    #[test]
    fn the_default_storage_class_is_marked() {
        let class = |default: &str| {
            json!({"metadata": {"name": "local-path", "annotations": {"storageclass.kubernetes.io/is-default-class": default}},
                "provisioner": "bosun.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"})
        };
        let r = res("storage.k8s.io", "v1", "StorageClass");
        assert_eq!(
            table_row(&r, &class("true"), now())[..4],
            [json!("local-path (default)"), json!("bosun.io/local-path"), json!("Delete"), json!("WaitForFirstConsumer")]
        );
        assert_eq!(table_row(&r, &class("false"), now())[0], json!("local-path"));
    }

    #[test]
    fn every_builtin_kind_fills_every_column() {
        let empty = json!({"metadata": {"name": "x"}});
        for r in bosun_core::resource::builtin_resources() {
            assert_eq!(table_row(r, &empty, now()).len(), table_columns(r).len(), "{}", r.kind);
        }
    }
}

#[cfg(test)]
mod custom_tests {
    use super::*;

    #[test]
    fn custom_resources_print_their_printer_columns() {
        let crd = json!({"spec": {"versions": [{"name": "v1", "additionalPrinterColumns": [
            {"name": "Spec", "type": "string", "jsonPath": ".spec.cronSpec"},
            {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
            {"name": "First", "type": "string", "jsonPath": ".spec.items[0]"},
        ]}]}});
        let printer = Printer::from_definition(&crd, "v1");
        let obj = json!({"metadata": {"name": "ct"}, "spec": {"cronSpec": "* * * * */5", "replicas": 2, "items": ["a", "b"]}});
        let t = table(&printer, &[obj], json!({}), Include::None);
        let names: Vec<&str> = t["columnDefinitions"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect();
        assert_eq!(names, ["Name", "Spec", "Replicas", "First"]);
        assert_eq!(t["rows"][0]["cells"], json!(["ct", "* * * * */5", 2, "a"]));
        let plain = Printer::from_definition(&json!({}), "v1");
        let t = table(&plain, &[json!({"metadata": {"name": "x"}})], json!({}), Include::None);
        assert_eq!(t["columnDefinitions"][1]["name"], "Age");
    }
}
