//! Volcano's `volcano-scheduler.conf`, accepted as it is (the file, or the ConfigMap
//! Volcano's chart ships with it under `data["volcano-scheduler.conf"]`).
//!
//! It becomes the equivalent Corral configuration:
//! - `actions: "enqueue, allocate, ..."` → `corral.session.actions`;
//! - session plugins (priority, gang, conformance, drf, proportion, capacity,
//!   overcommit, resourcequota) with their tiers, `enable*` flags and `arguments` →
//!   `corral.session.tiers` (see [`crate::tiers`]);
//! - node plugins become the profile `volcano` (Volcano's scheduler name) and
//!   `corral`: `predicates` → kube-scheduler's filters (without it only resources
//!   and unschedulable nodes are checked, as in Volcano); `nodeorder` (weights from
//!   its arguments, Volcano's defaults otherwise) and `binpack` → scores (the
//!   LeastAllocated part of nodeorder and binpack's MostAllocated are combined per
//!   resource into one NodeResourcesFit strategy);
//! - `numaaware` → NodeResourceTopologyMatch (Filter, Score with its `weight`);
//!   `network-topology-aware` is accepted without arguments (HyperNode placement is
//!   `actions/topology.rs`);
//! - `configurations[]`: action names are checked; no action argument is supported
//!   yet, so any argument is an error naming it.
//!
//! Every field is honoured or rejected with an error naming it.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::json;

use crate::config::{Action, PluginOption, SessionConfig, TierConfig, number_arg};
use corral_engine::config::{
    KubeSchedulerConfiguration, PluginConfigEntry, PluginRef, PluginSet, PluginsConfig,
    ProfileConfig,
};

/// Data key of Volcano's ConfigMap.
pub const CONFIGMAP_KEY: &str = "volcano-scheduler.conf";

/// Session plugins Corral implements.
pub const SESSION_PLUGINS: &[&str] = &[
    "priority",
    "gang",
    "conformance",
    "drf",
    "proportion",
    "capacity",
    "overcommit",
    "resourcequota",
];
/// Volcano node plugins mapped onto the profile.
pub const NODE_PLUGINS: &[&str] = &[
    "predicates",
    "nodeorder",
    "binpack",
    "numaaware",
    "network-topology-aware",
    "deviceshare",
];
/// Volcano plugins Corral does not support (yet).
pub const UNSUPPORTED_PLUGINS: &[&str] = &[
    "sla",
    "pdb",
    "task-topology",
    "tdm",
    "rescheduling",
    "usage",
    "extender",
    "cdp",
    "nodegroup",
    "resource-strategy-fit",
    "capacity-card",
    "dynamicresources",
];

