//! Per-pod scheduling cycle state (`framework.CycleState`).

use std::any::Any;
use std::collections::BTreeMap;

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

/// Typed key/value store for one pod's cycle; keys are plugin-chosen static strings.
/// Key equality for the linear scans: keys are string constants, and one constant
/// normally has one address, so the address is compared before the bytes (a plugin
/// reads its state once per node in Filter and Score).
#[inline]
fn same_key(a: &str, b: &str) -> bool {
    a.len() == b.len() && (std::ptr::eq(a.as_ptr(), b.as_ptr()) || a == b)
}

/// A handful of entries per pod, so a linear scan beats hashing.
#[derive(Default)]
pub struct CycleState {
    entries: Vec<(&'static str, Box<dyn StateData>)>,
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

    /// Stores (or replaces) `value` under `key`.
    pub fn write<T: StateData>(&mut self, key: &'static str, value: T) {
        if let Some(e) = self.entries.iter_mut().find(|(k, _)| same_key(k, key)) {
            e.1 = Box::new(value);
        } else {
            self.entries.push((key, Box::new(value)));
        }
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
        self.entries.retain(|(k, _)| !same_key(k, key));
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
}
