//! The `overcommit` session plugin (see the module docs of `plugins` for the hooks).

use super::*;

/// overcommit: admit a job only when its minResources fit the cluster's idle
/// capacity times the overcommit factor (less what admitted jobs already claim).
pub struct Overcommit {
    pub factor: f64,
    /// Per-resource factors (Volcano's `overcommit-factor.<resource>`), else
    /// `factor`.
    pub per_resource: BTreeMap<String, f64>,
}

impl Overcommit {
    fn factor_of(&self, res: &str) -> f64 {
        self.per_resource.get(res).copied().unwrap_or(self.factor)
    }
}

impl SessionPlugin for Overcommit {
    fn name(&self) -> &'static str {
        "overcommit"
    }
    fn votes_enqueue(&self) -> bool {
        true
    }
    fn job_enqueueable(&self, ssn: &Session, job: &Job) -> Result<(), String> {
        let Some(min) = &job.min_resources else {
            return Ok(());
        };
        let short: Vec<String> = min
            .0
            .iter()
            .filter(|(k, v)| {
                let idle = ssn.total.get(k) as f64 * self.factor_of(k)
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
                short
                    .iter()
                    .map(|k| match self.per_resource.get(k) {
                        Some(f) => format!("{k} x {f}"),
                        None => k.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }
}
