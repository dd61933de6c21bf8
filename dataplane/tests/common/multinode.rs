//! Simulated multi-node cluster on one machine: an "underlay" bridge in
//! a netns of its own, "nodes" (a netns each, running its own corral-agent
//! with its own socket, pin dir and state dir, reading Node objects from
//! its manifests), pods wired by the real corral-cni from the CNI config
//! the node's agent wrote. Shared by the multi-node and Service tests.
//! Every netns is removed by Drop guards, also when a test panics.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use corral_agent::routing::RoutingStatus;
use corral_dataplane_abi::api::{Request, Response};
use serde_json::{Value, json};

use super::{Agent, Node, in_netns, must, sh};

pub const REF: &str = "/usr/lib/cni";
static SEQ: AtomicU32 = AtomicU32::new(0);

pub fn refs_ok(test: &str) -> bool {
    let ok = Path::new(REF).join("host-local").exists()
        && Command::new("bridge").arg("-V").output().is_ok();
    if !ok {
        let why = format!("{test}: needs host-local in {REF} and iproute2's bridge");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("SKIP {why}");
    }
    ok
}

/// Runs `body(mode)` as the privileged multi-node test `test` (routing mode
/// `native` or `vxlan`), when root, bpffs and the reference plugins are
/// there (under CI=true their absence fails the test, see [`refs_ok`]).
pub fn in_mode(test: &str, mode: &str, body: fn(&str)) {
    let Some(_g) = super::privileged(test) else {
        return;
    };
    if refs_ok(test) {
        body(mode);
    }
}

/// The underlay: a netns with bridge br0; each node gets a veth into it.
pub struct Underlay {
    pub netns: String,
}

impl Underlay {
    pub fn new() -> Underlay {
        let netns = format!(
            "c6dpu{:x}x{}",
            std::process::id() & 0xffff,
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        must(&["ip", "netns", "add", &netns]);
        let u = Underlay { netns };
        u.ok(&["ip", "link", "add", "br0", "type", "bridge"]);
        u.ok(&["ip", "link", "set", "br0", "up"]);
        u
    }
    pub fn ok(&self, args: &[&str]) {
        let mut v = vec!["ip", "netns", "exec", &self.netns];
        v.extend_from_slice(args);
        must(&v);
    }
    /// veth "ul0" in the node with 192.0.2.k/24 and 2001:db8:ff::k/64.
    pub fn attach(&self, node: &Node, k: u8) {
        self.attach_ns(&node.netns, k);
    }

    /// veth "ul0" in netns `ns` (a node, or a client outside the cluster)
    /// with 192.0.2.k/24 and 2001:db8:ff::k/64.
    pub fn attach_ns(&self, ns: &str, k: u8) {
        let port = format!("ulp{k}");
        let x = |args: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", ns];
            v.extend_from_slice(args);
            must(&v);
        };
        x(&[
            "ip", "link", "add", "ul0", "type", "veth", "peer", "name", &port,
        ]);
        x(&["ip", "link", "set", &port, "netns", &self.netns]);
        self.ok(&["ip", "link", "set", &port, "master", "br0"]);
        self.ok(&["ip", "link", "set", &port, "up"]);
        x(&[
            "ip",
            "addr",
            "add",
            &format!("192.0.2.{k}/24"),
            "dev",
            "ul0",
        ]);
        x(&[
            "ip",
            "addr",
            "add",
            &format!("2001:db8:ff::{k}/64"),
            "dev",
            "ul0",
            "nodad",
        ]);
        x(&["ip", "link", "set", "ul0", "up"]);
        x(&["ip", "link", "set", "lo", "up"]);
    }
}

impl Drop for Underlay {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.netns]);
    }
}

pub struct PodNs(pub String);

