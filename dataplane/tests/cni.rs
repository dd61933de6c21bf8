//! corral-cni end to end: the real binary executed the way a runtime does
//! (env + stdin, exec, inside the node netns), with the reference plugins
//! from Debian's containernetworking-plugins (/usr/lib/cni) and a running
//! corral-agent.

mod common;
use common::cni::{PodNs, REF, cni_bin, cni_path, refs_ok};
use common::*;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{Value, json};

/// The "runtime": node netns, agent, dirs, and plugin execution.
struct Rt {
    node: Node,
    agent: Agent,
    data_dir: PathBuf,
    ipam_dir: PathBuf,
    log: PathBuf,
    /// CNI_PATH handed to the plugins
    path: String,
}

struct Out {
    code: i32,
    json: Value,
    raw: String,
}

impl Rt {
    fn new() -> Rt {
        let node = Node::new();
        let agent = Agent::start(&node, &[]);
        let data_dir = node.dir.path().join("cni");
        let ipam_dir = node.dir.path().join("ipam");
        let log = node.dir.path().join("cni.log");
        Rt {
            node,
            agent,
            data_dir,
            ipam_dir,
            log,
            path: cni_path(),
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Standalone config: host-local IPv4 (+ IPv6 when `dual`).
    fn standalone(&self, version: &str, dual: bool) -> Value {
        let mut ranges = vec![json!([{"subnet": "198.18.0.0/24"}])];
        if dual {
            ranges.push(json!([{"subnet": "2001:db8:c::/64"}]));
        }
        json!({
            "cniVersion": version,
            "name": "corralnet",
            "type": "corral-cni",
            "agentSocket": self.agent.socket,
            "dataDir": self.data_dir,
            "logFile": self.log,
            "mtu": 1400,
            "ipam": {"type": "host-local", "dataDir": self.ipam_dir, "ranges": ranges}
        })
    }

    /// Executes `plugin` inside the node netns like a runtime: env + stdin.
    #[allow(clippy::too_many_arguments)]
    fn exec(
        &self,
        plugin: &str,
        cmd: &str,
        cid: &str,
        netns: &str,
        ifname: &str,
        args: &str,
        conf: &Value,
    ) -> Out {
        let o = cni::run_plugin(
            &self.node.netns,
            plugin,
            cmd,
            &[
                ("CNI_PATH", &self.path),
                ("CNI_CONTAINERID", cid),
                ("CNI_NETNS", netns),
                ("CNI_IFNAME", ifname),
                ("CNI_ARGS", args),
            ],
            &self.log,
            conf.to_string().as_bytes(),
        );
        let raw = o.raw;
        let json = if raw.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&raw)
                .unwrap_or_else(|e| panic!("{plugin} {cmd}: stdout is not JSON ({e}): {raw:?}"))
        };
        Out {
            code: o.code,
            json,
            raw,
        }
    }

    fn cni(&self, cmd: &str, cid: &str, pod: Option<&PodNs>, args: &str, conf: &Value) -> Out {
        let ns = pod.map(|p| p.path()).unwrap_or_default();
        self.exec(cni_bin(), cmd, cid, &ns, "eth0", args, conf)
    }

    fn ok(&self, cmd: &str, cid: &str, pod: Option<&PodNs>, args: &str, conf: &Value) -> Value {
        let o = self.cni(cmd, cid, pod, args, conf);
        assert_eq!(
            o.code,
            0,
            "{cmd} {cid}: {}\nlog:\n{}",
            o.raw,
            self.log_text()
        );
        o.json
    }

