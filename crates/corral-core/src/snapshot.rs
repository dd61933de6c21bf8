//! The cluster snapshot: compact per-node state, incrementally updated.
//!
//! A [`Snapshot`] is read-only while a scheduling batch is evaluated (`&Snapshot` is
//! shared across rayon workers) and mutated only between evaluations, when decisions
//! are committed one at a time (`&mut Snapshot`). Nodes are `Arc<NodeInfo>`, so a
//! clone of the snapshot is cheap and copy-on-write.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, PodAffinityTerm, Taint, Toleration};

use crate::labels::{Labels, Op, Requirement, Selector};
use crate::resources::{FieldError, PodRequests, Resources, pod_requests};

/// Well-known labels.
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
pub const LABEL_REGION: &str = "topology.kubernetes.io/region";

/// A host port used by a pod (`hostIP`, protocol, `hostPort`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

impl HostPort {
    /// Two host ports conflict when protocol and port match and either IP is the
    /// wildcard `0.0.0.0` or the IPs are equal.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == "0.0.0.0" || other.ip == "0.0.0.0")
    }
}

/// A compiled pod (anti-)affinity term (`framework.AffinityTerm`).
#[derive(Debug, Clone)]
pub struct AffinityTerm {
    /// Explicit namespaces (the pod's own namespace when both this and the namespace
    /// selector are unset).
    pub namespaces: Vec<String>,
    /// Namespace selector (`nothing` when nil).
    pub namespace_selector: Selector,
    pub selector: Selector,
    pub topology_key: String,
}

impl AffinityTerm {
    fn compile(pod_ns: &str, pod_labels: &Labels, t: &PodAffinityTerm) -> Result<Self, String> {
        let mut selector = Selector::from_label_selector(t.label_selector.as_ref())?;
        // matchLabelKeys / mismatchLabelKeys (KEP-3633): merged into the selector with
        // the incoming pod's label values.
        if t.label_selector.is_some() {
            for k in t.match_label_keys.iter().flatten() {
                if let Some(v) = pod_labels.get(k) {
                    selector.push(Requirement {
                        key: k.clone(),
                        op: Op::In,
                        values: vec![v.clone()],
                    });
                }
            }
            for k in t.mismatch_label_keys.iter().flatten() {
                if let Some(v) = pod_labels.get(k) {
                    selector.push(Requirement {
                        key: k.clone(),
                        op: Op::NotIn,
                        values: vec![v.clone()],
                    });
                }
            }
        }
        let mut namespaces = t.namespaces.clone().unwrap_or_default();
        let namespace_selector = match t.namespace_selector.as_ref() {
            Some(s) => Selector::from_label_selector(Some(s))?,
            None => Selector::nothing(),
        };
        if namespaces.is_empty() && t.namespace_selector.is_none() {
            namespaces.push(pod_ns.to_string());
        }
        namespaces.sort();
        namespaces.dedup();
        if t.topology_key.is_empty() {
            return Err("topologyKey must not be empty".into());
        }
        Ok(AffinityTerm {
            namespaces,
            namespace_selector,
            selector,
            topology_key: t.topology_key.clone(),
        })
    }

    /// `AffinityTerm.Matches`: the pod is in one of the term's namespaces (explicit or
    /// selected by labels) and its labels match the selector.
    pub fn matches(&self, pod: &PodInfo, ns_labels: Option<&Labels>) -> bool {
        (self.namespaces.contains(&pod.namespace) || self.namespace_selector.matches_opt(ns_labels))
            && self.selector.matches(&pod.labels)
    }
}

/// A weighted (preferred) affinity term.
#[derive(Debug, Clone)]
pub struct WeightedAffinityTerm {
    pub term: AffinityTerm,
    pub weight: i32,
}

/// Everything the scheduler precomputes about a pod.
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    /// `namespace/name`.
    pub key: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: Labels,
    pub node_name: Option<String>,
    pub scheduler_name: String,
    pub priority: i32,
    pub requests: PodRequests,
    pub host_ports: Vec<HostPort>,
    pub tolerations: Vec<Toleration>,
    pub required_affinity_terms: Vec<AffinityTerm>,
    pub required_anti_affinity_terms: Vec<AffinityTerm>,
    pub preferred_affinity_terms: Vec<WeightedAffinityTerm>,
    pub preferred_anti_affinity_terms: Vec<WeightedAffinityTerm>,
    /// Container + init container images, normalized (`:latest` appended when no
    /// tag/digest).
    pub images: Vec<String>,
    /// Creation timestamp in seconds (0 when absent), for queue ordering.
    pub created: i64,
    /// Sequence number in input order (tie breaker, deterministic).
    pub seq: u64,
    /// Equivalence class: pods with the same value have the same namespace, labels,
    /// annotations, owners and spec (except `nodeName`), so they get the same Filter
    /// results and node-local scores against the same snapshot.
    pub equivalence: u64,
    /// Node-local class: pods with the same value get the same results from every
    /// node-local Filter and Score plugin against the same snapshot; it ignores
    /// labels, namespace, owners and pod (anti-)affinity / spread constraints
    /// ([`crate::equivalence`]).
    pub node_local_class: u64,
    /// What the kubelet Topology Manager would align (None: nothing).
    pub numa: Option<Arc<crate::topology::NumaRequest>>,
}

