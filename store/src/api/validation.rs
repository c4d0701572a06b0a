//! Validation: the field checks kube-apiserver makes on create and update, reported as field causes.

use bosun_core::FieldError;
use bosun_core::LabelSelector;
use bosun_core::k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use bosun_core::k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use bosun_core::k8s_openapi::api::batch::v1::{CronJob, Job};
use bosun_core::k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodSpec, PodTemplateSpec, Secret, Service};
use bosun_core::k8s_openapi::api::policy::v1::PodDisruptionBudget;
use bosun_core::k8s_openapi::api::scheduling::v1::PriorityClass;
use bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector as ApiLabelSelector, ObjectMeta};
use bosun_core::meta::{
    validate_dns1035_label, validate_dns1123_label, validate_dns1123_subdomain, validate_label_value, validate_qualified_name,
};
use std::collections::{BTreeMap, HashSet};

/// Which rule an object's name follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameRule {
    /// DNS-1123 subdomain (most kinds).
    Subdomain,
    /// DNS-1123 label (namespaces).
    Label,
    /// DNS-1035 label (services).
    Dns1035,
    /// Anything without `/` or `%`, not `.` or `..` (RBAC, custom resources).
    Path,
}

/// Total size kube-apiserver allows for all annotations of one object.
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// Checks a name against a rule.
pub(crate) fn name(rule: NameRule, field: &str, value: &str, errs: &mut Vec<FieldError>) {
    let res = match rule {
        NameRule::Subdomain => validate_dns1123_subdomain(value).map_err(|e| e.0),
        NameRule::Label => validate_dns1123_label(value).map_err(|e| e.0),
        NameRule::Dns1035 => validate_dns1035_label(value).map_err(|e| e.0),
        NameRule::Path => {
            if value == "." || value == ".." {
                Err(format!("may not be '{value}'"))
            } else if value.contains('/') || value.contains('%') {
                Err("may not contain '/' or '%'".into())
            } else {
                Ok(())
            }
        }
    };
    if let Err(detail) = res {
        errs.push(FieldError::invalid(field, value, detail));
    }
}

/// Labels: qualified-name keys and label values.
pub(crate) fn labels(field: &str, labels: Option<&BTreeMap<String, String>>, errs: &mut Vec<FieldError>) {
    for (k, v) in labels.into_iter().flatten() {
        if let Err(e) = validate_qualified_name(k) {
            errs.push(FieldError::invalid(field, k, e.0));
        }
        if let Err(e) = validate_label_value(v) {
            errs.push(FieldError::invalid(format!("{field}[{k}]"), v, e.0));
        }
    }
}

/// Common metadata: name, labels, annotations, finalizers.
pub(crate) fn metadata(meta: &ObjectMeta, rule: NameRule, errs: &mut Vec<FieldError>) {
    match meta.name.as_deref() {
        None | Some("") => errs.push(FieldError::required("metadata.name")),
        Some(n) => name(rule, "metadata.name", n, errs),
    }
    labels("metadata.labels", meta.labels.as_ref(), errs);
    let mut total = 0;
    for (k, v) in meta.annotations.iter().flatten() {
        if let Err(e) = validate_qualified_name(&k.to_ascii_lowercase()) {
            errs.push(FieldError::invalid("metadata.annotations", k, e.0));
        }
        total += k.len() + v.len();
    }
    if total > MAX_ANNOTATIONS_BYTES {
        errs.push(FieldError {
            reason: "FieldValueTooLong".into(),
            field: "metadata.annotations".into(),
            message: format!("Too long: may not be more than {MAX_ANNOTATIONS_BYTES} bytes"),
        });
    }
    for (i, f) in meta.finalizers.iter().flatten().enumerate() {
        if let Err(e) = validate_qualified_name(f) {
            errs.push(FieldError::invalid(format!("metadata.finalizers[{i}]"), f, e.0));
        }
    }
    for (i, o) in meta.owner_references.iter().flatten().enumerate() {
        if o.name.is_empty() {
            errs.push(FieldError::invalid(format!("metadata.ownerReferences[{i}].name"), "", "name must not be empty"));
        }
        if o.uid.is_empty() {
            errs.push(FieldError::invalid(format!("metadata.ownerReferences[{i}].uid"), "", "uid must not be empty"));
        }
    }
    if meta.owner_references.iter().flatten().filter(|o| o.controller == Some(true)).count() > 1 {
        errs.push(FieldError::invalid("metadata.ownerReferences", "", "Only one reference can have Controller set to true"));
    }
}

