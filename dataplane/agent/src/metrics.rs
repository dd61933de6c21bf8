//! `/metrics`, `/healthz`, `/readyz` (axum). Metrics are built from the
//! kernel counters at scrape time: per-node aggregates always
//! (Cilium-style names: `corral_forward_count_total`,
//! `corral_forward_bytes_total`, `corral_drop_count_total{reason,direction}`),
//! per-pod series only with `--pod-metrics` (their number grows with the
//! pods of the node, 12 per pod).

use std::sync::{Arc, Mutex};

use anyhow::Result;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::info;

use crate::agent::Agent;
use crate::api::{CounterView, EndpointStatus};

type L = Vec<(String, String)>;

/// What `/metrics` exposes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// per-pod series (`corral_endpoint_*`); off by default
    pub pod_metrics: bool,
}

/// Drop reasons as exported (label `reason`).
pub const DROP_REASONS: [&str; 4] = ["policy", "rate", "class_budget", "malformed"];

/// Node-wide values that are not per endpoint.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeStats {
    /// drop events the programs could not queue (ring buffer full)
    pub events_lost: u64,
}

/// Renders the metrics text for the given endpoints.
pub fn render(eps: &[EndpointStatus], node: NodeStats, opts: Options) -> String {
    render_with_health(eps, node, crate::node_health::latest(), opts)
}

