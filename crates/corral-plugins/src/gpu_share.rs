//! GpuShare: shared GPU cards (`tencent.com/vcuda-core` / `tencent.com/vcuda-memory`),
//! compatible with Tencent gpu-manager's device plugin.
//!
//! Resource model (gpu-manager's): a node advertises `tencent.com/vcuda-core` =
//! 100 × cards × `coreOvercommit` and `tencent.com/vcuda-memory` = its GPU memory in
//! 256 MiB units. The card count is the node label `nvidia.com/gpu.count` (set by
//! NVIDIA GPU feature discovery) when present, otherwise `vcuda-core / (100 ×
//! coreOvercommit)`; each card gets `vcuda-memory / cards` of memory and
//! `100 × coreOvercommit` of core for sharing.
//!
//! Per container of `spec.containers` (init containers take no cards, as in
//! gpu-manager), with `core` = its `vcuda-core` request (limits when no request):
//! - `0 < core < 100` (or memory only): a share of ONE card; the card must have `core`
//!   core and the container's `vcuda-memory` free, and fewer than `maxPodsPerCard`
//!   sharers when set. The most-used card that fits is chosen (fragments are packed
//!   onto already-used cards first).
//! - `core` a multiple of 100: `core / 100` completely unused cards, exclusively.
//! - anything else (e.g. 150): the pod is rejected (UnschedulableAndUnresolvable).
//!
//! Per-card usage comes from the pods on the node: their assignment annotations
//! `tencent.com/predicate-gpu-idx-<container index>` (comma-separated card
//! indices, the annotation gpu-manager's device plugin reads). A pod with vcuda
//! requests but no (valid) annotation — bound by someone else, or a gang member
//! placed by a batch session — is accounted pessimistically: a share is charged to
//! EVERY card (it may be on any of them), whole cards are taken from the free cards.
//! Usage is recomputed from the node's pods on each call (no cache to invalidate);
//! only nodes that advertise vcuda-core and pods that request it pay for it.
//!
//! Reserve recomputes the assignment against the commit-time snapshot and records it
//! as pod annotations in the cycle state ([`CycleState::set_pod_annotation`]): the
//! batch committer puts them on the PodInfo it adds to the snapshot (so later pods of
//! the same batch see the cards taken) and `run` / the extender's `/bind` write them
//! to the API pod before the Binding: `tencent.com/predicate-gpu-idx-<i>`,
//! `tencent.com/predicate-node`, `tencent.com/gpu-assigned: "false"` (the device
//! plugin flips it to "true" on allocation) and, at bind time,
//! `tencent.com/predicate-time` ([`stamp_predicate_time`]).
//!
//! Score (node-local, 0..=100, no normalization): binpack — the mean of the chosen
//! cards' core fill after placement and the node's overall core fill after placement,
//! so a node whose chosen card is already partly used wins over a fresh one.
//!
//! The same card-level fit under HAMi's and Volcano vGPU's resource names
//! (`nvidia.com/gpumem`/`gpucores`, `volcano.sh/vgpu-*`) is in [`vgpu`]: cards from the
//! device plugin's node registration annotation, N requested cards on N distinct
//! cards, the assignment written as the annotations those device plugins read.

use std::sync::Arc;

use serde::Deserialize;

use crate::framework::{
    Code, CycleState, FilterPlugin, MAX_NODE_SCORE, Plugin, PreFilterPlugin, PreFilterResult,
    PreScorePlugin, ReservePlugin, ScorePlugin, Status,
};
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};

pub const NAME: &str = "GpuShare";
pub use corral_api::keys::{
    ANNOTATION_ASSIGNED, ANNOTATION_IDX_PREFIX, ANNOTATION_NODE, ANNOTATION_TIME, CARD_CORE,
    LABEL_GPU_COUNT, VCUDA_CORE, VCUDA_MEMORY,
};

#[path = "gpu_share_vgpu.rs"]
pub mod vgpu;

use vgpu::{Family, VCards, VgpuRequest, pod_vgpu_requests};

const PRE_FILTER_KEY: &str = "PreFilterGpuShare";

/// `pluginConfig` args.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GpuShareArgs {
    /// Core overcommit of shared cards, 1..=8 (1 = none): shares on one card may sum
    /// to `100 × coreOvercommit`. Memory is never overcommitted.
    #[serde(default = "one")]
    pub core_overcommit: i64,
    /// Most pods sharing one card (0 = unlimited).
    #[serde(default)]
    pub max_pods_per_card: i64,
    /// The request families accounted on cards: `vcuda` (tencent), `hami`, `volcano`
    /// (Volcano vGPU); default all. A family left out is a plain extended resource
    /// to this plugin (the `volcano` profile leaves `volcano` out unless
    /// `deviceshare.VGPUEnable` is true, as Volcano does).
    #[serde(default = "all_families")]
    pub families: Vec<String>,
}

