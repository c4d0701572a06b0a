//! The resource handlers: verbs on collections, objects and subresources, mapped onto
//! [`bosun_core::Client`] calls.

use super::body::{self, Body, Format, Output};
use super::catalog::ResourceCatalog;
use super::lists::{self, EncodedLists};
use super::metrics::Metrics;
use super::node::NodeConnector;
use super::openapi::{self, OpenApi};
use super::router::{Query, ResourcePath};
use super::strict::{self, Decoded};
use super::table::{self, Include};
use super::{review, validation, warnings, watch};
use bosun_core::{
    ApiResource, Client, DeleteParams, Deleted, DynamicObject, Error, FieldError, FieldValidation, ListParams, LogParams, Patch,
    PatchParams, PostParams, Preconditions, PropagationPolicy, Result, Target, TypeMeta, VersionMatch, WatchParams,
};
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// What every handler shares.
pub(crate) struct State {
    pub client: Arc<dyn Client>,
    pub catalog: Arc<dyn ResourceCatalog>,
    pub nodes: Option<Arc<dyn NodeConnector>>,
    pub lists: Option<Arc<dyn EncodedLists>>,
    pub openapi: OpenApi,
    pub metrics: Arc<Metrics>,
    pub max_body_bytes: usize,
    pub default_watch_timeout: Duration,
}

/// The verb and resource a request counted as, for metrics.
pub(crate) struct Served {
    pub verb: &'static str,
    pub resource: String,
}

/// A response plus the warnings to send with it.
struct Reply {
    response: Response<Body>,
    warnings: Vec<String>,
}

impl From<Response<Body>> for Reply {
    fn from(response: Response<Body>) -> Self {
        Self { response, warnings: Vec::new() }
    }
}

fn find(resources: &[ApiResource], path: &ResourcePath) -> Result<ApiResource> {
    if let Some(r) = resources.iter().find(|r| r.group == path.group && r.version == path.version && r.plural == path.plural) {
        return Ok(r.clone());
    }
    Err(Error::not_found(&path.group, &path.plural, path.name.as_deref().unwrap_or(""))
        .with_message("the server could not find the requested resource"))
}

trait WithMessage {
    fn with_message(self, message: &str) -> Self;
}

impl WithMessage for Error {
    fn with_message(self, message: &str) -> Self {
        let mut status = self.to_status();
        status.message = Some(message.to_owned());
        Error::from_status(status)
    }
}

fn verb_of(method: &Method, path: &ResourcePath, query: &Query) -> &'static str {
    let watching = path.legacy_watch || query.flag("watch");
    match (method, path.name.is_some(), path.subresource.as_deref()) {
        (&Method::GET, _, Some("log")) => "GET",
        (_, _, Some("exec" | "attach" | "portforward" | "proxy")) => "CONNECT",
        (&Method::GET, _, _) if watching => "WATCH",
        (&Method::GET, false, _) => "LIST",
        (&Method::GET, true, _) => "GET",
        (&Method::POST, _, _) => "POST",
        (&Method::PUT, _, _) => "PUT",
        (&Method::PATCH, _, _) => "PATCH",
        (&Method::DELETE, false, _) => "DELETECOLLECTION",
        (&Method::DELETE, true, _) => "DELETE",
        _ => "UNKNOWN",
    }
}

/// Serves a request below a resource.
pub(crate) async fn handle(state: &State, req: Request<Incoming>, path: ResourcePath, served: &mut Served) -> Response<Body> {
    let query = Query::parse(req.uri().query());
    served.verb = verb_of(req.method(), &path, &query);
    served.resource = match &path.subresource {
        Some(sub) => format!("{}/{sub}", path.plural),
        None => path.plural.clone(),
    };
    // A deprecated version warns on every request, failed ones included, as kube-apiserver does.
    let deprecation =
        find(&state.catalog.resources(), &path).ok().filter(|r| !openapi::is_typed(r)).and_then(|r| state.catalog.deprecation(&r));
    let (mut response, warnings) = match dispatch(state, req, &path, &query, served.verb).await {
        Ok(reply) => (reply.response, reply.warnings),
        Err(err) => (body::status_response(&err), Vec::new()),
    };
    for w in deprecation.into_iter().chain(warnings) {
        if let Some(v) = warning_header(&w) {
            response.headers_mut().append(http::header::WARNING, v);
        }
    }
    response
}

/// A `Warning` header as kube-apiserver sends it (RFC 7234: code 299, agent `-`, quoted text).
pub(crate) fn warning_header(text: &str) -> Option<HeaderValue> {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            // Header values carry visible ASCII; anything else is dropped rather than failing the response.
            c if c == ' ' || c == '\t' || c.is_ascii_graphic() => quoted.push(c),
            _ => {}
        }
    }
    quoted.push('"');
    HeaderValue::from_str(&format!("299 - {quoted}")).ok()
}

