//! Loading, attaching and pinning the eBPF programs, and typed access to
//! their maps. This is the only module that talks to the kernel's BPF API.
//!
//! Layout under the pin directory (default /sys/fs/bpf/corral):
//! - `maps/<map name>`: every map, pinned by name; a restarted agent
//!   re-opens them, so buckets, counters, conntrack and policy survive.
//! - `links/<ifindex>_<in|out>`: TCX links (`--attach tcx`). A restarted
//!   agent atomically replaces the program inside the existing link (no
//!   window without a program). In netlink (clsact) mode, the default,
//!   filters use a fixed priority/handle, are owned by the interface (no
//!   pins) and an existing filter is left in place on restart.
//!
//! Why clsact is the default although TCX is the newer API: creating a TCX
//! link waits for an RCU grace period while holding RTNL
//! (`tcx_entry_sync()` → `synchronize_rcu()` in the kernel), twice per
//! endpoint; measured 8–30 ms per registration on the 2-CPU test VM, which
//! alone exceeded the whole ADD of the reference `bridge` plugin. Adding a
//! clsact qdisc and two cls_bpf filters takes ~1 ms (BENCHMARKS.md, CNI).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use aya::maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, PerCpuHashMap, RingBuf};
use aya::programs::links::{FdLink, Link as _, PinnedLink};
use aya::programs::tc::{NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle};
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};
use tracing::{debug, info, warn};

use crate::abi::{
    self, Bucket, Counters, DIR_EGRESS, DIR_INGRESS, EndpointCfg, EpDirKey, LbBe, LbBeKey, LbSvc,
    NUM_CLASSES, NUM_DIRS, NodeCfg, PolicyKey, PolicyKeyData, PolicyValue, SvcKey, SvcValue,
    TierValue,
};
use crate::netlink::{Nl, TcObject};

mod lb_flows;
mod pins;

/// BPF_NOEXIST: create only, never overwrite (keeps bucket/counter state).
const BPF_NOEXIST: u64 = 1;
const BPF_ANY: u64 = 0;
const NL_PRIORITY: u16 = 0xc0;
const NL_HANDLE_MINOR: u16 = 0xc0;

pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/corral";
const MAPS: [&str; 22] = [
    "corral_endpoints",
    "corral_ep_buckets",
    "corral_counters",
    "corral_node_cfg",
    "corral_class_buckets",
    "corral_policy",
    "corral_ct",
    "corral_frag",
    "corral_svc",
    "corral_defer",
    "corral_tier",
    "corral_events",
    "corral_monitor",
    "corral_events_lost",
    "corral_lb_cfg",
    "corral_lb_svc",
    "corral_lb_be",
    "corral_lb_fwd",
    "corral_lb_rev",
    "corral_lb_aff",
    "corral_np_fwd",
    "corral_np_rev",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// clsact filters via netlink (fast attach; see the module docs).
    Auto,
    /// TCX links, pinned under `<pin-dir>/links` (kernel >= 6.6).
    Tcx,
    /// clsact qdisc + cls_bpf filters via netlink.
    Netlink,
}

/// The clsact ingress / egress hooks (`tc filter ... ingress|egress`).
const TC_H_INGRESS_HOOK: u32 = 0xffff_fff2;
const TC_H_EGRESS_HOOK: u32 = 0xffff_fff3;
/// Handle of the clsact / ingress qdisc.
const TC_H_CLSACT: u32 = 0xffff_0000;

/// How Corral's programs sit on one interface.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Placement {
    /// "tcx", "netlink pref N" (per hook, joined by '/' when they differ)
    pub how: String,
    /// foreign filters/programs that run before Corral's
    pub ahead: Vec<String>,
}

/// Corral's own cls_bpf filter (any pref).
fn is_ours(f: &TcObject) -> bool {
    f.kind == "bpf" && f.handle == NL_HANDLE_MINOR as u32 && f.bpf_name.starts_with("corral_")
}

enum NlPlan {
    /// netlink prefs per hook [ingress, egress], and the pref of our
    /// filter of an earlier run that now sits behind a foreign one
    Prefs {
        prefs: [u16; 2],
        stale: [Option<u16>; 2],
    },
    /// netlink cannot run first here
    Tcx(String),
}

