//! CLI tests: golden scenarios (JSON compared) and bad input through the real
//! `corral-scheduler` binary.

use std::path::PathBuf;
use std::process::Command;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_corral-scheduler"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn simulate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .arg("simulate")
        .args(args)
        .current_dir(root())
        .output()
        .expect("run corral-scheduler");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Golden scenarios: tests/scenarios/<name>/cluster.yaml (+ optional config.yaml and
/// args) with expected.json holding `placements` and `unschedulable` (and, when
/// present, `annotations`: what Reserve plugins record for placed pods).
#[test]
fn golden_scenarios() {
    let dir = root().join("tests/scenarios");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/scenarios")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no scenarios found");
    let mut failures = Vec::new();
    for sc in &names {
        let cluster = sc.join("cluster.yaml");
        let mut args: Vec<String> = vec![
            cluster.display().to_string(),
            "--output".into(),
            "json".into(),
        ];
        if sc.join("config.yaml").exists() {
            args.push("--config".into());
            args.push(sc.join("config.yaml").display().to_string());
        }
        if let Ok(extra) = std::fs::read_to_string(sc.join("args")) {
            args.extend(extra.split_whitespace().map(String::from));
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = simulate(&argv);
        assert_eq!(code, 0, "{}: exit {code}: {err}", sc.display());
        let got: serde_json::Value = serde_json::from_str(&out).expect("json output");
        let want: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(sc.join("expected.json")).expect("expected.json"),
        )
        .expect("expected.json parses");
        for key in ["placements", "unschedulable"] {
            let mut g = got[key].as_array().cloned().unwrap_or_default();
            let mut w = want[key].as_array().cloned().unwrap_or_default();
            let k = |v: &serde_json::Value| v["pod"].as_str().unwrap_or("").to_string();
            g.sort_by_key(k);
            w.sort_by_key(k);
            if g != w {
                failures.push(format!(
                    "{} {key}:\n  want {}\n  got  {}",
                    sc.display(),
                    serde_json::to_string(&w).unwrap_or_default(),
                    serde_json::to_string(&g).unwrap_or_default()
                ));
            }
        }
        if let Some(want_ann) = want.get("annotations")
            && got["annotations"] != *want_ann
        {
            failures.push(format!(
                "{} annotations:\n  want {want_ann}\n  got  {}",
                sc.display(),
                got["annotations"]
            ));
        }
        if let Some(want_explain) = want.get("explain") {
            // Compare feasibility and per-plugin scores of explained pods.
            let got_explain = &got["explain"];
            for (i, we) in want_explain.as_array().into_iter().flatten().enumerate() {
                let ge = &got_explain[i];
                if ge["pod"] != we["pod"] || ge["selected"] != we["selected"] {
                    failures.push(format!("{} explain[{i}]: want {we} got {ge}", sc.display()));
                    continue;
                }
                for wn in we["nodes"].as_array().into_iter().flatten() {
                    let gn = ge["nodes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|n| n["node"] == wn["node"]);
                    let Some(gn) = gn else {
                        failures.push(format!(
                            "{} explain: node {} missing",
                            sc.display(),
                            wn["node"]
                        ));
                        continue;
                    };
                    for f in ["feasible", "scores", "total", "filter_failures"] {
                        if wn.get(f).is_some() && gn[f] != wn[f] {
                            failures.push(format!(
                                "{} explain {} {f}: want {} got {}",
                                sc.display(),
                                wn["node"],
                                wn[f],
                                gn[f]
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches:\n{}",
        failures.join("\n")
    );
}

#[test]
fn builtin_example_runs_and_reports_stats() {
    let (code, out, err) = simulate(&["--output", "json", "--seed", "7"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let placed = v["placements"].as_array().map_or(0, |a| a.len());
    let unsched = v["unschedulable"].as_array().map_or(0, |a| a.len());
    assert_eq!(v["stats"]["pods"].as_u64(), Some((placed + unsched) as u64));
    assert!(placed > 500, "only {placed} placed");
    assert!(unsched >= 1, "the example has pods that can never fit");
    assert!(v["stats"]["nodes"].as_u64().unwrap_or(0) >= 200);
    for k in ["elapsed_ms", "pods_per_second"] {
        assert!(v["stats"][k].as_f64().unwrap_or(-1.0) > 0.0, "{k}");
    }
    for k in ["p50", "p99", "max"] {
        assert!(
            v["stats"]["decision_latency_us"][k]
                .as_f64()
                .unwrap_or(-1.0)
                > 0.0,
            "{k}"
        );
    }
    for u in v["unschedulable"].as_array().unwrap() {
        assert!(u["message"].as_str().unwrap().starts_with("0/"), "{u}");
    }
    // Same seed, same decisions.
    let (_, out2, _) = simulate(&["--output", "json", "--seed", "7"]);
    let v2: serde_json::Value = serde_json::from_str(&out2).unwrap();
    assert_eq!(v["placements"], v2["placements"]);
    assert_eq!(v["unschedulable"], v2["unschedulable"]);
}

#[test]
fn explain_lists_every_node() {
    let (code, out, err) = simulate(&["--output", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let pod = v["placements"][0]["pod"].as_str().unwrap().to_string();
    let (code, out, err) = simulate(&["--output", "json", "--explain", &pod]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ex = &v["explain"][0];
    assert_eq!(ex["pod"], pod.as_str());
    let nodes = ex["nodes"].as_array().unwrap();
    assert_eq!(nodes.len() as u64, v["stats"]["nodes"].as_u64().unwrap());
    let selected = ex["selected"].as_str().unwrap();
    let sel = nodes.iter().find(|n| n["node"] == selected).unwrap();
    assert_eq!(sel["feasible"], true);
    for n in nodes {
        if n["feasible"] == false {
            assert!(!n["filter_failures"].as_array().unwrap().is_empty());
        }
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let malformed = write(
        "bad.yaml",
        "apiVersion: v1\nkind: Node\nmetadata: {name: [\n",
    );
    let (code, _, err) = simulate(&[&malformed]);
    assert_eq!(code, 1);
    assert!(
        err.contains("bad.yaml") && err.contains("document 1") && err.contains("malformed YAML"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    let qty = write(
        "qty.yaml",
        "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nstatus: {allocatable: {cpu: 4 cores}}\n",
    );
    let (code, _, err) = simulate(&[&qty]);
    assert_eq!(code, 1);
    assert!(
        err.contains("qty.yaml: document 1")
            && err.contains("Node n1")
            && err.contains("status.allocatable[cpu]"),
        "{err}"
    );

    let nrt = write(
        "nrt.yaml",
        "apiVersion: topology.node.k8s.io/v1alpha2\nkind: NodeResourceTopology\nmetadata: {name: n1}\nattributes: [{name: topologyManagerPolicy, value: single-numa-node}]\nzones:\n- name: node-0\n  type: Node\n  resources: [{name: cpu, capacity: '4', allocatable: '4', available: four}]\n",
    );
    let (code, _, err) = simulate(&[&nrt]);
    assert_eq!(code, 1);
    assert!(
        err.contains("nrt.yaml: document 1")
            && err.contains("NodeResourceTopology n1")
            && err.contains("zones[0].resources[0].available"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    let (code, _, err) = simulate(&["/definitely/missing.yaml"]);
    assert_eq!(code, 1);
    assert!(err.contains("/definitely/missing.yaml"), "{err}");

    let cfg = write(
        "cfg.yaml",
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nprofiles:\n- schedulerName: corral\n  plugins:\n    filter:\n      enabled: [{name: NodeFitness}]\n",
    );
    let (code, _, err) = simulate(&["--config", &cfg]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown plugin \"NodeFitness\""), "{err}");

    let (code, _, err) = simulate(&["--explain", "default/nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("default/nope"), "{err}");
    let (code, _, _) = simulate(&["--explain", "nope"]);
    assert_eq!(code, 2);

    let unknown = write(
        "u.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: n1}\nstatus: {allocatable: {cpu: '1', pods: '10'}}\n",
    );
    let (code, out, err) = simulate(&[&unknown, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        err.lines()
            .filter(|l| l.contains("skipping unsupported kind Deployment"))
            .count(),
        1,
        "{err}"
    );
    assert!(out.contains("\"placements\""));
}
