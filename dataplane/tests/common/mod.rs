//! Privileged test harness: a "node" network namespace running the real
//! corral-agent, and "pods" = netns + veth whose host side lives in the
//! node netns. Everything (netns, veth, bpffs pins, child processes) is
//! removed by Drop guards, also when a test panics.
#![allow(dead_code)]

pub mod cni;
pub mod multinode;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use corral_dataplane_abi::api::{self, EndpointSpec, LimitSpec, Request, Response};

static SEQ: AtomicU32 = AtomicU32::new(0);

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Some(guard) when the test may run; the guard serialises privileged
/// tests (rate measurements must not share the CPUs). Not root / no eBPF:
/// panics under CI=true, otherwise prints a skip note and returns None.
pub fn privileged(test: &str) -> Option<std::sync::MutexGuard<'static, ()>> {
    if privileged_ok(test) {
        Some(SERIAL.lock().unwrap_or_else(|e| e.into_inner()))
    } else {
        None
    }
}

fn privileged_ok(test: &str) -> bool {
    let root = rustix::process::geteuid().is_root();
    let bpf = Path::new("/sys/fs/bpf").exists() && Path::new("/sys/kernel/btf/vmlinux").exists();
    let tools = ["ip", "iperf3", "nsenter", "iptables", "bpftool", "tc"]
        .iter()
        .all(|t| Command::new(t).arg("-V").output().is_ok());
    if root && bpf && tools {
        return true;
    }
    let why = format!(
        "{test}: needs root, bpffs/BTF, iproute2, iperf3, util-linux nsenter, iptables, bpftool (root={root} bpf={bpf} tools={tools})"
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why}");
    }
    eprintln!("SKIP {why}");
    false
}

pub fn sh(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"))
}

pub fn must(args: &[&str]) {
    let out = sh(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct Pod {
    pub netns: String,
    pub host_if: String,
    pub ip4: Ipv4Addr,
    pub ip6: Ipv6Addr,
    pub gw4: Ipv4Addr,
    pub namespace: String,
    pub name: String,
}

impl Pod {
    pub fn spec(&self) -> EndpointSpec {
        EndpointSpec {
            ifname: self.host_if.clone(),
            netns: self.netns.clone(),
            ips: vec![IpAddr::V4(self.ip4), IpAddr::V6(self.ip6)],
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            ..Default::default()
        }
    }
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut v = vec!["ip", "netns", "exec", &self.netns];
        v.extend_from_slice(args);
        sh(&v)
    }
}

/// The node netns plus pods. Dropping it deletes all of them.
pub struct Node {
    pub id: u32,
    pub netns: String,
    pub pods: Vec<Pod>,
    pub dir: tempfile::TempDir,
}

impl Node {
    pub fn new() -> Node {
        let id = (std::process::id() & 0xfff) * 16 + SEQ.fetch_add(1, Ordering::SeqCst);
        let netns = format!("crn{id:x}");
        must(&["ip", "netns", "add", &netns]);
        let node = Node {
            id,
            netns,
            pods: Vec::new(),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        node.exec_ok(&["ip", "link", "set", "lo", "up"]);
        node.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        node.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        // no duplicate address detection: link-local addresses usable at once
        node.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"]);
        node.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0"]);
        std::fs::create_dir_all(node.manifests()).expect("manifests dir");
        node
    }

    pub fn manifests(&self) -> PathBuf {
        self.dir.path().join("manifests")
    }

    pub fn exec(&self, args: &[&str]) -> Output {
        let mut v = vec!["ip", "netns", "exec", &self.netns];
        v.extend_from_slice(args);
        sh(&v)
    }

    pub fn exec_ok(&self, args: &[&str]) {
        let mut v = vec!["ip", "netns", "exec", &self.netns];
        v.extend_from_slice(args);
        must(&v);
    }

    /// Adds pod number `n` (0..250): 198.18.<n>.2/24 behind 198.18.<n>.1
    /// and 2001:db8:<n>::2/64 behind 2001:db8:<n>::1.
    pub fn add_pod(&mut self, namespace: &str, name: &str) -> usize {
        let n = self.pods.len() + 1;
        let pod_ns = format!("{}p{n}", self.netns);
        let host_if = format!("crv{:x}p{n}", self.id);
        must(&["ip", "netns", "add", &pod_ns]);
        for k in ["default", "all"] {
            must(&[
                "ip",
                "netns",
                "exec",
                &pod_ns,
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{k}.accept_dad=0"),
            ]);
        }
        let ip4 = Ipv4Addr::new(198, 18, n as u8, 2);
        let gw4 = Ipv4Addr::new(198, 18, n as u8, 1);
        let ip6: Ipv6Addr = format!("2001:db8:{n:x}::2").parse().expect("v6");
        self.pods.push(Pod {
            netns: pod_ns.clone(),
            host_if: host_if.clone(),
            ip4,
            ip6,
            gw4,
            namespace: namespace.into(),
            name: name.into(),
        });
        self.wire(self.pods.len() - 1);
        self.pods.len() - 1
    }
    /// (Re)creates pod `i`'s veth pair and addresses (as a CNI ADD would).
    pub fn wire(&self, i: usize) {
        let n = i + 1;
        let pod = &self.pods[i];
        let (pod_ns, host_if, ip4, gw4, ip6) =
            (&pod.netns, &pod.host_if, pod.ip4, pod.gw4, pod.ip6);
        let tmp_if = format!("crt{:x}p{n}", self.id);
        let gw6 = format!("2001:db8:{n:x}::1");
        // veth created in the node netns; the peer moves into the pod
        self.exec_ok(&[
            "ip", "link", "add", host_if, "type", "veth", "peer", "name", &tmp_if,
        ]);
        self.exec_ok(&["ip", "link", "set", &tmp_if, "netns", pod_ns]);
        self.exec_ok(&["ip", "addr", "add", &format!("{gw4}/24"), "dev", host_if]);
        self.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{gw6}/64"),
            "dev",
            host_if,
            "nodad",
        ]);
        self.exec_ok(&["ip", "link", "set", host_if, "up"]);
        let p = |args: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", pod_ns];
            v.extend_from_slice(args);
            must(&v);
        };
        p(&["ip", "link", "set", "lo", "up"]);
        p(&["ip", "link", "set", &tmp_if, "name", "eth0"]);
        p(&["ip", "addr", "add", &format!("{ip4}/24"), "dev", "eth0"]);
        p(&[
            "ip",
            "addr",
            "add",
            &format!("{ip6}/64"),
            "dev",
            "eth0",
            "nodad",
        ]);
        p(&["ip", "link", "set", "eth0", "up"]);
        p(&["ip", "route", "add", "default", "via", &gw4.to_string()]);
        p(&["ip", "-6", "route", "add", "default", "via", &gw6]);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for p in &self.pods {
            let _ = sh(&["ip", "netns", "del", &p.netns]);
        }
        let _ = sh(&["ip", "netns", "del", &self.netns]);
    }
}