fn one() -> i64 {
    1
}

/// Every family name [`GpuShareArgs::families`] accepts.
pub const FAMILIES: &[&str] = &["vcuda", "hami", "volcano"];

fn all_families() -> Vec<String> {
    FAMILIES.iter().map(|f| f.to_string()).collect()
}

impl Default for GpuShareArgs {
    fn default() -> Self {
        GpuShareArgs {
            core_overcommit: 1,
            max_pods_per_card: 0,
            families: all_families(),
        }
    }
}

impl GpuShareArgs {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=8).contains(&self.core_overcommit) {
            return Err(format!(
                "GpuShareArgs.coreOvercommit: {} is invalid, must be in the range [1, 8]",
                self.core_overcommit
            ));
        }
        if !(0..=1000).contains(&self.max_pods_per_card) {
            return Err(format!(
                "GpuShareArgs.maxPodsPerCard: {} is invalid, must be in the range [0, 1000] (0 = unlimited)",
                self.max_pods_per_card
            ));
        }
        for (i, f) in self.families.iter().enumerate() {
            if !FAMILIES.contains(&f.as_str()) {
                return Err(format!(
                    "GpuShareArgs.families[{i}]: unknown family {f:?} (known: {})",
                    FAMILIES.join(", ")
                ));
            }
        }
        Ok(())
    }

    fn has(&self, family: &str) -> bool {
        self.families.iter().any(|f| f == family)
    }
}

pub fn factory(args: Option<&serde_json::Value>) -> Result<Arc<dyn Plugin>, String> {
    let mut v = args.cloned();
    if let Some(serde_json::Value::Object(m)) = v.as_mut() {
        m.remove("apiVersion");
        m.remove("kind");
    }
    let args: GpuShareArgs = match &v {
        None | Some(serde_json::Value::Null) => GpuShareArgs::default(),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| format!("GpuShareArgs: {e}"))?,
    };
    args.validate()?;
    Ok(Arc::new(GpuShare { args }))
}

#[derive(Debug, Clone, Default)]
pub struct GpuShare {
    pub args: GpuShareArgs,
}

/// One container's GPU request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuRequest {
    /// Index in `spec.containers`.
    pub container: usize,
    pub core: i64,
    pub memory: i64,
}

impl GpuRequest {
    fn whole_cards(&self) -> Option<usize> {
        (self.core >= CARD_CORE && self.core % CARD_CORE == 0)
            .then_some((self.core / CARD_CORE) as usize)
    }
}

/// The pod's GPU requests per container (requests, or limits when a container has
/// no request, as the API server defaults them); empty when it requests none. An invalid
/// core value (not < 100 and not a multiple of 100) or an unparsable quantity is an
/// error naming the container.
pub fn pod_gpu_requests(pod: &PodInfo) -> Result<Vec<GpuRequest>, String> {
    let Some(spec) = pod.spec() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (i, c) in spec.containers.iter().enumerate() {
        let Some(res) = c.resources.as_ref() else {
            continue;
        };
        let has = |m: Option<&std::collections::BTreeMap<String, _>>| {
            m.is_some_and(|m| m.contains_key(VCUDA_CORE) || m.contains_key(VCUDA_MEMORY))
        };
        if !has(res.requests.as_ref()) && !has(res.limits.as_ref()) {
            continue;
        }
        let get = |name: &str| -> Result<i64, String> {
            let res = Some(res);
            let q = res
                .and_then(|r| r.requests.as_ref())
                .and_then(|m| m.get(name))
                .or_else(|| {
                    res.and_then(|r| r.limits.as_ref())
                        .and_then(|m| m.get(name))
                });
            match q {
                None => Ok(0),
                Some(q) => crate::quantity::parse_resource(name, &q.0)
                    .map_err(|e| format!("containers[{i}] ({}): {name}: {e}", c.name)),
            }
        };
        let core = get(VCUDA_CORE)?;
        let memory = get(VCUDA_MEMORY)?;
        if core < 0 || memory < 0 {
            return Err(format!(
                "containers[{i}] ({}): negative {VCUDA_CORE}/{VCUDA_MEMORY}",
                c.name
            ));
        }
        if core == 0 && memory == 0 {
            continue;
        }
        if core > corral_core::limits::MAX_VCUDA_CORE_PER_NODE
            || memory > corral_core::limits::MAX_VCUDA_MEMORY
        {
            return Err(format!(
                "containers[{i}] ({}): {VCUDA_CORE} {core} / {VCUDA_MEMORY} {memory} exceeds the limits ({} / {})",
                c.name,
                corral_core::limits::MAX_VCUDA_CORE_PER_NODE,
                corral_core::limits::MAX_VCUDA_MEMORY
            ));
        }
        if core > CARD_CORE && core % CARD_CORE != 0 {
            return Err(format!(
                "containers[{i}] ({}): {VCUDA_CORE} {core} is invalid: a share of one card must be below 100, whole cards a multiple of 100",
                c.name
            ));
        }
        out.push(GpuRequest {
            container: i,
            core,
            memory,
        });
    }
    Ok(out)
}

