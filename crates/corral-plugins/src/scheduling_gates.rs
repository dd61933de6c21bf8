//! SchedulingGates: a pod with `spec.schedulingGates` is held — refused before any
//! node is evaluated, unschedulable and unresolvable with a reason naming its gates
//! — until its gates are removed (the API server refuses to bind a gated pod;
//! removing the last gate is a pod update that queues the pod again).
//! kube-scheduler holds such pods before its queue (PreEnqueue); Corral holds them
//! at PreFilter, the first extension point of its cycle.

use crate::framework::{CycleState, PreFilterPlugin, PreFilterResult, Status};
use crate::snapshot::{PodInfo, Snapshot};

pub const NAME: &str = "SchedulingGates";

#[derive(Debug, Default)]
pub struct SchedulingGates;

crate::impl_plugin!(SchedulingGates, NAME, pre_filter);

/// The names of the pod's scheduling gates (empty: not gated).
pub fn gates(pod: &PodInfo) -> Vec<&str> {
    pod.spec()
        .and_then(|s| s.scheduling_gates.as_ref())
        .map(|g| g.iter().map(|g| g.name.as_str()).collect())
        .unwrap_or_default()
}

impl PreFilterPlugin for SchedulingGates {
    fn pre_filter(
        &self,
        _: &mut CycleState,
        pod: &PodInfo,
        _: &Snapshot,
    ) -> (Option<PreFilterResult>, Status) {
        let g = gates(pod);
        if g.is_empty() {
            (None, Status::skip())
        } else {
            (
                None,
                Status::unresolvable(format!(
                    "waiting for scheduling gates: {} (SchedulingGates)",
                    g.join(", ")
                )),
            )
        }
    }

    /// Skips by the pod alone (see `PreFilterPlugin::skip_depends_on_pods`).
    fn skip_depends_on_pods(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::pod;

    #[test]
    fn gated_pods_are_held_until_their_gates_are_removed() {
        let snap = Snapshot::new();
        let mut b = pod("p");
        b.0["spec"]["schedulingGates"] =
            serde_json::json!([{"name": "example.com/quota"}, {"name": "example.com/data"}]);
        let (_, st) = SchedulingGates.pre_filter(&mut CycleState::new(), &b.info(), &snap);
        assert_eq!(
            st.code,
            crate::framework::Code::UnschedulableAndUnresolvable,
            "{st:?}"
        );
        assert_eq!(
            st.reasons,
            vec![
                "waiting for scheduling gates: example.com/quota, example.com/data (SchedulingGates)"
            ]
        );
        b.0["spec"]["schedulingGates"] = serde_json::json!([]);
        let (_, st) = SchedulingGates.pre_filter(&mut CycleState::new(), &b.info(), &snap);
        assert!(st.is_skip());
    }
}
