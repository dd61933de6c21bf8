//! The one duration grammar of every Corral binary, flag, configuration field and
//! annotation: Go's `time.ParseDuration`, as kube-scheduler's flags
//! (`--leader-elect-lease-duration=15s`), `metav1.Duration` fields and Volcano
//! read them.
//!
//! Grammar: an optional sign, then one or more `<decimal><unit>` pairs (`500ms`,
//! `1m30s`, `1.5h`, `.5s`, `5.s`); units `ns`, `us`, `µs` (U+00B5), `μs` (U+03BC),
//! `ms`, `s`, `m`, `h`; a lone `0` is the only number without a unit. A bare number
//! such as `6` is an error ("missing unit"), exactly as in Go, and so is `2d` (Go has
//! no day unit). Values are exact integer nanoseconds up to Go's limit
//! (2^63-1 ns ≈ 292 years). Corral has no use for negative durations: they parse in
//! Go but are rejected here with their own message.
//!
//! The health time series' `time` column is a point in time, not a duration: it
//! also takes a plain number of seconds (see the scheduler's `health::sources`).

use std::fmt;
use std::time::Duration;

/// Why a duration did not parse; the message names the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}")]
pub struct DurationError {
    pub input: String,
    pub reason: Reason,
}

/// The kind of [`DurationError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Empty, a sign alone, no digits, or text that is not a duration.
    Syntax,
    /// A number without a unit (`6`): Go requires one (`6s`).
    MissingUnit,
    /// A unit Go does not know (`2d`, `5x`).
    UnknownUnit(String),
    /// More than 2^63-1 nanoseconds.
    Overflow,
    /// A negative duration (valid Go, meaningless for Corral's settings).
    Negative,
    /// Zero where a positive duration is required.
    NotPositive,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Syntax => f.write_str("expected a Go duration such as 500ms, 15s, 1m30s, 1.5h"),
            Reason::MissingUnit => {
                f.write_str("missing unit (Go duration: write e.g. 6s, 500ms, 1h30m)")
            }
            Reason::UnknownUnit(u) => {
                write!(f, "unknown unit {u:?} (valid: ns, us, µs, ms, s, m, h)")
            }
            Reason::Overflow => f.write_str("out of range (at most 2562047h)"),
            Reason::Negative => f.write_str("must not be negative"),
            Reason::NotPositive => f.write_str("must be positive"),
        }
    }
}

const MAX_NS: u64 = (1 << 63) - 1;

/// Consumes leading decimal digits: (value, digits consumed); `None` on overflow.
fn leading_int(s: &[u8]) -> Option<(u64, usize)> {
    let mut x: u64 = 0;
    let mut i = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        x = x.checked_mul(10)?.checked_add(u64::from(s[i] - b'0'))?;
        if x > 1 << 63 {
            return None;
        }
        i += 1;
    }
    Some((x, i))
}

/// Consumes a fraction's digits: (value, scale, digits consumed). Digits beyond
/// what fits are read and ignored (they cannot change the nanoseconds).
fn leading_fraction(s: &[u8]) -> (u64, f64, usize) {
    let (mut x, mut scale, mut i, mut overflow) = (0u64, 1f64, 0, false);
    while i < s.len() && s[i].is_ascii_digit() {
        if !overflow {
            if x > MAX_NS / 10 {
                overflow = true;
            } else {
                let y = x * 10 + u64::from(s[i] - b'0');
                if y > 1 << 63 {
                    overflow = true;
                } else {
                    x = y;
                    scale *= 10.0;
                }
            }
        }
        i += 1;
    }
    (x, scale, i)
}

fn unit_ns(u: &str) -> Option<u64> {
    Some(match u {
        "ns" => 1,
        "us" | "\u{00b5}s" | "\u{03bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// Parses a non-negative Go duration.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        input: input.to_string(),
        reason,
    };
    let mut s = input.trim();
    let mut neg = false;
    if let Some(r) = s.strip_prefix('-') {
        neg = true;
        s = r;
    } else if let Some(r) = s.strip_prefix('+') {
        s = r;
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(err(Reason::Syntax));
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let b = rest.as_bytes();
        if !(b[0] == b'.' || b[0].is_ascii_digit()) {
            return Err(err(Reason::Syntax));
        }
        let (v, n) = leading_int(b).ok_or_else(|| err(Reason::Overflow))?;
        let pre = n > 0;
        let mut i = n;
        let (mut frac, mut scale, mut post) = (0u64, 1f64, false);
        if i < b.len() && b[i] == b'.' {
            let (f, sc, m) = leading_fraction(&b[i + 1..]);
            (frac, scale, post) = (f, sc, m > 0);
            i += 1 + m;
        }
        if !pre && !post {
            return Err(err(Reason::Syntax));
        }
        let after = &rest[i..];
        let ulen = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let unit = &after[..ulen];
        if unit.is_empty() {
            return Err(err(Reason::MissingUnit));
        }
        let u = unit_ns(unit).ok_or_else(|| err(Reason::UnknownUnit(unit.to_string())))?;
        if v > (1u64 << 63) / u {
            return Err(err(Reason::Overflow));
        }
        let mut part = v * u;
        if frac > 0 {
            // Go: float64(f) * (float64(unit) / scale), truncated.
            part += (frac as f64 * (u as f64 / scale)) as u64;
            if part > 1 << 63 {
                return Err(err(Reason::Overflow));
            }
        }
        total = total
            .checked_add(part)
            .filter(|t| *t <= 1 << 63)
            .ok_or_else(|| err(Reason::Overflow))?;
        rest = &after[ulen..];
    }
    if total > MAX_NS {
        return Err(err(Reason::Overflow));
    }
    if neg && total > 0 {
        return Err(err(Reason::Negative));
    }
    Ok(Duration::from_nanos(total))
}

/// Parses a positive Go duration (zero is an error): intervals, periods, caps.
pub fn parse_positive(input: &str) -> Result<Duration, DurationError> {
    let d = parse(input)?;
    if d.is_zero() {
        return Err(DurationError {
            input: input.to_string(),
            reason: Reason::NotPositive,
        });
    }
    Ok(d)
}

/// Formats a duration as Go's `Duration.String` does for whole units
/// (`1h30m0s`, `15s`, `500ms`, `0s`), for messages and summaries.
pub fn format(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return trim_frac(ns as f64 / 1e3, "µs");
    }
    if ns < 1_000_000_000 {
        return trim_frac(ns as f64 / 1e6, "ms");
    }
    let secs = d.as_secs();
    let (h, m) = (secs / 3600, secs / 60 % 60);
    let s = trim_frac((secs % 60) as f64 + f64::from(d.subsec_nanos()) / 1e9, "s");
    match (h, m) {
        (0, 0) => s,
        (0, m) => format!("{m}m{s}"),
        (h, m) => format!("{h}h{m}m{s}"),
    }
}

