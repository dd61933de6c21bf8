//! Node health model: raw signals → EWMA → per-signal state with hysteresis and
//! duration ("CPU > 80 % for 5 min") → 0–100 sub-scores → node score (penalty sum,
//! worst-of for critical signals) → slew-limited node weight.
//!
//! The [`HealthTracker`] is the only mutable piece; it is advanced between
//! scheduling cycles and publishes an immutable [`HealthView`] that is attached to
//! the [`Snapshot`](crate::snapshot::Snapshot) for a cycle (`Snapshot::health`).
//! Plugins only ever read that view, so every pod of a cycle sees the same health.
//!
//! Invariants:
//! - Bad input (unknown signal, NaN/infinite, negative, out-of-order or stale sample)
//!   is ignored with a warning and never changes state, so it can never make a node
//!   look healthier than the last good evidence.
//! - Recovery needs fresh samples: a signal that stops reporting keeps its last
//!   state (it does not decay to healthy).
//! - The node score is monotone: a signal getting worse, or a new signal appearing,
//!   can never raise it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A health signal. Units: percent (0–100) for utilizations/pressure, per-second
/// rates for network drops/errors/retransmits, °C, error counts, missing devices,
/// milliseconds, seconds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    /// CPU utilization, %.
    Cpu,
    /// Memory in use, % (from `memory_available` fraction if that is given).
    Memory,
    /// Memory pressure stall (PSI `some` avg10), %.
    MemoryPsi,
    /// Network link utilization, %.
    NetUtil,
    /// Dropped packets per second.
    NetDrops,
    /// Interface errors per second.
    NetErrors,
    /// TCP retransmitted segments per second.
    TcpRetrans,
    /// GPU utilization, %.
    Gpu,
    /// GPU memory in use, %.
    Vram,
    /// Hottest GPU temperature, °C.
    GpuTemp,
    /// XID errors in the reporting window.
    GpuXid,
    /// Uncorrectable ECC errors in the reporting window.
    GpuEcc,
    /// GPU devices missing versus node capacity.
    GpuMissing,
    /// Disk I/O latency, ms.
    DiskLatency,
    /// Seconds since the node's last heartbeat (NodeReady / Lease).
    HeartbeatAge,
    /// A named custom signal (`custom.<name>`); needs a configured rule.
    Custom(String),
}

const NAMED: &[(&str, Signal)] = &[
    ("cpu", Signal::Cpu),
    ("memory", Signal::Memory),
    ("memory_psi", Signal::MemoryPsi),
    ("net_util", Signal::NetUtil),
    ("net_drops", Signal::NetDrops),
    ("net_errors", Signal::NetErrors),
    ("tcp_retrans", Signal::TcpRetrans),
    ("gpu", Signal::Gpu),
    ("vram", Signal::Vram),
    ("gpu_temp", Signal::GpuTemp),
    ("gpu_xid", Signal::GpuXid),
    ("gpu_ecc", Signal::GpuEcc),
    ("gpu_missing", Signal::GpuMissing),
    ("disk_latency", Signal::DiskLatency),
    ("heartbeat_age", Signal::HeartbeatAge),
];

impl Signal {
    /// Parses a signal name (`cpu`, `memory`, ..., `custom.<name>`). Built-in names
    /// accept dashes for underscores (`net-util` = `net_util`: the data-plane agent
    /// writes `corral.io/health.net-util`); custom names are taken verbatim.
    /// `memory_available` is accepted by [`validate`] and converted.
    pub fn parse(name: &str) -> Option<Signal> {
        if let Some(c) = name.strip_prefix("custom.") {
            let ok = !c.is_empty()
                && c.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.'));
            return ok.then(|| Signal::Custom(c.to_string()));
        }
        NAMED
            .iter()
            .find(|(n, _)| same_name(n, name))
            .map(|(_, s)| s.clone())
    }

    pub fn name(&self) -> String {
        match self {
            Signal::Custom(c) => format!("custom.{c}"),
            s => NAMED
                .iter()
                .find(|(_, x)| x == s)
                .map_or_else(String::new, |(n, _)| n.to_string()),
        }
    }