/// Renders endpoints plus the node health gauges (when sampled):
/// `corral_net_utilization_percent`, `corral_net_drops_per_second`,
/// `corral_net_errors_per_second` (read by the scheduler's health scrape).
pub fn render_with_health(
    eps: &[EndpointStatus],
    node: NodeStats,
    health: Option<crate::node_health::Health>,
    opts: Options,
) -> String {
    let mut reg = Registry::default();
    let endpoints = Gauge::<i64>::default();
    reg.register(
        "corral_endpoints",
        "Registered endpoints",
        endpoints.clone(),
    );
    let fwd_count = Family::<L, Counter>::default();
    let fwd_bytes = Family::<L, Counter>::default();
    let drop_count = Family::<L, Counter>::default();
    reg.register(
        "corral_forward_count",
        "Packets passed over all pods of the node per direction",
        fwd_count.clone(),
    );
    reg.register(
        "corral_forward_bytes",
        "Bytes passed over all pods of the node per direction (rate()/uplink = link utilization)",
        fwd_bytes.clone(),
    );
    reg.register(
        "corral_drop_count",
        "Packets dropped over all pods of the node per reason and direction",
        drop_count.clone(),
    );
    let lost = Counter::<u64>::default();
    reg.register(
        "corral_monitor_events_lost",
        "Drop events the programs could not queue for `corral-agent monitor` (ring buffer full); the drops themselves are counted in corral_drop_count",
        lost.clone(),
    );
    lost.inc_by(node.events_lost);
    let packets = Family::<L, Counter>::default();
    let bytes = Family::<L, Counter>::default();
    let drops = Family::<L, Counter>::default();
    if opts.pod_metrics {
        reg.register(
            "corral_endpoint_packets",
            "Packets passed per pod and direction",
            packets.clone(),
        );
        reg.register(
            "corral_endpoint_bytes",
            "Bytes passed per pod and direction",
            bytes.clone(),
        );
        reg.register(
            "corral_endpoint_drops",
            "Packets dropped per pod, direction and reason",
            drops.clone(),
        );
    }
    endpoints.set(eps.len() as i64);
    if let Some(h) = health {
        let g = |name: &str, help: &str, v: f64| {
            let gauge = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
            gauge.set(v);
            (name.to_string(), help.to_string(), gauge)
        };
        let mut gs = vec![
            g(
                "corral_net_drops_per_second",
                "Node congestion drops per second (class budget + uplink drops)",
                h.drops_per_s,
            ),
            g(
                "corral_net_errors_per_second",
                "Malformed packets + uplink errors per second",
                h.errors_per_s,
            ),
        ];
        if let Some(u) = h.util_pct {
            gs.push(g(
                "corral_net_utilization_percent",
                "Node link utilization in percent (busier direction)",
                u,
            ));
        }
        for (name, help, gauge) in gs {
            reg.register(name, help, gauge);
        }
    }
    // node series exist from the start (also with no pods), so rate()
    // never sees a series appear
    for dir in ["ingress", "egress"] {
        let dl: L = vec![("direction".into(), dir.into())];
        let _ = fwd_count.get_or_create(&dl);
        let _ = fwd_bytes.get_or_create(&dl);
        for reason in DROP_REASONS {
            let _ = drop_count.get_or_create(&vec![
                ("reason".into(), reason.into()),
                ("direction".into(), dir.into()),
            ]);
        }
    }
    for e in eps {
        for (dir, c) in [("ingress", &e.ingress), ("egress", &e.egress)] {
            let dl: L = vec![("direction".into(), dir.into())];
            fwd_count.get_or_create(&dl).inc_by(c.packets);
            fwd_bytes.get_or_create(&dl).inc_by(c.bytes);
            let base: L = vec![
                ("namespace".into(), e.spec.namespace.clone()),
                ("pod".into(), e.spec.name.clone()),
                ("direction".into(), dir.into()),
            ];
            if opts.pod_metrics {
                packets.get_or_create(&base).inc_by(c.packets);
                bytes.get_or_create(&base).inc_by(c.bytes);
            }
            let CounterView {
                drop_policy,
                drop_rate,
                drop_class,
                drop_malformed,
                ..
            } = c;
            for (reason, v) in
                DROP_REASONS
                    .iter()
                    .zip([drop_policy, drop_rate, drop_class, drop_malformed])
            {
                drop_count
                    .get_or_create(&vec![
                        ("reason".into(), reason.to_string()),
                        ("direction".into(), dir.into()),
                    ])
                    .inc_by(*v);
                if opts.pod_metrics {
                    let mut l = base.clone();
                    l.push(("reason".into(), reason.to_string()));
                    drops.get_or_create(&l).inc_by(*v);
                }
            }
        }
    }
    let mut out = String::new();
    let _ = encode(&mut out, &reg);
    out
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `/metrics`, `/healthz` (the agent state is usable: not poisoned, the
/// lock is obtainable within 5 s) and `/readyz` (the programs are loaded
/// and the policy source has delivered its first complete input set).
pub fn router(agent: Arc<Mutex<Agent>>, opts: Options) -> Router {
    let (a1, a2, a3) = (agent.clone(), agent.clone(), agent);
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let a = a1.clone();
                async move {
                    let (eps, node) = tokio::task::spawn_blocking(move || {
                        a.lock()
                            .map(|mut g| {
                                let lost = g.events_lost();
                                (g.snapshot(), NodeStats { events_lost: lost })
                            })
                            .unwrap_or_default()
                    })
                    .await
                    .unwrap_or_default();
                    ([("content-type", OPENMETRICS)], render(&eps, node, opts))
                }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let a = a2.clone();
                async move {
                    match probe(a, |_| Ok(())).await {
                        Ok(()) => (StatusCode::OK, "ok".to_string()),
                        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e),
                    }
                }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let a = a3.clone();
                async move {
                    match probe(a, |g| g.ready()).await {
                        Ok(()) => (StatusCode::OK, "ok".to_string()),
                        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e),
                    }
                }
            }),
        )
}

async fn probe(
    a: Arc<Mutex<Agent>>,
    f: impl FnOnce(&Agent) -> Result<(), String> + Send + 'static,
) -> Result<(), String> {
    let t = tokio::task::spawn_blocking(move || match a.lock() {
        Ok(g) => f(&g),
        Err(_) => Err("agent state poisoned (a handler panicked)".to_string()),
    });
    match tokio::time::timeout(std::time::Duration::from_secs(5), t).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(format!("probe failed: {e}")),
        Err(_) => Err("agent busy for more than 5 s".to_string()),
    }
}

