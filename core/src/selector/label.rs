//! Label selectors with Kubernetes' full grammar: `=`, `==`, `!=`, `in`, `notin`, `exists`, `!key`, `>`, `<`.

use super::ParseSelectorError;
use crate::meta::{validate_label_value, validate_qualified_name};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use std::collections::BTreeMap;
use std::fmt;

/// How a requirement compares a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `key=value` / `key==value`, or `key in (a,b)`.
    In,
    /// `key!=value`, or `key notin (a,b)`: also true when the key is absent.
    NotIn,
    /// `key`: the key is present.
    Exists,
    /// `!key`: the key is absent.
    DoesNotExist,
    /// `key>n`: the value is an integer greater than n.
    Gt,
    /// `key<n`: the value is an integer less than n.
    Lt,
}

/// One term of a selector: a key, an operator and its values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// The comparison.
    pub operator: Operator,
    /// Values, sorted and deduplicated (one for `=`/`!=`/`>`/`<`, none for exists).
    pub values: Vec<String>,
}

impl Requirement {
    /// Whether a label set satisfies this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.iter().any(|x| x == v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.iter().any(|x| x == v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::Gt | Operator::Lt => {
                let (Some(have), Some(bound)) =
                    (value.and_then(|v| v.parse::<i64>().ok()), self.values.first().and_then(|v| v.parse::<i64>().ok()))
                else {
                    return false;
                };
                if self.operator == Operator::Gt { have > bound } else { have < bound }
            }
        }
    }

    /// The single value of an `=` requirement, when it is one (useful for index lookups).
    pub fn equals(&self) -> Option<&str> {
        (self.operator == Operator::In && self.values.len() == 1).then(|| self.values[0].as_str())
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = &self.key;
        match self.operator {
            Operator::Exists => write!(f, "{key}"),
            Operator::DoesNotExist => write!(f, "!{key}"),
            Operator::In if self.values.len() == 1 => write!(f, "{key}={}", self.values[0]),
            Operator::NotIn if self.values.len() == 1 => write!(f, "{key}!={}", self.values[0]),
            Operator::In => write!(f, "{key} in ({})", self.values.join(",")),
            Operator::NotIn => write!(f, "{key} notin ({})", self.values.join(",")),
            Operator::Gt => write!(f, "{key}>{}", self.values.join("")),
            Operator::Lt => write!(f, "{key}<{}", self.values.join("")),
        }
    }
}

