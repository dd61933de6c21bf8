//! Filter verdict cells of the class caches ([`FilterCells`]) and the verdict a
//! Filter walk reads ([`Checked`]).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::framework::{Code, Status};

/// A node's Filter verdict: passed, rejected with a status kept in a cell table
/// (borrowed, not cloned), or with a status of its own.
pub(crate) enum Checked<'a> {
    Pass,
    Fail(&'a Status),
    Owned(Status),
}

impl<'a> Checked<'a> {
    /// A status computed on the spot.
    #[inline]
    pub(crate) fn of(st: Status) -> Checked<'a> {
        if st.is_success() {
            Checked::Pass
        } else {
            Checked::Owned(st)
        }
    }

    #[inline]
    pub(crate) fn is_pass(&self) -> bool {
        matches!(self, Checked::Pass)
    }

    /// The rejection's status (`None` when the node passed).
    #[inline]
    pub(crate) fn status(&self) -> Option<&Status> {
        match self {
            Checked::Pass => None,
            Checked::Fail(s) => Some(s),
            Checked::Owned(s) => Some(s),
        }
    }

    /// Passed (`Ok(true)`), rejected (`Ok(false)`), or the Error status.
    #[inline]
    pub(crate) fn into_verdict(self) -> Result<bool, Status> {
        match self {
            Checked::Pass => Ok(true),
            Checked::Owned(s) if s.code == Code::Error => Err(s),
            Checked::Fail(s) if s.code == Code::Error => Err(s.clone()),
            _ => Ok(false),
        }
    }

    pub(crate) fn into_status(self) -> Status {
        match self {
            Checked::Pass => Status::success(),
            Checked::Fail(s) => s.clone(),
            Checked::Owned(s) => s,
        }
    }
}

/// Bits of a filter cell's stamp that hold its verdict (0: passed; v: rejected with
/// the table's status v - 1).
const VERDICT_BITS: u32 = 7;
const VERDICT_MASK: u64 = (1 << VERDICT_BITS) - 1;
/// Generations from this one on are not stamped (never reached: a snapshot counts
/// its changes from 0).
const GENERATION_LIMIT: u64 = 1 << (63 - VERDICT_BITS);
/// Distinct rejection statuses one cell table keeps; a node rejected with yet
/// another status is not cached (its Filters run on every visit).
const FAIL_STATUSES: usize = 64;

/// Filter verdicts per node, each valid for the node generation it was computed at:
/// one word per node, `(generation + 1) << VERDICT_BITS | verdict` (0: never
/// computed), so a table costs one zeroed word per node, cells of changed nodes are
/// simply not matched (no clearing pass), and the table is reused across batches as
/// long as the node set is the same. Rejections keep their status once per distinct
/// status in a small side table, read by reference.
///
/// Cells are filled concurrently by the pods of a batch: every filler of a cell
/// computes the same verdict (same class, same node generation; the snapshot is
/// immutable during evaluation). A status is stored in the side table before any
/// stamp naming it (release), and read after the stamp (acquire).
pub(crate) struct FilterCells {
    stamps: Vec<AtomicU64>,
    fails: Box<[OnceLock<Status>]>,
    /// Filled entries of `fails`.
    len: AtomicUsize,
    insert: Mutex<()>,
}

impl FilterCells {
    pub(crate) fn new(num_nodes: usize) -> Self {
        FilterCells {
            stamps: (0..num_nodes).map(|_| AtomicU64::new(0)).collect(),
            fails: (0..FAIL_STATUSES).map(|_| OnceLock::new()).collect(),
            len: AtomicUsize::new(0),
            insert: Mutex::new(()),
        }
    }

