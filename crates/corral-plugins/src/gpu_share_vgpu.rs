//! GpuShare under HAMi's and Volcano vGPU's resource names (a submodule of
//! `gpu_share`).
//!
//! Request (per container of `spec.containers`; requests, or limits when a
//! container has no request):
//! - HAMi, when a container names `nvidia.com/gpumem`, `nvidia.com/gpumem-percentage`
//!   or `nvidia.com/gpucores`: `nvidia.com/gpu` cards (default 1), each on a distinct
//!   card. A container with only `nvidia.com/gpu` is that many whole-memory vGPUs
//!   on nodes HAMi registered, and a plain extended resource on other nodes.
//! - Volcano, when a container names `volcano.sh/vgpu-number`, `vgpu-memory`,
//!   `vgpu-memory-percentage` or `vgpu-cores`: `vgpu-number` cards (default 1).
//!
//! Per card: memory in MiB (or a percent of the card's memory; neither = the whole
//! memory, as both device plugins default), cores in percent of the card (0..=100;
//! 100 = the card exclusively, a card at 100 takes no more sharers).
//!
//! Cards come from the node registration annotation the device plugin writes
//! (`hami.io/node-nvidia-register`, `volcano.sh/node-vgpu-register`): uuid, split
//! count (most sharers), memory MiB, type, health. Usage comes from the pods on the
//! node: their assignment annotation (`hami.io/vgpu-devices-allocated`,
//! `volcano.sh/vgpu-ids-new`); pods with requests but no assignment are charged to
//! every card (pessimistic, as for vcuda).

use std::collections::BTreeMap;

use serde::Deserialize;

use corral_api::keys::{
    ANN_NOUSE_GPUTYPE, ANN_USE_GPUTYPE, HAMI_BIND_PHASE, HAMI_DEVICES_ALLOCATED,
    HAMI_DEVICES_TO_ALLOCATE, HAMI_GPU, HAMI_GPUCORES, HAMI_GPUMEM, HAMI_GPUMEM_PERCENTAGE,
    HAMI_NODE_REGISTER, HAMI_VGPU_NODE, VOLCANO_BIND_PHASE, VOLCANO_DEVICES_TO_ALLOCATE,
    VOLCANO_NODE_REGISTER, VOLCANO_VGPU_CORES, VOLCANO_VGPU_IDS, VOLCANO_VGPU_MEMORY,
    VOLCANO_VGPU_MEMORY_PERCENTAGE, VOLCANO_VGPU_NODE, VOLCANO_VGPU_NUMBER,
};

use crate::snapshot::{NodeInfo, PodInfo};

/// Largest per-card memory accepted, MiB (1 PiB).
const MAX_MEM_MIB: i64 = 1 << 30;

/// Which device plugin's names a request uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    Hami,
    Volcano,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Hami, Family::Volcano];

    pub fn number(self) -> &'static str {
        match self {
            Family::Hami => HAMI_GPU,
            Family::Volcano => VOLCANO_VGPU_NUMBER,
        }
    }
    pub fn memory(self) -> &'static str {
        match self {
            Family::Hami => HAMI_GPUMEM,
            Family::Volcano => VOLCANO_VGPU_MEMORY,
        }
    }
    pub fn percentage(self) -> &'static str {
        match self {
            Family::Hami => HAMI_GPUMEM_PERCENTAGE,
            Family::Volcano => VOLCANO_VGPU_MEMORY_PERCENTAGE,
        }
    }
    pub fn cores(self) -> &'static str {
        match self {
            Family::Hami => HAMI_GPUCORES,
            Family::Volcano => VOLCANO_VGPU_CORES,
        }
    }
    /// Names that make a container a request of this family.
    fn triggers(self) -> &'static [&'static str] {
        match self {
            Family::Hami => &[HAMI_GPUMEM, HAMI_GPUMEM_PERCENTAGE, HAMI_GPUCORES],
            Family::Volcano => &[
                VOLCANO_VGPU_NUMBER,
                VOLCANO_VGPU_MEMORY,
                VOLCANO_VGPU_MEMORY_PERCENTAGE,
                VOLCANO_VGPU_CORES,
            ],
        }
    }
    pub fn register(self) -> &'static str {
        match self {
            Family::Hami => HAMI_NODE_REGISTER,
            Family::Volcano => VOLCANO_NODE_REGISTER,
        }
    }
    /// The pod annotation holding the assignment (read for usage).
    pub fn allocated(self) -> &'static str {
        match self {
            Family::Hami => HAMI_DEVICES_ALLOCATED,
            Family::Volcano => VOLCANO_VGPU_IDS,
        }
    }
    pub fn to_allocate(self) -> &'static str {
        match self {
            Family::Hami => HAMI_DEVICES_TO_ALLOCATE,
            Family::Volcano => VOLCANO_DEVICES_TO_ALLOCATE,
        }
    }
    pub fn node_key(self) -> &'static str {
        match self {
            Family::Hami => HAMI_VGPU_NODE,
            Family::Volcano => VOLCANO_VGPU_NODE,
        }
    }
    pub fn bind_phase(self) -> &'static str {
        match self {
            Family::Hami => HAMI_BIND_PHASE,
            Family::Volcano => VOLCANO_BIND_PHASE,
        }
    }
    fn label(self) -> &'static str {
        match self {
            Family::Hami => "HAMi vGPU",
            Family::Volcano => "Volcano vGPU",
        }
    }
}

