//! The warnings kube-apiserver attaches to writes, beyond field validation: bare finalizer names,
//! and what it finds questionable in a pod spec or pod template (deprecated node labels and
//! annotations, deprecated volume plugins, fractional byte quantities, repeated env names,
//! ports and image pull secrets, a negative grace period, null label selectors). kubectl prints
//! each as `Warning: ...`.

use bosun_core::Quantity;
use serde_json::Value;
use std::collections::HashSet;

/// Finalizers kube-apiserver knows without a domain.
const STANDARD_FINALIZERS: &[&str] = &["orphan", "foregroundDeletion", "kubernetes"];

/// Node labels kube-apiserver calls deprecated, with what it says about each.
const DEPRECATED_NODE_LABELS: &[(&str, &str)] = &[
    ("beta.kubernetes.io/arch", "deprecated since v1.14; use \"kubernetes.io/arch\" instead"),
    ("beta.kubernetes.io/os", "deprecated since v1.14; use \"kubernetes.io/os\" instead"),
    ("failure-domain.beta.kubernetes.io/region", "deprecated since v1.17; use \"topology.kubernetes.io/region\" instead"),
    ("failure-domain.beta.kubernetes.io/zone", "deprecated since v1.17; use \"topology.kubernetes.io/zone\" instead"),
    ("beta.kubernetes.io/instance-type", "deprecated since v1.17; use \"node.kubernetes.io/instance-type\" instead"),
    ("app.kubernetes.io/created-by", "deprecated since v1.9"),
    ("scheduler.alpha.kubernetes.io/preferAvoidPods", "deprecated since v1.22; use Taints and Tolerations instead"),
    ("node-role.kubernetes.io/master", "use \"node-role.kubernetes.io/control-plane\" instead"),
];

/// Pod annotations that no longer do anything.
const DEPRECATED_ANNOTATIONS: &[(&str, &str)] = &[
    ("scheduler.alpha.kubernetes.io/critical-pod", "non-functional in v1.16+; use the \"priorityClassName\" field instead"),
    ("security.alpha.kubernetes.io/sysctls", "non-functional in v1.11+; use the \"sysctls\" field instead"),
    ("security.alpha.kubernetes.io/unsafe-sysctls", "non-functional in v1.11+; use the \"sysctls\" field instead"),
];

/// Volume plugins kube-apiserver calls deprecated or removed.
const DEPRECATED_VOLUMES: &[(&str, &str)] = &[
    ("photonPersistentDisk", "deprecated in v1.11, non-functional in v1.16+"),
    ("gitRepo", "deprecated in v1.11"),
    ("scaleIO", "deprecated in v1.16, non-functional in v1.22+"),
    ("flocker", "deprecated in v1.22, non-functional in v1.25+"),
    ("storageos", "deprecated in v1.22, non-functional in v1.25+"),
    ("quobyte", "deprecated in v1.22, non-functional in v1.25+"),
    ("glusterfs", "deprecated in v1.25, non-functional in v1.26+"),
    ("cephfs", "deprecated in v1.28, non-functional in v1.31+"),
    ("rbd", "deprecated in v1.28, non-functional in v1.31+"),
];

const SECCOMP_POD: &str = "seccomp.security.alpha.kubernetes.io/pod";
const SECCOMP_CONTAINER: &str = "container.seccomp.security.alpha.kubernetes.io/";

/// Warnings for finalizer names without a domain and path (`example.com/cleanup`): two writers
/// may pick the same bare name.
pub(crate) fn finalizers(object: &Value) -> Vec<String> {
    let finalizers = object.get("metadata").and_then(|m| m.get("finalizers")).and_then(Value::as_array);
    finalizers
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|f| !f.contains('/') && !STANDARD_FINALIZERS.contains(f))
        .map(|f| {
            format!(
                "metadata.finalizers: {}: prefer a domain-qualified finalizer name including a path (/) to avoid accidental conflicts with other finalizer writers",
                Value::String(f.to_owned())
            )
        })
        .collect()
}

