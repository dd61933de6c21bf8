//! Cost of Corral's Service translation (`--kube-proxy-replacement`) at
//! 100 / 1,000 / 10,000 Services × 10 endpoints, measured in the kernel
//! with BPF_PROG_TEST_RUN on `corral_from_pod` (a client pod's egress):
//! a new flow (SYN: frontend lookup, random backend, two LRU inserts, DNAT), a
//! packet of an established flow (ACK: frontend + flow lookup, DNAT), a packet
//! to a non-Service address with translation on, and translation off. Each
//! is a single run on a fresh copy of the frame (the test run re-uses one
//! skb, which the first run would translate), so every column carries the
//! same fixed per-call overhead (~1 µs); compare columns, not absolutes.
//! Also the time to write the tables (`Datapath::sync_lb`), and the
//! per-packet cost at the uplink's egress (`corral_node_out`) without and
//! with node ports (the host-network backends' reply lookup).
//!
//! Run as root: `cargo run -p corral-dataplane --example lb_bench [--
//! ROUNDS]` (the measured time is the kernel's; the build profile only
//! changes the setup time). Private netns `${NS_PREFIX:-crlb}<pid>` and pin dir
//! `/sys/fs/bpf/corral-lbbench-<pid>`, both removed at exit.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use corral_agent::datapath::{AttachMode, Datapath};
use corral_agent::services::{LbEntry, LbTable};
use corral_dataplane_abi::abi::{EndpointCfg, LB_NODEPORT, LbBe, PROTO_TCP, SvcKey, addr16};

const SIZES: [usize; 3] = [100, 1000, 10_000];
const ENDPOINTS: usize = 10;

/// Frontend i: 198.19.(i / 250).(i % 250 + 1):80
fn frontend(i: usize) -> [u8; 4] {
    [198, 19, (i / 250) as u8, (i % 250 + 1) as u8]
}

/// Ethernet + IPv4 + TCP SYN 198.18.0.2:`sport` → `dst`:80.
fn syn(dst: [u8; 4], sport: u16) -> Vec<u8> {
    tcp(dst, sport, 0x02)
}

/// The same with an ACK: a packet of an established flow.
fn ack(dst: [u8; 4], sport: u16) -> Vec<u8> {
    tcp(dst, sport, 0x10)
}

fn tcp(dst: [u8; 4], sport: u16, flags: u8) -> Vec<u8> {
    let mut p = vec![0u8; 14 + 20 + 20];
    p[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut p[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = PROTO_TCP;
    ip[12..16].copy_from_slice(&[198, 18, 0, 2]);
    ip[16..20].copy_from_slice(&dst);
    let tcp = &mut p[34..54];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    p
}

fn table(n: usize) -> LbTable {
    (0..n)
        .map(|i| {
            let key = SvcKey {
                addr: addr16(std::net::Ipv4Addr::from(frontend(i)).into()),
                port: 80,
                proto: PROTO_TCP,
                pad: 0,
            };
            let bes = (0..ENDPOINTS)
                .map(|e| LbBe {
                    addr: addr16(
                        std::net::Ipv4Addr::new(198, 18, 100 + (e as u8), (i % 250) as u8 + 1)
                            .into(),
                    ),
                    port: 8080,
                    pad: 0,
                })
                .collect();
            (
                key,
                LbEntry {
                    backends: bes,
                    ..Default::default()
                },
            )
        })
        .collect()
}

fn sh(args: &[&str]) -> Result<()> {
    let st = Command::new(args[0]).args(&args[1..]).status()?;
    if !st.success() {
        bail!("{args:?} failed");
    }
    Ok(())
}

fn median_spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[v.len() / 10], v[v.len() * 9 / 10])
}

fn main() -> Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5);
    let prefix = std::env::var("NS_PREFIX").unwrap_or_else(|_| "crlb".to_string());
    let netns = format!("{prefix}{}", std::process::id());
    sh(&["ip", "netns", "add", &netns]).context("ip netns add (run as root)")?;
    let pin =
        std::path::PathBuf::from(format!("/sys/fs/bpf/corral-lbbench-{}", std::process::id()));
    let r = std::fs::File::open(format!("/var/run/netns/{netns}"))
        .context("opening the bench netns")
        .and_then(|fd| {
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&fd),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .context("setns")
        })
        .and_then(|()| run(&pin, rounds));
    let _ = std::fs::remove_dir_all(&pin);
    let _ = sh(&["ip", "netns", "del", &netns]);
    r
}

