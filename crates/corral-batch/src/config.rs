//! `corral.session` of the configuration file: the actions in order, the session
//! plugins and their settings. The engine keeps this section raw; it is parsed here
//! ([`SessionConfig::from_config_yaml`]).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::plugins::{self, SessionPlugin};

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
