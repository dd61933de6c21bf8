//! Go `time.ParseDuration` grammar for flags and configuration (`500ms`, `15s`,
//! `1m30s`, `1.5h`), as kube-scheduler's flags take them.

use std::time::Duration;

/// Parses a Go duration: a sequence of decimal numbers with a unit each (`ns`, `us`,
/// `µs`, `ms`, `s`, `m`, `h`); `0` alone is allowed. Negative values are rejected.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let t = t.strip_prefix('+').unwrap_or(t);
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.is_empty() || t.starts_with('-') {
        return Err(format!("invalid duration {s:?}"));
    }
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(n);
        let v: f64 = num
            .parse()
            .map_err(|_| format!("invalid duration {s:?}: expected a number"))?;
        let u = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(u);
        let mult = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("invalid duration {s:?}: missing unit (e.g. 15s)")),
            u => return Err(format!("invalid duration {s:?}: unknown unit {u:?}")),
        };
        total += v * mult;
        rest = next;
    }
    Duration::try_from_secs_f64(total).map_err(|_| format!("invalid duration {s:?}"))
}

/// A positive Go duration (clap value parser).
pub fn positive(s: &str) -> Result<Duration, String> {
    let d = parse_go_duration(s)?;
    if d.is_zero() {
        return Err(format!("{s:?} must be positive"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        for (s, ms) in [
            ("500ms", 500),
            ("15s", 15_000),
            ("1m30s", 90_000),
            ("1.5h", 5_400_000),
            ("0", 0),
            ("2s500ms", 2_500),
        ] {
            assert_eq!(parse_go_duration(s), Ok(Duration::from_millis(ms)), "{s}");
        }
        assert_eq!(parse_go_duration("250us"), Ok(Duration::from_micros(250)));
        for bad in ["", "15", "-1s", "1x", "s", "1.2.3s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?}");
        }
        assert!(positive("0s").is_err());
    }
}
