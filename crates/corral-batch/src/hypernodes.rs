//! Network topology (Volcano ≥ 1.12): `topology.volcano.sh/v1alpha1` HyperNode
//! objects (tiers of switches/racks/zones whose members are nodes — by exact name,
//! regex or labels — or other HyperNodes) and the PodGroup's `networkTopology`
//! (`mode: hard|soft`, `highestTierAllowed`). [`resolve`] turns the HyperNodes into
//! node sets; allocate places such a gang inside the lowest-tier HyperNode that can
//! hold it (`actions/topology.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

use crate::input::RawObject;

pub mod capacity;

pub const TOPOLOGY_API: &str = "topology.volcano.sh/v1alpha1";

/// A member selector.
#[derive(Debug, Clone)]
pub enum Selector {
    Exact(String),
    Regex(regex::Regex),
    Labels(BTreeMap<String, String>),
}

/// A member: a node (`hyper == false`) or a HyperNode.
#[derive(Debug, Clone)]
pub struct Member {
    pub hyper: bool,
    pub selector: Selector,
}

/// A HyperNode.
#[derive(Debug, Clone)]
pub struct HyperNodeSpec {
    pub name: String,
    pub tier: i32,
    pub members: Vec<Member>,
}

/// A PodGroup's `spec.networkTopology`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkTopology {
    /// `mode: hard`: never across `highest_tier`; soft: prefer one HyperNode.
    pub hard: bool,
    pub highest_tier: Option<i32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HyperNodeDoc {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    metadata: ObjectMeta,
    spec: SpecDoc,
    #[allow(dead_code)]
    status: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SpecDoc {
    tier: i32,
    /// Informational (what the tier is called); decisions use `tier`.
    #[allow(dead_code)]
    tier_name: Option<String>,
    #[serde(default)]
    members: Vec<MemberDoc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MemberDoc {
    r#type: String,
    selector: SelectorDoc,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SelectorDoc {
    exact_match: Option<ExactDoc>,
    regex_match: Option<RegexDoc>,
    label_match: Option<LabelDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExactDoc {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegexDoc {
    pattern: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LabelDoc {
    match_labels: Option<BTreeMap<String, String>>,
    match_expressions: Option<serde_json::Value>,
}

/// Decodes a HyperNode; errors name the field.
pub fn parse_hypernode(o: &RawObject) -> Result<HyperNodeSpec, String> {
    let d: HyperNodeDoc = serde_json::from_value(o.value.clone()).map_err(|e| e.to_string())?;
    let name = d.metadata.name.clone().unwrap_or_default();
    if name.is_empty() {
        return Err("metadata.name must be set".into());
    }
    if d.spec.tier < 0 {
        return Err(format!(
            "spec.tier: must not be negative, got {}",
            d.spec.tier
        ));
    }
    let mut members = Vec::new();
    for (i, m) in d.spec.members.into_iter().enumerate() {
        let at = format!("spec.members[{i}]");
        let hyper = match m.r#type.as_str() {
            "Node" => false,
            "HyperNode" => true,
            t => return Err(format!("{at}.type: must be Node or HyperNode, got {t:?}")),
        };
        let s = m.selector;
        let n = [
            s.exact_match.is_some(),
            s.regex_match.is_some(),
            s.label_match.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if n != 1 {
            return Err(format!(
                "{at}.selector: exactly one of exactMatch, regexMatch, labelMatch must be set"
            ));
        }
        let selector = if let Some(e) = s.exact_match {
            Selector::Exact(e.name)
        } else if let Some(r) = s.regex_match {
            Selector::Regex(
                regex::Regex::new(&r.pattern)
                    .map_err(|e| format!("{at}.selector.regexMatch.pattern: invalid regex: {e}"))?,
            )
        } else {
            let l = s.label_match.unwrap_or(LabelDoc {
                match_labels: None,
                match_expressions: None,
            });
            if hyper {
                return Err(format!(
                    "{at}.selector.labelMatch: only for members of type Node"
                ));
            }
            if l.match_expressions.is_some() {
                return Err(format!(
                    "{at}.selector.labelMatch.matchExpressions: not supported by Corral (use matchLabels)"
                ));
            }
            Selector::Labels(l.match_labels.unwrap_or_default())
        };
        members.push(Member { hyper, selector });
    }
    Ok(HyperNodeSpec {
        name,
        tier: d.spec.tier,
        members,
    })
}

/// Decodes a PodGroup's `spec.networkTopology`.
pub fn parse_network_topology(v: &serde_json::Value) -> Result<NetworkTopology, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Doc {
        mode: Option<String>,
        highest_tier_allowed: Option<i32>,
    }
    let d: Doc =
        serde_json::from_value(v.clone()).map_err(|e| format!("spec.networkTopology: {e}"))?;
    let hard = match d.mode.as_deref() {
        Some("hard") => true,
        None | Some("soft") => false,
        Some(m) => {
            return Err(format!(
                "spec.networkTopology.mode: must be hard or soft, got {m:?}"
            ));
        }
    };
    Ok(NetworkTopology {
        hard,
        highest_tier: d.highest_tier_allowed,
    })
}

/// A HyperNode resolved to the nodes it contains.
#[derive(Debug, Clone)]
pub struct Domain {
    pub name: String,
    pub tier: i32,
    pub nodes: BTreeSet<String>,
}

/// Resolves HyperNodes over the cluster's nodes (name, labels), in placement order:
/// lower tier first, then fewer nodes, then name. Cycles between HyperNodes are
/// broken (a HyperNode never contains itself).
pub fn resolve<'a>(
    specs: &[HyperNodeSpec],
    nodes: impl Iterator<Item = (&'a str, &'a BTreeMap<String, String>)> + Clone,
) -> Vec<Domain> {
    let index: HashMap<&str, usize> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut memo: Vec<Option<BTreeSet<String>>> = vec![None; specs.len()];
    fn go<'a>(
        i: usize,
        specs: &[HyperNodeSpec],
        index: &HashMap<&str, usize>,
        nodes: &(impl Iterator<Item = (&'a str, &'a BTreeMap<String, String>)> + Clone),
        memo: &mut Vec<Option<BTreeSet<String>>>,
        visiting: &mut Vec<usize>,
    ) -> BTreeSet<String> {
        if let Some(m) = &memo[i] {
            return m.clone();
        }
        if visiting.contains(&i) {
            return BTreeSet::new();
        }
        visiting.push(i);
        let mut out = BTreeSet::new();
        for m in &specs[i].members {
            if m.hyper {
                let kids: Vec<usize> = match &m.selector {
                    Selector::Exact(n) => index.get(n.as_str()).copied().into_iter().collect(),
                    Selector::Regex(r) => specs
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| r.is_match(&s.name))
                        .map(|(k, _)| k)
                        .collect(),
                    Selector::Labels(_) => Vec::new(),
                };
                for k in kids {
                    out.extend(go(k, specs, index, nodes, memo, visiting));
                }
            } else {
                for (n, labels) in nodes.clone() {
                    let hit = match &m.selector {
                        Selector::Exact(e) => e == n,
                        Selector::Regex(r) => r.is_match(n),
                        Selector::Labels(l) => l.iter().all(|(k, v)| labels.get(k) == Some(v)),
                    };
                    if hit {
                        out.insert(n.to_string());
                    }
                }
            }
        }
        visiting.pop();
        memo[i] = Some(out.clone());
        out
    }
    let mut out: Vec<Domain> = (0..specs.len())
        .map(|i| Domain {
            name: specs[i].name.clone(),
            tier: specs[i].tier,
            nodes: go(i, specs, &index, &nodes, &mut memo, &mut Vec::new()),
        })
        .filter(|d| !d.nodes.is_empty())
        .collect();
    out.sort_by(|a, b| {
        a.tier
            .cmp(&b.tier)
            .then(a.nodes.len().cmp(&b.nodes.len()))
            .then(a.name.cmp(&b.name))
    });
    out
}

/// What a session knows about network topology: the resolved HyperNodes and the
/// PodGroups' `networkTopology` (by `namespace/name`).
#[derive(Debug, Clone, Default)]
pub struct Topology {
    pub domains: Vec<Domain>,
    pub groups: HashMap<String, NetworkTopology>,
}

impl Topology {
    /// Resolves the batch objects' HyperNodes over the snapshot's nodes.
    pub fn new(objs: &crate::BatchObjects, snap: &crate::snapshot::Snapshot) -> Topology {
        if objs.hypernodes.is_empty() && objs.network_topology.is_empty() {
            return Topology::default();
        }
        let nodes = snap.nodes().iter().map(|n| (&*n.name, &n.labels));
        Topology {
            domains: resolve(&objs.hypernodes, nodes),
            groups: objs.network_topology.clone(),
        }
    }
}
