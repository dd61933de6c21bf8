//! Session scenario tests: gangs, fair share, preemption/reclaim, protection,
//! backfill, bad objects, and a property test of the session invariants.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::json;

use super::SessionReport as Report;
use super::objects::{ANN_GROUP_NAME, ANN_QUEUE_NAME, ANN_TASK_SPEC, EXTRA_KINDS};
use super::session::{Action, SessionConfig};
use super::{BatchObjects, run_sessions};
use crate::input::load_str;
use crate::scheduler::{Options, Scheduler};
use crate::snapshot::{NodeInfo, PodInfo, Snapshot};
use crate::testutil::{PodBuilder, node, pod};
use corral_engine::config::default_frameworks;

/// 2026-01-01T12:00:00Z
const NOW: i64 = 1_767_268_800;

struct Case {
    nodes: Vec<NodeInfo>,
    running: Vec<(PodInfo, String)>,
    pending: Vec<PodInfo>,
    yaml: String,
    cfg: SessionConfig,
    seq: u64,
}

impl Case {
    fn new(nodes: usize, cpu: &str) -> Case {
        let mut c = Case {
            nodes: Vec::new(),
            running: Vec::new(),
            pending: Vec::new(),
            yaml: String::new(),
            cfg: SessionConfig {
                now: Some(NOW),
                ..SessionConfig::default()
            },
            seq: 0,
        };
        for i in 0..nodes {
            c.nodes
                .push(node(&format!("n{i}")).cpu(cpu).mem("64Gi").info());
        }
        c
    }
    fn objects(mut self, y: &str) -> Case {
        self.yaml.push_str("---\n");
        self.yaml.push_str(y);
        self.yaml.push('\n');
        self
    }
    fn pend(&mut self, b: PodBuilder) {
        self.seq += 1;
        self.pending.push(b.seq(self.seq).info());
    }
    fn run_on(&mut self, b: PodBuilder, node: &str) {
        self.seq += 1;
        let b = b.node_name(node);
        self.running
            .push((b.seq(self.seq).info(), node.to_string()));
    }
    fn objs(&self) -> BatchObjects {
        let inp = load_str(
            &format!(
                "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {{name: high}}\nvalue: 1000\n{}",
                self.yaml
            ),
            "case.yaml",
            EXTRA_KINDS,
        )
        .expect("valid yaml");
        BatchObjects::parse(&inp.other, &inp.priority_classes)
    }
    fn run(&self, cycles: usize) -> (Report, Scheduler) {
        let mut snap = Snapshot::new();
        for n in &self.nodes {
            snap.upsert_node(n.clone());
        }
        for (p, n) in &self.running {
            snap.add_pod(Arc::new(p.clone()), n);
        }
        // Fixed batches of 64 (no latency budget): tests count core batches.
        let opts = Options {
            latency_budget: None,
            ..Options::default()
        };
        let sched = Scheduler::new(default_frameworks(), snap, opts);
        run_sessions(sched, self.pending.clone(), &self.objs(), &self.cfg, cycles).expect("session")
    }
}

fn ann(mut b: PodBuilder, k: &str, v: &str) -> PodBuilder {
    b.0["metadata"]["annotations"][k] = json!(v);
    b
}

fn member(name: &str, group: &str, cpu: &str) -> PodBuilder {
    ann(pod(name).cpu(cpu), ANN_GROUP_NAME, group)
}

fn in_queue(name: &str, queue: &str, cpu: &str) -> PodBuilder {
    ann(pod(name).cpu(cpu), ANN_QUEUE_NAME, queue)
}

fn started(mut b: PodBuilder, t: &str) -> PodBuilder {
    b.0["status"]["startTime"] = json!(t);
    b.0["status"]["phase"] = json!("Running");
    b
}

fn pg(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: scheduling.volcano.sh/v1beta1\nkind: PodGroup\nmetadata: {{name: {name}, namespace: default}}\nspec: {spec}\n"
    )
}

fn queue(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: scheduling.volcano.sh/v1beta1\nkind: Queue\nmetadata: {{name: {name}}}\nspec: {spec}\n"
    )
}

fn placed(r: &Report, prefix: &str) -> usize {
    r.placements
        .iter()
        .filter(|p| p.pod.starts_with(&format!("default/{prefix}")))
        .count()
}

fn group<'a>(r: &'a Report, name: &str) -> &'a super::PodGroupStatus {
    r.podgroups
        .iter()
        .find(|g| g.name == format!("default/{name}"))
        .unwrap_or_else(|| panic!("podgroup {name} in {:?}", r.podgroups))
}

fn queue_alloc(r: &Report, name: &str, res: &str) -> i64 {
    r.queues
        .iter()
        .find(|q| q.name == name)
        .map(|q| q.allocated.get(res))
        .unwrap_or_else(|| panic!("queue {name}"))
}

#[test]
fn gang_with_capacity_for_n_minus_1_binds_nothing_and_frees_capacity() {
    let mut c = Case::new(4, "1")
        .objects(&pg("big", "{minMember: 5}"))
        .objects(&pg("small", "{minMember: 4}"));
    for i in 0..5 {
        c.pend(member(&format!("big-{i}"), "big", "1"));
    }
    for i in 0..4 {
        c.pend(member(&format!("small-{i}"), "small", "1"));
    }
    let (r, s) = c.run(1);
    assert_eq!(placed(&r, "big"), 0, "{:?}", r.placements);
    assert_eq!(placed(&r, "small"), 4, "{:?}", r.unschedulable);
    assert_eq!(
        s.snapshot.num_pods(),
        4,
        "nothing of the failed gang is left behind"
    );
    let g = group(&r, "big");
    assert_eq!(g.phase, "Inqueue");
    assert_eq!(
        g.message,
        "1/5 tasks in gang unschedulable: 0/4 nodes are available: 4 Insufficient cpu."
    );
    assert_eq!(group(&r, "small").phase, "Running");
}

#[test]
fn gang_message_aggregates_reasons() {
    let mut c = Case::new(0, "1").objects(&pg("train", "{minMember: 5}"));
    for i in 0..10 {
        let mut b = node(&format!("g{i}")).cpu("8").mem("64Gi");
        if i < 2 {
            b = b.alloc("nvidia.com/gpu", "1");
        }
        c.nodes.push(b.info());
    }
    for i in 0..5 {
        c.pend(member(&format!("t-{i}"), "train", "1").req("nvidia.com/gpu", "1"));
    }
    let (r, _) = c.run(1);
    assert_eq!(placed(&r, "t-"), 0);
    assert_eq!(
        group(&r, "train").message,
        "3/5 tasks in gang unschedulable: 0/10 nodes are available: 10 Insufficient nvidia.com/gpu."
    );
    assert!(
        r.unschedulable
            .iter()
            .all(|u| u.message.starts_with("3/5 tasks in gang unschedulable")),
        "{:?}",
        r.unschedulable
    );
}

