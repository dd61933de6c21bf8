//! Kubernetes object builders shared by the profiles (namespaces, priority classes,
//! containers, affinity terms, spread constraints, tolerations, pod shapes).

use super::*;

pub(super) fn namespaces(profile: Profile) -> Vec<Namespace> {
    let names: &[&str] = match profile {
        Profile::Basic | Profile::Spread => &["sched-0"],
        Profile::Affinity => &["sched-0", "sched-1"],
        Profile::Mixed => &[
            "web",
            "batch",
            "data",
            "ai-training",
            "ai-inference",
            "monitoring",
        ],
    };
    names
        .iter()
        .map(|n| Namespace {
            metadata: ObjectMeta {
                name: Some((*n).to_string()),
                labels: Some(labels(&[("kubernetes.io/metadata.name", n)])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        })
        .collect()
}

pub(super) fn priority_classes(profile: Profile) -> Vec<PriorityClass> {
    if profile != Profile::Mixed {
        return Vec::new();
    }
    PRIORITIES
        .iter()
        .map(|&(name, value, default, desc)| PriorityClass {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..ObjectMeta::default()
            },
            value,
            global_default: default.then_some(true),
            description: Some(desc.to_string()),
            preemption_policy: Some(
                if name == "batch-low" {
                    "Never"
                } else {
                    "PreemptLowerPriority"
                }
                .to_string(),
            ),
        })
        .collect()
}

pub(super) const PRIORITIES: [(&str, i32, bool, &str); 5] = [
    (
        "corral-critical",
        1_000_000,
        false,
        "Cluster add-ons that must run on every node.",
    ),
    (
        "diamond",
        100_000,
        false,
        "Diamond tier: core services and protected training runs.",
    ),
    (
        "gold",
        10_000,
        false,
        "Gold tier: customer-facing services.",
    ),
    ("normal", 1_000, true, "Default tier."),
    (
        "batch-low",
        100,
        false,
        "Best-effort batch; never preempts others.",
    ),
];

pub(super) fn priority_value(class: &str) -> Option<i32> {
    PRIORITIES
        .iter()
        .find(|p| p.0 == class)
        .map(|&(_, v, _, _)| v)
}

pub(super) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

pub(super) fn cpu(milli: u64) -> Quantity {
    if milli.is_multiple_of(1000) {
        Quantity((milli / 1000).to_string())
    } else {
        Quantity(format!("{milli}m"))
    }
}

pub(super) fn mem(mi: u64) -> Quantity {
    if mi.is_multiple_of(1024) {
        Quantity(format!("{}Gi", mi / 1024))
    } else {
        Quantity(format!("{mi}Mi"))
    }
}

pub(super) fn taint(key: &str, value: &str, effect: &str) -> Taint {
    Taint {
        key: key.to_string(),
        value: (!value.is_empty()).then(|| value.to_string()),
        effect: effect.to_string(),
        ..Taint::default()
    }
}

pub(super) fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.to_string(),
        operator: op.to_string(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_string()).collect()),
    }
}

pub(super) fn selector(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels(pairs)),
        ..LabelSelector::default()
    }
}

pub(super) fn term(key: &str, value: &str, topology: &str, namespaces: &[&str]) -> PodAffinityTerm {
    PodAffinityTerm {
        label_selector: Some(selector(&[(key, value)])),
        topology_key: topology.to_string(),
        namespaces: (!namespaces.is_empty())
            .then(|| namespaces.iter().map(|n| (*n).to_string()).collect()),
        ..PodAffinityTerm::default()
    }
}

pub(super) fn spread(
    key: &str,
    value: &str,
    topology: &str,
    skew: i32,
    when: &str,
) -> TopologySpreadConstraint {
    TopologySpreadConstraint {
        label_selector: Some(selector(&[(key, value)])),
        topology_key: topology.to_string(),
        max_skew: skew,
        when_unsatisfiable: when.to_string(),
        ..TopologySpreadConstraint::default()
    }
}

