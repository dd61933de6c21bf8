//! Plugins run through the engine's loop and configuration: what a plugin's own
//! unit tests (in corral-plugins, which knows nothing about the engine) cannot show —
//! two pods of one batch committing against each other, and profiles built from a
//! KubeSchedulerConfiguration.

use std::sync::Arc;

use corral_core::snapshot::{PodInfo, Snapshot};
use corral_core::testutil::{node, pod};
use corral_core::topology::parse_nrt;
use corral_engine::config::{KubeSchedulerConfiguration, default_frameworks};
use corral_engine::scheduler::{Options, Scheduler};
use corral_plugins::gpu_share::{
    ANNOTATION_ASSIGNED, ANNOTATION_IDX_PREFIX, VCUDA_CORE, VCUDA_MEMORY,
};
use corral_plugins::{node_health, node_resource_topology};
use serde_json::{Value, json};

#[test]
fn gpu_share_two_shares_in_one_batch_do_not_overfill_a_card() {
    // Two cards; three 60 % shares evaluated in ONE batch: the commit of the second
    // sees the first's card (annotation on the placed PodInfo).
    let mut snap = Snapshot::new();
    snap.add_nodes([node("n1")
        .cpu("32")
        .mem("128Gi")
        .alloc(VCUDA_CORE, "200")
        .alloc(VCUDA_MEMORY, "32")
        .info()]);
    let mut s = Scheduler::new(default_frameworks(), snap, Options::default());
    let pods: Vec<PodInfo> = (0..3)
        .map(|i| {
            pod(&format!("p{i}"))
                .req(VCUDA_CORE, "60")
                .req(VCUDA_MEMORY, "4")
                .seq(i as u64)
                .info()
        })
        .collect();
    let r = s.schedule_all(pods);
    assert_eq!(r.placements.len(), 2, "{r:?}");
    assert_eq!(r.unschedulable.len(), 1, "{r:?}");
    assert!(
        r.unschedulable[0]
            .message
            .contains("Insufficient GPU share"),
        "{r:?}"
    );
    let idx = format!("{ANNOTATION_IDX_PREFIX}0");
    let mut cards: Vec<&str> = r
        .placements
        .iter()
        .map(|p| {
            r.annotations[&p.pod]
                .get(&idx)
                .map(String::as_str)
                .unwrap_or("")
        })
        .collect();
    cards.sort();
    assert_eq!(cards, ["0", "1"]);
    // The snapshot's placed pods carry the assignment.
    let n = &s.snapshot.nodes()[0];
    assert!(n.pods.iter().all(|p| {
        p.pod
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(ANNOTATION_ASSIGNED))
    }));
}

#[test]
fn node_health_is_togglable_in_a_profile_with_args() {
    let y = r#"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
- schedulerName: healthy
  plugins:
    multiPoint:
      enabled: [{name: NodeHealth, weight: 5}]
  pluginConfig:
  - name: NodeHealth
    args: {ewmaHalfLifeSeconds: 20, maxRisePerSecond: 0.2, rules: {cpu: {degraded: 75, forSeconds: 60}}}
- schedulerName: plain
"#;
    let name = node_health::NAME;
    let fws = KubeSchedulerConfiguration::from_yaml(y, "t.yaml")
        .unwrap()
        .build()
        .unwrap();
    assert!(fws[0].filter.iter().any(|p| p.name() == name));
    assert!(
        fws[0]
            .score
            .iter()
            .any(|s| s.plugin.name() == name && s.weight == 5)
    );
    assert!(!fws[1].filter.iter().any(|p| p.name() == name));
    assert!(!fws[1].score.iter().any(|s| s.plugin.name() == name));
    let bad = y.replace("ewmaHalfLifeSeconds: 20", "ewmaHalfLife: 20");
    let e = KubeSchedulerConfiguration::from_yaml(&bad, "t.yaml")
        .unwrap()
        .build()
        .unwrap_err();
    assert!(
        e.0.contains("NodeHealth") && e.0.contains("ewmaHalfLife"),
        "{e}"
    );
    let bad = y.replace("cpu:", "cpux:");
    let e = KubeSchedulerConfiguration::from_yaml(&bad, "t.yaml")
        .unwrap()
        .build()
        .unwrap_err();
    assert!(e.0.contains("rules.cpux"), "{e}");
}

