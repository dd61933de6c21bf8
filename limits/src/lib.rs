//! Input limits shared by every Corral entry point (the lowest layer: no Corral
//! dependencies).
//!
//! YAML/JSON parsers recurse per nesting level and some (serde_yaml_ng's event
//! loader) take super-linear time on deep nesting before their own recursion limit
//! fires: 100,000 `[` took ~24 s. [`check_yaml`] and [`check_json`] are linear
//! pre-scans run on the raw text **before** parsing; they fail fast with the limit in
//! the message. They over-estimate rather than under-estimate nesting (a bracket in a
//! plain scalar may count), so the depth limit is generous compared with real
//! Kubernetes objects (whose deepest paths are ~20 levels).

use std::fmt;

pub mod mutate;

/// Deepest nesting of collections accepted in YAML and JSON input (serde_json's
/// own recursion limit is 128; this fires first, with a message that names it).
pub const MAX_NESTING_DEPTH: usize = 100;
/// Largest manifest file (multi-document YAML/JSON) `simulate` and friends read.
pub const MAX_MANIFEST_BYTES: usize = 64 << 20;
/// Largest configuration file (KubeSchedulerConfiguration, health sources, ...).
pub const MAX_CONFIG_BYTES: usize = 4 << 20;
/// Largest extender request body (a NodeList of a large cluster in
/// nodeCacheCapable=false mode is tens of MiB).
pub const MAX_EXTENDER_BODY_BYTES: usize = 64 << 20;
/// Largest CNI network configuration on stdin.
pub const MAX_CNI_CONFIG_BYTES: usize = 1 << 20;
/// Largest request line on the agent's socket.
pub const MAX_AGENT_REQUEST_BYTES: usize = 1 << 20;

/// An input beyond a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitError {
    /// The document is larger than `limit` bytes.
    TooLarge { size: usize, limit: usize },
    /// Collections nest deeper than `limit` (1-based line and column of the
    /// opening that went over).
    TooDeep {
        limit: usize,
        line: usize,
        column: usize,
    },
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitError::TooLarge { size, limit } => {
                write!(f, "input is {size} bytes, over the limit of {limit} bytes")
            }
            LimitError::TooDeep {
                limit,
                line,
                column,
            } => write!(
                f,
                "nesting deeper than the limit of {limit} levels (line {line}, column {column})"
            ),
        }
    }
}

impl std::error::Error for LimitError {}

fn size(len: usize, max_bytes: usize) -> Result<(), LimitError> {
    if len > max_bytes {
        return Err(LimitError::TooLarge {
            size: len,
            limit: max_bytes,
        });
    }
    Ok(())
}

/// Checks a JSON text: at most `max_bytes` bytes and `max_depth` nested arrays and
/// objects. Linear, no allocation; says nothing about validity otherwise.
pub fn check_json(bytes: &[u8], max_depth: usize, max_bytes: usize) -> Result<(), LimitError> {
    size(bytes.len(), max_bytes)?;
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let (mut line, mut line_start) = (1usize, 0usize);
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' {
            line += 1;
            line_start = i + 1;
        }
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(LimitError::TooDeep {
                        limit: max_depth,
                        line,
                        column: i - line_start + 1,
                    });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a (multi-document) YAML text — JSON included — : at most `max_bytes`
/// bytes and `max_depth` nested collections, counting flow collections (`[`, `{`),
/// block indentation levels and compact `- ` / `? ` entries. Quoted scalars,
/// comments and block scalars (`|`, `>`) are skipped. Linear in the input; the
/// indentation stack never grows past `max_depth`.
pub fn check_yaml(text: &str, max_depth: usize, max_bytes: usize) -> Result<(), LimitError> {
    size(text.len(), max_bytes)?;
    let mut s = YamlScan {
        max_depth,
        flow: 0,
        stack: Vec::new(),
        quote: None,
        block_scalar: None,
    };
    for (n, line) in text.split('\n').enumerate() {
        s.line(line.strip_suffix('\r').unwrap_or(line), n + 1)?;
    }
    Ok(())
}

struct YamlScan {
    max_depth: usize,
    /// Open flow collections.
    flow: usize,
    /// Columns of the open block nodes (bounded by `max_depth`).
    stack: Vec<usize>,
    /// Inside a quoted scalar (spans lines): the quote byte.
    quote: Option<u8>,
    /// Inside a block scalar: the indentation of its header line.
    block_scalar: Option<usize>,
}

