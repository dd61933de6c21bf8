//! `corral-scheduler simulate --timeline FILE`: replays pod arrivals together with
//! node health series, interval by interval, and measures how placement share per
//! node reacts (time to half fair share after a degrade, oscillation, herd ratio
//! after recovery). `--compare naive` runs the same timeline with a naive threshold
//! filter (no EWMA, no hysteresis, no slew, exact argmax).
//!
//! Per interval `[t, t+step)`: pods whose `corral.io/duration` elapsed are removed;
//! health samples with time ≤ t are fed to the tracker, which advances to t and
//! publishes an immutable view attached to the snapshot; the interval's arrivals
//! are scheduled as one `schedule_all` run against that snapshot.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};

use crate::config::KubeSchedulerConfiguration;
use crate::framework::Framework;
use crate::health::sources::{RawSample, duration_secs, parse_series};
use crate::health::{HealthConfig, HealthTracker, HealthView, Signal, validate};
use crate::input::load_paths;
use crate::scheduler::{Options, Scheduler};
use crate::snapshot::{PodInfo, Snapshot};

/// Annotation giving a pod's run time (`30s`, `5m`, seconds).
pub const DURATION_ANNOTATION: &str = corral_api::keys::ANN_DURATION;

/// The timeline file (YAML). Paths are relative to the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimelineFile {
    /// Kubernetes manifests with the Nodes (and optionally running Pods).
    pub cluster: Vec<String>,
    /// KubeSchedulerConfiguration; its first profile's `NodeHealth` args configure
    /// the health model. Default: the default profile plus NodeHealth (weight 5).
    #[serde(default)]
    pub config: Option<String>,
    /// Health time series files (CSV or YAML: time, node, signal, value).
    #[serde(default)]
    pub series: Vec<String>,
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default)]
    pub step: Option<String>,
    pub arrivals: Arrivals,
    #[serde(default)]
    pub seed: Option<u64>,
    /// Events at given times, e.g. a node failure.
    #[serde(default)]
    pub events: Vec<Event>,
}

/// A timeline event.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Event {
    /// When (e.g. `10m`; at the start of the interval containing it).
    pub at: String,
    /// The node fails (as if deleted): its pods are re-placed in priority order
    /// before the interval's arrivals (see `simulate --fail-node`).
    pub fail_node: String,
}

/// What a node failure of the timeline did.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeFailure {
    /// Interval start the failure was applied at (s).
    pub at: f64,
    pub node: String,
    /// The node's pods, in re-placement order.
    pub evicted: Vec<String>,
    /// Re-placed pods with their new node.
    pub replaced: Vec<(String, String)>,
    /// Evicted pods that found no node (with the reason).
    pub unschedulable: Vec<(String, String)>,
}

/// Pod arrivals: a constant rate or explicit times, each a copy of the template.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Arrivals {
    /// Pod manifest used for every arrival (the name gets a `-<n>` suffix).
    pub pod: String,
    /// Pods per second.
    #[serde(default)]
    pub rate: Option<f64>,
    /// Explicit arrival times in seconds.
    #[serde(default)]
    pub times: Option<Vec<f64>>,
}

/// Which health policy a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The configured model (EWMA, hysteresis, slew, selection tolerance).
    Smoothed,
    /// Naive threshold filter on raw values; no scoring, exact argmax.
    Naive,
}

/// Metrics of one node whose health crossed a degrade threshold.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeMetrics {
    pub node: String,
    /// Mean share before the first crossing (fair share if unknown).
    pub steady_share: f64,
    /// First time a raw signal reached its degraded threshold.
    pub degrade_crossed_at: Option<f64>,
    /// Seconds from the crossing to the end of the first interval with share below
    /// half the fair share.
    pub time_to_half_fair: Option<f64>,
    /// The same in intervals.
    pub intervals_to_half_fair: Option<f64>,
    /// Direction changes of the node's one-minute moving share (dead band: half
    /// the fair share).
    pub direction_changes: usize,
    /// Direction changes per 5 minutes.
    pub direction_changes_per_5min: f64,
    /// Last time the raw signals went back below every degraded threshold.
    pub recovered_at: Option<f64>,
    /// Peak one-minute share in the 5 minutes after recovery / steady share.
    pub herd_ratio: Option<f64>,
}

