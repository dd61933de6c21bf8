//! Node network health for the scheduler's health model: when the agent
//! runs against Kubernetes it samples its counters every `--health-interval`
//! (10 s) and merge-patches its Node's annotations
//!
//! - `corral.io/health.net-util`: link utilization in percent, the busier
//!   direction, against `--uplink-rate` or else the uplink's link speed
//!   (`/sys/class/net/<if>/speed`); not written when neither is known;
//! - `corral.io/health.net-drops`: packets/s dropped because the node is
//!   congested: class-budget drops (the node aggregate budget is exhausted)
//!   plus the uplink interface's rx/tx drops. Policy drops (intended) and
//!   per-pod rate drops (a pod exceeding its own limit) are not node health;
//! - `corral.io/health.net-errors`: malformed packets/s seen by the programs
//!   plus the uplink interface's rx/tx errors.
//!
//! Bytes come from the uplink interface (`--uplink-iface`, read from
//! `/proc/net/dev`, which is per network namespace) when given, else from the
//! sum over the node's pods. A patch is sent only when a value changed
//! meaningfully (utilization by 2 percentage points, a rate by 10 % and at
//! least 1/s, or a value appearing/disappearing), so an idle or steady node
//! costs the API server nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use tracing::{info, warn};

use crate::agent::Agent;
use crate::api::EndpointStatus;

pub use corral_api::keys::{
    ANN_HEALTH_NET_DROPS as ANN_DROPS, ANN_HEALTH_NET_ERRORS as ANN_ERRORS,
    ANN_HEALTH_NET_UTIL as ANN_UTIL,
};

/// Cumulative counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// bytes toward the node's pods / the node
    pub rx_bytes: u64,
    /// bytes from the node's pods / the node
    pub tx_bytes: u64,
    pub drops: u64,
    pub errors: u64,
}

/// Rates over one interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Health {
    pub util_pct: Option<f64>,
    pub drops_per_s: f64,
    pub errors_per_s: f64,
}

/// Sums over the node's pods (pod ingress = toward the pod).
pub fn endpoint_totals(eps: &[EndpointStatus]) -> Totals {
    let mut t = Totals::default();
    for e in eps {
        t.rx_bytes += e.ingress.bytes;
        t.tx_bytes += e.egress.bytes;
        t.drops += e.ingress.drop_class + e.egress.drop_class;
        t.errors += e.ingress.drop_malformed + e.egress.drop_malformed;
    }
    t
}

/// Parses `/proc/net/dev` text for one interface:
/// rx bytes, packets, errs, drop, ... (8 fields), then tx bytes, packets, errs, drop.
pub fn parse_proc_net_dev(text: &str, ifname: &str) -> Option<Totals> {
    for line in text.lines().skip(2) {
        let (name, rest) = line.split_once(':')?;
        if name.trim() != ifname {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        if f.len() < 12 {
            return None;
        }
        return Some(Totals {
            rx_bytes: f[0],
            tx_bytes: f[8],
            drops: f[3] + f[11],
            errors: f[2] + f[10],
        });
    }
    None
}

/// Link speed of `ifname` in bits/s (0 when unknown, e.g. veth).
pub fn link_speed_bps(ifname: &str) -> u64 {
    std::fs::read_to_string(format!("/sys/class/net/{ifname}/speed"))
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .filter(|m| *m > 0)
        .map(|m| m as u64 * 1_000_000)
        .unwrap_or(0)
}

/// Rates between two samples `secs` apart; counters that went backwards
/// (interface re-created, endpoint removed) count as 0.
pub fn compute(prev: &Totals, cur: &Totals, secs: f64, capacity_bps: u64) -> Health {
    let secs = secs.max(1e-3);
    let rx = cur.rx_bytes.saturating_sub(prev.rx_bytes);
    let tx = cur.tx_bytes.saturating_sub(prev.tx_bytes);
    let util_pct = (capacity_bps > 0)
        .then(|| (rx.max(tx) as f64 * 8.0 / secs / capacity_bps as f64 * 100.0).min(100.0));
    Health {
        util_pct,
        drops_per_s: cur.drops.saturating_sub(prev.drops) as f64 / secs,
        errors_per_s: cur.errors.saturating_sub(prev.errors) as f64 / secs,
    }
}

fn rate_changed(a: f64, b: f64) -> bool {
    (a - b).abs() >= (0.1 * a.max(b)).max(1.0) || ((a == 0.0) != (b == 0.0) && a.max(b) >= 0.1)
}

/// Whether `new` differs enough from what was published to patch again.
pub fn changed_meaningfully(published: Option<&Health>, new: &Health) -> bool {
    let Some(p) = published else { return true };
    let util = match (p.util_pct, new.util_pct) {
        (Some(a), Some(b)) => (a - b).abs() >= 2.0,
        (None, None) => false,
        _ => true,
    };
    util || rate_changed(p.drops_per_s, new.drops_per_s)
        || rate_changed(p.errors_per_s, new.errors_per_s)
}

/// The annotation values (one decimal).
pub fn annotations(h: &Health) -> BTreeMap<&'static str, String> {
    let mut m = BTreeMap::new();
    if let Some(u) = h.util_pct {
        m.insert(ANN_UTIL, format!("{u:.1}"));
    }
    m.insert(ANN_DROPS, format!("{:.1}", h.drops_per_s));
    m.insert(ANN_ERRORS, format!("{:.1}", h.errors_per_s));
    m
}

/// Merge-patches the node's annotations.
pub async fn patch_node(client: &Client, node: &str, h: &Health) -> Result<()> {
    let patch = serde_json::json!({"metadata": {"annotations": annotations(h)}});
    Api::<Node>::all(client.clone())
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("patching node {node} annotations"))?;
    Ok(())
}

