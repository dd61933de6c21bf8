//! ImageLocality: favours nodes that already hold the pod's container images.
//!
//! As in kube-scheduler, each image of the pod's containers and init containers that
//! is present on the node contributes `size × (nodes holding it / all nodes)` (so
//! images present everywhere count fully, rare ones little), the sum is clamped to
//! `[23 MB, 1000 MB × number of containers]` and mapped linearly onto 0..=100.

use std::sync::Arc;

use crate::framework::{
    CycleState, MAX_NODE_SCORE, Plugin, PreScorePlugin, ScorePlugin, StateKey, Status,
};
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};

pub const NAME: &str = "ImageLocality";
static PRE_SCORE_KEY: StateKey = StateKey::new("PreScoreImageLocality");

const MB: i64 = 1024 * 1024;
/// Below this summed (scaled) image size the score is 0.
pub const MIN_THRESHOLD: i64 = 23 * MB;
/// Per-container summed image size at or above which the score is 100.
pub const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

#[derive(Debug, Default)]
pub struct ImageLocality;

crate::impl_plugin!(ImageLocality, NAME, pre_score, score);

/// `scaledImageScore`: the image size weighted by its spread over the cluster.
fn scaled_image_score(size: i64, num_nodes: u32, total_nodes: usize) -> i64 {
    if total_nodes == 0 {
        return 0;
    }
    let spread = f64::from(num_nodes) / total_nodes as f64;
    (size as f64 * spread) as i64
}

/// `calculatePriority`: clamps the sum and maps it onto 0..=100.
fn calculate_priority(sum: i64, num_containers: usize) -> i64 {
    if num_containers == 0 {
        return 0;
    }
    let max_threshold = MAX_CONTAINER_THRESHOLD.saturating_mul(num_containers as i64);
    let clamped = if sum < MIN_THRESHOLD {
        MIN_THRESHOLD
    } else if sum > max_threshold {
        max_threshold
    } else {
        sum
    };
    MAX_NODE_SCORE * (clamped - MIN_THRESHOLD) / (max_threshold - MIN_THRESHOLD)
}

/// The pod's images present on at least one node, with their node counts, and its
/// number of containers; computed once per pod in PreScore.
#[derive(Debug, Clone, Default)]
struct PreScoreState {
    images: Vec<(String, u32)>,
    num_containers: usize,
}

fn pre_score_state(pod: &PodInfo, snap: &Snapshot) -> PreScoreState {
    PreScoreState {
        images: pod
            .images
            .iter()
            .filter_map(|img| {
                let n = snap.image_num_nodes(img);
                (n > 0).then(|| (img.clone(), n))
            })
            .collect(),
        num_containers: pod.spec().map_or(0, |s| {
            s.containers.len() + s.init_containers.as_ref().map_or(0, Vec::len)
        }),
    }
}

/// Nodes with at most this many images are scanned (length compared first) instead
/// of hashing each of the pod's image names into the node's image map.
const SCAN_IMAGES: usize = 16;

fn score_node(s: &PreScoreState, node: &NodeInfo, total_nodes: usize) -> i64 {
    let mut sum: i64 = 0;
    if !node.images.is_empty() && !s.images.is_empty() {
        let small = node.images.len() <= SCAN_IMAGES;
        for (img, num_nodes) in &s.images {
            let size = if small {
                node.images
                    .iter()
                    .find(|(k, _)| k.len() == img.len() && *k == img)
                    .map(|(_, &v)| v)
            } else {
                node.images.get(img).copied()
            };
            if let Some(size) = size {
                sum = sum.saturating_add(scaled_image_score(size, *num_nodes, total_nodes));
            }
        }
    }
    calculate_priority(sum, s.num_containers)
}

impl PreScorePlugin for ImageLocality {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
        _: &[&NodeInfo],
    ) -> Status {
        // Never Skip: kube-scheduler has no PreScore here and reports a score (possibly
        // 0) for every node.
        state.put(&PRE_SCORE_KEY, pre_score_state(pod, snap));
        Status::success()
    }
}

impl ScorePlugin for ImageLocality {
    fn score(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
    ) -> Result<i64, Status> {
        let total = snap.num_nodes();
        Ok(match state.get::<PreScoreState>(&PRE_SCORE_KEY) {
            Some(s) => score_node(s, node, total),
            None => score_node(&pre_score_state(pod, snap), node, total),
        })
    }

