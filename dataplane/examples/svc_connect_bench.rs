//! Service connection setup: Corral's translation (`--kube-proxy-replacement`,
//! the eBPF frontend map) against kube-proxy's iptables mode (one
//! KUBE-SERVICES rule per Service, KUBE-SVC/KUBE-SEP chains with the DNAT,
//! conntrack), with 100 / 1,000 / 10,000 Services, side by side in one
//! run: two identical simulated nodes (netns), each with a client pod and a
//! server pod on veths and Corral's programs on the client's veth; node A
//! translates with Corral, node B (Corral's translation off) with the
//! iptables rules. The client opens TCP connections one after another to
//! a random Service (all backed by the server pod), closing each with RST
//! (no TIME_WAIT), and times connect(): connection rate and p50/p99
//! connect latency. The arms alternate within each round.
//!
//! Run as root: `cargo run -p corral-dataplane --example svc_connect_bench
//! [-- ROUNDS CONNS]` (default 3 rounds × 1000 connections per arm and
//! size). Netns `${NS_PREFIX:-cdpsb}<pid>{a,b}{n,c,s}` and pin dirs
//! `/sys/fs/bpf/corral-svcbench-<pid>-{a,b}`, removed at exit.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use corral_agent::datapath::{AttachMode, Datapath};
use corral_agent::services::{LbEntry, LbTable};
use corral_dataplane_abi::abi::{EndpointCfg, LbBe, PROTO_TCP, SvcKey, addr16};

const SIZES: [usize; 3] = [100, 1000, 10_000];
const SERVER: [u8; 4] = [198, 18, 2, 2];

/// ClusterIP of Service i: 198.19.(i / 250).(i % 250 + 1)
fn cluster_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, (i / 250) as u8, (i % 250 + 1) as u8)
}

