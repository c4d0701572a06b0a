//! Admission: plugins that may change (mutating) or refuse (validating) every write, run in order
//! after defaulting and before validation (mutating) and after validation (validating).

use super::ApiServer;
use async_trait::async_trait;
use bosun_core::{ApiResource, DynamicObject, Error, Result};

/// What a write does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// A create (also server-side apply of an absent object).
    Create,
    /// An update or patch.
    Update,
    /// A delete.
    Delete,
    /// A connect-style subresource (`binding`, `eviction`).
    Connect,
}

/// The request an admission plugin looks at.
#[derive(Debug, Clone, Copy)]
pub struct Attributes<'a> {
    /// What the write does.
    pub operation: Operation,
    /// The resource written.
    pub resource: &'a ApiResource,
    /// The subresource, e.g. `status`.
    pub subresource: Option<&'a str>,
    /// The namespace, for namespaced kinds.
    pub namespace: Option<&'a str>,
    /// The object's name (may be empty on create with `generateName` before generation).
    pub name: &'a str,
    /// Whether the write will not be persisted.
    pub dry_run: bool,
}

/// An admission plugin. Both hooks default to doing nothing.
#[async_trait]
pub trait AdmissionPlugin: Send + Sync + 'static {
    /// The plugin's name, for errors and logs.
    fn name(&self) -> &str;

    /// May change the object before it is validated and written. `old` is the stored object on update.
    async fn admit(&self, attrs: &Attributes<'_>, obj: &mut DynamicObject, old: Option<&DynamicObject>, server: &ApiServer) -> Result<()> {
        let _ = (attrs, obj, old, server);
        Ok(())
    }

    /// May refuse the (validated) write. On delete, `obj` is the stored object.
    async fn validate(&self, attrs: &Attributes<'_>, obj: &DynamicObject, old: Option<&DynamicObject>, server: &ApiServer) -> Result<()> {
        let _ = (attrs, obj, old, server);
        Ok(())
    }
}

/// Namespaces that can never be deleted.
const IMMORTAL: &[&str] = &["default", "kube-system", "kube-public"];

/// `NamespaceLifecycle`: no writes into a namespace that does not exist, no new objects in a
/// terminating one, and the system namespaces cannot be deleted.
#[derive(Debug, Default, Clone, Copy)]
pub struct NamespaceLifecycle;

#[async_trait]
impl AdmissionPlugin for NamespaceLifecycle {
    fn name(&self) -> &str {
        "NamespaceLifecycle"
    }

    async fn validate(&self, attrs: &Attributes<'_>, _obj: &DynamicObject, _old: Option<&DynamicObject>, server: &ApiServer) -> Result<()> {
        if attrs.resource.group.is_empty() && attrs.resource.plural == "namespaces" {
            if attrs.operation == Operation::Delete && IMMORTAL.contains(&attrs.name) {
                return Err(Error::forbidden(format!("namespace \"{}\" is forbidden: this namespace may not be deleted", attrs.name)));
            }
            return Ok(());
        }
        let Some(ns) = attrs.namespace.filter(|_| attrs.resource.namespaced) else { return Ok(()) };
        if attrs.operation == Operation::Delete {
            return Ok(());
        }
        let Some(terminating) = server.namespace_terminating(ns).await? else {
            return Err(Error::not_found("", "namespaces", ns));
        };
        if terminating && attrs.operation == Operation::Create {
            let res = &attrs.resource.plural;
            return Err(Error::forbidden(format!(
                "{res} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                attrs.name
            )));
        }
        Ok(())
    }
}

/// `ServiceAccount` (defaults only): pods without a service account run as `default`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ServiceAccountDefaults;

#[async_trait]
impl AdmissionPlugin for ServiceAccountDefaults {
    fn name(&self) -> &str {
        "ServiceAccount"
    }

    async fn admit(
        &self,
        attrs: &Attributes<'_>,
        obj: &mut DynamicObject,
        _old: Option<&DynamicObject>,
        _server: &ApiServer,
    ) -> Result<()> {
        if attrs.operation != Operation::Create
            || attrs.subresource.is_some()
            || !attrs.resource.group.is_empty()
            || attrs.resource.plural != "pods"
        {
            return Ok(());
        }
        let Some(spec) = obj.data.get_mut("spec").and_then(|s| s.as_object_mut()) else { return Ok(()) };
        let name = spec.get("serviceAccountName").and_then(|v| v.as_str()).filter(|s| !s.is_empty()).unwrap_or("default").to_owned();
        spec.insert("serviceAccountName".into(), name.clone().into());
        spec.entry("serviceAccount").or_insert_with(|| name.into());
        Ok(())
    }
}