    /// Nothing left behind: no corral veth, no host-local reservation, no
    /// attachment state, no agent endpoint, no pinned link.
    fn assert_clean(&self) {
        let links =
            String::from_utf8_lossy(&self.node.exec(&["ip", "-o", "link"]).stdout).to_string();
        assert!(
            !links.contains("crl") && !links.contains("veth"),
            "leaked veth: {links}"
        );
        let mut reserved = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&self.ipam_dir) {
            for net in rd.flatten() {
                for f in std::fs::read_dir(net.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let n = f.file_name().to_string_lossy().to_string();
                    if n != "lock" && !n.starts_with("last_reserved_ip") {
                        reserved.push(n);
                    }
                }
            }
        }
        assert!(
            reserved.is_empty(),
            "leaked IPAM reservations: {reserved:?}"
        );
        let states: Vec<_> = std::fs::read_dir(self.data_dir.join("corralnet"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .map(|e| e.file_name())
            .collect();
        assert!(states.is_empty(), "leaked attachment state: {states:?}");
        let eps = self.agent.list();
        assert!(eps.is_empty(), "leaked agent endpoints: {eps:?}");
        let pins: Vec<_> = std::fs::read_dir(self.agent.pin_dir.join("links"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(pins.is_empty(), "leaked pinned links: {pins:?}");
    }
}

fn ips_of(r: &Value) -> Vec<IpAddr> {
    r["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["address"].as_str()?.split('/').next()?.parse().ok())
        .collect()
}

static PORT: AtomicU32 = AtomicU32::new(7100);

/// A TCP connection from netns `from` to `to_ip` in netns `to` works
/// (real listener + connect + one byte echoed), bounded to ~3 s.
fn reach(from: &str, to: &str, to_ip: IpAddr) -> bool {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::time::{Duration, Instant};
    let port = PORT.fetch_add(1, Ordering::SeqCst) as u16;
    let any: IpAddr = if to_ip.is_ipv4() {
        "0.0.0.0".parse().unwrap()
    } else {
        "::".parse().unwrap()
    };
    let l = in_netns(to, move || TcpListener::bind(SocketAddr::new(any, port))).expect("listener");
    l.set_nonblocking(true).expect("nonblocking");
    let srv = std::thread::spawn(move || {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(4) {
            if let Ok((mut s, _)) = l.accept() {
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut b = [0u8; 1];
                if s.read_exact(&mut b).is_ok() {
                    let _ = s.write_all(&b);
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let ok = in_netns(from, move || {
        let addr = SocketAddr::new(to_ip, port);
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(3)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut b = [0u8; 1];
        s.write_all(b"x").is_ok() && s.read_exact(&mut b).is_ok() && &b == b"x"
    });
    let _ = srv.join();
    ok
}

#[test]
fn standalone_dual_stack_add_check_del() {
    let Some(_g) = privileged("standalone_dual_stack_add_check_del") else {
        return;
    };
    if !refs_ok(
        "standalone_dual_stack_add_check_del",
        &["host-local", "bridge", "ptp"],
    ) {
        return;
    }
    let rt = Rt::new();
    let conf = rt.standalone("1.1.0", true);
    let (a, b) = (PodNs::new("crc"), PodNs::new("crc"));
    let args_a = "IgnoreUnknown=1;K8S_POD_NAMESPACE=x;K8S_POD_NAME=a;K8S_POD_INFRA_CONTAINER_ID=ca;K8S_POD_UID=u1";
    let ra = rt.ok("ADD", "ca", Some(&a), args_a, &conf);
    let rb = rt.ok("ADD", "cb", Some(&b), "K8S_POD_NAME=b", &conf);
    assert_eq!(ra["cniVersion"], "1.1.0");
    let ia = ips_of(&ra);
    let ib = ips_of(&rb);
    assert_eq!(ia.len(), 2, "dual stack: {ra}");
    assert!(ia.iter().any(|i| i.is_ipv4()) && ia.iter().any(|i| i.is_ipv6()));
    assert_eq!(ra["interfaces"][1]["name"], "eth0");
    assert_eq!(ra["interfaces"][1]["sandbox"], a.path());
    assert!(ra["interfaces"][0]["name"].as_str().unwrap().len() <= 15);
    assert!(ra["ips"][0].get("version").is_none());
    // MTU applied in the pod
    let l = String::from_utf8_lossy(&a.exec(&["ip", "link", "show", "eth0"]).stdout).to_string();
    assert!(l.contains("mtu 1400"), "{l}");
    // retry of ADD: same answer, nothing new
    let ra2 = rt.ok("ADD", "ca", Some(&a), args_a, &conf);
    assert_eq!(ra, ra2, "ADD retry must be idempotent");
    // pod ↔ pod (v4, v6) and pod → host gateway
    for (x, y, ips) in [(&a, &b, &ib), (&b, &a, &ia)] {
        for ip in ips.iter() {
            assert!(
                reach(&x.0, &y.0, *ip),
                "no traffic to {ip}\n{}",
                rt.log_text()
            );
        }
    }
    let gw: IpAddr = "169.254.1.1".parse().unwrap();
    assert!(reach(&a.0, &rt.node.netns, gw), "pod → host");
    assert!(reach(&rt.node.netns, &a.0, ia[0]), "host → pod");
    // registered with the agent under the pod identity from CNI_ARGS
    let eps = rt.agent.list();
    assert_eq!(eps.len(), 2);
    let ea = eps.iter().find(|e| e.spec.name == "a").expect("pod a");
    assert_eq!(ea.spec.namespace, "x");
    let eb = eps.iter().find(|e| e.spec.name == "b").expect("pod b");
    assert_eq!(
        eb.spec.namespace, "default",
        "podman passes only K8S_POD_NAME"
    );
    // CHECK passes, then detects a removed address and a removed route
    rt.ok("CHECK", "ca", Some(&a), args_a, &conf);
    let v4 = ia.iter().find(|i| i.is_ipv4()).unwrap();
    must(&[
        "ip",
        "netns",
        "exec",
        &a.0,
        "ip",
        "addr",
        "del",
        &format!("{v4}/32"),
        "dev",
        "eth0",
    ]);
    let c = rt.cni("CHECK", "ca", Some(&a), args_a, &conf);
    assert_eq!(c.code, 103, "{}", c.raw);
    assert!(
        c.json["msg"].as_str().unwrap().contains("address"),
        "{}",
        c.raw
    );
    must(&[
        "ip", "netns", "exec", &b.0, "ip", "-6", "route", "del", "default",
    ]);
    let c = rt.cni("CHECK", "cb", Some(&b), "", &conf);
    assert_eq!(c.code, 103, "{}", c.raw);
    assert!(
        c.json["msg"].as_str().unwrap().contains("route"),
        "{}",
        c.raw
    );
    // DEL, twice (idempotent), also without netns
    for _ in 0..2 {
        rt.ok("DEL", "ca", Some(&a), args_a, &conf);
        rt.ok("DEL", "cb", None, "", &conf);
    }
    rt.assert_clean();
    // CHECK of a deleted container: container unknown
    assert_eq!(rt.cni("CHECK", "ca", Some(&a), "", &conf).code, 3);
}

#[test]
fn chained_after_bridge_enforces_bandwidth_and_after_ptp() {
    let t = "chained_after_bridge_enforces_bandwidth_and_after_ptp";
    let Some(_g) = privileged(t) else { return };
    if !refs_ok(t, &["host-local", "bridge", "ptp"]) {
        return;
    }
    let rt = Rt::new();
    let ipam = |subnet: &str| json!({"type": "host-local", "dataDir": rt.ipam_dir, "ranges": [[{"subnet": subnet}]]});
    let corral = |prev: &Value, bw: Option<Value>| {
        let mut c = json!({
            "cniVersion": "1.0.0", "name": "corralnet", "type": "corral-cni",
            "agentSocket": rt.agent.socket, "dataDir": rt.data_dir, "logFile": rt.log,
            "prevResult": prev,
        });
        if let Some(b) = bw {
            c["runtimeConfig"] = json!({"bandwidth": b});
        }
        c
    };
    // --- bridge + host-local, then corral-cni with a bandwidth limit
    let bridge = json!({"cniVersion": "1.0.0", "name": "corralnet", "type": "bridge",
        "bridge": "crbr0", "isGateway": true, "ipam": ipam("198.18.4.0/24")});
    let pod = PodNs::new("crc");
    let b = rt.exec(
        &format!("{REF}/bridge"),
        "ADD",
        "cbr",
        &pod.path(),
        "eth0",
        "",
        &bridge,
    );
    assert_eq!(b.code, 0, "bridge: {}", b.raw);
    let bw = json!({"ingressRate": 20_000_000, "ingressBurst": 6_000_000});
    let cc = corral(&b.json, Some(bw));
    let r = rt.ok(
        "ADD",
        "cbr",
        Some(&pod),
        "K8S_POD_NAMESPACE=y;K8S_POD_NAME=br",
        &cc,
    );
    // prevResult passed through
    assert_eq!(r["ips"], b.json["ips"]);
    assert_eq!(r["interfaces"], b.json["interfaces"]);
    let eps = rt.agent.list();
    assert_eq!(eps.len(), 1);
    let host_if = eps[0].spec.ifname.clone();
    assert!(
        b.json["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == host_if.as_str() && i.get("sandbox").is_none()),
        "registered {host_if} is not the bridge's host veth: {}",
        b.json
    );
    rt.ok("CHECK", "cbr", Some(&pod), "", &cc);
    // node → pod = pod ingress, limited to 20 Mbit/s by corral
    let pod_ip = ips_of(&b.json)[0];
    let m = iperf(&rt.node.netns, &pod.0, pod_ip, 5711, 3, None, false);
    assert_within("chained bridge: ingress 20M", m.bps, 20e6, 0.10);
    // DEL in runtime order (reverse): corral, then bridge
    rt.ok("DEL", "cbr", Some(&pod), "", &cc);
    assert!(rt.agent.list().is_empty());
    let d = rt.exec(
        &format!("{REF}/bridge"),
        "DEL",
        "cbr",
        &pod.path(),
        "eth0",
        "",
        &bridge,
    );
    assert_eq!(d.code, 0, "{}", d.raw);

    // --- ptp + host-local, then corral-cni
    let ptp = json!({"cniVersion": "1.0.0", "name": "corralnet", "type": "ptp",
        "ipam": ipam("198.18.5.0/24")});
    let pod2 = PodNs::new("crc");
    let p = rt.exec(
        &format!("{REF}/ptp"),
        "ADD",
        "cptp",
        &pod2.path(),
        "eth0",
        "",
        &ptp,
    );
    assert_eq!(p.code, 0, "ptp: {}", p.raw);
    let cc = corral(&p.json, None);
    rt.ok("ADD", "cptp", Some(&pod2), "K8S_POD_NAME=ptp", &cc);
    let eps = rt.agent.list();
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].spec.ips, vec![ips_of(&p.json)[0]]);
    rt.ok("DEL", "cptp", Some(&pod2), "", &cc);
    let d = rt.exec(
        &format!("{REF}/ptp"),
        "DEL",
        "cptp",
        &pod2.path(),
        "eth0",
        "",
        &ptp,
    );
    assert_eq!(d.code, 0, "{}", d.raw);
    rt.node.exec(&["ip", "link", "del", "crbr0"]);
    rt.assert_clean();
}

#[test]
fn errors_versions_rollback_and_agent_down() {
    let t = "errors_versions_rollback_and_agent_down";
    let Some(_g) = privileged(t) else { return };
    if !refs_ok(t, &["host-local", "bridge", "ptp"]) {
        return;
    }
    let mut rt = Rt::new();
    let pod = PodNs::new("crc");
    let good = rt.standalone("1.0.0", false);
    // VERSION
    let v = rt.cni("VERSION", "", None, "", &json!({"cniVersion": "1.1.0"}));
    assert_eq!(v.code, 0);
    assert_eq!(v.json["cniVersion"], "1.1.0");
    assert_eq!(
        v.json["supportedVersions"],
        json!(["0.4.0", "1.0.0", "1.1.0"])
    );
    // 0.4.0 result layout
    let r = rt.ok("ADD", "c04", Some(&pod), "", &rt.standalone("0.4.0", true));
    assert_eq!(r["cniVersion"], "0.4.0");
    let vers: Vec<_> = r["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["version"].clone())
        .collect();
    assert_eq!(vers, vec![json!("4"), json!("6")]);
    rt.ok("DEL", "c04", Some(&pod), "", &rt.standalone("0.4.0", true));

    let code = |o: &Out, want: u32, what: &str| {
        assert_eq!(o.code, want as i32, "{what}: {}", o.raw);
        assert_eq!(o.json["code"], want, "{what}: {}", o.raw);
        assert!(!o.json["msg"].as_str().unwrap_or("").is_empty(), "{what}");
        assert!(o.json["cniVersion"].is_string(), "{what}");
    };
    let raw = |s: &str| -> Out {
        // non-JSON stdin
        let o = cni::run_plugin(
            &rt.node.netns,
            cni_bin(),
            "ADD",
            &[
                ("CNI_CONTAINERID", "craw"),
                ("CNI_NETNS", &pod.path()),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", &rt.path),
            ],
            &rt.log,
            s.as_bytes(),
        );
        let raw = o.raw;
        Out {
            code: o.code,
            json: serde_json::from_str(&raw).unwrap_or(Value::Null),
            raw,
        }
    };
    code(&raw("{not json"), 6, "bad JSON");
    let mut c = good.clone();
    c["cniVersion"] = json!("0.3.1");
    code(&rt.cni("ADD", "cx", Some(&pod), "", &c), 1, "old version");
    let mut c = good.clone();
    c["mtu"] = json!("jumbo");
    let o = rt.cni("ADD", "cx", Some(&pod), "", &c);
    code(&o, 7, "mtu type");
    assert!(o.json["msg"].as_str().unwrap().contains("mtu"));
    let mut c = good.clone();
    c.as_object_mut().unwrap().remove("ipam");
    let o = rt.cni("ADD", "cx", Some(&pod), "", &c);
    code(&o, 7, "missing ipam");
    assert!(o.json["msg"].as_str().unwrap().contains("ipam"));
    let mut c = good.clone();
    c["ipam"]["ranges"] = json!([[{"subnet": "198.18.0.0/33"}]]);
    let o = rt.cni("ADD", "cx", Some(&pod), "", &c);
    code(&o, 7, "bad CIDR");
    assert!(o.raw.contains("198.18.0.0/33"), "{}", o.raw);
    let o = rt.exec(
        cni_bin(),
        "ADD",
        "cx",
        &pod.path(),
        "eth0-much-too-long",
        "",
        &good,
    );
    code(&o, 4, "ifname too long");
    let o = rt.exec(cni_bin(), "ADD", "", &pod.path(), "eth0", "", &good);
    code(&o, 4, "no container id");
    let o = rt.exec(cni_bin(), "FROB", "cx", &pod.path(), "eth0", "", &good);
    code(&o, 4, "unknown command");
    let o = rt.cni("ADD", "cx", Some(&pod), "K8S_POD_NAME", &good);
    code(&o, 4, "bad CNI_ARGS");
    let mut c = good.clone();
    c["runtimeConfig"] = json!({"bandwidth": {"ingressRate": "fast"}});
    code(
        &rt.cni("ADD", "cx", Some(&pod), "", &c),
        7,
        "bandwidth type",
    );
    let gone = PodNs("crc-does-not-exist".into());
    let o = rt.cni("ADD", "cx", Some(&gone), "", &good);
    code(&o, 3, "missing netns");
    std::mem::forget(gone);
    rt.assert_clean();

    // rollback: the agent rejects the endpoint after veth + IP exist
    let mut c = good.clone();
    c["runtimeConfig"] =
        json!({"io.kubernetes.cri.pod-annotations": {"corral.io/traffic-class": "gold"}});
    let o = rt.cni("ADD", "crb", Some(&pod), "K8S_POD_NAME=rb", &c);
    code(&o, 101, "agent rejects class");
    assert!(
        o.json["msg"].as_str().unwrap().contains("gold"),
        "{}",
        o.raw
    );
    assert!(
        !String::from_utf8_lossy(&pod.exec(&["ip", "link"]).stdout).contains("eth0"),
        "pod interface leaked"
    );
    rt.assert_clean();

    // a netlink failure (CNI_IFNAME already taken in the pod netns) is
    // code 100 naming the request and errno, and rolls back the IP
    let busy = PodNs::new("crc");
    let o = busy.exec(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth9",
    ]);
    assert!(o.status.success(), "{o:?}");
    let o = rt.cni("ADD", "cbusy", Some(&busy), "", &good);
    code(&o, 100, "pod ifname taken");
    let msg = o.json["msg"].as_str().unwrap_or("");
    assert!(
        msg.contains("peer name eth0") && msg.contains("File exists"),
        "{}",
        o.raw
    );
    rt.assert_clean();

    // STATUS ok while the agent runs; agent down → STATUS 50, ADD 11
    let s11 = rt.standalone("1.1.0", false);
    assert_eq!(rt.cni("STATUS", "", None, "", &s11).code, 0);
    rt.agent.kill9();
    code(
        &rt.cni("STATUS", "", None, "", &s11),
        50,
        "status agent down",
    );
    code(
        &rt.cni("ADD", "cdown", Some(&pod), "", &good),
        11,
        "add agent down",
    );
    // permanent configuration errors keep their own code while the agent
    // is down (a runtime retries code 11 forever)
    let permanent: Vec<(Value, &str, u32, &str)> = {
        let with = |f: &dyn Fn(&mut Value)| {
            let mut c = good.clone();
            f(&mut c);
            c
        };
        vec![
            (
                with(&|c| c["ipam"]["ranges"] = json!([[{"subnet": "198.18.7.0/99"}]])),
                "eth0",
                7,
                "198.18.7.0/99",
            ),
            (
                with(&|c| c["ipam"]["ranges"] = json!("198.18.7.0/24")),
                "eth0",
                7,
                "ipam.ranges",
            ),
            (
                with(&|c| {
                    c["ipam"]["ranges"] =
                        json!([[{"subnet": "198.18.7.0/24", "gateway": "198.18.9.1"}]])
                }),
                "eth0",
                7,
                "outside the subnet",
            ),
            (
                with(&|c| c["ipam"]["routes"] = json!([{"dst": "10/8"}])),
                "eth0",
                7,
                "routes[0].dst",
            ),
            (
                with(&|c| c["ipam"]["type"] = json!("no-such-ipam")),
                "eth0",
                7,
                "no-such-ipam",
            ),
            (
                with(&|c| {
                    c.as_object_mut().unwrap().remove("ipam");
                }),
                "eth0",
                7,
                "ipam",
            ),
            (with(&|c| c["mtu"] = json!(20)), "eth0", 7, "mtu"),
            (with(&|c| c["mtu"] = json!("jumbo")), "eth0", 7, "mtu"),
            (
                with(&|c| c["runtimeConfig"] = json!({"bandwidth": {"egressBurst": 1000}})),
                "eth0",
                7,
                "egressBurst",
            ),
            (
                with(&|c| c["prevResult"] = json!({"ips": "x"})),
                "eth0",
                6,
                "result",
            ),
            (good.clone(), "eth0-much-too-long", 4, "CNI_IFNAME"),
        ]
    };
    for (conf, ifname, want, text) in &permanent {
        let o = rt.exec(cni_bin(), "ADD", "cdown", &pod.path(), ifname, "", conf);
        code(&o, *want, text);
        assert!(o.raw.contains(text), "{text}: {}", o.raw);
    }
    code(
        &rt.cni("DEL", "cdown", Some(&pod), "", &good),
        11,
        "del agent down",
    );
    assert!(
        !String::from_utf8_lossy(&rt.node.exec(&["ip", "-o", "link"]).stdout).contains("crl"),
        "no veth may be created while the agent is down"
    );
    rt.agent.spawn();
    rt.assert_clean();
}

#[test]
fn fixed_ip_survives_recreate_and_gc_removes_stale() {
    let t = "fixed_ip_survives_recreate_and_gc_removes_stale";
    let Some(_g) = privileged(t) else { return };
    if !refs_ok(t, &["host-local", "bridge", "ptp"]) {
        return;
    }
    let rt = Rt::new();
    let mut conf = rt.standalone("1.1.0", true);
    conf["runtimeConfig"] = json!({"io.kubernetes.cri.pod-annotations": {
        "corral.io/ips": "198.18.0.77,2001:db8:c::77",
        "corral.io/traffic-class": "critical",
        "kubernetes.io/egress-bandwidth": "30M"}});
    let p1 = PodNs::new("crc");
    let r = rt.ok(
        "ADD",
        "fix1",
        Some(&p1),
        "K8S_POD_NAMESPACE=x;K8S_POD_NAME=db-0",
        &conf,
    );
    let want: Vec<IpAddr> = vec![
        "198.18.0.77".parse().unwrap(),
        "2001:db8:c::77".parse().unwrap(),
    ];
    assert_eq!(ips_of(&r), want);
    // another pod takes addresses meanwhile
    let other = PodNs::new("crc");
    let plain = rt.standalone("1.1.0", true);
    rt.ok("ADD", "oth", Some(&other), "", &plain);
    // the pod is deleted and re-created (new sandbox, new container id)
    rt.ok("DEL", "fix1", Some(&p1), "", &conf);
    drop(p1);
    let p2 = PodNs::new("crc");
    let r2 = rt.ok(
        "ADD",
        "fix2",
        Some(&p2),
        "K8S_POD_NAMESPACE=x;K8S_POD_NAME=db-0",
        &conf,
    );
    assert_eq!(ips_of(&r2), want, "fixed IP must survive re-creation");
    // capability `ips` (runtimeConfig.ips) works the same way
    let mut ipsc = rt.standalone("1.1.0", false);
    ipsc["runtimeConfig"] = json!({"ips": ["198.18.0.99/24"]});
    let p3 = PodNs::new("crc");
    let r3 = rt.ok("ADD", "fix3", Some(&p3), "", &ipsc);
    assert_eq!(ips_of(&r3), vec!["198.18.0.99".parse::<IpAddr>().unwrap()]);
    // class + egress limit annotations reached the agent
    let e = rt.agent.list();
    assert_eq!(e.len(), 3);
    let db = e.iter().find(|x| x.spec.name == "db-0").expect("db-0");
    assert_eq!(db.class, "critical");
    assert_eq!(db.spec.namespace, "x");
    assert_eq!(
        db.spec
            .annotations
            .get("kubernetes.io/egress-bandwidth")
            .map(String::as_str),
        Some("30M")
    );
    // GC: only fix2 is still valid → oth and fix3 go away
    let mut gc = rt.standalone("1.1.0", true);
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "fix2", "ifname": "eth0"}]);
    rt.ok("GC", "", None, "", &gc);
    let e = rt.agent.list();
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].spec.name, "db-0");
    assert!(
        reach(&p2.0, &rt.node.netns, "169.254.1.1".parse().unwrap()),
        "valid attachment kept working"
    );
    // Debian's host-local stops at CNI 1.0.0: no IPAM GC, logged
    assert!(
        rt.log_text().contains("IPAM GC skipped"),
        "{}",
        rt.log_text()
    );
    rt.ok("STATUS", "", None, "", &gc);
    assert!(
        rt.log_text().contains("IPAM STATUS skipped"),
        "{}",
        rt.log_text()
    );
    let mut missing = rt.standalone("1.1.0", true);
    missing.as_object_mut().unwrap().remove("ipam");
    assert_eq!(
        rt.cni("GC", "", None, "", &missing).code,
        7,
        "GC without valid list"
    );
    rt.ok("DEL", "fix2", Some(&p2), "", &conf);
    // GC'd attachments: DEL afterwards is still fine
    rt.ok("DEL", "oth", Some(&other), "", &plain);
    rt.ok("DEL", "fix3", Some(&p3), "", &ipsc);
    rt.assert_clean();
}

#[test]
fn hundred_parallel_adds_and_dels_then_cycles_leave_nothing() {
    let t = "hundred_parallel_adds_and_dels_then_cycles_leave_nothing";
    let Some(_g) = privileged(t) else { return };
    if !refs_ok(t, &["host-local", "bridge", "ptp"]) {
        return;
    }
    let rt = std::sync::Arc::new(Rt::new());
    let conf = rt.standalone("1.1.0", true);
    let pods: Vec<PodNs> = (0..100).map(|_| PodNs::new("crc")).collect();
    let paths: Vec<String> = pods.iter().map(|p| p.path()).collect();
    let run = |cmd: &'static str| {
        let hs: Vec<_> = paths
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let rt = rt.clone();
                let conf = conf.clone();
                let p = p.clone();
                std::thread::spawn(move || {
                    let o = rt.exec(cni_bin(), cmd, &format!("par{i}"), &p, "eth0", "", &conf);
                    (o.code, o.raw, ips_of(&o.json))
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("thread"))
            .collect::<Vec<_>>()
    };
    let t0 = std::time::Instant::now();
    let adds = run("ADD");
    eprintln!("100 parallel ADDs: {:?}", t0.elapsed());
    let mut all = std::collections::BTreeSet::new();
    for (c, raw, ips) in &adds {
        assert_eq!(*c, 0, "{raw}\n{}", rt.log_text());
        for ip in ips {
            assert!(all.insert(*ip), "duplicate address {ip}");
        }
    }
    assert_eq!(all.len(), 200);
    assert_eq!(rt.agent.list().len(), 100);
    let t0 = std::time::Instant::now();
    for (c, raw, _) in run("DEL") {
        assert_eq!(c, 0, "{raw}");
    }
    eprintln!("100 parallel DELs: {:?}", t0.elapsed());
    rt.assert_clean();
    // sequential ADD/DEL cycles on one sandbox
    let n = 200;
    let t0 = std::time::Instant::now();
    for i in 0..n {
        let cid = format!("cyc{i}");
        rt.ok("ADD", &cid, Some(&pods[0]), "", &conf);
        rt.ok("DEL", &cid, Some(&pods[0]), "", &conf);
    }
    eprintln!("{n} ADD/DEL cycles: {:?}", t0.elapsed());
    rt.assert_clean();
    drop(pods);
    let prefix = format!("crc{:x}x", std::process::id() & 0xffff);
    let left = String::from_utf8_lossy(&sh(&["ip", "netns", "list"]).stdout).to_string();
    assert!(
        !left.lines().any(|l| l.starts_with(&prefix)),
        "netns leftovers: {left}"
    );
}

/// podman 4.3 with its CNI backend as the runtime, run inside the node
/// netns with private storage/config; removes its containers and image.
struct Podman {
    base: Vec<String>,
    node_ns: String,
    conf: PathBuf,
}

impl Podman {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("timeout")
            .arg("90")
            .arg("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.node_ns))
            .args(&self.base)
            .args(args)
            .env("CONTAINERS_CONF", &self.conf)
            .output()
            .expect("podman")
    }
    fn ok(&self, args: &[&str]) -> String {
        let o = self.cmd(args);
        assert!(
            o.status.success(),
            "podman {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd(&["rm", "-af", "-t", "0"]);
        let _ = self.cmd(&["rmi", "-af"]);
    }
}

#[test]
fn podman_cni_backend_runs_two_talking_containers() {
    let t = "podman_cni_backend_runs_two_talking_containers";
    let Some(_g) = privileged(t) else { return };
    if !refs_ok(t, &["host-local", "bridge", "ptp"]) {
        return;
    }
    let tools = ["podman", "runc"]
        .iter()
        .all(|b| Command::new(b).arg("--version").output().is_ok())
        && Path::new("/bin/busybox").exists();
    if !tools {
        let why = format!("{t}: needs podman, runc and busybox-static");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("SKIP {why}");
        return;
    }
    let rt = Rt::new();
    let d = rt.node.dir.path();
    let podman_netns = || -> std::collections::BTreeSet<String> {
        std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with("netns-"))
            .collect()
    };
    let netns_before = podman_netns();
    // busybox-static rootfs imported as a local image (no registry)
    let rootfs = d.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for c in ["sh", "httpd", "nc", "sleep"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(c)).unwrap();
    }
    let netd = d.join("net.d");
    std::fs::create_dir_all(&netd).unwrap();
    let bindir = Path::new(cni_bin()).parent().unwrap();
    let conf = d.join("containers.conf");
    std::fs::write(
        &conf,
        format!(
            "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\", \"{REF}\"]\nnetwork_config_dir = \"{}\"\n[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"none\"\n",
            bindir.display(),
            netd.display()
        ),
    )
    .unwrap();
    // podman 4.3 reads conflists up to cniVersion 1.0.0
    let list = json!({"cniVersion": "1.0.0", "name": "corralnet", "plugins": [{
        "type": "corral-cni", "agentSocket": rt.agent.socket, "dataDir": rt.data_dir,
        "logFile": rt.log,
        "ipam": {"type": "host-local", "dataDir": rt.ipam_dir,
                 "ranges": [[{"subnet": "198.18.7.0/24"}]]}}]});
    std::fs::write(netd.join("corralnet.conflist"), list.to_string()).unwrap();
    let s = |p: &str| d.join(p).display().to_string();
    let pm = Podman {
        base: vec![
            "podman".into(),
            "--root".into(),
            s("root"),
            "--runroot".into(),
            s("runroot"),
            "--storage-driver".into(),
            "vfs".into(),
            "--cgroup-manager".into(),
            "cgroupfs".into(),
        ],
        node_ns: rt.node.netns.clone(),
        conf: conf.clone(),
    };
    let tar = Command::new("tar")
        .args([
            "-C",
            &rootfs.display().to_string(),
            "-cf",
            &s("rootfs.tar"),
            ".",
        ])
        .status()
        .unwrap();
    assert!(tar.success());
    pm.ok(&["import", &s("rootfs.tar"), "localhost/corral-bb:1"]);
    // rootful podman raises nofile/nproc beyond this VM's hard limits
    let ul = [
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ];
    let mut run_a = vec!["run", "-d", "--name", "a", "--network", "corralnet"];
    run_a.extend(ul);
    run_a.extend([
        "localhost/corral-bb:1",
        "/bin/httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/",
    ]);
    pm.ok(&run_a);
    let ip = pm.ok(&[
        "inspect",
        "a",
        "--format",
        "{{.NetworkSettings.Networks.corralnet.IPAddress}}",
    ]);
    let ip: IpAddr = ip.parse().unwrap_or_else(|_| panic!("no IP: {ip:?}"));
    let eps = rt.agent.list();
    assert_eq!(eps.len(), 1, "container a registered: {eps:?}");
    assert_eq!(eps[0].spec.name, "a", "podman passes K8S_POD_NAME");
    let mut run_b = vec!["run", "--rm", "--name", "b", "--network", "corralnet"];
    run_b.extend(ul);
    let script = format!("echo GET | nc -w 3 {ip} 8080");
    run_b.extend(["localhost/corral-bb:1", "/bin/sh", "-c", &script]);
    let out = pm.ok(&run_b);
    assert!(out.contains("HTTP/1.1"), "b could not talk to a: {out:?}");
    pm.ok(&["rm", "-f", "-t", "0", "a"]);
    assert!(rt.log_text().contains("ADD net=corralnet"), "plugin log");
    rt.assert_clean();
    drop(pm);
    let left: Vec<_> = podman_netns().difference(&netns_before).cloned().collect();
    assert!(left.is_empty(), "podman left network namespaces: {left:?}");
}

/// A minimal IPAM plugin speaking CNI 1.1.0 (GC and STATUS), written by
/// the test: records every call (command, container, stdin) in calls.log;
/// STATUS fails with code 51 while a file `down` exists.
const TEST_IPAM: &str = r#"#!/bin/sh
d=$(dirname "$0")
conf=$(cat)
echo "$CNI_COMMAND ${CNI_CONTAINERID:--} $conf" >>"$d/calls.log"
case "$CNI_COMMAND" in
VERSION) echo '{"cniVersion":"1.1.0","supportedVersions":["0.4.0","1.0.0","1.1.0"]}' ;;
ADD)
  n=$(cat "$d/next" 2>/dev/null || echo 10)
  echo $((n + 1)) >"$d/next"
  echo '{"cniVersion":"1.1.0","ips":[{"address":"198.18.1.'$n'/24"}]}' ;;
