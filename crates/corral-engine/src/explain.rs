//! `--explain`: every node evaluated for one pod (no sampling, every Filter run),
//! with per-plugin scores.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::framework::{CycleState, Framework};
use crate::snapshot::{PodInfo, Snapshot};

/// A filter failure in an explanation.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FilterFailure {
    pub plugin: String,
    pub reason: String,
}

/// One node in an explanation.
#[derive(Debug, Clone, Serialize)]
pub struct ExplainNode {
    pub node: String,
    pub feasible: bool,
    pub filter_failures: Vec<FilterFailure>,
    /// Normalized 0..=100 scores per plugin, before weights.
    pub scores: BTreeMap<String, i64>,
    /// Weighted sum of the scores.
    pub total: f64,
}

/// Why a pod went where it went (all nodes evaluated, no sampling).
#[derive(Debug, Clone, Serialize)]
pub struct Explain {
    pub pod: String,
    pub selected: Option<String>,
    pub nodes: Vec<ExplainNode>,
}

/// Evaluates all nodes for an explanation (no sampling; every filter run).
pub(crate) fn explain(
    fw: &Framework,
    snap: &Snapshot,
    pod: &PodInfo,
    selected: Option<String>,
) -> Explain {
    let mut state = CycleState::new();
    let nodes = snap.nodes();
    let mut out = Explain {
        pod: pod.key.clone(),
        selected,
        nodes: Vec::new(),
    };
    let pre = fw.run_pre_filter(&mut state, pod, snap);
    let mut feasible = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let mut failures: Vec<FilterFailure> = Vec::new();
        match &pre {
            Err(st) => failures.push(FilterFailure {
                plugin: st.plugin.to_string(),
                reason: st.message(),
            }),
            Ok(p) => {
                if let Some(set) = &p.nodes
                    && !set.contains(&*n.name)
                {
                    failures.push(FilterFailure {
                        plugin: p.restricting_plugins.join(","),
                        reason: format!(
                            "node(s) didn't satisfy plugin(s) [{}]",
                            p.restricting_plugins.join(" ")
                        ),
                    });
                }
                for st in fw.run_filter_all(&state, pod, n, snap) {
                    failures.push(FilterFailure {
                        plugin: st.plugin.to_string(),
                        reason: st.message(),
                    });
                }
            }
        }
        if failures.is_empty() {
            feasible.push(i);
        }
        out.nodes.push(ExplainNode {
            node: n.name.to_string(),
            feasible: failures.is_empty(),
            filter_failures: failures,
            scores: BTreeMap::new(),
            total: 0.0,
        });
    }
    if feasible.len() > 1 {
        let refs: Vec<&crate::snapshot::NodeInfo> = feasible.iter().map(|&i| &*nodes[i]).collect();
        if fw.run_pre_score(&mut state, pod, snap, &refs).is_ok()
            && let Ok(scores) = fw.run_score(&state, pod, snap, &feasible)
        {
            for (j, &i) in feasible.iter().enumerate() {
                let mut total = 0i64;
                for (ws, s) in fw.score.iter().zip(&scores) {
                    if let Some(s) = s {
                        out.nodes[i]
                            .scores
                            .insert(ws.plugin.name().to_string(), s[j]);
                        total += s[j] * ws.weight;
                    }
                }
                out.nodes[i].total = total as f64;
            }
        }
    }
    out
}
