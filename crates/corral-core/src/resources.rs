//! Resource vectors and the pod request computation kube-scheduler uses.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KQuantity;

use crate::quantity::parse_resource;

/// kube-scheduler's default CPU request (millicores) for scoring a container without one.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// kube-scheduler's default memory request (bytes) for scoring a container without one.
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

pub const CPU: &str = "cpu";
pub const MEMORY: &str = "memory";
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";
pub const PODS: &str = "pods";

/// Interned resource name for extended/scalar resources.
pub type ResourceName = Arc<str>;

/// A resource vector (`framework.Resource` in kube-scheduler).
#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    /// Allowed pod number (only meaningful for allocatable).
    pub pods: i64,
    /// Extended resources, hugepages-*, etc., sorted by name.
    pub scalar: Vec<(ResourceName, i64)>,
}

/// True for resources kube-scheduler treats as scalar (everything but cpu, memory,
/// ephemeral-storage and pods).
pub fn is_scalar_resource(name: &str) -> bool {
    !matches!(name, CPU | MEMORY | EPHEMERAL_STORAGE | PODS)
}

/// True for hugepages resources (`hugepages-<size>`).
pub fn is_hugepages(name: &str) -> bool {
    name.starts_with("hugepages-")
}

/// True for extended resources: fully-qualified names outside `kubernetes.io/` (and not
/// `requests.` quota names).
pub fn is_extended_resource(name: &str) -> bool {
    name.contains('/') && !name.contains("kubernetes.io/") && !name.starts_with("requests.")
}

impl Resources {
    /// Value of resource `name` (0 when absent).
    pub fn get(&self, name: &str) -> i64 {
        match name {
            CPU => self.milli_cpu,
            MEMORY => self.memory,
            EPHEMERAL_STORAGE => self.ephemeral_storage,
            PODS => self.pods,
            _ => self.scalar_value(name),
        }
    }

    /// Value of scalar resource `name` (0 when absent).
    pub fn scalar_value(&self, name: &str) -> i64 {
        match self.scalar.binary_search_by(|(n, _)| (**n).cmp(name)) {
            Ok(i) => self.scalar[i].1,
            Err(_) => 0,
        }
    }

    /// True when resource `name` is present (for scalars: has an entry).
    pub fn has(&self, name: &str) -> bool {
        match name {
            CPU | MEMORY | EPHEMERAL_STORAGE | PODS => true,
            _ => self
                .scalar
                .binary_search_by(|(n, _)| (**n).cmp(name))
                .is_ok(),
        }
    }

    /// Sets resource `name` to `v`.
    pub fn set(&mut self, name: &str, v: i64) {
        match name {
            CPU => self.milli_cpu = v,
            MEMORY => self.memory = v,
            EPHEMERAL_STORAGE => self.ephemeral_storage = v,
            PODS => self.pods = v,
            _ => match self.scalar.binary_search_by(|(n, _)| (**n).cmp(name)) {
                Ok(i) => self.scalar[i].1 = v,
                Err(i) => self.scalar.insert(i, (Arc::from(name), v)),
            },
        }
    }

    fn combine(&mut self, other: &Resources, f: impl Fn(i64, i64) -> i64) {
        self.milli_cpu = f(self.milli_cpu, other.milli_cpu);
        self.memory = f(self.memory, other.memory);
        self.ephemeral_storage = f(self.ephemeral_storage, other.ephemeral_storage);
        self.pods = f(self.pods, other.pods);
        for (n, v) in &other.scalar {
            let cur = self.scalar_value(n);
            let nv = f(cur, *v);
            self.set(n, nv);
        }
    }

    /// Adds `other` component-wise.
    pub fn add(&mut self, other: &Resources) {
        self.combine(other, |a, b| a.saturating_add(b));
    }

    /// Subtracts `other` component-wise.
    pub fn sub(&mut self, other: &Resources) {
        self.combine(other, |a, b| a.saturating_sub(b));
    }

    /// Component-wise maximum with `other`.
    pub fn set_max(&mut self, other: &Resources) {
        self.combine(other, i64::max);
    }

    /// True when every component is zero.
    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.iter().all(|(_, v)| *v == 0)
    }

    /// Builds a resource vector from a Kubernetes ResourceList. `field` names the list
    /// in error messages (e.g. `spec.containers[0].resources.requests`).
    pub fn from_list(
        list: &BTreeMap<String, KQuantity>,
        field: &str,
    ) -> Result<Resources, FieldError> {
        let mut r = Resources::default();
        for (name, q) in list {
            let v = parse_resource(name, &q.0).map_err(|e| FieldError {
                field: format!("{field}[{name}]"),
                message: e.to_string(),
            })?;
            if v < 0 {
                return Err(FieldError {
                    field: format!("{field}[{name}]"),
                    message: format!("quantity {:?} must not be negative", q.0),
                });
            }
            r.set(name, v);
        }
        Ok(r)
    }
}

/// An error in one field of a Kubernetes object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "field {}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

/// The requests of a pod as kube-scheduler computes them.
#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub struct PodRequests {
    /// Effective requests (`resourcehelper.PodRequests`): max(sum of containers +
    /// sidecars, max init container) + overhead, pod-level resources when set.
    pub requests: Resources,
    /// CPU (millicores) with 100m substituted for containers without a CPU request.
    pub non_zero_milli_cpu: i64,
    /// Memory with 200Mi substituted for containers without a memory request.
    pub non_zero_memory: i64,
}

fn container_requests(c: &Container, field: &str) -> Result<(Resources, bool, bool), FieldError> {
    match c.resources.as_ref().and_then(|r| r.requests.as_ref()) {
        Some(req) => {
            let r = Resources::from_list(req, &format!("{field}.resources.requests"))?;
            Ok((r, req.contains_key(CPU), req.contains_key(MEMORY)))
        }
        None => Ok((Resources::default(), false, false)),
    }
}

