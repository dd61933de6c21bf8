//! Continuous health for `corral-scheduler run`: keeps a [`HealthTracker`] fed from
//! the live cluster and publishes its view into the scheduler's snapshot.
//!
//! - **Node objects** (annotations `corral.io/health.<signal>`, conditions): read
//!   from the scheduling loop's snapshot at every tick, so whatever the Node watch
//!   last delivered is the current value. An annotation is the agent's latest
//!   reading and holds until the agent rewrites it (re-observed at every tick, so
//!   "CPU 99 % for 5 min" is reached by a value that stays for 5 min).
//! - **Scrapes** (`--health-scrape URL-template`): a background tokio task GETs every
//!   node's endpoint once per interval with a per-request timeout and at most
//!   `scrape_concurrency` requests in flight; samples go to an inbox drained at the
//!   next tick. Failures are logged once per round (count + first error), not per
//!   node.
//! - **Tick** (every `interval`, on the scheduling loop's thread between batches):
//!   drain scraped samples, observe every node's annotations/conditions at the
//!   wall-clock time, advance the tracker (EWMA, durations, hysteresis, slew move
//!   with wall time), forget deleted nodes, and attach the new view to the snapshot
//!   (`health::attach`: bound to the snapshot's nodes; bumps the node version so
//!   cached Filter/Score results are recomputed).
//!
//! Heartbeat in live mode: the Ready condition's `lastHeartbeatTime` is only
//! refreshed every `nodeStatusReportFrequency` (5 min) on clusters with Lease
//! heartbeats, so its age is not used; the node lifecycle controller turns Ready to
//! Unknown when the Lease is not renewed (40 s), and Ready ≠ True counts as a
//! missed heartbeat (critical).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;

use super::sources::{self, RawSample};
use super::{HealthConfig, HealthTracker};
use crate::snapshot::Snapshot;

/// Options of the live health feed.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// The NodeHealth args (model configuration).
    pub config: HealthConfig,
    /// `--health-scrape` URL template (`{node}` = node name); None = no scraping.
    pub scrape: Option<String>,
    /// Tick and scrape interval (`--health-interval`).
    pub interval: Duration,
    /// Timeout of one scrape request (connect + response).
    pub scrape_timeout: Duration,
    /// Scrape requests in flight at most.
    pub scrape_concurrency: usize,
    /// Bearer token sent to the scrape endpoints
    /// (`--health-scrape-bearer-token-file`).
    pub scrape_token: Option<String>,
}

impl LiveOptions {
    pub fn new(config: HealthConfig) -> LiveOptions {
        LiveOptions {
            config,
            scrape: None,
            interval: Duration::from_secs(10),
            scrape_timeout: Duration::from_secs(2),
            scrape_concurrency: 32,
            scrape_token: None,
        }
    }
}

/// The `--health-*` flags of `corral-scheduler run`.
#[derive(Debug, Clone)]
pub struct HealthFlags {
    pub scrape: Option<String>,
    pub interval: Duration,
    pub scrape_timeout: Duration,
    pub scrape_concurrency: usize,
    /// File holding a bearer token for the scrape endpoints (read at start).
    pub scrape_token_file: Option<std::path::PathBuf>,
}

impl Default for HealthFlags {
    fn default() -> Self {
        let d = LiveOptions::new(HealthConfig::default());
        HealthFlags {
            scrape: None,
            interval: d.interval,
            scrape_timeout: d.scrape_timeout,
            scrape_concurrency: d.scrape_concurrency,
            scrape_token_file: None,
        }
    }
}

/// Live options when a profile enables NodeHealth (`args`: its `pluginConfig`
/// args, see [`super::args_from_config`]); None otherwise (a `--health-scrape`
/// without NodeHealth is logged and ignored). Errors on invalid args or template.
pub fn options_for(
    frameworks: &[crate::framework::Framework],
    args: Option<Result<HealthConfig, String>>,
    flags: &HealthFlags,
) -> Result<Option<LiveOptions>, String> {
    if !super::enabled(frameworks) {
        if flags.scrape.is_some() {
            tracing::warn!("--health-scrape given but no profile enables NodeHealth; ignored");
        }
        return Ok(None);
    }
    if let Some(t) = &flags.scrape {
        sources::check_scrape_url(t).map_err(|e| format!("--health-scrape: {e}"))?;
    }
    let scrape_token = match &flags.scrape_token_file {
        Some(p) => {
            let t = std::fs::read_to_string(p)
                .map_err(|e| format!("--health-scrape-bearer-token-file: {}: {e}", p.display()))?;
            let t = t.trim().to_string();
            if t.is_empty() {
                return Err(format!(
                    "--health-scrape-bearer-token-file: {}: empty token",
                    p.display()
                ));
            }
            Some(t)
        }
        None => None,
    };
    let config = args.transpose()?.unwrap_or_default();
    config.resolve()?;
    Ok(Some(LiveOptions {
        config,
        scrape: flags.scrape.clone(),
        interval: flags.interval,
        scrape_timeout: flags.scrape_timeout,
        scrape_concurrency: flags.scrape_concurrency.max(1),
        scrape_token,
    }))
}