    /// Percent signals are clamped to 100 (over-range is read as fully used).
    fn is_percent(&self) -> bool {
        matches!(
            self,
            Signal::Cpu
                | Signal::Memory
                | Signal::MemoryPsi
                | Signal::NetUtil
                | Signal::Gpu
                | Signal::Vram
        )
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// `canonical` (a built-in name, with underscores) spelled as `name`, where `name`
/// may use `-` for `_`.
fn same_name(canonical: &str, name: &str) -> bool {
    canonical.len() == name.len()
        && canonical
            .bytes()
            .zip(name.bytes())
            .all(|(c, n)| c == n || (c == b'_' && n == b'-'))
}

/// Validates a raw value for a signal name: returns the signal and the value in the
/// model's unit, or why it is rejected.
pub fn validate(name: &str, value: f64) -> Result<(Signal, f64), String> {
    if !value.is_finite() {
        return Err(format!(
            "signal {name:?}: value {value} is not a finite number"
        ));
    }
    if value < 0.0 {
        return Err(format!("signal {name:?}: negative value {value}"));
    }
    if same_name("memory_available", name) {
        // Fraction of memory available (0..=1) → % in use.
        if value > 1.0 {
            return Err(format!(
                "signal \"memory_available\": {value} is not a fraction in [0, 1]"
            ));
        }
        return Ok((Signal::Memory, 100.0 * (1.0 - value)));
    }
    let sig = Signal::parse(name).ok_or_else(|| format!("unknown health signal {name:?}"))?;
    let v = if sig.is_percent() {
        value.min(100.0)
    } else {
        value
    };
    Ok((sig, v))
}

/// Per-signal rule: thresholds (enter/exit for degraded and critical), duration,
/// weight, and whether the signal is critical (worst-of + filter).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Smoothed value at or above which the signal degrades (after `forSeconds`).
    pub degraded: f64,
    /// Value below which a degraded signal recovers (default: `degraded`, i.e. no
    /// hysteresis, unless `hysteresis` is given).
    #[serde(default)]
    pub degraded_exit: Option<f64>,
    /// Value at or above which the signal is critical (after `forSeconds`).
    #[serde(default)]
    pub critical: Option<f64>,
    #[serde(default)]
    pub critical_exit: Option<f64>,
    /// How long the smoothed value must stay at/above a threshold before the state
    /// is entered.
    #[serde(default)]
    pub for_seconds: f64,
    /// How long it must stay below the exit threshold before the state is left.
    #[serde(default)]
    pub exit_for_seconds: f64,
    /// Value where the sub-score starts to fall below 100 (default: `degraded`).
    #[serde(default)]
    pub soft_start: Option<f64>,
    /// Weight of this signal's penalty (100 − sub-score) in the node score.
    #[serde(default = "one")]
    pub weight: f64,
    /// Critical signal: the node score is at most this sub-score (worst-of), and the
    /// critical state makes the node infeasible.
    #[serde(default)]
    pub critical_signal: bool,
    /// EWMA-smooth this signal (off for events such as a GPU falling off the bus).
    #[serde(default = "yes")]
    pub smooth: bool,
}

fn one() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}

impl Rule {
    #[allow(clippy::too_many_arguments)]
    fn new(
        degraded: f64,
        degraded_exit: f64,
        critical: Option<(f64, f64)>,
        for_seconds: f64,
        soft_start: f64,
        critical_signal: bool,
        smooth: bool,
    ) -> Rule {
        Rule {
            degraded,
            degraded_exit: Some(degraded_exit),
            critical: critical.map(|c| c.0),
            critical_exit: critical.map(|c| c.1),
            for_seconds,
            exit_for_seconds: 30.0,
            soft_start: Some(soft_start),
            weight: 1.0,
            critical_signal,
            smooth,
        }
    }

