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

// ---- GPU sharing: HAMi (Project-HAMi) and Volcano's vGPU device plugin ----

/// HAMi: number of vGPUs (each on a distinct card).
pub const HAMI_GPU: &str = "nvidia.com/gpu";
/// HAMi: device memory per card, MiB.
pub const HAMI_GPUMEM: &str = "nvidia.com/gpumem";
/// HAMi: device memory per card, percent of the card.
pub const HAMI_GPUMEM_PERCENTAGE: &str = "nvidia.com/gpumem-percentage";
/// HAMi: compute per card, percent (100 = the card exclusively).
pub const HAMI_GPUCORES: &str = "nvidia.com/gpucores";
/// HAMi's device plugin registers the node's cards here (JSON array of
/// `{id, count, devmem, devcore, type, health}`, or the older `id,count,devmem,devcore,type,numa,health:` list).
pub const HAMI_NODE_REGISTER: &str = "hami.io/node-nvidia-register";
/// Pod: cards assigned per container (`uuid,NVIDIA,memMiB,cores:` per card, `;` after each container).
pub const HAMI_DEVICES_ALLOCATED: &str = "hami.io/vgpu-devices-allocated";
/// Pod: the same, consumed by the device plugin container by container.
pub const HAMI_DEVICES_TO_ALLOCATE: &str = "hami.io/vgpu-devices-to-allocate";
/// Pod: node the cards were chosen on.
pub const HAMI_VGPU_NODE: &str = "hami.io/vgpu-node";
/// Pod: `allocating` until the device plugin allocated.
pub const HAMI_BIND_PHASE: &str = "hami.io/bind-phase";
/// Pod: bind time, Unix seconds.
pub const HAMI_BIND_TIME: &str = "hami.io/bind-time";

/// Volcano vGPU: number of vGPUs (each on a distinct card).
pub const VOLCANO_VGPU_NUMBER: &str = "volcano.sh/vgpu-number";
/// Volcano vGPU: device memory per card, MiB.
pub const VOLCANO_VGPU_MEMORY: &str = "volcano.sh/vgpu-memory";
/// Volcano vGPU: device memory per card, percent of the card.
pub const VOLCANO_VGPU_MEMORY_PERCENTAGE: &str = "volcano.sh/vgpu-memory-percentage";
/// Volcano vGPU: compute per card, percent (100 = the card exclusively).
pub const VOLCANO_VGPU_CORES: &str = "volcano.sh/vgpu-cores";
/// Per-card vGPU amounts (HAMi and Volcano vGPU): accounted on the registered
/// cards by GpuShare, never against node allocatable (the device plugins advertise
/// no comparable node resource; Volcano's deviceshare ignores the same names).
pub const VGPU_PER_CARD_AMOUNTS: &[&str] = &[
    HAMI_GPUMEM,
    HAMI_GPUMEM_PERCENTAGE,
    HAMI_GPUCORES,
    VOLCANO_VGPU_MEMORY,
    VOLCANO_VGPU_MEMORY_PERCENTAGE,
    VOLCANO_VGPU_CORES,
];
/// Volcano's vGPU device plugin registers the node's cards here
/// (`uuid,count,devmemMiB,type,health[,mode]:` per card).
pub const VOLCANO_NODE_REGISTER: &str = "volcano.sh/node-vgpu-register";
/// Pod: cards assigned (`uuid,NVIDIA,memMiB,cores:` per card, containers joined by `;`).
pub const VOLCANO_VGPU_IDS: &str = "volcano.sh/vgpu-ids-new";
/// Pod: the same, consumed by the device plugin.
pub const VOLCANO_DEVICES_TO_ALLOCATE: &str = "volcano.sh/devices-to-allocate";
/// Pod: node the cards were chosen on.
pub const VOLCANO_VGPU_NODE: &str = "volcano.sh/vgpu-node";
/// Pod: `allocating` until the device plugin allocated.
pub const VOLCANO_BIND_PHASE: &str = "volcano.sh/bind-phase";
/// Pod: bind time, Unix seconds.
pub const VOLCANO_BIND_TIME: &str = "volcano.sh/bind-time";
/// Pod: card types to use / avoid (comma-separated, case-insensitive substrings of
/// the registered type), read by HAMi and Volcano alike.
pub const ANN_USE_GPUTYPE: &str = "nvidia.com/use-gputype";
pub const ANN_NOUSE_GPUTYPE: &str = "nvidia.com/nouse-gputype";

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