/// Per-card usage of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cards {
    /// Core capacity of one card for sharing (100 × coreOvercommit).
    pub core_cap: i64,
    /// Memory of one card (256 MiB units).
    pub mem_cap: i64,
    pub used_core: Vec<i64>,
    pub used_mem: Vec<i64>,
    /// Pods sharing each card.
    pub sharers: Vec<i64>,
    /// Taken whole by one container.
    pub exclusive: Vec<bool>,
}

/// Parses `"0,2"` into card indices, all `< n`.
fn parse_idx(v: &str, n: usize) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for s in v.split(',') {
        let i: usize = s.trim().parse().ok()?;
        if i >= n {
            return None;
        }
        out.push(i);
    }
    (!out.is_empty()).then_some(out)
}

impl Cards {
    /// The node's cards with the usage of the pods on it; `None` when the node
    /// advertises no vcuda-core.
    pub fn of(node: &NodeInfo, overcommit: i64) -> Option<Cards> {
        let core_total = node.allocatable.scalar_value(VCUDA_CORE);
        if core_total <= 0 {
            return None;
        }
        let n = node
            .labels
            .get(LABEL_GPU_COUNT)
            .and_then(|v| v.parse::<i64>().ok())
            .filter(|v| *v > 0)
            .unwrap_or(core_total / (CARD_CORE * overcommit));
        // NodeInfo::new rejects nodes beyond the limit; a NodeInfo built otherwise
        // gets no card model rather than an allocation sized by the label.
        if n <= 0 || n > corral_core::limits::MAX_GPU_CARDS_PER_NODE {
            return None;
        }
        let n_us = n as usize;
        let mut c = Cards {
            core_cap: CARD_CORE * overcommit,
            mem_cap: node.allocatable.scalar_value(VCUDA_MEMORY) / n,
            used_core: vec![0; n_us],
            used_mem: vec![0; n_us],
            sharers: vec![0; n_us],
            exclusive: vec![false; n_us],
        };
        let mut unknown_whole = 0usize;
        for p in &node.pods {
            // Invalid requests were rejected at scheduling; someone else's pod with
            // an invalid value takes nothing here (the kubelet refuses it).
            let Ok(reqs) = pod_gpu_requests(p) else {
                continue;
            };
            let ann = p.pod.metadata.annotations.as_ref();
            for r in reqs {
                let idx = ann
                    .and_then(|a| a.get(&format!("{ANNOTATION_IDX_PREFIX}{}", r.container)))
                    .and_then(|v| parse_idx(v, n_us));
                match (r.whole_cards(), idx) {
                    (Some(_), Some(idx)) => {
                        for i in idx {
                            c.take_whole(i);
                        }
                    }
                    (Some(k), None) => unknown_whole += k,
                    (None, Some(idx)) => c.charge(idx[0], r),
                    (None, None) => {
                        for i in 0..n_us {
                            c.charge(i, r);
                        }
                    }
                }
            }
        }
        // Unassigned whole-card pods: take free cards from the top.
        for i in (0..n_us).rev() {
            if unknown_whole == 0 {
                break;
            }
            if c.is_free(i) {
                c.take_whole(i);
                unknown_whole -= 1;
            }
        }
        Some(c)
    }

    fn take_whole(&mut self, i: usize) {
        self.exclusive[i] = true;
        self.used_core[i] = self.core_cap;
        self.used_mem[i] = self.mem_cap;
    }

    fn charge(&mut self, i: usize, r: GpuRequest) {
        self.used_core[i] += r.core;
        self.used_mem[i] += r.memory;
        self.sharers[i] += 1;
    }

    fn is_free(&self, i: usize) -> bool {
        !self.exclusive[i]
            && self.used_core[i] == 0
            && self.used_mem[i] == 0
            && self.sharers[i] == 0
    }

    pub fn len(&self) -> usize {
        self.used_core.len()
    }

    pub fn is_empty(&self) -> bool {
        self.used_core.is_empty()
    }

