//! NodeResourcesBalancedAllocation: favours nodes whose resource usage fractions
//! (with the pod) are close to each other.
//!
//! Score = (1 − std) × 100 over the fractions `requested / allocatable` (each capped
//! at 1) of the configured resources, truncated to an integer, where the requested
//! sums use actual requests (`useRequested`, not the 100m / 200Mi non-zero defaults).
//! With two resources std is |f1 − f2| / 2; with more it is the population standard
//! deviation. Resources with zero allocatable, and scalar resources the pod does not
//! request or the node lacks, are left out. Best-effort pods (requesting none of the
//! resources) are skipped in PreScore, as in kube-scheduler 1.32+.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::node_resources_fit::{
    ScoreResource, decode_at, decode_resource_specs, default_resource_specs,
};
use crate::framework::{
    CycleState, MAX_NODE_SCORE, Plugin, PreScorePlugin, ScorePlugin, StateKey, Status,
};
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};

pub const NAME: &str = "NodeResourcesBalancedAllocation";
static PRE_SCORE_KEY: StateKey = StateKey::new("PreScoreNodeResourcesBalancedAllocation");

/// `NodeResourcesBalancedAllocationArgs`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct BalancedArgs {
    #[serde(default)]
    api_version: Option<Value>,
    #[serde(default)]
    kind: Option<Value>,
    #[serde(default)]
    resources: Option<Vec<Value>>,
}

/// NodeResourcesBalancedAllocation plugin.
#[derive(Debug)]
pub struct NodeResourcesBalancedAllocation {
    resources: Vec<ScoreResource>,
}

impl Default for NodeResourcesBalancedAllocation {
    fn default() -> Self {
        NodeResourcesBalancedAllocation {
            resources: vec![ScoreResource::Cpu, ScoreResource::Memory],
        }
    }
}

impl NodeResourcesBalancedAllocation {
    fn from_args(args: BalancedArgs) -> Result<Self, String> {
        let kind: Option<String> = decode_at(args.kind, "kind")?;
        if let Some(k) = kind.as_deref()
            && k != "NodeResourcesBalancedAllocationArgs"
        {
            return Err(format!(
                "kind: must be NodeResourcesBalancedAllocationArgs, got {k:?}"
            ));
        }
        let _: Option<String> = decode_at(args.api_version, "apiVersion")?;
        let specs = decode_resource_specs(args.resources, "resources")?;
        let specs = if specs.is_empty() {
            default_resource_specs()
        } else {
            specs
        };
        let mut resources = Vec::with_capacity(specs.len());
        for (i, r) in specs.iter().enumerate() {
            if specs[..i].iter().any(|o| o.name == r.name) {
                return Err(format!(
                    "resources[{i}].name: Duplicate value: {:?}",
                    r.name
                ));
            }
            // v1 defaulting turns an unset weight into 1; any other value is invalid.
            let w = if r.weight == 0 { 1 } else { r.weight };
            if w != 1 {
                return Err(format!(
                    "resources[{i}].weight: Invalid value: {w}: must be 1"
                ));
            }
            resources.push(ScoreResource::parse(&r.name));
        }
        Ok(NodeResourcesBalancedAllocation { resources })
    }

    fn pod_requests(&self, pod: &PodInfo) -> Vec<i64> {
        self.resources
            .iter()
            .map(|r| r.pod_request(pod, true))
            .collect()
    }

    /// Usage fraction of resource `i` with the pod, `None` when it is left out.
    #[inline]
    fn fraction(&self, i: usize, node: &NodeInfo, pod_request: i64) -> Option<f64> {
        let (alloc, req) = self.resources[i].alloc_requested(node, pod_request, true);
        if alloc == 0 {
            return None;
        }
        Some((req as f64 / alloc as f64).min(1.0))
    }