async fn dispatch(state: &State, req: Request<Incoming>, path: &ResourcePath, query: &Query, verb: &'static str) -> Result<Reply> {
    if let Some(kind) = review::kind_of(path) {
        return review::handle(req, path, kind, state.max_body_bytes).await.map(Reply::from);
    }
    let resources = state.catalog.resources();
    let resource = find(&resources, path)?;
    let namespace = match (&path.namespace, resource.namespaced) {
        (Some(_), false) => {
            return Err(Error::not_found(&path.group, &path.plural, "").with_message("the server could not find the requested resource"));
        }
        (ns, _) => ns.clone(),
    };
    if let Some(name) = path.name.as_deref() {
        check_path_name(name)?;
    }
    let target = Target::new(&resource, namespace.as_deref());
    if let Some(sub) = path.subresource.as_deref() {
        let name = path.name.as_deref().unwrap_or_default();
        if !resource.has_subresource(sub) {
            return Err(Error::not_found(&path.group, &format!("{}/{sub}", path.plural), name)
                .with_message("the server could not find the requested resource"));
        }
        return subresource(state, req, &resource, target, namespace.as_deref(), name, sub, query, verb).await;
    }
    check_method(verb, &resource, path)?;
    let output = body::negotiate(req.headers())?;
    let include = Include::parse(query.get("includeObject"))?;
    let check = |v: &str| -> Result<()> {
        if resource.supports(v) {
            Ok(())
        } else {
            Err(Error::method_not_allowed(format!("{v} is not supported on resources of kind \"{}\"", resource.group_resource())))
        }
    };
    match verb {
        "WATCH" => {
            check("watch")?;
            let mut params = watch_params(query)?;
            if let Some(name) = &path.name {
                params.field_selector = Some(format!("metadata.name={name}"));
            }
            let timeout = params.timeout_seconds.map_or(state.default_watch_timeout, |s| Duration::from_secs(u64::from(s)));
            // A version too old to watch from is an ERROR event in a 200 stream, as kube-apiserver
            // sends it (clients relist on it), not a failed request.
            let encoded = match (output, &state.lists) {
                (Output::Json, Some(fast)) => match fast.watch_encoded(target, &params).await {
                    Ok(stream) => stream,
                    Err(e) if e.is_gone() => Some(futures::stream::iter([Err(e)]).boxed()),
                    Err(e) => return Err(e),
                },
                _ => None,
            };
            if let Some(stream) = encoded {
                return Ok(watch_response(watch::encoded_body(stream, timeout, state.metrics.clone())));
            }
            let stream = match state.client.watch(target, &params).await {
                Ok(stream) => stream,
                Err(e) if e.is_gone() => futures::stream::iter([Ok(bosun_core::WatchEvent::Error(e.to_status()))]).boxed(),
                Err(e) => return Err(e),
            };
            let printer = printer(state, &resource, output).await;
            let encoding = watch::Encoding { resource: resource.clone(), printer, output, include };
            Ok(watch_response(encoding.body(stream, timeout, state.metrics.clone())))
        }
        "LIST" => {
            check("list")?;
            if let (Output::Json, Some(fast)) = (output, &state.lists) {
                let list = fast.list_encoded(target, &list_params(query)?).await?;
                return Ok(body::text(StatusCode::OK, lists::to_json(&list), "application/json").into());
            }
            let list = state.client.list(target, &list_params(query)?).await?;
            if output == Output::Metadata {
                let items: Vec<Value> = list.items.iter().map(|o| body::partial_metadata(&o.to_value())).collect();
                let meta = serde_json::to_value(&list.metadata).unwrap_or_else(|_| json!({}));
                let list = json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": items});
                return Ok(body::respond(StatusCode::OK, &list, output).into());
            }
            if output == Output::Table {
                let items: Vec<Value> = list.items.iter().map(|o| body::typed_value(o, &resource)).collect();
                let meta = serde_json::to_value(&list.metadata).unwrap_or_else(|_| json!({}));
                let printer = printer(state, &resource, output).await;
                return Ok(body::respond(StatusCode::OK, &table::table(&printer, &items, meta, include), output).into());
            }
            let mut list = list;
            list.types = TypeMeta { api_version: resource.api_version(), kind: format!("{}List", resource.kind) };
            Ok(body::respond(StatusCode::OK, &list, output).into())
        }
        "GET" => {
            check("get")?;
            // A read of one object is always of the latest version, but a malformed version is
            // refused as a list or watch refuses it.
            if let Some(rv) = query.non_empty("resourceVersion") {
                crate::api::parse_rv(&rv, &resource)?;
            }
            let name = path.name.as_deref().unwrap_or_default();
            let obj = state.client.get(target, name).await?;
            let value = body::typed_value(&obj, &resource);
            if output == Output::Metadata {
                return Ok(body::respond(StatusCode::OK, &body::partial_metadata(&value), output).into());
            }
            if output == Output::Table {
                let meta = json!({"resourceVersion": obj.metadata.resource_version});
                let printer = printer(state, &resource, output).await;
                return Ok(body::respond(StatusCode::OK, &table::table(&printer, &[value], meta, include), output).into());
            }
            Ok(body::respond(StatusCode::OK, &value, output).into())
        }
        "POST" => {
            check("create")?;
            let (bytes, format) = read_body(state, req).await?;
            let (params, validation) = post_params(query, "CreateOptions")?;
            let body = strict::decode(&bytes, format)?;
            let mut warnings = check_fields(state, &resource, &resource.kind, &body, validation)?;
            warnings.extend(warnings::finalizers(&body.value));
            warnings.extend(warnings::pod(&resource.group, &resource.kind, &body.value));
            let obj = object_for(&resource, body.value, namespace.as_deref(), None)?;
            let created = state.client.create(target, &obj, &params).await?;
            Ok(Reply { response: body::respond(StatusCode::CREATED, &body::typed_value(&created, &resource), plain(output)), warnings })
        }
        "PUT" => {
            check("update")?;
            let name = path.name.as_deref().unwrap_or_default();
            let (bytes, format) = read_body(state, req).await?;
            let (params, validation) = post_params(query, "UpdateOptions")?;
            let body = strict::decode(&bytes, format)?;
            let mut warnings = check_fields(state, &resource, &resource.kind, &body, validation)?;
            warnings.extend(warnings::finalizers(&body.value));
            warnings.extend(warnings::pod(&resource.group, &resource.kind, &body.value));
            let obj = object_for(&resource, body.value, namespace.as_deref(), Some(name))?;
            let updated = state.client.update(target, &obj, &params).await?;
            Ok(Reply { response: body::respond(StatusCode::OK, &body::typed_value(&updated, &resource), plain(output)), warnings })
        }
        "PATCH" => {
            check("patch")?;
            let name = path.name.as_deref().unwrap_or_default().to_owned();
            let (patch, params, mut warnings) = read_patch(state, req, &resource, &resource.kind, &name, query).await?;
            // Server-side apply creates what does not exist, and then answers 201 as kube-apiserver does.
            let creates = matches!(patch, Patch::Apply(_)) && state.client.get(target, &name).await.is_err_and(|e| e.is_not_found());
            let patched = body::typed_value(&state.client.patch(target, &name, &patch, &params).await?, &resource);
            if patch_sets_finalizers(&patch) {
                warnings.extend(warnings::finalizers(&patched));
            }
            let (Patch::Json(body) | Patch::Merge(body) | Patch::Strategic(body) | Patch::Apply(body)) = &patch;
            if warnings::patch_touches_pod(&resource.group, &resource.kind, body) {
                warnings.extend(warnings::pod(&resource.group, &resource.kind, &patched));
            }
            let code = if creates { StatusCode::CREATED } else { StatusCode::OK };
            Ok(Reply { response: body::respond(code, &patched, plain(output)), warnings })
        }
        "DELETE" => {
            check("delete")?;
            let name = path.name.as_deref().unwrap_or_default().to_owned();
            let params = delete_params(state, req, query).await?;
            let obj = match state.client.delete(target, &name, &params).await? {
                Deleted::Now(o) | Deleted::Pending(o) => o,
            };
            Ok(body::respond(StatusCode::OK, &body::typed_value(&obj, &resource), plain(output)).into())
        }
        "DELETECOLLECTION" => {
            check("deletecollection")?;
            let list = list_params(query)?;
            let params = delete_params(state, req, query).await?;
            let mut deleted = state.client.delete_collection(target, &list, &params).await?;
            deleted.types = TypeMeta { api_version: resource.api_version(), kind: format!("{}List", resource.kind) };
            Ok(body::respond(StatusCode::OK, &deleted, plain(output)).into())
        }
        _ => Err(Error::method_not_allowed(format!("method {verb} is not supported here"))),
    }
}

