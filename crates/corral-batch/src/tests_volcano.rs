//! Volcano semantics, one test per rule (issue 12): task roles, preemptable
//! labels, missing PriorityClasses, queue priority, proportion's per-resource
//! overuse, reclaim with `preemptionPolicy: Never` tasks and victim order.

use super::*;

/// `minTaskMember: {"": n}` counts the pods without a task-spec (Volcano).
#[test]
fn min_task_member_empty_key_matches_pods_without_task_spec() {
    let build = |plain: usize| {
        let mut c = Case::new(4, "1").objects(&pg(
            "job",
            "{minMember: 3, minTaskMember: {\"\": 2, ps: 1}}",
        ));
        c.pend(ann(member("ps", "job", "1"), ANN_TASK_SPEC, "ps"));
        for i in 0..plain {
            c.pend(member(&format!("w{i}"), "job", "1"));
        }
        c.run(1).0
    };
    let r = build(2);
    assert_eq!(r.placements.len(), 3, "{:?}", r.unschedulable);
    assert_eq!(group(&r, "job").phase, "Running");
    // One pod without a task-spec is fewer than minTaskMember[""] = 2.
    let mut c = Case::new(4, "1").objects(&pg(
        "job",
        "{minMember: 2, minTaskMember: {\"\": 2, ps: 0}}",
    ));
    c.pend(ann(member("ps", "job", "1"), ANN_TASK_SPEC, "ps"));
    c.pend(member("w0", "job", "1"));
    let r = c.run(1).0;
    assert!(r.placements.is_empty(), "{:?}", r.placements);
    assert!(
        group(&r, "job").message.contains("task \"\""),
        "{:?}",
        group(&r, "job")
    );
}

/// `volcano.sh/task-spec` is read from the label when no annotation is set; a
/// non-empty annotation wins over the label.
#[test]
fn task_spec_from_label_and_annotation_wins() {
    let mut c = Case::new(4, "1").objects(&pg(
        "job",
        "{minMember: 2, minTaskMember: {ps: 1, worker: 1}}",
    ));
    c.pend(member("a", "job", "1").label(ANN_TASK_SPEC, "ps"));
    c.pend(member("b", "job", "1").label(ANN_TASK_SPEC, "worker"));
    let r = c.run(1).0;
    assert_eq!(r.placements.len(), 2, "{:?}", r.unschedulable);

    // The annotation says worker: no pod has the role ps, the gang is invalid.
    let mut c = Case::new(4, "1").objects(&pg(
        "job",
        "{minMember: 2, minTaskMember: {ps: 1, worker: 1}}",
    ));
    c.pend(ann(
        member("a", "job", "1").label(ANN_TASK_SPEC, "ps"),
        ANN_TASK_SPEC,
        "worker",
    ));
    c.pend(member("b", "job", "1").label(ANN_TASK_SPEC, "worker"));
    let r = c.run(1).0;
    assert!(r.placements.is_empty(), "{:?}", r.placements);
    assert!(
        group(&r, "job").message.contains("0 pod(s) of task \"ps\""),
        "{:?}",
        group(&r, "job")
    );
}

