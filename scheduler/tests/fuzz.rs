//! Fuzz targets (stable Rust, proptest-driven mutation of a seed corpus): the
//! manifest loader + `simulate`, the configuration loader, the extender's JSON
//! endpoints, and quantity parsing. A target fails on a panic (proptest records the
//! shrunk mutation sequence in `proptest-regressions/`); errors are the expected
//! outcome for most inputs. The run in `cargo test` is short; a long run:
//!
//! ```text
//! CORRAL_FUZZ_CASES=20000 cargo test --release -p corral-scheduler --test fuzz
//! ```
//!
//! Seeds: the golden scenarios, the first documents of `examples/`, the extender
//! fixtures, and the cases of the fuzzing report (absurd GPU nodes, deep nesting).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use corral_limits::mutate::{Op, cases, mutate};
use corral_scheduler::extender::{
    Extender, ExtenderArgs, ExtenderBindingArgs, ExtenderPreemptionArgs, parse,
};
use proptest::prelude::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The first whole documents of `text`, up to about `max` bytes.
fn first_docs(text: &str, max: usize) -> String {
    let mut out = String::new();
    for d in text.split("\n---") {
        if !out.is_empty() && out.len() + d.len() > max {
            break;
        }
        if !out.is_empty() {
            out.push_str("\n---");
        }
        out.push_str(d);
    }
    out
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

const GPU_BAD: &str = r#"apiVersion: v1
kind: Node
metadata: {name: gpu-bad, labels: {nvidia.com/gpu.count: "100000000000000000"}}
status: {allocatable: {cpu: "16", memory: 64Gi, pods: "110", tencent.com/vcuda-core: "18446744073709551616", tencent.com/vcuda-memory: "32"}}
---
apiVersion: v1
kind: Pod
metadata: {name: g, namespace: default}
spec:
  schedulerName: corral
  containers: [{name: c, image: i, resources: {limits: {cpu: "1", memory: 1Gi, tencent.com/vcuda-core: "50", tencent.com/vcuda-memory: "4"}}}]
"#;

fn manifest_seeds() -> &'static [Vec<u8>] {
    static S: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    S.get_or_init(|| {
        let mut seeds = Vec::new();
        for sc in [
            "anti-affinity",
            "gpu-share",
            "node-selector",
            "numa",
            "reasons",
            "volumes",
        ] {
            seeds.push(read(
                &root().join("tests/scenarios").join(sc).join("cluster.yaml"),
            ));
        }
        for f in [
            "examples/cluster/nodes.yaml",
            "examples/cluster/pods.yaml",
            "examples/cluster/running-pods.yaml",
            "examples/cluster/priorityclasses.yaml",
            "examples/cluster/namespaces.yaml",
            "examples/tiers/nodes.yaml",
            "examples/tiers/queues.yaml",
            "examples/tiers/pending.yaml",
            "examples/tiers/running.yaml",
            "examples/tiers/priorityclasses.yaml",
            "examples/health/nodes.yaml",
        ] {
            seeds.push(first_docs(&read(&root().join(f)), 4096));
        }
        seeds.push(GPU_BAD.to_string());
        seeds.push(format!("x: {}", "[".repeat(1000)));
        seeds.into_iter().map(String::into_bytes).collect()
    })
}

fn config_seeds() -> &'static [Vec<u8>] {
    static S: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    S.get_or_init(|| {
        let mut seeds = Vec::new();
        for f in [
            "examples/health/config.yaml",
            "examples/health/profile-with-health.yaml",
        ] {
            seeds.push(read(&root().join(f)));
        }
        for sc in ["anti-affinity", "gpu-share", "node-selector", "numa", "reasons"] {
            let p = root().join("tests/scenarios").join(sc).join("config.yaml");
            if p.exists() {
                seeds.push(read(&p));
            }
        }
        seeds.push(
            "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nprofiles:\n- schedulerName: corral\n  pluginConfig:\n  - name: GpuShare\n    args: {coreOvercommit: 2, maxPodsPerCard: 4}\n"
                .into(),
        );
        seeds.into_iter().map(String::into_bytes).collect()
    })
}