fn not_supported(field: &str, value: Option<&str>, allowed: &[&str], errs: &mut Vec<FieldError>) {
    if let Some(v) = value
        && !allowed.contains(&v)
    {
        errs.push(FieldError::not_supported(field, v, allowed));
    }
}

fn container(field: &str, c: &Container, volumes: &HashSet<&str>, errs: &mut Vec<FieldError>) {
    if c.name.is_empty() {
        errs.push(FieldError::required(format!("{field}.name")));
    } else {
        name(NameRule::Label, &format!("{field}.name"), &c.name, errs);
    }
    if c.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
        errs.push(FieldError::required(format!("{field}.image")));
    }
    not_supported(&format!("{field}.imagePullPolicy"), c.image_pull_policy.as_deref(), &["Always", "IfNotPresent", "Never"], errs);
    for (i, p) in c.ports.iter().flatten().enumerate() {
        if !(1..=65535).contains(&p.container_port) {
            errs.push(FieldError::invalid(
                format!("{field}.ports[{i}].containerPort"),
                p.container_port,
                "must be between 1 and 65535, inclusive",
            ));
        }
        if let Some(h) = p.host_port
            && !(0..=65535).contains(&h)
        {
            errs.push(FieldError::invalid(format!("{field}.ports[{i}].hostPort"), h, "must be between 1 and 65535, inclusive"));
        }
        not_supported(&format!("{field}.ports[{i}].protocol"), p.protocol.as_deref(), &["SCTP", "TCP", "UDP"], errs);
    }
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        if !volumes.contains(m.name.as_str()) {
            errs.push(FieldError {
                reason: "FieldValueNotFound".into(),
                field: format!("{field}.volumeMounts[{i}].name"),
                message: format!("Not found: \"{}\"", m.name),
            });
        }
        if m.mount_path.is_empty() {
            errs.push(FieldError::required(format!("{field}.volumeMounts[{i}].mountPath")));
        }
    }
    if let Some(r) = c.resources.as_ref() {
        for (res, req) in r.requests.iter().flatten() {
            let limit = r.limits.as_ref().and_then(|l| l.get(res));
            let (Ok(q), Some(Ok(l))) = (bosun_core::Quantity::parse(&req.0), limit.map(|l| bosun_core::Quantity::parse(&l.0))) else {
                continue;
            };
            if q > l {
                errs.push(FieldError::invalid(
                    format!("{field}.resources.requests"),
                    &req.0,
                    format!("must be less than or equal to {res} limit of {}", l),
                ));
            }
        }
        for (kind, m) in [("requests", &r.requests), ("limits", &r.limits)] {
            for (res, q) in m.iter().flatten() {
                match bosun_core::Quantity::parse(&q.0) {
                    Err(e) => errs.push(FieldError::invalid(format!("{field}.resources.{kind}[{res}]"), &q.0, e)),
                    Ok(v) if v < bosun_core::Quantity::from_units(0) => {
                        errs.push(FieldError::invalid(
                            format!("{field}.resources.{kind}[{res}]"),
                            &q.0,
                            "must be greater than or equal to 0",
                        ));
                    }
                    Ok(_) => {}
                }
            }
        }
    }
}

