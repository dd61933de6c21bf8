//! Prometheus /metrics endpoint (prometheus-client text format), built
//! from the kernel counters at scrape time.

use std::sync::{Arc, Mutex};

use anyhow::Result;
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

/// Renders the metrics text for the given endpoints.
pub fn render(eps: &[EndpointStatus]) -> String {
    render_with_health(eps, crate::node_health::latest())
}

/// Renders endpoints plus the node health gauges (when sampled):
/// `corral_net_utilization_percent`, `corral_net_drops_per_second`,
/// `corral_net_errors_per_second` (read by the scheduler's health scrape).
pub fn render_with_health(
    eps: &[EndpointStatus],
    health: Option<crate::node_health::Health>,
) -> String {
    let mut reg = Registry::default();
    let packets = Family::<L, Counter>::default();
    let bytes = Family::<L, Counter>::default();
    let drops = Family::<L, Counter>::default();
    let endpoints = Gauge::<i64>::default();
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
    reg.register(
        "corral_endpoints",
        "Registered endpoints",
        endpoints.clone(),
    );
    let node_bytes = Family::<L, Counter>::default();
    let node_drops = Family::<L, Counter>::default();
    reg.register(
        "corral_node_bytes",
        "Bytes passed over all pods of the node per direction (rate()/uplink = link utilization)",
        node_bytes.clone(),
    );
    reg.register(
        "corral_node_drops",
        "Packets dropped over all pods of the node per direction and reason",
        node_drops.clone(),
    );
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
    for e in eps {
        for (dir, c) in [("ingress", &e.ingress), ("egress", &e.egress)] {
            let base: L = vec![
                ("namespace".into(), e.spec.namespace.clone()),
                ("pod".into(), e.spec.name.clone()),
                ("direction".into(), dir.into()),
            ];
            packets.get_or_create(&base).inc_by(c.packets);
            bytes.get_or_create(&base).inc_by(c.bytes);
            let nl: L = vec![("direction".into(), dir.into())];
            node_bytes.get_or_create(&nl).inc_by(c.bytes);
            let CounterView {
                drop_policy,
                drop_rate,
                drop_class,
                drop_malformed,
                ..
            } = c;
            for (reason, v) in [
                ("policy", drop_policy),
                ("rate", drop_rate),
                ("class_budget", drop_class),
                ("malformed", drop_malformed),
            ] {
                let mut l = base.clone();
                l.push(("reason".into(), reason.into()));
                drops.get_or_create(&l).inc_by(*v);
                let nl: L = vec![
                    ("direction".into(), dir.into()),
                    ("reason".into(), reason.into()),
                ];
                node_drops.get_or_create(&nl).inc_by(*v);
            }
        }
    }
    let mut out = String::new();
    let _ = encode(&mut out, &reg);
    out
}

/// Serves `/metrics` (bounded: head timeout and size, write timeout, connection
/// limit; see [`crate::serve_limits`]).
pub async fn serve(agent: Arc<Mutex<Agent>>, addr: String) -> Result<()> {
    let l = TcpListener::bind(&addr).await?;
    info!(%addr, "metrics listening");
    let render_now = move || {
        let a = agent.clone();
        async move {
            let eps = tokio::task::spawn_blocking(move || {
                a.lock().map(|mut g| g.snapshot()).unwrap_or_default()
            })
            .await
            .unwrap_or_default();
            render(&eps)
        }
    };
    crate::serve_limits::serve_metrics(l, crate::serve_limits::HTTP_HEAD_TIMEOUT, render_now).await;
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

    #[test]
    fn node_totals_sum_pods() {
        let text = render(&[ep("a", 100, 2), ep("b", 50, 3)]);
        assert!(
            text.contains("corral_node_bytes_total{direction=\"egress\"} 150"),
            "{text}"
        );
        assert!(
            text.contains("corral_node_drops_total{direction=\"egress\",reason=\"rate\"} 5"),
            "{text}"
        );
        assert!(text.contains("corral_endpoints 2"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(!text.contains("corral_net_"), "no health before sampling");
        let h = crate::node_health::Health {
            util_pct: Some(42.5),
            drops_per_s: 3.0,
            errors_per_s: 0.0,
        };
        let text = render_with_health(&[ep("a", 1, 0)], Some(h));
        assert!(
            text.contains("corral_net_utilization_percent 42.5"),
            "{text}"
        );
        assert!(text.contains("corral_net_drops_per_second 3.0"), "{text}");
        assert!(text.contains("corral_net_errors_per_second 0.0"), "{text}");
    }
}
