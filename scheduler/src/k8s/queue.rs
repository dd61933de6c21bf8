//! The pending-pod queue of `corral-scheduler run`: active (replacements of a failed
//! node's pods first — see `failover.rs` —, then by priority, then arrival),
//! backoff (by default 1 s → 10 s, doubling per failed attempt; the configuration's
//! `podInitialBackoffSeconds` / `podMaxBackoffSeconds` as in kube-scheduler) and
//! unschedulable (parked until
//! a cluster event or the periodic flush moves them back).
//!
//! Invariants: every tracked pod is in exactly one state; an entry whose pod is being
//! bound (`in_flight`) is not in the active set and is never handed out twice.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::snapshot::PodInfo;

pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// kube-scheduler's podMaxInUnschedulablePodsDuration is 5 min; Corral flushes sooner.
pub const UNSCHEDULABLE_FLUSH: Duration = Duration::from_secs(60);

/// Backoff after `attempts` failed attempts (>= 1) with the default bounds.
pub fn backoff(attempts: u32) -> Duration {
    Backoff::default().after(attempts)
}

/// Per-pod backoff bounds: `initial` doubling per failed attempt up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: INITIAL_BACKOFF,
            max: MAX_BACKOFF,
        }
    }
}

impl Backoff {
    /// Backoff after `attempts` failed attempts (>= 1).
    pub fn after(&self, attempts: u32) -> Duration {
        let shift = attempts.saturating_sub(1).min(20);
        self.initial
            .checked_mul(1u32 << shift)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Active,
    Backoff,
    Unschedulable,
    InFlight,
    /// A gang member waiting for its gang-mates (fewer member pods than
    /// minMember): not an attempt and no failure; it leaves only when the gang may
    /// be complete ([`Queue::ungate`]) or with a gang-mate's session
    /// ([`Queue::take`]). kube-scheduler's "gated" pods (PreEnqueue rejected).
    Gated,
}

#[derive(Debug)]
pub struct Entry {
    pub info: Arc<PodInfo>,
    pub attempts: u32,
    pub state: State,
    /// Earliest time of the next attempt.
    pub ready_at: Instant,
    /// When the pod was first seen pending (e2e latency).
    pub enqueued: Instant,
    pub parked_at: Instant,
    /// Replaces a pod of a failed node: ahead of every other pending pod.
    pub first: bool,
}

type ActiveKey = (bool, Reverse<i32>, u64, String);

#[derive(Default)]
pub struct Queue {
    backoff_cfg: Backoff,
    entries: HashMap<String, Entry>,
    active: BTreeSet<ActiveKey>,
    backoff: BinaryHeap<Reverse<(Instant, String)>>,
    /// Pods moved into a queue since the last [`Queue::take_incoming`], by
    /// `(queue, event)` as kube-scheduler's `scheduler_queue_incoming_pods_total`.
    incoming: BTreeMap<(&'static str, &'static str), u64>,
    /// Entries per state (kept with every transition: `counts` is O(1)).
    n: [usize; 5],
    /// Last scan for long-parked unschedulable pods (at most one per second).
    last_flush_scan: Option<Instant>,
}

/// Moves an entry to `to`, keeping the per-state counts.
fn set_state(n: &mut [usize; 5], e: &mut Entry, to: State) {
    n[e.state as usize] -= 1;
    n[to as usize] += 1;
    e.state = to;
}

fn akey(first: bool, info: &PodInfo) -> ActiveKey {
    (!first, Reverse(info.priority), info.seq, info.key.clone())
}

impl Queue {
    fn came_in(&mut self, queue: &'static str, event: &'static str, n: u64) {
        if n > 0 {
            *self.incoming.entry((queue, event)).or_insert(0) += n;
        }
    }

    /// The incoming counts since the last call (the loop adds them to the metrics).
    pub fn take_incoming(&mut self) -> BTreeMap<(&'static str, &'static str), u64> {
        std::mem::take(&mut self.incoming)
    }

    /// An empty queue with these backoff bounds.
    pub fn with_backoff(b: Backoff) -> Self {
        Queue {
            backoff_cfg: b,
            ..Queue::default()
        }
    }