#[test]
fn min_task_member_per_role() {
    let build = |ps_fits: bool| {
        let mut c = Case::new(4, "1").objects(&pg(
            "job",
            "{minMember: 2, minTaskMember: {ps: 1, worker: 1}}",
        ));
        for i in 0..3 {
            c.pend(ann(
                member(&format!("w{i}"), "job", "1"),
                ANN_TASK_SPEC,
                "worker",
            ));
        }
        let mut ps = ann(member("ps", "job", "1"), ANN_TASK_SPEC, "ps");
        if !ps_fits {
            ps = ps.req("example.com/ps-slot", "1");
        }
        c.pend(ps);
        c.run(1).0
    };
    let r = build(false);
    assert_eq!(
        r.placements.len(),
        0,
        "workers alone do not make the job ready"
    );
    assert!(
        group(&r, "job")
            .message
            .contains("1/4 tasks in gang unschedulable"),
        "{:?}",
        group(&r, "job")
    );
    let r = build(true);
    assert_eq!(r.placements.len(), 4);
}

#[test]
fn min_resources_gate_enqueue_and_readiness() {
    // Placeable pods that do not add up to minResources: nothing binds.
    let mut c = Case::new(4, "1").objects(&pg("g", "{minMember: 1, minResources: {cpu: \"3\"}}"));
    c.pend(member("g-0", "g", "1"));
    c.pend(member("g-1", "g", "1"));
    let (r, _) = c.run(1);
    assert_eq!(r.placements.len(), 0);
    assert!(
        group(&r, "g").message.contains("minResources"),
        "{:?}",
        group(&r, "g")
    );
    // minResources above idle x 1.2: stays Pending at enqueue.
    let mut c =
        Case::new(4, "1").objects(&pg("huge", "{minMember: 1, minResources: {cpu: \"5\"}}"));
    c.pend(member("huge-0", "huge", "1"));
    c.pend(pod("free").cpu("1"));
    let (r, _) = c.run(1);
    let g = group(&r, "huge");
    assert_eq!(g.phase, "Pending");
    assert!(g.message.contains("cluster idle resources x 1.2"), "{g:?}");
    assert_eq!(
        placed(&r, "free"),
        1,
        "the rest of the cluster still schedules"
    );
}

#[test]
fn namespace_quota_is_respected_at_enqueue() {
    let mut c = Case::new(4, "4")
        .objects(&pg("g", "{minMember: 2, minResources: {cpu: \"4\"}}"))
        .objects("apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: team, namespace: default}\nspec: {hard: {requests.cpu: \"3\"}}\n");
    c.pend(member("g-0", "g", "2"));
    c.pend(member("g-1", "g", "2"));
    let (r, _) = c.run(1);
    assert_eq!(r.placements.len(), 0);
    let g = group(&r, "g");
    assert_eq!(g.phase, "Pending");
    assert!(g.message.contains("exceeded quota: team"), "{g:?}");
}

#[test]
fn fair_share_one_to_three_converges_to_25_75() {
    let mut c = Case::new(10, "10")
        .objects(&queue("a", "{weight: 1}"))
        .objects(&queue("b", "{weight: 3}"));
    for i in 0..100 {
        c.pend(in_queue(&format!("a-{i}"), "a", "1"));
        c.pend(in_queue(&format!("b-{i}"), "b", "1"));
    }
    let (r, _) = c.run(1);
    let (a, b) = (queue_alloc(&r, "a", "cpu"), queue_alloc(&r, "b", "cpu"));
    assert!((a - 25_000).abs() <= 1000, "a={a}");
    assert!((b - 75_000).abs() <= 1000, "b={b}");
    let qa = r.queues.iter().find(|q| q.name == "a").unwrap();
    assert_eq!(qa.deserved.get("cpu"), 25_000);
}

#[test]
fn capability_caps_a_queue() {
    let mut c = Case::new(4, "10")
        .objects(&queue("a", "{weight: 3, capability: {cpu: \"10\"}}"))
        .objects(&queue("b", "{weight: 1}"));
    for i in 0..60 {
        c.pend(in_queue(&format!("a-{i}"), "a", "1"));
        c.pend(in_queue(&format!("b-{i}"), "b", "1"));
    }
    let (r, _) = c.run(1);
    assert_eq!(queue_alloc(&r, "a", "cpu"), 10_000);
    assert_eq!(queue_alloc(&r, "b", "cpu"), 30_000, "{:?}", r.queues);
}

#[test]
fn hierarchical_shares() {
    let mut c = Case::new(8, "10")
        .objects(&queue("dept", "{weight: 1}"))
        .objects(&queue("team1", "{weight: 1, parent: dept}"))
        .objects(&queue("team2", "{weight: 3, parent: dept}"))
        .objects(&queue("other", "{weight: 1}"));
    for i in 0..80 {
        for q in ["team1", "team2", "other"] {
            c.pend(in_queue(&format!("{q}-{i}"), q, "1"));
        }
    }
    let (r, _) = c.run(1);
    let got: HashMap<&str, i64> = ["dept", "team1", "team2", "other"]
        .into_iter()
        .map(|q| (q, queue_alloc(&r, q, "cpu")))
        .collect();
    assert!((got["other"] - 40_000).abs() <= 1000, "{got:?}");
    assert!((got["team1"] - 10_000).abs() <= 1000, "{got:?}");
    assert!((got["team2"] - 30_000).abs() <= 1000, "{got:?}");
    assert_eq!(got["dept"], got["team1"] + got["team2"]);
}

#[test]
fn preemption_is_minimal_and_lowest_priority() {
    // The gang's priority is its PriorityClass's (1000): never a victim of p.
    let mut c = Case::new(2, "4").objects(&pg("g", "{minMember: 2, priorityClassName: high}"));
    for i in 0..3 {
        c.run_on(member(&format!("g-{i}"), "g", "1").priority(10), "n0");
    }
    c.run_on(pod("x").cpu("1").priority(5), "n0");
    c.run_on(pod("y1").cpu("2").priority(1), "n1");
    c.run_on(pod("y2").cpu("2").priority(2), "n1");
    c.pend(pod("p").cpu("1").priority(100));
    let (r, _) = c.run(2);
    assert_eq!(r.evictions.len(), 1, "{:?}", r.evictions);
    assert_eq!(r.evictions[0].pod, "default/y1");
    assert_eq!(r.evictions[0].preemptor, "default/p");
    assert!(
        r.evictions[0].reason.contains("preempted"),
        "{:?}",
        r.evictions
    );
    assert_eq!(placed(&r, "p"), 1, "bound in the second session");
}