/// A pod spec, at `field` (`spec` or `spec.template.spec`).
pub(crate) fn pod_spec(field: &str, spec: &PodSpec, errs: &mut Vec<FieldError>) {
    let mut volumes = HashSet::new();
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        name(NameRule::Label, &format!("{field}.volumes[{i}].name"), &v.name, errs);
        if !volumes.insert(v.name.as_str()) {
            errs.push(FieldError::duplicate(format!("{field}.volumes[{i}].name"), &v.name));
        }
    }
    if spec.containers.is_empty() {
        errs.push(FieldError::required(format!("{field}.containers")));
    }
    let mut names = HashSet::new();
    for (list, cs) in [("initContainers", spec.init_containers.as_deref().unwrap_or(&[])), ("containers", &spec.containers)] {
        for (i, c) in cs.iter().enumerate() {
            let at = format!("{field}.{list}[{i}]");
            container(&at, c, &volumes, errs);
            if !c.name.is_empty() && !names.insert(c.name.as_str()) {
                errs.push(FieldError::duplicate(format!("{at}.name"), &c.name));
            }
        }
    }
    not_supported(&format!("{field}.restartPolicy"), spec.restart_policy.as_deref(), &["Always", "OnFailure", "Never"], errs);
    not_supported(
        &format!("{field}.dnsPolicy"),
        spec.dns_policy.as_deref(),
        &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"],
        errs,
    );
    if let Some(g) = spec.termination_grace_period_seconds
        && g < 0
    {
        errs.push(FieldError::invalid(format!("{field}.terminationGracePeriodSeconds"), g, "must be greater than or equal to 0"));
    }
    if let Some(a) = spec.active_deadline_seconds
        && a <= 0
    {
        errs.push(FieldError::invalid(format!("{field}.activeDeadlineSeconds"), a, "must be greater than or equal to 1"));
    }
    for (k, v) in spec.node_selector.iter().flatten() {
        if let Err(e) = validate_qualified_name(k) {
            errs.push(FieldError::invalid(format!("{field}.nodeSelector"), k, e.0));
        }
        if let Err(e) = validate_label_value(v) {
            errs.push(FieldError::invalid(format!("{field}.nodeSelector"), v, e.0));
        }
    }
    for (i, t) in spec.tolerations.iter().flatten().enumerate() {
        not_supported(&format!("{field}.tolerations[{i}].operator"), t.operator.as_deref(), &["Equal", "Exists"], errs);
        not_supported(
            &format!("{field}.tolerations[{i}].effect"),
            t.effect.as_deref(),
            &["NoExecute", "NoSchedule", "PreferNoSchedule"],
            errs,
        );
        if t.operator.as_deref() == Some("Exists") && t.value.as_deref().is_some_and(|v| !v.is_empty()) {
            errs.push(FieldError::invalid(
                format!("{field}.tolerations[{i}].operator"),
                "Exists",
                "value must be empty when `operator` is 'Exists'",
            ));
        }
    }
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        name(NameRule::Subdomain, &format!("{field}.nodeName"), n, errs);
    }
}

/// Pods: the spec, and on update that only the mutable fields changed.
pub(crate) fn pod(p: &Pod, old: Option<&Pod>, errs: &mut Vec<FieldError>) {
    match p.spec.as_ref() {
        Some(spec) => pod_spec("spec", spec, errs),
        None => errs.push(FieldError::required("spec")),
    }
    let (Some(old), Some(new)) = (old.and_then(|o| o.spec.as_ref()), p.spec.as_ref()) else { return };
    // Mutable on update: container images, activeDeadlineSeconds, added tolerations, scheduling gates removal.
    let strip = |s: &PodSpec| {
        let mut s = s.clone();
        for c in s.containers.iter_mut().chain(s.init_containers.iter_mut().flatten()) {
            c.image = None;
        }
        s.active_deadline_seconds = None;
        s.tolerations = None;
        s.scheduling_gates = None;
        s.termination_grace_period_seconds = None;
        s.ephemeral_containers = None;
        s
    };
    let (mut a, b) = (strip(new), strip(old));
    // A pod that had no node keeps none through a plain update (binding goes through pods/binding).
    if a.node_name.is_none() {
        a.node_name = b.node_name.clone();
    }
    if a != b {
        errs.push(FieldError::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ));
    }
}