/// Aggregates containers/init containers like `resourcehelper.PodRequests`, optionally
/// substituting defaults for missing cpu/memory requests (non-zero variant).
fn aggregate(
    containers: &[(Resources, bool, bool)],
    inits: &[((Resources, bool, bool), bool)],
    non_zero: bool,
) -> Resources {
    let fix = |(r, has_cpu, has_mem): &(Resources, bool, bool)| {
        let mut r = r.clone();
        if non_zero {
            if !has_cpu {
                r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
            }
            if !has_mem {
                r.memory = DEFAULT_MEMORY_REQUEST;
            }
        }
        r
    };
    let mut reqs = Resources::default();
    for c in containers {
        reqs.add(&fix(c));
    }
    let mut restartable = Resources::default();
    let mut init_max = Resources::default();
    for (c, sidecar) in inits {
        let mut cr = fix(c);
        if *sidecar {
            reqs.add(&cr);
            restartable.add(&cr);
            cr = restartable.clone();
        } else {
            cr.add(&restartable);
        }
        init_max.set_max(&cr);
    }
    reqs.set_max(&init_max);
    reqs
}

/// Computes a pod's requests (see [`PodRequests`]). Errors name the offending field.
pub fn pod_requests(pod: &Pod) -> Result<PodRequests, FieldError> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(PodRequests::default());
    };
    let containers = spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| container_requests(c, &format!("spec.containers[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let inits = spec
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| {
            let sidecar = c.restart_policy.as_deref() == Some("Always");
            container_requests(c, &format!("spec.initContainers[{i}]")).map(|r| (r, sidecar))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut requests = aggregate(&containers, &inits, false);
    let mut nz = aggregate(&containers, &inits, true);
    // Pod-level resources (KEP-2837): pod-level requests override the aggregate for
    // the resources they name (cpu, memory, hugepages).
    if let Some(pl) = spec.resources.as_ref().and_then(|r| r.requests.as_ref()) {
        let plr = Resources::from_list(pl, "spec.resources.requests")?;
        for name in pl.keys() {
            if name == CPU || name == MEMORY || is_hugepages(name) {
                requests.set(name, plr.get(name));
                nz.set(name, plr.get(name));
            }
        }
    }
    if let Some(oh) = spec.overhead.as_ref() {
        let o = Resources::from_list(oh, "spec.overhead")?;
        requests.add(&o);
        nz.add(&o);
    }
    Ok(PodRequests {
        non_zero_milli_cpu: nz.milli_cpu,
        non_zero_memory: nz.memory,
        requests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn sums_containers_and_takes_max_of_init() {
        let p = pod(r#"
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  initContainers:
  - name: i1
    image: x
    resources: {requests: {cpu: "2", memory: 1Gi}}
  containers:
  - name: a
    image: x
    resources: {requests: {cpu: 500m, memory: 1Gi, nvidia.com/gpu: "1"}}
  - name: b
    image: x
    resources: {requests: {cpu: 500m}}
  overhead: {cpu: 100m}
"#);
        let r = pod_requests(&p).unwrap();
        assert_eq!(r.requests.milli_cpu, 2100);
        assert_eq!(r.requests.memory, 1 << 30);
        assert_eq!(r.requests.scalar_value("nvidia.com/gpu"), 1);
        // b has no memory request: 200Mi substituted for scoring only; init max 2 cpu
        assert_eq!(r.non_zero_memory, (1 << 30) + DEFAULT_MEMORY_REQUEST);
        assert_eq!(r.non_zero_milli_cpu, 2100);
    }

    #[test]
    fn sidecars_add_to_steady_state() {
        let p = pod(r#"
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  initContainers:
  - {name: side, image: x, restartPolicy: Always, resources: {requests: {cpu: 300m}}}
  - {name: init, image: x, resources: {requests: {cpu: 1}}}
  containers:
  - {name: a, image: x, resources: {requests: {cpu: 500m}}}
"#);
        let r = pod_requests(&p).unwrap();
        // steady: 500m + 300m = 800m; init phase: 1 + 300m = 1300m
        assert_eq!(r.requests.milli_cpu, 1300);
    }

    #[test]
    fn zero_request_pod_gets_defaults_for_scoring() {
        let p = pod(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - {name: a, image: x}\n",
        );
        let r = pod_requests(&p).unwrap();
        assert!(r.requests.is_zero());
        assert_eq!(r.non_zero_milli_cpu, DEFAULT_MILLI_CPU_REQUEST);
        assert_eq!(r.non_zero_memory, DEFAULT_MEMORY_REQUEST);
    }

    #[test]
    fn bad_quantity_names_field() {
        let p = pod(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - {name: a, image: x, resources: {requests: {cpu: 1x}}}\n",
        );
        let e = pod_requests(&p).unwrap_err();
        assert_eq!(e.field, "spec.containers[0].resources.requests[cpu]");
        assert!(e.message.contains("1x"));
    }

    #[test]
    fn resource_vector_ops() {
        let mut a = Resources::default();
        a.set("hugepages-2Mi", 4);
        a.set("example.com/foo", 1);
        let mut b = a.clone();
        b.add(&a);
        assert_eq!(b.get("hugepages-2Mi"), 8);
        b.sub(&a);
        assert_eq!(b, a);
        assert!(is_extended_resource("example.com/foo"));
        assert!(!is_extended_resource("kubernetes.io/foo"));
        assert!(is_scalar_resource("hugepages-2Mi"));
        assert!(!is_scalar_resource("cpu"));
    }
}
