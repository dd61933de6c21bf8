//! Opening a session, in named steps: [`build_queues`] (hierarchy checked, cycles
//! broken), [`jobs_from_groups`] (one job per PodGroup), then a [`JobBuilder`] that
//! adds the running pods ([`JobBuilder::add_indexed_running`]: aggregates from the
//! cached running index; or every pod with `eager`), the pending pods, and the
//! running members of the jobs with pending tasks
//! ([`JobBuilder::load_pending_jobs`]), and finally the [`Session`] value with its
//! usage and the plugins opened.

use super::*;

impl Session {
    /// [`Session::open`], or with `eager` the straightforward build: every running
    /// pod becomes a task of a job (a one-pod job per plain pod), nothing cached —
    /// the reference the equivalence tests compare `open` against.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open_with(
        mut sched: Scheduler,
        pending: Vec<Arc<PodInfo>>,
        objs: &BatchObjects,
        plugins: Vec<Arc<dyn SessionPlugin>>,
        actions: Vec<Action>,
        now: i64,
        carry: &Carry,
        eager: bool,
    ) -> Session {
        with_session_fit(&mut sched);
        let (queues, queue_index) = build_queues(objs);
        let (jobs, group_index) = jobs_from_groups(objs, &queues, &queue_index, carry);
        let default_q = queue_index.get(DEFAULT_QUEUE).copied();
        let mut b = JobBuilder {
            queues: &queues,
            queue_index: &queue_index,
            default_q,
            jobs,
            group_index,
        };
        let running_index = carry.running.clone();
        let mut loaded = 0;
        let running = if eager {
            let r = b.add_all_running(&sched);
            for p in pending {
                let m = membership(&p);
                b.add_pod(p.clone(), Task::new(p), m.as_ref(), false);
            }
            r
        } else {
            // A poisoned lock only means a panic elsewhere mid-refresh: start over.
            let mut idx = running_index.lock().unwrap_or_else(|e| {
                let mut g = e.into_inner();
                *g = RunningIndex::default();
                g
            });
            idx.refresh(&sched.snapshot);
            let r = b.add_indexed_running(&sched.snapshot, &idx, &mut loaded);
            for p in pending {
                let m = membership(&p);
                b.add_pod(p.clone(), Task::new(p), m.as_ref(), false);
            }
            b.load_pending_jobs(&sched.snapshot, &idx, &mut loaded);
            r
        };
        let JobBuilder {
            mut jobs,
            group_index,
            ..
        } = b;
        // Groups whose priority class was not set take their pods' highest priority.
        for j in &mut jobs {
            if j.priority == i32::MIN {
                j.priority = 0;
            }
        }
        let mut ssn = Session {
            sched,
            queues,
            queue_index,
            jobs,
            quotas: objs.quotas.clone(),
            total: running.total,
            used: ResMap::default(),
            inqueue: ResMap::default(),
            ns_used: HashMap::new(),
            ns_pods: HashMap::new(),
            now,
            plugins: plugins.clone(),
            actions,
            placements: Vec::new(),
            evictions: Vec::new(),
            pod_messages: HashMap::new(),
            batches: 0,
            conflicts: 0,
            evaluate_ms: 0.0,
            commit_ms: 0.0,
            annotations: BTreeMap::new(),
            equivalence: HashMap::new(),
            node_local: HashMap::new(),
            nominated_nodes: carry.nominated.clone(),
            nominated: Vec::new(),
            evicted: Vec::new(),
            unevictable: carry.unevictable.clone(),
            first_attempt: carry.first_attempt.clone(),
            backoff_until: carry.backoff_until.clone(),
            pod_group_backoff: None,
            topology: Arc::default(),
            hyper_capacity: None,
            plain_lazy: !eager,
            plain_running: running.plain,
            running_index,
            group_index,
            members_loaded: loaded,
            status_only: None,
        };
        ssn.recompute_usage();
        for p in &plugins {
            p.on_open(&mut ssn);
        }
        ssn
    }
}