/// One container's vGPU request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VgpuRequest {
    pub family: Family,
    /// Index in `spec.containers`.
    pub container: usize,
    /// Cards, each distinct.
    pub nums: i64,
    /// Memory per card in MiB; `None` = `mem_pct` percent of the card.
    pub mem_mib: Option<i64>,
    pub mem_pct: i64,
    /// Percent of each card's compute.
    pub cores: i64,
    /// HAMi `nvidia.com/gpu` without gpumem/gpucores: a vGPU only on nodes with a
    /// HAMi registration (elsewhere NodeResourcesFit's whole cards).
    pub implicit: bool,
}

impl VgpuRequest {
    fn mem_on(&self, card_mem: i64) -> i64 {
        self.mem_mib.unwrap_or(card_mem * self.mem_pct / 100)
    }
}

/// The pod's HAMi / Volcano vGPU requests; an unparsable or out-of-range value is an
/// error naming the container and the resource.
pub fn pod_vgpu_requests(pod: &PodInfo) -> Result<Vec<VgpuRequest>, String> {
    let Some(spec) = pod.spec() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (i, c) in spec.containers.iter().enumerate() {
        let Some(res) = c.resources.as_ref() else {
            continue;
        };
        let lookup = |name: &str| {
            res.requests
                .as_ref()
                .and_then(|m| m.get(name))
                .or_else(|| res.limits.as_ref().and_then(|m| m.get(name)))
        };
        let get = |name: &str, lo: i64, hi: i64| -> Result<Option<i64>, String> {
            let Some(q) = lookup(name) else {
                return Ok(None);
            };
            let parsed = corral_core::quantity::Quantity::parse(&q.0)
                .map_err(|e| format!("containers[{i}] ({}): {name}: {e}", c.name))?;
            if parsed.milli_value() % 1000 != 0 {
                return Err(format!(
                    "containers[{i}] ({}): {name} {:?} is invalid, must be a whole number",
                    c.name, q.0
                ));
            }
            let v = parsed.value();
            if !(lo..=hi).contains(&v) {
                return Err(format!(
                    "containers[{i}] ({}): {name} {v} is invalid, must be in the range [{lo}, {hi}]",
                    c.name
                ));
            }
            Ok(Some(v))
        };
        for fam in Family::ALL {
            if !fam.triggers().iter().any(|n| lookup(n).is_some()) {
                // HAMi: `nvidia.com/gpu` alone is that many whole-memory vGPUs on a
                // node HAMi registered; elsewhere a plain extended resource.
                if fam == Family::Hami
                    && let Some(q) = lookup(HAMI_GPU)
                    && let Ok(n) = corral_core::quantity::parse_resource(HAMI_GPU, &q.0)
                    && (1..=corral_core::limits::MAX_GPU_CARDS_PER_NODE).contains(&n)
                {
                    out.push(VgpuRequest {
                        family: fam,
                        container: i,
                        nums: n,
                        mem_mib: None,
                        mem_pct: 100,
                        cores: 0,
                        implicit: true,
                    });
                }
                continue;
            }
            let nums =
                get(fam.number(), 1, corral_core::limits::MAX_GPU_CARDS_PER_NODE)?.unwrap_or(1);
            let mem = get(fam.memory(), 0, MAX_MEM_MIB)?;
            let pct = get(fam.percentage(), 0, 100)?;
            if mem.is_some() && pct.is_some() {
                return Err(format!(
                    "containers[{i}] ({}): {} and {} are both set; set one",
                    c.name,
                    fam.memory(),
                    fam.percentage()
                ));
            }
            let cores = get(fam.cores(), 0, 100)?.unwrap_or(0);
            out.push(VgpuRequest {
                family: fam,
                container: i,
                nums,
                mem_mib: mem,
                mem_pct: pct.unwrap_or(100),
                cores,
                implicit: false,
            });
        }
    }
    Ok(out)
}

/// One registered card with its usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VCard {
    pub uuid: String,
    /// Most sharers (the device plugin's split count).
    pub split: i64,
    /// Memory, MiB.
    pub mem: i64,
    /// Compute capacity (100).
    pub core_cap: i64,
    pub typ: String,
    pub healthy: bool,
    pub used_mem: i64,
    pub used_core: i64,
    pub sharers: i64,
}

impl VCard {
    fn charge(&mut self, mem: i64, cores: i64) {
        self.used_mem = self.used_mem.saturating_add(mem);
        self.used_core = self.used_core.saturating_add(cores);
        self.sharers = self.sharers.saturating_add(1);
    }
}

#[derive(Deserialize)]
struct HamiDev {
    id: String,
    count: i64,
    devmem: i64,
    #[serde(default = "hundred")]
    devcore: i64,
    #[serde(rename = "type", default)]
    typ: String,
    #[serde(default = "yes")]
    health: bool,
}

fn hundred() -> i64 {
    100
}
fn yes() -> bool {
    true
}

/// Largest split count (sharers per card) accepted.
const MAX_SPLIT: i64 = 1000;

fn num(field: &str, v: &str, hi: i64) -> Result<i64, String> {
    v.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| (0..=hi).contains(n))
        .ok_or_else(|| format!("{field} {v:?} is not an integer in [0, {hi}]"))
}