fn run(pin: &std::path::Path, rounds: usize) -> Result<()> {
    let mut dp = Datapath::open(pin, AttachMode::Netlink)?;
    sh(&[
        "ip", "link", "add", "lbc", "type", "veth", "peer", "name", "lbcp",
    ])?;
    let ifx = corral_agent::datapath::ifindex("lbc")?;
    dp.set_endpoint(
        ifx,
        &EndpointCfg {
            endpoint_id: ifx,
            ..Default::default()
        },
    )?;
    const SHOT: u32 = 2;
    println!(
        "{:<10} {:>9} | {:>22} | {:>22} | {:>22} | {:>22}",
        "services",
        "sync ms",
        "new flow ns (p10-p90)",
        "established ns",
        "not a Service ns",
        "translation off ns"
    );
    let mut sport: u16 = 1024;
    for n in SIZES {
        let t = table(n);
        let t0 = Instant::now();
        dp.sync_lb(&t)?;
        let sync_ms = t0.elapsed().as_secs_f64() * 1e3;
        let target = frontend(n / 2);
        let (mut new, mut est, mut other, mut off) = (vec![], vec![], vec![], vec![]);
        for _ in 0..rounds {
            dp.set_lb(true)?;
            // new flows: one run per source port (each a first packet)
            for _ in 0..200 {
                sport = sport.wrapping_add(1).max(1024);
                let (rv, d) = dp.test_run("corral_from_pod", ifx, &syn(target, sport), 1)?;
                if rv == SHOT {
                    bail!("translated SYN dropped");
                }
                new.push(d.as_nanos() as f64);
            }
            // BPF_PROG_TEST_RUN re-runs one skb, which the first run
            // translates: every case is measured as single runs on a
            // fresh copy (the same fixed per-call overhead in each column)
            let once = |dp: &Datapath, pkt: &[u8], v: &mut Vec<f64>| -> Result<()> {
                for _ in 0..200 {
                    let (_, d) = dp.test_run("corral_from_pod", ifx, pkt, 1)?;
                    v.push(d.as_nanos() as f64);
                }
                Ok(())
            };
            once(&dp, &ack(target, sport), &mut est)?;
            once(&dp, &ack([198, 18, 9, 9], 999), &mut other)?;
            dp.set_lb(false)?;
            once(&dp, &ack(target, sport), &mut off)?;
        }
        let f = |v: Vec<f64>| {
            let (m, lo, hi) = median_spread(v);
            format!("{m:>6.0} ({lo:>5.0}-{hi:>5.0})")
        };
        println!(
            "{:<10} {:>9.1} | {:>22} | {:>22} | {:>22} | {:>22}",
            format!("{n}x{ENDPOINTS}"),
            sync_ms,
            f(new),
            f(est),
            f(other),
            f(off)
        );
    }
    node_out(&mut dp, ifx, rounds)
}

/// `corral_node_out` (egress of the node's uplink): the price every packet
/// leaving the node pays for the host-network backends' reply lookup
/// (`corral_np_rev`, a miss here), which runs only while node ports or
/// external addresses exist, against the same packet without them.
fn node_out(dp: &mut Datapath, ifx: u32, rounds: usize) -> Result<()> {
    let plain = table(100);
    let mut with_np = plain.clone();
    with_np.insert(
        SvcKey {
            addr: addr16(std::net::Ipv4Addr::new(192, 0, 2, 1).into()),
            port: 30080,
            proto: PROTO_TCP,
            pad: 0,
        },
        LbEntry {
            backends: plain.values().next().expect("entry").backends.clone(),
            flags: LB_NODEPORT,
            ..Default::default()
        },
    );
    let pkt = ack([198, 18, 9, 9], 999);
    let mut cols = Vec::new();
    for t in [&plain, &with_np] {
        dp.set_lb(true)?;
        dp.sync_lb(t)?;
        let mut v = Vec::new();
        for _ in 0..rounds * 200 {
            let (_, d) = dp.test_run("corral_node_out", ifx, &pkt, 1)?;
            v.push(d.as_nanos() as f64);
        }
        let (m, lo, hi) = median_spread(v);
        cols.push(format!("{m:>6.0} ({lo:>5.0}-{hi:>5.0})"));
    }
    println!(
        "\ncorral_node_out, a packet leaving the node (ns, median (p10-p90)):\n{:>22} | {:>22}\n{:>22} | {:>22}",
        "no node ports", "node ports (lookup)", cols[0], cols[1]
    );
    Ok(())
}
