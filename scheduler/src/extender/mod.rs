//! `corral-scheduler extender`: kube-scheduler's HTTP extender (v1) protocol.
//!
//! Wire format: the types of `k8s.io/kube-scheduler/extender/v1`. Those Go structs
//! carry no JSON tags, so kube-scheduler sends `Pod`, `Nodes`, `NodeNames`, ... and
//! decodes responses case-insensitively; Corral accepts field names in any case and
//! answers with the lower-camel names most extenders use (`nodes`, `nodenames`,
//! `failedNodes`, `failedAndUnresolvableNodes`, `error`, `host`, `score`, ...), which
//! kube-scheduler decodes the same way.
//!
//! - `POST /filter`: ExtenderArgs → ExtenderFilterResult. With `Nodes`
//!   (nodeCacheCapable=false) the given Node objects are evaluated; with `NodeNames`
//!   (nodeCacheCapable=true) the extender's node cache is used (names it does not
//!   know fail with a reason). Filter plugins' Unschedulable reasons go to
//!   `failedNodes`, UnschedulableAndUnresolvable ones to `failedAndUnresolvableNodes`.
//! - `POST /prioritize`: ExtenderArgs → HostPriorityList, the weighted sum of Corral's
//!   score plugins scaled to 0–10 (MaxExtenderPriority).
//! - `POST /bind`: ExtenderBindingArgs → ExtenderBindingResult (needs `--kubeconfig`):
//!   the pod is read, the profile's Reserve plugins run against the cache (GpuShare's
//!   card assignment), their annotations are merge-patched onto the pod, then bound.
//! - `POST /preempt`: ExtenderPreemptionArgs → ExtenderPreemptionResult: the proposed
//!   victims are returned as meta victims for the nodes Corral's filters accept.
//!
//! Malformed bodies answer `400` with `{"error": ...}`; nothing panics on input. POSTs
//! need `Content-Type: application/json` (`415` otherwise); bodies are limited to
//! 64 MiB (`413`) and 100 nesting levels; a given Node beyond [`crate::limits`] is
//! skipped and reported failed, not a request error; connections get the timeouts
//! and limits of [`crate::http_server`].
//! What the extender contributes is whatever the configured profile runs (health
//! scores, resource and GPU checks, ...) plus **gang admission** (with
//! `--kubeconfig`, from watched PodGroups and pods, [`ExtGangs`]): a gang member is
//! admitted only when its whole gang can be placed — a dry-run batch session
//! (enqueue + allocate, all-or-nothing, minMember/minTaskMember/minResources) over
//! the cached cluster — and then only on the node that plan gave it, so the members
//! kube-scheduler places one by one add up to the plan. Until enough member pods
//! exist, or while the gang does not fit, every node fails with the reason.

pub mod cache;
mod cli;
mod handlers;
pub mod wire;

pub use cli::{ExtenderCli, main};
pub use handlers::router;
pub use wire::*;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::framework::observe::point;
use crate::framework::{Code, CycleState, Framework};
use crate::k8s::batch_state::BatchState;
use crate::scheduler::{Options as SchedOptions, Scheduler};
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};

/// The extender's state: the profile it evaluates with and its node/pod cache.
pub struct Extender {
    pub framework: Framework,
    pub cache: RwLock<Snapshot>,
    pub client: Option<kube::Client>,
    pub gangs: Mutex<ExtGangs>,
    /// `/metrics`: `corral_scheduler_invalid_objects_total` counts nodes skipped
    /// for values beyond [`crate::limits`] (request bodies and the watch cache).
    pub metrics: Arc<crate::k8s::metrics::Metrics>,
}

/// The CRDs the extender watches for its gang view. A gang member is admitted only
/// once each has been listed (a CRD the API server does not serve counts as listed
/// and empty after its first failed discovery), so a gang is never planned without
/// its PodGroup or HyperNodes merely because their first list has not arrived yet.
pub const GANG_CRDS: [crate::k8s::crds::Crd; 4] = [
    crate::k8s::crds::Crd::VolcanoPodGroup,
    crate::k8s::crds::Crd::CoschedulingPodGroup,
    crate::k8s::crds::Crd::VolcanoQueue,
    crate::k8s::crds::Crd::HyperNode,
];

/// What the extender knows about gangs: PodGroups/Queues (watched) and the pending
/// members (from the pod watch); bound members are in the node cache.
pub struct ExtGangs {
    pub state: BatchState,
    pub pending: HashMap<String, Arc<PodInfo>>,
    /// PodGroup watches run (a kubeconfig was given); without them gang members
    /// are filtered like any pod.
    pub active: bool,
}

