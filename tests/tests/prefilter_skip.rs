//! `PreFilterPlugin::skip_depends_on_pods` (issue 15 item 3, session 10): a plugin
//! that declares `false` skips a pod or not by the pod and its configuration alone,
//! so the batch committer does not ask it again after other pods were committed.
//! Checked on the `mixed` workload's pods (GPU, GPU-share-free, tainted-pool, web,
//! batch, data, system pods): every declaring plugin of the default profiles gives
//! each pod the same Skip / not-Skip on the cluster with its running pods and on the
//! same cluster after every pending pod was added to it (spread over the nodes).

mod common;

use common::workload;
use corral_loadgen::cluster::Profile;
use corral_scheduler::config::default_frameworks;
use corral_scheduler::framework::CycleState;
use std::sync::Arc;

#[test]
fn declared_pod_only_skips_do_not_change_with_committed_pods() {
    let fws = default_frameworks();
    let (mut declared, mut skipped, mut applied) = (0usize, 0usize, 0usize);
    for seed in [1u64, 5] {
        let (snap, pending) = workload(Profile::Mixed, 60, 240, 120, seed);
        let mut full = snap.clone();
        let names: Vec<String> = snap.nodes().iter().map(|n| n.name.to_string()).collect();
        for (i, p) in pending.iter().enumerate() {
            full.add_pod(Arc::new(p.clone()), &names[i % names.len()]);
        }
        assert!(full.generation() > snap.generation());
        for fw in &fws {
            for pl in fw.pre_filter.iter().filter(|p| !p.skip_depends_on_pods()) {
                declared += 1;
                for pod in &pending {
                    let (_, before) = pl.pre_filter(&mut CycleState::new(), pod, &snap);
                    let (_, after) = pl.pre_filter(&mut CycleState::new(), pod, &full);
                    assert_eq!(
                        before.is_skip(),
                        after.is_skip(),
                        "seed {seed}: {} on {}: {before:?} then {after:?}",
                        pl.name(),
                        pod.key
                    );
                    if before.is_skip() {
                        skipped += 1;
                    } else {
                        applied += 1;
                    }
                }
            }
        }
    }
    // The default profile has such plugins (GpuShare among them), and both outcomes
    // occur (GPU pods are not skipped by GpuShare).
    assert!(declared > 0, "no plugin declares a pod-only skip");
    assert!(
        fws[0]
            .pre_filter
            .iter()
            .any(|p| p.name() == "GpuShare" && !p.skip_depends_on_pods()),
        "GpuShare declares a pod-only skip"
    );
    assert!(
        skipped > 0 && applied > 0,
        "skipped {skipped}, applied {applied}"
    );
}
