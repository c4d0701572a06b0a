//! The generic protobuf wire decoder.

use super::schema::{Card, Field, Message, Special, Ty};
use super::schema_table::{KINDS, MESSAGES};
use base64::Engine as _;
use bosun_core::Error;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value};

/// The four bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// How deep messages may nest before the body is refused.
const MAX_DEPTH: usize = 64;

/// Wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// Decodes a `application/vnd.kubernetes.protobuf` request body into the object's JSON, with
/// `apiVersion` and `kind` from the envelope.
///
/// # Errors
/// 400 `BadRequest` when the body is not a well-formed envelope or message; 415
/// `UnsupportedMediaType` for a kind without a schema or an encoded (compressed) payload.
#[tracing::instrument(level = "debug", skip_all, fields(len = bytes.len()))]
pub fn decode_request(bytes: &[u8]) -> Result<Value, Error> {
    let body =
        bytes.strip_prefix(MAGIC.as_slice()).ok_or_else(|| Error::bad_request("protobuf body does not start with the magic k8s\\x00"))?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    let mut encoding = String::new();
    let mut r = Reader::new(body);
    let malformed = |e: String| Error::bad_request(format!("malformed protobuf envelope (runtime.Unknown): {e}"));
    while !r.done() {
        let (tag, wire) = r.key().map_err(malformed)?;
        match (tag, wire) {
            (1, LEN) => {
                let mut t = Reader::new(r.len_delimited().map_err(malformed)?);
                while !t.done() {
                    match t.key().map_err(malformed)? {
                        (1, LEN) => api_version = t.string().map_err(malformed)?,
                        (2, LEN) => kind = t.string().map_err(malformed)?,
                        (_, w) => t.skip(w).map_err(malformed)?,
                    }
                }
            }
            (2, LEN) => raw = r.len_delimited().map_err(malformed)?,
            (3, LEN) => encoding = r.string().map_err(malformed)?,
            (_, w) => r.skip(w).map_err(malformed)?,
        }
    }
    if kind.is_empty() {
        return Err(Error::bad_request("protobuf envelope carries no kind"));
    }
    if !encoding.is_empty() {
        return Err(Error::unsupported_media_type(format!("protobuf content encoding {encoding:?} is not supported")));
    }
    let index = message_for(&api_version, &kind).ok_or_else(|| super::unsupported(&api_version, &kind))?;
    let value =
        decode_message(index, raw, 0).map_err(|e| Error::bad_request(format!("malformed protobuf {kind} in {api_version}: {e}")))?;
    let mut object = match value {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    };
    object.insert("apiVersion".into(), Value::String(api_version));
    object.insert("kind".into(), Value::String(kind));
    Ok(Value::Object(object))
}

/// The index of the message of a kind.
pub(super) fn message_for(api_version: &str, kind: &str) -> Option<u16> {
    if let Ok(i) = KINDS.binary_search_by(|(av, k, _)| (*av, *k).cmp(&(api_version, kind))) {
        return KINDS.get(i).map(|(_, _, n)| *n);
    }
    // Options bodies (DeleteOptions) are typed under any group version.
    if kind == "DeleteOptions" {
        return MESSAGES.iter().position(|m| m.name == "apimachinery.pkg.apis.meta.v1.DeleteOptions").and_then(|p| u16::try_from(p).ok());
    }
    None
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            if shift == 63 && byte > 1 {
                return Err("varint overflows 64 bits".into());
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn key(&mut self) -> Result<(u32, u8), String> {
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3).map_err(|_| format!("field number {} out of range", key >> 3))?;
        if tag == 0 {
            return Err("field number 0".into());
        }
        Ok((tag, (key & 7) as u8))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len()).ok_or("truncated field")?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn len_delimited(&mut self) -> Result<&'a [u8], String> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| "length out of range".to_string())?;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, String> {
        let bytes = self.len_delimited()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "string field is not UTF-8".to_string())
    }

    fn skip(&mut self, wire: u8) -> Result<(), String> {
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            LEN => self.len_delimited().map(drop),
            FIXED32 => self.take(4).map(drop),
            other => Err(format!("unsupported wire type {other}")),
        }
    }
}

fn message(index: u16) -> Result<&'static Message, String> {
    MESSAGES.get(usize::from(index)).ok_or_else(|| format!("no message {index} in the schema"))
}

