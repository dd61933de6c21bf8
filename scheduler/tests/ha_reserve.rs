//! HA reserve and node failure through the real binary (issue 12, Deliver 5):
//! `examples/ha-reserve` with its `corral.haReserve` configuration, `--fail-node`,
//! `--explain` naming the reserve, and configuration errors naming the field.

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn simulate(extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_corral-scheduler"))
        .arg("simulate")
        .arg("examples/ha-reserve/cluster")
        .args(extra)
        .current_dir(root())
        .output()
        .expect("run corral-scheduler");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "--config",
        "examples/ha-reserve/config.yaml",
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = simulate(&args);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).expect("json report")
}

fn placed(v: &serde_json::Value) -> Vec<String> {
    v["placements"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["pod"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn unschedulable(v: &serde_json::Value) -> Vec<(String, String)> {
    v["unschedulable"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|u| {
            (
                u["pod"].as_str().unwrap_or_default().to_string(),
                u["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn the_reserve_holds_low_priority_work_back() {
    let v = json(&[]);
    let mut p = placed(&v);
    p.sort();
    assert_eq!(
        p,
        [
            "ai/infer-1",
            "batch/batch-0",
            "batch/batch-1",
            "batch/batch-2"
        ]
    );
    let u = unschedulable(&v);
    let msg = |pod: &str| {
        u.iter()
            .find(|(p, _)| p == pod)
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| panic!("{pod} not unschedulable: {u:?}"))
    };
    for b in ["batch/batch-3", "batch/batch-4"] {
        assert!(
            msg(b).contains(
                "HA reserve \"cpu\": cpu free 17900m of 64, minus this pod's 4, would fall below the 16 reserved for priority >= 10000"
            ),
            "{b}: {}",
            msg(b)
        );
    }
    assert!(
        msg("ai/infer-2").contains("HA reserve \"gpu\": nvidia.com/gpu free"),
        "{}",
        msg("ai/infer-2")
    );
    // Without the reserve every batch pod is placed.
    let (code, out, err) = simulate(&["--output", "json"]);
    assert_eq!(code, 0, "{err}");
    let free: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(placed(&free).len(), 7, "{out}");
}

#[test]
fn a_failed_node_is_replaced_first_in_priority_order() {
    let v = json(&["--fail-node", "cpu-1"]);
    let f = &v["failed_nodes"][0];
    assert_eq!(f["node"], "cpu-1");
    assert_eq!(
        f["evicted"],
        serde_json::json!(["prod/db-0", "prod/web-0", "batch/report-0"])
    );
    assert_eq!(
        f["dropped"],
        serde_json::json!(["monitoring/node-exporter-cpu-1"])
    );
    // Re-placed before any other pending pod, in priority order.
    let p = placed(&v);
    assert_eq!(
        &p[..3],
        ["prod/db-0", "prod/web-0", "batch/report-0"],
        "{p:?}"
    );
    for pl in v["placements"].as_array().into_iter().flatten() {
        assert_ne!(pl["node"], "cpu-1", "{pl}");
    }
    // Three nodes left: 48 cpu, 12 reserved; the batch pods stay out of it.
    let u = unschedulable(&v);
    for i in 0..5 {
        let b = format!("batch/batch-{i}");
        let (_, m) = u
            .iter()
            .find(|(p, _)| *p == b)
            .unwrap_or_else(|| panic!("{b} placed: {p:?}"));
        assert!(
            m.contains("HA reserve \"cpu\": cpu free 14 of 48, minus this pod's 4, would fall below the 12 reserved"),
            "{b}: {m}"
        );
    }
    // The table shows the failure.
    let (code, out, err) = simulate(&[
        "--config",
        "examples/ha-reserve/config.yaml",
        "--fail-node",
        "cpu-1",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("FAILED NODE cpu-1: 3 pod(s) re-placed first, in priority order (1 DaemonSet/mirror pod(s) gone with it)"),
        "{out}"
    );
    // An unknown node is an error naming it.
    let (code, _, err) = simulate(&["--fail-node", "nope"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("--fail-node nope: no node with that name in the input"),
        "{err}"
    );
}

#[test]
fn explain_names_the_reserve() {
    let (code, out, err) = simulate(&[
        "--config",
        "examples/ha-reserve/config.yaml",
        "--explain",
        "ai/infer-2",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("HAReserve"), "{out}");
    assert!(
        out.contains("HA reserve \"gpu\": nvidia.com/gpu free"),
        "{out}"
    );
}

#[test]
fn bad_reserve_configuration_is_an_error_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (section, want) in [
        (
            "minPriority: 1\n    pools: [{name: a, reserve: {cpu: \"120%\"}}]",
            "corral.haReserve.pools[0].reserve.cpu",
        ),
        (
            "pools: [{name: a, reserve: {cpu: \"1\"}}]",
            "corral.haReserve.minPriority",
        ),
        (
            "minPriority: 1\n    pools: [{name: a, reserve: {cpu: \"1\"}, nodeSelectr: {}}]",
            "corral.haReserve.pools[0]: unknown field `nodeSelectr`",
        ),
    ] {
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            format!(
                "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\ncorral:\n  haReserve:\n    {section}\n"
            ),
        )
        .expect("write");
        let (code, out, err) = simulate(&["--config", path.to_str().expect("utf-8")]);
        assert_ne!(code, 0, "{section}: {out}");
        assert!(err.contains(want), "{section}: {err}");
    }
}