/// A running corral-agent inside the node netns, with its own bpffs pin
/// dir and socket. Drop kills it and removes the pins.
pub struct Agent {
    pub child: Option<Child>,
    pub socket: PathBuf,
    pub pin_dir: PathBuf,
    pub args: Vec<String>,
    pub netns: String,
    pub log: PathBuf,
}

impl Agent {
    pub fn start(node: &Node, extra: &[&str]) -> Agent {
        let mut a = Agent::start_args_only(node);
        a.args.extend(extra.iter().map(|s| s.to_string()));
        a.spawn();
        a
    }

    /// An agent whose policy source is Kubernetes (no --manifests).
    pub fn start_kube(node: &Node, kubeconfig: &Path, extra: &[&str]) -> Agent {
        let mut a = Agent::start_args_only(node);
        let at = a
            .args
            .iter()
            .position(|x| x == "--manifests")
            .expect("--manifests arg");
        a.args.drain(at..at + 2);
        a.args
            .extend(["--kubeconfig".into(), kubeconfig.display().to_string()]);
        a.args.extend(extra.iter().map(|s| s.to_string()));
        a.spawn();
        a
    }

    fn start_args_only(node: &Node) -> Agent {
        let socket = node.dir.path().join("agent.sock");
        let pin_dir = PathBuf::from(format!(
            "/sys/fs/bpf/corral-test-{}-{:x}",
            std::process::id(),
            node.id
        ));
        let state = node.dir.path().join("state");
        Agent {
            child: None,
            socket: socket.clone(),
            pin_dir: pin_dir.clone(),
            args: vec![
                "--socket".into(),
                socket.display().to_string(),
                "--pin-dir".into(),
                pin_dir.display().to_string(),
                "--state-dir".into(),
                state.display().to_string(),
                "--manifests".into(),
                node.manifests().display().to_string(),
            ],
            netns: node.netns.clone(),
            log: node.dir.path().join("agent.log"),
        }
    }