fn selector_and_template(
    selector: Option<&ApiLabelSelector>,
    template: Option<&PodTemplateSpec>,
    allowed_restart: &[&str],
    errs: &mut Vec<FieldError>,
) {
    let parsed = match selector {
        None => {
            errs.push(FieldError::required("spec.selector"));
            None
        }
        Some(s) => match LabelSelector::from_api(s) {
            Err(e) => {
                errs.push(FieldError::invalid("spec.selector", "", e));
                None
            }
            Ok(sel) if sel.is_empty() => {
                errs.push(FieldError::invalid("spec.selector", "{}", "empty selector is invalid for deployment"));
                None
            }
            Ok(sel) => Some(sel),
        },
    };
    if let Some(s) = selector {
        labels("spec.selector.matchLabels", s.match_labels.as_ref(), errs);
    }
    let Some(t) = template else {
        errs.push(FieldError::required("spec.template"));
        return;
    };
    let tlabels = t.metadata.as_ref().and_then(|m| m.labels.as_ref());
    labels("spec.template.metadata.labels", tlabels, errs);
    if let Some(sel) = parsed
        && !sel.matches_opt(tlabels)
    {
        let shown: Vec<String> = tlabels.into_iter().flatten().map(|(k, v)| format!("{k}={v}")).collect();
        errs.push(FieldError::invalid("spec.template.metadata.labels", shown.join(","), "`selector` does not match template `labels`"));
    }
    match t.spec.as_ref() {
        None => errs.push(FieldError::required("spec.template.spec")),
        Some(spec) => {
            pod_spec("spec.template.spec", spec, errs);
            if let Some(r) = spec.restart_policy.as_deref()
                && !allowed_restart.contains(&r)
            {
                errs.push(FieldError::not_supported("spec.template.spec.restartPolicy", r, allowed_restart));
            }
        }
    }
}

fn replicas(field: &str, r: Option<i32>, errs: &mut Vec<FieldError>) {
    if let Some(r) = r.filter(|r| *r < 0) {
        errs.push(FieldError::invalid(field, r, "must be greater than or equal to 0"));
    }
}

fn immutable<T: PartialEq>(field: &str, new: &T, old: Option<&T>, errs: &mut Vec<FieldError>) {
    if let Some(old) = old
        && new != old
    {
        errs.push(FieldError::invalid(field, "", "field is immutable"));
    }
}

/// Deployments.
pub(crate) fn deployment(d: &Deployment, old: Option<&Deployment>, errs: &mut Vec<FieldError>) {
    let spec = &d.spec;
    selector_and_template(Some(&spec.selector), Some(&spec.template), &["Always"], errs);
    replicas("spec.replicas", spec.replicas, errs);
    if let Some(s) = spec.strategy.as_ref() {
        not_supported("spec.strategy.type", s.type_.as_deref(), &["Recreate", "RollingUpdate"], errs);
        if s.type_.as_deref() == Some("Recreate") && s.rolling_update.is_some() {
            errs.push(FieldError::forbidden("spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'"));
        }
        if let Some(ru) = s.rolling_update.as_ref() {
            use bosun_core::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
            let zero =
                |v: &Option<IntOrString>| matches!(v, Some(IntOrString::Int(0))) || matches!(v, Some(IntOrString::String(s)) if s == "0%");
            if zero(&ru.max_surge) && zero(&ru.max_unavailable) {
                errs.push(FieldError::invalid("spec.strategy.rollingUpdate.maxUnavailable", 0, "may not be 0 when `maxSurge` is 0"));
            }
        }
    }
    immutable("spec.selector", &spec.selector, old.map(|o| &o.spec).map(|s| &s.selector), errs);
}

/// ReplicaSets.
pub(crate) fn replica_set(r: &ReplicaSet, old: Option<&ReplicaSet>, errs: &mut Vec<FieldError>) {
    let spec = &r.spec;
    selector_and_template(Some(&spec.selector), spec.template.as_ref(), &["Always"], errs);
    replicas("spec.replicas", spec.replicas, errs);
    immutable("spec.selector", &spec.selector, old.map(|o| &o.spec).map(|s| &s.selector), errs);
}

