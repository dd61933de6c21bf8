use super::*;

fn example() -> TimelineArgs {
    TimelineArgs {
        file: PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/health/timeline.yaml"
        )),
        ..TimelineArgs::default()
    }
}

fn metric<'a>(run: &'a TimelineRun, node: &str) -> &'a NodeMetrics {
    run.metrics
        .iter()
        .find(|m| m.node == node)
        .unwrap_or_else(|| panic!("no metrics for {node}"))
}

/// The targets on examples/health, with the naive policy for contrast.
#[test]
fn example_timeline_meets_targets() {
    let mut warns = Vec::new();
    let args = TimelineArgs {
        compare_naive: true,
        ..example()
    };
    let r = run_all(&args, &mut |w| warns.push(w)).unwrap();
    assert!(warns.is_empty(), "{warns:?}");
    let (smooth, naive) = (&r.runs[0], &r.runs[1]);
    assert_eq!(smooth.nodes, 50);
    assert_eq!(smooth.unschedulable, 0);
    let deg = metric(smooth, "node-07");
    // Degraded node below half its fair share within 2 intervals of crossing.
    let iv = deg.intervals_to_half_fair.expect("share never fell");
    assert!(iv <= 2.0, "{deg:?}");
    // Herd ratio after recovery.
    let herd = deg.herd_ratio.expect("no recovery measured");
    assert!(herd <= 1.5, "{deg:?}");
    // Flapping node: at most one direction change per 5 minutes with hysteresis.
    let flap = metric(smooth, "node-23");
    assert!(flap.direction_changes_per_5min <= 1.0, "{flap:?}");
    // The naive filter oscillates on the same timeline.
    let nflap = metric(naive, "node-23");
    assert!(
        nflap.direction_changes > 5 * flap.direction_changes.max(1),
        "naive {nflap:?} vs {flap:?}"
    );
    // The SVG renders and names the nodes.
    let svg = super::super::plot::render_svg(&r).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("node-07"));
    // JSON carries the metrics.
    let j = serde_json::to_value(&r).unwrap();
    assert!(j["runs"][1]["metrics"][0]["herd_ratio"].is_number());
}

#[test]
fn direction_changes_ignore_noise_within_the_band() {
    assert_eq!(direction_changes(&[1.0, 1.1, 0.95, 1.05, 1.0], 0.5), 0);
    assert_eq!(direction_changes(&[0.0, 1.0, 0.0, 1.0, 0.0], 0.5), 3);
    assert_eq!(direction_changes(&[0.0, 1.0, 2.0, 3.0], 0.5), 0);
    assert_eq!(
        direction_changes(&[f64::NAN, 0.0, 1.0, f64::NAN, 0.0], 0.5),
        1
    );
}

