//! The route table compiled from Ingresses: host and path matching with the Ingress API's precedence,
//! IngressClass selection, and the TLS certificates of `spec.tls`.

use super::tls::{CertStore, certified_key_from_secret};
use bosun_core::ObjectKey;
use bosun_core::k8s_openapi::api::core::v1::Secret;
use bosun_core::k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The annotation that marks an IngressClass as the cluster default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The deprecated annotation naming an Ingress's class.
pub const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// How a service backend names its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRef {
    /// By number (the service port, not the target port).
    Number(u16),
    /// By name.
    Name(String),
}

/// Where matching requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// The service's namespace (the Ingress's).
    pub namespace: String,
    /// The service's name.
    pub service: String,
    /// The service port.
    pub port: PortRef,
}

/// How a path rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// The whole path, case-sensitively.
    Exact,
    /// Path elements (split by `/`), so `/foo` matches `/foo/bar` but not `/foobar`.
    /// `ImplementationSpecific` is treated as `Prefix`.
    Prefix,
}

#[derive(Debug, Clone)]
struct PathRule {
    kind: PathKind,
    path: String,
    backend: Backend,
}

impl PathRule {
    /// The matched length when it matches (longer wins; Exact beats Prefix at equal length).
    fn score(&self, path: &str) -> Option<(usize, bool)> {
        match self.kind {
            PathKind::Exact => (path == self.path).then_some((self.path.len(), true)),
            PathKind::Prefix => {
                let prefix = self.path.trim_end_matches('/');
                if prefix.is_empty() {
                    return Some((0, false));
                }
                let rest = path.strip_prefix(prefix)?;
                (rest.is_empty() || rest.starts_with('/')).then_some((prefix.len(), false))
            }
        }
    }
}

/// Which Ingresses and IngressClasses a controller owns.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct ClassConfig {
    /// The `spec.controller` of IngressClasses this controller implements.
    pub controller: String,
    /// Also serve Ingresses that name no class at all even without a default IngressClass.
    pub claim_unclassed: bool,
}

impl Default for ClassConfig {
    fn default() -> Self {
        Self { controller: "bosun.dev/ingress".into(), claim_unclassed: false }
    }
}

impl ClassConfig {
    /// The controller name IngressClasses must carry (default `bosun.dev/ingress`).
    pub fn controller(mut self, controller: impl Into<String>) -> Self {
        self.controller = controller.into();
        self
    }

    /// Serve Ingresses without a class even when none of our classes is the default (default false).
    pub fn claim_unclassed(mut self, yes: bool) -> Self {
        self.claim_unclassed = yes;
        self
    }
}

/// A compiled, immutable route table; swapped whole on every change so that in-flight requests and
/// open connections keep working while new requests see the new routes.
#[derive(Debug, Default)]
pub struct RouteTable {
    exact_hosts: BTreeMap<String, Vec<PathRule>>,
    /// Wildcard hosts (`*.example.com`) by suffix (`.example.com`).
    wildcard_hosts: Vec<(String, Vec<PathRule>)>,
    any_host: Vec<PathRule>,
    default_backend: Option<Backend>,
    /// TLS certificates by host.
    pub(crate) certs: CertStore,
    /// Ingresses that were served, for status and debugging.
    pub ingresses: Vec<ObjectKey>,
}

fn backend_of(namespace: &str, b: &IngressBackend) -> Option<Backend> {
    let svc = b.service.as_ref()?;
    let port = svc.port.as_ref()?;
    let port = match (&port.name, port.number) {
        (Some(name), _) if !name.is_empty() => PortRef::Name(name.clone()),
        (_, Some(n)) => PortRef::Number(u16::try_from(n).ok()?),
        _ => return None,
    };
    Some(Backend { namespace: namespace.to_owned(), service: svc.name.clone(), port })
}

/// Whether an Ingress belongs to us given the IngressClasses present.
pub fn is_ours(ing: &Ingress, classes: &[Arc<IngressClass>], config: &ClassConfig) -> bool {
    let ours = |c: &&Arc<IngressClass>| c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(config.controller.as_str());
    let class_name = ing
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.clone())
        .or_else(|| ing.metadata.annotations.as_ref().and_then(|a| a.get(CLASS_ANNOTATION).cloned()));
    match class_name {
        Some(name) => classes.iter().filter(ours).any(|c| c.metadata.name.as_deref() == Some(name.as_str())),
        None => {
            config.claim_unclassed
                || classes.iter().filter(ours).any(|c| {
                    c.metadata.annotations.as_ref().and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION)).map(String::as_str) == Some("true")
                })
        }
    }
}

