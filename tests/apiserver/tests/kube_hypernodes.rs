//! Network-topology-aware gangs through the API (issue 12, item 3): Volcano
//! HyperNodes (`topology.volcano.sh/v1alpha1`, cluster-scoped; members by exact
//! name, regex and label) and PodGroup `spec.networkTopology` in `run` and in the
//! extender's gang admission, served and watched by the test API server.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_scheduler::k8s::{Handle, RunOptions, start};
use corral_scheduler::views::{self, ViewFormat};
use corral_test_apiserver::TestApiServer;
use serde_json::{Value, json};

fn node(name: &str, cpu: &str, rack: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "rack": rack}},
        "status": {"allocatable": {"cpu": cpu, "memory": "64Gi", "pods": "110"},
                   "capacity": {"cpu": cpu, "memory": "64Gi", "pods": "110"}}})
}

fn busy(name: &str, cpu: &str, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"schedulerName": "corral", "nodeName": node, "containers": [{"name": "c",
            "image": "img", "resources": {"requests": {"cpu": cpu, "memory": "100Mi"}}}]},
        "status": {"phase": "Running"}})
}

fn member(name: &str, group: &str, cpu: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
            "annotations": {"scheduling.k8s.io/group-name": group}},
        "spec": {"schedulerName": "corral", "containers": [{"name": "c", "image": "img",
            "resources": {"requests": {"cpu": cpu, "memory": "100Mi"}}}]},
        "status": {"phase": "Pending"}})
}

fn group(name: &str, min: u32, mode: &str, tier: i32) -> Value {
    json!({"apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"minMember": min, "queue": "default",
            "networkTopology": {"mode": mode, "highestTierAllowed": tier}}})
}

fn hypernode(name: &str, tier: i32, members: Value) -> Value {
    json!({"apiVersion": "topology.volcano.sh/v1alpha1", "kind": "HyperNode",
        "metadata": {"name": name}, "spec": {"tier": tier, "members": members}})
}

fn exact(nodes: &[&str]) -> Value {
    Value::Array(
        nodes
            .iter()
            .map(|n| json!({"type": "Node", "selector": {"exactMatch": {"name": n}}}))
            .collect(),
    )
}

fn by_label(rack: &str) -> Value {
    json!([{"type": "Node", "selector": {"labelMatch": {"matchLabels": {"rack": rack}}}}])
}

async fn start_sched(server: &TestApiServer) -> Handle {
    start(
        common::client(server).await,
        corral_scheduler::config::default_frameworks(),
        RunOptions::default(),
    )
    .expect("start")
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Nodes the pods named `prefix-*` are bound to (None when one is not bound).
fn nodes_of(server: &TestApiServer, prefix: &str, n: usize) -> Option<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for i in 0..n {
        let p = server.get("", "pods", Some("default"), &format!("{prefix}-{i}"))?;
        let node = p["spec"]["nodeName"].as_str().filter(|s| !s.is_empty())?;
        out.insert(node.to_string());
    }
    Some(out)
}

fn condition(server: &TestApiServer, name: &str) -> (String, String) {
    let st = server
        .get("scheduling.volcano.sh", "podgroups", Some("default"), name)
        .map(|g| g["status"].clone())
        .unwrap_or(Value::Null);
    let c = &st["conditions"][0];
    (
        c["type"].as_str().unwrap_or("").to_string(),
        c["message"].as_str().unwrap_or("").to_string(),
    )
}

fn assert_bound_at_most_once(server: &TestApiServer) {
    for (k, n) in server.bindings() {
        assert!(n <= 1, "{k} bound {n} times");
    }
}

fn insert_all(server: &TestApiServer, objs: impl IntoIterator<Item = Value>) {
    for o in objs {
        server.insert(o).expect("insert");
    }
}

/// Racks of two 8-CPU nodes: rack0 = {r0-a, r0-b} (exact names), rack1 = nodes
/// labelled rack=r1 (tier 1); spine = HyperNodes matching `^rack` (tier 2).
/// r0-a runs a 4-CPU pod.
fn seed_racks(server: &TestApiServer) {
    insert_all(
        server,
        [
            node("r0-a", "8", "r0"),
            node("r0-b", "8", "r0"),
            node("r1-a", "8", "r1"),
            node("r1-b", "8", "r1"),
            busy("busy", "4", "r0-a"),
            hypernode("rack0", 1, exact(&["r0-a", "r0-b"])),
            hypernode("rack1", 1, by_label("r1")),
            hypernode(
                "spine",
                2,
                json!([{"type": "HyperNode", "selector": {"regexMatch": {"pattern": "^rack"}}}]),
            ),
        ],
    );
}