/// Result of one timeline run.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineRun {
    pub mode: Mode,
    pub step_seconds: f64,
    pub duration_seconds: f64,
    pub nodes: usize,
    pub fair_share: f64,
    /// Interval start times (s).
    pub times: Vec<f64>,
    /// Pods placed per interval.
    pub placed: Vec<usize>,
    pub unschedulable: usize,
    /// Share per interval of every node that received pods or has metrics.
    pub shares: BTreeMap<String, Vec<f64>>,
    /// Health weight per interval of the nodes with metrics.
    pub health_weight: BTreeMap<String, Vec<f64>>,
    /// Last raw value, per interval, of the signal that crossed its degraded
    /// threshold (named in `signal_name`), for the nodes with metrics.
    pub signal: BTreeMap<String, Vec<f64>>,
    pub signal_name: BTreeMap<String, String>,
    pub metrics: Vec<NodeMetrics>,
    /// Highest direction-change count among nodes without health events.
    pub healthy_max_direction_changes: usize,
    pub warnings: usize,
    /// Node failures (timeline `events`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<NodeFailure>,
}

/// Output of `simulate --timeline`.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineReport {
    pub runs: Vec<TimelineRun>,
}

/// Options from the command line (override the file).
#[derive(Debug, Clone, Default)]
pub struct TimelineArgs {
    pub file: PathBuf,
    pub duration: Option<String>,
    pub step: Option<String>,
    pub compare_naive: bool,
    pub seed: Option<u64>,
}

/// Everything loaded once and shared by the runs.
pub struct Loaded {
    frameworks: Vec<Framework>,
    health: HealthConfig,
    selection_tolerance: i64,
    batch_size: Option<usize>,
    base: Snapshot,
    template: Pod,
    arrivals: Vec<f64>,
    samples: Vec<RawSample>,
    duration: f64,
    step: f64,
    seed: u64,
    /// Node failures: (time, node), by time.
    failures: Vec<(f64, String)>,
}

const DEFAULT_CONFIG: &str = r#"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
- plugins:
    multiPoint:
      enabled: [{name: NodeHealth, weight: 5}]
"#;