fn extender_seeds() -> &'static [Vec<u8>] {
    static S: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    S.get_or_init(|| {
        let dir = root().join("scheduler/tests/fixtures/extender");
        let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("fixtures")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        let mut seeds: Vec<Vec<u8>> = names.iter().map(|p| read(p).into_bytes()).collect();
        seeds.push(
            serde_json::json!({"Pod": {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c",
                "resources": {"requests": {"tencent.com/vcuda-core": "50"}}}]}},
              "Nodes": {"items": [{"metadata": {"name": "gpu-bad",
                "labels": {"nvidia.com/gpu.count": "100000000000000000"}},
                "status": {"allocatable": {"tencent.com/vcuda-core": "200"}}}]}})
            .to_string()
            .into_bytes(),
        );
        seeds
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<u32>(), any::<u8>()).prop_map(|(p, x)| Op::Flip(p, x)),
        4 => (any::<u32>(), any::<u32>()).prop_map(|(p, t)| Op::Token(p, t)),
        2 => (any::<u32>(), 0u16..64).prop_map(|(p, n)| Op::Delete(p, n)),
        2 => (any::<u32>(), 0u16..512, any::<u32>()).prop_map(|(f, n, t)| Op::Dup(f, n, t)),
        1 => (any::<u32>(), any::<u32>(), 0u16..3000).prop_map(|(p, t, n)| Op::Repeat(p, t, n)),
        1 => any::<u32>().prop_map(Op::Truncate),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 0..10)
}

