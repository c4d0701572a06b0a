//! `PodInfo`: everything the plugins need from a pod, parsed once when the pod enters the scheduler.

use crate::resources::{Resource, pod_requests};
use bosun_core::LabelSelector;
use bosun_core::k8s_openapi::api::core::v1::{NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodAffinityTerm, Toleration};
use bosun_core::selector::{Operator, Requirement};
use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

static EMPTY_LABELS: LazyLock<BTreeMap<String, String>> = LazyLock::new(BTreeMap::new);

/// A host port a container asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// Host IP (`0.0.0.0` when unset).
    pub ip: String,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The port.
    pub port: i32,
}

impl HostPort {
    /// Whether two host ports collide (same protocol and port, and overlapping IPs).
    pub fn conflicts(&self, other: &Self) -> bool {
        self.port == other.port && self.protocol == other.protocol && (self.ip == other.ip || self.ip == "0.0.0.0" || other.ip == "0.0.0.0")
    }
}

/// A pod (anti-)affinity term with its namespaces resolved as kube-scheduler does.
#[derive(Debug, Clone)]
pub struct AffinityTerm {
    /// Explicit namespaces (the owner's namespace when neither namespaces nor a selector are given).
    pub namespaces: Vec<String>,
    /// Namespaces by label; `None` selects none.
    pub namespace_selector: Option<LabelSelector>,
    /// Pods by label.
    pub selector: LabelSelector,
    /// The node label that defines the topology domain.
    pub topology_key: String,
}

impl AffinityTerm {
    fn parse(term: &PodAffinityTerm, own_ns: &str) -> Result<Self, String> {
        let selector = match &term.label_selector {
            // A nil selector matches no pods.
            None => None,
            Some(s) => Some(LabelSelector::from_api(s).map_err(|e| e.to_string())?),
        };
        let namespace_selector = term.namespace_selector.as_ref().map(LabelSelector::from_api).transpose().map_err(|e| e.to_string())?;
        let mut namespaces = term.namespaces.clone().unwrap_or_default();
        if namespaces.is_empty() && namespace_selector.is_none() {
            namespaces.push(own_ns.to_owned());
        }
        Ok(Self {
            namespaces,
            namespace_selector,
            // Encode "nil selector" as an impossible requirement so that `matches` stays one check.
            selector: selector.unwrap_or_else(|| LabelSelector::parse("!bosun.io/nil-selector,bosun.io/nil-selector").unwrap_or_default()),
            topology_key: term.topology_key.clone(),
        })
    }

    /// Whether a pod (in a namespace with these labels) is selected by the term.
    pub fn matches(&self, pod: &PodInfo, ns_labels: impl FnOnce() -> Option<Arc<BTreeMap<String, String>>>) -> bool {
        if !self.selector.matches(pod.labels()) {
            return false;
        }
        if self.namespaces.contains(&pod.namespace) {
            return true;
        }
        match &self.namespace_selector {
            None => false,
            Some(s) if s.is_empty() => true,
            Some(s) => ns_labels().is_some_and(|l| s.matches(&l)),
        }
    }
}

/// A weighted (preferred) affinity term.
#[derive(Debug, Clone)]
pub struct WeightedAffinityTerm {
    /// The weight (1–100).
    pub weight: i64,
    /// The term.
    pub term: AffinityTerm,
}

/// Whether a constraint is hard or soft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenUnsatisfiable {
    /// `DoNotSchedule`: a filter.
    DoNotSchedule,
    /// `ScheduleAnyway`: a score.
    ScheduleAnyway,
}

/// A topology spread constraint, parsed.
#[derive(Debug, Clone)]
pub struct SpreadConstraint {
    /// Allowed skew.
    pub max_skew: i64,
    /// Node label of the domain.
    pub topology_key: String,
    /// Hard or soft.
    pub when_unsatisfiable: WhenUnsatisfiable,
    /// Which pods count (with `matchLabelKeys` merged in).
    pub selector: LabelSelector,
    /// Minimum number of eligible domains (hard constraints only).
    pub min_domains: Option<i64>,
    /// Whether the pod's node affinity limits which nodes count (`Honor`, the default).
    pub honor_node_affinity: bool,
    /// Whether node taints limit which nodes count (`Ignore`, the default, is false).
    pub honor_node_taints: bool,
}