/// Picks the netlink prefs that put Corral first on `idx`'s hooks.
fn nl_plan(idx: u32) -> Result<NlPlan> {
    let mut nl = Nl::open().map_err(|e| anyhow!("{e}"))?;
    let qd = nl.qdiscs(idx).map_err(|e| anyhow!("{e}"))?;
    if let Some(q) = qd
        .iter()
        .find(|q| q.handle == TC_H_CLSACT && q.kind != "clsact")
    {
        return Ok(NlPlan::Tcx(format!(
            "{} qdisc instead of clsact (no egress hook for filters)",
            q.kind
        )));
    }
    let mut prefs = [NL_PRIORITY; 2];
    let mut stale = [None; 2];
    for (i, (parent, hook)) in [(TC_H_INGRESS_HOOK, "ingress"), (TC_H_EGRESS_HOOK, "egress")]
        .into_iter()
        .enumerate()
    {
        let f = nl.filters(idx, parent).map_err(|e| anyhow!("{e}"))?;
        let mine = f.iter().find(|x| is_ours(x)).map(|x| x.prio);
        // a dump also lists each pref's head (handle 0, no program name)
        let first_foreign = f
            .iter()
            .filter(|x| Some(x.prio) != mine)
            .map(|x| x.prio)
            .min();
        match (mine, first_foreign) {
            (Some(m), None) => prefs[i] = m,
            (Some(m), Some(ff)) if m < ff => prefs[i] = m,
            (_, Some(1)) => {
                let k = f.iter().find(|x| x.prio == 1).map(|x| x.kind.clone());
                return Ok(NlPlan::Tcx(format!(
                    "foreign {} filter at pref 1 on the {hook} hook",
                    k.unwrap_or_default()
                )));
            }
            (m, Some(ff)) => {
                prefs[i] = NL_PRIORITY.min(ff - 1);
                stale[i] = m;
            }
            (None, None) => {}
        }
    }
    Ok(NlPlan::Prefs { prefs, stale })
}

fn nl_detach(ifname: &str, at: TcAttachType, prio: u16) {
    match SchedClassifierLink::attached(ifname, at, prio, TcHandle::new(0, NL_HANDLE_MINOR), None) {
        Ok(link) => {
            if let Err(e) = link.detach() {
                debug!(ifname, error = %e, "netlink detach");
            }
        }
        Err(e) => debug!(ifname, error = %e, "netlink detach: interface gone"),
    }
}

pub struct Datapath {
    bpf: Ebpf,
    pin_dir: PathBuf,
    mode: AttachMode,
    /// serving endpoint addresses of each UDP frontend at the last
    /// `sync_lb` (None before the first): see `lb_flows`
    lb_serving: Option<lb_flows::Serving>,
}

fn kernel_at_least(major: u32, minor: u32) -> bool {
    let rel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = rel
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse::<u32>().ok());
    let (ma, mi) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (ma, mi) >= (major, minor)
}