/// Wall clock in Unix seconds.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// State shared with the scraper task.
#[derive(Default)]
struct Shared {
    /// Node names to scrape (refreshed by the tick when the node set changes).
    names: Mutex<Arc<Vec<Arc<str>>>>,
    /// Scraped samples waiting for the next tick.
    inbox: Mutex<Vec<RawSample>>,
}

/// The live feed; owned by the scheduling loop.
pub struct LiveHealth {
    tracker: HealthTracker,
    interval: Duration,
    next_tick: Option<Instant>,
    shared: Arc<Shared>,
    names_version: Option<u64>,
    /// Distinct warnings already logged (bounded), so a bad annotation is reported
    /// once, not at every tick.
    warned: HashSet<String>,
    ticks: u64,
}

const MAX_WARNED: usize = 10_000;

impl LiveHealth {
    /// Builds the feed and, with a scrape template, spawns the scraper on `rt`.
    /// Returns the feed and the scraper task (abort it to stop scraping).
    pub fn start(
        opts: LiveOptions,
        rt: &tokio::runtime::Handle,
    ) -> Result<(LiveHealth, Option<tokio::task::JoinHandle<()>>), String> {
        let tracker = HealthTracker::new(opts.config.clone())?;
        let shared = Arc::new(Shared::default());
        let interval = opts.interval.max(Duration::from_millis(10));
        let client =
            corral_http::client::HttpClient::new(opts.scrape_token.clone(), sources::MAX_BODY)?;
        let task = opts.scrape.clone().map(|tpl| {
            rt.spawn(scrape_loop(
                client,
                tpl,
                interval,
                opts.scrape_timeout,
                opts.scrape_concurrency.max(1),
                shared.clone(),
            ))
        });
        Ok((
            LiveHealth {
                tracker,
                interval,
                next_tick: None,
                shared,
                names_version: None,
                warned: HashSet::new(),
                ticks: 0,
            },
            task,
        ))
    }

    /// Ticks when the interval has elapsed (call between scheduling batches).
    pub fn maybe_tick(&mut self, snap: &mut Snapshot, now: Instant) {
        if self.next_tick.is_some_and(|t| now < t) {
            return;
        }
        self.next_tick = Some(now + self.interval);
        self.tick(snap, unix_now());
    }

    /// One model step at wall time `t` (Unix seconds); attaches the new view.
    pub fn tick(&mut self, snap: &mut Snapshot, t: f64) {
        self.ticks += 1;
        if self.names_version != Some(snap.nodes_version()) {
            let names: Vec<Arc<str>> = snap.nodes().iter().map(|n| n.name.clone()).collect();
            self.tracker.retain_nodes(|n| snap.node_index(n).is_some());
            if let Ok(mut g) = self.shared.names.lock() {
                *g = Arc::new(names);
            }
        }
        let scraped = self
            .shared
            .inbox
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default();
        let mut warns = Vec::new();
        for s in scraped {
            if let Some(w) = self.tracker.observe(s.time, &s.node, &s.signal, s.value) {
                warns.push(w);
            }
        }
        for n in snap.nodes() {
            let mut w = |m: String| warns.push(m);
            for s in sources::from_node_live(&n.node, t, &mut w) {
                if let Some(m) = self.tracker.observe(s.time, &s.node, &s.signal, s.value) {
                    warns.push(m);
                }
            }
        }
        for w in warns {
            if self.warned.len() < MAX_WARNED && self.warned.insert(w.clone()) {
                tracing::warn!("health: {w}");
            }
        }
        self.tracker.advance(t);
        super::attach(snap, self.tracker.view());
        // attach bumped the node version; remember it so the names are not rebuilt.
        self.names_version = Some(snap.nodes_version());
    }

    /// Ticks so far.
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    pub fn tracker(&self) -> &HealthTracker {
        &self.tracker
    }
}

