//! A deterministic structure-aware byte mutator for Corral's fuzz harnesses
//! (proptest-driven, stable Rust: `scheduler/tests/fuzz.rs`,
//! `dataplane/tests/fuzz.rs`). Each [`Op`] is data, so proptest generates, records
//! and shrinks failing mutation sequences like any other value.

/// Tokens that stress the parsers and the bounds: nesting, quoting, YAML
/// indicators, and numbers at and beyond the limits (the fuzzing report's cases).
pub const TOKENS: &[&str] = &[
    "[",
    "]",
    "{",
    "}",
    "\"",
    "'",
    ":",
    ": ",
    "- ",
    "\n",
    "\n  ",
    ",",
    "#",
    "|",
    ">",
    "&a ",
    "*a",
    "!!binary ",
    "<<: *a",
    "\t",
    "\u{feff}",
    "~",
    "null",
    "true",
    "-1",
    "0",
    "1e1000",
    "1e-1000",
    "18446744073709551616",
    "100000000000000000",
    "100000000000000",
    "9223372036854775807",
    "-9223372036854775808",
    "999999999999999999999999999999999999999",
    "0.000000001",
    "Ki",
    "Ei",
    "m",
    "NaN",
    "tencent.com/vcuda-core",
    "nvidia.com/gpu.count",
    "cpu",
    "memory",
    "\"\"",
    "[]",
    "{}",
    "---\n",
    "...\n",
    "\\u0000",
    "\u{0}",
];

/// One mutation; positions are taken modulo the current length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// XOR one byte.
    Flip(u32, u8),
    /// Insert [`TOKENS`]`[t % len]`.
    Token(u32, u32),
    /// Delete up to `n` bytes.
    Delete(u32, u16),
    /// Copy a slice (from, len) to a position.
    Dup(u32, u16, u32),
    /// Repeat a token `n` times (nesting bombs).
    Repeat(u32, u32, u16),
    /// Cut the input.
    Truncate(u32),
}

/// Applies `ops` to `seed` in order. The result is at most
/// `seed.len() + ops.len() * 64 KiB`.
pub fn mutate(seed: &[u8], ops: &[Op]) -> Vec<u8> {
    let mut v = seed.to_vec();
    let at = |p: u32, len: usize| if len == 0 { 0 } else { p as usize % (len + 1) };
    for op in ops {
        match *op {
            Op::Flip(p, x) => {
                if !v.is_empty() {
                    let i = p as usize % v.len();
                    v[i] ^= x.max(1);
                }
            }
            Op::Token(p, t) => {
                let i = at(p, v.len());
                let tok = TOKENS[t as usize % TOKENS.len()].as_bytes();
                v.splice(i..i, tok.iter().copied());
            }
            Op::Delete(p, n) => {
                if !v.is_empty() {
                    let i = p as usize % v.len();
                    let end = (i + n as usize).min(v.len());
                    v.drain(i..end);
                }
            }
            Op::Dup(from, n, to) => {
                if !v.is_empty() {
                    let f = from as usize % v.len();
                    let end = (f + n as usize).min(v.len()).min(f + 65536);
                    let chunk = v[f..end].to_vec();
                    let t = at(to, v.len());
                    v.splice(t..t, chunk);
                }
            }
            Op::Repeat(p, t, n) => {
                let i = at(p, v.len());
                let tok = TOKENS[t as usize % TOKENS.len()].as_bytes();
                let reps = (n as usize).min(65536 / tok.len().max(1));
                let bytes: Vec<u8> = tok.iter().copied().cycle().take(tok.len() * reps).collect();
                v.splice(i..i, bytes);
            }
            Op::Truncate(p) => {
                let i = at(p, v.len());
                v.truncate(i);
            }
        }
    }
    v
}

/// Number of cases per fuzz target: `CORRAL_FUZZ_CASES` or `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("CORRAL_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_apply_and_stay_bounded() {
        let s = b"a: 1\n";
        assert_eq!(mutate(s, &[]), s);
        assert_eq!(mutate(s, &[Op::Truncate(2)]), b"a:");
        assert_eq!(mutate(s, &[Op::Token(3, 0)]), b"a: [1\n");
        assert_eq!(mutate(s, &[Op::Delete(0, 3)]), b"1\n");
        assert_eq!(mutate(s, &[Op::Dup(0, 2, 0)]), b"a:a: 1\n");
        assert_eq!(mutate(s, &[Op::Repeat(3, 0, 3)]), b"a: [[[1\n");
        assert_eq!(mutate(b"", &[Op::Flip(5, 1), Op::Delete(1, 1)]), b"");
        let big = mutate(s, &[Op::Repeat(0, 0, u16::MAX)]);
        assert!(big.len() <= s.len() + 65536);
    }
}
