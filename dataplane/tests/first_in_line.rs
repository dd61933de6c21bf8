//! Corral runs first on the pod's host veth, in both attach modes, when
//! chained after the reference `bridge` + `bandwidth` plugins (the
//! bandwidth plugin's u32 mirred filter at pref 1 used to steal pod egress
//! before Corral's classifier saw it); a foreign filter that would run
//! first is reported by `corral-agent status`.

mod common;
use common::cni::{PodNs, REF, refs_ok};
use common::*;

use std::net::IpAddr;
use std::process::Command;

use corral_dataplane_abi::api::{EndpointStatus, Request, Response};
use serde_json::{Value, json};

/// Runs a CNI plugin inside the node netns like a runtime.
fn plugin(node: &Node, bin: &str, cmd: &str, pod: &PodNs, conf: &Value) -> (i32, Value) {
    let o = cni::run_plugin(
        &node.netns,
        bin,
        cmd,
        &[
            ("CNI_PATH", &cni::cni_path()),
            ("CNI_CONTAINERID", "cfirst"),
            ("CNI_NETNS", &pod.path()),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=fl;K8S_POD_NAME=p",
            ),
        ],
        &node.dir.path().join("cni.log"),
        conf.to_string().as_bytes(),
    );
    let raw = o.raw;
    let v = serde_json::from_str(&raw).unwrap_or(Value::Null);
    (o.code, v)
}

fn status(agent: &Agent) -> EndpointStatus {
    match agent.call(&Request::List) {
        Response::Endpoints { mut endpoints, .. } => {
            assert_eq!(endpoints.len(), 1, "{endpoints:?}");
            endpoints.remove(0)
        }
        r => panic!("unexpected {r:?}"),
    }
}

/// The chain bridge → bandwidth → corral-cni for one pod; returns the
/// host veth and the pod IP. DEL in reverse order on drop of the node.
fn chain(node: &Node, agent: &Agent, pod: &PodNs, subnet: &str, bw: bool) -> (String, IpAddr) {
    let ipam = json!({"type": "host-local", "dataDir": node.dir.path().join("ipam"),
        "ranges": [[{"subnet": subnet}]]});
    let bridge = json!({"cniVersion": "1.0.0", "name": "fl", "type": "bridge",
        "bridge": "crfbr0", "isGateway": true, "ipam": ipam});
    let (rc, mut prev) = plugin(node, &format!("{REF}/bridge"), "ADD", pod, &bridge);
    assert_eq!(rc, 0, "bridge: {prev}");
    if bw {
        // pod egress 20 Mbit/s through the plugin's ifb (u32 mirred at
        // pref 1 on the host veth's ingress qdisc)
        let conf = json!({"cniVersion": "1.0.0", "name": "fl", "type": "bandwidth",
            "runtimeConfig": {"bandwidth": {"egressRate": 20_000_000, "egressBurst": 6_000_000}},
            "prevResult": prev});
        let (rc, out) = plugin(node, &format!("{REF}/bandwidth"), "ADD", pod, &conf);
        assert_eq!(rc, 0, "bandwidth: {out}");
        prev = out;
    }
    let corral = json!({"cniVersion": "1.0.0", "name": "fl", "type": "corral-cni",
        "agentSocket": agent.socket, "dataDir": node.dir.path().join("cni"),
        "logFile": node.dir.path().join("cni.log"), "prevResult": prev});
    let cni = env!("CARGO_BIN_EXE_corral-cni");
    let (rc, out) = plugin(node, cni, "ADD", pod, &corral);
    assert_eq!(rc, 0, "corral-cni: {out}");
    let ip: IpAddr = out["ips"][0]["address"]
        .as_str()
        .and_then(|s| s.split('/').next())
        .and_then(|s| s.parse().ok())
        .expect("pod ip");
    (status(agent).spec.ifname, ip)
}