/// Profiles a Volcano configuration schedules for.
pub const SCHEDULER_NAMES: &[&str] = &["volcano", "corral"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    actions: Option<String>,
    #[serde(default)]
    tiers: Vec<TierConfig>,
    #[serde(default)]
    configurations: Vec<ActionConf>,
    metrics: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionConf {
    name: String,
    arguments: Option<BTreeMap<String, serde_json::Value>>,
}

/// A Volcano configuration translated to Corral's.
#[derive(Debug, Clone)]
pub struct VolcanoConf {
    pub kube: KubeSchedulerConfiguration,
    pub session: SessionConfig,
}

/// Whether `text` is a Volcano scheduler configuration (or its ConfigMap); Ok(None)
/// when it is something else (a KubeSchedulerConfiguration). Errors name `origin`
/// and the field.
pub fn load(text: &str, origin: &str) -> Result<Option<VolcanoConf>, String> {
    corral_limits::check_yaml(
        text,
        corral_limits::MAX_NESTING_DEPTH,
        corral_limits::MAX_CONFIG_BYTES,
    )
    .map_err(|e| format!("{origin}: {e}"))?;
    let v: serde_yaml_ng::Value = match serde_yaml_ng::from_str(text) {
        Ok(v) => v,
        // Not YAML at all: the KubeSchedulerConfiguration parser reports it.
        Err(_) => return Ok(None),
    };
    let Some(m) = v.as_mapping() else {
        return Ok(None);
    };
    let get = |k: &str| m.get(serde_yaml_ng::Value::String(k.into()));
    if get("kind").and_then(|k| k.as_str()) == Some("ConfigMap") {
        let data = get("data").and_then(|d| d.as_mapping());
        let Some(conf) = data
            .and_then(|d| d.get(serde_yaml_ng::Value::String(CONFIGMAP_KEY.into())))
            .and_then(|c| c.as_str())
        else {
            return Err(format!(
                "{origin}: ConfigMap has no data[{CONFIGMAP_KEY:?}] (Volcano's scheduler configuration)"
            ));
        };
        let at = format!("{origin}: data[{CONFIGMAP_KEY:?}]");
        return parse(conf, &at).map(Some);
    }
    if get("apiVersion").is_some() || get("kind").is_some() {
        return Ok(None);
    }
    if get("actions").is_some() || get("tiers").is_some() {
        return parse(text, origin).map(Some);
    }
    Ok(None)
}

/// Parses a `volcano-scheduler.conf` document.
pub fn parse(text: &str, origin: &str) -> Result<VolcanoConf, String> {
    let raw: Raw = serde_yaml_ng::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
    if raw.metrics.as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(format!(
            "{origin}: metrics: not supported by Corral (the usage plugin's metrics source)"
        ));
    }
    let actions = parse_actions(raw.actions.as_deref(), origin)?;
    for (i, c) in raw.configurations.iter().enumerate() {
        let at = format!("{origin}: configurations[{i}]");
        action(&c.name).ok_or_else(|| {
            format!("{at}.name: unknown action {:?} (supported: enqueue, allocate, preempt, reclaim, backfill)", c.name)
        })?;
        if let Some(k) = c.arguments.iter().flatten().map(|(k, _)| k).next() {
            return Err(format!(
                "{at}.arguments.{k}: action argument not supported by Corral"
            ));
        }
    }
    let mut tiers: Vec<TierConfig> = Vec::new();
    let mut node: BTreeMap<&str, (String, PluginOption)> = BTreeMap::new();
    for (ti, tier) in raw.tiers.iter().enumerate() {
        let mut session = Vec::new();
        for (pi, p) in tier.plugins.iter().enumerate() {
            let at = format!("{origin}: tiers[{ti}].plugins[{pi}]");
            let name = p.name.as_str();
            if SESSION_PLUGINS.contains(&name) {
                session.push(p.clone());
            } else if let Some(n) = NODE_PLUGINS.iter().find(|n| **n == name) {
                if node.insert(n, (at.clone(), p.clone())).is_some() {
                    return Err(format!("{at}.name: plugin {name:?} configured twice"));
                }
            } else {
                let supported = [SESSION_PLUGINS, NODE_PLUGINS].concat().join(", ");
                return Err(if UNSUPPORTED_PLUGINS.contains(&name) {
                    format!(
                        "{at}.name: Volcano plugin {name:?} is not supported by Corral (supported: {supported})"
                    )
                } else {
                    format!("{at}.name: unknown plugin {name:?} (supported: {supported})")
                });
            }
        }
        tiers.push(TierConfig { plugins: session });
    }
    let session = SessionConfig {
        actions: Some(actions),
        tiers: Some(tiers),
        ..SessionConfig::default()
    };
    session
        .plugins()
        .map_err(|e| format!("{origin}: {}", e.replace("corral.session.tiers", "tiers")))?;
    if let Some((at, p)) = node.get("network-topology-aware")
        && let Some(k) = p.arguments.iter().flatten().map(|(k, _)| k).next()
    {
        return Err(format!(
            "{at}.arguments.{k}: network-topology-aware argument not supported by Corral (HyperNodes are tried lowest tier first, then the smaller, then by name)"
        ));
    }
    let kube = profile(
        node.get("predicates"),
        node.get("nodeorder"),
        node.get("binpack"),
        node.get("numaaware"),
        node.get("deviceshare"),
    )?;
    Ok(VolcanoConf { kube, session })
}

fn action(name: &str) -> Option<Action> {
    Some(match name {
        "enqueue" => Action::Enqueue,
        "allocate" => Action::Allocate,
        "preempt" => Action::Preempt,
        "reclaim" => Action::Reclaim,
        "backfill" => Action::Backfill,
        _ => return None,
    })
}

fn parse_actions(s: Option<&str>, origin: &str) -> Result<Vec<Action>, String> {
    let Some(s) = s else {
        return Err(format!(
            "{origin}: actions: required (e.g. \"enqueue, allocate, backfill\")"
        ));
    };
    let mut out = Vec::new();
    for (i, a) in s.split(',').map(str::trim).enumerate() {
        let Some(act) = action(a) else {
            return Err(format!(
                "{origin}: actions[{i}]: unknown action {a:?} (supported: enqueue, allocate, preempt, reclaim, backfill)"
            ));
        };
        if out.contains(&act) {
            return Err(format!("{origin}: actions[{i}]: action {a:?} listed twice"));
        }
        out.push(act);
    }
    Ok(out)
}