/// `Priority`: resolves a pod's `priorityClassName` to its `priority` (403 if the class is missing).
#[derive(Debug, Default, Clone, Copy)]
pub struct Priority;

#[async_trait]
impl AdmissionPlugin for Priority {
    fn name(&self) -> &str {
        "Priority"
    }

    async fn admit(&self, attrs: &Attributes<'_>, obj: &mut DynamicObject, _old: Option<&DynamicObject>, server: &ApiServer) -> Result<()> {
        if attrs.operation != Operation::Create
            || attrs.subresource.is_some()
            || !attrs.resource.group.is_empty()
            || attrs.resource.plural != "pods"
        {
            return Ok(());
        }
        let class = obj.path_str("spec.priorityClassName").map(|c| c.into_owned()).filter(|c| !c.is_empty());
        let Some(class) = class else { return Ok(()) };
        let value = match class.as_str() {
            "system-node-critical" => Some(2_000_001_000_i64),
            "system-cluster-critical" => Some(2_000_000_000),
            _ => None,
        };
        let (value, policy) = match value {
            Some(v) => (v, None),
            None => {
                let res = bosun_core::resource::builtin("scheduling.k8s.io", "v1", "PriorityClass")
                    .ok_or_else(|| Error::internal("priorityclasses are not served"))?;
                let pc = match bosun_core::Client::get(server, bosun_core::Target::new(res, None), &class).await {
                    Ok(pc) => pc,
                    Err(e) if e.is_not_found() => {
                        return Err(Error::forbidden(format!(
                            "pods \"{}\" is forbidden: no PriorityClass with name {class} was found",
                            attrs.name
                        )));
                    }
                    Err(e) => return Err(e),
                };
                let v = pc.data.get("value").and_then(|v| v.as_i64()).unwrap_or(0);
                (v, pc.data.get("preemptionPolicy").and_then(|p| p.as_str()).map(str::to_owned))
            }
        };
        if let Some(spec) = obj.data.get_mut("spec").and_then(|s| s.as_object_mut()) {
            spec.insert("priority".into(), value.into());
            if let Some(p) = policy {
                spec.insert("preemptionPolicy".into(), p.into());
            }
        }
        Ok(())
    }
}

/// `DefaultStorageClass`: a PersistentVolumeClaim created without `storageClassName` gets the
/// class annotated `storageclass.kubernetes.io/is-default-class: "true"` (the newest when several
/// are); an explicit `""` means no class and is left alone.
#[derive(Debug, Default, Clone, Copy)]
pub struct DefaultStorageClass;

#[async_trait]
impl AdmissionPlugin for DefaultStorageClass {
    fn name(&self) -> &str {
        "DefaultStorageClass"
    }

    async fn admit(&self, attrs: &Attributes<'_>, obj: &mut DynamicObject, _old: Option<&DynamicObject>, server: &ApiServer) -> Result<()> {
        if attrs.operation != Operation::Create
            || attrs.subresource.is_some()
            || !attrs.resource.group.is_empty()
            || attrs.resource.plural != "persistentvolumeclaims"
        {
            return Ok(());
        }
        if obj.data.get("spec").and_then(|s| s.get("storageClassName")).is_some_and(|c| !c.is_null()) {
            return Ok(());
        }
        let Some(res) = bosun_core::resource::builtin("storage.k8s.io", "v1", "StorageClass") else { return Ok(()) };
        let classes = bosun_core::Client::list(server, bosun_core::Target::new(res, None), &Default::default()).await?;
        let default = classes
            .items
            .iter()
            .filter(|c| {
                c.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("storageclass.kubernetes.io/is-default-class"))
                    .is_some_and(|v| v == "true")
            })
            .max_by(|a, b| {
                let t = |c: &DynamicObject| c.metadata.creation_timestamp.as_ref().map(|t| t.0);
                t(a).cmp(&t(b)).then_with(|| b.metadata.name.cmp(&a.metadata.name))
            });
        let Some(name) = default.and_then(|c| c.metadata.name.clone()) else { return Ok(()) };
        if let Some(spec) =
            obj.data.as_object_mut().map(|o| o.entry("spec").or_insert_with(|| serde_json::json!({}))).and_then(|s| s.as_object_mut())
        {
            spec.insert("storageClassName".into(), name.into());
        }
        Ok(())
    }
}

/// The plugins a server runs by default, in order.
pub fn default_plugins() -> Vec<std::sync::Arc<dyn AdmissionPlugin>> {
    vec![
        std::sync::Arc::new(NamespaceLifecycle),
        std::sync::Arc::new(ServiceAccountDefaults),
        std::sync::Arc::new(Priority),
        std::sync::Arc::new(DefaultStorageClass),
    ]
}
