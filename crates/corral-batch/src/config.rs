//! `corral.session` of the configuration file: the actions in order, the session
//! plugins and their settings. The engine keeps this section raw; it is parsed here
//! ([`SessionConfig::from_config_yaml`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::plugins::{self, SessionPlugin};
use crate::tiers::{Flags, Gated};

/// Session actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Enqueue,
    Allocate,
    Preempt,
    Reclaim,
    Backfill,
}

pub const DEFAULT_ACTIONS: &[Action] = &[
    Action::Enqueue,
    Action::Allocate,
    Action::Preempt,
    Action::Reclaim,
    Action::Backfill,
];

/// `corral.session` in the configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionConfig {
    /// Actions in order (default enqueue, allocate, preempt, reclaim, backfill).
    pub actions: Option<Vec<Action>>,
    /// Session plugins (default priority, gang, conformance, drf, proportion,
    /// overcommit, resourcequota).
    pub plugins: Option<Vec<String>>,
    /// Volcano-style tiers instead of `plugins`: per plugin its `enable*` flags and
    /// `arguments` (see [`crate::tiers`] for how tiers vote).
    pub tiers: Option<Vec<TierConfig>>,
    /// Enqueue admits up to idle capacity times this factor (default 1.2).
    pub overcommit_factor: Option<f64>,
    /// Session clock (Unix seconds) for min-runtime protection; default: the newest
    /// pod creation/start timestamp of the input (else the current time).
    pub now: Option<i64>,
    /// Session period in seconds (default 1): with `--cycles`, session k runs at
    /// `now + k × period` (the clock of scheduleTimeoutSeconds and backoff).
    pub period_seconds: Option<i64>,
    /// Backoff of a coscheduling PodGroup after its scheduleTimeoutSeconds expired
    /// (default: its scheduleTimeoutSeconds).
    pub pod_group_backoff_seconds: Option<i64>,
}

impl SessionConfig {
    /// Parses `corral.session` of a KubeSchedulerConfiguration file (the engine
    /// keeps that section raw); errors name the file, the field path and the line.
    /// The rest of the file is the engine's (`KubeSchedulerConfiguration::from_yaml`).
    pub fn from_config_yaml(text: &str, origin: &str) -> Result<Option<SessionConfig>, String> {
        #[derive(Deserialize)]
        struct File {
            corral: Option<Corral>,
        }
        #[derive(Deserialize)]
        struct Corral {
            session: Option<SessionConfig>,
        }
        let f: File = serde_yaml_ng::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
        Ok(f.corral.and_then(|c| c.session))
    }

    pub fn actions(&self) -> Vec<Action> {
        self.actions
            .clone()
            .unwrap_or_else(|| DEFAULT_ACTIONS.to_vec())
    }

    /// Checks the settings; errors name the setting.
    pub fn plugins(&self) -> Result<Vec<Arc<dyn SessionPlugin>>, String> {
        let f = self.overcommit_factor.unwrap_or(1.2);
        if !(f.is_finite() && f >= 1.0) {
            return Err(format!(
                "corral.session.overcommitFactor: must be a number >= 1.0, got {f}"
            ));
        }
        for (field, v) in [
            ("periodSeconds", self.period_seconds),
            ("podGroupBackoffSeconds", self.pod_group_backoff_seconds),
        ] {
            if let Some(v) = v
                && v < 0
            {
                return Err(format!(
                    "corral.session.{field}: must not be negative, got {v}"
                ));
            }
        }
        if let Some(tiers) = &self.tiers {
            if self.plugins.is_some() {
                return Err("corral.session: set either plugins or tiers, not both".to_string());
            }
            return build_tiers(tiers, f, "corral.session.tiers");
        }
        let names: Vec<String> = match &self.plugins {
            Some(p) => p.clone(),
            None => plugins::DEFAULT_PLUGINS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        plugins::build(&names, f).map_err(|e| format!("corral.session.plugins: {e}"))
    }
}

/// One tier of session plugins (Volcano's `tiers[]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    pub plugins: Vec<PluginOption>,
}

