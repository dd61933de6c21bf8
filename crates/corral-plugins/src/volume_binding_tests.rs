//! VolumeBinding tests. `kube_table` transcribes kube-scheduler's
//! `volumebinding/volume_binding_test.go` TestVolumeBinding cases as data (objects
//! in, PreFilter status and per-node Filter statuses out); `kube_scores` its Score
//! columns (capacity scoring on) and `scorer_test.go`. The other tests cover
//! provisioning (`scheduler_binder_test.go`'s checkVolumeProvisions /
//! hasEnoughCapacity semantics), Reserve, and the in-batch assume cache.

use serde_json::json;

use super::*;
use crate::framework::Code;
use crate::testutil::volumes::*;
use crate::volumes::VolumeObject;

const WAIT: &str = "wait-sc";
const WAIT_HDD: &str = "wait-hdd-sc";
const IMMEDIATE: &str = "immediate-sc";
const HOST: &str = "kubernetes.io/hostname";
const REGION: &str = "topology.kubernetes.io/region";
const ZONE: &str = "topology.kubernetes.io/zone";

/// The three classes every kube case creates (no provisioner).
fn classes() -> Vec<VolumeObject> {
    vec![
        class(sc(IMMEDIATE, Some("Immediate"), "")),
        class(sc(WAIT, Some("WaitForFirstConsumer"), "")),
        class(sc(WAIT_HDD, Some("WaitForFirstConsumer"), "")),
    ]
}