/// The session's queues (the implicit `default` added when missing) and their
/// index by name. Parent links are resolved; a queue whose parent is missing, itself,
/// part of a cycle or invalid gets an error, and its parent link is dropped so that
/// walks up the hierarchy always terminate.
fn build_queues(objs: &BatchObjects) -> (Vec<Queue>, HashMap<String, usize>) {
    let mut specs: Vec<QueueSpec> = objs.queues.clone();
    if !specs.iter().any(|q| q.name == DEFAULT_QUEUE) {
        specs.push(QueueSpec::implicit(DEFAULT_QUEUE));
    }
    let queue_index: HashMap<String, usize> = specs
        .iter()
        .enumerate()
        .map(|(i, q)| (q.name.clone(), i))
        .collect();
    let mut queues: Vec<Queue> = specs
        .into_iter()
        .map(|spec| Queue {
            spec,
            parent: None,
            children: Vec::new(),
            error: None,
            allocated: ResMap::default(),
            request: ResMap::default(),
            deserved: ResMap::default(),
            inqueue: ResMap::default(),
            real_capability: None,
        })
        .collect();
    for i in 0..queues.len() {
        if let Some(p) = queues[i].spec.parent.clone() {
            match queue_index.get(&p) {
                Some(&pi) if pi != i => {
                    queues[i].parent = Some(pi);
                    queues[pi].children.push(i);
                }
                Some(_) => queues[i].error = Some(format!("queue {p} is its own parent")),
                None => queues[i].error = Some(format!("parent queue {p:?} not found")),
            }
        }
    }
    // Cycles and invalid ancestors.
    for i in 0..queues.len() {
        let mut seen = HashSet::from([i]);
        let mut cur = queues[i].parent;
        while let Some(c) = cur {
            if !seen.insert(c) {
                queues[i].error = Some(format!(
                    "cycle in queue parents involving {}",
                    queues[i].spec.name
                ));
                break;
            }
            if queues[c].error.is_some() && queues[i].error.is_none() {
                queues[i].error =
                    Some(format!("ancestor queue {} is invalid", queues[c].spec.name));
            }
            cur = queues[c].parent;
        }
    }
    // Break cycles so that walks up the hierarchy always terminate.
    for i in 0..queues.len() {
        if queues[i].error.is_some()
            && let Some(p) = queues[i].parent.take()
        {
            queues[p].children.retain(|&c| c != i);
        }
    }
    (queues, queue_index)
}

/// One job per PodGroup (in the objects' order), with the error that keeps it from
/// scheduling (missing, invalid or non-leaf queue; the group's own error).
fn jobs_from_groups(
    objs: &BatchObjects,
    queues: &[Queue],
    queue_index: &HashMap<String, usize>,
    carry: &Carry,
) -> (Vec<Job>, HashMap<(GroupApi, String), usize>) {
    let mut jobs: Vec<Job> = Vec::with_capacity(objs.groups.len());
    let mut group_index: HashMap<(GroupApi, String), usize> =
        HashMap::with_capacity(objs.groups.len());
    for (gi, g) in objs.groups.iter().enumerate() {
        let (queue, error) = match queue_index.get(&g.queue) {
            None => (None, Some(format!("queue {:?} not found", g.queue))),
            Some(&qi) if queues[qi].error.is_some() => (
                Some(qi),
                Some(format!(
                    "queue {} is invalid: {}",
                    g.queue,
                    queues[qi].error.clone().unwrap_or_default()
                )),
            ),
            Some(&qi) if !queues[qi].children.is_empty() => (
                Some(qi),
                Some(format!(
                    "queue {} has child queues; jobs must use a leaf queue",
                    g.queue
                )),
            ),
            Some(&qi) => (Some(qi), g.error.clone()),
        };
        // The key is built once per group ("ns/name": a format per use before).
        let key = g.key();
        let inqueue = carry.admitted.contains(&key)
            || matches!(g.phase.as_deref(), Some("Inqueue" | "Running"));
        group_index.insert((g.api, key.clone()), jobs.len());
        jobs.push(Job {
            key,
            group: Some(g.api),
            namespace: g.namespace.clone(),
            queue,
            min_member: g.min_member as usize,
            // Volcano: when minMember is below the sum of minTaskMember, the
            // per-task minimums are not checked (only minMember is).
            min_task_member: if u64::from(g.min_member)
                < g.min_task_member
                    .values()
                    .map(|v| u64::from(*v))
                    .sum::<u64>()
            {
                BTreeMap::new()
            } else {
                g.min_task_member
                    .iter()
                    .map(|(k, v)| (k.clone(), *v as usize))
                    .collect()
            },
            min_resources: g.min_resources.clone(),
            priority: g.priority.unwrap_or(i32::MIN),
            created: g.created,
            seq: gi as u64,
            pending: Vec::new(),
            running: RunningTasks::default(),
            annotations: g.annotations.clone(),
            labels: g.labels.clone(),
            inqueue,
            message: None,
            error,
            pipelined: Vec::new(),
            schedule_timeout: g.schedule_timeout_seconds.map(i64::from),
            reason: None,
        });
    }
    (jobs, group_index)
}

/// The job of a pod whose PodGroup object does not exist: it waits with an error.
fn missing_group_job(m: &(GroupApi, String), p: &PodInfo, queue: Option<usize>) -> Job {
    Job {
        key: m.1.clone(),
        group: Some(m.0),
        namespace: p.namespace.clone(),
        queue,
        min_member: 1,
        min_task_member: BTreeMap::new(),
        min_resources: None,
        priority: i32::MIN,
        created: p.created,
        seq: u64::MAX,
        pending: Vec::new(),
        running: RunningTasks::default(),
        annotations: BTreeMap::new(),
        labels: BTreeMap::new(),
        inqueue: false,
        message: None,
        error: Some(format!("PodGroup {} not found", m.1)),
        pipelined: Vec::new(),
        schedule_timeout: None,
        reason: None,
    }
}

/// What the running pods contribute besides their tasks.
struct Running {
    /// Allocatable of all nodes.
    total: ResMap,
    /// Plain running pods' usage per (queue, namespace) (lazy build only).
    plain: Vec<PlainUsage>,
}

