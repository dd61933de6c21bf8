//! Session plugins: the policies actions consult (Volcano's session plugin model).
//! Actions never hard-code gang, priority, fair-share or quota rules; they ask the
//! enabled plugins through the hooks of [`SessionPlugin`]:
//!
//! - ordering hooks (`job_order`, `queue_key`): the first plugin with an opinion
//!   decides;
//! - predicate hooks (`job_valid`, `job_ready`, `job_enqueueable`, `allocatable`,
//!   `overused`, `victim_ok`): every plugin must agree.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::objects::{ANN_MIN_RUNTIME, ANN_PREEMPTABLE, parse_duration};
use super::res::ResMap;
use super::session::{Job, Queue, Session, Task};

/// Whether a victim is sought inside the preemptor's queue or across queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictMode {
    Preempt,
    Reclaim,
}

/// A session plugin. All hooks have neutral defaults.
pub trait SessionPlugin: Send + Sync {
    fn name(&self) -> &'static str;
    /// Called once when the session opens (after jobs and queues are built).
    fn on_open(&self, _ssn: &mut Session) {}
    fn job_order(&self, _ssn: &Session, _a: &Job, _b: &Job) -> Ordering {
        Ordering::Equal
    }
    /// Sort keys of a queue (lower first, compared element by element); the
    /// plugins' keys are concatenated in plugin order.
    fn queue_key(&self, _ssn: &Session, _q: &Queue) -> Vec<f64> {
        Vec::new()
    }
    /// Err(reason) when the job can never run as it is (stays pending).
    fn job_valid(&self, _ssn: &Session, _job: &Job) -> Result<(), String> {
        Ok(())
    }
    /// Err(reason) when `placed` (running + newly placed tasks) does not make the job
    /// ready.
    fn job_ready(&self, _ssn: &Session, _job: &Job, _placed: &[&Task]) -> Result<(), String> {
        Ok(())
    }
    /// Err(reason) when the job may not be admitted (enqueued) now.
    fn job_enqueueable(&self, _ssn: &Session, _job: &Job) -> Result<(), String> {
        Ok(())
    }
    /// Whether the queue may take `req` more.
    fn allocatable(&self, _ssn: &Session, _queue: usize, _req: &ResMap) -> bool {
        true
    }
    /// Whether the queue already has its share (allocate skips it).
    fn overused(&self, _ssn: &Session, _queue: usize) -> bool {
        false
    }
    /// The dimensions of `req` in which the queue taking `req` more would exceed
    /// its deserved share (empty: it may). Consulted by allocate and reclaim, not
    /// by preempt (victims of the same queue free what the preemptor takes).
    fn beyond_share(&self, _ssn: &Session, _queue: usize, _req: &ResMap) -> Vec<String> {
        Vec::new()
    }
    /// Whether `victim` (of `victim_job`) may be evicted for `preemptor`.
    fn victim_ok(
        &self,
        _ssn: &Session,
        _mode: EvictMode,
        _preemptor: &Job,
        _victim_job: &Job,
        _victim: &Task,
    ) -> bool {
        true
    }
}

/// Default plugin list (order matters for ordering hooks).
pub const DEFAULT_PLUGINS: &[&str] = &[
    "priority",
    "gang",
    "conformance",
    "drf",
    "proportion",
    "overcommit",
    "resourcequota",
];

/// Builds plugins by name.
pub fn build(
    names: &[String],
    overcommit_factor: f64,
) -> Result<Vec<Arc<dyn SessionPlugin>>, String> {
    names
        .iter()
        .map(|n| -> Result<Arc<dyn SessionPlugin>, String> {
            Ok(match n.as_str() {
                "priority" => Arc::new(Priority),
                "gang" => Arc::new(Gang),
                "conformance" => Arc::new(Conformance),
                "drf" => Arc::new(Drf),
                "proportion" => Arc::new(Proportion {
                    deserved_bound: true,
                }),
                "capacity" => Arc::new(Proportion {
                    deserved_bound: false,
                }),
                "overcommit" => Arc::new(Overcommit {
                    factor: overcommit_factor,
                }),
                "resourcequota" => Arc::new(ResourceQuotaPlugin),
                other => {
                    return Err(format!(
                        "unknown session plugin {other:?} (known: {})",
                        DEFAULT_PLUGINS.join(", ")
                    ));
                }
            })
        })
        .collect()
}

/// priority: higher job priority first; only lower-priority jobs are preempted.
pub struct Priority;