impl RouteTable {
    /// Compiles the Ingresses this controller owns. Rules of several Ingresses for the same host merge;
    /// the oldest Ingress's default backend wins (ties by namespace/name).
    pub fn build(
        ingresses: &[Arc<Ingress>],
        classes: &[Arc<IngressClass>],
        secrets: &dyn Fn(&str, &str) -> Option<Arc<Secret>>,
        config: &ClassConfig,
    ) -> Self {
        let mut ours: Vec<&Arc<Ingress>> = ingresses.iter().filter(|i| is_ours(i, classes, config)).collect();
        ours.sort_by(|a, b| {
            (a.metadata.creation_timestamp.as_ref().map(|t| t.0), &a.metadata.namespace, &a.metadata.name).cmp(&(
                b.metadata.creation_timestamp.as_ref().map(|t| t.0),
                &b.metadata.namespace,
                &b.metadata.name,
            ))
        });
        let mut table = RouteTable::default();
        for ing in ours {
            let ns = ing.metadata.namespace.as_deref().unwrap_or("default");
            table.ingresses.push(ObjectKey::new(Some(ns), ing.metadata.name.clone().unwrap_or_default()));
            let Some(spec) = &ing.spec else { continue };
            if table.default_backend.is_none() {
                table.default_backend = spec.default_backend.as_ref().and_then(|b| backend_of(ns, b));
            }
            for rule in spec.rules.iter().flatten() {
                let paths: Vec<PathRule> = rule
                    .http
                    .iter()
                    .flat_map(|h| h.paths.iter())
                    .filter_map(|p| {
                        let kind = if p.path_type == "Exact" { PathKind::Exact } else { PathKind::Prefix };
                        Some(PathRule { kind, path: p.path.clone().unwrap_or_else(|| "/".into()), backend: backend_of(ns, &p.backend)? })
                    })
                    .collect();
                match rule.host.as_deref().map(str::to_ascii_lowercase) {
                    None => table.any_host.extend(paths),
                    Some(h) if h.is_empty() => table.any_host.extend(paths),
                    Some(h) => match h.strip_prefix('*') {
                        Some(suffix) => match table.wildcard_hosts.iter_mut().find(|(s, _)| s == suffix) {
                            Some((_, v)) => v.extend(paths),
                            None => table.wildcard_hosts.push((suffix.to_owned(), paths)),
                        },
                        None => table.exact_hosts.entry(h).or_default().extend(paths),
                    },
                }
            }
            for tls in spec.tls.iter().flatten() {
                let Some(name) = tls.secret_name.as_deref() else { continue };
                let Some(secret) = secrets(ns, name) else {
                    tracing::warn!(ingress = %ObjectKey::of(&**ing), secret = name, "tls secret missing");
                    continue;
                };
                match certified_key_from_secret(&secret) {
                    Ok(key) => {
                        for host in tls.hosts.iter().flatten() {
                            table.certs.insert(host, key.clone());
                        }
                        table.certs.set_fallback(key);
                    }
                    Err(error) => tracing::warn!(ingress = %ObjectKey::of(&**ing), secret = name, %error, "bad tls secret"),
                }
            }
        }
        table
    }

    /// The backend for a request's host (without port) and path: exact host over wildcard host over
    /// rules without host, then the longest matching path (Exact over Prefix at equal length), then the
    /// default backend.
    pub fn route(&self, host: &str, path: &str) -> Option<&Backend> {
        let host = host.to_ascii_lowercase();
        if let Some(b) = self.exact_hosts.get(&host).and_then(|r| best(r, path)) {
            return Some(b);
        }
        // A wildcard covers exactly one label: `*.foo.com` matches `bar.foo.com`, not `baz.bar.foo.com`.
        let wild = self
            .wildcard_hosts
            .iter()
            .find(|(suffix, _)| host.strip_suffix(suffix.as_str()).is_some_and(|label| !label.is_empty() && !label.contains('.')));
        if let Some(b) = wild.and_then(|(_, r)| best(r, path)) {
            return Some(b);
        }
        best(&self.any_host, path).or(self.default_backend.as_ref())
    }
}

/// The best path rule (the first of equals: rules of older Ingresses come first).
fn best<'a>(rules: &'a [PathRule], path: &str) -> Option<&'a Backend> {
    rules.iter().filter_map(|r| r.score(path).map(|s| (s, r))).min_by(|(a, _), (b, _)| b.cmp(a)).map(|(_, r)| &r.backend)
}
