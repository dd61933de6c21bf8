//! Benchmark plots (plotters, SVG backend): pods/s against cluster size per
//! workload, creation→bind latency CDFs of the end-to-end runs, and the gang
//! end-to-end timeline (created vs bound over time). See `plots.rs` for the command.

use std::collections::BTreeMap;

use corral_scheduler::svg_plot::{color, err, legend, legend_line, svg, titled};
use plotters::prelude::*;
use serde_json::Value;

/// Published kube-scheduler figures drawn as labelled reference lines: the minimum
/// throughput (pods/s) its CI asserts in scheduler_perf at 5,000 nodes
/// (`threshold:` in kubernetes/kubernetes
/// `test/integration/scheduler_perf/misc/performance-config.yaml` for
/// SchedulingBasic/5000Nodes_10000Pods and
/// `test/integration/scheduler_perf/affinity/performance-config.yaml` for
/// SchedulingPodAffinity/5000Nodes_5000Pods and MixedSchedulingBasePod/5000Nodes_5000Pods).
/// (workload as Corral's loadgen names it, label, pods/s)
pub const KUBE_REFERENCE: &[(&str, &str, f64)] = &[
    (
        "basic",
        "kube-scheduler CI threshold, SchedulingBasic 5000 nodes",
        680.0,
    ),
    (
        "affinity",
        "kube-scheduler CI threshold, SchedulingPodAffinity 5000 nodes",
        35.0,
    ),
    (
        "mixed",
        "kube-scheduler CI threshold, MixedSchedulingBasePod 5000 nodes",
        140.0,
    ),
];

/// One end-to-end run (`--bench k8s -- e2e … --json`).
#[derive(Debug, Clone, PartialEq)]
pub struct E2e {
    pub gang: u64,
    pub nodes: u64,
    pub running: u64,
    pub api_latency_ms: f64,
    /// `release` or `debug` (the build that ran; debug runs are labelled).
    pub build: String,
    /// Optional name of the code under test (e.g. "before"), part of the label.
    pub variant: Option<String>,
    pub rate: f64,
    pub bound_per_second: f64,
    /// Latency (ms) at quantiles 0.01 … 1.0.
    pub cdf_ms: Vec<f64>,
    /// (seconds, created, bound)
    pub timeline: Vec<(f64, f64, f64)>,
}

impl E2e {
    /// The p99 creation→bind latency (ms) from the CDF (∞ without one).
    pub fn p99_ms(&self) -> f64 {
        self.cdf_ms.get(98).copied().unwrap_or(f64::INFINITY)
    }

    /// The configuration's label (runs with the same label are repeats).
    pub fn label(&self) -> String {
        let kind = if self.gang > 1 {
            format!("gangs of {}", self.gang)
        } else {
            "plain pods".to_string()
        };
        let mut s = format!("{kind}, {} nodes", self.nodes);
        if self.running > 0 {
            s.push_str(&format!(", {}k running", self.running / 1000));
        }
        if self.api_latency_ms > 0.0 {
            s.push_str(&format!(", API +{} ms", self.api_latency_ms));
        }
        if self.build != "release" {
            s.push_str(&format!(" ({} build)", self.build));
        }
        if let Some(v) = &self.variant {
            s.push_str(&format!(" [{v}]"));
        }
        s
    }
}

/// One `simulate` run of a workload at a cluster size.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub workload: String,
    pub nodes: u64,
    pub pods_per_second: f64,
}

/// Everything read from the result files.
#[derive(Debug, Default)]
pub struct Inputs {
    pub e2e: Vec<E2e>,
    pub cluster: Vec<Cluster>,
}

fn num(v: &Value, f: &str, at: &str) -> Result<f64, String> {
    v[f].as_f64()
        .ok_or_else(|| format!("{at}: field {f:?} missing or not a number"))
}