/// One compiled node selector term: label requirements and `metadata.name` field requirements.
#[derive(Debug, Clone, Default)]
pub struct NodeTerm {
    labels: Vec<Requirement>,
    fields: Vec<Requirement>,
    valid: bool,
}

fn requirement(r: &NodeSelectorRequirement) -> Option<Requirement> {
    let operator = match r.operator.as_str() {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        "Gt" => Operator::Gt,
        "Lt" => Operator::Lt,
        _ => return None,
    };
    let values = r.values.clone().unwrap_or_default();
    match operator {
        Operator::In | Operator::NotIn if values.is_empty() => return None,
        Operator::Gt | Operator::Lt if values.len() != 1 || values[0].parse::<i64>().is_err() => return None,
        _ => {}
    }
    Some(Requirement { key: r.key.clone(), operator, values })
}

impl NodeTerm {
    /// Compiles a term; an empty or invalid term matches no node.
    pub fn parse(term: &NodeSelectorTerm) -> Self {
        let labels: Option<Vec<_>> = term.match_expressions.iter().flatten().map(requirement).collect();
        let fields: Option<Vec<_>> =
            term.match_fields.iter().flatten().map(|r| if r.key == "metadata.name" { requirement(r) } else { None }).collect();
        match (labels, fields) {
            (Some(labels), Some(fields)) => {
                let valid = !(labels.is_empty() && fields.is_empty());
                Self { labels, fields, valid }
            }
            _ => Self::default(),
        }
    }

    /// Whether a node (by labels and name) satisfies the term.
    pub fn matches(&self, labels: &BTreeMap<String, String>, name: &str) -> bool {
        if !self.valid || !self.labels.iter().all(|r| r.matches(labels)) {
            return false;
        }
        if self.fields.is_empty() {
            return true;
        }
        let mut fields = BTreeMap::new();
        fields.insert("metadata.name".to_owned(), name.to_owned());
        self.fields.iter().all(|r| r.matches(&fields))
    }
}

/// A pod's required node placement: `nodeSelector` and required node affinity (ORed terms).
#[derive(Debug, Clone, Default)]
pub struct RequiredNodeAffinity {
    node_selector: Option<LabelSelector>,
    terms: Option<Vec<NodeTerm>>,
}

impl RequiredNodeAffinity {
    /// From a `nodeSelector` map and a required `NodeSelector`.
    pub fn new(node_selector: Option<&BTreeMap<String, String>>, required: Option<&NodeSelector>) -> Self {
        Self {
            node_selector: node_selector.filter(|m| !m.is_empty()).map(LabelSelector::from_map),
            terms: required.map(|r| r.node_selector_terms.iter().map(NodeTerm::parse).collect()),
        }
    }

    /// Whether a node satisfies both.
    pub fn matches(&self, labels: &BTreeMap<String, String>, name: &str) -> bool {
        if let Some(s) = &self.node_selector
            && !s.matches(labels)
        {
            return false;
        }
        match &self.terms {
            None => true,
            Some(terms) => terms.iter().any(|t| t.matches(labels, name)),
        }
    }

    /// True when it constrains nothing.
    pub fn is_empty(&self) -> bool {
        self.node_selector.is_none() && self.terms.is_none()
    }

    /// The node names the pod can only land on (`metadata.name In (...)` in every term), if any.
    pub fn node_names(&self) -> Option<Vec<String>> {
        let terms = self.terms.as_ref()?;
        let mut out: Vec<String> = Vec::new();
        for t in terms {
            let names = t.fields.iter().find(|r| r.operator == Operator::In)?;
            out.extend(names.values.iter().cloned());
        }
        out.sort();
        out.dedup();
        Some(out)
    }
}