/// An NRT for node `name` with zones of (cpu, memory Gi, gpu) allocatable ==
/// capacity = (16, 64Gi, 2) and the given available amounts.
fn nrt(name: &str, policy: &str, scope: &str, zones: &[(i64, i64, i64)]) -> Value {
    let z: Vec<Value> = zones
        .iter()
        .enumerate()
        .map(|(i, (c, m, g))| {
            json!({"name": format!("node-{i}"), "type": "Node", "resources": [
                {"name": "cpu", "capacity": "16", "allocatable": "16", "available": c.to_string()},
                {"name": "memory", "capacity": "64Gi", "allocatable": "64Gi", "available": format!("{m}Gi")},
                {"name": "nvidia.com/gpu", "capacity": "2", "allocatable": "2", "available": g.to_string()}]})
        })
        .collect();
    json!({
        "apiVersion": "topology.node.k8s.io/v1alpha2", "kind": "NodeResourceTopology",
        "metadata": {"name": name},
        "attributes": [{"name": "topologyManagerPolicy", "value": policy},
                       {"name": "topologyManagerScope", "value": scope}],
        "zones": z
    })
}

#[test]
fn node_resource_topology_one_batch_does_not_overcommit_a_zone() {
    let mut s = Snapshot::new();
    s.upsert_node(
        node("n")
            .cpu("64")
            .mem("256Gi")
            .alloc("nvidia.com/gpu", "8")
            .info(),
    );
    let (name, t) = parse_nrt(&nrt(
        "n",
        "single-numa-node",
        "container",
        &[(10, 64, 0), (2, 64, 0)],
    ))
    .unwrap();
    s.set_topology(&name, Some(Arc::new(t)));
    // Guaranteed pods (requests == limits), 8 cpu each: one fits zone 0, not two.
    let pods: Vec<PodInfo> = (0..2)
        .map(|i| {
            let r = json!({"cpu": "8", "memory": "1Gi"});
            let mut b = pod(&format!("p{i}"));
            b.0["spec"]["containers"] = json!([{"name": "c0", "image": "img",
                "resources": {"requests": r, "limits": r}}]);
            let mut p = b.info();
            p.seq = i;
            p
        })
        .collect();
    let mut sched = Scheduler::new(
        default_frameworks(),
        s,
        Options {
            batch_size: 2,
            ..Options::default()
        },
    );
    let report = sched.schedule_all(pods);
    assert_eq!(report.placements.len(), 1, "{report:?}");
    assert_eq!(report.unschedulable.len(), 1);
    assert!(
        report.unschedulable[0]
            .message
            .contains("cannot align container c0"),
        "{}",
        report.unschedulable[0].message
    );
}

#[test]
fn node_resource_topology_is_in_the_default_profile() {
    let fw = &default_frameworks()[0];
    let name = node_resource_topology::NAME;
    assert!(fw.filter.iter().any(|p| p.name() == name));
    assert!(fw.score.iter().any(|s| s.plugin.name() == name));
}