/// How rows of a resource print: built-in columns, or a custom resource's printer columns read
/// from its definition (through the client, like any other object).
async fn printer(state: &State, resource: &ApiResource, output: Output) -> table::Printer {
    if output != Output::Table || openapi::is_typed(resource) {
        return table::Printer::Builtin(resource.clone());
    }
    let Some(crds) = bosun_core::resource::builtin("apiextensions.k8s.io", "v1", "CustomResourceDefinition") else {
        return table::Printer::Builtin(resource.clone());
    };
    match state.client.get(Target::new(crds, None), &resource.group_resource()).await {
        Ok(crd) => table::Printer::from_definition(&crd.to_value(), &resource.version),
        Err(_) => table::Printer::Builtin(resource.clone()),
    }
}

/// Writes answer plain objects even when a Table was asked for.
fn plain(output: Output) -> Output {
    if matches!(output, Output::Table | Output::Metadata) { Output::Json } else { output }
}

/// The object as JSON with its type meta filled in.
/// A watch's response: JSON lines, streamed.
fn watch_response(body: Body) -> Reply {
    let mut response = Response::new(body);
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // No Transfer-Encoding: HTTP/1.1 chunks a body of unknown length by itself, and the header is
    // illegal in HTTP/2.
    response.into()
}

async fn read_body(state: &State, req: Request<Incoming>) -> Result<(Bytes, Format)> {
    let media = body::media_type(req.headers());
    let format = body::body_format(&media)?;
    let bytes = body::read_limited(req.into_body(), state.max_body_bytes).await?;
    Ok((bytes, format))
}