/// StatefulSets: only replicas, template, update strategy, retention policy and a few more may change.
pub(crate) fn stateful_set(s: &StatefulSet, old: Option<&StatefulSet>, errs: &mut Vec<FieldError>) {
    let spec = &s.spec;
    // Containers may mount the claim templates by name, as if they were the pod's volumes (the
    // controller adds them to every pod), as kube-apiserver validates it.
    let mut template = spec.template.clone();
    if let Some(claims) = spec.volume_claim_templates.as_ref() {
        use bosun_core::k8s_openapi::api::core::v1::{PersistentVolumeClaimVolumeSource, Volume};
        let volumes = template.spec.get_or_insert_with(Default::default).volumes.get_or_insert_with(Vec::new);
        for claim in claims {
            let name = claim.metadata.name.clone().unwrap_or_default();
            if !volumes.iter().any(|v| v.name == name) {
                volumes.push(Volume {
                    name: name.clone(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource { claim_name: name, read_only: None }),
                    ..Volume::default()
                });
            }
        }
    }
    selector_and_template(Some(&spec.selector), Some(&template), &["Always"], errs);
    replicas("spec.replicas", spec.replicas, errs);
    not_supported("spec.podManagementPolicy", spec.pod_management_policy.as_deref(), &["OrderedReady", "Parallel"], errs);
    if let Some(old) = old.map(|o| &o.spec) {
        let strip = |s: &bosun_core::k8s_openapi::api::apps::v1::StatefulSetSpec| {
            let mut s = s.clone();
            s.replicas = None;
            s.template = Default::default();
            s.update_strategy = None;
            s.persistent_volume_claim_retention_policy = None;
            s.min_ready_seconds = None;
            s.ordinals = None;
            s.revision_history_limit = None;
            s
        };
        if strip(spec) != strip(old) {
            errs.push(FieldError::forbidden(
                "spec",
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            ));
        }
    }
}

/// DaemonSets.
pub(crate) fn daemon_set(d: &DaemonSet, old: Option<&DaemonSet>, errs: &mut Vec<FieldError>) {
    let spec = &d.spec;
    selector_and_template(Some(&spec.selector), Some(&spec.template), &["Always"], errs);
    if let Some(us) = spec.update_strategy.as_ref() {
        not_supported("spec.updateStrategy.type", us.type_.as_deref(), &["OnDelete", "RollingUpdate"], errs);
    }
    immutable("spec.selector", &spec.selector, old.map(|o| &o.spec).map(|s| &s.selector), errs);
}

/// Jobs: pods restart Never or OnFailure; selector and completions are immutable.
pub(crate) fn job(j: &Job, old: Option<&Job>, errs: &mut Vec<FieldError>) {
    let Some(spec) = j.spec.as_ref() else { return errs.push(FieldError::required("spec")) };
    selector_and_template(spec.selector.as_ref(), Some(&spec.template), &["OnFailure", "Never"], errs);
    for (f, v) in
        [("spec.parallelism", spec.parallelism), ("spec.completions", spec.completions), ("spec.backoffLimit", spec.backoff_limit)]
    {
        if let Some(v) = v.filter(|v| *v < 0) {
            errs.push(FieldError::invalid(f, v, "must be greater than or equal to 0"));
        }
    }
    not_supported("spec.completionMode", spec.completion_mode.as_deref(), &["Indexed", "NonIndexed"], errs);
    if let Some(old) = old.and_then(|o| o.spec.as_ref()) {
        immutable("spec.selector", &spec.selector, Some(&old.selector), errs);
        immutable("spec.completions", &spec.completions, Some(&old.completions), errs);
        if old.suspend != Some(true) {
            let strip = |t: &PodTemplateSpec| {
                let mut t = t.clone();
                if let Some(s) = t.spec.as_mut() {
                    s.scheduling_gates = None;
                }
                t
            };
            if strip(&spec.template) != strip(&old.template) {
                errs.push(FieldError::invalid("spec.template", "", "field is immutable"));
            }
        }
    }
}

/// A cron schedule: five fields or an `@` macro, optionally behind `TZ=`.
pub(crate) fn cron_schedule(s: &str) -> bool {
    let s = s.trim();
    let s = match s.strip_prefix("CRON_TZ=").or_else(|| s.strip_prefix("TZ=")) {
        Some(rest) => rest.split_once(' ').map(|(_, r)| r.trim()).unwrap_or(""),
        None => s,
    };
    if s.starts_with('@') {
        return matches!(s, "@yearly" | "@annually" | "@monthly" | "@weekly" | "@daily" | "@midnight" | "@hourly")
            || s.starts_with("@every ");
    }
    let fields: Vec<&str> = s.split_whitespace().collect();
    fields.len() == 5 && fields.iter().all(|f| f.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '*' | '/' | ',' | '-' | '?')))
}

