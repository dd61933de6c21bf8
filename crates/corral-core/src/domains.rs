//! Snapshot-level topology-domain index: for a topology key (`topology.kubernetes.io/zone`,
//! `kubernetes.io/hostname`, any node label), each snapshot node's domain as a small
//! integer id, by the node's position in [`Snapshot::nodes`], and the domain values.
//!
//! Built lazily on the first request for a key ([`Snapshot::topology_domains`]) and
//! kept until the node set, order or labels change (the snapshot's `nodes_version`),
//! so PodTopologySpread's PreFilter registers the domains in O(domains) instead of
//! looking a label up on every node, and its Filter/Score read a node's domain by
//! position (an array read) instead of a label-map lookup and a hash of the value.
//!
//! Pod additions and removals do not change node labels or positions, so a commit
//! never invalidates the index.
//!
//! [`Snapshot::nodes`]: crate::snapshot::Snapshot::nodes
//! [`Snapshot::topology_domains`]: crate::snapshot::Snapshot::topology_domains

use std::sync::{Arc, Mutex, OnceLock};

use crate::fxhash::FxHashMap;
use crate::snapshot::NodeInfo;

/// [`KeyDomains::id_at`] of a node lacking the key.
pub const DOMAIN_MISSING: u32 = u32::MAX;

/// The domains of one topology key over the snapshot's nodes.
#[derive(Debug)]
pub struct KeyDomains {
    nodes_version: u64,
    /// Per node position: domain id, or [`DOMAIN_MISSING`].
    ids: Vec<u32>,
    /// Domain id → value, in order of first appearance in the node list.
    values: Vec<String>,
    /// Value → domain id.
    by_value: FxHashMap<String, u32>,
    /// Number of nodes lacking the key.
    missing: usize,
    /// Per domain id, then the nodes carrying the key: a node bitmask (bit `i % 64`
    /// of word `i / 64`), `words` words each; built on the first
    /// [`KeyDomains::and_passing`] for keys with at most [`MASKED_DOMAINS`] domains.
    masks: OnceLock<Box<[u64]>>,
}

/// Keys with at most this many domains (zones, racks, pools) keep a node bitmask
/// per domain, so a verdict per domain becomes a verdict per node by word ORs;
/// keys with more (hostname) are walked node by node (an id read and a compare).
pub const MASKED_DOMAINS: usize = 64;

impl KeyDomains {
    /// Indexes `key` over `nodes` (the snapshot's node list at `nodes_version`).
    pub fn build(nodes: &[Arc<NodeInfo>], key: &str, nodes_version: u64) -> KeyDomains {
        let mut ids = Vec::with_capacity(nodes.len());
        let mut values: Vec<String> = Vec::new();
        let mut by_value: FxHashMap<String, u32> = FxHashMap::default();
        let mut missing = 0;
        for n in nodes {
            let id = match n.labels.get(key) {
                None => {
                    missing += 1;
                    DOMAIN_MISSING
                }
                Some(v) => match by_value.get(v.as_str()) {
                    Some(&id) => id,
                    None => {
                        // Fewer than u32::MAX nodes: ids stay below DOMAIN_MISSING.
                        let id = values.len() as u32;
                        values.push(v.clone());
                        by_value.insert(v.clone(), id);
                        id
                    }
                },
            };
            ids.push(id);
        }
        KeyDomains {
            nodes_version,
            ids,
            values,
            by_value,
            missing,
            masks: OnceLock::new(),
        }
    }

    /// The per-domain node bitmasks (see `masks`), when the key has few domains.
    fn domain_masks(&self) -> Option<&[u64]> {
        if self.values.len() > MASKED_DOMAINS {
            return None;
        }
        let m = self.masks.get_or_init(|| {
            let words = self.ids.len().div_ceil(64);
            let mut m = vec![0u64; words * (self.values.len() + 1)];
            let keyed = self.values.len() * words;
            for (i, &id) in self.ids.iter().enumerate() {
                if id != DOMAIN_MISSING {
                    let bit = 1u64 << (i % 64);
                    m[id as usize * words + i / 64] |= bit;
                    m[keyed + i / 64] |= bit;
                }
            }
            m.into_boxed_slice()
        });
        Some(m)
    }