/// Everything the plugins need from one pod, computed once: requests, ports, tolerations, parsed
/// selectors and affinity terms, topology spread constraints. Shared as `Arc<PodInfo>`.
#[derive(Debug, Clone)]
pub struct PodInfo {
    /// The pod as the scheduler last saw it.
    pub pod: Arc<Pod>,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID (the name when the pod has none).
    pub uid: String,
    /// `spec.priority` (0 when unset).
    pub priority: i32,
    /// Effective requests (`pods` counts 1).
    pub requests: Resource,
    /// Non-zero CPU and memory requests used by scoring.
    pub non_zero: (i64, i64),
    /// Host ports.
    pub host_ports: Vec<HostPort>,
    /// Tolerations.
    pub tolerations: Vec<Toleration>,
    /// Required node placement.
    pub required_node_affinity: RequiredNodeAffinity,
    /// Preferred node affinity terms with weights.
    pub preferred_node_affinity: Vec<(i64, NodeTerm)>,
    /// Required pod affinity terms.
    pub required_affinity: Vec<AffinityTerm>,
    /// Required pod anti-affinity terms.
    pub required_anti_affinity: Vec<AffinityTerm>,
    /// Preferred pod affinity terms.
    pub preferred_affinity: Vec<WeightedAffinityTerm>,
    /// Preferred pod anti-affinity terms.
    pub preferred_anti_affinity: Vec<WeightedAffinityTerm>,
    /// Topology spread constraints.
    pub spread_constraints: Vec<SpreadConstraint>,
    /// Container images.
    pub images: Vec<String>,
    /// Scheduling gates still present.
    pub scheduling_gates: Vec<String>,
    /// `spec.schedulerName` (`default-scheduler` when unset).
    pub scheduler_name: String,
    /// `spec.nodeName`, when bound.
    pub node_name: Option<String>,
    /// `status.nominatedNodeName`.
    pub nominated_node_name: Option<String>,
    /// `PreemptLowerPriority` (default) or `Never`.
    pub preempt_never: bool,
    /// A part of the spec the scheduler could not parse (an invalid selector); such a pod is unschedulable.
    pub parse_error: Option<String>,
    /// `status.startTime`, else `metadata.creationTimestamp` (what preemption orders victims by).
    pub start: Option<bosun_core::k8s_openapi::jiff::Timestamp>,
}