    /// The backoff after `attempts` failed attempts.
    pub fn backoff(&self, attempts: u32) -> Duration {
        self.backoff_cfg.after(attempts)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// Counts per state (active, backoff, unschedulable, in flight, gated).
    pub fn counts(&self) -> [usize; 5] {
        self.n
    }

    /// Adds a newly pending pod or updates a tracked one (keeping its state).
    pub fn upsert(&mut self, info: Arc<PodInfo>, now: Instant) {
        self.upsert_first(info, now, false);
    }

    /// [`Queue::upsert`]; a new pod with `first` goes ahead of every pod without it
    /// (a tracked pod keeps its place).
    pub fn upsert_first(&mut self, info: Arc<PodInfo>, now: Instant, first: bool) {
        match self.entries.get_mut(&info.key) {
            Some(e) => {
                if e.state == State::Active {
                    self.active.remove(&akey(e.first, &e.info));
                    self.active.insert(akey(e.first, &info));
                }
                // Keep the original sequence number so the order stays stable.
                let mut info = info;
                if info.seq != e.info.seq {
                    let mut i = (*info).clone();
                    i.seq = e.info.seq;
                    if e.state == State::Active {
                        self.active.remove(&akey(e.first, &info));
                        self.active.insert(akey(e.first, &i));
                    }
                    info = Arc::new(i);
                }
                e.info = info;
            }
            None => {
                self.came_in("active", "PodAdd", 1);
                self.n[State::Active as usize] += 1;
                self.active.insert(akey(first, &info));
                self.entries.insert(
                    info.key.clone(),
                    Entry {
                        info,
                        attempts: 0,
                        state: State::Active,
                        ready_at: now,
                        enqueued: now,
                        parked_at: now,
                        first,
                    },
                );
            }
        }
    }

    /// Stops tracking a pod (bound, deleted, or handed to another scheduler).
    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        let e = self.entries.remove(key)?;
        self.n[e.state as usize] -= 1;
        if e.state == State::Active {
            self.active.remove(&akey(e.first, &e.info));
        }
        Some(e)
    }

    /// Pops up to `n` active pods and marks them in flight. Replacements of a failed
    /// node's pods are never mixed with other pods in one batch (the engine orders a
    /// batch by priority): they are placed before anything else.
    pub fn pop_active(&mut self, n: usize) -> Vec<Arc<PodInfo>> {
        let mut out = Vec::with_capacity(n.min(self.active.len()));
        let head_first = self.active.first().is_some_and(|k| !k.0);
        while out.len() < n {
            if head_first && self.active.first().is_some_and(|k| k.0) {
                break;
            }
            let Some(k) = self.active.pop_first() else {
                break;
            };
            if let Some(e) = self.entries.get_mut(&k.3) {
                set_state(&mut self.n, e, State::InFlight);
                out.push(e.info.clone());
            }
        }
        out
    }

    /// Takes one tracked pod that is not in flight (any other state) and marks it in
    /// flight: the other members of a gang join the session of the first one popped.
    pub fn take(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        let e = self.entries.get_mut(key)?;
        if e.state == State::InFlight {
            return None;
        }
        if e.state == State::Active {
            self.active.remove(&akey(e.first, &e.info));
        }
        set_state(&mut self.n, e, State::InFlight);
        Some(e.info.clone())
    }

    /// An in-flight pod failed: park it as unschedulable until a cluster event (or
    /// `requeue_now`); returns its attempts.
    pub fn failed(&mut self, key: &str, now: Instant, unschedulable: bool) -> u32 {
        let Some(e) = self.entries.get_mut(key) else {
            return 0;
        };
        e.attempts += 1;
        e.ready_at = now + self.backoff_cfg.after(e.attempts);
        e.parked_at = now;
        if e.state == State::Active {
            self.active.remove(&akey(e.first, &e.info));
        }
        let attempts = e.attempts;
        if unschedulable {
            set_state(&mut self.n, e, State::Unschedulable);
            self.came_in("unschedulable", "ScheduleAttemptFailure", 1);
        } else {
            set_state(&mut self.n, e, State::Backoff);
            self.backoff.push(Reverse((e.ready_at, key.to_string())));
            self.came_in("backoff", "ScheduleAttemptFailure", 1);
        }
        attempts
    }