    fn node_local(&self) -> bool {
        true
    }
}

pub fn factory(args: Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String> {
    match args {
        None | Some(serde_json::Value::Null) => Ok(Arc::new(ImageLocality)),
        Some(serde_json::Value::Object(m))
            if m.keys().all(|k| k == "apiVersion" || k == "kind") =>
        {
            Ok(Arc::new(ImageLocality))
        }
        Some(_) => Err("this plugin takes no args".into()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testutil::{node, pod};

    /// A snapshot of `nodes`; returns the score of the pod on node `target`.
    fn score_on(nodes: Vec<NodeInfo>, p: &PodInfo, target: &str) -> i64 {
        let mut snap = Snapshot::new();
        for n in nodes {
            snap.upsert_node(n);
        }
        let n = snap.node(target).expect("node").clone();
        let mut st = CycleState::new();
        assert!(
            ImageLocality
                .pre_score(&mut st, p, &snap, &[&n])
                .is_success()
        );
        let v = ImageLocality.score(&st, p, &n, &snap).unwrap();
        // Without PreScore state the same score is computed.
        assert_eq!(
            ImageLocality
                .score(&CycleState::new(), p, &n, &snap)
                .unwrap(),
            v
        );
        v
    }

    #[test]
    fn priority_mapping_thresholds() {
        // Below 23 MB → 0; at the cap → 100; in between linear (truncated).
        assert_eq!(calculate_priority(0, 1), 0);
        assert_eq!(calculate_priority(22 * MB, 1), 0);
        assert_eq!(calculate_priority(1000 * MB, 1), 100);
        assert_eq!(calculate_priority(5000 * MB, 1), 100);
        // (500-23)/(1000-23) = 0.4882 → 48.
        assert_eq!(calculate_priority(500 * MB, 1), 48);
        // Two containers: cap 2000 MB; (1000-23)/(2000-23) = 0.4942 → 49.
        assert_eq!(calculate_priority(1000 * MB, 2), 49);
        // No containers: no division by zero.
        assert_eq!(calculate_priority(MB * 100, 0), 0);
    }

    #[test]
    fn image_present_on_all_nodes_counts_fully() {
        let nodes = vec![
            node("a").image("big:v1", 500 * MB).info(),
            node("b").image("big:v1", 500 * MB).info(),
            node("c").info(),
        ];
        let p = pod("p").image("big:v1").info();
        // On a: 500 MB × 2/3 = 333.33 MB → (333.33-23)/(1000-23) × 100 = 31.76 → 31.
        assert_eq!(score_on(nodes.clone(), &p, "a"), 31);
        // c does not have it → 0.
        assert_eq!(score_on(nodes, &p, "c"), 0);
    }

    #[test]
    fn small_images_score_zero_and_huge_images_cap_at_100() {
        let nodes = vec![
            node("a")
                .image("small:v1", 20 * MB)
                .image("huge:v1", 3000 * MB)
                .info(),
        ];
        assert_eq!(
            score_on(nodes.clone(), &pod("p").image("small:v1").info(), "a"),
            0
        );
        assert_eq!(score_on(nodes, &pod("p").image("huge:v1").info(), "a"), 100);
    }

    #[test]
    fn names_are_normalized_and_init_containers_count() {
        // Node lists "nginx" (→ nginx:latest); pod uses "nginx:latest" and an init
        // container with "nginx". Both match: 2 × 600 MB = 1200 MB with 2 containers:
        // (1200-23)/(2000-23) × 100 = 59.53 → 59.
        let nodes = vec![node("a").image("nginx", 600 * MB).info()];
        let mut b = pod("p").image("nginx:latest");
        b.0["spec"]["initContainers"] = json!([{"name": "i", "image": "nginx"}]);
        assert_eq!(score_on(nodes.clone(), &b.info(), "a"), 59);
        // A different tag does not match.
        let other = pod("p").image("nginx:1.25").info();
        assert_eq!(score_on(nodes, &other, "a"), 0);
    }

    #[test]
    fn args_are_rejected() {
        assert!(factory(None).is_ok());
        assert!(factory(Some(&json!({}))).is_ok());
        assert!(factory(Some(&json!({"x": 1}))).is_err());
    }
}