impl PodInfo {
    /// Parses a pod.
    pub fn new(pod: Arc<Pod>) -> Arc<Self> {
        let meta = &pod.metadata;
        let namespace = meta.namespace.clone().unwrap_or_else(|| "default".to_owned());
        let name = meta.name.clone().unwrap_or_default();
        let uid = meta.uid.clone().filter(|u| !u.is_empty()).unwrap_or_else(|| format!("{namespace}/{name}"));
        let (mut requests, non_zero) = pod_requests(&pod);
        requests.allowed_pod_number = 1;
        let mut errors = Vec::new();
        let spec = pod.spec.as_ref();
        let mut host_ports = Vec::new();
        let mut images = Vec::new();
        for c in spec.iter().flat_map(|s| s.containers.iter().chain(s.init_containers.iter().flatten())) {
            if let Some(img) = &c.image {
                images.push(normalized_image(img));
            }
            for p in c.ports.iter().flatten() {
                if let Some(hp) = p.host_port.filter(|p| *p > 0) {
                    host_ports.push(HostPort {
                        ip: p.host_ip.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| "0.0.0.0".to_owned()),
                        protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
                        port: hp,
                    });
                }
            }
        }
        let affinity = spec.and_then(|s| s.affinity.as_ref());
        let node_aff = affinity.and_then(|a| a.node_affinity.as_ref());
        let required_node_affinity = RequiredNodeAffinity::new(
            spec.and_then(|s| s.node_selector.as_ref()),
            node_aff.and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref()),
        );
        let preferred_node_affinity = node_aff
            .and_then(|n| n.preferred_during_scheduling_ignored_during_execution.as_ref())
            .into_iter()
            .flatten()
            .filter(|p| p.weight != 0)
            .map(|p| (i64::from(p.weight), NodeTerm::parse(&p.preference)))
            .collect();
        let mut terms = |list: Option<&Vec<PodAffinityTerm>>| -> Vec<AffinityTerm> {
            list.into_iter().flatten().filter_map(|t| AffinityTerm::parse(t, &namespace).map_err(|e| errors.push(e)).ok()).collect()
        };
        let pa = affinity.and_then(|a| a.pod_affinity.as_ref());
        let paa = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
        let required_affinity = terms(pa.and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref()));
        let required_anti_affinity = terms(paa.and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref()));
        let mut weighted = |list: Option<&Vec<bosun_core::k8s_openapi::api::core::v1::WeightedPodAffinityTerm>>| {
            list.into_iter()
                .flatten()
                .filter_map(|w| {
                    AffinityTerm::parse(&w.pod_affinity_term, &namespace)
                        .map(|term| WeightedAffinityTerm { weight: i64::from(w.weight), term })
                        .map_err(|e| errors.push(e))
                        .ok()
                })
                .collect::<Vec<_>>()
        };
        let preferred_affinity = weighted(pa.and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref()));
        let preferred_anti_affinity = weighted(paa.and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref()));
        let labels = meta.labels.as_ref();
        let mut spread_constraints = Vec::new();
        for c in spec.and_then(|s| s.topology_spread_constraints.as_ref()).into_iter().flatten() {
            let base = match c.label_selector.as_ref().map(LabelSelector::from_api).transpose() {
                Ok(s) => s,
                Err(e) => {
                    errors.push(e.to_string());
                    continue;
                }
            };
            // matchLabelKeys: AND the pod's own values of those keys into the selector.
            let mut reqs: Vec<Requirement> = base.as_ref().map(|s| s.requirements().to_vec()).unwrap_or_default();
            for key in c.match_label_keys.iter().flatten() {
                if let Some(v) = labels.and_then(|l| l.get(key)) {
                    reqs.push(Requirement { key: key.clone(), operator: Operator::In, values: vec![v.clone()] });
                }
            }
            let selector = if base.is_none() {
                // A nil selector matches nothing.
                LabelSelector::parse("!bosun.io/nil-selector,bosun.io/nil-selector").unwrap_or_default()
            } else {
                let text = reqs.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
                LabelSelector::parse(&text).unwrap_or_default()
            };
            spread_constraints.push(SpreadConstraint {
                max_skew: i64::from(c.max_skew.max(1)),
                topology_key: c.topology_key.clone(),
                when_unsatisfiable: if c.when_unsatisfiable == "ScheduleAnyway" {
                    WhenUnsatisfiable::ScheduleAnyway
                } else {
                    WhenUnsatisfiable::DoNotSchedule
                },
                selector,
                min_domains: c.min_domains.map(i64::from).filter(|_| c.when_unsatisfiable != "ScheduleAnyway"),
                honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
                honor_node_taints: c.node_taints_policy.as_deref() == Some("Honor"),
            });
        }
        let info = Self {
            namespace,
            name,
            uid,
            priority: spec.and_then(|s| s.priority).unwrap_or(0),
            requests,
            non_zero,
            host_ports,
            tolerations: spec.and_then(|s| s.tolerations.clone()).unwrap_or_default(),
            required_node_affinity,
            preferred_node_affinity,
            required_affinity,
            required_anti_affinity,
            preferred_affinity,
            preferred_anti_affinity,
            spread_constraints,
            images,
            scheduling_gates: spec.and_then(|s| s.scheduling_gates.as_ref()).into_iter().flatten().map(|g| g.name.clone()).collect(),
            scheduler_name: spec.and_then(|s| s.scheduler_name.clone()).unwrap_or_else(|| crate::DEFAULT_SCHEDULER_NAME.to_owned()),
            node_name: spec.and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()),
            nominated_node_name: pod.status.as_ref().and_then(|s| s.nominated_node_name.clone()).filter(|n| !n.is_empty()),
            preempt_never: spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never"),
            parse_error: (!errors.is_empty()).then(|| errors.join("; ")),
            start: pod.status.as_ref().and_then(|s| s.start_time.as_ref()).or(pod.metadata.creation_timestamp.as_ref()).map(|t| t.0),
            pod,
        };
        Arc::new(info)
    }

    /// This pod's info for a newer version of the pod that differs in nothing the info is
    /// derived from but `spec.nodeName` (typically the bound version of a pod the scheduler
    /// assumed): the parsed parts are copied instead of parsed again. `None` when anything else
    /// [`PodInfo::new`] reads changed.
    pub fn rebound(&self, pod: Arc<Pod>) -> Option<Arc<Self>> {
        let (a, b) = (&self.pod.metadata, &pod.metadata);
        let same_meta = a.uid == b.uid
            && a.name == b.name
            && a.namespace == b.namespace
            && a.labels == b.labels
            && a.deletion_timestamp == b.deletion_timestamp
            && a.creation_timestamp == b.creation_timestamp;
        // Keep in step with what `new` reads from the spec and status.
        let (sa, sb) = (self.pod.spec.as_ref(), pod.spec.as_ref());
        let same_spec = match (sa, sb) {
            (Some(a), Some(b)) => {
                a.priority == b.priority
                    && a.scheduler_name == b.scheduler_name
                    && a.preemption_policy == b.preemption_policy
                    && a.containers == b.containers
                    && a.init_containers == b.init_containers
                    && a.overhead == b.overhead
                    && a.affinity == b.affinity
                    && a.node_selector == b.node_selector
                    && a.tolerations == b.tolerations
                    && a.topology_spread_constraints == b.topology_spread_constraints
                    && a.scheduling_gates == b.scheduling_gates
            }
            (None, None) => true,
            _ => false,
        };
        let status = |p: &Pod| p.status.as_ref().map(|s| (s.start_time.clone(), s.nominated_node_name.clone())).unwrap_or_default();
        if !same_meta || !same_spec || status(&self.pod) != status(&pod) {
            return None;
        }
        let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty());
        Some(Arc::new(Self { pod, node_name, ..self.clone() }))
    }

    /// The pod's labels (empty when it has none).
    pub fn labels(&self) -> &BTreeMap<String, String> {
        self.pod.metadata.labels.as_ref().unwrap_or(&EMPTY_LABELS)
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether the pod asks for nothing a [`crate::node_info::NodeSummary`] cannot add up: no host
    /// ports, no extended resources, no pod (anti-)affinity terms.
    pub fn is_plain(&self) -> bool {
        self.host_ports.is_empty() && self.requests.scalar.is_empty() && !self.has_affinity()
    }

    /// True when the pod has any pod affinity or anti-affinity term.
    pub fn has_affinity(&self) -> bool {
        !(self.required_affinity.is_empty()
            && self.required_anti_affinity.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti_affinity.is_empty())
    }

    /// Whether the pod has terms that score other pods' nodes (required affinity, preferred terms).
    pub fn has_scoring_affinity(&self) -> bool {
        !(self.required_affinity.is_empty() && self.preferred_affinity.is_empty() && self.preferred_anti_affinity.is_empty())
    }

    /// True when the pod has required anti-affinity terms.
    pub fn has_required_anti_affinity(&self) -> bool {
        !self.required_anti_affinity.is_empty()
    }

    /// When the pod started (or was created), for preemption's tie-breaks.
    pub fn start_time(&self) -> Option<bosun_core::k8s_openapi::jiff::Timestamp> {
        self.start
    }

    /// True when the pod is being deleted.
    pub fn is_terminating(&self) -> bool {
        self.pod.metadata.deletion_timestamp.is_some()
    }
}

