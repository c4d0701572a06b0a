//! Field selectors: `field=value`, `field==value`, `field!=value`, comma separated, with `\` escapes.

use super::ParseSelectorError;
use std::fmt;

/// One term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldRequirement {
    /// The field path, e.g. `spec.nodeName`.
    pub field: String,
    /// True for `!=`.
    pub negated: bool,
    /// The value compared against.
    pub value: String,
}

impl FieldRequirement {
    /// Whether the field's value (absent counts as empty, as Kubernetes' field sets do) satisfies the term.
    pub fn matches(&self, actual: Option<&str>) -> bool {
        (actual.unwrap_or("") == self.value) != self.negated
    }
}

/// A field selector: all terms must hold. The empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// The selector that matches everything.
    pub fn everything() -> Self {
        Self::default()
    }

    /// A selector of one `field=value` term.
    pub fn equals(field: impl Into<String>, value: impl Into<String>) -> Self {
        Self { requirements: vec![FieldRequirement { field: field.into(), negated: false, value: value.into() }] }
    }

    /// The terms.
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// True when it matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The value this selector requires `field` to equal, if it has such a term (for index lookups).
    pub fn required_value(&self, field: &str) -> Option<&str> {
        self.requirements.iter().find(|r| r.field == field && !r.negated).map(|r| r.value.as_str())
    }

    /// Whether an object satisfies every term; `get` looks a field up by its path.
    pub fn matches<'a>(&self, get: impl Fn(&str) -> Option<std::borrow::Cow<'a, str>>) -> bool {
        self.requirements.iter().all(|r| r.matches(get(&r.field).as_deref()))
    }

    /// Parses the string form, e.g. `metadata.name=web,status.phase!=Running`.
    pub fn parse(input: &str) -> Result<Self, ParseSelectorError> {
        let mut requirements = Vec::new();
        if input.trim().is_empty() {
            return Ok(Self::default());
        }
        let mut start = 0;
        for term in split_unescaped(input, ',') {
            let fail = |reason: &str| ParseSelectorError { input: input.to_owned(), position: start, reason: reason.to_owned() };
            let (field, negated, value) = if let Some(i) = find_unescaped(term, "!=") {
                (&term[..i], true, &term[i + 2..])
            } else if let Some(i) = find_unescaped(term, "==") {
                (&term[..i], false, &term[i + 2..])
            } else if let Some(i) = find_unescaped(term, "=") {
                (&term[..i], false, &term[i + 1..])
            } else {
                return Err(fail("invalid selector: expected one of '=', '==', '!='"));
            };
            let field = field.trim();
            if field.is_empty() {
                return Err(fail("invalid selector: the field name is empty"));
            }
            requirements.push(FieldRequirement { field: unescape(field), negated, value: unescape(value) });
            start += term.len() + 1;
        }
        Ok(Self { requirements })
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}{}{}", escape(&r.field), if r.negated { "!=" } else { "=" }, escape(&r.value))?;
        }
        Ok(())
    }
}

impl std::str::FromStr for FieldSelector {
    type Err = ParseSelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Splits on `sep` where it is not escaped by a backslash.
fn split_unescaped(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            out.push(&s[start..i]);
            start = i + 1;
        }
    }
    out.push(&s[start..]);
    out
}

/// The byte offset of the first unescaped `pat`.
fn find_unescaped(s: &str, pat: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        if c == '\\' {
            escaped = true;
            continue;
        }
        if s[i..].starts_with(pat) {
            return Some(i);
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=' | '!') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::borrow::Cow;

    #[test]
    fn terms_match_with_absent_fields_as_empty() {
        let sel = FieldSelector::parse("spec.nodeName=n1,status.phase!=Failed").unwrap_or_else(|e| panic!("{e}"));
        let obj = |node: Option<&'static str>, phase: Option<&'static str>| {
            move |f: &str| match f {
                "spec.nodeName" => node.map(Cow::Borrowed),
                "status.phase" => phase.map(Cow::Borrowed),
                _ => None,
            }
        };
        assert!(sel.matches(obj(Some("n1"), Some("Running"))));
        assert!(sel.matches(obj(Some("n1"), None)));
        assert!(!sel.matches(obj(Some("n1"), Some("Failed"))));
        assert!(!sel.matches(obj(None, None)));
        assert!(FieldSelector::parse("spec.nodeName=").is_ok_and(|s| s.matches(obj(None, None))));
        assert_eq!(sel.required_value("spec.nodeName"), Some("n1"));
    }

    #[test]
    fn double_equals_and_escapes_parse() {
        let sel = FieldSelector::parse(r"metadata.name==a\,b").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sel.requirements()[0].value, "a,b");
        assert!(FieldSelector::parse("metadata.name").is_err());
        assert!(FieldSelector::parse("=x").is_err());
    }

    proptest! {
        #[test]
        fn display_then_parse_is_the_identity(terms in proptest::collection::vec(("[a-z][a-z.]{0,10}", any::<bool>(), "\\PC{0,10}"), 0..4)) {
            let sel = FieldSelector {
                requirements: terms.into_iter().map(|(field, negated, value)| FieldRequirement { field, negated, value }).collect(),
            };
            let back = FieldSelector::parse(&sel.to_string()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, sel);
        }

        #[test]
        fn the_parser_never_panics(s in "\\PC{0,40}") {
            let _ = FieldSelector::parse(&s);
        }
    }
}