    fn degraded_exit(&self, hysteresis: bool) -> f64 {
        if hysteresis {
            self.degraded_exit
                .unwrap_or(self.degraded)
                .min(self.degraded)
        } else {
            self.degraded
        }
    }

    fn critical_exit(&self, hysteresis: bool) -> Option<f64> {
        let c = self.critical?;
        Some(if hysteresis {
            self.critical_exit.unwrap_or(c).min(c)
        } else {
            c
        })
    }

    /// Continuous sub-score of a (smoothed) value: 100 up to `softStart`, 50 at
    /// `degraded`, 10 at `critical`, 0 above; linear in between.
    pub fn soft_score(&self, v: f64) -> f64 {
        let d = self.degraded;
        let s = self.soft_start.unwrap_or(d).min(d);
        let c = self.critical.unwrap_or(d * 1.25 + 1.0).max(d);
        if v >= c {
            if c > d && v == c { 10.0 } else { 0.0 }
        } else if v >= d {
            50.0 - 40.0 * (v - d) / (c - d)
        } else if v <= s {
            100.0
        } else {
            100.0 - 50.0 * (v - s) / (d - s)
        }
    }
}

/// Health model configuration (the `NodeHealth` plugin's args).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HealthConfig {
    /// EWMA half-life of raw signals in seconds (0 = no smoothing).
    pub ewma_half_life_seconds: f64,
    /// Use the rules' separate exit thresholds (false: exit = enter).
    pub hysteresis: bool,
    /// Maximum rise of the node weight per second (0 = unlimited).
    pub max_rise_per_second: f64,
    /// Maximum fall of the node weight per second (0 = unlimited).
    pub max_fall_per_second: f64,
    /// Sub-score cap while a signal is degraded.
    pub degraded_cap: f64,
    /// Samples older than this (relative to the tracker's clock) are ignored.
    pub stale_after_seconds: f64,
    /// Critical signals make nodes infeasible (`node(s) unhealthy: <signal>`).
    pub filter_critical: bool,
    /// Rules by signal name; given rules replace the defaults of that signal.
    pub rules: BTreeMap<String, Rule>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            ewma_half_life_seconds: 30.0,
            hysteresis: true,
            max_rise_per_second: 0.5,
            max_fall_per_second: 10.0,
            degraded_cap: 40.0,
            stale_after_seconds: 300.0,
            filter_critical: true,
            rules: BTreeMap::new(),
        }
    }
}

/// Default rules; thresholds and durations of the alerts users quoted
/// (requirements.md): CPU > 80 % for 5 min, memory > 90 % for 5 min, GPU > 95 % for
/// 5 min, VRAM > 95 %, disk I/O latency > 50 ms.
pub fn default_rules() -> Vec<(Signal, Rule)> {
    use Signal::*;
    vec![
        (
            Cpu,
            Rule::new(80.0, 70.0, Some((95.0, 90.0)), 300.0, 60.0, false, true),
        ),
        (
            Memory,
            Rule::new(90.0, 85.0, Some((97.0, 94.0)), 300.0, 75.0, true, true),
        ),
        (
            MemoryPsi,
            Rule::new(20.0, 10.0, Some((50.0, 40.0)), 60.0, 5.0, false, true),
        ),
        (
            NetUtil,
            Rule::new(80.0, 70.0, Some((95.0, 90.0)), 300.0, 60.0, false, true),
        ),
        (
            NetDrops,
            Rule::new(100.0, 50.0, Some((1000.0, 500.0)), 60.0, 10.0, false, true),
        ),
        (
            NetErrors,
            Rule::new(10.0, 5.0, Some((100.0, 50.0)), 60.0, 1.0, false, true),
        ),
        (
            TcpRetrans,
            Rule::new(50.0, 25.0, Some((500.0, 250.0)), 60.0, 10.0, false, true),
        ),
        (Gpu, Rule::new(95.0, 90.0, None, 300.0, 85.0, false, true)),
        (Vram, Rule::new(95.0, 90.0, None, 0.0, 85.0, false, true)),
        (
            GpuTemp,
            Rule::new(85.0, 80.0, Some((95.0, 90.0)), 60.0, 75.0, true, true),
        ),
        (
            GpuXid,
            Rule::new(1.0, 1.0, Some((1.0, 1.0)), 0.0, 1.0, true, false),
        ),
        (
            GpuEcc,
            Rule::new(1.0, 1.0, Some((1.0, 1.0)), 0.0, 1.0, true, false),
        ),
        (
            GpuMissing,
            Rule::new(1.0, 1.0, Some((1.0, 1.0)), 0.0, 1.0, true, false),
        ),
        (
            DiskLatency,
            Rule::new(50.0, 40.0, Some((500.0, 300.0)), 60.0, 30.0, false, true),
        ),
        (
            HeartbeatAge,
            Rule::new(40.0, 40.0, Some((120.0, 60.0)), 0.0, 40.0, true, false),
        ),
    ]
}

