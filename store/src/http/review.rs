//! Access and identity reviews: `kubectl auth can-i` (`SelfSubjectAccessReview`, and
//! `SelfSubjectRulesReview` for `--list`; `SubjectAccessReview` and `LocalSubjectAccessReview`
//! for other subjects) and `kubectl auth whoami` (`SelfSubjectReview`).
//!
//! The server authenticates no one and has no authorizer: every request is anonymous and allowed,
//! as kube-apiserver with anonymous authentication and the `AlwaysAllow` authorizer answers. The
//! reviews say exactly that: every access is allowed (with a reason naming why), the rules are
//! `*` on everything, and the requester is `system:anonymous` unless it impersonates someone
//! (`kubectl --as`), whose identity is then echoed as kube-apiserver's impersonation filter does.

use super::body::{self, Body, Output};
use super::router::ResourcePath;
use bosun_core::{ApiResource, Error, FieldError, Result};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};

const AUTHORIZATION: &str = "authorization.k8s.io";
const AUTHENTICATION: &str = "authentication.k8s.io";

/// Why every access review is allowed.
const ALLOWED_REASON: &str = "bosun runs no authorizer: every request is allowed";

/// The review kinds: (group, plural, kind, namespaced).
const REVIEWS: &[(&str, &str, &str, bool)] = &[
    (AUTHORIZATION, "selfsubjectaccessreviews", "SelfSubjectAccessReview", false),
    (AUTHORIZATION, "selfsubjectrulesreviews", "SelfSubjectRulesReview", false),
    (AUTHORIZATION, "subjectaccessreviews", "SubjectAccessReview", false),
    (AUTHORIZATION, "localsubjectaccessreviews", "LocalSubjectAccessReview", true),
    (AUTHENTICATION, "selfsubjectreviews", "SelfSubjectReview", false),
];

/// The review resources, for discovery (create only, like kube-apiserver's).
pub(crate) fn resources() -> Vec<ApiResource> {
    REVIEWS
        .iter()
        .map(|(group, plural, kind, namespaced)| {
            let mut r = ApiResource::new(*group, "v1", *kind, *plural, *namespaced);
            r.verbs = vec!["create".into()];
            r
        })
        .collect()
}

/// The review kind a path names, if it names one.
pub(crate) fn kind_of(path: &ResourcePath) -> Option<&'static str> {
    if path.version != "v1" || path.name.is_some() {
        return None;
    }
    REVIEWS
        .iter()
        .find(|(group, plural, _, namespaced)| path.group == *group && path.plural == *plural && path.namespace.is_some() == *namespaced)
        .map(|(_, _, kind, _)| *kind)
}

/// Answers a review: `POST` only, 201 with the review and its status.
pub(crate) async fn handle(req: Request<Incoming>, path: &ResourcePath, kind: &str, max_body: usize) -> Result<Response<Body>> {
    if req.method() != Method::POST {
        return Err(Error::method_not_allowed(format!("{} is not supported on resources of kind \"{kind}\"", req.method())));
    }
    let output = match body::negotiate(req.headers())? {
        Output::Yaml => Output::Yaml,
        _ => Output::Json,
    };
    let headers = req.headers().clone();
    let media = body::media_type(req.headers());
    let bytes = body::read_limited(req.into_body(), max_body).await?;
    let review = body::decode(&bytes, body::body_format(&media)?)?;
    let answered = answer(kind, review, path.namespace.as_deref(), &headers)?;
    Ok(body::respond(StatusCode::CREATED, &answered, output))
}