#[test]
fn preemption_is_gang_aware() {
    // Evicting one of three keeps the gang at minMember 2: only one goes.
    let mut c = Case::new(1, "4").objects(&pg("g", "{minMember: 2}"));
    for i in 0..3 {
        c.run_on(member(&format!("g-{i}"), "g", "1").priority(1), "n0");
    }
    c.run_on(pod("x").cpu("1").priority(5), "n0");
    c.pend(pod("p").cpu("1").priority(100));
    let (r, _) = c.run(1);
    assert_eq!(r.evictions.len(), 1, "{:?}", r.evictions);
    assert!(r.evictions[0].pod.starts_with("default/g-"));
    assert_eq!(group(&r, "g").phase, "Running");

    // minMember 3: any eviction breaks the gang, so the whole gang goes (3 pods)
    // rather than x plus the whole gang, and never a partial gang.
    let mut c = Case::new(1, "4").objects(&pg("g", "{minMember: 3}"));
    for i in 0..3 {
        c.run_on(member(&format!("g-{i}"), "g", "1").priority(1), "n0");
    }
    c.run_on(pod("x").cpu("1").priority(5), "n0");
    c.pend(pod("p").cpu("2").priority(100));
    let (r, _) = c.run(1);
    let mut ev: Vec<&str> = r.evictions.iter().map(|e| e.pod.as_str()).collect();
    ev.sort();
    assert_eq!(ev, ["default/g-0", "default/g-1", "default/g-2"]);
    assert!(r.evictions.iter().any(|e| e.reason.contains("whole gang")));
}

#[test]
fn protected_and_young_pods_survive() {
    let scenario = |b_start: &str| {
        let mut c = Case::new(1, "2");
        c.run_on(
            ann(
                pod("a").cpu("1").priority(1),
                "corral.io/preemptable",
                "false",
            ),
            "n0",
        );
        c.run_on(
            started(
                ann(pod("b").cpu("1").priority(1), "corral.io/min-runtime", "6h"),
                b_start,
            ),
            "n0",
        );
        c.pend(pod("p").cpu("1").priority(100));
        c.run(1).0
    };
    let r = scenario("2026-01-01T11:00:00Z"); // 1h old
    assert!(r.evictions.is_empty(), "{:?}", r.evictions);
    assert!(r.unschedulable.iter().any(|u| u.pod == "default/p"));
    let r = scenario("2026-01-01T05:00:00Z"); // 7h old
    assert_eq!(r.evictions.len(), 1);
    assert_eq!(r.evictions[0].pod, "default/b");

    let mut c = Case::new(1, "1");
    c.run_on(
        ann(pod("v").cpu("1"), "volcano.sh/preemptable", "false"),
        "n0",
    );
    c.pend(pod("p").cpu("1").priority(100));
    assert!(c.run(1).0.evictions.is_empty());
}

#[test]
fn preemption_policy_never_waits() {
    let mut c = Case::new(1, "1");
    c.run_on(pod("low").cpu("1"), "n0");
    c.pend(
        pod("p")
            .cpu("1")
            .priority(100)
            .spec("preemptionPolicy", json!("Never")),
    );
    assert!(c.run(1).0.evictions.is_empty());
}

#[test]
fn terminating_and_unevictable_pods_are_never_victims_and_a_waiting_preemptor_waits() {
    // n0: a low pod already terminating; n1: a low pod running.
    let mut c = Case::new(2, "1");
    let mut dying = pod("dying").cpu("1");
    dying.0["metadata"]["deletionTimestamp"] = json!("2026-01-01T11:59:00Z");
    c.run_on(dying, "n0");
    c.run_on(pod("low").cpu("1"), "n1");
    c.pend(pod("p").cpu("1").priority(100));
    let ev: Vec<String> = c.run(1).0.evictions.iter().map(|e| e.pod.clone()).collect();
    assert_eq!(ev, ["default/low"], "the terminating pod frees nothing new");
    // Nominated to n0 where its earlier victim still terminates: no new victims.
    let mut c2 = Case::new(2, "1");
    let mut dying = pod("dying").cpu("1");
    dying.0["metadata"]["deletionTimestamp"] = json!("2026-01-01T11:59:00Z");
    c2.run_on(dying, "n0");
    c2.run_on(pod("low").cpu("1"), "n1");
    let mut p = pod("p").cpu("1").priority(100);
    p.0["status"]["nominatedNodeName"] = json!("n0");
    c2.pend(p);
    assert!(c2.run(1).0.evictions.is_empty());
}

#[test]
fn no_preemption_when_the_preemptor_still_would_not_fit() {
    let mut c = Case::new(2, "2");
    for i in 0..4 {
        c.run_on(pod(&format!("low-{i}")).cpu("1"), &format!("n{}", i % 2));
    }
    c.pend(pod("big").cpu("3").priority(100));
    let (r, _) = c.run(1);
    assert!(r.evictions.is_empty(), "{:?}", r.evictions);
    // A gang whose second member cannot be placed even after evictions evicts nothing.
    let mut c = Case::new(2, "2").objects(&pg("hp", "{minMember: 2}"));
    for i in 0..4 {
        c.run_on(pod(&format!("low-{i}")).cpu("1"), &format!("n{}", i % 2));
    }
    c.pend(member("hp-0", "hp", "2").priority(100));
    c.pend(
        member("hp-1", "hp", "1")
            .priority(100)
            .req("example.com/none", "1"),
    );
    let (r, _) = c.run(1);
    assert!(r.evictions.is_empty(), "{:?}", r.evictions);
}

#[test]
fn reclaim_takes_back_from_queues_above_deserved() {
    let build = |reclaimable: bool| {
        let mut c = Case::new(2, "2")
            .objects(&queue(
                "a",
                &format!("{{weight: 1, reclaimable: {reclaimable}}}"),
            ))
            .objects(&queue("b", "{weight: 1}"));
        for i in 0..4 {
            c.run_on(
                in_queue(&format!("a-{i}"), "a", "1").priority(50),
                &format!("n{}", i % 2),
            );
        }
        c.pend(in_queue("b-0", "b", "1"));
        c.pend(in_queue("b-1", "b", "1"));
        c.run(2).0
    };
    let r = build(true);
    assert_eq!(r.evictions.len(), 2, "{:?}", r.evictions);
    assert!(
        r.evictions
            .iter()
            .all(|e| e.pod.starts_with("default/a-") && e.reason.contains("reclaimed by queue b"))
    );
    assert_eq!(placed(&r, "b-"), 2, "reclaimers bound in the next session");
    assert_eq!(queue_alloc(&r, "a", "cpu"), 2000);
    let r = build(false);
    assert!(r.evictions.is_empty());
}

#[test]
fn backfill_places_best_effort_pods() {
    let mk = |actions: Option<Vec<Action>>| {
        let mut c = Case::new(1, "1");
        c.run_on(pod("full").cpu("1"), "n0");
        c.pend(pod("be"));
        c.cfg.actions = actions;
        c.run(1).0
    };
    assert_eq!(placed(&mk(None), "be"), 1);
    let r = mk(Some(vec![Action::Enqueue, Action::Allocate]));
    assert_eq!(placed(&r, "be"), 0);
}

