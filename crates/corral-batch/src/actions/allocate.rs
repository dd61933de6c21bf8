//! `allocate`: nominated preemptors first, then queues by share; simple jobs in
//! chunks, gangs in exact one-by-one pick order (several per engine call).

use std::collections::HashSet;

use super::*;

/// Simple jobs committed per core scheduling call.
pub(super) const CHUNK: usize = 8192;

pub(super) fn queue_key(ssn: &Session, q: usize) -> Vec<f64> {
    ssn.plugins
        .iter()
        .flat_map(|p| p.queue_key(ssn, &ssn.queues[q]))
        .collect()
}

/// Runs `f` with `req` tentatively charged to queue `q` (and its ancestors).
pub(super) fn with_tentative<R>(
    ssn: &mut Session,
    q: usize,
    req: &ResMap,
    f: impl Fn(&Session) -> R,
) -> R {
    let mut cur = Some(q);
    while let Some(c) = cur {
        ssn.queues[c].allocated.add(req);
        cur = ssn.queues[c].parent;
    }
    let r = f(ssn);
    let mut cur = Some(q);
    while let Some(c) = cur {
        ssn.queues[c].allocated.sub(req);
        cur = ssn.queues[c].parent;
    }
    r
}

/// Moves placed tasks of job `j` from pending to running and charges its queue.
pub(super) fn commit(ssn: &mut Session, j: usize, placed: &HashMap<String, String>, charge: bool) {
    let job = &mut ssn.jobs[j];
    let mut moved = Vec::new();
    let mut keep = Vec::with_capacity(job.pending.len());
    for t in job.pending.drain(..) {
        match placed.get(&t.pod.key) {
            Some(node) => moved.push((t, node.clone())),
            None => keep.push(t),
        }
    }
    job.pending = keep;
    let (q, ns) = (job.queue, job.namespace.clone());
    for (t, node) in moved {
        if charge {
            ssn.charge(q, &ns, &t.req.clone(), true);
        }
        ssn.placements.push(Placement {
            pod: t.pod.key.clone(),
            node,
        });
        ssn.jobs[j].running.push(t);
    }
}

