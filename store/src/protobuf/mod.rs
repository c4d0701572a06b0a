//! Request bodies in Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`),
//! decoded into the JSON the rest of the server works on.
//!
//! The envelope is the magic `k8s\0` followed by a `runtime.Unknown` message
//! `{1: typeMeta{1: apiVersion, 2: kind}, 2: raw, 3: contentEncoding, 4: contentType}`; `raw` is
//! the object as in `k8s.io/api`'s `generated.proto`. A generic wire decoder walks it, driven by
//! a schema table generated from the `k8s-pb` and `k8s-openapi` sources by
//! `generate_schema.py`.

mod decode;
mod schema;
#[rustfmt::skip]
#[allow(clippy::all)]
mod schema_table;

use bosun_core::Error;

pub use decode::{MAGIC, decode_request};

/// The media type of Kubernetes' protobuf encoding.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Whether the decoder knows the protobuf schema of `kind` in `api_version`.
#[must_use]
pub fn supports(api_version: &str, kind: &str) -> bool {
    decode::message_for(api_version, kind).is_some()
}

pub(crate) fn unsupported(api_version: &str, kind: &str) -> Error {
    Error::unsupported_media_type(format!(
        "the protobuf encoding of {kind} in {api_version} is not supported by this server: send application/json"
    ))
}