    /// An in-flight gang member whose gang is short of member pods: gated, without
    /// an attempt or a backoff.
    pub fn gate(&mut self, key: &str) {
        if let Some(e) = self.entries.get_mut(key) {
            if e.state == State::Active {
                self.active.remove(&akey(e.first, &e.info));
            }
            if e.state != State::Gated {
                set_state(&mut self.n, e, State::Gated);
                self.came_in("gated", "PreEnqueueCheck", 1);
            }
        }
    }

    /// Gated pods among `keys` become active (their gang may be complete now).
    pub fn ungate<'a>(&mut self, keys: impl IntoIterator<Item = &'a String>) {
        for k in keys {
            if let Some(e) = self.entries.get_mut(k.as_str())
                && e.state == State::Gated
            {
                set_state(&mut self.n, e, State::Active);
                self.active.insert(akey(e.first, &e.info));
                *self
                    .incoming
                    .entry(("active", "PodGroupUpdate"))
                    .or_insert(0) += 1;
            }
        }
    }

    /// Returns an in-flight pod to the active queue without counting an attempt.
    pub fn retry_now(&mut self, key: &str) {
        if let Some(e) = self.entries.get_mut(key)
            && e.state != State::Active
        {
            set_state(&mut self.n, e, State::Active);
            self.active.insert(akey(e.first, &e.info));
        }
    }

    /// A cluster event that may make unschedulable pods schedulable: move them to
    /// backoff (active once their backoff expired).
    pub fn on_cluster_event(&mut self) {
        let mut n = 0;
        for (k, e) in self.entries.iter_mut() {
            if e.state == State::Unschedulable {
                set_state(&mut self.n, e, State::Backoff);
                self.backoff.push(Reverse((e.ready_at, k.clone())));
                n += 1;
            }
        }
        self.came_in("backoff", "ClusterEvent", n);
    }

    /// Moves expired backoffs to active and flushes long-parked unschedulable pods.
    pub fn tick(&mut self, now: Instant) {
        while let Some(Reverse((t, _))) = self.backoff.peek() {
            if *t > now {
                break;
            }
            let Some(Reverse((t, k))) = self.backoff.pop() else {
                break;
            };
            if let Some(e) = self.entries.get_mut(&k)
                && e.state == State::Backoff
                && e.ready_at <= t
            {
                set_state(&mut self.n, e, State::Active);
                self.active.insert(akey(e.first, &e.info));
                *self
                    .incoming
                    .entry(("active", "BackoffComplete"))
                    .or_insert(0) += 1;
            }
        }
        if self
            .last_flush_scan
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.last_flush_scan = Some(now);
        let mut flush = Vec::new();
        for (k, e) in &self.entries {
            if e.state == State::Unschedulable
                && now.duration_since(e.parked_at) >= UNSCHEDULABLE_FLUSH
            {
                flush.push(k.clone());
            }
        }
        for k in flush {
            if let Some(e) = self.entries.get_mut(&k) {
                set_state(&mut self.n, e, State::Active);
                self.active.insert(akey(e.first, &e.info));
                *self
                    .incoming
                    .entry(("active", "UnschedulableTimeout"))
                    .or_insert(0) += 1;
            }
        }
    }

    pub fn has_active(&self) -> bool {
        !self.active.is_empty()
    }