    /// Chooses cards for every request (in order) and applies them; returns the card
    /// indices per request, or the reason nothing fits.
    pub fn assign(
        &mut self,
        reqs: &[GpuRequest],
        max_pods_per_card: i64,
    ) -> Result<Vec<Vec<usize>>, String> {
        let mut out = Vec::with_capacity(reqs.len());
        for r in reqs {
            match r.whole_cards() {
                Some(k) => {
                    let free: Vec<usize> = (0..self.len()).filter(|&i| self.is_free(i)).collect();
                    if free.len() < k {
                        return Err(format!(
                            "Insufficient whole GPU cards ({k} needed, {} free)",
                            free.len()
                        ));
                    }
                    if r.memory > self.mem_cap * k as i64 {
                        return Err(format!(
                            "Insufficient {VCUDA_MEMORY} ({} requested, {} on {k} card(s))",
                            r.memory,
                            self.mem_cap * k as i64
                        ));
                    }
                    let chosen: Vec<usize> = free[..k].to_vec();
                    for &i in &chosen {
                        self.take_whole(i);
                    }
                    out.push(chosen);
                }
                None => {
                    let best = (0..self.len())
                        .filter(|&i| {
                            !self.exclusive[i]
                                && self.used_core[i] + r.core <= self.core_cap
                                && self.used_mem[i] + r.memory <= self.mem_cap
                                && (max_pods_per_card == 0 || self.sharers[i] < max_pods_per_card)
                        })
                        // Most used first (pack fragments), lowest index on ties.
                        .max_by_key(|&i| {
                            (self.used_core[i], self.used_mem[i], std::cmp::Reverse(i))
                        });
                    let Some(i) = best else {
                        return Err(format!(
                            "Insufficient GPU share (no card with {} {VCUDA_CORE} and {} {VCUDA_MEMORY} free)",
                            r.core, r.memory
                        ));
                    };
                    self.charge(i, *r);
                    out.push(vec![i]);
                }
            }
        }
        Ok(out)
    }

    /// Binpack score after `assign` chose `chosen`: mean of the chosen cards' core
    /// fill and the node's core fill, 0..=100.
    fn score(&self, chosen: &[Vec<usize>]) -> i64 {
        let mut cards: Vec<usize> = chosen.iter().flatten().copied().collect();
        cards.sort_unstable();
        cards.dedup();
        if cards.is_empty() || self.core_cap == 0 {
            return 0;
        }
        let fill = |i: usize| self.used_core[i].min(self.core_cap);
        let card_fill = cards.iter().map(|&i| fill(i)).sum::<i64>() * MAX_NODE_SCORE
            / (self.core_cap * cards.len() as i64);
        let node_fill = (0..self.len()).map(fill).sum::<i64>() * MAX_NODE_SCORE
            / (self.core_cap * self.len() as i64);
        (card_fill + node_fill) / 2
    }
}

/// Adds `tencent.com/predicate-time` (now, Unix nanoseconds) when the annotations
/// carry a GPU assignment, and `hami.io/bind-time` / `volcano.sh/bind-time` (Unix
/// seconds) when they carry a HAMi / Volcano vGPU assignment; called by the binders
/// right before they write them.
pub fn stamp_predicate_time(ann: &mut std::collections::BTreeMap<String, String>) {
    for (node, time) in [
        (
            corral_api::keys::HAMI_VGPU_NODE,
            corral_api::keys::HAMI_BIND_TIME,
        ),
        (
            corral_api::keys::VOLCANO_VGPU_NODE,
            corral_api::keys::VOLCANO_BIND_TIME,
        ),
    ] {
        if ann.contains_key(node) {
            let s = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            ann.insert(time.to_string(), s.to_string());
        }
    }
    if ann.contains_key(ANNOTATION_ASSIGNED) {
        let ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        ann.insert(ANNOTATION_TIME.to_string(), ns.to_string());
    }
}

/// A pod's requests: tencent vcuda and HAMi / Volcano vGPU.
#[derive(Debug, Default)]
pub struct PodReqs {
    pub vcuda: Vec<GpuRequest>,
    pub vgpu: Vec<VgpuRequest>,
}

impl PodReqs {
    pub fn of(pod: &PodInfo) -> Result<PodReqs, String> {
        Ok(PodReqs {
            vcuda: pod_gpu_requests(pod)?,
            vgpu: pod_vgpu_requests(pod)?,
        })
    }

    /// The requests of the families `args` accounts.
    pub fn of_families(pod: &PodInfo, args: &GpuShareArgs) -> Result<PodReqs, String> {
        let vcuda = if args.has("vcuda") {
            pod_gpu_requests(pod)?
        } else {
            Vec::new()
        };
        let (hami, volcano) = (args.has("hami"), args.has("volcano"));
        let vgpu = if hami || volcano {
            let mut v = pod_vgpu_requests(pod)?;
            v.retain(|r| match r.family {
                Family::Hami => hami,
                Family::Volcano => volcano,
            });
            v
        } else {
            Vec::new()
        };
        Ok(PodReqs { vcuda, vgpu })
    }