/// `volcano.sh/preemptable: "false"` protects as a pod label and as a PodGroup
/// label; an annotation `"true"` on the same object wins over a label `"false"`.
#[test]
fn preemptable_from_labels_annotation_wins() {
    let evictions = |victim: PodBuilder, group_meta: Option<&str>| {
        let mut c = Case::new(1, "1");
        if let Some(meta) = group_meta {
            c = c.objects(&format!(
                "apiVersion: scheduling.volcano.sh/v1beta1\nkind: PodGroup\nmetadata: {{name: v, namespace: default, {meta}}}\nspec: {{minMember: 1}}\n"
            ));
        }
        c.run_on(victim.cpu("1"), "n0");
        c.pend(pod("p").cpu("1").priority(100));
        c.run(1).0.evictions.len()
    };
    assert_eq!(evictions(pod("v"), None), 1, "unprotected pods are victims");
    assert_eq!(
        evictions(pod("v").label("volcano.sh/preemptable", "false"), None),
        0,
        "pod label protects"
    );
    assert_eq!(
        evictions(
            ann(
                pod("v").label("volcano.sh/preemptable", "false"),
                "volcano.sh/preemptable",
                "true"
            ),
            None
        ),
        1,
        "pod annotation wins over its label"
    );
    let m = ann(pod("v"), ANN_GROUP_NAME, "v");
    assert_eq!(
        evictions(
            m.clone(),
            Some("labels: {volcano.sh/preemptable: \"false\"}")
        ),
        0,
        "PodGroup label protects"
    );
    assert_eq!(
        evictions(
            m,
            Some(
                "labels: {volcano.sh/preemptable: \"false\"}, annotations: {volcano.sh/preemptable: \"true\"}"
            )
        ),
        1,
        "PodGroup annotation wins over its label"
    );
}

/// A PodGroup naming a PriorityClass that does not exist schedules with priority
/// 0 (Volcano's default priority) instead of being rejected: it is ordered after
/// a group of class `high` and before nothing else.
#[test]
fn missing_priority_class_is_priority_zero() {
    let mut c = Case::new(1, "2")
        .objects(&pg("a", "{minMember: 2, priorityClassName: nope}"))
        .objects(&pg("b", "{minMember: 2, priorityClassName: high}"));
    c.pend(member("a-0", "a", "1"));
    c.pend(member("a-1", "a", "1"));
    c.pend(member("b-0", "b", "1"));
    c.pend(member("b-1", "b", "1"));
    let objs = c.objs();
    assert!(objs.errors.is_empty(), "{:?}", objs.errors);
    let a = objs.groups.iter().find(|g| g.name == "a").expect("group a");
    assert_eq!(a.priority, Some(0));
    let r = c.run(1).0;
    assert_eq!(placed(&r, "b-"), 2, "high first: {:?}", r.placements);
    assert_eq!(placed(&r, "a-"), 0);
    assert_eq!(group(&r, "a").phase, "Inqueue", "{:?}", group(&r, "a"));
    // Alone, the group with the missing class schedules.
    let mut c = Case::new(1, "2").objects(&pg("a", "{minMember: 2, priorityClassName: nope}"));
    c.pend(member("a-0", "a", "1"));
    c.pend(member("a-1", "a", "1"));
    let r = c.run(1).0;
    assert_eq!(placed(&r, "a-"), 2, "{:?}", r.unschedulable);
}

/// Queues are served by `spec.priority` (higher first) before share: two queues
/// within their deserved share compete for the one node both pods select; the
/// higher-priority queue wins it even though its name sorts last.
#[test]
fn queue_priority_orders_queues_before_share() {
    let run = |a_prio: i32, b_prio: i32| {
        let mut c = Case::new(0, "1")
            .objects(&queue("a", &format!("{{weight: 1, priority: {a_prio}}}")))
            .objects(&queue("b", &format!("{{weight: 1, priority: {b_prio}}}")));
        c.nodes
            .push(node("n0").cpu("1").mem("64Gi").label("pool", "x").info());
        c.nodes.push(node("n1").cpu("1").mem("64Gi").info());
        c.pend(in_queue("a-0", "a", "1").node_selector("pool", "x"));
        c.pend(in_queue("b-0", "b", "1").node_selector("pool", "x"));
        c.run(1).0
    };
    let r = run(0, 10);
    assert_eq!(placed(&r, "b-"), 1, "{:?}", r.placements);
    assert_eq!(placed(&r, "a-"), 0);
    // Equal priorities: the share (then the name) decides.
    let r = run(0, 0);
    assert_eq!(placed(&r, "a-"), 1, "{:?}", r.placements);
    assert_eq!(placed(&r, "b-"), 0);
    let r = run(5, 0);
    assert_eq!(placed(&r, "a-"), 1, "{:?}", r.placements);
}

