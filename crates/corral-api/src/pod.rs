//! Pod identity and lifecycle: one definition used by `simulate`, `run`, the
//! extender and the data plane.
//!
//! - *finished*: phase Succeeded or Failed — the pod holds no resources;
//! - *terminating*: a deletionTimestamp is set — a bound terminating pod still holds
//!   its node's resources until the kubelet stops it;
//! - *bound*: `spec.nodeName` is set;
//! - *done* (for scheduling): finished, or terminating before it was bound — nothing
//!   will ever run it.

use k8s_openapi::api::core::v1::Pod;

/// The key of a pod: `namespace/name`.
pub fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The key of a pod object (namespace `default` when unset).
pub fn pod_key(p: &Pod) -> String {
    key(
        p.metadata.namespace.as_deref().unwrap_or("default"),
        p.metadata.name.as_deref().unwrap_or(""),
    )
}

/// Phase Succeeded or Failed.
pub fn is_finished(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// A deletionTimestamp is set.
pub fn is_terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

/// `spec.nodeName` is set (and not empty).
pub fn is_bound(p: &Pod) -> bool {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
}

/// Finished, or terminating before it was bound.
pub fn is_done(p: &Pod) -> bool {
    is_finished(p) || (is_terminating(p) && !is_bound(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(phase: Option<&str>, node: Option<&str>, deleting: bool) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("a".into());
        if deleting {
            p.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        }
        p.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            node_name: node.map(str::to_string),
            ..Default::default()
        });
        p.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: phase.map(str::to_string),
            ..Default::default()
        });
        p
    }

    #[test]
    fn key_defaults_the_namespace() {
        assert_eq!(pod_key(&pod(None, None, false)), "default/a");
        assert_eq!(key("ns", "b"), "ns/b");
    }

    #[test]
    fn lifecycle_table() {
        // (phase, node, deleting) -> (finished, terminating, bound, done)
        let cases = [
            (
                Some("Running"),
                Some("n"),
                false,
                (false, false, true, false),
            ),
            (
                Some("Succeeded"),
                Some("n"),
                false,
                (true, false, true, true),
            ),
            (Some("Failed"), None, false, (true, false, false, true)),
            (Some("Pending"), None, true, (false, true, false, true)),
            // Bound and terminating: still holds its node until the kubelet stops it.
            (Some("Running"), Some("n"), true, (false, true, true, false)),
            (None, Some(""), true, (false, true, false, true)),
        ];
        for (phase, node, deleting, want) in cases {
            let p = pod(phase, node, deleting);
            assert_eq!(
                (
                    is_finished(&p),
                    is_terminating(&p),
                    is_bound(&p),
                    is_done(&p)
                ),
                want,
                "{phase:?} {node:?} {deleting}"
            );
        }
    }
}
