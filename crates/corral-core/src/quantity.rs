//! Exact parsing of Kubernetes `resource.Quantity` strings.
//!
//! Grammar (from `k8s.io/apimachinery/pkg/api/resource`):
//! `<sign><digits>[.<digits>][<suffix>]` where the suffix is a binary SI suffix
//! (`Ki Mi Gi Ti Pi Ei`), a decimal SI suffix (`n u m "" k M G T P E`) or a decimal
//! exponent (`e<int>` / `E<int>`). Values are kept as an exact decimal
//! (mantissa × 10^exp × 2^bin) and converted with Kubernetes' rounding: `Value()` and
//! `MilliValue()` round **up** (towards +∞) to the next integer.

use std::fmt;

/// Error for a string that is not a valid Kubernetes quantity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantityError {
    pub input: String,
    pub reason: &'static str,
}

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid quantity {:?}: {}", self.input, self.reason)
    }
}

impl std::error::Error for QuantityError {}

/// A parsed quantity: `mantissa * 10^exp10 * 2^exp2` (exactly one of the exponents is
/// used by any given suffix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    mantissa: i128,
    exp10: i32,
    exp2: u32,
}

const MAX_DIGITS: usize = 36;

impl Quantity {
    /// Parses a quantity string exactly as Kubernetes does.
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        let err = |reason| QuantityError {
            input: s.to_string(),
            reason,
        };
        let t = s.trim();
        if t.is_empty() {
            return Err(err("empty string"));
        }
        let bytes = t.as_bytes();
        let mut i = 0;
        let mut negative = false;
        if bytes[0] == b'+' || bytes[0] == b'-' {
            negative = bytes[0] == b'-';
            i = 1;
        }
        let int_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let int_part = &t[int_start..i];
        let mut frac_part = "";
        if i < bytes.len() && bytes[i] == b'.' {
            i += 1;
            let fs = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            frac_part = &t[fs..i];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err("no digits"));
        }
        let suffix = &t[i..];
        let (exp10_suffix, exp2) = match suffix {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            _ => {
                let b = suffix.as_bytes();
                if b.len() >= 2 && (b[0] == b'e' || b[0] == b'E') {
                    let e = &suffix[1..];
                    let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
                        return Err(err("unknown suffix"));
                    }
                    let v: i32 = e.parse().map_err(|_| err("exponent out of range"))?;
                    if !(-1000..=1000).contains(&v) {
                        return Err(err("exponent out of range"));
                    }
                    (v, 0)
                } else {
                    return Err(err("unknown suffix"));
                }
            }
        };
        // Drop leading zeros of the integer part and trailing zeros of the fraction so
        // very long but exact inputs still fit.
        let int_trim = int_part.trim_start_matches('0');
        let frac_trim = frac_part.trim_end_matches('0');
        if int_trim.len() + frac_trim.len() > MAX_DIGITS {
            return Err(err("too many significant digits"));
        }
        let mut mantissa: i128 = 0;
        for c in int_trim.bytes().chain(frac_trim.bytes()) {
            mantissa = mantissa * 10 + i128::from(c - b'0');
        }
        if negative {
            mantissa = -mantissa;
        }
        let exp10 = exp10_suffix - frac_trim.len() as i32;
        Ok(Quantity {
            mantissa,
            exp10,
            exp2,
        })
    }

    /// Value scaled by `10^scale`, rounded up (towards +∞), saturating at i64 bounds.
    fn scaled_ceil(&self, scale: i32) -> i64 {
        if self.mantissa == 0 {
            return 0;
        }
        let mut m = self.mantissa;
        // apply binary exponent
        for _ in 0..self.exp2 {
            m = match m.checked_mul(2) {
                Some(v) => v,
                None => return if m > 0 { i64::MAX } else { i64::MIN },
            };
        }
        let e = self.exp10 + scale;
        if e >= 0 {
            for _ in 0..e {
                m = match m.checked_mul(10) {
                    Some(v) => v,
                    None => return if m > 0 { i64::MAX } else { i64::MIN },
                };
            }
            return m.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
        }
        let mut div: i128 = 1;
        for _ in 0..(-e) {
            match div.checked_mul(10) {
                Some(v) => div = v,
                // |m| < div: the value is a fraction in (-1, 1)
                None => return if m > 0 { 1 } else { 0 },
            }
        }
        let q = m.div_euclid(div);
        let r = m.rem_euclid(div);
        let v = if r != 0 { q + 1 } else { q };
        v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }

    /// `Quantity.Value()`: the integer value rounded up.
    pub fn value(&self) -> i64 {
        self.scaled_ceil(0)
    }

    /// `Quantity.MilliValue()`: value × 1000 rounded up.
    pub fn milli_value(&self) -> i64 {
        self.scaled_ceil(3)
    }

    /// True for a negative quantity.
    pub fn is_negative(&self) -> bool {
        self.mantissa < 0
    }
}