/// Adds pods to their jobs: a gang member to its group's job (created with an error
/// when the PodGroup is missing), a plain pod to a one-pod job in its queue.
struct JobBuilder<'a> {
    queues: &'a [Queue],
    queue_index: &'a HashMap<String, usize>,
    default_q: Option<usize>,
    jobs: Vec<Job>,
    group_index: HashMap<(GroupApi, String), usize>,
}

impl JobBuilder<'_> {
    fn add_pod(&mut self, p: Arc<PodInfo>, t: Task, m: Option<&(GroupApi, String)>, running: bool) {
        let ji = match m {
            Some(m) => match self.group_index.get(m) {
                Some(&ji) => ji,
                None => {
                    let ji = self.jobs.len();
                    self.group_index.insert(m.clone(), ji);
                    self.jobs.push(missing_group_job(m, &p, self.default_q));
                    ji
                }
            },
            None => {
                // The queue of a plain pod: its annotation, else the default queue.
                let q = plain_queue(
                    self.queue_index,
                    self.queues,
                    self.default_q,
                    annotations(&p).and_then(|a| a.get(ANN_QUEUE_NAME)),
                );
                self.jobs.push(plain_job(&p, q));
                self.jobs.len() - 1
            }
        };
        let j = &mut self.jobs[ji];
        if j.group.is_some() {
            // A Volcano PodGroup's priority is its own (priorityClassName, else
            // the default); other groups take their pods' highest priority.
            if j.group == Some(GroupApi::Coscheduling) || j.error.is_some() {
                j.priority = j.priority.max(p.priority);
            }
            if j.seq == u64::MAX || (j.seq > p.seq && j.created == 0) {
                j.seq = j.seq.min(p.seq);
            }
        }
        if running {
            j.running.push(t);
        } else {
            j.pending.push(t);
        }
    }

    /// The straightforward build: every pod of every node becomes a task.
    fn add_all_running(&mut self, sched: &Scheduler) -> Running {
        let mut out = Running {
            total: ResMap::default(),
            plain: Vec::new(),
        };
        for n in sched.snapshot.nodes() {
            out.total.add(&ResMap::from_resources(&n.allocatable));
            for p in &n.pods {
                self.add_pod(
                    p.clone(),
                    Task::new(p.clone()),
                    membership(p).as_ref(),
                    true,
                );
            }
        }
        out
    }

    /// The running pods from the index (refreshed for `snap`): plain pods as usage
    /// only; gangs as aggregates ([`RunningTasks::summarized`]) with what every
    /// member would have contributed to its job (priority, seq); the members of a
    /// group without a PodGroup object as tasks of its error job (created in the
    /// order the straightforward build meets them). Costs O(running groups), not
    /// O(running members): no member task is built or copied.
    fn add_indexed_running(
        &mut self,
        snap: &Snapshot,
        idx: &RunningIndex,
        loaded: &mut usize,
    ) -> Running {
        let mut out = Running {
            total: idx.total(),
            plain: Vec::new(),
        };
        let mut missing: Vec<((usize, usize), &GroupKey)> = Vec::new();
        for (k, g) in idx.groups() {
            let Some(&ji) = self.group_index.get(k) else {
                if let Some(pos) = idx.first_member(snap, k) {
                    missing.push((pos, k));
                }
                continue;
            };
            let j = &mut self.jobs[ji];
            // What `add_pod` does for each member, from the aggregates.
            if (j.group == Some(GroupApi::Coscheduling) || j.error.is_some())
                && let Some(p) = g.max_priority()
            {
                j.priority = j.priority.max(p);
            }
            if let Some(s) = g.min_seq()
                && (j.seq == u64::MAX || (j.seq > s && j.created == 0))
            {
                j.seq = j.seq.min(s);
            }
            j.running = RunningTasks::summarized(g.summary());
        }
        missing.sort_unstable_by_key(|(pos, _)| *pos);
        for (_, k) in missing {
            for t in idx.members_of(snap, k) {
                *loaded += 1;
                self.add_pod(t.pod.clone(), t, Some(k), true);
            }
        }
        for ((qname, ns), b) in idx.plain() {
            out.plain.push(PlainUsage {
                queue: plain_queue(
                    self.queue_index,
                    self.queues,
                    self.default_q,
                    qname.as_ref(),
                )
                .0,
                namespace: ns.clone(),
                alloc: b.req.to_resmap(),
                pods: b.pods,
            });
        }
        out
    }

    /// Jobs with pending tasks get their running members as tasks (allocate,
    /// the gang plugin and topology placement look at them); the others keep
    /// their aggregates.
    fn load_pending_jobs(&mut self, snap: &Snapshot, idx: &RunningIndex, loaded: &mut usize) {
        for j in &mut self.jobs {
            if j.pending.is_empty() || j.running.loaded() {
                continue;
            }
            let Some(api) = j.group else { continue };
            let tasks = idx.members_of(snap, &(api, j.key.clone()));
            *loaded += tasks.len();
            j.running.load(tasks);
        }
    }
}