impl HealthConfig {
    /// Checks thresholds and resolves rules (defaults overlaid with configured ones).
    pub fn resolve(&self) -> Result<HashMap<Signal, Rule>, String> {
        let num = |v: f64, what: &str| -> Result<(), String> {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(format!(
                    "{what} must be a finite non-negative number, got {v}"
                ))
            }
        };
        num(self.ewma_half_life_seconds, "ewmaHalfLifeSeconds")?;
        num(self.max_rise_per_second, "maxRisePerSecond")?;
        num(self.max_fall_per_second, "maxFallPerSecond")?;
        num(self.degraded_cap, "degradedCap")?;
        num(self.stale_after_seconds, "staleAfterSeconds")?;
        let mut out: HashMap<Signal, Rule> = default_rules().into_iter().collect();
        for (name, r) in &self.rules {
            let sig = Signal::parse(name)
                .ok_or_else(|| format!("rules.{name}: unknown health signal {name:?}"))?;
            let at = |f: &str| format!("rules.{name}.{f}");
            num(r.degraded, &at("degraded"))?;
            num(r.for_seconds, &at("forSeconds"))?;
            num(r.exit_for_seconds, &at("exitForSeconds"))?;
            num(r.weight, &at("weight"))?;
            for (v, f) in [
                (r.degraded_exit, "degradedExit"),
                (r.critical, "critical"),
                (r.critical_exit, "criticalExit"),
                (r.soft_start, "softStart"),
            ] {
                if let Some(v) = v {
                    num(v, &at(f))?;
                }
            }
            if let Some(c) = r.critical
                && c < r.degraded
            {
                return Err(format!(
                    "{}: {c} is below degraded threshold {}",
                    at("critical"),
                    r.degraded
                ));
            }
            out.insert(sig, r.clone());
        }
        Ok(out)
    }
}

/// State of one signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Healthy,
    Degraded,
    Critical,
}

#[derive(Debug, Clone)]
struct SignalState {
    /// Time of the last accepted sample.
    last_t: f64,
    smoothed: f64,
    level: Level,
    /// Since when the smoothed value has been at/above the degraded / critical
    /// threshold (None = below).
    above_degraded_since: Option<f64>,
    above_critical_since: Option<f64>,
    /// Since when it has been below the exit threshold of the current level.
    below_exit_since: Option<f64>,
}

#[derive(Debug, Clone, Default)]
struct NodeState {
    signals: BTreeMap<Signal, SignalState>,
    /// Slew-limited weight (None until the first update).
    weight: Option<f64>,
    last_update: Option<f64>,
}

/// One node's health for a cycle.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeHealth {
    /// Slew-limited weight 0–100 (what the Score plugin uses).
    pub weight: f64,
    /// Unsmoothed-in-time target the weight moves towards.
    pub target: f64,
    /// First critical signal (Filter rejects the node), if any.
    pub critical: Option<String>,
    /// Degraded signals.
    pub degraded: Vec<String>,
}

impl NodeHealth {
    /// Integer score 0..=100 for the Score plugin.
    #[inline]
    pub fn score(&self) -> i64 {
        (self.weight.round() as i64).clamp(0, 100)
    }
}

