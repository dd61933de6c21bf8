//! The framework runtime's timing hook ([`FrameworkObserver`]) as the engine drives
//! it: every pod evaluation reports its extension points with kube-scheduler's
//! labels, plugins are reported in sampled cycles only, and placements are the same
//! with or without an observer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use corral_core::framework::{Code, FrameworkObserver};
use corral_core::snapshot::{PodInfo, Snapshot};
use corral_core::testutil::{node, pod};
use corral_engine::config::default_frameworks;
use corral_engine::scheduler::{Options, Scheduler};

#[derive(Default)]
struct Seen {
    points: Mutex<BTreeMap<(String, &'static str, &'static str), usize>>,
    plugins: Mutex<BTreeMap<(&'static str, &'static str, &'static str), usize>>,
}

impl FrameworkObserver for Seen {
    fn extension_point(&self, profile: &str, point: &'static str, status: Code, secs: f64) {
        assert!(secs >= 0.0);
        *self
            .points
            .lock()
            .unwrap()
            .entry((profile.to_string(), point, status.as_str()))
            .or_default() += 1;
    }
    fn plugin(&self, plugin: &'static str, point: &'static str, status: Code, secs: f64) {
        assert!(secs >= 0.0);
        *self
            .plugins
            .lock()
            .unwrap()
            .entry((plugin, point, status.as_str()))
            .or_default() += 1;
    }
}

fn snapshot() -> Snapshot {
    let mut snap = Snapshot::new();
    snap.add_nodes((0..4).map(|i| node(&format!("n{i}")).cpu("4").mem("8Gi").info()));
    snap
}

fn pods() -> Vec<PodInfo> {
    // 40 distinct pods (distinct requests: no shared equivalence class), the last
    // ten too big for any node.
    (0..40)
        .map(|i| {
            let cpu = if i < 30 {
                format!("{}m", 10 + i)
            } else {
                "16".to_string()
            };
            pod(&format!("p{i}")).cpu(&cpu).seq(i as u64).info()
        })
        .collect()
}

#[test]
fn extension_points_every_cycle_plugins_sampled_placements_unchanged() {
    let seen = Arc::new(Seen::default());
    let mut fws = default_frameworks();
    let profile = fws[0].scheduler_name.clone();
    for fw in &mut fws {
        fw.observer = Some(seen.clone());
    }
    let opts = Options {
        seed: 7,
        ..Options::default()
    };
    let mut with = Scheduler::new(fws, snapshot(), opts.clone());
    let r1 = with.schedule_all(pods());
    let mut without = Scheduler::new(default_frameworks(), snapshot(), opts);
    let r2 = without.schedule_all(pods());
    let placed = |r: &corral_engine::scheduler::Report| {
        let mut v: Vec<(String, String)> = r
            .placements
            .iter()
            .map(|p| (p.pod.clone(), p.node.clone()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        placed(&r1),
        placed(&r2),
        "an observer must not change placements"
    );
    assert_eq!(r1.unschedulable.len(), 10, "{r1:?}");

    let points = seen.points.lock().unwrap().clone();
    let get = |p: &'static str, s: &'static str| {
        points.get(&(profile.clone(), p, s)).copied().unwrap_or(0)
    };
    // Each of the 40 pods is filtered at least once (retries after conflicts may
    // add evaluations); the ten oversized pods fail Filter.
    let filters: usize = points
        .iter()
        .filter(|(k, _)| k.1 == "Filter")
        .map(|(_, n)| n)
        .sum();
    assert!(filters >= 40, "{points:?}");
    assert!(get("Filter", "Unschedulable") >= 10, "{points:?}");
    assert!(get("Filter", "Success") >= 30, "{points:?}");
    assert!(get("Score", "Success") >= 1, "{points:?}");
    assert!(get("PreFilter", "Success") >= 1, "{points:?}");

    let plugins = seen.plugins.lock().unwrap().clone();
    let fit_filter: usize = plugins
        .iter()
        .filter(|(k, _)| k.0 == "NodeResourcesFit" && k.1 == "Filter")
        .map(|(_, n)| n)
        .sum();
    // Sampled: some cycles time their plugins (4 nodes per cycle), far from all.
    assert!(fit_filter >= 1, "{plugins:?}");
    assert!(
        fit_filter < 40 * 4,
        "plugins timed in every cycle: {plugins:?}"
    );
}