/// allocate: queues by share, jobs by the plugins' order; simple jobs (no gang
/// constraint) are committed in large batches through the core's parallel
/// evaluation; a gang's tasks are evaluated in parallel and committed only when the
/// gang is ready — otherwise everything it placed is rolled back.
pub fn allocate(ssn: &mut Session) {
    allocate_nominated(ssn);
    let nq = ssn.queues.len();
    let mut per_q: Vec<Vec<usize>> = vec![Vec::new(); nq];
    for j in 0..ssn.jobs.len() {
        let job = &ssn.jobs[j];
        let Some(q) = job.queue else { continue };
        if !job.inqueue || !job.pipelined.is_empty() {
            continue;
        }
        let simple = job.simple();
        if !job.pending.iter().any(|t| !simple || !t.best_effort) {
            continue;
        }
        if let Err(e) = ssn.job_valid(j) {
            ssn.jobs[j].message = Some(e);
            continue;
        }
        if let Some(until) = ssn.backing_off(j) {
            ssn.jobs[j].reason = Some("Timeout".into());
            ssn.jobs[j].message = Some(format!(
                "pod group timed out (scheduleTimeoutSeconds {}); backing off for {}s more",
                ssn.jobs[j].schedule_timeout.unwrap_or(0),
                until - ssn.now
            ));
            continue;
        }
        per_q[q].push(j);
    }
    for v in &mut per_q {
        v.sort_by(|&a, &b| ssn.job_cmp(a, b));
    }
    // Queues interleave task by task (Volcano) only when the order can change who
    // is placed: when the simple jobs' demand exceeds the free capacity in some
    // resource. Otherwise each queue's simple jobs go in large chunks.
    let interleave = {
        let mut demand = ResMap::default();
        for v in &per_q {
            for &j in v {
                if ssn.jobs[j].simple() {
                    for t in ssn.jobs[j].pending.iter().filter(|t| !t.best_effort) {
                        demand.add(&t.req);
                    }
                }
            }
        }
        let mut free = ssn.total.clone();
        free.sub(&ssn.used);
        !demand.within(&free)
    };
    let mut cursor = vec![0usize; nq];
    let mut keys: Vec<Vec<f64>> = (0..nq).map(|q| queue_key(ssn, q)).collect();
    let mut over: Vec<bool> = (0..nq).map(|q| ssn.overused(q)).collect();
    let hier = ssn.queues.iter().any(|q| q.parent.is_some());
    // Share keys and overuse flags follow every (tentative) charge.
    let refresh = |ssn: &Session, q: usize, keys: &mut [Vec<f64>], over: &mut [bool]| {
        keys[q] = queue_key(ssn, q);
        if hier {
            for (i, o) in over.iter_mut().enumerate() {
                *o = ssn.overused(i);
            }
        } else {
            over[q] = ssn.overused(q);
        }
    };
    let mut gang_limit = GANG_BATCH_JOBS;
    // Tasks of simple jobs already offered in this action.
    let mut tried: HashSet<String> = HashSet::new();
    loop {
        let best = next_queue(ssn, &per_q, &cursor, &keys, &over);
        let Some(q) = best else { break };
        let j = per_q[q][cursor[q]];
        // Network-topology-aware jobs: inside a HyperNode, alone.
        if let Some(nt) = network_topology(ssn, j) {
            cursor[q] += 1;
            if !super::topology::allocate_in_topology(ssn, j, q, nt) {
                super::topology::allocate_plain_gang(ssn, j, q);
            }
            refresh(ssn, q, &mut keys, &mut over);
            continue;
        }
        if ssn.jobs[j].simple() {
            let rival = if interleave {
                rival_queue(ssn, &per_q, &cursor, &keys, &over, q)
            } else {
                None
            };
            allocate_simple(ssn, q, &per_q[q], &mut cursor[q], rival, &mut tried);
            refresh(ssn, q, &mut keys, &mut over);
            continue;
        }
        // Gangs: pick the next gangs exactly as one-by-one allocation would (each
        // tentatively charged to its queue as if it succeeded), place all their
        // tasks in one core call, then settle them in pick order.
        let mut picks: Vec<GangPick> = Vec::new();
        let mut npods = 0;
        let (mut q, mut j) = (q, j);
        loop {
            cursor[q] += 1;
            let pick = pick_gang(ssn, j, q);
            npods += pick.chosen.len();
            let solo = !batchable(ssn, j);
            picks.push(pick);
            refresh(ssn, q, &mut keys, &mut over);
            if solo || picks.len() >= gang_limit || npods >= GANG_BATCH_PODS {
                break;
            }
            let Some(nq) = next_queue(ssn, &per_q, &cursor, &keys, &over) else {
                break;
            };
            let nj = per_q[nq][cursor[nq]];
            if ssn.jobs[nj].simple() || !batchable(ssn, nj) {
                break;
            }
            (q, j) = (nq, nj);
        }
        let settled = place_gangs(ssn, &picks);
        // Gangs after the first failed one were placed on a view that included it:
        // they are rolled back and picked again.
        for p in picks[settled..].iter().rev() {
            cursor[p.q] -= 1;
        }
        gang_limit = if settled < picks.len() || picks.iter().any(|p| p.failed.get()) {
            1
        } else {
            (gang_limit * 2).min(GANG_BATCH_JOBS)
        };
        let mut qs: Vec<usize> = picks.iter().map(|p| p.q).collect();
        qs.dedup();
        for q in qs {
            refresh(ssn, q, &mut keys, &mut over);
        }
    }
    // Jobs left behind in overused queues.
    for q in 0..nq {
        for &j in &per_q[q][cursor[q]..] {
            if ssn.jobs[j].message.is_none() {
                ssn.jobs[j].message = Some(format!(
                    "queue {} has reached its deserved share; waiting",
                    ssn.queues[q].spec.name
                ));
            }
        }
    }
}

