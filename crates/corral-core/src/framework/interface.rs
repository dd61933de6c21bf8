//! One trait per scheduling framework extension point.
//!
//! A plugin is a struct implementing [`Plugin`] plus the extension-point traits it
//! supports; [`Plugin`]'s `as_*` casts tell the framework which ones those are (the
//! default returns `None`). All calls take the immutable [`Snapshot`]: plugins never
//! mutate cluster state, only their own [`CycleState`] entries.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::{CycleState, Status};
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};

/// Highest score a Score plugin may return after normalization.
pub const MAX_NODE_SCORE: i64 = 100;
/// Lowest score.
pub const MIN_NODE_SCORE: i64 = 0;

/// A pod waiting in the scheduling queue.
#[derive(Debug, Clone)]
pub struct QueuedPodInfo {
    pub pod: Arc<PodInfo>,
    /// Number of scheduling attempts so far.
    pub attempts: u32,
}

/// Nodes a PreFilter plugin restricts the pod to (`None` = all nodes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreFilterResult {
    pub node_names: Option<BTreeSet<String>>,
}

impl PreFilterResult {
    pub fn all_nodes() -> Self {
        PreFilterResult { node_names: None }
    }

    /// Intersection of two results.
    pub fn merge(self, other: PreFilterResult) -> PreFilterResult {
        match (self.node_names, other.node_names) {
            (None, x) | (x, None) => PreFilterResult { node_names: x },
            (Some(a), Some(b)) => PreFilterResult {
                node_names: Some(a.intersection(&b).cloned().collect()),
            },
        }
    }
}

/// A node's score from one plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeScore {
    /// Index of the node in the snapshot.
    pub node: usize,
    pub score: i64,
}

/// Outcome of PostFilter (e.g. a preemption nomination).
#[derive(Debug, Clone, Default)]
pub struct PostFilterResult {
    pub nominated_node: Option<String>,
    /// Pods to evict (keys), if any.
    pub victims: Vec<String>,
}

/// Filter outcome per node index, for PostFilter.
pub type NodeStatuses = Vec<(usize, Status)>;

/// Base trait of every plugin.
pub trait Plugin: Send + Sync {
    fn name(&self) -> &'static str;

    fn as_queue_sort(self: Arc<Self>) -> Option<Arc<dyn QueueSortPlugin>> {
        None
    }
    fn as_pre_filter(self: Arc<Self>) -> Option<Arc<dyn PreFilterPlugin>> {
        None
    }
    fn as_filter(self: Arc<Self>) -> Option<Arc<dyn FilterPlugin>> {
        None
    }
    fn as_post_filter(self: Arc<Self>) -> Option<Arc<dyn PostFilterPlugin>> {
        None
    }
    fn as_pre_score(self: Arc<Self>) -> Option<Arc<dyn PreScorePlugin>> {
        None
    }
    fn as_score(self: Arc<Self>) -> Option<Arc<dyn ScorePlugin>> {
        None
    }
    fn as_reserve(self: Arc<Self>) -> Option<Arc<dyn ReservePlugin>> {
        None
    }
    fn as_permit(self: Arc<Self>) -> Option<Arc<dyn PermitPlugin>> {
        None
    }
    fn as_pre_bind(self: Arc<Self>) -> Option<Arc<dyn PreBindPlugin>> {
        None
    }
    fn as_bind(self: Arc<Self>) -> Option<Arc<dyn BindPlugin>> {
        None
    }
    fn as_post_bind(self: Arc<Self>) -> Option<Arc<dyn PostBindPlugin>> {
        None
    }
}

