//! Per-pod scheduling cycle state (`framework.CycleState`).

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

/// Cycle-state key of the annotations Reserve plugins want written on the pod.
const POD_ANNOTATIONS_KEY: &str = "framework/PodAnnotations";

/// Annotations to merge into the pod when it is placed (see
/// [`CycleState::set_pod_annotation`]).
pub type PodAnnotations = BTreeMap<String, String>;

/// Data a plugin stores in the cycle state. Implemented for every `Clone` type.
pub trait StateData: Any + Send + Sync {
    fn clone_box(&self) -> Box<dyn StateData>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Any + Send + Sync + Clone> StateData for T {
    fn clone_box(&self) -> Box<dyn StateData> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Key equality for the string API's linear scans: keys are string constants, and
/// one constant normally has one address, so the address is compared before the
/// bytes.
#[inline]
fn same_key(a: &str, b: &str) -> bool {
    a.len() == b.len() && (std::ptr::eq(a.as_ptr(), b.as_ptr()) || a == b)
}

/// The names of every [`StateKey`] resolved so far; a key's slot is its index.
static KEY_NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

/// A cycle-state key resolved once per process to a slot: reads and writes through
/// it ([`CycleState::get`], [`CycleState::put`]) index the state directly, with no
/// scan and no string compare (a plugin reads its state once per node in Filter and
/// Score). Declare one `static` per key:
/// `static PRE_SCORE: StateKey = StateKey::new("PreScoreX");`. The same name through
/// the string API ([`CycleState::read`], [`CycleState::write`]) is the same entry,
/// and two `StateKey`s with one name share a slot.
pub struct StateKey {
    name: &'static str,
    slot: OnceLock<u32>,
}

impl StateKey {
    pub const fn new(name: &'static str) -> Self {
        StateKey {
            name,
            slot: OnceLock::new(),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// This key's slot (resolved on first use).
    #[inline]
    fn slot(&self) -> usize {
        *self.slot.get_or_init(|| {
            let mut names = KEY_NAMES.lock().unwrap_or_else(|e| e.into_inner());
            let i = match names.iter().position(|n| *n == self.name) {
                Some(i) => i,
                None => {
                    names.push(self.name);
                    names.len() - 1
                }
            };
            u32::try_from(i).expect("fewer than 2^32 cycle-state keys")
        }) as usize
    }
}

impl std::fmt::Debug for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("StateKey").field(&self.name).finish()
    }
}

/// Typed key/value store for one pod's cycle; keys are plugin-chosen static strings,
/// optionally resolved to slots ([`StateKey`]).
#[derive(Default)]
pub struct CycleState {
    /// A handful of entries per pod: the string API scans them.
    entries: Vec<(&'static str, Box<dyn StateData>)>,
    /// Per [`StateKey`] slot: 1 + the index in `entries` of the value written through
    /// that key (0: none; a value written under the same name through the string API
    /// is found by name).
    slots: Vec<u32>,
    /// Plugins whose PreFilter returned Skip (their Filter is not run).
    pub skip_filter: Vec<&'static str>,
    /// Plugins whose PreScore returned Skip (their Score is not run).
    pub skip_score: Vec<&'static str>,
    /// Bit i set: the framework's i-th Filter plugin is skipped (derived from
    /// `skip_filter` once per pod so the per-node loop compares no strings).
    pub filter_skip_mask: u64,
    /// Bit i set: the framework's i-th Score plugin is skipped.
    pub score_skip_mask: u64,
    /// Cross-node Filter plugins (with PreFilter extensions) that declared, in
    /// PreFilter or a PreFilter extension, that for this pod their Filter is a pure
    /// function of the pod's equivalence class and the node until they withdraw it
    /// (e.g. VolumeBinding for interchangeable claims, whose answer no assumption
    /// by another pod can change): the engine then caches their result with the
    /// node-local ones and does not re-run them on unchanged nodes at commit.
    pub node_local_filter: Vec<&'static str>,
    /// This cycle's plugins are timed (kube-scheduler's `ShouldRecordPluginMetrics`):
    /// set for a sampled fraction of cycles when the framework has an observer.
    pub record_plugin_metrics: bool,
}

impl Clone for CycleState {
    fn clone(&self) -> Self {
        CycleState {
            entries: self
                .entries
                .iter()
                .map(|(k, v)| (*k, (**v).clone_box()))
                .collect(),
            slots: self.slots.clone(),
            skip_filter: self.skip_filter.clone(),
            skip_score: self.skip_score.clone(),
            filter_skip_mask: self.filter_skip_mask,
            score_skip_mask: self.score_skip_mask,
            node_local_filter: self.node_local_filter.clone(),
            record_plugin_metrics: self.record_plugin_metrics,
        }
    }
}

impl CycleState {
    pub fn new() -> Self {
        Self::default()
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.entries.iter().position(|(k, _)| same_key(k, key))
    }

    /// Stores (or replaces) `value` under `key`; returns its index in `entries`.
    fn store(&mut self, key: &'static str, value: Box<dyn StateData>) -> usize {
        match self.position(key) {
            Some(i) => {
                self.entries[i].1 = value;
                i
            }
            None => {
                self.entries.push((key, value));
                self.entries.len() - 1
            }
        }
    }

    /// Stores (or replaces) `value` under `key`.
    pub fn write<T: StateData>(&mut self, key: &'static str, value: T) {
        self.store(key, Box::new(value));
    }

    /// Reads the value under `key` if present and of type `T`.
    #[inline]
    pub fn read<T: 'static>(&self, key: &'static str) -> Option<&T> {
        self.entries
            .iter()
            .find(|(k, _)| same_key(k, key))
            .and_then(|(_, v)| (**v).as_any().downcast_ref::<T>())
    }

    /// Mutable access to the value under `key`.
    pub fn read_mut<T: 'static>(&mut self, key: &'static str) -> Option<&mut T> {
        self.entries
            .iter_mut()
            .find(|(k, _)| same_key(k, key))
            .and_then(|(_, v)| (**v).as_any_mut().downcast_mut::<T>())
    }

    pub fn delete(&mut self, key: &'static str) {
        let Some(i) = self.position(key) else {
            return;
        };
        self.entries.remove(i);
        let i = i as u32 + 1;
        for s in &mut self.slots {
            if *s == i {
                *s = 0;
            } else if *s > i {
                *s -= 1;
            }
        }
    }

    /// [`Self::write`] through a resolved key.
    pub fn put<T: StateData>(&mut self, key: &StateKey, value: T) {
        let slot = key.slot();
        let i = self.store(key.name, Box::new(value));
        if self.slots.len() <= slot {
            self.slots.resize(slot + 1, 0);
        }
        self.slots[slot] = i as u32 + 1;
    }

    /// [`Self::read`] through a resolved key: two array reads and the type check.
    #[inline]
    pub fn get<T: 'static>(&self, key: &StateKey) -> Option<&T> {
        match self.slots.get(key.slot()).copied().unwrap_or(0) {
            0 => self.read(key.name),
            i => self
                .entries
                .get(i as usize - 1)
                .and_then(|(_, v)| (**v).as_any().downcast_ref::<T>()),
        }
    }