/// Preemptors nominated by the previous session go first onto the nodes their
/// victims freed (before any queue or job order is consulted), so no other work
/// can take that room. All-or-nothing per job: if a nominated task no longer passes
/// every Filter on its node, or the job would not be ready, nothing is kept and the
/// job competes normally.
pub(super) fn allocate_nominated(ssn: &mut Session) {
    if ssn.nominated_nodes.is_empty() {
        return;
    }
    let mut jobs: Vec<usize> = (0..ssn.jobs.len())
        .filter(|&j| {
            ssn.jobs[j]
                .pending
                .iter()
                .any(|t| ssn.nominated_nodes.contains_key(&t.pod.key))
        })
        .collect();
    jobs.sort_by(|&a, &b| ssn.job_cmp(a, b));
    for j in jobs {
        if ssn.job_valid(j).is_err() || !ssn.jobs[j].inqueue {
            continue;
        }
        let tasks: Vec<(Arc<PodInfo>, String)> = ssn.jobs[j]
            .pending
            .iter()
            .filter_map(|t| {
                ssn.nominated_nodes
                    .get(&t.pod.key)
                    .map(|n| (t.pod.clone(), n.clone()))
            })
            .collect();
        let mut req = ResMap::default();
        for t in ssn.jobs[j].pending.iter() {
            if ssn.nominated_nodes.contains_key(&t.pod.key) {
                req.add(&t.req);
            }
        }
        let fits_queue = ssn.jobs[j].queue.is_none_or(|q| ssn.allocatable(q, &req));
        let mut placed: HashMap<String, String> = HashMap::new();
        for (pod, node) in &tasks {
            if !fits_queue {
                break;
            }
            let snap = &ssn.sched.snapshot;
            let Some(fi) = ssn.sched.framework_for(&pod.scheduler_name) else {
                break;
            };
            let fw = &ssn.sched.frameworks[fi];
            let Some(ni) = snap.node_index(node) else {
                break;
            };
            let mut state = CycleState::new();
            let ok = match fw.run_pre_filter(&mut state, pod, snap) {
                Ok(pre) => {
                    pre.nodes.as_ref().is_none_or(|s| s.contains(node.as_str()))
                        && fw
                            .run_filter(&state, pod, &snap.nodes()[ni], snap)
                            .is_success()
                }
                Err(_) => false,
            };
            if !ok {
                break;
            }
            ssn.sched.snapshot.add_pod(pod.clone(), node);
            placed.insert(pod.key.clone(), node.clone());
        }
        let ready = placed.len() == tasks.len() && {
            let job = &ssn.jobs[j];
            let all: Vec<&Task> = job
                .running
                .tasks()
                .iter()
                .chain(
                    job.pending
                        .iter()
                        .filter(|t| placed.contains_key(&t.pod.key)),
                )
                .collect();
            ssn.job_ready(j, &all).is_ok()
        };
        if ready {
            commit(ssn, j, &placed, true);
        } else {
            for k in placed.keys() {
                ssn.sched.snapshot.remove_pod(k);
            }
        }
    }
}

/// The open queue with the lowest share that still has jobs and is not overused.
pub(super) fn next_queue(
    ssn: &Session,
    per_q: &[Vec<usize>],
    cursor: &[usize],
    keys: &[Vec<f64>],
    over: &[bool],
) -> Option<usize> {
    let mut best: Option<usize> = None;
    for q in 0..per_q.len() {
        if cursor[q] >= per_q[q].len() || over[q] || ssn.queues[q].error.is_some() {
            continue;
        }
        best = match best {
            None => Some(q),
            Some(b) => {
                let ord = keys[q]
                    .iter()
                    .zip(&keys[b])
                    .map(|(x, y)| x.total_cmp(y))
                    .find(|o| o.is_ne())
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then_with(|| ssn.queues[q].spec.name.cmp(&ssn.queues[b].spec.name));
                if ord.is_lt() { Some(q) } else { Some(b) }
            }
        };
    }
    best
}

/// Most gangs settled per core call.
pub(super) const GANG_BATCH_JOBS: usize = 256;
/// Gangs are added to a core call until it holds this many pods.
pub(super) const GANG_BATCH_PODS: usize = 4096;

/// A gang picked for placement, tentatively charged to its queue.
pub(super) struct GangPick {
    j: usize,
    q: usize,
    /// Pending task indices offered to the core (within capability).
    pub(super) chosen: Vec<usize>,
    /// Tasks left out because the queue's capability would be exceeded.
    capped: usize,
    /// Why the first capped task was left out.
    cap_msg: String,
    failed: std::cell::Cell<bool>,
}

