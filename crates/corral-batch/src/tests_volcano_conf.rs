//! volcano-scheduler.conf accepted as it is (issue 12): parsing, errors naming the
//! field, the profile it becomes, and tier/flag semantics in sessions.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::config::TierConfig;
use crate::volcano_conf::{load, load_any};

/// Volcano's chart default ConfigMap (volcano-sh/volcano installer/helm chart).
const CHART_CONFIGMAP: &str =
    include_str!("../../../examples/volcano/volcano-scheduler-configmap.yaml");
/// A full configuration: all actions, flags, arguments, configurations.
const FULL: &str = include_str!("../../../examples/volcano/volcano-scheduler.conf");

#[test]
fn chart_configmap_and_full_conf_load() {
    let v = load(CHART_CONFIGMAP, "cm.yaml")
        .expect("valid")
        .expect("volcano");
    assert_eq!(
        v.session.actions(),
        vec![Action::Enqueue, Action::Allocate, Action::Backfill]
    );
    let tiers = v.session.tiers.as_ref().expect("tiers");
    assert_eq!(tiers.len(), 2);
    let names: Vec<&str> = tiers[1].plugins.iter().map(|p| p.name.as_str()).collect();
    // predicates, nodeorder and binpack are node plugins: they become the profile.
    assert_eq!(names, ["overcommit", "drf", "proportion"]);
    let fws = v.kube.build().expect("profiles build");
    let profiles: Vec<&str> = fws.iter().map(|f| f.scheduler_name.as_str()).collect();
    assert_eq!(profiles, ["volcano", "corral"]);
    let plugins = v.session.plugins().expect("plugins");
    assert_eq!(plugins.len(), 6);
    assert_eq!(
        plugins.iter().map(|p| p.tier()).collect::<Vec<_>>(),
        [0, 0, 0, 1, 1, 1]
    );

    let v = load(FULL, "full.conf").expect("valid").expect("volcano");
    assert_eq!(v.session.actions().len(), 5);
    v.kube.build().expect("profiles build");
    // A KubeSchedulerConfiguration is not a Volcano configuration.
    let kube = "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n";
    assert!(load(kube, "k.yaml").expect("ok").is_none());
    let (k, s) = load_any(kube, "k.yaml").expect("native");
    assert!(s.is_none() && k.profiles.is_empty());
}

