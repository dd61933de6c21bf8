//! Health signal sources: Kubernetes Node conditions and `corral.io/health.<signal>`
//! annotations, Prometheus text-format endpoints (`--health-scrape` URL templates),
//! and time-series files (YAML or CSV: time, node, signal, value) for simulation.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use serde::Deserialize;

/// Annotation prefix written by the data-plane agent: `corral.io/health.cpu: "93.5"`.
pub const ANNOTATION_PREFIX: &str = corral_api::keys::ANN_HEALTH_PREFIX;

/// A raw (unvalidated) sample from any source.
#[derive(Debug, Clone, PartialEq)]
pub struct RawSample {
    pub time: f64,
    pub node: String,
    pub signal: String,
    pub value: f64,
}

/// Samples from a Node object at time `now` (Unix seconds): every
/// `corral.io/health.<signal>` annotation, `heartbeat_age` from the Ready
/// condition's `lastHeartbeatTime`, memory/disk/PID pressure conditions as
/// `memory` 100 % / `disk_latency` critical, and Ready=False/Unknown as a stale
/// heartbeat. Malformed annotation values produce warnings.
pub fn from_node(node: &Node, now: f64, warn: &mut dyn FnMut(String)) -> Vec<RawSample> {
    node_samples(node, now, true, warn)
}

/// [`from_node`] for the live feed: the Ready condition's `lastHeartbeatTime` is not
/// used (kubelets with Lease heartbeats refresh it only every 5 min); Ready ≠ True
/// (which the node lifecycle controller sets when the Lease is not renewed) is the
/// missed heartbeat, and Ready = True reports `heartbeat_age` 0.
pub fn from_node_live(node: &Node, now: f64, warn: &mut dyn FnMut(String)) -> Vec<RawSample> {
    node_samples(node, now, false, warn)
}

fn node_samples(
    node: &Node,
    now: f64,
    heartbeat_time: bool,
    warn: &mut dyn FnMut(String),
) -> Vec<RawSample> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let mut out = Vec::new();
    let mut push = |signal: &str, value: f64| {
        out.push(RawSample {
            time: now,
            node: name.clone(),
            signal: signal.to_string(),
            value,
        })
    };
    if let Some(ann) = &node.metadata.annotations {
        for (k, v) in ann {
            let Some(sig) = k.strip_prefix(ANNOTATION_PREFIX) else {
                continue;
            };
            match v.trim().parse::<f64>() {
                Ok(x) => push(sig, x),
                Err(_) => warn(format!(
                    "node {name:?}: annotation {k}: {v:?} is not a number; ignored"
                )),
            }
        }
    }
    let conds = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    for c in conds {
        let is_true = c.status == "True";
        match c.type_.as_str() {
            "Ready" => {
                if c.status != "True" {
                    // Not ready (or unknown): at least as bad as a missed heartbeat.
                    push("heartbeat_age", 1.0e6);
                } else if !heartbeat_time {
                    push("heartbeat_age", 0.0);
                } else if let Some(hb) = &c.last_heartbeat_time {
                    let age = now - hb.0.as_second() as f64;
                    push("heartbeat_age", age.max(0.0));
                }
            }
            "MemoryPressure" if is_true => push("memory", 100.0),
            "DiskPressure" if is_true => push("disk_latency", 1.0e4),
            "NetworkUnavailable" if is_true => push("net_errors", 1.0e6),
            _ => {}
        }
    }
    out
}

/// The Ready condition's `lastHeartbeatTime` (Unix seconds), if any.
pub fn last_heartbeat(node: &Node) -> Option<f64> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?
        .last_heartbeat_time
        .as_ref()
        .map(|t| t.0.as_second() as f64)
}

/// A parsed Prometheus sample: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct PromSample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the Prometheus text exposition format (0.0.4): comments and `# HELP` /
/// `# TYPE` lines are skipped, label values may contain escaped `\"`, `\\`, `\n`,
/// and an optional timestamp may follow the value. Malformed lines are reported
/// (with their line number) and skipped.
pub fn parse_prometheus(text: &str, warn: &mut dyn FnMut(String)) -> Vec<PromSample> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_prom_line(line) {
            Ok(s) => out.push(s),
            Err(e) => warn(format!("line {}: {e}: {line:?}", i + 1)),
        }
    }
    out
}