/// The review with its status filled in.
fn answer(kind: &str, mut review: Value, namespace: Option<&str>, headers: &HeaderMap) -> Result<Value> {
    let group = if kind == "SelfSubjectReview" { AUTHENTICATION } else { AUTHORIZATION };
    let api_version = format!("{group}/v1");
    match (review.get("apiVersion").and_then(Value::as_str), review.get("kind").and_then(Value::as_str)) {
        (Some(v), _) if v != api_version => {
            return Err(Error::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
        (_, Some(k)) if k != kind => {
            return Err(Error::bad_request(format!("the kind in the body ({k}) does not match the kind of the request ({kind})")));
        }
        _ => {}
    }
    let Some(map) = review.as_object_mut() else {
        return Err(Error::bad_request(format!("the body of a {kind} must be a JSON object")));
    };
    map.insert("apiVersion".into(), api_version.into());
    map.insert("kind".into(), kind.into());
    let metadata = map.entry("metadata").or_insert_with(|| json!({}));
    if let Some(m) = metadata.as_object_mut() {
        m.entry("creationTimestamp").or_insert(Value::Null);
    }
    let spec = map.get("spec").cloned().unwrap_or_else(|| json!({}));
    let status = match kind {
        "SelfSubjectReview" => json!({"userInfo": requester(headers)}),
        "SelfSubjectRulesReview" => rules(kind, &spec)?,
        "SelfSubjectAccessReview" => access(kind, &spec, None)?,
        "SubjectAccessReview" => {
            let has_subject = ["user", "uid"].iter().any(|k| spec.get(k).and_then(Value::as_str).is_some_and(|s| !s.is_empty()))
                || spec.get("groups").and_then(Value::as_array).is_some_and(|g| !g.is_empty());
            if !has_subject {
                return Err(invalid(kind, vec![FieldError::invalid("spec.user", "", "at least one of user or group must be specified")]));
            }
            access(kind, &spec, None)?
        }
        _ => access(kind, &spec, namespace)?,
    };
    map.insert("status".into(), status);
    Ok(review)
}

fn invalid(kind: &str, errs: Vec<FieldError>) -> Error {
    let group = if kind == "SelfSubjectReview" { AUTHENTICATION } else { AUTHORIZATION };
    Error::invalid(group, kind, "", errs)
}

/// An access review's status: allowed, after the checks kube-apiserver makes of the spec.
fn access(kind: &str, spec: &Value, namespace: Option<&str>) -> Result<Value> {
    let resource = spec.get("resourceAttributes").filter(|v| v.is_object());
    let non_resource = spec.get("nonResourceAttributes").filter(|v| v.is_object());
    let mut errs = Vec::new();
    match (resource, non_resource) {
        (Some(_), Some(_)) => {
            errs.push(FieldError::invalid("spec.nonResourceAttributes", "", "cannot be specified in combination with resourceAttributes"))
        }
        (None, None) => {
            errs.push(FieldError::invalid(
                "spec.resourceAttributes",
                "",
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            ));
        }
        _ => {}
    }
    if let Some(ns) = namespace {
        let asked = resource.and_then(|r| r.get("namespace")).and_then(Value::as_str).unwrap_or("");
        if asked != ns {
            errs.push(FieldError::invalid("spec.resourceAttributes.namespace", asked, "must match metadata.namespace"));
        }
        if non_resource.is_some() {
            errs.push(FieldError::invalid("spec.nonResourceAttributes", "", "disallowed on this kind of request"));
        }
    }
    if !errs.is_empty() {
        return Err(invalid(kind, errs));
    }
    Ok(json!({"allowed": true, "reason": ALLOWED_REASON}))
}

/// A rules review's status: everything, on every resource and non-resource URL.
fn rules(kind: &str, spec: &Value) -> Result<Value> {
    if spec.get("namespace").and_then(Value::as_str).is_none_or(str::is_empty) {
        return Err(invalid(kind, vec![FieldError::required("spec.namespace")]));
    }
    Ok(json!({
        "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
        "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
        "incomplete": false,
    }))
}

/// Who is asking: the impersonated user when the request impersonates (`Impersonate-User`,
/// `Impersonate-Group`, `Impersonate-Uid`, `Impersonate-Extra-*`), else the anonymous user.
fn requester(headers: &HeaderMap) -> Value {
    let values = |name: &str| -> Vec<String> {
        headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).filter(|v| !v.is_empty()).collect()
    };
    let Some(user) = values("impersonate-user").into_iter().next() else {
        return json!({"username": "system:anonymous", "groups": ["system:unauthenticated"]});
    };
    let mut groups = values("impersonate-group");
    // kube-apiserver adds the authenticated group to an impersonated user (not to anonymous).
    if user != "system:anonymous" && !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".to_owned());
    }
    let mut info = Map::new();
    info.insert("username".into(), user.into());
    if let Some(uid) = values("impersonate-uid").into_iter().next() {
        info.insert("uid".into(), uid.into());
    }
    info.insert("groups".into(), groups.into());
    let mut extra = Map::new();
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix("impersonate-extra-") else { continue };
        if let Ok(v) = value.to_str() {
            let entry = extra.entry(percent_decode(key)).or_insert_with(|| Value::Array(Vec::new()));
            if let Some(list) = entry.as_array_mut() {
                list.push(v.into());
            }
        }
    }
    if !extra.is_empty() {
        info.insert("extra".into(), Value::Object(extra));
    }
    Value::Object(info)
}