impl Inputs {
    /// Adds the JSON lines of one file (`origin` names it in errors). Lines that are
    /// not JSON objects with a known `bench` are skipped; a known one with a missing
    /// field is an error naming the file, line and field.
    pub fn add_lines(&mut self, text: &str, origin: &str) -> Result<(), String> {
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if !line.starts_with('{') {
                continue;
            }
            let at = format!("{origin}:{}", i + 1);
            let v: Value = serde_json::from_str(line).map_err(|e| format!("{at}: {e}"))?;
            match v["bench"].as_str() {
                Some("e2e") => {
                    let cdf_ms = v["latency_cdf_ms"]
                        .as_array()
                        .ok_or_else(|| format!("{at}: field \"latency_cdf_ms\" missing"))?
                        .iter()
                        .filter_map(Value::as_f64)
                        .collect();
                    let timeline = v["timeline"]
                        .as_array()
                        .ok_or_else(|| format!("{at}: field \"timeline\" missing"))?
                        .iter()
                        .map(|p| {
                            Ok((
                                num(p, "t", &at)?,
                                num(p, "created", &at)?,
                                num(p, "bound", &at)?,
                            ))
                        })
                        .collect::<Result<Vec<_>, String>>()?;
                    self.e2e.push(E2e {
                        gang: num(&v, "gang", &at)? as u64,
                        nodes: num(&v, "nodes", &at)? as u64,
                        running: num(&v, "running", &at)? as u64,
                        api_latency_ms: num(&v, "api_latency_ms", &at)?,
                        build: v["build"].as_str().unwrap_or("release").to_string(),
                        variant: v["variant"].as_str().map(str::to_string),
                        rate: num(&v, "rate", &at)?,
                        bound_per_second: num(&v, "bound_per_second", &at)?,
                        cdf_ms,
                        timeline,
                    });
                }
                Some("cluster") => self.cluster.push(Cluster {
                    workload: v["workload"]
                        .as_str()
                        .ok_or_else(|| format!("{at}: field \"workload\" missing"))?
                        .to_string(),
                    nodes: num(&v, "nodes", &at)? as u64,
                    pods_per_second: num(&v, "pods_per_second", &at)?,
                }),
                _ => {}
            }
        }
        Ok(())
    }

    /// The e2e run with the median p99 latency of each configuration (its repeats),
    /// in label order (of two middle runs, the later one).
    pub fn median_e2e(&self) -> BTreeMap<String, &E2e> {
        let mut all: BTreeMap<String, Vec<&E2e>> = BTreeMap::new();
        for r in &self.e2e {
            all.entry(r.label()).or_default().push(r);
        }
        all.into_iter()
            .map(|(label, mut runs)| {
                // Stable sort: among equal p99s the input order decides.
                runs.sort_by(|a, b| a.p99_ms().total_cmp(&b.p99_ms()));
                (label, runs[runs.len() / 2])
            })
            .collect()
    }

    /// Median pods/s per (workload, nodes) over repeats.
    pub fn cluster_medians(&self) -> BTreeMap<String, BTreeMap<u64, f64>> {
        let mut all: BTreeMap<String, BTreeMap<u64, Vec<f64>>> = BTreeMap::new();
        for c in &self.cluster {
            all.entry(c.workload.clone())
                .or_default()
                .entry(c.nodes)
                .or_default()
                .push(c.pods_per_second);
        }
        all.into_iter()
            .map(|(w, by)| {
                let m = by
                    .into_iter()
                    .map(|(n, mut v)| {
                        v.sort_by(f64::total_cmp);
                        (n, v[v.len() / 2])
                    })
                    .collect();
                (w, m)
            })
            .collect()
    }
}

/// Renders every plot the inputs have data for: file name → SVG.
pub fn render_all(inp: &Inputs) -> Result<BTreeMap<&'static str, String>, String> {
    let mut out = BTreeMap::new();
    if !inp.cluster.is_empty() {
        out.insert("pods_per_second_vs_nodes.svg", scaling(inp)?);
    }
    if !inp.e2e.is_empty() {
        out.insert("e2e_latency_cdf.svg", cdf(inp)?);
        if inp.e2e.iter().any(|r| r.gang > 1) {
            out.insert("gang_e2e_timeline.svg", timeline(inp)?);
        }
    }
    if out.is_empty() {
        return Err("no e2e or cluster results in the input".into());
    }
    Ok(out)
}

