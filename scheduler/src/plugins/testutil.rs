//! Pod and node builders for the plugin tests.

use crate::framework::{CycleState, Handle, Status};
use crate::node_info::{NodeInfo, NodeStatic};
use crate::pod_info::PodInfo;
use crate::snapshot::Snapshot;
use bosun_core::k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, Node, NodeSpec, NodeStatus, Pod, PodAffinity, PodAffinityTerm, PodAntiAffinity, PodSpec,
    ResourceRequirements, Taint, Toleration, TopologySpreadConstraint,
};
use bosun_core::k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::BTreeMap;
use std::sync::Arc;

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

pub fn selector(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector { match_labels: Some(labels(pairs)), match_expressions: None }
}

#[derive(Clone)]
pub struct PodBuilder(pub Pod);

pub fn pod(name: &str) -> PodBuilder {
    let mut p = Pod::default();
    p.metadata.name = Some(name.into());
    p.metadata.namespace = Some("default".into());
    p.metadata.uid = Some(format!("uid-{name}"));
    p.spec = Some(PodSpec { containers: vec![Container { name: "c".into(), ..Default::default() }], ..Default::default() });
    PodBuilder(p)
}

impl PodBuilder {
    fn spec(&mut self) -> &mut PodSpec {
        self.0.spec.get_or_insert_with(Default::default)
    }
    pub fn ns(mut self, ns: &str) -> Self {
        self.0.metadata.namespace = Some(ns.into());
        self
    }
    pub fn labels(mut self, pairs: &[(&str, &str)]) -> Self {
        self.0.metadata.labels = Some(labels(pairs));
        self
    }
    pub fn req(mut self, cpu: &str, mem: &str) -> Self {
        let mut r = BTreeMap::new();
        if !cpu.is_empty() {
            r.insert("cpu".to_owned(), Quantity(cpu.into()));
        }
        if !mem.is_empty() {
            r.insert("memory".to_owned(), Quantity(mem.into()));
        }
        self.spec().containers[0].resources = Some(ResourceRequirements { requests: Some(r), ..Default::default() });
        self
    }
    pub fn extended(mut self, name: &str, n: &str) -> Self {
        let c = &mut self.spec().containers[0];
        let res = c.resources.get_or_insert_with(Default::default);
        res.requests.get_or_insert_with(Default::default).insert(name.to_owned(), Quantity(n.into()));
        self
    }
    pub fn node(mut self, node: &str) -> Self {
        self.spec().node_name = Some(node.into());
        self
    }
    pub fn priority(mut self, p: i32) -> Self {
        self.spec().priority = Some(p);
        self
    }
    pub fn host_port(mut self, port: i32) -> Self {
        self.spec().containers[0].ports = Some(vec![ContainerPort { container_port: port, host_port: Some(port), ..Default::default() }]);
        self
    }
    pub fn node_selector(mut self, pairs: &[(&str, &str)]) -> Self {
        self.spec().node_selector = Some(labels(pairs));
        self
    }
    pub fn toleration(mut self, key: &str, value: &str, effect: &str) -> Self {
        self.spec().tolerations.get_or_insert_with(Vec::new).push(Toleration {
            key: Some(key.into()),
            operator: Some("Equal".into()),
            value: Some(value.into()),
            effect: Some(effect.into()),
            ..Default::default()
        });
        self
    }
    pub fn image(mut self, image: &str) -> Self {
        self.spec().containers[0].image = Some(image.into());
        self
    }
    fn affinity(&mut self) -> &mut Affinity {
        self.spec().affinity.get_or_insert_with(Default::default)
    }
    pub fn anti_affinity(mut self, sel: &[(&str, &str)], key: &str) -> Self {
        let term = PodAffinityTerm { label_selector: Some(selector(sel)), topology_key: key.into(), ..Default::default() };
        let a = self.affinity().pod_anti_affinity.get_or_insert_with(PodAntiAffinity::default);
        a.required_during_scheduling_ignored_during_execution.get_or_insert_with(Vec::new).push(term);
        self
    }
    pub fn affinity_term(mut self, sel: &[(&str, &str)], key: &str) -> Self {
        let term = PodAffinityTerm { label_selector: Some(selector(sel)), topology_key: key.into(), ..Default::default() };
        let a = self.affinity().pod_affinity.get_or_insert_with(PodAffinity::default);
        a.required_during_scheduling_ignored_during_execution.get_or_insert_with(Vec::new).push(term);
        self
    }
    pub fn raw_affinity_term(mut self, term: PodAffinityTerm, anti: bool) -> Self {
        if anti {
            let a = self.affinity().pod_anti_affinity.get_or_insert_with(PodAntiAffinity::default);
            a.required_during_scheduling_ignored_during_execution.get_or_insert_with(Vec::new).push(term);
        } else {
            let a = self.affinity().pod_affinity.get_or_insert_with(PodAffinity::default);
            a.required_during_scheduling_ignored_during_execution.get_or_insert_with(Vec::new).push(term);
        }
        self
    }
    pub fn spread(mut self, max_skew: i32, key: &str, hard: bool, sel: &[(&str, &str)]) -> Self {
        self.spec().topology_spread_constraints.get_or_insert_with(Vec::new).push(TopologySpreadConstraint {
            max_skew,
            topology_key: key.into(),
            when_unsatisfiable: if hard { "DoNotSchedule" } else { "ScheduleAnyway" }.into(),
            label_selector: Some(selector(sel)),
            ..Default::default()
        });
        self
    }
    pub fn spread_raw(mut self, c: TopologySpreadConstraint) -> Self {
        self.spec().topology_spread_constraints.get_or_insert_with(Vec::new).push(c);
        self
    }
    pub fn with(mut self, f: impl FnOnce(&mut Pod)) -> Self {
        f(&mut self.0);
        self
    }
    pub fn info(self) -> Arc<PodInfo> {
        PodInfo::new(Arc::new(self.0))
    }
}

