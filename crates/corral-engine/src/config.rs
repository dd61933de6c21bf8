//! `kubescheduler.config.k8s.io/v1` KubeSchedulerConfiguration: profiles, plugin sets
//! per extension point (incl. `multiPoint` and `*`), weights, pluginConfig args and
//! `percentageOfNodesToScore`, turned into [`Framework`]s.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Deserialize;

use crate::framework::Framework;
use crate::framework::Plugin;
use crate::framework::runtime::WeightedScore;
use crate::plugins;

pub const API_VERSION: &str = "kubescheduler.config.k8s.io/v1";
pub const DEFAULT_SCHEDULER_NAME: &str = "corral";

/// Plugins of kube-scheduler's default profile (MultiPoint order) with their default
/// score weights (0 = no Score extension), plus Corral's NodeResourceTopologyMatch
/// (a no-op without NodeResourceTopology objects: its Filter passes nodes without
/// NRT and its PreScore skips when there are none) and GpuShare (a no-op for pods
/// without `tencent.com/vcuda-*` requests). SchedulingGates holds gated pods and
/// DynamicResources refuses pods with ResourceClaims (both PreFilter only).
pub const DEFAULT_PLUGINS: &[(&str, i64)] = &[
    ("SchedulingGates", 0),
    ("PrioritySort", 0),
    ("NodeUnschedulable", 0),
    ("NodeName", 0),
    ("TaintToleration", 3),
    ("NodeAffinity", 2),
    ("NodePorts", 0),
    ("NodeResourcesFit", 1),
    ("VolumeRestrictions", 0),
    ("NodeVolumeLimits", 0),
    ("VolumeBinding", 1),
    ("VolumeZone", 0),
    ("DynamicResources", 0),
    ("NodeResourceTopologyMatch", 2),
    ("GpuShare", 2),
    ("PodTopologySpread", 2),
    ("InterPodAffinity", 2),
    ("NodeResourcesBalancedAllocation", 1),
    ("ImageLocality", 1),
    ("DefaultBinder", 0),
];

/// A configuration error, naming the offending setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeSchedulerConfiguration {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub parallelism: Option<i32>,
    pub percentage_of_nodes_to_score: Option<i32>,
    pub pod_initial_backoff_seconds: Option<i64>,
    pub pod_max_backoff_seconds: Option<i64>,
    #[serde(default)]
    pub profiles: Vec<ProfileConfig>,
    // Accepted for compatibility with kube-scheduler configs; used by `run`.
    pub leader_election: Option<serde_json::Value>,
    pub client_connection: Option<serde_json::Value>,
    pub enable_profiling: Option<bool>,
    pub enable_contention_profiling: Option<bool>,
    pub health_z_bind_address: Option<String>,
    pub metrics_bind_address: Option<String>,
    pub extenders: Option<serde_json::Value>,
    pub delay_cache_until_active: Option<bool>,
    /// Corral extensions.
    pub corral: Option<CorralConfig>,
}

