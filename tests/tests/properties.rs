//! Property test: random clusters and pods → no placement breaks a hard constraint
//! (resources, pod count, host ports, taints, nodeSelector, required anti-affinity,
//! DoNotSchedule topology spread maxSkew), for sequential and batched scheduling.
//! The checker below is independent of the plugins' code.

use std::collections::{BTreeMap, HashMap};

use corral_scheduler::config::default_frameworks;
use corral_scheduler::input::from_objects;
use corral_scheduler::scheduler::{Options, Scheduler};
use corral_scheduler::simulate::prepare;
use corral_scheduler::testutil::{node, pod};
use k8s_openapi::api::core::v1::{Node, Pod};
use proptest::prelude::*;
use serde_json::json;

#[derive(Debug, Clone)]
struct NodeSpec {
    cpu_m: i64,
    mem_mi: i64,
    zone: u8,
    pods: u8,
    taint: bool,
    ssd: bool,
}

#[derive(Debug, Clone)]
struct PodSpec {
    cpu_m: i64,
    mem_mi: i64,
    group: u8,
    host_port: Option<u16>,
    tolerate: bool,
    want_ssd: bool,
    anti: Option<bool>, // Some(true)=hostname, Some(false)=zone
    spread: bool,
}

fn node_spec() -> impl Strategy<Value = NodeSpec> {
    (
        1i64..8,
        1i64..16,
        0u8..3,
        3u8..20,
        prop::bool::weighted(0.2),
        any::<bool>(),
    )
        .prop_map(|(c, m, zone, pods, taint, ssd)| NodeSpec {
            cpu_m: c * 1000,
            mem_mi: m * 1024,
            zone,
            pods,
            taint,
            ssd,
        })
}

fn pod_spec() -> impl Strategy<Value = PodSpec> {
    (
        0i64..2500,
        0i64..4096,
        0u8..4,
        prop::option::weighted(0.2, 8080u16..8083),
        any::<bool>(),
        prop::bool::weighted(0.2),
        prop::option::weighted(0.3, any::<bool>()),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(cpu_m, mem_mi, group, host_port, tolerate, want_ssd, anti, spread)| PodSpec {
                cpu_m,
                mem_mi,
                group,
                host_port,
                tolerate,
                want_ssd: want_ssd && !spread,
                anti,
                spread,
            },
        )
}

fn build(nodes: &[NodeSpec], pods: &[PodSpec]) -> (Vec<Node>, Vec<Pod>) {
    let ns: Vec<Node> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut b = node(&format!("n{i}"))
                .cpu(&format!("{}m", n.cpu_m))
                .mem(&format!("{}Mi", n.mem_mi))
                .pods(&n.pods.to_string())
                .zone(&format!("z{}", n.zone));
            if n.taint {
                b = b.taint("dedicated", "ai", "NoSchedule");
            }
            if n.ssd {
                b = b.label("disk", "ssd");
            }
            b.node()
        })
        .collect();
    let ps: Vec<Pod> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let app = format!("g{}", p.group);
            let mut b = pod(&format!("p{i}")).label("app", &app);
            if p.cpu_m > 0 {
                b = b.cpu(&format!("{}m", p.cpu_m));
            }
            if p.mem_mi > 0 {
                b = b.mem(&format!("{}Mi", p.mem_mi));
            }
            if let Some(port) = p.host_port {
                b = b.host_port(i32::from(port), "TCP", "");
            }
            if p.tolerate {
                b = b.toleration(json!({"key": "dedicated", "operator": "Equal", "value": "ai", "effect": "NoSchedule"}));
            }
            if p.want_ssd {
                b = b.node_selector("disk", "ssd");
            }
            if let Some(host) = p.anti {
                let key = if host { "kubernetes.io/hostname" } else { "topology.kubernetes.io/zone" };
                b = b.affinity(json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]}}));
            }
            if p.spread {
                b = b.label("spread", &app).spread(json!({"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"spread": app}}}));
            }
            b.pod()
        })
        .collect();
    (ns, ps)
}