    pub fn is_empty(&self) -> bool {
        self.vcuda.is_empty() && self.vgpu.is_empty()
    }
}

type PodState = Arc<PodReqs>;

/// The chosen cards of one node: vcuda, then one entry per vGPU family requested.
struct Placement {
    vcuda: Option<(Cards, Vec<Vec<usize>>)>,
    vgpu: Vec<(VCards, Vec<Vec<usize>>)>,
}

impl GpuShare {
    fn requests(&self, state: &CycleState, pod: &PodInfo) -> Result<PodState, String> {
        match state.read::<PodState>(PRE_FILTER_KEY) {
            Some(s) => Ok(s.clone()),
            None => PodReqs::of_families(pod, &self.args).map(Arc::new),
        }
    }

    fn place(&self, reqs: &PodReqs, pod: &PodInfo, node: &NodeInfo) -> Result<Placement, Status> {
        let vcuda = if reqs.vcuda.is_empty() {
            None
        } else {
            Some(self.place_vcuda(&reqs.vcuda, node)?)
        };
        let mut vgpu = Vec::new();
        for fam in Family::ALL {
            let mut mine = reqs.vgpu.iter().filter(|r| r.family == fam).peekable();
            if mine.peek().is_none() {
                continue;
            }
            let registered = node
                .node
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(fam.register()));
            if !registered && mine.all(|r| r.implicit) {
                // Plain `nvidia.com/gpu` on a node HAMi did not register.
                continue;
            }
            let mut cards = VCards::of(node, fam).map_err(Status::unresolvable)?;
            let chosen = cards
                .assign(&reqs.vgpu, pod.pod.metadata.annotations.as_ref())
                .map_err(Status::unschedulable)?;
            vgpu.push((cards, chosen));
        }
        Ok(Placement { vcuda, vgpu })
    }

    fn place_vcuda(
        &self,
        reqs: &[GpuRequest],
        node: &NodeInfo,
    ) -> Result<(Cards, Vec<Vec<usize>>), Status> {
        let Some(mut cards) = Cards::of(node, self.args.core_overcommit) else {
            return Err(Status::unresolvable(format!(
                "node(s) had no shared GPU ({VCUDA_CORE})"
            )));
        };
        match cards.assign(reqs, self.args.max_pods_per_card) {
            Ok(chosen) => Ok((cards, chosen)),
            Err(m) => Err(Status::unschedulable(m)),
        }
    }
}

crate::impl_plugin!(
    GpuShare, NAME, pre_filter, filter, pre_score, score, reserve
);

impl PreFilterPlugin for GpuShare {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &Snapshot,
    ) -> (Option<PreFilterResult>, Status) {
        match PodReqs::of_families(pod, &self.args) {
            Ok(r) if r.is_empty() => {
                // Recorded although the plugin skips, so Reserve/Unreserve (run per
                // pod at commit) read it instead of parsing the containers again.
                state.write(PRE_FILTER_KEY, Arc::new(r));
                (None, Status::new(Code::Skip, ""))
            }
            Ok(r) => {
                state.write(PRE_FILTER_KEY, Arc::new(r));
                (None, Status::success())
            }
            Err(e) => (None, Status::unresolvable(e)),
        }
    }

    /// Skips by the pod alone (see `PreFilterPlugin::skip_depends_on_pods`).
    fn skip_depends_on_pods(&self) -> bool {
        false
    }
}

impl FilterPlugin for GpuShare {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> Status {
        let reqs = match self.requests(state, pod) {
            Ok(r) => r,
            Err(e) => return Status::unresolvable(e),
        };
        if reqs.is_empty() {
            return Status::success();
        }
        match self.place(&reqs, pod, node) {
            Ok(_) => Status::success(),
            Err(st) => st,
        }
    }
}

impl PreScorePlugin for GpuShare {
    fn pre_score(
        &self,
        state: &mut CycleState,
        _: &PodInfo,
        _: &Snapshot,
        _: &[&NodeInfo],
    ) -> Status {
        if state
            .read::<PodState>(PRE_FILTER_KEY)
            .is_some_and(|r| !r.is_empty())
        {
            Status::success()
        } else {
            Status::new(Code::Skip, "")
        }
    }
}

impl ScorePlugin for GpuShare {
    fn score(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        _: &Snapshot,
    ) -> Result<i64, Status> {
        let reqs = self.requests(state, pod).map_err(Status::error)?;
        if reqs.is_empty() {
            return Ok(0);
        }
        Ok(match self.place(&reqs, pod, node) {
            Ok(pl) => {
                let mut scores: Vec<i64> = pl
                    .vcuda
                    .iter()
                    .map(|(cards, chosen)| cards.score(chosen))
                    .collect();
                scores.extend(pl.vgpu.iter().map(|(cards, chosen)| cards.score(chosen)));
                scores.iter().sum::<i64>() / (scores.len().max(1) as i64)
            }
            Err(_) => 0,
        })
    }

