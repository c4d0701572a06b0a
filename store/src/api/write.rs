//! Writes: create, update and patch through strategy, admission and compare-and-swap storage.

use super::ApiServer;
use super::admission::{Attributes, Operation};
use super::codec;
use super::crd;
use super::strategy::{Kind, Rules};
use crate::patch::ApplyContext;
use crate::storage::StorageError;
use bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use bosun_core::k8s_openapi::jiff::Timestamp;
use bosun_core::{DynamicObject, Error, FieldValidation, Patch, Result, TypeMeta};
use serde_json::Value;
use std::sync::Arc;

/// Attempts of a write whose compare-and-swap lost to a concurrent writer before giving up.
const MAX_ATTEMPTS: usize = 32;

/// Now from the system clock, at the second precision Kubernetes timestamps have.
pub(crate) fn now() -> Time {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Time(Timestamp::from_second(i64::try_from(secs).unwrap_or(0)).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// A random version-4 UUID.
pub(crate) fn uuid() -> String {
    let a = fastrand::u64(..);
    let b = fastrand::u64(..);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        (a >> 32) as u32,
        (a >> 16) as u16,
        (a & 0x0fff) as u16,
        ((b >> 48) as u16 & 0x3fff) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

/// How an update was asked for.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Change<'a> {
    /// `status`, `scale`, `binding`, `finalize`... or the main resource.
    pub(crate) subresource: Option<&'a str>,
    /// Validate but do not persist.
    pub(crate) dry_run: bool,
    /// Unknown-field handling of the body.
    pub(crate) validation: Option<FieldValidation>,
    /// Who writes, for `managedFields` (`None`: not recorded, e.g. bindings).
    pub(crate) manager: Option<&'a str>,
    /// The change is a server-side apply, which records its own `managedFields`.
    pub(crate) applied: bool,
    /// The change is a patch: a patched object that does not decode as its kind is a 422 (the
    /// patch made it invalid), where a body that does not is a 400.
    pub(crate) patched: bool,
}

/// How a create was asked for.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Create<'a> {
    /// Validate but do not persist.
    pub(crate) dry_run: bool,
    /// Who writes, for `managedFields`.
    pub(crate) field_manager: Option<&'a str>,
    /// Unknown-field handling of the body.
    pub(crate) field_validation: Option<FieldValidation>,
    /// The object comes from a server-side apply, which recorded its own `managedFields`.
    pub(crate) applied: bool,
}

impl<'a> Create<'a> {
    pub(crate) fn from_post(params: &'a bosun_core::PostParams) -> Self {
        Self {
            dry_run: params.dry_run,
            field_manager: params.field_manager.as_deref(),
            field_validation: params.field_validation,
            applied: false,
        }
    }
}

/// Data of an object without `status`: what `metadata.generation` tracks.
fn spec_part(data: &Value) -> Value {
    match data {
        Value::Object(map) => {
            Value::Object(map.iter().filter(|(k, _)| k.as_str() != "status").map(|(k, v)| (k.clone(), v.clone())).collect())
        }
        other => other.clone(),
    }
}

pub(super) fn spec_changed(new: &Value, old: &Value) -> bool {
    match (new, old) {
        (Value::Object(n), Value::Object(o)) => {
            let n = n.iter().filter(|(k, _)| k.as_str() != "status");
            let o_count = o.keys().filter(|k| k.as_str() != "status").count();
            let mut count = 0;
            for (k, v) in n {
                count += 1;
                if o.get(k) != Some(v) {
                    return true;
                }
            }
            count != o_count
        }
        _ => spec_part(new) != spec_part(old),
    }
}

impl ApiServer {
    /// Checks and fills in `apiVersion` and `kind`.
    fn check_types(&self, kind: &Kind, obj: &mut DynamicObject) -> Result<()> {
        let want = TypeMeta::of(&kind.resource);
        match obj.types.as_ref() {
            Some(t) if !t.kind.is_empty() && t.kind != want.kind => {
                return Err(Error::bad_request(format!(
                    "the API version in the data ({}) does not match the expected API version ({})",
                    format_args!("{}, Kind={}", t.api_version, t.kind),
                    format_args!("{}, Kind={}", want.api_version, want.kind),
                )));
            }
            Some(t) if !t.api_version.is_empty() && t.api_version != want.api_version => {
                // Another served version of the same custom resource is fine: versions share storage.
                let (group, _) = bosun_core::resource::split_api_version(&t.api_version);
                if kind.rules != Rules::Custom || group != kind.resource.group {
                    return Err(Error::bad_request(format!(
                        "the API version in the data ({}) does not match the expected API version ({})",
                        t.api_version, want.api_version
                    )));
                }
            }
            _ => {}
        }
        obj.types = Some(want);
        Ok(())
    }

    /// Refuses unknown fields under `Strict` field validation.
    fn check_fields(&self, kind: &Kind, obj: &DynamicObject, validation: Option<FieldValidation>) -> Result<()> {
        if validation != Some(FieldValidation::Strict) {
            return Ok(());
        }
        let unknown = kind.unknown_fields(&obj.to_value())?;
        if unknown.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
        Err(Error::bad_request(format!("strict decoding error: {}", list.join(", "))))
    }

    /// The namespace a write goes to: the request's, which a body may repeat but not contradict.
    fn write_namespace(&self, kind: &Kind, namespace: Option<&str>, obj: &DynamicObject) -> Result<Option<String>> {
        if !kind.resource.namespaced {
            return Ok(None);
        }
        let body = obj.metadata.namespace.as_deref().filter(|n| !n.is_empty());
        match (namespace, body) {
            (Some(a), Some(b)) if a != b => {
                Err(Error::bad_request("the namespace of the provided object does not match the namespace sent on the request"))
            }
            (Some(a), _) => Ok(Some(a.to_owned())),
            (None, Some(b)) => Ok(Some(b.to_owned())),
            (None, None) => Err(Error::bad_request("a namespace must be specified for a namespaced resource")),
        }
    }

    pub(crate) async fn admit(&self, attrs: &Attributes<'_>, obj: &mut DynamicObject, old: Option<&DynamicObject>) -> Result<()> {
        for p in &self.admission {
            p.admit(attrs, obj, old, self).await?;
        }
        Ok(())
    }

    pub(crate) async fn admit_validate(&self, attrs: &Attributes<'_>, obj: &DynamicObject, old: Option<&DynamicObject>) -> Result<()> {
        for p in &self.admission {
            p.validate(attrs, obj, old, self).await?;
        }
        Ok(())
    }

    /// Creates an object.
    pub(crate) async fn create_object(
        &self,
        kind: &Arc<Kind>,
        namespace: Option<&str>,
        mut obj: DynamicObject,
        params: &Create<'_>,
    ) -> Result<DynamicObject> {
        let ns = self.write_namespace(kind, namespace, &obj)?;
        obj.metadata.namespace = ns.clone();
        self.check_types(kind, &mut obj)?;
        self.check_fields(kind, &obj, params.field_validation)?;
        let generate = obj.metadata.generate_name.clone().filter(|g| !g.is_empty());
        let named = obj.metadata.name.as_deref().is_some_and(|n| !n.is_empty());
        if !named {
            match generate.as_deref() {
                Some(g) => obj.metadata.name = Some(bosun_core::meta::generate_name(g)),
                None => {
                    return Err(Error::invalid(
                        &kind.resource.group,
                        &kind.resource.kind,
                        "",
                        vec![bosun_core::FieldError::required("metadata.name").with_message("name or generateName is required")],
                    ));
                }
            }
        }
        let meta = &mut obj.metadata;
        meta.uid = Some(uuid());
        meta.creation_timestamp = Some(self.now());
        meta.generation = Some(1);
        meta.resource_version = None;
        meta.deletion_timestamp = None;
        meta.deletion_grace_period_seconds = None;
        meta.self_link = None;
        keep_managed_fields_readable(&mut obj, None);
        kind.prepare_create(&mut obj);
        kind.default(&mut obj, true)?;
        let name = obj.metadata.name.clone().unwrap_or_default();
        let attrs = Attributes {
            operation: Operation::Create,
            resource: &kind.resource,
            subresource: None,
            namespace: ns.as_deref(),
            name: &name,
            dry_run: params.dry_run,
        };
        self.admit(&attrs, &mut obj, None).await?;
        kind.validate(&obj, None, self.node_ports)?;
        self.admit_validate(&attrs, &obj, None).await?;
        if !params.applied {
            // Writers that name no field manager (in-process controllers) are not recorded: it keeps
            // the hot paths and the objects small. A named manager or an apply always is.
            if let Some(manager) = params.field_manager.filter(|m| !m.is_empty()) {
                self.record_fields(kind, None, &mut obj, manager, None)?;
            }
        }
        if kind.rules == Rules::CustomResourceDefinition {
            let status = crd::accepted_status(&obj, &self.now_text());
            if let Some(map) = obj.data.as_object_mut() {
                map.insert("status".into(), status);
            }
        }
        if params.dry_run {
            if kind.rules == Rules::Service {
                self.check_service_dry_run(&obj)?;
            }
            return Ok(obj);
        }
        let allocated = if kind.rules == Rules::Service { self.allocate_service(&mut obj, None).await? } else { Vec::new() };
        let mut attempts = 0;
        loop {
            let name = obj.metadata.name.clone().unwrap_or_default();
            let key = codec::key(&kind.resource, ns.as_deref(), &name);
            let bytes = codec::encode(&mut obj)?;
            let lease = self.lease_for(kind).await;
            match self.storage.create(&key, bytes, lease).await {
                Ok(kv) => {
                    obj.metadata.resource_version = Some(kv.mod_revision.to_string());
                    self.cache(kind).written(&key, kv.mod_revision, &obj);
                    break;
                }
                Err(StorageError::AlreadyExists { .. }) if !named && attempts < 8 => {
                    attempts += 1;
                    if let Some(g) = generate.as_deref() {
                        obj.metadata.name = Some(bosun_core::meta::generate_name(g));
                    }
                }
                Err(e) => {
                    self.release(&allocated).await;
                    return Err(match e {
                        StorageError::AlreadyExists { .. } => Error::already_exists(&kind.resource.group, &kind.resource.plural, &name),
                        other => codec::storage_error(other),
                    });
                }
            }
        }
        if kind.rules == Rules::CustomResourceDefinition {
            self.serve_definition(&obj).await;
        }
        self.present(kind, &mut obj);
        Ok(obj)
    }

    /// Updates an object by applying `mutate` to its current state, retrying when a concurrent
    /// write wins the compare-and-swap (unless the new state pins a resourceVersion).
    pub(crate) async fn update_object(
        &self,
        kind: &Arc<Kind>,
        namespace: Option<&str>,
        name: &str,
        change: Change<'_>,
        mutate: &(dyn Fn(&DynamicObject) -> Result<DynamicObject> + Send + Sync),
    ) -> Result<DynamicObject> {
        let ns = namespace.filter(|_| kind.resource.namespaced);
        if kind.resource.namespaced && ns.is_none() {
            return Err(Error::bad_request("a namespace must be specified for a namespaced resource"));
        }
        let key = codec::key(&kind.resource, ns, name);
        for _ in 0..MAX_ATTEMPTS {
            let Some(kv) = self.storage.get(&key).await.map_err(codec::storage_error)? else {
                return Err(Error::not_found(&kind.resource.group, &kind.resource.plural, name));
            };
            let current = &codec::decode(&kv.value, kv.mod_revision)?;
            let mut obj = mutate(current)?;
            keep_managed_fields_readable(&mut obj, Some(current));
            // A patch that removes the name (`$patch: delete` or `replace` of the object or its
            // metadata) names another object than its URL, as kube-apiserver's name check finds.
            let unnamed = change.patched && obj.metadata.name.as_deref().is_none_or(str::is_empty);
            if unnamed || obj.metadata.name.as_deref().is_some_and(|n| !n.is_empty() && n != name) {
                return Err(Error::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    obj.metadata.name.as_deref().unwrap_or("")
                )));
            }
            if kind.resource.namespaced
                && let Some(body_ns) = obj.metadata.namespace.as_deref().filter(|n| !n.is_empty())
                && Some(body_ns) != ns
            {
                return Err(Error::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
            }
            if let Some(rv) = obj.metadata.resource_version.as_deref().filter(|r| !r.is_empty())
                && rv != kv.mod_revision.to_string()
            {
                return Err(Error::stale(&kind.resource.group, &kind.resource.plural, name));
            }
            if let Some(uid) = obj.metadata.uid.as_deref().filter(|u| !u.is_empty())
                && Some(uid) != current.metadata.uid.as_deref()
            {
                // A patch names no precondition: its changed uid is an immutable field changed.
                if change.patched {
                    return Err(Error::invalid(
                        &kind.resource.group,
                        &kind.resource.kind,
                        name,
                        vec![bosun_core::FieldError::invalid("metadata.uid", uid, "field is immutable")],
                    ));
                }
                return Err(Error::conflict(format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    current.metadata.uid.as_deref().unwrap_or("")
                )));
            }
            self.check_types(kind, &mut obj)?;
            // Unknown fields a patch (other than an apply) leaves under Strict: 422, as kube-apiserver
            // answers a patched object its strict decoding refuses.
            self.check_fields(kind, &obj, change.validation)
                .map_err(|e| if change.patched && !change.applied { patched_invalid(e, &kind.resource, name) } else { e })?;
            // What the server owns stays the server's.
            {
                let (m, c) = (&mut obj.metadata, &current.metadata);
                m.name = Some(name.to_owned());
                m.namespace = ns.map(str::to_owned);
                m.uid = c.uid.clone();
                m.creation_timestamp = c.creation_timestamp.clone();
                m.deletion_timestamp = c.deletion_timestamp.clone();
                m.deletion_grace_period_seconds = c.deletion_grace_period_seconds;
                m.generation = c.generation;
                m.resource_version = Some(kv.mod_revision.to_string());
                m.self_link = None;
                if m.generate_name.is_none() {
                    m.generate_name = c.generate_name.clone();
                }
            }
            match change.subresource {
                None => kind.prepare_update(&mut obj, current),
                Some("status") => kind.prepare_status_update(&mut obj, current),
                Some(_) => {}
            }
            // A finalizer may not be added to an object that is going away.
            if current.metadata.deletion_timestamp.is_some() {
                let old: std::collections::HashSet<&String> = current.metadata.finalizers.iter().flatten().collect();
                if obj.metadata.finalizers.iter().flatten().any(|f| !old.contains(f)) {
                    return Err(Error::invalid(
                        &kind.resource.group,
                        &kind.resource.kind,
                        name,
                        vec![bosun_core::FieldError::forbidden(
                            "metadata.finalizers",
                            "no new finalizers can be added if the object is being deleted",
                        )],
                    ));
                }
            }
            // A binding changes one field of an already defaulted and validated pod.
            let binding = change.subresource == Some("binding");
            // A status write changes only `status` (the rest is the stored object's, already
            // defaulted and validated): only `status` is defaulted, and built-in validation,
            // which reads metadata and spec only, has nothing new to check.
            let status_only =
                change.subresource == Some("status") && !matches!(kind.rules, Rules::Custom | Rules::CustomResourceDefinition);
            // Defaulting and validation decode the object as its kind.
            let undecodable = |e: Error| if change.patched { patched_invalid(e, &kind.resource, name) } else { e };
            if status_only {
                kind.default_status_update(&mut obj).map_err(undecodable)?;
            } else if !binding {
                kind.default(&mut obj, false).map_err(undecodable)?;
            }
            if kind.rules == Rules::Service {
                carry_service_allocations(&mut obj, current);
            }
            let attrs = Attributes {
                operation: Operation::Update,
                resource: &kind.resource,
                subresource: change.subresource,
                namespace: ns,
                name,
                dry_run: change.dry_run,
            };
            self.admit(&attrs, &mut obj, Some(current)).await?;
            if !binding && !status_only {
                kind.validate(&obj, Some(current), self.node_ports).map_err(undecodable)?;
            }
            self.admit_validate(&attrs, &obj, Some(current)).await?;
            if spec_changed(&obj.data, &current.data) {
                obj.metadata.generation = Some(current.metadata.generation.unwrap_or(0) + 1);
            }
            // Recorded when the writer names itself, or when fields are already tracked (so that an
            // applier's ownership stays true); a binding is never recorded.
            let tracked = current.metadata.managed_fields.as_ref().is_some_and(|m| !m.is_empty());
            let manager = change.manager.filter(|m| !m.is_empty()).or(tracked.then_some("unknown"));
            if let Some(manager) = manager.filter(|_| !change.applied && change.subresource != Some("binding")) {
                self.record_fields(kind, Some(current), &mut obj, manager, change.subresource)?;
            }
            if obj.metadata == current.metadata && obj.data == current.data && obj.types == current.types {
                let mut same = current.clone();
                self.present(kind, &mut same);
                return Ok(same);
            }
            if change.dry_run {
                return Ok(obj);
            }
            // The last finalizer gone from an object being deleted (with no grace period left): delete it.
            let finished = obj.metadata.deletion_timestamp.is_some()
                && obj.metadata.finalizers.as_ref().is_none_or(Vec::is_empty)
                && obj.metadata.deletion_grace_period_seconds.unwrap_or(0) == 0
                && !(kind.rules == Rules::Namespace && namespace_finalizers_left(&obj));
            if finished {
                match self.storage.delete(&key, Some(kv.mod_revision)).await {
                    Ok(_) => {
                        self.on_removed(kind, &obj).await;
                        self.present(kind, &mut obj);
                        return Ok(obj);
                    }
                    Err(StorageError::Conflict { .. }) => continue,
                    Err(StorageError::NotFound { .. }) => return Err(Error::not_found(&kind.resource.group, &kind.resource.plural, name)),
                    Err(e) => return Err(codec::storage_error(e)),
                }
            }
            let allocated = if kind.rules == Rules::Service { self.allocate_service(&mut obj, Some(current)).await? } else { Vec::new() };
            let bytes = codec::encode_sized(&mut obj, kv.value.len() + kv.value.len() / 4)?;
            let lease = if kv.lease.is_some() { self.lease_for(kind).await } else { None };
            match self.storage.update(&key, bytes, kv.mod_revision, lease).await {
                Ok(new) => {
                    obj.metadata.resource_version = Some(new.mod_revision.to_string());
                    self.cache(kind).written(&key, new.mod_revision, &obj);
                    if kind.rules == Rules::Service {
                        self.release(&released_service_values(current, &obj)).await;
                    }
                    if kind.rules == Rules::CustomResourceDefinition {
                        self.serve_definition(&obj).await;
                    }
                    self.present(kind, &mut obj);
                    return Ok(obj);
                }
                Err(StorageError::Conflict { .. }) => {
                    self.release(&allocated).await;
                    continue;
                }
                Err(StorageError::NotFound { .. }) => {
                    self.release(&allocated).await;
                    return Err(Error::not_found(&kind.resource.group, &kind.resource.plural, name));
                }
                Err(e) => {
                    self.release(&allocated).await;
                    return Err(codec::storage_error(e));
                }
            }
        }
        Err(Error::conflict(format!("too many concurrent writes to {} \"{name}\"; try again", kind.resource.plural)))
    }

    /// Applies a patch to an object's JSON (strategic merge patch by the kind's merge keys,
    /// server-side apply with field managers).
    pub(crate) fn apply_patch(&self, kind: &Kind, current: &DynamicObject, patch: &Patch, ctx: &ApplyContext) -> Result<DynamicObject> {
        let name = current.metadata.name.as_deref().unwrap_or_default();
        let undecodable = |e: Error| patched_invalid(e, &kind.resource, name);
        match patch {
            Patch::Json(ops) => check_json_patch(ops)?,
            Patch::Merge(Value::Object(p)) if !p.contains_key("apiVersion") && !p.contains_key("kind") => {
                return merge_object(&kind.resource, current, p, None);
            }
            Patch::Strategic(Value::Object(p))
                if kind.rules != Rules::Custom
                    && !p.contains_key("apiVersion")
                    && !p.contains_key("kind")
                    && !crate::patch::has_top_level_directives(p) =>
            {
                return merge_object(&kind.resource, current, p, Some(crate::patch::builtin_schema(&kind.resource)?));
            }
            _ => {}
        }
        let doc = current.to_value();
        if matches!(patch, Patch::Strategic(_)) && kind.rules == Rules::Custom {
            return Err(crate::patch::PatchError::StrategicUnsupported {
                kind: format!("{}, Kind={}", kind.resource.api_version(), kind.resource.kind),
            }
            .into());
        }
        let patched = crate::patch::apply_patch(&kind.resource, &doc, patch, ctx).map_err(|e| match (patch, e) {
            // A well-formed JSON patch (checked above) whose operations cannot apply: 422, as
            // kube-apiserver answers any failure of a JSON patch's application.
            (Patch::Json(_), crate::patch::PatchError::Malformed(message)) => Error::invalid(
                &kind.resource.group,
                &kind.resource.kind,
                name,
                vec![bosun_core::FieldError { reason: "FieldValueInvalid".into(), field: "patch".into(), message }],
            ),
            (_, e) => e.into(),
        })?;
        if !patched.is_object() {
            return Err(undecodable(Error::bad_request("the patched object is not a JSON object")));
        }
        DynamicObject::from_value(patched).map_err(undecodable)
    }

    /// Patches an object (or a subresource's view of it: `status`, `ephemeralcontainers`);
    /// server-side apply creates what does not exist. `shape`, given the stored object and the
    /// patched one, makes what is written of them (a subresource that takes only its part).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn patch_object(
        &self,
        kind: &Arc<Kind>,
        namespace: Option<&str>,
        name: &str,
        sub: Option<&str>,
        patch: &Patch,
        params: &bosun_core::PatchParams,
        shape: Option<&Shape<'_>>,
    ) -> Result<DynamicObject> {
        let applied = matches!(patch, Patch::Apply(_));
        if applied && params.field_manager.as_deref().is_none_or(str::is_empty) {
            return Err(Error::invalid("meta.k8s.io", "PatchOptions", "", vec![apply_needs_manager()]));
        }
        if let Patch::Apply(body) = patch
            && body.pointer("/metadata/managedFields").is_some_and(|m| !m.is_null())
        {
            return Err(Error::bad_request("metadata.managedFields must be nil"));
        }
        let mut ctx = ApplyContext::from_params(params);
        ctx.subresource = sub.map(str::to_owned);
        ctx.schema = kind.schema.as_ref().map(|s| s.shared());
        // As for creates and updates, a writer that names no manager is recorded (as `unknown`)
        // only where fields are already tracked: in-process controllers and node agents patch
        // status without one, and recording them cost every such write a field diff and every
        // later read of the object its managedFields.
        let manager = params.field_manager.as_deref().filter(|m| !m.is_empty());
        let change =
            Change { subresource: sub, dry_run: params.dry_run, validation: params.field_validation, manager, applied, patched: true };
        let result = self
            .update_object(kind, namespace, name, change, &|cur| {
                let patched = self.apply_patch(kind, cur, patch, &ctx)?;
                match shape {
                    Some(f) => f(cur, &patched),
                    None => Ok(patched),
                }
            })
            .await;
        match (result, patch) {
            (Err(e), Patch::Apply(body)) if e.is_not_found() && sub.is_none() => {
                let created = crate::patch::server_side_apply(&kind.resource, &Value::Null, body, &ctx)?;
                let mut obj = DynamicObject::from_value(created)?;
                if obj.metadata.name.as_deref().is_none_or(str::is_empty) {
                    obj.metadata.name = Some(name.to_owned());
                } else if obj.metadata.name.as_deref() != Some(name) {
                    return Err(Error::bad_request(format!(
                        "the name of the object ({}) does not match the name on the URL ({name})",
                        obj.metadata.name.as_deref().unwrap_or("")
                    )));
                }
                let create =
                    Create { dry_run: params.dry_run, field_manager: manager, field_validation: params.field_validation, applied: true };
                self.create_object(kind, namespace, obj, &create).await
            }
            (other, _) => other,
        }
    }

    /// Records a write in `metadata.managedFields`.
    pub(crate) fn record_fields(
        &self,
        kind: &Kind,
        old: Option<&DynamicObject>,
        obj: &mut DynamicObject,
        manager: &str,
        sub: Option<&str>,
    ) -> Result<()> {
        let mut ctx = ApplyContext::new(manager);
        ctx.subresource = sub.map(str::to_owned);
        ctx.schema = kind.schema.as_ref().map(|s| s.shared());
        // Only the top-level fields the write changed can hold changed fields: the others are
        // left out of both sides of the diff instead of being copied into JSON to compare equal.
        let changed: Option<Vec<&String>> = match (old.map(|o| &o.data), &obj.data) {
            (Some(Value::Object(o)), Value::Object(n)) => Some(
                n.iter()
                    .filter(|(k, v)| o.get(k.as_str()) != Some(v))
                    .map(|(k, _)| k)
                    .chain(o.keys().filter(|k| !n.contains_key(k.as_str())))
                    .collect(),
            ),
            _ => None,
        };
        let old = old.map(|o| document(o, changed.as_deref()));
        let mut new = document(obj, changed.as_deref());
        crate::patch::record_update(&kind.resource, old.as_ref(), &mut new, &ctx)?;
        let managed = new.get("metadata").and_then(|m| m.get("managedFields")).cloned();
        obj.metadata.managed_fields = match managed {
            Some(v) => serde_json::from_value(v).map_err(|e| Error::internal(format!("managedFields: {e}")))?,
            None => None,
        };
        Ok(())
    }

    /// The storage lease events are written under, so that they expire after the event TTL; one
    /// lease serves every event written within a tenth of the TTL (at most a minute).
    pub(crate) async fn lease_for(&self, kind: &Kind) -> Option<crate::storage::LeaseId> {
        if !matches!(kind.rules, Rules::CoreEvent | Rules::Event) || self.event_ttl.is_zero() {
            return None;
        }
        let reuse = (self.event_ttl / 10).min(std::time::Duration::from_secs(60));
        let mut lease = self.event_lease.lock().await;
        if let Some((id, at)) = *lease
            && at.elapsed() < reuse
        {
            return Some(id);
        }
        match self.storage.lease_grant(self.event_ttl + reuse).await {
            Ok(id) => {
                *lease = Some((id, std::time::Instant::now()));
                Some(id)
            }
            Err(error) => {
                tracing::warn!(%error, "event lease");
                None
            }
        }
    }

    /// Serves the kinds of a definition, their watch cache listed before any of their objects is written.
    pub(crate) async fn serve_definition(&self, crd: &DynamicObject) {
        let kinds = crd::kinds_of(crd);
        let first = kinds.first().map(|k| k.resource.clone());
        self.registry.register(kinds);
        if let Some(kind) = first.and_then(|r| self.registry.resolve(&r).ok()) {
            self.cache(&kind).wait_for(0).await;
        }
    }

    /// Called once an object is gone from storage: releases what it held.
    pub(crate) async fn on_removed(&self, kind: &Arc<Kind>, obj: &DynamicObject) {
        match kind.rules {
            Rules::Service => {
                let empty = DynamicObject::default();
                self.release(&released_service_values(obj, &empty)).await;
            }
            Rules::CustomResourceDefinition => {
                let kinds = crd::kinds_of(obj);
                if let Some(k) = kinds.first() {
                    // Every custom object goes with its definition.
                    let prefix = codec::prefix(&k.resource);
                    if let Ok(resp) = self.storage.range(crate::storage::RangeRequest::prefix(prefix)).await {
                        for kv in resp.kvs {
                            let _ = self.storage.delete(&kv.key, None).await;
                        }
                    }
                    self.registry.unregister(&k.resource.group, &k.resource.plural);
                    self.drop_cache(&k.resource);
                }
            }
            _ => {}
        }
    }
}

