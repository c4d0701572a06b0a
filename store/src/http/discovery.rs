//! Discovery: `/version`, `/api`, `/apis`, `/api/v1`, `/apis/{g}/{v}`, in the legacy format and as
//! aggregated discovery (`apidiscovery.k8s.io/v2`) when the client asks for it.

use bosun_core::ApiResource;
use http::HeaderMap;
use serde_json::{Value, json};

/// The Kubernetes version bosun speaks for (what kubectl 1.32 expects of its server).
pub(crate) const KUBE_MAJOR: &str = "1";
/// The minor version.
pub(crate) const KUBE_MINOR: &str = "32";

/// The `/version` body.
pub(crate) fn version() -> Value {
    json!({
        "major": KUBE_MAJOR,
        "minor": KUBE_MINOR,
        "gitVersion": format!("v{KUBE_MAJOR}.{KUBE_MINOR}.0-bosun.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if std::env::consts::ARCH == "x86_64" { "amd64" } else { std::env::consts::ARCH }),
    })
}

/// The content type of an aggregated discovery response.
pub(crate) const AGGREGATED_CONTENT_TYPE: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// True when `Accept` asks for aggregated discovery v2.
pub(crate) fn wants_aggregated(headers: &HeaderMap) -> bool {
    let accept = headers.get(http::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    accept.split(',').any(|part| {
        let params: Vec<&str> = part.split(';').map(str::trim).collect();
        params.contains(&"as=APIGroupDiscoveryList") && params.contains(&"v=v2") && params.contains(&"g=apidiscovery.k8s.io")
    })
}

/// Named groups in the order their first resource appears, each with its versions.
fn groups(resources: &[ApiResource]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for r in resources.iter().filter(|r| !r.group.is_empty()) {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) => {
                if !versions.iter().any(|v| *v == r.version) {
                    versions.push(r.version.to_string());
                }
            }
            None => out.push((r.group.to_string(), vec![r.version.to_string()])),
        }
    }
    out
}

/// `/api` as `APIVersions`.
pub(crate) fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_entry(group: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions.iter().map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v})).collect();
    json!({"name": group, "versions": versions, "preferredVersion": versions.first().cloned().unwrap_or(Value::Null)})
}

