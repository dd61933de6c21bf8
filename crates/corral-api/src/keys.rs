//! Annotation and label keys, and the API versions of the batch CRDs. Every
//! component names a key through these constants; none spells it itself.

// ---- Batch CRDs ----

/// Volcano's Queue and PodGroup.
pub const VOLCANO_API: &str = "scheduling.volcano.sh/v1beta1";
/// scheduler-plugins' (coscheduling) PodGroup.
pub const COSCHED_API: &str = "scheduling.x-k8s.io/v1alpha1";

// ---- Volcano and scheduler-plugins keys ----

/// Pod annotation naming a Volcano PodGroup in the pod's namespace.
pub const ANN_GROUP_NAME: &str = "scheduling.k8s.io/group-name";
/// Pod label naming a coscheduling PodGroup in the pod's namespace.
pub const LABEL_POD_GROUP: &str = "scheduling.x-k8s.io/pod-group";
/// Pod annotation (or label; a non-empty annotation wins) giving the pod's task
/// role for `minTaskMember`; pods without it have the role `""`.
pub const ANN_TASK_SPEC: &str = "volcano.sh/task-spec";
/// Pod annotation naming the queue of a pod without a PodGroup.
pub const ANN_QUEUE_NAME: &str = "scheduling.volcano.sh/queue-name";
/// Annotations or labels (on a pod or its PodGroup; on one object the annotation
/// wins) that forbid evicting it when `"false"`.
pub const ANN_PREEMPTABLE: &[&str] = &["volcano.sh/preemptable", "corral.io/preemptable"];

// ---- Corral's own keys ----

/// Annotation (pod or PodGroup) protecting running pods younger than a duration.
pub const ANN_MIN_RUNTIME: &str = "corral.io/min-runtime";
/// Annotation (pod or PodGroup): evict the pod once it has run this long.
pub const ANN_MAX_RUNTIME: &str = "corral.io/max-runtime";
/// Annotation (PodGroup): evict the bound members of a gang that stayed below
/// minMember this long.
pub const ANN_PARTIAL_TIMEOUT: &str = "corral.io/partial-timeout";
/// Annotation giving a pod's run time in `simulate --timeline`.
pub const ANN_DURATION: &str = "corral.io/duration";
/// Node annotation prefix of health signals: `corral.io/health.cpu: "93.5"`.
pub const ANN_HEALTH_PREFIX: &str = "corral.io/health.";
/// Node health signals the data-plane agent writes.
pub const ANN_HEALTH_NET_UTIL: &str = "corral.io/health.net-util";
pub const ANN_HEALTH_NET_DROPS: &str = "corral.io/health.net-drops";
pub const ANN_HEALTH_NET_ERRORS: &str = "corral.io/health.net-errors";
/// Pod annotation: the pod's traffic class (data plane).
pub const ANN_TRAFFIC_CLASS: &str = "corral.io/traffic-class";
/// Pod annotation: fixed IPs requested from the CNI plugin.
pub const ANN_FIXED_IPS: &str = "corral.io/ips";

// ---- GPU sharing (tencent gpu-manager) and GPU feature discovery ----

/// Share of one card, percent (gpu-manager's resource name).
pub const VCUDA_CORE: &str = "tencent.com/vcuda-core";
/// GPU memory in 256 MiB units.
pub const VCUDA_MEMORY: &str = "tencent.com/vcuda-memory";
/// Card indices chosen for container `<i>` (suffix = index in `spec.containers`).
pub const ANNOTATION_IDX_PREFIX: &str = "tencent.com/predicate-gpu-idx-";
/// Node the cards were chosen on.
pub const ANNOTATION_NODE: &str = "tencent.com/predicate-node";
/// "false" until the device plugin allocated the cards.
pub const ANNOTATION_ASSIGNED: &str = "tencent.com/gpu-assigned";
/// Unix nanoseconds of the decision (the device plugin serves pods in this order).
pub const ANNOTATION_TIME: &str = "tencent.com/predicate-time";
/// NVIDIA GPU feature discovery's card-count node label.
pub const LABEL_GPU_COUNT: &str = "nvidia.com/gpu.count";

/// Core units of one card.
pub const CARD_CORE: i64 = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_keys_share_the_prefix() {
        for k in [
            ANN_HEALTH_NET_UTIL,
            ANN_HEALTH_NET_DROPS,
            ANN_HEALTH_NET_ERRORS,
        ] {
            assert!(k.starts_with(ANN_HEALTH_PREFIX), "{k}");
            assert!(k.len() > ANN_HEALTH_PREFIX.len(), "{k}");
        }
    }
}
