//! The `resourcequota` session plugin (see the module docs of `plugins` for the hooks).

use super::*;

/// resourcequota: admit a job only within its namespace's ResourceQuota hard limits.
pub struct ResourceQuotaPlugin;

impl SessionPlugin for ResourceQuotaPlugin {
    fn name(&self) -> &'static str {
        "resourcequota"
    }
    fn votes_enqueue(&self) -> bool {
        true
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
