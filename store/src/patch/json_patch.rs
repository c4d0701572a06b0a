//! JSON patch (RFC 6902) and JSON pointer (RFC 6901), applied all-or-nothing to a copy of the object.

use serde_json::{Map, Value};

use super::error::{PatchError, Result};

/// Applies an RFC 6902 patch (a JSON array of operations) to `doc`.
///
/// Operations run in order on a copy, so a failing operation leaves nothing half-applied. A patch
/// that is not an array of well-formed operations is [`PatchError::Malformed`] (400); an
/// operation that cannot apply (missing path, index out of range, failed `test`) is
/// [`PatchError::Unprocessable`] (422). Both name the failing operation by index, op and path.
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value> {
    let ops = patch.as_array().ok_or_else(|| PatchError::malformed("json patch must be a JSON array of operations"))?;
    let ops = ops.iter().enumerate().map(|(i, op)| Op::parse(i, op)).collect::<Result<Vec<_>>>()?;
    let mut doc = doc.clone();
    for op in &ops {
        op.apply(&mut doc).map_err(|why| PatchError::unprocessable(format!("{}: {why}", op.describe())))?;
    }
    Ok(doc)
}

#[derive(Debug)]
enum Kind {
    Add(Value),
    Remove,
    Replace(Value),
    Move(Vec<String>),
    Copy(Vec<String>),
    Test(Value),
}

#[derive(Debug)]
struct Op {
    index: usize,
    name: &'static str,
    raw_path: String,
    path: Vec<String>,
    kind: Kind,
}

impl Op {
    fn parse(index: usize, raw: &Value) -> Result<Self> {
        let bad = |why: String| PatchError::malformed(format!("json patch operation {index}: {why}"));
        let obj = raw.as_object().ok_or_else(|| bad("must be a JSON object".into()))?;
        let op = obj.get("op").and_then(Value::as_str).ok_or_else(|| bad("missing string member \"op\"".into()))?;
        let raw_path = obj.get("path").and_then(Value::as_str).ok_or_else(|| bad("missing string member \"path\"".into()))?;
        let path = parse_pointer(raw_path).map_err(|why| bad(format!("path {raw_path:?}: {why}")))?;
        let value = || obj.get("value").cloned().ok_or_else(|| bad(format!("{op} needs a \"value\" member")));
        let from = || -> Result<Vec<String>> {
            let from = obj.get("from").and_then(Value::as_str).ok_or_else(|| bad(format!("{op} needs a string \"from\" member")))?;
            parse_pointer(from).map_err(|why| bad(format!("from {from:?}: {why}")))
        };
        let (name, kind) = match op {
            "add" => ("add", Kind::Add(value()?)),
            "remove" => ("remove", Kind::Remove),
            "replace" => ("replace", Kind::Replace(value()?)),
            "move" => ("move", Kind::Move(from()?)),
            "copy" => ("copy", Kind::Copy(from()?)),
            "test" => ("test", Kind::Test(value()?)),
            other => return Err(bad(format!("unsupported op {other:?}"))),
        };
        Ok(Self { index, name, raw_path: raw_path.to_owned(), path, kind })
    }

    fn describe(&self) -> String {
        format!("json patch operation {} ({} {:?}) failed", self.index, self.name, self.raw_path)
    }

    fn apply(&self, doc: &mut Value) -> std::result::Result<(), String> {
        match &self.kind {
            Kind::Add(v) => add(doc, &self.path, v.clone()),
            Kind::Remove => remove(doc, &self.path).map(drop),
            Kind::Replace(v) => {
                let slot = lookup_mut(doc, &self.path)?;
                *slot = v.clone();
                Ok(())
            }
            Kind::Move(from) => {
                if from == &self.path {
                    return lookup(doc, from).map(drop);
                }
                if self.path.len() > from.len() && self.path[..from.len()] == from[..] {
                    return Err("cannot move a value into one of its own children".into());
                }
                let v = remove(doc, from)?;
                add(doc, &self.path, v)
            }
            Kind::Copy(from) => {
                let v = lookup(doc, from)?.clone();
                add(doc, &self.path, v)
            }
            Kind::Test(expected) => {
                let actual = lookup(doc, &self.path)?;
                if json_eq(actual, expected) { Ok(()) } else { Err(format!("test failed: value is {actual}, not {expected}")) }
            }
        }
    }
}

