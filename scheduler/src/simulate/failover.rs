//! `simulate --fail-node NODE` (and the timeline's `failNode` event): a node fails
//! (as if deleted, or NotReady past its grace and its pods evicted). Its pods are
//! taken off the snapshot and become pending again (recreated by their
//! controllers: same spec, no node); DaemonSet and mirror pods go with the node.
//! The evicted pods are re-placed in priority order (then creation, then input
//! order) *before* any other pending work: the caller runs them first, on their
//! own. With `corral.haReserve`, pods at or above its `minPriority` may use the
//! reserved capacity that lower-priority placements had to leave free.

use std::collections::HashSet;
use std::sync::Arc;

use crate::batch::FailedNode;
use crate::snapshot::{PodInfo, Snapshot};

/// Whether a pod stays with its node (DaemonSet pods, static/mirror pods).
pub fn bound_to_node(p: &PodInfo) -> bool {
    let owned_by_ds = p
        .pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DaemonSet" && o.controller == Some(true));
    let mirror = p
        .pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    owned_by_ds || mirror
}

/// The pending copy of a pod whose node failed: no node, no status.
pub fn pending_copy(p: &PodInfo) -> PodInfo {
    let mut pod = (*p.pod).clone();
    if let Some(spec) = pod.spec.as_mut() {
        spec.node_name = None;
    }
    pod.status = None;
    let mut out = p.clone();
    out.pod = Arc::new(pod);
    out.node_name = None;
    out
}

/// Re-placement order: priority (higher first), then creation, then input order.
pub fn order(pods: &mut [PodInfo]) {
    pods.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.created.cmp(&b.created))
            .then(a.seq.cmp(&b.seq))
            .then(a.key.cmp(&b.key))
    });
}

/// Fails `nodes` in `snapshot`: returns their pods to re-place (in re-placement
/// order; only those of a profile's `schedulerNames`) and what happened per node.
/// An unknown node name is an error naming it.
pub fn fail_nodes(
    snapshot: &mut Snapshot,
    nodes: &[String],
    scheduler_names: &HashSet<&str>,
    flag: &str,
) -> Result<(Vec<PodInfo>, Vec<FailedNode>), String> {
    let mut all = Vec::new();
    let mut records = Vec::new();
    for name in nodes {
        let Some(n) = snapshot.node(name) else {
            return Err(format!(
                "{flag} {name}: no node with that name in the input"
            ));
        };
        let pods: Vec<Arc<PodInfo>> = n.pods.clone();
        let mut rec = FailedNode {
            node: name.clone(),
            ..FailedNode::default()
        };
        let mut moved = Vec::new();
        for p in pods {
            snapshot.remove_pod(&p.key);
            if bound_to_node(&p) || !scheduler_names.contains(p.scheduler_name.as_str()) {
                rec.dropped.push(p.key.clone());
            } else {
                moved.push(pending_copy(&p));
            }
        }
        snapshot.remove_node(name);
        order(&mut moved);
        rec.evicted = moved.iter().map(|p| p.key.clone()).collect();
        all.extend(moved);
        records.push(rec);
    }
    order(&mut all);
    Ok((all, records))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{node, pod};

    #[test]
    fn failed_node_pods_come_back_pending_in_priority_order() {
        let mut s = Snapshot::new();
        s.add_nodes([node("a").cpu("8").info(), node("b").cpu("8").info()]);
        s.add_pod(Arc::new(pod("low").cpu("1").priority(1).seq(1).info()), "a");
        s.add_pod(
            Arc::new(pod("high").cpu("1").priority(100).seq(2).info()),
            "a",
        );
        s.add_pod(
            Arc::new(pod("mid").cpu("1").priority(50).seq(3).info()),
            "a",
        );
        let mut ds = pod("ds").cpu("1");
        ds.0["metadata"]["ownerReferences"] = serde_json::json!([{
            "apiVersion": "apps/v1", "kind": "DaemonSet", "name": "d", "uid": "u", "controller": true
        }]);
        s.add_pod(Arc::new(ds.info()), "a");
        s.add_pod(Arc::new(pod("other").cpu("1").info()), "b");
        let names: HashSet<&str> = ["corral"].into_iter().collect();
        let (pods, rec) = fail_nodes(&mut s, &["a".to_string()], &names, "--fail-node").unwrap();
        let keys: Vec<&str> = pods.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["default/high", "default/mid", "default/low"]);
        assert!(
            pods.iter()
                .all(|p| p.node_name.is_none() && p.pod.spec.as_ref().unwrap().node_name.is_none())
        );
        assert_eq!(rec[0].dropped, ["default/ds"]);
        assert!(s.node("a").is_none());
        assert_eq!(s.orphan_pods(), 0);
        assert_eq!(s.node("b").unwrap().pods.len(), 1);
        let e = fail_nodes(&mut s, &["zz".to_string()], &names, "--fail-node").unwrap_err();
        assert_eq!(e, "--fail-node zz: no node with that name in the input");
    }
}
