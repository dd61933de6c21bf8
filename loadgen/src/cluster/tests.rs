use super::*;
use serde::Deserialize as _;
use serde::de::DeserializeOwned;

const PROFILES: [Profile; 4] = [
    Profile::Basic,
    Profile::Affinity,
    Profile::Spread,
    Profile::Mixed,
];

#[test]
fn write_reports_each_file_in_order() {
    let c = generate(&args(Profile::Basic, 3, 4, 2, 1)).expect("generate");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut seen = Vec::new();
    write_with(&c, dir.path(), &mut |f, i, n| {
        seen.push((f.to_string(), i, n))
    })
    .expect("write");
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert_eq!(seen[0], (NAMESPACES_FILE.to_string(), 1, 5));
    assert_eq!(seen[4], (PODS_FILE.to_string(), 5, 5));
    assert!(dir.path().join(PODS_FILE).exists());
    assert_eq!(
        stage_line(PODS_FILE, 5, 5, std::time::Duration::from_millis(4200)),
        format!("writing {PODS_FILE} (5/5, 4.2 s)")
    );
}

/// In-memory generation reports each stage from 0 to its total (and every
/// 1,024 items between), and the cluster does not depend on being observed.
#[test]
fn generation_reports_progress_per_stage() {
    let a = args(Profile::Basic, 2_100, 3_000, 2_050, 7);
    let mut seen: Vec<(String, u64, u64)> = Vec::new();
    let c = generate_with(&a, &mut |s, i, n| seen.push((s.to_string(), i, n))).expect("generate");
    let stage = |name: &str| -> Vec<u64> {
        seen.iter()
            .filter(|(s, _, _)| s == name)
            .map(|(_, i, _)| *i)
            .collect()
    };
    assert_eq!(stage("nodes"), [0, 1024, 2048, 2100]);
    assert_eq!(stage("running pods"), [0, 1024, 2048, 2050]);
    assert_eq!(stage("pending pods"), [0, 1024, 2048, 3000]);
    assert!(seen.iter().all(|(_, i, n)| i <= n), "{seen:?}");
    let plain = generate(&a).expect("generate");
    assert_eq!(plain.nodes, c.nodes);
    assert_eq!(plain.running, c.running);
    assert_eq!(plain.pending, c.pending);
    assert_eq!(
        gen_line(
            "running pods",
            12_000,
            150_000,
            std::time::Duration::from_millis(3100)
        ),
        "generating running pods 12000/150000 (3.1 s)"
    );
}

fn args(profile: Profile, nodes: u32, pods: u64, running: u64, seed: u64) -> Args {
    Args {
        nodes,
        pods,
        running,
        profile,
        seed,
        out: PathBuf::from("unused"),
    }
}

fn render(c: &Cluster) -> [String; 5] {
    [
        to_yaml(&c.namespaces).unwrap(),
        to_yaml(&c.priority_classes).unwrap(),
        to_yaml(&c.nodes).unwrap(),
        to_yaml(&c.running).unwrap(),
        to_yaml(&c.pending).unwrap(),
    ]
}

/// Parses every document of a stream back into `T`, checking apiVersion/kind.
fn parse_all<T: DeserializeOwned + k8s_openapi::Resource>(text: &str) -> Vec<T> {
    let mut out = Vec::new();
    if text.is_empty() {
        return out;
    }
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let value = serde_yaml_ng::Value::deserialize(doc).expect("valid YAML");
        assert_eq!(value["apiVersion"].as_str(), Some(T::API_VERSION));
        assert_eq!(value["kind"].as_str(), Some(T::KIND));
        out.push(serde_yaml_ng::from_value(value).expect("parses as the k8s type"));
    }
    out
}

fn spec(p: &Pod) -> &PodSpec {
    p.spec.as_ref().expect("pod has a spec")
}

#[test]
fn same_seed_same_output() {
    for profile in PROFILES {
        let a = render(&generate(&args(profile, 60, 200, 100, 9)).unwrap());
        let b = render(&generate(&args(profile, 60, 200, 100, 9)).unwrap());
        assert_eq!(a, b, "{profile:?}");
    }
}

