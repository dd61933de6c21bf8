//! Per-session HyperNode capacity, so a topology gang is only offered HyperNodes
//! that may hold it, best first (Volcano's network-topology-aware allocation):
//!
//! - the free total of each HyperNode (sum over its member nodes of allocatable −
//!   requested, per resource) is kept up to date from the nodes that changed since
//!   the last look (node generation stamps), not recomputed per gang;
//! - a HyperNode whose free total is below the gang's minimum (the smallest
//!   requests of the tasks it still needs, per resource) is skipped, with the
//!   shortfall as the reason;
//! - a HyperNode where a gang of the same shape failed is not tried again while
//!   none of its nodes changed (its generation stamp is the same);
//! - [`Capacity::utilization`] is the binpacking score: a fuller HyperNode is
//!   tried first (Volcano prefers the HyperNode of higher resource utilization).
//!
//! Only cpu, memory, ephemeral-storage and pod slots are summed: extended resources
//! can be shared through annotations (HAMi, Volcano vGPU) or ignored by
//! NodeResourcesFit's arguments, so their totals could reject a HyperNode that
//! can hold the gang. The check is a lower bound: it never skips a HyperNode the
//! engine could fill.

use std::collections::HashMap;

use super::Domain;
use crate::snapshot::{NodeInfo, Snapshot};

/// Amounts of the summed resources (cpu in millicores, memory and
/// ephemeral-storage in bytes, pod slots).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Amounts {
    pub cpu: i64,
    pub memory: i64,
    pub ephemeral: i64,
    pub pods: i64,
}

impl Amounts {
    /// What is still free on a node (never negative).
    pub fn free_of(n: &NodeInfo) -> Amounts {
        Amounts {
            cpu: (n.allocatable.milli_cpu - n.requested.milli_cpu).max(0),
            memory: (n.allocatable.memory - n.requested.memory).max(0),
            ephemeral: (n.allocatable.ephemeral_storage - n.requested.ephemeral_storage).max(0),
            pods: (n.allocatable.pods - n.pods.len() as i64).max(0),
        }
    }

    pub fn alloc_of(n: &NodeInfo) -> Amounts {
        Amounts {
            cpu: n.allocatable.milli_cpu.max(0),
            memory: n.allocatable.memory.max(0),
            ephemeral: n.allocatable.ephemeral_storage.max(0),
            pods: n.allocatable.pods.max(0),
        }
    }

    fn add(&mut self, o: &Amounts) {
        self.cpu += o.cpu;
        self.memory += o.memory;
        self.ephemeral += o.ephemeral;
        self.pods += o.pods;
    }

    fn sub(&mut self, o: &Amounts) {
        self.cpu -= o.cpu;
        self.memory -= o.memory;
        self.ephemeral -= o.ephemeral;
        self.pods -= o.pods;
    }

    /// The dimensions where `self` (free) is below `need`, as `cpu 3 < 5 needed`.
    pub fn shortfall(&self, need: &Amounts) -> Vec<String> {
        let mut out = Vec::new();
        if self.cpu < need.cpu {
            out.push(format!("cpu {} < {}", milli(self.cpu), milli(need.cpu)));
        }
        if self.memory < need.memory {
            out.push(format!(
                "memory {} < {}",
                bytes(self.memory),
                bytes(need.memory)
            ));
        }
        if self.ephemeral < need.ephemeral {
            out.push(format!(
                "ephemeral-storage {} < {}",
                bytes(self.ephemeral),
                bytes(need.ephemeral)
            ));
        }
        if self.pods < need.pods {
            out.push(format!("pods {} < {}", self.pods, need.pods));
        }
        out
    }
}

fn milli(v: i64) -> String {
    if v % 1000 == 0 {
        (v / 1000).to_string()
    } else {
        format!("{v}m")
    }
}

fn bytes(v: i64) -> String {
    const GI: i64 = 1 << 30;
    const MI: i64 = 1 << 20;
    if v != 0 && v % GI == 0 {
        format!("{}Gi", v / GI)
    } else if v != 0 && v % MI == 0 {
        format!("{}Mi", v / MI)
    } else {
        v.to_string()
    }
}

/// The HyperNodes' free totals and the gang shapes shown not to fit, for one
/// session (domains indexed as in [`super::Topology::domains`]).
#[derive(Debug, Default)]
pub struct Capacity {
    nodes_version: u64,
    generation: u64,
    /// By snapshot node index: the domains containing the node.
    node_domains: Vec<Vec<u32>>,
    /// By snapshot node index: the node's free amounts and stamp when last summed.
    node_free: Vec<Amounts>,
    node_gen: Vec<u64>,
    free: Vec<Amounts>,
    alloc: Vec<Amounts>,
    /// Per domain: the newest generation stamp of its nodes (changes whenever one
    /// of them changes; stamps are unique and increasing in a snapshot).
    stamp: Vec<u64>,
    /// (domain, gang shape) → (domain stamp after the failed attempt, reason).
    full: HashMap<(usize, u64), (u64, String)>,
}