impl YamlScan {
    fn deep(&self, line: usize, col: usize) -> Result<(), LimitError> {
        if self.flow + self.stack.len() > self.max_depth {
            return Err(LimitError::TooDeep {
                limit: self.max_depth,
                line,
                column: col + 1,
            });
        }
        Ok(())
    }

    fn line(&mut self, l: &str, lno: usize) -> Result<(), LimitError> {
        let b = l.as_bytes();
        let indent = b.iter().take_while(|&&c| c == b' ').count();
        let blank = indent == b.len() || b[indent] == b'#';
        if let Some(h) = self.block_scalar {
            if blank || indent > h {
                return Ok(());
            }
            self.block_scalar = None;
        }
        let mut j = 0;
        if self.quote.is_none() && self.flow == 0 {
            if blank {
                return Ok(());
            }
            if l.starts_with("---") || l.starts_with("...") {
                self.stack.clear();
                j = 3;
            } else {
                // A block node at `indent`: closes the deeper/equal ones.
                while self.stack.last().is_some_and(|&c| c >= indent) {
                    self.stack.pop();
                }
                self.stack.push(indent);
                self.deep(lno, indent)?;
                j = indent;
                // Compact nested entries: `- - x`, `? - x`.
                while j < b.len()
                    && (b[j] == b'-' || b[j] == b'?')
                    && (j + 1 == b.len() || b[j + 1] == b' ')
                {
                    j += 1;
                    while j < b.len() && b[j] == b' ' {
                        j += 1;
                    }
                    if j < b.len() && b[j] != b'#' {
                        self.stack.push(j);
                        self.deep(lno, j)?;
                    }
                }
            }
        }
        self.rest(b, j, lno, indent)
    }

