//! Session actions: enqueue, allocate, preempt/reclaim (one victim-selection engine,
//! two scopes) and backfill. Policy lives in the session plugins; actions only ask.

use std::collections::HashMap;
use std::sync::Arc;

use rayon::prelude::*;

use super::plugins::EvictMode;
use super::res::ResMap;
use super::session::{Eviction, Session, Task, insufficient};
use crate::framework::{CycleState, QueuedPodInfo};
use crate::resources::Resources;
use crate::scheduler::{Placement, Report};
use crate::snapshot::PodInfo;

/// Simple jobs committed per core scheduling call.
const CHUNK: usize = 8192;

/// enqueue: admits PodGroups whose minResources fit (plugins decide: queue
/// capability, overcommitted idle capacity, namespace quota).
pub fn enqueue(ssn: &mut Session) {
    let mut order: Vec<usize> = (0..ssn.jobs.len())
        .filter(|&j| ssn.jobs[j].group.is_some() && !ssn.jobs[j].inqueue)
        .collect();
    order.sort_by(|&a, &b| ssn.job_cmp(a, b));
    for j in order {
        if let Err(e) = ssn.job_valid(j) {
            ssn.jobs[j].message = Some(e);
            continue;
        }
        let job = &ssn.jobs[j];
        if job.running.len() >= job.min_member.max(1) {
            ssn.jobs[j].inqueue = true;
            continue;
        }
        let mut verdict = Ok(());
        for p in &ssn.plugins {
            if let Err(e) = p.job_enqueueable(ssn, job) {
                verdict = Err(e);
                break;
            }
        }
        match verdict {
            Ok(()) => {
                let min = job.min_resources.clone().unwrap_or_default();
                let (ns, q, mm) = (job.namespace.clone(), job.queue, job.min_member);
                ssn.inqueue.add(&min);
                if let Some(q) = q {
                    ssn.queues[q].inqueue.add(&min);
                }
                ssn.ns_used.entry(ns.clone()).or_default().add(&min);
                *ssn.ns_pods.entry(ns).or_insert(0) += mm as i64;
                ssn.jobs[j].inqueue = true;
            }
            Err(e) => ssn.jobs[j].message = Some(format!("pod group is Pending: {e}")),
        }
    }
}

fn queue_key(ssn: &Session, q: usize) -> Vec<f64> {
    ssn.plugins
        .iter()
        .map(|p| p.queue_key(ssn, &ssn.queues[q]))
        .collect()
}