/// Selection tolerance (the opt-in scheduler hook): with exact argmax every pod of
/// a batch goes to the single best-scored node; with a tolerance covering the
/// difference they spread over the nearly-equal nodes.
#[test]
fn selection_tolerance_spreads_nearly_equal_nodes() {
    use crate::config::KubeSchedulerConfiguration;
    use crate::testutil::{node, pod};
    let fws = KubeSchedulerConfiguration::from_yaml(DEFAULT_CONFIG, "t")
        .unwrap()
        .build()
        .unwrap();
    let place = |tol: i64| {
        let mut snap = Snapshot::new();
        for i in 0..4 {
            snap.upsert_node(
                node(&format!("n{i}"))
                    .cpu("64")
                    .mem("256Gi")
                    .pods("500")
                    .info(),
            );
        }
        let mut t = HealthTracker::new(HealthConfig::default()).unwrap();
        // n0 slightly healthier than the rest (score 100 vs 99).
        for i in 1..4 {
            t.observe(0.0, &format!("n{i}"), "cpu", 60.4);
        }
        t.advance(0.0);
        crate::health::attach(&mut snap, t.view());
        let opts = Options {
            seed: 7,
            selection_tolerance: tol,
            batch_size: 1,
            ..Options::default()
        };
        let mut s = Scheduler::new(fws.clone(), snap, opts);
        let pods: Vec<PodInfo> = (0..8)
            .map(|i| pod(&format!("p{i}")).cpu("10m").seq(i).info())
            .collect();
        let r = s.schedule_all(pods);
        r.placements
            .iter()
            .map(|p| p.node.clone())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(place(0).len(), 1, "{:?}", place(0));
    assert!(place(10).len() >= 3, "{:?}", place(10));
}

/// Replacing the health view between runs of the same Scheduler must not reuse
/// cached Filter results of the old view (`Snapshot::set_health` bumps the
/// snapshot's node version): n0 is untouched by run 1 (all pods go to the healthier
/// n1), so its cached "feasible" would survive by generation alone.
#[test]
fn new_health_view_invalidates_cached_results() {
    use crate::config::KubeSchedulerConfiguration;
    use crate::testutil::{node, pod};
    let fws = KubeSchedulerConfiguration::from_yaml(DEFAULT_CONFIG, "t")
        .unwrap()
        .build()
        .unwrap();
    let mut snap = Snapshot::new();
    for i in 0..2 {
        snap.upsert_node(
            node(&format!("n{i}"))
                .cpu("64")
                .mem("256Gi")
                .pods("500")
                .info(),
        );
    }
    let mut t = HealthTracker::new(HealthConfig::default()).unwrap();
    t.observe(0.0, "n0", "cpu", 70.0);
    t.observe(0.0, "n1", "cpu", 10.0);
    t.advance(0.0);
    crate::health::attach(&mut snap, t.view());
    let mut s = Scheduler::new(fws, snap, Options::default());
    let batch = |from: u64| -> Vec<PodInfo> {
        (from..from + 8)
            .map(|i| pod(&format!("p{i}")).cpu("1").seq(i).info())
            .collect()
    };
    let r = s.schedule_all(batch(0));
    assert!(r.placements.iter().all(|p| p.node == "n1"), "{r:?}");
    assert_eq!(r.placements.len(), 8);
    t.observe(1.0, "n0", "gpu_missing", 1.0);
    t.observe(1.0, "n1", "gpu_missing", 1.0);
    t.advance(1.0);
    crate::health::attach(&mut s.snapshot, t.view());
    let r = s.schedule_all(batch(100));
    assert!(r.placements.is_empty(), "{r:?}");
    assert_eq!(r.unschedulable.len(), 8);
    assert!(
        r.unschedulable[0]
            .message
            .contains("node(s) unhealthy: gpu_missing"),
        "{r:?}"
    );
}

#[test]
fn progress_line_names_the_run_and_interval() {
    assert_eq!(
        progress_line(Mode::Smoothed, 120, 180),
        "Smoothed: interval 120/180 (66%)"
    );
    assert_eq!(progress_line(Mode::Naive, 0, 0), "Naive: interval 0/0 (0%)");
}

/// A `failNode` event: the node's pods are re-placed first, in priority order, at
/// the interval containing the event; an unknown node is an error naming the event.
#[test]
fn fail_node_event_replaces_the_nodes_pods_first() {
    let ex = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/ha-reserve"
    ));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pod.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: job\n  namespace: default\n  annotations: {corral.io/duration: 1h}\nspec:\n  schedulerName: corral\n  containers:\n  - name: main\n    image: busybox:1.36\n    resources:\n      requests: {cpu: \"1\", memory: 1Gi}\n",
    )
    .unwrap();
    let timeline = |node: &str| {
        format!(
            "cluster: [{}]\nconfig: {}\nduration: 2m\nstep: 30s\narrivals:\n  pod: pod.yaml\n  times: [0, 90]\nevents:\n- {{at: 45s, failNode: {node}}}\n",
            ex.join("cluster").display(),
            ex.join("config.yaml").display()
        )
    };
    let file = dir.path().join("t.yaml");
    std::fs::write(&file, timeline("cpu-1")).unwrap();
    let args = TimelineArgs {
        file: file.clone(),
        ..TimelineArgs::default()
    };
    let r = run_all(&args, &mut |w| panic!("warning: {w}")).unwrap();
    let run = &r.runs[0];
    assert_eq!(run.failures.len(), 1);
    let f = &run.failures[0];
    assert_eq!((f.node.as_str(), f.at), ("cpu-1", 60.0));
    assert_eq!(f.evicted, ["prod/db-0", "prod/web-0", "batch/report-0"]);
    let replaced: Vec<&str> = f.replaced.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(replaced, ["prod/db-0", "prod/web-0", "batch/report-0"]);
    assert!(f.replaced.iter().all(|(_, n)| n != "cpu-1"), "{f:?}");
    assert!(f.unschedulable.is_empty(), "{f:?}");
    // Both arrivals and the three re-placed pods count as placed.
    assert_eq!(run.placed.iter().sum::<usize>(), 5);
    assert!(to_table(&r).contains(
        "node cpu-1 failed at 60 s: 3 pod(s) re-placed first in priority order, 0 unschedulable"
    ));
    std::fs::write(&file, timeline("nope")).unwrap();
    let e = run_all(&args, &mut |_| {}).expect_err("unknown node");
    assert!(e.contains("events[0].failNode: no node \"nope\""), "{e}");
}