#[derive(Clone, Debug)]
pub struct Options {
    pub node_name: String,
    pub interval: Duration,
    /// the node's uplink interface, if bytes/drops/errors should come from it
    pub uplink_iface: Option<String>,
    /// `--uplink-rate` in bits/s (0 = use the link speed)
    pub uplink_bps: u64,
}

async fn sample(agent: &Arc<Mutex<Agent>>, iface: Option<&str>) -> Totals {
    let a = agent.clone();
    let eps =
        tokio::task::spawn_blocking(move || a.lock().map(|mut g| g.snapshot()).unwrap_or_default())
            .await
            .unwrap_or_default();
    let mut t = endpoint_totals(&eps);
    if let Some(i) = iface {
        match std::fs::read_to_string("/proc/net/dev")
            .ok()
            .and_then(|s| parse_proc_net_dev(&s, i))
        {
            Some(u) => {
                t.rx_bytes = u.rx_bytes;
                t.tx_bytes = u.tx_bytes;
                t.drops += u.drops;
                t.errors += u.errors;
            }
            None => warn!(iface = i, "uplink interface not found in /proc/net/dev"),
        }
    }
    t
}

/// The latest computed values, for `/metrics` (`corral_net_*` gauges, the
/// scheduler's scrape source).
static LATEST: Mutex<Option<Health>> = Mutex::new(None);

pub fn latest() -> Option<Health> {
    LATEST.lock().ok().and_then(|g| *g)
}

/// Samples until the process ends; with a client, publishes to the Node.
pub async fn run(client: Option<Client>, opts: Options, agent: Arc<Mutex<Agent>>) {
    let mut tick = tokio::time::interval(opts.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prev: Option<(Instant, Totals)> = None;
    let mut published: Option<Health> = None;
    loop {
        tick.tick().await;
        let cur = sample(&agent, opts.uplink_iface.as_deref()).await;
        let now = Instant::now();
        if let Some((t0, p)) = prev {
            let cap = if opts.uplink_bps > 0 {
                opts.uplink_bps
            } else {
                opts.uplink_iface
                    .as_deref()
                    .map(link_speed_bps)
                    .unwrap_or(0)
            };
            let h = compute(&p, &cur, (now - t0).as_secs_f64(), cap);
            if let Ok(mut g) = LATEST.lock() {
                *g = Some(h);
            }
            if let Some(client) = &client
                && changed_meaningfully(published.as_ref(), &h)
            {
                match patch_node(client, &opts.node_name, &h).await {
                    Ok(()) => {
                        info!(node = %opts.node_name, util = ?h.util_pct, drops = h.drops_per_s, errors = h.errors_per_s, "node network health published");
                        published = Some(h);
                    }
                    Err(e) => warn!(error = %format!("{e:#}"), "publishing node health"),
                }
            }
        }
        prev = Some((now, cur));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_utilization() {
        let p = Totals {
            rx_bytes: 1000,
            tx_bytes: 0,
            drops: 10,
            errors: 0,
        };
        let c = Totals {
            rx_bytes: 1000 + 12_500_000,
            tx_bytes: 1_000,
            drops: 30,
            errors: 4,
        };
        // 100 Mbit/s over 2 s on a 200 Mbit/s uplink
        let h = compute(&p, &c, 2.0, 200_000_000);
        assert_eq!(h.util_pct, Some(25.0));
        assert_eq!((h.drops_per_s, h.errors_per_s), (10.0, 2.0));
        assert_eq!(compute(&p, &c, 2.0, 0).util_pct, None, "no capacity");
        // counters reset: no negative rates
        let h = compute(&c, &p, 1.0, 1);
        assert_eq!((h.util_pct, h.drops_per_s), (Some(0.0), 0.0));
        let a = annotations(&compute(&p, &c, 2.0, 200_000_000));
        assert_eq!(a[ANN_UTIL], "25.0");
        assert_eq!(a[ANN_DROPS], "10.0");
        assert_eq!(a[ANN_ERRORS], "2.0");
    }

    #[test]
    fn publishes_only_meaningful_changes() {
        let h = |u, d, e| Health {
            util_pct: u,
            drops_per_s: d,
            errors_per_s: e,
        };
        let base = h(Some(40.0), 100.0, 0.0);
        assert!(changed_meaningfully(None, &base));
        assert!(!changed_meaningfully(
            Some(&base),
            &h(Some(41.0), 105.0, 0.0)
        ));
        assert!(changed_meaningfully(
            Some(&base),
            &h(Some(43.0), 100.0, 0.0)
        ));
        assert!(changed_meaningfully(
            Some(&base),
            &h(Some(40.0), 115.0, 0.0)
        ));
        assert!(changed_meaningfully(
            Some(&base),
            &h(Some(40.0), 100.0, 0.5)
        ));
        assert!(changed_meaningfully(Some(&base), &h(None, 100.0, 0.0)));
        assert!(!changed_meaningfully(
            Some(&base),
            &h(Some(40.0), 100.0, 0.05)
        ));
    }

    #[test]
    fn proc_net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  eth0: 5000 10 1 2 0 0 0 0 7000 20 3 4 0 0 0 0\n";
        let t = parse_proc_net_dev(text, "eth0").unwrap();
        assert_eq!(
            t,
            Totals {
                rx_bytes: 5000,
                tx_bytes: 7000,
                drops: 6,
                errors: 4
            }
        );
        assert!(parse_proc_net_dev(text, "eth1").is_none());
    }
}
