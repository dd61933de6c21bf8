//! kube-scheduler's `nodevolumelimits/csi_test.go` TestCSILimits cases as data;
//! `volume_attachments_count` covers its VolumeAttachment counting
//! (`getNodeVolumeAttachmentInfo`).

use serde_json::{Value, json};

use super::*;
use crate::framework::Code;
use crate::testutil::volumes::*;
use crate::volumes::VolumeObject;

const EBS: &str = "ebs.csi.aws.com";
const GCE: &str = "pd.csi.storage.gke.io";
const AWS_INTREE: &str = "kubernetes.io/aws-ebs";

/// PVs, claims and classes shared by the cases (kube's fake listers).
fn objects() -> Vec<VolumeObject> {
    let mut o = vec![
        class(sc("csi-sc", Some("Immediate"), EBS)),
        class(sc("intree-sc", Some("Immediate"), AWS_INTREE)),
    ];
    // Bound CSI claims csi-ebs-0..3, csi-gce-0..1.
    for (prefix, driver, n) in [("csi-ebs", EBS, 4), ("csi-gce", GCE, 2)] {
        for i in 0..n {
            let name = format!("{prefix}-{i}");
            o.push(pvc(&name, "csi-sc").bound(&name).obj());
            o.push(
                pv(&name, "csi-sc")
                    .spec(
                        "csi",
                        json!({"driver": driver, "volumeHandle": format!("{driver}-vol{i}")}),
                    )
                    .obj(),
            );
        }
    }
    // In-tree EBS claims.
    for i in 0..3 {
        let name = format!("intree-{i}");
        o.push(pvc(&name, "intree-sc").bound(&name).obj());
        o.push(
            pv(&name, "intree-sc")
                .spec(
                    "awsElasticBlockStore",
                    json!({"volumeID": format!("aws-vol{i}")}),
                )
                .obj(),
        );
    }
    o.push(pvc("hostpath-0", "").bound("hostpath-0").obj());
    o.push(
        pv("hostpath-0", "")
            .spec("hostPath", json!({"path": "/tmp"}))
            .obj(),
    );
    // Unbound (pending) claims, a claim on a missing PV, a claim of a missing class.
    o.push(pvc("pending-csi", "csi-sc").obj());
    o.push(pvc("pending-intree", "intree-sc").obj());
    o.push(pvc("missing-pv", "csi-sc").bound("gone").obj());
    o.push(pvc("no-sc", "nonexistent").obj());
    // Generic ephemeral claims owned by pod "abc" (volumes x, y, xyz).
    for v in ["x", "y", "xyz"] {
        o.push(pvc(&format!("abc-{v}"), "csi-sc").obj());
    }
    o
}

fn pod_of(name: &str, claims: &[&str]) -> PodInfo {
    pod(name, claims)
}

fn inline_ebs(name: &str, id: &str) -> PodInfo {
    pod_with(
        name,
        vec![json!({"name": "ebs", "awsElasticBlockStore": {"volumeID": id}})],
    )
}

fn ephemeral(name: &str, vols: &[&str]) -> PodInfo {
    pod_with(
        name,
        vols.iter()
            .map(|v| json!({"name": v, "ephemeral": {"volumeClaimTemplate": {"spec": {}}}}))
            .collect::<Vec<Value>>(),
    )
}