/// Corral-specific settings (`corral:` in the configuration file).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CorralConfig {
    /// Pods evaluated concurrently per batch (1 = strictly sequential like
    /// kube-scheduler).
    pub batch_size: Option<usize>,
    /// Best-scored candidate nodes kept per pod for the batch committer.
    pub candidates: Option<usize>,
    /// Random choice among candidates within this many total-score points of the
    /// best (`Options::selection_tolerance`; 0 = exact argmax).
    pub selection_tolerance: Option<i64>,
    /// Batch scheduling sessions (queues, gangs, preemption): actions and plugins.
    /// Kept raw here: the engine knows nothing about sessions; corral-batch parses
    /// this section (`corral_batch::SessionConfig::from_config_yaml`).
    pub session: Option<serde_json::Value>,
    /// HA reserve: capacity pods below a priority may not consume
    /// (`corral_plugins::ha_reserve`); added to every profile's PreFilter and
    /// Filter. Kept raw and decoded by the plugin (errors name the field).
    pub ha_reserve: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileConfig {
    pub scheduler_name: Option<String>,
    pub percentage_of_nodes_to_score: Option<i32>,
    pub plugins: Option<PluginsConfig>,
    #[serde(default)]
    pub plugin_config: Vec<PluginConfigEntry>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginsConfig {
    pub pre_enqueue: Option<PluginSet>,
    pub queue_sort: Option<PluginSet>,
    pub pre_filter: Option<PluginSet>,
    pub filter: Option<PluginSet>,
    pub post_filter: Option<PluginSet>,
    pub pre_score: Option<PluginSet>,
    pub score: Option<PluginSet>,
    pub reserve: Option<PluginSet>,
    pub permit: Option<PluginSet>,
    pub pre_bind: Option<PluginSet>,
    pub bind: Option<PluginSet>,
    pub post_bind: Option<PluginSet>,
    pub multi_point: Option<PluginSet>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginSet {
    #[serde(default)]
    pub enabled: Vec<PluginRef>,
    #[serde(default)]
    pub disabled: Vec<PluginRef>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginRef {
    pub name: String,
    pub weight: Option<i32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginConfigEntry {
    pub name: String,
    pub args: Option<serde_json::Value>,
}

/// Extension points in configuration order.
const POINTS: &[&str] = &[
    "queueSort",
    "preFilter",
    "filter",
    "postFilter",
    "preScore",
    "score",
    "reserve",
    "permit",
    "preBind",
    "bind",
    "postBind",
];

/// A plugin instance with its score weight.
type WeightedPlugin = (Arc<dyn Plugin>, i64);

fn implements(p: &Arc<dyn Plugin>, point: &str) -> bool {
    let p = p.clone();
    match point {
        "queueSort" => p.as_queue_sort().is_some(),
        "preFilter" => p.as_pre_filter().is_some(),
        "filter" => p.as_filter().is_some(),
        "postFilter" => p.as_post_filter().is_some(),
        "preScore" => p.as_pre_score().is_some(),
        "score" => p.as_score().is_some(),
        "reserve" => p.as_reserve().is_some(),
        "permit" => p.as_permit().is_some(),
        "preBind" => p.as_pre_bind().is_some(),
        "bind" => p.as_bind().is_some(),
        "postBind" => p.as_post_bind().is_some(),
        _ => false,
    }
}

fn point_set<'a>(pc: &'a PluginsConfig, point: &str) -> Option<&'a PluginSet> {
    match point {
        "queueSort" => pc.queue_sort.as_ref(),
        "preFilter" => pc.pre_filter.as_ref(),
        "filter" => pc.filter.as_ref(),
        "postFilter" => pc.post_filter.as_ref(),
        "preScore" => pc.pre_score.as_ref(),
        "score" => pc.score.as_ref(),
        "reserve" => pc.reserve.as_ref(),
        "permit" => pc.permit.as_ref(),
        "preBind" => pc.pre_bind.as_ref(),
        "bind" => pc.bind.as_ref(),
        "postBind" => pc.post_bind.as_ref(),
        _ => None,
    }
}

impl KubeSchedulerConfiguration {
    /// Parses a configuration YAML document. `origin` names the file in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        corral_limits::check_yaml(
            text,
            corral_limits::MAX_NESTING_DEPTH,
            corral_limits::MAX_CONFIG_BYTES,
        )
        .map_err(|e| ConfigError(format!("{origin}: {e}")))?;
        let cfg: KubeSchedulerConfiguration =
            serde_yaml_ng::from_str(text).map_err(|e| ConfigError(format!("{origin}: {e}")))?;
        match cfg.api_version.as_deref() {
            Some(API_VERSION) => {}
            other => {
                return Err(ConfigError(format!(
                    "{origin}: apiVersion must be {API_VERSION:?}, got {other:?}"
                )));
            }
        }
        match cfg.kind.as_deref() {
            Some("KubeSchedulerConfiguration") => {}
            other => {
                return Err(ConfigError(format!(
                    "{origin}: kind must be \"KubeSchedulerConfiguration\", got {other:?}"
                )));
            }
        }
        Ok(cfg)
    }

    /// Builds one framework per profile (the default profile when none is given).
    pub fn build(&self) -> Result<Vec<Framework>, ConfigError> {
        if let Some(p) = self.percentage_of_nodes_to_score {
            check_percentage(p, "percentageOfNodesToScore")?;
        }
        let profiles = if self.profiles.is_empty() {
            vec![ProfileConfig::default()]
        } else {
            self.profiles.clone()
        };
        let reserve = match self.corral.as_ref().and_then(|c| c.ha_reserve.as_ref()) {
            Some(v) => Some(plugins::ha_reserve::from_section(v).map_err(ConfigError)?),
            None => None,
        };
        let mut names = HashMap::new();
        let mut out = Vec::new();
        for (i, p) in profiles.iter().enumerate() {
            let mut fw = build_profile(p, i, self.percentage_of_nodes_to_score)?;
            if let Some(r) = &reserve {
                fw.pre_filter.push(r.clone());
                fw.filter.push(r.clone());
            }
            if let Some(j) = names.insert(fw.scheduler_name.clone(), i) {
                return Err(ConfigError(format!(
                    "profiles[{i}].schedulerName {:?} duplicates profiles[{j}]",
                    fw.scheduler_name
                )));
            }
            out.push(fw);
        }
        Ok(out)
    }
}

