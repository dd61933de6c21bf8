//! NodeUnschedulable: filters out nodes with `spec.unschedulable: true` unless the pod
//! tolerates the `node.kubernetes.io/unschedulable:NoSchedule` taint.

use crate::framework::{CycleState, FilterPlugin, Status};
use crate::helpers::tolerates;
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};

pub const NAME: &str = "NodeUnschedulable";
/// kube-scheduler's reason string.
pub const ERR_REASON: &str = "node(s) were unschedulable";
const TAINT_KEY: &str = "node.kubernetes.io/unschedulable";

#[derive(Debug, Default)]
pub struct NodeUnschedulable;

crate::impl_plugin!(NodeUnschedulable, NAME, filter);

impl FilterPlugin for NodeUnschedulable {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> Status {
        if !node.unschedulable {
            return Status::success();
        }
        let tolerated = pod
            .tolerations
            .iter()
            .any(|t| tolerates(t, TAINT_KEY, None, "NoSchedule"));
        if tolerated {
            Status::success()
        } else {
            Status::unresolvable(ERR_REASON)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::testutil::{node, pod};

    #[test]
    fn cordoned_nodes_reject_unless_tolerated() {
        let n = node("n1").cpu("4").unschedulable().info();
        let snap = Snapshot::new();
        let p = pod("p").info();
        let s = NodeUnschedulable.filter(&CycleState::new(), &p, &n, &snap);
        assert_eq!(s.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(s.reasons, vec![ERR_REASON]);

        let tol = pod("p")
            .toleration(
                serde_json::json!({"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}),
            )
            .info();
        assert!(
            NodeUnschedulable
                .filter(&CycleState::new(), &tol, &n, &snap)
                .is_success()
        );
        let ok = node("n2").cpu("4").info();
        assert!(
            NodeUnschedulable
                .filter(&CycleState::new(), &p, &ok, &snap)
                .is_success()
        );
    }
}
