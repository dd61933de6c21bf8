//! The victim-selection engine shared by `preempt` and `reclaim` (they differ in
//! scope, [`EvictMode`]).

use super::*;

/// A tentative eviction: (job, pod, node it was on).
pub(super) struct Evicted {
    job: usize,
    pod: Arc<PodInfo>,
    node: String,
    whole_gang: bool,
}

/// Chosen victims on one node for one task.
pub(super) struct NodeChoice {
    node: usize,
    victims: Vec<(usize, String)>,
    collateral: Vec<(usize, String)>,
    /// (victims, highest (job priority, task priority) among them).
    cost: (usize, (i32, i32)),
}

/// preempt (mode Preempt, inside a queue) and reclaim (mode Reclaim, across queues):
/// for each starving job, find the fewest, lowest-priority victims (gang-aware,
/// protected pods excluded by the plugins) that let enough of its tasks be placed to
/// make it ready; evict only when the placement then succeeds.
pub fn evict(ssn: &mut Session, mode: EvictMode) {
    let mut cands: Vec<usize> = (0..ssn.jobs.len())
        .filter(|&j| {
            let job = &ssn.jobs[j];
            job.inqueue
                && job.queue.is_some()
                && job.pipelined.is_empty()
                && ssn.backing_off(j).is_none()
                && !job.pending.is_empty()
                // preempt: a job with a `preemptionPolicy: Never` task waits whole;
                // reclaim (as Volcano) only skips those tasks and still reclaims for
                // the others.
                && match mode {
                    EvictMode::Preempt => !job.pending.iter().any(|t| never_preempts(&t.pod)),
                    EvictMode::Reclaim => job.pending.iter().any(|t| !never_preempts(&t.pod)),
                }
                && !job.pending.iter().any(|t| awaits_victims(ssn, &t.pod))
                && ssn.job_valid(j).is_ok()
                && ssn.job_starving(j)
        })
        .collect();
    if cands.is_empty() {
        return;
    }
    // Victims may be plain running pods: build their jobs now.
    ssn.materialize_running();
    cands.sort_by(|&a, &b| ssn.job_cmp(a, b));
    // Running pod → job.
    let mut owner: HashMap<String, usize> = HashMap::new();
    for (j, job) in ssn.jobs.iter().enumerate() {
        for t in job.running.tasks() {
            owner.insert(t.pod.key.clone(), j);
        }
    }
    for j in cands {
        let Some(q) = ssn.jobs[j].queue else { continue };
        if mode == EvictMode::Reclaim && ssn.overused(q) {
            continue;
        }
        try_evict_for(ssn, mode, j, &mut owner);
    }
}

/// kube-scheduler's rule: a pod nominated to a node where lower-priority pods are
/// still terminating is waiting for an earlier preemption to complete; evicting more
/// for it would take victims twice (e.g. after a scheduler restart lost the wait).
pub(super) fn awaits_victims(ssn: &Session, p: &PodInfo) -> bool {
    let Some(n) = p
        .pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        .filter(|n| !n.is_empty())
    else {
        return false;
    };
    ssn.sched.snapshot.node(n).is_some_and(|node| {
        node.pods
            .iter()
            .any(|q| q.pod.metadata.deletion_timestamp.is_some() && q.priority < p.priority)
    })
}

/// `preemptionPolicy: Never` pods wait instead of evicting others.
pub(super) fn never_preempts(p: &PodInfo) -> bool {
    p.spec().and_then(|s| s.preemption_policy.as_deref()) == Some("Never")
}

pub(super) fn running_task(ssn: &Session, j: usize, key: &str) -> Option<usize> {
    ssn.jobs[j]
        .running
        .tasks()
        .iter()
        .position(|t| t.pod.key == key)
}