/// Mounts bpffs at /sys/fs/bpf if `dir` lives there and it is not mounted.
pub fn ensure_bpffs(dir: &Path) -> Result<()> {
    let root = Path::new("/sys/fs/bpf");
    if !dir.starts_with(root) {
        return Ok(());
    }
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let mounted = rustix::fs::statfs(root)
        .map(|s| s.f_type == BPF_FS_MAGIC)
        .unwrap_or(false);
    if !mounted {
        info!("mounting bpffs at /sys/fs/bpf");
        rustix::mount::mount(
            "bpf",
            "/sys/fs/bpf",
            "bpf",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .context("mounting bpffs at /sys/fs/bpf")?;
    }
    Ok(())
}

pub fn ifindex(ifname: &str) -> Result<u32> {
    if ifname.is_empty() || ifname.contains('/') || ifname.len() > 15 {
        bail!("invalid interface name {ifname:?}");
    }
    // ioctl in the agent's network namespace (not /sys/class/net, which
    // shows the namespace sysfs was mounted in)
    use rustix::net::{AddressFamily, SocketType, netdevice, socket};
    let sock = socket(AddressFamily::INET, SocketType::DGRAM, None)
        .context("socket for interface lookup")?;
    netdevice::name_to_index(&sock, ifname)
        .with_context(|| format!("interface {ifname:?} not found"))
}

fn map_err(name: &str) -> anyhow::Error {
    anyhow!("eBPF object has no map {name}")
}

impl Datapath {
    /// Loads the programs, creating or re-opening the pinned maps.
    pub fn open(pin_dir: &Path, mode: AttachMode) -> Result<Self> {
        ensure_bpffs(pin_dir)?;
        let maps_dir = pin_dir.join("maps");
        std::fs::create_dir_all(&maps_dir)
            .with_context(|| format!("creating {}", maps_dir.display()))?;
        std::fs::create_dir_all(pin_dir.join("links"))
            .with_context(|| format!("creating {}/links", pin_dir.display()))?;
        pins::drop_incompatible(&maps_dir, &MAPS, abi::BPF_OBJECT)?;
        let adopted = MAPS.iter().filter(|m| maps_dir.join(m).exists()).count();
        let mut bpf = EbpfLoader::new()
            .default_map_pin_directory(&maps_dir)
            .load(abi::BPF_OBJECT)
            .context("loading eBPF object (needs root and CONFIG_BPF)")?;
        for name in [
            "corral_from_pod",
            "corral_to_pod",
            "corral_node_out",
            "corral_node_in",
        ] {
            let prog: &mut SchedClassifier = bpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("eBPF object has no program {name}"))?
                .try_into()?;
            prog.load()
                .with_context(|| format!("verifier rejected {name}"))?;
        }
        let mode = match mode {
            AttachMode::Auto => AttachMode::Netlink,
            AttachMode::Tcx if !kernel_at_least(6, 6) => {
                bail!("--attach tcx needs Linux >= 6.6 (use --attach netlink)")
            }
            m => m,
        };
        info!(pin_dir = %pin_dir.display(), ?mode, adopted_maps = adopted, "eBPF programs loaded");
        Ok(Self {
            lb_serving: None,
            bpf,
            pin_dir: pin_dir.to_path_buf(),
            mode,
        })
    }

    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    fn link_pin(&self, ifindex: u32, dir: u32) -> PathBuf {
        let d = if dir == DIR_EGRESS { "in" } else { "out" };
        self.pin_dir.join("links").join(format!("{ifindex}_{d}"))
    }

    /// Attaches both programs to the host side interface `ifname`, first
    /// in line: TCX links go to the head of the TCX chain (which runs
    /// before every classic tc filter); netlink filters get a pref below
    /// every foreign filter on the hook. When netlink cannot be first (a
    /// foreign filter at pref 1, as the reference `bandwidth` plugin
    /// installs, or an `ingress` qdisc instead of clsact), the interface
    /// is attached with TCX instead (kernel >= 6.6; otherwise attached
    /// behind and reported by [`Datapath::placement`]).
    /// Returns true when an existing attachment was adopted.
    pub fn attach(&mut self, ifname: &str) -> Result<bool> {
        let idx = ifindex(ifname)?;
        let mut adopted = false;
        let plan = match self.mode {
            AttachMode::Tcx => None,
            _ => Some(nl_plan(idx)?),
        };
        let tcx_fallback = matches!(plan, Some(NlPlan::Tcx(_))) && kernel_at_least(6, 6);
        if let Some(NlPlan::Tcx(why)) = &plan {
            if tcx_fallback {
                info!(ifname, reason = %why, "netlink attach cannot run first; using TCX for this interface");
            } else {
                warn!(ifname, reason = %why, "a foreign tc filter runs before Corral (no TCX on this kernel)");
            }
        }
        // host ingress = traffic from the pod = pod egress
        for (i, (prog_name, at, dir)) in [
            ("corral_from_pod", TcAttachType::Ingress, DIR_EGRESS),
            ("corral_to_pod", TcAttachType::Egress, DIR_INGRESS),
        ]
        .into_iter()
        .enumerate()
        {
            let pin = self.link_pin(idx, dir);
            let prog: &mut SchedClassifier = self
                .bpf
                .program_mut(prog_name)
                .ok_or_else(|| map_err(prog_name))?
                .try_into()?;
            // a pinned TCX link (also one made before a switch to netlink
            // mode) is adopted by replacing its program: never a second
            // attachment, never a gap
            if pin.exists() {
                match Self::replace_in_link(prog, &pin) {
                    Ok(()) => {
                        adopted = true;
                        debug!(ifname, prog_name, "replaced program in pinned TCX link");
                        continue;
                    }
                    Err(e) => {
                        warn!(ifname, error = %e, "stale pinned link, re-attaching");
                        let _ = std::fs::remove_file(&pin);
                    }
                }
            }
            let nl = match &plan {
                Some(NlPlan::Prefs { prefs, stale }) => Some((prefs[i], stale[i])),
                Some(NlPlan::Tcx(_)) if !tcx_fallback => Some((NL_PRIORITY, None)),
                _ => None,
            };
            match nl {
                None => {
                    let id = prog
                        .attach_with_options(
                            ifname,
                            at,
                            TcAttachOptions::TcxOrder(LinkOrder::first()),
                        )
                        .with_context(|| format!("TCX attach {prog_name} to {ifname}"))?;
                    let link = prog.take_link(id)?;
                    let fd: FdLink = link.try_into()?;
                    fd.pin(&pin)
                        .with_context(|| format!("pinning link {}", pin.display()))?;
                }
                Some((pref, stale)) => {
                    if let Err(e) = aya::programs::tc::qdisc_add_clsact(ifname) {
                        debug!(ifname, error = %e, "clsact add (probably exists)");
                    }
                    let opts = NlOptions {
                        priority: pref,
                        handle: TcHandle::new(0, NL_HANDLE_MINOR),
                        ..Default::default()
                    };
                    match prog.attach_with_options(ifname, at, TcAttachOptions::Netlink(opts)) {
                        Ok(id) => {
                            // keep the filter when the agent exits
                            let link = prog.take_link(id)?;
                            std::mem::forget(link);
                        }
                        Err(e)
                            if format!("{e:?}").contains("EEXIST")
                                || e.to_string().contains("exists") =>
                        {
                            adopted = true;
                        }
                        Err(e) => {
                            return Err(e).with_context(|| {
                                format!("netlink attach {prog_name} to {ifname} at pref {pref}")
                            });
                        }
                    }
                    // our filter of an earlier run, now behind a foreign
                    // one: removed only after the new one is in place
                    if let Some(old) = stale
                        && old != pref
                    {
                        nl_detach(ifname, at, old);
                    }
                }
            }
        }
        Ok(adopted)
    }

    /// How Corral is attached on `ifname` and what runs before it (live
    /// from the kernel: TCX programs and classic tc filters).
    pub fn placement(&self, ifname: &str, idx: u32) -> Placement {
        let mut p = Placement::default();
        let mut how = Vec::new();
        for (hook, at, parent, ours) in [
            (
                "host ingress (pod egress)",
                TcAttachType::Ingress,
                TC_H_INGRESS_HOOK,
                "corral_from_pod",
            ),
            (
                "host egress (pod ingress)",
                TcAttachType::Egress,
                TC_H_EGRESS_HOOK,
                "corral_to_pod",
            ),
        ] {
            let tcx: Vec<(String, u32)> = SchedClassifier::query_tcx(ifname, at)
                .map(|(_, v)| {
                    v.iter()
                        .map(|i| (i.name_as_str().unwrap_or("").to_string(), i.id()))
                        .collect()
                })
                .unwrap_or_default();
            let filters = Nl::open()
                .and_then(|mut nl| nl.filters(idx, parent))
                .unwrap_or_default();
            let mine_tcx = tcx.iter().position(|(n, _)| n == ours);
            let mine_nl = filters.iter().find(|f| is_ours(f)).map(|f| f.prio);
            match (mine_tcx, mine_nl) {
                (Some(pos), _) => {
                    how.push("tcx".to_string());
                    for (n, id) in &tcx[..pos] {
                        p.ahead.push(format!("{hook}: TCX program {n:?} (id {id})"));
                    }
                }
                (None, Some(prio)) => {
                    how.push(format!("netlink pref {prio}"));
                    for (n, id) in &tcx {
                        p.ahead.push(format!("{hook}: TCX program {n:?} (id {id})"));
                    }
                    let mut seen = std::collections::BTreeSet::new();
                    for f in filters.iter().filter(|f| f.prio < prio) {
                        if seen.insert((f.prio, f.kind.clone())) {
                            p.ahead
                                .push(format!("{hook}: tc filter {} pref {}", f.kind, f.prio));
                        }
                    }
                }
                (None, None) => how.push("missing".to_string()),
            }
        }
        how.dedup();
        p.how = how.join("/");
        p
    }

    fn replace_in_link(prog: &mut SchedClassifier, pin: &Path) -> Result<()> {
        let pinned = PinnedLink::from_pin(pin)?;
        let fd: FdLink = pinned.into();
        let link = SchedClassifierLink::try_from(fd)?;
        let id = prog.attach_to_link(link)?;
        // the pin keeps the link alive; dropping our fd must not detach it
        let link = prog.take_link(id)?;
        drop(link);
        Ok(())
    }

    /// Detaches from `ifname`/`ifindex` (the interface may already be gone).
    pub fn detach(&mut self, ifname: &str, idx: u32) -> Result<()> {
        for (at, dir) in [
            (TcAttachType::Ingress, DIR_EGRESS),
            (TcAttachType::Egress, DIR_INGRESS),
        ] {
            let pin = self.link_pin(idx, dir);
            if pin.exists() {
                match PinnedLink::from_pin(&pin) {
                    Ok(p) => {
                        // unpin; dropping the last fd destroys the link
                        drop(p.unpin());
                    }
                    Err(_) => {
                        let _ = std::fs::remove_file(&pin);
                    }
                }
            } else if self.mode != AttachMode::Tcx && ifindex(ifname).ok() == Some(idx) {
                // filters belong to the interface: gone with it. It may
                // vanish meanwhile (CNI DEL deletes the veth in parallel),
                // so failures here are not errors. A different interface
                // under the same name (re-created) is left alone.
                let parent = if at == TcAttachType::Ingress {
                    TC_H_INGRESS_HOOK
                } else {
                    TC_H_EGRESS_HOOK
                };
                let prios: Vec<u16> = Nl::open()
                    .and_then(|mut nl| nl.filters(idx, parent))
                    .unwrap_or_default()
                    .iter()
                    .filter(|f| is_ours(f))
                    .map(|f| f.prio)
                    .collect();
                for prio in prios {
                    nl_detach(ifname, at, prio);
                }
            }
        }
        Ok(())
    }

    fn hash<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &str,
    ) -> Result<HashMap<&mut MapData, K, V>> {
        let m = self.bpf.map_mut(name).ok_or_else(|| map_err(name))?;
        Ok(HashMap::try_from(m)?)
    }

    /// Installs the endpoint config; creates (never resets) its buckets and
    /// counters.
    pub fn set_endpoint(&mut self, idx: u32, cfg: &EndpointCfg) -> Result<()> {
        {
            let mut buckets: HashMap<_, EpDirKey, Bucket> = self.hash("corral_ep_buckets")?;
            for dir in [DIR_INGRESS, DIR_EGRESS] {
                let b = Bucket {
                    tokens: cfg.limits[dir as usize].burst_bytes as i64,
                    ..Default::default()
                };
                let _ = buckets.insert(EpDirKey { ifindex: idx, dir }, b, BPF_NOEXIST);
            }
        }
        {
            let nr = aya::util::nr_cpus().map_err(|(_, e)| e)?;
            let m = self
                .bpf
                .map_mut("corral_counters")
                .ok_or_else(|| map_err("corral_counters"))?;
            let mut counters: PerCpuHashMap<_, EpDirKey, Counters> = PerCpuHashMap::try_from(m)?;
            for dir in [DIR_INGRESS, DIR_EGRESS] {
                let zero = aya::maps::PerCpuValues::try_from(vec![Counters::default(); nr])?;
                let _ = counters.insert(EpDirKey { ifindex: idx, dir }, zero, BPF_NOEXIST);
            }
        }
        let mut eps: HashMap<_, u32, EndpointCfg> = self.hash("corral_endpoints")?;
        eps.insert(idx, cfg, BPF_ANY)
            .with_context(|| format!("writing endpoint config for ifindex {idx}"))?;
        Ok(())
    }

    pub fn endpoint(&mut self, idx: u32) -> Result<Option<EndpointCfg>> {
        let eps: HashMap<_, u32, EndpointCfg> = self.hash("corral_endpoints")?;
        Ok(eps.get(&idx, 0).ok())
    }

    pub fn endpoint_ifindexes(&mut self) -> Result<Vec<u32>> {
        let eps: HashMap<_, u32, EndpointCfg> = self.hash("corral_endpoints")?;
        Ok(eps.keys().filter_map(|k| k.ok()).collect())
    }

    pub fn remove_endpoint(&mut self, idx: u32) -> Result<()> {
        {
            let mut eps: HashMap<_, u32, EndpointCfg> = self.hash("corral_endpoints")?;
            let _ = eps.remove(&idx);
        }
        {
            let mut b: HashMap<_, EpDirKey, Bucket> = self.hash("corral_ep_buckets")?;
            for dir in [DIR_INGRESS, DIR_EGRESS] {
                let _ = b.remove(&EpDirKey { ifindex: idx, dir });
            }
        }
        let m = self
            .bpf
            .map_mut("corral_counters")
            .ok_or_else(|| map_err("corral_counters"))?;
        let mut c: PerCpuHashMap<_, EpDirKey, Counters> = PerCpuHashMap::try_from(m)?;
        for dir in [DIR_INGRESS, DIR_EGRESS] {
            let _ = c.remove(&EpDirKey { ifindex: idx, dir });
        }
        Ok(())
    }

    /// Sum over CPUs of one endpoint direction's counters.
    pub fn counters(&self, idx: u32, dir: u32) -> Result<Counters> {
        let m = self
            .bpf
            .map("corral_counters")
            .ok_or_else(|| map_err("corral_counters"))?;
        let c: PerCpuHashMap<_, EpDirKey, Counters> = PerCpuHashMap::try_from(m)?;
        let mut sum = Counters::default();
        if let Ok(v) = c.get(&EpDirKey { ifindex: idx, dir }, 0) {
            for x in v.iter() {
                sum.add(x);
            }
        }
        Ok(sum)
    }

    pub fn bucket(&mut self, idx: u32, dir: u32) -> Result<Option<Bucket>> {
        let b: HashMap<_, EpDirKey, Bucket> = self.hash("corral_ep_buckets")?;
        Ok(b.get(&EpDirKey { ifindex: idx, dir }, 0).ok())
    }

    /// Node aggregate budget per direction (index DIR_*).
    pub fn set_node_cfg(&mut self, cfgs: &[NodeCfg; NUM_DIRS]) -> Result<()> {
        {
            let m = self
                .bpf
                .map_mut("corral_class_buckets")
                .ok_or_else(|| map_err("corral_class_buckets"))?;
            let mut buckets: Array<_, Bucket> = Array::try_from(m)?;
            for (dir, cfg) in cfgs.iter().enumerate() {
                for c in 0..=NUM_CLASSES {
                    let i = (dir * (NUM_CLASSES + 1) + c) as u32;
                    let cur = buckets.get(&i, 0)?;
                    if cur.last_ns == 0 {
                        let b = Bucket {
                            tokens: cfg.burst_bytes as i64,
                            ..Default::default()
                        };
                        buckets.set(i, b, 0)?;
                    }
                }
            }
        }
        let m = self
            .bpf
            .map_mut("corral_node_cfg")
            .ok_or_else(|| map_err("corral_node_cfg"))?;
        let mut a: Array<_, NodeCfg> = Array::try_from(m)?;
        for (dir, cfg) in cfgs.iter().enumerate() {
            a.set(dir as u32, cfg, 0)?;
        }
        Ok(())
    }

    // ---- LPM maps keyed by PolicyKey: "corral_policy" (NetworkPolicy)
    // and "corral_tier" (policy tiers), synced without an enforcement gap:
    // every desired entry written first, stale ones removed after.

    fn lpm<V: aya::Pod>(&mut self, map: &str) -> Result<LpmTrie<&mut MapData, PolicyKeyData, V>> {
        let m = self.bpf.map_mut(map).ok_or_else(|| map_err(map))?;
        Ok(LpmTrie::try_from(m)?)
    }

    fn upsert_lpm<V: aya::Pod>(
        &mut self,
        map: &str,
        desired: &BTreeMap<PolicyKey, V>,
    ) -> Result<()> {
        let mut trie = self.lpm::<V>(map)?;
        for (k, v) in desired {
            trie.insert(&k.to_lpm(), v, BPF_ANY)
                .with_context(|| format!("writing {map} entry {k:?}"))?;
        }
        Ok(())
    }

    fn remove_stale_lpm<V: aya::Pod>(
        &mut self,
        map: &str,
        desired: &BTreeMap<PolicyKey, V>,
    ) -> Result<usize> {
        let mut trie = self.lpm::<V>(map)?;
        let stale: Vec<PolicyKey> = trie
            .keys()
            .filter_map(|k| k.ok())
            .map(|k| PolicyKey::from_lpm(&k))
            .filter(|k| !desired.contains_key(k))
            .collect();
        for k in &stale {
            let _ = trie.remove(&k.to_lpm());
        }
        Ok(stale.len())
    }

    fn lpm_entries<V: aya::Pod>(&self, map: &str) -> Result<usize> {
        let m = self.bpf.map(map).ok_or_else(|| map_err(map))?;
        let trie: LpmTrie<_, PolicyKeyData, V> = LpmTrie::try_from(m)?;
        Ok(trie.keys().count())
    }

    /// Writes every desired policy entry (first half of a gapless sync).
    pub fn upsert_policy(&mut self, desired: &BTreeMap<PolicyKey, PolicyValue>) -> Result<()> {
        self.upsert_lpm("corral_policy", desired)
    }

    /// Removes entries not in `desired` (second half of a gapless sync).
    pub fn remove_stale_policy(
        &mut self,
        desired: &BTreeMap<PolicyKey, PolicyValue>,
    ) -> Result<usize> {
        self.remove_stale_lpm("corral_policy", desired)
    }

    /// Writes every desired tier entry (first half of a gapless sync).
    pub fn upsert_tier(&mut self, desired: &BTreeMap<PolicyKey, TierValue>) -> Result<()> {
        self.upsert_lpm("corral_tier", desired)
    }

    /// Removes tier entries not in `desired` (second half of a gapless sync).
    pub fn remove_stale_tier(&mut self, desired: &BTreeMap<PolicyKey, TierValue>) -> Result<usize> {
        self.remove_stale_lpm("corral_tier", desired)
    }

    pub fn policy_entries(&self) -> Result<usize> {
        self.lpm_entries::<PolicyValue>("corral_policy")
    }

    pub fn tier_entries(&self) -> Result<usize> {
        self.lpm_entries::<TierValue>("corral_tier")
    }

    /// Makes map `corral_svc` hold exactly `desired` (Service frontends
    /// whose egress verdict is deferred past the DNAT): additions first.
    pub fn sync_services(&mut self, desired: &std::collections::BTreeSet<SvcKey>) -> Result<()> {
        let mut m: HashMap<_, SvcKey, SvcValue> = self.hash("corral_svc")?;
        let cur: std::collections::BTreeSet<SvcKey> = m.keys().filter_map(|k| k.ok()).collect();
        for k in desired.difference(&cur) {
            m.insert(k, SvcValue::default(), BPF_ANY)
                .with_context(|| format!("writing Service frontend {k:?}"))?;
        }
        for k in cur.difference(desired) {
            let _ = m.remove(k);
        }
        Ok(())
    }

    /// Switches Corral's Service translation on or off (`corral_lb_cfg`).
    /// On keeps the NodePort bit a previous agent left (until the next
    /// `sync_lb` sets it from the table), so a restart does not pause
    /// NodePort translation.
    pub fn set_lb(&mut self, on: bool) -> Result<()> {
        let m = self
            .bpf
            .map_mut("corral_lb_cfg")
            .ok_or_else(|| map_err("corral_lb_cfg"))?;
        let mut a: Array<&mut MapData, u32> = Array::try_from(m)?;
        let v = if on {
            a.get(&0, 0).unwrap_or(0) | abi::LB_ON
        } else {
            0
        };
        a.set(0, v, 0)?;
        Ok(())
    }

    /// Sets the NodePort bit of `corral_lb_cfg` (translation on only).
    fn set_lb_nodeports(&mut self, any: bool) -> Result<()> {
        let m = self
            .bpf
            .map_mut("corral_lb_cfg")
            .ok_or_else(|| map_err("corral_lb_cfg"))?;
        let mut a: Array<&mut MapData, u32> = Array::try_from(m)?;
        let cur = a.get(&0, 0).unwrap_or(0);
        if cur & abi::LB_ON == 0 {
            return Ok(());
        }
        let v = if any {
            cur | abi::LB_HAS_NODEPORTS
        } else {
            cur & !abi::LB_HAS_NODEPORTS
        };
        if v != cur {
            a.set(0, v, 0)?;
        }
        Ok(())
    }

    /// Makes `corral_lb_svc` / `corral_lb_be` hold exactly `table`. A
    /// frontend's id is its position in the table; its backends are
    /// written before the frontend entry, stale backends removed after, so
    /// a lookup never finds a frontend whose backends are missing.
    /// Established flows keep their backend (kernel `corral_lb_fwd`),
    /// except UDP flows whose backend is no serving endpoint of their
    /// Service any more: those are forgotten, so the client's next
    /// datagram picks a current backend (kube-proxy's UDP conntrack
    /// cleanup; TCP and SCTP connections stay, as with kube-proxy).
    pub fn sync_lb(&mut self, table: &crate::services::LbTable) -> Result<()> {
        let mut want_be = std::collections::BTreeMap::new();
        let mut want_svc = std::collections::BTreeMap::new();
        for (i, (k, entry)) in table.iter().enumerate() {
            let svc_id = i as u32 + 1;
            let bes = &entry.backends;
            for (j, b) in bes.iter().enumerate() {
                want_be.insert(
                    LbBeKey {
                        svc_id,
                        index: j as u32,
                    },
                    *b,
                );
            }
            want_svc.insert(
                *k,
                LbSvc {
                    svc_id,
                    count: bes.len() as u32,
                    affinity_s: entry.affinity_s,
                    flags: entry.flags,
                    local_count: entry.local_count,
                },
            );
        }
        {
            let mut m: HashMap<_, LbBeKey, LbBe> = self.hash("corral_lb_be")?;
            for (k, v) in &want_be {
                m.insert(k, v, BPF_ANY)
                    .with_context(|| format!("writing Service backend {k:?}"))?;
            }
        }
        {
            let mut m: HashMap<_, SvcKey, LbSvc> = self.hash("corral_lb_svc")?;
            for (k, v) in &want_svc {
                m.insert(k, v, BPF_ANY)
                    .with_context(|| format!("writing Service frontend {k:?}"))?;
            }
            let stale: Vec<SvcKey> = m
                .keys()
                .filter_map(|k| k.ok())
                .filter(|k| !want_svc.contains_key(k))
                .collect();
            for k in &stale {
                let _ = m.remove(k);
            }
        }
        let mut m: HashMap<_, LbBeKey, LbBe> = self.hash("corral_lb_be")?;
        let stale: Vec<LbBeKey> = m
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !want_be.contains_key(k))
            .collect();
        for k in &stale {
            let _ = m.remove(k);
        }
        self.forget_udp_flows(table)?;
        // the NodePort paths run only while there are node ports
        self.set_lb_nodeports(table.values().any(|e| e.flags & abi::LB_NODEPORT != 0))
    }

    pub fn service_entries(&mut self) -> Result<usize> {
        let m: HashMap<_, SvcKey, SvcValue> = self.hash("corral_svc")?;
        Ok(m.keys().count())
    }

    /// Attaches `corral_node_out` (deferred egress verdicts of flows to
    /// other nodes; with node ports, replies of this node's host-network
    /// backends to NodePort/external clients translated back) at the
    /// egress of a node device (uplink, overlay).
    pub fn attach_node_out(&mut self, ifname: &str) -> Result<()> {
        self.attach_node("corral_node_out", ifname, TcAttachType::Egress, "node")
    }

    /// Attaches `corral_node_in` (NodePort translation of traffic from
    /// outside, replies of SNATed NodePort flows) at the ingress of a node
    /// device (`--kube-proxy-replacement`).
    pub fn attach_node_in(&mut self, ifname: &str) -> Result<()> {
        self.attach_node("corral_node_in", ifname, TcAttachType::Ingress, "node_in")
    }

    /// A node-device program: a TCX link at the head, pinned as
    /// `links/<pin_prefix>_<ifindex>` (kernel >= 6.6), else a clsact
    /// filter. Idempotent; an existing pinned link gets the current program.
    fn attach_node(
        &mut self,
        name: &str,
        ifname: &str,
        hook: TcAttachType,
        pin_prefix: &str,
    ) -> Result<()> {
        let idx = ifindex(ifname)?;
        let pin = self
            .pin_dir
            .join("links")
            .join(format!("{pin_prefix}_{idx}"));
        let prog: &mut SchedClassifier = self
            .bpf
            .program_mut(name)
            .ok_or_else(|| map_err(name))?
            .try_into()?;
        if pin.exists() {
            if Self::replace_in_link(prog, &pin).is_ok() {
                return Ok(());
            }
            let _ = std::fs::remove_file(&pin);
        }
        if kernel_at_least(6, 6) {
            let id = prog
                .attach_with_options(ifname, hook, TcAttachOptions::TcxOrder(LinkOrder::first()))
                .with_context(|| format!("TCX attach {name} to {ifname}"))?;
            let fd: FdLink = prog.take_link(id)?.try_into()?;
            fd.pin(&pin)
                .with_context(|| format!("pinning link {}", pin.display()))?;
        } else {
            let _ = aya::programs::tc::qdisc_add_clsact(ifname);
            let opts = NlOptions {
                priority: NL_PRIORITY,
                handle: TcHandle::new(0, NL_HANDLE_MINOR),
                ..Default::default()
            };
            match prog.attach_with_options(ifname, hook, TcAttachOptions::Netlink(opts)) {
                Ok(id) => std::mem::forget(prog.take_link(id)?),
                Err(e)
                    if e.to_string().contains("exists") || format!("{e:?}").contains("EEXIST") => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("attach {name} to {ifname}"));
                }
            }
        }
        info!(ifname, program = name, "node device program attached");
        Ok(())
    }

    // ---- drop events: ring buffer "corral_events", switch "corral_monitor"

    /// Takes the drop-event ring buffer out of the loaded object (one
    /// consumer per process).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        let m = self
            .bpf
            .take_map("corral_events")
            .ok_or_else(|| map_err("corral_events"))?;
        Ok(RingBuf::try_from(m)?)
    }

    /// Turns drop events on (a monitor client is connected) or off.
    pub fn set_monitor(&mut self, on: bool) -> Result<()> {
        let m = self
            .bpf
            .map_mut("corral_monitor")
            .ok_or_else(|| map_err("corral_monitor"))?;
        let mut a: Array<&mut MapData, u32> = Array::try_from(m)?;
        a.set(0, u32::from(on), 0)?;
        Ok(())
    }

    /// Drop events the programs could not put into the ring buffer (the
    /// consumer was behind), summed over CPUs since the map was created.
    pub fn events_lost(&self) -> Result<u64> {
        let m = self
            .bpf
            .map("corral_events_lost")
            .ok_or_else(|| map_err("corral_events_lost"))?;
        let a: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(m)?;
        Ok(a.get(&0, 0)?.iter().sum())
    }

    // ---- benchmarks: BPF_PROG_TEST_RUN

    /// Runs program `prog` (`corral_to_pod` / `corral_from_pod`) `repeat`
    /// times on `packet` (an Ethernet frame) as if it passed interface
    /// `ifindex` (which must exist in the caller's network namespace).
    /// Returns the verdict and the kernel's mean time per run.
    pub fn test_run(
        &self,
        prog: &str,
        ifindex: u32,
        packet: &[u8],
        repeat: u32,
    ) -> Result<(u32, std::time::Duration)> {
        use aya::programs::{TestRun, TestRunOptions};
        let p: &SchedClassifier = self
            .bpf
            .program(prog)
            .ok_or_else(|| anyhow!("eBPF object has no program {prog}"))?
            .try_into()?;
        // struct __sk_buff (192 bytes): only ifindex (offset 40) set
        let mut ctx = [0u8; 192];
        ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
        let r = p
            .test_run(TestRunOptions {
                data_in: Some(packet),
                ctx_in: Some(&ctx),
                repeat,
                ..Default::default()
            })
            .with_context(|| format!("BPF_PROG_TEST_RUN of {prog}"))?;
        Ok((r.return_value, r.duration))
    }
}