/// proportion: a queue whose GPUs are at their deserved share is not overused
/// while its CPU is below its share, so its CPU-only work is still allocated;
/// a GPU task that would take it beyond its GPU share is not.
#[test]
fn overused_only_in_the_requested_resources() {
    let mut c = Case::new(0, "8")
        .objects(&queue("a", "{weight: 1}"))
        .objects(&queue("b", "{weight: 1}"));
    c.nodes.push(
        node("n0")
            .cpu("8")
            .mem("64Gi")
            .alloc("nvidia.com/gpu", "2")
            .info(),
    );
    c.run_on(in_queue("a-run", "a", "1").req("nvidia.com/gpu", "1"), "n0");
    c.pend(in_queue("a-gpu", "a", "1").req("nvidia.com/gpu", "1"));
    c.pend(in_queue("a-cpu", "a", "1"));
    c.pend(in_queue("b-gpu", "b", "1").req("nvidia.com/gpu", "1"));
    let (r, _) = c.run(1);
    let q = |n: &str| r.queues.iter().find(|q| q.name == n).expect("queue");
    assert_eq!(q("a").deserved.get("nvidia.com/gpu"), 1, "{:?}", r.queues);
    let placed: Vec<&str> = r.placements.iter().map(|p| p.pod.as_str()).collect();
    assert!(placed.contains(&"default/a-cpu"), "{placed:?}");
    assert!(
        placed.contains(&"default/b-gpu"),
        "{placed:?} {:?} {:?}",
        r.unschedulable,
        r.queues
    );
    assert!(!placed.contains(&"default/a-gpu"), "{placed:?}");
    let why = r
        .unschedulable
        .iter()
        .find(|u| u.pod == "default/a-gpu")
        .expect("a-gpu waits");
    assert!(
        why.message
            .contains("queue a would exceed its deserved share (nvidia.com/gpu)"),
        "{}",
        why.message
    );
}

/// proportion: a task is allocatable only within its queue's deserved share (a
/// 3-CPU pod does not fit a 2-CPU share even though the node is free); the
/// capacity plugin bounds by capability only and places it.
#[test]
fn allocatable_respects_deserved_for_proportion_not_capacity() {
    let run = |share_plugin: &str| {
        let mut c = Case::new(1, "4")
            .objects(&queue("a", "{weight: 1}"))
            .objects(&queue("b", "{weight: 1}"));
        c.cfg.plugins = Some(
            ["priority", "gang", "conformance", share_plugin]
                .map(String::from)
                .to_vec(),
        );
        c.pend(in_queue("a-big", "a", "3"));
        for i in 0..4 {
            c.pend(in_queue(&format!("b-{i}"), "b", "1"));
        }
        c.run(1).0
    };
    let r = run("proportion");
    assert_eq!(placed(&r, "a-"), 0, "{:?}", r.placements);
    assert_eq!(placed(&r, "b-"), 2, "{:?}", r.placements);
    let why = r
        .unschedulable
        .iter()
        .find(|u| u.pod == "default/a-big")
        .expect("a-big waits");
    assert!(
        why.message
            .contains("queue a would exceed its deserved share (cpu)"),
        "{}",
        why.message
    );
    let r = run("capacity");
    assert_eq!(placed(&r, "a-"), 1, "{:?}", r.placements);
}

