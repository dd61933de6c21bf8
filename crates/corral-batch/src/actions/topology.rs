//! Network-topology-aware gangs (Volcano HyperNodes): a gang whose PodGroup sets
//! `networkTopology` is placed inside the lowest-tier HyperNode that can hold it —
//! its pods are offered to the engine restricted to that HyperNode's nodes
//! (required node affinity on `metadata.name`, added to each of the pod's own
//! terms), HyperNode after HyperNode, all-or-nothing each time. `hard`: never
//! beyond `highestTierAllowed` (no HyperNode → the gang waits, saying why each
//! failed); `soft`: when no HyperNode holds it, it is placed as any gang.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
};

use super::allocate::{charge_tasks, commit, pick_gang, place_gangs};
use super::*;
use crate::hypernodes::NetworkTopology;

/// The pod restricted to `nodes`: each of its node affinity terms also requires
/// `kubernetes.io/hostname In nodes` when every node's hostname label is its name
/// (one requirement), else one term per node with `metadata.name` (the API allows
/// one value per matchFields requirement).
fn restricted(p: &PodInfo, nodes: &BTreeSet<String>, by_hostname: bool) -> Option<PodInfo> {
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
    let mut terms = Vec::new();
    for t in &sel.node_selector_terms {
        if by_hostname {
            let mut t = t.clone();
            t.match_expressions
                .get_or_insert_with(Vec::new)
                .push(NodeSelectorRequirement {
                    key: LABEL_HOSTNAME.into(),
                    operator: "In".into(),
                    values: Some(nodes.iter().cloned().collect()),
                });
            terms.push(t);
        } else {
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
    }
    sel.node_selector_terms = terms;
    let mut info = PodInfo::new(pod, p.seq).ok()?;
    info.priority = p.priority;
    Some(info)
}

const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";

/// Allocates gang `j` of queue `q` under its network topology. Returns false when
/// the gang is to be placed as any gang (soft, no HyperNode could hold it).
pub(super) fn allocate_in_topology(
    ssn: &mut Session,
    j: usize,
    q: usize,
    nt: NetworkTopology,
) -> bool {
    let topo = ssn.topology.clone();
    let allowed: Vec<&crate::hypernodes::Domain> = topo
        .domains
        .iter()
        .filter(|d| nt.highest_tier.is_none_or(|h| d.tier <= h))
        .collect();
    let mut why: Vec<String> = Vec::new();
    for d in allowed {
        let by_hostname = d.nodes.iter().all(|n| {
            ssn.sched
                .snapshot
                .node(n)
                .is_some_and(|info| info.labels.get(LABEL_HOSTNAME) == Some(n))
        });
        let pick = pick_gang(ssn, j, q);
        let chosen: Vec<usize> = pick.chosen.clone();
        let mut pods = Vec::new();
        for &i in &chosen {
            let t = ssn.jobs[j].pending[i].pod.clone();
            match restricted(&t, &d.nodes, by_hostname) {
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
                msg.push_str(&format!("; not in: {}", why.join("; ")));
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
            why.join("; ")
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