fn check(
    nodes: &[NodeSpec],
    pods: &[PodSpec],
    placements: &HashMap<usize, usize>,
) -> Result<(), String> {
    let mut cpu = vec![0i64; nodes.len()];
    let mut mem = vec![0i64; nodes.len()];
    let mut count = vec![0u32; nodes.len()];
    let mut ports: HashMap<(usize, u16), usize> = HashMap::new();
    for (&pi, &ni) in placements {
        let p = &pods[pi];
        let n = &nodes[ni];
        cpu[ni] += p.cpu_m;
        mem[ni] += p.mem_mi;
        count[ni] += 1;
        if let Some(port) = p.host_port
            && let Some(other) = ports.insert((ni, port), pi)
        {
            return Err(format!(
                "pods p{other} and p{pi} share hostPort {port} on n{ni}"
            ));
        }
        if n.taint && !p.tolerate {
            return Err(format!("p{pi} on tainted n{ni} without toleration"));
        }
        if p.want_ssd && !n.ssd {
            return Err(format!("p{pi} needs disk=ssd but n{ni} has none"));
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        if cpu[i] > n.cpu_m || mem[i] > n.mem_mi || count[i] > u32::from(n.pods) {
            return Err(format!(
                "n{i} overcommitted: cpu {}/{} mem {}/{} pods {}/{}",
                cpu[i], n.cpu_m, mem[i], n.mem_mi, count[i], n.pods
            ));
        }
    }
    // Required anti-affinity, both directions: no two co-located pods (in the term's
    // topology domain) where one's term matches the other's group.
    let placed: Vec<(usize, usize)> = placements.iter().map(|(&p, &n)| (p, n)).collect();
    for &(a, na) in &placed {
        let Some(host) = pods[a].anti else { continue };
        for &(b, nb) in &placed {
            if a == b || pods[a].group != pods[b].group {
                continue;
            }
            let same = if host {
                na == nb
            } else {
                nodes[na].zone == nodes[nb].zone
            };
            if same {
                return Err(format!(
                    "anti-affinity of p{a} violated by p{b} (n{na}, n{nb})"
                ));
            }
        }
    }
    // Topology spread (zone, maxSkew 1) over zones that exist, for groups whose
    // matching pods all carry the constraint.
    let zones: Vec<u8> = {
        let mut z: Vec<u8> = nodes.iter().map(|n| n.zone).collect();
        z.sort();
        z.dedup();
        z
    };
    let mut per_group: BTreeMap<u8, BTreeMap<u8, i64>> = BTreeMap::new();
    for &(p, n) in &placed {
        if pods[p].spread {
            *per_group
                .entry(pods[p].group)
                .or_default()
                .entry(nodes[n].zone)
                .or_default() += 1;
        }
    }
    for (g, counts) in per_group {
        // Spread pods never carry a nodeSelector and the default nodeTaintsPolicy is
        // Ignore, so every zone is a domain.
        let vals: Vec<i64> = zones
            .iter()
            .map(|z| counts.get(z).copied().unwrap_or(0))
            .collect();
        if let (Some(max), Some(min)) = (vals.iter().max(), vals.iter().min())
            && max - min > 1
        {
            return Err(format!(
                "spread of group g{g} skewed: {counts:?} over zones {zones:?}"
            ));
        }
    }
    Ok(())
}

fn run(
    nodes: &[NodeSpec],
    pods: &[PodSpec],
    batch: usize,
    seed: u64,
) -> Result<HashMap<usize, usize>, String> {
    let (ns, ps) = build(nodes, pods);
    let input = from_objects(ns, ps, vec![], vec![]).map_err(|e| e.to_string())?;
    let fws = default_frameworks();
    let prepared = prepare(input, &fws);
    let opts = Options {
        seed,
        batch_size: batch,
        latency_budget: None,
        ..Options::default()
    };
    let mut s = Scheduler::new(fws, prepared.snapshot, opts);
    let r = s.schedule_all(prepared.pending);
    if r.placements.len() + r.unschedulable.len() != pods.len() {
        return Err(format!(
            "{} placed + {} unschedulable != {} pods",
            r.placements.len(),
            r.unschedulable.len(),
            pods.len()
        ));
    }
    for u in &r.unschedulable {
        if !u
            .message
            .starts_with(&format!("0/{} nodes are available", nodes.len()))
        {
            return Err(format!("bad message for {}: {}", u.pod, u.message));
        }
    }
    Ok(r.placements
        .iter()
        .map(|p| {
            let pi: usize = p
                .pod
                .trim_start_matches("default/p")
                .parse()
                .unwrap_or(usize::MAX);
            let ni: usize = p.node.trim_start_matches('n').parse().unwrap_or(usize::MAX);
            (pi, ni)
        })
        .collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn no_placement_breaks_a_hard_constraint(
        nodes in prop::collection::vec(node_spec(), 1..12),
        pods in prop::collection::vec(pod_spec(), 1..40),
        seed in any::<u64>(),
    ) {
        for batch in [1usize, 5, 64] {
            let placements = run(&nodes, &pods, batch, seed).map_err(TestCaseError::fail)?;
            check(&nodes, &pods, &placements).map_err(|e| TestCaseError::fail(format!("batch {batch}: {e}")))?;
        }
    }

    #[test]
    fn fixed_seed_is_deterministic(
        nodes in prop::collection::vec(node_spec(), 1..10),
        pods in prop::collection::vec(pod_spec(), 1..30),
        seed in any::<u64>(),
    ) {
        let a = run(&nodes, &pods, 8, seed).map_err(TestCaseError::fail)?;
        let b = run(&nodes, &pods, 8, seed).map_err(TestCaseError::fail)?;
        prop_assert_eq!(a, b);
    }
}

#[test]
fn checker_catches_violations() {
    // The checker itself must be able to fail.
    let nodes = vec![NodeSpec {
        cpu_m: 1000,
        mem_mi: 1024,
        zone: 0,
        pods: 10,
        taint: true,
        ssd: false,
    }];
    let p = PodSpec {
        cpu_m: 800,
        mem_mi: 0,
        group: 0,
        host_port: Some(8080),
        tolerate: false,
        want_ssd: false,
        anti: Some(true),
        spread: false,
    };
    let pods = vec![p.clone(), p];
    let placements = HashMap::from([(0, 0), (1, 0)]);
    let e = check(&nodes, &pods, &placements).unwrap_err();
    assert!(!e.is_empty());
}