/// Implements [`Plugin`] for a plugin type: its name and, once each, the extension
/// points it implements (the framework reaches them through the `as_*` casts).
///
/// ```text
/// corral_core::impl_plugin!(NodeAffinity, NAME, pre_filter, filter, pre_score, score);
/// ```
///
/// Points: `queue_sort`, `pre_filter`, `filter`, `post_filter`, `pre_score`, `score`,
/// `reserve`, `permit`, `pre_bind`, `bind`, `post_bind`; the type must implement the
/// matching trait (`FilterPlugin` for `filter`, ...).
#[macro_export]
macro_rules! impl_plugin {
    ($ty:ty, $name:expr $(, $point:ident)* $(,)?) => {
        impl $crate::framework::Plugin for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            $($crate::impl_plugin!(@point $point);)*
        }
    };
    (@point queue_sort) => { $crate::impl_plugin!(@cast as_queue_sort, QueueSortPlugin); };
    (@point pre_filter) => { $crate::impl_plugin!(@cast as_pre_filter, PreFilterPlugin); };
    (@point filter) => { $crate::impl_plugin!(@cast as_filter, FilterPlugin); };
    (@point post_filter) => { $crate::impl_plugin!(@cast as_post_filter, PostFilterPlugin); };
    (@point pre_score) => { $crate::impl_plugin!(@cast as_pre_score, PreScorePlugin); };
    (@point score) => { $crate::impl_plugin!(@cast as_score, ScorePlugin); };
    (@point reserve) => { $crate::impl_plugin!(@cast as_reserve, ReservePlugin); };
    (@point permit) => { $crate::impl_plugin!(@cast as_permit, PermitPlugin); };
    (@point pre_bind) => { $crate::impl_plugin!(@cast as_pre_bind, PreBindPlugin); };
    (@point bind) => { $crate::impl_plugin!(@cast as_bind, BindPlugin); };
    (@point post_bind) => { $crate::impl_plugin!(@cast as_post_bind, PostBindPlugin); };
    (@cast $method:ident, $trait:ident) => {
        fn $method(
            self: ::std::sync::Arc<Self>,
        ) -> ::std::option::Option<::std::sync::Arc<dyn $crate::framework::$trait>> {
            ::std::option::Option::Some(self)
        }
    };
}

/// Orders the scheduling queue.
pub trait QueueSortPlugin: Plugin {
    /// True when `a` should be scheduled before `b`.
    fn less(&self, a: &QueuedPodInfo, b: &QueuedPodInfo) -> bool;
}

/// Runs once per pod before filtering; may restrict nodes, reject the pod, or Skip
/// (then its Filter is not called for this pod).
pub trait PreFilterPlugin: Plugin {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
    ) -> (Option<PreFilterResult>, Status);

    /// Incremental updates of the PreFilter state (`PreFilterExtensions`).
    fn extensions(&self) -> Option<&dyn PreFilterExtensions> {
        None
    }

    /// Whether this PreFilter's Skip can change when pods (or assumed volumes) are
    /// added to the snapshot. `false` declares that it skips a pod or not by the pod
    /// and the plugin's configuration alone: the batch committer then does not ask
    /// again, for a pod evaluated before other pods were committed, whether the
    /// plugin still skips it. Default `true` (always asked again).
    fn skip_depends_on_pods(&self) -> bool {
        true
    }
}

/// Incrementally updates a plugin's PreFilter state when a pod is added to / removed
/// from a node after PreFilter ran (batch commits, preemption what-ifs).
pub trait PreFilterExtensions: Send + Sync {
    fn add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        added: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
    ) -> Status;
    fn remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        removed: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
    ) -> Status;
}

/// Decides whether the pod fits one node. Called in parallel across nodes.
pub trait FilterPlugin: Plugin {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo, snap: &Snapshot)
    -> Status;

    /// Bulk Filter (optional), for plugins whose verdict is a function of a node's
    /// topology domain or of a per-node array (PodTopologySpread, InterPodAffinity):
    /// the verdict for every node at once. On `true`, bit `i % 64` of `out[i / 64]`
    /// is set exactly when `filter(state, pod, &snap.nodes()[i], snap)` would return
    /// Success (`out.len() == snap.num_nodes().div_ceil(64)`; `out` arrives zeroed;
    /// bits past the last node stay clear). The engine may then test one bit per
    /// node and call `filter` only for rejected nodes whose status it must report.
    /// `false` (the default): not available for this pod and state; `out` is
    /// ignored and `filter` runs per node. May be called after PreFilter and again
    /// after AddPod/RemovePod changed `state`; it must agree with `filter` exactly
    /// (each implementing plugin has a randomized test that checks it node by node).
    /// A cleared bit is read as a rejection: while `filter_mask` returns `true`,
    /// `filter` must not return Error for any node (return `false` instead).
    fn filter_mask(
        &self,
        _state: &CycleState,
        _pod: &PodInfo,
        _snap: &Snapshot,
        _out: &mut [u64],
    ) -> bool {
        false
    }
}