    /// Earliest backoff expiry (for the loop's sleep).
    pub fn next_ready(&self) -> Option<Instant> {
        self.backoff.peek().map(|Reverse((t, _))| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::pod;

    fn info(name: &str, prio: i32, seq: u64) -> Arc<PodInfo> {
        Arc::new(pod(name).priority(prio).seq(seq).info())
    }

    #[test]
    fn backoff_doubles_from_one_to_ten_seconds() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(5), Duration::from_secs(10));
        assert_eq!(backoff(100), Duration::from_secs(10));
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(2),
        };
        assert_eq!(b.after(1), Duration::from_secs(1));
        assert_eq!(b.after(3), Duration::from_secs(2));
        assert_eq!(b.after(u32::MAX), Duration::from_secs(2));
    }

    #[test]
    fn configured_backoff_bounds_the_retry() {
        let now = Instant::now();
        let mut q = Queue::with_backoff(Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(2),
        });
        q.upsert(info("a", 0, 1), now);
        for attempt in 1..=5 {
            q.pop_active(1);
            q.failed("default/a", now, false);
            let want = if attempt == 1 { 1 } else { 2 };
            assert_eq!(q.next_ready(), Some(now + Duration::from_secs(want)));
            q.tick(now + Duration::from_secs(want));
            assert!(q.has_active());
        }
    }

    #[test]
    fn active_pops_by_priority_then_arrival_and_never_twice() {
        let now = Instant::now();
        let mut q = Queue::default();
        q.upsert(info("a", 0, 1), now);
        q.upsert(info("b", 10, 2), now);
        q.upsert(info("c", 0, 0), now);
        let got: Vec<String> = q.pop_active(10).iter().map(|p| p.name.clone()).collect();
        assert_eq!(got, ["b", "c", "a"]);
        assert!(q.pop_active(10).is_empty());
        // An update of an in-flight pod does not re-activate it.
        q.upsert(info("a", 0, 9), now);
        assert!(q.pop_active(10).is_empty());
        assert_eq!(q.counts()[State::InFlight as usize], 3);
    }

    /// The per-state counts from the entries themselves.
    fn recount(q: &Queue) -> [usize; 5] {
        let mut c = [0; 5];
        for e in q.entries.values() {
            c[e.state as usize] += 1;
        }
        c
    }

    #[test]
    fn gated_pods_wait_for_ungate_or_a_gang_mate() {
        let mut q = Queue::default();
        let now = Instant::now();
        for (n, s) in [("a", 1), ("b", 2), ("c", 3)] {
            q.upsert(info(n, 0, s), now);
        }
        assert_eq!(q.pop_active(2).len(), 2);
        q.gate("default/a");
        q.gate("default/b");
        assert_eq!(q.counts(), [1, 0, 0, 0, 2]);
        assert_eq!(q.get("default/a").unwrap().attempts, 0, "not an attempt");
        // Cluster events and the unschedulable flush leave gated pods alone.
        q.on_cluster_event();
        q.tick(now + UNSCHEDULABLE_FLUSH + Duration::from_secs(1));
        assert_eq!(q.counts(), [1, 0, 0, 0, 2]);
        // A gang-mate's session takes a gated member directly.
        assert!(q.take("default/b").is_some());
        assert_eq!(q.get("default/b").unwrap().state, State::InFlight);
        // Ungating makes it active again, in its original order.
        q.ungate(&["default/a".to_string(), "default/zz".to_string()]);
        let popped: Vec<String> = q.pop_active(5).iter().map(|p| p.key.clone()).collect();
        assert_eq!(popped, ["default/a", "default/c"]);
        assert_eq!(q.counts(), recount(&q));
        let inc = q.take_incoming();
        assert_eq!(inc.get(&("gated", "PreEnqueueCheck")), Some(&2));
        assert_eq!(inc.get(&("active", "PodGroupUpdate")), Some(&1));
    }

    #[test]
    fn unschedulable_waits_for_event_and_backoff() {
        let now = Instant::now();
        let mut q = Queue::default();
        q.upsert(info("a", 0, 1), now);
        q.pop_active(1);
        assert_eq!(q.failed("default/a", now, true), 1);
        q.tick(now + Duration::from_secs(5));
        assert!(!q.has_active(), "parked until a cluster event");
        q.on_cluster_event();
        q.tick(now + Duration::from_millis(500));
        assert!(!q.has_active(), "still backing off");
        q.tick(now + Duration::from_secs(1));
        assert!(q.has_active());
        q.pop_active(1);
        assert_eq!(q.failed("default/a", now, false), 2);
        assert_eq!(q.next_ready(), Some(now + Duration::from_secs(2)));
        assert_eq!(q.counts(), recount(&q));
        q.tick(now + UNSCHEDULABLE_FLUSH);
        assert!(q.has_active());
        assert_eq!(q.counts(), recount(&q));
        assert!(q.remove("default/a").is_some());
        assert!(q.is_empty());
    }
}
