//! VolumeZone: the zone/region labels of the PVs bound to the pod's claims must
//! match the node's (kube-scheduler's `volumezone`).
//!
//! PreFilter collects, per bound PV, the values of its topology labels (beta and GA
//! zone/region; a value may list several zones separated by `__`); unbound
//! WaitForFirstConsumer claims are skipped (VolumeBinding handles them); any other
//! unresolved claim is UnschedulableAndUnresolvable with kube's message. Skip when
//! nothing is collected. Filter: a node without any topology label passes; else
//! each PV label must be present on the node (a beta PV label may be matched by
//! the node's GA label) with one of the PV's values.

use std::sync::Arc;

use crate::framework::{
    CycleState, FilterPlugin, Plugin, PreFilterPlugin, PreFilterResult, Status,
};
use crate::snapshot::{LABEL_REGION, LABEL_ZONE, NodeInfo, PodInfo, Snapshot};

pub const NAME: &str = "VolumeZone";
/// kube-scheduler's reason.
pub const ERR_REASON_CONFLICT: &str = "node(s) had no available volume zone";
const STATE_KEY: &str = "PreFilterVolumeZone";
pub const LABEL_BETA_ZONE: &str = "failure-domain.beta.kubernetes.io/zone";
pub const LABEL_BETA_REGION: &str = "failure-domain.beta.kubernetes.io/region";
const TOPOLOGY_LABELS: [&str; 4] = [LABEL_BETA_ZONE, LABEL_BETA_REGION, LABEL_ZONE, LABEL_REGION];

#[derive(Debug, Default)]
pub struct VolumeZone;

crate::impl_plugin!(VolumeZone, NAME, pre_filter, filter);

pub fn factory(args: Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String> {
    match args {
        None | Some(serde_json::Value::Null) => Ok(Arc::new(VolumeZone)),
        Some(serde_json::Value::Object(m))
            if m.keys().all(|k| k == "apiVersion" || k == "kind") =>
        {
            Ok(Arc::new(VolumeZone))
        }
        Some(_) => Err("this plugin takes no args".into()),
    }
}

/// One PV topology label: key and allowed values.
#[derive(Debug, Clone)]
struct PvTopology {
    key: &'static str,
    values: Vec<String>,
}

fn translate_to_ga(key: &str) -> &str {
    match key {
        LABEL_BETA_REGION => LABEL_REGION,
        LABEL_BETA_ZONE => LABEL_ZONE,
        k => k,
    }
}

/// `LabelZonesToSet`: `a__b` → {a, b}; an empty element makes the label unusable
/// (kube ignores such a label).
fn zones_to_set(v: &str) -> Option<Vec<String>> {
    let out: Vec<String> = v.split("__").map(str::to_string).collect();
    (!out.iter().any(String::is_empty)).then_some(out)
}

fn pv_topologies(snap: &Snapshot, pod: &PodInfo) -> Result<Vec<PvTopology>, Status> {
    let vols = snap.volumes();
    let mut out = Vec::new();
    for v in crate::volumes::pod_volumes(&pod.pod) {
        let Some(c) = &v.persistent_volume_claim else {
            continue;
        };
        let name = &c.claim_name;
        if name.is_empty() {
            return Err(Status::unresolvable("PersistentVolumeClaim had no name"));
        }
        let Some(pvc) = vols.pvc(&pod.namespace, name) else {
            return Err(Status::unresolvable(crate::volume_binding::pvc_not_found(
                name,
            )));
        };
        if pvc.volume_name.is_empty() {
            if pvc.class.is_empty() {
                return Err(Status::unresolvable(
                    "PersistentVolumeClaim had no pv name and storageClass name",
                ));
            }
            let Some(sc) = vols.class(&pvc.class) else {
                return Err(Status::unresolvable(format!(
                    "storageclass.storage.k8s.io {:?} not found",
                    pvc.class
                )));
            };
            match sc.binding_mode.as_deref() {
                None => {
                    return Err(Status::unresolvable(format!(
                        "VolumeBindingMode not set for StorageClass {:?}",
                        pvc.class
                    )));
                }
                Some(crate::volumes::WAIT_FOR_FIRST_CONSUMER) => continue,
                Some(_) => return Err(Status::unresolvable("PersistentVolume had no name")),
            }
        }
        let Some(pv) = vols.pv(&pvc.volume_name) else {
            return Err(Status::unresolvable(format!(
                "persistentvolume {:?} not found",
                pvc.volume_name
            )));
        };
        for key in TOPOLOGY_LABELS {
            if let Some(values) = pv.labels.get(key).and_then(|v| zones_to_set(v)) {
                out.push(PvTopology { key, values });
            }
        }
    }
    Ok(out)
}

impl PreFilterPlugin for VolumeZone {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
    ) -> (Option<PreFilterResult>, Status) {
        match pv_topologies(snap, pod) {
            Err(st) => (None, st),
            Ok(t) if t.is_empty() => (None, Status::skip()),
            Ok(t) => {
                state.write(STATE_KEY, t);
                (None, Status::success())
            }
        }
    }
}

