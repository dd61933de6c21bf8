//! NodePorts: the pod's host ports must be free on the node.
//!
//! Two host ports conflict when protocol and port match and the IPs are equal or
//! either is the wildcard `0.0.0.0` ([`HostPort::conflicts`]). The pod's host ports
//! (containers and restartable init containers, `hostPort > 0`, empty hostIP →
//! `0.0.0.0`, empty protocol → TCP) are precomputed in [`PodInfo::host_ports`], so
//! PreFilter only decides whether the plugin applies (Skip when the pod has none) and
//! Filter reads them directly, allocating nothing.

use std::sync::Arc;

use crate::framework::{
    CycleState, FilterPlugin, Plugin, PreFilterPlugin, PreFilterResult, Status,
};
use crate::snapshot::{HostPort, NodeInfo, PodInfo, Snapshot};

pub const NAME: &str = "NodePorts";
/// kube-scheduler's reason string.
pub const ERR_REASON: &str = "node(s) didn't have free ports for the requested pod ports";

#[derive(Debug, Default)]
pub struct NodePorts;

crate::impl_plugin!(NodePorts, NAME, pre_filter, filter);

/// `fitsPorts`: no wanted port conflicts with a port in use on the node.
pub fn fits_ports(wanted: &[HostPort], used: &[HostPort]) -> bool {
    !wanted.iter().any(|w| used.iter().any(|u| w.conflicts(u)))
}

impl PreFilterPlugin for NodePorts {
    fn pre_filter(
        &self,
        _: &mut CycleState,
        pod: &PodInfo,
        _: &Snapshot,
    ) -> (Option<PreFilterResult>, Status) {
        if pod.host_ports.is_empty() {
            (None, Status::skip())
        } else {
            (None, Status::success())
        }
    }

    /// Skips by the pod alone (see `PreFilterPlugin::skip_depends_on_pods`).
    fn skip_depends_on_pods(&self) -> bool {
        false
    }
}

impl FilterPlugin for NodePorts {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> Status {
        if fits_ports(&pod.host_ports, &node.used_ports) {
            Status::success()
        } else {
            Status::unschedulable(ERR_REASON)
        }
    }
}

pub fn factory(args: Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String> {
    match args {
        None | Some(serde_json::Value::Null) => Ok(Arc::new(NodePorts)),
        Some(serde_json::Value::Object(m))
            if m.keys().all(|k| k == "apiVersion" || k == "kind") =>
        {
            Ok(Arc::new(NodePorts))
        }
        Some(_) => Err("this plugin takes no args".into()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::framework::Code;
    use crate::testutil::{node, pod};

    fn run(p: &PodInfo, n: &NodeInfo) -> Status {
        let snap = Snapshot::new();
        let mut st = CycleState::new();
        let (res, s) = NodePorts.pre_filter(&mut st, p, &snap);
        assert!(res.is_none());
        if s.is_skip() {
            return s;
        }
        assert!(s.is_success());
        NodePorts.filter(&st, p, n, &snap)
    }

    fn node_with(ports: &[(i32, &str, &str)]) -> NodeInfo {
        let mut n = node("n").cpu("4").info();
        for (i, (port, proto, ip)) in ports.iter().enumerate() {
            let p = pod(&format!("u{i}")).host_port(*port, proto, ip).info();
            n.add_pod(Arc::new(p));
        }
        n
    }

    #[test]
    fn pods_without_host_ports_are_skipped() {
        let n = node_with(&[(80, "TCP", "")]);
        let s = run(&pod("p").info(), &n);
        assert_eq!(s.code, Code::Skip);
        // containerPort without hostPort is not a host port.
        let mut b = pod("p");
        b.0["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80}]);
        assert_eq!(run(&b.info(), &n).code, Code::Skip);
    }

    #[test]
    fn wildcard_and_specific_ips() {
        let wildcard = node_with(&[(80, "TCP", "")]);
        let specific = node_with(&[(80, "TCP", "10.0.0.1")]);
        // Wildcard used: any IP conflicts.
        let s = run(&pod("p").host_port(80, "TCP", "10.0.0.2").info(), &wildcard);
        assert_eq!(s.code, Code::Unschedulable);
        assert_eq!(s.reasons, vec![ERR_REASON]);
        // Specific used: the same IP and the wildcard conflict, another IP does not.
        assert!(run(&pod("p").host_port(80, "TCP", "10.0.0.1").info(), &specific).is_rejected());
        assert!(run(&pod("p").host_port(80, "TCP", "0.0.0.0").info(), &specific).is_rejected());
        assert!(run(&pod("p").host_port(80, "TCP", "").info(), &specific).is_rejected());
        assert!(run(&pod("p").host_port(80, "TCP", "10.0.0.2").info(), &specific).is_success());
        // Different port.
        assert!(run(&pod("p").host_port(81, "TCP", "").info(), &wildcard).is_success());
    }

    #[test]
    fn protocols_are_distinct() {
        let n = node_with(&[(53, "UDP", "")]);
        assert!(run(&pod("p").host_port(53, "TCP", "").info(), &n).is_success());
        assert!(run(&pod("p").host_port(53, "UDP", "").info(), &n).is_rejected());
        assert!(run(&pod("p").host_port(53, "SCTP", "").info(), &n).is_success());
        // Protocol defaults to TCP.
        let tcp = node_with(&[(8080, "TCP", "")]);
        let mut b = pod("p");
        b.0["spec"]["containers"][0]["ports"] = json!([{"containerPort": 1, "hostPort": 8080}]);
        assert!(run(&b.info(), &tcp).is_rejected());
    }

    #[test]
    fn any_conflicting_port_rejects_and_removal_frees() {
        let mut n = node_with(&[(80, "TCP", ""), (443, "TCP", "")]);
        let p = pod("p")
            .host_port(8080, "TCP", "")
            .host_port(443, "TCP", "")
            .info();
        assert!(run(&p, &n).is_rejected());
        assert!(n.remove_pod("default/u1").is_some());
        assert!(run(&p, &n).is_success());
    }

    #[test]
    fn sidecar_host_ports_count_but_plain_init_containers_do_not() {
        let n = node_with(&[(9000, "TCP", "")]);
        let mut side = pod("s");
        side.0["spec"]["initContainers"] = json!([{"name": "side", "image": "img",
            "restartPolicy": "Always", "ports": [{"containerPort": 9000, "hostPort": 9000}]}]);
        assert!(run(&side.info(), &n).is_rejected());
        let mut init = pod("i");
        init.0["spec"]["initContainers"] = json!([{"name": "init", "image": "img",
            "ports": [{"containerPort": 9000, "hostPort": 9000}]}]);
        assert_eq!(run(&init.info(), &n).code, Code::Skip);
        // A node hosting a pod with a sidecar host port has it in use.
        let mut m = node("m").info();
        m.add_pod(Arc::new(side.info()));
        assert!(run(&pod("p").host_port(9000, "TCP", "").info(), &m).is_rejected());
    }

    #[test]
    fn args_are_rejected() {
        assert!(factory(None).is_ok());
        assert!(factory(Some(&json!({}))).is_ok());
        assert!(factory(Some(&json!({"x": 1}))).is_err());
    }
}