/// Where a kind keeps its pod (template): the path of the object holding `metadata` and `spec`.
fn pod_template_path(group: &str, kind: &str) -> Option<&'static [&'static str]> {
    match (group, kind) {
        ("", "Pod") => Some(&[]),
        ("", "PodTemplate") => Some(&["template"]),
        ("", "ReplicationController") | ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") | ("batch", "Job") => {
            Some(&["spec", "template"])
        }
        ("batch", "CronJob") => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

/// Whether a patch body reaches into the kind's pod (template): only then do its warnings apply
/// to the patched object, as kube-apiserver warns on a template only when it changes.
pub(crate) fn patch_touches_pod(group: &str, kind: &str, patch: &Value) -> bool {
    let Some(path) = pod_template_path(group, kind) else { return false };
    match patch {
        Value::Array(ops) => {
            let prefix: String = path.iter().map(|p| format!("/{p}")).collect();
            ops.iter().filter_map(|op| op.get("path").and_then(Value::as_str)).any(|p| p.starts_with(&prefix))
        }
        Value::Object(_) => {
            let at = path.iter().try_fold(patch, |v, key| v.get(key));
            at.is_some_and(|v| v.get("spec").is_some() || v.get("metadata").is_some())
        }
        _ => false,
    }
}

/// The warnings for the pod or pod template inside `object`, for kinds that have one.
pub(crate) fn pod(group: &str, kind: &str, object: &Value) -> Vec<String> {
    let Some(path) = pod_template_path(group, kind) else { return Vec::new() };
    let Some(template) = path.iter().try_fold(object, |v, key| v.get(key)) else { return Vec::new() };
    let prefix = path.join(".");
    let at = |rest: &str| if prefix.is_empty() { rest.to_owned() } else { format!("{prefix}.{rest}") };
    let spec = template.get("spec").unwrap_or(&Value::Null);
    let annotations = template.get("metadata").and_then(|m| m.get("annotations")).and_then(Value::as_object);
    let mut out = Vec::new();

    for key in spec.get("nodeSelector").and_then(Value::as_object).into_iter().flat_map(|m| m.keys()) {
        if let Some(msg) = deprecated_label(key) {
            out.push(format!("{}: {msg}", at(&format!("spec.nodeSelector[{key}]"))));
        }
    }
    let node_affinity = spec.get("affinity").and_then(|a| a.get("nodeAffinity"));
    let required = node_affinity
        .and_then(|n| n.get("requiredDuringSchedulingIgnoredDuringExecution"))
        .and_then(|r| r.get("nodeSelectorTerms"))
        .and_then(Value::as_array);
    for (i, term) in required.into_iter().flatten().enumerate() {
        let base = at(&format!("spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[{i}]"));
        term_warnings(term, &base, &mut out);
    }
    let preferred = node_affinity.and_then(|n| n.get("preferredDuringSchedulingIgnoredDuringExecution")).and_then(Value::as_array);
    for (i, weighted) in preferred.into_iter().flatten().enumerate() {
        let base = at(&format!("spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[{i}].preference"));
        term_warnings(weighted.get("preference").unwrap_or(&Value::Null), &base, &mut out);
    }
    for (i, c) in spec.get("topologySpreadConstraints").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let key = c.get("topologyKey").and_then(Value::as_str).unwrap_or("");
        if let Some(msg) = deprecated_label(key) {
            out.push(format!("{}: {key} is {msg}", at(&format!("spec.topologySpreadConstraints[{i}].topologyKey"))));
        }
        if c.get("labelSelector").is_none_or(Value::is_null) {
            out.push(format!(
                "{}: a null labelSelector results in matching no pod",
                at(&format!("spec.topologySpreadConstraints[{i}].labelSelector"))
            ));
        }
    }
    for (key, msg) in DEPRECATED_ANNOTATIONS {
        if annotations.is_some_and(|a| a.contains_key(*key)) {
            out.push(format!("{}: {msg}", at(&format!("metadata.annotations[{key}]"))));
        }
    }
    for (i, volume) in spec.get("volumes").and_then(Value::as_array).into_iter().flatten().enumerate() {
        for (plugin, msg) in DEPRECATED_VOLUMES {
            if volume.get(*plugin).is_some_and(|v| !v.is_null()) {
                // kube-apiserver names this one as its Go field.
                let shown = if *plugin == "storageos" { "storageOS" } else { plugin };
                out.push(format!("{}: {msg}", at(&format!("spec.volumes[{i}].{shown}"))));
            }
        }
    }
    repeated_names(spec, "hostAliases", "ip", "duplicate ip", &at, &mut out);
    repeated_names(spec, "imagePullSecrets", "name", "duplicate name", &at, &mut out);
    for (i, secret) in spec.get("imagePullSecrets").and_then(Value::as_array).into_iter().flatten().enumerate() {
        if secret.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
            out.push(format!("{}: invalid empty name \"\"", at(&format!("spec.imagePullSecrets[{i}].name"))));
        }
    }
    for resource in ["memory", "ephemeral-storage"] {
        fractional(spec.get("overhead"), resource, &at("spec.overhead"), &mut out);
    }
    let pod_seccomp = spec.get("securityContext").and_then(|s| s.get("seccompProfile")).is_some_and(|p| !p.is_null());
    if !pod_seccomp && annotations.is_some_and(|a| a.contains_key(SECCOMP_POD)) {
        out.push(format!(
            "{}: non-functional in v1.27+; use the \"seccompProfile\" field instead",
            at(&format!("metadata.annotations[{SECCOMP_POD}]"))
        ));
    }

    let containers: Vec<(String, &Value)> = ["initContainers", "containers"]
        .iter()
        .flat_map(|list| {
            spec.get(*list).and_then(Value::as_array).into_iter().flatten().enumerate().map(move |(i, c)| (format!("spec.{list}[{i}]"), c))
        })
        .map(|(p, c)| (at(&p), c))
        .collect();
    for (path, c) in &containers {
        let name = c.get("name").and_then(Value::as_str).unwrap_or("");
        let seccomp = c.get("securityContext").and_then(|s| s.get("seccompProfile")).is_some_and(|p| !p.is_null());
        let key = format!("{SECCOMP_CONTAINER}{name}");
        if !seccomp && annotations.is_some_and(|a| a.contains_key(&key)) {
            out.push(format!(
                "{}: non-functional in v1.27+; use the \"seccompProfile\" field instead",
                at(&format!("metadata.annotations[{key}]"))
            ));
        }
        let resources = c.get("resources");
        for (which, resource) in
            [("limits", "memory"), ("requests", "memory"), ("limits", "ephemeral-storage"), ("requests", "ephemeral-storage")]
        {
            fractional(resources.and_then(|r| r.get(which)), resource, &format!("{path}.resources.{which}"), &mut out);
        }
        env_warnings(c, path, &mut out);
    }
    port_warnings(&containers, &mut out);
    if spec.get("terminationGracePeriodSeconds").and_then(Value::as_i64).is_some_and(|g| g < 0) {
        out.push(format!(
            "{}: must be >= 0; negative values are invalid and will be treated as 1",
            at("spec.terminationGracePeriodSeconds")
        ));
    }
    for which in ["podAffinity", "podAntiAffinity"] {
        let affinity = spec.get("affinity").and_then(|a| a.get(which));
        let required = affinity.and_then(|a| a.get("requiredDuringSchedulingIgnoredDuringExecution")).and_then(Value::as_array);
        for (i, term) in required.into_iter().flatten().enumerate() {
            if term.get("labelSelector").is_none_or(Value::is_null) {
                let p = at(&format!("spec.affinity.{which}.requiredDuringSchedulingIgnoredDuringExecution[{i}].labelSelector"));
                out.push(format!("{p}: a null labelSelector results in matching no pod"));
            }
        }
        let preferred = affinity.and_then(|a| a.get("preferredDuringSchedulingIgnoredDuringExecution")).and_then(Value::as_array);
        for (i, term) in preferred.into_iter().flatten().enumerate() {
            if term.get("podAffinityTerm").and_then(|t| t.get("labelSelector")).is_none_or(Value::is_null) {
                let p = at(&format!(
                    "spec.affinity.{which}.preferredDuringSchedulingIgnoredDuringExecution[{i}].podAffinityTerm.labelSelector"
                ));
                out.push(format!("{p}: a null labelSelector results in matching no pod"));
            }
        }
    }
    out
}

