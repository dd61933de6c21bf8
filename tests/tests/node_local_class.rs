//! Node-local classes (issue 15 item 2, session 9): pods that differ only in labels,
//! namespace, owners, pod (anti-)affinity or topology spread constraints share one
//! `PodInfo::node_local_class`, and the engine shares node-local Filter results and
//! node-local scores across their equivalence classes. Two checks:
//!
//! 1. The premise, plugin by plugin: randomized variants of the `mixed` workload's
//!    pods (random labels, namespace, owners, pod affinity / anti-affinity terms,
//!    spread constraints) keep the node-local class, and every node-local plugin of
//!    the default profile (Filter plugins without PreFilter extensions, Score
//!    plugins with `node_local()`, with their PreFilter / PreScore) gives each
//!    variant exactly the base pod's results on every node of a cluster with
//!    running pods. A node-local plugin that read any of those fields would fail
//!    this.
//! 2. End to end, cached vs unshared: the same pods (many classes per node-local
//!    class) scheduled with their node-local classes and with every pod's node-local
//!    class set to its own equivalence class (nothing shared across classes, as
//!    before) give identical placements and identical failure messages.

mod common;

use common::workload;
use corral_loadgen::cluster::Profile;
use corral_scheduler::config::default_frameworks;
use corral_scheduler::framework::{CycleState, Framework};
use corral_scheduler::scheduler::{Options, Scheduler};
use corral_scheduler::snapshot::{PodInfo, Snapshot};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

/// splitmix64: a small deterministic generator (no rand dependency here).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

const LABEL_VALUES: &[&str] = &["web-1", "web-2", "batch-3", "red", "green", "x"];
const LABEL_KEYS: &[&str] = &["app", "color", "tier", "spark-app"];
const TOPOLOGY_KEYS: &[&str] = &["kubernetes.io/hostname", "topology.kubernetes.io/zone"];

fn random_selector(r: &mut Rng) -> Value {
    json!({"matchLabels": {*r.pick(LABEL_KEYS): *r.pick(LABEL_VALUES)}})
}

fn random_term(r: &mut Rng, namespaces: &[String]) -> Value {
    let mut t = json!({"labelSelector": random_selector(r), "topologyKey": *r.pick(TOPOLOGY_KEYS)});
    match r.below(3) {
        0 => t["namespaces"] = json!([r.pick(namespaces)]),
        1 => t["namespaceSelector"] = json!({}),
        _ => {}
    }
    t
}