/// Expected status: None = success, else (code, reasons).
type Want = Option<(Code, Vec<&'static str>)>;

struct Case {
    name: &'static str,
    claims: Vec<&'static str>,
    nodes: Vec<NodeInfo>,
    objs: Vec<VolumeObject>,
    /// None = Success; Some(None) = Skip; Some(Some(..)) = rejected.
    pre: Option<Want>,
    filter: Vec<Want>,
}

fn check(c: Case) {
    let mut objs = classes();
    objs.extend(c.objs);
    let snap = snapshot(c.nodes, objs);
    let p = pod("pod-a", &c.claims);
    let pl = VolumeBinding::default();
    let mut st = CycleState::new();
    let (_, pre) = pl.pre_filter(&mut st, &p, &snap);
    match &c.pre {
        None => assert!(pre.is_success(), "{}: PreFilter {pre}", c.name),
        Some(None) => {
            assert!(pre.is_skip(), "{}: PreFilter {pre}", c.name);
            return;
        }
        Some(Some((code, reasons))) => {
            assert_eq!(pre.code, *code, "{}: PreFilter {pre}", c.name);
            assert_eq!(pre.reasons, *reasons, "{}", c.name);
            return;
        }
    }
    assert_eq!(c.filter.len(), snap.num_nodes(), "{}", c.name);
    for (i, want) in c.filter.iter().enumerate() {
        let n = &snap.nodes()[i];
        let got = pl.filter(&st, &p, n, &snap);
        match want {
            None => assert!(got.is_success(), "{} on {}: {got}", c.name, n.name),
            Some((code, reasons)) => {
                assert_eq!(got.code, *code, "{} on {}: {got}", c.name, n.name);
                assert_eq!(got.reasons, *reasons, "{} on {}", c.name, n.name);
            }
        }
    }
}

fn unres(r: &[&'static str]) -> Want {
    Some((Code::UnschedulableAndUnresolvable, r.to_vec()))
}

/// Nodes by name in snapshot order for the zonal cases: one node per name, so
/// the zone interleaving is applied to the expectations through a lookup.
fn zonal_nodes() -> Vec<NodeInfo> {
    ["a", "b", "c"]
        .iter()
        .flat_map(|z| {
            ["node-a", "node-b"].map(|n| {
                node(
                    &format!("zone-{z}-{n}"),
                    &[
                        (REGION, &format!("region-{z}")),
                        (ZONE, &format!("zone-{z}")),
                    ],
                )
            })
        })
        .collect()
}

#[test]
fn kube_table() {
    let cases = vec![
        Case {
            name: "pod has not pvcs",
            claims: vec![],
            nodes: vec![node("node-a", &[])],
            objs: vec![],
            pre: Some(None),
            filter: vec![None],
        },
        Case {
            name: "all bound",
            claims: vec!["pvc-a"],
            nodes: vec![node("node-a", &[])],
            objs: vec![
                pvc("pvc-a", WAIT).bound("pv-a").obj(),
                pv("pv-a", WAIT).phase("Available").obj(),
            ],
            pre: None,
            filter: vec![None],
        },
        Case {
            name: "PVC does not exist",
            claims: vec!["pvc-a"],
            nodes: vec![node("node-a", &[])],
            objs: vec![],
            pre: Some(unres(&[r#"persistentvolumeclaim "pvc-a" not found"#])),
            filter: vec![],
        },
        Case {
            name: "Part of PVCs do not exist",
            claims: vec!["pvc-a", "pvc-b"],
            nodes: vec![node("node-a", &[])],
            objs: vec![pvc("pvc-a", WAIT).bound("pv-a").obj()],
            pre: Some(unres(&[r#"persistentvolumeclaim "pvc-b" not found"#])),
            filter: vec![],
        },
        Case {
            name: "immediate claims not bound",
            claims: vec!["pvc-a"],
            nodes: vec![node("node-a", &[])],
            objs: vec![pvc("pvc-a", IMMEDIATE).obj()],
            pre: Some(unres(&[ERR_UNBOUND_IMMEDIATE])),
            filter: vec![],
        },
        Case {
            name: "unbound claims no matches",
            claims: vec!["pvc-a"],
            nodes: vec![node("node-a", &[])],
            objs: vec![pvc("pvc-a", WAIT).obj()],
            pre: None,
            filter: vec![unres(&[ERR_REASON_BIND_CONFLICT])],
        },
        Case {
            name: "bound and unbound unsatisfied",
            claims: vec!["pvc-a", "pvc-b"],
            nodes: vec![node("node-a", &[("foo", "barbar")])],
            objs: vec![
                pvc("pvc-a", WAIT).bound("pv-a").obj(),
                pvc("pvc-b", WAIT).obj(),
                pv("pv-a", WAIT)
                    .phase("Available")
                    .affinity(&[("foo", &["bar"])])
                    .obj(),
            ],
            pre: None,
            filter: vec![unres(&[ERR_REASON_NODE_CONFLICT, ERR_REASON_BIND_CONFLICT])],
        },
        Case {
            name: "pv not found",
            claims: vec!["pvc-a"],
            nodes: vec![node("node-a", &[])],
            objs: vec![pvc("pvc-a", WAIT).bound("pv-a").obj()],
            pre: None,
            filter: vec![unres(&[ERR_REASON_PV_NOT_EXIST])],
        },
        Case {
            name: "pv not found claim lost",
            claims: vec!["pvc-a"],
            nodes: vec![node("node-a", &[])],
            objs: vec![pvc("pvc-a", WAIT).bound("pv-a").phase("Lost").obj()],
            pre: Some(unres(&[
                r#"persistentvolumeclaim "pvc-a" bound to non-existent persistentvolume "pv-a""#,
            ])),
            filter: vec![],
        },
        Case {
            name: "local volumes with close capacity are preferred",
            claims: vec!["pvc-a"],
            nodes: vec![
                node("node-a", &[]),
                node("node-b", &[]),
                node("node-c", &[]),
            ],
            objs: vec![
                pvc("pvc-a", WAIT).request("50Gi").obj(),
                pv("pv-a-0", WAIT)
                    .phase("Available")
                    .capacity("200Gi")
                    .affinity(&[(HOST, &["node-a"])])
                    .obj(),
                pv("pv-a-1", WAIT)
                    .phase("Available")
                    .capacity("200Gi")
                    .affinity(&[(HOST, &["node-a"])])
                    .obj(),
                pv("pv-b-0", WAIT)
                    .phase("Available")
                    .capacity("100Gi")
                    .affinity(&[(HOST, &["node-b"])])
                    .obj(),
                pv("pv-b-1", WAIT)
                    .phase("Available")
                    .capacity("100Gi")
                    .affinity(&[(HOST, &["node-b"])])
                    .obj(),
            ],
            pre: None,
            filter: vec![None, None, unres(&[ERR_REASON_BIND_CONFLICT])],
        },
        Case {
            name: "local volumes with close capacity are preferred (multiple pvcs)",
            claims: vec!["pvc-0", "pvc-1"],
            nodes: vec![
                node("node-a", &[]),
                node("node-b", &[]),
                node("node-c", &[]),
            ],
            objs: vec![
                pvc("pvc-0", WAIT).request("50Gi").obj(),
                pvc("pvc-1", WAIT_HDD).request("100Gi").obj(),
                pv("pv-a-0", WAIT)
                    .phase("Available")
                    .capacity("200Gi")
                    .affinity(&[(HOST, &["node-a"])])
                    .obj(),
                pv("pv-a-1", WAIT)
                    .phase("Available")
                    .capacity("200Gi")
                    .affinity(&[(HOST, &["node-a"])])
                    .obj(),
                pv("pv-a-2", WAIT_HDD)
                    .phase("Available")
                    .capacity("200Gi")
                    .affinity(&[(HOST, &["node-a"])])
                    .obj(),
                pv("pv-a-3", WAIT_HDD)
                    .phase("Available")
                    .capacity("200Gi")
                    .affinity(&[(HOST, &["node-a"])])
                    .obj(),
                pv("pv-b-0", WAIT)
                    .phase("Available")
                    .capacity("100Gi")
                    .affinity(&[(HOST, &["node-b"])])
                    .obj(),
                pv("pv-b-1", WAIT)
                    .phase("Available")
                    .capacity("100Gi")
                    .affinity(&[(HOST, &["node-b"])])
                    .obj(),
                pv("pv-b-2", WAIT_HDD)
                    .phase("Available")
                    .capacity("100Gi")
                    .affinity(&[(HOST, &["node-b"])])
                    .obj(),
                pv("pv-b-3", WAIT_HDD)
                    .phase("Available")
                    .capacity("100Gi")
                    .affinity(&[(HOST, &["node-b"])])
                    .obj(),
            ],
            pre: None,
            filter: vec![None, None, unres(&[ERR_REASON_BIND_CONFLICT])],
        },
    ];
    for c in cases {
        check(c);
    }
}

/// "zonal volumes with close capacity are preferred": zone-a and zone-b nodes are
/// feasible, zone-c nodes are not (the snapshot interleaves zones, so the
/// expectation is looked up by node name).
#[test]
fn kube_zonal_volumes() {
    let zpv = |n: &str, z: &str, cap: &str| {
        pv(n, WAIT)
            .phase("Available")
            .capacity(cap)
            .affinity(&[
                (REGION, &[&format!("region-{z}")]),
                (ZONE, &[&format!("zone-{z}")]),
            ])
            .obj()
    };
    let mut objs = classes();
    objs.extend([
        pvc("pvc-a", WAIT).request("50Gi").obj(),
        zpv("pv-a-0", "a", "200Gi"),
        zpv("pv-a-1", "a", "200Gi"),
        zpv("pv-b-0", "b", "100Gi"),
        zpv("pv-b-1", "b", "100Gi"),
    ]);
    let snap = snapshot(zonal_nodes(), objs);
    let p = pod("pod-a", &["pvc-a"]);
    let pl = VolumeBinding::default();
    let mut st = CycleState::new();
    assert!(pl.pre_filter(&mut st, &p, &snap).1.is_success());
    for n in snap.nodes() {
        let got = pl.filter(&st, &p, n, &snap);
        if n.name.starts_with("zone-c") {
            assert_eq!(got.reasons, [ERR_REASON_BIND_CONFLICT], "{}", n.name);
            assert_eq!(got.code, Code::UnschedulableAndUnresolvable);
        } else {
            assert!(got.is_success(), "{}: {got}", n.name);
        }
    }
}

fn provisioning_snapshot(extra: Vec<VolumeObject>) -> Snapshot {
    let mut topo = sc("csi-wait", Some("WaitForFirstConsumer"), "csi.example.com");
    topo["allowedTopologies"] =
        json!([{"matchLabelExpressions": [{"key": ZONE, "values": ["z1", "z2"]}]}]);
    let mut objs = vec![
        class(topo),
        class(sc("local", Some("WaitForFirstConsumer"), NO_PROVISIONER)),
        pvc("data", "csi-wait").request("10Gi").obj(),
        pvc("local-claim", "local").request("1Gi").obj(),
    ];
    objs.extend(extra);
    snapshot(
        vec![
            node("n1", &[(ZONE, "z1")]),
            node("n2", &[(ZONE, "z2")]),
            node("n3", &[(ZONE, "z3")]),
        ],
        objs,
    )
}

fn filter_by_node(snap: &Snapshot, claims: &[&str]) -> Vec<(String, Status)> {
    let p = pod("p", claims);
    let pl = VolumeBinding::default();
    let mut st = CycleState::new();
    let (_, pre) = pl.pre_filter(&mut st, &p, snap);
    assert!(pre.is_success(), "{pre}");
    let mut out: Vec<(String, Status)> = snap
        .nodes()
        .iter()
        .map(|n| (n.name.to_string(), pl.filter(&st, &p, n, snap)))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn provisioning_honours_allowed_topologies_and_storage_capacity() {
    // No CSIDriver opting into capacity tracking: topology alone decides.
    let r = filter_by_node(&provisioning_snapshot(vec![]), &["data"]);
    assert!(r[0].1.is_success() && r[1].1.is_success(), "{r:?}");
    assert_eq!(r[2].1.reasons, [ERR_REASON_BIND_CONFLICT], "{r:?}");
    // storageCapacity: only n1's topology has a capacity object large enough.
    let r = filter_by_node(
        &provisioning_snapshot(vec![
            csi_driver("csi.example.com", true),
            capacity("c1", "csi-wait", Some((ZONE, "z1")), "100Gi"),
            capacity("c2", "csi-wait", Some((ZONE, "z2")), "5Gi"),
            capacity("c3", "other", Some((ZONE, "z2")), "100Gi"),
        ]),
        &["data"],
    );
    assert!(r[0].1.is_success(), "{r:?}");
    assert_eq!(r[1].1.reasons, [ERR_REASON_NOT_ENOUGH_SPACE], "{r:?}");
    assert_eq!(r[2].1.reasons, [ERR_REASON_BIND_CONFLICT], "{r:?}");
    // A capacity object without nodeTopology gives no node access.
    let r = filter_by_node(
        &provisioning_snapshot(vec![
            csi_driver("csi.example.com", true),
            capacity("c1", "csi-wait", None, "100Gi"),
        ]),
        &["data"],
    );
    assert_eq!(r[0].1.reasons, [ERR_REASON_NOT_ENOUGH_SPACE], "{r:?}");
    // maximumVolumeSize wins over capacity.
    let mut c = serde_json::json!({"metadata": {"name": "m", "namespace": "kube-system"},
        "storageClassName": "csi-wait", "capacity": "1Ti", "maximumVolumeSize": "1Gi",
        "nodeTopology": {"matchLabels": {ZONE: "z1"}}});
    let r = filter_by_node(
        &provisioning_snapshot(vec![
            csi_driver("csi.example.com", true),
            decode("CSIStorageCapacity", c.take()),
        ]),
        &["data"],
    );
    assert_eq!(r[0].1.reasons, [ERR_REASON_NOT_ENOUGH_SPACE], "{r:?}");
}

#[test]
fn no_provisioner_and_selected_node() {
    // kubernetes.io/no-provisioner without a matching PV: bind conflict everywhere.
    let r = filter_by_node(&provisioning_snapshot(vec![]), &["local-claim"]);
    assert!(
        r.iter()
            .all(|(_, s)| s.reasons == [ERR_REASON_BIND_CONFLICT]),
        "{r:?}"
    );
    // A claim already provisioned for n2 only fits n2.
    let r = filter_by_node(
        &provisioning_snapshot(vec![
            pvc("data", "csi-wait")
                .request("10Gi")
                .selected_node("n2")
                .obj(),
        ]),
        &["data"],
    );
    assert_eq!(r[0].1.reasons, [ERR_REASON_BIND_CONFLICT], "{r:?}");
    assert!(r[1].1.is_success(), "{r:?}");
}

#[test]
fn matching_checks_modes_selector_and_volume_mode() {
    let base = |pvo: VolumeObject, claim: VolumeObject| {
        let s = snapshot(
            vec![node("n1", &[])],
            vec![
                class(sc("local", Some("WaitForFirstConsumer"), NO_PROVISIONER)),
                pvo,
                claim,
            ],
        );
        filter_by_node(&s, &["c"])[0].1.clone()
    };
    let claim = || pvc("c", "local").request("1Gi").modes(&["ReadWriteOnce"]);
    let volume = || {
        pv("v", "local")
            .phase("Available")
            .capacity("1Gi")
            .modes(&["ReadWriteOnce"])
    };
    assert!(base(volume().obj(), claim().obj()).is_success());
    // Too small.
    assert!(!base(volume().capacity("500Mi").obj(), claim().obj()).is_success());
    // Access mode missing on the PV.
    assert!(!base(volume().obj(), claim().modes(&["ReadWriteMany"]).obj()).is_success());
    // Volume mode mismatch.
    assert!(
        !base(
            volume().spec("volumeMode", json!("Block")).obj(),
            claim().obj()
        )
        .is_success()
    );
    // Selector.
    let sel = claim().spec("selector", json!({"matchLabels": {"tier": "fast"}}));
    assert!(!base(volume().obj(), sel.obj()).is_success());
    let sel = claim().spec("selector", json!({"matchLabels": {"tier": "fast"}}));
    assert!(base(volume().label("tier", "fast").obj(), sel.obj()).is_success());
    // Bound to another claim / released.
    assert!(!base(volume().claim("default", "other").obj(), claim().obj()).is_success());
    assert!(!base(volume().phase("Released").obj(), claim().obj()).is_success());
    // Pre-bound to this claim.
    assert!(
        base(
            volume().claim("default", "c").phase("Bound").obj(),
            claim().obj()
        )
        .is_success()
    );
}

#[test]
fn missing_or_modeless_storage_class() {
    // A claim naming a missing StorageClass is not delayed: kube's reason.
    let s = snapshot(vec![node("n1", &[])], vec![pvc("c", "nope").obj()]);
    let (_, st) =
        VolumeBinding::default().pre_filter(&mut CycleState::new(), &pod("p", &["c"]), &s);
    assert_eq!(st.code, Code::UnschedulableAndUnresolvable);
    assert_eq!(st.reasons, [ERR_UNBOUND_IMMEDIATE]);
    // A class without a binding mode (not defaulted) is an error, not a panic.
    let s = snapshot(
        vec![node("n1", &[])],
        vec![class(sc("m", None, "p")), pvc("c", "m").obj()],
    );
    let (_, st) =
        VolumeBinding::default().pre_filter(&mut CycleState::new(), &pod("p", &["c"]), &s);
    assert_eq!(st.code, Code::Error);
    assert_eq!(
        st.reasons,
        [r#"VolumeBindingMode not set for StorageClass "m""#]
    );
}

#[test]
fn bound_local_pv_restricts_nodes_in_prefilter() {
    let s = snapshot(
        vec![node("n1", &[]), node("n2", &[])],
        vec![
            class(sc("local", Some("WaitForFirstConsumer"), NO_PROVISIONER)),
            pvc("c", "local").bound("v").obj(),
            pv("v", "local").affinity(&[(HOST, &["n2"])]).obj(),
        ],
    );
    let (res, st) =
        VolumeBinding::default().pre_filter(&mut CycleState::new(), &pod("p", &["c"]), &s);
    assert!(st.is_success());
    assert_eq!(
        res.and_then(|r| r.node_names),
        Some(["n2".to_string()].into())
    );
}

#[test]
fn args_are_honoured_or_rejected() {
    assert!(factory(Some(&json!({"bindTimeoutSeconds": 30}))).is_ok());
    let e = factory(Some(&json!({"shape": []}))).err().unwrap();
    assert!(e.contains("shape: Required value"), "{e}");
    let e = factory(Some(&json!({"shape": [{"utilization": 0, "score": 11}]})))
        .err()
        .unwrap();
    assert!(e.starts_with("shape[0].score: Invalid value"), "{e}");
    let e = factory(Some(&json!({"shape": [
        {"utilization": 50, "score": 1}, {"utilization": 40, "score": 2}]})))
    .err()
    .unwrap();
    assert!(e.starts_with("shape[1].utilization"), "{e}");
    assert!(factory(Some(&json!({"shape": {"utilization": 0}}))).is_err());
    let e = factory(Some(&json!({"bindTimeoutSeconds": -1})))
        .err()
        .unwrap();
    assert!(e.contains("bindTimeoutSeconds"), "{e}");
    assert!(factory(Some(&json!({"bogus": 1}))).is_err());
}

/// The memoised Filter answers of a class-shared PreFilter state (claims all
/// interchangeable) equal the live ones, and stop applying to a pod once its own
/// claim is assumed elsewhere.
#[test]
fn memo_shared_by_interchangeable_claims() {
    let snap0 = provisioning_snapshot(vec![
        pvc("data2", "csi-wait").request("10Gi").obj(),
        csi_driver("csi.example.com", true),
        capacity("c1", "csi-wait", Some((ZONE, "z1")), "100Gi"),
        capacity("c2", "csi-wait", Some((ZONE, "z2")), "5Gi"),
    ]);
    let pl = VolumeBinding::default();
    let p1 = pod("p1", &["data"]);
    let p2 = pod("p2", &["data2"]);
    // p3 shares p1's claim.
    let p3 = pod("p3", &["data"]);
    let mut st = CycleState::new();
    assert!(pl.pre_filter(&mut st, &p1, &snap0).1.is_success());
    assert!(st.read::<PodClaims>(STATE_KEY).unwrap().memo.is_some());
    let live = |p: &PodInfo, snap: &Snapshot| -> Vec<Vec<String>> {
        let mut own = CycleState::new();
        assert!(pl.pre_filter(&mut own, p, snap).1.is_success());
        let c = own.read_mut::<PodClaims>(STATE_KEY).unwrap();
        c.memo = None;
        snap.nodes()
            .iter()
            .map(|n| {
                let s = pl.filter(&own, p, n, snap);
                s.reasons.iter().map(|r| r.to_string()).collect()
            })
            .collect()
    };
    let shared = |p: &PodInfo, snap: &Snapshot| -> Vec<Vec<String>> {
        snap.nodes()
            .iter()
            .map(|n| {
                let s = pl.filter(&st, p, n, snap);
                s.reasons.iter().map(|r| r.to_string()).collect()
            })
            .collect()
    };
    for p in [&p1, &p2, &p3] {
        assert_eq!(shared(p, &snap0), live(p, &snap0), "{}", p.key);
    }
    let by_name =
        |snap: &Snapshot, r: Vec<Vec<String>>, n: &str| r[snap.node_index(n).unwrap()].clone();
    assert!(by_name(&snap0, shared(&p2, &snap0), "n1").is_empty());
    assert_eq!(
        by_name(&snap0, shared(&p2, &snap0), "n2"),
        [ERR_REASON_NOT_ENOUGH_SPACE]
    );
    // p1 (and so its claim "data") is placed on n1: "data" is now assumed
    // provisioned there, so p1's and p3's state no longer fits n2/n3 ... and the
    // memo must not say otherwise; p2's claim is untouched.
    let mut snap = snap0.clone();
    snap.assume_volumes(
        &p1.key,
        crate::volumes::PodVolumeBindings {
            node: "n1".into(),
            bindings: vec![],
            provisions: vec!["default/data".into()],
        },
    );
    for p in [&p1, &p2, &p3] {
        assert_eq!(shared(p, &snap), live(p, &snap), "{} after assume", p.key);
    }
    assert!(by_name(&snap, shared(&p2, &snap), "n1").is_empty());
    // A memo first used after the state's own pod was placed (its claim assumed
    // on n1) still answers for an unassumed class-mate as for any node of zone
    // z1: the memo is of the claims' shapes.
    let fresh = VolumeBinding::default();
    let mut st2 = CycleState::new();
    assert!(fresh.pre_filter(&mut st2, &p1, &snap0).1.is_success());
    let n1 = snap.node("n1").unwrap();
    let n2 = snap.node("n2").unwrap();
    assert!(fresh.filter(&st2, &p2, n1, &snap).is_success());
    assert_eq!(
        fresh.filter(&st2, &p2, n2, &snap).reasons,
        [ERR_REASON_NOT_ENOUGH_SPACE]
    );
    // ... while p1 itself (and p3, sharing its claim) fit only n1.
    assert_eq!(
        fresh.filter(&st2, &p3, n2, &snap).reasons,
        [ERR_REASON_BIND_CONFLICT]
    );
    assert!(fresh.filter(&st2, &p1, n1, &snap).is_success());
    // A claim assumed elsewhere is a bind conflict on every other node, as live.
    let mut other = snap0.clone();
    other.assume_volumes(
        &p1.key,
        crate::volumes::PodVolumeBindings {
            node: "n2".into(),
            bindings: vec![],
            provisions: vec!["default/data".into()],
        },
    );
    assert_eq!(
        by_name(&other, shared(&p3, &other), "n1"),
        [ERR_REASON_BIND_CONFLICT]
    );
    assert_eq!(
        by_name(&other, shared(&p1, &other), "n1"),
        [ERR_REASON_BIND_CONFLICT]
    );
}

/// `add_pod` (run before the commit-time re-run of the Filter) turns a
/// class-shared state into the pod's own claims with the memo kept: Filter and
/// Reserve then answer as for the pod's own PreFilter state, before and after the
/// pod's own claim is assumed elsewhere.
#[test]
fn add_pod_takes_own_claims_and_keeps_the_memo() {
    let snap0 = provisioning_snapshot(vec![
        pvc("data2", "csi-wait").request("10Gi").obj(),
        csi_driver("csi.example.com", true),
        capacity("c1", "csi-wait", Some((ZONE, "z1")), "100Gi"),
        capacity("c2", "csi-wait", Some((ZONE, "z2")), "5Gi"),
    ]);
    let pl = VolumeBinding::default();
    let p1 = pod("p1", &["data"]);
    let p2 = pod("p2", &["data2"]);
    let p3 = pod("p3", &["data"]);
    let live = |p: &PodInfo, snap: &Snapshot| -> Vec<Vec<String>> {
        let mut own = CycleState::new();
        assert!(pl.pre_filter(&mut own, p, snap).1.is_success());
        own.read_mut::<PodClaims>(STATE_KEY).unwrap().memo = None;
        snap.nodes()
            .iter()
            .map(|n| {
                pl.filter(&own, p, n, snap)
                    .reasons
                    .iter()
                    .map(|r| r.to_string())
                    .collect()
            })
            .collect()
    };
    // The committed pod passed to add_pod is not read.
    let other = pod("other", &[]);
    for (snap, label) in [(snap0.clone(), "unassumed"), {
        let mut s = snap0.clone();
        s.assume_volumes(
            "default/placed",
            crate::volumes::PodVolumeBindings {
                node: "n2".into(),
                bindings: vec![],
                provisions: vec!["default/data".into()],
            },
        );
        (s, "p1's claim assumed on n2")
    }] {
        for p in [&p1, &p2, &p3] {
            let mut st = CycleState::new();
            assert!(pl.pre_filter(&mut st, &p1, &snap0).1.is_success());
            let n1 = snap.node("n1").unwrap();
            assert!(pl.add_pod(&mut st, p, &other, n1, &snap).is_success());
            let c = st.read::<PodClaims>(STATE_KEY).unwrap();
            assert_eq!(c.pod, p.key, "{label}");
            assert!(c.memo.is_some(), "{label}");
            let got: Vec<Vec<String>> = snap
                .nodes()
                .iter()
                .map(|n| {
                    pl.filter(&st, p, n, &snap)
                        .reasons
                        .iter()
                        .map(|r| r.to_string())
                        .collect()
                })
                .collect();
            assert_eq!(got, live(p, &snap), "{label}: {}", p.key);
            // Reserve on n1 agrees with the Filter there.
            let r = pl.reserve(&mut st, p, "n1", &snap);
            assert_eq!(
                r.is_success(),
                pl.filter(&st, p, n1, &snap).is_success(),
                "{label}: {}",
                p.key
            );
        }
    }
}

/// kube's `defaultShapePoint` (utilization 0 → 0, 100 → MaxCustomPriorityScore),
/// scaled to node scores.
const KUBE_TEST_SHAPE: [(i64, i64); 2] = [(0, 0), (100, 100)];

fn scoring_plugin() -> VolumeBinding {
    let pl = factory(Some(&json!({"shape": [
        {"utilization": 0, "score": 0}, {"utilization": 100, "score": 10}]})))
    .unwrap();
    assert!(pl.clone().as_score().is_some() && pl.as_pre_score().is_some());
    VolumeBinding {
        shape: Some(KUBE_TEST_SHAPE.to_vec()),
        ..VolumeBinding::default()
    }
}

/// PreScore status and per-node scores (0 on infeasible nodes, as kube).
fn scores(snap: &Snapshot, claims: &[&str], pl: &VolumeBinding) -> (bool, Vec<i64>) {
    let p = pod("pod-a", claims);
    let mut st = CycleState::new();
    assert!(pl.pre_filter(&mut st, &p, snap).1.is_success());
    let refs: Vec<&NodeInfo> = snap.nodes().iter().map(|n| &**n).collect();
    let pre = pl.pre_score(&mut st, &p, snap, &refs);
    let s = snap
        .nodes()
        .iter()
        .map(|n| pl.score(&st, &p, n, snap).unwrap())
        .collect();
    (pre.is_skip(), s)
}

/// kube's TestVolumeBinding `wantScores` (with the capacity scoring gate on) and
/// TestScore (`scorer_test.go`, `buildScorerFunction`) as data.
#[test]
fn kube_scores() {
    // scorer_test.go: (shape points, [(requested, capacity) per class], score).
    let default_shape = [(0, 0), (100, 10)];
    let custom = [(50, 0), (80, 3), (100, 5)];
    // (shape points, [([(requested, capacity) per class], score)]).
    type Cases = Vec<(Vec<(i64, i64)>, i64)>;
    let table: Vec<(&[(i64, i64)], Cases)> = vec![
        (
            &default_shape,
            vec![
                (vec![(0, 100)], 0),
                (vec![(30, 100)], 30),
                (vec![(50, 100)], 50),
                (vec![(100, 100)], 100),
            ],
        ),
        (
            &default_shape,
            vec![
                (vec![(0, 100), (0, 100)], 0),
                (vec![(0, 100), (30, 100)], 15),
                (vec![(30, 100), (30, 100)], 30),
                (vec![(30, 100), (60, 100)], 45),
                (vec![(50, 100), (50, 100)], 50),
                (vec![(50, 100), (100, 100)], 75),
                (vec![(100, 100), (100, 100)], 100),
            ],
        ),
        (
            &custom,
            vec![
                (vec![(0, 100), (0, 100)], 0),
                (vec![(0, 100), (30, 100)], 0),
                (vec![(30, 100), (30, 100)], 0),
                (vec![(30, 100), (60, 100)], 5),
                (vec![(50, 100), (100, 100)], 25),
                (vec![(90, 100), (90, 100)], 40),
                (vec![(100, 100), (100, 100)], 50),
            ],
        ),
    ];
    for (points, cases) in table {
        let json_points: Vec<serde_json::Value> = points
            .iter()
            .map(|(u, s)| json!({"utilization": u, "score": s}))
            .collect();
        let shape = crate::node_resources_fit::validate_shape("shape", Some(json_points)).unwrap();
        for (classes, want) in cases {
            assert_eq!(
                capacity_score(&shape, &classes),
                want,
                "{points:?} {classes:?}"
            );
        }
    }

    // volume_binding_test.go: "local volumes with close capacity are preferred".
    let local = |n: &str, class: &str, cap: &str, node: &str| {
        pv(n, class)
            .phase("Available")
            .capacity(cap)
            .affinity(&[(HOST, &[node])])
            .obj()
    };
    let nodes = || {
        vec![
            node("node-a", &[]),
            node("node-b", &[]),
            node("node-c", &[]),
        ]
    };
    let pl = scoring_plugin();
    let mut objs = classes();
    objs.extend([
        pvc("pvc-a", WAIT).request("50Gi").obj(),
        local("pv-a-0", WAIT, "200Gi", "node-a"),
        local("pv-a-1", WAIT, "200Gi", "node-a"),
        local("pv-b-0", WAIT, "100Gi", "node-b"),
        local("pv-b-1", WAIT, "100Gi", "node-b"),
    ]);
    let snap = snapshot(nodes(), objs);
    assert_eq!(scores(&snap, &["pvc-a"], &pl), (false, vec![25, 50, 0]));
    // Without a shape (kube: the gate off) PreScore skips.
    assert!(scores(&snap, &["pvc-a"], &VolumeBinding::default()).0);

    // "... (multiple pvcs)".
    let mut objs = classes();
    objs.extend([
        pvc("pvc-0", WAIT).request("50Gi").obj(),
        pvc("pvc-1", WAIT_HDD).request("100Gi").obj(),
        local("pv-a-0", WAIT, "200Gi", "node-a"),
        local("pv-a-1", WAIT, "200Gi", "node-a"),
        local("pv-a-2", WAIT_HDD, "200Gi", "node-a"),
        local("pv-a-3", WAIT_HDD, "200Gi", "node-a"),
        local("pv-b-0", WAIT, "100Gi", "node-b"),
        local("pv-b-1", WAIT, "100Gi", "node-b"),
        local("pv-b-2", WAIT_HDD, "100Gi", "node-b"),
        local("pv-b-3", WAIT_HDD, "100Gi", "node-b"),
    ]);
    let snap = snapshot(nodes(), objs);
    assert_eq!(
        scores(&snap, &["pvc-0", "pvc-1"], &pl),
        (false, vec![38, 75, 0])
    );

    // "zonal volumes with close capacity are preferred".
    let zpv = |n: &str, z: &str, cap: &str| {
        pv(n, WAIT)
            .phase("Available")
            .capacity(cap)
            .affinity(&[
                (REGION, &[&format!("region-{z}")]),
                (ZONE, &[&format!("zone-{z}")]),
            ])
            .obj()
    };
    let mut objs = classes();
    objs.extend([
        pvc("pvc-a", WAIT).request("50Gi").obj(),
        zpv("pv-a-0", "a", "200Gi"),
        zpv("pv-a-1", "a", "200Gi"),
        zpv("pv-b-0", "b", "100Gi"),
        zpv("pv-b-1", "b", "100Gi"),
    ]);
    let snap = snapshot(zonal_nodes(), objs);
    let (_, got) = scores(&snap, &["pvc-a"], &pl);
    for (n, s) in snap.nodes().iter().zip(got) {
        let want = match &n.name[..6] {
            "zone-a" => 25,
            "zone-b" => 50,
            _ => 0,
        };
        assert_eq!(s, want, "{}", n.name);
    }

    // Dynamic provisioning (StorageCapacityScoring): the request against the
    // node's CSIStorageCapacity `capacity`.
    let snap = provisioning_snapshot(vec![
        csi_driver("csi.example.com", true),
        capacity("c1", "csi-wait", Some((ZONE, "z1")), "100Gi"),
        capacity("c2", "csi-wait", Some((ZONE, "z2")), "40Gi"),
    ]);
    let p = pod("p", &["data"]);
    let mut st = CycleState::new();
    assert!(pl.pre_filter(&mut st, &p, &snap).1.is_success());
    let by = |n: &str| pl.score(&st, &p, snap.node(n).unwrap(), &snap).unwrap();
    // 10Gi of 100Gi → 10; of 40Gi → 25; n3 infeasible → 0.
    assert_eq!((by("n1"), by("n2"), by("n3")), (10, 25, 0));
}
