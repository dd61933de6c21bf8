//! Volcano conformance (issue 12): Volcano's own action and plugin unit-test scenarios,
//! transcribed as data under `tests/conformance/volcano/*.yaml` (objects in,
//! expected binds/evictions out), each run through `corral-scheduler simulate` with
//! a volcano-scheduler.conf holding the test's tiers and action. Prints
//! `volcano conformance: P/T`. A case marked `differs: <reason>` is one Corral
//! deliberately decides differently (listed in docs/USAGE.md); every other case
//! must pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Suite {
    source: String,
    actions: String,
    plugins: Vec<String>,
    tiers: Vec<Tier>,
    #[serde(rename = "priorityClasses")]
    priority_classes: BTreeMap<String, Value>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Tier {
    plugins: Vec<BTreeMap<String, Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    plugins: Option<Vec<String>>,
    /// The case's own tiers (Volcano tests that configure plugins per case);
    /// replaces the suite's.
    tiers: Option<Vec<Tier>>,
    #[serde(rename = "priorityClasses")]
    priority_classes: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    podgroups: Vec<Value>,
    #[serde(default)]
    pods: Vec<Value>,
    #[serde(default)]
    nodes: Vec<Value>,
    #[serde(default)]
    queues: Vec<Value>,
    expect: Expect,
    differs: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    evicted: Option<Vec<String>>,
    #[serde(rename = "evictNum")]
    evict_num: Option<usize>,
    binds: Option<BTreeMap<String, String>>,
    #[serde(rename = "bindNum")]
    bind_num: Option<usize>,
    /// PodGroup phases (`ns/name` → phase).
    phases: Option<BTreeMap<String, String>>,
    /// Preemptors pipelined onto the node their victims free (`ns/pod` → node).
    pipelined: Option<BTreeMap<String, String>>,
}

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(|x| x.as_str()).map(String::from)
}

fn resources(v: &Value) -> Value {
    let mut r = serde_json::Map::new();
    for k in [
        "cpu",
        "memory",
        "pods",
        "ephemeral-storage",
        "nvidia.com/gpu",
    ] {
        if let Some(q) = s(v, k) {
            r.insert(k.into(), json!(q));
        }
    }
    Value::Object(r)
}

/// The case's objects as Kubernetes manifests.
fn manifests(suite: &Suite, c: &Case) -> Vec<Value> {
    let mut out = Vec::new();
    let pcs = c
        .priority_classes
        .as_ref()
        .unwrap_or(&suite.priority_classes);
    for (name, v) in pcs {
        let (value, policy) = match v {
            Value::Object(_) => (v["value"].clone(), s(v, "preemptionPolicy")),
            _ => (v.clone(), None),
        };
        let mut pc = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value});
        if let Some(p) = policy {
            pc["preemptionPolicy"] = json!(p);
        }
        out.push(pc);
    }
    for n in &c.nodes {
        let alloc = resources(n);
        out.push(json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": n["name"], "labels": n.get("labels").cloned().unwrap_or(json!({}))},
            "status": {"allocatable": alloc, "capacity": alloc}}));
    }
    for q in &c.queues {
        let mut spec = json!({"weight": q["weight"]});
        if let Some(cap) = q.get("capability") {
            spec["capability"] = cap.clone();
        }
        if let Some(p) = q.get("priority") {
            spec["priority"] = p.clone();
        }
        let mut obj = json!({"apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "Queue",
            "metadata": {"name": q["name"]}, "spec": spec});
        if let Some(st) = q.get("state") {
            obj["status"] = json!({"state": st});
        }
        out.push(obj);
    }
    for g in &c.podgroups {
        let mut spec = json!({"queue": g["queue"], "minMember": g["minMember"]});
        if let Some(m) = g.get("minTaskMember") {
            spec["minTaskMember"] = m.clone();
        }
        if let Some(p) = g.get("priorityClassName") {
            spec["priorityClassName"] = p.clone();
        }
        if let Some(m) = g.get("minResources") {
            spec["minResources"] = m.clone();
        }
        out.push(
            json!({"apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
            "metadata": {"name": g["name"], "namespace": g["ns"]},
            "spec": spec, "status": {"phase": g["phase"]}}),
        );
    }
    for p in &c.pods {
        let mut spec = json!({"schedulerName": "volcano",
            "containers": [{"name": "c", "image": "i", "resources": {"requests": resources(p)}}]});
        if let Some(n) = p.get("node") {
            spec["nodeName"] = n.clone();
        }
        if let Some(sel) = p.get("selector") {
            spec["nodeSelector"] = sel.clone();
        }
        if let Some(pr) = p.get("priority") {
            spec["priority"] = pr.clone();
        }
        if let Some(pp) = p.get("preemptionPolicy") {
            spec["preemptionPolicy"] = pp.clone();
        }
        let running = p.get("node").is_some();
        out.push(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": p["name"], "namespace": p["ns"],
                "labels": p.get("labels").cloned().unwrap_or(json!({})),
                "annotations": {"scheduling.k8s.io/group-name": p["group"]}},
            "spec": spec,
            "status": {"phase": if running { "Running" } else { "Pending" }}}));
    }
    out
}