impl Capacity {
    /// Sums the domains' nodes in `snap`.
    pub fn new(domains: &[Domain], snap: &Snapshot) -> Capacity {
        let nodes = snap.nodes();
        let mut c = Capacity {
            nodes_version: snap.nodes_version(),
            generation: snap.generation(),
            node_domains: vec![Vec::new(); nodes.len()],
            node_free: nodes.iter().map(|n| Amounts::free_of(n)).collect(),
            node_gen: nodes.iter().map(|n| n.generation).collect(),
            free: vec![Amounts::default(); domains.len()],
            alloc: vec![Amounts::default(); domains.len()],
            stamp: vec![0; domains.len()],
            full: HashMap::new(),
        };
        for (d, dom) in domains.iter().enumerate() {
            for name in &dom.nodes {
                let Some(i) = snap.node_index(name) else {
                    continue;
                };
                c.node_domains[i].push(d as u32);
                c.free[d].add(&c.node_free[i]);
                c.alloc[d].add(&Amounts::alloc_of(&nodes[i]));
                c.stamp[d] = c.stamp[d].max(c.node_gen[i]);
            }
        }
        c
    }

    /// Brings the totals up to date with `snap`: only nodes whose generation stamp
    /// changed are summed again (all of them when the node set changed).
    pub fn refresh(&mut self, domains: &[Domain], snap: &Snapshot) {
        if snap.nodes_version() != self.nodes_version || self.free.len() != domains.len() {
            let full = std::mem::take(&mut self.full);
            *self = Capacity::new(domains, snap);
            // Stamps of unchanged nodes are unchanged: the shapes shown full stay
            // valid exactly while their domain's stamp is the same.
            self.full = full;
            return;
        }
        if snap.generation() == self.generation {
            return;
        }
        self.generation = snap.generation();
        for (i, n) in snap.nodes().iter().enumerate() {
            if self.node_gen[i] == n.generation {
                continue;
            }
            self.node_gen[i] = n.generation;
            let new = Amounts::free_of(n);
            let old = std::mem::replace(&mut self.node_free[i], new);
            for &d in &self.node_domains[i] {
                let d = d as usize;
                self.free[d].sub(&old);
                self.free[d].add(&new);
                self.stamp[d] = self.stamp[d].max(n.generation);
            }
        }
    }

    pub fn free(&self, d: usize) -> Amounts {
        self.free[d]
    }

    /// Whether snapshot node `i` is a member of domain `d`.
    pub fn contains(&self, d: usize, node_index: usize) -> bool {
        self.node_domains
            .get(node_index)
            .is_some_and(|v| v.contains(&(d as u32)))
    }

    /// Binpacking score of domain `d` for a gang needing `need`: the mean used
    /// share of the resources the gang requests (cpu and memory when it requests
    /// neither), in [0, 1]; higher is tried first.
    pub fn utilization(&self, d: usize, need: &Amounts) -> f64 {
        let (f, a) = (&self.free[d], &self.alloc[d]);
        let share = |free: i64, alloc: i64| {
            if alloc <= 0 {
                1.0
            } else {
                1.0 - free as f64 / alloc as f64
            }
        };
        let mut dims = Vec::with_capacity(3);
        if need.cpu > 0 {
            dims.push(share(f.cpu, a.cpu));
        }
        if need.memory > 0 {
            dims.push(share(f.memory, a.memory));
        }
        if need.ephemeral > 0 {
            dims.push(share(f.ephemeral, a.ephemeral));
        }
        if dims.is_empty() {
            dims.push(share(f.cpu, a.cpu));
            dims.push(share(f.memory, a.memory));
        }
        dims.iter().sum::<f64>() / dims.len() as f64
    }

    /// The reason a gang of `shape` failed in domain `d`, when none of the
    /// domain's nodes changed since.
    pub fn shown_full(&self, d: usize, shape: u64) -> Option<&str> {
        self.full
            .get(&(d, shape))
            .filter(|(stamp, _)| *stamp == self.stamp[d])
            .map(|(_, why)| why.as_str())
    }

    /// Records that a gang of `shape` failed in domain `d` (call after the attempt
    /// was rolled back and [`Capacity::refresh`]ed).
    pub fn mark_full(&mut self, d: usize, shape: u64, why: String) {
        self.full.insert((d, shape), (self.stamp[d], why));
    }
}

