//! The `proportion` session plugin (see the module docs of `plugins` for the hooks).

use super::*;

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
    fn votes_victims(&self, mode: EvictMode) -> bool {
        mode == EvictMode::Reclaim
    }
    fn votes_enqueue(&self) -> bool {
        true
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