pub(super) fn toleration(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Toleration {
        key: opt(key),
        operator: opt(op),
        value: opt(value),
        effect: opt(effect),
        ..Toleration::default()
    }
}

/// Resources of one container.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Res {
    pub(super) cpu_m: u64,
    pub(super) mem_mi: u64,
    pub(super) gpu: u64,
}

pub(super) fn container(
    name: &str,
    image: &str,
    r: Res,
    limits: bool,
    ports: &[(i32, Option<i32>)],
) -> Container {
    let mut requests = BTreeMap::new();
    requests.insert("cpu".to_string(), cpu(r.cpu_m));
    requests.insert("memory".to_string(), mem(r.mem_mi));
    let mut lim = BTreeMap::new();
    if limits {
        lim.insert("cpu".to_string(), cpu(r.cpu_m));
        lim.insert("memory".to_string(), mem(r.mem_mi));
    }
    if r.gpu > 0 {
        // Extended resources must have limits equal to requests.
        requests.insert(GPU.to_string(), Quantity(r.gpu.to_string()));
        lim.insert(GPU.to_string(), Quantity(r.gpu.to_string()));
    }
    Container {
        name: name.to_string(),
        image: Some(image.to_string()),
        resources: Some(ResourceRequirements {
            requests: Some(requests),
            limits: (!lim.is_empty()).then_some(lim),
            ..ResourceRequirements::default()
        }),
        ports: (!ports.is_empty()).then(|| {
            ports
                .iter()
                .map(|&(port, host)| ContainerPort {
                    container_port: port,
                    host_port: host,
                    protocol: Some("TCP".into()),
                    ..ContainerPort::default()
                })
                .collect()
        }),
        ..Container::default()
    }
}

pub(super) fn default_container() -> Container {
    container(
        "pause",
        PAUSE_IMAGE,
        Res {
            cpu_m: 100,
            mem_mi: 500,
            gpu: 0,
        },
        true,
        &[(80, None)],
    )
}

pub(super) fn shape(
    name: String,
    namespace: &str,
    lbl: BTreeMap<String, String>,
    mut spec: PodSpec,
    anti_group: Option<String>,
) -> PodShape {
    spec.scheduler_name = Some(SCHEDULER_NAME.to_string());
    if let Some(class) = &spec.priority_class_name {
        spec.priority = priority_value(class);
    }
    let mut res = Res::default();
    for c in &spec.containers {
        let r = container_res(c);
        res.cpu_m += r.cpu_m;
        res.mem_mi += r.mem_mi;
        res.gpu += r.gpu;
    }
    for c in spec.init_containers.iter().flatten() {
        let r = container_res(c);
        res.cpu_m = res.cpu_m.max(r.cpu_m);
        res.mem_mi = res.mem_mi.max(r.mem_mi);
        res.gpu = res.gpu.max(r.gpu);
    }
    let host_ports = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| p.host_port)
        .collect();
    PodShape {
        pod: Pod {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(namespace.to_string()),
                labels: (!lbl.is_empty()).then_some(lbl),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
            status: None,
        },
        res,
        host_ports,
        anti_group,
    }
}

/// Reads back the requests this module wrote (always whole millicores / MiB / GiB).
pub(super) fn container_res(c: &Container) -> Res {
    let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
    let get = |k: &str| requests.and_then(|m| m.get(k)).map(|q| q.0.as_str());
    let cpu_m = get("cpu").map_or(0, |s| match s.strip_suffix('m') {
        Some(m) => m.parse().unwrap_or(0),
        None => s.parse::<u64>().unwrap_or(0) * 1000,
    });
    let mem_mi = get("memory").map_or(0, |s| {
        if let Some(g) = s.strip_suffix("Gi") {
            g.parse::<u64>().unwrap_or(0) * 1024
        } else {
            s.strip_suffix("Mi")
                .and_then(|m| m.parse().ok())
                .unwrap_or(0)
        }
    });
    let gpu = get(GPU).and_then(|s| s.parse().ok()).unwrap_or(0);
    Res { cpu_m, mem_mi, gpu }
}
