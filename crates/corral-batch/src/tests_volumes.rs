//! Volumes in sessions: a gang's volumes are reserved all-or-nothing with its pods,
//! and preemption never counts on an evicted pod's PV (its claim keeps it bound).

use std::sync::Arc;

use serde_json::json;

use super::objects::{ANN_GROUP_NAME, EXTRA_KINDS};
use super::session::SessionConfig;
use super::{BatchObjects, run_sessions};
use crate::input::load_str;
use crate::scheduler::{Options, Scheduler};
use crate::snapshot::Snapshot;
use crate::testutil::{PodBuilder, node, pod};
use corral_engine::config::default_frameworks;

const VOLUMES: &str = "
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: local}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
";

fn local_pv(name: &str, node: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: {name}}}\nspec:\n  storageClassName: local\n  capacity: {{storage: 10Gi}}\n  accessModes: [ReadWriteOnce]\n  nodeAffinity: {{required: {{nodeSelectorTerms: [{{matchExpressions: [{{key: kubernetes.io/hostname, operator: In, values: [{node}]}}]}}]}}}}\nstatus: {{phase: Available}}\n"
    )
}

fn claim(name: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}, namespace: default}}\nspec: {{storageClassName: local, accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}\n"
    )
}

fn with_claim(b: PodBuilder, c: &str) -> PodBuilder {
    b.spec(
        "volumes",
        json!([{"name": "data", "persistentVolumeClaim": {"claimName": c}}]),
    )
}

/// Runs one session over 4 nodes (4 CPUs each) with the given objects.
fn session(
    yaml: &str,
    running: Vec<(PodBuilder, &str)>,
    pending: Vec<PodBuilder>,
) -> (super::SessionReport, Scheduler) {
    let inp = load_str(yaml, "volumes.yaml", EXTRA_KINDS).expect("valid yaml");
    let mut snap = Snapshot::new();
    for i in 0..4 {
        snap.upsert_node(node(&format!("n{i}")).cpu("4").mem("16Gi").info());
    }
    {
        let v = snap.volumes_mut();
        for (o, _) in inp.volumes.clone() {
            v.upsert(o);
        }
    }
    for (i, (b, n)) in running.into_iter().enumerate() {
        snap.add_pod(Arc::new(b.node_name(n).seq(i as u64).info()), n);
    }
    let objs = BatchObjects::parse(&inp.other, &inp.priority_classes);
    let sched = Scheduler::new(default_frameworks(), snap, Options::default());
    let pending = pending
        .into_iter()
        .enumerate()
        .map(|(i, b)| b.seq(100 + i as u64).info())
        .collect();
    let cfg = SessionConfig {
        now: Some(1_767_268_800),
        ..SessionConfig::default()
    };
    run_sessions(sched, pending, &objs, &cfg, 1).expect("session")
}

fn gang_yaml(pvs: usize) -> String {
    let mut y = VOLUMES.to_string();
    y.push_str("---\napiVersion: scheduling.volcano.sh/v1beta1\nkind: PodGroup\nmetadata: {name: train, namespace: default}\nspec: {minMember: 4}\n");
    for i in 0..pvs {
        y.push_str(&local_pv(&format!("pv{i}"), &format!("n{i}")));
    }
    for i in 0..4 {
        y.push_str(&claim(&format!("c{i}")));
    }
    y
}

fn gang_pods() -> Vec<PodBuilder> {
    (0..4)
        .map(|i| {
            let mut b = with_claim(pod(&format!("w{i}")).cpu("1"), &format!("c{i}"));
            b.0["metadata"]["annotations"][ANN_GROUP_NAME] = json!("train");
            b
        })
        .collect()
}