/// Chooses the tasks of gang `j` that fit queue `q`'s capability and charges them
/// tentatively (as if the gang were placed).
pub(super) fn pick_gang(ssn: &mut Session, j: usize, q: usize) -> GangPick {
    let mut cum = ResMap::default();
    let mut chosen: Vec<usize> = Vec::new();
    let mut capped = 0;
    let mut cap_msg: Option<String> = None;
    for (i, t) in ssn.jobs[j].pending.iter().enumerate() {
        let mut next = cum.clone();
        next.add(&t.req);
        let why = if !ssn.allocatable(q, &next) {
            Some(format!(
                "queue {} capability would be exceeded",
                ssn.queues[q].spec.name
            ))
        } else {
            ssn.within_share(q, &next).err()
        };
        match why {
            None => {
                cum = next;
                chosen.push(i);
            }
            Some(m) => {
                capped += 1;
                cap_msg.get_or_insert(m);
            }
        }
    }
    charge_tasks(ssn, j, &chosen, true);
    GangPick {
        j,
        q,
        chosen,
        capped,
        cap_msg: cap_msg.unwrap_or_default(),
        failed: std::cell::Cell::new(false),
    }
}

pub(super) fn charge_tasks(ssn: &mut Session, j: usize, tasks: &[usize], add: bool) {
    let (q, ns) = (ssn.jobs[j].queue, ssn.jobs[j].namespace.clone());
    for &i in tasks {
        let req = ssn.jobs[j].pending[i].req.clone();
        ssn.charge(q, &ns, &req, add);
    }
}

/// Whether a gang may share a core call with other gangs: its placements must not
/// depend on pods placed after it (no required (anti-)affinity, no topology spread
/// constraints), so committing a prefix of the call is exact.
pub(super) fn batchable(ssn: &Session, j: usize) -> bool {
    network_topology(ssn, j).is_none()
        && ssn.jobs[j].pending.iter().all(|t| {
            t.pod.required_affinity_terms.is_empty()
                && t.pod.required_anti_affinity_terms.is_empty()
                && t.pod
                    .spec()
                    .and_then(|s| s.topology_spread_constraints.as_ref())
                    .is_none_or(|c| c.is_empty())
        })
}

