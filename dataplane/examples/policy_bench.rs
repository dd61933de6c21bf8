//! Per-packet cost of the Corral programs with NetworkPolicy vs
//! ClusterNetworkPolicy at 10 / 1,000 / 10,000 rules, and the cost of the
//! drop-event stream, measured in the kernel with BPF_PROG_TEST_RUN (no
//! traffic generator noise: the kernel runs the program `repeat` times on
//! one frame and reports the mean time per run).
//!
//! Run as root: `cargo run --release -p corral-dataplane --example
//! policy_bench [-- ROUNDS REPEAT]`. It works in a private network
//! namespace (veth pairs only) and a private bpffs pin dir, both
//! removed at exit (`${NS_PREFIX:-crbench}<pid>`, `/sys/fs/bpf/corral-bench-<pid>`). Results go to BENCHMARKS.md.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use corral_agent::datapath::{AttachMode, Datapath};
use corral_agent::policy::source::{Manifests, parse_text};
use corral_agent::policy::{Inputs, LocalEndpoint, PodInfo, compile};
use corral_dataplane_abi::abi::{EndpointCfg, PROTO_TCP};

const SIZES: [usize; 3] = [10, 1000, 10_000];

/// Peer i: 198.19.(i / 250).(i % 250 + 1)
fn peer(i: usize) -> [u8; 4] {
    [198, 19, (i / 250) as u8, (i % 250 + 1) as u8]
}

fn ip(a: [u8; 4]) -> String {
    format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])
}

/// Ethernet + IPv4 + TCP SYN from the pod (198.18.0.2:40000) to
/// `dst`:`dport` (pod egress: the program on the host side's ingress).
fn syn(dst: [u8; 4], dport: u16) -> Vec<u8> {
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
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02; // SYN
    p
}

/// NetworkPolicy in namespace `ns`: allow egress TCP 80 to n /32 peers.
fn np(ns: &str, n: usize) -> String {
    let mut y = format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: scale, namespace: {ns}}}\nspec:\n  podSelector: {{}}\n  policyTypes: [Egress]\n  egress:\n  - ports: [{{port: 80}}]\n    to:\n"
    );
    for i in 0..n {
        y.push_str(&format!("    - ipBlock: {{cidr: {}/32}}\n", ip(peer(i))));
    }
    y
}

/// n Admin ClusterNetworkPolicy rules (25 per object) on namespace `ns`:
/// Deny egress TCP 81 to peer i.
fn cnp(ns: &str, n: usize) -> String {
    let mut y = String::new();
    for (o, chunk) in (0..n).collect::<Vec<_>>().chunks(25).enumerate() {
        y.push_str(&format!(
            "---\napiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {{name: {ns}-{o}}}\nspec:\n  tier: Admin\n  priority: {o}\n  subject: {{namespaces: {{matchLabels: {{kubernetes.io/metadata.name: {ns}}}}}}}\n  egress:\n"
        ));
        for i in chunk {
            y.push_str(&format!(
                "  - {{action: Deny, to: [{{networks: [{}/32]}}], protocols: [{{tcp: {{destinationPort: {{number: 81}}}}}}]}}\n",
                ip(peer(*i))
            ));
        }
    }
    y
}

fn sh(args: &[&str]) -> Result<()> {
    let st = Command::new(args[0]).args(&args[1..]).status()?;
    if !st.success() {
        bail!("{args:?} failed");
    }
    Ok(())
}

fn ifindex(name: &str) -> Result<u32> {
    corral_agent::datapath::ifindex(name)
}

struct Stats {
    median: f64,
    min: f64,
    max: f64,
}

fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(|a, b| a.total_cmp(b));
    Stats {
        median: v[v.len() / 2],
        min: v[0],
        max: v[v.len() - 1],
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(7);
    let repeat: u32 = args
        .get(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let prefix = std::env::var("NS_PREFIX").unwrap_or_else(|_| "crbench".to_string());
    let netns = format!("{prefix}{}", std::process::id());
    sh(&["ip", "netns", "add", &netns]).context("ip netns add (run as root)")?;
    let pin = std::path::PathBuf::from(format!("/sys/fs/bpf/corral-bench-{}", std::process::id()));
    let r = std::fs::File::open(format!("/var/run/netns/{netns}"))
        .context("opening the bench netns")
        .and_then(|fd| {
            // this (main) thread and the `ip` commands it starts work in
            // the private namespace
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&fd),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .context("setns")
        })
        .and_then(|()| run(&pin, rounds, repeat));
    let _ = std::fs::remove_dir_all(&pin);
    let _ = sh(&["ip", "netns", "del", &netns]);
    r
}