/// Splits a JSON pointer into unescaped reference tokens (`~1` is `/`, `~0` is `~`).
pub fn parse_pointer(pointer: &str) -> std::result::Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err("a JSON pointer must be empty or start with \"/\"".into());
    };
    rest.split('/').map(unescape).collect()
}

fn unescape(token: &str) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return Err(format!("invalid escape in token {token:?}: \"~\" must be followed by 0 or 1")),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// Escapes one token for use in a JSON pointer.
pub fn escape_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn array_index(token: &str, len: usize, allow_end: bool) -> std::result::Result<usize, String> {
    if allow_end && token == "-" {
        return Ok(len);
    }
    let valid = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) && (token == "0" || !token.starts_with('0'));
    let idx: usize = if valid {
        token.parse().map_err(|_| format!("array index {token:?} is out of range"))?
    } else {
        return Err(format!("{token:?} is not an array index"));
    };
    let max = if allow_end { len } else { len.saturating_sub(1) };
    if idx > max || (!allow_end && len == 0) {
        return Err(format!("array index {idx} is out of bounds (length {len})"));
    }
    Ok(idx)
}

fn lookup<'a>(doc: &'a Value, path: &[String]) -> std::result::Result<&'a Value, String> {
    let mut cur = doc;
    for (depth, token) in path.iter().enumerate() {
        cur = match cur {
            Value::Object(map) => map.get(token).ok_or_else(|| missing(path, depth))?,
            Value::Array(items) => &items[array_index(token, items.len(), false)?],
            _ => return Err(missing(path, depth)),
        };
    }
    Ok(cur)
}

fn lookup_mut<'a>(doc: &'a mut Value, path: &[String]) -> std::result::Result<&'a mut Value, String> {
    let mut cur = doc;
    for (depth, token) in path.iter().enumerate() {
        cur = match cur {
            Value::Object(map) => map.get_mut(token).ok_or_else(|| missing(path, depth))?,
            Value::Array(items) => {
                let i = array_index(token, items.len(), false)?;
                &mut items[i]
            }
            _ => return Err(missing(path, depth)),
        };
    }
    Ok(cur)
}

fn missing(path: &[String], depth: usize) -> String {
    let prefix: Vec<String> = path[..=depth].iter().map(|t| escape_token(t)).collect();
    format!("path \"/{}\" does not exist", prefix.join("/"))
}

fn add(doc: &mut Value, path: &[String], value: Value) -> std::result::Result<(), String> {
    let Some((last, parent)) = path.split_last() else {
        *doc = value;
        return Ok(());
    };
    match lookup_mut(doc, parent)? {
        Value::Object(map) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(items) => {
            let i = array_index(last, items.len(), true)?;
            items.insert(i, value);
            Ok(())
        }
        _ => Err(format!("the parent of {last:?} is neither an object nor an array")),
    }
}

fn remove(doc: &mut Value, path: &[String]) -> std::result::Result<Value, String> {
    let Some((last, parent)) = path.split_last() else {
        return Err("cannot remove the whole document".into());
    };
    match lookup_mut(doc, parent)? {
        Value::Object(map) => map.remove(last).ok_or_else(|| missing(path, path.len() - 1)),
        Value::Array(items) => {
            let i = array_index(last, items.len(), false)?;
            Ok(items.remove(i))
        }
        _ => Err(missing(path, path.len() - 1)),
    }
}

/// JSON equality where numbers compare by value (`1` equals `1.0`), as RFC 6902 `test` requires.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if x == y {
                return true;
            }
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x == y && !(x.fract() == 0.0 && x.abs() > 9.0e15),
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b)),
        (Value::Object(x), Value::Object(y)) => object_eq(x, y),
        _ => a == b,
    }
}

