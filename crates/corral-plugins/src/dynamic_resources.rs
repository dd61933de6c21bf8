//! DynamicResources: Corral does not allocate ResourceClaims (Dynamic Resource
//! Allocation), so a pod with `spec.resourceClaims` is refused — unschedulable and
//! unresolvable, with a reason naming the plugin — instead of being bound to a node
//! where the kubelet could not prepare its claims. Pods without claims are skipped.

use crate::framework::{CycleState, PreFilterPlugin, PreFilterResult, Status};
use crate::snapshot::{PodInfo, Snapshot};

pub const NAME: &str = "DynamicResources";
/// The reason a pod with claims gets.
pub const ERR_REASON: &str = "pod has spec.resourceClaims: Dynamic Resource Allocation is not supported by Corral (DynamicResources)";

#[derive(Debug, Default)]
pub struct DynamicResources;

crate::impl_plugin!(DynamicResources, NAME, pre_filter);

fn has_claims(pod: &PodInfo) -> bool {
    pod.spec()
        .and_then(|s| s.resource_claims.as_ref())
        .is_some_and(|c| !c.is_empty())
}

impl PreFilterPlugin for DynamicResources {
    fn pre_filter(
        &self,
        _: &mut CycleState,
        pod: &PodInfo,
        _: &Snapshot,
    ) -> (Option<PreFilterResult>, Status) {
        if has_claims(pod) {
            (None, Status::unresolvable(ERR_REASON))
        } else {
            (None, Status::skip())
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
    fn pods_with_claims_are_refused_others_skipped() {
        let snap = Snapshot::new();
        let mut b = pod("p");
        b.0["spec"]["resourceClaims"] =
            serde_json::json!([{"name": "gpu", "resourceClaimName": "gpu-claim"}]);
        let (_, st) = DynamicResources.pre_filter(&mut CycleState::new(), &b.info(), &snap);
        assert!(!st.is_success() && !st.is_skip(), "{st:?}");
        assert_eq!(
            st.code,
            crate::framework::Code::UnschedulableAndUnresolvable,
            "{st:?}"
        );
        assert_eq!(st.reasons, vec![ERR_REASON]);
        assert!(ERR_REASON.contains(NAME));
        let (_, st) = DynamicResources.pre_filter(&mut CycleState::new(), &pod("q").info(), &snap);
        assert!(st.is_skip());
        let mut e = pod("e");
        e.0["spec"]["resourceClaims"] = serde_json::json!([]);
        let (_, st) = DynamicResources.pre_filter(&mut CycleState::new(), &e.info(), &snap);
        assert!(st.is_skip(), "an empty list is no claim");
    }
}