    /// Nodes the table has a cell for.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.stamps.len()
    }

    /// The stamp of a passing verdict at `generation` (`None`: too large to stamp).
    #[inline]
    fn base(generation: u64) -> Option<u64> {
        (generation < GENERATION_LIMIT).then(|| (generation + 1) << VERDICT_BITS)
    }

    /// Whether node `idx` is known to pass at `generation` (one load, one compare).
    #[inline]
    pub(crate) fn passes(&self, idx: usize, generation: u64) -> bool {
        let s = self.stamps[idx].load(Ordering::Relaxed);
        // No stamp is stored for a generation at or past the limit.
        s == (generation.wrapping_add(1) << VERDICT_BITS) && generation < GENERATION_LIMIT
    }

    /// Whether node `idx` has a verdict at `generation`, passed or rejected (one
    /// load, one compare; errors are never kept).
    #[inline]
    pub(crate) fn known(&self, idx: usize, generation: u64) -> bool {
        let s = self.stamps[idx].load(Ordering::Relaxed);
        s & !VERDICT_MASK == (generation.wrapping_add(1) << VERDICT_BITS)
            && generation < GENERATION_LIMIT
    }

    /// Whether node `idx` holds a passing verdict, whatever its generation: current
    /// only while no node changed since [`FilterCells::forget_stale`] ran over every
    /// node (the caller knows, e.g. through `LocalScoreCache::fresh_for`).
    #[inline]
    pub(crate) fn passes_fresh(&self, idx: usize) -> bool {
        let s = self.stamps[idx].load(Ordering::Relaxed);
        s != 0 && s & VERDICT_MASK == 0
    }

    /// Empties node `idx`'s cell unless it was computed at `generation`.
    pub(crate) fn forget_stale(&self, idx: usize, generation: u64) {
        let s = self.stamps[idx].load(Ordering::Relaxed);
        if s != 0 && Self::base(generation) != Some(s & !VERDICT_MASK) {
            self.stamps[idx].store(0, Ordering::Relaxed);
        }
    }

    /// The verdict of node `idx` at `generation`, when known.
    #[inline]
    pub(crate) fn get(&self, idx: usize, generation: u64) -> Option<Checked<'_>> {
        let base = Self::base(generation)?;
        let s = self.stamps[idx].load(Ordering::Acquire);
        if s & !VERDICT_MASK != base {
            return None;
        }
        match (s & VERDICT_MASK) as usize {
            0 => Some(Checked::Pass),
            v => self.fails[v - 1].get().map(Checked::Fail),
        }
    }

    /// Records `st` as node `idx`'s verdict at `generation` (errors are not kept)
    /// and returns it.
    pub(crate) fn put(&self, idx: usize, generation: u64, st: Status) -> Checked<'_> {
        let Some(base) = Self::base(generation) else {
            return Checked::of(st);
        };
        if st.is_success() {
            self.stamps[idx].store(base, Ordering::Release);
            return Checked::Pass;
        }
        if st.code == Code::Error {
            return Checked::Owned(st);
        }
        match self.intern(st) {
            Ok(v) => {
                self.stamps[idx].store(base | (v as u64 + 1), Ordering::Release);
                self.fails[v].get().map_or(Checked::Pass, Checked::Fail)
            }
            Err(st) => Checked::Owned(st),
        }
    }

    /// The verdict of node `idx` at `generation`, computed by `run` (and recorded)
    /// when not known.
    #[inline]
    pub(crate) fn get_or_run(
        &self,
        idx: usize,
        generation: u64,
        run: impl FnOnce() -> Status,
    ) -> Checked<'_> {
        match self.get(idx, generation) {
            Some(v) => v,
            None => self.put(idx, generation, run()),
        }
    }

    /// The side-table position of a status equal to `st`, adding it when there is
    /// room.
    fn intern(&self, st: Status) -> Result<usize, Status> {
        let seen = self.len.load(Ordering::Acquire);
        if let Some(i) = self.find(&st, 0, seen) {
            return Ok(i);
        }
        let _g = self.insert.lock().unwrap_or_else(|e| e.into_inner());
        let len = self.len.load(Ordering::Acquire);
        if let Some(i) = self.find(&st, seen, len) {
            return Ok(i);
        }
        if len == self.fails.len() {
            return Err(st);
        }
        // Entries are only set under the lock, in order: this one is empty.
        self.fails[len].set(st)?;
        self.len.store(len + 1, Ordering::Release);
        Ok(len)
    }

    fn find(&self, st: &Status, from: usize, to: usize) -> Option<usize> {
        (from..to).find(|&i| self.fails[i].get().is_some_and(|f| f.same(st)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPU: &str = "Insufficient cpu";

    #[test]
    fn cells_are_valid_for_their_generation_only() {
        let c = FilterCells::new(4);
        assert_eq!(c.len(), 4);
        // Never computed: unknown at any generation (0 included).
        assert!(c.get(0, 0).is_none() && !c.passes(0, 0));
        assert!(!c.known(0, 0));
        assert!(c.put(0, 0, Status::success()).is_pass());
        assert!(c.passes(0, 0) && c.get(0, 0).is_some_and(|v| v.is_pass()));
        assert!(c.known(0, 0) && !c.known(0, 7));
        // The node changed: the stamp no longer matches, nothing to clear.
        assert!(c.get(0, 7).is_none() && !c.passes(0, 7));
        let v = c.put(
            0,
            7,
            Status::unschedulable(CPU).with_plugin("NodeResourcesFit"),
        );
        assert!(matches!(v, Checked::Fail(_)));
        assert!(!c.passes(0, 7) && c.known(0, 7) && !c.known(0, 0));
        let got = c.get(0, 7).expect("known");
        let st = got.status().expect("rejected");
        assert_eq!(
            (st.code, st.plugin),
            (Code::Unschedulable, "NodeResourcesFit")
        );
        assert_eq!(st.reasons, [CPU]);
        // Other nodes untouched; generations past the limit are never stamped.
        assert!(c.get(1, 7).is_none());
        let big = GENERATION_LIMIT;
        assert!(c.put(2, big, Status::success()).is_pass());
        assert!(c.get(2, big).is_none() && !c.passes(2, big) && !c.known(2, big));
        // Errors are returned, not kept.
        let e = c.put(3, 1, Status::error("boom"));
        assert!(matches!(e, Checked::Owned(_)));
        assert!(c.get(3, 1).is_none() && !c.known(3, 1));
    }

    #[test]
    fn equal_rejections_share_one_status_and_the_table_is_bounded() {
        let c = FilterCells::new(FAIL_STATUSES + 8);
        let a = c.put(
            0,
            1,
            Status::unresolvable(CPU).with_plugin("NodeResourcesFit"),
        );
        // Same text from another allocation: the same entry.
        let b = c.put(
            1,
            1,
            Status::unresolvable(CPU.to_string()).with_plugin("NodeResourcesFit"),
        );
        let (Checked::Fail(a), Checked::Fail(b)) = (a, b) else {
            panic!("kept");
        };
        assert!(std::ptr::eq(a, b));
        // Another code or plugin is another entry.
        let Checked::Fail(x) = c.put(
            2,
            1,
            Status::unschedulable(CPU).with_plugin("NodeResourcesFit"),
        ) else {
            panic!("kept");
        };
        assert!(!std::ptr::eq(a, x));
        // Beyond the table's room a rejection is returned but not cached.
        for i in 3..FAIL_STATUSES + 8 {
            let st = Status::unresolvable(format!("reason {i}")).with_plugin("P");
            let v = c.put(i, 1, st);
            assert_eq!(v.status().map(|s| s.message()), Some(format!("reason {i}")));
            assert_eq!(c.get(i, 1).is_some(), i < FAIL_STATUSES + 1, "node {i}");
        }
    }
}