/// Malformed configurations: (document, substrings the error must contain).
const BAD: &[(&str, &[&str])] = &[
    (
        "actions: \"enqueue, allocat\"\n",
        &["bad.conf", "actions[1]", "unknown action \"allocat\""],
    ),
    (
        "actions: \"allocate, shuffle\"\n",
        &["actions[1]", "\"shuffle\""],
    ),
    (
        "actions: \"allocate, allocate\"\n",
        &["actions[1]", "listed twice"],
    ),
    ("tiers: []\n", &["actions: required"]),
    (
        "actions: allocate\ntiers:\n- plugins:\n  - name: gang\n    enablePreemptable: maybe\n",
        &[
            "tiers[0].plugins[0].enablePreemptable",
            "expected a boolean",
        ],
    ),
    (
        "actions: allocate\ntiers:\n- plugins:\n  - name: gang\n    enableFoo: true\n",
        &["tiers[0].plugins[0]", "unknown field `enableFoo`"],
    ),
    (
        "actions: allocate\ntiers:\n- plugins:\n  - name: priority\n  - name: foo\n",
        &[
            "tiers[0].plugins[1].name",
            "unknown plugin \"foo\"",
            "supported: priority, gang",
        ],
    ),
    (
        "actions: allocate\ntiers:\n- plugins:\n  - name: sla\n",
        &[
            "tiers[0].plugins[0].name",
            "Volcano plugin \"sla\" is not supported",
        ],
    ),
    (
        "actions: allocate\ntiers:\n- plugins:\n  - name: gang\n- plugins:\n  - name: gang\n",
        &["tiers[1].plugins[0].name", "configured twice"],
    ),
    (
        "actions: allocate\ntiers:\n- plugins:\n  - name: nodeorder\n    arguments: {foo.weight: 1}\n",
        &[
            "tiers[0].plugins[0].arguments.foo.weight",
            "unknown nodeorder argument",
        ],
    ),
    (
        "actions: allocate\ntiers:\n- plugins:\n  - name: nodeorder\n    arguments: {nodeaffinity.weight: -1}\n",
        &["arguments.nodeaffinity.weight", "integer >= 0"],
    ),
    (
        "actions: allocate\ntiers:\n- plugins:\n  - name: binpack\n    arguments: {binpack.resources.nvidia.com/gpu: 2}\n",
        &[
            "arguments.binpack.resources.nvidia.com/gpu",
            "unknown binpack argument",
        ],
    ),
    (
        "actions: allocate\ntiers:\n- plugins:\n  - name: overcommit\n    arguments: {overcommit-factor: abc}\n",
        &[
            "tiers[0].plugins[0].arguments.overcommit-factor",
            "must be a number",
        ],
    ),
    (
        "actions: allocate\ntiers:\n- plugins:\n  - name: overcommit\n    arguments: {overcommit-factor: 0.5}\n",
        &["overcommit-factor", ">= 1.0"],
    ),
    (
        "actions: allocate\ntiers:\n- plugins:\n  - name: gang\n    arguments: {x: 1}\n",
        &[
            "tiers[0].plugins[0].arguments.x",
            "unknown argument of plugin \"gang\"",
        ],
    ),
    (
        "actions: allocate\ntiers:\n- plugins:\n  - name: drf\n    enableHierarchy: true\n",
        &["tiers[0].plugins[0].enableHierarchy", "not supported"],
    ),
    (
        "actions: allocate\ntiers:\n- plugins:\n  - name: gang\n    enableJobPipelined: false\n",
        &[
            "tiers[0].plugins[0].enableJobPipelined",
            "cannot be turned off",
        ],
    ),
    (
        "actions: allocate\ntiers:\n- plugins:\n  - name: predicates\n    arguments: {predicate.GPUSharingEnable: true}\n",
        &["arguments.predicate.GPUSharingEnable", "not supported"],
    ),
    (
        "actions: allocate\nconfigurations:\n- name: preemt\n",
        &["configurations[0].name", "unknown action \"preemt\""],
    ),
    (
        "actions: allocate\nconfigurations:\n- name: preempt\n  arguments: {enableTopologyAwarePreemption: true}\n",
        &[
            "configurations[0].arguments.enableTopologyAwarePreemption",
            "not supported",
        ],
    ),
    (
        "actions: allocate\nmetrics: {type: prometheus}\n",
        &["metrics", "not supported"],
    ),
    ("actions: allocate\nfoo: 1\n", &["unknown field `foo`"]),
    (
        "apiVersion: v1\nkind: ConfigMap\ndata: {other.conf: x}\n",
        &["data[\"volcano-scheduler.conf\"]"],
    ),
];

#[test]
fn malformed_conf_errors_name_the_field() {
    for (doc, want) in BAD {
        let e = load(doc, "bad.conf")
            .err()
            .unwrap_or_else(|| panic!("accepted: {doc}"));
        for w in *want {
            assert!(e.contains(w), "{doc:?}: error {e:?} lacks {w:?}");
        }
    }
}