    fn node_local(&self) -> bool {
        true
    }
}

impl ReservePlugin for GpuShare {
    fn reserve(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        node: &str,
        snap: &Snapshot,
    ) -> Status {
        let reqs = match self.requests(state, pod) {
            Ok(r) => r,
            Err(e) => return Status::unresolvable(e),
        };
        if reqs.is_empty() {
            return Status::success();
        }
        let Some(info) = snap.node(node) else {
            return Status::error(format!("node {node:?} not in the snapshot"));
        };
        let pl = match self.place(&reqs, pod, info) {
            Ok(pl) => pl,
            Err(st) => return st,
        };
        if let Some((_, chosen)) = pl.vcuda {
            for (r, cards) in reqs.vcuda.iter().zip(chosen) {
                let v: Vec<String> = cards.iter().map(|i| i.to_string()).collect();
                state.set_pod_annotation(
                    format!("{ANNOTATION_IDX_PREFIX}{}", r.container),
                    v.join(","),
                );
            }
            state.set_pod_annotation(ANNOTATION_NODE.to_string(), node.to_string());
            state.set_pod_annotation(ANNOTATION_ASSIGNED.to_string(), "false".to_string());
        }
        let containers = pod.spec().map_or(0, |s| s.containers.len());
        for (cards, chosen) in pl.vgpu {
            let fam = cards.family;
            let enc = cards.encode(&reqs.vgpu, &chosen, containers);
            state.set_pod_annotation(fam.allocated().to_string(), enc.clone());
            state.set_pod_annotation(fam.to_allocate().to_string(), enc);
            state.set_pod_annotation(fam.node_key().to_string(), node.to_string());
            state.set_pod_annotation(fam.bind_phase().to_string(), "allocating".to_string());
        }
        Status::success()
    }