/// Loads a timeline file and everything it references.
pub fn load(args: &TimelineArgs, warn: &mut dyn FnMut(String)) -> Result<Loaded, String> {
    let path = &args.file;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read timeline: {e}", path.display()))?;
    crate::limits::check_yaml_text(
        &text,
        &path.display().to_string(),
        corral_limits::MAX_CONFIG_BYTES,
    )?;
    let tf: TimelineFile =
        serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let rel = |p: &str| dir.join(p);
    let (cfg_text, cfg_origin) = match &tf.config {
        Some(c) => (
            std::fs::read_to_string(rel(c))
                .map_err(|e| format!("{}: cannot read config: {e}", rel(c).display()))?,
            rel(c).display().to_string(),
        ),
        None => (
            DEFAULT_CONFIG.to_string(),
            "built-in timeline config".into(),
        ),
    };
    let cfg = KubeSchedulerConfiguration::from_yaml(&cfg_text, &cfg_origin).map_err(|e| e.0)?;
    let frameworks = cfg.build().map_err(|e| format!("{cfg_origin}: {}", e.0))?;
    let health = crate::health::args_from_config(&cfg)
        .transpose()
        .map_err(|e| format!("{cfg_origin}: {e}"))?
        .unwrap_or_default();
    let corral = cfg.corral.clone().unwrap_or_default();
    let paths: Vec<PathBuf> = tf.cluster.iter().map(|p| rel(p)).collect();
    let input = load_paths(&paths, &[]).map_err(|e| e.0)?;
    for w in &input.warnings {
        warn(w.clone());
    }
    let prepared = super::prepare(input, &frameworks);
    let tpath = rel(&tf.arrivals.pod);
    let ttext = std::fs::read_to_string(&tpath)
        .map_err(|e| format!("{}: cannot read pod template: {e}", tpath.display()))?;
    crate::limits::check_yaml_text(
        &ttext,
        &tpath.display().to_string(),
        corral_limits::MAX_CONFIG_BYTES,
    )?;
    let mut template: Pod = serde_yaml_ng::from_str(&ttext)
        .map_err(|e| format!("{}: pod template: {e}", tpath.display()))?;
    crate::defaulting::default_pod(&mut template);
    PodInfo::new(template.clone(), 0).map_err(|e| format!("{}: {e}", tpath.display()))?;
    pod_duration(&template).map_err(|e| format!("{}: {e}", tpath.display()))?;
    let dur_s = args.duration.clone().or(tf.duration.clone());
    let duration = dur_s
        .as_deref()
        .map(duration_secs)
        .transpose()
        .map_err(|e| format!("duration: {e}"))?
        .unwrap_or(1800.0);
    let step = args
        .step
        .clone()
        .or(tf.step.clone())
        .as_deref()
        .map(duration_secs)
        .transpose()
        .map_err(|e| format!("step: {e}"))?
        .unwrap_or(10.0);
    if step <= 0.0 || duration <= 0.0 || duration / step > 100_000.0 {
        return Err(format!(
            "step {step} s and duration {duration} s: need 0 < step, 0 < duration, at most 100000 intervals"
        ));
    }
    let arrivals = match (&tf.arrivals.rate, &tf.arrivals.times) {
        (Some(r), None) if r.is_finite() && *r > 0.0 && r * duration <= 5.0e6 => {
            let n = (r * duration).floor() as usize;
            (0..n).map(|i| i as f64 / r).collect()
        }
        (None, Some(t)) => {
            let mut t = t.clone();
            if t.iter().any(|x| !x.is_finite() || *x < 0.0) {
                return Err(format!(
                    "{}: arrivals.times: negative or invalid time",
                    path.display()
                ));
            }
            t.sort_by(f64::total_cmp);
            t
        }
        _ => {
            return Err(format!(
                "{}: arrivals: give either rate (0 < rate, at most 5e6 pods in total) or times",
                path.display()
            ));
        }
    };
    let mut samples = Vec::new();
    for s in &tf.series {
        let p = rel(s);
        let t = std::fs::read_to_string(&p)
            .map_err(|e| format!("{}: cannot read series: {e}", p.display()))?;
        samples.extend(parse_series(&t, &p.display().to_string())?);
    }
    samples.sort_by(|a, b| a.time.total_cmp(&b.time));
    HealthTracker::new(health.clone())?;
    let mut failures = Vec::new();
    for (i, e) in tf.events.iter().enumerate() {
        let at = duration_secs(&e.at)
            .map_err(|err| format!("{}: events[{i}].at: {err}", path.display()))?;
        if prepared.snapshot.node(&e.fail_node).is_none() {
            return Err(format!(
                "{}: events[{i}].failNode: no node {:?} in the cluster",
                path.display(),
                e.fail_node
            ));
        }
        failures.push((at, e.fail_node.clone()));
    }
    failures.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(Loaded {
        frameworks,
        health,
        selection_tolerance: corral.selection_tolerance.unwrap_or(0).max(0),
        batch_size: corral.batch_size,
        base: prepared.snapshot,
        template,
        arrivals,
        samples,
        duration,
        step,
        seed: args.seed.or(tf.seed).unwrap_or(0),
        failures,
    })
}

fn pod_duration(p: &Pod) -> Result<f64, String> {
    match p
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DURATION_ANNOTATION))
    {
        Some(v) => duration_secs(v).map_err(|e| format!("annotation {DURATION_ANNOTATION}: {e}")),
        None => Ok(f64::INFINITY),
    }
}

/// The naive policy: no smoothing, no hysteresis, no durations, no slew.
fn naive_config(c: &HealthConfig) -> HealthConfig {
    let mut n = c.clone();
    n.ewma_half_life_seconds = 0.0;
    n.hysteresis = false;
    n.max_rise_per_second = 0.0;
    n.max_fall_per_second = 0.0;
    let resolved = c.resolve().unwrap_or_default();
    n.rules = resolved
        .into_iter()
        .map(|(s, mut r)| {
            r.for_seconds = 0.0;
            r.exit_for_seconds = 0.0;
            (s.name(), r)
        })
        .collect();
    n
}

