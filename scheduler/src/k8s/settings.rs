//! The process settings of a KubeSchedulerConfiguration (everything but the
//! profiles) for `run` and `extender`: applied, overridden by explicitly given flags
//! (as kube-scheduler applies its leader-election flags over `--config`), or rejected
//! with an error naming the field — never accepted and ignored.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::RunOptions;
use super::leader::LeaderOptions;
use super::queue::Backoff;
use crate::config::KubeSchedulerConfiguration;

/// `leaderElection` (componentbaseconfig.LeaderElectionConfiguration).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LeaderElectionCfg {
    leader_elect: Option<bool>,
    // Kept raw so a wrong type is reported with the field's full name.
    lease_duration: Option<serde_json::Value>,
    renew_deadline: Option<serde_json::Value>,
    retry_period: Option<serde_json::Value>,
    resource_lock: Option<String>,
    resource_name: Option<String>,
    resource_namespace: Option<String>,
}

/// `clientConnection` (componentbaseconfig.ClientConnectionConfiguration).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClientConnectionCfg {
    kubeconfig: Option<String>,
    accept_content_types: Option<String>,
    content_type: Option<String>,
    qps: Option<f64>,
    burst: Option<i64>,
}

/// Flags that override the file when given (None = not on the command line).
#[derive(Debug, Clone, Default)]
pub struct FlagOverrides {
    pub kubeconfig: Option<PathBuf>,
    pub qps: Option<f64>,
    pub burst: Option<u32>,
    pub leader_elect: Option<bool>,
    pub resource_namespace: Option<String>,
    pub resource_name: Option<String>,
    pub lease_duration: Option<Duration>,
    pub renew_deadline: Option<Duration>,
    pub retry_period: Option<Duration>,
    /// The Lease holder identity (flag, $POD_NAME or the host name).
    pub identity: String,
}

/// Corral's defaults where they differ from kube-scheduler's.
pub const DEFAULT_LEASE_NAME: &str = "corral-scheduler";
pub const DEFAULT_LEASE_NAMESPACE: &str = "kube-system";

fn parse<T: serde::de::DeserializeOwned + Default>(
    v: Option<&serde_json::Value>,
    origin: &str,
    field: &str,
) -> Result<T, String> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(T::default()),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| format!("{origin}: {field}: {e}")),
    }
}

fn duration(
    v: &Option<serde_json::Value>,
    origin: &str,
    field: &str,
) -> Result<Option<Duration>, String> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => corral_api::duration::parse_positive(s)
            .map(Some)
            .map_err(|e| format!("{origin}: {field}: {e}")),
        Some(other) => Err(format!(
            "{origin}: {field}: expected a duration string such as \"15s\", got {other}"
        )),
    }
}

fn json_only(v: &Option<String>, origin: &str, field: &str) -> Result<(), String> {
    match v.as_deref().map(str::trim) {
        None | Some("") | Some("application/json") => Ok(()),
        Some(other) => Err(format!(
            "{origin}: {field}: {other:?} is not supported (Corral speaks application/json \
             only; remove the field or set it to application/json)"
        )),
    }
}