/// nodeorder's default leastrequested and binpack's default weights cancel out
/// (Volcano adds both scores); a heavier binpack becomes MostAllocated with its
/// resource weights; a mix that favours empty nodes in one resource and full ones
/// in another is rejected by name.
#[test]
fn nodeorder_and_binpack_become_one_fit_strategy() {
    let fit = |args: &str| {
        let doc = format!(
            "actions: allocate\ntiers:\n- plugins:\n  - name: nodeorder\n  - name: binpack\n    arguments: {args}\n"
        );
        load(&doc, "c").map(|v| {
            let p = &v.expect("volcano").kube.profiles[0];
            (
                p.plugin_config.first().and_then(|c| c.args.clone()),
                p.plugins.as_ref().and_then(|p| p.score.clone()).map(|s| {
                    s.enabled
                        .into_iter()
                        .map(|r| (r.name, r.weight.unwrap_or(0)))
                        .collect::<Vec<_>>()
                }),
            )
        })
    };
    let (args, scores) = fit("{}").expect("ok");
    assert!(args.is_none(), "{args:?}");
    assert!(
        !scores
            .expect("scores")
            .iter()
            .any(|s| s.0 == "NodeResourcesFit")
    );
    let (args, scores) = fit("{binpack.weight: 10, binpack.resources: nvidia.com/gpu, binpack.resources.nvidia.com/gpu: 10}").expect("ok");
    let args = args.expect("fit args");
    assert_eq!(args["scoringStrategy"]["type"], "MostAllocated");
    let res = args["scoringStrategy"]["resources"]
        .as_array()
        .expect("resources");
    let w = |n: &str| {
        res.iter()
            .find(|r| r["name"] == n)
            .map(|r| r["weight"].as_i64())
    };
    assert_eq!(w("nvidia.com/gpu"), Some(Some(100)));
    assert_eq!(w("cpu"), Some(Some(4)));
    assert!(
        scores
            .expect("scores")
            .contains(&("NodeResourcesFit".to_string(), 9))
    );
    let e = fit("{binpack.cpu: 0, binpack.memory: 0, binpack.resources: nvidia.com/gpu}")
        .expect_err("mixed");
    assert!(e.contains("favour full nodes for some resources"), "{e}");
}

/// One node, two running pods of priority 1 (`x` protected by
/// `volcano.sh/preemptable: "false"` and younger, so the preferred victim), a
/// priority-100 preemptor needing one of their CPUs.
fn preempt_case(tiers: &str) -> Report {
    let mut c = Case::new(1, "2");
    c.run_on(
        started(pod("y").cpu("1").priority(1), "2026-01-01T08:00:00Z"),
        "n0",
    );
    c.run_on(
        started(
            ann(
                pod("x").cpu("1").priority(1),
                "volcano.sh/preemptable",
                "false",
            ),
            "2026-01-01T10:00:00Z",
        ),
        "n0",
    );
    c.pend(pod("p").cpu("1").priority(100));
    let t: Vec<TierConfig> = serde_yaml_ng::from_str(tiers).expect("tiers yaml");
    c.cfg.tiers = Some(t);
    c.run(1).0
}

/// Tiers decide victims as in Volcano: plugins of one tier intersect their
/// candidates; a tier that decides ends the vote, so a later tier's conformance
/// protection is not consulted; `enablePreemptable: false` removes exactly that
/// plugin's vote.
#[test]
fn tiers_and_flags_decide_victims_as_volcano() {
    // (tiers, the evicted pod or none)
    let table: &[(&str, Option<&str>)] = &[
        (
            "[{plugins: [{name: priority}, {name: gang}, {name: conformance}]}]",
            Some("default/y"),
        ),
        (
            "[{plugins: [{name: conformance}]}, {plugins: [{name: priority}]}]",
            Some("default/y"),
        ),
        (
            "[{plugins: [{name: priority}, {name: gang}]}, {plugins: [{name: conformance}]}]",
            Some("default/x"),
        ),
        (
            "[{plugins: [{name: priority}, {name: gang}, {name: conformance, enablePreemptable: false}]}]",
            Some("default/x"),
        ),
        // Without the priority vote, conformance alone decides (any unprotected pod).
        (
            "[{plugins: [{name: priority, enablePreemptable: false}, {name: gang}, {name: conformance}]}]",
            Some("default/y"),
        ),
        // No voter at all: no victims.
        (
            "[{plugins: [{name: priority, enablePreemptable: false}, {name: gang}, {name: conformance, enablePreemptable: false}]}]",
            None,
        ),
        // No plugin says the job is starving: no preemption.
        (
            "[{plugins: [{name: priority, enableJobStarving: false}, {name: gang, enableJobStarving: false}, {name: conformance}]}]",
            None,
        ),
    ];
    for (tiers, want) in table {
        let r = preempt_case(tiers);
        let got: Vec<&str> = r.evictions.iter().map(|e| e.pod.as_str()).collect();
        assert_eq!(got, want.iter().copied().collect::<Vec<_>>(), "{tiers}");
    }
}