/// See [`PodInfo::equivalent`].
pub(crate) fn same_class(a: &Pod, b: &Pod) -> bool {
    std::ptr::eq(a, b) || (a.metadata.namespace == b.metadata.namespace && a.metadata.labels == b.metadata.labels && a.spec == b.spec)
}

/// Normalises an image name as the kubelet reports it (`nginx` → `docker.io/library/nginx:latest`).
pub fn normalized_image(image: &str) -> String {
    let (name, tagged) = match image.rsplit_once('/') {
        Some((_, last)) => (image.to_owned(), last.contains(':') || last.contains('@')),
        None => (image.to_owned(), image.contains(':') || image.contains('@')),
    };
    let name = if tagged { name } else { format!("{name}:latest") };
    let first = name.split('/').next().unwrap_or_default();
    let has_registry = name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_registry {
        name
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    }
}

/// Whether a toleration tolerates a taint (empty key with `Exists` tolerates everything).
pub fn tolerates(t: &Toleration, taint: &bosun_core::k8s_openapi::api::core::v1::Taint) -> bool {
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    let op = t.operator.as_deref().unwrap_or("Equal");
    if key.is_empty() {
        return op == "Exists";
    }
    if key != taint.key {
        return false;
    }
    match op {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_normalise_like_the_kubelet_reports_them() {
        assert_eq!(normalized_image("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(normalized_image("nginx:1.25"), "docker.io/library/nginx:1.25");
        assert_eq!(normalized_image("me/app"), "docker.io/me/app:latest");
        assert_eq!(normalized_image("registry.k8s.io/pause:3.9"), "registry.k8s.io/pause:3.9");
    }

    #[test]
    fn a_version_that_only_got_its_node_shares_the_parsed_parts_and_any_other_change_is_parsed_again() {
        use crate::plugins::testutil::pod;
        let assumed = pod("p").req("250m", "1Gi").labels(&[("app", "web")]).toleration("k", "v", "NoSchedule").info();
        let bound = |f: &dyn Fn(&mut Pod)| {
            let mut p = (*assumed.pod).clone();
            p.spec.get_or_insert_with(Default::default).node_name = Some("n1".into());
            p.metadata.resource_version = Some("7".into());
            f(&mut p);
            Arc::new(p)
        };
        let same = assumed.rebound(bound(&|_| {})).unwrap_or_else(|| panic!("only the node changed"));
        assert_eq!(same.node_name.as_deref(), Some("n1"));
        assert_eq!(same.pod.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!((same.requests.milli_cpu, same.tolerations.len()), (250, 1));
        assert!(assumed.node_name.is_none());
        let changed: [&dyn Fn(&mut Pod); 4] = [
            &|p| p.metadata.labels = None,
            &|p| {
                let epoch = bosun_core::k8s_openapi::jiff::Timestamp::UNIX_EPOCH;
                p.metadata.deletion_timestamp = Some(bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(epoch));
            },
            &|p| p.spec.get_or_insert_with(Default::default).priority = Some(5),
            &|p| p.spec.get_or_insert_with(Default::default).containers[0].resources = None,
        ];
        for (i, f) in changed.iter().enumerate() {
            assert!(assumed.rebound(bound(*f)).is_none(), "change {i}");
        }
    }

    #[test]
    fn host_ports_on_the_wildcard_address_conflict_with_any_ip() {
        let a = HostPort { ip: "0.0.0.0".into(), protocol: "TCP".into(), port: 80 };
        let b = HostPort { ip: "10.0.0.1".into(), protocol: "TCP".into(), port: 80 };
        let c = HostPort { ip: "10.0.0.1".into(), protocol: "UDP".into(), port: 80 };
        assert!(a.conflicts(&b));
        assert!(!b.conflicts(&c));
    }
}
