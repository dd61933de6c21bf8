//! Named resource vectors for queue/job accounting (only the dimensions that are
//! named or non-zero are present; an absent dimension in a limit means "unlimited").

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::Serialize;

use crate::resources::{FieldError, Resources};

/// Resource name → amount (cpu in millicores, memory/storage in bytes, others in
/// units).
#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub struct ResMap(pub BTreeMap<String, i64>);

impl ResMap {
    /// The non-zero dimensions of a request vector (the `pods` count is left out).
    pub fn from_resources(r: &Resources) -> ResMap {
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: i64| {
            if v != 0 {
                m.insert(k.to_string(), v);
            }
        };
        put("cpu", r.milli_cpu);
        put("memory", r.memory);
        put("ephemeral-storage", r.ephemeral_storage);
        for (n, v) in &r.scalar {
            put(n, *v);
        }
        ResMap(m)
    }

    /// Parses a Kubernetes ResourceList; every named dimension is kept (also zeros).
    pub fn from_list(list: &BTreeMap<String, Quantity>, field: &str) -> Result<ResMap, FieldError> {
        let r = Resources::from_list(list, field)?;
        Ok(ResMap(list.keys().map(|k| (k.clone(), r.get(k))).collect()))
    }

    pub fn get(&self, k: &str) -> i64 {
        self.0.get(k).copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.values().all(|v| *v == 0)
    }

    pub fn add(&mut self, o: &ResMap) {
        for (k, v) in &o.0 {
            match self.0.get_mut(k) {
                Some(x) => *x += v,
                None => {
                    self.0.insert(k.clone(), *v);
                }
            }
        }
    }

    /// Subtracts, saturating at zero.
    pub fn sub(&mut self, o: &ResMap) {
        for (k, v) in &o.0 {
            if let Some(x) = self.0.get_mut(k) {
                *x = (*x - v).max(0);
            }
        }
    }

    /// True when every dimension of `self` is ≤ the same dimension of `o` (absent in
    /// `o` = 0).
    pub fn le(&self, o: &ResMap) -> bool {
        self.0.iter().all(|(k, v)| *v <= o.get(k))
    }

    /// True when `self` fits in the limit `lim`: only dimensions named by `lim` are
    /// limited.
    pub fn within(&self, lim: &ResMap) -> bool {
        lim.0.iter().all(|(k, l)| self.get(k) <= *l)
    }

    /// Dimensions of `self` (with amount > 0) that exceed the limit `lim`.
    pub fn exceeding(&self, lim: &ResMap) -> Vec<String> {
        lim.0
            .iter()
            .filter(|(k, l)| self.get(k) > **l)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Per-dimension minimum, keeping the dimensions of `self`.
    pub fn min_with(&self, o: &ResMap) -> ResMap {
        ResMap(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), (*v).min(o.0.get(k).copied().unwrap_or(i64::MAX))))
                .collect(),
        )
    }

    /// Kubernetes quantity strings for output (`cpu: 2500m`, `memory: 1073741824`).
    pub fn to_quantities(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .map(|(k, v)| {
                let s = if k == "cpu" {
                    if v % 1000 == 0 {
                        format!("{}", v / 1000)
                    } else {
                        format!("{v}m")
                    }
                } else {
                    v.to_string()
                };
                (k.clone(), s)
            })
            .collect()
    }
}

impl Serialize for ResMap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_quantities().serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rm(v: &[(&str, i64)]) -> ResMap {
        ResMap(v.iter().map(|(k, v)| (k.to_string(), *v)).collect())
    }

    #[test]
    fn arithmetic_and_limits() {
        let mut a = rm(&[("cpu", 1000), ("memory", 10)]);
        a.add(&rm(&[("cpu", 500), ("nvidia.com/gpu", 1)]));
        assert_eq!(a.get("cpu"), 1500);
        assert!(a.within(&rm(&[("cpu", 2000)])));
        assert!(!a.within(&rm(&[("nvidia.com/gpu", 0)])));
        assert_eq!(a.exceeding(&rm(&[("cpu", 1000)])), vec!["cpu".to_string()]);
        assert!(!a.le(&rm(&[("cpu", 2000)])));
        a.sub(&rm(&[("cpu", 5000)]));
        assert_eq!(a.get("cpu"), 0);
        assert_eq!(
            rm(&[("cpu", 2500), ("memory", 3)]).to_quantities()["cpu"],
            "2500m"
        );
    }
}
