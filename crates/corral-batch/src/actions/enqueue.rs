//! `enqueue`: admits pending jobs whose queue and quota have room (Inqueue).

use super::*;

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
        match ssn.enqueue_verdict(j) {
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