/// Written `managedFields` that do not decode are replaced by the stored object's (none on a
/// create), as kube-apiserver's field manager does: stored, they would fail every later apply and
/// recorded write of the object.
fn keep_managed_fields_readable(obj: &mut DynamicObject, live: Option<&DynamicObject>) {
    let Some(written) = obj.metadata.managed_fields.as_ref() else { return };
    if live.is_some_and(|l| l.metadata.managed_fields.as_ref() == Some(written)) {
        return;
    }
    let readable = serde_json::to_value(written).is_ok_and(|fields| {
        crate::patch::managed::decode_managed_fields(&serde_json::json!({"metadata": {"managedFields": fields}})).is_ok()
    });
    if !readable {
        obj.metadata.managed_fields = live.and_then(|l| l.metadata.managed_fields.clone());
    }
}

/// An apply names its field manager (kube-apiserver's ValidatePatchOptions).
/// What a subresource patch writes, given the stored object and the patched one (see
/// [`ApiServer::patch_object`]).
pub(crate) type Shape<'a> = dyn Fn(&DynamicObject, &DynamicObject) -> Result<DynamicObject> + Send + Sync + 'a;

pub(crate) fn apply_needs_manager() -> bosun_core::FieldError {
    let mut required = bosun_core::FieldError::required("fieldManager");
    required.message = "Required value: is required for apply patch".to_owned();
    required
}

