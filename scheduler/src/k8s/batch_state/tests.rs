use super::*;

fn dyn_obj(v: Value) -> DynamicObject {
    serde_json::from_value(v).expect("object")
}

#[test]
fn topology_events_feed_the_snapshot() {
    let mut st = BatchState::new(Arc::new(Metrics::new()), &SessionConfig::default());
    let mut snap = Snapshot::new();
    snap.upsert_node(crate::testutil::node("n1").cpu("16").info());
    let nrt = |avail: &str| {
        dyn_obj(json!({
            "apiVersion": "topology.node.k8s.io/v1alpha2", "kind": "NodeResourceTopology",
            "metadata": {"name": "n1"},
            "attributes": [{"name": "topologyManagerPolicy", "value": "single-numa-node"}],
            "zones": [{"name": "node-0", "type": "Node",
                "resources": [{"name": "cpu", "capacity": "16", "allocatable": "16", "available": avail}]}]
        }))
    };
    let t = Crd::NodeResourceTopology;
    assert!(st.on_crd_event(t, Event::Apply(nrt("12")), &mut snap));
    let numa = snap.node("n1").unwrap().numa.as_ref().expect("numa");
    assert_eq!(numa.available[0][0], 12_000);
    // Same content again: not a change.
    assert!(!st.on_crd_event(t, Event::Apply(nrt("12")), &mut snap));
    // Malformed: logged, node without topology.
    assert!(!st.on_crd_event(t, Event::Apply(nrt("lots")), &mut snap));
    assert!(snap.node("n1").unwrap().numa.is_none());
    assert!(!snap.has_topology());
    // Relist that no longer has it removes it.
    st.on_crd_event(t, Event::Apply(nrt("8")), &mut snap);
    assert!(snap.has_topology());
    st.on_crd_event(t, Event::Init, &mut snap);
    assert!(st.on_crd_event(t, Event::InitDone, &mut snap));
    assert!(!snap.has_topology() && snap.node("n1").unwrap().numa.is_none());
    st.on_crd_event(t, Event::Apply(nrt("8")), &mut snap);
    assert!(st.on_crd_event(t, Event::Delete(nrt("8")), &mut snap));
    assert!(snap.node("n1").unwrap().numa.is_none());
}

#[test]
fn watched_hypernodes_reach_the_session_objects() {
    let mut st = BatchState::new(Arc::new(Metrics::new()), &SessionConfig::default());
    let hn = dyn_obj(json!({
        "apiVersion": "topology.volcano.sh/v1alpha1", "kind": "HyperNode",
        "metadata": {"name": "s0", "resourceVersion": "1"},
        "spec": {"tier": 1, "members": [{"type": "Node", "selector": {"regexMatch": {"pattern": "^n"}}}]}
    }));
    let pg = dyn_obj(json!({
        "apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
        "metadata": {"name": "pg", "namespace": "ns"},
        "spec": {"minMember": 2, "queue": "default",
            "networkTopology": {"mode": "hard", "highestTierAllowed": 1}}
    }));
    let mut snap = Snapshot::new();
    snap.upsert_node(crate::testutil::node("n1").cpu("4").info());
    assert!(st.on_crd_event(Crd::HyperNode, Event::Apply(hn), &mut snap));
    assert!(st.on_crd_event(Crd::VolcanoPodGroup, Event::Apply(pg), &mut snap));
    let objs = st.objects();
    assert!(objs.errors.is_empty(), "{:?}", objs.errors);
    let topo = Topology::new(&objs, &snap);
    assert_eq!(topo.domains.len(), 1);
    assert!(topo.domains[0].nodes.contains("n1"));
    assert!(topo.groups["ns/pg"].hard);
}

