//! URL paths and query strings: what a request names.

use std::collections::HashMap;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/version`.
    Version,
    /// `/healthz`, `/livez`, `/readyz` (and their `/…/<check>` children).
    Health,
    /// `/metrics`.
    Metrics,
    /// `/api`: the core group's versions.
    CoreVersions,
    /// `/apis`: every named group.
    Groups,
    /// `/apis/{group}`.
    Group(String),
    /// `/api/v1` or `/apis/{group}/{version}`: an `APIResourceList`.
    Resources { group: String, version: String },
    /// `/openapi/v3`.
    OpenApiV3Root,
    /// `/openapi/v3/api/v1` or `/openapi/v3/apis/{group}/{version}`.
    OpenApiV3 { group: String, version: String },
    /// `/openapi/v2`.
    OpenApiV2,
    /// Below a resource.
    Resource(ResourcePath),
    /// Nothing is served here.
    Unknown,
}

/// A path below a group-version: a collection, an object or an object's subresource.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ResourcePath {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub plural: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// The deprecated `/watch/` prefix.
    pub legacy_watch: bool,
}

/// Subresources of namespaces, which make `/api/v1/namespaces/{name}/{sub}` ambiguous.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// Parses a request path.
pub(crate) fn route(path: &str) -> Route {
    let segments: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(percent_decode).collect();
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    match s.as_slice() {
        ["version"] => Route::Version,
        ["healthz" | "livez" | "readyz", ..] => Route::Health,
        ["metrics"] => Route::Metrics,
        ["api"] => Route::CoreVersions,
        ["apis"] => Route::Groups,
        ["apis", group] => Route::Group((*group).to_owned()),
        ["api", version] => Route::Resources { group: String::new(), version: (*version).to_owned() },
        ["apis", group, version] => Route::Resources { group: (*group).to_owned(), version: (*version).to_owned() },
        ["openapi", "v3"] => Route::OpenApiV3Root,
        ["openapi", "v3", "api", version] => Route::OpenApiV3 { group: String::new(), version: (*version).to_owned() },
        ["openapi", "v3", "apis", group, version] => Route::OpenApiV3 { group: (*group).to_owned(), version: (*version).to_owned() },
        ["openapi", "v2"] | ["swagger.json"] => Route::OpenApiV2,
        ["api", version, rest @ ..] => resource_path("", version, rest),
        ["apis", group, version, rest @ ..] => resource_path(group, version, rest),
        _ => Route::Unknown,
    }
}

fn resource_path(group: &str, version: &str, rest: &[&str]) -> Route {
    let mut path = ResourcePath { group: group.to_owned(), version: version.to_owned(), ..ResourcePath::default() };
    let mut rest = rest;
    if let ["watch", tail @ ..] = rest {
        path.legacy_watch = true;
        rest = tail;
    }
    if let ["namespaces", ns, tail @ ..] = rest {
        let namespace_subresource = group.is_empty() && tail.len() == 1 && NAMESPACE_SUBRESOURCES.contains(&tail[0]);
        if !tail.is_empty() && !namespace_subresource {
            path.namespace = Some((*ns).to_owned());
            rest = tail;
        }
    }
    match rest {
        [plural] => path.plural = (*plural).to_owned(),
        [plural, name] => {
            path.plural = (*plural).to_owned();
            path.name = Some((*name).to_owned());
        }
        [plural, name, sub] => {
            path.plural = (*plural).to_owned();
            path.name = Some((*name).to_owned());
            path.subresource = Some((*sub).to_owned());
        }
        _ => return Route::Unknown,
    }
    Route::Resource(path)
}

/// Decodes `%XX` escapes (and `+` as space in query strings when `plus` is set).
fn decode(s: &str, plus: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' if plus => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_decode(s: &str) -> String {
    decode(s, false)
}

/// The query string's parameters (the last value wins for repeated keys, except `command`, which
/// exec repeats and [`Query::all`] returns whole).
#[derive(Debug, Clone, Default)]
pub(crate) struct Query {
    pairs: Vec<(String, String)>,
    last: HashMap<String, String>,
}

impl Query {
    pub(crate) fn parse(query: Option<&str>) -> Self {
        let mut q = Self::default();
        for part in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let (k, v) = (decode(k, true), decode(v, true));
            q.last.insert(k.clone(), v.clone());
            q.pairs.push((k, v));
        }
        q
    }

    /// The value of a parameter.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.last.get(key).map(String::as_str)
    }

    /// A non-empty value.
    pub(crate) fn non_empty(&self, key: &str) -> Option<String> {
        self.get(key).filter(|v| !v.is_empty()).map(str::to_owned)
    }

    /// Every value of a repeated parameter.
    pub(crate) fn all(&self, key: &str) -> Vec<String> {
        self.pairs.iter().filter(|(k, _)| k == key).map(|(_, v)| v.clone()).collect()
    }

    /// A boolean parameter as kube-apiserver's parameter codec reads one: false when absent,
    /// `0` or `false` (any case), true for any other value, the empty one included.
    pub(crate) fn flag(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"))
    }

    /// An unsigned number; a malformed one is a 400.
    pub(crate) fn number<T: std::str::FromStr>(&self, key: &str) -> bosun_core::Result<Option<T>> {
        match self.get(key).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| bosun_core::Error::bad_request(format!("invalid value {v:?} for {key}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(path: &str) -> ResourcePath {
        match route(path) {
            Route::Resource(p) => p,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn namespaced_paths_split_into_their_parts() {
        let p = res("/apis/apps/v1/namespaces/default/deployments/web/scale");
        assert_eq!(
            (p.group.as_str(), p.version.as_str(), p.namespace.as_deref(), p.plural.as_str()),
            ("apps", "v1", Some("default"), "deployments")
        );
        assert_eq!((p.name.as_deref(), p.subresource.as_deref()), (Some("web"), Some("scale")));
        let p = res("/api/v1/namespaces/kube-system/pods");
        assert_eq!((p.namespace.as_deref(), p.plural.as_str(), p.name), (Some("kube-system"), "pods", None));
    }

    #[test]
    fn namespaces_themselves_are_cluster_scoped() {
        let p = res("/api/v1/namespaces/demo");
        assert_eq!((p.namespace, p.plural.as_str(), p.name.as_deref()), (None, "namespaces", Some("demo")));
        let p = res("/api/v1/namespaces/demo/finalize");
        assert_eq!((p.namespace, p.name.as_deref(), p.subresource.as_deref()), (None, Some("demo"), Some("finalize")));
        let p = res("/api/v1/namespaces");
        assert_eq!((p.plural.as_str(), p.name), ("namespaces", None));
    }

    #[test]
    fn discovery_and_openapi_paths_are_recognised() {
        assert_eq!(route("/api"), Route::CoreVersions);
        assert_eq!(route("/apis/apps/v1"), Route::Resources { group: "apps".into(), version: "v1".into() });
        assert_eq!(route("/api/v1"), Route::Resources { group: String::new(), version: "v1".into() });
        assert_eq!(route("/openapi/v3/apis/apps/v1"), Route::OpenApiV3 { group: "apps".into(), version: "v1".into() });
        assert_eq!(route("/livez/ping"), Route::Health);
        assert_eq!(route("/nothing/here"), Route::Unknown);
    }

    #[test]
    fn escapes_are_decoded() {
        let p = res("/apis/rbac.authorization.k8s.io/v1/clusterroles/system%3Aadmin");
        assert_eq!(p.name.as_deref(), Some("system:admin"));
        let q = Query::parse(Some("labelSelector=app%3Dweb%2Ctier+in+%28a%29&watch=1&command=ls&command=-l"));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert!(q.flag("watch"));
        assert_eq!(q.all("command"), vec!["ls", "-l"]);
    }
}