fn parse_prom_line(line: &str) -> Result<PromSample, String> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("invalid metric name".into());
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        let mut end = None;
        loop {
            // skip spaces and commas
            while let Some(&(_, c)) = chars.peek() {
                if c == ',' || c == ' ' {
                    chars.next();
                } else {
                    break;
                }
            }
            match chars.peek() {
                Some(&(j, '}')) => {
                    end = Some(j);
                    break;
                }
                None => break,
                _ => {}
            }
            let mut key = String::new();
            while let Some(&(_, c)) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    key.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            if key.is_empty() || chars.next().map(|x| x.1) != Some('=') {
                return Err("invalid label".into());
            }
            if chars.next().map(|x| x.1) != Some('"') {
                return Err(format!("label {key}: value must be quoted"));
            }
            let mut val = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|x| x.1) {
                        Some('n') => val.push('\n'),
                        Some(o) => val.push(o),
                        None => break,
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    o => val.push(o),
                }
            }
            if !closed {
                return Err(format!("label {key}: unterminated value"));
            }
            labels.insert(key, val);
        }
        let end = end.ok_or("unterminated label set")?;
        rest = &r[end + 1..];
    }
    let mut parts = rest.split_whitespace();
    let v = parts.next().ok_or("missing value")?;
    let value = match v {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v
            .parse::<f64>()
            .map_err(|_| format!("invalid value {v:?}"))?,
    };
    if let Some(ts) = parts.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("invalid timestamp {ts:?}"))?;
    }
    if parts.next().is_some() {
        return Err("trailing data".into());
    }
    Ok(PromSample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Maps a scrape to health signal values. `corral_health_<signal>` gauges (e.g.
/// `corral_health_cpu`) map directly; node-exporter gauges that are already
/// ratios/levels are converted: `node_pressure_memory_waiting_seconds_total` is a
/// counter and not used, but `node_memory_MemAvailable_bytes` /
/// `node_memory_MemTotal_bytes` give `memory`, `node_load1` / CPU count is not a
/// utilization and is ignored, DCGM's `DCGM_FI_DEV_GPU_TEMP` (max over GPUs),
/// `DCGM_FI_DEV_XID_ERRORS` (non-zero count) and `corral_gpu_missing`. Counters
/// (rates) need two scrapes and are expected pre-computed as `corral_*` gauges by
/// the agent (`corral_net_drops_per_second`, ...).
pub fn prom_to_signals(samples: &[PromSample]) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = Vec::new();
    let mut mem_avail = None;
    let mut mem_total = None;
    let max_of = |out: &mut Vec<(String, f64)>, sig: &str, v: f64| match out
        .iter_mut()
        .find(|(s, _)| s == sig)
    {
        Some(e) => e.1 = e.1.max(v),
        None => out.push((sig.to_string(), v)),
    };
    for s in samples {
        let n = s.name.as_str();
        if let Some(sig) = n.strip_prefix("corral_health_") {
            max_of(&mut out, sig, s.value);
            continue;
        }
        match n {
            "node_memory_MemAvailable_bytes" => mem_avail = Some(s.value),
            "node_memory_MemTotal_bytes" => mem_total = Some(s.value),
            "corral_cpu_utilization_percent" => max_of(&mut out, "cpu", s.value),
            "corral_net_utilization_percent" => max_of(&mut out, "net_util", s.value),
            "corral_net_drops_per_second" => max_of(&mut out, "net_drops", s.value),
            "corral_net_errors_per_second" => max_of(&mut out, "net_errors", s.value),
            "corral_tcp_retransmits_per_second" => max_of(&mut out, "tcp_retrans", s.value),
            "corral_disk_latency_milliseconds" => max_of(&mut out, "disk_latency", s.value),
            "corral_gpu_missing" => max_of(&mut out, "gpu_missing", s.value),
            "node_pressure_memory_stalled_percent" => max_of(&mut out, "memory_psi", s.value),
            "DCGM_FI_DEV_GPU_TEMP" => max_of(&mut out, "gpu_temp", s.value),
            "DCGM_FI_DEV_GPU_UTIL" => max_of(&mut out, "gpu", s.value),
            "DCGM_FI_DEV_XID_ERRORS" => max_of(&mut out, "gpu_xid", f64::from(s.value != 0.0)),
            "node_hwmon_temp_celsius" => {}
            _ => {}
        }
    }
    if let (Some(a), Some(t)) = (mem_avail, mem_total)
        && t > 0.0
    {
        out.push(("memory_available".into(), (a / t).clamp(0.0, 1.0)));
    }
    out
}

/// Expands a `--health-scrape` URL template: `{node}` is replaced by the node name.
pub fn expand_template(template: &str, node: &str) -> String {
    template.replace("{node}", node)
}

/// Largest response body read from a scrape endpoint.
pub const MAX_BODY: usize = 64 << 20;

/// Checks a `--health-scrape` template (`{node}` expanded) is an `http://` or
/// `https://` URL with a host.
pub fn check_scrape_url(template: &str) -> Result<(), String> {
    let url = expand_template(template, "node");
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{url}: only http:// and https:// URLs are supported"))?;
    if rest.split(['/', ':']).next().is_none_or(str::is_empty) {
        return Err(format!("{url}: missing host"));
    }
    Ok(())
}

/// One scrape of `nodes` at time `now` (the one-shot `simulate` path), through the
/// same client and round as `run`'s live feed ([`super::live::scrape_round`]).
pub fn scrape_nodes(
    client: &corral_http::client::HttpClient,
    template: &str,
    nodes: &[std::sync::Arc<str>],
    now: f64,
    timeout: Duration,
    warn: &mut dyn FnMut(String),
) -> Vec<RawSample> {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            warn(format!("health scrape: runtime: {e}"));
            return Vec::new();
        }
    };
    let (mut samples, failed, first) = rt.block_on(super::live::scrape_round(
        client, template, nodes, timeout, 32,
    ));
    if failed > 0 {
        warn(format!(
            "health scrape: {failed}/{} endpoints failed (first: {})",
            nodes.len(),
            first.unwrap_or_default()
        ));
    }
    for s in &mut samples {
        s.time = now;
    }
    samples
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeriesRow {
    time: TimeValue,
    node: String,
    signal: String,
    value: f64,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TimeValue {
    Secs(f64),
    Text(String),
}

/// A time-series `time` value: a plain number of seconds since the start (`90`,
/// `1.5`; a point in time, as spreadsheets and exporters write it) or a Go duration
/// offset (`1m30s`, the one grammar of [`corral_api::duration`]).
pub fn parse_time(s: &str) -> Result<f64, String> {
    let s = s.trim();
    if s.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && let Ok(v) = s.parse::<f64>()
    {
        return if v.is_finite() && v >= 0.0 {
            Ok(v)
        } else {
            Err(format!("invalid time {s:?}"))
        };
    }
    corral_api::duration::parse(s)
        .map(|d| d.as_secs_f64())
        .map_err(|e| e.to_string())
}

/// Seconds of a Go duration ([`corral_api::duration`]): the timeline's `duration`,
/// `step` and the pods' `corral.io/duration`.
pub fn duration_secs(s: &str) -> Result<f64, String> {
    corral_api::duration::parse(s)
        .map(|d| d.as_secs_f64())
        .map_err(|e| e.to_string())
}

/// Reads a time series: CSV with header `time,node,signal,value` (time in seconds
/// or with unit), or YAML — a list of `{time, node, signal, value}`. Errors name the
/// file and row. Rows are returned sorted by time (stable).
pub fn parse_series(text: &str, origin: &str) -> Result<Vec<RawSample>, String> {
    let trimmed = text.trim_start();
    let mut out = Vec::new();
    if trimmed.starts_with("time,") || trimmed.starts_with("time ,") {
        for (i, line) in text.lines().enumerate().skip(1) {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            if f.len() != 4 {
                return Err(format!(
                    "{origin}: line {}: expected 4 fields time,node,signal,value, got {}",
                    i + 1,
                    f.len()
                ));
            }
            let time =
                parse_time(f[0]).map_err(|e| format!("{origin}: line {}: time: {e}", i + 1))?;
            let value = f[3].parse::<f64>().map_err(|_| {
                format!(
                    "{origin}: line {}: value: {:?} is not a number",
                    i + 1,
                    f[3]
                )
            })?;
            out.push(RawSample {
                time,
                node: f[1].to_string(),
                signal: f[2].to_string(),
                value,
            });
        }
    } else {
        crate::limits::check_yaml_text(text, origin, corral_limits::MAX_MANIFEST_BYTES)?;
        let rows: Vec<SeriesRow> =
            serde_yaml_ng::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
        for (i, r) in rows.into_iter().enumerate() {
            let time = match r.time {
                TimeValue::Secs(s) if s.is_finite() && s >= 0.0 => s,
                TimeValue::Secs(s) => return Err(format!("{origin}: [{i}].time: invalid {s}")),
                TimeValue::Text(t) => {
                    parse_time(&t).map_err(|e| format!("{origin}: [{i}].time: {e}"))?
                }
            };
            out.push(RawSample {
                time,
                node: r.node,
                signal: r.signal,
                value: r.value,
            });
        }
    }
    out.sort_by(|a, b| a.time.total_cmp(&b.time));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn prometheus_text_format() {
        let text = r#"
# HELP node_memory_MemAvailable_bytes Memory information field MemAvailable_bytes.
# TYPE node_memory_MemAvailable_bytes gauge
node_memory_MemAvailable_bytes 2.5e+09
node_memory_MemTotal_bytes 1e10
corral_health_cpu{node="n1",note="a \"q\" \\ b"} 93.5 1700000000000
DCGM_FI_DEV_GPU_TEMP{gpu="0"} 71
DCGM_FI_DEV_GPU_TEMP{gpu="1",} 88
DCGM_FI_DEV_XID_ERRORS{gpu="1"} 79
bad line here
x{a=b} 1
y{a="1"
"#;
        let mut warns = Vec::new();
        let s = parse_prometheus(text, &mut |w| warns.push(w));
        assert_eq!(warns.len(), 3, "{warns:?}");
        assert!(warns[0].starts_with("line 10"), "{warns:?}");
        assert_eq!(s[2].labels["note"], "a \"q\" \\ b");
        let sig = prom_to_signals(&s);
        let get = |n: &str| sig.iter().find(|(s, _)| s == n).map(|x| x.1);
        assert_eq!(get("cpu"), Some(93.5));
        assert_eq!(get("gpu_temp"), Some(88.0));
        assert_eq!(get("gpu_xid"), Some(1.0));
        assert_eq!(get("memory_available"), Some(0.25));
    }

    #[test]
    fn scrape_from_local_http_server() {
        use std::io::{BufRead, BufReader};
        use std::net::TcpListener;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut s, _) = l.accept().unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut first = String::new();
                r.read_line(&mut first).unwrap();
                loop {
                    let mut l2 = String::new();
                    if r.read_line(&mut l2).unwrap() == 0 || l2 == "\r\n" {
                        break;
                    }
                }
                let (status, body) = if first.contains("/metrics/n1") {
                    ("200 OK", "corral_health_cpu 91\ncorral_gpu_missing 1\n")
                } else {
                    ("404 Not Found", "")
                };
                write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
        });
        let tpl = format!("http://127.0.0.1:{port}/metrics/{{node}}");
        let client = corral_http::client::HttpClient::new(None, MAX_BODY).unwrap();
        let mut warns = Vec::new();
        let nodes: Vec<std::sync::Arc<str>> = vec!["n1".into(), "n2".into()];
        let mut got = scrape_nodes(
            &client,
            &tpl,
            &nodes,
            5.0,
            Duration::from_secs(5),
            &mut |w| warns.push(w),
        );
        got.sort_by(|a, b| a.signal.cmp(&b.signal));
        assert_eq!(got.len(), 2, "{warns:?}");
        assert_eq!(
            (
                got[0].signal.as_str(),
                got[0].value,
                got[0].time,
                got[0].node.as_str()
            ),
            ("cpu", 91.0, 5.0, "n1")
        );
        assert_eq!(warns.len(), 1, "{warns:?}");
        assert!(
            warns[0].contains("1/2") && warns[0].contains("404"),
            "{warns:?}"
        );
        h.join().unwrap();
        assert!(check_scrape_url("ftp://x/").is_err());
        assert!(check_scrape_url("http:///m").is_err());
        assert!(check_scrape_url("https://{node}:9100/metrics").is_ok());
    }

    #[test]
    fn node_annotations_and_conditions() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "annotations": {
                "corral.io/health.cpu": "88.5",
                "corral.io/health.gpu_missing": "bad",
                "other": "1"
            }},
            "status": {"conditions": [
                {"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-01-01T00:00:00Z"},
                {"type": "MemoryPressure", "status": "True"},
                {"type": "DiskPressure", "status": "False"}
            ]}
        }))
        .unwrap();
        let now = 1_767_225_600.0 + 30.0; // 2026-01-01T00:00:30Z
        let mut warns = Vec::new();
        let s = from_node(&node, now, &mut |w| warns.push(w));
        let get = |n: &str| s.iter().find(|x| x.signal == n).map(|x| x.value);
        assert_eq!(get("cpu"), Some(88.5));
        assert_eq!(get("heartbeat_age"), Some(30.0));
        assert_eq!(get("memory"), Some(100.0));
        assert_eq!(get("disk_latency"), None);
        assert_eq!(warns.len(), 1);
        assert!(warns[0].contains("gpu_missing"));
    }

    #[test]
    fn annotations_accept_dash_spellings() {
        // The data-plane agent writes `corral.io/health.net-*` (dashes).
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "annotations": {
                "corral.io/health.net-util": "97",
                "corral.io/health.net-drops": "2000",
                "corral.io/health.net_errors": "3",
                "corral.io/health.tcp-retrans": "1",
            }}
        }))
        .unwrap();
        let mut warns = Vec::new();
        let s = from_node(&node, 100.0, &mut |w| warns.push(w));
        assert!(warns.is_empty(), "{warns:?}");
        let mut t = crate::health::HealthTracker::new(Default::default()).unwrap();
        for x in &s {
            assert_eq!(
                t.observe(x.time, &x.node, &x.signal, x.value),
                None,
                "{x:?}"
            );
        }
        use crate::health::{Level, Signal};
        t.assume_sustained();
        t.advance(100.0);
        assert_eq!(
            t.signal("n1", &Signal::NetUtil).unwrap(),
            (97.0, Level::Critical)
        );
        assert_eq!(
            t.signal("n1", &Signal::NetDrops).unwrap().1,
            Level::Critical
        );
        assert_eq!(t.signal("n1", &Signal::NetErrors).unwrap().0, 3.0);
        assert_eq!(t.signal("n1", &Signal::TcpRetrans).unwrap().0, 1.0);
        let v = t.view();
        let h = v.get("n1").unwrap();
        assert!(h.degraded.contains(&"net_util".to_string()), "{h:?}");
        assert!(h.score() < 10, "{h:?}");
    }

    #[test]
    fn series_files() {
        let csv = "time,node,signal,value\n0,n1,cpu,40\n1m,n1,cpu,85\n# c\n30s,n2,memory,50\n";
        let s = parse_series(csv, "t.csv").unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!((s[1].time, s[1].node.as_str()), (30.0, "n2"));
        assert!(
            parse_series("time,node,signal,value\n0,n1,cpu\n", "t.csv")
                .unwrap_err()
                .contains("t.csv: line 2")
        );
        assert!(
            parse_series("time,node,signal,value\nx,n1,cpu,1\n", "t.csv")
                .unwrap_err()
                .contains("time")
        );
        let y = "- {time: 10s, node: a, signal: cpu, value: 1}\n- {time: 5, node: a, signal: cpu, value: 2}\n";
        let s = parse_series(y, "t.yaml").unwrap();
        assert_eq!(s[0].time, 5.0);
        assert!(
            parse_series("- {time: 1, node: a}\n", "t.yaml")
                .unwrap_err()
                .contains("t.yaml")
        );
        // The time column: seconds or a Go duration offset.
        assert_eq!(parse_time("1m30s").unwrap(), 90.0);
        assert_eq!(parse_time("90").unwrap(), 90.0);
        assert_eq!(parse_time("1.5").unwrap(), 1.5);
        assert!(parse_time("5x").is_err());
        assert!(parse_time("-1").is_err());
        assert!(parse_time("-1s").is_err());
        // Durations are Go's grammar: a bare number is an error.
        assert_eq!(duration_secs("25m").unwrap(), 1500.0);
        assert!(duration_secs("90").unwrap_err().contains("missing unit"));
    }
}
