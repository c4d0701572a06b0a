//! A container's environment: literal values with `$(VAR)` expansion, `configMapKeyRef`,
//! `secretKeyRef`, `fieldRef` (downward API), `resourceFieldRef` and `envFrom`.

use bosun_core::k8s_openapi::api::core::v1::{ConfigMap, Container, ObjectFieldSelector, Pod, ResourceFieldSelector, Secret};
use bosun_core::{Api, Client, Quantity};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Why an environment could not be built (shown as `CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvError {
    /// A referenced ConfigMap or Secret does not exist.
    #[error("{kind} {name:?} not found")]
    ObjectNotFound {
        /// `configmap` or `secret`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// A referenced key is missing.
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    KeyNotFound {
        /// `ConfigMap` or `Secret`.
        kind: &'static str,
        /// The namespace.
        namespace: String,
        /// The object.
        name: String,
        /// The key.
        key: String,
    },
    /// A field path the downward API does not offer.
    #[error("unsupported field path {0:?}")]
    UnsupportedField(String),
    /// Reading the object failed.
    #[error("reading {0}: {1}")]
    Api(String, String),
}

/// Caches ConfigMaps and Secrets read during one sync.
pub struct ObjectCache {
    client: Arc<dyn Client>,
    namespace: String,
    config_maps: HashMap<String, Option<ConfigMap>>,
    secrets: HashMap<String, Option<Secret>>,
}

impl ObjectCache {
    /// A cache for one namespace.
    pub fn new(client: Arc<dyn Client>, namespace: &str) -> Self {
        Self { client, namespace: namespace.to_string(), config_maps: HashMap::new(), secrets: HashMap::new() }
    }

    /// A ConfigMap's entries (data and binaryData), `None` when it does not exist.
    pub async fn config_map(&mut self, name: &str) -> Result<Option<BTreeMap<String, Vec<u8>>>, EnvError> {
        if !self.config_maps.contains_key(name) {
            let got = Api::<ConfigMap>::namespaced(self.client.clone(), &self.namespace)
                .get_opt(name)
                .await
                .map_err(|e| EnvError::Api(format!("configmap {name}"), e.to_string()))?;
            self.config_maps.insert(name.to_string(), got);
        }
        Ok(self.config_maps.get(name).and_then(|c| c.as_ref()).map(|cm| {
            let mut out: BTreeMap<String, Vec<u8>> = cm.data.iter().flatten().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect();
            out.extend(cm.binary_data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())));
            out
        }))
    }

    /// A Secret's entries, `None` when it does not exist.
    pub async fn secret(&mut self, name: &str) -> Result<Option<BTreeMap<String, Vec<u8>>>, EnvError> {
        if !self.secrets.contains_key(name) {
            let got = Api::<Secret>::namespaced(self.client.clone(), &self.namespace)
                .get_opt(name)
                .await
                .map_err(|e| EnvError::Api(format!("secret {name}"), e.to_string()))?;
            self.secrets.insert(name.to_string(), got);
        }
        Ok(self.secrets.get(name).and_then(|c| c.as_ref()).map(|s| {
            let mut out: BTreeMap<String, Vec<u8>> = s.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect();
            out.extend(s.string_data.iter().flatten().map(|(k, v)| (k.clone(), v.clone().into_bytes())));
            out
        }))
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

/// Reads a downward-API field of a pod (`metadata.name`, `metadata.labels['app']`, `status.podIP`, ...).
pub fn field_value(pod: &Pod, sel: &ObjectFieldSelector, pod_ip: Option<&str>, host_ip: &str) -> Result<String, EnvError> {
    let path = sel.field_path.as_str();
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let subscript = |prefix: &str| -> Option<String> {
        let rest = path.strip_prefix(prefix)?.strip_prefix("['")?.strip_suffix("']")?;
        Some(rest.to_string())
    };
    if let Some(key) = subscript("metadata.labels") {
        return Ok(meta.labels.as_ref().and_then(|l| l.get(&key)).cloned().unwrap_or_default());
    }
    if let Some(key) = subscript("metadata.annotations") {
        return Ok(meta.annotations.as_ref().and_then(|l| l.get(&key)).cloned().unwrap_or_default());
    }
    let map = |m: &Option<BTreeMap<String, String>>| m.iter().flatten().map(|(k, v)| format!("{k}={v:?}")).collect::<Vec<_>>().join("\n");
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => map(&meta.labels),
        "metadata.annotations" => map(&meta.annotations),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_string(),
        "status.podIP" | "status.podIPs" => pod_ip.unwrap_or(host_ip).to_string(),
        _ => return Err(EnvError::UnsupportedField(path.to_string())),
    })
}

/// Reads a resource field (`limits.cpu`, `requests.memory`, ...) of a container, in `divisor` units.
pub fn resource_value(
    pod: &Pod,
    own: &Container,
    sel: &ResourceFieldSelector,
    node_allocatable: &BTreeMap<String, Quantity>,
) -> Result<String, EnvError> {
    let container = match sel.container_name.as_deref() {
        Some(name) if !name.is_empty() => pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()))
            .find(|c| c.name == name)
            .unwrap_or(own),
        _ => own,
    };
    let (section, resource) = sel.resource.split_once('.').ok_or_else(|| EnvError::UnsupportedField(sel.resource.clone()))?;
    let res = container.resources.as_ref();
    let list = match section {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        "requests" => res.and_then(|r| r.requests.as_ref()),
        _ => return Err(EnvError::UnsupportedField(sel.resource.clone())),
    };
    let raw = list.and_then(|l| l.get(resource)).map(|q| q.0.clone());
    // An unset limit reads as the node's allocatable, as in the kubelet.
    let value = match raw {
        Some(q) => Quantity::parse(&q).map_err(|_| EnvError::UnsupportedField(sel.resource.clone()))?,
        None if section == "limits" => node_allocatable.get(resource).copied().unwrap_or(Quantity::ZERO),
        None => Quantity::ZERO,
    };
    let divisor = sel.divisor.as_ref().and_then(|d| Quantity::parse(&d.0).ok()).filter(|d| d.milli_value() > 0);
    let milli = i128::from(value.milli_value());
    let div_milli = i128::from(divisor.map_or(1000, |d| d.milli_value()));
    // Round up, as the kubelet does.
    let out = (milli + div_milli - 1) / div_milli;
    Ok(out.to_string())
}

/// Expands `$(VAR)` references to earlier variables; `$$(VAR)` stays literal as `$(VAR)`, unknown
/// references stay as they are.
pub fn expand(input: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let bytes = input.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            if bytes[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if bytes[i + 1] == b'('
                && let Some(end) = input[i + 2..].find(')')
            {
                let name = &input[i + 2..i + 2 + end];
                match vars.get(name) {
                    Some(v) => out.push_str(v),
                    None => out.push_str(&input[i..i + 3 + end]),
                }
                i += 3 + end;
                continue;
            }
        }
        let ch = input[i..].chars().next().unwrap_or('\0');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Everything needed to resolve a container's environment.
pub struct EnvContext<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// Its IP, once it has one.
    pub pod_ip: Option<&'a str>,
    /// The node's IP.
    pub host_ip: &'a str,
    /// The node's allocatable resources (for unset limits).
    pub allocatable: &'a BTreeMap<String, Quantity>,
}

/// Builds a container's environment in Kubernetes order: `envFrom` sources, then `env` entries
/// (which override), with `$(VAR)` expansion against what came before.
pub async fn resolve(container: &Container, cx: &EnvContext<'_>, cache: &mut ObjectCache) -> Result<Vec<(String, String)>, EnvError> {
    let mut ordered: Vec<(String, String)> = Vec::new();
    let mut vars: HashMap<String, String> = HashMap::new();
    let set = |ordered: &mut Vec<(String, String)>, vars: &mut HashMap<String, String>, k: String, v: String| {
        if let Some(slot) = ordered.iter_mut().find(|(name, _)| *name == k) {
            slot.1 = v.clone();
        } else {
            ordered.push((k.clone(), v.clone()));
        }
        vars.insert(k, v);
    };
    let ns = cache.namespace().to_string();
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (entries, optional, kind, name) = if let Some(cm) = &from.config_map_ref {
            (cache.config_map(&cm.name).await?, cm.optional.unwrap_or(false), "configmap", cm.name.clone())
        } else if let Some(s) = &from.secret_ref {
            (cache.secret(&s.name).await?, s.optional.unwrap_or(false), "secret", s.name.clone())
        } else {
            continue;
        };
        match entries {
            Some(entries) => {
                for (k, v) in entries {
                    set(&mut ordered, &mut vars, format!("{prefix}{k}"), String::from_utf8_lossy(&v).into_owned());
                }
            }
            None if optional => {}
            None => return Err(EnvError::ObjectNotFound { kind, name }),
        }
    }
    for env in container.env.iter().flatten() {
        let value = if let Some(src) = &env.value_from {
            if let Some(r) = &src.config_map_key_ref {
                let optional = r.optional.unwrap_or(false);
                match cache.config_map(&r.name).await? {
                    Some(data) => match data.get(&r.key) {
                        Some(v) => String::from_utf8_lossy(v).into_owned(),
                        None if optional => continue,
                        None => {
                            return Err(EnvError::KeyNotFound {
                                kind: "ConfigMap",
                                namespace: ns,
                                name: r.name.clone(),
                                key: r.key.clone(),
                            });
                        }
                    },
                    None if optional => continue,
                    None => return Err(EnvError::ObjectNotFound { kind: "configmap", name: r.name.clone() }),
                }
            } else if let Some(r) = &src.secret_key_ref {
                let optional = r.optional.unwrap_or(false);
                match cache.secret(&r.name).await? {
                    Some(data) => match data.get(&r.key) {
                        Some(v) => String::from_utf8_lossy(v).into_owned(),
                        None if optional => continue,
                        None => {
                            return Err(EnvError::KeyNotFound { kind: "Secret", namespace: ns, name: r.name.clone(), key: r.key.clone() });
                        }
                    },
                    None if optional => continue,
                    None => return Err(EnvError::ObjectNotFound { kind: "secret", name: r.name.clone() }),
                }
            } else if let Some(f) = &src.field_ref {
                field_value(cx.pod, f, cx.pod_ip, cx.host_ip)?
            } else if let Some(r) = &src.resource_field_ref {
                resource_value(cx.pod, container, r, cx.allocatable)?
            } else {
                String::new()
            }
        } else {
            expand(env.value.as_deref().unwrap_or_default(), &vars)
        };
        set(&mut ordered, &mut vars, env.name.clone(), value);
    }
    Ok(ordered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let vars = HashMap::from([("A".to_string(), "x".to_string())]);
        assert_eq!(expand("$(A)-$(B)", &vars), "x-$(B)");
        assert_eq!(expand("$$(A) costs $5", &vars), "$(A) costs $5");
        assert_eq!(expand("unterminated $(A", &vars), "unterminated $(A");
        assert_eq!(expand("héllo $(A)", &vars), "héllo x");
    }
}
