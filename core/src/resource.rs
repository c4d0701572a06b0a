//! Resource descriptors: what a kind is called on the wire and how it is served, and the built-in kinds.

use std::borrow::Cow;
use std::sync::LazyLock;

/// A string that is free to clone for built-in kinds and owned for custom ones.
pub type Name = Cow<'static, str>;

/// How a kind is served: its group/version/kind, its URL plural and scope, and what discovery says of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApiResource {
    /// API group; empty for the core group.
    pub group: Name,
    /// API version within the group, e.g. `v1`.
    pub version: Name,
    /// Kind, e.g. `Deployment`.
    pub kind: Name,
    /// URL path segment, e.g. `deployments`.
    pub plural: Name,
    /// Lower-case singular name, e.g. `deployment`.
    pub singular: Name,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Short names kubectl accepts, e.g. `deploy`.
    pub short_names: Vec<Name>,
    /// Verbs the resource supports.
    pub verbs: Vec<Name>,
    /// Categories, e.g. `all`.
    pub categories: Vec<Name>,
    /// Subresources served below each object, e.g. `status`, `scale`.
    pub subresources: Vec<Name>,
}

/// The verbs of an ordinary read-write resource.
pub const ALL_VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

impl ApiResource {
    /// A descriptor with the usual defaults: singular is the lower-case kind, all verbs, no short names.
    pub fn new(group: impl Into<Name>, version: impl Into<Name>, kind: impl Into<Name>, plural: impl Into<Name>, namespaced: bool) -> Self {
        let kind = kind.into();
        Self {
            group: group.into(),
            version: version.into(),
            singular: Cow::Owned(kind.to_lowercase()),
            kind,
            plural: plural.into(),
            namespaced,
            short_names: Vec::new(),
            verbs: ALL_VERBS.iter().map(|v| Cow::Borrowed(*v)).collect(),
            categories: Vec::new(),
            subresources: Vec::new(),
        }
    }

    /// `group/version`, or just `version` for the core group: the `apiVersion` of objects.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }

    /// The URL prefix of the group-version: `/api/v1` or `/apis/{group}/{version}`.
    pub fn group_version_path(&self) -> String {
        if self.group.is_empty() { format!("/api/{}", self.version) } else { format!("/apis/{}/{}", self.group, self.version) }
    }

    /// The collection URL, e.g. `/apis/apps/v1/namespaces/default/deployments`.
    pub fn collection_path(&self, namespace: Option<&str>) -> String {
        match namespace.filter(|_| self.namespaced) {
            Some(ns) => format!("{}/namespaces/{ns}/{}", self.group_version_path(), self.plural),
            None => format!("{}/{}", self.group_version_path(), self.plural),
        }
    }

    /// `plural.group` (or just plural for the core group), as in messages and RBAC.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() { self.plural.to_string() } else { format!("{}.{}", self.plural, self.group) }
    }

    /// True if the object's `apiVersion` and `kind` name this resource.
    pub fn matches_type(&self, api_version: &str, kind: &str) -> bool {
        kind == self.kind && api_version == self.api_version()
    }

    /// True if `name` is the plural, singular, kind or a short name (case-insensitive), as kubectl resolves it.
    pub fn answers_to(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        name == self.plural
            || name == self.singular
            || name == self.kind.to_ascii_lowercase()
            || self.short_names.iter().any(|s| *s == name)
    }

    /// Whether the resource has this subresource.
    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.iter().any(|s| s == sub)
    }

    /// Whether the resource supports this verb.
    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }
}

struct Spec {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    all: bool,
    sub: &'static [&'static str],
}

const fn spec(group: &'static str, version: &'static str, kind: &'static str, plural: &'static str, namespaced: bool) -> Spec {
    Spec { group, version, kind, plural, namespaced, short: &[], all: false, sub: &[] }
}

impl Spec {
    const fn short(mut self, short: &'static [&'static str]) -> Self {
        self.short = short;
        self
    }
    const fn all(mut self) -> Self {
        self.all = true;
        self
    }
    const fn sub(mut self, sub: &'static [&'static str]) -> Self {
        self.sub = sub;
        self
    }
}

const NS: bool = true;
const CLUSTER: bool = false;

