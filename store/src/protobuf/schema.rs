//! The shape of the generated schema table (`schema_table.rs`).

/// How a message is mapped to JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Special {
    /// Field by field, as a JSON object.
    None,
    /// `metav1.Time`: `{1: seconds, 2: nanos}` as an RFC 3339 string with second precision.
    Time,
    /// `metav1.MicroTime`: as `Time`, with microseconds.
    MicroTime,
    /// `metav1.Duration`: `{1: nanoseconds}` as a Go duration string.
    Duration,
    /// `resource.Quantity`: `{1: string}` as the string.
    Quantity,
    /// `intstr.IntOrString`: `{1: type, 2: intVal, 3: strVal}` as a number or a string.
    IntOrString,
    /// `{1: raw bytes}` holding JSON (`RawExtension`, `FieldsV1`, apiextensions `JSON`).
    RawJson,
}

/// The wire type of a field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ty {
    String,
    Bytes,
    Int32,
    Int64,
    Bool,
    Double,
    /// A message: its index in `MESSAGES`.
    Message(u16),
}

/// The cardinality of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Card {
    /// At most one value.
    One,
    /// A JSON array.
    Repeated,
    /// `map<string, Ty>`: entries `{1: key, 2: value}`, a JSON object.
    Map,
}

/// One field of a message.
#[derive(Debug)]
pub(super) struct Field {
    pub(super) tag: u32,
    pub(super) json: &'static str,
    pub(super) ty: Ty,
    pub(super) card: Card,
}

/// One message.
#[derive(Debug)]
pub(super) struct Message {
    /// The message's path in k8s-pb (e.g. `api.core.v1.Pod`).
    pub(super) name: &'static str,
    pub(super) special: Special,
    /// Sorted by tag.
    pub(super) fields: &'static [Field],
}