/// Naive view: a node is filtered while any raw signal is at/above its degraded
/// threshold; otherwise it scores 100 (no weighting).
fn naive_view(v: HealthView) -> HealthView {
    let nodes = v
        .nodes
        .into_iter()
        .map(|(k, mut h)| {
            if h.critical.is_none() {
                h.critical = h.degraded.first().cloned();
            }
            h.weight = 100.0;
            (k, h)
        })
        .collect();
    HealthView::new(nodes, v.time)
}

/// Runs the timeline in one mode.
pub fn run(l: &Loaded, mode: Mode, warn: &mut dyn FnMut(String)) -> Result<TimelineRun, String> {
    let cfg = match mode {
        Mode::Smoothed => l.health.clone(),
        Mode::Naive => naive_config(&l.health),
    };
    let mut tracker = HealthTracker::new(cfg)?;
    let mut opts = Options {
        seed: l.seed,
        selection_tolerance: match mode {
            Mode::Smoothed => l.selection_tolerance,
            Mode::Naive => 0,
        },
        // Fixed batches: the timeline's herd bound was measured with them, and
        // selection tolerance (not the ranked path) makes decisions batch-dependent.
        latency_budget: None,
        ..Options::default()
    };
    // The scenario's batch size, else the engine's default (a fixed 64).
    if let Some(b) = l.batch_size {
        opts.batch_size = b.max(1);
        opts.adaptive_batch = false;
    }
    let mut sched = Scheduler::new(l.frameworks.clone(), l.base.clone(), opts);
    let node_names: Vec<String> = l.base.nodes().iter().map(|n| n.name.to_string()).collect();
    let n_nodes = node_names.len().max(1);
    let fair = 1.0 / n_nodes as f64;
    let intervals = (l.duration / l.step).ceil() as usize;
    let pod_dur = pod_duration(&l.template).unwrap_or(f64::INFINITY);
    let base_name = l
        .template
        .metadata
        .name
        .clone()
        .unwrap_or_else(|| "pod".into());

    // Nodes with health events: first crossing and last recovery from raw series.
    let rules = l.health.resolve().unwrap_or_default();
    let mut crossed: BTreeMap<String, f64> = BTreeMap::new();
    let mut crossing_signal: BTreeMap<String, String> = BTreeMap::new();
    let mut recovered: BTreeMap<String, f64> = BTreeMap::new();
    {
        let mut above: HashMap<(String, Signal), bool> = HashMap::new();
        for s in &l.samples {
            let Ok((sig, v)) = validate(&s.signal, s.value) else {
                continue;
            };
            let Some(r) = rules.get(&sig) else { continue };
            let is_above = v >= r.degraded;
            let key = (s.node.clone(), sig.clone());
            let was = above.insert(key, is_above).unwrap_or(false);
            if is_above && !was && !crossed.contains_key(&s.node) {
                crossed.insert(s.node.clone(), s.time);
                crossing_signal.insert(s.node.clone(), s.signal.clone());
            }
            if !is_above && was {
                recovered.insert(s.node.clone(), s.time);
            }
        }
    }

    let mut running: BTreeMap<u64, Vec<String>> = BTreeMap::new(); // end ms → pod keys
    let mut next_arrival = 0usize;
    let mut next_sample = 0usize;
    let mut seq = 0u64;
    let mut times = Vec::with_capacity(intervals);
    let mut placed_per = Vec::with_capacity(intervals);
    let mut counts: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut weights: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut signal: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut last_raw: HashMap<String, f64> = HashMap::new();
    let mut unschedulable = 0;
    let mut warnings = 0usize;
    let mut failures = Vec::new();
    let mut next_failure = 0usize;
    let scheduler_names: std::collections::HashSet<&str> = l
        .frameworks
        .iter()
        .map(|f| f.scheduler_name.as_str())
        .collect();
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let every = (intervals / 100).max(1);
    for k in 0..intervals {
        if tty && k.is_multiple_of(every) {
            eprint!("\r\x1b[K{}", progress_line(mode, k, intervals));
        }
        let t0 = k as f64 * l.step;
        let t1 = t0 + l.step;
        // Finished pods leave.
        let ms = (t0 * 1000.0).round() as u64;
        let done: Vec<u64> = running.range(..=ms).map(|(k, _)| *k).collect();
        for d in done {
            for key in running.remove(&d).unwrap_or_default() {
                sched.snapshot.remove_pod(&key);
            }
        }
        // Health up to t0.
        while next_sample < l.samples.len() && l.samples[next_sample].time <= t0 {
            let s = &l.samples[next_sample];
            if let Some(w) = tracker.observe(s.time, &s.node, &s.signal, s.value) {
                warnings += 1;
                if warnings <= 20 {
                    warn(w);
                }
            }
            if crossing_signal.get(&s.node) == Some(&s.signal) {
                last_raw.insert(s.node.clone(), s.value);
            }
            next_sample += 1;
        }
        tracker.advance(t0);
        let view = tracker.view();
        let view = match mode {
            Mode::Smoothed => view,
            Mode::Naive => naive_view(view),
        };
        for n in crossed.keys() {
            let w = view.get(n).map_or(100.0, |h| h.weight);
            weights.entry(n.clone()).or_default().push(w);
            signal
                .entry(n.clone())
                .or_default()
                .push(last_raw.get(n).copied().unwrap_or(f64::NAN));
        }
        crate::health::attach(&mut sched.snapshot, view);
        // Node failures up to t0: the failed nodes' pods first, in priority order.
        let mut failed_placed = Vec::new();
        while next_failure < l.failures.len() && l.failures[next_failure].0 <= t0 {
            let node = l.failures[next_failure].1.clone();
            next_failure += 1;
            let (pods, _) = super::failover::fail_nodes(
                &mut sched.snapshot,
                std::slice::from_ref(&node),
                &scheduler_names,
                "failNode",
            )
            .unwrap_or_default();
            let evicted: Vec<String> = pods.iter().map(|p| p.key.clone()).collect();
            let r = sched.schedule_all(pods);
            unschedulable += r.unschedulable.len();
            failures.push(NodeFailure {
                at: t0,
                node,
                evicted,
                replaced: r
                    .placements
                    .iter()
                    .map(|p| (p.pod.clone(), p.node.clone()))
                    .collect(),
                unschedulable: r
                    .unschedulable
                    .iter()
                    .map(|u| (u.pod.clone(), u.message.clone()))
                    .collect(),
            });
            failed_placed.extend(r.placements);
        }
        // Arrivals in [t0, t1).
        let mut pending = Vec::new();
        let mut arrive = Vec::new();
        while next_arrival < l.arrivals.len() && l.arrivals[next_arrival] < t1 {
            let mut p = l.template.clone();
            p.metadata.name = Some(format!("{base_name}-{next_arrival}"));
            seq += 1;
            if let Ok(pi) = PodInfo::new(p, seq) {
                arrive.push((pi.key.clone(), l.arrivals[next_arrival]));
                pending.push(pi);
            }
            next_arrival += 1;
        }
        let arrived_at: HashMap<String, f64> = arrive.into_iter().collect();
        let report = sched.schedule_all(pending);
        unschedulable += report.unschedulable.len();
        // Re-placed pods keep their end time (still in `running`).
        let mut per_node: HashMap<&str, usize> = HashMap::new();
        for p in &failed_placed {
            *per_node.entry(p.node.as_str()).or_default() += 1;
        }
        let replaced = failed_placed.len();
        for p in &report.placements {
            *per_node.entry(p.node.as_str()).or_default() += 1;
            if pod_dur.is_finite() {
                let end = arrived_at.get(&p.pod).copied().unwrap_or(t0).max(t0) + pod_dur;
                running
                    .entry((end * 1000.0).round() as u64)
                    .or_default()
                    .push(p.pod.clone());
            }
        }
        for n in &node_names {
            counts
                .entry(n.clone())
                .or_default()
                .push(per_node.get(n.as_str()).copied().unwrap_or(0));
        }
        times.push(t0);
        placed_per.push(report.placements.len() + replaced);
    }

    // Shares and metrics.
    let shares: BTreeMap<String, Vec<f64>> = counts
        .iter()
        .map(|(n, c)| {
            let v = c
                .iter()
                .zip(&placed_per)
                .map(|(&c, &p)| {
                    if p == 0 {
                        f64::NAN
                    } else {
                        c as f64 / p as f64
                    }
                })
                .collect();
            (n.clone(), v)
        })
        .collect();
    // Oscillation is counted on one-minute moving shares with a dead band of half
    // the fair share, so sampling noise of a few pods does not count.
    let band = fair / 2.0;
    let win = ((60.0 / l.step).round() as usize).max(1);
    let windowed = |c: &[usize]| -> Vec<f64> {
        (win..=c.len())
            .map(|end| {
                let placed: usize = placed_per[end - win..end].iter().sum();
                let on: usize = c[end - win..end].iter().sum();
                if placed == 0 {
                    f64::NAN
                } else {
                    on as f64 / placed as f64
                }
            })
            .collect()
    };
    let mut healthy_max = 0;
    for (n, c) in &counts {
        if !crossed.contains_key(n) {
            healthy_max = healthy_max.max(direction_changes(&windowed(c), band));
        }
    }
    let metrics = crossed
        .iter()
        .map(|(n, &tc)| {
            let s = shares.get(n).cloned().unwrap_or_default();
            let pre: Vec<f64> = s
                .iter()
                .zip(&times)
                .filter(|(v, t)| **t >= 60.0 && **t + l.step <= tc && v.is_finite())
                .map(|(v, _)| *v)
                .collect();
            let steady = if pre.len() >= 3 {
                pre.iter().sum::<f64>() / pre.len() as f64
            } else {
                fair
            };
            let half = s
                .iter()
                .zip(&times)
                .find(|(v, t)| **t + l.step > tc && v.is_finite() && **v < fair / 2.0)
                .map(|(_, t)| (t + l.step - tc).max(0.0));
            let c = counts.get(n).cloned().unwrap_or_default();
            let dc = direction_changes(&windowed(&c), band);
            let rec = recovered.get(n).copied().filter(|r| *r >= tc);
            // Herd: one-minute windows (per-interval counts are too small to
            // tell a stampede from sampling noise), ending within 5 min after the
            // recovery.
            let herd = rec.and_then(|r| {
                let mut peak: Option<f64> = None;
                for end in win..=c.len() {
                    let t_start = times[end - win];
                    let t_end = times[end - 1] + l.step;
                    if t_start < r || t_end > r + 300.0 + l.step {
                        continue;
                    }
                    let placed: usize = placed_per[end - win..end].iter().sum();
                    if placed > 0 {
                        let on: usize = c[end - win..end].iter().sum();
                        let v = on as f64 / placed as f64;
                        peak = Some(peak.map_or(v, |p: f64| p.max(v)));
                    }
                }
                peak.map(|p| p / steady.max(1e-9))
            });
            NodeMetrics {
                node: n.clone(),
                steady_share: steady,
                degrade_crossed_at: Some(tc),
                time_to_half_fair: half,
                intervals_to_half_fair: half.map(|h| h / l.step),
                direction_changes: dc,
                direction_changes_per_5min: dc as f64 * 300.0 / l.duration,
                recovered_at: rec,
                herd_ratio: herd,
            }
        })
        .collect();
    let mut keep: BTreeSet<String> = crossed.keys().cloned().collect();
    keep.extend(
        counts
            .iter()
            .filter(|(_, c)| c.iter().any(|x| *x > 0))
            .map(|(n, _)| n.clone()),
    );
    Ok(TimelineRun {
        mode,
        step_seconds: l.step,
        duration_seconds: l.duration,
        nodes: node_names.len(),
        fair_share: fair,
        times,
        placed: placed_per,
        unschedulable,
        shares: shares
            .into_iter()
            .filter(|(n, _)| keep.contains(n))
            .collect(),
        health_weight: weights,
        signal,
        signal_name: crossing_signal,
        metrics,
        healthy_max_direction_changes: healthy_max,
        warnings,
        failures,
    })
}