/// HAReserve through the loop: pods of one batch commit against each other (the
/// filter is cross-node and re-run at commit), so however large the batch, the
/// low-priority pods never leave less than the reserve free; a protected pod then
/// uses it.
#[test]
fn ha_reserve_holds_across_batch_commits() {
    let cfg = KubeSchedulerConfiguration::from_yaml(
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\ncorral:\n  haReserve:\n    minPriority: 1000\n    pools: [{name: all, reserve: {cpu: \"25%\"}}]\n",
        "t",
    )
    .unwrap();
    let fws = cfg.build().unwrap();
    for batch_size in [1, 3, 8, 64] {
        let mut snap = Snapshot::new();
        snap.add_nodes((0..6).map(|i| node(&format!("n{i}")).cpu("8").mem("64Gi").info()));
        let mut s = Scheduler::new(
            fws.clone(),
            snap,
            Options {
                batch_size,
                ..Options::default()
            },
        );
        // 30 low-priority pods of 1-3 CPUs: 60 CPUs asked of 48, 12 reserved.
        let pods: Vec<PodInfo> = (0..30u64)
            .map(|i| {
                pod(&format!("low{i}"))
                    .cpu(&(1 + (i * 7) % 3).to_string())
                    .priority(10)
                    .seq(i)
                    .info()
            })
            .collect();
        let r = s.schedule_all(pods);
        let used: i64 = s
            .snapshot
            .nodes()
            .iter()
            .map(|n| n.requested.milli_cpu)
            .sum();
        let free = 48_000 - used;
        assert!(free >= 12_000, "batch {batch_size}: free {free}m");
        // Every pod left out would have eaten into the reserve.
        assert!(!r.unschedulable.is_empty());
        for u in &r.unschedulable {
            let i: i64 = u.pod.trim_start_matches("default/low").parse().unwrap();
            let cpu = (1 + (i * 7) % 3) * 1000;
            assert!(
                free - cpu < 12_000,
                "batch {batch_size}: {} fits: free {free}m",
                u.pod
            );
            assert!(u.message.contains("HA reserve \"all\""), "{u:?}");
        }
        // A protected pod takes the reserve.
        let r = s.schedule_all(vec![pod("high").cpu("2").priority(1000).seq(99).info()]);
        assert_eq!(r.placements.len(), 1, "batch {batch_size}: {r:?}");
    }
}

/// Default profile: a pod with ResourceClaims is refused (reason naming
/// DynamicResources) and a gated pod is held (its gates named) while the other
/// pods schedule; profiles written for kube-scheduler that enable these plugins, or
/// DefaultPreemption (the batch layer preempts), load unchanged.
#[test]
fn claims_are_refused_and_gated_pods_held_in_the_default_profile() {
    let mut snap = Snapshot::new();
    snap.add_nodes([node("n1").cpu("8").mem("16Gi").info()]);
    let mut s = Scheduler::new(default_frameworks(), snap, Options::default());
    let mut claim = pod("claim").seq(1);
    claim.0["spec"]["resourceClaims"] = json!([{"name": "gpu", "resourceClaimName": "c"}]);
    let mut gated = pod("gated").seq(2);
    gated.0["spec"]["schedulingGates"] = json!([{"name": "example.com/quota"}]);
    let r = s.schedule_all(vec![claim.info(), gated.info(), pod("plain").seq(3).info()]);
    assert_eq!(r.placements.len(), 1, "{r:?}");
    assert!(r.placements[0].pod.ends_with("plain"), "{r:?}");
    let msg = |p: &str| {
        r.unschedulable
            .iter()
            .find(|u| u.pod.ends_with(p))
            .map(|u| u.message.clone())
            .unwrap_or_default()
    };
    assert!(msg("claim").contains("DynamicResources"), "{r:?}");
    assert!(msg("claim").contains("spec.resourceClaims"), "{r:?}");
    assert!(msg("gated").contains("example.com/quota"), "{r:?}");
    let y = r#"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
- schedulerName: kube-style
  plugins:
    multiPoint:
      enabled: [{name: DynamicResources}, {name: SchedulingGates}, {name: DefaultPreemption}]
"#;
    let fws = KubeSchedulerConfiguration::from_yaml(y, "t.yaml")
        .unwrap()
        .build()
        .expect("kube-scheduler plugin names load");
    let pre: Vec<&str> = fws[0].pre_filter.iter().map(|p| p.name()).collect();
    assert!(
        pre.contains(&"DynamicResources") && pre.contains(&"SchedulingGates"),
        "{pre:?}"
    );
    assert!(!pre.contains(&"DefaultPreemption"), "{pre:?}");
}