fn check_percentage(p: i32, field: &str) -> Result<(), ConfigError> {
    if !(0..=100).contains(&p) {
        return Err(ConfigError(format!(
            "{field}: {p} is invalid, must be in the range [0, 100]"
        )));
    }
    Ok(())
}

/// The default profile's frameworks (no config file).
pub fn default_frameworks() -> Vec<Framework> {
    // The built-in defaults are valid by construction; an error here is a bug that
    // the unit tests catch.
    KubeSchedulerConfiguration::default()
        .build()
        .unwrap_or_default()
}

fn build_profile(
    p: &ProfileConfig,
    idx: usize,
    global_pct: Option<i32>,
) -> Result<Framework, ConfigError> {
    let at = format!("profiles[{idx}]");
    let scheduler_name = p
        .scheduler_name
        .clone()
        .unwrap_or_else(|| DEFAULT_SCHEDULER_NAME.to_string());
    if scheduler_name.is_empty() {
        return Err(ConfigError(format!("{at}.schedulerName must not be empty")));
    }
    if let Some(v) = p.percentage_of_nodes_to_score {
        check_percentage(v, &format!("{at}.percentageOfNodesToScore"))?;
    }
    // pluginConfig args by name.
    let mut args: HashMap<&str, &serde_json::Value> = HashMap::new();
    for (j, pc) in p.plugin_config.iter().enumerate() {
        if let Some(e) = plugins::removed_from_kube_scheduler(&pc.name) {
            return Err(ConfigError(format!("{at}.pluginConfig[{j}]: {e}")));
        }
        if plugins::lookup(&pc.name).is_none()
            && plugins::recognised_not_implemented(&pc.name).is_none()
        {
            return Err(ConfigError(format!(
                "{at}.pluginConfig[{j}]: unknown plugin {:?}",
                pc.name
            )));
        }
        if let Some(a) = pc.args.as_ref()
            && args.insert(&pc.name, a).is_some()
        {
            return Err(ConfigError(format!(
                "{at}.pluginConfig[{j}]: duplicate config for plugin {:?}",
                pc.name
            )));
        }
    }
    let default_weight: HashMap<&str, i64> = DEFAULT_PLUGINS.iter().copied().collect();
    let empty = PluginsConfig::default();
    let pc = p.plugins.as_ref().unwrap_or(&empty);

    // 1. multiPoint: defaults, then the profile's multiPoint disabled/enabled.
    let mut multi: Vec<(String, Option<i64>)> = DEFAULT_PLUGINS
        .iter()
        .map(|(n, _)| (n.to_string(), None))
        .collect();
    if let Some(mp) = pc.multi_point.as_ref() {
        apply_disabled(&mut multi, &mp.disabled);
        for (j, e) in mp.enabled.iter().enumerate() {
            let w = weight_of(e, &format!("{at}.plugins.multiPoint.enabled[{j}]"))?;
            match multi.iter_mut().find(|(n, _)| *n == e.name) {
                Some(m) => m.1 = w.or(m.1),
                None => multi.push((e.name.clone(), w)),
            }
        }
    }

    // 2. Instantiate every referenced plugin once.
    let mut instances: BTreeMap<String, Arc<dyn Plugin>> = BTreeMap::new();
    let mut instantiate =
        |name: &str, field: &str| -> Result<Option<Arc<dyn Plugin>>, ConfigError> {
            if let Some(p) = instances.get(name) {
                return Ok(Some(p.clone()));
            }
            match plugins::lookup(name) {
                Some(f) => {
                    let p = f(args.get(name).copied()).map_err(|e| {
                        ConfigError(format!("{at}: plugin {name:?}: invalid args: {e}"))
                    })?;
                    instances.insert(name.to_string(), p.clone());
                    Ok(Some(p))
                }
                None => match plugins::recognised_not_implemented(name) {
                    Some(note) => {
                        tracing::info!(
                            plugin = name,
                            "{field}: kube-scheduler plugin {name:?} has no Corral plugin: {note}"
                        );
                        Ok(None)
                    }
                    None => Err(ConfigError(
                        match plugins::removed_from_kube_scheduler(name) {
                            Some(e) => format!("{field}: {e}"),
                            None => format!("{field}: unknown plugin {name:?}"),
                        },
                    )),
                },
            }
        };

    let mut multi_instances = Vec::new();
    for (j, (name, w)) in multi.iter().enumerate() {
        if let Some(p) = instantiate(name, &format!("{at}.plugins.multiPoint.enabled[{j}]"))? {
            multi_instances.push((name.clone(), p, *w));
        }
    }

    // 3. Per extension point: specific enabled first, then multiPoint plugins that
    //    implement the point and are not disabled there.
    let mut per_point: HashMap<&str, Vec<WeightedPlugin>> = HashMap::new();
    for &point in POINTS {
        let set = point_set(pc, point);
        let mut list: Vec<(String, Arc<dyn Plugin>, i64)> = Vec::new();
        if let Some(set) = set {
            for (j, e) in set.enabled.iter().enumerate() {
                let field = format!("{at}.plugins.{point}.enabled[{j}]");
                let w = weight_of(e, &field)?;
                let Some(inst) = instantiate(&e.name, &field)? else {
                    continue;
                };
                if !implements(&inst, point) {
                    return Err(ConfigError(format!(
                        "{field}: plugin {:?} does not implement extension point {point}",
                        e.name
                    )));
                }
                if list.iter().any(|(n, _, _)| *n == e.name) {
                    return Err(ConfigError(format!(
                        "{field}: plugin {:?} enabled twice",
                        e.name
                    )));
                }
                let mw = multi_instances
                    .iter()
                    .find(|(n, _, _)| *n == e.name)
                    .and_then(|m| m.2);
                let weight = w
                    .or(mw)
                    .or_else(|| {
                        default_weight
                            .get(e.name.as_str())
                            .copied()
                            .filter(|w| *w > 0)
                    })
                    .unwrap_or(1);
                list.push((e.name.clone(), inst, weight));
            }
        }
        let disabled_all = set.is_some_and(|s| s.disabled.iter().any(|d| d.name == "*"));
        for (name, inst, w) in &multi_instances {
            if disabled_all
                || set.is_some_and(|s| s.disabled.iter().any(|d| d.name == *name))
                || list.iter().any(|(n, _, _)| n == name)
                || !implements(inst, point)
            {
                continue;
            }
            let weight = w
                .or_else(|| {
                    default_weight
                        .get(name.as_str())
                        .copied()
                        .filter(|w| *w > 0)
                })
                .unwrap_or(1);
            list.push((name.clone(), inst.clone(), weight));
        }
        per_point.insert(point, list.into_iter().map(|(_, p, w)| (p, w)).collect());
    }

    let take = |point: &str| per_point.get(point).cloned().unwrap_or_default();
    let qs = take("queueSort");
    if qs.len() != 1 {
        return Err(ConfigError(format!(
            "{at}.plugins.queueSort: exactly one queue sort plugin must be enabled, found {}",
            qs.len()
        )));
    }
    let bind = take("bind");
    if bind.is_empty() {
        return Err(ConfigError(format!(
            "{at}.plugins.bind: at least one bind plugin must be enabled"
        )));
    }
    macro_rules! cast {
        ($point:expr, $m:ident) => {
            take($point)
                .into_iter()
                .filter_map(|(p, _)| p.$m())
                .collect::<Vec<_>>()
        };
    }
    let queue_sort = qs
        .into_iter()
        .find_map(|(p, _)| p.as_queue_sort())
        .ok_or_else(|| ConfigError(format!("{at}.plugins.queueSort: no queue sort plugin")))?;
    Ok(Framework {
        scheduler_name,
        percentage_of_nodes_to_score: p.percentage_of_nodes_to_score.or(global_pct),
        queue_sort,
        pre_filter: cast!("preFilter", as_pre_filter),
        filter: cast!("filter", as_filter),
        post_filter: cast!("postFilter", as_post_filter),
        pre_score: cast!("preScore", as_pre_score),
        score: take("score")
            .into_iter()
            .filter_map(|(p, w)| {
                p.as_score()
                    .map(|plugin| WeightedScore { plugin, weight: w })
            })
            .collect(),
        reserve: cast!("reserve", as_reserve),
        permit: cast!("permit", as_permit),
        pre_bind: cast!("preBind", as_pre_bind),
        bind: bind.into_iter().filter_map(|(p, _)| p.as_bind()).collect(),
        post_bind: cast!("postBind", as_post_bind),
        observer: None,
    })
}