/// CronJobs.
pub(crate) fn cron_job(c: &CronJob, errs: &mut Vec<FieldError>) {
    let spec = &c.spec;
    if spec.schedule.is_empty() {
        errs.push(FieldError::required("spec.schedule"));
    } else if !cron_schedule(&spec.schedule) {
        errs.push(FieldError::invalid("spec.schedule", &spec.schedule, "unparseable schedule"));
    }
    not_supported("spec.concurrencyPolicy", spec.concurrency_policy.as_deref(), &["Allow", "Forbid", "Replace"], errs);
    match spec.job_template.spec.as_ref().and_then(|s| s.template.spec.as_ref()) {
        None => errs.push(FieldError::required("spec.jobTemplate.spec.template.spec")),
        Some(ps) => pod_spec("spec.jobTemplate.spec.template.spec", ps, errs),
    }
}

/// Services.
pub(crate) fn service(s: &Service, old: Option<&Service>, node_ports: (u16, u16), errs: &mut Vec<FieldError>) {
    let Some(spec) = s.spec.as_ref() else { return errs.push(FieldError::required("spec")) };
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    not_supported("spec.type", Some(kind), &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"], errs);
    not_supported("spec.sessionAffinity", spec.session_affinity.as_deref(), &["ClientIP", "None"], errs);
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let ports = spec.ports.as_deref().unwrap_or(&[]);
    if ports.is_empty() && kind != "ExternalName" && !headless {
        errs.push(FieldError::required("spec.ports"));
    }
    if kind == "ExternalName" && spec.external_name.as_deref().is_none_or(str::is_empty) {
        errs.push(FieldError::required("spec.externalName"));
    }
    let mut names = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        if !(1..=65535).contains(&p.port) {
            errs.push(FieldError::invalid(format!("spec.ports[{i}].port"), p.port, "must be between 1 and 65535, inclusive"));
        }
        match p.name.as_deref() {
            None | Some("") if ports.len() > 1 => errs.push(FieldError::required(format!("spec.ports[{i}].name"))),
            Some(n) if !n.is_empty() => {
                name(NameRule::Label, &format!("spec.ports[{i}].name"), n, errs);
                if !names.insert(n) {
                    errs.push(FieldError::duplicate(format!("spec.ports[{i}].name"), n));
                }
            }
            _ => {}
        }
        not_supported(&format!("spec.ports[{i}].protocol"), p.protocol.as_deref(), &["SCTP", "TCP", "UDP"], errs);
        if let Some(np) = p.node_port.filter(|n| *n != 0) {
            if kind == "ClusterIP" || kind == "ExternalName" {
                errs.push(FieldError::forbidden(format!("spec.ports[{i}].nodePort"), "may not be used when `type` is 'ClusterIP'"));
            } else if np < i32::from(node_ports.0) || np > i32::from(node_ports.1) {
                errs.push(FieldError::invalid(
                    format!("spec.ports[{i}].nodePort"),
                    np,
                    format!("provided port is not in the valid range. The range of valid ports is {}-{}", node_ports.0, node_ports.1),
                ));
            }
        }
    }
    labels("spec.selector", spec.selector.as_ref(), errs);
    if let Some(ip) = spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty() && *ip != "None")
        && ip.parse::<std::net::IpAddr>().is_err()
    {
        errs.push(FieldError::invalid("spec.clusterIP", ip, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"));
    }
    if let Some(old) = old.and_then(|o| o.spec.as_ref()) {
        let old_ip = old.cluster_ip.as_deref().unwrap_or("");
        let new_ip = spec.cluster_ip.as_deref().unwrap_or("");
        if kind != "ExternalName" && old.type_.as_deref() != Some("ExternalName") && !old_ip.is_empty() && new_ip != old_ip {
            errs.push(FieldError::invalid("spec.clusterIPs[0]", new_ip, "may not change once set"));
        }
    }
}

/// ConfigMaps and Secrets: data keys, and nothing changes once `immutable` is set.
fn data_keys<'a>(field: &str, keys: impl Iterator<Item = &'a String>, errs: &mut Vec<FieldError>) {
    for k in keys {
        let ok = !k.is_empty()
            && k.len() <= 253
            && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && k != "."
            && k != "..";
        if !ok {
            errs.push(FieldError::invalid(
                field,
                k,
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
            ));
        }
    }
}

