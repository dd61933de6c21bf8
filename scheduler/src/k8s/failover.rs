//! Node failure in `run`: the pods of a failed node are re-placed in priority order
//! before other pending work.
//!
//! A node *fails* when it is deleted, or when its pods are deleted while it is not
//! Ready (the node lifecycle controller evicts them once the node has been
//! NotReady past their `node.kubernetes.io/not-ready` toleration — the grace).
//! The pods' controllers (ReplicaSet, StatefulSet, Job, ...) then create
//! replacements; a new pending pod whose controller lost a pod that way within
//! [`WINDOW`] goes to the front of the queue (among such pods: priority, then
//! arrival). DaemonSet pods are not replaced elsewhere and are not tracked.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;

use crate::snapshot::PodInfo;

/// How long a failed node's controllers' new pods go first.
pub const WINDOW: Duration = Duration::from_secs(600);

/// The controllers (by UID) that lost pods on failed nodes, with when.
#[derive(Debug, Default)]
pub struct Failover {
    owners: HashMap<String, Instant>,
}

/// The UID of the pod's controller, unless it is a DaemonSet (or there is none).
fn controller_uid(p: &PodInfo) -> Option<&str> {
    p.pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .filter(|o| o.kind != "DaemonSet" && !o.uid.is_empty())
        .map(|o| o.uid.as_str())
}

/// Whether the node's Ready condition is True (a node without conditions, e.g. just
/// registered, counts as ready).
pub fn node_ready(n: &Node) -> bool {
    let Some(conds) = n.status.as_ref().and_then(|s| s.conditions.as_ref()) else {
        return true;
    };
    conds
        .iter()
        .find(|c| c.type_ == "Ready")
        .is_none_or(|c| c.status == "True")
}

impl Failover {
    /// Pods lost with a failed node (deleted node, or evicted from a NotReady one).
    pub fn lost<'a>(&mut self, pods: impl IntoIterator<Item = &'a PodInfo>, now: Instant) -> usize {
        let mut n = 0;
        for p in pods {
            if let Some(uid) = controller_uid(p) {
                self.owners.insert(uid.to_string(), now);
                n += 1;
            }
        }
        n
    }

    /// Whether a new pending pod replaces a pod of a failed node (its controller lost
    /// one within [`WINDOW`]). Forgets expired entries.
    pub fn replaces(&mut self, p: &PodInfo, now: Instant) -> bool {
        if self.owners.is_empty() {
            return false;
        }
        self.owners
            .retain(|_, t| now.saturating_duration_since(*t) < WINDOW);
        controller_uid(p).is_some_and(|uid| self.owners.contains_key(uid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::pod;
    use serde_json::json;

    fn owned(name: &str, kind: &str, uid: &str) -> PodInfo {
        let mut b = pod(name);
        b.0["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": kind, "name": "o", "uid": uid, "controller": true}]);
        b.info()
    }

    #[test]
    fn replacements_of_lost_pods_are_recognised_within_the_window() {
        let mut f = Failover::default();
        let t0 = Instant::now();
        let lost = [
            owned("web-1", "ReplicaSet", "rs-web"),
            owned("exporter", "DaemonSet", "ds"),
            pod("bare").info(),
        ];
        assert_eq!(f.lost(lost.iter(), t0), 1);
        assert!(f.replaces(&owned("web-2", "ReplicaSet", "rs-web"), t0));
        assert!(!f.replaces(&owned("db-0", "StatefulSet", "sts-db"), t0));
        assert!(!f.replaces(&owned("exporter-2", "DaemonSet", "ds"), t0));
        assert!(!f.replaces(&pod("bare").info(), t0));
        assert!(!f.replaces(&owned("web-3", "ReplicaSet", "rs-web"), t0 + WINDOW));
        assert!(f.owners.is_empty());
    }

    #[test]
    fn readiness_follows_the_ready_condition() {
        let node = |conds: serde_json::Value| -> Node {
            serde_json::from_value(
                json!({"metadata": {"name": "n"}, "status": {"conditions": conds}}),
            )
            .unwrap()
        };
        assert!(node_ready(&node(
            json!([{"type": "Ready", "status": "True"}])
        )));
        assert!(!node_ready(&node(
            json!([{"type": "Ready", "status": "Unknown"}])
        )));
        assert!(!node_ready(&node(
            json!([{"type": "Ready", "status": "False"}])
        )));
        assert!(node_ready(&node(json!([]))));
    }
}
