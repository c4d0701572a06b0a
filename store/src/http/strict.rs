//! Strict decoding: a JSON or YAML body decoded to a value while noting its duplicate fields, as
//! kube-apiserver's strict decoder reports them (`duplicate field "spec.replicas"`) for
//! `fieldValidation=Strict` (refused) and `Warn` (a `Warning` header). The last occurrence of a
//! duplicated field wins, as it does in kube-apiserver.

use super::body::{self, Format};
use bosun_core::Result;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::cell::RefCell;
use std::fmt;

/// At most this many duplicates are noted (kube-apiserver stops at 100 strict errors).
const MAX_DUPLICATES: usize = 100;

/// A decoded body and the paths of the fields it repeats.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decoded {
    /// The body; for a repeated field, its last value.
    pub value: Value,
    /// Repeated fields in the order met, as paths (`spec.template.spec.containers[0].name`).
    pub duplicates: Vec<String>,
}

/// Decodes a body as [`body::decode`] does, also finding repeated fields in JSON and YAML.
pub(crate) fn decode(bytes: &[u8], format: Format) -> Result<Decoded> {
    let dups = RefCell::new(Vec::new());
    let seed = Seed { path: String::new(), dups: &dups };
    let scanned = match format {
        Format::Protobuf => None,
        Format::Json => {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            seed.deserialize(&mut de).ok().filter(|_| de.end().is_ok())
        }
        Format::Yaml => seed.deserialize(serde_yaml::Deserializer::from_slice(bytes)).ok(),
    };
    match scanned {
        // Anything the scan cannot read (malformed bodies, YAML tags, protobuf) takes the plain
        // decoder, whose errors name the position.
        None => Ok(Decoded { value: body::decode(bytes, format)?, duplicates: Vec::new() }),
        Some(_) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(Decoded { value: body::decode(bytes, format)?, duplicates: Vec::new() }),
        Some(value) => Ok(Decoded { value, duplicates: dups.into_inner() }),
    }
}

/// Builds a value at `path`, noting repeated keys of its objects.
struct Seed<'a> {
    path: String,
    dups: &'a RefCell<Vec<String>>,
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        loop {
            let seed = Seed { path: format!("{}[{}]", self.path, items.len()), dups: self.dups };
            match seq.next_element_seed(seed)? {
                Some(v) => items.push(v),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let path = if self.path.is_empty() { key.clone() } else { format!("{}.{key}", self.path) };
            let value = map.next_value_seed(Seed { path: path.clone(), dups: self.dups })?;
            if out.insert(key, value).is_some() {
                let mut dups = self.dups.borrow_mut();
                if dups.len() < MAX_DUPLICATES && !dups.contains(&path) {
                    dups.push(path);
                }
            }
        }
        Ok(Value::Object(out))
    }
}

/// An object key as a string (YAML keys may be numbers or booleans, which JSON spells as strings).
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, number or boolean key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Ok("null".to_owned())
    }
}

/// The strict-decoding message of a duplicate, as kube-apiserver words it.
pub(crate) fn duplicate_message(path: &str) -> String {
    format!("duplicate field \"{path}\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_repeated_json_field_is_noted_with_its_path_and_the_last_value_wins() -> Result<()> {
        let d = decode(br#"{"a": 1, "spec": {"replicas": 1, "x": [{"n": 1, "n": 2}], "replicas": 3}, "a": 2}"#, Format::Json)?;
        assert_eq!(d.value, json!({"a": 2, "spec": {"replicas": 3, "x": [{"n": 2}]}}));
        assert_eq!(d.duplicates, vec!["spec.x[0].n".to_owned(), "spec.replicas".to_owned(), "a".to_owned()]);
        Ok(())
    }

    #[test]
    fn a_repeated_yaml_key_is_noted_too() -> Result<()> {
        let d = decode(b"kind: ConfigMap\ndata:\n  k: v\n  k: w\n  1: one\n", Format::Yaml)?;
        assert_eq!(d.value, json!({"kind": "ConfigMap", "data": {"k": "w", "1": "one"}}));
        assert_eq!(d.duplicates, vec!["data.k".to_owned()]);
        Ok(())
    }

    #[test]
    fn bodies_without_repeats_decode_as_the_plain_decoder_does() -> Result<()> {
        for (bytes, format) in [
            (&br#"{"a": [1, 2.5, -3, true, null, "s"], "b": {}}"#[..], Format::Json),
            (&b"a: [1, 2.5, -3, true, null, s]\nb: {}\n"[..], Format::Yaml),
            (&b"{\"a\": 1}"[..], Format::Yaml),
        ] {
            let d = decode(bytes, format)?;
            assert_eq!(d.value, body::decode(bytes, format)?);
            assert!(d.duplicates.is_empty());
        }
        Ok(())
    }

    #[test]
    fn malformed_bodies_keep_the_plain_decoders_errors() {
        let err = decode(b"{\n  \"a\": 1,\n  \"b\" 2\n}", Format::Json).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("line 3"), "{err}");
        assert_eq!(decode(b"  ", Format::Json).err().map(|e| e.code()), Some(400));
        assert_eq!(decode(b"{\"a\": 1} x", Format::Json).err().map(|e| e.code()), Some(400));
    }
}