/// Counts direction changes of a series, ignoring moves smaller than `band` from
/// the last extreme (so sampling noise does not count as oscillation).
pub fn direction_changes(s: &[f64], band: f64) -> usize {
    let mut changes = 0;
    let mut dir = 0i8;
    let mut ext: Option<f64> = None;
    for &v in s.iter().filter(|v| v.is_finite()) {
        let Some(e) = ext else {
            ext = Some(v);
            continue;
        };
        match dir {
            0 => {
                if v >= e + band {
                    dir = 1;
                    ext = Some(v);
                } else if v <= e - band {
                    dir = -1;
                    ext = Some(v);
                }
            }
            1 => {
                if v > e {
                    ext = Some(v);
                } else if v <= e - band {
                    dir = -1;
                    changes += 1;
                    ext = Some(v);
                }
            }
            _ => {
                if v < e {
                    ext = Some(v);
                } else if v >= e + band {
                    dir = 1;
                    changes += 1;
                    ext = Some(v);
                }
            }
        }
    }
    changes
}

/// One progress line of a timeline run: `Smoothed: interval 120/180 (66%)`.
pub fn progress_line(mode: Mode, k: usize, n: usize) -> String {
    format!("{mode:?}: interval {k}/{n} ({}%)", k * 100 / n.max(1))
}