/// `pod` with only the fields outside the node-local class changed at random.
fn variant(pod: &Pod, r: &mut Rng, namespaces: &[String]) -> Pod {
    let mut v = serde_json::to_value(pod).expect("pod to json");
    let md = &mut v["metadata"];
    let mut labels = serde_json::Map::new();
    for _ in 0..r.below(4) {
        labels.insert(r.pick(LABEL_KEYS).to_string(), json!(*r.pick(LABEL_VALUES)));
    }
    md["labels"] = Value::Object(labels);
    md["namespace"] = json!(r.pick(namespaces));
    if r.below(2) == 0 {
        md["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "name": format!("rs-{}", r.below(5)), "uid": format!("u{}", r.below(5))}]);
    } else if let Some(m) = md.as_object_mut() {
        m.remove("ownerReferences");
    }
    let spec = &mut v["spec"];
    let aff = spec["affinity"].as_object().cloned().unwrap_or_default();
    let mut aff = Value::Object(aff);
    for kind in ["podAffinity", "podAntiAffinity"] {
        if let Some(m) = aff.as_object_mut() {
            m.remove(kind);
        }
        let mut k = serde_json::Map::new();
        if r.below(2) == 0 {
            let terms: Vec<Value> = (0..1 + r.below(2))
                .map(|_| random_term(r, namespaces))
                .collect();
            k.insert(
                "requiredDuringSchedulingIgnoredDuringExecution".into(),
                json!(terms),
            );
        }
        if r.below(2) == 0 {
            let terms: Vec<Value> = (0..1 + r.below(2))
                .map(|_| json!({"weight": 1 + r.below(100), "podAffinityTerm": random_term(r, namespaces)}))
                .collect();
            k.insert(
                "preferredDuringSchedulingIgnoredDuringExecution".into(),
                json!(terms),
            );
        }
        if !k.is_empty() {
            aff[kind] = Value::Object(k);
        }
    }
    spec["affinity"] = aff;
    if let Some(m) = spec.as_object_mut() {
        m.remove("topologySpreadConstraints");
    }
    if r.below(2) == 0 {
        let c: Vec<Value> = (0..1 + r.below(2))
            .map(|_| {
                json!({"maxSkew": 1 + r.below(3), "topologyKey": *r.pick(TOPOLOGY_KEYS),
                    "whenUnsatisfiable": if r.below(2) == 0 { "DoNotSchedule" } else { "ScheduleAnyway" },
                    "labelSelector": random_selector(r)})
            })
            .collect();
        spec["topologySpreadConstraints"] = json!(c);
    }
    serde_json::from_value(v).expect("variant decodes")
}

/// Everything node-local plugins say about `pod`, per plugin and node: PreFilter
/// verdicts of plugins without extensions, node-local Filter results, PreScore
/// verdicts and raw scores of node-local Score plugins.
fn node_local_view(fw: &Framework, snap: &Snapshot, pod: &PodInfo) -> Vec<String> {
    let mut out = Vec::new();
    let mut st = CycleState::new();
    for p in &fw.pre_filter {
        let (res, s) = p.pre_filter(&mut st, pod, snap);
        if s.is_skip() {
            st.skip_filter.push(p.name());
        }
        if p.extensions().is_none() {
            out.push(format!(
                "prefilter {} {:?} {:?} {:?}",
                p.name(),
                s.code,
                s.reasons,
                res
            ));
        }
    }
    let cross = fw.cross_node_filter_mask();
    let nodes = snap.nodes();
    for (i, f) in fw.filter.iter().enumerate() {
        if cross & (1u64 << i) != 0 || st.skip_filter.contains(&f.name()) {
            continue;
        }
        for n in nodes {
            let s = f.filter(&st, pod, n, snap);
            out.push(format!(
                "filter {} {} {:?} {:?}",
                f.name(),
                n.name,
                s.code,
                s.reasons
            ));
        }
    }
    let refs: Vec<_> = nodes.iter().map(|n| &**n).collect();
    for ws in fw.score.iter().filter(|ws| ws.plugin.node_local()) {
        let name = ws.plugin.name();
        if let Some(ps) = fw.pre_score.iter().find(|p| p.name() == name) {
            let s = ps.pre_score(&mut st, pod, snap, &refs);
            out.push(format!("prescore {name} {:?} {:?}", s.code, s.reasons));
            if s.is_skip() {
                continue;
            }
        }
        for n in nodes {
            let s = ws.plugin.score(&st, pod, n, snap);
            out.push(format!("score {name} {} {s:?}", n.name));
        }
    }
    out
}

#[test]
fn node_local_plugins_ignore_what_the_node_local_class_leaves_out() {
    let fws = default_frameworks();
    let mut checked = 0;
    for seed in [1u64, 5] {
        let (snap, pending) = workload(Profile::Mixed, 40, 80, 120, seed);
        let namespaces: Vec<String> = {
            let mut v: Vec<String> = pending.iter().map(|p| p.namespace.clone()).collect();
            v.sort();
            v.dedup();
            v
        };
        assert!(namespaces.len() > 1);
        let mut r = Rng(seed);
        for base in &pending {
            let fw = fws
                .iter()
                .find(|f| f.scheduler_name == base.scheduler_name)
                .expect("profile");
            let want = node_local_view(fw, &snap, base);
            for k in 0..3 {
                let v = PodInfo::new(variant(&base.pod, &mut r, &namespaces), base.seq)
                    .expect("variant is valid");
                assert_eq!(
                    v.node_local_class, base.node_local_class,
                    "{}: variant {k} changed the node-local class",
                    base.key
                );
                let got = node_local_view(fw, &snap, &v);
                assert_eq!(got.len(), want.len(), "{}: variant {k}", base.key);
                for (g, w) in got.iter().zip(&want) {
                    assert_eq!(g, w, "{}: variant {k} ({:?})", base.key, v.pod.metadata);
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 400, "{checked} variants checked");
}

#[test]
fn the_view_sees_node_local_fields() {
    // The comparison above can fail: a change of a node-local field (here the
    // tolerations and the requests) changes the view.
    let fws = default_frameworks();
    let (snap, pending) = workload(Profile::Mixed, 40, 20, 60, 3);
    let base = &pending[0];
    let mut p = (*base.pod).clone();
    let spec = p.spec.as_mut().expect("spec");
    spec.tolerations = None;
    spec.containers[0].resources = None;
    let changed = PodInfo::new(p, base.seq).expect("valid");
    assert_ne!(changed.node_local_class, base.node_local_class);
    let fw = &fws[0];
    assert_ne!(
        node_local_view(fw, &snap, base),
        node_local_view(fw, &snap, &changed)
    );
}

/// (pod, node) placements and (pod, message) failures.
type Outcome = (Vec<(String, String)>, Vec<(String, String)>);

/// Schedules `pods` with batches of `batch` and returns (placements, failures).
fn run(snap: &Snapshot, pods: Vec<PodInfo>, batch: usize) -> Outcome {
    let opts = Options {
        seed: 11,
        batch_size: batch,
        adaptive_batch: false,
        latency_budget: None,
        ..Options::default()
    };
    let mut s = Scheduler::new(default_frameworks(), snap.clone(), opts);
    let r = s.schedule_all(pods);
    let placed = r
        .placements
        .iter()
        .map(|p| (p.pod.clone(), p.node.clone()))
        .collect();
    let mut failed: Vec<(String, String)> = r
        .unschedulable
        .iter()
        .map(|u| (u.pod.clone(), u.message.clone()))
        .collect();
    failed.sort();
    (placed, failed)
}

#[test]
fn shared_node_local_cells_decide_as_unshared_ones() {
    for (profile, nodes, pods, running) in [
        (Profile::Affinity, 50, 300, 0),
        (Profile::Mixed, 60, 250, 150),
        (Profile::Spread, 40, 200, 0),
    ] {
        let (snap, pending) = workload(profile, nodes, pods, running, 2);
        // Variants of the workload's pods (same node-local class, other classes)
        // make several classes per node-local class in every batch.
        let namespaces: Vec<String> = {
            let mut v: Vec<String> = pending.iter().map(|p| p.namespace.clone()).collect();
            v.sort();
            v.dedup();
            v
        };
        let mut r = Rng(pods);
        let mut all = Vec::new();
        for (i, p) in pending.iter().enumerate() {
            all.push(p.clone());
            if i % 3 == 0 {
                let mut v = variant(&p.pod, &mut r, &namespaces);
                v.metadata.name = Some(format!("{}-v", p.name));
                all.push(PodInfo::new(v, p.seq).expect("variant is valid"));
            }
        }
        let classes: std::collections::HashSet<u64> = all.iter().map(|p| p.equivalence).collect();
        let local: std::collections::HashSet<u64> =
            all.iter().map(|p| p.node_local_class).collect();
        assert!(
            local.len() < classes.len(),
            "{profile:?}: classes share node-local classes"
        );
        let unshared: Vec<PodInfo> = all
            .iter()
            .map(|p| {
                let mut q = p.clone();
                q.node_local_class = q.equivalence;
                q
            })
            .collect();
        for batch in [16usize, 64] {
            let a = run(&snap, all.clone(), batch);
            let b = run(&snap, unshared.clone(), batch);
            assert!(!a.0.is_empty(), "{profile:?}: something placed");
            assert_eq!(a, b, "{profile:?} batch {batch}: shared vs unshared cells");
        }
    }
}
