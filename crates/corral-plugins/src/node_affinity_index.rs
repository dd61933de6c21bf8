//! A pod's required node affinity evaluated through the snapshot's topology-domain
//! index ([`Snapshot::topology_domains`]): compiled once per PreFilter into, per
//! requirement, the verdict for each distinct value of its label key (and for nodes
//! without the key), so Filter reads a node's value id by position and one table
//! entry per requirement instead of looking labels up in the node's label map and
//! comparing strings.
//!
//! Exact: a requirement's verdict depends only on the node's value of its key (or its
//! absence), which is what the index records; `matchFields` (node name) is evaluated
//! directly. Used only while the snapshot's `nodes_version` (node set, order and
//! labels) is the one it was built for, and only for nodes of that snapshot
//! ([`Snapshot::position`]); otherwise [`RequiredNodeAffinity::matches`] decides.
//!
//! Verdicts are kept per node position, a bit per node, computed on first use
//! ([`IndexedRequired::matches_at`]): a later Filter call on the node (another pod of
//! the class, or the node's cells recomputed after a commit) reads one bit, and
//! positions no pod visits cost nothing but their share of two zeroed words.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::domains::{DOMAIN_MISSING, KeyDomains};
use crate::labels::{NodeTerm, Requirement, Selector};
use crate::snapshot::Snapshot;

/// Keys with more distinct values than this (e.g. the hostname) are not indexed:
/// building a verdict per value would cost more than it saves.
const MAX_VALUES: usize = 512;

/// One requirement: its verdict per value id of its key.
#[derive(Debug)]
struct IndexedReq {
    domains: Arc<KeyDomains>,
    accept: Vec<bool>,
    missing: bool,
}

impl IndexedReq {
    fn new(r: &Requirement, snap: &Snapshot) -> Option<Self> {
        let domains = snap.topology_domains(&r.key);
        if domains.len() > MAX_VALUES {
            return None;
        }
        let accept = domains
            .values()
            .iter()
            .map(|v| r.matches_value(Some(v)))
            .collect();
        Some(IndexedReq {
            missing: r.matches_value(None),
            accept,
            domains,
        })
    }

    #[inline]
    fn matches(&self, pos: usize) -> bool {
        match self.domains.id_at(pos) {
            DOMAIN_MISSING => self.missing,
            id => self.accept.get(id as usize).copied().unwrap_or(false),
        }
    }
}

#[derive(Debug)]
struct IndexedTerm {
    exprs: Vec<IndexedReq>,
    fields: Vec<Requirement>,
}

/// [`super::node_affinity::RequiredNodeAffinity`] compiled against one snapshot.
#[derive(Debug)]
pub struct IndexedRequired {
    nodes_version: u64,
    /// From `spec.nodeSelector` (ANDed); `None`: no selector.
    selector: Option<Vec<IndexedReq>>,
    /// Required terms (ORed); `None`: no required node affinity.
    terms: Option<Vec<IndexedTerm>>,
    /// Per 64 node positions: the positions whose verdict is filled in `verdicts`.
    known: Box<[AtomicU64]>,
    /// Per 64 node positions: bit set when the node at that position matches.
    verdicts: Box<[AtomicU64]>,
}

fn all_reqs(reqs: &[Requirement], snap: &Snapshot) -> Option<Vec<IndexedReq>> {
    reqs.iter().map(|r| IndexedReq::new(r, snap)).collect()
}

