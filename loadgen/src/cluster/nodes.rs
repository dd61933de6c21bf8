//! Nodes: the `mixed` profile's pools and cached images, node generation, and the
//! per-node state used to bind `--running` pods validly.

use super::*;

/// Node pool of the `mixed` profile.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pool {
    pub(super) name: &'static str,
    /// Share of nodes, in percent.
    pub(super) share: u32,
    pub(super) arch: &'static str,
    /// (cpu cores, memory GiB) size choices.
    pub(super) sizes: &'static [(u64, u64)],
    pub(super) gpus: u64,
    pub(super) gpu_products: &'static [&'static str],
    pub(super) taints: &'static [(&'static str, &'static str, &'static str)],
}

pub(super) const POOLS: [Pool; 6] = [
    Pool {
        name: "general",
        share: 48,
        arch: "amd64",
        sizes: &[(8, 32), (16, 64), (32, 128)],
        gpus: 0,
        gpu_products: &[],
        taints: &[],
    },
    Pool {
        name: "highmem",
        share: 10,
        arch: "amd64",
        sizes: &[(16, 128), (32, 256)],
        gpus: 0,
        gpu_products: &[],
        taints: &[],
    },
    Pool {
        name: "arm",
        share: 15,
        arch: "arm64",
        sizes: &[(16, 64), (64, 256)],
        gpus: 0,
        gpu_products: &[],
        taints: &[],
    },
    Pool {
        name: "small",
        share: 8,
        arch: "amd64",
        sizes: &[(4, 16)],
        gpus: 0,
        gpu_products: &[],
        taints: &[],
    },
    Pool {
        name: "gpu-train",
        share: 10,
        arch: "amd64",
        sizes: &[(96, 1024)],
        gpus: 8,
        gpu_products: &["NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB"],
        taints: &[
            ("dedicated", "ai", "NoSchedule"),
            (GPU, "present", "NoSchedule"),
        ],
    },
    Pool {
        name: "gpu-infer",
        share: 9,
        arch: "amd64",
        sizes: &[(16, 64), (48, 192)],
        gpus: 4,
        gpu_products: &["NVIDIA-L4"],
        taints: &[(GPU, "present", "NoSchedule")],
    },
];

const _: () = {
    let mut total = 0;
    let mut i = 0;
    while i < POOLS.len() {
        total += POOLS[i].share;
        i += 1;
    }
    assert!(total == 100, "pool shares must add up to 100 %");
};

/// Images cached on nodes of the `mixed` profile (name, size in MB).
pub(super) const IMAGES: [(&str, i64); 10] = [
    ("ghcr.io/corral-demo/storefront:2.4.1", 180),
    ("ghcr.io/corral-demo/checkout:1.9.0", 150),
    ("docker.io/library/nginx:1.27", 70),
    ("ghcr.io/corral-demo/etl-runner:0.12.3", 420),
    ("docker.io/library/python:3.12-slim", 130),
    ("docker.io/apache/spark:3.5.3", 980),
    ("nvcr.io/nvidia/pytorch:24.10-py3", 9_800),
    ("nvcr.io/nvidia/tritonserver:24.10-py3", 7_400),
    ("docker.io/vllm/vllm-openai:v0.6.3", 5_100),
    ("quay.io/prometheus/node-exporter:v1.8.2", 25),
];

/// Scheduling-relevant summary of a node, used to bind `--running` pods validly.
#[derive(Debug, Clone)]
pub(super) struct NodeState {
    pub(super) name: String,
    pub(super) labels: BTreeMap<String, String>,
    pub(super) taints: Vec<Taint>,
    pub(super) free: Res,
    pub(super) free_pods: u64,
    pub(super) ports: BTreeSet<i32>,
    /// Required hostname anti-affinity groups present on the node.
    pub(super) groups: BTreeSet<String>,
}

impl NodeState {
    pub(super) fn fits(&self, s: &PodShape) -> bool {
        // Cordoned nodes carry the unschedulable taint, checked with the others below.
        if self.free_pods == 0 {
            return false;
        }
        if s.res.cpu_m > self.free.cpu_m
            || s.res.mem_mi > self.free.mem_mi
            || s.res.gpu > self.free.gpu
        {
            return false;
        }
        if s.host_ports.iter().any(|p| self.ports.contains(p)) {
            return false;
        }
        if s.anti_group
            .as_ref()
            .is_some_and(|g| self.groups.contains(g))
        {
            return false;
        }
        let Some(spec) = s.pod.spec.as_ref() else {
            return false;
        };
        let tolerations = spec.tolerations.as_deref().unwrap_or_default();
        let tolerated = self
            .taints
            .iter()
            .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
            .all(|t| tolerates_taint(tolerations, t));
        if !tolerated {
            return false;
        }
        if let Some(sel) = &spec.node_selector
            && !sel.iter().all(|(k, v)| self.labels.get(k) == Some(v))
        {
            return false;
        }
        let required = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|na| {
                na.required_during_scheduling_ignored_during_execution
                    .as_ref()
            });
        if let Some(required) = required {
            // The scheduler's own compiled terms (a term that does not compile, or
            // has no requirements, matches no node — as kube-scheduler).
            let any = required
                .node_selector_terms
                .iter()
                .any(|t| NodeTerm::compile(t).is_ok_and(|t| t.matches(&self.name, &self.labels)));
            if !any {
                return false;
            }
        }
        true
    }

    pub(super) fn add(&mut self, s: &PodShape) {
        self.free.cpu_m -= s.res.cpu_m;
        self.free.mem_mi -= s.res.mem_mi;
        self.free.gpu -= s.res.gpu;
        self.free_pods -= 1;
        self.ports.extend(s.host_ports.iter().copied());
        if let Some(g) = &s.anti_group {
            self.groups.insert(g.clone());
        }
    }
}