/// reclaim: a job with one `preemptionPolicy: Never` task still reclaims for
/// its other tasks; the Never task is never nominated (it only waits).
#[test]
fn reclaim_skips_never_tasks_but_not_the_job() {
    let mut c = Case::new(1, "2")
        .objects(&queue("a", "{weight: 1, reclaimable: true}"))
        .objects(&queue("b", "{weight: 1}"))
        .objects(&pg("g", "{minMember: 1, queue: b}"));
    c.run_on(in_queue("a-0", "a", "1"), "n0");
    c.run_on(in_queue("a-1", "a", "1"), "n0");
    c.pend(member("g-never", "g", "1").spec("preemptionPolicy", json!("Never")));
    c.pend(member("g-ok", "g", "1"));
    let r = c.run(1).0;
    assert_eq!(r.evictions.len(), 1, "{:?}", r.evictions);
    assert!(r.evictions[0].reason.contains("reclaimed by queue b"));
    let nominated: Vec<&str> = r.nominated.iter().map(|p| p.pod.as_str()).collect();
    assert_eq!(nominated, ["default/g-ok"], "{:?}", r.nominated);
    // preempt keeps kube-scheduler's rule: within a queue, a job with a Never
    // task evicts nothing.
    let mut c = Case::new(1, "2").objects(&pg("g", "{minMember: 1, priorityClassName: high}"));
    c.run_on(pod("low-0").cpu("1"), "n0");
    c.run_on(pod("low-1").cpu("1"), "n0");
    c.pend(member("g-never", "g", "1").spec("preemptionPolicy", json!("Never")));
    c.pend(member("g-ok", "g", "1"));
    assert!(c.run(1).0.evictions.is_empty());
}

/// reclaim victims are ordered by job (PodGroup) priority first, then task
/// priority: the pod of a `high` PodGroup (pod priority 0) outlives a plain pod
/// of priority 500.
#[test]
fn reclaim_victims_by_job_priority_then_task_priority() {
    let mut c = Case::new(1, "2")
        .objects(&queue("a", "{weight: 1, reclaimable: true}"))
        .objects(&queue("b", "{weight: 1}"))
        .objects(&pg(
            "x",
            "{minMember: 1, queue: a, priorityClassName: high}",
        ));
    c.run_on(member("x-0", "x", "1").priority(0), "n0");
    c.run_on(in_queue("y-0", "a", "1").priority(500), "n0");
    c.pend(in_queue("b-0", "b", "1"));
    let r = c.run(1).0;
    let ev: Vec<&str> = r.evictions.iter().map(|e| e.pod.as_str()).collect();
    assert_eq!(ev, ["default/y-0"], "{:?}", r.evictions);
    // Within one job, the lower task priority goes first.
    let mut c = Case::new(1, "2")
        .objects(&queue("a", "{weight: 1, reclaimable: true}"))
        .objects(&queue("b", "{weight: 1}"))
        .objects(&pg("x", "{minMember: 1, queue: a}"));
    c.run_on(member("x-hi", "x", "1").priority(50), "n0");
    c.run_on(member("x-lo", "x", "1").priority(10), "n0");
    c.pend(in_queue("b-0", "b", "1"));
    let r = c.run(1).0;
    let ev: Vec<&str> = r.evictions.iter().map(|e| e.pod.as_str()).collect();
    assert_eq!(ev, ["default/x-lo"], "{:?}", r.evictions);
}

/// A Volcano PodGroup without a priorityClassName has the default priority (the
/// globalDefault class, else 0) — not its pods' priority — and minMember below
/// the sum of minTaskMember skips the per-task minimums (Volcano).
#[test]
fn default_group_priority_and_min_member_below_task_minimums() {
    // Pods of priority 500 in a group without a class: the group is priority 0, so
    // a priority-100 plain pod preempts one of them (3 running, minMember 1).
    let mut c = Case::new(1, "3").objects(&pg("g", "{minMember: 1}"));
    for i in 0..3 {
        c.run_on(member(&format!("g-{i}"), "g", "1").priority(500), "n0");
    }
    c.pend(pod("p").cpu("1").priority(100));
    let r = c.run(1).0;
    assert_eq!(r.evictions.len(), 1, "{:?}", r.unschedulable);
    assert!(r.evictions[0].pod.starts_with("default/g-"));
    // minMember 1 < minTaskMember {"": 2}: one pod is enough.
    let mut c = Case::new(1, "1").objects(&pg("h", "{minMember: 1, minTaskMember: {\"\": 2}}"));
    c.pend(member("h-0", "h", "1"));
    c.pend(member("h-1", "h", "1"));
    let r = c.run(1).0;
    assert_eq!(placed(&r, "h-"), 1, "{:?}", r.unschedulable);
    // minMember 2 = the sum: each task minimum applies (no pod has role "w").
    let mut c = Case::new(1, "4").objects(&pg("k", "{minMember: 2, minTaskMember: {w: 2}}"));
    c.pend(member("k-0", "k", "1"));
    c.pend(member("k-1", "k", "1"));
    assert_eq!(placed(&c.run(1).0, "k-"), 0);
}

