//! The `drf` session plugin (see the module docs of `plugins` for the hooks).

use super::*;

/// drf: jobs with the lower dominant resource share first.
pub struct Drf;

impl Drf {
    fn share(ssn: &Session, job: &Job) -> f64 {
        job.running
            .alloc()
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
