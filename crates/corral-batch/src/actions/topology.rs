//! Network-topology-aware gangs (Volcano HyperNodes): a gang whose PodGroup sets
//! `networkTopology` is placed inside the lowest-tier HyperNode that can hold it —
//! its pods are offered to the engine restricted to that HyperNode's nodes
//! (required node affinity on `metadata.name`, added to each of the pod's own
//! terms, so NodeAffinity's PreFilter evaluates only those nodes), HyperNode after HyperNode, all-or-nothing each time. `hard`: never
//! beyond `highestTierAllowed` (no HyperNode → the gang waits, saying why each
//! failed); `soft`: when no HyperNode holds it, it is placed as any gang.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
};

use super::allocate::{charge_tasks, commit, pick_gang, place_gangs};
use super::*;
use crate::hypernodes::capacity::{Amounts, Capacity};
use crate::hypernodes::{NetworkTopology, Topology};

/// The pod restricted to `nodes`: each of its node affinity terms becomes one term
/// per node that also requires `metadata.name In [node]` (the API allows one value
/// per matchFields requirement). Every term then pins node names, so NodeAffinity's
/// PreFilter narrows the evaluation to the HyperNode's nodes instead of filtering
/// all nodes of the cluster.
fn restricted(p: &PodInfo, nodes: &BTreeSet<String>) -> Option<PodInfo> {
    let mut pod = (*p.pod).clone();
    let spec = pod.spec.as_mut()?;
    let aff = spec.affinity.get_or_insert_with(Affinity::default);
    let na = aff.node_affinity.get_or_insert_with(NodeAffinity::default);
    let sel = na
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(|| NodeSelector {
            node_selector_terms: Vec::new(),
        });
    if sel.node_selector_terms.is_empty() {
        sel.node_selector_terms.push(NodeSelectorTerm::default());
    }
    let mut terms = Vec::with_capacity(sel.node_selector_terms.len() * nodes.len());
    for t in &sel.node_selector_terms {
        for n in nodes {
            let mut t = t.clone();
            t.match_fields
                .get_or_insert_with(Vec::new)
                .push(NodeSelectorRequirement {
                    key: "metadata.name".into(),
                    operator: "In".into(),
                    values: Some(vec![n.clone()]),
                });
            terms.push(t);
        }
    }
    sel.node_selector_terms = terms;
    let mut info = PodInfo::new(pod, p.seq).ok()?;
    info.priority = p.priority;
    Some(info)
}

/// Allocates gang `j` of queue `q` under its network topology. Returns false when
/// the gang is to be placed as any gang (soft, no HyperNode could hold it).
pub(super) fn allocate_in_topology(
    ssn: &mut Session,
    j: usize,
    q: usize,
    nt: NetworkTopology,
) -> bool {
    let topo = ssn.topology.clone();
    let mut cap = match ssn.hyper_capacity.take() {
        Some(c) => c,
        None => Box::new(Capacity::new(&topo.domains, &ssn.sched.snapshot)),
    };
    cap.refresh(&topo.domains, &ssn.sched.snapshot);
    let out = place_in_domains(ssn, j, q, nt, &topo, &mut cap);
    ssn.hyper_capacity = Some(cap);
    out
}

/// At most this many HyperNodes are named in a message (then a count).
const MAX_NAMED: usize = 20;

fn join_capped(why: &[String]) -> String {
    if why.len() <= MAX_NAMED {
        return why.join("; ");
    }
    format!(
        "{}; and {} more HyperNodes",
        why[..MAX_NAMED].join("; "),
        why.len() - MAX_NAMED
    )
}

