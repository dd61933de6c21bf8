//! Traffic classes under a per-node aggregate budget (--uplink-rate):
//! critical keeps its share, bulk is policed first, budget is shared.

mod common;
use common::*;
use std::net::IpAddr;

#[test]
fn critical_keeps_share_bulk_policed_first() {
    let Some(_serial) = privileged("critical_keeps_share_bulk_policed_first") else {
        return;
    };
    let mut node = Node::new();
    let c = node.add_pod("x", "crit");
    let k = node.add_pod("x", "bulk");
    let agent = Agent::start(&node, &["--uplink-rate", "100M", "--min-shares", "50,20,5"]);
    let (pc, pk) = (&node.pods[c], &node.pods[k]);
    let mut sc = pc.spec();
    sc.class = Some("critical".into());
    agent.register(sc);
    let mut sk = pk.spec();
    // class from the pod annotation
    sk.annotations
        .insert("corral.io/traffic-class".into(), "bulk".into());
    agent.register(sk);
    let st = agent.list();
    assert_eq!(
        st.iter()
            .find(|e| e.spec.name == "bulk")
            .expect("bulk")
            .class,
        "bulk"
    );

    // bulk alone may use the whole budget
    rate_within("bulk alone, 100M budget", 100e6, 0.05, |i| {
        let (k, n) = (&pk.netns, &node.netns);
        iperf(
            k,
            n,
            IpAddr::V4(pk.gw4),
            5510 + i,
            4,
            Some(150_000_000),
            false,
        )
        .bps
    });

    // contention: critical offers 60M, bulk 100M
    let (cn, nn, cgw) = (pc.netns.clone(), node.netns.clone(), pc.gw4);
    let crit = std::thread::spawn(move || {
        iperf(&cn, &nn, IpAddr::V4(cgw), 5502, 5, Some(60_000_000), false).bps
    });
    let bulk = iperf(
        &pk.netns,
        &node.netns,
        IpAddr::V4(pk.gw4),
        5503,
        5,
        Some(100_000_000),
        false,
    )
    .bps;
    let crit = crit.join().expect("critical flow");
    eprintln!(
        "contention: critical {:.1} Mbit/s bulk {:.1} Mbit/s",
        crit / 1e6,
        bulk / 1e6
    );
    assert!(
        crit >= 0.95 * 60e6,
        "critical lost its share: {:.1} Mbit/s",
        crit / 1e6
    );
    assert!(
        crit + bulk <= 1.05 * 100e6,
        "budget exceeded: {:.1} Mbit/s",
        (crit + bulk) / 1e6
    );
    assert!(
        bulk >= 0.03 * 100e6,
        "bulk starved below its minimum share: {:.1}",
        bulk / 1e6
    );
    let st = agent.list();
    let eb = st.iter().find(|e| e.spec.name == "bulk").expect("bulk");
    let ec = st.iter().find(|e| e.spec.name == "crit").expect("crit");
    assert!(eb.egress.drop_class > 0, "bulk not policed by class budget");
    assert!(
        eb.egress.drop_class > 10 * ec.egress.drop_class.max(1),
        "critical policed as much as bulk: {ec:?} {eb:?}"
    );
}

#[test]
fn bad_class_is_rejected_with_field_name() {
    let Some(_serial) = privileged("bad_class_is_rejected_with_field_name") else {
        return;
    };
    let mut node = Node::new();
    let a = node.add_pod("x", "a");
    let agent = Agent::start(&node, &[]);
    let mut s = node.pods[a].spec();
    s.class = Some("gold".into());
    match corral_dataplane_abi::api::call(
        &agent.socket,
        &corral_dataplane_abi::api::Request::Register { endpoint: s },
    ) {
        Ok(corral_dataplane_abi::api::Response::Error { message }) => {
            assert!(
                message.contains("x/a") && message.contains("gold"),
                "{message}"
            );
        }
        r => panic!("expected an error, got {r:?}"),
    }
    assert!(agent.list().is_empty());
}

/// Packets of `pod` to the node's port 9 that arrive with `dscp`, counted
/// by an iptables/ip6tables rule in the node netns.
fn dscp_count(node: &Node, v6: bool, dscp: u8) -> u64 {
    let tool = if v6 { "ip6tables" } else { "iptables" };
    let out = node.exec(&[tool, "-L", "INPUT", "-v", "-x", "-n"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find(|l| l.contains(&format!("DSCP match 0x{dscp:02x}")))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {tool} dscp {dscp} rule: {text}"))
}

#[test]
fn dscp_marking_per_class_v4_and_v6() {
    let Some(_serial) = privileged("dscp_marking_per_class_v4_and_v6") else {
        return;
    };
    let mut node = Node::new();
    let c = node.add_pod("x", "crit");
    let k = node.add_pod("x", "bulk");
    for tool in ["iptables", "ip6tables"] {
        for d in ["46", "8"] {
            node.exec_ok(&[
                tool, "-A", "INPUT", "-p", "udp", "--dport", "9", "-m", "dscp", "--dscp", d,
            ]);
        }
    }
    let agent = Agent::start(&node, &["--dscp", "46,0,8"]);
    let mut sc = node.pods[c].spec();
    sc.qos_class = Some("Guaranteed".into());
    agent.register(sc);
    let mut sk = node.pods[k].spec();
    sk.qos_class = Some("BestEffort".into());
    agent.register(sk);
    for (i, n) in [(c, 20usize), (k, 30)] {
        let p = &node.pods[i];
        let (g4, g6) = (p.gw4, {
            let mut o = p.ip6.octets();
            o[15] = 1;
            std::net::Ipv6Addr::from(o)
        });
        in_netns(&p.netns, move || {
            let u4 = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind4");
            let u6 = std::net::UdpSocket::bind("[::]:0").expect("bind6");
            for _ in 0..n {
                u4.send_to(b"dscp", (g4, 9)).expect("send4");
                u6.send_to(b"dscp", (g6, 9)).expect("send6");
            }
        });
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        dscp_count(&node, false, 46),
        20,
        "critical (Guaranteed) marked EF"
    );
    assert_eq!(
        dscp_count(&node, false, 8),
        30,
        "bulk (BestEffort) marked CS1"
    );
    assert_eq!(dscp_count(&node, true, 46), 20, "IPv6 critical");
    assert_eq!(dscp_count(&node, true, 8), 30, "IPv6 bulk");
}