/// Top-level fields neither `run` nor `extender` honours: an error when set to
/// anything but their inert value.
fn reject_common(cfg: &KubeSchedulerConfiguration, origin: &str) -> Result<(), String> {
    let unsupported = |f: &str, why: &str| Err(format!("{origin}: {f} is not supported: {why}"));
    if cfg.enable_profiling == Some(true) {
        return unsupported("enableProfiling", "Corral serves no pprof endpoints");
    }
    if cfg.enable_contention_profiling == Some(true) {
        return unsupported(
            "enableContentionProfiling",
            "Corral serves no pprof endpoints",
        );
    }
    if cfg
        .health_z_bind_address
        .as_deref()
        .is_some_and(|s| !s.is_empty())
    {
        return unsupported("healthZBindAddress", "use --listen");
    }
    if cfg
        .metrics_bind_address
        .as_deref()
        .is_some_and(|s| !s.is_empty())
    {
        return unsupported("metricsBindAddress", "use --listen");
    }
    if cfg
        .extenders
        .as_ref()
        .is_some_and(|v| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
    {
        return unsupported("extenders", "Corral does not call scheduler extenders");
    }
    if cfg.delay_cache_until_active == Some(true) {
        return unsupported(
            "delayCacheUntilActive",
            "a Corral standby always keeps its cache warm",
        );
    }
    Ok(())
}

/// Applies the file's process settings and the flags to `opts` (flags win) and
/// returns the kubeconfig to use.
pub fn apply_run(
    cfg: Option<&KubeSchedulerConfiguration>,
    origin: &str,
    flags: &FlagOverrides,
    opts: &mut RunOptions,
) -> Result<Option<PathBuf>, String> {
    let default_cfg = KubeSchedulerConfiguration::default();
    let cfg = cfg.unwrap_or(&default_cfg);
    reject_common(cfg, origin)?;
    opts.volume_bind_timeout = super::volumes::bind_timeout(cfg);

    // Queue backoff.
    let mut backoff = Backoff::default();
    if let Some(s) = cfg.pod_initial_backoff_seconds {
        if s <= 0 {
            return Err(format!(
                "{origin}: podInitialBackoffSeconds must be greater than 0, got {s}"
            ));
        }
        backoff.initial = Duration::from_secs(s.unsigned_abs());
    }
    if let Some(s) = cfg.pod_max_backoff_seconds {
        if s <= 0 {
            return Err(format!(
                "{origin}: podMaxBackoffSeconds must be greater than 0, got {s}"
            ));
        }
        backoff.max = Duration::from_secs(s.unsigned_abs());
    }
    if backoff.max < backoff.initial {
        return Err(format!(
            "{origin}: podMaxBackoffSeconds ({}) must be at least podInitialBackoffSeconds ({})",
            backoff.max.as_secs(),
            backoff.initial.as_secs()
        ));
    }
    opts.backoff = backoff;

    // Evaluation threads.
    if let Some(p) = cfg.parallelism {
        if p <= 0 {
            return Err(format!(
                "{origin}: parallelism must be greater than 0, got {p}"
            ));
        }
        opts.parallelism = Some(p.unsigned_abs() as usize);
    }

    // corral.*: the engine's options (corral.session is applied by the caller).
    if let Some(c) = &cfg.corral {
        if let Some(b) = c.batch_size {
            if b == 0 {
                return Err(format!("{origin}: corral.batchSize must be at least 1"));
            }
            opts.engine.batch_size = b;
            opts.engine.adaptive_batch = false;
            opts.engine.latency_budget = None;
        }
        if let Some(n) = c.candidates {
            if n == 0 {
                return Err(format!("{origin}: corral.candidates must be at least 1"));
            }
            opts.engine.candidates = n;
        }
        if let Some(t) = c.selection_tolerance {
            if t < 0 {
                return Err(format!(
                    "{origin}: corral.selectionTolerance must not be negative, got {t}"
                ));
            }
            opts.engine.selection_tolerance = t;
        }
    }

    // clientConnection.
    let cc: ClientConnectionCfg =
        parse(cfg.client_connection.as_ref(), origin, "clientConnection")?;
    json_only(&cc.content_type, origin, "clientConnection.contentType")?;
    json_only(
        &cc.accept_content_types,
        origin,
        "clientConnection.acceptContentTypes",
    )?;
    if let Some(q) = cc.qps {
        if !q.is_finite() || q < 0.0 {
            return Err(format!(
                "{origin}: clientConnection.qps must be a non-negative number, got {q}"
            ));
        }
        opts.qps = q;
    }
    if let Some(b) = cc.burst {
        opts.burst = u32::try_from(b).map_err(|_| {
            format!(
                "{origin}: clientConnection.burst must be between 0 and {}, got {b}",
                u32::MAX
            )
        })?;
    }
    if let Some(q) = flags.qps {
        opts.qps = q;
    }
    if let Some(b) = flags.burst {
        opts.burst = b;
    }
    let kubeconfig = flags.kubeconfig.clone().or_else(|| {
        cc.kubeconfig
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    });

    // leaderElection.
    let le: LeaderElectionCfg = parse(cfg.leader_election.as_ref(), origin, "leaderElection")?;
    match le.resource_lock.as_deref() {
        None | Some("") | Some("leases") => {}
        Some(other) => {
            return Err(format!(
                "{origin}: leaderElection.resourceLock: {other:?} is not supported (only \"leases\")"
            ));
        }
    }
    let elect = flags.leader_elect.or(le.leader_elect).unwrap_or(true);
    let d = |flag: Option<Duration>, v: &Option<serde_json::Value>, f: &str, def: u64| {
        Ok::<_, String>(match flag {
            Some(d) => d,
            None => duration(v, origin, f)?.unwrap_or(Duration::from_secs(def)),
        })
    };
    let lo = LeaderOptions {
        namespace: flags
            .resource_namespace
            .clone()
            .or(le.resource_namespace.filter(|s| !s.is_empty()))
            .unwrap_or_else(|| DEFAULT_LEASE_NAMESPACE.into()),
        name: flags
            .resource_name
            .clone()
            .or(le.resource_name.filter(|s| !s.is_empty()))
            .unwrap_or_else(|| DEFAULT_LEASE_NAME.into()),
        identity: flags.identity.clone(),
        lease_duration: d(
            flags.lease_duration,
            &le.lease_duration,
            "leaderElection.leaseDuration",
            15,
        )?,
        renew_deadline: d(
            flags.renew_deadline,
            &le.renew_deadline,
            "leaderElection.renewDeadline",
            10,
        )?,
        retry_period: d(
            flags.retry_period,
            &le.retry_period,
            "leaderElection.retryPeriod",
            2,
        )?,
    };
    if elect {
        // client-go's checks.
        if lo.lease_duration <= lo.renew_deadline {
            return Err(format!(
                "{origin}: leaderElection.leaseDuration ({:?}) must be greater than renewDeadline ({:?})",
                lo.lease_duration, lo.renew_deadline
            ));
        }
        if lo.renew_deadline <= lo.retry_period {
            return Err(format!(
                "{origin}: leaderElection.renewDeadline ({:?}) must be greater than retryPeriod ({:?})",
                lo.renew_deadline, lo.retry_period
            ));
        }
    }
    opts.leader = elect.then_some(lo);
    Ok(kubeconfig)
}

/// The extender's checks: it honours the profiles and `clientConnection.kubeconfig`
/// (and `contentType: application/json`); every other process setting is an error.
/// Returns the kubeconfig from the file.
pub fn apply_extender(
    cfg: &KubeSchedulerConfiguration,
    origin: &str,
) -> Result<Option<PathBuf>, String> {
    reject_common(cfg, origin)?;
    let not_here = |f: &str| {
        Err(format!(
            "{origin}: {f} is not supported by `extender` (kube-scheduler does this; \
             remove it from the extender's configuration)"
        ))
    };
    if cfg.pod_initial_backoff_seconds.is_some() {
        return not_here("podInitialBackoffSeconds");
    }
    if cfg.pod_max_backoff_seconds.is_some() {
        return not_here("podMaxBackoffSeconds");
    }
    if cfg.parallelism.is_some() {
        return not_here("parallelism");
    }
    if let Some(c) = &cfg.corral {
        if c.batch_size.is_some() {
            return not_here("corral.batchSize");
        }
        if c.candidates.is_some() {
            return not_here("corral.candidates");
        }
        if c.selection_tolerance.is_some() {
            return not_here("corral.selectionTolerance");
        }
    }
    let le: LeaderElectionCfg = parse(cfg.leader_election.as_ref(), origin, "leaderElection")?;
    if le.leader_elect == Some(true) {
        return not_here("leaderElection.leaderElect");
    }
    let cc: ClientConnectionCfg =
        parse(cfg.client_connection.as_ref(), origin, "clientConnection")?;
    json_only(&cc.content_type, origin, "clientConnection.contentType")?;
    json_only(
        &cc.accept_content_types,
        origin,
        "clientConnection.acceptContentTypes",
    )?;
    if cc.qps.is_some() {
        return not_here("clientConnection.qps");
    }
    if cc.burst.is_some() {
        return not_here("clientConnection.burst");
    }
    Ok(cc.kubeconfig.filter(|s| !s.is_empty()).map(PathBuf::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> KubeSchedulerConfiguration {
        let text = format!(
            "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n{extra}"
        );
        KubeSchedulerConfiguration::from_yaml(&text, "c.yaml").expect("parses")
    }

    fn run(extra: &str, flags: &FlagOverrides) -> Result<(RunOptions, Option<PathBuf>), String> {
        let mut o = RunOptions::default();
        let k = apply_run(Some(&cfg(extra)), "c.yaml", flags, &mut o)?;
        Ok((o, k))
    }

    #[test]
    fn file_settings_are_applied() {
        let (o, k) = run(
            "podInitialBackoffSeconds: 2\npodMaxBackoffSeconds: 5\nparallelism: 3\n\
             leaderElection:\n  leaderElect: true\n  leaseDuration: 30s\n  renewDeadline: 20s\n  \
             retryPeriod: 500ms\n  resourceLock: leases\n  resourceName: s\n  resourceNamespace: ns\n\
             clientConnection:\n  kubeconfig: /k\n  qps: 50\n  burst: 100\n  contentType: application/json\n\
             corral:\n  batchSize: 8\n  candidates: 4\n  selectionTolerance: 3\n",
            &FlagOverrides::default(),
        )
        .unwrap();
        assert_eq!(o.backoff.initial, Duration::from_secs(2));
        assert_eq!(o.backoff.max, Duration::from_secs(5));
        assert_eq!(o.parallelism, Some(3));
        let lo = o.leader.unwrap();
        assert_eq!((lo.namespace.as_str(), lo.name.as_str()), ("ns", "s"));
        assert_eq!(lo.lease_duration, Duration::from_secs(30));
        assert_eq!(lo.renew_deadline, Duration::from_secs(20));
        assert_eq!(lo.retry_period, Duration::from_millis(500));
        assert_eq!(k, Some(PathBuf::from("/k")));
        assert_eq!((o.qps, o.burst), (50.0, 100));
        assert_eq!(
            (
                o.engine.batch_size,
                o.engine.candidates,
                o.engine.selection_tolerance
            ),
            (8, 4, 3)
        );
    }

    #[test]
    fn explicit_flags_override_the_file() {
        let flags = FlagOverrides {
            kubeconfig: Some("/flag".into()),
            qps: Some(7.0),
            leader_elect: Some(false),
            ..FlagOverrides::default()
        };
        let (o, k) = run(
            "leaderElection:\n  leaderElect: true\nclientConnection:\n  kubeconfig: /k\n  qps: 50\n",
            &flags,
        )
        .unwrap();
        assert!(o.leader.is_none());
        assert_eq!(k, Some(PathBuf::from("/flag")));
        assert_eq!(o.qps, 7.0);
        let flags = FlagOverrides {
            lease_duration: Some(Duration::from_secs(60)),
            resource_name: Some("f".into()),
            ..FlagOverrides::default()
        };
        let (o, _) = run(
            "leaderElection:\n  leaseDuration: 30s\n  resourceName: s\n",
            &flags,
        )
        .unwrap();
        let lo = o.leader.unwrap();
        assert_eq!(lo.lease_duration, Duration::from_secs(60));
        assert_eq!(lo.name, "f");
        assert_eq!(lo.namespace, DEFAULT_LEASE_NAMESPACE);
    }

    #[test]
    fn unsupported_or_invalid_fields_are_errors_naming_them() {
        let f = FlagOverrides::default();
        for (extra, field) in [
            (
                "clientConnection:\n  contentType: application/vnd.kubernetes.protobuf\n",
                "clientConnection.contentType",
            ),
            (
                "clientConnection:\n  acceptContentTypes: application/vnd.kubernetes.protobuf\n",
                "clientConnection.acceptContentTypes",
            ),
            ("clientConnection:\n  burst: -1\n", "clientConnection.burst"),
            ("clientConnection:\n  timeout: 1s\n", "clientConnection"),
            (
                "leaderElection:\n  resourceLock: endpointsleases\n",
                "leaderElection.resourceLock",
            ),
            (
                "leaderElection:\n  leaseDuration: 15\n",
                "leaderElection.leaseDuration",
            ),
            (
                "leaderElection:\n  renewDeadline: 20s\n",
                "leaderElection.leaseDuration",
            ),
            ("leaderElection:\n  bogus: 1\n", "leaderElection"),
            ("podInitialBackoffSeconds: 0\n", "podInitialBackoffSeconds"),
            (
                "podInitialBackoffSeconds: 5\npodMaxBackoffSeconds: 2\n",
                "podMaxBackoffSeconds",
            ),
            ("parallelism: 0\n", "parallelism"),
            ("enableProfiling: true\n", "enableProfiling"),
            ("metricsBindAddress: 0.0.0.0:10251\n", "metricsBindAddress"),
            ("extenders:\n- urlPrefix: http://x\n", "extenders"),
            ("delayCacheUntilActive: true\n", "delayCacheUntilActive"),
            ("corral:\n  candidates: 0\n", "corral.candidates"),
        ] {
            let e = run(extra, &f)
                .err()
                .unwrap_or_else(|| panic!("accepted: {extra}"));
            assert!(e.contains(field) && e.starts_with("c.yaml"), "{extra}: {e}");
        }
        // Inert values are fine.
        run(
            "enableProfiling: false\nextenders: []\ndelayCacheUntilActive: false\n",
            &f,
        )
        .unwrap();
    }

    #[test]
    fn extender_rejects_what_it_cannot_honour() {
        for (extra, field) in [
            ("podMaxBackoffSeconds: 2\n", "podMaxBackoffSeconds"),
            (
                "leaderElection:\n  leaderElect: true\n",
                "leaderElection.leaderElect",
            ),
            ("clientConnection:\n  qps: 5\n", "clientConnection.qps"),
            ("parallelism: 4\n", "parallelism"),
        ] {
            let e = apply_extender(&cfg(extra), "c.yaml").unwrap_err();
            assert!(e.contains(field), "{extra}: {e}");
        }
        assert_eq!(
            apply_extender(&cfg("clientConnection:\n  kubeconfig: /k\n"), "c.yaml").unwrap(),
            Some(PathBuf::from("/k"))
        );
    }
}