fn object_eq(x: &Map<String, Value>, y: &Map<String, Value>) -> bool {
    x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(doc: Value, patch: Value) -> Result<Value> {
        json_patch(&doc, &patch)
    }

    #[test]
    fn the_rfc_6902_appendix_examples_hold() {
        // A.1 add an object member, A.2 add an array element, A.3 remove, A.5 replace.
        assert_eq!(
            run(json!({"foo": "bar"}), json!([{"op": "add", "path": "/baz", "value": "qux"}])).ok(),
            Some(json!({"foo": "bar", "baz": "qux"}))
        );
        assert_eq!(
            run(json!({"foo": ["bar", "baz"]}), json!([{"op": "add", "path": "/foo/1", "value": "qux"}])).ok(),
            Some(json!({"foo": ["bar", "qux", "baz"]}))
        );
        assert_eq!(run(json!({"baz": "qux", "foo": "bar"}), json!([{"op": "remove", "path": "/baz"}])).ok(), Some(json!({"foo": "bar"})));
        assert_eq!(
            run(json!({"baz": "qux", "foo": "bar"}), json!([{"op": "replace", "path": "/baz", "value": "boo"}])).ok(),
            Some(json!({"baz": "boo", "foo": "bar"}))
        );
        // A.6 move a value, A.7 move an array element.
        assert_eq!(
            run(
                json!({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}}),
                json!([{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}])
            )
            .ok(),
            Some(json!({"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}}))
        );
        assert_eq!(
            run(json!({"foo": ["all", "grass", "cows", "eat"]}), json!([{"op": "move", "from": "/foo/1", "path": "/foo/3"}])).ok(),
            Some(json!({"foo": ["all", "cows", "eat", "grass"]}))
        );
        // A.8 test success, A.9 test failure, A.10 add nested member, A.16 add to the end.
        assert!(
            run(
                json!({"baz": "qux", "foo": ["a", 2, "c"]}),
                json!([{"op": "test", "path": "/baz", "value": "qux"}, {"op": "test", "path": "/foo/1", "value": 2}])
            )
            .is_ok()
        );
        assert!(matches!(
            run(json!({"baz": "qux"}), json!([{"op": "test", "path": "/baz", "value": "bar"}])),
            Err(PatchError::Unprocessable(_))
        ));
        assert_eq!(
            run(json!({"foo": "bar"}), json!([{"op": "add", "path": "/child", "value": {"grandchild": {}}}])).ok(),
            Some(json!({"foo": "bar", "child": {"grandchild": {}}}))
        );
        assert_eq!(
            run(json!({"foo": ["bar"]}), json!([{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}])).ok(),
            Some(json!({"foo": ["bar", ["abc", "def"]]}))
        );
        // A.12 adding to a nonexistent target fails.
        assert!(matches!(
            run(json!({"foo": "bar"}), json!([{"op": "add", "path": "/baz/bat", "value": "qux"}])),
            Err(PatchError::Unprocessable(_))
        ));
        // A.14 escapes.
        assert!(
            run(json!({"/": 9, "~1": 10}), json!([{"op": "test", "path": "/~01", "value": 10}, {"op": "test", "path": "/~1", "value": 9}]))
                .is_ok()
        );
    }

    #[test]
    fn a_failing_operation_is_named_and_nothing_is_half_applied() {
        let doc = json!({"spec": {"replicas": 1}});
        let err =
            run(doc.clone(), json!([{"op": "replace", "path": "/spec/replicas", "value": 3}, {"op": "remove", "path": "/spec/missing"}]))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
        assert!(err.contains("operation 1 (remove \"/spec/missing\")"), "{err}");
        assert_eq!(doc["spec"]["replicas"], 1);
    }

    #[test]
    fn malformed_patches_are_bad_requests() {
        for patch in [
            json!({"op": "add"}),
            json!([{"op": "add", "path": "/a"}]),
            json!([{"op": "jump", "path": "/a"}]),
            json!([{"op": "move", "path": "/a"}]),
            json!([{"op": "remove", "path": "a"}]),
            json!([{"op": "remove", "path": "/a~2"}]),
        ] {
            let err = run(json!({"a": 1}), patch.clone()).err();
            assert_eq!(err.as_ref().map(PatchError::code), Some(400), "{patch}: {err:?}");
        }
    }

    #[test]
    fn array_indexes_follow_the_rfc() {
        let doc = json!({"a": [1, 2]});
        assert!(run(doc.clone(), json!([{"op": "add", "path": "/a/3", "value": 0}])).is_err());
        assert!(run(doc.clone(), json!([{"op": "add", "path": "/a/01", "value": 0}])).is_err());
        assert!(run(doc.clone(), json!([{"op": "remove", "path": "/a/2"}])).is_err());
        assert_eq!(run(doc.clone(), json!([{"op": "add", "path": "/a/2", "value": 3}])).ok(), Some(json!({"a": [1, 2, 3]})));
        assert_eq!(run(doc, json!([{"op": "copy", "from": "/a/0", "path": "/b"}])).ok(), Some(json!({"a": [1, 2], "b": 1})));
    }

    #[test]
    fn numbers_compare_by_value_in_test() {
        assert!(json_eq(&json!(1), &json!(1.0)));
        assert!(!json_eq(&json!(1), &json!(2)));
        assert!(json_eq(&json!({"a": [1.0]}), &json!({"a": [1]})));
    }
}