/// The least the gang must still place inside one HyperNode: the smallest
/// requests of the tasks it needs beyond its running ones (per resource), and as
/// many pod slots. Zero when the gang is ready without placing anything, or when
/// a profile has no NodeResourcesFit (requests then do not bound a node).
pub(super) fn gang_need(ssn: &Session, j: usize) -> Amounts {
    let fit = ssn
        .sched
        .frameworks
        .iter()
        .all(|fw| fw.filter.iter().any(|f| f.name() == "NodeResourcesFit"));
    let job = &ssn.jobs[j];
    let running: Vec<&Task> = job.running.tasks().iter().collect();
    if !fit || ssn.job_ready(j, &running).is_ok() {
        return Amounts::default();
    }
    let k = job
        .min_member
        .saturating_sub(job.running.len())
        .min(job.pending.len());
    let smallest = |f: fn(&Task) -> i64| -> i64 {
        let mut v: Vec<i64> = job.pending.iter().map(f).collect();
        v.sort_unstable();
        v.iter().take(k).sum()
    };
    Amounts {
        cpu: smallest(|t| t.pod.requests.requests.milli_cpu),
        memory: smallest(|t| t.pod.requests.requests.memory),
        ephemeral: smallest(|t| t.pod.requests.requests.ephemeral_storage),
        pods: k as i64,
    }
}

/// A hash of what decides whether the gang fits a HyperNode whose nodes did not
/// change: its pending pods' equivalence classes (names and membership
/// annotations ignored), running count, minMember and minTaskMember. None when
/// other pods placed meanwhile could make it fit (required pod affinity, topology
/// spread constraints): such a gang is always tried.
pub(super) fn gang_shape(ssn: &mut Session, j: usize) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut classes = Vec::with_capacity(ssn.jobs[j].pending.len());
    for t in &ssn.jobs[j].pending {
        let spread = t
            .pod
            .spec()
            .and_then(|s| s.topology_spread_constraints.as_ref())
            .is_some_and(|c| !c.is_empty());
        if spread || !t.pod.required_affinity_terms.is_empty() {
            return None;
        }
        let e = t.pod.equivalence;
        let c = *ssn.equivalence.entry(e).or_insert_with(|| {
            crate::snapshot::equivalence_hash_ignoring(
                &t.pod.pod,
                crate::session::SESSION_ONLY_ANNOTATIONS,
            )
        });
        classes.push(c);
    }
    classes.sort_unstable();
    let job = &ssn.jobs[j];
    let mut h = std::collections::hash_map::DefaultHasher::new();
    classes.hash(&mut h);
    job.running.len().hash(&mut h);
    job.min_member.hash(&mut h);
    job.min_task_member.hash(&mut h);
    Some(h.finish())
}

/// The HyperNodes gang `j` may use, best first: lowest tier first; within a tier
/// (Volcano's network-topology-aware scoring) the ones holding more of the job's
/// running tasks, then the fuller one (HyperNode binpacking), then fewer nodes,
/// then by name.
pub(super) fn candidates(
    ssn: &Session,
    j: usize,
    nt: NetworkTopology,
    topo: &Topology,
    cap: &Capacity,
    need: &Amounts,
) -> Vec<usize> {
    let running: Vec<usize> = ssn.jobs[j]
        .running
        .tasks()
        .iter()
        .filter_map(|t| ssn.sched.snapshot.pod_node(&t.pod.key))
        .filter_map(|n| ssn.sched.snapshot.node_index(n))
        .collect();
    let mut keyed: Vec<(i32, usize, f64, usize, usize)> = topo
        .domains
        .iter()
        .enumerate()
        .filter(|(_, d)| nt.highest_tier.is_none_or(|h| d.tier <= h))
        .map(|(i, d)| {
            let inside = running.iter().filter(|&&n| cap.contains(i, n)).count();
            (d.tier, inside, cap.utilization(i, need), d.nodes.len(), i)
        })
        .collect();
    keyed.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(b.1.cmp(&a.1))
            .then(b.2.partial_cmp(&a.2).unwrap_or(std::cmp::Ordering::Equal))
            .then(a.3.cmp(&b.3))
            .then_with(|| topo.domains[a.4].name.cmp(&topo.domains[b.4].name))
    });
    keyed.into_iter().map(|k| k.4).collect()
}