/// The most operations a JSON patch may hold (kube-apiserver's limit).
const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// A JSON patch's shape, before it is applied: an array (400 otherwise) of objects (400, a
/// document that does not decode as operations), at most [`MAX_JSON_PATCH_OPERATIONS`] long (413).
fn check_json_patch(ops: &Value) -> Result<()> {
    let Some(ops) = ops.as_array() else {
        return Err(Error::bad_request("json patch must be an array of operations"));
    };
    if ops.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(Error::too_large(format!(
            "The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {}",
            ops.len()
        )));
    }
    if let Some(i) = ops.iter().position(|op| !op.is_object()) {
        return Err(Error::bad_request(format!("json patch operation {i} is not an object")));
    }
    Ok(())
}

/// A patched object that does not decode as its kind (a 400 from decoding): 422, as
/// kube-apiserver answers a patch that made its object undecodable (`patch: Invalid value`),
/// where the same body in a create or update is a 400. Other errors pass unchanged.
pub(crate) fn patched_invalid(err: Error, resource: &bosun_core::ApiResource, name: &str) -> Error {
    if err.code() != 400 {
        return err;
    }
    let message = err.to_string();
    Error::invalid(
        &resource.group,
        &resource.kind,
        name,
        vec![bosun_core::FieldError { reason: "FieldValueInvalid".into(), field: "patch".into(), message }],
    )
}