fn deprecated_label(key: &str) -> Option<&'static str> {
    DEPRECATED_NODE_LABELS.iter().find(|(k, _)| *k == key).map(|(_, msg)| *msg)
}

fn term_warnings(term: &Value, base: &str, out: &mut Vec<String>) {
    for (i, expr) in term.get("matchExpressions").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let key = expr.get("key").and_then(Value::as_str).unwrap_or("");
        if let Some(msg) = deprecated_label(key) {
            out.push(format!("{base}.matchExpressions[{i}].key: {key} is {msg}"));
        }
    }
}

fn repeated_names(spec: &Value, list: &str, field: &str, what: &str, at: &dyn Fn(&str) -> String, out: &mut Vec<String>) {
    let mut seen = HashSet::new();
    for (i, item) in spec.get(list).and_then(Value::as_array).into_iter().flatten().enumerate() {
        let Some(value) = item.get(field).and_then(Value::as_str) else { continue };
        if !seen.insert(value) {
            out.push(format!("{}: {what} {}", at(&format!("spec.{list}[{i}].{field}")), Value::String(value.to_owned())));
        }
    }
}

/// A byte quantity with a fractional part (`1.5`, `100m` of memory).
fn fractional(map: Option<&Value>, resource: &str, path: &str, out: &mut Vec<String>) {
    let Some(raw) = map.and_then(|m| m.get(resource)) else { return };
    let text = match raw {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return,
    };
    if let Ok(q) = Quantity::parse(&text)
        && q.milli_value() % 1000 != 0
    {
        out.push(format!("{path}[{resource}]: fractional byte value {} is invalid, must be an integer", Value::String(q.to_string())));
    }
}