/// Runs `f` with `req` tentatively charged to queue `q` (and its ancestors).
fn with_tentative<R>(ssn: &mut Session, q: usize, req: &ResMap, f: impl Fn(&Session) -> R) -> R {
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
fn commit(ssn: &mut Session, j: usize, placed: &HashMap<String, String>, charge: bool) {
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
    loop {
        let best = next_queue(ssn, &per_q, &cursor, &keys, &over);
        let Some(q) = best else { break };
        let j = per_q[q][cursor[q]];
        if ssn.jobs[j].simple() {
            allocate_simple(ssn, q, &per_q[q], &mut cursor[q]);
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
fn allocate_nominated(ssn: &mut Session) {
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
fn next_queue(
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
const GANG_BATCH_JOBS: usize = 256;
/// Gangs are added to a core call until it holds this many pods.
const GANG_BATCH_PODS: usize = 4096;

/// A gang picked for placement, tentatively charged to its queue.
struct GangPick {
    j: usize,
    q: usize,
    /// Pending task indices offered to the core (within capability).
    chosen: Vec<usize>,
    /// Tasks left out because the queue's capability would be exceeded.
    capped: usize,
    failed: std::cell::Cell<bool>,
}

/// Chooses the tasks of gang `j` that fit queue `q`'s capability and charges them
/// tentatively (as if the gang were placed).
fn pick_gang(ssn: &mut Session, j: usize, q: usize) -> GangPick {
    let mut cum = ResMap::default();
    let mut chosen: Vec<usize> = Vec::new();
    let mut capped = 0;
    for (i, t) in ssn.jobs[j].pending.iter().enumerate() {
        let mut next = cum.clone();
        next.add(&t.req);
        if ssn.allocatable(q, &next) {
            cum = next;
            chosen.push(i);
        } else {
            capped += 1;
        }
    }
    charge_tasks(ssn, j, &chosen, true);
    GangPick {
        j,
        q,
        chosen,
        capped,
        failed: std::cell::Cell::new(false),
    }
}

fn charge_tasks(ssn: &mut Session, j: usize, tasks: &[usize], add: bool) {
    let (q, ns) = (ssn.jobs[j].queue, ssn.jobs[j].namespace.clone());
    for &i in tasks {
        let req = ssn.jobs[j].pending[i].req.clone();
        ssn.charge(q, &ns, &req, add);
    }
}

/// Whether a gang may share a core call with other gangs: its placements must not
/// depend on pods placed after it (no required (anti-)affinity, no topology spread
/// constraints), so committing a prefix of the call is exact.
fn batchable(ssn: &Session, j: usize) -> bool {
    ssn.jobs[j].pending.iter().all(|t| {
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
fn place_gangs(ssn: &mut Session, picks: &[GangPick]) -> usize {
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
                "{}/{total} tasks in gang unschedulable: queue {} capability would be exceeded",
                p.capped, ssn.queues[p.q].spec.name
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
fn in_pick_order(ssn: &Session, arcs: &[(usize, Arc<PodInfo>)]) -> bool {
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

fn allocate_simple(ssn: &mut Session, q: usize, order: &[usize], cursor: &mut usize) {
    let mut chunk = Vec::new();
    let mut cum = ResMap::default();
    while *cursor < order.len() && chunk.len() < CHUNK {
        let j = order[*cursor];
        if !ssn.jobs[j].simple() {
            break;
        }
        let mut req = ResMap::default();
        for t in ssn.jobs[j].pending.iter().filter(|t| !t.best_effort) {
            req.add(&t.req);
        }
        let mut next = cum.clone();
        next.add(&req);
        if !ssn.allocatable(q, &next) {
            *cursor += 1;
            ssn.jobs[j].message = Some(format!(
                "queue {} capability would be exceeded",
                ssn.queues[q].spec.name
            ));
            continue;
        }
        if !chunk.is_empty() && with_tentative(ssn, q, &cum, |s| s.overused(q)) {
            break;
        }
        cum = next;
        chunk.push(j);
        *cursor += 1;
    }
    if chunk.is_empty() {
        return;
    }
    let mut owner: HashMap<String, usize> = HashMap::new();
    let mut arcs = Vec::new();
    for &j in &chunk {
        for t in ssn.jobs[j].pending.iter().filter(|t| !t.best_effort) {
            owner.insert(t.pod.key.clone(), j);
            arcs.push(t.pod.clone());
        }
    }
    let pods = arcs.iter().map(|p| ssn.placement_pod(p)).collect();
    let report = ssn.place(pods);
    commit_simple(ssn, &owner, report);
}

fn commit_simple(ssn: &mut Session, owner: &HashMap<String, usize>, report: Report) {
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

/// backfill: BestEffort pods (no requests) of admitted jobs go onto feasible nodes;
/// they take no requested capacity, so nothing reserved is touched.
pub fn backfill(ssn: &mut Session) {
    let mut owner = HashMap::new();
    let mut pods = Vec::new();
    for j in 0..ssn.jobs.len() {
        let job = &ssn.jobs[j];
        if !job.inqueue || !job.simple() || !job.pipelined.is_empty() || job.queue.is_none() {
            continue;
        }
        if !job.pending.iter().any(|t| t.best_effort) || ssn.job_valid(j).is_err() {
            continue;
        }
        for t in job.pending.iter().filter(|t| t.best_effort) {
            owner.insert(t.pod.key.clone(), j);
            pods.push(t.pod.clone());
        }
    }
    if pods.is_empty() {
        return;
    }
    let pods = pods.iter().map(|p| ssn.placement_pod(p)).collect();
    let report = ssn.place(pods);
    commit_simple(ssn, &owner, report);
}

/// A tentative eviction: (job, pod, node it was on).
struct Evicted {
    job: usize,
    pod: Arc<PodInfo>,
    node: String,
    whole_gang: bool,
}

/// Chosen victims on one node for one task.
struct NodeChoice {
    node: usize,
    victims: Vec<(usize, String)>,
    collateral: Vec<(usize, String)>,
    cost: (usize, i32),
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
                && job.pending.iter().any(|t| !t.best_effort)
                && !job.pending.iter().any(|t| never_preempts(&t.pod))
                && !job.pending.iter().any(|t| awaits_victims(ssn, &t.pod))
                && ssn.job_valid(j).is_ok()
                && ssn
                    .job_ready(j, &job.running.iter().collect::<Vec<_>>())
                    .is_err()
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
        for t in &job.running {
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
fn awaits_victims(ssn: &Session, p: &PodInfo) -> bool {
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
fn never_preempts(p: &PodInfo) -> bool {
    p.spec().and_then(|s| s.preemption_policy.as_deref()) == Some("Never")
}

fn running_task(ssn: &Session, j: usize, key: &str) -> Option<usize> {
    ssn.jobs[j].running.iter().position(|t| t.pod.key == key)
}

/// Tasks of job `j` that must be placed to make it ready (role deficits first).
fn needed_tasks(ssn: &Session, j: usize) -> Vec<usize> {
    let job = &ssn.jobs[j];
    let need = job.min_member.saturating_sub(job.running.len()).max(1);
    let mut out: Vec<usize> = Vec::new();
    for (role, n) in &job.min_task_member {
        let have = job
            .running
            .iter()
            .filter(|t| t.role.as_deref() == Some(role.as_str()))
            .count();
        out.extend(
            job.pending
                .iter()
                .enumerate()
                .filter(|(_, t)| t.role.as_deref() == Some(role.as_str()))
                .map(|(i, _)| i)
                .take(n.saturating_sub(have)),
        );
    }
    for i in 0..job.pending.len() {
        if out.len() >= need {
            break;
        }
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out.retain(|&i| !job.pending[i].best_effort || !job.simple());
    out
}

fn try_evict_for(ssn: &mut Session, mode: EvictMode, j: usize, owner: &mut HashMap<String, usize>) {
    let needed = needed_tasks(ssn, j);
    if needed.is_empty() {
        return;
    }
    // The preemptor's queue must be able to take it (capability).
    let mut req = ResMap::default();
    for &i in &needed {
        req.add(&ssn.jobs[j].pending[i].req);
    }
    if let Some(q) = ssn.jobs[j].queue
        && !ssn.allocatable(q, &req)
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
        let Some(choice) = choose_node(ssn, mode, j, &t, owner, &counts) else {
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
        placed.push((ti, node_name));
    }
    let ready = ok && {
        let job = &ssn.jobs[j];
        let all: Vec<&Task> = job
            .running
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

fn start_time(p: &PodInfo) -> i64 {
    p.pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0.as_second())
        .unwrap_or(0)
}

fn choose_node(
    ssn: &Session,
    mode: EvictMode,
    j: usize,
    t: &Task,
    owner: &HashMap<String, usize>,
    tx_counts: &HashMap<usize, usize>,
) -> Option<NodeChoice> {
    let snap = &ssn.sched.snapshot;
    let fi = ssn.sched.framework_for(&t.pod.scheduler_name)?;
    let fw = &ssn.sched.frameworks[fi];
    let mut state = CycleState::new();
    let pre = fw.run_pre_filter(&mut state, &t.pod, snap).ok()?;
    let preemptor = &ssn.jobs[j];
    let pq = preemptor.queue;
    let eval = |ni: usize| -> Option<NodeChoice> {
        let node = &snap.nodes()[ni];
        if let Some(set) = &pre.nodes
            && !set.contains(&*node.name)
        {
            return None;
        }
        if fw.run_filter(&state, &t.pod, node, snap).is_success() {
            return Some(NodeChoice {
                node: ni,
                victims: Vec::new(),
                collateral: Vec::new(),
                cost: (0, i32::MIN),
            });
        }
        // Victim candidates on this node.
        let mut cands: Vec<(usize, Arc<PodInfo>, bool)> = Vec::new();
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
            let vjob = &ssn.jobs[vj];
            let same_q = vjob.queue == pq;
            if (mode == EvictMode::Preempt) != same_q {
                continue;
            }
            let Some(ti) = running_task(ssn, vj, &p.key) else {
                continue;
            };
            let vt = &vjob.running[ti];
            if !ssn
                .plugins
                .iter()
                .all(|pl| pl.victim_ok(ssn, mode, preemptor, vjob, vt))
            {
                continue;
            }
            let remaining = vjob.running.len() - tx_counts.get(&vj).copied().unwrap_or(0);
            let breaks = remaining <= vjob.min_member && vjob.min_member > 1;
            cands.push((vj, p.clone(), breaks));
        }
        if cands.is_empty() {
            return None;
        }
        cands.sort_by(|a, b| {
            a.2.cmp(&b.2)
                .then(a.1.priority.cmp(&b.1.priority))
                .then(start_time(&b.1).cmp(&start_time(&a.1)))
                .then(a.1.key.cmp(&b.1.key))
        });
        let mut freed = Resources::default();
        let mut chosen: Vec<usize> = Vec::new();
        for (i, c) in cands.iter().enumerate() {
            if insufficient(&t.pod, node, &freed, chosen.len()).is_empty() {
                break;
            }
            freed.add(&c.1.requests.requests);
            chosen.push(i);
        }
        if !insufficient(&t.pod, node, &freed, chosen.len()).is_empty() {
            return None;
        }
        // Never more than needed: drop victims (highest priority first) that are
        // not required.
        let mut k = chosen.len();
        while k > 0 {
            k -= 1;
            let mut f = freed.clone();
            f.sub(&cands[chosen[k]].1.requests.requests);
            if insufficient(&t.pod, node, &f, chosen.len() - 1).is_empty() {
                freed = f;
                chosen.remove(k);
            }
        }
        // Gang-aware: a running gang falling below minMember goes entirely.
        let mut per_job: HashMap<usize, usize> = HashMap::new();
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
                if insufficient(&t.pod, node, &f, all_count - 1).is_empty() {
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
            for vt in &ssn.jobs[vj].running {
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
        if !fw.run_filter(&state, &t.pod, &n2, snap).is_success() {
            return None;
        }
        let maxp = chosen
            .iter()
            .map(|&i| cands[i].1.priority)
            .max()
            .unwrap_or(i32::MIN);
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
