//! volcano-scheduler.conf through the real binary (issue 12): Volcano's chart
//! ConfigMap and a full configuration schedule `examples/tiers` exactly as the
//! equivalent Corral configuration; a malformed one exits non-zero naming the field.

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn simulate(config: &str) -> (i32, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_corral-scheduler"))
        .args([
            "simulate",
            "examples/tiers",
            "--cycles",
            "2",
            "--output",
            "json",
            "--config",
            config,
        ])
        .current_dir(root())
        .output()
        .expect("run corral-scheduler");
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.code().unwrap_or(-1),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Placements and evictions, sorted.
fn decisions(v: &serde_json::Value) -> (Vec<String>, Vec<String>) {
    let list = |k: &str, f: &dyn Fn(&serde_json::Value) -> String| {
        let mut out: Vec<String> = v[k].as_array().into_iter().flatten().map(f).collect();
        out.sort();
        out
    };
    (
        list("placements", &|p| format!("{} -> {}", p["pod"], p["node"])),
        list("evictions", &|e| e["pod"].to_string()),
    )
}

#[test]
fn volcano_conf_schedules_like_the_equivalent_corral_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    // (Volcano configuration, equivalent Corral session section)
    let cases = [
        (
            "examples/volcano/volcano-scheduler-configmap.yaml",
            "actions: [enqueue, allocate, backfill]\n    plugins: [priority, gang, conformance, overcommit, drf, proportion]",
        ),
        (
            "examples/volcano/volcano-scheduler.conf",
            "actions: [enqueue, allocate, backfill, preempt, reclaim]\n    plugins: [priority, gang, conformance, overcommit, drf, proportion]",
        ),
    ];
    for (i, (volcano, session)) in cases.iter().enumerate() {
        let native = dir.path().join(format!("native-{i}.yaml"));
        std::fs::write(
            &native,
            format!(
                "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\ncorral:\n  session:\n    {session}\n"
            ),
        )
        .expect("write");
        let (code, v, err) = simulate(volcano);
        assert_eq!(code, 0, "{volcano}: {err}");
        let (code, n, err) = simulate(&native.display().to_string());
        assert_eq!(code, 0, "native: {err}");
        let (vp, ve) = decisions(&v);
        assert!(
            v["podgroups"].as_array().is_some_and(|g| !g.is_empty()),
            "{v}"
        );
        assert_eq!(v["podgroups"], n["podgroups"], "{volcano}");
        assert_eq!((vp, ve), decisions(&n), "{volcano}");
    }
    // The chart's actions place nothing on the full cluster; the full configuration
    // preempts and reclaims, then binds the preemptors.
    let (_, v, _) = simulate(cases[0].0);
    assert!(decisions(&v).0.is_empty(), "{v}");
    let (_, v, _) = simulate(cases[1].0);
    assert_eq!(decisions(&v).0.len(), 3, "{v}");
    assert_eq!(decisions(&v).1.len(), 3, "{v}");
}

#[test]
fn malformed_volcano_conf_is_an_error_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("volcano-scheduler.conf");
    std::fs::write(
        &bad,
        "actions: \"enqueue, allocate\"\ntiers:\n- plugins:\n  - name: priority\n  - name: gang\n    enablePreemptable: yes-please\n",
    )
    .expect("write");
    let (code, _, err) = simulate(&bad.display().to_string());
    assert_ne!(code, 0);
    assert!(
        err.contains("volcano-scheduler.conf")
            && err.contains("tiers[0].plugins[1].enablePreemptable"),
        "{err}"
    );
}

/// `deviceshare` is GpuShare in the profile: with `deviceshare.VGPUEnable` a Volcano
/// vGPU pod gets a card from the node's registration (assignment annotation
/// written); without it the names are plain extended resources, as in Volcano (the
/// card count is checked against allocatable, the memory amount not at all).
#[test]
fn deviceshare_places_volcano_vgpu_pods_on_registered_cards() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = dir.path().join("cluster.yaml");
    std::fs::write(
        &cluster,
        r#"apiVersion: v1
kind: Node
metadata:
  name: gpu-0
  annotations:
    volcano.sh/node-vgpu-register: "GPU-a,4,16384,NVIDIA-Tesla T4,true,hami-core:"
status:
  allocatable: {cpu: "8", memory: 32Gi, pods: "110", volcano.sh/vgpu-number: "4"}
---
apiVersion: v1
kind: Pod
metadata: {name: infer, namespace: default}
spec:
  schedulerName: volcano
  containers:
  - name: c
    image: i
    resources:
      limits: {volcano.sh/vgpu-number: "1", volcano.sh/vgpu-memory: "20000"}
"#,
    )
    .expect("write cluster");
    let run = |vgpu: bool| {
        let conf = dir.path().join(format!("v{vgpu}.conf"));
        std::fs::write(
            &conf,
            format!(
                "actions: \"enqueue, allocate\"\ntiers:\n- plugins:\n  - name: gang\n  - name: predicates\n  - name: deviceshare\n    arguments: {{deviceshare.VGPUEnable: {vgpu}}}\n"
            ),
        )
        .expect("write conf");
        let out = Command::new(env!("CARGO_BIN_EXE_corral-scheduler"))
            .args(["simulate", "--output", "json", "--config"])
            .arg(&conf)
            .arg(&cluster)
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
    };
    // 20000 MiB on a 16384 MiB card: GpuShare refuses it with VGPUEnable...
    let on = run(true);
    assert_eq!(on["placements"].as_array().map(Vec::len), Some(0), "{on}");
    let msg = on["unschedulable"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(msg.contains("vGPU"), "{msg}");
    // ...and without it only the card count is checked (Volcano's behaviour).
    let off = run(false);
    assert_eq!(off["placements"][0]["node"], "gpu-0", "{off}");
    assert!(off["annotations"].get("default/infer").is_none(), "{off}");
    // A request that fits gets its card recorded.
    let fits = std::fs::read_to_string(&cluster)
        .expect("read")
        .replace("\"20000\"", "\"2048\"");
    std::fs::write(&cluster, fits).expect("write");
    let on = run(true);
    assert_eq!(on["placements"][0]["node"], "gpu-0", "{on}");
    let ids = on["annotations"]["default/infer"]["volcano.sh/vgpu-ids-new"]
        .as_str()
        .unwrap_or_default();
    assert!(ids.starts_with("GPU-a,NVIDIA,2048,"), "{on}");
}