/// Tasks of job `j` that must be placed to make it ready (role deficits first);
/// with `skip_never`, `preemptionPolicy: Never` tasks are never chosen.
pub(super) fn needed_tasks(ssn: &Session, j: usize, skip_never: bool) -> Vec<usize> {
    let job = &ssn.jobs[j];
    let eligible = |t: &Task| !skip_never || !never_preempts(&t.pod);
    let need = job.min_member.saturating_sub(job.running.len()).max(1);
    let mut out: Vec<usize> = Vec::new();
    for (role, n) in &job.min_task_member {
        let have = job.running.with_role(role);
        out.extend(
            job.pending
                .iter()
                .enumerate()
                .filter(|(_, t)| t.has_role(role) && eligible(t))
                .map(|(i, _)| i)
                .take(n.saturating_sub(have)),
        );
    }
    for i in 0..job.pending.len() {
        if out.len() >= need {
            break;
        }
        if !out.contains(&i) && eligible(&job.pending[i]) {
            out.push(i);
        }
    }
    out
}

pub(super) fn try_evict_for(
    ssn: &mut Session,
    mode: EvictMode,
    j: usize,
    owner: &mut HashMap<String, usize>,
) {
    let needed = needed_tasks(ssn, j, mode == EvictMode::Reclaim);
    if needed.is_empty() {
        return;
    }
    // The preemptor's queue must be able to take it (capability).
    let mut req = ResMap::default();
    for &i in &needed {
        req.add(&ssn.jobs[j].pending[i].req);
    }
    // Preempt: victims of the same queue give their share back, so the check is
    // made with them freed (in `choose_node`); reclaim checks up front.
    if mode == EvictMode::Reclaim
        && let Some(q) = ssn.jobs[j].queue
        && (!ssn.allocatable(q, &req) || ssn.within_share(q, &req).is_err())
    {
        return;
    }
    let mut evicted: Vec<Evicted> = Vec::new();
    let mut placed: Vec<(usize, String)> = Vec::new(); // (pending idx, node)
    let mut ok = true;
    for &ti in &needed {
        let t = ssn.jobs[j].pending[ti].clone();
        let mut counts: HashMap<usize, usize> = HashMap::new();
        for e in &evicted {
            *counts.entry(e.job).or_insert(0) += 1;
        }
        // What the queue still has to take: the needed tasks not placed yet, less
        // what same-queue victims chosen so far free.
        let mut queue_req = ResMap::default();
        for &i in &needed[placed.len()..] {
            queue_req.add(&ssn.jobs[j].pending[i].req);
        }
        for e in evicted
            .iter()
            .filter(|e| ssn.jobs[e.job].queue == ssn.jobs[j].queue)
        {
            queue_req.sub(&ResMap::from_resources(&e.pod.requests.requests));
        }
        let Some(choice) = choose_node(ssn, mode, j, &t, owner, &counts, &queue_req) else {
            ok = false;
            break;
        };
        let node_name = ssn.sched.snapshot.nodes()[choice.node].name.to_string();
        for (vj, key, whole) in choice
            .victims
            .iter()
            .map(|(a, b)| (*a, b, false))
            .chain(choice.collateral.iter().map(|(a, b)| (*a, b, true)))
        {
            let node = ssn.sched.snapshot.pod_node(key).map(|n| n.to_string());
            if let (Some(node), Some(pod)) = (node, ssn.sched.snapshot.remove_pod(key)) {
                evicted.push(Evicted {
                    job: vj,
                    pod,
                    node,
                    whole_gang: whole,
                });
            }
        }
        ssn.sched.snapshot.add_pod(t.pod.clone(), &node_name);
        if !reserve_volumes(ssn, &t.pod, &node_name) {
            ssn.sched.snapshot.remove_pod(&t.pod.key);
            ok = false;
            break;
        }
        placed.push((ti, node_name));
    }
    let ready = ok && {
        let job = &ssn.jobs[j];
        let all: Vec<&Task> = job
            .running
            .tasks()
            .iter()
            .chain(placed.iter().map(|(i, _)| &job.pending[*i]))
            .collect();
        ssn.job_ready(j, &all).is_ok()
    };
    if !ready || evicted.is_empty() {
        // Roll back: the preemptor is not placed, every victim stays.
        for (i, _) in &placed {
            let k = ssn.jobs[j].pending[*i].pod.key.clone();
            ssn.sched.snapshot.remove_pod(&k);
        }
        for e in evicted {
            ssn.sched.snapshot.add_pod(e.pod, &e.node);
        }
        if !ready && ssn.jobs[j].message.is_none() {
            ssn.jobs[j].message = Some("no victims found that would let the job be placed".into());
        }
        return;
    }
    // Commit the evictions; the preemptor is pipelined onto the freed nodes.
    let pj = ssn.jobs[j].clone();
    let pq = pj
        .queue
        .map(|q| ssn.queues[q].spec.name.clone())
        .unwrap_or_default();
    for e in &evicted {
        let Some(ti) = running_task(ssn, e.job, &e.pod.key) else {
            continue;
        };
        let t = ssn.jobs[e.job].running.remove(ti);
        owner.remove(&t.pod.key);
        let (vq, ns) = (ssn.jobs[e.job].queue, ssn.jobs[e.job].namespace.clone());
        ssn.charge(vq, &ns, &t.req, false);
        let vqn = vq
            .map(|q| ssn.queues[q].spec.name.clone())
            .unwrap_or_default();
        let mut reason = match mode {
            EvictMode::Preempt => format!(
                "preempted in queue {vqn} by higher-priority job {} (priority {} > {})",
                pj.key, pj.priority, ssn.jobs[e.job].priority
            ),
            EvictMode::Reclaim => format!(
                "reclaimed by queue {pq} (job {}): queue {vqn} is above its deserved share",
                pj.key
            ),
        };
        if e.whole_gang {
            reason.push_str(&format!(
                "; whole gang {} evicted (would fall below minMember {})",
                ssn.jobs[e.job].key, ssn.jobs[e.job].min_member
            ));
        }
        ssn.evicted.push((e.pod.clone(), e.node.clone()));
        ssn.evictions.push(Eviction {
            pod: e.pod.key.clone(),
            preemptor: pj.key.clone(),
            reason,
        });
    }
    let mut keys = Vec::new();
    for (i, node) in &placed {
        let t = ssn.jobs[j].pending[*i].clone();
        ssn.charge(pj.queue, &pj.namespace, &t.req, true);
        keys.push(t.pod.key.clone());
        ssn.nominated.push(Placement {
            pod: t.pod.key.clone(),
            node: node.clone(),
        });
    }
    ssn.jobs[j].pipelined = keys;
    ssn.jobs[j].message = Some(format!(
        "pipelined: {} task(s) placed after evicting {} pod(s); binding once they terminate",
        placed.len(),
        evicted.len()
    ));
}