pub async fn serve(agent: Arc<Mutex<Agent>>, addr: String, opts: Options) -> Result<()> {
    let l = TcpListener::bind(&addr).await?;
    info!(%addr, pod_metrics = opts.pod_metrics, "serving /metrics /healthz /readyz");
    // bounded: head timeout and size, response time, connection limit
    corral_http::server::serve(l, router(agent, opts), crate::serve_limits::http_limits()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::EndpointSpec;

    fn ep(name: &str, bytes: u64, drop_rate: u64) -> EndpointStatus {
        EndpointStatus {
            spec: EndpointSpec {
                ifname: format!("v{name}"),
                namespace: "x".into(),
                name: name.into(),
                ..Default::default()
            },
            ifindex: 1,
            class: "standard".into(),
            policy_ingress: false,
            policy_egress: false,
            policies: Vec::new(),
            ingress: CounterView::default(),
            egress: CounterView {
                packets: 1,
                bytes,
                drop_rate,
                ..Default::default()
            },
            attach: "tcx".into(),
            ahead: Vec::new(),
        }
    }

    /// Sample lines (not comments) of the text.
    fn samples(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn node_totals_sum_pods() {
        let text = render(
            &[ep("a", 100, 2), ep("b", 50, 3)],
            NodeStats { events_lost: 7 },
            Options::default(),
        );
        assert!(
            text.contains("corral_forward_bytes_total{direction=\"egress\"} 150"),
            "{text}"
        );
        assert!(
            text.contains("corral_forward_count_total{direction=\"egress\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("corral_drop_count_total{reason=\"rate\",direction=\"egress\"} 5"),
            "{text}"
        );
        assert!(text.contains("corral_endpoints 2"), "{text}");
        assert!(
            text.contains("corral_monitor_events_lost_total 7"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(!text.contains("corral_net_"), "no health before sampling");
        let h = crate::node_health::Health {
            util_pct: Some(42.5),
            drops_per_s: 3.0,
            errors_per_s: 0.0,
        };
        let text = render_with_health(
            &[ep("a", 1, 0)],
            NodeStats::default(),
            Some(h),
            Options::default(),
        );
        assert!(
            text.contains("corral_net_utilization_percent 42.5"),
            "{text}"
        );
        assert!(text.contains("corral_net_drops_per_second 3.0"), "{text}");
        assert!(text.contains("corral_net_errors_per_second 0.0"), "{text}");
    }

    #[test]
    fn pod_series_only_with_pod_metrics() {
        let eps: Vec<EndpointStatus> = (0..50).map(|i| ep(&format!("p{i}"), 10, 1)).collect();
        let off = render(&eps, NodeStats::default(), Options::default());
        let on = render(&eps, NodeStats::default(), Options { pod_metrics: true });
        // node series do not grow with pods: 2 forward counts, 2 forward
        // bytes, 4 reasons x 2 directions of drops, the endpoint gauge,
        // the lost drop events
        assert_eq!(samples(&off).len(), 14, "{off}");
        assert_eq!(
            samples(&render(&[], NodeStats::default(), Options::default())).len(),
            14
        );
        assert!(!off.contains("corral_endpoint_"), "{off}");
        // per pod: packets and bytes per direction, 4 drop reasons x 2
        assert_eq!(samples(&on).len(), 14 + 50 * 12);
        assert!(
            on.contains(
                "corral_endpoint_packets_total{namespace=\"x\",pod=\"p7\",direction=\"egress\"} 1"
            ),
            "{on}"
        );
        assert!(
            on.contains("corral_endpoint_drops_total{namespace=\"x\",pod=\"p7\",direction=\"egress\",reason=\"rate\"} 1"),
            "{on}"
        );
        // the aggregates are the same either way
        let agg = |t: &str| -> Vec<String> {
            samples(t)
                .into_iter()
                .filter(|l| !l.starts_with("corral_endpoint_"))
                .map(String::from)
                .collect::<std::collections::BTreeSet<String>>()
                .into_iter()
                .collect()
        };
        assert_eq!(agg(&off), agg(&on));
    }
}