#[test]
fn different_seed_different_output() {
    for profile in PROFILES {
        let a = render(&generate(&args(profile, 60, 200, 100, 1)).unwrap());
        let b = render(&generate(&args(profile, 60, 200, 100, 2)).unwrap());
        assert_ne!(a, b, "{profile:?}");
    }
}

#[test]
fn counts_match_arguments() {
    for profile in PROFILES {
        let c = generate(&args(profile, 37, 123, 45, 3)).unwrap();
        assert_eq!(c.nodes.len(), 37);
        assert_eq!(c.pending.len(), 123);
        assert_eq!(c.running.len(), 45);
        assert!(!c.namespaces.is_empty());
        assert_eq!(c.priority_classes.is_empty(), profile != Profile::Mixed);
    }
    let c = generate(&args(Profile::Basic, 1, 0, 5, 0)).unwrap();
    assert!(c.pending.is_empty());
    assert_eq!(c.running.len(), 5);
}

#[test]
fn every_document_parses_back() {
    for profile in PROFILES {
        let c = generate(&args(profile, 50, 300, 150, 11)).unwrap();
        let [ns, pc, nodes, running, pending] = render(&c);
        assert_eq!(parse_all::<Namespace>(&ns), c.namespaces);
        assert_eq!(parse_all::<PriorityClass>(&pc), c.priority_classes);
        assert_eq!(parse_all::<Node>(&nodes), c.nodes);
        assert_eq!(parse_all::<Pod>(&running), c.running);
        assert_eq!(parse_all::<Pod>(&pending), c.pending);
        assert!(nodes.starts_with("---\napiVersion: v1\nkind: Node\n"));
    }
}

#[test]
fn names_are_unique() {
    for profile in PROFILES {
        let c = generate(&args(profile, 40, 500, 200, 5)).unwrap();
        let nodes: BTreeSet<_> = c.nodes.iter().map(|n| n.metadata.name.clone()).collect();
        assert_eq!(nodes.len(), c.nodes.len());
        let pods: BTreeSet<_> = c
            .running
            .iter()
            .chain(&c.pending)
            .map(|p| (p.metadata.namespace.clone(), p.metadata.name.clone()))
            .collect();
        assert_eq!(pods.len(), 700);
        let known: BTreeSet<_> = c
            .namespaces
            .iter()
            .map(|n| n.metadata.name.clone())
            .collect();
        assert!(pods.iter().all(|(ns, _)| known.contains(ns)));
    }
}

#[test]
fn basic_matches_scheduler_perf_defaults() {
    let c = generate(&args(Profile::Basic, 30, 10, 0, 0)).unwrap();
    let zones: BTreeSet<_> = c
        .nodes
        .iter()
        .map(|n| n.metadata.labels.as_ref().unwrap()[ZONE].clone())
        .collect();
    assert_eq!(zones.len(), 3);
    for n in &c.nodes {
        let status = n.status.as_ref().unwrap();
        let alloc = status.allocatable.as_ref().unwrap();
        assert_eq!(alloc["cpu"].0, "4");
        assert_eq!(alloc["memory"].0, "32Gi");
        assert_eq!(alloc["pods"].0, "110");
        let l = n.metadata.labels.as_ref().unwrap();
        assert_eq!(l[HOSTNAME], *n.metadata.name.as_ref().unwrap());
        assert_eq!(l[OS], "linux");
        assert_eq!(l[ARCH], "amd64");
        let ready = status.conditions.as_ref().unwrap();
        assert!(
            ready
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        );
    }
    for p in &c.pending {
        let s = spec(p);
        assert_eq!(s.scheduler_name.as_deref(), Some(SCHEDULER_NAME));
        assert!(s.node_name.is_none());
        let r = s.containers[0]
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap();
        assert_eq!(r["cpu"].0, "100m");
        assert_eq!(r["memory"].0, "500Mi");
    }
}

