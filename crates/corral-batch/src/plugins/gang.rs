//! The `gang` session plugin (see the module docs of `plugins` for the hooks).

use super::*;

/// gang: all-or-nothing by minMember / minTaskMember / minResources.
pub struct Gang;

impl SessionPlugin for Gang {
    fn name(&self) -> &'static str {
        "gang"
    }
    /// Volcano's gang order: jobs that are not ready yet first.
    fn job_order(&self, _: &Session, a: &Job, b: &Job) -> Ordering {
        let ready = |j: &Job| {
            j.running.len() + j.pending.iter().filter(|t| t.best_effort).count()
                >= j.min_member.max(1)
        };
        ready(a).cmp(&ready(b))
    }
    /// Starving while the running tasks do not make the job ready.
    fn job_starving(&self, ssn: &Session, job: &Job) -> Option<bool> {
        let running: Vec<&Task> = job.running.tasks().iter().collect();
        Some(self.job_ready(ssn, job, &running).is_err())
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
            let have = job.pending.iter().filter(|t| t.has_role(role)).count()
                + job.running.with_role(role);
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