/// `limitSource`: "csinode" (count per driver), "csinode-with-no-limit", or none.
#[allow(clippy::too_many_arguments)]
fn run(
    test: &str,
    new_pod: PodInfo,
    existing: Vec<PodInfo>,
    max: Option<i32>,
    drivers: &[&str],
    limit: Option<bool>,
    migration: bool,
    want: Option<(Code, &str)>,
) {
    let mut objs = objects();
    if let Some(with_limit) = limit {
        let d: Vec<(&str, Option<i32>)> = drivers
            .iter()
            .map(|d| (*d, if with_limit { max } else { None }))
            .collect();
        objs.push(csi_node(
            "node-for-max-pd-test-1",
            &d,
            if migration { &[AWS_INTREE] } else { &[] },
        ));
    }
    let mut snap = snapshot(vec![node("node-for-max-pd-test-1", &[])], objs);
    for p in existing {
        snap.add_pod(std::sync::Arc::new(p), "node-for-max-pd-test-1");
    }
    let n = snap.nodes()[0].clone();
    let mut st = CycleState::new();
    let (_, pre) = NodeVolumeLimits.pre_filter(&mut st, &new_pod, &snap);
    assert!(pre.is_success(), "{test}: PreFilter {pre}");
    let got = NodeVolumeLimits.filter(&st, &new_pod, &n, &snap);
    match want {
        None => assert!(got.is_success(), "{test}: {got}"),
        Some((code, reason)) => {
            assert_eq!(got.code, code, "{test}: {got}");
            assert_eq!(got.reasons, [reason], "{test}");
        }
    }
}

const EXCEEDED: Option<(Code, &str)> =
    Some((Code::Unschedulable, ERR_REASON_MAX_VOLUME_COUNT_EXCEEDED));