pub(super) fn start_time(p: &PodInfo) -> i64 {
    p.pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0.as_second())
        .unwrap_or(0)
}

/// Reserve for a task placed on a node freed by eviction (the committer's
/// `bind_cycle` does this for pods placed by the core): VolumeBinding's decisions —
/// the PVs it takes, the claims it provisions there — are assumed in the snapshot,
/// so no later pod of the session takes them; removing the task (rollback)
/// forgets them. False when Reserve rejects the node (then nothing is kept).
fn reserve_volumes(ssn: &mut Session, pod: &PodInfo, node: &str) -> bool {
    let snap = &ssn.sched.snapshot;
    let Some(fi) = ssn.sched.framework_for(&pod.scheduler_name) else {
        return true;
    };
    let fw = &ssn.sched.frameworks[fi];
    let mut state = CycleState::new();
    if fw.run_pre_filter(&mut state, pod, snap).is_err() {
        return false;
    }
    if fw.run_reserve(&mut state, pod, node, snap).is_err() {
        return false;
    }
    let b = state
        .read::<corral_core::volumes::PodVolumeBindings>(corral_core::volumes::BINDINGS_STATE_KEY)
        .cloned();
    // Only the volume decisions outlive this cycle (the pod binds once its victims
    // terminate and is scheduled through the full cycle then).
    fw.run_unreserve(&mut state, pod, node, snap);
    if let Some(b) = b {
        ssn.sched.snapshot.assume_volumes(&pod.key, b);
    }
    true
}

