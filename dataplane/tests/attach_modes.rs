//! Legacy clsact/netlink attach (kernels < 6.6, or --attach netlink) and
//! its restart re-adoption; TCX is covered by the other tests.

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
    let mut agent = Agent::start(&node, &["--attach", "netlink"]);
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
    let m = iperf(
        &pod.netns,
        &node.netns,
        IpAddr::V4(pod.gw4),
        5601,
        4,
        None,
        true,
    );
    assert_within("netlink mode tcp ingress 50M", m.bps, 50e6, 0.05);

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
    let m = iperf(
        &pod.netns,
        &node.netns,
        IpAddr::V4(pod.gw4),
        5602,
        3,
        None,
        true,
    );
    assert_within("netlink mode after restart", m.bps, 50e6, 0.05);
}