/// Builds the object of a create or update from its body, checking it against the URL.
fn object_for(resource: &ApiResource, value: Value, namespace: Option<&str>, name: Option<&str>) -> Result<DynamicObject> {
    if !value.is_object() {
        return Err(Error::bad_request(format!("the body of a {} must be a JSON object", resource.kind)));
    }
    let mut obj = DynamicObject::from_value(value)?;
    match &obj.types {
        None => obj.types = Some(TypeMeta::of(resource)),
        Some(t) if t.api_version.is_empty() && t.kind.is_empty() => obj.types = Some(TypeMeta::of(resource)),
        Some(t) if t.kind != resource.kind => {
            return Err(Error::bad_request(format!(
                "the kind in the body ({}) does not match the kind of the request ({})",
                t.kind, resource.kind
            )));
        }
        Some(t) if t.api_version != resource.api_version() => {
            return Err(Error::bad_request(format!(
                "the API version in the data ({}) does not match the expected API version ({})",
                t.api_version,
                resource.api_version()
            )));
        }
        Some(_) => {}
    }
    if let Some(ns) = namespace {
        match obj.metadata.namespace.as_deref() {
            Some(body_ns) if !body_ns.is_empty() && body_ns != ns => {
                return Err(Error::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
            }
            _ => obj.metadata.namespace = Some(ns.to_owned()),
        }
    }
    if let Some(name) = name {
        match obj.metadata.name.as_deref() {
            Some(n) if n != name => {
                return Err(Error::bad_request(format!("the name of the object ({n}) does not match the name on the URL ({name})")));
            }
            _ => obj.metadata.name = Some(name.to_owned()),
        }
    }
    Ok(obj)
}

/// Where kube-apiserver serves no such method: a create or delete-collection across namespaces
/// of a namespaced resource, a create at an object, an update or patch of a collection. 405, as
/// its router answers.
fn check_method(verb: &str, resource: &ApiResource, path: &ResourcePath) -> Result<()> {
    let served = match verb {
        "POST" => path.name.is_none() && (path.namespace.is_some() || !resource.namespaced),
        "DELETECOLLECTION" => path.namespace.is_some() || !resource.namespaced,
        "PUT" | "PATCH" => path.name.is_some(),
        _ => true,
    };
    if served {
        return Ok(());
    }
    Err(Error::method_not_allowed(format!("the server does not allow this method on the requested resource ({verb} {})", resource.plural)))
}

/// A name in a URL must be a valid path segment (kube-apiserver's IsValidPathSegmentName): not
/// `.` or `..`, without `%` (which arrives escaped): 400, as its storage key function answers.
fn check_path_name(name: &str) -> Result<()> {
    // An escaped `/` splits the path where kube-apiserver routes (it decodes first): nothing is there.
    if name.contains('/') {
        return Err(Error::not_found("", "", name).with_message("the server could not find the requested resource"));
    }
    let why = match name {
        "." | ".." => Some(format!("may not be '{name}'")),
        _ if name.contains('%') => Some("may not contain '%'".to_owned()),
        _ => None,
    };
    match why {
        Some(why) => Err(Error::bad_request(format!("Name parameter invalid: {name:?}: {why}"))),
        None => Ok(()),
    }
}

/// Refused request options (`CreateOptions`, `PatchOptions`, `DeleteOptions`, `ListOptions`):
/// 422, as kube-apiserver's option validation answers.
fn invalid_options(kind: &str, errors: Vec<FieldError>) -> Error {
    Error::invalid("meta.k8s.io", kind, "", errors)
}

/// Collects every refused option, then fails naming them all.
#[derive(Default)]
struct OptionErrors(Vec<FieldError>);

impl OptionErrors {
    fn check<T>(&mut self, checked: std::result::Result<T, FieldError>, otherwise: T) -> T {
        checked.unwrap_or_else(|e| {
            self.0.push(e);
            otherwise
        })
    }

    fn finish(self, kind: &str) -> Result<()> {
        if self.0.is_empty() { Ok(()) } else { Err(invalid_options(kind, self.0)) }
    }
}

fn field_validation(query: &Query) -> std::result::Result<Option<FieldValidation>, FieldError> {
    match query.get("fieldValidation") {
        None | Some("") => Ok(None),
        Some("Strict") => Ok(Some(FieldValidation::Strict)),
        Some("Warn") => Ok(Some(FieldValidation::Warn)),
        Some("Ignore") => Ok(Some(FieldValidation::Ignore)),
        Some(other) => Err(FieldError::not_supported("fieldValidation", other, &["Ignore", "Strict", "Warn"])),
    }
}

fn dry_run_values<S: AsRef<str>>(values: &[S]) -> std::result::Result<bool, FieldError> {
    match values.iter().map(AsRef::as_ref).filter(|v| !v.is_empty()).collect::<Vec<_>>().as_slice() {
        [] => Ok(false),
        ["All"] => Ok(true),
        other => Err(FieldError::not_supported("dryRun", other.join(","), &["All"])),
    }
}

fn dry_run(query: &Query) -> std::result::Result<bool, FieldError> {
    dry_run_values(&query.all("dryRun"))
}

/// `fieldManager`: at most 128 characters, all printable (kube-apiserver's ValidateFieldManager).
fn field_manager(query: &Query) -> std::result::Result<Option<String>, FieldError> {
    let Some(manager) = query.non_empty("fieldManager") else { return Ok(None) };
    if manager.len() > 128 {
        return Err(FieldError::invalid("fieldManager", &manager, "may not be more than 128 bytes"));
    }
    if manager.chars().any(char::is_control) {
        return Err(FieldError::invalid("fieldManager", &manager, "must only contain printable characters"));
    }
    Ok(Some(manager))
}

/// The options of a create (`CreateOptions`) or update (`UpdateOptions`).
fn post_params(query: &Query, kind: &str) -> Result<(PostParams, Option<FieldValidation>)> {
    let mut errors = OptionErrors::default();
    let validation = errors.check(field_validation(query), None);
    let dry_run = errors.check(dry_run(query), false);
    let field_manager = errors.check(field_manager(query), None);
    errors.finish(kind)?;
    Ok((PostParams { dry_run, field_manager, field_validation: validation }, validation))
}

/// Unknown and repeated fields of a body: Strict refuses them with 400, Warn (the default)
/// returns them as warnings, Ignore lets them pass.
fn check_fields(
    state: &State,
    resource: &ApiResource,
    kind: &str,
    body: &Decoded,
    validation: Option<FieldValidation>,
) -> Result<Vec<String>> {
    let validation = validation.unwrap_or_default();
    if validation == FieldValidation::Ignore {
        return Ok(Vec::new());
    }
    let mut messages: Vec<String> = body.duplicates.iter().map(|p| strict::duplicate_message(p)).collect();
    if let Some(doc) = state.openapi.group_version(state.catalog.as_ref(), &resource.group, &resource.version) {
        let root = if kind == "Scale" { Some("io.k8s.api.autoscaling.v1.Scale".to_owned()) } else { doc.roots.get(kind).cloned() };
        if let Some(root) = root {
            let unknown = validation::unknown_fields(&body.value, &root, &doc.schemas);
            messages.extend(unknown.iter().map(|f| format!("unknown field \"{f}\"")));
        }
    }
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    if validation == FieldValidation::Strict {
        return Err(Error::bad_request(format!(
            "{kind} in version \"{}\" cannot be handled as a {kind}: strict decoding error: {}",
            resource.version,
            messages.join(", ")
        )));
    }
    Ok(messages)
}

async fn read_patch(
    state: &State,
    req: Request<Incoming>,
    resource: &ApiResource,
    kind: &str,
    name: &str,
    query: &Query,
) -> Result<(Patch, PatchParams, Vec<String>)> {
    let media = body::media_type(req.headers());
    let unsupported = || {
        Error::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml{}",
            if openapi::is_typed(resource) { ", application/strategic-merge-patch+json" } else { "" }
        ))
    };
    let kind_of = match media.as_str() {
        "application/json-patch+json" => 0,
        "application/merge-patch+json" => 1,
        "application/strategic-merge-patch+json" if openapi::is_typed(resource) || kind == "Scale" => 2,
        "application/apply-patch+yaml" => 3,
        _ => return Err(unsupported()),
    };
    let bytes = body::read_limited(req.into_body(), state.max_body_bytes).await?;
    // The options are checked before the body is, in kube-apiserver's order.
    let mut errors = OptionErrors::default();
    let validation = errors.check(field_validation(query), None);
    let dry_run = errors.check(dry_run(query), false);
    let field_manager = errors.check(field_manager(query), None);
    let force = query.flag("force");
    if force && kind_of != 3 {
        errors.0.push(FieldError::forbidden("force", "may not be specified for non-apply patch"));
    }
    if kind_of == 3 && field_manager.is_none() {
        errors.0.push(crate::api::apply_needs_manager());
    }
    errors.finish("PatchOptions")?;
    let body = strict::decode(&bytes, if kind_of == 3 { Format::Yaml } else { Format::Json })?;
    let value = &body.value;
    let patch = match kind_of {
        0 => {
            if !value.is_array() {
                return Err(Error::bad_request("json patch must be an array of operations"));
            }
            Patch::Json(value.clone())
        }
        _ if !value.is_object() => return Err(Error::bad_request("the patch must be a JSON object")),
        1 => Patch::Merge(value.clone()),
        2 => Patch::Strategic(value.clone()),
        _ => Patch::Apply(value.clone()),
    };
    // Under Strict, a merge patch's unknown or repeated fields are the patched object's: 422, as
    // kube-apiserver answers them (an apply's are its body's: 400).
    let warnings = match kind_of {
        0 => Vec::new(),
        1 | 2 => check_fields(state, resource, kind, &body, validation).map_err(|e| crate::api::patched_invalid(e, resource, name))?,
        _ => check_fields(state, resource, kind, &body, validation)?,
    };
    let params = PatchParams { dry_run, field_manager, force, field_validation: validation };
    Ok((patch, params, warnings))
}