/// enqueue votes by tier: a permit in an earlier tier admits without asking later
/// tiers; a reject anywhere before that rejects; `enableJobEnqueued: false` removes
/// the vote. (Admitted, the 1-CPU pod alone does not reach minResources: Inqueue.)
#[test]
fn enqueue_votes_by_tier() {
    let run = |tiers: &str| {
        let mut c = Case::new(1, "2").objects(&pg("big", "{minMember: 1, minResources: {cpu: 4}}"));
        c.pend(member("big-0", "big", "1"));
        c.cfg.tiers = Some(serde_yaml_ng::from_str(tiers).expect("tiers"));
        let r = c.run(1).0;
        group(&r, "big").phase.clone()
    };
    // overcommit rejects (4 CPUs > 2 x 1.2).
    assert_eq!(
        run("[{plugins: [{name: gang}, {name: overcommit}]}]"),
        "Pending"
    );
    assert_eq!(
        run("[{plugins: [{name: gang}, {name: overcommit, enableJobEnqueued: false}]}]"),
        "Inqueue"
    );
    // resourcequota (no quota: permit) in tier 0 decides; overcommit is not asked.
    assert_eq!(
        run("[{plugins: [{name: gang}, {name: resourcequota}]}, {plugins: [{name: overcommit}]}]"),
        "Inqueue"
    );
    assert_eq!(
        run("[{plugins: [{name: gang}, {name: resourcequota}, {name: overcommit}]}]"),
        "Pending"
    );
}

/// Volcano's per-resource `overcommit-factor.<resource>` overrides the factor for
/// that resource only; values below 1 are errors naming the argument.
#[test]
fn overcommit_factor_per_resource() {
    let run = |args: &str| {
        let mut c = Case::new(1, "2").objects(&pg("big", "{minMember: 1, minResources: {cpu: 4}}"));
        c.pend(member("big-0", "big", "1"));
        c.cfg.tiers = Some(
            serde_yaml_ng::from_str(&format!(
                "[{{plugins: [{{name: gang}}, {{name: overcommit, arguments: {args}}}]}}]"
            ))
            .expect("tiers"),
        );
        group(&c.run(1).0, "big").phase.clone()
    };
    // 4 CPUs against 2 x factor: the cpu factor decides, memory's does not.
    assert_eq!(run("{overcommit-factor.cpu: 2.0}"), "Inqueue");
    assert_eq!(
        run("{overcommit-factor: 2.0, overcommit-factor.cpu: 1.5}"),
        "Pending"
    );
    assert_eq!(run("{overcommit-factor.memory: 3.0}"), "Pending");
    let e = load(
        "actions: enqueue\ntiers:\n- plugins:\n  - name: overcommit\n    arguments: {overcommit-factor.cpu: 0.5}\n",
        "c",
    )
    .expect_err("below 1");
    assert!(e.contains("arguments.overcommit-factor.cpu"), "{e}");
}

/// numaaware is NodeResourceTopologyMatch: Filter and Score (weight argument)
/// in the profile; without it the plugin is off.
#[test]
fn numaaware_maps_to_node_resource_topology_match() {
    let build = |tiers: &str| {
        let v = load(&format!("actions: allocate\ntiers:\n{tiers}"), "c")
            .expect("valid")
            .expect("volcano");
        let fws = v.kube.build().expect("build");
        let fw = &fws[0];
        let filters: Vec<&str> = fw.filter.iter().map(|p| p.name()).collect();
        let scores: Vec<(&str, i64)> = fw
            .score
            .iter()
            .map(|s| (s.plugin.name(), s.weight))
            .collect();
        (
            filters.contains(&"NodeResourceTopologyMatch"),
            scores
                .iter()
                .find(|s| s.0 == "NodeResourceTopologyMatch")
                .map(|s| s.1),
        )
    };
    assert_eq!(build("- plugins:\n  - name: gang\n"), (false, None));
    assert_eq!(
        build("- plugins:\n  - name: numaaware\n    arguments: {weight: 10}\n"),
        (true, Some(10))
    );
    assert_eq!(
        build("- plugins:\n  - name: numaaware\n    enableNodeOrder: false\n"),
        (true, None)
    );
    assert_eq!(
        build(
            "- plugins:\n  - name: predicates\n  - name: numaaware\n    enablePredicate: false\n"
        ),
        (false, Some(1))
    );
    let e = load(
        "actions: allocate\ntiers:\n- plugins:\n  - name: numaaware\n    arguments: {x: 1}\n",
        "c",
    )
    .expect_err("unknown argument");
    assert!(e.contains("arguments.x") && e.contains("numaaware"), "{e}");
}