    pub fn spawn(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("agent log");
        // nsenter --net: enter only the network namespace; unlike
        // `ip netns exec` it keeps the mount namespace, so bpffs pins are
        // the host's and survive the agent (as in production)
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.netns))
            .arg(env!("CARGO_BIN_EXE_corral-agent"))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn corral-agent");
        self.child = Some(child);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if self.socket.exists() && api::call(&self.socket, &Request::List).is_ok() {
                return;
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("corral-agent exited with {st}: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("corral-agent did not start: {}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, like a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn call(&self, req: &Request) -> Response {
        match api::call(&self.socket, req) {
            Ok(Response::Error { message }) => panic!("agent error for {req:?}: {message}"),
            Ok(r) => r,
            Err(e) => panic!("agent call {req:?}: {e:#}\nlog:\n{}", self.log_text()),
        }
    }

    pub fn register(&self, spec: EndpointSpec) {
        self.call(&Request::Register { endpoint: spec });
    }

    /// Registers pods `(index into node.pods, app label)` with label `app`.
    pub fn register_apps(&self, node: &Node, pods: &[(usize, &str)]) {
        for &(i, app) in pods {
            let mut s = node.pods[i].spec();
            s.labels.insert("app".into(), app.into());
            self.register(s);
        }
    }

    pub fn reconcile(&self) {
        self.call(&Request::Reconcile);
    }

    pub fn list(&self) -> Vec<api::EndpointStatus> {
        match self.call(&Request::List) {
            Response::Endpoints { endpoints, .. } => endpoints,
            r => panic!("unexpected {r:?}"),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

pub fn limit(bps: u64) -> Option<LimitSpec> {
    Some(LimitSpec {
        rate_bps: bps,
        burst_bytes: None,
    })
}

/// A one-shot iperf3 server in `netns` on `port`.
pub struct Server(Child);

impl Server {
    pub fn start(netns: &str, port: u16) -> Server {
        let c = Command::new("ip")
            .args([
                "netns",
                "exec",
                netns,
                "iperf3",
                "-s",
                "-1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("iperf3 server");
        std::thread::sleep(Duration::from_millis(300));
        Server(c)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Measured {
    pub bps: f64,
    pub json: serde_json::Value,
}

/// Runs iperf3 in `netns` against `server` (in `server_ns`); returns the
/// rate the receiver got, excluding the first (omitted) second.
/// `udp_bps`: UDP at this send rate. `reverse`: server sends.
pub fn iperf(
    client_ns: &str,
    server_ns: &str,
    server: IpAddr,
    port: u16,
    secs: u32,
    udp_bps: Option<u64>,
    reverse: bool,
) -> Measured {
    let _s = Server::start(server_ns, port);
    let mut args: Vec<String> = [
        "netns",
        "exec",
        client_ns,
        "iperf3",
        "-c",
        &server.to_string(),
        "-p",
        &port.to_string(),
        "-t",
        &secs.to_string(),
        "-O",
        "1",
        "-J",
        "--connect-timeout",
        "3000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(b) = udp_bps {
        args.extend([
            "-u".into(),
            "-b".into(),
            b.to_string(),
            "-l".into(),
            "1400".into(),
        ]);
    }
    if reverse {
        args.push("-R".into());
    }
    let out = Command::new("ip")
        .args(&args)
        .output()
        .expect("iperf3 client");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "iperf3 output not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    if let Some(err) = json.get("error") {
        panic!("iperf3 error: {err}");
    }
    let end = &json["end"];
    let bps = if udp_bps.is_some() {
        // receiver side: bytes that arrived
        let s = &end["sum_received"];
        if s.is_object() {
            s["bits_per_second"].as_f64()
        } else {
            None
        }
        .or_else(|| {
            let s = &end["sum"];
            let lost = s["lost_percent"].as_f64()?;
            Some(s["bits_per_second"].as_f64()? * (1.0 - lost / 100.0))
        })
        .unwrap_or(0.0)
    } else {
        end["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0)
    };
    Measured { bps, json }
}

pub fn assert_within(what: &str, got: f64, want: f64, tol: f64) {
    let err = (got - want) / want;
    eprintln!(
        "{what}: got {:.2} Mbit/s want {:.2} Mbit/s ({:+.2} %)",
        got / 1e6,
        want / 1e6,
        err * 100.0
    );
    assert!(
        err.abs() <= tol,
        "{what}: got {:.3} Mbit/s, want {:.3} Mbit/s ±{:.0} % (error {:+.2} %)",
        got / 1e6,
        want / 1e6,
        tol * 100.0,
        err * 100.0
    );
}

/// Does a TCP connection from `from_ns` to `ip:port` succeed within 1 s?
pub fn tcp_connects(from_ns: &str, ip: IpAddr, port: u16) -> bool {
    let target = match ip {
        IpAddr::V4(a) => format!("{a}"),
        IpAddr::V6(a) => format!("{a}"),
    };
    let out = sh(&[
        "ip",
        "netns",
        "exec",
        from_ns,
        "timeout",
        "2",
        "bash",
        "-c",
        &format!(
            "exec 3<>/dev/tcp/{target}/{port} && echo ok >&3 && read -t 1 line <&3; echo \"$line\""
        ),
    ]);
    String::from_utf8_lossy(&out.stdout).trim() == "ok"
}

/// Runs `f` on a thread that has entered network namespace `netns`.
pub fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{netns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&fd),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Measures with `f(attempt)` and asserts the rate is within `tol` of
/// `want`. Overshoot always fails at once (the limit leaked). Undershoot is
/// re-measured up to twice: on the shared 2-core VM a starved sender or
/// receiver (load averages of 10+ seen) cannot reach the rate, which says
/// nothing about the limiter.
pub fn rate_within(what: &str, want: f64, tol: f64, mut f: impl FnMut(u16) -> f64) {
    for attempt in 0..3u16 {
        let got = f(attempt);
        if got <= want * (1.0 + tol) && got >= want * (1.0 - tol) {
            assert_within(what, got, want, tol);
            return;
        }
        if got > want * (1.0 + tol) || attempt == 2 {
            assert_within(what, got, want, tol);
        }
        eprintln!(
            "{what}: {:.2} Mbit/s below the band (attempt {attempt}), re-measuring",
            got / 1e6
        );
    }
}

/// Test servers in `netns`: each TCP port answers one byte ("k") per
/// connection, each UDP port echoes datagrams. Threads live until the
/// netns goes away.
pub fn serve_ports(netns: &str, tcp_ports: &[u16], udp_ports: &[u16]) {
    let (t, u) = (tcp_ports.to_vec(), udp_ports.to_vec());
    in_netns(netns, move || {
        for port in t {
            let l = std::net::TcpListener::bind(("::", port)).expect("bind tcp");
            std::thread::spawn(move || {
                for mut s in l.incoming().flatten() {
                    let _ = std::io::Write::write_all(&mut s, b"k");
                }
            });
        }
        for port in u {
            let s = std::net::UdpSocket::bind(("::", port)).expect("bind udp");
            std::thread::spawn(move || {
                let mut b = [0u8; 64];
                while let Ok((n, from)) = s.recv_from(&mut b) {
                    let _ = s.send_to(&b[..n], from);
                }
            });
        }
    });
}

/// A TCP connection from `from` to `to:port` that reads the server's byte
/// (400 ms bounds for connect and read).
pub fn tcp(from: &str, to: IpAddr, port: u16) -> bool {
    in_netns(from, move || {
        let t = Duration::from_millis(400);
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&(to, port).into(), t) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(t));
        let mut b = [0u8; 1];
        matches!(std::io::Read::read(&mut s, &mut b), Ok(1))
    })
}

/// One UDP datagram from `from` to `to:port` and its echo (400 ms).
pub fn udp(from: &str, to: IpAddr, port: u16) -> bool {
    in_netns(from, move || {
        let s = std::net::UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })
            .expect("bind");
        let _ = s.set_read_timeout(Some(Duration::from_millis(400)));
        let _ = s.send_to(b"q", (to, port));
        let mut b = [0u8; 8];
        matches!(s.recv_from(&mut b), Ok((1, _)))
    })
}

/// Polls `f` every 200 ms for up to `secs`; panics naming `what`.
pub fn eventually(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what}: not reached within {secs} s");
}

/// A REST call from inside the node netns (where the API server listens).
pub fn rest(
    node: &Node,
    method: &str,
    url: &str,
    body: Option<&serde_json::Value>,
) -> (u16, String) {
    let ct = if method == "PATCH" {
        "Content-Type: application/merge-patch+json"
    } else {
        "Content-Type: application/json"
    };
    let mut args = vec![
        "curl",
        "-s",
        "-o",
        "/dev/stdout",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
        "-H",
        ct,
    ];
    let data = body.map(|b| b.to_string());
    if let Some(d) = &data {
        args.extend(["--data", d.as_str()]);
    }
    args.push(url);
    let out = node.exec(&args);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// CRC32c (Castagnoli, reflected polynomial 0x82F63B78), bit by bit: the
/// SCTP checksum (RFC 9260 appendix A). Packets here are tens of bytes.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// An SCTP packet: common header (ports, verification tag, CRC32c stored
/// as the kernel does, little-endian) and one chunk.
pub fn sctp_packet(sport: u16, dport: u16, vtag: u32, chunk: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + chunk.len());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&vtag.to_be_bytes());
    p.extend_from_slice(&[0; 4]);
    p.extend_from_slice(chunk);
    let c = crc32c(&p);
    p[8..12].copy_from_slice(&c.to_le_bytes());
    p
}

/// The fields of an SCTP packet the probes look at.
#[derive(Debug, PartialEq)]
pub struct SctpSeen {
    pub sport: u16,
    pub dport: u16,
    pub vtag: u32,
    pub chunk: u8,
    /// initiate tag of an INIT / INIT-ACK chunk
    pub init_tag: u32,
}

/// Parses an SCTP packet (no IP header); None when short or the checksum
/// is wrong.
pub fn sctp_parse(p: &[u8]) -> Option<SctpSeen> {
    if p.len() < 16 {
        return None;
    }
    let mut z = p.to_vec();
    z[8..12].fill(0);
    if crc32c(&z) != u32::from_le_bytes(p[8..12].try_into().ok()?) {
        return None;
    }
    let be32 = |o: usize| u32::from_be_bytes([p[o], p[o + 1], p[o + 2], p[o + 3]]);
    Some(SctpSeen {
        sport: u16::from_be_bytes([p[0], p[1]]),
        dport: u16::from_be_bytes([p[2], p[3]]),
        vtag: be32(4),
        chunk: p[12],
        init_tag: if p.len() >= 20 { be32(16) } else { 0 },
    })
}

/// INIT (type 1) or INIT-ACK (type 2, with a state cookie parameter)
/// chunk: initiate tag, a_rwnd, 1 outbound / 1 inbound stream, TSN.
pub fn sctp_init_chunk(kind: u8, init_tag: u32) -> Vec<u8> {
    let len: u16 = if kind == 2 { 28 } else { 20 };
    let mut c = vec![kind, 0];
    c.extend_from_slice(&len.to_be_bytes());
    c.extend_from_slice(&init_tag.to_be_bytes());
    c.extend_from_slice(&65535u32.to_be_bytes());
    c.extend_from_slice(&1u16.to_be_bytes());
    c.extend_from_slice(&1u16.to_be_bytes());
    c.extend_from_slice(&init_tag.wrapping_add(7).to_be_bytes());
    if kind == 2 {
        // state cookie (type 7, length 8)
        c.extend_from_slice(&[0, 7, 0, 8, b'c', b'o', b'r', b'l']);
    }
    c
}

fn sctp_raw_socket(v6: bool) -> std::os::fd::OwnedFd {
    use rustix::net::{AddressFamily, SocketType, ipproto, socket};
    let af = if v6 {
        AddressFamily::INET6
    } else {
        AddressFamily::INET
    };
    socket(af, SocketType::RAW, Some(ipproto::SCTP)).expect("raw SCTP socket")
}

/// One datagram from a raw SCTP socket: (source, SCTP bytes). IPv4 raw
/// sockets deliver the IP header, IPv6 ones do not.
fn sctp_recv(fd: &std::os::fd::OwnedFd, v6: bool, buf: &mut [u8]) -> Option<(IpAddr, Vec<u8>)> {
    let (n, _, from) =
        rustix::net::recvfrom(fd, &mut *buf, rustix::net::RecvFlags::empty()).ok()?;
    let from = std::net::SocketAddr::try_from(from?).ok()?.ip();
    let b = &buf[..n];
    let off = if v6 {
        0
    } else {
        (*b.first()? as usize & 0xf) * 4
    };
    Some((from, b.get(off..)?.to_vec()))
}

/// User-space SCTP servers in `netns` (the kernel has no SCTP module): raw
/// IPv4 and IPv6 sockets answer a valid INIT (verification tag 0) to one of
/// `ports` with an INIT-ACK. The threads end when the netns name is gone.
pub fn serve_sctp(netns: &str, ports: &[u16]) {
    let ports = ports.to_vec();
    let path = format!("/var/run/netns/{netns}");
    in_netns(netns, move || {
        for v6 in [false, true] {
            let fd = sctp_raw_socket(v6);
            rustix::net::sockopt::set_socket_timeout(
                &fd,
                rustix::net::sockopt::Timeout::Recv,
                Some(Duration::from_millis(200)),
            )
            .expect("SO_RCVTIMEO");
            let (ports, path) = (ports.clone(), path.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while Path::new(&path).exists() {
                    let Some((from, p)) = sctp_recv(&fd, v6, &mut buf) else {
                        continue;
                    };
                    let Some(s) = sctp_parse(&p) else { continue };
                    if s.chunk != 1 || s.vtag != 0 || s.init_tag == 0 || !ports.contains(&s.dport) {
                        continue;
                    }
                    let ack = sctp_packet(
                        s.dport,
                        s.sport,
                        s.init_tag,
                        &sctp_init_chunk(2, s.init_tag ^ 0x5a5a_5a5a),
                    );
                    let to = std::net::SocketAddr::new(from, 0);
                    let _ = rustix::net::sendto(&fd, &ack, rustix::net::SendFlags::empty(), &to);
                }
            });
        }
    });
}

static SCTP_SEQ: AtomicU32 = AtomicU32::new(0);

/// An SCTP association attempt from `from` to `to:port`: sends an INIT
/// (again after 300 ms) and reports whether the matching INIT-ACK (ports,
/// verification tag = our initiate tag, valid checksum) arrives within
/// 600 ms.
pub fn sctp(from: &str, to: IpAddr, port: u16) -> bool {
    let seq = SCTP_SEQ.fetch_add(1, Ordering::SeqCst);
    let sport = 40000 + (seq % 20000) as u16;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(1);
    let tag = (nanos ^ std::process::id().rotate_left(16) ^ seq.wrapping_mul(0x9E37_79B9)) | 1;
    in_netns(from, move || {
        let v6 = to.is_ipv6();
        let fd = sctp_raw_socket(v6);
        rustix::net::sockopt::set_socket_timeout(
            &fd,
            rustix::net::sockopt::Timeout::Recv,
            Some(Duration::from_millis(50)),
        )
        .expect("SO_RCVTIMEO");
        let init = sctp_packet(sport, port, 0, &sctp_init_chunk(1, tag));
        let dst = std::net::SocketAddr::new(to, 0);
        let start = Instant::now();
        let mut sent = 0;
        let mut buf = [0u8; 2048];
        while start.elapsed() < Duration::from_millis(600) {
            if sent == 0 || (sent == 1 && start.elapsed() >= Duration::from_millis(300)) {
                rustix::net::sendto(&fd, &init, rustix::net::SendFlags::empty(), &dst)
                    .expect("send SCTP INIT");
                sent += 1;
            }
            let Some((src, p)) = sctp_recv(&fd, v6, &mut buf) else {
                continue;
            };
            if src == to
                && sctp_parse(&p).is_some_and(|s| {
                    s.chunk == 2 && s.sport == port && s.dport == sport && s.vtag == tag
                })
            {
                return true;
            }
        }
        false
    })
}

/// One ready endpoint of a dual-stack Service: its IPv4 and IPv6 address and, in
/// multi-node tests, the number `k` of its node (`nodeName: n{k}`).
pub struct SliceEndpoint {
    pub ip4: String,
    pub ip6: String,
    pub node: Option<u8>,
}

impl SliceEndpoint {
    pub fn of(pod: &Pod) -> SliceEndpoint {
        SliceEndpoint {
            ip4: pod.ip4.to_string(),
            ip6: pod.ip6.to_string(),
            node: None,
        }
    }
}

/// The two EndpointSlices (IPv4, IPv6) of Service `svc` in namespace `ns`, ports
/// `ports` (a YAML flow list), every endpoint ready.
pub fn dual_stack_slices(ns: &str, svc: &str, ports: &str, eps: &[SliceEndpoint]) -> String {
    let mut y = String::new();
    for (fam, v6) in [("IPv4", false), ("IPv6", true)] {
        y += &format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {svc}-{}, namespace: {ns}, labels: {{kubernetes.io/service-name: {svc}}}}}\naddressType: {fam}\nports: {ports}\nendpoints:\n",
            fam.to_lowercase()
        );
        for e in eps {
            let a = if v6 { &e.ip6 } else { &e.ip4 };
            let node = e
                .node
                .map(|k| format!("nodeName: n{k}, "))
                .unwrap_or_default();
            y += &format!("- {{addresses: [\"{a}\"], {node}conditions: {{ready: true}}}}\n");
        }
    }
    y
}
