//! API-server defaulting for objects read from files.
//!
//! A pod created through the API server is defaulted (`pkg/apis/core/v1/defaults.go`)
//! and mutated by admission plugins before any scheduler sees it; a pod read from a
//! manifest file is not. [`default_pod`] applies what kube-scheduler's decisions
//! depend on, so file input and API input give the same placements:
//!
//! - `SetDefaults_Pod`: per container and init container, every resource in `limits`
//!   without a `requests` entry gets the limit as its request (cpu, memory,
//!   ephemeral-storage, hugepages, extended resources).
//! - `SetDefaults_PodSpec`: `schedulerName` = `default-scheduler`; with
//!   `hostNetwork: true`, a container port without `hostPort` gets `hostPort` =
//!   `containerPort` (containers and init containers).
//! - `SetDefaults_ContainerPort`: `protocol` = `TCP`.
//! - `metadata.namespace` = `default`.
//! - The `DefaultTolerationSeconds` admission plugin: tolerations for
//!   `node.kubernetes.io/not-ready` and `node.kubernetes.io/unreachable` (NoExecute,
//!   300 s) unless the pod tolerates them already.
//! - The `Priority` admission plugin (applied by the loader, which knows the
//!   PriorityClasses): `priority` from `priorityClassName`, or from the
//!   `globalDefault` class, or 0; `preemptionPolicy` from the class.
//!
//! Not applied: LimitRange defaults and RuntimeClass overhead (they need objects the
//! loader does not read), pod-level `spec.resources` defaulting (alpha feature gate
//! in 1.33, off by default).

use k8s_openapi::api::core::v1::{Container, Pod, Toleration};

/// Toleration seconds the `DefaultTolerationSeconds` admission plugin uses.
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;
const NOT_READY: &str = "node.kubernetes.io/not-ready";
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

fn default_container(c: &mut Container, host_network: bool) {
    if let Some(res) = c.resources.as_mut()
        && let Some(limits) = res.limits.as_ref()
    {
        let requests = res.requests.get_or_insert_with(Default::default);
        for (k, v) in limits {
            requests.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    for p in c.ports.iter_mut().flatten() {
        if p.protocol.as_deref().is_none_or(str::is_empty) {
            p.protocol = Some("TCP".into());
        }
        if host_network && p.host_port.is_none_or(|h| h == 0) {
            p.host_port = Some(p.container_port);
        }
    }
}

fn tolerates(ts: &[Toleration], key: &str) -> bool {
    ts.iter().any(|t| {
        // v1 Toleration.ToleratesTaint for a taint with an empty value.
        let op_exists = t.operator.as_deref() == Some("Exists");
        let value_ok = op_exists || t.value.as_deref().is_none_or(str::is_empty);
        let key_ok = (t.key.as_deref() == Some(key) && value_ok)
            || (t.key.as_deref().is_none_or(str::is_empty) && op_exists);
        let effect_ok = t
            .effect
            .as_deref()
            .is_none_or(|e| e.is_empty() || e == "NoExecute");
        key_ok && effect_ok
    })
}

/// Applies the API server's defaulting (everything but Priority, see the module
/// docs) to a pod read from a file.
pub fn default_pod(pod: &mut Pod) {
    if pod.metadata.namespace.as_deref().is_none_or(str::is_empty) {
        pod.metadata.namespace = Some("default".into());
    }
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    if spec.scheduler_name.as_deref().is_none_or(str::is_empty) {
        spec.scheduler_name = Some("default-scheduler".into());
    }
    let host_network = spec.host_network == Some(true);
    for c in spec.containers.iter_mut() {
        default_container(c, host_network);
    }
    for c in spec.init_containers.iter_mut().flatten() {
        default_container(c, host_network);
    }
    let ts = spec.tolerations.get_or_insert_with(Vec::new);
    for key in [NOT_READY, UNREACHABLE] {
        if !tolerates(ts, key) {
            ts.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some("NoExecute".into()),
                toleration_seconds: Some(DEFAULT_TOLERATION_SECONDS),
                value: None,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        let mut p: Pod = serde_json::from_value(v).expect("pod");
        default_pod(&mut p);
        p
    }

    #[test]
    fn requests_default_to_limits_per_container_and_init_container() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "containers": [
                    {"name": "a", "resources": {"limits": {"cpu": "64", "memory": "256Gi", "example.com/fpga": "2"}}},
                    {"name": "b", "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "4", "memory": "1Gi"}}},
                    {"name": "c"}
                ],
                "initContainers": [{"name": "i", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]
            }
        }));
        let s = p.spec.as_ref().unwrap();
        let req = |i: usize| {
            s.containers[i]
                .resources
                .as_ref()
                .and_then(|r| r.requests.clone())
        };
        let a = req(0).unwrap();
        assert_eq!(a["cpu"].0, "64");
        assert_eq!(a["memory"].0, "256Gi");
        assert_eq!(a["example.com/fpga"].0, "2");
        let b = req(1).unwrap();
        assert_eq!(b["cpu"].0, "1", "an explicit request stays");
        assert_eq!(b["memory"].0, "1Gi");
        assert!(req(2).is_none());
        let i = s.init_containers.as_ref().unwrap()[0]
            .resources
            .as_ref()
            .unwrap()
            .requests
            .clone()
            .unwrap();
        assert_eq!(i["nvidia.com/gpu"].0, "1");
        assert_eq!(p.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(s.scheduler_name.as_deref(), Some("default-scheduler"));
    }

    #[test]
    fn ports_tolerations_and_scheduler_name() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "p", "namespace": "x"},
            "spec": {
                "schedulerName": "corral",
                "hostNetwork": true,
                "tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}],
                "containers": [{"name": "a", "ports": [{"containerPort": 8080}, {"containerPort": 53, "protocol": "UDP", "hostPort": 5353}]}]
            }
        }));
        let s = p.spec.as_ref().unwrap();
        let ports = s.containers[0].ports.as_ref().unwrap();
        assert_eq!(ports[0].protocol.as_deref(), Some("TCP"));
        assert_eq!(ports[0].host_port, Some(8080));
        assert_eq!(ports[1].protocol.as_deref(), Some("UDP"));
        assert_eq!(ports[1].host_port, Some(5353));
        assert_eq!(s.scheduler_name.as_deref(), Some("corral"));
        let ts = s.tolerations.as_ref().unwrap();
        assert_eq!(ts.len(), 2, "{ts:?}");
        assert_eq!(ts[0].toleration_seconds, Some(5), "kept");
        assert_eq!(ts[1].key.as_deref(), Some(NOT_READY));
        assert_eq!(ts[1].toleration_seconds, Some(300));
        // Without hostNetwork the host port stays unset.
        let p = pod(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80}]}],
                     "tolerations": [{"operator": "Exists"}]}
        }));
        let s = p.spec.as_ref().unwrap();
        assert_eq!(s.containers[0].ports.as_ref().unwrap()[0].host_port, None);
        assert_eq!(
            s.tolerations.as_ref().unwrap().len(),
            1,
            "tolerates everything"
        );
        // Equal with another value does not tolerate the (empty-valued) taint.
        let p = pod(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a"}],
                     "tolerations": [{"key": NOT_READY, "operator": "Equal", "value": "x"}]}
        }));
        assert_eq!(p.spec.unwrap().tolerations.unwrap().len(), 3);
    }
}