    /// `balancedResourceScorer`, without allocating: fractions are recomputed in a
    /// second pass when more than two resources take part.
    fn score_node(&self, node: &NodeInfo, pod_requests: &[i64]) -> i64 {
        let mut count = 0usize;
        let mut total = 0.0f64;
        let mut first = [0.0f64; 2];
        for (i, &req) in pod_requests.iter().enumerate() {
            if let Some(f) = self.fraction(i, node, req) {
                if count < 2 {
                    first[count] = f;
                }
                count += 1;
                total += f;
            }
        }
        let std = match count {
            0 | 1 => 0.0,
            2 => ((first[0] - first[1]) / 2.0).abs(),
            n => {
                let mean = total / n as f64;
                let mut sum = 0.0f64;
                for (i, &req) in pod_requests.iter().enumerate() {
                    if let Some(f) = self.fraction(i, node, req) {
                        sum += (f - mean) * (f - mean);
                    }
                }
                (sum / n as f64).sqrt()
            }
        };
        ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
    }
}

/// The pod's actual requests of the configured resources.
#[derive(Debug, Clone)]
struct PreScoreState {
    pod_requests: Vec<i64>,
}

crate::impl_plugin!(NodeResourcesBalancedAllocation, NAME, pre_score, score);

impl PreScorePlugin for NodeResourcesBalancedAllocation {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &Snapshot,
        _: &[&NodeInfo],
    ) -> Status {
        let pod_requests = self.pod_requests(pod);
        // Best-effort pods are not scored, so that they do not all pile onto the
        // node that happens to be most balanced (kubernetes#129138).
        if pod_requests.iter().all(|&r| r == 0) {
            return Status::skip();
        }
        state.put(&PRE_SCORE_KEY, PreScoreState { pod_requests });
        Status::success()
    }
}

impl ScorePlugin for NodeResourcesBalancedAllocation {
    fn score(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        _: &Snapshot,
    ) -> Result<i64, Status> {
        if let Some(s) = state.get::<PreScoreState>(&PRE_SCORE_KEY) {
            return Ok(self.score_node(node, &s.pod_requests));
        }
        let reqs = self.pod_requests(pod);
        if reqs.iter().all(|&r| r == 0) {
            return Ok(0);
        }
        Ok(self.score_node(node, &reqs))
    }

    fn node_local(&self) -> bool {
        true
    }
}