/// Whether a patch writes `metadata.finalizers` (whose names then get checked).
fn patch_sets_finalizers(patch: &Patch) -> bool {
    match patch {
        Patch::Json(ops) => ops.as_array().into_iter().flatten().any(|op| {
            op.get("path").and_then(Value::as_str).is_some_and(|p| p.starts_with("/metadata/finalizers"))
                && op.get("op").and_then(Value::as_str) != Some("remove")
        }),
        Patch::Merge(v) | Patch::Strategic(v) | Patch::Apply(v) => {
            v.get("metadata").and_then(|m| m.get("finalizers")).and_then(Value::as_array).is_some_and(|f| !f.is_empty())
        }
    }
}

/// `ListOptions` from the query: malformed numbers are 400 (the parameter codec), and
/// `resourceVersionMatch` is checked as kube-apiserver's ValidateListOptions does (422).
fn list_params(query: &Query) -> Result<ListParams> {
    // A limit of zero or less is no limit; timeoutSeconds only has to be a number for a list.
    let limit = query.number::<i64>("limit")?.filter(|l| *l > 0).map(|l| u32::try_from(l).unwrap_or(u32::MAX));
    query.number::<i64>("timeoutSeconds")?;
    let resource_version = query.non_empty("resourceVersion");
    let continue_token = query.non_empty("continue");
    let mut errors = OptionErrors::default();
    let version_match = match query.get("resourceVersionMatch") {
        None | Some("") => None,
        Some(m) => {
            if resource_version.is_none() {
                errors.0.push(FieldError::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            if continue_token.is_some() {
                errors.0.push(FieldError::forbidden("resourceVersionMatch", "resourceVersionMatch is forbidden when continue is provided"));
            }
            match m {
                "NotOlderThan" => Some(VersionMatch::NotOlderThan),
                "Exact" => Some(VersionMatch::Exact),
                other => {
                    errors.0.push(FieldError::not_supported("resourceVersionMatch", other, &["Exact", "NotOlderThan"]));
                    None
                }
            }
        }
    };
    if query.get("sendInitialEvents").is_some() {
        errors.0.push(FieldError::forbidden("sendInitialEvents", "sendInitialEvents is forbidden for list"));
    }
    errors.finish("ListOptions")?;
    Ok(ListParams {
        label_selector: query.non_empty("labelSelector"),
        field_selector: query.non_empty("fieldSelector"),
        limit,
        continue_token,
        resource_version,
        version_match,
    })
}

/// The options of a watch, checked as kube-apiserver's validateWatchOptions does (422):
/// `sendInitialEvents` and `resourceVersionMatch=NotOlderThan` go together.
fn watch_params(query: &Query) -> Result<WatchParams> {
    let mut errors = OptionErrors::default();
    let version_match = query.get("resourceVersionMatch").filter(|m| !m.is_empty());
    let initial_events = query.get("sendInitialEvents").is_some();
    if initial_events && version_match != Some("NotOlderThan") {
        errors
            .0
            .push(FieldError::forbidden("resourceVersionMatch", "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"));
    }
    if let Some(m) = version_match {
        if !initial_events {
            errors.0.push(FieldError::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ));
        }
        if m != "NotOlderThan" {
            errors.0.push(FieldError::not_supported("resourceVersionMatch", m, &["NotOlderThan"]));
        }
        if query.non_empty("continue").is_some() {
            errors.0.push(FieldError::forbidden("resourceVersionMatch", "resourceVersionMatch is forbidden when continue is provided"));
        }
    }
    errors.finish("ListOptions")?;
    Ok(WatchParams {
        label_selector: query.non_empty("labelSelector"),
        field_selector: query.non_empty("fieldSelector"),
        resource_version: query.non_empty("resourceVersion"),
        timeout_seconds: query.number::<u32>("timeoutSeconds")?,
        allow_bookmarks: query.flag("allowWatchBookmarks"),
        send_initial_events: query.flag("sendInitialEvents"),
    })
}

fn propagation(s: &str) -> std::result::Result<PropagationPolicy, FieldError> {
    match s {
        "Orphan" => Ok(PropagationPolicy::Orphan),
        "Background" => Ok(PropagationPolicy::Background),
        "Foreground" => Ok(PropagationPolicy::Foreground),
        other => Err(FieldError::not_supported("propagationPolicy", other, &["Background", "Foreground", "Orphan"])),
    }
}

/// A `DeleteOptions` body, decoded by type: a member of the wrong type is a 400, not ignored.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteBody {
    kind: Option<String>,
    grace_period_seconds: Option<i64>,
    preconditions: Option<Preconditions>,
    orphan_dependents: Option<bool>,
    propagation_policy: Option<String>,
    dry_run: Option<Vec<String>>,
}