#[test]
fn bad_objects_are_reported_and_the_rest_schedules() {
    let c0 = Case::new(2, "4")
        .objects(&pg("lost", "{minMember: 1, queue: nope}"))
        .objects(&queue("q1", "{parent: q2}"))
        .objects(&queue("q2", "{parent: q1}"))
        .objects(&pg("cyc", "{minMember: 1, queue: q1}"))
        .objects(&pg("toobig", "{minMember: 5}"))
        .objects(&pg("neg", "{minMember: -1}"));
    let mut c = c0;
    c.pend(member("lost-0", "lost", "1"));
    c.pend(member("cyc-0", "cyc", "1"));
    c.pend(member("toobig-0", "toobig", "1"));
    c.pend(member("neg-0", "neg", "1"));
    c.pend(pod("ok").cpu("1"));
    let objs = c.objs();
    assert!(
        objs.errors
            .iter()
            .any(|e| e.contains("PodGroup default/neg") && e.contains("minMember")),
        "{:?}",
        objs.errors
    );
    let (r, _) = c.run(1);
    assert_eq!(r.placements.len(), 1);
    assert_eq!(r.placements[0].pod, "default/ok");
    let msg = |p: &str| {
        r.unschedulable
            .iter()
            .find(|u| u.pod == format!("default/{p}"))
            .map(|u| u.message.clone())
            .unwrap_or_default()
    };
    assert!(
        msg("lost-0").contains("queue \"nope\" not found"),
        "{}",
        msg("lost-0")
    );
    assert!(
        msg("cyc-0").contains("cycle in queue parents"),
        "{}",
        msg("cyc-0")
    );
    assert!(
        msg("toobig-0").contains("minMember is 5"),
        "{}",
        msg("toobig-0")
    );
    assert!(
        msg("neg-0").contains("PodGroup default/neg not found"),
        "{}",
        msg("neg-0")
    );
    assert_eq!(group(&r, "toobig").phase, "Pending");
}

#[test]
fn closed_queue_holds_its_jobs_and_default_queue_is_implicit() {
    let mut c = Case::new(1, "4").objects(
        "apiVersion: scheduling.volcano.sh/v1beta1\nkind: Queue\nmetadata: {name: shut}\nstatus: {state: Closed}\n",
    );
    c.pend(in_queue("held", "shut", "1"));
    c.pend(pod("free").cpu("1"));
    let (r, _) = c.run(1);
    assert_eq!(r.placements.len(), 1);
    assert_eq!(r.placements[0].pod, "default/free");
    assert!(
        r.unschedulable[0].message.contains("queue shut is Closed"),
        "{:?}",
        r.unschedulable
    );
    let q = |n: &str| r.queues.iter().find(|q| q.name == n).cloned().unwrap();
    assert_eq!(q("shut").state, "Closed");
    assert_eq!(q("default").allocated.get("cpu"), 1000);
}

#[test]
fn ordinary_pods_keep_batched_evaluation() {
    let mut c = Case::new(50, "16");
    for i in 0..640 {
        c.pend(pod(&format!("p-{i}")).cpu("1"));
    }
    let (r, _) = c.run(1);
    assert_eq!(r.placements.len(), 640);
    assert!(r.stats.batches <= 20, "batches {}", r.stats.batches);
}