impl SessionPlugin for Priority {
    fn name(&self) -> &'static str {
        "priority"
    }
    fn job_order(&self, _: &Session, a: &Job, b: &Job) -> Ordering {
        b.priority.cmp(&a.priority)
    }
    fn victim_ok(&self, _: &Session, mode: EvictMode, p: &Job, vj: &Job, _: &Task) -> bool {
        match mode {
            EvictMode::Preempt => vj.priority < p.priority,
            EvictMode::Reclaim => true,
        }
    }
}

/// gang: all-or-nothing by minMember / minTaskMember / minResources.
pub struct Gang;

impl SessionPlugin for Gang {
    fn name(&self) -> &'static str {
        "gang"
    }
    fn job_valid(&self, _: &Session, job: &Job) -> Result<(), String> {
        let total = job.pending.len() + job.running.len();
        if total < job.min_member {
            return Err(format!(
                "pod group is not ready: {total} pod(s) exist, minMember is {}",
                job.min_member
            ));
        }
        for (role, need) in &job.min_task_member {
            let have = job
                .pending
                .iter()
                .chain(&job.running)
                .filter(|t| t.has_role(role))
                .count();
            if have < *need {
                return Err(format!(
                    "pod group is not ready: {have} pod(s) of task {role:?} exist, minTaskMember is {need}"
                ));
            }
        }
        Ok(())
    }
    fn job_ready(&self, _: &Session, job: &Job, placed: &[&Task]) -> Result<(), String> {
        if placed.len() < job.min_member {
            return Err(format!(
                "{} of minMember {} tasks can be placed",
                placed.len(),
                job.min_member
            ));
        }
        for (role, need) in &job.min_task_member {
            let have = placed.iter().filter(|t| t.has_role(role)).count();
            if have < *need {
                return Err(format!(
                    "{have} of minTaskMember {need} tasks of {role:?} can be placed"
                ));
            }
        }
        if let Some(min) = &job.min_resources {
            let mut sum = ResMap::default();
            for t in placed {
                sum.add(&t.req);
            }
            let short: Vec<String> = min
                .0
                .iter()
                .filter(|(k, v)| sum.get(k) < **v)
                .map(|(k, _)| k.clone())
                .collect();
            if !short.is_empty() {
                return Err(format!(
                    "placeable tasks do not reach minResources ({})",
                    short.join(", ")
                ));
            }
        }
        Ok(())
    }
}

/// conformance: never evict pods (or groups) marked not preemptable, nor pods
/// younger than their `corral.io/min-runtime`, nor system-critical pods.
pub struct Conformance;

fn annotation<'a>(t: &'a Task, job: &'a Job, key: &str) -> Option<&'a str> {
    t.pod
        .pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .or_else(|| job.annotations.get(key))
        .map(String::as_str)
}

/// `volcano.sh/preemptable` (or Corral's key) as Volcano reads it: the pod's
/// annotation, else the pod's label, else the PodGroup's annotation, else its
/// label (an annotation wins over a label on the same object).
fn preemptable_value<'a>(t: &'a Task, job: &'a Job, key: &str) -> Option<&'a str> {
    let pod_ann = t.pod.pod.metadata.annotations.as_ref();
    pod_ann
        .and_then(|a| a.get(key))
        .or_else(|| t.pod.labels.get(key))
        .or_else(|| job.annotations.get(key))
        .or_else(|| job.labels.get(key))
        .map(String::as_str)
}

/// Why a running task is protected from eviction, if it is.
pub fn protection(now: i64, job: &Job, t: &Task) -> Option<String> {
    for k in ANN_PREEMPTABLE {
        if preemptable_value(t, job, k) == Some("false") {
            return Some(format!("{k}: \"false\""));
        }
    }
    if t.pod.priority >= 2_000_000_000 {
        return Some("system-critical priority".into());
    }
    if let Some(d) = annotation(t, job, ANN_MIN_RUNTIME) {
        let min = match parse_duration(d) {
            Ok(s) => s,
            // An unparsable protection request protects (fail safe).
            Err(e) => return Some(format!("{ANN_MIN_RUNTIME}: {e}")),
        };
        let started = t
            .pod
            .pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0.as_second());
        match started {
            Some(s) if now - s >= min => {}
            _ => return Some(format!("{ANN_MIN_RUNTIME}: {d} not reached")),
        }
    }
    None
}

impl SessionPlugin for Conformance {
    fn name(&self) -> &'static str {
        "conformance"
    }
    fn victim_ok(&self, ssn: &Session, _: EvictMode, _: &Job, vj: &Job, v: &Task) -> bool {
        protection(ssn.now, vj, v).is_none()
    }
}

