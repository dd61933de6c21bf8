//! PrioritySort: higher `spec.priority` first, then earlier creation (then input order).

use crate::framework::{QueueSortPlugin, QueuedPodInfo};

pub const NAME: &str = "PrioritySort";

#[derive(Debug, Default)]
pub struct PrioritySort;

crate::impl_plugin!(PrioritySort, NAME, queue_sort);

impl QueueSortPlugin for PrioritySort {
    fn less(&self, a: &QueuedPodInfo, b: &QueuedPodInfo) -> bool {
        let (a, b) = (&a.pod, &b.pod);
        (std::cmp::Reverse(a.priority), a.created, a.seq)
            < (std::cmp::Reverse(b.priority), b.created, b.seq)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::testutil::pod;

    #[test]
    fn priority_then_age() {
        let q = |p: crate::snapshot::PodInfo| QueuedPodInfo {
            pod: Arc::new(p),
            attempts: 0,
        };
        let hi = q(pod("hi").priority(10).seq(5).info());
        let lo = q(pod("lo").priority(1).seq(1).info());
        let lo2 = q(pod("lo2").priority(1).seq(2).info());
        assert!(PrioritySort.less(&hi, &lo));
        assert!(!PrioritySort.less(&lo, &hi));
        assert!(PrioritySort.less(&lo, &lo2));
    }
}