/// `DeleteOptions` from the body (if any) and the query: malformed values are 400, values
/// kube-apiserver's ValidateDeleteOptions refuses are 422.
async fn delete_params(state: &State, req: Request<Incoming>, query: &Query) -> Result<DeleteParams> {
    let media = body::media_type(req.headers());
    let bytes = body::read_limited(req.into_body(), state.max_body_bytes).await?;
    let mut grace = query.number::<i64>("gracePeriodSeconds")?;
    let body = if bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let value = body::decode(&bytes, body::body_format(&media)?)?;
        let body: DeleteBody = serde_json::from_value(value).map_err(|e| Error::bad_request(format!("decode DeleteOptions: {e}")))?;
        if let Some(kind) = body.kind.as_deref().filter(|k| !k.is_empty() && *k != "DeleteOptions") {
            return Err(Error::bad_request(format!("decoded object of kind {kind} cannot be converted to DeleteOptions")));
        }
        Some(body)
    };
    let mut errors = OptionErrors::default();
    let mut dry_run = errors.check(dry_run(query), false);
    let mut policy = query.non_empty("propagationPolicy");
    let mut orphan = query.get("orphanDependents").map(|_| query.flag("orphanDependents"));
    let mut preconditions = None;
    if let Some(body) = body {
        if let Some(d) = body.dry_run {
            dry_run = errors.check(dry_run_values(&d), false);
        }
        grace = body.grace_period_seconds.or(grace);
        policy = body.propagation_policy.or(policy);
        orphan = body.orphan_dependents.or(orphan);
        preconditions = body.preconditions;
    }
    let mut params = DeleteParams { dry_run, preconditions, ..DeleteParams::default() };
    params.grace_period_seconds = grace.map(|g| u32::try_from(g.max(0)).unwrap_or(u32::MAX));
    if orphan.is_some() && policy.is_some() {
        errors.0.push(FieldError::invalid(
            "propagationPolicy",
            policy.as_deref().unwrap_or_default(),
            "orphanDependents and deletionPropagation cannot be both set",
        ));
    }
    params.propagation_policy = match (policy.as_deref(), orphan) {
        (Some(p), _) => errors.check(propagation(p).map(Some), None),
        (None, Some(true)) => Some(PropagationPolicy::Orphan),
        (None, Some(false)) => Some(PropagationPolicy::Background),
        (None, None) => None,
    };
    errors.finish("DeleteOptions")?;
    Ok(params)
}