/// Extra keys travel percent-encoded in header names.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()))
            .flatten();
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn an_access_review_is_allowed_and_echoes_its_spec() -> Result<()> {
        let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"verb": "delete", "resource": "pods", "namespace": "default"}}});
        let out = answer("SelfSubjectAccessReview", review, None, &HeaderMap::new())?;
        assert_eq!(out["status"]["allowed"], true);
        assert_eq!(out["spec"]["resourceAttributes"]["verb"], "delete");
        Ok(())
    }

    #[test]
    fn an_access_review_needs_exactly_one_kind_of_attributes() {
        let neither = json!({"spec": {}});
        assert_eq!(answer("SelfSubjectAccessReview", neither, None, &HeaderMap::new()).err().map(|e| e.code()), Some(422));
        let both = json!({"spec": {"resourceAttributes": {"verb": "get"}, "nonResourceAttributes": {"path": "/healthz", "verb": "get"}}});
        assert_eq!(answer("SelfSubjectAccessReview", both, None, &HeaderMap::new()).err().map(|e| e.code()), Some(422));
        let other_ns = json!({"spec": {"user": "jane", "resourceAttributes": {"verb": "get", "namespace": "b"}}});
        assert_eq!(answer("LocalSubjectAccessReview", other_ns, Some("a"), &HeaderMap::new()).err().map(|e| e.code()), Some(422));
        let nobody = json!({"spec": {"resourceAttributes": {"verb": "get"}}});
        assert_eq!(answer("SubjectAccessReview", nobody, None, &HeaderMap::new()).err().map(|e| e.code()), Some(422));
    }

    #[test]
    fn whoami_is_anonymous_unless_impersonating() -> Result<()> {
        let out = answer("SelfSubjectReview", json!({}), None, &HeaderMap::new())?;
        assert_eq!(out["status"]["userInfo"], json!({"username": "system:anonymous", "groups": ["system:unauthenticated"]}));
        assert_eq!(out["apiVersion"], "authentication.k8s.io/v1");
        let mut h = HeaderMap::new();
        h.insert("impersonate-user", HeaderValue::from_static("jane"));
        h.append("impersonate-group", HeaderValue::from_static("devs"));
        h.insert("impersonate-extra-scopes%2Fx", HeaderValue::from_static("a"));
        let out = answer("SelfSubjectReview", json!({}), None, &h)?;
        assert_eq!(
            out["status"]["userInfo"],
            json!({"username": "jane", "groups": ["devs", "system:authenticated"], "extra": {"scopes/x": ["a"]}})
        );
        Ok(())
    }

    #[test]
    fn the_rules_are_everything() -> Result<()> {
        let out = answer("SelfSubjectRulesReview", json!({"spec": {"namespace": "default"}}), None, &HeaderMap::new())?;
        assert_eq!(out["status"]["resourceRules"][0]["verbs"], json!(["*"]));
        assert_eq!(out["status"]["incomplete"], false);
        Ok(())
    }
}