/// Hash of everything scheduling-relevant about a pod except its identity.
fn equivalence_hash(pod: &Pod) -> u64 {
    equivalence_hash_ignoring(pod, &[])
}

/// [`PodInfo::equivalence`] computed as if the annotations named in `ignore` were
/// absent. For layers that add annotations no profile plugin reads (e.g. the batch
/// layer's PodGroup membership), so pods that differ only there share one
/// equivalence class. With `ignore` empty this is exactly `PodInfo::equivalence`.
pub fn equivalence_hash_ignoring(pod: &Pod, ignore: &[&str]) -> u64 {
    use std::collections::BTreeMap;
    use std::hash::Hasher;
    // Serialized straight into the hasher (no copy of the spec, no JSON tree): this
    // runs for every pod of a list, 150,000 at a restart. `nodeName` is part of the
    // key; classes are only used for pending pods, which have none.
    struct HashWriter(std::collections::hash_map::DefaultHasher);
    impl std::io::Write for HashWriter {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.write(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    #[derive(serde::Serialize)]
    struct Key<'a> {
        ns: &'a Option<String>,
        labels: &'a Option<BTreeMap<String, String>>,
        annotations: &'a Option<BTreeMap<String, String>>,
        owners: Vec<(&'a str, &'a str)>,
        spec: &'a Option<k8s_openapi::api::core::v1::PodSpec>,
    }
    let md = &pod.metadata;
    let filtered: Option<BTreeMap<String, String>>;
    let annotations = match &md.annotations {
        Some(a) if !ignore.is_empty() && ignore.iter().any(|k| a.contains_key(*k)) => {
            filtered = Some(
                a.iter()
                    .filter(|(k, _)| !ignore.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            );
            &filtered
        }
        other => other,
    };
    let key = Key {
        ns: &md.namespace,
        labels: &md.labels,
        annotations,
        owners: md
            .owner_references
            .iter()
            .flatten()
            .map(|o| (o.kind.as_str(), o.name.as_str()))
            .collect(),
        spec: &pod.spec,
    };
    let mut w = HashWriter(std::collections::hash_map::DefaultHasher::new());
    // Serializing these types into a writer that never fails cannot fail.
    let _ = serde_json::to_writer(&mut w, &key);
    w.0.finish()
}

/// `normalizedImageName`: appends `:latest` when the name has neither tag nor digest.
pub fn normalize_image(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') || last.contains('@') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

impl PodInfo {
    /// Builds a PodInfo; errors name the offending field.
    pub fn new(mut pod: Pod, seq: u64) -> Result<PodInfo, FieldError> {
        let equivalence = equivalence_hash(&pod);
        let node_local_class = crate::equivalence::node_local_hash(&mut pod, equivalence);
        let requests = pod_requests(&pod)?;
        let md = &pod.metadata;
        let namespace = md.namespace.clone().unwrap_or_else(|| "default".into());
        let name = md.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(FieldError {
                field: "metadata.name".into(),
                message: "must be set".into(),
            });
        }
        let labels = md.labels.clone().unwrap_or_default();
        let spec = pod.spec.as_ref();
        let mut host_ports = Vec::new();
        let mut images = Vec::new();
        if let Some(spec) = spec {
            for c in spec
                .init_containers
                .iter()
                .flatten()
                .chain(spec.containers.iter())
            {
                if let Some(img) = &c.image {
                    images.push(normalize_image(img));
                }
            }
            // `GetHostPorts`: containers and restartable (sidecar) init containers.
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            for c in sidecars.chain(spec.containers.iter()) {
                for p in c.ports.iter().flatten() {
                    if let Some(hp) = p.host_port.filter(|p| *p > 0) {
                        host_ports.push(HostPort {
                            ip: p
                                .host_ip
                                .clone()
                                .filter(|s| !s.is_empty())
                                .unwrap_or_else(|| "0.0.0.0".into()),
                            protocol: p
                                .protocol
                                .clone()
                                .filter(|s| !s.is_empty())
                                .unwrap_or_else(|| "TCP".into()),
                            port: hp,
                        });
                    }
                }
            }
        }
        let aff = spec.and_then(|s| s.affinity.as_ref());
        let compile_req = |terms: Option<&Vec<PodAffinityTerm>>, field: &str| {
            terms
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(i, t)| {
                    AffinityTerm::compile(&namespace, &labels, t).map_err(|e| FieldError {
                        field: format!("{field}[{i}]"),
                        message: e,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let pa = aff.and_then(|a| a.pod_affinity.as_ref());
        let paa = aff.and_then(|a| a.pod_anti_affinity.as_ref());
        let required_affinity_terms = compile_req(
            pa.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            }),
            "spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution",
        )?;
        let required_anti_affinity_terms = compile_req(
            paa.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            }),
            "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution",
        )?;
        let compile_pref =
            |terms: Option<&Vec<k8s_openapi::api::core::v1::WeightedPodAffinityTerm>>,
             field: &str| {
                terms
                    .into_iter()
                    .flatten()
                    .enumerate()
                    .map(|(i, t)| {
                        AffinityTerm::compile(&namespace, &labels, &t.pod_affinity_term)
                            .map(|term| WeightedAffinityTerm {
                                term,
                                weight: t.weight,
                            })
                            .map_err(|e| FieldError {
                                field: format!("{field}[{i}]"),
                                message: e,
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()
            };
        let preferred_affinity_terms = compile_pref(
            pa.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            }),
            "spec.affinity.podAffinity.preferredDuringSchedulingIgnoredDuringExecution",
        )?;
        let preferred_anti_affinity_terms = compile_pref(
            paa.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            }),
            "spec.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution",
        )?;
        let created = md
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or(0);
        Ok(PodInfo {
            key: corral_api::pod::key(&namespace, &name),
            uid: md.uid.clone().unwrap_or_default(),
            node_name: spec
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty()),
            scheduler_name: spec
                .and_then(|s| s.scheduler_name.clone())
                .unwrap_or_else(|| "default-scheduler".into()),
            priority: spec.and_then(|s| s.priority).unwrap_or(0),
            tolerations: spec.and_then(|s| s.tolerations.clone()).unwrap_or_default(),
            namespace,
            name,
            labels,
            requests,
            host_ports,
            required_affinity_terms,
            required_anti_affinity_terms,
            preferred_affinity_terms,
            preferred_anti_affinity_terms,
            images,
            created,
            seq,
            equivalence,
            node_local_class,
            numa: crate::topology::numa_request(&pod).map(Arc::new),
            pod: Arc::new(pod),
        })
    }

    /// True when the pod has any pod affinity or anti-affinity term.
    pub fn has_affinity(&self) -> bool {
        !self.required_affinity_terms.is_empty()
            || !self.required_anti_affinity_terms.is_empty()
            || !self.preferred_affinity_terms.is_empty()
            || !self.preferred_anti_affinity_terms.is_empty()
    }

    pub fn spec(&self) -> Option<&k8s_openapi::api::core::v1::PodSpec> {
        self.pod.spec.as_ref()
    }
}

/// Per-node state (`framework.NodeInfo`).
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub name: Arc<str>,
    pub node: Arc<Node>,
    pub labels: Labels,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub allocatable: Resources,
    /// Sum of effective requests of pods on the node.
    pub requested: Resources,
    /// Sum of non-zero CPU requests (100m substituted) for scoring.
    pub non_zero_milli_cpu: i64,
    /// Sum of non-zero memory requests (200Mi substituted) for scoring.
    pub non_zero_memory: i64,
    pub pods: Vec<Arc<PodInfo>>,
    pub pods_with_affinity: Vec<Arc<PodInfo>>,
    pub pods_with_required_anti_affinity: Vec<Arc<PodInfo>>,
    pub used_ports: Vec<HostPort>,
    /// Images present on the node: normalized name → size in bytes.
    pub images: HashMap<String, i64>,
    /// Stamp of the last change; unique across the snapshot (the snapshot's
    /// generation at that change), so caches can detect any modification.
    pub generation: u64,
    /// NUMA topology (NodeResourceTopology) with the pods assumed since it was
    /// observed; None when the node has no (valid) NRT.
    pub numa: Option<Arc<crate::topology::NodeNuma>>,
    /// Position in the snapshot's node list, set by the snapshot (read it through
    /// [`Snapshot::position`], which rejects copies).
    pos: usize,
}

