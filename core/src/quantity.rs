//! Resource quantities (`100m`, `1.5Gi`, `2e3`), parsed and compared exactly as Kubernetes does.

use std::cmp::Ordering;
use std::fmt;

/// Why a quantity string is not a valid quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {input:?}: {reason}")]
pub struct ParseQuantityError {
    /// The string as given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// How a quantity was written, which decides how it is printed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `Ki`, `Mi`, `Gi`...
    BinarySI,
    /// `m`, ``, `k`, `M`, `G`...
    DecimalSI,
    /// `e3`, `E-2`...
    DecimalExponent,
}

/// An exact resource quantity: `mantissa × 10^scale`.
///
/// Binary suffixes multiply the mantissa by powers of 1024, so `1.5Gi` is held exactly.
/// Quantities up to about 10^38 in their finest unit are exact; larger ones fail to parse.
#[derive(Debug, Clone, Copy)]
pub struct Quantity {
    mantissa: i128,
    scale: i32,
    format: Format,
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Quantity {}

impl std::hash::Hash for Quantity {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let (m, s) = normalise(self.mantissa, self.scale);
        m.hash(state);
        s.hash(state);
    }
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        if self.mantissa.signum() != other.mantissa.signum() {
            return self.mantissa.signum().cmp(&other.mantissa.signum());
        }
        let scale = self.scale.min(other.scale);
        match (rescale(self.mantissa, self.scale - scale), rescale(other.mantissa, other.scale - scale)) {
            (Some(a), Some(b)) => a.cmp(&b),
            // One side overflowed when brought to the finer scale: it is the larger in magnitude.
            (None, Some(_)) => {
                if self.mantissa > 0 {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (Some(_), None) => {
                if other.mantissa > 0 {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (None, None) => Ordering::Equal,
        }
    }
}

fn rescale(m: i128, by: i32) -> Option<i128> {
    let factor = 10i128.checked_pow(u32::try_from(by).ok()?)?;
    m.checked_mul(factor)
}

/// Strips trailing decimal zeros from the mantissa into the scale.
fn normalise(mut m: i128, mut s: i32) -> (i128, i32) {
    if m == 0 {
        return (0, 0);
    }
    while m % 10 == 0 {
        m /= 10;
        s += 1;
    }
    (m, s)
}

impl Quantity {
    /// Zero, printed as `0`.
    pub const ZERO: Self = Self { mantissa: 0, scale: 0, format: Format::DecimalSI };

    /// Parses a quantity string.
    pub fn parse(input: &str) -> Result<Self, ParseQuantityError> {
        let fail = |reason| ParseQuantityError { input: input.to_owned(), reason };
        if input.is_empty() {
            return Err(fail("empty"));
        }
        let bytes = input.as_bytes();
        let mut i = 0;
        let negative = match bytes[0] {
            b'-' => {
                i = 1;
                true
            }
            b'+' => {
                i = 1;
                false
            }
            _ => false,
        };
        let number_start = i;
        let mut mantissa: i128 = 0;
        let mut scale: i32 = 0;
        let mut seen_dot = false;
        let mut digits = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'0'..=b'9' => {
                    mantissa = mantissa
                        .checked_mul(10)
                        .and_then(|m| m.checked_add(i128::from(bytes[i] - b'0')))
                        .ok_or_else(|| fail("too many digits"))?;
                    if seen_dot {
                        scale -= 1;
                    }
                    digits += 1;
                }
                b'.' if !seen_dot => seen_dot = true,
                b'.' => return Err(fail("more than one decimal point")),
                _ => break,
            }
            i += 1;
        }
        if digits == 0 || i == number_start {
            return Err(fail("no digits"));
        }
        let suffix = &input[i..];
        let (format, shift, binary_pow) = match suffix {
            "" => (Format::DecimalSI, 0, 0),
            "n" => (Format::DecimalSI, -9, 0),
            "u" => (Format::DecimalSI, -6, 0),
            "m" => (Format::DecimalSI, -3, 0),
            "k" => (Format::DecimalSI, 3, 0),
            "M" => (Format::DecimalSI, 6, 0),
            "G" => (Format::DecimalSI, 9, 0),
            "T" => (Format::DecimalSI, 12, 0),
            "P" => (Format::DecimalSI, 15, 0),
            "E" => (Format::DecimalSI, 18, 0),
            "Ki" => (Format::BinarySI, 0, 1),
            "Mi" => (Format::BinarySI, 0, 2),
            "Gi" => (Format::BinarySI, 0, 3),
            "Ti" => (Format::BinarySI, 0, 4),
            "Pi" => (Format::BinarySI, 0, 5),
            "Ei" => (Format::BinarySI, 0, 6),
            s if s.starts_with(['e', 'E']) => {
                let exp = &s[1..];
                let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
                if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(fail("invalid exponent"));
                }
                let exp: i32 = exp.parse().map_err(|_| fail("invalid exponent"))?;
                (Format::DecimalExponent, exp, 0)
            }
            _ => return Err(fail("unknown suffix")),
        };
        scale = scale.checked_add(shift).ok_or_else(|| fail("exponent out of range"))?;
        if binary_pow > 0 {
            mantissa = mantissa.checked_mul(1024i128.pow(binary_pow)).ok_or_else(|| fail("too large"))?;
        }
        if !(-40..=40).contains(&scale) {
            return Err(fail("exponent out of range"));
        }
        if negative {
            mantissa = -mantissa;
        }
        let (mantissa, scale) = normalise(mantissa, scale);
        Ok(Self { mantissa, scale, format })
    }