impl IndexedRequired {
    /// Compiles `selector` and `terms` against `snap`; `None` when a key has too many
    /// values or the selector is the nil selector (matches nothing).
    pub fn build(
        selector: Option<&Selector>,
        terms: Option<&[NodeTerm]>,
        snap: &Snapshot,
    ) -> Option<Self> {
        if snap.num_nodes() == 0 {
            return None;
        }
        let selector = match selector {
            Some(s) if s.is_nothing() => return None,
            Some(s) => Some(all_reqs(s.requirements(), snap)?),
            None => None,
        };
        let terms = match terms {
            Some(ts) => Some(
                ts.iter()
                    .map(|t| {
                        Some(IndexedTerm {
                            exprs: all_reqs(t.expressions(), snap)?,
                            fields: t.fields().to_vec(),
                        })
                    })
                    .collect::<Option<Vec<_>>>()?,
            ),
            None => None,
        };
        let words = snap.num_nodes().div_ceil(64);
        Some(IndexedRequired {
            nodes_version: snap.nodes_version(),
            selector,
            terms,
            known: (0..words).map(|_| AtomicU64::new(0)).collect(),
            verdicts: (0..words).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// [`Self::matches`] for the node at position `pos` of `snap`, for which
    /// [`Self::valid_for`] holds: one bit read once the position's verdict is known
    /// (computed by its first caller, which sets the verdict bit before the known
    /// bit; concurrent callers compute the same verdict).
    #[inline]
    pub fn matches_at(&self, snap: &Snapshot, pos: usize) -> bool {
        let (w, bit) = (pos / 64, 1u64 << (pos % 64));
        let (Some(known), Some(node)) = (self.known.get(w), snap.nodes().get(pos)) else {
            return false;
        };
        if known.load(Ordering::Acquire) & bit != 0 {
            return self.verdicts[w].load(Ordering::Relaxed) & bit != 0;
        }
        let m = self.matches(pos, &node.name);
        if m {
            self.verdicts[w].fetch_or(bit, Ordering::Relaxed);
        }
        known.fetch_or(bit, Ordering::Release);
        m
    }

    /// Whether the index describes `snap`'s current nodes.
    #[inline]
    pub fn valid_for(&self, snap: &Snapshot) -> bool {
        self.nodes_version == snap.nodes_version()
    }

    /// `RequiredNodeAffinity::matches` for the node at position `pos` named `name`.
    #[inline]
    pub fn matches(&self, pos: usize, name: &str) -> bool {
        if let Some(s) = &self.selector
            && !s.iter().all(|r| r.matches(pos))
        {
            return false;
        }
        match &self.terms {
            None => true,
            // An empty term matches nothing (`NodeTerm::matches`).
            Some(ts) => ts.iter().any(|t| {
                !(t.exprs.is_empty() && t.fields.is_empty())
                    && t.exprs.iter().all(|r| r.matches(pos))
                    && t.fields.iter().all(|r| r.matches_value(Some(name)))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::framework::{CycleState, FilterPlugin, PreFilterPlugin};
    use crate::node_affinity::{NodeAffinity, RequiredNodeAffinity};
    use crate::snapshot::Snapshot;
    use crate::testutil::{node, pod};

    /// splitmix64.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) % n
        }
    }

    const KEYS: [&str; 4] = ["a", "b", "cores", "zone"];
    const VALUES: [&str; 5] = ["x", "y", "4", "16", "z1"];

    fn requirement(r: &mut Rng) -> Value {
        let key = KEYS[r.below(4) as usize];
        match r.below(6) {
            0 => {
                json!({"key": key, "operator": "In", "values": [VALUES[r.below(5) as usize], VALUES[r.below(5) as usize]]})
            }
            1 => json!({"key": key, "operator": "NotIn", "values": [VALUES[r.below(5) as usize]]}),
            2 => json!({"key": key, "operator": "Exists"}),
            3 => json!({"key": key, "operator": "DoesNotExist"}),
            4 => json!({"key": "cores", "operator": "Gt", "values": ["8"]}),
            _ => json!({"key": "cores", "operator": "Lt", "values": ["8"]}),
        }
    }

    #[test]
    fn indexed_affinity_agrees_with_label_matching_on_random_clusters() {
        let mut r = Rng(42);
        let mut compared = 0;
        for round in 0..60 {
            let mut snap = Snapshot::new();
            // Small clusters and ones over several words of 64 verdicts.
            let size = if round % 2 == 0 { 12 } else { 12 + 3 * round };
            let infos: Vec<_> = (0..size)
                .map(|i| {
                    let mut b = node(&format!("n{i}"));
                    for k in KEYS {
                        if r.below(3) > 0 {
                            b = b.label(k, VALUES[r.below(5) as usize]);
                        }
                    }
                    b.info()
                })
                .collect();
            snap.add_nodes(infos.clone());
            for _ in 0..20 {
                let mut p = pod("p");
                if r.below(2) == 0 {
                    p = p.node_selector(KEYS[r.below(4) as usize], VALUES[r.below(5) as usize]);
                }
                if r.below(4) > 0 {
                    let terms: Vec<Value> = (0..1 + r.below(3))
                        .map(|_| {
                            let mut t = json!({});
                            if r.below(5) > 0 {
                                let e: Vec<Value> =
                                    (0..1 + r.below(3)).map(|_| requirement(&mut r)).collect();
                                t["matchExpressions"] = json!(e);
                            }
                            if r.below(5) == 0 {
                                let op = if r.below(2) == 0 { "In" } else { "NotIn" };
                                t["matchFields"] = json!([{"key": "metadata.name", "operator": op,
                                    "values": [format!("n{}", r.below(12))]}]);
                            }
                            t
                        })
                        .collect();
                    p = p.affinity(json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}));
                }
                let p = p.info();
                let req = RequiredNodeAffinity::from_pod(&p).expect("valid");
                let ix = req.indexed(&snap).expect("indexable");
                let pl = NodeAffinity::default();
                let mut st = CycleState::new();
                let (_, pre) = pl.pre_filter(&mut st, &p, &snap);
                for (pos, n) in snap.nodes().iter().enumerate() {
                    let want = req.matches(n);
                    assert_eq!(ix.matches_at(&snap, pos), want, "round {round} {}", n.name);
                    assert_eq!(
                        ix.matches(pos, &n.name),
                        want,
                        "round {round} {} {:?}",
                        n.name,
                        p.pod.spec
                    );
                    if !pre.is_skip() && pre.is_success() {
                        // Through the plugin: the snapshot's node (indexed) and a
                        // copy of it (not in the snapshot: label matching).
                        assert_eq!(pl.filter(&st, &p, n, &snap).is_success(), want);
                        assert_eq!(pl.filter(&st, &p, &infos[pos], &snap).is_success(), want);
                    }
                    compared += 1;
                }
            }
            // A node change makes the index stale: Filter then matches labels.
            let p = pod("q").node_selector("a", "x").info();
            let pl = NodeAffinity::default();
            let mut st = CycleState::new();
            let _ = pl.pre_filter(&mut st, &p, &snap);
            snap.upsert_node(node("n0").label("a", "x").info());
            let n0 = snap.node("n0").expect("n0").clone();
            assert!(pl.filter(&st, &p, &n0, &snap).is_success());
            snap.upsert_node(node("n0").label("a", "y").info());
            let n0 = snap.node("n0").expect("n0").clone();
            assert!(!pl.filter(&st, &p, &n0, &snap).is_success());
        }
        assert!(compared > 10_000);
    }
}