/// Parses a node registration annotation into cards.
pub fn parse_register(fam: Family, v: &str) -> Result<Vec<VCard>, String> {
    let card = |uuid: &str, split, mem, core_cap, typ: &str, healthy| VCard {
        uuid: uuid.to_string(),
        split,
        mem,
        core_cap,
        typ: typ.to_string(),
        healthy,
        used_mem: 0,
        used_core: 0,
        sharers: 0,
    };
    let mut out = Vec::new();
    if fam == Family::Hami && v.trim_start().starts_with('[') {
        let devs: Vec<HamiDev> = serde_json::from_str(v).map_err(|e| e.to_string())?;
        for d in devs {
            if !(0..=MAX_SPLIT).contains(&d.count)
                || !(0..=MAX_MEM_MIB).contains(&d.devmem)
                || !(0..=100).contains(&d.devcore)
            {
                return Err(format!(
                    "card {:?}: count must be in [0, {MAX_SPLIT}], devmem in [0, {MAX_MEM_MIB}], devcore in [0, 100]",
                    d.id
                ));
            }
            out.push(card(&d.id, d.count, d.devmem, d.devcore, &d.typ, d.health));
        }
    } else {
        for entry in v.split(':').filter(|s| !s.trim().is_empty()) {
            let f: Vec<&str> = entry.split(',').collect();
            let c = match fam {
                // id,count,devmem,devcore,type,numa,health
                Family::Hami if f.len() >= 7 => card(
                    f[0].trim(),
                    num("count", f[1], MAX_SPLIT)?,
                    num("devmem", f[2], MAX_MEM_MIB)?,
                    num("devcore", f[3], 100)?,
                    f[4],
                    f[6].trim() == "true",
                ),
                // uuid,count,devmem,type,health[,mode]
                Family::Volcano if f.len() >= 5 => card(
                    f[0].trim(),
                    num("count", f[1], MAX_SPLIT)?,
                    num("devmem", f[2], MAX_MEM_MIB)?,
                    100,
                    f[3],
                    f[4].trim() == "true",
                ),
                _ => return Err(format!("card entry {entry:?} has too few fields")),
            };
            out.push(c);
        }
    }
    if out.len() as i64 > corral_core::limits::MAX_GPU_CARDS_PER_NODE {
        return Err(format!(
            "{} cards exceed the limit of {}",
            out.len(),
            corral_core::limits::MAX_GPU_CARDS_PER_NODE
        ));
    }
    Ok(out)
}

/// `(uuid, memMiB, cores)` of every card in an assignment annotation
/// (`uuid,type,mem,cores:` per card, containers separated by `;`).
fn parse_assignment(v: &str) -> Option<Vec<(String, i64, i64)>> {
    let mut out = Vec::new();
    for dev in v.split([';', ':']).filter(|s| !s.trim().is_empty()) {
        let f: Vec<&str> = dev.split(',').collect();
        if f.len() < 4 {
            return None;
        }
        out.push((
            f[0].trim().to_string(),
            f[2].trim()
                .parse()
                .ok()
                .filter(|m| (0..=MAX_MEM_MIB).contains(m))?,
            f[3].trim().parse().ok().filter(|c| (0..=100).contains(c))?,
        ));
    }
    Some(out)
}

/// The cards of one family on one node with their usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VCards {
    pub family: Family,
    pub cards: Vec<VCard>,
}

impl VCards {
    /// `Err` when the node has no (valid) registration of this family.
    pub fn of(node: &NodeInfo, fam: Family) -> Result<VCards, String> {
        let Some(reg) = node
            .node
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(fam.register()))
        else {
            return Err(format!(
                "node(s) had no {} registration ({})",
                fam.label(),
                fam.register()
            ));
        };
        let cards = parse_register(fam, reg)
            .map_err(|e| format!("node annotation {}: {e}", fam.register()))?;
        let mut c = VCards { family: fam, cards };
        for p in &node.pods {
            let ann = p.pod.metadata.annotations.as_ref();
            if let Some(devs) = ann
                .and_then(|a| a.get(fam.allocated()))
                .and_then(|v| parse_assignment(v))
            {
                for (uuid, mem, cores) in devs {
                    if let Some(k) = c.cards.iter_mut().find(|k| k.uuid == uuid) {
                        k.charge(mem, cores);
                    }
                }
                continue;
            }
            // Invalid requests were rejected at scheduling; someone else's pod with an
            // invalid value takes nothing here.
            let Ok(reqs) = pod_vgpu_requests(p) else {
                continue;
            };
            for r in reqs.iter().filter(|r| r.family == fam) {
                for k in c.cards.iter_mut() {
                    let m = r.mem_on(k.mem);
                    k.charge(m, r.cores);
                }
            }
        }
        Ok(c)
    }

    fn fits(&self, i: usize, r: &VgpuRequest, ann: Option<&BTreeMap<String, String>>) -> bool {
        let k = &self.cards[i];
        k.healthy
            && k.sharers < k.split
            && k.used_mem.saturating_add(r.mem_on(k.mem)) <= k.mem
            && k.used_core.saturating_add(r.cores) <= k.core_cap
            && !(r.cores >= k.core_cap && k.sharers > 0)
            && !(r.cores == 0 && k.used_core >= k.core_cap)
            && type_ok(ann, &k.typ)
    }

    /// Chooses `nums` distinct cards for every request of this family (most-used
    /// first, lowest index on ties) and applies them; returns the card indices per
    /// request, or the reason nothing fits.
    pub fn assign(
        &mut self,
        reqs: &[VgpuRequest],
        ann: Option<&BTreeMap<String, String>>,
    ) -> Result<Vec<Vec<usize>>, String> {
        let mut out = Vec::new();
        for r in reqs.iter().filter(|r| r.family == self.family) {
            let mut cand: Vec<usize> = (0..self.cards.len())
                .filter(|&i| self.fits(i, r, ann))
                .collect();
            cand.sort_by_key(|&i| {
                let k = &self.cards[i];
                (std::cmp::Reverse((k.used_mem, k.used_core)), i)
            });
            if (cand.len() as i64) < r.nums {
                let mem = match r.mem_mib {
                    Some(m) => format!("{m} MiB {}", self.family.memory()),
                    None => format!("{}% {}", r.mem_pct, self.family.percentage()),
                };
                return Err(format!(
                    "Insufficient {} ({} {}: {} card(s) needed with {mem} and {} {} free, {} fit)",
                    self.family.label(),
                    r.nums,
                    self.family.number(),
                    r.nums,
                    r.cores,
                    self.family.cores(),
                    cand.len()
                ));
            }
            cand.truncate(r.nums as usize);
            for &i in &cand {
                let k = &mut self.cards[i];
                let m = r.mem_on(k.mem);
                k.charge(m, r.cores);
            }
            out.push(cand);
        }
        Ok(out)
    }

    /// Mean memory fill (after placement) of the chosen cards, 0..=100.
    pub fn score(&self, chosen: &[Vec<usize>]) -> i64 {
        let mut idx: Vec<usize> = chosen.iter().flatten().copied().collect();
        idx.sort_unstable();
        idx.dedup();
        let fills: Vec<i64> = idx
            .iter()
            .map(|&i| &self.cards[i])
            .filter(|k| k.mem > 0)
            .map(|k| k.used_mem.min(k.mem) * 100 / k.mem)
            .collect();
        if fills.is_empty() {
            return 0;
        }
        fills.iter().sum::<i64>() / fills.len() as i64
    }

    /// The assignment annotation value: `uuid,NVIDIA,mem,cores:` per card; HAMi
    /// writes one segment per container of `spec.containers` each ended by `;`,
    /// Volcano one per requesting container joined by `;`.
    pub fn encode(&self, reqs: &[VgpuRequest], chosen: &[Vec<usize>], containers: usize) -> String {
        let mine: Vec<&VgpuRequest> = reqs.iter().filter(|r| r.family == self.family).collect();
        let seg = |r: &VgpuRequest, cards: &[usize]| -> String {
            cards
                .iter()
                .map(|&i| {
                    let k = &self.cards[i];
                    format!("{},NVIDIA,{},{}:", k.uuid, r.mem_on(k.mem), r.cores)
                })
                .collect()
        };
        match self.family {
            Family::Hami => (0..containers)
                .map(|c| {
                    let s: String = mine
                        .iter()
                        .zip(chosen)
                        .filter(|(r, _)| r.container == c)
                        .map(|(r, k)| seg(r, k))
                        .collect();
                    s + ";"
                })
                .collect(),
            Family::Volcano => mine
                .iter()
                .zip(chosen)
                .map(|(r, k)| seg(r, k))
                .collect::<Vec<_>>()
                .join(";"),
        }
    }
}