/// ConfigMaps.
pub(crate) fn config_map(c: &ConfigMap, old: Option<&ConfigMap>, errs: &mut Vec<FieldError>) {
    data_keys("data", c.data.iter().flatten().map(|(k, _)| k), errs);
    data_keys("binaryData", c.binary_data.iter().flatten().map(|(k, _)| k), errs);
    if let Some(old) = old.filter(|o| o.immutable == Some(true)) {
        if c.data != old.data || c.binary_data != old.binary_data {
            errs.push(FieldError::forbidden("data", "field is immutable when `immutable` is set"));
        }
        if c.immutable != Some(true) {
            errs.push(FieldError::forbidden("immutable", "field is immutable when `immutable` is set"));
        }
    }
}

/// Secrets.
pub(crate) fn secret(s: &Secret, old: Option<&Secret>, errs: &mut Vec<FieldError>) {
    data_keys("data", s.data.iter().flatten().map(|(k, _)| k), errs);
    data_keys("stringData", s.string_data.iter().flatten().map(|(k, _)| k), errs);
    if let Some(old) = old {
        immutable("type", &s.type_, Some(&old.type_), errs);
        if old.immutable == Some(true) && (s.data != old.data || s.immutable != Some(true)) {
            errs.push(FieldError::forbidden("data", "field is immutable when `immutable` is set"));
        }
    }
}

/// HorizontalPodAutoscalers.
pub(crate) fn horizontal_pod_autoscaler(h: &HorizontalPodAutoscaler, errs: &mut Vec<FieldError>) {
    let spec = &h.spec;
    if spec.scale_target_ref.kind.is_empty() {
        errs.push(FieldError::required("spec.scaleTargetRef.kind"));
    }
    if spec.scale_target_ref.name.is_empty() {
        errs.push(FieldError::required("spec.scaleTargetRef.name"));
    }
    if spec.max_replicas < 1 {
        errs.push(FieldError::invalid("spec.maxReplicas", spec.max_replicas, "must be greater than or equal to 1"));
    }
    if let Some(min) = spec.min_replicas
        && min > spec.max_replicas
    {
        errs.push(FieldError::invalid("spec.maxReplicas", spec.max_replicas, "must be greater than or equal to `minReplicas`"));
    }
}

/// PodDisruptionBudgets.
pub(crate) fn pod_disruption_budget(p: &PodDisruptionBudget, errs: &mut Vec<FieldError>) {
    if let Some(spec) = p.spec.as_ref()
        && spec.min_available.is_some()
        && spec.max_unavailable.is_some()
    {
        errs.push(FieldError::invalid("spec", "", "minAvailable and maxUnavailable cannot be both set"));
    }
}

/// PriorityClasses: the value is immutable and user classes stay at or under one billion.
pub(crate) fn priority_class(p: &PriorityClass, old: Option<&PriorityClass>, errs: &mut Vec<FieldError>) {
    let system = p.metadata.name.as_deref().is_some_and(|n| n.starts_with("system-"));
    if !system && p.value.unwrap_or(0) > 1_000_000_000 {
        errs.push(FieldError::forbidden("value", "maximum allowed value of a user defined priority is 1000000000"));
    }
    if let Some(old) = old {
        immutable("value", &p.value, Some(&old.value), errs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_schedules_parse_loosely() {
        assert!(cron_schedule("*/5 * * * *"));
        assert!(cron_schedule("@hourly"));
        assert!(cron_schedule("TZ=UTC 0 0 * * *"));
        assert!(!cron_schedule("every minute"));
        assert!(!cron_schedule("* * *"));
    }

    #[test]
    fn statefulset_containers_may_mount_claim_templates() {
        let set = |claims: serde_json::Value| -> StatefulSet {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "db"},
                "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                    "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [
                        {"name": "db", "image": "busybox", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
                    "volumeClaimTemplates": claims}
            }))
            .unwrap_or_default()
        };
        let mut errs = Vec::new();
        stateful_set(&set(serde_json::json!([{"metadata": {"name": "data"}}])), None, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        stateful_set(&set(serde_json::json!([{"metadata": {"name": "other"}}])), None, &mut errs);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "spec.template.spec.containers[0].volumeMounts[0].name");
    }

    #[test]
    fn names_follow_their_rule() {
        let mut errs = Vec::new();
        name(NameRule::Dns1035, "metadata.name", "1web", &mut errs);
        name(NameRule::Subdomain, "metadata.name", "web.example", &mut errs);
        name(NameRule::Label, "metadata.name", "web.example", &mut errs);
        assert_eq!(errs.len(), 2);
    }
}