/// Simple jobs are allocated task by task across queues (Volcano's allocate):
/// two queues of equal weight with 2-pod jobs on a 2-CPU node get one pod each.
#[test]
fn simple_jobs_interleave_queues_task_by_task() {
    let mut c = Case::new(1, "2")
        .objects(&queue("a", "{weight: 1}"))
        .objects(&queue("b", "{weight: 1}"))
        .objects(&pg("ja", "{minMember: 0, queue: a}"))
        .objects(&pg("jb", "{minMember: 0, queue: b}"));
    for i in 0..2 {
        c.pend(member(&format!("ja-{i}"), "ja", "1"));
        c.pend(member(&format!("jb-{i}"), "jb", "1"));
    }
    let r = c.run(1).0;
    assert_eq!(placed(&r, "ja-"), 1, "{:?}", r.placements);
    assert_eq!(placed(&r, "jb-"), 1, "{:?}", r.placements);
}

/// Preempt: victims of the preemptor's own queue free its capability, so a queue
/// at its capability still preempts its lower-priority work (Volcano #3161); and a
/// BestEffort preemptor preempts too (Volcano #3335).
#[test]
fn preempt_counts_same_queue_victims_against_capability_and_best_effort_preempts() {
    let mut c = Case::new(1, "12")
        .objects(&queue("q", "{weight: 1, capability: {cpu: 4}}"))
        .objects(&pg("low", "{minMember: 0, queue: q}"))
        .objects(&pg(
            "hi",
            "{minMember: 1, queue: q, priorityClassName: high}",
        ));
    c.run_on(member("low-0", "low", "3"), "n0");
    c.pend(member("hi-0", "hi", "3"));
    let r = c.run(1).0;
    let ev: Vec<&str> = r.evictions.iter().map(|e| e.pod.as_str()).collect();
    assert_eq!(ev, ["default/low-0"]);

    let mut c = Case::new(0, "1")
        .objects(&pg("low", "{minMember: 0}"))
        .objects(&pg("hi", "{minMember: 1, priorityClassName: high}"));
    c.nodes
        .push(node("n0").cpu("4").mem("8Gi").pods("1").info());
    c.run_on(ann(pod("be-low"), ANN_GROUP_NAME, "low"), "n0");
    c.pend(ann(pod("be-hi"), ANN_GROUP_NAME, "hi"));
    let r = c.run(1).0;
    let ev: Vec<&str> = r.evictions.iter().map(|e| e.pod.as_str()).collect();
    assert_eq!(ev, ["default/be-low"]);
}

/// Preempt finds the victim a filter needs gone, not only the cheapest by
/// resources: the preemptor's required anti-affinity to `db` pods makes the
/// higher-priority `db` pod the victim, and the cheaper pod stays (Volcano's
/// topology-aware preemption; kube-scheduler's reprieve).
#[test]
fn preempt_finds_the_victim_anti_affinity_needs() {
    let mut c = Case::new(1, "2");
    c.run_on(pod("db").cpu("1").priority(2).label("app", "db"), "n0");
    c.run_on(pod("cheap").cpu("1").priority(1), "n0");
    c.pend(pod("p").cpu("1").priority(100).affinity(json!({
        "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": {"matchLabels": {"app": "db"}},
            "topologyKey": "kubernetes.io/hostname"
        }]}
    })));
    let r = c.run(1).0;
    let ev: Vec<&str> = r.evictions.iter().map(|e| e.pod.as_str()).collect();
    assert_eq!(ev, ["default/db"], "{:?}", r.unschedulable);
}