/// deviceshare is GpuShare: on only with it; the Volcano vGPU family only with
/// `deviceshare.VGPUEnable`; `deviceshare.ScheduleWeight` (default 10) is its score
/// weight; what Corral cannot do is an error naming the argument.
#[test]
fn deviceshare_maps_to_gpu_share() {
    let build = |tiers: &str| -> Result<(bool, Option<i64>, Option<serde_json::Value>), String> {
        let v = load(&format!("actions: allocate\ntiers:\n{tiers}"), "c")?.expect("volcano");
        let args = v.kube.profiles[0]
            .plugin_config
            .iter()
            .find(|c| c.name == "GpuShare")
            .and_then(|c| c.args.as_ref())
            .map(|a| a["families"].clone());
        let fws = v.kube.build().map_err(|e| e.0)?;
        let fw = &fws[0];
        let filtered = fw.filter.iter().any(|p| p.name() == "GpuShare");
        let w = fw
            .score
            .iter()
            .find(|s| s.plugin.name() == "GpuShare")
            .map(|s| s.weight);
        Ok((filtered, w, args))
    };
    assert_eq!(
        build("- plugins:\n  - name: gang\n"),
        Ok((false, None, None))
    );
    assert_eq!(
        build("- plugins:\n  - name: deviceshare\n"),
        Ok((true, Some(10), Some(serde_json::json!(["vcuda", "hami"]))))
    );
    assert_eq!(
        build(
            "- plugins:\n  - name: deviceshare\n    arguments: {deviceshare.VGPUEnable: true, deviceshare.SchedulePolicy: binpack, deviceshare.ScheduleWeight: 5, deviceshare.GPUSharingEnable: false, deviceshare.NodeLockEnable: false}\n"
        ),
        Ok((
            true,
            Some(5),
            Some(serde_json::json!(["vcuda", "hami", "volcano"]))
        ))
    );
    assert_eq!(
        build("- plugins:\n  - name: deviceshare\n    enableNodeOrder: false\n"),
        Ok((true, None, Some(serde_json::json!(["vcuda", "hami"]))))
    );
    for (args, want) in [
        (
            "{deviceshare.GPUSharingEnable: true}",
            "arguments.deviceshare.GPUSharingEnable",
        ),
        (
            "{deviceshare.GPUNumberEnable: true}",
            "arguments.deviceshare.GPUNumberEnable",
        ),
        (
            "{deviceshare.NodeLockEnable: true}",
            "arguments.deviceshare.NodeLockEnable",
        ),
        (
            "{deviceshare.SchedulePolicy: spread}",
            "arguments.deviceshare.SchedulePolicy",
        ),
        (
            "{deviceshare.VGPUEnable: \"yes\"}",
            "arguments.deviceshare.VGPUEnable: must be true or false",
        ),
        (
            "{deviceshare.ScheduleWeight: -1}",
            "arguments.deviceshare.ScheduleWeight",
        ),
        (
            "{deviceshare.KnownGeometriesCMName: x}",
            "arguments.deviceshare.KnownGeometriesCMName: unknown deviceshare argument",
        ),
    ] {
        let e = build(&format!(
            "- plugins:\n  - name: deviceshare\n    arguments: {args}\n"
        ))
        .expect_err(args);
        assert!(
            e.contains("tiers[0].plugins[0]") && e.contains(want),
            "{args}: {e}"
        );
    }
    let e = build("- plugins:\n  - name: deviceshare\n    enablePredicate: false\n")
        .expect_err("predicate off");
    assert!(e.contains("enablePredicate"), "{e}");
}