/// An integer weight argument >= 0.
fn weight(
    args: &BTreeMap<String, serde_json::Value>,
    key: &str,
    default: f64,
    at: &str,
) -> Result<f64, String> {
    match args.get(key) {
        None => Ok(default),
        Some(v) => {
            let w = number_arg(v, &format!("{at}.arguments.{key}"))?;
            if w < 0.0 || w.fract() != 0.0 {
                return Err(format!(
                    "{at}.arguments.{key}: must be an integer >= 0, got {v}"
                ));
            }
            Ok(w)
        }
    }
}

/// Volcano's `deviceshare` as GpuShare settings.
struct DeviceShare {
    /// GpuShare's request families.
    families: Vec<&'static str>,
    /// GpuShare's score weight (0: no score).
    weight: i64,
}

/// Volcano's deviceshare arguments (`deviceshare.*`), honoured or rejected by name.
fn device_share((at, p): &(String, PluginOption)) -> Result<DeviceShare, String> {
    const KNOWN: &[&str] = &[
        "deviceshare.VGPUEnable",
        "deviceshare.GPUSharingEnable",
        "deviceshare.GPUNumberEnable",
        "deviceshare.NodeLockEnable",
        "deviceshare.SchedulePolicy",
        "deviceshare.ScheduleWeight",
    ];
    let empty = BTreeMap::new();
    let a = p.arguments.as_ref().unwrap_or(&empty);
    if let Some(k) = a.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(format!(
            "{at}.arguments.{k}: unknown deviceshare argument (known: {})",
            KNOWN.join(", ")
        ));
    }
    let flag = |k: &str| -> Result<bool, String> {
        match a.get(k) {
            None => Ok(false),
            Some(serde_json::Value::Bool(b)) => Ok(*b),
            Some(v) => Err(format!(
                "{at}.arguments.{k}: must be true or false, got {v}"
            )),
        }
    };
    for (k, what) in [
        (
            "deviceshare.GPUSharingEnable",
            "Volcano's gpushare device (volcano.sh/gpu-memory) is not supported by Corral; share cards with deviceshare.VGPUEnable (volcano.sh/vgpu-*), HAMi or tencent vcuda names",
        ),
        (
            "deviceshare.GPUNumberEnable",
            "Volcano's gpu-number device (volcano.sh/gpu-number) is not supported by Corral; whole cards are nvidia.com/gpu (NodeResourcesFit)",
        ),
        (
            "deviceshare.NodeLockEnable",
            "device-plugin node locks are not supported by Corral (it writes the vGPU assignment annotations before the Binding instead)",
        ),
    ] {
        if flag(k)? {
            return Err(format!("{at}.arguments.{k}: true: {what}"));
        }
    }
    match a.get("deviceshare.SchedulePolicy") {
        None => {}
        Some(serde_json::Value::String(s)) if s == "binpack" => {}
        Some(v) => {
            return Err(format!(
                "{at}.arguments.deviceshare.SchedulePolicy: {v}: Corral packs shared cards (binpack, the default); spread is not supported"
            ));
        }
    }
    if p.predicate == Some(false) {
        return Err(format!(
            "{at}.enablePredicate: false is not supported: deviceshare's card accounting (GpuShare's Filter) cannot be turned off"
        ));
    }
    let w = weight(a, "deviceshare.ScheduleWeight", 10.0, at)? as i64;
    let mut families = vec!["vcuda", "hami"];
    if flag("deviceshare.VGPUEnable")? {
        families.push("volcano");
    }
    Ok(DeviceShare {
        families,
        weight: if p.node_order == Some(false) { 0 } else { w },
    })
}

/// kube-scheduler filters Volcano's `predicates` plugin runs (beyond resources).
const PREDICATE_FILTERS: &[&str] = &[
    "TaintToleration",
    "NodeAffinity",
    "NodePorts",
    "PodTopologySpread",
    "InterPodAffinity",
];