fn extender() -> &'static Arc<Extender> {
    static E: OnceLock<Arc<Extender>> = OnceLock::new();
    E.get_or_init(|| {
        Arc::new(Extender::new(
            corral_scheduler::config::default_frameworks()
                .into_iter()
                .next()
                .expect("profile"),
        ))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(400), ..ProptestConfig::default() })]

    /// Manifest loader + the whole simulation: errors are fine, panics are not.
    #[test]
    fn fuzz_manifest_loader_and_simulate(i in any::<prop::sample::Index>(), ops in ops()) {
        let seeds = manifest_seeds();
        let input = mutate(&seeds[i.index(seeds.len())], &ops);
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("in.yaml");
        std::fs::write(&f, &input).expect("write");
        let args = corral_scheduler::simulate::SimulateArgs {
            paths: vec![f],
            ..Default::default()
        };
        match corral_scheduler::simulate::run(&args, &mut |_| {}) {
            Ok(_) => {}
            // Every error names the file.
            Err(e) => prop_assert!(e.0.contains("in.yaml") || e.0.contains("--"), "{}", e.0),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(2000), ..ProptestConfig::default() })]

    #[test]
    fn fuzz_config_loader(i in any::<prop::sample::Index>(), ops in ops()) {
        let seeds = config_seeds();
        let input = mutate(&seeds[i.index(seeds.len())], &ops);
        let text = String::from_utf8_lossy(&input);
        if let Ok(cfg) = corral_scheduler::config::KubeSchedulerConfiguration::from_yaml(&text, "c.yaml") {
            let _ = cfg.build();
        }
    }

    /// The extender's request bodies through parse and the handlers.
    #[test]
    fn fuzz_extender_json(i in any::<prop::sample::Index>(), ops in ops()) {
        let seeds = extender_seeds();
        let body = mutate(&seeds[i.index(seeds.len())], &ops);
        let e = extender();
        if let Ok(a) = parse::<ExtenderArgs>(&body, "ExtenderArgs") {
            let _ = e.filter(a.clone());
            let _ = e.prioritize(a);
        }
        if let Ok(a) = parse::<ExtenderPreemptionArgs>(&body, "ExtenderPreemptionArgs") {
            let _ = e.preempt(a);
        }
        let _ = parse::<ExtenderBindingArgs>(&body, "ExtenderBindingArgs");
    }

    /// Any string: a quantity either parses (and converts without overflow panics)
    /// or is an error.
    #[test]
    fn any_string_is_a_quantity_or_an_error(s in "\\PC{0,40}") {
        if let Ok(q) = corral_scheduler::quantity::Quantity::parse(&s) {
            let _ = (q.value(), q.milli_value(), q.is_negative());
        }
        for name in ["cpu", "memory", "tencent.com/vcuda-core"] {
            let _ = corral_scheduler::quantity::parse_resource(name, &s);
        }
    }

    /// Quantity-shaped strings: parsed exactly (checked against i128 arithmetic),
    /// saturated at the i64 bounds, or rejected — never a panic or a wrong value.
    #[test]
    fn quantity_shaped_strings_parse_exactly_or_error(
        sign in prop_oneof![Just(""), Just("-"), Just("+")],
        int in "[0-9]{0,25}",
        frac in proptest::option::of("[0-9]{0,12}"),
        suffix in prop_oneof![
            Just(""), Just("m"), Just("k"), Just("M"), Just("G"), Just("T"), Just("P"), Just("E"),
            Just("Ki"), Just("Mi"), Just("Gi"), Just("Ti"), Just("Pi"), Just("Ei"),
            Just("e3"), Just("e-3"), Just("e18"), Just("E1000"), Just("e1001"), Just("x"),
        ],
    ) {
        let s = format!("{sign}{int}{}{suffix}", frac.as_ref().map(|f| format!(".{f}")).unwrap_or_default());
        let r = corral_scheduler::quantity::Quantity::parse(&s);
        let has_digits = !int.is_empty() || frac.as_ref().is_some_and(|f| !f.is_empty());
        if !has_digits || suffix == "x" || suffix == "e1001" {
            prop_assert!(r.is_err(), "{s} parsed");
            return Ok(());
        }
        let Ok(q) = r else {
            // Only the documented limit: more than 36 significant digits.
            let sig = int.trim_start_matches('0').len()
                + frac.as_deref().unwrap_or("").trim_end_matches('0').len();
            prop_assert!(sig > 36, "{s} rejected");
            return Ok(());
        };
        // Reference: value = digits / 10^frac_len * multiplier, rounded up.
        let f = frac.clone().unwrap_or_default();
        let digits: String = format!("{int}{f}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > 30 {
            return Ok(());
        }
        let m: i128 = if digits.is_empty() { 0 } else { digits.parse().expect("digits") };
        let (mul10, mul2): (i32, u32) = match suffix {
            "m" => (-3, 0), "k" => (3, 0), "M" => (6, 0), "G" => (9, 0), "T" => (12, 0),
            "P" => (15, 0), "E" => (18, 0), "Ki" => (0, 10), "Mi" => (0, 20), "Gi" => (0, 30),
            "Ti" => (0, 40), "Pi" => (0, 50), "Ei" => (0, 60), "e3" => (3, 0), "e-3" => (-3, 0),
            "e18" => (18, 0), "E1000" => (1000, 0), _ => (0, 0),
        };
        let neg = sign == "-";
        let e = mul10 - f.len() as i32;
        let want: Option<i128> = (|| {
            let mut v = m.checked_mul(1i128.checked_shl(mul2)?)?;
            if e >= 0 {
                for _ in 0..e { v = v.checked_mul(10)?; }
                Some(v)
            } else {
                let mut d: i128 = 1;
                for _ in 0..(-e) { d = d.checked_mul(10)?; }
                // ceil towards +inf of ±v/d
                Some(if neg { -(v / d) } else { (v + d - 1) / d })
            }
        })();
        let got = q.value();
        match want {
            Some(w) => {
                let w = if neg && e >= 0 { -w } else { w };
                let clamped = w.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
                prop_assert_eq!(got, clamped, "{}", s);
            }
            // Beyond i128: saturated.
            None => prop_assert!(got == i64::MAX || got == i64::MIN || got == 0 || got == 1, "{s}: {got}"),
        }
    }
}