/// `/apis` as `APIGroupList`.
pub(crate) fn group_list(resources: &[ApiResource]) -> Value {
    let groups: Vec<Value> = groups(resources).iter().map(|(g, v)| group_entry(g, v)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}` as `APIGroup`, if the group is served.
pub(crate) fn group(resources: &[ApiResource], name: &str) -> Option<Value> {
    groups(resources).iter().find(|(g, _)| g == name).map(|(g, v)| {
        let mut entry = group_entry(g, v);
        if let Some(map) = entry.as_object_mut() {
            map.insert("kind".into(), "APIGroup".into());
            map.insert("apiVersion".into(), "v1".into());
        }
        entry
    })
}

/// What a subresource answers: its group, version, kind and verbs.
fn subresource_kind(r: &ApiResource, sub: &str) -> (String, String, String, &'static [&'static str]) {
    let same = || (r.group.to_string(), r.version.to_string(), r.kind.to_string());
    let (group, version, kind) = match sub {
        "scale" => ("autoscaling".into(), "v1".into(), "Scale".into()),
        "eviction" => ("policy".into(), "v1".into(), "Eviction".into()),
        "binding" => (String::new(), "v1".into(), "Binding".into()),
        "token" => ("authentication.k8s.io".into(), "v1".into(), "TokenRequest".into()),
        "exec" => (String::new(), "v1".into(), "PodExecOptions".into()),
        "attach" => (String::new(), "v1".into(), "PodAttachOptions".into()),
        "portforward" => (String::new(), "v1".into(), "PodPortForwardOptions".into()),
        "proxy" => (String::new(), "v1".into(), format!("{}ProxyOptions", r.kind)),
        _ => same(),
    };
    let verbs: &'static [&'static str] = match sub {
        "status" | "scale" | "ephemeralcontainers" | "resize" => &["get", "patch", "update"],
        "binding" | "eviction" | "token" => &["create"],
        "log" => &["get"],
        "exec" | "attach" | "portforward" => &["create", "get"],
        "proxy" => &["create", "delete", "get", "head", "options", "patch", "update"],
        "finalize" => &["update"],
        _ => &["get"],
    };
    (group, version, kind, verbs)
}

/// `/api/v1` or `/apis/{g}/{v}` as `APIResourceList`, if the group-version is served.
pub(crate) fn resource_list(resources: &[ApiResource], group: &str, version: &str) -> Option<Value> {
    let served: Vec<&ApiResource> = resources.iter().filter(|r| r.group == group && r.version == version).collect();
    if served.is_empty() {
        return None;
    }
    let mut list = Vec::new();
    for r in served {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if let Some(map) = entry.as_object_mut() {
            if !r.short_names.is_empty() {
                map.insert("shortNames".into(), json!(r.short_names));
            }
            if !r.categories.is_empty() {
                map.insert("categories".into(), json!(r.categories));
            }
        }
        list.push(entry);
        for sub in &r.subresources {
            let (g, v, kind, verbs) = subresource_kind(r, sub);
            let mut entry = json!({
                "name": format!("{}/{sub}", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if let Some(map) = entry.as_object_mut().filter(|_| g != r.group || v != r.version) {
                map.insert("group".into(), g.into());
                map.insert("version".into(), v.into());
            }
            list.push(entry);
        }
    }
    let group_version = if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": list}))
}

fn discovery_resource(r: &ApiResource) -> Value {
    let subresources: Vec<Value> = r
        .subresources
        .iter()
        .map(|sub| {
            let (g, v, kind, verbs) = subresource_kind(r, sub);
            json!({"subresource": sub, "responseKind": {"group": g, "version": v, "kind": kind}, "verbs": verbs})
        })
        .collect();
    let mut entry = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs,
    });
    if let Some(map) = entry.as_object_mut() {
        if !r.short_names.is_empty() {
            map.insert("shortNames".into(), json!(r.short_names));
        }
        if !r.categories.is_empty() {
            map.insert("categories".into(), json!(r.categories));
        }
        if !subresources.is_empty() {
            map.insert("subresources".into(), Value::Array(subresources));
        }
    }
    entry
}

fn discovery_group(resources: &[ApiResource], group: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| {
            let list: Vec<Value> = resources.iter().filter(|r| r.group == group && r.version == *v).map(discovery_resource).collect();
            json!({"version": v, "resources": list, "freshness": "Current"})
        })
        .collect();
    let metadata = if group.is_empty() { json!({"creationTimestamp": null}) } else { json!({"name": group, "creationTimestamp": null}) };
    json!({"metadata": metadata, "versions": versions})
}

/// `/api` (core) or `/apis` (named groups) as an aggregated `APIGroupDiscoveryList`.
pub(crate) fn aggregated(resources: &[ApiResource], core: bool) -> Value {
    let items: Vec<Value> = if core {
        if resources.iter().any(|r| r.group.is_empty()) { vec![discovery_group(resources, "", &["v1".to_owned()])] } else { vec![] }
    } else {
        groups(resources).iter().map(|(g, v)| discovery_group(resources, g, v)).collect()
    };
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_core::resource::builtin_resources;

    #[test]
    fn deployments_scale_is_an_autoscaling_scale() {
        let list = resource_list(builtin_resources(), "apps", "v1").unwrap_or_default();
        let items = list["resources"].as_array().cloned().unwrap_or_default();
        let scale = items.iter().find(|r| r["name"] == "deployments/scale").cloned().unwrap_or_default();
        assert_eq!(
            (scale["group"].as_str(), scale["version"].as_str(), scale["kind"].as_str()),
            (Some("autoscaling"), Some("v1"), Some("Scale"))
        );
        let deploy = items.iter().find(|r| r["name"] == "deployments").cloned().unwrap_or_default();
        assert_eq!(deploy["shortNames"], json!(["deploy"]));
        assert_eq!(deploy["categories"], json!(["all"]));
        assert_eq!(deploy["namespaced"], json!(true));
    }

    #[test]
    fn the_core_group_lists_pods_and_their_log() {
        let list = resource_list(builtin_resources(), "", "v1").unwrap_or_default();
        assert_eq!(list["groupVersion"], "v1");
        let names: Vec<&str> = list["resources"].as_array().into_iter().flatten().filter_map(|r| r["name"].as_str()).collect();
        assert!(names.contains(&"pods") && names.contains(&"pods/log") && names.contains(&"namespaces"));
        assert!(resource_list(builtin_resources(), "nope", "v1").is_none());
    }

    #[test]
    fn groups_list_each_group_once() {
        let list = group_list(builtin_resources());
        let names: Vec<&str> = list["groups"].as_array().into_iter().flatten().filter_map(|g| g["name"].as_str()).collect();
        assert_eq!(names.iter().filter(|n| **n == "apps").count(), 1);
        assert!(!names.contains(&""));
        let agg = aggregated(builtin_resources(), false);
        assert_eq!(agg["items"].as_array().map(Vec::len), Some(names.len()));
    }
}