#[test]
fn watched_objects_decode_through_the_batch_schemas() {
    let mut st = BatchState::new(Arc::new(Metrics::new()), &SessionConfig::default());
    let pg = dyn_obj(json!({
        "apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
        "metadata": {"name": "pg", "namespace": "ns", "resourceVersion": "3"},
        "spec": {"minMember": 4, "queue": "q", "priorityClassName": "high"}
    }));
    let pc: PriorityClass = serde_json::from_value(json!({
        "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": "high"}, "value": 1000
    }))
    .expect("pc");
    st.on_priority_class_event(Event::Apply(pc));
    assert!(st.on_crd_event(Crd::VolcanoPodGroup, Event::Apply(pg), &mut Snapshot::new()));
    let q: ResourceQuota = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": "rq", "namespace": "ns"},
        "spec": {"hard": {"requests.cpu": "2", "pods": "5"}}
    }))
    .expect("quota");
    st.on_quota_event(Event::Apply(q));
    let objs = st.objects();
    assert!(objs.errors.is_empty(), "{:?}", objs.errors);
    assert_eq!(objs.groups[0].min_member, 4);
    assert_eq!(objs.groups[0].priority, Some(1000));
    // A PodGroup naming a missing PriorityClass gets the default priority
    // (globalDefault, else 0) and stays schedulable, as in Volcano.
    let missing = |st: &mut BatchState| {
        let pg = dyn_obj(json!({
            "apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
            "metadata": {"name": "pg", "namespace": "ns", "resourceVersion": "4"},
            "spec": {"minMember": 4, "queue": "q", "priorityClassName": "nope"}
        }));
        assert!(st.on_crd_event(Crd::VolcanoPodGroup, Event::Apply(pg), &mut Snapshot::new()));
        let objs = st.objects();
        assert!(objs.errors.is_empty(), "{:?}", objs.errors);
        objs.groups[0].priority
    };
    assert_eq!(missing(&mut st), Some(0));
    let def: PriorityClass = serde_json::from_value(json!({
        "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": "def"}, "value": 7, "globalDefault": true
    }))
    .expect("pc");
    st.on_priority_class_event(Event::Apply(def.clone()));
    assert_eq!(missing(&mut st), Some(7));
    st.on_priority_class_event(Event::Delete(def));
    assert_eq!(missing(&mut st), Some(0));
    assert_eq!(objs.quotas[0].hard.get("cpu"), 2000);
    assert_eq!(objs.quotas[0].pods, Some(5));
    // A malformed object is reported by name and left out.
    let bad = dyn_obj(json!({
        "apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
        "metadata": {"name": "bad", "namespace": "ns"},
        "spec": {"minMembers": 2}
    }));
    st.on_crd_event(
        Crd::VolcanoPodGroup,
        Event::Apply(bad),
        &mut Snapshot::new(),
    );
    let objs = st.objects();
    assert_eq!(objs.groups.len(), 1);
    assert!(objs.errors[0].contains("ns/bad"), "{:?}", objs.errors);
    assert!(objs.errors[0].contains("minMembers"), "{:?}", objs.errors);
    // Relist without the objects removes them.
    st.on_crd_event(Crd::VolcanoPodGroup, Event::Init, &mut Snapshot::new());
    st.on_crd_event(Crd::VolcanoPodGroup, Event::InitDone, &mut Snapshot::new());
    assert!(st.objects().groups.is_empty());
}

#[test]
fn incremental_decoding_equals_decoding_everything_and_status_is_not_a_change() {
    let mut st = BatchState::new(Arc::new(Metrics::new()), &SessionConfig::default());
    let mut snap = Snapshot::new();
    let pg = |name: &str, min: u32, pc: &str, rv: &str| {
        dyn_obj(json!({
            "apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv},
            "spec": {"minMember": min, "queue": "q", "priorityClassName": pc}
        }))
    };
    let queue = |state: &str, rv: &str| {
        dyn_obj(json!({
            "apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "Queue",
            "metadata": {"name": "q", "resourceVersion": rv},
            "spec": {"weight": 2}, "status": {"state": state, "running": 1}
        }))
    };
    let vpg = Crd::VolcanoPodGroup;
    assert!(st.on_crd_event(
        Crd::VolcanoQueue,
        Event::Apply(queue("Open", "1")),
        &mut snap
    ));
    for (i, n) in ["b", "a", "c", "bad"].iter().enumerate() {
        let o = if *n == "bad" {
            dyn_obj(json!({
                "apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
                "metadata": {"name": "bad", "namespace": "ns"}, "spec": {"minMember": -1}
            }))
        } else {
            pg(n, 2 + i as u32, "high", "1")
        };
        assert!(st.on_crd_event(vpg, Event::Apply(o), &mut snap));
    }
    assert_eq!(st.take_ungated().len(), 4, "new groups");
    // Everything at once, as `simulate` decodes it.
    let reference = |st: &BatchState| {
        let mut raw = Vec::new();
        for crd in [Crd::VolcanoQueue, vpg] {
            let ar = crd.api_resource();
            for v in st.crds.get(&crd).into_iter().flat_map(|m| m.values()) {
                raw.push(to_raw(&ar.api_version, &ar.kind, v.clone()));
            }
        }
        BatchObjects::parse(&raw, &st.priority_class_map())
    };
    let same = |a: &BatchObjects, b: &BatchObjects| {
        assert_eq!(format!("{:?}", a.groups), format!("{:?}", b.groups));
        assert_eq!(format!("{:?}", a.queues), format!("{:?}", b.queues));
        assert_eq!(a.errors, b.errors);
    };
    let objs = st.objects();
    same(&objs, &reference(&st));
    let keys: Vec<String> = objs.groups.iter().map(|g| g.key()).collect();
    assert_eq!(keys, ["ns/a", "ns/b", "ns/c"]);
    assert_eq!(objs.groups[0].priority, Some(0), "class missing: default 0");
    // A status-only change (what `run` writes itself) is no cluster event, yet the
    // decoded phase follows it; nothing else is decoded again.
    let mut with_status = pg("a", 3, "high", "2");
    with_status.data["status"] = json!({"phase": "Inqueue"});
    assert!(!st.on_crd_event(vpg, Event::Apply(with_status), &mut snap));
    assert!(st.take_ungated().is_empty());
    let undecoded: Vec<&String> = st.decoded[&vpg]
        .iter()
        .filter(|(_, d)| d.is_none())
        .map(|(k, _)| k)
        .collect();
    assert_eq!(undecoded, ["ns/a"]);
    let objs = st.objects();
    assert_eq!(objs.groups[0].phase.as_deref(), Some("Inqueue"));
    same(&objs, &reference(&st));
    // A Queue's running count is status; its state is not.
    assert!(!st.on_crd_event(
        Crd::VolcanoQueue,
        Event::Apply(queue("Open", "2")),
        &mut snap
    ));
    assert!(st.on_crd_event(
        Crd::VolcanoQueue,
        Event::Apply(queue("Closed", "3")),
        &mut snap
    ));
    assert!(!st.objects().queues[0].open);
    // A spec change is one, and lets the group's gated members go.
    assert!(st.on_crd_event(vpg, Event::Apply(pg("c", 1, "high", "4")), &mut snap));
    assert_eq!(st.take_ungated(), [(GroupApi::Volcano, "ns/c".to_string())]);
    // A PriorityClass re-decodes every group with its value.
    let pc: PriorityClass = serde_json::from_value(json!({
        "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": "high"}, "value": 50
    }))
    .expect("pc");
    st.on_priority_class_event(Event::Apply(pc));
    let objs = st.objects();
    assert!(objs.groups.iter().all(|g| g.priority == Some(50)));
    same(&objs, &reference(&st));
    assert_eq!(
        st.short_of_members(&(GroupApi::Volcano, "ns/b".into())),
        Some((0, 2))
    );
    // Deleted: gone from the objects, members let go.
    assert!(st.on_crd_event(vpg, Event::Delete(pg("b", 3, "high", "5")), &mut snap));
    assert_eq!(st.take_ungated(), [(GroupApi::Volcano, "ns/b".to_string())]);
    let objs = st.objects();
    same(&objs, &reference(&st));
    assert_eq!(objs.groups.len(), 2);
    assert!(
        st.short_of_members(&(GroupApi::Volcano, "ns/b".into()))
            .is_none()
    );
}