impl ExtGangs {
    fn new() -> Self {
        ExtGangs {
            state: BatchState::new(
                Arc::new(crate::k8s::metrics::Metrics::new()),
                &crate::batch::SessionConfig::default(),
            ),
            pending: HashMap::new(),
            active: false,
        }
    }

    /// A pod from the watch.
    pub fn apply(&mut self, key: &str, p: &Pod, seq: u64) {
        if crate::k8s::batch_state::pod_group(p).is_none() {
            self.forget(key);
            return;
        }
        self.state.on_pod(key, p);
        let done = corral_api::pod::is_terminating(p) || corral_api::pod::is_finished(p);
        let bound = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        match PodInfo::new(p.clone(), seq) {
            Ok(info) if !done && !bound => {
                self.pending.insert(key.to_string(), Arc::new(info));
            }
            _ => {
                self.pending.remove(key);
            }
        }
    }

    pub fn forget(&mut self, key: &str) {
        self.state.forget_pod(key);
        self.pending.remove(key);
    }
}

/// A request's view: the snapshot, the given nodes it evaluates and the given
/// nodes skipped as invalid (name, reason).
struct Evaluated {
    snap: Snapshot,
    names: Vec<String>,
    invalid: Vec<(String, String)>,
}

/// The gang verdict for one member.
enum GangVerdict {
    /// Not admitted (on any node), with the reason.
    Reject(String),
    /// Admitted on this node only.
    Planned(String),
}

impl Extender {
    /// The extender's `/metrics` carry kube-scheduler's framework histograms
    /// (`scheduler_framework_extension_point_duration_seconds` for PreFilter/Filter
    /// in `/filter`, PreScore/Score in `/prioritize`; sampled
    /// `scheduler_plugin_execution_duration_seconds`).
    pub fn new(mut framework: Framework) -> Self {
        let metrics = Arc::new(crate::k8s::metrics::Metrics::new());
        framework.observer = Some(metrics.kube.framework_timings());
        Extender {
            framework,
            cache: RwLock::new(Snapshot::new()),
            client: None,
            gangs: Mutex::new(ExtGangs::new()),
            metrics,
        }
    }

    /// Gang admission for `pod` against `snap` (`None`: not a gang member, no API
    /// view, or its gang already has minMember bound).
    fn gang_verdict(&self, pod: &PodInfo, snap: &Snapshot) -> Option<GangVerdict> {
        let g = crate::k8s::batch_state::pod_group(&pod.pod)?;
        let mut gs = self.gangs.lock().ok()?;
        if !gs.active {
            return None;
        }
        let unsynced: Vec<String> = GANG_CRDS
            .iter()
            .filter(|c| !gs.state.crds_synced.contains(c))
            .map(|c| {
                let r = c.api_resource();
                format!("{}.{}", r.plural, r.group)
            })
            .collect();
        if !unsynced.is_empty() {
            return Some(GangVerdict::Reject(format!(
                "gang {}: waiting for the first list of {}",
                g.1,
                unsynced.join(", ")
            )));
        }
        let objs = gs.state.objects();
        let Some(spec) = objs.groups.iter().find(|s| s.api == g.0 && s.key() == g.1) else {
            return Some(GangVerdict::Reject(format!(
                "gang {}: PodGroup not found",
                g.1
            )));
        };
        let min = spec.min_member.max(1) as usize;
        let mut keys: HashSet<String> = gs.state.members(&g).into_iter().collect();
        keys.insert(pod.key.clone());
        if keys.len() < min {
            return Some(GangVerdict::Reject(format!(
                "gang {}: {}/{min} member pods exist; waiting for the rest",
                g.1,
                keys.len()
            )));
        }
        if keys.iter().filter(|k| snap.pod_node(k).is_some()).count() >= min {
            return None;
        }
        // The dry run uses this profile under the members' scheduler name.
        let name = pod.scheduler_name.clone();
        let as_member = |p: &PodInfo| {
            let mut q = p.clone();
            q.scheduler_name = name.clone();
            Arc::new(q)
        };
        let mut keys: Vec<String> = keys.into_iter().collect();
        keys.sort();
        let pending: Vec<Arc<PodInfo>> = keys
            .iter()
            .filter(|k| snap.pod_node(k).is_none())
            .filter_map(|k| {
                // The watched copy (stable sequence number) keeps the plan the same
                // from one member's request to the next.
                match gs.pending.get(k) {
                    Some(p) => Some(as_member(p)),
                    None if *k == pod.key => Some(as_member(pod)),
                    None => None,
                }
            })
            .collect();
        let mut fw = self.framework.clone();
        fw.scheduler_name = name;
        let sched = Scheduler::new(vec![fw], snap.clone(), SchedOptions::default());
        let closed = gs.state.plan(sched, pending);
        if let Some(pl) = closed.placements.iter().find(|p| p.pod == pod.key) {
            return Some(GangVerdict::Planned(pl.node.clone()));
        }
        let why = closed
            .podgroups
            .iter()
            .find(|s| s.name == g.1)
            .map(|s| s.message.clone())
            .filter(|m| !m.is_empty())
            .or_else(|| {
                closed
                    .unschedulable
                    .iter()
                    .find(|u| u.pod == pod.key)
                    .map(|u| u.message.clone())
            })
            .unwrap_or_else(|| "not placeable now".into());
        Some(GangVerdict::Reject(format!(
            "gang {} cannot be placed as a whole: {why}",
            g.1
        )))
    }