/// HyperNodes s0 = {s0-n1, s0-n2} (exact names), s1 = nodes labelled rack=r1
/// (s1-n3, s1-n4), both tier 1, and s2 (tier 2) = s0 ∪ s1 (a regex over
/// HyperNode names); 2-CPU nodes, 1 CPU used on s0-n1.
fn topology_case(group_spec: &str, pods: usize) -> Report {
    let hn = |name: &str, tier: u32, members: &str| {
        format!(
            "apiVersion: topology.volcano.sh/v1alpha1\nkind: HyperNode\nmetadata: {{name: {name}}}\nspec: {{tier: {tier}, members: {members}}}\n"
        )
    };
    let mut c = Case::new(0, "2")
        .objects(&hn(
            "s0",
            1,
            "[{type: Node, selector: {exactMatch: {name: s0-n1}}}, {type: Node, selector: {exactMatch: {name: s0-n2}}}]",
        ))
        .objects(&hn(
            "s1",
            1,
            "[{type: Node, selector: {labelMatch: {matchLabels: {rack: r1}}}}]",
        ))
        .objects(&hn(
            "s2",
            2,
            "[{type: HyperNode, selector: {regexMatch: {pattern: '^s[01]$'}}}]",
        ))
        .objects(&pg("g", group_spec));
    for n in ["s0-n1", "s0-n2", "s1-n3", "s1-n4"] {
        let mut b = node(n).cpu("2").mem("64Gi");
        if n.starts_with("s1") {
            b = b.label("rack", "r1");
        }
        // A hostname label that is not the node name: s0 is then restricted by
        // metadata.name terms instead of the hostname label.
        if n == "s0-n2" {
            b = b.label("kubernetes.io/hostname", "host-2");
        }
        c.nodes.push(b.info());
    }
    c.run_on(pod("busy").cpu("1"), "s0-n1");
    for i in 0..pods {
        c.pend(member(&format!("g-{i}"), "g", "1"));
    }
    c.run(1).0
}

fn nodes_of(r: &Report) -> Vec<String> {
    let mut n: Vec<String> = r.placements.iter().map(|p| p.node.clone()).collect();
    n.sort();
    n.dedup();
    n
}

/// A network-topology gang is placed inside the lowest-tier HyperNode that can
/// hold it: 3 pods fit s0 (3 free CPUs; the engine alone would spread them over
/// all four nodes); 5 pods fit no tier-1 HyperNode: hard with
/// highestTierAllowed 1 waits naming each HyperNode's reason, tier 2 allows s2,
/// soft places it anyway.
#[test]
fn network_topology_gangs_stay_inside_a_hypernode() {
    let r = topology_case(
        "{minMember: 3, networkTopology: {mode: hard, highestTierAllowed: 1}}",
        3,
    );
    assert_eq!(r.placements.len(), 3, "{:?}", r.unschedulable);
    assert_eq!(nodes_of(&r), ["s0-n1", "s0-n2"]);
    assert!(
        group(&r, "g").message.contains("HyperNode s0 (tier 1)"),
        "{:?}",
        group(&r, "g")
    );

    let r = topology_case(
        "{minMember: 5, networkTopology: {mode: hard, highestTierAllowed: 1}}",
        5,
    );
    assert!(r.placements.is_empty(), "{:?}", r.placements);
    let m = &group(&r, "g").message;
    assert!(
        m.contains("no HyperNode can hold the gang")
            && m.contains("s0 (tier 1)")
            && m.contains("s1 (tier 1)"),
        "{m}"
    );

    let r = topology_case(
        "{minMember: 5, networkTopology: {mode: hard, highestTierAllowed: 2}}",
        5,
    );
    assert_eq!(r.placements.len(), 5, "{:?}", r.unschedulable);
    assert!(
        group(&r, "g").message.contains("HyperNode s2 (tier 2)"),
        "{:?}",
        group(&r, "g")
    );

    let r = topology_case(
        "{minMember: 5, networkTopology: {mode: soft, highestTierAllowed: 1}}",
        5,
    );
    assert_eq!(r.placements.len(), 5, "{:?}", r.unschedulable);

    // Without networkTopology the same gang spreads beyond s0.
    let r = topology_case("{minMember: 3}", 3);
    assert_eq!(r.placements.len(), 3);
    assert!(
        nodes_of(&r).iter().any(|n| n.starts_with("s1")),
        "{:?}",
        r.placements
    );
}