#[test]
fn affinity_pods_carry_anti_affinity_terms() {
    let c = generate(&args(Profile::Affinity, 20, 400, 0, 4)).unwrap();
    let mut required = 0;
    for p in &c.pending {
        let a = spec(p)
            .affinity
            .as_ref()
            .expect("every pod has an affinity");
        let color = &p.metadata.labels.as_ref().unwrap()["color"];
        if let Some(terms) = a.pod_anti_affinity.as_ref().and_then(|x| {
            x.required_during_scheduling_ignored_during_execution
                .as_ref()
        }) {
            required += 1;
            assert_eq!(terms[0].topology_key, HOSTNAME);
            let sel = terms[0].label_selector.as_ref().unwrap();
            assert_eq!(&sel.match_labels.as_ref().unwrap()["color"], color);
        } else {
            assert!(a.pod_anti_affinity.is_some() || a.pod_affinity.is_some());
        }
    }
    assert!(
        required > 200,
        "most pods use required anti-affinity: {required}"
    );
    assert!(required < 400, "some pods use preferred variants");
    // A group never has more members than there are nodes.
    let mut groups: BTreeMap<String, u32> = BTreeMap::new();
    for p in &c.pending {
        *groups
            .entry(p.metadata.labels.as_ref().unwrap()["color"].clone())
            .or_default() += 1;
    }
    assert!(groups.values().all(|&n| n <= 20));
}

#[test]
fn spread_pods_carry_constraints() {
    let c = generate(&args(Profile::Spread, 20, 100, 0, 4)).unwrap();
    for p in &c.pending {
        let app = &p.metadata.labels.as_ref().unwrap()["app"];
        let tsc = spec(p).topology_spread_constraints.as_ref().unwrap();
        assert_eq!(tsc.len(), 2);
        assert_eq!(
            (
                tsc[0].topology_key.as_str(),
                tsc[0].max_skew,
                tsc[0].when_unsatisfiable.as_str()
            ),
            (ZONE, 1, "DoNotSchedule")
        );
        assert_eq!(
            (
                tsc[1].topology_key.as_str(),
                tsc[1].when_unsatisfiable.as_str()
            ),
            (HOSTNAME, "ScheduleAnyway")
        );
        for t in tsc {
            let sel = t
                .label_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap();
            assert_eq!(&sel["app"], app);
        }
    }
}

#[test]
fn mixed_has_realistic_variety() {
    let c = generate(&args(Profile::Mixed, 300, 1000, 600, 42)).unwrap();
    let labels_of = |n: &Node| n.metadata.labels.clone().unwrap_or_default();
    let gpu_nodes: Vec<&Node> = c
        .nodes
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .unwrap()
                .allocatable
                .as_ref()
                .unwrap()
                .contains_key(GPU)
        })
        .collect();
    assert!(!gpu_nodes.is_empty());
    for n in &gpu_nodes {
        assert!(labels_of(n).contains_key(GPU_PRODUCT));
        assert!(
            n.spec
                .as_ref()
                .unwrap()
                .taints
                .as_ref()
                .is_some_and(|t| !t.is_empty())
        );
    }
    assert!(c.nodes.iter().any(|n| labels_of(n)[ARCH] == "arm64"));
    assert!(
        c.nodes
            .iter()
            .any(|n| labels_of(n).get("dedicated").map(String::as_str) == Some("ai"))
    );
    assert!(
        c.nodes
            .iter()
            .any(|n| n.spec.as_ref().unwrap().unschedulable == Some(true))
    );
    let sizes: BTreeSet<_> = c
        .nodes
        .iter()
        .map(|n| {
            n.status.as_ref().unwrap().allocatable.as_ref().unwrap()["cpu"]
                .0
                .clone()
        })
        .collect();
    assert!(sizes.len() >= 4, "varied node sizes: {sizes:?}");
    let zones: BTreeSet<_> = c.nodes.iter().map(|n| labels_of(n)[ZONE].clone()).collect();
    assert_eq!(zones.len(), 3);

    let pods: Vec<&Pod> = c.pending.iter().chain(&c.running).collect();
    let any = |f: &dyn Fn(&PodSpec) -> bool| pods.iter().any(|p| f(spec(p)));
    let ops: BTreeSet<String> = pods
        .iter()
        .filter_map(|p| spec(p).affinity.as_ref()?.node_affinity.as_ref())
        .filter_map(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .flat_map(|ns| ns.node_selector_terms.iter())
        .flat_map(|t| t.match_expressions.iter().flatten())
        .map(|r| r.operator.clone())
        .collect();
    for op in ["In", "NotIn", "Exists", "DoesNotExist"] {
        assert!(ops.contains(op), "missing operator {op}: {ops:?}");
    }
    assert!(any(&|s| s.tolerations.is_some()
        && s.containers.iter().any(|c| container_res(c).gpu > 0)
        && s.node_selector
            .as_ref()
            .is_some_and(|m| m.contains_key(GPU_PRODUCT))));
    assert!(any(&|s| s.init_containers.is_some()));
    assert!(any(&|s| s.topology_spread_constraints.is_some()));
    assert!(any(&|s| s
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .is_some_and(|x| x
            .required_during_scheduling_ignored_during_execution
            .is_some())));
    assert!(any(&|s| s
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .any(|p| p.host_port.is_some())));
    // Every priorityClassName refers to an emitted PriorityClass, with its value.
    for p in &pods {
        let s = spec(p);
        let class = s
            .priority_class_name
            .as_deref()
            .expect("mixed pods have a priority class");
        let pc = c
            .priority_classes
            .iter()
            .find(|pc| pc.metadata.name.as_deref() == Some(class))
            .expect("known class");
        assert_eq!(s.priority, Some(pc.value));
    }
    // Some pending pods can never fit, for explainable reasons.
    let impossible: Vec<_> = c
        .pending
        .iter()
        .filter_map(|p| p.metadata.name.as_deref())
        .filter(|n| {
            n.starts_with("train-b200")
                || n.starts_with("etl-huge")
                || n.starts_with("notebook-no-toleration")
        })
        .collect();
    assert!(impossible.len() >= 3, "{impossible:?}");
    assert!(
        c.running
            .iter()
            .all(|p| !p.metadata.name.as_deref().unwrap().starts_with("etl-huge"))
    );
}