/// A JSON merge patch, or a strategic merge patch (with the kind's schema) without top-level
/// directives, that leaves type meta alone, applied to an object field by field: each top-level
/// member of such a patch merges into its own field only, so the untouched fields are copied as
/// they are instead of being encoded into one JSON document and decoded back, and the metadata
/// goes through JSON only when the patch names it. The same result as patching the object's JSON.
fn merge_object(
    resource: &bosun_core::ApiResource,
    current: &DynamicObject,
    patch: &serde_json::Map<String, Value>,
    schema: Option<crate::patch::Node>,
) -> Result<DynamicObject> {
    let name = current.metadata.name.as_deref().unwrap_or_default();
    let mut obj = current.clone();
    let Value::Object(data) = &mut obj.data else {
        return Err(patched_invalid(Error::bad_request("the patched object is not a JSON object"), resource, name));
    };
    let merge = |fields: &mut serde_json::Map<String, Value>, key: &String, value: &Value| -> Result<()> {
        match schema {
            Some(root) => crate::patch::strategic_merge_fields(root, fields, [(key, value)]).map_err(Error::from),
            None if value.is_null() => {
                fields.remove(key);
                Ok(())
            }
            None => {
                crate::patch::merge_patch::merge_into(fields.entry(key.clone()).or_insert(Value::Null), value);
                Ok(())
            }
        }
    };
    for (key, value) in patch {
        if key == "metadata" {
            let meta = serde_json::to_value(&current.metadata).map_err(|e| Error::internal(format!("encode metadata: {e}")))?;
            let mut holder = serde_json::Map::new();
            holder.insert("metadata".into(), meta);
            merge(&mut holder, key, value)?;
            obj.metadata = match holder.remove("metadata") {
                None | Some(Value::Null) => Default::default(),
                Some(meta) => serde_json::from_value(meta)
                    .map_err(|e| patched_invalid(Error::bad_request(format!("decode object: metadata: {e}")), resource, name))?,
            };
        } else {
            merge(data, key, value)?;
        }
    }
    Ok(obj)
}