/// volcano-scheduler.conf: the suite's tiers restricted to the case's plugins.
fn conf(suite: &Suite, c: &Case) -> String {
    if let Some(tiers) = &c.tiers {
        let tiers: Vec<Value> = tiers
            .iter()
            .map(|t| json!({"plugins": t.plugins}))
            .collect();
        return serde_json::to_string(&json!({"actions": suite.actions, "tiers": tiers}))
            .expect("json");
    }
    let plugins = c.plugins.as_ref().unwrap_or(&suite.plugins);
    let tiers: Vec<Value> = suite
        .tiers
        .iter()
        .map(|t| {
            let ps: Vec<&BTreeMap<String, Value>> = t
                .plugins
                .iter()
                .filter(|p| {
                    p.get("name")
                        .and_then(|n| n.as_str())
                        .is_some_and(|n| plugins.iter().any(|x| x == n))
                })
                .collect();
            json!({"plugins": ps})
        })
        .collect();
    serde_json::to_string(&json!({"actions": suite.actions, "tiers": tiers})).expect("json")
}

/// Runs one case; Err(why) when Corral decides differently.
fn run_case(dir: &Path, suite: &Suite, c: &Case, i: usize) -> Result<(), String> {
    let docs: Vec<String> = manifests(suite, c)
        .iter()
        .map(|m| serde_json::to_string(m).expect("json"))
        .collect();
    let cluster = dir.join(format!("case-{i}.yaml"));
    std::fs::write(&cluster, docs.join("\n---\n")).expect("write cluster");
    let cfg = dir.join(format!("case-{i}.conf"));
    std::fs::write(&cfg, conf(suite, c)).expect("write conf");
    let out = Command::new(env!("CARGO_BIN_EXE_corral-scheduler"))
        .arg("simulate")
        .arg(&cluster)
        .args(["--output", "json", "--config"])
        .arg(&cfg)
        .output()
        .expect("run corral-scheduler");
    if !out.status.success() {
        return Err(format!(
            "exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("json: {e}"))?;
    let mut evicted: Vec<String> = v["evictions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["pod"].as_str().map(String::from))
        .collect();
    evicted.sort();
    let binds: BTreeMap<String, String> = v["placements"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p["pod"].as_str()?.to_string(),
                p["node"].as_str()?.to_string(),
            ))
        })
        .collect();
    let e = &c.expect;
    if let Some(n) = e.evict_num
        && evicted.len() != n
    {
        return Err(format!("evictions {evicted:?}, want {n}"));
    }
    if let Some(want) = &e.evicted {
        let mut want = want.clone();
        want.sort();
        if want != evicted {
            return Err(format!("evicted {evicted:?}, want {want:?}"));
        }
    }
    if let Some(n) = e.bind_num
        && binds.len() != n
    {
        return Err(format!("binds {binds:?}, want {n}"));
    }
    if let Some(want) = &e.binds
        && *want != binds
    {
        return Err(format!("binds {binds:?}, want {want:?}"));
    }
    if let Some(want) = &e.pipelined {
        let got: BTreeMap<String, String> = v["nominated"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p["pod"].as_str()?.to_string(),
                    p["node"].as_str()?.to_string(),
                ))
            })
            .collect();
        if got != *want {
            return Err(format!("pipelined {got:?}, want {want:?}"));
        }
    }
    if let Some(want) = &e.phases {
        let got: BTreeMap<String, String> = v["podgroups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| {
                Some((
                    g["name"].as_str()?.to_string(),
                    g["phase"].as_str()?.to_string(),
                ))
            })
            .filter(|(k, _)| want.contains_key(k))
            .collect();
        if got != *want {
            return Err(format!("phases {got:?}, want {want:?}"));
        }
    }
    Ok(())
}

#[test]
fn volcano_conformance() {
    let dir = root().join("tests/conformance/volcano");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/conformance/volcano")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut pass, mut total) = (0, 0);
    let mut unexpected = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read suite");
        let suite: Suite =
            serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for (i, c) in suite.cases.iter().enumerate() {
            total += 1;
            let sub = tmp.path().join(format!("{}-{i}", total));
            std::fs::create_dir_all(&sub).expect("mkdir");
            let r = run_case(&sub, &suite, c, i);
            let tag = format!("{} / {}", suite.source, c.name);
            match (&r, &c.differs) {
                (Ok(()), None) => {
                    pass += 1;
                    println!("PASS {tag}");
                }
                (Ok(()), Some(_)) => {
                    pass += 1;
                    unexpected.push(format!("{tag}: passes but is marked `differs`"));
                }
                (Err(e), Some(why)) => println!("DIFFERS {tag}: {e} (documented: {why})"),
                (Err(e), None) => {
                    println!("FAIL {tag}: {e}");
                    unexpected.push(format!("{tag}: {e}"));
                }
            }
        }
    }
    println!("volcano conformance: {pass}/{total}");
    if std::env::var_os("CORRAL_CONFORMANCE_KEEP").is_some() {
        println!("case files kept in {}", tmp.keep().display());
    }
    assert!(unexpected.is_empty(), "{}", unexpected.join("\n"));
}
