//! Bodies on the wire: reading with a size limit, decoding JSON and YAML with parse positions,
//! content negotiation, and building `Status` and object responses.

use bosun_core::{Error, Result};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use serde::Serialize;

/// The response body type of every handler: whole or streamed.
pub(crate) type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// The largest request body accepted (kube-apiserver's limit for writes).
pub(crate) const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// A whole body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// Reads a request body, refusing more than [`MAX_BODY_BYTES`] with 413.
pub(crate) async fn read_limited(body: hyper::body::Incoming, limit: usize) -> Result<Bytes> {
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(Error::too_large(format!("the request body is larger than the limit of {limit} bytes")))
        }
        Err(e) => Err(Error::bad_request(format!("read request body: {e}"))),
    }
}

/// The media type of a `Content-Type` header without parameters, lower-cased.
pub(crate) fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// The format of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Yaml,
    /// `application/vnd.kubernetes.protobuf`, decoded by [`crate::protobuf`].
    Protobuf,
}

/// The format of a whole object's body (create, update, delete options) a content type names;
/// 415 for anything else, patch types included: those only name a PATCH's body (read by the
/// patch handler), as kube-apiserver's create and update refuse them.
pub(crate) fn body_format(media: &str) -> Result<Format> {
    match media {
        "" | "application/json" | "*/*" => Ok(Format::Json),
        "application/yaml" | "application/x-yaml" | "text/yaml" => Ok(Format::Yaml),
        crate::protobuf::MEDIA_TYPE => Ok(Format::Protobuf),
        other => Err(Error::unsupported_media_type(format!(
            "the body of the request was in an unknown format ({other}) - accepted media types include: application/json, application/yaml"
        ))),
    }
}

/// Decodes a body as JSON or YAML; a malformed one is a 400 naming the line and column.
pub(crate) fn decode(bytes: &[u8], format: Format) -> Result<serde_json::Value> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::bad_request("the request body is empty"));
    }
    match format {
        Format::Protobuf => crate::protobuf::decode_request(bytes),
        Format::Json => serde_json::from_slice(bytes).map_err(|e| {
            Error::bad_request(format!("couldn't get version/kind; json parse error: {e} (line {}, column {})", e.line(), e.column()))
        }),
        Format::Yaml => {
            // JSON is YAML too, but serde_json gives better positions for it.
            if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
                && let Ok(v) = serde_json::from_slice(bytes)
            {
                return Ok(v);
            }
            let value: serde_yaml::Value = serde_yaml::from_slice(bytes).map_err(|e| {
                let at = e.location().map(|l| format!(" (line {}, column {})", l.line(), l.column())).unwrap_or_default();
                Error::bad_request(format!("error converting YAML to JSON: yaml: {e}{at}"))
            })?;
            serde_json::to_value(value).map_err(|e| Error::bad_request(format!("error converting YAML to JSON: {e}")))
        }
    }
}

/// What the client accepts, as far as the server can produce it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    /// Plain objects as JSON.
    Json,
    /// Plain objects as YAML.
    Yaml,
    /// `meta.k8s.io/v1` `Table`.
    Table,
    /// `meta.k8s.io/v1` `PartialObjectMetadata` (and `PartialObjectMetadataList` for lists).
    Metadata,
}

/// An object's JSON with the `apiVersion` and `kind` of its resource when it has none.
pub(crate) fn typed_value(obj: &bosun_core::DynamicObject, resource: &bosun_core::ApiResource) -> serde_json::Value {
    let mut value = obj.to_value();
    if let Some(map) = value.as_object_mut().filter(|m| !m.contains_key("kind")) {
        map.insert("apiVersion".into(), resource.api_version().into());
        map.insert("kind".into(), resource.kind.to_string().into());
    }
    value
}

/// An object reduced to `PartialObjectMetadata`.
pub(crate) fn partial_metadata(object: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| serde_json::json!({})),
    })
}

