//! Objects: the trait every API object implements, typed kinds from `k8s-openapi`, and `DynamicObject`.

use crate::error::{Error, Result};
use crate::resource::{self, ApiResource};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// An API object: it has `ObjectMeta` and converts to and from JSON.
pub trait Object: Clone + Serialize + DeserializeOwned + Send + Sync + std::fmt::Debug + 'static {
    /// The object's metadata.
    fn meta(&self) -> &ObjectMeta;
    /// The object's metadata, mutably.
    fn meta_mut(&mut self) -> &mut ObjectMeta;

    /// `metadata.name`, or empty.
    fn name(&self) -> &str {
        self.meta().name.as_deref().unwrap_or("")
    }

    /// `metadata.namespace`, if set.
    fn namespace(&self) -> Option<&str> {
        self.meta().namespace.as_deref()
    }

    /// `metadata.uid`, or empty.
    fn uid(&self) -> &str {
        self.meta().uid.as_deref().unwrap_or("")
    }

    /// `metadata.resourceVersion`, or empty.
    fn resource_version(&self) -> &str {
        self.meta().resource_version.as_deref().unwrap_or("")
    }
}

/// A kind whose descriptor is known at compile time: every `k8s-openapi` kind.
pub trait TypedObject: Object {
    /// The kind's descriptor: the built-in registry's when it has the kind, else derived from the type.
    fn api_resource() -> ApiResource;
}

impl<K> Object for K
where
    K: k8s_openapi::Metadata<Ty = ObjectMeta> + Clone + Serialize + DeserializeOwned + Send + Sync + std::fmt::Debug + 'static,
{
    fn meta(&self) -> &ObjectMeta {
        k8s_openapi::Metadata::metadata(self)
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        k8s_openapi::Metadata::metadata_mut(self)
    }
}

impl<K> TypedObject for K
where
    K: k8s_openapi::Resource
        + k8s_openapi::Metadata<Ty = ObjectMeta>
        + Clone
        + Serialize
        + DeserializeOwned
        + Send
        + Sync
        + std::fmt::Debug
        + 'static,
{
    fn api_resource() -> ApiResource {
        if let Some(r) = resource::builtin(K::GROUP, K::VERSION, K::KIND) {
            return r.clone();
        }
        let namespaced = std::any::type_name::<K::Scope>().ends_with("NamespaceResourceScope");
        ApiResource::new(K::GROUP, K::VERSION, K::KIND, K::URL_PATH_SEGMENT, namespaced)
    }
}

/// `apiVersion` and `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TypeMeta {
    /// `group/version`, or `v1` for the core group.
    pub api_version: String,
    /// The kind, e.g. `Pod`.
    pub kind: String,
}

impl TypeMeta {
    /// The type meta of objects of this resource.
    pub fn of(resource: &ApiResource) -> Self {
        Self { api_version: resource.api_version(), kind: resource.kind.to_string() }
    }
}

/// An object of any kind: type meta, `ObjectMeta` and the rest as JSON.
///
/// The typed kinds convert to and from it through serde; it is what the [`Client`](crate::Client) trait speaks.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DynamicObject {
    /// `apiVersion` and `kind`; absent in some watch payloads and patches.
    pub types: Option<TypeMeta>,
    /// The object's metadata.
    pub metadata: ObjectMeta,
    /// Everything else (`spec`, `status`, `data`...), as a JSON object.
    pub data: serde_json::Value,
}

impl Serialize for DynamicObject {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let extra = self.data.as_object();
        let mut map = serializer.serialize_map(None)?;
        if let Some(types) = &self.types {
            map.serialize_entry("apiVersion", &types.api_version)?;
            map.serialize_entry("kind", &types.kind)?;
        }
        map.serialize_entry("metadata", &self.metadata)?;
        for (k, v) in extra.into_iter().flatten() {
            if !matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for DynamicObject {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let map = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
        Self::from_map(map).map_err(serde::de::Error::custom)
    }
}

impl DynamicObject {
    /// An empty object of this resource with this name.
    pub fn new(resource: &ApiResource, name: impl Into<String>) -> Self {
        Self {
            types: Some(TypeMeta::of(resource)),
            metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() },
            data: serde_json::Value::Object(serde_json::Map::new()),
        }
    }