/// An object as JSON for [`crate::patch::record_update`]: type meta, metadata and the top-level
/// fields `keys` names (all of them for `None`).
fn document(obj: &DynamicObject, keys: Option<&[&String]>) -> Value {
    let Some(keys) = keys else { return obj.to_value() };
    let mut map = serde_json::Map::new();
    if let Some(t) = &obj.types {
        map.insert("apiVersion".into(), Value::String(t.api_version.clone()));
        map.insert("kind".into(), Value::String(t.kind.clone()));
    }
    map.insert("metadata".into(), serde_json::to_value(&obj.metadata).unwrap_or(Value::Null));
    for k in keys {
        if let Some(v) = obj.data.get(k.as_str())
            && !matches!(k.as_str(), "apiVersion" | "kind" | "metadata")
        {
            map.insert((*k).clone(), v.clone());
        }
    }
    Value::Object(map)
}

fn namespace_finalizers_left(obj: &DynamicObject) -> bool {
    obj.data.get("spec").and_then(|s| s.get("finalizers")).and_then(Value::as_array).is_some_and(|f| !f.is_empty())
}

/// On update, a Service keeps its allocated cluster IP and node ports when the body leaves them out.
fn carry_service_allocations(obj: &mut DynamicObject, old: &DynamicObject) {
    let Some(old_spec) = old.data.get("spec") else { return };
    let Some(spec) = obj.data.get_mut("spec").and_then(Value::as_object_mut) else { return };
    if spec.get("type").and_then(Value::as_str) == Some("ExternalName") {
        return;
    }
    for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
        let missing = spec.get(field).is_none_or(|v| v.is_null() || v.as_str() == Some("") || v.as_array().is_some_and(Vec::is_empty));
        if missing && let Some(v) = old_spec.get(field) {
            spec.insert(field.into(), v.clone());
        }
    }
    let wants_ports = matches!(spec.get("type").and_then(Value::as_str), Some("NodePort" | "LoadBalancer"));
    if !wants_ports {
        return;
    }
    let old_ports = old_spec.get("ports").and_then(Value::as_array).cloned().unwrap_or_default();
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut() {
            if p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) != 0 {
                continue;
            }
            let same = old_ports.iter().find(|o| o.get("port") == p.get("port") && o.get("protocol") == p.get("protocol"));
            if let (Some(np), Some(map)) = (same.and_then(|o| o.get("nodePort")).cloned(), p.as_object_mut()) {
                map.insert("nodePort".into(), np);
            }
        }
    }
}

/// Allocation values the old service held that the new one no longer does, as `(is_ip, value)`.
fn released_service_values(old: &DynamicObject, new: &DynamicObject) -> Vec<(bool, String)> {
    let ip = |o: &DynamicObject| o.path_str("spec.clusterIP").map(|s| s.into_owned()).filter(|s| !s.is_empty() && s != "None");
    let ports = |o: &DynamicObject| -> Vec<String> {
        o.data
            .get("spec")
            .and_then(|s| s.get("ports"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("nodePort").and_then(Value::as_i64))
            .filter(|n| *n != 0)
            .map(|n| n.to_string())
            .collect()
    };
    let mut out = Vec::new();
    if let Some(old_ip) = ip(old)
        && ip(new).as_deref() != Some(old_ip.as_str())
    {
        out.push((true, old_ip));
    }
    let new_ports = ports(new);
    out.extend(ports(old).into_iter().filter(|p| !new_ports.contains(p)).map(|p| (false, p)));
    out
}

trait WithMessage {
    fn with_message(self, message: &str) -> Self;
}

impl WithMessage for bosun_core::FieldError {
    fn with_message(mut self, message: &str) -> Self {
        self.message = message.to_owned();
        self
    }
}