/// Malformed HyperNodes and networkTopology are errors naming the object and field.
#[test]
fn malformed_hypernodes_are_reported_by_name() {
    let c = Case::new(1, "1")
        .objects("apiVersion: topology.volcano.sh/v1alpha1\nkind: HyperNode\nmetadata: {name: bad}\nspec: {tier: 1, members: [{type: Rack, selector: {exactMatch: {name: x}}}]}\n")
        .objects("apiVersion: topology.volcano.sh/v1alpha1\nkind: HyperNode\nmetadata: {name: re}\nspec: {tier: 1, members: [{type: Node, selector: {regexMatch: {pattern: '('}}}]}\n")
        .objects(&pg("g", "{minMember: 1, networkTopology: {mode: strict}}"));
    let errs = c.objs().errors.join("\n");
    assert!(
        errs.contains("HyperNode bad") && errs.contains("spec.members[0].type"),
        "{errs}"
    );
    assert!(
        errs.contains("HyperNode re") && errs.contains("regexMatch.pattern"),
        "{errs}"
    );
    assert!(errs.contains("spec.networkTopology.mode"), "{errs}");
}

/// Tier-1 HyperNodes over 2-CPU nodes: `a` = {a1, a2}, `b` = {b1}, `c` = {c1}
/// (exact names), plus `top` (tier 2) over all; `busy` pods as given.
fn hyper_case(busy: &[(&str, &str)]) -> Case {
    let hn = |name: &str, tier: u32, members: &[&str]| {
        let m: Vec<String> = members
            .iter()
            .map(|n| format!("{{type: Node, selector: {{exactMatch: {{name: {n}}}}}}}"))
            .collect();
        format!(
            "apiVersion: topology.volcano.sh/v1alpha1\nkind: HyperNode\nmetadata: {{name: {name}}}\nspec: {{tier: {tier}, members: [{}]}}\n",
            m.join(", ")
        )
    };
    let mut c = Case::new(0, "2")
        .objects(&hn("a", 1, &["a1", "a2"]))
        .objects(&hn("b", 1, &["b1"]))
        .objects(&hn("c", 1, &["c1"]))
        .objects(&hn("top", 2, &["a1", "a2", "b1", "c1"]));
    for n in ["a1", "a2", "b1", "c1"] {
        c.nodes.push(node(n).cpu("2").mem("64Gi").info());
    }
    for (i, (n, cpu)) in busy.iter().enumerate() {
        c.run_on(pod(&format!("busy-{i}")).cpu(cpu), n);
    }
    c
}

