//! kill -9 of the agent under traffic: pinned maps and links (TCX) or
//! clsact filters (default) keep enforcing limits and policy while it is
//! down; the restarted agent re-adopts them without resetting counters,
//! buckets or connections.

mod common;
use common::*;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

fn link_id(pin: &std::path::Path) -> u64 {
    let out = sh(&[
        "bpftool",
        "-j",
        "link",
        "show",
        "pinned",
        &pin.display().to_string(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bpftool link show {}: {e}", pin.display()));
    v["id"].as_u64().expect("link id")
}

#[test]
fn kill9_and_restart_keeps_limits_policy_and_state() {
    let Some(_serial) = privileged("kill9_and_restart_keeps_limits_policy_and_state") else {
        return;
    };
    let mut node = Node::new();
    let a = node.add_pod("x", "a");
    let b = node.add_pod("x", "b");
    std::fs::write(
        node.manifests().join("p.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: only-80, namespace: x}\nspec:\n  podSelector: {matchLabels: {app: a}}\n  ingress: [{ports: [{port: 80}]}]\n",
    )
    .expect("write policy");
    let mut agent = Agent::start(&node, &["--attach", "tcx"]);
    let (pa, pb) = (&node.pods[a], &node.pods[b]);
    let mut sa = pa.spec();
    sa.labels = [("app".to_string(), "a".to_string())].into();
    sa.egress = limit(20_000_000);
    agent.register(sa);
    agent.register(pb.spec());

    // a listens on 81 (forbidden by policy)
    in_netns(&pa.netns, || {
        let l = TcpListener::bind(("0.0.0.0", 81)).expect("bind 81");
        std::thread::spawn(move || for _s in l.incoming() {});
    });
    let links: Vec<_> = std::fs::read_dir(agent.pin_dir.join("links"))
        .unwrap_or_else(|e| panic!("links dir: {e}\n{}", agent.log_text()))
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(links.len(), 4, "two endpoints x two directions: {links:?}");
    let ids_before: Vec<u64> = links.iter().map(|p| link_id(p)).collect();

    // prober: b -> a:81 must never connect, before, during and after
    let stop = Arc::new(AtomicBool::new(false));
    let (leaks, probes) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let prober = {
        let (stop, leaks, probes) = (stop.clone(), leaks.clone(), probes.clone());
        let (ns, ip) = (pb.netns.clone(), pa.ip4);
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let ok = in_netns(&ns, move || {
                    TcpStream::connect_timeout(
                        &SocketAddr::new(IpAddr::V4(ip), 81),
                        Duration::from_millis(100),
                    )
                    .is_ok()
                });
                probes.fetch_add(1, Ordering::SeqCst);
                if ok {
                    leaks.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    // bulk TCP from a for 8 s while the agent is killed and restarted
    let traffic = {
        let (ans, nns, gw) = (pa.netns.clone(), node.netns.clone(), pa.gw4);
        std::thread::spawn(move || iperf(&ans, &nns, IpAddr::V4(gw), 5401, 9, None, false).bps)
    };
    std::thread::sleep(Duration::from_secs(3));
    let before = agent.list();
    agent.kill9();
    std::thread::sleep(Duration::from_secs(2));
    agent.spawn();
    let after = agent.list();
    let bps = traffic.join().expect("iperf thread");
    stop.store(true, Ordering::SeqCst);
    prober.join().expect("prober");

    assert_within("tcp egress 20M across kill -9 + restart", bps, 20e6, 0.05);
    assert!(
        probes.load(Ordering::SeqCst) >= 10,
        "prober ran too few times"
    );
    assert_eq!(
        leaks.load(Ordering::SeqCst),
        0,
        "forbidden connections got through"
    );
    let ids_after: Vec<u64> = links.iter().map(|p| link_id(p)).collect();
    assert_eq!(
        ids_before, ids_after,
        "links were re-adopted, not recreated"
    );
    assert_eq!(after.len(), 2, "registry restored");
    let find = |v: &Vec<corral_dataplane_abi::api::EndpointStatus>| {
        v.iter()
            .find(|e| e.spec.name == "a")
            .expect("a")
            .egress
            .clone()
    };
    let (cb, ca) = (find(&before), find(&after));
    assert!(
        ca.bytes >= cb.bytes && ca.drop_rate >= cb.drop_rate,
        "counters reset: {cb:?} -> {ca:?}"
    );
    assert!(
        after
            .iter()
            .find(|e| e.spec.name == "a")
            .expect("a")
            .policy_ingress
    );
    assert!(
        agent.log_text().contains("endpoint restored"),
        "{}",
        agent.log_text()
    );
}

/// `formatted` entries of a pinned map, via bpftool (BTF-formatted JSON).
fn dump(pin: &std::path::Path) -> Vec<serde_json::Value> {
    let out = sh(&[
        "bpftool",
        "-j",
        "map",
        "dump",
        "pinned",
        &pin.display().to_string(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bpftool map dump {}: {e}", pin.display()));
    let mut entries: Vec<serde_json::Value> = v
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["formatted"].clone())
        .collect();
    entries.sort_by_key(|e| e.to_string());
    entries
}

#[test]
fn restart_keeps_bucket_level_and_conntrack() {
    let Some(_serial) = privileged("restart_keeps_bucket_level_and_conntrack") else {
        return;
    };
    let mut node = Node::new();
    let a = node.add_pod("x", "a");
    std::fs::write(
        node.manifests().join("p.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: egress-any, namespace: x}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n  egress: [{}]\n",
    )
    .expect("write policy");
    let mut agent = Agent::start(&node, &[]);
    let pod = &node.pods[a];
    let mut s = pod.spec();
    // 1 Mbit/s = 125 kB/s with a 1 MB bucket: drain ~900 kB of it
    s.egress = Some(corral_dataplane_abi::api::LimitSpec {
        rate_bps: 1_000_000,
        burst_bytes: Some(1_000_000),
    });
    agent.register(s);
    let gw = pod.gw4;
    in_netns(&pod.netns, move || {
        let u = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
        for _ in 0..850 {
            let _ = u.send_to(&[0u8; 1000], (gw, 9));
        }
    });
    let maps = agent.pin_dir.join("maps");
    let egress_tokens = |b: &[serde_json::Value]| {
        b.iter()
            .find(|e| e["key"]["dir"].as_u64() == Some(1))
            .and_then(|e| e["value"]["tokens"].as_i64())
            .expect("egress bucket")
    };
    let udp9 = |ct: &[serde_json::Value]| {
        ct.iter()
            .filter(|e| {
                e["key"]["proto"].as_u64() == Some(17) && e["key"]["dport"].as_u64() == Some(9)
            })
            .count()
    };
    let t0 = egress_tokens(&dump(&maps.join("corral_ep_buckets")));
    assert!(t0 < 300_000, "bucket not drained: {t0}");
    assert_eq!(
        udp9(&dump(&maps.join("corral_ct"))),
        1,
        "conntrack entry of the UDP flow"
    );
    let t = std::time::Instant::now();
    agent.kill9();
    agent.spawn();
    let t1 = egress_tokens(&dump(&maps.join("corral_ep_buckets")));
    // refill during the restart is at most 125 kB/s; a reset would be ~1 MB
    let max_refill = (t.elapsed().as_secs_f64() + 0.5) * 125_000.0;
    eprintln!(
        "tokens before {t0}, after {t1}, restart took {:?}",
        t.elapsed()
    );
    assert!(
        (t1 as f64) <= t0 as f64 + max_refill && t1 < 900_000,
        "token bucket reset across restart: {t0} -> {t1}"
    );
    assert_eq!(
        udp9(&dump(&maps.join("corral_ct"))),
        1,
        "conntrack lost across restart"
    );
}

/// A pinned map left by an agent version with another layout (here
/// `corral_np_fwd` as it was before its entries carried the SNAT address:
/// 32-byte values) is replaced at start, with a warning naming it, instead
/// of being re-used and failing the verifier; the other pins are adopted.
#[test]
fn restart_replaces_pinned_map_of_another_layout() {
    let Some(_serial) = privileged("restart_replaces_pinned_map_of_another_layout") else {
        return;
    };
    let node = Node::new();
    let mut agent = Agent::start(&node, &[]);
    agent.kill9();
    let maps = agent.pin_dir.join("maps");
    let pin = maps.join("corral_np_fwd");
    let value_size = |p: &std::path::Path| -> u64 {
        let o = std::process::Command::new("bpftool")
            .args(["-j", "map", "show", "pinned"])
            .arg(p)
            .output()
            .expect("bpftool");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("bpftool map show: {e}: {o:?}"));
        v["bytes_value"].as_u64().expect("bytes_value")
    };
    assert_eq!(value_size(&pin), 48);
    let ct_id = |p: &std::path::Path| -> u64 {
        let o = std::process::Command::new("bpftool")
            .args(["-j", "map", "show", "pinned"])
            .arg(p)
            .output()
            .expect("bpftool");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        v["id"].as_u64().expect("id")
    };
    let ct_before = ct_id(&maps.join("corral_ct"));
    std::fs::remove_file(&pin).expect("remove pin");
    let out = std::process::Command::new("bpftool")
        .args(["map", "create"])
        .arg(&pin)
        .args([
            "type",
            "lru_hash",
            "key",
            "40",
            "value",
            "32",
            "entries",
            "1024",
            "name",
            "corral_np_fwd",
        ])
        .output()
        .expect("bpftool map create");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(value_size(&pin), 32);
    agent.spawn();
    assert_eq!(value_size(&pin), 48, "{}", agent.log_text());
    assert_eq!(
        ct_id(&maps.join("corral_ct")),
        ct_before,
        "other pins adopted"
    );
    let log = agent.log_text();
    assert!(
        log.contains("corral_np_fwd") && log.contains("another layout"),
        "{log}"
    );
}