STATUS)
  if [ -e "$d/down" ]; then
    echo '{"cniVersion":"1.1.0","code":51,"msg":"address pool unreachable"}'
    exit 1
  fi ;;
DEL | CHECK | GC) ;;
*) echo '{"cniVersion":"1.1.0","code":4,"msg":"unknown command"}'; exit 1 ;;
esac
"#;

#[test]
fn gc_and_status_reach_a_cni_1_1_ipam_plugin_and_adds_survive_agent_restart() {
    let t = "gc_and_status_reach_a_cni_1_1_ipam_plugin_and_adds_survive_agent_restart";
    let Some(_g) = privileged(t) else { return };
    if !refs_ok(t, &["host-local", "bridge", "ptp"]) {
        return;
    }
    let mut rt = Rt::new();
    let dir = rt.node.dir.path().join("plugins");
    std::fs::create_dir_all(&dir).expect("plugin dir");
    let plugin = dir.join("testipam");
    std::fs::write(&plugin, TEST_IPAM).expect("write test plugin");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    rt.path = format!("{}:{}", dir.display(), cni_path());
    let calls = || std::fs::read_to_string(dir.join("calls.log")).unwrap_or_default();
    let mut conf = rt.standalone("1.1.0", false);
    conf["ipam"] = json!({"type": "testipam"});
    let (p1, p2) = (PodNs::new("crc"), PodNs::new("crc"));
    let r1 = rt.ok("ADD", "gk1", Some(&p1), "K8S_POD_NAME=a", &conf);
    let r2 = rt.ok("ADD", "gk2", Some(&p2), "K8S_POD_NAME=b", &conf);
    assert_eq!(ips_of(&r1), vec!["198.18.1.10".parse::<IpAddr>().unwrap()]);
    assert_eq!(ips_of(&r2), vec!["198.18.1.11".parse::<IpAddr>().unwrap()]);

    // an ADD that returned success is re-adopted after agent kill -9
    rt.agent.kill9();
    rt.agent.spawn();
    let mut names: Vec<String> = rt.agent.list().into_iter().map(|e| e.spec.name).collect();
    names.sort();
    assert_eq!(names, ["a", "b"], "{}", rt.agent.log_text());
    rt.ok("CHECK", "gk1", Some(&p1), "", &conf);

    // GC: gk2 is stale → torn down (IPAM DEL), then IPAM GC with the list
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "gk1", "ifname": "eth0"}]);
    rt.ok("GC", "", None, "", &gc);
    let log = calls();
    let del = log
        .find("\nDEL gk2 ")
        .unwrap_or_else(|| panic!("no IPAM DEL: {log}"));
    let gcl = log
        .lines()
        .find(|l| l.starts_with("GC "))
        .unwrap_or_else(|| panic!("no IPAM GC: {log}"));
    assert!(log.find("\nGC ").unwrap() > del, "GC after the DEL: {log}");
    let gconf: Value = serde_json::from_str(gcl.trim_start_matches("GC - ")).expect("GC stdin");
    assert_eq!(gconf["cniVersion"], "1.1.0");
    assert_eq!(
        gconf["cni.dev/valid-attachments"],
        json!([{"containerID": "gk1", "ifname": "eth0"}])
    );
    assert_eq!(gconf["ipam"]["type"], "testipam");
    let eps = rt.agent.list();
    assert_eq!(eps.len(), 1, "{eps:?}");
    assert_eq!(eps[0].spec.name, "a");

    // STATUS is forwarded: ok, then the plugin's 51 passes through
    rt.ok("STATUS", "", None, "", &conf);
    assert!(calls().contains("\nSTATUS - "), "{}", calls());
    std::fs::write(dir.join("down"), "").expect("touch down");
    let o = rt.cni("STATUS", "", None, "", &conf);
    assert_eq!(o.code, 51, "{}", o.raw);
    assert_eq!(o.json["code"], 51);
    assert!(
        o.json["msg"]
            .as_str()
            .unwrap_or("")
            .contains("address pool unreachable"),
        "{}",
        o.raw
    );
    std::fs::remove_file(dir.join("down")).expect("rm down");
    // a missing IPAM plugin → 50
    let mut nop = conf.clone();
    nop["ipam"] = json!({"type": "no-such-ipam"});
    let o = rt.cni("STATUS", "", None, "", &nop);
    assert_eq!(o.code, 50, "{}", o.raw);

    // VERSION is asked once per plugin binary (cached), again after the
    // binary changed
    let versions = || {
        calls()
            .lines()
            .filter(|l| l.starts_with("VERSION "))
            .count()
    };
    assert_eq!(versions(), 1, "{}", calls());
    std::fs::write(&plugin, format!("{TEST_IPAM}# changed\n")).expect("rewrite plugin");
    rt.ok("STATUS", "", None, "", &conf);
    assert_eq!(versions(), 2, "{}", calls());

    rt.ok("DEL", "gk1", Some(&p1), "", &conf);
    rt.ok("DEL", "gk2", Some(&p2), "", &conf);
    assert!(calls().contains("\nDEL gk1 "), "{}", calls());
    rt.assert_clean();
}