impl NodeInfo {
    /// Builds node state from a v1 Node; errors name the offending field.
    pub fn new(node: Node) -> Result<NodeInfo, FieldError> {
        let name = node.metadata.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(FieldError {
                field: "metadata.name".into(),
                message: "must be set".into(),
            });
        }
        let status = node.status.as_ref();
        let alloc_list = status
            .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()))
            .cloned()
            .unwrap_or_default();
        let field = if status.and_then(|s| s.allocatable.as_ref()).is_some() {
            "status.allocatable"
        } else {
            "status.capacity"
        };
        let allocatable = Resources::from_list(&alloc_list, field)?;
        crate::limits::check_node(&node, &allocatable, field)?;
        let mut images = HashMap::new();
        for img in status.and_then(|s| s.images.as_ref()).into_iter().flatten() {
            for n in img.names.iter().flatten() {
                images.insert(normalize_image(n), img.size_bytes.unwrap_or(0));
            }
        }
        let spec = node.spec.as_ref();
        Ok(NodeInfo {
            name: Arc::from(name.as_str()),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints: spec.and_then(|s| s.taints.clone()).unwrap_or_default(),
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            allocatable,
            requested: Resources::default(),
            non_zero_milli_cpu: 0,
            non_zero_memory: 0,
            pods: Vec::new(),
            pods_with_affinity: Vec::new(),
            pods_with_required_anti_affinity: Vec::new(),
            used_ports: Vec::new(),
            images,
            generation: 0,
            numa: None,
            pos: 0,
            node: Arc::new(node),
        })
    }

    /// Adds a pod's usage to the node.
    pub fn add_pod(&mut self, p: Arc<PodInfo>) {
        self.requested.add(&p.requests.requests);
        self.non_zero_milli_cpu += p.requests.non_zero_milli_cpu;
        self.non_zero_memory += p.requests.non_zero_memory;
        self.used_ports.extend(p.host_ports.iter().cloned());
        if let (Some(n), Some(r)) = (self.numa.as_mut(), p.numa.as_ref()) {
            Arc::make_mut(n).assume(&p.key, r);
        }
        if p.has_affinity() {
            self.pods_with_affinity.push(p.clone());
        }
        if !p.required_anti_affinity_terms.is_empty() {
            self.pods_with_required_anti_affinity.push(p.clone());
        }
        self.pods.push(p);
        self.generation += 1;
    }

    /// Removes a pod (by key); returns it when it was on the node.
    pub fn remove_pod(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        let i = self.pods.iter().position(|p| p.key == key)?;
        let p = self.pods.swap_remove(i);
        if let Some(n) = self.numa.as_mut()
            && n.assumed.iter().any(|(k, _)| k == key)
        {
            Arc::make_mut(n).forget(key);
        }
        self.requested.sub(&p.requests.requests);
        self.non_zero_milli_cpu -= p.requests.non_zero_milli_cpu;
        self.non_zero_memory -= p.requests.non_zero_memory;
        for hp in &p.host_ports {
            if let Some(j) = self.used_ports.iter().position(|u| u == hp) {
                self.used_ports.swap_remove(j);
            }
        }
        self.pods_with_affinity.retain(|x| x.key != key);
        self.pods_with_required_anti_affinity
            .retain(|x| x.key != key);
        self.generation += 1;
        Some(p)
    }

    /// Requested + this pod fits in allocatable pods count.
    pub fn free(&self, name: &str) -> i64 {
        self.allocatable.get(name) - self.requested.get(name)
    }

    /// Zone key used for node ordering (region + zone).
    fn zone_key(&self) -> String {
        let r = self
            .labels
            .get(LABEL_REGION)
            .map(String::as_str)
            .unwrap_or("");
        let z = self
            .labels
            .get(LABEL_ZONE)
            .map(String::as_str)
            .unwrap_or("");
        format!("{r}:\0:{z}")
    }
}