fn weight_of(e: &PluginRef, field: &str) -> Result<Option<i64>, ConfigError> {
    match e.weight {
        None | Some(0) => Ok(None),
        Some(w) if w < 0 => Err(ConfigError(format!(
            "{field}: weight of plugin {:?} must be positive, got {w}",
            e.name
        ))),
        Some(w) => Ok(Some(i64::from(w))),
    }
}

fn apply_disabled(list: &mut Vec<(String, Option<i64>)>, disabled: &[PluginRef]) {
    if disabled.iter().any(|d| d.name == "*") {
        list.clear();
        return;
    }
    list.retain(|(n, _)| !disabled.iter().any(|d| d.name == *n));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(y: &str) -> Result<Vec<Framework>, ConfigError> {
        KubeSchedulerConfiguration::from_yaml(y, "test.yaml")?.build()
    }

    fn names<T: ?Sized + Plugin>(v: &[Arc<T>]) -> Vec<&'static str> {
        v.iter().map(|p| p.name()).collect()
    }

    /// `corral.haReserve` adds the HAReserve PreFilter and Filter (last) to every
    /// profile; a bad section is an error naming the field; without it, no profile
    /// has the plugin.
    #[test]
    fn ha_reserve_section_adds_the_filter_to_every_profile() {
        let base = "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nprofiles:\n- schedulerName: a\n- schedulerName: b\n";
        let fws = cfg(&format!(
            "{base}corral:\n  haReserve:\n    minPriority: 100\n    pools: [{{name: all, reserve: {{cpu: \"10%\"}}}}]\n"
        ))
        .unwrap();
        assert_eq!(fws.len(), 2);
        for fw in &fws {
            assert_eq!(names(&fw.filter).last(), Some(&"HAReserve"));
            assert_eq!(names(&fw.pre_filter).last(), Some(&"HAReserve"));
        }
        for fw in cfg(base).unwrap() {
            assert!(!names(&fw.filter).contains(&"HAReserve"));
        }
        let e = cfg(&format!(
            "{base}corral:\n  haReserve:\n    minPriority: 100\n    pools: [{{name: all, reserve: {{gpu: \"1\"}}}}]\n"
        ))
        .unwrap_err();
        assert!(
            e.0.starts_with("corral.haReserve.pools[0].reserve.gpu:"),
            "{e}"
        );
    }

    #[test]
    fn default_profile_matches_kube_scheduler() {
        let fws = default_frameworks();
        assert_eq!(fws.len(), 1);
        let fw = &fws[0];
        assert_eq!(fw.scheduler_name, "corral");
        assert_eq!(fw.queue_sort.name(), "PrioritySort");
        assert_eq!(
            names(&fw.filter),
            [
                "NodeUnschedulable",
                "NodeName",
                "TaintToleration",
                "NodeAffinity",
                "NodePorts",
                "NodeResourcesFit",
                "VolumeRestrictions",
                "NodeVolumeLimits",
                "VolumeBinding",
                "VolumeZone",
                "NodeResourceTopologyMatch",
                "GpuShare",
                "PodTopologySpread",
                "InterPodAffinity"
            ]
        );
        assert_eq!(names(&fw.reserve)[..1], ["VolumeBinding"]);
        let weights: Vec<(&str, i64)> = fw
            .score
            .iter()
            .map(|s| (s.plugin.name(), s.weight))
            .collect();
        assert_eq!(
            weights,
            [
                ("TaintToleration", 3),
                ("NodeAffinity", 2),
                ("NodeResourcesFit", 1),
                ("VolumeBinding", 1),
                ("NodeResourceTopologyMatch", 2),
                ("GpuShare", 2),
                ("PodTopologySpread", 2),
                ("InterPodAffinity", 2),
                ("NodeResourcesBalancedAllocation", 1),
                ("ImageLocality", 1)
            ]
        );
    }

    #[test]
    fn enable_disable_weights_and_star() {
        let fws = cfg(r#"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
percentageOfNodesToScore: 30
profiles:
- schedulerName: a
  plugins:
    score:
      disabled: [{name: "*"}]
      enabled: [{name: NodeResourcesFit, weight: 5}, {name: ImageLocality}]
    filter:
      disabled: [{name: NodePorts}]
- schedulerName: b
  percentageOfNodesToScore: 100
"#)
        .unwrap();
        let a = &fws[0];
        let w: Vec<_> = a
            .score
            .iter()
            .map(|s| (s.plugin.name(), s.weight))
            .collect();
        assert_eq!(w, [("NodeResourcesFit", 5), ("ImageLocality", 1)]);
        assert!(!names(&a.filter).contains(&"NodePorts"));
        assert_eq!(a.percentage_of_nodes_to_score, Some(30));
        assert_eq!(fws[1].percentage_of_nodes_to_score, Some(100));
        // kube-scheduler's 8 score plugins + NodeResourceTopologyMatch + GpuShare.
        assert_eq!(fws[1].score.len(), 10);
    }

    #[test]
    fn gpu_share_args_are_configurable_and_validated() {
        let base = "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n";
        let ok = cfg(&format!(
            "{base}profiles:\n- pluginConfig:\n  - name: GpuShare\n    args: {{coreOvercommit: 4, maxPodsPerCard: 8}}\n"
        ));
        assert!(ok.is_ok(), "{ok:?}");
        let e = cfg(&format!(
            "{base}profiles:\n- pluginConfig:\n  - name: GpuShare\n    args: {{coreOvercommit: 16}}\n"
        ))
        .unwrap_err();
        assert!(
            e.0.contains("GpuShare") && e.0.contains("coreOvercommit: 16"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_setting() {
        let base = "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n";
        let e = cfg(&format!(
            "{base}profiles:\n- plugins:\n    filter:\n      enabled: [{{name: NoSuchPlugin}}]\n"
        ))
        .unwrap_err();
        assert!(
            e.0.contains("unknown plugin \"NoSuchPlugin\"")
                && e.0.contains("profiles[0].plugins.filter.enabled[0]"),
            "{e}"
        );
        let e = cfg(&format!(
            "{base}profiles:\n- plugins:\n    score:\n      enabled: [{{name: NodeName}}]\n"
        ))
        .unwrap_err();
        assert!(
            e.0.contains("does not implement extension point score"),
            "{e}"
        );
        let e = cfg(&format!("{base}percentageOfNodesToScore: 101\n")).unwrap_err();
        assert!(e.0.contains("percentageOfNodesToScore"), "{e}");
        let e = cfg(&format!(
            "{base}profiles:\n- pluginConfig:\n  - name: Bogus\n    args: {{}}\n"
        ))
        .unwrap_err();
        assert!(
            e.0.contains("pluginConfig[0]") && e.0.contains("Bogus"),
            "{e}"
        );
        let e = cfg(&format!(
            "{base}profiles:\n- schedulerName: x\n- schedulerName: x\n"
        ))
        .unwrap_err();
        assert!(e.0.contains("duplicates"), "{e}");
        let e = cfg(&format!(
            "{base}profiles:\n- plugins:\n    queueSort:\n      disabled: [{{name: \"*\"}}]\n"
        ))
        .unwrap_err();
        assert!(e.0.contains("queueSort"), "{e}");
        let e = KubeSchedulerConfiguration::from_yaml(
            "apiVersion: v1\nkind: KubeSchedulerConfiguration\n",
            "f.yaml",
        )
        .unwrap_err();
        assert!(e.0.contains("f.yaml") && e.0.contains("apiVersion"), "{e}");
        let e = KubeSchedulerConfiguration::from_yaml(&format!("{base}profilez: []\n"), "f.yaml")
            .unwrap_err();
        assert!(e.0.contains("profilez"), "{e}");
        // Recognised kube plugins that Corral doesn't implement are accepted.
        assert!(cfg(&format!("{base}profiles:\n- plugins:\n    filter:\n      enabled: [{{name: VolumeBinding}}]\n")).is_ok());
    }

    /// kube-scheduler removed the per-cloud volume-limit plugins in v1.32 and its
    /// v1 configuration validation rejects them when enabled or configured; so does
    /// Corral, naming the field and the plugin. Disabling one stays harmless.
    #[test]
    fn plugins_removed_from_kube_scheduler_are_errors() {
        let base = "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n";
        for name in [
            "EBSLimits",
            "GCEPDLimits",
            "AzureDiskLimits",
            "CinderLimits",
        ] {
            for (point, field) in [
                ("filter", "profiles[0].plugins.filter.enabled[0]"),
                ("preFilter", "profiles[0].plugins.preFilter.enabled[0]"),
                ("multiPoint", "profiles[0].plugins.multiPoint.enabled["),
            ] {
                let e = cfg(&format!(
                    "{base}profiles:\n- plugins:\n    {point}:\n      enabled: [{{name: {name}}}]\n"
                ))
                .unwrap_err();
                assert!(
                    e.0.contains(field)
                        && e.0.contains(&format!("{name:?}"))
                        && e.0.contains("removed from kube-scheduler in v1.32")
                        && e.0.contains("NodeVolumeLimits"),
                    "{e}"
                );
            }
            let e = cfg(&format!(
                "{base}profiles:\n- pluginConfig:\n  - name: {name}\n    args: {{}}\n"
            ))
            .unwrap_err();
            assert!(
                e.0.contains("profiles[0].pluginConfig[0]") && e.0.contains(name),
                "{e}"
            );
            let fws = cfg(&format!(
                "{base}profiles:\n- plugins:\n    filter:\n      disabled: [{{name: {name}}}]\n"
            ))
            .expect("disabling a removed plugin is harmless");
            let filters: Vec<&str> = fws[0].filter.iter().map(|p| p.name()).collect();
            assert!(filters.contains(&"NodeVolumeLimits"), "{filters:?}");
        }
    }
}