/// A plugin of a tier with Volcano's flags (unset = enabled) and arguments.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginOption {
    pub name: String,
    #[serde(rename = "enableJobOrder")]
    pub job_order: Option<bool>,
    #[serde(rename = "enableHierarchy")]
    pub hierarchy: Option<bool>,
    #[serde(rename = "enableJobReady")]
    pub job_ready: Option<bool>,
    #[serde(rename = "enableJobPipelined")]
    pub job_pipelined: Option<bool>,
    #[serde(rename = "enableTaskOrder")]
    pub task_order: Option<bool>,
    #[serde(rename = "enablePreemptable")]
    pub preemptable: Option<bool>,
    #[serde(rename = "enableReclaimable")]
    pub reclaimable: Option<bool>,
    #[serde(rename = "enablePreemptive")]
    pub preemptive: Option<bool>,
    #[serde(rename = "enableQueueOrder")]
    pub queue_order: Option<bool>,
    #[serde(rename = "enabledClusterOrder")]
    pub cluster_order: Option<bool>,
    #[serde(rename = "enablePredicate")]
    pub predicate: Option<bool>,
    #[serde(rename = "enableBestNode")]
    pub best_node: Option<bool>,
    #[serde(rename = "enableNodeOrder")]
    pub node_order: Option<bool>,
    #[serde(rename = "enableTargetJob")]
    pub target_job: Option<bool>,
    #[serde(rename = "enableReservedNodes")]
    pub reserved_nodes: Option<bool>,
    #[serde(rename = "enableJobEnqueued")]
    pub job_enqueued: Option<bool>,
    #[serde(rename = "enabledVictim")]
    pub victim: Option<bool>,
    #[serde(rename = "enableJobStarving")]
    pub job_starving: Option<bool>,
    #[serde(rename = "enabledOverused")]
    pub overused: Option<bool>,
    #[serde(rename = "enabledAllocatable")]
    pub allocatable: Option<bool>,
    #[serde(rename = "enabledHyperNodeOrder")]
    pub hyper_node_order: Option<bool>,
    #[serde(rename = "enabledSubJobReady")]
    pub sub_job_ready: Option<bool>,
    #[serde(rename = "enabledSubJobPipelined")]
    pub sub_job_pipelined: Option<bool>,
    #[serde(rename = "enabledSubJobOrder")]
    pub sub_job_order: Option<bool>,
    #[serde(rename = "enabledHyperNodeGradient")]
    pub hyper_node_gradient: Option<bool>,
    pub arguments: Option<BTreeMap<String, serde_json::Value>>,
}

impl PluginOption {
    /// Every flag with its YAML name.
    pub fn flags(&self) -> Vec<(&'static str, Option<bool>)> {
        vec![
            ("enableJobOrder", self.job_order),
            ("enableHierarchy", self.hierarchy),
            ("enableJobReady", self.job_ready),
            ("enableJobPipelined", self.job_pipelined),
            ("enableTaskOrder", self.task_order),
            ("enablePreemptable", self.preemptable),
            ("enableReclaimable", self.reclaimable),
            ("enablePreemptive", self.preemptive),
            ("enableQueueOrder", self.queue_order),
            ("enabledClusterOrder", self.cluster_order),
            ("enablePredicate", self.predicate),
            ("enableBestNode", self.best_node),
            ("enableNodeOrder", self.node_order),
            ("enableTargetJob", self.target_job),
            ("enableReservedNodes", self.reserved_nodes),
            ("enableJobEnqueued", self.job_enqueued),
            ("enabledVictim", self.victim),
            ("enableJobStarving", self.job_starving),
            ("enabledOverused", self.overused),
            ("enabledAllocatable", self.allocatable),
            ("enabledHyperNodeOrder", self.hyper_node_order),
            ("enabledSubJobReady", self.sub_job_ready),
            ("enabledSubJobPipelined", self.sub_job_pipelined),
            ("enabledSubJobOrder", self.sub_job_order),
            ("enabledHyperNodeGradient", self.hyper_node_gradient),
        ]
    }
}

/// Per session plugin: the flags Corral gates ([`Flags`]) and the flags whose
/// behaviour is built into Corral's plugin and cannot be turned off (an explicit
/// `false` is an error). Any other flag governs a function neither Volcano's nor
/// Corral's plugin has, or one Corral's plugin does not have (nothing to turn off).
fn flag_support(name: &str) -> (&'static [&'static str], &'static [&'static str]) {
    const SHARE: &[&str] = &[
        "enableQueueOrder",
        "enableReclaimable",
        "enableJobEnqueued",
        "enabledOverused",
        "enabledAllocatable",
    ];
    match name {
        "priority" => (
            &["enableJobOrder", "enablePreemptable", "enableJobStarving"],
            &["enableTaskOrder"],
        ),
        "gang" => (
            &["enableJobOrder", "enableJobReady", "enableJobStarving"],
            &[
                "enableJobPipelined",
                "enablePreemptable",
                "enableReclaimable",
            ],
        ),
        "conformance" => (&["enablePreemptable", "enableReclaimable"], &[]),
        "drf" => (&["enableJobOrder"], &[]),
        "proportion" | "capacity" => (SHARE, &[]),
        "overcommit" | "resourcequota" => (&["enableJobEnqueued"], &[]),
        _ => (&[], &[]),
    }
}

