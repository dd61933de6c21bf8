//! `corral-agent status` (table and JSON), /metrics, /healthz, /readyz,
//! `--version`, and graceful SIGTERM.

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
    std::fs::write(
        node.manifests().join("np.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web-in, namespace: x}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n",
    )
    .expect("write policy");
    let agent = Agent::start(
        &node,
        &["--metrics-addr", "127.0.0.1:9465", "--pod-metrics"],
    );
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
    assert!(
        table.contains("selected by: networkpolicy x/web-in (ingress)"),
        "{table}"
    );
    assert_eq!(e["policies"][0], "networkpolicy x/web-in (ingress)", "{e}");

    let body = get(&node.netns, 9465, "/metrics");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("application/openmetrics-text"), "{body}");
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
    assert!(
        body.contains("corral_forward_count_total{direction=\"egress\"}"),
        "{body}"
    );
    let h = get(&node.netns, 9465, "/healthz");
    assert!(h.starts_with("HTTP/1.1 200") && h.ends_with("ok"), "{h}");
    let r = get(&node.netns, 9465, "/readyz");
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("ok"), "{r}");
    let nf = get(&node.netns, 9465, "/nope");
    assert!(nf.starts_with("HTTP/1.1 404"), "{nf}");
}

/// One HTTP/1.1 GET to 127.0.0.1:`port` inside `netns`; the whole response.
fn get(netns: &str, port: u16, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    in_netns(netns, move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics connect");
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(req.as_bytes()).expect("write");
        let mut b = String::new();
        let _ = s.read_to_string(&mut b);
        b
    })
}

fn sample_lines(body: &str) -> Vec<String> {
    let text = body.split("\r\n\r\n").nth(1).unwrap_or("");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(String::from)
        .collect()
}

#[test]
fn metrics_cardinality_without_and_with_pod_metrics() {
    let Some(_serial) = privileged("metrics_cardinality_without_and_with_pod_metrics") else {
        return;
    };
    let mut node = Node::new();
    let pods: Vec<usize> = (0..4)
        .map(|i| node.add_pod("x", &format!("p{i}")))
        .collect();
    let mut agent = Agent::start(&node, &["--metrics-addr", "127.0.0.1:9466"]);
    for &i in &pods {
        agent.register(node.pods[i].spec());
    }
    // aggregates only: the node's series do not depend on the pod count
    // (health gauges appear once sampled; they are per node as well)
    let body = get(&node.netns, 9466, "/metrics");
    let lines: Vec<String> = sample_lines(&body)
        .into_iter()
        .filter(|l| !l.starts_with("corral_net_"))
        .collect();
    assert!(
        !lines.iter().any(|l| l.starts_with("corral_endpoint_")),
        "{lines:#?}"
    );
    assert_eq!(lines.len(), 14, "{lines:#?}");
    assert!(
        lines.contains(&"corral_endpoints 4".to_string()),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l
                .starts_with("corral_drop_count_total{reason=\"policy\",direction=\"ingress\"}")),
        "{lines:#?}"
    );

    // same node, --pod-metrics: 12 more series per pod
    agent.kill9();
    agent.args.extend(["--pod-metrics".to_string()]);
    agent.spawn();
    let body = get(&node.netns, 9466, "/metrics");
    let lines: Vec<String> = sample_lines(&body)
        .into_iter()
        .filter(|l| !l.starts_with("corral_net_"))
        .collect();
    assert_eq!(lines.len(), 14 + 4 * 12, "{lines:#?}");
    for i in 0..4 {
        assert!(
            lines.iter().any(|l| l.starts_with(&format!(
                "corral_endpoint_bytes_total{{namespace=\"x\",pod=\"p{i}\",direction=\"ingress\"}}"
            ))),
            "p{i}: {lines:#?}"
        );
    }
}

#[test]
fn version_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_corral-agent"))
        .arg("--version")
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("corral-agent {}", env!("CARGO_PKG_VERSION"))
    );
    // --pod-metrics without an address to serve them is rejected by name
    let out = Command::new(env!("CARGO_BIN_EXE_corral-agent"))
        .args(["--pod-metrics", "--socket", "/nonexistent/x.sock"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--metrics-addr"),
        "{out:?}"
    );
}

/// SIGTERM (and SIGINT): exit 0; programs, links and maps stay pinned and
/// keep enforcing policy without the process.
#[test]
fn sigterm_exits_zero_and_enforcement_stays() {
    let Some(_serial) = privileged("sigterm_exits_zero_and_enforcement_stays") else {
        return;
    };
    let mut node = Node::new();
    let a = node.add_pod("x", "a");
    let b = node.add_pod("y", "b");
    std::fs::write(
        node.manifests().join("np.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-in, namespace: x}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n",
    )
    .expect("write policy");
    serve(&node.pods[a].netns, 8080);
    serve(&node.pods[b].netns, 8080);
    for (sig, name) in [
        (rustix::process::Signal::TERM, "SIGTERM"),
        (rustix::process::Signal::INT, "SIGINT"),
    ] {
        let mut agent = Agent::start(&node, &["--attach", "tcx"]);
        agent.register(node.pods[a].spec());
        agent.register(node.pods[b].spec());
        let (pa, pb) = (&node.pods[a], &node.pods[b]);
        assert!(
            !tcp(&pb.netns, std::net::IpAddr::V4(pa.ip4), 8080),
            "policy denies y/b -> x/a"
        );
        assert!(
            tcp(&pa.netns, std::net::IpAddr::V4(pb.ip4), 8080),
            "x/a -> y/b allowed"
        );
        let mut child = agent.child.take().expect("child");
        let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, sig).expect("signal");
        let t = std::time::Instant::now();
        let st = loop {
            if let Some(st) = child.try_wait().expect("wait") {
                break st;
            }
            assert!(
                t.elapsed() < std::time::Duration::from_secs(15),
                "{name}: agent still running"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        assert!(st.success(), "{name}: exit {st}: {}", agent.log_text());
        assert!(agent.log_text().contains(name), "{}", agent.log_text());
        // pins stay, enforcement stays
        let maps = agent.pin_dir.join("maps");
        for m in ["corral_endpoints", "corral_policy", "corral_ct"] {
            assert!(maps.join(m).exists(), "{name}: {m} pin gone");
        }
        let links = std::fs::read_dir(agent.pin_dir.join("links"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(
            links, 4,
            "{name}: 2 endpoints x 2 directions of TCX links stay pinned"
        );
        assert!(
            !tcp(&pb.netns, std::net::IpAddr::V4(pa.ip4), 8080),
            "{name}: still denied"
        );
        assert!(
            tcp(&pa.netns, std::net::IpAddr::V4(pb.ip4), 8080),
            "{name}: still allowed"
        );
        drop(agent);
    }
}

/// A TCP server on [::]:`port` in `netns` answering one byte.
fn serve(netns: &str, port: u16) {
    in_netns(netns, move || {
        let l = std::net::TcpListener::bind(("::", port)).expect("bind");
        std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                let _ = s.write_all(b"k");
            }
        });
    });
}

/// Connects from `netns` and reads the server's byte (800 ms bound).
fn tcp(netns: &str, to: std::net::IpAddr, port: u16) -> bool {
    in_netns(netns, move || {
        let t = std::time::Duration::from_millis(800);
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&(to, port).into(), t) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(t));
        let mut b = [0u8; 1];
        matches!(s.read(&mut b), Ok(1))
    })
}