    /// Combines into `out` (a node bitmask by position: bit `i % 64` of word
    /// `i / 64`, `ids().len().div_ceil(64)` words) the nodes carrying the key whose
    /// domain passes `ok`: written over `out` when `write`, else ANDed into it. Nodes
    /// lacking the key are cleared. Few domains: word operations over the passing or
    /// the failing domains' masks, whichever are fewer; many: one id read per node.
    pub fn and_passing(&self, ok: impl Fn(u32) -> bool, write: bool, out: &mut [u64]) {
        let words = self.ids.len().div_ceil(64);
        assert_eq!(out.len(), words, "node bitmask of {} nodes", self.ids.len());
        if let Some(m) = self.domain_masks() {
            let d = self.values.len();
            let keyed = &m[d * words..];
            let mut pass = [false; MASKED_DOMAINS];
            let mut passing = 0;
            for (id, p) in pass.iter_mut().enumerate().take(d) {
                *p = ok(id as u32);
                passing += usize::from(*p);
            }
            let domain = |id: usize| &m[id * words..(id + 1) * words];
            if write && passing * 2 <= d {
                // The passing domains' union.
                out.fill(0);
                for id in (0..d).filter(|&id| pass[id]) {
                    for (o, w) in out.iter_mut().zip(domain(id)) {
                        *o |= w;
                    }
                }
                return;
            }
            // The keyed nodes minus the failing domains.
            if write {
                out.copy_from_slice(keyed);
            } else {
                for (o, w) in out.iter_mut().zip(keyed) {
                    *o &= w;
                }
            }
            for id in (0..d).filter(|&id| !pass[id]) {
                for (o, w) in out.iter_mut().zip(domain(id)) {
                    *o &= !w;
                }
            }
            return;
        }
        for (o, chunk) in out.iter_mut().zip(self.ids.chunks(64)) {
            let mut bits = 0u64;
            for (b, &id) in chunk.iter().enumerate() {
                if id != DOMAIN_MISSING && ok(id) {
                    bits |= 1u64 << b;
                }
            }
            if write {
                *o = bits;
            } else {
                *o &= bits;
            }
        }
    }

    /// The snapshot `nodes_version` this index describes.
    #[inline]
    pub fn nodes_version(&self) -> u64 {
        self.nodes_version
    }

    /// Domain id of the node at snapshot position `pos` ([`DOMAIN_MISSING`] when the
    /// node lacks the key or `pos` is out of range).
    #[inline]
    pub fn id_at(&self, pos: usize) -> u32 {
        self.ids.get(pos).copied().unwrap_or(DOMAIN_MISSING)
    }

    /// Per node position, the domain id.
    #[inline]
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Domain id of a value, if some node carries it.
    #[inline]
    pub fn id_of(&self, value: &str) -> Option<u32> {
        self.by_value.get(value).copied()
    }

    /// Value of domain `id`.
    #[inline]
    pub fn value(&self, id: u32) -> &str {
        &self.values[id as usize]
    }

    /// Domain values by id.
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Number of distinct domains.
    #[inline]
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Number of nodes lacking the key.
    #[inline]
    pub fn missing(&self) -> usize {
        self.missing
    }
}

/// Cache of [`KeyDomains`] per key for one `nodes_version` (see the module
/// documentation). Shared by the snapshot's readers (behind a lock taken once per
/// request, i.e. per PreFilter/PreScore, never per node).
#[derive(Default)]
pub struct DomainIndex {
    cache: Mutex<(u64, FxHashMap<String, Arc<KeyDomains>>)>,
    /// [`DomainIndex::node_mask`]: per caller key, a node predicate by position.
    masks: Mutex<(u64, NodeMasks)>,
}

/// Node masks by caller key.
type NodeMasks = FxHashMap<String, Arc<[bool]>>;

/// At most this many node masks are kept per `nodes_version` (the cache is emptied
/// when full: masks are rebuilt on demand, never wrong).
pub const MAX_NODE_MASKS: usize = 256;

