//! NodeName: a pod with `spec.nodeName` set (but still pending, e.g. in a what-if)
//! fits only the named node.

use std::collections::BTreeSet;

use crate::framework::{CycleState, FilterPlugin, PreFilterPlugin, PreFilterResult, Status};
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};

pub const NAME: &str = "NodeName";
/// kube-scheduler's reason string.
pub const ERR_REASON: &str = "node(s) didn't match the requested node name";

#[derive(Debug, Default)]
pub struct NodeName;

crate::impl_plugin!(NodeName, NAME, pre_filter, filter);

fn requested(pod: &PodInfo) -> Option<&str> {
    pod.spec()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

impl PreFilterPlugin for NodeName {
    fn pre_filter(
        &self,
        _: &mut CycleState,
        pod: &PodInfo,
        _: &Snapshot,
    ) -> (Option<PreFilterResult>, Status) {
        match requested(pod) {
            None => (None, Status::skip()),
            Some(n) => (
                Some(PreFilterResult {
                    node_names: Some(BTreeSet::from([n.to_string()])),
                }),
                Status::success(),
            ),
        }
    }

    /// Skips by the pod alone (see `PreFilterPlugin::skip_depends_on_pods`).
    fn skip_depends_on_pods(&self) -> bool {
        false
    }
}

impl FilterPlugin for NodeName {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> Status {
        match requested(pod) {
            Some(n) if n != &*node.name => Status::unresolvable(ERR_REASON),
            _ => Status::success(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{node, pod};

    #[test]
    fn only_named_node_fits() {
        let snap = Snapshot::new();
        let p = pod("p").node_name("n1").info();
        let (res, st) = NodeName.pre_filter(&mut CycleState::new(), &p, &snap);
        assert!(st.is_success());
        assert_eq!(res.unwrap().node_names.unwrap().len(), 1);
        let st = NodeName.filter(&CycleState::new(), &p, &node("n2").info(), &snap);
        assert_eq!(st.reasons, vec![ERR_REASON]);
        assert!(
            NodeName
                .filter(&CycleState::new(), &p, &node("n1").info(), &snap)
                .is_success()
        );
        let free = pod("q").info();
        assert!(
            NodeName
                .pre_filter(&mut CycleState::new(), &free, &snap)
                .1
                .is_skip()
        );
    }
}
