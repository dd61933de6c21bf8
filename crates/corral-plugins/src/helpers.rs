//! Helpers shared by plugins (taint/toleration matching, default normalization).

use k8s_openapi::api::core::v1::{Taint, Toleration};

use crate::framework::{MAX_NODE_SCORE, NodeScore};

/// `Toleration.ToleratesTaint`: key/effect/operator semantics of core/v1.
pub fn tolerates(t: &Toleration, key: &str, value: Option<&str>, effect: &str) -> bool {
    if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty())
        && e != effect
    {
        return false;
    }
    if let Some(k) = t.key.as_deref().filter(|k| !k.is_empty())
        && k != key
    {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        // An empty key with Exists matches every taint.
        "Exists" => true,
        "" | "Equal" => t.value.as_deref().unwrap_or("") == value.unwrap_or(""),
        _ => false,
    }
}

/// True when any toleration tolerates `taint`.
pub fn tolerates_taint(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations
        .iter()
        .any(|t| tolerates(t, &taint.key, taint.value.as_deref(), &taint.effect))
}

/// `FindMatchingUntoleratedTaint`: the first taint accepted by `filter` that no
/// toleration tolerates.
pub fn find_untolerated_taint<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    filter: impl Fn(&Taint) -> bool,
) -> Option<&'a Taint> {
    taints
        .iter()
        .find(|t| filter(t) && !tolerates_taint(tolerations, t))
}

/// `DoNotScheduleTaintsFilterFunc`: taints with effect NoSchedule or NoExecute.
#[inline]
pub fn is_do_not_schedule_taint(t: &Taint) -> bool {
    matches!(t.effect.as_str(), "NoSchedule" | "NoExecute")
}

/// `helper.DefaultNormalizeScore`: scales scores to 0..=max by the highest score,
/// optionally reversed.
pub fn default_normalize_score(max_priority: i64, reverse: bool, scores: &mut [NodeScore]) {
    let max_count = scores.iter().map(|s| s.score).max().unwrap_or(0);
    if max_count == 0 {
        if reverse {
            for s in scores.iter_mut() {
                s.score = max_priority;
            }
        }
        return;
    }
    for s in scores.iter_mut() {
        let mut v = max_priority * s.score / max_count;
        if reverse {
            v = max_priority - v;
        }
        s.score = v;
    }
}

/// Default normalization to [`MAX_NODE_SCORE`].
pub fn normalize_to_max(reverse: bool, scores: &mut [NodeScore]) {
    default_normalize_score(MAX_NODE_SCORE, reverse, scores)
}

pub use corral_core::fxhash::FxHasher;

#[cfg(test)]
mod tests {
    use super::*;

    fn tol(v: serde_json::Value) -> Toleration {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn toleration_semantics() {
        let t = tol(
            serde_json::json!({"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"}),
        );
        assert!(tolerates(&t, "k", Some("v"), "NoSchedule"));
        assert!(!tolerates(&t, "k", Some("w"), "NoSchedule"));
        assert!(!tolerates(&t, "k", Some("v"), "NoExecute"));
        let all = tol(serde_json::json!({"operator": "Exists"}));
        assert!(tolerates(&all, "any", Some("x"), "NoExecute"));
        let ex = tol(serde_json::json!({"key": "k", "operator": "Exists"}));
        assert!(tolerates(&ex, "k", None, "PreferNoSchedule"));
        assert!(!tolerates(&ex, "j", None, "PreferNoSchedule"));
        let default_op = tol(serde_json::json!({"key": "k"}));
        assert!(tolerates(&default_op, "k", None, "NoSchedule"));
        assert!(!tolerates(&default_op, "k", Some("v"), "NoSchedule"));
    }

    #[test]
    fn default_normalize() {
        let mut s = vec![
            NodeScore { node: 0, score: 2 },
            NodeScore { node: 1, score: 4 },
            NodeScore { node: 2, score: 0 },
        ];
        default_normalize_score(100, false, &mut s);
        assert_eq!(s.iter().map(|x| x.score).collect::<Vec<_>>(), [50, 100, 0]);
        let mut s = vec![
            NodeScore { node: 0, score: 1 },
            NodeScore { node: 1, score: 0 },
        ];
        default_normalize_score(100, true, &mut s);
        assert_eq!(s.iter().map(|x| x.score).collect::<Vec<_>>(), [0, 100]);
        let mut z = vec![NodeScore { node: 0, score: 0 }];
        default_normalize_score(100, true, &mut z);
        assert_eq!(z[0].score, 100);
    }
}