/// `nvidia.com/use-gputype` / `nouse-gputype`: comma-separated, case-insensitive
/// substrings of the card type.
fn type_ok(ann: Option<&BTreeMap<String, String>>, typ: &str) -> bool {
    let t = typ.to_uppercase();
    let any = |v: &str| {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .any(|s| t.contains(&s.to_uppercase()))
    };
    if let Some(u) = ann.and_then(|a| a.get(ANN_USE_GPUTYPE)) {
        return any(u);
    }
    if let Some(n) = ann.and_then(|a| a.get(ANN_NOUSE_GPUTYPE)) {
        return !any(n);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::super::GpuShare;
    use super::*;
    use crate::framework::{
        Code, CycleState, FilterPlugin, PodAnnotations, PreFilterPlugin, ReservePlugin,
        ScorePlugin, Status,
    };
    use crate::snapshot::Snapshot;
    use crate::testutil::{PodBuilder, node, pod};
    use serde_json::{Value, json};
    use std::sync::Arc;

    const T4: &str = "NVIDIA-Tesla T4";

    /// HAMi's JSON registration of cards `(uuid, split, memMiB, healthy)`.
    fn hami_reg(cards: &[(&str, i64, i64, bool)]) -> String {
        let v: Vec<Value> = cards
            .iter()
            .map(|(id, n, m, h)| {
                json!({"id": id, "count": n, "devmem": m, "devcore": 100, "type": T4,
                       "numa": 0, "mode": "hami-core", "health": h})
            })
            .collect();
        Value::Array(v).to_string()
    }

    fn two_cards() -> String {
        hami_reg(&[("GPU-a", 4, 16384, true), ("GPU-b", 4, 16384, true)])
    }

    const VOLCANO_TWO: &str = "GPU-a,4,16384,NVIDIA-Tesla T4,true,hami-core:GPU-b,4,16384,NVIDIA-Tesla T4,true,hami-core:";

    fn gpu_node(anns: Value) -> NodeInfo {
        let mut b = node("n1").cpu("32").mem("128Gi");
        b.0["metadata"]["annotations"] = anns;
        b.info()
    }

    fn with_reqs(name: &str, reqs: &[(&str, &str)]) -> PodBuilder {
        let mut b = pod(name);
        for (k, v) in reqs {
            b = b.req(k, v);
        }
        b
    }

    /// A pod already on n1 with these requests and annotations.
    fn placed(name: &str, reqs: &[(&str, &str)], anns: Value) -> Arc<PodInfo> {
        let mut b = with_reqs(name, reqs).node_name("n1");
        b.0["metadata"]["annotations"] = anns;
        Arc::new(b.info())
    }

    /// PreFilter + Filter + Reserve on the only node.
    fn reserve(pod: &PodInfo, n: NodeInfo) -> Result<PodAnnotations, Status> {
        let p = GpuShare::default();
        let mut s = Snapshot::new();
        s.add_nodes([n]);
        let mut st = CycleState::new();
        let (_, pre) = p.pre_filter(&mut st, pod, &s);
        if !pre.is_success() {
            return Err(pre);
        }
        let n = &s.nodes()[0];
        let f = p.filter(&st, pod, n, &s);
        if !f.is_success() {
            return Err(f);
        }
        let r = p.reserve(&mut st, pod, &n.name, &s);
        if !r.is_success() {
            return Err(r);
        }
        Ok(st.pod_annotations().cloned().unwrap_or_default())
    }

    /// `(case, container-0 requests, expected request or error substring)`.
    type ParseCase = (
        &'static str,
        &'static [(&'static str, &'static str)],
        Result<(Family, i64, Option<i64>, i64, i64), &'static str>,
    );

    #[test]
    fn requests_parse_and_malformed_values_name_the_field() {
        let cases: &[ParseCase] = &[
            (
                "hami mem+cores",
                &[
                    (HAMI_GPU, "2"),
                    (HAMI_GPUMEM, "3000"),
                    (HAMI_GPUCORES, "30"),
                ],
                Ok((Family::Hami, 2, Some(3000), 100, 30)),
            ),
            (
                "hami percentage, gpu defaults to 1",
                &[(HAMI_GPUMEM_PERCENTAGE, "50")],
                Ok((Family::Hami, 1, None, 50, 0)),
            ),
            (
                "hami cores only: whole memory",
                &[(HAMI_GPU, "1"), (HAMI_GPUCORES, "100")],
                Ok((Family::Hami, 1, None, 100, 100)),
            ),
            (
                "volcano",
                &[
                    (VOLCANO_VGPU_NUMBER, "2"),
                    (VOLCANO_VGPU_MEMORY, "1024"),
                    (VOLCANO_VGPU_CORES, "50"),
                ],
                Ok((Family::Volcano, 2, Some(1024), 100, 50)),
            ),
            (
                "volcano memory only",
                &[(VOLCANO_VGPU_MEMORY, "2048")],
                Ok((Family::Volcano, 1, Some(2048), 100, 0)),
            ),
            (
                "memory above the limit",
                &[(HAMI_GPUMEM, "2000000000")],
                Err(
                    "containers[0] (c): nvidia.com/gpumem 2000000000 is invalid, must be in the range [0, 1073741824]",
                ),
            ),
            (
                "cores above 100",
                &[(HAMI_GPUCORES, "150")],
                Err("nvidia.com/gpucores 150 is invalid, must be in the range [0, 100]"),
            ),
            (
                "percentage above 100",
                &[(HAMI_GPUMEM_PERCENTAGE, "101")],
                Err("nvidia.com/gpumem-percentage 101 is invalid"),
            ),
            (
                "zero cards",
                &[(HAMI_GPU, "0"), (HAMI_GPUMEM, "1000")],
                Err("nvidia.com/gpu 0 is invalid, must be in the range [1, 128]"),
            ),
            (
                "fractional memory",
                &[(HAMI_GPUMEM, "0.5")],
                Err(
                    "containers[0] (c): nvidia.com/gpumem \"0.5\" is invalid, must be a whole number",
                ),
            ),
            (
                "memory and percentage",
                &[(HAMI_GPUMEM, "1000"), (HAMI_GPUMEM_PERCENTAGE, "10")],
                Err("nvidia.com/gpumem and nvidia.com/gpumem-percentage are both set"),
            ),
            (
                "volcano cards above the limit",
                &[(VOLCANO_VGPU_NUMBER, "200")],
                Err("volcano.sh/vgpu-number 200 is invalid"),
            ),
            (
                "volcano fractional cores",
                &[(VOLCANO_VGPU_CORES, "1500m")],
                Err("volcano.sh/vgpu-cores \"1500m\" is invalid, must be a whole number"),
            ),
        ];
        for (name, reqs, want) in cases {
            let p = with_reqs("p", reqs).info();
            let got = pod_vgpu_requests(&p);
            match want {
                Ok((fam, nums, mem, pct, cores)) => {
                    let got = got.unwrap_or_else(|e| panic!("{name}: {e}"));
                    assert_eq!(got.len(), 1, "{name}");
                    let r = got[0];
                    assert_eq!(
                        (r.family, r.nums, r.mem_mib, r.mem_pct, r.cores),
                        (*fam, *nums, *mem, *pct, *cores),
                        "{name}"
                    );
                }
                Err(sub) => {
                    let e = got.expect_err(name);
                    assert!(e.contains(sub), "{name}: {e}");
                    // PreFilter rejects the pod with the same reason.
                    let mut st = CycleState::new();
                    let (_, s) = GpuShare::default().pre_filter(&mut st, &p, &Snapshot::new());
                    assert_eq!(s.code, Code::UnschedulableAndUnresolvable, "{name}");
                    assert!(s.message().contains(sub), "{name}: {}", s.message());
                }
            }
        }
        // Only nvidia.com/gpu: whole-memory vGPUs, marked implicit (they need a HAMi
        // registration only to be placed as vGPUs); 0 requests nothing.
        let p = with_reqs("p", &[(HAMI_GPU, "2")]).info();
        let r = pod_vgpu_requests(&p).expect("valid");
        assert_eq!(
            r.iter()
                .map(|r| (r.family, r.nums, r.mem_mib, r.mem_pct, r.cores, r.implicit))
                .collect::<Vec<_>>(),
            vec![(Family::Hami, 2, None, 100, 0, true)]
        );
        let p = with_reqs("p", &[(HAMI_GPU, "0")]).info();
        assert_eq!(pod_vgpu_requests(&p), Ok(Vec::new()));
    }

    #[test]
    fn plain_nvidia_gpu_is_a_whole_vgpu_only_on_hami_nodes() {
        let one: &[(&str, &str)] = &[(HAMI_GPU, "1")];
        // HAMi node, card a shared: the whole-memory vGPU goes to the empty card b.
        let mut n = gpu_node(json!({HAMI_NODE_REGISTER: two_cards()}));
        n.add_pod(placed(
            "old",
            &[(HAMI_GPUMEM, "1000")],
            json!({HAMI_DEVICES_ALLOCATED: "GPU-a,NVIDIA,1000,0:;"}),
        ));
        let a = reserve(&with_reqs("p", one).info(), n.clone()).expect("card b");
        assert_eq!(a[HAMI_DEVICES_ALLOCATED], "GPU-b,NVIDIA,16384,0:;");
        // Two such pods cannot both fit: the second needs a whole card too.
        n.add_pod(placed(
            "whole",
            one,
            json!({HAMI_DEVICES_ALLOCATED: "GPU-b,NVIDIA,16384,0:;"}),
        ));
        let e = reserve(&with_reqs("p", one).info(), n).expect_err("no empty card");
        assert_eq!(e.code, Code::Unschedulable, "{}", e.message());
        // A node without HAMi registration: left to NodeResourcesFit, no annotations.
        let a = reserve(&with_reqs("p", one).info(), gpu_node(json!({}))).expect("passes");
        assert!(a.is_empty(), "{a:?}");
    }

    /// `(case, node annotations, pods on the node (requests, annotations), pod
    /// requests, pod annotations, expected (allocated annotation key, value) or error
    /// substring with its code)`.
    type PlaceCase = (
        &'static str,
        Value,
        Vec<(&'static [(&'static str, &'static str)], Value)>,
        &'static [(&'static str, &'static str)],
        Value,
        Result<(&'static str, &'static str), (Code, &'static str)>,
    );

    #[test]
    fn cards_are_chosen_and_written_as_the_device_plugins_expect() {
        let hami = json!({HAMI_NODE_REGISTER: two_cards()});
        let volcano = json!({VOLCANO_NODE_REGISTER: VOLCANO_TWO});
        let share_b = json!({HAMI_DEVICES_ALLOCATED: "GPU-b,NVIDIA,3000,20:;"});
        let m4k: &[(&str, &str)] = &[(HAMI_GPUMEM, "4000"), (HAMI_GPUCORES, "30")];
        let cases: Vec<PlaceCase> = vec![
            (
                "fresh node: lowest card",
                hami.clone(),
                vec![],
                m4k,
                json!({}),
                Ok((HAMI_DEVICES_ALLOCATED, "GPU-a,NVIDIA,4000,30:;")),
            ),
            (
                "packs onto the used card",
                hami.clone(),
                vec![(m4k, share_b.clone())],
                m4k,
                json!({}),
                Ok((HAMI_DEVICES_ALLOCATED, "GPU-b,NVIDIA,4000,30:;")),
            ),
            (
                "two cards are distinct",
                hami.clone(),
                vec![],
                &[(HAMI_GPU, "2"), (HAMI_GPUMEM, "4000")],
                json!({}),
                Ok((
                    HAMI_DEVICES_ALLOCATED,
                    "GPU-a,NVIDIA,4000,0:GPU-b,NVIDIA,4000,0:;",
                )),
            ),
            (
                "three cards on a two-card node",
                hami.clone(),
                vec![],
                &[(HAMI_GPU, "3"), (HAMI_GPUMEM, "4000")],
                json!({}),
                Err((
                    Code::Unschedulable,
                    "Insufficient HAMi vGPU (3 nvidia.com/gpu: 3 card(s) needed with 4000 MiB nvidia.com/gpumem and 0 nvidia.com/gpucores free, 2 fit)",
                )),
            ),
            (
                "percentage of the card's memory",
                hami.clone(),
                vec![],
                &[(HAMI_GPUMEM_PERCENTAGE, "50")],
                json!({}),
                Ok((HAMI_DEVICES_ALLOCATED, "GPU-a,NVIDIA,8192,0:;")),
            ),
            (
                "a card taken at 100 cores takes no sharer",
                hami.clone(),
                vec![(
                    &[(HAMI_GPUCORES, "100")],
                    json!({HAMI_DEVICES_ALLOCATED: "GPU-a,NVIDIA,16384,100:;"}),
                )],
                &[(HAMI_GPUMEM, "0"), (HAMI_GPUCORES, "0")],
                json!({}),
                Ok((HAMI_DEVICES_ALLOCATED, "GPU-b,NVIDIA,0,0:;")),
            ),
            (
                "100 cores wants a card without sharers",
                hami.clone(),
                vec![(m4k, share_b.clone())],
                &[(HAMI_GPUMEM, "1000"), (HAMI_GPUCORES, "100")],
                json!({}),
                Ok((HAMI_DEVICES_ALLOCATED, "GPU-a,NVIDIA,1000,100:;")),
            ),
            (
                "memory bounds the card",
                hami.clone(),
                vec![(
                    &[(HAMI_GPUMEM, "16000")],
                    json!({HAMI_DEVICES_ALLOCATED: "GPU-a,NVIDIA,16000,0:;"}),
                )],
                &[(HAMI_GPUMEM, "1000")],
                json!({}),
                Ok((HAMI_DEVICES_ALLOCATED, "GPU-b,NVIDIA,1000,0:;")),
            ),
            (
                "split count bounds the sharers",
                json!({HAMI_NODE_REGISTER: hami_reg(&[("GPU-a", 1, 16384, true), ("GPU-b", 1, 16384, true)])}),
                vec![(m4k, json!({HAMI_DEVICES_ALLOCATED: "GPU-a,NVIDIA,100,1:;"}))],
                m4k,
                json!({}),
                Ok((HAMI_DEVICES_ALLOCATED, "GPU-b,NVIDIA,4000,30:;")),
            ),
            (
                "unhealthy cards are skipped",
                json!({HAMI_NODE_REGISTER: hami_reg(&[("GPU-a", 4, 16384, false), ("GPU-b", 4, 16384, true)])}),
                vec![],
                m4k,
                json!({}),
                Ok((HAMI_DEVICES_ALLOCATED, "GPU-b,NVIDIA,4000,30:;")),
            ),
            (
                "use-gputype matches case-insensitively",
                hami.clone(),
                vec![],
                m4k,
                json!({ANN_USE_GPUTYPE: "a100,t4"}),
                Ok((HAMI_DEVICES_ALLOCATED, "GPU-a,NVIDIA,4000,30:;")),
            ),
            (
                "use-gputype without such cards",
                hami.clone(),
                vec![],
                m4k,
                json!({ANN_USE_GPUTYPE: "A100"}),
                Err((Code::Unschedulable, "Insufficient HAMi vGPU")),
            ),
            (
                "nouse-gputype",
                hami.clone(),
                vec![],
                m4k,
                json!({ANN_NOUSE_GPUTYPE: "T4"}),
                Err((Code::Unschedulable, "0 fit")),
            ),
            (
                "unassigned pods are charged to every card",
                hami.clone(),
                vec![(&[(HAMI_GPUMEM, "10000")], json!({}))],
                &[(HAMI_GPUMEM, "8000")],
                json!({}),
                Err((Code::Unschedulable, "Insufficient HAMi vGPU")),
            ),
            (
                "node without registration",
                json!({}),
                vec![],
                m4k,
                json!({}),
                Err((
                    Code::UnschedulableAndUnresolvable,
                    "node(s) had no HAMi vGPU registration (hami.io/node-nvidia-register)",
                )),
            ),
            (
                "malformed registration",
                json!({HAMI_NODE_REGISTER: "GPU-a,4"}),
                vec![],
                m4k,
                json!({}),
                Err((
                    Code::UnschedulableAndUnresolvable,
                    "node annotation hami.io/node-nvidia-register: card entry \"GPU-a,4\" has too few fields",
                )),
            ),
            (
                "registration memory out of range",
                json!({HAMI_NODE_REGISTER: hami_reg(&[("GPU-a", 4, 1 << 40, true)])}),
                vec![],
                m4k,
                json!({}),
                Err((
                    Code::UnschedulableAndUnresolvable,
                    "node annotation hami.io/node-nvidia-register: card \"GPU-a\": count must be in [0, 1000], devmem in [0, 1073741824]",
                )),
            ),
            (
                "volcano registration with a bad count",
                json!({VOLCANO_NODE_REGISTER: "GPU-a,many,16384,T4,true:"}),
                vec![],
                &[(VOLCANO_VGPU_MEMORY, "1024")],
                json!({}),
                Err((
                    Code::UnschedulableAndUnresolvable,
                    "node annotation volcano.sh/node-vgpu-register: count \"many\" is not an integer in [0, 1000]",
                )),
            ),
            (
                "an out-of-range assignment falls back to the requests",
                hami.clone(),
                vec![(
                    &[(HAMI_GPUMEM, "10000")],
                    json!({HAMI_DEVICES_ALLOCATED: "GPU-a,NVIDIA,99999999999999999,0:;"}),
                )],
                &[(HAMI_GPUMEM, "8000")],
                json!({}),
                Err((Code::Unschedulable, "Insufficient HAMi vGPU")),
            ),
            (
                "hami legacy registration",
                json!({HAMI_NODE_REGISTER: "GPU-a,4,16384,100,NVIDIA-Tesla T4,0,true:"}),
                vec![],
                m4k,
                json!({}),
                Ok((HAMI_DEVICES_ALLOCATED, "GPU-a,NVIDIA,4000,30:;")),
            ),
            (
                "volcano two cards",
                volcano.clone(),
                vec![],
                &[
                    (VOLCANO_VGPU_NUMBER, "2"),
                    (VOLCANO_VGPU_MEMORY, "2048"),
                    (VOLCANO_VGPU_CORES, "50"),
                ],
                json!({}),
                Ok((
                    VOLCANO_VGPU_IDS,
                    "GPU-a,NVIDIA,2048,50:GPU-b,NVIDIA,2048,50:",
                )),
            ),
            (
                "volcano packs onto the used card",
                volcano.clone(),
                vec![(
                    &[(VOLCANO_VGPU_MEMORY, "1000")],
                    json!({VOLCANO_VGPU_IDS: "GPU-b,NVIDIA,1000,0:"}),
                )],
                &[(VOLCANO_VGPU_MEMORY, "1024")],
                json!({}),
                Ok((VOLCANO_VGPU_IDS, "GPU-b,NVIDIA,1024,0:")),
            ),
            (
                "volcano pod on a HAMi-only node",
                hami.clone(),
                vec![],
                &[(VOLCANO_VGPU_MEMORY, "1024")],
                json!({}),
                Err((
                    Code::UnschedulableAndUnresolvable,
                    "volcano.sh/node-vgpu-register",
                )),
            ),
        ];
        for (name, node_ann, on_node, reqs, pod_ann, want) in cases {
            let mut n = gpu_node(node_ann);
            for (i, (r, a)) in on_node.into_iter().enumerate() {
                n.add_pod(placed(&format!("old{i}"), r, a));
            }
            let mut b = with_reqs("p", reqs);
            b.0["metadata"]["annotations"] = pod_ann;
            let got = reserve(&b.info(), n);
            match want {
                Ok((key, val)) => {
                    let a = got.unwrap_or_else(|e| panic!("{name}: {}", e.message()));
                    assert_eq!(a.get(key).map(String::as_str), Some(val), "{name}: {a:?}");
                    let fam = if key == HAMI_DEVICES_ALLOCATED {
                        Family::Hami
                    } else {
                        Family::Volcano
                    };
                    assert_eq!(a.get(fam.to_allocate()).map(String::as_str), Some(val));
                    assert_eq!(a.get(fam.node_key()).map(String::as_str), Some("n1"));
                    assert_eq!(
                        a.get(fam.bind_phase()).map(String::as_str),
                        Some("allocating")
                    );
                }
                Err((code, sub)) => {
                    let e = got.expect_err(name);
                    assert_eq!(e.code, code, "{name}: {}", e.message());
                    assert!(e.message().contains(sub), "{name}: {}", e.message());
                }
            }
        }
    }

    #[test]
    fn containers_get_their_own_segments() {
        // HAMi: one `;`-ended segment per container of spec.containers (an empty one
        // for containers without a vGPU request).
        let b = with_reqs("p", &[(HAMI_GPUMEM, "1000")])
            .container(json!({"cpu": "1"}))
            .container(json!({HAMI_GPUMEM: "2000", HAMI_GPUCORES: "10"}));
        let n = gpu_node(json!({HAMI_NODE_REGISTER: two_cards()}));
        let a = reserve(&b.info(), n).expect("fits");
        assert_eq!(
            a[HAMI_DEVICES_ALLOCATED],
            "GPU-a,NVIDIA,1000,0:;;GPU-a,NVIDIA,2000,10:;"
        );
        // A pod asking for vcuda and HAMi gets both assignments.
        let n = {
            let mut b = node("n1")
                .cpu("32")
                .mem("128Gi")
                .alloc(super::super::VCUDA_CORE, "200")
                .alloc(super::super::VCUDA_MEMORY, "64");
            b.0["metadata"]["annotations"] = json!({HAMI_NODE_REGISTER: two_cards()});
            b.info()
        };
        let b = with_reqs("p", &[(super::super::VCUDA_CORE, "50")])
            .container(json!({HAMI_GPUMEM: "1000"}));
        let a = reserve(&b.info(), n).expect("fits");
        assert_eq!(a[HAMI_DEVICES_ALLOCATED], ";GPU-a,NVIDIA,1000,0:;");
        assert_eq!(a[&format!("{}0", super::super::ANNOTATION_IDX_PREFIX)], "0");
    }

    #[test]
    fn score_prefers_the_used_card_and_unreserve_clears() {
        let p = GpuShare::default();
        let mut used = gpu_node(json!({HAMI_NODE_REGISTER: two_cards()}));
        used.add_pod(placed(
            "old",
            &[(HAMI_GPUMEM, "8192")],
            json!({HAMI_DEVICES_ALLOCATED: "GPU-b,NVIDIA,8192,0:;"}),
        ));
        let fresh = gpu_node(json!({HAMI_NODE_REGISTER: two_cards()}));
        let pod = with_reqs("p", &[(HAMI_GPUMEM, "4096")]).info();
        let mut st = CycleState::new();
        let snap = Snapshot::new();
        let (_, s) = p.pre_filter(&mut st, &pod, &snap);
        assert!(s.is_success());
        // (8192 + 4096) / 16384 = 75; fresh: 25.
        assert_eq!(p.score(&st, &pod, &used, &snap).expect("score"), 75);
        assert_eq!(p.score(&st, &pod, &fresh, &snap).expect("score"), 25);

        let mut s = Snapshot::new();
        s.add_nodes([fresh]);
        assert!(p.reserve(&mut st, &pod, "n1", &s).is_success());
        assert!(st.pod_annotations().is_some_and(|a| a.len() == 4));
        p.unreserve(&mut st, &pod, "n1", &s);
        assert!(st.pod_annotations().is_none_or(|a| a.is_empty()));
    }

    #[test]
    fn bind_time_is_stamped_for_vgpu_assignments() {
        let mut a = PodAnnotations::new();
        a.insert(HAMI_VGPU_NODE.into(), "n1".into());
        super::super::stamp_predicate_time(&mut a);
        assert!(
            a[corral_api::keys::HAMI_BIND_TIME]
                .parse::<u64>()
                .expect("secs")
                > 0
        );
        assert!(!a.contains_key(corral_api::keys::VOLCANO_BIND_TIME));
    }

    /// `families` leaves a family out: its requests are not accounted (PreFilter
    /// skips a pod asking only for them); an unknown family is an error.
    #[test]
    fn families_select_the_accounted_requests() {
        let volcano_pod = with_reqs(
            "v",
            &[(VOLCANO_VGPU_NUMBER, "1"), (VOLCANO_VGPU_MEMORY, "1024")],
        )
        .info();
        let hami_pod = with_reqs("h", &[(HAMI_GPUMEM, "1024")]).info();
        let only = |fams: &[&str]| GpuShare {
            args: super::super::GpuShareArgs {
                families: fams.iter().map(|f| f.to_string()).collect(),
                ..Default::default()
            },
        };
        let s = Snapshot::new();
        let pre =
            |p: &GpuShare, pod: &PodInfo| p.pre_filter(&mut CycleState::new(), pod, &s).1.code;
        assert_eq!(pre(&GpuShare::default(), &volcano_pod), Code::Success);
        assert_eq!(pre(&only(&["vcuda", "hami"]), &volcano_pod), Code::Skip);
        assert_eq!(pre(&only(&["vcuda", "hami"]), &hami_pod), Code::Success);
        assert_eq!(pre(&only(&["volcano"]), &hami_pod), Code::Skip);
        let e = super::super::factory(Some(&json!({"families": ["vcuda", "amd"]})))
            .err()
            .expect("unknown family");
        assert!(e.contains("families[1]") && e.contains("amd"), "{e}");
    }
}