/// drf: jobs with the lower dominant resource share first.
pub struct Drf;

impl Drf {
    fn share(ssn: &Session, job: &Job) -> f64 {
        let mut alloc = ResMap::default();
        for t in &job.running {
            alloc.add(&t.req);
        }
        alloc
            .0
            .iter()
            .map(|(k, v)| {
                let tot = ssn.total.get(k);
                if tot > 0 { *v as f64 / tot as f64 } else { 1.0 }
            })
            .fold(0.0, f64::max)
    }
}

impl SessionPlugin for Drf {
    fn name(&self) -> &'static str {
        "drf"
    }
    fn job_order(&self, ssn: &Session, a: &Job, b: &Job) -> Ordering {
        if a.running.is_empty() && b.running.is_empty() {
            return Ordering::Equal;
        }
        Drf::share(ssn, a).total_cmp(&Drf::share(ssn, b))
    }
}

/// proportion (alias capacity): deserved shares by weighted water-filling (capped by
/// capability and demand, raised to guarantee; hierarchical when queues have
/// parents); queues ordered by `spec.priority`, then share; capability is a hard limit; reclaim only from
/// reclaimable queues above their deserved share.
///
/// As Volcano's proportion plugin: a queue is overused once its allocation
/// reaches the deserved share in every dimension; a task is allocatable only
/// within what the deserved share leaves in the dimensions it requests (so a queue
/// whose GPUs are at their share still gets CPU-only work). Volcano's capacity
/// plugin bounds allocation by capability only (`deserved_bound: false`).
pub struct Proportion {
    pub deserved_bound: bool,
}

type FMap = BTreeMap<String, f64>;

/// Below this, a share did not grow (units: millicores, bytes, devices — a GPU
/// share grows by fractions of a card).
const EPS: f64 = 1e-6;

fn waterfill(ssn: &mut Session, ids: &[usize], total: &ResMap) {
    let mut remaining: FMap = total
        .0
        .iter()
        .map(|(k, v)| (k.clone(), *v as f64))
        .collect();
    let mut des: Vec<FMap> = vec![FMap::new(); ids.len()];
    let mut meet = vec![false; ids.len()];
    for _round in 0..64 {
        let tw: f64 = ids
            .iter()
            .zip(&meet)
            .filter(|(_, m)| !**m)
            .map(|(&i, _)| f64::from(ssn.queues[i].spec.weight))
            .sum();
        if tw <= 0.0 {
            break;
        }
        let mut increased = FMap::new();
        for (j, &i) in ids.iter().enumerate() {
            if meet[j] {
                continue;
            }
            let q = &ssn.queues[i];
            let w = f64::from(q.spec.weight) / tw;
            let old = des[j].clone();
            let mut new = FMap::new();
            for (k, r) in &remaining {
                let mut v = old.get(k).copied().unwrap_or(0.0) + r * w;
                for lim in [&q.real_capability, &q.spec.deserved].into_iter().flatten() {
                    if let Some(c) = lim.0.get(k) {
                        v = v.min(*c as f64);
                    }
                }
                v = v.min(q.request.get(k) as f64);
                v = v.max(q.spec.guarantee.get(k) as f64);
                new.insert(k.clone(), v);
            }
            // Met: the demand is covered, or (as in Volcano) the share no longer
            // grows (held by capability/deserved), so the rest goes to the others.
            let grew = new
                .iter()
                .any(|(k, v)| v - old.get(k).copied().unwrap_or(0.0) > EPS);
            if (!grew && !old.is_empty())
                || q.request
                    .0
                    .iter()
                    .all(|(k, r)| (*r as f64) <= new.get(k).copied().unwrap_or(0.0) + EPS)
            {
                meet[j] = true;
            }
            for (k, v) in &new {
                *increased.entry(k.clone()).or_insert(0.0) +=
                    v - old.get(k).copied().unwrap_or(0.0);
            }
            des[j] = new;
        }
        let mut progress = false;
        for (k, r) in remaining.iter_mut() {
            let inc = increased.get(k).copied().unwrap_or(0.0);
            if inc > EPS {
                progress = true;
            }
            *r = (*r - inc).max(0.0);
        }
        if !progress || remaining.values().all(|r| *r < EPS) {
            break;
        }
    }
    for (j, &i) in ids.iter().enumerate() {
        ssn.queues[i].deserved = ResMap(
            des[j]
                .iter()
                .map(|(k, v)| (k.clone(), (v + 1e-6).floor() as i64))
                .filter(|(_, v)| *v > 0)
                .collect(),
        );
    }
}

