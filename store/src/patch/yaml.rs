//! Request bodies as JSON or YAML (server-side apply sends `application/apply-patch+yaml`), with error positions.

use serde_json::Value;

use super::error::{PatchError, Result};

/// Parses one JSON or YAML document into a JSON value.
///
/// A body whose first non-blank character is `{` or `[` is parsed as JSON first (exact numbers,
/// faster), then as YAML; anything else as YAML. Errors carry the 1-based line and column. An empty body and a
/// stream of several YAML documents are errors.
pub fn parse_yaml_or_json(bytes: &[u8]) -> Result<Value> {
    let first = bytes.iter().copied().find(|b| !b.is_ascii_whitespace());
    match first {
        None => Err(PatchError::Parse { message: "the request body is empty".into(), line: 1, column: 1 }),
        Some(b'{' | b'[') => match serde_json::from_slice(bytes) {
            Ok(v) => Ok(v),
            // A YAML flow collection (`{a: 1}`) also starts with a brace; when neither parser
            // accepts the body, the JSON error is the one that points at the mistake.
            Err(json_err) => parse_yaml(bytes).map_err(|_| PatchError::Parse {
                message: strip_position(&json_err.to_string()),
                line: json_err.line().max(1),
                column: json_err.column().max(1),
            }),
        },
        Some(_) => parse_yaml(bytes),
    }
}

fn parse_yaml(bytes: &[u8]) -> Result<Value> {
    let value: Value = serde_yaml::from_slice(bytes).map_err(|e| {
        let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
        PatchError::Parse { message: strip_position(&e.to_string()), line, column }
    })?;
    if value.is_null() {
        return Err(PatchError::Parse { message: "the request body holds no document".into(), line: 1, column: 1 });
    }
    Ok(value)
}

/// Drops the parser's own " at line X column Y" suffix, since the error reports the position itself.
fn strip_position(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_yaml_bodies_parse_to_the_same_value() {
        let json = parse_yaml_or_json(br#"{"a": {"b": [1, "x"]}}"#).expect("valid body");
        let yaml = parse_yaml_or_json(b"a:\n  b:\n  - 1\n  - x\n").expect("valid body");
        assert_eq!(json, yaml);
        assert_eq!(json["a"]["b"][0], 1);
    }

    #[test]
    fn yaml_errors_carry_line_and_column() {
        let err = parse_yaml_or_json(b"a: 1\nb: [1, 2\nc: 3\n").err();
        match err {
            Some(PatchError::Parse { line, .. }) => assert!(line >= 2, "line {line}"),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn json_errors_carry_line_and_column() {
        match parse_yaml_or_json(b"{\n  \"a\": 1,\n  \"b\": ]\n}") {
            Err(PatchError::Parse { line, column, .. }) => assert_eq!((line, column), (3, 8)),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn empty_and_multi_document_bodies_are_refused() {
        assert!(matches!(parse_yaml_or_json(b"  \n"), Err(PatchError::Parse { .. })));
        assert!(parse_yaml_or_json(b"a: 1\n---\nb: 2\n").is_err());
    }
}
