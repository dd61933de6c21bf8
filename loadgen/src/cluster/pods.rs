//! The generator state and the pods of the `basic`, `affinity` and `spread`
//! profiles (the `mixed` profile's pods are in `mixed.rs`).

use super::*;

/// A generated pod and what binding it consumes.
#[derive(Debug, Clone)]
pub(super) struct PodShape {
    pub(super) pod: Pod,
    /// Effective request: max(sum of containers, largest init container).
    pub(super) res: Res,
    pub(super) host_ports: Vec<i32>,
    pub(super) anti_group: Option<String>,
}

/// A deployment-like group of replicas that share labels and constraints.
#[derive(Debug, Clone)]
pub(super) struct Group {
    pub(super) name: String,
    pub(super) remaining: u32,
    /// Variant chosen when the group was created.
    pub(super) variant: u32,
    pub(super) namespace: &'static str,
}

pub(super) struct Gen {
    pub(super) rng: ChaCha8Rng,
    pub(super) profile: Profile,
    pub(super) nodes: u32,
    pub(super) next_pod: u64,
    pub(super) group_seq: u32,
    /// Current open group per workload kind.
    pub(super) groups: BTreeMap<&'static str, Group>,
    /// Nodes still without a DaemonSet-style system pod (mixed profile).
    pub(super) daemon_nodes: Vec<String>,
}

pub(super) const COLORS: [&str; 6] = ["green", "blue", "red", "yellow", "purple", "orange"];
impl Gen {
    /// Returns the open group of `kind`, opening a new one of `size` replicas if needed.
    pub(super) fn group(
        &mut self,
        kind: &'static str,
        size: u32,
        variants: u32,
        namespace: &'static str,
    ) -> Group {
        let mut g = match self.groups.remove(kind) {
            Some(g) if g.remaining > 0 => g,
            _ => {
                self.group_seq += 1;
                Group {
                    name: format!("{kind}-{}", self.group_seq),
                    remaining: size.max(1),
                    variant: self.rng.random_range(0..variants.max(1)),
                    namespace,
                }
            }
        };
        g.remaining -= 1;
        self.groups.insert(kind, g.clone());
        g
    }

    pub(super) fn pod(&mut self, pending: bool, width: usize) -> PodShape {
        self.next_pod += 1;
        let idx = self.next_pod;
        match self.profile {
            Profile::Basic => self.basic_pod(idx, width),
            Profile::Affinity => self.affinity_pod(idx, width),
            Profile::Spread => self.spread_pod(idx, width),
            Profile::Mixed => self.mixed_pod(idx, width, pending),
        }
    }

    pub(super) fn basic_pod(&mut self, idx: u64, width: usize) -> PodShape {
        shape(
            format!("pod-{idx:0width$}"),
            "sched-0",
            BTreeMap::new(),
            PodSpec {
                containers: vec![default_container()],
                ..PodSpec::default()
            },
            None,
        )
    }

    pub(super) fn affinity_pod(&mut self, idx: u64, width: usize) -> PodShape {
        // Groups never exceed the node count, so a group fits with one pod per node.
        let size = self.nodes.min(25);
        let g = self.group("anti", size, 10, "sched-0");
        let ns = if idx.is_multiple_of(2) {
            "sched-0"
        } else {
            "sched-1"
        };
        let color = COLORS[(self.group_seq as usize) % COLORS.len()];
        let value = format!("{color}-{}", g.name.trim_start_matches("anti-"));
        let nss = ["sched-0", "sched-1"];
        let mut anti_group = None;
        // 70% required hostname anti-affinity (scheduler_perf), 30% preferred variants.
        let affinity = match g.variant {
            0..=6 => {
                anti_group = Some(value.clone());
                Affinity {
                    pod_anti_affinity: Some(PodAntiAffinity {
                        required_during_scheduling_ignored_during_execution: Some(vec![term(
                            "color", &value, HOSTNAME, &nss,
                        )]),
                        ..PodAntiAffinity::default()
                    }),
                    ..Affinity::default()
                }
            }
            7 | 8 => Affinity {
                pod_anti_affinity: Some(PodAntiAffinity {
                    preferred_during_scheduling_ignored_during_execution: Some(vec![
                        WeightedPodAffinityTerm {
                            weight: 1,
                            pod_affinity_term: term("color", &value, HOSTNAME, &nss),
                        },
                    ]),
                    ..PodAntiAffinity::default()
                }),
                ..Affinity::default()
            },
            _ => Affinity {
                pod_affinity: Some(PodAffinity {
                    preferred_during_scheduling_ignored_during_execution: Some(vec![
                        WeightedPodAffinityTerm {
                            weight: 1,
                            pod_affinity_term: term("color", &value, ZONE, &nss),
                        },
                    ]),
                    ..PodAffinity::default()
                }),
                ..Affinity::default()
            },
        };
        shape(
            format!("anti-affinity-pod-{idx:0width$}"),
            ns,
            labels(&[("color", &value)]),
            PodSpec {
                affinity: Some(affinity),
                containers: vec![default_container()],
                ..PodSpec::default()
            },
            anti_group,
        )
    }

    pub(super) fn spread_pod(&mut self, idx: u64, width: usize) -> PodShape {
        let g = self.group("spread", 30, 1, "sched-0");
        shape(
            format!("spreading-pod-{idx:0width$}"),
            g.namespace,
            labels(&[("app", &g.name)]),
            PodSpec {
                topology_spread_constraints: Some(vec![
                    spread("app", &g.name, ZONE, 1, "DoNotSchedule"),
                    spread("app", &g.name, HOSTNAME, 1, "ScheduleAnyway"),
                ]),
                containers: vec![default_container()],
                ..PodSpec::default()
            },
            None,
        )
    }

    pub(super) fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.random_range(0..items.len())]
    }
}