/// Places the picked gangs in one core call and settles them in pick order: a ready
/// gang is committed; the first gang that is not ready is rolled back (nothing of it
/// stays) and so is every gang after it (they are un-charged and returned to be
/// picked again, since they were placed on a view that included the failed gang).
/// Returns how many picks were settled (committed or failed).
///
/// Exactness: the core places pods in queue-sort order and commits each one against
/// everything committed before it; the call is only shared when that order keeps
/// the gangs contiguous and in pick order, so a gang's placement saw exactly the
/// gangs before it, as if each gang had its own call.
pub(super) fn place_gangs(ssn: &mut Session, picks: &[GangPick]) -> usize {
    let mut owner: HashMap<String, usize> = HashMap::new();
    let mut arcs: Vec<(usize, Arc<PodInfo>)> = Vec::new();
    for (pi, p) in picks.iter().enumerate() {
        for &i in &p.chosen {
            let pod = ssn.jobs[p.j].pending[i].pod.clone();
            owner.insert(pod.key.clone(), pi);
            arcs.push((pi, pod));
        }
    }
    if picks.len() > 1 && !in_pick_order(ssn, &arcs) {
        // Queue sort would interleave the gangs: settle the first one alone.
        for p in picks[1..].iter().rev() {
            charge_tasks(ssn, p.j, &p.chosen, false);
        }
        return place_gangs(ssn, &picks[..1]);
    }
    let pods = arcs.iter().map(|(_, p)| ssn.placement_pod(p)).collect();
    let report = ssn.place(pods);
    let mut placed: Vec<HashMap<String, String>> = vec![HashMap::new(); picks.len()];
    for p in report.placements {
        if let Some(&pi) = owner.get(&p.pod) {
            placed[pi].insert(p.pod, p.node);
        }
    }
    for (pi, p) in picks.iter().enumerate() {
        let ready = {
            let job = &ssn.jobs[p.j];
            let all: Vec<&Task> = job
                .running
                .tasks()
                .iter()
                .chain(
                    job.pending
                        .iter()
                        .filter(|t| placed[pi].contains_key(&t.pod.key)),
                )
                .collect();
            ssn.job_ready(p.j, &all)
        };
        if ready.is_ok() {
            // Tasks offered but not placed give their tentative charge back.
            let unplaced: Vec<usize> = p
                .chosen
                .iter()
                .copied()
                .filter(|&i| !placed[pi].contains_key(&ssn.jobs[p.j].pending[i].pod.key))
                .collect();
            charge_tasks(ssn, p.j, &unplaced, false);
            commit(ssn, p.j, &placed[pi], false);
            ssn.gang_attempt_succeeded(p.j);
            continue;
        }
        // The first gang that is not ready fails; the gangs after it are rolled back
        // and picked again.
        p.failed.set(true);
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for u in &report.unschedulable {
            if owner.get(&u.pod) == Some(&pi) {
                *counts.entry(u.message.as_str()).or_insert(0) += 1;
            }
        }
        let top = counts
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
            .map(|(m, _)| m.to_string());
        let job = &ssn.jobs[p.j];
        let total = job.pending.len() + job.running.len();
        let unplaced = job.pending.len() - placed[pi].len();
        let msg = if let Some(m) = top {
            format!("{unplaced}/{total} tasks in gang unschedulable: {m}")
        } else if p.capped > 0 {
            format!(
                "{}/{total} tasks in gang unschedulable: {}",
                p.capped, p.cap_msg
            )
        } else {
            format!("gang is not ready: {}", ready.err().unwrap_or_default())
        };
        ssn.jobs[p.j].message = Some(msg);
        ssn.gang_attempt_failed(p.j);
        // Roll back: nothing of these jobs stays in the snapshot or the queues.
        for done in &placed[pi..] {
            for k in done.keys() {
                ssn.sched.snapshot.remove_pod(k);
            }
        }
        for later in picks[pi..].iter().rev() {
            charge_tasks(ssn, later.j, &later.chosen, false);
        }
        return pi + 1;
    }
    picks.len()
}

/// True when the profile's queue sort keeps the gangs' pods contiguous and in pick
/// order (stable sort, as the core uses).
pub(super) fn in_pick_order(ssn: &Session, arcs: &[(usize, Arc<PodInfo>)]) -> bool {
    let Some(qs) = ssn.sched.frameworks.first().map(|f| f.queue_sort.clone()) else {
        return true;
    };
    let qp = |p: &Arc<PodInfo>| QueuedPodInfo {
        pod: p.clone(),
        attempts: 0,
    };
    // Per gang: its first and last pod in queue-sort order.
    let mut bounds: Vec<(QueuedPodInfo, QueuedPodInfo)> = Vec::new();
    for (pi, p) in arcs {
        let q = qp(p);
        if bounds.len() <= *pi {
            bounds.push((q.clone(), q));
            continue;
        }
        let b = &mut bounds[*pi];
        if qs.less(&q, &b.0) {
            b.0 = q.clone();
        }
        if !qs.less(&q, &b.1) {
            b.1 = q;
        }
    }
    // Every gang's first pod must not sort before any earlier gang's last pod.
    let mut max_last: Option<&QueuedPodInfo> = None;
    for (first, last) in &bounds {
        if let Some(m) = max_last
            && qs.less(first, m)
        {
            return false;
        }
        if max_last.is_none_or(|m| !qs.less(last, m)) {
            max_last = Some(last);
        }
    }
    true
}

/// The queue `next_queue` would serve if `q` were not there: its key and name.
pub(super) fn rival_queue(
    ssn: &Session,
    per_q: &[Vec<usize>],
    cursor: &[usize],
    keys: &[Vec<f64>],
    over: &[bool],
    q: usize,
) -> Option<(Vec<f64>, String)> {
    let mut best: Option<usize> = None;
    for r in 0..per_q.len() {
        if r == q || cursor[r] >= per_q[r].len() || over[r] || ssn.queues[r].error.is_some() {
            continue;
        }
        best = match best {
            Some(b)
                if key_cmp(
                    &keys[b],
                    &ssn.queues[b].spec.name,
                    &keys[r],
                    &ssn.queues[r].spec.name,
                )
                .is_le() =>
            {
                Some(b)
            }
            _ => Some(r),
        };
    }
    best.map(|b| (keys[b].clone(), ssn.queues[b].spec.name.clone()))
}