/// A label selector: all requirements must hold. The empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// The selector that matches every label set.
    pub fn everything() -> Self {
        Self::default()
    }

    /// A selector of `key=value` terms for each pair.
    pub fn from_map(labels: &BTreeMap<String, String>) -> Self {
        let requirements =
            labels.iter().map(|(k, v)| Requirement { key: k.clone(), operator: Operator::In, values: vec![v.clone()] }).collect();
        Self::sorted(requirements)
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// True when it matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether a label set satisfies every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether optional labels (an object's `metadata.labels`) match; absent labels are the empty set.
    pub fn matches_opt(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        match labels {
            Some(l) => self.matches(l),
            None => self.matches(&BTreeMap::new()),
        }
    }

    /// Converts a `metav1.LabelSelector` (`matchLabels` and `matchExpressions`).
    pub fn from_api(selector: &metav1::LabelSelector) -> Result<Self, ParseSelectorError> {
        let fail = |reason: String| ParseSelectorError { input: format!("{selector:?}"), position: 0, reason };
        let mut requirements = Vec::new();
        for (k, v) in selector.match_labels.iter().flatten() {
            validate_qualified_name(k).map_err(|e| fail(format!("key {k:?}: {e}")))?;
            validate_label_value(v).map_err(|e| fail(format!("value {v:?}: {e}")))?;
            requirements.push(Requirement { key: k.clone(), operator: Operator::In, values: vec![v.clone()] });
        }
        for expr in selector.match_expressions.iter().flatten() {
            validate_qualified_name(&expr.key).map_err(|e| fail(format!("key {:?}: {e}", expr.key)))?;
            let values = expr.values.clone().unwrap_or_default();
            let operator = match expr.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => return Err(fail(format!("{other:?} is not a valid label selector operator"))),
            };
            match operator {
                Operator::In | Operator::NotIn if values.is_empty() => {
                    return Err(fail(format!("values: must be specified when `operator` is '{}'", expr.operator)));
                }
                Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                    return Err(fail(format!("values: may not be specified when `operator` is '{}'", expr.operator)));
                }
                _ => {}
            }
            for v in &values {
                validate_label_value(v).map_err(|e| fail(format!("value {v:?}: {e}")))?;
            }
            requirements.push(Requirement { key: expr.key.clone(), operator, values });
        }
        Ok(Self::sorted(requirements))
    }

    /// Parses the string form, e.g. `app=web,tier in (a,b),!canary`.
    pub fn parse(input: &str) -> Result<Self, ParseSelectorError> {
        Parser { input, pos: 0 }.selector().map(Self::sorted)
    }

    fn sorted(mut requirements: Vec<Requirement>) -> Self {
        for r in &mut requirements {
            r.values.sort();
            r.values.dedup();
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Self { requirements }
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for LabelSelector {
    type Err = ParseSelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

struct Parser<'a> {
    input: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn fail(&self, reason: impl Into<String>) -> ParseSelectorError {
        ParseSelectorError { input: self.input.to_owned(), position: self.pos, reason: reason.into() }
    }

    fn rest(&self) -> &str {
        &self.input[self.pos..]
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.input.len() - trimmed.len();
    }

    fn eat(&mut self, token: &str) -> bool {
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    /// A key or value: everything up to whitespace or an operator character.
    fn word(&mut self) -> &str {
        let start = self.pos;
        let len = self.rest().find(|c: char| c.is_whitespace() || "=!,()<>".contains(c)).unwrap_or(self.rest().len());
        self.pos += len;
        &self.input[start..start + len]
    }

    fn selector(&mut self) -> Result<Vec<Requirement>, ParseSelectorError> {
        let mut out = Vec::new();
        self.skip_ws();
        if self.rest().is_empty() {
            return Ok(out);
        }
        loop {
            out.push(self.requirement()?);
            self.skip_ws();
            if self.rest().is_empty() {
                return Ok(out);
            }
            if !self.eat(",") {
                return Err(self.fail("expected ','"));
            }
        }
    }

    fn key(&mut self) -> Result<String, ParseSelectorError> {
        self.skip_ws();
        let at = self.pos;
        let key = self.word().to_owned();
        if key.is_empty() {
            return Err(self.fail("expected a key"));
        }
        validate_qualified_name(&key).map_err(|e| ParseSelectorError {
            input: self.input.to_owned(),
            position: at,
            reason: format!("invalid label key {key:?}: {e}"),
        })?;
        Ok(key)
    }

    fn value(&mut self) -> Result<String, ParseSelectorError> {
        self.skip_ws();
        let at = self.pos;
        let value = self.word().to_owned();
        validate_label_value(&value).map_err(|e| ParseSelectorError {
            input: self.input.to_owned(),
            position: at,
            reason: format!("invalid label value {value:?}: {e}"),
        })?;
        Ok(value)
    }

    fn requirement(&mut self) -> Result<Requirement, ParseSelectorError> {
        self.skip_ws();
        if self.eat("!") {
            let key = self.key()?;
            return Ok(Requirement { key, operator: Operator::DoesNotExist, values: vec![] });
        }
        let key = self.key()?;
        self.skip_ws();
        let (operator, values) = if self.eat("==") || self.eat("=") {
            (Operator::In, vec![self.value()?])
        } else if self.eat("!=") {
            (Operator::NotIn, vec![self.value()?])
        } else if self.eat(">") || self.eat("<") {
            let op = if self.input.as_bytes()[self.pos - 1] == b'>' { Operator::Gt } else { Operator::Lt };
            let value = self.value()?;
            if value.parse::<i64>().is_err() {
                return Err(self.fail(format!("for 'Gt', 'Lt' operators, the value must be an integer, got {value:?}")));
            }
            (op, vec![value])
        } else if self.rest().is_empty() || self.rest().starts_with(',') {
            (Operator::Exists, vec![])
        } else {
            let word = self.word().to_owned();
            let op = match word.as_str() {
                "in" => Operator::In,
                "notin" => Operator::NotIn,
                _ => return Err(self.fail(format!("expected one of '=', '==', '!=', 'in', 'notin', found {word:?}"))),
            };
            self.skip_ws();
            if !self.eat("(") {
                return Err(self.fail("expected '('"));
            }
            let mut values = Vec::new();
            loop {
                values.push(self.value()?);
                self.skip_ws();
                if self.eat(")") {
                    break;
                }
                if !self.eat(",") {
                    return Err(self.fail("expected ',' or ')'"));
                }
            }
            (op, values)
        };
        Ok(Requirement { key, operator, values })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn parse(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_operator_matches_as_kubernetes_does() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("n", "5")]);
        for (sel, want) in [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("app in (web, db)", true),
            ("app notin (web,db)", false),
            ("missing notin (web)", true),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("app=web,tier=back", false),
            ("app=web, tier in (front)", true),
            ("n>4", true),
            ("n<4", false),
            ("app>4", false),
        ] {
            assert_eq!(parse(sel).matches(&l), want, "{sel}");
        }
    }

    #[test]
    fn malformed_selectors_say_where() {
        for bad in ["app=web,", "app in web", "app in (a", "app ~ b", "=x", "app=we b", "-bad=x", "app=" /* empty value is fine */] {
            if bad == "app=" {
                assert!(LabelSelector::parse(bad).is_ok());
                continue;
            }
            let err = LabelSelector::parse(bad).err().unwrap_or_else(|| panic!("{bad} parsed"));
            assert!(err.position <= bad.len(), "{err}");
        }
    }

    #[test]
    fn api_selectors_convert_and_check_operators() {
        let sel = metav1::LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![metav1::LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["db".into()]),
            }]),
        };
        let s = LabelSelector::from_api(&sel).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.to_string(), "app=web,tier!=db");
        let bad = metav1::LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![metav1::LabelSelectorRequirement { key: "tier".into(), operator: "In".into(), values: None }]),
        };
        assert!(LabelSelector::from_api(&bad).is_err());
        assert!(LabelSelector::from_api(&metav1::LabelSelector::default()).is_ok_and(|s| s.is_empty()));
    }

    fn key() -> impl Strategy<Value = String> {
        "[a-z]([a-z0-9.-]{0,8}[a-z0-9])?(/[a-z]([a-z0-9_.-]{0,8}[a-z0-9])?)?"
            .prop_filter("valid key", |k| validate_qualified_name(k).is_ok())
    }
    fn value() -> impl Strategy<Value = String> {
        "([a-zA-Z0-9]([a-zA-Z0-9_.-]{0,8}[a-zA-Z0-9])?)?"
    }
    fn requirement() -> impl Strategy<Value = Requirement> {
        (key(), 0..6usize, proptest::collection::vec(value(), 1..4)).prop_map(|(key, op, mut values)| {
            let operator = [Operator::In, Operator::NotIn, Operator::Exists, Operator::DoesNotExist, Operator::In, Operator::NotIn][op];
            if matches!(operator, Operator::Exists | Operator::DoesNotExist) {
                values.clear();
            }
            Requirement { key, operator, values }
        })
    }

    proptest! {
        #[test]
        fn display_then_parse_is_the_identity(reqs in proptest::collection::vec(requirement(), 0..5)) {
            let sel = LabelSelector::sorted(reqs);
            let text = sel.to_string();
            let back = LabelSelector::parse(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, sel);
        }

        #[test]
        fn the_parser_never_panics(s in "\\PC{0,40}") {
            let _ = LabelSelector::parse(&s);
        }

        #[test]
        fn a_map_selector_matches_its_own_labels(l in proptest::collection::btree_map(key(), value(), 0..5)) {
            prop_assert!(LabelSelector::from_map(&l).matches(&l));
        }
    }
}