fn place_in_domains(
    ssn: &mut Session,
    j: usize,
    q: usize,
    nt: NetworkTopology,
    topo: &Topology,
    cap: &mut Capacity,
) -> bool {
    let need = gang_need(ssn, j);
    let shape = gang_shape(ssn, j);
    let order = candidates(ssn, j, nt, topo, cap, &need);
    let mut why: Vec<String> = Vec::new();
    for di in order {
        let d = &topo.domains[di];
        let short = cap.free(di).shortfall(&need);
        if !short.is_empty() {
            why.push(format!(
                "{} (tier {}): free capacity below the gang's minimum ({})",
                d.name,
                d.tier,
                short.join(", ")
            ));
            continue;
        }
        if let Some(s) = shape
            && let Some(prev) = cap.shown_full(di, s)
        {
            why.push(format!(
                "{} (tier {}): {prev} (not tried again: unchanged since a gang of the same shape failed there)",
                d.name, d.tier
            ));
            continue;
        }
        let pick = pick_gang(ssn, j, q);
        let chosen: Vec<usize> = pick.chosen.clone();
        let mut pods = Vec::new();
        for &i in &chosen {
            let t = ssn.jobs[j].pending[i].pod.clone();
            match restricted(&t, &d.nodes) {
                Some(p) => pods.push(p),
                None => break,
            }
        }
        let report = if pods.len() == chosen.len() {
            Some(ssn.place(pods))
        } else {
            None
        };
        let placed: HashMap<String, String> = report
            .as_ref()
            .map(|r| {
                r.placements
                    .iter()
                    .map(|p| (p.pod.clone(), p.node.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let ready = {
            let job = &ssn.jobs[j];
            let all: Vec<&Task> = job
                .running
                .tasks()
                .iter()
                .chain(
                    job.pending
                        .iter()
                        .filter(|t| placed.contains_key(&t.pod.key)),
                )
                .collect();
            ssn.job_ready(j, &all)
        };
        if ready.is_ok() && report.is_some() {
            let unplaced: Vec<usize> = chosen
                .iter()
                .copied()
                .filter(|&i| !placed.contains_key(&ssn.jobs[j].pending[i].pod.key))
                .collect();
            charge_tasks(ssn, j, &unplaced, false);
            commit(ssn, j, &placed, false);
            ssn.gang_attempt_succeeded(j);
            let mut msg = format!("placed in HyperNode {} (tier {})", d.name, d.tier);
            if !why.is_empty() {
                msg.push_str(&format!("; not in: {}", join_capped(&why)));
            }
            ssn.jobs[j].message = Some(msg);
            return true;
        }
        // Roll back this attempt.
        for k in placed.keys() {
            ssn.sched.snapshot.remove_pod(k);
        }
        charge_tasks(ssn, j, &chosen, false);
        let reason = match (&report, ready) {
            (Some(r), _) if !r.unschedulable.is_empty() => {
                let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
                for u in &r.unschedulable {
                    *counts.entry(u.message.as_str()).or_insert(0) += 1;
                }
                let (m, _) = counts
                    .iter()
                    .max_by_key(|(_, n)| **n)
                    .map(|(m, n)| (*m, *n))
                    .unwrap_or(("", 0));
                format!(
                    "{}/{} tasks unschedulable: {m}",
                    r.unschedulable.len(),
                    chosen.len()
                )
            }
            (_, Err(e)) => e,
            _ => "cannot hold the gang".into(),
        };
        cap.refresh(&topo.domains, &ssn.sched.snapshot);
        if let Some(s) = shape {
            cap.mark_full(di, s, reason.clone());
        }
        why.push(format!("{} (tier {}): {reason}", d.name, d.tier));
    }
    if !nt.hard {
        return false;
    }
    let tier = nt
        .highest_tier
        .map_or_else(|| "any tier".to_string(), |h| format!("tier <= {h}"));
    ssn.jobs[j].message = Some(if why.is_empty() {
        format!("network topology (hard, {tier}): no HyperNode of {tier} contains nodes")
    } else {
        format!(
            "network topology (hard, {tier}): no HyperNode can hold the gang: {}",
            join_capped(&why)
        )
    });
    ssn.gang_attempt_failed(j);
    true
}

/// Places gang `j` of queue `q` as any gang (one pick, its own engine call).
pub(super) fn allocate_plain_gang(ssn: &mut Session, j: usize, q: usize) {
    let pick = pick_gang(ssn, j, q);
    place_gangs(ssn, std::slice::from_ref(&pick));
}