#[allow(clippy::too_many_arguments)]
async fn subresource(
    state: &State,
    req: Request<Incoming>,
    resource: &ApiResource,
    target: Target<'_>,
    namespace: Option<&str>,
    name: &str,
    sub: &str,
    query: &Query,
    verb: &'static str,
) -> Result<Reply> {
    match (sub, req.method().clone()) {
        ("log", Method::GET) => return logs(state, namespace.unwrap_or("default"), name, query).await,
        ("exec" | "attach", Method::GET | Method::POST) => {
            return super::server::exec(state, req, namespace.unwrap_or("default"), name, sub, query).await.map(Reply::from);
        }
        ("portforward", Method::GET | Method::POST) => {
            return super::portforward::upgrade(state, req, target, namespace.unwrap_or("default"), name).await.map(Reply::from);
        }
        ("exec" | "attach" | "portforward" | "proxy" | "log", _) => {
            return Err(Error::method_not_allowed(format!("{verb} is not supported on {}/{sub}", resource.plural)));
        }
        _ => {}
    }
    let output = plain(body::negotiate(req.headers())?);
    let kind = if sub == "scale" { "Scale".to_owned() } else { resource.kind.to_string() };
    match req.method().clone() {
        Method::GET => {
            let obj = state.client.get_subresource(target, name, sub).await?;
            Ok(body::respond(StatusCode::OK, &obj, output).into())
        }
        Method::PUT => {
            let (bytes, format) = read_body(state, req).await?;
            let (params, validation) = post_params(query, "UpdateOptions")?;
            let body = strict::decode(&bytes, format)?;
            let warnings = check_fields(state, resource, &kind, &body, validation)?;
            let mut obj = DynamicObject::from_value(body.value)?;
            if let (Some(ns), true) = (namespace, obj.metadata.namespace.is_none()) {
                obj.metadata.namespace = Some(ns.to_owned());
            }
            if obj.metadata.name.is_none() {
                obj.metadata.name = Some(name.to_owned());
            }
            let updated = state.client.update_subresource(target, name, sub, &obj, &params).await?;
            Ok(Reply { response: body::respond(StatusCode::OK, &updated, output), warnings })
        }
        Method::PATCH => {
            let (patch, params, warnings) = read_patch(state, req, resource, &kind, name, query).await?;
            let patched = state.client.patch_subresource(target, name, sub, &patch, &params).await?;
            Ok(Reply { response: body::respond(StatusCode::OK, &patched, output), warnings })
        }
        Method::POST => {
            let (bytes, format) = read_body(state, req).await?;
            let (params, _) = post_params(query, "CreateOptions")?;
            let value = body::decode(&bytes, format)?;
            let answer = state.client.create_subresource(target, name, sub, &value, &params).await?;
            Ok(body::respond(StatusCode::CREATED, &answer, output).into())
        }
        other => Err(Error::method_not_allowed(format!("method {other} is not supported on {}/{sub}", resource.plural))),
    }
}