/// Assigns pools by index so that the mix is exact for any node count.
pub(super) fn pool_for(i: u32, n: u32) -> &'static Pool {
    let n = u64::from(n);
    let mut upto = 0u64;
    for pool in &POOLS[1..] {
        upto += u64::from(pool.share);
        // Pools other than "general" take indices [n - n*upto/100, ...) from the end.
        if u64::from(i) >= n - n * upto / 100 {
            return pool;
        }
    }
    &POOLS[0]
}

impl Gen {
    pub(super) fn node(&mut self, i: u32, width: usize) -> (Node, NodeState) {
        let zone = ZONES[i as usize % ZONES.len()];
        let (pool, cpu_cores, mem_gi, gpus, product) = match self.profile {
            Profile::Mixed => {
                let pool = pool_for(i, self.nodes);
                let (c, m) = pool.sizes[self.rng.random_range(0..pool.sizes.len())];
                let product = (!pool.gpu_products.is_empty())
                    .then(|| pool.gpu_products[self.rng.random_range(0..pool.gpu_products.len())]);
                (Some(pool), c, m, pool.gpus, product)
            }
            _ => (None, 4, 32, 0, None),
        };
        let name = match pool {
            Some(p) => format!("{}-{i:0width$}", p.name),
            None => format!("node-{i:0width$}"),
        };
        let arch = pool.map_or("amd64", |p| p.arch);
        let mut lbl = labels(&[
            (HOSTNAME, &name),
            (ZONE, zone),
            (REGION, REGION_NAME),
            (OS, "linux"),
            (ARCH, arch),
        ]);
        let mut taints: Vec<Taint> = Vec::new();
        let mut unschedulable = false;
        let mut images = None;
        // kubelet reservations make allocatable slightly smaller than capacity.
        let (alloc_cpu, alloc_mem) = match pool {
            Some(_) => (
                cpu_cores * 1000 - 80 - 10 * cpu_cores,
                mem_gi * 1024 - 256 - 8 * mem_gi,
            ),
            None => (cpu_cores * 1000, mem_gi * 1024),
        };
        let mut cap = BTreeMap::new();
        let mut alloc = BTreeMap::new();
        cap.insert("cpu".to_string(), cpu(cpu_cores * 1000));
        cap.insert("memory".to_string(), mem(mem_gi * 1024));
        cap.insert("pods".to_string(), Quantity("110".into()));
        alloc.insert("cpu".to_string(), cpu(alloc_cpu));
        alloc.insert("memory".to_string(), mem(alloc_mem));
        alloc.insert("pods".to_string(), Quantity("110".into()));
        if let Some(p) = pool {
            lbl.insert(POOL.to_string(), p.name.to_string());
            lbl.insert(
                "node.kubernetes.io/instance-type".to_string(),
                format!("{}.{}x{}", p.name, cpu_cores, mem_gi),
            );
            for eph in [&mut cap, &mut alloc] {
                eph.insert("ephemeral-storage".to_string(), mem(200 * 1024));
                eph.insert("hugepages-2Mi".to_string(), Quantity("0".into()));
            }
            if gpus > 0 {
                cap.insert(GPU.to_string(), Quantity(gpus.to_string()));
                alloc.insert(GPU.to_string(), Quantity(gpus.to_string()));
                lbl.insert(GPU_COUNT.to_string(), gpus.to_string());
                if let Some(product) = product {
                    lbl.insert(GPU_PRODUCT.to_string(), product.to_string());
                }
            }
            for &(k, v, e) in p.taints {
                taints.push(taint(k, v, e));
                if k == "dedicated" {
                    lbl.insert(k.to_string(), v.to_string());
                }
            }
            // A few cordoned nodes (as `kubectl cordon` leaves them).
            if p.name == "general" && self.rng.random_ratio(1, 50) {
                unschedulable = true;
                taints.push(taint("node.kubernetes.io/unschedulable", "", "NoSchedule"));
            }
            let mut imgs = vec![ContainerImage {
                names: Some(vec![PAUSE_IMAGE.to_string()]),
                size_bytes: Some(320_000),
            }];
            let cached: &[usize] = if gpus > 0 {
                &[6, 7, 8, 9]
            } else {
                &[0, 1, 2, 3, 4, 5, 9]
            };
            for &k in cached {
                if self.rng.random_ratio(1, 2) {
                    let (img, mb) = IMAGES[k];
                    imgs.push(ContainerImage {
                        names: Some(vec![img.to_string()]),
                        size_bytes: Some(mb * 1_000_000),
                    });
                }
            }
            images = Some(imgs);
        }
        let cond = |t: &str, s: &str, reason: &str| NodeCondition {
            type_: t.to_string(),
            status: s.to_string(),
            reason: Some(reason.to_string()),
            ..NodeCondition::default()
        };
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(lbl.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                taints: (!taints.is_empty()).then(|| taints.clone()),
                unschedulable: unschedulable.then_some(true),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                capacity: Some(cap),
                allocatable: Some(alloc),
                conditions: Some(vec![
                    cond("Ready", "True", "KubeletReady"),
                    cond("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                    cond("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                    cond("PIDPressure", "False", "KubeletHasSufficientPID"),
                ]),
                images,
                phase: Some("Running".into()),
                ..NodeStatus::default()
            }),
        };
        let state = NodeState {
            name,
            labels: lbl,
            taints,
            free: Res {
                cpu_m: alloc_cpu,
                mem_mi: alloc_mem,
                gpu: gpus,
            },
            free_pods: 110,
            ports: BTreeSet::new(),
            groups: BTreeSet::new(),
        };
        (node, state)
    }
}