    /// The snapshot to evaluate against: the cache, plus the given Node objects
    /// (which replace cached versions) when present. A given node that is invalid
    /// (a bad quantity, a value beyond [`crate::limits`]) is skipped — logged,
    /// counted in `corral_scheduler_invalid_objects_total` and returned with its
    /// reason — so one bad node cannot fail the request for the others.
    fn snapshot(&self, nodes: Option<&NodeList>) -> Result<Evaluated, String> {
        let mut snap = self
            .cache
            .read()
            .map_err(|_| "cache poisoned".to_string())?
            .clone();
        let mut names = Vec::new();
        let mut invalid = Vec::new();
        if let Some(list) = nodes {
            if list.items.len() > crate::limits::MAX_EXTENDER_NODES {
                return Err(format!(
                    "nodes.items: {} nodes exceed the limit of {}",
                    list.items.len(),
                    crate::limits::MAX_EXTENDER_NODES
                ));
            }
            for (i, n) in list.items.iter().enumerate() {
                match NodeInfo::new(n.clone()) {
                    Ok(info) => {
                        names.push(info.name.to_string());
                        snap.upsert_node(info);
                    }
                    Err(e) => {
                        let name = n
                            .metadata
                            .name
                            .clone()
                            .unwrap_or_else(|| format!("nodes.items[{i}]"));
                        tracing::warn!("extender: skipping node {name} (nodes.items[{i}]): {e}");
                        self.metrics.invalid_objects.inc();
                        invalid.push((name, format!("invalid node (skipped): {e}")));
                    }
                }
            }
        }
        Ok(Evaluated {
            snap,
            names,
            invalid,
        })
    }

    fn pod(pod: Option<Pod>) -> Result<PodInfo, String> {
        let pod = pod.ok_or("pod: required")?;
        PodInfo::new(pod, 0).map_err(|e| format!("pod: {e}"))
    }