/// An env var named again hides the earlier one; kube-apiserver lets pass only a redefinition
/// that builds on the earlier value (`X=$(X):more`).
fn env_warnings(container: &Value, path: &str, out: &mut Vec<String>) {
    let mut seen = HashSet::new();
    for (i, var) in container.get("env").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let Some(name) = var.get("name").and_then(Value::as_str) else { continue };
        if seen.insert(name) {
            continue;
        }
        let reference = format!("$({name})");
        let value = var.get("value").and_then(Value::as_str).unwrap_or("");
        let from = var.get("valueFrom").is_some_and(|v| !v.is_null());
        if from || value == reference || !value.contains(&reference) {
            out.push(format!(
                "{path}.env[{i}]: hides previous definition of {}, which may be dropped when using apply",
                Value::String(name.to_owned())
            ));
        }
    }
}

/// Container ports defined twice across the pod (same port and protocol).
fn port_warnings(containers: &[(String, &Value)], out: &mut Vec<String>) {
    struct Port<'a> {
        path: String,
        host_ip: &'a str,
        host_port: i64,
    }
    let mut all: Vec<(String, Port<'_>)> = Vec::new();
    for (path, c) in containers {
        for (i, port) in c.get("ports").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let here = format!("{path}.ports[{i}]");
            let number = port.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
            let protocol = port.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            let host_ip = port.get("hostIP").and_then(Value::as_str).unwrap_or("");
            let host_port = port.get("hostPort").and_then(Value::as_i64).unwrap_or(0);
            let key = format!("{number}/{protocol}");
            for (_, other) in all.iter().filter(|(k, _)| *k == key) {
                let message = if host_ip == other.host_ip && host_port == other.host_port {
                    "duplicate port definition with"
                } else if host_port == 0 || other.host_port == 0 {
                    "overlapping port definition with"
                } else if host_port == other.host_port && (host_ip.is_empty() != other.host_ip.is_empty()) {
                    "dangerously ambiguous port definition with"
                } else {
                    continue;
                };
                out.push(format!("{here}: {message} {}", other.path));
            }
            all.push((key, Port { path: here, host_ip, host_port }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_deployment_template_with_questionable_fields_warns_at_their_paths() {
        let deploy = json!({"spec": {"template": {
        "metadata": {"annotations": {"scheduler.alpha.kubernetes.io/critical-pod": ""}},
        "spec": {
            "nodeSelector": {"beta.kubernetes.io/os": "linux", "kubernetes.io/os": "linux"},
            "terminationGracePeriodSeconds": -5,
            "volumes": [{"name": "v", "gitRepo": {"repository": "x"}}],
            "imagePullSecrets": [{"name": "a"}, {"name": "a"}],
            "containers": [{
                "name": "c",
                "resources": {"limits": {"memory": "1.5"}, "requests": {"memory": "1Gi"}},
                "env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}, {"name": "B", "value": "x"}, {"name": "B", "value": "$(B):y"}],
                "ports": [{"containerPort": 80}, {"containerPort": 80, "protocol": "TCP"}],
            }],
        }}}});
        let got = pod("apps", "Deployment", &deploy);
        let want = [
            "spec.template.spec.nodeSelector[beta.kubernetes.io/os]: deprecated since v1.14; use \"kubernetes.io/os\" instead",
            "spec.template.metadata.annotations[scheduler.alpha.kubernetes.io/critical-pod]: non-functional in v1.16+; use the \"priorityClassName\" field instead",
            "spec.template.spec.volumes[0].gitRepo: deprecated in v1.11",
            "spec.template.spec.imagePullSecrets[1].name: duplicate name \"a\"",
            "spec.template.spec.containers[0].resources.limits[memory]: fractional byte value \"1500m\" is invalid, must be an integer",
            "spec.template.spec.containers[0].env[1]: hides previous definition of \"A\", which may be dropped when using apply",
            "spec.template.spec.containers[0].ports[1]: duplicate port definition with spec.template.spec.containers[0].ports[0]",
            "spec.template.spec.terminationGracePeriodSeconds: must be >= 0; negative values are invalid and will be treated as 1",
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn a_plain_pod_warns_without_a_prefix_and_a_clean_one_not_at_all() {
        let p = json!({"spec": {"topologySpreadConstraints": [{"topologyKey": "failure-domain.beta.kubernetes.io/zone", "maxSkew": 1}]}});
        assert_eq!(
            pod("", "Pod", &p),
            [
                "spec.topologySpreadConstraints[0].topologyKey: failure-domain.beta.kubernetes.io/zone is deprecated since v1.17; use \"topology.kubernetes.io/zone\" instead",
                "spec.topologySpreadConstraints[0].labelSelector: a null labelSelector results in matching no pod",
            ]
        );
        let clean = json!({"spec": {"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}, {"containerPort": 80, "protocol": "UDP"}]}]}});
        assert!(pod("", "Pod", &clean).is_empty());
        assert!(pod("", "ConfigMap", &json!({"spec": {"terminationGracePeriodSeconds": -1}})).is_empty());
    }

    #[test]
    fn only_patches_that_reach_the_template_are_checked() {
        assert!(patch_touches_pod("apps", "Deployment", &json!({"spec": {"template": {"spec": {"containers": []}}}})));
        assert!(!patch_touches_pod("apps", "Deployment", &json!({"spec": {"replicas": 3}})));
        assert!(patch_touches_pod("", "Pod", &json!([{"op": "add", "path": "/spec/nodeSelector", "value": {}}])));
        assert!(!patch_touches_pod("", "ConfigMap", &json!({"spec": {}})));
    }

    #[test]
    fn bare_finalizers_warn_and_qualified_or_standard_ones_do_not() {
        let obj = json!({"metadata": {"finalizers": ["cleanup", "example.com/x", "orphan", "foregroundDeletion"]}});
        assert_eq!(finalizers(&obj).len(), 1);
        assert!(finalizers(&obj)[0].starts_with("metadata.finalizers: \"cleanup\": prefer a domain-qualified finalizer name"));
    }
}