/// Decodes one message; `None` for a value JSON would leave out (a zero `Time`).
fn decode_message(index: u16, bytes: &[u8], depth: usize) -> Result<Option<Value>, String> {
    if depth > MAX_DEPTH {
        return Err(format!("messages nest deeper than {MAX_DEPTH}"));
    }
    let msg = message(index)?;
    let mut r = Reader::new(bytes);
    let mut out = Map::new();
    while !r.done() {
        let (tag, wire) = r.key()?;
        let Some(field) = msg.fields.iter().find(|f| f.tag == tag) else {
            r.skip(wire)?;
            continue;
        };
        match field.card {
            Card::One => match scalar(field, wire, &mut r, depth)? {
                Some(v) => {
                    out.insert(field.json.to_string(), v);
                }
                None => {
                    out.remove(field.json);
                }
            },
            Card::Repeated => {
                let items = out.entry(field.json.to_string()).or_insert_with(|| Value::Array(Vec::new()));
                let Value::Array(items) = items else { return Err(format!("{}: not a list", field.json)) };
                if wire == LEN && matches!(field.ty, Ty::Int32 | Ty::Int64 | Ty::Bool | Ty::Double) {
                    // packed
                    let mut p = Reader::new(r.len_delimited()?);
                    let packed_wire = if field.ty == Ty::Double { FIXED64 } else { VARINT };
                    while !p.done() {
                        items.extend(scalar(field, packed_wire, &mut p, depth)?);
                    }
                } else {
                    items.push(scalar(field, wire, &mut r, depth)?.unwrap_or(Value::Null));
                }
            }
            Card::Map => {
                expect(field, wire, LEN)?;
                let mut e = Reader::new(r.len_delimited()?);
                let mut key = String::new();
                let mut value = None;
                while !e.done() {
                    match e.key()? {
                        (1, LEN) => key = e.string()?,
                        (2, w) => value = scalar(field, w, &mut e, depth)?,
                        (_, w) => e.skip(w)?,
                    }
                }
                let value = match value {
                    Some(v) => v,
                    None => default_of(field.ty)?,
                };
                let map = out.entry(field.json.to_string()).or_insert_with(|| Value::Object(Map::new()));
                let Value::Object(map) = map else { return Err(format!("{}: not a map", field.json)) };
                map.insert(key, value);
            }
        }
    }
    match msg.special {
        Special::None => Ok(Some(Value::Object(out))),
        special => Ok(convert_special(special, &out)?),
    }
}

/// The value of a map entry without a value field: the type's zero.
fn default_of(ty: Ty) -> Result<Value, String> {
    Ok(match ty {
        Ty::String => Value::String(String::new()),
        Ty::Bytes => Value::String(String::new()),
        Ty::Int32 | Ty::Int64 => Value::from(0),
        Ty::Bool => Value::Bool(false),
        Ty::Double => Value::from(0.0),
        Ty::Message(i) => decode_message(i, &[], 0)?.unwrap_or(Value::Null),
    })
}

fn expect(field: &Field, wire: u8, want: u8) -> Result<(), String> {
    if wire == want { Ok(()) } else { Err(format!("field {} ({}) has wire type {wire}, expected {want}", field.tag, field.json)) }
}

