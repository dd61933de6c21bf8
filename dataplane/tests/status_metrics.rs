//! `corral-agent status` (table and JSON) and the /metrics endpoint.

mod common;
use common::*;
use std::io::{Read, Write};
use std::process::Command;

#[test]
fn status_and_metrics_show_counters() {
    let Some(_serial) = privileged("status_and_metrics_show_counters") else {
        return;
    };
    let mut node = Node::new();
    let a = node.add_pod("x", "web");
    let agent = Agent::start(&node, &["--metrics-addr", "127.0.0.1:9465"]);
    let pod = &node.pods[a];
    let mut s = pod.spec();
    s.egress = limit(5_000_000);
    agent.register(s);
    // some traffic so counters are non-zero
    let gw = pod.gw4;
    in_netns(&pod.netns, move || {
        let u = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
        for _ in 0..50 {
            let _ = u.send_to(&[1u8; 500], (gw, 9));
        }
    });
    let bin = env!("CARGO_BIN_EXE_corral-agent");
    let sock = agent.socket.display().to_string();
    let out = Command::new(bin)
        .args(["status", "--socket", &sock, "--output", "json"])
        .output()
        .expect("status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    let e = &v["endpoints"][0];
    assert_eq!(e["spec"]["name"], "web");
    assert!(e["egress"]["packets"].as_u64().unwrap_or(0) >= 50, "{e}");
    let out = Command::new(bin)
        .args(["status", "--socket", &sock])
        .output()
        .expect("status");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("x/web") && table.contains("egress") && table.contains("DROP_RATE"),
        "{table}"
    );

    let body = in_netns(&node.netns, || {
        let mut s = std::net::TcpStream::connect("127.0.0.1:9465").expect("metrics connect");
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
            .expect("write");
        let mut b = String::new();
        let _ = s.read_to_string(&mut b);
        b
    });
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    let line = body
        .lines()
        .find(|l| {
            l.starts_with("corral_endpoint_packets_total")
                && l.contains("pod=\"web\"")
                && l.contains("egress")
        })
        .unwrap_or_else(|| panic!("no packet counter for web: {body}"));
    let n: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|x| x.parse().ok())
        .expect("value");
    assert!(n >= 50.0, "{line}");
    assert!(
        body.contains("corral_endpoint_drops_total{") && body.contains("reason=\"rate\""),
        "{body}"
    );
}