    /// [`Self::read_mut`] through a resolved key.
    pub fn get_mut<T: 'static>(&mut self, key: &StateKey) -> Option<&mut T> {
        match self.slots.get(key.slot()).copied().unwrap_or(0) {
            0 => self.read_mut(key.name),
            i => self
                .entries
                .get_mut(i as usize - 1)
                .and_then(|(_, v)| (**v).as_any_mut().downcast_mut::<T>()),
        }
    }

    /// Records an annotation the placed pod must carry (e.g. GpuShare's card
    /// assignment). The batch committer merges them into the PodInfo it adds to the
    /// snapshot; `run` and the extender's `/bind` patch them onto the API pod before
    /// the Binding. Unreserve removes what Reserve set.
    pub fn set_pod_annotation(&mut self, key: String, value: String) {
        match self.read_mut::<PodAnnotations>(POD_ANNOTATIONS_KEY) {
            Some(m) => {
                m.insert(key, value);
            }
            None => self.write(POD_ANNOTATIONS_KEY, PodAnnotations::from([(key, value)])),
        }
    }

    pub fn remove_pod_annotation(&mut self, key: &str) {
        if let Some(m) = self.read_mut::<PodAnnotations>(POD_ANNOTATIONS_KEY) {
            m.remove(key);
        }
    }

    /// The annotations recorded for the pod (empty when none).
    pub fn pod_annotations(&self) -> Option<&PodAnnotations> {
        self.read::<PodAnnotations>(POD_ANNOTATIONS_KEY)
            .filter(|m| !m.is_empty())
    }

    /// Declares `plugin`'s Filter node-local for this pod (see
    /// [`Self::node_local_filter`]).
    pub fn mark_filter_node_local(&mut self, plugin: &'static str) {
        if !self.node_local_filter.contains(&plugin) {
            self.node_local_filter.push(plugin);
        }
    }

    /// Withdraws [`Self::mark_filter_node_local`].
    pub fn unmark_filter_node_local(&mut self, plugin: &'static str) {
        self.node_local_filter.retain(|p| *p != plugin);
    }

    #[inline]
    pub fn filter_skipped(&self, plugin: &str) -> bool {
        self.skip_filter.contains(&plugin)
    }

    #[inline]
    pub fn score_skipped(&self, plugin: &str) -> bool {
        self.skip_score.contains(&plugin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_read_write_clone() {
        let mut s = CycleState::new();
        s.write("a", 5u32);
        s.write("b", vec![1, 2]);
        assert_eq!(s.read::<u32>("a"), Some(&5));
        assert_eq!(s.read::<u64>("a"), None);
        s.read_mut::<Vec<i32>>("b").unwrap().push(3);
        let c = s.clone();
        s.write("a", 6u32);
        assert_eq!(c.read::<u32>("a"), Some(&5));
        assert_eq!(c.read::<Vec<i32>>("b").unwrap().len(), 3);
        s.delete("b");
        assert!(s.read::<Vec<i32>>("b").is_none());
        assert!(s.pod_annotations().is_none());
        s.set_pod_annotation("k".into(), "v".into());
        s.set_pod_annotation("j".into(), "w".into());
        s.remove_pod_annotation("j");
        assert_eq!(
            s.pod_annotations().map(|m| m.len()),
            Some(1),
            "one annotation left"
        );
        s.remove_pod_annotation("k");
        assert!(s.pod_annotations().is_none());
    }

    static KA: StateKey = StateKey::new("test/a");
    static KB: StateKey = StateKey::new("test/b");
    static KA2: StateKey = StateKey::new("test/a");

    #[test]
    fn state_keys_and_strings_name_one_entry() {
        let mut s = CycleState::new();
        assert!(s.get::<u32>(&KA).is_none(), "nothing written");
        s.put(&KA, 1u32);
        s.write("test/b", 2u64);
        // Typed write, string read; string write, typed read.
        assert_eq!(s.read::<u32>("test/a"), Some(&1));
        assert_eq!(s.get::<u64>(&KB), Some(&2));
        // One name, one slot: a second key with the same name reads the same value.
        assert_eq!(s.get::<u32>(&KA2), Some(&1));
        assert_eq!(KA.slot(), KA2.slot());
        assert_ne!(KA.slot(), KB.slot());
        assert_eq!(s.get::<u64>(&KA), None, "wrong type");
        // Replacing through either API keeps one entry.
        s.write("test/a", 3u32);
        assert_eq!(s.get::<u32>(&KA), Some(&3));
        s.put(&KB, 4u64);
        *s.get_mut::<u64>(&KB).unwrap() += 1;
        assert_eq!(s.read::<u64>("test/b"), Some(&5));
        assert_eq!(s.entries.len(), 2);
        // Deleting an earlier entry shifts the later one: its slot follows.
        let c = s.clone();
        s.delete("test/a");
        assert!(s.get::<u32>(&KA).is_none());
        assert_eq!(s.get::<u64>(&KB), Some(&5));
        s.put(&KA, 7u32);
        assert_eq!(s.get::<u32>(&KA), Some(&7));
        assert_eq!(s.get::<u64>(&KB), Some(&5));
        // The clone kept its own entries.
        assert_eq!(c.get::<u32>(&KA), Some(&3));
        assert_eq!(c.get::<u64>(&KB), Some(&5));
    }
}
