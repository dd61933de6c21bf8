//! Real traffic through real veths with the real agent: per-pod rate
//! limits (policing) in both directions, TCP and UDP, pod<->node and
//! pod<->pod on the same node; counters match what passed.

mod common;
use common::*;
use std::net::IpAddr;

const SECS: u32 = 4;
const TOL: f64 = 0.05;

#[test]
fn pod_rates_both_directions_tcp_udp_10m_100m_1g() {
    let Some(_serial) = privileged("pod_rates_both_directions_tcp_udp_10m_100m_1g") else {
        return;
    };
    let mut node = Node::new();
    let a = node.add_pod("x", "a");
    let agent = Agent::start(&node, &[]);
    let pod = &node.pods[a];
    let gw = IpAddr::V4(pod.gw4);
    let mut port = 5201;
    for (rate, udp) in [
        (10_000_000u64, true),
        (100_000_000, true),
        (1_000_000_000, false),
    ] {
        // the bucket depth (300 ms of rate) bounds the window error by
        // burst/(rate*secs): measure low rates longer
        let secs = if rate <= 10_000_000 { 8 } else { SECS };
        let mut spec = pod.spec();
        spec.egress = limit(rate);
        spec.ingress = limit(rate);
        // re-registering an endpoint updates it (idempotent, like CNI ADD)
        agent.register(spec);
        for reverse in [false, true] {
            // reverse: the node sends to the pod = pod ingress
            let dir = if reverse { "ingress" } else { "egress" };
            port += 3;
            rate_within(
                &format!("tcp {dir} {}M", rate / 1_000_000),
                rate as f64,
                TOL,
                |i| iperf(&pod.netns, &node.netns, gw, port + i, secs, None, reverse).bps,
            );
            if udp {
                port += 3;
                rate_within(
                    &format!("udp {dir} {}M", rate / 1_000_000),
                    rate as f64,
                    TOL,
                    |i| {
                        let (ns, nn) = (&pod.netns, &node.netns);
                        iperf(ns, nn, gw, port + i, secs, Some(rate * 3 / 2), reverse).bps
                    },
                );
            }
        }
    }
    let st = agent.list();
    let e = &st[0];
    assert!(
        e.egress.drop_rate > 0,
        "egress policing dropped nothing: {e:?}"
    );
    assert!(
        e.ingress.drop_rate > 0,
        "ingress policing dropped nothing: {e:?}"
    );
    assert_eq!(e.egress.drop_policy, 0);
}

#[test]
fn pod_to_pod_same_node_and_ipv6() {
    let Some(_serial) = privileged("pod_to_pod_same_node_and_ipv6") else {
        return;
    };
    let mut node = Node::new();
    let a = node.add_pod("x", "a");
    let b = node.add_pod("x", "b");
    let agent = Agent::start(&node, &[]);
    let (pa, pb) = (&node.pods[a], &node.pods[b]);
    let mut sa = pa.spec();
    sa.egress = limit(50_000_000);
    agent.register(sa);
    let mut sb = pb.spec();
    sb.ingress = limit(20_000_000);
    agent.register(sb);
    // a -> b: both a's egress (50M) and b's ingress (20M) apply
    rate_within("pod a->b tcp (b ingress 20M)", 20e6, TOL, |i| {
        iperf(
            &pa.netns,
            &pb.netns,
            IpAddr::V4(pb.ip4),
            5310 + i,
            SECS,
            None,
            false,
        )
        .bps
    });
    // b -> a over IPv6: only a's... nothing limits b egress / a ingress
    // except a's egress limit on the ACK path; data rate is unlimited
    let m = iperf(
        &pb.netns,
        &pa.netns,
        IpAddr::V6(pa.ip6),
        5302,
        2,
        None,
        false,
    );
    assert!(
        m.bps > 200e6,
        "unlimited direction got only {:.1} Mbit/s",
        m.bps / 1e6
    );
    // a -> b over IPv6 UDP: limited by b's ingress
    rate_within("pod a->b udp v6 (b ingress 20M)", 20e6, TOL, |i| {
        let (a, b) = (&pa.netns, &pb.netns);
        iperf(
            a,
            b,
            IpAddr::V6(pb.ip6),
            5320 + i,
            SECS,
            Some(40_000_000),
            false,
        )
        .bps
    });
    let st = agent.list();
    let eb = st.iter().find(|e| e.spec.name == "b").expect("b listed");
    assert!(eb.ingress.drop_rate > 0);
}

#[test]
fn counters_equal_what_was_sent() {
    let Some(_serial) = privileged("counters_equal_what_was_sent") else {
        return;
    };
    let mut node = Node::new();
    let a = node.add_pod("x", "a");
    let agent = Agent::start(&node, &[]);
    let pod = &node.pods[a];
    agent.register(pod.spec());
    let before = agent.list()[0].egress.clone();
    // exactly 100 UDP datagrams of 1000 bytes payload (1042 B frames)
    let gw = pod.gw4;
    in_netns(&pod.netns, move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
        for _ in 0..100 {
            s.send_to(&[7u8; 1000], (gw, 9)).expect("send");
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(100));
    let after = agent.list()[0].egress.clone();
    let pkts = after.packets - before.packets;
    let bytes = after.bytes - before.bytes;
    // the pod may also emit a few neighbour packets (ARP/ND)
    assert!((100..=106).contains(&pkts), "egress packets {pkts}");
    let echo = 100 * (14 + 20 + 8 + 1000);
    assert!(
        bytes >= echo && bytes <= echo + 6 * 90,
        "egress bytes {bytes}, echo bytes {echo}"
    );
}
