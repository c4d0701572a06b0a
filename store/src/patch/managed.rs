//! `metadata.managedFields`: its entries (manager, operation, apiVersion, time, `FieldsV1`), read
//! from and written into objects in the order kube-apiserver keeps them.

use serde_json::{Map, Value};

use super::error::{PatchError, Result};
use super::fieldpath::FieldSet;

/// The manager Kubernetes credits with the fields of an object that had no `managedFields`
/// when it was first applied to.
pub const BEFORE_FIRST_APPLY: &str = "before-first-apply";

pub(crate) const APPLY: &str = "Apply";
pub(crate) const UPDATE: &str = "Update";

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedFieldsEntry {
    /// The field manager.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// The `apiVersion` the manager wrote with.
    pub api_version: String,
    /// When the manager last changed its fields (RFC 3339).
    pub time: Option<String>,
    /// The subresource written through, if any.
    pub subresource: Option<String>,
    /// The fields the manager owns.
    pub fields: FieldSet,
}

impl ManagedFieldsEntry {
    pub(crate) fn same_owner(&self, manager: &str, operation: &str, api_version: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
            && (operation == APPLY || self.api_version == api_version)
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), Value::String(self.manager.clone()));
        m.insert("operation".into(), Value::String(self.operation.clone()));
        m.insert("apiVersion".into(), Value::String(self.api_version.clone()));
        if let Some(t) = &self.time {
            m.insert("time".into(), Value::String(t.clone()));
        }
        m.insert("fieldsType".into(), Value::String("FieldsV1".into()));
        m.insert("fieldsV1".into(), self.fields.to_fields_v1());
        if let Some(s) = &self.subresource {
            m.insert("subresource".into(), Value::String(s.clone()));
        }
        Value::Object(m)
    }

    fn from_json(v: &Value) -> Option<Self> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        if v.get("fieldsType").and_then(Value::as_str).is_some_and(|t| t != "FieldsV1") {
            return None;
        }
        Some(Self {
            manager: s("manager")?,
            operation: s("operation")?,
            api_version: s("apiVersion").unwrap_or_default(),
            time: s("time"),
            subresource: s("subresource").filter(|s| !s.is_empty()),
            fields: FieldSet::from_fields_v1(v.get("fieldsV1").unwrap_or(&Value::Object(Map::new())))?,
        })
    }
}

/// Reads `metadata.managedFields`; `Err` when an entry is not well formed.
pub fn decode_managed_fields(obj: &Value) -> Result<Vec<ManagedFieldsEntry>> {
    let Some(list) = obj.pointer("/metadata/managedFields") else { return Ok(Vec::new()) };
    let Some(items) = list.as_array() else {
        return Err(PatchError::malformed("metadata.managedFields must be a list"));
    };
    let mut out = Vec::new();
    for item in items {
        // `[{}]` is how a client resets managed fields: entries without a manager are dropped.
        if item.as_object().is_some_and(Map::is_empty) {
            continue;
        }
        out.push(
            ManagedFieldsEntry::from_json(item)
                .ok_or_else(|| PatchError::malformed(format!("invalid metadata.managedFields entry: {item}")))?,
        );
    }
    Ok(out)
}

/// Writes entries into `metadata.managedFields`, sorted as kube-apiserver sorts them; no entry removes the field.
pub fn encode_managed_fields(obj: &mut Value, mut entries: Vec<ManagedFieldsEntry>) {
    entries.retain(|e| !e.fields.is_empty());
    entries.sort_by(|p, q| {
        (
            p.operation.as_str(),
            p.time.as_deref().unwrap_or(""),
            p.manager.as_str(),
            p.api_version.as_str(),
            p.subresource.as_deref().unwrap_or(""),
        )
            .cmp(&(
                q.operation.as_str(),
                q.time.as_deref().unwrap_or(""),
                q.manager.as_str(),
                q.api_version.as_str(),
                q.subresource.as_deref().unwrap_or(""),
            ))
    });
    let Some(meta) = obj.as_object_mut().map(|o| o.entry("metadata").or_insert_with(|| Value::Object(Map::new()))) else { return };
    let Some(meta) = meta.as_object_mut() else { return };
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(entries.iter().map(ManagedFieldsEntry::to_json).collect()));
    }
}

/// The current UTC time as RFC 3339 with second precision, as `metav1.Time` serializes.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let secs = i64::try_from(secs).unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}