fn run(pin: &std::path::Path, rounds: usize, repeat: u32) -> Result<()> {
    let mut dp = Datapath::open(pin, AttachMode::Netlink)?;
    // one veth (endpoint) per scenario
    let mut names = Vec::new();
    let mut yaml = String::new();
    for (kind, n) in SIZES
        .iter()
        .map(|n| ("np", *n))
        .chain(SIZES.iter().map(|n| ("cnp", *n)))
    {
        let ns = format!("{kind}{n}");
        sh(&[
            "ip",
            "link",
            "add",
            &ns,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{ns}p"),
        ])?;
        yaml.push_str(&if kind == "np" {
            np(&ns, n)
        } else {
            cnp(&ns, n)
        });
        names.push(ns);
    }
    let mut m = Manifests::default();
    parse_text(&yaml, "bench", &mut m);
    if let Some(e) = m.errors.first() {
        bail!("{e} (and {} more)", m.errors.len() - 1);
    }
    let endpoints: Vec<LocalEndpoint> = names
        .iter()
        .map(|ns| {
            Ok(LocalEndpoint {
                ifindex: ifindex(ns)?,
                pod: PodInfo {
                    namespace: ns.clone(),
                    name: "pod".into(),
                    ips: vec!["198.18.0.2".parse()?],
                    ..Default::default()
                },
            })
        })
        .collect::<Result<_>>()?;
    let t = std::time::Instant::now();
    let c = compile(&Inputs {
        endpoints: endpoints.clone(),
        policies: m.policies,
        tiers: m.tiers,
        ..Default::default()
    });
    let compile_time = t.elapsed();
    if let Some(e) = c.errors.iter().find(|e| !e.contains("priority")) {
        bail!("{e}");
    }
    dp.upsert_policy(&c.entries)?;
    dp.upsert_tier(&c.tier_entries)?;
    for e in &endpoints {
        let cfg = EndpointCfg {
            endpoint_id: e.ifindex,
            flags: c.flags.get(&e.ifindex).copied().unwrap_or(0),
            ..Default::default()
        };
        dp.set_endpoint(e.ifindex, &cfg)?;
    }
    println!(
        "compile: {:.0} ms for all scenarios; {} NetworkPolicy entries, {} tier entries",
        compile_time.as_secs_f64() * 1e3,
        c.entries.len(),
        c.tier_entries.len()
    );
    // the deciding peer is in the middle of each list
    let deny = |n: usize| syn(peer(n / 2), 81);
    let measure = |dp: &Datapath, ifx: u32, pkt: &[u8], want: u32| -> Result<f64> {
        let (rv, d): (u32, Duration) = dp.test_run("corral_from_pod", ifx, pkt, repeat)?;
        if rv != want {
            bail!("verdict {rv}, want {want}");
        }
        Ok(d.as_nanos() as f64)
    };
    const SHOT: u32 = 2;
    // allowed packets pass with TC_ACT_UNSPEC (-1) since b21b6d1 (first in
    // line: filters behind Corral's still run)
    const OK: u32 = u32::MAX;
    let mut per: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    // drop-event stream: allowed established flow and drops, events off/on
    let ev_if = ifindex("cnp1000")?;
    let allowed = syn(peer(7), 80); // no rule matches: default allow
    measure(&dp, ev_if, &allowed, OK)?; // admit: the flow is in conntrack
    let mut ev: [Vec<f64>; 4] = Default::default();
    let mon = Arc::new(corral_agent::monitor::Monitor::default());
    let (mut rx, _) = mon.subscribe();
    let ring = dp.take_events()?;
    let m2 = mon.clone();
    std::thread::spawn(move || corral_agent::monitor::run(ring, m2));
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let r2 = received.clone();
    std::thread::spawn(move || {
        loop {
            match rx.blocking_recv() {
                Ok(_) => {
                    r2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(k)) => {
                    r2.fetch_add(k, std::sync::atomic::Ordering::Relaxed);
                }
                Err(_) => return,
            }
        }
    });
    for _ in 0..rounds {
        for (i, ns) in names.iter().enumerate() {
            let n: usize = ns.trim_start_matches(char::is_alphabetic).parse()?;
            per[i].push(measure(&dp, ifindex(ns)?, &deny(n), SHOT)?);
        }
        for on in [false, true] {
            dp.set_monitor(on)?;
            ev[usize::from(on)].push(measure(&dp, ev_if, &allowed, OK)?);
            ev[2 + usize::from(on)].push(measure(&dp, ev_if, &deny(1000), SHOT)?);
        }
        dp.set_monitor(false)?;
    }
    println!("\nnew-flow policy decision (denied SYN, full lookup every run), ns/packet:");
    println!(
        "{:<32} {:>8} {:>8} {:>8}",
        "scenario", "median", "min", "max"
    );
    for (i, ns) in names.iter().enumerate() {
        let s = stats(per[i].clone());
        let label = match ns.strip_prefix("np") {
            Some(n) => format!("NetworkPolicy {n} peers"),
            None => format!("ClusterNetworkPolicy {} rules", &ns[3..]),
        };
        println!(
            "{label:<32} {:>8.1} {:>8.1} {:>8.1}",
            s.median, s.min, s.max
        );
    }
    println!("\ndrop-event stream (cnp1000 endpoint), ns/packet:");
    for (i, what) in [
        "allowed, established, events off",
        "allowed, established, events on",
        "policy drop, events off",
        "policy drop, events on",
    ]
    .iter()
    .enumerate()
    {
        let s = stats(ev[i].clone());
        println!("{what:<34} {:>8.1} {:>8.1} {:>8.1}", s.median, s.min, s.max);
    }
    println!(
        "events delivered to the client: {} (ring full = lost, by design)",
        received.load(std::sync::atomic::Ordering::Relaxed)
    );
    Ok(())
}