    /// Sets the namespace.
    #[must_use]
    pub fn within(mut self, namespace: impl Into<String>) -> Self {
        self.metadata.namespace = Some(namespace.into());
        self
    }

    /// Sets the data (everything but type meta and metadata).
    #[must_use]
    pub fn data(mut self, data: serde_json::Value) -> Self {
        self.data = data;
        self
    }

    /// Converts any object into a `DynamicObject`.
    pub fn from_typed<K: Object>(obj: &K) -> Result<Self> {
        let value = serde_json::to_value(obj).map_err(|e| Error::internal(format!("encode object: {e}")))?;
        Self::from_value(value)
    }

    /// Converts any object into a `DynamicObject`, consuming it: the metadata moves over as it
    /// is, without a JSON detour.
    pub fn from_typed_owned<K: Object>(mut obj: K) -> Result<Self> {
        let metadata = std::mem::take(obj.meta_mut());
        let value = serde_json::to_value(&obj).map_err(|e| Error::internal(format!("encode object: {e}")))?;
        let mut dynamic = Self::from_value(value)?;
        dynamic.metadata = metadata;
        Ok(dynamic)
    }

    /// Converts a `DynamicObject` into a typed kind, consuming it: strings and subtrees move into
    /// the typed object instead of being copied, and the metadata moves over as it is. A
    /// mismatching body is a `BadRequest`, as [`to_typed`](Self::to_typed) answers.
    pub fn into_typed<K: Object>(self) -> Result<K> {
        use serde::de::value::MapDeserializer;
        let Self { types, metadata, data } = self;
        let serde_json::Value::Object(map) = data else {
            let mut k: K = Self { types, metadata: ObjectMeta::default(), data }.to_typed()?;
            *k.meta_mut() = metadata;
            return Ok(k);
        };
        let head = types.into_iter().flat_map(|t| [("apiVersion".to_owned(), t.api_version.into()), ("kind".to_owned(), t.kind.into())]);
        let body = map.into_iter().filter(|(k, _)| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata"));
        let mut k = K::deserialize(MapDeserializer::<_, serde_json::Error>::new(head.chain(body)))
            .map_err(|e| Error::bad_request(format!("decode {}: {e}", std::any::type_name::<K>())))?;
        // Missing metadata decodes as the default: the object's own goes in whole.
        *k.meta_mut() = metadata;
        Ok(k)
    }

    /// Converts a `DynamicObject` into a typed kind. A mismatching body is a `BadRequest`.
    ///
    /// The typed object is read straight from this one's fields (only the metadata goes through
    /// an intermediate JSON value), so the body is copied once, not twice.
    pub fn to_typed<K: Object>(&self) -> Result<K> {
        use serde::de::value::MapDeserializer;
        let decode = |e: serde_json::Error| Error::bad_request(format!("decode {}: {e}", std::any::type_name::<K>()));
        let Some(data) = self.data.as_object() else {
            let value = serde_json::to_value(self).map_err(|e| Error::internal(format!("encode object: {e}")))?;
            return serde_json::from_value(value).map_err(decode);
        };
        let types =
            self.types.as_ref().map(|t| (serde_json::Value::from(t.api_version.as_str()), serde_json::Value::from(t.kind.as_str())));
        let metadata = serde_json::to_value(&self.metadata).map_err(|e| Error::internal(format!("encode metadata: {e}")))?;
        let head = types.iter().flat_map(|(api_version, kind)| [("apiVersion", api_version), ("kind", kind)]);
        let body = data.iter().filter(|(k, _)| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata")).map(|(k, v)| (k.as_str(), v));
        let fields = head.chain(std::iter::once(("metadata", &metadata))).chain(body);
        // Deserializing the map also checks that every entry was read.
        K::deserialize(MapDeserializer::<_, serde_json::Error>::new(fields)).map_err(decode)
    }

    /// Parses a JSON value, e.g. a request body. An object's top-level map is taken apart, not
    /// rebuilt: its subtrees move into the result.
    pub fn from_value(value: serde_json::Value) -> Result<Self> {
        let bad = |e: String| Error::bad_request(format!("decode object: {e}"));
        match value {
            serde_json::Value::Object(map) => Self::from_map(map).map_err(bad),
            other => serde_json::from_value(other).map_err(|e| bad(e.to_string())),
        }
    }

    /// The object of a JSON map: `apiVersion`, `kind` and `metadata` taken out, the rest is data.
    fn from_map(mut map: serde_json::Map<String, serde_json::Value>) -> std::result::Result<Self, String> {
        let mut text = |field: &str| match map.remove(field) {
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(other) => Err(format!("{field}: expected a string, found {other}")),
        };
        let api_version = text("apiVersion")?;
        let kind = text("kind")?;
        let metadata = match map.remove("metadata") {
            Some(serde_json::Value::Null) | None => ObjectMeta::default(),
            Some(m) => serde_json::from_value(m).map_err(|e| format!("metadata: {e}"))?,
        };
        let types = match (api_version, kind) {
            (None, None) => None,
            (a, k) => Some(TypeMeta { api_version: a.unwrap_or_default(), kind: k.unwrap_or_default() }),
        };
        Ok(Self { types, metadata, data: serde_json::Value::Object(map) })
    }

    /// The whole object as one JSON value.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// A top-level field of the data, e.g. `spec`.
    pub fn field(&self, name: &str) -> Option<&serde_json::Value> {
        self.data.get(name)
    }

    /// A dotted path below the object, e.g. `spec.nodeName` or `metadata.name`, as a string if it is a scalar.
    pub fn path_str(&self, path: &str) -> Option<Cow<'_, str>> {
        match path {
            "metadata.name" => return self.metadata.name.as_deref().map(Cow::Borrowed),
            "metadata.namespace" => return self.metadata.namespace.as_deref().map(Cow::Borrowed),
            "metadata.uid" => return self.metadata.uid.as_deref().map(Cow::Borrowed),
            _ => {}
        }
        let mut at = &self.data;
        for part in path.split('.') {
            at = at.get(part)?;
        }
        match at {
            serde_json::Value::String(s) => Some(Cow::Borrowed(s)),
            serde_json::Value::Bool(b) => Some(Cow::Owned(b.to_string())),
            serde_json::Value::Number(n) => Some(Cow::Owned(n.to_string())),
            _ => None,
        }
    }
}

impl Object for DynamicObject {
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A page of a list: the items and the list's resourceVersion and continue token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectList<K> {
    /// `apiVersion` and `kind` (`PodList`...).
    #[serde(flatten, default)]
    pub types: TypeMeta,
    /// `resourceVersion`, `continue` and `remainingItemCount`.
    #[serde(default)]
    pub metadata: ListMeta,
    /// The objects; always present, possibly empty.
    #[serde(default = "Vec::new")]
    pub items: Vec<K>,
}

impl<K> ObjectList<K> {
    /// The list's resourceVersion, or empty.
    pub fn resource_version(&self) -> &str {
        self.metadata.resource_version.as_deref().unwrap_or("")
    }