/// Immutable-during-a-cycle cluster state.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    nodes: Vec<Arc<NodeInfo>>,
    /// Node name → position (Fx-hashed: probed per node by plugins).
    index: crate::fxhash::FxHashMap<Arc<str>, usize>,
    /// Node indices having pods with (any) affinity terms, ascending.
    with_affinity: Vec<usize>,
    /// Node indices having pods with required anti-affinity terms, ascending.
    with_required_anti_affinity: Vec<usize>,
    /// Namespace name → labels (for namespace selectors).
    pub namespaces: HashMap<String, Labels>,
    /// Normalized image name → number of nodes holding it.
    image_nodes: HashMap<String, u32>,
    /// Pod key → node name, for every placed pod.
    pod_nodes: HashMap<String, Arc<str>>,
    /// Pods bound to nodes not (yet) in the snapshot, by node name.
    orphans: BTreeMap<String, Vec<Arc<PodInfo>>>,
    generation: u64,
    /// Bumped when the node set or order changes (indices may move).
    nodes_version: u64,
    /// Node health for this cycle (health-weighted placement); published by the
    /// health tracker between cycles, read-only while pods are evaluated.
    health: Option<Arc<crate::health::HealthView>>,
    /// NodeResourceTopology per node name (also for nodes not in the snapshot yet).
    topologies: HashMap<String, Arc<crate::topology::NodeTopology>>,
    /// PVs, PVCs, StorageClasses, CSI objects and the assumed volume bindings.
    volumes: crate::volumes::VolumeState,
    /// Placed pods by label and by affinity term (see [`crate::pod_index`]).
    pod_index: crate::pod_index::PodIndex,
    /// [`Snapshot::hostnames_unique`], computed on first use after a node change.
    hostnames_unique: std::sync::OnceLock<bool>,
    /// Topology domains per key, built lazily (see [`crate::domains`]).
    domains: crate::domains::DomainIndex,
}

impl Snapshot {
    pub fn new() -> Self {
        Snapshot::default()
    }

    /// All nodes, zone-interleaved like kube-scheduler's node tree.
    #[inline]
    pub fn nodes(&self) -> &[Arc<NodeInfo>] {
        &self.nodes
    }

    pub fn num_nodes(&self) -> usize {
        self.nodes.len()
    }

    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub fn node(&self, name: &str) -> Option<&Arc<NodeInfo>> {
        self.node_index(name).map(|i| &self.nodes[i])
    }