impl FilterPlugin for VolumeZone {
    fn filter(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo, _: &Snapshot) -> Status {
        let Some(tops) = state.read::<Vec<PvTopology>>(STATE_KEY) else {
            return Status::success();
        };
        if !TOPOLOGY_LABELS.iter().any(|k| node.labels.contains_key(*k)) {
            return Status::success();
        }
        for t in tops {
            let v = node
                .labels
                .get(t.key)
                .or_else(|| node.labels.get(translate_to_ga(t.key)));
            if !v.is_some_and(|v| t.values.contains(v)) {
                return Status::unresolvable(ERR_REASON_CONFLICT);
            }
        }
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    //! kube-scheduler's `volumezone/volume_zone_test.go` (TestSingleZone,
    //! TestMultiZone, TestWithBinding) as data.
    use super::*;
    use crate::framework::Code;
    use crate::testutil::volumes::*;
    use crate::volumes::VolumeObject;

    const BZ: &str = LABEL_BETA_ZONE;
    const BR: &str = LABEL_BETA_REGION;
    const Z: &str = LABEL_ZONE;
    const R: &str = LABEL_REGION;

    fn pv_l(name: &str, labels: &[(&str, &str)]) -> VolumeObject {
        let mut p = pv(name, "");
        for (k, v) in labels {
            p = p.label(k, v);
        }
        p.obj()
    }

    fn claim(name: &str, vol: &str) -> VolumeObject {
        pvc(name, "").volume_name(vol).obj()
    }

    /// (name, claim, node labels, want PreFilter (None = ok, Some(None) = skip,
    /// Some(Some(reason)))), want Filter (None = ok, Some(reason))).
    type Row = (
        &'static str,
        Option<&'static str>,
        &'static [(&'static str, &'static str)],
        Option<Option<&'static str>>,
        Option<&'static str>,
    );

    fn run(objs: Vec<VolumeObject>, rows: &[Row]) {
        let snap = snapshot(vec![], objs);
        for (name, claim, labels, want_pre, want_filter) in rows {
            let p = match claim {
                Some(c) => pod("pod_1", &[c]),
                None => pod("pod_1", &[]),
            };
            let n = {
                let mut b = crate::testutil::node("host1");
                // Only the row's labels (no hostname label in kube's nodes).
                b.0["metadata"]["labels"] = serde_json::json!({});
                for (k, v) in labels.iter() {
                    b = b.label(k, v);
                }
                b.info()
            };
            let mut st = CycleState::new();
            let (_, pre) = VolumeZone.pre_filter(&mut st, &p, &snap);
            match want_pre {
                None => assert!(pre.is_success(), "{name}: {pre}"),
                Some(None) => assert!(pre.is_skip(), "{name}: {pre}"),
                Some(Some(r)) => {
                    assert_eq!(pre.code, Code::UnschedulableAndUnresolvable, "{name}");
                    assert_eq!(pre.reasons, [*r], "{name}");
                    continue;
                }
            }
            let f = VolumeZone.filter(&st, &p, &n, &snap);
            match want_filter {
                None => assert!(f.is_success(), "{name}: {f}"),
                Some(r) => {
                    assert_eq!(f.code, Code::UnschedulableAndUnresolvable, "{name}");
                    assert_eq!(f.reasons, [*r], "{name}");
                }
            }
        }
    }

    #[test]
    fn single_zone() {
        let objs = vec![
            pv_l("Vol_1", &[(BZ, "us-west1-a")]),
            pv_l("Vol_2", &[(BR, "us-west1"), ("uselessLabel", "none")]),
            pv_l("Vol_3", &[(BR, "us-west1")]),
            pv_l("Vol_Stable_1", &[(Z, "us-west1-a")]),
            pv_l("Vol_Stable_2", &[(R, "us-west1"), ("uselessLabel", "none")]),
            pv_l("Vol_Stable_3", &[(Z, "us-west1-a"), (R, "us-west1-a")]),
            claim("PVC_1", "Vol_1"),
            claim("PVC_2", "Vol_2"),
            claim("PVC_3", "Vol_3"),
            claim("PVC_4", "Vol_not_exist"),
            claim("PVC_Stable_1", "Vol_Stable_1"),
            claim("PVC_Stable_2", "Vol_Stable_2"),
            claim("PVC_Stable_3", "Vol_Stable_3"),
        ];
        const C: Option<&str> = Some(ERR_REASON_CONFLICT);
        run(
            objs,
            &[
                (
                    "pod without volume",
                    None,
                    &[(BZ, "us-west1-a")],
                    Some(None),
                    None,
                ),
                ("node without labels", Some("PVC_1"), &[], None, None),
                (
                    "beta zone label matched",
                    Some("PVC_1"),
                    &[(BZ, "us-west1-a"), ("uselessLabel", "none")],
                    None,
                    None,
                ),
                (
                    "beta region label matched",
                    Some("PVC_2"),
                    &[(BR, "us-west1"), ("uselessLabel", "none")],
                    None,
                    None,
                ),
                (
                    "beta region label doesn't match",
                    Some("PVC_2"),
                    &[(BR, "no_us-west1"), ("uselessLabel", "none")],
                    None,
                    C,
                ),
                (
                    "beta zone label doesn't match",
                    Some("PVC_1"),
                    &[(BZ, "no_us-west1-a"), ("uselessLabel", "none")],
                    None,
                    C,
                ),
                (
                    "zone label matched",
                    Some("PVC_Stable_1"),
                    &[(Z, "us-west1-a"), ("uselessLabel", "none")],
                    None,
                    None,
                ),
                (
                    "region label matched",
                    Some("PVC_Stable_2"),
                    &[(R, "us-west1"), ("uselessLabel", "none")],
                    None,
                    None,
                ),
                (
                    "region label doesn't match",
                    Some("PVC_Stable_2"),
                    &[(R, "no_us-west1"), ("uselessLabel", "none")],
                    None,
                    C,
                ),
                (
                    "zone label doesn't match",
                    Some("PVC_Stable_1"),
                    &[(Z, "no_us-west1-a"), ("uselessLabel", "none")],
                    None,
                    C,
                ),
                (
                    "pv with zone and region, node with only zone",
                    Some("PVC_Stable_3"),
                    &[(Z, "us-west1-a")],
                    None,
                    C,
                ),
                (
                    "pv with zone,node with beta zone",
                    Some("PVC_Stable_1"),
                    &[(BZ, "us-west1-a")],
                    None,
                    C,
                ),
                (
                    "pv with beta label,node with ga label, matched",
                    Some("PVC_1"),
                    &[(Z, "us-west1-a")],
                    None,
                    None,
                ),
                (
                    "pv with beta label,node with ga label, don't match",
                    Some("PVC_1"),
                    &[(Z, "us-west1-b")],
                    None,
                    C,
                ),
                (
                    "pv not found",
                    Some("PVC_4"),
                    &[],
                    Some(Some(r#"persistentvolume "Vol_not_exist" not found"#)),
                    None,
                ),
                (
                    "pvc not found",
                    Some("PVC_404"),
                    &[],
                    Some(Some(r#"persistentvolumeclaim "PVC_404" not found"#)),
                    None,
                ),
            ],
        );
    }

    #[test]
    fn multi_zone() {
        let objs = vec![
            pv_l("Vol_1", &[(BZ, "us-west1-a")]),
            pv_l("Vol_2", &[(BZ, "us-west1-b"), ("uselessLabel", "none")]),
            pv_l("Vol_3", &[(BZ, "us-west1-c__us-west1-a")]),
            pv_l("Vol_Stable_1", &[(Z, "us-west1-a")]),
            pv_l("Vol_Stable_2", &[(Z, "us-west1-c__us-west1-a")]),
            claim("PVC_1", "Vol_1"),
            claim("PVC_2", "Vol_2"),
            claim("PVC_3", "Vol_3"),
            claim("PVC_Stable_1", "Vol_Stable_1"),
            claim("PVC_Stable_2", "Vol_Stable_2"),
        ];
        const C: Option<&str> = Some(ERR_REASON_CONFLICT);
        run(
            objs,
            &[
                ("node without labels", Some("PVC_3"), &[], None, None),
                (
                    "beta zone label matched",
                    Some("PVC_3"),
                    &[(BZ, "us-west1-a"), ("uselessLabel", "none")],
                    None,
                    None,
                ),
                (
                    "beta zone label doesn't match",
                    Some("PVC_1"),
                    &[(BZ, "us-west1-b"), ("uselessLabel", "none")],
                    None,
                    C,
                ),
                (
                    "zone label matched",
                    Some("PVC_Stable_2"),
                    &[(Z, "us-west1-a"), ("uselessLabel", "none")],
                    None,
                    None,
                ),
                (
                    "zone label doesn't match",
                    Some("PVC_Stable_1"),
                    &[(Z, "us-west1-b"), ("uselessLabel", "none")],
                    None,
                    C,
                ),
            ],
        );
    }

    #[test]
    fn with_binding() {
        let objs = vec![
            class(sc("Class_Immediate", Some("Immediate"), "")),
            class(sc("Class_Wait", Some("WaitForFirstConsumer"), "")),
            // kube's fixture leaves the mode unset (not possible through the API
            // server, which defaults it; Corral's file input defaults it too).
            class(sc("Class_Unset", None, "")),
            pv_l("Vol_1", &[(BZ, "us-west1-a")]),
            claim("PVC_1", "Vol_1"),
            pvc("PVC_NoSC", "Class_0").obj(),
            pvc("PVC_EmptySC", "").obj(),
            pvc("PVC_WaitSC", "Class_Wait").obj(),
            pvc("PVC_ImmediateSC", "Class_Immediate").obj(),
            pvc("PVC_UnsetSC", "Class_Unset").obj(),
        ];
        let node: &[(&str, &str)] = &[(BZ, "us-west1-a"), ("uselessLabel", "none")];
        run(
            objs,
            &[
                (
                    "label zone failure domain matched",
                    Some("PVC_1"),
                    node,
                    None,
                    None,
                ),
                (
                    "unbound volume empty storage class",
                    Some("PVC_EmptySC"),
                    node,
                    Some(Some(
                        "PersistentVolumeClaim had no pv name and storageClass name",
                    )),
                    None,
                ),
                (
                    "unbound volume no storage class",
                    Some("PVC_NoSC"),
                    node,
                    Some(Some(r#"storageclass.storage.k8s.io "Class_0" not found"#)),
                    None,
                ),
                (
                    "unbound volume immediate binding mode",
                    Some("PVC_ImmediateSC"),
                    node,
                    Some(Some("PersistentVolume had no name")),
                    None,
                ),
                (
                    "unbound volume unset binding mode",
                    Some("PVC_UnsetSC"),
                    node,
                    Some(Some(
                        r#"VolumeBindingMode not set for StorageClass "Class_Unset""#,
                    )),
                    None,
                ),
                (
                    "unbound volume wait binding mode",
                    Some("PVC_WaitSC"),
                    node,
                    Some(None),
                    None,
                ),
            ],
        );
    }
}