/// Scrapes every node once per `interval` until aborted.
async fn scrape_loop(
    client: corral_http::client::HttpClient,
    tpl: String,
    interval: Duration,
    timeout: Duration,
    concurrency: usize,
    shared: Arc<Shared>,
) {
    let mut iv = tokio::time::interval(interval);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        iv.tick().await;
        let names = shared.names.lock().map(|g| g.clone()).unwrap_or_default();
        let (samples, failed, first_err) =
            scrape_round(&client, &tpl, &names, timeout, concurrency).await;
        if failed > 0 {
            tracing::warn!(
                "health scrape: {failed}/{} endpoints failed (first: {})",
                names.len(),
                first_err.unwrap_or_default()
            );
        }
        if let Ok(mut inbox) = shared.inbox.lock() {
            // Bounded: a tick that did not run yet leaves at most one round behind.
            if inbox.len() > samples.len().max(1) * 4 {
                inbox.clear();
            }
            inbox.extend(samples);
        }
    }
}

/// One scrape of every node: (samples, failed endpoints, first error).
pub async fn scrape_round(
    client: &corral_http::client::HttpClient,
    tpl: &str,
    names: &[Arc<str>],
    timeout: Duration,
    concurrency: usize,
) -> (Vec<RawSample>, usize, Option<String>) {
    let mut results = futures::stream::iter(names.iter().cloned())
        .map(|node| async move {
            let url = sources::expand_template(tpl, &node);
            let r = client.get(&url, timeout).await;
            (node, url, r, unix_now())
        })
        .buffer_unordered(concurrency.max(1));
    let mut out = Vec::new();
    let mut failed = 0;
    let mut first = None;
    while let Some((node, url, r, t)) = results.next().await {
        match r {
            Ok(body) => {
                let mut bad = 0usize;
                let samples = sources::parse_prometheus(&body, &mut |_| bad += 1);
                if bad > 0 {
                    tracing::debug!("{url}: {bad} malformed lines skipped");
                }
                out.extend(sources::prom_to_signals(&samples).into_iter().map(
                    |(signal, value)| RawSample {
                        time: t,
                        node: node.to_string(),
                        signal,
                        value,
                    },
                ));
            }
            Err(e) => {
                failed += 1;
                first.get_or_insert(e);
            }
        }
    }
    (out, failed, first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{Level, Signal};
    use crate::snapshot::NodeInfo;

    fn node(name: &str, ann: serde_json::Value, ready: &str) -> NodeInfo {
        let n: k8s_openapi::api::core::v1::Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "annotations": ann},
            "status": {
                "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": ready,
                                "lastHeartbeatTime": "2020-01-01T00:00:00Z"}]
            }
        }))
        .unwrap();
        NodeInfo::new(n).unwrap()
    }

    fn fast_cpu() -> HealthConfig {
        let mut c = HealthConfig::default();
        c.rules.insert(
            "cpu".into(),
            serde_json::from_value(serde_json::json!({
                "degraded": 80.0, "degradedExit": 70.0, "critical": 95.0, "criticalExit": 90.0,
                "forSeconds": 30.0, "exitForSeconds": 30.0, "criticalSignal": true
            }))
            .unwrap(),
        );
        c
    }

    #[test]
    fn ticks_advance_the_model_with_wall_time() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (mut live, task) =
            LiveHealth::start(LiveOptions::new(fast_cpu()), rt.handle()).unwrap();
        assert!(task.is_none());
        let mut snap = Snapshot::new();
        snap.upsert_node(node(
            "hot",
            serde_json::json!({"corral.io/health.cpu": "99"}),
            "True",
        ));
        snap.upsert_node(node("cool", serde_json::json!({}), "True"));
        // The old lastHeartbeatTime is not a missed heartbeat in live mode.
        let t0 = 1_000_000.0;
        live.tick(&mut snap, t0);
        let v = snap.health().unwrap().clone();
        assert!(v.get("hot").unwrap().critical.is_none(), "not held yet");
        assert_eq!(v.get("cool").unwrap().score(), 100);
        // Held for forSeconds: the EWMA reaches 95 and the level moves to critical.
        let mut t = t0;
        while t < t0 + 200.0 {
            t += 10.0;
            live.tick(&mut snap, t);
        }
        assert_eq!(
            live.tracker().signal("hot", &Signal::Cpu).unwrap().1,
            Level::Critical
        );
        let v = snap.health().unwrap().clone();
        assert_eq!(v.get("hot").unwrap().critical.as_deref(), Some("cpu"));
        assert_eq!(v.score_of(&snap.node("hot").unwrap().name), (0, true));
        // The annotation changes (the Node watch delivered a new object): recovery
        // follows hysteresis + exitForSeconds and the slew limit, not at once.
        snap.upsert_node(node(
            "hot",
            serde_json::json!({"corral.io/health.cpu": "20"}),
            "True",
        ));
        t += 10.0;
        live.tick(&mut snap, t);
        assert!(
            snap.health()
                .unwrap()
                .get("hot")
                .unwrap()
                .critical
                .is_some()
        );
        for _ in 0..40 {
            t += 10.0;
            live.tick(&mut snap, t);
        }
        let h = snap.health().unwrap().get("hot").unwrap().clone();
        assert!(h.critical.is_none() && h.degraded.is_empty(), "{h:?}");
        // A node that goes NotReady is critical at the next tick; a deleted node is
        // forgotten.
        snap.upsert_node(node("cool", serde_json::json!({}), "Unknown"));
        t += 10.0;
        live.tick(&mut snap, t);
        assert_eq!(
            snap.health()
                .unwrap()
                .get("cool")
                .unwrap()
                .critical
                .as_deref(),
            Some("heartbeat_age")
        );
        snap.remove_node("cool");
        t += 10.0;
        live.tick(&mut snap, t);
        assert!(snap.health().unwrap().get("cool").is_none());
        assert!(
            live.tracker()
                .signal("cool", &Signal::HeartbeatAge)
                .is_none()
        );
    }

    #[test]
    fn maybe_tick_respects_the_interval() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut o = LiveOptions::new(HealthConfig::default());
        o.interval = Duration::from_secs(10);
        let (mut live, _) = LiveHealth::start(o, rt.handle()).unwrap();
        let mut snap = Snapshot::new();
        let t = Instant::now();
        live.maybe_tick(&mut snap, t);
        live.maybe_tick(&mut snap, t + Duration::from_secs(9));
        assert_eq!(live.ticks(), 1);
        live.maybe_tick(&mut snap, t + Duration::from_secs(10));
        assert_eq!(live.ticks(), 2);
    }

    #[test]
    fn scrape_round_is_bounded_by_timeout_and_reports_failures() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = l.local_addr().unwrap().port();
            tokio::spawn(async move {
                loop {
                    let (mut s, _) = l.accept().await.unwrap();
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 1024];
                        let n = s.read(&mut buf).await.unwrap_or(0);
                        let req = String::from_utf8_lossy(&buf[..n]).to_string();
                        if req.contains("/slow") {
                            // Never answers: the round must not wait for it.
                            tokio::time::sleep(Duration::from_secs(60)).await;
                            return;
                        }
                        let (st, body) = if req.contains("/m/a ") {
                            (
                                "200 OK",
                                "# TYPE corral_health_cpu gauge\ncorral_health_cpu 97\n",
                            )
                        } else if req.contains("/m/b ") {
                            ("200 OK", "corral_gpu_missing 1\nbroken line\n")
                        } else {
                            ("404 Not Found", "")
                        };
                        let _ = s
                            .write_all(
                                format!(
                                    "HTTP/1.1 {st}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                    body.len()
                                )
                                .as_bytes(),
                            )
                            .await;
                    });
                }
            });
            let tpl = format!("http://127.0.0.1:{port}/m/{{node}}");
            let names: Vec<Arc<str>> = ["a", "b", "c", "slow"]
                .iter()
                .map(|s| Arc::from(*s))
                .collect();
            let client = corral_http::client::HttpClient::new(None, sources::MAX_BODY).unwrap();
            let t0 = Instant::now();
            let (samples, failed, first) =
                scrape_round(&client, &tpl, &names, Duration::from_millis(500), 2).await;
            assert!(t0.elapsed() < Duration::from_secs(30));
            assert_eq!(failed, 2, "{first:?}");
            let get = |n: &str, s: &str| {
                samples
                    .iter()
                    .find(|x| x.node == n && x.signal == s)
                    .map(|x| x.value)
            };
            assert_eq!(get("a", "cpu"), Some(97.0));
            assert_eq!(get("b", "gpu_missing"), Some(1.0));
            assert_eq!(samples.len(), 2, "{samples:?}");
            let e = client.get("ftp://x/", Duration::from_secs(1)).await.unwrap_err();
            assert!(e.contains("only http://"), "{e}");
        });
    }
}
