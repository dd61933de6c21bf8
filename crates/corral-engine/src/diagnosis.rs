//! A Filter walk's rejections folded per reason ([`Diagnosis`], kube-scheduler's
//! `Diagnosis.NodeToStatus`) and the `FitError` message built from them.

use std::borrow::Cow;

use crate::framework::Status;

/// Per-reason failure counts (`Diagnosis.NodeToStatus` folded).
#[derive(Default)]
pub(crate) struct Diagnosis {
    pub(crate) counts: Vec<(Cow<'static, str>, usize)>,
    pub(crate) plugins: Vec<&'static str>,
    /// The address of the last kept status added ([`Self::add_kept`]) with one
    /// reason, and the position of its reason in `counts`.
    last_kept: Option<(usize, usize)>,
}

impl Diagnosis {
    /// [`Self::add`] for a status kept in a cell table for the whole evaluation
    /// (its address identifies it): the rejections of consecutive nodes by the same
    /// kept status cost one compare.
    #[inline]
    pub(crate) fn add_kept(&mut self, st: &Status) {
        let ptr = std::ptr::from_ref(st) as usize;
        if let Some((p, i)) = self.last_kept
            && p == ptr
        {
            self.counts[i].1 += 1;
            return;
        }
        self.add(st);
        self.last_kept = match st.reasons.as_slice() {
            [r] => self
                .counts
                .iter()
                .position(|(k, _)| same_str(k, r))
                .map(|i| (ptr, i)),
            _ => None,
        };
    }

    pub(crate) fn add(&mut self, st: &Status) {
        for r in &st.reasons {
            self.count(r, 1);
        }
        if !st.plugin.is_empty() && !self.plugins.iter().any(|p| same_str(p, st.plugin)) {
            self.plugins.push(st.plugin);
        }
    }

    /// Adds `n` to reason `r` (a constant reason is found by its address first).
    /// Takes the `Cow` itself: a new entry clones it, which for a borrowed reason
    /// copies no text.
    #[allow(clippy::ptr_arg)]
    fn count(&mut self, r: &Cow<'static, str>, n: usize) {
        match self.counts.iter_mut().find(|(k, _)| same_str(k, r)) {
            Some(e) => e.1 += n,
            None => self.counts.push((r.clone(), n)),
        }
    }

    /// Folds another diagnosis (of other nodes) into this one.
    pub(super) fn merge(&mut self, o: Diagnosis) {
        for (r, n) in &o.counts {
            self.count(r, *n);
        }
        for p in o.plugins {
            if !self.plugins.iter().any(|q| same_str(q, p)) {
                self.plugins.push(p);
            }
        }
    }

    pub(crate) fn add_n(&mut self, reason: String, n: usize) {
        if n > 0 {
            self.counts.push((Cow::Owned(reason), n));
        }
    }

    /// `FitError.Error()`.
    pub(crate) fn message(&self, num_all_nodes: usize) -> String {
        let mut parts: Vec<String> = self
            .counts
            .iter()
            .map(|(r, c)| format!("{c} {r}"))
            .collect();
        parts.sort();
        if parts.is_empty() {
            format!("0/{num_all_nodes} nodes are available.")
        } else {
            format!(
                "0/{num_all_nodes} nodes are available: {}.",
                parts.join(", ")
            )
        }
    }

    /// Failures that a later placement can resolve (pod affinity, topology spread).
    pub(crate) fn retryable(&self) -> bool {
        self.plugins
            .iter()
            .any(|p| matches!(*p, "InterPodAffinity" | "PodTopologySpread"))
    }
}

/// String equality that first compares addresses: reasons and plugin names are
/// mostly the same `&'static str`, so the bytes are rarely compared.
#[inline]
pub(super) fn same_str(a: &str, b: &str) -> bool {
    a.len() == b.len() && (std::ptr::eq(a.as_ptr(), b.as_ptr()) || a == b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;

    /// Rejections by kept statuses fold exactly as by `add`: by text, whatever the
    /// order in which statuses alternate.
    #[test]
    fn kept_statuses_fold_like_any_status() {
        let cpu = Status::unschedulable("Insufficient cpu").with_plugin("NodeResourcesFit");
        let taint = Status::unresolvable(String::from("node(s) had untolerated taint {a: b}"))
            .with_plugin("TaintToleration");
        let two = Status {
            code: Code::Unschedulable,
            reasons: vec![
                Cow::Borrowed("Insufficient cpu"),
                Cow::Borrowed("Insufficient memory"),
            ]
            .into(),
            plugin: "NodeResourcesFit",
        };
        let seq = [&cpu, &cpu, &taint, &cpu, &two, &two, &taint, &taint, &cpu];
        let mut kept = Diagnosis::default();
        let mut plain = Diagnosis::default();
        for st in seq {
            kept.add_kept(st);
            plain.add(st);
        }
        let want = "0/20 nodes are available: 2 Insufficient memory, \
                    3 node(s) had untolerated taint {a: b}, 6 Insufficient cpu.";
        assert_eq!(kept.message(20), want);
        assert_eq!(plain.message(20), want);
        assert_eq!(kept.plugins, ["NodeResourcesFit", "TaintToleration"]);
    }
}