/// The kinds bosun serves out of the box, with what kubectl's discovery expects of them.
const BUILTINS: &[Spec] = &[
    spec("", "v1", "Namespace", "namespaces", CLUSTER).short(&["ns"]).sub(&["status", "finalize"]),
    spec("", "v1", "Node", "nodes", CLUSTER).short(&["no"]).sub(&["status", "proxy"]),
    spec("", "v1", "Pod", "pods", NS).short(&["po"]).all().sub(&[
        "status",
        "binding",
        "eviction",
        "log",
        "exec",
        "attach",
        "portforward",
        "ephemeralcontainers",
    ]),
    spec("", "v1", "Service", "services", NS).short(&["svc"]).all().sub(&["status", "proxy"]),
    spec("", "v1", "Endpoints", "endpoints", NS).short(&["ep"]),
    spec("", "v1", "ConfigMap", "configmaps", NS).short(&["cm"]),
    spec("", "v1", "Secret", "secrets", NS),
    spec("", "v1", "ServiceAccount", "serviceaccounts", NS).short(&["sa"]).sub(&["token"]),
    spec("", "v1", "Event", "events", NS).short(&["ev"]),
    spec("", "v1", "PersistentVolume", "persistentvolumes", CLUSTER).short(&["pv"]).sub(&["status"]),
    spec("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", NS).short(&["pvc"]).sub(&["status"]),
    spec("", "v1", "ReplicationController", "replicationcontrollers", NS).short(&["rc"]).all().sub(&["status", "scale"]),
    spec("apps", "v1", "Deployment", "deployments", NS).short(&["deploy"]).all().sub(&["status", "scale"]),
    spec("apps", "v1", "ReplicaSet", "replicasets", NS).short(&["rs"]).all().sub(&["status", "scale"]),
    spec("apps", "v1", "StatefulSet", "statefulsets", NS).short(&["sts"]).all().sub(&["status", "scale"]),
    spec("apps", "v1", "DaemonSet", "daemonsets", NS).short(&["ds"]).all().sub(&["status"]),
    spec("apps", "v1", "ControllerRevision", "controllerrevisions", NS),
    spec("batch", "v1", "Job", "jobs", NS).all().sub(&["status"]),
    spec("batch", "v1", "CronJob", "cronjobs", NS).short(&["cj"]).all().sub(&["status"]),
    spec("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", NS).short(&["hpa"]).all().sub(&["status"]),
    spec("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", NS).short(&["pdb"]).sub(&["status"]),
    spec("networking.k8s.io", "v1", "Ingress", "ingresses", NS).short(&["ing"]).sub(&["status"]),
    spec("networking.k8s.io", "v1", "IngressClass", "ingressclasses", CLUSTER),
    spec("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", NS),
    spec("events.k8s.io", "v1", "Event", "events", NS).short(&["ev"]),
    spec("coordination.k8s.io", "v1", "Lease", "leases", NS),
    spec("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", CLUSTER).short(&["pc"]),
    spec("storage.k8s.io", "v1", "StorageClass", "storageclasses", CLUSTER).short(&["sc"]),
    spec("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", CLUSTER)
        .short(&["crd", "crds"])
        .sub(&["status"]),
    spec("rbac.authorization.k8s.io", "v1", "Role", "roles", NS),
    spec("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", CLUSTER),
    spec("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", NS),
    spec("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", CLUSTER),
];

static REGISTRY: LazyLock<Vec<ApiResource>> = LazyLock::new(|| {
    BUILTINS
        .iter()
        .map(|s| {
            let mut r = ApiResource::new(s.group, s.version, s.kind, s.plural, s.namespaced);
            r.short_names = s.short.iter().map(|n| Cow::Borrowed(*n)).collect();
            r.subresources = s.sub.iter().map(|n| Cow::Borrowed(*n)).collect();
            if s.all {
                r.categories = vec![Cow::Borrowed("all")];
            }
            r
        })
        .collect()
});

/// Every built-in kind bosun serves.
pub fn builtin_resources() -> &'static [ApiResource] {
    &REGISTRY
}

/// The built-in resource of this group, version and kind.
pub fn builtin(group: &str, version: &str, kind: &str) -> Option<&'static ApiResource> {
    REGISTRY.iter().find(|r| r.group == group && r.version == version && r.kind == kind)
}

/// The built-in resource an `apiVersion` and `kind` name.
pub fn builtin_for(api_version: &str, kind: &str) -> Option<&'static ApiResource> {
    let (group, version) = split_api_version(api_version);
    builtin(group, version, kind)
}

/// Splits `apps/v1` into (`apps`, `v1`) and `v1` into (``, `v1`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_holds_every_kind_the_core_issue_lists() {
        for kind in [
            "Namespace",
            "Node",
            "Pod",
            "Service",
            "Endpoints",
            "EndpointSlice",
            "ConfigMap",
            "Secret",
            "ServiceAccount",
            "Event",
            "Lease",
            "ReplicaSet",
            "Deployment",
            "StatefulSet",
            "DaemonSet",
            "Job",
            "CronJob",
            "HorizontalPodAutoscaler",
            "Ingress",
            "PersistentVolume",
            "PersistentVolumeClaim",
            "PriorityClass",
            "CustomResourceDefinition",
            "Role",
            "ClusterRole",
            "RoleBinding",
            "ClusterRoleBinding",
        ] {
            assert!(builtin_resources().iter().any(|r| r.kind == kind), "{kind} missing");
        }
    }

    #[test]
    fn paths_follow_the_kubernetes_layout() {
        let deploy = builtin("apps", "v1", "Deployment").cloned().unwrap_or_else(|| unreachable!());
        assert_eq!(deploy.collection_path(Some("default")), "/apis/apps/v1/namespaces/default/deployments");
        assert_eq!(deploy.api_version(), "apps/v1");
        let node = builtin_for("v1", "Node").cloned().unwrap_or_else(|| unreachable!());
        assert_eq!(node.collection_path(Some("ignored")), "/api/v1/nodes");
        assert!(node.answers_to("no") && node.answers_to("Nodes") && node.answers_to("node"));
        assert!(!node.answers_to("nodez"));
    }

    #[test]
    fn group_versions_split_into_group_and_version() {
        assert_eq!(split_api_version("apps/v1"), ("apps", "v1"));
        assert_eq!(split_api_version("v1"), ("", "v1"));
    }
}
