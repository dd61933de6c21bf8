//! DefaultBinder: in simulation, binding is the commit of the decision into the
//! snapshot (done by the scheduler loop after Bind succeeds); against a cluster the
//! integration layer replaces it with a `pods/binding` call.

use crate::framework::{BindPlugin, CycleState, Status};
use crate::snapshot::PodInfo;

pub const NAME: &str = "DefaultBinder";

#[derive(Debug, Default)]
pub struct DefaultBinder;

crate::impl_plugin!(DefaultBinder, NAME, bind);

impl BindPlugin for DefaultBinder {
    fn bind(&self, _: &mut CycleState, pod: &PodInfo, node: &str) -> Status {
        if node.is_empty() {
            return Status::error(format!("bind {}: empty node name", pod.key));
        }
        Status::success()
    }
}