/// Queue order: keys element by element, then the name.
fn key_cmp(a: &[f64], an: &str, b: &[f64], bn: &str) -> std::cmp::Ordering {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.total_cmp(y))
        .find(|o| o.is_ne())
        .unwrap_or(std::cmp::Ordering::Equal)
        .then_with(|| an.cmp(bn))
}

/// Simple jobs of queue `q`, task by task as Volcano allocates them: each task is
/// checked against the queue's capability and deserved share with the tasks
/// before it charged; the chunk ends when the queue is overused or another queue
/// (`rival`) would be served before it (queues interleave task by task), and is
/// then placed in one core call.
pub(super) fn allocate_simple(
    ssn: &mut Session,
    q: usize,
    order: &[usize],
    cursor: &mut usize,
    rival: Option<(Vec<f64>, String)>,
    tried: &mut HashSet<String>,
) {
    let mut chunk: Vec<(usize, Arc<PodInfo>)> = Vec::new();
    let mut cum = ResMap::default();
    let qname = ssn.queues[q].spec.name.clone();
    'jobs: while *cursor < order.len() && chunk.len() < CHUNK {
        let j = order[*cursor];
        if !ssn.jobs[j].simple() {
            break;
        }
        let tasks: Vec<(Arc<PodInfo>, Arc<ResMap>)> = ssn.jobs[j]
            .pending
            .iter()
            .filter(|t| !t.best_effort && !tried.contains(&t.pod.key))
            .map(|t| (t.pod.clone(), t.req.clone()))
            .collect();
        for (pod, req) in tasks {
            let mut next = cum.clone();
            next.add(&req);
            if !ssn.allocatable(q, &next) {
                tried.insert(pod.key.clone());
                ssn.pod_messages.insert(
                    pod.key.clone(),
                    format!("queue {qname} capability would be exceeded"),
                );
                continue;
            }
            if let Err(e) = ssn.within_share(q, &next) {
                tried.insert(pod.key.clone());
                ssn.pod_messages.insert(pod.key.clone(), e);
                continue;
            }
            if !chunk.is_empty() {
                let (overused, behind) = with_tentative(ssn, q, &cum, |s| {
                    let behind = rival
                        .as_ref()
                        .is_some_and(|(rk, rn)| key_cmp(&queue_key(s, q), &qname, rk, rn).is_gt());
                    (s.overused(q), behind)
                });
                if overused || behind || chunk.len() >= CHUNK {
                    break 'jobs;
                }
            }
            tried.insert(pod.key.clone());
            cum = next;
            chunk.push((j, pod));
        }
        *cursor += 1;
    }
    if chunk.is_empty() {
        return;
    }
    let mut owner: HashMap<String, usize> = HashMap::new();
    for (j, p) in &chunk {
        owner.insert(p.key.clone(), *j);
    }
    let pods = chunk.iter().map(|(_, p)| ssn.placement_pod(p)).collect();
    let report = ssn.place(pods);
    commit_simple(ssn, &owner, report);
}

pub(super) fn commit_simple(ssn: &mut Session, owner: &HashMap<String, usize>, report: Report) {
    let mut by_job: HashMap<usize, HashMap<String, String>> = HashMap::new();
    for p in report.placements {
        if let Some(&j) = owner.get(&p.pod) {
            by_job.entry(j).or_default().insert(p.pod, p.node);
        }
    }
    let mut js: Vec<usize> = by_job.keys().copied().collect();
    js.sort_unstable();
    for j in js {
        commit(ssn, j, &by_job[&j], true);
    }
    for u in report.unschedulable {
        ssn.pod_messages.insert(u.pod, u.message);
    }
}

/// The `networkTopology` of job `j`'s Volcano PodGroup, if it sets one.
pub(super) fn network_topology(
    ssn: &Session,
    j: usize,
) -> Option<crate::hypernodes::NetworkTopology> {
    let job = &ssn.jobs[j];
    if job.group != Some(crate::objects::GroupApi::Volcano) {
        return None;
    }
    ssn.topology.groups.get(&job.key).copied()
}