#[cfg(test)]
impl PartialEq for Capacity {
    fn eq(&self, o: &Capacity) -> bool {
        self.free == o.free && self.alloc == o.alloc && self.node_free == o.node_free
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::node;
    use std::collections::BTreeSet;

    fn dom(name: &str, tier: i32, nodes: &[&str]) -> Domain {
        Domain {
            name: name.into(),
            tier,
            nodes: nodes.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
        }
    }

    fn pod(name: &str, cpu: &str) -> std::sync::Arc<crate::snapshot::PodInfo> {
        crate::testutil::pod(name).cpu(cpu).info().into()
    }

    #[test]
    fn totals_follow_changed_nodes_only() {
        let mut snap = Snapshot::new();
        for n in ["a1", "a2", "b1"] {
            snap.upsert_node(node(n).cpu("4").mem("8Gi").pods("10").info());
        }
        let doms = [
            dom("a", 1, &["a1", "a2"]),
            dom("b", 1, &["b1"]),
            dom("top", 2, &["a1", "a2", "b1"]),
        ];
        let mut c = Capacity::new(&doms, &snap);
        assert_eq!(c.free(0).cpu, 8000);
        assert_eq!(c.free(2).cpu, 12000);
        assert_eq!(c.free(0).pods, 20);
        let stamp_b = c.stamp[1];
        snap.add_pod(pod("p", "3"), "a2");
        c.refresh(&doms, &snap);
        assert_eq!(c.free(0).cpu, 5000);
        assert_eq!(c.free(0).pods, 19);
        assert_eq!(c.free(1).cpu, 4000);
        assert_eq!(c.free(2).cpu, 9000);
        assert_eq!(c.stamp[1], stamp_b, "b's nodes did not change");
        assert!(c.stamp[0] > stamp_b || c.stamp[0] != 0);
        assert_eq!(
            c,
            Capacity::new(&doms, &snap),
            "incremental == from scratch"
        );
        snap.remove_pod("default/p");
        c.refresh(&doms, &snap);
        assert_eq!(c.free(0).cpu, 8000);
        assert!(c.contains(2, snap.node_index("b1").expect("b1")));
        assert!(!c.contains(0, snap.node_index("b1").expect("b1")));
    }

    #[test]
    fn a_shape_shown_full_is_skipped_until_a_node_of_the_domain_changes() {
        let mut snap = Snapshot::new();
        for n in ["a1", "b1"] {
            snap.upsert_node(node(n).cpu("4").info());
        }
        let doms = [dom("a", 1, &["a1"]), dom("b", 1, &["b1"])];
        let mut c = Capacity::new(&doms, &snap);
        c.mark_full(0, 7, "too small".into());
        assert_eq!(c.shown_full(0, 7), Some("too small"));
        assert_eq!(c.shown_full(0, 8), None, "another shape is tried");
        assert_eq!(c.shown_full(1, 7), None, "another domain is tried");
        // A change elsewhere keeps it; a change inside the domain ends it.
        snap.add_pod(pod("x", "1"), "b1");
        c.refresh(&doms, &snap);
        assert_eq!(c.shown_full(0, 7), Some("too small"));
        snap.add_pod(pod("y", "1"), "a1");
        c.refresh(&doms, &snap);
        assert_eq!(c.shown_full(0, 7), None);
    }

    #[test]
    fn shortfall_and_utilization() {
        let free = Amounts {
            cpu: 3000,
            memory: 2 << 30,
            ephemeral: 0,
            pods: 5,
        };
        let need = Amounts {
            cpu: 5000,
            memory: 1 << 30,
            ephemeral: 0,
            pods: 6,
        };
        assert_eq!(free.shortfall(&need), ["cpu 3 < 5", "pods 5 < 6"]);
        assert!(free.shortfall(&free).is_empty());
        let mut snap = Snapshot::new();
        for n in ["a1", "b1"] {
            snap.upsert_node(node(n).cpu("4").mem("4Gi").info());
        }
        snap.add_pod(pod("x", "3"), "a1");
        let doms = [dom("a", 1, &["a1"]), dom("b", 1, &["b1"])];
        let c = Capacity::new(&doms, &snap);
        let cpu_only = Amounts {
            cpu: 1000,
            ..Amounts::default()
        };
        assert!((c.utilization(0, &cpu_only) - 0.75).abs() < 1e-9);
        assert!(c.utilization(1, &cpu_only).abs() < 1e-9);
        assert!(c.utilization(0, &cpu_only) > c.utilization(1, &cpu_only));
    }
}