/// Running pods are bound without overcommitting resources, pod slots or host
/// ports and without breaking required anti-affinity or node constraints.
#[test]
fn running_pods_form_a_valid_placement() {
    for profile in PROFILES {
        let c = generate(&args(profile, 40, 10, 600, 8)).unwrap();
        let mut by_node: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
        for p in &c.running {
            let s = spec(p);
            let node = s.node_name.as_deref().expect("running pods are bound");
            assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
            by_node.entry(node).or_default().push(p);
        }
        for n in &c.nodes {
            let name = n.metadata.name.as_deref().unwrap();
            let pods = by_node.remove(name).unwrap_or_default();
            let alloc = n.status.as_ref().unwrap().allocatable.as_ref().unwrap();
            let mut free = container_res(&Container {
                resources: Some(ResourceRequirements {
                    requests: Some(alloc.clone()),
                    ..ResourceRequirements::default()
                }),
                ..Container::default()
            });
            assert!(pods.len() <= 110);
            let mut ports = BTreeSet::new();
            let mut groups = BTreeSet::new();
            let state = node_state(n);
            for p in pods {
                let shape = shape(String::new(), "", BTreeMap::new(), spec(p).clone(), None);
                assert!(
                    state.fits(&PodShape {
                        anti_group: None,
                        ..shape.clone()
                    }),
                    "{profile:?} {name}"
                );
                free.cpu_m = free.cpu_m.checked_sub(shape.res.cpu_m).expect("cpu fits");
                free.mem_mi = free
                    .mem_mi
                    .checked_sub(shape.res.mem_mi)
                    .expect("memory fits");
                free.gpu = free.gpu.checked_sub(shape.res.gpu).expect("gpu fits");
                for port in shape.host_ports {
                    assert!(ports.insert(port), "host port {port} used twice on {name}");
                }
                let required = spec(p)
                    .affinity
                    .as_ref()
                    .and_then(|a| a.pod_anti_affinity.as_ref())
                    .and_then(|a| {
                        a.required_during_scheduling_ignored_during_execution
                            .as_ref()
                    });
                if let Some(terms) = required {
                    let sel = terms[0]
                        .label_selector
                        .as_ref()
                        .unwrap()
                        .match_labels
                        .clone();
                    assert!(groups.insert(sel), "anti-affinity broken on {name}");
                }
            }
        }
        assert!(by_node.is_empty(), "pods bound to unknown nodes");
        for p in &c.pending {
            assert!(spec(p).node_name.is_none());
            assert_eq!(spec(p).scheduler_name.as_deref(), Some(SCHEDULER_NAME));
        }
    }
}