    /// Position of `node` in [`Snapshot::nodes`] in O(1), when it is this snapshot's
    /// own `NodeInfo` (a copy, or a node of another snapshot version, gives `None`).
    #[inline]
    pub fn position(&self, node: &NodeInfo) -> Option<usize> {
        self.nodes
            .get(node.pos)
            .filter(|n| std::ptr::eq(&***n, node))
            .map(|_| node.pos)
    }

    /// The topology domains of `key` over the current nodes, built on first use and
    /// kept until the node set or labels change (see [`crate::domains`]).
    pub fn topology_domains(&self, key: &str) -> Arc<crate::domains::KeyDomains> {
        self.domains.get(&self.nodes, self.nodes_version, key)
    }

    /// The lazily built topology-domain index (for tests and diagnostics).
    pub fn domain_index(&self) -> &crate::domains::DomainIndex {
        &self.domains
    }

    /// Indices of nodes that have pods with affinity terms.
    pub fn nodes_with_affinity_pods(&self) -> &[usize] {
        &self.with_affinity
    }

    /// Indices of nodes that have pods with required anti-affinity terms.
    pub fn nodes_with_required_anti_affinity_pods(&self) -> &[usize] {
        &self.with_required_anti_affinity
    }

    /// Number of nodes holding image `name` (normalized).
    pub fn image_num_nodes(&self, name: &str) -> u32 {
        self.image_nodes.get(name).copied().unwrap_or(0)
    }

    /// Labels of namespace `ns` (None when unknown).
    pub fn namespace_labels(&self, ns: &str) -> Option<&Labels> {
        self.namespaces.get(ns)
    }

    /// A placed pod and its node, by pod key.
    pub fn placed_pod(&self, key: &str) -> Option<(&Arc<PodInfo>, &Arc<str>)> {
        let node = self.pod_nodes.get(key)?;
        let i = self.index.get(&**node).copied()?;
        self.nodes[i]
            .pods
            .iter()
            .find(|p| p.key == key)
            .map(|p| (p, node))
    }

    /// Placed pods by label and by affinity term, for selectors that should touch
    /// only the pods they can match.
    #[inline]
    pub fn pod_index(&self) -> &crate::pod_index::PodIndex {
        &self.pod_index
    }