impl DomainIndex {
    /// The index of `key` for `nodes` at `nodes_version`, built on first use.
    pub fn get(&self, nodes: &[Arc<NodeInfo>], nodes_version: u64, key: &str) -> Arc<KeyDomains> {
        let mut g = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if g.0 != nodes_version {
            g.1.clear();
            g.0 = nodes_version;
        }
        if let Some(d) = g.1.get(key) {
            return d.clone();
        }
        let d = Arc::new(KeyDomains::build(nodes, key, nodes_version));
        g.1.insert(key.to_string(), d.clone());
        d
    }

    /// A predicate over the nodes by position (`build(nodes)`, one bool per node),
    /// cached under `key` until `nodes_version` changes. The caller's key must name
    /// everything the predicate reads besides the nodes themselves (a node's labels,
    /// taints and name only change with `nodes_version`). Built outside the lock,
    /// so concurrent callers may both build; the first stored is kept.
    pub fn node_mask(
        &self,
        nodes: &[Arc<NodeInfo>],
        nodes_version: u64,
        key: &str,
        build: impl FnOnce(&[Arc<NodeInfo>]) -> Vec<bool>,
    ) -> Arc<[bool]> {
        let m = self.cached_mask(nodes_version, key, || build(nodes));
        debug_assert_eq!(m.len(), nodes.len());
        m
    }

    /// Like [`DomainIndex::node_mask`], for any flag vector derived from the nodes
    /// (e.g. one flag per domain id of a key): `build()` is called on a miss and the
    /// result kept under `key` until `nodes_version` changes. The caller's key must
    /// name everything `build` reads besides the nodes, and must not collide with a
    /// node mask's key (prefix it with what it is).
    pub fn cached_mask(
        &self,
        nodes_version: u64,
        key: &str,
        build: impl FnOnce() -> Vec<bool>,
    ) -> Arc<[bool]> {
        {
            let mut g = self.masks.lock().unwrap_or_else(|e| e.into_inner());
            if g.0 != nodes_version {
                g.1.clear();
                g.0 = nodes_version;
            }
            if let Some(m) = g.1.get(key) {
                return m.clone();
            }
        }
        let m: Arc<[bool]> = build().into();
        let mut g = self.masks.lock().unwrap_or_else(|e| e.into_inner());
        if g.0 != nodes_version {
            return m;
        }
        if g.1.len() >= MAX_NODE_MASKS {
            g.1.clear();
        }
        g.1.entry(key.to_string()).or_insert(m).clone()
    }

    /// Number of node masks cached for `nodes_version`.
    pub fn cached_masks(&self, nodes_version: u64) -> usize {
        let g = self.masks.lock().unwrap_or_else(|e| e.into_inner());
        if g.0 == nodes_version { g.1.len() } else { 0 }
    }

    /// Number of keys indexed for `nodes_version` (0 when the cache describes an
    /// older node set).
    pub fn cached_keys(&self, nodes_version: u64) -> usize {
        let g = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if g.0 == nodes_version { g.1.len() } else { 0 }
    }
}

impl Clone for DomainIndex {
    fn clone(&self) -> Self {
        let g = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let m = self.masks.lock().unwrap_or_else(|e| e.into_inner());
        DomainIndex {
            cache: Mutex::new((g.0, g.1.clone())),
            masks: Mutex::new((m.0, m.1.clone())),
        }
    }
}

