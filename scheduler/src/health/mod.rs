//! Health glue of the application: the NodeHealth args of a scheduler
//! configuration, whether a profile runs the plugin, and the static view `simulate`
//! attaches; scraping (`sources`) and the live tracker (`live`). The pure model
//! (signals, trackers, the view) is `corral_core::health`; the timeline driver and
//! its plot are simulation drivers (`crate::simulate::timeline`).

pub mod live;
pub mod sources;

pub use corral_core::health::*;

/// The `NodeHealth` args of the first profile that configures them.
pub fn args_from_config(
    cfg: &crate::config::KubeSchedulerConfiguration,
) -> Option<Result<HealthConfig, String>> {
    let a = cfg
        .profiles
        .iter()
        .flat_map(|p| &p.plugin_config)
        .find(|pc| pc.name == crate::plugins::node_health::NAME)?
        .args
        .clone()?;
    let mut a = a;
    if let serde_json::Value::Object(m) = &mut a {
        m.remove("apiVersion");
        m.remove("kind");
    }
    Some(serde_json::from_value::<HealthConfig>(a).map_err(|e| format!("NodeHealth args: {e}")))
}

/// True when a profile runs the NodeHealth Filter or Score.
pub fn enabled(frameworks: &[crate::framework::Framework]) -> bool {
    let name = crate::plugins::node_health::NAME;
    frameworks.iter().any(|f| {
        f.filter.iter().any(|p| p.name() == name) || f.score.iter().any(|s| s.plugin.name() == name)
    })
}

/// For one-shot runs (`simulate` without `--timeline`): when a profile enables
/// NodeHealth, builds the health view from the nodes' conditions and
/// `corral.io/health.*` annotations (and the `--health-scrape` endpoints), assumes
/// every value has held for its rule's duration (no history; the conservative
/// reading) and attaches it to the snapshot.
pub fn attach_static_view(
    snap: &mut crate::snapshot::Snapshot,
    frameworks: &[crate::framework::Framework],
    args: Option<Result<HealthConfig, String>>,
    scrape: Option<&str>,
    warn: &mut dyn FnMut(&str),
) -> Result<(), String> {
    if !enabled(frameworks) {
        if scrape.is_some() {
            warn(
                "warning: --health-scrape given but no profile enables the NodeHealth plugin; ignored",
            );
        }
        return Ok(());
    }
    let cfg = args.transpose()?.unwrap_or_default();
    let mut t = HealthTracker::new(cfg)?;
    // The manifests' own "now": the freshest heartbeat (static inputs are not live,
    // so the wall clock would make every node look stale); else the wall clock.
    let now = snap
        .nodes()
        .iter()
        .filter_map(|n| sources::last_heartbeat(&n.node))
        .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        });
    t.set_clock(now);
    let mut w = |m: String| warn(&format!("warning: {m}"));
    let mut scraped: std::collections::HashMap<String, Vec<sources::RawSample>> =
        std::collections::HashMap::new();
    if let Some(tpl) = scrape {
        sources::check_scrape_url(tpl).map_err(|e| format!("--health-scrape: {e}"))?;
        let client = corral_http::client::HttpClient::new(None, sources::MAX_BODY)?;
        let names: Vec<std::sync::Arc<str>> = snap
            .nodes()
            .iter()
            .map(|n| std::sync::Arc::from(&*n.name))
            .collect();
        for s in sources::scrape_nodes(
            &client,
            tpl,
            &names,
            now,
            std::time::Duration::from_secs(2),
            &mut w,
        ) {
            scraped.entry(s.node.clone()).or_default().push(s);
        }
    }
    for n in snap.nodes() {
        let mut samples = sources::from_node(&n.node, now, &mut w);
        samples.extend(scraped.remove(&*n.name).unwrap_or_default());
        for s in samples {
            if let Some(m) = t.observe(s.time, &s.node, &s.signal, s.value) {
                w(m);
            }
        }
    }
    t.assume_sustained();
    t.advance(now);
    attach(snap, t.view());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_view_from_node_annotations_feeds_the_plugin() {
        use crate::config::KubeSchedulerConfiguration;
        use crate::snapshot::{NodeInfo, Snapshot};
        let mk = |name: &str, ann: serde_json::Value| {
            let n: k8s_openapi::api::core::v1::Node = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "annotations": ann},
                "status": {
                    "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                    "conditions": [{"type": "Ready", "status": "True",
                                    "lastHeartbeatTime": "2026-01-01T00:00:00Z"}]
                }
            }))
            .unwrap();
            NodeInfo::new(n).unwrap()
        };
        let mut snap = Snapshot::new();
        snap.upsert_node(mk(
            "gpu-gone",
            serde_json::json!({"corral.io/health.gpu_missing": "1"}),
        ));
        snap.upsert_node(mk("hot", serde_json::json!({"corral.io/health.cpu": "90"})));
        snap.upsert_node(mk(
            "fine",
            serde_json::json!({"corral.io/health.cpu": "abc"}),
        ));
        let y = "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nprofiles:\n- plugins:\n    multiPoint:\n      enabled: [{name: NodeHealth, weight: 5}]\n";
        let cfg = KubeSchedulerConfiguration::from_yaml(y, "t").unwrap();
        let fws = cfg.build().unwrap();
        let mut warns = Vec::new();
        attach_static_view(&mut snap, &fws, args_from_config(&cfg), None, &mut |w| {
            warns.push(w.to_string())
        })
        .unwrap();
        assert_eq!(warns.len(), 1, "{warns:?}");
        let v = snap.health().cloned().unwrap();
        assert_eq!(
            v.get("gpu-gone").unwrap().critical.as_deref(),
            Some("gpu_missing")
        );
        // Sustained 90 % CPU (no history: assumed sustained) is degraded.
        let hot = v.get("hot").unwrap();
        assert_eq!(hot.degraded, vec!["cpu".to_string()]);
        assert!(hot.score() <= 40, "{hot:?}");
        assert_eq!(v.get("fine").unwrap().score(), 100);
        // Default profile: no view is attached.
        let mut s2 = Snapshot::new();
        attach_static_view(
            &mut s2,
            &crate::config::default_frameworks(),
            None,
            None,
            &mut |_| {},
        )
        .unwrap();
        assert!(s2.health().is_none());
    }
}