/// Immutable per-cycle health of all known nodes. Nodes absent from the view have
/// no health evidence and are treated as healthy.
#[derive(Debug, Clone, Default)]
pub struct HealthView {
    pub nodes: HashMap<Arc<str>, NodeHealth>,
    /// Tracker clock (seconds) at publication.
    pub time: f64,
    /// Hot-path index bound to a snapshot ([`HealthView::bind`]): keyed by the
    /// address of the snapshot's `NodeInfo::name` allocation, which the view keeps
    /// alive (so the address cannot be reused while the view exists).
    fast: HashMap<usize, (i64, bool), std::hash::BuildHasherDefault<PtrHasher>>,
    /// The bound names (owning the allocations the `fast` keys point to).
    bound: Vec<Arc<str>>,
    /// Set by `bind`: whether any node is critical (lets the Filter skip lookups).
    any_critical: Option<bool>,
}

/// Hasher for pointer keys (one multiply; SipHash of node names dominated the
/// plugin's cost at 5,000 nodes).
#[derive(Default)]
pub struct PtrHasher(u64);

impl std::hash::Hasher for PtrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 =
                (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_usize(&mut self, i: usize) {
        self.0 = ((i as u64) >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl HealthView {
    /// An unbound view of `nodes` published at `time` (seconds).
    pub fn new(nodes: HashMap<Arc<str>, NodeHealth>, time: f64) -> Self {
        HealthView {
            nodes,
            time,
            ..HealthView::default()
        }
    }

    #[inline]
    pub fn get(&self, node: &str) -> Option<&NodeHealth> {
        self.nodes.get(node)
    }

    /// Builds the hot-path index for the nodes of `snap` (call before attaching).
    pub fn bind(&mut self, snap: &crate::snapshot::Snapshot) {
        self.fast.clear();
        self.bound.clear();
        self.any_critical = Some(self.nodes.values().any(|h| h.critical.is_some()));
        for n in snap.nodes() {
            let v = self
                .nodes
                .get(&n.name)
                .map_or((100, false), |h| (h.score(), h.critical.is_some()));
            self.fast
                .insert(Arc::as_ptr(&n.name) as *const u8 as usize, v);
            self.bound.push(n.name.clone());
        }
    }

    /// False only when the view is bound and no node is critical (then the Filter
    /// needs no per-node lookup).
    #[inline]
    pub fn any_critical(&self) -> bool {
        self.any_critical.unwrap_or(true)
    }

    /// (score, critical) of a node: through the bound index, else by name.
    #[inline]
    pub fn score_of(&self, name: &Arc<str>) -> (i64, bool) {
        if let Some(v) = self.fast.get(&(Arc::as_ptr(name) as *const u8 as usize)) {
            return *v;
        }
        self.nodes
            .get(name)
            .map_or((100, false), |h| (h.score(), h.critical.is_some()))
    }
}

/// Binds `view` to `snap` and attaches it for the next cycle.
pub fn attach(snap: &mut crate::snapshot::Snapshot, mut view: HealthView) {
    view.bind(snap);
    snap.set_health(Some(Arc::new(view)));
}

/// Mutable health state of all nodes; fed with samples and advanced in time.
#[derive(Debug, Clone)]
pub struct HealthTracker {
    cfg: HealthConfig,
    rules: HashMap<Signal, Rule>,
    nodes: HashMap<Arc<str>, NodeState>,
    now: f64,
}

/// A validated sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub time: f64,
    pub node: String,
    pub signal: Signal,
    pub value: f64,
}

impl HealthTracker {
    pub fn new(cfg: HealthConfig) -> Result<HealthTracker, String> {
        let rules = cfg.resolve()?;
        Ok(HealthTracker {
            cfg,
            rules,
            nodes: HashMap::new(),
            now: 0.0,
        })
    }

    pub fn config(&self) -> &HealthConfig {
        &self.cfg
    }

    /// Feeds a raw sample; returns a warning when it is ignored.
    pub fn observe(&mut self, time: f64, node: &str, signal: &str, value: f64) -> Option<String> {
        if !time.is_finite() {
            return Some(format!(
                "node {node:?}: signal {signal:?}: invalid timestamp"
            ));
        }
        match validate(signal, value) {
            Ok((sig, v)) => self.observe_signal(time, node, sig, v),
            Err(e) => Some(format!("node {node:?}: {e}; ignored")),
        }
    }

    /// Feeds a validated value.
    pub fn observe_signal(&mut self, time: f64, node: &str, sig: Signal, v: f64) -> Option<String> {
        let Some(rule) = self.rules.get(&sig) else {
            return Some(format!(
                "node {node:?}: no rule for health signal {sig:?}; ignored"
            ));
        };
        if self.now - time > self.cfg.stale_after_seconds {
            return Some(format!(
                "node {node:?}: {sig} sample at t={time} is older than {} s; ignored",
                self.cfg.stale_after_seconds
            ));
        }
        let hyst = self.cfg.hysteresis;
        let half = self.cfg.ewma_half_life_seconds;
        let ns = self.nodes.entry(Arc::from(node)).or_default();
        let st = match ns.signals.get_mut(&sig) {
            None => {
                ns.signals.insert(
                    sig.clone(),
                    SignalState {
                        last_t: time,
                        smoothed: v,
                        level: Level::Healthy,
                        above_degraded_since: None,
                        above_critical_since: None,
                        below_exit_since: None,
                    },
                );
                let st = ns.signals.get_mut(&sig)?;
                step_level(st, rule, hyst, time);
                return None;
            }
            Some(st) => st,
        };
        if time <= st.last_t {
            return Some(format!(
                "node {node:?}: {sig} sample at t={time} is not newer than t={}; ignored",
                st.last_t
            ));
        }
        let dt = time - st.last_t;
        st.smoothed = if rule.smooth && half > 0.0 {
            let alpha = 1.0 - 0.5f64.powf(dt / half);
            st.smoothed + alpha * (v - st.smoothed)
        } else {
            v
        };
        st.last_t = time;
        step_level(st, rule, hyst, time);
        None
    }

    /// Forgets nodes for which `keep` is false (deleted from the cluster).
    pub fn retain_nodes(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.nodes.retain(|n, _| keep(n));
    }

    /// Treats every current signal as if it had held for its rule's duration (one-shot
    /// inputs such as node annotations carry no history; assuming "sustained" is the
    /// conservative reading).
    pub fn assume_sustained(&mut self) {
        let hyst = self.cfg.hysteresis;
        for ns in self.nodes.values_mut() {
            for (sig, st) in ns.signals.iter_mut() {
                let Some(rule) = self.rules.get(sig) else {
                    continue;
                };
                let long_ago = st.last_t - rule.for_seconds.max(rule.exit_for_seconds) - 1.0;
                st.above_degraded_since = st.above_degraded_since.map(|_| long_ago);
                st.above_critical_since = st.above_critical_since.map(|_| long_ago);
                step_level(st, rule, hyst, st.last_t);
            }
        }
    }

    /// Sets the clock to `now` (seconds) without moving any weight: the start time of
    /// a tracker fed from a static input.
    pub fn set_clock(&mut self, now: f64) {
        self.now = now;
    }

    /// Advances the clock to `now` (seconds) and moves every node's weight towards its
    /// target within the slew limits.
    pub fn advance(&mut self, now: f64) {
        if now < self.now {
            return;
        }
        self.now = now;
        let rise = self.cfg.max_rise_per_second;
        let fall = self.cfg.max_fall_per_second;
        let cap = self.cfg.degraded_cap;
        for ns in self.nodes.values_mut() {
            let (target, _, _) = node_target(ns, &self.rules, cap);
            let w = match (ns.weight, ns.last_update) {
                (Some(w), Some(t)) => {
                    let dt = (now - t).max(0.0);
                    let mut d = target - w;
                    if rise > 0.0 {
                        d = d.min(rise * dt);
                    }
                    if fall > 0.0 {
                        d = d.max(-fall * dt);
                    }
                    w + d
                }
                _ => target,
            };
            ns.weight = Some(w.clamp(0.0, 100.0));
            ns.last_update = Some(now);
        }
    }

    /// Publishes the immutable view for the next cycle.
    pub fn view(&self) -> HealthView {
        let cap = self.cfg.degraded_cap;
        let nodes = self
            .nodes
            .iter()
            .map(|(name, ns)| {
                let (target, critical, degraded) = node_target(ns, &self.rules, cap);
                let critical = critical.filter(|_| self.cfg.filter_critical);
                (
                    name.clone(),
                    NodeHealth {
                        weight: ns.weight.unwrap_or(target),
                        target,
                        critical,
                        degraded,
                    },
                )
            })
            .collect();
        HealthView {
            nodes,
            time: self.now,
            ..HealthView::default()
        }
    }

    /// Smoothed value and level of one signal (for reports and tests).
    pub fn signal(&self, node: &str, sig: &Signal) -> Option<(f64, Level)> {
        self.nodes
            .get(node)?
            .signals
            .get(sig)
            .map(|s| (s.smoothed, s.level))
    }

    pub fn now(&self) -> f64 {
        self.now
    }
}

/// Updates the level of a signal from its smoothed value at time `t`.
fn step_level(st: &mut SignalState, rule: &Rule, hyst: bool, t: f64) {
    let v = st.smoothed;
    let track = |since: &mut Option<f64>, above: bool| {
        if above {
            since.get_or_insert(t);
        } else {
            *since = None;
        }
    };
    track(&mut st.above_degraded_since, v >= rule.degraded);
    if let Some(c) = rule.critical {
        track(&mut st.above_critical_since, v >= c);
    }
    let held = |since: Option<f64>| since.is_some_and(|s| t - s >= rule.for_seconds);
    // Escalation.
    if st.level < Level::Critical && held(st.above_critical_since) {
        st.level = Level::Critical;
        st.below_exit_since = None;
        return;
    }
    if st.level < Level::Degraded && held(st.above_degraded_since) {
        st.level = Level::Degraded;
        st.below_exit_since = None;
        return;
    }
    // De-escalation (one level at a time, after exitForSeconds below the exit).
    let exit = match st.level {
        Level::Healthy => return,
        Level::Degraded => rule.degraded_exit(hyst),
        Level::Critical => rule.critical_exit(hyst).unwrap_or(rule.degraded),
    };
    if v < exit {
        let since = *st.below_exit_since.get_or_insert(t);
        if t - since >= rule.exit_for_seconds {
            st.level = match st.level {
                Level::Critical if v >= rule.degraded_exit(hyst) => Level::Degraded,
                _ => Level::Healthy,
            };
            st.below_exit_since = None;
        }
    } else {
        st.below_exit_since = None;
    }
}

/// (target score, first critical signal, degraded signals) of a node.
fn node_target(
    ns: &NodeState,
    rules: &HashMap<Signal, Rule>,
    cap: f64,
) -> (f64, Option<String>, Vec<String>) {
    let mut penalty = 0.0;
    let mut worst = 100.0f64;
    let mut critical = None;
    let mut degraded = Vec::new();
    for (sig, st) in &ns.signals {
        let Some(rule) = rules.get(sig) else { continue };
        let mut sub = rule.soft_score(st.smoothed);
        match st.level {
            Level::Healthy => {}
            Level::Degraded => {
                sub = sub.min(cap);
                degraded.push(sig.name());
            }
            Level::Critical => {
                sub = 0.0;
                if rule.critical_signal && critical.is_none() {
                    critical = Some(sig.name());
                }
                degraded.push(sig.name());
            }
        }
        penalty += rule.weight * (100.0 - sub);
        if rule.critical_signal {
            worst = worst.min(sub);
        }
    }
    let target = (100.0 - penalty).min(worst).clamp(0.0, 100.0);
    (target, critical, degraded)
}

#[cfg(test)]
mod tests;