/// Within a tier the fuller HyperNode is tried first (Volcano's HyperNode
/// binpacking), not the first by size and name; a HyperNode whose free total is
/// below the gang's minimum is skipped with the shortfall as its reason.
#[test]
fn hypernodes_are_tried_fullest_first_and_skipped_when_too_small() {
    // b (1 of 2 CPUs used) is fuller than a and c: a 1-CPU gang goes there.
    let mut c = hyper_case(&[("b1", "1")]).objects(&pg(
        "g",
        "{minMember: 1, networkTopology: {mode: hard, highestTierAllowed: 1}}",
    ));
    c.pend(member("g-0", "g", "1"));
    let r = c.run(1).0;
    assert_eq!(nodes_of(&r), ["b1"], "{:?}", r.unschedulable);
    assert!(
        group(&r, "g")
            .message
            .starts_with("placed in HyperNode b (tier 1)")
    );

    // 3 CPUs: b (1 free) and c (2 free) are below the minimum, a holds it.
    let mut c = hyper_case(&[("b1", "1")]).objects(&pg(
        "g",
        "{minMember: 3, networkTopology: {mode: hard, highestTierAllowed: 1}}",
    ));
    for i in 0..3 {
        c.pend(member(&format!("g-{i}"), "g", "1"));
    }
    let r = c.run(1).0;
    assert_eq!(nodes_of(&r), ["a1", "a2"], "{:?}", r.unschedulable);
    let m = &group(&r, "g").message;
    assert!(
        m.starts_with("placed in HyperNode a (tier 1); not in: ")
            && m.contains("b (tier 1): free capacity below the gang's minimum (cpu 1 < 3)")
            && m.contains("c (tier 1): free capacity below the gang's minimum (cpu 2 < 3)"),
        "{m}"
    );

    // 5 CPUs fit no tier-1 HyperNode: hard waits naming each, with its shortfall.
    let mut c = hyper_case(&[]).objects(&pg(
        "g",
        "{minMember: 5, networkTopology: {mode: hard, highestTierAllowed: 1}}",
    ));
    for i in 0..5 {
        c.pend(member(&format!("g-{i}"), "g", "1"));
    }
    let r = c.run(1).0;
    assert!(r.placements.is_empty());
    let m = &group(&r, "g").message;
    assert!(
        m.starts_with("network topology (hard, tier <= 1): no HyperNode can hold the gang: ")
            && m.contains("a (tier 1): free capacity below the gang's minimum (cpu 4 < 5)")
            && m.contains("b (tier 1): free capacity below the gang's minimum (cpu 2 < 5)")
            && !m.contains("top (tier"),
        "{m}"
    );
}

/// A gang with running members prefers the HyperNode holding them (Volcano
/// scores HyperNodes by the job's allocated HyperNode first), even when another
/// is fuller.
#[test]
fn a_gang_with_running_members_stays_in_their_hypernode() {
    let mut c = hyper_case(&[("b1", "1")]).objects(&pg(
        "g",
        "{minMember: 2, networkTopology: {mode: hard, highestTierAllowed: 1}}",
    ));
    c.run_on(member("g-0", "g", "1"), "c1");
    c.pend(member("g-1", "g", "1"));
    c.pend(member("g-2", "g", "1"));
    let r = c.run(1).0;
    assert_eq!(nodes_of(&r), ["c1"], "{:?}", r.unschedulable);
}

/// A HyperNode where a gang failed although its free total was enough (here:
/// fragmented, 1 CPU free on each node for a 2-CPU pod) is not tried again for a
/// gang of the same shape while its nodes are unchanged.
#[test]
fn a_hypernode_shown_full_is_not_retried_for_the_same_gang_shape() {
    let mut c = hyper_case(&[("a1", "1"), ("a2", "1")])
        .objects(&pg(
            "g1",
            "{minMember: 1, networkTopology: {mode: hard, highestTierAllowed: 1}}",
        ))
        .objects(&pg(
            "g2",
            "{minMember: 1, networkTopology: {mode: hard, highestTierAllowed: 1}}",
        ));
    c.pend(member("g1-0", "g1", "2"));
    c.pend(member("g2-0", "g2", "2"));
    let r = c.run(1).0;
    assert_eq!(r.placements.len(), 2, "{:?}", r.unschedulable);
    let (m1, m2) = (&group(&r, "g1").message, &group(&r, "g2").message);
    // The first gang tries a (fullest) and fails there, then lands in b.
    assert!(
        m1.starts_with(
            "placed in HyperNode b (tier 1); not in: a (tier 1): 1/1 tasks unschedulable"
        ) && !m1.contains("not tried again"),
        "{m1}"
    );
    // The second skips b (now full by its total) and a (same shape), lands in c.
    assert!(
        m2.starts_with("placed in HyperNode c (tier 1)")
            && m2.contains("b (tier 1): free capacity below the gang's minimum (cpu 0 < 2)")
            && m2.contains("a (tier 1): 1/1 tasks unschedulable")
            && m2
                .contains("not tried again: unchanged since a gang of the same shape failed there"),
        "{m2}"
    );
}