/// A node's static constraints (labels, taints), with unlimited capacity.
fn node_state(n: &Node) -> NodeState {
    NodeState {
        name: n.metadata.name.clone().unwrap(),
        labels: n.metadata.labels.clone().unwrap_or_default(),
        taints: n
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default(),
        free: Res {
            cpu_m: u64::MAX,
            mem_mi: u64::MAX,
            gpu: u64::MAX,
        },
        free_pods: u64::MAX,
        ports: BTreeSet::new(),
        groups: BTreeSet::new(),
    }
}

#[test]
fn argument_errors() {
    let err = |a: Args| generate(&a).unwrap_err().to_string();
    assert!(err(args(Profile::Basic, 0, 10, 0, 0)).contains("--nodes must be at least 1"));
    assert!(err(args(Profile::Basic, 10, 0, 0, 0)).contains("nothing to generate"));
    assert!(err(args(Profile::Basic, MAX_NODES + 1, 1, 0, 0)).contains("maximum"));
    assert!(err(args(Profile::Basic, 10, MAX_PODS, 1, 0)).contains("maximum"));
    assert!(err(args(Profile::Basic, 10, u64::MAX, u64::MAX, 0)).contains("maximum"));
    // 4 CPUs hold 40 pods of 100m: 41 running pods cannot be bound to one node.
    let e = err(args(Profile::Basic, 1, 0, 41, 0));
    assert!(
        e.contains("--running 41") && e.contains("only 40 pods fit"),
        "{e}"
    );
    assert!(generate(&args(Profile::Basic, 1, 0, 40, 0)).is_ok());
}

/// The committed built-in example is exactly what the documented command writes
/// (see `examples/README.md`).
#[test]
fn committed_example_is_up_to_date() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster");
    let c = generate(&args(Profile::Mixed, 300, 1000, 1200, 42)).unwrap();
    let files = [
        NAMESPACES_FILE,
        PRIORITY_CLASSES_FILE,
        NODES_FILE,
        RUNNING_FILE,
        PODS_FILE,
    ];
    for (file, expected) in files.iter().zip(render(&c)) {
        let actual = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        assert!(
            actual == expected,
            "examples/cluster/{file} is stale; regenerate it with the command in \
             examples/README.md"
        );
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("corral-loadgen-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn writes_files_and_creates_directory() {
    let root = scratch("write");
    let dir = root.join("a/b");
    let mut a = args(Profile::Mixed, 10, 20, 5, 1);
    a.out = dir.clone();
    run(&a).unwrap();
    for f in [
        NAMESPACES_FILE,
        PRIORITY_CLASSES_FILE,
        NODES_FILE,
        RUNNING_FILE,
        PODS_FILE,
    ] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    let pods = std::fs::read_to_string(dir.join(PODS_FILE)).unwrap();
    assert_eq!(parse_all::<Pod>(&pods).len(), 20);
    // Regenerating without running pods removes the stale file.
    let mut b = args(Profile::Basic, 10, 20, 0, 1);
    b.out = dir.clone();
    run(&b).unwrap();
    assert!(!dir.join(RUNNING_FILE).exists());
    assert!(!dir.join(PRIORITY_CLASSES_FILE).exists());
    assert!(dir.join(PODS_FILE).is_file());
    // An output path that is a file is a clear error, not a panic.
    let file = root.join("file");
    std::fs::write(&file, "x").unwrap();
    let mut c = args(Profile::Basic, 1, 1, 0, 0);
    c.out = file;
    let e = format!("{:#}", run(&c).unwrap_err());
    assert!(e.contains("cannot create output directory"), "{e}");
    std::fs::remove_dir_all(&root).unwrap();
}