    /// Flow indicators, quotes, comments and block-scalar headers from byte `j`.
    fn rest(
        &mut self,
        b: &[u8],
        mut j: usize,
        lno: usize,
        indent: usize,
    ) -> Result<(), LimitError> {
        // At the start of a node (where `[`, `{`, a quote or `|` begins one).
        let mut at_start = true;
        let mut prev = b' ';
        while j < b.len() {
            let c = b[j];
            if let Some(q) = self.quote {
                if q == b'"' && c == b'\\' {
                    j += 2;
                    continue;
                }
                if c == q {
                    if q == b'\'' && b.get(j + 1) == Some(&b'\'') {
                        j += 2;
                        continue;
                    }
                    self.quote = None;
                    at_start = false;
                }
                prev = c;
                j += 1;
                continue;
            }
            match c {
                b'#' if prev == b' ' || prev == b'\t' => return Ok(()),
                b'"' | b'\'' if at_start => self.quote = Some(c),
                b'[' | b'{' if at_start || self.flow > 0 => {
                    self.flow += 1;
                    self.deep(lno, j)?;
                    at_start = true;
                }
                b']' | b'}' if self.flow > 0 => {
                    self.flow -= 1;
                    at_start = false;
                }
                b',' if self.flow > 0 => at_start = true,
                b':' if self.flow > 0 => at_start = true,
                b'|' | b'>' if at_start && self.flow == 0 => {
                    self.block_scalar = Some(indent);
                    return Ok(());
                }
                b' ' | b'\t' => {
                    if prev == b':' {
                        at_start = true;
                    }
                }
                _ => at_start = false,
            }
            prev = c;
            j += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_ok(y: &str, d: usize) -> bool {
        check_yaml(y, d, usize::MAX).is_ok()
    }

    #[test]
    fn hundred_thousand_brackets_fail_with_the_limit() {
        let y = format!("x: {}", "[".repeat(100_000));
        let e = check_yaml(&y, MAX_NESTING_DEPTH, MAX_MANIFEST_BYTES).unwrap_err();
        assert_eq!(
            e,
            LimitError::TooDeep {
                limit: 100,
                line: 1,
                // The mapping is level 1; the 100th `[` (column 103) is level 101.
                column: 3 + 100
            }
        );
        assert!(e.to_string().contains("limit of 100 levels"), "{e}");
        let j = "[".repeat(100_000);
        let e = check_json(j.as_bytes(), MAX_NESTING_DEPTH, usize::MAX).unwrap_err();
        assert!(e.to_string().contains("limit of 100"), "{e}");
        let j = "{\"a\":".repeat(100_000);
        assert!(check_json(j.as_bytes(), MAX_NESTING_DEPTH, usize::MAX).is_err());
    }

    #[test]
    fn block_nesting_counts_indentation_and_compact_entries() {
        let mut y = String::new();
        for i in 0..10 {
            y.push_str(&" ".repeat(2 * i));
            y.push_str(&format!("k{i}:\n"));
        }
        assert!(depth_ok(&y, 10));
        assert!(!depth_ok(&y, 9));
        // Four sequences; the scalar after the last `- ` counts too (the scan
        // over-counts by at most one per line).
        assert!(depth_ok("- - - - x\n", 5));
        assert!(!depth_ok("- - - - x\n", 3));
        // Siblings do not add up.
        assert!(depth_ok("a:\n  b: 1\n  c: 2\nd:\n  e: [1, 2]\n", 3));
        assert!(!depth_ok("a:\n  b: 1\n  c: 2\nd:\n  e: [[1], 2]\n", 3));
        // Documents reset.
        assert!(depth_ok("a:\n  b:\n    c: 1\n---\nd:\n  e: 1\n", 3));
    }

    #[test]
    fn quotes_comments_and_block_scalars_are_not_structure() {
        let deep = "[".repeat(50);
        for y in [
            format!("a: \"{deep}\"\n"),
            format!("a: '{deep}'\n"),
            format!("a: 'it''s {deep}'\n"),
            format!("a: \"esc \\\" {deep}\"\n"),
            format!("a: 1 # {deep}\n"),
            format!("# {deep}\na: 1\n"),
            format!("a: |\n  {deep}\n  more\nb: 2\n"),
            format!("a: >-\n    {deep}\n\n    x\nb: 2\n"),
            format!("a: \"multi\n  line {deep}\n  end\"\nb: 1\n"),
            format!("a: foo{deep}\n"),
            format!("{{\"a\": \"{deep}\", \"b\": [1, {{\"c\": \"]]]\"}}]}}\n"),
        ] {
            assert!(depth_ok(&y, 5), "{y}");
        }
        assert!(
            check_json(
                format!("{{\"a\":\"{deep}\\\"{deep}\"}}").as_bytes(),
                2,
                1000
            )
            .is_ok()
        );
    }

    #[test]
    fn size_limit() {
        assert_eq!(
            check_yaml("abc", 10, 2),
            Err(LimitError::TooLarge { size: 3, limit: 2 })
        );
        assert!(check_json(b"[]", 10, 2).is_ok());
        assert!(
            check_json(b"[ ]", 10, 2)
                .unwrap_err()
                .to_string()
                .contains("limit of 2 bytes")
        );
    }

    #[test]
    fn real_manifests_pass() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let mut n = 0;
        for dir in ["examples", "deploy"] {
            let mut stack = vec![std::path::PathBuf::from(root).join(dir)];
            while let Some(p) = stack.pop() {
                let Ok(rd) = std::fs::read_dir(&p) else {
                    continue;
                };
                for e in rd.flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if p
                        .extension()
                        .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
                    {
                        let t = std::fs::read_to_string(&p).unwrap();
                        check_yaml(&t, MAX_NESTING_DEPTH, MAX_MANIFEST_BYTES)
                            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                        n += 1;
                    }
                }
            }
        }
        assert!(n > 5, "found only {n} manifests");
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(256))]
        /// Whatever parses with at most `d` levels per serde_json passes the JSON
        /// scan at `d`, and the scan never under-counts: text the scan rejects at
        /// depth d has more than d levels (serde_json rejects it at d-levels too).
        #[test]
        fn json_scan_agrees_with_serde(v in arb_json()) {
            let text = serde_json::to_string(&v).unwrap();
            let d = json_depth(&v);
            proptest::prop_assert!(check_json(text.as_bytes(), d, usize::MAX).is_ok());
            if d > 0 {
                proptest::prop_assert!(check_json(text.as_bytes(), d - 1, usize::MAX).is_err());
            }
            // The same text as YAML (JSON is YAML flow): never under-counted.
            if d > 0 {
                proptest::prop_assert!(check_yaml(&text, d - 1, usize::MAX).is_err());
            }
            let y = serde_yaml_ng::to_string(&v).unwrap();
            if d > 0 {
                // Block YAML may under-count same-indent sequences by at most half.
                proptest::prop_assert!(check_yaml(&y, 2 * d + 1, usize::MAX).is_ok());
            }
        }
    }

    fn json_depth(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::Array(a) => 1 + a.iter().map(json_depth).max().unwrap_or(0),
            serde_json::Value::Object(m) => 1 + m.values().map(json_depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    fn arb_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i32>().prop_map(|i| serde_json::json!(i)),
            "[\\[\\]{}\"'#:|>, a-z-]{0,12}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(8, 64, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map("[a-z#\\[]{1,5}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