    /// The continue token, when there are more pages.
    pub fn continue_token(&self) -> Option<&str> {
        self.metadata.continue_.as_deref().filter(|c| !c.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{Namespace, Pod};

    #[test]
    fn typed_kinds_know_their_descriptor() {
        let pod = Pod::api_resource();
        assert_eq!((pod.plural.as_ref(), pod.namespaced), ("pods", true));
        assert_eq!(pod.short_names, vec!["po"]);
        let ns = Namespace::api_resource();
        assert!(!ns.namespaced);
        assert_eq!(Deployment::api_resource().api_version(), "apps/v1");
        // A kind the registry does not list still gets a descriptor from its type.
        let csr = k8s_openapi::api::certificates::v1::CertificateSigningRequest::api_resource();
        assert_eq!((csr.plural.as_ref(), csr.namespaced), ("certificatesigningrequests", false));
    }

    #[test]
    fn dynamic_objects_round_trip_typed_ones() -> Result<()> {
        let value = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]},
        });
        let dynamic = DynamicObject::from_value(value.clone())?;
        assert_eq!(dynamic.name(), "p");
        assert_eq!(dynamic.path_str("spec.nodeName").as_deref(), Some("n1"));
        assert_eq!(dynamic.path_str("metadata.namespace").as_deref(), Some("ns"));
        assert_eq!(dynamic.to_value(), value);
        let pod: Pod = dynamic.to_typed()?;
        assert_eq!(pod.spec.as_ref().and_then(|s| s.node_name.as_deref()), Some("n1"));
        assert_eq!(DynamicObject::from_typed(&pod)?, dynamic);
        Ok(())
    }

    #[test]
    fn a_rich_object_survives_the_borrowed_conversion_unchanged() -> Result<()> {
        let value = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "resourceVersion": "7", "creationTimestamp": "2026-11-22T10:00:00Z",
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1", "controller": true}]},
            "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}},
                                     "ports": [{"containerPort": 8080, "protocol": "TCP"}]}],
                     "terminationGracePeriodSeconds": 5, "hostNetwork": false},
            "status": {"phase": "Running", "podIP": "10.88.0.4", "conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [{"name": "c", "image": "busybox", "imageID": "", "ready": true, "restartCount": 2,
                                              "state": {"running": {"startedAt": "2026-11-22T10:00:01Z"}}}]},
        });
        let dynamic = DynamicObject::from_value(value.clone())?;
        let pod: Pod = dynamic.to_typed()?;
        let through_value: Pod = serde_json::from_value(value).map_err(|e| Error::internal(e.to_string()))?;
        assert_eq!(pod, through_value);
        assert_eq!(DynamicObject::from_typed(&pod)?, dynamic);
        // The kind is checked: a Pod's body is no Namespace.
        assert_eq!(dynamic.to_typed::<Namespace>().err().map(|e| e.code()), Some(400));
        // The consuming conversions give the same objects.
        assert_eq!(dynamic.clone().into_typed::<Pod>()?, pod);
        assert_eq!(DynamicObject::from_typed_owned(pod.clone())?, dynamic);
        assert_eq!(dynamic.clone().into_typed::<Namespace>().err().map(|e| e.code()), Some(400));
        Ok(())
    }

    #[test]
    fn parsing_checks_the_type_fields_and_the_metadata() {
        let code = |v: serde_json::Value| DynamicObject::from_value(v).err().map(|e| e.code());
        assert_eq!(code(serde_json::json!({"apiVersion": 1, "kind": "Pod"})), Some(400));
        assert_eq!(code(serde_json::json!({"kind": ["Pod"]})), Some(400));
        assert_eq!(code(serde_json::json!({"metadata": {"name": 5}})), Some(400));
        assert_eq!(code(serde_json::json!([1, 2])), Some(400));
        assert_eq!(code(serde_json::json!("pod")), Some(400));
        let Ok(bare) = DynamicObject::from_value(serde_json::json!({"metadata": null, "kind": null, "spec": {}})) else { unreachable!() };
        assert_eq!((bare.types, bare.metadata, bare.data), (None, ObjectMeta::default(), serde_json::json!({"spec": {}})));
        let Ok(kind_only) = DynamicObject::from_value(serde_json::json!({"kind": "Pod"})) else { unreachable!() };
        assert_eq!(kind_only.types, Some(TypeMeta { api_version: String::new(), kind: "Pod".into() }));
    }

    #[test]
    fn a_body_of_the_wrong_shape_is_a_bad_request() {
        let dynamic = DynamicObject::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": 3}}));
        let Ok(dynamic) = dynamic else { unreachable!() };
        let err = dynamic.to_typed::<Pod>().err();
        assert_eq!(err.map(|e| e.code()), Some(400));
        assert_eq!(dynamic.into_typed::<Pod>().err().map(|e| e.code()), Some(400));
    }

    #[test]
    fn lists_always_serialise_items() -> Result<()> {
        let list: ObjectList<DynamicObject> = ObjectList { types: TypeMeta::default(), metadata: ListMeta::default(), items: vec![] };
        let json = serde_json::to_value(&list).map_err(|e| Error::internal(e.to_string()))?;
        assert_eq!(json.get("items"), Some(&serde_json::json!([])));
        Ok(())
    }
}
