//! Periodic sweeps of the run loop: `corral.io/max-runtime` caps and gangs stuck
//! below minMember, evicted through one policy helper.

use super::*;

impl Loop {
    /// Evicts running pods past their `corral.io/max-runtime` (own annotation, else
    /// their PodGroup's).
    pub(super) fn sweep_caps(&mut self, now: Instant) {
        use runtime_cap::{ANN_MAX_RUNTIME, parse_cap, started};
        let unix_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut due: HashMap<String, i64> =
            self.caps.capped().map(|(k, v)| (k.clone(), v)).collect();
        let objs = self.gangs.objects();
        self.sweep_partial_gangs(&objs, now);
        for g in &objs.groups {
            let Some(v) = g.annotations.get(ANN_MAX_RUNTIME) else {
                continue;
            };
            match parse_cap(v) {
                Ok(cap) => {
                    for m in self.gangs.members(&(g.api, g.key())) {
                        due.entry(m).or_insert(cap);
                    }
                }
                Err(e) => {
                    if let Some(msg) = self.caps.report(&format!("PodGroup {}", g.key()), e) {
                        tracing::warn!("{msg}");
                        self.metrics.invalid_objects.inc();
                    }
                }
            }
        }
        for (key, cap) in due {
            let Some((p, node)) = self.policy_target(&key) else {
                continue;
            };
            let Some(start) = started(&p) else { continue };
            if !self.caps.expired(&key, start, cap, unix_now, now) {
                continue;
            }
            tracing::info!(pod = %key, cap, "max runtime exceeded; evicting");
            let reason = format!(
                "{ANN_MAX_RUNTIME} of {cap}s exceeded (running {}s)",
                unix_now - start
            );
            self.policy_evict(&p, node, evictor::Cause::RuntimeLimit, reason, now);
        }
    }

    /// A running pod a policy (run-time cap, stuck gang) may evict: placed, not
    /// terminating, not already a preemption victim or a held preemptor.
    pub(super) fn policy_target(&self, key: &str) -> Option<(Arc<PodInfo>, String)> {
        if self.victims.contains_key(key) || self.waiting_pod.contains_key(key) {
            return None;
        }
        let (p, node) = self.sched.snapshot.placed_pod(key)?;
        p.pod
            .metadata
            .deletion_timestamp
            .is_none()
            .then(|| (p.clone(), node.to_string()))
    }

    /// Evicts `p` for a policy through the evictor (retried after
    /// `runtime_cap::RETRY_AFTER` if refused).
    pub(super) fn policy_evict(
        &mut self,
        p: &PodInfo,
        node: String,
        cause: evictor::Cause,
        reason: String,
        now: Instant,
    ) {
        self.caps.evicting(&p.key, now);
        self.evictor.evict(evictor::EvictRequest {
            cause,
            key: p.key.clone(),
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            uid: p.uid.clone(),
            node,
            preemptor: String::new(),
            reason,
        });
    }

    /// Evicts the bound members of gangs that stayed partial (0 < bound < minMember)
    /// longer than their `corral.io/partial-timeout`.
    pub(super) fn sweep_partial_gangs(&mut self, objs: &batch::BatchObjects, now: Instant) {
        use runtime_cap::{ANN_PARTIAL_TIMEOUT, parse_cap};
        let mut present = HashSet::new();
        for g in &objs.groups {
            let Some(v) = g.annotations.get(ANN_PARTIAL_TIMEOUT) else {
                continue;
            };
            let key = g.key();
            present.insert(key.clone());
            let timeout = match parse_cap(v) {
                Ok(t) => t,
                Err(e) => {
                    let e = e.replace(runtime_cap::ANN_MAX_RUNTIME, ANN_PARTIAL_TIMEOUT);
                    if let Some(msg) = self.caps.report(&format!("PodGroup {key}"), e) {
                        tracing::warn!("{msg}");
                        self.metrics.invalid_objects.inc();
                    }
                    continue;
                }
            };
            let bound = self.gangs.bound_members(&(g.api, key.clone()));
            let min = g.min_member.max(1) as usize;
            let partial = !bound.is_empty() && bound.len() < min;
            let for_ = self.caps.partial(&key, partial, now);
            if !partial || for_ < Duration::from_secs(timeout as u64) {
                continue;
            }
            let reason = format!(
                "gang {key} below minMember ({}/{min} bound) for more than {ANN_PARTIAL_TIMEOUT} {v}",
                bound.len()
            );
            for k in bound {
                if self.caps.is_evicting(&k) {
                    continue;
                }
                let Some((p, node)) = self.policy_target(&k) else {
                    continue;
                };
                tracing::info!(pod = %k, group = %key, "gang below minMember too long; evicting");
                self.policy_evict(&p, node, evictor::Cause::PartialGang, reason.clone(), now);
            }
        }
        self.caps.retain_groups(&present);
    }
}
