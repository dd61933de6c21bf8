//! `SessionFit`: the Filter a session appends to every profile, so that node
//! capacity is enforced even when a profile disables NodeResourcesFit.

use std::sync::Arc;

use crate::framework::{CycleState, FilterPlugin, Status};
use crate::scheduler::Scheduler;
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};

/// The session's resource filter: a task fits a node's idle resources (Volcano's
/// `InitResreq <= FutureIdle` check), independent of the profile's plugins.
struct SessionFit;

pub const SESSION_FIT: &str = "SessionFit";

crate::impl_plugin!(SessionFit, SESSION_FIT, filter);

/// Insufficient resources of `pod` on `node` (kube-scheduler reason strings).
pub fn insufficient(
    pod: &PodInfo,
    node: &NodeInfo,
    freed: &crate::resources::Resources,
    freed_pods: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    if node.pods.len() - freed_pods + 1 > node.allocatable.pods.max(0) as usize {
        out.push("Too many pods".to_string());
    }
    let r = &pod.requests.requests;
    let check = |name: &str, want: i64, out: &mut Vec<String>| {
        if want > 0
            && want > node.allocatable.get(name) - node.requested.get(name) + freed.get(name)
        {
            out.push(format!("Insufficient {name}"));
        }
    };
    check("cpu", r.milli_cpu, &mut out);
    check("memory", r.memory, &mut out);
    check("ephemeral-storage", r.ephemeral_storage, &mut out);
    for (n, v) in &r.scalar {
        // Per-card vGPU amounts are GpuShare's to account (as in NodeResourcesFit,
        // and as Volcano's FutureIdle check ignores them).
        if !corral_api::keys::VGPU_PER_CARD_AMOUNTS
            .iter()
            .any(|x| *x == &**n)
        {
            check(n, *v, &mut out);
        }
    }
    out
}

impl FilterPlugin for SessionFit {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> Status {
        let bad = insufficient(pod, node, &crate::resources::Resources::default(), 0);
        if bad.is_empty() {
            Status::success()
        } else {
            let mut st = Status::unschedulable(bad[0].clone());
            st.reasons = bad.into_iter().map(Into::into).collect();
            st
        }
    }
}

/// Appends the session's resource filter to every profile.
pub fn with_session_fit(sched: &mut Scheduler) {
    for fw in &mut sched.frameworks {
        if !fw.filter.iter().any(|f| f.name() == SESSION_FIT) {
            fw.filter.push(Arc::new(SessionFit));
        }
    }
}