#[test]
fn tiers_and_plugins_are_exclusive() {
    let cfg = SessionConfig {
        plugins: Some(vec!["gang".into()]),
        tiers: Some(Vec::new()),
        ..SessionConfig::default()
    };
    let e = cfg.plugins().err().expect("rejected");
    assert!(e.contains("either plugins or tiers"), "{e}");
}

/// A random cluster of full-ish nodes with plain running pods (priority 0..4, some
/// `volcano.sh/preemptable: "false"`) and pending pods (priority 0..6), run with
/// `tiers` and actions allocate + preempt.
fn flag_case(
    nodes: usize,
    running: &[(usize, u32, i32, bool)],
    pending: &[(u32, i32)],
    tiers: &str,
) -> (Report, HashMap<String, (i32, bool)>) {
    let mut c = Case::new(nodes, "4");
    c.cfg.actions = Some(vec![Action::Allocate, Action::Preempt]);
    c.cfg.tiers = Some(serde_yaml_ng::from_str(tiers).expect("tiers"));
    let mut info = HashMap::new();
    for (i, (n, cpu, prio, protected)) in running.iter().enumerate() {
        let name = format!("r{i}");
        let mut b = pod(&name).cpu(&cpu.to_string()).priority(*prio);
        if *protected {
            b = b.label("volcano.sh/preemptable", "false");
        }
        c.run_on(b, &format!("n{}", n % nodes));
        info.insert(format!("default/{name}"), (*prio, *protected));
    }
    for (i, (cpu, prio)) in pending.iter().enumerate() {
        c.pend(pod(&format!("p{i}")).cpu(&cpu.to_string()).priority(*prio));
        // A pod allocated in the session can be a victim of a later preemptor.
        info.insert(format!("default/p{i}"), (*prio, false));
    }
    (c.run(1).0, info)
}

const BASE: &str = "[{plugins: [{name: priority}, {name: gang}, {name: conformance}]}]";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// Switching one flag changes only what it governs: all voters on → victims
    /// are lower-priority and unprotected; conformance `enablePreemptable: false`
    /// → victims are still lower-priority (priority's vote) but may be protected
    /// ones; no victim voter, or no starving voter → no eviction at all; the
    /// allocate decisions (placements) are the same under every preempt flag.
    #[test]
    fn one_flag_changes_only_what_it_governs(
        nodes in 1usize..4,
        running in proptest::collection::vec((0usize..3, 1u32..3, 0i32..4, any::<bool>()), 0..8),
        pending in proptest::collection::vec((1u32..4, 0i32..6), 1..4),
    ) {
        let preemptor_prio: HashMap<String, i32> = pending
            .iter()
            .enumerate()
            .map(|(i, (_, p))| (format!("default/p{i}"), *p))
            .collect();
        let (base, info) = flag_case(nodes, &running, &pending, BASE);
        for e in &base.evictions {
            let (vp, protected) = info[&e.pod];
            prop_assert!(!protected, "{e:?}");
            prop_assert!(vp < preemptor_prio[&e.preemptor], "{e:?}");
        }
        let (off, _) = flag_case(nodes, &running, &pending,
            "[{plugins: [{name: priority}, {name: gang}, {name: conformance, enablePreemptable: false}]}]");
        for e in &off.evictions {
            prop_assert!(info[&e.pod].0 < preemptor_prio[&e.preemptor], "{e:?}");
        }
        let placed = |r: &Report| {
            let mut v: Vec<(String, String)> = r.placements.iter().map(|p| (p.pod.clone(), p.node.clone())).collect();
            v.sort();
            v
        };
        prop_assert_eq!(placed(&base), placed(&off));
        for tiers in [
            "[{plugins: [{name: priority, enablePreemptable: false}, {name: gang}, {name: conformance, enablePreemptable: false}]}]",
            "[{plugins: [{name: priority, enableJobStarving: false}, {name: gang, enableJobStarving: false}, {name: conformance}]}]",
        ] {
            let (r, _) = flag_case(nodes, &running, &pending, tiers);
            prop_assert!(r.evictions.is_empty(), "{tiers}: {:?}", r.evictions);
            prop_assert_eq!(placed(&base), placed(&r));
        }
    }
}