pub(super) fn choose_node(
    ssn: &Session,
    mode: EvictMode,
    j: usize,
    t: &Task,
    owner: &HashMap<String, usize>,
    tx_counts: &HashMap<usize, usize>,
    queue_req: &ResMap,
) -> Option<NodeChoice> {
    let snap = &ssn.sched.snapshot;
    let fi = ssn.sched.framework_for(&t.pod.scheduler_name)?;
    let fw = &ssn.sched.frameworks[fi];
    let mut state = CycleState::new();
    let pre = fw.run_pre_filter(&mut state, &t.pod, snap).ok()?;
    let pq = ssn.jobs[j].queue;
    // Preempt: whether the queue can take `queue_req` once `freed` (same-queue
    // victims) is given back.
    let queue_ok = |freed: &Resources| -> bool {
        if mode != EvictMode::Preempt {
            return true;
        }
        let Some(q) = pq else { return true };
        let mut r = queue_req.clone();
        r.sub(&ResMap::from_resources(freed));
        ssn.allocatable(q, &r)
    };
    let need_queue = !queue_ok(&Resources::default());
    let eval = |ni: usize| -> Option<NodeChoice> {
        let node = &snap.nodes()[ni];
        if let Some(set) = &pre.nodes
            && !set.contains(&*node.name)
        {
            return None;
        }
        if !need_queue && fw.run_filter(&state, &t.pod, node, snap).is_success() {
            return Some(NodeChoice {
                node: ni,
                victims: Vec::new(),
                collateral: Vec::new(),
                cost: (0, (i32::MIN, i32::MIN)),
            });
        }
        // Victim candidates on this node.
        let mut pre: Vec<(usize, Arc<PodInfo>, usize)> = Vec::new();
        for p in &node.pods {
            let Some(&vj) = owner.get(&p.key) else {
                continue;
            };
            // Already terminating (evicted earlier, or being deleted), or protected by
            // the caller: evicting it again frees nothing new.
            if p.pod.metadata.deletion_timestamp.is_some() || ssn.unevictable.contains(&p.key) {
                continue;
            }
            if vj == j {
                continue;
            }
            let same_q = ssn.jobs[vj].queue == pq;
            if (mode == EvictMode::Preempt) != same_q {
                continue;
            }
            let Some(ti) = running_task(ssn, vj, &p.key) else {
                continue;
            };
            pre.push((vj, p.clone(), ti));
        }
        // The plugins' tiered vote (Volcano's Preemptable/Reclaimable).
        let votes: Vec<(usize, &Task)> = pre
            .iter()
            .map(|(vj, _, ti)| (*vj, &ssn.jobs[*vj].running.tasks()[*ti]))
            .collect();
        let allowed = ssn.victims(mode, j, &votes);
        let mut cands: Vec<(usize, Arc<PodInfo>, bool)> = Vec::new();
        for ((vj, p, _), ok) in pre.into_iter().zip(allowed) {
            if !ok {
                continue;
            }
            let vjob = &ssn.jobs[vj];
            let remaining = vjob.running.len() - tx_counts.get(&vj).copied().unwrap_or(0);
            let breaks = remaining <= vjob.min_member && vjob.min_member > 1;
            cands.push((vj, p, breaks));
        }
        if cands.is_empty() {
            return None;
        }
        // Volcano's victim order: gang-breaking last, then the lower job
        // (PodGroup) priority, then the lower task priority, the youngest first.
        cands.sort_by(|a, b| {
            a.2.cmp(&b.2)
                .then(ssn.jobs[a.0].priority.cmp(&ssn.jobs[b.0].priority))
                .then(a.1.priority.cmp(&b.1.priority))
                .then(start_time(&b.1).cmp(&start_time(&a.1)))
                .then(a.1.key.cmp(&b.1.key))
        });
        // The preemptor fits the node, and (preempt) its queue, with `freed` given back.
        let fits = |freed: &Resources, n: usize| {
            insufficient(&t.pod, node, freed, n).is_empty() && queue_ok(freed)
        };
        let mut freed = Resources::default();
        let mut chosen: Vec<usize> = Vec::new();
        for (i, c) in cands.iter().enumerate() {
            if fits(&freed, chosen.len()) {
                break;
            }
            freed.add(&c.1.requests.requests);
            chosen.push(i);
        }
        if !fits(&freed, chosen.len()) {
            return None;
        }
        // Never more than needed: drop victims (highest priority first) that are
        // not required.
        let mut k = chosen.len();
        while k > 0 {
            k -= 1;
            let mut f = freed.clone();
            f.sub(&cands[chosen[k]].1.requests.requests);
            if fits(&f, chosen.len() - 1) {
                freed = f;
                chosen.remove(k);
            }
        }
        // Gang-aware: a running gang falling below minMember goes entirely. Jobs in
        // index order, so the whole-gang evictions are listed deterministically.
        let mut per_job: std::collections::BTreeMap<usize, usize> = Default::default();
        for &i in &chosen {
            *per_job.entry(cands[i].0).or_insert(0) += 1;
        }
        let collapsed: Vec<usize> = per_job
            .iter()
            .filter(|&(&vj, &n)| {
                let vjob = &ssn.jobs[vj];
                let remaining = vjob.running.len() - tx_counts.get(&vj).copied().unwrap_or(0) - n;
                remaining > 0 && remaining < vjob.min_member
            })
            .map(|(&vj, _)| vj)
            .collect();
        // Pods of collapsing gangs on this node are freed anyway: victims that are
        // then no longer needed are spared.
        if !collapsed.is_empty() {
            let mut all_freed = freed.clone();
            let mut all_count = chosen.len();
            for c in &cands {
                if collapsed.contains(&c.0) && !chosen.iter().any(|&i| cands[i].1.key == c.1.key) {
                    all_freed.add(&c.1.requests.requests);
                    all_count += 1;
                }
            }
            let mut k = chosen.len();
            while k > 0 {
                k -= 1;
                let c = &cands[chosen[k]];
                if collapsed.contains(&c.0) {
                    continue;
                }
                let mut f = all_freed.clone();
                f.sub(&c.1.requests.requests);
                if fits(&f, all_count - 1) {
                    all_freed = f;
                    all_count -= 1;
                    chosen.remove(k);
                }
            }
        }
        let victims: Vec<(usize, String)> = chosen
            .iter()
            .map(|&i| (cands[i].0, cands[i].1.key.clone()))
            .collect();
        let mut collateral = Vec::new();
        for &vj in &collapsed {
            for vt in ssn.jobs[vj].running.tasks() {
                if snap.pod_node(&vt.pod.key).is_some()
                    && !victims.iter().any(|(_, k)| *k == vt.pod.key)
                {
                    collateral.push((vj, vt.pod.key.clone()));
                }
            }
        }
        // The preemptor must then pass every filter on the node.
        let mut n2 = (**node).clone();
        for (_, k) in victims.iter().chain(&collateral) {
            n2.remove_pod(k);
        }
        let (victims, collateral, chosen) = if fw.run_filter(&state, &t.pod, &n2, snap).is_success()
        {
            (victims, collateral, chosen)
        } else {
            // The cheapest victims by resources leave a filter failing (e.g. the
            // preemptor's anti-affinity to a pod on the node): as Volcano's and
            // kube-scheduler's preemption, remove every candidate, then reprieve
            // them (the least preferred victims first) while the preemptor still
            // fits and passes every filter.
            // A PreFilter state of its own, updated for every removal/reprieve
            // (PreFilterExtensions), so cross-node filters see them.
            let mut st = CycleState::new();
            fw.run_pre_filter(&mut st, &t.pod, snap).ok()?;
            let mut n3 = (**node).clone();
            let mut freed = Resources::default();
            for c in &cands {
                n3.remove_pod(&c.1.key);
                freed.add(&c.1.requests.requests);
                pre_filter_update(fw, &mut st, &t.pod, &c.1, &n3, snap, false);
            }
            let mut count = cands.len();
            if !fits(&freed, count) || !fw.run_filter(&st, &t.pod, &n3, snap).is_success() {
                return None;
            }
            let mut chosen: Vec<usize> = (0..cands.len()).collect();
            for k in (0..cands.len()).rev() {
                let c = &cands[k];
                let mut f = freed.clone();
                f.sub(&c.1.requests.requests);
                n3.add_pod(c.1.clone());
                pre_filter_update(fw, &mut st, &t.pod, &c.1, &n3, snap, true);
                if fits(&f, count - 1) && fw.run_filter(&st, &t.pod, &n3, snap).is_success() {
                    freed = f;
                    count -= 1;
                    chosen.retain(|&i| i != k);
                } else {
                    n3.remove_pod(&c.1.key);
                    pre_filter_update(fw, &mut st, &t.pod, &c.1, &n3, snap, false);
                }
            }
            // Gangs the reprieved set breaks go whole (in job index order).
            let mut per_job: std::collections::BTreeMap<usize, usize> = Default::default();
            for &i in &chosen {
                *per_job.entry(cands[i].0).or_insert(0) += 1;
            }
            let victims: Vec<(usize, String)> = chosen
                .iter()
                .map(|&i| (cands[i].0, cands[i].1.key.clone()))
                .collect();
            let mut collateral = Vec::new();
            for (&vj, &n) in &per_job {
                let vjob = &ssn.jobs[vj];
                let remaining = vjob.running.len() - tx_counts.get(&vj).copied().unwrap_or(0) - n;
                if remaining > 0 && remaining < vjob.min_member {
                    for vt in vjob.running.tasks() {
                        if snap.pod_node(&vt.pod.key).is_some()
                            && !victims.iter().any(|(_, k)| *k == vt.pod.key)
                        {
                            collateral.push((vj, vt.pod.key.clone()));
                            if n3.remove_pod(&vt.pod.key).is_some() {
                                pre_filter_update(fw, &mut st, &t.pod, &vt.pod, &n3, snap, false);
                            }
                        }
                    }
                }
            }
            if !fw.run_filter(&st, &t.pod, &n3, snap).is_success() {
                return None;
            }
            (victims, collateral, chosen)
        };
        let maxp = chosen
            .iter()
            .map(|&i| (ssn.jobs[cands[i].0].priority, cands[i].1.priority))
            .max()
            .unwrap_or((i32::MIN, i32::MIN));
        Some(NodeChoice {
            node: ni,
            cost: (victims.len() + collateral.len(), maxp),
            victims,
            collateral,
        })
    };
    (0..snap.num_nodes())
        .into_par_iter()
        .filter_map(eval)
        .min_by(|a, b| a.cost.cmp(&b.cost).then(a.node.cmp(&b.node)))
}

/// Tells the PreFilter plugins with extensions that `other` was added to / removed
/// from `node` (what kube-scheduler's preemption does for its what-ifs).
fn pre_filter_update(
    fw: &crate::framework::Framework,
    st: &mut CycleState,
    pod: &PodInfo,
    other: &PodInfo,
    node: &crate::snapshot::NodeInfo,
    snap: &crate::snapshot::Snapshot,
    add: bool,
) {
    for p in &fw.pre_filter {
        if st.filter_skipped(p.name()) {
            continue;
        }
        if let Some(ext) = p.extensions() {
            // A failing update leaves the state as it was: the filter then decides
            // on the conservative view.
            let _ = if add {
                ext.add_pod(st, pod, other, node, snap)
            } else {
                ext.remove_pod(st, pod, other, node, snap)
            };
        }
    }
}