#[test]
fn kube_csi_limits() {
    let one = || pod_of("csiEBSOneVolPod", &["csi-ebs-0"]);
    let two = || pod_of("csiEBSTwoVolPod", &["csi-ebs-1", "csi-ebs-2"]);
    let running = || pod_of("runningPod", &["csi-ebs-3"]);
    let pending = || pod_of("pendingVolumePod", &["pending-csi"]);
    let intree_one = || pod_of("inTreeOneVolPod", &["intree-0"]);
    let intree_two = || pod_of("inTreeTwoVolPod", &["intree-1", "intree-2"]);
    let gce_two = || pod_of("gceTwoVolPod", &["csi-gce-0", "csi-gce-1"]);
    let l = Some(true);
    run(
        "fits when node volume limit >= new pods CSI volume",
        one(),
        vec![running(), two()],
        Some(4),
        &[EBS],
        l,
        false,
        None,
    );
    run(
        "doesn't when node volume limit <= pods CSI volume",
        one(),
        vec![running(), two()],
        Some(2),
        &[EBS],
        l,
        false,
        EXCEEDED,
    );
    run(
        "should when driver does not support volume limits",
        one(),
        vec![running(), two()],
        Some(2),
        &[EBS],
        Some(false),
        false,
        None,
    );
    run(
        "count pending PVCs towards volume limit <= pods CSI volume",
        one(),
        vec![pending(), two()],
        Some(2),
        &[EBS],
        l,
        false,
        EXCEEDED,
    );
    run(
        "count multiple pending pvcs towards volume limit >= pods CSI volume",
        one(),
        vec![pending(), pod_of("unboundPVCPod2", &["pending-csi"]), two()],
        Some(4),
        &[EBS],
        l,
        false,
        None,
    );
    run(
        "should count PVCs with invalid PV name but valid SC",
        one(),
        vec![pod_of("missingPVPod", &["missing-pv"]), two()],
        Some(2),
        &[EBS],
        l,
        false,
        EXCEEDED,
    );
    run(
        "don't count pvcs with missing SC towards volume limit",
        one(),
        vec![running(), pod_of("noSCPVCPod", &["no-sc"])],
        Some(2),
        &[EBS],
        l,
        false,
        None,
    );
    run(
        "count pvcs with the same type towards volume limit",
        one(),
        vec![gce_two(), two()],
        Some(2),
        &[EBS, GCE],
        l,
        false,
        EXCEEDED,
    );
    run(
        "don't count pvcs with different type towards volume limit",
        gce_two(),
        vec![two(), running()],
        Some(2),
        &[EBS, GCE],
        l,
        false,
        None,
    );
    // In-tree volume migration.
    run(
        "should count in-tree volumes if migration is enabled",
        intree_one(),
        vec![intree_two()],
        Some(2),
        &[AWS_INTREE, EBS],
        l,
        true,
        EXCEEDED,
    );
    run(
        "nil csi node",
        inline_ebs("inTreeInlineVolPod", "aws-inline1"),
        vec![intree_two()],
        None,
        &[AWS_INTREE, EBS],
        None,
        true,
        None,
    );
    run(
        "should count unbound in-tree volumes if migration is enabled",
        pod_of("pendingInTree", &["pending-intree"]),
        vec![intree_two()],
        Some(2),
        &[AWS_INTREE, EBS],
        l,
        true,
        EXCEEDED,
    );
    run(
        "should not limit pod if volume used does not report limits",
        intree_one(),
        vec![intree_two()],
        Some(2),
        &[AWS_INTREE, EBS],
        Some(false),
        true,
        None,
    );
    run(
        "should not count non-migratable in-tree volumes",
        pod_of("hostpath", &["hostpath-0"]),
        vec![two()],
        Some(2),
        &[AWS_INTREE, EBS],
        l,
        true,
        None,
    );
    run(
        "should count in-tree inline volumes if migration is enabled",
        inline_ebs("inTreeInlineVolPod", "aws-inline1"),
        vec![intree_two()],
        Some(2),
        &[AWS_INTREE, EBS],
        l,
        true,
        EXCEEDED,
    );
    run(
        "should count in-tree and csi volumes if migration is enabled (when scheduling in-tree volumes)",
        intree_one(),
        vec![two()],
        Some(2),
        &[AWS_INTREE, EBS],
        l,
        true,
        EXCEEDED,
    );
    run(
        "should count in-tree, inline and csi volumes if migration is enabled (when scheduling in-tree volumes)",
        inline_ebs("inTreeInlineVolPod", "aws-inline1"),
        vec![two(), intree_one()],
        Some(3),
        &[AWS_INTREE, EBS],
        l,
        true,
        EXCEEDED,
    );
    run(
        "should not count in-tree, inline and csi volumes if migration is enabled (same volume)",
        inline_ebs("inTreeInlineVolPodWithSameID", "aws-vol0"),
        vec![two(), intree_one()],
        Some(3),
        &[AWS_INTREE, EBS],
        l,
        true,
        None,
    );
    run(
        "should count in-tree and csi volumes if migration is enabled (when scheduling csi volumes)",
        one(),
        vec![intree_two()],
        Some(2),
        &[AWS_INTREE, EBS],
        l,
        true,
        EXCEEDED,
    );
    // Without migration on the node the in-tree volumes are not counted.
    run(
        "in-tree volumes not counted without migration",
        intree_one(),
        vec![intree_two()],
        Some(2),
        &[AWS_INTREE, EBS],
        l,
        false,
        None,
    );
    // Generic ephemeral volumes.
    run(
        "ephemeral volume missing",
        ephemeral("abcd", &["xyz"]),
        vec![],
        None,
        &[EBS],
        Some(false),
        false,
        Some((
            Code::UnschedulableAndUnresolvable,
            r#"looking up PVC default/abcd-xyz: persistentvolumeclaim "abcd-xyz" not found"#,
        )),
    );
    run(
        "ephemeral volume unbound",
        ephemeral("abc", &["xyz"]),
        vec![],
        None,
        &[EBS],
        Some(false),
        false,
        None,
    );
    run(
        "ephemeral doesn't when node volume limit <= pods CSI volume",
        ephemeral("abc", &["xyz"]),
        vec![running(), two()],
        Some(2),
        &[EBS],
        l,
        false,
        EXCEEDED,
    );
    run(
        "ephemeral doesn't when node volume limit <= pods ephemeral CSI volume",
        one(),
        vec![running(), ephemeral("abc", &["x", "y"])],
        Some(2),
        &[EBS],
        l,
        false,
        EXCEEDED,
    );
}