#[derive(Clone)]
pub struct NodeBuilder(pub Node);

pub fn node(name: &str) -> NodeBuilder {
    let mut n = Node::default();
    n.metadata.name = Some(name.into());
    n.metadata.labels = Some(labels(&[("kubernetes.io/hostname", name)]));
    let mut alloc = BTreeMap::new();
    alloc.insert("cpu".to_owned(), Quantity("4".into()));
    alloc.insert("memory".to_owned(), Quantity("32Gi".into()));
    alloc.insert("pods".to_owned(), Quantity("110".into()));
    n.status = Some(NodeStatus { allocatable: Some(alloc), ..Default::default() });
    NodeBuilder(n)
}

impl NodeBuilder {
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.0.metadata.labels.get_or_insert_with(Default::default).insert(k.into(), v.into());
        self
    }
    pub fn alloc(mut self, name: &str, q: &str) -> Self {
        if let Some(a) = self.0.status.as_mut().and_then(|s| s.allocatable.as_mut()) {
            a.insert(name.into(), Quantity(q.into()));
        }
        self
    }
    pub fn taint(mut self, key: &str, value: &str, effect: &str) -> Self {
        let spec = self.0.spec.get_or_insert_with(NodeSpec::default);
        spec.taints.get_or_insert_with(Vec::new).push(Taint {
            key: key.into(),
            value: Some(value.into()),
            effect: effect.into(),
            ..Default::default()
        });
        self
    }
    pub fn unschedulable(mut self) -> Self {
        self.0.spec.get_or_insert_with(NodeSpec::default).unschedulable = Some(true);
        self
    }
    pub fn with(mut self, f: impl FnOnce(&mut Node)) -> Self {
        f(&mut self.0);
        self
    }
    pub fn info(self, pods: &[Arc<PodInfo>]) -> NodeInfo {
        NodeInfo::with_pods(NodeStatic::new(Arc::new(self.0)), pods.iter().cloned())
    }
}

/// Runs PreFilter then Filter of `plugin` for `pod` on every node of `snap`; returns the statuses by node name.
pub fn filter_all<P>(plugin: &P, pod: &PodInfo, snap: &Snapshot) -> Vec<(String, Status)>
where
    P: crate::framework::PreFilterPlugin + crate::framework::FilterPlugin,
{
    let handle = Handle::default();
    let mut state = CycleState::new();
    let (_, s) = plugin.pre_filter(&mut state, pod, snap, &handle);
    let mut out: Vec<(String, Status)> = snap
        .nodes()
        .iter()
        .map(|n| {
            let st = if s.is_skip() {
                Status::success()
            } else if !s.is_success() {
                s.clone()
            } else {
                plugin.filter(&state, pod, n)
            };
            (n.name.to_string(), st)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The names of the nodes that passed.
pub fn passing(results: &[(String, Status)]) -> Vec<String> {
    results.iter().filter(|(_, s)| s.is_success()).map(|(n, _)| n.clone()).collect()
}