/// Pods/s against cluster size, one line per workload (log-log), with the
/// kube-scheduler references as dashed horizontal lines in the workload's colour.
pub fn scaling(inp: &Inputs) -> Result<String, String> {
    let med = inp.cluster_medians();
    let (mut xmin, mut xmax, mut ymin, mut ymax) = (f64::MAX, 0f64, f64::MAX, 0f64);
    for by in med.values() {
        for (n, r) in by {
            xmin = xmin.min(*n as f64);
            xmax = xmax.max(*n as f64);
            ymin = ymin.min(*r);
            ymax = ymax.max(*r);
        }
    }
    for (w, _, r) in KUBE_REFERENCE {
        if med.contains_key(*w) {
            ymin = ymin.min(*r);
        }
    }
    let (xmin, xmax) = (xmin * 0.8, xmax * 1.25);
    let (ymin, ymax) = ((ymin * 0.5).max(1.0), ymax * 2.0);
    svg((900, 600), |root| {
        let mut chart = titled(
            root,
            "Scheduling throughput against cluster size (simulate, release build)",
            12,
            (40, 70),
        )
        .build_cartesian_2d((xmin..xmax).log_scale(), (ymin..ymax).log_scale())
        .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("nodes")
            .y_desc("pods/s (median)")
            .draw()
            .map_err(err)?;
        for (i, (w, by)) in med.iter().enumerate() {
            let c = color(i);
            let pts: Vec<(f64, f64)> = by.iter().map(|(n, r)| (*n as f64, *r)).collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(err)?
                .label(w.clone())
                .legend(legend_line(c.stroke_width(2)));
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 4, c.filled())))
                .map_err(err)?;
            for (rw, label, r) in KUBE_REFERENCE.iter().filter(|(rw, _, _)| rw == w) {
                let _ = rw;
                let dashes = dashed((xmin, *r), (xmax, *r), 24);
                chart
                    .draw_series(
                        dashes
                            .into_iter()
                            .map(|seg| PathElement::new(seg, c.mix(0.7))),
                    )
                    .map_err(err)?
                    .label(format!("{label}: {r} pods/s"))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 8, y)], c.mix(0.7)));
            }
        }
        legend(&mut chart, SeriesLabelPosition::LowerLeft)
    })
}

/// Segments of a dashed line from `a` to `b` (in log-x space, `n` dashes).
fn dashed(a: (f64, f64), b: (f64, f64), n: usize) -> Vec<Vec<(f64, f64)>> {
    let (la, lb) = (a.0.ln(), b.0.ln());
    (0..n)
        .map(|i| {
            let t0 = i as f64 / n as f64;
            let t1 = (i as f64 + 0.5) / n as f64;
            vec![
                ((la + (lb - la) * t0).exp(), a.1),
                ((la + (lb - la) * t1).exp(), b.1),
            ]
        })
        .collect()
}

/// Creation→bind latency CDF of each e2e configuration (log-x).
pub fn cdf(inp: &Inputs) -> Result<String, String> {
    let runs = inp.median_e2e();
    let mut xmin = f64::MAX;
    let mut xmax = 0f64;
    for r in runs.values() {
        for v in &r.cdf_ms {
            xmin = xmin.min(v.max(0.1));
            xmax = xmax.max(*v);
        }
    }
    if xmax <= 0.0 {
        return Err("e2e results without latencies".into());
    }
    let (xmin, xmax) = (xmin * 0.8, xmax * 1.25);
    svg((900, 600), |root| {
        let mut chart = titled(
            root,
            "Creation→bind latency, corral-scheduler run + test API server",
            12,
            (40, 60),
        )
        .build_cartesian_2d((xmin..xmax).log_scale(), 0f64..1.0)
        .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("creation→bind latency (ms)")
            .y_desc("fraction of pods")
            .draw()
            .map_err(err)?;
        // 1 s target.
        chart
            .draw_series(LineSeries::new(
                vec![(1000.0, 0.0), (1000.0, 1.0)],
                BLACK.mix(0.5),
            ))
            .map_err(err)?
            .label("p99 target 1 s")
            .legend(legend_line(BLACK.mix(0.5)));
        for (i, (label, r)) in runs.iter().enumerate() {
            let c = color(i);
            let pts: Vec<(f64, f64)> = r
                .cdf_ms
                .iter()
                .enumerate()
                .map(|(q, v)| (v.max(xmin), (q + 1) as f64 / 100.0))
                .collect();
            chart
                .draw_series(LineSeries::new(pts, c.stroke_width(2)))
                .map_err(err)?
                .label(format!(
                    "{label} ({:.0} created/s → {:.0} bound/s)",
                    r.rate, r.bound_per_second
                ))
                .legend(legend_line(c.stroke_width(2)));
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)
    })
}