impl PodNs {
    pub fn new() -> PodNs {
        let n = format!(
            "c6dpp{:x}x{}",
            std::process::id() & 0xffff,
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        must(&["ip", "netns", "add", &n]);
        for k in ["default", "all"] {
            must(&[
                "ip",
                "netns",
                "exec",
                &n,
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{k}.accept_dad=0"),
            ]);
        }
        PodNs(n)
    }
}

impl Drop for PodNs {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.0]);
    }
}

pub struct SimNode {
    pub k: u8,
    pub node: Node,
    pub agent: Agent,
    pub conf: PathBuf,
}

pub struct Pod {
    pub ns: PodNs,
    pub ip4: IpAddr,
    pub ip6: IpAddr,
    pub node: u8,
}

pub fn node_yaml(k: u8) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: n{k}}}\nspec:\n  podCIDRs: [198.19.{k}.0/24, \"2001:db8:{k}::/64\"]\nstatus:\n  addresses:\n  - {{type: InternalIP, address: 192.0.2.{k}}}\n  - {{type: InternalIP, address: \"2001:db8:ff::{k}\"}}\n  - {{type: Hostname, address: n{k}}}\n"
    )
}

pub fn write_all(nodes: &[SimNode], file: &str, text: &str) {
    for n in nodes {
        std::fs::write(n.node.manifests().join(file), text).expect("manifest");
        n.agent.reconcile();
    }
}

pub fn routing(n: &SimNode) -> RoutingStatus {
    match n.agent.call(&Request::List) {
        Response::Endpoints { routing, .. } => routing.expect("routing status"),
        r => panic!("unexpected {r:?}"),
    }
}

pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

pub fn start_nodes(under: &Underlay, mode: &str, count: u8) -> Vec<SimNode> {
    start_nodes_with(under, mode, count, &[])
}

/// `count` nodes n1.. (192.0.2.k, pod CIDRs 198.19.k.0/24 and
/// 2001:db8:k::/64), every agent with `extra` arguments too.
pub fn start_nodes_with(under: &Underlay, mode: &str, count: u8, extra: &[&str]) -> Vec<SimNode> {
    let mut v = Vec::new();
    for k in 1..=count {
        let node = Node::new();
        under.attach(&node, k);
        let d = node.dir.path();
        let tpl = d.join("tpl.conflist");
        let conf = d.join("10-corral.conflist");
        std::fs::write(
            &tpl,
            json!({"cniVersion": "1.0.0", "name": "corral", "plugins": [{
                "type": "corral-cni", "mtu": 1500,
                "agentSocket": d.join("agent.sock"), "dataDir": d.join("cni"),
                "logFile": d.join("cni.log"),
                "ipam": {"type": "host-local", "dataDir": d.join("ipam"),
                         "ranges": [[{"subnet": "198.18.0.0/24"}]]}}]})
            .to_string(),
        )
        .expect("template");
        let mut nodes_yaml = String::new();
        for j in 1..=count {
            nodes_yaml += &node_yaml(j);
            nodes_yaml += "---\n";
        }
        std::fs::write(node.manifests().join("nodes.yaml"), nodes_yaml).expect("nodes");
        let name = format!("n{k}");
        let (conf_s, tpl_s) = (conf.display().to_string(), tpl.display().to_string());
        let mut args = vec![
            "--node-name",
            &name,
            "--routing",
            mode,
            "--cni-conf",
            &conf_s,
            "--cni-conf-template",
            &tpl_s,
        ];
        args.extend_from_slice(extra);
        let agent = Agent::start(&node, &args);
        v.push(SimNode {
            k,
            node,
            agent,
            conf,
        });
    }
    for n in &v {
        wait_for(&format!("n{}'s CNI config", n.k), || n.conf.exists());
    }
    v
}

