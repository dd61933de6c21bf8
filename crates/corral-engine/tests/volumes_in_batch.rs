//! VolumeBinding through the engine's loop: two pods of one batch committing
//! against each other's volume assumptions (what the plugin's own unit tests in
//! corral-plugins, which knows nothing about the engine, cannot show).

use corral_core::snapshot::PodInfo;
use corral_core::testutil::volumes::*;
use corral_core::volumes::NO_PROVISIONER;
use corral_engine::config::default_frameworks;
use corral_engine::scheduler::{Options, Scheduler};
use corral_plugins::volume_binding::ERR_REASON_BIND_CONFLICT;
use serde_json::json;

const HOST: &str = "kubernetes.io/hostname";
const ZONE: &str = "topology.kubernetes.io/zone";

/// Four local PVs on two nodes, pods with one WFFC claim each: the batch cannot
/// give one PV to two pods; the fifth pod finds nothing; the decisions are
/// reported and assumed in the snapshot.
#[test]
fn one_batch_never_assigns_a_pv_twice() {
    let mut objs = vec![class(sc(
        "local",
        Some("WaitForFirstConsumer"),
        NO_PROVISIONER,
    ))];
    for (i, n) in ["n1", "n1", "n2", "n2"].iter().enumerate() {
        objs.push(
            pv(&format!("pv{i}"), "local")
                .phase("Available")
                .capacity("10Gi")
                .affinity(&[(HOST, &[n])])
                .obj(),
        );
    }
    for i in 0..5 {
        objs.push(pvc(&format!("c{i}"), "local").request("1Gi").obj());
    }
    let snap = snapshot(
        vec![
            corral_core::testutil::node("n1").cpu("8").mem("8Gi").info(),
            corral_core::testutil::node("n2").cpu("8").mem("8Gi").info(),
        ],
        objs,
    );
    let mut s = Scheduler::new(default_frameworks(), snap, Options::default());
    let pods: Vec<PodInfo> = (0..5)
        .map(|i| {
            corral_core::testutil::pod(&format!("p{i}"))
                .seq(i)
                .spec("volumes", json!([claim_vol(&format!("c{i}"))]))
                .info()
        })
        .collect();
    let r = s.schedule_all(pods);
    assert_eq!(r.placements.len(), 4, "{r:?}");
    assert_eq!(r.unschedulable.len(), 1, "{r:?}");
    assert!(
        r.unschedulable[0]
            .message
            .contains(ERR_REASON_BIND_CONFLICT),
        "{r:?}"
    );
    let vols = s.snapshot.volumes();
    let mut taken: Vec<String> = Vec::new();
    for pl in &r.placements {
        let b = vols.pod_bindings(&pl.pod).expect("assumed");
        assert_eq!(b.node, pl.node);
        assert_eq!(b.bindings.len(), 1);
        let pvname = &b.bindings[0].1;
        // The PV's node affinity admits the chosen node.
        assert!(
            vols.pv(pvname)
                .unwrap()
                .node_ok(&pl.node, &s.snapshot.node(&pl.node).unwrap().labels)
        );
        taken.push(pvname.clone());
        assert_eq!(r.volume_bindings[&pl.pod], *b);
    }
    taken.sort();
    taken.dedup();
    assert_eq!(taken.len(), 4, "every PV at most once");
    // Removing a placed pod frees its PV for others.
    s.snapshot.remove_pod(&r.placements[0].pod);
    assert_eq!(s.snapshot.volumes().assumed().pv_claims.len(), 3);
}