#[test]
fn gang_of_four_takes_four_local_pvs_on_four_nodes() {
    let (r, sched) = session(&gang_yaml(4), vec![], gang_pods());
    assert_eq!(r.placements.len(), 4, "{:?}", r.core.unschedulable);
    let mut nodes: Vec<&str> = r.placements.iter().map(|p| p.node.as_str()).collect();
    nodes.sort();
    assert_eq!(nodes, ["n0", "n1", "n2", "n3"]);
    for p in &r.placements {
        let b = &r.volume_bindings[&p.pod];
        let pv = &b.bindings[0].1;
        assert_eq!(pv[2..], p.node[1..], "{} on {} took {pv}", p.pod, p.node);
    }
    assert_eq!(sched.snapshot.volumes().assumed().pv_claims.len(), 4);
}

#[test]
fn gang_that_cannot_start_holds_no_volume() {
    // Only three PVs: the gang of four does not start and nothing stays assumed.
    let (r, sched) = session(&gang_yaml(3), vec![], gang_pods());
    assert!(r.placements.is_empty(), "{:?}", r.placements);
    assert!(r.volume_bindings.is_empty());
    let a = sched.snapshot.volumes().assumed();
    assert!(
        a.pv_claims.is_empty() && a.claims.is_empty() && a.by_pod.is_empty(),
        "{a:?}"
    );
}

#[test]
fn evicting_a_pod_does_not_free_its_pv() {
    // n0's only local PV is bound to the low-priority pod's claim; a high-priority
    // pod needing a local PV cannot get it by evicting that pod.
    let mut y = VOLUMES.to_string();
    y.push_str(&local_pv("pv0", "n0").replace(
        "accessModes: [ReadWriteOnce]",
        "accessModes: [ReadWriteOnce]\n  claimRef: {namespace: default, name: held}",
    ));
    y.push_str(
        &claim("held")
            .replace("spec: {", "spec: {volumeName: pv0, ")
            .replace(
                "namespace: default}",
                "namespace: default, annotations: {pv.kubernetes.io/bind-completed: \"yes\"}}",
            ),
    );
    y.push_str(&claim("wanted"));
    let low = with_claim(pod("low").cpu("4").priority(1), "held");
    let high = with_claim(pod("high").cpu("1").priority(1000), "wanted");
    let (r, _) = session(&y, vec![(low, "n0")], vec![high]);
    assert!(r.evictions.is_empty(), "{:?}", r.evictions);
    assert!(r.placements.is_empty());
    assert!(
        r.core.unschedulable[0]
            .message
            .contains("node(s) didn't find available persistent volumes to bind"),
        "{:?}",
        r.core.unschedulable
    );
}

#[test]
fn preemptor_on_a_freed_node_reserves_its_volumes() {
    // n0's only PV is free but n0 is full: the high-priority pod evicts the
    // low-priority one and is pipelined onto n0, taking pv0 (Reserve); the
    // best-effort pod backfilled later in the session wants a PV of the same class
    // and must not get pv0 too.
    let mut y = VOLUMES.to_string();
    y.push_str(&local_pv("pv0", "n0"));
    y.push_str(&claim("wanted"));
    y.push_str(&claim("also"));
    let low = pod("low").cpu("4").priority(1);
    let high = with_claim(pod("high").cpu("1").priority(1000), "wanted");
    let be = with_claim(pod("be"), "also");
    let (r, _) = session(&y, vec![(low, "n0")], vec![high, be]);
    assert_eq!(r.evictions.len(), 1, "{:?}", r.core.unschedulable);
    assert_eq!(r.nominated.len(), 1);
    assert_eq!(
        (r.nominated[0].pod.as_str(), r.nominated[0].node.as_str()),
        ("default/high", "n0")
    );
    assert!(r.placements.is_empty(), "{:?}", r.placements);
    let be = r
        .core
        .unschedulable
        .iter()
        .find(|u| u.pod == "default/be")
        .expect("be unschedulable");
    assert!(
        be.message
            .contains("node(s) didn't find available persistent volumes to bind"),
        "{}",
        be.message
    );
}