/// Created and bound pods over time for the gang e2e configurations.
pub fn timeline(inp: &Inputs) -> Result<String, String> {
    let runs: Vec<(String, &E2e)> = inp
        .median_e2e()
        .into_iter()
        .filter(|(_, r)| r.gang > 1)
        .collect();
    let mut tmax = 0f64;
    let mut ymax = 0f64;
    for (_, r) in &runs {
        for (t, c, b) in &r.timeline {
            tmax = tmax.max(*t);
            ymax = ymax.max(c.max(*b));
        }
    }
    svg((900, 600), |root| {
        let mut chart = titled(
            root,
            "Gang end-to-end: pods created (dashed) and bound (solid) over time",
            12,
            (40, 70),
        )
        .build_cartesian_2d(0f64..(tmax * 1.05).max(1.0), 0f64..(ymax * 1.05).max(1.0))
        .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("seconds since the first creation")
            .y_desc("pods")
            .draw()
            .map_err(err)?;
        for (i, (label, r)) in runs.iter().enumerate() {
            let c = color(i);
            let created: Vec<(f64, f64)> = r.timeline.iter().map(|(t, c, _)| (*t, *c)).collect();
            let bound: Vec<(f64, f64)> = r.timeline.iter().map(|(t, _, b)| (*t, *b)).collect();
            // Created: dashed (every other segment).
            let segs: Vec<Vec<(f64, f64)>> =
                created.windows(2).step_by(2).map(|w| w.to_vec()).collect();
            chart
                .draw_series(segs.into_iter().map(|s| PathElement::new(s, c.mix(0.6))))
                .map_err(err)?;
            chart
                .draw_series(LineSeries::new(bound, c.stroke_width(2)))
                .map_err(err)?
                .label(label.clone())
                .legend(legend_line(c.stroke_width(2)));
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e2e_line(gang: u64, lat: f64, bound: f64) -> String {
        // Slower binding, later latencies.
        let cdf: Vec<f64> = (1..=100)
            .map(|i| f64::from(i) * 10.0 * 2000.0 / bound)
            .collect();
        serde_json::json!({"bench": "e2e", "gang": gang, "nodes": 500, "running": 15000,
            "build": if gang > 1 { "debug" } else { "release" },
            "api_latency_ms": lat, "rate": 2000.0, "bound_per_second": bound,
            "latency_cdf_ms": cdf,
            "timeline": [{"t": 0.0, "created": 0, "bound": 0}, {"t": 0.25, "created": 500, "bound": 100},
                         {"t": 0.5, "created": 1000, "bound": 900}]})
        .to_string()
    }

    #[test]
    fn reads_results_and_draws_every_plot() {
        let mut inp = Inputs::default();
        let text = [
            "not json: a log line".to_string(),
            e2e_line(1, 0.0, 1900.0),
            e2e_line(8, 2.0, 1000.0),
            e2e_line(8, 2.0, 1500.0), // repeats: the median p99 one is drawn
            e2e_line(8, 2.0, 1200.0),
            r#"{"bench":"cluster","workload":"basic","nodes":500,"pods_per_second":90000}"#.into(),
            r#"{"bench":"cluster","workload":"basic","nodes":5000,"pods_per_second":40000}"#.into(),
            r#"{"bench":"cluster","workload":"basic","nodes":5000,"pods_per_second":30000}"#.into(),
            r#"{"bench":"cluster","workload":"basic","nodes":5000,"pods_per_second":50000}"#.into(),
            r#"{"bench":"other"}"#.into(),
        ]
        .join("\n");
        inp.add_lines(&text, "r.jsonl").expect("valid");
        assert_eq!(inp.e2e.len(), 4);
        let med = inp.median_e2e();
        assert_eq!(med.len(), 2);
        assert_eq!(
            med["gangs of 8, 500 nodes, 15k running, API +2 ms (debug build)"].bound_per_second,
            1200.0
        );
        assert_eq!(inp.cluster_medians()["basic"][&5000], 40000.0);
        let svgs = render_all(&inp).expect("plots");
        assert_eq!(
            svgs.keys().copied().collect::<Vec<_>>(),
            [
                "e2e_latency_cdf.svg",
                "gang_e2e_timeline.svg",
                "pods_per_second_vs_nodes.svg"
            ]
        );
        for svg in svgs.values() {
            assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
        }
        assert!(svgs["e2e_latency_cdf.svg"].contains("gangs of 8"));
        assert!(svgs["e2e_latency_cdf.svg"].contains("p99 target 1 s"));
        assert!(svgs["pods_per_second_vs_nodes.svg"].contains("SchedulingBasic 5000 nodes"));
    }

    #[test]
    fn a_known_line_with_a_missing_field_is_an_error_naming_it() {
        let mut inp = Inputs::default();
        let e = inp
            .add_lines(
                "\n{\"bench\":\"cluster\",\"workload\":\"basic\",\"nodes\":5}",
                "f.jsonl",
            )
            .expect_err("missing field");
        assert!(
            e.contains("f.jsonl:2") && e.contains("pods_per_second"),
            "{e}"
        );
        assert!(render_all(&Inputs::default()).is_err());
    }
}