impl std::fmt::Debug for DomainIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("DomainIndex")
            .field("nodes_version", &g.0)
            .field("keys", &g.1.keys().collect::<Vec<_>>())
            .field("node_masks", &self.cached_masks(g.0))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use crate::snapshot::{LABEL_ZONE, Snapshot};
    use crate::testutil::{node, pod};
    use std::sync::Arc;

    use super::DOMAIN_MISSING;

    fn snap() -> Snapshot {
        let mut s = Snapshot::new();
        s.upsert_nodes([
            node("a1").zone("a").info(),
            node("a2").zone("a").info(),
            node("b1").zone("b").info(),
            node("x").info(),
        ]);
        s
    }

    /// Every node's id names its own label value (or MISSING), by position.
    fn check(s: &Snapshot, key: &str) {
        let d = s.topology_domains(key);
        assert_eq!(d.nodes_version(), s.nodes_version());
        assert_eq!(d.ids().len(), s.num_nodes());
        let mut missing = 0;
        for (i, n) in s.nodes().iter().enumerate() {
            assert_eq!(s.position(n), Some(i), "node {}", n.name);
            match n.labels.get(key) {
                None => {
                    missing += 1;
                    assert_eq!(d.id_at(i), DOMAIN_MISSING);
                }
                Some(v) => {
                    assert_eq!(d.value(d.id_at(i)), v);
                    assert_eq!(d.id_of(v), Some(d.id_at(i)));
                }
            }
        }
        assert_eq!(d.missing(), missing);
    }

    #[test]
    fn built_lazily_and_kept_across_pod_changes() {
        let mut s = snap();
        assert_eq!(s.domain_index().cached_keys(s.nodes_version()), 0);
        let d = s.topology_domains(LABEL_ZONE);
        assert_eq!(s.domain_index().cached_keys(s.nodes_version()), 1);
        assert_eq!(d.len(), 2);
        assert_eq!(d.missing(), 1);
        check(&s, LABEL_ZONE);
        // Same Arc on the second request; pod changes keep it.
        assert!(Arc::ptr_eq(&d, &s.topology_domains(LABEL_ZONE)));
        s.add_pod(Arc::new(pod("p").info()), "a1");
        s.remove_pod("default/p");
        assert!(Arc::ptr_eq(&d, &s.topology_domains(LABEL_ZONE)));
        check(&s, LABEL_ZONE);
        // A clone shares the built index.
        let c = s.clone();
        assert!(Arc::ptr_eq(&d, &c.topology_domains(LABEL_ZONE)));
        // Unknown key: every node missing.
        let none = s.topology_domains("nope");
        assert_eq!((none.len(), none.missing()), (0, 4));
        assert_eq!(none.id_at(99), DOMAIN_MISSING);
    }

    #[test]
    fn node_masks_cached_per_key_until_nodes_change() {
        let mut s = snap();
        let zone_a = |nodes: &[Arc<crate::snapshot::NodeInfo>]| -> Vec<bool> {
            nodes
                .iter()
                .map(|n| n.labels.get(LABEL_ZONE).is_some_and(|z| z == "a"))
                .collect()
        };
        let idx = s.domain_index();
        let m = idx.node_mask(s.nodes(), s.nodes_version(), "zone=a", zone_a);
        let want: Vec<bool> = s.nodes().iter().map(|n| n.name.starts_with('a')).collect();
        assert_eq!(&*m, &want[..]);
        // Cached: the builder is not called again for the same key.
        let again = idx.node_mask(s.nodes(), s.nodes_version(), "zone=a", |_| {
            panic!("rebuilt")
        });
        assert!(Arc::ptr_eq(&m, &again));
        assert_eq!(idx.cached_masks(s.nodes_version()), 1);
        // Pod changes keep it; a node change drops it.
        s.add_pod(Arc::new(pod("p").info()), "a1");
        assert_eq!(s.domain_index().cached_masks(s.nodes_version()), 1);
        s.upsert_node(node("b1").zone("a").info());
        assert_eq!(s.domain_index().cached_masks(s.nodes_version()), 0);
        let m2 = s
            .domain_index()
            .node_mask(s.nodes(), s.nodes_version(), "zone=a", zone_a);
        let want: Vec<bool> = s
            .nodes()
            .iter()
            .map(|n| n.labels.get(LABEL_ZONE).is_some_and(|z| z == "a"))
            .collect();
        assert_eq!(&*m2, &want[..]);
        assert_eq!(want.iter().filter(|b| **b).count(), 3);
        // Full: emptied, still correct.
        let idx = s.domain_index();
        for i in 0..super::MAX_NODE_MASKS + 3 {
            let m = idx.node_mask(s.nodes(), s.nodes_version(), &format!("k{i}"), |n| {
                vec![i % 2 == 0; n.len()]
            });
            assert_eq!(m[0], i % 2 == 0);
        }
        assert!(idx.cached_masks(s.nodes_version()) <= super::MAX_NODE_MASKS);
    }

    /// `and_passing` equals the per-node predicate (key present and domain passing),
    /// written or ANDed, for few domains (bitmasks) and many (the node walk), over
    /// every subset of passing domains of the small key and random ones of the big.
    #[test]
    fn passing_masks_equal_the_per_node_verdicts() {
        let mut s = Snapshot::new();
        // 150 nodes: 3 words, the last partial; every 7th lacks the zone.
        s.upsert_nodes((0..150).map(|i| {
            let b = node(&format!("n{i:03}"));
            if i % 7 == 3 {
                b.info()
            } else {
                b.zone(["a", "b", "c", "d"][i % 4]).info()
            }
        }));
        let n = s.num_nodes();
        let words = n.div_ceil(64);
        let check = |key: &str, ok: &dyn Fn(u32) -> bool, prior: &[u64]| {
            let d = s.topology_domains(key);
            let want = |i: usize| d.id_at(i) != DOMAIN_MISSING && ok(d.id_at(i));
            let mut w = vec![u64::MAX; words];
            d.and_passing(ok, true, &mut w);
            let mut a = prior.to_vec();
            d.and_passing(ok, false, &mut a);
            for i in 0..words * 64 {
                let bit = |m: &[u64]| m[i / 64] >> (i % 64) & 1 == 1;
                let exp = i < n && want(i);
                assert_eq!(bit(&w), exp, "{key}: node {i} written");
                assert_eq!(bit(&a), exp && bit(prior), "{key}: node {i} ANDed");
            }
        };
        let prior: Vec<u64> = (0..words as u64)
            .map(|w| 0x5555_aaaa_f0f0_0f0f ^ w)
            .collect();
        let zones = s.topology_domains(LABEL_ZONE);
        assert_eq!((zones.len(), zones.missing()), (4, 21));
        for set in 0u32..16 {
            check(LABEL_ZONE, &|id| set >> id & 1 == 1, &prior);
        }
        // Hostname: 150 domains, more than MASKED_DOMAINS: the node walk.
        let host = "kubernetes.io/hostname";
        assert!(s.topology_domains(host).len() > super::MASKED_DOMAINS);
        for m in [0u32, 1, 3, 7] {
            check(host, &|id| id % 5 <= m, &prior);
        }
    }

    #[test]
    fn invalidated_when_nodes_are_added_relabelled_or_removed() {
        let mut s = snap();
        let d = s.topology_domains(LABEL_ZONE);
        s.upsert_node(node("c1").zone("c").info());
        let d2 = s.topology_domains(LABEL_ZONE);
        assert!(!Arc::ptr_eq(&d, &d2));
        assert_eq!(d2.len(), 3);
        check(&s, LABEL_ZONE);
        // Relabel b1 into zone a: zone b disappears.
        s.upsert_node(node("b1").zone("a").info());
        let d3 = s.topology_domains(LABEL_ZONE);
        assert!(!Arc::ptr_eq(&d2, &d3));
        assert_eq!(d3.id_of("b"), None);
        check(&s, LABEL_ZONE);
        // A label added to the unlabelled node.
        s.upsert_node(node("x").zone("b").info());
        assert_eq!(s.topology_domains(LABEL_ZONE).missing(), 0);
        check(&s, LABEL_ZONE);
        assert!(s.remove_node("a1"));
        check(&s, LABEL_ZONE);
        s.add_nodes([node("d1").zone("d").info(), node("d2").zone("d").info()]);
        check(&s, LABEL_ZONE);
        check(&s, "kubernetes.io/hostname");
        // A copy of a node is not the snapshot's: no position.
        let copy = crate::snapshot::NodeInfo::clone(&s.nodes()[0]);
        assert_eq!(s.position(&copy), None);
    }
}