fn trim_frac(v: f64, unit: &str) -> String {
    let t = format!("{v:.9}");
    let t = t.trim_end_matches('0').trim_end_matches('.');
    format!("{t}{unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one table: Go's `time.ParseDuration` cases (transcribed as data from Go's
    /// time_test.go, negative ones mapped to Corral's rejection) plus the inputs the
    /// three former grammars disagreed on (bare `6`, `2d`).
    #[test]
    fn go_table() {
        let ok: &[(&str, u64)] = &[
            ("0", 0),
            ("5s", 5_000_000_000),
            ("30s", 30_000_000_000),
            ("1478s", 1_478_000_000_000),
            ("+5s", 5_000_000_000),
            ("-0", 0),
            ("+0", 0),
            ("5.0s", 5_000_000_000),
            ("5.6s", 5_600_000_000),
            ("5.s", 5_000_000_000),
            (".5s", 500_000_000),
            ("1.0s", 1_000_000_000),
            ("1.00s", 1_000_000_000),
            ("1.004s", 1_004_000_000),
            ("1.0040s", 1_004_000_000),
            ("100.00100s", 100_001_000_000),
            ("10ns", 10),
            ("11us", 11_000),
            ("12µs", 12_000),
            ("12μs", 12_000),
            ("13ms", 13_000_000),
            ("14s", 14_000_000_000),
            ("15m", 900_000_000_000),
            ("16h", 57_600_000_000_000),
            ("3h30m", 12_600_000_000_000),
            ("10.5s4m", 250_500_000_000),
            ("1h2m3s4ms5us6ns", 3_723_004_005_006),
            ("39h9m14.425s", 140_954_425_000_000),
            ("52763797000ns", 52_763_797_000),
            ("0.3333333333333333333h", 1_200_000_000_000),
            ("9007199254740993ns", 9_007_199_254_740_993),
            ("9223372036854775807ns", 9_223_372_036_854_775_807),
            ("9223372036854775.807us", 9_223_372_036_854_775_807),
            ("0.100000000000000000000h", 360_000_000_000),
            ("0.830103483285477580700h", 2_988_372_539_827),
            ("500ms", 500_000_000),
            ("1.5h", 5_400_000_000_000),
            ("2s500ms", 2_500_000_000),
            (" 15s ", 15_000_000_000),
        ];
        for (s, ns) in ok {
            assert_eq!(parse(s), Ok(Duration::from_nanos(*ns)), "{s:?}");
        }
        let bad: &[(&str, Reason)] = &[
            ("", Reason::Syntax),
            ("3", Reason::MissingUnit),
            ("6", Reason::MissingUnit),
            ("90", Reason::MissingUnit),
            ("1.5", Reason::MissingUnit),
            ("-", Reason::Syntax),
            ("s", Reason::Syntax),
            (".", Reason::Syntax),
            ("-.", Reason::Syntax),
            (".s", Reason::Syntax),
            ("+.s", Reason::Syntax),
            ("1d", Reason::UnknownUnit("d".into())),
            ("2d", Reason::UnknownUnit("d".into())),
            ("6x", Reason::UnknownUnit("x".into())),
            ("1.2.3s", Reason::MissingUnit),
            ("1s ms", Reason::UnknownUnit("s ms".into())),
            ("9223372036854775810ns", Reason::Overflow),
            ("9223372036854775808ns", Reason::Overflow),
            ("3000000h", Reason::Overflow),
            ("-5s", Reason::Negative),
            ("-2m3.4s", Reason::Negative),
        ];
        for (s, why) in bad {
            let e = parse(s).expect_err(s);
            assert_eq!(&e.reason, why, "{s:?}");
            assert!(e.to_string().contains(&format!("{s:?}")), "{e}");
        }
        assert_eq!(
            parse("6").unwrap_err().to_string(),
            "invalid duration \"6\": missing unit (Go duration: write e.g. 6s, 500ms, 1h30m)"
        );
        assert_eq!(
            parse_positive("0s").unwrap_err().reason,
            Reason::NotPositive
        );
        assert_eq!(parse_positive("10s"), Ok(Duration::from_secs(10)));
    }

    #[test]
    fn format_round_trips() {
        for (d, s) in [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(15), "15s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(5400), "1h30m0s"),
            (Duration::from_millis(2500), "2.5s"),
        ] {
            assert_eq!(format(d), s);
            assert_eq!(parse(s), Ok(d), "{s}");
        }
    }
}
