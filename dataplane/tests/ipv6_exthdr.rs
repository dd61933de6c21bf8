//! IPv6 extension headers and fragments under NetworkPolicy port rules:
//! TCP connections whose packets carry a destination-options or hop-by-hop
//! header (set with IPV6_DSTOPTS / IPV6_HOPOPTS) and fragmented UDP
//! datagrams (IPv6 fragment header; IPv4 fragments too) must be matched on
//! their real L4 ports: allowed port passes (with its replies), other port
//! is denied.

mod common;
use common::*;
use std::io::Write;
use std::net::{IpAddr, TcpListener, UdpSocket};

/// Python client: connects over TCP (optionally with an IPv6 extension
/// header on every packet of the socket) and prints the first byte, or
/// sends one UDP datagram of `size` bytes and prints the reply length.
const CLIENT: &str = r#"
import socket, sys
mode, host, port, opt, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM if mode == "tcp" else socket.SOCK_DGRAM)
# 8-byte options header: next header (kernel fills), length 0, PadN(4)
hdr = bytes([0, 0, 1, 4, 0, 0, 0, 0])
if opt == "dst":
    s.setsockopt(socket.IPPROTO_IPV6, 59, hdr)  # IPV6_DSTOPTS
elif opt == "hop":
    s.setsockopt(socket.IPPROTO_IPV6, 54, hdr)  # IPV6_HOPOPTS
s.settimeout(0.6)
try:
    if mode == "tcp":
        s.connect((host, port))
        print(len(s.recv(1)))
    else:
        s.sendto(b"x" * size, (host, port))
        print(len(s.recvfrom(65535)[0]))
except Exception as e:
    print("0", e)
"#;

fn client(pod: &Pod, mode: &str, ip: IpAddr, port: u16, opt: &str, size: usize) -> usize {
    let out = pod.exec(&[
        "python3",
        "-c",
        CLIENT,
        mode,
        &ip.to_string(),
        &port.to_string(),
        opt,
        &size.to_string(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn serve(netns: &str) {
    in_netns(netns, || {
        for port in [80u16, 81] {
            let l = TcpListener::bind(("::", port)).expect("bind tcp");
            std::thread::spawn(move || {
                for mut s in l.incoming().flatten() {
                    let _ = s.write_all(b"k");
                }
            });
        }
        for port in [53u16, 54] {
            let u = UdpSocket::bind(("::", port)).expect("bind udp");
            std::thread::spawn(move || {
                let mut b = vec![0u8; 65536];
                while let Ok((n, from)) = u.recv_from(&mut b) {
                    let _ = u.send_to(&b[..n], from);
                }
            });
        }
    });
}

#[test]
fn extension_headers_and_fragments_follow_port_rules() {
    let Some(_g) = privileged("extension_headers_and_fragments_follow_port_rules") else {
        return;
    };
    let mut node = Node::new();
    let a = node.add_pod("x", "a");
    let b = node.add_pod("x", "b");
    // x/a admits only TCP 80 and UDP 53, from everywhere
    std::fs::write(
        node.manifests().join("p.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a-ports, namespace: x}\nspec:\n  podSelector: {matchLabels: {app: a}}\n  policyTypes: [Ingress]\n  ingress:\n  - ports: [{protocol: TCP, port: 80}, {protocol: UDP, port: 53}]\n",
    )
    .unwrap();
    let agent = Agent::start(&node, &[]);
    agent.register_apps(&node, &[(a, "a"), (b, "b")]);
    serve(&node.pods[a].netns);
    let (pa, pb) = (&node.pods[a], &node.pods[b]);
    let a6 = IpAddr::V6(pa.ip6);
    let a4 = IpAddr::V4(pa.ip4);

    for opt in ["none", "dst", "hop"] {
        assert_eq!(
            client(pb, "tcp", a6, 80, opt, 0),
            1,
            "TCP/80 with {opt} allowed"
        );
        assert_eq!(
            client(pb, "tcp", a6, 81, opt, 0),
            0,
            "TCP/81 with {opt} denied"
        );
    }
    // options on UDP too
    assert_eq!(client(pb, "udp", a6, 53, "dst", 100), 100);
    assert_eq!(client(pb, "udp", a6, 54, "dst", 100), 0);
    // fragmented datagrams (MTU 1500): all fragments follow the first one's
    // ports, and the fragmented reply passes as a reply
    for ip in [a6, a4] {
        assert_eq!(
            client(pb, "udp", ip, 53, "none", 4000),
            4000,
            "{ip} UDP/53 fragmented"
        );
        assert_eq!(
            client(pb, "udp", ip, 54, "none", 4000),
            0,
            "{ip} UDP/54 fragmented"
        );
    }
    let eps = agent.list();
    let ea = eps.iter().find(|e| e.spec.name == "a").unwrap();
    assert!(
        ea.ingress.drop_policy >= 6,
        "denied packets counted: {:?}",
        ea.ingress
    );
    assert_eq!(ea.ingress.drop_malformed, 0, "{:?}", ea.ingress);
}
