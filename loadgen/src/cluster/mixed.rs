//! Pods of the `mixed` profile: web, batch, data, AI training/inference, system
//! (DaemonSet-style) and deliberately unschedulable pods.

use super::*;

impl Gen {
    pub(super) fn mixed_pod(&mut self, idx: u64, width: usize, pending: bool) -> PodShape {
        // Roughly 1% of pending pods are unschedulable for an explainable reason.
        if pending && idx.is_multiple_of(97) {
            return self.impossible_pod(idx, width);
        }
        match self.rng.random_range(0..100u32) {
            0..=33 => self.web_pod(idx, width),
            34..=73 => self.batch_pod(idx, width),
            74..=83 => self.data_pod(idx, width),
            84..=87 => self.training_pod(idx, width),
            88..=92 => self.inference_pod(idx, width),
            _ => self.system_pod(idx, width),
        }
    }

    pub(super) fn web_pod(&mut self, idx: u64, width: usize) -> PodShape {
        let size = self.rng.random_range(3..=12);
        let g = self.group("web", size, 4, "web");
        let app = g.name.clone();
        let image = IMAGES[(self.group_seq as usize) % 3].0;
        let r = Res {
            cpu_m: self.pick(&[250, 500, 1000]),
            mem_mi: self.pick(&[256, 512, 1024, 2048]),
            gpu: 0,
        };
        let mut anti_group = None;
        let mut ports = vec![(8080, None)];
        let mut affinity = Affinity {
            // Multi-arch images: either architecture is fine, but prefer amd64.
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![
                            req(ARCH, "In", &["amd64", "arm64"]),
                            req(GPU_PRODUCT, "DoesNotExist", &[]),
                        ]),
                        ..NodeSelectorTerm::default()
                    }],
                }),
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    PreferredSchedulingTerm {
                        weight: 20,
                        preference: NodeSelectorTerm {
                            match_expressions: Some(vec![req(ARCH, "In", &["amd64"])]),
                            ..NodeSelectorTerm::default()
                        },
                    },
                ]),
            }),
            ..Affinity::default()
        };
        let mut spreads = vec![spread("app", &app, ZONE, 1, "DoNotSchedule")];
        match g.variant {
            0 | 1 => {
                anti_group = Some(app.clone());
                affinity.pod_anti_affinity = Some(PodAntiAffinity {
                    required_during_scheduling_ignored_during_execution: Some(vec![term(
                        "app",
                        &app,
                        HOSTNAME,
                        &[],
                    )]),
                    ..PodAntiAffinity::default()
                });
            }
            2 => {
                affinity.pod_anti_affinity = Some(PodAntiAffinity {
                    preferred_during_scheduling_ignored_during_execution: Some(vec![
                        WeightedPodAffinityTerm {
                            weight: 100,
                            pod_affinity_term: term("app", &app, HOSTNAME, &[]),
                        },
                    ]),
                    ..PodAntiAffinity::default()
                });
                spreads.push(spread("app", &app, HOSTNAME, 1, "ScheduleAnyway"));
            }
            _ => {
                // Edge proxies bind a host port, which also keeps replicas apart.
                ports = vec![(8443, Some(8443))];
            }
        }
        shape(
            format!("{app}-{idx:0width$}"),
            g.namespace,
            labels(&[("app", &app), ("tier", "frontend")]),
            PodSpec {
                affinity: Some(affinity),
                topology_spread_constraints: Some(spreads),
                containers: vec![container("app", image, r, false, &ports)],
                priority_class_name: Some("gold".into()),
                ..PodSpec::default()
            },
            anti_group,
        )
    }

    pub(super) fn batch_pod(&mut self, idx: u64, width: usize) -> PodShape {
        let size = self.rng.random_range(5..=40);
        let g = self.group("batch", size, 3, "batch");
        let r = Res {
            cpu_m: self.pick(&[250, 500, 1000, 2000]),
            mem_mi: self.pick(&[1024, 2048, 4096, 8192]),
            gpu: 0,
        };
        let image = if g.variant == 0 {
            IMAGES[4].0
        } else {
            IMAGES[3].0
        };
        let mut spec = PodSpec {
            containers: vec![container("worker", image, r, false, &[])],
            priority_class_name: Some(
                if g.variant == 2 {
                    "batch-low"
                } else {
                    "normal"
                }
                .into(),
            ),
            ..PodSpec::default()
        };
        if g.variant != 0 {
            // amd64-only binaries; stay off the GPU pools.
            spec.affinity = Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_expressions: Some(vec![
                                req(ARCH, "In", &["amd64"]),
                                req(POOL, "NotIn", &["gpu-train", "gpu-infer"]),
                            ]),
                            ..NodeSelectorTerm::default()
                        }],
                    }),
                    ..NodeAffinity::default()
                }),
                ..Affinity::default()
            });
        } else {
            spec.node_selector = Some(labels(&[(OS, "linux")]));
        }
        if g.variant == 1 {
            // Stage input with an init container that needs more CPU than the worker.
            let init = Res {
                cpu_m: r.cpu_m * 2,
                mem_mi: 512,
                gpu: 0,
            };
            spec.init_containers = Some(vec![container("stage-in", IMAGES[4].0, init, false, &[])]);
        }
        shape(
            format!("{}-{idx:0width$}", g.name),
            g.namespace,
            labels(&[("job-name", &g.name), ("app", "etl")]),
            spec,
            None,
        )
    }

    pub(super) fn data_pod(&mut self, idx: u64, width: usize) -> PodShape {
        let size = self.rng.random_range(4..=16);
        let g = self.group("spark", size, 2, "data");
        let r = Res {
            cpu_m: self.pick(&[1000, 2000, 4000]),
            mem_mi: self.pick(&[8192, 16384, 24576]),
            gpu: 0,
        };
        let spec = PodSpec {
            containers: vec![container("executor", IMAGES[5].0, r, false, &[])],
            priority_class_name: Some("normal".into()),
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_expressions: Some(vec![
                                req(POOL, "In", &["highmem", "general"]),
                                req(ZONE, "Exists", &[]),
                            ]),
                            ..NodeSelectorTerm::default()
                        }],
                    }),
                    preferred_during_scheduling_ignored_during_execution: Some(vec![
                        PreferredSchedulingTerm {
                            weight: 50,
                            preference: NodeSelectorTerm {
                                match_expressions: Some(vec![req(POOL, "In", &["highmem"])]),
                                ..NodeSelectorTerm::default()
                            },
                        },
                    ]),
                }),
                // Executors of one application like to share a zone (shuffle traffic).
                pod_affinity: Some(PodAffinity {
                    preferred_during_scheduling_ignored_during_execution: Some(vec![
                        WeightedPodAffinityTerm {
                            weight: 80,
                            pod_affinity_term: term("spark-app", &g.name, ZONE, &[]),
                        },
                    ]),
                    ..PodAffinity::default()
                }),
                ..Affinity::default()
            }),
            ..PodSpec::default()
        };
        shape(
            format!("{}-exec-{idx:0width$}", g.name),
            g.namespace,
            labels(&[("spark-app", &g.name), ("spark-role", "executor")]),
            spec,
            None,
        )
    }

    pub(super) fn training_pod(&mut self, idx: u64, width: usize) -> PodShape {
        let size = self.pick(&[1, 1, 2, 4]);
        // Every worker of a job asks for the same GPU model and count.
        let g = self.group("train", size, 12, "ai-training");
        let product = POOLS[4].gpu_products[g.variant as usize % 2];
        let gpus = [1, 1, 2, 4, 4, 8][g.variant as usize / 2];
        let r = Res {
            cpu_m: gpus * 10_000,
            mem_mi: gpus * 64 * 1024,
            gpu: gpus,
        };
        let init = Res {
            cpu_m: 1000,
            mem_mi: 2048,
            gpu: 0,
        };
        let spec = PodSpec {
            init_containers: Some(vec![container(
                "fetch-checkpoint",
                IMAGES[4].0,
                init,
                false,
                &[],
            )]),
            containers: vec![container(
                "trainer",
                IMAGES[6].0,
                r,
                false,
                &[(29500, None)],
            )],
            node_selector: Some(labels(&[(GPU_PRODUCT, product)])),
            tolerations: Some(vec![
                toleration("dedicated", "Equal", "ai", "NoSchedule"),
                toleration(GPU, "Exists", "", "NoSchedule"),
            ]),
            priority_class_name: Some("diamond".into()),
            ..PodSpec::default()
        };
        shape(
            format!("{}-worker-{idx:0width$}", g.name),
            g.namespace,
            labels(&[("training-job", &g.name), ("framework", "pytorch")]),
            spec,
            None,
        )
    }

    pub(super) fn inference_pod(&mut self, idx: u64, width: usize) -> PodShape {
        let size = self.rng.random_range(2..=6);
        let g = self.group("llm", size, 2, "ai-inference");
        let r = Res {
            cpu_m: 4000,
            mem_mi: 16384,
            gpu: 1,
        };
        let image = if g.variant == 0 {
            IMAGES[7].0
        } else {
            IMAGES[8].0
        };
        let spec = PodSpec {
            containers: vec![container("server", image, r, false, &[(8000, None)])],
            tolerations: Some(vec![toleration(GPU, "Exists", "", "NoSchedule")]),
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_expressions: Some(vec![
                                req(GPU_PRODUCT, "Exists", &[]),
                                req("dedicated", "DoesNotExist", &[]),
                            ]),
                            ..NodeSelectorTerm::default()
                        }],
                    }),
                    ..NodeAffinity::default()
                }),
                ..Affinity::default()
            }),
            topology_spread_constraints: Some(vec![spread(
                "app",
                &g.name,
                ZONE,
                1,
                "ScheduleAnyway",
            )]),
            priority_class_name: Some("gold".into()),
            ..PodSpec::default()
        };
        shape(
            format!("{}-{idx:0width$}", g.name),
            g.namespace,
            labels(&[("app", &g.name)]),
            spec,
            None,
        )
    }

    /// A DaemonSet-style node-exporter pinned to one node (`matchFields` on
    /// `metadata.name`, as the DaemonSet controller does); a batch pod once every
    /// node has one.
    pub(super) fn system_pod(&mut self, idx: u64, width: usize) -> PodShape {
        let Some(node) = self.daemon_nodes.pop() else {
            return self.batch_pod(idx, width);
        };
        let r = Res {
            cpu_m: 100,
            mem_mi: 128,
            gpu: 0,
        };
        let spec = PodSpec {
            containers: vec![container(
                "node-exporter",
                IMAGES[9].0,
                r,
                true,
                &[(9100, Some(9100))],
            )],
            tolerations: Some(vec![toleration("", "Exists", "", "")]),
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_fields: Some(vec![req("metadata.name", "In", &[&node])]),
                            ..NodeSelectorTerm::default()
                        }],
                    }),
                    ..NodeAffinity::default()
                }),
                ..Affinity::default()
            }),
            priority_class_name: Some("corral-critical".into()),
            ..PodSpec::default()
        };
        shape(
            format!("node-exporter-{idx:0width$}"),
            "monitoring",
            labels(&[("app", "node-exporter")]),
            spec,
            None,
        )
    }

    /// Pending pods that no node can take, each for a distinct, explainable reason.
    pub(super) fn impossible_pod(&mut self, idx: u64, width: usize) -> PodShape {
        let kind = (idx / 97) % 3;
        let (name, ns, spec) = match kind {
            // A GPU model nobody has.
            0 => (
                "train-b200",
                "ai-training",
                PodSpec {
                    containers: vec![container(
                        "trainer",
                        IMAGES[6].0,
                        Res {
                            cpu_m: 16_000,
                            mem_mi: 131_072,
                            gpu: 8,
                        },
                        false,
                        &[],
                    )],
                    node_selector: Some(labels(&[(GPU_PRODUCT, "NVIDIA-B200")])),
                    tolerations: Some(vec![
                        toleration("dedicated", "Equal", "ai", "NoSchedule"),
                        toleration(GPU, "Exists", "", "NoSchedule"),
                    ]),
                    priority_class_name: Some("diamond".into()),
                    ..PodSpec::default()
                },
            ),
            // More CPU than any node has.
            1 => (
                "etl-huge",
                "batch",
                PodSpec {
                    containers: vec![container(
                        "worker",
                        IMAGES[3].0,
                        Res {
                            cpu_m: 256_000,
                            mem_mi: 65_536,
                            gpu: 0,
                        },
                        false,
                        &[],
                    )],
                    priority_class_name: Some("normal".into()),
                    ..PodSpec::default()
                },
            ),
            // GPUs without tolerating the GPU taints.
            _ => (
                "notebook-no-toleration",
                "ai-inference",
                PodSpec {
                    containers: vec![container(
                        "jupyter",
                        IMAGES[6].0,
                        Res {
                            cpu_m: 2000,
                            mem_mi: 8192,
                            gpu: 1,
                        },
                        false,
                        &[],
                    )],
                    priority_class_name: Some("normal".into()),
                    ..PodSpec::default()
                },
            ),
        };
        shape(
            format!("{name}-{idx:0width$}"),
            ns,
            labels(&[("app", name)]),
            spec,
            None,
        )
    }
}