/// Arguments each session plugin accepts.
fn known_arguments(name: &str) -> &'static [&'static str] {
    match name {
        "overcommit" => &["overcommit-factor", "overcommit-factor.<resource>"],
        _ => &[],
    }
}

/// A flag value that must be `true` (Corral cannot do what `false` asks).
fn check_flags(o: &PluginOption, at: &str) -> Result<Flags, String> {
    let (gated, builtin) = flag_support(&o.name);
    let mut f = Flags::default();
    // Volcano features Corral does not implement: asking for them is an error.
    if o.hierarchy == Some(true) {
        return Err(format!(
            "{at}.enableHierarchy: hierarchical DRF is not supported by Corral (hierarchical queues: Queue spec.parent with proportion/capacity)"
        ));
    }
    for (flag, v) in o.flags() {
        let Some(v) = v else { continue };
        if v {
            continue;
        }
        if builtin.contains(&flag) {
            return Err(format!(
                "{at}.{flag}: false is not supported: the {} plugin's behaviour is built into Corral and cannot be turned off",
                o.name
            ));
        }
        if !gated.contains(&flag) {
            continue;
        }
        match flag {
            "enableJobOrder" => f.job_order = false,
            "enableQueueOrder" => f.queue_order = false,
            "enableJobReady" => f.job_ready = false,
            "enablePreemptable" => f.preemptable = false,
            "enableReclaimable" => f.reclaimable = false,
            "enableJobEnqueued" => f.job_enqueued = false,
            "enableJobStarving" => f.job_starving = false,
            "enabledOverused" => f.overused = false,
            "enabledAllocatable" => f.allocatable = false,
            _ => {}
        }
    }
    Ok(f)
}

/// A number argument (Volcano accepts numbers and numeric strings).
pub fn number_arg(v: &serde_json::Value, at: &str) -> Result<f64, String> {
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|f: &f64| f.is_finite())
    .ok_or_else(|| format!("{at}: must be a number, got {v}"))
}

/// Builds the session plugins of `tiers`; errors name `at`.tiers[i].plugins[j].
pub fn build_tiers(
    tiers: &[TierConfig],
    overcommit_factor: f64,
    at: &str,
) -> Result<Vec<Arc<dyn SessionPlugin>>, String> {
    let mut out: Vec<Arc<dyn SessionPlugin>> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (ti, tier) in tiers.iter().enumerate() {
        for (pi, o) in tier.plugins.iter().enumerate() {
            let here = format!("{at}[{ti}].plugins[{pi}]");
            if !seen.insert(o.name.clone()) {
                return Err(format!("{here}.name: plugin {:?} configured twice", o.name));
            }
            let mut factor = overcommit_factor;
            let mut per_resource = BTreeMap::new();
            for (k, v) in o.arguments.iter().flatten() {
                if o.name == "overcommit"
                    && let Some(res) = k.strip_prefix("overcommit-factor.")
                {
                    let at = format!("{here}.arguments.{k}");
                    let f = number_arg(v, &at)?;
                    if f < 1.0 || res.is_empty() {
                        return Err(format!(
                            "{at}: must be a number >= 1.0 for a named resource, got {v}"
                        ));
                    }
                    per_resource.insert(res.to_string(), f);
                    continue;
                }
                if !known_arguments(&o.name).contains(&k.as_str()) {
                    return Err(format!(
                        "{here}.arguments.{k}: unknown argument of plugin {:?} (known: {})",
                        o.name,
                        match known_arguments(&o.name) {
                            [] => "none".to_string(),
                            k => k.join(", "),
                        }
                    ));
                }
                if k == "overcommit-factor" {
                    factor = number_arg(v, &format!("{here}.arguments.{k}"))?;
                    if factor < 1.0 {
                        return Err(format!(
                            "{here}.arguments.{k}: must be a number >= 1.0, got {factor}"
                        ));
                    }
                }
            }
            let flags = check_flags(o, &here)?;
            let inner: Vec<Arc<dyn SessionPlugin>> = if o.name == "overcommit" {
                vec![Arc::new(plugins::Overcommit {
                    factor,
                    per_resource: per_resource.clone(),
                })]
            } else {
                plugins::build(std::slice::from_ref(&o.name), factor)
                    .map_err(|e| format!("{here}.name: {e}"))?
            };
            for p in inner {
                out.push(Arc::new(Gated {
                    inner: p,
                    tier: ti,
                    flags,
                }));
            }
        }
    }
    Ok(out)
}
