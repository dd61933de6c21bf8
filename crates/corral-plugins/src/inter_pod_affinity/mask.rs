//! Bulk Filter ([`FilterPlugin::filter_mask`]): the verdict for every node at once.
//!
//! InterPodAffinity's Filter verdict on a node is a function of the node's domain for
//! each topology key the PreFilter state counts by: required affinity passes where
//! every term's domain holds a matching pod (or nowhere holds one and the pod matches
//! its own terms, on nodes carrying every term's key), required anti-affinity and
//! existing pods' anti-affinity reject the nodes of every domain with a count. So the
//! mask is built from the domains' node sets with word ORs, costing O(words + nodes of
//! the sparse counted domains) per pod instead of a label/hash probe per node.
//!
//! The node set of each domain ([`DomainNodes`]) is built once per key and snapshot
//! node set (`nodes_version`) and kept in a small process-wide cache validated by the
//! identity of the snapshot's [`KeyDomains`] (held by the entry, so it cannot be a
//! stale pointer). A domain with at least `words = ⌈nodes / 64⌉` nodes has a dense
//! bitset (OR'd word by word), a smaller one a list of node positions. So there are
//! at most 64 dense sets per key: memory per cached key is at most 64 + `nodes` words
//! of bitsets plus 4 bytes per node (positions) and 8 per domain, i.e. about 12 bytes
//! per node, and at most [`MAX_CACHED_KEYS`] keys are cached.

use std::sync::{Arc, LazyLock, Mutex};

use corral_core::domains::{DOMAIN_MISSING, KeyDomains};

use super::KeyCounts;
use super::filtering::PreFilterState;
use crate::snapshot::{PodInfo, Snapshot};

/// At most this many keys' [`DomainNodes`] are cached (emptied when full: rebuilt on
/// demand, never wrong).
const MAX_CACHED_KEYS: usize = 32;

/// Nodes of each domain of one key, by position.
#[derive(Debug)]
pub(super) struct DomainNodes {
    /// CSR: the positions of domain `d` are `nodes[start[d]..start[d + 1]]`.
    start: Vec<u32>,
    nodes: Vec<u32>,
    /// Per domain: index into `dense` of its bitset, or `u32::MAX` (sparse domain).
    dense_of: Vec<u32>,
    dense: Vec<Vec<u64>>,
    /// Nodes lacking the key, as a bitset.
    missing: Vec<u64>,
}

impl DomainNodes {
    fn build(d: &KeyDomains) -> DomainNodes {
        let n = d.ids().len();
        let words = n.div_ceil(64);
        let mut count = vec![0u32; d.len()];
        let mut missing = vec![0u64; words];
        for (i, &id) in d.ids().iter().enumerate() {
            if id == DOMAIN_MISSING {
                missing[i / 64] |= 1 << (i % 64);
            } else {
                count[id as usize] += 1;
            }
        }
        let mut start = Vec::with_capacity(d.len() + 1);
        let mut acc = 0u32;
        start.push(0);
        for c in &count {
            acc += c;
            start.push(acc);
        }
        let mut fill: Vec<u32> = start[..d.len()].to_vec();
        let mut nodes = vec![0u32; acc as usize];
        for (i, &id) in d.ids().iter().enumerate() {
            if id != DOMAIN_MISSING {
                let f = &mut fill[id as usize];
                nodes[*f as usize] = i as u32;
                *f += 1;
            }
        }
        let mut dense_of = vec![u32::MAX; d.len()];
        let mut dense = Vec::new();
        for (id, &c) in count.iter().enumerate() {
            if c as usize >= words.max(1) {
                let mut m = vec![0u64; words];
                for &i in &nodes[start[id] as usize..start[id + 1] as usize] {
                    m[i as usize / 64] |= 1 << (i % 64);
                }
                dense_of[id] = dense.len() as u32;
                dense.push(m);
            }
        }
        DomainNodes {
            start,
            nodes,
            dense_of,
            dense,
            missing,
        }
    }

    /// ORs domain `id`'s nodes into `out`.
    #[inline]
    fn or_into(&self, id: u32, out: &mut [u64]) {
        let id = id as usize;
        if id >= self.dense_of.len() {
            return;
        }
        match self.dense_of[id] {
            u32::MAX => {
                for &i in &self.nodes[self.start[id] as usize..self.start[id + 1] as usize] {
                    out[i as usize / 64] |= 1 << (i % 64);
                }
            }
            k => {
                for (o, m) in out.iter_mut().zip(&self.dense[k as usize]) {
                    *o |= m;
                }
            }
        }
    }