/// `run`: a hard gang lands inside one lowest-tier HyperNode that holds it (the
/// fuller one, where kube-style scoring alone would spread it onto the empty
/// rack); a gang no tier-1 HyperNode holds stays pending with a condition naming
/// each HyperNode and why; HyperNode add/update/delete through the API changes the
/// next decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_places_hard_gangs_inside_one_hypernode_and_follows_hypernode_changes() {
    let server = TestApiServer::start().await.expect("server");
    seed_racks(&server);
    insert_all(&server, [group("train", 3, "hard", 1)]);
    insert_all(
        &server,
        (0..3).map(|i| member(&format!("train-{i}"), "train", "4")),
    );
    let h = start_sched(&server).await;
    wait_for("train bound", Duration::from_secs(30), || {
        nodes_of(&server, "train", 3).is_some()
    })
    .await;
    let nodes = nodes_of(&server, "train", 3).expect("bound");
    assert!(
        nodes.iter().all(|n| n.starts_with("r0-")),
        "train crossed rack0: {nodes:?}"
    );

    // 5 x 4 CPU: rack0 has 0 free, rack1 16; the spine (tier 2) is not allowed.
    insert_all(&server, [group("big", 5, "hard", 1)]);
    insert_all(
        &server,
        (0..5).map(|i| member(&format!("big-{i}"), "big", "4")),
    );
    wait_for("big Unschedulable", Duration::from_secs(30), || {
        condition(&server, "big")
            .1
            .contains("no HyperNode can hold the gang")
    })
    .await;
    let (ty, msg) = condition(&server, "big");
    assert_eq!(ty, "Unschedulable", "{msg}");
    assert!(
        msg.starts_with("network topology (hard, tier <= 1): no HyperNode can hold the gang: ")
            && msg.contains("rack0 (tier 1): free capacity below the gang's minimum (cpu 0 < 20)")
            && msg.contains("rack1 (tier 1): free capacity below the gang's minimum (cpu 16 < 20)")
            && !msg.contains("spine"),
        "{msg}"
    );
    // `corral-scheduler explain` on a member names the PodGroup, each HyperNode
    // and why it cannot hold the gang (the session run on a live snapshot, which
    // lists the HyperNodes as `run` watches them).
    let c = common::client(&server).await;
    let t = views::explain(c.clone(), "default/big-0", None, ViewFormat::Table)
        .await
        .expect("explain");
    let gang = t
        .lines()
        .find(|l| l.contains("gang default/big"))
        .unwrap_or("");
    assert!(
        gang.contains("(Inqueue)")
            && gang.contains("rack0 (tier 1): free capacity below the gang's minimum (cpu 0 < 20)")
            && gang
                .contains("rack1 (tier 1): free capacity below the gang's minimum (cpu 16 < 20)"),
        "{t}"
    );
    let j: Value = serde_json::from_str(
        &views::explain(c, "default/big-0", None, ViewFormat::Json)
            .await
            .expect("json"),
    )
    .expect("json");
    assert_eq!(j["gang"]["podGroup"], "default/big", "{j}");
    assert!(
        j["gang"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no HyperNode can hold the gang")),
        "{j}"
    );

    // Two 12-CPU nodes of rack r2: in no HyperNode yet, then in one of tier 2 (not
    // allowed): big keeps waiting.
    insert_all(
        &server,
        [
            node("r2-a", "12", "r2"),
            node("r2-b", "12", "r2"),
            hypernode("rack2", 2, by_label("r2")),
        ],
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        nodes_of(&server, "big", 1).is_none(),
        "big bound outside tier 1"
    );
    assert!(server.bindings().keys().all(|k| !k.contains("big")));
    // Updated to tier 1: big lands in rack2.
    insert_all(&server, [hypernode("rack2", 1, by_label("r2"))]);
    wait_for("big bound in rack2", Duration::from_secs(30), || {
        nodes_of(&server, "big", 5).is_some()
    })
    .await;
    let nodes = nodes_of(&server, "big", 5).expect("bound");
    assert!(nodes.iter().all(|n| n.starts_with("r2-")), "{nodes:?}");

    // rack1 deleted: a gang of 2 x 4 CPU, which rack1 would hold, has nowhere to go
    // (rack0 0 free, rack2 4 free) and the condition no longer names rack1.
    assert!(server.delete("topology.volcano.sh", "hypernodes", None, "rack1"));
    // (The deletion and the new PodGroup come through different watches.)
    tokio::time::sleep(Duration::from_millis(2000)).await;
    insert_all(&server, [group("mid", 2, "hard", 1)]);
    insert_all(
        &server,
        (0..2).map(|i| member(&format!("mid-{i}"), "mid", "4")),
    );
    wait_for("mid Unschedulable", Duration::from_secs(30), || {
        condition(&server, "mid")
            .1
            .contains("no HyperNode can hold the gang")
    })
    .await;
    let (_, msg) = condition(&server, "mid");
    assert!(
        msg.contains("rack0 (tier 1)") && msg.contains("rack2 (tier 1)") && !msg.contains("rack1"),
        "{msg}"
    );
    assert!(nodes_of(&server, "mid", 1).is_none());
    assert_bound_at_most_once(&server);
    h.stop();
}