/// Runs `simulate --timeline` (and the naive comparison if asked).
pub fn run_all(
    args: &TimelineArgs,
    warn: &mut dyn FnMut(String),
) -> Result<TimelineReport, String> {
    let l = load(args, warn)?;
    let t0 = std::time::Instant::now();
    let mut runs = vec![run(&l, Mode::Smoothed, warn)?];
    if args.compare_naive {
        runs.push(run(&l, Mode::Naive, warn)?);
    }
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        // The summary line replaces the progress line.
        eprintln!(
            "\r\x1b[K{} run(s) done in {:.1} s",
            runs.len(),
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(TimelineReport { runs })
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.prec$}"))
}

/// Human-readable table.
pub fn to_table(r: &TimelineReport) -> String {
    let mut s = String::new();
    for run in &r.runs {
        let _ = writeln!(
            s,
            "{:?}: {} nodes, step {} s, {} intervals, {} pods placed, {} unschedulable, fair share {:.2}%",
            run.mode,
            run.nodes,
            run.step_seconds,
            run.times.len(),
            run.placed.iter().sum::<usize>(),
            run.unschedulable,
            run.fair_share * 100.0
        );
        let _ = writeln!(
            s,
            "  {:<16} {:>10} {:>14} {:>12} {:>10} {:>12} {:>10}",
            "NODE", "CROSSED_S", "TO_HALF_FAIR_S", "INTERVALS", "DIR_CHG", "DIR_CHG/5MIN", "HERD"
        );
        for m in &run.metrics {
            let _ = writeln!(
                s,
                "  {:<16} {:>10} {:>14} {:>12} {:>10} {:>12.2} {:>10}",
                m.node,
                opt(m.degrade_crossed_at, 0),
                opt(m.time_to_half_fair, 0),
                opt(m.intervals_to_half_fair, 1),
                m.direction_changes,
                m.direction_changes_per_5min,
                opt(m.herd_ratio, 2)
            );
        }
        let _ = writeln!(
            s,
            "  nodes without health events: max direction changes {}",
            run.healthy_max_direction_changes
        );
        for f in &run.failures {
            let _ = writeln!(
                s,
                "  node {} failed at {} s: {} pod(s) re-placed first in priority order, {} unschedulable",
                f.node,
                f.at,
                f.replaced.len(),
                f.unschedulable.len()
            );
            for (p, n) in &f.replaced {
                let _ = writeln!(s, "    {p} -> {n}");
            }
            for (p, why) in &f.unschedulable {
                let _ = writeln!(s, "    {p}: {why}");
            }
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests;