    /// Number of dense bitsets (for the memory bound's test).
    #[cfg(test)]
    pub(super) fn dense_sets(&self) -> usize {
        self.dense.len()
    }
}

type Cache = Vec<(Arc<KeyDomains>, Arc<DomainNodes>)>;
static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(Default::default);

/// The [`DomainNodes`] of `d` (one of the snapshot's current [`KeyDomains`]).
pub(super) fn domain_nodes(d: &Arc<KeyDomains>) -> Arc<DomainNodes> {
    {
        let g = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, n)) = g.iter().find(|(k, _)| Arc::ptr_eq(k, d)) {
            return n.clone();
        }
    }
    let built = Arc::new(DomainNodes::build(d));
    let mut g = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, n)) = g.iter().find(|(k, _)| Arc::ptr_eq(k, d)) {
        return n.clone();
    }
    // Entries of older node sets are dead weight: drop them first.
    g.retain(|(k, _)| k.nodes_version() == d.nodes_version());
    if g.len() >= MAX_CACHED_KEYS {
        g.clear();
    }
    g.push((d.clone(), built.clone()));
    built
}

/// ORs into `out` the nodes of every domain of `kc` whose count is positive. False
/// when `kc` describes another node set than `snap`'s (the caller falls back).
fn or_counted(kc: &KeyCounts, snap: &Snapshot, out: &mut [u64]) -> bool {
    if kc.domains.nodes_version() != snap.nodes_version() {
        return false;
    }
    if kc.by_id.values().all(|&c| c <= 0) {
        return true;
    }
    let dn = domain_nodes(&kc.domains);
    for (&id, &c) in &kc.by_id {
        if c > 0 {
            dn.or_into(id as u32, out);
        }
    }
    // `other` holds values no node of this node set carries: no node is in them.
    true
}

/// [`FilterPlugin::filter_mask`] for a PreFilter state: see the module documentation.
///
/// [`FilterPlugin::filter_mask`]: crate::framework::FilterPlugin::filter_mask
pub(super) fn filter_mask(
    s: &PreFilterState,
    pod: &PodInfo,
    snap: &Snapshot,
    out: &mut [u64],
) -> bool {
    let n = snap.num_nodes();
    let words = n.div_ceil(64);
    if out.len() != words {
        return false;
    }
    // Start from every node; clear what a rule rejects.
    out.fill(!0);
    if !n.is_multiple_of(64) {
        out[words - 1] = (1u64 << (n % 64)) - 1;
    }
    let mut scratch = vec![0u64; words];
    // Required affinity (`satisfyPodAffinity`).
    if !pod.required_affinity_terms.is_empty() {
        let first_pod = s.affinity.is_empty() && s.self_match;
        for (k, t) in pod.required_affinity_terms.iter().enumerate() {
            // A term repeating an earlier term's key has the same verdict.
            if pod.required_affinity_terms[..k]
                .iter()
                .any(|e| e.topology_key == t.topology_key)
            {
                continue;
            }
            let d = snap.topology_domains(&t.topology_key);
            if d.nodes_version() != snap.nodes_version() {
                return false;
            }
            if first_pod {
                // Every node carrying all the keys passes.
                let dn = domain_nodes(&d);
                for (o, m) in out.iter_mut().zip(&dn.missing) {
                    *o &= !m;
                }
                continue;
            }
            // Only nodes whose domain has a matching pod (lacking the key: rejected).
            scratch.fill(0);
            if let Some(i) = s.affinity.key_id(&t.topology_key)
                && !or_counted(&s.affinity.keys[i], snap, &mut scratch)
            {
                return false;
            }
            for (o, m) in out.iter_mut().zip(&scratch) {
                *o &= m;
            }
        }
    }
    // Required anti-affinity (`satisfyPodAntiAffinity`) and existing pods'
    // anti-affinity (`satisfyExistingPodsAntiAffinity`): reject counted domains.
    scratch.fill(0);
    if !s.anti.is_empty() {
        for (k, t) in pod.required_anti_affinity_terms.iter().enumerate() {
            if pod.required_anti_affinity_terms[..k]
                .iter()
                .any(|e| e.topology_key == t.topology_key)
            {
                continue;
            }
            if let Some(i) = s.anti.key_id(&t.topology_key)
                && !or_counted(&s.anti.keys[i], snap, &mut scratch)
            {
                return false;
            }
        }
    }
    for kc in &s.existing_anti.keys {
        if !or_counted(kc, snap, &mut scratch) {
            return false;
        }
    }
    for (o, m) in out.iter_mut().zip(&scratch) {
        *o &= !m;
    }
    true
}