#[test]
fn coscheduling_podgroups_by_label() {
    let mut c = Case::new(2, "1").objects(
        "apiVersion: scheduling.x-k8s.io/v1alpha1\nkind: PodGroup\nmetadata: {name: cg, namespace: default}\nspec: {minMember: 3}\n",
    );
    for i in 0..3 {
        c.pend(
            pod(&format!("cg-{i}"))
                .cpu("1")
                .label("scheduling.x-k8s.io/pod-group", "cg"),
        );
    }
    let (r, _) = c.run(1);
    assert_eq!(r.placements.len(), 0);
    assert!(
        group(&r, "cg")
            .message
            .starts_with("1/3 tasks in gang unschedulable")
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn session_invariants(
        nodes in 1usize..5,
        node_cpu in 1u32..5,
        caps in proptest::collection::vec(proptest::option::of(1u32..8), 2),
        jobs in proptest::collection::vec((0usize..2, 1usize..4, 1usize..4, 1u32..3, 0i32..3), 1..6),
    ) {
        let mut c = Case::new(nodes, &node_cpu.to_string());
        for (qi, cap) in caps.iter().enumerate() {
            let spec = match cap {
                Some(cap) => format!("{{weight: {}, capability: {{cpu: \"{cap}\"}}}}", qi + 1),
                None => format!("{{weight: {}}}", qi + 1),
            };
            c = c.objects(&queue(&format!("q{qi}"), &spec));
        }
        for (ji, (q, min, extra, cpu, prio)) in jobs.iter().enumerate() {
            c = c.objects(&pg(&format!("j{ji}"), &format!("{{minMember: {min}, queue: q{q}}}")));
            for t in 0..(min + extra - 1) {
                c.pend(member(&format!("j{ji}-{t}"), &format!("j{ji}"), &cpu.to_string()).priority(*prio));
            }
        }
        let (r, s) = c.run(1);
        // No node overcommitted.
        for n in s.snapshot.nodes() {
            prop_assert!(n.requested.milli_cpu <= n.allocatable.milli_cpu);
        }
        // No queue beyond capability.
        for (qi, cap) in caps.iter().enumerate() {
            if let Some(cap) = cap {
                let name = format!("q{qi}");
                let alloc = queue_alloc(&r, &name, "cpu");
                prop_assert!(alloc <= i64::from(*cap) * 1000, "queue {} allocated {}", name, alloc);
            }
        }
        // No gang below minMember unless entirely pending.
        for (ji, (_, min, _, _, _)) in jobs.iter().enumerate() {
            let prefix = format!("j{ji}-");
            let n = placed(&r, &prefix);
            prop_assert!(n == 0 || n >= *min, "job j{} placed {} < minMember {}", ji, n, min);
        }
    }
}

#[test]
fn small_gangs_share_core_calls_and_a_failed_gang_in_the_middle_leaves_nothing() {
    // 6 nodes x 4 CPU. Gangs g0..g4 of 4 x 1 CPU fit (20 CPU); "wide" (3 x 5 CPU)
    // fits no node and sits between them in job order.
    let mut c = Case::new(6, "4");
    for g in ["g0", "g1", "wide", "g2", "g3", "g4"] {
        c = c.objects(&pg(
            g,
            if g == "wide" {
                "{minMember: 3}"
            } else {
                "{minMember: 4}"
            },
        ));
    }
    for g in ["g0", "g1", "wide", "g2", "g3", "g4"] {
        let (n, cpu) = if g == "wide" { (3, "5") } else { (4, "1") };
        for i in 0..n {
            c.pend(member(&format!("{g}-{i}"), g, cpu));
        }
    }
    let (r, s) = c.run(1);
    assert_eq!(placed(&r, "wide"), 0);
    for g in ["g0", "g1", "g2", "g3", "g4"] {
        assert_eq!(placed(&r, g), 4, "{g}: {:?}", r.unschedulable);
        assert_eq!(group(&r, g).phase, "Running");
    }
    assert_eq!(
        s.snapshot.num_pods(),
        20,
        "nothing of the failed gang stays"
    );
    assert_eq!(
        group(&r, "wide").message,
        "3/3 tasks in gang unschedulable: 0/6 nodes are available: 6 Insufficient cpu."
    );
    assert_eq!(queue_alloc(&r, "default", "cpu"), 20_000);

    // 40 independent 2-pod gangs are settled in a handful of core calls, not 40.
    let mut c = Case::new(20, "16");
    for g in 0..40 {
        c = c.objects(&pg(&format!("s{g}"), "{minMember: 2}"));
    }
    for g in 0..40 {
        for i in 0..2 {
            c.pend(member(&format!("s{g}-{i}"), &format!("s{g}"), "1"));
        }
    }
    let (r, _) = c.run(1);
    assert_eq!(r.placements.len(), 80);
    assert!(r.stats.batches <= 4, "core batches {}", r.stats.batches);
}

#[test]
fn gang_pods_share_one_equivalence_class_across_groups() {
    let mut c = Case::new(1, "4");
    c.pend(member("a-0", "a", "1"));
    c.pend(member("b-0", "b", "1"));
    c.pend(ann(member("c-0", "c", "1"), "other", "x"));
    let ssn_pods = c.pending.clone();
    assert_ne!(ssn_pods[0].equivalence, ssn_pods[1].equivalence);
    let sched = Scheduler::new(default_frameworks(), Snapshot::new(), Options::default());
    let mut ssn = super::session::Session::open(
        sched,
        Vec::new(),
        &BatchObjects::default(),
        Vec::new(),
        Vec::new(),
        NOW,
        &Default::default(),
    );
    let a = ssn.placement_pod(&ssn_pods[0]);
    let b = ssn.placement_pod(&ssn_pods[1]);
    let other = ssn.placement_pod(&ssn_pods[2]);
    assert_eq!(a.equivalence, b.equivalence);
    assert_ne!(a.equivalence, other.equivalence);
    assert_eq!(a.key, "default/a-0");
}

#[test]
fn real_capability_leaves_other_queues_guarantees_free() {
    // 16 CPU; queue "a" guarantees 10 and asks for nothing now. Queue "b" (no
    // capability) may use at most 16 - 10 = 6 (Volcano capacity realCapability),
    // for allocation and for enqueue.
    let mut c = Case::new(4, "4")
        .objects(&queue(
            "a",
            "{weight: 1, guarantee: {resource: {cpu: \"10\"}}}",
        ))
        .objects(&queue("b", "{weight: 1}"))
        .objects(&pg(
            "big",
            "{minMember: 1, queue: b, minResources: {cpu: \"7\"}}",
        ));
    for i in 0..10 {
        c.pend(in_queue(&format!("b-{i}"), "b", "1"));
    }
    c.pend(member("big-0", "big", "7"));
    let (r, _) = c.run(1);
    assert_eq!(placed(&r, "b-"), 6, "{:?}", r.unschedulable);
    assert_eq!(queue_alloc(&r, "b", "cpu"), 6_000);
    let g = group(&r, "big");
    assert_eq!(g.phase, "Pending");
    assert!(
        g.message
            .contains("queue b resources are not enough for minResources (cpu)"),
        "{}",
        g.message
    );

    // An explicit capability below that still wins.
    let mut c = Case::new(4, "4")
        .objects(&queue(
            "a",
            "{weight: 1, guarantee: {resource: {cpu: \"10\"}}}",
        ))
        .objects(&queue("b", "{weight: 1, capability: {cpu: \"4\"}}"));
    for i in 0..10 {
        c.pend(in_queue(&format!("b-{i}"), "b", "1"));
    }
    let (r, _) = c.run(1);
    assert_eq!(placed(&r, "b-"), 4);
}

#[test]
fn preemptor_is_nominated_and_binds_first_in_the_next_cycle() {
    // Queue "z" holds a running low-priority pod filling the only node and a
    // high-priority pending pod; queue "b" (sorted first on equal shares) has
    // lower-priority work waiting. The preemptor evicts "v", is nominated to n0 and
    // must bind there in cycle 2 before b's pods can take the freed room.
    let mut c = Case::new(1, "4")
        .objects(&queue("z", "{weight: 1, reclaimable: false}"))
        .objects(&queue("b", "{weight: 1}"));
    c.run_on(in_queue("v", "z", "4").priority(1), "n0");
    c.pend(in_queue("hi", "z", "4").priority(1000));
    for i in 0..4 {
        c.pend(in_queue(&format!("lo-{i}"), "b", "1"));
    }
    let (r1, _) = c.run(1);
    assert_eq!(r1.evictions.len(), 1, "{:?}", r1.evictions);
    assert_eq!(r1.evictions[0].pod, "default/v");
    assert_eq!(
        r1.nominated,
        vec![crate::scheduler::Placement {
            pod: "default/hi".into(),
            node: "n0".into()
        }]
    );
    assert_eq!(placed(&r1, "hi"), 0, "not bound before its victim is gone");
    let (r2, s) = c.run(2);
    assert_eq!(placed(&r2, "hi"), 1, "{:?}", r2.unschedulable);
    assert_eq!(placed(&r2, "lo-"), 0, "{:?}", r2.placements);
    assert_eq!(s.snapshot.pod_node("default/hi").map(|n| &**n), Some("n0"));
    assert_eq!(r2.evictions.len(), 1, "{:?}", r2.evictions);
}

#[test]
fn coscheduling_schedule_timeout_marks_the_group_and_backs_off() {
    // Never fits (3 x 2 CPU on one 4-CPU node). Sessions are 1 s apart: attempts at
    // t=0,1 are within the 2 s timeout; at t=2 it times out and backs off 2 s
    // (t=3 skipped), and is retried at t=4 with a fresh window.
    let mut c = Case::new(1, "4").objects(
        "apiVersion: scheduling.x-k8s.io/v1alpha1\nkind: PodGroup\nmetadata: {name: cg, namespace: default}\nspec: {minMember: 3, scheduleTimeoutSeconds: 2}\n",
    );
    for i in 0..3 {
        c.pend(
            pod(&format!("cg-{i}"))
                .cpu("2")
                .label("scheduling.x-k8s.io/pod-group", "cg"),
        );
    }
    let (r, _) = c.run(2);
    let g = group(&r, "cg");
    assert_eq!(g.reason, None, "t=1 is within the timeout: {}", g.message);
    assert!(g.message.starts_with("1/3 tasks in gang unschedulable"));

    let (r, _) = c.run(3);
    let g = group(&r, "cg");
    assert_eq!(g.reason.as_deref(), Some("Timeout"));
    assert!(
        g.message.starts_with(
            "pod group timed out: minMember 3 not reached within scheduleTimeoutSeconds 2"
        ) && g.message.contains("retry after backoff of 2s"),
        "{}",
        g.message
    );
    assert!(r.placements.is_empty());

    let (r, _) = c.run(4);
    let g = group(&r, "cg");
    assert_eq!(g.reason.as_deref(), Some("Timeout"));
    assert!(
        g.message.contains("backing off for 1s more"),
        "{}",
        g.message
    );
    let cg0 = r.unschedulable.iter().find(|u| u.pod == "default/cg-0");
    assert!(
        cg0.is_some_and(|u| u.message.contains("timed out")),
        "{:?}",
        r.unschedulable
    );

    let (r, _) = c.run(5);
    let g = group(&r, "cg");
    assert_eq!(g.reason, None, "retried after the backoff: {}", g.message);
    assert!(g.message.starts_with("1/3 tasks in gang unschedulable"));

    // A group that fits is not affected, and a Volcano PodGroup has no timeout.
    let mut c = Case::new(2, "4").objects(
        "apiVersion: scheduling.x-k8s.io/v1alpha1\nkind: PodGroup\nmetadata: {name: ok, namespace: default}\nspec: {minMember: 2, scheduleTimeoutSeconds: 1}\n",
    );
    for i in 0..2 {
        c.pend(
            pod(&format!("ok-{i}"))
                .cpu("2")
                .label("scheduling.x-k8s.io/pod-group", "ok"),
        );
    }
    let (r, _) = c.run(3);
    assert_eq!(placed(&r, "ok"), 2);
    assert_eq!(group(&r, "ok").reason, None);
}

#[test]
fn negative_session_periods_are_rejected_by_name() {
    for (cfg, field) in [
        (
            SessionConfig {
                period_seconds: Some(-1),
                ..SessionConfig::default()
            },
            "corral.session.periodSeconds",
        ),
        (
            SessionConfig {
                pod_group_backoff_seconds: Some(-5),
                ..SessionConfig::default()
            },
            "corral.session.podGroupBackoffSeconds",
        ),
    ] {
        let e = cfg.plugins().err().expect("rejected");
        assert!(e.starts_with(field), "{e}");
    }
}

/// What one session decided, in a comparable form.
#[derive(Debug, PartialEq)]
struct CycleOut {
    placements: Vec<(String, String)>,
    nominated: Vec<(String, String)>,
    evictions: Vec<(String, String, String)>,
    unschedulable: Vec<(String, String)>,
    podgroups: Vec<super::PodGroupStatus>,
    queues: Vec<super::QueueStatus>,
    admitted: Vec<String>,
    pods_left: usize,
}

/// Runs `cycles` sessions like `run_sessions`, opening each with the running-pod
/// index (`eager` false, carried across sessions) or the straightforward build.
fn cycles_with(c: &Case, cycles: usize, eager: bool) -> Vec<CycleOut> {
    use super::session::{Carry, Session};
    let mut snap = Snapshot::new();
    for n in &c.nodes {
        snap.upsert_node(n.clone());
    }
    for (p, n) in &c.running {
        snap.add_pod(Arc::new(p.clone()), n);
    }
    let mut sched = Scheduler::new(default_frameworks(), snap, Options::default());
    let objs = c.objs();
    let mut pending: Vec<Arc<PodInfo>> = c.pending.iter().cloned().map(Arc::new).collect();
    let mut carry = Carry::default();
    let mut out = Vec::new();
    for cycle in 0..cycles {
        let mut ssn = Session::open_with(
            sched,
            pending,
            &objs,
            c.cfg.plugins().expect("plugins"),
            c.cfg.actions(),
            NOW + cycle as i64,
            &carry,
            eager,
        );
        super::actions::run(&mut ssn);
        let closed = ssn.close();
        let mut evictions: Vec<_> = closed
            .evictions
            .iter()
            .map(|e| (e.pod.clone(), e.preemptor.clone(), e.reason.clone()))
            .collect();
        evictions.sort();
        let mut admitted: Vec<String> = closed.carry.admitted.iter().cloned().collect();
        admitted.sort();
        out.push(CycleOut {
            placements: closed
                .placements
                .iter()
                .map(|p| (p.pod.clone(), p.node.clone()))
                .collect(),
            nominated: closed
                .nominated
                .iter()
                .map(|p| (p.pod.clone(), p.node.clone()))
                .collect(),
            evictions,
            unschedulable: closed
                .unschedulable
                .iter()
                .map(|u| (u.pod.clone(), u.message.clone()))
                .collect(),
            podgroups: closed.podgroups.clone(),
            queues: closed.queues.clone(),
            admitted,
            pods_left: closed.sched.snapshot.num_pods(),
        });
        sched = closed.sched;
        pending = closed.pending;
        carry = closed.carry;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Sessions opened from the running-pod index (plain running pods aggregated,
    /// their jobs built only for preempt/reclaim; the index carried and refreshed
    /// across sessions) decide exactly what the straightforward build decides:
    /// placements, nominations, evictions, messages, PodGroup and Queue status.
    #[test]
    fn indexed_open_equals_straightforward_open(
        nodes in 1usize..5,
        node_cpu in 2u32..6,
        reclaimable in any::<bool>(),
        cap in proptest::option::of(2u32..10),
        // (queue 0..4 where 2 = no annotation, 3 = unknown queue; namespace; cpu m; priority; node)
        plain in proptest::collection::vec((0usize..4, 0usize..2, 0u32..3, 0i32..3, 0usize..5), 0..12),
        // running gangs: (queue, members, minMember, priority, members still
        // pending, kind: 0 Volcano PodGroup, 1 Volcano without its PodGroup object,
        // 2 coscheduling PodGroup, 3 Volcano with minTaskMember over task-spec roles)
        running_gangs in proptest::collection::vec(
            (0usize..2, 1usize..4, 1usize..4, 0i32..3, 0usize..3, 0usize..4),
            0..4,
        ),
        // pending gangs: (queue, size, minMember, cpu, priority)
        pending_gangs in proptest::collection::vec((0usize..2, 1usize..4, 1usize..4, 1u32..3, 0i32..4), 0..4),
        pending_plain in proptest::collection::vec((0usize..4, 0u32..3, 0i32..4), 0..4),
    ) {
        let mut c = Case::new(nodes, &node_cpu.to_string());
        let qspec = |w: usize| {
            let mut s = format!("{{weight: {w}, reclaimable: {reclaimable}");
            if let Some(cap) = cap {
                s.push_str(&format!(", capability: {{cpu: \"{cap}\"}}"));
            }
            s.push('}');
            s
        };
        c = c.objects(&queue("q0", &qspec(1))).objects(&queue("q1", &qspec(2)));
        let qname = |q: usize| match q {
            0 => Some("q0"),
            1 => Some("q1"),
            2 => None,
            _ => Some("nope"),
        };
        let started_at = "2026-01-01T00:00:00Z";
        for (i, (q, ns, cpu, prio, n)) in plain.iter().enumerate() {
            let mut b = pod(&format!("p{i}"))
                .ns(["default", "other"][*ns])
                .priority(*prio);
            if *cpu > 0 {
                b = b.cpu(&format!("{}m", cpu * 500));
            }
            if let Some(q) = qname(*q) {
                b = ann(b, ANN_QUEUE_NAME, q);
            }
            c.run_on(started(b, started_at), &format!("n{}", n % nodes));
        }
        for (g, (q, size, min, prio, more, kind)) in running_gangs.iter().enumerate() {
            let name = format!("r{g}");
            let m = |t: usize| {
                let b = match kind {
                    2 => pod(&format!("{name}-{t}"))
                        .cpu("500m")
                        .label("scheduling.x-k8s.io/pod-group", &name),
                    _ => member(&format!("{name}-{t}"), &name, "500m"),
                };
                let b = if *kind == 3 {
                    ann(b, ANN_TASK_SPEC, ["ps", "worker"][t % 2])
                } else {
                    b
                };
                b.priority(*prio + t as i32 % 2)
            };
            match kind {
                0 => c = c.objects(&pg(&name, &format!("{{minMember: {min}, queue: q{q}}}"))),
                2 => c = c.objects(&format!(
                    "apiVersion: scheduling.x-k8s.io/v1alpha1\nkind: PodGroup\nmetadata: {{name: {name}, namespace: default}}\nspec: {{minMember: {min}}}\n"
                )),
                3 => c = c.objects(&pg(
                    &name,
                    &format!("{{minMember: {min}, queue: q{q}, minTaskMember: {{ps: 1, worker: 1}}}}"),
                )),
                _ => {}
            }
            for t in 0..*size {
                c.run_on(started(m(t), started_at), &format!("n{}", (g + t) % nodes));
            }
            for t in *size..size + more {
                c.pend(m(t));
            }
        }
        for (g, (q, size, min, cpu, prio)) in pending_gangs.iter().enumerate() {
            let name = format!("j{g}");
            c = c.objects(&pg(&name, &format!("{{minMember: {min}, queue: q{q}}}")));
            for t in 0..*size {
                c.pend(member(&format!("{name}-{t}"), &name, &cpu.to_string()).priority(*prio));
            }
        }
        for (i, (q, cpu, prio)) in pending_plain.iter().enumerate() {
            let mut b = pod(&format!("w{i}")).priority(*prio);
            if *cpu > 0 {
                b = b.cpu(&cpu.to_string());
            }
            if let Some(q) = qname(*q) {
                b = ann(b, ANN_QUEUE_NAME, q);
            }
            c.pend(b);
        }
        let indexed = cycles_with(&c, 3, false);
        let eager = cycles_with(&c, 3, true);
        prop_assert_eq!(indexed, eager);
    }
}

#[test]
fn indexed_open_preempts_plain_running_pods_like_the_straightforward_open() {
    // 2 nodes x 2 CPU full of plain low-priority pods (queue q0, two namespaces);
    // a high-priority 2-pod gang in q0 must preempt two of them, in both builds.
    let mut c = Case::new(2, "2").objects(&queue("q0", "{weight: 1}"));
    for i in 0..4 {
        let b = ann(pod(&format!("low{i}")).cpu("1"), ANN_QUEUE_NAME, "q0")
            .ns(["default", "other"][i % 2])
            .priority(0);
        c.run_on(started(b, "2026-01-01T00:00:00Z"), &format!("n{}", i % 2));
    }
    // A Volcano PodGroup's priority is its class's (not its pods').
    c = c.objects(&pg(
        "hi",
        "{minMember: 2, queue: q0, priorityClassName: high}",
    ));
    for t in 0..2 {
        c.pend(member(&format!("hi-{t}"), "hi", "1").priority(10));
    }
    let indexed = cycles_with(&c, 2, false);
    let eager = cycles_with(&c, 2, true);
    assert_eq!(indexed, eager);
    assert_eq!(indexed[0].evictions.len(), 2, "{:?}", indexed[0]);
    assert_eq!(indexed[0].nominated.len(), 2);
    // The next session binds the nominated preemptors on the freed room.
    assert_eq!(indexed[1].placements.len(), 2, "{:?}", indexed[1]);
}

#[derive(Debug)]
struct ArrivalOut {
    decided: Vec<String>,
    podgroups: Vec<super::PodGroupStatus>,
    /// `Session::members_loaded`.
    loaded: usize,
    /// Jobs whose running tasks were never built (after the actions).
    unloaded: Vec<String>,
}

/// One session per entry of `arrivals` (pods that arrive before it), the running
/// index carried (`eager` false) or the straightforward build: per session its
/// placements, nominations and evictions (sorted), PodGroup statuses,
/// how many running gang members it built into tasks and which jobs kept only
/// their aggregates.
fn arrival_cycles(c: &Case, arrivals: &[Vec<PodInfo>], eager: bool) -> Vec<ArrivalOut> {
    use super::session::{Carry, Session};
    let mut snap = Snapshot::new();
    for n in &c.nodes {
        snap.upsert_node(n.clone());
    }
    for (p, n) in &c.running {
        snap.add_pod(Arc::new(p.clone()), n);
    }
    let mut sched = Scheduler::new(default_frameworks(), snap, Options::default());
    let objs = c.objs();
    let mut pending: Vec<Arc<PodInfo>> = Vec::new();
    let mut carry = Carry::default();
    let mut out = Vec::new();
    for (cycle, arrived) in arrivals.iter().enumerate() {
        pending.extend(arrived.iter().cloned().map(Arc::new));
        let mut ssn = Session::open_with(
            sched,
            pending,
            &objs,
            c.cfg.plugins().expect("plugins"),
            c.cfg.actions(),
            NOW + cycle as i64,
            &carry,
            eager,
        );
        super::actions::run(&mut ssn);
        let loaded = ssn.members_loaded;
        let mut unloaded: Vec<String> = ssn
            .jobs
            .iter()
            .filter(|j| !j.running.loaded())
            .map(|j| j.key.clone())
            .collect();
        unloaded.sort();
        let closed = ssn.close();
        let mut decided: Vec<String> = Vec::new();
        decided.extend(
            closed
                .placements
                .iter()
                .map(|p| format!("bind {} {}", p.pod, p.node)),
        );
        decided.extend(
            closed
                .nominated
                .iter()
                .map(|p| format!("nominate {} {}", p.pod, p.node)),
        );
        decided.extend(
            closed
                .evictions
                .iter()
                .map(|e| format!("evict {} for {}: {}", e.pod, e.preemptor, e.reason)),
        );
        // Not sorted: a gang's whole-gang (collateral) evictions are listed in job
        // order (evict.rs), so both builds must give the same sequence.
        out.push(ArrivalOut {
            decided,
            podgroups: closed.podgroups.clone(),
            loaded,
            unloaded,
        });
        sched = closed.sched;
        pending = closed.pending;
        carry = closed.carry;
    }
    out
}

#[test]
fn warm_sessions_build_running_members_only_for_pending_jobs_and_victims() {
    const T: &str = "2026-01-01T00:00:00Z";
    // 4 nodes x 4 CPU. Three running gangs of 4 x 1 CPU (one member per node) and
    // a gang "part" with 2 of its minMember 3 running, all in queue q0.
    let mut c = Case::new(4, "4").objects(&queue("q0", "{weight: 1}"));
    for g in 0..3 {
        let name = format!("run{g}");
        c = c.objects(&pg(&name, "{minMember: 4, queue: q0}"));
        for t in 0..4 {
            let b = member(&format!("{name}-{t}"), &name, "1");
            c.run_on(started(b, T), &format!("n{t}"));
        }
    }
    c = c.objects(&pg("part", "{minMember: 3, queue: q0}"));
    for t in 0..2 {
        c.run_on(
            started(member(&format!("part-{t}"), "part", "500m"), T),
            &format!("n{t}"),
        );
    }
    c = c.objects(&pg(
        "hi",
        "{minMember: 2, queue: q0, priorityClassName: high}",
    ));
    let seq = |b: PodBuilder, s: u64| b.seq(1000 + s).info();
    let arrivals = vec![
        // 1: part's third member: part's 2 running members are built, no others.
        vec![seq(member("part-2", "part", "500m"), 1)],
        // 2: nothing pending: nothing built.
        vec![],
        // 3: a plain pod that fits: nothing built.
        vec![seq(pod("small").cpu("500m"), 2)],
        // 4: a high-priority gang that only fits by preempting: every running
        // member becomes a victim candidate (built lazily by preempt).
        vec![
            seq(member("hi-0", "hi", "2").priority(1000), 3),
            seq(member("hi-1", "hi", "2").priority(1000), 4),
        ],
    ];
    let lazy = arrival_cycles(&c, &arrivals, false);
    let eager = arrival_cycles(&c, &arrivals, true);
    let strip = |v: &[ArrivalOut]| {
        v.iter()
            .map(|o| (o.decided.clone(), o.podgroups.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        strip(&lazy),
        strip(&eager),
        "same decisions as the straightforward build"
    );
    let loaded: Vec<usize> = lazy.iter().map(|o| o.loaded).collect();
    // Session 4: 12 members of run0..2 + 3 of part (part-2 now running).
    assert_eq!(loaded, [2, 0, 0, 15], "{lazy:#?}");
    let run = ["default/run0", "default/run1", "default/run2"];
    assert_eq!(lazy[0].unloaded, run, "{lazy:#?}");
    assert_eq!(lazy[1].unloaded, [&["default/part"][..], &run].concat());
    assert_eq!(lazy[2].unloaded, [&["default/part"][..], &run].concat());
    assert!(lazy[3].unloaded.is_empty(), "{lazy:#?}");
    assert!(
        lazy[0]
            .decided
            .iter()
            .any(|d| d.starts_with("bind default/part-2 ")),
        "{lazy:#?}"
    );
    assert!(
        lazy[2]
            .decided
            .iter()
            .any(|d| d.starts_with("bind default/small ")),
        "{lazy:#?}"
    );
    let evicted: Vec<&String> = lazy[3]
        .decided
        .iter()
        .filter(|d| d.starts_with("evict "))
        .collect();
    assert!(!evicted.is_empty(), "{lazy:#?}");
    assert!(
        evicted
            .iter()
            .all(|d| d.starts_with("evict default/run") || d.starts_with("evict default/part-")),
        "victims are running gang members: {evicted:#?}"
    );
    assert!(
        lazy[3]
            .decided
            .iter()
            .filter(|d| d.starts_with("nominate default/hi-"))
            .count()
            == 2,
        "{lazy:#?}"
    );
}

/// Volcano drop-in semantics (issue 12).
#[path = "tests_volcano.rs"]
mod volcano;

/// volcano-scheduler.conf, tiers and flags (issue 12).
#[path = "tests_volcano_conf.rs"]
mod volcano_conf;

/// `Session::status_only`: only the named PodGroups get a status at close; the
/// pods' verdicts (placements, unschedulable, pending), the admitted set and the
/// named groups' statuses equal those of a session reporting every group.
#[test]
fn status_only_limits_podgroup_statuses_and_changes_nothing_else() {
    use super::session::{Carry, Session};
    const T: &str = "2026-01-01T00:00:00Z";
    let mut c = Case::new(2, "4").objects(&queue("q0", "{weight: 1}"));
    // A running gang, a gang that fits, one that cannot (minMember 9 > 8 CPUs).
    c = c.objects(&pg("run", "{minMember: 2, queue: q0}"));
    for t in 0..2 {
        c.run_on(
            started(member(&format!("run-{t}"), "run", "1"), T),
            &format!("n{t}"),
        );
    }
    c = c.objects(&pg("fits", "{minMember: 2, queue: q0}"));
    c = c.objects(&pg("big", "{minMember: 9, queue: q0}"));
    for t in 0..2 {
        c.pend(member(&format!("fits-{t}"), "fits", "1"));
    }
    for t in 0..9 {
        c.pend(member(&format!("big-{t}"), "big", "1"));
    }
    let close = |only: Option<HashSet<String>>| {
        let mut snap = Snapshot::new();
        for n in &c.nodes {
            snap.upsert_node(n.clone());
        }
        for (p, n) in &c.running {
            snap.add_pod(Arc::new(p.clone()), n);
        }
        let sched = Scheduler::new(default_frameworks(), snap, Options::default());
        let mut ssn = Session::open_with(
            sched,
            c.pending.iter().cloned().map(Arc::new).collect(),
            &c.objs(),
            c.cfg.plugins().expect("plugins"),
            c.cfg.actions(),
            NOW,
            &Carry::default(),
            false,
        );
        ssn.status_only = only;
        super::actions::run(&mut ssn);
        ssn.close()
    };
    let all = close(None);
    let only = close(Some(HashSet::from(["default/big".to_string()])));
    let names = |cl: &super::session::Closed| -> Vec<String> {
        cl.podgroups.iter().map(|s| s.name.clone()).collect()
    };
    assert_eq!(names(&all), ["default/big", "default/fits", "default/run"]);
    assert_eq!(names(&only), ["default/big"]);
    assert_eq!(
        format!("{:?}", only.podgroups[0]),
        format!("{:?}", all.podgroups[0])
    );
    let verdicts = |cl: &super::session::Closed| {
        let mut admitted: Vec<String> = cl.carry.admitted.iter().cloned().collect();
        admitted.sort();
        (
            format!("{:?}", cl.placements),
            format!("{:?}", cl.unschedulable),
            cl.pending.iter().map(|p| p.key.clone()).collect::<Vec<_>>(),
            admitted,
        )
    };
    assert_eq!(verdicts(&only), verdicts(&all));
    assert_eq!(all.placements.len(), 2, "{:?}", all.placements);
    assert_eq!(all.unschedulable.len(), 9);
}