/// One value of a field. Empty strings in singular fields are left out, as Go's JSON does for
/// its `omitempty` fields (gogo-protobuf writes every non-pointer string, even empty).
fn scalar(field: &Field, wire: u8, r: &mut Reader<'_>, depth: usize) -> Result<Option<Value>, String> {
    Ok(match field.ty {
        Ty::String => {
            expect(field, wire, LEN)?;
            let s = r.string()?;
            if s.is_empty() && field.card == Card::One { None } else { Some(Value::String(s)) }
        }
        Ty::Bytes => {
            expect(field, wire, LEN)?;
            Some(Value::String(base64::engine::general_purpose::STANDARD.encode(r.len_delimited()?)))
        }
        Ty::Int32 => {
            expect(field, wire, VARINT)?;
            #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
            let v = r.varint()? as i64 as i32;
            Some(Value::from(v))
        }
        Ty::Int64 => {
            expect(field, wire, VARINT)?;
            #[allow(clippy::cast_possible_wrap)]
            let v = r.varint()? as i64;
            Some(Value::from(v))
        }
        Ty::Bool => {
            expect(field, wire, VARINT)?;
            Some(Value::Bool(r.varint()? != 0))
        }
        Ty::Double => {
            expect(field, wire, FIXED64)?;
            let b = r.take(8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            Some(serde_json::Number::from_f64(f64::from_le_bytes(a)).map_or(Value::Null, Value::Number))
        }
        Ty::Message(i) => {
            expect(field, wire, LEN)?;
            decode_message(i, r.len_delimited()?, depth + 1)?
        }
    })
}

fn int(map: &Map<String, Value>, key: &str) -> i64 {
    map.get(key).and_then(Value::as_i64).unwrap_or(0)
}

fn convert_special(special: Special, m: &Map<String, Value>) -> Result<Option<Value>, String> {
    Ok(match special {
        Special::None => Some(Value::Object(m.clone())),
        Special::Time | Special::MicroTime => {
            let (secs, nanos) = (int(m, "seconds"), int(m, "nanos"));
            if secs == 0 && nanos == 0 {
                return Ok(None);
            }
            let nanos = i32::try_from(nanos).map_err(|_| "Time nanos out of range".to_string())?;
            let ts =
                Timestamp::new(secs, if special == Special::Time { 0 } else { nanos }).map_err(|e| format!("Time out of range: {e}"))?;
            let whole = Timestamp::from_second(ts.as_second()).map_err(|e| format!("Time out of range: {e}"))?;
            let text = whole.to_string();
            Some(Value::String(if special == Special::Time {
                text
            } else {
                format!("{}.{:06}Z", text.trim_end_matches('Z'), nanos / 1000)
            }))
        }
        Special::Duration => Some(Value::String(go_duration(int(m, "duration")))),
        Special::Quantity => Some(m.get("string").cloned().unwrap_or_else(|| Value::String("0".into()))),
        Special::IntOrString => {
            if int(m, "type") == 1 {
                Some(m.get("strVal").cloned().unwrap_or_else(|| Value::String(String::new())))
            } else {
                Some(Value::from(int(m, "intVal")))
            }
        }
        Special::RawJson => {
            let raw = m.get("raw").and_then(Value::as_str).unwrap_or("");
            if raw.is_empty() {
                return Ok(None);
            }
            let bytes = base64::engine::general_purpose::STANDARD.decode(raw).map_err(|e| e.to_string())?;
            Some(serde_json::from_slice(&bytes).map_err(|e| format!("embedded JSON: {e}"))?)
        }
    })
}

/// A duration in nanoseconds as Go's `time.Duration.String()` writes it (`1h2m3.5s`, `150ms`).
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    let frac = |value: u64, unit: u64, suffix: &str| {
        let whole = value / unit;
        let rest = value % unit;
        if rest == 0 {
            format!("{whole}{suffix}")
        } else {
            let digits = unit.ilog10() as usize;
            let f = format!("{rest:0digits$}");
            format!("{whole}.{}{suffix}", f.trim_end_matches('0'))
        }
    };
    if n < 1_000 {
        return format!("{sign}{n}ns");
    }
    if n < 1_000_000 {
        return format!("{sign}{}", frac(n, 1_000, "µs"));
    }
    if n < 1_000_000_000 {
        return format!("{sign}{}", frac(n, 1_000_000, "ms"));
    }
    let secs = n / 1_000_000_000;
    let sub = n % 1_000_000_000;
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let seconds = frac(s * 1_000_000_000 + sub, 1_000_000_000, "s");
    if h > 0 {
        format!("{sign}{h}h{m}m{seconds}")
    } else if m > 0 {
        format!("{sign}{m}m{seconds}")
    } else {
        format!("{sign}{seconds}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(3_600_000_000_000 + 120_000_000_000), "1h2m0s");
        assert_eq!(go_duration(150_000_000), "150ms");
        assert_eq!(go_duration(-5_000_000_000), "-5s");
    }

    #[test]
    fn bad_magic_and_truncation_are_400() {
        assert_eq!(decode_request(b"{}").err().map(|e| e.code()), Some(400));
        assert_eq!(decode_request(b"k8s\0\x0a\x05ab").err().map(|e| e.code()), Some(400));
    }
}