/// Parses `s` and returns the value in the unit Kubernetes uses for resource `name`:
/// millicores for `cpu`, plain integer (rounded up) for everything else.
pub fn parse_resource(name: &str, s: &str) -> Result<i64, QuantityError> {
    let q = Quantity::parse(s)?;
    Ok(if name == "cpu" {
        q.milli_value()
    } else {
        q.value()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> i64 {
        Quantity::parse(s).unwrap().value()
    }
    fn mv(s: &str) -> i64 {
        Quantity::parse(s).unwrap().milli_value()
    }

    #[test]
    fn decimal_and_binary_suffixes() {
        assert_eq!(mv("100m"), 100);
        assert_eq!(mv("1.5"), 1500);
        assert_eq!(mv("2"), 2000);
        assert_eq!(v("2Gi"), 2 * 1024 * 1024 * 1024);
        assert_eq!(v("500Mi"), 500 * 1024 * 1024);
        assert_eq!(v("1e3"), 1000);
        assert_eq!(v("1E3"), 1000);
        assert_eq!(v("1E"), 1_000_000_000_000_000_000);
        assert_eq!(v("128974848"), 128_974_848);
        assert_eq!(v("129e6"), 129_000_000);
        assert_eq!(v("123Mi"), 128_974_848);
        assert_eq!(v("1k"), 1000);
        assert_eq!(v("1Ki"), 1024);
        assert_eq!(v("0.5Ki"), 512);
        assert_eq!(mv("0.1"), 100);
        assert_eq!(mv(".5"), 500);
        assert_eq!(mv("5."), 5000);
        assert_eq!(mv("+1"), 1000);
        assert_eq!(mv("1e-3"), 1);
    }

    #[test]
    fn rounding_is_up_like_kubernetes() {
        assert_eq!(mv("0.0001"), 1);
        assert_eq!(mv("1n"), 1);
        assert_eq!(v("100m"), 1);
        assert_eq!(v("1.1"), 2);
        assert_eq!(v("-1.5"), -1);
        assert_eq!(v("0"), 0);
        assert_eq!(mv("0m"), 0);
    }

    #[test]
    fn saturates_instead_of_overflowing() {
        assert_eq!(v("1e100"), i64::MAX);
        assert_eq!(v("1000Ei"), i64::MAX);
        assert_eq!(v("-1e100"), i64::MIN);
        assert_eq!(mv("1e-900"), 1);
    }

    #[test]
    fn rejects_invalid() {
        for bad in [
            "", "abc", "1.2.3", "1Kb", "1 Gi", "--1", "1e", "e3", "Gi", "1ee3", "1mm", "1.5.",
            "0x10", "1e+", "1i", ".",
        ] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(Quantity::parse("1e+3").is_ok());
    }

    #[test]
    fn parse_resource_units() {
        assert_eq!(parse_resource("cpu", "250m").unwrap(), 250);
        assert_eq!(parse_resource("memory", "1Gi").unwrap(), 1 << 30);
        assert_eq!(parse_resource("nvidia.com/gpu", "2").unwrap(), 2);
        assert!(Quantity::parse("-1").unwrap().is_negative());
    }
}