pub fn factory(args: Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String> {
    let a: BalancedArgs = super::decode_args(args)?;
    Ok(Arc::new(NodeResourcesBalancedAllocation::from_args(a)?))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testutil::{node, pod};

    fn plugin(args: serde_json::Value) -> NodeResourcesBalancedAllocation {
        NodeResourcesBalancedAllocation::from_args(serde_json::from_value(args).unwrap()).unwrap()
    }

    /// PreScore + Score; `None` when PreScore skips.
    fn score(p: &NodeResourcesBalancedAllocation, pod: &PodInfo, n: &NodeInfo) -> Option<i64> {
        let snap = Snapshot::new();
        let mut st = CycleState::new();
        let s = p.pre_score(&mut st, pod, &snap, &[n]);
        if s.is_skip() {
            assert_eq!(p.score(&CycleState::new(), pod, n, &snap).unwrap(), 0);
            return None;
        }
        assert!(s.is_success());
        let v = p.score(&st, pod, n, &snap).unwrap();
        assert_eq!(p.score(&CycleState::new(), pod, n, &snap).unwrap(), v);
        Some(v)
    }

    fn with_pods(mut n: NodeInfo, pods: &[PodInfo]) -> NodeInfo {
        for p in pods {
            n.add_pod(Arc::new(p.clone()));
        }
        n
    }

    #[test]
    fn two_resources_use_half_the_difference() {
        let p = NodeResourcesBalancedAllocation::default();
        let n = node("n").cpu("4").mem("8Gi").info();
        // cpu 1/4 = 0.25, mem 4/8 = 0.5: std = 0.125 → 87.5 → 87.
        assert_eq!(
            score(&p, &pod("p").cpu("1").mem("4Gi").info(), &n),
            Some(87)
        );
        // Perfect balance → 100.
        assert_eq!(
            score(&p, &pod("p").cpu("2").mem("4Gi").info(), &n),
            Some(100)
        );
        // With existing usage: cpu (1+1)/4 = 0.5, mem (1+1)/8 = 0.25 → 87.
        let used = with_pods(n, &[pod("a").cpu("1").mem("1Gi").info()]);
        assert_eq!(
            score(&p, &pod("p").cpu("1").mem("1Gi").info(), &used),
            Some(87)
        );
    }

    #[test]
    fn uses_actual_requests_not_non_zero_defaults() {
        let p = NodeResourcesBalancedAllocation::default();
        // Only memory requested: cpu 0/4 = 0 (no 100m default), mem 4/8 = 0.5
        // → std 0.25 → 75. (With the 100m default it would be 76.)
        let n = node("n").cpu("4").mem("8Gi").info();
        assert_eq!(score(&p, &pod("p").mem("4Gi").info(), &n), Some(75));
        // A best-effort pod already on the node adds nothing.
        let n2 = with_pods(n, &[pod("be").info()]);
        assert_eq!(score(&p, &pod("p").mem("4Gi").info(), &n2), Some(75));
    }

    #[test]
    fn best_effort_pods_are_skipped() {
        let p = NodeResourcesBalancedAllocation::default();
        let n = node("n").cpu("4").mem("8Gi").info();
        assert_eq!(score(&p, &pod("be").info(), &n), None);
        // Requesting only a resource outside the configured ones is still best effort
        // for this plugin.
        assert_eq!(
            score(&p, &pod("g").req("nvidia.com/gpu", "1").info(), &n),
            None
        );
    }

    #[test]
    fn fractions_are_capped_at_one() {
        let p = NodeResourcesBalancedAllocation::default();
        let n = node("n").cpu("1").mem("8Gi").info();
        // cpu 4/1 capped to 1, mem 2/8 = 0.25: std = 0.375 → 62.5 → 62.
        assert_eq!(
            score(&p, &pod("p").cpu("4").mem("2Gi").info(), &n),
            Some(62)
        );
    }

    #[test]
    fn three_resources_use_standard_deviation() {
        let p = plugin(json!({"resources": [
            {"name": "cpu", "weight": 1},
            {"name": "memory"},
            {"name": "nvidia.com/gpu", "weight": 1}
        ]}));
        let n = node("n")
            .cpu("4")
            .mem("8Gi")
            .alloc("nvidia.com/gpu", "4")
            .info();
        // cpu 1/4 = 0.25, mem 4/8 = 0.5, gpu 3/4 = 0.75: mean 0.5,
        // variance (0.0625 + 0 + 0.0625)/3 = 0.041667, std 0.204124 → 79.59 → 79.
        let pd = pod("p")
            .cpu("1")
            .mem("4Gi")
            .req("nvidia.com/gpu", "3")
            .info();
        assert_eq!(score(&p, &pd, &n), Some(79));
        // Pod without a gpu request: gpu left out → two resources → 87.
        let pd = pod("p").cpu("1").mem("4Gi").info();
        assert_eq!(score(&p, &pd, &n), Some(87));
        // Node without the gpu: left out too.
        let plain = node("m").cpu("4").mem("8Gi").info();
        let pd = pod("p")
            .cpu("1")
            .mem("4Gi")
            .req("nvidia.com/gpu", "3")
            .info();
        assert_eq!(score(&p, &pd, &plain), Some(87));
    }

    #[test]
    fn single_or_no_resource_gives_full_score() {
        let p = plugin(json!({"resources": [{"name": "cpu"}]}));
        let n = node("n").cpu("4").mem("8Gi").info();
        assert_eq!(score(&p, &pod("p").cpu("3").info(), &n), Some(100));
        // Node with no allocatable cpu: nothing takes part → std 0 → 100.
        let none = node("z").info();
        assert_eq!(score(&p, &pod("p").cpu("3").info(), &none), Some(100));
    }

    #[test]
    fn args_are_validated() {
        assert!(factory(None).is_ok());
        assert!(factory(Some(&json!({"resources": []}))).is_ok());
        let e = factory(Some(&json!({"resources": [{"name": "cpu", "weight": 2}]})))
            .err()
            .unwrap_or_default();
        assert!(e.contains("resources[0].weight"), "{e}");
        let e = factory(Some(
            &json!({"resources": [{"name": "cpu"}, {"name": "cpu"}]}),
        ))
        .err()
        .unwrap_or_default();
        assert!(e.contains("resources[1].name"), "{e}");
        let e = factory(Some(&json!({"resources": [{"name": 1}]})))
            .err()
            .unwrap_or_default();
        assert!(e.contains("resources[0]"), "{e}");
        let e = factory(Some(&json!({"bogus": true})))
            .err()
            .unwrap_or_default();
        assert!(e.contains("bogus"), "{e}");
    }
}