async fn logs(state: &State, namespace: &str, pod: &str, query: &Query) -> Result<Reply> {
    let params = LogParams {
        container: query.non_empty("container"),
        follow: query.flag("follow"),
        tail_lines: query.number("tailLines")?,
        timestamps: query.flag("timestamps"),
        previous: query.flag("previous"),
        since_seconds: query.number("sinceSeconds")?,
        limit_bytes: query.number("limitBytes")?,
    };
    let stream = match &state.nodes {
        Some(nodes) => nodes.logs(namespace, pod, &params).await?,
        None => state.client.logs(namespace, pod, &params).await?,
    };
    let frames = stream.scan((), |(), chunk| futures::future::ready(chunk.ok())).map(|b| Ok::<_, std::io::Error>(Frame::data(b)));
    let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(frames)));
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(response.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy() -> ApiResource {
        bosun_core::resource::builtin("apps", "v1", "Deployment").cloned().unwrap_or_else(|| unreachable!())
    }

    #[test]
    fn a_body_in_another_namespace_is_refused() {
        let v = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a", "namespace": "other"}});
        let err = object_for(&deploy(), v, Some("default"), None).err();
        assert_eq!(err.map(|e| e.code()), Some(400));
    }

    #[test]
    fn a_body_without_type_meta_gets_the_resources() -> Result<()> {
        let obj = object_for(&deploy(), json!({"metadata": {"name": "a"}}), Some("default"), None)?;
        assert_eq!(obj.types, Some(TypeMeta { api_version: "apps/v1".into(), kind: "Deployment".into() }));
        assert_eq!(obj.metadata.namespace.as_deref(), Some("default"));
        Ok(())
    }

    #[test]
    fn a_put_must_name_the_object_of_its_url() {
        let v = json!({"metadata": {"name": "b"}});
        assert_eq!(object_for(&deploy(), v, Some("default"), Some("a")).err().map(|e| e.code()), Some(400));
        let v = json!({"apiVersion": "v1", "kind": "Deployment", "metadata": {"name": "a"}});
        assert_eq!(object_for(&deploy(), v, Some("default"), Some("a")).err().map(|e| e.code()), Some(400));
    }

    #[test]
    fn query_parameters_become_client_parameters() -> Result<()> {
        let q = Query::parse(Some("labelSelector=app%3Dweb&limit=500&resourceVersion=0&resourceVersionMatch=NotOlderThan"));
        let l = list_params(&q)?;
        assert_eq!((l.label_selector.as_deref(), l.limit, l.version_match), (Some("app=web"), Some(500), Some(VersionMatch::NotOlderThan)));
        let q = Query::parse(Some("watch=true&timeoutSeconds=5&allowWatchBookmarks=true"));
        let w = watch_params(&q)?;
        assert_eq!((w.timeout_seconds, w.allow_bookmarks), (Some(5), true));
        assert_eq!(field_validation(&Query::parse(Some("fieldValidation=Strict"))).ok(), Some(Some(FieldValidation::Strict)));
        assert!(field_validation(&Query::parse(Some("fieldValidation=strict"))).is_err());
        assert_eq!(dry_run(&Query::parse(Some("dryRun=All"))).ok(), Some(true));
        assert!(dry_run(&Query::parse(Some("dryRun=Some"))).is_err());
        let refused = post_params(&Query::parse(Some("dryRun=Some")), "CreateOptions").err();
        assert_eq!(refused.map(|e| (e.code(), e.reason().to_owned())), Some((422, "Invalid".to_owned())));
        Ok(())
    }
}