    /// Node the pod `key` is placed on.
    pub fn pod_node(&self, key: &str) -> Option<&Arc<str>> {
        self.pod_nodes.get(key)
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Version of the node set/order: node indices are stable while it is unchanged.
    pub fn nodes_version(&self) -> u64 {
        self.nodes_version
    }

    /// True when no two nodes share a value of the hostname label (nodes without it
    /// do not count), so a hostname topology domain is one node. Computed once per
    /// node change (O(nodes)), then O(1).
    pub fn hostnames_unique(&self) -> bool {
        *self.hostnames_unique.get_or_init(|| {
            let mut seen = std::collections::HashSet::with_capacity(self.nodes.len());
            self.nodes.iter().all(|n| {
                n.labels
                    .get(LABEL_HOSTNAME)
                    .is_none_or(|h| seen.insert(h.as_str()))
            })
        })
    }

    /// The per-cycle node health view (NodeHealth plugin), if any.
    #[inline]
    pub fn health(&self) -> Option<&Arc<crate::health::HealthView>> {
        self.health.as_ref()
    }

    /// Replaces the health view between cycles. Bumps `nodes_version` so cached
    /// per-node Filter results and node-local scores (equivalence-class caches) are
    /// recomputed against the new health.
    pub fn set_health(&mut self, view: Option<Arc<crate::health::HealthView>>) {
        self.health = view;
        self.nodes_version += 1;
    }

    /// The volume objects and assumed bindings (volume plugins).
    #[inline]
    pub fn volumes(&self) -> &crate::volumes::VolumeState {
        &self.volumes
    }

    /// Mutable volume state between cycles (watch events, input). Bumps
    /// `nodes_version`: per-node Filter results cached for equivalence classes may
    /// depend on volume objects (VolumeZone, NodeVolumeLimits).
    pub fn volumes_mut(&mut self) -> &mut crate::volumes::VolumeState {
        self.nodes_version += 1;
        &mut self.volumes
    }

    /// Records the volume decisions VolumeBinding's Reserve made for a placed pod
    /// (the committer calls this right after placing it). They are forgotten when
    /// the pod leaves the snapshot.
    pub fn assume_volumes(&mut self, pod_key: &str, b: crate::volumes::PodVolumeBindings) {
        self.volumes.assume(pod_key, b);
    }

    /// True when some NodeResourceTopology is known.
    #[inline]
    pub fn has_topology(&self) -> bool {
        !self.topologies.is_empty()
    }

    /// The NodeResourceTopology of node `name`, as last set.
    pub fn topology(&self, name: &str) -> Option<&Arc<crate::topology::NodeTopology>> {
        self.topologies.get(name)
    }

    /// Sets (a newer NRT was observed) or removes a node's NUMA topology between
    /// cycles. Setting forgets the pods assumed on the node since the previous NRT
    /// (the new one is taken to include them); the node gets a new generation stamp
    /// so cached Filter results and node-local scores are recomputed.
    pub fn set_topology(&mut self, name: &str, topo: Option<Arc<crate::topology::NodeTopology>>) {
        match &topo {
            Some(t) => {
                self.topologies.insert(name.to_string(), t.clone());
            }
            None => {
                self.topologies.remove(name);
            }
        }
        if let Some(i) = self.index.get(name).copied() {
            self.generation += 1;
            let n = Arc::make_mut(&mut self.nodes[i]);
            n.numa = topo.map(|t| Arc::new(crate::topology::NodeNuma::new(t)));
            n.generation = self.generation;
        }
    }

    fn rebuild_order(&mut self) {
        // Interleave zones round-robin (stable by first appearance) so that sampling a
        // prefix of the node list spreads across zones, like kube-scheduler's nodeTree.
        let mut zones: Vec<(String, Vec<Arc<NodeInfo>>)> = Vec::new();
        let mut zidx: HashMap<String, usize> = HashMap::new();
        for n in self.nodes.drain(..) {
            let z = n.zone_key();
            let i = *zidx.entry(z.clone()).or_insert_with(|| {
                zones.push((z, Vec::new()));
                zones.len() - 1
            });
            zones[i].1.push(n);
        }
        let total: usize = zones.iter().map(|z| z.1.len()).sum();
        let mut iters: Vec<_> = zones.into_iter().map(|z| z.1.into_iter()).collect();
        let mut out = Vec::with_capacity(total);
        while out.len() < total {
            for it in iters.iter_mut() {
                if let Some(n) = it.next() {
                    out.push(n);
                }
            }
        }
        for (i, n) in out.iter_mut().enumerate() {
            if n.pos != i {
                Arc::make_mut(n).pos = i;
            }
        }
        self.nodes = out;
        self.index = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        self.rebuild_lists();
    }

    fn rebuild_lists(&mut self) {
        self.with_affinity = (0..self.nodes.len())
            .filter(|&i| !self.nodes[i].pods_with_affinity.is_empty())
            .collect();
        self.with_required_anti_affinity = (0..self.nodes.len())
            .filter(|&i| !self.nodes[i].pods_with_required_anti_affinity.is_empty())
            .collect();
    }

    fn update_lists_for(&mut self, i: usize) {
        fn set(list: &mut Vec<usize>, i: usize, on: bool) {
            match (list.binary_search(&i), on) {
                (Ok(_), true) | (Err(_), false) => {}
                (Err(p), true) => list.insert(p, i),
                (Ok(p), false) => {
                    list.remove(p);
                }
            }
        }
        let n = &self.nodes[i];
        let a = !n.pods_with_affinity.is_empty();
        let r = !n.pods_with_required_anti_affinity.is_empty();
        set(&mut self.with_affinity, i, a);
        set(&mut self.with_required_anti_affinity, i, r);
    }

    /// Adds or replaces a node. Pods already bound to it are kept (or adopted from the
    /// orphan list when the node was unknown).
    pub fn upsert_node(&mut self, info: NodeInfo) {
        if self.upsert_node_deferred(info) {
            self.rebuild_order();
        }
    }

    /// Adds or replaces many nodes with a single reordering (initial lists of
    /// thousands of nodes).
    pub fn upsert_nodes(&mut self, infos: impl IntoIterator<Item = NodeInfo>) {
        let mut reorder = false;
        for info in infos {
            reorder |= self.upsert_node_deferred(info);
        }
        if reorder {
            self.rebuild_order();
        }
    }

    /// `upsert_node` without the reordering; returns whether the order must be
    /// rebuilt. New nodes are indexed at the end until then.
    fn upsert_node_deferred(&mut self, mut info: NodeInfo) -> bool {
        self.generation += 1;
        self.nodes_version += 1;
        self.hostnames_unique = std::sync::OnceLock::new();
        let name = info.name.clone();
        for p in &info.pods {
            self.pod_index.add(p, &name);
        }
        if let Some(&i) = self.index.get(&name) {
            let old = self.nodes[i].clone();
            for img in old.images.keys() {
                self.dec_image(img);
            }
            for p in &old.pods {
                info.add_pod(p.clone());
            }
            for img in info.images.keys() {
                *self.image_nodes.entry(img.clone()).or_insert(0) += 1;
            }
            let zone_changed = old.zone_key() != info.zone_key();
            // After re-adding the pods: the NUMA state (with its assumed pods) is
            // the node's, not the Node object's.
            info.numa = old.numa.clone();
            info.generation = self.generation;
            info.pos = i;
            self.nodes[i] = Arc::new(info);
            return zone_changed;
        }
        for p in self.orphans.remove(&*name).unwrap_or_default() {
            info.add_pod(p);
        }
        info.numa = self
            .topologies
            .get(&*name)
            .cloned()
            .map(|t| Arc::new(crate::topology::NodeNuma::new(t)));
        for img in info.images.keys() {
            *self.image_nodes.entry(img.clone()).or_insert(0) += 1;
        }
        info.generation = self.generation;
        info.pos = self.nodes.len();
        self.nodes.push(Arc::new(info));
        self.index.insert(name, self.nodes.len() - 1);
        true
    }

    fn dec_image(&mut self, img: &str) {
        if let Some(c) = self.image_nodes.get_mut(img) {
            *c -= 1;
            if *c == 0 {
                self.image_nodes.remove(img);
            }
        }
    }

    /// Adds many new nodes at once (one re-ordering instead of one per node). Nodes
    /// already present are updated like [`Snapshot::upsert_node`].
    pub fn add_nodes(&mut self, nodes: impl IntoIterator<Item = NodeInfo>) {
        let mut added = false;
        for mut info in nodes {
            if self.index.contains_key(&info.name) {
                self.upsert_node(info);
                continue;
            }
            self.generation += 1;
            self.nodes_version += 1;
            self.hostnames_unique = std::sync::OnceLock::new();
            for p in &info.pods {
                self.pod_index.add(p, &info.name);
            }
            for p in self.orphans.remove(&*info.name).unwrap_or_default() {
                info.add_pod(p);
            }
            info.numa = self
                .topologies
                .get(&*info.name)
                .cloned()
                .map(|t| Arc::new(crate::topology::NodeNuma::new(t)));
            for img in info.images.keys() {
                *self.image_nodes.entry(img.clone()).or_insert(0) += 1;
            }
            info.generation = self.generation;
            info.pos = self.nodes.len();
            self.index.insert(info.name.clone(), self.nodes.len());
            self.nodes.push(Arc::new(info));
            added = true;
        }
        if added {
            self.rebuild_order();
        }
    }

    /// Removes a node; its pods become orphans (kept until the node returns or they
    /// are deleted). Returns whether the node existed.
    pub fn remove_node(&mut self, name: &str) -> bool {
        let Some(i) = self.index.get(name).copied() else {
            return false;
        };
        self.generation += 1;
        self.nodes_version += 1;
        self.hostnames_unique = std::sync::OnceLock::new();
        let n = self.nodes.remove(i);
        for img in n.images.keys() {
            self.dec_image(img);
        }
        if !n.pods.is_empty() {
            self.orphans.insert(name.to_string(), n.pods.clone());
        }
        self.rebuild_order();
        true
    }

    /// Places a pod on `node` (running or just bound). A pod already placed is moved.
    pub fn add_pod(&mut self, pod: Arc<PodInfo>, node: &str) {
        self.generation += 1;
        if self.pod_nodes.contains_key(&pod.key) {
            // An update of a placed pod (e.g. its bind observed) keeps the volumes
            // assumed for it on the same node.
            let kept = self
                .volumes
                .pod_bindings(&pod.key)
                .filter(|b| b.node == node)
                .cloned();
            self.remove_pod(&pod.key);
            if let Some(b) = kept {
                self.volumes.assume(&pod.key, b);
            }
        }
        let node_name: Arc<str> = Arc::from(node);
        self.pod_index.add(&pod, &node_name);
        self.pod_nodes.insert(pod.key.clone(), node_name);
        match self.index.get(node).copied() {
            Some(i) => {
                let n = Arc::make_mut(&mut self.nodes[i]);
                n.add_pod(pod);
                n.generation = self.generation;
                self.update_lists_for(i);
            }
            None => self.orphans.entry(node.to_string()).or_default().push(pod),
        }
    }

    /// Removes a placed pod; returns it.
    pub fn remove_pod(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        let p = self.remove_pod_unindexed(key)?;
        self.pod_index.remove(&p);
        Some(p)
    }

    fn remove_pod_unindexed(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        let node = self.pod_nodes.remove(key)?;
        self.generation += 1;
        // A pod that is not placed holds no assumed volumes (unreserve, rollback).
        self.volumes.forget(key);
        match self.index.get(&node).copied() {
            Some(i) => {
                let n = Arc::make_mut(&mut self.nodes[i]);
                let p = n.remove_pod(key);
                n.generation = self.generation;
                self.update_lists_for(i);
                p
            }
            None => {
                let list = self.orphans.get_mut(&*node)?;
                let j = list.iter().position(|p| p.key == key)?;
                Some(list.swap_remove(j))
            }
        }
    }

    /// Number of pods bound to nodes that are not in the snapshot.
    pub fn orphan_pods(&self) -> usize {
        self.orphans.values().map(Vec::len).sum()
    }

    /// Total number of placed pods.
    pub fn num_pods(&self) -> usize {
        self.pod_nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsert_nodes_matches_one_by_one() {
        let mut a = Snapshot::new();
        let mut b = Snapshot::new();
        let nodes = [("n1", "z1"), ("n2", "z2"), ("n3", "z1"), ("n1", "z2")];
        for (n, z) in nodes {
            a.upsert_node(node(n, z, "4"));
        }
        b.upsert_nodes(nodes.iter().map(|(n, z)| node(n, z, "4")));
        let names = |s: &Snapshot| {
            s.nodes()
                .iter()
                .map(|n| n.name.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&a), names(&b));
        assert_eq!(b.num_nodes(), 3);
        for n in ["n1", "n2", "n3"] {
            assert_eq!(a.node_index(n), b.node_index(n));
        }
    }

    fn node(name: &str, zone: &str, cpu: &str) -> NodeInfo {
        let n: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {LABEL_ZONE: zone, LABEL_HOSTNAME: name}},
            "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
                       "images": [{"names": ["nginx:1.25"], "sizeBytes": 100}]}
        }))
        .unwrap();
        NodeInfo::new(n).unwrap()
    }

    fn pod(name: &str, cpu: &str, anti: bool) -> Arc<PodInfo> {
        let mut v = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "ns", "labels": {"app": "a"}},
            "spec": {"containers": [{"name": "c", "image": "nginx",
                "ports": [{"containerPort": 80, "hostPort": 8080}],
                "resources": {"requests": {"cpu": cpu}}}]}
        });
        if anti {
            v["spec"]["affinity"] = serde_json::json!({"podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "a"}}, "topologyKey": LABEL_HOSTNAME}]}});
        }
        Arc::new(PodInfo::new(serde_json::from_value(v).unwrap(), 0).unwrap())
    }

    #[test]
    fn zone_interleaving_and_incremental_updates() {
        let mut s = Snapshot::new();
        s.upsert_node(node("a1", "a", "4"));
        s.upsert_node(node("a2", "a", "4"));
        s.upsert_node(node("b1", "b", "4"));
        let names: Vec<_> = s.nodes().iter().map(|n| n.name.to_string()).collect();
        assert_eq!(names, ["a1", "b1", "a2"]);
        assert_eq!(s.image_num_nodes("nginx:1.25"), 3);

        s.add_pod(pod("p1", "1", true), "b1");
        let b1 = s.node("b1").unwrap();
        assert_eq!(b1.requested.milli_cpu, 1000);
        assert_eq!(b1.non_zero_memory, crate::resources::DEFAULT_MEMORY_REQUEST);
        assert_eq!(b1.used_ports.len(), 1);
        assert_eq!(s.nodes_with_required_anti_affinity_pods(), &[1]);

        // Node update keeps pods.
        s.upsert_node(node("b1", "b", "8"));
        assert_eq!(s.node("b1").unwrap().requested.milli_cpu, 1000);
        assert_eq!(s.node("b1").unwrap().allocatable.milli_cpu, 8000);

        // Removing the pod restores usage and lists.
        assert!(s.remove_pod("ns/p1").is_some());
        let b1 = s.node("b1").unwrap();
        assert_eq!(b1.requested.milli_cpu, 0);
        assert!(b1.used_ports.is_empty());
        assert!(s.nodes_with_required_anti_affinity_pods().is_empty());

        // Pods on unknown nodes are adopted when the node appears.
        s.add_pod(pod("p2", "500m", false), "c1");
        assert_eq!(s.orphan_pods(), 1);
        s.upsert_node(node("c1", "c", "4"));
        assert_eq!(s.orphan_pods(), 0);
        assert_eq!(s.node("c1").unwrap().requested.milli_cpu, 500);
        assert!(s.remove_node("c1"));
        assert_eq!(s.orphan_pods(), 1);
        assert_eq!(s.num_nodes(), 3);
    }

    #[test]
    fn snapshot_clone_is_copy_on_write() {
        let mut s = Snapshot::new();
        s.upsert_node(node("a1", "a", "4"));
        let before = s.clone();
        s.add_pod(pod("p", "1", false), "a1");
        assert_eq!(before.node("a1").unwrap().requested.milli_cpu, 0);
        assert_eq!(s.node("a1").unwrap().requested.milli_cpu, 1000);
    }

    #[test]
    fn image_normalization_and_ports() {
        assert_eq!(normalize_image("nginx"), "nginx:latest");
        assert_eq!(normalize_image("reg:5000/nginx"), "reg:5000/nginx:latest");
        assert_eq!(normalize_image("nginx@sha256:abc"), "nginx@sha256:abc");
        let a = HostPort {
            ip: "0.0.0.0".into(),
            protocol: "TCP".into(),
            port: 80,
        };
        let b = HostPort {
            ip: "10.0.0.1".into(),
            protocol: "TCP".into(),
            port: 80,
        };
        let c = HostPort {
            ip: "10.0.0.2".into(),
            protocol: "TCP".into(),
            port: 80,
        };
        let d = HostPort {
            ip: "10.0.0.1".into(),
            protocol: "UDP".into(),
            port: 80,
        };
        assert!(a.conflicts(&b) && b.conflicts(&a));
        assert!(!b.conflicts(&c) && !b.conflicts(&d));
    }
}