/// Picks the response format from `Accept`: a Table when asked for (as kubectl get does), JSON
/// when acceptable, YAML when only YAML is; 406 when nothing fits.
pub(crate) fn negotiate(headers: &HeaderMap) -> Result<Output> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.trim().is_empty() {
        return Ok(Output::Json);
    }
    let mut yaml = false;
    for part in accept.split(',') {
        let mut params = part.split(';').map(str::trim);
        let media = params.next().unwrap_or("").to_ascii_lowercase();
        let params: Vec<(&str, &str)> = params.filter_map(|p| p.split_once('=')).collect();
        let param = |k: &str| params.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| *v);
        match media.as_str() {
            "application/json" | "application/*" | "*/*" => match param("as") {
                None => return Ok(Output::Json),
                Some("Table") if param("g") == Some("meta.k8s.io") && matches!(param("v"), Some("v1" | "v1beta1")) => {
                    return Ok(Output::Table);
                }
                Some("PartialObjectMetadata" | "PartialObjectMetadataList")
                    if param("g") == Some("meta.k8s.io") && matches!(param("v"), Some("v1" | "v1beta1")) =>
                {
                    return Ok(Output::Metadata);
                }
                Some(_) => {}
            },
            "application/yaml" if param("as").is_none() => yaml = true,
            _ => {}
        }
    }
    if yaml {
        return Ok(Output::Yaml);
    }
    Err(Error::not_acceptable(format!(
        "only the following media types are accepted: application/json, application/yaml (asked for {accept})"
    )))
}

/// A response with a JSON (or YAML) body.
pub(crate) fn respond<T: Serialize + ?Sized>(code: StatusCode, value: &T, output: Output) -> Response<Body> {
    let (bytes, ctype) = match output {
        Output::Yaml => match serde_yaml::to_string(value) {
            Ok(s) => (Bytes::from(s), "application/yaml"),
            Err(e) => return status_response(&Error::internal(format!("encode yaml: {e}"))),
        },
        Output::Json | Output::Table | Output::Metadata => match serde_json::to_vec(value) {
            Ok(v) => (Bytes::from(v), "application/json"),
            Err(e) => return status_response(&Error::internal(format!("encode json: {e}"))),
        },
    };
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = code;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    resp
}

/// A `Status` response for an error, with its code.
pub(crate) fn status_response(err: &Error) -> Response<Body> {
    let mut status = serde_json::to_value(err.to_status()).unwrap_or_default();
    if let Some(map) = status.as_object_mut() {
        map.insert("kind".into(), "Status".into());
        map.insert("apiVersion".into(), "v1".into());
    }
    let code = StatusCode::from_u16(err.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    respond(code, &status, Output::Json)
}

/// A `Status` object (with type meta) as JSON.
pub(crate) fn status_value(status: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Status) -> serde_json::Value {
    let mut value = serde_json::to_value(status).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert("kind".into(), "Status".into());
        map.insert("apiVersion".into(), "v1".into());
    }
    value
}

/// A plain-text response (health checks, metrics).
pub(crate) fn text(code: StatusCode, body: impl Into<Bytes>, ctype: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = code;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn kubectl_get_asks_for_a_table() {
        let h = accept("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json");
        assert_eq!(negotiate(&h).ok(), Some(Output::Table));
        assert_eq!(negotiate(&accept("application/json")).ok(), Some(Output::Json));
        assert_eq!(negotiate(&HeaderMap::new()).ok(), Some(Output::Json));
        assert_eq!(negotiate(&accept("application/yaml")).ok(), Some(Output::Yaml));
        let meta = accept("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json");
        assert_eq!(negotiate(&meta).ok(), Some(Output::Metadata));
    }

    #[test]
    fn aggregated_discovery_falls_back_to_plain_json() {
        let h = accept(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json",
        );
        assert_eq!(negotiate(&h).ok(), Some(Output::Json));
    }

    #[test]
    fn protobuf_only_is_not_acceptable() {
        let err = negotiate(&accept("application/vnd.kubernetes.protobuf")).err();
        assert_eq!(err.map(|e| e.code()), Some(406));
    }

    #[test]
    fn malformed_json_names_its_position() {
        let err = decode(b"{\n  \"a\": 1,\n  \"b\" 2\n}", Format::Json).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn malformed_yaml_names_its_position() {
        let err = decode(b"a: 1\nb: [1, 2\nc: 3\n", Format::Yaml).err();
        assert_eq!(err.as_ref().map(Error::code), Some(400));
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("line"), "{msg}");
    }

    #[test]
    fn yaml_bodies_decode_to_json() -> Result<()> {
        let v = decode(b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  k: v\n", Format::Yaml)?;
        assert_eq!(v["metadata"]["name"], "x");
        assert_eq!(v["data"]["k"], "v");
        Ok(())
    }
}