#[test]
fn pods_without_attachable_volumes_skip() {
    let p = pod_with(
        "cm",
        vec![
            json!({"name": "c", "configMap": {"name": "x"}}),
            json!({"name": "s", "secret": {"secretName": "y"}}),
        ],
    );
    let (_, st) = NodeVolumeLimits.pre_filter(&mut CycleState::new(), &p, &Snapshot::new());
    assert!(st.is_skip());
}

fn attachment(name: &str, node: &str, attacher: &str, pv: Option<&str>) -> VolumeObject {
    let mut source = json!({});
    if let Some(pv) = pv {
        source["persistentVolumeName"] = json!(pv);
    }
    decode(
        "VolumeAttachment",
        json!({"metadata": {"name": name},
            "spec": {"nodeName": node, "attacher": attacher, "source": source}}),
    )
}

/// Filter of `new` on the test node (EBS limit `max`) running `existing`, with
/// the given VolumeAttachments.
fn with_attachments(
    new: &PodInfo,
    existing: Vec<PodInfo>,
    max: i32,
    vas: Vec<VolumeObject>,
) -> Status {
    const N: &str = "node-for-max-pd-test-1";
    let mut objs = objects();
    objs.push(csi_node(N, &[(EBS, Some(max))], &[]));
    objs.extend(vas);
    let mut snap = snapshot(vec![node(N, &[]), node("other", &[])], objs);
    for p in existing {
        snap.add_pod(std::sync::Arc::new(p), N);
    }
    let n = snap.node(N).unwrap().clone();
    let mut st = CycleState::new();
    assert!(
        NodeVolumeLimits
            .pre_filter(&mut st, new, &snap)
            .1
            .is_success()
    );
    NodeVolumeLimits.filter(&st, new, &n, &snap)
}

#[test]
fn volume_attachments_count() {
    const N: &str = "node-for-max-pd-test-1";
    let one = || pod_of("csiEBSOneVolPod", &["csi-ebs-0"]);
    let running = || pod_of("runningPod", &["csi-ebs-3"]);
    // Two CSI volumes attached to the node (no pod of them placed): a third
    // exceeds a limit of 2.
    let vas = || {
        vec![
            attachment("va-0", N, EBS, Some("csi-ebs-3")),
            attachment("va-1", N, EBS, Some("csi-ebs-1")),
        ]
    };
    let st = with_attachments(&one(), vec![], 2, vas());
    assert_eq!(st.reasons, [ERR_REASON_MAX_VOLUME_COUNT_EXCEEDED], "{st}");
    assert_eq!(st.code, Code::Unschedulable);
    assert!(with_attachments(&one(), vec![], 3, vas()).is_success());
    // The attachment of a placed pod's volume is counted once.
    let st = with_attachments(
        &one(),
        vec![running()],
        2,
        vec![attachment("va-0", N, EBS, Some("csi-ebs-3"))],
    );
    assert!(st.is_success(), "{st}");
    // The new pod's own volume, already attached here, adds nothing.
    assert!(
        with_attachments(
            &pod_of("again", &["csi-ebs-3"]),
            vec![],
            1,
            vec![attachment("va-0", N, EBS, Some("csi-ebs-3"))]
        )
        .is_success()
    );
    // Not counted: another node's attachment, one without a PV name, one whose
    // PV is missing or not a CSI volume, one without an attacher.
    for va in [
        attachment("va-x", "other", EBS, Some("csi-ebs-1")),
        attachment("va-x", N, EBS, None),
        attachment("va-x", N, EBS, Some("gone")),
        attachment("va-x", N, EBS, Some("intree-0")),
        attachment("va-x", N, "", Some("csi-ebs-1")),
    ] {
        let st = with_attachments(&one(), vec![], 1, vec![va]);
        assert!(st.is_success(), "{st}");
    }
}