/// corral-cni ADD inside node `n` with the config its agent wrote.
pub fn add_pod(n: &SimNode, name: &str) -> Pod {
    let list: Value =
        serde_json::from_str(&std::fs::read_to_string(&n.conf).expect("conf")).expect("json");
    let mut conf = list["plugins"][0].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    conf["name"] = list["name"].clone();
    let ns = PodNs::new();
    let bin = env!("CARGO_BIN_EXE_corral-cni");
    let dir = Path::new(bin)
        .parent()
        .expect("bin dir")
        .display()
        .to_string();
    let mut c = Command::new("timeout")
        .arg("60")
        .arg("nsenter")
        .arg(format!("--net=/var/run/netns/{}", n.node.netns))
        .arg(bin)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", format!("c{name}"))
        .env("CNI_NETNS", format!("/var/run/netns/{}", ns.0))
        .env("CNI_IFNAME", "eth0")
        .env(
            "CNI_ARGS",
            format!("K8S_POD_NAMESPACE=mn;K8S_POD_NAME={name}"),
        )
        .env("CNI_PATH", format!("{REF}:{dir}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("corral-cni");
    c.stdin
        .take()
        .expect("stdin")
        .write_all(conf.to_string().as_bytes())
        .expect("stdin");
    let o = c.wait_with_output().expect("wait");
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "ADD {name} on n{}: {out}", n.k);
    let r: Value = serde_json::from_str(&out).expect("result");
    let ips: Vec<IpAddr> = r["ips"]
        .as_array()
        .expect("ips")
        .iter()
        .filter_map(|i| i["address"].as_str()?.split('/').next()?.parse().ok())
        .collect();
    let ip4 = *ips.iter().find(|a| a.is_ipv4()).expect("v4");
    let ip6 = *ips.iter().find(|a| a.is_ipv6()).expect("v6");
    // the node's own pod CIDR (from its Node object), not the template's
    assert!(
        ip4.to_string().starts_with(&format!("198.19.{}.", n.k)),
        "{ip4}"
    );
    assert!(
        ip6.to_string().starts_with(&format!("2001:db8:{}::", n.k)),
        "{ip6}"
    );
    Pod {
        ns,
        ip4,
        ip6,
        node: n.k,
    }
}

/// A backend server in netns `netns` (a pod, or a node for a
/// host-network backend): TCP `port` answers `id` and the peer
/// address it sees; UDP `port` the same per datagram.
pub fn backend_peer(netns: &str, id: u8, port: u16) {
    in_netns(netns, move || {
        let l = TcpListener::bind(("::", port)).expect("bind tcp");
        std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                let peer = s.peer_addr().map(|a| a.ip().to_canonical().to_string());
                let _ = s.write_all(format!("{} {}", id, peer.unwrap_or_default()).as_bytes());
            }
        });
        let u = UdpSocket::bind(("::", port)).expect("bind udp");
        std::thread::spawn(move || {
            let mut b = [0u8; 16];
            while let Ok((_, from)) = u.recv_from(&mut b) {
                let _ = u.send_to(
                    format!("{} {}", id, from.ip().to_canonical()).as_bytes(),
                    from,
                );
            }
        });
    });
}

/// (backend id, the client address the backend saw) over TCP.
pub fn tcp_peer(from: &str, to: SocketAddr) -> Option<(u8, String)> {
    in_netns(from, move || {
        let t = Duration::from_millis(1500);
        let mut s = TcpStream::connect_timeout(&to, t).ok()?;
        let _ = s.set_read_timeout(Some(t));
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let (id, peer) = out.split_once(' ')?;
        Some((id.parse().ok()?, peer.to_string()))
    })
}

/// (backend id, the client address the backend saw, the reply's source)
/// over UDP.
pub fn udp_peer(from: &str, to: SocketAddr) -> Option<(u8, String, SocketAddr)> {
    in_netns(from, move || {
        let s = UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).ok()?;
        let _ = s.set_read_timeout(Some(Duration::from_millis(1500)));
        s.send_to(b"q", to).ok()?;
        let mut b = [0u8; 64];
        let (n, src) = s.recv_from(&mut b).ok()?;
        let text = String::from_utf8_lossy(&b[..n]).to_string();
        let (id, peer) = text.split_once(' ')?;
        Some((id.parse().ok()?, peer.to_string(), src))
    })
}
