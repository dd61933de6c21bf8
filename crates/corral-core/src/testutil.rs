//! Builders for real k8s-openapi Node/Pod objects in tests (and benches).

pub mod volumes;

use serde_json::{Value, json};

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::snapshot::{LABEL_HOSTNAME, LABEL_ZONE, NodeInfo, PodInfo};

/// Node builder.
#[derive(Debug, Clone)]
pub struct NodeBuilder(pub Value);

/// Starts a node named `name` (hostname label set, allocatable pods 110).
pub fn node(name: &str) -> NodeBuilder {
    NodeBuilder(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {LABEL_HOSTNAME: name}},
        "spec": {},
        "status": {"allocatable": {"pods": "110"}, "capacity": {"pods": "110"}}
    }))
}

impl NodeBuilder {
    pub fn alloc(mut self, name: &str, q: &str) -> Self {
        self.0["status"]["allocatable"][name] = json!(q);
        self.0["status"]["capacity"][name] = json!(q);
        self
    }
    pub fn cpu(self, q: &str) -> Self {
        self.alloc("cpu", q)
    }
    pub fn mem(self, q: &str) -> Self {
        self.alloc("memory", q)
    }
    pub fn pods(self, q: &str) -> Self {
        self.alloc("pods", q)
    }
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.0["metadata"]["labels"][k] = json!(v);
        self
    }
    pub fn zone(self, z: &str) -> Self {
        self.label(LABEL_ZONE, z)
    }
    pub fn taint(mut self, key: &str, value: &str, effect: &str) -> Self {
        let t = if value.is_empty() {
            json!({"key": key, "effect": effect})
        } else {
            json!({"key": key, "value": value, "effect": effect})
        };
        match self.0["spec"]["taints"].as_array_mut() {
            Some(a) => a.push(t),
            None => self.0["spec"]["taints"] = json!([t]),
        }
        self
    }
    pub fn unschedulable(mut self) -> Self {
        self.0["spec"]["unschedulable"] = json!(true);
        self
    }
    pub fn image(mut self, name: &str, size: i64) -> Self {
        let i = json!({"names": [name], "sizeBytes": size});
        match self.0["status"]["images"].as_array_mut() {
            Some(a) => a.push(i),
            None => self.0["status"]["images"] = json!([i]),
        }
        self
    }
    pub fn node(&self) -> Node {
        serde_json::from_value(self.0.clone()).expect("test node")
    }
    pub fn info(&self) -> NodeInfo {
        NodeInfo::new(self.node()).expect("test node info")
    }
}

/// Pod builder.
#[derive(Debug, Clone)]
pub struct PodBuilder(pub Value, pub u64);

/// Starts a pod named `name` in namespace `default` with one container `c` (image
/// `img`), schedulerName `corral`.
pub fn pod(name: &str) -> PodBuilder {
    PodBuilder(
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {}},
            "spec": {"schedulerName": "corral", "containers": [{"name": "c", "image": "img"}]}
        }),
        0,
    )
}

impl PodBuilder {
    pub fn ns(mut self, ns: &str) -> Self {
        self.0["metadata"]["namespace"] = json!(ns);
        self
    }
    /// Sets a request on the first container.
    pub fn req(mut self, name: &str, q: &str) -> Self {
        self.0["spec"]["containers"][0]["resources"]["requests"][name] = json!(q);
        self
    }
    pub fn cpu(self, q: &str) -> Self {
        self.req("cpu", q)
    }
    pub fn mem(self, q: &str) -> Self {
        self.req("memory", q)
    }
    /// Adds another container with the given requests.
    pub fn container(mut self, requests: Value) -> Self {
        let n = self.0["spec"]["containers"]
            .as_array()
            .map_or(0, |a| a.len());
        let c =
            json!({"name": format!("c{n}"), "image": "img", "resources": {"requests": requests}});
        self.0["spec"]["containers"]
            .as_array_mut()
            .expect("containers")
            .push(c);
        self
    }
    /// Adds an init container with the given requests.
    pub fn init_container(mut self, requests: Value) -> Self {
        let c = json!({"name": "init", "image": "img", "resources": {"requests": requests}});
        match self.0["spec"]["initContainers"].as_array_mut() {
            Some(a) => a.push(c),
            None => self.0["spec"]["initContainers"] = json!([c]),
        }
        self
    }
    pub fn overhead(mut self, o: Value) -> Self {
        self.0["spec"]["overhead"] = o;
        self
    }
    pub fn image(mut self, img: &str) -> Self {
        self.0["spec"]["containers"][0]["image"] = json!(img);
        self
    }
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.0["metadata"]["labels"][k] = json!(v);
        self
    }
    pub fn priority(mut self, p: i32) -> Self {
        self.0["spec"]["priority"] = json!(p);
        self
    }
    pub fn seq(mut self, s: u64) -> Self {
        self.1 = s;
        self
    }
    pub fn node_name(mut self, n: &str) -> Self {
        self.0["spec"]["nodeName"] = json!(n);
        self
    }
    pub fn node_selector(mut self, k: &str, v: &str) -> Self {
        self.0["spec"]["nodeSelector"][k] = json!(v);
        self
    }
    pub fn toleration(mut self, t: Value) -> Self {
        match self.0["spec"]["tolerations"].as_array_mut() {
            Some(a) => a.push(t),
            None => self.0["spec"]["tolerations"] = json!([t]),
        }
        self
    }
    pub fn host_port(mut self, port: i32, protocol: &str, ip: &str) -> Self {
        let p = if ip.is_empty() {
            json!({"containerPort": port, "hostPort": port, "protocol": protocol})
        } else {
            json!({"containerPort": port, "hostPort": port, "protocol": protocol, "hostIP": ip})
        };
        match self.0["spec"]["containers"][0]["ports"].as_array_mut() {
            Some(a) => a.push(p),
            None => self.0["spec"]["containers"][0]["ports"] = json!([p]),
        }
        self
    }
    /// Sets `spec.affinity` (JSON in API format).
    pub fn affinity(mut self, a: Value) -> Self {
        self.0["spec"]["affinity"] = a;
        self
    }
    /// Appends a topology spread constraint (JSON in API format).
    pub fn spread(mut self, c: Value) -> Self {
        match self.0["spec"]["topologySpreadConstraints"].as_array_mut() {
            Some(a) => a.push(c),
            None => self.0["spec"]["topologySpreadConstraints"] = json!([c]),
        }
        self
    }
    /// Sets any spec field.
    pub fn spec(mut self, k: &str, v: Value) -> Self {
        self.0["spec"][k] = v;
        self
    }
    pub fn pod(&self) -> Pod {
        serde_json::from_value(self.0.clone()).expect("test pod")
    }
    pub fn info(&self) -> PodInfo {
        PodInfo::new(self.pod(), self.1).expect("test pod info")
    }
}