/// Per-dimension minimum of two limits (a dimension absent from one is limited
/// only by the other).
fn min_limit(a: &ResMap, b: &ResMap) -> ResMap {
    let mut out = a.clone();
    for (k, v) in &b.0 {
        let e = out.0.entry(k.clone()).or_insert(*v);
        *e = (*e).min(*v);
    }
    out
}

/// Volcano capacity plugin's `realCapability` for sibling queues `ids` sharing
/// `total`: `min(capability, guarantee + (total − Σ guarantees of all siblings))`,
/// i.e. what is left once every other sibling's guarantee is set aside.
/// The children of queue `p` that are not malformed.
fn valid_children(ssn: &Session, p: usize) -> Vec<usize> {
    ssn.queues[p]
        .children
        .iter()
        .copied()
        .filter(|&c| ssn.queues[c].error.is_none())
        .collect()
}

fn real_capabilities(ssn: &mut Session, ids: &[usize], total: &ResMap) {
    let mut all_g = ResMap::default();
    for &i in ids {
        all_g.add(&ssn.queues[i].spec.guarantee);
    }
    for &i in ids {
        let q = &ssn.queues[i];
        let mut others = all_g.clone();
        others.sub(&q.spec.guarantee);
        let mut rc = q.spec.capability.clone();
        if !others.is_empty() {
            let mut left = total.clone();
            left.sub(&others);
            // Dimensions that others guarantee but the cluster lacks are zero.
            for (k, _) in others.0.iter().filter(|(_, v)| **v > 0) {
                left.0.entry(k.clone()).or_insert(0);
            }
            rc = Some(match rc {
                Some(c) => min_limit(&c, &left),
                None => left,
            });
        }
        ssn.queues[i].real_capability = rc;
    }
}

impl Proportion {
    /// Share of a queue: max over dimensions of allocated/deserved.
    pub fn share(q: &Queue) -> f64 {
        q.allocated
            .0
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| {
                let d = q.deserved.get(k);
                if d > 0 { *v as f64 / d as f64 } else { 1.0 }
            })
            .fold(0.0, f64::max)
    }

    fn capability_ok(ssn: &Session, queue: usize, extra: &ResMap) -> bool {
        let mut qi = Some(queue);
        while let Some(i) = qi {
            let q = &ssn.queues[i];
            if let Some(cap) = &q.real_capability {
                let mut f = q.allocated.clone();
                f.add(extra);
                if !f.within(cap) {
                    return false;
                }
            }
            qi = q.parent;
        }
        true
    }
}