    /// A quantity of whole units (`3`, `1024`), printed in decimal.
    pub fn from_units(n: i64) -> Self {
        let (mantissa, scale) = normalise(i128::from(n), 0);
        Self { mantissa, scale, format: Format::DecimalSI }
    }

    /// A quantity of thousandths (`250m`), printed in decimal.
    pub fn from_milli(n: i64) -> Self {
        let (mantissa, scale) = normalise(i128::from(n), -3);
        Self { mantissa, scale, format: Format::DecimalSI }
    }

    /// A number of bytes, printed with binary suffixes where exact (`512Mi`).
    pub fn from_bytes(n: i64) -> Self {
        let (mantissa, scale) = normalise(i128::from(n), 0);
        Self { mantissa, scale, format: Format::BinarySI }
    }

    /// The format it prints in.
    pub fn format(&self) -> Format {
        self.format
    }

    /// True for zero.
    pub fn is_zero(&self) -> bool {
        self.mantissa == 0
    }

    /// The value scaled by `10^-exp`, rounded toward positive infinity.
    fn scaled_ceil(&self, exp: i32) -> i64 {
        let shift = self.scale - exp;
        let v = if shift >= 0 {
            rescale(self.mantissa, shift).unwrap_or(if self.mantissa > 0 { i128::MAX } else { i128::MIN })
        } else {
            let div = 10i128.checked_pow(shift.unsigned_abs()).unwrap_or(i128::MAX);
            let q = self.mantissa / div;
            if self.mantissa % div > 0 { q + 1 } else { q }
        };
        i64::try_from(v).unwrap_or(if v > 0 { i64::MAX } else { i64::MIN })
    }

    /// The value in whole units, rounded up, saturating (`1.5` → 2, as `Quantity.Value()`).
    pub fn value(&self) -> i64 {
        self.scaled_ceil(0)
    }

    /// The value in thousandths, rounded up, saturating (`0.1` → 100, as `Quantity.MilliValue()`).
    pub fn milli_value(&self) -> i64 {
        self.scaled_ceil(-3)
    }

    /// The sum, or `None` on overflow. The format is the left operand's.
    pub fn checked_add(&self, other: &Self) -> Option<Self> {
        let scale = self.scale.min(other.scale);
        let m = rescale(self.mantissa, self.scale - scale)?.checked_add(rescale(other.mantissa, other.scale - scale)?)?;
        let (mantissa, scale) = normalise(m, scale);
        Some(Self { mantissa, scale, format: self.format })
    }

    /// The difference, or `None` on overflow.
    pub fn checked_sub(&self, other: &Self) -> Option<Self> {
        self.checked_add(&Self { mantissa: -other.mantissa, ..*other })
    }
}