/// The profile of the node plugins.
fn profile(
    predicates: Option<&(String, PluginOption)>,
    nodeorder: Option<&(String, PluginOption)>,
    binpack: Option<&(String, PluginOption)>,
    numaaware: Option<&(String, PluginOption)>,
    deviceshare: Option<&(String, PluginOption)>,
) -> Result<KubeSchedulerConfiguration, String> {
    let empty = BTreeMap::new();
    let device = deviceshare.map(device_share).transpose()?;
    if let Some((at, p)) = predicates
        && let Some(k) = p.arguments.iter().flatten().map(|(k, _)| k).next()
    {
        return Err(format!(
            "{at}.arguments.{k}: predicates argument not supported by Corral (GPU sharing: use the GpuShare profile plugin)"
        ));
    }
    // Scores: nodeorder's sub-plugins and binpack.
    let mut scores: Vec<(&str, f64)> = Vec::new();
    // Per resource: the net MostAllocated coefficient (negative: LeastAllocated).
    let mut fit: BTreeMap<String, f64> = BTreeMap::new();
    if let Some((at, p)) = nodeorder
        && p.node_order != Some(false)
    {
        let a = p.arguments.as_ref().unwrap_or(&empty);
        const KEYS: &[(&str, &str, f64)] = &[
            ("nodeaffinity.weight", "NodeAffinity", 2.0),
            ("podaffinity.weight", "InterPodAffinity", 2.0),
            (
                "balancedresource.weight",
                "NodeResourcesBalancedAllocation",
                1.0,
            ),
            ("tainttoleration.weight", "TaintToleration", 3.0),
            ("imagelocality.weight", "ImageLocality", 1.0),
            ("podtopologyspread.weight", "PodTopologySpread", 2.0),
        ];
        for k in a.keys() {
            let known = KEYS.iter().any(|(n, _, _)| n == k)
                || k == "leastrequested.weight"
                || k == "mostrequested.weight";
            if !known {
                return Err(format!(
                    "{at}.arguments.{k}: unknown nodeorder argument (known: leastrequested.weight, mostrequested.weight, {})",
                    KEYS.iter().map(|k| k.0).collect::<Vec<_>>().join(", ")
                ));
            }
        }
        for (key, plugin, default) in KEYS {
            let w = weight(a, key, *default, at)?;
            if w > 0.0 {
                scores.push((plugin, w));
            }
        }
        let least = weight(a, "leastrequested.weight", 1.0, at)?;
        let most = weight(a, "mostrequested.weight", 0.0, at)?;
        for r in ["cpu", "memory"] {
            *fit.entry(r.to_string()).or_insert(0.0) += (most - least) / 2.0;
        }
    }
    if let Some((at, p)) = binpack
        && p.node_order != Some(false)
    {
        let a = p.arguments.as_ref().unwrap_or(&empty);
        let w = weight(a, "binpack.weight", 1.0, at)?;
        let mut res: Vec<(String, f64)> = vec![
            ("cpu".into(), weight(a, "binpack.cpu", 1.0, at)?),
            ("memory".into(), weight(a, "binpack.memory", 1.0, at)?),
        ];
        let listed: Vec<String> = match a.get("binpack.resources") {
            None => Vec::new(),
            Some(serde_json::Value::String(s)) => s
                .split(',')
                .map(|r| r.trim().to_string())
                .filter(|r| !r.is_empty())
                .collect(),
            Some(v) => {
                return Err(format!(
                    "{at}.arguments.binpack.resources: must be a comma-separated string, got {v}"
                ));
            }
        };
        for r in &listed {
            res.push((
                r.clone(),
                weight(a, &format!("binpack.resources.{r}"), 1.0, at)?,
            ));
        }
        for k in a.keys() {
            let known = [
                "binpack.weight",
                "binpack.cpu",
                "binpack.memory",
                "binpack.resources",
            ]
            .contains(&k.as_str())
                || k.strip_prefix("binpack.resources.")
                    .is_some_and(|r| listed.iter().any(|l| l == r));
            if !known {
                return Err(format!(
                    "{at}.arguments.{k}: unknown binpack argument (known: binpack.weight, binpack.cpu, binpack.memory, binpack.resources, binpack.resources.<listed resource>)"
                ));
            }
        }
        let sum: f64 = res.iter().map(|r| r.1).sum();
        if sum > 0.0 {
            for (r, rw) in res {
                *fit.entry(r).or_insert(0.0) += w * rw / sum;
            }
        }
    }
    fit.retain(|_, c| c.abs() > 1e-9);
    let mut plugin_config = Vec::new();
    if let Some(d) = &device {
        plugin_config.push(PluginConfigEntry {
            name: "GpuShare".into(),
            args: Some(json!({"families": d.families})),
        });
        if d.weight > 0 {
            scores.push(("GpuShare", d.weight as f64));
        }
    }
    if !fit.is_empty() {
        let pos = fit.values().all(|c| *c > 0.0);
        let neg = fit.values().all(|c| *c < 0.0);
        if !pos && !neg {
            let at = binpack.map(|b| b.0.clone()).unwrap_or_default();
            return Err(format!(
                "{at}: binpack and nodeorder's leastrequested/mostrequested weights favour full nodes for some resources and empty nodes for others ({}); Corral's NodeResourcesFit has one strategy: adjust the weights",
                fit.iter()
                    .map(|(r, c)| format!("{r} {c:+.2}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let max = fit.values().map(|c| c.abs()).fold(0.0, f64::max);
        let total: f64 = fit.values().map(|c| c.abs()).sum();
        let resources: Vec<serde_json::Value> = fit
            .iter()
            .map(|(r, c)| json!({"name": r, "weight": ((c.abs() / max) * 100.0).round().max(1.0) as i64}))
            .collect();
        plugin_config.push(PluginConfigEntry {
            name: "NodeResourcesFit".into(),
            args: Some(json!({"scoringStrategy": {
                "type": if pos { "MostAllocated" } else { "LeastAllocated" },
                "resources": resources,
            }})),
        });
        scores.push(("NodeResourcesFit", total));
    }
    let refs = |names: &[&str]| -> Vec<PluginRef> {
        names
            .iter()
            .map(|n| PluginRef {
                name: n.to_string(),
                weight: None,
            })
            .collect()
    };
    // numaaware → NodeResourceTopologyMatch: its Filter (enablePredicate) and its
    // Score (enableNodeOrder, `weight` argument, default 1).
    let mut numa_filter = false;
    if let Some((at, p)) = numaaware {
        for k in p.arguments.iter().flatten().map(|(k, _)| k) {
            if k != "weight" {
                return Err(format!(
                    "{at}.arguments.{k}: unknown numaaware argument (known: weight)"
                ));
            }
        }
        numa_filter = p.predicate != Some(false);
        if p.node_order != Some(false) {
            let w = weight(p.arguments.as_ref().unwrap_or(&empty), "weight", 1.0, at)?;
            if w > 0.0 {
                scores.push(("NodeResourceTopologyMatch", w));
            }
        }
    }
    let mut plugins = PluginsConfig {
        multi_point: Some(PluginSet {
            enabled: Vec::new(),
            // numaaware is NodeResourceTopologyMatch (below); GpuShare is
            // deviceshare (off without it).
            disabled: if device.is_some() {
                refs(&["NodeResourceTopologyMatch"])
            } else {
                refs(&["NodeResourceTopologyMatch", "GpuShare"])
            },
        }),
        score: Some(PluginSet {
            enabled: scores
                .iter()
                .map(|(n, w)| PluginRef {
                    name: n.to_string(),
                    weight: Some((w.round() as i32).max(1)),
                })
                .collect(),
            disabled: refs(&["*"]),
        }),
        ..PluginsConfig::default()
    };
    let numa_scored = scores
        .iter()
        .any(|(n, _)| *n == "NodeResourceTopologyMatch");
    if numa_filter || numa_scored {
        let mp = plugins.multi_point.get_or_insert_with(PluginSet::default);
        mp.disabled
            .retain(|r| r.name != "NodeResourceTopologyMatch");
        if !numa_filter {
            plugins
                .filter
                .get_or_insert_with(PluginSet::default)
                .disabled
                .extend(refs(&["NodeResourceTopologyMatch"]));
        }
    }
    if predicates.is_none_or(|(_, p)| p.predicate == Some(false)) {
        plugins
            .filter
            .get_or_insert_with(PluginSet::default)
            .disabled
            .extend(refs(PREDICATE_FILTERS));
        plugins
            .pre_filter
            .get_or_insert_with(PluginSet::default)
            .disabled
            .extend(refs(PREDICATE_FILTERS));
    }
    let profiles = SCHEDULER_NAMES
        .iter()
        .map(|n| ProfileConfig {
            scheduler_name: Some(n.to_string()),
            percentage_of_nodes_to_score: None,
            plugins: Some(plugins.clone()),
            plugin_config: plugin_config.clone(),
        })
        .collect();
    Ok(KubeSchedulerConfiguration {
        api_version: Some(corral_engine::config::API_VERSION.into()),
        kind: Some("KubeSchedulerConfiguration".into()),
        profiles,
        ..KubeSchedulerConfiguration::default()
    })
}

/// Reads a scheduler configuration file: a Volcano configuration (file or
/// ConfigMap) or a KubeSchedulerConfiguration with an optional `corral.session`.
/// Returns the profiles' configuration and the session configuration (`None`: no
/// session section).
pub fn load_any(
    text: &str,
    origin: &str,
) -> Result<(KubeSchedulerConfiguration, Option<SessionConfig>), String> {
    if let Some(v) = load(text, origin)? {
        return Ok((v.kube, Some(v.session)));
    }
    let kube = KubeSchedulerConfiguration::from_yaml(text, origin).map_err(|e| e.0)?;
    let session = SessionConfig::from_config_yaml(text, origin)?;
    Ok((kube, session))
}
