//! Attach modes: clsact/netlink (the default, `--attach auto|netlink`) and
//! its restart re-adoption; TCX links (`--attach tcx`): pins, deregister,
//! re-created interfaces, and adoption of TCX links by a netlink-mode agent.

mod common;
use common::*;
use std::net::IpAddr;

#[test]
fn netlink_clsact_attach_polices_and_survives_restart() {
    let Some(_serial) = privileged("netlink_clsact_attach_polices_and_survives_restart") else {
        return;
    };
    let mut node = Node::new();
    let a = node.add_pod("x", "a");
    // default mode
    let mut agent = Agent::start(&node, &[]);
    let pod = &node.pods[a];
    let mut s = pod.spec();
    s.ingress = limit(50_000_000);
    agent.register(s);
    let filters = |dir: &str| {
        let o = node.exec(&["tc", "filter", "show", "dev", &pod.host_if, dir]);
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    for dir in ["ingress", "egress"] {
        let f = filters(dir);
        assert!(
            f.contains("bpf") && f.contains("direct-action"),
            "no clsact bpf filter on {dir}: {f}"
        );
    }
    rate_within("netlink mode tcp ingress 50M", 50e6, 0.05, |i| {
        let (p, n) = (&pod.netns, &node.netns);
        iperf(p, n, IpAddr::V4(pod.gw4), 56010 + i, 4, None, true).bps
    });

    agent.kill9();
    // the filters keep enforcing while the agent is down
    assert!(filters("egress").contains("bpf"));
    agent.spawn();
    for dir in ["ingress", "egress"] {
        let f = filters(dir);
        assert_eq!(
            f.matches("bpf").count(),
            f.lines().filter(|l| l.contains("bpf")).count()
        );
        assert_eq!(
            f.lines().filter(|l| l.contains("direct-action")).count(),
            1,
            "restart must adopt, not add a second filter ({dir}): {f}"
        );
    }
    assert!(
        agent.log_text().contains("adopted=true"),
        "{}",
        agent.log_text()
    );
    rate_within("netlink mode after restart", 50e6, 0.05, |i| {
        let (p, n) = (&pod.netns, &node.netns);
        iperf(p, n, IpAddr::V4(pod.gw4), 56020 + i, 5, None, true).bps
    });
}

#[test]
fn deregister_detaches_and_removes_pins() {
    let Some(_serial) = privileged("deregister_detaches_and_removes_pins") else {
        return;
    };
    let mut node = Node::new();
    let a = node.add_pod("x", "a");
    let agent = Agent::start(&node, &["--attach", "tcx"]);
    let pod = &node.pods[a];
    let mut s = pod.spec();
    s.egress = limit(10_000_000);
    agent.register(s);
    let links = agent.pin_dir.join("links");
    assert_eq!(std::fs::read_dir(&links).expect("links").count(), 2);
    agent.call(&corral_dataplane_abi::api::Request::Deregister {
        ifname: pod.host_if.clone(),
    });
    assert_eq!(
        std::fs::read_dir(&links).expect("links").count(),
        0,
        "link pins left"
    );
    assert!(agent.list().is_empty());
    let m = iperf(
        &pod.netns,
        &node.netns,
        IpAddr::V4(pod.gw4),
        5701,
        2,
        None,
        false,
    );
    assert!(
        m.bps > 100e6,
        "still limited after deregister: {:.1} Mbit/s",
        m.bps / 1e6
    );
    // unknown endpoint: clear error naming it
    match corral_dataplane_abi::api::call(
        &agent.socket,
        &corral_dataplane_abi::api::Request::Deregister {
            ifname: "nope0".into(),
        },
    ) {
        Ok(corral_dataplane_abi::api::Response::Error { message }) => {
            assert!(message.contains("nope0"), "{message}")
        }
        r => panic!("expected error, got {r:?}"),
    }
}

#[test]
fn reregister_after_interface_recreated_attaches_new_interface() {
    let Some(_serial) = privileged("reregister_after_interface_recreated_attaches_new_interface")
    else {
        return;
    };
    let mut node = Node::new();
    let a = node.add_pod("x", "a");
    let agent = Agent::start(&node, &["--attach", "tcx"]);
    let mut s = node.pods[a].spec();
    s.egress = limit(20_000_000);
    agent.register(s.clone());
    let old = agent.list()[0].ifindex;
    // the pod's veth goes away and comes back under the same name
    node.exec_ok(&["ip", "link", "del", &node.pods[a].host_if]);
    node.wire(a);
    agent.register(s);
    let st = agent.list();
    assert_eq!(st.len(), 1);
    assert_ne!(st[0].ifindex, old, "new interface must be used");
    let links: Vec<String> = std::fs::read_dir(agent.pin_dir.join("links"))
        .expect("links")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(links.len(), 2, "{links:?}");
    assert!(
        links
            .iter()
            .all(|l| l.starts_with(&format!("{}_", st[0].ifindex))),
        "stale pins: {links:?}"
    );
    let pod = &node.pods[a];
    rate_within("limit on the re-created interface", 20e6, 0.05, |i| {
        let (p, n) = (&pod.netns, &node.netns);
        iperf(p, n, IpAddr::V4(pod.gw4), 58010 + i, 4, None, false).bps
    });
}

#[test]
fn default_mode_agent_adopts_tcx_links_of_a_previous_run() {
    let Some(_serial) = privileged("default_mode_agent_adopts_tcx_links_of_a_previous_run") else {
        return;
    };
    let mut node = Node::new();
    let a = node.add_pod("x", "a");
    let mut agent = Agent::start(&node, &["--attach", "tcx"]);
    let pod = &node.pods[a];
    let mut s = pod.spec();
    s.ingress = limit(30_000_000);
    agent.register(s);
    let pins = |agent: &Agent| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(agent.pin_dir.join("links"))
            .expect("links")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        v.sort();
        v
    };
    let before = pins(&agent);
    assert_eq!(before.len(), 2, "{before:?}");
    agent.kill9();
    // restart with the default (netlink) mode: the TCX links are adopted
    agent.args.retain(|x| x != "--attach" && x != "tcx");
    agent.spawn();
    assert_eq!(pins(&agent), before, "TCX pins must be kept");
    assert!(
        agent.log_text().contains("adopted=true"),
        "{}",
        agent.log_text()
    );
    for dir in ["ingress", "egress"] {
        let o = node.exec(&["tc", "filter", "show", "dev", &pod.host_if, dir]);
        let f = String::from_utf8_lossy(&o.stdout);
        assert!(
            !f.contains("bpf"),
            "a clsact filter was added next to the TCX link ({dir}): {f}"
        );
    }
    rate_within(
        "TCX link adopted by a default-mode agent",
        30e6,
        0.05,
        |i| {
            let (p, n) = (&pod.netns, &node.netns);
            iperf(p, n, IpAddr::V4(pod.gw4), 56030 + i, 4, None, true).bps
        },
    );
    // deregister removes the adopted TCX links
    agent.call(&corral_dataplane_abi::api::Request::Deregister {
        ifname: pod.host_if.clone(),
    });
    assert!(pins(&agent).is_empty(), "{:?}", pins(&agent));
}