/// `run`, soft mode: a gang one HyperNode holds goes inside it (the fuller rack);
/// one that no HyperNode holds is still placed, across racks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_soft_gangs_prefer_one_hypernode_but_may_cross() {
    let server = TestApiServer::start().await.expect("server");
    seed_racks(&server);
    insert_all(&server, [group("s1", 2, "soft", 1)]);
    insert_all(
        &server,
        (0..2).map(|i| member(&format!("s1-{i}"), "s1", "4")),
    );
    let h = start_sched(&server).await;
    wait_for("s1 bound", Duration::from_secs(30), || {
        nodes_of(&server, "s1", 2).is_some()
    })
    .await;
    let nodes = nodes_of(&server, "s1", 2).expect("bound");
    assert!(nodes.iter().all(|n| n.starts_with("r0-")), "{nodes:?}");
    // 20 CPU: rack0 has 4 free, rack1 16: no rack holds it, the soft gang spans both.
    insert_all(&server, [group("s2", 5, "soft", 1)]);
    insert_all(
        &server,
        (0..5).map(|i| member(&format!("s2-{i}"), "s2", "4")),
    );
    wait_for("s2 bound", Duration::from_secs(30), || {
        nodes_of(&server, "s2", 5).is_some()
    })
    .await;
    let nodes = nodes_of(&server, "s2", 5).expect("bound");
    assert!(
        nodes.iter().any(|n| n.starts_with("r0-")) && nodes.iter().any(|n| n.starts_with("r1-")),
        "{nodes:?}"
    );
    assert_bound_at_most_once(&server);
    h.stop();
}

/// The extender admits a hard gang's members only on nodes of the HyperNode its
/// dry run chose, rejects a gang no HyperNode holds naming the HyperNodes, and
/// follows HyperNodes created through the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extender_plans_gangs_inside_watched_hypernodes() {
    use corral_scheduler::extender::{Extender, ExtenderArgs};
    let server = TestApiServer::start().await.expect("server");
    seed_racks(&server);
    let ext_member = |name: &str, group: &str| {
        let mut p = member(name, group, "4");
        p["spec"]["schedulerName"] = json!("default-scheduler");
        p
    };
    insert_all(
        &server,
        [group("pg", 3, "hard", 1), group("big", 5, "hard", 1)],
    );
    insert_all(
        &server,
        (0..3).map(|i| ext_member(&format!("pg-{i}"), "pg")),
    );
    insert_all(
        &server,
        (0..5).map(|i| ext_member(&format!("big-{i}"), "big")),
    );
    let fw = corral_scheduler::config::default_frameworks()
        .into_iter()
        .next()
        .expect("profile");
    let mut ext = Extender::new(fw);
    let c = common::client(&server).await;
    ext.client = Some(c.clone());
    ext.gangs.lock().expect("gangs").active = true;
    let ext = Arc::new(ext);
    let mut tasks = corral_scheduler::extender::cache::spawn_snapshot_cache(c.clone(), ext.clone());
    tasks.extend(corral_scheduler::extender::cache::spawn_gang_watches(
        c,
        ext.clone(),
    ));
    let all = ["r0-a", "r0-b", "r1-a", "r1-b"];
    let filter = |pod: &str, group: &str| {
        let pod: k8s_openapi::api::core::v1::Pod =
            serde_json::from_value(ext_member(pod, group)).expect("pod");
        let args = ExtenderArgs {
            pod: Some(pod),
            nodes: None,
            nodenames: Some(all.iter().map(|s| s.to_string()).collect()),
        };
        serde_json::to_value(ext.filter(args)).expect("json")
    };
    // pg (12 CPU) fits rack0 (12 free, the fuller) and rack1: planned in rack0.
    wait_for("pg admitted", Duration::from_secs(30), || {
        filter("pg-0", "pg")["nodenames"]
            .as_array()
            .is_some_and(|a| a.len() == 1)
    })
    .await;
    for i in 0..3 {
        let v = filter(&format!("pg-{i}"), "pg");
        let n = v["nodenames"][0].as_str().unwrap_or("");
        assert!(n.starts_with("r0-"), "pg-{i} planned on {v}");
    }
    // big (20 CPU) fits no tier-1 HyperNode: rejected on every node, naming them.
    wait_for(
        "big rejected naming the HyperNodes",
        Duration::from_secs(30),
        || {
            filter("big-0", "big")["failedNodes"]["r1-a"]
                .as_str()
                .is_some_and(|m| m.contains("rack0 (tier 1)") && m.contains("rack1 (tier 1)"))
        },
    )
    .await;
    let v = filter("big-0", "big");
    let m = v["failedNodes"]["r1-a"].as_str().unwrap_or("");
    assert!(
        m.starts_with(
            "gang default/big cannot be placed as a whole: network topology (hard, tier <= 1)"
        ),
        "{m}"
    );
    // A tier-1 HyperNode over all four nodes (regex over node names) holds it.
    insert_all(
        &server,
        [hypernode(
            "row",
            1,
            json!([{"type": "Node", "selector": {"regexMatch": {"pattern": "^r[01]-"}}}]),
        )],
    );
    wait_for(
        "big admitted after the HyperNode appears",
        Duration::from_secs(30),
        || {
            filter("big-0", "big")["nodenames"]
                .as_array()
                .is_some_and(|a| a.len() == 1)
        },
    )
    .await;
    for t in tasks {
        t.abort();
    }
}