/// Runs when no node is feasible (e.g. preemption).
pub trait PostFilterPlugin: Plugin {
    fn post_filter(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        statuses: &NodeStatuses,
    ) -> (Option<PostFilterResult>, Status);
}

/// Runs once per pod before scoring, with the feasible nodes; may Skip.
pub trait PreScorePlugin: Plugin {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        nodes: &[&NodeInfo],
    ) -> Status;
}

/// Scores one feasible node. Called in parallel across nodes.
pub trait ScorePlugin: Plugin {
    fn score(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
    ) -> Result<i64, Status>;

    /// Scores the snapshot's nodes at `positions` (indices into `snap.nodes()`),
    /// appending one [`NodeScore`] per position, in order: exactly what [`Self::score`]
    /// gives on each node (the first error is returned). A plugin may override it to
    /// read its cycle state once per pod instead of once per node, and to look a
    /// node's data up by position.
    fn score_positions(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        positions: &[usize],
        out: &mut Vec<NodeScore>,
    ) -> Result<(), Status> {
        let all = snap.nodes();
        for &i in positions {
            let score = self.score(state, pod, &all[i], snap)?;
            out.push(NodeScore { node: i, score });
        }
        Ok(())
    }

    /// Normalization of this plugin's scores, if it has one.
    fn normalize(&self) -> Option<&dyn NormalizeScorePlugin> {
        None
    }

    /// True when the raw score (before normalization) depends only on the pod, its
    /// PreScore state and the node's own state — not on which other nodes are being
    /// scored nor on pods elsewhere. Such raw scores are cached per equivalence
    /// class within a batch; when the plugin also has no normalization the batch
    /// committer recomputes them against the latest node state (see
    /// `scheduler::revalidate`).
    fn node_local(&self) -> bool {
        false
    }

    /// Node-local and without normalization: the final score of a node can be
    /// recomputed on its own.
    fn rescorable(&self) -> bool {
        self.node_local() && self.normalize().is_none()
    }
}

/// Normalizes a Score plugin's scores across all scored nodes to 0..=100.
pub trait NormalizeScorePlugin: Send + Sync {
    fn normalize_score(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        scores: &mut [NodeScore],
    ) -> Status;

    /// True when a node's normalized score depends only on its own raw score and
    /// the highest raw score of the scored set (kube's `DefaultNormalizeScore`):
    /// a set whose raw scores are all equal then normalizes every node to the
    /// value a one-node set with that score gets, whatever the set's size or
    /// nodes. Lets the class score cache normalize such a set once.
    fn by_max_only(&self) -> bool {
        false
    }
}

/// Reserves resources for the pod on the chosen node; Unreserve rolls back.
pub trait ReservePlugin: Plugin {
    fn reserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str, snap: &Snapshot)
    -> Status;
    fn unreserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str, snap: &Snapshot);
}

/// Approves, rejects or delays binding.
pub trait PermitPlugin: Plugin {
    fn permit(&self, state: &mut CycleState, pod: &PodInfo, node: &str) -> (Status, Duration);
}

/// Work before binding (e.g. volumes).
pub trait PreBindPlugin: Plugin {
    fn pre_bind(&self, state: &mut CycleState, pod: &PodInfo, node: &str) -> Status;
}

/// Binds the pod; `Skip` passes to the next Bind plugin.
pub trait BindPlugin: Plugin {
    fn bind(&self, state: &mut CycleState, pod: &PodInfo, node: &str) -> Status;
}

/// Informational, after a successful bind.
pub trait PostBindPlugin: Plugin {
    fn post_bind(&self, state: &mut CycleState, pod: &PodInfo, node: &str);
}