fn deny_all_egress(node: &Node, agent: &Agent) {
    std::fs::write(
        node.manifests().join("deny.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-egress, namespace: fl}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n",
    )
    .expect("policy");
    agent.reconcile();
}

#[test]
fn first_in_line_after_bridge_and_bandwidth_in_both_attach_modes() {
    let t = "first_in_line_after_bridge_and_bandwidth_in_both_attach_modes";
    let Some(_g) = privileged(t) else { return };
    if !refs_ok(t, &["host-local", "bridge", "bandwidth"]) {
        return;
    }
    for (i, mode) in ["netlink", "tcx"].into_iter().enumerate() {
        let node = Node::new();
        let agent = Agent::start(&node, &["--attach", mode]);
        let pod = PodNs::new("crf");
        let (host_if, _pod_ip) = chain(
            &node,
            &agent,
            &pod,
            &format!("198.18.{}.0/24", 40 + i),
            true,
        );
        // the bandwidth plugin's filter is in place (pref 1, u32)
        let f = node.exec(&["tc", "filter", "show", "dev", &host_if, "ingress"]);
        let f = String::from_utf8_lossy(&f.stdout).to_string();
        assert!(f.contains("pref 1 u32") && f.contains("mirred"), "{f}");
        let st = status(&agent);
        // netlink cannot get below pref 1: that interface goes TCX (head)
        assert_eq!(st.attach, "tcx", "{mode}: {st:?}");
        assert!(st.ahead.is_empty(), "{mode}: {:?}", st.ahead);
        // pod egress (bridge gateway = node): Corral counts it, and the
        // bandwidth plugin behind it still shapes it
        let gw: IpAddr = format!("198.18.{}.1", 40 + i).parse().unwrap();
        let before = status(&agent).egress.bytes;
        let port = 5790 + i as u16;
        rate_within(
            &format!("{mode}: bandwidth plugin egress 20M behind Corral"),
            20e6,
            0.15,
            |a| iperf(&pod.0, &node.netns, gw, port + 10 * a, 2, None, false).bps,
        );
        let after = status(&agent).egress.bytes;
        assert!(
            after > before + 2_000_000,
            "{mode}: Corral's egress counter saw {} bytes",
            after - before
        );
        // and Corral's egress policy applies to that traffic: the SYNs
        // are dropped by Corral (counted), not by anything else
        deny_all_egress(&node, &agent);
        let drops = status(&agent).egress.drop_policy;
        assert!(!tcp_connects(&pod.0, gw, 5789), "{mode}: egress denied");
        let st = status(&agent);
        assert!(st.egress.drop_policy > drops, "{mode}: {st:?}");
        drop(agent);
        drop(pod);
        let _ = node.exec(&["ip", "link", "del", "crfbr0"]);
    }
}

#[test]
fn netlink_goes_below_foreign_filters_and_reports_one_that_runs_first() {
    let t = "netlink_goes_below_foreign_filters_and_reports_one_that_runs_first";
    let Some(_g) = privileged(t) else { return };
    if !refs_ok(t, &["host-local", "bridge", "bandwidth"]) {
        return;
    }
    let node = Node::new();
    let mut agent = Agent::start(&node, &["--attach", "netlink"]);
    let pod = PodNs::new("crf");
    // a foreign filter at pref 100 on the veth before Corral attaches:
    // bridge alone, the filter, then corral-cni
    let ipam = json!({"type": "host-local", "dataDir": node.dir.path().join("ipam"),
        "ranges": [[{"subnet": "198.18.43.0/24"}]]});
    let bridge = json!({"cniVersion": "1.0.0", "name": "fl", "type": "bridge",
        "bridge": "crfbr0", "isGateway": true, "ipam": ipam});
    let (rc, prev) = plugin(&node, &format!("{REF}/bridge"), "ADD", &pod, &bridge);
    assert_eq!(rc, 0, "bridge: {prev}");
    let host_if = prev["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i.get("sandbox").is_none() && i["name"] != "crfbr0")
        .and_then(|i| i["name"].as_str())
        .expect("host veth")
        .to_string();
    node.exec_ok(&["tc", "qdisc", "add", "dev", &host_if, "clsact"]);
    node.exec_ok(&[
        "tc", "filter", "add", "dev", &host_if, "ingress", "pref", "100", "u32", "match", "u32",
        "0", "0", "classid", "1:1",
    ]);
    let corral = json!({"cniVersion": "1.0.0", "name": "fl", "type": "corral-cni",
        "agentSocket": agent.socket, "dataDir": node.dir.path().join("cni"),
        "logFile": node.dir.path().join("cni.log"), "prevResult": prev});
    let (rc, out) = plugin(
        &node,
        env!("CARGO_BIN_EXE_corral-cni"),
        "ADD",
        &pod,
        &corral,
    );
    assert_eq!(rc, 0, "corral-cni: {out}");
    let st = status(&agent);
    // below the foreign pref 100 on ingress; default 192 on egress
    assert_eq!(st.attach, "netlink pref 99/netlink pref 192", "{st:?}");
    assert!(st.ahead.is_empty(), "{:?}", st.ahead);
    // a foreign filter added later, ahead of Corral: reported
    node.exec_ok(&[
        "tc", "filter", "add", "dev", &host_if, "ingress", "pref", "7", "u32", "match", "u32", "0",
        "0", "classid", "1:1",
    ]);
    let st = status(&agent);
    assert_eq!(
        st.ahead,
        vec!["host ingress (pod egress): tc filter u32 pref 7".to_string()],
        "{st:?}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_corral-agent"))
        .args(["status", "--socket"])
        .arg(&agent.socket)
        .output()
        .expect("status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("runs before Corral") && text.contains("u32 pref 7"),
        "{text}"
    );
    // re-registering (agent restart path) moves Corral below it again
    agent.kill9();
    agent.spawn();
    let st = status(&agent);
    assert!(st.ahead.is_empty(), "after restart: {st:?}");
    assert_eq!(st.attach, "netlink pref 6/netlink pref 192", "{st:?}");
    // DEL removes Corral's filters whatever their pref; foreign ones stay
    let (rc, out) = plugin(
        &node,
        env!("CARGO_BIN_EXE_corral-cni"),
        "DEL",
        &pod,
        &corral,
    );
    assert_eq!(rc, 0, "{out}");
    let f = node.exec(&["tc", "filter", "show", "dev", &host_if, "ingress"]);
    let f = String::from_utf8_lossy(&f.stdout).to_string();
    assert!(!f.contains("corral_"), "{f}");
    assert!(
        f.contains("pref 7 u32") && f.contains("pref 100 u32"),
        "{f}"
    );
    let _ = node.exec(&["ip", "link", "del", "crfbr0"]);
}