fn sh(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0]).args(&args[1..]).output()?;
    if !out.status.success() {
        bail!(
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn enter(netns: &str) -> Result<()> {
    let fd = std::fs::File::open(format!("/var/run/netns/{netns}"))
        .with_context(|| format!("opening netns {netns}"))?;
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(&fd),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .with_context(|| format!("setns {netns}"))
}

/// Runs `f` on a thread inside `netns`.
fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let ns = netns.to_string();
    std::thread::spawn(move || enter(&ns).and_then(|()| f()))
        .join()
        .map_err(|_| anyhow::anyhow!("thread in {netns} panicked"))?
}

/// One simulated node: node netns with client and server pods.
struct Arm {
    node: String,
    client: String,
    server: String,
    pin: std::path::PathBuf,
    dp: Option<Datapath>,
}

impl Arm {
    fn new(tag: &str) -> Result<Arm> {
        let prefix = std::env::var("NS_PREFIX").unwrap_or_else(|_| "cdpsb".to_string());
        let base = format!("{prefix}{}{tag}", std::process::id());
        let arm = Arm {
            node: format!("{base}n"),
            client: format!("{base}c"),
            server: format!("{base}s"),
            pin: format!("/sys/fs/bpf/corral-svcbench-{}-{tag}", std::process::id()).into(),
            dp: None,
        };
        for n in [&arm.node, &arm.client, &arm.server] {
            sh(&["ip", "netns", "add", n]).context("ip netns add (run as root)")?;
        }
        let (n, c, s) = (&arm.node, &arm.client, &arm.server);
        sh(&["ip", "-n", n, "link", "set", "lo", "up"])?;
        sh(&[
            "ip",
            "netns",
            "exec",
            n,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])?;
        for (hif, pod, sub) in [("hc", c, 1), ("hs", s, 2)] {
            sh(&[
                "ip", "-n", n, "link", "add", hif, "type", "veth", "peer", "name", "eth0", "netns",
                pod,
            ])?;
            sh(&[
                "ip",
                "-n",
                n,
                "addr",
                "add",
                &format!("198.18.{sub}.1/24"),
                "dev",
                hif,
            ])?;
            sh(&["ip", "-n", n, "link", "set", hif, "up"])?;
            sh(&["ip", "-n", pod, "link", "set", "lo", "up"])?;
            sh(&[
                "ip",
                "-n",
                pod,
                "addr",
                "add",
                &format!("198.18.{sub}.2/24"),
                "dev",
                "eth0",
            ])?;
            sh(&["ip", "-n", pod, "link", "set", "eth0", "up"])?;
            sh(&[
                "ip",
                "-n",
                pod,
                "route",
                "add",
                "default",
                "via",
                &format!("198.18.{sub}.1"),
            ])?;
        }
        Ok(arm)
    }

    /// Corral's programs on the client's veth (this thread enters the
    /// node netns for the attach).
    fn attach(&mut self) -> Result<()> {
        enter(&self.node)?;
        let mut dp = Datapath::open(&self.pin, AttachMode::Netlink)?;
        dp.attach("hc")?;
        let idx = corral_agent::datapath::ifindex("hc")?;
        dp.set_endpoint(
            idx,
            &EndpointCfg {
                endpoint_id: idx,
                ..Default::default()
            },
        )?;
        self.dp = Some(dp);
        Ok(())
    }

    /// The server pod accepts (and drops) connections on 8080 until its
    /// netns goes.
    fn serve(&self) -> Result<()> {
        let l = in_netns(&self.server, || Ok(TcpListener::bind(("0.0.0.0", 8080))?))?;
        std::thread::spawn(move || {
            for s in l.incoming() {
                drop(s);
            }
        });
        Ok(())
    }

    /// `conns` connections to random Services among `n`: (rate per s,
    /// connect latencies in µs, failures).
    fn measure(&self, n: usize, conns: usize, seed: u64) -> Result<(f64, Vec<f64>, usize)> {
        in_netns(&self.client, move || {
            let mut x = seed | 1;
            let mut lat = Vec::with_capacity(conns);
            let mut failed = 0;
            let t0 = Instant::now();
            for _ in 0..conns {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let to = SocketAddr::new(cluster_ip(x as usize % n).into(), 80);
                let t = Instant::now();
                match TcpStream::connect_timeout(&to, Duration::from_secs(2)) {
                    Ok(s) => {
                        lat.push(t.elapsed().as_secs_f64() * 1e6);
                        // RST on close: no TIME_WAIT, ports stay free
                        let _ = rustix::net::sockopt::set_socket_linger(&s, Some(Duration::ZERO));
                    }
                    Err(_) => failed += 1,
                }
            }
            let rate = conns as f64 / t0.elapsed().as_secs_f64();
            Ok((rate, lat, failed))
        })
    }
}

impl Drop for Arm {
    fn drop(&mut self) {
        self.dp = None;
        let _ = std::fs::remove_dir_all(&self.pin);
        for n in [&self.client, &self.server, &self.node] {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn corral_table(n: usize) -> LbTable {
    (0..n)
        .map(|i| {
            (
                SvcKey {
                    addr: addr16(cluster_ip(i).into()),
                    port: 80,
                    proto: PROTO_TCP,
                    pad: 0,
                },
                LbEntry {
                    backends: vec![LbBe {
                        addr: addr16(Ipv4Addr::from(SERVER).into()),
                        port: 8080,
                        pad: 0,
                    }],
                    ..Default::default()
                },
            )
        })
        .collect()
}

/// kube-proxy's iptables-mode nat table for `n` Services (one endpoint
/// each), as iptables-restore input.
fn iptables_rules(n: usize) -> String {
    let mut chains = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n",
    );
    let mut rules = String::from(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n",
    );
    let ep = Ipv4Addr::from(SERVER);
    for i in 0..n {
        chains += &format!(":KUBE-SVC-{i:016X} - [0:0]\n:KUBE-SEP-{i:016X} - [0:0]\n");
        rules += &format!(
            "-A KUBE-SERVICES -d {}/32 -p tcp -m comment --comment \"bench/s{i}:http cluster IP\" -m tcp --dport 80 -j KUBE-SVC-{i:016X}\n",
            cluster_ip(i)
        );
        rules += &format!(
            "-A KUBE-SVC-{i:016X} -m comment --comment \"bench/s{i}:http -> {ep}:8080\" -j KUBE-SEP-{i:016X}\n"
        );
        rules += &format!(
            "-A KUBE-SEP-{i:016X} -s {ep}/32 -m comment --comment \"bench/s{i}:http\" -j KUBE-MARK-MASQ\n"
        );
        rules += &format!(
            "-A KUBE-SEP-{i:016X} -p tcp -m comment --comment \"bench/s{i}:http\" -m tcp -j DNAT --to-destination {ep}:8080\n"
        );
    }
    chains + &rules + "COMMIT\n"
}

fn iptables_restore(netns: &str, rules: &str) -> Result<()> {
    let mut c = Command::new("ip")
        .args(["netns", "exec", netns, "iptables-restore"])
        .stdin(Stdio::piped())
        .spawn()
        .context("iptables-restore")?;
    c.stdin
        .take()
        .context("stdin")?
        .write_all(rules.as_bytes())?;
    if !c.wait()?.success() {
        bail!("iptables-restore failed");
    }
    Ok(())
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);
    let conns: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let mut a = Arm::new("a")?;
    let mut b = Arm::new("b")?;
    a.attach()?;
    b.attach()?;
    a.serve()?;
    b.serve()?;
    let iptables = String::from_utf8_lossy(&Command::new("iptables").arg("-V").output()?.stdout)
        .trim()
        .to_string();
    println!(
        "{rounds} rounds x {conns} connections per arm and size; {iptables}; kernel {}",
        String::from_utf8_lossy(&Command::new("uname").arg("-r").output()?.stdout).trim()
    );
    println!(
        "{:<9} {:<16} {:>24} {:>10} {:>10} {:>8} {:>9}",
        "services", "arm", "conn/s median (min-max)", "p50 us", "p99 us", "failed", "setup ms"
    );
    for n in SIZES {
        let t = Instant::now();
        let dpa = a.dp.as_mut().context("datapath a")?;
        dpa.sync_lb(&corral_table(n))?;
        dpa.set_lb(true)?;
        let setup_a = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        iptables_restore(&b.node, &iptables_rules(n))?;
        let setup_b = t.elapsed().as_secs_f64() * 1e3;
        // warm-up (first connections, conntrack/neighbour entries)
        a.measure(n, 50, 7)?;
        b.measure(n, 50, 7)?;
        let mut res: [(Vec<f64>, Vec<f64>, usize); 2] = Default::default();
        for r in 0..rounds {
            let order: [usize; 2] = if r % 2 == 0 { [0, 1] } else { [1, 0] };
            for k in order {
                let arm = if k == 0 { &a } else { &b };
                let (rate, lat, failed) = arm.measure(n, conns, 0x9E37_79B9 + r as u64)?;
                res[k].0.push(rate);
                res[k].1.extend(lat);
                res[k].2 += failed;
            }
        }
        for (k, name, setup) in [(0, "corral eBPF", setup_a), (1, "iptables DNAT", setup_b)] {
            let (rates, lat, failed) = &mut res[k];
            if lat.is_empty() {
                bail!("{name}: no connection succeeded with {n} Services");
            }
            let med = pct(rates, 0.5);
            let (lo, hi) = (pct(rates, 0.0), pct(rates, 1.0));
            println!(
                "{:<9} {:<16} {:>24} {:>10.0} {:>10.0} {:>8} {:>9.0}",
                n,
                name,
                format!("{med:.0} ({lo:.0}-{hi:.0})"),
                pct(lat, 0.5),
                pct(lat, 0.99),
                failed,
                setup
            );
        }
    }
    Ok(())
}