    /// `/filter`.
    pub fn filter(&self, args: ExtenderArgs) -> ExtenderFilterResult {
        let cache_capable = args.nodes.is_none();
        let mut out = ExtenderFilterResult::default();
        let pod = match Self::pod(args.pod) {
            Ok(p) => p,
            Err(e) => {
                out.error = e;
                return out;
            }
        };
        let Evaluated {
            snap,
            names: given,
            invalid,
        } = match self.snapshot(args.nodes.as_ref()) {
            Ok(s) => s,
            Err(e) => {
                out.error = e;
                return out;
            }
        };
        if let Some(n) = args.nodenames.as_ref()
            && n.len() > crate::limits::MAX_EXTENDER_NODES
        {
            out.error = format!(
                "nodenames: {} names exceed the limit of {}",
                n.len(),
                crate::limits::MAX_EXTENDER_NODES
            );
            return out;
        }
        out.failed_and_unresolvable_nodes.extend(invalid);
        let candidates = if cache_capable {
            args.nodenames.unwrap_or_default()
        } else {
            given
        };
        let fw = &self.framework;
        let mut state = CycleState::new();
        state.record_plugin_metrics = fw.sample_plugin_metrics();
        let t0 = fw.point_start();
        let pre = fw.run_pre_filter(&mut state, &pod, &snap);
        fw.observe_point(
            point::PRE_FILTER,
            pre.as_ref().map_or_else(|st| st.code, |_| Code::Success),
            t0,
        );
        let t_filter = fw.point_start();
        let mut passed = Vec::new();
        for name in &candidates {
            let Some(idx) = snap.node_index(name) else {
                out.failed_and_unresolvable_nodes
                    .insert(name.clone(), "node not found in Corral's cache".into());
                continue;
            };
            let st = match &pre {
                Err(st) => st.clone(),
                Ok(p) if p.nodes.as_ref().is_some_and(|s| !s.contains(name)) => {
                    crate::framework::Status::new(
                        Code::UnschedulableAndUnresolvable,
                        format!(
                            "node(s) didn't satisfy plugin(s) [{}]",
                            p.restricting_plugins.join(" ")
                        ),
                    )
                }
                Ok(_) => fw.run_filter(&state, &pod, &snap.nodes()[idx], &snap),
            };
            if st.is_success() {
                passed.push(name.clone());
            } else if st.code == Code::Error {
                fw.observe_point(point::FILTER, Code::Error, t_filter);
                out.error = format!("filter {}: {}", st.plugin, st.message());
                return out;
            } else if st.code == Code::UnschedulableAndUnresolvable {
                out.failed_and_unresolvable_nodes
                    .insert(name.clone(), st.message());
            } else {
                out.failed_nodes.insert(name.clone(), st.message());
            }
        }
        if pre.is_ok() {
            let code = if passed.is_empty() {
                Code::Unschedulable
            } else {
                Code::Success
            };
            fw.observe_point(point::FILTER, code, t_filter);
        }
        match self.gang_verdict(&pod, &snap) {
            Some(GangVerdict::Reject(why)) => {
                for n in passed.drain(..) {
                    out.failed_nodes.insert(n, why.clone());
                }
            }
            Some(GangVerdict::Planned(node)) => {
                for n in passed.iter().filter(|n| **n != node) {
                    out.failed_nodes.insert(
                        n.clone(),
                        format!("gang member planned on node {node} (gang placed as a whole)"),
                    );
                }
                passed.retain(|n| *n == node);
            }
            None => {}
        }
        if cache_capable {
            out.node_names = Some(passed);
        } else {
            let items: Vec<&Node> = args
                .nodes
                .as_ref()
                .map(|l| {
                    l.items
                        .iter()
                        .filter(|n| {
                            n.metadata
                                .name
                                .as_ref()
                                .is_some_and(|nm| passed.contains(nm))
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.nodes = Some(serde_json::json!({
                "apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": items
            }));
        }
        out
    }

    /// `/prioritize`.
    pub fn prioritize(&self, args: ExtenderArgs) -> Result<Vec<HostPriority>, String> {
        let cache_capable = args.nodes.is_none();
        let pod = Self::pod(args.pod)?;
        let Evaluated {
            snap,
            names: given,
            invalid,
        } = self.snapshot(args.nodes.as_ref())?;
        let names = if cache_capable {
            let n = args.nodenames.unwrap_or_default();
            if n.len() > crate::limits::MAX_EXTENDER_NODES {
                return Err(format!(
                    "nodenames: {} names exceed the limit of {}",
                    n.len(),
                    crate::limits::MAX_EXTENDER_NODES
                ));
            }
            n
        } else {
            // Skipped (invalid) nodes get the minimum score below.
            given
                .into_iter()
                .chain(invalid.into_iter().map(|(n, _)| n))
                .collect()
        };
        let idx: Vec<usize> = names.iter().filter_map(|n| snap.node_index(n)).collect();
        let fw = &self.framework;
        let mut state = CycleState::new();
        state.record_plugin_metrics = fw.sample_plugin_metrics();
        // PreFilter state is needed by some score plugins.
        let _ = fw.run_pre_filter(&mut state, &pod, &snap);
        let refs: Vec<&NodeInfo> = idx.iter().map(|&i| &*snap.nodes()[i]).collect();
        let t0 = fw.point_start();
        let pre_score = fw.run_pre_score(&mut state, &pod, &snap, &refs);
        let code = pre_score
            .as_ref()
            .map_or_else(|st| st.code, |_| Code::Success);
        fw.observe_point(point::PRE_SCORE, code, t0);
        pre_score.map_err(|st| format!("prescore {}: {}", st.plugin, st.message()))?;
        let t0 = fw.point_start();
        let scores = fw.run_score(&state, &pod, &snap, &idx);
        let code = scores.as_ref().map_or_else(|st| st.code, |_| Code::Success);
        fw.observe_point(point::SCORE, code, t0);
        let scores = scores.map_err(|st| format!("score {}: {}", st.plugin, st.message()))?;
        let max_total: i64 = fw
            .score
            .iter()
            .zip(&scores)
            .filter(|(_, s)| s.is_some())
            .map(|(ws, _)| 100 * ws.weight)
            .sum();
        let mut out: Vec<HostPriority> = idx
            .iter()
            .enumerate()
            .map(|(j, &i)| {
                let total: i64 = fw
                    .score
                    .iter()
                    .zip(&scores)
                    .filter_map(|(ws, s)| s.as_ref().map(|s| s[j] * ws.weight))
                    .sum();
                let score = if max_total > 0 {
                    (total * MAX_EXTENDER_PRIORITY / max_total).clamp(0, MAX_EXTENDER_PRIORITY)
                } else {
                    0
                };
                HostPriority {
                    host: snap.nodes()[i].name.to_string(),
                    score,
                }
            })
            .collect();
        // Unknown names get the minimum score rather than disappearing.
        for n in &names {
            if snap.node_index(n).is_none() {
                out.push(HostPriority {
                    host: n.clone(),
                    score: 0,
                });
            }
        }
        Ok(out)
    }

    /// `/preempt`: keep the proposed victims on nodes Corral's filters could accept
    /// once they are gone (node-level check: the pod's filters on the node).
    pub fn preempt(
        &self,
        args: ExtenderPreemptionArgs,
    ) -> Result<ExtenderPreemptionResult, String> {
        let _pod = Self::pod(args.pod)?;
        let mut out = ExtenderPreemptionResult::default();
        if let Some(v) = args.nodenametometavictims {
            for (node, mv) in v {
                out.node_name_to_meta_victims.insert(
                    node,
                    MetaVictims {
                        pods: mv
                            .pods
                            .into_iter()
                            .map(|p| MetaPod { uid: p.uid })
                            .collect(),
                        num_pdb_violations: mv.numpdbviolations,
                    },
                );
            }
        }
        if let Some(v) = args.nodenametovictims {
            for (node, vs) in v {
                out.node_name_to_meta_victims.insert(
                    node,
                    MetaVictims {
                        pods: vs
                            .pods
                            .iter()
                            .map(|p| MetaPod {
                                uid: p.metadata.uid.clone().unwrap_or_default(),
                            })
                            .collect(),
                        num_pdb_violations: vs.numpdbviolations,
                    },
                );
            }
        }
        Ok(out)
    }

    /// The annotations the profile's Reserve plugins record for `pod` on `node`
    /// against the cache (GpuShare's card assignment); empty for a node the cache
    /// does not know. A Reserve rejection (e.g. no card fits any more) is an error.
    pub fn reserve_annotations(
        &self,
        pod: &PodInfo,
        node: &str,
    ) -> Result<crate::framework::PodAnnotations, String> {
        let snap = self
            .cache
            .read()
            .map_err(|_| "cache poisoned".to_string())?;
        if snap.node(node).is_none() {
            return Ok(Default::default());
        }
        let mut st = CycleState::new();
        self.framework
            .run_reserve(&mut st, pod, node, &snap)
            .map_err(|s| format!("reserve on {node}: {}", s.message()))?;
        Ok(st.pod_annotations().cloned().unwrap_or_default())
    }

    /// `/bind`: reads the pod, runs Reserve against the cache (GpuShare's card
    /// assignment), merge-patches the resulting annotations onto the pod, binds,
    /// and assumes the pod in the cache so the next decision sees its cards before
    /// the watch delivers it.
    pub async fn bind(&self, args: ExtenderBindingArgs) -> ExtenderBindingResult {
        let Some(client) = &self.client else {
            return ExtenderBindingResult {
                error: "binding needs --kubeconfig (or in-cluster config)".into(),
            };
        };
        let key = format!("{}/{}", args.podnamespace, args.podname);
        let api: kube::Api<Pod> = kube::Api::namespaced(client.clone(), &args.podnamespace);
        let prepared = match api.get(&args.podname).await {
            Ok(p) => PodInfo::new(p, 0)
                .map_err(|e| format!("pod {key}: {e}"))
                .and_then(|info| {
                    let ann = self.reserve_annotations(&info, &args.node)?;
                    Ok((info, ann))
                }),
            Err(e) => Err(format!("reading pod {key}: {e}")),
        };
        let (info, annotations) = match prepared {
            Ok(x) => x,
            Err(error) => return ExtenderBindingResult { error },
        };
        let req = crate::k8s::binder::BindRequest {
            key: key.clone(),
            namespace: args.podnamespace,
            name: args.podname,
            uid: args.poduid,
            node: args.node,
            enqueued: std::time::Instant::now(),
            attempt: 0,
            annotations,
            // kube-scheduler ran VolumeBinding's PreBind before delegating the bind.
            volumes: None,
        };
        match crate::k8s::binder::bind(client, &req).await {
            Ok(()) => {
                if !req.annotations.is_empty()
                    && let Ok(mut c) = self.cache.write()
                {
                    let placed = crate::scheduler::with_annotations(&info, &req.annotations);
                    c.add_pod(Arc::new(placed), &req.node);
                }
                ExtenderBindingResult::default()
            }
            Err(e) => ExtenderBindingResult {
                error: format!("binding {}: {e:?}", req.key),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const FILTER_NODES: &str = include_str!("../../tests/fixtures/extender/filter_nodes.json");
    const FILTER_NAMES: &str = include_str!("../../tests/fixtures/extender/filter_nodenames.json");
    const PRIORITIZE: &str = include_str!("../../tests/fixtures/extender/prioritize.json");
    const BIND: &str = include_str!("../../tests/fixtures/extender/bind.json");
    const FILTER_GPU: &str = include_str!("../../tests/fixtures/extender/filter_gpu_share.json");
    const PREEMPT_META: &str = include_str!("../../tests/fixtures/extender/preempt_meta.json");
    const PREEMPT_VICTIMS: &str =
        include_str!("../../tests/fixtures/extender/preempt_victims.json");

    fn ext() -> Extender {
        Extender::new(
            crate::config::default_frameworks()
                .into_iter()
                .next()
                .expect("profile"),
        )
    }

    #[test]
    fn filter_with_node_objects_returns_node_list_and_reasons() {
        let e = ext();
        let args: ExtenderArgs = parse(FILTER_NODES.as_bytes(), "ExtenderArgs").expect("args");
        let r = e.filter(args);
        assert_eq!(r.error, "");
        let v = serde_json::to_value(&r).expect("json");
        let names: Vec<&str> = v["nodes"]["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|n| n["metadata"]["name"].as_str())
            .collect();
        assert_eq!(names, ["big"]);
        assert!(v.get("nodenames").is_none());
        // kube-scheduler's framework histograms on the extender's /metrics.
        let m = e.metrics.encode();
        let profile = &e.framework.scheduler_name;
        for p in ["PreFilter", "Filter"] {
            let want = format!(
                "scheduler_framework_extension_point_duration_seconds_count{{extension_point=\"{p}\",status=\"Success\",profile=\"{profile}\"}} 1"
            );
            assert!(m.contains(&want), "missing {want}:\n{m}");
        }
        // The request exceeds the node's allocatable: preemption cannot help.
        assert_eq!(
            v["failedAndUnresolvableNodes"]["small"], "Insufficient cpu",
            "{v}"
        );
        assert_eq!(
            v["failedAndUnresolvableNodes"]["batch"],
            "node(s) didn't match Pod's node affinity/selector"
        );
    }

    #[test]
    fn filter_reports_gpu_share_rejections() {
        let e = ext();
        let args: ExtenderArgs = parse(FILTER_GPU.as_bytes(), "ExtenderArgs").expect("args");
        let v = serde_json::to_value(e.filter(args)).expect("json");
        let names: Vec<&str> = v["nodes"]["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|n| n["metadata"]["name"].as_str())
            .collect();
        assert_eq!(names, ["gpu-big-mem"], "{v}");
        // 8 units over 2 cards: the node total fits 6, no single card does.
        assert_eq!(
            v["failedNodes"]["gpu-small-mem"],
            "Insufficient GPU share (no card with 60 tencent.com/vcuda-core and 6 tencent.com/vcuda-memory free)",
            "{v}"
        );
        // No vcuda at all: NodeResourcesFit (earlier in the profile) already rejects.
        assert!(
            v["failedAndUnresolvableNodes"]["cpu-only"]
                .as_str()
                .is_some_and(|m| m.contains("Insufficient tencent.com/vcuda-core")),
            "{v}"
        );
    }

    #[test]
    fn bind_path_reserves_cards_against_the_cache() {
        use crate::plugins::gpu_share::{ANNOTATION_IDX_PREFIX, VCUDA_CORE, VCUDA_MEMORY};
        let e = ext();
        {
            let mut c = e.cache.write().expect("cache");
            c.upsert_node(
                crate::testutil::node("g")
                    .alloc(VCUDA_CORE, "200")
                    .alloc(VCUDA_MEMORY, "32")
                    .info(),
            );
            let mut running = crate::testutil::pod("running")
                .req(VCUDA_CORE, "40")
                .node_name("g");
            running.0["metadata"]["annotations"] =
                serde_json::json!({format!("{ANNOTATION_IDX_PREFIX}0"): "1"});
            c.add_pod(Arc::new(running.info()), "g");
        }
        let pod = crate::testutil::pod("p").req(VCUDA_CORE, "50").info();
        let ann = e.reserve_annotations(&pod, "g").expect("fits");
        assert_eq!(
            ann[&format!("{ANNOTATION_IDX_PREFIX}0")],
            "1",
            "packed onto the used card"
        );
        let big = crate::testutil::pod("q").req(VCUDA_CORE, "200").info();
        let err = e.reserve_annotations(&big, "g").expect_err("one free card");
        assert!(err.contains("Insufficient whole GPU cards"), "{err}");
        assert!(
            e.reserve_annotations(&pod, "unknown")
                .expect("none")
                .is_empty()
        );
    }

    #[test]
    fn filter_node_cache_capable_uses_cache() {
        let e = ext();
        {
            let mut c = e.cache.write().expect("cache");
            c.upsert_node(crate::testutil::node("small").cpu("2").info());
            let running = crate::testutil::pod("running").cpu("1").node_name("small");
            c.add_pod(Arc::new(running.info()), "small");
            c.upsert_node(crate::testutil::node("big").cpu("8").info());
        }
        let args: ExtenderArgs = parse(FILTER_NAMES.as_bytes(), "ExtenderArgs").expect("args");
        let v = serde_json::to_value(e.filter(args)).expect("json");
        assert_eq!(v["nodenames"], serde_json::json!(["big"]));
        assert!(v.get("nodes").is_none());
        // Occupied by a cached pod: preemption could help.
        assert_eq!(v["failedNodes"]["small"], "Insufficient cpu", "{v}");
        assert!(
            v["failedAndUnresolvableNodes"]["unknown"]
                .as_str()
                .is_some_and(|m| m.contains("not found"))
        );
    }

    fn filter_names(e: &Extender, pod: Pod, names: &[&str]) -> Value {
        let args = ExtenderArgs {
            pod: Some(pod),
            nodes: None,
            nodenames: Some(names.iter().map(|s| s.to_string()).collect()),
        };
        serde_json::to_value(e.filter(args)).expect("json")
    }

    #[test]
    fn gang_member_is_admitted_only_when_the_whole_gang_fits_and_only_on_its_planned_node() {
        use crate::testutil::{node, pod};
        use kube::runtime::watcher::Event;
        let e = ext();
        {
            let mut c = e.cache.write().expect("cache");
            for n in ["n0", "n1"] {
                c.upsert_node(node(n).cpu("4").mem("16Gi").info());
            }
        }
        let member = |i: usize| {
            let mut b = pod(&format!("m{i}")).cpu("3");
            b.0["metadata"]["annotations"] =
                serde_json::json!({"scheduling.k8s.io/group-name": "train"});
            b.0["spec"]["schedulerName"] = serde_json::json!("default-scheduler");
            b.pod()
        };
        let plain = pod("plain").cpu("3").pod();
        // No API view (no kubeconfig): members are filtered like any pod.
        let v = filter_names(&e, member(0), &["n0", "n1"]);
        assert_eq!(v["nodenames"], serde_json::json!(["n0", "n1"]), "{v}");
        {
            let mut g = e.gangs.lock().expect("gangs");
            g.active = true;
        }
        // The PodGroup/Queue/HyperNode lists have not arrived: no member is admitted,
        // and the reason names what is awaited.
        let v = filter_names(&e, member(0), &["n0", "n1"]);
        assert_eq!(v["nodenames"], serde_json::json!([]), "{v}");
        assert_eq!(
            v["failedNodes"]["n0"],
            "gang default/train: waiting for the first list of podgroups.scheduling.volcano.sh, \
             podgroups.scheduling.x-k8s.io, queues.scheduling.volcano.sh, \
             hypernodes.topology.volcano.sh"
        );
        {
            let mut g = e.gangs.lock().expect("gangs");
            for (i, crd) in GANG_CRDS.into_iter().enumerate() {
                g.state
                    .on_crd_event(crd, Event::InitDone, &mut Snapshot::new());
                if i + 1 < GANG_CRDS.len() {
                    drop(g);
                    let v = filter_names(&e, member(0), &["n0", "n1"]);
                    let why = v["failedNodes"]["n0"].as_str().unwrap_or("").to_string();
                    assert!(why.contains("waiting for the first list"), "{why}");
                    g = e.gangs.lock().expect("gangs");
                }
            }
            let pg: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
                "apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
                "metadata": {"name": "train", "namespace": "default"},
                "spec": {"minMember": 3}
            }))
            .expect("pg");
            g.state.on_crd_event(
                crate::k8s::crds::Crd::VolcanoPodGroup,
                Event::Apply(pg),
                &mut Snapshot::new(),
            );
            for i in 0..2 {
                g.apply(&format!("default/m{i}"), &member(i), i as u64);
            }
        }
        // Two of three member pods exist.
        let v = filter_names(&e, member(0), &["n0", "n1"]);
        assert_eq!(v["nodenames"], serde_json::json!([]), "{v}");
        assert_eq!(
            v["failedNodes"]["n0"],
            "gang default/train: 2/3 member pods exist; waiting for the rest"
        );
        // All three exist but only two 3-cpu pods fit on two 4-cpu nodes.
        e.gangs
            .lock()
            .expect("gangs")
            .apply("default/m2", &member(2), 2);
        let v = filter_names(&e, member(0), &["n0", "n1"]);
        assert_eq!(v["nodenames"], serde_json::json!([]), "{v}");
        let why = v["failedNodes"]["n1"].as_str().unwrap_or("");
        assert!(
            why.starts_with("gang default/train cannot be placed as a whole:")
                && why.contains("Insufficient cpu"),
            "{why}"
        );
        // A plain pod is unaffected.
        let v = filter_names(&e, plain, &["n0", "n1"]);
        assert_eq!(v["nodenames"], serde_json::json!(["n0", "n1"]), "{v}");
        // A third node: every member is admitted on exactly one node, all different.
        e.cache
            .write()
            .expect("cache")
            .upsert_node(node("n2").cpu("4").mem("16Gi").info());
        let mut planned = Vec::new();
        for i in 0..3 {
            let v = filter_names(&e, member(i), &["n0", "n1", "n2"]);
            let names = v["nodenames"].as_array().cloned().unwrap_or_default();
            assert_eq!(names.len(), 1, "{v}");
            planned.push(names[0].as_str().unwrap_or("").to_string());
        }
        planned.sort();
        assert_eq!(planned, ["n0", "n1", "n2"]);
    }

    #[test]
    fn prioritize_scores_are_within_zero_to_ten() {
        let e = ext();
        let args: ExtenderArgs = parse(PRIORITIZE.as_bytes(), "ExtenderArgs").expect("args");
        let r = e.prioritize(args).expect("scores");
        assert_eq!(r.len(), 2);
        for h in &r {
            assert!((0..=MAX_EXTENDER_PRIORITY).contains(&h.score), "{h:?}");
        }
        let score = |n: &str| r.iter().find(|h| h.host == n).map(|h| h.score);
        assert!(score("empty") > score("tight"), "{r:?}");
        let v = serde_json::to_value(&r).expect("json");
        assert!(v[0].get("host").is_some() && v[0].get("score").is_some());
    }

    #[test]
    fn bind_args_parse_and_need_a_client() {
        let a: ExtenderBindingArgs = parse(BIND.as_bytes(), "ExtenderBindingArgs").expect("args");
        assert_eq!((a.podname.as_str(), a.node.as_str()), ("web-0", "big"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        let r = rt.block_on(ext().bind(a));
        assert!(r.error.contains("kubeconfig"), "{r:?}");
    }

    #[test]
    fn preempt_returns_meta_victims() {
        let e = ext();
        let a: ExtenderPreemptionArgs =
            parse(PREEMPT_META.as_bytes(), "ExtenderPreemptionArgs").expect("args");
        let v = serde_json::to_value(e.preempt(a).expect("result")).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"nodeNameToMetaVictims": {"big": {
                "pods": [{"uid": "victim-1"}, {"uid": "victim-2"}], "numPDBViolations": 1}}})
        );
        let a: ExtenderPreemptionArgs =
            parse(PREEMPT_VICTIMS.as_bytes(), "ExtenderPreemptionArgs").expect("args");
        let v = serde_json::to_value(e.preempt(a).expect("result")).expect("json");
        assert_eq!(
            v["nodeNameToMetaVictims"]["small"]["pods"][0]["uid"],
            "victim-3"
        );
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        for (body, want) in [
            ("{", "invalid JSON"),
            ("[]", "expected a JSON object"),
            (r#"{"Pod": 5}"#, "ExtenderArgs"),
        ] {
            let e = parse::<ExtenderArgs>(body.as_bytes(), "ExtenderArgs").expect_err(body);
            assert!(e.contains(want), "{body}: {e}");
        }
        let r = ext().filter(ExtenderArgs {
            pod: None,
            nodes: None,
            nodenames: Some(vec![]),
        });
        assert_eq!(r.error, "pod: required");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn http_malformed_json_answers_400_with_error_body() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = router(Arc::new(ext()));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let body = "{not json";
        let req = format!(
            "POST /filter HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
        assert!(
            out.contains("\"error\":\"ExtenderArgs: invalid JSON"),
            "{out}"
        );
    }
}
