//! Per-pod scheduling cycle state (`framework.CycleState`).

use std::any::Any;

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
        }
    }
}

impl CycleState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores (or replaces) `value` under `key`.
    pub fn write<T: StateData>(&mut self, key: &'static str, value: T) {
        if let Some(e) = self.entries.iter_mut().find(|(k, _)| *k == key) {
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
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| (**v).as_any().downcast_ref::<T>())
    }

    /// Mutable access to the value under `key`.
    pub fn read_mut<T: 'static>(&mut self, key: &'static str) -> Option<&mut T> {
        self.entries
            .iter_mut()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| (**v).as_any_mut().downcast_mut::<T>())
    }

    pub fn delete(&mut self, key: &'static str) {
        self.entries.retain(|(k, _)| *k != key);
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
    }
}