#[test]
fn a_gang_short_of_members_past_the_grace_gets_the_not_enough_tasks_condition() {
    let mut st = BatchState::new(Arc::new(Metrics::new()), &SessionConfig::default());
    let mut snap = Snapshot::new();
    let pg = dyn_obj(json!({
        "apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
        "metadata": {"name": "pg", "namespace": "ns", "uid": "u1"},
        "spec": {"minMember": 3, "queue": "default"}
    }));
    st.on_crd_event(Crd::VolcanoPodGroup, Event::Apply(pg), &mut snap);
    let member = |name: &str| -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "ns",
                "annotations": {"scheduling.k8s.io/group-name": "pg"}},
            "spec": {"containers": []}
        }))
        .expect("pod")
    };
    st.on_pod("ns/p0", &member("p0"));
    let g = (GroupApi::Volcano, "ns/pg".to_string());
    let t0 = std::time::Instant::now();
    let (have, min) = st.short_of_members(&g).expect("short");
    assert_eq!((have, min), (1, 3));
    st.gang_waits(&g, have, min, t0);
    st.dirty.clear();
    // Within the grace: nothing to write.
    st.sweep_gang_waits(t0 + GANG_WAIT_GRACE / 2);
    assert!(st.statuses(&snap, false).is_empty());
    // Past it: one patch with Volcano's condition, and only once.
    st.sweep_gang_waits(t0 + GANG_WAIT_GRACE);
    let p = st.statuses(&snap, false);
    assert_eq!(p.len(), 1);
    let c = &p[0].status["conditions"][0];
    assert_eq!(c["type"], "Unschedulable");
    assert_eq!(c["reason"], "NotEnoughTasks");
    assert_eq!(
        c["message"],
        "Not enough valid tasks for gang-scheduling, valid: 1, min: 3"
    );
    assert_eq!(p[0].status["phase"], "Pending");
    st.gang_waits(&g, have, min, t0);
    st.sweep_gang_waits(t0 + GANG_WAIT_GRACE * 3);
    assert!(st.statuses(&snap, false).is_empty(), "unchanged: no patch");
    // Complete by the time the sweep looks: forgotten, no condition.
    st.on_pod("ns/p1", &member("p1"));
    st.on_pod("ns/p2", &member("p2"));
    st.gang_waits(&g, 2, 3, t0);
    st.sweep_gang_waits(t0 + GANG_WAIT_GRACE * 4);
    assert!(st.waiting.is_empty());
}
