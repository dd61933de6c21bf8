//! Real traffic through real veths with the real agent: per-pod rate
//! limits (policing) in both directions, TCP and UDP, pod<->node and
//! pod<->pod on the same node; counters match what passed.

mod common;
use common::*;
use std::net::IpAddr;

const SECS: u32 = 4;
/// Measurement time at rates <= 20 Mbit/s: the bucket depth (300 ms of rate) bounds
/// the window error of a policer by burst/(rate*secs) — 7.5 % over 4 s, 3.75 % over
/// 8 s — because TCP backs off after a drop and the bucket refills meanwhile.
const SECS_LOW: u32 = 8;
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
        let secs = if rate <= 20_000_000 { SECS_LOW } else { SECS };
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
            SECS_LOW,
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
            SECS_LOW,
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

/// Sets the MTU of pod `i`'s veth pair (both ends).
fn set_mtu(node: &Node, i: usize, mtu: u32) {
    let m = mtu.to_string();
    node.exec_ok(&["ip", "link", "set", &node.pods[i].host_if, "mtu", &m]);
    must(&[
        "ip",
        "netns",
        "exec",
        &node.pods[i].netns,
        "ip",
        "link",
        "set",
        "eth0",
        "mtu",
        &m,
    ]);
}

/// One corral-loadgen UDP run (sendmmsg batches of 32, first second
/// omitted: the bucket's initial burst) from `client_ns` to a loadgen server
/// in `server_ns` at `server`: (received bit/s, offered bit/s).
fn loadgen_udp(
    client_ns: &str,
    server_ns: &str,
    server: IpAddr,
    port: u16,
    offered_bps: u64,
    size: usize,
) -> (f64, f64) {
    use corral_loadgen::net::{Server, udp_rate_batched};
    use std::net::SocketAddr;
    use std::time::Duration;
    let secs = SECS as f64;
    let bind = SocketAddr::new(server, port);
    in_netns(server_ns, move || {
        let s = Server::bind(bind).expect("loadgen server");
        std::thread::spawn(move || s.run(Some(Duration::from_secs(SECS as u64 + 10))));
    });
    let r = in_netns(client_ns, move || {
        udp_rate_batched(
            bind,
            Duration::from_secs_f64(secs),
            offered_bps,
            size,
            32,
            Duration::from_secs(1),
        )
        .expect("loadgen udp")
    });
    let offered = r.sent_packets as f64 * size as f64 * 8.0 / secs;
    eprintln!(
        "loadgen udp {size} B: offered {:.1} Mbit/s ({} datagrams), received {:.1} Mbit/s ({} datagrams)",
        offered / 1e6,
        r.sent_packets,
        r.bits_per_second / 1e6,
        r.packets
    );
    (r.bits_per_second, offered)
}

/// 1 Gbit/s UDP both directions. With 1400-byte datagrams (MTU 1500) the
/// generator on this shared 2-core VM tops out below 1 Gbit/s (0.7-0.93
/// measured), so the limit is checked with jumbo frames (MTU 9000, 8900-byte
/// datagrams, 1.5 Gbit/s offered): received within ±5 % of 1 Gbit/s. At
/// MTU 1500 the check is what the policer admits relative to the offered
/// load: everything below the limit passes, never more than the limit.
#[test]
fn udp_1g_both_directions() {
    let Some(_serial) = privileged("udp_1g_both_directions") else {
        return;
    };
    let mut node = Node::new();
    let a = node.add_pod("x", "a");
    let agent = Agent::start(&node, &[]);
    let pod = &node.pods[a];
    let mut spec = pod.spec();
    spec.egress = limit(1_000_000_000);
    spec.ingress = limit(1_000_000_000);
    agent.register(spec);
    let gw = IpAddr::V4(pod.gw4);
    let ip = IpAddr::V4(pod.ip4);
    let mut port = 7100;
    for (mtu, size) in [(9000u32, 8900usize), (1500, 1400)] {
        set_mtu(&node, a, mtu);
        for reverse in [false, true] {
            let dir = if reverse { "ingress" } else { "egress" };
            let (c, s, at) = if reverse {
                (&node.netns, &pod.netns, ip)
            } else {
                (&pod.netns, &node.netns, gw)
            };
            if mtu == 9000 {
                rate_within(&format!("udp {dir} 1G (MTU 9000)"), 1e9, TOL, |i| {
                    loadgen_udp(c, s, at, port + i, 1_500_000_000, size).0
                });
                port += 3;
            } else {
                port += 1;
                let ctr = |e: &corral_dataplane_abi::api::EndpointStatus| {
                    if reverse {
                        e.ingress.clone()
                    } else {
                        e.egress.clone()
                    }
                };
                let before = ctr(&agent.list()[0]);
                let (got, offered) = loadgen_udp(c, s, at, port, 1_500_000_000, size);
                let after = ctr(&agent.list()[0]);
                let passed = after.packets - before.packets;
                let dropped = after.drop_rate - before.drop_rate;
                // policer verdicts over the whole run (omitted second too):
                // it may only drop what exceeds the limit (plus 5 %)
                let excess = ((offered - 1e9) / offered).max(0.0);
                let frac = dropped as f64 / (passed + dropped) as f64;
                eprintln!(
                    "udp {dir} MTU 1500: received {:.1} of {:.1} Mbit/s offered; policer passed {passed} dropped {dropped} ({:.2} %, excess over limit {:.2} %)",
                    got / 1e6,
                    offered / 1e6,
                    frac * 100.0,
                    excess * 100.0
                );
                assert!(got <= 1e9 * (1.0 + TOL), "udp {dir} MTU 1500 leaked");
                assert!(
                    frac <= excess + TOL,
                    "udp {dir} MTU 1500: policer dropped {:.2} % with {:.2} % offered above the limit",
                    frac * 100.0,
                    excess * 100.0
                );
            }
        }
    }
    let e = &agent.list()[0];
    assert!(e.egress.drop_rate > 0 && e.ingress.drop_rate > 0, "{e:?}");
}