    fn unreserve(&self, state: &mut CycleState, pod: &PodInfo, _: &str, _: &Snapshot) {
        let Ok(reqs) = self.requests(state, pod) else {
            return;
        };
        if reqs.is_empty() {
            return;
        }
        if !reqs.vcuda.is_empty() {
            for r in reqs.vcuda.iter() {
                state.remove_pod_annotation(&format!("{ANNOTATION_IDX_PREFIX}{}", r.container));
            }
            state.remove_pod_annotation(ANNOTATION_NODE);
            state.remove_pod_annotation(ANNOTATION_ASSIGNED);
        }
        for fam in Family::ALL {
            if reqs.vgpu.iter().any(|r| r.family == fam) {
                state.remove_pod_annotation(fam.allocated());
                state.remove_pod_annotation(fam.to_allocate());
                state.remove_pod_annotation(fam.node_key());
                state.remove_pod_annotation(fam.bind_phase());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{NodeBuilder, PodBuilder, node, pod};
    use serde_json::json;

    fn gpu_node(name: &str, core: i64, mem: i64) -> NodeBuilder {
        node(name)
            .cpu("32")
            .mem("128Gi")
            .alloc(VCUDA_CORE, &core.to_string())
            .alloc(VCUDA_MEMORY, &mem.to_string())
    }

    fn gpu_pod(name: &str, core: i64, mem: i64) -> PodBuilder {
        pod(name)
            .req(VCUDA_CORE, &core.to_string())
            .req(VCUDA_MEMORY, &mem.to_string())
    }

    /// A pod already on `node` with card annotation `idx` for container 0.
    fn placed(name: &str, core: i64, mem: i64, node: &str, idx: Option<&str>) -> Arc<PodInfo> {
        let mut b = gpu_pod(name, core, mem).node_name(node);
        if let Some(i) = idx {
            b.0["metadata"]["annotations"] = json!({format!("{ANNOTATION_IDX_PREFIX}0"): i});
        }
        Arc::new(b.info())
    }

    fn plugin(args: serde_json::Value) -> GpuShare {
        let a: GpuShareArgs = serde_json::from_value(args).expect("args");
        a.validate().expect("valid");
        GpuShare { args: a }
    }

    fn snap_of(n: NodeInfo) -> Snapshot {
        let mut s = Snapshot::new();
        s.add_nodes([n]);
        s
    }

    /// Runs PreFilter + Filter + Reserve; returns the annotations or the status.
    fn reserve(p: &GpuShare, pod: &PodInfo, snap: &Snapshot) -> Result<PodAnnotations, Status> {
        let mut st = CycleState::new();
        let (_, s) = p.pre_filter(&mut st, pod, snap);
        if !s.is_success() {
            return Err(s);
        }
        let n = &snap.nodes()[0];
        let f = p.filter(&st, pod, n, snap);
        if !f.is_success() {
            return Err(f);
        }
        let r = p.reserve(&mut st, pod, &n.name, snap);
        if !r.is_success() {
            return Err(r);
        }
        Ok(st.pod_annotations().cloned().unwrap_or_default())
    }

    use crate::framework::PodAnnotations;

    fn idx(a: &PodAnnotations) -> &str {
        a.get(&format!("{ANNOTATION_IDX_PREFIX}0"))
            .map(String::as_str)
            .unwrap_or("")
    }

    #[test]
    fn fractional_request_packs_onto_the_used_card() {
        let mut n = gpu_node("n1", 400, 64).info();
        n.add_pod(placed("a", 30, 4, "n1", Some("2")));
        let snap = snap_of(n);
        let a = reserve(&GpuShare::default(), &gpu_pod("p", 50, 4).info(), &snap).expect("fits");
        assert_eq!(idx(&a), "2");
        assert_eq!(a.get(ANNOTATION_NODE).map(String::as_str), Some("n1"));
        assert_eq!(
            a.get(ANNOTATION_ASSIGNED).map(String::as_str),
            Some("false")
        );
        // 30 + 80 > 100: the used card no longer fits, the lowest free card is taken.
        let a = reserve(&GpuShare::default(), &gpu_pod("q", 80, 4).info(), &snap).expect("fits");
        assert_eq!(idx(&a), "0");
    }

    #[test]
    fn whole_cards_are_exclusive() {
        let mut n = gpu_node("n1", 200, 32).info();
        n.add_pod(placed("a", 10, 1, "n1", Some("0")));
        let snap = snap_of(n);
        let p = GpuShare::default();
        let a = reserve(&p, &gpu_pod("w1", 100, 0).info(), &snap).expect("one free card");
        assert_eq!(idx(&a), "1");
        let e = reserve(&p, &gpu_pod("w2", 200, 0).info(), &snap).expect_err("only one free");
        assert_eq!(e.code, Code::Unschedulable);
        assert!(
            e.message()
                .contains("Insufficient whole GPU cards (2 needed, 1 free)"),
            "{}",
            e.message()
        );
        // A share never lands on a card taken whole.
        let mut n = gpu_node("n1", 200, 32).info();
        n.add_pod(placed("w", 100, 0, "n1", Some("1")));
        let snap = snap_of(n);
        let a = reserve(&p, &gpu_pod("s", 90, 1).info(), &snap).expect("card 0");
        assert_eq!(idx(&a), "0");
        let e = reserve(&p, &gpu_pod("t", 100, 0).info(), &snap);
        assert!(e.is_ok(), "card 0 is still free: {e:?}");
    }

    #[test]
    fn multiple_cards_and_containers_get_their_own_indices() {
        let snap = snap_of(gpu_node("n1", 400, 64).info());
        let pod = gpu_pod("p", 200, 0)
            .container(json!({VCUDA_CORE: "20", VCUDA_MEMORY: "2"}))
            .info();
        let a = reserve(&GpuShare::default(), &pod, &snap).expect("fits");
        assert_eq!(idx(&a), "0,1");
        assert_eq!(
            a.get(&format!("{ANNOTATION_IDX_PREFIX}1"))
                .map(String::as_str),
            Some("2")
        );
    }

    #[test]
    fn non_share_non_multiple_core_is_rejected_with_reason() {
        let snap = snap_of(gpu_node("n1", 400, 64).info());
        let e = reserve(&GpuShare::default(), &gpu_pod("p", 150, 1).info(), &snap)
            .expect_err("150 is invalid");
        assert_eq!(e.code, Code::UnschedulableAndUnresolvable);
        assert!(
            e.message()
                .contains("tencent.com/vcuda-core 150 is invalid"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn memory_bounds_the_card() {
        // Two cards of 16 units; card 0 holds 10 units.
        let mut n = gpu_node("n1", 200, 32).info();
        n.add_pod(placed("a", 10, 10, "n1", Some("0")));
        let snap = snap_of(n);
        let a = reserve(&GpuShare::default(), &gpu_pod("p", 10, 8).info(), &snap).expect("card 1");
        assert_eq!(idx(&a), "1", "the used card lacks memory");
        let e = reserve(&GpuShare::default(), &gpu_pod("q", 10, 17).info(), &snap)
            .expect_err("more than one card's memory");
        assert!(
            e.message().contains("Insufficient GPU share"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn overcommit_and_sharers_are_bounded() {
        // One physical card advertised at 2x core.
        let mk = |pods: usize| {
            let mut n = gpu_node("n1", 200, 16).label(LABEL_GPU_COUNT, "1").info();
            for i in 0..pods {
                n.add_pod(placed(&format!("a{i}"), 60, 1, "n1", Some("0")));
            }
            snap_of(n)
        };
        let p2 = plugin(json!({"coreOvercommit": 2}));
        assert!(
            reserve(&p2, &gpu_pod("p", 60, 1).info(), &mk(2)).is_ok(),
            "180 <= 200"
        );
        let e = reserve(&p2, &gpu_pod("p", 60, 1).info(), &mk(3)).expect_err("240 > 200");
        assert!(e.message().contains("Insufficient GPU share"));
        // Without overcommit the same card takes one 60 % share.
        let e = reserve(&GpuShare::default(), &gpu_pod("p", 60, 1).info(), &mk(1));
        assert!(e.is_err(), "120 > 100 without overcommit");
        let pm = plugin(json!({"coreOvercommit": 8, "maxPodsPerCard": 2}));
        assert!(reserve(&pm, &gpu_pod("p", 10, 1).info(), &mk(1)).is_ok());
        assert!(
            reserve(&pm, &gpu_pod("p", 10, 1).info(), &mk(2)).is_err(),
            "third sharer"
        );
    }

    #[test]
    fn args_are_validated_naming_the_field() {
        let e = factory(Some(&json!({"coreOvercommit": 9})))
            .err()
            .expect("9 > 8");
        assert!(e.contains("GpuShareArgs.coreOvercommit: 9"), "{e}");
        let e = factory(Some(&json!({"coreOvercommit": 0})))
            .err()
            .expect("0");
        assert!(e.contains("coreOvercommit"), "{e}");
        let e = factory(Some(&json!({"maxPodsPerCard": -1})))
            .err()
            .expect("negative");
        assert!(e.contains("GpuShareArgs.maxPodsPerCard"), "{e}");
        let e = factory(Some(&json!({"overcommit": 2})))
            .err()
            .expect("unknown field");
        assert!(e.contains("overcommit"), "{e}");
        assert!(
            factory(Some(
                &json!({"apiVersion": "x", "kind": "GpuShareArgs", "coreOvercommit": 4})
            ))
            .is_ok()
        );
    }

    #[test]
    fn unannotated_pods_are_charged_pessimistically() {
        // A 60 % share without assignment may be on either card: no card has 50 left.
        let mut n = gpu_node("n1", 200, 32).info();
        n.add_pod(placed("a", 60, 1, "n1", None));
        let snap = snap_of(n);
        let e = reserve(&GpuShare::default(), &gpu_pod("p", 50, 1).info(), &snap);
        assert!(e.is_err(), "{e:?}");
        // An unassigned whole card takes a free card: one whole card is left.
        let mut n = gpu_node("n1", 200, 32).info();
        n.add_pod(placed("w", 100, 0, "n1", None));
        let snap = snap_of(n);
        assert!(reserve(&GpuShare::default(), &gpu_pod("p", 100, 0).info(), &snap).is_ok());
        assert!(reserve(&GpuShare::default(), &gpu_pod("p", 200, 0).info(), &snap).is_err());
    }

    #[test]
    fn score_prefers_the_node_with_a_partly_used_card() {
        let p = GpuShare::default();
        let mut used = gpu_node("used", 400, 64).info();
        used.add_pod(placed("a", 50, 4, "used", Some("3")));
        let fresh = gpu_node("fresh", 400, 64).info();
        let pod = gpu_pod("p", 30, 4).info();
        let mut st = CycleState::new();
        let snap = Snapshot::new();
        let _ = p.pre_filter(&mut st, &pod, &snap);
        let su = p.score(&st, &pod, &used, &snap).expect("score");
        let sf = p.score(&st, &pod, &fresh, &snap).expect("score");
        assert!(su > sf, "used {su} fresh {sf}");
        assert!((0..=MAX_NODE_SCORE).contains(&su));
        // Card fill 80, node fill 20 → 50; fresh: 30 and 7 → 18.
        assert_eq!((su, sf), (50, 18));
    }

    #[test]
    fn pods_without_vcuda_are_skipped() {
        let mut st = CycleState::new();
        let (_, s) =
            GpuShare::default().pre_filter(&mut st, &pod("p").cpu("1").info(), &Snapshot::new());
        assert!(s.is_skip());
        let pre = GpuShare::default().pre_score(&mut st, &pod("p").info(), &Snapshot::new(), &[]);
        assert!(pre.is_skip(), "no PreFilter state: nothing to score");
    }

    #[test]
    fn predicate_time_is_stamped_only_for_assignments() {
        let mut a = PodAnnotations::new();
        stamp_predicate_time(&mut a);
        assert!(a.is_empty());
        a.insert(ANNOTATION_ASSIGNED.into(), "false".into());
        stamp_predicate_time(&mut a);
        assert!(a[ANNOTATION_TIME].parse::<u128>().expect("nanos") > 0);
    }
}