impl SessionPlugin for Proportion {
    fn name(&self) -> &'static str {
        "proportion"
    }
    fn on_open(&self, ssn: &mut Session) {
        // Hierarchical water-filling: roots share the cluster, children share their
        // parent's deserved.
        let roots: Vec<usize> = (0..ssn.queues.len())
            .filter(|&i| ssn.queues[i].parent.is_none() && ssn.queues[i].error.is_none())
            .collect();
        let total = ssn.total.clone();
        real_capabilities(ssn, &roots, &total);
        let mut stack = roots.clone();
        while let Some(p) = stack.pop() {
            let kids = valid_children(ssn, p);
            let parent_total = ssn.queues[p]
                .real_capability
                .clone()
                .unwrap_or(total.clone());
            real_capabilities(ssn, &kids, &parent_total);
            // A child is also bounded by its ancestors (checked up the chain).
            stack.extend(kids);
        }
        waterfill(ssn, &roots, &total);
        let mut stack = roots;
        while let Some(p) = stack.pop() {
            let kids = valid_children(ssn, p);
            if kids.is_empty() {
                continue;
            }
            let d = ssn.queues[p].deserved.clone();
            waterfill(ssn, &kids, &d);
            stack.extend(kids);
        }
    }
    /// Volcano's queue order: higher `spec.priority` first, then lower share.
    fn queue_key(&self, _: &Session, q: &Queue) -> Vec<f64> {
        vec![-f64::from(q.spec.priority), Proportion::share(q)]
    }
    fn allocatable(&self, ssn: &Session, queue: usize, req: &ResMap) -> bool {
        Proportion::capability_ok(ssn, queue, req)
    }
    fn overused(&self, ssn: &Session, queue: usize) -> bool {
        let mut qi = Some(queue);
        while let Some(i) = qi {
            let q = &ssn.queues[i];
            // Every dimension of the deserved share is reached (dimensions the
            // cluster does not have cannot be shared and are left out).
            if q.deserved
                .0
                .iter()
                .filter(|(k, _)| ssn.total.get(k) > 0)
                .all(|(k, d)| q.allocated.get(k) >= *d)
            {
                return true;
            }
            qi = q.parent;
        }
        false
    }
    fn beyond_share(&self, ssn: &Session, queue: usize, req: &ResMap) -> Vec<String> {
        if !self.deserved_bound {
            return Vec::new();
        }
        let q = &ssn.queues[queue];
        // Dimensions the cluster lacks, or of which the queue deserves all, are
        // left to the node filters (they give the precise reason).
        req.0
            .iter()
            .filter(|(k, r)| {
                let (total, deserved) = (ssn.total.get(k), q.deserved.get(k));
                **r > 0
                    && total > 0
                    && deserved < total
                    && q.allocated.get(k).saturating_add(**r) > deserved
            })
            .map(|(k, _)| k.clone())
            .collect()
    }
    fn job_enqueueable(&self, ssn: &Session, job: &Job) -> Result<(), String> {
        let (Some(min), Some(qi)) = (&job.min_resources, job.queue) else {
            return Ok(());
        };
        let q = &ssn.queues[qi];
        // Without an explicit capability/deserved the cluster bound is the
        // overcommit plugin's business.
        let Some(limit) = q
            .real_capability
            .clone()
            .or_else(|| q.spec.deserved.clone())
        else {
            return Ok(());
        };
        let mut f = q.allocated.clone();
        f.add(&q.inqueue);
        f.add(min);
        let over = f.exceeding(&limit);
        if over.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "queue {} resources are not enough for minResources ({})",
                q.spec.name,
                over.join(", ")
            ))
        }
    }
    fn victim_ok(&self, ssn: &Session, mode: EvictMode, p: &Job, vj: &Job, v: &Task) -> bool {
        if mode == EvictMode::Preempt {
            return true;
        }
        let (Some(vq), Some(pq)) = (vj.queue, p.queue) else {
            return false;
        };
        if vq == pq {
            return false;
        }
        let q = &ssn.queues[vq];
        if !q.spec.reclaimable {
            return false;
        }
        // Only from a queue above its deserved share in a dimension the victim uses.
        v.req
            .0
            .iter()
            .any(|(k, r)| *r > 0 && q.allocated.get(k) > q.deserved.get(k))
    }
}

/// overcommit: admit a job only when its minResources fit the cluster's idle
/// capacity times the overcommit factor (less what admitted jobs already claim).
pub struct Overcommit {
    pub factor: f64,
}

impl SessionPlugin for Overcommit {
    fn name(&self) -> &'static str {
        "overcommit"
    }
    fn job_enqueueable(&self, ssn: &Session, job: &Job) -> Result<(), String> {
        let Some(min) = &job.min_resources else {
            return Ok(());
        };
        let short: Vec<String> = min
            .0
            .iter()
            .filter(|(k, v)| {
                let idle = ssn.total.get(k) as f64 * self.factor
                    - ssn.used.get(k) as f64
                    - ssn.inqueue.get(k) as f64;
                (**v as f64) > idle
            })
            .map(|(k, _)| k.clone())
            .collect();
        if short.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "cluster idle resources x {} are not enough for minResources ({})",
                self.factor,
                short.join(", ")
            ))
        }
    }
}

/// resourcequota: admit a job only within its namespace's ResourceQuota hard limits.
pub struct ResourceQuotaPlugin;

impl SessionPlugin for ResourceQuotaPlugin {
    fn name(&self) -> &'static str {
        "resourcequota"
    }
    fn job_enqueueable(&self, ssn: &Session, job: &Job) -> Result<(), String> {
        let mut min = job.min_resources.clone().unwrap_or_default();
        if job.min_resources.is_none() {
            for t in job.pending.iter().take(job.min_member) {
                min.add(&t.req);
            }
        }
        for q in ssn.quotas.iter().filter(|q| q.namespace == job.namespace) {
            let mut f = ssn.ns_used.get(&job.namespace).cloned().unwrap_or_default();
            f.add(&min);
            let over = f.exceeding(&q.hard);
            if !over.is_empty() {
                return Err(format!(
                    "exceeded quota: {}, requested minResources would exceed hard limit ({})",
                    q.name,
                    over.join(", ")
                ));
            }
            if let Some(p) = q.pods {
                let have = ssn.ns_pods.get(&job.namespace).copied().unwrap_or(0);
                if have + job.min_member as i64 > p {
                    return Err(format!(
                        "exceeded quota: {}, pods {} + minMember {} > hard limit {p}",
                        q.name, have, job.min_member
                    ));
                }
            }
        }
        Ok(())
    }
}