impl std::str::FromStr for Quantity {
    type Err = ParseQuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&k8s_openapi::apimachinery::pkg::api::resource::Quantity> for Quantity {
    type Error = ParseQuantityError;
    fn try_from(q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity) -> Result<Self, Self::Error> {
        Self::parse(&q.0)
    }
}

impl From<Quantity> for k8s_openapi::apimachinery::pkg::api::resource::Quantity {
    fn from(q: Quantity) -> Self {
        Self(q.to_string())
    }
}

/// Prints the canonical form: the largest suffix of the quantity's format that keeps an integer mantissa.
impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.mantissa == 0 {
            return f.write_str("0");
        }
        if self.format == Format::BinarySI
            && self.scale >= 0
            && let Some(mut m) = rescale(self.mantissa, self.scale)
        {
            let mut pow = 0;
            while pow < 6 && m % 1024 == 0 {
                m /= 1024;
                pow += 1;
            }
            if pow > 0 || m.abs() < 1024 {
                let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][pow];
                return write!(f, "{m}{suffix}");
            }
        }
        // Decimal: round the exponent down to a multiple of 3 (Kubernetes rounds sub-nano values up to 1n).
        let (mut m, mut s) = (self.mantissa, self.scale);
        if s < -9 {
            let div = 10i128.pow((-9 - s).unsigned_abs());
            m = m / div + i128::from(m % div > 0);
            s = -9;
        }
        let rem = s.rem_euclid(3);
        let exp3 = s - rem;
        m *= 10i128.pow(rem.unsigned_abs());
        if self.format == Format::DecimalExponent {
            return if exp3 == 0 { write!(f, "{m}") } else { write!(f, "{m}e{exp3}") };
        }
        let suffix = match exp3 {
            -9 => "n",
            -6 => "u",
            -3 => "m",
            0 => "",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            18 => "E",
            _ => return write!(f, "{m}e{exp3}"),
        };
        write!(f, "{m}{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn suffixes_mean_what_kubernetes_means() {
        assert_eq!(q("100m").milli_value(), 100);
        assert_eq!(q("1.5Gi").value(), 1_610_612_736);
        assert_eq!(q("2e3").value(), 2000);
        assert_eq!(q("500Mi").value(), 524_288_000);
        assert_eq!(q("1k").value(), 1000);
        assert_eq!(q("1Ki").value(), 1024);
        assert_eq!(q("0.1").milli_value(), 100);
        assert_eq!(q("-2").value(), -2);
        assert_eq!(q("+7").value(), 7);
        assert_eq!(q("1E3").value(), 1000);
        assert_eq!(q("1n").milli_value(), 1);
        assert_eq!(q(".5").milli_value(), 500);
    }

    #[test]
    fn comparison_is_exact_across_formats() {
        assert_eq!(q("1"), q("1000m"));
        assert_eq!(q("1Ki"), q("1024"));
        assert_eq!(q("1e3"), q("1k"));
        assert!(q("1Gi") > q("1G"));
        assert!(q("100m") < q("0.2"));
        assert!(q("-1") < q("0"));
        assert!(q("1n") > q("0"));
        assert!(q("999999999n") < q("1"));
    }

    #[test]
    fn rounding_up_matches_value_and_milli_value() {
        assert_eq!(q("1.5").value(), 2);
        assert_eq!(q("1001u").milli_value(), 2);
        assert_eq!(q("-1.5").value(), -1);
    }

    #[test]
    fn malformed_quantities_are_rejected_with_a_reason() {
        for bad in ["", "abc", "1.2.3", "1Zi", "Mi", "1e", "1e+", "--1", "1 Gi", "1ee3", "1e99999"] {
            assert!(Quantity::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn canonical_forms_print_the_largest_exact_suffix() {
        for (input, want) in [
            ("1024Mi", "1Gi"),
            ("1.5Gi", "1536Mi"),
            ("1000m", "1"),
            ("1500m", "1500m"),
            ("2e3", "2e3"),
            ("0", "0"),
            ("1000", "1k"),
            ("0.5", "500m"),
            ("1536", "1536"),
        ] {
            assert_eq!(q(input).to_string(), want, "{input}");
        }
    }

    #[test]
    fn sums_are_exact() {
        let total = q("100m").checked_add(&q("1.9")).unwrap_or(Quantity::ZERO);
        assert_eq!(total, q("2"));
        assert_eq!(q("1Gi").checked_sub(&q("512Mi")), Some(q("512Mi")));
    }

    proptest! {
        #[test]
        fn display_then_parse_keeps_the_value(m in -1_000_000_000i64..1_000_000_000, suffix in prop::sample::select(vec!["", "m", "k", "M", "Ki", "Mi", "Gi", "e3", "e-2", "n", "u"])) {
            let parsed = Quantity::parse(&format!("{m}{suffix}")).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back = Quantity::parse(&parsed.to_string()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, parsed);
        }

        #[test]
        fn ordering_agrees_with_milli_values(a in -1_000_000i64..1_000_000, b in -1_000_000i64..1_000_000) {
            prop_assert_eq!(Quantity::from_milli(a).cmp(&Quantity::from_milli(b)), a.cmp(&b));
        }

        #[test]
        fn the_parser_never_panics(s in "\\PC{0,20}") {
            let _ = Quantity::parse(&s);
        }
    }
}