/// Pods whose WaitForFirstConsumer claims differ only by name share an
/// equivalence class (one Filter pass per node), yet each provisions its own claim.
#[test]
fn interchangeable_claims_share_a_class_but_provision_their_own() {
    let mut topo = sc("csi-wait", Some("WaitForFirstConsumer"), "csi.example.com");
    topo["allowedTopologies"] =
        json!([{"matchLabelExpressions": [{"key": ZONE, "values": ["z1"]}]}]);
    let mut objs = vec![class(topo)];
    for i in 0..10 {
        objs.push(pvc(&format!("c{i}"), "csi-wait").request("1Gi").obj());
    }
    objs.push(
        pvc("picked", "csi-wait")
            .request("1Gi")
            .selected_node("n1")
            .obj(),
    );
    let snap = snapshot(
        vec![
            corral_core::testutil::node("n1")
                .cpu("8")
                .mem("8Gi")
                .label(ZONE, "z1")
                .info(),
            corral_core::testutil::node("n2")
                .cpu("8")
                .mem("8Gi")
                .label(ZONE, "z1")
                .info(),
            corral_core::testutil::node("n3")
                .cpu("8")
                .mem("8Gi")
                .label(ZONE, "z2")
                .info(),
        ],
        objs,
    );
    // Same volume name (as pods of one template have), different claims.
    let mk = |i: u64, c: &str| {
        corral_core::testutil::pod(&format!("p{i}"))
            .seq(i)
            .spec(
                "volumes",
                json!([{"name": "data", "persistentVolumeClaim": {"claimName": c}}]),
            )
            .info()
    };
    let k0 = corral_core::volumes::interchangeable_class(&mk(0, "c0"), snap.volumes());
    assert!(k0.is_some());
    assert_eq!(
        k0,
        corral_core::volumes::interchangeable_class(&mk(1, "c1"), snap.volumes())
    );
    // A claim already provisioned for a node is not interchangeable.
    assert_eq!(
        corral_core::volumes::interchangeable_class(&mk(2, "picked"), snap.volumes()),
        None
    );
    let mut s = Scheduler::new(default_frameworks(), snap, Options::default());
    let r = s.schedule_all((0..10).map(|i| mk(i, &format!("c{i}"))).collect());
    assert_eq!(r.placements.len(), 10, "{r:?}");
    for pl in &r.placements {
        assert!(pl.node == "n1" || pl.node == "n2", "{pl:?}");
        let i = &pl.pod["default/p".len()..];
        assert_eq!(
            r.volume_bindings[&pl.pod].provisions,
            [format!("default/c{i}")]
        );
        assert_eq!(r.volume_bindings[&pl.pod].node, pl.node);
    }
}

/// Two pods of one batch sharing a WaitForFirstConsumer claim, in the class of pods
/// with interchangeable claims (so VolumeBinding's Filter is cached per class and
/// node, not re-run at commit): once the first provisions the shared claim on its
/// node, the second's VolumeBinding is re-checked on its candidates and it lands on
/// that node — never a Reserve failure, never another node.
#[test]
fn a_shared_claim_assumed_in_the_batch_pins_its_class_mate() {
    let mut objs = vec![
        class(sc(
            "csi-wait",
            Some("WaitForFirstConsumer"),
            "csi.example.com",
        )),
        pvc("shared", "csi-wait").request("1Gi").obj(),
    ];
    for i in 0..8 {
        objs.push(pvc(&format!("c{i}"), "csi-wait").request("1Gi").obj());
    }
    let nodes = (0..12)
        .map(|i| {
            corral_core::testutil::node(&format!("n{i}"))
                .cpu("8")
                .mem("8Gi")
                .label(ZONE, "z1")
                .info()
        })
        .collect();
    let snap = snapshot(nodes, objs);
    let mk = |i: u64, c: &str| {
        corral_core::testutil::pod(&format!("p{i}"))
            .seq(i)
            .spec(
                "volumes",
                json!([{"name": "data", "persistentVolumeClaim": {"claimName": c}}]),
            )
            .info()
    };
    let claim = |i: u64| match i {
        2 | 5 => "shared".to_string(),
        i => format!("c{i}"),
    };
    let pods: Vec<PodInfo> = (0..8).map(|i| mk(i, &claim(i))).collect();
    // All eight share one class at the start of the batch.
    let k = corral_core::volumes::interchangeable_class(&pods[0], snap.volumes());
    assert!(k.is_some());
    assert!(
        pods.iter()
            .all(|p| corral_core::volumes::interchangeable_class(p, snap.volumes()) == k)
    );
    for seed in 0..4 {
        let mut s = Scheduler::new(
            default_frameworks(),
            snap.clone(),
            Options {
                seed,
                ..Options::default()
            },
        );
        let r = s.schedule_all(pods.clone());
        assert_eq!(r.placements.len(), 8, "seed {seed}: {r:?}");
        let node_of = |p: &str| {
            r.placements
                .iter()
                .find(|pl| pl.pod == format!("default/{p}"))
                .map(|pl| pl.node.clone())
                .unwrap()
        };
        assert_eq!(node_of("p2"), node_of("p5"), "seed {seed}: {r:?}");
        assert_eq!(
            r.volume_bindings["default/p2"].provisions,
            ["default/shared"]
        );
        assert_eq!(r.volume_bindings["default/p2"].node, node_of("p2"));
    }
}
